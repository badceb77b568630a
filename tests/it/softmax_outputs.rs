//! A model that already ends in a softmax gives probabilities: the device
//! must take them as given (a second softmax flattens them towards uniform
//! and silently ruins calibration error and class balance) and the header
//! must say so. The expected values are the zoo model's own: the same
//! network with a Softmax node appended, or with a softmax spelled out in
//! Exp, ReduceSum and Div, must give the records the plain model gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use quba_edge::grad::{read_model, write_model, GradModel};
use quba_edge::protocol::{decode_all, Attack, Header, Message, Outputs, ProbeSet, Record};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

use crate::util::*;

const ZOO: &str = "models/zoo/cnn-baseline.fp32";

type Records = HashMap<(ProbeSet, u32), Record>;

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    let input = inputs.iter().map(|s| s.to_string()).collect();
    NodeProto { op_type: op.into(), name: format!("appended/{op}"), input, output: vec![output.into()], attribute, ..Default::default() }
}

/// An integer attribute (ONNX `AttributeType::INT` is 2).
fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() }
}

/// The zoo model with `tail` appended after its logits; output 0 becomes `out`.
fn with_tail(dir: &Path, name: &str, tail: Vec<NodeProto>, inits: Vec<TensorProto>, out: &str) -> PathBuf {
    let mut m = read_model(&root().join(format!("{ZOO}.onnx"))).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node.extend(tail);
    g.initializer.extend(inits);
    g.output[0].name = out.into();
    let path = dir.join(format!("{name}.onnx"));
    write_model(&m, &path).unwrap();
    std::fs::copy(root().join(format!("{ZOO}.json")), dir.join(format!("{name}.json"))).unwrap();
    path
}

fn run(model: &Path, out: &Path) -> (Header, Records) {
    let st = Command::new(DEVICE)
        .args(["run", "--model"])
        .arg(model)
        .args(["--data", "synth", "--per-class", "2", "--probes", "clean,adversarial", "--attack-per-class", "1", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (frames, _) = decode_all(&std::fs::read(out).unwrap());
    let mut header = None;
    let mut records = HashMap::new();
    for f in frames {
        match f.message {
            Message::Header(h) => header = Some(h),
            Message::Record(r) => {
                records.insert((r.set, r.sample), r);
            }
            _ => {}
        }
    }
    (header.expect("a header"), records)
}

fn assert_same(what: &str, got: &Records, want: &Records, sets: &[ProbeSet]) {
    let mut compared = 0;
    for (key, w) in want.iter().filter(|(k, _)| sets.contains(&k.0)) {
        let g = got.get(key).unwrap_or_else(|| panic!("{what}: no record for {key:?}"));
        assert_eq!(g.prediction, w.prediction, "{what}: {key:?}");
        assert!((g.confidence - w.confidence).abs() < 1e-5, "{what}: {key:?} confidence {} vs {}", g.confidence, w.confidence);
        assert!((g.p_true - w.p_true).abs() < 1e-5, "{what}: {key:?} p_true {} vs {}", g.p_true, w.p_true);
        if let (Some(gp), Some(wp)) = (&g.probs, &w.probs) {
            let worst = gp.iter().zip(wp.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{what}: {key:?} probabilities differ by {worst}");
        }
        compared += 1;
    }
    assert!(compared >= 32, "{what}: only {compared} records compared");
}

#[test]
fn probabilities_from_the_graph_are_taken_as_given() {
    let dir = tmp_dir("softmax_outputs", "given");
    let plain_model = root().join(format!("{ZOO}.onnx"));
    let (plain_header, plain) = run(&plain_model, &dir.join("plain.qlog"));
    assert_eq!(plain_header.outputs, Outputs::Logits);

    let softmax = with_tail(&dir, "softmax", vec![node("Softmax", &["logits"], "probs", vec![int_attr("axis", 1)])], vec![], "probs");
    let (h, records) = run(&softmax, &dir.join("softmax.qlog"));
    assert_eq!(h.outputs, Outputs::SoftmaxInGraph);
    // The attacks differentiate from the softmax's input, so they find the
    // same adversarial images as on the plain model.
    let all = [ProbeSet::Clean, ProbeSet::Adversarial(Attack::Fgsm), ProbeSet::Adversarial(Attack::Pgd)];
    assert_same("softmax node", &records, &plain, &all);

    let axes = TensorProto { name: "axes".into(), data_type: DataType::Int64 as i32, dims: vec![1], int64_data: vec![1], ..Default::default() };
    let tail = vec![
        node("Exp", &["logits"], "e", vec![]),
        node("ReduceSum", &["e", "axes"], "sum", vec![int_attr("keepdims", 1)]),
        node("Div", &["e", "sum"], "probs", vec![]),
    ];
    let spelled = with_tail(&dir, "spelled", tail, vec![axes], "probs");
    let (h, records) = run(&spelled, &dir.join("spelled.qlog"));
    assert_eq!(h.outputs, Outputs::RowsSumToOne);
    assert_same("spelled-out softmax", &records, &plain, &[ProbeSet::Clean]);
    // Its attacks start the loss from log p (softmax(log p) = p), through the
    // gradient rules of Log, Div, ReduceSum and Exp: the input gradient must
    // be the plain model's. (PGD's sign steps turn a last-bit difference in a
    // near-zero component into a different pixel, so the records themselves
    // are compared only where the gradient program is the same.)
    let batch = 4;
    let input: Vec<f32> = (0..batch * 3 * 64 * 64).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let labels = [0i64, 5, 9, 15];
    let (_, want) = GradModel::load(&plain_model, batch).unwrap().logits_and_grad(&input, &labels).unwrap();
    let (_, got) = GradModel::load_for(&spelled, batch, Outputs::RowsSumToOne).unwrap().logits_and_grad(&input, &labels).unwrap();
    let cos = cosine(&got, &want);
    assert!(1.0 - cos < 1e-6, "input gradient through the spelled-out softmax: cosine {cos} with the plain model's");
    let _ = std::fs::remove_dir_all(&dir);
}
