//! The numbers behind the quality dimensions that come from one pass of
//! softmax outputs: argmax/softmax (also used on the device), accuracy,
//! ECE, ACE, their geometric mean (the calibration-error dimension), class
//! balance, and the statistics the reports put around them (bootstrap
//! percentile intervals, Wilson intervals, Spearman's rho).
//!
//! Everything here is pure: no I/O, no model, no `host` feature. All sums
//! are accumulated in f64 whatever the input precision, so that the result
//! depends on the probabilities and not on the order of a 50 000-sample sum.
//!
//! Definitions follow docs/protocol.md ("The nine dimensions", items 5 and 6).
//! Where the study's own code (`visinf/beyond-accuracy`) is more specific
//! than docs/protocol.md — ACE's binning, mainly — we follow the study's code so
//! that our numbers sit on the same scale as its table; each such place says
//! so in a comment.


/// Index of the largest value; the first one on ties, and the first NaN if
/// there is one — the behaviour of `numpy.argmax` and `torch.argmax`, so a
/// saturated softmax (several exact 1.0s or 0.0s) resolves the same way
/// here as in the study's PyTorch code.
///
/// Panics on an empty slice: there is no class to return.
pub fn argmax(p: &[f32]) -> usize {
    assert!(!p.is_empty(), "argmax of an empty slice");
    let mut best = 0;
    for (i, &x) in p.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > p[best] {
            best = i;
        }
    }
    best
}

/// Softmax over `logits`, written back in place.
///
/// Subtracting the maximum keeps `exp` from overflowing for large logits;
/// the exponentials and their sum are taken in f64 so that a 1000-way sum
/// loses nothing before the final rounding to f32. Non-finite input (a NaN,
/// +inf, or all −inf) gives NaN everywhere, as torch's softmax does — a
/// broken model output should be visible, not quietly uniform.
pub fn softmax_in_place(logits: &mut [f32]) {
    if logits.is_empty() {
        return;
    }
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let mut sum = 0.0f64;
    for &x in logits.iter() {
        sum += (x as f64 - max).exp();
    }
    for x in logits.iter_mut() {
        *x = ((*x as f64 - max).exp() / sum) as f32;
    }
}

/// Fraction of `preds` equal to `labels`; NaN for no samples (there is no
/// accuracy of nothing, and NaN cannot be mistaken for a measurement).
pub fn accuracy(labels: &[usize], preds: &[usize]) -> f64 {
    assert_eq!(labels.len(), preds.len(), "accuracy: labels and predictions differ in length");
    if labels.is_empty() {
        return f64::NAN;
    }
    let hits = labels.iter().zip(preds).filter(|(l, p)| l == p).count();
    hits as f64 / labels.len() as f64
}

/// Bin of a confidence for ECE: bin `b` is `(b/B, (b+1)/B]`, with 0 (and
/// anything below) in bin 0 and 1.0 in the last bin.
///
/// Edges are compared as `k as f64 / B as f64` — the exact boundary test,
/// not `ceil(conf·B)`, whose product can round across an edge (0.6·15).
fn ece_bin(conf: f64, bins: usize) -> usize {
    if conf.is_nan() || conf <= 0.0 {
        return 0;
    }
    let b = bins as f64;
    let mut i = ((conf * b).ceil() as usize).saturating_sub(1).min(bins - 1);
    while i > 0 && conf <= i as f64 / b {
        i -= 1;
    }
    while i + 1 < bins && conf > (i + 1) as f64 / b {
        i += 1;
    }
    i
}

/// Expected calibration error (Naeini et al. 2015, Guo et al. 2017):
/// `Σ_b (n_b/N)·|acc_b − conf_b|` over `bins` equal-width bins on [0, 1].
///
/// `confidences` are the top-1 probabilities, `correct` whether the top-1
/// was right. Bin `b` is `(b/B, (b+1)/B]`; a confidence of 0 goes to bin 0
/// and one of exactly 1.0 to the last bin.
///
/// Differs from the study on purpose in one place: the study used
/// torchmetrics' `MulticlassCalibrationError`, whose bins are `[b/B,
/// (b+1)/B)` with a hidden extra bin holding every confidence of exactly 1.0
/// (torchmetrics issue 3510). docs/protocol.md puts 1.0 in the last bin, which
/// matters for saturated (e.g. int8) softmax outputs. Off the exact edges
/// k/15 (which float32 probabilities other than 0 and 1 essentially never
/// hit) both conventions give the same bins. NaN for no samples.
pub fn ece(confidences: &[f64], correct: &[bool], bins: usize) -> f64 {
    let bins = reliability_bins(confidences, correct, bins);
    let n = confidences.len();
    if n == 0 {
        return f64::NAN;
    }
    bins.iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.count as f64 / n as f64) * (b.accuracy - b.confidence).abs())
        .sum()
}

/// One equal-width confidence bin of ECE: what a reliability diagram draws.
#[derive(Clone, Debug, PartialEq)]
pub struct ReliabilityBin {
    /// The bin is `(lower, upper]` (bin 0 also holds a confidence of 0).
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean top-1 confidence of the bin's samples; NaN for an empty bin.
    pub confidence: f64,
    /// Fraction of the bin's samples whose top-1 was right; NaN for an empty bin.
    pub accuracy: f64,
}

