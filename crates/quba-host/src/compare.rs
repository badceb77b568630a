//! `quba compare RUN_A RUN_B`: are two runs of the same protocol (board vs
//! host reference, int8 vs fp32) the same, dimension by dimension?
//!
//! Both runs are restricted to the (probe set, sample) pairs they share, and
//! the interval of each dimension's delta comes from a *paired* bootstrap:
//! every resample draws the same samples from both runs, so the noise of
//! which images were drawn cancels and only the models' disagreement is left.
//! The resamples are the report's (`resample`): sets that show the same
//! images (clean, its corruptions and attacks; mixed_same and mixed_rand)
//! are drawn together, so a resample keeps an image's clean and corrupted
//! versions together, as the dimensions pair them.
//!
//! Verdicts are equivalence tests, not "no significant difference": each
//! dimension has a margin, the largest difference that does not matter
//! (by default a fifth of the spread the study normalises that dimension
//! with), and a pair is `equal` only when the whole interval lies inside
//! ±margin. An interval that holds 0 but is wider than the margin is
//! `inconclusive`, with how many times the images would settle it: a small
//! run no longer reads "equal" merely because it cannot see anything.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::protocol::{ProbeSet, Record};
use crate::quba::Dimension;
use crate::report::{paired, EvalOptions, Records, Run};
use crate::resample;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// The 95% interval of the delta lies inside ±margin (or both runs agree
    /// exactly, when there are no resamples).
    Equal,
    /// The 95% interval excludes 0, and is not inside ±margin.
    Differs,
    /// Neither: the interval holds 0 but reaches past the margin. About
    /// `settle` times the images would narrow it enough to decide (the
    /// interval's width shrinks with the square root of the sample count).
    Inconclusive { settle: f64 },
    /// Not measured in both runs, or the bootstrap could not form an interval.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Equal => "equal",
            Verdict::Differs => "differs",
            Verdict::Inconclusive { .. } => "inconclusive",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The default margin, as a fraction of the study's normalisation std of
/// each dimension: a change of 0.2 std in one dimension moves a model's
/// QUBA by 0.2 × that dimension's share of the weights. A convention (a
/// "small effect" in standardised units), not a measured threshold;
/// `--margin-fraction` and `--margin` change it.
pub const DEFAULT_MARGIN_FRACTION: f64 = 0.2;

/// Per dimension, the largest |b − a| that does not matter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margins(pub [f64; 9]);

impl Margins {
    /// `fraction` of each dimension's study normalisation std.
    pub fn from_fraction(fraction: f64) -> Margins {
        Margins(Dimension::ALL.map(|d| fraction * d.paper_mean_std().1))
    }

    /// `--margin-fraction` and the `--margin DIMENSION=VALUE` overrides.
    pub fn from_args(fraction: f64, overrides: &[String]) -> Result<Margins> {
        if !(fraction.is_finite() && fraction >= 0.0) {
            bail!("--margin-fraction {fraction}: a fraction is a finite number ≥ 0");
        }
        let mut m = Margins::from_fraction(fraction);
        for o in overrides {
            m.set(o)?;
        }
        Ok(m)
    }

    pub fn get(&self, d: Dimension) -> f64 {
        self.0[d.index()]
    }

    /// Applies one `DIMENSION=VALUE` override (`--margin accuracy=0.01`).
    fn set(&mut self, spec: &str) -> Result<()> {
        let (key, value) = spec.split_once('=').ok_or_else(|| anyhow::anyhow!("--margin {spec}: expected DIMENSION=VALUE, e.g. accuracy=0.01"))?;
        let d = Dimension::ALL.into_iter().find(|d| d.key() == key.trim()).ok_or_else(|| {
            anyhow::anyhow!("--margin {spec}: no dimension {key:?}; one of {}", Dimension::ALL.map(|d| d.key()).join(", "))
        })?;
        let v: f64 = value.trim().parse().map_err(|_| anyhow::anyhow!("--margin {spec}: {value:?} is not a number"))?;
        if !(v.is_finite() && v >= 0.0) {
            bail!("--margin {spec}: a margin is a finite number ≥ 0");
        }
        self.0[d.index()] = v;
        Ok(())
    }
}

impl Default for Margins {
    fn default() -> Margins {
        Margins::from_fraction(DEFAULT_MARGIN_FRACTION)
    }
}

pub struct DimensionDelta {
    pub dimension: Dimension,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// b − a.
    pub delta: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// The equivalence margin the verdict used.
    pub margin: f64,
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
    pub dimensions: Vec<DimensionDelta>,
}

