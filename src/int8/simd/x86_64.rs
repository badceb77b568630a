//! The x86-64 SIMD code: AVX2 detection, the AVX2 build of the convolution's
//! body, and the hand-written AVX2 GEMM tile and depthwise block. Compiled
//! only on x86-64 (gated at its `mod` line); everything but `avx2()` runs
//! only after `avx2()` said yes, and gives the same codes as the portable
//! kernels in `gemm` and `depthwise`.

use crate::int8::depthwise::BlockRequant;
use crate::int8::kernels::{Code, QConv, LANES, PANEL, ROWS, SUMS};

pub(crate) fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

impl QConv {
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn run_avx2<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        // The same body compiled for AVX2, so its packing and requantisation
        // loops vectorise 8 lanes wide as well as the hand-written tile.
        self.run_body(x, batch, out, true)
    }
}

/// The GEMM tile: ROWS channels × PANEL pixels, sums started at the
/// bias, requantised in registers to 16 code bytes per channel (as
/// `depthwise::depthwise_block`'s row order). `HALF` computes only the first
/// 8 pixels, for a last panel that has no more.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_tile_avx2<const HALF: bool>(a: &[i32], b: &[i16], k_pairs: usize, bias: &[i32; 4], mult: &[f32; 4], lo: f32, hi: f32, zero_point: i32) -> [u32; 16] {
    use std::arch::x86_64::*;
    const { assert!(ROWS == 4 && PANEL == 16) };
    // Checked in release too: one compare per tile keeps the raw loads below sound.
    assert!(a.len() >= k_pairs * 4 && b.len() >= k_pairs * 32);
    let mut c = [_mm256_setzero_si256(); 8];
    for r in 0..4 {
        c[2 * r] = _mm256_set1_epi32(bias[r]);
        c[2 * r + 1] = c[2 * r];
    }
    let (ap, bp) = (a.as_ptr(), b.as_ptr() as *const __m256i);
    for k in 0..k_pairs {
        // SAFETY: k < k_pairs and the slices hold k_pairs·4 i32 and k_pairs·32 i16.
        let b0 = unsafe { _mm256_loadu_si256(bp.add(2 * k)) };
        let b1 = if HALF { b0 } else { unsafe { _mm256_loadu_si256(bp.add(2 * k + 1)) } };
        for r in 0..4 {
            let w = _mm256_set1_epi32(unsafe { *ap.add(4 * k + r) });
            c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(b0, w));
            if !HALF {
                c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(b1, w));
            }
        }
    }
    let mut v = [_mm256_setzero_ps(); 8];
    let mut m = [_mm256_setzero_ps(); 8];
    for i in 0..8 {
        v[i] = _mm256_cvtepi32_ps(c[i]);
        m[i] = _mm256_set1_ps(mult[i / 2]);
    }
    // SAFETY: this function has AVX2.
    unsafe { requant_pack(v, m, lo, hi, zero_point, false) }
}

/// `depthwise::depthwise_block` with the SUMS × LANES sums in eight registers
/// and the requantisation and byte transpose in vectors: LLVM scalarised
/// the portable form inside the AVX2 body.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn depthwise_block_avx2(w: &[f32], tile: &[f32], offsets: &[usize], bases: &[usize; SUMS], rq: &BlockRequant, transpose: bool) -> [u32; LANES] {
    use std::arch::x86_64::*;
    const { assert!(LANES == 16 && SUMS == 4) };
    // Checked in release too (a few compares per 64 outputs), so the raw
    // loads below stay in bounds whatever a caller computes.
    let reach = offsets.iter().copied().max().unwrap_or(0) + 16;
    assert!(bases.iter().all(|&b| b + reach <= tile.len()) && w.len() >= offsets.len() * 16);
    let (wp, tp) = (w.as_ptr(), tile.as_ptr());
    // SAFETY (all loads and stores below): every base + offset + 16 lies
    // within the tile and w holds 16 f32 per tap (asserted above), and the
    // requantisation arrays hold 16 lanes (their type).
    unsafe {
        let (i0, i1) = (_mm256_loadu_ps(rq.init.as_ptr()), _mm256_loadu_ps(rq.init.as_ptr().add(8)));
        let mut a = [i0, i1, i0, i1, i0, i1, i0, i1];
        for (t, &off) in offsets.iter().enumerate() {
            let (w0, w1) = (_mm256_loadu_ps(wp.add(t * 16)), _mm256_loadu_ps(wp.add(t * 16 + 8)));
            for p in 0..4 {
                let s = tp.add(bases[p] + off);
                a[2 * p] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(s), a[2 * p]);
                a[2 * p + 1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(s.add(8)), a[2 * p + 1]);
            }
        }
        let mut v = a;
        let mut mult = [_mm256_setzero_ps(); 8];
        for h in 0..2 {
            let m = _mm256_loadu_ps(rq.mult.as_ptr().add(8 * h));
            let bias = _mm256_loadu_si256(rq.bias.as_ptr().add(8 * h) as *const __m256i);
            for p in 0..4 {
                mult[2 * p + h] = m;
                if !rq.folded {
                    v[2 * p + h] = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvttps_epi32(v[2 * p + h]), bias));
                }
            }
        }
        requant_pack(v, mult, rq.lo, rq.hi, rq.zero_point, transpose)
    }
}

