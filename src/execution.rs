//! What ran each of the model's multiply-accumulates (issue 23; docs/int8.md,
//! "What ran"). An int8 model's speed and accuracy are those of the int8
//! model only where its convolutions run on integers: a pattern the fuser
//! does not take runs in float between a DequantizeLinear and a
//! QuantizeLinear, silently, and costs more than the fp32 source.
//!
//! Each compute node of the graph tract was given (after `fuse_qdq_convs`)
//! is classified by its ONNX op and, for a QLinearConv, by the op the typed
//! model holds for it; its MACs come from the typed model's shapes, which are
//! concrete because the input fact is fixed before typing.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::protocol::{Execution, Precision};

/// The outputs of every DequantizeLinear in `graph`, taken before fusion:
/// folding turns a weight's dequantisation into an initializer of the same
/// name, and a float op reading it is still a fallback.
pub fn dequantized(graph: &pb::GraphProto) -> HashSet<String> {
    graph.node.iter().filter(|n| n.op_type == "DequantizeLinear" && n.domain.is_empty()).flat_map(|n| n.output.iter().cloned()).collect()
}

/// MACs per image by executor, for `graph` as parsed into `model` (typed for
/// a batch of `batch`). `dequantized` is [`dequantized`] of the file as written.
pub fn account(graph: &pb::GraphProto, dequantized: &HashSet<String>, model: &TypedModel, batch: usize, precision: Precision) -> Result<Execution> {
    let labels: HashMap<&str, OutletId> = model.outlet_labels.iter().map(|(o, l)| (l.as_str(), *o)).collect();
    let inits: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    // A graph input or an initializer is a node of its own name in tract, not always a labelled outlet.
    let outlet = |name: &str| labels.get(name).copied().or_else(|| model.node_by_name(name).ok().map(|n| OutletId::new(n.id, 0)));
    let shape = |node: &pb::NodeProto, name: &str| -> Result<Vec<u64>> {
        if let Some(t) = inits.get(name) {
            return Ok(t.dims.iter().map(|&d| d.max(0) as u64).collect());
        }
        let fact = outlet(name).map(|o| model.outlet_fact(o)).transpose()?;
        match fact.and_then(|f| f.shape.as_concrete().map(|s| s.iter().map(|&d| d as u64).collect())) {
            Some(s) => Ok(s),
            None => bail!("node {:?} ({}): the shape of {name:?} is not known for a fixed input", node.name, node.op_type),
        }
    };
    let mut execution = Execution::default();
    let mut fallback: Vec<(u64, String)> = Vec::new();
    for node in graph.node.iter().filter(|n| n.domain.is_empty()) {
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).map(String::as_str);
        let (x, w) = match node.op_type.as_str() {
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul" | "ConvInteger" | "MatMulInteger" | "QLinearMatMul" => (input(0), input(1)),
            "QLinearConv" => (input(0), input(3)),
            _ => continue,
        };
        let (Some(x), Some(w), Some(y)) = (x, w, node.output.first()) else {
            bail!("node {:?} ({}) lacks an input or its output", node.name, node.op_type)
        };
        let macs = macs(node, &shape(node, x)?, &shape(node, w)?, &shape(node, y)?, batch)
            .with_context(|| format!("node {:?} ({}): cannot count its multiply-accumulates", node.name, node.op_type))?;
        let slot = match node.op_type.as_str() {
            "QLinearConv" => {
                let quba = outlet(y).is_some_and(|o| model.node(o.node).op_is::<crate::int8::QConvOp>());
                if quba {
                    &mut execution.quba_int8
                } else {
                    &mut execution.tract_int8
                }
            }
            "ConvInteger" | "MatMulInteger" | "QLinearMatMul" => &mut execution.tract_int8,
            _ if precision == Precision::Int8 && node.input.iter().any(|i| dequantized.contains(i)) => {
                fallback.push((macs, if node.name.is_empty() { y.clone() } else { node.name.clone() }));
                &mut execution.float_fallback
            }
            _ => &mut execution.float,
        };
        *slot += macs;
    }
    fallback.sort_by_key(|f| std::cmp::Reverse(f.0));
    // Names are the exporter's (`/layer1/layer1.0/conv1/Conv`); a cap keeps a
    // pathological one from crowding the header out of its frame.
    execution.fallback_nodes = fallback.into_iter().take(Execution::NAMED).map(|(_, n)| n.chars().take(120).collect()).collect();
    Ok(execution)
}

/// MACs per image of one node from its first (`x`) and weight (`w`) input
/// and output (`y`) shapes, for a batch of `batch`.
fn macs(node: &pb::NodeProto, x: &[u64], w: &[u64], y: &[u64], batch: usize) -> Result<u64> {
    let all = |s: &[u64]| s.iter().product::<u64>();
    let total = match node.op_type.as_str() {
        // Every output element sums Cin/group × kernel products: W is [Cout, Cin/group, k…].
        "Conv" | "ConvInteger" | "QLinearConv" => all(y) * all(w.get(1..).unwrap_or_default()),
        // Every input element is scattered into Cout/group × kernel outputs: W is [Cin, Cout/group, k…].
        "ConvTranspose" => all(x) * all(w.get(1..).unwrap_or_default()),
        "Gemm" => {
            let trans_a = node.attribute.iter().any(|a| a.name == "transA" && a.i != 0);
            let k = if trans_a { x.first() } else { x.get(1) };
            all(y) * *k.context("Gemm's A is not a matrix")?
        }
        // [..., M, K] × [..., K, N]: each output element is K products.
        _ => all(y) * *x.last().context("MatMul's A has no dimensions")?,
    };
    Ok(total / batch as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str) -> pb::NodeProto {
        pb::NodeProto { op_type: op.into(), name: "n".into(), ..Default::default() }
    }

    #[test]
    fn macs_per_image_by_op() {
        // 3×3 conv, 8→16 channels, 32×32 output, batch 2: 16·32·32 outputs × 8·3·3 products.
        assert_eq!(macs(&node("Conv"), &[2, 8, 32, 32], &[16, 8, 3, 3], &[2, 16, 32, 32], 2).unwrap(), 16 * 32 * 32 * 72);
        // Depthwise: W [32, 1, 3, 3], each output sums 9 products.
        assert_eq!(macs(&node("QLinearConv"), &[1, 32, 8, 8], &[32, 1, 3, 3], &[1, 32, 8, 8], 1).unwrap(), 32 * 64 * 9);
        // ConvTranspose 4→2 channels, 2×2 kernel, 5×5 input: each input element feeds 2·2·2 outputs.
        assert_eq!(macs(&node("ConvTranspose"), &[1, 4, 5, 5], &[4, 2, 2, 2], &[1, 2, 10, 10], 1).unwrap(), 100 * 8);
        // Gemm 4×512 by 512×10 (transB): 10 outputs × 512 per image.
        assert_eq!(macs(&node("Gemm"), &[4, 512], &[10, 512], &[4, 10], 4).unwrap(), 5120);
        // Attention scores: [B·heads, T, d] × [B·heads, d, T].
        assert_eq!(macs(&node("MatMul"), &[2 * 3, 17, 64], &[2 * 3, 64, 17], &[2 * 3, 17, 17], 2).unwrap(), 3 * 17 * 17 * 64);
    }
}
