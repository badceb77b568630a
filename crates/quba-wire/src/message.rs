//! The messages a device sends, as serde types: postcard writes their
//! fields in declaration order, so the order here *is* the wire layout
//! (`docs/wire-format.md` lists it table by table, and a test holds the two
//! together).

use serde::{Deserialize, Serialize};

/// Bumped whenever a message layout changes incompatibly. Adding a variant at
/// the end of an enum is compatible (postcard writes the discriminant as a
/// varint), so old logs stay readable by newer hosts.
pub const PROTOCOL_VERSION: u8 = 5;

/// How a benchmark's datasets relate to the model's classes; recorded in the
/// run header so the host can recompute decisions from stored full vectors.
/// (The decision rules themselves live in quba-edge's `benchmark` module.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    Identity,
    #[serde(rename = "imagenet")]
    ImageNet,
}

/// What the model's output 0 holds. A classifier exported with its softmax
/// (`nn.Softmax` at the end, Keras' `activation="softmax"`) already gives
/// probabilities; a second softmax would flatten them towards uniform and
/// silently ruin calibration error and class balance, so the device takes
/// such rows as given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outputs {
    /// Unnormalised scores; the device applies the softmax.
    #[default]
    Logits,
    /// The graph's output comes from a Softmax node (possibly behind
    /// quantise/dequantise or shape-only nodes).
    SoftmaxInGraph,
    /// No Softmax node, but the rows are already non-negative and sum to 1
    /// (a softmax written out of Exp, ReduceSum and Div, a custom op).
    RowsSumToOne,
}

impl Outputs {
    pub fn are_probabilities(self) -> bool {
        self != Outputs::Logits
    }
}

impl Mapping {
    /// The benchmark's own description decides: the study's datasets need the
    /// study's mappings; everything else is labelled in the model's classes.
    pub fn for_benchmark(name: &str) -> Mapping {
        if name == "imagenet" {
            Mapping::ImageNet
        } else {
            Mapping::Identity
        }
    }
}

/// ImageNet-1k is the widest label space the study uses.
pub const MAX_CLASSES: usize = 1000;

pub type Probs = heapless::Vec<f32, MAX_CLASSES>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// Where the classifier's forward passes run (`--backend`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// tract on the CPU (every target), with quba's integer kernels for int8
    /// convolutions (QDQ and QLinearConv alike; docs/int8.md).
    #[serde(rename = "tract-cpu")]
    #[cfg_attr(feature = "clap", value(name = "cpu"))]
    TractCpu,
    /// tract's CUDA runtime on an NVIDIA GPU (host builds with the `cuda` feature).
    #[serde(rename = "tract-cuda")]
    #[cfg_attr(feature = "clap", value(name = "cuda"))]
    TractCuda,
    /// tract alone on the CPU: int8 convolutions as tract itself runs them (QDQ
    /// as f32 between quantise and dequantise, QLinearConv through im2col), for
    /// comparison with the integer kernels.
    #[serde(rename = "tract-cpu-plain")]
    #[cfg_attr(feature = "clap", value(name = "tract"))]
    TractPlain,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::TractCpu => "tract-cpu",
            Backend::TractCuda => "tract-cuda",
            Backend::TractPlain => "tract-cpu-plain",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

/// How an image becomes the model's input tensor. It belongs to the model
/// (declared in its sidecar) and travels in every run header, because a
/// silently different pipeline is the commonest cause of a wrong accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Resize so the shorter side has this length (torchvision `Resize(int)`).
    pub resize_shorter: u32,
    /// Then centre-crop a square of this side.
    pub crop: u32,
    pub interpolation: Interpolation,
    /// Applied to RGB values scaled to [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Pipeline {
    /// The study's ImageNet pipeline (docs/protocol.md, "Input pipeline").
    pub fn imagenet() -> Self {
        Pipeline {
            resize_shorter: 256,
            crop: 224,
            interpolation: Interpolation::Bicubic,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    Fgsm,
    Pgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OodSet {
    Edge,
    Silhouette,
    Sketch,
    Stylized,
    Rendition,
}

/// Which variant of a sample a record measured. Every dimension's probes are
/// named here now so that later suites add producers, not wire changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProbeSet {
    Clean,
    /// Corruption index in docs/protocol.md order (0 = gaussian_noise) and severity 1..=5.
    Corruption { corruption: u8, severity: u8 },
    Adversarial(Attack),
    Ood(OodSet),
    CueConflict,
    MixedSame,
    MixedRand,
}

pub const CORRUPTIONS: [&str; 15] = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
];

