//! The columnar projection: the facts aggregates use of the latest version of every
//! report, dictionary-encoded into small integer columns held in memory, so that an
//! aggregate the counters cannot answer is a tight scan over a few arrays instead of a
//! decode of every report head.
//!
//! It is built from the store (every report head, in id order) when first asked for —
//! the server asks at start — and then kept in step by the writer: each committed batch's
//! changes are applied after the commit and before the batch's callers are answered, so
//! it is never ahead of what is durable and a caller reads its own writes. A retracted
//! report's row stays, marked dead; an amendment rewrites its row.
//!
//! Layout, per report (the aim is at most 64 bytes): 8 bytes of id (the high half; full
//! ids are kept apart for the few that share one), the record key (4), month (2), state
//! (2), flags (1: live, category, point, fee, and whom the report is shared with), origin, destination and location country (2 each), modus operandi,
//! maritime event, vessel type and sea area (1 each), the point in 10⁻⁷ degrees (4 + 4),
//! persons (2), the five other magnitudes (1 each), the fee (2 + 4) and where its transit,
//! nationality and listed-states lists start in a shared arena (4 + 1 + 1 + 1). A value too large for its
//! column is kept in a side table (the column holds the column's largest value as an
//! escape), as is a point that is not a whole number of 10⁻⁷ degrees: every answer is
//! exact.

use rustc_hash::FxHashMap;

use super::{ReportHead, StoreError, counters::RecordKeys};
use crate::report::ReportSummary;

/// A change to the latest version of one report, in commit order.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The report's latest version is now this (reported by this state).
    Set(u128, Box<ReportSummary>, String),
    /// The report no longer counts (retracted, or about to be set anew).
    Remove(u128),
}

/// Row flags.
pub(crate) mod flag {
    /// The row counts (not retracted, nor signed under a compromised key).
    pub(crate) const LIVE: u8 = 1;
    /// A maritime movement (else a smuggling incident).
    pub(crate) const MARITIME: u8 = 2;
    /// The report gives a point.
    pub(crate) const POINT: u8 = 4;
    /// The report states a fee per person.
    pub(crate) const FEE: u8 = 8;
    /// Its latest version is shared with every contributing state.
    pub(crate) const SHARED_WITH_ALL: u8 = 16;
    /// Its latest version is shared with the states of its listed-states list.
    pub(crate) const SHARED_WITH_LISTED: u8 = 32;
}

/// Which column a value too large for its column belongs to (in [`Projection::big`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wide {
    /// One of the six magnitudes (`Additive` index 1..=6).
    Magnitude(u8),
    FeeAmount,
    /// The persons of the `i`-th nationality of the row.
    NationalityCount(u8),
}

/// Codes of three-letter codes (countries and currencies): 0 is "none".
#[derive(Debug, Default)]
pub(crate) struct Dictionary {
    /// Packed code (`counters::pack_country`) of each dictionary code.
    packed: Vec<u64>,
    codes: FxHashMap<u64, u16>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Self::default();
        d.packed.push(0);
        d.codes.insert(0, 0);
        d
    }

    fn intern(&mut self, text: &str) -> Result<u16, StoreError> {
        let packed = super::counters::pack_country(text);
        if let Some(code) = self.codes.get(&packed) {
            return Ok(*code);
        }
        let code = u16::try_from(self.packed.len()).map_err(|_| {
            StoreError::Corrupt("more than 65535 distinct country and currency codes".to_owned())
        })?;
        self.packed.push(packed);
        self.codes.insert(packed, code);
        Ok(code)
    }

    /// The code of a packed value, if it occurs.
    pub(crate) fn code(&self, packed: u64) -> Option<u16> {
        self.codes.get(&packed).copied()
    }

    /// The packed value of a code.
    pub(crate) fn packed(&self, code: u16) -> u64 {
        self.packed.get(usize::from(code)).copied().unwrap_or(0)
    }

    /// The number of codes (including "none").
    pub(crate) fn len(&self) -> usize {
        self.packed.len()
    }
}

/// Coordinates are kept in these units of a degree.
const POINT_SCALE: f64 = 1e7;

/// The column value of a coordinate kept in [`Projection::points`] instead.
pub(crate) const POINT_ELSEWHERE: i32 = i32::MIN;

