//! Record encode/decode throughput and bytes per record (`cargo bench --bench stream`).
//!
//! A plain harness (no criterion): it reports medians over repeated passes,
//! which is what the closing numbers and docs/wire-format.md quote.
//!
//! `cargo bench --bench stream -- --write-stream FILE N` instead writes a run
//! of N top-1 records as a device sends it, to time `quba ingest` end to end.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::time::Instant;

use quba_edge::protocol::{
    decode_all, Backend, End, FrameDecoder, FrameEncoder, Header, Mapping, Message, Pipeline, Precision, ProbeSet, Probs, Record,
    PROTOCOL_VERSION,
};

/// What `quba ingest` reads at a time (transport.rs).
const READ: usize = 64 * 1024;

fn record(sample: u32, classes: usize, full: bool) -> Record {
    let mut probs = Probs::new();
    for i in 0..classes {
        probs.push(((i * 7919 + sample as usize) % 1000) as f32 / 1000.0 / classes as f32).unwrap();
    }
    Record {
        set: ProbeSet::Corruption { corruption: 3, severity: 2 },
        sample,
        label: (sample % classes as u32) as u16,
        prediction: 7,
        confidence: 0.8731,
        p_true: 0.0412,
        cue: None,
        probs: full.then(|| Box::new(probs)),
    }
}

fn bench(name: &str, classes: usize, full: bool, n: u32) {
    let records: Vec<Message> = (0..n).map(|i| Message::Record(record(i, classes, full))).collect();
    let mut stream = Vec::new();
    let mut enc_times = Vec::new();
    for _ in 0..7 {
        let mut enc = FrameEncoder::new();
        stream.clear();
        let t = Instant::now();
        for r in &records {
            stream.extend_from_slice(enc.encode(black_box(r)).unwrap());
        }
        enc_times.push(t.elapsed().as_secs_f64());
    }
    // As the host receives a stream: read by read, each frame handled and
    // dropped (`quba ingest` appends its bytes to the log).
    let mut dec_times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut dec = FrameDecoder::new();
        let mut frames = 0;
        for read in black_box(&stream).chunks(READ) {
            dec.push(read, |f, _| {
                black_box(&f);
                frames += 1;
            });
        }
        dec.finish();
        dec_times.push(t.elapsed().as_secs_f64());
        assert_eq!(frames, n as usize);
        assert!(dec.stats.is_clean());
    }
    // `decode_all` keeps every frame (half a kilobyte each, and a full
    // vector's 4 KB box), so this pass also pays for fresh memory.
    let mut all_times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let (frames, stats) = decode_all(black_box(&stream));
        all_times.push(t.elapsed().as_secs_f64());
        assert_eq!(frames.len(), n as usize);
        assert!(stats.is_clean());
    }
    let per = stream.len() as f64 / n as f64;
    let rate = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        format!("{:>10.0} rec/s ({:>7.1} MB/s)", n as f64 / times[3], stream.len() as f64 / times[3] / 1e6)
    };
    println!(
        "{name:<28} {per:>8.1} B/record  encode {}  decode {}  decode_all {}",
        rate(enc_times),
        rate(dec_times),
        rate(all_times)
    );
}

/// A run's stream as a device sends it: header, `n` top-1 records, end.
fn write_stream(path: &str, n: u32) {
    let header = Header {
        protocol: PROTOCOL_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        run_id: "bench-stream".into(),
        model_name: "bench".into(),
        model_sha256: "0".repeat(64),
        model_bytes: 0,
        parameters: 0,
        precision: Precision::Fp32,
        int8_format: String::new(),
        num_classes: 1000,
        pipeline: Pipeline::imagenet(),
        decoder: String::new(),
        benchmark: "bench".into(),
        dataset_root: String::new(),
        dataset_fingerprint: String::new(),
        samples: n,
        seed: 0,
        per_class: None,
        target: String::new(),
        backend: Backend::TractCpu,
        batch: 1,
        threads: 1,
        probes: vec![ProbeSet::Corruption { corruption: 3, severity: 2 }],
        full_probs: false,
        mapping: Mapping::Identity,
        corruption_source: String::new(),
        adversarial_mode: String::new(),
        gradient: String::new(),
        placement: String::new(),
        corruption_per_class: None,
        attack_per_class: None,
        shard: None,
        corruption_mode: Some(quba_edge::protocol::CorruptionMode::Direct),
        outputs: Default::default(),
        attacks_unavailable: String::new(),
        execution: Default::default(),
    };
    let mut enc = FrameEncoder::new();
    let mut out = BufWriter::new(File::create(path).unwrap_or_else(|e| panic!("{path}: {e}")));
    out.write_all(enc.encode(&Message::Header(header.clone())).unwrap()).unwrap();
    for i in 0..n {
        out.write_all(enc.encode(&Message::Record(record(i, 1000, false))).unwrap()).unwrap();
    }
    let end = End { records: n, failures: 0, model_load_ms: 0, elapsed_ms: 0, peak_rss_kb: 0, stages: Default::default(), header: Box::new(header) };
    out.write_all(enc.encode(&Message::End(end)).unwrap()).unwrap();
    out.flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write-stream") {
        let path = args.get(i + 1).expect("--write-stream FILE N");
        let n = args.get(i + 2).and_then(|n| n.parse().ok()).expect("--write-stream FILE N: N records");
        return write_stream(path, n);
    }
    bench("top-1 only", 1000, false, 200_000);
    bench("full vector, 16 classes", 16, true, 100_000);
    bench("full vector, 1000 classes", 1000, true, 10_000);
}
