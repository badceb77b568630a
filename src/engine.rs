//! Loading an ONNX classifier with tract and running it in fixed-size batches.
//!
//! tract's own typed model and runnable plan are used as they are; this file
//! only adds what a classifier evaluation needs on top: a checked output shape,
//! the parameter count and precision read from the ONNX file itself, and
//! padding of the last partial batch.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::protocol::{Backend, Execution, Outputs, Precision};

pub(crate) type Plan = Arc<TypedRunnableModel>;

/// What the ONNX file says about itself, independent of any runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxFacts {
    pub parameters: u64,
    pub precision: Precision,
    /// `qdq`, `qoperator`, or empty for fp32.
    pub int8_format: String,
    /// The Softmax node whose probabilities are output 0, if the graph ends in one.
    pub final_softmax: Option<String>,
}

pub struct Engine {
    plan: Plan,
    pub batch: usize,
    pub side: usize,
    pub num_classes: usize,
    pub facts: OnnxFacts,
    /// Whether output 0 holds logits or probabilities already.
    pub outputs: Outputs,
    /// Where the plan's nodes run, for GPU backends.
    pub placement: Option<crate::cuda::Placement>,
    /// Convolutions running on quba's integer kernels (0 for fp32 models and
    /// for the `tract` backend).
    pub integer_convs: usize,
    /// MACs per image by what ran them (`crate::execution`).
    pub execution: Execution,
}

impl Engine {
    /// Loads `path` for NCHW f32 input of `batch`×3×`side`×`side`. The batch
    /// is fixed before optimisation: a symbolic batch costs tract 1.5–4×.
    pub fn load(path: &Path, batch: usize, side: usize) -> Result<Self> {
        Self::load_on(path, batch, side, Backend::TractCpu)
    }

    /// `load` for a chosen backend; CUDA is refused with the reason before
    /// the model is read when this build or this machine cannot run it.
    pub fn load_on(path: &Path, batch: usize, side: usize, backend: Backend) -> Result<Self> {
        if backend == Backend::TractCuda {
            crate::cuda::check_available()?;
        }
        // One read and one protobuf parse serve the facts and the model; the
        // facts come first, from the file as written (fusion turns QDQ into
        // QLinearConv nodes).
        let mut proto = read_proto(path)?;
        let facts = facts_of_proto(&proto, path)?;
        let dequantized = proto.graph.as_ref().map(crate::execution::dequantized).unwrap_or_default();
        let onnx = match backend {
            Backend::TractCpu => crate::int8::onnx(),
            Backend::TractCuda | Backend::TractPlain => tract_onnx::onnx(),
        }
        // torch's dynamo exporter annotates a symbolic batch that would not
        // unify with the concrete input fact below.
        .with_ignore_value_info(true);
        if backend == Backend::TractCpu {
            crate::int8::fuse_qdq_convs(&mut proto);
        }
        if let Some(graph) = proto.graph.as_mut() {
            write_out_defaults(&mut graph.node);
        }
        let dir = path.parent().and_then(|d| d.to_str());
        let parsed = onnx
            .parse(&proto, dir)
            .with_context(|| format!("tract could not load {} as an ONNX model", path.display()))?;
        if !parsed.unresolved_inputs.is_empty() {
            bail!("{}: inputs {:?} are read but never defined", path.display(), parsed.unresolved_inputs);
        }
        let model = parsed.model;
        let model = model
            .with_input_fact(0, f32::fact([batch, 3, side, side]).into())
            .and_then(|m| m.into_typed())
            .with_context(|| {
                format!("{}: cannot type the graph for input [{batch}, 3, {side}, {side}] (f32, NCHW)", path.display())
            })?;
        if model.outputs.is_empty() {
            bail!("{}: the model has no output", path.display());
        }
        let out = model.output_fact(0)?.shape.clone();
        let dims: Vec<Option<usize>> = out.iter().map(|d| d.as_i64().map(|v| v as usize)).collect();
        let num_classes = match dims.as_slice() {
            [Some(b), Some(k)] if *b == batch && *k >= 2 => *k,
            _ => bail!(
                "{}: output 0 has shape {out:?}; expected a class vector [batch, classes] of logits, e.g. [{batch}, 1000]",
                path.display()
            ),
        };
        // Counted on the typed model: its shapes are concrete, and optimisation renames and merges nodes.
        let graph = proto.graph.as_ref().with_context(|| format!("{}: ONNX file has no graph", path.display()))?;
        // A count we cannot make must not cost the run: the header then
        // carries none (results.json `execution: null`), and the device says why.
        let execution = crate::execution::account(graph, &dequantized, &model, batch, facts.precision).unwrap_or_else(|e| {
            eprintln!("warning: {}: what runs each node is not recorded: {e:#}", path.display());
            Execution::default()
        });
        let (plan, placement) = match backend {
            Backend::TractCpu | Backend::TractPlain => {
                let plan = model
                    .into_optimized()
                    .and_then(|m| m.into_runnable())
                    .with_context(|| format!("{}: tract could not optimise the model", path.display()))?;
                (plan, None)
            }
            Backend::TractCuda => {
                let (plan, placement) = crate::cuda::prepare(model, batch, side)
                    .with_context(|| format!("{}: tract's CUDA runtime could not prepare the model", path.display()))?;
                (plan, Some(placement))
            }
        };
        let integer_convs = plan.model().nodes().iter().filter(|n| n.op_is::<crate::int8::QConvOp>()).count();
        let mut engine = Engine { plan, batch, side, num_classes, facts, outputs: Outputs::Logits, placement, integer_convs, execution };
        engine.outputs = if engine.facts.final_softmax.is_some() {
            Outputs::SoftmaxInGraph
        } else if engine.rows_sum_to_one()? {
            Outputs::RowsSumToOne
        } else {
            Outputs::Logits
        };
        Ok(engine)
    }

