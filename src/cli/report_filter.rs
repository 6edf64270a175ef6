//! The filter flags every command that selects reports by what they say shares (`query`,
//! `watch` and `aggregate`): one flag name and one spelling per concept.

use clap::Args;
use tidemark::{country::CountryCode, pb};

/// Which reports, by their content.
#[derive(Args, Debug, Clone)]
pub struct ReportFilter {
    /// Only these reporting states (comma-separated ISO alpha-3).
    #[arg(long = "state", value_delimiter = ',', value_name = "ISO3")]
    states: Vec<CountryCode>,
    /// Only routes through any of these countries (origin, transit or destination;
    /// comma-separated ISO alpha-3).
    #[arg(
        long = "route-country",
        alias = "route",
        value_delimiter = ',',
        value_name = "ISO3"
    )]
    route: Vec<CountryCode>,
    /// Only reports with persons of any of these nationalities (comma-separated ISO
    /// alpha-3).
    #[arg(long = "nationality", value_delimiter = ',', value_name = "ISO3")]
    nationalities: Vec<CountryCode>,
    /// Only smuggling incidents of this modus operandi: land, sea, air, mixed.
    #[arg(long, value_parser = parse_modus, value_name = "MODUS")]
    modus_operandi: Option<i32>,
    /// Only maritime movements of this event: departure, detection, interception, rescue,
    /// distress, disembarkation, shipwreck.
    #[arg(long, value_parser = parse_event, value_name = "EVENT")]
    maritime_event: Option<i32>,
    /// Only maritime movements of this vessel type: fishing-boat, wooden-boat,
    /// rubber-dinghy, sailing-boat, speedboat, cargo-ship, other.
    #[arg(long, value_parser = parse_vessel, value_name = "TYPE")]
    vessel_type: Option<i32>,
    /// Only reports located inside MIN_LAT,MIN_LON,MAX_LAT,MAX_LON (degrees;
    /// negative south and west), comma-separated: `--bbox -10,110,0,125`.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        value_parser = degrees,
        value_name = "MIN_LAT,MIN_LON,MAX_LAT,MAX_LON"
    )]
    bbox: Vec<f64>,
}

impl ReportFilter {
    /// Sets these filters on a Query or Subscribe request.
    pub fn query(&self, request: &mut pb::QueryRequest) -> anyhow::Result<()> {
        request.reporting_states = codes(&self.states);
        request.route_countries = codes(&self.route);
        request.nationalities = codes(&self.nationalities);
        request.modus_operandi = self.modus_operandi.unwrap_or(0);
        request.maritime_event = self.maritime_event.unwrap_or(0);
        request.vessel_type = self.vessel_type.unwrap_or(0);
        request.bbox = bbox(&self.bbox)?;
        Ok(())
    }

    /// Sets these filters on an Aggregate request's filter.
    pub fn aggregate(&self, filter: &mut pb::AggregateFilter) -> anyhow::Result<()> {
        filter.reporting_states = codes(&self.states);
        filter.route_countries = codes(&self.route);
        filter.nationalities = codes(&self.nationalities);
        filter.modus_operandi = self.modus_operandi.unwrap_or(0);
        filter.maritime_event = self.maritime_event.unwrap_or(0);
        filter.vessel_type = self.vessel_type.unwrap_or(0);
        filter.bbox = bbox(&self.bbox)?;
        Ok(())
    }
}

fn codes(c: &[CountryCode]) -> Vec<String> {
    c.iter().map(ToString::to_string).collect()
}

/// `--bbox MIN_LAT,MIN_LON,MAX_LAT,MAX_LON` as the API's box.
fn bbox(values: &[f64]) -> anyhow::Result<Option<pb::BoundingBox>> {
    Ok(match values {
        [] => None,
        [a, b, c, d] => Some(pb::BoundingBox {
            min_latitude: *a,
            min_longitude: *b,
            max_latitude: *c,
            max_longitude: *d,
        }),
        _ => usage!("--bbox takes four numbers: MIN_LAT,MIN_LON,MAX_LAT,MAX_LON"),
    })
}

