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
//! Unrelated because the table is read at a *mixed* cell key ([`part`]): read directly,
//! the keys of a cell with and without one report differ by that report's record key,
//! and for a record key near 0 (or 2^32) most cells would keep their noise — the
//! difference of two answers was then the report's count exactly, pair after pair (an
//! adversarial pass found such a report).
//!
//! **Counts** go through the perturbation table [`TABLE_ID`] ([`count`]): for a cell of
//! five or more reports the noise is −2…+2 with probabilities 3, 12, 30, 12, 3 in 60
//! (mean 0, variance 0.8); cells of one to four reports have their own rows, built from
//! that one by moving every outcome of 1, 2 or below 0 to 0 or 3 without changing the
//! mean, so that **no cell ever shows 1 or 2**. The largest deviation is 2 for five or
//! more reports, 3 for one to three and 4 for four (a cell of four may show 0).
//!
//! **Magnitudes** (persons, deaths, missing, minors, unaccompanied minors, facilitators
//! arrested; [`magnitude`]) are protected at the level of the report, as the US Census
//! Bureau protects establishment tables (Evans, Zayatz and Slanta, *Using noise for
//! disclosure limitation of establishment tabular data*, JOS 1998): every report has,
//! per magnitude, a fixed sign, a fixed factor δ between 10 % and 20 % and a fixed
//! amount f between 1.5 and 3.5 (from its record key), and a cell's noise is
//! Σ ±(δᵢ·xᵢ + fᵢ) over its reports whose value xᵢ is not 0. The counters keep that
//! sum like any other, so the noise a report brings is the same in every cell: a cell
//! whose figure comes from one report shows that report's value moved by 10–20 % and
//! 1.5–3.5 more, however many other reports (with nothing to add) the analyst puts
//! around it, so asking many differently-worded queries cannot average the noise away.
//! The amount f is for small values, whose share rounds to almost nothing: without it
//! a report's 4 deaths came back exactly (an adversarial pass). Cells of many similar
//! reports get noise of about 0.15/√n of their total.
//!
//! The rounded noise is then made non-zero, and turned upwards where downwards would go
//! to 0 or below. A report with a value moves the noise by at least 1.6, so its rounding
//! by at least 1: **two cells that differ by one report never differ by exactly that
//! report's value** (but where the smaller cell's figure was turned upwards). An earlier
//! build gave the rounded noise the parity of the cell's number of reports instead,
//! which told that parity — and so a withheld cell's count of 1 or 2 — from two answers
//! (an adversarial pass), and in cells of the two parities the noise's direction. A magnitude with any non-zero
//! contribution is never shown exactly. Cells that differ by reports with nothing to add
//! show the same figure: that says those reports add nothing, not how many there are.
//!
//! **Fee quartiles** are computed over fee amounts each moved by its report's own fixed
//! 5–10 %, one unit at least (`store::counters::moved_fee`, from the record key; moved by the scan as it
//! reads each amount): the same report is always moved the same way, so a
//! quartile that is one report's fee cannot be averaged back, and another report with
//! the same amount is moved differently, so a state cannot map amounts to shown values
//! with reports of its own. How many reports they need is set by the caller (a stricter
//! minimum than for counts), and the number of reports behind them is a count like any
//! other.
//!
//! **The asking state's own reports** (for a state analyst) are left out of the cell
//! key, so a state cannot draw fresh noise for a cell by adding and retracting reports
//! of its own, and they do not count towards opening a small cell: other states' reports
//! too few to show are left out of it (`grid::Grid::leave_out_few_others`). Their magnitudes are
//! added exactly to the other states' perturbed figure (`grid::Acc::own_and_others`),
//! so stepping one's own values cannot find where the others' noise crosses zero. Other
//! states' reports shared with the asking state count as its own: it reads them as
//! records, so among the others' they were known padding.

/// The perturbation table's name, cited in every perturbed answer.
pub(super) const TABLE_ID: &str = "tidemark-ckm-2";

