//! A scan's fee observations, kept per cell as it finds them, each packed into one
//! number that sorts by currency, amount and whether it is the asking state's own, so
//! that a cell's observations are counted (`grid::FeeCounts`) by sorting plain integers.
//!
//! Keys are 64 bits — the currency's rank among the dictionary's codes (16 bits), the
//! amount (47), the flag (1) — when every amount in the projection fits in 32 bits, as
//! every validated one does (`report::validate` allows at most 10^9; perturbed amounts
//! move by at most 10 %); otherwise 128 bits.

use super::{
    grid::{Acc, FeeCounts, Key},
    parallel,
    scan::EMPTY,
};
use crate::store::Projection;

/// The currencies of a projection's dictionary in the order of the codes they stand
/// for, so that a key's rank sorts like the currency.
pub(super) struct Currencies {
    /// Each dictionary code's rank.
    rank: Vec<u16>,
    /// Each rank's packed currency.
    packed: Vec<u32>,
}

impl Currencies {
    pub(super) fn of(p: &Projection) -> Self {
        let codes = u16::try_from(p.countries.len()).unwrap_or(u16::MAX);
        Self::new(
            &(0..codes)
                .map(|c| p.countries.packed(c))
                .collect::<Vec<_>>(),
        )
    }

    /// The ranks of `packed` (packed currency codes, `counters::pack_country`, by
    /// dictionary code; fewer than 2^16).
    fn new(packed: &[u64]) -> Self {
        let mut by_currency: Vec<u16> = (0..=u16::MAX).take(packed.len()).collect();
        by_currency.sort_by_key(|code| packed[usize::from(*code)]);
        let mut rank = vec![0u16; by_currency.len()];
        for (r, code) in by_currency.iter().enumerate() {
            // Fewer than 2^16 codes.
            #[allow(clippy::cast_possible_truncation)]
            let r = r as u16;
            rank[usize::from(*code)] = r;
        }
        let packed = by_currency
            .iter()
            .map(|code| u32::try_from(packed[usize::from(*code)]).unwrap_or(0))
            .collect();
        Self { rank, packed }
    }

    fn rank(&self, code: u16) -> u16 {
        self.rank.get(usize::from(code)).copied().unwrap_or(0)
    }

    fn packed(&self, rank: u64) -> u32 {
        usize::try_from(rank)
            .ok()
            .and_then(|r| self.packed.get(r))
            .copied()
            .unwrap_or(0)
    }
}

/// One thread's fee observations, per cell (the scan table's numbering).
pub(super) enum FeeKeys {
    /// Every amount below 2^47: `rank << 48 | amount << 1 | own`.
    Narrow(Vec<Vec<u64>>),
    /// Any amount: `rank << 65 | amount << 1 | own`.
    Wide(Vec<Vec<u128>>),
}

impl FeeKeys {
    /// No observations yet; 64-bit keys unless `p` holds an amount of 32 bits or more.
    pub(super) fn for_projection(p: &Projection) -> Self {
        Self::new(!p.fees_fit_in_32_bits())
    }

    fn new(wide: bool) -> Self {
        if wide {
            Self::Wide(Vec::new())
        } else {
            Self::Narrow(Vec::new())
        }
    }

    /// Notes a fee of `amount` in the currency of dictionary code `code`, in `cell` (none
    /// when [`EMPTY`]).
    #[inline]
    pub(super) fn push(
        &mut self,
        currencies: &Currencies,
        cell: u32,
        (code, amount, own): (u16, u64, bool),
    ) {
        let Some(cell) = index(cell) else {
            return;
        };
        let rank = currencies.rank(code);
        match self {
            Self::Narrow(cells) => {
                let key = (u64::from(rank) << 48) | (amount << 1) | u64::from(own);
                run(cells, cell).push(key);
            }
            Self::Wide(cells) => {
                let key = (u128::from(rank) << 65) | (u128::from(amount) << 1) | u128::from(own);
                run(cells, cell).push(key);
            }
        }
    }

    /// Adds another thread's observations; its cell `i` is this one's `renumbered[i]`
    /// (none when [`EMPTY`]).
    pub(super) fn append(&mut self, other: Self, renumbered: &[u32]) {
        fn each<K>(mine: &mut Vec<Vec<K>>, theirs: Vec<Vec<K>>, renumbered: &[u32]) {
            for (keys, cell) in theirs.into_iter().zip(renumbered) {
                if let Some(cell) = index(*cell) {
                    run(mine, cell).extend(keys);
                }
            }
        }
        match (self, other) {
            (Self::Narrow(mine), Self::Narrow(theirs)) => each(mine, theirs, renumbered),
            (Self::Wide(mine), Self::Wide(theirs)) => each(mine, theirs, renumbered),
            // One plan makes every thread's keys alike.
            _ => {}
        }
    }

