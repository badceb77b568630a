//! The device role: load a model and the benchmark's datasets, run every
//! probe set in batches and emit a header, one record per (probe, sample),
//! and an end frame.
//!
//! Clean records carry the full probability vector (ACE and class balance
//! need it). Shifted sets are decided on the device in their dataset's label
//! space ([`crate::benchmark`]), so a record stays small; `--full-probs`
//! keeps the model's whole vector on every record for host-side recomputation.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::benchmark::{Decision, Mapping, MappingRules};
use crate::attack::{AttackConfig, Mode as AttackMode};
use crate::corrupt::{CorruptOptions, Corruption, SEVERITIES};
use crate::grad::GradModel;
use crate::data::{self, Labels, Source};
use crate::engine::Engine;
use crate::metrics::softmax_in_place;
use crate::protocol::{
    Attack, Backend, End, Failure, FrameEncoder, Header, Message, OodSet, Pipeline, ProbeSet, Probs, Record, Resume, Shard,
    Stage, MAX_CLASSES, PROTOCOL_VERSION,
};
use crate::synth::Split;
use quba_common::Keys;

/// The target triple this binary was built for (set by build.rs).
pub const TARGET: &str = env!("QUBA_TARGET");
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

pub use crate::protocol::ProbeGroup;

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

    fn wants(&self, g: ProbeGroup) -> bool {
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
    fn corruption_cells(&self) -> Result<Vec<(Corruption, u8)>> {
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

/// A model's sidecar `<stem>.json`: what the file alone cannot say.
#[derive(Deserialize, Debug, Clone)]
pub struct ModelMeta {
    pub name: Option<String>,
    pub pipeline: Pipeline,
    pub num_classes: Option<u16>,
}

pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

fn resolve_pipeline(args: &RunArgs) -> Result<(Pipeline, Option<String>)> {
    let from_file = |p: &Path| -> Result<ModelMeta> {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read pipeline file {}", p.display()))?;
        parse_meta(&text).with_context(|| format!("{} is not a valid model sidecar", p.display()))
    };
    match args.suite.pipeline.as_deref() {
        Some("imagenet") => Ok((Pipeline::imagenet(), None)),
        Some(file) => from_file(Path::new(file)).map(|m| (m.pipeline, m.name)),
        None => {
            let side = sidecar_path(&args.model);
            if !side.exists() {
                bail!(
                    "no input pipeline for {}: expected a sidecar {} (see models/tiny/*.json), \
                     or pass --pipeline imagenet / --pipeline FILE.json. A guessed pipeline silently changes accuracy, so none is assumed",
                    args.model.display(),
                    side.display()
                );
            }
            from_file(&side).map(|m| (m.pipeline, m.name))
        }
    }
}

pub fn parse_meta(text: &str) -> Result<ModelMeta> {
    Ok(serde_json::from_str(text)?)
}

/// Peak resident memory of this process so far (VmHWM), 0 where /proc is absent.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// One probe set of a run read from its own dataset: its images and how
/// decisions are made on them.
struct Probe {
    set: ProbeSet,
    source: Source,
    decision: Decision,
    /// The samples of `source` this run evaluates: all of them, or a shard's.
    ids: Vec<u32>,
}

/// Probe sets generated from clean images on the device (corruptions), run
/// together so each clean image is decoded once for all its variants.
struct Generated {
    ids: Vec<u32>,
    cells: Vec<(Corruption, u8)>,
    options: CorruptOptions,
}

/// The synthetic split standing in for each shifted set.
fn synth_split(set: ProbeSet) -> Option<Split> {
    Some(match set {
        ProbeSet::Ood(OodSet::Edge) => Split::Edge,
        ProbeSet::Ood(OodSet::Silhouette) => Split::Silhouette,
        ProbeSet::Ood(OodSet::Sketch) => Split::Sketch,
        ProbeSet::Ood(OodSet::Stylized) => Split::Stylized,
        ProbeSet::Ood(OodSet::Rendition) => Split::Rendition,
        ProbeSet::CueConflict => Split::CueConflict,
        ProbeSet::MixedSame => Split::MixedSame,
        ProbeSet::MixedRand => Split::MixedRand,
        ProbeSet::Clean | ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => return None,
    })
}

const SHIFTED: [ProbeSet; 8] = [
    ProbeSet::Ood(OodSet::Edge),
    ProbeSet::Ood(OodSet::Silhouette),
    ProbeSet::Ood(OodSet::Sketch),
    ProbeSet::Ood(OodSet::Stylized),
    ProbeSet::Ood(OodSet::Rendition),
    ProbeSet::CueConflict,
    ProbeSet::MixedSame,
    ProbeSet::MixedRand,
];

/// Where a shifted set lives on disk, in the real datasets' layouts; None when
/// its root was not given.
fn folder_of(args: &SuiteArgs, set: ProbeSet) -> Option<PathBuf> {
    let mvh = |name: &str| args.mvh.as_ref().map(|r| r.join(name));
    match set {
        ProbeSet::Ood(OodSet::Edge) => mvh("edge"),
        ProbeSet::Ood(OodSet::Silhouette) => mvh("silhouette"),
        ProbeSet::Ood(OodSet::Sketch) => mvh("sketch"),
        ProbeSet::Ood(OodSet::Stylized) => mvh("stylized"),
        ProbeSet::CueConflict => mvh("cue-conflict"),
        ProbeSet::Ood(OodSet::Rendition) => args.imagenet_r.clone(),
        ProbeSet::MixedSame => args.bg_challenge.as_ref().map(|r| r.join("mixed_same/val")),
        ProbeSet::MixedRand => args.bg_challenge.as_ref().map(|r| r.join("mixed_rand/val")),
        ProbeSet::Clean | ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => None,
    }
}

/// FGSM and PGD on clean images, through the model's gradient program.
struct Attacks {
    ids: Vec<u32>,
    grad: GradModel,
    config: AttackConfig,
}

/// Everything a run will evaluate, opened before the first image.
struct Plan {
    clean: Source,
    /// The clean samples this run evaluates: all of them, or a shard's.
    clean_ids: Vec<u32>,
    run_clean: bool,
    probes: Vec<Probe>,
    generated: Option<Generated>,
    corruption_source: String,
    attacks: Option<Attacks>,
    /// Of the whole run, taken before sharding, so every shard of one run carries the same.
    fingerprint: String,
}

impl Plan {
    fn sets(&self) -> Vec<(ProbeSet, usize)> {
        let mut v = Vec::new();
        if self.run_clean {
            v.push((ProbeSet::Clean, self.clean_ids.len()));
        }
        v.extend(self.probes.iter().map(|p| (p.set, p.ids.len())));
        if let Some(g) = &self.generated {
            v.extend(g.cells.iter().map(|&(c, s)| (corruption_set(c, s), g.ids.len())));
        }
        if let Some(a) = &self.attacks {
            v.extend(ATTACKS.iter().map(|&x| (ProbeSet::Adversarial(x), a.ids.len())));
        }
        v
    }

    /// Keeps one shard's samples of every probe set. Corruptions and attacks
    /// are dealt out over their own subsets (not by the clean shard), so each
    /// shard does its share of the costliest work.
    fn keep_shard(&mut self, shard: Shard) {
        self.clean_ids = self.clean.shard_ids(&self.clean_ids, shard);
        for p in &mut self.probes {
            p.ids = p.source.shard_ids(&p.ids, shard);
        }
        if let Some(g) = &mut self.generated {
            g.ids = self.clean.shard_ids(&g.ids, shard);
        }
        if let Some(a) = &mut self.attacks {
            a.ids = self.clean.shard_ids(&a.ids, shard);
        }
    }
}

fn corruption_set(c: Corruption, severity: u8) -> ProbeSet {
    ProbeSet::Corruption { corruption: c.index(), severity }
}

/// Opens every probe set the arguments ask for, before any image runs, so a
/// bad folder or file name fails the run at once rather than half-way.
const ATTACKS: [Attack; 2] = [Attack::Fgsm, Attack::Pgd];

fn open_plan(args: &SuiteArgs, model: &Path, mapping: Mapping, num_classes: usize) -> Result<Plan> {
    let mut probes = Vec::new();
    let clean = Source::open(&args.data, Some(num_classes), args.per_class, args.seed)?;
    let clean_classes = clean.classes();
    for set in SHIFTED {
        if !args.wants(set.group()) {
            continue;
        }
        let decision = mapping.decision(set);
        let labels = Labels {
            categories: mapping.categories(set, &clean_classes),
            expected: mapping.expected_folders(set),
            cue_conflict: set == ProbeSet::CueConflict,
        };
        let spec = if args.is_synth() {
            PathBuf::from(format!("synth:{}", synth_split(set).expect("every shifted set has a synthetic split").name()))
        } else {
            match folder_of(args, set) {
                Some(dir) if dir.is_dir() => dir,
                Some(dir) => bail!("{}: no such folder (needed for {})", dir.display(), set.name()),
                None => continue,
            }
        };
        decision.check_model(num_classes, set)?;
        let source = Source::open_labelled(&spec, &labels, args.per_class, args.seed)
            .with_context(|| format!("opening the {} set", set.name()))?;
        probes.push(Probe { set, ids: source.ids(), source, decision });
    }
    let mut generated = None;
    let mut corruption_source = String::new();
    if args.wants(ProbeGroup::Corruption) {
        let cells = args.corruption_cells()?;
        if let Some(root) = &args.imagenet_c {
            let labels = Labels { categories: Some(clean_classes.clone()), ..Labels::default() };
            for &(c, sev) in &cells {
                let dir = root.join(c.name()).join(sev.to_string());
                if !dir.is_dir() {
                    bail!("{}: no such folder; an ImageNet-C tree is <root>/<corruption>/<severity>/<class>/…", dir.display());
                }
                let source = Source::open_labelled(&dir, &labels, args.corruption_per_class, args.seed)?;
                probes.push(Probe { set: corruption_set(c, sev), ids: source.ids(), source, decision: Decision::Identity });
            }
            corruption_source =
                format!("imagenet-c tree {}; the model's whole pipeline applied to its images (the study's procedure)", root.display());
        } else {
            let per_class = args.corruption_per_class.or(args.is_synth().then_some(SYNTH_CORRUPTION_PER_CLASS));
            let options = CorruptOptions { frost_dir: args.frost_dir.clone() };
            corruption_source = format!(
                "generated on the device from the pipeline's centre crop (quba-edge corruptions, seeds per sample from run seed {}; frost: {})",
                args.seed,
                match &options.frost_dir {
                    Some(d) => format!("photos from {}", d.display()),
                    None => "procedural".into(),
                }
            );
            generated = Some(Generated { ids: clean.stratified_ids(per_class, args.seed), cells, options });
        }
    }
    let attacks = if args.wants(ProbeGroup::Adversarial) {
        // Built now, so an op we cannot differentiate stops the run before any image.
        let grad = GradModel::load(model, args.batch).context("adversarial robustness needs the model's input gradient")?;
        let per_class = args.attack_per_class.or(args.is_synth().then_some(SYNTH_ATTACK_PER_CLASS));
        Some(Attacks { ids: clean.stratified_ids(per_class, args.seed), grad, config: AttackConfig::protocol(args.adversarial_mode) })
    } else {
        None
    };
    let clean_ids = clean.ids();
    let mut plan = Plan {
        clean,
        clean_ids,
        run_clean: args.wants(ProbeGroup::Clean),
        probes,
        generated,
        corruption_source,
        attacks,
        fingerprint: String::new(),
    };
    if plan.sets().is_empty() {
        bail!("no probe set to run: --probes {:?} selects none that the benchmark provides", args.probes);
    }
    plan.fingerprint = fingerprint(&plan);
    if let Some(shard) = args.shard {
        plan.keep_shard(shard);
    }
    Ok(plan)
}

/// Runs every probe set and writes frames to `out`, flushing after every
/// batch so a cut connection loses at most the batch in flight.
pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<End> {
    let started = Instant::now();
    let suite = &args.suite;
    let (pipeline, meta_name) = resolve_pipeline(args)?;
    if suite.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (sha, model_bytes) = data::sha256_file(&args.model)?;
    let t_load = Instant::now();
    let engine = Engine::load_on(&args.model, suite.batch, pipeline.crop as usize, suite.backend)?;
    let model_load_ms = t_load.elapsed().as_millis() as u64;
    if engine.num_classes > MAX_CLASSES {
        bail!("{}: {} output classes, the stream carries at most {MAX_CLASSES}", args.model.display(), engine.num_classes);
    }
    let benchmark = suite.benchmark();
    let mapping = Mapping::for_benchmark(&benchmark);
    let plan = open_plan(suite, &args.model, mapping, engine.num_classes)?;
    let sets = plan.sets();
    let model_name = meta_name.unwrap_or_else(|| {
        args.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let header = Header {
        protocol: PROTOCOL_VERSION,
        tool_version: TOOL_VERSION.into(),
        run_id: args.run_id.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            format!("{}-{}", &sha[..12], now)
        }),
        model_name,
        model_sha256: sha,
        model_bytes,
        parameters: engine.facts.parameters,
        precision: engine.facts.precision,
        int8_format: engine.facts.int8_format.clone(),
        num_classes: engine.num_classes as u16,
        pipeline: pipeline.clone(),
        decoder: data::DECODER.into(),
        benchmark,
        dataset_root: plan.clean.describe(),
        dataset_fingerprint: plan.fingerprint.clone(),
        samples: sets.iter().map(|(_, n)| *n as u32).sum(),
        seed: suite.seed,
        per_class: suite.per_class.map(|n| n as u32),
        target: TARGET.into(),
        backend: suite.backend,
        placement: engine.placement.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        batch: suite.batch as u32,
        threads: 1,
        probes: sets.iter().map(|(p, _)| *p).collect(),
        full_probs: suite.full_probs,
        mapping,
        corruption_source: plan.corruption_source.clone(),
        adversarial_mode: plan.attacks.as_ref().map(|a| a.config.mode.as_str().to_string()).unwrap_or_default(),
        gradient: plan.attacks.as_ref().map(|a| a.grad.kind().as_str().to_string()).unwrap_or_default(),
        corruption_per_class: suite.corruption_per_class.map(|n| n as u32),
        attack_per_class: suite.attack_per_class.map(|n| n as u32),
        shard: suite.shard,
    };
    // Read before the header goes out: a bad list must not restart the stream.
    let done = Done::load(args.resume_from.as_deref())?;
    let mut enc = FrameEncoder::new();
    out.write_all(enc.encode(&Message::Header(header))?)?;
    out.flush()?;

    let mut counts = Counts::default();
    let mut scratch = Scratch::new(&engine);
    let mut ctx = Ctx { engine: &engine, pipeline: &pipeline, args, enc: &mut enc, out, counts: &mut counts, model_time: Duration::ZERO, done: &done };
    let mut stages = Stages::new();
    let s = &mut scratch;
    if plan.run_clean {
        let clean = Probe { set: ProbeSet::Clean, source: plan.clean, decision: Decision::Identity, ids: plan.clean_ids };
        stages.time(&mut ctx, ProbeGroup::Clean, |c| run_probe(c, &clean, s))?;
        if let Some(g) = &plan.generated {
            stages.time(&mut ctx, ProbeGroup::Corruption, |c| run_generated(c, &clean.source, g, s))?;
        }
        if let Some(a) = &plan.attacks {
            stages.time(&mut ctx, ProbeGroup::Adversarial, |c| run_attacks(c, &clean.source, a, s))?;
        }
    } else {
        if let Some(g) = &plan.generated {
            stages.time(&mut ctx, ProbeGroup::Corruption, |c| run_generated(c, &plan.clean, g, s))?;
        }
        if let Some(a) = &plan.attacks {
            stages.time(&mut ctx, ProbeGroup::Adversarial, |c| run_attacks(c, &plan.clean, a, s))?;
        }
    }
    for probe in &plan.probes {
        stages.time(&mut ctx, probe.set.group(), |c| run_probe(c, probe, s))?;
    }
    let end = End {
        records: counts.records,
        failures: counts.failures,
        model_load_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kb: peak_rss_kb(),
        stages: stages.0,
    };
    out.write_all(enc.encode(&Message::End(end.clone()))?)?;
    out.flush()?;
    Ok(end)
}

/// Same fingerprint ⇒ same images of every set in the same order.
fn fingerprint(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plan.clean.fingerprint().as_bytes());
    for p in &plan.probes {
        h.update(p.set.name().as_bytes());
        h.update([0]);
        h.update(p.source.fingerprint().as_bytes());
    }
    // The clean images the costly probes reuse; without the attacks' two
    // runs could match here and still have attacked different images.
    let subsets = [plan.generated.as_ref().map(|g| &g.ids), plan.attacks.as_ref().map(|a| &a.ids)];
    for (tag, ids) in subsets.iter().enumerate().filter_map(|(i, ids)| Some((i as u8, (*ids)?))) {
        h.update([tag]);
        for id in ids {
            h.update(id.to_le_bytes());
        }
    }
    data::hex(&h.finalize())
}

#[derive(Default)]
struct Counts {
    records: u32,
    failures: u32,
}

/// The keys a resumed run already holds. The device walks the plan as an
/// uninterrupted run would, in the same batches (so results are bit for bit
/// the same), skips a batch whose every key is done and emits nothing twice.
#[derive(Default)]
struct Done {
    records: Keys,
    failures: Keys,
}

impl Done {
    fn load(spec: Option<&str>) -> Result<Done> {
        let Some(spec) = spec else { return Ok(Done::default()) };
        let mut text = String::new();
        if spec == "-" {
            std::io::stdin().lock().read_to_string(&mut text).context("--resume-from -: cannot read the resume list from stdin")?;
        } else {
            text = std::fs::read_to_string(spec).with_context(|| format!("--resume-from {spec}: cannot read the resume list"))?;
        }
        let r: Resume = serde_json::from_str(&text)
            .with_context(|| format!("--resume-from {spec}: not a resume list ({{\"records\": [[set, sample], …], \"failures\": […]}})"))?;
        Ok(Done { records: r.records.into_iter().collect(), failures: r.failures.into_iter().collect() })
    }

    fn has(&self, set: ProbeSet, id: u32) -> bool {
        self.records.contains(&(set, id)) || self.failures.contains(&(set, id))
    }

    fn all(&self, set: ProbeSet, ids: &[u32]) -> bool {
        ids.iter().all(|&id| self.has(set, id))
    }
}

/// Where the device's time went, per dimension's probe group, for the `End`
/// frame: images per second, and the share spent in the model itself (the
/// rest is decoding, corrupting, attack bookkeeping, encoding and I/O).
struct Stages(heapless::Vec<Stage, { ProbeGroup::COUNT }>);

impl Stages {
    fn new() -> Self {
        Stages(heapless::Vec::new())
    }

    fn time(&mut self, ctx: &mut Ctx, group: ProbeGroup, f: impl FnOnce(&mut Ctx) -> Result<()>) -> Result<()> {
        let started = Instant::now();
        let images = ctx.counts.records + ctx.counts.failures;
        let model = ctx.model_time;
        f(ctx)?;
        let i = match self.0.iter().position(|st| st.group == group) {
            Some(i) => i,
            None => {
                let fresh = Stage { group, images: 0, elapsed_us: 0, model_us: 0 };
                self.0.push(fresh).expect("one stage per probe group");
                self.0.len() - 1
            }
        };
        let st = &mut self.0[i];
        st.images += ctx.counts.records + ctx.counts.failures - images;
        st.elapsed_us += started.elapsed().as_micros() as u64;
        st.model_us += (ctx.model_time - model).as_micros() as u64;
        Ok(())
    }
}

/// Buffers reused across batches and probe sets: no per-record allocation.
struct Scratch {
    input: Vec<f32>,
    ids: Vec<u32>,
    loaded: Vec<data::Loaded>,
    scores: Vec<f32>,
}

impl Scratch {
    fn new(engine: &Engine) -> Scratch {
        Scratch {
            input: vec![0f32; engine.batch * 3 * engine.side * engine.side],
            ids: Vec::with_capacity(engine.batch),
            loaded: Vec::with_capacity(engine.batch),
            scores: Vec::with_capacity(engine.num_classes),
        }
    }
}

/// What every probe runner writes to and with.
struct Ctx<'a> {
    engine: &'a Engine,
    pipeline: &'a Pipeline,
    args: &'a RunArgs,
    enc: &'a mut FrameEncoder,
    out: &'a mut dyn Write,
    counts: &'a mut Counts,
    /// Time inside the model's passes (forward, and backward for attacks).
    model_time: Duration,
    done: &'a Done,
}

