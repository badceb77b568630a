//! Runs that survive: `quba eval --resume` after the device or the host was
//! killed with SIGKILL at random points, and `quba listen` taking eight
//! boards' streams at once, one of them garbage.
//!
//! The expected values are the same run made without interruption: a
//! resumed run must hold every record of it, bit for bit, each exactly once,
//! and report the same numbers.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use quba_edge::protocol::{decode_all, FrameEncoder, Message};
use quba_host::report::Run;
use serde_json::Value;
use crate::util::*;

fn check(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Every kind of probe set (clean, shifted, generated corruptions, attacks)
/// on the zoo's CNN; batches of 3 and a pause after each, so a run lasts a
/// few seconds and a kill lands anywhere in it.
const MODEL: &str = "models/zoo/cnn-baseline.fp32.onnx";
const ARGS: [&str; 12] =
    ["--data", "synth", "--per-class", "2", "--corruption-per-class", "1", "--attack-per-class", "1", "--batch", "3", "--seed", "3"];

fn eval(runs: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(QUBA);
    c.arg("eval").args(extra).args(["--bootstrap", "0", "--progress", "quiet", "--runs-dir"]).arg(runs);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn fresh(runs: &Path, pause_ms: &str) -> Command {
    let mut c = eval(runs, &["--pause-ms", pause_ms]);
    c.arg("--model").arg(root().join(MODEL)).args(ARGS);
    c
}

/// The one run directory `quba eval` made under `runs`, once it exists.
fn run_dir(runs: &Path) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs).ok()?.map(|e| e.unwrap().path()).filter(|p| p.join("manifest.json").exists()).collect();
    assert!(dirs.len() <= 1, "{dirs:?}");
    dirs.into_iter().next()
}

/// The device process `quba eval` (pid) started, if it runs yet. Linux
/// lists children under the thread that spawned them: a worker thread here.
fn device_child(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .find_map(|c| c.split_whitespace().next().map(|p| p.parse().unwrap()))
}

fn sigkill(pid: u32) -> bool {
    Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status().unwrap().success()
}

fn report(dir: &Path) -> Value {
    let out = check(Command::new(QUBA).arg("report").arg(dir).args(["--json", "--bootstrap", "100"]).output().unwrap(), "quba report");
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["models"][0].take()
}

