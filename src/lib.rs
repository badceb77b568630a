//! quba-edge: how well-behaved an image classifier is on the hardware it
//! ships on — the nine QUBA dimensions, measured on the board, computed on
//! the host.
//!
//! This crate is the device side, what `quba-device` links:
//! - input: [`data`] (dataset layouts, decoding, the input pipeline),
//!   [`synth`] (the synthetic benchmark, rendered in memory), [`corrupt`]
//!   (the 15 corruptions × 5 severities);
//! - the model: [`engine`] (tract, fp32 and int8), [`int8`] (quba's integer
//!   kernels), [`cuda`] (`--backend cuda`), [`grad`] (the gradient program),
//!   [`attack`] (FGSM, PGD), [`bench`] (timing the engine alone);
//! - the run: [`suite`] (which probes, sharding, resume, the run loop) and
//!   [`transport`] (where the frames go).
//!
//! The other crates of the workspace:
//! - `quba-wire` ([`protocol`]): the stream's messages and framing;
//! - `quba-common`: metrics and benchmark mappings, used on both sides
//!   (re-exported here as [`metrics`] and [`benchmark`]);
//! - `quba-host`: ingest, reports, QUBA, comparisons, boards — no tract. This
//!   crate depends on it only with the `host` feature, for [`eval`] (the host
//!   driving device runs) and the `quba` binary; the device binary is built
//!   without it.

pub mod attack;
pub mod bench;
pub mod corrupt;
pub mod cuda;
pub mod data;
pub mod engine;
pub mod execution;
#[cfg(feature = "host")]
pub mod eval;
pub mod grad;
pub mod int8;
pub mod jpeg;
pub mod suite;
pub mod synth;
pub mod transport;

pub use quba_common::{benchmark, metrics};
/// The wire format, in its own crate (`crates/quba-wire`).
pub use quba_wire as protocol;
