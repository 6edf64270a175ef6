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
    fees::FeeBag,
    grid::{ALL, Acc, Cells, Grid, Key},
    parallel,
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

/// Rows a scan takes at a time: their numbers, indexes and values stay in the L1 cache.
const CHUNK: usize = 1024;

/// A scan's working space for one chunk of rows.
#[derive(Default)]
struct Chunk {
    /// The rows kept.
    rows: Vec<u32>,
    /// Each kept row's index along the single-valued axes.
    index: Vec<u64>,
    /// Each kept row's cell.
    cells: Vec<u32>,
    /// Each kept row's record key.
    keys: Vec<u32>,
    /// Each kept row's noise draw for one magnitude (`counters::noise_draw`).
    draws: Vec<u32>,
    /// Each kept row's value in one column.
    values: Vec<u64>,
    /// Whether the asking analyst's state knows each kept row's report (`Plan::known`).
    known: Vec<bool>,
}

/// The table of `query` from a scan of `p`, split over the machine's cores.
pub(super) fn from_projection(p: &Projection, query: &AggregateQuery, view: View) -> Grid {
    scan_in(
        p,
        query,
        view,
        parallel::threads_for(p.rows(), ROWS_PER_THREAD),
    )
}

/// The table of `query` from a scan of `p` by `threads` threads.
fn scan_in(p: &Projection, query: &AggregateQuery, view: View, threads: usize) -> Grid {
    let plan = Plan::new(p, query, view);
    let rows = p.rows();
    let share = rows.div_ceil(threads.max(1)).max(1);
    let ranges: Vec<_> = (0..rows)
        .step_by(share)
        .map(|start| start..rows.min(start + share))
        .collect();
    let mut parts = parallel::each(ranges, threads, |rows| plan.scan(p, rows));
    if parts.is_empty() {
        parts.push(plan.scan(p, 0..0));
    }
    let mut whole = parts.remove(0);
    for part in parts {
        whole.merge(part);
    }
    let Part {
        table,
        by_state,
        fees,
    } = whole;
    let mut cells = table.into_cells(p, &plan.axes);
    for ((_, acc), bag) in cells.iter_mut().zip(fees.bags) {
        acc.fees = bag;
    }
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
    grid.roll_up(cells, &single_valued(query));
    grid
}

/// What a scan does with each row.
struct Plan {
    filter: Filter,
    axes: Axes,
    /// The magnitudes asked for (`Additive` indexes, not reports).
    magnitudes: Vec<usize>,
    fees: bool,
    /// The asking analyst's state (dictionary code; 0, which no row's state has, when
    /// none of its reports or listings is in the projection).
    reader: Option<u16>,
    view: View,
}

/// What one thread's share of the rows adds up to.
struct Part {
    table: Table,
    /// Reports counted per state (dictionary code).
    by_state: Vec<u64>,
    fees: PartFees,
}

/// One thread's fee observations.
#[derive(Default)]
struct PartFees {
    /// Per cell.
    bags: Vec<FeeBag>,
}

