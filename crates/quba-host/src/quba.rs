//! QUBA (Quality Understanding Beyond Accuracy): the nine quality
//! dimensions, their study constants and default weights, and the score that
//! folds them into one number (docs/protocol.md, "QUBA").
//!
//! `score` is pure; `read_table` reads the study's published 326-model
//! table layout.
//!
//! Normalisation is always explicit. The study's mean/std constants describe
//! ImageNet-1k backbones as the study measured them; for any other benchmark
//! they are meaningless, and there the cohort's own mean and n−1 std are the
//! only honest choice — which in turn means a lone model has no QUBA.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of the nine quality dimensions, in PROTOCOL order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Accuracy,
    AdversarialRobustness,
    CorruptionRobustness,
    OodRobustness,
    CalibrationError,
    ClassBalance,
    ObjectFocus,
    ShapeBias,
    ParametersM,
}

impl Dimension {
    /// The nine, in docs/protocol.md order; `Values` and `Weights` are indexed
    /// the same way.
    pub const ALL: [Dimension; 9] = [
        Dimension::Accuracy,
        Dimension::AdversarialRobustness,
        Dimension::CorruptionRobustness,
        Dimension::OodRobustness,
        Dimension::CalibrationError,
        Dimension::ClassBalance,
        Dimension::ObjectFocus,
        Dimension::ShapeBias,
        Dimension::ParametersM,
    ];

    /// Position in `ALL` (and so in `Values` and `Weights`).
    pub fn index(self) -> usize {
        // The declaration order is the PROTOCOL order; ALL is checked
        // against it in the tests.
        self as usize
    }

    /// Key in results.json (the serde name).
    pub fn key(self) -> &'static str {
        match self {
            Dimension::Accuracy => "accuracy",
            Dimension::AdversarialRobustness => "adversarial_robustness",
            Dimension::CorruptionRobustness => "corruption_robustness",
            Dimension::OodRobustness => "ood_robustness",
            Dimension::CalibrationError => "calibration_error",
            Dimension::ClassBalance => "class_balance",
            Dimension::ObjectFocus => "object_focus",
            Dimension::ShapeBias => "shape_bias",
            Dimension::ParametersM => "parameters_m",
        }
    }

    /// Human name; exactly the study table's column header, which is what
    /// `read_table` looks columns up by.
    pub fn label(self) -> &'static str {
        match self {
            Dimension::Accuracy => "Accuracy",
            Dimension::AdversarialRobustness => "Adversarial Robustness",
            Dimension::CorruptionRobustness => "Corruption Robustness",
            Dimension::OodRobustness => "OOD Robustness",
            Dimension::CalibrationError => "Calibration Error",
            Dimension::ClassBalance => "Class Balance",
            Dimension::ObjectFocus => "Object Focus",
            Dimension::ShapeBias => "Shape Bias",
            Dimension::ParametersM => "Parameters",
        }
    }

    /// Whether a larger raw value is better. The two "lower is better"
    /// dimensions get their z-score negated so that in QUBA up is always good.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Dimension::CalibrationError | Dimension::ParametersM)
    }

    /// The study's normalisation constants (docs/protocol.md table; identical to
    /// `QUBA_MEAN`/`QUBA_STD` in its `data_utils.py`). Digits as published:
    /// they are not the statistics of the 326-model table and must not be
    /// recomputed from it.
    pub fn paper_mean_std(self) -> (f64, f64) {
        match self {
            Dimension::Accuracy => (0.7990557251908397, 0.034685710545946026),
            Dimension::AdversarialRobustness => (0.18583778826016084, 0.11083062192390095),
            Dimension::CorruptionRobustness => (0.5298791080592711, 0.23383978329969085),
            Dimension::OodRobustness => (0.5664841617855405, 0.14548627504237352),
            Dimension::CalibrationError => (0.004479927389289115, 0.0026752085291489288),
            Dimension::ClassBalance => (0.783356376851669, 0.024047971612660052),
            Dimension::ObjectFocus => (0.9286352601551336, 0.017724144886557092),
            Dimension::ShapeBias => (0.30548520497464765, 0.08354531823072534),
            Dimension::ParametersM => (55.28778625954198, 42.8890536095964),
        }
    }

    /// The study's default weight. The three robustness dimensions share one
    /// unit of weight and the two shape/background ones half a unit each, so
    /// that no family of related measurements dominates the score.
    pub fn default_weight(self) -> f64 {
        match self {
            Dimension::AdversarialRobustness | Dimension::CorruptionRobustness | Dimension::OodRobustness => 1.0 / 3.0,
            Dimension::ObjectFocus | Dimension::ShapeBias => 0.5,
            _ => 1.0,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The nine raw values of one model, indexed like `Dimension::ALL`; `None`
/// where a dimension was not measured.
pub type Values = [Option<f64>; 9];

/// How raw values become z-scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// The study's published constants (`Dimension::paper_mean_std`).
    Paper,
    /// Mean and sample standard deviation (n − 1) of the scored cohort.
    Cohort,
}

/// Nine non-negative weights, indexed like `Dimension::ALL`, not all zero.
/// Parsed from "w1,…,w9"; each entry may be a decimal or a fraction "a/b"
/// (so the defaults can be written exactly: "1,1/3,1/3,1/3,1,1,1/2,1/2,1").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights(pub [f64; 9]);

impl Default for Weights {
    fn default() -> Self {
        Weights(Dimension::ALL.map(Dimension::default_weight))
    }
}

impl Weights {
    /// Why these weights cannot be used, if they cannot. The field is public,
    /// so `score` re-checks what `FromStr` already guarantees.
    fn problem(&self) -> Option<String> {
        for (d, &w) in Dimension::ALL.iter().zip(&self.0) {
            if !w.is_finite() {
                return Some(format!("the weight of {d} is not a finite number ({w})"));
            }
            if w < 0.0 {
                return Some(format!("the weight of {d} is negative ({w})"));
            }
        }
        if self.0.iter().all(|&w| w == 0.0) {
            return Some("all nine weights are zero".into());
        }
        None
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust's shortest round-trip float formatting, so the text parses
        // back to the same weights.
        for (i, w) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{w}")?;
        }
        Ok(())
    }
}

