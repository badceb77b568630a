#!/usr/bin/env python3
"""The architecture-family test set (issue 20): one reduced-width model per
family, exported by torch's exporters, with the references
tests/it/families.rs checks quba against, all under tests/data/families/.

Each family is built from torchvision's own model classes (EfficientNet-Lite0
from efficientnet_lite_pytorch's) at reduced widths and depths, so the op
structure is the family's and the files stay small: stems, block kinds
(basic, bottleneck, grouped, inverted residual, squeeze-excitation, fused
MBConv, channel shuffle, fire, dense, inception, patch embedding, shifted
windows, block/grid attention, layer scale) and heads are the real ones.
Weights are seeded random (no downloads): every parameter is redrawn, then
the BatchNorm running statistics are measured on random inputs so that BN
normalises for real (not the identity a fresh layer is), and the classifier
is scaled so the logits have a standard deviation of 2 on those inputs.

Per family, the script writes
- `FAMILY.ts17.onnx` (TorchScript exporter, `dynamo=False`, opset 17),
  `FAMILY.ts13.onnx` (opset 13) and `FAMILY.dynamo18.onnx` (the dynamo
  exporter, opset 18), each with a sidecar `.json` in the zoo's format; an
  exporter that fails is recorded with its error in the manifest, not hidden.
  Two edits to what the exporters write, neither of which changes the graph:
  the dynamo exporter's per-node FX annotations are dropped, and tensor
  names are shortened (`shorten_tensor_names`) — together they were over
  half of the files' bytes;
- `FAMILY.ts17.int8.onnx`: onnxruntime's own quantiser on the opset-17 file
  (`quant_pre_process`, then `quantize_static`: QDQ, per-channel int8
  weights, uint8 activations, MinMax on 8 calibration inputs);
- `FAMILY.grad.f16`: torch's float64 autograd input gradient of the summed
  cross-entropy for the first GRAD_INPUTS inputs (one for Inception-v3's
  299 px), computed on the torch module itself in float64 (not on the ONNX
  file: scripts/grad_torch.py's OnnxModule has no Pad, Slice or attention
  ops), each input's gradient divided by its largest magnitude before
  rounding to f16 (a cosine does not see the scale; f16 would flush small
  gradients to zero);
- `manifest.json`: per family the torch float64 log-probabilities top-5 for
  each of INPUTS inputs, the labels, and onnxruntime's int8 top-1 and top-2
  margin on INT8_INPUTS inputs, with the graph as written (optimisations off: DequantizeLinear,
  f32 Conv, QuantizeLinear) and as onnxruntime runs it by default.

Inputs are not stored: `inputs` below and tests/it/families.rs `inputs`
generate the same bits (a 64-bit LCG gives an 8×8 grid of bytes per channel
plus per-pixel noise, normalised in f32 with mean 0.5 and std 0.25; every
step is one IEEE f32 operation in both languages).

Run with torch, torchvision, onnx, onnxscript, onnxruntime and
efficientnet_lite_pytorch (scripts/requirements-families.txt; torch's wheels
are too large for CI, which is why the outputs are committed):

    .venv-zoo/bin/python scripts/export_families.py            # rewrite tests/data/families
    .venv-zoo/bin/python scripts/export_families.py --check    # recompute and compare with the committed manifest
    .venv-zoo/bin/python scripts/export_families.py --only vit-b16,swin-t
"""
import argparse
import contextlib
import copy
import functools
import importlib
import json
import pathlib
import sys
import tempfile
import traceback
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from torchvision import models as tvm
from torchvision.models import efficientnet as tv_eff
from torchvision.ops.misc import Conv2dNormActivation

# torchvision.models re-exports functions under some modules' names.
tv_goog, tv_inc, tv_mnv3, tv_regnet, tv_convnext, tv_squeeze = (
    importlib.import_module(f"torchvision.models.{m}") for m in ("googlenet", "inception", "mobilenetv3", "regnet", "convnext", "squeezenet"))

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "families"
CLASSES = 10
INPUTS = 4
# The int8 check's inputs (the first INPUTS are the forward check's): with ten
# classes and random weights, a quarter or more have a top-2 margin too small to compare.
INT8_INPUTS = 16
GRAD_INPUTS = 2
CALIBRATION = 8
MEAN, STD = 0.5, 0.25
MASK = (1 << 64) - 1
# Input i's label for the gradient: fixed, unrelated to the model's prediction.
LABELS = [(7 * i + 3) % CLASSES for i in range(INPUTS)]
# onnxruntime's int8 top-1 is compared only where its top-2 margin (graph as
# written) is at least this share of the input's logit spread (max − min): a
# smaller margin is within what one rounding step of an activation moves.
MARGIN_SHARE = 0.05