impl PartFees {
    /// The bag of `cell` (made, with those before it, when new); none for [`EMPTY`].
    fn bag(&mut self, cell: u32) -> Option<&mut FeeBag> {
        let cell = usize::try_from(cell).ok().filter(|_| cell != EMPTY)?;
        if self.bags.len() <= cell {
            self.bags.resize_with(cell + 1, FeeBag::default);
        }
        self.bags.get_mut(cell)
    }
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
            reader: view
                .own
                .map(|packed| p.countries.code(u64::from(packed)).unwrap_or(0)),
            view,
        }
    }

    /// Whether the asking analyst's state knows the report of `row` as a record: its own,
    /// or shared with it. Those reports are counted apart ("own" in `grid::Acc`): shown
    /// as they are, outside the cell key and the minimum — reports of others it reads
    /// were known padding otherwise (`docs/disclosure.md`).
    #[inline]
    fn known(&self, p: &Projection, row: usize) -> bool {
        self.reader
            .is_some_and(|reader| p.state[row] == reader || p.shared_with(row, reader))
    }

    /// Adds up the rows in `rows`, [`CHUNK`] at a time: the rows a chunk keeps are
    /// selected first, then each step (cell numbers, counts, each magnitude, fees) runs
    /// over all of them before the next, one column at a time.
    fn scan(&self, p: &Projection, rows: std::ops::Range<usize>) -> Part {
        let mut part = Part {
            table: Table::new(&self.axes),
            by_state: vec![0u64; p.countries.len()],
            fees: PartFees::default(),
        };
        let mut chunk = Chunk::default();
        let mut start = rows.start;
        while start < rows.end {
            let end = rows.end.min(start + CHUNK);
            if self.view.unknown_only {
                // Reports shared with every contributor are known: left out in the first
                // pass, the others one by one.
                let shared = flag::SHARED_WITH_ALL;
                self.filter.select(p, (start..end, shared), &mut chunk.rows);
                keep(&mut chunk.rows, |row| !self.known(p, row));
            } else {
                self.filter.select(p, (start..end, 0), &mut chunk.rows);
            }
            start = end;
            for &row in &chunk.rows {
                part.by_state[usize::from(p.state[row as usize])] += 1;
            }
            if self.axes.multi.is_empty() {
                self.add_chunk(p, &mut chunk, &mut part);
            } else {
                self.axes.index(p, &chunk.rows, &mut chunk.index);
                for (&row, &base) in chunk.rows.iter().zip(&chunk.index) {
                    self.add_combinations(p, (row as usize, base), &mut part);
                }
            }
        }
        part
    }

    /// Adds a chunk's kept rows straight into their cells (no multi-valued dimension).
    fn add_chunk(&self, p: &Projection, chunk: &mut Chunk, part: &mut Part) {
        let Chunk {
            rows,
            index,
            cells,
            keys,
            draws,
            values,
            known,
        } = chunk;
        self.axes.index(p, rows, index);
        cells.clear();
        cells.extend(index.iter().map(|i| part.table.cell(*i)));
        keys.clear();
        keys.extend(rows.iter().map(|row| p.record_key[*row as usize]));
        known.clear();
        known.extend(rows.iter().map(|row| self.known(p, *row as usize)));
        let table = &mut part.table;
        let each = rows
            .iter()
            .zip(cells.iter())
            .zip(keys.iter())
            .zip(known.iter());
        for (((&row, &cell), &key), &known) in each {
            let row = row as usize;
            table.note(cell, p.state[row], known, u64::from(key));
            if self.fees && p.flags[row] & flag::FEE != 0 {
                self.add_fee(p, (row, key), &mut part.fees, cell, known);
            }
        }
        for &m in &self.magnitudes {
            p.magnitudes(m, rows, values);
            draws.clear();
            draws.extend(
                keys.iter()
                    .zip(values.iter())
                    .map(|(key, value)| counters::noise_draw(*key, m, *value)),
            );
            for ((&cell, &value), &draw) in cells.iter().zip(values.iter()).zip(draws.iter()) {
                let Some(total) = table.sums.get_mut(cell as usize) else {
                    continue;
                };
                total[m] += self.view.cap.map_or(value, |cap| value.min(cap));
                counters::add_drawn_noise(total, value, draw, m);
            }
            // What the reports the asking state knows add, kept apart too.
            if self.reader.is_some() {
                let each = known
                    .iter()
                    .zip(cells.iter())
                    .zip(values.iter())
                    .zip(draws.iter());
                for (((&known, &cell), &value), &draw) in each {
                    if !known {
                        continue;
                    }
                    let Some(mine) = table.own.get_mut(cell as usize) else {
                        continue;
                    };
                    mine[m] += self.view.cap.map_or(value, |cap| value.min(cap));
                    counters::add_drawn_noise(mine, value, draw, m);
                }
            }
        }
    }

    /// Adds the row to every cell of its values along the multi-valued dimensions;
    /// `base` is its index along the others.
    fn add_combinations(&self, p: &Projection, (row, base): (usize, u64), part: &mut Part) {
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
        let own = self.known(p, row);
        let mut add = |index: u64, sums: &Sums| {
            let cell = part.table.cell(index);
            part.table.add(cell, state, sums, own);
            if self.fees && p.flags[row] & flag::FEE != 0 {
                self.add_fee(p, (row, key), &mut part.fees, cell, own);
            }
        };
        self.axes
            .each_combination(p, (row, base), (&sums, self.view.cap), &mut add);
    }

    /// Notes the fee of `row` (which has one; `key`: its record key) in `cell` (none
    /// when [`EMPTY`]). Perturbed, the amount is the moved one and carries the record
    /// key, for the key of its currency group's count (`fees::quartiles`).
    #[inline]
    fn add_fee(
        &self,
        p: &Projection,
        (row, key): (usize, u32),
        fees: &mut PartFees,
        cell: u32,
        own: bool,
    ) {
        if cell == EMPTY {
            return;
        }
        let currency = u32::try_from(p.countries.packed(p.fee_currency[row])).unwrap_or(0);
        let amount = p.fee_amount(row);
        let (amount, record_key) = if self.view.moved_fees {
            (counters::moved_fee(amount, key), key)
        } else {
            (amount, 0)
        };
        if let Some(bag) = fees.bag(cell) {
            bag.add(currency, amount, own, record_key);
        }
    }
}

