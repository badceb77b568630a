//! Progress of device runs as the host receives them: per model, records
//! received of the header's total, the probe set in flight, rate and ETA.
//! Bars only on a terminal; one JSON line per model per second for scripts.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use crate::protocol::Message;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Quiet,
    Json,
}

pub struct Progress {
    mode: Mode,
    bars: MultiProgress,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let mode = if mode == Mode::Auto && !std::io::stderr().is_terminal() { Mode::Quiet } else { mode };
        let target = if mode == Mode::Auto { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Progress { mode, bars: MultiProgress::with_draw_target(target) }
    }

    pub fn track(&self, model: &str) -> Tracker {
        let bar = self.bars.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{prefix:24!} {bar:24} {pos:>6}/{len:6} {per_sec:>9} eta {eta:>4} {msg:28!}")
                .expect("template is valid"),
        );
        bar.set_prefix(model.to_string());
        Tracker { mode: self.mode, model: model.to_string(), bar, started: Instant::now(), last_json: None, total: 0, done: 0, set: String::new() }
    }
}

pub struct Tracker {
    mode: Mode,
    model: String,
    bar: ProgressBar,
    started: Instant,
    last_json: Option<Instant>,
    total: u64,
    done: u64,
    set: String,
}

impl Tracker {
    pub fn observe(&mut self, m: &Message) {
        match m {
            Message::Header(h) => {
                self.total = h.samples as u64;
                self.bar.set_length(self.total);
            }
            Message::Record(r) => {
                self.done += 1;
                self.bar.inc(1);
                let name = r.set.name();
                if name != self.set {
                    self.bar.set_message(name.clone());
                    self.set = name;
                }
            }
            Message::Failure(_) => {
                self.done += 1;
                self.bar.inc(1);
            }
            _ => {}
        }
        if self.mode == Mode::Json && self.last_json.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_json = Some(Instant::now());
            self.json();
        }
    }

    fn json(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 { Some((self.total.saturating_sub(self.done)) as f64 / rate) } else { None };
        eprintln!(
            "{}",
            serde_json::json!({"model": self.model, "set": self.set, "done": self.done, "total": self.total, "per_second": rate, "eta_s": eta})
        );
    }

    pub fn finish(&mut self) {
        if self.mode == Mode::Json {
            self.json();
        }
        self.bar.finish_and_clear();
    }
}