/// One edge of `--bbox`: a decimal number of degrees, `-10` or `110.5` (no sign but a
/// leading minus, no exponent, no spaces, no leading zeros: one spelling per value, as
/// JSON writes numbers, RFC 8259 §6).
fn degrees(text: &str) -> Result<f64, String> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = whole.len() > 1 && whole.starts_with('0');
    if !digits(whole) || !digits(fraction) || leading_zero {
        return Err(format!(
            "{text:?} is not a number of degrees (e.g. -10 or 110.5, no leading zeros); give \
             four, comma-separated, without spaces: MIN_LAT,MIN_LON,MAX_LAT,MAX_LON"
        ));
    }
    text.parse()
        .map_err(|e| format!("{text:?} is not a number of degrees: {e}"))
}

/// "rubber-dinghy" → the value of `VESSEL_TYPE_RUBBER_DINGHY`, through `from_name`, in
/// that one spelling (lower case, hyphens: not "RUBBER-DINGHY" or "rubber_dinghy"). A
/// refusal names the values there are, as `name_of` (the enum's name of a value) gives
/// them.
fn enum_arg(
    text: &str,
    prefix: &str,
    (from_name, name_of): (
        impl Fn(&str) -> Option<i32>,
        impl Fn(i32) -> Option<&'static str>,
    ),
) -> Result<i32, String> {
    let spelled = text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let name = format!("{prefix}{}", text.to_uppercase().replace('-', "_"));
    let value = from_name(&name).filter(|v| spelled && *v != 0);
    value.ok_or_else(|| {
        // Every value the enum defines (`…_OTHER` is 99).
        let known: Vec<String> = (1..=255)
            .filter_map(&name_of)
            .filter_map(|n| n.strip_prefix(prefix))
            .map(|n| n.to_lowercase().replace('_', "-"))
            .collect();
        format!("{text:?} is not one of: {}", known.join(", "))
    })
}

fn parse_modus(text: &str) -> Result<i32, String> {
    enum_arg(
        text,
        "MODUS_OPERANDI_",
        (
            |n| pb::ModusOperandi::from_str_name(n).map(|v| v as i32),
            |v| pb::ModusOperandi::try_from(v).ok().map(|v| v.as_str_name()),
        ),
    )
}

fn parse_event(text: &str) -> Result<i32, String> {
    enum_arg(
        text,
        "MARITIME_EVENT_",
        (
            |n| pb::MaritimeEvent::from_str_name(n).map(|v| v as i32),
            |v| pb::MaritimeEvent::try_from(v).ok().map(|v| v.as_str_name()),
        ),
    )
}

fn parse_vessel(text: &str) -> Result<i32, String> {
    enum_arg(
        text,
        "VESSEL_TYPE_",
        (
            |n| pb::VesselType::from_str_name(n).map(|v| v as i32),
            |v| pb::VesselType::try_from(v).ok().map(|v| v.as_str_name()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enum_flag_takes_one_spelling_and_a_refusal_lists_every_value() {
        assert_eq!(parse_vessel("other"), Ok(pb::VesselType::Other as i32));
        assert_eq!(
            parse_vessel("rubber-dinghy"),
            Ok(pb::VesselType::RubberDinghy as i32)
        );
        for wrong in ["FISHING-BOAT", "fishing_boat", "unspecified", ""] {
            let said = parse_vessel(wrong).unwrap_err();
            assert!(
                said.ends_with("speedboat, cargo-ship, other"),
                "{wrong}: {said}"
            );
        }
    }

    #[test]
    fn a_bbox_edge_is_a_decimal_number_of_degrees() {
        for (text, degrees_) in [
            ("-10", -10.0),
            ("110.5", 110.5),
            ("0", 0.0),
            ("-0.25", -0.25),
            ("0.5", 0.5),
            ("100", 100.0),
        ] {
            assert_eq!(degrees(text), Ok(degrees_), "{text}");
        }
        for wrong in [
            "", " -10", "+10", "1e3", "inf", "NaN", "10.", ".5", "--1", "1,5", "١٠", "010", "-020",
            "00", "00.5", "-00",
        ] {
            let said = degrees(wrong).unwrap_err();
            assert!(
                said.contains("is not a number of degrees"),
                "{wrong}: {said}"
            );
        }
    }
}
