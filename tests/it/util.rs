//! What the integration tests share: the binaries under test, the source
//! tree they read fixtures from, and scratch folders.

use std::path::PathBuf;

/// The host binary, as cargo built it for this test run.
pub const QUBA: &str = env!("CARGO_BIN_EXE_quba");
/// The device binary for this machine.
pub const DEVICE: &str = env!("CARGO_BIN_EXE_quba-device");

/// The checkout: models, fixtures and board profiles are read from here.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty scratch folder for one test (`tmp!("name")`); the calling
/// module's path is part of its name, so tests in different modules may use
/// the same name.
pub fn tmp_dir(module: &str, name: &str) -> PathBuf {
    let scope = module.rsplit("::").next().unwrap_or(module);
    let d = std::env::temp_dir().join(format!("quba-it-{}-{scope}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `f` until it holds; a test that waits on a process it started
/// fails after two minutes rather than hanging CI.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Starts `quba listen ARGS DIR` (DIR: the value of a last `--run-dir` or
/// `--runs-dir`) and returns it with the address it printed.
pub fn listen(args: &[&str], dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut host = Command::new(QUBA).arg("listen").args(args).arg(dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let first = std::io::BufReader::new(host.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let addr = first.split_whitespace().nth(2).unwrap().to_string();
    (host, addr)
}

macro_rules! tmp {
    ($name:expr) => {
        $crate::util::tmp_dir(module_path!(), &$name)
    };
}

/// A little-endian f16 file (stored reference gradients) as f32.
pub fn read_f16(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(2).map(|c| tract_onnx::prelude::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
}

/// Cosine similarity of two gradients, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}
