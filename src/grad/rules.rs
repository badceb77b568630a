//! The backward rule of each supported ONNX op, written as ONNX nodes.
//!
//! Conventions follow torch autograd where a derivative is not defined, so
//! that gradients can be compared with it: ReLU'(0) = 0, ReLU6/Clip pass the
//! gradient strictly inside (min, max) (hardtanh), max-pool routes a window's
//! gradient to its first maximum (tract's Indices, as torch).
//!
//! Masks use `Sign` of an output that is ≥ 0 rather than comparison + Cast:
//! on tract that is 2–3× cheaper (docs/tract.md).

use anyhow::{bail, Context, Result};
use tract_onnx::pb::{tensor_proto::DataType, NodeProto};

use super::graph::{
    a_f32_tensor, a_float, a_int, a_ints, a_str, attr, attr_f, attr_i, attr_ints, explicit_pads, norm_axis, product,
    reduce_axes, show, Builder, Dim, Einsum, Facts, Shape,
};
use super::values::{pad_amounts, slice_axes};

/// Ops whose backward rule exists. Checked for every node on the path from
/// the input to the logits before anything is written.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Conv",
    "DequantizeLinear",
    "Div",
    "Einsum",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "QuantizeLinear",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// Which inputs of an op carry a gradient at all (the rest are weights, shapes,
/// axes, quantisation parameters).
pub fn data_inputs(op: &str, n_inputs: usize) -> Vec<usize> {
    match op {
        "Add" | "Sub" | "Mul" | "Div" | "MatMul" | "Concat" | "Einsum" | "Pow" => (0..n_inputs).collect(),
        "Where" => vec![1, 2],
        "Gemm" => (0..n_inputs.min(3)).collect(),
        "Conv" | "LayerNormalization" | "BatchNormalization" => (0..n_inputs).collect(),
        _ => vec![0],
    }
}

pub struct Ctx<'a> {
    pub b: Builder,
    pub facts: &'a Facts,
    pub requires: &'a std::collections::HashSet<String>,
}

impl Ctx<'_> {
    fn shape(&self, name: &str, node: &NodeProto) -> Result<Shape> {
        self.facts.shape(name, node).cloned()
    }

    fn needs(&self, node: &NodeProto, i: usize) -> bool {
        node.input.get(i).is_some_and(|n| self.requires.contains(n))
    }

    /// Sums `g` (shaped `from`, the broadcast result) down to `to`.
    fn unbroadcast(&mut self, g: &str, from: &[Dim], to: &[Dim]) -> String {
        let lead = from.len() - to.len();
        let mut g = g.to_string();
        if lead > 0 {
            let axes: Vec<i64> = (0..lead as i64).collect();
            g = self.b.reduce_sum(&g, &axes, false);
        }
        let axes: Vec<i64> =
            (0..to.len()).filter(|&i| to[i] == Dim::ONE && from[lead + i] != Dim::ONE).map(|i| i as i64).collect();
        if !axes.is_empty() {
            g = self.b.reduce_sum(&g, &axes, true);
        }
        g
    }
}

