//! `--backend cuda` end to end through the real binaries.
//!
//! Where the binary was built without the `cuda` feature (the README's
//! `cargo test --release`), or no NVIDIA driver is installed (CI, most
//! laptops), the run must stop before any image with an error that says what
//! is missing and that `--backend cpu` works — also on a machine that has a
//! driver. Where both are (the GPU machine of docs/parity.md, `cargo test
//! --release --features cuda`), the same test runs the model on the GPU and
//! checks that the header says where its nodes ran and that the decisions
//! agree with the CPU run.

use std::process::Command;

use serde_json::Value;
use crate::util::*;

/// Whether the binaries under test can run CUDA here: built with the
/// feature, on a machine with the driver.
fn cuda_runs_here() -> bool {
    cfg!(feature = "cuda") && std::path::Path::new("/proc/driver/nvidia/version").exists()
}

fn eval(dir: &std::path::Path, backend: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quba"))
        .arg("eval")
        .arg("--model")
        .arg(root().join("models/tiny/tiny-cnn.fp32.onnx"))
        .arg("--data")
        .arg(root().join("tests/data/tiny/val"))
        .args(["--probes", "clean", "--bootstrap", "0", "--json", "--backend", backend, "--runs-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn cuda_backend_runs_on_a_gpu_or_says_why_not() {
    let t = std::env::temp_dir().join(format!("quba-cuda-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    let gpu = eval(&t.join("gpu"), "cuda");
    if !cuda_runs_here() {
        assert!(!gpu.status.success(), "--backend cuda succeeded without the cuda feature or an NVIDIA driver");
        let err = String::from_utf8_lossy(&gpu.stderr);
        assert!(err.contains("--backend cuda") && err.contains("--backend cpu"), "{err}");
        if !cfg!(feature = "cuda") {
            assert!(err.contains("--features cuda"), "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        // Nothing was measured, so nothing may look like a result.
        assert!(!t.join("gpu/results.json").exists());
        let _ = std::fs::remove_dir_all(&t);
        return;
    }
    assert!(gpu.status.success(), "{}", String::from_utf8_lossy(&gpu.stderr));
    let cpu = eval(&t.join("cpu"), "cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let (g, c): (Value, Value) = (serde_json::from_slice(&gpu.stdout).unwrap(), serde_json::from_slice(&cpu.stdout).unwrap());
    let (g, c) = (&g["models"][0], &c["models"][0]);
    assert_eq!(g["backend"], "tract-cuda");
    let placement = g["protocol"]["placement"].as_str().unwrap();
    eprintln!("{placement}");
    assert!(placement.starts_with("cuda: ") && !placement.starts_with("cuda: 0 of"), "{placement}");
    let out = Command::new(env!("CARGO_BIN_EXE_quba"))
        .args(["compare", c["run"]["dir"].as_str().unwrap(), g["run"]["dir"].as_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("GPU vs CPU top-1 agreement {}", cmp["agreement"]);
    assert!(cmp["agreement"].as_f64().unwrap() >= 0.995, "{cmp}");
    let _ = std::fs::remove_dir_all(&t);
}
