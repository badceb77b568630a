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

/// A model whose gradient cannot be built loses the adversarial dimension
/// only: the run goes on, the other dimensions are measured, and the reason
/// names the node and its op type (issue: never a crash, never a silent zero).
#[test]
fn an_undifferentiable_model_is_evaluated_without_its_attacks() {
    let dir = crate::util::tmp_dir("grad_errors", "no_attacks");
    let out = std::process::Command::new(crate::util::QUBA)
        .args(["eval", "--model"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tiny-cnn.int8-qop.onnx"))
        .arg("--data")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny/val"))
        .args(["--probes", "clean,adversarial", "--per-class", "2", "--json", "--bootstrap", "0", "--runs-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["models"][0];
    assert!(m["dimensions"]["accuracy"].as_f64().is_some(), "{m}");
    assert!(m["dimensions"]["adversarial_robustness"].is_null(), "{m}");
    let why = m["missing"]["adversarial_robustness"].as_str().unwrap();
    assert!(why.contains("could not attack") && why.contains("op type QLinearConv") && why.contains("node '"), "{why}");
    let _ = std::fs::remove_dir_all(&dir);
}
