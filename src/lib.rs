//! quba-edge: how well-behaved an image classifier is on the hardware it
//! ships on — the nine QUBA dimensions, measured on the board, computed on
//! the host.
//!
//! The device side (`protocol`, `data`, `engine`, `suite`, `transport`) is
//! what `quba-device` links; the host side adds `report` and the table reader
//! in `quba` behind the `host` feature. `metrics` and `quba` are pure and
//! build everywhere (the device needs softmax and argmax).

pub mod bench;
pub mod benchmark;
pub mod corrupt;
pub mod cuda;
pub mod attack;
pub mod data;
pub mod engine;
pub mod grad;
pub mod int8;
pub mod metrics;
/// The wire format, in its own crate (`crates/quba-wire`).
pub use quba_wire as protocol;
pub mod quba;
#[cfg(feature = "host")]
pub mod progress;
#[cfg(feature = "host")]
pub mod report;
#[cfg(feature = "host")]
pub mod compare;
#[cfg(feature = "host")]
pub mod board;
#[cfg(feature = "host")]
pub mod deploy;
#[cfg(feature = "host")]
pub mod export;
#[cfg(feature = "host")]
pub mod html;
#[cfg(feature = "host")]
pub mod merge;
pub mod suite;
pub mod synth;
pub mod transport;