/// Why a weight string was rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseWeightsError(String);

impl fmt::Display for ParseWeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseWeightsError {}

fn parse_weight(s: &str) -> Option<f64> {
    match s.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
            if b == 0.0 {
                return None;
            }
            Some(a / b)
        }
        None => s.parse::<f64>().ok(),
    }
}

impl FromStr for Weights {
    type Err = ParseWeightsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let order = Dimension::ALL.map(Dimension::label).join(", ");
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 9 {
            return Err(ParseWeightsError(format!(
                "expected 9 comma-separated weights ({order}), got {}",
                parts.len()
            )));
        }
        let mut w = [0.0; 9];
        for (i, (d, p)) in Dimension::ALL.iter().zip(&parts).enumerate() {
            let v = parse_weight(p)
                .filter(|v| v.is_finite())
                .ok_or_else(|| ParseWeightsError(format!("weight {} ({d}) is not a number: {p:?}", i + 1)))?;
            if v < 0.0 {
                return Err(ParseWeightsError(format!("weight {} ({d}) is negative: {p}", i + 1)));
            }
            w[i] = v;
        }
        if w.iter().all(|&v| v == 0.0) {
            return Err(ParseWeightsError("all nine weights are zero; at least one must be positive".into()));
        }
        Ok(Weights(w))
    }
}

/// One model's result: the nine signed z-scores (None where the value is
/// missing or could not be normalised), and QUBA, or the reason there is
/// none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub normalised: Values,
    pub quba: Option<f64>,
    pub reason: Option<String>,
    /// 95% interval of QUBA over the run's bootstrap resamples, scored with
    /// the cohort's point normalisers (see `quba_interval`).
    #[serde(default)]
    pub interval: Option<(f64, f64)>,
}

/// Per dimension, the (mean, std) to normalise with, or why there is none.
pub type Normalisers = [Result<(f64, f64), String>; 9];

/// Per dimension, the (mean, std) to normalise with, or why there is none.
pub fn normalisers(rows: &[Values], norm: Normalisation) -> [Result<(f64, f64), String>; 9] {
    Dimension::ALL.map(|d| match norm {
        Normalisation::Paper => Ok(d.paper_mean_std()),
        Normalisation::Cohort => {
            let xs: Vec<f64> = rows.iter().filter_map(|r| r[d.index()]).filter(|v| v.is_finite()).collect();
            if rows.len() == 1 {
                return Err("a cohort of one model has no cohort normalisation (it needs at least two models)".into());
            }
            if xs.len() < 2 {
                return Err(format!(
                    "only {} model(s) in the cohort have {d}; cohort normalisation needs at least two",
                    xs.len()
                ));
            }
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let sd = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt();
            // Every model is exactly at the cohort mean: z = 0 for all (see
            // `z_score`). Refusing QUBA here would make the commonest cohort,
            // one model in fp32 and int8 (same parameter count), unscorable.
            Ok((mean, sd))
        }
    })
}

