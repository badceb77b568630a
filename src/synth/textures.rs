//! Textures: the 16 home textures (high-frequency patterns drawn only from
//! their palettes) and the 5 held-out ones of `ood/stylized`, evaluated per
//! pixel in coordinates centred on the object. Kept apart from the
//! backgrounds because the two must stay separable (the tests check it).

use rand::RngCore;

use super::maths::{atan2, clamp01, cos, fbm, frac, mix, rgb8, sin, smooth, value_noise, Rgb, TAU};
use super::rng::{hash2, hash_unit, unit, uniform};
use super::shapes::Pose;

/// Home textures draw only from these colours (the tests rely on it).
pub(super) const HOME_PALETTES: [&[[u8; 3]]; 16] = [
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
pub(super) struct TexParams {
    cos: f32,
    sin: f32,
    scale: f32,
    du: f32,
    dv: f32,
    seed: u32,
}

impl TexParams {
    pub(super) fn random<R: RngCore>(r: &mut R) -> TexParams {
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
pub(super) fn texture_rgb(tex: u16, tp: &TexParams, px: usize, py: usize, pose: &Pose, size: f32) -> Rgb {
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
