//! The table an aggregate builds: cells and margins keyed by up to three dimension
//! values, each accumulating sums, per-state report counts and fee observations.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::parallel;
use crate::store::counters::{Additive, KEY_SUM, Sums};

/// The key of a margin along a dimension: "all values".
pub(super) const ALL: u64 = u64::MAX;

/// Dimension values of a cell (unused positions are 0).
pub(super) type Key = [u64; 3];

/// Cells by key. Keys are small integers built by the server, so a fast non-keyed hash
/// (rustc-hash) is safe here and several times cheaper than SipHash.
pub(super) type Cells = FxHashMap<Key, Acc>;

/// No state noted yet.
const NO_STATE: u32 = 0;

/// What one cell accumulates.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Acc {
    pub sums: Sums,
    /// The state every report so far came from (packed code), unless `mixed`.
    state: u32,
    /// Reports from more than one state.
    mixed: bool,
    /// Fee observations: (packed currency, amount) → reports.
    pub fees: FeeCounts,
    /// Of those, the asking analyst's own state's.
    pub own_fees: FeeCounts,
    /// Of the reports, those of the asking analyst's own state, and their record keys'
    /// sum: they neither open a small cell nor change its noise.
    own_reports: u64,
    own_keys: u64,
}

impl Acc {
    fn note_state(&mut self, state: u32) {
        if self.state == NO_STATE {
            self.state = state;
        } else if self.state != state {
            self.mixed = true;
        }
    }

    /// A cell a scan added up: `state` is the one state of its reports, `None` when they
    /// came from several; `own` the asking analyst's state's reports and their record
    /// keys' sum.
    pub(super) fn scanned(sums: Sums, state: Option<u32>, own: (u64, u64)) -> Self {
        Self {
            sums,
            state: state.unwrap_or(NO_STATE),
            mixed: state.is_none(),
            fees: FeeCounts::default(),
            own_fees: FeeCounts::default(),
            own_reports: own.0,
            own_keys: own.1,
        }
    }

    /// Adds what one state's reports add; `own` when they are the asking analyst's.
    pub(super) fn add(&mut self, state: u32, sums: &Sums, own: bool) {
        for (total, add) in self.sums.iter_mut().zip(sums) {
            *total += add;
        }
        if own {
            self.note_own(sums);
        }
        if Additive::Reports.of(sums) > 0 {
            self.note_state(state);
        }
    }

    /// Adds a total over `states` states, `one` of them (for the dominance flag).
    pub(super) fn add_total(&mut self, sums: &Sums, states: usize, one: u32) {
        for (total, add) in self.sums.iter_mut().zip(sums) {
            *total += add;
        }
        match states {
            0 => {}
            1 => self.note_state(one),
            _ => self.mixed = true,
        }
    }

    /// Notes that `sums`, already added, were the asking analyst's state's.
    pub(super) fn note_own(&mut self, sums: &Sums) {
        self.own_reports += Additive::Reports.of(sums);
        self.own_keys = self.own_keys.wrapping_add(sums[KEY_SUM]);
    }

    pub(super) fn merge(&mut self, other: &Self) {
        self.merge_all_but_fees(other);
        self.fees = FeeCounts::sum_of(&[&self.fees, &other.fees]);
        self.own_fees = FeeCounts::sum_of(&[&self.own_fees, &other.own_fees]);
    }

    fn merge_all_but_fees(&mut self, other: &Self) {
        for (total, add) in self.sums.iter_mut().zip(&other.sums) {
            *total += add;
        }
        if other.mixed {
            self.mixed = true;
        } else if other.state != NO_STATE {
            self.note_state(other.state);
        }
        self.own_reports += other.own_reports;
        self.own_keys = self.own_keys.wrapping_add(other.own_keys);
    }

    /// The cell key: the sum of the record keys of the cell's reports, the asking
    /// analyst's own excepted when the cell holds others too, modulo 2^32 (see
    /// `super::perturbation`). A state cannot draw fresh noise for a cell of other
    /// states' reports by adding or retracting reports of its own; a cell of its own
    /// reports only has the noise of all of them (not the fixed noise of an empty sum).
    pub(super) fn cell_key(&self) -> u32 {
        let key = if self.others() == 0 {
            self.sums[KEY_SUM]
        } else {
            self.sums[KEY_SUM].wrapping_sub(self.own_keys)
        };
        // Modulo 2^32 is the truncation.
        #[allow(clippy::cast_possible_truncation)]
        let key = key as u32;
        key
    }