    /// One pass on the mean image (all zeros once normalised): a softmax
    /// gives rows that are non-negative and sum to 1 for any input, which
    /// logits do not do by accident. Catches a softmax the graph spells out
    /// in other ops (Exp, ReduceSum, Div) or hides in a custom op.
    fn rows_sum_to_one(&self) -> Result<bool> {
        let input = vec![0f32; self.batch * 3 * self.side * self.side];
        let out = self.logits(&input, self.batch).context("a first forward pass on a blank image failed")?;
        Ok(out.chunks_exact(self.num_classes).all(|row| {
            row.iter().all(|&p| p.is_finite() && p >= 0.0) && (row.iter().map(|&p| p as f64).sum::<f64>() - 1.0).abs() <= 1e-3
        }))
    }

    /// Runs `n ≤ batch` images laid out back to back in `input` (the rest of
    /// the batch, if any, is padding) and returns n·classes rows of output 0:
    /// logits, or probabilities where [`Engine::outputs`] says so.
    pub fn logits(&self, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let per = 3 * self.side * self.side;
        debug_assert_eq!(input.len(), self.batch * per);
        let t = Tensor::from_shape(&[self.batch, 3, self.side, self.side], input)?;
        let out = self.plan.run(tvec!(t.into()))?;
        let view = out[0].to_plain_array_view::<f32>()?;
        let all = view.as_slice().context("model output is not contiguous")?;
        Ok(all[..n * self.num_classes].to_vec())
    }

    /// Time per op kind over `rounds` forward passes of `input` (a whole
    /// batch), largest first: (op name, milliseconds per pass, nodes of that kind).
    /// What `quba bench --profile` prints, to say where a model's time goes.
    pub fn profile(&self, input: &[f32], rounds: usize) -> Result<Vec<(String, f64, usize)>> {
        use std::collections::HashMap;
        use std::time::Instant;
        let t = Tensor::from_shape(&[self.batch, 3, self.side, self.side], input)?;
        let mut state = self.plan.spawn()?;
        let rounds = rounds.max(1);
        let mut spent: HashMap<String, (f64, std::collections::HashSet<usize>)> = HashMap::new();
        for _ in 0..rounds {
            state.run_plan_with_eval(tvec!(t.clone().into()), |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                let kind = match node.op_as::<crate::int8::QConvOp>() {
                    Some(q) => format!("{} ({})", node.op().name(), q.conv.kernel_name()),
                    None => node.op().name().to_string(),
                };
                let e = spent.entry(kind).or_default();
                e.0 += start.elapsed().as_secs_f64() * 1e3;
                e.1.insert(node.id);
                out
            })?;
        }
        let mut rows: Vec<(String, f64, usize)> =
            spent.into_iter().map(|(k, (ms, nodes))| (k, ms / rounds as f64, nodes.len())).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(rows)
    }
}

