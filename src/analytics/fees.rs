//! Fee-per-person quartiles of a cell, converted to the exchange's base currency where
//! a rate is configured, otherwise per currency.
//!
//! A cell keeps its fee observations unsorted, per currency ([`FeeBag`]), with what
//! their noise needs added up as they come; margins are their cells' bags put
//! together. Quartiles are order statistics found by selection (Hoare's quickselect,
//! `slice::select_nth_unstable_by`: linear time), not by sorting every cell.

use super::{Settings, perturbation};
use crate::{pb, store::counters};

/// A cell's fee observations, per currency (packed code, in code order).
#[derive(Debug, Clone, Default)]
pub(super) struct FeeBag(Vec<CurrencyFees>);

/// The fee observations of one currency in a cell.
#[derive(Debug, Clone, Default)]
struct CurrencyFees {
    /// Packed currency (`counters::pack_country`).
    currency: u32,
    /// The amounts of other states' reports than the asking analyst's, in no order.
    amounts: Vec<u64>,
    /// The asking analyst's state's amounts, in no order: left out of the quartiles of a
    /// group that holds others' too (see [`quartiles`]).
    own: Vec<u64>,
    /// The sum of the fees' reports' record keys (0 when unperturbed): of all of them,
    /// and of those of other states than the asking analyst's.
    key_all: u64,
    key_others: u64,
}

impl FeeBag {
    /// Notes one report's fee; `record_key` is the report's record key when perturbed,
    /// else 0.
    #[inline]
    pub(super) fn add(&mut self, currency: u32, amount: u64, own: bool, record_key: u32) {
        let at = match self.0.iter().position(|c| c.currency >= currency) {
            Some(at) if self.0[at].currency == currency => at,
            found => {
                let at = found.unwrap_or(self.0.len());
                self.0.insert(
                    at,
                    CurrencyFees {
                        currency,
                        ..CurrencyFees::default()
                    },
                );
                at
            }
        };
        let fees = &mut self.0[at];
        let key = u64::from(record_key);
        fees.key_all = fees.key_all.wrapping_add(key);
        if own {
            fees.own.push(amount);
        } else {
            fees.amounts.push(amount);
            fees.key_others = fees.key_others.wrapping_add(key);
        }
    }

    /// Adds `other`'s observations to these.
    pub(super) fn absorb(&mut self, other: &Self) {
        for theirs in &other.0 {
            match self
                .0
                .binary_search_by_key(&theirs.currency, |c| c.currency)
            {
                Ok(at) => {
                    let mine = &mut self.0[at];
                    mine.amounts.extend_from_slice(&theirs.amounts);
                    mine.own.extend_from_slice(&theirs.own);
                    mine.key_all = mine.key_all.wrapping_add(theirs.key_all);
                    mine.key_others = mine.key_others.wrapping_add(theirs.key_others);
                }
                Err(at) => self.0.insert(at, theirs.clone()),
            }
        }
    }

    /// Keeps only the asking analyst's state's own observations.
    pub(super) fn keep_own(&mut self) {
        self.0.retain_mut(|c| {
            c.amounts.clear();
            c.key_all = c.key_all.wrapping_sub(c.key_others);
            c.key_others = 0;
            !c.own.is_empty()
        });
    }

    /// The number of observations.
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|c| c.amounts.len() + c.own.len()).sum()
    }

    /// Each distinct (packed currency, amount) with its reports, in order: what the bag
    /// holds whatever order the observations came in.
    #[cfg(test)]
    pub(super) fn counts(&self) -> Vec<((u32, u64), u64)> {
        let mut out: Vec<((u32, u64), u64)> = Vec::new();
        for c in &self.0 {
            let mut amounts = [c.amounts.as_slice(), c.own.as_slice()].concat();
            amounts.sort_unstable();
            for amount in amounts {
                match out.last_mut() {
                    Some((fee, n)) if *fee == (c.currency, amount) => *n += 1,
                    _ => out.push(((c.currency, amount), 1)),
                }
            }
        }
        out
    }
}

/// Bags are equal when they hold the same observations, in whatever order.
impl PartialEq for FeeBag {
    fn eq(&self, other: &Self) -> bool {
        let stats = |b: &Self| -> Vec<(u32, u64, u64)> {
            b.0.iter()
                .map(|c| (c.currency, c.key_all, c.key_others))
                .collect()
        };
        let sorted = |b: &Self| -> Vec<[Vec<u64>; 2]> {
            b.0.iter()
                .map(|c| {
                    [&c.amounts, &c.own].map(|amounts| {
                        let mut a = amounts.clone();
                        a.sort_unstable();
                        a
                    })
                })
                .collect()
        };
        stats(self) == stats(other) && sorted(self) == sorted(other)
    }
}

