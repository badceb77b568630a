//! The command-line arguments of a run, shared by `quba eval`, `quba device
//! run` and `quba-device run`, and their round trip back to a command line
//! for launching a device process. Kept apart from the run so that the flags
//! and their documentation read in one place.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::ProbeGroup;
use crate::attack::Mode as AttackMode;
use crate::corrupt::{Corruption, CorruptionMode, SEVERITIES};
use crate::protocol::{Backend, Shard};

/// Images per class that corruptions and attacks use on the synthetic
/// benchmark unless told otherwise: 75 variants of every image, or eleven
/// forward and ten backward passes, make them the costliest probes.
pub const SYNTH_CORRUPTION_PER_CLASS: usize = 10;
pub const SYNTH_ATTACK_PER_CLASS: usize = 10;

/// What to evaluate, shared by `quba eval` (for every model) and the device.
#[derive(clap::Args, Clone, Debug)]
pub struct SuiteArgs {
    /// Clean validation images: an ImageFolder tree (one folder per class, sorted order = class
    /// index), or `synth` (`synth:<split>`) for the synthetic benchmark rendered in memory, which
    /// also provides every shifted set.
    #[arg(long, default_value = "synth")]
    pub data: PathBuf,
    /// model-vs-human datasets root: `edge/`, `silhouette/`, `sketch/`, `stylized/`,
    /// `cue-conflict/` (one folder per category); those present are evaluated.
    #[arg(long)]
    pub mvh: Option<PathBuf>,
    /// ImageNet-R root (one folder per wnid).
    #[arg(long)]
    pub imagenet_r: Option<PathBuf>,
    /// ImageNet-9 backgrounds challenge root (`mixed_same/val/<class>/…`, `mixed_rand/val/<class>/…`).
    #[arg(long)]
    pub bg_challenge: Option<PathBuf>,
    /// Limit the run to these probe groups (comma-separated); default: every group the
    /// benchmark provides.
    #[arg(long, value_delimiter = ',')]
    pub probes: Vec<ProbeGroup>,
    /// Input pipeline: a JSON file, or `imagenet` for the study's (resize 256 bicubic, crop 224,
    /// ImageNet mean/std). Default: the model's sidecar `<model stem>.json`.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Evaluate N images per class of every set: a seeded subset of a folder (all when omitted),
    /// or the number generated per class for `synth` (default 50).
    #[arg(long)]
    pub per_class: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Where the model's forward passes run: `cpu`, or `cuda` (tract's CUDA runtime; a host built
    /// with the `cuda` feature and an NVIDIA driver). Attacks' gradient programs stay on the CPU.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
    /// Benchmark name, recorded in the header: `imagenet` selects the study's label mappings
    /// (1000 → 16 categories, ImageNet-R, ImageNet-9) and paper normalisation; default `synth`
    /// for `--data synth`, else `custom` (datasets labelled in the model's own classes).
    #[arg(long)]
    pub benchmark: Option<String>,
    /// Keep the model's full probability vector on every record, not only on clean ones.
    #[arg(long)]
    pub full_probs: bool,
    /// Corruptions to run (comma-separated names; default: all 15).
    #[arg(long, value_delimiter = ',')]
    pub corruptions: Vec<Corruption>,
    /// Severities to run (comma-separated, 1–5; default: all five).
    #[arg(long, value_delimiter = ',')]
    pub severities: Vec<u8>,
    /// Clean images per class that are corrupted (a seeded subset of the clean set; default:
    /// all of them, 10 on the synthetic benchmark).
    #[arg(long)]
    pub corruption_per_class: Option<usize>,
    /// ImageNet-C root (`<corruption>/<severity>/<class>/…`): read these images instead of
    /// generating the corruptions on the device; the model's whole pipeline is applied to them,
    /// as the study did.
    #[arg(long)]
    pub imagenet_c: Option<PathBuf>,
    /// How generated corruptions reach the model: `imagenet-c` as ImageNet-C's files did (the
    /// clean image resized to 256 bilinear, cropped to 224, corrupted at 224, saved JPEG quality
    /// 85, then read through the model's whole pipeline), `direct` from the pipeline's centre crop
    /// straight to the model. Default: `imagenet-c` with `--benchmark imagenet` (the study's
    /// constants normalise such runs), `direct` otherwise.
    #[arg(long, value_enum)]
    pub corruption_mode: Option<CorruptionMode>,
    /// The reference's frost photos (frost1.png … frost5.jpg from the `imagecorruptions`
    /// package); default: a procedural frost layer (docs/corruptions.md).
    #[arg(long)]
    pub frost_dir: Option<PathBuf>,
    /// Clean images per class that are attacked (a seeded subset; default: all of them, 10 on
    /// the synthetic benchmark).
    #[arg(long)]
    pub attack_per_class: Option<usize>,
    /// Where the attack budget applies: `pixel` (the [0, 1] image; default) or `reference` (the
    /// study's procedure on the normalised tensor, for numbers comparable with its table).
    #[arg(long, value_enum, default_value = "pixel")]
    pub adversarial_mode: AttackMode,
    /// Run only slice K of N (K from 0 to N−1): every probe set's samples are dealt out
    /// class by class, so N shard runs together hold each sample of the whole run exactly
    /// once, under the whole run's sample ids; `quba merge` joins them (docs/fleet.md).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
}

