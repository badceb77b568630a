//! `RUNS_DIR/eval.json`: a whole evaluation as it was started, so that
//! `quba eval --resume RUNS_DIR` can finish it after a power cut — the models
//! never started included, not only the run directories that exist.
//!
//! One entry per device run, in the order of the command line: the device
//! arguments (exactly what each run's manifest will hold as its launch) and,
//! once the run has a directory, that directory's name. Names, not paths: a
//! runs directory copied off a board's SD card resumes where it lands.
//! Written whole and renamed into place, like a run's manifest, each time a
//! run directory is claimed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const LEDGER_FILE: &str = "eval.json";
const SCHEMA: &str = "quba-eval/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub schema: String,
    pub jobs: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `quba-device run` arguments (`RunArgs::to_args`).
    pub args: Vec<String>,
    /// The run directory's name inside the runs directory, once claimed.
    pub dir: Option<String>,
}

/// How the ledger names a run directory: its name inside the runs directory.
pub fn dir_name(dir: &Path) -> Option<String> {
    dir.file_name().map(|n| n.to_string_lossy().into_owned())
}

impl Ledger {
    pub fn new(jobs: Vec<Entry>) -> Ledger {
        Ledger { schema: SCHEMA.into(), jobs }
    }

    /// Whether `dir` holds an evaluation's ledger (else it may be one run).
    pub fn is_in(dir: &Path) -> bool {
        dir.join(LEDGER_FILE).is_file()
    }

    pub fn read(runs_dir: &Path) -> Result<Ledger> {
        let p = runs_dir.join(LEDGER_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let l: Ledger = serde_json::from_str(&text).with_context(|| format!("{} is damaged", p.display()))?;
        if l.schema != SCHEMA {
            bail!("{} is a {} ledger; this quba reads {SCHEMA}", p.display(), l.schema);
        }
        if let Some(bad) = l.jobs.iter().filter_map(|e| e.dir.as_deref()).find(|d| d.is_empty() || d.contains(['/', '\\']) || d.starts_with('.')) {
            bail!("{}: run directory {bad:?} is not a name inside the runs directory", p.display());
        }
        Ok(l)
    }

    pub fn write(&self, runs_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(runs_dir).with_context(|| format!("cannot create {}", runs_dir.display()))?;
        let tmp = runs_dir.join(format!("{LEDGER_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, runs_dir.join(LEDGER_FILE)).with_context(|| format!("cannot replace {}", runs_dir.join(LEDGER_FILE).display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("quba-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn written_ledgers_read_back_and_replace_the_old_one() {
        let d = scratch("round-trip");
        let mut l = Ledger::new(vec![
            Entry { args: vec!["--model".into(), "a.onnx".into()], dir: None },
            Entry { args: vec!["--model".into(), "b.onnx".into()], dir: None },
        ]);
        l.write(&d).unwrap();
        assert!(Ledger::is_in(&d));
        l.jobs[1].dir = Some("b-1796287698662".into());
        l.write(&d).unwrap();
        assert_eq!(Ledger::read(&d).unwrap(), l);
        assert!(!d.join("eval.json.tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_or_foreign_ledgers_are_refused_by_name() {
        let d = scratch("bad");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(LEDGER_FILE), "{\"schema\": \"quba-eval/1\", \"jobs\": [").unwrap();
        let e = format!("{:#}", Ledger::read(&d).unwrap_err());
        assert!(e.contains("eval.json is damaged"), "{e}");
        std::fs::write(d.join(LEDGER_FILE), r#"{"schema": "quba-eval/9", "jobs": []}"#).unwrap();
        let e = Ledger::read(&d).unwrap_err().to_string();
        assert!(e.contains("quba-eval/9") && e.contains("quba-eval/1"), "{e}");
        std::fs::write(d.join(LEDGER_FILE), r#"{"schema": "quba-eval/1", "jobs": [{"args": [], "dir": "../elsewhere"}]}"#).unwrap();
        let e = Ledger::read(&d).unwrap_err().to_string();
        assert!(e.contains("\"../elsewhere\" is not a name inside the runs directory"), "{e}");
        assert!(!Ledger::is_in(&d.join("nope")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
