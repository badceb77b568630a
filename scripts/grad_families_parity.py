"""Gradient parity of the full-size torchvision/torch families whose exports
needed the shape-arithmetic and Pad/Slice/Split/Einsum rules (ViT-B/16,
Swin-T, MaxViT-T, ShuffleNetV2, EfficientNet-Lite0): quba's gradient graph
(tract via `quba grad run`, and onnxruntime after onnx.checker) against torch
float64 autograd of the torch module the ONNX file was exported from
(scripts/grad_torch.py cannot rebuild these graphs). Writes the table between
the PARITY_FAMILIES markers of docs/gradients.md by hand from `table`'s output.
The reduced-width versions of every family are CI's check
(tests/it/families.rs); this is the full-size measurement.

    .venv-zoo/bin/python scripts/grad_families_parity.py export vit_b_16,swin_t,maxvit_t,shufflenet,lite0 o17,o13,o14,dyn,dyn1 --dir /tmp/gfam
    .venv-zoo/bin/python scripts/grad_families_parity.py parity /tmp/gfam/*.onnx --n 16 --quba target/release/quba >> /tmp/gfam/results.jsonl
    .venv-zoo/bin/python scripts/grad_families_parity.py table /tmp/gfam/results.jsonl

(torch, torchvision's model classes, efficientnet_lite_pytorch, onnx,
onnxruntime; variants: o17/o13/o14 TorchScript at that opset, dyn the dynamo
exporter at opset 18 with a dynamic batch, dyn1 the same with batch 1.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
import torchvision
from efficientnet_lite_pytorch import EfficientNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grad_parity import cosine, parity_batch  # noqa: E402


def make(name):
    torch.manual_seed(0)
    if name == "vit_b_16":
        m = torchvision.models.vit_b_16()
        # torchvision zero-initialises the head: every input gradient would be 0.
        torch.nn.init.normal_(m.heads.head.weight, std=0.02)
        return m
    if name == "swin_t": return torchvision.models.swin_t()
    if name == "shufflenet": return torchvision.models.shufflenet_v2_x1_0()
    if name == "maxvit_t": return torchvision.models.maxvit_t()
    if name == "lite0": return EfficientNet.from_name("efficientnet-lite0")
    raise ValueError(name)


def export(a):
    names, variants = a.names.split(","), a.variants.split(",")
    os.makedirs(a.dir, exist_ok=True)
    for name in names:
        m = make(name).eval()
        x = torch.randn(1, 3, 224, 224)
        for v in variants:
            f = os.path.join(a.dir, f"{name}.{v}.onnx")
            kw = dict(input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            try:
                if v == "o17": torch.onnx.export(m, x, f, opset_version=17, dynamo=False, **kw)
                elif v == "o13": torch.onnx.export(m, x, f, opset_version=13, dynamo=False, **kw)
                elif v == "o14": torch.onnx.export(m, x, f, opset_version=14, dynamo=False, **kw)
                elif v == "dyn1":
                    # torch.export specialises Swin's batch (a guard batch <= 2), so this variant keeps batch 1.
                    torch.onnx.export(m, (x,), f, opset_version=18, dynamo=True, input_names=["input"], output_names=["logits"],
                                      external_data=False)
                elif v == "dyn":
                    torch.onnx.export(m, (x,), f, opset_version=18, dynamo=True, input_names=["input"], output_names=["logits"],
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), external_data=False)
                json.dump({"name": name, "pipeline": {"resize_shorter": 256, "crop": 224, "interpolation": "bilinear",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "num_classes": 1000},
                          open(f[:-5] + ".json", "w"), indent=2)
                print("ok", f, flush=True)
            except Exception as e:
                print("FAIL", f, repr(e)[:400], flush=True)



def parity(a):
    tmp = tempfile.mkdtemp(prefix="famparity")
    data = os.path.join(tmp, "synth")
    subprocess.run([a.quba, "data", "synth", "--out", data, "--splits", "val", "--per-class", "4", "--size", "224"], check=True,
                   capture_output=True)
    torch.set_num_threads(2)
    for path in a.models:
        stem = os.path.basename(path)[:-5]
        family = stem.split(".")[0]
        pixels, labels, mean, std = parity_batch(path, os.path.join(data, "val"), a.n, a.seed, 1000)
        x = ((pixels - mean) / std).astype(np.float32)
        t0 = time.time()
        gpath = os.path.join(tmp, stem + ".grad.onnx")
        r = subprocess.run([a.quba, "grad", "export", path, "--out", gpath], capture_output=True, text=True)
        if r.returncode:
            print(json.dumps(dict(model=stem, error=r.stderr.strip()[-400:])), flush=True); continue
        d0 = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
        batch = d0.dim_value or 8
        row = dict(model=stem, n=a.n, batch=batch)
        if not a.no_ort:
            onnx.checker.check_model(gpath, full_check=True)
            sess = ort.InferenceSession(gpath, providers=["CPUExecutionProvider"])
            og = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + batch], "labels": labels[i:i + batch]})[1]
                                 for i in range(0, a.n, batch)])
        x.tofile(os.path.join(tmp, "x.f32")); labels.tofile(os.path.join(tmp, "y.i64"))
        out = os.path.join(tmp, "out.f32")
        t1 = time.time()
        r = subprocess.run([a.quba, "grad", "run", path, "--input", os.path.join(tmp, "x.f32"), "--labels",
                            os.path.join(tmp, "y.i64"), "--out", out, "--batch", str(batch)], capture_output=True, text=True)
        if r.returncode:
            print(json.dumps(dict(model=stem, error="run: " + r.stderr.strip()[-600:])), flush=True); continue
        row["tract_s"] = round(time.time() - t1, 1)
        raw = np.fromfile(out, dtype=np.float32)
        k = 1000
        tl, tg = raw[: a.n * k].reshape(a.n, k), raw[a.n * k:].reshape(x.shape)
        m = make(family).eval().double()
        xt = torch.from_numpy(x).double().requires_grad_(True)
        logits = torch.cat([m(xt[i:i + 8]) for i in range(0, a.n, 8)])
        loss = F.cross_entropy(logits, torch.from_numpy(labels), reduction="sum")
        (g,) = torch.autograd.grad(loss, xt)
        ref, rl = g.numpy(), logits.detach().numpy()
        c = cosine(tg, ref)
        row.update(min_cos=float(c.min()), median_cos=float(np.median(c)), logit_diff=float(np.abs(tl - rl).max()),
                   top1_agree=float((tl.argmax(1) == rl.argmax(1)).mean()))
        if not a.no_ort:
            row["min_cos_ort"] = float(cosine(og, ref).min())
        row["total_s"] = round(time.time() - t0, 1)
        print(json.dumps(row), flush=True)


def table(a):
    rows = [json.loads(l) for l in open(a.results) if l.startswith("{")]
    fam = {"vit_b_16": "ViT-B/16", "swin_t": "Swin-T", "maxvit_t": "MaxViT-T", "shufflenet": "ShuffleNetV2 x1.0", "lite0": "EfficientNet-Lite0"}
    exp = {"o17": "torch.onnx.export, opset 17", "o13": "torch.onnx.export, opset 13", "o14": "torch.onnx.export, opset 14",
           "dyn": "dynamo, opset 18", "dyn1": "dynamo, opset 18 (batch fixed at 1)"}
    order = ["o17", "o13", "o14", "dyn", "dyn1"]
    key = lambda r: (list(fam).index(r["model"].split(".")[0]), order.index(r["model"].split(".")[1]))
    print("| family | export | inputs | 1 − min cos (tract) | 1 − median cos (tract) | 1 − min cos (onnxruntime) | max logit diff |")
    print("|---|---|---|---|---|---|---|")
    seen = {}
    for r in rows:
        if "min_cos" in r: seen[r["model"]] = r
    for r in sorted(seen.values(), key=key):
        f, v = r["model"].split(".")
        print(f"| {fam[f]} | {exp[v]} | {r['n']} | {1 - r['min_cos']:.1e} | {1 - r['median_cos']:.1e} | {1 - r['min_cos_ort']:.1e} | {r['logit_diff']:.1e} |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("names")
    e.add_argument("variants")
    e.add_argument("--dir", default="/tmp/gfam")
    p = sub.add_parser("parity")
    p.add_argument("models", nargs="+")
    p.add_argument("--quba", default="target/release/quba")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ort", action="store_true")
    t = sub.add_parser("table")
    t.add_argument("results")
    a = ap.parse_args()
    {"export": export, "parity": parity, "table": table}[a.cmd](a)


if __name__ == "__main__":
    main()
