//! How the host receives a device's stream into a run directory.
//!
//! A run directory holds `records.qlog` — every frame that passed its CRC, in
//! arrival order, byte for byte as it was received — and `manifest.json`,
//! replaced atomically, which says what the run is and how it ended. Reports
//! are recomputed from the log alone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::protocol::{decode_all, DecodeStats, FrameDecoder, Header, Message, Resume};
pub use quba_common::Keys;

pub const LOG_FILE: &str = "records.qlog";
pub const MANIFEST_FILE: &str = "manifest.json";

pub use crate::protocol::{Launch, Manifest, MergeInfo, RunStatus};

/// `manifest.json` on disk.
pub trait ManifestFile: Sized {
    fn read(dir: &Path) -> Result<Self>;
    fn write(&self, dir: &Path) -> Result<()>;
}

impl ManifestFile for Manifest {
    fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{} is not a run directory (no {MANIFEST_FILE})", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", p.display()))
    }

    /// Write-then-rename, so a reader (or a crash) never sees half a manifest.
    fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Receives one device stream into a new run directory `dir`. Returns the
/// final manifest; frames reach the log as they arrive, so a killed device
/// loses nothing that reached the host.
pub fn ingest(input: impl Read, dir: &Path, source: &str, token: Option<&str>) -> Result<Manifest> {
    ingest_observed(input, RunLog::create(dir, source, None)?, token, &mut |_| {})
}

/// A run directory being written: its log, its manifest, and the keys the
/// log holds, so nothing is counted twice.
pub struct RunLog {
    dir: PathBuf,
    log: File,
    manifest: Manifest,
    records: Keys,
    failures: Keys,
}

impl RunLog {
    /// A new run in `dir`, which must not hold records yet. `launch` is what
    /// `quba eval --resume` needs to start the device again.
    pub fn create(dir: &Path, source: &str, launch: Option<Launch>) -> Result<RunLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
        let log_path = dir.join(LOG_FILE);
        if log_path.exists() && std::fs::metadata(&log_path)?.len() > 0 {
            bail!("{} already holds records; use a new run directory, or `quba eval --resume` it", dir.display());
        }
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let manifest = Manifest {
            schema: "quba-run/1".into(),
            status: RunStatus::Running,
            source: source.into(),
            header: None,
            records: 0,
            failures: 0,
            decode: DecodeStats::default(),
            host_tool_version: env!("CARGO_PKG_VERSION").into(),
            merged: None,
            launch,
        };
        manifest.write(dir)?;
        Ok(RunLog { dir: dir.to_path_buf(), log, manifest, records: Keys::default(), failures: Keys::default() })
    }

    /// Reopens an interrupted run to append to it. A host killed mid-write
    /// can leave a torn last frame; it is cut off here (bytes after the last
    /// delimiter are never a whole frame), or the next frame appended would
    /// be glued to it and lost. The manifest may lag the log by the frames
    /// after its last write, so everything is recounted from the log.
    pub fn reopen(dir: &Path) -> Result<RunLog> {
        let mut manifest = Manifest::read(dir)?;
        if manifest.merged.is_some() {
            bail!("{} was merged from shards (`quba merge`); resume the shard runs and merge again", dir.display());
        }
        let log_path = dir.join(LOG_FILE);
        let bytes = std::fs::read(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
        let whole = bytes.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        let log = OpenOptions::new().append(true).open(&log_path).with_context(|| format!("cannot open {}", log_path.display()))?;
        if whole < bytes.len() {
            log.set_len(whole as u64).with_context(|| format!("cannot cut the torn last frame off {}", log_path.display()))?;
            manifest.decode.truncated_tail = true;
        }
        let (frames, _) = decode_all(&bytes[..whole]);
        let mut run = RunLog { dir: dir.to_path_buf(), log, manifest, records: Keys::default(), failures: Keys::default() };
        let mut ended = false;
        for f in &frames {
            match &f.message {
                Message::Header(h) if run.manifest.header.is_none() => run.manifest.header = Some(h.clone()),
                Message::Record(r) => {
                    run.records.insert((r.set, r.sample));
                }
                Message::Failure(x) => {
                    run.failures.insert((x.set, x.sample));
                }
                Message::End(_) => ended = true,
                _ => {}
            }
        }
        run.manifest.records = run.records.len() as u64;
        run.manifest.failures = run.failures.len() as u64;
        run.manifest.status = if ended { RunStatus::Complete } else { RunStatus::Interrupted };
        run.manifest.write(dir)?;
        Ok(run)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the device resuming this run must not send again.
    pub fn resume_list(&self) -> Resume {
        let mut r = Resume { records: self.records.iter().collect(), failures: self.failures.iter().collect() };
        // Sorted, so the list sent is reproducible.
        r.records.sort();
        r.failures.sort();
        r
    }
}

/// The header with what may honestly differ between two sessions of one run
/// cleared: a GPU's profiled placement times.
fn comparable(h: &Header) -> Header {
    Header { placement: String::new(), ..h.clone() }
}

/// Names the header fields in which `b` differs from `a`.
fn header_diff(a: &Header, b: &Header) -> String {
    let (a, b) = (serde_json::to_value(comparable(a)).unwrap_or_default(), serde_json::to_value(comparable(b)).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return "?".into() };
    a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v} → {}", b.get(k).unwrap_or(&serde_json::Value::Null))).collect::<Vec<_>>().join(", ")
}

