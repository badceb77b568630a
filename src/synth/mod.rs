//! The synthetic QUBA benchmark: a tiny world of 16 shape classes in which
//! every one of the nine dimensions has a genuine signal, generated
//! deterministically from a seed (on the host to disk, or on a board in
//! memory).
//!
//! # The world
//!
//! * A class is a **shape** ([`CLASSES`], sorted, so the class index is the
//!   ImageFolder label). Shapes are closed polygons rendered with exact
//!   horizontal and 4× vertical anti-aliasing at a random position, scale
//!   (45–75 % of the image side for the bounding circle) and rotation.
//! * Each class has a **home texture** (class `i` → texture `i`, see
//!   [`TEXTURE_NAMES`]) and a **home background** family (class `i` →
//!   background `i`, see [`BACKGROUND_NAMES`]). In `train` and `val` the
//!   object wears its home texture with probability `p_texture` and sits on
//!   its home background with probability `p_background`; otherwise a
//!   uniformly random one of the 16 (which may again be the home one).
//!   Texture and background are therefore shortcuts a model can learn, which
//!   is what shape bias and object focus measure. Home textures are
//!   high-frequency patterns drawn only from their palette; backgrounds are
//!   low-frequency fields, so object and background stay separable.
//! * Textures 16.. are **held out**: they only appear in `ood/stylized`.
//! * The other splits mirror the real datasets' layouts (see [`Split::dir`]):
//!   edge maps, binary silhouettes, jittered pencil sketches, renditions
//!   (cartoon, pixel art, neon), cue-conflict images and the ImageNet-9
//!   backgrounds challenge pair `mixed_same` / `mixed_rand`.
//!
//! # Randomness
//!
//! Every image owns a ChaCha8 stream seeded (via `from_seed`, little-endian
//! bytes, so independent of the platform) from a splitmix64 chain over
//! `(cfg.seed, domain, split tag, index)`. Nothing depends on global state or
//! on the order in which images are rendered, so `render` of any single image
//! is the same whether or not its neighbours were rendered, on any thread.
//! Two streams are shared on purpose: the object of the backgrounds challenge
//! comes from a stream keyed by the index alone (so `mixed_same` and
//! `mixed_rand` show the same object), and the cue-conflict texture instance
//! `<texture><m>` comes from a stream keyed by (texture, m) so that the name
//! identifies the exact pattern. Random numbers are taken directly from
//! `next_u32` with our own integer-to-float mapping instead of `rand`'s
//! distributions: `gen_range` over `usize` consumes a different number of
//! words on 32- and 64-bit targets, and the distributions' internals may
//! change between `rand` versions.
//!
//! # Float determinism
//!
//! Pixel values are decided only with IEEE-754 operations that are correctly
//! rounded everywhere (`+ - * /`, `sqrt`, `floor`, `abs`, `min`, `max`,
//! comparisons, casts) in `f32`, without `mul_add`. Rust never contracts into
//! FMA on its own and the targets in question (x86-64 SSE, aarch64, armv7 VFP)
//! have no excess precision, so those are bit-identical across them. The
//! platform libm is never called: `sin`, `cos` and `atan2` are our own
//! polynomials ([`sin`](maths::sin), [`atan2`](maths::atan2)), and noise is
//! integer hashing. Results are quantised to `u8` at the very end.
//!
//! Bump [`GENERATOR_VERSION`] whenever any pixel could change; the golden
//! hash in the tests pins the current output.

mod backgrounds;
mod maths;
mod render;
mod rng;
mod shapes;
mod textures;

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use render::render_full;

pub use quba_common::benchmark::SYNTH_CLASSES as CLASSES;

pub const GENERATOR_VERSION: u32 = 1;

pub const NUM_CLASSES: usize = CLASSES.len();

/// Texture ids: `0..16` are the home textures of the classes with the same
/// index, `16..` are held out for `ood/stylized`.
pub const TEXTURE_NAMES: [&str; 21] = [
    "hstripes",
    "dstripes",
    "bars",
    "dots",
    "checks",
    "waves",
    "rings",
    "camo",
    "zigzag",
    "grid",
    "crosshatch",
    "speckle",
    "spokes",
    "triangles",
    "bricks",
    "plaid", // home textures end here
    "marble",
    "voronoi",
    "spiral",
    "leopard",
    "rainbow",
];

/// First held-out texture id.
pub const HELD_OUT_TEXTURE_START: u16 = 16;

/// Background family ids: family `i` is the home background of class `i`.
pub const BACKGROUND_NAMES: [&str; 16] = [
    "sky", "sand", "forest", "dusk", "sea", "horizon", "mint", "night", "sunset", "lavender", "cream", "teal",
    "meadow", "wood", "slate", "rose",
];

/// `SynthImage::texture` of images without a texture (line drawings,
/// silhouettes, flat-coloured renditions).
pub const NO_TEXTURE: u16 = u16::MAX;

/// `SynthImage::background` of images on a plain backdrop that belongs to no
/// family (white, paper, neutral grey, flat colour).
pub const PLAIN_BACKGROUND: u16 = u16::MAX;

