//! `quba eval`: the host drives device runs and reports them.
//!
//! The command line becomes a [`Plan`] once: which models (or interrupted
//! runs) to run, how a device process is launched (this machine, QEMU, a
//! board over SSH), how many at a time, and what to write. A board profile
//! fills what the user left unsaid and refuses a run that cannot work before
//! any model is loaded. [`run`] then starts the device processes
//! ([`session`]), a few at a time ([`pool`]), and builds the report from the
//! run directories they left.

mod ledger;
mod pool;
mod remote;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use quba_host::board::{self, Board};
use quba_host::deploy::Ssh;
use quba_host::output::{self, ReportFiles, ScoringArgs};
use quba_host::progress::{self, Progress};
use quba_host::ingest::{self, MANIFEST_FILE};
use quba_host::report::Report;

use crate::suite::{RunArgs, SuiteArgs};
pub use ledger::{Entry, Ledger, LEDGER_FILE};
pub use pool::run_all;

/// The embedded default: the zoo trained on the synthetic benchmark, which the
/// device renders in memory (no dataset on disk; `SuiteArgs::data`'s default).
pub const DEFAULT_ZOO: &str = "models/zoo";

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// ONNX model(s) to evaluate (repeat the flag); default: every .onnx file of the shipped
    /// zoo (models/zoo, fp32 and int8).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Continue an interrupted evaluation (its runs directory, which holds eval.json) or
    /// interrupted runs (run directories `quba eval` made) where they stopped: each device
    /// starts again with the run's own model and suite arguments and is told what the host
    /// already holds, so no sample is lost or counted twice; an evaluation's models that
    /// never started run now. Launch flags (--board, --ssh, --launcher, --device-bin) are
    /// taken from this command line.
    #[arg(long, num_args = 1.., conflicts_with = "models")]
    pub resume: Vec<PathBuf>,
    /// Sleep this long on the device after each batch (a passively cooled board's breathing room).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Progress display: `auto` (bars on a terminal, nothing otherwise), `quiet`, or `json`
    /// (one JSON line per model per second on stderr, for scripts).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: progress::Mode,
    /// Device processes to run at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where run directories are created.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Command prefix that runs the device binary elsewhere, split on spaces, e.g.
    /// "qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu".
    #[arg(long)]
    pub launcher: Option<String>,
    /// Device binary to launch (default: quba-device beside this binary, else this binary's `device run`).
    #[arg(long)]
    pub device_bin: Option<PathBuf>,
    /// Board profile (targets/NAME.json, or a path to one): its device binary, launcher,
    /// parallelism, memory budget and subset size; flags given explicitly win.
    #[arg(long)]
    pub board: Option<String>,
    /// Run on the board over SSH (user@host; needs --board): the device binary and the
    /// models are copied there and the results stream back through the session.
    #[arg(long, requires = "board")]
    pub ssh: Option<String>,
    /// Extra ssh arguments, split on spaces, e.g. "-p 2222 -i /home/me/.ssh/pi".
    #[arg(long, requires = "ssh", allow_hyphen_values = true)]
    pub ssh_args: Option<String>,
    /// Folder on the board for the device binary and the models.
    #[arg(long, requires = "ssh", default_value = "/tmp/quba-edge")]
    pub remote_dir: String,
    /// Where to write results.json (default: RUNS_DIR/results.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print results.json instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    #[command(flatten)]
    pub files: ReportFiles,
}

/// One device run of the plan.
#[derive(Clone, Debug)]
pub enum Job {
    /// A new run directory for this model and these arguments (`dir`: one
    /// claimed already, by an evaluation that was cut before the run began).
    Fresh { run: RunArgs, dir: Option<PathBuf> },
    /// An interrupted run, continued with the arguments it was started with.
    Resume { dir: PathBuf, run: RunArgs },
}

impl Job {
    pub fn run(&self) -> &RunArgs {
        match self {
            Job::Fresh { run, .. } | Job::Resume { run, .. } => run,
        }
    }

    pub fn model(&self) -> &Path {
        &self.run().model
    }

    /// The run directory, where one exists or was claimed.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Job::Fresh { dir, .. } => dir.as_deref(),
            Job::Resume { dir, .. } => Some(dir),
        }
    }
}