impl Part {
    /// Adds another thread's part to this one.
    fn merge(&mut self, other: Part) {
        let mut renumbered = Vec::with_capacity(other.table.index.len());
        for (i, index) in other.table.index.iter().enumerate() {
            let cell = self.table.cell(*index);
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
            note_state(&mut self.table.states[c], other.table.states[i]);
            note_state(&mut self.table.own_states[c], other.table.own_states[i]);
            let theirs = other.table.own[i];
            for (mine, add) in self.table.own[c].iter_mut().zip(theirs) {
                *mine = mine.wrapping_add(add);
            }
        }
        for (mine, theirs) in self.by_state.iter_mut().zip(&other.by_state) {
            *mine += theirs;
        }
        for (bag, cell) in other.fees.bags.into_iter().zip(&renumbered) {
            if let Some(mine) = self.fees.bag(*cell) {
                mine.absorb(&bag);
            }
        }
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

    /// The rows of `range` whose report counts and passes every filter (as
    /// `access::QueryFilter::matches` decides for a report head) and has none of the
    /// flags `without`, into `out`: first by liveness, category, month and flags, without
    /// branches, then by content.
    fn select(
        &self,
        p: &Projection,
        (range, without): (std::ops::Range<usize>, u8),
        out: &mut Vec<u32>,
    ) {
        out.clear();
        out.resize(range.len(), 0);
        // Rows are checked to fit in u32 when added.
        let first = u32::try_from(range.start).unwrap_or(u32::MAX);
        let mut kept = 0;
        let (flags, months) = (&p.flags[range.clone()], &p.month[range]);
        for (i, (&flags, &month)) in flags.iter().zip(months).enumerate() {
            // Without branches on purpose: which rows pass is unpredictable.
            #[allow(clippy::needless_bitwise_bool)]
            let keep = (flags & flag::LIVE != 0)
                & (flags & without == 0)
                & self.categories[usize::from(flags & flag::MARITIME != 0)]
                & (month >= self.months.0)
                & (month <= self.months.1);
            // i < CHUNK.
            #[allow(clippy::cast_possible_truncation)]
            let row = first + i as u32;
            out[kept] = row;
            kept += usize::from(keep);
        }
        out.truncate(kept);
        if self.narrows {
            self.narrow(p, out);
        }
    }

    /// Keeps, of `rows` (rows that count), those that pass the filters on content: one
    /// filter at a time over all of them.
    fn narrow(&self, p: &Projection, rows: &mut Vec<u32>) {
        let has = |set: &[bool], code: u16| set.get(usize::from(code)).copied().unwrap_or(false);
        if let Some(set) = &self.states {
            keep(rows, |r| has(set, p.state[r]));
        }
        if let Some(set) = &self.route {
            keep(rows, |r| {
                has(set, p.origin[r])
                    || has(set, p.destination[r])
                    || p.transit(r).iter().any(|c| has(set, *c))
            });
        }
        if let Some(set) = &self.nationalities {
            keep(rows, |r| p.nationalities(r).iter().any(|c| has(set, *c)));
        }
        for (wanted, column) in [
            (self.modus_operandi, &p.modus_operandi),
            (self.maritime_event, &p.maritime_event),
            (self.vessel_type, &p.vessel_type),
        ] {
            if wanted != 0 {
                keep(rows, |r| i32::from(column[r]) == wanted);
            }
        }
        if let Some(b) = &self.bbox {
            keep(rows, |r| b.contains(p, r));
        }
    }
}

/// Keeps the rows for which `pred` holds, in order, without a branch per row.
#[inline]
fn keep(rows: &mut Vec<u32>, pred: impl Fn(usize) -> bool) {
    let mut kept = 0;
    for i in 0..rows.len() {
        let row = rows[i];
        rows[kept] = row;
        kept += usize::from(pred(row as usize));
    }
    rows.truncate(kept);
}

impl Bbox {
    /// Whether the report of `row` gives a point inside the box.
    #[inline]
    fn contains(&self, p: &Projection, row: usize) -> bool {
        let point = p.flags[row] & flag::POINT != 0;
        let (lat, lon) = (p.latitude[row], p.longitude[row]);
        if point
            && lat == POINT_ELSEWHERE
            && let Some((lat, lon)) = p.exact_point(row)
        {
            let d = &self.degrees;
            return (d.min_latitude..=d.max_latitude).contains(&lat)
                && (d.min_longitude..=d.max_longitude).contains(&lon);
        }
        let (lat, lon) = (i64::from(lat), i64::from(lon));
        // Without branches on purpose, as in `Filter::select`.
        #[allow(clippy::needless_bitwise_bool)]
        let inside = point
            & (self.latitude.0 <= lat)
            & (lat <= self.latitude.1)
            & (self.longitude.0 <= lon)
            & (lon <= self.longitude.1);
        inside
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
    /// What a code along each axis weighs in a cell's index: the product of the sizes
    /// before it (saturated: see [`Table::new`]).
    strides: [u64; 3],
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
        let mut strides = [0; 3];
        let mut combinations = 1u64;
        for (stride, size) in strides.iter_mut().zip(&sizes) {
            *stride = combinations;
            combinations = combinations.saturating_mul(*size);
        }
        Self {
            reads,
            sizes,
            strides,
            multi,
            countries,
        }
    }

