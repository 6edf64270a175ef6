//! Aggregate queries for analysts: what a query may ask ([`AggregateQuery`]: whole
//! months only), how its table is computed (for the regional analyst from the write-time
//! counters when its shape allows; otherwise, and always for a state's analyst, whose
//! tables set apart the reports its state can read, by a scan of the columnar
//! projection), and the disclosure control applied
//! before anything leaves the server: cell key perturbation (`perturbation`), then
//! suppression (`disclosure`), then the fee quartiles' own minimum (`fees`).
//!
//! Every path counts the same thing: the latest version of each report that is not
//! retracted, whatever its sharing scope. Who may ask is decided by the caller (the
//! server layer, with `policy`).

mod budget;
mod disclosure;
mod discrete_gaussian;
mod fees;
mod grid;
mod intervals;
mod parallel;
mod perturbation;
mod render;
mod scan;
mod source;

use crate::{
    access::{FilterError, QueryFilter},
    config::AnalyticsConfig,
    country::CountryCode,
    pb,
    report::Category,
    store::{
        Projection, Snapshot, StoreError,
        counters::{self, Additive, Cuboid},
    },
};

/// Most dimensions in one query.
pub const MAX_DIMENSIONS: usize = 3;

/// What a table can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Calendar month of the incident date.
    Month,
    /// Calendar quarter of the incident date.
    Quarter,
    /// Calendar year of the incident date.
    Year,
    /// The state that reported.
    ReportingState,
    /// Smuggling incident or maritime movement.
    Category,
    /// One of the dimensions kept as write-time counters.
    Counted(Cuboid),
}

/// Every dimension: its name (command line, chart labels), its wire value, and what it
/// groups by. The one list of dimensions: a new one is added here, in `render::label`
/// and, if it is kept as counters, in `Cuboid` (`store::counters`).
pub const DIMENSIONS: [(&str, pb::Dimension, Dimension); 15] = {
    use pb::Dimension as D;
    [
        ("month", D::Month, Dimension::Month),
        ("quarter", D::Quarter, Dimension::Quarter),
        ("year", D::Year, Dimension::Year),
        ("state", D::ReportingState, Dimension::ReportingState),
        ("category", D::Category, Dimension::Category),
        ("origin", D::Origin, Dimension::Counted(Cuboid::Origin)),
        ("transit", D::Transit, Dimension::Counted(Cuboid::Transit)),
        (
            "destination",
            D::Destination,
            Dimension::Counted(Cuboid::Destination),
        ),
        ("route", D::Route, Dimension::Counted(Cuboid::Route)),
        (
            "nationality",
            D::Nationality,
            Dimension::Counted(Cuboid::Nationality),
        ),
        (
            "modus-operandi",
            D::ModusOperandi,
            Dimension::Counted(Cuboid::ModusOperandi),
        ),
        (
            "maritime-event",
            D::MaritimeEvent,
            Dimension::Counted(Cuboid::MaritimeEvent),
        ),
        (
            "vessel-type",
            D::VesselType,
            Dimension::Counted(Cuboid::VesselType),
        ),
        (
            "location-country",
            D::LocationCountry,
            Dimension::Counted(Cuboid::LocationCountry),
        ),
        ("sea-area", D::SeaArea, Dimension::Counted(Cuboid::SeaArea)),
    ]
};

/// Every metric: its name, its wire value, and what it reports. The one list of metrics.
pub const METRICS: [(&str, pb::Metric, Metric); 8] = {
    use pb::Metric as M;
    [
        ("reports", M::Reports, Metric::Sum(Additive::Reports)),
        ("persons", M::Persons, Metric::Sum(Additive::Persons)),
        ("deaths", M::Deaths, Metric::Sum(Additive::Deaths)),
        ("missing", M::Missing, Metric::Sum(Additive::Missing)),
        ("minors", M::Minors, Metric::Sum(Additive::Minors)),
        (
            "unaccompanied-minors",
            M::UnaccompaniedMinors,
            Metric::Sum(Additive::UnaccompaniedMinors),
        ),
        (
            "facilitators-arrested",
            M::FacilitatorsArrested,
            Metric::Sum(Additive::FacilitatorsArrested),
        ),
        ("fee", M::FeePerPerson, Metric::FeePerPerson),
    ]
};