/// Everything `quba eval` decided before the first device process starts.
#[derive(Debug)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Command prefix that runs the device binary elsewhere (QEMU).
    pub launcher: Vec<String>,
    /// Device binary (default: beside this executable).
    pub device_bin: Option<PathBuf>,
    /// A board reached over SSH, where the device runs.
    pub ssh: Option<Ssh>,
    pub board: Option<Board>,
    /// Device processes at once.
    pub workers: usize,
    pub runs_dir: PathBuf,
    /// Keep `RUNS_DIR/eval.json` (a fresh evaluation, or one resumed whole);
    /// resuming single run directories leaves the runs directory's alone.
    pub ledger: bool,
    pub progress: progress::Mode,
    /// results.json.
    pub out: PathBuf,
    pub files: ReportFiles,
    pub scoring: ScoringArgs,
}

impl Plan {
    /// The plan of `a`: models (the zoo by default) or the runs to resume,
    /// launch settings with the board profile's defaults under the user's
    /// flags, and the files to write.
    pub fn new(a: &EvalArgs) -> Result<Plan> {
        a.scoring.weights()?;
        let whole = a.resume.iter().find(|d| Ledger::is_in(d));
        let (mut jobs, runs_dir): (Vec<Job>, PathBuf) = match whole {
            Some(d) if a.resume.len() > 1 => bail!(
                "--resume {}: an evaluation's runs directory (it holds {LEDGER_FILE}) is resumed on its own, not beside other runs",
                d.display()
            ),
            Some(d) => (resume_evaluation(d)?, d.clone()),
            None if !a.resume.is_empty() => {
                let jobs = a.resume.iter().map(|d| Ok(Job::Resume { dir: d.clone(), run: session::resume_args(d)? })).collect::<Result<_>>()?;
                (jobs, a.runs_dir.clone())
            }
            None => {
                let models = if a.models.is_empty() { zoo_models()? } else { a.models.clone() };
                let run = |model: PathBuf| RunArgs { model, suite: a.suite.clone(), run_id: None, pause_ms: a.pause_ms, resume_from: None };
                (models.into_iter().map(|m| Job::Fresh { run: run(m), dir: None }).collect(), a.runs_dir.clone())
            }
        };
        let mut launcher = words(a.launcher.as_deref());
        let mut device_bin = a.device_bin.clone();
        let mut workers = a.jobs;
        let board = a.board.as_deref().map(board::load).transpose()?;
        if let Some(b) = &board {
            if b.launcher.is_none() && a.ssh.is_none() {
                bail!(
                    "{} is a real board ({}): build its binary with `{}`, copy it there with the model, run \
                     `quba-device run --model M --out tcp://HOST:PORT --token T` on it and receive with `quba listen` here, \
                     or give --ssh user@host to do all that over SSH",
                    b.name,
                    b.board,
                    b.build_command()
                );
            }
            // On the board's side of an SSH session too: QEMU profiles emulate there.
            if a.launcher.is_none() {
                launcher = words(b.launcher.as_deref());
            }
            if device_bin.is_none() {
                let me = std::env::current_exe().context("cannot locate this executable")?;
                let bin = b.device_binary(&me).context("cannot derive the target directory from this executable's path")?;
                if !bin.exists() {
                    bail!("{} needs the device binary {}; build it with `{}`", b.name, bin.display(), b.build_command());
                }
                device_bin = Some(bin);
            }
            if workers.is_none() && b.jobs > 0 {
                workers = Some(b.jobs);
            }
            // Resumed runs keep the arguments they were started with.
            if a.resume.is_empty() {
                for j in &mut jobs {
                    if let Job::Fresh { run, .. } = j {
                        run.suite.per_class.get_or_insert(b.per_class);
                    }
                }
            }
            for j in &jobs {
                let int8 = crate::engine::read_facts(j.model())?.precision == crate::protocol::Precision::Int8;
                b.check_memory(j.model(), int8)?;
            }
        }
        let ssh = match &a.ssh {
            Some(dest) => {
                remote::check_deployable(&a.suite)?;
                device_bin.as_ref().context("--ssh needs the board's device binary (from --board or --device-bin)")?;
                Some(Ssh { dest: dest.clone(), args: words(a.ssh_args.as_deref()), dir: a.remote_dir.clone() })
            }
            None => None,
        };
        // Device runs are single-threaded and independent: one per core.
        let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).clamp(1, jobs.len().max(1));
        Ok(Plan {
            jobs,
            launcher,
            device_bin,
            ssh,
            board,
            workers,
            ledger: a.resume.is_empty() || whole.is_some(),
            progress: a.progress,
            out: a.out.clone().unwrap_or_else(|| runs_dir.join("results.json")),
            files: a.files.defaulted_in(&runs_dir),
            runs_dir,
            scoring: a.scoring.clone(),
        })
    }

    /// The ledger of this plan before any new run directory is claimed.
    fn ledger_now(&self) -> Ledger {
        Ledger::new(self.jobs.iter().map(|j| Entry { args: j.run().to_args(), dir: j.dir().and_then(ledger::dir_name) }).collect())
    }

    /// The command prefix of a device process on this machine: the launcher,
    /// then the device binary (or this binary's `device run`).
    fn local_device_command(&self) -> Result<Vec<String>> {
        let mut cmd = self.launcher.clone();
        match &self.device_bin {
            Some(b) => cmd.extend([b.display().to_string(), "run".into()]),
            None => {
                let me = std::env::current_exe().context("cannot locate this executable")?;
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
}

/// Runs the plan's device runs, then builds and writes the report
/// (results.json and the report files). A run that stopped early is kept and
/// reported; one that failed outright fails the evaluation, after the runs in
/// flight finished.
pub fn run(plan: &Plan) -> Result<Report> {
    let remote = match &plan.ssh {
        Some(ssh) => {
            let models: Vec<PathBuf> = plan.jobs.iter().map(|j| j.model().to_path_buf()).collect();
            let bin = plan.device_bin.as_ref().expect("Plan::new refuses --ssh without a device binary");
            Some(remote::deploy(ssh.clone(), bin, &models)?)
        }
        None => None,
    };
    let base = match &remote {
        Some(r) => plan.launcher.iter().cloned().chain([r.bin.clone(), "run".into()]).collect(),
        None => plan.local_device_command()?,
    };
    let launcher = session::Launcher { base, remote: remote.as_ref() };
    let ledger = plan.ledger.then(|| Mutex::new(plan.ledger_now()));
    if let Some(l) = &ledger {
        l.lock().unwrap().write(&plan.runs_dir)?;
    }
    let shown = Progress::new(plan.progress);
    let results = pool::run_all(&plan.jobs, plan.workers, |i, job| match job {
        Job::Fresh { run, dir } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    let d = ingest::run_dir_for(&plan.runs_dir, &session::run_name(run));
                    // On record before the device starts: a cut from here on
                    // leaves a run that `--resume RUNS_DIR` continues.
                    if let Some(l) = &ledger {
                        let mut l = l.lock().unwrap();
                        l.jobs[i].dir = ledger::dir_name(&d);
                        l.write(&plan.runs_dir)?;
                    }
                    d
                }
            };
            session::fresh(&launcher, &dir, run.clone(), &shown)
        }
        Job::Resume { dir, run } => session::resume(&launcher, dir, run.clone(), &shown),
    });
    let dirs: Vec<PathBuf> = results.into_iter().flatten().collect::<Result<_>>()?;
    let rep = plan.scoring.build(&dirs)?;
    if let Some(b) = &plan.board {
        warn_over_budget(&rep, b);
    }
    output::write_results(&rep, &plan.out)?;
    plan.files.write(&rep, &plan.scoring)?;
    Ok(rep)
}

