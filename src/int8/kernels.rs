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

use std::cell::RefCell;

/// Output pixels per GEMM panel: two AVX2 registers of eight i32 lanes.
const PANEL: usize = 16;
/// Output channels per GEMM tile.
const ROWS: usize = 4;
/// Lanes of a depthwise block: two AVX2 registers of f32, outputs along a
/// row (row kernel) or channels (channel kernel).
const LANES: usize = 16;
/// Vectors of sums per depthwise block: output rows (row kernel) or pixels
/// (channel kernel). With LANES, eight registers of independent sums, so the
/// fused multiply-adds do not wait on each other.
const SUMS: usize = 4;
/// Bytes of f32 input tile the channel-vectorised kernel aims to keep in L2.
const TILE_BYTES: usize = 96 << 10;
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
    fn depth(&self) -> usize {
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
    kernel: Kernel,
}

#[derive(Clone, Debug, PartialEq)]
enum Kernel {
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
        if simd::avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time just above).
            unsafe { self.run_avx2(x, batch, out) }
        } else {
            self.run_portable(x, batch, out)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        // The same body compiled for AVX2, so its packing and requantisation
        // loops vectorise 8 lanes wide as well as the hand-written tile.
        self.run_body(x, batch, out, true)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_avx2<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        self.run_body(x, batch, out, false)
    }

    fn run_portable<T: Code>(&self, x: &[T], batch: usize, out: &mut [T]) {
        self.run_body(x, batch, out, false)
    }

    #[inline(always)]
    fn run_body<T: Code>(&self, x: &[T], batch: usize, out: &mut [T], avx2: bool) {
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

    /// im2col of one group into `[panel][k pair][PANEL][2]` i16 of `x − x_zp`,
    /// zero where the window leaves the image (the zero point, before the
    /// subtraction) and in the padding of the last panel and odd row.
    #[inline(always)]
    fn pack<T: Code>(&self, x: &[T], k_pairs: usize, packed: &mut Vec<i16>) {
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

    #[inline(always)]
    fn gemm<T: Code>(&self, a: &[i32], k_pairs: usize, packed: &[i16], grp: usize, out: &mut [T], avx2: bool) {
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
                if avx2 {
                    let rq = &self.requant;
                    let bias = std::array::from_fn(|r| if r < rows { rq.bias[first + r] } else { 0 });
                    let mult = std::array::from_fn(|r| if r < rows { rq.mult[first + r] } else { 0.0 });
                    let (lo, hi) = ((T::MIN - rq.zero_point) as f32, (T::MAX - rq.zero_point) as f32);
                    // SAFETY: `avx2` is only true inside `run_avx2`, entered after detection.
                    let codes = unsafe {
                        if cols <= PANEL / 2 {
                            simd::gemm_tile_avx2::<true>(a, b, k_pairs, &bias, &mult, lo, hi, rq.zero_point)
                        } else {
                            simd::gemm_tile_avx2::<false>(a, b, k_pairs, &bias, &mult, lo, hi, rq.zero_point)
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

    /// Depthwise with lanes across channels: the input is transposed into a
    /// padded `[row][column][LANES]` f32 tile per block of channels, so every
    /// tap of every pixel is a full vector whatever the plane's width,
    /// stride or dilation. Small late planes (7×7, 14×14) waste no lanes, and
    /// the bias and multiplier are vectors too.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn depthwise_channels<T: Code>(&self, x: &[T], w: &[f32], bias: &[f32], folded: bool, out: &mut [T], tile: &mut Vec<f32>, avx2: bool) {
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
                    let codes = if avx2 {
                        // SAFETY: `avx2` is only true inside `run_avx2`, entered after
                        // detection; every base + offset + LANES stays within the band's
                        // rows and `cols` by their construction.
                        unsafe { simd::depthwise_block_avx2(wb, tile, &offsets, &bases, &req, true) }
                    } else {
                        depthwise_block(wb, tile, &offsets, &bases, &req, cfg!(target_arch = "aarch64"), true)
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
    fn depthwise<T: Code>(&self, x: &[T], taps: &[f32], bias: &[f32], folded: bool, out: &mut [T], plane: &mut Vec<f32>, row: &mut Vec<f32>, avx2: bool) {
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
                    let codes = if avx2 {
                        // SAFETY: `avx2` is only true inside `run_avx2`, entered after
                        // detection; the planes' spare rows and columns hold every read.
                        unsafe { simd::depthwise_block_avx2(&wrep, plane, &offsets, &bases, &req, false) }
                    } else {
                        depthwise_block(&wrep, plane, &offsets, &bases, &req, cfg!(target_arch = "aarch64"), false)
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

/// `clamp(round_half_even(acc · mult))` as MLAS computes it: clamp in f32 to
/// the code range less the zero point, then round by adding and subtracting
/// 1.5·2^23, which rounds half to even for |v| < 2^22 (the clamp ensures it)
/// and vectorises where `round_ties_even` would be a libm call per element
/// on targets without a rounding instruction.
#[inline(always)]
fn requantize(acc: i32, mult: f32, lo: f32, hi: f32) -> i32 {
    round_clamped(acc as f32 * mult, lo, hi)
}

#[inline(always)]
fn round_clamped(v: f32, lo: f32, hi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    // Plain compares rather than f32::max/min, whose NaN rules cost a blend
    // per lane; v is never NaN.
    let v = if v < lo { lo } else { v };
    let v = if v > hi { hi } else { v };
    // The sum's low mantissa bits are the rounded integer: reading them
    // avoids a saturating float-to-int conversion.
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// A channel block's requantisation, as vectors.
struct BlockRequant {
    /// The sums' start: the bias when folded, else zero.
    init: [f32; LANES],
    mult: [f32; LANES],
    /// The bias still to add in i32 when not folded.
    bias: [i32; LANES],
    folded: bool,
    lo: f32,
    hi: f32,
    zero_point: i32,
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

/// Writes the first `dst.len()` code bytes of `words` (each word's bytes low
/// first). A full run of one block's lanes, or of one channel's SUMS, is
/// copied at a constant length, which compiles to a single store.
#[inline(always)]
fn put_codes<T: Code>(dst: &mut [T], words: &[u32]) {
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

mod simd {
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn avx2() -> bool {
        false
    }

    /// The GEMM tile: ROWS channels × PANEL pixels, sums started at the
    /// bias, requantised in registers to 16 code bytes per channel (as
    /// `super::depthwise_block`'s row order). `HALF` computes only the first
    /// 8 pixels, for a last panel that has no more.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_tile_avx2<const HALF: bool>(a: &[i32], b: &[i16], k_pairs: usize, bias: &[i32; 4], mult: &[f32; 4], lo: f32, hi: f32, zero_point: i32) -> [u32; 16] {
        use std::arch::x86_64::*;
        const { assert!(super::ROWS == 4 && super::PANEL == 16) };
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

    #[cfg(not(target_arch = "x86_64"))]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_tile_avx2<const HALF: bool>(_: &[i32], _: &[i16], _: usize, _: &[i32; 4], _: &[f32; 4], _: f32, _: f32, _: i32) -> [u32; 16] {
        unreachable!("only called where AVX2 was detected")
    }

    /// `super::depthwise_block` with the SUMS × LANES sums in eight registers
    /// and the requantisation and byte transpose in vectors: LLVM scalarised
    /// the portable form inside the AVX2 body.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn depthwise_block_avx2(w: &[f32], tile: &[f32], offsets: &[usize], bases: &[usize; super::SUMS], rq: &super::BlockRequant, transpose: bool) -> [u32; super::LANES] {
        use std::arch::x86_64::*;
        const { assert!(super::LANES == 16 && super::SUMS == 4) };
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
    /// 16 lanes) to 64 code bytes, in `super::depthwise_block`'s orders.
    /// Inlined into AVX2 functions only.
    #[cfg(target_arch = "x86_64")]
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

    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn depthwise_block_avx2(w: &[f32], tile: &[f32], offsets: &[usize], bases: &[usize; super::SUMS], rq: &super::BlockRequant, transpose: bool) -> [u32; super::LANES] {
        super::depthwise_block(w, tile, offsets, bases, rq, false, transpose)
    }

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
