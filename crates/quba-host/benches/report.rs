//! Report time at the study's scale (issue 10: "report time for 326 models").
//!
//! `cargo bench --bench report -- RUN_DIR N OUT_DIR` stores N copies of one
//! real run directory as N distinct models: each copy's header gets its own
//! model name, sha256 and run id, and copy i turns a share of its records
//! (0 to 19 %, fixed per copy) into errors, so the cohort spreads the way
//! models do and QUBA's normalisation has a range to work with. Then time
//! `quba report OUT_DIR/*` (docs/benchmarks.md names the run measured).

use std::path::{Path, PathBuf};

use quba_host::protocol::{decode_all, FrameEncoder, Message};
use quba_host::ingest::{Manifest, ManifestFile, LOG_FILE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [src, n, out] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench report -- RUN_DIR N OUT_DIR");
        std::process::exit(2);
    };
    let (src, out) = (Path::new(src), PathBuf::from(out));
    let n: u32 = n.parse().expect("N: how many copies");
    let log = src.join(LOG_FILE);
    let bytes = std::fs::read(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let (frames, stats) = decode_all(&bytes);
    assert!(stats.is_clean(), "{}: the source run's log is damaged ({stats:?})", log.display());
    let manifest = Manifest::read(src).expect("the source's manifest.json");
    let mut records = 0usize;
    for i in 0..n {
        let dir = out.join(format!("model-{i:03}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut enc = FrameEncoder::new();
        let mut log = Vec::with_capacity(bytes.len());
        let mut header = None;
        for f in &frames {
            let mut m = f.message.clone();
            match &mut m {
                Message::Header(h) => {
                    h.model_name = format!("{}-{i:03}", h.model_name);
                    h.model_sha256 = format!("{:064x}", u64::from(i) + 1);
                    h.run_id = format!("{}-{i:03}", h.run_id);
                    header = Some(h.clone());
                }
                // Its copy of the header names the same model.
                Message::End(e) => {
                    if let Some(h) = &header {
                        *e.header = h.clone();
                    }
                }
                Message::Record(r) => {
                    // A fixed pseudo-random share of the records become errors.
                    let draw = (r.sample.wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) % 100;
                    if draw < i % 20 {
                        let k = header.as_ref().map_or(2, |h| h.num_classes.max(2));
                        r.prediction = (r.label + 1) % k;
                    }
                    records += 1;
                }
                _ => {}
            }
            log.extend_from_slice(enc.encode(&m).expect("a decoded message re-encodes"));
        }
        std::fs::write(dir.join(LOG_FILE), &log).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Manifest { header, ..manifest.clone() }.write(&dir).expect("manifest.json written");
    }
    println!("{n} runs, {records} records, in {}", out.display());
}