fn warn_over_budget(rep: &Report, b: &Board) {
    for run in &rep.runs {
        let peak_mb = run.end.as_ref().map_or(0, |e| e.peak_rss_kb >> 10);
        if peak_mb > b.memory_budget_mb {
            eprintln!("warning: {} peaked at {peak_mb} MB, over the {} budget of {} MB", run.header.model_name, b.name, b.memory_budget_mb);
        }
    }
}

/// The jobs of the evaluation whose runs directory is `d`: its runs that
/// started are resumed (or found complete), the others start now, in the
/// order of the original command.
fn resume_evaluation(d: &Path) -> Result<Vec<Job>> {
    let ledger = Ledger::read(d)?;
    ledger
        .jobs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let dir = e.dir.as_ref().map(|n| d.join(n));
            match dir {
                Some(dir) if dir.join(MANIFEST_FILE).is_file() => Ok(Job::Resume { run: session::resume_args(&dir)?, dir }),
                // Claimed, but cut before its run log began: it starts there.
                dir => {
                    let run = session::parse_run_args(&e.args)
                        .with_context(|| format!("{}: job {i}'s device arguments do not parse", d.join(LEDGER_FILE).display()))?;
                    Ok(Job::Fresh { run, dir })
                }
            }
        })
        .collect()
}