/// How a run's corrupted images were produced (`--corruption-mode`,
/// docs/corruptions.md): the report needs it as a value, not as prose, to
/// tell whether the study's constants may normalise the run's corruption
/// robustness.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorruptionMode {
    /// Generated as ImageNet-C's files were made (resize 256 bilinear, crop
    /// 224, corrupt at 224, JPEG quality 85), then read through the model's
    /// whole pipeline: comparable with the study's numbers.
    #[serde(rename = "imagenet-c")]
    #[cfg_attr(feature = "clap", value(name = "imagenet-c"))]
    ImagenetC,
    /// Generated from the model pipeline's centre crop at the model's input
    /// size and fed to the model as they are (no JPEG, no second resize).
    #[serde(rename = "direct")]
    Direct,
    /// Read from an ImageNet-C tree (`--imagenet-c`): the study's own files.
    #[serde(rename = "files")]
    #[cfg_attr(feature = "clap", value(skip))]
    Files,
}

impl CorruptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptionMode::ImagenetC => "imagenet-c",
            CorruptionMode::Direct => "direct",
            CorruptionMode::Files => "files",
        }
    }
}

/// Groups of probe sets, one per dimension's data (`--probes` selects them;
/// the `End` frame times them).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeGroup {
    /// The clean validation set (accuracy, calibration, class balance).
    Clean,
    /// edge, silhouette, sketch, stylized, rendition (OOD robustness).
    Ood,
    /// cue-conflict (shape bias).
    CueConflict,
    /// mixed_same and mixed_rand (object focus).
    Background,
    /// The 15 ImageNet-C corruptions × 5 severities (corruption robustness).
    Corruption,
    /// FGSM and PGD (adversarial robustness).
    Adversarial,
}

impl ProbeGroup {
    pub const COUNT: usize = 6;

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeGroup::Clean => "clean",
            ProbeGroup::Ood => "ood",
            ProbeGroup::CueConflict => "cue-conflict",
            ProbeGroup::Background => "background",
            ProbeGroup::Corruption => "corruption",
            ProbeGroup::Adversarial => "adversarial",
        }
    }
}

impl ProbeSet {
    pub fn group(self) -> ProbeGroup {
        match self {
            ProbeSet::Clean => ProbeGroup::Clean,
            ProbeSet::Ood(_) => ProbeGroup::Ood,
            ProbeSet::CueConflict => ProbeGroup::CueConflict,
            ProbeSet::MixedSame | ProbeSet::MixedRand => ProbeGroup::Background,
            ProbeSet::Corruption { .. } => ProbeGroup::Corruption,
            ProbeSet::Adversarial(_) => ProbeGroup::Adversarial,
        }
    }

    /// The `set` name used in exports: `clean`, `corruption/gaussian_noise/3`, …
    pub fn name(&self) -> String {
        match self {
            ProbeSet::Clean => "clean".into(),
            ProbeSet::Corruption { corruption, severity } => format!(
                "corruption/{}/{severity}",
                CORRUPTIONS.get(*corruption as usize).copied().unwrap_or("unknown")
            ),
            ProbeSet::Adversarial(Attack::Fgsm) => "adversarial/fgsm".into(),
            ProbeSet::Adversarial(Attack::Pgd) => "adversarial/pgd".into(),
            ProbeSet::Ood(s) => format!(
                "ood/{}",
                match s {
                    OodSet::Edge => "edge",
                    OodSet::Silhouette => "silhouette",
                    OodSet::Sketch => "sketch",
                    OodSet::Stylized => "stylized",
                    OodSet::Rendition => "rendition",
                }
            ),
            ProbeSet::CueConflict => "cue_conflict".into(),
            ProbeSet::MixedSame => "mixed_same".into(),
            ProbeSet::MixedRand => "mixed_rand".into(),
        }
    }
}

