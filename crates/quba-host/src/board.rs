//! Board profiles (`targets/*.json`): what `quba eval --board NAME` needs to
//! know about a board — the target triple its device binary is built for,
//! the CPU tuning that build should use, how many device processes it can
//! run at once, its memory budget and a subset size that finishes overnight.
//!
//! The shipped profiles are compiled into the host binary, so `--board pi4`
//! works wherever `quba` was copied; `--board path/to/profile.json` reads a
//! user's own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    /// The hardware and OS, for people.
    pub board: String,
    pub triple: String,
    pub cpu: String,
    /// RUSTFLAGS for the device build on this board (CPU tuning).
    pub rustflags: String,
    /// Command prefix that runs the device binary here (QEMU profiles); none for real boards.
    #[serde(default)]
    pub launcher: Option<String>,
    /// Device processes at once; 0 means one per host core (emulated boards).
    pub jobs: usize,
    pub memory_budget_mb: u64,
    /// Recommended images per class for the clean and shifted sets.
    pub per_class: usize,
    pub notes: String,
}

const SHIPPED: [(&str, &str); 8] = [
    ("pi3-armv7", include_str!("../../../targets/pi3-armv7.json")),
    ("pi3-aarch64", include_str!("../../../targets/pi3-aarch64.json")),
    ("pi4", include_str!("../../../targets/pi4.json")),
    ("pi5", include_str!("../../../targets/pi5.json")),
    ("jetson-nano", include_str!("../../../targets/jetson-nano.json")),
    ("jetson-orin-nano", include_str!("../../../targets/jetson-orin-nano.json")),
    ("qemu-aarch64", include_str!("../../../targets/qemu-aarch64.json")),
    ("qemu-armv7", include_str!("../../../targets/qemu-armv7.json")),
];

/// The device binary runs on these; anything else in a profile is a typo.
const TRIPLES: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];

pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

fn parse(text: &str, origin: &str) -> Result<Board> {
    let b: Board = serde_json::from_str(text).with_context(|| format!("{origin}: not a board profile"))?;
    if !TRIPLES.contains(&b.triple.as_str()) {
        bail!("{origin}: triple {:?} is not one the device binary is built for ({})", b.triple, TRIPLES.join(", "));
    }
    if b.per_class == 0 || b.memory_budget_mb == 0 {
        bail!("{origin}: per_class and memory_budget_mb must be positive");
    }
    Ok(b)
}

/// A shipped profile by name, or a profile file by path.
pub fn load(spec: &str) -> Result<Board> {
    if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == spec) {
        return parse(text, &format!("targets/{spec}.json"));
    }
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "json") || spec.contains('/') {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read board profile {}", path.display()))?;
        return parse(&text, &path.display().to_string());
    }
    bail!("no board profile {spec:?}; shipped: {} (or give a path to a .json profile)", shipped_names().join(", "))
}

/// The cargo profile boards get (Cargo.toml: size-optimised release).
pub const DEVICE_PROFILE: &str = "device";

/// Where `cargo build --profile device --target TRIPLE` puts the device binary.
pub fn cross_device_binary(target_dir: &Path, triple: &str) -> PathBuf {
    target_dir.join(triple).join(DEVICE_PROFILE).join("quba-device")
}

impl Board {
    /// The device binary, found from the host binary's own place in the same
    /// target directory.
    pub fn device_binary(&self, host_exe: &Path) -> Option<PathBuf> {
        Some(cross_device_binary(host_exe.parent()?.parent()?, &self.triple))
    }

    /// The one command that builds this board's device binary.
    pub fn build_command(&self) -> String {
        let flags = if self.rustflags.is_empty() { String::new() } else { format!("RUSTFLAGS=\"{}\" ", self.rustflags) };
        format!("{flags}cargo build --profile {DEVICE_PROFILE} --no-default-features --bin quba-device --target {}", self.triple)
    }

