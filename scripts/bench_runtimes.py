"""Our engine path (`quba bench --json`) against onnxruntime on the same ONNX
files, batch 1 and 16, 1 and 2 threads, in one run on one machine, written to
docs/benchmarks.md and, every measurement, to docs/benchmarks.json (issue 10).

Both sides are timed the same way: random float32 input of the model's own
size, warm-up, then the median of repeated forward passes, reported as wall
milliseconds per image (median round time / images in the round). What
"threads" means differs, on purpose, because each side is given its own best
lever: onnxruntime gets `intra_op_num_threads=T` on one session; quba runs T
engine instances, one per OS thread, each on its own batch (tract's executor
is single-threaded). The ratio is tract / onnxruntime: above 1 means we are
slower.

Run (Python 3.11; onnxruntime pinned in scripts/requirements-bench.txt; the
Lite0 files come from scripts/make_efficientnet_lite0.py and are skipped,
with a note, where absent):
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bench.txt
    cargo build --release --bins
    .venv-bench/bin/python scripts/bench_runtimes.py --quba target/release/quba --device-bin target/release/quba-device
About 15 minutes on a 2-core machine; `--quick` (zoo fp32 of one model, a
few rounds) checks the plumbing in seconds (give it --out and --json-out
elsewhere, or it overwrites the docs with its toy numbers).
"""
import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
LITE0 = ROOT / "models" / "external" / "efficientnet-lite0"
LITE0_FORMS = [("efficientnet-lite0.fp32.onnx", "fp32"), ("efficientnet-lite0.int8.onnx", "int8 QDQ"),
               ("efficientnet-lite0.int8-qop.onnx", "int8 QOperator")]
BATCHES = [1, 16]
THREADS = [1, 2]
# Seconds of timed work aimed at per configuration: enough rounds for a
# stable median on fast models, few on the slow ones (tract's QOperator Lite0
# at batch 16 is seconds per round) so the whole run stays near 15 minutes.
TARGET_S = 4.0
MIN_RUNS, MAX_RUNS = 3, 30