def inputs(count, side, seed):
    """The shared generator; tests/it/families.rs `inputs` is its twin."""
    out = np.zeros((count, 3, side, side), np.float32)
    state = seed & MASK

    def step():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        return state >> 56

    for n in range(count):
        for c in range(3):
            grid = [step() for _ in range(64)]
            v = np.empty((side, side), np.int64)
            for y in range(side):
                for x in range(side):
                    v[y, x] = (grid[(y * 8 // side) * 8 + x * 8 // side] + (step() >> 2)) % 256
            out[n, c] = (v.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return out


# ---- the families ------------------------------------------------------------------------------------------------


def shrunk(cls, factor, least=4):
    """A torchvision BasicConv2d class whose output width is divided by
    `factor` (at least `least`: a channel or two after BN and ReLU leaves f32
    within 1e-4 of f64 no more). Its convolution infers its input width
    (LazyConv2d), since GoogLeNet's and Inception-v3's blocks pass the
    full-size widths they concatenate."""

    class Shrunk(cls):
        def __init__(self, in_channels, out_channels, **kw):
            out = max(least, out_channels // factor)
            super().__init__(in_channels, out, **kw)
            self.conv = nn.LazyConv2d(out, bias=False, **kw)

    return Shrunk


def materialised(m, side):
    """`m` after one pass, which gives its lazy layers their input widths."""
    with torch.no_grad():
        m.eval()(torch.zeros(1, 3, side, side))
    return m


def resnet(block, widths, **kw):
    m = tvm.resnet.ResNet(block, [1, 1, 1, 1], num_classes=CLASSES, **kw)
    # ResNet's widths (64…512) are fixed in its constructor: the stem and the
    # stages are rebuilt with its own _make_layer at smaller ones.
    m.inplanes, m.dilation = widths[0], 1
    m.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(widths[0])
    m.layer1 = m._make_layer(block, widths[0], 1)
    m.layer2 = m._make_layer(block, widths[1], 1, stride=2)
    m.layer3 = m._make_layer(block, widths[2], 1, stride=2)
    m.layer4 = m._make_layer(block, widths[3], 1, stride=2)
    m.fc = nn.Linear(widths[3] * block.expansion, CLASSES)
    return m


def mobilenet_v2():
    setting = [[1, 8, 1, 1], [6, 8, 2, 2], [6, 16, 1, 2], [6, 16, 2, 2], [6, 24, 1, 1]]
    m = tvm.MobileNetV2(num_classes=CLASSES, inverted_residual_setting=setting)
    # The 1280-wide last convolution is fixed in the constructor.
    m.features[-1] = Conv2dNormActivation(24, 32, kernel_size=1, activation_layer=nn.ReLU6)
    m.classifier[-1] = nn.Linear(32, CLASSES)
    return m


def mobilenet_v3():
    setting, last = tv_mnv3._mobilenet_v3_conf("mobilenet_v3_large", width_mult=0.25, reduced_tail=True)
    # Large's block kinds: ReLU without and with SE, h-swish without and with SE; the chain's widths still match.
    setting = setting[:4] + setting[6:7] + setting[10:11]
    setting[-1].out_channels = 16
    return tvm.MobileNetV3(setting, last_channel=32, num_classes=CLASSES)


def mnasnet():
    m = tvm.MNASNet(alpha=0.1, num_classes=CLASSES)
    # Its stacks repeat blocks 2–4 times (fixed in the constructor); the first
    # of each, which changes width and stride, is kept.
    for i, l in enumerate(m.layers):
        if isinstance(l, nn.Sequential) and len(l) > 1:
            m.layers[i] = l[:1]
    i = next(i for i, l in enumerate(m.layers) if isinstance(l, nn.Conv2d) and l.out_channels == 1280)
    m.layers[i] = nn.Conv2d(m.layers[i].in_channels, 64, 1, bias=False)
    m.layers[i + 1] = nn.BatchNorm2d(64)
    m.classifier[-1] = nn.Linear(64, CLASSES)
    return m


def efficientnet_b0():
    setting, last = tv_eff._efficientnet_conf("efficientnet_b0", width_mult=0.1, depth_mult=0.25)
    # Stages 1–6 hold every block kind B0 has (3×3 and 5×5, expansion 1 and 6, SE); the seventh is a wider repeat.
    return tvm.EfficientNet(setting[:6], dropout=0.2, num_classes=CLASSES, last_channel=64)


def efficientnet_v2_s():
    F, M = tv_eff.FusedMBConvConfig, tv_eff.MBConvConfig
    # V2-S's stage kinds in order (fused 1×, fused 4×, fused 4×, MBConv 4×, MBConv 6×) at a few channels each.
    setting = [F(1, 3, 1, 8, 8, 1), F(4, 3, 2, 8, 12, 1), F(4, 3, 2, 12, 16, 1), M(4, 3, 2, 16, 24, 1), M(6, 3, 1, 24, 24, 1)]
    return tvm.EfficientNet(setting, dropout=0.2, num_classes=CLASSES, last_channel=64,
                            norm_layer=functools.partial(nn.BatchNorm2d, eps=1e-03))


def efficientnet_lite0():
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_name("efficientnet-lite0", num_classes=CLASSES, width_coefficient=0.1, depth_coefficient=0.25,
                               image_size=64)
    # Lite0 fixes its 1280-wide head whatever the width coefficient.
    conv = type(m._conv_head)
    m._conv_head = conv(m._conv_head.in_channels, 64, kernel_size=1, bias=False, image_size=[2, 2])
    m._bn1 = nn.BatchNorm2d(64, momentum=m._bn1.momentum, eps=m._bn1.eps)
    m._fc = nn.Linear(64, CLASSES)
    m.set_swish(memory_efficient=False)
    return m


def squeezenet():
    m = tvm.SqueezeNet(version="1_1", num_classes=CLASSES)
    Fire = tv_squeeze.Fire
    # SqueezeNet 1.1's layout with every width divided by 8.
    m.features = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(8, 2, 8, 8), Fire(16, 2, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 4, 16, 16), Fire(32, 4, 16, 16), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(32, 6, 24, 24), Fire(48, 6, 24, 24), Fire(48, 8, 32, 32), Fire(64, 8, 32, 32))
    m.classifier[1] = nn.Conv2d(64, CLASSES, kernel_size=1)
    return m


def googlenet():
    conv = shrunk(tv_goog.BasicConv2d, 16)
    m = tvm.GoogLeNet(num_classes=CLASSES, aux_logits=False, transform_input=False, init_weights=False,
                      blocks=[conv, functools.partial(tv_goog.Inception, conv_block=conv), tv_goog.InceptionAux])
    # One inception block per stage: nine in a row of random weights take
    # torch's own f32 log-probabilities 1e-4 away from f64.
    for name in ("inception3b", "inception4b", "inception4c", "inception4d", "inception4e", "inception5b"):
        setattr(m, name, nn.Identity())
    m.fc = nn.LazyLinear(CLASSES)
    return materialised(m, 64)


def inception_v3():
    conv = shrunk(tv_inc.BasicConv2d, 32)
    blocks = [conv] + [functools.partial(b, conv_block=conv) for b in
                       (tv_inc.InceptionA, tv_inc.InceptionB, tv_inc.InceptionC, tv_inc.InceptionD, tv_inc.InceptionE)]
    m = tvm.Inception3(num_classes=CLASSES, aux_logits=False, transform_input=False, init_weights=False,
                       inception_blocks=blocks + [tv_inc.InceptionAux])
    # One block of each kind (A, B, C, D, E), as GoogLeNet above.
    for name in ("Mixed_5c", "Mixed_5d", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7c"):
        setattr(m, name, nn.Identity())
    m.fc = nn.LazyLinear(CLASSES)
    return materialised(m, 299)


def regnet():
    params = tv_regnet.BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return tvm.RegNet(params, num_classes=CLASSES, stem_width=8)


def convnext():
    C = tv_convnext.CNBlockConfig
    return tvm.ConvNeXt([C(8, 16, 1), C(16, 16, 1), C(16, 24, 2), C(24, None, 1)], num_classes=CLASSES)


def vit():
    return tvm.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=CLASSES)


def swin():
    return tvm.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=[4, 4], mlp_ratio=2.0,
                               stochastic_depth_prob=0.0, num_classes=CLASSES)


def maxvit():
    return tvm.MaxVit(input_size=(64, 64), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
                      head_dim=8, stochastic_depth_prob=0.0, num_classes=CLASSES)


class Family:
    def __init__(self, name, build, side=64):
        self.name, self.build, self.side = name, build, side


FAMILIES = [
    Family("resnet", lambda: resnet(tvm.resnet.BasicBlock, [8, 16, 16, 24])),
    Family("resnext", lambda: resnet(tvm.resnet.Bottleneck, [4, 8, 8, 16], groups=4, width_per_group=32)),
    Family("wide-resnet", lambda: resnet(tvm.resnet.Bottleneck, [4, 4, 8, 8], width_per_group=128)),
    Family("mobilenet-v2", mobilenet_v2),
    Family("mobilenet-v3", mobilenet_v3),
    Family("mnasnet", mnasnet),
    Family("efficientnet-b0", efficientnet_b0),
    Family("efficientnet-v2-s", efficientnet_v2_s),
    Family("efficientnet-lite0", efficientnet_lite0),
    Family("shufflenet-v2", lambda: tvm.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 64], num_classes=CLASSES)),
    Family("squeezenet", squeezenet),
    Family("densenet", lambda: tvm.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                                            num_classes=CLASSES)),
    Family("googlenet", googlenet),
    Family("inception-v3", inception_v3, side=299),
    Family("regnet", regnet),
    Family("convnext", convnext),
    Family("vit-b16", vit),
    Family("swin-t", swin),
    Family("maxvit-t", maxvit),
]