/// What the device says once, before any record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub protocol: u8,
    pub tool_version: String,
    pub run_id: String,
    pub model_name: String,
    pub model_sha256: String,
    pub model_bytes: u64,
    /// Weight elements (not bytes), also for int8 models; see `engine::count_parameters`.
    pub parameters: u64,
    pub precision: Precision,
    /// `qdq`, `qoperator` or empty for fp32.
    pub int8_format: String,
    pub num_classes: u16,
    pub pipeline: Pipeline,
    pub decoder: String,
    pub benchmark: String,
    pub dataset_root: String,
    /// sha256 over the selected samples' relative paths and sizes.
    pub dataset_fingerprint: String,
    pub samples: u32,
    pub seed: u64,
    pub per_class: Option<u32>,
    pub target: String,
    pub backend: Backend,
    pub batch: u32,
    pub threads: u32,
    pub probes: Vec<ProbeSet>,
    /// Whether records of every probe (not only `clean`) carry the model's
    /// full probability vector, so the host can recompute mapped decisions.
    pub full_probs: bool,
    /// How the shifted datasets' labels relate to the model's classes.
    pub mapping: Mapping,
    /// Where corrupted images came from (generated on the device, or an
    /// ImageNet-C tree) and how; empty when no corruption ran.
    pub corruption_source: String,
    /// `pixel` or `reference` (docs/protocol.md, dimension 2); empty when no attack ran.
    pub adversarial_mode: String,
    /// How input gradients were taken: `exact`, or `ste` (straight-through
    /// estimator through quantisation); empty when no attack ran.
    pub gradient: String,
    /// For a GPU backend: how many of the plan's nodes ran on the GPU and
    /// what share of a profiled forward pass they took, so a "GPU reference"
    /// that mostly ran on the CPU is visible; empty on the CPU backend.
    pub placement: String,
    /// `--corruption-per-class` and `--attack-per-class` as given: with
    /// `per_class` they fix which clean images the costly probes reuse, so
    /// shards that differ in them do not belong to one run. (Defaults, here
    /// and below, only let a protocol-2 manifest parse far enough for a host
    /// to say which version wrote it; postcard frames always carry them.)
    #[serde(default)]
    pub corruption_per_class: Option<u32>,
    #[serde(default)]
    pub attack_per_class: Option<u32>,
    /// The slice of the run this stream carries (`--shard K/N`); `None` for a
    /// whole run. Sample ids are the whole run's either way.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// How the corrupted images were produced; `None` when no corruption ran.
    #[serde(default)]
    pub corruption_mode: Option<CorruptionMode>,
    /// Whether output 0 gave logits or probabilities, and how that was told.
    #[serde(default)]
    pub outputs: Outputs,
    /// Why the adversarial probes asked for did not run (the model's input
    /// gradient could not be built; names the node and its op); empty when
    /// they ran or were not asked for.
    #[serde(default)]
    pub attacks_unavailable: String,
    /// What ran the model's multiply-accumulates; all zero from a device
    /// that predates the field.
    #[serde(default)]
    pub execution: Execution,
}

/// The model's multiply-accumulates per image, by what executed them
/// (docs/int8.md, "What ran"): an int8 model whose convolutions silently
/// run in float between a dequantise and a quantise is slower than its
/// fp32 source and measures another model than the one deployed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// Convolutions on quba's integer kernels.
    pub quba_int8: u64,
    /// tract's own integer ops (QLinearConv on the `plain` backend, QLinearMatMul, ConvInteger, MatMulInteger).
    pub tract_int8: u64,
    /// Float Conv, Gemm or MatMul of an int8 model fed by a DequantizeLinear: the silent fallback.
    pub float_fallback: u64,
    /// Float compute outside any quantisation (all of an fp32 model's).
    pub float: u64,
    /// The largest fallback nodes by name, at most `Execution::NAMED`, largest first.
    pub fallback_nodes: Vec<String>,
}

impl Execution {
    /// Fallback nodes named in the header: enough to find the pattern, few
    /// enough that the header stays far below `MAX_PAYLOAD`.
    pub const NAMED: usize = 5;

    pub fn total(&self) -> u64 {
        self.quba_int8 + self.tract_int8 + self.float_fallback + self.float
    }