/// Writes the backward of `node` given the gradients of its outputs; returns
/// (input index, gradient tensor) for each input that needs one.
pub fn backward(cx: &mut Ctx, node: &NodeProto, dys: &[Option<String>]) -> Result<Vec<(usize, String)>> {
    // A Split output may go unused; its gradient is then absent.
    let dy = dys.iter().flatten().next().cloned().context("internal: backward called without an output gradient")?;
    let x = node.input[0].as_str();
    let y = node.output[0].as_str();
    let op = node.op_type.as_str();
    let one = |g: String| Ok(vec![(0, g)]);
    let b = &mut cx.b;
    match op {
        "Identity" | "DequantizeLinear" => one(dy),
        "QuantizeLinear" => one(quantize_ste(cx, node, &dy)?),
        "Relu" => {
            let m = b.op("Sign", &[y], vec![]);
            one(b.mul(&dy, &m))
        }
        "Clip" => {
            let (lo, hi) = clip_bounds(b, node);
            let mut g = dy;
            for (bound, lower) in [(lo, true), (hi, false)] {
                let Some(bound) = bound else { continue };
                let gap = if lower { b.op("Sub", &[y, &bound], vec![]) } else { b.op("Sub", &[&bound, y], vec![]) };
                let m = b.op("Sign", &[&gap], vec![]);
                g = b.mul(&g, &m);
            }
            one(g)
        }
        "Sigmoid" => {
            let one_c = b.scalar(1.0);
            let c = b.op("Sub", &[&one_c, y], vec![]);
            let d = b.mul(y, &c);
            one(b.mul(&dy, &d))
        }
        "Tanh" => {
            let one_c = b.scalar(1.0);
            let sq = b.mul(y, y);
            let d = b.op("Sub", &[&one_c, &sq], vec![]);
            one(b.mul(&dy, &d))
        }
        "HardSigmoid" => {
            let alpha = attr_f(node, "alpha", 0.2);
            let m = unit_interior(b, y);
            let g = b.mul(&dy, &m);
            one(b.scale(&g, alpha))
        }
        "HardSwish" => {
            // y = x·hs(x), hs = HardSigmoid(1/6, 1/2): y' = hs + x·hs'.
            let hs = b.op("HardSigmoid", &[x], vec![a_float("alpha", 1.0 / 6.0), a_float("beta", 0.5)]);
            let m = unit_interior(b, &hs);
            let xm = b.mul(x, &m);
            let xm = b.scale(&xm, 1.0 / 6.0);
            let d = b.op("Add", &[&hs, &xm], vec![]);
            one(b.mul(&dy, &d))
        }
        "Erf" => {
            let sq = b.mul(x, x);
            let neg = b.scale(&sq, -1.0);
            let e = b.op("Exp", &[&neg], vec![]);
            let d = b.scale(&e, 2.0 / std::f32::consts::PI.sqrt());
            one(b.mul(&dy, &d))
        }
        "Exp" => one(b.mul(&dy, y)),
        "Log" => one(b.op("Div", &[&dy, x], vec![])),
        "Neg" => one(b.scale(&dy, -1.0)),
        "Add" | "Sub" | "Mul" | "Div" => binary(cx, node, &dy),
        "Conv" => conv(cx, node, &dy),
        "MaxPool" => {
            let idx = node.output.get(1).context("internal: MaxPool without Indices")?;
            let flat = b.ints(&[-1]);
            let i = b.op("Reshape", &[idx, &flat], vec![]);
            let g = b.op("Reshape", &[&dy, &flat], vec![]);
            let size = b.op("Size", &[x], vec![]);
            let size = b.op("Reshape", &[&size, &flat], vec![]);
            let zeros = b.op("ConstantOfShape", &[&size], vec![a_f32_tensor("value", 0.0)]);
            let attrs = vec![a_int("axis", 0), a_str("reduction", "add")];
            let dx = b.op("ScatterElements", &[&zeros, &i, &g], attrs);
            one(b.reshape_like(&dx, x))
        }
        "AveragePool" => average_pool(cx, node, &dy),
        "GlobalAveragePool" => {
            let xs = cx.shape(x, node)?;
            let count = product(&xs[2..]).value().context("spatial size must be static")?;
            let shape = cx.b.op("Shape", &[x], vec![]);
            let e = cx.b.op("Expand", &[&dy, &shape], vec![]);
            one(cx.b.scale(&e, 1.0 / count as f32))
        }
        "ReduceMean" | "ReduceSum" => {
            let xs = cx.shape(x, node)?;
            let axes = reduce_axes(node, cx.facts, xs.len())?;
            let mut g = dy;
            if attr_i(node, "keepdims", 1) == 0 && !axes.is_empty() {
                g = cx.b.unsqueeze(&g, &axes.iter().map(|&a| a as i64).collect::<Vec<_>>());
            }
            let shape = cx.b.op("Shape", &[x], vec![]);
            g = cx.b.op("Expand", &[&g, &shape], vec![]);
            if op == "ReduceMean" {
                let dims: Vec<Dim> = axes.iter().map(|&a| xs[a]).collect();
                let count = product(&dims)
                    .value()
                    .with_context(|| format!("ReduceMean over a batch-sized axis of {} is not supported", show(&xs)))?;
                g = cx.b.scale(&g, 1.0 / count as f32);
            }
            one(g)
        }
        "Gemm" => gemm(cx, node, &dy),
        "MatMul" => matmul(cx, node, &dy),
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => one(b.reshape_like(&dy, x)),
        "Transpose" => {
            let rank = cx.shape(x, node)?.len();
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
            let mut inv = vec![0i64; rank];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            one(cx.b.op("Transpose", &[&dy], vec![a_ints("perm", &inv)]))
        }
        "Concat" => {
            let ys = cx.shape(y, node)?;
            let axis = norm_axis(attr_i(node, "axis", 0), ys.len())?;
            let mut start = 0i64;
            let mut out = vec![];
            for i in 0..node.input.len() {
                let len = cx.shape(&node.input[i], node)?[axis];
                let len = len.value().context("Concat along a batch-sized axis is not supported")?;
                if cx.needs(node, i) {
                    let (s, e, a) = (cx.b.ints(&[start]), cx.b.ints(&[start + len]), cx.b.ints(&[axis as i64]));
                    out.push((i, cx.b.op("Slice", &[&dy, &s, &e, &a], vec![])));
                }
                start += len;
            }
            Ok(out)
        }
        "Gather" => {
            let xs = cx.shape(x, node)?;
            let axis = norm_axis(attr_i(node, "axis", 0), xs.len())?;
            let idx = cx.facts.ints(&node.input[1], node)?;
            let dim = xs[axis].value().context("Gather along a batch-sized axis is not supported")?;
            let wrap = |i: i64| if i < 0 { i + dim } else { i };
            if idx.len() == 1 && cx.shape(&node.input[1], node)?.is_empty() {
                let i = wrap(idx[0]);
                let g = cx.b.unsqueeze(&dy, &[axis as i64]);
                let mut pads = vec![0i64; 2 * xs.len()];
                pads[axis] = i;
                pads[axis + xs.len()] = dim - 1 - i;
                let pads = cx.b.ints(&pads);
                return one(cx.b.op("Pad", &[&g, &pads], vec![]));
            }
            // Any index tensor (torch.export writes as_strided as one): dy is
            // folded to [before, indices, after] and scatter-added into zeros
            // folded the same way, so repeated indices accumulate.
            let idx: Vec<i64> = idx.iter().map(|&i| wrap(i)).collect();
            let fold = |mid: i64| -> Result<Vec<i64>> {
                let (pre, post) = (product(&xs[..axis]).value(), product(&xs[axis + 1..]).value());
                match (pre, post) {
                    (None, None) => bail!("a Gather between two batch-sized axes is not supported"),
                    (pre, post) => Ok(vec![pre.unwrap_or(-1), mid, post.unwrap_or(-1)]),
                }
            };
            let (t_dy, t_x) = (fold(idx.len() as i64)?, fold(dim)?);
            let (t_dy, t_x) = (cx.b.ints(&t_dy), cx.b.ints(&t_x));
            let g = cx.b.op("Reshape", &[&dy, &t_dy], vec![]);
            let name = cx.b.fresh("gather_indices");
            cx.b.inits.push(super::graph::i64_tensor(&name, &[1, idx.len() as i64, 1], &idx));
            let shape = cx.b.op("Shape", &[&g], vec![]);
            let i = cx.b.op("Expand", &[&name, &shape], vec![]);
            let zeros = zeros_like(&mut cx.b, x);
            let zeros = cx.b.op("Reshape", &[&zeros, &t_x], vec![]);
            let attrs = vec![a_int("axis", 1), a_str("reduction", "add")];
            let dx = cx.b.op("ScatterElements", &[&zeros, &i, &g], attrs);
            one(cx.b.reshape_like(&dx, x))
        }
        "Softmax" => {
            let rank = cx.facts.shape(x, node)?.len();
            let axis = norm_axis(attr_i(node, "axis", -1), rank)? as i64;
            let gy = b.mul(&dy, y);
            let s = b.reduce_sum(&gy, &[axis], true);
            let d = b.op("Sub", &[&dy, &s], vec![]);
            one(b.mul(y, &d))
        }
        "LogSoftmax" => {
            let rank = cx.facts.shape(x, node)?.len();
            let axis = norm_axis(attr_i(node, "axis", -1), rank)? as i64;
            let s = b.reduce_sum(&dy, &[axis], true);
            let p = b.op("Exp", &[y], vec![]);
            let ps = b.mul(&p, &s);
            one(b.op("Sub", &[&dy, &ps], vec![]))
        }
        "LayerNormalization" => layer_norm(cx, node, &dy),
        "Cast" => {
            let to = DataType::try_from(attr_i(node, "to", 0) as i32).ok();
            if !matches!(to, Some(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)) {
                let to = to.map_or("an unknown type", |t| t.as_str_name());
                bail!("{}: a Cast to {to} on the input path has no gradient", super::graph::node_label(node));
            }
            one(b.op("Cast", &[&dy], vec![a_int("to", DataType::Float as i64)]))
        }
        "Sqrt" => {
            let q = b.op("Div", &[&dy, y], vec![]);
            one(b.scale(&q, 0.5))
        }
        "Pow" => pow(cx, node, &dy),
        "Expand" => {
            let (xs, ys) = (cx.shape(x, node)?, cx.shape(y, node)?);
            one(cx.unbroadcast(&dy, &ys, &xs))
        }
        "Where" => {
            let ys = cx.shape(y, node)?;
            let zeros = zeros_like(&mut cx.b, y);
            let mut out = vec![];
            for i in [1, 2] {
                if cx.needs(node, i) {
                    let (t, f) = if i == 1 { (dy.as_str(), zeros.as_str()) } else { (zeros.as_str(), dy.as_str()) };
                    let g = cx.b.op("Where", &[x, t, f], vec![]);
                    let to = cx.shape(&node.input[i], node)?;
                    out.push((i, cx.unbroadcast(&g, &ys, &to)));
                }
            }
            Ok(out)
        }
        "Pad" => pad(cx, node, &dy),
        "Slice" => slice(cx, node, &dy),
        "Split" => {
            let rank = cx.shape(x, node)?.len();
            let axis = norm_axis(attr_i(node, "axis", 0), rank)? as i64;
            let parts: Vec<String> = node
                .output
                .iter()
                .zip(dys)
                .map(|(o, g)| g.clone().unwrap_or_else(|| zeros_like(&mut cx.b, o)))
                .collect();
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            one(cx.b.op("Concat", &refs, vec![a_int("axis", axis)]))
        }
        "Einsum" => einsum(cx, node, &dy),
        "BatchNormalization" => {
            if attr_i(node, "training_mode", 0) != 0 {
                bail!("{}: training-mode BatchNormalization is not supported", super::graph::node_label(node));
            }
            let rank = cx.facts.shape(x, node)?.len();
            let eps = attr_f(node, "epsilon", 1e-5);
            let eps = b.scalar(eps);
            let v = b.op("Add", &[&node.input[4], &eps], vec![]);
            let sd = b.op("Sqrt", &[&v], vec![]);
            let k = b.op("Div", &[&node.input[1], &sd], vec![]);
            let mut shape = vec![-1i64];
            shape.extend(std::iter::repeat_n(1, rank - 2));
            let shape = b.ints(&shape);
            let k = b.op("Reshape", &[&k, &shape], vec![]);
            one(b.mul(&dy, &k))
        }
        _ => bail!("internal: no backward rule for {op}"),
    }
}

