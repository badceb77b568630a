//! A run directory's JSON files: the manifest and the resume list.

use serde::{Deserialize, Serialize};

use crate::frame::DecodeStats;
use crate::message::{Header, ProbeSet};

/// What an interrupted run already holds, handed to the device that resumes
/// it (`quba-device run --resume-from`): the (probe set, sample) keys of
/// every record and failure the host has. The device redoes the rest, in the
/// same batches as before, so the resumed run equals an uninterrupted one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub records: Vec<(ProbeSet, u32)>,
    pub failures: Vec<(ProbeSet, u32)>,
}

/// How a run ended, as its manifest says (`status`: `running`, `complete`,
/// `interrupted` or `partial`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The host is still receiving the stream (or was stopped itself before
    /// it could record how the run ended).
    Running,
    /// The device sent its End frame.
    Complete,
    /// The stream stopped before End (device killed, cable pulled, …): what
    /// was received is kept and reported as such.
    Interrupted,
    /// Merged from shards of which some were missing or unfinished (`quba
    /// merge --partial`); the manifest's `merged` names them.
    Partial,
}

/// Where a merged run came from (`quba merge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeInfo {
    /// N of `--shard K/N`.
    pub shards: u32,
    /// Shard indices merged, missing, and merged although they did not finish.
    pub merged: Vec<u32>,
    pub missing: Vec<u32>,
    pub unfinished: Vec<u32>,
    /// The shard run directories, in shard order.
    pub sources: Vec<String>,
}

/// A run directory's `manifest.json` (written by the host, replaced
/// atomically): what the run is and how it ended. The frames themselves are
/// in `records.qlog`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub status: RunStatus,
    pub source: String,
    pub header: Option<Header>,
    pub records: u64,
    pub failures: u64,
    pub decode: DecodeStats,
    pub host_tool_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// How `quba eval` started the device for a run, so `quba eval --resume`
/// can start it again with the same arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// `quba-device run` arguments (`RunArgs::to_args`), the model as a path
    /// on this host: an SSH resume copies it to the board again.
    pub args: Vec<String>,
}
