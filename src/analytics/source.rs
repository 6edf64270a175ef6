//! Where a table's numbers come from: the write-time counters, when the query groups by
//! at most one counted dimension besides period, state and category and filters only by
//! category, whole months and reporting states; otherwise a scan of the columnar
//! projection (`scan.rs`).

use std::collections::BTreeMap;

use super::{
    AggregateQuery, Dimension, Metric, grid::ALL, grid::Acc, grid::Cells, grid::Grid, grid::Key,
};
use crate::{
    country::CountryCode,
    store::{
        Snapshot, StoreError,
        counters::{self, Additive, Cuboid, Grain, Positions},
    },
};

/// How to read a query from the counters.
pub(super) struct CounterPlan {
    cuboid: Cuboid,
    /// Months of the incident date, inclusive.
    months: (u32, u32),
}

/// The counter plan for `query`, or `None` when a scan answers it: when its shape needs
/// one, and when it asks for fee quartiles (not kept as counters).
pub(super) fn counter_plan(query: &AggregateQuery) -> Option<CounterPlan> {
    if query.metrics.contains(&Metric::FeePerPerson) {
        return None;
    }
    let counted: Vec<Cuboid> = query
        .dimensions
        .iter()
        .filter_map(|d| match d {
            Dimension::Counted(c) => Some(*c),
            _ => None,
        })
        .collect();
    let cuboid = match counted.as_slice() {
        [] => Cuboid::Base,
        [one] => *one,
        _ => return None,
    };
    let mut months = None;
    for (_, filter) in &query.filters {
        if filter.narrows_by_content() {
            return None;
        }
        let (from, to) = filter.days();
        let first_of_month =
            |day: i32| time::Date::from_julian_day(day).is_ok_and(|d| d.day() == 1);
        let from_month = match from {
            i32::MIN => 0,
            day if first_of_month(day) => counters::month_of_day(day),
            _ => return None,
        };
        let to_month = match to {
            i32::MAX => u32::MAX,
            day if first_of_month(day.saturating_add(1)) => counters::month_of_day(day),
            _ => return None,
        };
        months = Some((from_month, to_month));
    }
    Some(CounterPlan {
        cuboid,
        months: months?,
    })
}

/// The packed codes of the reporting states asked for; empty for all.
fn wanted_states(query: &AggregateQuery) -> Vec<u32> {
    query
        .filters
        .first()
        .map(|(_, f)| f.states())
        .unwrap_or_default()
        .iter()
        .map(|s: &CountryCode| u32::try_from(counters::pack_country(s.as_str())).unwrap_or(0))
        .collect()
}

/// The value of a period, state or category dimension.
pub(super) fn base_value(dimension: Dimension, month: u32, state: u32, category: i32) -> u64 {
    let month = u64::from(month);
    match dimension {
        Dimension::Month => month,
        Dimension::Quarter => (month / 12) * 4 + (month % 12) / 3,
        Dimension::Year => month / 12,
        Dimension::ReportingState => u64::from(state),
        Dimension::Category => u64::try_from(category).unwrap_or(0),
        // Filled in by the caller.
        Dimension::Counted(_) => 0,
    }
}

fn key_of(dimensions: &[Dimension], month: u32, state: u32, category: i32, value: u64) -> Key {
    let mut key = [0; 3];
    for (slot, d) in key.iter_mut().zip(dimensions) {
        *slot = match d {
            Dimension::Counted(_) => value,
            other => base_value(*other, month, state, category),
        };
    }
    key
}

/// Positions of single-valued dimensions (those margins can be summed along).
pub(super) fn single_valued(query: &AggregateQuery) -> Vec<usize> {
    (0..query.dimensions.len())
        .filter(|i| !query.dimensions[*i].multi_valued())
        .collect()
}

/// Who a table is built for, and how.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct View {
    /// The asking analyst's state (packed). The reports it knows as records — its own and
    /// those shared with it — are counted apart in each cell (`grid::Acc`). Only the
    /// projection can tell them (the counters keep no sharing scopes): a state analyst's
    /// tables are scanned, or read from the counters less a scan of the reports its
    /// state does not know ([`known_apart`]).
    pub own: Option<u32>,
    /// Scan only the reports the asking analyst's state does not know.
    pub unknown_only: bool,
    /// Fee amounts as perturbed quartiles see them.
    pub moved_fees: bool,
    /// The most one report may add to a sum (the privacy budget's cap).
    pub cap: Option<u64>,
}

