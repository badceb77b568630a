//! Which (probe set, sample) pairs a run holds: the device skips them when a
//! run resumes, the host refuses duplicates while ingesting and reports count
//! them. Both sides need the same set, so it lives here.

use crate::protocol::ProbeSet;

/// A set of (probe set, sample) keys: which records or failures a run holds.
///
/// A hash set of the pairs themselves, even with FxHash, was a third of the
/// host's ingest time, nearly all cache misses: a million keys take a 19 MB
/// table, one random slot per record. Samples of a probe set arrive mostly
/// in order, so this keeps one bit per sample in 64-sample words: a million
/// consecutive samples share 16 k words (0.5 MB of table) and 64 records in
/// a row hit the same one. Scattered samples cost a word each, twice a
/// pair's size. FxHash, not SipHash: the keys come from our own device, so
/// resistance to chosen keys buys nothing.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Bit `sample % 64` of the word at `(set, sample / 64)`.
    words: rustc_hash::FxHashMap<(ProbeSet, u32), u64>,
    len: usize,
}

impl Keys {
    /// Whether the key is new.
    pub fn insert(&mut self, (set, sample): (ProbeSet, u32)) -> bool {
        let word = self.words.entry((set, sample / 64)).or_default();
        let bit = 1 << (sample % 64);
        let new = *word & bit == 0;
        *word |= bit;
        self.len += usize::from(new);
        new
    }

    pub fn contains(&self, &(set, sample): &(ProbeSet, u32)) -> bool {
        self.words.get(&(set, sample / 64)).is_some_and(|word| word >> (sample % 64) & 1 == 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ProbeSet, u32)> + '_ {
        self.words.iter().flat_map(|(&(set, w), &word)| (0..64).filter(move |i| word >> i & 1 == 1).map(move |i| (set, w * 64 + i)))
    }
}

impl FromIterator<(ProbeSet, u32)> for Keys {
    fn from_iter<I: IntoIterator<Item = (ProbeSet, u32)>>(keys: I) -> Self {
        let mut set = Keys::default();
        for key in keys {
            set.insert(key);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_behave_as_a_set_of_pairs() {
        let sets = [ProbeSet::Clean, ProbeSet::Corruption { corruption: 3, severity: 2 }, ProbeSet::MixedRand];
        let samples = [0, 1, 63, 64, 65, 127, 128, 1_000_003, u32::MAX - 1, u32::MAX];
        let mut keys = Keys::default();
        let mut want = std::collections::BTreeSet::new();
        // Every pair twice, in an order that is not sorted.
        for round in 0..2 {
            for &sample in samples.iter().rev() {
                for &set in &sets[..2] {
                    assert_eq!(keys.insert((set, sample)), round == 0, "{set:?} {sample}");
                    want.insert((set, sample));
                }
            }
        }
        assert_eq!(keys.len(), want.len());
        assert!(!keys.is_empty());
        for &sample in &samples {
            assert!(keys.contains(&(ProbeSet::Clean, sample)));
            assert!(!keys.contains(&(ProbeSet::MixedRand, sample)));
        }
        assert!(!keys.contains(&(ProbeSet::Clean, 2)));
        let mut got: Vec<_> = keys.iter().collect();
        got.sort();
        assert!(got.iter().eq(&want));
        assert_eq!(want.into_iter().collect::<Keys>().len(), got.len());
    }
}
