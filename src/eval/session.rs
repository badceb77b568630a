//! One model's device process: started here, over SSH, or under QEMU; its
//! stdout ingested into a run directory as it streams; a resume list fed to
//! its stdin when an interrupted run continues.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Parser;
use quba_host::ingest::{self, Launch, Manifest, ManifestFile, RunLog, RunStatus};
use quba_host::progress::Progress;

use super::remote::Remote;
use crate::suite::RunArgs;

/// How device processes are started: the command prefix (launcher, binary,
/// `run`) and, for a board over SSH, the session and what was copied there.
pub struct Launcher<'a> {
    pub base: Vec<String>,
    pub remote: Option<&'a Remote>,
}

fn stem(model: &Path) -> String {
    model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// The name a run's directory starts with: the model's file stem, and the
/// shard for a shard's run (a shard listed beside whole runs must not pass
/// for one).
pub fn run_name(run: &RunArgs) -> String {
    match run.suite.shard {
        Some(s) => format!("{}.shard{}of{}", stem(&run.model), s.index, s.count),
        None => stem(&run.model),
    }
}

/// Runs `run` into `dir`, a new (empty) run directory; the directory, also
/// when the device stopped early (what arrived is kept, and `--resume`
/// continues it).
pub fn fresh(l: &Launcher, dir: &Path, run: RunArgs, progress: &Progress) -> Result<PathBuf> {
    let log = RunLog::create(dir, &format!("device process for {}", run.model.display()), Some(Launch { args: run.to_args() }))?;
    session(l, run, log, None, progress)
}

/// Device arguments as `RunArgs::to_args` wrote them.
pub fn parse_run_args(args: &[String]) -> Result<RunArgs, clap::Error> {
    #[derive(Parser)]
    struct Stored {
        #[command(flatten)]
        run: RunArgs,
    }
    let argv = std::iter::once("quba-device".to_string()).chain(args.iter().cloned());
    Ok(Stored::try_parse_from(argv)?.run)
}

/// The arguments an interrupted run was started with (its manifest's launch).
pub fn resume_args(dir: &Path) -> Result<RunArgs> {
    let m = Manifest::read(dir)?;
    let launch = m.launch.with_context(|| {
        format!(
            "{} was not started by `quba eval` (source: {}), so its device arguments are unknown; \
             resume a board's own run with `quba-device run … --run-id ID --resume-from LIST`",
            dir.display(),
            m.source
        )
    })?;
    parse_run_args(&launch.args).with_context(|| format!("{}: the manifest's launch arguments do not parse", dir.display()))
}

/// Continues the interrupted run in `dir`, started with `run` (see `--resume`).
pub fn resume(l: &Launcher, dir: &Path, mut run: RunArgs, progress: &Progress) -> Result<PathBuf> {
    let log = RunLog::reopen(dir)?;
    let m = log.manifest();
    if m.status == RunStatus::Complete {
        eprintln!("{} is complete ({} records); nothing to resume", dir.display(), m.records);
        return Ok(dir.to_path_buf());
    }
    // Without a header (none sent, or lost with no End to repeat it) the
    // run's id is unknown: it continues under a new one, the records kept
    // still skipped.
    run.run_id = m.header.as_ref().map(|h| h.run_id.clone());
    run.resume_from = Some("-".into());
    eprintln!("resuming {}: {} records and {} failures kept", dir.display(), m.records, m.failures);
    let list = serde_json::to_vec(&log.resume_list())?;
    session(l, run, log, Some(list), progress)
}

/// Starts the device process for `run`, feeds it `stdin` (a resume list),
/// and ingests what it sends into `log`.
fn session(l: &Launcher, mut run: RunArgs, log: RunLog, stdin: Option<Vec<u8>>, progress: &Progress) -> Result<PathBuf> {
    let model = run.model.clone();
    let dir = log.dir().to_path_buf();
    if let Some(r) = l.remote {
        run.model = PathBuf::from(r.model(&model)?);
    }
    let argv: Vec<String> = l.base.iter().cloned().chain(run.to_args()).collect();
    let mut cmd = match l.remote {
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
        .with_context(|| format!("cannot start the device process `{}`", l.base.join(" ")))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A thread, so a list larger than the pipe cannot stall us; a device
        // that died early only makes this write fail, which its exit reports.
        std::thread::spawn(move || pipe.write_all(&bytes));
    }
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut shown = progress.track(&stem(&model));
    let ingested = ingest::ingest_observed(stdout, log, None, &mut |m| shown.observe(m));
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
