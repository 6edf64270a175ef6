//! Dates and times in one spelling each, wherever they are read: reports, query and
//! aggregate filters, command-line flags.
//!
//! - a date is an RFC 3339 `full-date` (§5.6): `YYYY-MM-DD`, four-digit year, two-digit
//!   month and day, no sign, no other separator (`2024-03-09`);
//! - a month is the same without the day: `YYYY-MM` (`2024-03`);
//! - a time of day is an RFC 3339 `partial-time` cut to the minute: `HH:MM`, 24-hour,
//!   two digits each (`07:05`), UTC.
//!
//! Parsing goes through the `time` crate's format descriptions, and a value is accepted
//! only if formatting what was parsed gives back exactly the same text, so every date
//! and time has one canonical form.

use time::{
    Date, Time,
    format_description::{BorrowedFormatItem, FormatItem},
    macros::format_description,
};

const DATE: &[BorrowedFormatItem<'_>] =
    format_description!("[year repr:full sign:automatic]-[month]-[day]");
const MONTH: &[FormatItem<'_>] = format_description!("[year repr:full sign:automatic]-[month]");
const TIME_OF_DAY: &[FormatItem<'_>] = format_description!("[hour repr:24]:[minute]");

/// Parses `YYYY-MM-DD` (RFC 3339 full-date), refusing every other spelling.
pub fn parse_date(text: &str) -> Option<Date> {
    let date = Date::parse(text, DATE).ok()?;
    (four_digit_year(date) && text == date.format(DATE).ok()?).then_some(date)
}

/// Parses `YYYY-MM` as the first day of that month, refusing every other spelling.
pub fn parse_month(text: &str) -> Option<Date> {
    let with_day = format!("{text}-01");
    let date = Date::parse(&with_day, DATE).ok()?;
    (four_digit_year(date) && text == date.format(MONTH).ok()?).then_some(date)
}

/// Why `text`, written as a date (`YYYY-MM-DD`, or a date-time that starts with one) or a
/// month (`YYYY-MM`), names no day of the calendar: a month or a day that does not exist
/// (`2024-02-30`: "February 2024 has 29 days"). `None` when it is not written so, or the
/// day exists: the caller's message then says what the spelling is.
pub fn no_such_day(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let number = |at: std::ops::Range<usize>| -> Option<u16> {
        let digits = bytes.get(at)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let year = i32::from(number(0..4)?);
    let month = u8::try_from(number(5..7)?).ok()?;
    if bytes.get(4) != Some(&b'-') {
        return None;
    }
    let Ok(month) = time::Month::try_from(month) else {
        return Some(format!("there is no month {month:02}: months are 01 to 12"));
    };
    if bytes.get(7) != Some(&b'-') {
        return None;
    }
    let day = number(8..10)?;
    let days = month.length(year);
    (day == 0 || day > u16::from(days)).then(|| format!("{month} {year} has {days} days"))
}

/// Why `text` was refused as `spelled` (what it should be, e.g. "a date YYYY-MM-DD"):
/// that the day it names does not exist ([`no_such_day`]), or that it is not `spelled`.
pub fn refusal(text: &str, spelled: &str) -> String {
    match no_such_day(text) {
        Some(why) => format!("{text:?} does not exist: {why}"),
        None => format!("{text:?} is not {spelled}"),
    }
}

/// Parses `HH:MM` (24-hour), refusing every other spelling.
pub fn parse_time_of_day(text: &str) -> Option<Time> {
    let time = Time::parse(text, TIME_OF_DAY).ok()?;
    (text == time.format(TIME_OF_DAY).ok()?).then_some(time)
}

/// The last second RFC 3339 can write, 9999-12-31T23:59:59Z, as Unix seconds: a time
/// the exchange keeps and shows again is at most this (an end of validity, exclusive, at
/// most the next).
pub const LAST_SECOND: i64 = 253_402_300_799;

/// Parses an RFC 3339 date-time (`2024-03-09T12:00:00Z`, any offset) or a full-date
/// (`2024-03-09`, taken as its midnight UTC) as Unix seconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    if let Some(date) = parse_date(text) {
        return Some(date.midnight().assume_utc().unix_timestamp());
    }
    // RFC 3339 §5.6: `full-date "T" full-time`, the "T" also lower case (§5.6 NOTE, like
    // "Z"). The `time` crate's parser takes any byte in its place.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// Parses an end of validity, which is exclusive (a key valid until `t` signs nothing at
/// `t`): an RFC 3339 date-time as given, or a full-date as the whole of that day, ending
/// at the next midnight (`2024-03-09` is `2024-03-10T00:00:00Z`), as Unix seconds.
pub fn parse_until(text: &str) -> Option<i64> {
    let at = parse_instant(text)?;
    Some(if parse_date(text).is_some() {
        at + 86_400
    } else {
        at
    })
}

/// The date in its one spelling.
pub fn format_date(date: Date) -> String {
    date.format(DATE).unwrap_or_else(|_| {
        format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    })
}

/// RFC 3339 `date-fullyear` is four digits: years 0000 to 9999, no sign.
fn four_digit_year(date: Date) -> bool {
    (0..=9999).contains(&date.year())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_the_canonical_spellings_parse() {
        assert_eq!(
            parse_date("2024-03-09"),
            Date::from_calendar_date(2024, time::Month::March, 9).ok()
        );
        for bad in [
            "2024-+3-+9",
            "2024-+2-+9",
            "+2024-03-09",
            "2024-3-9",
            "2024-03-9",
            "24-03-09",
            "02024-03-09",
            "2024-03-09 ",
            " 2024-03-09",
            "2024-03-09T00:00:00Z",
            "2024/03/09",
            "2024-02-30",
            "2024-13-01",
            "2024-00-10",
            "-2024-03-09",
            "２０２４-03-09",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
        assert!(parse_month("2024-03").is_some());
        for bad in [
            "2024-3",
            "2024-+3",
            "2024-13",
            "2024-03-01",
            "+2024-03",
            "2024",
        ] {
            assert_eq!(parse_month(bad), None, "{bad:?}");
        }
        assert!(parse_time_of_day("07:05").is_some());
        assert!(parse_time_of_day("23:59").is_some());
        for bad in [
            "7:05", "07:5", "24:00", "07:60", "+7:05", "07:05:00", "07.05", "07:05Z",
        ] {
            assert_eq!(parse_time_of_day(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_day_or_month_that_does_not_exist_is_named() {
        for (text, said) in [
            (
                "2024-02-30",
                "\"2024-02-30\" does not exist: February 2024 has 29 days",
            ),
            (
                "2023-02-29",
                "\"2023-02-29\" does not exist: February 2023 has 28 days",
            ),
            (
                "2024-04-31",
                "\"2024-04-31\" does not exist: April 2024 has 30 days",
            ),
            (
                "2024-03-00",
                "\"2024-03-00\" does not exist: March 2024 has 31 days",
            ),
            (
                "2024-13-01",
                "\"2024-13-01\" does not exist: there is no month 13: months are 01 to 12",
            ),
            (
                "2024-00",
                "\"2024-00\" does not exist: there is no month 00: months are 01 to 12",
            ),
            (
                "2024-02-30T12:00:00Z",
                "\"2024-02-30T12:00:00Z\" does not exist: February 2024 has 29 days",
            ),
            // Other spellings are named by what they should be.
            ("2024-2-30", "\"2024-2-30\" is not a date"),
            ("2024/02/30", "\"2024/02/30\" is not a date"),
            ("２０２４-02-30", "\"２０２４-02-30\" is not a date"),
            ("2024-02-3x", "\"2024-02-3x\" is not a date"),
        ] {
            assert_eq!(refusal(text, "a date"), said);
        }
    }

    proptest! {
        /// A text written as a date names a day that does not exist exactly when it does
        /// not parse.
        #[test]
        fn no_such_day_is_said_exactly_of_unparsed_dates(year in 1u16..=9999, month in 0u8..=99, day in 0u8..=99) {
            let text = format!("{year:04}-{month:02}-{day:02}");
            prop_assert_eq!(no_such_day(&text).is_some(), parse_date(&text).is_none(), "{}", text);
        }

        /// Every date round-trips, and any text that parses is exactly the formatted date.
        #[test]
        fn a_date_has_exactly_one_spelling(day in 0i32..(366 * 9999), text in "[0-9+ -]{0,12}") {
            let date = Date::from_julian_day(Date::MIN.to_julian_day().max(1_721_426) + day);
            if let Ok(date) = date {
                prop_assert_eq!(parse_date(&format_date(date)), Some(date));
            }
            if let Some(parsed) = parse_date(&text) {
                prop_assert_eq!(format_date(parsed), text);
            }
        }

        /// A date-time's date and time are separated by "T" or "t" only.
        #[test]
        fn a_date_time_has_one_separator(separator in any::<char>(), seconds in 0i64..253_402_300_799) {
            let at = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap();
            let text = format!(
                "{}{separator}{:02}:{:02}:{:02}Z",
                format_date(at.date()),
                at.hour(),
                at.minute(),
                at.second()
            );
            let parsed = parse_instant(&text);
            if separator == 'T' || separator == 't' {
                prop_assert_eq!(parsed, Some(seconds));
            } else {
                prop_assert_eq!(parsed, None, "{}", text);
            }
        }

        #[test]
        fn a_time_has_exactly_one_spelling(h in 0u8..24, m in 0u8..60, text in "[0-9:+ ]{0,7}") {
            let spelled = format!("{h:02}:{m:02}");
            prop_assert_eq!(parse_time_of_day(&spelled), Time::from_hms(h, m, 0).ok());
            if parse_time_of_day(&text).is_some() {
                prop_assert_eq!(text.len(), 5);
            }
        }
    }
}
