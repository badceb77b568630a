#!/usr/bin/env python3
"""Make the tiny benchmark: a procedurally drawn 10-class image set and a
small CNN trained on it, as fp32 ONNX plus two int8 variants.

Everything is derived from one seed (default 7) and the script can be run
again at any time; on the same machine and package versions it reproduces
the PNG files and the fp32 model byte for byte (`--verify` checks that by
regenerating into a temporary folder and comparing sha256 sums).

Writes, relative to the repository root:

- ``tests/data/tiny/val/<cK_shape>/<nnn>.png``: ImageFolder validation split,
  10 classes x 12 images, 32x32 RGB. Folder names sort in class-index order.
- ``models/tiny/tiny-cnn.fp32.onnx``: opset 13, input ``input`` [N,3,32,32]
  (already normalised), output ``logits`` [N,10].
  Conv(3->16,k3,p1)+Relu -> Conv(16->32,k3,s2,p1)+Relu -> GlobalAveragePool
  -> Flatten -> Gemm(32->10).
- ``models/tiny/tiny-cnn.int8.onnx``: onnxruntime static quantisation, QDQ
  format, per-channel int8 weights, int8 activations.
- ``models/tiny/tiny-cnn.int8-qop.onnx``: QOperator format, only ``Conv``
  quantised (QLinearConv; tract cannot load onnxruntime's Microsoft-domain
  QGemm / QLinearGlobalAveragePool), per-channel.
- a sidecar ``<model>.json`` beside each model (the input pipeline),
- ``models/tiny/CARD.md``: the model card,
- ``tests/data/tiny/ort_reference.json``: onnxruntime logits for every val
  image and every model file (the tract-vs-onnxruntime parity reference).

Training needs no deep-learning framework: the whole network is trained with
hand-written numpy backpropagation (float32, Adam, cross-entropy). The
training split (150 images per class by default) is generated in memory only,
from a different random stream than the validation split.

Run:  .venv/bin/python scripts/make_tiny.py [--seed 7] [--verify]
"""

from __future__ import annotations

import os

# One BLAS thread: the training result must not depend on how many cores the
# machine has (a different split of a matrix product can change the last bit).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

CLASSES = [
    "c0_disc",
    "c1_square",
    "c2_triangle",
    "c3_cross",
    "c4_ring",
    "c5_bar",
    "c6_diamond",
    "c7_frame",
    "c8_xcross",
    "c9_halfdisc",
]
NUM_CLASSES = len(CLASSES)
SIZE = 32
SUPERSAMPLE = 4  # shapes are drawn on a 128x128 grid and box-averaged: anti-aliased edges
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NAME = "tiny-cnn"
OPSET = 13
IR_VERSION = 8  # the IR version that goes with opset 13; readable by every tract/onnxruntime we use

FP32 = "tiny-cnn.fp32.onnx"
QDQ = "tiny-cnn.int8.onnx"
QOP = "tiny-cnn.int8-qop.onnx"

# Random streams: one SeedSequence per purpose, all children of --seed.
STREAM_VAL, STREAM_TRAIN, STREAM_INIT, STREAM_SHUFFLE = 0, 1, 2, 3


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def _grid():
    """Pixel-centre coordinates of the supersampled grid, in output pixels."""
    n = SIZE * SUPERSAMPLE
    c = (np.arange(n, dtype=np.float64) + 0.5) / SUPERSAMPLE
    return np.meshgrid(c, c, indexing="xy")  # X (column), Y (row; down)


_GX, _GY = _grid()


