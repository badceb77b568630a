//! `quba merge`: shard runs (`--shard K/N`) joined back into one run
//! directory that `quba report`, `compare` and `export` read like a run made
//! in one piece.
//!
//! Shards carry the whole run's sample ids, so joining them is a union; what
//! needs care is refusing shards that are not slices of the same run, and
//! writing the records in the order a whole run has them (ascending sample id
//! within each probe set), because the report's floating-point sums and
//! bootstrap resamples follow record order and must come out bit-identical.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::protocol::{DecodeStats, End, FrameEncoder, Header, Message, ProbeSet, Shard};
use crate::report::Run;
use crate::ingest::{Manifest, ManifestFile, MergeInfo, RunStatus, LOG_FILE};

pub struct MergeOptions {
    /// Merge even when shards are missing or did not finish; the result is
    /// marked [`RunStatus::Partial`] and has no End frame.
    pub partial: bool,
    /// Run id of the merged run (default: the shards' common id, else the
    /// first shard's with `-merged`).
    pub run_id: Option<String>,
}

/// What a merge wrote.
pub struct Merged {
    pub manifest: Manifest,
    pub info: MergeInfo,
}

/// Header fields that legitimately differ between the shards of one run.
const PER_SHARD_FIELDS: [&str; 3] = ["run_id", "samples", "shard"];

/// Joins the shard runs in `dirs` into the new run directory `out`.
pub fn merge(dirs: &[PathBuf], out: &Path, opts: &MergeOptions) -> Result<Merged> {
    if dirs.is_empty() {
        bail!("no shard runs to merge");
    }
    let mut shards: Vec<(Shard, Run)> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let run = Run::load(dir)?;
        let shard = run.header.shard.with_context(|| {
            format!("{}: not a shard run (its header has no shard: it ran without --shard K/N)", dir.display())
        })?;
        shards.push((shard, run));
    }
    let (first_shard, first) = (&shards[0].0, &shards[0].1);
    let reference = comparable(&first.header)?;
    for (shard, run) in &shards[1..] {
        if shard.count != first_shard.count {
            bail!(
                "{}: shard {shard}, but {} is shard {first_shard}: the shards of one run share N",
                run.dir.display(),
                first.dir.display()
            );
        }
        let fields = comparable(&run.header)?;
        let differing: Vec<String> = reference
            .iter()
            .filter(|(k, v)| fields.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} {} (vs {v})", fields.get(k).unwrap_or(&Value::Null)))
            .collect();
        if !differing.is_empty() {
            bail!(
                "{} is not a shard of the same run as {}: {}",
                run.dir.display(),
                first.dir.display(),
                differing.join("; ")
            );
        }
    }

    let n = first_shard.count;
    let mut by_index: BTreeMap<u32, &Run> = BTreeMap::new();
    for (shard, run) in &shards {
        if let Some(other) = by_index.insert(shard.index, run) {
            let twice = same_dir(&other.dir, &run.dir);
            bail!(
                "{} and {} are both shard {shard}{}: each shard goes into a merge once",
                other.dir.display(),
                run.dir.display(),
                if twice { " (the same directory, given twice)" } else { "" }
            );
        }
    }
    let missing: Vec<u32> = (0..n).filter(|k| !by_index.contains_key(k)).collect();
    let unfinished: Vec<u32> = by_index.iter().filter(|(_, r)| !finished(r)).map(|(&k, _)| k).collect();
    if !opts.partial {
        if !missing.is_empty() {
            bail!(
                "shard{} {} of {n} missing (given: {}); run {}, or pass --partial to merge what is there into a run marked partial",
                if missing.len() == 1 { "" } else { "s" },
                list(&missing),
                list(&by_index.keys().copied().collect::<Vec<_>>()),
                if missing.len() == 1 { "it" } else { "them" }
            );
        }
        if let Some(k) = unfinished.first() {
            let r = by_index[k];
            bail!(
                "{}: shard {k}/{n} did not finish ({} records, status {:?}); rerun it, or pass --partial to merge what is there into a run marked partial",
                r.dir.display(),
                r.records.len(),
                r.status
            );
        }
    }

    // Shards of one split never share a sample; if two do, they came from
    // different splits (or were doctored) and a union would count it twice.
    let mut owner: HashMap<(ProbeSet, u32), &Path> = HashMap::new();
    for run in by_index.values() {
        for r in &run.records {
            if let Some(other) = owner.insert((r.set, r.sample), &run.dir) {
                bail!("{} and {} both hold {} sample {}: they are not slices of one split", other.display(), run.dir.display(), r.set.name(), r.sample);
            }
        }
    }

    let runs: Vec<&Run> = by_index.values().copied().collect();
    let complete = missing.is_empty() && unfinished.is_empty();
    let mut header = first.header.clone();
    header.shard = None;
    header.samples = runs.iter().map(|r| r.header.samples).sum();
    header.run_id = opts.run_id.clone().unwrap_or_else(|| {
        if runs.iter().all(|r| r.header.run_id == first.header.run_id) {
            first.header.run_id.clone()
        } else {
            format!("{}-merged", runs[0].header.run_id)
        }
    });
    // A whole run's order: probe sets as the header lists them, samples ascending.
    let position = |set: ProbeSet| header.probes.iter().position(|&p| p == set).unwrap_or(usize::MAX);
    let mut records: Vec<_> = runs.iter().flat_map(|r| &r.records).collect();
    records.sort_by_key(|r| (position(r.set), r.sample));
    let mut failures: Vec<_> = runs.iter().flat_map(|r| &r.failures).collect();
    failures.sort_by_key(|f| (position(f.set), f.sample));
    let end = complete.then(|| merged_end(&runs, &header, records.len(), failures.len()));

    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; merge into a new run directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let log_path = out.join(LOG_FILE);
    let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?);
    let mut enc = FrameEncoder::new();
    let mut put = |m: Message| -> Result<()> { Ok(log.write_all(enc.encode(&m)?)?) };
    put(Message::Header(header.clone()))?;
    for r in &records {
        put(Message::Record((*r).clone()))?;
    }
    for f in &failures {
        put(Message::Failure((*f).clone()))?;
    }
    if let Some(e) = end {
        put(Message::End(e))?;
    }
    log.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let info = MergeInfo {
        shards: n,
        merged: by_index.keys().copied().collect(),
        missing,
        unfinished,
        sources: runs.iter().map(|r| r.dir.display().to_string()).collect(),
    };
    let manifest = Manifest {
        schema: "quba-run/1".into(),
        status: if complete { RunStatus::Complete } else { RunStatus::Partial },
        source: format!("quba merge of {} shard run(s) of {n}", runs.len()),
        header: Some(header),
        records: records.len() as u64,
        failures: failures.len() as u64,
        decode: runs.iter().fold(DecodeStats::default(), |acc, r| add(acc, &r.decode)),
        lost: Vec::new(),
        host_tool_version: env!("CARGO_PKG_VERSION").into(),
        merged: Some(info.clone()),
        launch: None,
    };
    // Last, and atomically: a directory without it is not taken for a run.
    manifest.write(out)?;
    Ok(Merged { manifest, info })
}

