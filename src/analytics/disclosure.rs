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
//!    Each time one is found, the smallest shown entry on its lines is withheld too.
//!
//! Along multi-valued dimensions (transit, nationality) cells add up to more than the
//! margin; treating those lines as equations too only withholds more, never less.

use std::collections::{BTreeMap, BTreeSet};

use super::grid::{ALL, Acc, Grid, Key};

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

type LineId = (usize, Key);

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
/// are too small to show.
pub(super) fn protect(
    grid: &Grid,
    small: impl Fn(&Key, &Acc) -> bool,
    (suppress_single_state, secondary): (bool, bool),
) -> BTreeMap<Key, Rule> {
    let mut withheld = BTreeMap::new();
    for (key, acc) in &grid.entries {
        if small(key, acc) {
            withheld.insert(*key, Rule::SmallCell);
        } else if suppress_single_state && acc.single_state() {
            withheld.insert(*key, Rule::Dominance);
        }
    }
    if withheld.is_empty() || grid.dimensions == 0 || !secondary {
        return withheld;
    }
    let lines = Lines::new(grid);
    // Smaller entries are cheaper to withhold; among equals, cells before margins.
    let cost = |key: &Key| {
        let reports = grid.entries.get(key).map_or(0, super::grid::Acc::reports);
        (reports, key.iter().filter(|v| **v == ALL).count(), *key)
    };
    loop {
        one_per_line(&lines, &mut withheld, &cost);
        let Some(group) = determined_group(&lines, &withheld) else {
            break;
        };
        let candidate = group
            .lines
            .iter()
            .flat_map(|line| &lines.members[line])
            .filter(|k| !withheld.contains_key(*k))
            .min_by_key(|k| cost(k))
            .copied();
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

/// The first connected group of withheld entries that the lines' equations pin down.
fn determined_group(lines: &Lines, withheld: &BTreeMap<Key, Rule>) -> Option<Group> {
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
                exact: true,
            });
        }
    }
    None
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

    /// What `reports` reports add, nothing else.
    fn sums(reports: u64) -> crate::store::counters::Sums {
        let mut sums = [0; crate::store::counters::STORED];
        sums[0] = reports;
        sums
    }

    /// A 2-D table from interior counts, with all margins.
    fn table(cells: &[(u64, u64, u64)]) -> Grid {
        let mut interior = crate::analytics::grid::Cells::default();
        for (r, c, n) in cells {
            // Two states, so that nothing is single-state.
            let mut acc = Acc::default();
            acc.add(1, &sums(*n - 1), false);
            acc.add(2, &sums(1), false);
            interior.insert([*r, *c, 0], acc);
        }
        let mut grid = Grid::new(2);
        grid.roll_up(interior, &[0, 1]);
        grid
    }

    #[test]
    fn a_small_cell_takes_a_second_cell_on_its_row_and_column() {
        let grid = table(&[(1, 1, 2), (1, 2, 10), (2, 1, 20), (2, 2, 30)]);
        let w = protect(&grid, |_, a| a.reports() < 3, (false, true));
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
        let w = protect(&grid, |_, a| a.reports() < 4, (false, true));
        assert!(w.values().any(|r| *r == Rule::SmallCell));
        assert!(w.values().any(|r| *r == Rule::Secondary));
        assert!(determined_group(&Lines::new(&grid), &w).is_none());
    }

    #[test]
    fn dominance_is_withheld_only_when_configured() {
        let mut interior = crate::analytics::grid::Cells::default();
        let mut acc = Acc::default();
        acc.add(7, &sums(10), false);
        interior.insert([1, 0, 0], acc);
        let mut grid = Grid::new(1);
        grid.roll_up(interior, &[0]);
        assert!(protect(&grid, |_, a| a.reports() < 3, (false, true)).is_empty());
        let w = protect(&grid, |_, a| a.reports() < 3, (true, true));
        assert_eq!(w.get(&[1, 0, 0]), Some(&Rule::Dominance));
    }
}
