//! Write-time counters behind aggregate queries.
//!
//! For each *cuboid* (the base one, and one per extra dimension such as origin or route)
//! the store keeps one row per (cuboid, category, month of the incident, value along the
//! cuboid's dimension). A row holds the sums of the metrics of the reports that fall in
//! it, first in all and then per reporting state (so a query that does not split by
//! state reads one entry per row). Rows are updated in the writer's transaction: a new
//! report adds its facts, an amendment subtracts the old version's and adds the new
//! one's, a retraction subtracts. An aggregate over these dimensions then reads a few
//! rows per month instead of every report.
//!
//! The same rows are kept per quarter, for tables split by quarter, by year or by no
//! period (a third of the entries to read), but not in the batch's transaction: a batch
//! marks the quarters it changed as behind, and [`catch_up_quarters`] later makes their
//! rows again from the months'. A read uses a quarter's rows only while it is not marked
//! ([`read_counters`], [`Grain`]), so it never sees them stale, and a submission writes
//! no more counter rows than it would without them (only a mark per quarter it touches).
//!
//! A row's bytes (counters version 9; quarter rows alike), with `N` = [`STORED`] numbers
//! per entry:
//!
//! | part | bytes |
//! |---|---|
//! | widths of the total | `N` bytes, each 0–8 |
//! | the total | the number of states in 3 bytes big-endian, then each number in its width, little-endian |
//! | widths of the entries | `N` bytes, each 0–8 |
//! | one entry per state, in increasing state order | the state (packed, [`pack_country`]) in 3 bytes big-endian, then each number in its width, little-endian |
//!
//! A width is the fewest bytes that hold that number in every entry that follows (0
//! when it is 0 in all). Entries of one length let a reader go straight to the numbers it
//! wants and find a state by binary search; versions up to 7 wrote every number as a
//! varint, each stepped over one by one (a query that reads every state's entry spent
//! most of its time there).
//!
//! Fee quartiles are not kept here: a distribution needs a row per distinct amount,
//! nearly one per report, and the columnar scan (`super::projection`) reads the amounts
//! several times faster than those rows could be read back.
//!
//! This module also owns *what* a report contributes along each dimension
//! ([`Cuboid::values`], [`sums`]), so that the counters and the scan of
//! `crate::analytics` cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, ReadableTableMetadata, Table};

use super::{StoreError, projection::Change};
use crate::report::{ReportFacts, ReportSummary};

/// Number of additive metrics.
pub(crate) const SUMS: usize = 7;

/// Numbers kept per cell and state: the [`SUMS`] additive metrics, then the sum of the
/// reports' record keys ([`KEY_SUM`]), then each magnitude's record noise
/// ([`NOISE`]: upwards, downwards). All are additive, so amendments and retractions keep
/// them exact; the last ones are what disclosure control reads (`crate::analytics`),
/// never shown.
pub(crate) const STORED: usize = SUMS + 1 + 2 * (SUMS - 1);

/// Where [`Sums`] holds the sum of the record keys (see [`RecordKeys`]).
pub(crate) const KEY_SUM: usize = SUMS;

/// Where [`Sums`] holds the record noise of the first magnitude (persons), upwards then
/// downwards, in thousandths; the others follow in the order of [`Additive`]. A report
/// adds `x · δ + f` (`f` only when `x` is not 0) to one of the two, with its own fixed
/// sign, `δ` in [[`NOISE_MIN`], [`NOISE_MAX`]] thousandths and `f` in [[`FLOOR_MIN`],
/// [`FLOOR_MAX`]] thousandths ([`RecordKeys::noise`]).
pub(crate) const NOISE: usize = SUMS + 1;

/// The smallest record noise factor, in thousandths (10 %).
pub(crate) const NOISE_MIN: u64 = 100;

/// The largest record noise factor, in thousandths (20 %).
pub(crate) const NOISE_MAX: u64 = 200;

/// The smallest fixed amount, in thousandths (1.5), by which a report moves each of its
/// magnitudes that is not 0, besides its share δ: a share of a small value (a report's
/// 4 deaths) rounds to almost nothing, and the value then showed through the rounding.
pub(crate) const FLOOR_MIN: u64 = 1_500;

/// The largest such amount, in thousandths (3.5).
pub(crate) const FLOOR_MAX: u64 = 3_500;

/// A contribution larger than this counts as this much in the record noise, so that
/// the noise of 2^24 reports fits in 64 bits (no real report comes near it).
const NOISE_CAP: u64 = 1 << 20;

/// The additive metrics, in the order of [`Sums`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Additive {
    Reports,
    Persons,
    Deaths,
    Missing,
    Minors,
    UnaccompaniedMinors,
    FacilitatorsArrested,
}

impl Additive {
    /// Every additive metric, in the order of [`Sums`].
    pub const ALL: [Self; SUMS] = [
        Self::Reports,
        Self::Persons,
        Self::Deaths,
        Self::Missing,
        Self::Minors,
        Self::UnaccompaniedMinors,
        Self::FacilitatorsArrested,
    ];

    /// This metric's total in `sums`.
    pub fn of(self, sums: &Sums) -> u64 {
        sums[self as usize]
    }

    /// This metric's record noise in `sums`, upwards and downwards, in thousandths
    /// (none for reports).
    pub(crate) fn noise(self, sums: &Sums) -> (u64, u64) {
        match self {
            Self::Reports => (0, 0),
            other => {
                let at = NOISE + 2 * (other as usize - 1);
                (sums[at], sums[at + 1])
            }
        }
    }
}

/// What a cell holds per state, indexed by [`Additive`], [`KEY_SUM`] and [`NOISE`].
pub(crate) type Sums = [u64; STORED];

/// Each report's *record key*: a fixed pseudo-random number, the same for every version
/// of the report, from a keyed hash (SipHash-2-4) of its id under a secret that is made
/// when the store is created and never leaves the server. The cell key method of
/// `crate::analytics` derives every cell's noise from the sum of its reports' keys.
#[derive(Clone)]
pub(crate) struct RecordKeys {
    secret: [u8; 16],
}

impl RecordKeys {
    /// Record keys under `secret`.
    pub(crate) fn new(secret: [u8; 16]) -> Self {
        Self { secret }
    }

    /// The record key of `report`, uniform in `0..2^32`.
    pub(crate) fn of(&self, report: u128) -> u32 {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&self.secret);
        hasher.write(&report.to_be_bytes());
        // The low half of a PRF's output is itself uniform.
        #[allow(clippy::cast_possible_truncation)]
        let key = hasher.finish() as u32;
        key
    }

    /// A report's fixed noise for the magnitude at `metric` (an `Additive` index) when
    /// it is `value`: upwards or downwards, a factor δ in [`NOISE_MIN`]..=[`NOISE_MAX`]
    /// thousandths and an amount f in [`FLOOR_MIN`]..=[`FLOOR_MAX`] thousandths. The same
    /// for the report in every cell it adds that value to (Evans, Zayatz and Slanta,
    /// *Using noise for disclosure limitation of establishment tabular data*, JOS 1998,
    /// with a floor for small values), and through amendments that keep the value (no
    /// fresh draw to average); drawn afresh for another value, so that the noise a state
    /// read off a version it could read as a record (it knows the figure) does not undo
    /// the figure of a later version it may not read.
    pub(crate) fn noise(key: u32, metric: usize, value: u64) -> (bool, u64, u64) {
        let z = mix(mix(mix(u64::from(key)) ^ (metric as u64)) ^ value);
        let up = z >> 63 == 0;
        let delta = NOISE_MIN + (z & 0xffff_ffff) % (NOISE_MAX - NOISE_MIN + 1);
        let floor = FLOOR_MIN + ((z >> 32) & 0x7fff_ffff) % (FLOOR_MAX - FLOOR_MIN + 1);
        (up, delta, floor)
    }
}

/// SplitMix64's output function: a bijection of 64-bit numbers that spreads every input
/// bit over the output.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of a dimension a report does not have (no transit, no origin, …).
pub(crate) const NONE: u64 = 0;