/// The dimension `name` names in [`DIMENSIONS`].
pub fn dimension_named(name: &str) -> Option<pb::Dimension> {
    DIMENSIONS.iter().find(|d| d.0 == name).map(|d| d.1)
}

/// The name of a dimension in [`DIMENSIONS`] ("?" for one this build does not know).
pub fn dimension_name(value: i32) -> &'static str {
    DIMENSIONS
        .iter()
        .find(|d| d.1 as i32 == value)
        .map_or("?", |d| d.0)
}

/// The metric `name` names in [`METRICS`].
pub fn metric_named(name: &str) -> Option<pb::Metric> {
    METRICS.iter().find(|m| m.0 == name).map(|m| m.1)
}

/// The name of a metric in [`METRICS`] ("?" for one this build does not know).
pub fn metric_name(value: i32) -> &'static str {
    METRICS
        .iter()
        .find(|m| m.1 as i32 == value)
        .map_or("?", |m| m.0)
}

impl Dimension {
    /// The dimension a wire value names; `None` for unspecified or unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        DIMENSIONS.iter().find(|d| d.1 as i32 == value).map(|d| d.2)
    }

    /// Whether this is a period (month, quarter, year).
    pub fn is_period(self) -> bool {
        matches!(self, Self::Month | Self::Quarter | Self::Year)
    }

    /// Whether one report can fall in several cells along this dimension.
    pub fn multi_valued(self) -> bool {
        matches!(self, Self::Counted(c) if c.multi_valued())
    }

    /// The category whose reports alone have this dimension (the other's fall under
    /// "none"), if only one has it.
    fn only_of(self) -> Option<Category> {
        match self {
            Self::Counted(Cuboid::ModusOperandi) => Some(Category::SmugglingIncident),
            Self::Counted(Cuboid::MaritimeEvent | Cuboid::VesselType) => {
                Some(Category::MaritimeMovement)
            }
            _ => None,
        }
    }
}

/// What a cell can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// An additive metric, summed over the cell's reports.
    Sum(Additive),
    /// Quartiles of the fee per person, by currency.
    FeePerPerson,
}

impl Metric {
    /// The metric a wire value names; `None` for unspecified or unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        METRICS.iter().find(|m| m.1 as i32 == value).map(|m| m.2)
    }

    /// The category whose reports alone record this metric, if only one does.
    fn only_of(self) -> Option<Category> {
        match self {
            Self::Sum(Additive::FacilitatorsArrested) | Self::FeePerPerson => {
                Some(Category::SmugglingIncident)
            }
            Self::Sum(_) => None,
        }
    }
}

/// Refuses, for a table of one category, a dimension or a metric that only the other
/// category's reports have: its column would be "none" or zero throughout.
fn of_the_category(
    category: Category,
    dimensions: &[Dimension],
    metrics: &[Metric],
) -> Result<(), FilterError> {
    let other = |theirs: Category, name: &str| {
        format!(
            "{name} applies to {} only, and this table is of {}: leave it out, or ask for \
             that category",
            theirs.plural(),
            category.plural()
        )
    };
    for d in dimensions {
        if let Some(theirs) = d.only_of().filter(|c| *c != category) {
            let name = DIMENSIONS.iter().find(|n| n.2 == *d).map_or("?", |n| n.0);
            return Err(bad("group_by", other(theirs, name)));
        }
    }
    for m in metrics {
        if let Some(theirs) = m.only_of().filter(|c| *c != category) {
            let name = METRICS.iter().find(|n| n.2 == *m).map_or("?", |n| n.0);
            return Err(bad("metrics", other(theirs, name)));
        }
    }
    Ok(())
}

/// A checked aggregate query.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    /// What the table is grouped by, in order.
    pub dimensions: Vec<Dimension>,
    /// What each cell reports, in the order asked (a metric asked twice is refused).
    pub metrics: Vec<Metric>,
    /// The categories it covers, each with its filter.
    filters: Vec<(Category, QueryFilter)>,
    request: pb::AggregateRequest,
}

