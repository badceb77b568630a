//! `quba compare`: a run against an exact copy is equal everywhere, and
//! against a copy whose decisions were changed on known samples it reports
//! the agreement we wrote into it and flags accuracy as different; one
//! changed decision is inconclusive within the default margin and equal
//! within a wide one.
//!
//! The expected values are counted from the records themselves (no model
//! arithmetic is re-derived here): the doctored run changes the prediction of
//! every second clean sample, so agreement is exactly the share of changed
//! records and the accuracy delta is (changed records that became correct −
//! changed records that were correct) / clean records.

use std::path::{Path, PathBuf};
use std::process::Command;

use quba_edge::protocol::{decode_all, FrameEncoder, Message};
use serde_json::Value;
use crate::util::*;

fn quba(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quba")).args(args).output().unwrap()
}

fn compare(a: &Path, b: &Path) -> Value {
    let out = quba(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--json", "--bootstrap", "200"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Copies run `src` to `dst`, passing every record through `edit`.
fn rewrite(src: &Path, dst: &Path, mut edit: impl FnMut(&mut quba_edge::protocol::Record)) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("manifest.json"), dst.join("manifest.json")).unwrap();
    let (frames, stats) = decode_all(&std::fs::read(src.join("records.qlog")).unwrap());
    assert_eq!(stats.corrupt_frames, 0);
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    for f in frames {
        let mut m = f.message;
        if let Message::Record(r) = &mut m {
            edit(r);
        }
        out.extend_from_slice(enc.encode(&m).unwrap());
    }
    std::fs::write(dst.join("records.qlog"), out).unwrap();
}

#[test]
fn equal_copy_and_doctored_copy() {
    let t = std::env::temp_dir().join(format!("quba-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    let out = Command::new(env!("CARGO_BIN_EXE_quba"))
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo/cnn-baseline.fp32.onnx"))
        .args(["--per-class", "20", "--probes", "clean,cue-conflict", "--bootstrap", "0", "--json", "--runs-dir"])
        .arg(t.join("runs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = PathBuf::from(res["models"][0]["run"]["dir"].as_str().unwrap());

    let same = t.join("same");
    rewrite(&a, &same, |_| {});
    let c = compare(&a, &same);
    assert_eq!(c["agreement"], 1.0);
    for (name, d) in c["dimensions"].as_object().unwrap() {
        match name.as_str() {
            // Not measured with these probes.
            "adversarial_robustness" | "corruption_robustness" | "ood_robustness" | "object_focus" => {
                assert_eq!(d["verdict"], "unknown", "{name}: {d}")
            }
            _ => {
                assert_eq!(d["verdict"], "equal", "{name}: {d}");
                assert_eq!(d["delta"], 0.0, "{name}");
            }
        }
    }

    // Every second clean sample now predicts the next class (full vector rolled too,
    // so the host's re-decision from probabilities agrees).
    let (mut changed, mut changed_correct, mut clean, mut total) = (0usize, 0usize, 0usize, 0usize);
    // A wrong decision moved to the next class can land on the label.
    let mut became_correct = 0usize;
    let doctored = t.join("doctored");
    rewrite(&a, &doctored, |r| {
        total += 1;
        if r.set == quba_edge::protocol::ProbeSet::Clean {
            clean += 1;
            if r.sample % 2 == 0 {
                let p = r.probs.as_mut().unwrap();
                p.rotate_right(1);
                changed += 1;
                changed_correct += (r.prediction == r.label) as usize;
                r.prediction = ((r.prediction as usize + 1) % p.len()) as u16;
                became_correct += (r.prediction == r.label) as usize;
            }
        }
    });
    let c = compare(&a, &doctored);
    let agreement = c["agreement"].as_f64().unwrap();
    assert!((agreement - (total - changed) as f64 / total as f64).abs() < 1e-12, "{c}");
    assert!(changed_correct > 10, "the fixture model should get some of the changed samples right");
    let acc = &c["dimensions"]["accuracy"];
    let expected = (became_correct as f64 - changed_correct as f64) / clean as f64;
    assert!((acc["delta"].as_f64().unwrap() - expected).abs() < 1e-12, "{acc}");
    assert_eq!(acc["verdict"], "differs", "{acc}");
    let iv = acc["interval"].as_array().unwrap();
    assert!(iv[1].as_f64().unwrap() < 0.0, "{acc}");
    // Shape bias comes from cue-conflict records, which were left alone.
    assert_eq!(c["dimensions"]["shape_bias"]["verdict"], "equal");

    // One correct clean decision made wrong: accuracy moves by −1/320. The
    // paired interval holds 0 (most resamples miss that image) and reaches
    // −3/320 (resamples that draw it three times), past the default margin
    // (0.2 × the study's accuracy std, 0.0069): inconclusive, settled by about
    // 1.5× the images. Inside a margin of 0.02 the runs are equal; a margin of
    // 0.001 is inconclusive too.
    let one = t.join("one");
    let mut flipped = false;
    rewrite(&a, &one, |r| {
        if !flipped && r.set == quba_edge::protocol::ProbeSet::Clean && r.prediction == r.label {
            let p = r.probs.as_mut().unwrap();
            p.rotate_right(1);
            r.prediction = ((r.prediction as usize + 1) % p.len()) as u16;
            flipped = true;
        }
    });
    let acc = &compare(&a, &one)["dimensions"]["accuracy"];
    assert!((acc["delta"].as_f64().unwrap() + 1.0 / clean as f64).abs() < 1e-12, "{acc}");
    assert_eq!(acc["verdict"], "inconclusive", "{acc}");
    let settle = acc["settle"].as_f64().unwrap();
    assert!((1.0..3.0).contains(&settle), "{acc}");
    let with_margin = |m: &str| {
        let out = quba(&["compare", a.to_str().unwrap(), one.to_str().unwrap(), "--bootstrap", "200", "--json", "--margin", m]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["dimensions"]["accuracy"].clone()
    };
    let acc = with_margin("accuracy=0.02");
    assert_eq!((acc["verdict"].as_str(), acc["margin"].as_f64()), (Some("equal"), Some(0.02)), "{acc}");
    assert_eq!(with_margin("accuracy=0.001")["verdict"], "inconclusive");
    let table = String::from_utf8_lossy(&quba(&["compare", a.to_str().unwrap(), one.to_str().unwrap()]).stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with("Accuracy") && l.contains("inconclusive (~")), "{table}");
    let out = quba(&["compare", a.to_str().unwrap(), one.to_str().unwrap(), "--margin", "acuracy=0.1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no dimension \"acuracy\""));

    // Runs over different data cannot be paired.
    let other = t.join("other");
    let out = Command::new(env!("CARGO_BIN_EXE_quba"))
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo/cnn-baseline.fp32.onnx"))
        .args(["--per-class", "20", "--probes", "clean", "--bootstrap", "0", "--seed", "7", "--json", "--runs-dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = res["models"][0]["run"]["dir"].as_str().unwrap();
    let out = quba(&["compare", a.to_str().unwrap(), o]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not measure the same samples") && err.contains("seed 0 vs 7"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}
