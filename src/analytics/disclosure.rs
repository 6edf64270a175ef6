//! Disclosure control: which cells and margins of a table are withheld.
//!
//! 1. *Small cells*: fewer reports than the minimum.
//! 2. *Dominance*: every report from one state, when the exchange suppresses those.
//! 3. *Secondary* (exact figures only: under the cell key method a margin less its shown
//!    cells leaves the withheld reports' values moved by their own fixed noise, no exact
//!    figure): a table publishes margins (the "*" entries), and along every line of
//!    the table (the entries that differ only in one dimension) the cells add up to the
//!    margin. A withheld entry must not be computable from what is shown, so:
//!    - no line may have exactly one withheld entry (else: subtract);
//!    - and, checked exactly, no withheld entry may be determined by the linear system
//!      of all lines together (a cell can be pinned down by combining lines even when
//!      each line has two withheld entries). This is Gaussian elimination over the
//!      withheld entries, one connected group at a time.
//!
//!    - and no withheld entry protected for itself may be pinned once what the analyst
//!      knows of withheld entries is added to the lines: bounds, not only equations
//!      ([`super::intervals`]).
//!
//!    Each time one is found, the smallest shown entry on its lines is withheld too.
//!
//! Along multi-valued dimensions (transit, nationality) cells add up to more than the
//! margin; treating those lines as equations too only withholds more, never less.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    grid::{ALL, Acc, Grid, Key},
    intervals::{self, Audit, Known, Work},
};

/// Why an entry is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    SmallCell,
    Dominance,
    Secondary,
}

/// The most withheld entries solved as one dense system; a larger connected group is
/// closed off instead (every entry on its lines withheld).
const MAX_EXACT: usize = 400;

/// A line of a table: the axis it runs along, and its entries' key with that axis at 0.
pub(super) type LineId = (usize, Key);

struct Lines {
    /// Line → its entries, sorted.
    members: BTreeMap<LineId, Vec<Key>>,
}

impl Lines {
    fn new(grid: &Grid) -> Self {
        let mut members: BTreeMap<LineId, Vec<Key>> = BTreeMap::new();
        for key in grid.entries.keys() {
            for axis in 0..grid.dimensions {
                members.entry(line_of(key, axis)).or_default().push(*key);
            }
        }
        for entries in members.values_mut() {
            entries.sort_unstable();
        }
        Self { members }
    }
}

fn line_of(key: &Key, axis: usize) -> LineId {
    let mut id = *key;
    id[axis] = 0;
    (axis, id)
}

/// Decides which entries of `grid` are withheld, and why: `small` says which entries
/// are too small to show. `secondary` (exact figures only) is what the analyst knows of
/// withheld entries, for secondary suppression; none, no secondary suppression.
pub(super) fn protect(
    grid: &Grid,
    small: impl Fn(&Key, &Acc) -> bool,
    (suppress_single_state, secondary): (bool, Option<&Known>),
) -> BTreeMap<Key, Rule> {
    let mut withheld = BTreeMap::new();
    for (key, acc) in &grid.entries {
        if small(key, acc) {
            withheld.insert(*key, Rule::SmallCell);
        } else if suppress_single_state && acc.single_state() {
            withheld.insert(*key, Rule::Dominance);
        }
    }
    let Some(known) = secondary else {
        return withheld;
    };
    if withheld.is_empty() || grid.dimensions == 0 {
        return withheld;
    }
    let mut work = intervals::Work::per_table();
    let lines = Lines::new(grid);
    // Smaller entries are cheaper to withhold; among equals, cells before margins.
    let cost = |key: &Key| {
        let reports = grid.entries.get(key).map_or(0, super::grid::Acc::reports);
        (reports, key.iter().filter(|v| **v == ALL).count(), *key)
    };
    loop {
        one_per_line(&lines, &mut withheld, &cost);
        let Some(group) = determined_group(grid, &lines, &withheld, (known, &mut work)) else {
            break;
        };
        let shown_on = |group_lines: &BTreeSet<LineId>| {
            group_lines
                .iter()
                .flat_map(|line| &lines.members[line])
                .filter(|k| !withheld.contains_key(*k))
                .min_by_key(|k| cost(k))
                .copied()
        };
        // On the pinned entry's own lines first, where there is one.
        let candidate = group
            .pinned
            .as_ref()
            .and_then(shown_on)
            .or_else(|| shown_on(&group.lines));
        match candidate {
            Some(key) if group.exact => {
                withheld.insert(key, Rule::Secondary);
            }
            Some(_) => {
                // Too large to solve: withhold every entry on its lines.
                for line in &group.lines {
                    for key in &lines.members[line] {
                        withheld.entry(*key).or_insert(Rule::Secondary);
                    }
                }
            }
            None => break,
        }
    }
    withheld
}

