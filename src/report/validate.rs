//! The validation rules of a report, one function per part of it.

use std::collections::HashSet;

use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::text::{self, TextKind};
use super::{Category, FieldViolation, ValidReport, ValidRetraction, ValidationErrors};
use crate::{
    calendar::{parse_date, parse_time_of_day},
    country::CountryCode,
    pb,
};

const MAX_NARRATIVE_CHARS: usize = 4000;
const MAX_PLACE_CHARS: usize = 200;
pub(crate) const MAX_TRANSIT: usize = 10;
pub(crate) const MAX_NATIONALITIES: usize = 50;
const MAX_LISTED_STATES: usize = 50;
const MAX_TRANSPORT: usize = 10;
const MAX_DOCUMENTS: usize = 20;
const MAX_FEE: u64 = 1_000_000_000;
const MAX_ON_BOARD: u32 = 100_000;
/// The most persons, or facilitators, one report counts (the largest vessels carry a few
/// thousand). It bounds every magnitude statistics add up, so that each report's value
/// stays under the cap of the cell key method's noise (2^20, `analytics/perturbation.rs`):
/// a report of 4,000,000,000 persons was shown to within 0.003 %.
const MAX_PERSONS: u32 = 100_000;
const MAX_SAR_REGION_CHARS: usize = 64;
const MAX_REASON_CHARS: usize = 500;
const EARLIEST_YEAR: i32 = 1990;
/// Violations listed in one refusal; past this they are counted, not listed, so that a
/// hostile report cannot make the answer (or the server's memory) grow with its size.
pub(super) const MAX_LISTED_VIOLATIONS: usize = 20;
/// Characters of one violation's description (which may quote the bad value); the rest
/// is cut, so that a refusal stays well under the 16 KiB of headers gRPC clients take.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// How far ahead of the server's clock an incident time may be (a node's clock may run
/// a little fast).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Checks every rule; `now` (UTC) is the latest allowed incident date and time.
pub fn validate(report: pb::Report, now: OffsetDateTime) -> Result<ValidReport, ValidationErrors> {
    let today = now.date();
    let mut c = Check::default();
    let id = c.uuid("report_id", &report.report_id);
    if report.version == 0 {
        c.fail("version", "must be 1 or more (1 for a new report)");
    }
    let state = c.country("reporting_state", &report.reporting_state, true);
    let incident_date = c.date("incident_date", &report.incident_date, today);
    c.time_of_day("incident_time", &report.incident_time, (incident_date, now));
    match &report.location {
        Some(location) => c.location(location),
        None => c.fail("location", "is required (at least location.country)"),
    }
    if let Some(route) = &report.route {
        if *route == pb::Route::default() {
            // One encoding of "no route": otherwise two signed payloads (an empty route
            // message, and none) would say the same, and a CSV round trip would change one.
            c.fail(
                "route",
                "is empty: leave it out when no part of the route is known",
            );
        }
        c.route(route);
    }
    match &report.persons {
        Some(persons) => c.persons(persons),
        None => c.fail("persons", "is required (at least persons.total)"),
    }
    c.text(
        "narrative",
        &report.narrative,
        TextKind::Free,
        MAX_NARRATIVE_CHARS,
    );
    match &report.sharing {
        Some(sharing) => c.sharing(sharing),
        None => c.fail("sharing", "is required: choose a sharing scope"),
    }
    match &report.reliability {
        Some(r) => {
            c.required_enum::<pb::SourceReliability>("reliability.source", r.source);
            c.required_enum::<pb::InformationCredibility>("reliability.information", r.information);
        }
        None => c.fail(
            "reliability",
            "is required: grade source (A-X) and information (1-4)",
        ),
    }
    let category = match &report.details {
        Some(pb::report::Details::Smuggling(s)) => {
            c.smuggling(s);
            Some(Category::SmugglingIncident)
        }
        Some(pb::report::Details::Maritime(m)) => {
            c.maritime(m);
            Some(Category::MaritimeMovement)
        }
        None => {
            c.fail("details", "is required: set either smuggling or maritime");
            None
        }
    };
    match (c.finish(), id, state, category, incident_date) {
        (Ok(()), Some(id), Some(state), Some(category), Some(incident_date)) => Ok(ValidReport {
            report,
            id,
            state,
            category,
            incident_date,
        }),
        (Err(e), ..) => Err(e),
        // Invariant: every None above recorded a violation, so finish() returned Err.
        _ => unreachable!("a missing part always records a violation"),
    }
}

