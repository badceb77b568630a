//! The 15 corruptions. Each follows `imagecorruptions` (bethgelab, master
//! c959e65) step by step at 224 px: its severity table, float widths and the
//! final `np.uint8` (truncation). `s = min(w, h) / 224` scales what is
//! measured in pixels (docs/corruptions.md); at s = 1 it changes nothing.

use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;

use super::filters::{self, Border};
use super::rng::{PoissonTable, Rng};
use super::{CorruptOptions, Corruption, Trace};

struct Ctx<'a> {
    img: &'a RgbImage,
    w: usize,
    h: usize,
    /// Size relative to the reference's 224 px.
    s: f64,
    sev: usize,
    rng: Rng,
    trace: Trace,
}

impl Ctx<'_> {
    fn px(&self) -> &[u8] {
        self.img.as_raw()
    }

    /// `np.array(x) / 255.`
    fn unit64(&self) -> Vec<f64> {
        self.px().iter().map(|&v| v as f64 / 255.0).collect()
    }

    /// A length in 224-px pixels at this size, rounded, at least 1.
    fn pixels(&self, v: f64) -> usize {
        if self.s == 1.0 {
            v as usize
        } else {
            ((v * self.s).round() as usize).max(1)
        }
    }

    fn out(&self, v: Vec<u8>) -> RgbImage {
        RgbImage::from_raw(self.w as u32, self.h as u32, v).expect("buffer sized w×h×3")
    }
}

/// `np.uint8(np.clip(x, 0, 1) * 255)`: clip, scale, truncate.
fn from_unit(v: &[f64]) -> Vec<u8> {
    v.iter().map(|&x| (x.clamp(0.0, 1.0) * 255.0) as u8).collect()
}

fn from_unit32(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| (x.clamp(0.0, 1.0) * 255.0) as u8).collect()
}

/// `np.uint8(np.clip(x, 0, 255))`.
fn from_255(v: &[f64]) -> Vec<u8> {
    v.iter().map(|&x| x.clamp(0.0, 255.0) as u8).collect()
}

pub(super) fn apply(img: &RgbImage, c: Corruption, severity: u8, seed: u64, opts: &CorruptOptions) -> Result<(RgbImage, Trace)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut x = Ctx { img, w, h, s: w.min(h) as f64 / 224.0, sev: severity as usize - 1, rng: Rng::new(seed), trace: Trace::default() };
    use Corruption::*;
    let out = match c {
        GaussianNoise => gaussian_noise(&mut x),
        ShotNoise => shot_noise(&mut x),
        ImpulseNoise => impulse_noise(&mut x),
        DefocusBlur => defocus_blur(&x),
        GlassBlur => glass_blur(&mut x),
        MotionBlur => motion_blur(&mut x),
        ZoomBlur => zoom_blur(&x),
        Snow => snow(&mut x),
        Frost => frost(&mut x, opts)?,
        Fog => fog(&mut x),
        Brightness => brightness(&x),
        Contrast => contrast(&x),
        ElasticTransform => elastic(&mut x),
        Pixelate => pixelate(&x),
        JpegCompression => jpeg(&x)?,
    };
    Ok((out, x.trace))
}

fn gaussian_noise(x: &mut Ctx) -> RgbImage {
    let c = [0.08, 0.12, 0.18, 0.26, 0.38][x.sev];
    let v: Vec<f64> = x.unit64().into_iter().map(|p| p + c * x.rng.normal()).collect();
    x.out(from_unit(&v))
}

fn shot_noise(x: &mut Ctx) -> RgbImage {
    let c = [60, 25, 12, 5, 3][x.sev];
    let table = PoissonTable::new(c);
    let out: Vec<u8> = x
        .px()
        .to_vec()
        .into_iter()
        .map(|p| {
            let k = table.draw_capped(p, x.rng.unit());
            ((k as f64 / c as f64).clamp(0.0, 1.0) * 255.0) as u8
        })
        .collect();
    x.out(out)
}