/// cuboid, category, month, value.
const CELL_KEY: usize = 1 + 1 + 4 + 8;

/// A set of dimensions kept as counters (besides category, month and state, which every
/// cuboid has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cuboid {
    /// Category, month and reporting state only.
    Base,
    Origin,
    Transit,
    Destination,
    /// Origin and destination together.
    Route,
    Nationality,
    ModusOperandi,
    MaritimeEvent,
    VesselType,
    LocationCountry,
    SeaArea,
}

impl Cuboid {
    pub const ALL: [Self; 11] = [
        Self::Base,
        Self::Origin,
        Self::Transit,
        Self::Destination,
        Self::Route,
        Self::Nationality,
        Self::ModusOperandi,
        Self::MaritimeEvent,
        Self::VesselType,
        Self::LocationCountry,
        Self::SeaArea,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Base => 0,
            Self::Origin => 1,
            Self::Transit => 2,
            Self::Destination => 3,
            Self::Route => 4,
            Self::Nationality => 5,
            Self::ModusOperandi => 6,
            Self::MaritimeEvent => 7,
            Self::VesselType => 8,
            Self::LocationCountry => 9,
            Self::SeaArea => 10,
        }
    }

    /// The most values one report can have along this dimension (validation's limits;
    /// "unknown" nationality besides the listed ones).
    pub(crate) fn max_values(self) -> u64 {
        match self {
            Self::Transit => crate::report::MAX_TRANSIT as u64,
            Self::Nationality => crate::report::MAX_NATIONALITIES as u64 + 1,
            _ => 1,
        }
    }

    /// Whether a report may have several values along this dimension (so cells along it
    /// add up to more than the total).
    pub fn multi_valued(self) -> bool {
        matches!(self, Self::Transit | Self::Nationality)
    }

    /// The values a report has along this dimension, each with what it adds there
    /// (`key` is the report's record key).
    pub(crate) fn values(
        self,
        facts: &ReportFacts,
        summary: &ReportSummary,
        key: u32,
    ) -> Vec<(u64, Sums)> {
        let all = sums(facts, key);
        let one = |value: u64| vec![(value, all)];
        match self {
            Self::Base => one(NONE),
            Self::Origin => one(pack_country(&facts.origin)),
            Self::Destination => one(pack_country(&facts.destination)),
            Self::Route => one(pack_route(&facts.origin, &facts.destination)),
            Self::LocationCountry => one(pack_country(&facts.location_country)),
            Self::SeaArea => one(enum_value(facts.sea_area)),
            Self::ModusOperandi => one(enum_value(summary.modus_operandi)),
            Self::MaritimeEvent => one(enum_value(summary.maritime_event)),
            Self::VesselType => one(enum_value(summary.vessel_type)),
            Self::Transit if facts.transit.is_empty() => one(NONE),
            Self::Transit => facts
                .transit
                .iter()
                .map(|c| (pack_country(c), all))
                .collect(),
            Self::Nationality => {
                // Persons split by nationality; those without one under NONE.
                let mut out = Vec::with_capacity(summary.nationalities.len() + 1);
                let mut counted = 0u64;
                for (nationality, count) in
                    summary.nationalities.iter().zip(&facts.nationality_counts)
                {
                    counted += u64::from(*count);
                    out.push((
                        pack_country(nationality),
                        persons_only(u64::from(*count), key),
                    ));
                }
                let rest = u64::from(facts.persons).saturating_sub(counted);
                if rest > 0 || out.is_empty() {
                    out.push((NONE, persons_only(rest, key)));
                }
                out
            }
        }
    }
}

/// What one report with record key `key` adds to every metric.
pub(crate) fn sums(facts: &ReportFacts, key: u32) -> Sums {
    with_keys(
        [
            1,
            u64::from(facts.persons),
            u64::from(facts.deaths),
            u64::from(facts.missing),
            u64::from(facts.minors),
            u64::from(facts.unaccompanied_minors),
            u64::from(facts.facilitators_arrested),
        ],
        key,
    )
}

fn persons_only(persons: u64, key: u32) -> Sums {
    with_keys([1, persons, 0, 0, 0, 0, 0], key)
}

/// One report's metrics with its record key and its magnitudes' record noise.
fn with_keys(metrics: [u64; SUMS], key: u32) -> Sums {
    let mut out = [0; STORED];
    out[..SUMS].copy_from_slice(&metrics);
    out[KEY_SUM] = u64::from(key);
    for (i, value) in metrics.iter().enumerate().skip(1) {
        add_noise(&mut out, *value, key, i);
    }
    out
}

/// Adds the record noise of a report with record key `key` whose magnitude `metric`
/// (an [`Additive`] index, not reports) is `value`.
pub(crate) fn add_noise(sums: &mut Sums, value: u64, key: u32, metric: usize) {
    add_drawn_noise(sums, value, noise_draw(key, metric, value), metric);
}

/// [`RecordKeys::noise`] as one number: f, then δ in eight bits, then one bit that is
/// set when downwards. A loop over many keys of this alone vectorizes, which the scan
/// uses.
#[inline]
pub(crate) fn noise_draw(key: u32, metric: usize, value: u64) -> u32 {
    let (up, delta, floor) = RecordKeys::noise(key, metric, value);
    // δ ≤ NOISE_MAX < 2^8, f ≤ FLOOR_MAX < 2^12.
    #[allow(clippy::cast_possible_truncation)]
    let (delta, floor) = (delta as u32, floor as u32);
    (floor << 9) | (delta << 1) | u32::from(!up)
}

/// [`add_noise`] with the report's [`noise_draw`] for `metric` given.
#[inline]
pub(crate) fn add_drawn_noise(sums: &mut Sums, value: u64, draw: u32, metric: usize) {
    let at = NOISE + 2 * (metric - 1) + (draw & 1) as usize;
    let (delta, floor) = (u64::from((draw >> 1) & 0xff), u64::from(draw >> 9));
    sums[at] += value.min(NOISE_CAP) * delta + floor * u64::from(value > 0);
}

/// Three ASCII letters as a number that sorts like the text; [`NONE`] for "".
pub(crate) fn pack_country(code: &str) -> u64 {
    code.bytes()
        .take(3)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(b))
}

/// The text of a [`pack_country`] number.
pub(crate) fn unpack_country(packed: u64) -> String {
    let mut out = String::with_capacity(3);
    push_country(&mut out, packed);
    out
}

/// Appends the code [`pack_country`] packed.
pub(crate) fn push_country(out: &mut String, packed: u64) {
    for byte in packed.to_be_bytes() {
        if byte != 0 {
            out.push(char::from(byte));
        }
    }
}

/// Origin and destination as one number (origin in the high bits, so it sorts first).
pub(crate) fn pack_route(origin: &str, destination: &str) -> u64 {
    (pack_country(origin) << 24) | pack_country(destination)
}

fn enum_value(value: i32) -> u64 {
    u64::try_from(value).unwrap_or(NONE)
}

/// Months since year 0 (year × 12 + month − 1) of a Julian day number.
pub fn month_of_day(day: i32) -> u32 {
    time::Date::from_julian_day(day).map_or(0, |d| {
        u32::try_from(d.year()).unwrap_or(0) * 12 + u32::from(u8::from(d.month())) - 1
    })
}

/// Category, month, cuboid, value: a month's rows of every cuboid lie together, so the
/// reports of one month (most of a day's submissions) touch few pages.
/// The key of a row: category, month, the cuboid's code, value.
fn cell_key(code: u8, category: i32, month: u32, value: u64) -> [u8; CELL_KEY] {
    let mut key = [0u8; CELL_KEY];
    key[0] = u8::try_from(category).unwrap_or(0);
    key[1..5].copy_from_slice(&month.to_be_bytes());
    key[5] = code;
    key[6..14].copy_from_slice(&value.to_be_bytes());
    key
}

