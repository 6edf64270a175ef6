//! The table an aggregate builds: cells and margins keyed by up to three dimension
//! values, each accumulating sums, per-state report counts and fee observations.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::fees::FeeBag;
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

/// What one cell accumulates. Sums add modulo 2^64, as the record keys' sum must (cell
/// keys are taken modulo 2^32); the counters' own totals are checked when written, so no
/// real table comes near it, and numbers read from disk cannot make a query panic.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Acc {
    pub sums: Sums,
    /// The state every report so far came from (packed code), unless `mixed`.
    state: u32,
    /// Reports from more than one state.
    mixed: bool,
    /// Fee observations.
    pub fees: FeeBag,
    /// What the reports the asking analyst's state knows add (all of [`Sums`]): its own,
    /// and other states' shared with it (it reads them as records). They neither open a
    /// small cell nor change its noise; "own" below means these.
    own: Sums,
    /// The state every own report so far came from, unless `own_mixed`: the single-state
    /// flag of the cell its own reports make alone ([`Grid::leave_out_few_others`]).
    own_state: u32,
    own_mixed: bool,
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
    /// came from several; `own` what the asking analyst's state's reports add, and their
    /// one state (`None`: several, or none).
    pub(super) fn scanned(sums: Sums, state: Option<u32>, own: (Sums, Option<u32>)) -> Self {
        let (own, own_state) = own;
        Self {
            sums,
            state: state.unwrap_or(NO_STATE),
            mixed: state.is_none(),
            fees: FeeBag::default(),
            own,
            own_state: own_state.unwrap_or(NO_STATE),
            own_mixed: own_state.is_none() && Additive::Reports.of(&own) > 0,
        }
    }

    /// Adds what one state's reports add (none of them known to the asking analyst's
    /// state: the counters' tables are not a state analyst's).
    pub(super) fn add(&mut self, state: u32, sums: &Sums) {
        for (total, add) in self.sums.iter_mut().zip(sums) {
            *total = total.wrapping_add(*add);
        }
        if Additive::Reports.of(sums) > 0 {
            self.note_state(state);
        }
    }

    /// Adds a total over `states` states, `one` of them (for the dominance flag).
    pub(super) fn add_total(&mut self, sums: &Sums, states: usize, one: u32) {
        for (total, add) in self.sums.iter_mut().zip(sums) {
            *total = total.wrapping_add(*add);
        }
        match states {
            0 => {}
            1 => self.note_state(one),
            _ => self.mixed = true,
        }
    }

    /// Notes that `sums`, already added, were of reports the asking analyst's state knows.
    fn note_own(&mut self, sums: &Sums) {
        for (own, add) in self.own.iter_mut().zip(sums) {
            *own = own.wrapping_add(*add);
        }
    }

    pub(super) fn merge(&mut self, other: &Self) {
        for (total, add) in self.sums.iter_mut().zip(&other.sums) {
            *total = total.wrapping_add(*add);
        }
        if other.mixed {
            self.mixed = true;
        } else if other.state != NO_STATE {
            self.note_state(other.state);
        }
        self.note_own(&other.own);
        if other.own_mixed {
            self.own_mixed = true;
        } else if other.own_state != NO_STATE {
            if self.own_state == NO_STATE {
                self.own_state = other.own_state;
            } else if self.own_state != other.own_state {
                self.own_mixed = true;
            }
        }
        self.fees.absorb(&other.fees);
    }

    /// The cell the reports the asking analyst's state knows make alone: what it shows
    /// where the others' are too few to show (see [`Grid::leave_out_few_others`]).
    fn known_alone(&mut self) {
        self.sums = self.own;
        self.state = if self.own_mixed {
            NO_STATE
        } else {
            self.own_state
        };
        self.mixed = self.own_mixed;
        self.fees.keep_own();
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
            self.sums[KEY_SUM].wrapping_sub(self.own[KEY_SUM])
        };
        // Modulo 2^32 is the truncation.
        #[allow(clippy::cast_possible_truncation)]
        let key = key as u32;
        key
    }

    /// Reports of other states than the asking analyst's.
    pub(super) fn others(&self) -> u64 {
        self.reports()
            .saturating_sub(Additive::Reports.of(&self.own))
    }

    /// The magnitude `metric` as the asking analyst's state's own reports add it (their
    /// total), and as the other states' reports do (their total and record noise,
    /// upwards and downwards). A state's own reports are shown as they are, and do not
    /// change the noise on the others': amending one of its own reports step by step, a
    /// state found where the others' noise crossed zero, and so their exact total (an
    /// adversarial pass). A cell of the state's own reports only is all "others".
    pub(super) fn own_and_others(&self, metric: Additive) -> (u64, (u64, (u64, u64))) {
        let (total, (up, down)) = (metric.of(&self.sums), metric.noise(&self.sums));
        if self.others() == 0 {
            return (0, (total, (up, down)));
        }
        let own = metric.of(&self.own);
        let (own_up, own_down) = metric.noise(&self.own);
        (
            own,
            (
                total.wrapping_sub(own),
                (up.wrapping_sub(own_up), down.wrapping_sub(own_down)),
            ),
        )
    }

    pub(super) fn reports(&self) -> u64 {
        Additive::Reports.of(&self.sums)
    }

    /// Whether every report in the cell comes from one state (dominance).
    pub(super) fn single_state(&self) -> bool {
        !self.mixed && self.state != NO_STATE
    }
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
    pub(super) fn roll_up(&mut self, cells: Cells, rollable: &[usize]) {
        let subsets = 1usize << rollable.len();
        let mut levels: Vec<Cells> = Vec::with_capacity(subsets - 1);
        for subset in 1..subsets {
            let lowest = subset.trailing_zeros() as usize;
            let parent = subset & (subset - 1);
            let from = if parent == 0 {
                &cells
            } else {
                &levels[parent - 1]
            };
            let level = roll(from, rollable[lowest]);
            levels.push(level);
        }
        let margins = levels.iter().map(Cells::len).sum::<usize>();
        if self.entries.is_empty() {
            // The cells become the table as they are, without hashing them again.
            self.entries = cells;
            self.entries.reserve(margins);
        } else {
            self.entries.reserve(cells.len() + margins);
            for (key, acc) in cells {
                self.add_entry(key, acc);
            }
        }
        for (key, acc) in levels.into_iter().flatten() {
            self.add_entry(key, acc);
        }
    }

    /// Sets apart in each entry the reports the asking analyst's state knows: all of an
    /// entry's reports but those `unknown` (the same table over only the reports it
    /// does not know) holds. False, changing nothing, when `unknown` is no part of this
    /// table (an entry or a count this one lacks): the two were not read from the same
    /// reports. Which states the known reports come from is told only where the entry's
    /// reports are of one state or all known: the counters keep no state per report, so
    /// tables that need it (dominance withheld) are not read this way.
    pub(super) fn set_known_apart(&mut self, unknown: &Self) -> bool {
        let fits = unknown.entries.iter().all(|(key, theirs)| {
            self.entries
                .get(key)
                .is_some_and(|all| theirs.reports() <= all.reports())
        });
        if !fits {
            return false;
        }
        for (key, acc) in &mut self.entries {
            let mut known = acc.sums;
            if let Some(theirs) = unknown.entries.get(key) {
                for (k, u) in known.iter_mut().zip(&theirs.sums) {
                    *k = k.wrapping_sub(*u);
                }
            }
            acc.own = known;
            // Exact where the entry's reports are of one state, or all known (above).
            (acc.own_state, acc.own_mixed) = if Additive::Reports.of(&known) == 0 {
                (NO_STATE, false)
            } else {
                (acc.state, acc.mixed)
            };
        }
        true
    }

    /// A state analyst's table: each entry whose reports of other states than those the
    /// state knows are too few to show (`few`, given their count and their cell key)
    /// stands as the reports it knows alone — as the entry would without them. Withheld
    /// instead, such entries told which cells hold one or two reports the state cannot
    /// read (an outside pass found two such months).
    pub(super) fn leave_out_few_others(&mut self, mut few: impl FnMut(u64, u32) -> bool) {
        for acc in self.entries.values_mut() {
            let others = acc.others();
            if others > 0 && few(others, acc.cell_key()) {
                acc.known_alone();
            }
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
fn roll(from: &Cells, position: usize) -> Cells {
    let mut out = Cells::default();
    for (key, acc) in from {
        let mut k = *key;
        k[position] = ALL;
        out.entry(k).or_default().merge(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums near 2^64 (only a tampered store holds them) add modulo 2^64 in every build,
    /// and the record keys' sum keeps its cell key modulo 2^32.
    #[test]
    fn sums_add_modulo_two_to_the_64() {
        let mut big = [u64::MAX - 1; crate::store::counters::STORED];
        big[KEY_SUM] = u64::MAX;
        let mut acc = Acc::scanned(big, Some(7), (big, Some(7)));
        acc.add(9, &big);
        let other = Acc::scanned(big, Some(9), (big, Some(9)));
        acc.merge(&other);
        assert_eq!(acc.reports(), (u64::MAX - 1).wrapping_mul(3));
        assert_eq!(acc.sums[KEY_SUM], u64::MAX.wrapping_mul(3));
        assert!(!acc.single_state());
    }

    /// `n` reports with record keys summing to `key`.
    fn sums(n: u64, key: u64) -> Sums {
        let mut sums = [0; crate::store::counters::STORED];
        sums[0] = n;
        sums[KEY_SUM] = key;
        sums
    }

    /// An entry whose others' reports are few stands as the known ones alone: the same
    /// entry, single-state flag and cell key as one of only those; enough others stay.
    #[test]
    fn a_few_others_are_left_out_and_the_known_ones_keep_their_states() {
        let (aus, idn, tha) = (1, 2, 3);
        // Five known AUS reports and two unknown IDN ones, in two cells rolled up.
        let known = Acc::scanned(sums(5, 50), Some(aus), (sums(5, 50), Some(aus)));
        let mut mixed = known.clone();
        mixed.merge(&Acc::scanned(sums(2, 7), Some(idn), (sums(0, 0), None)));
        assert!(!mixed.single_state());
        let mut grid = Grid::new(1);
        grid.entries.insert([1, 0, 0], mixed);
        // Three known THA reports beside them in another cell: enough others there.
        let mut other = known.clone();
        other.merge(&Acc::scanned(sums(3, 9), Some(tha), (sums(0, 0), None)));
        grid.entries.insert([2, 0, 0], other.clone());
        let mut asked = Vec::new();
        grid.leave_out_few_others(|others, key| {
            asked.push((others, key));
            others < 3
        });
        asked.sort_unstable();
        assert_eq!(asked, [(2, 7), (3, 9)]);
        assert_eq!(grid.entries[&[1, 0, 0]], known);
        assert!(grid.entries[&[1, 0, 0]].single_state());
        assert_eq!(grid.entries[&[1, 0, 0]].cell_key(), 50);
        assert_eq!(grid.entries[&[2, 0, 0]], other);
        // Known reports of two states stay mixed when the few others are left out.
        let mut two = known.clone();
        two.merge(&Acc::scanned(
            sums(1, 1),
            Some(tha),
            (sums(1, 1), Some(tha)),
        ));
        two.merge(&Acc::scanned(sums(1, 4), Some(idn), (sums(0, 0), None)));
        let mut grid = Grid::new(1);
        grid.entries.insert([1, 0, 0], two);
        grid.leave_out_few_others(|others, _| others < 3);
        assert_eq!(grid.entries[&[1, 0, 0]].reports(), 6);
        assert!(!grid.entries[&[1, 0, 0]].single_state());
    }

    /// From the counters less the unknown reports, which state the known reports come
    /// from is told where the entry's reports are of one state, or all known.
    #[test]
    fn known_reports_states_are_set_apart_where_they_can_be_told() {
        let (aus, idn) = (1, 2);
        let counted = |state: u32, n: u64| {
            let mut acc = Acc::default();
            acc.add(state, &sums(n, n));
            acc
        };
        let mut all = Grid::new(1);
        all.entries.insert([1, 0, 0], counted(aus, 4));
        let mut mixed = counted(aus, 4);
        mixed.merge(&counted(idn, 2));
        all.entries.insert([2, 0, 0], mixed);
        // IDN's two reports unknown: set apart.
        let mut unknown = Grid::new(1);
        unknown.entries.insert([2, 0, 0], counted(idn, 2));
        let mut set = all.clone();
        assert!(set.set_known_apart(&unknown));
        assert_eq!(set.entries[&[2, 0, 0]].others(), 2);
        // More unknown than the table holds: not read from the same reports.
        unknown.entries.insert([1, 0, 0], counted(aus, 5));
        assert!(!all.clone().set_known_apart(&unknown));
        // Nothing unknown in the mixed entry: its known reports are all of them.
        let mut unknown = Grid::new(1);
        unknown.entries.insert([1, 0, 0], counted(aus, 1));
        let mut set = all.clone();
        assert!(set.set_known_apart(&unknown));
        set.leave_out_few_others(|others, _| others < 3);
        assert!(set.entries[&[1, 0, 0]].single_state());
        assert_eq!(set.entries[&[1, 0, 0]].reports(), 3);
        assert!(!set.entries[&[2, 0, 0]].single_state());
    }
}