    /// Refuses a model that would not fit before any time is spent on it.
    pub fn check_memory(&self, model: &Path, int8: bool) -> Result<()> {
        let bytes = std::fs::metadata(model).with_context(|| format!("cannot read {}", model.display()))?.len();
        let need = estimated_peak_bytes(bytes, int8);
        let budget = self.memory_budget_mb << 20;
        if need > budget {
            bail!(
                "{}: the device needs about {} MB for this model ({} MB file, estimate in docs/boards.md), \
                 more than the {} profile's budget of {} MB",
                model.display(),
                need >> 20,
                bytes >> 20,
                self.name,
                self.memory_budget_mb
            );
        }
        Ok(())
    }
}

/// The device's peak RSS for a suite run, estimated from the model file
/// alone (docs/boards.md): the process, tract's code, the decoded images and
/// working buffers, plus the weights held as f32 (int8 QDQ weights are
/// dequantised, ×4) four times over: the typed model, the optimised plan, the
/// gradient program's forward copy and its saved activations.
///
/// It is an upper bound on every peak measured so far (`MEASURED_PEAKS` in
/// the tests, with their sources). It does not model activations, which grow
/// with `--batch` and the input's area: those measurements are of the zoo's
/// 64-px models, and a 224-px model at a large batch can exceed it
/// (EfficientNet-Lite0 fp32 in `quba bench`, one engine: 106 MiB at batch 1,
/// 437 MiB at batch 16, docs/benchmarks.md).
pub fn estimated_peak_bytes(model_file_bytes: u64, int8: bool) -> u64 {
    // The highest suite peak measured (vit-tiny int8, 59.3 MiB in the default
    // suite, docs/suite-peaks.json) less its weights term (6.2 MiB) leaves
    // 53 MiB, above the 48 MiB this base was first set to; 64 MiB keeps
    // about 11 MiB of headroom.
    const BASE: u64 = 64 << 20;
    let f32_weights = if int8 { model_file_bytes * 4 } else { model_file_bytes };
    BASE + 4 * f32_weights
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in targets/ is shipped, and every shipped profile parses.
    #[test]
    fn shipped_profiles_match_the_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = shipped_names().iter().map(|s| s.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
        for n in shipped_names() {
            let b = load(n).unwrap();
            assert_eq!(b.name, n);
            assert_eq!(b.launcher.is_some(), n.starts_with("qemu-"), "{n}: only emulated boards run locally");
        }
    }

    #[test]
    fn unknown_board_lists_the_shipped_ones() {
        let e = load("pi9").unwrap_err().to_string();
        assert!(e.contains("pi4") && e.contains("qemu-armv7"), "{e}");
        let e = load("/nonexistent/board.json").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/board.json"), "{e}");
    }

    /// Measured peak RSS in MiB (VmHWM, x86_64, the device's own process) of
    /// a zoo model file, and where the figure is committed. The estimate must
    /// stay above every one.
    /// - The whole suite at one image per class, batch 8 (docs/boards.md,
    ///   2026-12-02): "55 MB", below 56 MiB whether that is MB or MiB
    ///   rounded down (`quba` prints `peak_rss_kb >> 10`). Under qemu-user
    ///   the same run peaks at 90.8 MiB (aarch64) and 86.2 MiB (armv7), but
    ///   that counts the emulator, which a board does not run; those are
    ///   left out.
    /// - `quba bench --batch 16 --threads 1`, one engine as in a device
    ///   process (docs/benchmarks.md, the run at 304ccee): the larger of each
    ///   file's two one-thread rows. The 2-thread rows hold two engines.
    /// - Forward and gradient plans together, batch 1 (docs/gradients.md,
    ///   `cargo bench --bench grad`).
    const MEASURED_PEAKS: [(&str, f64, &str); 33] = [
        ("vit-tiny.int8", 56.0, "suite"),
        ("cnn-baseline.fp32", 32.5, "bench"),
        ("cnn-baseline.int8", 23.4, "bench"),
        ("mobilenet-relu6.fp32", 31.4, "bench"),
        ("mobilenet-relu6.int8", 23.7, "bench"),
        ("resnet-adv.fp32", 39.4, "bench"),
        ("resnet-adv.int8", 28.4, "bench"),
        ("resnet-augmix.fp32", 39.6, "bench"),
        ("resnet-augmix.int8", 28.6, "bench"),
        ("resnet-baseline.fp32", 39.4, "bench"),
        ("resnet-baseline.int8", 29.0, "bench"),
        ("resnet-bgrand.fp32", 39.3, "bench"),
        ("resnet-bgrand.int8", 28.6, "bench"),
        ("resnet-texrand.fp32", 39.4, "bench"),
        ("resnet-texrand.int8", 28.6, "bench"),
        ("vit-tiny.fp32", 41.3, "bench"),
        ("vit-tiny.int8", 35.1, "bench"),
        ("cnn-baseline.fp32", 29.0, "gradients"),
        ("cnn-baseline.int8", 27.0, "gradients"),
        ("mobilenet-relu6.fp32", 27.0, "gradients"),
        ("mobilenet-relu6.int8", 28.0, "gradients"),
        ("resnet-adv.fp32", 41.0, "gradients"),
        ("resnet-adv.int8", 38.0, "gradients"),
        ("resnet-augmix.fp32", 41.0, "gradients"),
        ("resnet-augmix.int8", 38.0, "gradients"),
        ("resnet-baseline.fp32", 40.0, "gradients"),
        ("resnet-baseline.int8", 38.0, "gradients"),
        ("resnet-bgrand.fp32", 41.0, "gradients"),
        ("resnet-bgrand.int8", 38.0, "gradients"),
        ("resnet-texrand.fp32", 41.0, "gradients"),
        ("resnet-texrand.int8", 38.0, "gradients"),
        ("vit-tiny.fp32", 29.0, "gradients"),
        ("vit-tiny.int8", 32.0, "gradients"),
    ];

    #[test]
    fn estimate_is_above_every_measured_peak() {
        let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/zoo");
        for (model, mib, source) in MEASURED_PEAKS {
            let bytes = std::fs::metadata(zoo.join(format!("{model}.onnx"))).unwrap().len();
            let est = estimated_peak_bytes(bytes, model.ends_with(".int8")) as f64 / (1u64 << 20) as f64;
            assert!(est >= mib, "{model}: estimated {est:.1} MiB, measured {mib} MiB ({source})");
        }
        // The default suite of every zoo model (docs/suite-peaks.json; vit-tiny
        // int8 is the highest, 59.3 MiB, against 70.2 estimated).
        let peaks: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(zoo.join("../../docs/suite-peaks.json")).unwrap()).unwrap();
        let peaks = peaks["peak_rss_kb"].as_object().unwrap();
        assert_eq!(peaks.len(), 16, "every zoo run");
        for (model, kb) in peaks {
            let bytes = std::fs::metadata(zoo.join(format!("{model}.onnx"))).unwrap().len();
            let est = estimated_peak_bytes(bytes, model.ends_with(".int8"));
            assert!(est >= kb.as_u64().unwrap() << 10, "{model}: estimated {est} B, measured {kb} KiB (docs/suite-peaks.json)");
        }
    }

    #[test]
    fn memory_budget_refuses_a_model_too_big() {
        let t = std::env::temp_dir().join(format!("quba-board-{}.onnx", std::process::id()));
        std::fs::write(&t, vec![0u8; 40 << 20]).unwrap();
        let pi3 = load("pi3-armv7").unwrap();
        let e = pi3.check_memory(&t, true).unwrap_err().to_string();
        assert!(e.contains("budget of 200 MB") && e.contains("pi3-armv7"), "{e}");
        assert!(load("pi5").unwrap().check_memory(&t, false).is_ok());
        std::fs::remove_file(&t).unwrap();
    }
}
