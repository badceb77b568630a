"""Why the synthetic OOD dimension carries little signal: every fp32 zoo model
on each synthetic OOD set, with its accuracy and where its decisions go.

Writes docs/synthetic-ood.md and docs/synthetic-ood.json (the raw numbers,
from the same run). The sets are written by `quba data synth` (the in-memory
benchmark's images, byte for byte) and classified by onnxruntime with each
model's sidecar normalisation, so nothing here depends on quba's own engine.

Run: .venv-zoo/bin/python scripts/ood_probe.py [--quba target/release/quba] [--per-class 50]
"""
import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "models" / "zoo"
SETS = {"val": "val", "edge": "model-vs-human/edge", "silhouette": "model-vs-human/silhouette",
        "sketch": "model-vs-human/sketch", "stylized": "model-vs-human/stylized", "rendition": "rendition"}
MODELS = ["cnn-baseline", "resnet-baseline", "mobilenet-relu6", "vit-tiny",
          "resnet-texrand", "resnet-bgrand", "resnet-adv", "resnet-augmix"]


def load(root: Path, sidecar: dict):
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    p = sidecar["pipeline"]
    mean, std = np.array(p["mean"], np.float32), np.array(p["std"], np.float32)
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            with Image.open(f) as im:
                x = np.asarray(im.convert("RGB"), np.float32) / 255.0
            xs.append((x - mean) / std)
            ys.append(ci)
    return np.stack(xs).transpose(0, 3, 1, 2).copy(), np.array(ys), classes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quba", default=str(ROOT / "target" / "release" / "quba"))
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "docs" / "synthetic-ood"))
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        subprocess.run([a.quba, "data", "synth", "--out", str(tree), "--per-class", str(a.per_class),
                        "--splits", ",".join(SETS)], check=True, capture_output=True)
        rows = {}
        for m in MODELS:
            sidecar = json.loads((ZOO / f"{m}.fp32.json").read_text())
            s = ort.InferenceSession(str(ZOO / f"{m}.fp32.onnx"), so)
            name = s.get_inputs()[0].name
            rows[m] = {}
            for key, rel in SETS.items():
                x, y, classes = load(tree / rel, sidecar)
                pred = np.concatenate([s.run(None, {name: x[i:i + 200]})[0].argmax(1) for i in range(0, len(x), 200)])
                hist = np.bincount(pred, minlength=len(classes))
                top = int(hist.argmax())
                rows[m][key] = {"accuracy": float((pred == y).mean()), "images": int(len(y)),
                                "most_predicted": classes[top], "most_predicted_share": float(hist[top] / len(y)),
                                "predictions": {c: int(n) for c, n in zip(classes, hist)}}
    ood = [k for k in SETS if k != "val"]
    for m in MODELS:
        rel = [rows[m][k]["accuracy"] / rows[m]["val"]["accuracy"] for k in ood]
        rows[m]["ood_robustness"] = float(np.exp(np.mean(np.log(np.maximum(rel, 1e-12)))))
        rows[m]["mean_ood_accuracy"] = float(np.mean([rows[m][k]["accuracy"] for k in ood]))
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"per_class": a.per_class, "models": rows}, indent=1) + "\n")
    spread = max(r["ood_robustness"] for r in rows.values()) - min(r["ood_robustness"] for r in rows.values())
    lines = [
        "# The synthetic OOD sets: accuracy and where the decisions go",
        "",
        f"Written by `scripts/ood_probe.py` (raw numbers: `synthetic-ood.json`, same run): the eight fp32 zoo models "
        f"(onnxruntime, sidecar normalisation) on `quba data synth`'s val and OOD splits, {a.per_class} images per class "
        f"(16 classes, chance 6.25 %). OOD robustness here is the dimension's formula (gmean of the five accuracies "
        f"relative to val); spread over the eight: {spread:.3f}.",
        "",
        "| model | val | " + " | ".join(ood) + " | mean OOD | OOD robustness |",
        "| --- | " + " | ".join("---" for _ in range(len(ood) + 3)) + " |",
    ]
    for m in MODELS:
        r = rows[m]
        lines.append(f"| {m} | {100 * r['val']['accuracy']:.1f} % | "
                     + " | ".join(f"{100 * r[k]['accuracy']:.1f} %" for k in ood)
                     + f" | {100 * r['mean_ood_accuracy']:.1f} % | {r['ood_robustness']:.3f} |")
    lines += ["", "Where the decisions go: the class each model predicts most on each set, and its share of the set.", "",
              "| model | " + " | ".join(ood) + " |", "| --- | " + " | ".join("---" for _ in ood) + " |"]
    for m in MODELS:
        lines.append(f"| {m} | " + " | ".join(
            f"{rows[m][k]['most_predicted']} {100 * rows[m][k]['most_predicted_share']:.0f} %" for k in ood) + " |")
    lines += ["",
              "Reading it (generator v1): the line drawings and silhouettes sit on white or paper, and the classes they "
              "collapse into are those whose home backgrounds are the palest of the 16 families: ring (`cream`, "
              "235/230/215 to 150/190/140), heart (`mint`, up to 250/255/252), lshape (`lavender`). Trained at "
              "p_background 0.8, every model reads a pale backdrop as that class's scene, and with no texture on the "
              "object nothing outweighs it. Only stylized, whose objects keep a (held-out) texture, separates the "
              "shape-biased recipes (texrand, bgrand) from the rest. A redesign must remove that collision (no home "
              "family near the OOD backdrops, or backdrops the training world also shows) and give the standard "
              "world some texture-free evidence of shape, then retrain the zoo (issue 21, item 5).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
