//! Moving frames: where the device writes (stdout, a file, TCP) and how the
//! host receives them into a run directory.
//!
//! A run directory holds `records.qlog` — every frame that passed its CRC, in
//! arrival order, byte for byte as it was received — and `manifest.json`,
//! replaced atomically, which says what the run is and how it ended. Reports
//! are recomputed from the log alone.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::protocol::{DecodeStats, FrameDecoder, FrameEncoder, Header, Message};

pub const LOG_FILE: &str = "records.qlog";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Opens the device's output: `-` (stdout), `tcp://HOST:PORT`, or a file path
/// (appended to, so a board can keep its own copy of a run).
pub fn open_sink(spec: &str, token: Option<&str>) -> Result<Box<dyn Write>> {
    if spec == "-" {
        return Ok(Box::new(BufWriter::new(std::io::stdout().lock())));
    }
    if let Some(addr) = spec.strip_prefix("tcp://") {
        let stream = TcpStream::connect(addr)
            .with_context(|| format!("cannot connect to the host at {addr}: is `quba listen` running there?"))?;
        stream.set_nodelay(true).ok();
        let mut w = BufWriter::new(stream);
        let token = token.context("--out tcp://… needs --token (printed by `quba listen`)")?;
        w.write_all(FrameEncoder::new().encode(&Message::Hello { token: token.into() })?)?;
        return Ok(Box::new(w));
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec)
        .with_context(|| format!("cannot open output file {spec}"))?;
    Ok(Box::new(BufWriter::new(f)))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// The device sent its End frame.
    Complete,
    /// The stream stopped before End (device killed, cable pulled, …): what
    /// was received is kept and reported as such.
    Interrupted,
    /// Merged from shards of which some were missing or unfinished (`quba
    /// merge --partial`); the manifest's `merged` names them.
    Partial,
}

/// Where a merged run came from (`quba merge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeInfo {
    /// N of `--shard K/N`.
    pub shards: u32,
    /// Shard indices merged, missing, and merged although they did not finish.
    pub merged: Vec<u32>,
    pub missing: Vec<u32>,
    pub unfinished: Vec<u32>,
    /// The shard run directories, in shard order.
    pub sources: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub status: RunStatus,
    pub source: String,
    pub header: Option<Header>,
    pub records: u64,
    pub failures: u64,
    pub decode: DecodeStats,
    pub host_tool_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeInfo>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{} is not a run directory (no {MANIFEST_FILE})", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", p.display()))
    }

    /// Write-then-rename, so a reader (or a crash) never sees half a manifest.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        Ok(())
    }
}

/// Receives one device stream into `dir`. Returns the final manifest; the
/// log is flushed after every chunk read, so a killed device loses nothing
/// that reached the host.
pub fn ingest(input: impl Read, dir: &Path, source: &str, token: Option<&str>) -> Result<Manifest> {
    ingest_observed(input, dir, source, token, &mut |_| {})
}

/// [`ingest`], showing every accepted message to `observe` (progress display).
pub fn ingest_observed(
    mut input: impl Read,
    dir: &Path,
    source: &str,
    token: Option<&str>,
    observe: &mut dyn FnMut(&Message),
) -> Result<Manifest> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let log_path = dir.join(LOG_FILE);
    if log_path.exists() && std::fs::metadata(&log_path)?.len() > 0 {
        bail!("{} already holds records; use a new run directory", dir.display());
    }
    let mut log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut manifest = Manifest {
        schema: "quba-run/1".into(),
        status: RunStatus::Running,
        source: source.into(),
        header: None,
        records: 0,
        failures: 0,
        decode: DecodeStats::default(),
        host_tool_version: env!("CARGO_PKG_VERSION").into(),
        merged: None,
    };
    manifest.write(dir)?;
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut authenticated = token.is_none();
    let mut ended = false;
    let mut error: Option<anyhow::Error> = None;
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
        let mut pending: Vec<u8> = Vec::new();
        let mut new_header = None;
        dec.push(&buf[..n], |frame| {
            match &frame.message {
                Message::Hello { token: t } => {
                    if Some(t.as_str()) == token {
                        authenticated = true;
                    }
                    return;
                }
                _ if !authenticated => {
                    error.get_or_insert_with(|| anyhow::anyhow!("{source}: the device did not present the token printed by `quba listen`; stream refused"));
                    return;
                }
                Message::Header(h) => new_header = Some(h.clone()),
                _ => {}
            }
            observe(&frame.message);
            match &frame.message {
                Message::Hello { .. } | Message::Header(_) => {}
                Message::Record(_) => manifest.records += 1,
                Message::Failure(_) => manifest.failures += 1,
                Message::End(_) => ended = true,
            }
            pending.extend_from_slice(&frame.bytes);
        });
        if error.is_some() {
            break;
        }
        if !pending.is_empty() {
            log.write_all(&pending).with_context(|| format!("cannot append to {}", log_path.display()))?;
            log.flush()?;
        }
        if let Some(h) = new_header {
            if manifest.header.is_some() {
                error = Some(anyhow::anyhow!("{source}: a second run header arrived in the same stream; one stream carries one run"));
                break;
            }
            manifest.header = Some(h);
            manifest.decode = dec.stats.clone();
            manifest.write(dir)?;
        }
    }
    dec.finish();
    log.sync_all()?;
    manifest.decode = dec.stats.clone();
    manifest.status = if ended { RunStatus::Complete } else { RunStatus::Interrupted };
    manifest.write(dir)?;
    if let Some(e) = error {
        return Err(e.context(format!("run directory {} keeps the {} records received", dir.display(), manifest.records)));
    }
    if manifest.header.is_none() {
        bail!(
            "{source}: no valid run header arrived ({} bytes lost to damaged frames); nothing was recorded in {}",
            manifest.decode.bytes_lost,
            dir.display()
        );
    }
    Ok(manifest)
}

/// A fresh random token for `quba listen` (128 bits from the OS).
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("cannot read /dev/urandom for a token")?;
    Ok(crate::data::hex(&b))
}

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
