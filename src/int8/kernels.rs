//! Integer convolution for quantised models: ONNX `QLinearConv` semantics,
//! computed the way onnxruntime does, so a model gives the same codes here as
//! there (docs/int8.md).
//!
//! Per output element: `acc = bias + Σ (x − x_zp)·(w − w_zp)`, exact in i32;
//! `y = clamp(round_half_even(acc · m) + y_zp)` with `m = (x_scale · w_scale) / y_scale`
//! in f32, one multiplier per output channel.
//!
//! Two kernels:
//! - a GEMM over `(w − w_zp)` and `(x − x_zp)` held as i16 pairs, because one
//!   AVX2 `vpmaddwd` then does sixteen exact multiply-adds and no product or
//!   pair sum can saturate (`vpmaddubsw`, twice as wide, saturates on u8×i8);
//!   requantisation is fused into the tile store, so no i32 matrix is written;
//! - a direct depthwise kernel in f32: every product and partial sum is an
//!   integer below 2^24, so f32 arithmetic is exact and the result equals the
//!   integer one bit for bit, while f32 lanes vectorise on every target.
//!
//! This file holds what the kernels share: the convolution's types, the
//! weights' preparation and layouts, the choice of kernel, the scalar
//! requantisation and the scratch buffers. The GEMM is in `gemm`, the
//! depthwise kernels in `depthwise`, and the hand-written AVX2 code they
//! dispatch to on x86-64 in `simd`.

use std::cell::RefCell;

/// Output pixels per GEMM panel: two AVX2 registers of eight i32 lanes.
pub(super) const PANEL: usize = 16;
/// Output channels per GEMM tile.
pub(super) const ROWS: usize = 4;
/// Lanes of a depthwise block: two AVX2 registers of f32, outputs along a
/// row (row kernel) or channels (channel kernel).
pub(super) const LANES: usize = 16;
/// Vectors of sums per depthwise block: output rows (row kernel) or pixels
/// (channel kernel). With LANES, eight registers of independent sums, so the
/// fused multiply-adds do not wait on each other.
pub(super) const SUMS: usize = 4;
/// f32 holds every integer up to this exactly; the depthwise kernel is used
/// only when its largest possible partial sum stays below it.
const F32_EXACT: i64 = 1 << 24;

/// A quantised element type: u8 or i8.
pub trait Code: Copy + Send + Sync + 'static {
    const MIN: i32;
    const MAX: i32;
    fn widen(self) -> i32;
    fn narrow(v: i32) -> Self;
}

impl Code for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn narrow(v: i32) -> Self {
        v as u8
    }
}

impl Code for i8 {
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn narrow(v: i32) -> Self {
        v as i8
    }
}

/// A 2-D convolution's shape, NCHW input and OIHW kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub groups: usize,
    /// Input channels per group.
    pub cin_g: usize,
    /// Output channels per group.
    pub cout_g: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    pub(super) fn depth(&self) -> usize {
        self.cin_g * self.kh * self.kw
    }
    pub fn pixels(&self) -> usize {
        self.ho * self.wo
    }
    pub fn cin(&self) -> usize {
        self.groups * self.cin_g
    }
    pub fn cout(&self) -> usize {
        self.groups * self.cout_g
    }
}

/// The output side of `QLinearConv`, per output channel where it varies.
#[derive(Clone, Debug, PartialEq)]
pub struct Requant {
    /// The int32 bias input (zero when absent), added to the accumulator.
    pub bias: Vec<i32>,
    /// `(x_scale · w_scale[c]) / y_scale`, computed in f32 in that order.
    pub mult: Vec<f32>,
    pub zero_point: i32,
}

/// Weights prepared once when the model is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct QConv {
    pub geo: Geometry,
    pub x_zero_point: i32,
    pub requant: Requant,
    pub(super) kernel: Kernel,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kernel {
    /// `[group][row block][k pair][ROWS]`: `(w − w_zp)` of channels 2k and
    /// 2k+1 as the low and high i16 of one i32, the operand `vpmaddwd` wants.
    Gemm { pairs: Vec<i32>, k_pairs: usize, row_blocks: usize },
    /// `taps`: `[channel][kh·kw]`, `(w − w_zp)` as f32; `blocked`: the same
    /// as `[channel block][kh·kw][LANES]`, zero past the last channel. `bias`:
    /// the bias as f32, the accumulators' start, when `folded` (every
    /// channel's bias and largest sum stay exact in f32 together).
    Depthwise { taps: Vec<f32>, blocked: Vec<f32>, bias: Vec<f32>, folded: bool },
}

