//! Turns a table into the API's response: the figures to show (exact, perturbed by the
//! cell key method, or noisy under a privacy budget), what suppression withholds, fee
//! quartiles over enough reports, labels, and the notes and protection that say what
//! applied.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{
    AggregateError, AggregateQuery, Answer, Dimension, Metric, Mode, Settings, Source, budget,
    disclosure, fees,
    grid::{ALL, Acc, Grid, Key},
    intervals, parallel, perturbation,
};
use crate::{
    pb,
    report::Category,
    store::counters::{self, Additive, Cuboid, NONE, SUMS},
};

/// Builds the answer to `query` from `grid`, protected as `mode` says: the figures to
/// show, then what suppression withholds.
pub(super) fn answer(
    query: &AggregateQuery,
    settings: &Settings,
    grid: &mut Grid,
    source: Source,
    (mode, for_a_state): (Mode, bool),
) -> Result<Answer, AggregateError> {
    let minimum = settings.minimum_reports;
    let total = grand_total(query.dimensions.len());
    let counted = grid.entries.get(&total).map_or(0, Acc::reports);
    if for_a_state {
        // Others' reports too few to show (true or perturbed) are left out, not shown.
        grid.leave_out_few_others(|n, key| n < minimum || perturbation::count(n, key) < minimum);
    }
    let wants_fees = query.metrics.contains(&Metric::FeePerPerson);
    let shown = match mode {
        Mode::Budget(_) if wants_fees => return Err(AggregateError::FeesUnderBudget),
        Mode::Budget(budget) => Shown::Noisy(budget::noisy(query, grid, budget)?),
        Mode::Exact => Shown::Worked { perturb: false },
        Mode::CellKey => Shown::Worked { perturb: true },
    };
    let withheld = withheld(query, grid, &shown, (settings, mode));
    // Outside a budget (which lists every cell of the public domain, each with noise), a
    // cell too small to show is left out as an empty cell is: listed as withheld, it
    // would say that some report matches there, and sweeping filters would read a
    // withheld report's route, month or place back one question at a time.
    let unlisted = |key: &Key| {
        !matches!(mode, Mode::Budget(_))
            && matches!(
                withheld.get(key),
                Some(disclosure::Rule::SmallCell | disclosure::Rule::Dominance)
            )
    };
    let mut entries: Vec<(&Key, &Acc)> = grid
        .entries
        .iter()
        .filter(|(key, _)| !unlisted(key))
        .collect();
    entries.sort_unstable_by_key(|(key, _)| *key);
    let keys: Vec<&Key> = entries.iter().map(|(key, _)| *key).collect();
    let perturb_fees = mode == Mode::CellKey;
    let mut fees = all_fee_quartiles(grid, (wants_fees, &keys), &withheld, settings, perturb_fees);
    let mut flagged = 0u32;
    // Each dimension's labels, written once per value (a table repeats them many times).
    let mut labels_of: [FxHashMap<u64, String>; 3] = Default::default();
    let cells = entries
        .into_iter()
        .map(|(key, acc)| {
            let labels = query
                .dimensions
                .iter()
                .zip(key)
                .zip(&mut labels_of)
                .map(|((d, v), known)| known.entry(*v).or_insert_with(|| label(*d, *v)).clone())
                .collect();
            if let Some(rule) = withheld.get(key) {
                return pb::Cell {
                    keys: labels,
                    suppressed: rule_to_pb(*rule) as i32,
                    ..pb::Cell::default()
                };
            }
            // Whether a cell is from one state is a fact about true data: flagged on exact
            // figures only. On perturbed ones it would say whether other states have a
            // report or two beside one state's (the margin of `--by state` flagged or not),
            // and under a budget it is not covered by the budget.
            let single_state = mode == Mode::Exact && acc.single_state();
            // A cell of one named state is one state's by definition: not worth a note.
            let named_state = query
                .dimensions
                .iter()
                .zip(key)
                .any(|(d, v)| *d == Dimension::ReportingState && *v != ALL);
            flagged += u32::from(single_state && !named_state);
            let fees = fees.remove(key).unwrap_or_default();
            pb::Cell {
                keys: labels,
                suppressed: pb::SuppressionRule::Unspecified as i32,
                values: query
                    .metrics
                    .iter()
                    .filter_map(|m| match m {
                        Metric::Sum(a) => Some(shown.figure(key, acc, *a)),
                        Metric::FeePerPerson => None,
                    })
                    .collect(),
                fees,
                single_state,
            }
        })
        .collect();
    let counts = Counts {
        flagged,
        fees_asked: wants_fees,
        for_a_state,
        small_unlisted: (!matches!(mode, Mode::Budget(_)))
            .then_some(!grid.entries.contains_key(&total) || unlisted(&total)),
    };
    Ok(Answer {
        response: pb::AggregateResponse {
            group_by: query.request.group_by.clone(),
            metrics: query.request.metrics.clone(),
            cells,
            notes: notes(&withheld, settings, &counts),
            minimum_reports: u32::try_from(minimum).unwrap_or(u32::MAX),
            fee_currency: settings.fee_currency.clone(),
            source: source.label().to_owned(),
            protection: Some(protection(query, settings, (mode, for_a_state))),
        },
        counted,
        by_state: grid
            .by_state
            .iter()
            .map(|(s, n)| (counters::unpack_country(u64::from(*s)), *n))
            .collect(),
        in_scope: Vec::new(),
    })
}

