//! The paired bootstrap behind every interval quba reports.
//!
//! Probe sets that show the same images form one *family*: the clean set, its
//! 75 corruption cells and its two attacks (the same clean images, corrupted
//! or attacked); mixed_same and mixed_rand (the same foregrounds on other
//! backgrounds); every other set is a family of its own. A resample draws
//! sample ids per family, with replacement, and every set of the family takes
//! the drawn ids it holds. So an image's clean and corrupted outcomes stay
//! together, as the dimensions that divide one by the other pair them.
//!
//! Resampling each set on its own instead treats 75 cells of the same images
//! as 75 independent samples, and ignores that an image the model gets wrong
//! clean it mostly gets wrong corrupted too: with 5× more clean images than
//! corrupted ones that made the corruption interval about half as wide as it
//! should be. `resample::coverage` (a test) checks the intervals
//! against a simulation whose truth is known.
//!
//! Draws are `gen_range(0..n as u64)` from one `ChaCha8Rng`, family after
//! family in `ProbeSet` order, so the same seed gives the same resamples on
//! 32-bit boards and on the host.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::quantile_sorted;
use crate::protocol::{ProbeSet, Record};

/// The set whose sample ids a set shares (see the module documentation).
pub fn family(set: ProbeSet) -> ProbeSet {
    match set {
        ProbeSet::Corruption { .. } | ProbeSet::Adversarial(_) => ProbeSet::Clean,
        ProbeSet::MixedRand => ProbeSet::MixedSame,
        s => s,
    }
}

/// Marks a universe entry a set does not hold.
const ABSENT: u32 = u32::MAX;

/// The sample ids of a run's records, per family, and where each set holds
/// each of them.
pub struct Universe {
    /// Per family, in `ProbeSet` order: its key and how many ids it has.
    families: Vec<(ProbeSet, usize)>,
    /// Per set: its family's slot, and per universe entry the position of
    /// that sample among the set's records (in record order) or `ABSENT`.
    sets: HashMap<ProbeSet, (usize, Vec<u32>)>,
}

/// How many times one resample holds each universe entry, per family.
/// Counts rather than a list of draws: a set then visits only its own
/// records, not every draw of its family (75 corruption cells over a
/// subset would each scan all the clean draws).
#[derive(Clone, Debug, PartialEq)]
pub struct Draw(Vec<Vec<u32>>);

/// Where one set's records sit in the draws of its family.
pub struct Positions {
    family: usize,
    /// Per universe entry, the record's position or `ABSENT`.
    at: Vec<u32>,
    /// Per position, its universe entry.
    entries: Vec<u32>,
}

impl Universe {
    /// Entries of a family come in record order, the family's own set's
    /// records first: the whole draw then visits the clean records in the
    /// order they were stored, so a point value summed over it is the same
    /// float as one summed over the records.
    pub fn new(records: &[&Record]) -> Universe {
        let mut ids: BTreeMap<ProbeSet, (HashMap<u32, u32>, usize)> = BTreeMap::new();
        for head in [true, false] {
            for r in records.iter().filter(|r| (family(r.set) == r.set) == head) {
                let (index, n) = ids.entry(family(r.set)).or_default();
                index.entry(r.sample).or_insert_with(|| {
                    *n += 1;
                    (*n - 1) as u32
                });
            }
        }
        let slot: HashMap<ProbeSet, usize> = ids.keys().enumerate().map(|(i, f)| (*f, i)).collect();
        let mut sets: HashMap<ProbeSet, (usize, Vec<u32>)> = HashMap::new();
        let mut count: HashMap<ProbeSet, u32> = HashMap::new();
        for r in records {
            let f = family(r.set);
            let (index, n) = &ids[&f];
            let (_, at) = sets.entry(r.set).or_insert_with(|| (slot[&f], vec![ABSENT; *n]));
            let c = count.entry(r.set).or_default();
            at[index[&r.sample] as usize] = *c;
            *c += 1;
        }
        Universe { families: ids.iter().map(|(f, (_, n))| (*f, *n)).collect(), sets }
    }

