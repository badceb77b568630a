//! Math that must not depend on the platform libm: `sin`, `cos` and `atan2`
//! as our own polynomials, value noise from integer hashing, and colour
//! arithmetic (see "Float determinism" in the module docs of `synth`). Kept
//! apart so that everything a pixel's value may call is in one place.

use super::rng::hash_unit;

pub(super) const PI: f32 = std::f32::consts::PI;
pub(super) const TAU: f32 = std::f32::consts::TAU;
pub(super) const FRAC_PI_2: f32 = std::f32::consts::FRAC_PI_2;

/// Sine by reduction to [-π/2, π/2] and the Taylor series to x^11 (error
/// below 1e-7 there, far under one grey level).
pub(super) fn sin(x: f32) -> f32 {
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

pub(super) fn cos(x: f32) -> f32 {
    sin(x + FRAC_PI_2)
}

/// atan2 from the Abramowitz–Stegun 4.4.49 polynomial for atan on [0, 1]
/// (error ≤ 1e-5 rad) and octant symmetry.
pub(super) fn atan2(y: f32, x: f32) -> f32 {
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

pub(super) fn frac(x: f32) -> f32 {
    x - x.floor()
}

pub(super) fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

pub(super) fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

pub(super) fn value_noise(seed: u32, x: f32, y: f32) -> f32 {
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
pub(super) fn fbm(seed: u32, x: f32, y: f32) -> f32 {
    let n = (2.0 * value_noise(seed, x, y) + value_noise(seed ^ 0x68e3_1da4, 2.0 * x + 17.3, 2.0 * y + 5.1)) / 3.0;
    clamp01((n - 0.5) * 1.9 + 0.5)
}

pub(super) type Rgb = [f32; 3];

pub(super) fn rgb8(c: [u8; 3]) -> Rgb {
    [c[0] as f32 / 255.0, c[1] as f32 / 255.0, c[2] as f32 / 255.0]
}

pub(super) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    // a·(1−t) + b·t rather than a + (b−a)·t so that t = 1 gives exactly b:
    // fully covered pixels then carry the exact palette colour.
    let s = 1.0 - t;
    [a[0] * s + b[0] * t, a[1] * s + b[1] * t, a[2] * s + b[2] * t]
}

pub(super) fn quantise(v: f32) -> u8 {
    (clamp01(v) * 255.0 + 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