    /// Reports of other states than the asking analyst's.
    pub(super) fn others(&self) -> u64 {
        self.reports().saturating_sub(self.own_reports)
    }

    pub(super) fn reports(&self) -> u64 {
        Additive::Reports.of(&self.sums)
    }

    /// Whether every report in the cell comes from one state (dominance).
    pub(super) fn single_state(&self) -> bool {
        !self.mixed && self.state != NO_STATE
    }
}

/// One distinct fee of a cell: (packed currency, amount), its number of reports, and the
/// low 32 bits of its keyed hash (`RecordKeys::of_value`) where fee quartiles are
/// perturbed, else 0. The hash is worked out once, with the cell's counts; margins carry
/// it over.
pub(super) type FeeCount = ((u32, u64), u64, u32);

/// A cell's fee observations: each distinct (packed currency, amount) with its number
/// of reports, in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct FeeCounts(Vec<FeeCount>);

impl FeeCounts {
    /// Counts `fees`, which come in order (repeats next to each other), each distinct one
    /// with its `hash`.
    pub(super) fn of_sorted(
        fees: impl Iterator<Item = (u32, u64)>,
        hash: impl Fn((u32, u64)) -> u32,
    ) -> Self {
        let mut counts: Vec<FeeCount> = Vec::new();
        for fee in fees {
            match counts.last_mut() {
                Some((last, n, _)) if *last == fee => *n += 1,
                _ => counts.push((fee, 1, hash(fee))),
            }
        }
        Self(counts)
    }

    /// Each distinct fee with its reports, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = ((u32, u64), u64)> + '_ {
        self.0.iter().map(|(fee, n, _)| (*fee, *n))
    }

    /// Each distinct fee with its reports and hash, in order.
    pub(super) fn hashed(&self) -> impl Iterator<Item = FeeCount> + '_ {
        self.0.iter().copied()
    }

    /// The number of distinct fees.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counts of `parts` added up, merged two by two in rounds (a margin over k cells
    /// costs its size times log2(k)).
    pub(super) fn sum_of(parts: &[&Self]) -> Self {
        let mut round: Vec<Vec<FeeCount>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.0.clone())
            .collect();
        while round.len() > 1 {
            let size = round.iter().map(Vec::len).sum();
            let mut pairs = Vec::with_capacity(round.len().div_ceil(2));
            let mut parts = round.into_iter();
            while let Some(a) = parts.next() {
                pairs.push((a, parts.next()));
            }
            // A large margin's merges of a round run over the cores.
            round = parallel::each(
                pairs,
                parallel::threads_for(size, 1 << 15),
                |pair| match pair {
                    (a, Some(b)) => merge(&a, &b),
                    (a, None) => a,
                },
            );
        }
        Self(round.pop().unwrap_or_default())
    }
}

