//! Sharding (`--shard K/N`) and `quba merge`, with the real binaries.
//!
//! Four shard runs merged must give the whole run *exactly*: the same
//! records bit for bit and the same report (values, intervals, parts), on
//! the synthetic benchmark with every kind of probe set (clean, the eight
//! shifted sets, generated corruptions, attacks) and on an image folder.
//! A batch size that does not divide the shards makes every shard batch its
//! images differently from the whole run. Shards that do not belong together
//! are refused with the directory and the field named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use quba_host::report::Run;
use serde_json::Value;
use crate::util::*;

fn check(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "unexpectedly succeeded: {cmd:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `quba eval` of one model into `runs`, optionally one shard of it; the
/// device processes run concurrently, so the caller spawns them all first.
fn spawn_eval(runs: &Path, model: &Path, args: &[&str], shard: Option<&str>) -> Child {
    let mut c = Command::new(QUBA);
    c.arg("eval").arg("--model").arg(model).args(args).args(["--bootstrap", "0", "--progress", "quiet", "--runs-dir"]).arg(runs);
    if let Some(s) = shard {
        c.args(["--shard", s]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The one run directory `quba eval` made under `runs`.
fn run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> =
        std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("manifest.json").exists()).collect();
    assert_eq!(dirs.len(), 1, "{}: {dirs:?}", runs.display());
    dirs[0].clone()
}

/// The whole run and its four shards, evaluated side by side.
struct Fixture {
    whole: PathBuf,
    shards: Vec<PathBuf>,
}

fn evaluate(name: &str, model: &Path, args: &[&str]) -> Fixture {
    let t = tmp!(name);
    let mut children = vec![("whole".to_string(), spawn_eval(&t.join("whole"), model, args, None))];
    for k in 0..4 {
        let shard = format!("{k}/4");
        children.push((shard.clone(), spawn_eval(&t.join(format!("shard{k}")), model, args, Some(&shard))));
    }
    for (what, c) in children {
        check(c.wait_with_output().unwrap(), &format!("quba eval {what}"));
    }
    Fixture { whole: run_dir(&t.join("whole")), shards: (0..4).map(|k| run_dir(&t.join(format!("shard{k}")))).collect() }
}

fn merge(shards: &[&Path], out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(QUBA);
    c.arg("merge").args(shards).arg("--out").arg(out).args(extra);
    c
}

fn report(dir: &Path) -> Value {
    let out = check(
        Command::new(QUBA).arg("report").arg(dir).args(["--json", "--bootstrap", "100"]).output().unwrap(),
        "quba report",
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["models"][0].take()
}

/// Merging the four shards gives the whole run, and each shard ran its
/// share of every probe set.
fn assert_merge_is_whole(f: &Fixture, out: &Path) {
    let shards: Vec<&Path> = f.shards.iter().map(PathBuf::as_path).collect();
    check(merge(&shards, out, &[]).output().unwrap(), "quba merge");
    assert_same_run(&f.whole, out);
    let whole = Run::load(&f.whole).unwrap();
    let mut per_shard = Vec::new();
    for dir in &f.shards {
        let r = Run::load(dir).unwrap();
        let mut sets: Vec<_> = r.header.probes.clone();
        sets.sort();
        let mut whole_sets = whole.header.probes.clone();
        whole_sets.sort();
        assert_eq!(sets, whole_sets, "a shard lists every probe set");
        for set in &whole.header.probes {
            let n = r.records.iter().filter(|x| x.set == *set).count();
            let total = whole.records.iter().filter(|x| x.set == *set).count();
            assert!((n * 4).abs_diff(total) <= 3, "{}: {n} of {total} records of {}", dir.display(), set.name());
        }
        per_shard.push(r.records.len());
    }
    assert_eq!(per_shard.iter().sum::<usize>(), whole.records.len(), "{per_shard:?}");
}

/// `merged` is `whole`: records, failures, header (but its run id) and every
/// number of the report, with intervals.
fn assert_same_run(whole_dir: &Path, out: &Path) {
    let (whole, merged) = (Run::load(whole_dir).unwrap(), Run::load(out).unwrap());
    let sorted = |r: &Run| {
        let mut v = r.records.clone();
        v.sort_by_key(|r| (r.set, r.sample));
        v
    };
    let whole_records = sorted(&whole);
    assert!(whole_records.len() > 100, "{} records", whole_records.len());
    assert_eq!(sorted(&merged), whole_records, "every record, bit for bit");
    assert_eq!(merged.failures, whole.failures);
    let mut header = merged.header.clone();
    header.run_id = whole.header.run_id.clone();
    assert_eq!(header, whole.header);
    // Timings differ run to run; the images each probe group saw do not.
    let images = |r: &Run| {
        let mut v: Vec<_> = r.end.as_ref().expect("End").stages.iter().map(|s| (s.group, s.images)).collect();
        v.sort_by_key(|(g, _)| *g as u8);
        v
    };
    assert_eq!(images(&merged), images(&whole), "stages add up per probe group");

    let (mut a, mut b) = (report(whole_dir), report(out));
    for v in [&mut a, &mut b] {
        let run = v.as_object_mut().unwrap().remove("run").unwrap();
        assert_eq!(run["status"], "complete");
        assert_eq!(run["records"].as_u64(), Some(whole.records.len() as u64));
    }
    assert_eq!(a, b, "the merged run's report equals the whole run's");
    for d in ["accuracy", "calibration_error", "class_balance"] {
        assert!(a["dimensions"][d].is_number(), "{d} measured: {a}");
    }
}

/// The zoo's CNN on the synthetic benchmark: the whole run and four shards.
const SYNTH_MODEL: &str = "models/zoo/cnn-baseline.fp32.onnx";
const SYNTH_ARGS: &str = "--data synth --per-class 2 --corruption-per-class 1 --attack-per-class 1 --batch 3 --seed 3";

fn synth() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| evaluate("synth", &root().join(SYNTH_MODEL), &SYNTH_ARGS.split(' ').collect::<Vec<_>>()))
}

#[test]
fn four_synthetic_shards_merge_into_the_whole_run_exactly() {
    let f = synth();
    let out = tmp!("synth-merged").join("run");
    assert_merge_is_whole(f, &out);
    let rep = report(&out);
    for d in ["adversarial_robustness", "corruption_robustness", "ood_robustness", "shape_bias", "object_focus"] {
        assert!(rep["dimensions"][d].is_number(), "{d} measured: {}", rep["missing"]);
    }
}

/// The tiny CNN's arguments: the tiny image folder (10 classes of 12), 7 per
/// class, so classes do not divide by 4; a flag in `extra` replaces its default.
fn tiny_args(extra: &[&str]) -> Vec<String> {
    let data = root().join("tests/data/tiny/val").display().to_string();
    let defaults = [
        ("--data", data.as_str()),
        ("--per-class", "7"),
        ("--corruption-per-class", "3"),
        ("--attack-per-class", "3"),
        ("--batch", "5"),
        ("--severities", "1,5"),
    ];
    let kept = defaults.iter().filter(|(flag, _)| !extra.contains(flag)).flat_map(|(f, v)| [*f, *v]);
    kept.chain(extra.iter().copied()).map(String::from).collect()
}

fn tiny_model(name: &str) -> PathBuf {
    root().join("models/tiny").join(name)
}

/// The tiny CNN's whole run and shards, shared by the refusal tests.
fn tiny() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let args = tiny_args(&[]);
        evaluate("tiny", &tiny_model("tiny-cnn.fp32.onnx"), &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
}

#[test]
fn four_folder_shards_merge_into_the_whole_run_exactly() {
    let f = tiny();
    assert_merge_is_whole(f, &tmp!("tiny-merged").join("run"));
}

/// One more shard run of a tiny model, with `extra` arguments.
fn odd_shard(name: &str, model: &str, shard: &str, extra: &[&str]) -> PathBuf {
    let runs = tmp!(name);
    let args = tiny_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(spawn_eval(&runs, &tiny_model(model), &args, Some(shard)).wait_with_output().unwrap(), name);
    run_dir(&runs)
}

#[test]
fn shards_that_do_not_belong_together_are_refused() {
    let f = tiny();
    let s: Vec<&Path> = f.shards.iter().map(PathBuf::as_path).collect();
    let t = tmp!("refuse");

    let int8 = odd_shard("int8", "tiny-cnn.int8.onnx", "2/4", &[]);
    let e = failure(&mut merge(&[s[0], s[1], &int8, s[3]], &t.join("a"), &[]));
    assert!(e.contains(&int8.display().to_string()) && e.contains("model_sha256"), "{e}");

    let seed = odd_shard("seed", "tiny-cnn.fp32.onnx", "2/4", &["--seed", "9"]);
    let e = failure(&mut merge(&[s[0], s[1], &seed, s[3]], &t.join("b"), &[]));
    assert!(e.contains(&seed.display().to_string()) && e.contains("seed 9 (vs 0)"), "{e}");

    let attacks = odd_shard("attacks", "tiny-cnn.fp32.onnx", "2/4", &["--attack-per-class", "2"]);
    let e = failure(&mut merge(&[s[0], s[1], &attacks, s[3]], &t.join("c"), &[]));
    assert!(e.contains("attack_per_class 2 (vs 3)") && e.contains("dataset_fingerprint"), "{e}");

    let thirds = odd_shard("thirds", "tiny-cnn.fp32.onnx", "1/3", &[]);
    let e = failure(&mut merge(&[s[0], &thirds, s[2], s[3]], &t.join("d"), &[]));
    assert!(e.contains(&thirds.display().to_string()) && e.contains("share N"), "{e}");

    // A protocol-2 run: its frames would not decode; the manifest says which version wrote it.
    let old = t.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(s[3].join("records.qlog"), old.join("records.qlog")).unwrap();
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(s[3].join("manifest.json")).unwrap()).unwrap();
    m["header"]["protocol"] = 2.into();
    std::fs::write(old.join("manifest.json"), m.to_string()).unwrap();
    let e = failure(&mut merge(&[s[0], s[1], s[2], &old], &t.join("e"), &[]));
    assert!(e.contains(&old.display().to_string()) && e.contains("protocol version 2"), "{e}");

    let e = failure(&mut merge(&[s[0], s[1], s[2], s[3], &f.whole], &t.join("f"), &[]));
    assert!(e.contains(&f.whole.display().to_string()) && e.contains("not a shard run"), "{e}");
    assert!(!t.join("a").exists() && !t.join("f").exists(), "a refused merge writes nothing");
}

