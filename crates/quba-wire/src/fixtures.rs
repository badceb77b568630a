//! Fully populated messages, for tests here and in the crates that receive
//! streams (feature `fixtures`): one set of values, so a field added to a
//! message is filled in once.

use crate::message::*;

/// A header with every field set, every `Option` `Some`, and values that
/// take more than one varint byte where the type allows it. The strings
/// are short so the expected bytes stay readable.
pub fn full_header() -> Header {
    Header {
        protocol: PROTOCOL_VERSION,
        tool_version: "0.1.0".into(),
        run_id: "r1".into(),
        model_name: "m".into(),
        model_sha256: "ab".into(),
        model_bytes: 300,
        parameters: 70_000,
        precision: Precision::Int8,
        int8_format: "qdq".into(),
        num_classes: 1000,
        pipeline: Pipeline {
            resize_shorter: 256,
            crop: 224,
            interpolation: Interpolation::Bilinear,
            mean: [0.5, 0.25, 0.125],
            std: [1.0, 2.0, 4.0],
        },
        decoder: "d".into(),
        benchmark: "imagenet".into(),
        dataset_root: "/d".into(),
        dataset_fingerprint: "fp".into(),
        samples: 50_000,
        seed: 42,
        per_class: Some(50),
        target: "t".into(),
        backend: Backend::TractCuda,
        batch: 8,
        threads: 1,
        probes: vec![
            ProbeSet::Clean,
            ProbeSet::Corruption { corruption: 14, severity: 5 },
            ProbeSet::Adversarial(Attack::Pgd),
            ProbeSet::Ood(OodSet::Rendition),
            ProbeSet::MixedRand,
        ],
        full_probs: true,
        mapping: Mapping::ImageNet,
        corruption_source: "gen".into(),
        adversarial_mode: "pixel".into(),
        gradient: "ste".into(),
        placement: "gpu".into(),
        corruption_per_class: Some(5),
        attack_per_class: Some(2),
        shard: Some(Shard { index: 1, count: 4 }),
        corruption_mode: Some(CorruptionMode::ImagenetC),
        outputs: Outputs::SoftmaxInGraph,
        attacks_unavailable: "no".into(),
        execution: Execution { quba_int8: 300, tract_int8: 2, float_fallback: 70_000, float: 0, fallback_nodes: vec!["c1".into()] },
    }
}

/// An end with two stages and multi-byte varints (End has no `Option`),
/// carrying `full_header()`.
pub fn full_end() -> End {
    let mut stages = heapless::Vec::new();
    stages.push(Stage { group: ProbeGroup::Clean, images: 100, elapsed_us: 2_000_000, model_us: 1_500_000 }).unwrap();
    stages.push(Stage { group: ProbeGroup::Adversarial, images: 52, elapsed_us: 300, model_us: 200 }).unwrap();
    End { records: 150, failures: 2, model_load_ms: 1234, elapsed_ms: 65_536, peak_rss_kb: 20_480, stages, header: Box::new(full_header()) }
}

/// A record with its cue and a (short) probability vector.
pub fn full_record() -> Record {
    let mut probs = Probs::new();
    probs.extend_from_slice(&[0.25, 0.5, 0.25]).unwrap();
    Record {
        set: ProbeSet::CueConflict,
        sample: 7,
        label: 1,
        prediction: 1,
        confidence: 0.5,
        p_true: 0.5,
        cue: Some(2),
        probs: Some(Box::new(probs)),
    }
}

pub fn full_failure() -> Failure {
    Failure {
        set: ProbeSet::Ood(OodSet::Sketch),
        sample: 3,
        path: heapless::String::try_from("a.png").unwrap(),
        message: heapless::String::try_from("bad").unwrap(),
    }
}
