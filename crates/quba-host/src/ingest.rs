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

use crate::protocol::{decode_all, header_of, DecodeStats, FrameDecoder, Header, Message, Resume};
pub use quba_common::Keys;

pub const LOG_FILE: &str = "records.qlog";
pub const MANIFEST_FILE: &str = "manifest.json";

pub use crate::protocol::{Launch, Lost, LostFrame, Manifest, MergeInfo, RunStatus};

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
            lost: Vec::new(),
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
        if run.manifest.header.is_none() {
            run.manifest.header = header_of(&frames).cloned();
        }
        let mut ended = false;
        for f in &frames {
            match &f.message {
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
        run.manifest.status = RunStatus::received(run.manifest.header.as_ref(), ended);
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

/// Refuses a session whose header (its own frame's, or the End's copy) is
/// not the run's being resumed.
fn check_resumed(resumed: Option<&Header>, h: &Header, source: &str, dir: &Path) -> Result<()> {
    match resumed.filter(|old| comparable(old) != comparable(h)) {
        Some(old) => bail!("{source}: the device's run is not the one being resumed in {} (header differs in {})", dir.display(), header_diff(old, h)),
        None => Ok(()),
    }
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
    // This session's header: its own frame's, or the End's copy where that was lost.
    let mut header: Option<Header> = None;
    // Stream offsets: where the run's frames begin (after a Hello), where
    // the first of them that decoded begins, where the last decoded frame
    // ends, and how much was read. A lost frame's bytes are a gap between them.
    let (mut data_start, mut first_data, mut last_end, mut read) = (0u64, None::<u64>, 0u64, 0u64);
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
        read += n as u64;
        accepted.clear();
        let mut new_header = false;
        dec.push(&buf[..n], |frame, bytes| {
            if error.is_some() {
                return;
            }
            let frame_end = frame.offset + bytes.len() as u64;
            match &frame.message {
                Message::Hello { token: t } => {
                    if Some(t.as_str()) == token {
                        authenticated = true;
                    }
                    (data_start, last_end) = (frame_end, frame_end);
                    return;
                }
                _ if !authenticated => {
                    error = Some(anyhow::anyhow!("{source}: the device did not present the token printed by `quba listen`; stream refused"));
                    return;
                }
                Message::Header(h) => {
                    if header.is_some() {
                        error = Some(anyhow::anyhow!("{source}: a second run header arrived in the same stream; one stream carries one run"));
                        return;
                    }
                    if let Err(e) = check_resumed(resumed_header.as_ref(), h, &source, &dir) {
                        error = Some(e);
                        return;
                    }
                    header = Some(h.clone());
                    new_header = true;
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
                Message::End(end) => {
                    match &header {
                        Some(h) if comparable(h) != comparable(&end.header) => {
                            error = Some(anyhow::anyhow!(
                                "{source}: the End frame at stream byte {} repeats another run header than the Header frame did (differs in {})",
                                frame.offset,
                                header_diff(h, &end.header)
                            ));
                            return;
                        }
                        Some(_) => {}
                        // The Header frame was lost; its copy stands in.
                        None => {
                            if let Err(e) = check_resumed(resumed_header.as_ref(), &end.header, &source, &dir) {
                                error = Some(e);
                                return;
                            }
                            header = Some((*end.header).clone());
                            new_header = true;
                        }
                    }
                    ended = true;
                }
            }
            first_data.get_or_insert(frame.offset);
            last_end = frame_end;
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
        if new_header {
            run.manifest.header.clone_from(&header);
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
    m.status = RunStatus::received(m.header.as_ref(), ended);
    if error.is_none() {
        // This session's account replaces the last one's: a header that
        // arrived now makes an earlier loss of it moot.
        m.lost.clear();
        let before_first = first_data.unwrap_or(read);
        if m.header.is_none() && before_first > data_start {
            m.lost.push(Lost { frame: LostFrame::Header, bytes: [data_start, before_first] });
        }
        // Bytes after the last good frame that end on a delimiter held a
        // whole frame that did not decode, where the End belonged; a stream
        // cut mid-frame ends without one (the device stopped, nothing was
        // damaged).
        if !ended && first_data.is_some() && read > last_end && !decode.truncated_tail {
            m.lost.push(Lost { frame: LostFrame::End, bytes: [last_end, read] });
        }
    }
    m.write(&dir)?;
    if let Some(e) = error {
        return Err(e.context(format!("run directory {} keeps the {} records received", dir.display(), m.records)));
    }
    if m.header.is_none() {
        let why = match (m.lost.iter().find(|l| l.frame == LostFrame::Header), first_data) {
            (Some(lost), _) => format!("{lost}, and the stream ended before the End frame that repeats the header"),
            (None, Some(at)) => format!("the stream's first frame (stream byte {at}) is not a Header: it began mid-run"),
            (None, None) => "the stream ended before any frame of the run".into(),
        };
        let facts = LostFrame::Header.facts();
        if m.records + m.failures == 0 {
            bail!("{source}: no valid run header arrived: {why}; nothing was recorded in {}", dir.display());
        }
        bail!(
            "{source}: no valid run header arrived: {why}; {facts} is unknown, so the {} records and {} failures kept in {} cannot be reported (manifest status no_header)",
            m.records,
            m.failures,
            log_path.display()
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
    for lost in &m.lost {
        eprintln!("{}: {lost}: {} unknown", dir.display(), lost.frame.facts());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::{full_end, full_failure, full_header, full_record};
    use crate::protocol::{FrameEncoder, ProbeSet};
    use crate::report::Run;

    /// A small whole run, frame by frame: header, six records, a failure, end.
    fn frames() -> Vec<Vec<u8>> {
        let mut msgs = vec![Message::Header(full_header())];
        for sample in 0..6 {
            let mut r = full_record();
            r.sample = sample;
            // Some with a vector, some top-1 only, as a stream mixes them.
            if sample % 2 == 1 {
                r.set = ProbeSet::Clean;
                r.probs = None;
            }
            msgs.push(Message::Record(r));
        }
        msgs.push(Message::Failure(full_failure()));
        let mut end = full_end();
        (end.records, end.failures) = (6, 1);
        msgs.push(Message::End(end));
        let mut enc = FrameEncoder::new();
        msgs.iter().map(|m| enc.encode(m).unwrap().to_vec()).collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quba-ingest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// One bit of `frame[at]` flipped, never into a zero: a new delimiter
    /// would split the frame in two, a case of its own (both halves lost).
    fn flip(frame: &mut [u8], at: usize) {
        frame[at] ^= if frame[at] == 0x01 { 0x02 } else { 0x01 };
    }

    #[test]
    fn a_bit_flip_in_any_one_frame_loses_that_frame_only() {
        let frames = frames();
        let (records, failures) = (6u64, 1u64);
        let (last, starts) = (frames.len() - 1, frames.iter().scan(0, |at, f| Some(std::mem::replace(at, *at + f.len() as u64))).collect::<Vec<_>>());
        for (i, frame) in frames.iter().enumerate() {
            // The first byte (a COBS code), the middle, the last before the delimiter.
            for at in [0, frame.len() / 2, frame.len() - 2] {
                let mut damaged = frames.clone();
                flip(&mut damaged[i], at);
                let case = format!("frame {i}, byte {at}");
                let dir = scratch(&format!("flip-{i}-{at}"));
                let m = ingest(&damaged.concat()[..], &dir, "test stream", None).unwrap_or_else(|e| panic!("{case}: {e:#}"));
                assert_eq!(Manifest::read(&dir).unwrap(), m, "{case}: the manifest on disk");
                assert_eq!(m.header.as_ref(), Some(&full_header()), "{case}");
                assert_eq!((m.decode.corrupt_frames, m.decode.bytes_lost), (1, frame.len() as u64), "{case}");
                let run = Run::load(&dir).unwrap_or_else(|e| panic!("{case}: {e:#}"));
                assert_eq!(run.header, full_header(), "{case}");
                let kept = |n: u64, frame: usize| if i == frame { n - 1 } else { n };
                match i {
                    // Only the End said it was over, and only it timed the run.
                    _ if i == last => {
                        assert_eq!(m.status, RunStatus::Interrupted, "{case}");
                        assert_eq!(m.lost, [Lost { frame: LostFrame::End, bytes: [starts[i], starts[i] + frame.len() as u64] }], "{case}");
                        assert!(run.end.is_none(), "{case}");
                    }
                    _ => {
                        assert_eq!(m.status, RunStatus::Complete, "{case}");
                        assert!(m.lost.is_empty(), "{case}: {:?}", m.lost);
                        assert!(run.end.is_some(), "{case}");
                    }
                }
                // Records are frames 1–6 (sample = frame − 1), the failure frame 7.
                assert_eq!(m.records, (1..=6).map(|f| kept(1, f)).sum::<u64>(), "{case}");
                assert_eq!(m.failures, kept(failures, 7), "{case}");
                assert_eq!(run.records.len() as u64, m.records, "{case}");
                assert!(run.records.iter().all(|r| r.sample as usize + 1 != i), "{case}: the damaged record was kept");
                assert_eq!(records + failures - m.records - m.failures, u64::from((1..=7).contains(&i)), "{case}");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    #[test]
    fn a_lost_header_with_no_end_to_repeat_it_is_named_and_the_records_kept() {
        let frames = frames();
        let header_len = frames[0].len() as u64;
        let mut damaged = frames.clone();
        flip(&mut damaged[0], 40);
        // Cut before the End (a killed device), or the End damaged too.
        let cut = damaged[..frames.len() - 1].concat();
        let mut both = damaged.clone();
        flip(both.last_mut().unwrap(), 40);
        let end_at = cut.len() as u64;
        for (name, stream, lost) in [
            ("cut", cut, vec![Lost { frame: LostFrame::Header, bytes: [0, header_len] }]),
            (
                "end-damaged",
                both.concat(),
                vec![
                    Lost { frame: LostFrame::Header, bytes: [0, header_len] },
                    Lost { frame: LostFrame::End, bytes: [end_at, end_at + frames[frames.len() - 1].len() as u64] },
                ],
            ),
        ] {
            let dir = scratch(&format!("headerless-{name}"));
            let e = format!("{:#}", ingest(&stream[..], &dir, "test stream", None).unwrap_err());
            for says in ["test stream", "no valid run header", &format!("the {header_len} bytes from stream byte 0, where the Header frame belonged"), "model, dataset", "6 records and 1 failures", "records.qlog", "no_header"] {
                assert!(e.contains(says), "{name}: {e:?} does not say {says:?}");
            }
            let m = Manifest::read(&dir).unwrap();
            assert_eq!((m.status, m.header.as_ref(), m.records, m.failures), (RunStatus::NoHeader, None, 6, 1), "{name}");
            assert_eq!(m.lost, lost, "{name}");
            // The records stay in the log; a report names why it cannot use them.
            let (kept, _) = decode_all(&std::fs::read(dir.join(LOG_FILE)).unwrap());
            assert_eq!(kept.iter().filter(|f| matches!(f.message, Message::Record(_))).count(), 6, "{name}");
            let e = format!("{:#}", Run::load(&dir).err().expect("a run without a header does not load"));
            for says in ["records.qlog", "no run header", "from stream byte 0", "no_header"] {
                assert!(e.contains(says), "{name}: {e:?} does not say {says:?}");
            }
            // Reopened for a resume, it stays what it is until a header arrives.
            assert_eq!(RunLog::reopen(&dir).unwrap().manifest().status, RunStatus::NoHeader, "{name}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn an_end_that_repeats_another_header_is_refused() {
        let mut frames = frames();
        let mut end = full_end();
        end.header.model_name = "other".into();
        frames.pop();
        frames.push(FrameEncoder::new().encode(&Message::End(end)).unwrap().to_vec());
        let dir = scratch("other-header");
        let e = format!("{:#}", ingest(&frames.concat()[..], &dir, "test stream", None).unwrap_err());
        assert!(e.contains("repeats another run header") && e.contains("model_name: \"m\" → \"other\""), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stream_cut_between_frames_loses_no_end_frame() {
        // A device killed after a record: interrupted, and nothing damaged.
        let frames = frames();
        let dir = scratch("cut");
        let m = ingest(&frames[..4].concat()[..], &dir, "test stream", None).unwrap();
        assert_eq!((m.status, m.records, m.lost.len()), (RunStatus::Interrupted, 3, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