impl SuiteArgs {
    pub fn is_synth(&self) -> bool {
        let t = self.data.to_string_lossy();
        !self.data.exists() && (t == "synth" || t.starts_with("synth:"))
    }

    pub fn benchmark(&self) -> String {
        self.benchmark.clone().unwrap_or_else(|| if self.is_synth() { "synth" } else { "custom" }.into())
    }

    /// `--corruption-mode`, or the default that follows the benchmark: the
    /// report normalises `imagenet` runs by the study's constants, which
    /// were measured on ImageNet-C's files.
    pub fn corruption_mode(&self) -> CorruptionMode {
        self.corruption_mode.unwrap_or(if self.benchmark() == "imagenet" { CorruptionMode::ImagenetC } else { CorruptionMode::Direct })
    }

    pub(super) fn wants(&self, g: ProbeGroup) -> bool {
        self.probes.is_empty() || self.probes.contains(&g)
    }

    /// The same arguments as a command line, to launch a device process.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--data".into(), self.data.display().to_string()];
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(k.into());
                a.push(v);
            }
        };
        opt("--mvh", self.mvh.as_ref().map(|p| p.display().to_string()));
        opt("--imagenet-r", self.imagenet_r.as_ref().map(|p| p.display().to_string()));
        opt("--bg-challenge", self.bg_challenge.as_ref().map(|p| p.display().to_string()));
        if !self.probes.is_empty() {
            use clap::ValueEnum;
            let names: Vec<String> =
                self.probes.iter().map(|g| g.to_possible_value().expect("no skipped variants").get_name().to_string()).collect();
            opt("--probes", Some(names.join(",")));
        }
        opt("--pipeline", self.pipeline.clone());
        opt("--per-class", self.per_class.map(|n| n.to_string()));
        opt("--seed", Some(self.seed.to_string()));
        opt("--batch", Some(self.batch.to_string()));
        if self.backend != Backend::TractCpu {
            use clap::ValueEnum;
            opt("--backend", Some(self.backend.to_possible_value().expect("no skipped variants").get_name().to_string()));
        }
        opt("--benchmark", Some(self.benchmark()));
        let list = |v: Vec<String>| (!v.is_empty()).then(|| v.join(","));
        opt("--corruptions", list(self.corruptions.iter().map(|c| c.name().to_string()).collect()));
        opt("--severities", list(self.severities.iter().map(u8::to_string).collect()));
        opt("--corruption-per-class", self.corruption_per_class.map(|n| n.to_string()));
        opt("--imagenet-c", self.imagenet_c.as_ref().map(|p| p.display().to_string()));
        opt("--corruption-mode", self.corruption_mode.map(|m| m.as_str().to_string()));
        opt("--frost-dir", self.frost_dir.as_ref().map(|p| p.display().to_string()));
        opt("--attack-per-class", self.attack_per_class.map(|n| n.to_string()));
        opt("--adversarial-mode", Some(self.adversarial_mode.as_str().to_string()));
        opt("--shard", self.shard.map(|s| s.to_string()));
        if self.full_probs {
            a.push("--full-probs".into());
        }
        a
    }

    /// The (corruption, severity) cells to run, checked.
    pub(super) fn corruption_cells(&self) -> Result<Vec<(Corruption, u8)>> {
        let cs: Vec<Corruption> = if self.corruptions.is_empty() { Corruption::ALL.to_vec() } else { self.corruptions.clone() };
        let ss: Vec<u8> = if self.severities.is_empty() { SEVERITIES.collect() } else { self.severities.clone() };
        for &s in &ss {
            crate::corrupt::check_severity(s).context("--severities")?;
        }
        Ok(cs.iter().flat_map(|&c| ss.iter().map(move |&s| (c, s))).collect())
    }
}

