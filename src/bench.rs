//! `quba bench`: the engine path alone, on random inputs, so its throughput
//! can be put beside another runtime's on the same ONNX file (issue 10).
//!
//! What is timed is `Engine::logits`, the very call the suite makes per batch,
//! so a number here is what a suite run pays per forward pass. Parallelism is
//! one engine per OS thread, each on its own images, because tract's executor
//! is single-threaded and whole-model instances per core scale better than
//! its intra-op pool (docs/tract.md).

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::engine::Engine;
use crate::protocol::Backend;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The ONNX classifier to time.
    pub model: PathBuf,
    /// Images per forward pass; tract optimises the model for exactly this batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Engine instances, one per OS thread, each on its own images; the
    /// throughput reported is theirs together.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Untimed rounds first (caches, allocator, lazily packed weights).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed rounds; the median round is reported.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Input side in pixels (default: the ONNX input's own H×W, else the sidecar's crop).
    #[arg(long)]
    pub side: Option<usize>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// `cpu` (tract with quba's integer kernels for int8 convolutions) or
    /// `tract` (tract alone), to time the one against the other.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
    /// Also time each kind of op over the timed rounds (one engine, one
    /// thread) and print where a forward pass spends its time.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub model: PathBuf,
    pub batch: usize,
    pub threads: usize,
    pub side: usize,
    pub warmup: usize,
    pub runs: usize,
    /// Wall time of the median round (every thread one batch) divided by the
    /// images that round classified (threads × batch).
    pub ms_per_image: f64,
    pub images_per_second: f64,
    pub peak_rss_bytes: u64,
    pub median_round_ms: f64,
    pub min_round_ms: f64,
    pub load_ms: f64,
    pub int8_format: String,
    pub backend: Backend,
    /// Convolutions on quba's integer kernels.
    pub integer_convs: usize,
}

impl BenchResult {
    /// Written by hand because the three headline keys must come first and in
    /// this order (serde_json's map sorts them), so any tool can read them
    /// without a JSON parser that keeps order.
    pub fn to_json(&self) -> String {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        format!(
            "{{\"ms_per_image\": {}, \"images_per_second\": {}, \"peak_rss_bytes\": {}, \"batch\": {}, \"threads\": {}, \
             \"side\": {}, \"warmup\": {}, \"runs\": {}, \"median_round_ms\": {}, \"min_round_ms\": {}, \"load_ms\": {}, \
             \"int8_format\": {}, \"backend\": {}, \"integer_convs\": {}, \"model\": {}}}",
            self.ms_per_image,
            self.images_per_second,
            self.peak_rss_bytes,
            self.batch,
            self.threads,
            self.side,
            self.warmup,
            self.runs,
            self.median_round_ms,
            self.min_round_ms,
            self.load_ms,
            s(&self.int8_format),
            s(self.backend.as_str()),
            self.integer_convs,
            s(&self.model.display().to_string()),
        )
    }

    pub fn sentence(&self) -> String {
        format!(
            "{}: batch {}, {} thread(s) with an engine each, {}×{} input, median of {} rounds: {:.3} ms/image, {:.1} images/s, peak RSS {:.1} MB",
            self.model.display(),
            self.batch,
            self.threads,
            self.side,
            self.side,
            self.runs,
            self.ms_per_image,
            self.images_per_second,
            self.peak_rss_bytes as f64 / (1 << 20) as f64
        )
    }
}

pub fn run_cli(a: &BenchArgs) -> Result<()> {
    if a.profile {
        return profile(a);
    }
    let r = bench(a)?;
    if a.json {
        println!("{}", r.to_json());
    } else {
        println!("{}", r.sentence());
    }
    Ok(())
}

fn profile(a: &BenchArgs) -> Result<()> {
    let side = side(a)?;
    let engine = Engine::load_on(&a.model, a.batch, side, a.backend)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let input: Vec<f32> = (0..a.batch * 3 * side * side).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    engine.profile(&input, a.warmup)?;
    let rows = engine.profile(&input, a.runs)?;
    let total: f64 = rows.iter().map(|r| r.1).sum();
    println!("{}: batch {}, {} per op kind over {} passes, {:.3} ms per pass in ops", a.model.display(), a.batch, a.backend.as_str(), a.runs, total);
    for (name, ms, nodes) in rows {
        println!("{:>10.3} ms {:>5.1} %  {:>4} nodes  {name}", ms, 100.0 * ms / total, nodes);
    }
    Ok(())
}

/// `--side`, else the model's own input size.
fn side(a: &BenchArgs) -> Result<usize> {
    a.side.map_or_else(|| input_side(&a.model), Ok)
}

