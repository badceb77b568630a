//! The end-to-end spine with real processes: `quba-device` evaluates the tiny
//! model (made by `scripts/make_tiny.py`) with tract, its stream goes through
//! a pipe, a file or a loopback TCP socket into `quba`, which stores and
//! reports it. Expected values come from onnxruntime on the same files
//! (`tests/data/tiny/ort_reference.json`, written by the same script).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use crate::util::*;

fn model(name: &str) -> PathBuf {
    root().join("models/tiny").join(name)
}

fn val() -> PathBuf {
    root().join("tests/data/tiny/val")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.status.success(), "command unexpectedly succeeded: {cmd:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn device(model_file: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(DEVICE);
    // The spine's checks are about the clean probe set; the other sets have their own tests.
    c.arg("run").arg("--model").arg(model(model_file)).arg("--data").arg(val()).args(["--probes", "clean"]).args(extra);
    c
}

fn json_file(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn manifest(dir: &Path) -> Value {
    json_file(&dir.join("manifest.json"))
}

/// Top-1 of onnxruntime for each val image, in sorted dataset order.
fn ort(model_file: &str) -> Vec<(usize, Vec<f64>)> {
    let v = json_file(&root().join("tests/data/tiny/ort_reference.json"));
    v[model_file]
        .as_array()
        .unwrap_or_else(|| panic!("no ort reference for {model_file}"))
        .iter()
        .map(|e| (e["label"].as_u64().unwrap() as usize, e["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()))
        .collect()
}

fn softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = l.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Device → pipe → `quba ingest`, two separate processes as on a board link.
fn pipe_run(model_file: &str, dir: &Path, extra: &[&str]) -> Value {
    let mut dev = device(model_file, extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let ingest = Command::new(QUBA)
        .args(["ingest", "--run-dir"])
        .arg(dir)
        .stdin(dev.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dev.wait().unwrap().success());
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));
    manifest(dir)
}

fn report_json(dirs: &[&Path], extra: &[&str]) -> Value {
    let out = ok(Command::new(QUBA).arg("report").args(dirs).arg("--json").args(extra));
    serde_json::from_str(&out).unwrap()
}

fn export(dir: &Path) -> Vec<Value> {
    ok(Command::new(QUBA).arg("export").arg(dir).args(["--format", "jsonl"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn device_process_to_host_results_match_onnxruntime() {
    let t = tmp!("pipe");
    let dir = t.join("fp32");
    let m = pipe_run("tiny-cnn.fp32.onnx", &dir, &["--batch", "7"]);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["records"], 120);
    assert_eq!(m["decode"]["corrupt_frames"], 0);

    // Every probability within float rounding of onnxruntime's softmax, same top-1.
    let reference = ort("tiny-cnn.fp32.onnx");
    let records = export(&dir);
    assert_eq!(records.len(), reference.len());
    let mut correct = 0;
    for (r, (label, logits)) in records.iter().zip(&reference) {
        assert_eq!(r["set"], "clean");
        assert_eq!(r["label"].as_u64().unwrap() as usize, *label);
        let p: Vec<f64> = r["probs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let q = softmax(logits);
        let diff = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-5, "sample {}: max prob diff {diff}", r["sample"]);
        assert_eq!(r["prediction"].as_u64().unwrap() as usize, argmax(&q), "sample {}", r["sample"]);
        correct += (argmax(&q) == *label) as usize;
    }

    let res = report_json(&[&dir], &[]);
    assert_eq!(res["schema"], "quba-results/1");
    assert_eq!(res["normalisation"], "cohort");
    let m0 = &res["models"][0];
    assert_eq!(m0["precision"], "fp32");
    let acc = m0["dimensions"]["accuracy"].as_f64().unwrap();
    assert!((acc - correct as f64 / 120.0).abs() < 1e-12, "accuracy {acc} vs onnxruntime {correct}/120");
    let (lo, hi) = (m0["intervals"]["accuracy"][0].as_f64().unwrap(), m0["intervals"]["accuracy"][1].as_f64().unwrap());
    assert!(lo < acc && acc < hi, "CI [{lo}, {hi}] around {acc}");
    assert_eq!(m0["samples"]["accuracy"], 120);
    for d in ["calibration_error", "class_balance", "parameters_m"] {
        assert!(m0["dimensions"][d].as_f64().unwrap() > 0.0, "{d}");
    }
    for d in ["adversarial_robustness", "corruption_robustness", "ood_robustness", "object_focus", "shape_bias"] {
        assert!(m0["dimensions"][d].is_null(), "{d} must be null, never zero");
        assert!(m0["missing"][d].as_str().unwrap().contains("no "), "{d} needs a reason");
    }
    // A cohort of one has no QUBA, and says why.
    assert!(m0["quba"].is_null());
    assert!(m0["quba_reason"].as_str().unwrap().len() > 10);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn export_into_a_closed_pipe_stops_quietly() {
    let t = tmp!("epipe");
    let dir = t.join("fp32");
    pipe_run("tiny-cnn.fp32.onnx", &dir, &[]);
    let mut child = Command::new(QUBA).arg("export").arg(&dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The reader is gone before the first record is written (as `| head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn int8_models_agree_with_onnxruntime_and_carry_their_format() {
    let t = tmp!("int8");
    for (file, format) in [("tiny-cnn.int8.onnx", "qdq"), ("tiny-cnn.int8-qop.onnx", "qoperator")] {
        let dir = t.join(format);
        let m = pipe_run(file, &dir, &[]);
        assert_eq!(m["header"]["precision"], "int8");
        assert_eq!(m["header"]["int8_format"], format);
        let reference = ort(file);
        let records = export(&dir);
        let agree = records
            .iter()
            .zip(&reference)
            .filter(|(r, (_, l))| r["prediction"].as_u64().unwrap() as usize == argmax(l))
            .count();
        // Fake-quantised f32 (QDQ) and tract's i8 kernels round differently from
        // onnxruntime near ties; docs/tract.md measured 18/20 on Lite0 QDQ.
        assert!(agree * 100 >= records.len() * 95, "{file}: top-1 agreement {agree}/{}", records.len());
    }
    // The parameter count is the weight elements, so int8 equals fp32.
    let fp32 = quba_edge::engine::read_facts(&model("tiny-cnn.fp32.onnx")).unwrap().parameters;
    for format in ["qdq", "qoperator"] {
        assert_eq!(manifest(&t.join(format))["header"]["parameters"].as_u64().unwrap(), fp32, "{format}");
    }
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn eval_runs_models_through_the_device_binary_and_scores_a_cohort() {
    let t = tmp!("eval");
    let out = ok(Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(model("tiny-cnn.fp32.onnx"))
        .arg("--model")
        .arg(model("tiny-cnn.int8.onnx"))
        .arg("--model")
        .arg(model("tiny-cnn.int8-qop.onnx"))
        .arg("--data")
        .arg(val())
        .args(["--probes", "clean"])
        .arg("--runs-dir")
        .arg(&t)
        .args(["--weights", "1,0,0,0,1,1,0,0,1", "--json"]));
    let res: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(res, json_file(&t.join("results.json")));
    let models = res["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    // With weights only on measured dimensions a cohort of three has a QUBA.
    for m in models {
        assert!(m["quba"].as_f64().is_some(), "{m}");
        assert_eq!(m["target"], env!("QUBA_TARGET"));
        assert_eq!(m["backend"], "tract-cpu");
        assert_eq!(m["onnx_sha256"].as_str().unwrap().len(), 64);
        // The device's own account of its time: one stage per probe group run,
        // covering every image, the model's share of it inside the wall time.
        let stages = m["run"]["end"]["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 1, "{m}");
        assert_eq!(stages[0]["group"], "clean");
        assert_eq!(stages[0]["images"], m["run"]["records"]);
        let (wall, inside) = (stages[0]["elapsed_us"].as_u64().unwrap(), stages[0]["model_us"].as_u64().unwrap());
        assert!(inside > 0 && inside <= wall, "{stages:?}");
    }
    // Cohort z-scores are centred: the three QUBAs sum to zero.
    let s: f64 = models.iter().map(|m| m["quba"].as_f64().unwrap()).sum();
    assert!(s.abs() < 1e-9, "{s}");
    assert!(res["rank_correlation"]["matrix"]["accuracy"]["accuracy"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn flipped_bytes_lose_only_damaged_frames() {
    let t = tmp!("flip");
    let log = t.join("stream.bin");
    ok(&mut device("tiny-cnn.fp32.onnx", &["--out", log.to_str().unwrap()]));
    let mut bytes = std::fs::read(&log).unwrap();
    // Damage three places well inside the stream (past the header).
    for at in [bytes.len() / 4, bytes.len() / 2, bytes.len() * 3 / 4] {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&log, &bytes).unwrap();
    let dir = t.join("run");
    let out = ok(Command::new(QUBA)
        .args(["ingest", "--run-dir"])
        .arg(&dir)
        .stdin(std::fs::File::open(&log).unwrap()));
    assert!(out.is_empty());
    let m = manifest(&dir);
    let lost = m["decode"]["corrupt_frames"].as_u64().unwrap();
    assert!((1..=3).contains(&lost), "{m}");
    assert_eq!(m["records"].as_u64().unwrap() + lost, 120, "{m}");
    assert_eq!(m["status"], "complete");
    let res = report_json(&[&dir], &[]);
    assert_eq!(res["models"][0]["samples"]["accuracy"].as_u64().unwrap(), 120 - lost);
    assert_eq!(res["models"][0]["run"]["decode"]["corrupt_frames"].as_u64().unwrap(), lost);
    let _ = std::fs::remove_dir_all(&t);
}

/// `quba ingest` on a real stream with one bit flipped in the header frame,
/// in the End frame, and in the header with the stream cut before the End.
#[test]
fn one_damaged_frame_never_costs_the_run() {
    let t = tmp!("one-frame");
    let log = t.join("stream.bin");
    ok(&mut device("tiny-cnn.fp32.onnx", &["--per-class", "1", "--out", log.to_str().unwrap()]));
    let clean = std::fs::read(&log).unwrap();
    // Where each frame ends (after its delimiter): the header is the first, the End the last.
    let ends: Vec<usize> = clean.iter().enumerate().filter(|&(_, &b)| b == 0).map(|(i, _)| i + 1).collect();
    let (header_len, end_from) = (ends[0], ends[ends.len() - 2]);
    // One bit in the middle of a frame, never turned into a delimiter.
    let flip = |bytes: &mut Vec<u8>, at: usize| bytes[at] ^= if bytes[at] == 1 { 2 } else { 1 };
    let ingest = |name: &str, bytes: &[u8]| {
        let file = t.join(format!("{name}.bin"));
        std::fs::write(&file, bytes).unwrap();
        let dir = t.join(name);
        let out = run(Command::new(QUBA).args(["ingest", "--run-dir"]).arg(&dir).stdin(std::fs::File::open(&file).unwrap()));
        (out, dir)
    };
    let (out, whole) = ingest("whole", &clean);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let header = manifest(&whole)["header"].clone();
    assert_eq!(header["model_name"], "tiny-cnn", "{header}");

    // The header's frame lost: the End's copy stands in, and nothing else is missing.
    let mut bytes = clean.clone();
    flip(&mut bytes, header_len / 2);
    let (out, dir) = ingest("header", &bytes);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = manifest(&dir);
    assert_eq!((&m["status"], &m["header"], &m["records"], &m["decode"]["corrupt_frames"]), (&"complete".into(), &header, &10.into(), &1.into()), "{m}");
    let res = report_json(&[&dir], &[]);
    assert_eq!(res["models"][0]["samples"]["accuracy"], 10);
    assert!(res["models"][0]["run"]["end"]["stages"].is_array(), "{res}");

    // The End's frame lost: every record kept, the run marked as without the device's account.
    let mut bytes = clean.clone();
    flip(&mut bytes, (end_from + clean.len()) / 2);
    let (out, dir) = ingest("end", &bytes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("from stream byte {end_from}, where the End frame belonged")) && err.contains("timings"), "{err}");
    let m = manifest(&dir);
    assert_eq!((&m["status"], &m["header"], &m["records"]), (&"interrupted".into(), &header, &10.into()), "{m}");
    assert_eq!(m["lost"], serde_json::json!([{"frame": "end", "bytes": [end_from, clean.len()]}]), "{m}");
    let res = report_json(&[&dir], &[]);
    assert_eq!((&res["models"][0]["samples"]["accuracy"], &res["models"][0]["run"]["end"]), (&10.into(), &Value::Null), "{res}");

    // Both: the header's frame lost and the stream cut before the End.
    let mut bytes = clean[..end_from].to_vec();
    flip(&mut bytes, header_len / 2);
    let (out, dir) = ingest("both", &bytes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a run without its header is no success: {err}");
    for says in ["no valid run header", &format!("the {header_len} bytes from stream byte 0, where the Header frame belonged"), "model, dataset", "10 records", "records.qlog"] {
        assert!(err.contains(says), "{err:?} does not say {says:?}");
    }
    let m = manifest(&dir);
    assert_eq!((&m["status"], &m["header"], &m["records"]), (&"no_header".into(), &Value::Null, &10.into()), "{m}");
    let err = fails(Command::new(QUBA).arg("report").arg(&dir));
    assert!(err.contains("records.qlog") && err.contains("no run header") && err.contains("from stream byte 0"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn killed_device_loses_nothing_already_received() {
    let t = tmp!("kill");
    let dir = t.join("run");
    // Paced so the kill lands mid-run: 4 images per batch, 150 ms between batches.
    let mut dev: Child = device("tiny-cnn.fp32.onnx", &["--batch", "4", "--pause-ms", "150"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ingest = Command::new(QUBA)
        .args(["ingest", "--run-dir"])
        .arg(&dir)
        .stdin(dev.stdout.take().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.join("records.qlog");
    wait_for("records to arrive", || std::fs::metadata(&log).map(|m| m.len() > 2_000).unwrap_or(false));
    dev.kill().unwrap();
    dev.wait().unwrap();
    let status = ingest.wait().unwrap();
    let mut err = String::new();
    ingest.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    let m = manifest(&dir);
    assert_eq!(m["status"], "interrupted");
    let n = m["records"].as_u64().unwrap();
    assert!(n >= 4 && n < 120, "{n} records");
    // Everything the host acknowledged is in the log, and the report uses all of it.
    assert_eq!(export(&dir).len() as u64, n);
    let res = report_json(&[&dir], &[]);
    assert_eq!(res["models"][0]["samples"]["accuracy"].as_u64().unwrap(), n);
    assert_eq!(res["models"][0]["run"]["status"], "interrupted");
    let table = ok(Command::new(QUBA).arg("report").arg(&dir));
    assert!(table.contains("interrupted"), "{table}");
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn tcp_stream_needs_the_token() {
    let t = tmp!("tcp");
    for (i, good) in [(0, true), (1, false)] {
        let dir = t.join(format!("run{i}"));
        let args = ["--bind", "127.0.0.1:0", "--token", "s3cret", "--run-dir"];
        let (mut host, addr) = listen(&args, &dir);
        let token = if good { "s3cret" } else { "guess" };
        let dev = run(&mut device("tiny-cnn.fp32.onnx", &["--out", &format!("tcp://{addr}"), "--token", token]));
        let status = host.wait().unwrap();
        let mut err = String::new();
        host.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        if good {
            assert!(dev.status.success(), "{}", String::from_utf8_lossy(&dev.stderr));
            assert!(status.success(), "{err}");
            assert_eq!(manifest(&dir)["records"], 120);
        } else {
            assert!(!status.success());
            assert!(err.contains("token"), "{err}");
            assert_eq!(manifest(&dir)["records"], 0);
            assert_eq!(std::fs::metadata(dir.join("records.qlog")).unwrap().len(), 0);
        }
    }
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let t = tmp!("bad");
    // Not an ONNX file.
    let junk = t.join("junk.onnx");
    std::fs::write(&junk, b"this is not a protobuf").unwrap();
    std::fs::copy(model("tiny-cnn.fp32.json"), t.join("junk.json")).unwrap();
    let err = fails(Command::new(DEVICE).args(["run", "--model"]).arg(&junk).arg("--data").arg(val()));
    assert!(err.contains("junk.onnx") && err.contains("not an ONNX model"), "{err}");

    // Missing model file.
    let err = fails(Command::new(DEVICE).args(["run", "--model"]).arg(t.join("nope.onnx")).args(["--pipeline", "imagenet", "--data"]).arg(val()));
    assert!(err.contains("nope.onnx"), "{err}");

    // No sidecar and no --pipeline: refuse to guess.
    let bare = t.join("bare.onnx");
    std::fs::copy(model("tiny-cnn.fp32.onnx"), &bare).unwrap();
    let err = fails(Command::new(DEVICE).args(["run", "--model"]).arg(&bare).arg("--data").arg(val()));
    assert!(err.contains("no input pipeline") && err.contains("bare.json"), "{err}");

    // A model whose output is an image, not a class vector.
    let err = fails(Command::new(DEVICE)
        .args(["run", "--model"])
        .arg(root().join("tests/data/bad/not-a-classifier.onnx"))
        .arg("--pipeline")
        .arg(model("tiny-cnn.fp32.json"))
        .arg("--data")
        .arg(val()));
    assert!(err.contains("not-a-classifier.onnx") && err.contains("class vector"), "{err}");

    // A dataset with the wrong number of class folders.
    let nine = t.join("nine");
    for entry in std::fs::read_dir(val()).unwrap().take(9) {
        let e = entry.unwrap();
        std::fs::create_dir_all(nine.join(e.file_name())).unwrap();
    }
    let err = fails(&mut Command::new(DEVICE).args(["run", "--model"]).arg(model("tiny-cnn.fp32.onnx")).arg("--data").arg(&nine));
    assert!(err.contains("9 class folders") && err.contains("10 classes"), "{err}");

    // The in-memory synthetic benchmark has 16 classes; a 10-class model is refused.
    let err = fails(&mut Command::new(DEVICE).args(["run", "--data", "synth", "--model"]).arg(model("tiny-cnn.fp32.onnx")));
    assert!(err.contains("16 classes") && err.contains("outputs 10"), "{err}");

    // An image that does not decode: reported by name, the other 119 still measured.
    let copy = t.join("val");
    copy_tree(&val(), &copy);
    let victim = std::fs::read_dir(copy.join(first_class())).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&victim, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let dir = t.join("run");
    clean_run_into(&copy, &dir);
    let m = manifest(&dir);
    assert_eq!((m["records"].as_u64(), m["failures"].as_u64()), (Some(119), Some(1)));
    let res = report_json(&[&dir], &[]);
    let f = &res["models"][0]["run"]["failures"][0];
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(f["path"].as_str().unwrap().ends_with(name), "{f}");
    assert!(f["error"].as_str().unwrap().contains("does not decode"), "{f}");

    // More hostile images, each in place of a good one: a zero-byte file, a
    // JPEG cut in half, a PNG that declares 20 000 × 20 000 pixels (1.2 GB
    // decoded: refused by the decoder's memory limit before allocating), and
    // a 1 × 1 PNG, which torchvision's Resize would upsample and so do we (a
    // record, not a failure).
    let hostile = t.join("hostile");
    copy_tree(&val(), &hostile);
    let mut victims: Vec<PathBuf> = std::fs::read_dir(hostile.join(first_class())).unwrap().map(|e| e.unwrap().path()).collect();
    victims.sort();
    std::fs::write(&victims[0], b"").unwrap();
    let jpeg = {
        let mut buf = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(64, 64, image::Rgb([200, 40, 40])).write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    };
    std::fs::write(&victims[1], &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(&victims[2], png_declaring(20_000, 20_000)).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30])).save_with_format(&victims[3], image::ImageFormat::Png).unwrap();
    let dir = t.join("hostile-run");
    clean_run_into(&hostile, &dir);
    let m = manifest(&dir);
    assert_eq!((m["records"].as_u64(), m["failures"].as_u64()), (Some(117), Some(3)), "{m}");
    let res = report_json(&[&dir], &[]);
    let failures = res["models"][0]["run"]["failures"].as_array().unwrap();
    for (victim, why) in victims[..3].iter().zip(["does not decode", "does not decode", "limit"]) {
        let name = victim.file_name().unwrap().to_str().unwrap();
        let f = failures.iter().find(|f| f["path"].as_str().unwrap().ends_with(name)).unwrap_or_else(|| panic!("{name}: {failures:?}"));
        assert!(f["error"].as_str().unwrap().contains(why), "{f}");
    }

    // A full disk under the device's output file: the error names the output.
    let err = fails(&mut device("tiny-cnn.fp32.onnx", &["--out", "/dev/full"]));
    assert!(err.contains("--out /dev/full") && err.contains("No space left"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}

/// The tiny CNN's clean probe on the image folder `data`, piped from the
/// device into `quba ingest` in `dir`; both must succeed.
fn clean_run_into(data: &Path, dir: &Path) {
    let mut dev = Command::new(DEVICE)
        .args(["run", "--model"])
        .arg(model("tiny-cnn.fp32.onnx"))
        .arg("--data")
        .arg(data)
        .args(["--probes", "clean"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ok(Command::new(QUBA).args(["ingest", "--run-dir"]).arg(dir).stdin(dev.stdout.take().unwrap()));
    assert!(dev.wait().unwrap().success());
}

/// A 66-byte PNG that declares `w` × `h` RGB pixels: IHDR, one IDAT with a
/// zlib stream of a single zero byte (Python's `zlib.compress(b"\x00")`), IEND.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend(&body);
        png.extend(crc32fast::hash(&body).to_be_bytes());
    };
    chunk(b"IHDR", &[&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 0]].concat());
    chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

fn first_class() -> String {
    let mut v: Vec<String> = std::fs::read_dir(val()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v[0].clone()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn score_reads_the_study_table() {
    let out = ok(Command::new(QUBA).args(["score", "--json", "--table"]).arg(root().join("data/reference/study_326_models.csv")));
    let v: Value = serde_json::from_str(&out).unwrap();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 326);
    assert_eq!(models.iter().filter(|m| m["quba"].is_number()).count(), 282);
    assert_eq!(models[0]["id"], "1");
    assert_eq!(models[0]["name"], "AlexNet");
    let no = models.iter().find(|m| m["quba"].is_null()).unwrap();
    assert!(no["reason"].as_str().unwrap().len() > 5);
    let err = fails(Command::new(QUBA).args(["score", "--weights", "1,2,3", "--table"]).arg(root().join("data/reference/study_326_models.csv")));
    assert!(err.contains("--weights"), "{err}");
}

#[test]
fn zoo_model_on_the_in_memory_synthetic_benchmark() {
    let t = tmp!("synth");
    let out = ok(Command::new(QUBA)
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/zoo/cnn-baseline.fp32.onnx"))
        .arg("--model")
        .arg(root().join("models/zoo/cnn-baseline.int8.onnx"))
        .args(["--data", "synth", "--per-class", "6", "--json", "--bootstrap", "0", "--runs-dir"])
        .arg(&t));
    let res: Value = serde_json::from_str(&out).unwrap();
    for m in res["models"].as_array().unwrap() {
        assert_eq!(m["samples"]["accuracy"], 96);
        assert!(m["protocol"]["dataset_root"].as_str().unwrap().starts_with("synth:val (generator v1, seed 0"), "{m}");
        // The card measured 85% on 800 images with onnxruntime; 96 images
        // leave room for noise but not for a broken pipeline (chance: 6%).
        let acc = m["dimensions"]["accuracy"].as_f64().unwrap();
        assert!(acc > 0.6, "{} {}: accuracy {acc}", m["name"], m["precision"]);
    }
    // Both runs saw the same generated images.
    let fp = &res["models"][0]["protocol"]["dataset_fingerprint"];
    assert_eq!(fp, &res["models"][1]["protocol"]["dataset_fingerprint"]);
    let _ = std::fs::remove_dir_all(&t);
}