/// Checks a retraction.
pub fn validate_retraction(r: &pb::Retraction) -> Result<ValidRetraction, ValidationErrors> {
    let mut c = Check::default();
    let id = c.uuid("report_id", &r.report_id);
    let state = c.country("reporting_state", &r.reporting_state, true);
    if r.version < 2 {
        c.fail(
            "version",
            "a retraction is the report's latest version plus one (2 or more)",
        );
    }
    c.text("reason", &r.reason, TextKind::Free, MAX_REASON_CHARS);
    match (c.finish(), id, state) {
        (Ok(()), Some(id), Some(state)) => Ok(ValidRetraction {
            id,
            state,
            version: r.version,
        }),
        (Err(e), ..) => Err(e),
        _ => unreachable!("a missing part always records a violation"),
    }
}

#[derive(Default)]
struct Check {
    violations: Vec<FieldViolation>,
    /// Violations found past [`MAX_LISTED_VIOLATIONS`].
    unlisted: usize,
}

impl Check {
    fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.violations.len() >= MAX_LISTED_VIOLATIONS {
            self.unlisted += 1;
            return;
        }
        self.violations.push(FieldViolation {
            field: field.into(),
            description: super::shorten(description.into(), MAX_DESCRIPTION_CHARS),
        });
    }

    /// Whether a list is within its bound; a longer one is refused as a whole and its
    /// elements are not looked at (their number is bounded only by the message size).
    fn list_fits(&mut self, field: &str, len: usize, max: usize) -> bool {
        if len > max {
            self.fail(field, format!("has {len} entries; at most {max}"));
            return false;
        }
        true
    }

    fn finish(mut self) -> Result<(), ValidationErrors> {
        if self.unlisted > 0 {
            self.violations.push(FieldViolation {
                field: "report".to_owned(),
                description: format!(
                    "and {} more violations, not listed; fix the ones above and submit again",
                    self.unlisted
                ),
            });
        }
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.violations))
        }
    }

    fn uuid(&mut self, field: &str, value: &str) -> Option<Uuid> {
        match super::parse_report_id(value) {
            Ok(id) => Some(id),
            Err(reason) => {
                self.fail(field, reason);
                None
            }
        }
    }

    fn country(&mut self, field: &str, value: &str, required: bool) -> Option<CountryCode> {
        if value.is_empty() {
            if required {
                self.fail(field, "is required: an ISO 3166-1 alpha-3 country code");
            }
            return None;
        }
        match CountryCode::parse(value) {
            Ok(code) => Some(code),
            Err(e) => {
                self.fail(field, e.to_string());
                None
            }
        }
    }

    fn text(&mut self, field: &str, value: &str, kind: TextKind, max_chars: usize) {
        let chars = value.chars().count();
        if chars > max_chars {
            self.fail(
                field,
                format!(
                    "is {chars} characters long, counted as Unicode code points (a letter \
                     with a combining accent counts as two); at most {max_chars} are allowed"
                ),
            );
        }
        if let Err(reason) = text::check(kind, value) {
            self.fail(field, reason);
        }
    }

    fn required_enum<E: TryFrom<i32>>(&mut self, field: &str, value: i32) {
        if value == 0 {
            self.fail(field, "is required");
        } else {
            self.known_enum::<E>(field, value);
        }
    }

    fn known_enum<E: TryFrom<i32>>(&mut self, field: &str, value: i32) {
        if E::try_from(value).is_err() {
            self.fail(field, format!("{value} is not one of the allowed values"));
        }
    }

    fn date(&mut self, field: &str, value: &str, today: Date) -> Option<Date> {
        let Some(date) = parse_date(value) else {
            self.fail(
                field,
                crate::calendar::refusal(
                    value,
                    "a date YYYY-MM-DD (RFC 3339 full-date, e.g. 2024-03-09)",
                ),
            );
            return None;
        };
        if date.year() < EARLIEST_YEAR {
            self.fail(field, format!("{value} is before {EARLIEST_YEAR}-01-01"));
        } else if date > today {
            self.fail(
                field,
                format!("{value} is in the future (today is {today}, UTC)"),
            );
        }
        Some(date)
    }

    /// `HH:MM`, and on today's date not later than now (allowing [`CLOCK_SKEW`]).
    fn time_of_day(
        &mut self,
        field: &str,
        value: &str,
        (date, now): (Option<Date>, OffsetDateTime),
    ) {
        if value.is_empty() {
            return;
        }
        let Some(time) = parse_time_of_day(value) else {
            self.fail(
                field,
                format!("{value:?} is not a time HH:MM (UTC, 24-hour, 00:00 to 23:59, e.g. 07:05)"),
            );
            return;
        };
        if let Some(date) = date
            && date.with_time(time).assume_utc() > now + CLOCK_SKEW
        {
            self.fail(
                field,
                format!(
                    "{date} {value} is in the future (it is now {} UTC)",
                    crate::clock::format_time(now.unix_timestamp())
                ),
            );
        }
    }

    fn location(&mut self, l: &pb::Location) {
        self.country("location.country", &l.country, true);
        self.text("location.place", &l.place, TextKind::Short, MAX_PLACE_CHARS);
        if let Some(p) = &l.point {
            if !(p.latitude.is_finite() && (-90.0..=90.0).contains(&p.latitude)) {
                self.fail(
                    "location.point.latitude",
                    format!("{} is outside -90..90", p.latitude),
                );
            }
            if !(p.longitude.is_finite() && (-180.0..=180.0).contains(&p.longitude)) {
                self.fail(
                    "location.point.longitude",
                    format!("{} is outside -180..180", p.longitude),
                );
            }
        }
        self.known_enum::<pb::SeaArea>("location.sea_area", l.sea_area);
    }

    fn route(&mut self, r: &pb::Route) {
        self.country("route.origin", &r.origin, false);
        self.country("route.intended_destination", &r.intended_destination, false);
        if !self.list_fits("route.transit", r.transit.len(), MAX_TRANSIT) {
            return;
        }
        for (i, t) in r.transit.iter().enumerate() {
            let field = format!("route.transit[{i}]");
            self.country(&field, t, true);
            // A route may pass a country twice, but not twice in a row.
            if i > 0 && r.transit[i - 1] == *t {
                self.fail(field, format!("repeats {t}, the country just before it"));
            }
        }
    }

    fn persons(&mut self, p: &pb::Persons) {
        let fits = self.list_fits(
            "persons.by_nationality",
            p.by_nationality.len(),
            MAX_NATIONALITIES,
        );
        let mut seen = HashSet::new();
        let mut sum: u64 = 0;
        for (i, nc) in p.by_nationality.iter().enumerate().filter(|_| fits) {
            let field = format!("persons.by_nationality[{i}]");
            if let Some(code) = self.country(&format!("{field}.nationality"), &nc.nationality, true)
                && !seen.insert(code)
            {
                {
                    self.fail(
                        format!("{field}.nationality"),
                        format!("{code} appears more than once"),
                    );
                }
            }
            if nc.count == 0 {
                self.fail(format!("{field}.count"), "must be at least 1");
            }
            sum += u64::from(nc.count);
        }
        if sum > u64::from(p.total) {
            self.fail(
                "persons.by_nationality",
                format!(
                    "counts add up to {sum}, more than persons.total ({})",
                    p.total
                ),
            );
        }
        if p.minors > p.total {
            self.fail(
                "persons.minors",
                format!("{} is more than persons.total ({})", p.minors, p.total),
            );
        }
        if p.unaccompanied_minors > p.minors {
            self.fail(
                "persons.unaccompanied_minors",
                format!(
                    "{} is more than persons.minors ({})",
                    p.unaccompanied_minors, p.minors
                ),
            );
        }
        if p.women > p.total {
            self.fail(
                "persons.women",
                format!("{} is more than persons.total ({})", p.women, p.total),
            );
        }
        if p.total > MAX_PERSONS {
            self.fail("persons.total", format!("must be at most {MAX_PERSONS}"));
        }
        if u64::from(p.deaths) + u64::from(p.missing) > u64::from(p.total) {
            self.fail(
                "persons.deaths",
                format!(
                    "deaths ({}) plus missing ({}) is more than persons.total ({})",
                    p.deaths, p.missing, p.total
                ),
            );
        }
    }

    fn sharing(&mut self, s: &pb::Sharing) {
        self.required_enum::<pb::SharingScope>("sharing.scope", s.scope);
        let listed = s.scope == pb::SharingScope::ListedStates as i32;
        if listed && s.states.is_empty() {
            self.fail(
                "sharing.states",
                "lists no state; SHARING_SCOPE_LISTED_STATES needs 1 or more",
            );
        }
        if !listed && !s.states.is_empty() {
            self.fail(
                "sharing.states",
                "must be empty unless the scope is SHARING_SCOPE_LISTED_STATES",
            );
        }
        if !self.list_fits("sharing.states", s.states.len(), MAX_LISTED_STATES) {
            return;
        }
        let mut seen = HashSet::new();
        for (i, st) in s.states.iter().enumerate() {
            let field = format!("sharing.states[{i}]");
            if let Some(code) = self.country(&field, st, true)
                && !seen.insert(code)
            {
                self.fail(field, format!("{code} appears more than once"));
            }
        }
    }

    fn smuggling(&mut self, s: &pb::SmugglingIncident) {
        self.required_enum::<pb::ModusOperandi>("smuggling.modus_operandi", s.modus_operandi);
        let fits = self.list_fits("smuggling.transport", s.transport.len(), MAX_TRANSPORT);
        let mut seen = HashSet::new();
        for (i, t) in s.transport.iter().enumerate().filter(|_| fits) {
            let field = format!("smuggling.transport[{i}]");
            self.required_enum::<pb::TransportMeans>(&field, *t);
            if !seen.insert(*t) {
                self.fail(field, "appears more than once");
            }
        }
        self.known_enum::<pb::Concealment>("smuggling.concealment", s.concealment);
        if s.facilitators_detected > MAX_PERSONS {
            self.fail(
                "smuggling.facilitators_detected",
                format!("must be at most {MAX_PERSONS}"),
            );
        }
        if s.facilitators_arrested > s.facilitators_detected {
            self.fail(
                "smuggling.facilitators_arrested",
                format!(
                    "{} is more than facilitators_detected ({})",
                    s.facilitators_arrested, s.facilitators_detected
                ),
            );
        }
        if let Some(fee) = &s.fee_per_person {
            if fee.amount == 0 || fee.amount > MAX_FEE {
                self.fail(
                    "smuggling.fee_per_person.amount",
                    format!("must be 1 to {MAX_FEE}"),
                );
            }
            if !super::is_money(&fee.currency) {
                self.fail(
                    "smuggling.fee_per_person.currency",
                    format!(
                        "{:?} is not an ISO 4217 currency code of money in upper case (e.g. \
                         \"USD\"; not a fund code, a precious metal or a unit of account such \
                         as XAU or XDR, nor XTS or XXX)",
                        fee.currency
                    ),
                );
            }
        }
        let fits = self.list_fits(
            "smuggling.fraudulent_documents",
            s.fraudulent_documents.len(),
            MAX_DOCUMENTS,
        );
        for (i, d) in s.fraudulent_documents.iter().enumerate().filter(|_| fits) {
            let field = format!("smuggling.fraudulent_documents[{i}]");
            self.required_enum::<pb::DocumentType>(
                &format!("{field}.document_type"),
                d.document_type,
            );
            self.required_enum::<pb::FraudKind>(&format!("{field}.fraud"), d.fraud);
            self.country(
                &format!("{field}.issuing_country"),
                &d.issuing_country,
                false,
            );
            if d.count == 0 {
                self.fail(format!("{field}.count"), "must be at least 1");
            }
        }
        if let Some(cj) = &s.criminal_justice
            && cj.persons_convicted > cj.persons_prosecuted
        {
            {
                self.fail(
                    "smuggling.criminal_justice.persons_convicted",
                    format!(
                        "{} is more than persons_prosecuted ({})",
                        cj.persons_convicted, cj.persons_prosecuted
                    ),
                );
            }
        }
    }

    fn maritime(&mut self, m: &pb::MaritimeMovement) {
        self.required_enum::<pb::MaritimeEvent>("maritime.event", m.event);
        self.required_enum::<pb::VesselType>("maritime.vessel_type", m.vessel_type);
        self.country("maritime.flag_state", &m.flag_state, false);
        if !m.imo_number.is_empty() && !valid_imo(&m.imo_number) {
            self.fail(
                "maritime.imo_number",
                format!(
                    "{:?} is not an IMO number: 7 digits with a valid check digit, without an \"IMO \" prefix",
                    m.imo_number
                ),
            );
        }
        let mmsi_ok = m.mmsi.len() == 9 && m.mmsi.bytes().all(|b| b.is_ascii_digit());
        if !m.mmsi.is_empty() && !mmsi_ok {
            self.fail(
                "maritime.mmsi",
                format!("{:?} is not an MMSI (9 digits)", m.mmsi),
            );
        }
        if m.persons_on_board > MAX_ON_BOARD {
            self.fail(
                "maritime.persons_on_board",
                format!("must be at most {MAX_ON_BOARD}"),
            );
        }
        self.text(
            "maritime.sar_region",
            &m.sar_region,
            TextKind::Short,
            MAX_SAR_REGION_CHARS,
        );
        self.country(
            "maritime.disembarkation_country",
            &m.disembarkation_country,
            false,
        );
        self.text(
            "maritime.disembarkation_port",
            &m.disembarkation_port,
            TextKind::Short,
            MAX_PLACE_CHARS,
        );
    }
}

