//! The image operations the reference borrows from scipy, OpenCV and Pillow,
//! with their border rules and arithmetic: `gaussian_filter`, `zoom(order=1)`,
//! `map_coordinates(order=1)`, `cv2.filter2D`, the shift-and-add motion blur
//! of `imagecorruptions`, Pillow's BOX and NEAREST resizes.
//!
//! Images are interleaved row-major buffers (`(y·w + x)·ch + k`).

/// How an index outside `0..n` is folded back.
#[derive(Clone, Copy, Debug)]
pub enum Border {
    /// scipy `nearest`: aaaa|abcd|dddd.
    Nearest,
    /// scipy `reflect` (half-sample symmetric): dcba|abcd|dcba.
    Reflect,
    /// OpenCV `BORDER_REFLECT_101`: dcb|abcd|cba.
    Reflect101,
}

pub fn fold(i: isize, n: usize, b: Border) -> usize {
    let n = n as isize;
    if (0..n).contains(&i) {
        return i as usize;
    }
    match b {
        Border::Nearest => i.clamp(0, n - 1) as usize,
        Border::Reflect => {
            let p = 2 * n;
            let m = i.rem_euclid(p);
            (if m < n { m } else { p - 1 - m }) as usize
        }
        Border::Reflect101 => {
            if n == 1 {
                return 0;
            }
            let p = 2 * n - 2;
            let m = i.rem_euclid(p);
            (if m < n { m } else { p - m }) as usize
        }
    }
}

/// scipy's `_gaussian_kernel1d`: radius `int(truncate·σ + 0.5)`, weights
/// `exp(−x²/(2σ²))` normalised to sum 1; the centre first, then one side
/// (the kernel is symmetric).
pub fn gaussian_half_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    let r = (truncate * sigma + 0.5) as usize;
    let s2 = sigma * sigma;
    let full: Vec<f64> = (0..=r).map(|x| libm::exp(-0.5 / s2 * (x * x) as f64)).collect();
    let total = full[0] + 2.0 * full[1..].iter().sum::<f64>();
    full.iter().map(|v| v / total).collect()
}

/// scipy `correlate1d` with a symmetric kernel along x (`axis_x`) or y, as its
/// C loop does it: `k0·v + Σ kj·(v[−j] + v[+j])`.
pub fn correlate_sym(src: &[f64], w: usize, h: usize, ch: usize, half: &[f64], axis_x: bool, b: Border) -> Vec<f64> {
    let mut out = vec![0.0; src.len()];
    let r = half.len() as isize - 1;
    let (n, stride_along, outer, stride_outer) = if axis_x { (w, ch, h, w * ch) } else { (h, w * ch, w, ch) };
    let idx: Vec<Vec<usize>> = (0..n as isize)
        .map(|i| (-r..=r).map(|j| fold(i + j, n, b) * stride_along).collect())
        .collect();
    for o in 0..outer {
        for k in 0..ch {
            let base = o * stride_outer + k;
            for (i, ix) in idx.iter().enumerate() {
                let c = r as usize;
                let mut acc = src[base + ix[c]] * half[0];
                for j in 1..=c {
                    acc += (src[base + ix[c - j]] + src[base + ix[c + j]]) * half[j];
                }
                out[base + i * stride_along] = acc;
            }
        }
    }
    out
}

/// skimage `gaussian(img, (σy, σx), channel_axis=-1 | none)` on a float
/// image: scipy `gaussian_filter` over y then x, truncate as given.
pub fn gaussian_filter(src: &[f64], w: usize, h: usize, ch: usize, sigma: (f64, f64), truncate: f64, b: Border) -> Vec<f64> {
    let t = correlate_sym(src, w, h, ch, &gaussian_half_kernel(sigma.0, truncate), false, b);
    correlate_sym(&t, w, h, ch, &gaussian_half_kernel(sigma.1, truncate), true, b)
}