/// Where the figures a cell shows come from.
enum Shown {
    /// Worked out from the cell when asked for: exact, or perturbed by the cell key
    /// method.
    Worked { perturb: bool },
    /// Drawn under a privacy budget for every entry beforehand (indexed by `Additive`).
    Noisy(FxHashMap<Key, [u64; SUMS]>),
}

impl Shown {
    /// The figure the entry at `key` shows for `metric`.
    fn figure(&self, key: &Key, acc: &Acc, metric: Additive) -> u64 {
        match self {
            Self::Noisy(figures) => figures.get(key).map_or(0, |f| f[metric as usize]),
            Self::Worked { perturb: false } => metric.of(&acc.sums),
            Self::Worked { perturb: true } if metric == Additive::Reports => {
                // The asking state's own reports as they are, the others' through the
                // table by their own count (a cell of its own reports only is all
                // "others"): the row of the cell's total gave three other states'
                // reports beside own ones the spread of a large cell, not the small
                // row's, and a count of 1 or 2 for them.
                let others = acc.others();
                let own = acc.reports() - others;
                if others == 0 {
                    perturbation::count(acc.reports(), acc.cell_key())
                } else {
                    own + perturbation::count(others, acc.cell_key())
                }
            }
            Self::Worked { perturb: true } => {
                let (own, (others, noise)) = acc.own_and_others(metric);
                own.saturating_add(perturbation::magnitude(others, noise))
            }
        }
    }
}

/// What suppression withholds, given the figures `shown`.
fn withheld(
    query: &AggregateQuery,
    grid: &Grid,
    shown: &Shown,
    (settings, mode): (&Settings, Mode),
) -> BTreeMap<Key, disclosure::Rule> {
    let minimum = settings.minimum_reports;
    let shown_reports = |key: &Key, acc: &Acc| shown.figure(key, acc, Additive::Reports);
    if let Mode::Budget(_) = mode {
        // Only the noisy counts: anything that looked at true figures would not be
        // covered by the budget.
        return grid
            .entries
            .iter()
            .filter(|(key, acc)| shown_reports(key, acc) < minimum)
            .map(|(key, _)| (*key, disclosure::Rule::SmallCell))
            .collect();
    }
    // A cell is small when its true or its shown count is (perturbation never shows
    // what the true count withholds). A state analyst's cells hold no few reports of
    // other states beside its own here: `answer` left those out.
    let small = |key: &Key, acc: &Acc| acc.reports() < minimum || shown_reports(key, acc) < minimum;
    // Secondary suppression guards exact figures. Under the cell key method a margin less
    // its shown cells is no exact figure: each report brings its own fixed noise to every
    // cell it is in, so what remains is the withheld reports' values moved by their own
    // 10–20 % — what differencing two answers gives, and no more (docs/disclosure.md). A
    // cell withheld for it would only tell that a small cell lies on its line.
    let known = (mode == Mode::Exact).then(|| {
        let mut multi_valued = [false; 3];
        for (axis, dimension) in multi_valued.iter_mut().zip(&query.dimensions) {
            *axis = dimension.multi_valued();
        }
        intervals::Known {
            minimum,
            metrics: query
                .metrics
                .iter()
                .filter_map(|m| match m {
                    Metric::Sum(a) => Some(*a),
                    Metric::FeePerPerson => None,
                })
                .collect(),
            multi_valued,
        }
    });
    disclosure::protect(
        grid,
        small,
        (settings.suppress_single_state, known.as_ref()),
    )
}

