//! Cost of the input gradient: forward+backward time over forward time for
//! each zoo model (batch 1, tract optimised, one thread), and the peak memory
//! of a process that holds both plans. Each model runs in a child process so
//! its peak RSS is its own.
//!
//! `cargo bench --bench grad` (release build); prints a markdown table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quba_edge::engine::Engine;
use quba_edge::grad::GradModel;


fn median_ms(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn one(path: &Path, reps: usize) {
    // The input side is the model's own (its sidecar's crop): 64 for the zoo, 224 for Lite0.
    let meta = std::fs::read_to_string(quba_edge::suite::sidecar_path(path)).expect("model sidecar");
    let side = quba_edge::suite::parse_meta(&meta).expect("valid sidecar").pipeline.crop as usize;
    let engine = Engine::load(path, 1, side).expect("forward model");
    let t0 = Instant::now();
    let grad = GradModel::load(path, 1).expect("gradient model");
    let build_s = t0.elapsed().as_secs_f64();
    let x: Vec<f32> = (0..3 * side * side).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let fwd = median_ms(|| drop(engine.logits(&x, 1).unwrap()), reps);
    let fb = median_ms(|| drop(grad.logits_and_grad(&x, &[3]).unwrap()), reps);
    println!(
        "| {} | {} | {fwd:.2} | {fb:.2} | {:.2} | {build_s:.2} | {:.0} |",
        path.file_stem().unwrap().to_string_lossy(),
        grad.kind().as_str(),
        fb / fwd,
        peak_rss_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = std::env::var("GRAD_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(Path::new(&args[i + 1]), reps);
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/zoo");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("models/zoo")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned().unwrap_or_default();
    println!("| model | gradient | forward ms | fwd+bwd ms | ratio | build+optimise s | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|");
    for m in models.iter().filter(|m| m.to_string_lossy().contains(&filter)) {
        let status =
            std::process::Command::new(std::env::current_exe().unwrap()).arg("--one").arg(m).status().expect("spawn");
        assert!(status.success(), "{} failed", m.display());
    }
}