/// `cv2.filter2D(x, -1, kernel)` per channel with BORDER_REFLECT_101, in f32.
/// `kernel` is (2r+1)², row-major; zero taps are skipped (the reference's
/// disk kernels are mostly zero).
pub fn filter2d(src: &[f32], w: usize, h: usize, kernel: &[f32], r: usize) -> Vec<f32> {
    let (pw, ph) = (w + 2 * r, h + 2 * r);
    let mut pad = vec![0f32; pw * ph * 3];
    for py in 0..ph {
        let sy = fold(py as isize - r as isize, h, Border::Reflect101);
        for px in 0..pw {
            let sx = fold(px as isize - r as isize, w, Border::Reflect101);
            pad[(py * pw + px) * 3..][..3].copy_from_slice(&src[(sy * w + sx) * 3..][..3]);
        }
    }
    let d = 2 * r + 1;
    let taps: Vec<(usize, usize, f32)> =
        (0..d * d).filter(|&i| kernel[i] != 0.0).map(|i| (i / d, i % d, kernel[i])).collect();
    let mut out = vec![0f32; w * h * 3];
    let row = w * 3;
    for y in 0..h {
        let o = &mut out[y * row..(y + 1) * row];
        for &(ky, kx, k) in &taps {
            let s = &pad[((y + ky) * pw + kx) * 3..][..row];
            for (a, &v) in o.iter_mut().zip(s) {
                *a += k * v;
            }
        }
    }
    out
}

/// One axis of scipy `zoom(order=1)`: output length `round(n·z)` (Python
/// rounding), sample positions `i·(n−1)/(m−1)` (grid_mode=False), linear
/// weights. Returns (left index, right weight) per output index.
pub fn zoom_axis(n: usize, z: f64) -> Vec<(usize, f64)> {
    let m = (n as f64 * z).round_ties_even() as usize;
    let step = if m > 1 { (n as f64 - 1.0) / (m as f64 - 1.0) } else { 0.0 };
    (0..m)
        .map(|i| {
            let c = i as f64 * step;
            let f = c.floor();
            let i0 = (f as usize).min(n - 1);
            (i0, if i0 + 1 < n { c - f } else { 0.0 })
        })
        .collect()
}

/// `imagecorruptions.clipped_zoom`: crop the centre `ceil(h/z)×ceil(w/z)`
/// (top-left rounded down) and zoom it back by z bilinearly; the result is
/// `round(ceil(h/z)·z)` high, at least h. `crop`: keep only its top-left h×w
/// (what both callers do, snow only after blurring). f64 in and out.
pub fn clipped_zoom(src: &[f64], w: usize, h: usize, ch: usize, z: f64, crop: bool) -> (Vec<f64>, usize, usize) {
    let chh = (h as f64 / z).ceil() as usize;
    let cww = (w as f64 / z).ceil() as usize;
    let top = (h - chh) / 2;
    let left = (w - cww) / 2;
    let ys = zoom_axis(chh, z);
    let xs = zoom_axis(cww, z);
    assert!(ys.len() >= h && xs.len() >= w, "zoom {z} of {cww}×{chh} does not cover {w}×{h}");
    let (ow, oh) = if crop { (w, h) } else { (xs.len(), ys.len()) };
    // Separable: each source row is interpolated along x once, and output
    // rows (about z of them per source row) blend two such rows. Per element
    // the arithmetic is the one-pass bilinear formula's, in its order.
    let lerp_row = |r: usize, dst: &mut Vec<f64>| {
        dst.clear();
        let row = &src[(top + r) * w * ch..(top + r + 1) * w * ch];
        for &(x0, tx) in xs.iter().take(ow) {
            let (c0, c1) = (left + x0, left + (x0 + 1).min(cww - 1));
            dst.extend((0..ch).map(|k| (1.0 - tx) * row[c0 * ch + k] + tx * row[c1 * ch + k]));
        }
    };
    let (mut h0, mut h1) = (Vec::with_capacity(ow * ch), Vec::with_capacity(ow * ch));
    let mut rows: Option<(usize, usize)> = None;
    let mut out = Vec::with_capacity(ow * oh * ch);
    for &(y0, ty) in ys.iter().take(oh) {
        let y1 = (y0 + 1).min(chh - 1);
        match rows {
            Some(r) if r == (y0, y1) => {}
            Some((_, prev1)) if prev1 == y0 => {
                std::mem::swap(&mut h0, &mut h1);
                lerp_row(y1, &mut h1);
            }
            _ => {
                lerp_row(y0, &mut h0);
                lerp_row(y1, &mut h1);
            }
        }
        rows = Some((y0, y1));
        out.extend(h0.iter().zip(&h1).map(|(a, b)| (1.0 - ty) * a + ty * b));
    }
    (out, ow, oh)
}