    /// `macs` (one of the fields) as a share of all; 0 when nothing was counted.
    pub fn share(&self, macs: u64) -> f64 {
        match self.total() {
            0 => 0.0,
            total => macs as f64 / total as f64,
        }
    }
}

/// One of N disjoint slices of a run (`--shard K/N`). K counts from 0, as
/// Kubernetes' `JOB_COMPLETION_INDEX` and a Slurm array `--array=0-(N-1)` do,
/// so a scheduler's index is passed through unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl core::fmt::Display for Shard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl core::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "a shard is K/N with 0 ≤ K < N (K counts from 0, like JOB_COMPLETION_INDEX)";
        let (k, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let num = |x: &str| x.trim().parse::<u32>().map_err(|_| format!("{s:?}: {x:?} is not a number; {usage}"));
        let (index, count) = (num(k)?, num(n)?);
        if count == 0 {
            return Err(format!("{s:?}: N = 0 shards cannot hold a run; {usage}"));
        }
        if index >= count {
            return Err(format!("{s:?}: shard {index} is out of range for N = {count} (valid: 0…{}); {usage}", count - 1));
        }
        Ok(Shard { index, count })
    }
}

/// One model decision on one probe of one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub set: ProbeSet,
    /// Index into the run's sample list (sorted dataset order, after subsetting).
    pub sample: u32,
    pub label: u16,
    pub prediction: u16,
    /// Max softmax probability.
    pub confidence: f32,
    /// Probability of the true class; class balance needs it on every probe.
    pub p_true: f32,
    /// Texture category of a cue-conflict image; shape bias needs it.
    pub cue: Option<u16>,
    /// Full softmax vector, exactly as computed (f32, lossless), where the
    /// metric needs it: always on `clean`, because ACE is class-conditional.
    ///
    /// Boxed (serde writes a box as what it holds, so the wire is the same)
    /// because inline it made every `Message` 4 KB, and the host moves each
    /// one several times while decoding, also the many top-1 records that
    /// carry no vector. The device pays one 4 KB allocation per full record,
    /// nothing next to the model pass that produced it.
    pub probs: Option<Box<Probs>>,
}

/// A sample the device could not evaluate (unreadable image, …). It names the
/// sample so the host can report it; the run goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub set: ProbeSet,
    pub sample: u32,
    pub path: heapless::String<160>,
    pub message: heapless::String<240>,
}

/// The device's own account of a completed run; a stream without it was cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub records: u32,
    pub failures: u32,
    pub model_load_ms: u64,
    pub elapsed_ms: u64,
    pub peak_rss_kb: u64,
    /// Per probe group, in the order they ran.
    pub stages: heapless::Vec<Stage, { ProbeGroup::COUNT }>,
    /// A copy of the run's `Header`. The header is the largest frame of a
    /// stream, so the likeliest to be hit, and without it no record can be
    /// reported; with a copy here any one damaged frame costs at most its
    /// own facts. (Not a second `Header` frame: that restarts `seq` and is
    /// refused as a second run.) Boxed, so a `Message` stays the size of a
    /// `Header`: the host moves every one several times while decoding.
    pub header: Box<Header>,
}

impl End {
    /// The largest `End` that can carry `header`: every count and time at
    /// its widest varint and a stage for every group (any group: each is one
    /// byte). A device encodes it before the run starts, so a header too
    /// long to be repeated here fails the run in its first second rather
    /// than after its last record.
    pub fn widest(header: Header) -> End {
        let stage = Stage { group: ProbeGroup::Adversarial, images: u32::MAX, elapsed_us: u64::MAX, model_us: u64::MAX };
        End {
            records: u32::MAX,
            failures: u32::MAX,
            model_load_ms: u64::MAX,
            elapsed_ms: u64::MAX,
            peak_rss_kb: u64::MAX,
            stages: core::iter::repeat_n(stage, ProbeGroup::COUNT).collect(),
            header: Box::new(header),
        }
    }
}

/// The device's time on one probe group. `images` counts every image the
/// model was asked about (records and failures; an attacked image counts once
/// per attack); `model_us` is the part inside the model's passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub group: ProbeGroup,
    pub images: u32,
    pub elapsed_us: u64,
    pub model_us: u64,
}