fn bad(field: &'static str, reason: impl Into<String>) -> FilterError {
    FilterError {
        field,
        reason: reason.into(),
    }
}

impl AggregateQuery {
    /// Checks an Aggregate request: dimensions, metrics and filter.
    pub fn from_request(req: &pb::AggregateRequest) -> Result<Self, FilterError> {
        if req.group_by.len() > MAX_DIMENSIONS {
            return Err(bad(
                "group_by",
                format!(
                    "has {} dimensions; at most {MAX_DIMENSIONS}",
                    req.group_by.len()
                ),
            ));
        }
        let mut dimensions = Vec::new();
        for value in &req.group_by {
            let d = Dimension::from_pb(*value)
                .ok_or_else(|| bad("group_by", format!("{value} is not a dimension")))?;
            if dimensions.contains(&d) {
                return Err(bad("group_by", "names a dimension twice"));
            }
            dimensions.push(d);
        }
        if dimensions.iter().filter(|d| d.is_period()).count() > 1 {
            return Err(bad(
                "group_by",
                "has more than one period (month, quarter, year); pick one",
            ));
        }
        let metrics = metrics_of(req)?;
        if dimensions.contains(&Dimension::Counted(Cuboid::Nationality))
            && metrics
                .iter()
                .any(|m| !matches!(m, Metric::Sum(Additive::Reports | Additive::Persons)))
        {
            return Err(bad(
                "metrics",
                "only reports and persons can be grouped by nationality: deaths, missing, \
                 minors, facilitators and fees are not recorded per nationality",
            ));
        }
        let f = req.filter.clone().unwrap_or_default();
        known_values(&f)?;
        let categories = match Category::from_pb(f.category) {
            Some(c) => vec![c],
            None if f.category == 0 => categories_filtered(&f)?,
            None => {
                return Err(bad(
                    "filter.category",
                    format!(
                        "{} is not a category: smuggling incident (1), maritime movement (2), \
                         or unspecified (0) for both",
                        f.category
                    ),
                ));
            }
        };
        if let [category] = categories.as_slice() {
            of_the_category(*category, &dimensions, &metrics)?;
        }
        let filters: Vec<(Category, QueryFilter)> = categories
            .into_iter()
            .map(|category| {
                let q = pb::QueryRequest {
                    category: category.to_pb() as i32,
                    from_date: f.from_date.clone(),
                    to_date: f.to_date.clone(),
                    reporting_states: f.reporting_states.clone(),
                    route_countries: f.route_countries.clone(),
                    nationalities: f.nationalities.clone(),
                    modus_operandi: f.modus_operandi,
                    maritime_event: f.maritime_event,
                    vessel_type: f.vessel_type,
                    bbox: f.bbox,
                    ..pb::QueryRequest::default()
                };
                QueryFilter::from_request(&q)
                    .map(|filter| (category, filter))
                    .map_err(|e| FilterError {
                        field: prefixed(e.field),
                        reason: e.reason,
                    })
            })
            .collect::<Result<_, _>>()?;
        if let Some((_, filter)) = filters.first() {
            whole_months(filter.days())?;
        }
        Ok(Self {
            dimensions,
            metrics,
            filters,
            request: req.clone(),
        })
    }

    /// The categories the query covers.
    pub fn categories(&self) -> impl Iterator<Item = Category> + '_ {
        self.filters.iter().map(|(c, _)| *c)
    }

    /// Whether it only counts `state`'s own reports.
    pub fn only_own(&self, state: CountryCode) -> bool {
        self.filters.iter().all(|(_, f)| f.only_own(state))
    }

    /// The request as received, for the audit log.
    pub fn request(&self) -> &pb::AggregateRequest {
        &self.request
    }
}