/// [`fee_quartiles`] of every entry of `keys` not withheld, worked out over the cores
/// (none unless `wanted`).
fn all_fee_quartiles<'a>(
    grid: &Grid,
    (wanted, keys): (bool, &[&'a Key]),
    withheld: &BTreeMap<Key, disclosure::Rule>,
    settings: &Settings,
    perturbed: bool,
) -> FxHashMap<&'a Key, Vec<pb::FeeQuantiles>> {
    if !wanted {
        return FxHashMap::default();
    }
    let shown: Vec<&Key> = keys
        .iter()
        .copied()
        .filter(|key| !withheld.contains_key(*key))
        .collect();
    let observations = shown
        .iter()
        .map(|key| grid.entries.get(*key).map_or(0, |acc| acc.fees.len()))
        .sum();
    let threads = parallel::threads_for(observations, 1 << 14);
    parallel::each(shown, threads, |key| {
        let quartiles = grid
            .entries
            .get(key)
            .map(|acc| fee_quartiles(acc, settings, perturbed))
            .unwrap_or_default();
        (key, quartiles)
    })
    .into_iter()
    .collect()
}

/// A shown cell's fee quartiles: only currencies stated by enough reports (true and
/// perturbed counts), perturbed when `perturbed`.
fn fee_quartiles(acc: &Acc, settings: &Settings, perturbed: bool) -> Vec<pb::FeeQuantiles> {
    let minimum = settings.minimum_reports_for_quantiles;
    let mut shown = Vec::new();
    for group in fees::quartiles(&acc.fees, settings, perturbed) {
        let mut q = group.quantiles;
        let true_reports = q.reports;
        if perturbed {
            q.reports = perturbation::count(q.reports, group.key);
        }
        if true_reports >= minimum && q.reports >= minimum {
            shown.push(q);
        }
    }
    shown
}