/// The column value of a coordinate, if it is a whole number of 10⁻⁷ degrees (that is,
/// if dividing it back gives exactly the same number).
fn fixed_point(degrees: f64) -> Option<i32> {
    let scaled = (degrees * POINT_SCALE).round();
    if !(-2e9..=2e9).contains(&scaled) {
        return None;
    }
    // In range: checked just above.
    #[allow(clippy::cast_possible_truncation)]
    let fixed = scaled as i32;
    // Exactly the same number, bit for bit: the point of the check.
    let same = (f64::from(fixed) / POINT_SCALE).to_bits() == degrees.to_bits();
    (same && fixed != POINT_ELSEWHERE).then_some(fixed)
}

/// The column values `v` with `min <= v / 10⁷ <= max` (division rounded as IEEE 754
/// does, so the same as comparing the original coordinates): an inclusive range, empty
/// when `lo > hi`.
pub(crate) fn fixed_range(min: f64, max: f64) -> (i64, i64) {
    let value = |k: i64| {
        // |k| < 2^31: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let k = k as f64;
        k / POINT_SCALE
    };
    // Degrees are within ±180, so these are within ±2^31.
    #[allow(clippy::cast_possible_truncation)]
    let mut lo = (min * POINT_SCALE).floor() as i64 - 2;
    while value(lo) < min {
        lo += 1;
    }
    #[allow(clippy::cast_possible_truncation)]
    let mut hi = (max * POINT_SCALE).ceil() as i64 + 2;
    while value(hi) > max {
        hi -= 1;
    }
    (lo, hi)
}

/// The projection. Columns are public to the crate for the scan in `crate::analytics`;
/// each has one entry per row.
pub struct Projection {
    /// High halves of the ids; rows below `sorted` are in id order.
    prefixes: Vec<u64>,
    sorted: usize,
    /// Rows of ids not found through `prefixes`: those sharing a high half with another
    /// row, and every row added since the build.
    exact: FxHashMap<u128, u32>,
    pub(crate) countries: Dictionary,
    /// The smallest and largest month of any row ever written.
    pub(crate) months: (u16, u16),
    pub(crate) record_key: Vec<u32>,
    /// Months since year 0 of the incident date (`counters::month_of_day`).
    pub(crate) month: Vec<u16>,
    pub(crate) state: Vec<u16>,
    pub(crate) flags: Vec<u8>,
    pub(crate) origin: Vec<u16>,
    pub(crate) destination: Vec<u16>,
    pub(crate) location: Vec<u16>,
    pub(crate) modus_operandi: Vec<u8>,
    pub(crate) maritime_event: Vec<u8>,
    pub(crate) vessel_type: Vec<u8>,
    pub(crate) sea_area: Vec<u8>,
    /// The point in 10⁻⁷ degrees, or [`POINT_ELSEWHERE`] (see `points`).
    pub(crate) latitude: Vec<i32>,
    pub(crate) longitude: Vec<i32>,
    persons: Vec<u16>,
    /// Deaths, missing, minors, unaccompanied minors, facilitators arrested.
    small: [Vec<u8>; 5],
    pub(crate) fee_currency: Vec<u16>,
    fee_amount: Vec<u32>,
    /// Where the row's lists start in `arena`: transit codes, then nationality codes, then
    /// persons per nationality, then the states a listed-states scope lists.
    list_start: Vec<u32>,
    pub(crate) transit_len: Vec<u8>,
    pub(crate) nationality_len: Vec<u8>,
    listed_len: Vec<u8>,
    arena: Vec<u16>,
    /// Values too large for their column.
    big: FxHashMap<(u32, Wide), u64>,
    /// Points not a whole number of 10⁻⁷ degrees: (latitude, longitude).
    points: FxHashMap<u32, (f64, f64)>,
    record_keys: RecordKeys,
    /// The newest envelope sequence the rows hold: a snapshot whose last sequence is
    /// this one holds the same reports (`Snapshot::last_sequence`).
    sequence: u64,
}

impl Projection {
    /// An empty projection whose rows get their record keys from `record_keys`.
    pub(super) fn new(record_keys: RecordKeys) -> Self {
        Self {
            prefixes: Vec::new(),
            sorted: 0,
            exact: FxHashMap::default(),
            countries: Dictionary::new(),
            months: (u16::MAX, 0),
            record_key: Vec::new(),
            month: Vec::new(),
            state: Vec::new(),
            flags: Vec::new(),
            origin: Vec::new(),
            destination: Vec::new(),
            location: Vec::new(),
            modus_operandi: Vec::new(),
            maritime_event: Vec::new(),
            vessel_type: Vec::new(),
            sea_area: Vec::new(),
            latitude: Vec::new(),
            longitude: Vec::new(),
            persons: Vec::new(),
            small: Default::default(),
            fee_currency: Vec::new(),
            fee_amount: Vec::new(),
            list_start: Vec::new(),
            transit_len: Vec::new(),
            nationality_len: Vec::new(),
            listed_len: Vec::new(),
            arena: Vec::new(),
            big: FxHashMap::default(),
            points: FxHashMap::default(),
            record_keys,
            sequence: 0,
        }
    }

