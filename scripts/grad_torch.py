"""An ONNX graph as a PyTorch module, for gradient and attack references.

Independent of the Rust gradient builder: every op's forward is written here
with torch functions and torch autograd differentiates it. Runs in float64 by
default (parity reference) or float32 (torchattacks runs).

Quantised (QDQ) models: activation QuantizeLinear is a fake-quant whose
backward is the saturating straight-through estimator — the gradient passes
where x lies in [DQ(qmin), DQ(qmax)] — which is the convention quba's
gradient graph implements (docs/gradients.md). Weight QDQ chains are folded to
their dequantised float values.
"""

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        q = torch.clamp(torch.round(x / scale) + zp, qmin, qmax)  # round half to even, as ONNX
        lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
        ctx.save_for_backward((x >= lo) & (x <= hi), scale)
        return q

    @staticmethod
    def backward(ctx, g):
        # dq/dx ≈ 1/scale inside the range; the DequantizeLinear that follows
        # multiplies by scale again, so Q→DQ passes the gradient unchanged.
        mask, scale = ctx.saved_tensors
        return g * mask / scale, None, None, None, None


def _attr(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(a, n):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", b""):
        raise NotImplementedError("auto_pad SAME_*")
    return list(a.get("pads", [0] * (2 * n)))


def _pad_input(x, pads, value):
    n = len(pads) // 2
    if not any(pads):
        return x
    torch_pads = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    return F.pad(x, torch_pads, value=value)


class OnnxModule(torch.nn.Module):
    def __init__(self, path, dtype=torch.float64):
        super().__init__()
        m = onnx.load(path)
        self.graph = m.graph
        self.dtype = dtype
        self.consts = {}
        for t in m.graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        for n in m.graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attr(n)["value"])
        inits = {t.name for t in m.graph.initializer}
        self.input_name = [i.name for i in m.graph.input if i.name not in inits][0]
        self.output_name = m.graph.output[0].name

    def _t(self, v):
        if isinstance(v, torch.Tensor):
            return v
        if v.dtype.kind == "f":
            return torch.tensor(v, dtype=self.dtype)
        return torch.tensor(v.astype(np.int64))

    def forward(self, x):
        env = {self.input_name: x.to(self.dtype)}
        get = lambda name: env[name] if name in env else self._t(self.consts[name])
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            ins = [get(i) if i else None for i in node.input]
            outs = self._op(node, ins)
            for name, v in zip(node.output, outs):
                env[name] = v
        return env[self.output_name]

    def _op(self, node, x):
        op, a = node.op_type, _attr(node)
        if op in ("Conv", "MaxPool", "AveragePool"):
            n = x[0].dim() - 2
            pads = _pads(a, n)
            strides = a.get("strides", [1] * n)
            dil = a.get("dilations", [1] * n)
        if op == "Conv":
            xp = _pad_input(x[0], pads, 0.0)
            return [F.conv2d(xp, x[1], x[2] if len(x) > 2 else None, strides, 0, dil, a.get("group", 1))]
        if op == "MaxPool":
            xp = _pad_input(x[0], pads, float("-inf"))
            return [F.max_pool2d(xp, a["kernel_shape"], strides, 0, dil, ceil_mode=bool(a.get("ceil_mode", 0)))]
        if op == "AveragePool":
            if a.get("count_include_pad", 0):
                xp = _pad_input(x[0], pads, 0.0)
                return [F.avg_pool2d(xp, a["kernel_shape"], strides)]
            ones = torch.ones_like(x[0])
            s = F.avg_pool2d(_pad_input(x[0], pads, 0.0), a["kernel_shape"], strides, divisor_override=1)
            c = F.avg_pool2d(_pad_input(ones, pads, 0.0), a["kernel_shape"], strides, divisor_override=1)
            return [s / c]
        if op == "GlobalAveragePool":
            return [x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)]
        if op in ("ReduceMean", "ReduceSum"):
            axes = a.get("axes") or (x[1].tolist() if len(x) > 1 and x[1] is not None else list(range(x[0].dim())))
            f = torch.mean if op == "ReduceMean" else torch.sum
            return [f(x[0], dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))]
        if op == "Relu":
            return [F.relu(x[0])]
        if op == "Clip":
            lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
            hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
            if lo is not None and hi is not None:
                return [F.hardtanh(x[0], float(lo), float(hi))]  # strict-interior gradient, as nn.ReLU6
            return [torch.clamp(x[0], min=None if lo is None else float(lo), max=None if hi is None else float(hi))]
        if op == "Sigmoid":
            return [torch.sigmoid(x[0])]
        if op == "HardSigmoid":
            return [torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1)]
        if op == "HardSwish":
            return [F.hardswish(x[0])]
        if op == "Tanh":
            return [torch.tanh(x[0])]
        if op == "Exp":
            return [torch.exp(x[0])]
        if op == "Neg":
            return [-x[0]]
        if op == "Erf":
            return [torch.erf(x[0])]
        if op in ("Identity", "Dropout"):
            return [x[0]]
        if op == "Add":
            return [x[0] + x[1]]
        if op == "Sub":
            return [x[0] - x[1]]
        if op == "Mul":
            return [x[0] * x[1]]
        if op == "Div":
            return [x[0] / x[1]]
        if op == "MatMul":
            return [torch.matmul(x[0], x[1])]
        if op == "Gemm":
            A = x[0].t() if a.get("transA", 0) else x[0]
            B = x[1].t() if a.get("transB", 0) else x[1]
            y = a.get("alpha", 1.0) * (A @ B)
            if len(x) > 2 and x[2] is not None:
                y = y + a.get("beta", 1.0) * x[2]
            return [y]
        if op == "Flatten":
            ax = a.get("axis", 1)
            return [x[0].reshape(int(np.prod(x[0].shape[:ax])), -1)]
        if op == "Reshape":
            shape = [int(v) for v in x[1].tolist()]
            shape = [x[0].shape[i] if v == 0 and not a.get("allowzero", 0) else v for i, v in enumerate(shape)]
            return [x[0].reshape(shape)]
        if op == "Transpose":
            return [x[0].permute(*a.get("perm", reversed(range(x[0].dim()))))]
        if op == "Squeeze":
            axes = x[1].tolist() if len(x) > 1 else a.get("axes")
            return [x[0].squeeze(tuple(axes))]
        if op == "Unsqueeze":
            axes = sorted(x[1].tolist() if len(x) > 1 else a["axes"])
            y = x[0]
            for ax in axes:
                y = y.unsqueeze(ax)
            return [y]
        if op == "Concat":
            return [torch.cat(x, dim=a["axis"])]
        if op == "Gather":
            return [torch.index_select(x[0], a.get("axis", 0), x[1].reshape(-1)).reshape(
                x[0].shape[: a.get("axis", 0)] + x[1].shape + x[0].shape[a.get("axis", 0) + 1:])]
        if op == "Softmax":
            return [torch.softmax(x[0], dim=a.get("axis", -1))]
        if op == "LogSoftmax":
            return [torch.log_softmax(x[0], dim=a.get("axis", -1))]
        if op == "LayerNormalization":
            ax = a.get("axis", -1) % x[0].dim()
            return [F.layer_norm(x[0], x[0].shape[ax:], x[1], x[2] if len(x) > 2 else None, a.get("epsilon", 1e-5))]
        if op == "BatchNormalization":
            return [F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5))]
        if op == "QuantizeLinear":
            zp = x[2] if len(x) > 2 else torch.tensor(0)
            zpn = self.consts[node.input[2]] if len(x) > 2 else np.uint8(0)
            info = np.iinfo(zpn.dtype)
            scale, zpf = x[1].to(self.dtype), zp.to(self.dtype)
            if x[1].dim() == 1 and x[1].numel() > 1:  # per-channel (weights only): constant, no gradient
                shape = [1] * x[0].dim()
                shape[a.get("axis", 1)] = -1
                scale, zpf = scale.reshape(shape), zpf.reshape(shape)
            return [_FakeQuant.apply(x[0], scale, zpf, float(info.min), float(info.max))]
        if op == "DequantizeLinear":
            q = x[0].to(self.dtype)
            scale = x[1].to(self.dtype)
            zp = x[2].to(self.dtype) if len(x) > 2 else torch.zeros((), dtype=self.dtype)
            if scale.dim() == 1 and scale.numel() > 1:
                shape = [1] * q.dim()
                shape[a.get("axis", 1)] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            return [(q - zp) * scale]
        raise NotImplementedError(f"{op} ({node.name})")


def input_grad(module, x, labels):
    """Logits and d(sum CE)/dx, in the module's dtype."""
    x = x.clone().to(module.dtype).requires_grad_(True)
    logits = module(x)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return logits.detach(), g.detach()