pub struct CompareOptions {
    pub bootstrap: usize,
    pub seed: u64,
    pub margins: Margins,
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
    // The fingerprint names the clean images, not how they were corrupted:
    // two modes give every corrupted sample other pixels under the same key.
    if let (Some(ma), Some(mb)) = (ha.corruption_mode, hb.corruption_mode) {
        if ma != mb {
            bail!(
                "{} and {} made their corruptions differently ({} vs {}); a paired comparison needs the same images \
                 (--corruption-mode, docs/corruptions.md)",
                a.dir.display(),
                b.dir.display(),
                ma.as_str(),
                mb.as_str()
            );
        }
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

    let view_a = view(a, pairs.iter().map(|p| p.1).collect());
    let view_b = view(b, pairs.iter().map(|p| p.2).collect());
    let (point_a, point_b, replicates) = paired(&view_a, &view_b, &EvalOptions { bootstrap: opts.bootstrap, seed: opts.seed })?;
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let mut deltas: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.bootstrap); 9];
    for (ra, rb) in &replicates {
        for i in 0..9 {
            if let (Some(x), Some(y)) = (ra[i], rb[i]) {
                deltas[i].push(y - x);
            }
        }
    }

    let dimensions = Dimension::ALL
        .iter()
        .enumerate()
        .map(|(i, &dimension)| {
            let (va, vb) = (finite(point_a[i]), finite(point_b[i]));
            let delta = va.zip(vb).map(|(x, y)| y - x).filter(|d| d.is_finite());
            let interval = resample::interval(std::mem::take(&mut deltas[i]), opts.bootstrap);
            let margin = opts.margins.get(dimension);
            DimensionDelta { dimension, a: va, b: vb, delta, interval, margin, verdict: verdict(delta, interval, margin) }
        })
        .collect();
    Ok(Comparison {
        a: describe(a),
        b: describe(b),
        agreement: Some(same as f64 / pairs.len() as f64),
        clean_agreement,
        paired: pairs.len(),
        unpaired: (a.records.len() - pairs.len(), b.records.len() - pairs.len()),
        dimensions,
    })
}

fn num(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite()).map(Value::from).unwrap_or(Value::Null)
}

impl Comparison {
    /// `{"agreement": f, "dimensions": {name: {"a", "b", "delta", "interval", "margin", "verdict", "settle"}}, …}`
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
                    "margin": d.margin,
                    "verdict": d.verdict.as_str(),
                    "settle": match d.verdict {
                        Verdict::Inconclusive { settle } => num(Some(settle)),
                        _ => Value::Null,
                    },
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
        s += &format!("{:<24}{:>10}{:>10}{:>10}  {:<24}{:>9}  {}\n", "dimension", "a", "b", "b − a", "95% interval", "±margin", "verdict");
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into());
        for d in &self.dimensions {
            let iv = d.interval.map(|(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]")).unwrap_or_else(|| "—".into());
            let delta = d.delta.map(|x| format!("{x:+.4}")).unwrap_or_else(|| "—".into());
            let verdict = match d.verdict {
                Verdict::Inconclusive { settle } => format!("inconclusive (~{settle:.1}× the images)"),
                v => v.as_str().to_string(),
            };
            s += &format!("{:<24}{:>10}{:>10}{:>10}  {:<24}{:>9}  {verdict}\n", d.dimension.label(), f(d.a), f(d.b), delta, iv, format!("{:.4}", d.margin));
        }
        s += "equal: the paired 95% interval lies inside ±margin; differs: it excludes 0; inconclusive: neither\n";
        s
    }
}