#[test]
fn duplicate_shards_are_refused() {
    let f = tiny();
    let s: Vec<&Path> = f.shards.iter().map(PathBuf::as_path).collect();
    let t = tmp!("dup");
    let e = failure(&mut merge(&[s[0], s[1], s[1], s[2], s[3]], &t.join("a"), &[]));
    assert!(e.contains("both shard 1/4") && e.contains("given twice"), "{e}");
    // A copy under another name is the same shard too.
    let copy = t.join("copy-of-2");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["manifest.json", "records.qlog"] {
        std::fs::copy(s[2].join(file), copy.join(file)).unwrap();
    }
    let e = failure(&mut merge(&[s[0], s[1], s[2], &copy, s[3]], &t.join("b"), &[]));
    assert!(e.contains(&copy.display().to_string()) && e.contains(&s[2].display().to_string()) && e.contains("both shard 2/4"), "{e}");
}

#[test]
fn missing_shards_are_named_and_merge_only_when_partial() {
    let f = tiny();
    let s: Vec<&Path> = f.shards.iter().map(PathBuf::as_path).collect();
    let t = tmp!("missing");
    let e = failure(&mut merge(&[s[3], s[0]], &t.join("a"), &[]));
    assert!(e.contains("shards 1, 2 of 4 missing (given: 0, 3)") && e.contains("--partial"), "{e}");

    let out = t.join("partial");
    check(merge(&[s[3], s[0]], &out, &["--partial"]).output().unwrap(), "quba merge --partial");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "partial");
    assert_eq!(m["merged"]["missing"], serde_json::json!([1, 2]));
    assert_eq!(m["merged"]["merged"], serde_json::json!([0, 3]));
    let run = Run::load(&out).unwrap();
    assert!(run.end.is_none(), "a partial run has no End frame");
    let n: usize = [s[0], s[3]].iter().map(|d| Run::load(d).unwrap().records.len()).sum();
    assert_eq!(run.records.len(), n);
    let table = String::from_utf8(check(Command::new(QUBA).arg("report").arg(&out).output().unwrap(), "report").stdout).unwrap();
    assert!(table.contains("partial merge"), "{table}");

    // Into a directory that holds something: refused, nothing overwritten.
    let e = failure(&mut merge(&s, &out, &[]));
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn shard_out_of_range_is_a_clear_error() {
    for (bad, why) in [("4/4", "out of range for N = 4 (valid: 0…3)"), ("0/0", "N = 0"), ("1", "K/N")] {
        let e = failure(Command::new(DEVICE).args(["run", "--data", "synth", "--model"]).arg(root().join("models/zoo/cnn-baseline.fp32.onnx")).args(["--shard", bad]));
        assert!(e.contains(why), "quba-device --shard {bad}: {e}");
        let e = failure(Command::new(QUBA).args(["eval", "--shard", bad]));
        assert!(e.contains(why), "quba eval --shard {bad}: {e}");
    }
}

