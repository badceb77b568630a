//! Images per second per corruption at 224×224 (`cargo bench --bench corrupt`;
//! `-- --size 64` for the shipped zoo's crops).
//!
//! A plain harness, as `benches/stream.rs`: every corruption runs at every
//! severity on the same synthetic images (the shipped benchmark rendered at
//! 224 px), median of 5 passes, one thread. `scripts/corruption_bench.py`
//! runs this and times the Python reference on the same images in the same
//! run. `-- --json` prints one JSON object per corruption instead of the
//! table; `-- --save-images DIR` writes the images it corrupts as PNGs so the
//! reference sees the very same pixels.

use std::hint::black_box;
use std::time::Instant;

use quba_edge::corrupt::{corrupt, sample_seed, CorruptOptions, Corruption, SEVERITIES};
use quba_edge::synth::{render, Split, SynthConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let size = args.iter().position(|a| a == "--size").map_or(224, |i| {
        args.get(i + 1).and_then(|n| n.parse().ok()).expect("--size N: the side of the rendered images in pixels")
    });
    let cfg = SynthConfig { size, ..SynthConfig::default() };
    let images: Vec<image::RgbImage> = (0..4).map(|i| render(&cfg, Split::Val, i * 37).image).collect();
    if let Some(dir) = args.iter().position(|a| a == "--save-images").and_then(|i| args.get(i + 1)) {
        std::fs::create_dir_all(dir).expect("cannot create the --save-images folder");
        for (i, img) in images.iter().enumerate() {
            let path = std::path::Path::new(dir).join(format!("{i}.png"));
            img.save(&path).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }
    let opts = CorruptOptions::default();
    for c in Corruption::ALL {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for (i, img) in images.iter().enumerate() {
                for s in SEVERITIES {
                    black_box(corrupt(black_box(img), c, s, sample_seed(0, i as u32, c, s), &opts).unwrap());
                }
            }
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let per = times[2] / (images.len() * SEVERITIES.count()) as f64;
        if json {
            println!("{}", serde_json::json!({ "corruption": c.name(), "seconds_per_image": per, "images_per_second": 1.0 / per }));
        } else {
            println!("{:<18} {:>9.1} images/s  ({:.2} ms/image)", c.name(), 1.0 / per, per * 1e3);
        }
    }
}
