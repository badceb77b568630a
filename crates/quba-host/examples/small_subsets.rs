//! How far class balance and calibration error drift from their 50-per-class
//! values when a run evaluates fewer images per class (docs/small-subsets.md).
//!
//! `cargo run --release -p quba-host --example small_subsets -- docs/small-subsets`
//! writes `docs/small-subsets.json` (every replicate's values) and
//! `docs/small-subsets.md` (the table) from the same run.
//!
//! The study's constants come from ImageNet's 50 validation images per class.
//! A board run of a few images per class is not only noisier: class balance
//! takes a standard deviation over per-class accuracies (each a fraction of
//! n images), and ECE and ACE are sums of absolute gaps, so fewer images
//! shift their expected value, which no interval shows. The drift depends on
//! the model; this simulates an ImageNet-like one (below) with the metric
//! code the reports use, and measures it in units of the study's std.

use std::fmt::Write as _;

use quba_host::metrics;
use quba_host::quba::Dimension;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const K: usize = 1000;
const PER_CLASS: [usize; 8] = [1, 2, 3, 5, 10, 20, 30, 50];

/// The simulated model: per class a difficulty shift, per image a top-1
/// confidence skewed towards 1 (mean about 0.8) and a chance of being right
/// 3 points below it (slightly over-confident, ECE about 0.03 as for a
/// typical ImageNet CNN). The rest of the probability goes to the true
/// class when the prediction is wrong, to five runners-up, and a little to
/// every other class, so no probability is 0.
struct Model {
    shift: Vec<f64>,
}

impl Model {
    fn new(rng: &mut ChaCha8Rng) -> Model {
        Model { shift: (0..K).map(|_| rng.gen_range(-0.15..0.15)).collect() }
    }

    fn image(&self, rng: &mut ChaCha8Rng, y: usize, row: &mut [f32]) {
        let u: f64 = rng.gen();
        let c = (1.0 - 0.6 * u * u + self.shift[y]).clamp(0.05, 0.995);
        let correct = rng.gen::<f64>() < c - 0.03;
        let pred = if correct { y } else { (y + 1 + rng.gen_range(0..K - 1)) % K };
        let mut rest = 1.0 - c;
        let floor = rest * 0.05 / K as f64;
        row.fill(floor as f32);
        rest -= floor * K as f64;
        row[pred] += c as f32;
        if !correct {
            let share = rest * rng.gen_range(0.3..0.9);
            row[y] += share as f32;
            rest -= share;
        }
        let w: Vec<f64> = (0..5).map(|_| rng.gen::<f64>() + 0.1).collect();
        let sum: f64 = w.iter().sum();
        for wi in w {
            let j = rng.gen_range(0..K);
            // A runner-up must not overtake the prediction.
            let add = (rest * wi / sum).min(c * 0.9 - row[j] as f64).max(0.0);
            row[j] += add as f32;
        }
    }
}

/// One run of `per_class` images of each class: (class balance, ECE, ACE, calibration error, accuracy).
fn run(model: &Model, per_class: usize, seed: u64) -> [f64; 5] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = per_class * K;
    let mut probs = vec![0f32; n * K];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let y = i / per_class;
        model.image(&mut rng, y, &mut probs[i * K..(i + 1) * K]);
        labels.push(y);
    }
    let (ece, ace) = metrics::ece_and_ace(&probs, K, &labels);
    let (_, correct) = metrics::top1(&probs, K, &labels);
    let acc = correct.iter().filter(|&&c| c).count() as f64 / n as f64;
    [metrics::class_balance(&probs, K, &labels), ece, ace, metrics::gmean(&[ece, ace]), acc]
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len().max(2) - 1) as f64).sqrt();
    (m, sd)
}