# (tag, exporter, opset): every family at opset 17 by TorchScript; opset 13
# by TorchScript and the dynamo exporter at 18 where torch produces them.
EXPORTS = [("ts17", "torchscript", 17), ("ts13", "torchscript", 13), ("dynamo18", "dynamo", 18)]


def seeded(family, seed):
    """The family's model with every weight redrawn from `seed`, BN statistics
    measured, logits scaled to a standard deviation of 2; eval mode."""
    torch.manual_seed(seed)
    m = family.build().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
            elif name.endswith("weight") or name.endswith("scale") or "layer_scale" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # a cumulative average over the calibration passes
            b.train()
        x = torch.from_numpy(inputs(8, family.side, seed ^ 0xB17))
        for _ in range(2):
            m(x)
        m.eval()
        last = [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))][-1]
        s = float(m(x).std())
        last.weight.mul_(2.0 / s)
        if last.bias is not None:
            last.bias.mul_(2.0 / s)
    return m


def sidecar(family, name):
    return {"name": name, "pipeline": {"resize_shorter": family.side, "crop": family.side, "interpolation": "bicubic",
                                       "mean": [MEAN] * 3, "std": [STD] * 3}, "num_classes": CLASSES}


def export(model, family, exporter, opset, path):
    x = torch.from_numpy(inputs(2, family.side, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        else:
            prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
                                     dynamic_shapes=({0: torch.export.Dim("N", min=1, max=1024)},), external_data=False)
            prog.save(str(path), external_data=False)
            # The dynamo exporter annotates every node with its FX source
            # (three quarters of a small file); the graph is left as exported.
            m = onnx.load(str(path))
            for n in m.graph.node:
                del n.metadata_props[:]
            onnx.save(m, str(path))
    shorten_tensor_names(path)
    onnx.checker.check_model(onnx.load(str(path)))


def shorten_tensor_names(path):
    """Renames the file's intermediate tensors and weights t0, t1, … in
    order of appearance: the TorchScript exporter's scoped names are up to
    three quarters of a small model's bytes (Swin's shape arithmetic). Node
    names, ops, attributes and weights stay as exported; the graph's input
    and output keep their names."""
    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names = {}

    def short(n):
        if not n or n in keep:
            return n
        return names.setdefault(n, f"t{len(names)}")

    for n in g.node:
        assert not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute), n.op_type
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
    for t in g.initializer:
        t.name = short(t.name)
    kept = [v for v in g.value_info if v.name in names]
    for v in kept:
        v.name = names[v.name]
    del g.value_info[:]
    g.value_info.extend(kept)
    onnx.save(m, str(path))


