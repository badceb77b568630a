//! The ImageNet-C procedure around a corruption, so generated corruptions
//! reach the model as the study's files did: its generator resized every
//! validation image to 256 (torchvision `Resize(256)`, bilinear on PIL
//! images), cut the 224 centre, corrupted at 224 (the scale the reference's
//! parameters were tuned for) and saved JPEG quality 85 with Pillow; the
//! study then read those files through each model's whole pipeline. A
//! corruption made directly at a model's own crop skips the JPEG and the
//! second resize, and at another input size changes the corruption's scale,
//! which moves accuracy (docs/corruptions.md, "ImageNet-C mode").

use anyhow::{Context, Result};
use image::RgbImage;

use super::{corrupt_traced, CorruptOptions, Corruption, Trace};
use crate::protocol::{Interpolation, Pipeline};

/// The quality ImageNet-C's files were saved at.
pub const JPEG_QUALITY: u8 = 85;

/// The generator's resize and crop. Only `resize_shorter`, `crop` and
/// `interpolation` are read (by [`crate::data::center_crop`]); the
/// normalisation is the identity so the value is a valid pipeline.
pub fn generator_pipeline() -> Pipeline {
    Pipeline { resize_shorter: 256, crop: 224, interpolation: Interpolation::Bilinear, mean: [0.0; 3], std: [1.0; 3] }
}

/// The 224 crop the generator corrupted, of a decoded image.
pub fn generator_crop(img: &RgbImage) -> Result<RgbImage> {
    crate::data::center_crop(img, &generator_pipeline()).context("ImageNet-C's resize 256 and centre crop 224")
}

/// Encodes as Pillow's `save(quality=q)` does for RGB (libjpeg: Annex K
/// tables scaled by quality, 4:2:0 below quality 90 with averaged chroma,
/// baseline) and decodes with the decoder every dataset file goes through
/// (`crate::jpeg`, Pillow's), so the pixels are those of the file read back.
/// Pillow's `optimize=True` only re-derives the Huffman tables: the same
/// coefficients, so the same pixels.
pub fn jpeg_round_trip(img: &RgbImage, quality: u8) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let (w16, h16) = (u16::try_from(w), u16::try_from(h));
    let (Ok(w16), Ok(h16)) = (w16, h16) else { anyhow::bail!("a {w}×{h} image is too large for JPEG (65535 per side)") };
    let bytes = jpeg_encode(img.as_raw(), w16, h16, quality)?;
    crate::jpeg::decode_rgb(&bytes, usize::MAX).context("decoding our own JPEG")
}

/// The JPEG file's bytes, as [`jpeg_round_trip`] writes them.
pub fn jpeg_encode(rgb: &[u8], w: u16, h: u16, quality: u8) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, quality);
    // The crate's default takes one chroma sample per 2×2 block; libjpeg averages.
    enc.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb).map_err(|e| anyhow::anyhow!("JPEG encoding: {e}"))?;
    Ok(bytes)
}

/// What the ImageNet-C file of an image decodes to, from the image's
/// [`generator_crop`]: corrupted at 224, saved at quality 85, read back.
/// The model's own pipeline is applied to the result afterwards, as to any
/// file.
pub fn file_image(crop: &RgbImage, c: Corruption, severity: u8, seed: u64, opts: &CorruptOptions) -> Result<RgbImage> {
    file_image_traced(crop, c, severity, seed, opts).map(|(img, _)| img)
}

/// [`file_image`] plus the random quantities the corruption drew.
pub fn file_image_traced(crop: &RgbImage, c: Corruption, severity: u8, seed: u64, opts: &CorruptOptions) -> Result<(RgbImage, Trace)> {
    let (corrupted, trace) = corrupt_traced(crop, c, severity, seed, opts)?;
    Ok((jpeg_round_trip(&corrupted, JPEG_QUALITY)?, trace))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg").join(name)
    }

    /// Quantisation tables: (id, 64 values in zigzag order).
    type Tables = Vec<(u8, Vec<u8>)>;

    /// The quantisation tables and the frame's components (sampling
    /// factors, table id; their ids are only names, and libjpeg counts them
    /// from 1 where the crate counts from 0) of a baseline JPEG.
    fn tables_and_components(jpeg: &[u8]) -> (Tables, Vec<[u8; 2]>) {
        let (mut tables, mut components, mut i) = (Vec::new(), Vec::new(), 2);
        while i + 4 <= jpeg.len() && jpeg[i] == 0xff && jpeg[i + 1] != 0xda {
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            let seg = &jpeg[i + 4..i + 2 + len];
            match jpeg[i + 1] {
                0xdb => {
                    for t in seg.chunks(65) {
                        assert_eq!(t[0] >> 4, 0, "8-bit tables");
                        tables.push((t[0] & 15, t[1..].to_vec()));
                    }
                }
                0xc0 => components = seg[6..].chunks(3).map(|c| [c[1], c[2]]).collect(),
                0xc1..=0xc3 => panic!("not baseline: SOF{}", jpeg[i + 1] - 0xc0),
                _ => {}
            }
            i += 2 + len;
        }
        tables.sort();
        (tables, components)
    }

    #[test]
    fn jpeg_matches_pillow() {
        // tests/data/jpeg is written by scripts/make_jpeg_fixture.py: a 48×32
        // image and Pillow 13's `save(quality=85, optimize=True)` of it, as
        // ImageNet-C's generator saved its files.
        let src = image::open(fixture("source.png")).unwrap().to_rgb8();
        let pillow = std::fs::read(fixture("pillow_q85.jpg")).unwrap();
        let (w, h) = src.dimensions();
        let ours = jpeg_encode(src.as_raw(), w as u16, h as u16, JPEG_QUALITY).unwrap();
        // libjpeg's tables at quality 85 and 4:2:0 (Y 2×2, Cb and Cr 1×1).
        assert_eq!(tables_and_components(&ours), tables_and_components(&pillow));
        assert_eq!(tables_and_components(&pillow).1, vec![[0x22, 0], [0x11, 1], [0x11, 1]]);
        // Read back by the same decoder, the two files' pixels.
        let decode = |b: &[u8]| crate::jpeg::decode_rgb(b, usize::MAX).unwrap();
        let (a, b) = (decode(&ours), decode(&pillow));
        // Not every pixel: read in YCbCr (Pillow's `draft`), the files differ
        // in one 8×8 luma block only, by up to 8 levels (a coefficient whose
        // quantisation rounds the other way; the crate's reciprocals are
        // libjpeg-turbo's, its DCT libjpeg's integer one, so this is where the
        // two still part). Held here so a change of either encoder shows.
        let mut blocks = std::collections::BTreeSet::new();
        let mut max = 0;
        for (x, y, p) in a.enumerate_pixels() {
            let d = p.0.iter().zip(b.get_pixel(x, y).0).map(|(&u, v)| (u as i32 - v as i32).abs()).max().unwrap();
            if d > 0 {
                blocks.insert((x / 8, y / 8));
                max = max.max(d);
            }
        }
        assert!(blocks.len() <= 1 && max <= 8, "our file and Pillow's differ in blocks {blocks:?}, by up to {max}");
        assert_eq!(jpeg_round_trip(&src, JPEG_QUALITY).unwrap(), a, "the round trip is encode then our decoder");
    }
}