/// Refuses filter values outside their enums.
fn known_values(f: &pb::AggregateFilter) -> Result<(), FilterError> {
    match crate::report::unknown_filter_enum(f.modus_operandi, f.maritime_event, f.vessel_type) {
        None => Ok(()),
        Some(field) => Err(bad(
            prefixed(field),
            "is not one of the values the enum defines",
        )),
    }
}

/// The categories a filter without a category covers: both, or the one whose reports
/// alone have a field it sets (modus operandi; maritime event, vessel type). Fields of
/// both categories match no report and are refused.
fn categories_filtered(f: &pb::AggregateFilter) -> Result<Vec<Category>, FilterError> {
    let set =
        crate::report::filters_of_one_category(f.modus_operandi, f.maritime_event, f.vessel_type);
    match set.as_slice() {
        [] => Ok(Category::ALL.to_vec()),
        [(first, category), rest @ ..] => match rest.iter().find(|(_, c)| c != category) {
            None => Ok(vec![*category]),
            Some((other, theirs)) => Err(bad(
                prefixed(other),
                format!(
                    "applies to {} only, and filter.{first} to {} only: no report has both; \
                     leave one out",
                    theirs.plural(),
                    category.plural()
                ),
            )),
        },
    }
}

/// The metrics asked for, each once.
fn metrics_of(req: &pb::AggregateRequest) -> Result<Vec<Metric>, FilterError> {
    if req.metrics.is_empty() {
        return Err(bad("metrics", "is empty; ask for at least one metric"));
    }
    let mut metrics = Vec::new();
    for value in &req.metrics {
        let m = Metric::from_pb(*value)
            .ok_or_else(|| bad("metrics", format!("{value} is not a metric")))?;
        if metrics.contains(&m) {
            return Err(bad(
                "metrics",
                format!(
                    "names {} twice; ask for each metric once",
                    metric_name(*value)
                ),
            ));
        }
        metrics.push(m);
    }
    Ok(metrics)
}

/// Refuses a date range that does not start on a month's first day or end on a month's
/// last day: statistics are published by whole months, so that no two answers differ by
/// the reports of a few days.
fn whole_months((from, to): (i32, i32)) -> Result<(), FilterError> {
    let date = |day: i32| time::Date::from_julian_day(day).ok();
    if from != i32::MIN
        && let Some(d) = date(from).filter(|d| d.day() != 1)
    {
        return Err(bad(
            "filter.from_date",
            format!(
                "is {d}, a day within a month: statistics are published by whole months; \
                 start on the month's first day ({}), or give the month ({}) on the command line",
                d.replace_day(1).unwrap_or(d),
                month_label(d)
            ),
        ));
    }
    if to != i32::MAX
        && let Some(d) = date(to).filter(|d| d.next_day().is_some_and(|n| n.day() != 1))
    {
        let last = d.replace_day(d.month().length(d.year())).unwrap_or(d);
        return Err(bad(
            "filter.to_date",
            format!(
                "is {d}, a day within a month: statistics are published by whole months; \
                 end on the month's last day ({last}), or give the month ({}) on the command line",
                month_label(d)
            ),
        ));
    }
    Ok(())
}

fn month_label(d: time::Date) -> String {
    format!("{}-{:02}", d.year(), u8::from(d.month()))
}

fn prefixed(field: &'static str) -> &'static str {
    match field {
        "from_date" => "filter.from_date",
        "to_date" => "filter.to_date",
        "reporting_states" => "filter.reporting_states",
        "route_countries" => "filter.route_countries",
        "nationalities" => "filter.nationalities",
        "bbox" => "filter.bbox",
        "modus_operandi" => "filter.modus_operandi",
        "maritime_event" => "filter.maritime_event",
        "vessel_type" => "filter.vessel_type",
        other => other,
    }
}

/// Disclosure control and currency settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cells counting fewer reports are withheld (`analytics.minimum_reports`).
    pub minimum_reports: u64,
    /// Fee quartiles need at least this many reports of a currency.
    pub minimum_reports_for_quantiles: u64,
    /// Whether the regional analyst's answers are perturbed too.
    pub perturb_regional_analyst: bool,
    /// The state analysts' privacy budget, when the exchange has one.
    pub budget: Option<Budget>,
    /// Whether cells from one state only are withheld (dominance).
    pub suppress_single_state: bool,
    /// The currency fees are converted to for quartiles across currencies.
    pub fee_currency: String,
    /// Conversion rates: (ISO 4217 code, units of `fee_currency` per unit).
    pub rates: Vec<(String, f64)>,
    /// Most cells and margins one answer may hold.
    pub max_cells: usize,
}

