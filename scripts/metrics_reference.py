"""Independent numpy reference for ECE, ACE and class balance.

Written from the definitions, not from our Rust code, so the parity test
(tests/it/metrics_parity.rs) compares two implementations:

- ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks"; docs/protocol.md
  item 5): confidence = max probability, prediction = first argmax; 15
  equal-width bins, bin b = (b/15, (b+1)/15]; a confidence of exactly 0 goes to
  bin 0 and exactly 1.0 to the last bin (docs/protocol.md, against torchmetrics'
  hidden extra bin, torchmetrics issue 3510). ECE = sum_b (n_b/N)|acc_b - conf_b|.
- ACE (Nixon et al. 2019, "Measuring Calibration in Deep Learning";
  docs/protocol.md item 5): class-conditional, adaptive bins, 15 bins, L1,
  threshold 0, as the study computes it (its helper/uncertainty.py, a copy of
  the uncertainty-metrics GeneralCalibrationError): for each class k, the
  probabilities p[:, k] > 0 with targets 1[y = k]; upper bin edges are the
  sorted values at positions round(linspace(0, n, 15, endpoint=False)) without
  the first, then 1.0; a value is assigned with numpy.digitize (a value equal to
  an edge goes to the bin above, and a probability of exactly 1.0 lands in a
  16th bin of its own — the study's behaviour, kept). error_k = sum_b
  (n_b/n)|mean(target)_b - mean(p)_b|; ACE = mean over all K classes (a class
  with no positive probability contributes 0).
- Class balance (docs/protocol.md item 6): gmean(1 - std(acc_k, ddof=1),
  1 - mean_k std(p_true | y = k, ddof=0)) over the classes that have samples.

Usage:
  python scripts/metrics_reference.py --make-fixture tests/data/metrics_parity.json
  python scripts/metrics_reference.py --check tests/data/metrics_parity.json
"""
import argparse
import json
import sys

import numpy as np

BINS = 15


def ece(probs, labels, bins=BINS):
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == labels).astype(np.float64)
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    # side="left": a value equal to edge e_b belongs to (e_{b-1}, e_b].
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(conf) * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def _class_error(p, t, bins):
    keep = p > 0
    p, t = p[keep], t[keep]
    n = len(p)
    if n == 0:
        return 0.0
    positions = np.minimum(np.round(np.linspace(0, n, bins, endpoint=False)).astype(int), n - 1)
    lower = np.sort(p)[positions]
    upper = np.append(lower[1:], 1.0)
    idx = np.digitize(p, upper)
    err = 0.0
    for b in np.unique(idx):
        m = idx == b
        err += m.sum() / n * abs(t[m].mean() - p[m].mean())
    return err


def ace(probs, labels, bins=BINS):
    k = probs.shape[1]
    return float(np.mean([_class_error(probs[:, j], (labels == j).astype(np.float64), bins) for j in range(k)]))


def gmean(xs):
    xs = np.asarray(xs, dtype=np.float64)
    return float(np.exp(np.mean(np.log(xs)))) if (xs > 0).all() else 0.0


def class_balance(probs, labels, k):
    pred = probs.argmax(axis=1)
    accs, spreads = [], []
    for j in range(k):
        m = labels == j
        if not m.any():
            continue
        accs.append((pred[m] == j).mean())
        spreads.append(probs[m, j].std(ddof=0))
    return gmean([1 - np.std(accs, ddof=1), 1 - np.mean(spreads)])


def expected(case):
    probs = np.asarray(case["probs"], dtype=np.float32).astype(np.float64)
    labels = np.asarray(case["labels"])
    return {"ece": ece(probs, labels), "ace": ace(probs, labels), "class_balance": class_balance(probs, labels, case["num_classes"])}


def f32_rows(m):
    # Values as the Rust side will hold them: rounded to float32, printed so
    # they round-trip (repr of the float32 widened to float64).
    return [[float(np.float32(v)) for v in row] for row in m]


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_cases():
    cases = []
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 300)
    logits = rng.normal(0, 1.5, (300, 7))
    logits[np.arange(300), labels] += rng.normal(1.2, 1.0, 300)
    cases.append(("random_300x7", 7, labels, softmax(logits)))

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 200)
    logits = rng.normal(0, 2.0, (200, 10))
    logits[np.arange(200), labels] += 2.5
    p = softmax(logits)
    # Saturated rows (int8 softmax): max probability exactly 1.0, rest 0.
    for i in range(0, 200, 9):
        p[i] = 0.0
        p[i, (labels[i] + (i % 3 == 0)) % 10] = 1.0
    # Ties: two classes share the top probability (first index wins).
    for i in range(4, 200, 23):
        p[i] = 0.05
        p[i, 2] = p[i, 7] = 0.3
    cases.append(("saturated_and_ties_200x10", 10, labels, p))

    # Hand-checkable: 6 samples, 3 classes, confidences 0.9, 0.8, 0.6, 0.5,
    # 0.7, 0.4. As float32, 0.8, 0.6 and 0.4 lie just above 12/15, 9/15 and
    # 6/15, so each falls in the bin above that edge; either way every
    # confidence has a bin to itself, and ECE = mean |correct - conf| =
    # (0.1 + 0.8 + 0.4 + 0.5 + 0.7 + 0.6)/6 = 3.1/6 = 0.516667
    # (correct: samples 1, 3, 4, 6).
    p = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.25, 0.25, 0.5], [0.15, 0.7, 0.15], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 2, 0, 2])
    cases.append(("hand_6x3", 3, labels, p))

    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(16), 32)[:500]
    logits = rng.normal(0, 1.0, (500, 16))
    logits[np.arange(500), labels] += rng.normal(4.0, 2.0, 500)
    cases.append(("sharp_500x16", 16, labels, softmax(logits * 3.0)))
    out = []
    for name, k, labels, p in cases:
        c = {"name": name, "num_classes": k, "labels": [int(x) for x in labels], "probs": f32_rows(p)}
        c["expected"] = expected(c)
        out.append(c)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--make-fixture", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    a = ap.parse_args()
    if a.make_fixture:
        with open(a.make_fixture, "w") as f:
            json.dump({"source": "scripts/metrics_reference.py", "cases": make_cases()}, f)
            f.write("\n")
        hand = [c for c in make_cases() if c["name"] == "hand_6x3"][0]
        assert abs(hand["expected"]["ece"] - 3.1 / 6) < 1e-9, hand["expected"]
        return 0
    with open(a.check) as f:
        cases = json.load(f)["cases"]
    bad = 0
    for c in cases:
        got = expected(c)
        for key, want in c["expected"].items():
            if abs(got[key] - want) > 1e-12:
                print(f"{c['name']}: {key} stored {want} recomputed {got[key]}")
                bad += 1
    print(f"metrics_reference: {len(cases) * 3 - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
