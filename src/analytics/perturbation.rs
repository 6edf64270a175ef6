//! The cell key method: consistent noise on every count and magnitude an analyst sees.
//!
//! After the Australian Bureau of Statistics' TableBuilder (Thompson, Broadfoot and
//! Elazar, *Methodology for the automatic confidentialisation of statistical outputs
//! from remote servers at the ABS*, 2013), which Eurostat recommends for census tables:
//!
//! - every report has a fixed pseudo-random *record key* in `0..2^32` (a keyed hash of
//!   its id under a secret that never leaves the server: `store::counters::RecordKeys`);
//! - a cell's *cell key* is the sum of its reports' record keys modulo 2^32 (kept in the
//!   counters like any other sum, so amendments and retractions keep it exact);
//! - the noise is a function of the cell key (and of the cell's own numbers) only.
//!
//! So a cell made of the same reports shows the same value in every table and every
//! query, however it is reached, and subtracting two answers that differ by one report
//! gives that report's value plus the difference of two unrelated noises — not the value.
//!
//! **Counts** go through the perturbation table [`TABLE_ID`] ([`count`]): for a cell of
//! five or more reports the noise is −2…+2 with probabilities 3, 12, 30, 12, 3 in 60
//! (mean 0, variance 0.8); cells of one to four reports have their own rows, built from
//! that one by moving every outcome of 1, 2 or below 0 to 0 or 3 without changing the
//! mean, so that **no cell ever shows 1 or 2**. The largest deviation is 2 for five or
//! more reports, 3 for one to three and 4 for four (a cell of four may show 0).
//!
//! **Magnitudes** (persons, deaths, missing, minors, unaccompanied minors, facilitators
//! arrested; [`magnitude`]) get noise scaled to the cell's largest contributions, as the
//! ABS does for magnitude tables. The counters cannot keep a cell's largest contribution
//! under retractions, but they keep the sum of squares exactly, and the ℓ2 norm
//! ‖x‖₂ = √Σx² is never smaller than the largest contribution. The shown total is
//! `x ± z` with `z = max(1, round(M · ‖x‖₂ · d))`, `M` = [`MAGNITUDE_SCALE`], `d` in
//! [0.5, 1] and the sign from the cell key, then `z` raised by one where needed to have
//! the parity of the cell's number of reports `n`, and the sign turned upwards where
//! downwards would go below 0. So a magnitude with any non-zero contribution is never
//! shown exactly, and **two cells that differ by one report never differ by exactly that
//! report's value** (their noises have different parities, so their difference is odd).
//! The price is that whoever knows a cell's exact `n` learns the parity of its noise; the
//! counts they see are themselves perturbed. A cell of `n` similar reports gets noise of
//! about `0.75 · M / √n` of its total.
//!
//! **Fee quartiles** ([`quartile`]) are moved by up to [`QUARTILE_SCALE`] of their value
//! the same way; how many reports they are shown over is set by the caller (a stricter
//! minimum than for counts), and the number of reports behind them is a count like any
//! other.

/// The perturbation table's name, cited in every perturbed answer.
pub(super) const TABLE_ID: &str = "tidemark-ckm-1";

/// `M`: magnitude noise is at most this share of the ℓ2 norm of the contributions.
pub(super) const MAGNITUDE_SCALE: f64 = 0.2;

/// Fee quartiles move by at most this share of their value.
pub(super) const QUARTILE_SCALE: f64 = 0.05;

/// The largest difference between a shown and a true count (for cells of four reports;
/// two for cells of five or more).
pub(super) const MAX_COUNT_DEVIATION: u32 = 4;

/// Probabilities of the perturbation table are in these parts.
const PARTS: u64 = 60;

/// Noise for cells of five or more reports: (noise, parts of [`PARTS`]).
const NOISE: [(i64, u64); 5] = [(-2, 3), (-1, 12), (0, 30), (1, 12), (2, 3)];

/// Shown values for cells of one to four reports: (value, parts of [`PARTS`]); means
/// equal to the true count, no 1 or 2.
const SMALL: [&[(u64, u64)]; 4] = [
    &[(0, 40), (3, 20)],
    &[(0, 20), (3, 40)],
    &[(0, 6), (3, 39), (4, 12), (5, 3)],
    &[(0, 1), (3, 14), (4, 30), (5, 12), (6, 3)],
];

