//! What the gradient builder needs to know about the forward graph before it
//! writes a single backward node: constant values (shapes, axes, indices),
//! tensor shapes with a symbolic batch, and a way to add uniquely named nodes.
//!
//! Shapes are inferred here rather than by tract because the exported graph
//! must keep a symbolic batch (one file for every batch size) and because an
//! unsupported construct has to be reported with the ONNX node's own name.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto};

use super::values::{pad_amounts, slice_axes, split_sizes, Value};

/// A dimension `k · N^p`, N being the model's batch. Monomials are enough for
/// what classifiers do with the batch (keep it, fold it into a reshape, split
/// it back out) and let a `-1` in a Reshape be resolved exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim {
    pub k: i64,
    pub p: u32,
}

impl Dim {
    pub const ONE: Dim = Dim { k: 1, p: 0 };
    pub const BATCH: Dim = Dim { k: 1, p: 1 };

    pub fn fixed(k: i64) -> Dim {
        Dim { k, p: 0 }
    }

    pub fn value(self) -> Option<i64> {
        (self.p == 0).then_some(self.k)
    }

    pub fn mul(self, o: Dim) -> Dim {
        if self.k == 0 || o.k == 0 {
            return Dim::fixed(0);
        }
        Dim { k: self.k * o.k, p: self.p + o.p }
    }

    fn div(self, o: Dim) -> Option<Dim> {
        (o.k != 0 && self.k % o.k == 0 && self.p >= o.p).then(|| Dim { k: self.k / o.k, p: self.p - o.p })
    }

    /// `None` when the sum is not a monomial (e.g. N + 1).
    pub fn add(self, o: Dim) -> Option<Dim> {
        match (self.k, o.k) {
            (0, _) => Some(o),
            (_, 0) => Some(self),
            _ if self.p == o.p && self.k + o.k == 0 => Some(Dim::fixed(0)),
            _ => (self.p == o.p).then_some(Dim { k: self.k + o.k, p: self.p }),
        }
    }

    /// ONNX integer Div (truncating) on fixed values; exact division otherwise.
    pub fn div_trunc(self, o: Dim) -> Option<Dim> {
        match (self.value(), o.value()) {
            (Some(a), Some(b)) => a.checked_div(b).map(Dim::fixed),
            _ => self.div(o),
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.k, self.p) {
            (k, 0) => write!(f, "{k}"),
            (1, 1) => write!(f, "N"),
            (k, 1) => write!(f, "{k}N"),
            (k, p) => write!(f, "{k}N^{p}"),
        }
    }
}

pub type Shape = Vec<Dim>;

pub fn show(s: &[Dim]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

pub fn product(s: &[Dim]) -> Dim {
    s.iter().fold(Dim::ONE, |a, &d| a.mul(d))
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let r = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { Dim::ONE };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (Dim::ONE, y) => Some(y),
            (x, Dim::ONE) => Some(x),
            _ => None,
        })
        .collect()
}

/// A constant of the forward graph. Integer values are decoded because shapes,
/// axes and indices steer the backward pass; float constants only need dims.
#[derive(Clone, Debug)]
pub struct Const {
    pub dims: Vec<i64>,
    pub ints: Option<Vec<i64>>,
    pub data_type: i32,
}

