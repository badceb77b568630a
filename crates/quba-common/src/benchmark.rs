//! What a benchmark is, beyond its clean images: which label space each probe
//! set's dataset uses and how a model's class vector becomes a decision in
//! it. The metric code never asks which benchmark it is looking at; it sees
//! decisions already made here (on the device, so a record stays small).
//!
//! Two mappings exist:
//! - [`Mapping::ImageNet`]: a 1000-class ImageNet model on the real datasets
//!   of docs/protocol.md (model-vs-human 16 categories by the mean of member-class
//!   probabilities, ImageNet-R by restricting to its 200 classes, ImageNet-9
//!   through `in_to_in9.json`). The tables are the study's, embedded from
//!   `data/reference/` so a board needs no extra file.
//! - [`Mapping::Identity`]: the model's classes are every dataset's classes
//!   (the synthetic benchmark, a private dataset).

use std::sync::OnceLock;

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::protocol::{OodSet, ProbeSet};

/// `Record::prediction` of a model whose top class lies outside the dataset's
/// label space (an ImageNet class that `in_to_in9.json` maps to -1): wrong by
/// construction, as in the study.
pub const NO_CLASS: u16 = u16::MAX;

const WNIDS: &str = include_str!("../../../data/reference/imagenet1k_wnids.txt");
const SIXTEEN: &str = include_str!("../../../data/reference/sixteen_class_mapping.json");
const IMAGENET_R: &str = include_str!("../../../data/reference/imagenet_r_wnids.txt");
const IN_TO_IN9: &str = include_str!("../../../data/reference/in_to_in9.json");

/// The study's mapping tables, parsed once.
pub struct ImageNetTables {
    pub wnids: Vec<String>,
    /// The 16 model-vs-human categories, sorted (= folder order).
    pub categories: Vec<String>,
    /// ImageNet class indices of each category, same order as `categories`.
    pub members: Vec<Vec<u16>>,
    /// ImageNet-R's 200 wnids, sorted (= folder order).
    pub imagenet_r_wnids: Vec<String>,
    /// ImageNet class index of each ImageNet-R class, same order.
    pub imagenet_r_indices: Vec<u16>,
    /// ImageNet class index → ImageNet-9 class, -1 outside ImageNet-9.
    pub in_to_in9: Vec<i16>,
}

pub const IN9_CLASSES: usize = 9;

pub fn imagenet_tables() -> &'static ImageNetTables {
    static T: OnceLock<ImageNetTables> = OnceLock::new();
    T.get_or_init(|| parse_tables().expect("embedded data/reference tables are valid (checked by tests)"))
}

fn parse_tables() -> Result<ImageNetTables> {
    let wnids: Vec<String> = WNIDS.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if wnids.len() != 1000 {
        bail!("imagenet1k_wnids.txt has {} lines, expected 1000", wnids.len());
    }
    #[derive(Deserialize)]
    struct Sixteen {
        categories: Vec<String>,
        imagenet_indices: std::collections::BTreeMap<String, Vec<u16>>,
    }
    let s: Sixteen = serde_json::from_str(SIXTEEN)?;
    let members = s
        .categories
        .iter()
        .map(|c| s.imagenet_indices.get(c).cloned().ok_or_else(|| anyhow::anyhow!("no indices for category {c}")))
        .collect::<Result<Vec<_>>>()?;
    let mut imagenet_r_wnids: Vec<String> =
        IMAGENET_R.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    imagenet_r_wnids.sort();
    let imagenet_r_indices = imagenet_r_wnids
        .iter()
        .map(|w| wnids.iter().position(|x| x == w).map(|i| i as u16).ok_or_else(|| anyhow::anyhow!("{w} is no ImageNet wnid")))
        .collect::<Result<Vec<_>>>()?;
    let map: std::collections::BTreeMap<String, i16> = serde_json::from_str(IN_TO_IN9)?;
    let mut in_to_in9 = vec![-1i16; 1000];
    for (k, v) in map {
        let i: usize = k.parse()?;
        *in_to_in9.get_mut(i).ok_or_else(|| anyhow::anyhow!("in_to_in9 key {i} ≥ 1000"))? = v;
    }
    Ok(ImageNetTables { wnids, categories: s.categories, members, imagenet_r_wnids, imagenet_r_indices, in_to_in9 })
}