/// Everything the device needs to know to run; the same flags for
/// `quba-device run` and `quba device run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// ONNX classifier (fp32, or int8 in QDQ or QOperator form).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Run id recorded in the header (default: derived from the model hash and time).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Sleep this long after each batch, to keep a passively cooled board below its
    /// throttling temperature.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Resume an interrupted run: a resume list (JSON, as `quba eval --resume` sends it;
    /// `-` reads it from stdin) naming the records and failures the host already holds.
    /// Give the interrupted run's own arguments and --run-id: the header must match.
    #[arg(long)]
    pub resume_from: Option<String>,
}

impl RunArgs {
    /// The same arguments as a command line, to launch a device process.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--model".into(), self.model.display().to_string()];
        a.extend(self.suite.to_args());
        if let Some(id) = &self.run_id {
            a.extend(["--run-id".into(), id.clone()]);
        }
        a.extend(["--pause-ms".into(), self.pause_ms.to_string()]);
        if let Some(r) = &self.resume_from {
            a.extend(["--resume-from".into(), r.clone()]);
        }
        a
    }
}

/// `run` plus where the frames go: the whole device command line.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Where frames go: `-` (stdout, for a host that spawned us), `tcp://HOST:PORT`
    /// (a `quba listen` host), or a file (appended).
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Token printed by `quba listen`; required with `--out tcp://…`.
    #[arg(long)]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteArgs,
    }

    fn parse(args: &[&str]) -> SuiteArgs {
        Cli::parse_from(std::iter::once("quba").chain(args.iter().copied())).suite
    }

    #[test]
    fn corruption_mode_follows_the_benchmark_unless_given() {
        assert_eq!(parse(&[]).corruption_mode(), CorruptionMode::Direct);
        assert_eq!(parse(&["--benchmark", "custom"]).corruption_mode(), CorruptionMode::Direct);
        assert_eq!(parse(&["--benchmark", "imagenet"]).corruption_mode(), CorruptionMode::ImagenetC);
        assert_eq!(parse(&["--benchmark", "imagenet", "--corruption-mode", "direct"]).corruption_mode(), CorruptionMode::Direct);
        assert_eq!(parse(&["--corruption-mode", "imagenet-c"]).corruption_mode(), CorruptionMode::ImagenetC);
        // The device gets the same answer: the command line it is launched
        // with carries the benchmark, and the mode only when it was given.
        for given in [&["--benchmark", "imagenet"][..], &["--corruption-mode", "imagenet-c"], &[]] {
            let a = parse(given);
            let relaunched = a.to_args();
            let b = parse(&relaunched.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(b.corruption_mode(), a.corruption_mode(), "{given:?}");
            assert_eq!(b.corruption_mode, a.corruption_mode, "{given:?}");
        }
        // `files` is what a header says of an ImageNet-C tree, not a choice.
        assert!(Cli::try_parse_from(["quba", "--corruption-mode", "files"]).is_err());
    }
}