pub fn decode_const(t: &pb::TensorProto) -> Const {
    let ints = match DataType::try_from(t.data_type) {
        Ok(DataType::Int64) if !t.raw_data.is_empty() => {
            Some(t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
        }
        Ok(DataType::Int64) => Some(t.int64_data.clone()),
        Ok(DataType::Int32) if !t.raw_data.is_empty() => {
            Some(t.raw_data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect())
        }
        Ok(DataType::Int32) => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
        _ => None,
    };
    Const { dims: t.dims.clone(), ints, data_type: t.data_type }
}

/// The constant produced by a `Constant` node, if it is one we can read.
pub fn constant_node_value(node: &NodeProto) -> Option<Const> {
    let a = node.attribute.first()?;
    match a.name.as_str() {
        "value" => a.t.as_ref().map(decode_const),
        "value_int" => Some(Const { dims: vec![], ints: Some(vec![a.i]), data_type: DataType::Int64 as i32 }),
        "value_ints" => Some(Const {
            dims: vec![a.ints.len() as i64],
            ints: Some(a.ints.clone()),
            data_type: DataType::Int64 as i32,
        }),
        "value_float" => Some(Const { dims: vec![], ints: None, data_type: DataType::Float as i32 }),
        "value_floats" => {
            Some(Const { dims: vec![a.floats.len() as i64], ints: None, data_type: DataType::Float as i32 })
        }
        _ => None,
    }
}

pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

pub fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

pub fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

pub fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A one-element float tensor attribute (ConstantOfShape's `value`: tract
/// does not apply the ONNX default of f32 zero).
pub fn a_f32_tensor(name: &str, v: f32) -> AttributeProto {
    let t =
        pb::TensorProto { dims: vec![1], data_type: DataType::Float as i32, float_data: vec![v], ..Default::default() };
    AttributeProto { name: name.into(), r#type: AttributeType::Tensor as i32, t: Some(t), ..Default::default() }
}

pub fn i64_tensor(name: &str, dims: &[i64], v: &[i64]) -> pb::TensorProto {
    let data_type = DataType::Int64 as i32;
    pb::TensorProto { name: name.into(), dims: dims.to_vec(), data_type, int64_data: v.to_vec(), ..Default::default() }
}

pub fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
    let data_type = DataType::Float as i32;
    pb::TensorProto { name: name.into(), dims: dims.to_vec(), data_type, float_data: v.to_vec(), ..Default::default() }
}

pub fn node_label(node: &NodeProto) -> String {
    let name = if node.name.is_empty() { node.output.first().map(String::as_str).unwrap_or("?") } else { &node.name };
    format!("node '{name}' ({})", node.op_type)
}

pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Adds nodes and constants under names that cannot collide with the forward
/// graph's (onnxruntime rejects duplicates; tract would silently accept them).
pub struct Builder {
    taken: HashSet<String>,
    counter: usize,
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<pb::TensorProto>,
    pub opset: i64,
    /// The forward node whose backward is being written, for node names.
    pub scope: String,
}

impl Builder {
    pub fn new(graph: &pb::GraphProto, opset: i64) -> Builder {
        let mut taken = HashSet::new();
        for n in &graph.node {
            taken.extend(n.input.iter().cloned());
            taken.extend(n.output.iter().cloned());
            taken.insert(n.name.clone());
        }
        taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
        taken.extend(graph.input.iter().map(|t| t.name.clone()));
        taken.extend(graph.output.iter().map(|t| t.name.clone()));
        Builder { taken, counter: 0, nodes: vec![], inits: vec![], opset, scope: String::new() }
    }

    pub fn is_taken(&self, name: &str) -> bool {
        self.taken.contains(name)
    }

    pub fn fresh(&mut self, hint: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("grad/{hint}.{}", self.counter);
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    pub fn op_n(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, outputs: usize) -> Vec<String> {
        let output: Vec<String> = (0..outputs).map(|_| self.fresh(&format!("{}/{op}", self.scope.clone()))).collect();
        let name = self.fresh(&format!("{}/{op}_node", self.scope.clone()));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.op_n(op, inputs, attrs, 1).remove(0)
    }

    pub fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("const_i64");
        self.inits.push(i64_tensor(&name, &[v.len() as i64], v));
        name
    }

    pub fn int_scalar(&mut self, v: i64) -> String {
        let name = self.ints(&[v]);
        self.inits.last_mut().unwrap().dims.clear();
        name
    }

    pub fn floats(&mut self, dims: &[i64], v: &[f32]) -> String {
        let name = self.fresh("const_f32");
        self.inits.push(f32_tensor(&name, dims, v));
        name
    }

    pub fn scalar(&mut self, v: f32) -> String {
        self.floats(&[], &[v])
    }

    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    pub fn scale(&mut self, a: &str, k: f32) -> String {
        let k = self.scalar(k);
        self.mul(a, &k)
    }

    /// Sums over `axes`; the axes are an input from opset 13 on.
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let axes = self.ints(axes);
        self.op("ReduceSum", &[x, &axes], vec![a_int("keepdims", keepdims as i64)])
    }

    /// ReduceMean took its axes as an attribute until opset 18.
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        if self.opset >= 18 {
            let axes = self.ints(axes);
            self.op("ReduceMean", &[x, &axes], vec![a_int("keepdims", keepdims as i64)])
        } else {
            self.op("ReduceMean", &[x], vec![a_ints("axes", axes), a_int("keepdims", keepdims as i64)])
        }
    }

    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let axes = self.ints(axes);
        self.op("Unsqueeze", &[x, &axes], vec![])
    }

    /// `x` reshaped like `like` (whose shape may hold the symbolic batch).
    pub fn reshape_like(&mut self, x: &str, like: &str) -> String {
        let shape = self.op("Shape", &[like], vec![]);
        self.op("Reshape", &[x, &shape], vec![])
    }
}

