//! The device role: load a model and the benchmark's datasets, run every
//! probe set in batches and emit a header, one record per (probe, sample),
//! and an end frame.
//!
//! Clean records carry the full probability vector (ACE and class balance
//! need it). Shifted sets are decided on the device in their dataset's label
//! space ([`crate::benchmark`]), so a record stays small; `--full-probs`
//! keeps the model's whole vector on every record for host-side recomputation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::benchmark::{Decision, Mapping};
use crate::data::{self, Labels, Source};
use crate::engine::Engine;
use crate::metrics::softmax_in_place;
use crate::protocol::{
    Backend, End, Failure, FrameEncoder, Header, Message, OodSet, Pipeline, ProbeSet, Probs, Record, MAX_CLASSES,
    PROTOCOL_VERSION,
};
use crate::synth::Split;

/// The target triple this binary was built for (set by build.rs).
pub const TARGET: &str = env!("QUBA_TARGET");
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Groups of probe sets a run can be limited to (`--probes`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeGroup {
    /// The clean validation set (accuracy, calibration, class balance).
    Clean,
    /// edge, silhouette, sketch, stylized, rendition (OOD robustness).
    Ood,
    /// cue-conflict (shape bias).
    CueConflict,
    /// mixed_same and mixed_rand (object focus).
    Background,
}

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
    /// Benchmark name, recorded in the header: `imagenet` selects the study's label mappings
    /// (1000 → 16 categories, ImageNet-R, ImageNet-9) and paper normalisation; default `synth`
    /// for `--data synth`, else `custom` (datasets labelled in the model's own classes).
    #[arg(long)]
    pub benchmark: Option<String>,
    /// Keep the model's full probability vector on every record, not only on clean ones.
    #[arg(long)]
    pub full_probs: bool,
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
        opt("--benchmark", Some(self.benchmark()));
        if self.full_probs {
            a.push("--full-probs".into());
        }
        a
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

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// One probe set of a run: its images and how decisions are made on them.
struct Probe {
    set: ProbeSet,
    source: Source,
    decision: Decision,
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

const SHIFTED: [(ProbeSet, ProbeGroup); 8] = [
    (ProbeSet::Ood(OodSet::Edge), ProbeGroup::Ood),
    (ProbeSet::Ood(OodSet::Silhouette), ProbeGroup::Ood),
    (ProbeSet::Ood(OodSet::Sketch), ProbeGroup::Ood),
    (ProbeSet::Ood(OodSet::Stylized), ProbeGroup::Ood),
    (ProbeSet::Ood(OodSet::Rendition), ProbeGroup::Ood),
    (ProbeSet::CueConflict, ProbeGroup::CueConflict),
    (ProbeSet::MixedSame, ProbeGroup::Background),
    (ProbeSet::MixedRand, ProbeGroup::Background),
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

/// Opens every probe set the arguments ask for, before any image runs, so a
/// bad folder or file name fails the run at once rather than half-way.
fn open_probes(args: &SuiteArgs, mapping: Mapping, num_classes: usize) -> Result<Vec<Probe>> {
    let mut probes = Vec::new();
    let clean = Source::open(&args.data, Some(num_classes), args.per_class, args.seed)?;
    let clean_classes = clean.classes();
    if args.wants(ProbeGroup::Clean) {
        probes.push(Probe { set: ProbeSet::Clean, source: clean, decision: Decision::Identity });
    }
    for (set, group) in SHIFTED {
        if !args.wants(group) {
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
        probes.push(Probe { set, source, decision });
    }
    if probes.is_empty() {
        bail!("no probe set to run: --probes {:?} selects none that the benchmark provides", args.probes);
    }
    Ok(probes)
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
    let engine = Engine::load(&args.model, suite.batch, pipeline.crop as usize)?;
    let model_load_ms = t_load.elapsed().as_millis() as u64;
    if engine.num_classes > MAX_CLASSES {
        bail!("{}: {} output classes, the stream carries at most {MAX_CLASSES}", args.model.display(), engine.num_classes);
    }
    let benchmark = suite.benchmark();
    let mapping = Mapping::for_benchmark(&benchmark);
    let probes = open_probes(suite, mapping, engine.num_classes)?;
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
        dataset_root: probes[0].source.describe(),
        dataset_fingerprint: fingerprint(&probes),
        samples: probes.iter().map(|p| p.source.len() as u32).sum(),
        seed: suite.seed,
        per_class: suite.per_class.map(|n| n as u32),
        target: TARGET.into(),
        backend: Backend::TractCpu,
        batch: suite.batch as u32,
        threads: 1,
        probes: probes.iter().map(|p| p.set).collect(),
        full_probs: suite.full_probs,
        mapping,
    };
    let mut enc = FrameEncoder::new();
    out.write_all(enc.encode(&Message::Header(header))?)?;
    out.flush()?;

    let mut counts = Counts::default();
    let mut scratch = Scratch::new(&engine);
    for probe in &probes {
        run_probe(&engine, probe, &pipeline, args, &mut scratch, &mut enc, out, &mut counts)?;
    }
    let end = End {
        records: counts.records,
        failures: counts.failures,
        model_load_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kb: peak_rss_kb(),
    };
    out.write_all(enc.encode(&Message::End(end.clone()))?)?;
    out.flush()?;
    Ok(end)
}

/// Same fingerprint ⇒ same images of every set in the same order.
fn fingerprint(probes: &[Probe]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in probes {
        h.update(p.set.name().as_bytes());
        h.update([0]);
        h.update(p.source.fingerprint().as_bytes());
    }
    data::hex(&h.finalize())
}

#[derive(Default)]
struct Counts {
    records: u32,
    failures: u32,
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

#[allow(clippy::too_many_arguments)]
fn run_probe(
    engine: &Engine,
    probe: &Probe,
    pipeline: &Pipeline,
    args: &RunArgs,
    s: &mut Scratch,
    enc: &mut FrameEncoder,
    out: &mut dyn Write,
    counts: &mut Counts,
) -> Result<()> {
    let per = 3 * engine.side * engine.side;
    let full = probe.set == ProbeSet::Clean || args.suite.full_probs;
    let mut next = 0usize;
    while next < probe.source.len() {
        s.ids.clear();
        s.loaded.clear();
        // Fill a batch with images that decode; failures are reported, not fatal.
        while s.ids.len() < engine.batch && next < probe.source.len() {
            let slot = &mut s.input[s.ids.len() * per..(s.ids.len() + 1) * per];
            match probe.source.load_into(next, pipeline, slot) {
                Ok(l) => {
                    s.ids.push(next as u32);
                    s.loaded.push(l);
                }
                Err(e) => {
                    counts.failures += 1;
                    let mut f = Failure { set: probe.set, sample: next as u32, path: Default::default(), message: Default::default() };
                    push_truncated(&mut f.path, &probe.source.name(next));
                    push_truncated(&mut f.message, &format!("{e:#}"));
                    out.write_all(enc.encode(&Message::Failure(f))?)?;
                }
            }
            next += 1;
        }
        if s.ids.is_empty() {
            continue;
        }
        let logits = engine.logits(&s.input, s.ids.len())?;
        for ((row, &id), l) in logits.chunks_exact(engine.num_classes).zip(&s.ids).zip(&s.loaded) {
            let mut probs = Probs::new();
            probs.extend_from_slice(row).expect("num_classes ≤ MAX_CLASSES checked above");
            softmax_in_place(&mut probs);
            let d = probe.decision.decide(&probs, l.label, &mut s.scores);
            let rec = Record {
                set: probe.set,
                sample: id,
                label: l.label,
                prediction: d.prediction,
                confidence: d.confidence,
                p_true: d.p_true,
                cue: l.cue,
                probs: full.then_some(probs),
            };
            out.write_all(enc.encode(&Message::Record(rec))?)?;
            counts.records += 1;
        }
        out.flush()?;
        if args.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.pause_ms));
        }
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
