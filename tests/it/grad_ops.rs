//! One finite-difference check per differentiable op: a small graph (the op
//! on a random input, then Flatten + Gemm to 4 logits) is differentiated by
//! quba's gradient builder, run by tract, and every input coordinate's
//! gradient is compared with a central difference of the summed
//! cross-entropy computed from the same graph's logits. Inputs keep a margin
//! from kinks (ReLU 0, clip bounds, max-pool ties); ties are tested
//! separately against torch's conventions.

use quba_edge::grad::{a_float, a_int, a_ints, a_str, f32_tensor, i64_tensor, GradModel};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{self, tensor_proto::DataType, type_proto, AttributeProto, NodeProto};

const X: [i64; 4] = [2, 3, 5, 5];
const K: i64 = 4;

#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<pb::TensorProto>,
    opset: i64,
}

impl Graph {
    fn new() -> Graph {
        Graph { opset: 17, ..Default::default() }
    }

    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = format!("t{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn floats(&mut self, dims: &[i64], v: Vec<f32>) -> String {
        let name = format!("c{}", self.inits.len());
        self.inits.push(f32_tensor(&name, dims, &v));
        name
    }

    fn random(&mut self, dims: &[i64], rng: &mut ChaCha8Rng) -> String {
        let n = dims.iter().product::<i64>() as usize;
        self.floats(dims, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
    }

    fn ints(&mut self, v: &[i64]) -> String {
        let name = format!("c{}", self.inits.len());
        self.inits.push(i64_tensor(&name, &[v.len() as i64], v));
        name
    }

    fn int_scalar(&mut self, v: i64) -> String {
        let name = format!("c{}", self.inits.len());
        self.inits.push(i64_tensor(&name, &[], &[v]));
        name
    }

    /// `y` → Flatten → Gemm with `features` inputs → 4 logits; the model.
    fn classifier(mut self, y: &str, features: i64, rng: &mut ChaCha8Rng) -> pb::ModelProto {
        let f = self.op("Flatten", &[y], vec![a_int("axis", 1)]);
        let w = self.random(&[features, K], rng);
        let b = self.random(&[K], rng);
        self.op("Gemm", &[&f, &w, &b], vec![]);
        self.nodes.last_mut().unwrap().output[0] = "logits".into();
        model(self, &X, "logits", K)
    }
}

fn value_info(name: &str, dims: &[pb::tensor_shape_proto::Dimension]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dim(v: Option<i64>) -> pb::tensor_shape_proto::Dimension {
    use pb::tensor_shape_proto::dimension::Value;
    pb::tensor_shape_proto::Dimension {
        value: Some(v.map(Value::DimValue).unwrap_or_else(|| Value::DimParam("N".into()))),
        ..Default::default()
    }
}

fn model(g: Graph, input: &[i64], out: &str, k: i64) -> pb::ModelProto {
    let mut in_dims = vec![dim(None)];
    in_dims.extend(input[1..].iter().map(|&d| dim(Some(d))));
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: g.opset }],
        graph: Some(pb::GraphProto {
            name: "t".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![value_info("x", &in_dims)],
            output: vec![value_info(out, &[dim(None), dim(Some(k))])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ce_sum(logits: &[f32], labels: &[i64], k: usize) -> f64 {
    logits
        .chunks(k)
        .zip(labels)
        .map(|(z, &l)| {
            let m = z.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
            let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            lse - z[l as usize] as f64
        })
        .sum()
}

/// Random input with every value at least `margin` away from each of `kinks`.
fn input(rng: &mut ChaCha8Rng, kinks: &[f32], margin: f32) -> Vec<f32> {
    let n = X.iter().product::<i64>() as usize;
    (0..n)
        .map(|_| loop {
            let v = rng.gen_range(-2.0f32..2.0);
            if kinks.iter().all(|k| (v - k).abs() >= margin) {
                break v;
            }
        })
        .collect()
}

fn check_fd(m: &pb::ModelProto, x: &[f32]) {
    let gm = GradModel::from_proto(m, X[0] as usize).expect("gradient graph");
    let labels = [1i64, 3];
    let k = gm.num_classes();
    let (_, g) = gm.logits_and_grad(x, &labels).unwrap();
    let h = 1e-3f32;
    let scale = g.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
    assert!(g.iter().any(|v| *v != 0.0), "gradient is identically zero");
    let mut worst = (0.0f32, 0usize, 0.0f32, 0.0f32);
    for i in 0..x.len() {
        let mut xp = x.to_vec();
        xp[i] += h;
        let lp = ce_sum(&gm.logits_and_grad(&xp, &labels).unwrap().0, &labels, k);
        xp[i] -= 2.0 * h;
        let lm = ce_sum(&gm.logits_and_grad(&xp, &labels).unwrap().0, &labels, k);
        let fd = ((lp - lm) / (2.0 * h as f64)) as f32;
        let err = (fd - g[i]).abs() / scale;
        if err > worst.0 {
            worst = (err, i, fd, g[i]);
        }
    }
    assert!(
        worst.0 < 5e-3,
        "coordinate {}: finite difference {} vs gradient {} (error {:.2e} of max |g|)",
        worst.1,
        worst.2,
        worst.3,
        worst.0
    );
}

/// Builds `op(x)` with `build`, which returns the output and its feature count.
fn fd_case(seed: u64, kinks: &[f32], build: impl FnOnce(&mut Graph, &mut ChaCha8Rng) -> (String, i64)) {
    fd_case_opset(seed, 17, kinks, build)
}

fn fd_case_opset(
    seed: u64,
    opset: i64,
    kinks: &[f32],
    build: impl FnOnce(&mut Graph, &mut ChaCha8Rng) -> (String, i64),
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new();
    g.opset = opset;
    let (y, features) = build(&mut g, &mut rng);
    let m = g.classifier(&y, features, &mut rng);
    let x = input(&mut rng, kinks, 0.02);
    check_fd(&m, &x);
}

fn unary(op: &str, attrs: Vec<AttributeProto>, kinks: &[f32]) {
    fd_case(1, kinks, |g, _| (g.op(op, &["x"], attrs), 75));
}

#[test]
fn fd_relu() {
    unary("Relu", vec![], &[0.0]);
}
#[test]
fn fd_sigmoid() {
    unary("Sigmoid", vec![], &[]);
}
#[test]
fn fd_tanh() {
    unary("Tanh", vec![], &[]);
}
#[test]
fn fd_erf() {
    unary("Erf", vec![], &[]);
}
#[test]
fn fd_exp() {
    unary("Exp", vec![], &[]);
}
#[test]
fn fd_neg() {
    unary("Neg", vec![], &[]);
}
#[test]
fn fd_identity() {
    unary("Identity", vec![], &[]);
}
#[test]
fn fd_hard_sigmoid() {
    // alpha 0.4, beta 0.5: kinks at x = -1.25 and 1.25.
    unary("HardSigmoid", vec![a_float("alpha", 0.4), a_float("beta", 0.5)], &[-1.25, 1.25]);
}
#[test]
fn fd_hard_swish() {
    fd_case(2, &[-1.5, 1.5], |g, _| {
        // Scaled so that inputs span both kinks at ±3.
        let k = g.floats(&[], vec![2.0]);
        let s = g.op("Mul", &["x", &k], vec![]);
        (g.op("HardSwish", &[&s], vec![]), 75)
    });
}
#[test]
fn fd_clip_relu6() {
    fd_case(3, &[0.0, 1.5], |g, _| {
        let k = g.floats(&[], vec![4.0]);
        let s = g.op("Mul", &["x", &k], vec![]);
        let (lo, hi) = (g.floats(&[], vec![0.0]), g.floats(&[], vec![6.0]));
        (g.op("Clip", &[&s, &lo, &hi], vec![]), 75)
    });
}
#[test]
fn fd_clip_max_only() {
    fd_case(4, &[0.5], |g, _| {
        let hi = g.floats(&[], vec![0.5]);
        (g.op("Clip", &["x", "", &hi], vec![]), 75)
    });
}
#[test]
fn fd_add_sub_broadcast_both_active() {
    fd_case(5, &[], |g, _| {
        let m = g.op("ReduceMean", &["x"], vec![a_ints("axes", &[1]), a_int("keepdims", 1)]);
        let a = g.op("Add", &["x", &m], vec![]);
        let m2 = g.op("Mul", &[&a, &a], vec![]);
        (g.op("Sub", &[&m, &m2], vec![]), 75)
    });
}
#[test]
fn fd_mul_broadcast_constant() {
    fd_case(6, &[], |g, r| {
        let c = g.random(&[3, 1, 5], r);
        (g.op("Mul", &[&c, "x"], vec![]), 75)
    });
}
#[test]
fn fd_div_both_active() {
    fd_case(7, &[], |g, _| {
        let sq = g.op("Mul", &["x", "x"], vec![]);
        let one = g.floats(&[], vec![1.0]);
        let d = g.op("Add", &[&sq, &one], vec![]);
        let c = g.floats(&[], vec![3.0]);
        let q = g.op("Div", &["x", &d], vec![]);
        (g.op("Div", &[&q, &c], vec![]), 75)
    });
}
#[test]
fn fd_conv_stride_pad_bias() {
    fd_case(8, &[], |g, r| {
        let (w, b) = (g.random(&[4, 3, 3, 3], r), g.random(&[4], r));
        let attrs = vec![a_ints("strides", &[2, 2]), a_ints("pads", &[1, 1, 1, 1]), a_ints("kernel_shape", &[3, 3])];
        (g.op("Conv", &["x", &w, &b], attrs), 4 * 3 * 3)
    });
}
#[test]
fn fd_conv_asymmetric_pads_dilation() {
    fd_case(9, &[], |g, r| {
        let w = g.random(&[2, 3, 2, 3], r);
        let attrs = vec![a_ints("dilations", &[2, 1]), a_ints("pads", &[0, 1, 2, 0]), a_ints("strides", &[1, 2])];
        // H: 5+0+2-3+1 = 5; W: (5+1+0-3)/2+1 = 2.
        (g.op("Conv", &["x", &w], attrs), 2 * 5 * 2)
    });
}
#[test]
fn fd_conv_depthwise() {
    fd_case(10, &[], |g, r| {
        let w = g.random(&[3, 1, 3, 3], r);
        let attrs = vec![a_int("group", 3), a_ints("pads", &[1, 1, 1, 1]), a_ints("strides", &[2, 2])];
        (g.op("Conv", &["x", &w], attrs), 3 * 3 * 3)
    });
}
#[test]
fn fd_conv_same_upper() {
    fd_case(11, &[], |g, r| {
        let w = g.random(&[2, 3, 3, 3], r);
        let attrs = vec![a_str("auto_pad", "SAME_UPPER"), a_ints("strides", &[2, 2])];
        (g.op("Conv", &["x", &w], attrs), 2 * 3 * 3)
    });
}
#[test]
fn fd_maxpool_overlapping() {
    // Distinct input values (a shuffled grid 0.05 apart) keep every window's
    // maximum unique under the ±1e-3 probe.
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut g = Graph::new();
    let attrs = vec![a_ints("kernel_shape", &[3, 3]), a_ints("strides", &[2, 2]), a_ints("pads", &[1, 1, 1, 1])];
    let y = g.op("MaxPool", &["x"], attrs);
    let m = g.classifier(&y, 3 * 3 * 3, &mut rng);
    let n = X.iter().product::<i64>() as usize;
    let mut x: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - 3.0).collect();
    for i in (1..n).rev() {
        x.swap(i, rng.gen_range(0..=i));
    }
    check_fd(&m, &x);
}
#[test]
fn maxpool_gradient_of_an_opset13_model_imports_opset16() {
    // ScatterElements' reduction, which the backward uses, needs opset 16.
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let mut g = Graph::new();
    g.opset = 13;
    let y = g.op("MaxPool", &["x"], vec![a_ints("kernel_shape", &[3, 3]), a_ints("strides", &[2, 2])]);
    let m = g.classifier(&y, 3 * 2 * 2, &mut rng);
    let grad = quba_edge::grad::gradient_graph(&m).unwrap();
    assert_eq!(grad.opset_import.iter().map(|o| o.version).collect::<Vec<_>>(), vec![16]);
    let x = input(&mut rng, &[], 0.02);
    GradModel::from_proto(&m, 2).unwrap().logits_and_grad(&x, &[0, 1]).unwrap();
}
#[test]
fn fd_average_pool_excluding_pad() {
    fd_case(13, &[], |g, _| {
        let attrs = vec![a_ints("kernel_shape", &[3, 3]), a_ints("strides", &[2, 2]), a_ints("pads", &[1, 1, 1, 1])];
        (g.op("AveragePool", &["x"], attrs), 3 * 3 * 3)
    });
}
#[test]
fn fd_average_pool_including_pad() {
    fd_case(14, &[], |g, _| {
        let attrs = vec![a_ints("kernel_shape", &[2, 3]), a_ints("pads", &[0, 1, 1, 0]), a_int("count_include_pad", 1)];
        // H: 5+1-2+1 = 5; W: 5+1-3+1 = 4.
        (g.op("AveragePool", &["x"], attrs), 3 * 5 * 4)
    });
}
#[test]
fn fd_global_average_pool() {
    fd_case(15, &[], |g, _| (g.op("GlobalAveragePool", &["x"], vec![]), 3));
}
#[test]
fn fd_reduce_mean_axes_attribute() {
    fd_case(16, &[], |g, _| (g.op("ReduceMean", &["x"], vec![a_ints("axes", &[2, 3]), a_int("keepdims", 0)]), 3));
}
#[test]
fn fd_reduce_mean_axes_input_opset18() {
    fd_case_opset(17, 18, &[], |g, _| {
        let axes = g.ints(&[-1]);
        (g.op("ReduceMean", &["x", &axes], vec![a_int("keepdims", 1)]), 15)
    });
}
#[test]
fn fd_reduce_sum() {
    fd_case(18, &[], |g, _| {
        let axes = g.ints(&[1]);
        (g.op("ReduceSum", &["x", &axes], vec![a_int("keepdims", 0)]), 25)
    });
}
#[test]
fn fd_gemm_transposes_alpha_beta() {
    for (ta, tb) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        fd_case(19, &[], |g, r| {
            let f = g.op("Flatten", &["x"], vec![]);
            let a = if ta == 1 { g.op("Transpose", &[&f], vec![a_ints("perm", &[1, 0])]) } else { f };
            let b = g.random(if tb == 1 { &[6, 75] } else { &[75, 6] }, r);
            let c = g.random(&[6], r);
            let attrs = vec![a_int("transA", ta), a_int("transB", tb), a_float("alpha", 0.7), a_float("beta", 1.3)];
            (g.op("Gemm", &[&a, &b, &c], attrs), 6)
        });
    }
}
#[test]
fn fd_gemm_both_operands_active() {
    fd_case(20, &[], |g, _| {
        let f = g.op("Flatten", &["x"], vec![]);
        // [2, 75] x [75, 2] (transB of itself): both operands depend on x.
        (g.op("Gemm", &[&f, &f], vec![a_int("transB", 1)]), 2)
    });
}
#[test]
fn fd_matmul_batched_both_active() {
    fd_case(21, &[], |g, _| {
        let t = g.op("Transpose", &["x"], vec![a_ints("perm", &[0, 1, 3, 2])]);
        (g.op("MatMul", &["x", &t], vec![]), 75)
    });
}
#[test]
fn fd_matmul_broadcast_weight() {
    fd_case(22, &[], |g, r| {
        let w = g.random(&[5, 4], r);
        (g.op("MatMul", &["x", &w], vec![]), 60)
    });
}
#[test]
fn fd_matmul_broadcast_batch_of_activations() {
    fd_case(23, &[], |g, _| {
        // [2,3,5,5] x [2,1,5,5]: the second operand is broadcast over channels.
        let m = g.op("ReduceMean", &["x"], vec![a_ints("axes", &[1]), a_int("keepdims", 1)]);
        (g.op("MatMul", &["x", &m], vec![]), 75)
    });
}
#[test]
fn fd_flatten_reshape_transpose() {
    fd_case(24, &[], |g, _| {
        let shape = g.ints(&[0, -1, 5]);
        let r = g.op("Reshape", &["x", &shape], vec![]);
        let t = g.op("Transpose", &[&r], vec![a_ints("perm", &[0, 2, 1])]);
        let u = g.op("Flatten", &[&t], vec![a_int("axis", 2)]);
        let back = g.ints(&[-1, 5, 15]);
        (g.op("Reshape", &[&u, &back], vec![]), 75)
    });
}
#[test]
fn fd_squeeze_unsqueeze() {
    fd_case(25, &[], |g, _| {
        let axes = g.ints(&[2]);
        let u = g.op("Unsqueeze", &["x", &axes], vec![]);
        let e = g.op("Exp", &[&u], vec![]);
        let s = g.op("Squeeze", &[&e, &axes], vec![]);
        (s, 75)
    });
}
#[test]
fn fd_concat() {
    fd_case(26, &[], |g, r| {
        let c = g.random(&[2, 1, 5, 5], r);
        let s = g.op("Sigmoid", &["x"], vec![]);
        (g.op("Concat", &["x", &c, &s], vec![a_int("axis", 1)]), 7 * 25)
    });
}
#[test]
fn fd_gather_scalar_index() {
    fd_case(27, &[], |g, _| {
        let i = g.int_scalar(-2);
        let a = g.op("Gather", &["x", &i], vec![a_int("axis", 1)]);
        let j = g.int_scalar(4);
        let b = g.op("Gather", &["x", &j], vec![a_int("axis", 3)]);
        let (ax3, ax1) = (g.ints(&[3]), g.ints(&[1]));
        let bt = g.op("Unsqueeze", &[&b, &ax3], vec![]);
        let a4 = g.op("Unsqueeze", &[&a, &ax1], vec![]);
        (g.op("Mul", &[&a4, &bt], vec![]), 3 * 25)
    });
}
#[test]
fn fd_gather_index_tensor_with_repeats() {
    fd_case(48, &[], |g, _| {
        // Repeated and negative indices: their gradients add up.
        let i = g.ints(&[4, -1, 0, 2, 0, 1]);
        g.inits.last_mut().unwrap().dims = vec![2, 3];
        (g.op("Gather", &["x", &i], vec![a_int("axis", 2)]), 3 * 6 * 5)
    });
}
#[test]
fn fd_softmax() {
    fd_case(28, &[], |g, _| (g.op("Softmax", &["x"], vec![a_int("axis", 1)]), 75));
}
#[test]
fn fd_log_softmax() {
    fd_case(29, &[], |g, _| (g.op("LogSoftmax", &["x"], vec![a_int("axis", -1)]), 75));
}
#[test]
fn fd_layer_normalization() {
    fd_case(30, &[], |g, r| {
        let (s, b) = (g.random(&[5, 5], r), g.random(&[5, 5], r));
        (g.op("LayerNormalization", &["x", &s, &b], vec![a_int("axis", -2), a_float("epsilon", 1e-5)]), 75)
    });
}
#[test]
fn fd_batch_normalization() {
    fd_case(31, &[], |g, r| {
        let (s, b, m) = (g.random(&[3], r), g.random(&[3], r), g.random(&[3], r));
        let v = g.floats(&[3], vec![0.5, 1.5, 2.0]);
        (g.op("BatchNormalization", &["x", &s, &b, &m, &v], vec![]), 75)
    });
}
#[test]
fn fd_gelu_subgraph_as_exported() {
    // torch's exact GELU export: x · 0.5 · (1 + erf(x / √2)).
    fd_case(32, &[], |g, _| {
        let r2 = g.floats(&[], vec![std::f32::consts::SQRT_2]);
        let d = g.op("Div", &["x", &r2], vec![]);
        let e = g.op("Erf", &[&d], vec![]);
        let one = g.floats(&[], vec![1.0]);
        let a = g.op("Add", &[&e, &one], vec![]);
        let half = g.floats(&[], vec![0.5]);
        let h = g.op("Mul", &[&half, &a], vec![]);
        (g.op("Mul", &["x", &h], vec![]), 75)
    });
}
// Negative pads (crops) cannot be run here: tract 0.23.9 casts Pad amounts
// to usize and panics in the forward itself. The rule's crop branch was
// checked against onnxruntime with finite differences instead (docs/gradients.md).
#[test]
fn fd_pad_constant_asymmetric() {
    fd_case(33, &[], |g, _| {
        // N: 0/0, C: 1/0, H: 0/2, W: 2/1 → [2, 4, 7, 8].
        let pads = g.ints(&[0, 1, 0, 2, 0, 0, 2, 1]);
        let v = g.floats(&[], vec![0.3]);
        (g.op("Pad", &["x", &pads, &v], vec![a_str("mode", "constant")]), 4 * 7 * 8)
    });
}
#[test]
fn fd_pad_axes_input_opset18() {
    fd_case_opset(34, 18, &[], |g, _| {
        let (pads, axes) = (g.ints(&[2, 1]), g.ints(&[-1]));
        (g.op("Pad", &["x", &pads, "", &axes], vec![]), 3 * 5 * 8)
    });
}
#[test]
fn fd_slice_negative_steps_axes_and_clamped_bounds() {
    fd_case(35, &[], |g, _| {
        // W from 4 down to 0 by 2 (end −100 clamps to before 0); C from 2 down to 1 (start 10 clamps to 2).
        let (s, e) = (g.ints(&[-1, 10]), g.ints(&[-100, 0]));
        let (a, st) = (g.ints(&[-1, 1]), g.ints(&[-2, -1]));
        (g.op("Slice", &["x", &s, &e, &a, &st], vec![]), 2 * 5 * 3)
    });
}
#[test]
fn fd_slice_strided_two_axes_end_past_the_edge() {
    fd_case(36, &[], |g, _| {
        // H: 1, 3 (end i64::MAX); W: 0, 3 (step 3).
        let (s, e) = (g.ints(&[1, 0]), g.ints(&[i64::MAX, 5]));
        let (a, st) = (g.ints(&[2, 3]), g.ints(&[2, 3]));
        (g.op("Slice", &["x", &s, &e, &a, &st], vec![]), 3 * 2 * 2)
    });
}
#[test]
fn fd_roll_as_slice_concat() {
    // torch.roll(x, 2, -1) as the tracer exports it.
    fd_case(37, &[], |g, _| {
        let (s1, e1, a) = (g.ints(&[-2]), g.ints(&[i64::MAX]), g.ints(&[3]));
        let tail = g.op("Slice", &["x", &s1, &e1, &a], vec![]);
        let (s2, e2) = (g.ints(&[0]), g.ints(&[-2]));
        let head = g.op("Slice", &["x", &s2, &e2, &a], vec![]);
        (g.op("Concat", &[&tail, &head], vec![a_int("axis", 3)]), 75)
    });
}
#[test]
fn fd_split_sizes_and_an_unused_output() {
    fd_case(38, &[], |g, _| {
        let sizes = g.ints(&[1, 2]);
        let c = g.op("Split", &["x", &sizes], vec![a_int("axis", 1)]);
        g.nodes.last_mut().unwrap().output.push("c_rest".into());
        let e = g.op("Exp", &["c_rest"], vec![]);
        let both = g.op("Concat", &[&e, &c], vec![a_int("axis", 1)]);
        let sizes = g.ints(&[2, 3]);
        g.op("Split", &[&both, &sizes], vec![a_int("axis", 2)]);
        g.nodes.last_mut().unwrap().output.push("h_rest".into());
        (g.op("Sigmoid", &["h_rest"], vec![]), 3 * 3 * 5)
    });
}
#[test]
fn fd_split_num_outputs_opset18() {
    fd_case_opset(39, 18, &[], |g, _| {
        // 5 into two: 3 and 2.
        let a = g.op("Split", &["x"], vec![a_int("axis", -1), a_int("num_outputs", 2)]);
        g.nodes.last_mut().unwrap().output.push("w_rest".into());
        let b = g.op("Tanh", &["w_rest"], vec![]);
        let m = g.op("ReduceMean", &[&a], vec![a_int("keepdims", 1)]);
        let axes = g.ints(&[-1]);
        g.nodes.last_mut().unwrap().input.push(axes);
        (g.op("Mul", &[&b, &m], vec![]), 3 * 5 * 2)
    });
}
#[test]
fn fd_expand_to_a_shape_read_from_the_input() {
    fd_case(42, &[], |g, _| {
        let m = g.op("ReduceMean", &["x"], vec![a_ints("axes", &[1]), a_int("keepdims", 1)]);
        let shape = g.op("Shape", &["x"], vec![]);
        let e = g.op("Expand", &[&m, &shape], vec![]);
        (g.op("Mul", &[&e, "x"], vec![]), 75)
    });
}
#[test]
fn fd_where_constant_condition_broadcast_branches() {
    fd_case(43, &[], |g, r| {
        let c = g.random(&[1, 1, 5, 5], r);
        let zero = g.floats(&[], vec![0.0]);
        let cond = g.op("Less", &[&c, &zero], vec![]);
        let m = g.op("ReduceMean", &["x"], vec![a_ints("axes", &[1]), a_int("keepdims", 1)]);
        let e = g.op("Exp", &["x"], vec![]);
        (g.op("Where", &[&cond, &e, &m], vec![]), 75)
    });
}
#[test]
fn fd_dynamic_shape_arithmetic_with_a_symbolic_batch() {
    // As ViT's export: the reshape target and a class token's expand(n, -1, -1)
    // are computed from Shape(x) at run time.
    fd_case(44, &[], |g, r| {
        let shape = g.op("Shape", &["x"], vec![]);
        let (i0, i1) = (g.int_scalar(0), g.int_scalar(1));
        let n = g.op("Gather", &[&shape, &i0], vec![a_int("axis", 0)]);
        let c = g.op("Gather", &[&shape, &i1], vec![a_int("axis", 0)]);
        let five = g.int_scalar(5);
        let c5 = g.op("Mul", &[&c, &five], vec![]);
        let axis0 = g.ints(&[0]);
        let (n1, c51) = (g.op("Unsqueeze", &[&n, &axis0], vec![]), g.op("Unsqueeze", &[&c5, &axis0], vec![]));
        let minus = g.ints(&[-1]);
        let target = g.op("Concat", &[&n1, &c51, &minus], vec![a_int("axis", 0)]);
        let seq = g.op("Reshape", &["x", &target], vec![]);
        let tok = g.random(&[1, 1, 5], r);
        let want = g.op("Concat", &[&n1, &minus, &minus], vec![a_int("axis", 0)]);
        let shape3 = g.ints(&[3]);
        let neg = g.op("ConstantOfShape", &[&shape3], vec![]);
        g.nodes.last_mut().unwrap().attribute.push(AttributeProto {
            name: "value".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(i64_tensor("", &[1], &[-1])),
            ..Default::default()
        });
        let is_neg = g.op("Equal", &[&want, &neg], vec![]);
        let ones = g.ints(&[1, 1, 1]);
        let sizes = g.op("Where", &[&is_neg, &ones, &want], vec![]);
        let toks = g.op("Expand", &[&tok, &sizes], vec![]);
        (g.op("Concat", &[&toks, &seq], vec![a_int("axis", 1)]), 16 * 5)
    });
}
#[test]
fn constant_of_shape_without_value_is_float32_zero() {
    // ONNX's default; tract alone would make it f64 and fail to type the Add.
    fd_case(49, &[], |g, _| {
        let shape = g.ints(&[1, 1, 5, 5]);
        let z = g.op("ConstantOfShape", &[&shape], vec![]);
        let e = g.op("Exp", &["x"], vec![]);
        (g.op("Add", &[&e, &z], vec![]), 75)
    });
}
#[test]
fn fd_sqrt_pow() {
    fd_case(45, &[], |g, _| {
        let sq = g.op("Mul", &["x", "x"], vec![]);
        let one = g.floats(&[], vec![1.0]);
        let a = g.op("Add", &[&sq, &one], vec![]);
        let r = g.op("Sqrt", &[&a], vec![]);
        let three = g.floats(&[], vec![3.0]);
        let p = g.op("Pow", &["x", &three], vec![]);
        let half = g.floats(&[1, 1, 1, 5], vec![-0.5, 0.5, 1.5, 2.0, -1.0]);
        let q = g.op("Pow", &[&a, &half], vec![]);
        let s = g.op("Add", &[&r, &p], vec![]);
        (g.op("Add", &[&s, &q], vec![]), 75)
    });
}
#[test]
fn fd_einsum_both_operands_and_a_weight() {
    fd_case(46, &[], |g, r| {
        let t = g.op("Sigmoid", &["x"], vec![]);
        let dot = g.op("Einsum", &["x", &t], vec![a_str("equation", "B C I D, B C J D -> B C I J")]);
        let w = g.random(&[5, 2], r);
        (g.op("Einsum", &[&dot, &w], vec![a_str("equation", "bcij,jk->bcik")]), 3 * 5 * 2)
    });
}
#[test]
fn fd_cast_to_float() {
    unary("Cast", vec![a_int("to", DataType::Float as i64)], &[]);
}

/// Gradient and softmax − onehot for the model `Flatten(op(x))` (logits = op output).
fn direct(op: impl FnOnce(&mut Graph) -> String, k: i64, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut g = Graph::new();
    let y = op(&mut g);
    g.op("Flatten", &[&y], vec![]);
    g.nodes.last_mut().unwrap().output[0] = "logits".into();
    let m = model(g, &X, "logits", k);
    let gm = GradModel::from_proto(&m, 2).unwrap();
    let labels = [0i64, 5];
    let (logits, grad) = gm.logits_and_grad(x, &labels).unwrap();
    let mut dy = vec![0f32; logits.len()];
    for (b, z) in logits.chunks(k as usize).enumerate() {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let s: f32 = z.iter().map(|v| (v - m).exp()).sum();
        for j in 0..k as usize {
            dy[b * k as usize + j] = (z[j] - m).exp() / s - if j as i64 == labels[b] { 1.0 } else { 0.0 };
        }
    }
    (grad, dy)
}

#[test]
fn relu_tie_at_zero_has_zero_gradient() {
    let x: Vec<f32> = (0..150).map(|i| [0.0, 0.7, -0.3][i % 3]).collect();
    let (g, dy) = direct(|g| g.op("Relu", &["x"], vec![]), 75, &x);
    for i in 0..150 {
        let want = if x[i] > 0.0 { dy[i] } else { 0.0 };
        assert!((g[i] - want).abs() < 1e-6, "x[{i}] = {}: gradient {} want {want}", x[i], g[i]);
    }
}

#[test]
fn maxpool_ties_route_to_first_maximum() {
    // Constant planes: every window is all ties; torch and tract give the
    // whole window's gradient to its first element in row-major order.
    let x: Vec<f32> = (0..150).map(|i| (i / 25) as f32).collect();
    let attrs = vec![a_ints("kernel_shape", &[3, 3]), a_ints("strides", &[2, 2]), a_ints("pads", &[1, 1, 1, 1])];
    let (g, dy) = direct(|g| g.op("MaxPool", &["x"], attrs), 27, &x);
    let mut want = vec![0f32; 150];
    for plane in 0..6 {
        for oh in 0..3i64 {
            for ow in 0..3i64 {
                let (h, w) = ((oh * 2 - 1).max(0), (ow * 2 - 1).max(0));
                want[plane * 25 + (h * 5 + w) as usize] += dy[plane * 9 + (oh * 3 + ow) as usize];
            }
        }
    }
    for i in 0..150 {
        assert!((g[i] - want[i]).abs() < 1e-6, "x[{i}]: gradient {} want {}", g[i], want[i]);
    }
}

#[test]
fn quantize_dequantize_is_saturating_straight_through() {
    // uint8, scale 0.05, zero point 20: representable range [-1.0, 11.75].
    let x: Vec<f32> = (0..150).map(|i| -1.5 + 0.1 * (i % 20) as f32 + 0.013).collect();
    let (g, dy) = direct(
        |g| {
            let s = g.floats(&[], vec![0.05]);
            g.inits.push(pb::TensorProto {
                name: "zp".into(),
                data_type: DataType::Uint8 as i32,
                int32_data: vec![20],
                ..Default::default()
            });
            let q = g.op("QuantizeLinear", &["x", &s, "zp"], vec![]);
            g.op("DequantizeLinear", &[&q, &s, "zp"], vec![])
        },
        75,
        &x,
    );
    for i in 0..150 {
        let want = if x[i] >= -1.0 { dy[i] } else { 0.0 };
        assert!((g[i] - want).abs() < 1e-6, "x[{i}] = {}: gradient {} want {want}", x[i], g[i]);
    }
}

#[test]
fn unsupported_op_on_the_input_path_is_a_load_error_naming_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    let mut g = Graph::new();
    let y = g.op("Cos", &["x"], vec![]);
    let m = g.classifier(&y, 75, &mut rng);
    let err = format!("{:#}", quba_edge::grad::gradient_graph(&m).unwrap_err());
    assert!(err.contains("'Cos_0'") && err.contains("op type Cos"), "{err}");
    let err = GradModel::from_proto(&m, 2).err().expect("load must fail");
    assert!(format!("{err:#}").contains("Cos"), "{err:#}");
}

#[test]
fn reflect_pad_and_integer_cast_on_the_input_path_are_refused_naming_the_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(47);
    let mut g = Graph::new();
    let pads = g.ints(&[0, 0, 1, 1, 0, 0, 1, 1]);
    let y = g.op("Pad", &["x", &pads], vec![a_str("mode", "reflect")]);
    let m = g.classifier(&y, 3 * 7 * 7, &mut rng);
    let err = format!("{:#}", quba_edge::grad::gradient_graph(&m).unwrap_err());
    assert!(err.contains("'Pad_0'") && err.contains("reflect"), "{err}");
    let mut g = Graph::new();
    let c = g.op("Cast", &["x"], vec![a_int("to", DataType::Int64 as i64)]);
    let y = g.op("Cast", &[&c], vec![a_int("to", DataType::Float as i64)]);
    let m = g.classifier(&y, 75, &mut rng);
    let err = format!("{:#}", quba_edge::grad::gradient_graph(&m).unwrap_err());
    assert!(err.contains("'Cast_0'") && err.contains("INT64"), "{err}");
}

#[test]
fn unsupported_op_off_the_input_path_is_fine() {
    // Ops that only transform weights need no gradient.
    fd_case(41, &[], |g, r| {
        let w = g.random(&[3, 5, 5], r);
        let c = g.op("Cos", &[&w], vec![]);
        (g.op("Mul", &["x", &c], vec![]), 75)
    });
}