/// Reads the model's constants and infers every tensor shape it can.
pub struct Facts {
    pub consts: HashMap<String, Const>,
    pub shapes: HashMap<String, Shape>,
    /// Integer tensors known at build time, shape arithmetic included.
    pub values: HashMap<String, Value>,
    /// Why a shape is missing, when inference failed.
    pub why: HashMap<String, String>,
}

impl Facts {
    pub fn shape(&self, name: &str, node: &NodeProto) -> Result<&Shape> {
        self.shapes.get(name).with_context(|| {
            let why = self.why.get(name).map(|w| format!(" ({w})")).unwrap_or_default();
            format!(
                "{}: the shape of '{name}' could not be inferred{why}; it must be static apart from the batch",
                node_label(node)
            )
        })
    }

    pub fn ints(&self, name: &str, node: &NodeProto) -> Result<&[i64]> {
        self.consts.get(name).and_then(|c| c.ints.as_deref()).with_context(|| {
            format!(
                "{}: input '{name}' must be a constant integer tensor (initializer or Constant node)",
                node_label(node)
            )
        })
    }

    /// The value of `name` as dimensions (the batch may appear in it).
    pub fn dims(&self, name: &str, node: &NodeProto) -> Result<&[Dim]> {
        self.values.get(name).map(|v| v.data.as_slice()).with_context(|| {
            let why = self.why.get(name).map(|w| format!(" ({w})")).unwrap_or_default();
            let label = node_label(node);
            format!("{label}: input '{name}' must be an integer tensor computable from constants and shapes{why}")
        })
    }

    fn add_const(&mut self, name: &str, c: Const) {
        self.shapes.insert(name.to_string(), c.dims.iter().map(|&d| Dim::fixed(d)).collect());
        if let Some(ints) = &c.ints {
            let shape = c.dims.iter().map(|&d| d as usize).collect();
            self.values.insert(name.to_string(), Value { shape, data: ints.iter().map(|&v| Dim::fixed(v)).collect() });
        }
        self.consts.insert(name.to_string(), c);
    }

    pub fn collect(graph: &pb::GraphProto, input: &str, input_shape: Shape) -> Result<Facts> {
        let (consts, shapes, values, why) = (HashMap::new(), HashMap::new(), HashMap::new(), HashMap::new());
        let mut f = Facts { consts, shapes, values, why };
        for t in &graph.initializer {
            f.add_const(&t.name, decode_const(t));
        }
        f.shapes.insert(input.to_string(), input_shape);
        for node in &graph.node {
            if node.op_type == "Constant" {
                if let (Some(c), Some(out)) = (constant_node_value(node), node.output.first()) {
                    f.add_const(out, c);
                }
                continue;
            }
            // A failure only matters if the backward pass needs this shape, so
            // it is kept as the reason instead of aborting here.
            let value = infer(node, &f).and_then(|outs| {
                for (name, s) in node.output.iter().zip(outs) {
                    if let Some(s) = s {
                        f.shapes.insert(name.clone(), s);
                    }
                }
                super::values::eval(node, &f)
            });
            match (value, node.output.first()) {
                (Ok(Some(v)), Some(out)) => {
                    let dims = || v.shape.iter().map(|&d| Dim::fixed(d as i64)).collect();
                    f.shapes.entry(out.clone()).or_insert_with(dims);
                    // A value free of the batch is an ordinary constant to the rules.
                    if let Some(ints) = v.fixed() {
                        let dims = v.shape.iter().map(|&d| d as i64).collect();
                        let data_type = DataType::Int64 as i32;
                        f.consts.insert(out.clone(), Const { dims, ints: Some(ints), data_type });
                    }
                    f.values.insert(out.clone(), v);
                }
                (Ok(_), _) => {}
                (Err(e), _) => {
                    for name in &node.output {
                        f.why.insert(name.clone(), format!("{}: {e:#}", node_label(node)));
                    }
                }
            }
        }
        Ok(f)
    }
}

