//! quba-edge's host side, everything that needs no model runtime: receiving
//! a device's stream into a run directory, and computing the nine
//! dimensions, QUBA, comparisons and reports from stored runs.
//!
//! - receiving: [`ingest`] (a stream into a run directory, resuming one),
//!   [`listen`] (boards over TCP), [`merge`] (shard runs into one run);
//! - analysing: [`report`] (records → dimensions), [`resample`] (the paired
//!   bootstrap behind every interval), [`quba`]
//!   (normalisation, weights, score), [`compare`] (paired run-vs-run);
//! - writing: [`output`] (results.json, the table, the report files), [`html`],
//!   [`export`] (CSV, xlsx, jsonl);
//! - reaching boards: [`board`] (profiles in `targets/`), [`deploy`] (SSH),
//!   [`progress`] (what a terminal shows while runs stream in).
//!
//! It does not link tract: `cargo test -p quba-host` builds in a fraction of
//! the root crate's time, and the device binary cannot reach into it (the
//! root crate depends on this one only for the `quba` binary).

pub mod board;
pub mod compare;
pub mod deploy;
pub mod export;
pub mod html;
pub mod ingest;
pub mod listen;
pub mod merge;
pub mod output;
pub mod progress;
pub mod quba;
pub mod report;
pub mod resample;

pub use quba_common::{benchmark, metrics};
/// The wire format (`crates/quba-wire`).
pub use quba_wire as protocol;

/// Files shipped in the source tree (the zoo, the study's table, board
/// profiles): from a checkout the relative path works, elsewhere the
/// build-time location of the checkout is the fallback.
pub fn shipped(rel: &str) -> std::path::PathBuf {
    let here = std::path::PathBuf::from(rel);
    if here.exists() {
        here
    } else {
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(rel)
    }
}