/// An IMO ship number in its one spelling: 7 digits, the last a check digit (the sum of
/// the first six digits weighted 7, 6, 5, 4, 3, 2, modulo 10). No "IMO " prefix.
fn valid_imo(value: &str) -> bool {
    let digits = value.as_bytes();
    if digits.len() != 7 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits[..6]
        .iter()
        .zip((2..=7).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    sum % 10 == u32::from(digits[6] - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use time::Month;

    /// The last second of 2026-06-15, UTC: every time of that day is past.
    fn today() -> OffsetDateTime {
        Date::from_calendar_date(2026, Month::June, 15)
            .unwrap()
            .with_hms(23, 59, 59)
            .unwrap()
            .assume_utc()
    }

    /// A valid report of each category to break one rule at a time.
    fn valid(maritime: bool) -> pb::Report {
        let mut rng = sample::Rng::new(3);
        loop {
            let r = sample::report(&mut rng, "AUS");
            let is_maritime = matches!(r.details, Some(pb::report::Details::Maritime(_)));
            if is_maritime == maritime && r.incident_date.as_str() < "2026-01-01" {
                assert!(validate(r.clone(), today()).is_ok());
                return r;
            }
        }
    }

    fn smuggling(r: &mut pb::Report) -> &mut pb::SmugglingIncident {
        match r.details.as_mut() {
            Some(pb::report::Details::Smuggling(s)) => s,
            _ => unreachable!(),
        }
    }

    fn maritime(r: &mut pb::Report) -> &mut pb::MaritimeMovement {
        match r.details.as_mut() {
            Some(pb::report::Details::Maritime(m)) => m,
            _ => unreachable!(),
        }
    }

    fn persons(r: &mut pb::Report) -> &mut pb::Persons {
        r.persons.as_mut().unwrap()
    }

    type Breaker = fn(&mut pb::Report);

    #[test]
    #[allow(clippy::too_many_lines)] // one line per rule
    fn each_rule_names_the_field_it_broke() {
        let cases: Vec<(bool, Breaker, &str)> = vec![
            (false, |r| r.report_id = "not-a-uuid".into(), "report_id"),
            (false, |r| r.version = 0, "version"),
            (
                false,
                |r| r.reporting_state = "XXX".into(),
                "reporting_state",
            ),
            (
                false,
                |r| r.incident_date = "2026-13-01".into(),
                "incident_date",
            ),
            (
                false,
                |r| r.incident_date = "2026-06-16".into(),
                "incident_date",
            ),
            (
                false,
                |r| r.incident_date = "1989-12-31".into(),
                "incident_date",
            ),
            (false, |r| r.incident_time = "24:00".into(), "incident_time"),
            (false, |r| r.location = None, "location"),
            (
                false,
                |r| r.location.as_mut().unwrap().country = "ZZZ".into(),
                "location.country",
            ),
            (
                false,
                |r| r.location.as_mut().unwrap().place = "x".repeat(201),
                "location.place",
            ),
            (
                false,
                |r| {
                    r.location.as_mut().unwrap().point = Some(pb::GeoPoint {
                        latitude: 91.0,
                        longitude: 0.0,
                    });
                },
                "location.point.latitude",
            ),
            (
                false,
                |r| {
                    r.location.as_mut().unwrap().point = Some(pb::GeoPoint {
                        latitude: 0.0,
                        longitude: f64::NAN,
                    });
                },
                "location.point.longitude",
            ),
            (
                false,
                |r| r.location.as_mut().unwrap().sea_area = 55,
                "location.sea_area",
            ),
            (
                false,
                |r| r.route.as_mut().unwrap().origin = "aus".into(),
                "route.origin",
            ),
            (
                false,
                |r| r.route.as_mut().unwrap().transit = vec!["IDN".into(); 11],
                "route.transit",
            ),
            (
                false,
                |r| r.route.as_mut().unwrap().transit = vec!["IDN".into(), "IDN".into()],
                "route.transit[1]",
            ),
            (
                false,
                |r| {
                    r.sharing = Some(pb::Sharing {
                        scope: pb::SharingScope::ListedStates as i32,
                        states: vec!["IDN".into(), "THA".into(), "IDN".into()],
                    });
                },
                "sharing.states[2]",
            ),
            (
                false,
                |r| r.route.as_mut().unwrap().transit = vec!["QQQ".into()],
                "route.transit[0]",
            ),
            (false, |r| r.route = Some(pb::Route::default()), "route"),
            (false, |r| r.persons = None, "persons"),
            (false, |r| persons(r).total = 100_001, "persons.total"),
            (false, |r| persons(r).total = u32::MAX, "persons.total"),
            (
                false,
                |r| {
                    let p = persons(r);
                    p.by_nationality = vec![pb::NationalityCount {
                        nationality: "AFG".into(),
                        count: p.total + 1,
                    }];
                },
                "persons.by_nationality",
            ),
            (
                false,
                |r| {
                    persons(r).by_nationality = vec![
                        pb::NationalityCount {
                            nationality: "AFG".into(),
                            count: 1,
                        },
                        pb::NationalityCount {
                            nationality: "AFG".into(),
                            count: 0,
                        },
                    ];
                },
                "persons.by_nationality[1].nationality",
            ),
            (
                false,
                |r| {
                    persons(r).by_nationality = vec![pb::NationalityCount {
                        nationality: "AFG".into(),
                        count: 0,
                    }];
                },
                "persons.by_nationality[0].count",
            ),
            (
                false,
                |r| {
                    let p = persons(r);
                    p.minors = p.total + 1;
                },
                "persons.minors",
            ),
            (
                false,
                |r| {
                    let p = persons(r);
                    p.unaccompanied_minors = p.minors + 1;
                },
                "persons.unaccompanied_minors",
            ),
            (
                false,
                |r| {
                    let p = persons(r);
                    p.women = p.total + 1;
                },
                "persons.women",
            ),
            (
                false,
                |r| {
                    let p = persons(r);
                    p.deaths = p.total;
                    p.missing = 1;
                },
                "persons.deaths",
            ),
            (false, |r| r.narrative = "x".repeat(4001), "narrative"),
            (false, |r| r.narrative = "bell\u{7}".into(), "narrative"),
            (false, |r| r.sharing = None, "sharing"),
            (
                false,
                |r| {
                    r.sharing = Some(pb::Sharing {
                        scope: 0,
                        states: vec![],
                    });
                },
                "sharing.scope",
            ),
            (
                false,
                |r| {
                    r.sharing = Some(pb::Sharing {
                        scope: pb::SharingScope::ListedStates as i32,
                        states: vec![],
                    });
                },
                "sharing.states",
            ),
            (
                false,
                |r| {
                    r.sharing = Some(pb::Sharing {
                        scope: pb::SharingScope::AllContributors as i32,
                        states: vec!["IDN".into()],
                    });
                },
                "sharing.states",
            ),
            (
                false,
                |r| {
                    r.sharing = Some(pb::Sharing {
                        scope: pb::SharingScope::ListedStates as i32,
                        states: vec!["IDX".into()],
                    });
                },
                "sharing.states[0]",
            ),
            (false, |r| r.reliability = None, "reliability"),
            (
                false,
                |r| r.reliability.as_mut().unwrap().source = 0,
                "reliability.source",
            ),
            (
                false,
                |r| r.reliability.as_mut().unwrap().information = 9,
                "reliability.information",
            ),
            (false, |r| r.details = None, "details"),
            (
                false,
                |r| smuggling(r).modus_operandi = 0,
                "smuggling.modus_operandi",
            ),
            (
                false,
                |r| smuggling(r).transport = vec![2, 2],
                "smuggling.transport[1]",
            ),
            (
                false,
                |r| smuggling(r).transport = vec![2; 11],
                "smuggling.transport",
            ),
            (
                false,
                |r| smuggling(r).concealment = 42,
                "smuggling.concealment",
            ),
            (
                false,
                |r| {
                    let s = smuggling(r);
                    s.facilitators_detected = 1;
                    s.facilitators_arrested = 2;
                },
                "smuggling.facilitators_arrested",
            ),
            (
                false,
                |r| smuggling(r).facilitators_detected = 100_001,
                "smuggling.facilitators_detected",
            ),
            (
                false,
                |r| {
                    smuggling(r).fee_per_person = Some(pb::Money {
                        amount: 100,
                        currency: "XYZ".into(),
                    });
                },
                "smuggling.fee_per_person.currency",
            ),
            (
                false,
                |r| {
                    smuggling(r).fee_per_person = Some(pb::Money {
                        amount: 100,
                        currency: "XTS".into(),
                    });
                },
                "smuggling.fee_per_person.currency",
            ),
            (
                false,
                |r| {
                    smuggling(r).fee_per_person = Some(pb::Money {
                        amount: 0,
                        currency: "USD".into(),
                    });
                },
                "smuggling.fee_per_person.amount",
            ),
            (
                false,
                |r| {
                    smuggling(r).fraudulent_documents = vec![pb::FraudulentDocument {
                        document_type: 0,
                        issuing_country: String::new(),
                        fraud: 1,
                        count: 1,
                    }];
                },
                "smuggling.fraudulent_documents[0].document_type",
            ),
            (
                false,
                |r| {
                    smuggling(r).fraudulent_documents = vec![pb::FraudulentDocument {
                        document_type: 1,
                        issuing_country: "UKX".into(),
                        fraud: 1,
                        count: 1,
                    }];
                },
                "smuggling.fraudulent_documents[0].issuing_country",
            ),
            (
                false,
                |r| {
                    smuggling(r).fraudulent_documents = vec![pb::FraudulentDocument {
                        document_type: 1,
                        issuing_country: String::new(),
                        fraud: 1,
                        count: 0,
                    }];
                },
                "smuggling.fraudulent_documents[0].count",
            ),
            (
                false,
                |r| {
                    smuggling(r).criminal_justice = Some(pb::CriminalJustice {
                        investigation_opened: true,
                        persons_prosecuted: 1,
                        persons_convicted: 2,
                    });
                },
                "smuggling.criminal_justice.persons_convicted",
            ),
            (true, |r| maritime(r).event = 0, "maritime.event"),
            (
                true,
                |r| maritime(r).vessel_type = 0,
                "maritime.vessel_type",
            ),
            (
                true,
                |r| maritime(r).flag_state = "XX".into(),
                "maritime.flag_state",
            ),
            (
                true,
                |r| maritime(r).imo_number = "9074728".into(),
                "maritime.imo_number",
            ),
            (true, |r| maritime(r).mmsi = "12345".into(), "maritime.mmsi"),
            (
                true,
                |r| maritime(r).persons_on_board = 100_001,
                "maritime.persons_on_board",
            ),
            (
                true,
                |r| maritime(r).sar_region = "x".repeat(65),
                "maritime.sar_region",
            ),
            (
                true,
                |r| maritime(r).disembarkation_country = "ABC".into(),
                "maritime.disembarkation_country",
            ),
        ];
        for (i, (is_maritime, mut_fn, field)) in cases.into_iter().enumerate() {
            let mut report = valid(is_maritime);
            mut_fn(&mut report);
            let errors =
                validate(report, today()).expect_err(&format!("case {i} ({field}) passed"));
            assert!(
                errors.0.iter().any(|v| v.field == field),
                "case {i}: expected a violation on {field}, got {errors}"
            );
        }
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let mut report = valid(false);
        report.version = 0;
        report.reporting_state = "XXX".into();
        report.narrative = "x".repeat(5000);
        let errors = validate(report, today()).unwrap_err();
        let fields: Vec<&str> = errors.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["version", "reporting_state", "narrative"]);
    }

    #[test]
    fn a_valid_imo_number_passes() {
        let mut report = valid(true);
        maritime(&mut report).imo_number = "9074729".into();
        assert!(validate(report.clone(), today()).is_ok());
        maritime(&mut report).imo_number = "IMO 9074729".into();
        assert!(
            validate(report, today()).is_err(),
            "one spelling: no prefix"
        );
    }

    #[test]
    fn retractions_are_validated() {
        let ok = pb::Retraction {
            report_id: "5f0c3c4e-9a43-4d59-8a0e-1b2c3d4e5f60".into(),
            reporting_state: "AUS".into(),
            version: 2,
            reason: "duplicate".into(),
        };
        assert!(validate_retraction(&ok).is_ok());
        let bad = pb::Retraction { version: 1, ..ok };
        assert_eq!(validate_retraction(&bad).unwrap_err().0[0].field, "version");
    }

    #[test]
    fn an_incident_time_today_is_not_later_than_now() {
        let at = |hour, minute| {
            Date::from_calendar_date(2026, Month::June, 15)
                .unwrap()
                .with_hms(hour, minute, 0)
                .unwrap()
                .assume_utc()
        };
        let mut report = valid(false);
        report.incident_date = "2026-06-15".into();
        for (time, ok) in [
            ("09:00", true),
            ("09:32", true),
            ("09:33", false),
            ("23:59", false),
        ] {
            report.incident_time = time.into();
            let checked = validate(report.clone(), at(9, 27));
            assert_eq!(checked.is_ok(), ok, "{time}");
            if let Err(e) = checked {
                assert!(e.to_string().contains("in the future"), "{e}");
            }
        }
        // The day before, any time of day.
        report.incident_date = "2026-06-14".into();
        assert!(validate(report, at(0, 0)).is_ok());
    }

    #[test]
    fn imo_check_digit() {
        assert!(valid_imo("9074729"));
        assert!(!valid_imo("IMO 9074729"));
        assert!(!valid_imo("9074728"));
        assert!(!valid_imo("907472"));
    }

    #[test]
    fn dates() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
        assert!(parse_date("2024-2-01").is_none());
    }
}
