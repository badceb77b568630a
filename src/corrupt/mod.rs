//! ImageNet-C on the board: the 15 corruptions of Hendrycks & Dietterich
//! (2019) at 5 severities, generated from a clean image in memory.
//!
//! The reference is the `imagecorruptions` package (bethgelab), the same
//! algorithms and severity parameters as the ImageNet-C generator but usable
//! at any image size. At 224×224 every corruption follows the reference's
//! arithmetic step by step (the same float widths, borders, rounding and final
//! truncation to `u8`), so deterministic corruptions match it to a grey level
//! or so and random ones match in distribution. Other sizes scale the
//! size-dependent parameters by `s = min(w, h) / 224` (docs/corruptions.md
//! lists the rule per corruption); at 224 the rule is the identity.
//!
//! # Randomness
//!
//! A corrupted image is a pure function of (image, corruption, severity,
//! seed). The seed of one sample comes from [`sample_seed`], SHA-256 over a
//! domain tag and the little-endian run seed, sample index, corruption index
//! and severity, so every (sample, corruption, severity) cell has its own
//! stream and no cell depends on which others were generated. The stream is
//! ChaCha8 (`seed_from_u64`, portable by rand_core's contract), read only
//! through `next_u64`/`next_u32` with our own mappings to floats and ranges
//! (`rand`'s distributions may change between versions and `gen_range` over
//! `usize` differs between 32- and 64-bit targets).
//!
//! # Same bytes on x86-64, aarch64 and armv7
//!
//! Only correctly rounded IEEE operations (`+ - * /`, `sqrt`, `floor`, `ceil`,
//! comparisons, casts) and the pure-Rust `libm` crate (`exp`, `log`, `sin`,
//! `cos`) decide a pixel; never the platform libm, never `mul_add` or
//! `powi`. Rust does not contract into FMA by itself, and these targets have
//! no excess precision. JPEG goes through image-rs's encoder and decoder,
//! whose integer paths are checked under QEMU (`tests/it/qemu_corrupt.rs`);
//! the ImageNet-C mode's file step through `jpeg-encoder`, integer only too.

mod filters;
pub mod imagenet_c;
mod kinds;
mod rng;

pub use crate::protocol::CorruptionMode;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::protocol::CORRUPTIONS;

/// The 15 ImageNet-C corruptions, in the protocol's order (their index is
/// the `corruption` of `ProbeSet::Corruption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Corruption {
    GaussianNoise,
    ShotNoise,
    ImpulseNoise,
    DefocusBlur,
    GlassBlur,
    MotionBlur,
    ZoomBlur,
    Snow,
    Frost,
    Fog,
    Brightness,
    Contrast,
    ElasticTransform,
    Pixelate,
    JpegCompression,
}

/// Valid severities, as the reference numbers them.
pub const SEVERITIES: std::ops::RangeInclusive<u8> = 1..=5;

impl Corruption {
    pub const ALL: [Corruption; 15] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::DefocusBlur,
        Corruption::GlassBlur,
        Corruption::MotionBlur,
        Corruption::ZoomBlur,
        Corruption::Snow,
        Corruption::Frost,
        Corruption::Fog,
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::ElasticTransform,
        Corruption::Pixelate,
        Corruption::JpegCompression,
    ];

    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Result<Corruption> {
        match Corruption::ALL.get(i as usize) {
            Some(&c) => Ok(c),
            None => bail!("corruption index {i} is out of range 0..{} ({})", CORRUPTIONS.len(), valid_names()),
        }
    }

    /// The protocol's name (`protocol::CORRUPTIONS`, the single name table).
    pub fn name(self) -> &'static str {
        CORRUPTIONS[self as usize]
    }

    /// Whether the output depends on the seed.
    pub fn is_random(self) -> bool {
        use Corruption::*;
        !matches!(self, DefocusBlur | ZoomBlur | Brightness | Contrast | Pixelate | JpegCompression)
    }
}

fn valid_names() -> String {
    format!("valid: {}", CORRUPTIONS.join(", "))
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Corruption {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match CORRUPTIONS.iter().position(|n| *n == s) {
            Some(i) => Ok(Corruption::ALL[i]),
            None => bail!("unknown corruption {s:?} ({})", valid_names()),
        }
    }
}

pub fn check_severity(severity: u8) -> Result<()> {
    if !SEVERITIES.contains(&severity) {
        bail!("severity {severity} is out of range (valid: 1, 2, 3, 4, 5)");
    }
    Ok(())
}

/// Options that do not change the protocol but the source of a layer.
#[derive(Clone, Debug, Default)]
pub struct CorruptOptions {
    /// Directory holding the reference's frost photos (`frost1.png`,
    /// `frost2.png`, `frost3.png`, `frost4.jpg`, `frost5.jpg`, as shipped
    /// inside the `imagecorruptions` package). `None`: a procedural frost
    /// layer with each photo's colour statistics (docs/corruptions.md).
    pub frost_dir: Option<PathBuf>,
}

/// The random quantities a corruption drew, for parity checks against the
/// reference (which can then be run with the same draws).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Trace {
    /// Motion-blur angle in degrees (motion_blur; snow's streak angle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub angle: Option<f64>,
    /// Which of the five frost photos (0-based) the layer stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frost_index: Option<u8>,
    /// Top-left (row, column) of the frost crop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frost_offset: Option<(u32, u32)>,
}