#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// Side of the square images in pixels (at least 16).
    pub size: u32,
    /// Probability that a train/val object wears its home texture.
    pub p_texture: f32,
    /// Probability that a train/val object sits on its home background.
    pub p_background: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { seed: 0, size: 64, p_texture: 0.8, p_background: 0.8 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Edge,
    Silhouette,
    Sketch,
    Stylized,
    Rendition,
    CueConflict,
    MixedSame,
    MixedRand,
}

impl Split {
    pub const ALL: [Split; 10] = [
        Split::Train,
        Split::Val,
        Split::Edge,
        Split::Silhouette,
        Split::Sketch,
        Split::Stylized,
        Split::Rendition,
        Split::CueConflict,
        Split::MixedSame,
        Split::MixedRand,
    ];

    /// Folder of the split relative to the benchmark root, in the layout of
    /// the real dataset it stands in for.
    pub fn dir(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Edge => "model-vs-human/edge",
            Split::Silhouette => "model-vs-human/silhouette",
            Split::Sketch => "model-vs-human/sketch",
            Split::Stylized => "model-vs-human/stylized",
            Split::Rendition => "rendition",
            Split::CueConflict => "model-vs-human/cue-conflict",
            Split::MixedSame => "bg_challenge/mixed_same/val",
            Split::MixedRand => "bg_challenge/mixed_rand/val",
        }
    }

    /// Short name used on the command line (`quba data synth --splits …`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Edge => "edge",
            Split::Silhouette => "silhouette",
            Split::Sketch => "sketch",
            Split::Stylized => "stylized",
            Split::Rendition => "rendition",
            Split::CueConflict => "cue-conflict",
            Split::MixedSame => "mixed_same",
            Split::MixedRand => "mixed_rand",
        }
    }

    /// Stream id of the split. Spelled out rather than taken from the enum's
    /// discriminant so that reordering the enum cannot change any pixel.
    fn tag(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
            Split::Edge => 3,
            Split::Silhouette => 4,
            Split::Sketch => 5,
            Split::Stylized => 6,
            Split::Rendition => 7,
            Split::CueConflict => 8,
            Split::MixedSame => 9,
            Split::MixedRand => 10,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Split::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            format!("unknown split {s:?}; expected one of {}", Split::ALL.map(Split::name).join(", "))
        })
    }
}

pub struct SynthImage {
    pub image: RgbImage,
    /// Shape class.
    pub label: u16,
    /// Texture id used ([`TEXTURE_NAMES`]) or [`NO_TEXTURE`].
    pub texture: u16,
    /// Background family ([`BACKGROUND_NAMES`]) or [`PLAIN_BACKGROUND`].
    pub background: u16,
    /// `<index>.png`, or `<index>_<shape><n>-<texture><m>.png` in cue-conflict.
    pub file_name: String,
}

/// The `index`-th image of `split`; images cycle through classes so any
/// prefix is class-balanced: label = index % 16 (for cue-conflict: shape =
/// index % 16 and texture class chosen so all (A,B≠A) pairs are covered evenly).
///
/// Panics if `cfg.size < 16`.
pub fn render(cfg: &SynthConfig, split: Split, index: u32) -> SynthImage {
    render_full(cfg, split, index).0
}