    /// Where `set`'s records sit; a set without records holds nothing.
    pub fn positions(&self, set: ProbeSet) -> Positions {
        match self.sets.get(&set) {
            Some((family, at)) => {
                let mut entries = vec![0; at.iter().filter(|&&p| p != ABSENT).count()];
                for (u, &p) in at.iter().enumerate().filter(|(_, &p)| p != ABSENT) {
                    entries[p as usize] = u as u32;
                }
                Positions { family: *family, at: at.clone(), entries }
            }
            None => Positions { family: usize::MAX, at: Vec::new(), entries: Vec::new() },
        }
    }

    /// Every entry once: the sample the point values are computed on.
    pub fn whole(&self) -> Draw {
        Draw(self.families.iter().map(|&(_, n)| vec![1; n]).collect())
    }

    /// Replaces `draw` by a fresh resample: n draws with replacement from
    /// each family of n entries.
    fn redraw(&self, rng: &mut ChaCha8Rng, draw: &mut Draw) {
        for (counts, &(_, n)) in draw.0.iter_mut().zip(&self.families) {
            counts.fill(0);
            for _ in 0..n {
                counts[rng.gen_range(0..n as u64) as usize] += 1;
            }
        }
    }

    /// `reps` resamples from `seed`, each handed to `f`.
    pub fn resamples(&self, reps: usize, seed: u64, mut f: impl FnMut(&Draw)) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = self.whole();
        for _ in 0..reps {
            self.redraw(&mut rng, &mut draw);
            f(&draw);
        }
    }
}

impl Positions {
    /// The set's records in `draw`, each with how often it was drawn (0
    /// included), in record order.
    pub fn counted<'a>(&'a self, draw: &'a Draw) -> impl Iterator<Item = (usize, u32)> + 'a {
        let counts: &[u32] = draw.0.get(self.family).map_or(&[], Vec::as_slice);
        self.entries.iter().enumerate().map(move |(p, &u)| (p, counts[u as usize]))
    }

    /// The positions of the set's records in `draw`, a record drawn twice
    /// twice, in record order.
    pub fn drawn<'a>(&'a self, draw: &'a Draw) -> impl Iterator<Item = usize> + 'a {
        self.counted(draw).flat_map(|(p, c)| std::iter::repeat(p).take(c as usize))
    }

    /// The position of universe entry `u` among the set's records, if it has it.
    pub fn lookup(&self, u: u32) -> Option<usize> {
        self.at.get(u as usize).copied().filter(|&p| p != ABSENT).map(|p| p as usize)
    }

    /// The universe entry of the record at `position`: the key to the same
    /// image in the family's other sets.
    pub fn entry(&self, position: usize) -> u32 {
        self.entries[position]
    }
}

