#!/usr/bin/env python3
"""Reference outputs for quba's integer int8 path (src/int8, docs/int8.md).

Writes tests/data/int8/, read by tests/it/int8_parity.rs:

- chain{7,8}.{qdq,qop}.onnx: one small network of quantised convolutions
  covering every case the kernels distinguish (a padded stride-2 stem,
  depthwise 3x3 and 5x5 at strides 1 and 2, dilation, pointwise, a grouped
  convolution, an odd channel count), in QDQ form and as QLinearConv nodes
  with the same weights; chain7's weights stay within ±63, chain8's span ±127;
- reference.json:
  - "chain": the chain's output computed here in numpy, integer arithmetic as
    ONNX QLinearConv defines it (int64 accumulation, the f32 multiplier
    x_scale * w_scale / y_scale, round half to even, saturation), and
    onnxruntime's outputs for both files;
  - "zoo": onnxruntime's logits for every int8 model in models/zoo on the
    same generated images, as onnxruntime runs it by default (QDQ fused into
    its integer kernels) and with graph optimisations off (the graph as
    written: DequantizeLinear, f32 Conv, QuantizeLinear).

The images come from a generator simple enough to write identically in Rust
(tests/it/int8_parity.rs: `images`): a 64-bit LCG fills an 8x8 grid of bytes per
channel, upsampled by nearest neighbour with a diagonal ramp, normalised in
f32 with mean 0.5 and std 0.25 (the zoo's pipeline). Every operation is exact
in f32, so both sides feed bit-identical tensors.

  python scripts/int8_parity.py            # rewrite the fixtures
  python scripts/int8_parity.py --check    # fail if they are not current
"""
import argparse
import hashlib
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "int8"
ZOO = ROOT / "models" / "zoo"
IMAGES = 32
MASK = (1 << 64) - 1


