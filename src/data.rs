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

use crate::protocol::{Interpolation, Pipeline, Shard};

/// Identifies the decoders in run headers: decoders move accuracy (docs/protocol.md).
pub fn decoder() -> String {
    format!("JPEG: {}; other formats: image-rs 0.25", crate::jpeg::DECODER)
}

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Relative to the dataset root, `/`-separated, for fingerprints and reports.
    pub rel_path: String,
    pub label: u16,
    /// Texture category of a cue-conflict image (from its file name).
    pub cue: Option<u16>,
    pub bytes: u64,
}

/// How a folder tree's labels are read.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// Folder names in label order; a folder outside the list is an error.
    /// `None`: the folders in sorted order are the labels.
    pub categories: Option<Vec<String>>,
    /// Required number of folders (a missing one would shift every label).
    pub expected: Option<usize>,
    /// Parse `…<shape><n>-<texture><m>.<ext>` file names into [`Sample::cue`].
    pub cue_conflict: bool,
    /// A folder named by a label index (`0` … `999`, ImageNet-V2's layout)
    /// also names that category.
    pub index_folders: bool,
    /// Folders are `<n>_<name>` and n, below this count, is the label
    /// (ImageNet-9); only where `categories` is `None`.
    pub numbered: Option<usize>,
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
        Self::open_labelled(root, &Labels { expected: expected_classes, ..Labels::default() })
    }

    /// Lists `root/<class>/<image>` with labels read as `spec` says.
    pub fn open_labelled(root: &Path, spec: &Labels) -> Result<Self> {
        let expected_classes = spec.expected;
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
        let labels: Vec<u16> = match (&spec.categories, spec.numbered) {
            (None, Some(count)) => numbered_labels(root, &classes, count)?,
            (None, None) => (0..classes.len() as u16).collect(),
            (Some(cats), _) => classes
                .iter()
                .map(|c| {
                    let index = || c.parse::<usize>().ok().filter(|&i| spec.index_folders && i < cats.len() && c == &i.to_string());
                    cats.iter().position(|x| x == c).or_else(index).map(|i| i as u16).with_context(|| {
                        format!(
                            "{}: folder {c:?} is not one of this dataset's {} categories ({}{})",
                            root.display(),
                            cats.len(),
                            abbreviate(cats),
                            if spec.index_folders { format!(", or an index 0–{}", cats.len() - 1) } else { String::new() }
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut samples = Vec::new();
        for (class, &label) in classes.iter().zip(&labels) {
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
            for (f, bytes) in files {
                let cue = if spec.cue_conflict { Some(cue_of(root, class, &f, spec.categories.as_deref().unwrap_or(&classes))?) } else { None };
                samples.push(Sample { rel_path: format!("{class}/{f}"), label, cue, bytes });
            }
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
        // The labels present, not 0..folders: in a subset of ImageNet the
        // folders' labels are wnid indices (tiger cat is 282 in a 2-folder tree).
        let mut labels: Vec<u16> = self.samples.iter().map(|s| s.label).collect();
        labels.sort_unstable();
        labels.dedup();
        for label in labels {
            let mut idx: Vec<usize> = (0..self.samples.len()).filter(|&i| self.samples[i].label == label).collect();
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
            if let Some(c) = s.cue {
                h.update(c.to_le_bytes());
            }
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
        Self::open_labelled(spec, &Labels { expected: expected_classes, ..Labels::default() }, per_class, seed)
    }

    /// As [`Source::open`], with labels read as `labels` says. For `synth`
    /// the generator's own classes are the labels and must match.
    pub fn open_labelled(spec: &Path, labels: &Labels, per_class: Option<usize>, seed: u64) -> Result<Source> {
        let text = spec.to_string_lossy();
        if !spec.exists() && (text == "synth" || text.starts_with("synth:")) {
            use crate::synth::{Split, SynthConfig, CLASSES, NUM_CLASSES};
            let split: Split = match text.strip_prefix("synth:") {
                Some(name) => name.parse().map_err(anyhow::Error::msg)?,
                None => Split::Val,
            };
            if let Some(k) = labels.expected.filter(|&k| k != NUM_CLASSES) {
                bail!("the synthetic benchmark has {NUM_CLASSES} classes but the model outputs {k}");
            }
            if let Some(cats) = labels.categories.as_ref().filter(|c| c.iter().map(String::as_str).ne(CLASSES)) {
                bail!("{text}: the synthetic benchmark's classes ({}) are not this dataset's ({})", CLASSES.join(", "), abbreviate(cats));
            }
            let count = (per_class.unwrap_or(50) * NUM_CLASSES) as u32;
            return Ok(Source::Synth { cfg: SynthConfig { seed, ..SynthConfig::default() }, split, count });
        }
        let mut folder = ImageFolder::open_labelled(spec, labels)?;
        if let Some(n) = per_class {
            folder.stratified_subset(n, seed);
        }
        Ok(Source::Folder(folder))
    }

    /// The label of sample `i` without decoding it.
    pub fn label_of(&self, i: usize) -> u16 {
        match self {
            Source::Folder(f) => f.samples[i].label,
            // `synth::render`'s contract: images cycle through the classes.
            Source::Synth { .. } => (i % crate::synth::NUM_CLASSES) as u16,
        }
    }

    /// `per_class` sample indices of every class, chosen by a seeded shuffle
    /// inside each class and returned in sorted order: the images that the
    /// costly probes (corruptions, attacks) reuse from the clean set, so their
    /// records carry the clean set's sample ids.
    pub fn stratified_ids(&self, per_class: Option<usize>, seed: u64) -> Vec<u32> {
        let all = self.ids();
        let Some(n) = per_class else { return all };
        let mut kept = Vec::new();
        for (label, mut idx) in self.by_class(&all) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de ^ (label as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            idx.shuffle(&mut rng);
            idx.truncate(n);
            kept.extend(idx);
        }
        kept.sort_unstable();
        kept
    }

    /// Every sample id, in order.
    pub fn ids(&self) -> Vec<u32> {
        (0..self.len() as u32).collect()
    }

    /// `ids` grouped by label, in label order, each group in the order given.
    fn by_class(&self, ids: &[u32]) -> std::collections::BTreeMap<u16, Vec<u32>> {
        let mut by_class: std::collections::BTreeMap<u16, Vec<u32>> = Default::default();
        for &i in ids {
            by_class.entry(self.label_of(i as usize)).or_default().push(i);
        }
        by_class
    }

    /// Shard `shard`'s part of `ids`, in sorted order. The samples are dealt
    /// out like cards, class after class with one running count, so every
    /// shard holds ⌊n/N⌋ or ⌈n/N⌉ of each class and of the whole set (a shard
    /// alone stays a fair miniature of the run), the N parts are disjoint and
    /// together are `ids`, and nothing depends on a seed or the platform.
    pub fn shard_ids(&self, ids: &[u32], shard: Shard) -> Vec<u32> {
        let (k, n) = (shard.index as usize, shard.count as usize);
        let mut kept: Vec<u32> =
            self.by_class(ids).into_values().flatten().enumerate().filter(|(i, _)| i % n == k).map(|(_, id)| id).collect();
        kept.sort_unstable();
        kept
    }

    /// Class names in label order.
    pub fn classes(&self) -> Vec<String> {
        match self {
            Source::Folder(f) => f.classes.clone(),
            Source::Synth { .. } => crate::synth::CLASSES.iter().map(|c| c.to_string()).collect(),
        }
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

    /// Decodes (or renders) sample `i` and cuts the pipeline's centre crop:
    /// the image the model sees, before normalisation (where corruptions and
    /// pixel-space attacks act).
    pub fn load_crop(&self, i: usize, pipeline: &Pipeline) -> Result<(image::RgbImage, Loaded)> {
        let (img, loaded) = self.load_image(i)?;
        let crop = center_crop(&img, pipeline).with_context(|| match self {
            Source::Folder(f) => format!("image {}", f.path(&f.samples[i]).display()),
            Source::Synth { .. } => self.name(i),
        })?;
        Ok((crop, loaded))
    }

    /// Decodes (or renders) sample `i` as it is, before any pipeline.
    pub fn load_image(&self, i: usize) -> Result<(image::RgbImage, Loaded)> {
        match self {
            Source::Folder(f) => {
                let s = &f.samples[i];
                Ok((decode(&f.path(s))?, Loaded { label: s.label, cue: s.cue }))
            }
            Source::Synth { cfg, split, .. } => {
                let img = crate::synth::render(cfg, *split, i as u32);
                // Home textures 0..16 carry their class's index.
                let cue = (*split == crate::synth::Split::CueConflict).then_some(img.texture);
                Ok((img.image, Loaded { label: img.label, cue }))
            }
        }
    }

    /// Decodes (or renders) sample `i` through the whole pipeline into `out`.
    pub fn load_into(&self, i: usize, pipeline: &Pipeline, out: &mut [f32]) -> Result<Loaded> {
        let (crop, loaded) = self.load_crop(i, pipeline)?;
        normalise(&crop, pipeline, out)?;
        Ok(loaded)
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

/// Labels of `<n>_<name>` folders: n, below `count`, each at most once.
fn numbered_labels(root: &Path, classes: &[String], count: usize) -> Result<Vec<u16>> {
    let mut seen = vec![None::<&str>; count];
    classes
        .iter()
        .map(|c| {
            let n = c.split_once('_').and_then(|(n, _)| n.parse::<usize>().ok()).filter(|&n| n < count).with_context(|| {
                format!("{}: folder {c:?} is not named <n>_<category> with n from 0 to {}, as ImageNet-9's are (00_dog … 08_fish)", root.display(), count - 1)
            })?;
            if let Some(first) = seen[n].replace(c) {
                bail!("{}: folders {first:?} and {c:?} both number category {n}", root.display());
            }
            Ok(n as u16)
        })
        .collect()
}

/// The texture category of a cue-conflict file, checked against its folder.
fn cue_of(root: &Path, folder: &str, file: &str, categories: &[String]) -> Result<u16> {
    let path = || root.join(folder).join(file).display().to_string();
    let (shape, texture) = crate::benchmark::parse_cue_conflict(file).with_context(|| {
        format!("{}: a cue-conflict file name must end in <shape><n>-<texture><m>.<ext> (e.g. dog10-bird2.png)", path())
    })?;
    if shape != folder {
        bail!("{}: the file name says shape {shape:?} but it lies in folder {folder:?}", path());
    }
    categories.iter().position(|c| c == texture).map(|i| i as u16).with_context(|| {
        format!("{}: texture {texture:?} is not one of the {} categories ({})", path(), categories.len(), abbreviate(categories))
    })
}

/// A long list (ImageNet-R's 200 wnids) in an error message, shortened.
fn abbreviate(items: &[String]) -> String {
    if items.len() <= 20 {
        items.join(", ")
    } else {
        format!("{}, … {}", items[..8].join(", "), items[items.len() - 1])
    }
}

pub use quba_common::hex;

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hex(&Sha256::digest(&bytes)), bytes.len() as u64))
}

/// What a loaded sample is labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub label: u16,
    /// Texture category of a cue-conflict image.
    pub cue: Option<u16>,
}

/// Decodes an image file to RGB; errors name the file. JPEG goes through
/// Pillow's decoder (crate::jpeg), everything else through image-rs.
pub fn decode(path: &Path) -> Result<image::RgbImage> {
    // A board has 0.5–8 GB: a file that declares a gigapixel image must fail
    // as one sample, before the decoder allocates for it. 256 MiB holds any
    // photograph a dataset has (an 8000 × 8000 RGBA is 244 MiB).
    const MAX_ALLOC: usize = 256 << 20;
    let bytes = std::fs::read(path).with_context(|| format!("cannot open image {}", path.display()))?;
    if crate::jpeg::is_jpeg(&bytes) {
        return crate::jpeg::decode_rgb(&bytes, MAX_ALLOC).with_context(|| format!("image {} does not decode", path.display()));
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_ALLOC as u64);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    reader.limits(limits);
    Ok(reader
        .decode()
        .with_context(|| format!("image {} does not decode", path.display()))?
        .to_rgb8())
}

/// Decodes an image file and applies the pipeline, writing CHW f32 into `out`
/// (length 3·crop²). Errors name the file.
pub fn load_into(path: &Path, pipeline: &Pipeline, out: &mut [f32]) -> Result<()> {
    preprocess(&decode(path)?, pipeline, out).with_context(|| format!("image {}", path.display()))
}

/// torchvision order: `Resize(shorter)` → `CenterCrop(crop)` → `ToTensor` → `Normalize`.
pub fn preprocess(img: &image::RgbImage, p: &Pipeline, out: &mut [f32]) -> Result<()> {
    normalise(&center_crop(img, p)?, p, out)
}

/// `Resize(shorter)` → `CenterCrop(crop)`, as torchvision does them on PIL images.
pub fn center_crop(img: &image::RgbImage, p: &Pipeline) -> Result<image::RgbImage> {
    let (w, h) = img.dimensions();
    let crop = p.crop;
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
    Ok(image::imageops::crop_imm(src, left, top, crop, crop).to_image())
}

/// `ToTensor` → `Normalize` of a crop, into CHW f32 `out` (length 3·crop²).
pub fn normalise(img: &image::RgbImage, p: &Pipeline, out: &mut [f32]) -> Result<()> {
    let (w, h) = img.dimensions();
    if (w, h) != (p.crop, p.crop) || out.len() != 3 * (w * h) as usize {
        bail!("normalise: a {w}×{h} image into {} values, pipeline crop {} needs {}", out.len(), p.crop, 3 * p.crop * p.crop);
    }
    let plane = (w * h) as usize;
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px.0[c] as f32 / 255.0 - p.mean[c]) / p.std[c];
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
    fn per_class_keeps_every_present_label_of_a_subset() {
        // Two wnid folders of an ImageNet subset carry labels 282 and 967, not 0 and 1.
        let sample = |label: u16, i: u32| Sample { rel_path: format!("{label}/{i}.png"), label, cue: None, bytes: 1 };
        let samples = (0..3).flat_map(|i| [sample(282, i), sample(967, i)]).collect();
        let mut f = ImageFolder { root: PathBuf::new(), classes: vec!["n02123159".into(), "n07920052".into()], samples };
        f.stratified_subset(2, 0);
        let labels: Vec<u16> = f.samples.iter().map(|s| s.label).collect();
        assert_eq!(labels.iter().filter(|&&l| l == 282).count(), 2, "{labels:?}");
        assert_eq!(labels.iter().filter(|&&l| l == 967).count(), 2, "{labels:?}");
    }

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
    fn shards_partition_every_class_evenly() {
        // 16 synthetic classes × 5 images, and a subset like the attacks' (3 per class).
        let src = Source::open(Path::new("synth"), None, Some(5), 0).unwrap();
        for ids in [src.ids(), src.stratified_ids(Some(3), 7)] {
            for n in [1u32, 3, 4, 7, 100] {
                let parts: Vec<Vec<u32>> = (0..n).map(|k| src.shard_ids(&ids, Shard { index: k, count: n })).collect();
                let mut union: Vec<u32> = parts.concat();
                union.sort_unstable();
                assert_eq!(union, ids, "N = {n}: the shards together are the run, each sample once");
                let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "N = {n}: {sizes:?}");
                for label in 0..16u16 {
                    let per: Vec<usize> = parts.iter().map(|p| p.iter().filter(|&&i| src.label_of(i as usize) == label).count()).collect();
                    assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1, "N = {n}, class {label}: {per:?}");
                }
            }
        }
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
