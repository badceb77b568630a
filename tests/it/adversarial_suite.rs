//! Adversarial robustness through the whole suite: the device attacks with
//! FGSM and PGD through the model's gradient program and classifies the
//! adversarial images with the real (fp32 or int8) model; the host pairs
//! them with the clean decisions on the same images. The attack itself is
//! checked against torchattacks in docs/gradients.md (scripts/attack_parity.py);
//! here the suite must agree with `quba grad attack`, the attack alone.

use std::process::Command;

use serde_json::Value;
use crate::util::*;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn suite(model: &str, mode: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("quba-adv-{model}-{mode}-{}", std::process::id()));
    let out = ok(Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo").join(model))
        .args(["--json", "--bootstrap", "50", "--per-class", "2", "--probes", "clean,adversarial", "--seed", "5"])
        .args(["--adversarial-mode", mode, "--runs-dir"])
        .arg(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str::<Value>(&out).unwrap()["models"][0].clone()
}

fn attack_alone(model: &str, mode: &str) -> Value {
    serde_json::from_str(&ok(Command::new(QUBA)
        .args(["grad", "attack", "--data", "synth", "--per-class", "2", "--seed", "5", "--batch", "8", "--mode", mode, "--model"])
        .arg(root().join("models/zoo").join(model))))
    .unwrap()
}

#[test]
fn suite_attacks_equal_the_attack_alone_and_name_their_mode() {
    for (model, gradient) in [("cnn-baseline.fp32.onnx", "exact"), ("cnn-baseline.int8.onnx", "ste")] {
        for mode in ["pixel", "reference"] {
            let m = suite(model, mode);
            let alone = attack_alone(model, mode);
            assert_eq!(m["protocol"]["adversarial_mode"], mode);
            assert_eq!(m["protocol"]["gradient"], gradient, "{model}");
            assert_eq!(alone["gradient"], gradient);
            let p = &m["parts"];
            // Same images (all 32), same seeds (run seed, sample id), same batch.
            assert_eq!(p["adversarial_clean_accuracy"], alone["clean"], "{model} {mode} clean");
            assert_eq!(p["fgsm_accuracy"], alone["fgsm"], "{model} {mode} FGSM");
            assert_eq!(p["pgd_accuracy"], alone["pgd"], "{model} {mode} PGD");
            let c = p["adversarial_clean_accuracy"].as_f64().unwrap();
            let (f, g) = (p["fgsm_accuracy"].as_f64().unwrap(), p["pgd_accuracy"].as_f64().unwrap());
            assert!(g <= f + 1e-12 && f <= c + 1e-12, "{model} {mode}: PGD {g} ≤ FGSM {f} ≤ clean {c}");
            let v = m["dimensions"]["adversarial_robustness"].as_f64().unwrap();
            assert!((v - ((g / c) * (f / c)).sqrt()).abs() < 1e-12, "gmean of the relative accuracies");
            assert_eq!(m["samples"]["adversarial_robustness"], 32);
        }
    }
}

#[test]
fn a_model_without_gradient_stops_before_any_image() {
    let out = Command::new(QUBA)
        .args(["device", "run", "--data", "synth", "--probes", "adversarial", "--pipeline", "imagenet", "--model"])
        .arg(root().join("tests/data/bad/not-a-classifier.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-classifier.onnx"), "{err}");
}
