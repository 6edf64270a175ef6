//! The flat CSV form of a report, for spreadsheets: one row per report, lists joined
//! with `;`, nationality counts as `AFG:12;IRN:3`, fraudulent documents as
//! `TYPE:FRAUD:ISSUER:COUNT` (`PASSPORT:FORGED:AFG:2`), enum values by their short name
//! (`SEA`, `RESCUE`, `ALL_CONTRIBUTORS`, …). Every field `import` reads is a column, so
//! exporting and importing again gives back the same report (the same signed bytes).
//!
//! Spreadsheet safety (OWASP "CSV Injection"): a text cell that a spreadsheet would run
//! as a formula — one starting with `=`, `+`, `-`, `@`, a tab or a carriage return, or
//! with `=`, `+`, `-` or `@` after leading white space (which a spreadsheet may trim),
//! unless it is a plain number — is written with a leading `'`, and so is a cell that
//! already starts with `'`; reading a row removes exactly that one `'`. See
//! [`safe_cell`] and [`restore_cell`].

use std::borrow::Cow;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use tidemark::pb;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsvRow {
    report_id: String,
    version: u32,
    reporting_state: String,
    category: String,
    incident_date: String,
    incident_time: String,
    location_country: String,
    place: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    sea_area: String,
    origin: String,
    transit: String,
    intended_destination: String,
    persons_total: u32,
    nationalities: String,
    minors: u32,
    unaccompanied_minors: u32,
    women: u32,
    deaths: u32,
    missing: u32,
    narrative: String,
    scope: String,
    scope_states: String,
    source_reliability: String,
    information_credibility: String,
    modus_operandi: String,
    transport: String,
    concealment: String,
    facilitators_detected: u32,
    facilitators_arrested: u32,
    fee_amount: Option<u64>,
    fee_currency: String,
    event: String,
    vessel_type: String,
    flag_state: String,
    imo_number: String,
    mmsi: String,
    persons_on_board: u32,
    sar_region: String,
    disembarkation_country: String,
    disembarkation_port: String,
    fraudulent_documents: String,
    investigation_opened: Option<bool>,
    persons_prosecuted: Option<u32>,
    persons_convicted: Option<u32>,
}

/// A whole number as export writes it: digits, without sign, spaces or leading zeros.
fn plain_whole(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// The columns holding a whole number, and those holding a decimal one (empty for none
/// where the column is optional).
const WHOLE_COLUMNS: [&str; 13] = [
    "version",
    "persons_total",
    "minors",
    "unaccompanied_minors",
    "women",
    "deaths",
    "missing",
    "facilitators_detected",
    "facilitators_arrested",
    "fee_amount",
    "persons_on_board",
    "persons_prosecuted",
    "persons_convicted",
];
const DECIMAL_COLUMNS: [&str; 2] = ["latitude", "longitude"];

/// The whole-number columns a row may leave empty (for none).
const OPTIONAL_WHOLE_COLUMNS: [&str; 3] = ["fee_amount", "persons_prosecuted", "persons_convicted"];

/// Why the cell of `column` is not a number as import reads one, if it is a number
/// column: whole numbers as digits (no sign, spaces or leading zeros), decimal ones in
/// the grammar of a JSON number (RFC 8259 §6: `-10.5`, `130`, `130.0`, `1e-3`; the
/// signed report holds the value, not the spelling); a count is 0, not empty, where there
/// is none.
pub fn misspelled_number(column: &str, cell: &str) -> Option<String> {
    if cell.is_empty() {
        return (WHOLE_COLUMNS.contains(&column) && !OPTIONAL_WHOLE_COLUMNS.contains(&column))
            .then(|| {
                format!(
                    "column {column} is empty: write 0 where there is nothing to count, as \
                     export does"
                )
            });
    }
    if WHOLE_COLUMNS.contains(&column) && !plain_whole(cell) {
        return Some(format!(
            "column {column}: {cell:?} is not a whole number written as digits (no sign, \
             spaces or leading zeros)"
        ));
    }
    let decimal = serde_json::from_str::<serde_json::Number>(cell).is_ok() && cell.trim() == cell;
    if DECIMAL_COLUMNS.contains(&column) && !decimal {
        return Some(format!(
            "column {column}: {cell:?} is not a decimal number written as JSON writes one \
             (RFC 8259 §6: -10.5, 130, 1e-3; no + sign, spaces, leading zeros, or a point \
             without a digit on each side)"
        ));
    }
    None
}

/// A sample report of AUS (from `seed`) as `query --csv` writes it: the header and the row.
#[cfg(test)]
pub fn sample_row(seed: u64) -> (csv::StringRecord, csv::StringRecord) {
    let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(seed), "AUS");
    let mut out = csv::Writer::from_writer(Vec::new());
    out.serialize(CsvRow::from_report(&report)).unwrap();
    let written = out.into_inner().unwrap();
    let mut back = csv::Reader::from_reader(written.as_slice());
    let headers = back.headers().unwrap().clone();
    (headers, back.records().next().unwrap().unwrap())
}