/// Every .onnx file of the shipped zoo, sorted.
pub fn zoo_models() -> Result<Vec<PathBuf>> {
    let dir = quba_host::shipped(DEFAULT_ZOO);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        eval: EvalArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("quba-eval").chain(args.iter().copied()))?;
        Plan::new(&cli.eval)
    }

    #[test]
    fn the_default_plan_is_the_zoo_with_files_in_the_runs_dir() {
        let p = plan(&["--runs-dir", "somewhere", "--html", "/tmp/r.html"]).unwrap();
        let zoo = zoo_models().unwrap();
        assert_eq!(p.jobs.len(), zoo.len());
        assert!(p.jobs.iter().zip(&zoo).all(|(j, m)| matches!(j, Job::Fresh { run, dir: None } if &run.model == m && run.suite.per_class.is_none())));
        assert!(p.ledger);
        assert!((1..=zoo.len()).contains(&p.workers));
        assert_eq!(p.out, PathBuf::from("somewhere/results.json"));
        assert_eq!(p.files.html, Some(PathBuf::from("/tmp/r.html")));
        assert_eq!(p.files.csv, Some(PathBuf::from("somewhere/results.csv")));
        assert!(p.board.is_none() && p.ssh.is_none() && p.launcher.is_empty());
    }

    #[test]
    fn workers_never_exceed_the_jobs() {
        let p = plan(&["--model", "models/tiny/tiny-cnn.fp32.onnx", "--jobs", "8"]).unwrap();
        assert_eq!(p.workers, 1);
        assert_eq!(p.jobs.len(), 1);
    }

    #[test]
    fn a_real_board_without_ssh_is_refused_with_the_way_to_run_it() {
        let e = plan(&["--board", "pi4"]).unwrap_err().to_string();
        assert!(e.contains("pi4 is a real board"), "{e}");
        assert!(e.contains("--target aarch64-unknown-linux-gnu"), "{e}");
        assert!(e.contains(" run `quba-device run --model M"), "{e}");
        assert!(!e.contains("  "), "no runs of spaces in a user-visible message: {e:?}");
    }

    #[test]
    fn bad_weights_are_refused_before_anything_runs() {
        let e = plan(&["--weights", "1,2,3"]).unwrap_err().to_string();
        assert!(e.contains("--weights 1,2,3"), "{e}");
    }

    #[test]
    fn resuming_a_run_eval_did_not_start_says_how_to_resume_it() {
        let dir = std::env::temp_dir().join(format!("quba-eval-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = quba_host::ingest::RunLog::create(&dir, "tcp 10.0.0.7:5000", None).unwrap();
        drop(log);
        let e = format!("{:#}", plan(&["--resume", dir.to_str().unwrap()]).unwrap_err());
        assert!(e.contains("was not started by `quba eval` (source: tcp 10.0.0.7:5000)"), "{e}");
        assert!(e.contains("--resume-from"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ssh_refuses_datasets_it_cannot_copy() {
        let cli = Cli::try_parse_from(["quba-eval", "--data", "/data/val"]).unwrap();
        let e = remote::check_deployable(&cli.eval.suite).unwrap_err().to_string();
        assert!(e.contains("--ssh copies the device binary and the models only"), "{e}");
        let cli = Cli::try_parse_from(["quba-eval"]).unwrap();
        assert!(remote::check_deployable(&cli.eval.suite).is_ok());
    }
}