/// A small deterministic generator (the kill schedule is reproducible).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_at_random_points_then_resumed_equals_the_uninterrupted_run() {
    let t = tmp!("kill");
    let whole = fresh(&t.join("whole"), "0").spawn().unwrap();

    let runs = t.join("killed");
    let mut rng = Lcg(20261202);
    let (mut device_kills, mut host_kills, mut attempts) = (0, 0, 0);
    let mut torn = false;
    while device_kills + host_kills < 24 {
        attempts += 1;
        assert!(attempts < 200, "the run never got far enough to be killed 24 times");
        let dir = run_dir(&runs);
        let mut host = match &dir {
            None => fresh(&runs, "80").spawn().unwrap(),
            Some(d) => eval(&runs, &["--pause-ms", "80", "--resume", d.to_str().unwrap()]).spawn().unwrap(),
        };
        // Anywhere from model loading to deep into the attacks.
        std::thread::sleep(Duration::from_millis(40 + rng.below(560)));
        if host.try_wait().unwrap().is_some() {
            let out = host.wait_with_output().unwrap();
            panic!(
                "the run ended before its kill (after {device_kills} device and {host_kills} host kills): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Alternate: the device (the host sees its stream end), or the host
        // itself (its device then dies writing into the closed pipe).
        if attempts % 2 == 0 {
            // The host may still be starting it.
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(10) && host.try_wait().unwrap().is_none() {
                if let Some(pid) = device_child(host.id()) {
                    if sigkill(pid) {
                        device_kills += 1;
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let out = host.wait_with_output().unwrap();
            // Killed before its header, the device left nothing to report on.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() || err.contains("no valid run header"), "{err}");
        } else {
            host.kill().unwrap();
            host.wait().unwrap();
            host_kills += 1;
        }
        if let Some(d) = run_dir(&runs) {
            let m: Value = serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap()).unwrap();
            eprintln!("attempt {attempts}: {} records, {}", m["records"], m["status"]);
        }
        // Once, a host killed half-way through writing a frame: a torn tail
        // that the resume must cut off, or the next frame would be lost.
        if !torn && host_kills > 3 {
            if let Some(d) = run_dir(&runs) {
                let mut f = std::fs::OpenOptions::new().append(true).open(d.join("records.qlog")).unwrap();
                f.write_all(&[0x41, 0x03, 0x10, 0x22, 0x7f]).unwrap();
                torn = true;
            }
        }
    }
    let dir = run_dir(&runs).expect("a run directory");
    let before = Run::load(&dir).unwrap();
    assert!(torn);
    check(eval(&runs, &["--resume", dir.to_str().unwrap()]).output().unwrap(), "the last quba eval --resume");
    let whole_dir = run_dir(&t.join("whole")).unwrap();
    check(whole.wait_with_output().unwrap(), "the uninterrupted quba eval");

    let (a, b) = (Run::load(&whole_dir).unwrap(), Run::load(&dir).unwrap());
    eprintln!(
        "{device_kills} device and {host_kills} host kills; {} of {} records were in before the last resume",
        before.records.len(),
        a.records.len()
    );
    assert!(before.records.len() < a.records.len(), "the last resume had work left");
    // Every record exactly once in the log itself, not only after dedup.
    let (frames, _) = decode_all(&std::fs::read(dir.join("records.qlog")).unwrap());
    let mut seen = HashMap::new();
    for f in frames {
        if let Message::Record(r) = f.message {
            *seen.entry((r.set, r.sample)).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records logged twice: {twice:?}");
    assert_eq!(b.duplicates, 0);

    let sorted = |r: &Run| {
        let mut v = r.records.clone();
        v.sort_by_key(|r| (r.set, r.sample));
        v
    };
    assert_eq!(sorted(&b).len(), a.header.samples as usize, "every sample of the plan");
    assert_eq!(sorted(&b), sorted(&a), "every record, bit for bit");
    assert_eq!(b.failures, a.failures);
    let mut header = b.header.clone();
    header.run_id = a.header.run_id.clone();
    assert_eq!(header, a.header);
    let m: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete");
    assert_eq!(m["records"].as_u64(), Some(a.records.len() as u64));
    assert_eq!(m["decode"]["truncated_tail"], true, "the torn frame is on record");

    let (mut ra, mut rb) = (report(&whole_dir), report(&dir));
    for v in [&mut ra, &mut rb] {
        let run = v.as_object_mut().unwrap().remove("run").unwrap();
        assert_eq!(run["status"], "complete");
    }
    assert_eq!(ra, rb, "the resumed run reports what the uninterrupted one does");
    // Resuming a complete run changes nothing.
    let out = check(eval(&runs, &["--resume", dir.to_str().unwrap()]).output().unwrap(), "resuming a complete run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to resume"));
    assert_eq!(Run::load(&dir).unwrap().records, b.records);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let t = tmp!("refuse");
    // A run received by `quba ingest` has no launch arguments to repeat.
    let dir = t.join("ingested");
    let dev = Command::new(DEVICE)
        .args(["run", "--model"])
        .arg(root().join("models/tiny/tiny-cnn.fp32.onnx"))
        .arg("--data")
        .arg(root().join("tests/data/tiny/val"))
        .args(["--probes", "clean"])
        .output()
        .unwrap();
    let mut ingest = Command::new(QUBA).arg("ingest").arg("--run-dir").arg(&dir).stdin(Stdio::piped()).spawn().unwrap();
    ingest.stdin.take().unwrap().write_all(&dev.stdout[..dev.stdout.len() / 2]).unwrap();
    ingest.wait().unwrap();
    let out = eval(&t, &["--resume", dir.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ingested") && err.contains("--resume-from"), "{err}");

    // A device given another run's arguments: its header does not match, nothing is appended.
    let runs = t.join("runs");
    let mut host = fresh(&runs, "40").spawn().unwrap();
    let started = Instant::now();
    while run_dir(&runs).is_none_or(|d| Run::load(&d).is_err()) {
        assert!(started.elapsed() < Duration::from_secs(60), "no header arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    host.kill().unwrap();
    host.wait().unwrap();
    let d = run_dir(&runs).unwrap();
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap()).unwrap();
    let args = m["launch"]["args"].as_array_mut().unwrap();
    let seed = args.iter().position(|a| a == "--seed").unwrap();
    args[seed + 1] = "4".into();
    std::fs::write(d.join("manifest.json"), serde_json::to_string(&m).unwrap()).unwrap();
    // Reopening cuts a torn tail, if the kill left one; then nothing may change.
    drop(quba_host::ingest::RunLog::reopen(&d).unwrap());
    let kept = std::fs::metadata(d.join("records.qlog")).unwrap().len();
    let out = eval(&runs, &["--resume", d.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not the one being resumed") && err.contains("seed"), "{err}");
    assert_eq!(std::fs::metadata(d.join("records.qlog")).unwrap().len(), kept, "nothing appended");
    let _ = std::fs::remove_dir_all(&t);
}

/// Eight boards stream into one `quba listen` at once over loopback TCP;
/// the eighth presents the token and then sends garbage. The seven real
/// streams complete, each in its own run directory; the garbage is refused
/// and leaves no run behind.
#[test]
fn eight_concurrent_streams_one_of_them_garbage() {
    let t = tmp!("listen");
    let runs = t.join("runs");
    let args = ["--bind", "127.0.0.1:0", "--token", "fleet-token", "--streams", "8", "--max-connections", "8", "--runs-dir"];
    let (host, addr) = listen(&args, &runs);
    let boards: Vec<Child> = (0..7)
        .map(|_| {
            Command::new(DEVICE)
                .args(["run", "--model"])
                .arg(root().join("models/tiny/tiny-cnn.fp32.onnx"))
                .arg("--data")
                .arg(root().join("tests/data/tiny/val"))
                .args(["--probes", "clean", "--batch", "4", "--pause-ms", "5", "--out", &format!("tcp://{addr}"), "--token", "fleet-token"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut garbage = std::net::TcpStream::connect(&addr).unwrap();
    garbage.write_all(FrameEncoder::new().encode(&Message::Hello { token: "fleet-token".into() }).unwrap()).unwrap();
    let mut rng = Lcg(8);
    let noise: Vec<u8> = (0..200_000).map(|_| rng.below(256) as u8).collect();
    garbage.write_all(&noise).unwrap();
    drop(garbage);
    let boards: Vec<Output> = boards.into_iter().map(|b| b.wait_with_output().unwrap()).collect();
    let out = host.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for b in boards {
        check(b, &format!("a board's quba-device run (host: {err})"));
    }
    assert!(!out.status.success(), "one stream was garbage: {err}");
    assert!(err.contains("1 of 8 streams") && err.contains("no valid run header"), "{err}");

    let dirs: Vec<PathBuf> = std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 7, "one run per real board, none for the garbage: {dirs:?}");
    let runs: Vec<Run> = dirs.iter().map(|d| Run::load(d).unwrap()).collect();
    for r in &runs {
        assert_eq!(r.status, quba_host::ingest::RunStatus::Complete, "{}", r.dir.display());
        assert_eq!(r.records.len(), 120, "{}", r.dir.display());
        // Same model and images on every board: the same records.
        assert_eq!(r.records, runs[0].records, "{}", r.dir.display());
    }
    let _ = std::fs::remove_dir_all(&t);
}

/// The names of the run directories `quba eval` claimed in `runs`, by model.
fn claimed(runs: &Path) -> Vec<Option<String>> {
    let Ok(text) = std::fs::read_to_string(runs.join("eval.json")) else { return vec![] };
    let l: Value = serde_json::from_str(&text).unwrap();
    l["jobs"].as_array().unwrap().iter().map(|j| j["dir"].as_str().map(String::from)).collect()
}

/// results.json without what differs between any two runs of the same
/// evaluation: where the runs live and how long they took.
fn results_without_run_facts(runs: &Path) -> Value {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(runs.join("results.json")).unwrap()).unwrap();
    for m in v["models"].as_array_mut().unwrap() {
        let run = m.as_object_mut().unwrap().remove("run").unwrap();
        assert_eq!(run["status"], "complete", "{run}");
    }
    v
}

/// A whole evaluation of three models, one device at a time, cut four times
/// (the host before its first run, the host after its first run, the device
/// in the middle of the second model, the host during the last) and resumed
/// each time with `quba eval --resume RUNS_DIR`: every model of the original
/// command is evaluated, the ones never started included, and results.json
/// equals the uninterrupted evaluation's.
#[test]
fn a_whole_evaluation_resumes_from_its_runs_directory() {
    let t = tmp!("whole-eval");
    let models = ["models/zoo/cnn-baseline.fp32.onnx", "models/zoo/cnn-baseline.int8.onnx", "models/zoo/mobilenet-relu6.fp32.onnx"];
    let start = |runs: &Path, pause: &str| {
        let mut c = eval(runs, &["--jobs", "1", "--pause-ms", pause]);
        for m in models {
            c.arg("--model").arg(root().join(m));
        }
        c.args(ARGS);
        c
    };
    let resume = |runs: &Path| eval(runs, &["--jobs", "1", "--resume", runs.to_str().unwrap()]);
    let whole_runs = t.join("whole");
    let whole = start(&whole_runs, "0").spawn().unwrap();

    let runs = t.join("cut");
    // 1. The host, once the evaluation is on record but before any device ran.
    let mut host = start(&runs, "60").spawn().unwrap();
    wait_for("eval.json", || claimed(&runs).len() == 3);
    host.kill().unwrap();
    host.wait().unwrap();
    let before = claimed(&runs);
    assert!(before.iter().filter(|d| d.is_some()).count() <= 1, "{before:?}");

    // 2. The host again, once the second model's run directory is claimed.
    let mut host = resume(&runs).spawn().unwrap();
    wait_for("the second run directory", || claimed(&runs).get(1).is_some_and(|d| d.is_some()));
    host.kill().unwrap();
    host.wait().unwrap();
    let first = runs.join(claimed(&runs)[0].clone().unwrap());
    assert_eq!(Run::load(&first).unwrap().status, quba_host::ingest::RunStatus::Complete, "model 1 ran to its end before model 2 began");
    assert!(claimed(&runs)[2].is_none(), "model 3 never started");

    // 3. The device, half-way through the second model (the host keeps its
    //    records, reports the run as stopped early and goes on to model 3).
    let mut host = resume(&runs).spawn().unwrap();
    let second = runs.join(claimed(&runs)[1].clone().unwrap());
    wait_for("records of model 2", || Run::load(&second).is_ok_and(|r| r.records.len() > 20));
    let mut killed = false;
    wait_for("model 2's device", || {
        killed = device_child(host.id()).is_some_and(sigkill);
        killed || host.try_wait().unwrap().is_some()
    });
    assert!(killed, "model 2's device was gone before the kill");
    // 4. The host, during model 3.
    wait_for("the third run directory", || claimed(&runs).get(2).is_some_and(|d| d.is_some()));
    host.kill().unwrap();
    host.wait().unwrap();
    assert_ne!(Run::load(&second).unwrap().status, quba_host::ingest::RunStatus::Complete, "model 2 was cut");

    check(resume(&runs).output().unwrap(), "the last quba eval --resume RUNS_DIR");
    check(whole.wait_with_output().unwrap(), "the uninterrupted quba eval");
    let dirs = claimed(&runs);
    assert_eq!(dirs.len(), 3);
    assert_eq!([runs.join(dirs[0].as_ref().unwrap()), runs.join(dirs[1].as_ref().unwrap())], [first, second], "resumes continue the runs that began");
    for (d, w) in dirs.iter().zip(claimed(&whole_runs)) {
        let (a, b) = (Run::load(&whole_runs.join(w.unwrap())).unwrap(), Run::load(&runs.join(d.as_ref().unwrap())).unwrap());
        assert_eq!(b.status, quba_host::ingest::RunStatus::Complete);
        let sorted = |r: &Run| {
            let mut v = r.records.clone();
            v.sort_by_key(|r| (r.set, r.sample));
            v
        };
        assert_eq!(sorted(&b), sorted(&a), "{}: every record, bit for bit", b.dir.display());
    }
    assert_eq!(results_without_run_facts(&runs), results_without_run_facts(&whole_runs));
    // Resuming a finished evaluation runs nothing and writes the same results.
    let out = check(resume(&runs).output().unwrap(), "resuming a finished evaluation");
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("nothing to resume").count(), 3);
    assert_eq!(results_without_run_facts(&runs), results_without_run_facts(&whole_runs));
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn an_evaluation_is_resumed_on_its_own() {
    let t = tmp!("whole-eval-alone");
    let runs = t.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(runs.join("eval.json"), r#"{"schema": "quba-eval/1", "jobs": []}"#).unwrap();
    let out = eval(&runs, &["--resume", runs.to_str().unwrap(), t.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is resumed on its own"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}