/// The columns of a report row, in the order `query --csv` writes them.
pub fn columns() -> Vec<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    // A row of defaults serialises (csv writes `None` as an empty cell).
    let _ = out.serialize(CsvRow::default());
    let written = out.into_inner().unwrap_or_default();
    let header = written.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(header)
        .trim_end_matches('\r')
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A cell as written to a CSV file: prefixed with `'` where a spreadsheet would otherwise
/// run it as a formula (or where it starts with `'` itself, so that reading is exact).
pub fn safe_cell(text: &str) -> Cow<'_, str> {
    let risky = match text.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r' | b'\'') => true,
        // Spreadsheets may trim leading white space before reading a formula.
        _ => starts_formula(text.trim_start()),
    };
    if risky {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The cell as it was before [`safe_cell`]: one leading `'` removed where `safe_cell`
/// would have added it, so that import is the exact inverse of export. A leading `'`
/// export would not write (`'SEA`, `'hello`) stays, and an enum or code cell holding it
/// is refused.
pub fn restore_cell(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if safe_cell(rest) == text => rest,
        _ => text,
    }
}

/// Whether `text` starts a formula: `=`, `@`, or `+`/`-` not starting a plain number.
fn starts_formula(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(b'=' | b'@') => true,
        Some(b'+' | b'-') => !is_number(text),
        _ => false,
    }
}

/// A plain decimal number (`-10.5`, `+3`, `1e3`): safe to leave as it is.
fn is_number(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && text.parse::<f64>().is_ok_and(f64::is_finite)
}

fn short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_owned()
}

fn list(items: &[String]) -> String {
    items.join(";")
}

/// The items of a list cell, as [`list`] writes them: joined by `;`, no spaces, none
/// empty (an empty cell is an empty list).
fn split(text: &str, column: &str) -> anyhow::Result<Vec<String>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .map(|item| {
            if item.is_empty() || item.trim() != item {
                bail!(
                    "column {column}: {text:?} is not a list as `query --csv` writes one \
                     (items joined by ';', without spaces or empty items)"
                );
            }
            Ok(item.to_owned())
        })
        .collect()
}

