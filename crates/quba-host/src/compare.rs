//! `quba compare RUN_A RUN_B`: are two runs of the same protocol (board vs
//! host reference, int8 vs fp32) the same, dimension by dimension?
//!
//! Both runs are restricted to the (probe set, sample) pairs they share, and
//! the interval of each dimension's delta comes from a *paired* bootstrap:
//! every resample draws the same samples from both runs, so the noise of
//! which images were drawn cancels and only the models' disagreement is left.
//! Sets that reuse the clean samples' ids (corruptions, attacks) are drawn
//! together with the clean set, so a resample keeps an image's clean and
//! corrupted versions together, as the dimensions pair them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::metrics::quantile_sorted;
use crate::protocol::{ProbeSet, Record};
use crate::quba::Dimension;
use crate::report::{evaluate_records, EvalOptions, Records, Run};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The 95% interval of the delta holds 0, or the delta is below the tolerance.
    Equal,
    Differs,
    /// Not measured in both runs, or the bootstrap could not form an interval.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Equal => "equal",
            Verdict::Differs => "differs",
            Verdict::Unknown => "unknown",
        }
    }
}

pub struct DimensionDelta {
    pub dimension: Dimension,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// b − a.
    pub delta: Option<f64>,
    pub interval: Option<(f64, f64)>,
    pub verdict: Verdict,
}

pub struct Comparison {
    /// "model precision target" of each run, for people.
    pub a: String,
    pub b: String,
    /// Share of the shared (set, sample) pairs with the same top-1 decision.
    pub agreement: Option<f64>,
    /// The same on the clean set alone.
    pub clean_agreement: Option<f64>,
    /// (set, sample) pairs present in both runs.
    pub paired: usize,
    /// Records of one run without a partner in the other (different subsets or an interrupted run).
    pub unpaired: (usize, usize),
    pub tolerance: f64,
    pub dimensions: Vec<DimensionDelta>,
}

/// |b − a| at or below this is "equal" unless told otherwise, in `quba
/// compare` and in the report's fp32 → int8 comparisons.
pub const DEFAULT_TOLERANCE: f64 = 1e-3;

pub struct CompareOptions {
    pub bootstrap: usize,
    pub seed: u64,
    /// Deltas smaller than this never count as a difference: float rounding
    /// on another CPU moves calibration error by ~1e-7, and a paired bootstrap
    /// is tight enough to call that "significant".
    pub tolerance: f64,
}

fn describe(run: &Run) -> String {
    let h = &run.header;
    format!("{} {} {} {}", h.model_name, h.precision.as_str(), h.target, h.backend.as_str())
}

fn index(run: &Run) -> HashMap<(ProbeSet, u32), &Record> {
    run.records.iter().map(|r| ((r.set, r.sample), r)).collect()
}

fn view<'a>(run: &'a Run, records: Vec<&'a Record>) -> Records<'a> {
    Records { dir: &run.dir, header: &run.header, records }
}

/// The clean samples' ids are shared by the sets derived from them.
fn family(set: ProbeSet) -> ProbeSet {
    match set {
        ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => ProbeSet::Clean,
        s => s,
    }
}

