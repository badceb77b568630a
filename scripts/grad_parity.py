"""Input-gradient parity: quba's gradient graph (run by tract, and by
onnxruntime after onnx.checker) against torch autograd in float64.

For every model: 32 inputs (16 synthetic val images + 16 uniform-noise
images, normalised with the model's sidecar pipeline), d(sum CE)/d(input)
from `quba grad run` (tract) and from scripts/grad_torch.py (torch float64),
cosine per input. Writes the table between the PARITY markers of
docs/gradients.md and, with --fixture, the small fixture tests/it/grad_parity.rs
checks without torch.

    .venv-grad/bin/python scripts/grad_parity.py --quba target/debug/quba [--fixture]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from grad_torch import OnnxModule, input_grad  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_MODELS = ["cnn-baseline.fp32", "vit-tiny.fp32", "resnet-baseline.int8"]


def load_images(folder, n, rng):
    classes = sorted(os.listdir(folder))
    files = [(os.path.join(folder, c, f), k) for k, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(folder, c)))]
    pick = rng.choice(len(files), n, replace=False)
    imgs = [np.asarray(Image.open(files[i][0]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0 for i in pick]
    return np.stack(imgs), np.array([files[i][1] for i in pick], dtype=np.int64)


def parity_batch(model_path, val_dir, n, seed, classes):
    """n inputs for a gradient check: half synthetic val images, half uniform
    noise with random labels among `classes`, as [0, 1] pixels, with the
    model's sidecar mean and std to normalise them by."""
    meta = json.load(open(model_path[: -len(".onnx")] + ".json"))["pipeline"]
    mean = np.array(meta["mean"], dtype=np.float32)[:, None, None]
    std = np.array(meta["std"], dtype=np.float32)[:, None, None]
    rng = np.random.default_rng(seed)
    half = n // 2
    imgs, labels = load_images(val_dir, half, rng)
    noise = rng.uniform(0, 1, size=(n - half,) + imgs.shape[1:]).astype(np.float32)
    labels = np.concatenate([labels, rng.integers(0, classes, n - half)]).astype(np.int64)
    return np.concatenate([imgs, noise]), labels, mean, std


def cosine(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quba", default=os.path.join(ROOT, "target/debug/quba"))
    ap.add_argument("--models", default=os.path.join(ROOT, "models/zoo/*.onnx"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", action="store_true", help="write tests/data/grad/parity*.{json,f16}")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs/gradients.md"))
    ap.add_argument("--from-log", help="only re-render the docs table from the JSON lines a previous run printed")
    ap.add_argument("--synth-size", type=int, default=64, help="side of the synthetic images (the models' input size)")
    ap.add_argument("--tag", default="PARITY", help="the marked block of --docs that receives the table")
    args = ap.parse_args()
    if args.from_log:
        rows = [json.loads(line) for line in open(args.from_log) if line.startswith("{")]
        replace_block(args.docs, args.tag, render_table(rows) + f"\n\n{rows[0]['n']} inputs per model (seed {args.seed}).")
        return
    tmp = tempfile.mkdtemp(prefix="grad_parity")
    data = os.path.join(tmp, "synth")
    subprocess.run([args.quba, "data", "synth", "--out", data, "--splits", "val", "--per-class", "4", "--size", str(args.synth_size)],
                   check=True)
    rows, fixture = [], []
    for path in sorted(glob.glob(args.models)):
        stem = os.path.basename(path)[: -len(".onnx")]
        pixels, labels, mean, std = parity_batch(path, os.path.join(data, "val"), args.n, args.seed, 16)
        # f16-representable inputs, so the committed f16 fixture is exactly what torch saw.
        x = ((pixels - mean) / std).astype(np.float16).astype(np.float32)

        # Our side 1: the exported graph, checked and run by onnxruntime.
        gpath = os.path.join(tmp, stem + ".grad.onnx")
        subprocess.run([args.quba, "grad", "export", path, "--out", gpath], check=True, capture_output=True)
        onnx.checker.check_model(onnx.load(gpath), full_check=True)
        sess = ort.InferenceSession(gpath, providers=["CPUExecutionProvider"])
        ort_logits, ort_grad = sess.run(None, {sess.get_inputs()[0].name: x, "labels": labels})

        # Our side 2: tract, through `quba grad run`.
        x.tofile(os.path.join(tmp, "x.f32"))
        labels.tofile(os.path.join(tmp, "y.i64"))
        out = os.path.join(tmp, "out.f32")
        run = subprocess.run([args.quba, "grad", "run", path, "--input", os.path.join(tmp, "x.f32"),
                              "--labels", os.path.join(tmp, "y.i64"), "--out", out, "--batch", "8"],
                             check=True, capture_output=True, text=True)
        kind = run.stderr.strip().split()[-1]
        raw = np.fromfile(out, dtype=np.float32)
        k = ort_logits.shape[1]
        tract_logits, tract_grad = raw[: args.n * k].reshape(args.n, k), raw[args.n * k:].reshape(x.shape)

        # Reference: torch autograd, float64.
        module = OnnxModule(path, torch.float64)
        t_logits, t_grad = input_grad(module, torch.from_numpy(x), torch.from_numpy(labels))
        t_logits, t_grad = t_logits.numpy(), t_grad.numpy()

        c_tract, c_ort = cosine(tract_grad, t_grad), cosine(ort_grad, t_grad)
        row = dict(model=stem, gradient=kind, n=args.n, min_cos=float(c_tract.min()), median_cos=float(np.median(c_tract)),
                   min_cos_ort=float(c_ort.min()), logit_diff=float(np.abs(tract_logits - t_logits).max()),
                   top1_agree=float((tract_logits.argmax(1) == t_logits.argmax(1)).mean()))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.fixture and stem in FIXTURE_MODELS:
            sel = [0, 1, half]  # two images and one noise input
            d = os.path.join(ROOT, "tests/data/grad")
            os.makedirs(d, exist_ok=True)
            x[sel].astype(np.float16).tofile(os.path.join(d, f"parity-{stem}.x.f16"))
            t_grad[sel].astype(np.float16).tofile(os.path.join(d, f"parity-{stem}.g.f16"))
            fixture.append(dict(model=f"models/zoo/{stem}.onnx", labels=labels[sel].tolist(), shape=list(x[sel].shape),
                                torch_cos=[float(c) for c in c_tract[sel]], gradient=kind))
    if args.fixture:
        with open(os.path.join(ROOT, "tests/data/grad/parity.json"), "w") as f:
            json.dump(dict(generator="scripts/grad_parity.py", reference="torch float64 autograd", entries=fixture), f, indent=1)
    replace_block(args.docs, args.tag, render_table(rows) + f"\n\n{args.n} inputs per model (seed {args.seed}).")


def render_table(rows):
    table = ["| model | gradient | 1 − min cos (tract) | 1 − median cos | 1 − min cos (onnxruntime) | max logit diff | top-1 agree |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['gradient']} | {1 - r['min_cos']:.1e} | {1 - r['median_cos']:.1e} "
                     f"| {1 - r['min_cos_ort']:.1e} | {r['logit_diff']:.2e} | {r['top1_agree']:.3f} |")
    return "\n".join(table)


def replace_block(path, tag, body):
    text = open(path).read()
    start, end = f"<!-- {tag}:BEGIN -->", f"<!-- {tag}:END -->"
    i, j = text.index(start) + len(start), text.index(end)
    open(path, "w").write(text[:i] + "\n" + body + "\n" + text[j:])


if __name__ == "__main__":
    main()
