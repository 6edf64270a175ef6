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
//!
//! Which cells an answer lists must not depend on the data either: a budgeted table
//! lists every value of its dimensions' public domains (every ISO country, every enum
//! value, every month asked for), each with noise, and its size is known before the data
//! is read ([`complete`]).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::{
    AggregateError, AggregateQuery, Budget, Dimension, Metric,
    discrete_gaussian::{Coins, EntropyError},
    grid::{ALL, Grid, Key},
    source,
};
use crate::{
    country, pb,
    store::counters::{self, Additive, Cuboid, NONE, SUMS},
};

/// Every value a dimension can take, known without looking at the data.
fn domain(query: &AggregateQuery, dimension: Dimension) -> Result<Vec<u64>, AggregateError> {
    let countries = || {
        std::iter::once(NONE)
            .chain(
                country::all_alpha3()
                    .iter()
                    .map(|c| counters::pack_country(c)),
            )
            .collect::<Vec<u64>>()
    };
    let enums = |known: fn(i32) -> bool| {
        (0..=255u8)
            .filter(|v| known(i32::from(*v)))
            .map(u64::from)
            .collect()
    };
    Ok(match dimension {
        Dimension::Month | Dimension::Quarter | Dimension::Year => {
            let (from, to) = query
                .filters
                .first()
                .map_or((i32::MIN, i32::MAX), |(_, f)| f.days());
            if from == i32::MIN || to == i32::MAX {
                return Err(AggregateError::OpenDomain(
                    "a table by month, quarter or year needs both a first and a last month \
                     (--from and --to)"
                        .to_owned(),
                ));
            }
            let months = counters::month_of_day(from)..=counters::month_of_day(to);
            let values: BTreeSet<u64> = months
                .map(|m| source::base_value(dimension, m, 0, 0))
                .collect();
            values.into_iter().collect()
        }
        Dimension::ReportingState => {
            let asked = query
                .filters
                .first()
                .map(|(_, f)| f.states())
                .unwrap_or_default();
            if asked.is_empty() {
                country::all_alpha3()
                    .iter()
                    .map(|c| counters::pack_country(c))
                    .collect()
            } else {
                asked
                    .iter()
                    .map(|c| counters::pack_country(c.as_str()))
                    .collect()
            }
        }
        Dimension::Category => query.categories().map(|c| c.to_pb() as u64).collect(),
        Dimension::Counted(Cuboid::Route) => {
            let ends = countries();
            ends.iter()
                .flat_map(|o| ends.iter().map(move |d| (o << 24) | d))
                .collect()
        }
        Dimension::Counted(Cuboid::ModusOperandi) => {
            enums(|v| pb::ModusOperandi::try_from(v).is_ok())
        }
        Dimension::Counted(Cuboid::MaritimeEvent) => {
            enums(|v| pb::MaritimeEvent::try_from(v).is_ok())
        }
        Dimension::Counted(Cuboid::VesselType) => enums(|v| pb::VesselType::try_from(v).is_ok()),
        Dimension::Counted(Cuboid::SeaArea) => enums(|v| pb::SeaArea::try_from(v).is_ok()),
        Dimension::Counted(Cuboid::Base) => vec![NONE],
        Dimension::Counted(_) => countries(),
    })
}

/// Adds every cell and margin of the query's public domain that the data left out (as
/// zero), so that which cells an answer lists does not depend on the data; refuses a
/// domain larger than `max_cells` before building it.
pub(super) fn complete(
    query: &AggregateQuery,
    grid: &mut Grid,
    max_cells: usize,
) -> Result<(), AggregateError> {
    let domains: Vec<Vec<u64>> = query
        .dimensions
        .iter()
        .map(|d| domain(query, *d))
        .collect::<Result<_, _>>()?;
    let cells = domains
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(d.len() + 1))
        .unwrap_or(usize::MAX);
    if cells > max_cells {
        return Err(AggregateError::TooManyCells {
            cells,
            max: max_cells,
        });
    }
    let choices: Vec<Vec<u64>> = domains
        .into_iter()
        .map(|mut d| {
            d.push(ALL);
            d
        })
        .collect();
    let mut pick = vec![0usize; choices.len()];
    loop {
        let mut key: Key = [0; 3];
        for (i, p) in pick.iter().enumerate() {
            key[i] = choices[i][*p];
        }
        grid.entries.entry(key).or_default();
        // Next combination, odometer style.
        let mut i = 0;
        loop {
            if i == pick.len() {
                return Ok(());
            }
            pick[i] += 1;
            if pick[i] < choices[i].len() {
                break;
            }
            pick[i] = 0;
            i += 1;
        }
    }
}

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
