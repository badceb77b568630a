//! From stored run logs to the nine dimensions, QUBA and the outputs people
//! read: `results.json`, the terminal table and the per-sample export.
//!
//! Nothing here touches a model: every number is recomputed from
//! `records.qlog`, so a metric can be fixed and a report redone without
//! re-running a single image on a board.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::benchmark::MappingRules;
use crate::metrics;
use crate::protocol::{
    decode_all, header_of, Attack, CorruptionMode, DecodeStats, End, Failure, Header, LostFrame, Message, OodSet, Precision, ProbeSet,
    Record, CORRUPTIONS,
    PROTOCOL_VERSION,
};
use crate::resample::{self, Draw, Positions, Universe};
use crate::quba::{self, Dimension, Normalisation, Values, Weights};
use crate::ingest::{Keys, Manifest, ManifestFile, RunStatus, LOG_FILE};

/// One run as the host stored it.
pub struct Run {
    pub dir: PathBuf,
    pub header: Header,
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    pub end: Option<End>,
    pub status: RunStatus,
    /// Records seen twice for the same (probe, sample) and dropped.
    pub duplicates: usize,
    pub decode: DecodeStats,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run> {
        let manifest = Manifest::read(dir)?;
        // Its frames would all be rejected as damaged; say why instead.
        if let Some(v) = manifest.header.as_ref().map(|h| h.protocol).filter(|&v| v != PROTOCOL_VERSION) {
            bail!("{}: written with protocol version {v} (header field protocol); this quba reads version {PROTOCOL_VERSION}", dir.display());
        }
        let log = dir.join(LOG_FILE);
        let bytes = std::fs::read(&log).with_context(|| format!("cannot read {}", log.display()))?;
        let (frames, stats) = decode_all(&bytes);
        let header = header_of(&frames).cloned().with_context(|| no_header(&log, &manifest))?;
        let mut records = Vec::new();
        let mut failures = Vec::new();
        let mut end = None;
        let mut seen = Keys::default();
        let mut seen_failures = Keys::default();
        let mut duplicates = 0;
        for f in frames {
            match f.message {
                Message::Record(r) => {
                    // A resent or replayed record must never count twice.
                    if seen.insert((r.set, r.sample)) {
                        records.push(r);
                    } else {
                        duplicates += 1;
                    }
                }
                Message::Failure(x) => {
                    if seen_failures.insert((x.set, x.sample)) {
                        failures.push(x);
                    }
                }
                Message::End(e) => end = Some(e),
                Message::Header(_) | Message::Hello { .. } => {}
            }
        }
        // The log only ever holds checked frames, so damage here means the
        // disk changed under us; say so with the stream's own losses.
        let mut decode = manifest.decode.clone();
        decode.corrupt_frames += stats.corrupt_frames;
        decode.bytes_lost += stats.bytes_lost;
        decode.truncated_tail |= stats.truncated_tail;
        Ok(Run { dir: dir.to_path_buf(), header, records, failures, end, status: manifest.status, duplicates, decode })
    }

    pub fn all_records(&self) -> Records<'_> {
        Records { dir: &self.dir, header: &self.header, records: self.records.iter().collect() }
    }
}

/// Why a log without a header cannot be reported, with what the manifest
/// knows about where it went.
fn no_header(log: &Path, m: &Manifest) -> String {
    let why = match m.lost.iter().find(|l| l.frame == LostFrame::Header) {
        Some(lost) => format!("{lost} in the stream from {}, and no End frame, which repeats it, arrived", m.source),
        None if m.records + m.failures > 0 => "neither a Header frame nor an End frame, which repeats it, arrived".into(),
        None => return format!("{}: the log has no run header; the run never started", log.display()),
    };
    format!(
        "{}: no run header: {why}; {} is unknown, so its {} records cannot be reported (manifest status {})",
        log.display(),
        LostFrame::Header.facts(),
        m.records,
        serde_json::to_value(&m.status).unwrap_or_default()
    )
}

/// The nine dimensions of one run, with what supports each value.
pub struct ModelResult {
    pub values: Values,
    pub intervals: [Option<(f64, f64)>; 9],
    pub samples: [Option<usize>; 9],
    pub missing: BTreeMap<Dimension, String>,
    /// Part-measures kept beside the dimensions (ECE and ACE, the class-balance terms, …).
    pub parts: BTreeMap<String, f64>,
    /// The nine values of every bootstrap resample, in draw order: the
    /// intervals above, and QUBA's once the report knows its normalisation.
    pub replicates: Vec<Values>,
}

/// Clean-set statistics that several dimensions share; computed once.
struct Clean {
    labels: Vec<usize>,
    preds: Vec<usize>,
    probs: Vec<f32>,
    k: usize,
    at: Positions,
}

impl Clean {
    fn from_run(run: &Records, universe: &Universe) -> Result<Option<Clean>> {
        let k = run.header.num_classes as usize;
        let mut c = Clean { labels: vec![], preds: vec![], probs: vec![], k, at: universe.positions(ProbeSet::Clean) };
        for r in run.records_of(ProbeSet::Clean) {
            let p = r.probs.as_ref().with_context(|| {
                format!("{}: clean record of sample {} has no probability vector (needed for ACE)", run.dir.display(), r.sample)
            })?;
            if p.len() != k {
                bail!("{}: sample {} has {} probabilities, the header says {k} classes", run.dir.display(), r.sample, p.len());
            }
            c.labels.push(r.label as usize);
            c.preds.push(r.prediction as usize);
            c.probs.extend_from_slice(p);
        }
        Ok(if c.labels.is_empty() { None } else { Some(c) })
    }

    /// Labels, predictions and probability rows of the drawn clean images.
    fn resample(&self, draw: &Draw) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
        let (mut l, mut p, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        for i in self.at.drawn(draw) {
            l.push(self.labels[i]);
            p.push(self.preds[i]);
            probs.extend_from_slice(&self.probs[i * self.k..(i + 1) * self.k]);
        }
        (l, p, probs)
    }
}

pub struct EvalOptions {
    pub bootstrap: usize,
    pub seed: u64,
}

pub fn evaluate(run: &Run, opts: &EvalOptions) -> Result<ModelResult> {
    evaluate_records(&run.all_records(), opts)
}