def sh(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def machine() -> dict:
    info = {}
    for line in sh(["lscpu"]).splitlines():
        k, _, v = line.partition(":")
        info[k.strip()] = v.strip()
    flags = set(info.get("Flags", "").split())
    simd = [f for f in ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm"] if f in flags]
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal:"))
    return {
        "model_name": info.get("Model name", "?"),
        "arch": info.get("Architecture", platform.machine()),
        "cores": os.cpu_count(),
        "threads_per_core": info.get("Thread(s) per core", "?"),
        "hypervisor": info.get("Hypervisor vendor", ""),
        "simd": simd,
        "mem_gib": mem_kb / (1 << 20),
    }


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def cpu_seconds() -> dict:
    """CPU time so far: the machine's as /proc/stat counts it (busy, and
    stolen by the hypervisor) and this process's with its waited-for children
    (onnxruntime runs here, `quba bench` in children). Their difference over
    the run is what other work took, which the load average cannot tell apart
    from the benchmark's own threads. In a container /proc/stat counts the
    whole host, so there it over-states the interference."""
    tick = os.sysconf("SC_CLK_TCK")
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, irq, softirq, steal = f[0], f[1], f[2], f[5], f[6], f[7]
    own = sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for k in ("ru_utime", "ru_stime"))
    return {"busy_s": (user + nice + system + irq + softirq) / tick, "steal_s": steal / tick, "own_s": own}


def other_work(start: dict, end: dict, elapsed_s: float) -> dict:
    busy = end["busy_s"] - start["busy_s"]
    own = end["own_s"] - start["own_s"]
    return {"other_cpu_s": max(0.0, busy - own), "steal_s": end["steal_s"] - start["steal_s"], "own_cpu_s": own,
            "elapsed_s": elapsed_s}


def input_shape(path: Path) -> tuple[str, int | None]:
    """The input's name and declared square side (None when symbolic), read the
    way `quba bench` reads it, so both runtimes get the same size."""
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    side = dims[2] if len(dims) == 4 and dims[2] and dims[2] == dims[3] else None
    return inp.name, side


def model_side(path: Path) -> int:
    _, side = input_shape(path)
    if side:
        return side
    return int(json.loads(path.with_suffix(".json").read_text())["pipeline"]["crop"])


def runs_for(ms_per_image: float, batch: int) -> int:
    """Rounds to time for about TARGET_S seconds, from a batch-1 single-thread
    estimate (a round of T engines takes about one engine's batch time)."""
    round_s = ms_per_image * batch / 1000.0
    return max(MIN_RUNS, min(MAX_RUNS, math.ceil(TARGET_S / max(round_s, 1e-6))))


def bench_quba(quba: str, model: Path, batch: int, threads: int, warmup: int, runs: int,
               backend: str = "cpu") -> tuple[dict, list[str]]:
    cmd = [quba, "bench", str(model.relative_to(ROOT)), "--batch", str(batch), "--threads", str(threads),
           "--warmup", str(warmup), "--runs", str(runs), "--json"] + (["--backend", backend] if backend != "cpu" else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: {out.stderr.strip()}")
    return json.loads(out.stdout), cmd


def ort_session(model: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def bench_ort(sess: ort.InferenceSession, name: str, side: int, batch: int, warmup: int, runs: int) -> dict:
    x = np.random.default_rng(0).uniform(-2, 2, size=(batch, 3, side, side)).astype(np.float32)
    feed = {name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times)
    return {"ms_per_image": med / batch, "images_per_second": 1e3 * batch / med, "median_round_ms": med}


def models(quick: bool) -> tuple[list[tuple[Path, str, str]], list[str]]:
    notes, out = [], []
    for f, form in LITE0_FORMS:
        p = LITE0 / f
        if p.exists():
            out.append((p, "efficientnet-lite0", form))
        else:
            notes.append(f"`{p.relative_to(ROOT)}` absent (scripts/make_efficientnet_lite0.py makes it): not measured.")
    zoo = sorted((ROOT / "models" / "zoo").glob("*.onnx"))
    for p in zoo:
        stem = p.name.removesuffix(".onnx")
        name, _, prec = stem.rpartition(".")
        out.append((p, name, "int8 QDQ" if prec == "int8" else prec))
    if quick:
        out = [m for m in out if m[0].name == "cnn-baseline.fp32.onnx"]
    return out, notes


def binary_size(path: Path) -> dict | None:
    if not path.exists():
        return None
    with tempfile.TemporaryDirectory() as t:
        s = Path(t) / "stripped"
        shutil.copy(path, s)
        subprocess.run(["strip", str(s)], check=True)
        return {"path": str(path), "bytes": path.stat().st_size, "stripped_bytes": s.stat().st_size}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quba", default=str(ROOT / "target" / "release" / "quba"))
    ap.add_argument("--device-bin", default=str(ROOT / "target" / "release" / "quba-device"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json-out", default=str(ROOT / "docs" / "benchmarks.json"),
                    help="every measurement as JSON (what --render-from reads)")
    ap.add_argument("--quick", action="store_true", help="one zoo model, few rounds: checks the script, not the speed")
    ap.add_argument("--note", action="append", default=[], help="a line for the doc's notes (e.g. what else ran on the machine)")
    ap.add_argument("--render-from", help="write the doc from a --json-out file of an earlier run instead of measuring")
    a = ap.parse_args()
    global TARGET_S
    if a.render_from:
        # Rewording the doc must not cost a 15-minute rerun or change its numbers.
        saved = json.loads(Path(a.render_from).read_text())
        TARGET_S = saved["meta"].get("target_s", TARGET_S)
        Path(a.out).write_text(render(saved["meta"], saved["rows"], saved["sizes"], saved["notes"] + a.note))
        print(f"wrote {a.out} from {a.render_from}")
        return
    if a.quick:
        TARGET_S = 0.2

    t_start = time.time()
    cpu_start = cpu_seconds()
    mach = machine()
    load_start = loadavg()
    quba_version = sh([a.quba, "--version"]).strip()
    lock = (ROOT / "Cargo.lock").read_text()
    tract_version = next(b.split('version = "')[1].split('"')[0] for b in lock.split("[[package]]") if 'name = "tract-onnx"' in b)
    rustc = sh(["rustc", "--version"]).strip()
    rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    # Only tracked source counts: the venvs and models/external are ignored.
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"]).strip()

    todo, notes = models(a.quick)
    notes += a.note
    rows = []
    for path, name, form in todo:
        side = model_side(path)
        in_name, _ = input_shape(path)
        # A batch-1 single-thread probe sizes the rounds of every configuration
        # of this model, per runtime.
        probe_q, _ = bench_quba(a.quba, path, 1, 1, 1, 3)
        sess1 = ort_session(path, 1)
        probe_o = bench_ort(sess1, in_name, side, 1, 1, 3)
        for threads in THREADS:
            sess = sess1 if threads == 1 else ort_session(path, threads)
            for batch in BATCHES:
                rq = runs_for(probe_q["ms_per_image"], batch)
                ro = runs_for(probe_o["ms_per_image"], batch)
                warm = 1 if batch > 1 else 3
                q, cmd = bench_quba(a.quba, path, batch, threads, warm, rq)
                o = bench_ort(sess, in_name, side, batch, warm, ro)
                row = {"model": name, "form": form, "file": str(path.relative_to(ROOT)), "side": side, "batch": batch,
                       "threads": threads, "quba": q, "ort": o, "quba_runs": rq, "ort_runs": ro,
                       "ratio": q["ms_per_image"] / o["ms_per_image"], "command": shlex.join(["quba"] + cmd[1:])}
                if form.startswith("int8") and batch == 1 and threads == 1:
                    # The same file on tract alone (`--backend tract`), to
                    # show what the integer path changes.
                    rt = runs_for(bench_quba(a.quba, path, 1, 1, 1, 1, "tract")[0]["ms_per_image"], 1)
                    row["tract"], _ = bench_quba(a.quba, path, 1, 1, warm, rt, "tract")
                rows.append(row)
                print(f"{name:22} {form:15} b{batch:<2} t{threads}  quba {q['ms_per_image']:9.3f}  ort {o['ms_per_image']:8.3f}"
                      f"  ×{row['ratio']:6.2f}  rss {q['peak_rss_bytes'] / 2**20:6.1f} MB", flush=True)

    sizes = {"quba-device": binary_size(Path(a.device_bin))}
    elapsed = time.time() - t_start
    meta = {
        "machine": mach, "load_start": load_start, "load_end": loadavg(), "elapsed_s": elapsed,
        "other_work": other_work(cpu_start, cpu_seconds(), elapsed),
        "quba": quba_version, "rev": rev + ("+changes" if dirty else ""), "tract_onnx": tract_version, "rustc": rustc,
        "onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "date": datetime.date.today().isoformat(), "target_s": TARGET_S,
        "command": shlex.join([".venv-bench/bin/python", "scripts/bench_runtimes.py"] + sys.argv[1:]),
    }
    # Both files from the same numbers, always: a doc whose JSON is from
    # another run contradicts it.
    Path(a.json_out).write_text(json.dumps({"meta": meta, "rows": rows, "sizes": sizes, "notes": notes}, indent=1) + "\n")
    Path(a.out).write_text(render(meta, rows, sizes, notes))
    print(f"wrote {a.out} and {a.json_out} in {elapsed / 60:.1f} min")


def gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def find(rows, name, form, batch, threads):
    return next((r for r in rows if r["model"] == name and r["form"] == form and r["batch"] == batch and r["threads"] == threads), None)


def int8_section(rows: list[dict]) -> list[str]:
    """int8 against fp32 in each runtime, from this run's own numbers: the
    sentences are computed, so a rerun on other hardware cannot leave a stale
    verdict behind."""
    out = ["## int8 against fp32: quba's integer path, tract alone, onnxruntime", ""]
    lite = [r for r in rows if r["model"] == "efficientnet-lite0"]
    forms = sorted({r["form"] for r in lite})
    if not {"fp32", "int8 QDQ", "int8 QOperator"} <= set(forms):
        out += ["EfficientNet-Lite0 was not measured in all three forms in this run (see the notes); no verdict.", ""]
        return out
    out += ["EfficientNet-Lite0, ms/image (and × its fp32 on the same runtime and configuration). quba's int8 columns",
            "are the default `--backend cpu`: tract with quba's integer convolutions (docs/int8.md).", "",
            "| batch | threads | quba fp32 | quba QDQ | quba QOperator | onnxruntime fp32 | onnxruntime QDQ | onnxruntime QOperator |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    qdq_vs_fp, qop_vs_fp, qdq_vs_ort = [], [], []
    for t in THREADS:
        for b in BATCHES:
            f, d, q = (find(rows, "efficientnet-lite0", x, b, t) for x in ["fp32", "int8 QDQ", "int8 QOperator"])
            if not (f and d and q):
                continue
            cell = lambda r, side: f"{r[side]['ms_per_image']:.2f} (×{r[side]['ms_per_image'] / f[side]['ms_per_image']:.2f})"
            out.append(f"| {b} | {t} | {f['quba']['ms_per_image']:.2f} | {cell(d, 'quba')} | {cell(q, 'quba')} | "
                       f"{f['ort']['ms_per_image']:.2f} | {cell(d, 'ort')} | {cell(q, 'ort')} |")
            qdq_vs_fp.append(d["quba"]["ms_per_image"] / f["quba"]["ms_per_image"])
            qop_vs_fp.append(q["quba"]["ms_per_image"] / f["quba"]["ms_per_image"])
            qdq_vs_ort.append(d["ratio"])
    out.append("")
    g = gmean(qdq_vs_fp)
    verdict = "faster than" if g < 1 else "slower than"
    out.append(f"**int8 is {verdict} fp32 in our engine**: Lite0 QDQ takes {g:.2f}× fp32's time (geometric mean over the "
               f"four configurations, range {min(qdq_vs_fp):.2f}–{max(qdq_vs_fp):.2f}×), QOperator {gmean(qop_vs_fp):.2f}×. "
               f"Against onnxruntime's int8 on the same QDQ file our engine takes {gmean(qdq_vs_ort):.2f}× its time "
               f"(range {min(qdq_vs_ort):.2f}–{max(qdq_vs_ort):.2f}×).")
    out.append("")
    tract_rows = [r for r in rows if "tract" in r]
    if tract_rows:
        out += ["tract alone on the same int8 files (`quba bench --backend tract`, batch 1, 1 thread), against quba's integer path:", "",
                "| model | form | tract alone ms/image | quba ms/image | speed-up |", "|---|---|---:|---:|---:|"]
        for r in tract_rows:
            out.append(f"| {r['model']} | {r['form']} | {r['tract']['ms_per_image']:.3f} | {r['quba']['ms_per_image']:.3f} | "
                       f"{r['tract']['ms_per_image'] / r['quba']['ms_per_image']:.2f}× |")
        out.append("")
    zoo_ratio = []
    for r in rows:
        if r["model"] != "efficientnet-lite0" and r["form"] == "int8 QDQ":
            f = find(rows, r["model"], "fp32", r["batch"], r["threads"])
            if f:
                zoo_ratio.append(r["quba"]["ms_per_image"] / f["quba"]["ms_per_image"])
    if zoo_ratio:
        out.append(f"The zoo's int8 files (QDQ) take {gmean(zoo_ratio):.2f}× their fp32's time in our engine (geometric mean over "
                   f"the {len(zoo_ratio)} zoo int8 rows). Their layers are small (64×64 inputs, 16–128 channels), where "
                   "tract's own per-op costs, the float Adds, pooling and classifier weigh more than in Lite0.")
        out.append("")
    return out


# Other processes' CPU use, averaged over the run, above which the run is
# called shared. A convention: a tenth of a core leaves room for a quiet
# machine's daemons and is far below one competing thread.
SHARED_CORES = 0.1


def load_line(meta: dict) -> str:
    """What else ran, from what the run measured; no verdict without a measurement."""
    load = (f"Load average (1 min) at start {meta['load_start']}, at end {meta['load_end']} (the end figure includes "
            "this benchmark's own threads).")
    w = meta.get("other_work")
    if not w:
        return f"- {load} Other processes' CPU use was not measured in this run."
    cores = w["other_cpu_s"] / w["elapsed_s"]
    used = (f"other processes used {w['other_cpu_s']:.1f} CPU-seconds over the run's {w['elapsed_s']:.0f} s "
            f"({cores:.2f} of a core on average)")
    if w["steal_s"] > 0:
        used += f", and the hypervisor took {w['steal_s']:.1f} s"
    if cores < SHARED_CORES and w["steal_s"] < SHARED_CORES * w["elapsed_s"]:
        return f"- {load} The machine was otherwise idle: {used}."
    return f"- {load} Other work shared the machine: {used}, so times are high and 2-thread rows the noisiest."


def render(meta: dict, rows: list[dict], sizes: dict, notes: list[str]) -> str:
    m = meta["machine"]
    L = [
        "# Benchmarks: our engine path vs onnxruntime",
        "",
        "Written by `scripts/bench_runtimes.py` (do not edit by hand; rerun it). Ratios are what count;",
        "absolute times hold for this machine only.",
        "",
        "## Machine, versions, command",
        "",
        f"- CPU: {m['model_name']} ({m['arch']}), {m['cores']} cores, {m['threads_per_core']} thread(s) per core"
        + (f", {m['hypervisor']} guest" if m["hypervisor"] else "") + f"; SIMD: {', '.join(m['simd']) or 'none listed'};"
        f" {m['mem_gib']:.0f} GiB memory.",
        load_line(meta),
        f"- {meta['quba']} (commit {meta['rev']}) with tract-onnx {meta['tract_onnx']} ({meta['rustc']}, release profile);"
        f" onnxruntime {meta['onnxruntime']} (CPUExecutionProvider), numpy {meta['numpy']}, Python {meta['python']}.",
        f"- Date {meta['date']}; the whole run took {meta['elapsed_s'] / 60:.1f} min.",
        f"- Reproduce: `{meta['command']}`; each row's quba side is the `quba bench` command in the last table.",
        "",
        "## How each side is timed",
        "",
        "- Input: random float32 of the model's own size (the ONNX input's H×W, else its sidecar's crop).",
        "- quba: `quba bench MODEL --batch B --threads T --json`, i.e. `engine::Engine::logits`, the call the",
        "  suite makes. T engine instances, one per OS thread, each on its own batch; a round is one batch on",
        "  every thread, barrier to barrier. ms/image = median round / (B·T).",
        "- onnxruntime: one `InferenceSession`, `intra_op_num_threads=T`, sequential execution, all graph",
        "  optimisations; ms/image = median `run` / B.",
        "- Both: warm-up (3 rounds at batch 1, 1 at batch 16), then enough rounds for about "
        f"{TARGET_S:.0f} s of timed work ({MIN_RUNS}–{MAX_RUNS}; sized from a batch-1 probe). ratio = quba / onnxruntime:"
        " above 1 means our engine is slower.",
        "",
    ]
    L += int8_section(rows)
    L += ["## All rows", "",
          "| model | form | batch | threads | quba ms/image | onnxruntime ms/image | ratio | quba images/s | quba peak RSS MB | rounds quba / ort |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        q, o = r["quba"], r["ort"]
        L.append(f"| {r['model']} | {r['form']} | {r['batch']} | {r['threads']} | {q['ms_per_image']:.3f} | {o['ms_per_image']:.3f} | "
                 f"{r['ratio']:.2f} | {q['images_per_second']:.1f} | {q['peak_rss_bytes'] / 2**20:.1f} | {r['quba_runs']} / {r['ort_runs']} |")
    L.append("")
    by = {}
    for r in rows:
        by.setdefault((r["model"] == "efficientnet-lite0", r["form"], r["threads"]), []).append(r["ratio"])
    L += ["Geometric mean of the ratio (batch 1 and 16 together):", "",
          "| models | form | threads | ratio |", "|---|---|---:|---:|"]
    for (lite, form, t), rs in sorted(by.items(), key=lambda kv: (not kv[0][0], kv[0][1], kv[0][2])):
        L.append(f"| {'Lite0' if lite else 'zoo'} | {form} | {t} | {gmean(rs):.2f} |")
    L.append("")
    L += ["## quba-device binary", ""]
    s = sizes.get("quba-device")
    if s:
        L.append(f"`{Path(s['path']).name}` (release, default features, x86_64, as `cargo build --release --bins` leaves it): "
                 f"{s['bytes'] / 1e6:.1f} MB, {s['stripped_bytes'] / 1e6:.1f} MB after `strip` (issue 10 asks ≤ 15 MB stripped).")
    else:
        L.append("Not measured: no quba-device binary at the given path.")
    L.append("")
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    L += ["## Commands per row", "", "```"] + [r["command"] for r in rows] + ["```", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