fn impulse_noise(x: &mut Ctx) -> RgbImage {
    // skimage random_noise(mode='s&p'): flipped = U ≤ amount, salted = U' ≤ 0.5, per element.
    let amount = [0.03, 0.06, 0.09, 0.17, 0.27][x.sev];
    let v: Vec<f64> = x
        .unit64()
        .into_iter()
        .map(|p| {
            let flipped = x.rng.unit() <= amount;
            let salted = x.rng.unit() <= 0.5;
            match (flipped, salted) {
                (false, _) => p,
                (true, true) => 1.0,
                (true, false) => 0.0,
            }
        })
        .collect();
    x.out(from_unit(&v))
}

/// `imagecorruptions.disk`: the aliased disk X² + Y² ≤ r² on a
/// (2R+1)² grid (R = max(8, r)), normalised, then `cv2.GaussianBlur`
/// (3×3, or 5×5 for r > 8, σ = alias_blur, BORDER_REFLECT_101) in f32.
fn disk_kernel(radius: usize, alias_blur: f64) -> (Vec<f32>, usize) {
    let big = radius.max(8);
    let d = 2 * big + 1;
    let inside: Vec<bool> = (0..d * d)
        .map(|i| {
            let (y, x) = ((i / d) as i64 - big as i64, (i % d) as i64 - big as i64);
            x * x + y * y <= (radius * radius) as i64
        })
        .collect();
    let n = inside.iter().filter(|&&b| b).count() as f32;
    let disk: Vec<f32> = inside.iter().map(|&b| if b { 1.0 / n } else { 0.0 }).collect();
    // cv2.getGaussianKernel(k, σ): exp(−x²/(2σ²)) for x = i − (k−1)/2, normalised, as float32.
    let k = if radius <= 8 { 3 } else { 5 };
    let g: Vec<f64> = (0..k)
        .map(|i| {
            let d = i as f64 - (k - 1) as f64 / 2.0;
            libm::exp(-0.5 / (alias_blur * alias_blur) * (d * d))
        })
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f32> = g.iter().map(|v| (v / gs) as f32).collect();
    let r = (k / 2) as isize;
    let pass = |src: &[f32], along_x: bool| -> Vec<f32> {
        let mut out = vec![0f32; d * d];
        for y in 0..d {
            for x in 0..d {
                let mut acc = 0f32;
                for (j, gj) in g.iter().enumerate() {
                    let o = j as isize - r;
                    let (sy, sx) = if along_x {
                        (y, filters::fold(x as isize + o, d, Border::Reflect101))
                    } else {
                        (filters::fold(y as isize + o, d, Border::Reflect101), x)
                    };
                    acc += gj * src[sy * d + sx];
                }
                out[y * d + x] = acc;
            }
        }
        out
    };
    (pass(&pass(&disk, true), false), big)
}

/// Area-resample a (2R+1)² kernel drawn on the 224-px grid onto a grid
/// whose cells are 1/s of them: every new cell collects the overlapping
/// fractions of the old cells, so the sum (1) and the physical extent are
/// kept and s = 1 is the identity.
fn rescale_kernel(k: &[f32], big: usize, s: f64) -> (Vec<f32>, usize) {
    let m = (((big as f64 + 0.5) * s) - 0.5).ceil().max(0.0) as usize;
    let (d, e) = (2 * big + 1, 2 * m + 1);
    // overlap[j][u]: length of old cell u (centre u − big) inside new cell j (centre j − m, width 1/s).
    let overlap: Vec<Vec<f64>> = (0..e)
        .map(|j| {
            let (a, b) = (((j as f64 - m as f64) - 0.5) / s, ((j as f64 - m as f64) + 0.5) / s);
            (0..d)
                .map(|u| {
                    let (lo, hi) = (u as f64 - big as f64 - 0.5, u as f64 - big as f64 + 0.5);
                    (hi.min(b) - lo.max(a)).max(0.0)
                })
                .collect()
        })
        .collect();
    let mut out = vec![0f32; e * e];
    for (i, oi) in overlap.iter().enumerate() {
        for (j, oj) in overlap.iter().enumerate() {
            let mut acc = 0.0f64;
            for (u, &a) in oi.iter().enumerate().filter(|(_, a)| **a > 0.0) {
                for (v, &b) in oj.iter().enumerate().filter(|(_, b)| **b > 0.0) {
                    acc += a * b * k[u * d + v] as f64;
                }
            }
            out[i * e + j] = acc as f32;
        }
    }
    (out, m)
}