    /// The number of combinations of codes (saturated).
    fn combinations(&self) -> u64 {
        self.sizes
            .iter()
            .fold(1u64, |n, size| n.saturating_mul(*size))
    }

    /// Each of `rows`' index along the single-valued axes (its codes weighted by the
    /// strides; multi-valued axes are added by [`Axes::each_combination`]), into `out`:
    /// one axis at a time, over all the rows.
    fn index(&self, p: &Projection, rows: &[u32], out: &mut Vec<u64>) {
        /// Adds `code(row) * stride` to each row's index.
        #[inline]
        fn add(out: &mut [u64], rows: &[u32], stride: u64, code: impl Fn(usize) -> u64) {
            for (index, &row) in out.iter_mut().zip(rows) {
                *index += code(row as usize) * stride;
            }
        }
        out.clear();
        out.resize(rows.len(), 0);
        let countries = self.countries;
        for (read, &stride) in self.reads.iter().zip(&self.strides) {
            match *read {
                Reads::Period(Dimension::Quarter, first) => {
                    add(out, rows, stride, |r| u64::from(p.month[r]) / 3 - first);
                }
                Reads::Period(Dimension::Year, first) => {
                    add(out, rows, stride, |r| u64::from(p.month[r]) / 12 - first);
                }
                Reads::Period(_, first) => {
                    add(out, rows, stride, |r| u64::from(p.month[r]) - first);
                }
                Reads::State => add(out, rows, stride, |r| u64::from(p.state[r])),
                Reads::Category => add(out, rows, stride, |r| {
                    u64::from(p.flags[r] & flag::MARITIME != 0)
                }),
                Reads::Origin => add(out, rows, stride, |r| u64::from(p.origin[r])),
                Reads::Destination => add(out, rows, stride, |r| u64::from(p.destination[r])),
                Reads::LocationCountry => add(out, rows, stride, |r| u64::from(p.location[r])),
                Reads::Route => add(out, rows, stride, |r| {
                    u64::from(p.origin[r]) * countries + u64::from(p.destination[r])
                }),
                Reads::ModusOperandi => {
                    add(out, rows, stride, |r| u64::from(p.modus_operandi[r]));
                }
                Reads::MaritimeEvent => {
                    add(out, rows, stride, |r| u64::from(p.maritime_event[r]));
                }
                Reads::VesselType => add(out, rows, stride, |r| u64::from(p.vessel_type[r])),
                Reads::SeaArea => add(out, rows, stride, |r| u64::from(p.sea_area[r])),
                Reads::Transit | Reads::Nationality => {}
            }
        }
    }

