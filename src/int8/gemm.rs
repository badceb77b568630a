//! The GEMM kernel, for every convolution that is not depthwise: im2col of
//! `x − x_zp` into i16 pairs, the tile of ROWS channels × PANEL pixels, and
//! the requantisation of each tile as it is stored. The tile is the portable
//! one below, or the AVX2 one in `simd` where the CPU has it; both give the
//! same codes.

use super::kernels::{requantize, Code, QConv, PANEL, ROWS};
#[cfg(target_arch = "x86_64")]
use super::{kernels::put_codes, simd::x86_64};

impl QConv {
    /// im2col of one group into `[panel][k pair][PANEL][2]` i16 of `x − x_zp`,
    /// zero where the window leaves the image (the zero point, before the
    /// subtraction) and in the padding of the last panel and odd row.
    #[inline(always)]
    pub(super) fn pack<T: Code>(&self, x: &[T], k_pairs: usize, packed: &mut Vec<i16>) {
        let g = &self.geo;
        let pixels = g.pixels();
        let panels = pixels.div_ceil(PANEL);
        packed.clear();
        packed.resize(panels * k_pairs * PANEL * 2, 0);
        let zp = self.x_zero_point;
        let taps = g.kh * g.kw;
        let pointwise = taps == 1 && g.sh == 1 && g.sw == 1 && g.pad_t == 0 && g.pad_l == 0 && g.ho == g.h && g.wo == g.w;
        if pointwise {
            // Both channels of a pair at once, whole panels first, so the
            // interleave vectorises.
            let full = pixels / PANEL;
            for kp in 0..k_pairs {
                let c = 2 * kp;
                let plane = &x[c * g.h * g.w..][..g.h * g.w];
                let other = (c + 1 < g.depth()).then(|| &x[(c + 1) * g.h * g.w..][..g.h * g.w]);
                for panel in 0..panels {
                    let dst = &mut packed[(panel * k_pairs + kp) * PANEL * 2..][..PANEL * 2];
                    let n = if panel < full { PANEL } else { pixels - full * PANEL };
                    let a = &plane[panel * PANEL..][..n];
                    match other {
                        Some(b) => {
                            let b = &b[panel * PANEL..][..n];
                            for j in 0..n {
                                dst[2 * j] = (a[j].widen() - zp) as i16;
                                dst[2 * j + 1] = (b[j].widen() - zp) as i16;
                            }
                        }
                        None => {
                            for j in 0..n {
                                dst[2 * j] = (a[j].widen() - zp) as i16;
                            }
                        }
                    }
                }
            }
            return;
        }
        // Panel by panel, so each tap's 16 values land in one contiguous run.
        // The buffer starts zeroed, so windows outside the image are skipped.
        for panel in 0..panels {
            let p0 = panel * PANEL;
            let n = PANEL.min(pixels - p0);
            let origin: [(isize, isize); PANEL] = std::array::from_fn(|l| {
                let p = (p0 + l).min(pixels - 1);
                ((p / g.wo * g.sh) as isize - g.pad_t as isize, (p % g.wo * g.sw) as isize - g.pad_l as isize)
            });
            // All 16 pixels on one output row: each tap reads one strided run.
            let one_row = n == PANEL && p0 % g.wo + PANEL <= g.wo;
            let dst = &mut packed[panel * k_pairs * PANEL * 2..][..k_pairs * PANEL * 2];
            for k in 0..g.depth() {
                let (c, i, j) = (k / taps, (k % taps) / g.kw, k % g.kw);
                let plane = &x[c * g.h * g.w..][..g.h * g.w];
                let dst = &mut dst[(k / 2) * PANEL * 2 + k % 2..][..PANEL * 2 - 1];
                let (di, dj) = ((i * g.dh) as isize, (j * g.dw) as isize);
                let (ih, iw) = (origin[0].0 + di, origin[0].1 + dj);
                let last = iw + ((PANEL - 1) * g.sw) as isize;
                if one_row && ih >= 0 && (ih as usize) < g.h && iw >= 0 && (last as usize) < g.w {
                    let src = &plane[ih as usize * g.w + iw as usize..][..last as usize - iw as usize + 1];
                    match g.sw {
                        1 => strided_run::<T, 1>(src, dst, zp),
                        2 => strided_run::<T, 2>(src, dst, zp),
                        sw => {
                            for l in 0..PANEL {
                                dst[2 * l] = (src[l * sw].widen() - zp) as i16;
                            }
                        }
                    }
                    continue;
                }
                for (l, &(oh, ow)) in origin.iter().enumerate().take(n) {
                    let (ih, iw) = (oh + di, ow + dj);
                    if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                        dst[2 * l] = (plane[ih as usize * g.w + iw as usize].widen() - zp) as i16;
                    }
                }
            }
        }
    }

    /// `avx2` is only ever true on x86-64 (see `simd`); elsewhere the
    /// portable tile runs.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub(super) fn gemm<T: Code>(&self, a: &[i32], k_pairs: usize, packed: &[i16], grp: usize, out: &mut [T], avx2: bool) {
        let g = &self.geo;
        let pixels = g.pixels();
        let mut acc = [0i32; ROWS * PANEL];
        for panel in 0..pixels.div_ceil(PANEL) {
            let b = &packed[panel * k_pairs * PANEL * 2..][..k_pairs * PANEL * 2];
            let cols = PANEL.min(pixels - panel * PANEL);
            for block in 0..g.cout_g.div_ceil(ROWS) {
                let a = &a[block * k_pairs * ROWS..][..k_pairs * ROWS];
                let rows = ROWS.min(g.cout_g - block * ROWS);
                let first = grp * g.cout_g + block * ROWS;
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    let rq = &self.requant;
                    let bias = std::array::from_fn(|r| if r < rows { rq.bias[first + r] } else { 0 });
                    let mult = std::array::from_fn(|r| if r < rows { rq.mult[first + r] } else { 0.0 });
                    let (lo, hi) = ((T::MIN - rq.zero_point) as f32, (T::MAX - rq.zero_point) as f32);
                    // SAFETY: `avx2` is only true inside `run_avx2`, entered after detection.
                    let codes = unsafe {
                        if cols <= PANEL / 2 {
                            x86_64::gemm_tile_avx2::<true>(a, b, k_pairs, &bias, &mult, lo, hi, rq.zero_point)
                        } else {
                            x86_64::gemm_tile_avx2::<false>(a, b, k_pairs, &bias, &mult, lo, hi, rq.zero_point)
                        }
                    };
                    for (r, bytes) in codes.chunks_exact(PANEL / 4).enumerate().take(rows) {
                        put_codes(&mut out[(block * ROWS + r) * pixels + panel * PANEL..][..cols], bytes);
                    }
                    continue;
                }
                tile_portable(a, b, k_pairs, &mut acc);
                for r in 0..rows {
                    let m = block * ROWS + r;
                    let dst = &mut out[m * pixels + panel * PANEL..][..cols];
                    self.requant_row(&acc[r * PANEL..][..cols], first + r, dst);
                }
            }
        }
    }

    #[inline(always)]
    fn requant_row<T: Code>(&self, acc: &[i32], channel: usize, dst: &mut [T]) {
        let rq = &self.requant;
        let (bias, mult, zp) = (rq.bias[channel], rq.mult[channel], rq.zero_point);
        let (lo, hi) = ((T::MIN - zp) as f32, (T::MAX - zp) as f32);
        for (d, &a) in dst.iter_mut().zip(acc) {
            *d = T::narrow(requantize(a.wrapping_add(bias), mult, lo, hi) + zp);
        }
    }
}

/// One tap's 16 pixels of an im2col panel, every `S`th input: a constant
/// stride, so the gather vectorises.
#[inline(always)]
fn strided_run<T: Code, const S: usize>(src: &[T], dst: &mut [i16], zp: i32) {
    let src = &src[..(PANEL - 1) * S + 1];
    let dst = &mut dst[..PANEL * 2 - 1];
    for l in 0..PANEL {
        dst[2 * l] = (src[l * S].widen() - zp) as i16;
    }
}

#[inline(always)]
fn tile_portable(a: &[i32], b: &[i16], k_pairs: usize, acc: &mut [i32; ROWS * PANEL]) {
    acc.fill(0);
    for k in 0..k_pairs {
        let b = &b[k * PANEL * 2..][..PANEL * 2];
        for r in 0..ROWS {
            let pair = a[k * ROWS + r];
            let (w0, w1) = (pair as i16 as i32, (pair >> 16) as i16 as i32);
            let row = &mut acc[r * PANEL..][..PANEL];
            for (j, o) in row.iter_mut().enumerate() {
                *o += b[2 * j] as i32 * w0 + b[2 * j + 1] as i32 * w1;
            }
        }
    }
}