pub fn compare(a: &Run, b: &Run, opts: &CompareOptions) -> Result<Comparison> {
    let (ha, hb) = (&a.header, &b.header);
    if ha.benchmark != hb.benchmark || ha.seed != hb.seed || ha.dataset_fingerprint != hb.dataset_fingerprint {
        bail!(
            "{} and {} did not measure the same samples (benchmark {} vs {}, seed {} vs {}, dataset {} vs {}); \
             a paired comparison needs the same data and seed",
            a.dir.display(),
            b.dir.display(),
            ha.benchmark,
            hb.benchmark,
            ha.seed,
            hb.seed,
            ha.dataset_fingerprint,
            hb.dataset_fingerprint
        );
    }
    if ha.num_classes != hb.num_classes {
        bail!("{} has {} classes, {} has {}", a.dir.display(), ha.num_classes, b.dir.display(), hb.num_classes);
    }
    let (ia, ib) = (index(a), index(b));
    // Pairs sorted by key so a seed gives the same interval whatever the arrival order.
    let mut pairs: Vec<((ProbeSet, u32), &Record, &Record)> =
        ia.iter().filter_map(|(k, ra)| Some((*k, *ra, *ib.get(k)?))).collect();
    pairs.sort_unstable_by_key(|p| p.0);
    if pairs.is_empty() {
        bail!("{} and {} share no (probe set, sample) records", a.dir.display(), b.dir.display());
    }
    let same = pairs.iter().filter(|p| p.1.prediction == p.2.prediction).count();
    let clean: Vec<_> = pairs.iter().filter(|p| p.0 .0 == ProbeSet::Clean).collect();
    let clean_agreement =
        (!clean.is_empty()).then(|| clean.iter().filter(|p| p.1.prediction == p.2.prediction).count() as f64 / clean.len() as f64);

    let values = |ra: Vec<&Record>, rb: Vec<&Record>| -> Result<[(Option<f64>, Option<f64>); 9]> {
        let none = EvalOptions { bootstrap: 0, seed: 0 };
        let va = evaluate_records(&view(a, ra), &none)?.values;
        let vb = evaluate_records(&view(b, rb), &none)?.values;
        Ok(std::array::from_fn(|i| (va[i], vb[i])))
    };
    let point = values(pairs.iter().map(|p| p.1).collect(), pairs.iter().map(|p| p.2).collect())?;

    // Per family: the sample ids to draw from, and for each set the pair of each id.
    let mut universe: BTreeMap<ProbeSet, BTreeSet<u32>> = BTreeMap::new();
    let mut by_set: BTreeMap<ProbeSet, HashMap<u32, (&Record, &Record)>> = BTreeMap::new();
    for ((set, id), ra, rb) in &pairs {
        universe.entry(family(*set)).or_default().insert(*id);
        by_set.entry(*set).or_default().insert(*id, (*ra, *rb));
    }
    let universe: Vec<(ProbeSet, Vec<u32>)> = universe.into_iter().map(|(f, ids)| (f, ids.into_iter().collect())).collect();
    let mut deltas: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.bootstrap); 9];
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    for _ in 0..opts.bootstrap {
        let mut drawn: HashMap<ProbeSet, Vec<u32>> = HashMap::new();
        for (fam, ids) in &universe {
            // u64 draws: the same seed gives the same resample on 32-bit boards.
            let d: Vec<u32> = (0..ids.len()).map(|_| ids[rng.gen_range(0..ids.len() as u64) as usize]).collect();
            drawn.insert(*fam, d);
        }
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        for (set, recs) in &by_set {
            for id in &drawn[&family(*set)] {
                if let Some((x, y)) = recs.get(id) {
                    ra.push(*x);
                    rb.push(*y);
                }
            }
        }
        for (i, (x, y)) in values(ra, rb)?.into_iter().enumerate() {
            if let (Some(x), Some(y)) = (x, y) {
                if (y - x).is_finite() {
                    deltas[i].push(y - x);
                }
            }
        }
    }

    let dimensions = Dimension::ALL
        .iter()
        .enumerate()
        .map(|(i, &dimension)| {
            let (va, vb) = point[i];
            let delta = va.zip(vb).map(|(x, y)| y - x).filter(|d| d.is_finite());
            let ds = &mut deltas[i];
            ds.sort_by(|x, y| x.total_cmp(y));
            // A resample where a dimension is undefined (no correct clean image
            // drawn) is dropped; if many are, the interval would mislead.
            let interval = (opts.bootstrap > 0 && ds.len() * 10 >= opts.bootstrap * 9)
                .then(|| (quantile_sorted(ds, 0.025), quantile_sorted(ds, 0.975)));
            let verdict = verdict(delta, interval, opts);
            DimensionDelta { dimension, a: va, b: vb, delta, interval, verdict }
        })
        .collect();
    Ok(Comparison {
        a: describe(a),
        b: describe(b),
        agreement: Some(same as f64 / pairs.len() as f64),
        clean_agreement,
        paired: pairs.len(),
        unpaired: (a.records.len() - pairs.len(), b.records.len() - pairs.len()),
        tolerance: opts.tolerance,
        dimensions,
    })
}

fn num(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite()).map(Value::from).unwrap_or(Value::Null)
}