/// The protection an answer states.
fn protection(
    query: &AggregateQuery,
    settings: &Settings,
    (mode, for_a_state): (Mode, bool),
) -> pb::Protection {
    let minimum = settings.minimum_reports;
    let mut rules = vec![format!(
        "small cells: fewer than {minimum} reports{}",
        match mode {
            Mode::Exact => String::new(),
            Mode::CellKey if for_a_state => format!(
                " (true or perturbed); other states' reports beside those your state can \
                 read as records count in a cell only where they number {minimum} or more \
                 (true and perturbed), else it shows those your state can read alone"
            ),
            Mode::CellKey => " (true or perturbed)".to_owned(),
            Mode::Budget(_) => " (noisy count)".to_owned(),
        }
    )];
    if !matches!(mode, Mode::Budget(_)) {
        if settings.suppress_single_state {
            rules.push("dominance: every report from one state".to_owned());
        }
        if mode == Mode::Exact {
            rules.push(
                "secondary: no small or single-state cell can be worked out from the shown \
                 cells and margins, even knowing that an unlisted cell is small and a \
                 withheld one is not"
                    .to_owned(),
            );
        }
    }
    rules.push(format!(
        "fee quartiles: over at least {} reports of one currency",
        settings.minimum_reports_for_quantiles
    ));
    let quantiles = u32::try_from(settings.minimum_reports_for_quantiles).unwrap_or(u32::MAX);
    match mode {
        Mode::CellKey => pb::Protection {
            method: "cell-key".to_owned(),
            perturbation_table: perturbation::TABLE_ID.to_owned(),
            max_count_deviation: perturbation::MAX_COUNT_DEVIATION,
            magnitude_scale: perturbation::MAGNITUDE_MAX,
            magnitude_floor: perturbation::MAGNITUDE_FLOOR,
            quartile_scale: perturbation::QUARTILE_SCALE,
            suppression_rules: rules,
            minimum_reports_for_quantiles: quantiles,
            ..pb::Protection::default()
        },
        Mode::Exact => pb::Protection {
            method: "none".to_owned(),
            suppression_rules: rules,
            minimum_reports_for_quantiles: quantiles,
            ..pb::Protection::default()
        },
        Mode::Budget(budget) => {
            let (count_sd, sum_sd) = budget::deviations(query, budget);
            #[allow(clippy::cast_precision_loss)]
            let rho = budget.per_query as f64 / 1e6;
            pb::Protection {
                method: "zcdp".to_owned(),
                suppression_rules: rules,
                minimum_reports_for_quantiles: quantiles,
                rho_charged: rho,
                count_noise_sd: count_sd,
                sum_noise_sd: sum_sd,
                contribution_cap: u32::try_from(budget.cap).unwrap_or(u32::MAX),
                ..pb::Protection::default()
            }
        }
    }
}

/// What the notes count besides the withheld cells.
struct Counts {
    /// Shown cells from a single state.
    flagged: u32,
    /// Whether the table has fee quartiles.
    fees_asked: bool,
    /// Whether it is a state analyst's under the cell key method, whose small cells count
    /// apart the reports its state can read.
    for_a_state: bool,
    /// Outside a budget, small cells are not listed: whether the whole table is not
    /// (fewer reports than the minimum match, perhaps none). `None` under a budget.
    small_unlisted: Option<bool>,
}

fn rule_to_pb(rule: disclosure::Rule) -> pb::SuppressionRule {
    match rule {
        disclosure::Rule::SmallCell => pb::SuppressionRule::SmallCell,
        disclosure::Rule::Dominance => pb::SuppressionRule::Dominance,
        disclosure::Rule::Secondary => pb::SuppressionRule::Secondary,
    }
}

/// The key of the grand total of a table of `dimensions` dimensions.
fn grand_total(dimensions: usize) -> Key {
    let mut total: Key = [0; 3];
    for slot in total.iter_mut().take(dimensions) {
        *slot = ALL;
    }
    total
}

/// The note on cells not listed outside a budget: the whole table (`whole_table`) or
/// some cells, of fewer than `minimum` reports (for a state's analyst, `for_a_state`,
/// others' than those it can read counting only where there are `minimum`), or of one
/// state's only (`single_state`).
fn unlisted((whole_table, for_a_state): (bool, bool), minimum: u64, single_state: bool) -> String {
    // A table emptied by the single-state rule is not one of few reports.
    let or_one_state = if single_state {
        ", or those that match all come from one state (this exchange withholds such cells)"
    } else {
        ""
    };
    match (whole_table, for_a_state) {
        (true, false) => format!(
            "fewer than {minimum} reports match these filters (perhaps none){or_one_state}: \
             nothing is shown"
        ),
        (true, true) => format!(
            "fewer than {minimum} reports match these filters (perhaps none), other states' \
             reports beside those your state can read as records counting only where they \
             number {minimum} or more{or_one_state}: nothing is shown"
        ),
        (false, false) => {
            format!(
                "cells of fewer than {minimum} reports are not listed, as cells of none are not"
            )
        }
        (false, true) => format!(
            "cells of fewer than {minimum} reports are not listed, as cells of none are not; \
             where fewer than {minimum} of a cell's reports are other states' beside those \
             your state can read as records, the cell shows those it can read alone"
        ),
    }
}

