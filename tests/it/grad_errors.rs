//! Models the gradient builder must refuse at load time, with the reason.

use std::path::Path;

use quba_edge::grad::GradModel;

fn load_err(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    format!("{:#}", GradModel::load(&p, 2).err().expect("load must fail"))
}

#[test]
fn not_a_classifier_is_refused() {
    let err = load_err("tests/data/bad/not-a-classifier.onnx");
    assert!(
        err.contains("not-a-classifier.onnx") && err.contains("'image'") && err.contains("[batch, classes]"),
        "{err}"
    );
}

#[test]
fn qoperator_model_names_the_first_undifferentiable_node() {
    let err = load_err("models/tiny/tiny-cnn.int8-qop.onnx");
    assert!(err.contains("op type QLinearConv") && err.contains("node '"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = load_err("models/zoo/no-such-model.onnx");
    assert!(err.contains("no-such-model.onnx"), "{err}");
}

#[test]
fn batch_mismatch_and_bad_labels_are_errors() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tiny-cnn.fp32.onnx");
    let m = GradModel::load(&p, 2).unwrap();
    let x = vec![0.1f32; 2 * m.item_len()];
    assert!(m.logits_and_grad(&x[..m.item_len()], &[0, 1]).is_err());
    let err = m.logits_and_grad(&x, &[0, 99]).unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
    let (logits, grad) = m.logits_and_grad(&x, &[0, 1]).unwrap();
    assert_eq!((logits.len(), grad.len()), (2 * m.num_classes(), x.len()));
}