fn pool_out(node: &NodeProto, x: &[Dim], kernel: &[i64]) -> Result<Shape> {
    let n = kernel.len();
    let spatial: Vec<i64> =
        x[2..].iter().map(|d| d.value().context("spatial dimensions must be static")).collect::<Result<_>>()?;
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; n]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; n]);
    let pads = explicit_pads(node, &spatial, kernel, &strides, &dil)?;
    let ceil = attr_i(node, "ceil_mode", 0) == 1;
    let mut out = x[..2].to_vec();
    for i in 0..n {
        let eff = (kernel[i] - 1) * dil[i] + 1;
        let span = spatial[i] + pads[i] + pads[i + n] - eff;
        let o = if ceil { (span + strides[i] - 1) / strides[i] + 1 } else { span / strides[i] + 1 };
        out.push(Dim::fixed(o));
    }
    Ok(out)
}

/// The begin/end pads a Conv or pool applies, with `auto_pad` resolved.
pub fn explicit_pads(
    node: &NodeProto,
    spatial: &[i64],
    kernel: &[i64],
    strides: &[i64],
    dil: &[i64],
) -> Result<Vec<i64>> {
    let n = kernel.len();
    match attr_s(node, "auto_pad").as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => Ok(attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * n])),
        "VALID" => Ok(vec![0; 2 * n]),
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut pads = vec![0; 2 * n];
            for i in 0..n {
                let out = (spatial[i] + strides[i] - 1) / strides[i];
                let total = ((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - spatial[i]).max(0);
                let small = total / 2;
                let (b, e) = if mode == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                pads[i] = b;
                pads[i + n] = e;
            }
            Ok(pads)
        }
        other => bail!("auto_pad {other} is not understood"),
    }
}