/// Two sorted count lists as one, equal fees added up.
fn merge(a: &[FeeCount], b: &[FeeCount]) -> Vec<FeeCount> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (fa, na, ha) = a[i];
        let (fb, nb, hb) = b[j];
        match fa.cmp(&fb) {
            std::cmp::Ordering::Less => {
                out.push((fa, na, ha));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push((fb, nb, hb));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((fa, na + nb, ha));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Every cell and margin of a table over `dimensions` dimensions.
#[derive(Debug, Clone, Default)]
pub(super) struct Grid {
    pub dimensions: usize,
    pub entries: Cells,
    /// Reports counted per reporting state (packed), each report once: for the audit.
    pub by_state: BTreeMap<u32, u64>,
}

impl Grid {
    pub(super) fn new(dimensions: usize) -> Self {
        Self {
            dimensions,
            entries: Cells::default(),
            by_state: BTreeMap::new(),
        }
    }

    /// Adds `cells` and every margin obtained by replacing any subset of the positions
    /// in `rollable` with [`ALL`]. Only single-valued dimensions may be rolled up: along
    /// them each report is in exactly one cell, so margins are sums of cells.
    ///
    /// Margins are built one position at a time: the margins of a set of positions are
    /// those of the set less its lowest position, rolled up along that one. Each level
    /// reads the (usually much smaller) level it comes from, not every cell again, and
    /// each level's table is only as large as what it holds.
    pub(super) fn roll_up(&mut self, cells: &Cells, rollable: &[usize]) {
        let subsets = 1usize << rollable.len();
        let mut levels: Vec<Cells> = Vec::with_capacity(subsets - 1);
        for subset in 1..subsets {
            let lowest = subset.trailing_zeros() as usize;
            let parent = subset & (subset - 1);
            let from = if parent == 0 {
                cells
            } else {
                &levels[parent - 1]
            };
            let level = roll(from, rollable[lowest]);
            levels.push(level);
        }
        self.entries
            .reserve(cells.len() + levels.iter().map(Cells::len).sum::<usize>());
        for (key, acc) in cells {
            self.add_entry(*key, acc.clone());
        }
        for (key, acc) in levels.into_iter().flatten() {
            self.add_entry(key, acc);
        }
    }

    fn add_entry(&mut self, key: Key, acc: Acc) {
        match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut entry) => entry.get_mut().merge(&acc),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(acc);
            }
        }
    }
}

/// The entries of `from` added up along `position` (its value replaced by [`ALL`]).
/// Fee observations are added up last, each entry's in one merge of all its parts, over
/// the cores when there are many.
fn roll(from: &Cells, position: usize) -> Cells {
    let mut out = Cells::default();
    let fees = from.values().any(|acc| !acc.fees.is_empty());
    let mut fee_parts: FxHashMap<Key, Vec<&Acc>> = FxHashMap::default();
    for (key, acc) in from {
        let mut k = *key;
        k[position] = ALL;
        out.entry(k).or_default().merge_all_but_fees(acc);
        if fees {
            fee_parts.entry(k).or_default().push(acc);
        }
    }
    if !fees {
        return out;
    }
    let observations = from.values().map(|a| a.fees.len()).sum::<usize>();
    let threads = parallel::threads_for(observations, 1 << 14);
    let sums = parallel::each(fee_parts.into_iter().collect(), threads, |(k, parts)| {
        let all: Vec<&FeeCounts> = parts.iter().map(|a| &a.fees).collect();
        let own: Vec<&FeeCounts> = parts.iter().map(|a| &a.own_fees).collect();
        (k, FeeCounts::sum_of(&all), FeeCounts::sum_of(&own))
    });
    for (k, fees, own_fees) in sums {
        if let Some(entry) = out.get_mut(&k) {
            entry.fees = fees;
            entry.own_fees = own_fees;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Summing counts in one merge gives what adding them up fee by fee gives.
        #[test]
        fn fee_counts_add_up_like_a_map(
            parts in proptest::collection::vec(
                proptest::collection::vec((0u32..3, 0u64..20), 0..30),
                0..6,
            ),
        ) {
            let hash = |(currency, amount): (u32, u64)| currency * 7 + u32::try_from(amount).unwrap_or(0) * 13 + 1;
            let mut expected: BTreeMap<(u32, u64), u64> = BTreeMap::new();
            let counted: Vec<FeeCounts> = parts
                .iter()
                .map(|fees| {
                    let mut sorted = fees.clone();
                    sorted.sort_unstable();
                    for fee in &sorted {
                        *expected.entry(*fee).or_default() += 1;
                    }
                    FeeCounts::of_sorted(sorted.into_iter(), hash)
                })
                .collect();
            let refs: Vec<&FeeCounts> = counted.iter().collect();
            let sum = FeeCounts::sum_of(&refs);
            // Each fee keeps the hash it was counted with.
            for (fee, _, h) in sum.hashed() {
                proptest::prop_assert_eq!(h, hash(fee));
            }
            let sum: Vec<((u32, u64), u64)> = sum.iter().collect();
            let expected: Vec<((u32, u64), u64)> = expected.into_iter().collect();
            proptest::prop_assert_eq!(sum, expected);
        }
    }
}
