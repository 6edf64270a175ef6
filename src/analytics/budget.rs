//! Answers under a privacy budget: every figure a state analyst sees gets independent
//! discrete Gaussian noise calibrated to what the query was charged, so that the
//! answers an analyst gets in a year are together ρ-zCDP with ρ its yearly budget
//! (Bun and Steinke, *Concentrated Differential Privacy*, TCC 2016: the discrete
//! Gaussian with variance σ² on a query of ℓ2 sensitivity Δ is Δ²/(2σ²)-zCDP, and zCDP
//! adds up over queries).
//!
//! Neighbouring data sets differ by one report. One report changes each table entry it
//! falls in (its cells and margins) by at most 1 in a count and at most the cap in a
//! sum, and it falls in at most Π (1 + m_d) entries, with m_d the most values a report
//! has along dimension d (1, or 10 transit countries, or 51 nationalities). The
//! query's charge is split evenly over the metrics it releases — the asked ones, plus the
//! count of reports, which small-cell suppression looks at.

use rustc_hash::FxHashMap;

use super::{
    AggregateQuery, Budget, Dimension, Metric,
    discrete_gaussian::{Coins, EntropyError},
    grid::{Grid, Key},
};
use crate::store::counters::{Additive, SUMS};

/// How many entries of the table one report can fall in.
fn entries_per_report(query: &AggregateQuery) -> u128 {
    query
        .dimensions
        .iter()
        .map(|d| match d {
            Dimension::Counted(c) => 1 + u128::from(c.max_values()),
            _ => 2,
        })
        .product()
}

/// The metrics a budgeted answer releases: the count of reports and the asked sums.
fn released(query: &AggregateQuery) -> Vec<Additive> {
    let mut out = vec![Additive::Reports];
    for m in &query.metrics {
        if let Metric::Sum(a) = m
            && !out.contains(a)
        {
            out.push(*a);
        }
    }
    out
}

/// The noisy figures of every entry of `grid` (indexed by `Additive`; metrics not
/// released stay 0), never below 0.
pub(super) fn noisy(
    query: &AggregateQuery,
    grid: &Grid,
    budget: Budget,
) -> Result<FxHashMap<Key, [u64; SUMS]>, EntropyError> {
    let coins = Coins::new();
    let metrics = released(query);
    let entries = entries_per_report(query);
    // σ² = Δ² / (2ρ) with ρ = per_query / k micro-ρ: Δ² · 10^6 · k / (2 · per_query).
    let k = metrics.len() as u128;
    let variance = |a: Additive| {
        let delta2 = match a {
            Additive::Reports => entries,
            _ => entries * u128::from(budget.cap) * u128::from(budget.cap),
        };
        (delta2 * 1_000_000 * k, 2 * u128::from(budget.per_query))
    };
    let mut out = FxHashMap::default();
    out.reserve(grid.entries.len());
    for (key, acc) in &grid.entries {
        let mut shown = [0u64; SUMS];
        for a in &metrics {
            let (num, den) = variance(*a);
            let noise = coins.discrete_gaussian(num, den)?;
            let value = i128::from(a.of(&acc.sums)) + noise;
            shown[*a as usize] = u64::try_from(value.max(0)).unwrap_or(u64::MAX);
        }
        out.insert(*key, shown);
    }
    Ok(out)
}

/// The standard deviation of the noise on a count and on a sum, for the answer's
/// protection.
#[allow(clippy::cast_precision_loss)]
pub(super) fn deviations(query: &AggregateQuery, budget: Budget) -> (f64, f64) {
    let k = released(query).len() as f64;
    let entries = entries_per_report(query) as f64;
    let rho = budget.per_query as f64 / 1e6 / k;
    let count = (entries / (2.0 * rho)).sqrt();
    (count, count * budget.cap as f64)
}