/// The synthetic benchmark's shape classes, sorted so the index equals the ImageFolder label. No name
/// contains `-` or a digit, so cue-conflict file names parse unambiguously.
pub const SYNTH_CLASSES: [&str; 16] = [
    "arrow",
    "bowtie",
    "crescent",
    "cross",
    "diamond",
    "disc",
    "heart",
    "hexagon",
    "house",
    "lshape",
    "ring",
    "square",
    "star",
    "trapezoid",
    "triangle",
    "tshape",
];

pub use crate::protocol::Mapping;

/// What a [`Mapping`] means for each probe set: how a class vector becomes a
/// decision, and which label folders a dataset must have. (A trait because
/// the enum travels in the run header, in the `quba-wire` crate.)
pub trait MappingRules: Copy {
    fn decision(self, set: ProbeSet) -> Decision;
    fn categories(self, set: ProbeSet, clean_classes: &[String]) -> Option<Vec<String>>;
    fn numbered_folders(self, set: ProbeSet) -> Option<usize>;
}

impl MappingRules for Mapping {
    fn decision(self, set: ProbeSet) -> Decision {
        match self {
            Mapping::Identity => Decision::Identity,
            Mapping::ImageNet => match set {
                ProbeSet::Ood(OodSet::Rendition) => Decision::Restrict(&imagenet_tables().imagenet_r_indices),
                ProbeSet::Ood(_) | ProbeSet::CueConflict => Decision::MeanOfMembers(&imagenet_tables().members),
                ProbeSet::MixedSame | ProbeSet::MixedRand => Decision::Lookup(&imagenet_tables().in_to_in9, IN9_CLASSES),
                ProbeSet::Clean | ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => Decision::Identity,
            },
        }
    }

    /// Folder names a dataset of `set` must use, in label order, where the
    /// mapping fixes them; `None` means "the folders in sorted order".
    fn categories(self, set: ProbeSet, clean_classes: &[String]) -> Option<Vec<String>> {
        match (self, self.decision(set)) {
            (Mapping::Identity, _) => Some(clean_classes.to_vec()),
            (_, Decision::MeanOfMembers(_)) => Some(imagenet_tables().categories.clone()),
            (_, Decision::Restrict(_)) => Some(imagenet_tables().imagenet_r_wnids.clone()),
            // ImageNet-9 folder names vary between releases (`00_dog`, `0_dog`);
            // the study takes the nine folders in sorted order.
            (_, Decision::Lookup(..)) => None,
            (_, Decision::Identity) => Some(clean_classes.to_vec()),
        }
    }

    /// Where a dataset of `set` names its folders `<n>_<name>` and the
    /// number n (below the returned count) is the label: ImageNet-9, whose
    /// releases spell the names differently (`00_dog`, `0_dog`) but always
    /// number them, so a subset of its nine folders keeps its labels.
    fn numbered_folders(self, set: ProbeSet) -> Option<usize> {
        match self.decision(set) {
            Decision::Lookup(_, k) => Some(k),
            _ => None,
        }
    }
}