impl Stage {
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / (self.elapsed_us.max(1) as f64 * 1e-6)
    }

    /// Share of the stage's wall time spent in the model's own passes.
    pub fn model_share(&self) -> f64 {
        self.model_us as f64 / self.elapsed_us.max(1) as f64
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// First frame on a TCP connection: proves the device knows the host's token.
    Hello { token: String },
    Header(Header),
    Record(Record),
    Failure(Failure),
    End(End),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{full_end, full_failure, full_header, full_record};

    /// `msg` in postcard, as a frame carries it for a payload.
    fn payload(msg: &Message) -> Vec<u8> {
        let mut buf = [0u8; 4 * 1024];
        postcard::to_slice(msg, &mut buf).unwrap().to_vec()
    }

    /// Postcard and back, and through a frame and back.
    fn assert_round_trips(msg: Message) {
        let bytes = payload(&msg);
        assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), msg);
        let mut enc = crate::FrameEncoder::new();
        let (frames, stats) = crate::decode_all(enc.encode(&msg).unwrap());
        assert!(stats.is_clean(), "{stats:?}");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].message, msg);
    }

    /// `full_header()` in postcard, as `Message::Header` and `End` carry it.
    fn full_header_bytes() -> Vec<u8> {
        // Written field by field from the postcard wire spec (u8 as one byte,
        // other unsigned integers as LEB128 varints, f32 as 4 bytes LE, str and
        // seq as a varint length then the items, [T; 3] as three items with no
        // length, Option as 00 or 01 + value, enum as a varint discriminant +
        // payload), in the order the fields are declared, before the test was
        // first run; the first run confirmed every byte. docs/wire-format.md
        // describes the same layout table by table.
        [
            &[0x05][..],                                    // protocol: u8 5, one byte
            &[0x05], b"0.1.0",                              // tool_version
            &[0x02], b"r1",                                 // run_id
            &[0x01], b"m",                                  // model_name
            &[0x02], b"ab",                                 // model_sha256
            &[0xac, 0x02],                                  // model_bytes 300 = 0b10_0101100
            &[0xf0, 0xa2, 0x04],                            // parameters 70 000
            &[0x01],                                        // precision Int8
            &[0x03], b"qdq",                                // int8_format
            &[0xe8, 0x07],                                  // num_classes 1000
            &[0x80, 0x02],                                  // pipeline.resize_shorter 256
            &[0xe0, 0x01],                                  // pipeline.crop 224
            &[0x01],                                        // pipeline.interpolation Bilinear
            &[0x00, 0x00, 0x00, 0x3f],                      // pipeline.mean[0] 0.5
            &[0x00, 0x00, 0x80, 0x3e],                      // pipeline.mean[1] 0.25
            &[0x00, 0x00, 0x00, 0x3e],                      // pipeline.mean[2] 0.125
            &[0x00, 0x00, 0x80, 0x3f],                      // pipeline.std[0] 1.0
            &[0x00, 0x00, 0x00, 0x40],                      // pipeline.std[1] 2.0
            &[0x00, 0x00, 0x80, 0x40],                      // pipeline.std[2] 4.0
            &[0x01], b"d",                                  // decoder
            &[0x08], b"imagenet",                           // benchmark
            &[0x02], b"/d",                                 // dataset_root
            &[0x02], b"fp",                                 // dataset_fingerprint
            &[0xd0, 0x86, 0x03],                            // samples 50 000
            &[0x2a],                                        // seed 42
            &[0x01, 0x32],                                  // per_class Some(50)
            &[0x01], b"t",                                  // target
            &[0x01],                                        // backend TractCuda
            &[0x08],                                        // batch 8
            &[0x01],                                        // threads 1
            &[0x05],                                        // probes: 5 items
            &[0x00],                                        //   Clean
            &[0x01, 0x0e, 0x05],                            //   Corruption { 14, 5 } (two u8)
            &[0x02, 0x01],                                  //   Adversarial(Pgd)
            &[0x03, 0x04],                                  //   Ood(Rendition)
            &[0x06],                                        //   MixedRand
            &[0x01],                                        // full_probs true
            &[0x01],                                        // mapping ImageNet
            &[0x03], b"gen",                                // corruption_source
            &[0x05], b"pixel",                              // adversarial_mode
            &[0x03], b"ste",                                // gradient
            &[0x03], b"gpu",                                // placement
            &[0x01, 0x05],                                  // corruption_per_class Some(5)
            &[0x01, 0x02],                                  // attack_per_class Some(2)
            &[0x01, 0x01, 0x04],                            // shard Some(Shard { 1, 4 })
            &[0x01, 0x00],                                  // corruption_mode Some(ImagenetC)
            &[0x01],                                        // outputs SoftmaxInGraph
            &[0x02], b"no",                                 // attacks_unavailable
            &[0xac, 0x02],                                  // execution.quba_int8 300
            &[0x02],                                        // execution.tract_int8 2
            &[0xf0, 0xa2, 0x04],                            // execution.float_fallback 70 000
            &[0x00],                                        // execution.float 0
            &[0x01], &[0x02], b"c1",                        // execution.fallback_nodes: 1 item, "c1"
        ]
        .concat()
    }

    #[test]
    fn header_matches_the_golden_bytes() {
        let expected = [&[0x01][..], &full_header_bytes()].concat(); // Message::Header, then the header
        assert_eq!(payload(&Message::Header(full_header())), expected);
        assert_round_trips(Message::Header(full_header()));
    }

    #[test]
    fn end_matches_the_golden_bytes() {
        // Derived by hand from the postcard wire spec like the header's above,
        // then confirmed by encoding.
        let fields: &[u8] = &[
            0x04,             // Message::End
            0x96, 0x01,       // records 150
            0x02,             // failures 2
            0xd2, 0x09,       // model_load_ms 1234
            0x80, 0x80, 0x04, // elapsed_ms 65 536
            0x80, 0xa0, 0x01, // peak_rss_kb 20 480
            0x02,             // stages: 2 items
            0x00,             //   group Clean
            0x64,             //   images 100
            0x80, 0x89, 0x7a, //   elapsed_us 2 000 000
            0xe0, 0xc6, 0x5b, //   model_us 1 500 000
            0x05,             //   group Adversarial
            0x34,             //   images 52
            0xac, 0x02,       //   elapsed_us 300
            0xc8, 0x01,       //   model_us 200
        ];
        // header: the copy, byte for byte the payload of its own frame.
        let expected = [fields, &full_header_bytes()].concat();
        assert_eq!(payload(&Message::End(full_end())), expected);
        assert_round_trips(Message::End(full_end()));
    }

    #[test]
    fn the_widest_end_is_its_header_and_197_bytes() {
        // docs/wire-format.md states the bound: a header up to
        // MAX_PAYLOAD − 197 bytes always fits the End that repeats it.
        let end = payload(&Message::End(End::widest(full_header())));
        assert_eq!(end.len(), payload(&Message::Header(full_header())).len() + 197);
        // The longest header that its End still carries, and one byte more.
        let mut h = full_header();
        h.dataset_root = "d".repeat(200);
        let room = crate::MAX_PAYLOAD - 197 - payload(&Message::Header(h.clone())).len();
        h.dataset_root += &"d".repeat(room);
        let mut enc = crate::FrameEncoder::new();
        assert!(enc.encode(&Message::End(End::widest(h.clone()))).is_ok());
        h.dataset_root.push('d');
        assert!(enc.encode(&Message::Header(h.clone())).is_ok());
        assert_eq!(enc.encode(&Message::End(End::widest(h))), Err(crate::EncodeError::TooLarge));
    }

    #[test]
    fn every_message_round_trips() {
        for msg in [
            Message::Hello { token: "tok".into() },
            Message::Header(full_header()),
            Message::Record(full_record()),
            Message::Failure(full_failure()),
            Message::End(full_end()),
        ] {
            assert_round_trips(msg);
        }
    }

    #[test]
    fn shard_parses_zero_based_and_refuses_out_of_range() {
        assert_eq!("0/4".parse::<Shard>(), Ok(Shard { index: 0, count: 4 }));
        assert_eq!("3/4".parse::<Shard>().unwrap().to_string(), "3/4");
        for (bad, why) in [("4/4", "out of range"), ("1/0", "N = 0"), ("0/0", "N = 0"), ("-1/4", "not a number"), ("2", "K/N"), ("a/b", "not a number")] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