pub fn bench(a: &BenchArgs) -> Result<BenchResult> {
    let path = &a.model;
    if a.batch == 0 || a.threads == 0 || a.runs == 0 {
        bail!("{}: --batch, --threads and --runs must be at least 1", path.display());
    }
    let side = side(a)?;
    let t0 = Instant::now();
    // Loaded one after the other so a broken model fails before any thread
    // waits on a barrier it would never reach.
    let engines: Vec<Engine> = (0..a.threads).map(|_| Engine::load_on(path, a.batch, side, a.backend)).collect::<Result<_>>()?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3 / a.threads as f64;
    let int8_format = engines[0].facts.int8_format.clone();
    let integer_convs = engines[0].integer_convs;

    // Rounds start together at a barrier, and a round lasts from the first
    // thread's start to the last thread's end: a per-thread median would hide
    // a straggler and overstate what T cores deliver together. Each thread
    // stamps its own pass, so a coordinator preempted on a loaded machine
    // cannot shorten a round it failed to watch.
    let barrier = Barrier::new(a.threads);
    let rounds = a.warmup + a.runs;
    let per = a.batch * 3 * side * side;
    let stamps: Vec<Vec<(Instant, Instant)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = engines
            .iter()
            .enumerate()
            .map(|(i, engine)| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<Vec<(Instant, Instant)>> {
                    // Each thread its own images, as in a suite run split over cores.
                    let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
                    let input: Vec<f32> = (0..per).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                    let mut err = None;
                    let mut mine = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        barrier.wait();
                        let s = Instant::now();
                        // A failed or panicking pass still meets every later
                        // barrier, or the other threads would wait for ever
                        // (tract panics on some graphs instead of erroring).
                        if err.is_none() {
                            let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.logits(&input, a.batch)));
                            match pass {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => err = Some(e),
                                Err(_) => err = Some(anyhow::anyhow!("the forward pass panicked")),
                            }
                        }
                        mine.push((s, Instant::now()));
                    }
                    err.map_or(Ok(mine), Err)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))?).collect::<Result<Vec<_>>>()
    })
    .with_context(|| format!("{}: a forward pass failed", path.display()))?;
    let mut times: Vec<f64> = (a.warmup..rounds)
        .map(|r| {
            let first = stamps.iter().map(|t| t[r].0).min().unwrap();
            let last = stamps.iter().map(|t| t[r].1).max().unwrap();
            (last - first).as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median_round_ms = median(&times);
    let ms_per_image = median_round_ms / (a.batch * a.threads) as f64;
    Ok(BenchResult {
        model: path.clone(),
        batch: a.batch,
        threads: a.threads,
        side,
        warmup: a.warmup,
        runs: a.runs,
        ms_per_image,
        images_per_second: 1e3 / ms_per_image,
        peak_rss_bytes: crate::suite::peak_rss_kb() * 1024,
        median_round_ms,
        min_round_ms: times[0],
        load_ms,
        int8_format,
        backend: a.backend,
        integer_convs,
    })
}

/// Median of sorted values; the mean of the middle two for an even count, so
/// two runs do not report the faster one.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The input side the model declares (square NCHW with 3 channels), else its
/// sidecar's crop: a bench needs no pipeline, but a symbolic H×W must come
/// from somewhere, and guessing 224 would time the wrong model.
pub fn input_side(path: &Path) -> Result<usize> {
    if let Some(s) = declared_side(path)? {
        return Ok(s);
    }
    let side = crate::suite::sidecar_path(path);
    if side.exists() {
        let text = std::fs::read_to_string(&side).with_context(|| format!("cannot read {}", side.display()))?;
        let meta = crate::suite::parse_meta(&text).with_context(|| format!("{} is not a valid model sidecar", side.display()))?;
        return Ok(meta.pipeline.crop as usize);
    }
    bail!(
        "{}: the ONNX input has no fixed H×W and there is no sidecar {}; pass --side N",
        path.display(),
        side.display()
    )
}

fn declared_side(path: &Path) -> Result<Option<usize>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let proto = tract_onnx::onnx().proto_model_for_read(&mut bytes.as_slice()).map_err(|e| {
        anyhow::anyhow!("{} is not an ONNX model (protobuf parse failed: {e}); expected a .onnx file", path.display())
    })?;
    let graph = proto.graph.as_ref().with_context(|| format!("{}: ONNX file has no graph", path.display()))?;
    // Old exporters list initialisers among the inputs too; the image is the
    // first input that is not one.
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let Some(input) = graph.input.iter().find(|i| !inits.contains(i.name.as_str())) else {
        bail!("{}: the model has no input", path.display());
    };
    let dims: Vec<Option<i64>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => return Ok(None),
    };
    Ok(match dims.as_slice() {
        [_, _, Some(h), Some(w)] if h == w && *h > 0 => Some(*h as usize),
        _ => None,
    })
}