/// A model's decision in a dataset's label space.
#[derive(Clone, Copy, Debug)]
pub enum Decision {
    /// The dataset's classes are the model's.
    Identity,
    /// Category score = mean of the member classes' probabilities (not max,
    /// not sum: the study's and model-vs-human's rule), then argmax.
    MeanOfMembers(&'static [Vec<u16>]),
    /// Only these classes' logits compete (ImageNet-R); the label is the
    /// position in the list.
    Restrict(&'static [u16]),
    /// Model class → dataset class, -1 = none; the top model class decides.
    Lookup(&'static [i16], usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decided {
    /// Dataset class, or [`NO_CLASS`].
    pub prediction: u16,
    /// Score of the predicted dataset class.
    pub confidence: f32,
    /// Score of the true dataset class.
    pub p_true: f32,
}

impl Decision {
    /// Number of dataset classes, given the model's.
    pub fn classes(&self, model_classes: usize) -> usize {
        match self {
            Decision::Identity => model_classes,
            Decision::MeanOfMembers(m) => m.len(),
            Decision::Restrict(r) => r.len(),
            Decision::Lookup(_, k) => *k,
        }
    }

    /// Checks once per run that the model's class vector fits the mapping.
    pub fn check_model(&self, model_classes: usize, set: ProbeSet) -> Result<()> {
        let need = match self {
            Decision::Identity => return Ok(()),
            Decision::MeanOfMembers(m) => m.iter().flatten().map(|&i| i as usize + 1).max().unwrap_or(0),
            Decision::Restrict(r) => r.iter().map(|&i| i as usize + 1).max().unwrap_or(0),
            Decision::Lookup(t, _) => t.len(),
        };
        if model_classes < need {
            bail!(
                "{}: the ImageNet mapping needs a model with 1000 output classes, this one has {model_classes}; \
                 use --benchmark custom (identity mapping) for a model trained on the dataset's own classes",
                set.name()
            );
        }
        Ok(())
    }

    /// Maps softmax probabilities `probs` (model classes) to a decision for a
    /// sample of dataset class `label`; `scores` receives the dataset-class
    /// scores (mean probabilities, renormalised restricted probabilities, or
    /// summed probabilities per ImageNet-9 class).
    pub fn decide(&self, probs: &[f32], label: u16, scores: &mut Vec<f32>) -> Decided {
        scores.clear();
        let pick = |scores: &[f32]| decided(scores, crate::metrics::argmax(scores), label);
        match self {
            Decision::Identity => {
                scores.extend_from_slice(probs);
                pick(scores)
            }
            Decision::MeanOfMembers(members) => {
                // Sum in f64 so the mean does not depend on member order.
                scores.extend(
                    members
                        .iter()
                        .map(|m| (m.iter().map(|&i| probs[i as usize] as f64).sum::<f64>() / m.len() as f64) as f32),
                );
                // model-vs-human ranks categories with np.flip(np.argsort(…)):
                // of tied top scores (a saturated softmax whose top class is
                // in no category leaves all 16 at 0) the *last* one is its
                // response, not argmax's first.
                decided(scores, argmax_last(scores), label)
            }
            Decision::Restrict(classes) => {
                let total: f64 = classes.iter().map(|&i| probs[i as usize] as f64).sum();
                // Softmax is monotone, so argmax over restricted probabilities is
                // argmax over restricted logits; renormalising makes the score the
                // softmax over those logits alone.
                scores.extend(classes.iter().map(|&i| (probs[i as usize] as f64 / total) as f32));
                pick(scores)
            }
            Decision::Lookup(table, k) => {
                scores.resize(*k, 0.0);
                for (i, &p) in probs.iter().enumerate() {
                    if let Some(&c) = table.get(i).filter(|&&c| c >= 0) {
                        scores[c as usize] += p;
                    }
                }
                let top = crate::metrics::argmax(probs);
                let mapped = table.get(top).copied().unwrap_or(-1);
                let p_true = scores.get(label as usize).copied().unwrap_or(0.0);
                if mapped < 0 {
                    Decided { prediction: NO_CLASS, confidence: probs[top], p_true }
                } else {
                    Decided { prediction: mapped as u16, confidence: probs[top], p_true }
                }
            }
        }
    }
}

/// Dataset class `p` with its score and the true class's.
fn decided(scores: &[f32], p: usize, label: u16) -> Decided {
    Decided { prediction: p as u16, confidence: scores[p], p_true: scores.get(label as usize).copied().unwrap_or(0.0) }
}

/// Index of the largest value, the last one on ties (see `MeanOfMembers`).
fn argmax_last(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in p.iter().enumerate() {
        if x >= p[best] {
            best = i;
        }
    }
    best
}

impl Decision {
    /// The decision from the model's logits, as the study makes it where it
    /// differs from `decide`: ImageNet-R keeps only the logits of its 200
    /// classes and takes their argmax. From probabilities that argmax is the
    /// same until the softmax underflows all 200 to 0 (a top class ahead by
    /// more than about 100 logits, as a saturated int8 model's can be); then
    /// only the logits still tell them apart. `probs` is softmax(`logits`).
    pub fn decide_logits(&self, logits: &[f32], probs: &[f32], label: u16, scores: &mut Vec<f32>) -> Decided {
        match self {
            Decision::Restrict(classes) if !self.decides_from(probs) => {
                scores.clear();
                scores.extend(classes.iter().map(|&i| logits[i as usize]));
                crate::metrics::softmax_in_place(scores);
                decided(scores, crate::metrics::argmax(scores), label)
            }
            _ => self.decide(probs, label, scores),
        }
    }

    /// Whether `probs` alone still hold the decision: not for ImageNet-R
    /// when its 200 classes' probabilities all underflowed to 0. The host,
    /// which stores probabilities only, keeps the device's decision then.
    pub fn decides_from(&self, probs: &[f32]) -> bool {
        match self {
            Decision::Restrict(classes) => classes.iter().any(|&i| probs[i as usize] > 0.0),
            _ => true,
        }
    }
}

/// Splits a model-vs-human cue-conflict file name `…<shape><n>-<texture><m>.<ext>`
/// (e.g. `airplane1-bicycle2.png`, `0007_dog10-bird2.png`) into the shape and
/// texture category names.
pub fn parse_cue_conflict(file_name: &str) -> Option<(&str, &str)> {
    let stem = file_name.rsplit_once('.').map(|(s, _)| s).unwrap_or(file_name);
    let (left, right) = stem.rsplit_once('-')?;
    let left = left.rsplit('_').next()?;
    let strip = |s: &str| -> Option<usize> {
        let letters = s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        (letters > 0 && letters < s.len()).then_some(letters)
    };
    let (l, r) = (strip(left)?, strip(right)?);
    Some((&left[..l], &right[..r]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tied_category_scores_go_to_the_last_category_as_in_model_vs_human() {
        // np.flip(np.argsort(x)) of 16 equal float32 scores starts with 15, of
        // [0, …, 0.5 at 3, …, 0.5 at 9, …] with 9 (numpy 2.4, checked).
        let d = Mapping::ImageNet.decision(ProbeSet::CueConflict);
        let members = &imagenet_tables().members;
        let mut probs = vec![0f32; 1000];
        // A class in no category takes all the mass: every category mean is 0.
        let outside = (0..1000u16).find(|i| !members.iter().flatten().any(|m| m == i)).expect("a class outside the 16");
        probs[outside as usize] = 1.0;
        let mut scores = Vec::new();
        assert_eq!(d.decide(&probs, 0, &mut scores).prediction, 15);
        // Categories 3 and 9 tied (every member 2^-10: the means are exact).
        probs[outside as usize] = 0.0;
        for &m in members[3].iter().chain(&members[9]) {
            probs[m as usize] = 1.0 / 1024.0;
        }
        assert_eq!(d.decide(&probs, 0, &mut scores).prediction, 9);
        assert_eq!(scores[3], scores[9]);
    }

    #[test]
    fn imagenet_r_decides_on_logits_where_the_softmax_underflows() {
        let d = Mapping::ImageNet.decision(ProbeSet::Ood(OodSet::Rendition));
        let Decision::Restrict(r) = d else { panic!("ImageNet-R restricts") };
        let outside = (0..1000u16).find(|i| !r.contains(i)).expect("a class outside the 200");
        // The top class 200 logits ahead of every ImageNet-R class: in f32
        // their probabilities are all exactly 0.
        let mut logits = vec![0f32; 1000];
        logits[outside as usize] = 200.0;
        logits[r[17] as usize] = 3.0;
        let mut probs = logits.clone();
        crate::metrics::softmax_in_place(&mut probs);
        assert!(r.iter().all(|&i| probs[i as usize] == 0.0));
        assert!(!d.decides_from(&probs));
        let mut scores = Vec::new();
        let got = d.decide_logits(&logits, &probs, 17, &mut scores);
        assert_eq!(got.prediction, 17, "the argmax of the 200 logits");
        // Softmax over the 200 logits alone: e³ / (e³ + 199).
        let want = 3f64.exp() / (3f64.exp() + 199.0);
        assert!((got.p_true as f64 - want).abs() < 1e-6, "{got:?} vs {want}");
        // Where the probabilities still decide, the logits give the same.
        logits[outside as usize] = 5.0;
        let mut probs = logits.clone();
        crate::metrics::softmax_in_place(&mut probs);
        assert!(d.decides_from(&probs));
        assert_eq!(d.decide_logits(&logits, &probs, 17, &mut scores), d.decide(&probs, 17, &mut Vec::new()));
    }

    #[test]
    fn embedded_tables_parse_and_match_the_protocol() {
        let t = imagenet_tables();
        assert_eq!(t.categories.len(), 16);
        let mut sorted = t.categories.clone();
        sorted.sort();
        assert_eq!(sorted, t.categories, "categories must be in folder (sorted) order");
        assert_eq!(t.members.iter().map(Vec::len).sum::<usize>(), 207, "docs/protocol.md: 207 indices in all");
        assert_eq!(t.imagenet_r_indices.len(), 200);
        assert!(t.imagenet_r_indices.windows(2).all(|w| w[0] < w[1]), "sorted wnids ⇒ increasing ImageNet indices");
        assert_eq!((0..9).filter(|k| t.in_to_in9.contains(k)).count(), 9, "every ImageNet-9 class has members");
        assert!(t.in_to_in9.iter().all(|&c| (-1..9).contains(&c)));
        assert_eq!(t.wnids[0], "n01440764");
    }

    #[test]
    fn mean_not_max_decides_a_category() {
        // bear has 4 members; airplane 1 (index 404). One bear class at 0.3,
        // airplane at 0.2: max would say bear (0.3 > 0.2), mean says airplane
        // (0.2 > 0.075).
        let mut probs = vec![0.0f32; 1000];
        probs[294] = 0.3;
        probs[404] = 0.2;
        let mut s = Vec::new();
        let d = Mapping::ImageNet.decision(ProbeSet::Ood(OodSet::Edge)).decide(&probs, 0, &mut s);
        assert_eq!(d.prediction, 0, "airplane is category 0");
        assert!((d.confidence - 0.2).abs() < 1e-7);
        assert!((s[1] - 0.075).abs() < 1e-7, "bear = mean of its 4 members");
    }

    #[test]
    fn in9_unmapped_top_class_is_wrong() {
        let t = imagenet_tables();
        let unmapped = t.in_to_in9.iter().position(|&c| c < 0).unwrap();
        let mut probs = vec![0.0f32; 1000];
        probs[unmapped] = 0.9;
        let mut s = Vec::new();
        let d = Mapping::ImageNet.decision(ProbeSet::MixedRand).decide(&probs, 0, &mut s);
        assert_eq!(d.prediction, NO_CLASS);
    }

    #[test]
    fn restriction_ignores_classes_outside_imagenet_r() {
        let t = imagenet_tables();
        let outside = (0..1000u16).find(|i| !t.imagenet_r_indices.contains(i)).unwrap();
        let mut probs = vec![0.0f32; 1000];
        probs[outside as usize] = 0.9;
        probs[t.imagenet_r_indices[7] as usize] = 0.05;
        probs[t.imagenet_r_indices[3] as usize] = 0.05 - 1e-4;
        let mut s = Vec::new();
        let d = Mapping::ImageNet.decision(ProbeSet::Ood(OodSet::Rendition)).decide(&probs, 7, &mut s);
        assert_eq!(d.prediction, 7);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn cue_conflict_names() {
        assert_eq!(parse_cue_conflict("airplane1-bicycle2.png"), Some(("airplane", "bicycle")));
        assert_eq!(parse_cue_conflict("0007_dog10-bird2.png"), Some(("dog", "bird")));
        assert_eq!(parse_cue_conflict("dog-bird2.png"), None, "the shape needs its instance number");
        assert_eq!(parse_cue_conflict("dog10_bird2.png"), None, "no '-' between shape and texture");
        assert_eq!(parse_cue_conflict("10-2.png"), None);
    }

    #[test]
    fn a_small_model_cannot_use_the_imagenet_mapping() {
        let e = Mapping::ImageNet.decision(ProbeSet::CueConflict).check_model(16, ProbeSet::CueConflict).unwrap_err();
        assert!(format!("{e}").contains("1000 output classes"), "{e}");
        Mapping::Identity.decision(ProbeSet::CueConflict).check_model(16, ProbeSet::CueConflict).unwrap();
    }
}