/// What was withheld, in words. Outside a budget, a rule that leaves cells out of the
/// listing gets a note of its own that is the same whatever the table holds: how many
/// cells it left out would say as much as listing them.
fn notes(
    withheld: &BTreeMap<Key, disclosure::Rule>,
    settings: &Settings,
    counts: &Counts,
) -> Vec<pb::SuppressionNote> {
    let count =
        |rule| u32::try_from(withheld.values().filter(|r| **r == rule).count()).unwrap_or(u32::MAX);
    let has = |n: u32| if n == 1 { "cell has" } else { "cells have" };
    let (minimum, quantiles) = (
        settings.minimum_reports,
        settings.minimum_reports_for_quantiles,
    );
    let mut notes = Vec::new();
    let mut note = |rule: pb::SuppressionRule, cells: u32, explanation: String| {
        notes.push(pb::SuppressionNote {
            rule: rule as i32,
            cells,
            explanation,
        });
    };
    if let Some(whole_table) = counts.small_unlisted {
        note(
            pb::SuppressionRule::SmallCell,
            0,
            unlisted(
                (whole_table, counts.for_a_state),
                minimum,
                settings.suppress_single_state,
            ),
        );
        if settings.suppress_single_state {
            note(
                pb::SuppressionRule::Dominance,
                0,
                "cells whose reports all come from one state are not listed (this \
                     exchange withholds them)"
                    .to_owned(),
            );
        }
        if counts.fees_asked {
            note(
                pb::SuppressionRule::QuantileMinimum,
                0,
                format!(
                    "a currency stated by fewer than {quantiles} reports in a cell has no \
                     quartiles there{}",
                    if counts.for_a_state {
                        format!(
                            "; where {quantiles} or more are other states' beside those your \
                             state can read as records, its quartiles are over those only, \
                             else over those your state can read"
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
    } else {
        // Under a budget every cell is listed, small ones as such, on noisy counts.
        let small = count(disclosure::Rule::SmallCell);
        if small > 0 {
            note(
                pb::SuppressionRule::SmallCell,
                small,
                format!(
                    "{small} {} fewer than {minimum} reports (noisy count) and {} withheld",
                    has(small),
                    if small == 1 { "is" } else { "are" }
                ),
            );
        }
    }
    let secondary = count(disclosure::Rule::Secondary);
    if secondary > 0 {
        note(
            pb::SuppressionRule::Secondary,
            secondary,
            format!(
                "{secondary} more {} withheld so that no withheld cell can be worked out from \
                 the totals and margins",
                if secondary == 1 {
                    "cell is"
                } else {
                    "cells are"
                }
            ),
        );
    }
    if counts.flagged > 0 {
        note(
            pb::SuppressionRule::Unspecified,
            counts.flagged,
            format!(
                "{} shown {} reports from a single state (flagged single_state)",
                counts.flagged,
                has(counts.flagged)
            ),
        );
    }
    notes
}

/// The label of a dimension value ("2024-03", "AUS", "AFG>AUS", "sea", "*").
pub(super) fn label(dimension: Dimension, value: u64) -> String {
    if value == ALL {
        return "*".to_owned();
    }
    // A table has a label per cell and dimension: the common ones (months, countries,
    // routes) are written into one small string, without formatting machinery.
    let mut out = String::with_capacity(8);
    let country = |out: &mut String, v: u64, none: &str| {
        if v == NONE {
            out.push_str(none);
        } else {
            counters::push_country(out, v);
        }
    };
    let mut digits = itoa::Buffer::new();
    match dimension {
        Dimension::Month => {
            out.push_str(digits.format(value / 12));
            out.push_str(if value % 12 < 9 { "-0" } else { "-" });
            out.push_str(digits.format(value % 12 + 1));
        }
        Dimension::Quarter => {
            out.push_str(digits.format(value / 4));
            out.push_str("-Q");
            out.push_str(digits.format(value % 4 + 1));
        }
        Dimension::Year => out.push_str(digits.format(value)),
        Dimension::Category => out.push_str(
            i32::try_from(value)
                .ok()
                .and_then(Category::from_pb)
                .map_or("none", |c| c.label()),
        ),
        Dimension::ReportingState
        | Dimension::Counted(
            Cuboid::Origin | Cuboid::Transit | Cuboid::Destination | Cuboid::LocationCountry,
        ) => country(&mut out, value, "none"),
        Dimension::Counted(Cuboid::Nationality) => country(&mut out, value, "unknown"),
        Dimension::Counted(Cuboid::Route) => {
            country(&mut out, value >> 24, "?");
            out.push('>');
            country(&mut out, value & 0xff_ffff, "?");
        }
        Dimension::Counted(Cuboid::ModusOperandi) => {
            return enum_label(value, |v| {
                pb::ModusOperandi::try_from(v).ok().map(|e| e.as_str_name())
            });
        }
        Dimension::Counted(Cuboid::MaritimeEvent) => {
            return enum_label(value, |v| {
                pb::MaritimeEvent::try_from(v).ok().map(|e| e.as_str_name())
            });
        }
        Dimension::Counted(Cuboid::VesselType) => {
            return enum_label(value, |v| {
                pb::VesselType::try_from(v).ok().map(|e| e.as_str_name())
            });
        }
        Dimension::Counted(Cuboid::SeaArea) => {
            return enum_label(value, |v| {
                pb::SeaArea::try_from(v).ok().map(|e| e.as_str_name())
            });
        }
        Dimension::Counted(Cuboid::Base) => {}
    }
    out
}

/// "MODUS_OPERANDI_SEA" → "sea"; 0 → "none".
fn enum_label(value: u64, name: impl Fn(i32) -> Option<&'static str>) -> String {
    let Some(full) = i32::try_from(value).ok().filter(|v| *v != 0).and_then(name) else {
        return "none".to_owned();
    };
    // The prefix is the enum's name: everything up to the part that names the value.
    let prefixes = [
        "MODUS_OPERANDI_",
        "MARITIME_EVENT_",
        "VESSEL_TYPE_",
        "SEA_AREA_",
    ];
    let short = prefixes
        .iter()
        .find_map(|p| full.strip_prefix(p))
        .unwrap_or(full);
    short.to_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Labels written by hand read as the formatted ones they replace.
        #[test]
        fn labels_read_as_formatted(value in 0u64..1 << 40, origin in 0u64..1 << 24) {
            proptest::prop_assert_eq!(
                label(Dimension::Month, value),
                format!("{}-{:02}", value / 12, value % 12 + 1)
            );
            proptest::prop_assert_eq!(
                label(Dimension::Quarter, value),
                format!("{}-Q{}", value / 4, value % 4 + 1)
            );
            proptest::prop_assert_eq!(label(Dimension::Year, value), value.to_string());
            let route = origin << 24 | (value & 0xff_ffff);
            let country = |v: u64| if v == NONE { "?".to_owned() } else { counters::unpack_country(v) };
            proptest::prop_assert_eq!(
                label(Dimension::Counted(Cuboid::Route), route),
                format!("{}>{}", country(origin), country(value & 0xff_ffff))
            );
        }
    }

    #[test]
    fn common_labels() {
        let aus = counters::pack_country("AUS");
        let afg = counters::pack_country("AFG");
        assert_eq!(label(Dimension::Month, 2024 * 12 + 2), "2024-03");
        assert_eq!(label(Dimension::Month, 2024 * 12 + 11), "2024-12");
        assert_eq!(label(Dimension::Quarter, 2024 * 4 + 3), "2024-Q4");
        assert_eq!(label(Dimension::ReportingState, aus), "AUS");
        assert_eq!(label(Dimension::ReportingState, NONE), "none");
        assert_eq!(
            label(Dimension::Counted(Cuboid::Nationality), NONE),
            "unknown"
        );
        assert_eq!(
            label(Dimension::Counted(Cuboid::Route), afg << 24 | aus),
            "AFG>AUS"
        );
        assert_eq!(label(Dimension::Counted(Cuboid::Route), aus), "?>AUS");
        assert_eq!(label(Dimension::Month, ALL), "*");
    }
}
