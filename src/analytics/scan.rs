//! The scan behind every aggregate the write-time counters cannot answer: over the
//! columnar projection (`store::Projection`), filters first, then grouping, with no
//! decoding on the way. Each matching row finds its cell through a dense table of cell
//! numbers indexed by its dimension codes (or, when the dimensions have too many
//! combinations for one, a hash map), and adds its numbers to that cell.
//!
//! What a report adds along each dimension is what `store::counters::Cuboid::values`
//! says for the counters (persons split by nationality, "none" for no transit, …), so
//! the two paths agree; `tests/analytics.rs` recounts both from the raw reports.

use rustc_hash::FxHashMap;

use super::{
    AggregateQuery, Dimension, Metric,
    grid::{ALL, Acc, Cells, FeeCounts, Grid, Key},
    source::{View, base_value, single_valued},
};
use crate::{
    pb,
    store::{
        POINT_ELSEWHERE, Projection,
        counters::{self, Cuboid, KEY_SUM, STORED, Sums},
        fixed_range, flag,
    },
};

/// The most entries of a dense table of cell numbers (16 MiB of `u32`).
const DENSE_LIMIT: u64 = 1 << 22;

/// No cell yet.
const EMPTY: u32 = u32::MAX;

/// Fewer rows than this per thread are not worth a thread of their own.
const ROWS_PER_THREAD: usize = 1 << 16;

/// The table of `query` from a scan of `p`, split over the machine's cores.
pub(super) fn from_projection(p: &Projection, query: &AggregateQuery, view: View) -> Grid {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(p.rows() / ROWS_PER_THREAD)
        .max(1);
    scan_in(p, query, view, threads)
}