    /// Gives each of `cells` (numbered as the keys' cells) its observations, counted:
    /// each cell's keys sorted, then counted with each distinct fee's `hash`, over
    /// `threads` threads.
    pub(super) fn count_into(
        self,
        currencies: &Currencies,
        cells: &mut [(Key, Acc)],
        (threads, hash): (usize, impl Fn((u32, u64)) -> u32 + Sync),
    ) {
        match self {
            Self::Narrow(runs) => {
                let unpack =
                    |key: u64| (currencies.packed(key >> 48), (key >> 1) & ((1 << 47) - 1));
                count_runs(runs, cells, (threads, hash), unpack);
            }
            Self::Wide(runs) => {
                let unpack = |key: u128| {
                    // 2^16 ranks and 64-bit amounts, as packed.
                    #[allow(clippy::cast_possible_truncation)]
                    let fee = (currencies.packed((key >> 65) as u64), (key >> 1) as u64);
                    fee
                };
                count_runs(runs, cells, (threads, hash), unpack);
            }
        }
    }
}

/// The index of a cell number, if it is one.
fn index(cell: u32) -> Option<usize> {
    (cell != EMPTY)
        .then(|| usize::try_from(cell).ok())
        .flatten()
}

/// The keys of `cell`, made (with those of the cells before it) when it is new.
fn run<K>(cells: &mut Vec<Vec<K>>, cell: usize) -> &mut Vec<K> {
    if cells.len() <= cell {
        cells.resize_with(cell + 1, Vec::new);
    }
    &mut cells[cell]
}

/// Sorts each cell's keys and counts them: the cell's fees, and its own ones (the keys
/// with the low bit set).
fn count_runs<K: Ord + Copy + Send + Sync + std::ops::BitAnd<Output = K> + From<u8>>(
    runs: Vec<Vec<K>>,
    cells: &mut [(Key, Acc)],
    (threads, hash): (usize, impl Fn((u32, u64)) -> u32 + Sync),
    unpack: impl Fn(K) -> (u32, u64) + Sync,
) {
    let one = K::from(1);
    let counted = parallel::each(runs, threads, |mut run| {
        run.sort_unstable();
        (
            FeeCounts::of_sorted(run.iter().map(|k| unpack(*k)), &hash),
            // Own fees are only counted (see `fees::quartiles`).
            FeeCounts::of_sorted(
                run.iter()
                    .filter(|k| (**k & one) == one)
                    .map(|k| unpack(*k)),
                |_| 0,
            ),
        )
    });
    for ((_, acc), (fees, own_fees)) in cells.iter_mut().zip(counted) {
        acc.fees = fees;
        acc.own_fees = own_fees;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::counters;

    /// A dictionary of "none" and a few currencies, out of order.
    fn dictionary() -> Vec<u64> {
        ["", "USD", "AUD", "THB", "EUR"]
            .into_iter()
            .map(counters::pack_country)
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Fee observations come out counted per cell in (currency, amount) order, as a
        /// map counts them, with 64-bit keys and (when an amount needs them) 128-bit ones,
        /// however they are split between threads.
        #[test]
        fn observations_are_counted_per_cell_in_currency_order(
            rows in proptest::collection::vec((0u32..4, 0u16..5, 0u64..40, proptest::bool::ANY), 1..200),
            huge in proptest::bool::ANY,
            split in 0usize..200,
            threads in 1usize..4,
        ) {
            type Counted = BTreeMap<(u32, u64), u64>;
            let dictionary = dictionary();
            let currencies = Currencies::new(&dictionary);
            let mut rows = rows;
            if huge {
                rows.push((1, 0, 1 << 50, false));
            }
            let mut expected: Vec<(Counted, Counted)> = vec![Default::default(); 4];
            for (cell, code, amount, own) in &rows {
                let currency = u32::try_from(dictionary[usize::from(*code)]).unwrap_or(0);
                let (all, mine) = &mut expected[*cell as usize];
                *all.entry((currency, *amount)).or_default() += 1;
                if *own {
                    *mine.entry((currency, *amount)).or_default() += 1;
                }
            }
            // Two threads' shares, the second numbering its cells backwards.
            let (first, second) = rows.split_at(split.min(rows.len()));
            let mut keys = FeeKeys::new(huge);
            for (cell, code, amount, own) in first {
                keys.push(&currencies, *cell, (*code, *amount, *own));
            }
            let mut theirs = FeeKeys::new(huge);
            for (cell, code, amount, own) in second {
                theirs.push(&currencies, 3 - *cell, (*code, *amount, *own));
            }
            keys.append(theirs, &[3, 2, 1, 0]);
            let mut cells: Vec<(Key, Acc)> = (0..4).map(|_| ([0; 3], Acc::default())).collect();
            keys.count_into(&currencies, &mut cells, (threads, |_| 0));
            for ((_, acc), (all, mine)) in cells.iter().zip(&expected) {
                let all: Vec<_> = all.iter().map(|(k, n)| (*k, *n)).collect();
                let mine: Vec<_> = mine.iter().map(|(k, n)| (*k, *n)).collect();
                proptest::prop_assert_eq!(acc.fees.iter().collect::<Vec<_>>(), all);
                proptest::prop_assert_eq!(acc.own_fees.iter().collect::<Vec<_>>(), mine);
            }
        }
    }
}