/// Writes `per_class` images per class for each split in `splits` under `out`
/// in the layouts above; returns the number of files written.
pub fn write_tree(cfg: &SynthConfig, out: &Path, splits: &[Split], per_class: u32) -> Result<usize> {
    check_size(cfg.size)?;
    let count = per_class
        .checked_mul(NUM_CLASSES as u32)
        .with_context(|| format!("{per_class} images per class is too many"))?;
    let mut written = 0;
    for &split in splits {
        let root = out.join(split.dir());
        // Every class folder must exist even when empty: loaders count folders
        // to assign labels.
        for class in CLASSES {
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for index in 0..count {
            let img = render(cfg, split, index);
            let path = root.join(CLASSES[img.label as usize]).join(&img.file_name);
            img.image
                .save_with_format(&path, image::ImageFormat::Png)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

fn check_size(size: u32) -> Result<()> {
    if size < 16 {
        bail!("synthetic images must be at least 16 pixels wide (got {size}): shapes are unrecognisable below that");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    pub(super) fn cfg() -> SynthConfig {
        SynthConfig::default()
    }

    /// Splits a model-vs-human cue-conflict name `…<shape><n>-<texture><m>.png`
    /// into the two class names, as a loader of the real set would.
    use crate::benchmark::parse_cue_conflict;

    #[test]
    fn classes_sorted_and_parseable() {
        let mut sorted = CLASSES;
        sorted.sort();
        assert_eq!(sorted, CLASSES);
        for c in CLASSES {
            assert!(c.chars().all(|ch| ch.is_ascii_lowercase()), "{c}");
        }
        assert_eq!(TEXTURE_NAMES.len() - HELD_OUT_TEXTURE_START as usize, 5);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let other = SynthConfig { seed: 1, ..cfg() };
        for split in Split::ALL {
            for index in [0, 5, 37] {
                let a = render(&cfg(), split, index);
                let b = render(&cfg(), split, index);
                assert_eq!(a.image.as_raw(), b.image.as_raw(), "{split:?} {index}");
                assert_eq!(
                    (a.label, a.texture, a.background, &a.file_name),
                    (b.label, b.texture, b.background, &b.file_name)
                );
                let c = render(&other, split, index);
                assert_ne!(a.image.as_raw(), c.image.as_raw(), "{split:?} {index} ignores the seed");
            }
        }
        // Neighbouring indices and splits are different images too.
        assert_ne!(render(&cfg(), Split::Val, 0).image.as_raw(), render(&cfg(), Split::Val, 16).image.as_raw());
        assert_ne!(render(&cfg(), Split::Val, 0).image.as_raw(), render(&cfg(), Split::Train, 0).image.as_raw());
    }

    #[test]
    fn golden_hash() {
        let mut h = Sha256::new();
        for split in Split::ALL {
            for index in [0, 1, 17] {
                let img = render(&cfg(), split, index);
                h.update(img.file_name.as_bytes());
                h.update(img.image.as_raw());
            }
        }
        let got = crate::data::hex(&h.finalize());
        // Must change only together with GENERATOR_VERSION (models and their
        // cards are pinned to the generated data).
        assert_eq!(GENERATOR_VERSION, 1);
        assert_eq!(got, "2f8c3e079f742939ce00f2bef1a72eec208ae0d41587f56a20c32892874e44f2");
    }

    #[test]
    fn splits_are_class_balanced() {
        for split in Split::ALL {
            let mut counts = [0u32; NUM_CLASSES];
            for index in 0..16 * 3 {
                let img = render(&cfg(), split, index);
                assert_eq!(img.label as u32, index % 16);
                assert_eq!(img.image.dimensions(), (64, 64));
                counts[img.label as usize] += 1;
            }
            assert!(counts.iter().all(|&c| c == 3), "{split:?}: {counts:?}");
        }
    }

    #[test]
    fn write_tree_layout_and_counts() {
        let dir = std::env::temp_dir().join(format!("quba-synth-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = SynthConfig { size: 16, ..cfg() };
        let written = write_tree(&c, &dir, &Split::ALL, 2).unwrap();
        assert_eq!(written, Split::ALL.len() * 16 * 2);
        for split in Split::ALL {
            let root = dir.join(split.dir());
            let mut classes: Vec<String> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            classes.sort();
            assert_eq!(classes, CLASSES.map(String::from).to_vec(), "{split:?}");
            for class in CLASSES {
                let files: Vec<String> = std::fs::read_dir(root.join(class))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                assert_eq!(files.len(), 2, "{split:?} {class}");
                for f in &files {
                    assert!(f.ends_with(".png"));
                    if split == Split::CueConflict {
                        assert_eq!(parse_cue_conflict(f).unwrap().0, class);
                    }
                }
            }
        }
        let back = image::open(dir.join("val/arrow/0000.png")).unwrap().to_rgb8();
        assert_eq!(back.as_raw(), render(&c, Split::Val, 0).image.as_raw());
        assert!(dir.join("bg_challenge/mixed_same/val/star").is_dir());
        assert!(write_tree(&SynthConfig { size: 8, ..cfg() }, &dir, &[Split::Val], 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes three samples and two contact sheets (classes 0–7, 8–15; three
    /// instances each) per split to `$QUBA_SYNTH_PREVIEW` (default
    /// /tmp/synth-preview) for eyeballing:
    /// `cargo test --lib synth::tests::preview -- --ignored`.
    #[test]
    #[ignore]
    fn preview() {
        let out = std::path::PathBuf::from(std::env::var("QUBA_SYNTH_PREVIEW").unwrap_or("/tmp/synth-preview".into()));
        std::fs::create_dir_all(&out).unwrap();
        let c = cfg();
        let (rows, zoom, side) = (3u32, 3u32, c.size);
        for split in Split::ALL {
            let name = split.dir().replace('/', "_");
            let mut sheets = [
                RgbImage::new(8 * side * zoom, rows * side * zoom),
                RgbImage::new(8 * side * zoom, rows * side * zoom),
            ];
            for index in 0..16 * rows {
                let img = render(&c, split, index);
                if index < 3 {
                    img.image.save(out.join(format!("{name}_{}", img.file_name))).unwrap();
                }
                let sheet = &mut sheets[(index % 16 / 8) as usize];
                let (ox, oy) = ((index % 8) * side * zoom, (index / 16) * side * zoom);
                for (x, y, p) in img.image.enumerate_pixels() {
                    for dy in 0..zoom {
                        for dx in 0..zoom {
                            sheet.put_pixel(ox + x * zoom + dx, oy + y * zoom + dy, *p);
                        }
                    }
                }
            }
            let t = std::time::Instant::now();
            for index in 0..64 {
                std::hint::black_box(render(&c, split, index));
            }
            eprintln!(
                "{name}: {:.2} ms per image (this build's optimisation level)",
                t.elapsed().as_secs_f64() * 1000.0 / 64.0
            );
            for (half, sheet) in sheets.iter().enumerate() {
                sheet.save(out.join(format!("sheet_{name}_{half}.png"))).unwrap();
            }
        }
    }
}
