//! What a run evaluates: the model's sidecar metadata and input pipeline,
//! and the plan of probe sets (shifted sets, corruptions, attacks) opened
//! and checked before the first image, with the fingerprint that says two
//! runs saw the same images. Kept apart from the run loop, which only walks
//! a plan.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::args::{RunArgs, SuiteArgs, SYNTH_ATTACK_PER_CLASS, SYNTH_CORRUPTION_PER_CLASS};
use super::ProbeGroup;
use crate::attack::AttackConfig;
use crate::benchmark::{Decision, Mapping, MappingRules};
use crate::corrupt::{CorruptOptions, Corruption, CorruptionMode};
use crate::data::{self, Labels, Source};
use crate::grad::GradModel;
use crate::protocol::{Attack, OodSet, Outputs, Pipeline, ProbeSet, Shard};
use crate::synth::Split;

/// A model's sidecar `<stem>.json`: what the file alone cannot say.
#[derive(Deserialize, Debug, Clone)]
pub struct ModelMeta {
    pub name: Option<String>,
    pub pipeline: Pipeline,
    pub num_classes: Option<u16>,
}

pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

pub(super) fn resolve_pipeline(args: &RunArgs) -> Result<(Pipeline, Option<String>)> {
    let from_file = |p: &Path| -> Result<ModelMeta> {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read pipeline file {}", p.display()))?;
        parse_meta(&text).with_context(|| format!("{} is not a valid model sidecar", p.display()))
    };
    match args.suite.pipeline.as_deref() {
        Some("imagenet") => Ok((Pipeline::imagenet(), None)),
        Some(file) => from_file(Path::new(file)).map(|m| (m.pipeline, m.name)),
        None => {
            let side = sidecar_path(&args.model);
            if !side.exists() {
                bail!(
                    "no input pipeline for {}: expected a sidecar {} (see models/tiny/*.json), \
                     or pass --pipeline imagenet / --pipeline FILE.json. A guessed pipeline silently changes accuracy, so none is assumed",
                    args.model.display(),
                    side.display()
                );
            }
            from_file(&side).map(|m| (m.pipeline, m.name))
        }
    }
}

pub fn parse_meta(text: &str) -> Result<ModelMeta> {
    Ok(serde_json::from_str(text)?)
}

/// One probe set of a run read from its own dataset: its images and how
/// decisions are made on them.
pub(super) struct Probe {
    pub(super) set: ProbeSet,
    pub(super) source: Source,
    pub(super) decision: Decision,
    /// The samples of `source` this run evaluates: all of them, or a shard's.
    pub(super) ids: Vec<u32>,
}

/// Probe sets generated from clean images on the device (corruptions), run
/// together so each clean image is decoded once for all its variants.
pub(super) struct Generated {
    pub(super) ids: Vec<u32>,
    pub(super) cells: Vec<(Corruption, u8)>,
    pub(super) options: CorruptOptions,
    pub(super) mode: CorruptionMode,
}

/// The synthetic split standing in for each shifted set.
fn synth_split(set: ProbeSet) -> Option<Split> {
    Some(match set {
        ProbeSet::Ood(OodSet::Edge) => Split::Edge,
        ProbeSet::Ood(OodSet::Silhouette) => Split::Silhouette,
        ProbeSet::Ood(OodSet::Sketch) => Split::Sketch,
        ProbeSet::Ood(OodSet::Stylized) => Split::Stylized,
        ProbeSet::Ood(OodSet::Rendition) => Split::Rendition,
        ProbeSet::CueConflict => Split::CueConflict,
        ProbeSet::MixedSame => Split::MixedSame,
        ProbeSet::MixedRand => Split::MixedRand,
        ProbeSet::Clean | ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => return None,
    })
}

const SHIFTED: [ProbeSet; 8] = [
    ProbeSet::Ood(OodSet::Edge),
    ProbeSet::Ood(OodSet::Silhouette),
    ProbeSet::Ood(OodSet::Sketch),
    ProbeSet::Ood(OodSet::Stylized),
    ProbeSet::Ood(OodSet::Rendition),
    ProbeSet::CueConflict,
    ProbeSet::MixedSame,
    ProbeSet::MixedRand,
];

/// Where a shifted set lives on disk, in the real datasets' layouts; None when
/// its root was not given.
fn folder_of(args: &SuiteArgs, set: ProbeSet) -> Option<PathBuf> {
    let mvh = |name: &str| args.mvh.as_ref().map(|r| r.join(name));
    match set {
        ProbeSet::Ood(OodSet::Edge) => mvh("edge"),
        ProbeSet::Ood(OodSet::Silhouette) => mvh("silhouette"),
        ProbeSet::Ood(OodSet::Sketch) => mvh("sketch"),
        ProbeSet::Ood(OodSet::Stylized) => mvh("stylized"),
        ProbeSet::CueConflict => mvh("cue-conflict"),
        ProbeSet::Ood(OodSet::Rendition) => args.imagenet_r.clone(),
        ProbeSet::MixedSame => args.bg_challenge.as_ref().map(|r| r.join("mixed_same/val")),
        ProbeSet::MixedRand => args.bg_challenge.as_ref().map(|r| r.join("mixed_rand/val")),
        ProbeSet::Clean | ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => None,
    }
}

