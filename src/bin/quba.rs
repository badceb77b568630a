//! quba: the host tool. It launches or listens to `quba-device` runs, keeps
//! every run as an append-only record log, and computes the nine QUBA
//! dimensions, the score and the reports from those logs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use quba_edge::{board, deploy};
use quba_edge::progress;
use quba_edge::quba::{self, Dimension, Normalisation, Weights};
use quba_edge::report::{self, EvalOptions, Run};
use quba_edge::suite::{run_device, DeviceArgs, RunArgs, SuiteArgs};
use quba_edge::transport::{self, ingest, Launch, Manifest, ManifestFile, RunLog, RunStatus};

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

#[derive(Clone, Copy, ValueEnum)]
enum NormArg {
    /// The study's ImageNet constants (meaningful for ImageNet runs only).
    Paper,
    /// Mean and n−1 std over the models being reported.
    Cohort,
}

impl From<NormArg> for Normalisation {
    fn from(n: NormArg) -> Self {
        match n {
            NormArg::Paper => Normalisation::Paper,
            NormArg::Cohort => Normalisation::Cohort,
        }
    }
}

#[derive(Args, Clone)]
struct ScoringArgs {
    /// Normalisation of the nine values before weighting (default: paper for ImageNet runs, cohort otherwise).
    #[arg(long, value_enum)]
    normalisation: Option<NormArg>,
    /// Nine comma-separated weights in PROTOCOL order (accuracy, adversarial, corruption, OOD,
    /// calibration, class balance, object focus, shape bias, parameters); 0 skips a dimension.
    #[arg(long)]
    weights: Option<String>,
    /// Bootstrap resamples for the 95% confidence intervals (0: none).
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long = "ci-seed", default_value_t = 0)]
    ci_seed: u64,
}

impl ScoringArgs {
    fn weights(&self) -> Result<Weights> {
        parse_weights(self.weights.as_deref())
    }
}

fn parse_weights(arg: Option<&str>) -> Result<Weights> {
    match arg {
        None => Ok(Weights::default()),
        Some(w) => w.parse::<Weights>().map_err(|e| anyhow::anyhow!("--weights {w}: {e}")),
    }
}