/// The records a computation sees: all of a run's, or a resample of them
/// (`compare` draws the same samples from two runs), without copying the
/// probability vectors.
pub struct Records<'a> {
    pub dir: &'a Path,
    pub header: &'a Header,
    pub records: Vec<&'a Record>,
}

impl Records<'_> {
    pub fn records_of(&self, set: ProbeSet) -> impl Iterator<Item = &Record> {
        self.records.iter().copied().filter(move |r| r.set == set)
    }
}

/// The nine dimensions with paired-bootstrap intervals (`resample`).
pub fn evaluate_records(run: &Records, opts: &EvalOptions) -> Result<ModelResult> {
    let universe = Universe::new(&run.records);
    let (prepared, mut res) = Prepared::new(run, &universe)?;
    let point = prepared.values(&universe.whole());
    for (i, d) in Dimension::ALL.iter().enumerate() {
        match point[i] {
            Some(v) if !v.is_finite() => {
                res.missing.insert(*d, prepared.why_not_finite(*d, v));
            }
            v => res.values[i] = v,
        }
    }
    if opts.bootstrap > 0 {
        res.replicates.reserve(opts.bootstrap);
        universe.resamples(opts.bootstrap, opts.seed, |draw| res.replicates.push(prepared.values(draw)));
        for i in 0..9 {
            if res.values[i].is_some() && i != Dimension::ParametersM.index() {
                res.intervals[i] = resample::interval(res.replicates.iter().filter_map(|r| r[i]).collect(), opts.bootstrap);
            }
        }
    }
    Ok(res)
}

/// Two runs' values on the whole sample and on the same resamples: the
/// paired bootstrap of `compare`. `a` and `b` must hold the same (probe set,
/// sample) records in the same order.
pub fn paired(a: &Records, b: &Records, opts: &EvalOptions) -> Result<(Values, Values, Vec<(Values, Values)>)> {
    let keys = |r: &Records| r.records.iter().map(|x| (x.set, x.sample)).collect::<Vec<_>>();
    if keys(a) != keys(b) {
        bail!("{} and {}: a paired bootstrap needs the same records in the same order", a.dir.display(), b.dir.display());
    }
    let universe = Universe::new(&a.records);
    let (pa, _) = Prepared::new(a, &universe)?;
    let (pb, _) = Prepared::new(b, &universe)?;
    let mut replicates = Vec::with_capacity(opts.bootstrap);
    universe.resamples(opts.bootstrap, opts.seed, |d| replicates.push((pa.values(d), pb.values(d))));
    let whole = universe.whole();
    Ok((pa.values(&whole), pb.values(&whole), replicates))
}

/// One probe set's decisions, in its dataset's label space.
struct Decisions {
    label: Vec<u16>,
    prediction: Vec<u16>,
    cue: Vec<Option<u16>>,
    at: Positions,
}

impl Decisions {
    /// Where the run kept the model's full vectors, the host decides again
    /// from them with the same mapping code the device used.
    fn of(run: &Records, set: ProbeSet, universe: &Universe) -> Decisions {
        let decision = run.header.mapping.decision(set);
        let k = run.header.num_classes as usize;
        let mut scores = Vec::new();
        let mut d = Decisions { label: vec![], prediction: vec![], cue: vec![], at: universe.positions(set) };
        for r in run.records_of(set) {
            let prediction = match &r.probs {
                Some(p) if p.len() == k && decision.decides_from(p) => decision.decide(p, r.label, &mut scores).prediction,
                _ => r.prediction,
            };
            d.label.push(r.label);
            d.prediction.push(prediction);
            d.cue.push(r.cue);
        }
        d
    }

    fn len(&self) -> usize {
        self.label.len()
    }

    fn correct(&self, i: usize) -> bool {
        self.label[i] == self.prediction[i]
    }

    /// Over the drawn images this set holds; NaN when it holds none of them.
    fn accuracy(&self, draw: &Draw) -> f64 {
        let (mut n, mut hits) = (0u32, 0u32);
        for (i, c) in self.at.counted(draw) {
            n += c;
            hits += c * self.correct(i) as u32;
        }
        hits as f64 / n as f64
    }
}

/// What each dimension is computed from, decided once per run; `values`
/// then computes all nine for any resample. A dimension whose data is
/// missing has its reason in the `ModelResult` `new` returns, and stays
/// `None` in every resample.
struct Prepared {
    parameters: f64,
    clean: Option<Clean>,
    clean_decisions: Decisions,
    attacks: Option<[Decisions; 2]>,
    cells: Option<Vec<Decisions>>,
    ood: Option<Vec<Decisions>>,
    cue_conflict: Option<(Decisions, Vec<u16>)>,
    mixed: Option<[Decisions; 2]>,
}

const OOD_SETS: [OodSet; 5] = [OodSet::Edge, OodSet::Silhouette, OodSet::Sketch, OodSet::Stylized, OodSet::Rendition];

impl Prepared {
    fn new(run: &Records, universe: &Universe) -> Result<(Prepared, ModelResult)> {
        let mut res = ModelResult {
            values: [None; 9],
            intervals: [None; 9],
            samples: [None; 9],
            missing: BTreeMap::new(),
            parts: BTreeMap::new(),
            replicates: Vec::new(),
        };
        res.parts.insert("model_bytes".into(), run.header.model_bytes as f64);
        let clean = Clean::from_run(run, universe)?;
        match &clean {
            None => {
                for d in [Dimension::Accuracy, Dimension::CalibrationError, Dimension::ClassBalance] {
                    res.missing.insert(d, "the run has no clean records".into());
                }
            }
            Some(c) => {
                // ECE and ACE once: reported parts beside their gmean.
                let (ece, ace) = metrics::ece_and_ace(&c.probs, c.k, &c.labels);
                res.parts.insert("ece".into(), ece);
                res.parts.insert("ace".into(), ace);
                for d in [Dimension::Accuracy, Dimension::CalibrationError, Dimension::ClassBalance] {
                    res.samples[d.index()] = Some(c.labels.len());
                }
            }
        }
        let clean_decisions = Decisions::of(run, ProbeSet::Clean, universe);
        let whole = universe.whole();
        let p = Prepared {
            parameters: run.header.parameters as f64 / 1e6,
            clean,
            attacks: attacks(run, universe, &whole, &clean_decisions, &mut res),
            cells: corruption_cells(run, universe, &whole, &clean_decisions, &mut res),
            ood: ood_sets(run, universe, &whole, &clean_decisions, &mut res),
            cue_conflict: cue_conflict(run, universe, &mut res),
            mixed: mixed(run, universe, &whole, &clean_decisions, &mut res),
            clean_decisions,
        };
        Ok((p, res))
    }