/// One currency group's quartiles, with what its count's noise needs.
pub(super) struct Group {
    pub quantiles: pb::FeeQuantiles,
    /// The key of the noise of its number of reports: when perturbed, the sum of the
    /// record keys of the reports its quartiles are over (see [`quartiles`]), so that
    /// neither the other reports in the cell nor fees left out change it — the key a
    /// cell of exactly those reports has, so one set of reports shows one count (a group
    /// that was the whole cell showed a second, independent draw of the cell's count).
    pub key: u32,
}

/// The quartiles of `fees`, per currency group. When `perturbed` the amounts are the
/// moved ones (`counters::moved_fee`), the quartiles are rounded to whole units, and
/// each group's key is the sum of its fees' reports' record keys (carried in `fees`).
///
/// A group that holds enough of other states' fees than the asking analyst's has its
/// quartiles, and its count, over those only: padding a group with its own fees at
/// either end, a state could move a quartile onto any single fee of another state's (an
/// adversarial pass read eleven that way from a group of eleven). A group of fewer
/// others' fees than `minimum_reports_for_quantiles` (true or perturbed count) is over
/// the state's own fees alone, as it would be without them: left out, it told which
/// groups hold a fee or two the state cannot read.
pub(super) fn quartiles(fees: &FeeBag, settings: &Settings, perturbed: bool) -> Vec<Group> {
    let minimum = settings.minimum_reports_for_quantiles;
    // Each group's currencies with their rates.
    let mut groups: Vec<(String, Vec<(&CurrencyFees, f64)>)> = Vec::new();
    for currency in &fees.0 {
        let code = counters::unpack_country(u64::from(currency.currency));
        let (group, rate) = if code == settings.fee_currency {
            (code, 1.0)
        } else if let Some((_, rate)) = settings.rates.iter().find(|(c, _)| *c == code) {
            (settings.fee_currency.clone(), *rate)
        } else {
            (code, 1.0)
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, parts)) => parts.push((currency, rate)),
            None => groups.push((group, vec![(currency, rate)])),
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .map(|(currency, parts)| {
            // Validated amounts are at most 10^9, exact in an f64 (beyond 2^53 an amount
            // would round, keeping its order).
            let sum = |key: fn(&CurrencyFees) -> u64| {
                parts
                    .iter()
                    .fold(0u64, |total, (c, _)| total.wrapping_add(key(c)))
            };
            // The low half is the key modulo 2^32.
            #[allow(clippy::cast_possible_truncation)]
            let key_of = |sum: u64| sum as u32;
            let others: u64 = parts.iter().map(|(c, _)| c.amounts.len() as u64).sum();
            let few_others = others > 0
                && (others < minimum
                    || (perturbed
                        && perturbation::count(others, key_of(sum(|c| c.key_others))) < minimum));
            // Enough others' fees, or the state's own alone.
            let own_alone = others == 0 || few_others;
            #[allow(clippy::cast_precision_loss)]
            let mut values: Vec<f64> = parts
                .iter()
                .flat_map(|(c, rate)| {
                    let amounts = if own_alone { &c.own } else { &c.amounts };
                    amounts.iter().map(move |a| *a as f64 * rate)
                })
                .collect();
            let reports = values.len() as u64;
            let key = key_of(if own_alone {
                sum(|c| c.key_all.wrapping_sub(c.key_others))
            } else {
                sum(|c| c.key_others)
            });
            let round = |v: f64| if perturbed { v.round() } else { v };
            let [first, median, third] = quantiles(&mut values, [0.25, 0.5, 0.75]);
            Group {
                quantiles: pb::FeeQuantiles {
                    currency,
                    reports,
                    first_quartile: round(first),
                    median: round(median),
                    third_quartile: round(third),
                },
                key,
            }
        })
        .collect()
}

