//! quba: the host tool. It launches or listens to `quba-device` runs, keeps
//! every run as an append-only record log, and computes the nine QUBA
//! dimensions, the score and the reports from those logs.
//!
//! This file is the command line and its dispatch only: each command is a
//! call into `quba_edge::eval` or the `quba_host` crate.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use quba_edge::eval::{self, EvalArgs};
use quba_edge::suite::{run_device, DeviceArgs};
use quba_host::compare::{Margins, DEFAULT_MARGIN_FRACTION};
use quba_host::ingest::{self, summary};
use quba_host::listen::{self, ListenArgs};
use quba_host::output::{self, NormArg, ReportFiles, ScoringArgs};
use quba_host::quba::{self, Dimension};
use quba_host::report::{self, Run};

#[derive(Parser)]
#[command(
    name = "quba",
    version,
    about = "How well-behaved is your image classifier on the board it ships on?",
    long_about = "Evaluates ONNX classifiers (fp32 and int8) on the nine QUBA dimensions of \
                  'Beyond Accuracy' (Hesse et al.), on this machine or on a board, and reports them.\n\n\
                  Start with `quba eval`: with no arguments it runs the shipped model zoo on the \
                  embedded benchmark and prints the table."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Evaluate models (default: the shipped zoo on the embedded benchmark) and report.
    Eval(EvalArgs),
    /// Recompute the dimensions and QUBA from stored runs.
    Report(ReportArgs),
    /// Paired comparison of two runs (board vs host, int8 vs fp32): agreement, deltas, verdicts.
    Compare(CompareArgs),
    /// Join shard runs (`--shard K/N`) into one run directory.
    Merge(MergeArgs),
    /// Write one JSON object per stored record.
    Export(ExportArgs),
    /// QUBA for a table of measured values in the study's CSV layout.
    Score(ScoreArgs),
    /// Receive a device stream on stdin into a run directory.
    Ingest(IngestArgs),
    /// Wait for a device to connect over TCP and receive its stream.
    Listen(ListenArgs),
    /// Datasets: write the synthetic benchmark to disk, corrupt images.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Input gradients (ONNX forward + backward graphs) and FGSM/PGD runs.
    Grad {
        #[command(subcommand)]
        cmd: quba_edge::grad::GradCmd,
    },
    /// Time the engine alone on random inputs (ms/image, images/s, peak RSS).
    Bench(quba_edge::bench::BenchArgs),
    /// Play the device role in this process (what `quba-device` does).
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    Run(DeviceArgs),
}

#[derive(Subcommand)]
enum DataCmd {
    /// Write the synthetic benchmark (16 shape classes with texture and background
    /// shortcuts) in the real datasets' folder layouts.
    Synth(SynthArgs),
    /// Apply one ImageNet-C corruption at one severity to an image or a directory of images.
    Corrupt(quba_edge::corrupt::CorruptArgs),
}

#[derive(Args)]
struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated splits: train, val, edge, silhouette, sketch, stylized, rendition,
    /// cue-conflict, mixed_same, mixed_rand (default: all but train).
    #[arg(long, value_delimiter = ',')]
    splits: Vec<quba_edge::synth::Split>,
    #[arg(long, default_value_t = 50)]
    per_class: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Probability that an object wears its class's home texture (1/16: fully randomised).
    #[arg(long, default_value_t = 0.8)]
    p_texture: f32,
    /// Probability that an object sits on its class's home background.
    #[arg(long, default_value_t = 0.8)]
    p_background: f32,
}

#[derive(Args)]
struct ReportArgs {
    /// Run directories (as made by `quba eval`, `ingest` or `listen`).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Also write results.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    files: ReportFiles,
}

#[derive(Args)]
struct CompareArgs {
    /// Reference run (e.g. the x86 host run, or fp32).
    run_a: PathBuf,
    /// Run compared with it (e.g. the board run, or int8); deltas are b − a.
    run_b: PathBuf,
    #[arg(long)]
    json: bool,
    /// Paired bootstrap resamples for the delta intervals.
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    #[arg(long = "ci-seed", default_value_t = 0)]
    ci_seed: u64,
    /// Equivalence margins as a fraction of each dimension's study normalisation std: a
    /// dimension is "equal" when its whole interval lies inside ±margin.
    #[arg(long, default_value_t = DEFAULT_MARGIN_FRACTION)]
    margin_fraction: f64,
    /// One dimension's margin in its own units, e.g. `--margin accuracy=0.01` (repeatable).
    #[arg(long = "margin", value_name = "DIMENSION=VALUE")]
    margins: Vec<String>,
}

#[derive(Args)]
struct MergeArgs {
    /// Shard run directories, one per shard index, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// The merged run directory (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Merge although shards are missing or unfinished; the run is marked `partial`
    /// (manifest status, report footnote) and names them in manifest.json.
    #[arg(long)]
    partial: bool,
    /// Run id of the merged run (default: the shards' common run id).
    #[arg(long)]
    run_id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
}