    /// The nine values on the images `draw` holds (NaN or ±inf where a
    /// resample leaves a ratio undefined).
    fn values(&self, draw: &Draw) -> Values {
        let mut v: Values = [None; 9];
        v[Dimension::ParametersM.index()] = Some(self.parameters);
        if let Some(c) = &self.clean {
            let (l, p, pb) = c.resample(draw);
            v[Dimension::Accuracy.index()] = Some(metrics::accuracy(&l, &p));
            v[Dimension::CalibrationError.index()] = Some(metrics::calibration_error(&pb, c.k, &l));
            v[Dimension::ClassBalance.index()] = Some(metrics::class_balance(&pb, c.k, &l));
        }
        let clean = &self.clean_decisions;
        if let Some(attacks) = &self.attacks {
            let [c, f, p] = attack_accuracies(clean, attacks, draw).0;
            v[Dimension::AdversarialRobustness.index()] = Some(metrics::gmean(&[p / c, f / c]));
        }
        if let Some(cells) = &self.cells {
            let sum: f64 = cells.iter().map(|d| d.accuracy(draw)).sum();
            v[Dimension::CorruptionRobustness.index()] = Some(sum / cells.len() as f64 / clean.accuracy(draw));
        }
        if let Some(sets) = &self.ood {
            let base = clean.accuracy(draw);
            v[Dimension::OodRobustness.index()] = Some(metrics::gmean(&sets.iter().map(|d| d.accuracy(draw) / base).collect::<Vec<_>>()));
        }
        if let Some((cc, texture)) = &self.cue_conflict {
            let ix: Vec<usize> = cc.at.drawn(draw).collect();
            let (bias, ..) = shape_bias_of(cc, texture, &ix);
            v[Dimension::ShapeBias.index()] = Some(bias);
        }
        if let Some([same, rand]) = &self.mixed {
            v[Dimension::ObjectFocus.index()] = Some(1.0 - (same.accuracy(draw) - rand.accuracy(draw)) / clean.accuracy(draw));
        }
        v
    }

    /// Why a point value is not a number: almost always a clean accuracy of
    /// 0, which the relative dimensions divide by.
    fn why_not_finite(&self, d: Dimension, v: f64) -> String {
        let relative = matches!(
            d,
            Dimension::CorruptionRobustness | Dimension::OodRobustness | Dimension::ObjectFocus | Dimension::AdversarialRobustness
        );
        let clean = &self.clean_decisions;
        if relative && clean.len() > 0 && (0..clean.len()).all(|i| !clean.correct(i)) {
            format!(
                "the model classifies none of the {} clean images correctly, and {d} is relative to clean accuracy",
                clean.len()
            )
        } else {
            format!("{d} is not a finite number ({v})")
        }
    }
}

fn shape_bias_of(cc: &Decisions, texture: &[u16], ix: &[usize]) -> (f64, usize, usize, usize) {
    let pick = |v: &[u16]| ix.iter().map(|&j| v[j]).collect::<Vec<_>>();
    metrics::shape_bias(&pick(&cc.label), &pick(texture), &pick(&cc.prediction))
}

/// (clean, FGSM, PGD) accuracies over the drawn images all three sets hold,
/// and how many drawn images that is.
fn attack_accuracies(clean: &Decisions, [fgsm, pgd]: &[Decisions; 2], draw: &Draw) -> ([f64; 3], u32) {
    let mut hits = [0u32; 3];
    let mut n = 0u32;
    for (i, c) in fgsm.at.counted(draw).filter(|&(_, c)| c > 0) {
        let u = fgsm.at.entry(i);
        if let (Some(k), Some(p)) = (clean.at.lookup(u), pgd.at.lookup(u)) {
            n += c;
            hits[0] += c * clean.correct(k) as u32;
            hits[1] += c * fgsm.correct(i) as u32;
            hits[2] += c * pgd.correct(p) as u32;
        }
    }
    (hits.map(|h| h as f64 / n as f64), n)
}

/// Adversarial robustness (docs/protocol.md, dimension 2): gmean of the PGD and
/// FGSM accuracies, each divided by the clean accuracy on the same images.
fn attacks(run: &Records, universe: &Universe, whole: &Draw, clean: &Decisions, res: &mut ModelResult) -> Option<[Decisions; 2]> {
    let attacks = [Attack::Fgsm, Attack::Pgd].map(|a| Decisions::of(run, ProbeSet::Adversarial(a), universe));
    if attacks.iter().any(|d| d.len() == 0) {
        let why = match &run.header.attacks_unavailable {
            none if none.is_empty() => "the run has no adversarial/fgsm and adversarial/pgd records".into(),
            why => format!("the device could not attack: {why}"),
        };
        res.missing.insert(Dimension::AdversarialRobustness, why);
        return None;
    }
    let ([c, f, p], n) = attack_accuracies(clean, &attacks, whole);
    if n == 0 {
        res.missing.insert(Dimension::AdversarialRobustness, "no clean records for the attacked images".into());
        return None;
    }
    res.parts.insert("adversarial_clean_accuracy".into(), c);
    res.parts.insert("fgsm_accuracy".into(), f);
    res.parts.insert("pgd_accuracy".into(), p);
    if c == 0.0 {
        res.missing.insert(Dimension::AdversarialRobustness, "the model classifies none of the attacked images correctly when clean".into());
        return None;
    }
    res.parts.insert("fgsm_relative".into(), f / c);
    res.parts.insert("pgd_relative".into(), p / c);
    res.samples[Dimension::AdversarialRobustness.index()] = Some(n as usize);
    Some(attacks)
}