impl Settings {
    /// The settings a configuration names.
    pub fn new(config: &AnalyticsConfig) -> Self {
        Self {
            minimum_reports: u64::from(config.minimum_reports.max(1)),
            minimum_reports_for_quantiles: u64::from(
                config
                    .minimum_reports_for_quantiles
                    .max(config.minimum_reports)
                    .max(1),
            ),
            perturb_regional_analyst: config.perturb_regional_analyst,
            budget: Budget::new(&config.privacy_budget),
            suppress_single_state: config.suppress_single_state,
            fee_currency: config.fee_currency.clone(),
            rates: config.rates.iter().map(|(c, r)| (c.clone(), *r)).collect(),
            max_cells: config.max_cells.max(1),
        }
    }
}

/// Who an answer is for: it decides whether figures are perturbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A state's analyst: always perturbed; the reports its state knows as records (its
    /// own, and those shared with it) neither open a small cell nor change a cell's
    /// noise, and are shown as they are.
    StateAnalyst(CountryCode),
    /// The regional analyst: perturbed unless `analytics.perturb_regional_analyst` is off.
    RegionalAnalyst,
}

/// A zCDP budget per state analyst and year, in micro-ρ (millionths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What one analyst may spend in a year.
    pub per_year: u64,
    /// What one aggregate costs.
    pub per_query: u64,
    /// Each report's contribution to a sum is capped at this.
    pub cap: u64,
}

impl Budget {
    /// The budget a configuration sets, if it is enabled.
    pub fn new(config: &crate::config::PrivacyBudgetConfig) -> Option<Self> {
        // Micro-ρ; the configuration has checked both are positive and finite.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micro = |rho: f64| ((rho * 1e6).round() as u64).max(1);
        config.enabled.then(|| Self {
            per_year: micro(config.rho_per_year),
            per_query: micro(config.rho_per_query).min(micro(config.rho_per_year)),
            cap: u64::from(config.contribution_cap.max(1)),
        })
    }
}

impl Budget {
    /// Where an analyst stands in `year` having spent `spent` micro-ρ.
    #[allow(clippy::cast_precision_loss)]
    pub fn standing(&self, year: i32, spent: u64) -> pb::PrivacyBudget {
        pb::PrivacyBudget {
            year,
            rho_per_year: self.per_year as f64 / 1e6,
            rho_spent: spent as f64 / 1e6,
            rho_per_query: self.per_query as f64 / 1e6,
            queries_left: self.per_year.saturating_sub(spent) / self.per_query.max(1),
        }
    }
}

/// How an answer is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exact figures, suppression only.
    Exact,
    /// The cell key method, then suppression.
    CellKey,
    /// Discrete Gaussian noise for a charge of this budget, then small cells withheld
    /// on the noisy counts.
    Budget(Budget),
}

impl Settings {
    /// How answers for `audience` are protected.
    pub fn mode(&self, audience: Audience) -> Mode {
        match (audience, self.budget) {
            (Audience::StateAnalyst(_), Some(budget)) => Mode::Budget(budget),
            (Audience::StateAnalyst(_), None) => Mode::CellKey,
            (Audience::RegionalAnalyst, _) if self.perturb_regional_analyst => Mode::CellKey,
            (Audience::RegionalAnalyst, _) => Mode::Exact,
        }
    }
}

/// How a table was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the write-time counters: cost grows with the number of cells.
    Counters,
    /// By scanning the columnar projection of the reports.
    Scan,
    /// For a state's analyst, from the write-time counters less a scan of the reports its
    /// state cannot read.
    CountersLessUnknown,
}