/// The draw that moves a report's fee `amount` ([`moved_fee`]).
fn fee_draw(key: u32, amount: u64) -> u64 {
    mix(mix(mix(u64::from(key)) ^ 0xfee0_0000_0000_0000) ^ amount)
}

/// A report's fee amount as perturbed fee quartiles see it: moved by the report's own
/// fixed 5-10 %, up or down (from its record key and the amount: another amount of the
/// same report, in a later version, is moved afresh), to a whole unit — by one unit at
/// least, and up where down would reach 0: rounded, 5-10 % of an amount under 5 units
/// was no move at all, and small fees showed exactly (an outside pass). The same report
/// is moved the same way in every cell; another report with the same amount, differently.
pub(crate) fn moved_fee(amount: u64, key: u32) -> u64 {
    let z = fee_draw(key, amount);
    let per_mille = 50 + (z & 0xffff_ffff) % 51;
    // In 64 bits for every real amount (at most 10^9); in 128 beyond.
    let shift = amount
        .checked_mul(per_mille)
        .and_then(|product| product.checked_add(500))
        .map_or_else(
            || {
                let shift = (u128::from(amount) * u128::from(per_mille) + 500) / 1000;
                u64::try_from(shift).unwrap_or(u64::MAX)
            },
            |rounded| rounded / 1000,
        )
        .max(1);
    if z >> 63 == 0 || shift >= amount {
        amount.saturating_add(shift)
    } else {
        amount - shift
    }
}

/// Counter changes of one write transaction, added up per row so that each row is read
/// and written once per transaction however many reports touch it.
pub(super) struct Deltas {
    keys: RecordKeys,
    /// The same changes as the projection takes them (see `super::projection`), when
    /// kept.
    changes: Option<Vec<Change>>,
    cells: BTreeMap<[u8; CELL_KEY], BTreeMap<u32, [i64; STORED]>>,
}

impl Deltas {
    /// No changes yet; reports' record keys come from `keys`.
    pub(super) fn new(keys: RecordKeys) -> Self {
        Self {
            keys,
            changes: None,
            cells: BTreeMap::new(),
        }
    }

    /// No changes yet, and each change kept for the projection too.
    pub(super) fn keeping_changes(keys: RecordKeys) -> Self {
        Self {
            changes: Some(Vec::new()),
            ..Self::new(keys)
        }
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) one version of `report` in every
    /// cuboid.
    pub(super) fn record(
        &mut self,
        report: u128,
        summary: &ReportSummary,
        state: &str,
        sign: i64,
    ) -> Result<(), StoreError> {
        let record_key = self.keys.of(report);
        let Some(facts) = &summary.facts else {
            return Err(StoreError::Corrupt(
                "a report summary without its facts".to_owned(),
            ));
        };
        if let Some(changes) = &mut self.changes {
            changes.push(if sign > 0 {
                Change::Set(report, Box::new(summary.clone()), state.to_owned())
            } else {
                Change::Remove(report)
            });
        }
        let state = u32::try_from(pack_country(state)).unwrap_or(0);
        let month = month_of_day(summary.incident_day);
        for cuboid in Cuboid::ALL {
            for (value, add) in cuboid.values(facts, summary, record_key) {
                let key = cell_key(cuboid.code(), summary.category, month, value);
                let entry = self.cells.entry(key).or_default().entry(state).or_default();
                for (d, a) in entry.iter_mut().zip(add) {
                    *d += sign * i64::try_from(a).unwrap_or(i64::MAX);
                }
            }
        }
        Ok(())
    }

    /// The changes recorded so far, for the projection, in the order recorded.
    pub(super) fn take_changes(&mut self) -> Vec<Change> {
        self.changes.take().unwrap_or_default()
    }

    /// Applies the changes to the month rows, in key order, and marks the quarters they
    /// fall in as behind (see [`catch_up_quarters`]).
    pub(super) fn write(
        self,
        months: &mut Table<'_, &'static [u8], &'static [u8]>,
        behind: &mut Table<'_, (u8, u32), ()>,
    ) -> Result<(), StoreError> {
        let mut quarters = BTreeSet::new();
        for (key, deltas) in &self.cells {
            update(months, key, deltas)?;
            quarters.insert(quarter_of(key));
        }
        for quarter in quarters {
            behind.insert(quarter, ())?;
        }
        Ok(())
    }
}

/// The (category, quarter) of the row at `key`; a quarter's number is `month / 3`
/// (year × 4 + quarter − 1).
fn quarter_of(key: &[u8; CELL_KEY]) -> (u8, u32) {
    let mut month = [0u8; 4];
    month.copy_from_slice(&key[1..5]);
    (key[0], u32::from_be_bytes(month) / 3)
}

/// What [`catch_up_quarters`] did.
pub(super) struct CatchUp {
    /// Quarters brought up to date.
    pub caught_up: usize,
    /// Quarters whose rows could not be made from their month rows (unreadable or out
    /// of range), with why; they stay marked, so they are read from their months.
    pub failed: Vec<((u8, u32), StoreError)>,
    /// Quarters still marked, besides those skipped.
    pub left: u64,
}

/// Brings the quarter rows of up to `limit` quarters marked behind (those in `skip`
/// aside) up to date, in the caller's transaction: each quarter's rows are made again
/// as the sums of its three months' rows, and its mark is removed.
///
/// Month rows change with every batch; quarter rows only here, after the fact, so that
/// a submission writes no more counter rows than before they existed (only a mark per
/// quarter it touches). Readers use a quarter's rows only while it is not marked
/// ([`read_counters`]), so they never see them stale.
pub(super) fn catch_up_quarters(
    months: &impl ReadableTable<&'static [u8], &'static [u8]>,
    quarters: &mut Table<'_, &'static [u8], &'static [u8]>,
    behind: &mut Table<'_, (u8, u32), ()>,
    (limit, skip): (usize, &BTreeSet<(u8, u32)>),
) -> Result<CatchUp, StoreError> {
    let mut pending = Vec::new();
    for entry in behind.iter()? {
        let quarter = entry?.0.value();
        if pending.len() == limit {
            break;
        }
        if !skip.contains(&quarter) {
            pending.push(quarter);
        }
    }
    let mut failed = Vec::new();
    let mut caught_up = 0;
    for (category, quarter) in pending {
        // Made before anything is written, so that a quarter that fails leaves the
        // transaction as it was.
        let rows = match quarter_rows(months, category, quarter) {
            Ok(rows) => rows,
            Err(e) => {
                failed.push(((category, quarter), e));
                continue;
            }
        };
        let first = cell_key(0, i32::from(category), quarter, 0);
        let last = cell_key(u8::MAX, i32::from(category), quarter, u64::MAX);
        quarters.retain_in::<&[u8], _>(first.as_slice()..=last.as_slice(), |_, _| false)?;
        for (key, row) in rows {
            quarters.insert(key.as_slice(), row.as_slice())?;
        }
        behind.remove((category, quarter))?;
        caught_up += 1;
    }
    let skipped = u64::try_from(skip.len() + failed.len()).unwrap_or(u64::MAX);
    Ok(CatchUp {
        caught_up,
        failed,
        left: behind.len()?.saturating_sub(skipped),
    })
}

/// The key of a counter row (see [`cell_key`]).
type CellKey = [u8; CELL_KEY];