/// Corruption robustness (docs/protocol.md, dimension 3): for each corruption the
/// mean over severities of accuracy / clean accuracy, then the mean over the
/// 15 corruptions. Every cell's accuracy and relative accuracy are kept.
fn corruption_cells(run: &Records, universe: &Universe, whole: &Draw, clean: &Decisions, res: &mut ModelResult) -> Option<Vec<Decisions>> {
    let clean_acc = clean.accuracy(whole);
    let mut cells = Vec::new();
    let mut absent = Vec::new();
    for (ci, name) in CORRUPTIONS.iter().enumerate() {
        let mut row_sum = 0.0;
        for sev in 1..=5u8 {
            let d = Decisions::of(run, ProbeSet::Corruption { corruption: ci as u8, severity: sev }, universe);
            if d.len() == 0 {
                absent.push(format!("{name}/{sev}"));
            } else {
                let acc = d.accuracy(whole);
                row_sum += acc;
                res.parts.insert(format!("corruption_{name}_{sev}_accuracy"), acc);
                if clean.len() > 0 {
                    res.parts.insert(format!("corruption_{name}_{sev}_relative"), acc / clean_acc);
                }
            }
            cells.push(d);
        }
        if clean.len() > 0 && cells[cells.len() - 5..].iter().all(|d| d.len() > 0) {
            res.parts.insert(format!("corruption_{name}_relative"), row_sum / 5.0 / clean_acc);
        }
    }
    let why = if absent.len() == 75 {
        "the run has no corruption/* records".to_string()
    } else if clean.len() == 0 {
        "no clean records: relative accuracy needs the clean accuracy".to_string()
    } else if !absent.is_empty() {
        let shown: Vec<&str> = absent.iter().take(6).map(String::as_str).collect();
        format!("{} of the 75 corruption cells were not run (e.g. {})", absent.len(), shown.join(", "))
    } else {
        res.samples[Dimension::CorruptionRobustness.index()] = Some(cells.iter().map(Decisions::len).sum());
        return Some(cells);
    };
    res.missing.insert(Dimension::CorruptionRobustness, why);
    None
}

/// OOD robustness: gmean of the five accuracies relative to clean accuracy.
fn ood_sets(run: &Records, universe: &Universe, whole: &Draw, clean: &Decisions, res: &mut ModelResult) -> Option<Vec<Decisions>> {
    let clean_acc = clean.accuracy(whole);
    let sets: Vec<(OodSet, Decisions)> = OOD_SETS.iter().map(|&s| (s, Decisions::of(run, ProbeSet::Ood(s), universe))).collect();
    let absent: Vec<String> = sets.iter().filter(|(_, d)| d.len() == 0).map(|(s, _)| ProbeSet::Ood(*s).name()).collect();
    for (s, d) in sets.iter().filter(|(_, d)| d.len() > 0) {
        let name = ProbeSet::Ood(*s).name().replace('/', "_");
        res.parts.insert(format!("{name}_accuracy"), d.accuracy(whole));
        if clean.len() > 0 {
            res.parts.insert(format!("{name}_relative"), d.accuracy(whole) / clean_acc);
        }
    }
    let why = if clean.len() == 0 {
        "no clean records: relative accuracy needs the clean accuracy".to_string()
    } else if !absent.is_empty() {
        format!("the run has no {} records", absent.join(", "))
    } else {
        res.samples[Dimension::OodRobustness.index()] = Some(sets.iter().map(|(_, d)| d.len()).sum());
        return Some(sets.into_iter().map(|(_, d)| d).collect());
    };
    res.missing.insert(Dimension::OodRobustness, why);
    None
}

/// Shape bias: shape hits / (shape + texture hits), agreeing cues dropped.
fn cue_conflict(run: &Records, universe: &Universe, res: &mut ModelResult) -> Option<(Decisions, Vec<u16>)> {
    let cc = Decisions::of(run, ProbeSet::CueConflict, universe);
    let d = Dimension::ShapeBias;
    if cc.len() == 0 {
        res.missing.insert(d, "the run has no cue_conflict records".into());
        return None;
    }
    if cc.cue.iter().any(Option::is_none) {
        res.missing.insert(d, "cue_conflict records without a texture category".into());
        return None;
    }
    let texture: Vec<u16> = cc.cue.iter().map(|c| c.unwrap_or_default()).collect();
    let (bias, s, t, kept) = shape_bias_of(&cc, &texture, &(0..cc.len()).collect::<Vec<_>>());
    res.parts.insert("shape_hits_fraction".into(), s as f64 / kept.max(1) as f64);
    res.parts.insert("texture_hits_fraction".into(), t as f64 / kept.max(1) as f64);
    res.parts.insert("cue_conflict_kept".into(), kept as f64);
    if bias.is_nan() {
        res.missing.insert(d, format!("none of {kept} cue-conflict decisions matched the shape or the texture"));
        return None;
    }
    res.samples[d.index()] = Some(kept);
    Some((cc, texture))
}

/// Object focus: 1 − (acc_same − acc_rand) / clean accuracy.
fn mixed(run: &Records, universe: &Universe, whole: &Draw, clean: &Decisions, res: &mut ModelResult) -> Option<[Decisions; 2]> {
    let same = Decisions::of(run, ProbeSet::MixedSame, universe);
    let rand = Decisions::of(run, ProbeSet::MixedRand, universe);
    for (name, d) in [("mixed_same_accuracy", &same), ("mixed_rand_accuracy", &rand)] {
        if d.len() > 0 {
            res.parts.insert(name.into(), d.accuracy(whole));
        }
    }
    let d = Dimension::ObjectFocus;
    if same.len() == 0 || rand.len() == 0 {
        res.missing.insert(d, "the run has no mixed_same and mixed_rand records".into());
        return None;
    }
    if clean.len() == 0 {
        res.missing.insert(d, "no clean records: object focus is relative to the clean accuracy".into());
        return None;
    }
    res.samples[d.index()] = Some(same.len() + rand.len());
    Some([same, rand])
}

