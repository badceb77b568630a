//! Our ECE, ACE and class balance against an independent numpy
//! implementation (`scripts/metrics_reference.py`, formulas from docs/protocol.md,
//! Guo et al. 2017 and Nixon et al. 2019). The expected values in
//! `tests/data/metrics_parity.json` were written by
//! `python scripts/metrics_reference.py --make-fixture …` in float64; CI
//! re-runs `--check` on the file so it cannot go stale.

use quba_edge::metrics;
use quba_edge::protocol::{decode_all, FrameEncoder, Message, ProbeSet, Probs, Record};
use serde_json::Value;

struct Case {
    name: String,
    k: usize,
    labels: Vec<usize>,
    probs: Vec<f32>,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics_parity.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let list = v.as_array().or_else(|| v["cases"].as_array()).expect("a list of cases");
    list.iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().into(),
            k: c["num_classes"].as_u64().unwrap() as usize,
            labels: c["labels"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect(),
            probs: c["probs"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect(),
            expected: c["expected"].clone(),
        })
        .collect()
}

fn ours(k: usize, labels: &[usize], probs: &[f32]) -> [f64; 3] {
    let n = labels.len();
    let preds: Vec<usize> = (0..n).map(|i| metrics::argmax(&probs[i * k..(i + 1) * k])).collect();
    let conf: Vec<f64> = (0..n).map(|i| probs[i * k + preds[i]] as f64).collect();
    let correct: Vec<bool> = (0..n).map(|i| preds[i] == labels[i]).collect();
    [metrics::ece(&conf, &correct, 15), metrics::ace(probs, k, labels, 15), metrics::class_balance(probs, k, labels)]
}

#[test]
fn ece_ace_class_balance_match_numpy_reference() {
    let cases = cases();
    assert!(cases.len() >= 4);
    for c in &cases {
        let got = ours(c.k, &c.labels, &c.probs);
        for (name, g) in ["ece", "ace", "class_balance"].iter().zip(got) {
            let want = c.expected[*name].as_f64().unwrap();
            assert!((g - want).abs() < 1e-6, "case {}: {name} ours {g} numpy {want}", c.name);
        }
    }
}

#[test]
fn metrics_do_not_move_through_the_stream() {
    for c in cases() {
        let mut enc = FrameEncoder::new();
        let mut bytes = Vec::new();
        for (i, row) in c.probs.chunks_exact(c.k).enumerate() {
            let mut p = Probs::new();
            p.extend_from_slice(row).unwrap();
            let pred = metrics::argmax(row);
            let rec = Record { set: ProbeSet::Clean, sample: i as u32, label: c.labels[i] as u16, prediction: pred as u16, confidence: row[pred], p_true: row[c.labels[i]], cue: None, probs: Some(Box::new(p)) };
            bytes.extend_from_slice(enc.encode(&Message::Record(rec)).unwrap());
        }
        let (frames, stats) = decode_all(&bytes);
        assert!(stats.is_clean());
        let decoded: Vec<f32> = frames
            .iter()
            .flat_map(|f| match &f.message {
                Message::Record(r) => r.probs.clone().unwrap().into_iter(),
                _ => panic!("unexpected frame"),
            })
            .collect();
        let before = ours(c.k, &c.labels, &c.probs);
        let after = ours(c.k, &c.labels, &decoded);
        for (b, a) in before.iter().zip(after) {
            assert!((b - a).abs() <= 1e-6, "case {}: {b} → {a}", c.name);
        }
    }
}
