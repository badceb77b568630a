//! quba's integer path for int8 models (issue 10; docs/int8.md).
//!
//! tract runs a QDQ model as float: it folds the weights' DequantizeLinear
//! into f32 constants and runs every activation through QuantizeLinear →
//! DequantizeLinear around f32 convolutions, so int8 costs more than fp32. Its
//! QLinearConv lowers depthwise convolutions to im2col and a grouped matmul
//! and requantises in separate ops, slower still. This module makes both
//! forms one integer path:
//!
//! 1. `fuse_qdq_convs` rewrites, in the ONNX protobuf, every
//!    `DequantizeLinear(x), DequantizeLinear(w), DequantizeLinear(b) → Conv →
//!    QuantizeLinear` into the standard `QLinearConv` it denotes: the fusion
//!    onnxruntime makes, under the same conditions (constant parameters, an
//!    int32 bias whose scale is `x_scale · w_scale`, a Conv output read by the
//!    QuantizeLinear alone), so the graph's meaning is unchanged;
//! 2. `onnx()` is tract's ONNX front end with `QLinearConv` parsed into quba's
//!    integer convolution (`op`, `kernels`), falling back to tract's own where
//!    a node is outside what the kernels do.
//!
//! Everything else (residual Adds, pooling, the classifier Gemm, attention)
//! stays with tract, between a DequantizeLinear and a QuantizeLinear.

mod depthwise;
mod gemm;
pub mod kernels;
mod op;
mod simd;

use std::collections::HashMap;

use tract_onnx::pb;

pub use op::QConvOp;

/// tract's ONNX front end, with `QLinearConv` parsed into the integer kernels.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("QLinearConv", op::qlinear_conv);
    onnx
}

/// Rewrites each fusable QDQ convolution into `QLinearConv`; returns how many.
/// Dequantisations left without a reader are removed.
pub fn fuse_qdq_convs(proto: &mut pb::ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else { return 0 };
    let mut fused: Vec<(usize, usize, pb::NodeProto)> = Vec::new();
    {
        let nodes = &graph.node;
        let inits: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let producer: HashMap<&str, usize> =
            nodes.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for input in &n.input {
                readers.entry(input.as_str()).or_default().push(i);
            }
        }
        let graph_outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let dequantize = |name: &str| -> Option<&pb::NodeProto> {
            let n = &nodes[*producer.get(name)?];
            (n.op_type == "DequantizeLinear" && n.domain.is_empty() && n.input.len() == 3).then_some(n)
        };
        for (ci, conv) in nodes.iter().enumerate() {
            if conv.op_type != "Conv" || !conv.domain.is_empty() || conv.input.len() < 2 || conv.output.len() != 1 {
                continue;
            }
            let (Some(dx), Some(dw)) = (dequantize(&conv.input[0]), dequantize(&conv.input[1])) else { continue };
            let y = conv.output[0].as_str();
            let Some(&[qi]) = readers.get(y).map(Vec::as_slice) else { continue };
            let q = &nodes[qi];
            if q.op_type != "QuantizeLinear" || !q.domain.is_empty() || q.input.len() != 3 || graph_outputs.contains(&y) {
                continue;
            }
            let floats = |name: &str| inits.get(name).and_then(|t| floats(t));
            let (Some(sx), Some(sw)) = (floats(&dx.input[1]), floats(&dw.input[1])) else { continue };
            // QLinearConv's weight scale runs along output channels: DequantizeLinear's axis must be 0.
            if sx.len() != 1 || !inits.contains_key(dw.input[0].as_str()) || (sw.len() > 1 && axis(dw) != 0) {
                continue;
            }
            let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
                None => None,
                Some(b) => {
                    let Some(db) = dequantize(b) else { continue };
                    let Some(bq) = inits.get(db.input[0].as_str()) else { continue };
                    let zero = inits.get(db.input[2].as_str()).and_then(|t| ints(t)).is_some_and(|z| z.iter().all(|&v| v == 0));
                    let Some(sb) = floats(&db.input[1]) else { continue };
                    // The bias is added to the integer accumulator only if its
                    // scale is exactly the accumulator's.
                    let matches = sb.len() == sw.len() && sb.iter().zip(&sw).all(|(&b, &w)| b == sx[0] * w);
                    if bq.data_type != pb::tensor_proto::DataType::Int32 as i32 || !zero || !matches {
                        continue;
                    }
                    Some(db.input[0].clone())
                }
            };
            let mut input = vec![
                dx.input[0].clone(),
                dx.input[1].clone(),
                dx.input[2].clone(),
                dw.input[0].clone(),
                dw.input[1].clone(),
                dw.input[2].clone(),
                q.input[1].clone(),
                q.input[2].clone(),
            ];
            input.extend(bias);
            let node = pb::NodeProto {
                input,
                output: q.output.clone(),
                name: conv.name.clone(),
                op_type: "QLinearConv".into(),
                domain: String::new(),
                attribute: conv.attribute.clone(),
                doc_string: String::new(),
            };
            fused.push((ci, qi, node));
        }
    }
    let count = fused.len();
    let mut drop = vec![false; graph.node.len()];
    for (ci, qi, node) in fused {
        graph.node[ci] = node;
        drop[qi] = true;
    }
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    remove_unread_dequantizations(graph);
    fold_constant_dequantizations(graph);
    count
}

