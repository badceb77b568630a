//! Datasets on disk and the input pipeline that turns an image into a tensor.
//!
//! Knows nothing about models or metrics: it hands out (sample id, label,
//! CHW f32 tensor) and says exactly which files it chose, so a run can be
//! fingerprinted and repeated.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

use crate::protocol::{Interpolation, Pipeline};

/// Identifies the decoder in run headers: decoders move accuracy (PROTOCOL.md).
pub const DECODER: &str = "image-rs 0.25";

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Relative to the dataset root, `/`-separated, for fingerprints and reports.
    pub rel_path: String,
    pub label: u16,
    pub bytes: u64,
}

/// An ImageFolder tree: one folder per class, class index = sorted folder order.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Lists `root/<class>/<image>`; with `expected_classes` it refuses a tree
    /// whose folder count differs, since a mismatch would shift every label.
    pub fn open(root: &Path, expected_classes: Option<usize>) -> Result<Self> {
        let entries = std::fs::read_dir(root).with_context(|| {
            format!("cannot read dataset folder {}: expected an ImageFolder tree (one sub-folder per class)", root.display())
        })?;
        let mut classes: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            bail!("dataset folder {} has no class sub-folders: expected <root>/<class>/<image>", root.display());
        }
        if let Some(k) = expected_classes {
            if classes.len() != k {
                bail!(
                    "dataset folder {} has {} class folders but the model outputs {} classes; \
                     the class index is the sorted folder order, so every folder must be there (first: {:?}, last: {:?})",
                    root.display(),
                    classes.len(),
                    k,
                    classes.first().unwrap(),
                    classes.last().unwrap()
                );
            }
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read class folder {}", dir.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let p = e.path();
                    p.is_file()
                        && p.extension()
                            .map(|x| IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_ascii_lowercase().as_str()))
                            .unwrap_or(false)
                })
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect();
            files.sort();
            samples.extend(files.into_iter().map(|(f, bytes)| Sample {
                rel_path: format!("{class}/{f}"),
                label: label as u16,
                bytes,
            }));
        }
        if samples.is_empty() {
            bail!("dataset folder {} has {} class folders but no images ({})", root.display(), classes.len(), IMAGE_EXTENSIONS.join(", "));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples })
    }

    /// Keeps `per_class` samples of every class, chosen by a seeded shuffle
    /// inside each class (ChaCha8: same choice on every target), then restores
    /// sorted order so sample ids stay meaningful.
    pub fn stratified_subset(&mut self, per_class: usize, seed: u64) {
        let mut kept = Vec::new();
        for label in 0..self.classes.len() {
            let mut idx: Vec<usize> = (0..self.samples.len()).filter(|&i| self.samples[i].label as usize == label).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (label as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            idx.shuffle(&mut rng);
            idx.truncate(per_class);
            kept.extend(idx);
        }
        kept.sort_unstable();
        self.samples = kept.into_iter().map(|i| self.samples[i].clone()).collect();
    }

    /// sha256 over the chosen samples' paths, labels and sizes: two runs with
    /// the same fingerprint saw the same files in the same order.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for s in &self.samples {
            h.update(s.rel_path.as_bytes());
            h.update([0]);
            h.update(s.label.to_le_bytes());
            h.update(s.bytes.to_le_bytes());
        }
        hex(&h.finalize())
    }

    pub fn path(&self, sample: &Sample) -> PathBuf {
        self.root.join(&sample.rel_path)
    }
}

/// Where the images of a run come from: files on disk, or the synthetic
/// benchmark rendered in memory — so a board needs no dataset copy and the
/// host and the board see byte-identical images.
pub enum Source {
    Folder(ImageFolder),
    Synth { cfg: crate::synth::SynthConfig, split: crate::synth::Split, count: u32 },
}

impl Source {
    /// `spec` is a folder, or `synth` / `synth:<split>` for the generated
    /// benchmark (`per_class` images per class, default 50; `seed` is the
    /// generator's seed). For folders `per_class` draws a seeded subset.
    pub fn open(spec: &Path, expected_classes: Option<usize>, per_class: Option<usize>, seed: u64) -> Result<Source> {
        let text = spec.to_string_lossy();
        if !spec.exists() && (text == "synth" || text.starts_with("synth:")) {
            use crate::synth::{Split, SynthConfig, NUM_CLASSES};
            let split: Split = match text.strip_prefix("synth:") {
                Some(name) => name.parse().map_err(anyhow::Error::msg)?,
                None => Split::Val,
            };
            if let Some(k) = expected_classes.filter(|&k| k != NUM_CLASSES) {
                bail!("the synthetic benchmark has {NUM_CLASSES} classes but the model outputs {k}");
            }
            let count = (per_class.unwrap_or(50) * NUM_CLASSES) as u32;
            return Ok(Source::Synth { cfg: SynthConfig { seed, ..SynthConfig::default() }, split, count });
        }
        let mut folder = ImageFolder::open(spec, expected_classes)?;
        if let Some(n) = per_class {
            folder.stratified_subset(n, seed);
        }
        Ok(Source::Folder(folder))
    }

