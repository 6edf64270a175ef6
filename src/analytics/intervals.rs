//! The interval audit of an exact-figure table: whether a withheld entry can be pinned
//! down from the shown figures *and* from what the analyst knows of the withheld ones.
//!
//! Gaussian elimination over the table's lines ([`super::disclosure`]) finds the entries
//! the equations alone determine. An analyst knows more than the equations: an entry not
//! listed holds fewer reports than the minimum (it cannot tell an empty one from a small
//! one), an entry listed as withheld holds at least the minimum, and no count or
//! magnitude is negative. With those bounds a line's remainder can pin its withheld
//! entries: a row of 7 reports that shows 3 and leaves two entries unlisted (at most 2
//! each) has 2 in both — an adversarial pass pinned withheld counts in 43 of 126
//! half-year tables this way, and a single report's deaths in 13.
//!
//! For each withheld entry that is protected for itself (too small, or one state's), and
//! each shown additive metric, the audit finds the least and the greatest value it can
//! take under every line of the table and those bounds: two linear programs (solved with
//! `microlp`, a pure-Rust simplex: outside what Tidemark exists for). An entry whose
//! integer range is one value is pinned; a magnitude pinned at 0 is let stand (its line's
//! shown figures already hold the whole total: "none of these reports had any" is said
//! of the line's shown entries too). The model knows more than the analyst in one way —
//! entries absent from the table (no report) are taken as 0, not as "fewer than the
//! minimum" — so whatever the analyst can pin, the audit pins too.
//!
//! What it does not stop: a table showing that an unlisted small cell holds *some*
//! report (its least count 1: a row of 9 showing 4, with three unlisted cells of at most
//! 2 sharing 5). Checked too, under this model (which takes cells absent from the table
//! as known to be empty), it withheld nearly every cell of a month × origin table; it
//! needs a model of the dimensions' public domains.
//!
//! What it does not model: integrality beyond rounding the bounds (exact for two-way
//! tables, whose line equations are totally unimodular; a relaxation for three-way
//! ones), and relations between metrics that validation imposes (deaths plus missing at
//! most persons). Along multi-valued dimensions (transit, nationality) a line only says
//! that each cell is at most its margin and, for counts, that the cells add up to at
//! least the margin.

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolveOutcome, Variable};

use super::{
    disclosure::{LineId, Rule},
    grid::{ALL, Grid, Key},
};
use crate::store::counters::Additive;

/// What an analyst knows of a table besides its shown figures.
pub(super) struct Known {
    /// The fewest reports a listed entry holds (`minimum_reports`).
    pub minimum: u64,
    /// The additive metrics the table shows, exactly.
    pub metrics: Vec<Additive>,
    /// The axes along which one report can be in several cells.
    pub multi_valued: [bool; 3],
}

/// The outcome of auditing one group of withheld entries.
pub(super) enum Audit {
    /// No protected entry is pinned.
    Safe,
    /// This protected entry is pinned (by some metric).
    Pinned(Key),
    /// The solver failed or the work allowed ran out: treat the group as pinned.
    Unsure,
}

/// What the audit of one table may cost; past either, groups are closed off instead.
pub(super) struct Work {
    solves_left: usize,
    until: std::time::Instant,
}

impl Work {
    /// At most 4,000 linear programs and ten seconds for a table: a three-way table of
    /// thousands of small cells took 30 s of them (past the call's deadline, and the
    /// work went on). The count is what binds on any ordinary machine; the time is a
    /// backstop, so that how much is withheld does not depend on the machine's speed.
    pub(super) fn per_table() -> Self {
        Self {
            solves_left: 4_000,
            until: std::time::Instant::now() + std::time::Duration::from_secs(10),
        }
    }

    /// Takes one linear program's worth, if there is any left.
    fn take(&mut self) -> bool {
        if self.solves_left == 0 || std::time::Instant::now() > self.until {
            return false;
        }
        self.solves_left -= 1;
        true
    }
}

