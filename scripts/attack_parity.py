"""FGSM/PGD parity: `quba grad attack` (our gradient graph on tract, our
attack loop) against torchattacks 3.5.1 on the same ONNX model rebuilt in
PyTorch (scripts/grad_torch.py, float32), same images, same ε, α, steps.

Both modes hand torchattacks the normalised tensors and a model without
normalisation. Pixel mode adds set_normalization_used(mean, std), so the
library attacks the [0, 1] image; reference mode (the study's) does not, so
it perturbs and clamps the normalised tensor itself.

Accuracies must agree within ±2 pp (PGD starts are random on both sides).
Writes the table between the ATTACK markers of docs/gradients.md.

    .venv-grad/bin/python scripts/attack_parity.py --quba target/debug/quba
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchattacks
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from grad_parity import replace_block  # noqa: E402
from grad_torch import OnnxModule  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = "cnn-baseline.fp32,resnet-baseline.fp32,mobilenet-relu6.fp32,vit-tiny.fp32,resnet-baseline.int8,mobilenet-relu6.int8"


def load_folder(folder):
    classes = sorted(os.listdir(folder))
    xs, ys = [], []
    for k, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, c))):
            img = Image.open(os.path.join(folder, c, f)).convert("RGB")
            xs.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            ys.append(k)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def torch_attack(path, mode, pixels, labels, mean, std, eps, alpha, steps, seed, batch=50):
    model = OnnxModule(path, torch.float32).eval()
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    fgsm = torchattacks.FGSM(model, eps=eps)
    pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if mode == "pixel":
        # With set_normalization_used, torchattacks takes and returns normalised
        # tensors and attacks the de-normalised [0, 1] image in between.
        for atk in (fgsm, pgd):
            atk.set_normalization_used(mean=mean, std=std)
    inputs = (pixels - mean_t) / std_t
    torch.manual_seed(seed)
    counts = dict(clean=0, fgsm=0, pgd=0)
    for i in range(0, len(labels), batch):
        x, y = inputs[i:i + batch], labels[i:i + batch]
        with torch.no_grad():
            counts["clean"] += int((model(x).argmax(1) == y).sum())
        for name, atk in (("fgsm", fgsm), ("pgd", pgd)):
            adv = atk(x, y)
            with torch.no_grad():
                counts[name] += int((model(adv).argmax(1) == y).sum())
    n = len(labels)
    return {k: v / n for k, v in counts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quba", default=os.path.join(ROOT, "target/debug/quba"))
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--modes", default="pixel,reference")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs/gradients.md"))
    args = ap.parse_args()
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    tmp = tempfile.mkdtemp(prefix="attack_parity")
    subprocess.run([args.quba, "data", "synth", "--out", tmp, "--splits", "val", "--per-class", str(args.per_class)], check=True)
    folder = os.path.join(tmp, "val")
    pixels, labels = load_folder(folder)
    torch.set_num_threads(1)
    rows = []
    for stem in args.models.split(","):
        path = os.path.join(ROOT, "models/zoo", stem + ".onnx")
        meta = json.load(open(path[: -len(".onnx")] + ".json"))["pipeline"]
        for mode in args.modes.split(","):
            out = subprocess.run([args.quba, "grad", "attack", "--model", path, "--data", folder, "--mode", mode,
                                  "--seed", str(args.seed)], check=True, capture_output=True, text=True).stdout
            ours = json.loads(out.strip().splitlines()[-1])
            ref = torch_attack(path, mode, pixels, labels, meta["mean"], meta["std"], eps, alpha, steps, args.seed)
            row = dict(model=stem, mode=mode, gradient=ours["gradient"], n=ours["n"],
                       **{f"{k}_ours": ours[k] for k in ("clean", "fgsm", "pgd")},
                       **{f"{k}_torch": ref[k] for k in ("clean", "fgsm", "pgd")})
            row["max_pp"] = 100 * max(abs(row[f"{k}_ours"] - row[f"{k}_torch"]) for k in ("fgsm", "pgd"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = ["| model | mode | gradient | n | clean ours / torch | FGSM ours / torchattacks | PGD ours / torchattacks | max diff (pp) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['mode']} | {r['gradient']} | {r['n']} | {r['clean_ours']:.3f} / {r['clean_torch']:.3f} "
                     f"| {r['fgsm_ours']:.3f} / {r['fgsm_torch']:.3f} | {r['pgd_ours']:.3f} / {r['pgd_torch']:.3f} | {r['max_pp']:.1f} |")
    replace_block(args.docs, "ATTACK", "\n".join(table) + f"\n\nε = 8/255, α = 2/255, 10 steps, synthetic val split "
                  f"({args.per_class} per class), run seed {args.seed}; our final prediction uses the real model via tract "
                  f"(int8 for int8), torch's uses its float32 rebuild (fake-quant for int8).")
    bad = [r for r in rows if r["max_pp"] > 2.0]
    if bad:
        sys.exit(f"attack parity beyond ±2 pp: {[(r['model'], r['mode'], r['max_pp']) for r in bad]}")


if __name__ == "__main__":
    main()