impl Ctx<'_> {
    fn failure(&mut self, set: ProbeSet, sample: u32, name: &str, e: &anyhow::Error) -> Result<()> {
        if self.done.has(set, sample) {
            return Ok(());
        }
        self.counts.failures += 1;
        let mut f = Failure { set, sample, path: Default::default(), message: Default::default() };
        push_truncated(&mut f.path, name);
        push_truncated(&mut f.message, &format!("{e:#}"));
        self.out.write_all(self.enc.encode(&Message::Failure(f))?)?;
        Ok(())
    }

    /// Runs the model on the first `ids.len()` inputs of `s.input` and
    /// writes one record per sample.
    fn classify(&mut self, set: ProbeSet, decision: &Decision, s: &mut Scratch) -> Result<()> {
        let full = set == ProbeSet::Clean || self.args.suite.full_probs;
        let k = self.engine.num_classes;
        let t = Instant::now();
        let logits = self.engine.logits(&s.input, s.ids.len())?;
        self.model_time += t.elapsed();
        for ((row, &id), l) in logits.chunks_exact(k).zip(&s.ids).zip(&s.loaded) {
            if self.done.has(set, id) {
                continue;
            }
            let mut probs = Probs::new();
            probs.extend_from_slice(row).expect("num_classes ≤ MAX_CLASSES checked above");
            softmax_in_place(&mut probs);
            let d = decision.decide(&probs, l.label, &mut s.scores);
            let rec = Record {
                set,
                sample: id,
                label: l.label,
                prediction: d.prediction,
                confidence: d.confidence,
                p_true: d.p_true,
                cue: l.cue,
                probs: full.then(|| Box::new(probs)),
            };
            self.out.write_all(self.enc.encode(&Message::Record(rec))?)?;
            self.counts.records += 1;
        }
        Ok(())
    }

    /// Flushes after every batch so a cut connection loses at most the batch
    /// in flight, and lets a passively cooled board breathe.
    fn end_batch(&mut self) -> Result<()> {
        self.out.flush()?;
        if self.args.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.args.pause_ms));
        }
        Ok(())
    }
}