/// The reliability diagram of a run's clean set: the equal-width bins whose
/// gaps make up its ECE. `None` when the run has no clean records.
pub fn reliability(run: &Run) -> Result<Option<Vec<metrics::ReliabilityBin>>> {
    let records = run.all_records();
    Ok(Clean::from_run(&records, &Universe::new(&records.records))?.map(|c| {
        let (conf, correct) = metrics::top1(&c.probs, c.k, &c.labels);
        metrics::reliability_bins(&conf, &correct, metrics::ECE_BINS)
    }))
}

/// Cue-conflict decisions of one shape category, counted as `metrics::shape_bias` counts them.
#[derive(Clone, Debug, PartialEq)]
pub struct CueCategory {
    pub category: String,
    pub shape_hits: usize,
    pub texture_hits: usize,
    /// Images whose shape and texture differ (the others say nothing about the bias).
    pub kept: usize,
}

/// Shape and texture hits per shape category of the cue-conflict set, in
/// category order; empty when the run has no cue-conflict records with cues.
pub fn cue_conflict_by_category(run: &Run) -> Vec<CueCategory> {
    let records = run.all_records();
    let cc = Decisions::of(&records, ProbeSet::CueConflict, &Universe::new(&records.records));
    if cc.len() == 0 || cc.cue.iter().any(Option::is_none) {
        return vec![];
    }
    let names = category_names(&run.header, ProbeSet::CueConflict);
    let texture: Vec<u16> = cc.cue.iter().map(|c| c.unwrap_or_default()).collect();
    let mut labels = cc.label.clone();
    labels.sort_unstable();
    labels.dedup();
    labels
        .into_iter()
        .map(|l| {
            let ix: Vec<usize> = (0..cc.len()).filter(|&j| cc.label[j] == l).collect();
            let (_, shape_hits, texture_hits, kept) = shape_bias_of(&cc, &texture, &ix);
            let category = names.get(l as usize).cloned().unwrap_or_else(|| format!("class {l}"));
            CueCategory { category, shape_hits, texture_hits, kept }
        })
        .collect()
}

/// Names of a probe set's labels where the benchmark fixes them (the study's
/// 16 categories, the synthetic benchmark's classes); the header does not
/// carry a custom dataset's folder names, so those stay empty.
pub fn category_names(header: &Header, set: ProbeSet) -> Vec<String> {
    let fixed: Vec<String> = if header.benchmark == "synth" {
        crate::benchmark::SYNTH_CLASSES.iter().map(|c| c.to_string()).collect()
    } else {
        vec![]
    };
    header.mapping.categories(set, &fixed).unwrap_or_default()
}

pub struct Report {
    pub runs: Vec<Run>,
    pub results: Vec<ModelResult>,
    pub normalisation: Normalisation,
    pub weights: Weights,
    pub scored: Vec<quba::Scored>,
}

/// Paper constants mean something only for ImageNet runs (docs/protocol.md, QUBA).
pub fn default_normalisation(runs: &[Run]) -> Normalisation {
    if !runs.is_empty() && runs.iter().all(|r| r.header.benchmark == "imagenet") {
        Normalisation::Paper
    } else {
        Normalisation::Cohort
    }
}

pub fn build(dirs: &[PathBuf], norm: Option<Normalisation>, weights: Weights, opts: &EvalOptions) -> Result<Report> {
    let runs = on_all_cores(dirs, |d| Run::load(d))?;
    let results = on_all_cores(&runs, |r| evaluate(r, opts))?;
    let normalisation = norm.unwrap_or_else(|| default_normalisation(&runs));
    let values: Vec<Values> = results.iter().map(|r| r.values).collect();
    let mut scored = quba::score(&values, normalisation, &weights);
    let stats = quba::normalisers(&values, normalisation);
    for (sc, res) in scored.iter_mut().zip(&results) {
        if sc.quba.is_some() {
            sc.interval = quba::quba_interval(&res.replicates, &stats, &weights);
        }
    }
    Ok(Report { runs, results, normalisation, weights, scored })
}

/// Clean images per class at which class balance and calibration error are
/// within half the study's std of their 50-per-class values, for the
/// simulated model of docs/small-subsets.md (its table, measured).
pub const PAPER_MIN_PER_CLASS: f64 = 20.0;

/// A run's clean images and the classes they cover.
fn clean_coverage(run: &Run) -> (usize, usize) {
    let mut classes = std::collections::BTreeSet::new();
    let mut n = 0usize;
    for r in run.records.iter().filter(|r| r.set == ProbeSet::Clean) {
        classes.insert(r.label);
        n += 1;
    }
    (n, classes.len())
}

/// A run's clean images per class present (`None` without clean records).
fn clean_per_class(run: &Run) -> Option<f64> {
    let (n, classes) = clean_coverage(run);
    (n > 0).then(|| n as f64 / classes as f64)
}

/// `f` of every item, in input order, on all cores. A report over a cohort
/// the study's size (326 models) is bound by each model's bootstrap
/// intervals, which depend on that model's records and the seed alone, so
/// the results are the same in any order. The first failure in input order
/// is the error.
fn on_all_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(cores).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items.chunks(per).map(|part| s.spawn(move || part.iter().map(f).collect::<Result<Vec<R>>>())).collect();
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            out.extend(part.join().map_err(|_| anyhow::anyhow!("a report thread panicked"))??);
        }
        Ok(out)
    })
}

fn opt(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite()).map(Value::from).unwrap_or(Value::Null)
}

impl Report {
    pub fn benchmark(&self) -> String {
        let mut names: Vec<&str> = self.runs.iter().map(|r| r.header.benchmark.as_str()).collect();
        names.dedup();
        names.join("+")
    }