/// The `ps` quantiles (each in 0..=1) of `values`, interpolating linearly between order
/// statistics (Hyndman & Fan type 7, the default of R and NumPy); 0 for no values.
/// Reorders `values`.
fn quantiles<const K: usize>(values: &mut [f64], ps: [f64; K]) -> [f64; K] {
    let n = values.len();
    if n == 0 {
        return [0.0; K];
    }
    // Each quantile's lower order statistic and how far towards the next it lies.
    let at = ps.map(|p| {
        #[allow(clippy::cast_precision_loss)]
        let h = (n - 1) as f64 * p;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let lower = h.floor() as usize;
        #[allow(clippy::cast_precision_loss)]
        let fraction = h - lower as f64;
        (lower, fraction)
    });
    let mut ranks: Vec<usize> = at
        .iter()
        .flat_map(|(lower, fraction)| {
            std::iter::once(*lower).chain((*fraction > 0.0).then_some(lower + 1))
        })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    // Ranks in ascending order, each selected among the values at and after the one
    // before (all of which are at least that one's value).
    let mut found: Vec<(usize, f64)> = Vec::with_capacity(ranks.len());
    let mut from = 0;
    for rank in ranks {
        let rank = rank.min(n - 1);
        let (_, value, _) = values[from..].select_nth_unstable_by(rank - from, f64::total_cmp);
        found.push((rank, *value));
        from = rank;
    }
    let statistic = |rank: usize| {
        found
            .iter()
            .find(|(r, _)| *r == rank.min(n - 1))
            .map_or(0.0, |(_, v)| *v)
    };
    at.map(|(lower, fraction)| {
        let low = statistic(lower);
        if fraction == 0.0 {
            low
        } else {
            low + fraction * (statistic(lower + 1) - low)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The unperturbed quartiles of `fees`, none of them the asker's own.
    fn quantiles_of(
        fees: &BTreeMap<(u32, u64), u64>,
        settings: &Settings,
    ) -> Vec<pb::FeeQuantiles> {
        let mut bag = FeeBag::default();
        for ((currency, amount), n) in fees {
            for _ in 0..*n {
                bag.add(*currency, *amount, false, 0);
            }
        }
        quartiles(&bag, settings, false)
            .into_iter()
            .map(|g| g.quantiles)
            .collect()
    }

    /// Settings that show quartiles of a single fee: the rules on few fees are tested
    /// apart.
    fn settings(base: &str, rates: &[(&str, f64)]) -> Settings {
        Settings {
            minimum_reports: 3,
            minimum_reports_for_quantiles: 1,
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
        let q = quantiles_of(&fees, &settings("", &[]));
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
        let none = quantiles_of(&fees, &settings("", &[]));
        let codes: Vec<&str> = none.iter().map(|q| q.currency.as_str()).collect();
        assert_eq!(codes, ["AUD", "THB", "USD"]);
        let some = quantiles_of(&fees, &settings("USD", &[("AUD", 0.5)]));
        let codes: Vec<&str> = some.iter().map(|q| q.currency.as_str()).collect();
        assert_eq!(codes, ["THB", "USD"]);
        let usd = &some[1];
        assert_eq!(usd.reports, 2);
        // AUD 2000 × 0.5 = USD 1000: both observations are 1000.
        assert!((usd.median - 1000.0).abs() < 1e-9);
    }

    /// The asking state's own fees neither change a group's noise key nor its quartiles
    /// nor count among its reports; a group of only its own fees has the key and the
    /// quartiles of all of them.
    #[test]
    fn own_fees_change_neither_the_key_nor_the_quartiles() {
        let s = settings("", &[]);
        let usd = fee("USD", 0).0;
        let hash = |a: u64| u32::try_from(a * 2_654_435_761 % (1 << 32)).unwrap_or(0);
        let mut others = FeeBag::default();
        for a in [100, 200, 300] {
            others.add(usd, a, false, hash(a));
        }
        let mut with_own = others.clone();
        // Padding at both ends, which would move every quartile of a group of all.
        for a in [1, 1, 1, 99_999, 99_999] {
            with_own.add(usd, a, true, hash(a));
        }
        let (a, b) = (
            &quartiles(&others, &s, true)[0],
            &quartiles(&with_own, &s, true)[0],
        );
        assert_eq!(a.key, b.key);
        assert_eq!(a.quantiles, b.quantiles);
        assert_eq!(b.quantiles.reports, 3);
        let mut own_only = FeeBag::default();
        for a in [150, 999] {
            own_only.add(usd, a, true, hash(a));
        }
        let g = &quartiles(&own_only, &s, true)[0];
        assert_eq!(g.quantiles.reports, 2);
        assert_eq!(g.key, hash(150).wrapping_add(hash(999)));
    }

    /// A group of fewer others' fees than the minimum is over the state's own alone, as
    /// the group without the others' is: same quartiles, count and key.
    #[test]
    fn a_few_others_fees_are_left_out_of_a_group() {
        let s = Settings {
            minimum_reports_for_quantiles: 10,
            ..settings("", &[])
        };
        let usd = fee("USD", 0).0;
        let hash = |a: u64| u32::try_from(a * 2_654_435_761 % (1 << 32)).unwrap_or(0);
        let mut own = FeeBag::default();
        for a in 1..=12 {
            own.add(usd, 100 * a, true, hash(a));
        }
        let mut beside = own.clone();
        for a in [5, 99_999] {
            beside.add(usd, a, false, hash(a));
        }
        for perturbed in [false, true] {
            let (alone, mixed) = (
                &quartiles(&own, &s, perturbed)[0],
                &quartiles(&beside, &s, perturbed)[0],
            );
            assert_eq!(alone.quantiles, mixed.quantiles);
            assert_eq!(alone.key, mixed.key);
            assert_eq!(mixed.quantiles.reports, 12);
        }
        // Enough of others' fees: over those only.
        for a in 0..s.minimum_reports_for_quantiles + 5 {
            beside.add(usd, 7, false, hash(1000 + a));
        }
        let mixed = &quartiles(&beside, &s, false)[0];
        assert_eq!(mixed.quantiles.reports, s.minimum_reports_for_quantiles + 7);
        assert!((mixed.quantiles.median - 7.0).abs() < 1e-9);
    }

    /// Type 7 quantiles from fully sorted values, as R and NumPy define them.
    fn by_sorting(values: &[f64], p: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        #[allow(clippy::cast_precision_loss)]
        let h = (sorted.len() - 1) as f64 * p;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let lower = h.floor() as usize;
        #[allow(clippy::cast_precision_loss)]
        let fraction = h - lower as f64;
        let low = sorted[lower];
        if fraction == 0.0 {
            low
        } else {
            low + fraction * (sorted[lower + 1] - low)
        }
    }

    proptest::proptest! {
        /// Quantiles found by selection are bit for bit those of a full sort, for any
        /// values (repeats included) and any quantiles.
        #[test]
        fn selection_gives_the_quantiles_of_a_sort(
            values in proptest::collection::vec(0u64..50, 1..300),
            mut ps in proptest::array::uniform3(0.0f64..=1.0),
        ) {
            ps.sort_by(f64::total_cmp);
            #[allow(clippy::cast_precision_loss)]
            let values: Vec<f64> = values.iter().map(|v| *v as f64 * 1.5).collect();
            let mut reordered = values.clone();
            let found = quantiles(&mut reordered, ps);
            for (q, p) in found.iter().zip(ps) {
                proptest::prop_assert_eq!(q.to_bits(), by_sorting(&values, p).to_bits());
            }
        }

        /// A bag's counts and noise keys do not depend on how its observations were
        /// split between bags before being put together.
        #[test]
        fn bags_add_up_whatever_the_split(
            fees in proptest::collection::vec((0u32..3, 0u64..20, proptest::bool::ANY), 0..80),
            cuts in proptest::collection::vec(0usize..80, 0..4),
        ) {
            let hash = |currency: u32, amount: u64| currency * 7 + u32::try_from(amount).unwrap_or(0) * 13 + 1;
            let mut whole = FeeBag::default();
            for (currency, amount, own) in &fees {
                whole.add(*currency, *amount, *own, hash(*currency, *amount));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(fees.len())).collect();
            cuts.push(fees.len());
            cuts.sort_unstable();
            let mut joined = FeeBag::default();
            let mut start = 0;
            for end in cuts {
                let mut part = FeeBag::default();
                for (currency, amount, own) in fees[start..end].iter().rev() {
                    part.add(*currency, *amount, *own, hash(*currency, *amount));
                }
                joined.absorb(&part);
                start = end;
            }
            proptest::prop_assert!(joined == whole);
            let mut expected: BTreeMap<(u32, u64), u64> = BTreeMap::new();
            for (currency, amount, _) in &fees {
                *expected.entry((*currency, *amount)).or_default() += 1;
            }
            proptest::prop_assert_eq!(joined.counts(), expected.into_iter().collect::<Vec<_>>());
        }
    }
}
