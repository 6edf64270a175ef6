//! The table an aggregate builds: cells and margins keyed by up to three dimension
//! values, each accumulating sums, per-state report counts and fee observations.

use std::collections::{BTreeMap, HashMap};

use crate::store::counters::Sums;

/// The key of a margin along a dimension: "all values".
pub const ALL: u64 = u64::MAX;

/// Dimension values of a cell (unused positions are 0).
pub type Key = [u64; 3];

/// What one cell accumulates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Acc {
    pub sums: Sums,
    /// Reports per reporting state (packed code), for dominance and the audit.
    pub states: BTreeMap<u32, u64>,
    /// Fee observations: (packed currency, amount) → reports.
    pub fees: BTreeMap<(u32, u64), u64>,
}

impl Acc {
    pub fn add(&mut self, state: u32, sums: &Sums) {
        for (total, add) in self.sums.iter_mut().zip(sums) {
            *total += add;
        }
        *self.states.entry(state).or_default() += sums[0];
    }

    pub fn add_fee(&mut self, currency: u32, amount: u64, reports: u64) {
        *self.fees.entry((currency, amount)).or_default() += reports;
    }

    pub fn merge(&mut self, other: &Self) {
        for (total, add) in self.sums.iter_mut().zip(&other.sums) {
            *total += add;
        }
        for (state, n) in &other.states {
            *self.states.entry(*state).or_default() += n;
        }
        for (fee, n) in &other.fees {
            *self.fees.entry(*fee).or_default() += n;
        }
    }

    pub fn reports(&self) -> u64 {
        self.sums[0]
    }
}

/// Every cell and margin of a table over `dimensions` dimensions.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub dimensions: usize,
    pub entries: HashMap<Key, Acc>,
}

impl Grid {
    pub fn new(dimensions: usize) -> Self {
        Self {
            dimensions,
            entries: HashMap::new(),
        }
    }

    /// Adds `cells` and every margin obtained by replacing any subset of the positions
    /// in `rollable` with [`ALL`]. Only single-valued dimensions may be rolled up: along
    /// them each report is in exactly one cell, so margins are sums of cells.
    pub fn roll_up(&mut self, cells: &HashMap<Key, Acc>, rollable: &[usize]) {
        let subsets = 1usize << rollable.len();
        for (key, acc) in cells {
            for subset in 0..subsets {
                let mut k = *key;
                for (bit, position) in rollable.iter().enumerate() {
                    if subset & (1 << bit) != 0 {
                        k[*position] = ALL;
                    }
                }
                self.entries.entry(k).or_default().merge(acc);
            }
        }
    }
}

/// Adds `sums` of one state into the cell at `key` of a plain cell map.
pub fn add(cells: &mut HashMap<Key, Acc>, key: Key, state: u32, sums: &Sums) {
    cells.entry(key).or_default().add(state, sums);
}
