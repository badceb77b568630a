//! What a report becomes: results.json, the terminal table, and the files
//! people open (report.html, results.csv, results.xlsx). `quba eval` and
//! `quba report` share it, so both write the same files from the same
//! options.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::compare::{CompareOptions, Margins};
use crate::quba::{self, Normalisation, Weights};
use crate::report::{EvalOptions, Report};

/// The study's published 326-model table: the landscape of ImageNet reports.
pub const STUDY_TABLE: &str = "data/reference/study_326_models.csv";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormArg {
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

#[derive(Args, Clone, Debug)]
pub struct ScoringArgs {
    /// Normalisation of the nine values before weighting (default: paper for ImageNet runs, cohort otherwise).
    #[arg(long, value_enum)]
    pub normalisation: Option<NormArg>,
    /// Nine comma-separated weights in PROTOCOL order (accuracy, adversarial, corruption, OOD,
    /// calibration, class balance, object focus, shape bias, parameters); 0 skips a dimension.
    #[arg(long)]
    pub weights: Option<String>,
    /// Bootstrap resamples for the 95% confidence intervals (0: none).
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long = "ci-seed", default_value_t = 0)]
    pub ci_seed: u64,
}

impl ScoringArgs {
    pub fn weights(&self) -> Result<Weights> {
        parse_weights(self.weights.as_deref())
    }

    pub fn eval_options(&self) -> EvalOptions {
        EvalOptions { bootstrap: self.bootstrap, seed: self.ci_seed }
    }

    /// Builds the report of `runs` as these options say.
    pub fn build(&self, runs: &[PathBuf]) -> Result<Report> {
        crate::report::build(runs, self.normalisation.map(Into::into), self.weights()?, &self.eval_options())
    }
}

/// `--weights`: nine comma-separated numbers, or the study's defaults.
pub fn parse_weights(arg: Option<&str>) -> Result<Weights> {
    match arg {
        None => Ok(Weights::default()),
        Some(w) => w.parse::<Weights>().map_err(|e| anyhow::anyhow!("--weights {w}: {e}")),
    }
}

/// The report as files people open (`eval` writes all three into the runs
/// directory unless told otherwise; `report` only those asked for).
#[derive(Args, Clone, Debug, Default)]
pub struct ReportFiles {
    /// Self-contained HTML report with charts (eval default: RUNS_DIR/report.html).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// One row per model run (eval default: RUNS_DIR/results.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// The same table as an Excel workbook (eval default: RUNS_DIR/results.xlsx).
    #[arg(long)]
    pub xlsx: Option<PathBuf>,
}

impl ReportFiles {
    /// Each file not named explicitly goes into `dir` under its usual name.
    pub fn defaulted_in(&self, dir: &Path) -> ReportFiles {
        let or = |given: &Option<PathBuf>, name: &str| Some(given.clone().unwrap_or_else(|| dir.join(name)));
        ReportFiles { html: or(&self.html, "report.html"), csv: or(&self.csv, "results.csv"), xlsx: or(&self.xlsx, "results.xlsx") }
    }

    /// Writes the files that are named; the HTML page's fp32 → int8 pairs
    /// are compared with the scoring options' bootstrap.
    pub fn write(&self, rep: &Report, scoring: &ScoringArgs) -> Result<()> {
        for p in [&self.html, &self.csv, &self.xlsx].into_iter().flatten() {
            create_parent(p)?;
        }
        if self.csv.is_some() || self.xlsx.is_some() {
            let table = crate::export::table(rep);
            if let Some(p) = &self.csv {
                crate::export::write_csv(&table, p)?;
            }
            if let Some(p) = &self.xlsx {
                crate::export::write_xlsx(&table, p)?;
            }
        }
        if let Some(p) = &self.html {
            let opts = CompareOptions { bootstrap: scoring.bootstrap, seed: scoring.ci_seed, margins: Margins::default() };
            let pairs = crate::html::pairs(&rep.runs, &opts);
            let study = if rep.runs.iter().all(|r| r.header.benchmark == "imagenet") {
                Some(quba::read_table(&crate::shipped(STUDY_TABLE))?)
            } else {
                None
            };
            crate::html::write(rep, &crate::html::Extras { pairs: &pairs, study: study.as_deref() }, p)?;
        }
        Ok(())
    }
}

fn create_parent(p: &Path) -> Result<()> {
    if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

/// results.json: the report's JSON, pretty-printed, with a final newline.
pub fn write_results(rep: &Report, out: &Path) -> Result<()> {
    create_parent(out)?;
    std::fs::write(out, serde_json::to_string_pretty(&rep.to_json())? + "\n").with_context(|| format!("cannot write {}", out.display()))
}

/// The table, or results.json with `json`, on stdout.
pub fn print(rep: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&rep.to_json()).unwrap());
    } else {
        print!("{}", rep.table());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_files_default_into_the_runs_dir_and_named_ones_stay() {
        let given = ReportFiles { html: Some(PathBuf::from("/elsewhere/r.html")), csv: None, xlsx: None };
        let f = given.defaulted_in(Path::new("runs"));
        assert_eq!(f.html.unwrap(), PathBuf::from("/elsewhere/r.html"));
        assert_eq!(f.csv.unwrap(), PathBuf::from("runs/results.csv"));
        assert_eq!(f.xlsx.unwrap(), PathBuf::from("runs/results.xlsx"));
    }

    #[test]
    fn weights_default_to_the_study_and_bad_ones_name_the_flag() {
        assert_eq!(parse_weights(None).unwrap(), Weights::default());
        let e = parse_weights(Some("1,2")).unwrap_err().to_string();
        assert!(e.starts_with("--weights 1,2:"), "{e}");
    }

    #[test]
    fn files_land_in_folders_made_for_them() {
        let dir = std::env::temp_dir().join(format!("quba-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_parent(&dir.join("deep/results.json")).unwrap();
        assert!(dir.join("deep").is_dir());
        // A bare file name has no folder to make.
        create_parent(Path::new("results.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
