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

/// A deliberately high estimate of the device's peak RSS (docs/boards.md):
/// the process and tract's code, plus the weights held as f32 (int8 QDQ
/// weights are dequantised, ×4) in the forward plan and again in the
/// gradient program with its saved activations.
pub fn estimated_peak_bytes(model_file_bytes: u64, int8: bool) -> u64 {
    const BASE: u64 = 48 << 20;
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