/// The rows of `quarter` in `category`: per (cuboid, value), the sums of its months'
/// rows (key and bytes).
fn quarter_rows(
    months: &impl ReadableTable<&'static [u8], &'static [u8]>,
    category: u8,
    quarter: u32,
) -> Result<Vec<(CellKey, Vec<u8>)>, StoreError> {
    let overflow = || StoreError::Corrupt("a quarter's counter total is out of range".to_owned());
    let first_month = quarter
        .checked_mul(3)
        .ok_or_else(|| StoreError::Corrupt(format!("quarter {quarter} is out of range")))?;
    let from = cell_key(0, i32::from(category), first_month, 0);
    let to = cell_key(
        u8::MAX,
        i32::from(category),
        first_month.saturating_add(2),
        u64::MAX,
    );
    // (cuboid, value) → state → sums over the quarter's months.
    let mut sums: BTreeMap<(u8, u64), BTreeMap<u32, Sums>> = BTreeMap::new();
    for entry in months.range::<&[u8]>(from.as_slice()..=to.as_slice())? {
        let (key, bytes) = entry?;
        let key = key.value();
        let (_, value) = split_key(key)?;
        let row = CounterRow {
            month: 0,
            value,
            bytes: bytes.value(),
        };
        let states = sums.entry((key[5], value)).or_default();
        for (state, add) in row.states()? {
            let total = states.entry(state).or_insert([0; STORED]);
            for (t, a) in total.iter_mut().zip(add) {
                *t = t.checked_add(a).ok_or_else(overflow)?;
            }
        }
    }
    sums.into_iter()
        .map(|((code, value), states)| {
            let entries: Vec<(u32, Sums)> = states.into_iter().collect();
            let row = encode_row(&entries).ok_or_else(overflow)?;
            Ok((cell_key(code, i32::from(category), quarter, value), row))
        })
        .collect()
}

/// Applies per-state changes to the row at `key`, dropping entries (and the row) that
/// reach zero reports. The first number of an entry is its reports. In place when the
/// row keeps its entries and widths ([`patched`]), else decoded and encoded again
/// ([`rebuilt`]); both make the same bytes.
fn update(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    key: &[u8],
    deltas: &BTreeMap<u32, [i64; STORED]>,
) -> Result<(), StoreError> {
    let old = table.get(key)?;
    let row = match old.as_ref().and_then(|row| patched(row.value(), deltas)) {
        Some(row) => Some(row),
        None => rebuilt(key, old.as_ref().map(redb::AccessGuard::value), deltas)?,
    };
    drop(old);
    match row {
        Some(row) => table.insert(key, row.as_slice())?,
        None => table.remove(key)?,
    };
    Ok(())
}

/// The row `old` with `deltas` added in place, when that changes no entry's presence and
/// no number's width (most batches: a state's entry grows within its bytes): the very
/// bytes [`rebuilt`] would make, without decoding and encoding every entry. `None` when
/// a state has no entry yet or would lose it, a width would change, or the row is not
/// one this build reads — [`rebuilt`] then decides.
fn patched(old: &[u8], deltas: &BTreeMap<u32, [i64; STORED]>) -> Option<Vec<u8>> {
    let row = CounterRow {
        month: 0,
        value: 0,
        bytes: old,
    };
    let (total, entries) = row.blocks().ok()?;
    let all = entries.picks(Positions::ALL);
    let mut bytes = old.to_vec();
    // The total block's numbers start after its widths and its 3-byte count; the
    // entries' after the total block and their own widths.
    let total_at = STORED + 3;
    let entries_at = STORED + total.len + STORED;
    let mut sums = [0u64; STORED];
    total.read(0, &total.picks(Positions::ALL), &mut sums);
    let mut new_total = sums;
    for (state, delta) in deltas {
        let i = binary_search(&entries, *state)?;
        let mut values = [0u64; STORED];
        entries.read(i, &all, &mut values);
        let before = values;
        add(&mut values, delta)?;
        if values[0] == 0 {
            return None;
        }
        add(&mut new_total, delta)?;
        write_in_place(
            &mut bytes[entries_at + i * entries.len + 3..],
            entries.widths,
            &before,
            &values,
        )?;
    }
    write_in_place(&mut bytes[total_at..], total.widths, &sums, &new_total)?;
    Some(bytes)
}

/// The index of `state`'s entry (entries are in increasing state order).
fn binary_search(entries: &Entries<'_>, state: u32) -> Option<usize> {
    let (mut low, mut high) = (0, entries.count);
    while low < high {
        let mid = low + (high - low) / 2;
        match entries.state(mid).cmp(&state) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

/// Writes `after` over `before` in an entry's numbers (`out` starts at its first
/// number), each in its width; `None` if a number no longer fits its width, or may have
/// set a width that it now leaves (the row's widths would then change).
fn write_in_place(
    out: &mut [u8],
    widths: &[u8; STORED],
    before: &Sums,
    after: &Sums,
) -> Option<()> {
    let mut at = 0;
    for ((width, old), new) in widths.iter().zip(before).zip(after) {
        let (w, old_w, new_w) = (*width, width_of(*old), width_of(*new));
        if new_w > w || (old_w == w && new_w < w) {
            return None;
        }
        let w = usize::from(w);
        out.get_mut(at..at + w)?
            .copy_from_slice(&new.to_le_bytes()[..w]);
        at += w;
    }
    Some(())
}

/// The row `old` (or none) with `deltas` added, decoded and encoded whole; `None` when no
/// state has a report left in it (the row goes). The row's entries and the changes are
/// both in state order: one pass merges them into the entries kept, from which
/// [`encode_row`] works out the total and the widths.
fn rebuilt(
    key: &[u8],
    old: Option<&[u8]>,
    deltas: &BTreeMap<u32, [i64; STORED]>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("counter row {}: {what}", hex::encode(key)));
    let mut kept: Vec<(u32, Sums)> = Vec::with_capacity(deltas.len() + 16);
    let mut keep = |state: u32, values: Sums| -> Result<(), StoreError> {
        if values[0] == 0 {
            if values.iter().any(|v| *v != 0) {
                return Err(corrupt("an entry with no reports but other counts"));
            }
            return Ok(());
        }
        kept.push((state, values));
        Ok(())
    };
    let mut changes = deltas.iter().peekable();
    if let Some(bytes) = old {
        let row = CounterRow {
            month: 0,
            value: 0,
            bytes,
        };
        let entries = row.entries().map_err(|_| corrupt("unreadable entries"))?;
        let all = entries.picks(Positions::ALL);
        let mut before = None;
        for i in 0..entries.count {
            let mut values = [0; STORED];
            let state = entries.read(i, &all, &mut values);
            if before.is_some_and(|b| b >= state) {
                return Err(corrupt("entries out of state order"));
            }
            before = Some(state);
            while let Some((new_state, delta)) = changes.next_if(|(s, _)| **s < state) {
                let mut values = [0u64; STORED];
                add(&mut values, delta).ok_or_else(|| corrupt("a count would go out of range"))?;
                keep(*new_state, values)?;
            }
            if let Some((_, delta)) = changes.next_if(|(s, _)| **s == state) {
                add(&mut values, delta).ok_or_else(|| corrupt("a count would go out of range"))?;
            }
            keep(state, values)?;
        }
    }
    for (new_state, delta) in changes {
        let mut values = [0u64; STORED];
        add(&mut values, delta).ok_or_else(|| corrupt("a count would go out of range"))?;
        keep(*new_state, values)?;
    }
    if kept.is_empty() {
        return Ok(None);
    }
    encode_row(&kept)
        .map(Some)
        .ok_or_else(|| corrupt("a total would go out of range"))
}

/// Adds signed `delta` to `values`; `None` if a number would leave `u64`.
fn add(values: &mut Sums, delta: &[i64; STORED]) -> Option<()> {
    for (v, d) in values.iter_mut().zip(delta) {
        *v = v.checked_add_signed(*d)?;
    }
    Some(())
}

/// A row of `entries` (states in increasing order, each with at least one report) as
/// the module documentation lays it out; `None` if a total leaves `u64`.
fn encode_row(entries: &[(u32, Sums)]) -> Option<Vec<u8>> {
    let mut total = [0u64; STORED];
    for (_, values) in entries {
        for (t, v) in total.iter_mut().zip(values) {
            *t = t.checked_add(*v)?;
        }
    }
    let count = u32::try_from(entries.len()).ok()?;
    let mut row = Vec::with_capacity(2 * (STORED + 3 + 8 * STORED) + entries.len() * 40);
    encode_block(&mut row, &[(count, total)]);
    encode_block(&mut row, entries);
    Some(row)
}

/// Appends the widths of `entries`' numbers, then each entry: its 3-byte prefix, then
/// its numbers in those widths.
fn encode_block(row: &mut Vec<u8>, entries: &[(u32, Sums)]) {
    let mut widths = [0u8; STORED];
    for (_, values) in entries {
        for (w, v) in widths.iter_mut().zip(values) {
            *w = (*w).max(width_of(*v));
        }
    }
    row.extend_from_slice(&widths);
    for (prefix, values) in entries {
        row.extend_from_slice(&prefix.to_be_bytes()[1..]);
        for (v, w) in values.iter().zip(widths) {
            row.extend_from_slice(&v.to_le_bytes()[..usize::from(w)]);
        }
    }
}

/// The fewest bytes that hold `value` (none for 0).
fn width_of(value: u64) -> u8 {
    // At most 8.
    #[allow(clippy::cast_possible_truncation)]
    let bytes = (u64::BITS - value.leading_zeros()).div_ceil(8) as u8;
    bytes
}

/// Which numbers of a counter entry a reader decodes; the others read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions(u32);

impl Positions {
    /// Every number.
    pub const ALL: Self = Self(u32::MAX);

    /// What a table of `metrics` reads: the reports and the record keys' sum (cell keys
    /// and suppression need them whatever is asked), and each metric with its record
    /// noise.
    pub fn of(metrics: impl IntoIterator<Item = Additive>) -> Self {
        let mut bits = 1 << Additive::Reports as usize | 1 << KEY_SUM;
        for metric in metrics {
            bits |= 1 << metric as usize;
            if metric != Additive::Reports {
                let noise = NOISE + 2 * (metric as usize - 1);
                bits |= 0b11 << noise;
            }
        }
        Self(bits)
    }

    fn has(self, position: usize) -> bool {
        position < 32 && self.0 >> position & 1 == 1
    }
}

/// One counter row as read back.
pub struct CounterRow<'a> {
    /// The row's month (see [`month_of_day`]); a quarter row's first month.
    pub month: u32,
    pub value: u64,
    bytes: &'a [u8],
}