/// FGSM and PGD on clean images, through the model's gradient program.
pub(super) struct Attacks {
    pub(super) ids: Vec<u32>,
    pub(super) grad: GradModel,
    pub(super) config: AttackConfig,
}

/// Everything a run will evaluate, opened before the first image.
pub(super) struct Plan {
    pub(super) clean: Source,
    /// The clean samples this run evaluates: all of them, or a shard's.
    pub(super) clean_ids: Vec<u32>,
    pub(super) run_clean: bool,
    pub(super) probes: Vec<Probe>,
    pub(super) generated: Option<Generated>,
    pub(super) corruption_source: String,
    pub(super) corruption_mode: Option<CorruptionMode>,
    pub(super) attacks: Option<Attacks>,
    /// Why the attacks asked for cannot run (no input gradient); empty otherwise.
    pub(super) attacks_unavailable: String,
    /// Of the whole run, taken before sharding, so every shard of one run carries the same.
    pub(super) fingerprint: String,
}

impl Plan {
    pub(super) fn sets(&self) -> Vec<(ProbeSet, usize)> {
        let mut v = Vec::new();
        if self.run_clean {
            v.push((ProbeSet::Clean, self.clean_ids.len()));
        }
        v.extend(self.probes.iter().map(|p| (p.set, p.ids.len())));
        if let Some(g) = &self.generated {
            v.extend(g.cells.iter().map(|&(c, s)| (corruption_set(c, s), g.ids.len())));
        }
        if let Some(a) = &self.attacks {
            v.extend(ATTACKS.iter().map(|&x| (ProbeSet::Adversarial(x), a.ids.len())));
        }
        v
    }

    /// Keeps one shard's samples of every probe set. Corruptions and attacks
    /// are dealt out over their own subsets (not by the clean shard), so each
    /// shard does its share of the costliest work.
    fn keep_shard(&mut self, shard: Shard) {
        self.clean_ids = self.clean.shard_ids(&self.clean_ids, shard);
        for p in &mut self.probes {
            p.ids = p.source.shard_ids(&p.ids, shard);
        }
        if let Some(g) = &mut self.generated {
            g.ids = self.clean.shard_ids(&g.ids, shard);
        }
        if let Some(a) = &mut self.attacks {
            a.ids = self.clean.shard_ids(&a.ids, shard);
        }
    }
}

pub(super) fn corruption_set(c: Corruption, severity: u8) -> ProbeSet {
    ProbeSet::Corruption { corruption: c.index(), severity }
}

pub(super) const ATTACKS: [Attack; 2] = [Attack::Fgsm, Attack::Pgd];

