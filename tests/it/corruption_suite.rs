//! Corruption robustness through the whole suite: generated on the device
//! from the clean crops, or read from an ImageNet-C tree. A tree written by
//! `quba data corrupt` (same seed, sample = sorted position) holds exactly
//! the images the device generates, so both routes must give the same
//! accuracy in every cell — the device's corruptions are the CLI's. So in
//! the ImageNet-C mode: `quba data corrupt --mode imagenet-c` writes what
//! the file of each image decodes to, and the run applies the model's whole
//! pipeline to it as to a tree's file.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use crate::util::*;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const CELLS: [&str; 4] = ["gaussian_noise", "glass_blur", "brightness", "frost"];
const SEVERITIES: [u8; 2] = [1, 5];

fn eval(dir: &Path, val: &Path, extra: &[&str]) -> Value {
    let out = ok(Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo/resnet-augmix.fp32.onnx"))
        .args(["--json", "--bootstrap", "0", "--seed", "3", "--probes", "clean,corruption", "--benchmark", "synth"])
        .args(["--corruptions", &CELLS.join(","), "--severities", "1,5", "--data"])
        .arg(val)
        .arg("--runs-dir")
        .arg(dir)
        .args(extra));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn generated_corruptions_equal_a_tree_written_by_the_cli() {
    generated_equals_tree("direct", tmp!("tree"));
}

#[test]
fn imagenet_c_mode_equals_a_tree_of_its_files() {
    generated_equals_tree("imagenet-c", tmp!("tree-imagenet-c"));
}

/// `mode` is `--corruption-mode` of the run and `--mode` of the CLI.
fn generated_equals_tree(mode: &str, t: std::path::PathBuf) {
    ok(Command::new(QUBA).args(["data", "synth", "--splits", "val", "--per-class", "2", "--out"]).arg(t.join("synth")));
    let val = t.join("synth/val");
    for c in CELLS {
        for s in SEVERITIES {
            ok(Command::new(QUBA)
                .args(["data", "corrupt", "--mode", mode, "--corruption", c, "--severity", &s.to_string(), "--seed", "3", "--in"])
                .arg(&val)
                .arg("--out")
                .arg(t.join(format!("imagenet-c/{c}/{s}"))));
        }
    }
    let gen = eval(&t.join("gen"), &val, &["--corruption-mode", mode]);
    let tree = eval(&t.join("tree-runs"), &val, &["--imagenet-c", t.join("imagenet-c").to_str().unwrap()]);
    let (g, r) = (&gen["models"][0], &tree["models"][0]);
    let mut compared = 0;
    for c in CELLS {
        for s in SEVERITIES {
            let key = format!("corruption_{c}_{s}_accuracy");
            assert!(g["parts"][&key].is_number(), "{key} measured");
            assert_eq!(g["parts"][&key], r["parts"][&key], "{key}: generated vs tree");
            compared += 1;
        }
    }
    assert_eq!(compared, 8);
    // Severity 5 hurts more than severity 1 for noise, blur and frost (a
    // sanity check of the direction, on 32 images).
    for c in ["gaussian_noise", "glass_blur", "frost"] {
        let a = |s: u8| g["parts"][format!("corruption_{c}_{s}_accuracy")].as_f64().unwrap();
        assert!(a(5) <= a(1), "{c}: severity 5 {} vs 1 {}", a(5), a(1));
    }
    // 8 of 75 cells: no dimension, and the reason says how many are missing.
    assert!(g["dimensions"]["corruption_robustness"].is_null());
    let why = g["missing"]["corruption_robustness"].as_str().unwrap();
    assert!(why.contains("67 of the 75"), "{why}");
    assert_eq!(g["protocol"]["corruption_mode"], mode);
    assert_eq!(r["protocol"]["corruption_mode"], "files");
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn all_75_cells_make_the_dimension() {
    let t = tmp!("all");
    let out = ok(Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo/cnn-baseline.int8.onnx"))
        .args(["--json", "--bootstrap", "20", "--per-class", "2", "--corruption-per-class", "1", "--probes", "clean,corruption"])
        .arg("--runs-dir")
        .arg(&t));
    let res: Value = serde_json::from_str(&out).unwrap();
    let m = &res["models"][0];
    let v = m["dimensions"]["corruption_robustness"].as_f64().unwrap();
    // Mean over corruptions of the mean over severities, recomputed from the parts.
    let names = [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow",
        "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ];
    let clean = m["dimensions"]["accuracy"].as_f64().unwrap();
    let mut sum = 0.0;
    for n in names {
        let mean: f64 = (1..=5).map(|s| m["parts"][format!("corruption_{n}_{s}_accuracy")].as_f64().unwrap()).sum::<f64>() / 5.0;
        assert!((m["parts"][format!("corruption_{n}_relative")].as_f64().unwrap() - mean / clean).abs() < 1e-12, "{n}");
        sum += mean / clean;
    }
    assert!((v - sum / 15.0).abs() < 1e-12, "{v} vs {}", sum / 15.0);
    assert_eq!(m["samples"]["corruption_robustness"], 75 * 16);
    let ci = m["intervals"]["corruption_robustness"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= v && v <= ci[1].as_f64().unwrap());
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn unknown_corruption_and_bad_severity_list_the_valid_ones() {
    for (flag, value, needle) in
        [("--corruptions", "fuzzy", "jpeg_compression"), ("--severities", "6", "valid: 1, 2, 3, 4, 5")]
    {
        let out = Command::new(QUBA)
            .args(["eval", "--per-class", "1", flag, value, "--model"])
            .arg(root().join("models/zoo/cnn-baseline.fp32.onnx"))
            .arg("--runs-dir")
            .arg(std::env::temp_dir().join("quba-corr-bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(needle), "{flag} {value}: {err}");
    }
}