/// `imagecorruptions._motion_blur`'s taps: `2r+1` shifts `(dy, dx)` along
/// the angle, weighted by a half-Gaussian of σ and normalised. Stops, as the
/// reference, once a shift reaches the image size.
fn motion_taps(w: usize, h: usize, radius: usize, sigma: f64, angle_deg: f64) -> Vec<(f64, isize, isize)> {
    let width = 2 * radius + 1;
    let g: Vec<f64> = (0..width)
        .map(|i| libm::exp(-((i * i) as f64) / (2.0 * (sigma * sigma))) / (libm::sqrt(2.0 * std::f64::consts::PI) * sigma))
        .collect();
    let z: f64 = g.iter().sum();
    let rad = angle_deg * (std::f64::consts::PI / 180.0);
    let (py, px) = (width as f64 * libm::sin(rad), width as f64 * libm::cos(rad));
    let hyp = libm::hypot(py, px);
    g.iter()
        .enumerate()
        .map(|(i, gi)| (gi / z, -(((i as f64 * py) / hyp) - 0.5).ceil() as isize, -(((i as f64 * px) / hyp) - 0.5).ceil() as isize))
        .take_while(|&(_, dy, dx)| dy.unsigned_abs() < h && dx.unsigned_abs() < w)
        .collect()
}

/// `imagecorruptions._motion_blur`: the sum of the image shifted by each of
/// [`motion_taps`] (edges replicated), times its weight, in tap order.
pub fn motion_blur(src: &[f64], w: usize, h: usize, ch: usize, radius: usize, sigma: f64, angle_deg: f64) -> Vec<f64> {
    let mut out = vec![0.0; src.len()];
    for (k, dy, dx) in motion_taps(w, h, radius, sigma, angle_deg) {
        // Columns `lo..hi` read a shifted contiguous run of the source row;
        // those left and right of it read the replicated edge pixel. Split
        // so, the inner loop is a plain axpy the compiler vectorises (snow
        // blurs a 224-px layer whatever the image size: it was 60 % of the
        // corruption stage's time). Each output still sums its taps in tap
        // order, so the result is bit for bit the gather's.
        let lo = dx.clamp(0, w as isize) as usize;
        let hi = (w as isize + dx).clamp(0, w as isize) as usize;
        for y in 0..h {
            let sy = (y as isize - dy).clamp(0, h as isize - 1) as usize;
            let srow = &src[sy * w * ch..(sy + 1) * w * ch];
            let orow = &mut out[y * w * ch..(y + 1) * w * ch];
            let (first, last) = (&srow[..ch], &srow[(w - 1) * ch..]);
            let (left, rest) = orow.split_at_mut(lo * ch);
            let (inner, right) = rest.split_at_mut((hi - lo) * ch);
            for (px, edge) in left.chunks_exact_mut(ch).map(|p| (p, first)).chain(right.chunks_exact_mut(ch).map(|p| (p, last))) {
                for (o, s) in px.iter_mut().zip(edge) {
                    *o += k * s;
                }
            }
            let shifted = &srow[(lo as isize - dx) as usize * ch..(hi as isize - dx) as usize * ch];
            for (o, s) in inner.iter_mut().zip(shifted) {
                *o += k * s;
            }
        }
    }
    out
}

