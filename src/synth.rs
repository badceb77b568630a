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
//! polynomials ([`sin`], [`atan2`]), and noise is integer hashing. Results are
//! quantised to `u8` at the very end.
//!
//! Bump [`GENERATOR_VERSION`] whenever any pixel could change; the golden
//! hash in the tests pins the current output.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

// ---------------------------------------------------------------------------
// Randomness

const DOMAIN_IMAGE: u64 = 1;
const DOMAIN_BG_OBJECT: u64 = 2;
const DOMAIN_TEXTURE_INSTANCE: u64 = 3;

/// Number of distinct texture instances `m` per texture in cue-conflict names.
const TEXTURE_INSTANCES: u32 = 10;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn stream(parts: &[u64]) -> ChaCha8Rng {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x5155_4241_5359_4e54; // "QUBASYNT"
    for &p in parts {
        h = mix64(h.wrapping_add(GOLDEN) ^ p);
    }
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix64(h.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))).to_le_bytes());
    }
    ChaCha8Rng::from_seed(seed)
}

/// Uniform in [0, 1) with 24 bits, exactly representable in f32.
fn unit<R: RngCore>(r: &mut R) -> f32 {
    (r.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

fn uniform<R: RngCore>(r: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(r)
}

/// Uniform in 0..n (n ≥ 1); the bias of the multiply-shift is below 2^-28
/// for the small n used here.
fn below<R: RngCore>(r: &mut R, n: u32) -> u32 {
    ((r.next_u32() as u64 * n as u64) >> 32) as u32
}

fn hash2(seed: u32, x: i32, y: i32) -> u32 {
    let mut h = seed ^ 0x9e37_79b9;
    for v in [x as u32, y as u32] {
        h ^= v;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
    }
    h
}

fn hash_unit(seed: u32, x: i32, y: i32) -> f32 {
    (hash2(seed, x, y) >> 8) as f32 * (1.0 / 16_777_216.0)
}

// ---------------------------------------------------------------------------
// Math that must not depend on the platform libm

const PI: f32 = std::f32::consts::PI;
const TAU: f32 = std::f32::consts::TAU;
const FRAC_PI_2: f32 = std::f32::consts::FRAC_PI_2;

/// Sine by reduction to [-π/2, π/2] and the Taylor series to x^11 (error
/// below 1e-7 there, far under one grey level).
fn sin(x: f32) -> f32 {
    let k = (x * (1.0 / TAU) + 0.5).floor();
    let mut r = x - k * TAU;
    if r > FRAC_PI_2 {
        r = PI - r;
    } else if r < -FRAC_PI_2 {
        r = -PI - r;
    }
    let r2 = r * r;
    r * (1.0
        + r2 * (-1.0 / 6.0
            + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0 + r2 * (-1.0 / 39_916_800.0))))))
}

fn cos(x: f32) -> f32 {
    sin(x + FRAC_PI_2)
}

/// atan2 from the Abramowitz–Stegun 4.4.49 polynomial for atan on [0, 1]
/// (error ≤ 1e-5 rad) and octant symmetry.
fn atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    if ax == 0.0 && ay == 0.0 {
        return 0.0;
    }
    let swap = ay > ax;
    let z = if swap { ax / ay } else { ay / ax };
    let z2 = z * z;
    let mut a = z * (0.999_866 + z2 * (-0.330_299_5 + z2 * (0.180_141 + z2 * (-0.085_133 + z2 * 0.020_835_1))));
    if swap {
        a = FRAC_PI_2 - a;
    }
    if x < 0.0 {
        a = PI - a;
    }
    if y < 0.0 {
        -a
    } else {
        a
    }
}

fn frac(x: f32) -> f32 {
    x - x.floor()
}

fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn value_noise(seed: u32, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (ix, iy) = (x0 as i32, y0 as i32);
    let (fx, fy) = (smooth(x - x0), smooth(y - y0));
    let a = hash_unit(seed, ix, iy);
    let b = hash_unit(seed, ix + 1, iy);
    let c = hash_unit(seed, ix, iy + 1);
    let d = hash_unit(seed, ix + 1, iy + 1);
    lerp(lerp(a, b, fx), lerp(c, d, fx), fy)
}

/// Two octaves of value noise, contrast-stretched back to roughly [0, 1]
/// (averaging pulls values towards 0.5).
fn fbm(seed: u32, x: f32, y: f32) -> f32 {
    let n = (2.0 * value_noise(seed, x, y) + value_noise(seed ^ 0x68e3_1da4, 2.0 * x + 17.3, 2.0 * y + 5.1)) / 3.0;
    clamp01((n - 0.5) * 1.9 + 0.5)
}

type Rgb = [f32; 3];

fn rgb8(c: [u8; 3]) -> Rgb {
    [c[0] as f32 / 255.0, c[1] as f32 / 255.0, c[2] as f32 / 255.0]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    // a·(1−t) + b·t rather than a + (b−a)·t so that t = 1 gives exactly b:
    // fully covered pixels then carry the exact palette colour.
    let s = 1.0 - t;
    [a[0] * s + b[0] * t, a[1] * s + b[1] * t, a[2] * s + b[2] * t]
}

fn quantise(v: f32) -> u8 {
    (clamp01(v) * 255.0 + 0.5) as u8
}

// ---------------------------------------------------------------------------
// Shapes

type Pt = [f32; 2];

fn push_arc(out: &mut Vec<Pt>, cx: f32, cy: f32, r: f32, a0: f32, a1: f32, steps: usize) {
    for i in 0..=steps {
        let a = a0 + (a1 - a0) * (i as f32 / steps as f32);
        out.push([cx + r * cos(a), cy + r * sin(a)]);
    }
}

fn circle(r: f32, steps: usize) -> Vec<Pt> {
    let mut c = Vec::with_capacity(steps + 1);
    push_arc(&mut c, 0.0, 0.0, r, 0.0, TAU * (steps as f32 - 1.0) / steps as f32, steps - 1);
    c
}

fn regular(n: usize, r_outer: f32, r_inner: f32, start: f32) -> Vec<Pt> {
    // With r_inner == r_outer this is a plain regular n-gon.
    let m = if r_inner == r_outer { n } else { 2 * n };
    (0..m)
        .map(|i| {
            let r = if i % 2 == 1 && m == 2 * n { r_inner } else { r_outer };
            let a = start + TAU * i as f32 / m as f32;
            [r * cos(a), r * sin(a)]
        })
        .collect()
}