/// The percentile 95% interval (numpy's linear interpolation) of a
/// statistic's resampled values.
///
/// Not bias-corrected: ECE and ACE at a few hundred clean images are biased
/// upward by about their own spread, every resample lands above the point,
/// and Efron's correction then collapses the interval onto the lowest
/// resamples (tried: zoo calibration intervals of width 0.002 that excluded
/// their point value). Their under-coverage is measured in `coverage`.
///
/// A resample where the statistic is undefined (no correct clean image
/// drawn) is dropped; when more than a tenth are, the rest would describe
/// another question, so there is no interval.
pub fn interval(mut values: Vec<f64>, reps: usize) -> Option<(f64, f64)> {
    values.retain(|v| v.is_finite());
    if reps == 0 || values.len() * 10 < reps * 9 {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some((quantile_sorted(&values, 0.025), quantile_sorted(&values, 0.975)))
}

#[cfg(test)]
mod coverage;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Attack;

    fn rec(set: ProbeSet, sample: u32) -> Record {
        Record { set, sample, label: 0, prediction: 0, confidence: 1.0, p_true: 1.0, cue: None, probs: None }
    }

    #[test]
    fn sets_of_one_family_draw_the_same_images() {
        let c1 = ProbeSet::Corruption { corruption: 0, severity: 1 };
        let records = [
            rec(ProbeSet::Clean, 5),
            rec(c1, 7),
            rec(ProbeSet::Clean, 7),
            rec(ProbeSet::Clean, 9),
            rec(c1, 5),
            rec(ProbeSet::Adversarial(Attack::Pgd), 9),
            rec(ProbeSet::MixedRand, 3),
            rec(ProbeSet::MixedSame, 3),
            rec(ProbeSet::MixedSame, 4),
        ];
        let refs: Vec<&Record> = records.iter().collect();
        let u = Universe::new(&refs);
        let clean = u.positions(ProbeSet::Clean);
        let cell = u.positions(c1);
        let pgd = u.positions(ProbeSet::Adversarial(Attack::Pgd));
        // The whole draw visits the clean records in stored order.
        assert_eq!(clean.drawn(&u.whole()).collect::<Vec<_>>(), [0, 1, 2]);
        let mut seen = 0;
        u.resamples(50, 3, |d| {
            let ids = |p: &Positions, of: &[u32]| {
                let mut v = p.drawn(d).map(|i| of[i]).collect::<Vec<_>>();
                v.sort_unstable();
                v
            };
            let clean_ids = ids(&clean, &[5, 7, 9]);
            // The cell holds 7 then 5; it takes exactly the drawn clean ids it has.
            let cell_ids = ids(&cell, &[7, 5]);
            let want: Vec<u32> = clean_ids.iter().copied().filter(|&i| i != 9).collect();
            assert_eq!(cell_ids, want);
            let pgd_ids = ids(&pgd, &[9]);
            assert_eq!(pgd_ids.len(), clean_ids.iter().filter(|&&i| i == 9).count());
            seen += clean_ids.len();
        });
        assert_eq!(seen, 150, "each resample draws as many clean images as there are");
        let rand = u.positions(ProbeSet::MixedRand);
        let same = u.positions(ProbeSet::MixedSame);
        u.resamples(20, 4, |d| {
            let same_ids: Vec<u32> = same.drawn(d).map(|i| [3, 4][i]).collect();
            let rand_n = rand.drawn(d).count();
            assert_eq!(rand_n, same_ids.iter().filter(|&&i| i == 3).count());
        });
        assert_eq!(u.positions(ProbeSet::CueConflict).drawn(&u.whole()).count(), 0);
    }

    #[test]
    fn draws_are_deterministic_and_pinned() {
        let records: Vec<Record> = (0..10).map(|i| rec(ProbeSet::Clean, i)).collect();
        let refs: Vec<&Record> = records.iter().collect();
        let u = Universe::new(&refs);
        let mut first = Vec::new();
        u.resamples(1, 7, |d| first = d.0[0].clone());
        // Pinned so that a change in rand/rand_chacha's stream (which would
        // silently change every published interval) fails here. Recorded
        // from ChaCha8Rng::seed_from_u64(7) with gen_range(0..10u64), which
        // draws [1, 7, 7, 6, 3, 8, 2, 5, 2, 4]; the same on armv7 under
        // qemu, where gen_range(0..10usize) would draw [1, 1, 7, 0, 7, 6, 8,
        // 3, 2, 2] instead.
        assert_eq!(first, [0, 1, 2, 1, 1, 1, 1, 2, 1, 0]);
        let mut again = Vec::new();
        u.resamples(1, 7, |d| again = d.0[0].clone());
        assert_eq!(first, again);
    }

    #[test]
    fn intervals_need_nine_tenths_of_the_resamples() {
        // np.percentile([1,2,3,4], [2.5, 97.5]) = [1.075, 3.925].
        assert_eq!(interval(vec![4.0, 1.0, 3.0, 2.0], 4), Some((1.075, 3.925)));
        assert_eq!(interval(vec![1.0; 9].into_iter().chain([f64::NAN]).collect(), 10), Some((1.0, 1.0)));
        assert_eq!(interval(vec![1.0; 8].into_iter().chain([f64::NAN, f64::INFINITY]).collect(), 10), None);
        assert_eq!(interval(vec![], 0), None);
    }
}