fn run_probe(ctx: &mut Ctx, probe: &Probe, s: &mut Scratch) -> Result<()> {
    let (per, batch, pipeline) = (3 * ctx.engine.side * ctx.engine.side, ctx.engine.batch, ctx.pipeline);
    // Fills a batch from `probe.ids[next..]` with images that decode (failures
    // are reported, not fatal) and says where the next batch starts.
    let fill = |next: usize, mut input: Vec<f32>| {
        let (mut ids, mut loaded, mut failures, mut i) = (Vec::new(), Vec::new(), Vec::new(), next);
        while ids.len() < batch && i < probe.ids.len() {
            let id = probe.ids[i];
            i += 1;
            let slot = &mut input[ids.len() * per..(ids.len() + 1) * per];
            match probe.source.load_into(id as usize, pipeline, slot) {
                Ok(l) => {
                    ids.push(id);
                    loaded.push(l);
                }
                Err(e) => failures.push((id, e)),
            }
        }
        (Prepared { set: probe.set, input, ids, loaded, failures }, (i < probe.ids.len()).then_some(i))
    };
    let first = (!probe.ids.is_empty()).then_some(0);
    overlapped(ctx, s, &probe.source, first, fill, |ctx, s, p| {
        if !p.ids.is_empty() && !ctx.done.all(p.set, &p.ids) {
            ctx.classify(p.set, &probe.decision, s)?;
            ctx.end_batch()?;
        }
        Ok(())
    })
}

