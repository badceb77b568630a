//! The dataset mappings against an independent numpy computation
//! (`scripts/mapping_reference.py`, committed output in tests/data/mapping):
//! on the same random softmax rows, our 16-category decisions and scores,
//! ImageNet-R restriction, ImageNet-9 lookup and shape-bias counts must be
//! the ones numpy gets.

use quba_edge::benchmark::{Mapping, MappingRules, NO_CLASS};
use quba_edge::metrics::shape_bias;
use quba_edge::protocol::{OodSet, ProbeSet};
use serde_json::Value;

fn fixture() -> (Vec<Vec<f32>>, Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mapping");
    let bytes = std::fs::read(dir.join("probs.f32")).unwrap();
    let flat: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let exp: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let rows: Vec<Vec<f32>> = flat.chunks(1000).map(<[f32]>::to_vec).collect();
    assert_eq!(rows.len() as u64, exp["n"].as_u64().unwrap());
    (rows, exp)
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn mappings_match_numpy() {
    let (rows, exp) = fixture();
    let mut scores = Vec::new();
    let sixteen = Mapping::ImageNet.decision(ProbeSet::Ood(OodSet::Sketch));
    let rendition = Mapping::ImageNet.decision(ProbeSet::Ood(OodSet::Rendition));
    let in9 = Mapping::ImageNet.decision(ProbeSet::MixedSame);
    let mut pred16 = Vec::new();
    for (i, p) in rows.iter().enumerate() {
        let d = sixteen.decide(p, 0, &mut scores);
        assert_eq!(d.prediction as i64, ints(&exp["sixteen_prediction"])[i], "row {i}: 16-class decision");
        for (k, s) in scores.iter().enumerate() {
            let want = exp["sixteen_scores"][i][k].as_f64().unwrap();
            // numpy means in float64; ours sums in f64 and stores f32.
            assert!((*s as f64 - want).abs() <= 1e-7 * want.max(1e-30) + 1e-12, "row {i} category {k}: {s} vs {want}");
        }
        pred16.push(d.prediction);
        let r = rendition.decide(p, 0, &mut scores);
        assert_eq!(r.prediction as i64, ints(&exp["imagenet_r_prediction"])[i], "row {i}: ImageNet-R decision");
        let n = in9.decide(p, 0, &mut scores);
        let want = ints(&exp["in9_prediction"])[i];
        if want < 0 {
            assert_eq!(n.prediction, NO_CLASS, "row {i}: top class outside ImageNet-9");
        } else {
            assert_eq!(n.prediction as i64, want, "row {i}: ImageNet-9 decision");
        }
    }
    let shape: Vec<u16> = ints(&exp["shape"]).iter().map(|&x| x as u16).collect();
    let texture: Vec<u16> = ints(&exp["texture"]).iter().map(|&x| x as u16).collect();
    let (bias, s, t, kept) = shape_bias(&shape, &texture, &pred16);
    assert_eq!((s as u64, t as u64, kept as u64), (
        exp["shape_hits"].as_u64().unwrap(),
        exp["texture_hits"].as_u64().unwrap(),
        exp["kept"].as_u64().unwrap()
    ));
    assert_eq!(bias, exp["shape_bias"].as_f64().unwrap());
}