class Reader:
    def __init__(self, name, x):
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def quantise(src, dst, family, tmp):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = pathlib.Path(tmp) / (dst.name + ".pre.onnx")
    note = None
    try:
        quant_pre_process(str(src), str(pre))
    except Exception as e:
        # onnxruntime's symbolic shape inference gives up on some graphs with
        # a symbolic batch (ViT's Reshape); its ONNX shape inference and
        # optimisation still run. Recorded in the manifest.
        note = f"quant_pre_process without symbolic shape inference ({err(e) or type(e).__name__})"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    x = inputs(CALIBRATION, family.side, 0xCA11B)
    quantize_static(str(pre), str(dst), Reader("input", x), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return note


def run_ort(path, x, optimise):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def top2(logits):
    order = np.argsort(-logits, axis=1, kind="stable")
    rows = np.arange(len(logits))
    margin = logits[rows, order[:, 0]] - logits[rows, order[:, 1]]
    spread = logits.max(1) - logits.min(1)
    return order[:, 0], margin, spread


def err(e):
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:400]


def build_family(family, seed, out):
    entry = {"family": family.name, "side": family.side, "classes": CLASSES, "seed": seed}
    model = seeded(family, seed)
    entry["parameters"] = int(sum(p.numel() for p in model.parameters()))
    x = inputs(INPUTS, family.side, seed)
    # References: the torch module itself in float64.
    m64 = copy.deepcopy(model).double()
    xt = torch.from_numpy(x).double().requires_grad_(True)
    logits = m64(xt)
    logp = torch.log_softmax(logits, 1)
    top = logp.detach().topk(5, dim=1)
    entry["torch_top5"] = [{"index": i.tolist(), "logp": v.tolist()} for v, i in zip(top.values, top.indices)]
    k = GRAD_INPUTS if family.side <= 64 else 1  # one 299-px gradient is 0.5 MB in f16
    labels = torch.tensor(LABELS[:k])
    loss = torch.nn.functional.cross_entropy(logits[:k], labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xt)
    grad = grad[:k].numpy()
    grad = grad / np.abs(grad).reshape(k, -1).max(1)[:, None, None, None]
    entry["labels"] = LABELS[:k]
    entry["gradient"] = f"{family.name}.grad.f16"
    grad_bytes = grad.astype(np.float16).tobytes()
    (out / entry["gradient"]).write_bytes(grad_bytes)
    with torch.no_grad():
        torch32 = torch.log_softmax(model(torch.from_numpy(x)), 1).numpy()
    entry["models"], entry["export_failures"] = [], []
    for tag, exporter, opset in EXPORTS:
        path = out / f"{family.name}.{tag}.onnx"
        try:
            export(model, family, exporter, opset, path)
        except Exception as e:  # recorded, not hidden: the docs table lists them
            path.unlink(missing_ok=True)
            entry["export_failures"].append({"exporter": exporter, "opset": opset, "error": err(e)})
            print(f"{family.name} {tag}: export failed: {err(e)}", file=sys.stderr)
            continue
        (out / f"{family.name}.{tag}.json").write_text(json.dumps(sidecar(family, f"{family.name}.{tag}"), indent=2) + "\n")
        # onnxruntime on the fp32 file: a cross-check of the exporter, for the docs.
        ort_logp = torch.log_softmax(torch.from_numpy(run_ort(path, x, True)).double(), 1).numpy()
        entry["models"].append({"file": path.name, "exporter": exporter, "opset": opset, "bytes": path.stat().st_size,
                                "onnxruntime_max_dlogp": float(np.abs(ort_logp - logp.detach().numpy()).max())})
    entry["torch_float32_max_dlogp"] = float(np.abs(torch32 - logp.detach().numpy()).max())
    src = out / f"{family.name}.ts17.onnx"
    dst = out / f"{family.name}.ts17.int8.onnx"
    try:
        # quant_pre_process leaves scratch files in the working directory when
        # its symbolic shape inference fails; keep them out of the checkout.
        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
            note = quantise(src, dst, family, tmp)
        xq = inputs(INT8_INPUTS, family.side, seed)
        plain, margin, spread = top2(run_ort(dst, xq, False))
        fused, _, _ = top2(run_ort(dst, xq, True))
        (out / f"{dst.stem}.json").write_text(json.dumps(sidecar(family, dst.stem), indent=2) + "\n")
        entry["int8"] = {"file": dst.name, "source": src.name, "bytes": dst.stat().st_size,
                         "onnxruntime_top1": plain.tolist(), "onnxruntime_margin": margin.tolist(),
                         "onnxruntime_spread": spread.tolist(), "onnxruntime_fused_top1": fused.tolist(),
                         "checked": [bool(m >= MARGIN_SHARE * s) for m, s in zip(margin, spread)]}
        if note:
            entry["int8"]["note"] = note
    except Exception as e:
        dst.unlink(missing_ok=True)
        entry["int8_failure"] = err(e)
        print(f"{family.name}: int8 failed: {err(e)}", file=sys.stderr)
    return entry, grad_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="recompute in a scratch folder and compare with the committed manifest")
    ap.add_argument("--only", help="comma-separated families (default: all); the manifest keeps the others' entries")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    manifest_path = OUT / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"families": []}
    old_by = {f["family"]: f for f in old["families"]}
    out = pathlib.Path(tempfile.mkdtemp(prefix="families")) if a.check else OUT
    out.mkdir(parents=True, exist_ok=True)
    entries, problems = [], []
    for i, family in enumerate(FAMILIES):
        if only and family.name not in only:
            if family.name in old_by:
                entries.append(old_by[family.name])
            continue
        try:
            entry, grad_bytes = build_family(family, 1000 + i, out)
        except Exception as e:
            traceback.print_exc()
            entry, grad_bytes = {"family": family.name, "side": family.side, "build_failure": err(e)}, None
        entries.append(entry)
        print(json.dumps({k: entry.get(k) for k in ("family", "parameters", "export_failures", "int8_failure")}), flush=True)
        if a.check:
            problems += compare(old_by.get(family.name), entry, grad_bytes)
    manifest = {"generated_by": "scripts/export_families.py", "torch": torch.__version__, "torchvision": torchvision.__version__,
                "onnx": onnx.__version__, "onnxruntime": ort.__version__, "classes": CLASSES, "inputs": INPUTS,
                "mean": MEAN, "std": STD, "margin_share": MARGIN_SHARE, "families": entries}
    if a.check:
        if problems:
            sys.exit("tests/data/families is not current:\n  " + "\n  ".join(problems))
        print("tests/data/families is current")
        return
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT.relative_to(ROOT)}: {total / 1e6:.2f} MB")