    /// `results.json` (schema quba-results/1, see README).
    pub fn to_json(&self) -> Value {
        let models: Vec<Value> = self
            .runs
            .iter()
            .zip(&self.results)
            .zip(&self.scored)
            .map(|((run, res), sc)| {
                let h = &run.header;
                let mut dims = Map::new();
                let mut intervals = Map::new();
                let mut samples = Map::new();
                let mut normalised = Map::new();
                for (i, d) in Dimension::ALL.iter().enumerate() {
                    dims.insert(d.key().into(), opt(res.values[i]));
                    normalised.insert(d.key().into(), opt(sc.normalised[i]));
                    if let Some((lo, hi)) = res.intervals[i] {
                        intervals.insert(d.key().into(), json!([lo, hi]));
                    }
                    if let Some(n) = res.samples[i] {
                        samples.insert(d.key().into(), json!(n));
                    }
                }
                let missing: Map<String, Value> = res.missing.iter().map(|(d, why)| (d.key().to_string(), json!(why))).collect();
                json!({
                    "name": h.model_name,
                    "precision": h.precision.as_str(),
                    "int8_format": if h.int8_format.is_empty() { Value::Null } else { json!(h.int8_format) },
                    "onnx_sha256": h.model_sha256,
                    "model_bytes": h.model_bytes,
                    "target": h.target,
                    "backend": h.backend.as_str(),
                    "dimensions": dims,
                    "intervals": intervals,
                    "samples": samples,
                    "clean_classes": clean_coverage(run).1,
                    "quba": opt(sc.quba),
                    "quba_interval": sc.interval.map(|(lo, hi)| json!([lo, hi])).unwrap_or(Value::Null),
                    "quba_reason": sc.reason,
                    "normalised": normalised,
                    "missing": missing,
                    "parts": res.parts,
                    "run": {
                        "dir": run.dir.display().to_string(),
                        "run_id": h.run_id,
                        "status": run.status,
                        "records": run.records.len(),
                        "duplicates_dropped": run.duplicates,
                        "failures": run.failures.iter().map(|f| json!({"sample": f.sample, "path": f.path.as_str(), "error": f.message.as_str()})).collect::<Vec<_>>(),
                        "decode": run.decode,
                        "end": run.end.as_ref().map(|e| json!({
                            "model_load_ms": e.model_load_ms, "elapsed_ms": e.elapsed_ms, "peak_rss_kb": e.peak_rss_kb,
                            "stages": e.stages.iter().map(|st| json!({
                                "group": st.group.as_str(), "images": st.images, "elapsed_us": st.elapsed_us, "model_us": st.model_us,
                                "images_per_second": st.images_per_second(), "model_share": st.model_share(),
                            })).collect::<Vec<_>>(),
                        })),
                    },
                    "protocol": {
                        "pipeline": h.pipeline,
                        "decoder": h.decoder,
                        "mapping": h.mapping,
                        "outputs": h.outputs,
                        // Absent (null) from a device that predates the count.
                        "execution": (h.execution.total() > 0).then(|| {
                            let e = &h.execution;
                            json!({
                                "macs_per_image": e,
                                "shares": {
                                    "quba_int8": e.share(e.quba_int8), "tract_int8": e.share(e.tract_int8),
                                    "float_fallback": e.share(e.float_fallback), "float": e.share(e.float),
                                },
                            })
                        }),
                        "corruption_source": h.corruption_source,
                        "corruption_mode": h.corruption_mode.map(CorruptionMode::as_str),
                        "adversarial_mode": h.adversarial_mode,
                        "gradient": h.gradient,
                        "placement": h.placement,
                        "dataset_root": h.dataset_root,
                        "dataset_fingerprint": h.dataset_fingerprint,
                        "seed": h.seed,
                        "per_class": h.per_class,
                        "corruption_per_class": h.corruption_per_class,
                        "attack_per_class": h.attack_per_class,
                        "shard": h.shard.map(|s| s.to_string()),
                        "protocol_version": h.protocol,
                        "tool_version": h.tool_version,
                        "batch": h.batch,
                        "threads": h.threads,
                    },
                })
            })
            .collect();
        json!({
            "schema": "quba-results/1",
            "benchmark": self.benchmark(),
            "normalisation": match self.normalisation { Normalisation::Paper => "paper", Normalisation::Cohort => "cohort" },
            "weights": self.weights.0,
            "models": models,
            "rank_correlation": self.rank_correlation(),
            "warnings": self.warnings(),
        })
    }