/// Tags that make a cell's several noises independent of each other.
#[derive(Debug, Clone, Copy)]
pub(super) enum Noise {
    /// The count of reports (the cell key itself, as in the ABS method).
    Count,
    /// The magnitude at this index of `Additive`.
    Magnitude(usize),
    /// Fee quartiles of the currency with this packed code.
    FeeQuartiles(u32),
    /// The number of reports behind the fee quartiles of this currency.
    FeeReports(u32),
}

impl Noise {
    fn tag(self) -> u64 {
        match self {
            Self::Count => 0,
            Self::Magnitude(i) => 1 + i as u64,
            Self::FeeQuartiles(c) => (1 << 32) | u64::from(c),
            Self::FeeReports(c) => (2 << 32) | u64::from(c),
        }
    }

    /// The key this noise is drawn with: the cell key for counts, otherwise the cell key
    /// mixed with the tag.
    fn key(self, cell_key: u32) -> u64 {
        if let Self::Count = self {
            return u64::from(cell_key) << 32;
        }
        mix(mix(u64::from(cell_key)) ^ self.tag())
    }
}

/// SplitMix64's output function: a bijection of 64-bit numbers that spreads every input
/// bit over the output.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the top 53 bits of `key`.
fn unit(key: u64) -> f64 {
    // 53 bits are exact in an f64.
    #[allow(clippy::cast_precision_loss)]
    let fraction = (key >> 11) as f64;
    fraction / 9_007_199_254_740_992.0 // 2^53
}

/// The shown count of a cell of `n` reports with key `cell_key`, through the
/// perturbation table.
pub(super) fn count(n: u64, cell_key: u32, noise: Noise) -> u64 {
    if n == 0 {
        return 0;
    }
    // The key's top bits pick a part of PARTS: uniform, as the key is.
    let part = ((noise.key(cell_key) >> 32) * PARTS) >> 32;
    let pick = |row: &[(u64, u64)]| {
        let mut seen = 0;
        for (value, parts) in row {
            seen += parts;
            if part < seen {
                return *value;
            }
        }
        row.last().map_or(0, |(v, _)| *v)
    };
    if let Ok(small @ 1..=4) = usize::try_from(n) {
        return pick(SMALL[small - 1]);
    }
    let mut seen = 0;
    for (d, parts) in NOISE {
        seen += parts;
        if part < seen {
            return n.saturating_add_signed(d);
        }
    }
    n
}

/// The shown total of a magnitude over a cell of `reports` reports whose contributions
/// add up to `total` with sum of squares `squares`.
pub(super) fn magnitude(
    total: u64,
    squares: u64,
    reports: u64,
    cell_key: u32,
    noise: Noise,
) -> u64 {
    if total == 0 {
        return 0;
    }
    let key = noise.key(cell_key);
    #[allow(clippy::cast_precision_loss)]
    let norm = (squares as f64).sqrt();
    let d = 0.5 + 0.5 * unit(key << 1);
    // At most 0.2 × 2^32: the cast cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut size = ((MAGNITUDE_SCALE * norm * d).round() as u64).max(1);
    // The noise has the parity of the number of reports, so that two cells that differ
    // by one report never differ by exactly that report's value.
    if size % 2 != reports % 2 {
        size += 1;
    }
    // Downwards unless that would go below 0 (which would change the noise).
    if key >> 63 == 1 && size <= total {
        total - size
    } else {
        total.saturating_add(size)
    }
}