/// The bins `ece` sums over, so a reliability diagram shows exactly the gaps
/// that make up the reported ECE.
pub fn reliability_bins(confidences: &[f64], correct: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    assert_eq!(confidences.len(), correct.len(), "ece: confidences and correctness differ in length");
    assert!(bins > 0, "ece needs at least one bin");
    let mut count = vec![0usize; bins];
    let mut sum_conf = vec![0.0f64; bins];
    let mut sum_hit = vec![0.0f64; bins];
    for (&c, &ok) in confidences.iter().zip(correct) {
        let b = ece_bin(c, bins);
        count[b] += 1;
        sum_conf[b] += c;
        sum_hit[b] += ok as u8 as f64;
    }
    (0..bins)
        .map(|b| {
            let nb = count[b] as f64;
            ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                confidence: if count[b] == 0 { f64::NAN } else { sum_conf[b] / nb },
                accuracy: if count[b] == 0 { f64::NAN } else { sum_hit[b] / nb },
            }
        })
        .collect()
}

/// Adaptive calibration error (Nixon et al. 2019), as the study computes it
/// (`helper/uncertainty.py`, `_GeneralCalibrationErrorMetric` with
/// `binning_scheme='adaptive', class_conditional=True, max_prob=False,
/// norm='l1', threshold=0`, called with `num_bins=15` in
/// `helper/benchmarks.py`). `probs` is row-major N×K, `labels` has N entries.
///
/// For each class k: the values `p[:, k] > 0` (the threshold; zeros and NaN
/// are dropped, so n varies per class) with targets `1[y = k]`; upper bin
/// edges are the sorted values at positions `round(linspace(0, n, bins,
/// endpoint=False))[1..]`, then 1.0; `error_k = Σ_b (n_b/n)·|mean t_b −
/// mean p_b|`. ACE is the mean of `error_k` over the classes the labels
/// hold — on the study's whole ImageNet val that is all K, and a class with
/// no positive probability counts as error 0 but still counts, as in the
/// study; on a subset, classes no label holds are left out (docs/protocol.md,
/// "Subsets").
///
/// Two details of the study's code that docs/protocol.md's wording leaves open,
/// both followed here because they move the number:
/// - values are binned with `numpy.digitize(p, upper_edges)` (`right=False`),
///   so a value *equal* to an upper edge goes to the bin *above* it; with
///   ties at an edge all of them move up together (bins are `[e_{b−1}, e_b)`,
///   not `(e_{b−1}, e_b]`);
/// - for the same reason a probability of exactly 1.0 (≥ the last edge) lands
///   in an extra, (bins+1)-th bin of its own rather than in the last bin. The
///   extra bin is weighted like any other, so saturated outputs change ACE.
/// - `numpy.round` rounds halves to even; with 15 bins `n·j/15` is never a
///   half, but for other bin counts we round the same way.
///
/// The study adds machine epsilon to each bin count before dividing; that
/// changes nothing beyond the 15th digit and is not copied. NaN for no
/// samples (the study would return 0).
pub fn ace(probs: &[f32], num_classes: usize, labels: &[usize], bins: usize) -> f64 {
    let k = num_classes;
    assert!(k > 0, "ace needs at least one class");
    assert!(bins > 0, "ace needs at least one bin");
    assert_eq!(probs.len(), labels.len() * k, "ace: probs is not N×K");
    assert!(labels.iter().all(|&y| y < k), "ace: a label is outside 0..num_classes");
    let n = labels.len();
    if n == 0 {
        return f64::NAN;
    }
    let mut col: Vec<(f64, bool)> = Vec::with_capacity(n);
    let mut upper = Vec::with_capacity(bins);
    // bins + 1 slots: the last one is the study's extra bin for p ≥ 1.0.
    let mut count = vec![0usize; bins + 1];
    let mut sum_p = vec![0.0f64; bins + 1];
    let mut sum_t = vec![0.0f64; bins + 1];
    let mut total = 0.0f64;
    // The mean runs over the classes the labels hold. On a whole benchmark
    // (the study's ImageNet val) that is every class; on a subset (4 of
    // ImageNet's 1000) an absent class has no positives, its error is only
    // its mean probability, and dividing by 1000 would shrink the present
    // classes' errors 250-fold.
    let mut present = vec![false; k];
    for &y in labels {
        present[y] = true;
    }
    for class in (0..k).filter(|&c| present[c]) {
        col.clear();
        for (i, &y) in labels.iter().enumerate() {
            let p = probs[i * k + class];
            if p > 0.0 {
                col.push((p as f64, y == class));
            }
        }
        if col.is_empty() {
            continue;
        }
        col.sort_by(|a, b| a.0.total_cmp(&b.0));
        let m = col.len();
        adaptive_upper_edges(&col, bins, &mut upper);
        count.iter_mut().for_each(|c| *c = 0);
        sum_p.iter_mut().for_each(|s| *s = 0.0);
        sum_t.iter_mut().for_each(|s| *s = 0.0);
        // Sorted values against non-decreasing edges: the digitize index
        // (number of edges ≤ value) only ever grows, so one walk suffices.
        let mut b = 0;
        for &(p, t) in &col {
            while b < upper.len() && upper[b] <= p {
                b += 1;
            }
            count[b] += 1;
            sum_p[b] += p;
            sum_t[b] += t as u8 as f64;
        }
        let mut err = 0.0;
        for b in 0..=bins {
            if count[b] == 0 {
                continue;
            }
            let nb = count[b] as f64;
            err += (nb / m as f64) * (sum_t[b] / nb - sum_p[b] / nb).abs();
        }
        total += err;
    }
    total / present.iter().filter(|&&p| p).count() as f64
}

