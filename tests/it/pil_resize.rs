//! Our resize + centre crop against Pillow, byte for byte. The expected
//! crops were written by `scripts/make_resize_fixture.py` with Pillow's
//! `Image.resize` (what torchvision runs on PIL images), downscaling,
//! upscaling, bicubic and bilinear.

use quba_edge::data::load_into;
use quba_edge::protocol::{Interpolation, Pipeline};
use serde_json::Value;

#[test]
fn resize_and_crop_equal_pillow() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let crop = c["crop"].as_u64().unwrap() as u32;
        let p = Pipeline {
            resize_shorter: c["resize_shorter"].as_u64().unwrap() as u32,
            crop,
            interpolation: if c["interpolation"] == "bicubic" { Interpolation::Bicubic } else { Interpolation::Bilinear },
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut ours = vec![0f32; (3 * crop * crop) as usize];
        load_into(&dir.join(format!("{name}.src.png")), &p, &mut ours).unwrap();
        let pil = image::open(dir.join(format!("{name}.pil.png"))).unwrap().to_rgb8();
        let plane = (crop * crop) as usize;
        let mut worst = 0u8;
        for (i, px) in pil.pixels().enumerate() {
            for ch in 0..3 {
                let v = (ours[ch * plane + i] * 255.0).round() as u8;
                worst = worst.max(v.abs_diff(px.0[ch]));
            }
        }
        assert_eq!(worst, 0, "{name}: differs from Pillow by up to {worst} levels");
    }
}