/// Parameters and precision straight from the protobuf, so they do not depend
/// on what tract's optimiser folds.
pub fn read_facts(path: &Path) -> Result<OnnxFacts> {
    facts_of_proto(&read_proto(path)?, path)
}

fn facts_of_proto(proto: &pb::ModelProto, path: &Path) -> Result<OnnxFacts> {
    let graph = proto.graph.as_ref().with_context(|| format!("{}: ONNX file has no graph", path.display()))?;
    Ok(facts_of_graph(graph))
}

/// The Softmax over the class axis that produces output 0, looking through
/// nodes that move values without changing them (an int8 export's
/// quantise/dequantise pair, Identity, Flatten, Reshape, Squeeze). A softmax
/// elsewhere (inside attention) is not one.
pub fn final_softmax(graph: &pb::GraphProto) -> Option<&pb::NodeProto> {
    let mut name = graph.output.first()?.name.as_str();
    loop {
        let node = graph.node.iter().find(|n| n.output.first().is_some_and(|o| o == name))?;
        match node.op_type.as_str() {
            "Softmax" => {
                let axis = node.attribute.iter().find(|a| a.name == "axis").map_or(-1, |a| a.i);
                // Output 0 is checked to be [batch, classes] when loaded, so
                // the class axis is 1 or, counted from the end, -1.
                return matches!(axis, 1 | -1).then_some(node);
            }
            "QuantizeLinear" | "DequantizeLinear" | "Identity" | "Flatten" | "Reshape" | "Squeeze" => {
                name = node.input.first()?.as_str();
            }
            _ => return None,
        }
    }
}

/// Writes out the ONNX defaults tract reads otherwise. ConstantOfShape
/// without `value` is a float32 zero by the standard; tract 0.23.9 makes it
/// f64, and torch.export's Swin-T attention mask then meets f32 in a MatMul
/// ("Impossible to unify F64 with F32").
pub fn write_out_defaults(nodes: &mut [pb::NodeProto]) {
    for node in nodes.iter_mut().filter(|n| n.op_type == "ConstantOfShape" && !n.attribute.iter().any(|a| a.name == "value")) {
        node.attribute.push(crate::grad::a_f32_tensor("value", 0.0));
    }
}

fn read_proto(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    tract_onnx::onnx().proto_model_for_read(&mut bytes.as_slice()).map_err(|e| {
        anyhow::anyhow!("{} is not an ONNX model (protobuf parse failed: {e}); expected a .onnx file exported from PyTorch, TF or similar", path.display())
    })
}

