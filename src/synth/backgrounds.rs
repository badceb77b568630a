//! Backgrounds: the 16 low-frequency families (gradients, soft blobs, a
//! horizon) and the plain backdrops of the splits that have no family. Kept
//! apart from the textures because the two must stay separable (the tests
//! check it).

use rand::RngCore;

use super::maths::{clamp01, cos, fbm, mix, rgb8, sin, smooth, Rgb, FRAC_PI_2, PI, TAU};
use super::rng::{hash_unit, uniform};
use super::PLAIN_BACKGROUND;

/// Orientation of each family's gradient; a random jitter is added.
const BG_BASE_ANGLE: [f32; 16] =
    [FRAC_PI_2, 0.0, 0.0, PI / 4.0, 0.0, FRAC_PI_2, 0.0, 0.0, 0.0, 0.0, 3.0 * PI / 4.0, -FRAC_PI_2, 0.0, 0.3, 0.0, 0.0];

#[derive(Clone, Copy, Debug)]
pub(super) struct BgParams {
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
    pub(super) fn random<R: RngCore>(r: &mut R, family: u16) -> BgParams {
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

pub(super) enum Backdrop {
    Family(BgParams),
    Flat(Rgb),
}

impl Backdrop {
    pub(super) fn id(&self) -> u16 {
        match self {
            Backdrop::Family(bp) => bp.family,
            Backdrop::Flat(_) => PLAIN_BACKGROUND,
        }
    }

    pub(super) fn at(&self, px: usize, py: usize, size: f32) -> Rgb {
        match self {
            Backdrop::Family(bp) => background_rgb(bp, px, py, size),
            Backdrop::Flat(c) => *c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::render::paint_object;
    use crate::synth::rng::stream;
    use crate::synth::shapes::Pose;
    use crate::synth::textures::TexParams;
    use crate::synth::TEXTURE_NAMES;
    use image::RgbImage;

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
}