/// Reads one cuboid's rows into cells.
fn read_cuboid(
    snapshot: &Snapshot,
    query: &AggregateQuery,
    cuboid: Cuboid,
    months: (u32, u32),
) -> Result<Cells, StoreError> {
    let states = wanted_states(query);
    let wanted_state = |state: u32| states.is_empty() || states.contains(&state);
    let dims = &query.dimensions;
    let wanted = Positions::of(query.metrics.iter().filter_map(|m| match m {
        Metric::Sum(a) => Some(*a),
        Metric::FeePerPerson => None,
    }));
    // Split by state only when asked to, or filtering by state; otherwise each row's
    // total will do.
    let per_state = dims.contains(&Dimension::ReportingState);
    // Quarter rows, a third as many, unless the table is split by month.
    let grain = if dims.contains(&Dimension::Month) {
        Grain::Months
    } else {
        Grain::Quarters
    };
    let totals = !per_state && states.is_empty();
    let mut cells: Cells = Cells::default();
    for category in query.categories() {
        let category = category.to_pb() as i32;
        snapshot.counter_rows((cuboid, category), months, grain, |row| {
            if totals {
                let (sums, count, one) = row.total(wanted)?;
                let key = key_of(dims, row.month, 0, category, row.value);
                cells.entry(key).or_default().add_total(&sums, count, one);
                return Ok(());
            }
            let mut merged = Acc::default();
            row.each_state(wanted, |state, sums| {
                if !wanted_state(state) {
                    return;
                }
                if per_state {
                    let key = key_of(dims, row.month, state, category, row.value);
                    cells.entry(key).or_default().add(state, sums);
                } else {
                    merged.add(state, sums);
                }
            })?;
            if !per_state && merged.reports() > 0 {
                let key = key_of(dims, row.month, 0, category, row.value);
                cells.entry(key).or_default().merge(&merged);
            }
            Ok(())
        })?;
    }
    Ok(cells)
}

/// Reports counted per reporting state, for the audit: from the base cuboid, where
/// each report is in exactly one row.
fn counted_by_state(
    snapshot: &Snapshot,
    query: &AggregateQuery,
    months: (u32, u32),
) -> Result<BTreeMap<u32, u64>, StoreError> {
    let states = wanted_states(query);
    let mut counted = BTreeMap::new();
    for category in query.categories() {
        let base = (Cuboid::Base, category.to_pb() as i32);
        snapshot.counter_rows(base, months, Grain::Quarters, |row| {
            row.each_state(Positions::of([]), |state, sums| {
                if states.is_empty() || states.contains(&state) {
                    *counted.entry(state).or_default() += Additive::Reports.of(sums);
                }
            })
        })?;
    }
    Ok(counted)
}

/// The states whose reports an aggregate is computed over, whatever its date and content
/// filters select: every state (of those the filter names, if any) with a live report in
/// the asked categories. The audit log names these as an aggregate's owners, so that its
/// entry — readable by every principal — does not say whose reports a filter matched.
/// Which states have reports in a category is in the log already (its envelope entries).
pub(super) fn states_in_scope(
    snapshot: &Snapshot,
    query: &AggregateQuery,
) -> Result<Vec<String>, StoreError> {
    Ok(counted_by_state(snapshot, query, (0, u32::MAX))?
        .into_iter()
        .filter(|(_, reports)| *reports > 0)
        .map(|(state, _)| counters::unpack_country(u64::from(state)))
        .collect())
}

/// The table from the counters.
pub(super) fn from_counters(
    snapshot: &Snapshot,
    query: &AggregateQuery,
    plan: &CounterPlan,
) -> Result<Grid, StoreError> {
    let mut grid = Grid::new(query.dimensions.len());
    let rollable = single_valued(query);
    grid.by_state = counted_by_state(snapshot, query, plan.months)?;
    let cells = read_cuboid(snapshot, query, plan.cuboid, plan.months)?;
    grid.roll_up(cells, &rollable);
    if plan.cuboid.multi_valued() {
        // Margins along a multi-valued dimension count each report once: they come
        // from the base cuboid, not from adding up cells.
        let position = query
            .dimensions
            .iter()
            .position(|d| *d == Dimension::Counted(plan.cuboid))
            .unwrap_or(0);
        let base = read_cuboid(snapshot, query, Cuboid::Base, plan.months)?;
        let base: Cells = base
            .into_iter()
            .map(|(mut key, acc)| {
                key[position] = ALL;
                (key, acc)
            })
            .fold(Cells::default(), |mut cells, (key, acc)| {
                cells.entry(key).or_insert_with(Acc::default).merge(&acc);
                cells
            });
        grid.roll_up(base, &rollable);
    }
    Ok(grid)
}

/// A state analyst's table from the counters (`view.own` set): their totals, with the
/// reports its state knows set apart as all but those a scan of only the reports it does
/// not know finds — few where most reports are shared with every contributor. `None`
/// when the projection does not hold the snapshot's reports (a batch committed between
/// the two reads): the caller scans instead.
pub(super) fn known_apart(
    (snapshot, projection): (&Snapshot, &crate::store::Projection),
    query: &AggregateQuery,
    plan: &CounterPlan,
    view: View,
) -> Result<Option<Grid>, StoreError> {
    if projection.sequence() != snapshot.last_sequence()? {
        return Ok(None);
    }
    let mut grid = from_counters(snapshot, query, plan)?;
    let unknown = super::scan::from_projection(
        projection,
        query,
        View {
            unknown_only: true,
            ..view
        },
    );
    Ok(grid.set_known_apart(&unknown).then_some(grid))
}
