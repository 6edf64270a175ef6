//! Turns a protected table into the API's response: labels, values, fee quartiles and
//! the notes that say which rule withheld what.

use std::collections::BTreeMap;

use super::{
    AggregateQuery, Answer, Dimension, Metric, Settings, Source, disclosure, fees,
    grid::{ALL, Grid, Key},
};
use crate::{
    pb,
    report::Category,
    store::counters::{self, Cuboid, NONE},
};

/// Builds the answer to `query` from `grid`, withholding what disclosure control says.
pub(super) fn answer(
    query: &AggregateQuery,
    settings: &Settings,
    grid: &Grid,
    source: Source,
) -> Answer {
    let withheld = disclosure::protect(
        grid,
        settings.minimum_reports,
        settings.suppress_single_state,
    );
    let mut keys: Vec<&Key> = grid.entries.keys().collect();
    keys.sort_unstable();
    let wants_fees = query.metrics.contains(&Metric::FeePerPerson);
    let mut flagged = 0u32;
    let cells = keys
        .into_iter()
        .map(|key| {
            let acc = &grid.entries[key];
            let labels = query
                .dimensions
                .iter()
                .zip(key)
                .map(|(d, v)| label(*d, *v))
                .collect();
            let rule = withheld.get(key);
            let Some(rule) = rule else {
                let single_state = acc.single_state();
                flagged += u32::from(single_state);
                return pb::Cell {
                    keys: labels,
                    suppressed: pb::SuppressionRule::Unspecified as i32,
                    values: query
                        .metrics
                        .iter()
                        .filter_map(|m| match m {
                            Metric::Sum(a) => Some(a.of(&acc.sums)),
                            Metric::FeePerPerson => None,
                        })
                        .collect(),
                    fees: if wants_fees {
                        fees::quartiles(&acc.fees, settings)
                    } else {
                        Vec::new()
                    },
                    single_state,
                };
            };
            pb::Cell {
                keys: labels,
                suppressed: rule_to_pb(*rule) as i32,
                ..pb::Cell::default()
            }
        })
        .collect();
    let mut total: Key = [0; 3];
    for slot in total.iter_mut().take(query.dimensions.len()) {
        *slot = ALL;
    }
    let grand = grid.entries.get(&total);
    Answer {
        response: pb::AggregateResponse {
            group_by: query.request.group_by.clone(),
            metrics: query.request.metrics.clone(),
            cells,
            notes: notes(&withheld, settings, flagged),
            minimum_reports: u32::try_from(settings.minimum_reports).unwrap_or(u32::MAX),
            fee_currency: settings.fee_currency.clone(),
            source: match source {
                Source::Counters => "counters",
                Source::Scan => "scan",
            }
            .to_owned(),
        },
        counted: grand.map_or(0, super::grid::Acc::reports),
        by_state: grid
            .by_state
            .iter()
            .map(|(s, n)| (counters::unpack_country(u64::from(*s)), *n))
            .collect(),
    }
}

fn rule_to_pb(rule: disclosure::Rule) -> pb::SuppressionRule {
    match rule {
        disclosure::Rule::SmallCell => pb::SuppressionRule::SmallCell,
        disclosure::Rule::Dominance => pb::SuppressionRule::Dominance,
        disclosure::Rule::Secondary => pb::SuppressionRule::Secondary,
    }
}

fn notes(
    withheld: &BTreeMap<Key, disclosure::Rule>,
    settings: &Settings,
    flagged: u32,
) -> Vec<pb::SuppressionNote> {
    let count =
        |rule| u32::try_from(withheld.values().filter(|r| **r == rule).count()).unwrap_or(u32::MAX);
    let has = |n: u32| if n == 1 { "cell has" } else { "cells have" };
    let is = |n: u32| if n == 1 { "is" } else { "are" };
    let (small, dominance, secondary) = (
        count(disclosure::Rule::SmallCell),
        count(disclosure::Rule::Dominance),
        count(disclosure::Rule::Secondary),
    );
    [
        (
            pb::SuppressionRule::SmallCell,
            small,
            format!(
                "{small} {} fewer than {} reports and {} withheld",
                has(small),
                settings.minimum_reports,
                is(small)
            ),
        ),
        (
            pb::SuppressionRule::Dominance,
            dominance,
            format!(
                "{dominance} {} reports all from one state and {} withheld (this exchange \
                 withholds single-state cells)",
                has(dominance),
                is(dominance)
            ),
        ),
        (
            pb::SuppressionRule::Secondary,
            secondary,
            format!(
                "{secondary} more {} withheld so that no withheld cell can be worked out \
                 from the totals and margins",
                if secondary == 1 {
                    "cell is"
                } else {
                    "cells are"
                }
            ),
        ),
        (
            pb::SuppressionRule::Unspecified,
            flagged,
            format!(
                "{flagged} shown {} reports from a single state (flagged single_state)",
                has(flagged)
            ),
        ),
    ]
    .into_iter()
    .filter(|(_, cells, _)| *cells > 0)
    .map(|(rule, cells, explanation)| pb::SuppressionNote {
        rule: rule as i32,
        cells,
        explanation,
    })
    .collect()
}

/// The label of a dimension value ("2024-03", "AUS", "AFG>AUS", "sea", "*").
pub(super) fn label(dimension: Dimension, value: u64) -> String {
    if value == ALL {
        return "*".to_owned();
    }
    let country = |v: u64, none: &str| {
        if v == NONE {
            none.to_owned()
        } else {
            counters::unpack_country(v)
        }
    };
    match dimension {
        Dimension::Month => format!("{}-{:02}", value / 12, value % 12 + 1),
        Dimension::Quarter => format!("{}-Q{}", value / 4, value % 4 + 1),
        Dimension::Year => value.to_string(),
        Dimension::Category => i32::try_from(value)
            .ok()
            .and_then(Category::from_pb)
            .map_or_else(|| "none".to_owned(), |c| c.label().to_owned()),
        Dimension::ReportingState
        | Dimension::Counted(
            Cuboid::Origin | Cuboid::Transit | Cuboid::Destination | Cuboid::LocationCountry,
        ) => country(value, "none"),
        Dimension::Counted(Cuboid::Nationality) => country(value, "unknown"),
        Dimension::Counted(Cuboid::Route) => format!(
            "{}>{}",
            country(value >> 24, "?"),
            country(value & 0xff_ffff, "?")
        ),
        Dimension::Counted(Cuboid::ModusOperandi) => enum_label(value, |v| {
            pb::ModusOperandi::try_from(v).ok().map(|e| e.as_str_name())
        }),
        Dimension::Counted(Cuboid::MaritimeEvent) => enum_label(value, |v| {
            pb::MaritimeEvent::try_from(v).ok().map(|e| e.as_str_name())
        }),
        Dimension::Counted(Cuboid::VesselType) => enum_label(value, |v| {
            pb::VesselType::try_from(v).ok().map(|e| e.as_str_name())
        }),
        Dimension::Counted(Cuboid::SeaArea) => enum_label(value, |v| {
            pb::SeaArea::try_from(v).ok().map(|e| e.as_str_name())
        }),
        Dimension::Counted(Cuboid::Base) => String::new(),
    }
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