impl Source {
    /// As `AggregateResponse.source` names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Counters => "counters",
            Self::Scan => "scan",
            Self::CountersLessUnknown => "counters-less-unknown",
        }
    }
}

/// An answered query: the response, and per reporting state how many of its reports
/// were counted (for the audit log).
pub struct Answer {
    /// The table as the API returns it.
    pub response: pb::AggregateResponse,
    /// How many reports the answer counted (for the audit record).
    pub counted: u64,
    /// How many of each state's reports it counted (for the owners' access lists).
    pub by_state: Vec<(String, u64)>,
    /// The states whose reports the answer was computed over, whatever its filters
    /// matched (`source::states_in_scope`): the owners its log entry names.
    pub in_scope: Vec<String>,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(
        "the table has {cells} cells and margins; at most {max} can be returned: group by \
         fewer or coarser dimensions (quarter or year instead of month), or narrow the filter"
    )]
    /// The table would have more cells than may be returned.
    TooManyCells {
        /// Cells and margins the table would have.
        cells: usize,
        /// The most that may be returned.
        max: usize,
    },
    #[error(transparent)]
    /// The store failed.
    Store(#[from] StoreError),
    #[error(
        "fee quartiles are not answered under the exchange's privacy budget (order \
         statistics need a mechanism of their own); ask for the other metrics"
    )]
    /// Fee quartiles were asked for under a privacy budget.
    FeesUnderBudget,
    #[error("under the privacy budget a table lists every value of its dimensions, so {0}")]
    /// A budgeted table whose cells would depend on the data.
    OpenDomain(String),
    #[error("the privacy noise could not be drawn: {0}")]
    /// The system random generator failed.
    Entropy(#[from] discrete_gaussian::EntropyError),
}