fn infer(node: &NodeProto, f: &Facts) -> Result<Vec<Option<Shape>>> {
    let s = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| f.shapes.get(n)).cloned();
    let Some(x) = s(0) else { return Ok(vec![]) };
    let one = |shape: Shape| Ok(vec![Some(shape)]);
    match node.op_type.as_str() {
        "Relu" | "Clip" | "Sigmoid" | "Tanh" | "HardSigmoid" | "HardSwish" | "Erf" | "Exp" | "Log" | "Sqrt" | "Neg"
        | "Abs" | "Identity" | "QuantizeLinear" | "DequantizeLinear" | "Softmax" | "LogSoftmax" | "Cast"
        | "Reciprocal" | "Sign" | "LayerNormalization" | "BatchNormalization" | "Dropout" | "LeakyRelu" | "Elu"
        | "Cos" | "Sin" | "Floor" | "Ceil" | "Round" | "Softplus" | "Softsign" | "Selu" | "Gelu" | "Mish" | "Not" => {
            one(x)
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Equal" | "Greater" | "Less" | "Where" | "Mod"
        | "And" | "Or" | "Xor" | "GreaterOrEqual" | "LessOrEqual" => {
            let mut acc = x;
            for i in 1..node.input.len() {
                let Some(o) = s(i) else { return Ok(vec![None]) };
                acc = broadcast(&acc, &o)
                    .with_context(|| format!("cannot broadcast {} with {}", show(&acc), show(&o)))?;
            }
            one(acc)
        }
        "Conv" => {
            let w = s(1).context("weight shape unknown")?;
            let kernel: Vec<i64> = match attr_ints(node, "kernel_shape") {
                Some(k) => k,
                None => w[2..].iter().map(|d| d.value().unwrap_or(1)).collect(),
            };
            let mut out = pool_out(node, &x, &kernel)?;
            out[1] = w[0];
            one(out)
        }
        "MaxPool" | "AveragePool" => {
            let kernel = attr_ints(node, "kernel_shape").context("kernel_shape missing")?;
            let out = pool_out(node, &x, &kernel)?;
            Ok(vec![Some(out.clone()), Some(out)])
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let mut out = x[..2].to_vec();
            out.extend(std::iter::repeat_n(Dim::ONE, x.len() - 2));
            one(out)
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" => {
            let axes = reduce_axes(node, f, x.len())?;
            let keep = attr_i(node, "keepdims", 1) == 1;
            let out = (0..x.len())
                .filter_map(|i| match (axes.contains(&i), keep) {
                    (false, _) => Some(x[i]),
                    (true, true) => Some(Dim::ONE),
                    (true, false) => None,
                })
                .collect();
            one(out)
        }
        "Gemm" => {
            let b = s(1).context("B shape unknown")?;
            let m = if attr_i(node, "transA", 0) == 1 { x[1] } else { x[0] };
            let n = if attr_i(node, "transB", 0) == 1 { b[0] } else { b[1] };
            one(vec![m, n])
        }
        "MatMul" => {
            let b = s(1).context("B shape unknown")?;
            if x.len() < 2 || b.len() < 2 {
                bail!("MatMul of 1-D operands is not supported");
            }
            let batch =
                broadcast(&x[..x.len() - 2], &b[..b.len() - 2]).context("MatMul batch dims do not broadcast")?;
            let mut out = batch;
            out.push(x[x.len() - 2]);
            out.push(b[b.len() - 1]);
            one(out)
        }
        "Flatten" => {
            let axis = norm_axis(attr_i(node, "axis", 1), x.len() + 1)?;
            one(vec![product(&x[..axis]), product(&x[axis..])])
        }
        "Reshape" => {
            let target = f.dims(&node.input[1], node)?;
            let allow_zero = attr_i(node, "allowzero", 0) == 1;
            let mut out: Vec<Option<Dim>> = target
                .iter()
                .enumerate()
                .map(|(i, &t)| match t.value() {
                    Some(-1) => None,
                    Some(0) if !allow_zero => Some(x[i]),
                    _ => Some(t),
                })
                .collect();
            if let Some(hole) = out.iter().position(|d| d.is_none()) {
                let known = product(&out.iter().flatten().copied().collect::<Vec<_>>());
                let total = product(&x);
                out[hole] = Some(total.div(known).with_context(|| {
                    format!("cannot resolve -1 in Reshape of {} to {}", show(&x), show(target))
                })?);
            }
            one(out.into_iter().map(|d| d.unwrap()).collect())
        }
        "ConstantOfShape" => one(f.dims(&node.input[0], node)?.to_vec()),
        "Expand" => {
            let to = f.dims(&node.input[1], node)?;
            one(broadcast(&x, to).with_context(|| format!("cannot expand {} to {}", show(&x), show(to)))?)
        }
        "Slice" => {
            let mut out = x.clone();
            for a in slice_axes(node, f, &x)? {
                out[a.axis] = Dim::fixed(a.count);
            }
            one(out)
        }
        "Pad" => {
            let pads = pad_amounts(node, f, x.len())?;
            let out = x.iter().zip(&pads).map(|(&d, &(b, e))| match (b + e, d.value()) {
                (0, _) => Ok(d),
                (p, Some(v)) => Ok(Dim::fixed(v + p)),
                _ => bail!("Pad along the batch-sized axis is not supported"),
            });
            one(out.collect::<Result<_>>()?)
        }
        "Split" => {
            let axis = norm_axis(attr_i(node, "axis", 0), x.len())?;
            let d = x[axis].value().context("Split along the batch-sized axis is not supported")?;
            let sizes = split_sizes(node, f, d)?;
            let piece = |k: i64| (0..x.len()).map(|i| if i == axis { Dim::fixed(k) } else { x[i] }).collect();
            Ok(sizes.iter().map(|&k| Some(piece(k))).collect())
        }
        "ScatterND" | "ScatterElements" => one(x),
        "Einsum" => {
            let eq = Einsum::parse(node)?;
            let mut letters: HashMap<char, Dim> = HashMap::new();
            for (i, spec) in eq.inputs.iter().enumerate() {
                let shape = s(i).context("operand shape unknown")?;
                if shape.len() != spec.len() {
                    bail!("operand {i} has rank {} but the equation names {} axes", shape.len(), spec.len());
                }
                letters.extend(spec.chars().zip(shape));
            }
            let dim = |c: char| letters.get(&c).copied().with_context(|| format!("no operand has subscript '{c}'"));
            one(eq.output.chars().map(dim).collect::<Result<_>>()?)
        }
        "Transpose" => {
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            one(perm.iter().map(|&p| x[p as usize]).collect())
        }
        "Squeeze" | "Unsqueeze" => {
            let axes: Vec<i64> = match node.input.get(1).filter(|n| !n.is_empty()) {
                Some(name) => f.ints(name, node)?.to_vec(),
                None => attr_ints(node, "axes").unwrap_or_default(),
            };
            if node.op_type == "Squeeze" {
                let axes: Vec<usize> = if axes.is_empty() {
                    (0..x.len()).filter(|&i| x[i] == Dim::ONE).collect()
                } else {
                    axes.iter().map(|&a| norm_axis(a, x.len())).collect::<Result<_>>()?
                };
                one((0..x.len()).filter(|i| !axes.contains(i)).map(|i| x[i]).collect())
            } else {
                let rank = x.len() + axes.len();
                let axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<Result<_>>()?;
                let mut rest = x.iter();
                one((0..rank).map(|i| if axes.contains(&i) { Dim::ONE } else { *rest.next().unwrap() }).collect())
            }
        }
        "Concat" => {
            let axis = norm_axis(attr_i(node, "axis", 0), x.len())?;
            let mut out = x.clone();
            let mut total = Dim::fixed(0);
            for i in 0..node.input.len() {
                let d = s(i).context("input shape unknown")?[axis];
                total = match (total.value(), d.value()) {
                    (Some(a), Some(b)) => Dim::fixed(a + b),
                    _ if total == Dim::fixed(0) => d,
                    _ => bail!("Concat along a batch-sized axis is not supported"),
                };
            }
            out[axis] = total;
            one(out)
        }
        "Gather" => {
            let idx = s(1).context("indices shape unknown")?;
            let axis = norm_axis(attr_i(node, "axis", 0), x.len())?;
            let mut out = x[..axis].to_vec();
            out.extend(idx);
            out.extend_from_slice(&x[axis + 1..]);
            one(out)
        }
        _ => Ok(vec![]),
    }
}