impl QConv {
    /// `w` is `(w − w_zp)` in OIHW order; `requant` has one bias and multiplier per output channel.
    pub fn new(geo: Geometry, w: &[i32], x_zero_point: i32, requant: Requant) -> QConv {
        assert_eq!(w.len(), geo.cout() * geo.depth());
        assert_eq!(requant.bias.len(), geo.cout());
        assert_eq!(requant.mult.len(), geo.cout());
        let taps = geo.kh * geo.kw;
        let depthwise = geo.cin_g == 1 && geo.cout_g == 1 && (taps as i64) * 255 * 255 < F32_EXACT;
        let kernel = if depthwise {
            let blocks = geo.cout().div_ceil(LANES);
            let mut blocked = vec![0f32; blocks * taps * LANES];
            for (c, w) in w.chunks_exact(taps).enumerate() {
                for (t, &v) in w.iter().enumerate() {
                    blocked[((c / LANES) * taps + t) * LANES + c % LANES] = v as f32;
                }
            }
            // Starting the sums at the bias saves converting every output to
            // i32 and back, but only while bias plus sum stays below 2^24.
            let folded = w.chunks_exact(taps).zip(&requant.bias).all(|(w, &b)| {
                (b as i64).abs() + 255 * w.iter().map(|&v| (v as i64).abs()).sum::<i64>() < F32_EXACT
            });
            let mut bias: Vec<f32> = requant.bias.iter().map(|&b| if folded { b as f32 } else { 0.0 }).collect();
            bias.resize(blocks * LANES, 0.0);
            Kernel::Depthwise { taps: w.iter().map(|&v| v as f32).collect(), blocked, bias, folded }
        } else {
            let depth = geo.depth();
            let k_pairs = depth.div_ceil(2);
            let row_blocks = geo.cout_g.div_ceil(ROWS);
            let mut pairs = vec![0i32; geo.groups * row_blocks * k_pairs * ROWS];
            for g in 0..geo.groups {
                for m in 0..geo.cout_g {
                    let row = &w[(g * geo.cout_g + m) * depth..][..depth];
                    for k in 0..k_pairs {
                        let lo = row[2 * k] as i16 as u16 as u32;
                        let hi = row.get(2 * k + 1).map_or(0, |&v| v as i16 as u16 as u32);
                        let at = ((g * row_blocks + m / ROWS) * k_pairs + k) * ROWS + m % ROWS;
                        pairs[at] = (lo | hi << 16) as i32;
                    }
                }
            }
            Kernel::Gemm { pairs, k_pairs, row_blocks }
        };
        QConv { geo, x_zero_point, requant, kernel }
    }

    /// Which kernel runs, for dumps and docs.
    pub fn kernel_name(&self) -> &'static str {
        match self.kernel {
            Kernel::Gemm { .. } => "gemm-i16",
            Kernel::Depthwise { .. } => "depthwise-f32-exact",
        }
    }

    /// Convolves `batch` NCHW images `x` into `out` (NCHW, `cout × ho × wo` each).
    pub fn run<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        let g = &self.geo;
        assert_eq!(x.len(), batch * g.cin() * g.h * g.w);
        assert_eq!(out.len(), batch * g.cout() * g.pixels());
        #[cfg(target_arch = "x86_64")]
        if super::simd::x86_64::avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time just above).
            return unsafe { self.run_avx2(x, batch, out) };
        }
        self.run_portable(x, batch, out)
    }

    fn run_portable<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        self.run_body(x, batch, out, false)
    }

    #[inline(always)]
    pub(super) fn run_body<T: Code>(&self, x: &[T], batch: usize, out: &mut [T], avx2: bool) {
        let g = &self.geo;
        let (img_in, img_out) = (g.cin() * g.h * g.w, g.cout() * g.pixels());
        // Taken out of the thread-local rather than used inside `with`'s
        // closure: a closure does not inherit `run_avx2`'s target features,
        // and everything below must be compiled with them.
        let mut scratch = SCRATCH.with(|s| s.take());
        let Scratch { packed, plane, acc } = &mut scratch;
        for n in 0..batch {
            let x = &x[n * img_in..][..img_in];
            let out = &mut out[n * img_out..][..img_out];
            match &self.kernel {
                Kernel::Depthwise { taps, blocked, bias, folded } => {
                    // Narrower than one chunk the row kernel leaves lanes idle
                    // and pays its per-channel set-up for few outputs: lanes go
                    // across channels instead.
                    if g.wo < LANES {
                        self.depthwise_channels(x, blocked, bias, *folded, out, plane, avx2)
                    } else {
                        self.depthwise(x, taps, bias, *folded, out, plane, acc, avx2)
                    }
                }
                Kernel::Gemm { pairs, k_pairs, row_blocks } => {
                    for grp in 0..g.groups {
                        let x = &x[grp * g.cin_g * g.h * g.w..][..g.cin_g * g.h * g.w];
                        let out = &mut out[grp * g.cout_g * g.pixels()..][..g.cout_g * g.pixels()];
                        let a = &pairs[grp * row_blocks * k_pairs * ROWS..][..row_blocks * k_pairs * ROWS];
                        self.pack(x, *k_pairs, packed);
                        self.gemm(a, *k_pairs, packed, grp, out, avx2);
                    }
                }
            }
        }
        SCRATCH.with(|s| s.replace(scratch));
    }
}

