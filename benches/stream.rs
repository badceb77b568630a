//! Record encode/decode throughput and bytes per record (`cargo bench --bench stream`).
//!
//! A plain harness (no criterion): it reports medians over repeated passes,
//! which is what the closing numbers and docs/wire-format.md quote.

use std::hint::black_box;
use std::time::Instant;

use quba_edge::protocol::{decode_all, FrameEncoder, Message, ProbeSet, Probs, Record};

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
        probs: full.then_some(probs),
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
    let mut dec_times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let (frames, stats) = decode_all(black_box(&stream));
        dec_times.push(t.elapsed().as_secs_f64());
        assert_eq!(frames.len(), n as usize);
        assert!(stats.is_clean());
    }
    enc_times.sort_by(f64::total_cmp);
    dec_times.sort_by(f64::total_cmp);
    let per = stream.len() as f64 / n as f64;
    println!(
        "{name:<28} {per:>8.1} B/record  encode {:>10.0} rec/s ({:>7.1} MB/s)  decode {:>10.0} rec/s ({:>7.1} MB/s)",
        n as f64 / enc_times[3],
        stream.len() as f64 / enc_times[3] / 1e6,
        n as f64 / dec_times[3],
        stream.len() as f64 / dec_times[3] / 1e6
    );
}

fn main() {
    bench("top-1 only", 1000, false, 200_000);
    bench("full vector, 16 classes", 16, true, 100_000);
    bench("full vector, 1000 classes", 1000, true, 10_000);
}