/// A batch of one probe set, decoded (and corrupted) and normalised for the model.
struct Prepared {
    set: ProbeSet,
    input: Vec<f32>,
    ids: Vec<u32>,
    loaded: Vec<data::Loaded>,
    failures: Vec<(u32, anyhow::Error)>,
}

/// Prepares step `k + 1` on a second thread while the model classifies step
/// `k`: on a board with a spare core a stage then costs about the model's
/// time, not the sum of decoding, corrupting and the model. `prepare` fills
/// the spare input buffer and names the next step; `classify` sees each
/// batch, in order, once its failures are reported and its input is in
/// `s.input` and `s.ids`. The stream is the same as in sequence.
fn overlapped<K: Send>(
    ctx: &mut Ctx,
    s: &mut Scratch,
    source: &Source,
    first: Option<K>,
    prepare: impl Fn(K, Vec<f32>) -> (Prepared, Option<K>) + Sync,
    mut classify: impl FnMut(&mut Ctx, &mut Scratch, &Prepared) -> Result<()>,
) -> Result<()> {
    let prepare = &prepare;
    std::thread::scope(|scope| -> Result<()> {
        let spare = vec![0f32; s.input.len()];
        let mut pending = first.map(|k| scope.spawn(move || prepare(k, spare)));
        while let Some(step) = pending.take() {
            let (mut p, next) = step.join().map_err(|_| anyhow::anyhow!("preparing a batch panicked"))?;
            std::mem::swap(&mut s.input, &mut p.input);
            if let Some(k) = next {
                let buffer = std::mem::take(&mut p.input);
                pending = Some(scope.spawn(move || prepare(k, buffer)));
            }
            for (id, e) in &p.failures {
                ctx.failure(p.set, *id, &source.name(*id as usize), e)?;
            }
            s.ids.clone_from(&p.ids);
            s.loaded.clone_from(&p.loaded);
            classify(ctx, s, &p)?;
        }
        Ok(())
    })
}

