"""Writes (or checks) the "Measured by quba" section of every zoo card from a
`results.json` of the default evaluation (`quba eval` with no arguments: the
whole zoo, fp32 and int8, on the in-memory synthetic benchmark), so the cards
carry the tool's own numbers and CI can prove they are still what the tool
prints.

    target/release/quba eval --runs-dir runs          # writes runs/results.json
    python3 scripts/zoo_cards.py runs/results.json          # rewrite the cards
    python3 scripts/zoo_cards.py runs/results.json --check  # exit 1 on any difference

Only the standard library: it runs in CI without a virtual environment.

`--check` accepts a number that differs by one unit in its last printed digit
and nothing else: tract's fp32 kernels take other code paths on other CPUs
(AVX2 vs AVX-512), so a float-bound part such as an int8 ViT's ECE can round
to the neighbouring last digit (0.04708 written on an AVX2 machine, 0.04709
measured on an AVX-512 one). Every other difference fails.
"""
import argparse
import json
import re
import sys
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"
BEGIN = "<!-- quba:begin (written by scripts/zoo_cards.py; do not edit) -->"
END = "<!-- quba:end -->"

DIMENSIONS = [
    ("accuracy", "Accuracy ↑"),
    ("adversarial_robustness", "Adversarial robustness ↑"),
    ("corruption_robustness", "Corruption robustness ↑"),
    ("ood_robustness", "OOD robustness ↑"),
    ("calibration_error", "Calibration error ↓"),
    ("class_balance", "Class balance ↑"),
    ("object_focus", "Object focus ↑"),
    ("shape_bias", "Shape bias ↑"),
    ("parameters_m", "Parameters (M) ↓"),
]


def fmt(v, key=""):
    if v is None:
        return "—"
    return f"{v:.4f}" if key == "calibration_error" else f"{v:.3f}"


def cell(m, key):
    if m is None:
        return "—"
    v = m["dimensions"].get(key)
    if v is None:
        return "— (" + m["missing"].get(key, "not measured") + ")"
    ci = m["intervals"].get(key)
    return fmt(v, key) + (f" [{fmt(ci[0], key)}, {fmt(ci[1], key)}]" if ci else "")


def section(name, fp32, int8, results):
    any_m = fp32 or int8
    proto = any_m["protocol"]
    grads = ", ".join(f"{m['protocol']['gradient']} for {m['precision']}" for m in (fp32, int8) if m)
    lines = [
        BEGIN,
        "## Measured by quba",
        "",
        f"`quba eval` (no arguments) on the in-memory synthetic benchmark: {proto['dataset_root']}, "
        f"{proto['per_class'] or 50} images per class of the clean and shifted sets, 10 per class corrupted 75 ways and attacked "
        f"(FGSM/PGD {proto['adversarial_mode']} mode; gradient: {grads}), seed {proto['seed']}, tool {proto['tool_version']}, "
        f"target {any_m['target']}. Brackets: 95 % bootstrap intervals. QUBA is normalised over the "
        f"{len(results['models'])} runs of the zoo ({results['normalisation']} normalisation).",
        "",
        "| dimension | fp32 | int8 |",
        "| --- | --- | --- |",
    ]
    for key, label in DIMENSIONS:
        lines.append(f"| {label} | {cell(fp32, key)} | {cell(int8, key)} |")
    q = lambda m: "—" if m is None or m["quba"] is None else f"{m['quba']:.3f}"
    lines.append(f"| QUBA (cohort) | {q(fp32)} | {q(int8)} |")
    parts = sorted(set((fp32 or {}).get("parts", {})) | set((int8 or {}).get("parts", {})))
    lines += ["", "<details><summary>parts</summary>", "", "| part | fp32 | int8 |", "| --- | --- | --- |"]
    for p in parts:
        get = lambda m: "—" if m is None or p not in m["parts"] else f"{m['parts'][p]:.4g}"
        lines.append(f"| {p} | {get(fp32)} | {get(int8)} |")
    lines += ["", "</details>", END]
    return "\n".join(lines)


NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def last_digit(s):
    """The value of one unit in the last printed digit of a number."""
    mant, _, exp = s.partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** ((int(exp) if exp else 0) - decimals)


def within_rounding(old, new):
    """Same text, and every number within one unit of its last digit."""
    if NUM.split(old) != NUM.split(new):
        return False
    pairs = [(a, b) for a, b in zip(NUM.findall(old), NUM.findall(new)) if a != b]
    return all(abs(float(a) - float(b)) <= 1.0001 * min(last_digit(a), last_digit(b)) for a, b in pairs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--check", action="store_true", help="fail if a card differs from the results")
    a = ap.parse_args()
    results = json.loads(a.results.read_text())
    runs = {}
    for m in results["models"]:
        runs[(m["name"], m["precision"])] = m
    names = sorted({n for n, _ in runs})
    stale = []
    for name in names:
        card = ZOO / f"{name}.md"
        if not card.exists():
            continue
        text = card.read_text()
        new = section(name, runs.get((name, "fp32")), runs.get((name, "int8")), results)
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            updated = head + new + tail
        else:
            updated = text.rstrip("\n") + "\n\n" + new + "\n"
        if updated != text:
            if a.check and within_rounding(text, updated):
                print(f"{card.name}: equal up to one unit in a last digit (another CPU's float rounding)", file=sys.stderr)
                continue
            stale.append(card.name)
            if not a.check:
                card.write_text(updated)
    if a.check and stale:
        print(f"cards differ from {a.results}: {', '.join(stale)} (rerun scripts/zoo_cards.py)", file=sys.stderr)
        sys.exit(1)
    print(("checked " if a.check else "wrote ") + f"{len(names)} cards")


if __name__ == "__main__":
    main()