def shape_mask(cls: int, cx: float, cy: float, r: float, angle: float, flip: int) -> np.ndarray:
    """Coverage in [0, 1] of shape `cls` centred at (cx, cy), size r (px)."""
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = _GX - cx, _GY - cy
    x = ca * dx + sa * dy
    y = -sa * dx + ca * dy
    ax, ay = np.abs(x), np.abs(y)
    rho = np.hypot(x, y)
    name = CLASSES[cls].split("_", 1)[1]
    if name == "disc":
        m = rho <= r
    elif name == "square":
        m = np.maximum(ax, ay) <= 0.8 * r
    elif name == "triangle":
        # apex up at (0, -r), base at y = 0.75 r, half-width 0.95 r
        t = (y + r) / (1.75 * r)
        m = (y <= 0.75 * r) & (t >= 0) & (ax <= 0.95 * r * t)
    elif name == "cross":
        w = 0.3 * r
        m = ((ax <= w) & (ay <= r)) | ((ay <= w) & (ax <= r))
    elif name == "ring":
        m = (rho <= r) & (rho >= 0.55 * r)
    elif name == "bar":
        long_, short = (ax, ay) if flip == 0 else (ay, ax)
        m = (long_ <= r) & (short <= 0.3 * r)
    elif name == "diamond":
        m = ax + ay <= r
    elif name == "frame":
        q = np.maximum(ax, ay)
        m = (q <= 0.85 * r) & (q >= 0.5 * r)
    elif name == "xcross":
        u = np.abs(x + y) / np.sqrt(2.0)
        v = np.abs(x - y) / np.sqrt(2.0)
        w = 0.3 * r
        m = ((u <= w) & (v <= r)) | ((v <= w) & (u <= r))
    elif name == "halfdisc":
        m = (rho <= r) & ((y >= 0) if flip == 0 else (y <= 0))
    else:  # pragma: no cover
        raise ValueError(name)
    m = m.astype(np.float64)
    s = SUPERSAMPLE
    return m.reshape(SIZE, s, SIZE, s).mean(axis=(1, 3))


# Difficulty knobs of draw_image (tuned so the tiny model lands at roughly
# 60-90% val accuracy).
DIFFICULTY = dict(contrast=(50.0, 150.0), noise=(3.0, 16.0), gradient=12.0, rotation=15.0)