/// Audits the withheld entries `unknowns` (one connected group), tied together by
/// `lines` (each with its entries), as the analyst sees them: `withheld` says why each
/// is withheld. Each linear program solved is taken from `work`.
pub(super) fn audit(
    grid: &Grid,
    lines: &[(LineId, &[Key])],
    (unknowns, withheld): (&[Key], &BTreeMap<Key, Rule>),
    known: &Known,
    work: &mut Work,
) -> Audit {
    let protected: Vec<&Key> = unknowns
        .iter()
        .filter(|k| matches!(withheld.get(*k), Some(Rule::SmallCell | Rule::Dominance)))
        .collect();
    for metric in &known.metrics {
        for target in &protected {
            let mut extreme = |direction| {
                if !work.take() {
                    return Extreme::Failed;
                }
                let model = Model {
                    grid,
                    lines,
                    unknowns,
                    withheld,
                    known,
                    metric: *metric,
                };
                model.extreme(target, direction)
            };
            let (low, high) = match (
                extreme(OptimizationDirection::Minimize),
                extreme(OptimizationDirection::Maximize),
            ) {
                (Extreme::Failed, _) | (_, Extreme::Failed) => return Audit::Unsure,
                // Unbounded above: not pinned.
                (_, Extreme::Unbounded) => continue,
                (Extreme::At(low), Extreme::At(high)) => (low, high),
                (Extreme::Unbounded, Extreme::At(high)) => (0.0, high),
            };
            let (least, most) = ((low - EPS).ceil(), (high + EPS).floor());
            let pinned = most - least < 1.0;
            let counted = *metric == Additive::Reports;
            if pinned && (counted || most > 0.0) {
                return Audit::Pinned(**target);
            }
        }
    }
    Audit::Safe
}

/// How far a bound found by a linear program may be off an integer and still be taken
/// as that integer.
const EPS: f64 = 1e-6;

/// The least or greatest value a linear program found.
enum Extreme {
    At(f64),
    Unbounded,
    /// The solver failed.
    Failed,
}

/// One linear program's data: the group, its lines and what bounds its entries.
struct Model<'a> {
    grid: &'a Grid,
    lines: &'a [(LineId, &'a [Key])],
    unknowns: &'a [Key],
    withheld: &'a BTreeMap<Key, Rule>,
    known: &'a Known,
    metric: Additive,
}

impl Model<'_> {
    /// The least or greatest value of `target`.
    fn extreme(&self, target: &Key, direction: OptimizationDirection) -> Extreme {
        // The solver may panic on a problem it finds too hard; that is a failure here.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match self.problem(target, direction).solve() {
                Ok(SolveOutcome::Solution(solution)) => Extreme::At(solution.objective()),
                Err(microlp::Error::Unbounded) => Extreme::Unbounded,
                _ => Extreme::Failed,
            }
        }))
        .unwrap_or(Extreme::Failed)
    }

    /// What an analyst knows of `key`'s value of the metric, as bounds.
    fn bounds(&self, key: &Key) -> (f64, f64) {
        #[allow(clippy::cast_precision_loss)] // a count of reports
        let minimum = self.known.minimum as f64;
        match (self.metric, self.withheld.get(key)) {
            (Additive::Reports, Some(Rule::SmallCell)) => (0.0, (minimum - 1.0).max(0.0)),
            (Additive::Reports, _) => (minimum, f64::INFINITY),
            _ => (0.0, f64::INFINITY),
        }
    }

    /// The shown value of `key` (0 for an entry absent from the table).
    fn shown(&self, key: &Key) -> f64 {
        #[allow(clippy::cast_precision_loss)] // exact below 2^53
        self.grid
            .entries
            .get(key)
            .map_or(0.0, |acc| self.metric.of(&acc.sums) as f64)
    }

    fn problem(&self, target: &Key, direction: OptimizationDirection) -> Problem {
        let mut problem = Problem::new(direction);
        let vars: BTreeMap<Key, Variable> = self
            .unknowns
            .iter()
            .map(|k| {
                let objective = if k == target { 1.0 } else { 0.0 };
                (*k, problem.add_var(objective, self.bounds(k)))
            })
            .collect();
        for ((axis, _), members) in self.lines {
            // A term per withheld entry, the shown ones summed into the other side.
            let side = |keys: &mut dyn Iterator<Item = (&Key, f64)>| {
                let (mut terms, mut rest) = (Vec::new(), 0.0);
                for (k, coefficient) in keys {
                    match vars.get(k) {
                        Some(v) => terms.push((*v, coefficient)),
                        None => rest -= coefficient * self.shown(k),
                    }
                }
                (terms, rest)
            };
            let sign = |k: &Key| if k[*axis] == ALL { -1.0 } else { 1.0 };
            let (terms, rest) = side(&mut members.iter().map(|k| (k, sign(k))));
            if terms.is_empty() {
                continue;
            }
            if !self.known.multi_valued[*axis] {
                problem.add_constraint(terms, ComparisonOp::Eq, rest);
                continue;
            }
            if self.metric == Additive::Reports {
                problem.add_constraint(terms, ComparisonOp::Ge, rest);
            }
            if let Some(margin) = members.iter().find(|k| k[*axis] == ALL) {
                for cell in members.iter().filter(|k| k[*axis] != ALL) {
                    let (terms, rest) = side(&mut [(cell, 1.0), (margin, -1.0)].into_iter());
                    if !terms.is_empty() {
                        problem.add_constraint(terms, ComparisonOp::Le, rest);
                    }
                }
            }
        }
        problem
    }
}