/// Receives one device stream into `run`, showing every accepted message to
/// `observe` (progress display).
pub fn ingest_observed(mut input: impl Read, mut run: RunLog, token: Option<&str>, observe: &mut dyn FnMut(&Message)) -> Result<Manifest> {
    let dir = run.dir.clone();
    let source = run.manifest.source.clone();
    let log_path = dir.join(LOG_FILE);
    let resumed_header = run.manifest.header.clone();
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut authenticated = token.is_none();
    let mut ended = false;
    let mut got_header = false;
    let mut error: Option<anyhow::Error> = None;
    let mut last_sync = Instant::now();
    // The accepted frames of one read, appended to the log in one write.
    let mut accepted: Vec<u8> = Vec::with_capacity(buf.len());
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error = Some(anyhow::Error::new(e).context("reading the device stream"));
                break;
            }
        };
        accepted.clear();
        let mut new_header = None;
        dec.push(&buf[..n], |frame, bytes| {
            if error.is_some() {
                return;
            }
            match &frame.message {
                Message::Hello { token: t } => {
                    if Some(t.as_str()) == token {
                        authenticated = true;
                    }
                    return;
                }
                _ if !authenticated => {
                    error = Some(anyhow::anyhow!("{source}: the device did not present the token printed by `quba listen`; stream refused"));
                    return;
                }
                Message::Header(h) => {
                    if got_header {
                        error = Some(anyhow::anyhow!("{source}: a second run header arrived in the same stream; one stream carries one run"));
                        return;
                    }
                    if let Some(old) = resumed_header.as_ref().filter(|old| comparable(old) != comparable(h)) {
                        error = Some(anyhow::anyhow!(
                            "{source}: the device's run is not the one being resumed in {} (header differs in {})",
                            dir.display(),
                            header_diff(old, h)
                        ));
                        return;
                    }
                    got_header = true;
                    new_header = Some(h.clone());
                }
                // Kept in the log (it is what arrived), counted once.
                Message::Record(r) => {
                    if run.records.insert((r.set, r.sample)) {
                        run.manifest.records += 1;
                    }
                }
                Message::Failure(x) => {
                    if run.failures.insert((x.set, x.sample)) {
                        run.manifest.failures += 1;
                    }
                }
                Message::End(_) => ended = true,
            }
            observe(&frame.message);
            accepted.extend_from_slice(bytes);
        });
        if !accepted.is_empty() {
            run.log.write_all(&accepted).with_context(|| format!("cannot append to {}", log_path.display()))?;
            // Process death loses nothing written; a power cut at most the last second.
            if last_sync.elapsed() >= Duration::from_secs(1) {
                run.log.sync_data()?;
                last_sync = Instant::now();
            }
        }
        if let Some(h) = new_header {
            run.manifest.header = Some(h);
            run.manifest.write(&dir)?;
        }
        if error.is_some() {
            break;
        }
    }
    dec.finish();
    run.log.sync_all()?;
    let decode = dec.stats.clone();
    let m = &mut run.manifest;
    // A resumed run's earlier sessions' losses stay on its record.
    m.decode.frames += decode.frames;
    m.decode.corrupt_frames += decode.corrupt_frames;
    m.decode.bytes_lost += decode.bytes_lost;
    m.decode.missing_frames += decode.missing_frames;
    m.decode.truncated_tail |= decode.truncated_tail;
    m.status = if ended { RunStatus::Complete } else { RunStatus::Interrupted };
    m.write(&dir)?;
    if let Some(e) = error {
        return Err(e.context(format!("run directory {} keeps the {} records received", dir.display(), m.records)));
    }
    if m.header.is_none() {
        bail!(
            "{source}: no valid run header arrived ({} bytes lost to damaged frames); nothing was recorded in {}",
            m.decode.bytes_lost,
            dir.display()
        );
    }
    Ok(run.manifest)
}

/// One line on stderr: how a received run ended.
pub fn summary(dir: &Path, m: &Manifest) {
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

/// A new run directory `ROOT/NAME-MILLIS[-N]`, created, so concurrent runs
/// never share one.
pub fn run_dir_for(root: &Path, name: &str) -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    // Claimed by creating it: parallel evaluations of same-named models in
    // the same millisecond must not share a run log.
    let _ = std::fs::create_dir_all(root);
    (0..)
        .map(|n| root.join(if n == 0 { format!("{name}-{now}") } else { format!("{name}-{now}-{n}") }))
        .find(|p| std::fs::create_dir(p).is_ok() || !root.is_dir())
        .expect("an unbounded range always yields")
}