/// Zeros shaped like `like`, whose shape may hold the symbolic batch.
fn zeros_like(b: &mut Builder, like: &str) -> String {
    let shape = b.op("Shape", &[like], vec![]);
    b.op("ConstantOfShape", &[&shape], vec![a_f32_tensor("value", 0.0)])
}

/// 1 strictly inside (0, 1), 0 at and beyond the ends, for `v` in [0, 1].
fn unit_interior(b: &mut Builder, v: &str) -> String {
    let one_c = b.scalar(1.0);
    let up = b.op("Sub", &[&one_c, v], vec![]);
    let s1 = b.op("Sign", &[v], vec![]);
    let s2 = b.op("Sign", &[&up], vec![]);
    b.mul(&s1, &s2)
}

/// Clip's bounds as tensor names: inputs from opset 11, attributes before.
fn clip_bounds(b: &mut Builder, node: &NodeProto) -> (Option<String>, Option<String>) {
    let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).cloned();
    if node.input.len() > 1 {
        return (input(1), input(2));
    }
    let lo = attr(node, "min").map(|a| b.scalar(a.f));
    let hi = attr(node, "max").map(|a| b.scalar(a.f));
    (lo, hi)
}

/// Straight-through estimator with saturation: the gradient passes where x is
/// inside the representable range [DQ(qmin), DQ(qmax)] and is zero where
/// QuantizeLinear saturates, as torch's fake-quant backward does. A pure
/// identity would ignore every ReLU6 that quantisation folded into Q's range.
fn quantize_ste(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<String> {
    let label = super::graph::node_label(node);
    let scale = node.input.get(1).context("QuantizeLinear without scale")?;
    let zp = node.input.get(2).filter(|n| !n.is_empty());
    if product(&cx.shape(scale, node)?) != Dim::ONE {
        bail!("{label}: per-channel quantisation of an activation is not supported");
    }
    let dt = match zp {
        Some(z) => cx
            .facts
            .consts
            .get(z)
            .map(|c| c.data_type)
            .with_context(|| format!("{label}: zero point must be a constant"))?,
        None => DataType::Uint8 as i32,
    };
    let (lo, hi, field): (i32, i32, DataType) = match DataType::try_from(dt) {
        Ok(DataType::Uint8) => (0, 255, DataType::Uint8),
        Ok(DataType::Int8) => (-128, 127, DataType::Int8),
        _ => bail!("{label}: only int8/uint8 quantisation is supported"),
    };
    let b = &mut cx.b;
    let mut bound = |v: i32| {
        let name = b.fresh("qbound");
        b.inits.push(tract_onnx::pb::TensorProto {
            name: name.clone(),
            data_type: field as i32,
            int32_data: vec![v],
            ..Default::default()
        });
        name
    };
    let (qlo, qhi) = (bound(lo), bound(hi));
    let mut dq = |q: &str| match zp {
        Some(z) => b.op("DequantizeLinear", &[q, scale, z], vec![]),
        None => b.op("DequantizeLinear", &[q, scale], vec![]),
    };
    let (flo, fhi) = (dq(&qlo), dq(&qhi));
    let x = node.input[0].as_str();
    let c = b.op("Clip", &[x, &flo, &fhi], vec![]);
    let eq = b.op("Equal", &[&c, x], vec![]);
    let m = b.op("Cast", &[&eq], vec![a_int("to", DataType::Float as i64)]);
    Ok(b.mul(dy, &m))
}

fn binary(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let (a, bb, y) = (node.input[0].as_str(), node.input[1].as_str(), node.output[0].as_str());
    let ys = cx.shape(y, node)?;
    let mut out = vec![];
    for i in 0..2 {
        if !cx.needs(node, i) {
            continue;
        }
        let b = &mut cx.b;
        let g = match (node.op_type.as_str(), i) {
            ("Add", _) | ("Sub", 0) => dy.to_string(),
            ("Sub", _) => b.scale(dy, -1.0),
            ("Mul", 0) => b.mul(dy, bb),
            ("Mul", _) => b.mul(dy, a),
            ("Div", 0) => b.op("Div", &[dy, bb], vec![]),
            // d(a/b)/db = −y/b.
            _ => {
                let q = b.op("Div", &[y, bb], vec![]);
                let g = b.mul(dy, &q);
                b.scale(&g, -1.0)
            }
        };
        let to = cx.shape(&node.input[i], node)?;
        out.push((i, cx.unbroadcast(&g, &ys, &to)));
    }
    Ok(out)
}

fn refuse_weight_grad(cx: &Ctx, node: &NodeProto, inputs: &[usize], what: &str) -> Result<()> {
    for &i in inputs {
        if cx.needs(node, i) {
            bail!(
                "{}: input '{}' ({what}) depends on the model input; only data-independent {what}s are supported",
                super::graph::node_label(node),
                node.input[i]
            );
        }
    }
    Ok(())
}

fn conv(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    refuse_weight_grad(cx, node, &[1, 2], "weight")?;
    let (x, w) = (node.input[0].as_str(), node.input[1].as_str());
    let xs = cx.shape(x, node)?;
    let ws = cx.shape(w, node)?;
    let n = xs.len() - 2;
    let kernel: Vec<i64> = match attr_ints(node, "kernel_shape") {
        Some(k) => k,
        None => ws[2..].iter().map(|d| d.value().context("kernel size must be static")).collect::<Result<_>>()?,
    };
    let spatial: Vec<i64> =
        xs[2..].iter().map(|d| d.value().context("spatial size must be static")).collect::<Result<_>>()?;
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; n]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; n]);
    let pads = explicit_pads(node, &spatial, &kernel, &strides, &dil)?;
    // ConvTranspose with `output_shape` is resolved differently by tract and
    // onnxruntime (docs/tract.md); explicit pads + output_padding agree.
    let out_pad: Vec<i64> =
        (0..n).map(|i| (spatial[i] + pads[i] + pads[i + n] - ((kernel[i] - 1) * dil[i] + 1)) % strides[i]).collect();
    let attrs = vec![
        a_ints("strides", &strides),
        a_ints("pads", &pads),
        a_ints("dilations", &dil),
        a_int("group", attr_i(node, "group", 1)),
        a_ints("kernel_shape", &kernel),
        a_ints("output_padding", &out_pad),
    ];
    Ok(vec![(0, cx.b.op("ConvTranspose", &[dy, w], attrs))])
}