/// Corrupts each batch of clean crops into every (corruption, severity)
/// cell; the seed of each variant comes from (run seed, sample, cell), so a
/// board and the host corrupt identically whatever the batch size.
fn run_generated(ctx: &mut Ctx, source: &Source, g: &Generated, s: &mut Scratch) -> Result<()> {
    let per = 3 * ctx.engine.side * ctx.engine.side;
    let first = g.cells.first().map(|&(c, sev)| corruption_set(c, sev));
    for chunk in g.ids.chunks(ctx.engine.batch) {
        if g.cells.iter().all(|&(c, sev)| ctx.done.all(corruption_set(c, sev), chunk)) {
            continue;
        }
        let mut crops = Vec::with_capacity(chunk.len());
        for &id in chunk {
            match source.load_crop(id as usize, ctx.pipeline) {
                Ok((crop, l)) => crops.push((id, crop, l)),
                // Reported once, under the first cell: the image itself is unreadable.
                Err(e) => ctx.failure(first.unwrap_or(ProbeSet::Clean), id, &source.name(id as usize), &e)?,
            }
        }
        // Cells whose every loaded crop already has its record are skipped
        // (over the crops that loaded: an image that failed to load never
        // gets this cell's key, and must not make the cell look unfinished).
        let cells: Vec<(Corruption, u8)> = g
            .cells
            .iter()
            .copied()
            .filter(|&(c, sev)| !crops.iter().all(|(id, ..)| ctx.done.has(corruption_set(c, sev), *id)))
            .collect();
        // Seeds depend on (run seed, sample, cell) only, so corrupting the
        // next cell during this one's pass gives the records of a sequence.
        let (pipeline, seed, options) = (ctx.pipeline, ctx.args.suite.seed, &g.options);
        let (crops, cells) = (&crops, &cells);
        let prepare = move |i: usize, mut input: Vec<f32>| {
            let (c, sev) = cells[i];
            let (mut ids, mut loaded, mut failures) = (Vec::new(), Vec::new(), Vec::new());
            for (id, crop, l) in crops {
                let slot = ids.len() * per..(ids.len() + 1) * per;
                let done = crate::corrupt::corrupt(crop, c, sev, crate::corrupt::sample_seed(seed, *id, c, sev), options)
                    .and_then(|img| data::normalise(&img, pipeline, &mut input[slot]));
                match done {
                    Ok(()) => {
                        ids.push(*id);
                        loaded.push(*l);
                    }
                    Err(e) => failures.push((*id, e)),
                }
            }
            (Prepared { set: corruption_set(c, sev), input, ids, loaded, failures }, (i + 1 < cells.len()).then_some(i + 1))
        };
        let first_cell = (!cells.is_empty()).then_some(0);
        overlapped(ctx, s, source, first_cell, prepare, |ctx, s, p| {
            if p.ids.is_empty() {
                return Ok(());
            }
            ctx.classify(p.set, &Decision::Identity, s)
        })?;
        ctx.end_batch()?;
    }
    Ok(())
}

