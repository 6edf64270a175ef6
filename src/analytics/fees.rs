//! Fee-per-person quartiles of a cell, converted to the exchange's base currency where
//! a rate is configured, otherwise per currency.

use super::{Settings, grid::FeeCounts};
use crate::{pb, store::counters};

/// One currency group's quartiles, with what its count's noise and its minimum need.
pub(super) struct Group {
    pub quantiles: pb::FeeQuantiles,
    /// The key of the noise of its number of reports: when perturbed, the sum of the keyed
    /// hashes of the amounts of other states than the asking analyst's (of all, when
    /// there are none), so that neither the other reports in the cell nor the asking
    /// state's own fees change it.
    pub key: u32,
    /// Its reports from other states than the asking analyst's.
    pub others: u64,
}

/// The quartiles of `fees` ((packed currency, amount) → reports; `own`: those of the
/// asking analyst's state), per currency group. When `perturbed` the amounts are the
/// moved ones (`counters::moved_fee`), the quartiles are rounded to whole units, and
/// each group's key is the sum of its fees' hashes (`RecordKeys::of_value`, carried in
/// `fees`).
pub(super) fn quartiles(
    fees: &FeeCounts,
    own: &FeeCounts,
    settings: &Settings,
    perturbed: bool,
) -> Vec<Group> {
    #[derive(Default)]
    struct Pending {
        values: Vec<(f64, u64)>,
        key_others: u64,
        key_all: u64,
        own: u64,
    }
    let mut groups: Vec<(String, Pending)> = Vec::new();
    // Entries come in (currency, amount) order: each currency's group and rate are
    // found once, and the asking state's own counts are walked alongside.
    let mut own = own.iter().peekable();
    let mut current: Option<(u32, usize, f64)> = None;
    for ((currency, raw), n, hash) in fees.hashed() {
        if current.is_none_or(|(c, _, _)| c != currency) {
            let code = counters::unpack_country(u64::from(currency));
            let (group, rate) = if code == settings.fee_currency {
                (code, 1.0)
            } else if let Some((_, rate)) = settings.rates.iter().find(|(c, _)| *c == code) {
                (settings.fee_currency.clone(), *rate)
            } else {
                (code, 1.0)
            };
            let at = groups
                .iter()
                .position(|(g, _)| *g == group)
                .unwrap_or_else(|| {
                    groups.push((group, Pending::default()));
                    groups.len() - 1
                });
            current = Some((currency, at, rate));
        }
        let Some((_, at, rate)) = current else {
            continue;
        };
        while own.next_if(|(k, _)| *k < (currency, raw)).is_some() {}
        let own_n = own
            .next_if(|(k, _)| *k == (currency, raw))
            .map_or(0, |(_, n)| n);
        // Amounts are at most 10^9 (validation), exact in an f64.
        #[allow(clippy::cast_precision_loss)]
        let value = raw as f64 * rate;
        let hash = if perturbed { u64::from(hash) } else { 0 };
        let entry = &mut groups[at].1;
        entry.values.push((value, n));
        entry.key_all = entry.key_all.wrapping_add(hash.wrapping_mul(n));
        entry.key_others = entry
            .key_others
            .wrapping_add(hash.wrapping_mul(n.saturating_sub(own_n)));
        entry.own += own_n;
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .map(|(currency, mut pending)| {
            // One currency's amounts come in order; converted ones may interleave.
            if !pending.values.is_sorted_by(|a, b| a.0 <= b.0) {
                pending.values.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            let values = &pending.values;
            let reports = values.iter().map(|(_, n)| n).sum();
            let round = |v: f64| if perturbed { v.round() } else { v };
            let others = reports - pending.own.min(reports);
            let key = if others == 0 {
                pending.key_all
            } else {
                pending.key_others
            };
            // The low half is the key modulo 2^32.
            #[allow(clippy::cast_possible_truncation)]
            let key = key as u32;
            Group {
                quantiles: pb::FeeQuantiles {
                    currency,
                    reports,
                    first_quartile: round(quantile(values, reports, 0.25)),
                    median: round(quantile(values, reports, 0.5)),
                    third_quartile: round(quantile(values, reports, 0.75)),
                },
                key,
                others,
            }
        })
        .collect()
}

/// The `p` quantile of sorted weighted values, interpolating linearly between order
/// statistics (Hyndman & Fan type 7, the default of R and NumPy).
fn quantile(sorted: &[(f64, u64)], n: u64, p: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let h = (n - 1) as f64 * p;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lower = h.floor() as u64;
    #[allow(clippy::cast_precision_loss)]
    let fraction = h - lower as f64;
    let at = |rank: u64| {
        let mut seen = 0;
        for (value, count) in sorted {
            seen += count;
            if rank < seen {
                return *value;
            }
        }
        sorted.last().map_or(0.0, |(v, _)| *v)
    };
    let low = at(lower);
    if fraction == 0.0 {
        low
    } else {
        low + fraction * (at(lower + 1) - low)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The unperturbed quartiles of `fees`, none of them the asker's own.
    fn quantiles(fees: &BTreeMap<(u32, u64), u64>, settings: &Settings) -> Vec<pb::FeeQuantiles> {
        quartiles(&counts(fees), &FeeCounts::default(), settings, false)
            .into_iter()
            .map(|g| g.quantiles)
            .collect()
    }

    /// Counts as the scan makes them.
    fn counts(fees: &BTreeMap<(u32, u64), u64>) -> FeeCounts {
        FeeCounts::of_sorted(
            fees.iter()
                .flat_map(|(fee, n)| std::iter::repeat_n(*fee, usize::try_from(*n).unwrap())),
            |_| 0,
        )
    }

    fn settings(base: &str, rates: &[(&str, f64)]) -> Settings {
        Settings {
            minimum_reports: 3,
            minimum_reports_for_quantiles: 10,
            perturb_regional_analyst: true,
            budget: None,
            suppress_single_state: false,
            fee_currency: base.to_owned(),
            rates: rates.iter().map(|(c, r)| ((*c).to_owned(), *r)).collect(),
            max_cells: 1,
        }
    }

    fn fee(code: &str, amount: u64) -> (u32, u64) {
        (
            u32::try_from(counters::pack_country(code)).unwrap_or(0),
            amount,
        )
    }

    #[test]
    fn quartiles_interpolate_like_r_type_7() {
        // 1, 2, 3, 4 → 1.75, 2.5, 3.25 (R: quantile(1:4)).
        let fees = [1, 2, 3, 4]
            .into_iter()
            .map(|a| (fee("USD", a), 1))
            .collect::<BTreeMap<_, _>>();
        let q = quantiles(&fees, &settings("", &[]));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].reports, 4);
        assert!((q[0].first_quartile - 1.75).abs() < 1e-9);
        assert!((q[0].median - 2.5).abs() < 1e-9);
        assert!((q[0].third_quartile - 3.25).abs() < 1e-9);
    }

    #[test]
    fn fees_convert_only_where_a_rate_is_configured() {
        let fees = [
            (fee("USD", 1000), 1),
            (fee("AUD", 2000), 1),
            (fee("THB", 30_000), 1),
        ]
        .into_iter()
        .collect::<BTreeMap<_, _>>();
        let none = quantiles(&fees, &settings("", &[]));
        let codes: Vec<&str> = none.iter().map(|q| q.currency.as_str()).collect();
        assert_eq!(codes, ["AUD", "THB", "USD"]);
        let some = quantiles(&fees, &settings("USD", &[("AUD", 0.5)]));
        let codes: Vec<&str> = some.iter().map(|q| q.currency.as_str()).collect();
        assert_eq!(codes, ["THB", "USD"]);
        let usd = &some[1];
        assert_eq!(usd.reports, 2);
        // AUD 2000 × 0.5 = USD 1000: both observations are 1000.
        assert!((usd.median - 1000.0).abs() < 1e-9);
    }
}
