//! The run loop: the header, every probe set of the plan in batches (the
//! next batch prepared on a second thread while the model runs, see
//! `overlapped`), one record or failure per sample, the end frame, and the
//! bookkeeping of a resumed run. Kept apart from the plan, which decides
//! what runs; this decides only how.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::args::{DeviceArgs, RunArgs};
use super::plan::{corruption_set, open_plan, resolve_pipeline, Attacks, Generated, Probe, ATTACKS};
use super::{peak_rss_kb, ProbeGroup, TARGET, TOOL_VERSION};
use crate::benchmark::{Decision, Mapping};
use crate::corrupt::{imagenet_c, Corruption, CorruptionMode};
use crate::data::{self, Source};
use crate::engine::Engine;
use crate::metrics::softmax_in_place;
use crate::protocol::{
    Attack, End, Failure, FrameEncoder, Header, Message, Pipeline, ProbeSet, Probs, Record, Resume, Stage, MAX_CLASSES,
    PROTOCOL_VERSION,
};
use quba_common::Keys;

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
    let plan = open_plan(suite, &args.model, mapping, engine.num_classes, engine.outputs)?;
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
        decoder: data::decoder(),
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
        corruption_mode: plan.corruption_mode,
        outputs: engine.outputs,
        attacks_unavailable: plan.attacks_unavailable.clone(),
        execution: engine.execution.clone(),
    };
    // Read before the header goes out: a bad list must not restart the stream.
    let done = Done::load(args.resume_from.as_deref())?;
    let mut enc = FrameEncoder::new();
    FrameEncoder::new()
        .encode(&Message::End(End::widest(header.clone())))
        .context("the run header is too long to be repeated in the End frame (docs/wire-format.md, End)")?;
    out.write_all(enc.encode(&Message::Header(header.clone()))?)?;
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
        header: Box::new(header),
    };
    out.write_all(enc.encode(&Message::End(end.clone()))?)?;
    out.flush()?;
    Ok(end)
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
            let d = if self.engine.outputs.are_probabilities() {
                // Taken as given: a second softmax would flatten them.
                decision.decide(&probs, l.label, &mut s.scores)
            } else {
                softmax_in_place(&mut probs);
                decision.decide_logits(row, &probs, l.label, &mut s.scores)
            };
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
/// board and the host corrupt identically whatever the batch size. The crop
/// is the pipeline's (direct mode) or ImageNet-C's 224 one, whose corrupted
/// JPEG then goes through the pipeline as a file would (imagenet-c mode).
fn run_generated(ctx: &mut Ctx, source: &Source, g: &Generated, s: &mut Scratch) -> Result<()> {
    let per = 3 * ctx.engine.side * ctx.engine.side;
    let first = g.cells.first().map(|&(c, sev)| corruption_set(c, sev));
    for chunk in g.ids.chunks(ctx.engine.batch) {
        if g.cells.iter().all(|&(c, sev)| ctx.done.all(corruption_set(c, sev), chunk)) {
            continue;
        }
        let mut crops = Vec::with_capacity(chunk.len());
        for &id in chunk {
            let crop = match g.mode {
                CorruptionMode::ImagenetC => source.load_image(id as usize).and_then(|(img, l)| {
                    Ok((imagenet_c::generator_crop(&img).with_context(|| source.name(id as usize))?, l))
                }),
                CorruptionMode::Direct | CorruptionMode::Files => source.load_crop(id as usize, ctx.pipeline),
            };
            match crop {
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
        let (pipeline, seed, options, mode) = (ctx.pipeline, ctx.args.suite.seed, &g.options, g.mode);
        let (crops, cells) = (&crops, &cells);
        let prepare = move |i: usize, mut input: Vec<f32>| {
            let (c, sev) = cells[i];
            let (mut ids, mut loaded, mut failures) = (Vec::new(), Vec::new(), Vec::new());
            for (id, crop, l) in crops {
                let slot = ids.len() * per..(ids.len() + 1) * per;
                let sample_seed = crate::corrupt::sample_seed(seed, *id, c, sev);
                let done = match mode {
                    CorruptionMode::ImagenetC => imagenet_c::file_image(crop, c, sev, sample_seed, options)
                        .and_then(|file| data::preprocess(&file, pipeline, &mut input[slot])),
                    CorruptionMode::Direct | CorruptionMode::Files => crate::corrupt::corrupt(crop, c, sev, sample_seed, options)
                        .and_then(|img| data::normalise(&img, pipeline, &mut input[slot])),
                };
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

pub fn run_device(args: &DeviceArgs) -> Result<End> {
    let mut sink = crate::transport::open_sink(&args.out, args.token.as_deref())?;
    run(&args.run, &mut *sink)
}