    pub fn len(&self) -> usize {
        match self {
            Source::Folder(f) => f.samples.len(),
            Source::Synth { count, .. } => *count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A human-readable name of sample `i` (relative path, or split/index).
    pub fn name(&self, i: usize) -> String {
        match self {
            Source::Folder(f) => f.samples[i].rel_path.clone(),
            Source::Synth { split, .. } => format!("synth:{}/{i}", split.name()),
        }
    }

    /// Decodes (or renders) sample `i` through the pipeline; returns its label.
    pub fn load_into(&self, i: usize, pipeline: &Pipeline, out: &mut [f32]) -> Result<u16> {
        match self {
            Source::Folder(f) => {
                let s = &f.samples[i];
                load_into(&f.path(s), pipeline, out)?;
                Ok(s.label)
            }
            Source::Synth { cfg, split, .. } => {
                let img = crate::synth::render(cfg, *split, i as u32);
                preprocess(&img.image, pipeline, out).with_context(|| self.name(i))?;
                Ok(img.label)
            }
        }
    }

    /// Same fingerprint ⇒ same images in the same order.
    pub fn fingerprint(&self) -> String {
        match self {
            Source::Folder(f) => f.fingerprint(),
            Source::Synth { cfg, split, count } => hex(&Sha256::digest(format!(
                "synth v{} seed {} size {} p_texture {} p_background {} split {} count {count}",
                crate::synth::GENERATOR_VERSION,
                cfg.seed,
                cfg.size,
                cfg.p_texture,
                cfg.p_background,
                split.name()
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Folder(f) => f.root.display().to_string(),
            Source::Synth { cfg, split, count } => format!(
                "synth:{} (generator v{}, seed {}, {} px, {count} images)",
                split.name(),
                crate::synth::GENERATOR_VERSION,
                cfg.seed,
                cfg.size
            ),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hex(&Sha256::digest(&bytes)), bytes.len() as u64))
}

/// Decodes an image file and applies the pipeline, writing CHW f32 into `out`
/// (length 3·crop²). Errors name the file.
pub fn load_into(path: &Path, pipeline: &Pipeline, out: &mut [f32]) -> Result<()> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .with_context(|| format!("image {} does not decode", path.display()))?
        .to_rgb8();
    preprocess(&img, pipeline, out).with_context(|| format!("image {}", path.display()))
}

/// torchvision order: `Resize(shorter)` → `CenterCrop(crop)` → `ToTensor` → `Normalize`.
pub fn preprocess(img: &image::RgbImage, p: &Pipeline, out: &mut [f32]) -> Result<()> {
    let (w, h) = img.dimensions();
    let crop = p.crop;
    if out.len() != 3 * (crop * crop) as usize {
        bail!("output buffer holds {} values, pipeline crop {crop} needs {}", out.len(), 3 * crop * crop);
    }
    if w == 0 || h == 0 {
        bail!("image is empty ({w}×{h})");
    }
    let (nw, nh) = resized_size(w, h, p.resize_shorter);
    if nw < crop || nh < crop {
        bail!("after resizing to {nw}×{nh} the image is smaller than the {crop}×{crop} crop");
    }
    // PIL returns the image untouched when the size does not change, so must we.
    let resized;
    let src = if (nw, nh) == (w, h) {
        img
    } else {
        resized = match p.interpolation {
            Interpolation::Bicubic => pil_resize(img, nw, nh, PilFilter::Bicubic),
            Interpolation::Bilinear => pil_resize(img, nw, nh, PilFilter::Bilinear),
            Interpolation::Nearest => image::imageops::resize(img, nw, nh, FilterType::Nearest),
        };
        &resized
    };
    // torchvision: top = int(round((h − crop) / 2)), and Python rounds half to even.
    let top = ((nh - crop) as f64 / 2.0).round_ties_even() as u32;
    let left = ((nw - crop) as f64 / 2.0).round_ties_even() as u32;
    let plane = (crop * crop) as usize;
    for y in 0..crop {
        for x in 0..crop {
            let px = src.get_pixel(left + x, top + y).0;
            let i = (y * crop + x) as usize;
            for c in 0..3 {
                out[c * plane + i] = (px[c] as f32 / 255.0 - p.mean[c]) / p.std[c];
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum PilFilter {
    Bicubic,
    Bilinear,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bicubic => 2.0,
            PilFilter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            // Keys cubic with a = −0.5, as Pillow.
            PilFilter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            PilFilter::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// Pillow keeps 8-bit resampling in fixed point with this many fraction bits.
const PIL_PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index and fixed-point weights.
fn pil_coefficients(input: u32, output: u32, filter: PilFilter) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    // Downscaling widens the kernel (antialiasing), as Pillow does.
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..output)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) / filterscale)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PIL_PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn pil_clip8(acc: i32) -> u8 {
    (acc >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize` for 8-bit RGB (what torchvision calls on PIL
/// images): separable, horizontal pass then vertical, each rounded to 8 bits
/// in fixed point. image-rs's Catmull-Rom differed from it by up to 4 grey
/// levels (mean 0.2) on 500×375 → 341×256, which is enough to move top-1.
fn pil_resize(img: &image::RgbImage, nw: u32, nh: u32, filter: PilFilter) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let src = img.as_raw();
    let mut horiz = vec![0u8; (nw * h * 3) as usize];
    let cols = pil_coefficients(w, nw, filter);
    for y in 0..h as usize {
        let row = &src[y * w as usize * 3..(y + 1) * w as usize * 3];
        for (xx, (xmin, k)) in cols.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i32 = 1 << (PIL_PRECISION_BITS - 1);
                for (j, &kj) in k.iter().enumerate() {
                    acc += row[(xmin + j) * 3 + c] as i32 * kj;
                }
                horiz[(y * nw as usize + xx) * 3 + c] = pil_clip8(acc);
            }
        }
    }
    let rows = pil_coefficients(h, nh, filter);
    let stride = nw as usize * 3;
    let mut out = vec![0u8; (nw * nh * 3) as usize];
    for (yy, (ymin, k)) in rows.iter().enumerate() {
        for i in 0..stride {
            let mut acc: i32 = 1 << (PIL_PRECISION_BITS - 1);
            for (j, &kj) in k.iter().enumerate() {
                acc += horiz[(ymin + j) * stride + i] as i32 * kj;
            }
            out[yy * stride + i] = pil_clip8(acc);
        }
    }
    image::RgbImage::from_raw(nw, nh, out).expect("buffer sized for nw×nh RGB")
}

/// torchvision `Resize(int)`: the shorter side becomes `size`, the longer
/// `int(size · long / short)` (truncated).
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        (size, (size as u64 * h as u64 / w as u64) as u32)
    } else {
        ((size as u64 * w as u64 / h as u64) as u32, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_torchvision() {
        // torchvision.transforms.functional._compute_resized_output_size:
        // (500×375 photo, 256) → long side int(256·500/375) = 341.
        assert_eq!(resized_size(500, 375, 256), (341, 256));
        assert_eq!(resized_size(375, 500, 256), (256, 341));
        assert_eq!(resized_size(224, 224, 256), (256, 256));
    }

    #[test]
    fn crop_and_normalise_without_resize() {
        let img = image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 10) as u8, (y * 20) as u8, 255]));
        let p = Pipeline {
            resize_shorter: 4,
            crop: 2,
            interpolation: Interpolation::Bicubic,
            mean: [0.0, 0.0, 0.5],
            std: [1.0, 1.0, 0.5],
        };
        let mut out = vec![0.0; 12];
        preprocess(&img, &p, &mut out).unwrap();
        // w=5 → left = round_half_even(1.5) = 2; h=4 → top = 1.
        assert_eq!(out[0], 20.0 / 255.0); // R at (x=2, y=1)
        assert_eq!(out[4], 20.0 / 255.0); // G at (x=2, y=1)
        assert_eq!(out[8], 1.0); // B: (1 − 0.5) / 0.5
        assert_eq!(out[1], 30.0 / 255.0); // R at (x=3, y=1)
    }

    #[test]
    fn image_too_small_for_crop_is_an_error() {
        let img = image::RgbImage::new(1, 1);
        let mut out = vec![0.0; 3 * 224 * 224];
        let p = Pipeline { resize_shorter: 200, ..Pipeline::imagenet() };
        let err = preprocess(&img, &p, &mut out).unwrap_err().to_string();
        assert!(err.contains("smaller than the 224×224 crop"), "{err}");
    }
}