/// Closed contours of a class in its own units, filled with the even-odd
/// rule (so the ring's inner circle is a hole).
fn raw_contours(class: usize) -> Vec<Vec<Pt>> {
    let poly = |pts: &[Pt]| vec![pts.to_vec()];
    match CLASSES[class] {
        "arrow" => poly(&[[-1.0, -0.2], [0.1, -0.2], [0.1, -0.6], [1.0, 0.0], [0.1, 0.6], [0.1, 0.2], [-1.0, 0.2]]),
        "bowtie" => poly(&[[-1.0, -0.75], [0.0, -0.14], [1.0, -0.75], [1.0, 0.75], [0.0, 0.14], [-1.0, 0.75]]),
        "crescent" => {
            // Disc of radius 1 minus a disc of radius 0.8 shifted by d: the
            // outer arc goes the long way round between the two
            // intersection points, the inner arc returns inside the disc.
            let (d, r2) = (0.45f32, 0.8f32);
            let xi = (1.0 - r2 * r2 + d * d) / (2.0 * d);
            let yi = (1.0 - xi * xi).sqrt();
            let alpha = atan2(yi, xi);
            let beta = atan2(yi, xi - d);
            let mut c = Vec::new();
            push_arc(&mut c, 0.0, 0.0, 1.0, alpha, TAU - alpha, 40);
            push_arc(&mut c, d, 0.0, r2, TAU - beta, beta, 28);
            vec![c]
        }
        "cross" => poly(&[
            [-0.25, -0.9],
            [0.25, -0.9],
            [0.25, -0.25],
            [0.9, -0.25],
            [0.9, 0.25],
            [0.25, 0.25],
            [0.25, 0.9],
            [-0.25, 0.9],
            [-0.25, 0.25],
            [-0.9, 0.25],
            [-0.9, -0.25],
            [-0.25, -0.25],
        ]),
        "diamond" => poly(&[[-1.0, 0.0], [0.0, -0.55], [1.0, 0.0], [0.0, 0.55]]),
        "disc" => vec![circle(1.0, 64)],
        "heart" => {
            let mut c = Vec::with_capacity(64);
            for i in 0..64 {
                let t = TAU * i as f32 / 64.0;
                let s = sin(t);
                let y = 13.0 * cos(t) - 5.0 * cos(2.0 * t) - 2.0 * cos(3.0 * t) - cos(4.0 * t);
                c.push([16.0 * s * s * s, -y]);
            }
            vec![c]
        }
        "hexagon" => vec![regular(6, 1.0, 1.0, 0.0)],
        "house" => poly(&[[-0.6, 0.85], [0.6, 0.85], [0.6, 0.0], [0.95, 0.0], [0.0, -0.9], [-0.95, 0.0], [-0.6, 0.0]]),
        "lshape" => poly(&[[-0.6, -0.9], [-0.05, -0.9], [-0.05, 0.35], [0.75, 0.35], [0.75, 0.9], [-0.6, 0.9]]),
        "ring" => vec![circle(1.0, 64), circle(0.55, 48)],
        "square" => poly(&[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
        "star" => vec![regular(5, 1.0, 0.42, -FRAC_PI_2)],
        "trapezoid" => poly(&[[-1.0, 0.55], [1.0, 0.55], [0.45, -0.55], [-0.45, -0.55]]),
        "triangle" => vec![regular(3, 1.0, 1.0, -FRAC_PI_2)],
        "tshape" => poly(&[
            [-0.9, -0.9],
            [0.9, -0.9],
            [0.9, -0.45],
            [0.25, -0.45],
            [0.25, 0.9],
            [-0.25, 0.9],
            [-0.25, -0.45],
            [-0.9, -0.45],
        ]),
        other => unreachable!("no geometry for class {other}"),
    }
}

/// Contours centred on their bounding box and scaled so that the farthest
/// vertex is at radius 1, so a pose's radius is the object's true extent.
fn unit_contours(class: usize) -> Vec<Vec<Pt>> {
    let mut cs = raw_contours(class);
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in cs.iter().flatten() {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    let (mx, my) = ((x0 + x1) * 0.5, (y0 + y1) * 0.5);
    let mut r2 = 0.0f32;
    for p in cs.iter_mut().flatten() {
        p[0] -= mx;
        p[1] -= my;
        r2 = r2.max(p[0] * p[0] + p[1] * p[1]);
    }
    let inv = 1.0 / r2.sqrt();
    for p in cs.iter_mut().flatten() {
        p[0] *= inv;
        p[1] *= inv;
    }
    cs
}

#[derive(Clone, Copy, Debug)]
struct Pose {
    cx: f32,
    cy: f32,
    radius: f32,
    cos: f32,
    sin: f32,
}

impl Pose {
    fn random<R: RngCore>(r: &mut R, size: u32) -> Pose {
        let n = size as f32;
        let radius = uniform(r, 0.45, 0.75) * n * 0.5;
        let cx = uniform(r, radius, n - radius);
        let cy = uniform(r, radius, n - radius);
        let angle = uniform(r, 0.0, TAU);
        Pose { cx, cy, radius, cos: cos(angle), sin: sin(angle) }
    }

    fn apply(&self, p: Pt) -> Pt {
        [
            self.cx + self.radius * (self.cos * p[0] - self.sin * p[1]),
            self.cy + self.radius * (self.sin * p[0] + self.cos * p[1]),
        ]
    }
}

fn placed_contours(class: usize, pose: &Pose) -> Vec<Vec<Pt>> {
    let mut cs = unit_contours(class);
    for p in cs.iter_mut().flatten() {
        *p = pose.apply(*p);
    }
    cs
}

const SUBROWS: usize = 4;

/// Coverage in [0, 1] of each pixel by the even-odd filled contours: 4
/// sample rows per pixel, each contributing the exact horizontal overlap of
/// its spans. Scanlines instead of per-sample inside tests keep a 64×64
/// shape at a few hundred thousand flops.
fn rasterize(contours: &[Vec<Pt>], size: u32) -> Vec<f32> {
    let n = size as usize;
    let mut cov = vec![0.0f32; n * n];
    let mut edges: Vec<[f32; 4]> = Vec::new();
    let (mut ymin, mut ymax) = (f32::MAX, f32::MIN);
    for c in contours {
        for i in 0..c.len() {
            let (a, b) = (c[i], c[(i + 1) % c.len()]);
            edges.push([a[0], a[1], b[0], b[1]]);
            ymin = ymin.min(a[1]);
            ymax = ymax.max(a[1]);
        }
    }
    if edges.is_empty() {
        return cov;
    }
    let row0 = ymin.max(0.0).floor() as usize;
    let row1 = ((ymax.max(0.0).ceil() as usize) + 1).min(n);
    let w = 1.0 / SUBROWS as f32;
    let mut xs: Vec<f32> = Vec::with_capacity(16);
    for py in row0..row1 {
        let row = &mut cov[py * n..(py + 1) * n];
        for j in 0..SUBROWS {
            let y = py as f32 + (j as f32 + 0.5) * w;
            xs.clear();
            for e in &edges {
                // Half-open in y so a vertex on the sample row counts once.
                if (e[1] <= y) != (e[3] <= y) {
                    xs.push(e[0] + (y - e[1]) * (e[2] - e[0]) / (e[3] - e[1]));
                }
            }
            xs.sort_by(f32::total_cmp);
            for span in xs.chunks_exact(2) {
                add_span(row, span[0], span[1], w);
            }
        }
    }
    cov
}

fn add_span(row: &mut [f32], x0: f32, x1: f32, w: f32) {
    let a = x0.max(0.0);
    let b = x1.min(row.len() as f32);
    if b <= a {
        return;
    }
    let i1 = (b.ceil() as usize).min(row.len());
    for (i, px) in row.iter_mut().enumerate().take(i1).skip(a.floor() as usize) {
        let lo = a.max(i as f32);
        let hi = b.min(i as f32 + 1.0);
        if hi > lo {
            *px += w * (hi - lo);
        }
    }
}

// ---------------------------------------------------------------------------
// Textures

/// Home textures draw only from these colours (the tests rely on it).
const HOME_PALETTES: [&[[u8; 3]]; 16] = [
    &[[200, 30, 40], [250, 200, 30]],
    &[[25, 40, 150], [240, 240, 245]],
    &[[30, 150, 60], [15, 15, 15], [170, 230, 150]],
    &[[120, 30, 150], [245, 245, 245]],
    &[[20, 20, 20], [245, 130, 20]],
    &[[40, 210, 230], [10, 70, 90]],
    &[[220, 30, 160], [250, 235, 245]],
    &[[95, 110, 40], [110, 70, 35], [200, 180, 120]],
    &[[250, 225, 20], [20, 20, 20]],
    &[[245, 245, 240], [210, 30, 30]],
    &[[245, 235, 200], [0, 128, 128]],
    &[[255, 160, 190], [60, 20, 70]],
    &[[255, 150, 0], [30, 90, 220]],
    &[[20, 90, 40], [180, 240, 60], [235, 250, 200]],
    &[[160, 60, 40], [190, 190, 180]],
    &[[180, 20, 30], [30, 110, 60], [30, 40, 110], [60, 20, 60], [240, 210, 60]],
];

const GLASS: [[u8; 3]; 6] =
    [[200, 40, 60], [40, 90, 200], [240, 200, 40], [40, 160, 90], [150, 60, 180], [240, 120, 40]];

/// One instance of a texture: a slight rotation and scale (the base angle
/// and frequency stay part of the texture's identity), a phase, a noise seed.
#[derive(Clone, Copy, Debug)]
struct TexParams {
    cos: f32,
    sin: f32,
    scale: f32,
    du: f32,
    dv: f32,
    seed: u32,
}

impl TexParams {
    fn random<R: RngCore>(r: &mut R) -> TexParams {
        let angle = uniform(r, -0.2, 0.2);
        let scale = uniform(r, 0.9, 1.1);
        let du = unit(r);
        let dv = unit(r);
        let seed = r.next_u32();
        TexParams { cos: cos(angle), sin: sin(angle), scale, du, dv, seed }
    }
}

/// Colour of texture `tex` at pixel (px, py). Texture coordinates are in
/// image sides and centred on the object, so stripes have the same width in
/// pixels whatever the object's scale, and radial textures radiate from it.
fn texture_rgb(tex: u16, tp: &TexParams, px: usize, py: usize, pose: &Pose, size: f32) -> Rgb {
    let x = (px as f32 + 0.5 - pose.cx) / size;
    let y = (py as f32 + 0.5 - pose.cy) / size;
    let u0 = (tp.cos * x - tp.sin * y) * tp.scale;
    let v0 = (tp.sin * x + tp.cos * y) * tp.scale;
    let (u, v) = (u0 + tp.du, v0 + tp.dv);
    let r = (u0 * u0 + v0 * v0).sqrt();
    if (tex as usize) < HOME_PALETTES.len() {
        let k = home_texture_index(tex, tp, u, v, u0, v0, r, px, py, size);
        return rgb8(HOME_PALETTES[tex as usize][k]);
    }
    match tex {
        16 => {
            // marble: dark veins where a noise-warped sine crosses zero
            let n = fbm(tp.seed, u * 4.0, v * 4.0);
            let t = 0.5 + 0.5 * sin(TAU * (u * 2.0 + v + n * 2.5));
            let k = 1.0 - t;
            let vein = k * k * k * k * k * k;
            mix(mix(rgb8([235, 235, 240]), rgb8([200, 205, 215]), n), rgb8([70, 80, 110]), vein)
        }
        17 => {
            // voronoi: stained glass with dark lead lines
            let (d1, d2, id) = cells(tp.seed, u * 5.0, v * 5.0);
            if d2 - d1 < 0.09 {
                rgb8([30, 30, 30])
            } else {
                rgb8(GLASS[(id % GLASS.len() as u32) as usize])
            }
        }
        18 => {
            // spiral: two-armed Archimedean bands around the object centre
            let t = frac(atan2(v0, u0) * (2.0 / TAU) + r * 9.0 + tp.du);
            mix(rgb8([120, 60, 20]), rgb8([150, 200, 255]), smooth(clamp01((t - 0.5).abs() * 6.0 - 0.9)))
        }
        19 => {
            // leopard: noise-warped cells, each a brown spot in a dark rosette
            let wu = u * 6.0 + 0.6 * value_noise(tp.seed ^ 1, u * 8.0, v * 8.0);
            let wv = v * 6.0 + 0.6 * value_noise(tp.seed ^ 2, u * 8.0, v * 8.0);
            let (d1, _, _) = cells(tp.seed, wu, wv);
            if d1 < 0.17 {
                rgb8([150, 95, 40])
            } else if d1 < 0.3 {
                rgb8([35, 25, 15])
            } else {
                rgb8([225, 180, 100])
            }
        }
        20 => {
            // rainbow: smooth noise through a hue wheel
            let h = fbm(tp.seed, u * 3.0, v * 3.0) * 1.6 + tp.du;
            let c = hue(h);
            [0.15 + 0.8 * c[0], 0.15 + 0.8 * c[1], 0.15 + 0.8 * c[2]]
        }
        _ => unreachable!("texture id {tex} out of range"),
    }
}

#[allow(clippy::too_many_arguments)]
fn home_texture_index(
    tex: u16,
    tp: &TexParams,
    u: f32,
    v: f32,
    u0: f32,
    v0: f32,
    r: f32,
    px: usize,
    py: usize,
    size: f32,
) -> usize {
    let b = |c: bool| c as usize;
    match tex {
        0 => b(frac(v * 9.0) < 0.5),
        1 => b(frac((u + v) * 5.5) < 0.5),
        2 => {
            let f = frac(u * 4.5);
            if f < 0.45 {
                0
            } else if f < 0.6 {
                1
            } else {
                2
            }
        }
        3 => {
            let (fx, fy) = (frac(u * 8.0) - 0.5, frac(v * 8.0) - 0.5);
            b(fx * fx + fy * fy < 0.09)
        }
        4 => ((u * 7.0).floor() as i32 + (v * 7.0).floor() as i32).rem_euclid(2) as usize,
        5 => b(frac(v * 8.0 + 0.3 * sin(TAU * u * 3.0)) < 0.5),
        6 => b(frac(r * 14.0 + tp.du) < 0.5),
        7 => {
            let n = value_noise(tp.seed, u * 9.0, v * 9.0);
            if n < 0.42 {
                0
            } else if n < 0.58 {
                1
            } else {
                2
            }
        }
        8 => b(frac(v * 7.0 + (frac(u * 5.0) - 0.5).abs() * 1.4) < 0.5),
        9 => b(frac(u * 7.0) < 0.2 || frac(v * 7.0) < 0.2),
        10 => b(frac((u + v) * 7.0) < 0.22 || frac((u - v) * 7.0) < 0.22),
        11 => {
            // Speckle cells are whole pixels at 64 px and grow with the image.
            let cell = (size / 64.0).max(1.0);
            let (cx, cy) = ((px as f32 / cell).floor() as i32, (py as f32 / cell).floor() as i32);
            b(hash_unit(tp.seed, cx, cy) < 0.3)
        }
        12 => b(frac(atan2(v0, u0) * (12.0 / TAU) + tp.du) < 0.5),
        13 => {
            // Each cell cut along its diagonal: a dark upper triangle and a
            // lower one alternating between two light greens.
            let (a, c) = (frac(u * 6.0), frac(v * 6.0));
            let parity = ((u * 6.0).floor() as i32 + (v * 6.0).floor() as i32).rem_euclid(2) as usize;
            if a > c {
                0
            } else {
                1 + parity
            }
        }
        14 => {
            let row = (v * 9.0).floor() as i32;
            let x = u * 4.5 + if row.rem_euclid(2) == 1 { 0.5 } else { 0.0 };
            b(frac(v * 9.0) < 0.15 || frac(x) < 0.07)
        }
        15 => {
            let (a, c) = (frac(u * 5.0), frac(v * 5.0));
            let line = |t: f32| (0.62..0.68).contains(&t);
            if a < 0.3 && c < 0.3 {
                3
            } else if a < 0.3 {
                1
            } else if c < 0.3 {
                2
            } else if line(a) || line(c) {
                4
            } else {
                0
            }
        }
        _ => unreachable!(),
    }
}

/// Distances to the nearest and second-nearest jittered lattice point and
/// an id of the nearest.
fn cells(seed: u32, u: f32, v: f32) -> (f32, f32, u32) {
    let (gx, gy) = (u.floor() as i32, v.floor() as i32);
    let (mut d1, mut d2, mut id) = (f32::MAX, f32::MAX, 0u32);
    for j in -1..=1 {
        for i in -1..=1 {
            let (cx, cy) = (gx + i, gy + j);
            let px = cx as f32 + hash_unit(seed, cx, cy);
            let py = cy as f32 + hash_unit(seed ^ 0x5bd1_e995, cx, cy);
            let d = ((u - px) * (u - px) + (v - py) * (v - py)).sqrt();
            if d < d1 {
                d2 = d1;
                d1 = d;
                id = hash2(seed ^ 0x2545_f491, cx, cy);
            } else if d < d2 {
                d2 = d;
            }
        }
    }
    (d1, d2, id)
}

fn hue(h: f32) -> Rgb {
    let h6 = frac(h) * 6.0;
    [clamp01((h6 - 3.0).abs() - 1.0), clamp01(2.0 - (h6 - 2.0).abs()), clamp01(2.0 - (h6 - 4.0).abs())]
}

// ---------------------------------------------------------------------------
// Backgrounds

/// Orientation of each family's gradient; a random jitter is added.
const BG_BASE_ANGLE: [f32; 16] =
    [FRAC_PI_2, 0.0, 0.0, PI / 4.0, 0.0, FRAC_PI_2, 0.0, 0.0, 0.0, 0.0, 3.0 * PI / 4.0, -FRAC_PI_2, 0.0, 0.3, 0.0, 0.0];

#[derive(Clone, Copy, Debug)]
struct BgParams {
    family: u16,
    dx: f32,
    dy: f32,
    offset: f32,
    cx: f32,
    cy: f32,
    ox: f32,
    oy: f32,
    brightness: f32,
    seed: u32,
    grain_seed: u32,
}

impl BgParams {
    /// Always draws the same number of words whatever the family, so that
    /// the family never shifts the rest of an image's stream.
    fn random<R: RngCore>(r: &mut R, family: u16) -> BgParams {
        let angle = BG_BASE_ANGLE[family as usize] + uniform(r, -0.35, 0.35);
        BgParams {
            family,
            dx: cos(angle),
            dy: sin(angle),
            offset: uniform(r, -0.15, 0.15),
            cx: uniform(r, 0.2, 0.8),
            cy: uniform(r, 0.2, 0.8),
            ox: uniform(r, 0.0, 64.0),
            oy: uniform(r, 0.0, 64.0),
            brightness: uniform(r, 0.92, 1.08),
            seed: r.next_u32(),
            grain_seed: r.next_u32(),
        }
    }
}

/// Low-frequency fields (gradients, soft blobs, a horizon): nothing here
/// varies faster than a few cycles per image, unlike every home texture.
fn background_rgb(bp: &BgParams, px: usize, py: usize, size: f32) -> Rgb {
    let x = (px as f32 + 0.5) / size;
    let y = (py as f32 + 0.5) / size;
    let lin = clamp01(0.5 + (x - 0.5) * bp.dx + (y - 0.5) * bp.dy + bp.offset);
    let (rx, ry) = (x - bp.cx, y - bp.cy);
    let rad = clamp01((rx * rx + ry * ry).sqrt() * 1.4);
    let noise = || fbm(bp.seed, x * 2.5 + bp.ox, y * 2.5 + bp.oy);
    let c = |r: u8, g: u8, b: u8| rgb8([r, g, b]);
    let col = match bp.family {
        0 => mix(c(140, 190, 242), c(242, 247, 255), lin),
        1 => mix(c(237, 217, 153), c(230, 150, 64), lin),
        2 => mix(c(13, 77, 26), c(77, 140, 51), noise()),
        3 => mix(c(90, 50, 140), c(230, 128, 180), lin),
        4 => mix(c(13, 38, 102), c(64, 102, 153), noise()),
        5 => mix(c(153, 204, 255), c(115, 77, 38), smooth(clamp01((lin - 0.5) * 8.0 + 0.5))),
        6 => mix(c(178, 242, 217), c(250, 255, 252), smooth(clamp01((noise() - 0.5) * 4.0 + 0.5))),
        7 => {
            let s = 1.0 - rad;
            mix(c(8, 8, 30), c(77, 77, 128), s * s)
        }
        8 => mix(c(255, 230, 102), c(204, 51, 26), rad),
        9 => mix(c(217, 191, 242), c(242, 204, 217), noise()),
        10 => mix(c(235, 230, 215), c(150, 190, 140), smooth(clamp01((lin - 0.5) * 6.0 + 0.5))),
        11 => mix(c(0, 115, 115), c(0, 51, 64), lin),
        12 => mix(c(204, 230, 77), c(102, 166, 51), smooth(clamp01((noise() - 0.5) * 4.0 + 0.5))),
        13 => mix(c(140, 90, 51), c(110, 70, 38), 0.5 + 0.5 * sin(TAU * (lin * 2.5 + noise() * 0.8))),
        14 => mix(c(140, 153, 178), c(51, 64, 89), rad),
        15 => mix(c(128, 13, 26), c(255, 153, 140), clamp01(lin * 0.8 + noise() * 0.4 - 0.1)),
        f => unreachable!("background family {f} out of range"),
    };
    let g = (hash_unit(bp.grain_seed, px as i32, py as i32) - 0.5) * 0.03;
    [clamp01(col[0] * bp.brightness + g), clamp01(col[1] * bp.brightness + g), clamp01(col[2] * bp.brightness + g)]
}

enum Backdrop {
    Family(BgParams),
    Flat(Rgb),
}

impl Backdrop {
    fn id(&self) -> u16 {
        match self {
            Backdrop::Family(bp) => bp.family,
            Backdrop::Flat(_) => PLAIN_BACKGROUND,
        }
    }

    fn at(&self, px: usize, py: usize, size: f32) -> Rgb {
        match self {
            Backdrop::Family(bp) => background_rgb(bp, px, py, size),
            Backdrop::Flat(c) => *c,
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering

fn render_full(cfg: &SynthConfig, split: Split, index: u32) -> (SynthImage, Vec<f32>) {
    if let Err(e) = check_size(cfg.size) {
        panic!("{e}");
    }
    let size = cfg.size;
    let classes = NUM_CLASSES as u32;
    let label = (index % classes) as u16;
    let round = index / classes;
    let mut rng = stream(&[cfg.seed, DOMAIN_IMAGE, split.tag(), index as u64]);
    let mut file_name = format!("{index:04}.png");

    let (buf, texture, background, cov) = match split {
        Split::Train | Split::Val => {
            let pose = Pose::random(&mut rng, size);
            // Both the coin and the alternative are always drawn, so the
            // probabilities change only the choice, never the pose or the
            // background instance: p-variants of a split stay aligned.
            let keep_tex = unit(&mut rng) < cfg.p_texture;
            let other_tex = below(&mut rng, classes) as u16;
            let tp = TexParams::random(&mut rng);
            let keep_bg = unit(&mut rng) < cfg.p_background;
            let other_bg = below(&mut rng, classes) as u16;
            let tex = if keep_tex { label } else { other_tex };
            let bg = Backdrop::Family(BgParams::random(&mut rng, if keep_bg { label } else { other_bg }));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::Stylized => {
            let pose = Pose::random(&mut rng, size);
            let held_out = TEXTURE_NAMES.len() as u32 - HELD_OUT_TEXTURE_START as u32;
            let tex = HELD_OUT_TEXTURE_START + below(&mut rng, held_out) as u16;
            let tp = TexParams::random(&mut rng);
            let family = below(&mut rng, classes) as u16;
            let bg = Backdrop::Family(BgParams::random(&mut rng, family));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::CueConflict => {
            // Round k pairs every shape A with texture class A+1+(k mod 15),
            // so 15 consecutive rounds cover each ordered pair exactly once.
            let tex = ((label as u32 + 1 + round % (classes - 1)) % classes) as u16;
            let pose = Pose::random(&mut rng, size);
            let m = 1 + below(&mut rng, TEXTURE_INSTANCES);
            let tp = TexParams::random(&mut stream(&[cfg.seed, DOMAIN_TEXTURE_INSTANCE, tex as u64, m as u64]));
            let bg = Backdrop::Flat([0.72, 0.72, 0.72]);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            file_name =
                format!("{index:04}_{}{}-{}{}.png", CLASSES[label as usize], round + 1, CLASSES[tex as usize], m);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::MixedSame | Split::MixedRand => {
            let mut obj = stream(&[cfg.seed, DOMAIN_BG_OBJECT, index as u64]);
            let pose = Pose::random(&mut obj, size);
            let tp = TexParams::random(&mut obj);
            let other = ((label as u32 + 1 + below(&mut rng, classes - 1)) % classes) as u16;
            let family = if split == Split::MixedSame { label } else { other };
            let bg = Backdrop::Family(BgParams::random(&mut rng, family));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, label, &tp, &bg), label, bg.id(), cov)
        }
        Split::Edge => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_edges(size, &cov), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Silhouette => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            let buf = cov.iter().flat_map(|&c| [if c >= 0.5 { 0u8 } else { 255 }; 3]).collect();
            (buf, NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Sketch => {
            let pose = Pose::random(&mut rng, size);
            let contours = placed_contours(label as usize, &pose);
            let cov = rasterize(&contours, size);
            (paint_sketch(size, &contours, &mut rng), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Rendition => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_rendition(size, &cov, &mut rng), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
    };
    let image = RgbImage::from_raw(size, size, buf).expect("buffer matches image size");
    (SynthImage { image, label, texture, background, file_name }, cov)
}

fn paint_object(size: u32, cov: &[f32], pose: &Pose, tex: u16, tp: &TexParams, bg: &Backdrop) -> Vec<u8> {
    let n = size as usize;
    let s = size as f32;
    let mut buf = Vec::with_capacity(n * n * 3);
    for py in 0..n {
        for px in 0..n {
            let back = bg.at(px, py, s);
            let c = cov[py * n + px];
            let col = if c > 0.0 { mix(back, texture_rgb(tex, tp, px, py, pose, s), c.min(1.0)) } else { back };
            buf.extend(col.map(quantise));
        }
    }
    buf
}

/// Thin dark lines on white where the coverage changes (Sobel magnitude),
/// like a Canny edge map; widened on large images so they scale.
fn paint_edges(size: u32, cov: &[f32]) -> Vec<u8> {
    let n = size as usize;
    let at = |x: isize, y: isize| cov[(y.clamp(0, n as isize - 1) as usize) * n + x.clamp(0, n as isize - 1) as usize];
    let mut dark = vec![0.0f32; n * n];
    for y in 0..n as isize {
        for x in 0..n as isize {
            let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x - 1, y)
                - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x, y - 1)
                - at(x + 1, y - 1);
            dark[y as usize * n + x as usize] = clamp01((gx * gx + gy * gy).sqrt() * 0.375);
        }
    }
    let dark = morph(&dark, n, n / 100, true);
    dark.iter().flat_map(|&d| [quantise(1.0 - d); 3]).collect()
}

/// Pencil on paper: the outline resampled into short segments, each point
/// displaced by a smooth random walk, drawn twice (a firm pass and a lighter
/// sketchy one) with random gaps so strokes look broken and hand-made.
fn paint_sketch<R: RngCore>(size: u32, contours: &[Vec<Pt>], rng: &mut R) -> Vec<u8> {
    let n = size as usize;
    let k = size as f32 / 64.0;
    let step = 3.0 * k;
    let half_width = 0.45 * k + 0.25;
    let grain_seed = rng.next_u32();
    let mut ink = vec![0.0f32; n * n];
    for contour in contours {
        let mut pts: Vec<Pt> = Vec::new();
        for i in 0..contour.len() {
            let (a, b) = (contour[i], contour[(i + 1) % contour.len()]);
            let len = ((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1])).sqrt();
            let segs = ((len / step).ceil() as usize).max(1);
            for s in 0..segs {
                let t = s as f32 / segs as f32;
                pts.push([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]);
            }
        }
        if pts.len() < 2 {
            continue;
        }
        for (amp, keep, opacity) in [(0.8 * k, 0.93f32, 0.9f32), (1.5 * k, 0.6, 0.5)] {
            let (mut jx, mut jy) = (uniform(rng, -amp, amp), uniform(rng, -amp, amp));
            let mut drawing = true;
            let mut prev: Option<Pt> = None;
            // One point past the start closes the loop.
            for i in 0..=pts.len() {
                jx = 0.7 * jx + uniform(rng, -amp, amp) * 0.6;
                jy = 0.7 * jy + uniform(rng, -amp, amp) * 0.6;
                let p = pts[i % pts.len()];
                let q = [p[0] + jx, p[1] + jy];
                let toggle = unit(rng);
                drawing = if drawing { toggle < keep } else { toggle < 0.5 };
                if let (Some(a), true) = (prev, drawing) {
                    draw_segment(&mut ink, n, a, q, half_width, opacity);
                }
                prev = Some(q);
            }
        }
    }
    let paper = rgb8([246, 241, 226]);
    let graphite = rgb8([45, 45, 55]);
    let mut buf = Vec::with_capacity(n * n * 3);
    for py in 0..n {
        for px in 0..n {
            let g = (hash_unit(grain_seed, px as i32, py as i32) - 0.5) * 0.04;
            let p = [paper[0] + g, paper[1] + g, paper[2] + g];
            buf.extend(mix(p, graphite, ink[py * n + px]).map(quantise));
        }
    }
    buf
}

fn draw_segment(ink: &mut [f32], n: usize, a: Pt, b: Pt, half_width: f32, opacity: f32) {
    let reach = half_width + 1.0;
    let x0 = (a[0].min(b[0]) - reach).floor().max(0.0) as usize;
    let y0 = (a[1].min(b[1]) - reach).floor().max(0.0) as usize;
    let x1 = ((a[0].max(b[0]) + reach).ceil().max(0.0) as usize).min(n);
    let y1 = ((a[1].max(b[1]) + reach).ceil().max(0.0) as usize).min(n);
    let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
    let len2 = ex * ex + ey * ey;
    for y in y0..y1 {
        for x in x0..x1 {
            let (qx, qy) = (x as f32 + 0.5 - a[0], y as f32 + 0.5 - a[1]);
            let t = if len2 > 0.0 { clamp01((qx * ex + qy * ey) / len2) } else { 0.0 };
            let (dx, dy) = (qx - t * ex, qy - t * ey);
            let alpha = clamp01(half_width + 0.5 - (dx * dx + dy * dy).sqrt()) * opacity;
            let cell = &mut ink[y * n + x];
            *cell = cell.max(alpha);
        }
    }
}

const BRIGHT: [[u8; 3]; 8] = [
    [230, 50, 50],
    [250, 150, 30],
    [245, 215, 40],
    [60, 180, 75],
    [50, 110, 230],
    [150, 70, 200],
    [240, 110, 170],
    [40, 200, 210],
];

const PASTEL: [[u8; 3]; 6] =
    [[250, 245, 230], [220, 235, 250], [235, 250, 225], [250, 225, 235], [238, 238, 238], [255, 250, 205]];

/// The ImageNet-R analogue: the same shapes in other rendering styles
/// (cartoon with a thick outline, pixel art, neon), flat colours unrelated to
/// the class, on a plain backdrop.
fn paint_rendition<R: RngCore>(size: u32, cov: &[f32], rng: &mut R) -> Vec<u8> {
    let n = size as usize;
    let style = below(rng, 3);
    let fill = rgb8(BRIGHT[below(rng, BRIGHT.len() as u32) as usize]);
    let back = rgb8(PASTEL[below(rng, PASTEL.len() as u32) as usize]);
    let outline = rgb8([25, 25, 35]);
    let mut out = vec![[0.0f32; 3]; n * n];
    match style {
        0 => {
            let r = (n / 48).max(1);
            let outer = morph(cov, n, r, true);
            let inner = morph(cov, n, r, false);
            for i in 0..n * n {
                let body = mix(back, fill, cov[i].min(1.0));
                out[i] = mix(body, outline, clamp01(outer[i] - inner[i]));
            }
        }
        1 => {
            let block = (n / 20).max(2);
            let g = n.div_ceil(block);
            let mut filled = vec![false; g * g];
            for by in 0..g {
                for bx in 0..g {
                    let (mut sum, mut count) = (0.0f32, 0.0f32);
                    for y in by * block..((by + 1) * block).min(n) {
                        for x in bx * block..((bx + 1) * block).min(n) {
                            sum += cov[y * n + x];
                            count += 1.0;
                        }
                    }
                    filled[by * g + bx] = sum >= 0.5 * count;
                }
            }
            let is = |bx: isize, by: isize| {
                bx >= 0 && by >= 0 && (bx as usize) < g && (by as usize) < g && filled[by as usize * g + bx as usize]
            };
            for y in 0..n {
                for x in 0..n {
                    let (bx, by) = ((x / block) as isize, (y / block) as isize);
                    out[y * n + x] = if !is(bx, by) {
                        back
                    } else if !is(bx - 1, by) || !is(bx + 1, by) || !is(bx, by - 1) || !is(bx, by + 1) {
                        outline
                    } else {
                        fill
                    };
                }
            }
        }
        _ => {
            let night = rgb8([13, 10, 26]);
            let r = (n / 64).max(1);
            let outer = morph(cov, n, r, true);
            let inner = morph(cov, n, r, false);
            let line: Vec<f32> = outer.iter().zip(&inner).map(|(o, i)| clamp01(o - i)).collect();
            let glow = box_blur(&line, n, (n / 16).max(2));
            let core = mix(fill, [1.0, 1.0, 1.0], 0.55);
            for i in 0..n * n {
                let g = clamp01(glow[i] * 2.2);
                let lit = [night[0] + fill[0] * g, night[1] + fill[1] * g, night[2] + fill[2] * g];
                out[i] = mix(lit, core, line[i]);
            }
        }
    }
    out.iter().flat_map(|c| c.map(quantise)).collect()
}

/// Separable square max (dilate) or min (erode) filter of radius r.
fn morph(src: &[f32], n: usize, r: usize, max: bool) -> Vec<f32> {
    if r == 0 {
        return src.to_vec();
    }
    let pick = |a: f32, b: f32| if max { a.max(b) } else { a.min(b) };
    let mut tmp = vec![0.0f32; n * n];
    let mut out = vec![0.0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(n - 1));
            tmp[y * n + x] = (lo + 1..=hi).fold(src[y * n + lo], |m, k| pick(m, src[y * n + k]));
        }
    }
    for y in 0..n {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(n - 1));
        for x in 0..n {
            out[y * n + x] = (lo + 1..=hi).fold(tmp[lo * n + x], |m, k| pick(m, tmp[k * n + x]));
        }
    }
    out
}

/// Separable box blur of radius r, treating outside pixels as 0.
fn box_blur(src: &[f32], n: usize, r: usize) -> Vec<f32> {
    let w = 1.0 / (2 * r + 1) as f32;
    let mut tmp = vec![0.0f32; n * n];
    let mut out = vec![0.0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(n - 1));
            tmp[y * n + x] = (lo..=hi).map(|k| src[y * n + k]).sum::<f32>() * w;
        }
    }
    for y in 0..n {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(n - 1));
        for x in 0..n {
            out[y * n + x] = (lo..=hi).map(|k| tmp[k * n + x]).sum::<f32>() * w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn cfg() -> SynthConfig {
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
    fn own_math_matches_std() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            assert!((sin(x) - x.sin()).abs() < 2e-6, "sin {x}");
            assert!((cos(x) - x.cos()).abs() < 2e-6, "cos {x}");
            let (y, z) = (sin(x * 1.7) * 3.0, cos(x * 0.3) * 2.0 - 0.5);
            assert!((atan2(y, z) - y.atan2(z)).abs() < 2e-5, "atan2 {y} {z}");
        }
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
    fn cue_conflict_names_cover_all_pairs() {
        let mut seen = [[0u32; NUM_CLASSES]; NUM_CLASSES];
        for index in 0..16 * 15 {
            let img = render(&cfg(), Split::CueConflict, index);
            let (shape, texture) = parse_cue_conflict(&img.file_name).expect(&img.file_name);
            assert_eq!(shape, CLASSES[img.label as usize], "{}", img.file_name);
            assert_eq!(texture, CLASSES[img.texture as usize], "{}", img.file_name);
            assert_ne!(shape, texture);
            assert!(img.file_name.starts_with(&format!("{index:04}_")));
            assert_eq!(img.background, PLAIN_BACKGROUND);
            seen[img.label as usize][img.texture as usize] += 1;
        }
        for (a, row) in seen.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                assert_eq!(count, (a != b) as u32, "pair {a},{b}");
            }
        }
        // The brief's example name parses the same way.
        assert_eq!(parse_cue_conflict("0007_star3-ring1.png"), Some(("star", "ring")));
    }

    #[test]
    fn silhouettes_are_binary() {
        for index in 0..32 {
            let img = render(&cfg(), Split::Silhouette, index);
            let px = img.image.as_raw();
            assert!(px.iter().all(|&v| v == 0 || v == 255));
            let black = px.chunks(3).filter(|p| p[0] == 0).count() as f32 / (64.0 * 64.0);
            assert!((0.04..0.6).contains(&black), "index {index}: black fraction {black}");
            assert_eq!((img.texture, img.background), (NO_TEXTURE, PLAIN_BACKGROUND));
        }
    }

    #[test]
    fn line_drawings_are_mostly_light_with_some_ink() {
        for split in [Split::Edge, Split::Sketch] {
            for index in 0..32 {
                let img = render(&cfg(), split, index);
                let grey: Vec<u8> = img.image.pixels().map(|p| p[1]).collect();
                let light = grey.iter().filter(|&&v| v > 200).count() as f32 / grey.len() as f32;
                let dark = grey.iter().filter(|&&v| v < 128).count();
                assert!(light > 0.75, "{split:?} {index}: light {light}");
                assert!(dark > 40, "{split:?} {index}: only {dark} dark pixels");
            }
        }
    }

    fn fully_covered(cov: &[f32]) -> Vec<usize> {
        cov.iter().enumerate().filter(|(_, &c)| c >= 0.9999).map(|(i, _)| i).collect()
    }

    fn in_palette(p: &[u8], palette: &[[u8; 3]]) -> bool {
        palette.iter().any(|c| c.iter().zip(p).all(|(a, b)| a.abs_diff(*b) <= 1))
    }

    #[test]
    fn shortcuts_follow_the_probabilities() {
        let always = SynthConfig { p_texture: 1.0, p_background: 1.0, ..cfg() };
        for index in 0..64 {
            let (img, cov) = render_full(&always, Split::Train, index);
            assert_eq!((img.texture, img.background), (img.label, img.label));
            let inside = fully_covered(&cov);
            assert!(inside.len() > 100, "index {index}: {} interior pixels", inside.len());
            let raw = img.image.as_raw();
            let home = HOME_PALETTES[img.label as usize];
            let hits = inside.iter().filter(|&&i| in_palette(&raw[3 * i..3 * i + 3], home)).count();
            assert_eq!(hits, inside.len(), "index {index}: object pixels off the home palette");
            // And the pattern is not a flat fill: every palette colour of a
            // two-colour texture shows up.
            if home.len() == 2 {
                for c in home {
                    assert!(inside.iter().any(|&i| in_palette(&raw[3 * i..3 * i + 3], &[*c])), "index {index}");
                }
            }
        }
        let n = 16 * 40;
        let home_rate = |c: &SynthConfig| {
            let (mut t, mut b) = (0, 0);
            for index in 0..n {
                let img = render(c, Split::Train, index);
                t += (img.texture == img.label) as u32;
                b += (img.background == img.label) as u32;
            }
            (t as f32 / n as f32, b as f32 / n as f32)
        };
        let (t, b) = home_rate(&cfg());
        // Expected 0.8 + 0.2/16 = 0.8125.
        assert!((0.76..0.87).contains(&t) && (0.76..0.87).contains(&b), "{t} {b}");
        let (t, b) = home_rate(&SynthConfig { p_texture: 0.0, p_background: 0.0, ..cfg() });
        assert!(t < 0.12 && b < 0.12, "{t} {b}");
    }

    #[test]
    fn probabilities_do_not_move_the_object() {
        let randomised = SynthConfig { p_texture: 0.0, p_background: 0.0, ..cfg() };
        for index in 0..16 {
            assert_eq!(render_full(&cfg(), Split::Train, index).1, render_full(&randomised, Split::Train, index).1);
        }
    }

    #[test]
    fn stylized_uses_only_held_out_textures() {
        let mut used = std::collections::HashSet::new();
        for index in 0..16 * 4 {
            let img = render(&cfg(), Split::Stylized, index);
            assert!(img.texture >= HELD_OUT_TEXTURE_START && (img.texture as usize) < TEXTURE_NAMES.len());
            assert!((img.background as usize) < NUM_CLASSES);
            used.insert(img.texture);
        }
        assert_eq!(used.len(), TEXTURE_NAMES.len() - HELD_OUT_TEXTURE_START as usize);
    }

    #[test]
    fn backgrounds_challenge_pairs_objects() {
        for index in 0..48 {
            let (same, cs) = render_full(&cfg(), Split::MixedSame, index);
            let (rand, cr) = render_full(&cfg(), Split::MixedRand, index);
            assert_eq!(same.file_name, rand.file_name);
            assert_eq!((same.label, same.texture), (rand.label, rand.label));
            assert_eq!(same.texture, same.label);
            assert_eq!(same.background, same.label);
            assert_ne!(rand.background, rand.label);
            assert!((rand.background as usize) < NUM_CLASSES);
            // Same object instance: identical coverage and identical interior pixels.
            assert_eq!(cs, cr);
            let (a, b) = (same.image.as_raw(), rand.image.as_raw());
            for i in fully_covered(&cs) {
                assert_eq!(a[3 * i..3 * i + 3], b[3 * i..3 * i + 3], "index {index} pixel {i}");
            }
            assert_ne!(a, b);
        }
    }

    /// Mean absolute difference between adjacent pixels, in grey levels.
    fn roughness(img: &RgbImage) -> f32 {
        let (w, h) = img.dimensions();
        let diff =
            |a: &image::Rgb<u8>, b: &image::Rgb<u8>| (0..3).map(|c| (a[c] as f32 - b[c] as f32).abs()).sum::<f32>();
        let mut sum = 0.0;
        for y in 1..h {
            for x in 1..w {
                let p = img.get_pixel(x, y);
                sum += diff(p, img.get_pixel(x - 1, y)) + diff(p, img.get_pixel(x, y - 1));
            }
        }
        sum / ((w - 1) * (h - 1) * 6) as f32
    }

    #[test]
    fn backgrounds_are_smoother_than_textures() {
        let size = 64u32;
        let n = size as usize;
        let pose = Pose { cx: 32.0, cy: 32.0, radius: 24.0, cos: 1.0, sin: 0.0 };
        let full = vec![1.0f32; n * n];
        let empty = vec![0.0f32; n * n];
        let mut rng = stream(&[99]);
        let mut roughest_bg = 0.0f32;
        for family in 0..16u16 {
            let bg = Backdrop::Family(BgParams::random(&mut rng, family));
            let img =
                RgbImage::from_raw(size, size, paint_object(size, &empty, &pose, 0, &TexParams::random(&mut rng), &bg))
                    .unwrap();
            roughest_bg = roughest_bg.max(roughness(&img));
        }
        let mut smoothest_tex = f32::MAX;
        for tex in 0..TEXTURE_NAMES.len() as u16 {
            let tp = TexParams::random(&mut rng);
            let img =
                RgbImage::from_raw(size, size, paint_object(size, &full, &pose, tex, &tp, &Backdrop::Flat([0.0; 3])))
                    .unwrap();
            smoothest_tex = smoothest_tex.min(roughness(&img));
        }
        assert!(roughest_bg * 2.0 < smoothest_tex, "backgrounds {roughest_bg} vs textures {smoothest_tex}");
    }

    #[test]
    fn sizes_scale() {
        for size in [16, 32, 100, 128] {
            let c = SynthConfig { size, ..cfg() };
            for split in Split::ALL {
                let img = render(&c, split, 3);
                assert_eq!(img.image.dimensions(), (size, size));
            }
            // The object's share of the image does not depend on the size.
            let (_, cov) = render_full(&c, Split::Silhouette, 5);
            let (_, cov64) = render_full(&cfg(), Split::Silhouette, 5);
            let share = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
            assert!((share(&cov) - share(&cov64)).abs() < 0.02, "size {size}");
        }
    }

    #[test]
    fn coverage_is_exact_for_a_square() {
        let pose = Pose { cx: 8.0, cy: 8.0, radius: 4.0, cos: 1.0, sin: 0.0 };
        let cs: Vec<Vec<Pt>> =
            vec![vec![[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]].into_iter().map(|p| pose.apply(p)).collect()];
        let cov = rasterize(&cs, 16);
        // The square spans [6, 10] in both axes.
        let total: f32 = cov.iter().sum();
        assert!((total - 16.0).abs() < 1e-4, "{total}");
        assert_eq!(cov[7 * 16 + 7], 1.0);
        assert_eq!(cov[5 * 16 + 5], 0.0);
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