impl Comparison {
    /// `{"agreement": f, "dimensions": {name: {"a", "b", "delta", "interval", "verdict"}}, …}`
    pub fn to_json(&self) -> Value {
        let dims: Map<String, Value> = self
            .dimensions
            .iter()
            .map(|d| {
                let o = json!({
                    "a": num(d.a),
                    "b": num(d.b),
                    "delta": num(d.delta),
                    "interval": d.interval.map(|(lo, hi)| json!([lo, hi])).unwrap_or(Value::Null),
                    "verdict": d.verdict.as_str(),
                });
                (d.dimension.key().to_string(), o)
            })
            .collect();
        json!({
            "a": self.a,
            "b": self.b,
            "agreement": num(self.agreement),
            "clean_agreement": num(self.clean_agreement),
            "paired": self.paired,
            "unpaired": [self.unpaired.0, self.unpaired.1],
            "tolerance": self.tolerance,
            "dimensions": dims,
        })
    }

    /// Fits in 100 columns.
    pub fn table(&self) -> String {
        let mut s = format!("a: {}\nb: {}\n", self.a, self.b);
        let pct = |v: Option<f64>| v.map(|x| format!("{:.2}%", 100.0 * x)).unwrap_or_else(|| "—".into());
        s += &format!(
            "top-1 agreement: {} of {} paired records ({} on clean)\n",
            pct(self.agreement),
            self.paired,
            pct(self.clean_agreement)
        );
        if self.unpaired != (0, 0) {
            s += &format!("unpaired records left out: {} in a, {} in b\n", self.unpaired.0, self.unpaired.1);
        }
        s += &format!("{:<24}{:>10}{:>10}{:>10}  {:<24}{}\n", "dimension", "a", "b", "b − a", "95% interval", "verdict");
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into());
        for d in &self.dimensions {
            let iv = d.interval.map(|(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]")).unwrap_or_else(|| "—".into());
            let delta = d.delta.map(|x| format!("{x:+.4}")).unwrap_or_else(|| "—".into());
            s += &format!("{:<24}{:>10}{:>10}{:>10}  {:<24}{}\n", d.dimension.label(), f(d.a), f(d.b), delta, iv, d.verdict.as_str());
        }
        s += &format!("equal: the paired 95% interval holds 0 or |b − a| ≤ {}\n", self.tolerance);
        s
    }
}

/// A dimension's verdict from its delta b − a and the delta's paired 95 %
/// interval (`None` when there were no, or too few, resamples).
fn verdict(delta: Option<f64>, interval: Option<(f64, f64)>, opts: &CompareOptions) -> Verdict {
    match (delta, interval) {
        (Some(d), _) if d.abs() <= opts.tolerance => Verdict::Equal,
        (Some(_), Some((lo, hi))) if lo <= 0.0 && 0.0 <= hi => Verdict::Equal,
        (Some(_), Some(_)) => Verdict::Differs,
        // Without resamples only an exact match can be called equal.
        (Some(_), None) if opts.bootstrap == 0 => Verdict::Differs,
        _ => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: CompareOptions = CompareOptions { bootstrap: 200, seed: 0, tolerance: DEFAULT_TOLERANCE };

    #[test]
    fn deltas_within_the_tolerance_are_equal_whatever_the_interval() {
        // Float rounding on another CPU: a tight interval that excludes 0.
        assert_eq!(verdict(Some(3e-7), Some((2e-7, 4e-7)), &OPTS), Verdict::Equal);
        assert_eq!(verdict(Some(-DEFAULT_TOLERANCE), Some((-2e-3, -5e-4)), &OPTS), Verdict::Equal);
    }

    #[test]
    fn beyond_the_tolerance_the_interval_decides() {
        assert_eq!(verdict(Some(0.02), Some((-0.01, 0.05)), &OPTS), Verdict::Equal);
        assert_eq!(verdict(Some(0.02), Some((0.005, 0.04)), &OPTS), Verdict::Differs);
        assert_eq!(verdict(Some(-0.02), Some((-0.04, -0.005)), &OPTS), Verdict::Differs);
    }

    #[test]
    fn without_an_interval_only_the_tolerance_can_say_equal() {
        let none = CompareOptions { bootstrap: 0, ..OPTS };
        assert_eq!(verdict(Some(0.0), None, &none), Verdict::Equal);
        assert_eq!(verdict(Some(0.02), None, &none), Verdict::Differs);
        // Resamples were asked for but too many were undefined: no verdict.
        assert_eq!(verdict(Some(0.02), None, &OPTS), Verdict::Unknown);
        assert_eq!(verdict(None, Some((0.0, 1.0)), &OPTS), Verdict::Unknown);
    }
}