/// A dimension's verdict from its delta b − a, the delta's paired 95 %
/// interval (`None` when there were no, or too few, resamples) and its
/// equivalence margin.
fn verdict(delta: Option<f64>, interval: Option<(f64, f64)>, margin: f64) -> Verdict {
    let Some(d) = delta else { return Verdict::Unknown };
    let Some((lo, hi)) = interval else {
        // Without resamples only runs that agree exactly can be called equal.
        return if d == 0.0 { Verdict::Equal } else { Verdict::Unknown };
    };
    if -margin <= lo && hi <= margin {
        Verdict::Equal
    } else if lo > 0.0 || hi < 0.0 {
        Verdict::Differs
    } else {
        // Deciding needs a half-width below the larger of: the room left
        // inside the margin (equal), or the distance to 0 (differs).
        let half = (hi - lo) / 2.0;
        let needed = (margin - d.abs()).max(d.abs());
        let settle = if needed > 0.0 { (half / needed).powi(2).max(1.0) } else { f64::INFINITY };
        Verdict::Inconclusive { settle }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = 0.01;

    #[test]
    fn runs_whose_corruptions_were_made_differently_are_not_paired() {
        let run = |mode| {
            let mut header = crate::protocol::fixtures::full_header();
            header.corruption_mode = mode;
            Run {
                dir: std::path::PathBuf::from(format!("{mode:?}")),
                header,
                records: vec![],
                failures: vec![],
                end: None,
                status: crate::ingest::RunStatus::Complete,
                duplicates: 0,
                decode: Default::default(),
            }
        };
        use crate::protocol::CorruptionMode::{Direct, ImagenetC};
        let opts = CompareOptions { bootstrap: 0, seed: 0, margins: Margins::default() };
        let err = compare(&run(Some(Direct)), &run(Some(ImagenetC)), &opts).err().expect("refused").to_string();
        assert!(err.contains("made their corruptions differently (direct vs imagenet-c)"), "{err}");
        // Without corruptions on one side there is nothing to mismatch.
        for (a, b) in [(Some(Direct), None), (Some(ImagenetC), Some(ImagenetC))] {
            if let Err(e) = compare(&run(a), &run(b), &opts) {
                assert!(!e.to_string().contains("corruptions differently"), "{a:?} {b:?}: {e}");
            }
        }
    }

    #[test]
    fn equal_means_the_whole_interval_is_inside_the_margin() {
        // Float rounding on another CPU: a tight interval that excludes 0 is
        // still equal, since it is far inside the margin.
        assert_eq!(verdict(Some(3e-7), Some((2e-7, 4e-7)), M), Verdict::Equal);
        assert_eq!(verdict(Some(0.0), Some((-M, M)), M), Verdict::Equal);
        assert_eq!(verdict(Some(0.0), Some((0.0, 0.0)), 0.0), Verdict::Equal);
    }

    #[test]
    fn differs_means_the_interval_excludes_zero_beyond_the_margin() {
        assert_eq!(verdict(Some(0.02), Some((0.005, 0.04)), M), Verdict::Differs);
        assert_eq!(verdict(Some(-0.02), Some((-0.04, -0.005)), M), Verdict::Differs);
    }

    #[test]
    fn a_wide_interval_around_zero_is_inconclusive_and_says_what_would_settle_it() {
        // Half-width 0.03 around 0: inside ±0.01 needs a half-width of 0.01,
        // (0.03 / 0.01)² = 9 times the images.
        let Verdict::Inconclusive { settle } = verdict(Some(0.0), Some((-0.03, 0.03)), M) else { panic!() };
        assert!((settle - 9.0).abs() < 1e-12, "{settle}");
        // Delta 0.02 beyond the margin: showing it differs from 0 needs a
        // half-width of 0.02; the interval's is 0.025.
        let Verdict::Inconclusive { settle } = verdict(Some(0.02), Some((-0.005, 0.045)), M) else { panic!() };
        assert!((settle - 1.5625).abs() < 1e-12, "{settle}");
        // A margin of 0 and a delta of 0 can never be settled.
        assert_eq!(verdict(Some(0.0), Some((-0.1, 0.1)), 0.0), Verdict::Inconclusive { settle: f64::INFINITY });
    }

    #[test]
    fn without_an_interval_only_exact_agreement_is_equal() {
        assert_eq!(verdict(Some(0.0), None, M), Verdict::Equal);
        assert_eq!(verdict(Some(1e-9), None, M), Verdict::Unknown);
        assert_eq!(verdict(None, Some((0.0, 1.0)), M), Verdict::Unknown);
    }

    #[test]
    fn default_margins_are_a_fifth_of_the_study_std_and_can_be_set() {
        let mut m = Margins::default();
        assert!((m.get(Dimension::Accuracy) - 0.2 * 0.034685710545946026).abs() < 1e-15);
        m.set("accuracy=0.005").unwrap();
        assert_eq!(m.get(Dimension::Accuracy), 0.005);
        assert_eq!(m.get(Dimension::ShapeBias), Margins::default().get(Dimension::ShapeBias));
        let e = m.set("acuracy=0.1").unwrap_err().to_string();
        assert!(e.contains("no dimension \"acuracy\"") && e.contains("calibration_error"), "{e}");
        assert!(m.set("accuracy").unwrap_err().to_string().contains("DIMENSION=VALUE"));
        assert!(m.set("accuracy=-1").unwrap_err().to_string().contains("≥ 0"));
        assert_eq!(Margins::from_args(0.2, &["accuracy=0.005".into()]).unwrap(), m);
        assert!(Margins::from_args(f64::NAN, &[]).unwrap_err().to_string().starts_with("--margin-fraction NaN"));
    }
}