    /// Things a reader of the numbers must know.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let pixel: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.header.adversarial_mode == "pixel")
            .map(|r| format!("{} {}", r.header.model_name, r.header.precision.as_str()))
            .collect();
        if self.normalisation == Normalisation::Paper && !pixel.is_empty() {
            w.push(format!(
                "adversarial robustness of {} comes from pixel mode, but the study's constants (0.186 ± 0.111) come from its \
                 reference procedure: rerun with --adversarial-mode reference for a comparable QUBA",
                pixel.join(", ")
            ));
        }
        let direct: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.header.corruption_mode == Some(CorruptionMode::Direct))
            .map(|r| format!("{} {}", r.header.model_name, r.header.precision.as_str()))
            .collect();
        if self.normalisation == Normalisation::Paper && !direct.is_empty() {
            w.push(format!(
                "corruption robustness of {} comes from corruptions generated in direct mode (the model's own crop, no JPEG), \
                 but the study's constants come from ImageNet-C's files: rerun with --corruption-mode imagenet-c (or \
                 --imagenet-c) for a comparable QUBA",
                direct.join(", ")
            ));
        }
        let fallback: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.header.precision == Precision::Int8 && r.header.execution.float_fallback > 0)
            .map(|r| {
                let e = &r.header.execution;
                // Two decimals: a classifier head alone is a few hundredths of a percent.
                format!(
                    "{} int8 on {}: {:.2}% of its MACs, {} per image (largest: {})",
                    r.header.model_name,
                    r.header.backend.as_str(),
                    100.0 * e.share(e.float_fallback),
                    e.float_fallback,
                    e.fallback_nodes.join(", ")
                )
            })
            .collect();
        if !fallback.is_empty() {
            w.push(format!(
                "int8 models whose multiply-accumulates partly run in float, between a dequantise and a quantise, so their \
                 speed and numbers are partly a float model's (docs/int8.md, \"What ran\"): {}",
                fallback.join("; ")
            ));
        }
        if self.runs.iter().any(|r| r.header.gradient == "ste") {
            w.push("int8 attacks use straight-through gradients through quantisation; a gradient-masking model can look robust".into());
        }
        let partial: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| {
                let (n, classes) = clean_coverage(r);
                (n > 0 && classes < r.header.num_classes as usize)
                    .then(|| format!("{} {} ({classes} of {})", r.header.model_name, r.header.precision.as_str(), r.header.num_classes))
            })
            .collect();
        if !partial.is_empty() {
            w.push(format!(
                "evaluated on a subset of the model's classes: {}; every dimension describes those classes only",
                partial.join(", ")
            ));
        }
        if self.normalisation == Normalisation::Paper {
            let few: Vec<String> = self
                .runs
                .iter()
                .filter_map(|r| {
                    let per_class = clean_per_class(r)?;
                    (per_class < PAPER_MIN_PER_CLASS).then(|| format!("{} {} ({per_class:.1})", r.header.model_name, r.header.precision.as_str()))
                })
                .collect();
            if !few.is_empty() {
                w.push(format!(
                    "class balance and calibration error are biased, not only noisy, below {PAPER_MIN_PER_CLASS} clean images per class, \
                     by more than half the study's spread (docs/small-subsets.md); their z-scores against the study's constants, and \
                     QUBA, lean that way for {}",
                    few.join(", ")
                ));
            }
        }
        w
    }

    /// Spearman between every pair of dimensions measured on ≥ 3 models.
    fn rank_correlation(&self) -> Value {
        let mut out = Map::new();
        for (i, a) in Dimension::ALL.iter().enumerate() {
            let mut row = Map::new();
            for (j, b) in Dimension::ALL.iter().enumerate() {
                let pairs: (Vec<f64>, Vec<f64>) = self
                    .results
                    .iter()
                    .filter_map(|r| Some((r.values[i]?, r.values[j]?)))
                    .unzip();
                if let Some(rho) = metrics::spearman(&pairs.0, &pairs.1) {
                    row.insert(b.key().into(), json!(rho));
                }
            }
            if !row.is_empty() {
                out.insert(a.key().into(), Value::Object(row));
            }
        }
        json!({"method": "spearman", "models": self.results.len(), "matrix": out})
    }

    /// Fits in 100 columns; `—` marks a dimension that was not measured.
    pub fn table(&self) -> String {
        let heads = ["Acc", "Adv", "Corr", "OOD", "CalErr", "ClsBal", "ObjFoc", "Shape", "Par(M)"];
        let mut s = format!("{:<22} {:<4} ", "model", "prec");
        for h in heads {
            s += &format!("{h:>7}");
        }
        s += &format!("{:>8}\n", "QUBA");
        for ((run, res), sc) in self.runs.iter().zip(&self.results).zip(&self.scored) {
            let mut name = run.header.model_name.clone();
            if !run.header.int8_format.is_empty() {
                name = format!("{name} ({})", run.header.int8_format);
            }
            if run.status != RunStatus::Complete {
                name.push('*');
            }
            name.truncate(22);
            s += &format!("{:<22} {:<4} ", name, run.header.precision.as_str());
            for (i, d) in Dimension::ALL.iter().enumerate() {
                s += &match res.values[i] {
                    None => format!("{:>7}", "—"),
                    Some(v) if *d == Dimension::CalibrationError => format!("{v:>7.4}"),
                    Some(v) if *d == Dimension::ParametersM => format!("{v:>7.3}"),
                    Some(v) => format!("{v:>7.3}"),
                };
            }
            s += &match sc.quba {
                Some(q) => format!("{q:>8.3}\n"),
                None => format!("{:>8}\n", "—"),
            };
        }
        for run in &self.runs {
            if let Some(e) = &run.end {
                let stages: Vec<String> = e
                    .stages
                    .iter()
                    .map(|st| format!("{} {:.0}/s ({:.0} % model)", st.group.as_str(), st.images_per_second(), 100.0 * st.model_share()))
                    .collect();
                s += &format!(
                    "device {} {} on {}: load {} ms, peak RSS {} MB; {}\n",
                    run.header.model_name,
                    run.header.precision.as_str(),
                    run.header.target,
                    e.model_load_ms,
                    e.peak_rss_kb >> 10,
                    stages.join(", ")
                );
            }
        }
        let mut counts: Vec<usize> = self.results.iter().map(|r| r.samples[Dimension::Accuracy.index()].unwrap_or(0)).collect();
        counts.sort_unstable();
        counts.dedup();
        match counts.as_slice() {
            [n] => s += &format!("samples: {n} clean images per model\n"),
            _ => {
                let n: Vec<String> = self
                    .runs
                    .iter()
                    .zip(&self.results)
                    .map(|(r, res)| format!("{} {}: {}", r.header.model_name, r.header.precision.as_str(), res.samples[0].unwrap_or(0)))
                    .collect();
                s += &format!("samples: {}\n", n.join(", "));
            }
        }
        s += &format!(
            "normalisation: {} · benchmark: {}\n",
            match self.normalisation {
                Normalisation::Paper => "paper (the study's ImageNet constants)",
                Normalisation::Cohort => "cohort (mean and n−1 std of the models in this report)",
            },
            self.benchmark()
        );
        let mut reasons: Vec<String> = self.scored.iter().filter_map(|sc| sc.reason.clone()).collect();
        reasons.dedup();
        for r in reasons {
            s += &format!("no QUBA: {r}\n");
        }
        if let Some(res) = self.results.first() {
            for (d, why) in &res.missing {
                s += &format!("— {}: {why}\n", d.label());
            }
        }
        for w in self.warnings() {
            s += &format!("note: {w}\n");
        }
        if self.runs.iter().any(|r| !matches!(r.status, RunStatus::Complete | RunStatus::Partial)) {
            s += "* run interrupted: no End frame arrived (the stream stopped, or its End was damaged); values cover the records received, the device's timings are unknown\n";
        }
        if self.runs.iter().any(|r| r.status == RunStatus::Partial) {
            s += "* partial merge: shards are missing or unfinished (manifest.json `merged`); values cover the shards merged\n";
        }
        for (r, shard) in self.runs.iter().filter_map(|r| Some((r, r.header.shard?))) {
            s += &format!("{}: shard {shard}, about 1/{} of the run's samples; `quba merge` joins the shards\n", r.dir.display(), shard.count);
        }
        for r in &self.runs {
            if !r.failures.is_empty() {
                s += &format!("{}: {} sample(s) failed to load, e.g. {}: {}\n", r.header.model_name, r.failures.len(), r.failures[0].path, r.failures[0].message);
            }
        }
        s
    }
}