    /// Calls `add` with every combination of the row's values along the multi-valued
    /// axes, each value's "all" included, and what the row adds there: all of `sums`,
    /// except that a nationality adds its own persons only.
    fn each_combination(
        &self,
        p: &Projection,
        (row, base): (usize, u64),
        (sums, cap): (&Sums, Option<u64>),
        add: &mut impl FnMut(u64, &Sums),
    ) {
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
            let mut index = base;
            let mut adds = sums;
            for (i, &at) in self.multi.iter().enumerate() {
                let (code, instead) = &choices[i][pick[i]];
                index += code * self.strides[at];
                if let Some(instead) = instead {
                    adds = instead;
                }
            }
            add(index, adds);
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
    /// Cell numbers by index (see [`Axes::index`]), when dense enough.
    dense: Option<Vec<u32>>,
    sparse: FxHashMap<u64, u32>,
    /// Each cell's index.
    index: Vec<u64>,
    sums: Vec<Sums>,
    /// The one state of each cell's reports (dictionary code), [`MIXED`] for several.
    states: Vec<u32>,
    /// What the asking state's own reports add, per cell.
    own: Vec<Sums>,
    /// The one state of each cell's own reports, as `states`.
    own_states: Vec<u32>,
}

/// A cell holding reports of several states.
const MIXED: u32 = u32::MAX;

/// A cell holding no report yet (state codes are 16 bits).
const NO_STATE: u32 = u32::MAX - 1;

/// Notes in `one` (a cell's one state so far, [`NO_STATE`] or [`MIXED`]) reports of
/// `state` (which may be either too).
#[inline]
fn note_state(one: &mut u32, state: u32) {
    if *one == NO_STATE {
        *one = state;
    } else if state != NO_STATE && *one != state {
        *one = MIXED;
    }
}

impl Table {
    /// An empty table over `axes`. Codes are dictionary codes of ISO 3166 and 4217 codes
    /// (a few hundred) or below 256, so the product of the axes' sizes, and every index,
    /// stays far below 2^64.
    fn new(axes: &Axes) -> Self {
        let combinations = axes.combinations();
        let dense = (combinations <= DENSE_LIMIT)
            .then(|| vec![EMPTY; usize::try_from(combinations).unwrap_or(0)]);
        Self {
            dense,
            sparse: FxHashMap::default(),
            index: Vec::new(),
            sums: Vec::new(),
            states: Vec::new(),
            own: Vec::new(),
            own_states: Vec::new(),
        }
    }

    /// The number of the cell at `index`, made if new.
    #[inline]
    fn cell(&mut self, index: u64) -> u32 {
        if let Some(dense) = &self.dense {
            match dense.get(usize::try_from(index).unwrap_or(usize::MAX)) {
                Some(&cell) if cell != EMPTY => return cell,
                Some(_) => {}
                None => return EMPTY,
            }
        }
        self.new_cell(index)
    }