/// The fleet recipes, run here as their schedulers would run them (kubectl
/// and Slurm are not available): the Indexed Job's container command once per
/// completion index with the pod's environment, the array script once per
/// task with Slurm's variables, then `fleet/merge.sh`. Only the shared
/// volume's path and `QUBA_ARGS` (a small subset instead of the recipes'
/// overnight size) are replaced; the merged runs must equal the whole run.
#[test]
fn fleet_recipes_run_here_and_merge_into_the_whole_run() {
    let whole = &synth().whole;
    let t = tmp!("fleet");
    let small = [("QUBA_ARGS", SYNTH_ARGS)];

    // Kubernetes: the manifest's structure, then its container command per index.
    let yaml = root().join("fleet/k8s-indexed-job.yaml");
    let parsed = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(&yaml)
        .output()
        .expect("python3 (with PyYAML) parses the Kubernetes manifest");
    let docs: Vec<Value> = serde_json::from_slice(&check(parsed, "parsing the YAML").stdout).unwrap();
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    let pvc = docs.iter().find(|d| d["kind"] == "PersistentVolumeClaim").expect("the shared volume's claim");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/arch"], "arm64");
    let c = &pod["containers"][0];
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
        .collect();
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("env {name}"));
    let n = job["spec"]["completions"].as_u64().unwrap();
    assert_eq!(n, 4);
    assert_eq!(var("QUBA_SHARDS"), n.to_string(), "the pods' N is the Job's completions");
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == var("QUBA_SHARED").as_str()).expect("QUBA_SHARED is mounted");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"]);
    assert!(pvc["spec"]["accessModes"].as_array().unwrap().iter().any(|m| m == "ReadWriteMany"), "pods on many nodes share it");
    let argv: Vec<String> =
        c["command"].as_array().unwrap().iter().chain(c["args"].as_array().into_iter().flatten()).map(|a| a.as_str().unwrap().to_string()).collect();

    let k8s = shared_volume(&t.join("k8s"), &var("QUBA_MODEL"));
    let pods: Vec<Child> = (0..n)
        .map(|k| {
            Command::new(&argv[0])
                .args(&argv[1..])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("QUBA_SHARED", &k8s)
                .envs(small)
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, p) in pods.into_iter().enumerate() {
        check(p.wait_with_output().unwrap(), &format!("pod {k}"));
    }
    fleet_merge(&k8s.join("shards").join(var("QUBA_RUN_ID")), &t.join("k8s-merged"));
    assert_same_run(whole, &t.join("k8s-merged"));

    // Slurm: the array script per task, its N from its own --array line.
    let script = root().join("fleet/slurm-array.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let array = text.lines().find_map(|l| l.strip_prefix("#SBATCH --array=")).expect("an #SBATCH --array line");
    assert_eq!(array, "0-3", "tasks 0..N-1, N = 4");
    let default_model = text.lines().find_map(|l| l.trim().strip_prefix("export QUBA_MODEL=${QUBA_MODEL:-")).unwrap().trim_end_matches('}');
    let slurm = shared_volume(&t.join("slurm"), default_model);
    let task = |k: u32, min: u32, max: u32| {
        let mut c = Command::new("bash");
        c.arg(&script)
            .current_dir(&t)
            .env("SLURM_SUBMIT_DIR", root())
            .env("SLURM_ARRAY_JOB_ID", "777")
            .env("SLURM_ARRAY_TASK_ID", k.to_string())
            .env("SLURM_ARRAY_TASK_MIN", min.to_string())
            .env("SLURM_ARRAY_TASK_MAX", max.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", (max - min + 1).to_string())
            .env("QUBA_SHARED", &slurm)
            .envs(small)
            .env_remove("QUBA_MODEL")
            .env_remove("QUBA_RUN_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let tasks: Vec<Child> = (0..4).map(|k| task(k, 0, 3).spawn().unwrap()).collect();
    for (k, p) in tasks.into_iter().enumerate() {
        check(p.wait_with_output().unwrap(), &format!("array task {k}"));
    }
    let e = failure(&mut task(1, 1, 4));
    assert!(e.contains("--array must be 0-(N-1)"), "{e}");
    fleet_merge(&slurm.join("shards/quba-777"), &t.join("slurm-merged"));
    assert_same_run(whole, &t.join("slurm-merged"));
}

/// What the recipes expect on the shared volume (docs/fleet.md): the device
/// binary, the per-shard script and the model with its sidecar.
fn shared_volume(dir: &Path, model: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("fleet")).unwrap();
    std::os::unix::fs::symlink(DEVICE, dir.join("bin/quba-device")).unwrap();
    std::fs::copy(root().join("fleet/run-shard.sh"), dir.join("fleet/run-shard.sh")).unwrap();
    let src = root().join(SYNTH_MODEL);
    let dst = dir.join(model);
    assert_eq!(dst.file_name(), src.file_name(), "the recipes' model is the one this test's whole run used");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&src, &dst).unwrap();
    std::fs::copy(src.with_extension("json"), dst.with_extension("json")).unwrap();
    dir.to_path_buf()
}

fn fleet_merge(shards: &Path, out: &Path) {
    let files = std::fs::read_dir(shards).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "qlog")).count();
    assert_eq!(files, 4, "{}: one finished file per shard", shards.display());
    check(
        Command::new("sh").arg(root().join("fleet/merge.sh")).arg(shards).arg(out).env("QUBA", QUBA).output().unwrap(),
        "fleet/merge.sh",
    );
}
