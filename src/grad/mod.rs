//! Input gradients of ONNX classifiers, for the adversarial dimension.
//!
//! The forward graph is differentiated *into another ONNX graph*: the original
//! nodes (untouched, so an int8 QDQ model keeps its real int8 forward) followed
//! by hand-written reverse-mode nodes. Inputs: the normalised image batch and
//! `labels` (int64); outputs: the logits and d(Σ cross-entropy)/d(input).
//! tract then loads and optimises it like any other model, so the board needs
//! no autodiff engine, and the same file can be checked with onnxruntime.
//! docs/gradients.md explains the choice and the op coverage.

mod cli;
mod graph;
mod values;
mod rules;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tract_onnx::pb::{self, tensor_proto::DataType, type_proto, NodeProto, ValueInfoProto};
use tract_onnx::prelude::*;

pub use cli::{run_cli, GradCmd};
use graph::{node_label, Builder, Dim, Facts};

/// Attribute and tensor constructors, for building small graphs (tests, fixtures).
pub use graph::{a_f32_tensor, a_float, a_int, a_ints, a_str, f32_tensor, i64_tensor};
pub use rules::SUPPORTED;

/// Name of the gradient output in a graph built by [`gradient_graph`].
pub const GRAD_OUTPUT: &str = "input_gradient";
/// Name of the label input in a graph built by [`gradient_graph`].
pub const LABELS_INPUT: &str = "labels";

/// Ops whose outputs carry no gradient (integer or piecewise-constant results).
const NO_GRADIENT: &[&str] = &[
    "Shape",
    "Size",
    "ArgMax",
    "ArgMin",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "NonZero",
    "ConstantOfShape",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
];

/// How the input gradient relates to the model's true derivative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradientKind {
    /// The derivative of the function the model computes (a.e.).
    Exact,
    /// Quantisation is crossed with the straight-through estimator: the
    /// gradient of the float model at the quantised model's activations.
    Ste,
}

impl GradientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GradientKind::Exact => "exact",
            GradientKind::Ste => "ste",
        }
    }
}

/// What [`build`] learnt about the classifier besides the graph itself.
#[derive(Clone, Debug)]
pub struct GradInfo {
    /// Input dims after the batch (e.g. C, H, W).
    pub item_shape: Vec<usize>,
    pub num_classes: usize,
    /// A fixed batch declared by the model, if it declares one.
    pub fixed_batch: Option<usize>,
    pub kind: GradientKind,
}

/// The forward + backward graph of `model` (see the module documentation).
pub fn gradient_graph(model: &pb::ModelProto) -> Result<pb::ModelProto> {
    build(model).map(|(m, _)| m)
}

/// `model` with its image input's symbolic batch fixed to `batch`; None when
/// the input declares its batch already.
fn with_batch(model: &pb::ModelProto, batch: usize) -> Option<pb::ModelProto> {
    use pb::tensor_shape_proto::dimension::Value;
    let mut fixed = model.clone();
    let graph = fixed.graph.as_mut()?;
    let inits: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let input = graph.input.iter_mut().find(|i| !inits.contains(&i.name))?;
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut()?.value.as_mut() else { return None };
    let first = t.shape.as_mut()?.dim.first_mut()?;
    if matches!(first.value, Some(Value::DimValue(v)) if v > 0) {
        return None;
    }
    first.value = Some(Value::DimValue(batch as i64));
    Some(fixed)
}

fn default_opset(model: &pb::ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version)
}

fn tensor_dims(v: &ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else { return None };
    let dims = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v),
            _ => None,
        })
        .collect();
    Some((t.elem_type, dims))
}