/// Replaces each DequantizeLinear of constants (the weights of a Gemm or
/// MatMul left in float) by the f32 initializer it computes, `(q − zp) ·
/// scale` as the operator defines it. tract would otherwise cast, scale and
/// repack those weights on every forward pass: 3.7 ms of EfficientNet-Lite0's
/// 37 for its 1.28 M classifier weights.
fn fold_constant_dequantizations(graph: &mut pb::GraphProto) {
    let mut folded: Vec<pb::TensorProto> = Vec::new();
    {
        let inits: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        for n in &graph.node {
            if n.op_type != "DequantizeLinear" || !n.domain.is_empty() || n.input.len() != 3 || n.output.len() != 1 {
                continue;
            }
            let (Some(q), Some(scale), Some(zp)) = (inits.get(n.input[0].as_str()), inits.get(n.input[1].as_str()).and_then(|t| floats(t)), inits.get(n.input[2].as_str()).and_then(|t| ints(t))) else {
                continue;
            };
            let Some(codes) = ints(q) else { continue };
            let (rank, ax) = (q.dims.len() as i64, axis(n));
            let ax = if ax < 0 { ax + rank } else { ax };
            if scale.len() != zp.len() || (scale.len() > 1 && (ax < 0 || ax >= rank || q.dims[ax as usize] as usize != scale.len())) {
                continue;
            }
            // Elements between consecutive steps along the axis.
            let inner: i64 = if scale.len() > 1 { q.dims[ax as usize + 1..].iter().product() } else { 1 };
            let channels = scale.len() as i64;
            let values: Vec<f32> = codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let ch = ((i as i64 / inner) % channels) as usize;
                    (c - zp[ch]) as f32 * scale[ch]
                })
                .collect();
            folded.push(pb::TensorProto {
                dims: q.dims.clone(),
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: values,
                name: n.output[0].clone(),
                ..Default::default()
            });
        }
    }
    if folded.is_empty() {
        return;
    }
    let names: std::collections::HashSet<String> = folded.iter().map(|t| t.name.clone()).collect();
    graph.node.retain(|n| !n.output.iter().any(|o| names.contains(o)));
    graph.initializer.extend(folded);
}

fn remove_unread_dequantizations(graph: &mut pb::GraphProto) {
    loop {
        let mut read: std::collections::HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        for n in &graph.node {
            read.extend(n.input.iter().cloned());
        }
        let before = graph.node.len();
        graph.node.retain(|n| n.op_type != "DequantizeLinear" || n.output.iter().any(|o| read.contains(o)));
        if graph.node.len() == before {
            return;
        }
    }
}

fn axis(node: &pb::NodeProto) -> i64 {
    node.attribute.iter().find(|a| a.name == "axis").map_or(1, |a| a.i)
}

fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    Some(t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn ints(t: &pb::TensorProto) -> Option<Vec<i64>> {
    use pb::tensor_proto::DataType;
    let width = match DataType::try_from(t.data_type).ok()? {
        DataType::Int8 | DataType::Uint8 => 1,
        DataType::Int32 => 4,
        _ => return None,
    };
    if !t.int32_data.is_empty() {
        return Some(t.int32_data.iter().map(|&v| v as i64).collect());
    }
    Some(
        t.raw_data
            .chunks_exact(width)
            .map(|c| match (width, t.data_type == DataType::Int8 as i32) {
                (1, true) => c[0] as i8 as i64,
                (1, false) => c[0] as i64,
                _ => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            })
            .collect(),
    )
}
