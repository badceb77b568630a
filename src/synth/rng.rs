//! Randomness: the per-image ChaCha8 streams keyed by a splitmix64 chain,
//! our own integer-to-float mappings, and the integer hashes behind noise
//! and speckle (see "Randomness" in the module docs of `synth`). Kept apart
//! because every pixel's reproducibility rests on these few functions.

use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(super) const DOMAIN_IMAGE: u64 = 1;
pub(super) const DOMAIN_BG_OBJECT: u64 = 2;
pub(super) const DOMAIN_TEXTURE_INSTANCE: u64 = 3;

/// Number of distinct texture instances `m` per texture in cue-conflict names.
pub(super) const TEXTURE_INSTANCES: u32 = 10;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn stream(parts: &[u64]) -> ChaCha8Rng {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x5155_4241_5359_4e54; // "QUBASYNT"
    for &p in parts {
        h = mix64(h.wrapping_add(GOLDEN) ^ p);
    }
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix64(h.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))).to_le_bytes());
    }
    ChaCha8Rng::from_seed(seed)
}

/// Uniform in [0, 1) with 24 bits, exactly representable in f32.
pub(super) fn unit<R: RngCore>(r: &mut R) -> f32 {
    (r.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

pub(super) fn uniform<R: RngCore>(r: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(r)
}

/// Uniform in 0..n (n ≥ 1); the bias of the multiply-shift is below 2^-28
/// for the small n used here.
pub(super) fn below<R: RngCore>(r: &mut R, n: u32) -> u32 {
    ((r.next_u32() as u64 * n as u64) >> 32) as u32
}

pub(super) fn hash2(seed: u32, x: i32, y: i32) -> u32 {
    let mut h = seed ^ 0x9e37_79b9;
    for v in [x as u32, y as u32] {
        h ^= v;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
    }
    h
}

pub(super) fn hash_unit(seed: u32, x: i32, y: i32) -> f32 {
    (hash2(seed, x, y) >> 8) as f32 * (1.0 / 16_777_216.0)
}