#[derive(Args)]
struct EvalArgs {
    /// ONNX model(s) to evaluate (repeat the flag); default: every .onnx file of the shipped
    /// zoo (models/zoo, fp32 and int8).
    #[arg(long = "model")]
    models: Vec<PathBuf>,
    #[command(flatten)]
    suite: SuiteArgs,
    /// Continue interrupted runs (run directories `quba eval` made) where they stopped: the
    /// device starts again with the run's own model and suite arguments and is told what the
    /// host already holds, so no sample is lost or counted twice. Launch flags (--board,
    /// --ssh, --launcher, --device-bin) are taken from this command line.
    #[arg(long, num_args = 1.., conflicts_with = "models")]
    resume: Vec<PathBuf>,
    /// Sleep this long on the device after each batch (a passively cooled board's breathing room).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Progress display: `auto` (bars on a terminal, nothing otherwise), `quiet`, or `json`
    /// (one JSON line per model per second on stderr, for scripts).
    #[arg(long, value_enum, default_value = "auto")]
    progress: progress::Mode,
    /// Device processes to run at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Where run directories are created.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Command prefix that runs the device binary elsewhere, split on spaces, e.g.
    /// "qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu".
    #[arg(long)]
    launcher: Option<String>,
    /// Device binary to launch (default: quba-device beside this binary, else this binary's `device run`).
    #[arg(long)]
    device_bin: Option<PathBuf>,
    /// Board profile (targets/NAME.json, or a path to one): its device binary, launcher,
    /// parallelism, memory budget and subset size; flags given explicitly win.
    #[arg(long)]
    board: Option<String>,
    /// Run on the board over SSH (user@host; needs --board): the device binary and the
    /// models are copied there and the results stream back through the session.
    #[arg(long, requires = "board")]
    ssh: Option<String>,
    /// Extra ssh arguments, split on spaces, e.g. "-p 2222 -i /home/me/.ssh/pi".
    #[arg(long, requires = "ssh", allow_hyphen_values = true)]
    ssh_args: Option<String>,
    /// Folder on the board for the device binary and the models.
    #[arg(long, requires = "ssh", default_value = "/tmp/quba-edge")]
    remote_dir: String,
    /// Where to write results.json (default: RUNS_DIR/results.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print results.json instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    files: ReportFiles,
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

/// The report as files people open (`eval` writes all three into the runs
/// directory unless told otherwise; `report` only those asked for).
#[derive(Args)]
struct ReportFiles {
    /// Self-contained HTML report with charts (eval default: RUNS_DIR/report.html).
    #[arg(long)]
    html: Option<PathBuf>,
    /// One row per model run (eval default: RUNS_DIR/results.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The same table as an Excel workbook (eval default: RUNS_DIR/results.xlsx).
    #[arg(long)]
    xlsx: Option<PathBuf>,
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
    /// |b − a| at or below this is "equal" whatever the interval says.
    #[arg(long, default_value_t = COMPARE_TOLERANCE)]
    tolerance: f64,
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

#[derive(Args)]
struct ListenArgs {
    /// Address to listen on; loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Receive one stream into this run directory, then exit.
    #[arg(long, conflicts_with_all = ["runs_dir", "streams"], required_unless_present = "runs_dir")]
    run_dir: Option<PathBuf>,
    /// Receive many boards' streams at once, each into its own run directory here.
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// With --runs-dir: exit after this many streams ended (default: serve until killed).
    #[arg(long, requires = "runs_dir")]
    streams: Option<usize>,
    /// Streams received at once; further boards wait in the accept queue (TCP back-pressure).
    #[arg(long, default_value_t = 16)]
    max_connections: usize,
    /// A stream silent this long is taken as cut (Wi-Fi gone, board off) and its run kept
    /// as interrupted.
    #[arg(long, default_value_t = 600)]
    idle_timeout_s: u64,
    /// Token the device must present (default: a fresh random one, printed).
    #[arg(long)]
    token: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Eval(a) => eval(a),
        Cmd::Report(a) => report_cmd(a),
        Cmd::Compare(a) => compare(a),
        Cmd::Merge(a) => merge(a),
        Cmd::Export(a) => export(a),
        Cmd::Score(a) => score(a),
        Cmd::Ingest(a) => ingest(std::io::stdin().lock(), &a.run_dir, "stdin", None).map(|m| summary(&a.run_dir, &m)),
        Cmd::Listen(a) => listen(a),
        Cmd::Data { cmd: DataCmd::Synth(a) } => synth(a),
        Cmd::Data { cmd: DataCmd::Corrupt(a) } => quba_edge::corrupt::run_cli(&a).map(|_| ()),
        Cmd::Grad { cmd } => quba_edge::grad::run_cli(cmd),
        Cmd::Bench(a) => quba_edge::bench::run_cli(&a),
        Cmd::Device { cmd: DeviceCmd::Run(a) } => run_device(&a).map(|_| ()),
    };
    if let Err(e) = r {
        eprintln!("quba: error: {e:#}");
        std::process::exit(1);
    }
}

fn summary(dir: &Path, m: &Manifest) {
    eprintln!(
        "{}: {:?}, {} records, {} failed samples, {} damaged frames, {} frames missing",
        dir.display(),
        m.status,
        m.records,
        m.failures,
        m.decode.corrupt_frames,
        m.decode.missing_frames
    );
}

/// The shipped zoo and benchmark live in the source tree; from a checkout the
/// relative paths work, elsewhere the build-time location is the fallback.
fn shipped(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

/// The embedded default: the zoo trained on the synthetic benchmark, which the
/// device renders in memory (no dataset on disk; `SuiteArgs::data`'s default).
const DEFAULT_ZOO: &str = "models/zoo";

fn zoo_models() -> Result<Vec<PathBuf>> {
    let dir = shipped(DEFAULT_ZOO);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the shipped zoo at {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("no .onnx models in {}", dir.display());
    }
    Ok(v)
}

/// A command-line option holding a command prefix or extra arguments, split on spaces.
fn words(arg: Option<&str>) -> Vec<String> {
    arg.map(|x| x.split_whitespace().map(String::from).collect()).unwrap_or_default()
}

/// Where the device runs when it is not this machine: the SSH session and the
/// board-side paths of what was copied there.
struct Remote {
    ssh: deploy::Ssh,
    bin: String,
    models: std::collections::HashMap<PathBuf, String>,
}

fn deploy_remote(a: &EvalArgs, dest: &str, models: &[PathBuf]) -> Result<Remote> {
    let s = &a.suite;
    if !s.is_synth() || s.mvh.is_some() || s.imagenet_r.is_some() || s.bg_challenge.is_some() || s.imagenet_c.is_some() || s.frost_dir.is_some() {
        bail!(
            "--ssh copies the device binary and the models only; the synthetic benchmark and generated corruptions need \
             nothing on the board, but datasets on disk (--data, --mvh, --imagenet-r, --bg-challenge, --imagenet-c, \
             --frost-dir) would have to be copied there first: run quba-device on the board with `--out tcp://` instead"
        );
    }
    if s.pipeline.as_deref().is_some_and(|p| p != "imagenet") {
        bail!("--ssh copies each model's sidecar <model>.json; a --pipeline file is not copied");
    }
    let ssh = deploy::Ssh {
        dest: dest.to_string(),
        args: words(a.ssh_args.as_deref()),
        dir: a.remote_dir.clone(),
    };
    ssh.mkdir()?;
    let local_bin = a.device_bin.as_ref().context("--ssh needs the board's device binary (from --board or --device-bin)")?;
    let bin = ssh.upload(local_bin, true)?;
    let mut remote_models = std::collections::HashMap::new();
    for m in models {
        // The device reads the pipeline from the sidecar beside the model.
        let sidecar = m.with_extension("json");
        if sidecar.exists() {
            ssh.upload(&sidecar, false)?;
        }
        remote_models.insert(m.clone(), ssh.upload(m, false)?);
    }
    eprintln!("copied {} and {} model(s) to {dest}:{}", local_bin.display(), models.len(), ssh.dir);
    Ok(Remote { ssh, bin, models: remote_models })
}

fn device_command(a: &EvalArgs, remote: Option<&Remote>) -> Result<Vec<String>> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let mut cmd = words(a.launcher.as_deref());
    if let Some(r) = remote {
        cmd.extend([r.bin.clone(), "run".into()]);
        return Ok(cmd);
    }
    match &a.device_bin {
        Some(b) => cmd.extend([b.display().to_string(), "run".into()]),
        None => {
            let sibling = me.with_file_name("quba-device");
            if sibling.exists() {
                cmd.extend([sibling.display().to_string(), "run".into()]);
            } else {
                cmd.extend([me.display().to_string(), "device".into(), "run".into()]);
            }
        }
    }
    Ok(cmd)
}

/// Runs one model's device process and ingests its stream into a new run
/// directory; the directory, also when the device stopped early (what
/// arrived is kept, and `--resume` continues it).
fn eval_one(a: &EvalArgs, base: &[String], remote: Option<&Remote>, model: &Path, progress: &progress::Progress) -> Result<PathBuf> {
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    // A shard listed beside whole runs must not pass for one.
    let name = match a.suite.shard {
        Some(s) => format!("{stem}.shard{}of{}", s.index, s.count),
        None => stem.clone(),
    };
    let dir = transport::run_dir_for(&a.runs_dir, &name);
    let run = RunArgs { model: model.to_path_buf(), suite: a.suite.clone(), run_id: None, pause_ms: a.pause_ms, resume_from: None };
    let log = RunLog::create(&dir, &format!("device process for {}", model.display()), Some(Launch { args: run.to_args() }))?;
    device_session(base, remote, run, log, None, progress)
}

/// The arguments an interrupted run was started with (its manifest's launch).
fn resume_args(dir: &Path) -> Result<RunArgs> {
    #[derive(Parser)]
    struct Stored {
        #[command(flatten)]
        run: RunArgs,
    }
    let m = Manifest::read(dir)?;
    let launch = m.launch.with_context(|| {
        format!(
            "{} was not started by `quba eval` (source: {}), so its device arguments are unknown; \
             resume a board's own run with `quba-device run … --run-id ID --resume-from LIST`",
            dir.display(),
            m.source
        )
    })?;
    let argv = std::iter::once("quba-device".to_string()).chain(launch.args.iter().cloned());
    let run = Stored::try_parse_from(argv).with_context(|| format!("{}: the manifest's launch arguments do not parse", dir.display()))?.run;
    Ok(run)
}

/// Continues an interrupted run in `dir` (see `--resume`).
fn resume_one(base: &[String], remote: Option<&Remote>, dir: &Path, mut run: RunArgs, progress: &progress::Progress) -> Result<PathBuf> {
    let log = RunLog::reopen(dir)?;
    let m = log.manifest();
    if m.status == RunStatus::Complete {
        eprintln!("{} is complete ({} records); nothing to resume", dir.display(), m.records);
        return Ok(dir.to_path_buf());
    }
    // Without a header nothing was recorded: the run starts over, under a new id.
    run.run_id = m.header.as_ref().map(|h| h.run_id.clone());
    run.resume_from = Some("-".into());
    eprintln!("resuming {}: {} records and {} failures kept", dir.display(), m.records, m.failures);
    let list = serde_json::to_vec(&log.resume_list())?;
    device_session(base, remote, run, log, Some(list), progress)
}

/// Starts the device process for `run`, feeds it `stdin` (a resume list),
/// and ingests what it sends into `log`.
fn device_session(
    base: &[String],
    remote: Option<&Remote>,
    mut run: RunArgs,
    log: RunLog,
    stdin: Option<Vec<u8>>,
    progress: &progress::Progress,
) -> Result<PathBuf> {
    let model = run.model.clone();
    let dir = log.dir().to_path_buf();
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    if let Some(r) = remote {
        run.model = PathBuf::from(&r.models[&model]);
    }
    let argv: Vec<String> = base.iter().cloned().chain(run.to_args()).collect();
    let mut cmd = match remote {
        Some(r) => r.ssh.command(&argv),
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start the device process `{}`", base.join(" ")))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A thread, so a list larger than the pipe cannot stall us; a device
        // that died early only makes this write fail, which its exit reports.
        std::thread::spawn(move || pipe.write_all(&bytes));
    }
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let stdout = child.stdout.take().unwrap();
    let mut shown = progress.track(&stem);
    let ingested = transport::ingest_observed(stdout, log, None, &mut |m| shown.observe(m));
    shown.finish();
    let status = child.wait()?;
    let device_err = err_reader.join().unwrap_or_default();
    match ingested {
        Ok(m) if status.success() => {
            eprintln!("evaluated {} → {} ({} records)", model.display(), dir.display(), m.records);
            Ok(dir)
        }
        Ok(m) => {
            eprintln!("{}", device_err.trim_end());
            eprintln!(
                "device run for {} stopped early ({status}); {} records kept in {} (`quba eval --resume {}` continues it)",
                model.display(),
                m.records,
                dir.display(),
                dir.display()
            );
            Ok(dir)
        }
        Err(e) => {
            let msg = device_err.trim_end();
            if msg.is_empty() {
                return Err(e.context(format!("device run for {} failed ({status})", model.display())));
            }
            bail!("{msg}\n(device run for {} failed: {e:#})", model.display());
        }
    }
}

/// Fills what the board profile decides and the user did not, and refuses a
/// run that cannot work before any model is loaded.
fn apply_board(a: &mut EvalArgs, models: &[PathBuf]) -> Result<Option<board::Board>> {
    let Some(spec) = &a.board else { return Ok(None) };
    let b = board::load(spec)?;
    if b.launcher.is_none() && a.ssh.is_none() {
        bail!(
            "{} is a real board ({}): build its binary with `{}`, copy it there with the model, run              `quba-device run --model M --out tcp://HOST:PORT --token T` on it and receive with `quba listen` here, \
             or give --ssh user@host to do all that over SSH",
            b.name,
            b.board,
            b.build_command()
        );
    }
    // On the board's side of an SSH session too: QEMU profiles emulate there.
    if a.launcher.is_none() {
        a.launcher = b.launcher.clone();
    }
    if a.device_bin.is_none() {
        let me = std::env::current_exe().context("cannot locate this executable")?;
        let bin = b.device_binary(&me).context("cannot derive the target directory from this executable's path")?;
        if !bin.exists() {
            bail!("{} needs the device binary {}; build it with `{}`", b.name, bin.display(), b.build_command());
        }
        a.device_bin = Some(bin);
    }
    if a.jobs.is_none() && b.jobs > 0 {
        a.jobs = Some(b.jobs);
    }
    if a.suite.per_class.is_none() {
        a.suite.per_class = Some(b.per_class);
    }
    for m in models {
        let int8 = quba_edge::engine::read_facts(m)?.precision == quba_edge::protocol::Precision::Int8;
        b.check_memory(m, int8)?;
    }
    Ok(Some(b))
}

fn eval(mut a: EvalArgs) -> Result<()> {
    let weights = a.scoring.weights()?;
    let resumed: Vec<RunArgs> = a.resume.iter().map(|d| resume_args(d)).collect::<Result<_>>()?;
    let models = if !resumed.is_empty() {
        resumed.iter().map(|r| r.model.clone()).collect()
    } else if a.models.is_empty() {
        zoo_models()?
    } else {
        a.models.clone()
    };
    let board = apply_board(&mut a, &models)?;
    let remote = a.ssh.as_deref().map(|dest| deploy_remote(&a, dest, &models)).transpose()?;
    let base = device_command(&a, remote.as_ref())?;
    // Device runs are single-threaded and independent: one per core.
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).clamp(1, models.len());
    let shown = progress::Progress::new(a.progress);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<PathBuf>>> = (0..models.len()).map(|_| None).collect();
    let slots_lock = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(model) = models.get(i) else { break };
                let r = match a.resume.get(i) {
                    Some(dir) => resume_one(&base, remote.as_ref(), dir, resumed[i].clone(), &shown),
                    None => eval_one(&a, &base, remote.as_ref(), model, &shown),
                };
                let failed = r.is_err();
                slots_lock.lock().unwrap()[i] = Some(r);
                if failed {
                    // Stop handing out work; runs in flight finish.
                    next.store(models.len(), std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let mut dirs = Vec::new();
    for r in slots.into_iter().flatten() {
        dirs.push(r?);
    }
    let rep = report::build(&dirs, a.scoring.normalisation.map(Into::into), weights, &eval_opts(&a.scoring))?;
    if let Some(b) = &board {
        for run in &rep.runs {
            let peak_mb = run.end.as_ref().map_or(0, |e| e.peak_rss_kb >> 10);
            if peak_mb > b.memory_budget_mb {
                eprintln!(
                    "warning: {} peaked at {peak_mb} MB, over the {} budget of {} MB",
                    run.header.model_name, b.name, b.memory_budget_mb
                );
            }
        }
    }
    let out = a.out.clone().unwrap_or_else(|| a.runs_dir.join("results.json"));
    write_results(&rep, &out)?;
    let in_runs = |given: &Option<PathBuf>, name: &str| Some(given.clone().unwrap_or_else(|| a.runs_dir.join(name)));
    let files = ReportFiles {
        html: in_runs(&a.files.html, "report.html"),
        csv: in_runs(&a.files.csv, "results.csv"),
        xlsx: in_runs(&a.files.xlsx, "results.xlsx"),
    };
    write_files(&rep, &files, &a.scoring)?;
    print_report(&rep, a.json);
    eprintln!("results: {}", out.display());
    Ok(())
}

/// |b − a| at or below this is "equal", in `quba compare` and in the report's comparisons.
const COMPARE_TOLERANCE: f64 = 1e-3;

fn write_files(rep: &report::Report, files: &ReportFiles, scoring: &ScoringArgs) -> Result<()> {
    for p in [&files.html, &files.csv, &files.xlsx].into_iter().flatten() {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    if files.csv.is_some() || files.xlsx.is_some() {
        let table = quba_edge::export::table(rep);
        if let Some(p) = &files.csv {
            quba_edge::export::write_csv(&table, p)?;
        }
        if let Some(p) = &files.xlsx {
            quba_edge::export::write_xlsx(&table, p)?;
        }
    }
    if let Some(p) = &files.html {
        let opts = quba_edge::compare::CompareOptions { bootstrap: scoring.bootstrap, seed: scoring.ci_seed, tolerance: COMPARE_TOLERANCE };
        let pairs = quba_edge::html::pairs(&rep.runs, &opts);
        let study = if rep.runs.iter().all(|r| r.header.benchmark == "imagenet") {
            Some(quba::read_table(&shipped(STUDY_TABLE))?)
        } else {
            None
        };
        quba_edge::html::write(rep, &quba_edge::html::Extras { pairs: &pairs, study: study.as_deref() }, p)?;
    }
    Ok(())
}

/// The study's published 326-model table: the landscape of ImageNet reports.
const STUDY_TABLE: &str = "data/reference/study_326_models.csv";

fn eval_opts(s: &ScoringArgs) -> EvalOptions {
    EvalOptions { bootstrap: s.bootstrap, seed: s.ci_seed }
}

fn write_results(rep: &report::Report, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&rep.to_json())? + "\n").with_context(|| format!("cannot write {}", out.display()))
}

fn print_report(rep: &report::Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&rep.to_json()).unwrap());
    } else {
        print!("{}", rep.table());
    }
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    let rep = report::build(&a.runs, a.scoring.normalisation.map(Into::into), a.scoring.weights()?, &eval_opts(&a.scoring))?;
    if let Some(out) = &a.out {
        write_results(&rep, out)?;
    }
    write_files(&rep, &a.files, &a.scoring)?;
    print_report(&rep, a.json);
    Ok(())
}