/// An enum's value of a name, and its name of a value (`from_str_name`, `as_str_name`).
type EnumNames = (fn(&str) -> Option<i32>, fn(i32) -> Option<&'static str>);

/// Reads an enum by its short name as `query --csv` writes it (`SEA`, `WOODEN_BOAT`):
/// one spelling, no other case or the full proto name; empty means unset (0).
fn parse_enum(
    value: &str,
    prefix: &str,
    column: &str,
    (from, name_of): EnumNames,
) -> anyhow::Result<i32> {
    if value.is_empty() {
        return Ok(0);
    }
    from(&format!("{prefix}{value}"))
        .filter(|v| *v != 0)
        .ok_or_else(|| {
            let known: Vec<String> = (1..128)
                .filter_map(name_of)
                .map(|n| short(n, prefix))
                .collect();
            anyhow!(
                "column {column}: {value:?} is not one of: {} (or empty)",
                known.join(", ")
            )
        })
}

macro_rules! enum_parser {
    ($t:ty) => {
        (
            |s: &str| <$t>::from_str_name(s).map(|v| v as i32),
            |v: i32| <$t>::try_from(v).ok().map(|e| e.as_str_name()),
        )
    };
}

macro_rules! enum_name {
    ($t:ty, $v:expr, $prefix:expr) => {
        <$t>::try_from($v)
            .ok()
            .filter(|_| $v != 0)
            .map(|e| short(e.as_str_name(), $prefix))
            .unwrap_or_default()
    };
}

impl CsvRow {
    pub fn from_report(r: &pb::Report) -> Self {
        let loc = r.location.clone().unwrap_or_default();
        let route = r.route.clone().unwrap_or_default();
        let p = r.persons.clone().unwrap_or_default();
        let sharing = r.sharing.clone().unwrap_or_default();
        let rel = r.reliability.unwrap_or_default();
        let mut row = Self {
            report_id: r.report_id.clone(),
            version: r.version,
            reporting_state: r.reporting_state.clone(),
            incident_date: r.incident_date.clone(),
            incident_time: r.incident_time.clone(),
            location_country: loc.country,
            place: loc.place,
            latitude: loc.point.map(|p| p.latitude),
            longitude: loc.point.map(|p| p.longitude),
            sea_area: enum_name!(pb::SeaArea, loc.sea_area, "SEA_AREA_"),
            origin: route.origin,
            transit: list(&route.transit),
            intended_destination: route.intended_destination,
            persons_total: p.total,
            nationalities: p
                .by_nationality
                .iter()
                .map(|n| format!("{}:{}", n.nationality, n.count))
                .collect::<Vec<_>>()
                .join(";"),
            minors: p.minors,
            unaccompanied_minors: p.unaccompanied_minors,
            women: p.women,
            deaths: p.deaths,
            missing: p.missing,
            narrative: r.narrative.clone(),
            scope: enum_name!(pb::SharingScope, sharing.scope, "SHARING_SCOPE_"),
            scope_states: list(&sharing.states),
            source_reliability: enum_name!(
                pb::SourceReliability,
                rel.source,
                "SOURCE_RELIABILITY_"
            ),
            information_credibility: enum_name!(
                pb::InformationCredibility,
                rel.information,
                "INFORMATION_CREDIBILITY_"
            ),
            ..Self::default()
        };
        match &r.details {
            Some(pb::report::Details::Smuggling(s)) => {
                "SMUGGLING_INCIDENT".clone_into(&mut row.category);
                row.modus_operandi =
                    enum_name!(pb::ModusOperandi, s.modus_operandi, "MODUS_OPERANDI_");
                row.transport = s
                    .transport
                    .iter()
                    .map(|t| enum_name!(pb::TransportMeans, *t, "TRANSPORT_MEANS_"))
                    .collect::<Vec<_>>()
                    .join(";");
                row.concealment = enum_name!(pb::Concealment, s.concealment, "CONCEALMENT_");
                row.facilitators_detected = s.facilitators_detected;
                row.facilitators_arrested = s.facilitators_arrested;
                if let Some(fee) = &s.fee_per_person {
                    row.fee_amount = Some(fee.amount);
                    row.fee_currency.clone_from(&fee.currency);
                }
                row.fraudulent_documents = document_list(&s.fraudulent_documents);
                if let Some(cj) = &s.criminal_justice {
                    row.investigation_opened = Some(cj.investigation_opened);
                    row.persons_prosecuted = Some(cj.persons_prosecuted);
                    row.persons_convicted = Some(cj.persons_convicted);
                }
            }
            Some(pb::report::Details::Maritime(m)) => {
                "MARITIME_MOVEMENT".clone_into(&mut row.category);
                row.event = enum_name!(pb::MaritimeEvent, m.event, "MARITIME_EVENT_");
                row.vessel_type = enum_name!(pb::VesselType, m.vessel_type, "VESSEL_TYPE_");
                row.flag_state.clone_from(&m.flag_state);
                row.imo_number.clone_from(&m.imo_number);
                row.mmsi.clone_from(&m.mmsi);
                row.persons_on_board = m.persons_on_board;
                row.sar_region.clone_from(&m.sar_region);
                row.disembarkation_country
                    .clone_from(&m.disembarkation_country);
                row.disembarkation_port.clone_from(&m.disembarkation_port);
            }
            None => {}
        }
        for cell in row.texts() {
            if let Cow::Owned(safe) = safe_cell(cell) {
                *cell = safe;
            }
        }
        row
    }

    /// Every text column, for [`safe_cell`] on writing and [`restore_cell`] on reading.
    fn texts(&mut self) -> [&mut String; 30] {
        [
            &mut self.report_id,
            &mut self.reporting_state,
            &mut self.category,
            &mut self.incident_date,
            &mut self.incident_time,
            &mut self.location_country,
            &mut self.place,
            &mut self.sea_area,
            &mut self.origin,
            &mut self.transit,
            &mut self.intended_destination,
            &mut self.nationalities,
            &mut self.narrative,
            &mut self.scope,
            &mut self.scope_states,
            &mut self.source_reliability,
            &mut self.information_credibility,
            &mut self.modus_operandi,
            &mut self.transport,
            &mut self.concealment,
            &mut self.fee_currency,
            &mut self.event,
            &mut self.vessel_type,
            &mut self.flag_state,
            &mut self.imo_number,
            &mut self.mmsi,
            &mut self.sar_region,
            &mut self.disembarkation_country,
            &mut self.disembarkation_port,
            &mut self.fraudulent_documents,
        ]
    }

    /// A row holds only its own category's cells, as export writes it: the other
    /// category's columns empty (0 for its counts). A cell there would be lost.
    fn only_its_category(&self) -> anyhow::Result<()> {
        let smuggling = [
            ("modus_operandi", self.modus_operandi.is_empty()),
            ("transport", self.transport.is_empty()),
            ("concealment", self.concealment.is_empty()),
            ("facilitators_detected", self.facilitators_detected == 0),
            ("facilitators_arrested", self.facilitators_arrested == 0),
            ("fee_amount", self.fee_amount.is_none()),
            ("fee_currency", self.fee_currency.is_empty()),
            ("fraudulent_documents", self.fraudulent_documents.is_empty()),
            ("investigation_opened", self.investigation_opened.is_none()),
            ("persons_prosecuted", self.persons_prosecuted.is_none()),
            ("persons_convicted", self.persons_convicted.is_none()),
        ];
        let maritime = [
            ("event", self.event.is_empty()),
            ("vessel_type", self.vessel_type.is_empty()),
            ("flag_state", self.flag_state.is_empty()),
            ("imo_number", self.imo_number.is_empty()),
            ("mmsi", self.mmsi.is_empty()),
            ("persons_on_board", self.persons_on_board == 0),
            ("sar_region", self.sar_region.is_empty()),
            (
                "disembarkation_country",
                self.disembarkation_country.is_empty(),
            ),
            ("disembarkation_port", self.disembarkation_port.is_empty()),
        ];
        let (others, kind) = match self.category.as_str() {
            "SMUGGLING_INCIDENT" => (&maritime[..], "maritime"),
            "MARITIME_MOVEMENT" => (&smuggling[..], "smuggling"),
            _ => return Ok(()),
        };
        match others.iter().find(|(_, empty)| !empty) {
            Some((column, _)) => bail!(
                "column {column}: a {} row leaves the {kind} columns empty (0 for counts), as \
                 export writes it; what is there would be lost",
                self.category
            ),
            None => Ok(()),
        }
    }

    // Long because the report model is: one line per column.
    #[allow(clippy::too_many_lines)]
    pub fn into_report(mut self) -> anyhow::Result<pb::Report> {
        for cell in self.texts() {
            if cell.starts_with('\'') {
                *cell = restore_cell(cell).to_owned();
            }
        }
        let by_nationality = split(&self.nationalities, "nationalities")?
            .into_iter()
            .map(|pair| {
                let (code, count) = pair
                    .split_once(':')
                    .ok_or_else(|| anyhow!("column nationalities: {pair:?} is not CODE:COUNT"))?;
                Ok(pb::NationalityCount {
                    nationality: code.to_owned(),
                    count: plain_whole(count)
                        .then(|| count.parse().ok())
                        .flatten()
                        .ok_or_else(|| {
                            anyhow!(
                                "column nationalities: the count in {pair:?} is not a whole \
                                 number written as digits"
                            )
                        })?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let point = match (self.latitude, self.longitude) {
            (Some(latitude), Some(longitude)) => Some(pb::GeoPoint {
                latitude,
                longitude,
            }),
            (None, None) => None,
            _ => bail!("columns latitude and longitude: give both or neither"),
        };
        self.only_its_category()?;
        let details = match self.category.as_str() {
            "SMUGGLING_INCIDENT" => pb::report::Details::Smuggling(pb::SmugglingIncident {
                modus_operandi: parse_enum(
                    &self.modus_operandi,
                    "MODUS_OPERANDI_",
                    "modus_operandi",
                    enum_parser!(pb::ModusOperandi),
                )?,
                transport: split(&self.transport, "transport")?
                    .iter()
                    .map(|t| {
                        parse_enum(
                            t,
                            "TRANSPORT_MEANS_",
                            "transport",
                            enum_parser!(pb::TransportMeans),
                        )
                    })
                    .collect::<anyhow::Result<_>>()?,
                concealment: parse_enum(
                    &self.concealment,
                    "CONCEALMENT_",
                    "concealment",
                    enum_parser!(pb::Concealment),
                )?,
                facilitators_detected: self.facilitators_detected,
                facilitators_arrested: self.facilitators_arrested,
                fee_per_person: self.fee_amount.map(|amount| pb::Money {
                    amount,
                    currency: self.fee_currency.clone(),
                }),
                fraudulent_documents: documents(&self.fraudulent_documents)?,
                criminal_justice: match (
                    self.investigation_opened,
                    self.persons_prosecuted,
                    self.persons_convicted,
                ) {
                    (None, None, None) => None,
                    (
                        Some(investigation_opened),
                        Some(persons_prosecuted),
                        Some(persons_convicted),
                    ) => Some(pb::CriminalJustice {
                        investigation_opened,
                        persons_prosecuted,
                        persons_convicted,
                    }),
                    _ => bail!(
                        "columns investigation_opened, persons_prosecuted and persons_convicted: \
                         give all three (criminal justice) or none"
                    ),
                },
            }),
            "MARITIME_MOVEMENT" => pb::report::Details::Maritime(pb::MaritimeMovement {
                event: parse_enum(
                    &self.event,
                    "MARITIME_EVENT_",
                    "event",
                    enum_parser!(pb::MaritimeEvent),
                )?,
                vessel_type: parse_enum(
                    &self.vessel_type,
                    "VESSEL_TYPE_",
                    "vessel_type",
                    enum_parser!(pb::VesselType),
                )?,
                flag_state: self.flag_state,
                imo_number: self.imo_number,
                mmsi: self.mmsi,
                persons_on_board: self.persons_on_board,
                sar_region: self.sar_region,
                disembarkation_country: self.disembarkation_country,
                disembarkation_port: self.disembarkation_port,
            }),
            other => bail!(
                "column category: {other:?} is neither SMUGGLING_INCIDENT nor MARITIME_MOVEMENT"
            ),
        };
        let transit = split(&self.transit, "transit")?;
        Ok(pb::Report {
            report_id: self.report_id,
            version: self.version,
            reporting_state: self.reporting_state,
            incident_date: self.incident_date,
            incident_time: self.incident_time,
            location: Some(pb::Location {
                country: self.location_country,
                place: self.place,
                point,
                sea_area: parse_enum(
                    &self.sea_area,
                    "SEA_AREA_",
                    "sea_area",
                    enum_parser!(pb::SeaArea),
                )?,
            }),
            // An empty route is no route.
            route: (!(self.origin.is_empty()
                && transit.is_empty()
                && self.intended_destination.is_empty()))
            .then_some(pb::Route {
                origin: self.origin,
                transit,
                intended_destination: self.intended_destination,
            }),
            persons: Some(pb::Persons {
                total: self.persons_total,
                by_nationality,
                minors: self.minors,
                unaccompanied_minors: self.unaccompanied_minors,
                women: self.women,
                deaths: self.deaths,
                missing: self.missing,
            }),
            narrative: self.narrative,
            sharing: Some(pb::Sharing {
                scope: parse_enum(
                    &self.scope,
                    "SHARING_SCOPE_",
                    "scope",
                    enum_parser!(pb::SharingScope),
                )?,
                states: split(&self.scope_states, "scope_states")?,
            }),
            reliability: Some(pb::Reliability {
                source: parse_enum(
                    &self.source_reliability,
                    "SOURCE_RELIABILITY_",
                    "source_reliability",
                    enum_parser!(pb::SourceReliability),
                )?,
                information: parse_enum(
                    &self.information_credibility,
                    "INFORMATION_CREDIBILITY_",
                    "information_credibility",
                    enum_parser!(pb::InformationCredibility),
                )?,
            }),
            details: Some(details),
        })
    }
}

/// Fraudulent documents as `TYPE:FRAUD:ISSUER:COUNT;…`.
fn document_list(documents: &[pb::FraudulentDocument]) -> String {
    documents
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}:{}",
                enum_name!(pb::DocumentType, d.document_type, "DOCUMENT_TYPE_"),
                enum_name!(pb::FraudKind, d.fraud, "FRAUD_KIND_"),
                d.issuing_country,
                d.count
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Fraudulent documents from `TYPE:FRAUD:ISSUER:COUNT;…`.
fn documents(column: &str) -> anyhow::Result<Vec<pb::FraudulentDocument>> {
    split(column, "fraudulent_documents")?
        .iter()
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            let [document_type, fraud, issuing_country, count] = parts.as_slice() else {
                bail!("column fraudulent_documents: {item:?} is not TYPE:FRAUD:ISSUER:COUNT");
            };
            Ok(pb::FraudulentDocument {
                document_type: parse_enum(
                    document_type,
                    "DOCUMENT_TYPE_",
                    "fraudulent_documents",
                    enum_parser!(pb::DocumentType),
                )?,
                issuing_country: (*issuing_country).to_owned(),
                fraud: parse_enum(
                    fraud,
                    "FRAUD_KIND_",
                    "fraudulent_documents",
                    enum_parser!(pb::FraudKind),
                )?,
                count: plain_whole(count)
                    .then(|| count.parse().ok())
                    .flatten()
                    .ok_or_else(|| {
                        anyhow!(
                            "column fraudulent_documents: the count in {item:?} is not a \
                             whole number written as digits"
                        )
                    })?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tidemark::sample;

    use super::*;

    /// A change to a row, and what it is.
    type Alteration = (&'static str, fn(&mut CsvRow));

    #[test]
    fn enums_and_lists_have_the_one_spelling_export_writes() {
        let mut rng = sample::Rng::new(12);
        let report = std::iter::repeat_with(|| sample::report(&mut rng, "AUS"))
            .find(|r| {
                matches!(r.details, Some(pb::report::Details::Smuggling(_)))
                    && r.persons
                        .as_ref()
                        .is_some_and(|p| !p.by_nationality.is_empty())
            })
            .unwrap();
        let row = CsvRow::from_report(&report);
        assert!(row.clone().into_report().is_ok());
        let alterations: [Alteration; 13] = [
            ("lower case", |r| {
                r.modus_operandi = r.modus_operandi.to_lowercase();
            }),
            ("full name", |r| {
                r.modus_operandi = format!("MODUS_OPERANDI_{}", r.modus_operandi);
            }),
            ("unset by name", |r| {
                r.modus_operandi = "UNSPECIFIED".into();
            }),
            ("short category", |r| {
                r.category = "SMUGGLING".into();
            }),
            ("lower-case category", |r| {
                r.category = "smuggling_incident".into();
            }),
            ("trailing separator", |r| r.nationalities.push(';')),
            ("a count with a sign", |r| {
                r.nationalities = r.nationalities.replacen(':', ":+", 1);
            }),
            ("a count with a leading zero", |r| {
                r.nationalities = r.nationalities.replacen(':', ":0", 1);
            }),
            ("a quote before an enum", |r| {
                r.modus_operandi = format!("'{}", r.modus_operandi);
            }),
            ("a maritime cell", |r| r.persons_on_board = 5),
            ("a maritime event", |r| r.event = "RESCUE".into()),
            ("part of criminal justice", |r| {
                r.investigation_opened = Some(true);
                r.persons_prosecuted = None;
            }),
            ("space in a list", |r| {
                r.nationalities = format!(" {}", r.nationalities);
            }),
        ];
        for (what, alter) in alterations {
            let mut altered = row.clone();
            alter(&mut altered);
            assert!(altered.into_report().is_err(), "{what} was accepted");
        }
    }

    /// The number columns [`misspelled_number`] checks are exactly the row's number
    /// columns: text in any other column reads, in these it does not.
    #[test]
    fn the_number_columns_are_the_rows_number_columns() {
        let (headers, row) = sample_row(13);
        for (i, column) in headers.iter().enumerate() {
            let altered: csv::StringRecord = row
                .iter()
                .enumerate()
                .map(|(j, cell)| if i == j { "x" } else { cell })
                .collect();
            let reads = altered.deserialize::<CsvRow>(Some(&headers)).is_ok();
            let number = WHOLE_COLUMNS.contains(&column) || DECIMAL_COLUMNS.contains(&column);
            assert_eq!(
                reads,
                !number && column != "investigation_opened",
                "{column}"
            );
        }
    }

    #[test]
    fn every_sample_report_survives_export_and_import() {
        let mut rng = sample::Rng::new(11);
        for _ in 0..300 {
            let mut report = sample::report(&mut rng, "AUS");
            report.narrative = "=HYPERLINK(\"http://x\")\n-- and '+more".to_owned();
            let mut out = csv::Writer::from_writer(Vec::new());
            out.serialize(CsvRow::from_report(&report)).unwrap();
            let bytes = out.into_inner().unwrap();
            let mut back = csv::Reader::from_reader(bytes.as_slice());
            let row: CsvRow = back.deserialize().next().unwrap().unwrap();
            assert_eq!(row.into_report().unwrap(), report);
        }
    }

    proptest! {
        /// No written cell starts a formula, and reading gives back the exact text.
        #[test]
        fn cells_are_safe_and_exact(text in "[=+@'\\-\t\r\n\u{3000}0-9a-z .]{0,8}") {
            let safe = safe_cell(&text);
            let first = safe.chars().next();
            // Also after leading white space, which a spreadsheet may trim.
            let trimmed = safe.trim_start();
            let formula = matches!(first, Some('=' | '@' | '\t' | '\r'))
                || matches!(trimmed.chars().next(), Some('=' | '@'))
                || (matches!(trimmed.chars().next(), Some('+' | '-')) && !is_number(trimmed));
            prop_assert!(!formula, "{:?} -> {:?}", text, safe);
            prop_assert_eq!(restore_cell(&safe), text.as_str());
        }

        /// Only a `'` export would have written is removed: import is export's inverse.
        #[test]
        fn only_the_quote_export_writes_is_removed(text in "[=+@'\\-\t\r\u{3000}0-9a-zA-Z .]{0,8}") {
            let restored = restore_cell(&text);
            prop_assert!(restored == text || safe_cell(restored) == text, "{:?}", text);
        }
    }
}