def compare(old, new, grad_bytes):
    """The numbers a rerun must reproduce: torch's top-5 (to 1e-9), its
    gradient (cosine ≥ 1 − 1e-6 after f16 rounding), onnxruntime's int8
    top-1 where checked, and the same exporter failures."""
    name = new["family"]
    if old is None:
        return [f"{name}: not in the committed manifest"]
    out = []
    for o, n in zip(old.get("torch_top5", []), new.get("torch_top5", [])):
        if o["index"] != n["index"] or max(abs(a - b) for a, b in zip(o["logp"], n["logp"])) > 1e-9:
            out.append(f"{name}: torch top-5 differs")
    committed = OUT / old.get("gradient", "-")
    if grad_bytes is not None and committed.exists():
        a = np.frombuffer(committed.read_bytes(), np.float16).astype(np.float64)
        b = np.frombuffer(grad_bytes, np.float16).astype(np.float64)
        if len(a) != len(b) or a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) < 1 - 1e-6:
            out.append(f"{name}: torch gradient differs")
    if [f["exporter"] + str(f["opset"]) for f in old.get("export_failures", [])] != \
            [f["exporter"] + str(f["opset"]) for f in new.get("export_failures", [])]:
        out.append(f"{name}: exporter failures differ")
    oi, ni = old.get("int8"), new.get("int8")
    if (oi is None) != (ni is None):
        out.append(f"{name}: int8 quantisation {'now fails' if ni is None else 'now succeeds'}")
    elif oi and [t for t, c in zip(oi["onnxruntime_top1"], oi["checked"]) if c] != \
            [t for t, c in zip(ni["onnxruntime_top1"], oi["checked"]) if c]:
        out.append(f"{name}: onnxruntime int8 top-1 differs")
    return out


if __name__ == "__main__":
    main()
