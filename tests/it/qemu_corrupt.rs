//! Every corruption at every severity gives the same bytes on the aarch64
//! board binary (under QEMU, Cortex-A72) as on the x86 host: the suite's
//! corrupted images, and so its corruption numbers, do not depend on the
//! board. Same skip rule as tests/it/qemu.rs (QUBA_REQUIRE_ARM=1 in CI).

use std::path::PathBuf;
use std::process::Command;
use crate::util::*;

const NAMES: [&str; 15] = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow",
    "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
];

#[test]
fn every_corruption_is_byte_identical_on_aarch64() {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let bin = quba_host::board::cross_device_binary(&target_dir, "aarch64-unknown-linux-gnu");
    if !bin.exists() {
        assert!(std::env::var("QUBA_REQUIRE_ARM").is_err(), "QUBA_REQUIRE_ARM is set but {} is missing", bin.display());
        eprintln!("skipping: {} not built", bin.display());
        return;
    }
    let t = std::env::temp_dir().join(format!("quba-qemu-corrupt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    let quba = env!("CARGO_BIN_EXE_quba");
    // Two classes' worth of synthetic images at 64 px (the zoo's size) and
    // one photograph-sized image (224 px, the reference's parameters).
    for (size, per_class, dir) in [("64", "1", "small"), ("224", "1", "large")] {
        let out = Command::new(quba)
            .args(["data", "synth", "--splits", "val", "--size", size, "--per-class", per_class, "--out"])
            .arg(t.join(dir))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Keep the 224-px set small: QEMU is slow.
    for class in std::fs::read_dir(t.join("large/val")).unwrap().map(|e| e.unwrap().path()).skip(2) {
        std::fs::remove_dir_all(class).unwrap();
    }
    let mut compared = 0;
    for dir in ["small", "large"] {
        let input = t.join(dir).join("val");
        for c in NAMES {
            for s in 1..=5 {
                let (x86, arm) = (t.join(format!("{dir}-x86-{c}-{s}")), t.join(format!("{dir}-arm-{c}-{s}")));
                let common = ["--corruption", c, "--severity", &s.to_string(), "--seed", "11"];
                let a = Command::new(quba).args(["data", "corrupt"]).args(common).arg("--in").arg(&input).arg("--out").arg(&x86).output().unwrap();
                assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
                let b = Command::new("qemu-aarch64")
                    .args(["-cpu", "cortex-a72", "-L", "/usr/aarch64-linux-gnu"])
                    .arg(&bin)
                    .arg("corrupt")
                    .args(common)
                    .arg("--in")
                    .arg(&input)
                    .arg("--out")
                    .arg(&arm)
                    .output()
                    .unwrap();
                assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
                let mut files: Vec<PathBuf> = walk(&x86);
                files.sort();
                assert!(!files.is_empty());
                for f in files {
                    let rel = f.strip_prefix(&x86).unwrap();
                    let (p, q) = (image::open(&f).unwrap().to_rgb8(), image::open(arm.join(rel)).unwrap().to_rgb8());
                    assert!(p.as_raw() == q.as_raw(), "{c} severity {s}: {} differs between x86 and aarch64", rel.display());
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 75 * (16 + 2));
    let _ = std::fs::remove_dir_all(&t);
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}
