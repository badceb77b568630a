//! `quba grad …`: export a gradient graph, or run FGSM/PGD over a dataset and
//! print the accuracies (what scripts/attack_parity.py compares with
//! torchattacks).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::attack::{self, AttackConfig, Mode};
use crate::data::Source;
use crate::engine::Engine;
use crate::protocol::Attack;
use crate::suite::{parse_meta, sidecar_path};

#[derive(Subcommand)]
pub enum GradCmd {
    /// Write MODEL's forward + backward graph (inputs: image, labels; outputs: logits, input gradient).
    Export(ExportArgs),
    /// Run FGSM and PGD over a dataset and print clean and attacked accuracy as JSON.
    Attack(AttackArgs),
    /// Logits and input gradient for raw tensors (little-endian f32 NCHW input, i64 labels);
    /// writes logits then gradient as f32 to --out. For the parity scripts.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    model: PathBuf,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    labels: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

#[derive(Args)]
pub struct ExportArgs {
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct AttackArgs {
    #[arg(long)]
    model: PathBuf,
    /// ImageFolder tree, or `synth` / `synth:<split>`.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value_t = Mode::Pixel)]
    mode: Mode,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Images per class (default: all; 50 for synth).
    #[arg(long)]
    per_class: Option<usize>,
    /// Run seed: the PGD start of sample i is seeded by (seed, i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 8.0 / 255.0)]
    eps: f32,
    #[arg(long, default_value_t = 2.0 / 255.0)]
    alpha: f32,
    #[arg(long, default_value_t = 10)]
    steps: usize,
}

pub fn run_cli(cmd: GradCmd) -> Result<()> {
    match cmd {
        GradCmd::Export(a) => {
            let model = super::read_model(&a.model)?;
            let g = super::gradient_graph(&model)
                .with_context(|| format!("{}: cannot build its input gradient", a.model.display()))?;
            super::write_model(&g, &a.out)?;
            eprintln!("wrote {} ({} nodes)", a.out.display(), g.graph.as_ref().map_or(0, |g| g.node.len()));
            Ok(())
        }
        GradCmd::Attack(a) => attack_cmd(a),
        GradCmd::Run(a) => run_raw(a),
    }
}

fn run_raw(a: RunArgs) -> Result<()> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let x: Vec<f32> = read(&a.input)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let labels: Vec<i64> =
        read(&a.labels)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let grad = super::GradModel::load(&a.model, a.batch)?;
    let item = grad.item_len();
    if x.len() != labels.len() * item || !labels.len().is_multiple_of(a.batch) {
        anyhow::bail!(
            "{} labels (a multiple of --batch {}) need {} input values, got {}",
            labels.len(),
            a.batch,
            labels.len() * item,
            x.len()
        );
    }
    let (mut logits, mut grads) = (vec![], vec![]);
    for (xb, lb) in x.chunks(a.batch * item).zip(labels.chunks(a.batch)) {
        let (l, g) = grad.logits_and_grad(xb, lb)?;
        logits.extend(l);
        grads.extend(g);
    }
    let bytes: Vec<u8> = logits.iter().chain(&grads).flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&a.out, bytes).with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!("gradient: {}", grad.kind().as_str());
    Ok(())
}

fn attack_cmd(a: AttackArgs) -> Result<()> {
    let side = sidecar_path(&a.model);
    let text = std::fs::read_to_string(&side)
        .with_context(|| format!("cannot read the model's sidecar {}", side.display()))?;
    let pipeline =
        parse_meta(&text).with_context(|| format!("{} is not a valid model sidecar", side.display()))?.pipeline;
    let engine = Engine::load(&a.model, a.batch, pipeline.crop as usize)?;
    let grad = super::GradModel::load(&a.model, a.batch)?;
    let source = Source::open(&a.data, Some(engine.num_classes), a.per_class, a.seed)?;
    let cfg = AttackConfig { mode: a.mode, eps: a.eps, alpha: a.alpha, steps: a.steps };
    let item = grad.item_len();
    let k = engine.num_classes;
    let (mut clean, mut fgsm, mut pgd) = (0usize, 0usize, 0usize);
    let correct = |logits: &[f32], labels: &[i64]| {
        labels.iter().zip(logits.chunks(k)).filter(|(l, z)| crate::metrics::argmax(z) == **l as usize).count()
    };
    for start in (0..source.len()).step_by(a.batch) {
        let m = (source.len() - start).min(a.batch);
        let mut x = vec![0.0f32; a.batch * item];
        let mut labels = Vec::with_capacity(m);
        for j in 0..m {
            labels.push(source.load_into(start + j, &pipeline, &mut x[j * item..(j + 1) * item])?.label as i64);
        }
        let seeds: Vec<u64> = (start..start + m).map(|i| attack::sample_seed(a.seed, i as u64)).collect();
        clean += correct(&engine.logits(&x, m)?, &labels);
        for (which, count) in [(Attack::Fgsm, &mut fgsm), (Attack::Pgd, &mut pgd)] {
            let mut adv =
                attack::run(&grad, which, &cfg, &x[..m * item], &pipeline.mean, &pipeline.std, &labels, &seeds)?;
            adv.resize(a.batch * item, 0.0);
            *count += correct(&engine.logits(&adv, m)?, &labels);
        }
    }
    let n = source.len() as f64;
    let out = serde_json::json!({
        "model": a.model.display().to_string(),
        "mode": a.mode.as_str(),
        "gradient": grad.kind().as_str(),
        "n": source.len(),
        "eps": a.eps, "alpha": a.alpha, "steps": a.steps, "seed": a.seed,
        "clean": clean as f64 / n,
        "fgsm": fgsm as f64 / n,
        "pgd": pgd as f64 / n,
    });
    println!("{out}");
    Ok(())
}