/// Upper edges for equal-mass bins over sorted `col` (non-empty): the values
/// at `round_half_even(j · m/bins)` for j = 1..bins, clamped to m−1, then 1.0.
/// `j · (m/bins)` rather than `j·m/bins` because that is how numpy's
/// `linspace` forms the positions, and the rounding must see the same float.
fn adaptive_upper_edges(col: &[(f64, bool)], bins: usize, upper: &mut Vec<f64>) {
    let m = col.len();
    let step = m as f64 / bins as f64;
    upper.clear();
    for j in 1..bins {
        let idx = (j as f64 * step).round_ties_even() as usize;
        upper.push(col[idx.min(m - 1)].0);
    }
    upper.push(1.0);
}

/// The calibration-error dimension: `gmean(ECE, ACE)`, 15 bins each, from
/// row-major N×K probabilities. The ECE confidence is the top-1 probability
/// and correctness is `argmax == label`, as torchmetrics does it.
pub fn calibration_error(probs: &[f32], num_classes: usize, labels: &[usize]) -> f64 {
    let (e, a) = ece_and_ace(probs, num_classes, labels);
    gmean(&[e, a])
}

/// ECE and ACE (15 bins each) of row-major N×K probabilities: the two parts
/// of the calibration-error dimension, for callers that report them too.
pub fn ece_and_ace(probs: &[f32], num_classes: usize, labels: &[usize]) -> (f64, f64) {
    let (conf, correct) = top1(probs, num_classes, labels);
    (ece(&conf, &correct, ECE_BINS), ace(probs, num_classes, labels, ECE_BINS))
}

/// The study's bin count for ECE and ACE.
pub const ECE_BINS: usize = 15;

/// Top-1 confidence and whether the top-1 was right, per row of row-major
/// N×K probabilities: ECE's inputs, as torchmetrics forms them.
pub fn top1(probs: &[f32], num_classes: usize, labels: &[usize]) -> (Vec<f64>, Vec<bool>) {
    let k = num_classes;
    assert_eq!(probs.len(), labels.len() * k, "calibration_error: probs is not N×K");
    probs.chunks_exact(k).zip(labels).map(|(row, &y)| {
        let p = argmax(row);
        (row[p] as f64, p == y)
    }).unzip()
}

/// Class balance (docs/protocol.md item 6): `gmean(1 − std_k(acc_k), 1 −
/// mean_k(std(p_true | y = k)))`.
///
/// The first term is the sample standard deviation (n − 1, as `torch.std`)
/// of the per-class top-1 accuracies; the second the mean over classes of the
/// population standard deviation (as `numpy.std`) of the probability given
/// to the true class. Predictions are the argmax of `probs` (the study took
/// the argmax of the logits, the same class except where float32 softmax
/// saturates two logits to the same probability).
///
/// Classes with no samples are left out of both terms. The study's
/// confidence term already did that; its accuracy term would divide 0 by 0
/// and return NaN, which on a class-stratified subset (or a 16-class
/// benchmark evaluated on fewer classes) would be useless. With fewer than
/// two classes present there is no spread to measure: NaN.
pub fn class_balance(probs: &[f32], num_classes: usize, labels: &[usize]) -> f64 {
    let k = num_classes;
    assert!(k > 0, "class_balance needs at least one class");
    assert_eq!(probs.len(), labels.len() * k, "class_balance: probs is not N×K");
    assert!(labels.iter().all(|&y| y < k), "class_balance: a label is outside 0..num_classes");
    let mut n = vec![0usize; k];
    let mut hits = vec![0usize; k];
    let mut sum_pt = vec![0.0f64; k];
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        n[y] += 1;
        hits[y] += (argmax(row) == y) as usize;
        sum_pt[y] += row[y] as f64;
    }
    // Second pass for the spread: deviations from the mean rather than
    // E[x²] − E[x]², which cancels badly when p_true sits near 1.
    let mean_pt: Vec<f64> = (0..k).map(|c| if n[c] > 0 { sum_pt[c] / n[c] as f64 } else { 0.0 }).collect();
    let mut sq = vec![0.0f64; k];
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        let d = row[y] as f64 - mean_pt[y];
        sq[y] += d * d;
    }
    let present: Vec<usize> = (0..k).filter(|&c| n[c] > 0).collect();
    if present.len() < 2 {
        return f64::NAN;
    }
    let accs: Vec<f64> = present.iter().map(|&c| hits[c] as f64 / n[c] as f64).collect();
    let acc_mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let acc_var = accs.iter().map(|a| (a - acc_mean) * (a - acc_mean)).sum::<f64>() / (accs.len() - 1) as f64;
    let conf_std_mean = present.iter().map(|&c| (sq[c] / n[c] as f64).sqrt()).sum::<f64>() / present.len() as f64;
    gmean(&[1.0 - conf_std_mean, 1.0 - acc_var.sqrt()])
}

/// Geometric mean as `scipy.stats.gmean` computes it, `exp(mean(ln x))`:
/// 0 if any value is 0, NaN if any is negative (or NaN), NaN for no values.
pub fn gmean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    // ln(negative) is NaN and poisons the sum, ln(0) = −inf gives exp → 0;
    // checking negatives first keeps "0 and a negative" NaN, not 0.
    if values.iter().any(|&v| v < 0.0 || v.is_nan()) {
        return f64::NAN;
    }
    let s: f64 = values.iter().map(|v| v.ln()).sum();
    (s / values.len() as f64).exp()
}