/// Opens every probe set the arguments ask for, before any image runs, so a
/// bad folder or file name fails the run at once rather than half-way.
pub(super) fn open_plan(args: &SuiteArgs, model: &Path, mapping: Mapping, num_classes: usize, outputs: Outputs) -> Result<Plan> {
    let mut probes = Vec::new();
    // ImageNet folders are named by wnid (or by index, as ImageNet-V2's), so
    // a subset of the classes keeps its labels and absent classes are simply
    // absent; any other benchmark labels by sorted folder order, where a
    // missing folder would shift every label, so all must be there.
    let clean_labels = match mapping {
        Mapping::ImageNet => {
            let wnids = &crate::benchmark::imagenet_tables().wnids;
            if num_classes != wnids.len() {
                bail!(
                    "--benchmark imagenet needs a model with {} output classes, this one has {num_classes}; \
                     use --benchmark custom for a model trained on the dataset's own classes",
                    wnids.len()
                );
            }
            Labels { categories: Some(wnids.clone()), index_folders: true, ..Labels::default() }
        }
        Mapping::Identity => Labels { expected: Some(num_classes), ..Labels::default() },
    };
    let clean = Source::open_labelled(&args.data, &clean_labels, args.per_class, args.seed)?;
    let clean_classes = clean.classes();
    for set in SHIFTED {
        if !args.wants(set.group()) {
            continue;
        }
        let decision = mapping.decision(set);
        let labels = Labels {
            categories: mapping.categories(set, &clean_classes),
            expected: None,
            numbered: mapping.numbered_folders(set),
            cue_conflict: set == ProbeSet::CueConflict,
            index_folders: false,
        };
        let spec = if args.is_synth() {
            PathBuf::from(format!("synth:{}", synth_split(set).expect("every shifted set has a synthetic split").name()))
        } else {
            match folder_of(args, set) {
                Some(dir) if dir.is_dir() => dir,
                Some(dir) => bail!("{}: no such folder (needed for {})", dir.display(), set.name()),
                None => continue,
            }
        };
        decision.check_model(num_classes, set)?;
        let source = Source::open_labelled(&spec, &labels, args.per_class, args.seed)
            .with_context(|| format!("opening the {} set", set.name()))?;
        probes.push(Probe { set, ids: source.ids(), source, decision });
    }
    let mut generated = None;
    let mut corruption_source = String::new();
    let mut corruption_mode = None;
    if args.wants(ProbeGroup::Corruption) {
        let cells = args.corruption_cells()?;
        if let Some(root) = &args.imagenet_c {
            if let Some(m) = args.corruption_mode {
                bail!("--corruption-mode {} says how corruptions are generated; with --imagenet-c they are read from its files", m.as_str());
            }
            // Labelled as the clean set is: a cell of a subset holds the same
            // class folders, and its labels must be the clean set's.
            let labels = match mapping {
                Mapping::ImageNet => clean_labels.clone(),
                Mapping::Identity => Labels { categories: Some(clean_classes.clone()), ..Labels::default() },
            };
            for &(c, sev) in &cells {
                let dir = root.join(c.name()).join(sev.to_string());
                if !dir.is_dir() {
                    bail!("{}: no such folder; an ImageNet-C tree is <root>/<corruption>/<severity>/<class>/…", dir.display());
                }
                let source = Source::open_labelled(&dir, &labels, args.corruption_per_class, args.seed)?;
                probes.push(Probe { set: corruption_set(c, sev), ids: source.ids(), source, decision: Decision::Identity });
            }
            corruption_source =
                format!("imagenet-c tree {}; the model's whole pipeline applied to its images (the study's procedure)", root.display());
            corruption_mode = Some(CorruptionMode::Files);
        } else {
            let per_class = args.corruption_per_class.or(args.is_synth().then_some(SYNTH_CORRUPTION_PER_CLASS));
            let options = CorruptOptions { frost_dir: args.frost_dir.clone() };
            let mode = args.corruption_mode();
            corruption_source = format!(
                "generated on the device {} (quba-edge corruptions, seeds per sample from run seed {}; frost: {})",
                match mode {
                    CorruptionMode::ImagenetC => "as ImageNet-C's files (resize 256 bilinear, crop 224, corrupt, JPEG q85), then the model's whole pipeline",
                    _ => "from the pipeline's centre crop, fed to the model directly",
                },
                args.seed,
                match &options.frost_dir {
                    Some(d) => format!("photos from {}", d.display()),
                    None => "procedural".into(),
                }
            );
            corruption_mode = Some(mode);
            generated = Some(Generated { ids: clean.stratified_ids(per_class, args.seed), cells, options, mode });
        }
    }
    let mut attacks_unavailable = String::new();
    let attacks = if args.wants(ProbeGroup::Adversarial) {
        // Built before any image. A model we cannot differentiate (an op
        // without a gradient rule, a shape we cannot infer) loses only this
        // dimension: the other eight are still measured, and the reason,
        // which names the node, travels in the header to the report.
        match GradModel::load_for(model, args.batch, outputs) {
            Ok(grad) => {
                let per_class = args.attack_per_class.or(args.is_synth().then_some(SYNTH_ATTACK_PER_CLASS));
                Some(Attacks { ids: clean.stratified_ids(per_class, args.seed), grad, config: AttackConfig::protocol(args.adversarial_mode) })
            }
            Err(e) => {
                attacks_unavailable = format!("{e:#}");
                eprintln!("warning: no adversarial attacks, the other probes run: {attacks_unavailable}");
                None
            }
        }
    } else {
        None
    };
    let clean_ids = clean.ids();
    let mut plan = Plan {
        clean,
        clean_ids,
        run_clean: args.wants(ProbeGroup::Clean),
        probes,
        generated,
        corruption_source,
        corruption_mode,
        attacks,
        attacks_unavailable,
        fingerprint: String::new(),
    };
    if plan.sets().is_empty() {
        bail!("no probe set to run: --probes {:?} selects none that the benchmark provides", args.probes);
    }
    plan.fingerprint = fingerprint(&plan);
    if let Some(shard) = args.shard {
        plan.keep_shard(shard);
    }
    Ok(plan)
}

/// Same fingerprint ⇒ same images of every set in the same order.
fn fingerprint(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plan.clean.fingerprint().as_bytes());
    for p in &plan.probes {
        h.update(p.set.name().as_bytes());
        h.update([0]);
        h.update(p.source.fingerprint().as_bytes());
    }
    // The clean images the costly probes reuse; without the attacks' two
    // runs could match here and still have attacked different images.
    let subsets = [plan.generated.as_ref().map(|g| &g.ids), plan.attacks.as_ref().map(|a| &a.ids)];
    for (tag, ids) in subsets.iter().enumerate().filter_map(|(i, ids)| Some((i as u8, (*ids)?))) {
        h.update([tag]);
        for id in ids {
            h.update(id.to_le_bytes());
        }
    }
    data::hex(&h.finalize())
}