/// A header as JSON without the fields that differ from shard to shard; any
/// field added to the header later is compared without being listed here.
fn comparable(h: &Header) -> Result<serde_json::Map<String, Value>> {
    let Value::Object(mut m) = serde_json::to_value(h)? else { bail!("a run header serialises to a JSON object") };
    for k in PER_SHARD_FIELDS {
        m.remove(k);
    }
    Ok(m)
}

fn finished(r: &Run) -> bool {
    r.status == RunStatus::Complete && r.end.is_some()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn list(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// The fleet's account in one device's words: counts add up; load time,
/// elapsed time and memory are the largest shard's, i.e. what the slowest
/// board of the fleet needed. Stages add up per probe group (in the order
/// they first ran), so their images per second is one board's throughput
/// over the whole fleet's work. It repeats the merged run's `header`.
fn merged_end(runs: &[&Run], header: &Header, records: usize, failures: usize) -> End {
    let ends: Vec<&End> = runs.iter().filter_map(|r| r.end.as_ref()).collect();
    let mut end = ends[0].clone();
    *end.header = header.clone();
    end.records = records as u32;
    end.failures = failures as u32;
    end.model_load_ms = ends.iter().map(|e| e.model_load_ms).max().unwrap_or(0);
    end.elapsed_ms = ends.iter().map(|e| e.elapsed_ms).max().unwrap_or(0);
    end.peak_rss_kb = ends.iter().map(|e| e.peak_rss_kb).max().unwrap_or(0);
    end.stages.clear();
    for stage in ends.iter().flat_map(|e| e.stages.iter()) {
        match end.stages.iter_mut().find(|s| s.group == stage.group) {
            Some(s) => {
                s.images += stage.images;
                s.elapsed_us += stage.elapsed_us;
                s.model_us += stage.model_us;
            }
            // At most one stage per group, and the Vec holds every group.
            None => end.stages.push(stage.clone()).expect("one stage per probe group"),
        }
    }
    end
}

fn add(mut a: DecodeStats, b: &DecodeStats) -> DecodeStats {
    a.frames += b.frames;
    a.corrupt_frames += b.corrupt_frames;
    a.bytes_lost += b.bytes_lost;
    a.missing_frames += b.missing_frames;
    a.truncated_tail |= b.truncated_tail;
    a
}