/// Overlap of the unit cells of an `n`-sample grid with the cells of an
/// `m`-sample grid covering the same extent (area resampling weights):
/// `(first input index, weights)` per output cell, each row summing to 1.
pub fn area_weights(n: usize, m: usize) -> Vec<(usize, Vec<f64>)> {
    let ratio = n as f64 / m as f64;
    (0..m)
        .map(|j| {
            let (a, b) = (j as f64 * ratio, (j + 1) as f64 * ratio);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(n);
            let ws = (first..last).map(|i| ((i + 1) as f64).min(b) - (i as f64).max(a)).map(|o| o / ratio).collect();
            (first, ws)
        })
        .collect()
}

/// Area-average (box) resampling of a float image to `nw×nh`, separable.
pub fn area_resize(src: &[f64], w: usize, h: usize, ch: usize, nw: usize, nh: usize) -> Vec<f64> {
    let wx = area_weights(w, nw);
    let wy = area_weights(h, nh);
    let mut t = vec![0.0; nw * h * ch];
    for y in 0..h {
        for (x, (f, ws)) in wx.iter().enumerate() {
            for k in 0..ch {
                t[(y * nw + x) * ch + k] = ws.iter().enumerate().map(|(i, q)| q * src[(y * w + f + i) * ch + k]).sum();
            }
        }
    }
    let mut out = vec![0.0; nw * nh * ch];
    for (y, (f, ws)) in wy.iter().enumerate() {
        for x in 0..nw * ch {
            out[y * nw * ch + x] = ws.iter().enumerate().map(|(i, q)| q * t[(f + i) * nw * ch + x]).sum();
        }
    }
    out
}

/// Pillow fixed-point fraction bits for 8-bit resampling.
const PIL_BITS: u32 = 22;

