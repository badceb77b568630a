//! `quba bench` as a user runs it: the real binary, its JSON read back.
//! No timing thresholds: this machine's speed is not the claim, only that the
//! numbers are there and agree with each other.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn quba(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quba"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run quba")
}

fn bench_json(model: &str, batch: usize, threads: usize) -> Value {
    let (b, t) = (batch.to_string(), threads.to_string());
    let out = quba(&["bench", model, "--batch", &b, "--threads", &t, "--warmup", "1", "--runs", "3", "--json"]);
    assert!(out.status.success(), "quba bench {model} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // One line, one object: scripts read it with a plain JSON parser.
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    let keys: Vec<&str> = ["ms_per_image", "images_per_second", "peak_rss_bytes"].into();
    // The three headline keys lead, in the order the issue names them.
    let mut at = 0;
    for k in &keys {
        let p = text.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("no {k} in {text}"));
        assert!(p >= at, "{k} out of order in {text}");
        at = p;
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn check(v: &Value, batch: usize, threads: usize) {
    let ms = v["ms_per_image"].as_f64().unwrap();
    let ips = v["images_per_second"].as_f64().unwrap();
    assert!(ms > 0.0 && ms.is_finite(), "{v}");
    // images/s is the same measurement as ms/image, not a second one.
    assert!((ips * ms / 1000.0 - 1.0).abs() < 1e-9, "{v}");
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["batch"].as_u64().unwrap() as usize, batch);
    assert_eq!(v["threads"].as_u64().unwrap() as usize, threads);
    assert_eq!(v["runs"].as_u64().unwrap(), 3);
    // ms/image is the median round spread over every image of the round.
    let round = v["median_round_ms"].as_f64().unwrap();
    assert!((round / (batch * threads) as f64 - ms).abs() <= 1e-9 * round.max(1.0), "{v}");
    assert!(v["min_round_ms"].as_f64().unwrap() <= round, "{v}");
}

#[test]
fn fp32_and_int8_batch_1_and_4() {
    let tiny = "models/tiny/tiny-cnn.fp32.onnx";
    let v = bench_json(tiny, 1, 1);
    check(&v, 1, 1);
    // The input side comes from the model (tiny-cnn is 32 px).
    assert_eq!(v["side"], 32);
    assert_eq!(v["int8_format"], "");
    check(&bench_json(tiny, 4, 1), 4, 1);

    let q = bench_json("models/tiny/tiny-cnn.int8.onnx", 4, 1);
    check(&q, 4, 1);
    assert_eq!(q["int8_format"], "qdq");
    let qop = bench_json("models/tiny/tiny-cnn.int8-qop.onnx", 1, 1);
    check(&qop, 1, 1);
    assert_eq!(qop["int8_format"], "qoperator");
}

#[test]
fn two_engines_on_two_threads() {
    let v = bench_json("models/tiny/tiny-cnn.fp32.onnx", 2, 2);
    check(&v, 2, 2);
}

#[test]
fn the_sentence_without_json() {
    let out = quba(&["bench", "models/tiny/tiny-cnn.int8.onnx", "--runs", "2", "--warmup", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("tiny-cnn.int8.onnx") && text.contains("ms/image") && text.contains("images/s"), "{text}");
}

#[test]
fn a_file_that_is_not_onnx_is_named() {
    let dir = std::env::temp_dir().join(format!("quba-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-a-model.onnx");
    std::fs::write(&bad, b"this is plain text, not a protobuf\n").unwrap();
    let out = quba(&["bench", bad.to_str().unwrap(), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout for a script to mistake for a result");
    assert!(err.contains("not-a-model.onnx"), "{err}");
    assert!(err.contains("not an ONNX model"), "{err}");

    let missing = dir.join("no-such-model.onnx");
    let out = quba(&["bench", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model.onnx"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&bad).exists());
}

#[test]
fn zero_runs_is_refused_by_name() {
    let out = quba(&["bench", "models/tiny/tiny-cnn.fp32.onnx", "--runs", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tiny-cnn.fp32.onnx"));
}