/// Counts weight *elements* (docs/protocol.md item 9), so an int8 model has the
/// same count as its fp32 source, and as the study counts them:
/// `model.parameters()` in PyTorch, where a BatchNorm's running mean and
/// variance are buffers, not parameters. Not counted: a BatchNormalization
/// node's mean and variance inputs, quantisation scales and zero points
/// (they describe weights, they are not weights) and int64 tensors (shapes,
/// axes, indices). A BatchNorm the exporter folded into its convolution
/// cannot be told apart from a convolution bias: such a file counts one
/// bias per output channel where PyTorch counted a scale and a shift
/// (docs/protocol.md, "Parameters").
fn facts_of_graph(graph: &pb::GraphProto) -> OnnxFacts {
    use std::collections::HashSet;
    let mut quant_meta: HashSet<&str> = HashSet::new();
    let mut qdq = false;
    let mut qop = false;
    for node in &graph.node {
        let meta_inputs: &[usize] = match node.op_type.as_str() {
            "QuantizeLinear" | "DequantizeLinear" => {
                qdq = true;
                &[1, 2]
            }
            "QLinearConv" | "QLinearMatMul" => {
                qop = true;
                &[1, 2, 4, 5, 6, 7]
            }
            "ConvInteger" | "MatMulInteger" => {
                qop = true;
                &[2, 3]
            }
            // X, scale, B, input_mean, input_var: the statistics are buffers.
            "BatchNormalization" => &[3, 4],
            _ => &[],
        };
        for &i in meta_inputs {
            if let Some(name) = node.input.get(i) {
                quant_meta.insert(name.as_str());
            }
        }
    }
    let int64 = pb::tensor_proto::DataType::Int64 as i32;
    let parameters = graph
        .initializer
        .iter()
        .filter(|t| t.data_type != int64 && !quant_meta.contains(t.name.as_str()))
        .map(|t| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>())
        .sum();
    let (precision, int8_format) = match (qop, qdq) {
        (true, _) => (Precision::Int8, "qoperator"),
        (false, true) => (Precision::Int8, "qdq"),
        _ => (Precision::Fp32, ""),
    };
    OnnxFacts { parameters, precision, int8_format: int8_format.into(), final_softmax: final_softmax(graph).map(|n| n.name.clone()) }
}

#[cfg(test)]
mod parameter_tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64]) -> pb::TensorProto {
        pb::TensorProto { name: name.into(), dims: dims.to_vec(), data_type: pb::tensor_proto::DataType::Float as i32, ..Default::default() }
    }

    #[test]
    fn batchnorm_statistics_are_buffers_not_parameters() {
        // Conv 8×3×3×3 without bias, then BatchNorm over 8 channels: PyTorch's
        // model.parameters() holds 216 + 8 (weight) + 8 (bias) = 232; the
        // running mean and variance (8 + 8) are buffers.
        let node = |op: &str, inputs: &[&str]| pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![node("Conv", &["x", "w"]), node("BatchNormalization", &["c", "gamma", "beta", "mean", "var"])],
            initializer: vec![tensor("w", &[8, 3, 3, 3]), tensor("gamma", &[8]), tensor("beta", &[8]), tensor("mean", &[8]), tensor("var", &[8])],
            ..Default::default()
        };
        assert_eq!(facts_of_graph(&graph).parameters, 232);
    }
}

#[cfg(test)]
mod softmax_tests {
    use super::*;

    fn node(op: &str, input: &str, output: &str, axis: Option<i64>) -> pb::NodeProto {
        let attribute = axis.map(|i| pb::AttributeProto { name: "axis".into(), r#type: 2, i, ..Default::default() }).into_iter().collect();
        pb::NodeProto { op_type: op.into(), name: output.into(), input: vec![input.into()], output: vec![output.into()], attribute, ..Default::default() }
    }

    fn graph(nodes: Vec<pb::NodeProto>) -> pb::GraphProto {
        let out = nodes.last().unwrap().output[0].clone();
        pb::GraphProto { node: nodes, output: vec![pb::ValueInfoProto { name: out, ..Default::default() }], ..Default::default() }
    }

    #[test]
    fn a_softmax_is_final_behind_qdq_and_shape_ops_but_not_inside_the_graph() {
        let found = |nodes| final_softmax(&graph(nodes)).map(|n| n.name.clone());
        assert_eq!(found(vec![node("Gemm", "x", "logits", None), node("Softmax", "logits", "p", None)]), Some("p".into()));
        assert_eq!(found(vec![node("Softmax", "logits", "p", Some(1)), node("QuantizeLinear", "p", "q", None), node("DequantizeLinear", "q", "dq", None), node("Flatten", "dq", "out", None)]), Some("p".into()));
        // Over another axis, or followed by an op that changes values, it is not the output.
        assert_eq!(found(vec![node("Softmax", "logits", "p", Some(0))]), None);
        assert_eq!(found(vec![node("Softmax", "scores", "attn", Some(-1)), node("MatMul", "attn", "out", None)]), None);
        assert_eq!(found(vec![node("Softmax", "logits", "p", None), node("Log", "p", "out", None)]), None);
    }
}