/// One JSON object per record (`quba export RUN --format jsonl`).
pub fn export_jsonl(run: &Run, out: &mut dyn std::io::Write) -> Result<()> {
    for r in &run.records {
        let mut o = json!({
            "model": run.header.model_name,
            "precision": run.header.precision.as_str(),
            "set": r.set.name(),
            "sample": r.sample,
            "label": r.label,
            "prediction": r.prediction,
        });
        if let Some(p) = &r.probs {
            o["probs"] = json!(p.as_slice());
        }
        serde_json::to_writer(&mut *out, &o)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::full_header;
    use crate::protocol::Execution;

    fn run(per_class: usize, classes: u16) -> Run {
        let mut records = Vec::new();
        for label in 0..classes {
            for j in 0..per_class {
                let sample = (label as usize * per_class + j) as u32;
                records.push(Record { set: ProbeSet::Clean, sample, label, prediction: label, confidence: 1.0, p_true: 1.0, cue: None, probs: None });
            }
        }
        Run {
            dir: PathBuf::from("r"),
            header: full_header(),
            records,
            failures: vec![],
            end: None,
            status: RunStatus::Complete,
            duplicates: 0,
            decode: DecodeStats::default(),
        }
    }

    fn small_subset_warning(runs: Vec<Run>, normalisation: Normalisation) -> Option<String> {
        let rep = Report { runs, results: vec![], normalisation, weights: Weights::default(), scored: vec![] };
        rep.warnings().into_iter().find(|w| w.contains("images per class"))
    }

    #[test]
    fn paper_constants_on_few_images_per_class_are_warned_about() {
        // A 40-class subset at 5 per class: what counts is images per class present.
        let w = small_subset_warning(vec![run(5, 40), run(20, 40)], Normalisation::Paper).expect("a warning");
        assert!(w.contains("below 20 clean images per class") && w.contains("m int8 (5.0)"), "{w}");
        assert_eq!(w.matches("(20.0)").count(), 0, "{w}");
        assert_eq!(small_subset_warning(vec![run(20, 3)], Normalisation::Paper), None);
        // Runs of equal size against each other: the drift mostly cancels.
        assert_eq!(small_subset_warning(vec![run(5, 40)], Normalisation::Cohort), None);
    }

    #[test]
    fn an_int8_model_running_partly_in_float_is_warned_about_by_share_and_node() {
        let fallback = |precision: Precision, float_fallback: u64| {
            let mut r = run(20, 3);
            r.header.precision = precision;
            r.header.execution = Execution { quba_int8: 300, tract_int8: 0, float_fallback, float: 100, fallback_nodes: vec!["/head/Gemm".into()] };
            let rep = Report { runs: vec![r], results: vec![], normalisation: Normalisation::Cohort, weights: Weights::default(), scored: vec![] };
            rep.warnings().into_iter().find(|w| w.contains("run in float"))
        };
        // 100 of 500 MACs: 20 %.
        let w = fallback(Precision::Int8, 100).expect("a warning");
        assert!(w.contains("m int8 on tract-cuda: 20.00% of its MACs, 100 per image (largest: /head/Gemm)"), "{w}");
        assert_eq!(fallback(Precision::Int8, 0), None);
        // An fp32 model's float is what it is.
        assert_eq!(fallback(Precision::Fp32, 100), None);
    }

    #[test]
    fn paper_constants_on_direct_corruptions_are_warned_about() {
        let with = |mode: Option<CorruptionMode>, normalisation| {
            let mut r = run(20, 3);
            r.header.corruption_mode = mode;
            let rep = Report { runs: vec![r], results: vec![], normalisation, weights: Weights::default(), scored: vec![] };
            rep.warnings().into_iter().find(|w| w.contains("direct mode"))
        };
        let w = with(Some(CorruptionMode::Direct), Normalisation::Paper).expect("a warning");
        assert!(w.contains("m int8") && w.contains("--corruption-mode imagenet-c"), "{w}");
        for mode in [Some(CorruptionMode::ImagenetC), Some(CorruptionMode::Files), None] {
            assert_eq!(with(mode, Normalisation::Paper), None, "{mode:?}");
        }
        // Against each other, runs made the same way compare fairly.
        assert_eq!(with(Some(CorruptionMode::Direct), Normalisation::Cohort), None);
    }

    #[test]
    fn a_clean_accuracy_of_zero_names_itself_as_the_reason() {
        // Two classes, every clean image wrong; every shifted set has records.
        let mut r = run(3, 2);
        let mut header = full_header();
        header.num_classes = 2;
        header.mapping = crate::protocol::Mapping::Identity;
        r.header = header;
        for rec in r.records.iter_mut() {
            rec.prediction = 1 - rec.label;
            let mut p = crate::protocol::Probs::new();
            p.extend_from_slice(if rec.label == 0 { &[0.2, 0.8] } else { &[0.8, 0.2] }).unwrap();
            rec.probs = Some(Box::new(p));
        }
        let mut extra = Vec::new();
        let sets = (0..75u8)
            .map(|c| ProbeSet::Corruption { corruption: c / 5, severity: c % 5 + 1 })
            .chain([OodSet::Edge, OodSet::Silhouette, OodSet::Sketch, OodSet::Stylized, OodSet::Rendition].map(ProbeSet::Ood))
            .chain([ProbeSet::MixedSame, ProbeSet::MixedRand]);
        for set in sets {
            extra.push(Record { set, sample: 0, label: 0, prediction: 0, confidence: 1.0, p_true: 1.0, cue: None, probs: None });
        }
        r.records.extend(extra);
        let res = evaluate(&r, &EvalOptions { bootstrap: 0, seed: 0 }).unwrap();
        for d in [Dimension::CorruptionRobustness, Dimension::OodRobustness, Dimension::ObjectFocus] {
            assert_eq!(res.values[d.index()], None, "{d}");
            let why = &res.missing[&d];
            assert!(why.contains("none of the 6 clean images"), "{d}: {why}");
        }
    }

    #[test]
    fn the_threshold_is_the_measured_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/small-subsets.json");
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(data["min_per_class_within_half_std"].as_f64(), Some(PAPER_MIN_PER_CLASS), "rerun the example or update the constant");
    }
}
