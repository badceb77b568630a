//! What both sides of quba-edge compute, with neither tract nor file I/O:
//!
//! - [`metrics`]: softmax and argmax (the device decides with them), and the
//!   dimension formulas with their intervals (the host reports with them);
//! - [`benchmark`]: each benchmark's label spaces and how a model's class
//!   vector becomes a decision in them (device) or a category name (host);
//! - [`Keys`]: which (probe set, sample) pairs a run holds (the device skips
//!   them on resume, the host refuses duplicates).
//!
//! A crate of its own so that the host's analysis builds and tests without
//! the runtime, and the device binary links no report code.

pub mod benchmark;
mod keys;
pub mod metrics;
/// The wire format (`crates/quba-wire`).
pub use quba_wire as protocol;

pub use keys::Keys;

/// Lower-case hex of a byte string (sha256 digests, tokens).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
