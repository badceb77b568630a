//! The device → host stream of quba-edge: message types and their framing.
//!
//! A crate of its own (serde, postcard, COBS, CRC-32, heapless; no tract, no
//! files) so that both binaries share it, another program can read a board's
//! stream without linking a runtime, and the fuzz targets (`fuzz/`) build in
//! seconds; quba-edge re-exports it as `quba_edge::protocol`. `docs/wire-format.md` is its one-page description. On
//! the device, a record allocates at most its probability vector (a boxed
//! fixed-capacity `heapless::Vec`, only where the record carries one) and
//! [`FrameEncoder`] writes into fixed arrays it owns.

#[cfg(test)]
mod doc_order;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod frame;
mod message;
mod run_dir;

pub use frame::{decode_all, DecodeStats, EncodeError, Frame, FrameDecoder, FrameEncoder, MAX_FRAME, MAX_PAYLOAD};
pub use message::{
    Attack, Backend, CorruptionMode, End, Execution, Failure, Header, Interpolation, Mapping, Message, OodSet, Outputs, Pipeline,
    Precision, ProbeGroup, ProbeSet, Probs, Record, Shard, Stage, CORRUPTIONS, MAX_CLASSES, PROTOCOL_VERSION,
};
pub use run_dir::{header_of, Launch, Lost, LostFrame, Manifest, MergeInfo, Resume, RunStatus};
