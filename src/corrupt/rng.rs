//! Random numbers with platform-independent float mappings (see the module
//! docs of `corrupt`): uniforms from the top 53 bits, normals by Marsaglia's
//! polar method with `libm::log`, integer ranges by rejection.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) struct Rng {
    inner: ChaCha8Rng,
    /// The second point of the last accepted pair, as `(v, s)`: its normal
    /// `v·√(−2 ln s / s)` is computed only if it is used.
    spare: Option<(f64, f64)>,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { inner: ChaCha8Rng::seed_from_u64(seed), spare: None }
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in [lo, hi), as numpy's `uniform(lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n), unbiased (n ≥ 1).
    pub fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0);
        // Reject the top partial block of 2^32 so every residue is equally likely.
        let zone = u32::MAX - (u32::MAX - n + 1) % n;
        loop {
            let v = self.inner.next_u32();
            if v <= zone {
                return v % n;
            }
        }
    }

    /// Uniform integer in [lo, hi) as numpy's `randint(lo, hi)`.
    pub fn int_range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo) as u32) as i32
    }

    /// Standard normal. Marsaglia's polar method needs only `log` and `sqrt`
    /// (one libm call per two values) and no trigonometry.
    pub fn normal(&mut self) -> f64 {
        let (v, s) = match self.spare.take() {
            Some(spare) => spare,
            None => {
                let (u, v, s) = self.polar_pair();
                self.spare = Some((v, s));
                (u, s)
            }
        };
        v * (-2.0 * libm::log(s) / s).sqrt()
    }

    /// Moves the stream on exactly as [`Rng::normal`] would, without the
    /// logarithm: for arrays the reference draws whole and uses in part.
    pub fn skip_normal(&mut self) {
        if self.spare.take().is_none() {
            let (_, v, s) = self.polar_pair();
            self.spare = Some((v, s));
        }
    }

    /// A point drawn uniformly in the unit disc (not at its centre), and its
    /// squared radius.
    fn polar_pair(&mut self) -> (f64, f64, f64) {
        loop {
            let u = 2.0 * self.unit() - 1.0;
            let v = 2.0 * self.unit() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return (u, v, s);
            }
        }
    }
}

/// Poisson sampling for λ = (v/255)·c, v = 0..=255, by inversion of the
/// cumulative distribution. Shot noise only needs to know k up to c (beyond
/// it the output saturates at 1), so each of the 256 rows holds at most c
/// thresholds: one uniform and a short scan per value instead of the
/// reference's (numpy) rejection sampler, the same distribution.
pub(crate) struct PoissonTable {
    c: usize,
    /// Row v: P(K ≤ k) for k = 0..c.
    cdf: Vec<f64>,
}

impl PoissonTable {
    pub fn new(c: u32) -> PoissonTable {
        let c = c as usize;
        let mut cdf = vec![0.0; 256 * c];
        for v in 0..256 {
            let lam = v as f64 / 255.0 * c as f64;
            let mut p = libm::exp(-lam);
            let mut acc = 0.0;
            for k in 0..c {
                acc += p;
                cdf[v * c + k] = acc;
                p = p * lam / (k + 1) as f64;
            }
        }
        PoissonTable { c, cdf }
    }

    /// min(K, c) for K ~ Poisson((v/255)·c), from a uniform u in [0, 1).
    pub fn draw_capped(&self, v: u8, u: f64) -> u32 {
        let row = &self.cdf[v as usize * self.c..(v as usize + 1) * self.c];
        row.iter().position(|&f| u < f).unwrap_or(self.c) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_normals_leave_the_others_bit_for_bit_as_drawn() {
        let mut all = Rng::new(7);
        let want: Vec<f64> = (0..1001).map(|_| all.normal()).collect();
        let mut part = Rng::new(7);
        // Skips of odd and even length, so both halves of a pair get skipped.
        for (i, w) in want.iter().enumerate() {
            if i % 7 < 3 || (200..333).contains(&i) {
                part.skip_normal();
            } else {
                assert_eq!(part.normal().to_bits(), w.to_bits(), "normal {i}");
            }
        }
        assert_eq!(part.unit().to_bits(), all.unit().to_bits(), "the stream after the array");
    }
}