/// Each report moves each of its magnitudes by at most this share (and at least half
/// of it), besides its fixed amount; then the rounding, of at most 1.
pub(super) const MAGNITUDE_MAX: f64 = 0.2;

/// Besides its share, each report moves each of its magnitudes that is not 0 by a fixed
/// amount of at most this (and at least 1.5).
pub(super) const MAGNITUDE_FLOOR: f64 = 3.5;

/// Fee quartiles move by at most this share of their value.
pub(super) const QUARTILE_SCALE: f64 = 0.1;

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

/// The shown count of a cell of `n` reports with key `cell_key`, through the
/// perturbation table.
pub(super) fn count(n: u64, cell_key: u32) -> u64 {
    shown(n, part(cell_key))
}

/// The part of [`PARTS`] that `cell_key` picks in the table: from the key mixed by a
/// bijection that spreads every bit over the result (SplitMix64's output function), so
/// that keys a fixed record key apart pick unrelated parts; uniform, as the key is.
fn part(cell_key: u32) -> u64 {
    let mixed = crate::store::counters::mix(u64::from(cell_key)) >> 32;
    (mixed * PARTS) >> 32
}

/// The shown count of a cell of `n` reports at `part` of the table.
fn shown(n: u64, part: u64) -> u64 {
    if n == 0 {
        return 0;
    }
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

/// The shown total of a magnitude over a cell whose contributions add up to `total` and
/// whose record noise adds up to `up` and `down` thousandths.
pub(super) fn magnitude(total: u64, (up, down): (u64, u64)) -> u64 {
    if total == 0 {
        return 0;
    }
    let noise = i128::from(up) - i128::from(down);
    // Rounded to the nearest whole, halves away from zero.
    let mut z = (noise.abs() + 500) / 1000 * noise.signum();
    if z == 0 {
        z = if noise < 0 { -1 } else { 1 };
    }
    // Downwards to 0 or below: upwards instead.
    if i128::from(total) + z <= 0 {
        z = z.abs();
    }
    u64::try_from(i128::from(total) + z).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;
    use crate::store::counters::{self, Additive, STORED, Sums};

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

    /// A cell of reports (persons, record key) as the counters add it up: its persons
    /// and their record noise.
    fn cell(values: &[(u64, u32)]) -> (u64, (u64, u64)) {
        let mut sums = [0u64; STORED];
        for (value, key) in values {
            let one = sums_of(*value, *key);
            for (s, o) in sums.iter_mut().zip(one) {
                *s += o;
            }
        }
        (sums[1], Additive::Persons.noise(&sums))
    }

    /// The persons a cell shows.
    fn persons_shown((total, noise): (u64, (u64, u64))) -> u64 {
        magnitude(total, noise)
    }

    /// Whether a cell's noise, rounded, would take its figure to 0 or below (and is
    /// turned upwards).
    fn turned((total, (up, down)): (u64, (u64, u64))) -> bool {
        let noise = i128::from(up) - i128::from(down);
        let z = ((noise.abs() + 500) / 1000 * noise.signum()).min(-1);
        noise < 0 && i128::from(total) + z <= 0
    }

    fn sums_of(persons: u64, key: u32) -> Sums {
        let mut out = [0; STORED];
        out[0] = 1;
        out[1] = persons;
        counters::add_noise(&mut out, persons, key, 1);
        out
    }

    /// What an analyst sees of one report's value `x` (persons, record key `key`) from
    /// the cells where it is the only one to add anything: one figure, the same in all.
    fn seen(x: u64, key: u32) -> u64 {
        let mut sums = [0; STORED];
        counters::add_noise(&mut sums, x, key, 1);
        magnitude(x, Additive::Persons.noise(&sums))
    }

    /// A small value is not singled out by what its cells show: each view of a value
    /// from 1 to 12 (over 3,000 record keys) is also the view of another value from 1 to
    /// 60. An earlier build gave every one of them back exactly: a share of a small value
    /// rounded to almost nothing, and a parity step told the noise's direction.
    #[test]
    fn the_cells_of_one_small_value_do_not_single_it_out() {
        let keys: Vec<u32> = (0..3_000u32)
            .map(|i| i.wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995)
            .collect();
        let mut behind = std::collections::HashMap::<_, std::collections::BTreeSet<u64>>::new();
        for x in 1..=60 {
            for key in &keys {
                behind.entry(seen(x, *key)).or_default().insert(x);
            }
        }
        let mut likeliest =
            std::collections::HashMap::<_, std::collections::BTreeMap<u64, u32>>::new();
        for x in 1..=60 {
            for key in &keys {
                *likeliest
                    .entry(seen(x, *key))
                    .or_default()
                    .entry(x)
                    .or_default() += 1;
            }
        }
        let (mut views, mut singled, mut guessed) = (0, 0, 0);
        for x in 1..=12 {
            for key in &keys {
                views += 1;
                let view = seen(x, *key);
                if behind[&view].len() < 2 {
                    singled += 1;
                }
                let best = likeliest[&view]
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(v, _)| *v);
                if best == Some(x) {
                    guessed += 1;
                }
            }
        }
        eprintln!(
            "{singled} of {views} views single out their value; the likeliest value is the \
             true one in {guessed}"
        );
        assert_eq!(
            singled, 0,
            "{singled} of {views} views single out their value"
        );
        // Nor is the likeliest value behind a view the true one nearly always (whoever
        // knows the noise's rules narrows a value, as documented).
        assert!(
            f64::from(guessed) / f64::from(views) < 0.5,
            "{guessed} of {views}"
        );
    }

    proptest::proptest! {
        #[test]
        fn counts_never_show_one_or_two_and_stay_within_the_deviation(
            n in 1u64..10_000,
            key in proptest::prelude::any::<u32>(),
        ) {
            let shown = count(n, key);
            proptest::prop_assert!(shown != 1 && shown != 2);
            proptest::prop_assert!(shown.abs_diff(n) <= u64::from(MAX_COUNT_DEVIATION));
            if n >= 5 {
                proptest::prop_assert!(shown.abs_diff(n) <= 2);
            }
            proptest::prop_assert_eq!(shown, count(n, key));
        }

        #[test]
        fn magnitudes_are_never_shown_exactly_and_stay_within_their_scale(
            values in proptest::collection::vec((0u64..5_000, proptest::prelude::any::<u32>()), 1..50),
        ) {
            let (total, noise) = cell(&values);
            let shown = persons_shown((total, noise));
            if total == 0 {
                proptest::prop_assert_eq!(shown, 0);
            } else {
                proptest::prop_assert_ne!(shown, total);
                // Never more than every report's largest share and amount, plus rounding.
                let moved = values.iter().filter(|(v, _)| *v > 0).count() as f64;
                let bound = (MAGNITUDE_MAX * total as f64 + MAGNITUDE_FLOOR * moved).round() + 1.0;
                proptest::prop_assert!(shown.abs_diff(total) as f64 <= bound);
            }
        }

        /// Differencing: a cell and the same cell with one more report with a value,
        /// under any keys, never differ by exactly that value — unless the smaller cell's
        /// figure was turned upwards from 0 or below. A report with nothing to add leaves
        /// the figure as it was.
        #[test]
        fn two_cells_one_report_apart_never_give_the_report_back(
            values in proptest::collection::vec((0u64..5_000, proptest::prelude::any::<u32>()), 0..40),
            extra in 0u64..5_000,
            extra_key in proptest::prelude::any::<u32>(),
        ) {
            let smaller = cell(&values);
            let mut more = values.clone();
            more.push((extra, extra_key));
            let (without, with) = (persons_shown(smaller), persons_shown(cell(&more)));
            if extra == 0 {
                proptest::prop_assert_eq!(with, without);
            } else if !turned(smaller) {
                proptest::prop_assert_ne!(with as i64 - without as i64, extra as i64);
            }
        }

        /// What gives a value back where the smaller cell's figure was turned upwards is
        /// rare: a cell at or near 0 whose noise is as large as its figure.
        #[test]
        fn near_zero_only_a_turned_cell_differs_by_exactly_the_report_added(
            small in 1u64..6,
            key in proptest::prelude::any::<u32>(),
            extra in 1u64..50,
            extra_key in proptest::prelude::any::<u32>(),
        ) {
            let smaller = cell(&[(small, key)]);
            let with = persons_shown(cell(&[(small, key), (extra, extra_key)]));
            let without = persons_shown(smaller);
            if with as i64 - without as i64 == extra as i64 {
                proptest::prop_assert!(turned(smaller));
            }
        }

        /// One report carrying the whole figure, among any number of reports that add
        /// nothing: the same noise whatever the others are (nothing to average).
        #[test]
        fn a_dominant_report_brings_the_same_noise_into_every_cell(
            value in 10u64..5_000,
            key in proptest::prelude::any::<u32>(),
            others in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..30),
        ) {
            let alone = cell(&[(value, key)]);
            let mut crowd = vec![(value, key)];
            crowd.extend(others.iter().map(|k| (0, *k)));
            let crowded = cell(&crowd);
            proptest::prop_assert_eq!(alone.1, crowded.1);
            let a = persons_shown(alone) as i64 - value as i64;
            let b = persons_shown(crowded) as i64 - value as i64;
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert!(a.unsigned_abs() as f64 >= MAGNITUDE_MAX / 2.0 * value as f64 - 1.0);
        }
    }

    #[test]
    fn counts_follow_the_table_over_its_parts_and_keys_pick_parts_uniformly() {
        // Each noise comes up in its share of the parts.
        let mut seen = std::collections::BTreeMap::new();
        for part in 0..PARTS {
            *seen.entry(shown(100, part) as i64 - 100).or_insert(0u64) += 1;
        }
        for (d, parts) in NOISE {
            assert_eq!(seen.get(&d).copied().unwrap_or(0), parts);
        }
        // Keys spread over their range pick each part about as often: within 5 %.
        let mut picked = [0u64; PARTS as usize];
        let samples = 600_000u64;
        for i in 0..samples {
            let key = u32::try_from(i * (1u64 << 32) / samples).unwrap_or(u32::MAX);
            picked[usize::try_from(part(key)).unwrap()] += 1;
        }
        let expected = samples / PARTS;
        for (p, n) in picked.iter().enumerate() {
            assert!(
                n.abs_diff(expected) * 20 <= expected,
                "part {p}: {n} of {expected}"
            );
        }
    }

    /// A cell with and without one report: their count noises are unrelated whatever
    /// the report's record key — equal about as often as two independent draws are
    /// (Σ p² = 1206/3600 ≈ 0.34), also for record keys near 0 or 2^32, which moved
    /// the cell key too little to change the noise when the table was read at the key
    /// itself (then equal 95 % of the time or more).
    #[test]
    fn one_report_more_draws_unrelated_count_noise_whatever_its_record_key() {
        let independent: f64 =
            NOISE.iter().map(|(_, p)| (p * p) as f64).sum::<f64>() / (PARTS * PARTS) as f64;
        for record_key in [1u32, 1_000, 1 << 20, 1 << 31, u32::MAX - 1_000] {
            let cells = 20_000u32;
            let same = (0..cells)
                .filter(|i| {
                    // Cell keys spread over the range (an odd multiplier is a bijection).
                    let cell_key = i.wrapping_mul(0x9e37_79b9);
                    let without = count(50, cell_key) as i64 - 50;
                    let with = count(51, cell_key.wrapping_add(record_key)) as i64 - 51;
                    without == with
                })
                .count();
            let share = same as f64 / f64::from(cells);
            assert!(
                (share - independent).abs() < 0.03,
                "record key {record_key}: same noise in {share:.3} of cells"
            );
        }
    }
}