/// Replicates per size: enough that the mean's own noise is small against
/// the drift, fewer where a run holds 50 000 rows of 1 000 probabilities.
fn replicates(per_class: usize) -> usize {
    if per_class >= 20 {
        8
    } else {
        24
    }
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "docs/small-subsets".into());
    let model = Model::new(&mut ChaCha8Rng::seed_from_u64(2026));
    let names = ["class_balance", "ece", "ace", "calibration_error", "accuracy"];
    let mut rows = Vec::new();
    for (si, &pc) in PER_CLASS.iter().enumerate() {
        let values: Vec<[f64; 5]> = (0..replicates(pc)).map(|r| run(&model, pc, (si * 1000 + r) as u64)).collect();
        eprintln!("{pc} per class: {:?}", values[0]);
        rows.push((pc, values));
    }
    let full = &rows.last().expect("50 per class").1;
    let reference: Vec<f64> = (0..5).map(|m| mean_sd(&full.iter().map(|v| v[m]).collect::<Vec<_>>()).0).collect();
    let (_, cb_std) = Dimension::ClassBalance.paper_mean_std();
    let (_, ce_std) = Dimension::CalibrationError.paper_mean_std();
    let mut json_rows = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "| images per class | replicates | class balance | drift (study std) | calibration error | drift (study std) | ECE | ACE | accuracy |");
    let _ = writeln!(md, "|---:|---:|---|---:|---|---:|---:|---:|---:|");
    for (pc, values) in &rows {
        let ms: Vec<(f64, f64)> = (0..5).map(|m| mean_sd(&values.iter().map(|v| v[m]).collect::<Vec<_>>())).collect();
        let drift_cb = (ms[0].0 - reference[0]) / cb_std;
        let drift_ce = (ms[3].0 - reference[3]) / ce_std;
        let _ = writeln!(
            md,
            "| {pc} | {} | {:.4} ± {:.4} | {drift_cb:+.2} | {:.5} ± {:.5} | {drift_ce:+.2} | {:.4} | {:.4} | {:.3} |",
            values.len(),
            ms[0].0,
            ms[0].1,
            ms[3].0,
            ms[3].1,
            ms[1].0,
            ms[2].0,
            ms[4].0
        );
        json_rows.push(serde_json::json!({
            "per_class": pc,
            "drift_in_study_std": {"class_balance": drift_cb, "calibration_error": drift_ce},
            "replicates": values.iter().map(|v| names.iter().zip(v).map(|(k, x)| (k.to_string(), serde_json::json!(x))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        }));
    }
    // The smallest size from which on both drifts stay within half a std.
    let within = |row: &serde_json::Value| {
        let d = &row["drift_in_study_std"];
        d["class_balance"].as_f64().expect("drift").abs() <= 0.5 && d["calibration_error"].as_f64().expect("drift").abs() <= 0.5
    };
    let first_ok = json_rows.iter().rposition(|r| !within(r)).map_or(0, |i| i + 1);
    let threshold = json_rows.get(first_ok).map(|r| r["per_class"].clone()).unwrap_or(serde_json::Value::Null);
    let json = serde_json::json!({
        "min_per_class_within_half_std": threshold,
        "what": "class balance and calibration error of a simulated ImageNet-like model (crates/quba-host/examples/small_subsets.rs) at a number of images per class; drift = mean minus the mean at 50 per class, in units of the study's normalisation std",
        "classes": K,
        "study_std": {"class_balance": cb_std, "calibration_error": ce_std},
        "rows": json_rows,
    });
    std::fs::write(format!("{out}.json"), serde_json::to_string_pretty(&json).expect("json") + "\n").expect("write the json");
    let page = format!(
        "# Small subsets: how far class balance and calibration error drift\n\n\
         Written by `cargo run --release -p quba-host --example small_subsets -- docs/small-subsets`, with \
         the raw values of every replicate in `docs/small-subsets.json` (same run).\n\n\
         A simulated ImageNet-like model (1 000 classes, per-class difficulty, top-1 confidence \
         mean about 0.8, slightly over-confident; see the example's `Model`) evaluated with the report's own \
         metric code at n images per class. Drift is the mean over replicates minus the mean at 50 per \
         class (the study's ImageNet validation set), in units of the study's normalisation std \
         (class balance {cb_std:.5}, calibration error {ce_std:.6}): 1.0 moves a QUBA z-score by 1.\n\n{md}\n\
         From {threshold} images per class on, both drifts stay within half a std; `quba report` warns when \
         the study's constants normalise a run with fewer (`report::PAPER_MIN_PER_CLASS`, which a test \
         holds equal to this run's `min_per_class_within_half_std`).\n\n\
         What the table says:\n\n\
         - **Class balance drifts down** (worse) as images per class fall, by 1.1 study std at 5 per class. \
           Its first term is a standard deviation over per-class accuracies, and each per-class accuracy \
           of n images adds binomial noise to that spread. Its second term is a per-class standard deviation \
           of one or two values, which shrinks towards 0.\n\
         - **Calibration error drifts up** (worse): ECE and ACE sum absolute gaps, and the noise in each \
           bin's gap adds to them.\n\
         - Neither is settled at 50 per class either (class balance still moved 0.16 std from 30 to 50): \
           the study's own values carry the same kind of bias, at its one size. Comparing runs of equal \
           size (`quba compare`, cohort normalisation) cancels most of it; comparing a small run with the \
           study's constants does not.\n\
         - The drift depends on the model (its accuracy, its spread over classes, its confidence). This is \
           one plausible ImageNet model, not a correction to apply.\n"
    );
    std::fs::write(format!("{out}.md"), page).expect("write the page");
    print!("{md}");
}