/// Attacks each batch of clean images with FGSM and PGD and classifies the
/// adversarial images with the real model (the int8 one for int8 models);
/// PGD's random start is seeded by (run seed, sample id).
fn run_attacks(ctx: &mut Ctx, source: &Source, a: &Attacks, s: &mut Scratch) -> Result<()> {
    let per = 3 * ctx.engine.side * ctx.engine.side;
    let mut clean = vec![0f32; ctx.engine.batch * per];
    for chunk in a.ids.chunks(ctx.engine.batch) {
        if ATTACKS.iter().all(|&x| ctx.done.all(ProbeSet::Adversarial(x), chunk)) {
            continue;
        }
        s.ids.clear();
        s.loaded.clear();
        for &id in chunk {
            let slot = &mut clean[s.ids.len() * per..(s.ids.len() + 1) * per];
            match source.load_into(id as usize, ctx.pipeline, slot) {
                Ok(l) => {
                    s.ids.push(id);
                    s.loaded.push(l);
                }
                Err(e) => ctx.failure(ProbeSet::Adversarial(Attack::Fgsm), id, &source.name(id as usize), &e)?,
            }
        }
        if s.ids.is_empty() {
            continue;
        }
        let n = s.ids.len();
        let labels: Vec<i64> = s.loaded.iter().map(|l| l.label as i64).collect();
        let seeds: Vec<u64> = s.ids.iter().map(|&id| crate::attack::sample_seed(ctx.args.suite.seed, id as u64)).collect();
        for attack in ATTACKS {
            if ctx.done.all(ProbeSet::Adversarial(attack), &s.ids) {
                continue;
            }
            let t = Instant::now();
            let adv = crate::attack::run(
                &a.grad,
                attack,
                &a.config,
                &clean[..n * per],
                &ctx.pipeline.mean,
                &ctx.pipeline.std,
                &labels,
                &seeds,
            )
            .with_context(|| format!("{} on samples {}…{}", ProbeSet::Adversarial(attack).name(), s.ids[0], s.ids[n - 1]))?;
            ctx.model_time += t.elapsed();
            s.input[..n * per].copy_from_slice(&adv);
            ctx.classify(ProbeSet::Adversarial(attack), &Decision::Identity, s)?;
        }
        ctx.end_batch()?;
    }
    Ok(())
}

/// Cuts at a character boundary so a long path or message never fails a frame.
fn push_truncated<const N: usize>(dst: &mut heapless::String<N>, s: &str) {
    for ch in s.chars() {
        if dst.push(ch).is_err() {
            break;
        }
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

pub fn run_device(args: &DeviceArgs) -> Result<End> {
    let mut sink = crate::transport::open_sink(&args.out, args.token.as_deref())?;
    run(&args.run, &mut *sink)
}
