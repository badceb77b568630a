//! A run directory's JSON files: the manifest and the resume list.

use serde::{Deserialize, Serialize};

use crate::frame::{DecodeStats, Frame};
use crate::message::{Header, Message, ProbeSet};

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
/// `interrupted`, `partial` or `no_header`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The host is still receiving the stream (or was stopped itself before
    /// it could record how the run ended).
    Running,
    /// The device sent its End frame.
    Complete,
    /// No End frame arrived: the stream stopped before it (device killed,
    /// cable pulled, …) or the End itself was damaged (the manifest's `lost`
    /// says where). What was received is kept and reported as such; the
    /// device's own counts and timings are unknown.
    Interrupted,
    /// Merged from shards of which some were missing or unfinished (`quba
    /// merge --partial`); the manifest's `merged` names them.
    Partial,
    /// Neither the Header frame nor an End (which repeats it) arrived: the
    /// stream was cut after its header had been damaged (`lost` says where),
    /// or carried none. The records received are kept in the log, but what
    /// they measured (model, data, pipeline) is unknown, so no report reads
    /// them; `quba eval --resume` has the device send its header again.
    NoHeader,
}

impl RunStatus {
    /// How a received run stands once its stream has stopped: an End makes
    /// it complete, and every End carries the header, so `complete` implies
    /// a header.
    pub fn received(header: Option<&Header>, ended: bool) -> RunStatus {
        match (header, ended) {
            (None, _) => RunStatus::NoHeader,
            (Some(_), true) => RunStatus::Complete,
            (Some(_), false) => RunStatus::Interrupted,
        }
    }
}

/// The run header a log's frames establish: the last `Header` frame's, or,
/// where none of those arrived, the copy in the last `End`. First-hand wins
/// because a resumed run holds a header per session and the copy is only
/// ever a stand-in for a lost one.
pub fn header_of(frames: &[Frame]) -> Option<&Header> {
    let last = |copy: bool| {
        frames.iter().rev().find_map(|f| match &f.message {
            Message::Header(h) if !copy => Some(h),
            Message::End(e) if copy => Some(&*e.header),
            _ => None,
        })
    };
    last(false).or_else(|| last(true))
}

/// A frame that carried facts no frame the host did receive repeats, lost
/// in transit: which one, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub frame: LostFrame,
    /// `[from, to)`: the bytes of the stream (as the host read it from the
    /// manifest's `source`, counted from the session's first byte) that did
    /// not decode where the frame belonged.
    pub bytes: [u64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostFrame {
    Header,
    End,
}

impl LostFrame {
    /// What a report cannot know without the frame.
    pub fn facts(self) -> &'static str {
        match self {
            LostFrame::Header => "what the run measured (model, dataset, pipeline, probe sets, seed, target)",
            LostFrame::End => "the device's own account (record and failure counts, load and wall time, peak memory, per-stage timings)",
        }
    }
}

impl core::fmt::Display for Lost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.frame {
            LostFrame::Header => "Header",
            LostFrame::End => "End",
        };
        let [from, to] = self.bytes;
        write!(f, "the {} bytes from stream byte {from}, where the {name} frame belonged, did not decode", to - from)
    }
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
    /// Frames lost with facts no other frame repeats, as the last session
    /// left them (a resumed session that receives its header clears a lost
    /// one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<Lost>,
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