fn unreadable() -> StoreError {
    StoreError::Corrupt("an unreadable counter row".to_owned())
}

/// Where one wanted number lies in every entry of a row: its position in [`Sums`], its
/// offset from the entry's start, and the mask of its width.
#[derive(Clone, Copy, Default)]
struct Pick {
    position: usize,
    at: usize,
    mask: u64,
}

/// The [`Pick`]s of a read, the first `len` of them used.
struct Picks {
    picks: [Pick; STORED],
    len: usize,
}

impl std::ops::Deref for Picks {
    type Target = [Pick];

    fn deref(&self) -> &[Pick] {
        &self.picks[..self.len]
    }
}

/// A block of a row: `count` entries of `len` bytes each (a 3-byte prefix, then the
/// numbers in `widths`), from the start of `bytes`.
struct Entries<'a> {
    bytes: &'a [u8],
    widths: &'a [u8; STORED],
    len: usize,
    count: usize,
}

impl<'a> Entries<'a> {
    /// The block at the start of `bytes` (its widths, then its entries) and what follows
    /// it: `count` entries, or when `None` every entry to the end. `None` when the
    /// bytes do not hold that.
    fn at(bytes: &'a [u8], count: Option<usize>) -> Option<(Self, &'a [u8])> {
        let (widths, bytes) = bytes.split_first_chunk::<STORED>()?;
        if widths.iter().any(|w| *w > 8) {
            return None;
        }
        let len = 3 + widths.iter().map(|w| usize::from(*w)).sum::<usize>();
        let count = match count {
            Some(count) => count,
            None if bytes.len() % len == 0 => bytes.len() / len,
            None => return None,
        };
        let (bytes, rest) = bytes.split_at_checked(count.checked_mul(len)?)?;
        Some((
            Self {
                bytes,
                widths,
                len,
                count,
            },
            rest,
        ))
    }

    /// Where the `wanted` numbers lie in each entry.
    fn picks(&self, wanted: Positions) -> Picks {
        let mut picks = Picks {
            picks: [Pick::default(); STORED],
            len: 0,
        };
        let mut at = 3;
        for (position, width) in self.widths.iter().enumerate() {
            if wanted.has(position) {
                picks.picks[picks.len] = Pick {
                    position,
                    at,
                    mask: u64::MAX
                        .checked_shr(64 - 8 * u32::from(*width))
                        .unwrap_or(0),
                };
                picks.len += 1;
            }
            at += usize::from(*width);
        }
        picks
    }

    /// The state of entry `i` (below `count`).
    fn state(&self, i: usize) -> u32 {
        let at = i * self.len;
        self.bytes
            .get(at..at + 3)
            .map_or(0, |b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Entry `i` (below `count`): its state, with its numbers at `picks` written into
    /// `sums` (the others left as they are).
    #[inline]
    fn read(&self, i: usize, picks: &[Pick], sums: &mut Sums) -> u32 {
        let start = i * self.len;
        for pick in picks {
            sums[pick.position] = little_endian(self.bytes, start + pick.at) & pick.mask;
        }
        self.state(i)
    }
}

/// The eight bytes at `at` as a little-endian number, those past the end of `bytes`
/// read as 0 (a number's width is masked by the caller).
#[inline]
fn little_endian(bytes: &[u8], at: usize) -> u64 {
    let tail = bytes.get(at..).unwrap_or_default();
    if let Some(word) = tail.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word)
}

impl CounterRow<'_> {
    /// The row's total: the sums (at `wanted` positions), how many states contributed,
    /// and one of them.
    pub fn total(&self, wanted: Positions) -> Result<(Sums, usize, u32), StoreError> {
        let (total, entries) = self.blocks()?;
        let mut sums = [0; STORED];
        total.read(0, &total.picks(wanted), &mut sums);
        Ok((sums, entries.count, entries.state(0)))
    }

    /// The per-state entries, after the total.
    fn entries(&self) -> Result<Entries<'_>, StoreError> {
        self.blocks().map(|(_, entries)| entries)
    }

    /// The total and the per-state entries; unreadable unless the entries are whole and
    /// as many as the total says.
    fn blocks(&self) -> Result<(Entries<'_>, Entries<'_>), StoreError> {
        let (total, rest) = Entries::at(self.bytes, Some(1)).ok_or_else(unreadable)?;
        let (entries, _) = Entries::at(rest, None).ok_or_else(unreadable)?;
        if total.state(0) as usize != entries.count {
            return Err(unreadable());
        }
        Ok((total, entries))
    }

    /// Per reporting state (packed): the sums.
    pub fn states(&self) -> Result<Vec<(u32, Sums)>, StoreError> {
        let mut out = Vec::new();
        self.each_state(Positions::ALL, |state, sums| out.push((state, *sums)))?;
        Ok(out)
    }

    /// Calls `each` with every reporting state (packed) and its sums (at `wanted`
    /// positions), in state order, without collecting them.
    pub fn each_state(
        &self,
        wanted: Positions,
        mut each: impl FnMut(u32, &Sums),
    ) -> Result<(), StoreError> {
        let entries = self.entries()?;
        let picks = entries.picks(wanted);
        let mut sums = [0; STORED];
        for i in 0..entries.count {
            let state = entries.read(i, &picks, &mut sums);
            each(state, &sums);
        }
        Ok(())
    }
}

/// Calls `each` with (month, value, row bytes) for every row of `cuboid` and `category`
/// with months in `from..=to`, month by month, in key order.
fn read_rows(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    code: u8,
    category: i32,
    (from, to): (u32, u32),
    mut each: impl FnMut(u32, u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // The months that have rows at all, so that open ranges stay finite.
    let category_start = cell_key(0, category, 0, 0);
    let category_end = cell_key(u8::MAX, category, u32::MAX, u64::MAX);
    let mut present = table.range::<&[u8]>(category_start.as_slice()..=category_end.as_slice())?;
    let month = |key: &[u8]| split_key(key).map(|(m, _)| m);
    let Some(first) = present.next() else {
        return Ok(());
    };
    let lowest = month(first?.0.value())?;
    let highest = match present.next_back() {
        Some(last) => month(last?.0.value())?,
        None => lowest,
    };
    let mut month = from.max(lowest);
    while month <= to.min(highest) {
        let start = cell_key(code, category, month, 0);
        let end = cell_key(code, category, month, u64::MAX);
        for entry in table.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
            let (k, v) = entry?;
            let (_, value) = split_key(k.value())?;
            each(month, value, v.value())?;
        }
        let Some(next) = month.checked_add(1) else {
            break;
        };
        month = next;
    }
    Ok(())
}

