//! quba's JPEG decoding against Pillow's, pixel for pixel. The files and
//! Pillow's `Image.open(f).convert("RGB")` of each (what torchvision's
//! ImageFolder feeds a model) were written by
//! `scripts/make_pillow_jpeg_fixtures.py` (Pillow 13.0.0, libjpeg-turbo 3.2.0;
//! `tests/data/jpeg/pillow/manifest.json`): baseline and progressive,
//! 4:2:0 / 4:2:2 / 4:4:4, greyscale, CMYK, restart markers, partial MCUs.
//! image-rs's decoder, used before, is run beside as the control: it must
//! differ somewhere, or these files would not tell decoders apart.

use quba_edge::data::decode;
use serde_json::Value;

use crate::util::*;

#[test]
fn jpeg_pixels_equal_pillows() {
    let dir = root().join("tests/data/jpeg/pillow");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), 10);
    let (mut modes, mut control_differs) = (std::collections::BTreeSet::new(), 0);
    for (name, info) in files {
        modes.insert(info["mode"].as_str().unwrap().to_string());
        let jpg = dir.join(format!("{name}.jpg"));
        let pillow = image::open(dir.join(format!("{name}.png"))).unwrap().to_rgb8();
        let ours = decode(&jpg).unwrap();
        assert_eq!(ours.dimensions(), pillow.dimensions(), "{name}");
        let diff = |img: &image::RgbImage| {
            let d = img.as_raw().iter().zip(pillow.as_raw()).filter(|(a, b)| a != b).count();
            let worst = img.as_raw().iter().zip(pillow.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            (d, worst)
        };
        let (differing, worst) = diff(&ours);
        assert_eq!(differing, 0, "{name}: {differing} of {} channel values differ from Pillow's, by up to {worst}", pillow.len());
        if let Ok(control) = image::open(&jpg) {
            let (d, worst) = diff(&control.to_rgb8());
            eprintln!("{name}: image-rs differs from Pillow in {d} of {} values, by up to {worst}", pillow.len());
            control_differs += (d > 0) as usize;
        }
    }
    assert_eq!(modes.into_iter().collect::<Vec<_>>(), ["CMYK", "L", "RGB"]);
    assert!(control_differs > 0, "image-rs decodes every fixture as Pillow does: the fixtures cannot tell decoders apart");
}

/// The same decoder on the boards: the ARM device binaries (under QEMU)
/// decode every fixture to the x86 host's pixels, so to Pillow's. The
/// files pass through `corrupt` with brightness at severity 1, the device
/// command that decodes a file and writes PNG; that corruption is itself
/// byte-identical across targets (tests/it/qemu_corrupt.rs). Skipped as
/// tests/it/qemu.rs skips, unless CI's QUBA_REQUIRE_ARM/ARMV7 are set.
#[test]
fn jpeg_pixels_are_the_same_on_arm() {
    let t = tmp!("arm");
    // Only the JPEGs: `corrupt` names its outputs <stem>.png.
    let dir = t.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(root().join("tests/data/jpeg/pillow")).unwrap().map(|e| e.unwrap().path()) {
        if e.extension().is_some_and(|x| x == "jpg") {
            std::fs::copy(&e, dir.join(e.file_name().unwrap())).unwrap();
        }
    }
    let common = ["corrupt", "--corruption", "brightness", "--severity", "1", "--in"];
    let x86 = t.join("x86");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quba")).arg("data").args(common).arg(&dir).arg("--out").arg(&x86).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for profile in ["qemu-aarch64", "qemu-armv7"] {
        let Some((board, bin)) = crate::qemu::emulated(profile) else { continue };
        let launcher: Vec<&str> = board.launcher.as_deref().unwrap().split_whitespace().collect();
        let arm = t.join(profile);
        let out = std::process::Command::new(launcher[0]).args(&launcher[1..]).arg(&bin).args(common).arg(&dir).arg("--out").arg(&arm).output().unwrap();
        assert!(out.status.success(), "{profile}: {}", String::from_utf8_lossy(&out.stderr));
        let mut compared = 0;
        for e in std::fs::read_dir(&x86).unwrap() {
            let name = e.unwrap().file_name();
            let (p, q) = (image::open(x86.join(&name)).unwrap().to_rgb8(), image::open(arm.join(&name)).unwrap().to_rgb8());
            assert!(p.as_raw() == q.as_raw(), "{profile}: {} differs from x86", name.to_string_lossy());
            compared += 1;
        }
        assert_eq!(compared, 10, "{profile}");
    }
}
