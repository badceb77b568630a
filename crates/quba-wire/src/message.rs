//! The messages a device sends, as serde types: postcard writes their
//! fields in declaration order, so the order here *is* the wire layout
//! (`docs/wire-format.md` lists it table by table, and a test holds the two
//! together).

use serde::{Deserialize, Serialize};

/// Bumped whenever a message layout changes incompatibly. Adding a variant at
/// the end of an enum is compatible (postcard writes the discriminant as a
/// varint), so old logs stay readable by newer hosts.
pub const PROTOCOL_VERSION: u8 = 3;

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
    /// The study's ImageNet pipeline (PROTOCOL.md, "Input pipeline").
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
    /// Corruption index in PROTOCOL.md order (0 = gaussian_noise) and severity 1..=5.
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
    /// `pixel` or `reference` (PROTOCOL.md, dimension 2); empty when no attack ran.
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