/// Per-sample seed: the first 8 bytes (little-endian) of
/// SHA-256("quba-edge/corrupt/v1" ‖ run_seed ‖ sample ‖ corruption index ‖ severity),
/// integers little-endian (u64, u32, u8, u8).
pub fn sample_seed(run_seed: u64, sample: u32, c: Corruption, severity: u8) -> u64 {
    let mut h = Sha256::new();
    h.update(b"quba-edge/corrupt/v1");
    h.update(run_seed.to_le_bytes());
    h.update(sample.to_le_bytes());
    h.update([c.index(), severity]);
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Smallest side accepted; the reference refuses below 32 pixels too.
pub const MIN_SIDE: u32 = 32;

/// Corrupt `img` at `severity` (1–5); `seed` is ignored by deterministic
/// corruptions. Typically `seed = sample_seed(run_seed, sample, c, severity)`.
pub fn corrupt(img: &image::RgbImage, c: Corruption, severity: u8, seed: u64, opts: &CorruptOptions) -> Result<image::RgbImage> {
    corrupt_traced(img, c, severity, seed, opts).map(|(out, _)| out)
}

/// [`corrupt`] plus the random quantities it drew.
pub fn corrupt_traced(
    img: &image::RgbImage,
    c: Corruption,
    severity: u8,
    seed: u64,
    opts: &CorruptOptions,
) -> Result<(image::RgbImage, Trace)> {
    check_severity(severity)?;
    let (w, h) = img.dimensions();
    if w.min(h) < MIN_SIDE {
        bail!("image is {w}×{h}; corruptions need at least {MIN_SIDE} pixels on each side (as the reference)");
    }
    kinds::apply(img, c, severity, seed, opts)
}

// --------------------------------------------------------------------------
// Command line: `quba data corrupt` and `quba-device corrupt`
// --------------------------------------------------------------------------

/// Arguments of `quba data corrupt` / `quba-device corrupt`.
#[derive(clap::Args, Debug, Clone)]
pub struct CorruptArgs {
    /// An image, or a directory: every .png/.jpg/.jpeg below it (sorted by relative path).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// One of the 15 ImageNet-C corruptions (gaussian_noise, …, jpeg_compression).
    #[arg(long)]
    pub corruption: Corruption,
    /// 1–5.
    #[arg(long)]
    pub severity: u8,
    /// Output PNG (image input) or directory (directory input; same relative paths, .png).
    #[arg(long)]
    pub out: PathBuf,
    /// Run seed; each image's randomness is `sample_seed(seed, sample, corruption, severity)`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample index of a single input image (in directory mode the sample is the sorted position).
    #[arg(long, default_value_t = 0)]
    pub sample: u32,
    /// Directory with the reference's frost photos (frost1.png … frost5.jpg); default: procedural frost.
    #[arg(long)]
    pub frost_dir: Option<PathBuf>,
    /// Write one JSON line per image with the random quantities drawn (for parity scripts).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// `direct`: corrupt the image as it is. `imagenet-c`: write what the ImageNet-C file of the
    /// image decodes to, as a run in that mode generates it (resize 256 bilinear, crop 224,
    /// corrupt, JPEG quality 85, decode); the model's pipeline is not applied.
    #[arg(long, value_enum, default_value = "direct")]
    pub mode: CorruptionMode,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn list_images(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let rel = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            list_images(root, &rel, out)?;
        } else if is_image(&rel) {
            out.push(rel);
        }
    }
    Ok(())
}

/// `quba data corrupt` / `quba-device corrupt`; returns the number of images written.
pub fn run_cli(a: &CorruptArgs) -> Result<usize> {
    check_severity(a.severity).context("--severity")?;
    let opts = CorruptOptions { frost_dir: a.frost_dir.clone() };
    let jobs: Vec<(PathBuf, PathBuf, u32)> = if a.input.is_dir() {
        let mut rel = Vec::new();
        list_images(&a.input, Path::new(""), &mut rel)?;
        rel.sort();
        if rel.is_empty() {
            bail!("no .png/.jpg/.jpeg images below {}", a.input.display());
        }
        rel.into_iter()
            .enumerate()
            .map(|(i, r)| (a.input.join(&r), a.out.join(r.with_extension("png")), i as u32))
            .collect()
    } else {
        vec![(a.input.clone(), a.out.clone(), a.sample)]
    };
    let mut trace = match &a.trace {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create trace file {}", p.display()))?,
        )),
        None => None,
    };
    for (src, dst, sample) in &jobs {
        let img = crate::data::decode(src)?;
        let seed = sample_seed(a.seed, *sample, a.corruption, a.severity);
        let (out, t) = match a.mode {
            CorruptionMode::Direct => corrupt_traced(&img, a.corruption, a.severity, seed, &opts),
            CorruptionMode::ImagenetC => imagenet_c::generator_crop(&img)
                .and_then(|crop| imagenet_c::file_image_traced(&crop, a.corruption, a.severity, seed, &opts)),
            CorruptionMode::Files => bail!("--mode files: reading an ImageNet-C tree is a run's --imagenet-c, not a corruption"),
        }
        .with_context(|| format!("{} (sample {sample}): {} severity {}", src.display(), a.corruption, a.severity))?;
        if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        out.save_with_format(dst, image::ImageFormat::Png).with_context(|| format!("cannot write {}", dst.display()))?;
        if let Some(w) = trace.as_mut() {
            use std::io::Write;
            let line = serde_json::json!({ "file": src, "sample": sample, "seed": seed, "trace": t });
            writeln!(w, "{line}")?;
        }
    }
    if let Some(mut w) = trace {
        use std::io::Write;
        w.flush()?;
    }
    Ok(jobs.len())
}