fn average_pool(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let x = node.input[0].as_str();
    let xs = cx.shape(x, node)?;
    let ys = cx.shape(&node.output[0], node)?;
    let n = xs.len() - 2;
    let c = xs[1].value().context("channel count must be static")?;
    let kernel = attr_ints(node, "kernel_shape").context("kernel_shape missing")?;
    let spatial: Vec<i64> =
        xs[2..].iter().map(|d| d.value().context("spatial size must be static")).collect::<Result<_>>()?;
    let out: Vec<i64> = ys[2..].iter().map(|d| d.value().unwrap()).collect();
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; n]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; n]);
    let pads = explicit_pads(node, &spatial, &kernel, &strides, &dil)?;
    let mut out_pad = vec![];
    for i in 0..n {
        let covered = (out[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1;
        let p = spatial[i] + pads[i] + pads[i + n] - covered;
        if p < 0 {
            bail!("{}: ceil_mode windows that run past the padding are not supported", super::graph::node_label(node));
        }
        out_pad.push(p);
    }
    // Divisor per output position: the whole window, or only its in-image part.
    let include_pad = attr_i(node, "count_include_pad", 0) == 1;
    let positions: i64 = out.iter().product();
    let mut inv = Vec::with_capacity(positions as usize);
    for flat in 0..positions {
        let mut rem = flat;
        let mut count = 1i64;
        for i in (0..n).rev() {
            let o = rem % out[i];
            rem /= out[i];
            let start = o * strides[i] - pads[i];
            let inside = (0..kernel[i]).filter(|k| {
                let p = start + k * dil[i];
                include_pad || (0..spatial[i]).contains(&p)
            });
            count *= inside.count() as i64;
        }
        inv.push(1.0 / count as f32);
    }
    let out_dims: Vec<i64> = out.clone();
    let inv = cx.b.floats(&out_dims, &inv);
    let g = cx.b.mul(dy, &inv);
    let mut wdims = vec![c, 1];
    wdims.extend(&kernel);
    let ones = vec![1.0f32; (c * kernel.iter().product::<i64>()) as usize];
    let w = cx.b.floats(&wdims, &ones);
    let attrs = vec![
        a_ints("strides", &strides),
        a_ints("pads", &pads),
        a_ints("dilations", &dil),
        a_int("group", c),
        a_ints("kernel_shape", &kernel),
        a_ints("output_padding", &out_pad),
    ];
    Ok(vec![(0, cx.b.op("ConvTranspose", &[&g, &w], attrs))])
}

fn gemm(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let (a, bm) = (node.input[0].as_str(), node.input[1].as_str());
    let alpha = attr_f(node, "alpha", 1.0);
    let beta = attr_f(node, "beta", 1.0);
    let (ta, tb) = (attr_i(node, "transA", 0), attr_i(node, "transB", 0));
    let g = |ta: i64, tb: i64| vec![a_float("alpha", alpha), a_int("transA", ta), a_int("transB", tb)];
    let mut out = vec![];
    if cx.needs(node, 0) {
        // Y = α·A'·B' (+ βC): dA' = α·dY·B'ᵀ, transposed back when transA.
        let da = if ta == 0 { cx.b.op("Gemm", &[dy, bm], g(0, 1 - tb)) } else { cx.b.op("Gemm", &[bm, dy], g(tb, 1)) };
        out.push((0, da));
    }
    if cx.needs(node, 1) {
        let db = if tb == 0 { cx.b.op("Gemm", &[a, dy], g(1 - ta, 0)) } else { cx.b.op("Gemm", &[dy, a], g(1, ta)) };
        out.push((1, db));
    }
    if cx.needs(node, 2) {
        let ys = cx.shape(&node.output[0], node)?;
        let cs = cx.shape(&node.input[2], node)?;
        let gc = cx.b.scale(dy, beta);
        out.push((2, cx.unbroadcast(&gc, &ys, &cs)));
    }
    Ok(out)
}

fn matmul(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let (a, bm) = (node.input[0].as_str(), node.input[1].as_str());
    let (as_, bs) = (cx.shape(a, node)?, cx.shape(bm, node)?);
    let ys = cx.shape(&node.output[0], node)?;
    let swap = |r: usize| {
        let mut p: Vec<i64> = (0..r as i64).collect();
        p.swap(r - 1, r - 2);
        a_ints("perm", &p)
    };
    let mut out = vec![];
    if cx.needs(node, 0) {
        let bt = cx.b.op("Transpose", &[bm], vec![swap(bs.len())]);
        let g = cx.b.op("MatMul", &[dy, &bt], vec![]);
        let mut from = ys[..ys.len() - 2].to_vec();
        from.extend_from_slice(&as_[as_.len() - 2..]);
        out.push((0, cx.unbroadcast(&g, &from, &as_)));
    }
    if cx.needs(node, 1) {
        let at = cx.b.op("Transpose", &[a], vec![swap(as_.len())]);
        let g = cx.b.op("MatMul", &[&at, dy], vec![]);
        let mut from = ys[..ys.len() - 2].to_vec();
        from.extend_from_slice(&bs[bs.len() - 2..]);
        out.push((1, cx.unbroadcast(&g, &from, &bs)));
    }
    Ok(out)
}

fn layer_norm(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    refuse_weight_grad(cx, node, &[1, 2], "scale or bias")?;
    let x = node.input[0].as_str();
    let rank = cx.shape(x, node)?.len();
    let axis = norm_axis(attr_i(node, "axis", -1), rank)?;
    let axes: Vec<i64> = (axis as i64..rank as i64).collect();
    let eps = attr_f(node, "epsilon", 1e-5);
    let b = &mut cx.b;
    // Recomputed rather than taken from the optional Mean/InvStdDev outputs,
    // which runtimes do not all produce.
    let mu = b.reduce_mean(x, &axes, true);
    let xc = b.op("Sub", &[x, &mu], vec![]);
    let sq = b.mul(&xc, &xc);
    let var = b.reduce_mean(&sq, &axes, true);
    let eps = b.scalar(eps);
    let ve = b.op("Add", &[&var, &eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    let rstd = b.op("Reciprocal", &[&sd], vec![]);
    let xhat = b.mul(&xc, &rstd);
    let g = b.mul(dy, &node.input[1]);
    let mg = b.reduce_mean(&g, &axes, true);
    let gx = b.mul(&g, &xhat);
    let mgx = b.reduce_mean(&gx, &axes, true);
    let t = b.mul(&xhat, &mgx);
    let d = b.op("Sub", &[&g, &mg], vec![]);
    let d = b.op("Sub", &[&d, &t], vec![]);
    Ok(vec![(0, b.mul(&d, &rstd))])
}

/// d(x^p)/dx = p·x^(p−1); the exponent must not depend on the input.
fn pow(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    refuse_weight_grad(cx, node, &[1], "exponent")?;
    let (x, p) = (node.input[0].as_str(), node.input[1].as_str());
    let (xs, ys) = (cx.shape(x, node)?, cx.shape(&node.output[0], node)?);
    let b = &mut cx.b;
    let one_c = b.scalar(1.0);
    let pm1 = b.op("Sub", &[p, &one_c], vec![]);
    let xp = b.op("Pow", &[x, &pm1], vec![]);
    let d = b.mul(&xp, p);
    let g = b.mul(dy, &d);
    Ok(vec![(0, cx.unbroadcast(&g, &ys, &xs))])
}

/// Constant-mode Pad: the gradient is dy with the padding cut off again, and
/// zeros where a negative pad cropped the input. The crop is undone with a
/// positive Pad, not a Pad by negated amounts: tract rejects negative pads.
fn pad(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let label = super::graph::node_label(node);
    let mode = super::graph::attr_s(node, "mode").unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        bail!("{label}: Pad mode '{mode}' is not supported (only constant)");
    }
    let x = node.input[0].as_str();
    let xs = cx.shape(x, node)?;
    let pads = pad_amounts(node, cx.facts, xs.len())?;
    let mut g = dy.to_string();
    if pads.iter().any(|&(b, e)| b < 0 || e < 0) {
        let mut undo: Vec<i64> = pads.iter().map(|&(b, _)| (-b).max(0)).collect();
        undo.extend(pads.iter().map(|&(_, e)| (-e).max(0)));
        let undo = cx.b.ints(&undo);
        g = cx.b.op("Pad", &[&g, &undo], vec![]);
    }
    let axes: Vec<usize> = (0..xs.len()).filter(|&a| pads[a].0 > 0 || pads[a].1 > 0).collect();
    if axes.is_empty() {
        return Ok(vec![(0, g)]);
    }
    let mut starts = vec![];
    let mut ends = vec![];
    for &a in &axes {
        let d = xs[a].value().with_context(|| format!("{label}: Pad along the batch-sized axis is not supported"))?;
        starts.push(pads[a].0.max(0));
        ends.push(pads[a].0.max(0) + d);
    }
    let (s, e) = (cx.b.ints(&starts), cx.b.ints(&ends));
    let a = cx.b.ints(&axes.iter().map(|&a| a as i64).collect::<Vec<_>>());
    Ok(vec![(0, cx.b.op("Slice", &[&g, &s, &e, &a], vec![]))])
}

/// Slice: dy is put back where its elements came from. Per axis, a negative
/// step is undone by reversing dy, a step k > 1 by interleaving k − 1 zeros
/// after each element (Pad on a new axis, then Reshape); one Pad at the end
/// restores the elements the slice skipped at either end.
fn slice(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let x = node.input[0].as_str();
    let xs = cx.shape(x, node)?;
    let axes = slice_axes(node, cx.facts, &xs)?;
    let rank = xs.len();
    let mut pads = vec![0i64; 2 * rank];
    let mut g = dy.to_string();
    // dy's shape as the axes are spread back one by one.
    let mut cur = cx.shape(&node.output[0], node)?;
    for a in &axes {
        let d = xs[a.axis].value().expect("slice_axes only keeps static axes");
        if a.count == 0 {
            return Ok(vec![(0, zeros_like(&mut cx.b, x))]);
        }
        let k = a.step.abs();
        let lowest = if a.step > 0 { a.start } else { a.start + (a.count - 1) * a.step };
        let ax = a.axis as i64;
        if a.step < 0 {
            // A Gather, not a Slice with step −1: tract fails to optimise a
            // negative-stride Slice that follows a Reshape.
            let rev: Vec<i64> = (0..a.count).rev().collect();
            let rev = cx.b.ints(&rev);
            g = cx.b.op("Gather", &[&g, &rev], vec![a_int("axis", ax)]);
        }
        if k > 1 {
            let u = cx.b.unsqueeze(&g, &[ax + 1]);
            let mut p = vec![0i64; 2 * (rank + 1)];
            p[rank + 1 + a.axis + 1] = k - 1;
            let p = cx.b.ints(&p);
            let spread = cx.b.op("Pad", &[&u, &p], vec![]);
            // Merges the new axis back: 0 copies the leading dims (the batch
            // among them); after the axis at most one dim may be symbolic (-1).
            let shape: Vec<i64> = (0..rank)
                .map(|j| match j.cmp(&a.axis) {
                    std::cmp::Ordering::Less => 0,
                    std::cmp::Ordering::Equal => a.count * k,
                    std::cmp::Ordering::Greater => cur[j].value().unwrap_or(-1),
                })
                .collect();
            if shape.iter().filter(|&&v| v == -1).count() > 1 {
                let label = super::graph::node_label(node);
                bail!("{label}: a strided Slice before two batch-sized axes is not supported");
            }
            let target = cx.b.ints(&shape);
            g = cx.b.op("Reshape", &[&spread, &target], vec![]);
            let (s, e, axs) = (cx.b.ints(&[0]), cx.b.ints(&[(a.count - 1) * k + 1]), cx.b.ints(&[ax]));
            g = cx.b.op("Slice", &[&g, &s, &e, &axs], vec![]);
        }
        cur[a.axis] = Dim::fixed((a.count - 1) * k + 1);
        pads[a.axis] = lowest;
        pads[a.axis + rank] = d - lowest - ((a.count - 1) * k + 1);
    }
    if pads.iter().any(|&p| p != 0) {
        let p = cx.b.ints(&pads);
        g = cx.b.op("Pad", &[&g, &p], vec![]);
    }
    Ok(vec![(0, g)])
}

/// Each operand's gradient is the einsum of dy with the other operands into
/// that operand's subscripts; an index summed within one operand alone or
/// repeated (a diagonal) would need a broadcast this rule does not write.
fn einsum(cx: &mut Ctx, node: &NodeProto, dy: &str) -> Result<Vec<(usize, String)>> {
    let label = super::graph::node_label(node);
    let eq = Einsum::parse(node)?;
    let mut out = vec![];
    for i in 0..node.input.len() {
        if !cx.needs(node, i) {
            continue;
        }
        let spec = &eq.inputs[i];
        let others: Vec<&String> = eq.inputs.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, s)| s).collect();
        for c in spec.chars() {
            if spec.matches(c).count() > 1 || !(eq.output.contains(c) || others.iter().any(|o| o.contains(c))) {
                bail!("{label}: subscript '{c}' of operand {i} in {spec} is repeated or summed alone; not supported");
            }
        }
        let mut terms = vec![eq.output.clone()];
        terms.extend(others.iter().map(|s| s.to_string()));
        let equation = format!("{}->{spec}", terms.join(","));
        let mut inputs = vec![dy];
        inputs.extend((0..node.input.len()).filter(|&j| j != i).map(|j| node.input[j].as_str()));
        out.push((i, cx.b.op("Einsum", &inputs, vec![a_str("equation", &equation)])));
    }
    Ok(out)
}