fn value_info(name: &str, elem: DataType, dims: Vec<pb::tensor_shape_proto::Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build(model: &pb::ModelProto) -> Result<(pb::ModelProto, GradInfo)> {
    let graph = model.graph.as_ref().context("the ONNX model has no graph")?;
    let opset = default_opset(model).context("the ONNX model imports no default-domain opset")?;
    if !(13..=21).contains(&opset) {
        bail!("ONNX opset {opset} is not supported for gradients (13 to 21 are); re-export the model with opset 17");
    }
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&ValueInfoProto> = graph.input.iter().filter(|i| !inits.contains(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        bail!(
            "a classifier has one image input; this model has {}: {:?}",
            inputs.len(),
            inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
        )
    };
    let (elem, dims) = tensor_dims(input).with_context(|| format!("input '{}' has no tensor shape", input.name))?;
    if elem != DataType::Float as i32 {
        bail!("input '{}' is not float32; the gradient is taken w.r.t. a normalised float image", input.name);
    }
    if dims.len() < 2 || dims[1..].iter().any(|d| d.is_none()) {
        bail!("input '{}' must be [batch, C, H, W] with static C, H, W (got {dims:?})", input.name);
    }
    let fixed_batch = dims[0].map(|b| b as usize);
    let mut in_shape = vec![dims[0].map(Dim::fixed).unwrap_or(Dim::BATCH)];
    in_shape.extend(dims[1..].iter().map(|d| Dim::fixed(d.unwrap())));
    let facts = Facts::collect(graph, &input.name, in_shape.clone())?;

    let out = graph.output.first().context("the model has no output")?;
    // A model that ends in its softmax is differentiated from the softmax's
    // input: the loss below applies its own, and a second one would flatten
    // the gradient it follows.
    let logits = match crate::engine::final_softmax(graph) {
        Some(softmax) => softmax.input.first().context("a Softmax node without input")?.as_str(),
        None => out.name.as_str(),
    };

    // Nodes on a path input → logits; only they are differentiated.
    let mut requires: HashSet<String> = HashSet::from([input.name.clone()]);
    for node in &graph.node {
        let data = if rules::SUPPORTED.contains(&node.op_type.as_str()) {
            rules::data_inputs(&node.op_type, node.input.len())
        } else {
            (0..node.input.len()).collect()
        };
        let fed = data.iter().any(|&i| node.input.get(i).is_some_and(|n| requires.contains(n)));
        if fed && !NO_GRADIENT.contains(&node.op_type.as_str()) {
            requires.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    let mut reaches: HashSet<&str> = HashSet::from([logits]);
    for node in graph.node.iter().rev() {
        if node.output.iter().any(|o| reaches.contains(o.as_str())) {
            reaches.extend(node.input.iter().map(String::as_str));
        }
    }
    let active: Vec<usize> = (0..graph.node.len())
        .filter(|&i| graph.node[i].output.iter().any(|o| requires.contains(o) && reaches.contains(o.as_str())))
        .collect();
    if !requires.contains(logits) {
        bail!("output '{logits}' does not depend on input '{}'", input.name);
    }
    for &i in &active {
        let node = &graph.node[i];
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            bail!("{}: ops of domain '{}' are not differentiable here", node_label(node), node.domain);
        }
        if !rules::SUPPORTED.contains(&node.op_type.as_str()) {
            bail!(
                "{}: no gradient rule for op type {}, so the input gradient cannot be built. Supported: {}",
                node_label(node),
                node.op_type,
                rules::SUPPORTED.join(", ")
            );
        }
    }
    let num_classes = match facts.shapes.get(logits).map(|s| s.as_slice()) {
        Some([b, k]) if *b == in_shape[0] && k.value().is_some_and(|k| k >= 2) => k.value().unwrap(),
        s => bail!(
            "output 0 '{logits}' has shape {}; a gradient needs a class vector [batch, classes] of logits",
            s.map(graph::show).unwrap_or_else(|| "unknown (not inferable through the graph's ops)".into())
        ),
    };

    // The backward passes a Q→DQ pair as one unit (saturating STE on Q,
    // identity on DQ), so the gradient of an integer tensor is in the units of
    // its dequantised value: every consumer of an active Q must be a DQ.
    for &i in &active {
        let node = &graph.node[i];
        if node.op_type != "QuantizeLinear" {
            continue;
        }
        let q = &node.output[0];
        for user in graph.node.iter().filter(|n| n.input.contains(q)) {
            if user.op_type != "DequantizeLinear" || user.input.get(1) != node.input.get(1) {
                bail!(
                    "{}: its output feeds {} instead of a DequantizeLinear with the same scale; only QDQ pairs are differentiable",
                    node_label(node),
                    node_label(user)
                );
            }
        }
    }
    let kind = if active.iter().any(|&i| graph.node[i].op_type == "QuantizeLinear") {
        GradientKind::Ste
    } else {
        GradientKind::Exact
    };

    let mut b = Builder::new(graph, opset);
    let mut forward: Vec<NodeProto> = graph.node.clone();
    crate::engine::write_out_defaults(&mut forward);
    for &i in &active {
        let node = &mut forward[i];
        if node.op_type == "MaxPool" {
            if graph::attr_i(node, "storage_order", 0) != 0 {
                bail!("{}: MaxPool with storage_order=1 is not supported", node_label(node));
            }
            if node.output.len() < 2 || node.output[1].is_empty() {
                let idx = b.fresh("maxpool_indices");
                node.output.resize(1, String::new());
                node.output.push(idx);
            }
        }
    }

    // d(Σ CE)/d logits = softmax(logits) − onehot(label).
    b.scope = "loss".into();
    let p = b.op("Softmax", &[logits], vec![a_int("axis", 1)]);
    let depth = b.int_scalar(num_classes);
    let values = b.floats(&[2], &[0.0, 1.0]);
    let onehot = b.op("OneHot", &[LABELS_INPUT, &depth, &values], vec![a_int("axis", -1)]);
    let dlogits = b.op("Sub", &[&p, &onehot], vec![]);

    let mut grads: HashMap<String, Vec<String>> = HashMap::from([(logits.to_string(), vec![dlogits])]);
    let mut cx = rules::Ctx { b, facts: &facts, requires: &requires };
    for &i in active.iter().rev() {
        let node = &forward[i];
        let mut dys = vec![];
        for o in &node.output {
            dys.push(take_grad(&mut cx.b, &mut grads, o));
        }
        if dys.iter().all(|d| d.is_none()) {
            continue;
        }
        cx.b.scope = if node.name.is_empty() { node.op_type.clone() } else { node.name.clone() };
        let dxs = rules::backward(&mut cx, node, &dys).with_context(|| format!("gradient of {}", node_label(node)))?;
        for (k, g) in dxs {
            let name = &node.input[k];
            if requires.contains(name) {
                grads.entry(name.clone()).or_default().push(g);
            }
        }
    }
    let mut b = cx.b;
    let dx = take_grad(&mut b, &mut grads, &input.name).context("internal: no gradient reached the input")?;
    if b.is_taken(GRAD_OUTPUT) || b.is_taken(LABELS_INPUT) {
        bail!("the model already has a tensor named {GRAD_OUTPUT}");
    }
    b.scope = "output".into();
    b.nodes.push(NodeProto {
        input: vec![dx],
        output: vec![GRAD_OUTPUT.into()],
        name: "grad/output".into(),
        op_type: "Identity".into(),
        ..Default::default()
    });

    let in_dims = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.shape.clone().unwrap_or_default().dim,
        _ => vec![],
    };
    let mut g = graph.clone();
    g.name = format!("{}+input_gradient", graph.name);
    g.node = forward;
    g.node.extend(b.nodes);
    g.initializer.extend(b.inits);
    g.input.retain(|i| i.name == input.name || inits.contains(i.name.as_str()));
    g.input.insert(1, value_info(LABELS_INPUT, DataType::Int64, in_dims[..1].to_vec()));
    g.output = vec![out.clone(), value_info(GRAD_OUTPUT, DataType::Float, in_dims)];
    let mut m = model.clone();
    // ScatterElements' `reduction` (the MaxPool and Gather backward) exists
    // from opset 16 on; onnxruntime rejects it in an older graph. From 13 to
    // 16 the forward's ops only gained types and attributes whose defaults
    // keep their meaning, except RoiAlign's sampling default.
    if opset < 16 && g.node.iter().any(|n| graph::attr(n, "reduction").is_some()) {
        if let Some(n) = g.node.iter().find(|n| n.op_type == "RoiAlign") {
            let why = "its meaning changes at opset 16, which the gradient graph needs; re-export with opset 17";
            bail!("{}: {why}", node_label(n));
        }
        for o in m.opset_import.iter_mut().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
            o.version = 16;
        }
    }
    m.graph = Some(g);
    m.producer_name = format!("quba-edge {} (input gradient of: {})", env!("CARGO_PKG_VERSION"), model.producer_name);
    let item_shape = in_shape[1..].iter().map(|d| d.value().unwrap() as usize).collect();
    Ok((m, GradInfo { item_shape, num_classes: num_classes as usize, fixed_batch, kind }))
}

/// The gradient of `name`, summing its contributions into one tensor.
fn take_grad(b: &mut Builder, grads: &mut HashMap<String, Vec<String>>, name: &str) -> Option<String> {
    let parts = grads.remove(name)?;
    if parts.len() == 1 {
        return parts.into_iter().next();
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Some(b.op("Sum", &refs, vec![]))
}

pub fn read_model(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    tract_onnx::onnx()
        .proto_model_for_read(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{} is not an ONNX model (protobuf parse failed: {e})", path.display()))
}

pub fn write_model(model: &pb::ModelProto, path: &Path) -> Result<()> {
    use prost::Message;
    std::fs::write(path, model.encode_to_vec()).with_context(|| format!("cannot write {}", path.display()))
}

/// A classifier's forward + backward graph, typed and optimised by tract for
/// a fixed batch.
pub struct GradModel {
    plan: Arc<TypedRunnableModel>,
    pub batch: usize,
    pub info: GradInfo,
}

impl GradModel {
    /// Builds the gradient graph of the model at `path` for `batch` images.
    pub fn load(path: &Path, batch: usize) -> Result<GradModel> {
        Self::load_for(path, batch, crate::protocol::Outputs::Logits)
    }

    /// As [`GradModel::load`] for a model whose output 0 holds probabilities
    /// without ending in a Softmax node (`Outputs::RowsSumToOne`): the loss
    /// then starts from their logarithm, since softmax(log p) = p, where a
    /// softmax of p itself would follow a flattened gradient.
    pub fn load_for(path: &Path, batch: usize, outputs: crate::protocol::Outputs) -> Result<GradModel> {
        let mut proto = read_model(path)?;
        if outputs == crate::protocol::Outputs::RowsSumToOne {
            let g = proto.graph.as_mut().context("the ONNX model has no graph")?;
            let out = g.output.first_mut().context("the model has no output")?;
            let log = format!("{}/log", out.name);
            g.node.push(NodeProto {
                op_type: "Log".into(),
                name: log.clone(),
                input: vec![out.name.clone()],
                output: vec![log.clone()],
                ..Default::default()
            });
            out.name = log;
        }
        Self::from_proto(&proto, batch).with_context(|| format!("{}: cannot build its input gradient", path.display()))
    }

    /// As [`GradModel::load`], for a model already in memory.
    pub fn from_proto(model: &pb::ModelProto, batch: usize) -> Result<GradModel> {
        let (g, info) = match build(model) {
            Ok(built) => built,
            // Some exports index by the batch itself (torch.export writes ConvNeXt's
            // and Swin's `as_strided` as a Gather over Range(0, batch, …)): such a
            // value has no constant on a symbolic batch, so the graph is built
            // again for the batch it will run, and the first error stands if that
            // does not help either.
            Err(symbolic) => match with_batch(model, batch) {
                Some(fixed) => build(&fixed).map_err(|_| symbolic)?,
                None => return Err(symbolic),
            },
        };
        if batch == 0 || info.fixed_batch.is_some_and(|b| b != batch) {
            bail!("batch {batch} requested but the model declares batch {:?}", info.fixed_batch);
        }
        let mut shape = vec![batch];
        shape.extend(&info.item_shape);
        // The batch is fixed before optimisation: a symbolic batch costs tract 1.5–4×.
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_proto_model(&g)
            .context("tract could not load the gradient graph")?
            .with_input_fact(0, f32::fact(&shape).into())?
            .with_input_fact(1, i64::fact([batch]).into())?
            .into_optimized()
            .context("tract could not type or optimise the gradient graph")?
            .into_runnable()?;
        Ok(GradModel { plan, batch, info })
    }

    /// Elements of one input image.
    pub fn item_len(&self) -> usize {
        self.info.item_shape.iter().product()
    }

    pub fn num_classes(&self) -> usize {
        self.info.num_classes
    }

    pub fn kind(&self) -> GradientKind {
        self.info.kind
    }

    /// Logits `[batch, K]` and d(Σ_i CE(logits_i, labels_i))/d input, for a full
    /// batch of normalised images laid out NCHW.
    pub fn logits_and_grad(&self, input: &[f32], labels: &[i64]) -> Result<(Vec<f32>, Vec<f32>)> {
        let k = self.info.num_classes as i64;
        if input.len() != self.batch * self.item_len() || labels.len() != self.batch {
            bail!(
                "logits_and_grad: expected {} input values and {} labels for batch {}, got {} and {}",
                self.batch * self.item_len(),
                self.batch,
                self.batch,
                input.len(),
                labels.len()
            );
        }
        if let Some(bad) = labels.iter().find(|&&l| !(0..k).contains(&l)) {
            bail!("label {bad} is outside the model's {k} classes");
        }
        let mut shape = vec![self.batch];
        shape.extend(&self.info.item_shape);
        let x = Tensor::from_shape(&shape, input)?;
        let y = Tensor::from_shape(&[self.batch], labels)?;
        let out = self.plan.run(tvec!(x.into(), y.into()))?;
        let flat = |t: &TValue| -> Result<Vec<f32>> {
            Ok(t.to_plain_array_view::<f32>()?.as_slice().context("output is not contiguous")?.to_vec())
        };
        Ok((flat(&out[0])?, flat(&out[1])?))
    }
}
