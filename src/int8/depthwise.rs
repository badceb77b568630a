//! The depthwise kernels, exact in f32: one with lanes along an output row
//! for wide planes, one with lanes across channels for narrow ones, both
//! built on one block of SUMS × LANES sums requantised to codes. The block
//! is the portable one below, or the AVX2 one in `simd` where the CPU has
//! it; both give the same codes.

use super::kernels::{put_codes, round_clamped, Code, QConv, LANES, SUMS};
#[cfg(target_arch = "x86_64")]
use super::simd::x86_64;

/// Bytes of f32 input tile the channel-vectorised kernel aims to keep in L2.
const TILE_BYTES: usize = 96 << 10;

impl QConv {
    /// Depthwise with lanes across channels: the input is transposed into a
    /// padded `[row][column][LANES]` f32 tile per block of channels, so every
    /// tap of every pixel is a full vector whatever the plane's width,
    /// stride or dilation. Small late planes (7×7, 14×14) waste no lanes, and
    /// the bias and multiplier are vectors too.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn depthwise_channels<T: Code>(&self, x: &[T], w: &[f32], bias: &[f32], folded: bool, out: &mut [T], tile: &mut Vec<f32>, avx2: bool) {
        let g = &self.geo;
        let zp = self.x_zero_point as f32;
        let taps = g.kh * g.kw;
        let cols = (g.wo - 1) * g.sw + (g.kw - 1) * g.dw + 1;
        let reach = (g.kh - 1) * g.dh + 1;
        // Output rows per band: as many as keep the tile near TILE_BYTES,
        // since its rows are re-read by every tap row.
        let band = (TILE_BYTES / (cols * LANES * 4)).saturating_sub(reach) / g.sh + 1;
        let band = band.clamp(1, g.ho);
        let rows = (band - 1) * g.sh + reach;
        tile.clear();
        tile.resize(rows * cols * LANES, 0.0);
        let offsets: Vec<usize> = (0..taps).map(|t| ((t / g.kw) * g.dh * cols + (t % g.kw) * g.dw) * LANES).collect();
        let rq = &self.requant;
        let (lo, hi) = ((T::MIN - rq.zero_point) as f32, (T::MAX - rq.zero_point) as f32);
        let plane = g.h * g.w;
        let inside = g.w.min(cols.saturating_sub(g.pad_l));
        for cb in 0..g.cout().div_ceil(LANES) {
            let nch = LANES.min(g.cout() - cb * LANES);
            let wb = &w[cb * taps * LANES..][..taps * LANES];
            let start = cb * LANES;
            let req = BlockRequant {
                init: bias[start..][..LANES].try_into().unwrap(),
                mult: std::array::from_fn(|l| rq.mult.get(start + l).copied().unwrap_or(0.0)),
                bias: std::array::from_fn(|l| if folded { 0 } else { rq.bias.get(start + l).copied().unwrap_or(0) }),
                folded,
                lo,
                hi,
                zero_point: rq.zero_point,
            };
            for oh0 in (0..g.ho).step_by(band) {
                let bh = band.min(g.ho - oh0);
                let top = (oh0 * g.sh) as isize - g.pad_t as isize;
                // The band's input rows, transposed; columns outside the
                // image are never written, so they stay zero (the zero point).
                for r in 0..(bh - 1) * g.sh + reach {
                    let ih = top + r as isize;
                    let dst = &mut tile[r * cols * LANES..][..cols * LANES];
                    if ih < 0 || ih as usize >= g.h {
                        dst.fill(0.0);
                        continue;
                    }
                    let dst = &mut dst[(g.pad_l * LANES).min(cols * LANES)..];
                    for l in 0..nch {
                        let src = &x[(start + l) * plane + ih as usize * g.w..][..inside];
                        for (d, s) in dst.chunks_exact_mut(LANES).zip(src) {
                            d[l] = s.widen() as f32 - zp;
                        }
                    }
                }
                // Blocks of SUMS consecutive output pixels, which may span rows,
                // so each channel's SUMS codes are one contiguous store.
                let n_band = bh * g.wo;
                for q0 in (0..n_band).step_by(SUMS) {
                    let bases: [usize; SUMS] = std::array::from_fn(|p| {
                        // The last block repeats its last pixel rather than read past the band.
                        let q = (q0 + p).min(n_band - 1);
                        ((q / g.wo) * g.sh * cols + (q % g.wo) * g.sw) * LANES
                    });
                    let codes = match avx2 {
                        // SAFETY: `avx2` is only true inside `run_avx2`, entered after
                        // detection; every base + offset + LANES stays within the band's
                        // rows and `cols` by their construction.
                        #[cfg(target_arch = "x86_64")]
                        true => unsafe { x86_64::depthwise_block_avx2(wb, tile, &offsets, &bases, &req, true) },
                        _ => depthwise_block(wb, tile, &offsets, &bases, &req, cfg!(target_arch = "aarch64"), true),
                    };
                    let n = SUMS.min(n_band - q0);
                    let at = oh0 * g.wo + q0;
                    for (l, c) in codes.chunks_exact(1).enumerate().take(nch) {
                        let dst = &mut out[(start + l) * g.ho * g.wo + at..];
                        put_codes(&mut dst[..n], c);
                    }
                }
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn depthwise<T: Code>(&self, x: &[T], taps: &[f32], bias: &[f32], folded: bool, out: &mut [T], plane: &mut Vec<f32>, row: &mut Vec<f32>, avx2: bool) {
        let g = &self.geo;
        let zp = self.x_zero_point as f32;
        // Rows and columns the windows reach, padding included.
        let rows = (g.ho - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        let cols = (g.wo - 1) * g.sw + (g.kw - 1) * g.dw + 1;
        // Columns are split by phase (column mod stride) so that every tap
        // reads a contiguous run whatever the stride. Zero rows and columns
        // past the end let the last block of rows and chunk of columns be
        // computed whole (and the surplus not stored).
        let used = cols.div_ceil(g.sw);
        let width = used + LANES;
        let height = rows + (SUMS - 1) * g.sh;
        plane.clear();
        plane.resize(g.sw * height * width, 0.0);
        row.clear();
        row.resize(used * g.sw, 0.0);
        // Each tap's offset in the planes from an output row's first input row.
        let offsets: Vec<usize> = (0..g.kh * g.kw)
            .map(|t| {
                let (i, col) = (t / g.kw, (t % g.kw) * g.dw);
                ((col % g.sw) * height + i * g.dh) * width + col / g.sw
            })
            .collect();
        let rq = &self.requant;
        let (lo, hi) = ((T::MIN - rq.zero_point) as f32, (T::MAX - rq.zero_point) as f32);
        let mut wrep = vec![0f32; g.kh * g.kw * LANES];
        for c in 0..g.cout() {
            let src = &x[c * g.h * g.w..][..g.h * g.w];
            // Padding rows and columns are the same for every channel and
            // never written, so they keep the zeros of the resize above.
            let len = used * g.sw;
            let inside = g.w.min(len.saturating_sub(g.pad_l));
            for r in g.pad_t..rows.min(g.pad_t + g.h) {
                let srow = &src[(r - g.pad_t) * g.w..][..inside];
                if g.sw == 1 {
                    for (d, s) in plane[r * width + g.pad_l..][..inside].iter_mut().zip(srow) {
                        *d = s.widen() as f32 - zp;
                    }
                    continue;
                }
                // The padded row, then its phases.
                for (d, s) in row[g.pad_l..][..inside].iter_mut().zip(srow) {
                    *d = s.widen() as f32 - zp;
                }
                if g.sw == 2 {
                    let (even, odd) = plane.split_at_mut(height * width);
                    let (even, odd) = (&mut even[r * width..][..used], &mut odd[r * width..][..used]);
                    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                        *e = pair[0];
                        *o = pair[1];
                    }
                    continue;
                }
                for phase in 0..g.sw {
                    let dst = &mut plane[(phase * height + r) * width..][..used];
                    for (d, s) in dst.iter_mut().zip(row[phase..].iter().step_by(g.sw)) {
                        *d = *s;
                    }
                }
            }
            // The channel's weights and requantisation as vectors, so the
            // block is the channel kernel's with lanes along the row.
            for (d, &v) in wrep.chunks_exact_mut(LANES).zip(&taps[c * g.kh * g.kw..][..g.kh * g.kw]) {
                d.fill(v);
            }
            let req = BlockRequant {
                init: [bias[c]; LANES],
                mult: [rq.mult[c]; LANES],
                bias: [if folded { 0 } else { rq.bias[c] }; LANES],
                folded,
                lo,
                hi,
                zero_point: rq.zero_point,
            };
            for oh in (0..g.ho).step_by(SUMS) {
                for ow in (0..g.wo).step_by(LANES) {
                    let bases: [usize; SUMS] = std::array::from_fn(|rr| (oh + rr) * g.sh * width + ow);
                    let codes = match avx2 {
                        // SAFETY: `avx2` is only true inside `run_avx2`, entered after
                        // detection; the planes' spare rows and columns hold every read.
                        #[cfg(target_arch = "x86_64")]
                        true => unsafe { x86_64::depthwise_block_avx2(&wrep, plane, &offsets, &bases, &req, false) },
                        _ => depthwise_block(&wrep, plane, &offsets, &bases, &req, cfg!(target_arch = "aarch64"), false),
                    };
                    let n = LANES.min(g.wo - ow);
                    for (rr, bytes) in codes.chunks_exact(LANES / 4).enumerate().take(g.ho - oh) {
                        put_codes(&mut out[(c * g.ho + oh + rr) * g.wo + ow..][..n], bytes);
                    }
                }
            }
        }
    }
}

/// A channel block's requantisation, as vectors.
pub(super) struct BlockRequant {
    /// The sums' start: the bias when folded, else zero.
    pub(super) init: [f32; LANES],
    pub(super) mult: [f32; LANES],
    /// The bias still to add in i32 when not folded.
    pub(super) bias: [i32; LANES],
    pub(super) folded: bool,
    pub(super) lo: f32,
    pub(super) hi: f32,
    pub(super) zero_point: i32,
}

/// One depthwise block: `Σ_t w[t] · tile[bases[p] + offsets[t]]` for each
/// of the SUMS vectors p, LANES wide, requantised to 64 code bytes. In
/// `transpose` order (the channel kernel) u32 l holds lane l's SUMS codes,
/// vector 0 lowest; otherwise (the row kernel) vector p's LANES codes are
/// bytes 16p.. in lane order. Fused multiply-adds where the target has them
/// natively (aarch64): exact either way.
#[inline(always)]
fn depthwise_block(w: &[f32], tile: &[f32], offsets: &[usize], bases: &[usize; SUMS], rq: &BlockRequant, fma: bool, transpose: bool) -> [u32; LANES] {
    let mut acc = [rq.init; SUMS];
    for (t, &off) in offsets.iter().enumerate() {
        let wt: &[f32; LANES] = w[t * LANES..][..LANES].try_into().unwrap();
        for (a, &base) in acc.iter_mut().zip(bases) {
            let s: &[f32; LANES] = tile[base + off..][..LANES].try_into().unwrap();
            for l in 0..LANES {
                a[l] = if fma { wt[l].mul_add(s[l], a[l]) } else { a[l] + wt[l] * s[l] };
            }
        }
    }
    let mut codes = [0u32; LANES];
    for (p, a) in acc.iter().enumerate() {
        for (l, &a) in a.iter().enumerate() {
            let v = if rq.folded {
                a
            } else {
                // SAFETY: a is an integer below 2^24 (the kernel's precondition).
                unsafe { a.to_int_unchecked::<i32>() }.wrapping_add(rq.bias[l]) as f32
            };
            let code = round_clamped(v * rq.mult[l], rq.lo, rq.hi) + rq.zero_point;
            let (word, byte) = if transpose { (l, p) } else { ((p * LANES + l) / 4, l % 4) };
            codes[word] |= (code as u32 & 0xff) << (8 * byte);
        }
    }
    codes
}