    /// [`Table::cell`] of a cell not in the dense table (new, or the table is sparse).
    #[cold]
    fn new_cell(&mut self, index: u64) -> u32 {
        let next = u32::try_from(self.index.len()).unwrap_or(EMPTY);
        let slot = match &mut self.dense {
            Some(dense) => match dense.get_mut(usize::try_from(index).unwrap_or(usize::MAX)) {
                Some(slot) => slot,
                None => return EMPTY,
            },
            None => self.sparse.entry(index).or_insert(EMPTY),
        };
        if *slot == EMPTY {
            *slot = next;
            self.index.push(index);
            self.sums.push([0; STORED]);
            self.states.push(NO_STATE);
            self.own.push([0; STORED]);
            self.own_states.push(NO_STATE);
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
        if own && let Some(mine) = self.own.get_mut(cell as usize) {
            for (t, s) in mine.iter_mut().zip(sums).skip(1) {
                *t += s;
            }
            mine[KEY_SUM] -= sums[KEY_SUM];
        }
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
        note_state(one, state);
        if own
            && let (Some(mine), Some(one)) = (self.own.get_mut(cell), self.own_states.get_mut(cell))
        {
            mine[0] += 1;
            mine[KEY_SUM] = mine[KEY_SUM].wrapping_add(key);
            note_state(one, state);
        }
    }

    /// The cells, keyed as the counters key them, in cell-number order.
    fn into_cells(self, p: &Projection, axes: &Axes) -> Vec<(Key, Acc)> {
        let mut cells = Vec::with_capacity(self.index.len());
        for (i, index) in self.index.iter().enumerate() {
            let mut key = [0; 3];
            for (at, k) in key.iter_mut().enumerate().take(axes.reads.len()) {
                let code = index / axes.strides[at].max(1) % axes.sizes[at].max(1);
                *k = axes.value(p, at, code);
            }
            let packed = |state: u32| match state {
                MIXED | NO_STATE => None,
                code => Some(
                    u16::try_from(code)
                        .ok()
                        .and_then(|c| u32::try_from(p.countries.packed(c)).ok())
                        .unwrap_or(0),
                ),
            };
            cells.push((
                key,
                Acc::scanned(
                    self.sums[i],
                    packed(self.states[i]),
                    (self.own[i], packed(self.own_states[i])),
                ),
            ));
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
                unknown_only: false,
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Each cell's fees are those of its reports, however many threads scan: amounts
        /// of any size (beyond 32 bits too, which validation refuses but a projection
        /// holds), moved or not, with each one's keyed hash, and those the asking state
        /// knows (its own, and those shared with it) neither among the others nor in
        /// their key.
        #[test]
        fn fees_are_counted_per_cell_with_their_owners(
            fees in proptest::collection::vec(
                (
                    0usize..3,
                    0usize..2,
                    proptest::prop_oneof![
                        1u64..50,
                        proptest::strategy::Just(u64::from(u32::MAX) - 1),
                        proptest::strategy::Just(u64::from(u32::MAX)),
                        proptest::strategy::Just(1u64 << 40),
                        proptest::strategy::Just(1u64 << 60),
                    ],
                ),
                1..60,
            ),
            moved in proptest::bool::ANY,
            threads in 1usize..4,
        ) {
            const STATES: [&str; 3] = ["AUS", "IDN", "THA"];
            const CURRENCIES: [&str; 2] = ["USD", "EUR"];
            type Expected = (Vec<u64>, u64, u64, u64);
            let mut rng = sample::Rng::new(5);
            let reports: Vec<_> = fees
                .iter()
                .enumerate()
                .map(|(i, (state, currency, amount))| {
                    let r = sample::report(&mut rng, STATES[*state]);
                    let day = parse_date(&r.incident_date).map_or(0, time::Date::to_julian_day);
                    let mut summary = summarize(&r, Category::SmugglingIncident, day);
                    if let Some(facts) = summary.facts.as_mut() {
                        facts.fee_amount = *amount;
                        facts.fee_currency = CURRENCIES[*currency].to_owned();
                    }
                    let id = u128::try_from(i).unwrap_or(0) + 1;
                    (id, summary, STATES[*state].to_owned(), false)
                })
                .collect();
            // The reports AUS knows: its own, and those shared with it.
            let known: Vec<bool> = reports
                .iter()
                .map(|(_, summary, state, _)| {
                    let head = crate::store::ReportHead {
                        state: state.clone(),
                        summary: Some(summary.clone()),
                        ..crate::store::ReportHead::default()
                    };
                    crate::access::visible_to(&head, "AUS".parse().unwrap_or_else(|e| panic!("{e}")))
                })
                .collect();
            let p = Projection::of(&reports);
            let query = AggregateQuery::from_request(&pb::AggregateRequest {
                group_by: vec![pb::Dimension::ReportingState as i32],
                metrics: vec![pb::Metric::FeePerPerson as i32],
                filter: None,
            })
            .unwrap_or_else(|e| panic!("{e:?}"));
            let pack = |code: &str| u32::try_from(counters::pack_country(code)).unwrap_or(0);
            let view = View { own: Some(pack("AUS")), moved_fees: moved, cap: None, unknown_only: false };
            // Per cell (state, or ALL) and currency: the amounts, the own ones, and the
            // key sums of all and of the others.
            let mut expected: std::collections::BTreeMap<(u64, u32), Expected> =
                std::collections::BTreeMap::new();
            for (i, (state, currency, amount)) in fees.iter().enumerate() {
                let id = u128::try_from(i).unwrap_or(0) + 1;
                let currency = pack(CURRENCIES[*currency]);
                let (amount, hash) = if moved {
                    let key = p.record_keys().of(id);
                    (counters::moved_fee(*amount, key), u64::from(key))
                } else {
                    (*amount, 0)
                };
                let own = known[i];
                for cell in [counters::pack_country(STATES[*state]), ALL] {
                    let e = expected.entry((cell, currency)).or_default();
                    e.0.push(amount);
                    e.1 += u64::from(own);
                    e.2 = e.2.wrapping_add(hash);
                    if !own {
                        e.3 = e.3.wrapping_add(hash);
                    }
                }
            }
            let settings = super::super::Settings::new(&crate::config::AnalyticsConfig::default());
            let grid = scan_in(&p, &query, view, threads);
            let mut seen = 0;
            for (key, acc) in &grid.entries {
                let mut counts: Vec<((u32, u64), u64)> = Vec::new();
                for ((cell, currency), (amounts, own, all, others)) in &expected {
                    if *cell != key[0] {
                        continue;
                    }
                    let mut amounts = amounts.clone();
                    amounts.sort_unstable();
                    for a in &amounts {
                        match counts.last_mut() {
                            Some((fee, n)) if *fee == (*currency, *a) => *n += 1,
                            _ => counts.push(((*currency, *a), 1)),
                        }
                    }
                    let code = counters::unpack_country(u64::from(*currency));
                    let groups = super::super::fees::quartiles(&acc.fees, &settings, moved);
                    let group = groups
                        .iter()
                        .find(|g| g.quantiles.currency == code)
                        .unwrap_or_else(|| panic!("{code} in {key:?}"));
                    let reports = amounts.len() as u64;
                    // The low half of a key sum is the key modulo 2^32.
                    #[allow(clippy::cast_possible_truncation)]
                    let key_of = |sum: u64| sum as u32;
                    // The quartiles are over enough others' fees where there are any
                    // (true and perturbed count), else over the own ones alone.
                    let minimum = settings.minimum_reports_for_quantiles;
                    let few = |n: u64| {
                        n < minimum
                            || (moved
                                && super::super::perturbation::count(n, key_of(*others))
                                    < minimum)
                    };
                    let own_alone = reports == *own || few(reports - own);
                    let over = if own_alone { *own } else { reports - own };
                    proptest::prop_assert_eq!(group.quantiles.reports, over);
                    let key_sum = if own_alone { all.wrapping_sub(*others) } else { *others };
                    proptest::prop_assert_eq!(group.key, key_of(key_sum));
                    // A group that is every report of its cell, over all of them, has the
                    // cell's key: one set of reports, one perturbed count, however it is
                    // reached.
                    if reports == acc.reports() && (reports == *own || !own_alone) {
                        proptest::prop_assert_eq!(group.key, if moved { acc.cell_key() } else { 0 });
                    }
                }
                counts.sort_unstable();
                proptest::prop_assert_eq!(acc.fees.counts(), counts, "{:?}", key);
                seen += 1;
            }
            proptest::prop_assert_eq!(seen, expected.keys().map(|(cell, _)| *cell).collect::<std::collections::BTreeSet<_>>().len());
        }
    }
}