fn defocus_blur(x: &Ctx) -> RgbImage {
    let (radius, alias) = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][x.sev];
    let (k, r) = disk_kernel(radius, alias);
    let (k, r) = if x.s == 1.0 { (k, r) } else { rescale_kernel(&k, r, x.s) };
    let src: Vec<f32> = x.px().iter().map(|&v| v as f32 / 255.0).collect();
    x.out(from_unit32(&filters::filter2d(&src, x.w, x.h, &k, r)))
}

fn glass_blur(x: &mut Ctx) -> RgbImage {
    let (sigma, delta, iters) = [(0.7, 1.0, 2), (0.9, 2.0, 1), (1.0, 2.0, 3), (1.1, 3.0, 2), (1.5, 4.0, 2)][x.sev];
    let (w, h) = (x.w, x.h);
    let sigma = sigma * x.s;
    let delta = x.pixels(delta) as isize;
    let blurred = filters::gaussian_filter(&x.unit64(), w, h, 3, (sigma, sigma), 4.0, Border::Nearest);
    let mut px: Vec<u8> = blurred.iter().map(|&v| (v * 255.0) as u8).collect();
    // The reference's local "shuffle": rows and columns from the far edge − δ down to δ + 1, each
    // pixel paired with one at (dy, dx) drawn from [−δ, δ) (numpy randint excludes the top), dx
    // first. Its tuple swap `x[h, w], x[h', w'] = x[h', w'], x[h, w]` assigns numpy *views*: the
    // first store overwrites the pixel the second then reads, so (h, w) takes (h', w')'s value and
    // (h', w') keeps its own. Pixels are copied, not swapped, and ImageNet-C was made that way.
    for _ in 0..iters {
        for hh in (delta + 1..=h as isize - delta).rev() {
            for ww in (delta + 1..=w as isize - delta).rev() {
                let dx = x.rng.int_range(-delta as i32, delta as i32) as isize;
                let dy = x.rng.int_range(-delta as i32, delta as i32) as isize;
                let a = (hh as usize * w + ww as usize) * 3;
                let b = ((hh + dy) as usize * w + (ww + dx) as usize) * 3;
                px.copy_within(b..b + 3, a);
            }
        }
    }
    let again: Vec<f64> = px.iter().map(|&v| v as f64 / 255.0).collect();
    x.out(from_unit(&filters::gaussian_filter(&again, w, h, 3, (sigma, sigma), 4.0, Border::Nearest)))
}

fn motion_blur(x: &mut Ctx) -> RgbImage {
    let (radius, sigma) = [(10.0, 3.0), (15.0, 5.0), (15.0, 8.0), (15.0, 12.0), (20.0, 15.0)][x.sev];
    let angle = x.rng.uniform(-45.0, 45.0);
    x.trace.angle = Some(angle);
    let src: Vec<f64> = x.px().iter().map(|&v| v as f64).collect();
    let out = filters::motion_blur(&src, x.w, x.h, 3, x.pixels(radius), sigma * x.s, angle);
    x.out(from_255(&out))
}

/// The reference's `np.arange(1, stop, step)` zoom factors: numpy fills
/// `start + i·((start + step) − start)`; the counts are numpy's (12 for
/// severity 1 because 1.11 − 1 rounds above 0.11).
fn zoom_factors(sev: usize) -> Vec<f64> {
    let (n, step) = [(12, 0.01), (16, 0.01), (11, 0.02), (13, 0.02), (11, 0.03)][sev];
    let delta = (1.0 + step) - 1.0;
    (0..n).map(|i| 1.0 + i as f64 * delta).collect()
}