/// `clamp(round_half_even(acc · mult))` as MLAS computes it: clamp in f32 to
/// the code range less the zero point, then round by adding and subtracting
/// 1.5·2^23, which rounds half to even for |v| < 2^22 (the clamp ensures it)
/// and vectorises where `round_ties_even` would be a libm call per element
/// on targets without a rounding instruction.
#[inline(always)]
pub(super) fn requantize(acc: i32, mult: f32, lo: f32, hi: f32) -> i32 {
    round_clamped(acc as f32 * mult, lo, hi)
}

#[inline(always)]
pub(super) fn round_clamped(v: f32, lo: f32, hi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    // Plain compares rather than f32::max/min, whose NaN rules cost a blend
    // per lane; v is never NaN.
    let v = if v < lo { lo } else { v };
    let v = if v > hi { hi } else { v };
    // The sum's low mantissa bits are the rounded integer: reading them
    // avoids a saturating float-to-int conversion.
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// Writes the first `dst.len()` code bytes of `words` (each word's bytes low
/// first). A full run of one block's lanes, or of one channel's SUMS, is
/// copied at a constant length, which compiles to a single store.
#[inline(always)]
pub(super) fn put_codes<T: Code>(dst: &mut [T], words: &[u32]) {
    #[inline(always)]
    fn put<T: Code>(dst: &mut [T], words: &[u32]) {
        for (d, w) in dst.chunks_mut(4).zip(words) {
            for (d, &b) in d.iter_mut().zip(&w.to_le_bytes()) {
                *d = T::narrow(b as i32);
            }
        }
    }
    match dst.len() {
        LANES => put(&mut dst[..LANES], &words[..LANES / 4]),
        SUMS => put(&mut dst[..SUMS], &words[..SUMS / 4]),
        _ => put(dst, words),
    }
}

#[derive(Default)]
struct Scratch {
    packed: Vec<i16>,
    plane: Vec<f32>,
    acc: Vec<f32>,
}

thread_local! {
    // Reused across calls: a fresh multi-megabyte im2col buffer per
    // convolution would cost page faults on every forward pass.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written as plainly as possible in i64: the reference
    /// the kernels must equal bit for bit.
    fn reference<T: Code>(conv: &QConv, w: &[i32], x: &[T], batch: usize) -> Vec<T> {
        let g = &conv.geo;
        let mut out = Vec::new();
        for n in 0..batch {
            for co in 0..g.cout() {
                let grp = co / g.cout_g;
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let mut acc: i64 = conv.requant.bias[co] as i64;
                        for ci in 0..g.cin_g {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let ih = (oh * g.sh + i * g.dh) as i64 - g.pad_t as i64;
                                    let iw = (ow * g.sw + j * g.dw) as i64 - g.pad_l as i64;
                                    if ih < 0 || iw < 0 || ih >= g.h as i64 || iw >= g.w as i64 {
                                        continue;
                                    }
                                    let c = grp * g.cin_g + ci;
                                    let xv = x[((n * g.cin() + c) * g.h + ih as usize) * g.w + iw as usize].widen()
                                        - conv.x_zero_point;
                                    let wv = w[((co * g.cin_g + ci) * g.kh + i) * g.kw + j];
                                    acc += xv as i64 * wv as i64;
                                }
                            }
                        }
                        let v = (acc as i32 as f32 * conv.requant.mult[co]).round_ties_even();
                        let q = (v as i64 + conv.requant.zero_point as i64).clamp(T::MIN as i64, T::MAX as i64);
                        out.push(T::narrow(q as i32));
                    }
                }
            }
        }
        out
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn range(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u32) as i32
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn case(seed: u64, groups: usize, cin_g: usize, cout_g: usize, k: (usize, usize), s: (usize, usize), d: usize, pad: (usize, usize, usize, usize), hw: (usize, usize)) {
        case_scaled(seed, groups, cin_g, cout_g, k, s, d, pad, hw, 5000, (200, 4000));
    }

    /// `case` with the bias drawn from ±`bias` and the multiplier from 1/`mult`.
    #[allow(clippy::too_many_arguments)]
    fn case_scaled(seed: u64, groups: usize, cin_g: usize, cout_g: usize, k: (usize, usize), s: (usize, usize), d: usize, pad: (usize, usize, usize, usize), hw: (usize, usize), bias: i32, mult: (i32, i32)) {
        let mut rng = Lcg(seed);
        let (kh, kw) = k;
        let (h, w) = hw;
        let ho = (h + pad.0 + pad.2 - (d * (kh - 1) + 1)) / s.0 + 1;
        let wo = (w + pad.1 + pad.3 - (d * (kw - 1) + 1)) / s.1 + 1;
        let geo = Geometry { groups, cin_g, cout_g, kh, kw, sh: s.0, sw: s.1, dh: d, dw: d, pad_t: pad.0, pad_l: pad.1, h, w, ho, wo };
        let cout = groups * cout_g;
        // Weights over the whole i8 range less a per-channel zero point, so
        // w − w_zp reaches ±255, the widest an i16 pair must hold exactly.
        let weights: Vec<i32> = (0..cout * cin_g * kh * kw).map(|_| rng.range(-128, 127) - rng.range(-2, 2)).collect();
        let bias = (0..cout).map(|_| rng.range(-bias, bias)).collect();
        let mult = (0..cout).map(|_| 1.0 / rng.range(mult.0, mult.1) as f32).collect();
        let x_zp = rng.range(0, 255);
        let conv = QConv::new(geo.clone(), &weights, x_zp, Requant { bias, mult, zero_point: rng.range(0, 255) });
        let batch = 2;
        let x: Vec<u8> = (0..batch * geo.cin() * h * w).map(|_| rng.range(0, 255) as u8).collect();
        let mut out = vec![0u8; batch * cout * ho * wo];
        conv.run(&x, batch, &mut out);
        let want = reference(&conv, &weights, &x, batch);
        let diff = out.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{} kernel, {geo:?}: {diff} of {} codes differ", conv.kernel_name(), out.len());
        // The portable tile too, whatever this CPU has.
        let mut out2 = vec![0u8; out.len()];
        conv.run_portable(&x, batch, &mut out2);
        assert_eq!(out2, want, "portable path, {geo:?}");
        // And the i8 code type through the same kernel.
        let xi: Vec<i8> = x.iter().map(|&v| (v as i32 - 128) as i8).collect();
        let conv_i = QConv::new(geo.clone(), &weights, x_zp - 128, conv.requant.clone());
        let mut out_i = vec![0i8; out.len()];
        conv_i.run(&xi, batch, &mut out_i);
        assert_eq!(out_i, reference(&conv_i, &weights, &xi, batch), "i8 codes, {geo:?}");
    }

    #[test]
    fn pointwise_matches_the_definition() {
        case(1, 1, 16, 24, (1, 1), (1, 1), 1, (0, 0, 0, 0), (7, 9));
        // Odd depth and channel counts: the padded pair, row block and panel.
        case(2, 1, 13, 7, (1, 1), (1, 1), 1, (0, 0, 0, 0), (5, 5));
        case(3, 1, 96, 40, (1, 1), (1, 1), 1, (0, 0, 0, 0), (14, 14));
        // 49 pixels: a last panel of one, which the AVX2 tile computes half wide.
        case(22, 1, 40, 9, (1, 1), (1, 1), 1, (0, 0, 0, 0), (7, 7));
    }

    #[test]
    fn strided_and_padded_convolutions_match_the_definition() {
        // EfficientNet's stem: 3×3 stride 2, asymmetric padding.
        case(4, 1, 3, 32, (3, 3), (2, 2), 1, (0, 0, 1, 1), (17, 16));
        case(5, 1, 3, 16, (3, 3), (2, 2), 1, (1, 1, 1, 1), (16, 16));
        // A ViT patch embedding: 8×8 stride 8.
        case(6, 1, 3, 8, (8, 8), (8, 8), 1, (0, 0, 0, 0), (32, 32));
        case(7, 1, 5, 6, (3, 5), (1, 2), 2, (2, 1, 0, 3), (11, 13));
        // Grouped, neither dense nor depthwise.
        case(8, 4, 3, 5, (3, 3), (1, 1), 1, (1, 1, 1, 1), (9, 8));
        // Rows of 16 and more outputs: whole panels on one row read each tap
        // as one strided run (strides 1, 2, 3), the panels across rows and
        // the image's edges per pixel.
        case(23, 1, 3, 8, (3, 3), (2, 2), 1, (0, 0, 1, 1), (40, 37));
        case(24, 2, 3, 5, (3, 3), (1, 1), 1, (1, 1, 1, 1), (5, 35));
        case(25, 1, 2, 4, (3, 3), (3, 3), 1, (1, 1, 1, 1), (8, 52));
    }

    #[test]
    fn depthwise_matches_the_definition() {
        case(9, 24, 1, 1, (3, 3), (1, 1), 1, (1, 1, 1, 1), (12, 12));
        case(10, 40, 1, 1, (5, 5), (2, 2), 1, (1, 1, 2, 2), (15, 14));
        case(11, 8, 1, 1, (3, 3), (2, 2), 2, (2, 2, 2, 2), (10, 11));
        // Narrow planes take the channel-vectorised kernel: a channel count
        // that is not a whole block, odd widths, stride 2, asymmetric and
        // dilated padding, and a last pixel block cut short.
        case(13, 37, 1, 1, (5, 5), (1, 1), 1, (2, 2, 2, 2), (7, 7));
        case(14, 20, 1, 1, (3, 3), (2, 2), 1, (0, 0, 1, 1), (14, 13));
        case(15, 16, 1, 1, (5, 5), (2, 2), 1, (1, 2, 2, 1), (9, 15));
        case(16, 5, 1, 1, (3, 3), (1, 1), 2, (2, 2, 2, 2), (3, 5));
        case(17, 33, 1, 1, (3, 5), (1, 2), 1, (1, 0, 1, 3), (11, 6));
        // A 17×17 depthwise kernel could exceed f32's exact range and takes the GEMM path.
        case(12, 3, 1, 1, (17, 17), (1, 1), 1, (8, 8, 8, 8), (20, 20));
    }

    #[test]
    fn depthwise_bias_beyond_f32_and_saturation_match_the_definition() {
        // A bias near 2^28 cannot start the f32 sums exactly: it is added in
        // i32 after them. Both depthwise kernels, wide and narrow planes.
        case_scaled(18, 19, 1, 1, (3, 3), (1, 1), 1, (1, 1, 1, 1), (9, 21), 1 << 28, (1 << 20, 1 << 21));
        case_scaled(19, 21, 1, 1, (5, 5), (2, 2), 1, (2, 2, 2, 2), (13, 9), 1 << 28, (1 << 20, 1 << 21));
        // Scaled values near ±2^30, where the AVX2 rounding caps before
        // converting: GEMM, row and channel kernels.
        case_scaled(26, 1, 8, 8, (1, 1), (1, 1), 1, (0, 0, 0, 0), (4, 5), (1 << 30) - 1, (1, 1));
        case_scaled(27, 17, 1, 1, (3, 3), (1, 1), 1, (1, 1, 1, 1), (3, 20), (1 << 30) - 1, (1, 1));
        case_scaled(28, 17, 1, 1, (3, 3), (1, 1), 1, (1, 1, 1, 1), (5, 5), (1 << 30) - 1, (1, 1));
        // Multipliers this large drive most codes to either end of the range.
        case_scaled(20, 18, 1, 1, (3, 3), (1, 1), 1, (1, 1, 1, 1), (10, 40), 5000, (1, 4));
        case_scaled(21, 18, 1, 1, (5, 5), (1, 1), 1, (2, 2, 2, 2), (6, 6), 5000, (1, 4));
    }

    #[test]
    fn saturates_at_both_ends_of_the_code_range() {
        // A large multiplier drives most outputs to 0 or 255, which must clamp, not wrap.
        let geo = Geometry { groups: 1, cin_g: 4, cout_g: 4, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, pad_t: 0, pad_l: 0, h: 4, w: 4, ho: 4, wo: 4 };
        let w: Vec<i32> = (0..16).map(|i| if i % 2 == 0 { 127 } else { -128 }).collect();
        let conv = QConv::new(geo, &w, 128, Requant { bias: vec![0, 10, -10, 0], mult: vec![0.5; 4], zero_point: 128 });
        let x: Vec<u8> = (0..64).map(|i| (i * 37 % 256) as u8).collect();
        let mut out = vec![0u8; 64];
        conv.run(&x, 1, &mut out);
        assert_eq!(out, reference(&conv, &w, &x, 1));
        assert!(out.contains(&0) && out.contains(&255), "{out:?}");
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::time::Instant;

    fn conv(groups: usize, cin_g: usize, cout_g: usize, k: usize, s: usize, hw: usize) -> (QConv, Vec<u8>) {
        let pad = k / 2;
        let ho = (hw + 2 * pad - k) / s + 1;
        let geo = Geometry { groups, cin_g, cout_g, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pad_t: pad, pad_l: pad, h: hw, w: hw, ho, wo: ho };
        let w: Vec<i32> = (0..groups * cout_g * cin_g * k * k).map(|i| (i * 7 % 255) as i32 - 127).collect();
        let cout = groups * cout_g;
        let c = QConv::new(geo, &w, 3, Requant { bias: vec![1; cout], mult: vec![0.001; cout], zero_point: 5 });
        let x = (0..groups * cin_g * hw * hw).map(|i| (i * 13 % 256) as u8).collect();
        (c, x)
    }

    #[test]
    #[ignore = "prints timings; run with --ignored --nocapture on a quiet machine"]
    fn layer_timings() {
        for (name, g, ci, co, k, s, hw) in [
            ("dw3 s1 96@112", 96, 1, 1, 3, 1, 112),
            ("dw3 s2 96@112", 96, 1, 1, 3, 2, 112),
            ("dw5 s1 240@28", 240, 1, 1, 5, 1, 28),
            ("pw 16->96 @112", 1, 16, 96, 1, 1, 112),
            ("pw 96->24 @56", 1, 96, 24, 1, 1, 56),
            ("pw 480->112 @14", 1, 480, 112, 1, 1, 14),
            ("pw 24->144 @56", 1, 24, 144, 1, 1, 56),
            ("pw 192->1152 @7", 1, 192, 1152, 1, 1, 7),
            ("pw 1152->320 @7", 1, 1152, 320, 1, 1, 7),
            ("stem 3->32 s2 @224", 1, 3, 32, 3, 2, 224),
            // EfficientNet-Lite0's late depthwise layers: many channels, small planes.
            ("dw5 s1 672@14", 672, 1, 1, 5, 1, 14),
            ("dw5 s1 1152@7", 1152, 1, 1, 5, 1, 7),
            ("dw3 s1 1152@7", 1152, 1, 1, 3, 1, 7),
            ("dw3 s1 144@56", 144, 1, 1, 3, 1, 56),
            ("dw5 s2 144@56", 144, 1, 1, 5, 2, 56),
            ("dw3 s2 240@28", 240, 1, 1, 3, 2, 28),
            ("dw3 s1 480@14", 480, 1, 1, 3, 1, 14),
            ("dw5 s2 672@14", 672, 1, 1, 5, 2, 14),
        ] {
            let (c, x) = conv(g, ci, co, k, s, hw);
            let mut out = vec![0u8; c.geo.cout() * c.geo.pixels()];
            c.run(&x, 1, &mut out);
            // The fastest of many runs: the machine is shared, and only
            // interference makes a run slower.
            let ms = (0..40)
                .map(|_| {
                    let t = Instant::now();
                    c.run(&x, 1, &mut out);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min);
            let macs = (c.geo.cout() * c.geo.pixels() * c.geo.cin_g * k * k) as f64;
            println!("{name:>20}: {ms:8.3} ms  {:6.2} GMAC/s  ({})", macs / ms / 1e6, c.kernel_name());
        }
    }
}