fn split_key(key: &[u8]) -> Result<(u32, u64), StoreError> {
    if key.len() < CELL_KEY {
        return Err(StoreError::Corrupt("a counter key is too short".to_owned()));
    }
    let mut month = [0u8; 4];
    month.copy_from_slice(&key[1..5]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&key[6..14]);
    Ok((u32::from_be_bytes(month), u64::from_be_bytes(value)))
}

/// Which counter rows a read may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Month rows only: for tables split by month.
    Months,
    /// Quarter rows for the whole quarters in the range, and month rows for the months
    /// at either end that do not fill a quarter: for tables split by quarter, by year or
    /// by no period. A quarter row reads as its quarter's first month.
    Quarters,
}

/// The month rows, the quarter rows and the quarters whose rows are behind, as one
/// reader sees them.
pub(super) struct CounterTables<'a, T, B> {
    pub months: &'a T,
    pub quarters: &'a T,
    pub behind: &'a B,
}

/// Calls `each` for every counter row of `cuboid` and `category` that covers months in
/// `from..=to` at `grain`. At quarter grain, a whole quarter marked behind (see
/// [`catch_up_quarters`]) is read from its month rows.
pub(super) fn read_counters<
    T: ReadableTable<&'static [u8], &'static [u8]>,
    B: ReadableTable<(u8, u32), ()>,