/// Requantises eight vectors of sums (`v[2p]`, `v[2p + 1]`: vector p's
/// 16 lanes) to 64 code bytes, in `depthwise::depthwise_block`'s orders.
/// Inlined into AVX2 functions only.
#[inline(always)]
unsafe fn requant_pack(v: [std::arch::x86_64::__m256; 8], mult: [std::arch::x86_64::__m256; 8], lo: f32, hi: f32, zero_point: i32, transpose: bool) -> [u32; 16] {
    use std::arch::x86_64::*;
    // The code type is signed (i8) when its least code, lo + zero point, is negative.
    let signed = lo + (zero_point as f32) < 0.0;
    // SAFETY: called from AVX2 functions; the stores write 64 bytes into `codes`.
    unsafe {
        let mut codes = [0u32; 16];
        let o = codes.as_mut_ptr() as *mut __m256i;
        let mut c = [_mm256_setzero_si256(); 8];
        if !transpose {
            // Round with the conversion (round half to even, the default
            // mode) and clamp with the saturating packs: the same codes as
            // clamping first, since the bounds are integers. Capped below
            // 2^31 first, where the conversion would give i32::MIN.
            let (cap, zp) = (_mm256_set1_ps(1_073_741_824.0), _mm256_set1_epi32(zero_point));
            for i in 0..8 {
                c[i] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_mul_ps(v[i], mult[i]), cap)), zp);
            }
            // Each vector's 16 codes to 16 bytes: the packs work within
            // 128-bit halves, so the dwords are put back in order after.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for half in 0..2 {
                let (p0, p1) = (2 * half, 2 * half + 1);
                let w0 = _mm256_packs_epi32(c[2 * p0], c[2 * p0 + 1]);
                let w1 = _mm256_packs_epi32(c[2 * p1], c[2 * p1 + 1]);
                let bytes = if signed { _mm256_packs_epi16(w0, w1) } else { _mm256_packus_epi16(w0, w1) };
                _mm256_storeu_si256(o.add(half), _mm256_permutevar8x32_epi32(bytes, order));
            }
            return codes;
        }
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        const MAGIC: f32 = 12_582_912.0;
        let magic = _mm256_set1_ps(MAGIC);
        let offset = _mm256_set1_epi32((MAGIC.to_bits() as i32).wrapping_sub(zero_point));
        let byte = _mm256_set1_epi32(0xff);
        for i in 0..8 {
            // The scalar `requantize`: multiply, clamp, round by the magic number.
            let x = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], mult[i]), lo), hi);
            let code = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(x, magic)), offset);
            // The low byte is the code's bits whether it is u8 or i8.
            c[i] = _mm256_and_si256(code, byte);
        }
        // Lane l of vector p becomes byte p of u32 l.
        for h in 0..2 {
            let (c0, c1, c2, c3) = (c[h], _mm256_slli_epi32::<8>(c[2 + h]), _mm256_slli_epi32::<16>(c[4 + h]), _mm256_slli_epi32::<24>(c[6 + h]));
            _mm256_storeu_si256(o.add(h), _mm256_or_si256(_mm256_or_si256(c0, c1), _mm256_or_si256(c2, c3)));
        }
        codes
    }
}