fn zoom_blur(x: &Ctx) -> RgbImage {
    let src32: Vec<f32> = x.unit64().into_iter().map(|v| v as f32).collect();
    let src: Vec<f64> = src32.iter().map(|&v| v as f64).collect();
    let zs = zoom_factors(x.sev);
    let mut acc = vec![0f32; src.len()];
    for &z in &zs {
        let (layer, _, _) = filters::clipped_zoom(&src, x.w, x.h, 3, z, true);
        for (a, l) in acc.iter_mut().zip(layer) {
            *a += l as f32;
        }
    }
    let n = (zs.len() + 1) as f32;
    let out: Vec<f32> = src32.iter().zip(&acc).map(|(a, b)| (a + b) / n).collect();
    x.out(from_unit32(&out))
}

fn snow(x: &mut Ctx) -> RgbImage {
    let (loc, scale, zoom, thresh, radius, sigma, blend) = [
        (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
        (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
        (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
    ][x.sev];
    // The layer is drawn at the 224-px-equivalent size with the reference's parameters and area-averaged to
    // the image: flakes a fraction of a pixel big cannot be drawn directly.
    let (lw, lh) = if x.s == 1.0 { (x.w, x.h) } else { ((x.w as f64 / x.s).round() as usize, (x.h as f64 / x.s).round() as usize) };
    // The zoom reads only the centre ceil(lh/zoom)×ceil(lw/zoom) of the
    // reference's array (5 to 25 % of it); the rest is drawn only to keep
    // the random stream where the reference's is.
    let (ch, cw) = ((lh as f64 / zoom).ceil() as usize, (lw as f64 / zoom).ceil() as usize);
    let (rows, cols) = ((lh - ch) / 2..(lh - ch) / 2 + ch, (lw - cw) / 2..(lw - cw) / 2 + cw);
    let noise: Vec<f64> = (0..lw * lh)
        .map(|i| {
            if rows.contains(&(i / lw)) && cols.contains(&(i % lw)) {
                loc + scale * x.rng.normal()
            } else {
                x.rng.skip_normal();
                0.0
            }
        })
        .collect();
    let (mut layer, zw, zh) = filters::clipped_zoom(&noise, lw, lh, 1, zoom, false);
    for v in layer.iter_mut() {
        *v = if *v < thresh { 0.0 } else { v.clamp(0.0, 1.0) };
    }
    let angle = x.rng.uniform(-135.0, -45.0);
    x.trace.angle = Some(angle);
    let blurred = filters::motion_blur(&layer, zw, zh, 1, radius, sigma, angle);
    let mut flakes = Vec::with_capacity(lw * lh);
    for y in 0..lh {
        flakes.extend(blurred[y * zw..y * zw + lw].iter().map(|&v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8 as f64 / 255.0));
    }
    let flakes = if (lw, lh) == (x.w, x.h) { flakes } else { filters::area_resize(&flakes, lw, lh, 1, x.w, x.h) };
    let (w, h) = (x.w, x.h);
    let px = x.px();
    let (b32, nb32) = (blend as f32, (1.0 - blend) as f32);
    let mut out = vec![0u8; w * h * 3];
    for i in 0..w * h {
        let rgb = [px[3 * i] as f32 / 255.0, px[3 * i + 1] as f32 / 255.0, px[3 * i + 2] as f32 / 255.0];
        // cv2 RGB2GRAY on float32.
        let gray = rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114;
        let lift = gray * 1.5 + 0.5;
        let rot = flakes[w * h - 1 - i];
        for k in 0..3 {
            let v = b32 * rgb[k] + nb32 * rgb[k].max(lift);
            out[3 * i + k] = ((v as f64 + flakes[i] + rot).clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    x.out(out)
}

/// Colour statistics of the five frost photos the reference draws from
/// (`frost1.png` … `frost5.jpg` in `imagecorruptions`; `frost6.jpg` is never
/// drawn because it uses `randint(5)`), measured over 200 random 224×224
/// crops of each photo enlarged 1.1× as the reference does
/// (scripts/corruption_frost_stats.py): per-channel mean of the crop means,
/// their spread between crops, and the mean within-crop standard deviation.
const FROST_STATS: [([f64; 3], [f64; 3], [f64; 3]); 5] = [
    ([77.4, 148.1, 164.4], [14.7, 8.3, 6.7], [22.9, 13.8, 13.1]),
    ([197.8, 202.1, 211.4], [6.0, 6.6, 7.0], [18.9, 19.4, 20.1]),
    ([197.5, 201.7, 211.0], [5.9, 6.5, 6.9], [19.0, 19.5, 20.3]),
    ([143.8, 158.6, 171.5], [7.2, 7.1, 7.6], [25.4, 25.4, 26.8]),
    ([100.8, 112.2, 124.0], [13.1, 12.6, 11.8], [34.9, 34.5, 33.8]),
];

const FROST_FILES: [&str; 5] = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"];

fn frost(x: &mut Ctx, opts: &CorruptOptions) -> Result<RgbImage> {
    let (a, b) = [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][x.sev];
    let idx = x.rng.below(5) as usize;
    x.trace.frost_index = Some(idx as u8);
    let (w, h) = (x.w, x.h);
    let layer: Vec<u8> = match &opts.frost_dir {
        Some(dir) => frost_photo_crop(x, dir, idx)?,
        None => procedural_frost(x, idx),
    };
    let v: Vec<f64> = x.px().iter().zip(&layer).map(|(&p, &f)| a * p as f64 + b * f as f64).collect();
    debug_assert_eq!(v.len(), w * h * 3);
    Ok(x.out(from_255(&v)))
}

/// The reference's frost: the photo enlarged by 1.1 × max(s, h/fh, w/fw)
/// (the reference: max(1, h/fh, w/fw)), then a uniformly random h×w crop.
/// The reference resizes with OpenCV's bicubic (a = −0.75); this uses
/// image-rs's Catmull-Rom (a = −0.5), antialiased when shrinking.
fn frost_photo_crop(x: &mut Ctx, dir: &Path, idx: usize) -> Result<Vec<u8>> {
    let path = dir.join(FROST_FILES[idx]);
    let photo = image::open(&path)
        .with_context(|| format!("frost photo {} (the frost directory must hold {})", path.display(), FROST_FILES.join(", ")))?
        .to_rgb8();
    let (fw, fh) = (photo.width() as f64, photo.height() as f64);
    let sf = x.s.max(x.h as f64 / fh).max(x.w as f64 / fw) * 1.1;
    let (nw, nh) = ((fw * sf).ceil() as u32, (fh * sf).ceil() as u32);
    let big = image::imageops::resize(&photo, nw, nh, image::imageops::FilterType::CatmullRom);
    let top = x.rng.int_range(0, (nh as usize - x.h) as i32) as u32;
    let left = x.rng.int_range(0, (nw as usize - x.w) as i32) as u32;
    x.trace.frost_offset = Some((top, left));
    Ok(image::imageops::crop_imm(&big, left, top, x.w as u32, x.h as u32).to_image().into_raw())
}

/// A frost-like layer standing in for photo `idx`: a rough plasma field
/// plus thin bright ridges (the crystals), standardised, then given the
/// photo's per-channel mean (with its between-crop spread) and contrast.
fn procedural_frost(x: &mut Ctx, idx: usize) -> Vec<u8> {
    let (w, h) = (x.w, x.h);
    let size = (w.max(h)).next_power_of_two();
    let rough = plasma_fractal(&mut x.rng, size, 1.6);
    let veins = plasma_fractal(&mut x.rng, size, 1.9);
    let mut t: Vec<f64> = (0..w * h)
        .map(|i| {
            let (yy, xx) = (i / w, i % w);
            let r = 1.0 - (2.0 * veins[yy * size + xx] as f64 - 1.0).abs();
            let r2 = r * r;
            rough[yy * size + xx] as f64 + 0.8 * (r2 * r2 * r2)
        })
        .collect();
    let n = t.len() as f64;
    let mean = t.iter().sum::<f64>() / n;
    let sd = (t.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt().max(1e-12);
    for v in t.iter_mut() {
        *v = (*v - mean) / sd;
    }
    let (m, between, within) = FROST_STATS[idx];
    let shift = x.rng.normal();
    let mut out = vec![0u8; w * h * 3];
    for (i, tv) in t.iter().enumerate() {
        for k in 0..3 {
            out[3 * i + k] = (m[k] + between[k] * shift + within[k] * tv).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `imagecorruptions.plasma_fractal` (diamond-square on a torus, numpy's
/// `np.roll` neighbours), float32 storage, normalised to [0, 1]; `size` a
/// power of two.
fn plasma_fractal(rng: &mut Rng, size: usize, decay: f64) -> Vec<f32> {
    let n = size;
    let mut m = vec![0f32; n * n];
    let mut step = n;
    let mut wibble = 100.0f64;
    while step >= 2 {
        let half = step / 2;
        let k = n / step;
        let at = |i: usize, j: usize| i * n + j;
        // Squares: centre = mean of the four corners + noise.
        let mut centres = vec![0f32; k * k];
        for i in 0..k {
            for j in 0..k {
                let c = |a: usize, b: usize| m[at((a % k) * step, (b % k) * step)];
                let s = (c(i, j) + c(i + 1, j)) + (c(i, j + 1) + c(i + 1, j + 1));
                centres[i * k + j] = ((s / 4.0) as f64 + wibble * rng.uniform(-wibble, wibble)) as f32;
            }
        }
        for i in 0..k {
            for j in 0..k {
                m[at(i * step + half, j * step + half)] = centres[i * k + j];
            }
        }
        // Diamonds: edge midpoints from the two adjacent centres and two corners.
        let dr = |m: &[f32], a: usize, b: usize| m[at((a % k) * step + half, (b % k) * step + half)];
        let ul = |m: &[f32], a: usize, b: usize| m[at((a % k) * step, (b % k) * step)];
        let mut tops = vec![0f32; k * k];
        let mut lefts = vec![0f32; k * k];
        for i in 0..k {
            for j in 0..k {
                let lt = (dr(&m, i, j) + dr(&m, i + k - 1, j)) + (ul(&m, i, j) + ul(&m, i, j + 1));
                tops[i * k + j] = ((lt / 4.0) as f64 + wibble * rng.uniform(-wibble, wibble)) as f32;
            }
        }
        for i in 0..k {
            for j in 0..k {
                let tt = (dr(&m, i, j) + dr(&m, i, j + k - 1)) + (ul(&m, i, j) + ul(&m, i + 1, j));
                lefts[i * k + j] = ((tt / 4.0) as f64 + wibble * rng.uniform(-wibble, wibble)) as f32;
            }
        }
        for i in 0..k {
            for j in 0..k {
                m[at(i * step, j * step + half)] = tops[i * k + j];
                m[at(i * step + half, j * step)] = lefts[i * k + j];
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
    for v in m.iter_mut() {
        *v -= lo;
    }
    let hi = m.iter().copied().fold(0f32, f32::max);
    if hi > 0.0 {
        for v in m.iter_mut() {
            *v /= hi;
        }
    }
    m
}

fn fog(x: &mut Ctx) -> RgbImage {
    let (strength, decay) = [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][x.sev];
    // The reference is size-aware here already: the map is the next power of two of the longer side.
    let size = x.w.max(x.h).next_power_of_two();
    let map = plasma_fractal(&mut x.rng, size, decay);
    let v = x.unit64();
    let max_val = v.iter().copied().fold(0.0, f64::max);
    let s32 = strength as f32;
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let (yy, xx) = (i / 3 / x.w, i / 3 % x.w);
            let q = p + (s32 * map[yy * size + xx]) as f64;
            q * max_val / (max_val + strength)
        })
        .collect();
    x.out(from_unit(&out))
}

/// skimage `rgb2hsv`: hue from whichever channel is the maximum (blue wins
/// ties over green over red, as its successive masks do).
fn rgb2hsv(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    let s = if delta == 0.0 { 0.0 } else { delta / v };
    if delta == 0.0 {
        return (0.0, s, v);
    }
    let h = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    // numpy's % 1.0 for |h/6| < 1: add 1 to negatives.
    let h6 = h / 6.0;
    (if h6 < 0.0 { h6 + 1.0 } else { h6 }, s, v)
}

/// skimage `hsv2rgb`.
fn hsv2rgb(h: f64, s: f64, v: f64) -> [f64; 3] {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi as u8) % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn brightness(x: &Ctx) -> RgbImage {
    let c = [0.1, 0.2, 0.3, 0.4, 0.5][x.sev];
    let v = x.unit64();
    let mut out = Vec::with_capacity(v.len());
    for p in v.chunks_exact(3) {
        let (h, s, val) = rgb2hsv(p[0], p[1], p[2]);
        out.extend(hsv2rgb(h, s, (val + c).clamp(0.0, 1.0)));
    }
    x.out(from_unit(&out))
}

fn contrast(x: &Ctx) -> RgbImage {
    let c = [0.4, 0.3, 0.2, 0.1, 0.05][x.sev];
    let v = x.unit64();
    let n = (x.w * x.h) as f64;
    let mut means = [0.0; 3];
    for p in v.chunks_exact(3) {
        for k in 0..3 {
            means[k] += p[k];
        }
    }
    let means = means.map(|m| m / n);
    let out: Vec<f64> = v.iter().enumerate().map(|(i, &p)| (p - means[i % 3]) * c + means[i % 3]).collect();
    x.out(from_unit(&out))
}

fn elastic(x: &mut Ctx) -> RgbImage {
    // The reference scales the smoothing σ (1% of the side) and the noise amplitude (0.5% of the height)
    // with the image but not α, so its displacement in pixels is the same at every size; α·s keeps it a
    // fixed fraction of the image instead.
    let alpha = [250.0 * 0.05, 250.0 * 0.065, 250.0 * 0.085, 250.0 * 0.1, 250.0 * 0.12][x.sev] * x.s;
    let (w, h) = (x.w, x.h);
    let sigma = (h as f64 * 0.01, w as f64 * 0.01);
    let max_d = h as f64 * 0.005;
    let mut field = || -> Vec<f32> {
        let u: Vec<f64> = (0..w * h).map(|_| x.rng.uniform(-max_d, max_d)).collect();
        filters::gaussian_filter(&u, w, h, 1, sigma, 3.0, Border::Reflect).iter().map(|v| (v * alpha) as f32).collect()
    };
    let dx = field();
    let dy = field();
    let img: Vec<f32> = x.px().iter().map(|&v| v as f32 / 255.0).collect();
    let mut out = vec![0f32; w * h * 3];
    for yy in 0..h {
        for xx in 0..w {
            let i = yy * w + xx;
            let (cy, cx) = (yy as f64 + dy[i] as f64, xx as f64 + dx[i] as f64);
            let (fy, fx) = (cy.floor(), cx.floor());
            let (ty, tx) = (cy - fy, cx - fx);
            let y0 = filters::fold(fy as isize, h, Border::Reflect);
            let y1 = filters::fold(fy as isize + 1, h, Border::Reflect);
            let x0 = filters::fold(fx as isize, w, Border::Reflect);
            let x1 = filters::fold(fx as isize + 1, w, Border::Reflect);
            for k in 0..3 {
                let g = |yy: usize, xx: usize| img[(yy * w + xx) * 3 + k] as f64;
                let v = (1.0 - ty) * ((1.0 - tx) * g(y0, x0) + tx * g(y0, x1)) + ty * ((1.0 - tx) * g(y1, x0) + tx * g(y1, x1));
                out[i * 3 + k] = v as f32;
            }
        }
    }
    x.out(from_unit32(&out))
}

fn pixelate(x: &Ctx) -> RgbImage {
    let c = [0.6, 0.5, 0.4, 0.3, 0.25][x.sev];
    let (nw, nh) = ((x.w as f64 * c) as usize, (x.h as f64 * c) as usize);
    let small = filters::pil_box_resize(x.px(), x.w, x.h, nw, nh);
    x.out(filters::pil_nearest_resize(&small, nw, nh, x.w, x.h))
}

fn jpeg(x: &Ctx) -> Result<RgbImage> {
    let q = [25, 18, 15, 10, 7][x.sev];
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q).encode_image(x.img).context("JPEG encoding")?;
    Ok(image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg).context("JPEG decoding")?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_factors_are_numpys_arange() {
        // Printed by numpy 2.4: len(np.arange(1, 1.11, 0.01)) = 12, …(1.16, 0.01) = 16, (1.21, 0.02) = 11,
        // (1.26, 0.02) = 13, (1.31, 0.03) = 11; np.arange(1, 1.11, 0.01)[2].hex() = '0x1.051eb851eb852p+0'.
        let counts: Vec<usize> = (0..5).map(|s| zoom_factors(s).len()).collect();
        assert_eq!(counts, [12, 16, 11, 13, 11]);
        assert_eq!(zoom_factors(0)[2], f64::from_bits(0x3FF0_51EB_851E_B852));
    }

    #[test]
    fn hsv_round_trip_and_hue_ties() {
        // skimage rgb2hsv([0.2, 0.2, 0.6]) = (0.6666…, 0.6666…, 0.6); blue wins a green/blue tie: hue 4/6 + …
        let (h, s, v) = rgb2hsv(0.2, 0.2, 0.6);
        assert!((h - 2.0 / 3.0).abs() < 1e-12 && (s - 2.0 / 3.0).abs() < 1e-12 && v == 0.6);
        let (h, _, _) = rgb2hsv(0.1, 0.5, 0.5);
        assert!((h - (4.0 + (0.1 - 0.5) / 0.4) / 6.0).abs() < 1e-12);
        for rgb in [[0.9, 0.1, 0.3], [0.0, 0.0, 0.0], [0.3, 0.8, 0.2], [1.0, 1.0, 1.0], [0.5, 0.2, 0.9]] {
            let (h, s, v) = rgb2hsv(rgb[0], rgb[1], rgb[2]);
            let back = hsv2rgb(h, s, v);
            for k in 0..3 {
                assert!((back[k] - rgb[k]).abs() < 1e-12, "{rgb:?} → {back:?}");
            }
        }
    }

    #[test]
    fn disk_kernel_matches_the_reference() {
        // Printed by imagecorruptions.corruptions.disk(r, a) (OpenCV 5.0): (r, a, sum, centre, middle of the left edge).
        // r = 8 and 10 touch the kernel border, where BORDER_REFLECT_101 folds mass back in: the sum exceeds 1.
        let cases = [
            (3, 0.1, 0.9999999962747097, 0.03448275849223137, 0.0),
            (4, 0.5, 0.9999999657738954, 0.020408162847161293, 0.0),
            (8, 0.5, 1.0129754540103022, 0.005076142027974129, 0.004225182346999645),
            (10, 0.5, 1.0107857951751802, 0.0031545741949230433, 0.0026249929796904325),
        ];
        for (r, a, sum, centre, edge) in cases {
            let (k, big) = disk_kernel(r, a);
            let d = 2 * big + 1;
            assert_eq!(big, r.max(8));
            assert!((k.iter().map(|&v| v as f64).sum::<f64>() - sum).abs() < 1e-6, "r={r}");
            assert!((k[big * d + big] as f64 - centre).abs() < 1e-8, "r={r}");
            assert!((k[big * d] as f64 - edge).abs() < 1e-8, "r={r}");
            let (same, m) = rescale_kernel(&k, big, 1.0);
            assert_eq!((m, &same), (big, &k));
            let (small, m) = rescale_kernel(&k, big, 64.0 / 224.0);
            assert!(m < big);
            assert!((small.iter().map(|&v| v as f64).sum::<f64>() - sum).abs() < 1e-5, "rescaling keeps the mass");
        }
    }

    #[test]
    fn plasma_is_normalised() {
        let m = plasma_fractal(&mut Rng::new(1), 64, 2.0);
        let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = m.iter().copied().fold(0f32, f32::max);
        assert_eq!((lo, hi), (0.0, 1.0));
    }
}