>(
    tables: &CounterTables<'_, T, B>,
    (cuboid, category): (Cuboid, i32),
    (from, to): (u32, u32),
    grain: Grain,
    mut each: impl FnMut(&CounterRow<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let code = cuboid.code();
    // Rows of `table` for periods `range`; a quarter row reads as its first month.
    let mut read = |table: &T, range: (u32, u32), per_quarter: bool| {
        read_rows(table, code, category, range, |period, value, bytes| {
            each(&CounterRow {
                month: if per_quarter {
                    period.saturating_mul(3)
                } else {
                    period
                },
                value,
                bytes,
            })
        })
    };
    // The quarters wholly inside the range: `first..last` (quarter q is months 3q to
    // 3q + 2).
    let first = from.div_ceil(3);
    let last = u32::try_from((u64::from(to) + 1) / 3).unwrap_or(u32::MAX);
    if grain == Grain::Months || first >= last {
        return read(tables.months, (from, to), false);
    }
    if from < 3 * first {
        read(tables.months, (from, 3 * first - 1), false)?;
    }
    // Quarter rows between the quarters behind, month rows for those.
    let category_byte = u8::try_from(category).unwrap_or(0);
    let behind = tables
        .behind
        .range((category_byte, first)..(category_byte, last))?
        .map(|entry| entry.map(|(k, _)| k.value().1))
        .collect::<Result<Vec<u32>, _>>()?;
    let mut next = first;
    let mut marked = behind.into_iter().peekable();
    while let Some(start) = marked.next() {
        // A run of marked quarters: one read of their months.
        let mut end = start;
        while let Some(following) = marked.next_if(|q| *q == end + 1) {
            end = following;
        }
        if next < start {
            read(tables.quarters, (next, start - 1), true)?;
        }
        read(tables.months, (3 * start, 3 * end + 2), false)?;
        next = end + 1;
    }
    if next < last {
        read(tables.quarters, (next, last - 1), true)?;
    }
    if 3 * u64::from(last) <= u64::from(to) {
        read(tables.months, (3 * last, to), false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report's noise on a figure is drawn afresh for another value of it (tester V
    /// read the noise of a version it could read as a record, then undid it on a later
    /// version narrowed to aggregate-only with new figures), and stays for the same one.
    #[test]
    fn a_figure_of_another_value_draws_other_noise() {
        let drawn_alike = |metric: usize, (a, b): (u64, u64)| {
            (0..1_000u32)
                .filter(|&key| noise_draw(key, metric, a) == noise_draw(key, metric, b))
                .count()
        };
        for metric in 1..SUMS {
            assert!(drawn_alike(metric, (60, 83)) < 10, "metric {metric}");
            assert_eq!(drawn_alike(metric, (7, 7)), 1_000, "metric {metric}");
        }
        let moved_alike = (0..1_000u32)
            .filter(|&key| moved_fee(1_000, key) + 1 == moved_fee(1_001, key))
            .count();
        assert!(moved_alike < 100, "{moved_alike} of 1,000 fees moved alike");
    }

    /// A row as `update` writes it: the total, the widths, then each state's entry in
    /// state order.
    fn row_of(entries: &std::collections::BTreeMap<u32, [u64; STORED]>) -> Vec<u8> {
        let entries: Vec<(u32, Sums)> = entries.iter().map(|(s, v)| (*s, *v)).collect();
        encode_row(&entries).unwrap()
    }

    proptest::proptest! {
        /// Decoding a row finds every entry written, for values of every width, all
        /// positions or some; a cut row never gives a wrong answer nor a panic.
        #[test]
        fn a_row_decodes_to_the_entries_written(
            entries in proptest::collection::btree_map(
                1u32..0xff_ffff,
                proptest::array::uniform20(proptest::prop_oneof![
                    0u64..128, 128u64..1 << 35, (1u64 << 48)..1 << 56, (1u64 << 56)..1 << 60
                ]),
                0..8,
            ),
            cut in proptest::num::usize::ANY,
            mask in 0u32..1 << STORED,
        ) {
            let row = row_of(&entries);
            let read = CounterRow { month: 0, value: 0, bytes: &row };
            let decoded: std::collections::BTreeMap<u32, Sums> =
                read.states().unwrap().into_iter().collect();
            proptest::prop_assert_eq!(&decoded, &entries);
            // Decoding some positions gives those numbers and zeros elsewhere.
            let wanted = Positions(mask);
            let masked = |values: &Sums| {
                let mut out = *values;
                for (i, v) in out.iter_mut().enumerate() {
                    if mask >> i & 1 == 0 {
                        *v = 0;
                    }
                }
                out
            };
            let mut seen = Vec::new();
            read.each_state(wanted, |state, sums| seen.push((state, *sums))).unwrap();
            let expected: Vec<(u32, Sums)> =
                entries.iter().map(|(s, v)| (*s, masked(v))).collect();
            proptest::prop_assert_eq!(seen, expected);
            if !entries.is_empty() {
                let (total, count, _) = read.total(wanted).unwrap();
                proptest::prop_assert_eq!(count, entries.len());
                proptest::prop_assert_eq!(total, masked(&read.total(Positions::ALL).unwrap().0));
            }
            // Cut anywhere: the row is unreadable, or what it gives is entries written
            // (a cut that fell between entries cannot pass for the whole row: its count
            // is in the total).
            let cut = cut % row.len();
            let short = CounterRow { month: 0, value: 0, bytes: &row[..cut] };
            if let Ok(found) = short.states() {
                for (state, values) in &found {
                    proptest::prop_assert_eq!(Some(values), entries.get(state));
                }
                proptest::prop_assert!(found.len() < entries.len() || entries.is_empty());
            }
        }
    }

    proptest::proptest! {
        /// Whatever bytes a row holds, reading it gives numbers or an error, never a
        /// panic.
        #[test]
        fn any_bytes_read_without_panicking(
            bytes in proptest::collection::vec(proptest::prop_oneof![0u8..9, proptest::num::u8::ANY], 0..200),
            mask in proptest::num::u32::ANY,
        ) {
            let read = CounterRow { month: 0, value: 0, bytes: &bytes };
            let _ = read.total(Positions(mask));
            let _ = read.each_state(Positions(mask), |_, _| {});
            let _ = read.states();
        }
    }

    /// A report added to a row that has its state: patched in place.
    #[test]
    fn a_report_added_to_a_state_with_an_entry_is_patched_in_place() {
        let row = encode_row(&[(3, [5; STORED]), (7, [300; STORED])]).unwrap();
        let mut delta = [1i64; STORED];
        delta[KEY_SUM] = 40;
        let deltas = BTreeMap::from([(3, delta)]);
        let key = cell_key(1, 2, 3, 4);
        let rebuilt = rebuilt(&key, Some(&row), &deltas).unwrap().unwrap();
        assert_eq!(patched(&row, &deltas), Some(rebuilt));
        // A new state, or one losing its last report: rebuilt.
        assert_eq!(patched(&row, &BTreeMap::from([(4, delta)])), None);
        assert_eq!(patched(&row, &BTreeMap::from([(3, [-5; STORED])])), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whenever a row is patched in place, it has the very bytes a rebuild makes —
        /// for any entries and changes, numbers of every width, up and down.
        #[test]
        fn a_row_patched_in_place_is_the_row_rebuilt(
            entries in proptest::collection::btree_map(
                1u32..40,
                proptest::collection::vec(
                    proptest::prop_oneof![0u64..300, 250u64..70_000, 1u64 << 30..1 << 33, 1u64 << 55..1 << 57],
                    STORED,
                ),
                1..6,
            ),
            changes in proptest::collection::btree_map(
                1u32..40,
                proptest::collection::vec(-300i64..300, STORED),
                1..4,
            ),
        ) {
            let entries: Vec<(u32, Sums)> = entries
                .into_iter()
                .map(|(state, values)| {
                    let mut sums: Sums = values.try_into().unwrap();
                    sums[0] = sums[0].max(1);
                    (state, sums)
                })
                .collect();
            let row = encode_row(&entries).unwrap();
            let deltas: BTreeMap<u32, [i64; STORED]> = changes
                .into_iter()
                .map(|(state, values)| (state, values.try_into().unwrap()))
                .collect();
            let key = cell_key(1, 2, 3, 4);
            if let Some(patched) = patched(&row, &deltas) {
                let rebuilt = rebuilt(&key, Some(&row), &deltas);
                proptest::prop_assert_eq!(Some(patched), rebuilt.ok().flatten());
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Rows changed batch after batch (entries added, grown, shrunk, dropped at zero
        /// reports; numbers of every width) read back as a model of the same changes:
        /// every state's entry, the total, the number of states, and no row once its
        /// last report is gone.
        #[test]
        fn rows_read_back_what_batches_of_changes_made(
            batches in proptest::collection::vec(
                proptest::collection::btree_map(
                    1u32..12,
                    (0u64..3, proptest::prop_oneof![0u64..200, 1u64 << 20..1 << 40, 1u64 << 48..1 << 56, 1u64 << 56..1 << 57]),
                    1..5,
                ),
                1..8,
            ),
        ) {
            use redb::ReadableDatabase;
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("counters.redb")).unwrap();
            let definition: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("c");
            let key = cell_key(1, 2, 3, 4);
            let mut model: BTreeMap<u32, Sums> = BTreeMap::new();
            for batch in &batches {
                // Each state gains `add` reports carrying `size` in every number, or
                // loses them all when `add` is 0.
                let mut deltas = BTreeMap::new();
                for (state, (add, size)) in batch {
                    let now = model.entry(*state).or_insert([0; STORED]);
                    let mut delta = [0i64; STORED];
                    for (i, (d, v)) in delta.iter_mut().zip(now.iter_mut()).enumerate() {
                        let target = if *add == 0 { 0 } else { v.saturating_add(if i == 0 { *add } else { *size }) };
                        *d = i64::try_from(i128::from(target) - i128::from(*v)).unwrap();
                        *v = target;
                    }
                    deltas.insert(*state, delta);
                }
                model.retain(|_, v| v[0] > 0);
                let tx = db.begin_write().unwrap();
                update(&mut tx.open_table(definition).unwrap(), &key, &deltas).unwrap();
                tx.commit().unwrap();
                let tx = db.begin_read().unwrap();
                let table = tx.open_table(definition).unwrap();
                let row = table.get(key.as_slice()).unwrap();
                let Some(row) = row else {
                    proptest::prop_assert!(model.is_empty());
                    continue;
                };
                let read = CounterRow { month: 0, value: 0, bytes: row.value() };
                let expected: Vec<(u32, Sums)> = model.iter().map(|(s, v)| (*s, *v)).collect();
                proptest::prop_assert_eq!(read.states().unwrap(), expected);
                let (total, count, one) = read.total(Positions::ALL).unwrap();
                proptest::prop_assert_eq!(count, model.len());
                proptest::prop_assert_eq!(Some(&one), model.keys().next());
                let mut sum = [0u64; STORED];
                for values in model.values() {
                    for (t, v) in sum.iter_mut().zip(values) {
                        *t += v;
                    }
                }
                proptest::prop_assert_eq!(total, sum);
            }
        }
    }

    /// What a read gives, per (quarter, value, state): reports, then persons.
    type ByQuarter = BTreeMap<(u32, u64, u32), [u64; 2]>;

    /// Reads `months` of the counters in `db` at `grain`, added up per quarter.
    fn read_by_quarter(db: &redb::Database, months: (u32, u32), grain: Grain) -> ByQuarter {
        use redb::ReadableDatabase;
        let tx = db.begin_read().unwrap();
        let month_rows = tx.open_table(MONTH_ROWS).unwrap();
        let quarter_rows = tx.open_table(QUARTER_ROWS).unwrap();
        let behind = tx.open_table(BEHIND).unwrap();
        let tables = CounterTables {
            months: &month_rows,
            quarters: &quarter_rows,
            behind: &behind,
        };
        let mut out = ByQuarter::new();
        read_counters(&tables, (Cuboid::Origin, 2), months, grain, |row| {
            for (state, sums) in row.states()? {
                let cell = out.entry((row.month / 3, row.value, state)).or_default();
                cell[0] += sums[0];
                cell[1] += sums[1];
            }
            Ok(())
        })
        .unwrap();
        out
    }

    const MONTH_ROWS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("m");
    const QUARTER_ROWS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("q");
    const BEHIND: redb::TableDefinition<(u8, u32), ()> = redb::TableDefinition::new("b");

    /// Brings up to `limit` quarters up to date; returns how many are still behind.
    fn catch_up(db: &redb::Database, limit: usize) -> u64 {
        let tx = db.begin_write().unwrap();
        let done = catch_up_quarters(
            &tx.open_table(MONTH_ROWS).unwrap(),
            &mut tx.open_table(QUARTER_ROWS).unwrap(),
            &mut tx.open_table(BEHIND).unwrap(),
            (limit, &BTreeSet::new()),
        )
        .unwrap();
        tx.commit().unwrap();
        assert!(done.failed.is_empty());
        done.left
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Reports added in one batch and moved to other months (of the same quarter or
        /// not) in a second read back alike from month rows alone and at quarter grain
        /// (quarter rows, month rows at the ends and for quarters behind), for any range
        /// of months, open-ended ones included, and as the reports in the range are:
        /// before quarters are caught up, part-way, and after.
        #[test]
        fn quarter_rows_read_back_as_their_months_add_up(
            reports in proptest::collection::vec((0u32..30, 0u64..3, 1u32..4, 1i64..50), 1..40),
            moves in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u32..30), 0..15),
            from in 0u32..34,
            length in 0u32..36,
            open in proptest::prelude::any::<(bool, bool)>(),
            part_way in 0usize..6,
        ) {
            // Months near 2020 (from year zero), starting part-way through a quarter.
            const BASE: u32 = 2020 * 12 + 1;
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("counters.redb")).unwrap();
            let write = |changes: &[(u32, u64, u32, i64)]| {
                let mut deltas = Deltas::new(RecordKeys::new([0; 16]));
                for (month, value, state, reports) in changes {
                    let key = cell_key(Cuboid::Origin.code(), 2, BASE + month, *value);
                    let delta = deltas.cells.entry(key).or_default().entry(*state).or_default();
                    delta[0] += reports.signum();
                    delta[1] += reports;
                }
                let tx = db.begin_write().unwrap();
                deltas
                    .write(&mut tx.open_table(MONTH_ROWS).unwrap(), &mut tx.open_table(BEHIND).unwrap())
                    .unwrap();
                tx.commit().unwrap();
            };
            // Each report: (month, value, state, persons).
            let mut model = reports.clone();
            write(&reports);
            catch_up(&db, usize::MAX);
            let mut changes = Vec::new();
            for (which, to) in &moves {
                let report = &mut model[which.index(reports.len())];
                changes.push((report.0, report.1, report.2, -report.3));
                report.0 = *to;
                changes.push((report.0, report.1, report.2, report.3));
            }
            write(&changes);

            let start = if open.0 { 0 } else { BASE + from };
            let end = if open.1 { u32::MAX } else { BASE + from + length };
            let mut expected = ByQuarter::new();
            for (month, value, state, persons) in &model {
                let month = BASE + month;
                if (start..=end).contains(&month) {
                    let cell = expected.entry((month / 3, *value, *state)).or_default();
                    cell[0] += 1;
                    cell[1] += persons.unsigned_abs();
                }
            }
            let by_months = read_by_quarter(&db, (start, end), Grain::Months);
            proptest::prop_assert_eq!(&by_months, &expected);
            let moved_quarters = changes.iter().map(|c| (BASE + c.0) / 3).collect::<BTreeSet<_>>();
            let mut left = moved_quarters.len() as u64;
            for limit in [0, part_way, usize::MAX] {
                let now = catch_up(&db, limit);
                proptest::prop_assert_eq!(now, left.saturating_sub(limit as u64));
                left = now;
                let by_quarters = read_by_quarter(&db, (start, end), Grain::Quarters);
                proptest::prop_assert_eq!(&by_quarters, &expected);
            }
            proptest::prop_assert_eq!(left, 0);
        }
    }

    /// A quarter whose month rows cannot be read stays marked (so it is read from its
    /// months) and does not hold up the others.
    #[test]
    fn a_quarter_that_cannot_be_made_is_skipped_and_stays_marked() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("counters.redb")).unwrap();
        let good = 2020 * 12;
        let bad = good + 3;
        let tx = db.begin_write().unwrap();
        {
            let mut deltas = Deltas::new(RecordKeys::new([0; 16]));
            let delta = [1; STORED];
            for month in [good, bad] {
                let key = cell_key(Cuboid::Origin.code(), 2, month, 7);
                deltas.cells.entry(key).or_default().insert(5, delta);
            }
            deltas
                .write(
                    &mut tx.open_table(MONTH_ROWS).unwrap(),
                    &mut tx.open_table(BEHIND).unwrap(),
                )
                .unwrap();
            let cut = cell_key(Cuboid::Origin.code(), 2, bad, 7);
            tx.open_table(MONTH_ROWS)
                .unwrap()
                .insert(cut.as_slice(), [9u8; 5].as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        let done = catch_up_quarters(
            &tx.open_table(MONTH_ROWS).unwrap(),
            &mut tx.open_table(QUARTER_ROWS).unwrap(),
            &mut tx.open_table(BEHIND).unwrap(),
            (usize::MAX, &BTreeSet::new()),
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(done.failed.len(), 1);
        assert_eq!(done.failed[0].0, (2, bad / 3));
        assert_eq!(done.left, 0);
        let tx = db.begin_read().unwrap();
        let marks: Vec<(u8, u32)> = tx
            .open_table(BEHIND)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        assert_eq!(marks, vec![(2, bad / 3)]);
        let quarter = cell_key(Cuboid::Origin.code(), 2, good / 3, 7);
        assert!(
            tx.open_table(QUARTER_ROWS)
                .unwrap()
                .get(quarter.as_slice())
                .unwrap()
                .is_some()
        );
        let read = read_by_quarter(&db, (good, good + 2), Grain::Quarters);
        assert_eq!(read.get(&(good / 3, 7, 5)), Some(&[1, 1]));
    }

    #[test]
    fn a_row_whose_total_counts_other_entries_is_unreadable() {
        let mut entries = std::collections::BTreeMap::new();
        entries.insert(7, [1; STORED]);
        entries.insert(9, [2; STORED]);
        let mut row = row_of(&entries);
        let read = CounterRow {
            month: 0,
            value: 0,
            bytes: &row,
        };
        assert_eq!(read.total(Positions::ALL).unwrap().1, 2);
        // The total's count follows its widths.
        row[STORED + 2] = 3;
        let read = CounterRow {
            month: 0,
            value: 0,
            bytes: &row,
        };
        assert!(read.total(Positions::ALL).is_err());
        assert!(read.states().is_err());
        assert!(read.each_state(Positions::ALL, |_, _| {}).is_err());
    }

    #[test]
    fn packed_countries_sort_like_their_codes_and_read_back() {
        assert!(pack_country("AFG") < pack_country("AUS"));
        assert!(pack_country("AUS") < pack_country("IDN"));
        assert_eq!(unpack_country(pack_country("THA")), "THA");
        assert_eq!(pack_country(""), NONE);
        let route = pack_route("AFG", "AUS");
        assert_eq!(unpack_country(route >> 24), "AFG");
        assert_eq!(unpack_country(route & 0xff_ffff), "AUS");
    }

    proptest::proptest! {
        /// A moved fee is the amount moved by its share rounded to a whole unit (one at
        /// least; up where down would reach 0), as exact arithmetic gives it, for every
        /// amount: near 2^64 too, where the product and its rounding no longer fit in 64
        /// bits; small amounts included.
        #[test]
        fn moved_fees_round_like_exact_arithmetic(
            amount in proptest::prop_oneof![
                proptest::prelude::any::<u64>(),
                0u64..40,
                proptest::strategy::Strategy::prop_map((50u64..=100, 0u64..3), |(per_mille, less)| u64::MAX / per_mille - less),
            ],
            key in proptest::prelude::any::<u32>(),
        ) {
            let z = fee_draw(key, amount);
            let per_mille = 50 + (z & 0xffff_ffff) % 51;
            let shift = ((u128::from(amount) * u128::from(per_mille) + 500) / 1000).max(1);
            let expected = if z >> 63 == 0 || shift >= u128::from(amount) {
                (u128::from(amount) + shift).min(u128::from(u64::MAX))
            } else {
                u128::from(amount) - shift
            };
            let moved = moved_fee(amount, key);
            proptest::prop_assert_eq!(u128::from(moved), expected);
            // Never the amount itself, never 0 (but at the very top of u64).
            proptest::prop_assert!(moved != amount || amount == u64::MAX);
            proptest::prop_assert!(moved > 0);
        }
    }

    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn fees_move_by_each_reports_own_five_to_ten_percent() {
        let mut shown = std::collections::BTreeSet::new();
        for key in (0..200u32).map(|i| i.wrapping_mul(0x9e37_79b9)) {
            let moved = moved_fee(8200, key);
            let share = moved.abs_diff(8200) as f64 / 8200.0;
            assert!((0.0499..=0.1001).contains(&share), "{moved}");
            assert_eq!(
                moved,
                moved_fee(8200, key),
                "the same report, the same move"
            );
            shown.insert(moved);
        }
        // The same amount in other reports is moved to many different values, so a
        // state's own reports cannot map amounts to shown values.
        assert!(shown.len() > 60, "{}", shown.len());
    }

    #[test]
    fn months_count_from_year_zero() {
        let day = time::Date::from_calendar_date(2024, time::Month::March, 31)
            .map(time::Date::to_julian_day)
            .unwrap_or_default();
        assert_eq!(month_of_day(day), 2024 * 12 + 2);
    }
}