/// An Einsum equation without ellipsis, spaces removed; implicit outputs made explicit.
pub struct Einsum {
    pub inputs: Vec<String>,
    pub output: String,
}

impl Einsum {
    pub fn parse(node: &NodeProto) -> Result<Einsum> {
        let eq = attr_s(node, "equation").context("Einsum without equation")?;
        let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
        if eq.contains("...") {
            bail!("Einsum with an ellipsis is not supported ({eq})");
        }
        let (lhs, out) = match eq.split_once("->") {
            Some((l, o)) => (l.to_string(), o.to_string()),
            None => {
                // Implicit mode: the letters used once, in alphabetical order.
                let mut once: Vec<char> =
                    eq.chars().filter(|c| c.is_alphabetic() && eq.matches(*c).count() == 1).collect();
                once.sort_unstable();
                (eq.clone(), once.into_iter().collect())
            }
        };
        let inputs: Vec<String> = lhs.split(',').map(str::to_string).collect();
        if inputs.len() != node.input.len() {
            bail!("equation {eq} names {} operands, the node has {}", inputs.len(), node.input.len());
        }
        Ok(Einsum { inputs, output: out })
    }
}

/// Axes of a Reduce* node, normalised; all axes when none are given.
pub fn reduce_axes(node: &NodeProto, f: &Facts, rank: usize) -> Result<Vec<usize>> {
    let axes: Vec<i64> = match node.input.get(1).filter(|n| !n.is_empty()) {
        Some(name) => f.ints(name, node)?.to_vec(),
        None => attr_ints(node, "axes").unwrap_or_default(),
    };
    if axes.is_empty() {
        if attr_i(node, "noop_with_empty_axes", 0) == 1 {
            return Ok(vec![]);
        }
        return Ok((0..rank).collect());
    }
    let mut axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<Result<_>>()?;
    axes.sort_unstable();
    Ok(axes)
}