def draw_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """One 32x32x3 uint8 image of class `cls`.

    Random size, position, small rotation, random foreground and background
    colours at a random (sometimes low) contrast, a smooth background
    gradient and per-pixel noise: hard enough that the tiny model makes
    mistakes.
    """
    r = rng.uniform(5.0, 11.0)
    margin = r * 0.9
    cx = rng.uniform(margin, SIZE - margin)
    cy = rng.uniform(margin, SIZE - margin)
    angle = np.deg2rad(rng.uniform(-DIFFICULTY["rotation"], DIFFICULTY["rotation"]))
    flip = int(rng.integers(0, 2))
    m = shape_mask(cls, cx, cy, r, angle, flip)[:, :, None]

    # Foreground brighter than the background in every channel, by a random
    # contrast, with random hues for both. (With random contrast polarity
    # this network, which sees the image only through global average
    # pooling, barely learns the shapes.)
    contrast = rng.uniform(*DIFFICULTY["contrast"])
    bg = rng.uniform(0, 255 - contrast, size=3)
    fg = bg + contrast * rng.uniform(0.6, 1.0, size=3)

    # Smooth gradient in the background.
    gx, gy = rng.normal(0, DIFFICULTY["gradient"], size=2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
    grad = (gx * xx + gy * yy)[:, :, None]
    noise = rng.normal(0, rng.uniform(*DIFFICULTY["noise"]), size=(SIZE, SIZE, 3))
    img = (bg + grad) * (1 - m) + fg * m + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_split(seed: int, stream: int, per_class: int):
    """Images (uint8, N x 32 x 32 x 3) and labels, class-major order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    imgs, labels = [], []
    for c in range(NUM_CLASSES):
        for _ in range(per_class):
            imgs.append(draw_image(c, rng))
            labels.append(c)
    return np.stack(imgs), np.array(labels, dtype=np.int64)


def normalise(imgs_u8: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, (x/255 - mean)/std, as the Rust pipeline."""
    x = imgs_u8.astype(np.float32) / np.float32(255.0)
    x = (x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------
# Network in numpy (forward + backward)
# --------------------------------------------------------------------------


def im2col(x: np.ndarray, stride: int):
    """x: N,H,W,C (channels last; pad 1, kernel 3) -> cols (N*Ho*Wo, C*9)
    with columns in (C, kh, kw) order, i.e. matching ONNX weights
    reshaped to (O, C*9); plus the output size."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
    win = win[:, ::stride, ::stride]  # N,Ho,Wo,C,3,3
    n, ho, wo = win.shape[:3]
    return win.reshape(n * ho * wo, -1), ho, wo


def col2im(dcols: np.ndarray, shape, stride: int, ho: int, wo: int) -> np.ndarray:
    """Adjoint of im2col: scatter-add column gradients back to N,H,W,C."""
    n, h, w, c = shape
    d = dcols.reshape(n, ho, wo, c, 3, 3)
    dxp = np.zeros((n, h + 2, w + 2, c), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :] += d[..., i, j]
    return dxp[:, 1:-1, 1:-1, :]


def conv_forward(x, wt, b, stride):
    cols, ho, wo = im2col(x, stride)
    out = cols @ wt.reshape(wt.shape[0], -1).T + b
    return out.reshape(x.shape[0], ho, wo, -1), (cols, ho, wo)


def forward(params, x):
    """x: N,H,W,C. Same network as the ONNX graph, channels last."""
    w1, b1, w2, b2, w3, b3 = params
    z1, c1 = conv_forward(x, w1, b1, 1)
    a1 = np.maximum(z1, 0)
    z2, c2 = conv_forward(a1, w2, b2, 2)
    a2 = np.maximum(z2, 0)
    g = a2.mean(axis=(1, 2))
    logits = g @ w3.T + b3
    return logits, (z1, c1, a1, z2, c2)


def backward(params, cache, dlogits):
    """Gradients of the loss w.r.t. all parameters, given d loss / d logits."""
    w1, b1, w2, b2, w3, b3 = params
    z1, c1, a1, z2, c2 = cache
    g = np.maximum(z2, 0).mean(axis=(1, 2))
    dw3 = dlogits.T @ g
    db3 = dlogits.sum(0)
    dg = dlogits @ w3
    hw = z2.shape[1] * z2.shape[2]
    dz2 = (dg[:, None, None, :] / hw) * (z2 > 0)
    cols2, ho2, wo2 = c2
    dz2f = dz2.reshape(-1, w2.shape[0])
    dw2 = (cols2.T @ dz2f).T.reshape(w2.shape)  # (cols.T @ d).T: OpenBLAS sgemm is far slower as d.T @ cols here
    db2 = dz2f.sum(0)
    da1 = col2im(dz2f @ w2.reshape(w2.shape[0], -1), a1.shape, 2, ho2, wo2)
    dz1 = da1 * (z1 > 0)
    cols1, _, _ = c1
    dz1f = dz1.reshape(-1, w1.shape[0])
    dw1 = (cols1.T @ dz1f).T.reshape(w1.shape)
    db1 = dz1f.sum(0)
    return [dw1, db1, dw2, db2, dw3, db3]


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(x, y, seed, epochs, batch, lr, weight_decay, log):
    """Adam on mean cross-entropy (+ L2 on weights), float32, seeded.

    `x` is N,C,H,W as for the ONNX model; training runs channels last."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_INIT]))

    def he(shape, fan_in):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)

    params = [
        he((16, 3, 3, 3), 27),
        np.zeros(16),
        he((32, 16, 3, 3), 144),
        np.zeros(32),
        rng.normal(0.0, np.sqrt(1.0 / 32), size=(NUM_CLASSES, 32)),
        np.zeros(NUM_CLASSES),
    ]
    params = [p.astype(np.float32) for p in params]
    decay = [True, False, True, False, True, False]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    shuf = np.random.default_rng(np.random.SeedSequence([seed, STREAM_SHUFFLE]))
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)
    n = len(y)
    step = 0
    for ep in range(epochs):
        # cosine learning-rate schedule
        lr_ep = lr * 0.5 * (1 + np.cos(np.pi * ep / epochs))
        order = shuf.permutation(n)
        tot, hits = 0.0, 0
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            logits, cache = forward(params, x[idx])
            p = softmax(logits)
            yb = y[idx]
            z = logits.astype(np.float64)
            zmax = z.max(1)
            tot += float((zmax + np.log(np.exp(z - zmax[:, None]).sum(1)) - z[np.arange(len(idx)), yb]).sum())
            hits += int((logits.argmax(1) == yb).sum())
            d = p.copy()
            d[np.arange(len(idx)), yb] -= 1
            d /= len(idx)
            grads = backward(params, cache, d)
            step += 1
            for i, gr in enumerate(grads):
                if decay[i]:
                    gr = gr + weight_decay * params[i]
                m[i] = b1 * m[i] + (1 - b1) * gr
                v[i] = b2 * v[i] + (1 - b2) * gr * gr
                mh = m[i] / (1 - b1**step)
                vh = v[i] / (1 - b2**step)
                params[i] = (params[i] - lr_ep * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        if log and (ep % 10 == 9 or ep == epochs - 1):
            print(f"  epoch {ep + 1:3d}: loss {tot / n:.4f}  train acc {hits / n:.3f}", file=sys.stderr)
    return [p.astype(np.float32) for p in params]


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------


def build_onnx(params) -> onnx.ModelProto:
    w1, b1, w2, b2, w3, b3 = params
    inits = [
        numpy_helper.from_array(w1, "conv1.weight"),
        numpy_helper.from_array(b1, "conv1.bias"),
        numpy_helper.from_array(w2, "conv2.weight"),
        numpy_helper.from_array(b2, "conv2.bias"),
        numpy_helper.from_array(w3, "fc.weight"),
        numpy_helper.from_array(b3, "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="quba-edge scripts/make_tiny.py")
    model.ir_version = IR_VERSION
    model.doc_string = ("Tiny CNN for the quba-edge test benchmark: input is the normalised image "
                        "(x/255 - mean)/std, output raw logits over 10 shape classes.")
    onnx.checker.check_model(model, full_check=True)
    return model


class Reader(CalibrationDataReader):
    """Calibration batches of normalised training images."""

    def __init__(self, x: np.ndarray, batch: int = 50):
        self.batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        b = self.batches[self.i]
        self.i += 1
        return {"input": b}

    def rewind(self):
        self.i = 0


def quantise(fp32_path: Path, out: Path, fmt: str, calib: np.ndarray):
    """Static post-training quantisation with onnxruntime, per-channel int8
    weights. Activation types follow onnxruntime's advice for x86-64: int8
    (S8S8) for QDQ, uint8 (U8S8) for QOperator."""
    common = dict(
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    if fmt == "qdq":
        quantize_static(str(fp32_path), str(out), Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, **common)
    else:
        quantize_static(str(fp32_path), str(out), Reader(calib), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, op_types_to_quantize=["Conv"], **common)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise SystemExit(f"{out.name}: non-standard ops {foreign}; tract cannot load them")
    return m


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def count_parameters(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def f32s(values) -> list:
    """Floats printed as the shortest decimal that round-trips float32."""
    return [float(str(np.float32(v))) for v in values]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def sidecar(precision: str, fmt):
    return {
        "name": NAME,
        "precision": precision,
        "int8_format": fmt,
        "pipeline": {
            "resize_shorter": SIZE,
            "crop": SIZE,
            "interpolation": "bicubic",
            "mean": list(MEAN),
            "std": list(STD),
        },
        "num_classes": NUM_CLASSES,
    }


def write_json(path: Path, obj, indent=2):
    path.write_text(json.dumps(obj, indent=indent) + "\n")


def write_reference(path: Path, reference: dict):
    """{model file: [entry, ...]} with one image entry per line."""
    lines = ["{"]
    for i, (f, entries) in enumerate(reference.items()):
        lines.append(f"  {json.dumps(f)}: [")
        lines += [f"    {json.dumps(e)}" + ("," if j + 1 < len(entries) else "") for j, e in enumerate(entries)]
        lines.append("  ]" + ("," if i + 1 < len(reference) else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == reference
    path.write_text(text)


def load_val(val_dir: Path):
    """Val images exactly as a reader of the PNG files sees them (PIL, RGB)."""
    paths, labels, imgs = [], [], []
    classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    assert classes == CLASSES, classes
    for c, name in enumerate(classes):
        for f in sorted((val_dir / name).iterdir()):
            with Image.open(f) as im:
                imgs.append(np.asarray(im.convert("RGB")))
            paths.append(f"val/{name}/{f.name}")
            labels.append(c)
    return paths, np.array(labels), normalise(np.stack(imgs))


def generate(root: Path, seed: int, train_per_class: int, val_per_class: int, epochs: int, log=True):
    data_dir = root / "tests/data/tiny"
    val_dir = data_dir / "val"
    model_dir = root / "models/tiny"
    if val_dir.exists():
        shutil.rmtree(val_dir)
    model_dir.mkdir(parents=True, exist_ok=True)

    # 1. validation PNGs
    val_u8, val_y = make_split(seed, STREAM_VAL, val_per_class)
    for c, name in enumerate(CLASSES):
        (val_dir / name).mkdir(parents=True)
    counters = [0] * NUM_CLASSES
    for img, c in zip(val_u8, val_y):
        Image.fromarray(img, "RGB").save(val_dir / CLASSES[c] / f"{counters[c]:03d}.png", format="PNG")
        counters[c] += 1

    # 2. training split (memory only) and training
    tr_u8, tr_y = make_split(seed, STREAM_TRAIN, train_per_class)
    tr_x = normalise(tr_u8)
    if log:
        print(f"training on {len(tr_y)} images, {epochs} epochs", file=sys.stderr)
    params = train(tr_x, tr_y, seed, epochs=epochs, batch=50, lr=0.01, weight_decay=1e-4, log=log)

    # 3. ONNX fp32 + sidecars
    fp32 = build_onnx(params)
    fp32_path = model_dir / FP32
    onnx.save(fp32, str(fp32_path))
    write_json(model_dir / FP32.replace(".onnx", ".json"), sidecar("fp32", None))

    # 4. int8: calibration on the first 30 training images of every class
    pick = np.concatenate([np.where(tr_y == c)[0][:30] for c in range(NUM_CLASSES)])
    calib = tr_x[pick]
    quantise(fp32_path, model_dir / QDQ, "qdq", calib)
    write_json(model_dir / QDQ.replace(".onnx", ".json"), sidecar("int8", "qdq"))
    quantise(fp32_path, model_dir / QOP, "qoperator", calib)
    write_json(model_dir / QOP.replace(".onnx", ".json"), sidecar("int8", "qoperator"))

    # 5. onnxruntime reference on the PNGs as written
    paths, labels, x = load_val(val_dir)
    reference, acc, ops = {}, {}, {}
    train_acc = {}
    for f in (FP32, QDQ, QOP):
        sess = session(model_dir / f)
        logits = sess.run(["logits"], {"input": x})[0]
        acc[f] = float((logits.argmax(1) == labels).mean())
        tl = sess.run(["logits"], {"input": tr_x})[0]
        train_acc[f] = float((tl.argmax(1) == tr_y).mean())
        reference[f] = [
            {"path": p, "label": int(l), "logits": f32s(row)} for p, l, row in zip(paths, labels, logits)
        ]
        m = onnx.load(str(model_dir / f))
        ops[f] = sorted({n.op_type for n in m.graph.node})
    write_reference(data_dir / "ort_reference.json", reference)

    per_class = {}
    fl = session(model_dir / FP32).run(["logits"], {"input": x})[0].argmax(1)
    for c, name in enumerate(CLASSES):
        per_class[name] = float((fl[labels == c] == c).mean())

    nparams = count_parameters(fp32)
    card = render_card(seed, train_per_class, val_per_class, epochs, nparams, acc, train_acc, ops, per_class,
                       {f: sha256(model_dir / f) for f in (FP32, QDQ, QOP)},
                       {f: (model_dir / f).stat().st_size for f in (FP32, QDQ, QOP)})
    (model_dir / "CARD.md").write_text(card)
    return acc, nparams


def render_card(seed, train_pc, val_pc, epochs, nparams, acc, train_acc, ops, per_class, shas, sizes):
    rows = "\n".join(
        f"| `{f}` | {fmt} | {acc[f] * 100:.1f}% ({round(acc[f] * 120)}/120) | {train_acc[f] * 100:.1f}% | {sizes[f]} | `{shas[f]}` |"
        for f, fmt in ((FP32, "fp32"), (QDQ, "int8 QDQ"), (QOP, "int8 QOperator"))
    )
    opsrows = "\n".join(f"- `{f}`: {', '.join(ops[f])}" for f in (FP32, QDQ, QOP))
    pcs = ", ".join(f"{k} {v * 100:.0f}%" for k, v in per_class.items())
    versions = f"numpy {np.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, pillow {Image.__version__}"
    return f"""# tiny-cnn — model card

A deliberately small classifier for quba-edge's tests and its embedded
benchmark: it is fast under tract (also under QEMU), ships in a few KB, and is
imperfect on purpose, so that calibration error and class balance are not
trivial. It is not a useful vision model.

## Architecture

`input` [N,3,32,32] float32 (already normalised) →
Conv(3→16, 3×3, pad 1) + Relu → Conv(16→32, 3×3, stride 2, pad 1) + Relu →
GlobalAveragePool → Flatten → Gemm(32→10) → `logits` [N,10] (raw logits,
no softmax). ONNX opset {OPSET}, IR version {IR_VERSION}, symbolic batch
dimension `N`; built with `onnx.helper` and checked with `onnx.checker`.

**Parameters: {nparams}** (weight and bias elements: 16·3·3·3 + 16 +
32·16·3·3 + 32 + 10·32 + 10). The int8 files hold the same number of weight
elements.

## Data

Ten procedurally drawn shape classes, 32×32 RGB: {", ".join(f"`{c}`" for c in CLASSES)}
(folder names sort in class-index order). Each image: a shape of random size
(radius 5–11 px), position and rotation (±{DIFFICULTY["rotation"]:g}°), drawn with 4× supersampling
(anti-aliased); random background and foreground colours, the foreground
brighter in every channel by a random contrast ({DIFFICULTY["contrast"][0]:g}–{DIFFICULTY["contrast"][1]:g} grey levels,
60–100% of it per channel); a random background gradient (σ {DIFFICULTY["gradient"]:g}) and
Gaussian pixel noise (σ {DIFFICULTY["noise"][0]:g}–{DIFFICULTY["noise"][1]:g}).

- validation: `tests/data/tiny/val/`, {val_pc} images per class
  ({val_pc * NUM_CLASSES} PNGs), random stream ({seed}, {STREAM_VAL});
- training: {train_pc} images per class, generated in memory only, random
  stream ({seed}, {STREAM_TRAIN}).

## Training

Plain numpy, no deep-learning framework: forward and backward passes of the
whole network written out (im2col convolutions), float32, He-normal
initialisation (stream ({seed}, {STREAM_INIT})), Adam (lr 0.01, cosine decay,
β = 0.9/0.999), batch 50 shuffled by stream ({seed}, {STREAM_SHUFFLE}),
{epochs} epochs, mean cross-entropy + 1e-4·L2 on weights. Seed: {seed}.

## Input pipeline

Decode to RGB (PIL), resize the shorter side to 32 (bicubic; a no-op on the
32×32 images), centre-crop 32, scale to [0, 1], normalise with mean
{list(MEAN)} and std {list(STD)}. The sidecar `<model>.json` beside each file
states this; nothing is implicit.

## int8 variants

onnxruntime {ort.__version__} `quantize_static`, MinMax calibration on 300
training images (the first 30 of each class), per-channel symmetric int8
weights; int8 activations in the QDQ file, uint8 in the QOperator file
(onnxruntime's advice for x86-64):

- `{QDQ}`: QDQ format (QuantizeLinear/DequantizeLinear around every
  quantisable op, Conv and Gemm);
- `{QOP}`: QOperator format with `op_types_to_quantize=["Conv"]` only, so the
  file has QLinearConv but no Microsoft-domain op (QGemm,
  QLinearGlobalAveragePool) that tract cannot load. Relu, pooling and the
  Gemm head stay float.

Operators per file:
{opsrows}

## Accuracy (onnxruntime, CPU, on the val split)

| file | precision | val top-1 | train top-1 | bytes | sha256 |
|---|---|---|---|---|---|
{rows}

Per-class val accuracy (fp32): {pcs}.

Measured with {versions}.

## Regenerate

```sh
python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
.venv/bin/python scripts/make_tiny.py --seed {seed}
```

This rewrites `models/tiny/` (models, sidecars, this card) and
`tests/data/tiny/` (val PNGs, `ort_reference.json`). On the same package
versions it reproduces the PNGs and the fp32 model byte for byte
(`--verify` regenerates into a temporary folder and compares sha256 sums);
floating-point training on another CPU or BLAS build may change the last
bits of the weights, so the sha256 sums above are the ones to cite.
"""


def tree_hashes(root: Path) -> dict:
    out = {}
    for sub in ("tests/data/tiny", "models/tiny"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = sha256(p)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train-per-class", type=int, default=150)
    ap.add_argument("--val-per-class", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root to write into")
    ap.add_argument("--verify", action="store_true",
                    help="also regenerate into a temporary folder and compare sha256 of every output")
    a = ap.parse_args(argv)

    acc, nparams = generate(a.root, a.seed, a.train_per_class, a.val_per_class, a.epochs)
    for f, v in acc.items():
        print(f"{f}: val top-1 {v * 100:.1f}%")
    print(f"parameters: {nparams}")
    if a.verify:
        with tempfile.TemporaryDirectory() as t:
            generate(Path(t), a.seed, a.train_per_class, a.val_per_class, a.epochs, log=False)
            h1, h2 = tree_hashes(a.root), tree_hashes(Path(t))
            if h1.keys() != h2.keys():
                raise SystemExit(f"verify: file sets differ: {sorted(set(h1) ^ set(h2))}")
            bad = [k for k in h1 if h1[k] != h2[k]]
            if bad:
                raise SystemExit(f"verify: not reproduced byte for byte: {bad}")
            print(f"verify: {len(h1)} files reproduced byte for byte")


if __name__ == "__main__":
    main()