/// A shown fee quartile: `value` moved by up to [`QUARTILE_SCALE`] of itself, to whole
/// currency units.
pub(super) fn quartile(value: f64, cell_key: u32, noise: Noise) -> f64 {
    let v = 2.0 * unit(noise.key(cell_key)) - 1.0;
    (value * (1.0 + QUARTILE_SCALE * v)).round().max(0.0)
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_table_adds_up_and_keeps_the_mean() {
        assert_eq!(NOISE.iter().map(|(_, p)| p).sum::<u64>(), PARTS);
        assert_eq!(NOISE.iter().map(|(d, p)| d * (*p as i64)).sum::<i64>(), 0);
        for (i, row) in SMALL.iter().enumerate() {
            let n = i as u64 + 1;
            assert_eq!(row.iter().map(|(_, p)| p).sum::<u64>(), PARTS, "row {n}");
            assert_eq!(
                row.iter().map(|(v, p)| v * p).sum::<u64>(),
                n * PARTS,
                "row {n}"
            );
            assert!(row.iter().all(|(v, _)| *v != 1 && *v != 2));
            let deviation = row.iter().map(|(v, _)| v.abs_diff(n)).max().unwrap_or(0);
            assert!(deviation <= u64::from(MAX_COUNT_DEVIATION));
        }
    }

    proptest::proptest! {
        #[test]
        fn counts_never_show_one_or_two_and_stay_within_the_deviation(
            n in 1u64..10_000,
            key in proptest::prelude::any::<u32>(),
        ) {
            let shown = count(n, key, Noise::Count);
            proptest::prop_assert!(shown != 1 && shown != 2);
            proptest::prop_assert!(shown.abs_diff(n) <= u64::from(MAX_COUNT_DEVIATION));
            if n >= 5 {
                proptest::prop_assert!(shown.abs_diff(n) <= 2);
            }
            proptest::prop_assert_eq!(shown, count(n, key, Noise::Count));
        }

        #[test]
        fn magnitudes_are_never_shown_exactly_and_stay_within_their_scale(
            values in proptest::collection::vec(0u64..5_000, 1..50),
            key in proptest::prelude::any::<u32>(),
        ) {
            let total: u64 = values.iter().sum();
            let squares: u64 = values.iter().map(|v| v * v).sum();
            let n = values.len() as u64;
            let shown = magnitude(total, squares, n, key, Noise::Magnitude(1));
            if total == 0 {
                proptest::prop_assert_eq!(shown, 0);
            } else {
                proptest::prop_assert_ne!(shown, total);
                let bound = (MAGNITUDE_SCALE * (squares as f64).sqrt()).round().max(1.0) + 1.0;
                proptest::prop_assert!(shown.abs_diff(total) as f64 <= bound);
                proptest::prop_assert_eq!(shown.abs_diff(total) % 2, n % 2);
            }
        }
    }

    proptest::proptest! {
        /// Differencing: a cell and the same cell with one more report, under any keys,
        /// never differ by exactly that report's value.
        #[test]
        fn two_cells_one_report_apart_never_give_the_report_back(
            values in proptest::collection::vec(0u64..5_000, 0..40),
            extra in 0u64..5_000,
            key in proptest::prelude::any::<u32>(),
            extra_key in proptest::prelude::any::<u32>(),
        ) {
            let n = values.len() as u64;
            let total: u64 = values.iter().sum();
            let squares: u64 = values.iter().map(|v| v * v).sum();
            let without = magnitude(total, squares, n, key, Noise::Magnitude(1));
            let with = magnitude(
                total + extra,
                squares + extra * extra,
                n + 1,
                key.wrapping_add(extra_key),
                Noise::Magnitude(1),
            );
            if total + extra > 0 {
                proptest::prop_assert_ne!(with.abs_diff(without), extra);
            }
        }
    }

    #[test]
    fn counts_follow_the_table_over_all_keys() {
        // Over evenly spread keys, each noise comes up in its share of the parts.
        let mut seen = std::collections::BTreeMap::new();
        let steps = 6_000u64;
        for i in 0..steps {
            // The middle of each step, clear of the table's boundaries.
            let key = u32::try_from((2 * i + 1) * (1u64 << 32) / (2 * steps)).unwrap_or(u32::MAX);
            *seen
                .entry(count(100, key, Noise::Count) as i64 - 100)
                .or_insert(0u64) += 1;
        }
        for (d, parts) in NOISE {
            assert_eq!(seen.get(&d).copied().unwrap_or(0), parts * steps / PARTS);
        }
    }

    #[test]
    fn noises_of_one_cell_are_independent_of_each_other() {
        let keys: Vec<u64> = [
            Noise::Count,
            Noise::Magnitude(1),
            Noise::Magnitude(2),
            Noise::FeeQuartiles(1),
            Noise::FeeReports(1),
        ]
        .iter()
        .map(|n| n.key(12345))
        .collect();
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
