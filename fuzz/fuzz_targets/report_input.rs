//! Report input as a submitting node sends it and as `import` reads it: the protobuf
//! payload of a DSSE envelope and the proto3 JSON form of a report or retraction, and
//! the identifiers and dates inside them. No input may panic; a valid report's summary
//! can be made; ids, dates, months, times and country codes have one accepted spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tidemark::{
    CountryCode, calendar, pb,
    report::{self, summarize},
};

fn today() -> time::Date {
    time::Date::from_calendar_date(2026, time::Month::December, 5).expect("a date")
}

fn check_report(r: pb::Report) {
    if let Ok(valid) = report::validate(r, today()) {
        let _ = (valid.id(), valid.state(), valid.version(), valid.category());
        let day = valid.incident_date().to_julian_day();
        let _ = summarize(valid.report(), valid.category(), day);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(r) = pb::Report::decode(rest) {
                check_report(r);
            }
            if let Ok(r) = pb::Retraction::decode(rest) {
                let _ = report::validate_retraction(&r);
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<pb::Report>(rest) {
                check_report(r);
            }
            if let Ok(r) = serde_json::from_slice::<pb::Retraction>(rest) {
                let _ = report::validate_retraction(&r);
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(id) = report::parse_report_id(text) {
                assert_eq!(id.hyphenated().to_string(), text);
            }
            if let Some(date) = calendar::parse_date(text) {
                assert_eq!(calendar::format_date(date), text);
            }
            if calendar::parse_month(text).is_some() {
                assert_eq!(text.len(), 7, "YYYY-MM: {text:?}");
            }
            if calendar::parse_time_of_day(text).is_some() {
                assert_eq!(text.len(), 5, "HH:MM: {text:?}");
            }
            let _ = calendar::parse_instant(text);
            if let Ok(code) = CountryCode::parse(text) {
                assert_eq!(code.as_str(), text);
            }
        }
    }
});