fn compare(a: CompareArgs) -> Result<()> {
    let (ra, rb) = (Run::load(&a.run_a)?, Run::load(&a.run_b)?);
    let opts = quba_edge::compare::CompareOptions { bootstrap: a.bootstrap, seed: a.ci_seed, tolerance: a.tolerance };
    let c = quba_edge::compare::compare(&ra, &rb, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c.to_json())?);
    } else {
        print!("{}", c.table());
    }
    Ok(())
}

fn merge(a: MergeArgs) -> Result<()> {
    let opts = quba_edge::merge::MergeOptions { partial: a.partial, run_id: a.run_id };
    let m = quba_edge::merge::merge(&a.shards, &a.out, &opts)?;
    let i = &m.info;
    eprintln!("merged shards {:?} of {} → {}", i.merged, i.shards, a.out.display());
    summary(&a.out, &m.manifest);
    if m.manifest.status != transport::RunStatus::Complete {
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
    let weights = parse_weights(a.weights.as_deref())?;
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

fn listen(a: ListenArgs) -> Result<()> {
    let token = match a.token.clone() {
        Some(t) => t,
        None => transport::new_token()?,
    };
    let listener = std::net::TcpListener::bind(&a.bind).with_context(|| format!("cannot listen on {}", a.bind))?;
    let addr = listener.local_addr()?;
    // Whoever started us may stop reading after the address; that must not
    // stop the boards' streams.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr} token {token}")
        .and_then(|_| out.flush())
        .context("cannot print the listening address and token")?;
    let _ = writeln!(out, "on the board: quba-device run --model … --data … --out tcp://{addr} --token {token}").and_then(|_| out.flush());
    drop(out);
    let timeout = Some(std::time::Duration::from_secs(a.idle_timeout_s.max(1)));
    let Some(root) = &a.runs_dir else {
        let dir = a.run_dir.as_ref().expect("clap requires --run-dir or --runs-dir");
        let (stream, peer) = listener.accept()?;
        stream.set_read_timeout(timeout)?;
        let m = ingest(stream, dir, &format!("tcp {peer}"), Some(&token))?;
        summary(dir, &m);
        return Ok(());
    };
    // Each stream on its own thread: memory per connection is one read
    // buffer, one frame and the run's keys; a full slot table stops accepting,
    // and the kernel's accept queue and TCP windows hold the boards back.
    let (slots, freed) = std::sync::mpsc::sync_channel::<()>(a.max_connections.max(1));
    let freed = std::sync::Mutex::new(freed);
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let served = a.streams.unwrap_or(usize::MAX);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..served {
            slots.send(()).expect("the receiver lives in this scope");
            let (stream, peer) = listener.accept()?;
            let (token, refused, freed) = (&token, &refused, &freed);
            scope.spawn(move || {
                let dir = transport::run_dir_for(root, &format!("tcp-{}", peer.to_string().replace([':', '.', '[', ']'], "_")));
                let r = stream
                    .set_read_timeout(timeout)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| ingest(stream, &dir, &format!("tcp {peer}"), Some(token)));
                match r {
                    Ok(m) => summary(&dir, &m),
                    Err(e) => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // A stream refused before its header left nothing worth a run directory.
                        if Manifest::read(&dir).is_ok_and(|m| m.header.is_none()) {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                        eprintln!("quba: stream from {peer}: {e:#}");
                    }
                }
                let _ = freed.lock().map(|rx| rx.recv());
            });
        }
        Ok(())
    })?;
    let n = refused.into_inner();
    if n > 0 {
        bail!("{n} of {served} streams failed or were refused (see above); the others are in {}", root.display());
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