#[derive(Args)]
struct ExportArgs {
    run: PathBuf,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ScoreArgs {
    /// CSV with columns Id, Model and the nine dimension columns (layout of the study's table).
    #[arg(long)]
    table: PathBuf,
    #[arg(long)]
    weights: Option<String>,
    /// Default: paper (the table is assumed to hold ImageNet values).
    #[arg(long, value_enum, default_value = "paper")]
    normalisation: NormArg,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct IngestArgs {
    #[arg(long)]
    run_dir: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Eval(a) => eval_cmd(a),
        Cmd::Report(a) => report_cmd(a),
        Cmd::Compare(a) => compare(a),
        Cmd::Merge(a) => merge(a),
        Cmd::Export(a) => export(a),
        Cmd::Score(a) => score(a),
        Cmd::Ingest(a) => ingest::ingest(std::io::stdin().lock(), &a.run_dir, "stdin", None).map(|m| summary(&a.run_dir, &m)),
        Cmd::Listen(a) => listen::run(&a, &mut std::io::stdout()),
        Cmd::Data { cmd: DataCmd::Synth(a) } => synth(a),
        Cmd::Data { cmd: DataCmd::Corrupt(a) } => quba_edge::corrupt::run_cli(&a).map(|_| ()),
        Cmd::Grad { cmd } => quba_edge::grad::run_cli(cmd),
        Cmd::Bench(a) => quba_edge::bench::run_cli(&a),
        Cmd::Device { cmd: DeviceCmd::Run(a) } => run_device(&a).map(|_| ()),
    };
    if let Err(e) = r {
        // A reader that stopped early (`quba export RUN | head`) is no failure
        // of ours: stop quietly, as other Unix tools do.
        let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
            let kind = c.downcast_ref::<std::io::Error>().map(|io| io.kind());
            // serde_json reports a failed write as its own error.
            let kind = kind.or_else(|| c.downcast_ref::<serde_json::Error>().and_then(|j| j.io_error_kind()));
            kind == Some(std::io::ErrorKind::BrokenPipe)
        };
        if e.chain().any(broken_pipe) {
            std::process::exit(0);
        }
        eprintln!("quba: error: {e:#}");
        std::process::exit(1);
    }
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let plan = eval::Plan::new(&a)?;
    let rep = eval::run(&plan)?;
    output::print(&rep, a.json);
    eprintln!("results: {}", plan.out.display());
    Ok(())
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    let rep = a.scoring.build(&a.runs)?;
    if let Some(out) = &a.out {
        output::write_results(&rep, out)?;
    }
    a.files.write(&rep, &a.scoring)?;
    output::print(&rep, a.json);
    Ok(())
}

fn compare(a: CompareArgs) -> Result<()> {
    let (ra, rb) = (Run::load(&a.run_a)?, Run::load(&a.run_b)?);
    let margins = Margins::from_args(a.margin_fraction, &a.margins)?;
    let opts = quba_host::compare::CompareOptions { bootstrap: a.bootstrap, seed: a.ci_seed, margins };
    let c = quba_host::compare::compare(&ra, &rb, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c.to_json())?);
    } else {
        print!("{}", c.table());
    }
    Ok(())
}

fn merge(a: MergeArgs) -> Result<()> {
    let opts = quba_host::merge::MergeOptions { partial: a.partial, run_id: a.run_id };
    let m = quba_host::merge::merge(&a.shards, &a.out, &opts)?;
    let i = &m.info;
    eprintln!("merged shards {:?} of {} → {}", i.merged, i.shards, a.out.display());
    summary(&a.out, &m.manifest);
    if m.manifest.status != ingest::RunStatus::Complete {
        eprintln!("warning: partial run: missing shards {:?}, unfinished shards {:?}", i.missing, i.unfinished);
    }
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    let run = Run::load(&a.run)?;
    match a.format {
        ExportFormat::Jsonl => match &a.out {
            Some(p) => {
                let mut f = std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?);
                report::export_jsonl(&run, &mut f)?;
                f.flush()?;
            }
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                report::export_jsonl(&run, &mut out)?;
                out.flush()?;
            }
        },
    }
    Ok(())
}

fn score(a: ScoreArgs) -> Result<()> {
    let weights = output::parse_weights(a.weights.as_deref())?;
    let rows = quba::read_table(&a.table)?;
    let values: Vec<quba::Values> = rows.iter().map(|r| r.values).collect();
    let scored = quba::score(&values, a.normalisation.into(), &weights);
    if a.json {
        let models: Vec<serde_json::Value> = rows
            .iter()
            .zip(&scored)
            .map(|(r, s)| {
                let normalised: serde_json::Map<String, serde_json::Value> = Dimension::ALL
                    .iter()
                    .zip(s.normalised)
                    .map(|(d, v)| (d.key().to_string(), v.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null)))
                    .collect();
                serde_json::json!({"id": r.id, "name": r.name, "quba": s.quba, "normalised": normalised, "reason": s.reason})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "models": models }))?);
    } else {
        println!("{:>5}  {:<40} {:>8}", "Id", "Model", "QUBA");
        for (r, s) in rows.iter().zip(&scored) {
            let q = s.quba.map(|q| format!("{q:>8.3}")).unwrap_or_else(|| format!("{:>8}", "—"));
            let why = s.reason.as_deref().map(|w| format!("  ({w})")).unwrap_or_default();
            let mut name = r.name.clone();
            name.truncate(40);
            println!("{:>5}  {:<40} {q}{why}", r.id, name);
        }
    }
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    use quba_edge::synth::{self, Split, SynthConfig};
    let splits: Vec<Split> = if a.splits.is_empty() { Split::ALL.into_iter().filter(|s| *s != Split::Train).collect() } else { a.splits };
    let cfg = SynthConfig { seed: a.seed, size: a.size, p_texture: a.p_texture, p_background: a.p_background };
    let n = synth::write_tree(&cfg, &a.out, &splits, a.per_class)?;
    eprintln!(
        "wrote {n} images ({} per class; splits {}) to {} — generator v{}, seed {}",
        a.per_class,
        splits.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        a.out.display(),
        synth::GENERATOR_VERSION,
        a.seed
    );
    Ok(())
}