    /// The projection of every report head, given in id order (as the reports table
    /// keeps them), of a snapshot whose newest envelope is `sequence`.
    pub(super) fn build(
        (record_keys, sequence): (RecordKeys, u64),
        heads: impl Iterator<Item = Result<(u128, ReportHead), StoreError>>,
    ) -> Result<Self, StoreError> {
        let mut p = Self::new(record_keys);
        p.sequence = sequence;
        let mut previous: Option<(u128, usize)> = None;
        for head in heads {
            let (id, head) = head?;
            let Some(summary) = head.summary else {
                continue;
            };
            let row = p.push(id, &summary, &head.state)?;
            if head.retracted || head.contribution_revoked {
                p.flags[row] &= !flag::LIVE;
            }
            if let Some((before, before_row)) = previous {
                if before >= id {
                    return Err(StoreError::Corrupt(
                        "report heads out of id order".to_owned(),
                    ));
                }
                // Rows sharing a high half are found by their full id.
                if high_half(before) == high_half(id) {
                    p.exact.insert(before, row_number(before_row));
                    p.exact.insert(id, row_number(row));
                }
            }
            previous = Some((id, row));
        }
        p.sorted = p.prefixes.len();
        p.shrink();
        Ok(p)
    }

    /// The projection of these reports (id, latest version, state, retracted), for
    /// tests of what reads it.
    #[cfg(test)]
    pub(crate) fn of(reports: &[(u128, ReportSummary, String, bool)]) -> Self {
        let mut sorted: Vec<_> = reports.iter().collect();
        sorted.sort_by_key(|r| r.0);
        let heads = sorted.into_iter().map(|(id, summary, state, retracted)| {
            Ok((
                *id,
                ReportHead {
                    state: state.clone(),
                    retracted: *retracted,
                    summary: Some(summary.clone()),
                    ..ReportHead::default()
                },
            ))
        });
        Self::build((RecordKeys::new([3; 16]), 0), heads).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The newest envelope sequence the rows hold.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Applies one committed batch's changes, in order; `sequence` is the batch's newest
    /// envelope. A batch the rows already hold (committed before the snapshot they were
    /// built from) is not applied again.
    pub(crate) fn apply(&mut self, changes: &[Change], sequence: u64) -> Result<(), StoreError> {
        if sequence <= self.sequence {
            return Ok(());
        }
        self.sequence = sequence;
        // A report set without being removed first in the batch is a new one (an
        // amendment removes the old version first).
        let mut removed: rustc_hash::FxHashSet<u128> = rustc_hash::FxHashSet::default();
        for change in changes {
            match change {
                Change::Set(id, summary, state) => {
                    if let Some(row) = self.row_of(*id).filter(|_| removed.contains(id)) {
                        self.write(row, *id, summary, state)?;
                    } else {
                        let row = self.push(*id, summary, state)?;
                        self.exact.insert(*id, row_number(row));
                    }
                }
                Change::Remove(id) => {
                    removed.insert(*id);
                    if let Some(row) = self.row_of(*id) {
                        self.flags[row] &= !flag::LIVE;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the changes of a batch that stored no envelope: reports leaving the
    /// aggregates (a key's compromise). Taken whatever the snapshot the projection was
    /// built from, as marking a row dead again changes nothing.
    pub(crate) fn remove(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        for change in changes {
            match change {
                Change::Remove(id) => {
                    if let Some(row) = self.row_of(*id) {
                        self.flags[row] &= !flag::LIVE;
                    }
                }
                Change::Set(..) => {
                    return Err(StoreError::Corrupt(
                        "a batch that stored no envelope set a report's latest version".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The row of report `id`, which must have one (a report the projection holds).
    fn row_of(&self, id: u128) -> Option<usize> {
        if let Some(row) = self.exact.get(&id) {
            return usize::try_from(*row).ok();
        }
        // Among the rows in id order a high half is unique (those sharing one are in
        // `exact`), so the report's row is the one with its high half.
        self.prefixes[..self.sorted]
            .binary_search(&high_half(id))
            .ok()
    }

    /// Adds a row for `id`.
    fn push(
        &mut self,
        id: u128,
        summary: &ReportSummary,
        state: &str,
    ) -> Result<usize, StoreError> {
        let row = self.prefixes.len();
        if u32::try_from(row).is_err() {
            return Err(StoreError::Corrupt(
                "more than 2^32 reports in the projection".to_owned(),
            ));
        }
        self.prefixes.push(high_half(id));
        self.record_key.push(0);
        self.month.push(0);
        self.state.push(0);
        self.flags.push(0);
        self.origin.push(0);
        self.destination.push(0);
        self.location.push(0);
        self.modus_operandi.push(0);
        self.maritime_event.push(0);
        self.vessel_type.push(0);
        self.sea_area.push(0);
        self.latitude.push(0);
        self.longitude.push(0);
        self.persons.push(0);
        for column in &mut self.small {
            column.push(0);
        }
        self.fee_currency.push(0);
        self.fee_amount.push(0);
        self.list_start.push(0);
        self.transit_len.push(0);
        self.nationality_len.push(0);
        self.listed_len.push(0);
        self.write(row, id, summary, state)?;
        Ok(row)
    }

    /// Sets row `row` to `summary` (live).
    fn write(
        &mut self,
        row: usize,
        id: u128,
        summary: &ReportSummary,
        state: &str,
    ) -> Result<(), StoreError> {
        let facts = summary
            .facts
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("a report summary without its facts".to_owned()))?;
        let r = row_number(row);
        self.big.retain(|(at, _), _| *at != r);
        self.points.remove(&r);
        self.record_key[row] = self.record_keys.of(id);
        // Incident dates are never in the future, so months fit until the year 5461.
        let month =
            u16::try_from(super::counters::month_of_day(summary.incident_day)).unwrap_or(u16::MAX);
        self.month[row] = month;
        self.months = (self.months.0.min(month), self.months.1.max(month));
        self.state[row] = self.countries.intern(state)?;
        let mut flags = flag::LIVE;
        if summary.category == crate::pb::Category::MaritimeMovement as i32 {
            flags |= flag::MARITIME;
        }
        self.origin[row] = self.countries.intern(&facts.origin)?;
        self.destination[row] = self.countries.intern(&facts.destination)?;
        self.location[row] = self.countries.intern(&facts.location_country)?;
        self.modus_operandi[row] = enum_byte(summary.modus_operandi, "modus operandi")?;
        self.maritime_event[row] = enum_byte(summary.maritime_event, "maritime event")?;
        self.vessel_type[row] = enum_byte(summary.vessel_type, "vessel type")?;
        self.sea_area[row] = enum_byte(facts.sea_area, "sea area")?;
        if summary.has_point {
            flags |= flag::POINT;
            if let (Some(lat), Some(lon)) = (
                fixed_point(summary.latitude),
                fixed_point(summary.longitude),
            ) {
                self.latitude[row] = lat;
                self.longitude[row] = lon;
            } else {
                self.latitude[row] = POINT_ELSEWHERE;
                self.longitude[row] = POINT_ELSEWHERE;
                self.points.insert(r, (summary.latitude, summary.longitude));
            }
        }
        self.persons[row] = narrow(&mut self.big, r, Wide::Magnitude(1), facts.persons);
        let others = [
            facts.deaths,
            facts.missing,
            facts.minors,
            facts.unaccompanied_minors,
            facts.facilitators_arrested,
        ];
        for (i, value) in others.into_iter().enumerate() {
            // i < 5.
            #[allow(clippy::cast_possible_truncation)]
            let metric = Wide::Magnitude(i as u8 + 2);
            self.small[i][row] = narrow(&mut self.big, r, metric, value);
        }
        if facts.fee_currency.is_empty() {
            self.fee_currency[row] = 0;
            self.fee_amount[row] = 0;
        } else {
            flags |= flag::FEE;
            self.fee_currency[row] = self.countries.intern(&facts.fee_currency)?;
            self.fee_amount[row] = narrow(&mut self.big, r, Wide::FeeAmount, facts.fee_amount);
        }
        flags |= match crate::pb::SharingScope::try_from(summary.scope) {
            // `crate::access::visible_to`'s rule: every contributor, or the listed states.
            Ok(crate::pb::SharingScope::AllContributors) => flag::SHARED_WITH_ALL,
            Ok(crate::pb::SharingScope::ListedStates) => flag::SHARED_WITH_LISTED,
            _ => 0,
        };
        self.flags[row] = flags;
        self.write_lists(row, summary)
    }

    /// Whether the report of `row` is shared with the state of dictionary code `reader`
    /// (its own reports aside): whether that state's nodes may read it as a record.
    #[inline]
    pub(crate) fn shared_with(&self, row: usize, reader: u16) -> bool {
        let flags = self.flags[row];
        flags & flag::SHARED_WITH_ALL != 0
            || (flags & flag::SHARED_WITH_LISTED != 0 && self.listed(row).contains(&reader))
    }

    /// Writes the row's transit, nationality and listed-states lists into the arena: over
    /// the old ones when they fit, else at its end.
    fn write_lists(&mut self, row: usize, summary: &ReportSummary) -> Result<(), StoreError> {
        let facts = summary
            .facts
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("a report summary without its facts".to_owned()))?;
        let r = row_number(row);
        let listed: &[String] = if summary.scope == crate::pb::SharingScope::ListedStates as i32 {
            &summary.listed_states
        } else {
            &[]
        };
        let mut list = Vec::with_capacity(
            facts.transit.len() + 2 * summary.nationalities.len() + listed.len(),
        );
        for c in &facts.transit {
            list.push(self.countries.intern(c)?);
        }
        for n in &summary.nationalities {
            list.push(self.countries.intern(n)?);
        }
        for (i, count) in facts
            .nationality_counts
            .iter()
            .take(summary.nationalities.len())
            .enumerate()
        {
            let i = u8::try_from(i).map_err(|_| too_long())?;
            list.push(narrow(&mut self.big, r, Wide::NationalityCount(i), *count));
        }
        for state in listed {
            list.push(self.countries.intern(state)?);
        }
        let transit = u8::try_from(facts.transit.len()).map_err(|_| too_long())?;
        let nationalities = u8::try_from(summary.nationalities.len()).map_err(|_| too_long())?;
        let listed = u8::try_from(listed.len()).map_err(|_| too_long())?;
        let old = usize::from(self.transit_len[row])
            + 2 * usize::from(self.nationality_len[row])
            + usize::from(self.listed_len[row]);
        let start = if list.len() <= old && old > 0 {
            self.list_start[row] as usize
        } else {
            let start = self.arena.len();
            self.arena.resize(start + list.len(), 0);
            start
        };
        self.arena[start..start + list.len()].copy_from_slice(&list);
        self.list_start[row] = u32::try_from(start)
            .map_err(|_| StoreError::Corrupt("the projection's list arena is full".to_owned()))?;
        self.transit_len[row] = transit;
        self.nationality_len[row] = nationalities;
        self.listed_len[row] = listed;
        Ok(())
    }

    /// Frees spare capacity (after a build).
    fn shrink(&mut self) {
        self.prefixes.shrink_to_fit();
        self.record_key.shrink_to_fit();
        self.month.shrink_to_fit();
        self.state.shrink_to_fit();
        self.flags.shrink_to_fit();
        self.origin.shrink_to_fit();
        self.destination.shrink_to_fit();
        self.location.shrink_to_fit();
        self.modus_operandi.shrink_to_fit();
        self.maritime_event.shrink_to_fit();
        self.vessel_type.shrink_to_fit();
        self.sea_area.shrink_to_fit();
        self.latitude.shrink_to_fit();
        self.longitude.shrink_to_fit();
        self.persons.shrink_to_fit();
        for column in &mut self.small {
            column.shrink_to_fit();
        }
        self.fee_currency.shrink_to_fit();
        self.fee_amount.shrink_to_fit();
        self.list_start.shrink_to_fit();
        self.transit_len.shrink_to_fit();
        self.nationality_len.shrink_to_fit();
        self.listed_len.shrink_to_fit();
        self.arena.shrink_to_fit();
    }

    /// Rows (live or not).
    pub fn rows(&self) -> usize {
        self.prefixes.len()
    }

    /// Live rows.
    pub fn live(&self) -> usize {
        self.flags.iter().filter(|f| *f & flag::LIVE != 0).count()
    }

    /// Bytes the projection holds (columns' capacity, arena and side tables; the
    /// hash tables' at their bucket size).
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let columns = self.prefixes.capacity() * 8
            + self.record_key.capacity() * 4
            + (self.month.capacity()
                + self.state.capacity()
                + self.origin.capacity()
                + self.destination.capacity()
                + self.location.capacity()
                + self.persons.capacity()
                + self.fee_currency.capacity()
                + self.arena.capacity())
                * 2
            + (self.latitude.capacity()
                + self.longitude.capacity()
                + self.fee_amount.capacity()
                + self.list_start.capacity())
                * 4
            + self.flags.capacity()
            + self.modus_operandi.capacity()
            + self.maritime_event.capacity()
            + self.vessel_type.capacity()
            + self.sea_area.capacity()
            + self.transit_len.capacity()
            + self.nationality_len.capacity()
            + self.listed_len.capacity()
            + self.small.iter().map(Vec::capacity).sum::<usize>();
        let tables = self.exact.capacity() * (size_of::<(u128, u32)>() + 1)
            + self.big.capacity() * (size_of::<((u32, Wide), u64)>() + 1)
            + self.points.capacity() * (size_of::<(u32, (f64, f64))>() + 1)
            + self.countries.packed.capacity() * 8
            + self.countries.codes.capacity() * (size_of::<(u64, u16)>() + 1);
        columns + tables
    }

    /// The row's persons.
    pub(crate) fn persons(&self, row: usize) -> u64 {
        match self.persons[row] {
            u16::MAX => self.wide(row, Wide::Magnitude(1)),
            v => u64::from(v),
        }
    }

    /// The row's magnitude `metric` (an `Additive` index, 1..=6).
    pub(crate) fn magnitude(&self, row: usize, metric: usize) -> u64 {
        match metric {
            1 => self.persons(row),
            2..=6 => match self.small[metric - 2][row] {
                u8::MAX => {
                    // metric ≤ 6.
                    #[allow(clippy::cast_possible_truncation)]
                    let m = metric as u8;
                    self.wide(row, Wide::Magnitude(m))
                }
                v => u64::from(v),
            },
            _ => 1,
        }
    }

    /// The record keys of the store this projection is of (tests work out what a scan
    /// should find from them).
    #[cfg(test)]
    pub(crate) fn record_keys(&self) -> &RecordKeys {
        &self.record_keys
    }

    /// Magnitude `metric` (an `Additive` index, 1..=6; 1 for any other) of each of
    /// `rows`, in order, into `out`: one column at a time, for the scan.
    pub(crate) fn magnitudes(&self, metric: usize, rows: &[u32], out: &mut Vec<u64>) {
        out.clear();
        match metric {
            1 => out.extend(rows.iter().map(|&r| match self.persons[r as usize] {
                u16::MAX => self.wide(r as usize, Wide::Magnitude(1)),
                v => u64::from(v),
            })),
            2..=6 => {
                let column = &self.small[metric - 2];
                // metric ≤ 6.
                #[allow(clippy::cast_possible_truncation)]
                let wide = Wide::Magnitude(metric as u8);
                out.extend(rows.iter().map(|&r| match column[r as usize] {
                    u8::MAX => self.wide(r as usize, wide),
                    v => u64::from(v),
                }));
            }
            _ => out.resize(rows.len(), 1),
        }
    }

    /// The row's fee amount (meaningful when [`flag::FEE`] is set).
    pub(crate) fn fee_amount(&self, row: usize) -> u64 {
        match self.fee_amount[row] {
            u32::MAX => self.wide(row, Wide::FeeAmount),
            v => u64::from(v),
        }
    }

    /// The row's transit country codes.
    pub(crate) fn transit(&self, row: usize) -> &[u16] {
        let start = self.list_start[row] as usize;
        &self.arena[start..start + usize::from(self.transit_len[row])]
    }

    /// The row's nationality codes.
    pub(crate) fn nationalities(&self, row: usize) -> &[u16] {
        let start = self.list_start[row] as usize + usize::from(self.transit_len[row]);
        &self.arena[start..start + usize::from(self.nationality_len[row])]
    }

    /// The states (codes) the row's listed-states scope lists.
    fn listed(&self, row: usize) -> &[u16] {
        let start = self.list_start[row] as usize
            + usize::from(self.transit_len[row])
            + 2 * usize::from(self.nationality_len[row]);
        &self.arena[start..start + usize::from(self.listed_len[row])]
    }

    /// The persons of the row's `i`-th nationality.
    pub(crate) fn nationality_count(&self, row: usize, i: usize) -> u64 {
        let at = self.list_start[row] as usize
            + usize::from(self.transit_len[row])
            + usize::from(self.nationality_len[row])
            + i;
        match self.arena[at] {
            u16::MAX => u8::try_from(i).map_or(0, |i| self.wide(row, Wide::NationalityCount(i))),
            v => u64::from(v),
        }
    }

    /// The row's point in degrees, when it is kept apart.
    pub(crate) fn exact_point(&self, row: usize) -> Option<(f64, f64)> {
        self.points.get(&row_number(row)).copied()
    }

    fn wide(&self, row: usize, what: Wide) -> u64 {
        self.big.get(&(row_number(row), what)).copied().unwrap_or(0)
    }
}

/// `value` as a column of `T`, or `T::MAX` with the value kept in `big`.
fn narrow<T, V>(big: &mut FxHashMap<(u32, Wide), u64>, row: u32, what: Wide, value: V) -> T
where
    T: TryFrom<V> + Bounded + PartialEq + Copy,
    V: Into<u64> + Copy,
{
    match T::try_from(value) {
        Ok(v) if v != T::MAX => v,
        _ => {
            big.insert((row, what), value.into());
            T::MAX
        }
    }
}

/// The largest value of a column type (its escape).
trait Bounded {
    const MAX: Self;
}

impl Bounded for u8 {
    const MAX: Self = u8::MAX;
}

impl Bounded for u16 {
    const MAX: Self = u16::MAX;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}

fn enum_byte(value: i32, what: &str) -> Result<u8, StoreError> {
    u8::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("a {what} value {value} outside 0..255")))
}

fn too_long() -> StoreError {
    StoreError::Corrupt("a report list longer than validation allows".to_owned())
}

fn high_half(id: u128) -> u64 {
    // The high 64 bits.
    #[allow(clippy::cast_possible_truncation)]
    let high = (id >> 64) as u64;
    high
}

fn row_number(row: usize) -> u32 {
    // Rows are checked to fit in u32 when added.
    u32::try_from(row).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::ReportFacts;

    fn summary(persons: u32) -> ReportSummary {
        ReportSummary {
            category: crate::pb::Category::SmugglingIncident as i32,
            incident_day: 2_460_000,
            facts: Some(ReportFacts {
                persons,
                ..ReportFacts::default()
            }),
            ..ReportSummary::default()
        }
    }

    /// Ids from a few high halves, so that many share one.
    fn id(high: u8, low: u8) -> u128 {
        (u128::from(high) << 64) | u128::from(low)
    }

    proptest::proptest! {
        /// Whatever the ids, built then changed batch by batch, every report's row holds
        /// its latest version and counts only while it is not retracted.
        #[test]
        fn rows_follow_new_amended_and_retracted_reports(
            initial in proptest::collection::btree_map((0u8..3, 0u8..6), (1u32..70_000, proptest::bool::ANY), 0..12),
            batches in proptest::collection::vec(
                proptest::collection::vec(((0u8..3, 0u8..6), 0u32..70_000), 0..6), 0..6),
        ) {
            let mut model: BTreeMap<u128, (u32, bool)> = BTreeMap::new();
            let heads: Vec<Result<(u128, ReportHead), StoreError>> = initial
                .iter()
                .map(|((h, l), (persons, live))| {
                    model.insert(id(*h, *l), (*persons, *live));
                    Ok((id(*h, *l), ReportHead {
                        state: "AUS".into(),
                        retracted: !live,
                        summary: Some(summary(*persons)),
                        ..ReportHead::default()
                    }))
                })
                .collect();
            let mut p = Projection::build((RecordKeys::new([7; 16]), 0), heads.into_iter()).unwrap();
            for (sequence, batch) in (1..).zip(batches) {
                let mut changes = Vec::new();
                for ((h, l), persons) in batch {
                    let report = id(h, l);
                    match model.get(&report).copied() {
                        // New, as the writer records a first version.
                        None => {
                            changes.push(Change::Set(report, Box::new(summary(persons)), "AUS".into()));
                            model.insert(report, (persons, true));
                        }
                        // Retracted: stays so.
                        Some((_, false)) => {}
                        // Retracted when the number is even, else amended.
                        Some((_, true)) if persons % 2 == 0 => {
                            changes.push(Change::Remove(report));
                            model.insert(report, (model[&report].0, false));
                        }
                        Some((_, true)) => {
                            changes.push(Change::Remove(report));
                            changes.push(Change::Set(report, Box::new(summary(persons)), "AUS".into()));
                            model.insert(report, (persons, true));
                        }
                    }
                }
                p.apply(&changes, sequence).unwrap();
                // A batch the rows hold already changes nothing.
                p.apply(&changes, sequence).unwrap();
            }
            proptest::prop_assert_eq!(p.rows(), model.len());
            for (report, (persons, live)) in &model {
                let row = p.row_of(*report).unwrap();
                proptest::prop_assert_eq!(p.persons(row), u64::from(*persons));
                proptest::prop_assert_eq!(p.flags[row] & flag::LIVE != 0, *live);
            }
        }
    }

    proptest::proptest! {
        /// A row is shared with a state exactly when `access::visible_to` lets that state
        /// read the report as a record, for every scope (unknown values too), listing and
        /// reader (one that no row names among them), as built and after amendments.
        #[test]
        fn shared_with_is_what_access_lets_a_state_read(
            reports in proptest::collection::vec(
                ((0usize..3, -1i32..5, proptest::collection::vec(0usize..4, 0..3)),
                 proptest::option::of((-1i32..5, proptest::collection::vec(0usize..4, 0..3)))),
                1..10),
        ) {
            const STATES: [&str; 5] = ["AUS", "IDN", "THA", "NZL", "FJI"];
            // Transit lists of other lengths too, so that amended lists move in the arena.
            let scoped = |scope: i32, listed: &[usize]| {
                let mut s = ReportSummary {
                    scope,
                    listed_states: listed.iter().map(|i| STATES[*i].to_owned()).collect(),
                    ..summary(5)
                };
                if let Some(facts) = s.facts.as_mut() {
                    facts.transit = listed.iter().rev().map(|i| STATES[*i].to_owned()).collect();
                }
                s
            };
            let (mut built, mut latest, mut changes) = (Vec::new(), Vec::new(), Vec::new());
            for (i, ((state, scope, listed), amended)) in reports.iter().enumerate() {
                let report = id(u8::try_from(i).unwrap(), 1);
                let mut head = ReportHead {
                    state: STATES[*state].to_owned(),
                    summary: Some(scoped(*scope, listed)),
                    ..ReportHead::default()
                };
                built.push(Ok((report, head.clone())));
                if let Some((scope, listed)) = amended {
                    changes.push(Change::Remove(report));
                    let set = Box::new(scoped(*scope, listed));
                    changes.push(Change::Set(report, set, head.state.clone()));
                    head.summary = Some(scoped(*scope, listed));
                }
                latest.push((report, head));
            }
            let mut p = Projection::build((RecordKeys::new([7; 16]), 0), built.into_iter()).unwrap();
            p.apply(&changes, 1).unwrap();
            for reader in STATES {
                let packed = crate::store::counters::pack_country(reader);
                let code = p.countries.code(packed).unwrap_or(0);
                for (report, head) in &latest {
                    let row = p.row_of(*report).unwrap();
                    let reads = p.state[row] == code || p.shared_with(row, code);
                    let visible = crate::access::visible_to(head, reader.parse().unwrap());
                    proptest::prop_assert_eq!(reads, visible, "{} reading {:?}", reader, head);
                    let transit: Vec<String> = p
                        .transit(row)
                        .iter()
                        .map(|c| crate::store::counters::unpack_country(p.countries.packed(*c)))
                        .collect();
                    let facts = head.summary.as_ref().and_then(|s| s.facts.as_ref());
                    proptest::prop_assert_eq!(Some(&transit), facts.map(|f| &f.transit));
                }
            }
        }
    }

    #[test]
    fn coordinates_round_trip_exactly_or_are_kept_apart() {
        for text in ["12.34", "-8.7654321", "180", "-90", "0.1", "95.01"] {
            let degrees: f64 = text.parse().unwrap();
            let fixed = fixed_point(degrees).expect(text);
            assert_eq!(
                (f64::from(fixed) / POINT_SCALE).to_bits(),
                degrees.to_bits()
            );
        }
        // Float noise (0.1 + 0.2) and more than seven decimals are kept apart.
        assert_eq!(fixed_point(0.1 + 0.2), None);
        assert_eq!(fixed_point(1.123_456_789), None);
    }

    #[test]
    fn a_bounding_box_maps_to_the_same_points_in_column_units() {
        let cases = [(-10.0, 0.0), (0.1 + 0.2, 12.345_678_9), (-180.0, 180.0)];
        for (min, max) in cases {
            let (lo, hi) = fixed_range(min, max);
            for k in [lo - 1, lo, hi, hi + 1] {
                #[allow(clippy::cast_precision_loss)]
                let v = k as f64 / POINT_SCALE;
                assert_eq!((lo..=hi).contains(&k), (min..=max).contains(&v), "{k}");
            }
        }
    }
}
