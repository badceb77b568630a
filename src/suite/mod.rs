//! The device role: load a model and the benchmark's datasets, run every
//! probe set in batches and emit a header, one record per (probe, sample),
//! and an end frame.
//!
//! Clean records carry the full probability vector (ACE and class balance
//! need it). Shifted sets are decided on the device in their dataset's label
//! space ([`crate::benchmark`]), so a record stays small; `--full-probs`
//! keeps the model's whole vector on every record for host-side recomputation.
//!
//! The module is cut by concern: `args` holds the command-line arguments,
//! `plan` the model's sidecar and the plan of which probe sets to run, and
//! `run` the loop that runs them and writes the frames.

mod args;
mod plan;
mod run;

/// The target triple this binary was built for (set by build.rs).
pub const TARGET: &str = env!("QUBA_TARGET");
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

pub use crate::protocol::ProbeGroup;
pub use args::{DeviceArgs, RunArgs, SuiteArgs, SYNTH_ATTACK_PER_CLASS, SYNTH_CORRUPTION_PER_CLASS};
pub use plan::{parse_meta, sidecar_path, ModelMeta};
pub use run::{run, run_device};

/// Peak resident memory of this process so far (VmHWM), 0 where /proc is absent.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