/// Answers `query` for `audience` from the counters in `snapshot` when the query's shape
/// allows, otherwise from a scan of the projection `projection` gives. The projection is
/// held for the scan only: the writer updates it after every batch, and an answer's
/// disclosure control (the linear programs of exact figures) held every submission up
/// for as long as it took.
pub fn aggregate<P: std::ops::Deref<Target = Projection>>(
    (snapshot, projection): (&Snapshot, impl FnOnce() -> Result<P, StoreError>),
    query: &AggregateQuery,
    settings: &Settings,
    audience: Audience,
) -> Result<Answer, AggregateError> {
    let mode = settings.mode(audience);
    let view = source::View {
        own: match audience {
            Audience::StateAnalyst(state) => {
                Some(u32::try_from(counters::pack_country(state.as_str())).unwrap_or(0))
            }
            Audience::RegionalAnalyst => None,
        },
        moved_fees: mode == Mode::CellKey,
        unknown_only: false,
        cap: match mode {
            Mode::Budget(budget) => Some(budget.cap),
            _ => None,
        },
    };
    // Capped contributions (the budget) need every report: a scan. A state analyst's
    // table needs which reports its state knows (their sharing scopes, which only the
    // projection keeps): the counters less a scan of the others, or a scan. Where cells
    // of one state's reports are withheld, it also needs which states the known reports
    // of a cell come from, which the counters cannot tell: a scan. The choice is made on
    // the query alone: made on the data, `source` said where unknown reports lay (an
    // outside pass found a single report's month and state by it).
    let own_states = view.own.is_some() && settings.suppress_single_state;
    let plan = source::counter_plan(query).filter(|_| view.cap.is_none() && !own_states);
    let (mut grid, source) = match plan {
        Some(plan) if view.own.is_none() => (
            source::from_counters(snapshot, query, &plan)?,
            Source::Counters,
        ),
        Some(plan) => {
            let projection = projection()?;
            match source::known_apart((snapshot, &projection), query, &plan, view)? {
                Some(grid) => (grid, Source::CountersLessUnknown),
                None => (
                    scan::from_projection(&projection, query, view),
                    Source::Scan,
                ),
            }
        }
        None => {
            let projection = projection()?;
            (
                scan::from_projection(&projection, query, view),
                Source::Scan,
            )
        }
    };
    if let Mode::Budget(_) = mode {
        // Every cell of the public domain, so that which cells exist says nothing.
        budget::complete(query, &mut grid, settings.max_cells)?;
    }
    let for_a_state = mode == Mode::CellKey && view.own.is_some();
    let mut answer = render::answer(query, settings, &mut grid, source, (mode, for_a_state))?;
    // Counted as listed: cells left out for being small would be counted by a refusal.
    let listed = answer.response.cells.len();
    if listed > settings.max_cells {
        return Err(AggregateError::TooManyCells {
            cells: listed,
            max: settings.max_cells,
        });
    }
    answer.in_scope = source::states_in_scope(snapshot, query)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn categories_of(filter: pb::AggregateFilter) -> Result<Vec<Category>, FilterError> {
        let request = pb::AggregateRequest {
            group_by: vec![pb::Dimension::Year as i32],
            metrics: vec![pb::Metric::Reports as i32],
            filter: Some(filter),
        };
        AggregateQuery::from_request(&request).map(|q| q.categories().collect())
    }

    #[test]
    fn a_filter_without_a_category_covers_the_one_its_fields_belong_to() {
        assert_eq!(
            categories_of(pb::AggregateFilter::default()).unwrap(),
            Category::ALL
        );
        let wooden = pb::VesselType::WoodenBoat as i32;
        let rescue = pb::MaritimeEvent::Rescue as i32;
        let sea = pb::ModusOperandi::Sea as i32;
        for (filter, covered) in [
            (
                pb::AggregateFilter {
                    vessel_type: wooden,
                    maritime_event: rescue,
                    ..Default::default()
                },
                Category::MaritimeMovement,
            ),
            (
                pb::AggregateFilter {
                    modus_operandi: sea,
                    ..Default::default()
                },
                Category::SmugglingIncident,
            ),
        ] {
            assert_eq!(categories_of(filter).unwrap(), [covered]);
        }
        let both = categories_of(pb::AggregateFilter {
            modus_operandi: sea,
            vessel_type: wooden,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(both.field, "filter.vessel_type", "{}", both.reason);
        let other = categories_of(pb::AggregateFilter {
            category: pb::Category::MaritimeMovement as i32,
            modus_operandi: sea,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(other.field, "filter.modus_operandi", "{}", other.reason);
    }

    #[test]
    fn a_table_of_one_category_refuses_what_only_the_other_has() {
        use pb::{Category as C, Dimension as D, Metric as M};
        let query = |category: pb::Category, group_by: pb::Dimension, metric: pb::Metric| {
            AggregateQuery::from_request(&pb::AggregateRequest {
                group_by: vec![group_by as i32],
                metrics: vec![metric as i32],
                filter: Some(pb::AggregateFilter {
                    category: category as i32,
                    ..Default::default()
                }),
            })
        };
        for (category, group_by, metric, field) in [
            (
                C::MaritimeMovement,
                D::Year,
                M::FacilitatorsArrested,
                "metrics",
            ),
            (C::MaritimeMovement, D::Year, M::FeePerPerson, "metrics"),
            (
                C::MaritimeMovement,
                D::ModusOperandi,
                M::Reports,
                "group_by",
            ),
            (C::SmugglingIncident, D::VesselType, M::Reports, "group_by"),
            (
                C::SmugglingIncident,
                D::MaritimeEvent,
                M::Persons,
                "group_by",
            ),
        ] {
            let refused = query(category, group_by, metric).unwrap_err();
            assert_eq!(refused.field, field, "{}", refused.reason);
            assert!(
                refused.reason.contains(" only, and this table is of "),
                "{}",
                refused.reason
            );
        }
        for (category, group_by, metric) in [
            (C::SmugglingIncident, D::ModusOperandi, M::FeePerPerson),
            (C::MaritimeMovement, D::VesselType, M::Deaths),
            // Both categories: the other's reports fall under "none".
            (C::Unspecified, D::VesselType, M::FacilitatorsArrested),
        ] {
            assert!(
                query(category, group_by, metric).is_ok(),
                "{group_by:?} {metric:?}"
            );
        }
    }
}
