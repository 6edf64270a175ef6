//! The facts of a report version that queries filter on and aggregates add up: its
//! [`ReportSummary`] (with [`ReportFacts`]), taken once when the version is accepted and
//! kept in the store's report head, so that reads and counters never decode envelopes.

use prost::Message;

use super::Category;
use crate::{envelope::REPORT_PAYLOAD_TYPE, pb};

/// What queries filter on, taken from the latest report version.
#[derive(Clone, PartialEq, Message)]
pub struct ReportSummary {
    /// `tidemark.v1.Category`.
    #[prost(int32, tag = "1")]
    pub category: i32,
    /// Incident date as a Julian day number.
    #[prost(int32, tag = "2")]
    pub incident_day: i32,
    /// `tidemark.v1.SharingScope`.
    #[prost(int32, tag = "3")]
    pub scope: i32,
    /// States of a listed-states scope.
    #[prost(string, repeated, tag = "4")]
    pub listed_states: Vec<String>,
    /// Origin, transit and destination countries.
    #[prost(string, repeated, tag = "5")]
    pub route_countries: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    /// Nationalities of the persons, in report order.
    pub nationalities: Vec<String>,
    #[prost(int32, tag = "7")]
    /// `tidemark.v1.ModusOperandi` (smuggling incidents).
    pub modus_operandi: i32,
    #[prost(int32, tag = "8")]
    /// `tidemark.v1.MaritimeEvent` (maritime movements).
    pub maritime_event: i32,
    #[prost(int32, tag = "9")]
    /// `tidemark.v1.VesselType` (maritime movements).
    pub vessel_type: i32,
    #[prost(bool, tag = "10")]
    /// Whether the report gives a point.
    pub has_point: bool,
    #[prost(double, tag = "11")]
    /// WGS84 latitude of the point, degrees.
    pub latitude: f64,
    #[prost(double, tag = "12")]
    /// WGS84 longitude of the point, degrees.
    pub longitude: f64,
    /// What aggregates group by and add up (see `crate::analytics`).
    #[prost(message, optional, tag = "13")]
    pub facts: Option<ReportFacts>,
}

/// The facts of a report version that aggregates group by and add up.
#[derive(Clone, PartialEq, Message)]
pub struct ReportFacts {
    #[prost(string, tag = "1")]
    /// Country of origin (ISO 3166-1 alpha-3), or empty.
    pub origin: String,
    #[prost(string, repeated, tag = "2")]
    /// Transit countries, sorted, without repeats.
    pub transit: Vec<String>,
    #[prost(string, tag = "3")]
    /// Intended destination, or empty.
    pub destination: String,
    #[prost(string, tag = "4")]
    /// Country of the incident, or empty.
    pub location_country: String,
    /// `tidemark.v1.SeaArea`.
    #[prost(int32, tag = "5")]
    pub sea_area: i32,
    #[prost(uint32, tag = "6")]
    /// Persons involved.
    pub persons: u32,
    /// Persons per nationality, parallel to `ReportSummary::nationalities`.
    #[prost(uint32, repeated, tag = "7")]
    pub nationality_counts: Vec<u32>,
    #[prost(uint32, tag = "8")]
    /// Deaths.
    pub deaths: u32,
    #[prost(uint32, tag = "9")]
    /// Missing persons.
    pub missing: u32,
    #[prost(uint32, tag = "10")]
    /// Minors.
    pub minors: u32,
    #[prost(uint32, tag = "11")]
    /// Unaccompanied minors.
    pub unaccompanied_minors: u32,
    #[prost(uint32, tag = "12")]
    /// Facilitators arrested.
    pub facilitators_arrested: u32,
    /// Fee per person; `fee_currency` empty when none is stated.
    #[prost(uint64, tag = "13")]
    pub fee_amount: u64,
    #[prost(string, tag = "14")]
    /// ISO 4217 currency of the fee, or empty.
    pub fee_currency: String,
}

/// The facts of a report that queries filter on and aggregates add up.
pub fn summarize(r: &pb::Report, category: Category, incident_day: i32) -> ReportSummary {
    let mut route_countries = Vec::new();
    if let Some(route) = &r.route {
        for c in std::iter::once(&route.origin)
            .chain(&route.transit)
            .chain(std::iter::once(&route.intended_destination))
        {
            if !c.is_empty() && !route_countries.contains(c) {
                route_countries.push(c.clone());
            }
        }
    }
    let (modus_operandi, maritime_event, vessel_type) = match &r.details {
        Some(pb::report::Details::Smuggling(s)) => (s.modus_operandi, 0, 0),
        Some(pb::report::Details::Maritime(m)) => (0, m.event, m.vessel_type),
        None => (0, 0, 0),
    };
    let location = r.location.clone().unwrap_or_default();
    let point = location.point;
    let sharing = r.sharing.clone().unwrap_or_default();
    let persons = r.persons.clone().unwrap_or_default();
    let route = r.route.clone().unwrap_or_default();
    let mut transit = route.transit.clone();
    transit.sort();
    transit.dedup();
    let (facilitators_arrested, fee) = match &r.details {
        Some(pb::report::Details::Smuggling(s)) => {
            (s.facilitators_arrested, s.fee_per_person.clone())
        }
        _ => (0, None),
    };
    let fee = fee.unwrap_or_default();
    ReportSummary {
        category: category.to_pb() as i32,
        incident_day,
        scope: sharing.scope,
        listed_states: sharing.states,
        route_countries,
        nationalities: persons
            .by_nationality
            .iter()
            .map(|n| n.nationality.clone())
            .collect(),
        modus_operandi,
        maritime_event,
        vessel_type,
        has_point: point.is_some(),
        latitude: point.map_or(0.0, |p| p.latitude),
        longitude: point.map_or(0.0, |p| p.longitude),
        facts: Some(ReportFacts {
            origin: route.origin,
            transit,
            destination: route.intended_destination,
            location_country: location.country,
            sea_area: location.sea_area,
            persons: persons.total,
            nationality_counts: persons.by_nationality.iter().map(|n| n.count).collect(),
            deaths: persons.deaths,
            missing: persons.missing,
            minors: persons.minors,
            unaccompanied_minors: persons.unaccompanied_minors,
            facilitators_arrested,
            fee_amount: fee.amount,
            fee_currency: fee.currency,
        }),
    }
}

/// The summary of a stored report envelope, for rebuilding summaries written by an older
/// version; `None` if the envelope is not a readable report.
pub fn summarize_stored(envelope: &[u8]) -> Option<ReportSummary> {
    let envelope = pb::Envelope::decode(envelope).ok()?;
    if envelope.payload_type != REPORT_PAYLOAD_TYPE {
        return None;
    }
    let r = pb::Report::decode(envelope.payload.as_slice()).ok()?;
    let category = match r.details {
        Some(pb::report::Details::Smuggling(_)) => Category::SmugglingIncident,
        Some(pb::report::Details::Maritime(_)) => Category::MaritimeMovement,
        None => return None,
    };
    let day = super::parse_date(&r.incident_date)?.to_julian_day();
    Some(summarize(&r, category, day))
}
