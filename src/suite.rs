//! The device role: load a model and a dataset, run the probes in batches and
//! emit a header, one record per (probe, sample), and an end frame.
//!
//! Only the clean probe set exists so far; its records carry the full
//! probability vector because ACE and class balance need it. Every other
//! dimension adds a [`ProbeSet`] producer here; the host already names the
//! sets it cannot find.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::data::{self, Source};
use crate::engine::Engine;
use crate::metrics::softmax_in_place;
use crate::protocol::{
    Backend, End, Failure, FrameEncoder, Header, Message, Pipeline, ProbeSet, Probs, Record, MAX_CLASSES, PROTOCOL_VERSION,
};

/// The target triple this binary was built for (set by build.rs).
pub const TARGET: &str = env!("QUBA_TARGET");
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the device needs to know to run; the same flags for
/// `quba-device run` and `quba device run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// ONNX classifier (fp32, or int8 in QDQ or QOperator form).
    #[arg(long)]
    pub model: PathBuf,
    /// Clean validation images: an ImageFolder tree (one folder per class, sorted order = class
    /// index), or `synth` (`synth:<split>`) for the synthetic benchmark rendered in memory.
    #[arg(long)]
    pub data: PathBuf,
    /// Input pipeline: a JSON file, or `imagenet` for the study's (resize 256 bicubic, crop 224,
    /// ImageNet mean/std). Default: the model's sidecar `<model stem>.json`.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Evaluate N images per class: a seeded subset of a folder (all when omitted), or the
    /// number generated per class for `synth` (default 50).
    #[arg(long)]
    pub per_class: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Name of the benchmark suite, recorded in the header.
    #[arg(long, default_value = "custom")]
    pub benchmark: String,
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
        let mut a = vec!["--model".into(), self.model.display().to_string(), "--data".into(), self.data.display().to_string()];
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(k.into());
                a.push(v);
            }
        };
        opt("--pipeline", self.pipeline.clone());
        opt("--per-class", self.per_class.map(|n| n.to_string()));
        opt("--seed", Some(self.seed.to_string()));
        opt("--batch", Some(self.batch.to_string()));
        opt("--benchmark", Some(self.benchmark.clone()));
        opt("--run-id", self.run_id.clone());
        opt("--pause-ms", Some(self.pause_ms.to_string()));
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
    match args.pipeline.as_deref() {
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

/// Runs the clean probe set and writes frames to `out`, flushing after every
/// batch so a cut connection loses at most the batch in flight.
pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<End> {
    let started = Instant::now();
    let (pipeline, meta_name) = resolve_pipeline(args)?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (sha, model_bytes) = data::sha256_file(&args.model)?;
    let t_load = Instant::now();
    let engine = Engine::load(&args.model, args.batch, pipeline.crop as usize)?;
    let model_load_ms = t_load.elapsed().as_millis() as u64;
    if engine.num_classes > MAX_CLASSES {
        bail!("{}: {} output classes, the stream carries at most {MAX_CLASSES}", args.model.display(), engine.num_classes);
    }
    let dataset = Source::open(&args.data, Some(engine.num_classes), args.per_class, args.seed)?;
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
        benchmark: args.benchmark.clone(),
        dataset_root: dataset.describe(),
        dataset_fingerprint: dataset.fingerprint(),
        samples: dataset.len() as u32,
        seed: args.seed,
        per_class: args.per_class.map(|n| n as u32),
        target: TARGET.into(),
        backend: Backend::TractCpu,
        batch: args.batch as u32,
        threads: 1,
        probes: vec![ProbeSet::Clean],
        full_probs: true,
    };
    let mut enc = FrameEncoder::new();
    out.write_all(enc.encode(&Message::Header(header))?)?;
    out.flush()?;

    let per = 3 * engine.side * engine.side;
    let mut input = vec![0f32; engine.batch * per];
    let mut batch_ids: Vec<u32> = Vec::with_capacity(engine.batch);
    let (mut records, mut failures) = (0u32, 0u32);
    let mut labels: Vec<u16> = Vec::with_capacity(engine.batch);
    let mut next = 0usize;
    while next < dataset.len() {
        batch_ids.clear();
        labels.clear();
        // Fill a batch with images that decode; failures are reported, not fatal.
        while batch_ids.len() < engine.batch && next < dataset.len() {
            let slot = &mut input[batch_ids.len() * per..(batch_ids.len() + 1) * per];
            match dataset.load_into(next, &pipeline, slot) {
                Ok(label) => {
                    batch_ids.push(next as u32);
                    labels.push(label);
                }
                Err(e) => {
                    failures += 1;
                    let mut f = Failure { set: ProbeSet::Clean, sample: next as u32, path: Default::default(), message: Default::default() };
                    push_truncated(&mut f.path, &dataset.name(next));
                    push_truncated(&mut f.message, &format!("{e:#}"));
                    out.write_all(enc.encode(&Message::Failure(f))?)?;
                }
            }
            next += 1;
        }
        if batch_ids.is_empty() {
            continue;
        }
        let logits = engine.logits(&input, batch_ids.len())?;
        for ((row, &id), &label) in logits.chunks_exact(engine.num_classes).zip(&batch_ids).zip(&labels) {
            let mut probs = Probs::new();
            probs.extend_from_slice(row).expect("num_classes ≤ MAX_CLASSES checked above");
            softmax_in_place(&mut probs);
            let prediction = crate::metrics::argmax(&probs);
            let rec = Record {
                set: ProbeSet::Clean,
                sample: id,
                label,
                prediction: prediction as u16,
                confidence: probs[prediction],
                p_true: probs[label as usize],
                probs: Some(probs),
            };
            out.write_all(enc.encode(&Message::Record(rec))?)?;
            records += 1;
        }
        out.flush()?;
        if args.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.pause_ms));
        }
    }
    let end = End { records, failures, model_load_ms, elapsed_ms: started.elapsed().as_millis() as u64, peak_rss_kb: peak_rss_kb() };
    out.write_all(enc.encode(&Message::End(end.clone()))?)?;
    out.flush()?;
    Ok(end)
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
