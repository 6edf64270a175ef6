//! Incident reports: the validated domain form of a `tidemark.v1.Report`.
//!
//! A [`ValidReport`] (or [`ValidRetraction`]) can only be made by [`validate`] (or
//! [`validate_retraction`]), which checks every rule of `proto/tidemark/v1/report.proto`
//! and reports every broken one at once, by field path.

mod summary;
pub mod text;
mod validate;

use std::fmt;

use time::Date;
use uuid::Uuid;

pub(crate) use self::validate::{MAX_NATIONALITIES, MAX_TRANSIT};
pub use self::{
    summary::{ReportFacts, ReportSummary, summarize, summarize_stored},
    validate::{validate, validate_retraction},
};
pub use crate::calendar::parse_date;
use crate::{country::CountryCode, pb};

/// Whether `code` is the ISO 4217 code of money, in upper case: a currency, not a fund
/// code (`BOV`, `USN`), a precious metal (`XAU`, `XAG`, `XPT`, `XPD`), a unit of account
/// (`XDR`, `XBA`…`XBD`, `XSU`, `XUA`), the testing code `XTS` or "no currency" `XXX`
/// (the `iso_currency` crate's `is_fund` and `is_special` flags). `XOF`, `XAF`, `XCD`
/// and `XPF` are money.
pub fn is_money(code: &str) -> bool {
    let upper = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
    upper
        && iso_currency::Currency::from_code(code)
            .is_some_and(|c| !c.is_fund() && !c.is_special() && !matches!(code, "XTS" | "XXX"))
}

/// Reads a report id in its one accepted spelling: a lower-case, hyphenated UUID
/// (RFC 9562 §4, `5f0c3c4e-9a43-4d59-8a0e-1b2c3d4e5f60`), not the nil UUID. Braces,
/// `urn:uuid:`, upper case and the 32-digit form are refused, so that every version of a
/// report, signed by its owner, carries the same id.
pub fn parse_report_id(text: &str) -> Result<Uuid, String> {
    let example = "e.g. \"5f0c3c4e-9a43-4d59-8a0e-1b2c3d4e5f60\"";
    let id = Uuid::try_parse(text).map_err(|_| format!("{text:?} is not a UUID ({example})"))?;
    if id.is_nil() {
        return Err(format!("the nil UUID is not a report id ({example})"));
    }
    let canonical = id.hyphenated().to_string();
    if text != canonical {
        return Err(format!(
            "{text:?} is not in the one accepted form: lower-case and hyphenated, {canonical:?}"
        ));
    }
    Ok(id)
}

/// The two report categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// An incident of migrant smuggling.
    SmugglingIncident,
    /// An irregular maritime movement.
    MaritimeMovement,
}

impl Category {
    /// Every category, in the API's order: the one list the rest of the code iterates.
    pub const ALL: [Category; 2] = [Self::SmugglingIncident, Self::MaritimeMovement];

    /// `smuggling-incident` or `maritime-movement`.
    pub fn label(self) -> &'static str {
        match self {
            Self::SmugglingIncident => "smuggling-incident",
            Self::MaritimeMovement => "maritime-movement",
        }
    }

    /// `smuggling incidents` or `maritime movements`, for sentences.
    pub fn plural(self) -> &'static str {
        match self {
            Self::SmugglingIncident => "smuggling incidents",
            Self::MaritimeMovement => "maritime movements",
        }
    }

    /// The wire value.
    pub fn to_pb(self) -> pb::Category {
        match self {
            Self::SmugglingIncident => pb::Category::SmugglingIncident,
            Self::MaritimeMovement => pb::Category::MaritimeMovement,
        }
    }
}

/// A report that passed every validation rule.
#[derive(Debug, Clone)]
pub struct ValidReport {
    report: pb::Report,
    id: Uuid,
    state: CountryCode,
    category: Category,
    incident_date: Date,
}

impl ValidReport {
    /// The report as submitted.
    pub fn report(&self) -> &pb::Report {
        &self.report
    }

    /// Its id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The reporting state.
    pub fn state(&self) -> CountryCode {
        self.state
    }

    /// Its version (1, 2, …).
    pub fn version(&self) -> u32 {
        self.report.version
    }

    /// Its category.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The incident date.
    pub fn incident_date(&self) -> Date {
        self.incident_date
    }
}

/// A retraction that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRetraction {
    id: Uuid,
    state: CountryCode,
    version: u32,
}

impl ValidRetraction {
    /// The retracted report's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The reporting state.
    pub fn state(&self) -> CountryCode {
        self.state
    }

    /// The retraction's version (the report's latest + 1).
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// One broken rule: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path (`persons.total`, `route.transit[1]`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Every broken rule of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldViolation>);

/// Violations named in the one-line message; all are in the list (a BadRequest detail).
const VIOLATIONS_IN_MESSAGE: usize = 3;

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the report is invalid: ")?;
        for (i, v) in self.0.iter().take(VIOLATIONS_IN_MESSAGE).enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        if self.0.len() > VIOLATIONS_IN_MESSAGE {
            write!(
                f,
                "; and {} more (every one is in the error's BadRequest details)",
                self.0.len() - VIOLATIONS_IN_MESSAGE
            )?;
        }
        Ok(())
    }
}

/// The first of a read filter's enum fields (modus operandi, maritime event, vessel type,
/// by their proto names) whose value its enum does not define: a filter on it would match
/// nothing, so Query, Subscribe and Aggregate refuse it naming the field.
pub(crate) fn unknown_filter_enum(
    modus_operandi: i32,
    maritime_event: i32,
    vessel_type: i32,
) -> Option<&'static str> {
    [
        (
            "modus_operandi",
            pb::ModusOperandi::try_from(modus_operandi).is_ok(),
        ),
        (
            "maritime_event",
            pb::MaritimeEvent::try_from(maritime_event).is_ok(),
        ),
        ("vessel_type", pb::VesselType::try_from(vessel_type).is_ok()),
    ]
    .into_iter()
    .find_map(|(field, known)| (!known).then_some(field))
}

/// A read filter's fields that only one category's reports have, by their proto names,
/// each with that category: modus operandi (smuggling incidents), maritime event and
/// vessel type (maritime movements). Only the fields set (non-zero) are listed: a filter
/// on one of them matches no report of the other category.
pub(crate) fn filters_of_one_category(
    modus_operandi: i32,
    maritime_event: i32,
    vessel_type: i32,
) -> Vec<(&'static str, Category)> {
    [
        (
            "modus_operandi",
            modus_operandi,
            Category::SmugglingIncident,
        ),
        ("maritime_event", maritime_event, Category::MaritimeMovement),
        ("vessel_type", vessel_type, Category::MaritimeMovement),
    ]
    .into_iter()
    .filter(|(_, value, _)| *value != 0)
    .map(|(field, _, category)| (field, category))
    .collect()
}

/// `text` cut to at most `max` characters, marked with `…` where it was cut.
pub fn shorten(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::is_money;

    #[test]
    fn money_is_a_currency_not_a_fund_metal_or_unit_of_account() {
        for code in ["USD", "EUR", "IDR", "XOF", "XAF", "XCD", "XPF", "VED"] {
            assert!(is_money(code), "{code}");
        }
        for code in [
            "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBD", "XSU", "XUA", "XTS", "XXX", "BOV",
            "USN", "usd", "US", "ZZZ",
        ] {
            assert!(!is_money(code), "{code}");
        }
    }
}
