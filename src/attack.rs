//! FGSM and PGD (docs/protocol.md, dimension 2) on top of [`GradModel`].
//!
//! Two places to apply the budget, both named in every result:
//! - pixel mode: ε, α, the random start and the [0, 1] clipping act on the
//!   image before normalisation; normalisation sits inside the attacked
//!   function, so the pixel gradient is the normalised-input gradient / std;
//! - reference mode: the study's procedure (torchattacks handed tensors that
//!   are already normalised): the normalised tensor itself is perturbed and
//!   clamped to [0, 1].
//!
//! Only the sign of the gradient is used, as in torchattacks; sign(0) = 0.
//! The random start of sample i comes from its own seed, so a board and a
//! host given the same seeds produce the same adversarial images.

use anyhow::{bail, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::grad::GradModel;
use crate::protocol::Attack;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// ε, α, start and clipping on the [0, 1] image (RobustBench convention).
    Pixel,
    /// The study's: ε on the already-normalised tensor, clamped to [0, 1].
    Reference,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pixel => "pixel",
            Mode::Reference => "reference",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackConfig {
    pub mode: Mode,
    pub eps: f32,
    /// PGD step size (FGSM steps by ε).
    pub alpha: f32,
    /// PGD iterations.
    pub steps: usize,
}

impl AttackConfig {
    /// docs/protocol.md: ε = 8/255, α = 2/255, 10 steps.
    pub fn protocol(mode: Mode) -> AttackConfig {
        AttackConfig { mode, eps: 8.0 / 255.0, alpha: 2.0 / 255.0, steps: 10 }
    }

    pub fn validate(&self, attack: Attack) -> Result<()> {
        // The valid image range is [0, 1]: a budget outside it is a unit mistake
        // (e.g. 8 instead of 8/255), never an intended attack.
        if !(0.0..=1.0).contains(&self.eps) {
            bail!("attack ε = {} is outside [0, 1]; ε is in image units (e.g. 8/255 = {:.5})", self.eps, 8.0 / 255.0);
        }
        if attack == Attack::Pgd {
            if !(0.0..=1.0).contains(&self.alpha) {
                bail!("PGD step α = {} is outside [0, 1]; α is in image units (e.g. 2/255)", self.alpha);
            }
            if self.steps == 0 {
                bail!("PGD needs at least one step");
            }
        }
        Ok(())
    }
}

/// The seed of sample `index`'s random start in a run seeded `run_seed`
/// (SplitMix64 finaliser over both, so neighbouring indices are unrelated).
pub fn sample_seed(run_seed: u64, index: u64) -> u64 {
    let mut z = run_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The space the attack moves in, and the way back to the model's input.
struct Space<'a> {
    mode: Mode,
    mean: &'a [f32],
    std: &'a [f32],
    plane: usize,
}

impl Space<'_> {
    fn channel(&self, i: usize) -> usize {
        (i / self.plane) % self.mean.len()
    }

    /// The attacked variable (pixels, or the normalised tensor itself) from the model input.
    fn attacked(&self, x: &[f32]) -> Vec<f32> {
        match self.mode {
            Mode::Pixel => {
                x.iter().enumerate().map(|(i, v)| v * self.std[self.channel(i)] + self.mean[self.channel(i)]).collect()
            }
            Mode::Reference => x.to_vec(),
        }
    }

    fn to_model(&self, v: &[f32]) -> Vec<f32> {
        match self.mode {
            Mode::Pixel => v
                .iter()
                .enumerate()
                .map(|(i, p)| (p - self.mean[self.channel(i)]) / self.std[self.channel(i)])
                .collect(),
            Mode::Reference => v.to_vec(),
        }
    }

    /// The gradient w.r.t. the attacked variable from the one w.r.t. the model input.
    fn grad(&self, g: &mut [f32]) {
        if self.mode == Mode::Pixel {
            for (i, v) in g.iter_mut().enumerate() {
                *v /= self.std[self.channel(i)];
            }
        }
    }
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Attacks `n = labels.len()` images given as the model's normalised input
/// (NCHW, back to back) and returns the adversarial images, normalised the
/// same way, ready for the model's ordinary forward. `mean`/`std` are the
/// pipeline's, one per channel; `seeds[i]` seeds sample i's PGD start.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &GradModel,
    attack: Attack,
    cfg: &AttackConfig,
    normalised: &[f32],
    mean: &[f32],
    std: &[f32],
    labels: &[i64],
    seeds: &[u64],
) -> Result<Vec<f32>> {
    cfg.validate(attack)?;
    let item = model.item_len();
    let n = labels.len();
    let channels = model.info.item_shape[0];
    if normalised.len() != n * item || seeds.len() != n {
        bail!(
            "attack: {n} labels need {} input values and {n} seeds, got {} and {}",
            n * item,
            normalised.len(),
            seeds.len()
        );
    }
    if mean.len() != channels || std.len() != channels || std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        bail!("attack: the pipeline needs {channels} means and {channels} positive stds, got {mean:?} / {std:?}");
    }
    let space = Space { mode: cfg.mode, mean, std, plane: item / channels };
    let mut out = Vec::with_capacity(normalised.len());
    for start in (0..n).step_by(model.batch) {
        let m = (n - start).min(model.batch);
        let x0 = space.attacked(&normalised[start * item..(start + m) * item]);
        let adv = attack_batch(model, attack, cfg, &space, &x0, &labels[start..start + m], &seeds[start..start + m])?;
        out.extend(space.to_model(&adv));
    }
    Ok(out)
}

fn attack_batch(
    model: &GradModel,
    attack: Attack,
    cfg: &AttackConfig,
    space: &Space,
    x0: &[f32],
    labels: &[i64],
    seeds: &[u64],
) -> Result<Vec<f32>> {
    let item = model.item_len();
    let m = labels.len();
    // The last partial batch is padded; padded samples' gradients are discarded
    // (the summed loss makes every sample's gradient independent).
    let grad_at = |v: &[f32]| -> Result<Vec<f32>> {
        let mut input = space.to_model(v);
        input.resize(model.batch * item, 0.0);
        let mut l = labels.to_vec();
        l.resize(model.batch, 0);
        let (_, mut g) = model.logits_and_grad(&input, &l)?;
        g.truncate(m * item);
        space.grad(&mut g);
        Ok(g)
    };
    let clamp01 = |v: f32| v.clamp(0.0, 1.0);
    match attack {
        Attack::Fgsm => {
            let g = grad_at(x0)?;
            Ok(x0.iter().zip(&g).map(|(x, g)| clamp01(x + cfg.eps * sign(*g))).collect())
        }
        Attack::Pgd => {
            let mut adv = Vec::with_capacity(x0.len());
            for (s, x) in seeds.iter().zip(x0.chunks(item)) {
                let mut rng = ChaCha8Rng::seed_from_u64(*s);
                adv.extend(x.iter().map(|x| clamp01(x + cfg.eps * (2.0 * rng.gen::<f32>() - 1.0))));
            }
            for _ in 0..cfg.steps {
                let g = grad_at(&adv)?;
                for ((a, x), g) in adv.iter_mut().zip(x0).zip(&g) {
                    let stepped = *a + cfg.alpha * sign(*g);
                    let delta = (stepped - x).clamp(-cfg.eps, cfg.eps);
                    *a = clamp01(x + delta);
                }
            }
            Ok(adv)
        }
    }
}