def images(count, side):
    """The shared generator; tests/it/int8_parity.rs `images` is its twin."""
    out = np.zeros((count, 3, side, side), np.float32)
    state = 0x9E3779B97F4A7C15
    for n in range(count):
        for c in range(3):
            grid = []
            for _ in range(64):
                state = (state * 6364136223846793005 + 1442695040888963407) & MASK
                grid.append(state >> 56)
            for y in range(side):
                for x in range(side):
                    v = (grid[(y * 8 // side) * 8 + x * 8 // side] + x + y) % 256
                    out[n, c, y, x] = (np.float32(v) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.25)
    return out


# ---- the chain: (name, cin, cout, kernel, stride, pads [t, l, b, r], group, dilation)
LAYERS = [
    ("stem", 3, 16, 3, 2, [0, 0, 1, 1], 1, 1),
    ("dw3", 16, 16, 3, 1, [1, 1, 1, 1], 16, 1),
    ("pw", 16, 24, 1, 1, [0, 0, 0, 0], 1, 1),
    ("dw5s2", 24, 24, 5, 2, [2, 2, 2, 2], 24, 1),
    ("dil", 24, 24, 3, 1, [2, 2, 2, 2], 24, 2),
    ("grouped", 24, 12, 3, 1, [1, 1, 1, 1], 4, 1),
    ("odd", 12, 7, 1, 1, [0, 0, 0, 0], 1, 1),
]
SIDE = 32
# Power-of-two input scale: inputs scale*(k - zp) quantise exactly in any
# runtime, however it computes x / scale.
IN_SCALE, IN_ZP = np.float32(1 / 32), np.uint8(128)


def chain_params(weight_max):
    rng = np.random.default_rng(7)
    params = []
    x_scale = IN_SCALE
    for name, cin, cout, k, s, pads, group, dil in LAYERS:
        w = rng.integers(-weight_max, weight_max + 1, size=(cout, cin // group, k, k)).astype(np.int8)
        w_scale = (rng.uniform(0.5, 2.0, size=cout) / 127 / np.sqrt(cin // group * k * k)).astype(np.float32)
        b_scale = (x_scale * w_scale).astype(np.float32)
        b = rng.integers(-2000, 2000, size=cout).astype(np.int32)
        y_scale = np.float32(rng.uniform(0.02, 0.05))
        y_zp = np.uint8(rng.integers(100, 156))
        params.append(dict(name=name, w=w, w_scale=w_scale, b=b, b_scale=b_scale, x_scale=x_scale, y_scale=y_scale, y_zp=y_zp,
                           k=k, s=s, pads=pads, group=group, dil=dil, cout=cout))
        x_scale = y_scale
    return params


def conv_attrs(p):
    return dict(kernel_shape=[p["k"], p["k"]], strides=[p["s"], p["s"]], pads=p["pads"], group=p["group"], dilations=[p["dil"]] * 2)


def chain_model(params, qop):
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    const("in_scale", IN_SCALE)
    const("in_zp", IN_ZP)
    nodes.append(helper.make_node("QuantizeLinear", ["input", "in_scale", "in_zp"], ["x0"]))
    x, xs, xz = "x0", "in_scale", "in_zp"
    for i, p in enumerate(params):
        n = p["name"]
        w = const(f"{n}.w", p["w"])
        ws = const(f"{n}.w_scale", p["w_scale"])
        wz = const(f"{n}.w_zp", np.zeros(p["cout"], np.int8))
        b = const(f"{n}.b", p["b"])
        ys = const(f"{n}.y_scale", p["y_scale"])
        yz = const(f"{n}.y_zp", p["y_zp"])
        y = f"x{i + 1}"
        if qop:
            nodes.append(helper.make_node("QLinearConv", [x, xs, xz, w, ws, wz, ys, yz, b], [y], name=n, **conv_attrs(p)))
        else:
            bs = const(f"{n}.b_scale", p["b_scale"])
            bz = const(f"{n}.b_zp", np.zeros(p["cout"], np.int32))
            nodes.append(helper.make_node("DequantizeLinear", [x, xs, xz], [f"{n}.xf"]))
            nodes.append(helper.make_node("DequantizeLinear", [w, ws, wz], [f"{n}.wf"], axis=0))
            nodes.append(helper.make_node("DequantizeLinear", [b, bs, bz], [f"{n}.bf"], axis=0))
            nodes.append(helper.make_node("Conv", [f"{n}.xf", f"{n}.wf", f"{n}.bf"], [f"{n}.yf"], name=n, **conv_attrs(p)))
            nodes.append(helper.make_node("QuantizeLinear", [f"{n}.yf", ys, yz], [y]))
        x, xs, xz = y, ys, yz
    nodes.append(helper.make_node("DequantizeLinear", [x, xs, xz], ["yf"]))
    nodes.append(helper.make_node("Flatten", ["yf"], ["output"], axis=1))
    graph = helper.make_graph(nodes, "int8-chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="scripts/int8_parity.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def qlinearconv_reference(xq, x_zp, p):
    """ONNX QLinearConv in integer numpy: the definition, nothing clever."""
    n, cin, h, w = xq.shape
    k, s, (pt, pl, pb, pr), g, d = p["k"], p["s"], p["pads"], p["group"], p["dil"]
    cout = p["cout"]
    x = np.pad(xq.astype(np.int64) - int(x_zp), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - d * (k - 1) - 1) // s + 1
    wo = (w + pl + pr - d * (k - 1) - 1) // s + 1
    acc = np.zeros((n, cout, ho, wo), np.int64)
    cin_g, cout_g = cin // g, cout // g
    wt = p["w"].astype(np.int64)
    for co in range(cout):
        grp = co // cout_g
        for ci in range(cin_g):
            for i in range(k):
                for j in range(k):
                    patch = x[:, grp * cin_g + ci, i * d: i * d + s * (ho - 1) + 1: s, j * d: j * d + s * (wo - 1) + 1: s]
                    acc[:, co] += wt[co, ci, i, j] * patch
    acc += p["b"].astype(np.int64)[None, :, None, None]
    mult = (p["x_scale"] * p["w_scale"] / p["y_scale"]).astype(np.float32)
    v = np.rint(acc.astype(np.int32).astype(np.float32) * mult[None, :, None, None])
    return np.clip(v.astype(np.int64) + int(p["y_zp"]), 0, 255).astype(np.uint8)


def run_ort(path_or_bytes, x, fuse=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not fuse:
        # The graph as written: DequantizeLinear, f32 Conv, QuantizeLinear.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def floats(a):
    return [float(v) for v in np.asarray(a, np.float32).ravel()]


def build():
    files = {}
    x = images(4, SIDE)
    chains = {}
    # Weights within ±63 ("7-bit", onnxruntime's reduce_range) and over the
    # full ±127. onnxruntime's x86 kernel without VNNI multiplies u8 by i8
    # with vpmaddubsw, whose i16 pair sums saturate: with full-range weights
    # it departs from the definition (docs/int8.md), with 7-bit ones it cannot.
    for tag, weight_max in (("chain7", 63), ("chain8", 127)):
        params = chain_params(weight_max)
        files[f"{tag}.qdq.onnx"] = chain_model(params, False).SerializeToString()
        files[f"{tag}.qop.onnx"] = chain_model(params, True).SerializeToString()
        # Quantise the input as QuantizeLinear defines it; then the reference chain.
        q = np.clip(np.rint(x / IN_SCALE) + int(IN_ZP), 0, 255).astype(np.uint8)
        x_zp = IN_ZP
        for p in params:
            q = qlinearconv_reference(q, x_zp, p)
            x_zp = p["y_zp"]
        last = params[-1]
        want = ((q.astype(np.float32) - np.float32(last["y_zp"])) * last["y_scale"]).reshape(len(x), -1)
        ort_qdq = run_ort(files[f"{tag}.qdq.onnx"], x)
        ort_qop = run_ort(files[f"{tag}.qop.onnx"], x)
        chains[tag] = {
            "weight_max": weight_max,
            "numpy_integer": floats(want),
            "onnxruntime_qdq": floats(ort_qdq),
            "onnxruntime_qop": floats(ort_qop),
            "onnxruntime_qdq_outputs_differing": int(np.sum(ort_qdq != want)),
            "onnxruntime_qop_outputs_differing": int(np.sum(ort_qop != want)),
        }
    chain = {"images": len(x), "side": SIDE, "outputs": int(want.size), **chains}
    zoo = {}
    for path in sorted(ZOO.glob("*.int8.onnx")):
        side = json.loads(path.with_suffix(".json").read_text())["pipeline"]["crop"]
        x = images(IMAGES, side)
        logits = run_ort(str(path), x)
        unfused = run_ort(str(path), x, fuse=False)
        zoo[path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "side": side,
                          "classes": int(logits.shape[1]), "logits": floats(logits), "logits_unfused": floats(unfused)}
    reference = {
        "generated_by": "scripts/int8_parity.py",
        "onnxruntime": ort.__version__,
        "images": IMAGES,
        "chain": chain,
        "zoo": zoo,
    }
    files["reference.json"] = (json.dumps(reference, indent=1) + "\n").encode()
    return files, chain


def lite0(folder, out):
    x = images(IMAGES, 224)
    # The reference for both files is onnxruntime running the QDQ file as
    # written (f32 convolutions between the quantisers). A QOperator file has
    # no float form in onnxruntime: its QLinearConv is the saturating kernel
    # itself, so its twin's float graph stands in (same calibration, so the
    # same codes; only the classifier, f32 in the QOperator file, differs).
    qdq = folder / "efficientnet-lite0.int8.onnx"
    reference = run_ort(str(qdq), x, fuse=False)
    models = {}
    for name in ("efficientnet-lite0.int8.onnx", "efficientnet-lite0.int8-qop.onnx"):
        path = folder / name
        logits = run_ort(str(path), x)
        models[name] = {"path": str(path), "side": 224, "classes": int(logits.shape[1]),
                        "logits": floats(logits), "logits_unfused": floats(reference)}
        print(f"{name}: onnxruntime's default run agrees with the QDQ graph as written on "
              f"{np.mean(logits.argmax(1) == reference.argmax(1)):.3f} of top-1 decisions")
    out.write_text(json.dumps({"images": IMAGES, "onnxruntime": ort.__version__, "zoo": models}))
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed fixtures instead of writing them")
    ap.add_argument("--lite0", metavar="DIR", help="instead: onnxruntime's logits for the EfficientNet-Lite0 int8 files in DIR "
                    "(scripts/make_efficientnet_lite0.py), written to --lite0-out for tests/it/int8_parity.rs's ignored test")
    ap.add_argument("--lite0-out", default="/tmp/lite0-int8-reference.json")
    a = ap.parse_args()
    if a.lite0:
        lite0(pathlib.Path(a.lite0), pathlib.Path(a.lite0_out))
        return
    files, chain = build()
    if a.check:
        # Byte for byte: the models, and every number computed here from its
        # definition. onnxruntime's own outputs may differ on another CPU
        # (see above), so they only have to be present.
        stale = [n for n, b in files.items() if n.endswith(".onnx") and (not (OUT / n).exists() or (OUT / n).read_bytes() != b)]
        old = json.loads((OUT / "reference.json").read_text())
        new = json.loads(files["reference.json"])
        for tag in ("chain7", "chain8"):
            if old["chain"][tag]["numpy_integer"] != new["chain"][tag]["numpy_integer"]:
                stale.append(f"reference.json chain.{tag}")
        if {k: v["sha256"] for k, v in old["zoo"].items()} != {k: v["sha256"] for k, v in new["zoo"].items()}:
            stale.append("reference.json zoo (the zoo's int8 models changed)")
        if stale:
            sys.exit(f"tests/data/int8 is not current ({', '.join(stale)}); run scripts/int8_parity.py and commit")
        print("tests/data/int8 is current")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (OUT / n).write_bytes(b)
    for tag in ("chain7", "chain8"):
        c = chain[tag]
        print(f"{tag} (weights within ±{c['weight_max']}): onnxruntime departs from the integer definition in "
              f"{c['onnxruntime_qdq_outputs_differing']} (QDQ) and {c['onnxruntime_qop_outputs_differing']} (QOperator) "
              f"of {chain['outputs']} outputs")
    print(f"wrote {', '.join(files)} to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