/// Pillow `resize(..., Image.BOX)` for 8-bit RGB: per output pixel the
/// window `[int(c − s + 0.5), int(c + s + 0.5))` around c = (i + 0.5)·scale
/// with support s = scale/2, box weights normalised and turned into 22-bit
/// fixed point, horizontal pass then vertical, each rounded to 8 bits.
pub fn pil_box_resize(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    fn coeffs(n: usize, m: usize) -> Vec<(usize, Vec<i64>)> {
        let scale = n as f64 / m as f64;
        let fs = scale.max(1.0);
        let support = 0.5 * fs;
        (0..m)
            .map(|i| {
                let c = (i as f64 + 0.5) * scale;
                let lo = ((c - support + 0.5) as i64).max(0) as usize;
                let hi = ((c + support + 0.5) as i64).min(n as i64) as usize;
                let raw: Vec<f64> = (lo..hi)
                    .map(|x| {
                        let t = (x as f64 - c + 0.5) / fs;
                        if t > -0.5 && t <= 0.5 {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let total: f64 = raw.iter().sum();
                let fixed = raw
                    .iter()
                    .map(|&k| {
                        let v = if total != 0.0 { k / total } else { k } * (1u64 << PIL_BITS) as f64;
                        (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i64
                    })
                    .collect();
                (lo, fixed)
            })
            .collect()
    }
    let clip8 = |acc: i64| (acc >> PIL_BITS).clamp(0, 255) as u8;
    let cx = coeffs(w, nw);
    let mut t = vec![0u8; nw * h * 3];
    for y in 0..h {
        for (x, (lo, k)) in cx.iter().enumerate() {
            for c in 0..3 {
                let acc = k.iter().enumerate().fold(1i64 << (PIL_BITS - 1), |a, (j, &kj)| a + src[(y * w + lo + j) * 3 + c] as i64 * kj);
                t[(y * nw + x) * 3 + c] = clip8(acc);
            }
        }
    }
    let cy = coeffs(h, nh);
    let mut out = vec![0u8; nw * nh * 3];
    for (y, (lo, k)) in cy.iter().enumerate() {
        for i in 0..nw * 3 {
            let acc = k.iter().enumerate().fold(1i64 << (PIL_BITS - 1), |a, (j, &kj)| a + t[(lo + j) * nw * 3 + i] as i64 * kj);
            out[y * nw * 3 + i] = clip8(acc);
        }
    }
    out
}

/// Pillow `resize(..., Image.NEAREST)`: an affine scale whose source
/// coordinate starts at scale/2 and is advanced by repeated addition, then
/// truncated (Pillow's `ImagingScaleAffine`).
pub fn pil_nearest_resize(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    fn table(n: usize, m: usize) -> Vec<usize> {
        let a = n as f64 / m as f64;
        let mut o = a * 0.5;
        (0..m)
            .map(|_| {
                let i = (o as usize).min(n - 1);
                o += a;
                i
            })
            .collect()
    }
    let (tx, ty) = (table(w, nw), table(h, nh));
    let mut out = vec![0u8; nw * nh * 3];
    for (y, &sy) in ty.iter().enumerate() {
        for (x, &sx) in tx.iter().enumerate() {
            out[(y * nw + x) * 3..][..3].copy_from_slice(&src[(sy * w + sx) * 3..][..3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_image(n: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919) % 1000) as f64 / 999.0).collect()
    }

    #[test]
    fn motion_blur_equals_the_per_pixel_gather_bit_for_bit() {
        // The definition, one clamped source index per output: what
        // motion_blur computed before its rows were split into runs.
        fn gather(src: &[f64], w: usize, h: usize, ch: usize, radius: usize, sigma: f64, angle: f64) -> Vec<f64> {
            let mut out = vec![0.0; src.len()];
            for (k, dy, dx) in motion_taps(w, h, radius, sigma, angle) {
                for y in 0..h {
                    let sy = (y as isize - dy).clamp(0, h as isize - 1) as usize;
                    for x in 0..w {
                        let sx = (x as isize - dx).clamp(0, w as isize - 1) as usize;
                        for c in 0..ch {
                            out[(y * w + x) * ch + c] += k * src[(sy * w + sx) * ch + c];
                        }
                    }
                }
            }
            out
        }
        // Angles on both sides of vertical (shifts left and right), radii
        // beyond the image (the early stop), one and three channels.
        for (w, h, ch, radius, sigma, angle) in
            [(17, 11, 3, 5, 3.0, -60.0), (17, 11, 3, 5, 3.0, -120.0), (9, 30, 1, 12, 8.0, -95.0), (5, 4, 3, 15, 12.0, 30.0), (20, 20, 1, 10, 4.0, 0.0)]
        {
            let src = pseudo_image(w * h * ch);
            let got = motion_blur(&src, w, h, ch, radius, sigma, angle);
            let want = gather(&src, w, h, ch, radius, sigma, angle);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{w}x{h}x{ch} r{radius} angle {angle}");
        }
    }

    #[test]
    fn clipped_zoom_equals_one_pass_bilinear_bit_for_bit() {
        for (w, h, ch, z, crop) in [(64, 64, 3, 1.07, true), (31, 17, 3, 1.33, true), (40, 40, 1, 3.0, false), (23, 29, 1, 4.5, false)] {
            let src = pseudo_image(w * h * ch);
            let (got, ow, oh) = clipped_zoom(&src, w, h, ch, z, crop);
            let (chh, cww) = ((h as f64 / z).ceil() as usize, (w as f64 / z).ceil() as usize);
            let (top, left) = ((h - chh) / 2, (w - cww) / 2);
            let (ys, xs) = (zoom_axis(chh, z), zoom_axis(cww, z));
            assert_eq!(got.len(), ow * oh * ch);
            for (y, &(y0, ty)) in ys.iter().take(oh).enumerate() {
                let (r0, r1) = ((top + y0) * w, (top + (y0 + 1).min(chh - 1)) * w);
                for (x, &(x0, tx)) in xs.iter().take(ow).enumerate() {
                    let (c0, c1) = (left + x0, left + (x0 + 1).min(cww - 1));
                    for k in 0..ch {
                        let [a, b, c, d] = [r0 + c0, r0 + c1, r1 + c0, r1 + c1].map(|i| src[i * ch + k]);
                        let want = (1.0 - ty) * ((1.0 - tx) * a + tx * b) + ty * ((1.0 - tx) * c + tx * d);
                        assert_eq!(got[(y * ow + x) * ch + k].to_bits(), want.to_bits(), "{w}x{h} z {z} at ({x}, {y}, {k})");
                    }
                }
            }
        }
    }

    #[test]
    fn borders_fold_like_scipy_and_opencv() {
        // scipy.ndimage docs: 'reflect' (d c b a | a b c d | d c b a),
        // 'nearest' (a a a a | a b c d | d d d d); OpenCV BORDER_REFLECT_101 gfedcb|abcdefgh|gfedcba.
        let n = 4;
        let r: Vec<usize> = (-4..8).map(|i| fold(i, n, Border::Reflect)).collect();
        assert_eq!(r, [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
        let r: Vec<usize> = (-3..7).map(|i| fold(i, n, Border::Reflect101)).collect();
        assert_eq!(r, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        let r: Vec<usize> = (-2..6).map(|i| fold(i, n, Border::Nearest)).collect();
        assert_eq!(r, [0, 0, 0, 1, 2, 3, 3, 3]);
    }

    #[test]
    fn gaussian_kernel_matches_scipy() {
        // Printed by scipy 1.17: scipy.ndimage._filters._gaussian_kernel1d(1.0, 0, 4)
        // (radius int(4·1 + 0.5) = 4) = [1.33830625e-04 4.43186162e-03 5.39911274e-02 2.41971446e-01 3.98943469e-01 …].
        let k = gaussian_half_kernel(1.0, 4.0);
        assert_eq!(k.len(), 5);
        let expect = [3.98943469e-01, 2.41971446e-01, 5.39911274e-02, 4.43186162e-03, 1.33830625e-04];
        for (a, b) in k.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn zoom_axis_is_scipy_align_corners() {
        // Printed by scipy 1.17: scipy.ndimage.zoom(np.arange(4.), 1.5, order=1) → [0. 0.6 1.2 1.8 2.4 3.].
        let a = zoom_axis(4, 1.5);
        let v: Vec<f64> = a.iter().map(|&(i, t)| i as f64 + t).collect();
        for (x, y) in v.iter().zip([0.0, 0.6, 1.2, 1.8, 2.4, 3.0]) {
            assert!((x - y).abs() < 1e-12, "{v:?}");
        }
    }

    #[test]
    fn area_weights_partition_each_input_cell() {
        for (n, m) in [(224, 64), (64, 224), (10, 3), (7, 7)] {
            let ws = area_weights(n, m);
            let mut per_input = vec![0.0; n];
            for (f, w) in &ws {
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                for (i, q) in w.iter().enumerate() {
                    per_input[f + i] += q * n as f64 / m as f64;
                }
            }
            assert!(per_input.iter().all(|v| (v - 1.0).abs() < 1e-9), "{n}->{m}");
        }
    }

    #[test]
    fn pil_nearest_picks_cell_centres() {
        // Printed by Pillow 13: Image.fromarray(np.arange(4, dtype=np.uint8).reshape(1, 4)).resize((10, 1),
        // Image.NEAREST) → [0 0 1 1 1 2 2 2 3 3]. The accumulated 0.2 + 0.4 + 0.4 is 1.0000000000000002 (→ 1)
        // and the eighth sum 2.9999999999999996 (→ 2): a closed form (x + 0.5)·0.4 would give 0 and 3.
        let src: Vec<u8> = (0..4u8).flat_map(|v| [v, v, v]).collect();
        let out = pil_nearest_resize(&src, 4, 1, 10, 1);
        let r: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(r, [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]);
    }
}