/// Withholds, until none is left, the smallest shown entry of every line that has
/// exactly one withheld entry.
fn one_per_line(
    lines: &Lines,
    withheld: &mut BTreeMap<Key, Rule>,
    cost: &impl Fn(&Key) -> (u64, usize, Key),
) {
    loop {
        let mut changed = false;
        for members in lines.members.values() {
            let hidden = members.iter().filter(|k| withheld.contains_key(*k)).count();
            if hidden != 1 {
                continue;
            }
            if let Some(key) = members
                .iter()
                .filter(|k| !withheld.contains_key(*k))
                .min_by_key(|k| cost(k))
            {
                withheld.insert(*key, Rule::Secondary);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// A connected group of withheld entries in which some entry is still determined.
struct Group {
    lines: BTreeSet<LineId>,
    /// The lines of the entry the interval audit pinned, if it was that audit.
    pinned: Option<BTreeSet<LineId>>,
    /// False when the group was too large to solve (treated as determined).
    exact: bool,
}

/// Union-find: the representative of `i`.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The first connected group of withheld entries that the lines' equations pin down, or
/// the equations with what the analyst `known`s of withheld entries ([`intervals`], each
/// linear program taken from `work`).
fn determined_group(
    grid: &Grid,
    lines: &Lines,
    withheld: &BTreeMap<Key, Rule>,
    (known, work): (&Known, &mut Work),
) -> Option<Group> {
    let unknowns: Vec<Key> = withheld.keys().copied().collect();
    let index: BTreeMap<Key, usize> = unknowns.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    // Equations over withheld entries only (the shown ones are constants).
    let mut equations: Vec<(LineId, Vec<(usize, f64)>)> = Vec::new();
    for (line, members) in &lines.members {
        let terms: Vec<(usize, f64)> = members
            .iter()
            .filter_map(|k| {
                let i = *index.get(k)?;
                Some((i, if k[line.0] == ALL { -1.0 } else { 1.0 }))
            })
            .collect();
        if !terms.is_empty() {
            equations.push((*line, terms));
        }
    }
    // Connected groups of unknowns (union-find over shared equations).
    let mut parent: Vec<usize> = (0..unknowns.len()).collect();
    for (_, terms) in &equations {
        for pair in terms.windows(2) {
            let (a, b) = (root(&mut parent, pair[0].0), root(&mut parent, pair[1].0));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (e, (_, terms)) in equations.iter().enumerate() {
        let r = root(&mut parent, terms[0].0);
        groups.entry(r).or_default().push(e);
    }
    for eqs in groups.values() {
        let mut columns: Vec<usize> = eqs
            .iter()
            .flat_map(|e| equations[*e].1.iter().map(|(i, _)| *i))
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let lines_of_group = || eqs.iter().map(|e| equations[*e].0).collect();
        if columns.len() > MAX_EXACT {
            // Closing a group off withholds whole lines; once every entry on them is
            // withheld there is nothing left to do for it.
            let open = eqs.iter().any(|e| {
                lines.members[&equations[*e].0]
                    .iter()
                    .any(|k| !withheld.contains_key(k))
            });
            if open {
                return Some(Group {
                    lines: lines_of_group(),
                    pinned: None,
                    exact: false,
                });
            }
            continue;
        }
        let local: BTreeMap<usize, usize> =
            columns.iter().enumerate().map(|(j, c)| (*c, j)).collect();
        let mut matrix: Vec<Vec<f64>> = eqs
            .iter()
            .map(|e| {
                let mut row = vec![0.0; columns.len()];
                for (i, c) in &equations[*e].1 {
                    row[local[i]] = *c;
                }
                row
            })
            .collect();
        if any_determined(&mut matrix, columns.len()) {
            return Some(Group {
                lines: lines_of_group(),
                pinned: None,
                exact: true,
            });
        }
        let keys: Vec<Key> = columns.iter().map(|c| unknowns[*c]).collect();
        let audited = bounded(
            grid,
            lines,
            (lines_of_group(), &keys),
            withheld,
            (known, work),
        );
        if audited.is_some() {
            return audited;
        }
    }
    None
}

/// The group of withheld entries `keys` on `group_lines` if, with what the analyst
/// `known`s of withheld entries, one of them is pinned ([`intervals::audit`]), or the
/// audit could not tell (the group is then closed off).
fn bounded(
    grid: &Grid,
    lines: &Lines,
    (group_lines, keys): (BTreeSet<LineId>, &[Key]),
    withheld: &BTreeMap<Key, Rule>,
    (known, work): (&Known, &mut Work),
) -> Option<Group> {
    let with_members: Vec<(LineId, &[Key])> = group_lines
        .iter()
        .map(|line| (*line, lines.members[line].as_slice()))
        .collect();
    match intervals::audit(grid, &with_members, (keys, withheld), known, work) {
        Audit::Safe => None,
        Audit::Pinned(key) => {
            let own: BTreeSet<LineId> = (0..grid.dimensions)
                .map(|axis| line_of(&key, axis))
                .filter(|line| group_lines.contains(line))
                .collect();
            Some(Group {
                lines: group_lines,
                pinned: Some(own),
                exact: true,
            })
        }
        Audit::Unsure => {
            // Closed off, as a group too large to solve.
            let open = group_lines.iter().any(|line| {
                lines.members[line]
                    .iter()
                    .any(|k| !withheld.contains_key(k))
            });
            open.then_some(Group {
                lines: group_lines,
                pinned: None,
                exact: false,
            })
        }
    }
}

/// Whether some unknown has the same value in every solution of `matrix · x = b`:
/// in reduced row echelon form, a pivot whose row has no other non-zero entry.
fn any_determined(matrix: &mut [Vec<f64>], columns: usize) -> bool {
    const EPS: f64 = 1e-9;
    let mut pivots = Vec::new();
    let mut row = 0;
    for col in 0..columns {
        let Some(best) = (row..matrix.len())
            .max_by(|a, b| matrix[*a][col].abs().total_cmp(&matrix[*b][col].abs()))
        else {
            break;
        };
        if matrix[best][col].abs() < EPS {
            continue;
        }
        matrix.swap(row, best);
        let p = matrix[row][col];
        for v in &mut matrix[row] {
            *v /= p;
        }
        let pivot_row = matrix[row].clone();
        for (r, other) in matrix.iter_mut().enumerate() {
            if r != row && other[col].abs() > EPS {
                let f = other[col];
                for (v, p) in other.iter_mut().zip(&pivot_row) {
                    *v -= f * p;
                }
            }
        }
        pivots.push((row, col));
        row += 1;
        if row == matrix.len() {
            break;
        }
    }
    pivots.iter().any(|(r, c)| {
        matrix[*r]
            .iter()
            .enumerate()
            .all(|(j, v)| j == *c || v.abs() < EPS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::counters::Additive;

    /// What `reports` reports add, nothing else.
    fn sums(reports: u64) -> crate::store::counters::Sums {
        let mut sums = [0; crate::store::counters::STORED];
        sums[0] = reports;
        sums
    }

    /// What an analyst of a table of counts knows, with `minimum` reports to a cell.
    fn known(minimum: u64) -> Known {
        Known {
            minimum,
            metrics: vec![crate::store::counters::Additive::Reports],
            multi_valued: [false; 3],
        }
    }

    /// A 2-D table from interior counts, with all margins.
    fn table(cells: &[(u64, u64, u64)]) -> Grid {
        let mut interior = crate::analytics::grid::Cells::default();
        for (r, c, n) in cells {
            // Two states, so that nothing is single-state.
            let mut acc = Acc::default();
            acc.add(1, &sums(*n - 1));
            acc.add(2, &sums(1));
            interior.insert([*r, *c, 0], acc);
        }
        let mut grid = Grid::new(2);
        grid.roll_up(interior, &[0, 1]);
        grid
    }

    #[test]
    fn a_small_cell_takes_a_second_cell_on_its_row_and_column() {
        let grid = table(&[(1, 1, 2), (1, 2, 10), (2, 1, 20), (2, 2, 30)]);
        let w = protect(&grid, |_, a| a.reports() < 3, (false, Some(&known(3))));
        assert_eq!(w.get(&[1, 1, 0]), Some(&Rule::SmallCell));
        // Row 1 and column 1 each need a second withheld entry, and so on around.
        for axis in 0..2 {
            for (line, members) in &Lines::new(&grid).members {
                if line.0 != axis {
                    continue;
                }
                let hidden = members.iter().filter(|k| w.contains_key(*k)).count();
                assert!(hidden != 1, "line {line:?} has one withheld entry");
            }
        }
    }

    #[test]
    fn a_determined_cell_is_found_even_when_each_line_has_two() {
        // Unknowns a, b on row 1 with known total: a + b = 5; and a − b = 1 from another
        // pair of equations would pin both. Here: rows r1: a + b = t1, column c1: a + c
        // = u1, column c2: b + d = u2, row r2: c + d = t2 — a 4-cycle, undetermined.
        let mut m = vec![
            vec![1.0, 1.0, 0.0, 0.0],
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0, 1.0],
            vec![0.0, 0.0, 1.0, 1.0],
        ];
        assert!(!any_determined(&mut m, 4));
        // Add a fifth equation c = k (a line with only c withheld... in a bigger table):
        let mut m = vec![
            vec![1.0, 1.0, 0.0, 0.0],
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0, 1.0],
            vec![0.0, 0.0, 1.0, 1.0],
            vec![0.0, 0.0, 1.0, -1.0],
        ];
        assert!(any_determined(&mut m, 4));
    }

    #[test]
    fn no_withheld_entry_is_determined_after_protection() {
        // Many small cells scattered over a 6 × 6 table.
        let mut cells = Vec::new();
        for r in 1..=6u64 {
            for c in 1..=6u64 {
                cells.push((r, c, (r * 7 + c * 3) % 9 + 1));
            }
        }
        let grid = table(&cells);
        let w = protect(&grid, |_, a| a.reports() < 4, (false, Some(&known(4))));
        assert!(w.values().any(|r| *r == Rule::SmallCell));
        assert!(w.values().any(|r| *r == Rule::Secondary));
        let mut work = Work::per_table();
        let lines = Lines::new(&grid);
        assert!(determined_group(&grid, &lines, &w, (&known(4), &mut work)).is_none());
    }

    /// Every value each withheld entry of a 2-D table of counts can take, found by
    /// trying every assignment (independent of the linear programs): an unlisted small
    /// entry holds 0 to `minimum - 1`, a listed withheld one `minimum` to the grand total,
    /// and every line adds up. `None` when there are too many assignments to try.
    fn feasible_values(
        grid: &Grid,
        withheld: &BTreeMap<Key, Rule>,
        minimum: u64,
        metric: Additive,
    ) -> Option<BTreeMap<Key, BTreeSet<u64>>> {
        let of = |acc: &Acc| metric.of(&acc.sums);
        let total = grid.entries.get(&[ALL, ALL, 0]).map_or(0, of);
        let unknowns: Vec<(Key, u64, u64)> = withheld
            .iter()
            .map(|(k, rule)| match (metric, rule) {
                (Additive::Reports, Rule::SmallCell) => (*k, 0, minimum - 1),
                (Additive::Reports, _) => (*k, minimum, total),
                _ => (*k, 0, total),
            })
            .collect();
        let tries: u64 = unknowns.iter().map(|(_, lo, hi)| hi - lo + 1).product();
        if tries > 3_000_000 {
            return None;
        }
        let lines = Lines::new(grid);
        let mut values: BTreeMap<Key, BTreeSet<u64>> = BTreeMap::new();
        let mut at: Vec<u64> = unknowns.iter().map(|(_, lo, _)| *lo).collect();
        loop {
            let value = |k: &Key| {
                unknowns
                    .iter()
                    .position(|(u, _, _)| u == k)
                    .map_or_else(|| grid.entries.get(k).map_or(0, of), |i| at[i])
            };
            let adds_up = lines.members.iter().all(|((axis, _), members)| {
                let cells: u64 = members.iter().filter(|k| k[*axis] != ALL).map(value).sum();
                let margin = members.iter().find(|k| k[*axis] == ALL).map_or(0, value);
                cells == margin
            });
            if adds_up {
                for (i, (k, _, _)) in unknowns.iter().enumerate() {
                    values.entry(*k).or_default().insert(at[i]);
                }
            }
            // The next assignment.
            let mut i = 0;
            loop {
                if i == at.len() {
                    return Some(values);
                }
                if at[i] < unknowns[i].2 {
                    at[i] += 1;
                    break;
                }
                at[i] = unknowns[i].1;
                i += 1;
            }
        }
    }

    #[test]
    fn a_small_cell_is_not_pinned_by_the_bounds_the_analyst_knows() {
        // Row 1: 2, 3, 2 (the 2s too small, so unlisted: at most 2 each); row 2: 4, 5, 6.
        // Each line then has two withheld entries and no equation pins one, but row 1's
        // 7 less its 3 leaves 4 for two entries of at most 2: both are 2.
        let grid = table(&[
            (1, 1, 2),
            (1, 2, 3),
            (1, 3, 2),
            (2, 1, 4),
            (2, 2, 5),
            (2, 3, 6),
        ]);
        let w = protect(&grid, |_, a| a.reports() < 3, (false, Some(&known(3))));
        let values = feasible_values(&grid, &w, 3, Additive::Reports).unwrap();
        for (key, rule) in &w {
            if *rule == Rule::SmallCell {
                assert!(values[key].len() > 1, "{key:?} pinned: {values:?}");
            }
        }
    }

    #[test]
    fn a_small_cells_deaths_are_not_pinned_by_none_being_negative() {
        // Row 1: 2 reports with 5 deaths (too small), 4 with none; row 2: 4 and 5 reports,
        // no deaths. With every interior cell withheld, row 2's 0 deaths make both of its
        // cells 0, and column 1's 5 deaths are then all the small cell's: pinned.
        let mut interior = crate::analytics::grid::Cells::default();
        for (r, c, n, deaths) in [(1, 1, 2, 5), (1, 2, 4, 0), (2, 1, 4, 0), (2, 2, 5, 0)] {
            let mut with_deaths = sums(n - 1);
            with_deaths[Additive::Deaths as usize] = deaths;
            let mut acc = Acc::default();
            acc.add(1, &with_deaths);
            acc.add(2, &sums(1));
            interior.insert([r, c, 0], acc);
        }
        let mut grid = Grid::new(2);
        grid.roll_up(interior, &[0, 1]);
        let known = Known {
            minimum: 3,
            metrics: vec![Additive::Reports, Additive::Deaths],
            multi_valued: [false; 3],
        };
        let w = protect(&grid, |_, a| a.reports() < 3, (false, Some(&known)));
        assert_eq!(w.get(&[1, 1, 0]), Some(&Rule::SmallCell));
        for metric in [Additive::Reports, Additive::Deaths] {
            let values = feasible_values(&grid, &w, 3, metric).unwrap();
            assert!(values[&[1, 1, 0]].len() > 1, "{metric:?}: {values:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// After protection no small cell of a small two-way table can be pinned, by
        /// equations or by bounds, as every assignment of the withheld entries shows.
        #[test]
        fn no_small_cell_of_a_two_way_table_is_pinned(
            counts in proptest::collection::vec(1u64..7, 6),
            minimum in 2u64..4,
        ) {
            let cells: Vec<(u64, u64, u64)> = counts
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u64 / 3 + 1, i as u64 % 3 + 1, *n))
                .collect();
            let grid = table(&cells);
            let w = protect(&grid, |_, a| a.reports() < minimum, (false, Some(&known(minimum))));
            if let Some(values) = feasible_values(&grid, &w, minimum, Additive::Reports) {
                for (key, rule) in &w {
                    if *rule == Rule::SmallCell {
                        proptest::prop_assert!(values[key].len() > 1, "{:?} pinned: {:?}", key, values);
                    }
                }
            }
        }
    }

    #[test]
    fn dominance_is_withheld_only_when_configured() {
        let mut interior = crate::analytics::grid::Cells::default();
        let mut acc = Acc::default();
        acc.add(7, &sums(10));
        interior.insert([1, 0, 0], acc);
        let mut grid = Grid::new(1);
        grid.roll_up(interior, &[0]);
        assert!(protect(&grid, |_, a| a.reports() < 3, (false, Some(&known(3)))).is_empty());
        let w = protect(&grid, |_, a| a.reports() < 3, (true, Some(&known(3))));
        assert_eq!(w.get(&[1, 0, 0]), Some(&Rule::Dominance));
    }
}