/// Score a cohort of models; one `Scored` per row, in order.
///
/// Each value becomes `z = (v − mean)/std` — the study's constants for
/// `Paper`, the mean and sample std (n − 1) over the rows that have that
/// dimension for `Cohort` — and the sign of Calibration Error and Parameters
/// is flipped afterwards. QUBA is `Σ w_d z_d / Σ w_d`.
///
/// A row gets no QUBA (and a reason naming what is wrong) when a dimension
/// with non-zero weight is missing, is not a finite number, or cannot be
/// normalised (cohort of one model; fewer than two models with that
/// dimension). A dimension on which the whole cohort is equal (zero spread)
/// normalises to 0 for every model: it does not separate them. Dimensions with weight 0 may be missing. Invalid
/// weights (negative, non-finite, all zero) give every row no QUBA.
pub fn score(rows: &[Values], norm: Normalisation, weights: &Weights) -> Vec<Scored> {
    let stats = normalisers(rows, norm);
    rows.iter().map(|row| score_row(row, &stats, weights)).collect()
}

/// QUBA's 95% interval from one model's bootstrap resamples (`ModelResult::
/// replicates`): each resample scored with `stats`, the normalisers of the
/// point values. With paper constants that is the whole uncertainty; with
/// cohort normalisation it holds the other models' values fixed, so it says
/// how sure this model's score is against this cohort, not against a cohort
/// drawn again.
pub fn quba_interval(replicates: &[Values], stats: &Normalisers, weights: &Weights) -> Option<(f64, f64)> {
    let scores = replicates.iter().map(|r| score_row(r, stats, weights).quba.unwrap_or(f64::NAN)).collect();
    crate::resample::interval(scores, replicates.len())
}

fn score_row(row: &Values, stats: &Normalisers, weights: &Weights) -> Scored {
    let weight_problem = weights.problem();
    let mut normalised: Values = [None; 9];
    let mut missing = Vec::new();
    let mut not_finite = Vec::new();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for d in Dimension::ALL {
        let i = d.index();
        let z = match row[i] {
            None => {
                missing.push(d);
                None
            }
            Some(v) if !v.is_finite() => {
                not_finite.push(d);
                None
            }
            Some(v) => stats[i].as_ref().ok().map(|&(mean, sd)| {
                let z = if sd == 0.0 { 0.0 } else { (v - mean) / sd };
                if d.higher_is_better() {
                    z
                } else {
                    -z
                }
            }),
        };
        normalised[i] = z;
        // A zero weight contributes nothing, and skipping it keeps an
        // unavailable z there from mattering.
        if let (Some(z), true) = (z, weights.0[i] > 0.0) {
            num += weights.0[i] * z;
            den += weights.0[i];
        }
    }
    // Only the dimensions that carry weight can block the score.
    let weighted = |d: &Dimension| weights.0[d.index()] > 0.0;
    let names = |ds: &[Dimension]| ds.iter().filter(|d| weighted(d)).map(|d| d.label()).collect::<Vec<_>>().join(", ");
    let mut reasons = Vec::new();
    if let Some(p) = &weight_problem {
        reasons.push(format!("invalid weights: {p}"));
    }
    let m = names(&missing);
    if !m.is_empty() {
        reasons.push(format!("missing {m}"));
    }
    let nf = names(&not_finite);
    if !nf.is_empty() {
        reasons.push(format!("not a finite number: {nf}"));
    }
    // Normalisation failures for values this row does have; the
    // cohort-of-one message is the same for all nine, so say it once.
    for d in Dimension::ALL.iter().filter(|d| weighted(d) && row[d.index()].is_some_and(f64::is_finite)) {
        if let Err(why) = &stats[d.index()] {
            if !reasons.contains(why) {
                reasons.push(why.clone());
            }
        }
    }
    if reasons.is_empty() {
        Scored { normalised, quba: Some(num / den), reason: None, interval: None }
    } else {
        Scored { normalised, quba: None, reason: Some(reasons.join("; ")), interval: None }
    }
}

/// One row of the study's table layout.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRow {
    /// The `Id` column; unique (model names repeat across training variants).
    pub id: String,
    /// The `Model` column.
    pub name: String,
    pub values: Values,
}