/// The table of `query` from a scan of `p` by `threads` threads.
fn scan_in(p: &Projection, query: &AggregateQuery, view: View, threads: usize) -> Grid {
    let plan = Plan::new(p, query, view);
    let rows = p.rows();
    let mut parts: Vec<Part> = if threads == 1 {
        vec![plan.scan(p, 0..rows)]
    } else {
        let chunk = rows.div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let plan = &plan;
                    scope.spawn(move || plan.scan(p, i * chunk..((i + 1) * chunk).min(rows)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut whole = parts.remove(0);
    for part in parts {
        whole.merge(part, &plan.axes);
    }
    let Part {
        table,
        by_state,
        fee_rows,
    } = whole;
    let mut cells = table.into_cells(p, &plan.axes);
    add_fees(p, fee_rows, &mut cells);
    let mut grid = Grid::new(query.dimensions.len());
    grid.by_state = by_state
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(code, n)| {
            let code = u16::try_from(code).ok()?;
            Some((u32::try_from(p.countries.packed(code)).ok()?, *n))
        })
        .collect();
    let cells: Cells = cells.into_iter().collect();
    grid.roll_up(&cells, &single_valued(query));
    grid
}

/// Gives each cell its fee observations, counted: the observations are put in cell order
/// (a counting sort: cells are numbered densely), then each cell's are sorted by
/// currency, amount and whether they are the asker's own, packed in one number.
fn add_fees(p: &Projection, fee_rows: Vec<(u32, u16, u64, bool)>, cells: &mut [(Key, Acc)]) {
    if fee_rows.is_empty() {
        return;
    }
    let mut starts = vec![0usize; cells.len() + 1];
    for (cell, ..) in &fee_rows {
        if let Some(n) = usize::try_from(*cell)
            .ok()
            .and_then(|c| starts.get_mut(c + 1))
        {
            *n += 1;
        }
    }
    for c in 1..starts.len() {
        starts[c] += starts[c - 1];
    }
    let mut next = starts.clone();
    let mut keys = vec![0u128; starts[cells.len()]];
    for (cell, currency, amount, own) in fee_rows {
        let Some(at) = usize::try_from(cell).ok().filter(|c| *c < cells.len()) else {
            continue;
        };
        // Currencies are three letters: 24 bits, above the 64 of the amount and the flag.
        let currency = u128::from(p.countries.packed(currency));
        keys[next[at]] = (currency << 65) | (u128::from(amount) << 1) | u128::from(own);
        next[at] += 1;
    }
    let unpack = |key: &u128| {
        #[allow(clippy::cast_possible_truncation)] // 24 bits and 64 bits, as packed
        let fee = ((key >> 65) as u32, (key >> 1) as u64);
        fee
    };
    for (c, (_, acc)) in cells.iter_mut().enumerate() {
        let run = &mut keys[starts[c]..starts[c + 1]];
        if run.is_empty() {
            continue;
        }
        run.sort_unstable();
        acc.fees = FeeCounts::of_sorted(run.iter().map(unpack));
        acc.own_fees = FeeCounts::of_sorted(run.iter().filter(|k| *k & 1 == 1).map(unpack));
    }
}

/// What a scan does with each row.
struct Plan {
    filter: Filter,
    axes: Axes,
    /// The magnitudes asked for (`Additive` indexes, not reports).
    magnitudes: Vec<usize>,
    fees: bool,
    /// The asking analyst's state (dictionary code).
    own: Option<u16>,
    view: View,
}

/// What one thread's share of the rows adds up to.
struct Part {
    table: Table,
    /// Reports counted per state (dictionary code).
    by_state: Vec<u64>,
    /// Fee observations: cell, currency (dictionary code), amount, the asker's own.
    fee_rows: Vec<(u32, u16, u64, bool)>,
}

impl Plan {
    fn new(p: &Projection, query: &AggregateQuery, view: View) -> Self {
        let filter = Filter::new(p, query);
        let axes = Axes::new(p, &query.dimensions, filter.months);
        let magnitudes = query
            .metrics
            .iter()
            .filter_map(|m| match m {
                Metric::Sum(a) if *a as usize > 0 => Some(*a as usize),
                _ => None,
            })
            .collect();
        Self {
            filter,
            axes,
            magnitudes,
            fees: query.metrics.contains(&Metric::FeePerPerson),
            own: view
                .own
                .and_then(|packed| p.countries.code(u64::from(packed))),
            view,
        }
    }

    /// Adds up the rows in `rows`.
    fn scan(&self, p: &Projection, rows: std::ops::Range<usize>) -> Part {
        let mut part = Part {
            table: Table::new(&self.axes),
            by_state: vec![0u64; p.countries.len()],
            fee_rows: Vec::new(),
        };
        for row in rows {
            if !self.filter.keeps(p, row) {
                continue;
            }
            let state = p.state[row];
            part.by_state[usize::from(state)] += 1;
            if self.axes.multi.is_empty() {
                let cell = part.table.cell(&self.axes, self.axes.codes(p, row));
                self.add_row(p, row, &mut part, cell);
            } else {
                self.add_combinations(p, row, &mut part);
            }
        }
        part
    }

    /// Adds the row's numbers straight into `cell` (no multi-valued dimension).
    #[inline]
    fn add_row(&self, p: &Projection, row: usize, part: &mut Part, cell: u32) {
        let Some(total) = usize::try_from(cell)
            .ok()
            .and_then(|c| part.table.sums.get_mut(c))
        else {
            return;
        };
        let key = p.record_key[row];
        for &m in &self.magnitudes {
            let value = p.magnitude(row, m);
            total[m] += self.view.cap.map_or(value, |cap| value.min(cap));
            counters::add_noise(total, value, key, m);
        }
        let own = self.own == Some(p.state[row]);
        part.table.note(cell, p.state[row], own, u64::from(key));
        self.add_fee(p, row, part, cell, own);
    }

    /// Adds the row to every cell of its values along the multi-valued dimensions.
    fn add_combinations(&self, p: &Projection, row: usize, part: &mut Part) {
        let key = p.record_key[row];
        let mut sums: Sums = [0; STORED];
        sums[0] = 1;
        sums[KEY_SUM] = u64::from(key);
        for &m in &self.magnitudes {
            let value = p.magnitude(row, m);
            sums[m] = self.view.cap.map_or(value, |cap| value.min(cap));
            counters::add_noise(&mut sums, value, key, m);
        }
        let state = p.state[row];
        let own = self.own == Some(state);
        let mut add = |codes: [u64; 3], sums: &Sums| {
            let cell = part.table.cell(&self.axes, codes);
            part.table.add(cell, state, sums, own);
            self.add_fee(p, row, part, cell, own);
        };
        self.axes
            .each_combination(p, row, (&sums, self.view.cap), &mut add);
    }

    #[inline]
    fn add_fee(&self, p: &Projection, row: usize, part: &mut Part, cell: u32, own: bool) {
        if self.fees && p.flags[row] & flag::FEE != 0 {
            let amount = p.fee_amount(row);
            let amount = if self.view.moved_fees {
                counters::moved_fee(amount, p.record_key[row])
            } else {
                amount
            };
            part.fee_rows.push((cell, p.fee_currency[row], amount, own));
        }
    }
}

impl Part {
    /// Adds another thread's part to this one.
    fn merge(&mut self, other: Part, axes: &Axes) {
        let mut renumbered = Vec::with_capacity(other.table.codes.len());
        for (i, codes) in other.table.codes.iter().enumerate() {
            let cell = self.table.cell(axes, *codes);
            renumbered.push(cell);
            let Ok(c) = usize::try_from(cell) else {
                continue;
            };
            let Some(total) = self.table.sums.get_mut(c) else {
                continue;
            };
            for (t, s) in total.iter_mut().zip(&other.table.sums[i]) {
                *t += s;
            }
            let theirs = other.table.states[i];
            let mine = &mut self.table.states[c];
            if *mine == NO_STATE {
                *mine = theirs;
            } else if theirs != NO_STATE && *mine != theirs {
                *mine = MIXED;
            }
            let (reports, keys) = other.table.own[i];
            self.table.own[c].0 += reports;
            self.table.own[c].1 = self.table.own[c].1.wrapping_add(keys);
        }
        for (mine, theirs) in self.by_state.iter_mut().zip(&other.by_state) {
            *mine += theirs;
        }
        self.fee_rows.extend(
            other
                .fee_rows
                .into_iter()
                .map(|(cell, currency, amount, own)| {
                    let cell = renumbered.get(cell as usize).copied().unwrap_or(EMPTY);
                    (cell, currency, amount, own)
                }),
        );
    }
}

/// The rows a query keeps.
struct Filter {
    /// Smuggling incidents, maritime movements.
    categories: [bool; 2],
    /// Months of the incident date, inclusive.
    months: (u16, u16),
    /// Reporting states, by dictionary code; `None` for all.
    states: Option<Vec<bool>>,
    route: Option<Vec<bool>>,
    nationalities: Option<Vec<bool>>,
    modus_operandi: i32,
    maritime_event: i32,
    vessel_type: i32,
    bbox: Option<Bbox>,
    /// Whether any filter besides category and months is set.
    narrows: bool,
}

/// A bounding box in the projection's units, and in degrees for points kept apart.
struct Bbox {
    latitude: (i64, i64),
    longitude: (i64, i64),
    degrees: pb::BoundingBox,
}

impl Filter {
    fn new(p: &Projection, query: &AggregateQuery) -> Self {
        let mut categories = [false; 2];
        for (category, _) in &query.filters {
            categories[usize::from(category.to_pb() == pb::Category::MaritimeMovement)] = true;
        }
        // Every category's filter has the same content (see `AggregateQuery`).
        let Some((_, f)) = query.filters.first() else {
            return Self::nothing();
        };
        let (from, to) = f.days();
        // Whole months only (checked with the query), so months select exactly.
        let month = |day: i32| u16::try_from(counters::month_of_day(day)).unwrap_or(u16::MAX);
        let months = (
            if from == i32::MIN { 0 } else { month(from) },
            if to == i32::MAX { u16::MAX } else { month(to) },
        );
        let set = |wanted: &mut dyn Iterator<Item = &str>| {
            let mut set = vec![false; p.countries.len()];
            for w in wanted {
                if let Some(code) = p.countries.code(counters::pack_country(w)) {
                    set[usize::from(code)] = true;
                }
            }
            set
        };
        let states = (!f.states().is_empty())
            .then(|| set(&mut f.states().iter().map(crate::country::CountryCode::as_str)));
        let route = (!f.route_countries.is_empty())
            .then(|| set(&mut f.route_countries.iter().map(String::as_str)));
        let nationalities = (!f.nationalities.is_empty())
            .then(|| set(&mut f.nationalities.iter().map(String::as_str)));
        let bbox = f.bbox.map(|b| Bbox {
            latitude: fixed_range(b.min_latitude, b.max_latitude),
            longitude: fixed_range(b.min_longitude, b.max_longitude),
            degrees: b,
        });
        Self {
            narrows: states.is_some() || f.narrows_by_content(),
            categories,
            months,
            states,
            route,
            nationalities,
            modus_operandi: f.modus_operandi,
            maritime_event: f.maritime_event,
            vessel_type: f.vessel_type,
            bbox,
        }
    }

    fn nothing() -> Self {
        Self {
            categories: [false; 2],
            months: (1, 0),
            states: None,
            route: None,
            nationalities: None,
            modus_operandi: 0,
            maritime_event: 0,
            vessel_type: 0,
            bbox: None,
            narrows: false,
        }
    }

    /// Whether the report of `row` counts and passes every filter (as
    /// `access::QueryFilter::matches` decides for a report head).
    #[inline]
    fn keeps(&self, p: &Projection, row: usize) -> bool {
        let flags = p.flags[row];
        if flags & flag::LIVE == 0 || !self.categories[usize::from(flags & flag::MARITIME != 0)] {
            return false;
        }
        let month = p.month[row];
        if month < self.months.0 || month > self.months.1 {
            return false;
        }
        if !self.narrows {
            return true;
        }
        let has = |set: &Option<Vec<bool>>, code: u16| {
            set.as_ref()
                .is_some_and(|set| set.get(usize::from(code)).copied().unwrap_or(false))
        };
        if self.states.is_some() && !has(&self.states, p.state[row]) {
            return false;
        }
        if self.route.is_some()
            && !(has(&self.route, p.origin[row])
                || has(&self.route, p.destination[row])
                || p.transit(row).iter().any(|c| has(&self.route, *c)))
        {
            return false;
        }
        if self.nationalities.is_some()
            && !p
                .nationalities(row)
                .iter()
                .any(|c| has(&self.nationalities, *c))
        {
            return false;
        }
        let differs = |wanted: i32, column: &[u8]| wanted != 0 && wanted != i32::from(column[row]);
        if differs(self.modus_operandi, &p.modus_operandi)
            || differs(self.maritime_event, &p.maritime_event)
            || differs(self.vessel_type, &p.vessel_type)
        {
            return false;
        }
        match &self.bbox {
            None => true,
            Some(_) if flags & flag::POINT == 0 => false,
            Some(b) => match p.exact_point(row) {
                Some((lat, lon)) if p.latitude[row] == POINT_ELSEWHERE => {
                    (b.degrees.min_latitude..=b.degrees.max_latitude).contains(&lat)
                        && (b.degrees.min_longitude..=b.degrees.max_longitude).contains(&lon)
                }
                _ => {
                    let (lat, lon) = (i64::from(p.latitude[row]), i64::from(p.longitude[row]));
                    (b.latitude.0..=b.latitude.1).contains(&lat)
                        && (b.longitude.0..=b.longitude.1).contains(&lon)
                }
            },
        }
    }
}

/// What one dimension reads from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Months, quarters or years since the first one the table covers.
    Period(Dimension, u64),
    State,
    Category,
    Origin,
    Destination,
    LocationCountry,
    Route,
    ModusOperandi,
    MaritimeEvent,
    VesselType,
    SeaArea,
    Transit,
    Nationality,
}

/// The dimensions of a table as the scan numbers their values: each value a code below
/// the axis's size (a multi-valued axis's last code is "all"), a cell the codes' sum
/// weighted by strides.
struct Axes {
    reads: Vec<Reads>,
    sizes: Vec<u64>,
    /// Positions of the multi-valued axes.
    multi: Vec<usize>,
    /// Distinct countries (dictionary codes) the projection knows.
    countries: u64,
}

impl Axes {
    fn new(p: &Projection, dimensions: &[Dimension], months: (u16, u16)) -> Self {
        let countries = p.countries.len() as u64;
        // The table's periods run from the first month it can hold.
        let first = u64::from(months.0.max(p.months.0));
        let last = u64::from(months.1.min(p.months.1)).max(first);
        let mut reads = Vec::new();
        let mut sizes = Vec::new();
        for d in dimensions {
            let (r, size): (Reads, u64) = match d {
                Dimension::Month => (Reads::Period(*d, first), last - first + 1),
                Dimension::Quarter => (Reads::Period(*d, first / 3), last / 3 - first / 3 + 1),
                Dimension::Year => (Reads::Period(*d, first / 12), last / 12 - first / 12 + 1),
                Dimension::ReportingState => (Reads::State, countries),
                Dimension::Category => (Reads::Category, 2),
                Dimension::Counted(c) => match c {
                    Cuboid::Base => (Reads::Category, 2),
                    Cuboid::Origin => (Reads::Origin, countries),
                    Cuboid::Destination => (Reads::Destination, countries),
                    Cuboid::LocationCountry => (Reads::LocationCountry, countries),
                    Cuboid::Route => (Reads::Route, countries.saturating_mul(countries)),
                    Cuboid::ModusOperandi => (Reads::ModusOperandi, 256),
                    Cuboid::MaritimeEvent => (Reads::MaritimeEvent, 256),
                    Cuboid::VesselType => (Reads::VesselType, 256),
                    Cuboid::SeaArea => (Reads::SeaArea, 256),
                    Cuboid::Transit => (Reads::Transit, countries + 1),
                    Cuboid::Nationality => (Reads::Nationality, countries + 1),
                },
            };
            reads.push(r);
            sizes.push(size);
        }
        let multi = (0..dimensions.len())
            .filter(|i| dimensions[*i].multi_valued())
            .collect();
        Self {
            reads,
            sizes,
            multi,
            countries,
        }
    }

    /// The row's code along each single-valued axis (multi-valued ones are filled in by
    /// [`Axes::each_combination`]).
    #[inline]
    fn codes(&self, p: &Projection, row: usize) -> [u64; 3] {
        let mut codes = [0; 3];
        for (code, r) in codes.iter_mut().zip(&self.reads) {
            *code = match *r {
                Reads::Period(Dimension::Quarter, first) => u64::from(p.month[row]) / 3 - first,
                Reads::Period(Dimension::Year, first) => u64::from(p.month[row]) / 12 - first,
                Reads::Period(_, first) => u64::from(p.month[row]) - first,
                Reads::State => u64::from(p.state[row]),
                Reads::Category => u64::from(p.flags[row] & flag::MARITIME != 0),
                Reads::Origin => u64::from(p.origin[row]),
                Reads::Destination => u64::from(p.destination[row]),
                Reads::LocationCountry => u64::from(p.location[row]),
                Reads::Route => {
                    u64::from(p.origin[row]) * self.countries + u64::from(p.destination[row])
                }
                Reads::ModusOperandi => u64::from(p.modus_operandi[row]),
                Reads::MaritimeEvent => u64::from(p.maritime_event[row]),
                Reads::VesselType => u64::from(p.vessel_type[row]),
                Reads::SeaArea => u64::from(p.sea_area[row]),
                Reads::Transit | Reads::Nationality => 0,
            };
        }
        codes
    }

    /// Calls `add` with every combination of the row's values along the multi-valued
    /// axes, each value's "all" included, and what the row adds there: all of `sums`,
    /// except that a nationality adds its own persons only.
    fn each_combination(
        &self,
        p: &Projection,
        row: usize,
        (sums, cap): (&Sums, Option<u64>),
        add: &mut impl FnMut([u64; 3], &Sums),
    ) {
        let base = self.codes(p, row);
        // Per multi-valued axis: (code, what it adds instead of `sums`, if anything).
        let mut choices: Vec<Vec<(u64, Option<Sums>)>> = Vec::with_capacity(self.multi.len());
        for &at in &self.multi {
            let all = self.countries;
            let mut values = Vec::new();
            if self.reads[at] == Reads::Transit {
                let transit = p.transit(row);
                if transit.is_empty() {
                    values.push((0, None));
                }
                values.extend(transit.iter().map(|c| (u64::from(*c), None)));
            } else {
                values = nationality_choices(p, row, cap);
            }
            values.push((all, None));
            choices.push(values);
        }
        let mut pick = vec![0usize; choices.len()];
        loop {
            let mut codes = base;
            let mut adds = sums;
            for (i, &at) in self.multi.iter().enumerate() {
                let (code, instead) = &choices[i][pick[i]];
                codes[at] = *code;
                if let Some(instead) = instead {
                    adds = instead;
                }
            }
            add(codes, adds);
            // Next combination, odometer style.
            let mut i = 0;
            loop {
                if i == pick.len() {
                    return;
                }
                pick[i] += 1;
                if pick[i] < choices[i].len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
        }
    }

    /// The value (as the counters key it) of code `code` along axis `at`.
    fn value(&self, p: &Projection, at: usize, code: u64) -> u64 {
        let country = |code: u64| u16::try_from(code).map_or(0, |c| p.countries.packed(c));
        match self.reads[at] {
            Reads::Period(d, first) => {
                let period = u32::try_from(first + code).unwrap_or(u32::MAX);
                let month = match d {
                    Dimension::Quarter => period * 3,
                    Dimension::Year => period * 12,
                    _ => period,
                };
                base_value(d, month, 0, 0)
            }
            Reads::Category => u64::from(if code == 1 {
                pb::Category::MaritimeMovement as u8
            } else {
                pb::Category::SmugglingIncident as u8
            }),
            Reads::Transit | Reads::Nationality if code == self.countries => ALL,
            Reads::State
            | Reads::Origin
            | Reads::Destination
            | Reads::LocationCountry
            | Reads::Transit
            | Reads::Nationality => country(code),
            Reads::Route => {
                (country(code / self.countries.max(1)) << 24)
                    | country(code % self.countries.max(1))
            }
            Reads::ModusOperandi | Reads::MaritimeEvent | Reads::VesselType | Reads::SeaArea => {
                code
            }
        }
    }
}

/// The row's nationalities (and "none" for persons without one), each with what it
/// adds: one report, its own persons.
fn nationality_choices(p: &Projection, row: usize, cap: Option<u64>) -> Vec<(u64, Option<Sums>)> {
    let key = p.record_key[row];
    let persons_only = |persons: u64| {
        let mut s: Sums = [0; STORED];
        s[0] = 1;
        s[KEY_SUM] = u64::from(key);
        s[1] = cap.map_or(persons, |cap| persons.min(cap));
        counters::add_noise(&mut s, persons, key, 1);
        s
    };
    let mut values = Vec::new();
    let mut counted = 0u64;
    for (i, code) in p.nationalities(row).iter().enumerate() {
        let persons = p.nationality_count(row, i);
        counted += persons;
        values.push((u64::from(*code), Some(persons_only(persons))));
    }
    let rest = p.persons(row).saturating_sub(counted);
    if rest > 0 || values.is_empty() {
        values.push((0, Some(persons_only(rest))));
    }
    values
}

/// Cells as the scan adds them up, numbered in order of appearance.
struct Table {
    /// Cell numbers by combined code, when dense enough.
    dense: Option<Vec<u32>>,
    sparse: FxHashMap<u64, u32>,
    strides: [u64; 3],
    codes: Vec<[u64; 3]>,
    sums: Vec<Sums>,
    /// The one state of each cell's reports (dictionary code), [`MIXED`] for several.
    states: Vec<u32>,
    /// The asking state's own reports and their record keys, per cell.
    own: Vec<(u64, u64)>,
}

/// A cell holding reports of several states.
const MIXED: u32 = u32::MAX;

/// A cell holding no report yet (state codes are 16 bits).
const NO_STATE: u32 = u32::MAX - 1;

impl Table {
    fn new(axes: &Axes) -> Self {
        let mut strides = [0; 3];
        let mut combinations = 1u64;
        for (stride, size) in strides.iter_mut().zip(&axes.sizes) {
            *stride = combinations;
            combinations = combinations.saturating_mul(*size);
        }
        let dense = (combinations <= DENSE_LIMIT)
            .then(|| vec![EMPTY; usize::try_from(combinations).unwrap_or(0)]);
        Self {
            dense,
            sparse: FxHashMap::default(),
            strides,
            codes: Vec::new(),
            sums: Vec::new(),
            states: Vec::new(),
            own: Vec::new(),
        }
    }

    /// The number of the cell at `codes`, made if new.
    #[inline]
    fn cell(&mut self, axes: &Axes, codes: [u64; 3]) -> u32 {
        let index: u64 = codes
            .iter()
            .zip(&self.strides)
            .take(axes.sizes.len())
            .map(|(c, s)| c * s)
            .sum();
        let next = u32::try_from(self.codes.len()).unwrap_or(EMPTY);
        let slot = match &mut self.dense {
            Some(dense) => match dense.get_mut(usize::try_from(index).unwrap_or(usize::MAX)) {
                Some(slot) => slot,
                None => return EMPTY,
            },
            None => self.sparse.entry(index).or_insert(EMPTY),
        };
        if *slot == EMPTY {
            *slot = next;
            self.codes.push(codes);
            self.sums.push([0; STORED]);
            self.states.push(NO_STATE);
            self.own.push((0, 0));
        }
        *slot
    }

    /// Adds `sums`, one report's or a nationality's share of it, to `cell`.
    #[inline]
    fn add(&mut self, cell: u32, state: u16, sums: &Sums, own: bool) {
        let Some(total) = usize::try_from(cell)
            .ok()
            .and_then(|c| self.sums.get_mut(c))
        else {
            return;
        };
        // Reports and the key sum are noted below.
        for (t, s) in total.iter_mut().zip(sums).skip(1) {
            *t += s;
        }
        total[KEY_SUM] -= sums[KEY_SUM];
        self.note(cell, state, own, sums[KEY_SUM]);
    }

    /// Notes one report of `state` in `cell`, with its record key: its count, the
    /// cell's key and whose it is.
    #[inline]
    fn note(&mut self, cell: u32, state: u16, own: bool, key: u64) {
        let Ok(cell) = usize::try_from(cell) else {
            return;
        };
        let (Some(total), Some(one)) = (self.sums.get_mut(cell), self.states.get_mut(cell)) else {
            return;
        };
        total[0] += 1;
        total[KEY_SUM] += key;
        let state = u32::from(state);
        if *one == NO_STATE {
            *one = state;
        } else if *one != state {
            *one = MIXED;
        }
        if own {
            self.own[cell].0 += 1;
            self.own[cell].1 = self.own[cell].1.wrapping_add(key);
        }
    }

    /// The cells, keyed as the counters key them, in cell-number order.
    fn into_cells(self, p: &Projection, axes: &Axes) -> Vec<(Key, Acc)> {
        let mut cells = Vec::with_capacity(self.codes.len());
        for (i, codes) in self.codes.iter().enumerate() {
            let mut key = [0; 3];
            for (at, k) in key.iter_mut().enumerate().take(axes.reads.len()) {
                *k = axes.value(p, at, codes[at]);
            }
            let state = match self.states[i] {
                MIXED | NO_STATE => None,
                code => Some(
                    u16::try_from(code)
                        .ok()
                        .and_then(|c| u32::try_from(p.countries.packed(c)).ok())
                        .unwrap_or(0),
                ),
            };
            cells.push((key, Acc::scanned(self.sums[i], state, self.own[i])));
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        report::{Category, parse_date, summarize},
        sample,
    };

    /// Sample reports from three states, every 13th retracted.
    fn projection() -> Projection {
        let mut rng = sample::Rng::new(11);
        let reports: Vec<_> = (0..3_000u32)
            .map(|i| {
                let state = ["AUS", "IDN", "THA"][i as usize % 3];
                let r = sample::report(&mut rng, state);
                let category = match r.details {
                    Some(pb::report::Details::Maritime(_)) => Category::MaritimeMovement,
                    _ => Category::SmugglingIncident,
                };
                let day = parse_date(&r.incident_date).map_or(0, time::Date::to_julian_day);
                let id = uuid::Uuid::parse_str(&r.report_id).map_or(0, |u| u.as_u128());
                (
                    id,
                    summarize(&r, category, day),
                    state.to_owned(),
                    i % 13 == 0,
                )
            })
            .collect();
        Projection::of(&reports)
    }

    #[test]
    fn threads_add_up_to_what_one_thread_finds() {
        use pb::Dimension as D;
        let p = projection();
        let shapes = [
            vec![D::Origin, D::VesselType],
            vec![D::Year, D::Transit, D::Nationality],
            vec![D::Route, D::ReportingState],
        ];
        for dims in shapes {
            let nationality = dims.contains(&D::Nationality);
            let metrics = if nationality {
                vec![pb::Metric::Reports, pb::Metric::Persons]
            } else {
                vec![
                    pb::Metric::Persons,
                    pb::Metric::Deaths,
                    pb::Metric::FeePerPerson,
                ]
            };
            let query = AggregateQuery::from_request(&pb::AggregateRequest {
                group_by: dims.iter().map(|d| *d as i32).collect(),
                metrics: metrics.iter().map(|m| *m as i32).collect(),
                filter: None,
            })
            .unwrap_or_else(|e| panic!("{e:?}"));
            let view = View {
                own: u32::try_from(counters::pack_country("IDN")).ok(),
                moved_fees: true,
                cap: None,
            };
            let one = scan_in(&p, &query, view, 1);
            assert!(one.entries.len() > 10, "{dims:?}");
            for threads in [2, 3, 7] {
                let many = scan_in(&p, &query, view, threads);
                assert_eq!(many.entries.len(), one.entries.len(), "{dims:?}");
                for (key, acc) in &one.entries {
                    let other = &many.entries[key];
                    assert_eq!(
                        other.sums, acc.sums,
                        "{dims:?} {key:?} over {threads} threads"
                    );
                    assert_eq!(
                        other.single_state(),
                        acc.single_state(),
                        "{dims:?} {key:?} over {threads} threads"
                    );
                    assert_eq!(other, acc, "{dims:?} {key:?} over {threads} threads");
                }
                assert_eq!(many.by_state, one.by_state);
            }
        }
    }
}