/// numpy's default ("linear") quantile of sorted, non-empty `xs`, including
/// its two-sided lerp, so our interval endpoints match `np.percentile` to the
/// last bit rather than to a rounding.
pub fn quantile_sorted(xs: &[f64], q: f64) -> f64 {
    let n = xs.len();
    let virt = (n - 1) as f64 * q;
    let lo = (virt.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let t = virt - lo as f64;
    let (a, b) = (xs[lo], xs[hi]);
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// Shape bias on cue-conflict decisions (docs/protocol.md, dimension 8): images
/// whose shape and texture categories agree are dropped; of the rest, the
/// fraction of shape decisions among shape-or-texture decisions. Returns
/// (shape bias, shape hits, texture hits, images kept); the bias is NaN when
/// no decision hit either cue.
pub fn shape_bias(shape: &[u16], texture: &[u16], prediction: &[u16]) -> (f64, usize, usize, usize) {
    let (mut s, mut t, mut kept) = (0, 0, 0);
    for ((&a, &b), &p) in shape.iter().zip(texture).zip(prediction) {
        if a == b {
            continue;
        }
        kept += 1;
        s += (p == a) as usize;
        t += (p == b) as usize;
    }
    let bias = if s + t == 0 { f64::NAN } else { s as f64 / (s + t) as f64 };
    (bias, s, t, kept)
}

/// 1-based ranks with ties given their average rank (scipy's `rankdata`
/// default), so tied dimensions do not get an arbitrary order.
fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share ranks i+1..=j+1: their mean.
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation: Pearson's r of the average ranks (as
/// `scipy.stats.spearmanr`). None with fewer than 3 pairs (no meaningful
/// correlation), when either side has no spread, or when a value is not
/// finite. Panics if the two slices differ in length (a caller bug).
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "spearman: the two samples differ in length");
    if a.len() < 3 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return None;
    }
    // Rounding can push |r| a hair past 1 for perfectly (anti-)monotone data.
    Some((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// Two-sided 95% Wilson score interval for `successes` out of `n` (the
/// formula of statsmodels' `proportion_confint(method="wilson")`). Unlike
/// the normal approximation it stays inside [0, 1] and is not zero-width at
/// 0 % or 100 %, which matters for small per-board samples. With n = 0 there
/// is no information: (0, 1).
pub fn wilson(successes: usize, n: usize) -> (f64, f64) {
    assert!(successes <= n, "wilson: more successes than trials");
    if n == 0 {
        return (0.0, 1.0);
    }
    // Φ⁻¹(0.975), as scipy.stats.norm.ppf(0.975) prints it.
    const Z: f64 = 1.959963984540054;
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = Z * Z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = Z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    // At 0 and n successes the bounds are exactly 0 and 1 in exact
    // arithmetic; floating point lands a hair inside, which would print as
    // an upper bound of 99.99… % for a perfect score.
    let lo = if successes == 0 { 0.0 } else { (center - half).max(0.0) };
    let hi = if successes == n { 1.0 } else { (center + half).min(1.0) };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {
            assert_close!($a, $b, 1e-12)
        };
        ($a:expr, $b:expr, $tol:expr) => {{
            let (a, b) = ($a, $b);
            assert!(close(a, b, $tol), "{} = {a}, expected {b} (±{})", stringify!($a), $tol);
        }};
    }

    // ---- argmax / softmax / accuracy -------------------------------------

    #[test]
    fn argmax_takes_first_of_ties_and_first_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        // Ties: numpy/torch return the first maximum.
        assert_eq!(argmax(&[0.5, 0.5, 0.0]), 0);
        assert_eq!(argmax(&[0.0, 1.0, 1.0]), 1);
        // NaN wins, as in numpy.argmax.
        assert_eq!(argmax(&[0.3, f32::NAN, 0.9]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0]), 1);
    }

    #[test]
    #[should_panic(expected = "empty")]
    fn argmax_of_nothing_panics() {
        argmax(&[]);
    }

    #[test]
    fn softmax_matches_hand_values_and_is_shift_invariant() {
        // [0, ln 3] → e^0 : e^ln3 = 1 : 3 → [0.25, 0.75].
        let mut v = [0.0f32, 3f32.ln()];
        softmax_in_place(&mut v);
        assert_close!(v[0] as f64, 0.25, 1e-7);
        assert_close!(v[1] as f64, 0.75, 1e-7);
        // Logits of 1000 would overflow exp without the max shift; the
        // result must equal that of [0, ln 3].
        let mut w = [1000.0f32, 1000.0 + 3f32.ln()];
        softmax_in_place(&mut w);
        assert_close!(w[0] as f64, 0.25, 1e-4); // f32 spacing at 1000 is 6e-5
        // Uniform logits → 1/K each; sums to 1.
        let mut u = [2.0f32; 4];
        softmax_in_place(&mut u);
        assert!(u.iter().all(|&x| x == 0.25));
        // Huge gap saturates to exactly 1.0 and 0.0, like float32 torch.
        let mut s = [0.0f32, 200.0];
        softmax_in_place(&mut s);
        assert_eq!(s, [0.0, 1.0]);
        let mut e: [f32; 0] = [];
        softmax_in_place(&mut e);
    }

    #[test]
    fn softmax_of_nan_or_all_neg_inf_is_nan() {
        let mut a = [1.0f32, f32::NAN];
        softmax_in_place(&mut a);
        assert!(a.iter().all(|x| x.is_nan()));
        let mut b = [f32::NEG_INFINITY; 3];
        softmax_in_place(&mut b);
        assert!(b.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn accuracy_counts_matches() {
        assert_close!(accuracy(&[0, 1, 2, 3], &[0, 1, 0, 0]), 0.5);
        assert!(accuracy(&[], &[]).is_nan());
    }

    // ---- ECE ---------------------------------------------------------------

    #[test]
    fn ece_single_bin() {
        // All four at 0.95 → bin 14; acc 3/4, conf 0.95 → |0.75 − 0.95| = 0.2.
        assert_close!(ece(&[0.95; 4], &[true, true, true, false], 15), 0.2);
    }

    #[test]
    fn ece_two_bins_weighted_by_count() {
        // 0.3 → bin 4 (4/15, 5/15]: acc 1/2, conf 0.3 → 0.2·(2/4) = 0.1.
        // 0.9 → bin 13 (13/15, 14/15]: acc 1, conf 0.9 → 0.1·(2/4) = 0.05.
        assert_close!(ece(&[0.3, 0.3, 0.9, 0.9], &[false, true, true, true], 15), 0.15);
    }

    #[test]
    fn ece_puts_exactly_one_in_the_last_bin() {
        // 1.0 and 0.95 share bin 14 (14/15, 1]: acc 1/2, conf 0.975 →
        // |0.5 − 0.975| = 0.475. torchmetrics' hidden 16th bin would give
        // 0.5·|1 − 0.95| + 0.5·|0 − 1| = 0.525 instead (issue 3510).
        assert_close!(ece(&[1.0, 0.95], &[false, true], 15), 0.475);
    }

    #[test]
    fn ece_bins_are_closed_on_the_right() {
        // 0.2 = 3/15 belongs to bin 2 (2/15, 3/15], 0.21 to bin 3:
        // 0.5·|1 − 0.2| + 0.5·|0 − 0.21| = 0.4 + 0.105 = 0.505. Were 0.2 in
        // bin 3 with 0.21 it would be |0.5 − 0.205| = 0.295.
        assert_close!(ece(&[0.2, 0.21], &[true, false], 15), 0.505);
        // Zero goes to bin 0 together with 0.05: acc 1/2, conf 0.025 → 0.475.
        assert_close!(ece(&[0.0, 0.05], &[true, false], 15), 0.475);
    }

    #[test]
    fn reliability_bins_hold_what_ece_sums() {
        // 0.3 → bin 4 with one hit of two; 0.9 → bin 13 with two hits; 1.0 → bin 14.
        let b = reliability_bins(&[0.3, 0.3, 0.9, 0.9, 1.0], &[false, true, true, true, false], 15);
        assert_eq!(b.len(), 15);
        assert_eq!(b.iter().map(|x| x.count).collect::<Vec<_>>(), [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1]);
        assert_close!(b[4].accuracy, 0.5);
        assert_close!(b[4].confidence, 0.3);
        assert_close!(b[13].upper, 14.0 / 15.0);
        assert_close!(b[14].accuracy, 0.0);
        assert!(b[0].accuracy.is_nan() && b[0].confidence.is_nan());
        // ECE is their count-weighted gap: (2·0.2 + 2·0.1 + 1·1.0) / 5.
        assert_close!(ece(&[0.3, 0.3, 0.9, 0.9, 1.0], &[false, true, true, true, false], 15), 1.6 / 5.0);
    }

    #[test]
    fn ece_bin_edges_are_exact() {
        for b in [1usize, 2, 10, 15, 100] {
            for k in 0..=b {
                let edge = k as f64 / b as f64;
                // An edge belongs to the bin below it (0 to bin 0).
                assert_eq!(ece_bin(edge, b), k.saturating_sub(1), "edge {k}/{b}");
                if k < b {
                    let above = f64::from_bits(edge.to_bits() + 1);
                    assert_eq!(ece_bin(above, b), k, "just above {k}/{b}");
                }
            }
        }
        assert_eq!(ece_bin(-0.5, 15), 0);
        assert_eq!(ece_bin(1.5, 15), 14);
    }

    #[test]
    fn ece_of_a_perfectly_calibrated_set_is_zero() {
        // 10 at 0.8 with 8 right, 10 at 0.5 with 5 right → every bin exact.
        let conf: Vec<f64> = [0.8; 10].iter().chain(&[0.5; 10]).copied().collect();
        let correct: Vec<bool> = (0..20).map(|i| if i < 10 { i < 8 } else { i < 15 }).collect();
        assert_close!(ece(&conf, &correct, 15), 0.0);
        assert!(ece(&[], &[], 15).is_nan());
    }

    // ---- ACE ---------------------------------------------------------------

    #[test]
    fn ace_two_classes_two_bins() {
        // Rows [.9,.1] [.8,.2] [.3,.7] [.4,.6], labels 0 1 1 0, 2 bins.
        // Class 0: sorted .3(t0) .4(t1) .8(t0) .9(t1); positions
        //   round(linspace(0,4,2,endpoint=False)) = [0,2] → upper [.8, 1.0];
        //   .8 equals the edge → upper bin. Bin0 {.3,.4}: |.5 − .35|·2/4 = .075;
        //   bin1 {.8,.9}: |.5 − .85|·2/4 = .175 → .25.
        // Class 1: sorted .1(t0) .2(t1) .6(t0) .7(t1); upper [.6, 1.0].
        //   Bin0: |.5 − .15|·.5 = .175; bin1: |.5 − .65|·.5 = .075 → .25.
        // ACE = (.25 + .25)/2 = .25 (f32 inputs: tolerance 1e-6).
        let p = [0.9f32, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6];
        assert_close!(ace(&p, 2, &[0, 1, 1, 0], 2), 0.25, 1e-6);
    }

    #[test]
    fn ace_averages_over_the_classes_present() {
        // The two-class case above (ACE .25) with a third class that no
        // label holds, whatever probability it gets: still .25, not the
        // .25·2/3 of a mean over every output class.
        let p = [0.9f32, 0.1, 0.0, 0.8, 0.2, 0.0, 0.3, 0.7, 0.0, 0.4, 0.6, 0.0];
        assert_close!(ace(&p, 3, &[0, 1, 1, 0], 2), 0.25, 1e-6);
        let q = [0.8f32, 0.1, 0.1, 0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.3, 0.6, 0.1];
        let two = [0.8f32, 0.1, 0.7, 0.2, 0.2, 0.7, 0.3, 0.6];
        assert_close!(ace(&q, 3, &[0, 1, 1, 0], 2), ace(&two, 2, &[0, 1, 1, 0], 2), 1e-12);
    }

    #[test]
    fn ace_ties_at_an_edge_all_go_up() {
        // Rows [.5,.5] ×3 then [.9,.1]; labels 0 1 1 0; 2 bins.
        // Class 0: sorted .5 .5 .5 .9, positions [0,2] → upper [.5, 1.0]:
        //   every .5 is ≥ the edge (numpy.digitize, right=False), so all four
        //   share bin 1: |mean t − mean p| = |.5 − .6| = .1.
        //   (Putting the .5s below the edge would give .125 + .025 = .15.)
        // Class 1: sorted .1 .5 .5 .5 (targets 0,0,1,1 → .1 has t0, the .5s
        //   have t 0,1,1), upper [.5, 1.0]: bin0 {.1}: |0 − .1|·1/4 = .025;
        //   bin1 {.5×3}: |2/3 − .5|·3/4 = .125 → .15.
        // ACE = (.1 + .15)/2 = .125.
        let p = [0.5f32, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1];
        assert_close!(ace(&p, 2, &[0, 1, 1, 0], 2), 0.125, 1e-6);
    }

    #[test]
    fn ace_gives_one_its_own_bin_and_drops_zeros() {
        // Rows [1,0] [.7,.3] [.6,.4] [.2,.8]; labels 1 0 0 1; 2 bins.
        // Class 0: sorted .2(t0) .6(t1) .7(t1) 1.0(t0); positions [0,2] →
        //   upper [.7, 1.0]; 1.0 ≥ the last edge → extra bin 2.
        //   Bin0 {.2,.6}: |.5 − .4|·2/4 = .05; bin1 {.7}: |1 − .7|·1/4 = .075;
        //   bin2 {1.0}: |0 − 1|·1/4 = .25 → .375.
        //   (Folding 1.0 into bin 1 would give .05 + |.5 − .85|·.5 = .225.)
        // Class 1: the 0.0 is below the threshold and dropped: n = 3, sorted
        //   .3(t0) .4(t0) .8(t1); positions round([0, 1.5]) = [0, 2] →
        //   upper [.8, 1.0]. Bin0 {.3,.4}: |0 − .35|·2/3 = .2333…;
        //   bin1 {.8}: |1 − .8|·1/3 = .0666… → .3.
        // ACE = (.375 + .3)/2 = .3375.
        let p = [1.0f32, 0.0, 0.7, 0.3, 0.6, 0.4, 0.2, 0.8];
        assert_close!(ace(&p, 2, &[1, 0, 0, 1], 2), 0.3375, 1e-6);
    }

    #[test]
    fn ace_class_without_positive_probability_counts_as_zero() {
        // Rows [.9,.1,0] [.8,.2,0] [.3,.7,0] [.4,.6,0] [.5,.5,0], labels
        // 0 1 1 0 2, 2 bins. Class 2 is labelled once but has p = 0
        // everywhere → error 0, and it still divides.
        // Class 0: sorted .3(t0) .4(t1) .5(t0) .8(t0) .9(t1); positions
        //   round(linspace(0,5,2,endpoint=False)) = [0, 2] (2.5 to even) →
        //   upper [.5, 1.0]. Bin0 {.3,.4}: |.5 − .35|·2/5 = .06; bin1
        //   {.5,.8,.9}: |1/3 − .7333|·3/5 = .24 → .30.
        // Class 1: sorted .1(t0) .2(t1) .5(t0) .6(t0) .7(t1); upper [.5, 1.0].
        //   Bin0: |.5 − .15|·2/5 = .14; bin1: |1/3 − .6|·3/5 = .16 → .30.
        // ACE = (.30 + .30 + 0)/3 = .2.
        let p = [0.9f32, 0.1, 0.0, 0.8, 0.2, 0.0, 0.3, 0.7, 0.0, 0.4, 0.6, 0.0, 0.5, 0.5, 0.0];
        assert_close!(ace(&p, 3, &[0, 1, 1, 0, 2], 2), 0.2, 1e-6);
        assert!(ace(&[], 3, &[], 15).is_nan());
    }

    #[test]
    fn ace_of_uniform_balanced_predictions_is_zero() {
        // 30 rows of [.5,.5], labels alternating: each class has 30 values of
        // .5 with mean target .5; all land in one bin → error 0.
        let p = vec![0.5f32; 60];
        let y: Vec<usize> = (0..30).map(|i| i % 2).collect();
        assert_close!(ace(&p, 2, &y, 15), 0.0);
    }

    #[test]
    fn adaptive_edges_round_half_to_even() {
        // m = 5, 2 bins: positions linspace(0,5,2,endpoint=False) = [0, 2.5];
        // numpy.round(2.5) = 2 (half to even), so the edge is the 3rd value.
        let col: Vec<(f64, bool)> = [0.1, 0.2, 0.3, 0.4, 0.5].iter().map(|&v| (v, false)).collect();
        let mut up = Vec::new();
        adaptive_upper_edges(&col, 2, &mut up);
        assert_eq!(up, vec![0.3, 1.0]);
        // m = 7, 2 bins: 3.5 → 4 → 5th value.
        let col7: Vec<(f64, bool)> = (1..=7).map(|v| (v as f64 / 10.0, false)).collect();
        adaptive_upper_edges(&col7, 2, &mut up);
        assert_eq!(up, vec![0.5, 1.0]);
        // More bins than points: positions clamp to the last value.
        adaptive_upper_edges(&col[..2], 4, &mut up);
        // linspace(0,2,4,endpoint=False) = [0,.5,1,1.5] → round [0,0,1,2] → clamp [0,0,1,1].
        assert_eq!(up, vec![0.1, 0.2, 0.2, 1.0]);
    }

    /// The deterministic 47×3 case below: r_k = ((7i + 13k) mod 11) + 1,
    /// p_k = r_k / Σr in float32 (IEEE division, so numpy's float32 gives the
    /// same bits); every 10th row is one-hot on class i mod 3 (exact 0s and
    /// 1s); label = (5i + 1) mod 3.
    fn study_case() -> (Vec<f32>, Vec<usize>) {
        let (n, k) = (47usize, 3usize);
        let mut p = Vec::with_capacity(n * k);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            if i % 10 == 0 {
                p.extend((0..k).map(|c| if c == i % 3 { 1.0f32 } else { 0.0 }));
            } else {
                let r: Vec<u32> = (0..k).map(|c| ((7 * i + 13 * c) % 11) as u32 + 1).collect();
                let s: u32 = r.iter().sum();
                p.extend(r.iter().map(|&v| v as f32 / s as f32));
            }
            y.push((5 * i + 1) % 3);
        }
        (p, y)
    }

    #[test]
    fn ace_matches_the_studys_code_on_a_ragged_case() {
        // Expected value from running the study's own metric
        // (visinf/beyond-accuracy helper/uncertainty.py,
        // _GeneralCalibrationErrorMetric(binning_scheme='adaptive',
        // threshold=0, class_conditional=True, max_prob=False, norm='l1',
        // num_bins=15).update_state(labels, probs), numpy 2.4) on
        // study_case(): n = 47 is not a multiple of 15, values tie, and
        // there are exact 0s and 1s.
        let (p, y) = study_case();
        assert_close!(ace(&p, 3, &y, 15), ACE_STUDY_CASE, 1e-12);
        // The hand cases above, re-run through the study's code: with 2 bins
        // it gives .25, .125, .3375 (to float32 rounding of the inputs), and
        // with 15 bins 0.45000000949949026, 0.15000000316649675 and
        // 0.3874999998758236 — the last two pinned here.
        let ties = [0.5f32, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1];
        assert_close!(ace(&ties, 2, &[0, 1, 1, 0], 15), 0.15000000316649675, 1e-12);
        let ones = [1.0f32, 0.0, 0.7, 0.3, 0.6, 0.4, 0.2, 0.8];
        assert_close!(ace(&ones, 2, &[1, 0, 0, 1], 15), 0.3874999998758236, 1e-12);
    }
    const ACE_STUDY_CASE: f64 = 0.16664913142069787;

    // ---- class balance / gmean / calibration_error ------------------------

    /// Six rows over three classes (see class_balance_by_hand).
    const CB_P: [f32; 18] = [
        0.7, 0.2, 0.1, // y0, right, p_true .7
        0.4, 0.5, 0.1, // y0, wrong, p_true .4
        0.1, 0.8, 0.1, // y1, right, .8
        0.2, 0.6, 0.2, // y1, right, .6
        0.3, 0.3, 0.4, // y2, right, .4
        0.1, 0.1, 0.8, // y2, right, .8
    ];
    const CB_Y: [usize; 6] = [0, 0, 1, 1, 2, 2];

    #[test]
    fn class_balance_by_hand() {
        // Per-class accuracy [.5, 1, 1]: mean 5/6, squared deviations
        // 1/9 + 1/36 + 1/36 = 1/6, /(3−1) → 1/12, sqrt → 0.28867513459481287.
        // Population std of p_true: {.7,.4} → .15, {.8,.6} → .1, {.4,.8} → .2;
        // mean .15. gmean(1 − .28867513459481287, .85)
        // = sqrt(.7113248654051871 · .85) = 0.7775770930231992 (Python, exact
        // decimal inputs; the f32-rounded inputs move it by ~1e-8, and numpy
        // on the same float32 array gives 0.77757710).
        assert_close!(class_balance(&CB_P, 3, &CB_Y), 0.7775770930231992, 1e-7);
    }

    #[test]
    fn class_balance_skips_absent_classes() {
        // A fourth class with no samples (and p = 0 in every row) changes
        // nothing.
        let p4: Vec<f32> = CB_P.chunks(3).flat_map(|r| [r[0], r[1], r[2], 0.0]).collect();
        assert_close!(class_balance(&p4, 4, &CB_Y), 0.7775770930231992, 1e-7);
        // One class present → no spread to measure.
        assert!(class_balance(&CB_P[..6], 3, &CB_Y[..2]).is_nan());
    }

    #[test]
    fn class_balance_of_a_perfectly_even_model_is_one() {
        // Every class 100 % right with p_true constant within class → both
        // spreads 0 → gmean(1, 1) = 1.
        let p = [0.9f32, 0.1, 0.9, 0.1, 0.2, 0.8, 0.2, 0.8];
        assert_close!(class_balance(&p, 2, &[0, 0, 1, 1]), 1.0);
    }

    #[test]
    fn gmean_edge_cases() {
        assert_close!(gmean(&[4.0, 9.0]), 6.0);
        assert_close!(gmean(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(gmean(&[0.0, 3.0]), 0.0);
        assert!(gmean(&[-1.0, 3.0]).is_nan());
        assert!(gmean(&[-1.0, 0.0]).is_nan());
        assert!(gmean(&[f64::NAN, 1.0]).is_nan());
        assert!(gmean(&[]).is_nan());
    }

    #[test]
    fn calibration_error_is_gmean_of_ece_and_ace() {
        // ace_two_classes_two_bins' rows with 15 bins.
        // ECE: predictions 0,0,1,1 vs labels 0,1,1,0 → confidences .9 (right),
        //   .8 (wrong), .7 (right), .6 (wrong), each alone in its bin:
        //   (.1 + .8 + .3 + .6)/4 = .45.
        // ACE, 15 bins, n = 4 per class: positions round(j·4/15), j = 1..14
        //   = [0,1,1,1,1,2,2,2,2,3,3,3,3,4→3] … the edges are sorted values, so
        //   class 0 (sorted .3 .4 .8 .9, t 0 1 0 1) puts each value alone in a
        //   bin: (.3 + .6 + .8 + .1)/4 = .45; class 1 (sorted .1 .2 .6 .7,
        //   t 0 1 0 1): (.1 + .8 + .6 + .3)/4 = .45. ACE = .45.
        // gmean(.45, .45) = .45.
        let p = [0.9f32, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6];
        let y = [0, 1, 1, 0];
        let conf: Vec<f64> = p.chunks(2).map(|r| r[argmax(r)] as f64).collect();
        let ok: Vec<bool> = p.chunks(2).zip(&y).map(|(r, &l)| argmax(r) == l).collect();
        assert_close!(ece(&conf, &ok, 15), 0.45, 1e-6);
        assert_close!(ace(&p, 2, &y, 15), 0.45, 1e-6);
        assert_close!(calibration_error(&p, 2, &y), 0.45, 1e-6);
    }

    // ---- bootstrap / spearman / wilson ------------------------------------

    #[test]
    fn quantile_matches_numpy_linear() {
        // np.percentile([1,2,3,4], [2.5, 97.5]) = [1.075, 3.925]:
        // virtual index 3·0.025 = 0.075 → 1 + 0.075·1; 3·0.975 = 2.925 → 3.925.
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_close!(quantile_sorted(&xs, 0.025), 1.075);
        assert_close!(quantile_sorted(&xs, 0.975), 3.925);
        assert_eq!(quantile_sorted(&[7.0], 0.975), 7.0);
        assert_eq!(quantile_sorted(&xs, 0.0), 1.0);
        assert_eq!(quantile_sorted(&xs, 1.0), 4.0);
    }

    #[test]
    fn spearman_hand_cases() {
        // Perfectly monotone (not linear) → 1; reversed → −1.
        assert_close!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 4.0, 9.0, 100.0]).unwrap(), 1.0);
        assert_close!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0);
        // a = [1,2,3,4,5], b = [2,1,4,3,5]: d = [−1,1,−1,1,0], Σd² = 4,
        // 1 − 6·4/(5·24) = 0.8.
        assert_close!(spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 5.0]).unwrap(), 0.8);
        // Ties: b = [1,1,2,3] → ranks [1.5,1.5,3,4]; a ranks [1,2,3,4].
        // Centered: a [−1.5,−.5,.5,1.5], b [−1,−1,.5,1.5]; Σab = 1.5+.5+.25+2.25
        // = 4.5, Σa² = 5, Σb² = 4.5 → 4.5/sqrt(22.5) = 0.9486832980505138.
        assert_close!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 3.0]).unwrap(), 0.9486832980505138);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn average_ranks_hand_case() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 30.0, 10.0]), vec![2.0, 4.0, 2.0, 5.0, 2.0]);
    }

    #[test]
    fn wilson_hand_cases() {
        // 5/10: z² = 3.841458820694124, denom = 1.3841458820694124,
        // center = (.5 + .19207294103470620)/denom = .5,
        // half = z·sqrt(.025 + z²/400)/denom = 0.26340726 → [0.23659, 0.76341]
        // (statsmodels: 0.2365931, 0.7634069).
        let (lo, hi) = wilson(5, 10);
        assert_close!(lo, 0.2365931, 1e-6);
        assert_close!(hi, 0.7634069, 1e-6);
        // 0/10: lower bound exactly 0, upper z²/(n+z²) = 0.27753279.
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert_close!(hi, 3.841458820694124 / 13.841458820694124, 1e-12);
        let (lo, hi) = wilson(10, 10);
        assert_close!(lo, 10.0 / 13.841458820694124, 1e-12);
        assert_eq!(hi, 1.0);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