/// Read a table in the study's layout (`Id`, `Model`, the nine
/// `Dimension::label` columns, any others ignored), by header name so that
/// column order and extra columns do not matter. An empty cell is a missing
/// value; anything else that is not a finite number is an error naming the
/// file, the row's Id and the column, since a silently dropped value would
/// silently drop the model's QUBA. Ids must be present and unique.
pub fn read_table(path: &std::path::Path) -> anyhow::Result<Vec<TableRow>> {
    use anyhow::{bail, Context};
    let file = path.display();
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("{file}: cannot open the table"))?;
    let headers = rdr.headers().with_context(|| format!("{file}: cannot read the header row"))?.clone();
    let col = |name: &str| -> anyhow::Result<usize> {
        headers.iter().position(|h| h == name).with_context(|| {
            format!("{file}: no column {name:?} (columns: {})", headers.iter().collect::<Vec<_>>().join(", "))
        })
    };
    let id_col = col("Id")?;
    let name_col = col("Model")?;
    let mut dim_cols = [0usize; 9];
    for d in Dimension::ALL {
        dim_cols[d.index()] = col(d.label())?;
    }
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, rec) in rdr.records().enumerate() {
        // Line numbers are 1-based and the header is line 1.
        let rec = rec.with_context(|| format!("{file}: cannot read data row {}", n + 1))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(n as u64 + 2);
        let id = rec.get(id_col).unwrap_or("").to_string();
        if id.is_empty() {
            bail!("{file}: line {line} has no Id");
        }
        if !seen.insert(id.clone()) {
            bail!("{file}: Id {id} appears more than once (again on line {line})");
        }
        let name = rec.get(name_col).unwrap_or("").to_string();
        let mut values: Values = [None; 9];
        for d in Dimension::ALL {
            let cell = rec.get(dim_cols[d.index()]).unwrap_or("");
            if cell.is_empty() {
                continue;
            }
            match cell.parse::<f64>() {
                Ok(v) if v.is_finite() => values[d.index()] = Some(v),
                _ => bail!("{file}: row Id {id} (line {line}), column {:?}: {cell:?} is not a number", d.label()),
            }
        }
        rows.push(TableRow { id, name, values });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(v: [f64; 9]) -> Values {
        v.map(Some)
    }

    /// The study's mean vector as a row: every z-score is 0.
    fn paper_means() -> [f64; 9] {
        Dimension::ALL.map(|d| d.paper_mean_std().0)
    }

    #[test]
    fn all_is_in_protocol_order_and_index_agrees() {
        for (i, d) in Dimension::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        let keys: Vec<&str> = Dimension::ALL.iter().map(|d| d.key()).collect();
        assert_eq!(
            keys,
            [
                "accuracy",
                "adversarial_robustness",
                "corruption_robustness",
                "ood_robustness",
                "calibration_error",
                "class_balance",
                "object_focus",
                "shape_bias",
                "parameters_m"
            ]
        );
    }

    #[test]
    fn serde_names_are_the_keys() {
        for d in Dimension::ALL {
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", d.key()));
            let back: Dimension = serde_json::from_str(&format!("\"{}\"", d.key())).unwrap();
            assert_eq!(back, d);
        }
        assert_eq!(serde_json::to_string(&Normalisation::Cohort).unwrap(), "\"cohort\"");
    }

    #[test]
    fn labels_match_the_study_table_headers() {
        // Header line of data/reference/study_326_models.csv, columns 7–15.
        let header = "Accuracy,Adversarial Robustness,Corruption Robustness,OOD Robustness,Calibration Error,Class Balance,Object Focus,Shape Bias,Parameters";
        let labels: Vec<&str> = Dimension::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels.join(","), header);
    }

    #[test]
    fn direction_and_default_weights() {
        let lower: Vec<Dimension> = Dimension::ALL.into_iter().filter(|d| !d.higher_is_better()).collect();
        assert_eq!(lower, [Dimension::CalibrationError, Dimension::ParametersM]);
        let w = Weights::default().0;
        assert_eq!(w, [1.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 1.0, 1.0, 0.5, 0.5, 1.0]);
        // Σw = 1 + 1 + 1 + 1 + 1 + 1 (three thirds, two halves) = 6.
        assert!((w.iter().sum::<f64>() - 6.0).abs() < 1e-15);
    }

    #[test]
    fn paper_constants_are_the_published_digits() {
        // Copied digit for digit from docs/protocol.md's table (= data_utils.py).
        assert_eq!(Dimension::Accuracy.paper_mean_std(), (0.7990557251908397, 0.034685710545946026));
        assert_eq!(Dimension::CalibrationError.paper_mean_std(), (0.004479927389289115, 0.0026752085291489288));
        assert_eq!(Dimension::ParametersM.paper_mean_std(), (55.28778625954198, 42.8890536095964));
    }

    #[test]
    fn weights_parse_and_round_trip() {
        let w: Weights = "1,1/3,1/3,1/3,1,1,0.5,0.5,1".parse().unwrap();
        assert_eq!(w, Weights::default());
        let w2: Weights = " 1 , 0 ,0,0,0,0,0,0, 2 ".parse().unwrap();
        assert_eq!(w2.0, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(Weights::default().to_string().parse::<Weights>().unwrap(), Weights::default());
    }

    #[test]
    fn weights_errors_say_what_is_wrong() {
        let e = "1,1,1".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("expected 9") && e.contains("got 3"), "{e}");
        let e = "1,1,x,1,1,1,1,1,1".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("weight 3") && e.contains("Corruption Robustness") && e.contains("not a number"), "{e}");
        let e = "1,1,1,1,1,1,1,1,1/0".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("weight 9") && e.contains("not a number"), "{e}");
        let e = "1,1,1,1,nan,1,1,1,1".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = "1,-1,1,1,1,1,1,1,1".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("weight 2") && e.contains("negative"), "{e}");
        let e = "0,0,0,0,0,0,0,0,0".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("all nine weights are zero"), "{e}");
        let e = "".parse::<Weights>().unwrap_err().to_string();
        assert!(e.contains("got 1"), "{e}");
    }

    #[test]
    fn paper_mean_row_scores_zero() {
        let s = score(&[full(paper_means())], Normalisation::Paper, &Weights::default());
        assert_eq!(s[0].quba, Some(0.0));
        assert!(s[0].normalised.iter().all(|z| z.unwrap() == 0.0));
        assert_eq!(s[0].reason, None);
    }

    #[test]
    fn paper_one_std_up_everywhere() {
        // v = mean + std on every dimension → z = +1, flipped to −1 for
        // Calibration Error and Parameters. QUBA = (Σw − w_cal − w_par)/Σw
        // − (w_cal + w_par)/Σw = (6 − 2 − 2)/6 = 1/3.
        let v = Dimension::ALL.map(|d| {
            let (m, s) = d.paper_mean_std();
            m + s
        });
        let s = &score(&[full(v)], Normalisation::Paper, &Weights::default())[0];
        for d in Dimension::ALL {
            let want = if d.higher_is_better() { 1.0 } else { -1.0 };
            assert!((s.normalised[d.index()].unwrap() - want).abs() < 1e-12, "{d}");
        }
        assert!((s.quba.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn weights_select_and_scale() {
        // Only accuracy weighted: QUBA = z_acc = (0.834 − 0.79906)/0.03469 =
        // 0.03494427480916030/0.034685710545946026 = 1.00745… (Python).
        let mut v = paper_means();
        v[0] = 0.834;
        let mut w = [0.0; 9];
        w[0] = 2.0;
        let s = &score(&[full(v)], Normalisation::Paper, &Weights(w))[0];
        let want = (0.834 - 0.7990557251908397) / 0.034685710545946026;
        assert!((s.quba.unwrap() - want).abs() < 1e-12);
        // Accuracy weight 1, parameters weight 1, params 12.4 M:
        // z_par = −(12.4 − 55.28778625954198)/42.8890536095964 = 0.99997…
        // QUBA = (z_acc + z_par)/2.
        v[8] = 12.4;
        w = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let s = &score(&[full(v)], Normalisation::Paper, &Weights(w))[0];
        let zp = -(12.4 - 55.28778625954198) / 42.8890536095964;
        assert!((s.quba.unwrap() - (want + zp) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn missing_weighted_dimension_blocks_and_is_named() {
        let mut v: Values = full(paper_means());
        v[1] = None;
        v[8] = None;
        let s = &score(&[v], Normalisation::Paper, &Weights::default())[0];
        assert_eq!(s.quba, None);
        assert_eq!(s.reason.as_deref(), Some("missing Adversarial Robustness, Parameters"));
        // What is present is still normalised; what is missing is None.
        assert_eq!(s.normalised[0], Some(0.0));
        assert_eq!(s.normalised[1], None);
    }

    #[test]
    fn missing_dimension_with_zero_weight_is_fine() {
        // Weight 0 on Adversarial Robustness: its absence does not matter,
        // and QUBA is over the other eight (all z = 0 here, accuracy z = 1).
        let mut v: Values = full(paper_means());
        v[1] = None;
        v[0] = Some(0.7990557251908397 + 0.034685710545946026);
        let mut w = Weights::default();
        w.0[1] = 0.0;
        let s = &score(&[v], Normalisation::Paper, &w)[0];
        // Σw = 6 − 1/3 = 17/3; QUBA = 1·1 / (17/3) = 3/17.
        assert!((s.quba.unwrap() - 3.0 / 17.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.reason, None);
    }

    #[test]
    fn non_finite_value_blocks() {
        let mut v: Values = full(paper_means());
        v[5] = Some(f64::NAN);
        let s = &score(&[v], Normalisation::Paper, &Weights::default())[0];
        assert_eq!(s.quba, None);
        assert_eq!(s.reason.as_deref(), Some("not a finite number: Class Balance"));
        assert_eq!(s.normalised[5], None);
    }

    #[test]
    fn invalid_weights_struct_gives_no_quba() {
        let s = &score(&[full(paper_means())], Normalisation::Paper, &Weights([0.0; 9]))[0];
        assert_eq!(s.quba, None);
        assert!(s.reason.as_deref().unwrap().contains("all nine weights are zero"));
        let mut w = Weights::default();
        w.0[3] = -1.0;
        let s = &score(&[full(paper_means())], Normalisation::Paper, &w)[0];
        assert!(s.reason.as_deref().unwrap().contains("OOD Robustness is negative"));
    }

    #[test]
    fn cohort_normalisation_by_hand() {
        // Three models; every dimension takes the values 1, 2, 3 except
        // Parameters (10, 20, 60) and Calibration Error (3, 2, 1).
        // Mean 2, sample std 1 → z = −1, 0, +1 (Cal. Error: +1, 0, −1, then
        // flipped: −1, 0, +1). Parameters: mean 30, sample std
        // sqrt((400 + 100 + 900)/2) = sqrt(700) = 26.457513110645905;
        // z = −20/26.4575, −10/26.4575, 30/26.4575, flipped.
        let mk = |a: f64, cal: f64, p: f64| -> Values {
            let mut v = [a; 9];
            v[4] = cal;
            v[8] = p;
            full(v)
        };
        let rows = [mk(1.0, 3.0, 10.0), mk(2.0, 2.0, 20.0), mk(3.0, 1.0, 60.0)];
        let s = score(&rows, Normalisation::Cohort, &Weights::default());
        let sd = 700f64.sqrt();
        let zp = [20.0 / sd, 10.0 / sd, -30.0 / sd];
        for (i, base) in [-1.0, 0.0, 1.0].iter().enumerate() {
            for d in Dimension::ALL {
                let want = if d == Dimension::ParametersM { zp[i] } else { *base };
                assert!((s[i].normalised[d.index()].unwrap() - want).abs() < 1e-12, "row {i} {d}");
            }
            // Σw = 6; Parameters has weight 1, the rest 5:
            // QUBA = (5·base + zp)/6.
            let q = (5.0 * base + zp[i]) / 6.0;
            assert!((s[i].quba.unwrap() - q).abs() < 1e-12, "row {i}");
        }
    }

    #[test]
    fn cohort_of_one_has_no_quba() {
        let s = score(&[full(paper_means())], Normalisation::Cohort, &Weights::default());
        assert_eq!(s[0].quba, None);
        let r = s[0].reason.as_deref().unwrap();
        assert!(r.contains("cohort of one model"), "{r}");
        // Said once, not nine times.
        assert_eq!(r.matches("cohort of one").count(), 1, "{r}");
        assert!(s[0].normalised.iter().all(Option::is_none));
    }

    #[test]
    fn cohort_zero_spread_normalises_to_zero() {
        // Two models identical in Shape Bias, different elsewhere.
        let a = full([0.7, 0.1, 0.5, 0.5, 0.004, 0.78, 0.92, 0.3, 20.0]);
        let b = full([0.8, 0.2, 0.6, 0.6, 0.003, 0.79, 0.93, 0.3, 30.0]);
        // Two models: every other z is ±1/√2 (mean halfway, sample std =
        // |a−b|/√2); a is below b everywhere. Flipped dimensions: a has the
        // higher Cal. Error → −1/√2, the lower Parameters → +1/√2.
        // a's weighted sum: −(1 [acc] + 1 [three robustness thirds] + 1 [cal]
        // + 1 [class balance] + .5 [object focus])/√2 + 1 [params]/√2 + .5·0
        // [shape bias] = −3.5/√2, over Σw = 6.
        let s = score(&[a, b], Normalisation::Cohort, &Weights::default());
        let want = -3.5 / (6.0 * 2f64.sqrt());
        assert_eq!(s[0].normalised[7], Some(0.0));
        assert_eq!(s[1].normalised[7], Some(0.0));
        assert!((s[0].quba.unwrap() - want).abs() < 1e-12, "{:?}", s[0]);
        assert!((s[1].quba.unwrap() + want).abs() < 1e-12, "{:?}", s[1]);
        // With Shape Bias weighted 0 the denominator is 5.5.
        let mut w = Weights::default();
        w.0[7] = 0.0;
        let s = score(&[a, b], Normalisation::Cohort, &w);
        let want = -3.5 / (5.5 * 2f64.sqrt());
        assert!((s[0].quba.unwrap() - want).abs() < 1e-12, "{:?}", s[0]);
        assert!((s[1].quba.unwrap() + want).abs() < 1e-12, "{:?}", s[1]);
    }

    #[test]
    fn cohort_uses_only_models_that_have_the_dimension() {
        // Parameters present for two of three models: mean/std over those two.
        let mut a = full([0.7, 0.1, 0.5, 0.5, 0.004, 0.78, 0.92, 0.3, 20.0]);
        let b = full([0.8, 0.2, 0.6, 0.6, 0.003, 0.79, 0.93, 0.4, 30.0]);
        let c = full([0.9, 0.3, 0.7, 0.7, 0.002, 0.80, 0.94, 0.5, 40.0]);
        a[8] = None;
        let s = score(&[a, b, c], Normalisation::Cohort, &Weights::default());
        assert_eq!(s[0].quba, None);
        assert_eq!(s[0].reason.as_deref(), Some("missing Parameters"));
        // b, c: params mean 35, sd 10/√2 → z = ∓1/√2, flipped: b +, c −.
        assert!((s[1].normalised[8].unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((s[2].normalised[8].unwrap() + 0.5f64.sqrt()).abs() < 1e-12);
        // Only one model with a dimension → that dimension cannot be normalised.
        let mut b1 = b;
        b1[8] = None;
        let c1 = c;
        let s = score(&[a, b1, c1], Normalisation::Cohort, &Weights::default());
        assert!(s[2].reason.as_deref().unwrap().contains("only 1 model(s) in the cohort have Parameters"), "{:?}", s[2]);
    }

    #[test]
    fn empty_cohort_is_empty() {
        assert!(score(&[], Normalisation::Cohort, &Weights::default()).is_empty());
    }

        mod table {
        use super::super::*;
        use std::path::PathBuf;

        fn study_table() -> PathBuf {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/reference/study_326_models.csv")
        }

        fn temp_csv(name: &str, body: &str) -> PathBuf {
            let p = std::env::temp_dir().join(format!("quba-edge-{}-{name}.csv", std::process::id()));
            std::fs::write(&p, body).unwrap();
            p
        }

        const HEADER: &str = "Id,Model,Accuracy,Adversarial Robustness,Corruption Robustness,OOD Robustness,Calibration Error,Class Balance,Object Focus,Shape Bias,Parameters";

        #[test]
        fn reads_the_study_table() {
            let rows = read_table(&study_table()).unwrap();
            assert_eq!(rows.len(), 326);
            // First data line: 1,AlexNet,…,0.5652,0.0352,0.3442,0.5699,0.0017,0.7319,0.8,0.2636,61.1
            assert_eq!(rows[0].id, "1");
            assert_eq!(rows[0].name, "AlexNet");
            assert_eq!(rows[0].values, [0.5652, 0.0352, 0.3442, 0.5699, 0.0017, 0.7319, 0.8, 0.2636, 61.1].map(Some));
            // Counted with Python's csv module: 282 complete rows, 22 rows
            // without Parameters, 22 rows with none of the nine.
            let complete = rows.iter().filter(|r| r.values.iter().all(Option::is_some)).count();
            assert_eq!(complete, 282);
            let none = rows.iter().filter(|r| r.values.iter().all(Option::is_none)).count();
            assert_eq!(none, 22);
        }

        #[test]
        fn study_table_quba_paper_default() {
            let rows = read_table(&study_table()).unwrap();
            let values: Vec<Values> = rows.iter().map(|r| r.values).collect();
            let s = score(&values, Normalisation::Paper, &Weights::default());
            assert_eq!(s.len(), 326);
            assert_eq!(s.iter().filter(|x| x.quba.is_some()).count(), 282);
            let by_id = |id: &str| &s[rows.iter().position(|r| r.id == id).unwrap()];
            // Expected values computed in plain Python (csv module, floats):
            //   z_d = (v_d − mean_d)/std_d with the PROTOCOL constants, z_cal
            //   and z_par negated, QUBA = Σ w_d z_d / Σ w_d with weights
            //   1,1/3,1/3,1/3,1,1,1/2,1/2,1.
            // Id 1 AlexNet (0.5652,…,61.1): z = [−6.742134484489379,
            //   −1.3591711897420595, −0.7940441332914824, 0.023478766044869707,
            //   1.0391441859575337, −2.1397387555372793, −7.257628561403672,
            //   −0.5013471234734442, −0.13551741648031004] → QUBA −2.094607749775147.
            let a = by_id("1");
            assert!((a.quba.unwrap() - -2.094607749775147).abs() < 1e-12, "{a:?}");
            assert!((a.normalised[6].unwrap() - -7.257628561403672).abs() < 1e-12);
            assert!((a.normalised[4].unwrap() - 1.0391441859575337).abs() < 1e-12);
            // Id 13 ResNet50 (0.7613, 0.0337, 0.5146, 0.4968, 0.0021, 0.7549,
            //   0.9274, 0.2221, 25.6) → QUBA −0.3104831632303261.
            let r = by_id("13");
            assert!((r.quba.unwrap() - -0.3104831632303261).abs() < 1e-12, "{r:?}");
            // Id 188 EVA02-b has the highest QUBA of the 282: 1.0737656098930346.
            let e = by_id("188");
            assert!((e.quba.unwrap() - 1.0737656098930346).abs() < 1e-12, "{e:?}");
            let best = s.iter().filter_map(|x| x.quba).fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(best, e.quba.unwrap());
            // Id 305 CLIP-B16-DataCompXL has no Parameters → no QUBA.
            let c = by_id("305");
            assert_eq!(c.quba, None);
            assert_eq!(c.reason.as_deref(), Some("missing Parameters"));
        }

        #[test]
        fn empty_cells_are_none_and_extra_columns_ignored() {
            let p = temp_csv(
                "extra",
                "Setup,Parameters,Shape Bias,Object Focus,Class Balance,Calibration Error,OOD Robustness,Corruption Robustness,Adversarial Robustness,Accuracy,Model,Id\n\
                 x,,0.3, 0.9 ,0.8,0.004,0.5,0.5,0.2,0.8,M,7\n",
            );
            let rows = read_table(&p).unwrap();
            std::fs::remove_file(&p).ok();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].id, "7");
            assert_eq!(rows[0].name, "M");
            assert_eq!(rows[0].values, [Some(0.8), Some(0.2), Some(0.5), Some(0.5), Some(0.004), Some(0.8), Some(0.9), Some(0.3), None]);
        }

        #[test]
        fn bad_number_names_file_row_and_column() {
            let p = temp_csv("bad", &format!("{HEADER}\n1,A,0.8,0.2,0.5,0.5,0.004,0.8,0.9,0.3,25\n42,B,0.8,0.2,0.5,zero,0.004,0.8,0.9,0.3,25\n"));
            let e = format!("{:#}", read_table(&p).unwrap_err());
            std::fs::remove_file(&p).ok();
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("row Id 42") && e.contains("\"OOD Robustness\"") && e.contains("\"zero\""), "{e}");
            assert!(e.contains("line 3"), "{e}");
        }

        #[test]
        fn missing_column_and_duplicate_id_are_errors() {
            let p = temp_csv("nocol", "Id,Model,Accuracy\n1,A,0.8\n");
            let e = format!("{:#}", read_table(&p).unwrap_err());
            std::fs::remove_file(&p).ok();
            assert!(e.contains("no column \"Adversarial Robustness\""), "{e}");
            let p = temp_csv("dup", &format!("{HEADER}\n1,A,,,,,,,,,\n1,B,,,,,,,,,\n"));
            let e = format!("{:#}", read_table(&p).unwrap_err());
            std::fs::remove_file(&p).ok();
            assert!(e.contains("Id 1 appears more than once"), "{e}");
            let e = format!("{:#}", read_table(std::path::Path::new("/nonexistent/t.csv")).unwrap_err());
            assert!(e.contains("/nonexistent/t.csv"), "{e}");
        }

        #[test]
        fn non_finite_cell_is_an_error() {
            let p = temp_csv("nan", &format!("{HEADER}\n3,A,NaN,,,,,,,,\n"));
            let e = format!("{:#}", read_table(&p).unwrap_err());
            std::fs::remove_file(&p).ok();
            assert!(e.contains("row Id 3") && e.contains("\"Accuracy\""), "{e}");
        }
    }
}
