//! What every `--json` prints: the API's messages in the proto3 JSON mapping (pbjson),
//! one object per line, timestamps Z-normalized as the mapping asks (`…T09:04:00Z`),
//! except that 64-bit integers are written as JSON numbers, not strings. The mapping writes them as strings so that JavaScript's doubles cannot round
//! them; proto3 JSON parsers read either form (protobuf's JSON spec), and no count,
//! sequence number or Unix time here comes near 2^53.

use std::sync::OnceLock;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet, field_descriptor_proto::Type};
use tidemark::pb;

/// The API's message descriptors, by full name (".tidemark.v1.Cell").
fn descriptors() -> &'static Vec<(String, DescriptorProto)> {
    static ALL: OnceLock<Vec<(String, DescriptorProto)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut all = Vec::new();
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for message in file.message_type {
                collect(&format!(".{package}"), message, &mut all);
            }
        }
        all
    })
}

fn collect(scope: &str, message: DescriptorProto, all: &mut Vec<(String, DescriptorProto)>) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect(&name, nested.clone(), all);
    }
    all.push((name, message));
}

/// `message` (of the API type `type_name`, e.g. "tidemark.v1.AggregateResponse") as
/// JSON, 64-bit integers as numbers.
pub fn value<M: serde::Serialize>(message: &M, type_name: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(message).unwrap_or(serde_json::Value::Null);
    numbers(&mut value, &format!(".{type_name}"));
    value
}

/// One line of JSON: `message` as [`value`] makes it.
pub fn line<M: serde::Serialize>(message: &M, type_name: &str) -> String {
    value(message, type_name).to_string()
}

/// Calls `each` with the type, the path (`persons.byNationality[1].count`) and the value
/// of every field of `value` (a message of type `full_name`) and of the messages within
/// it, each item of a repeated field on its own. A field is found by its JSON name or its
/// proto name, as the proto3 JSON mapping reads either.
fn each_field(
    value: &mut serde_json::Value,
    (full_name, path): (&str, &str),
    each: &mut impl FnMut(Type, &str, &mut serde_json::Value),
) {
    let Some((_, descriptor)) = descriptors().iter().find(|(n, _)| n == full_name) else {
        return;
    };
    let serde_json::Value::Object(object) = value else {
        return;
    };
    for field in &descriptor.field {
        let Some((key, slot)) = object
            .iter_mut()
            .find(|(k, _)| *k == field.json_name() || *k == field.name())
        else {
            continue;
        };
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let items: Vec<(String, &mut serde_json::Value)> = match slot {
            serde_json::Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .map(|(i, item)| (format!("{at}[{i}]"), item))
                .collect(),
            other => vec![(at, other)],
        };
        for (at, item) in items {
            if field.r#type() == Type::Message && field.type_name().starts_with(".tidemark.") {
                each_field(item, (field.type_name(), &at), each);
            } else {
                each(field.r#type(), &at, item);
            }
        }
    }
}

/// Rewrites the 64-bit integer fields of `value` (a message of type `full_name`), and of
/// the messages within it, as numbers.
fn numbers(value: &mut serde_json::Value, full_name: &str) {
    each_field(value, (full_name, ""), &mut |kind, _, item| match kind {
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            if let Some(n) = item.as_str().and_then(|t| t.parse::<i64>().ok()) {
                *item = n.into();
            }
        }
        Type::Uint64 | Type::Fixed64 => {
            if let Some(n) = item.as_str().and_then(|t| t.parse::<u64>().ok()) {
                *item = n.into();
            }
        }
        // A well-known type written as text: a google.protobuf.Timestamp, which the
        // mapping writes "Z-normalized" (pbjson writes "+00:00").
        Type::Message => {
            if let Some(utc) = item.as_str().and_then(|t| t.strip_suffix("+00:00"))
                && tidemark::calendar::parse_instant(&format!("{utc}Z")).is_some()
            {
                *item = format!("{utc}Z").into();
            }
        }
        _ => {}
    });
}

/// Reads the numeric fields of `value` (a message of the API type `type_name`) given as
/// text as the proto3 JSON mapping reads them: an integer field takes a number in any
/// JSON spelling (`"1.2e1"`, `"12.0"`) if it is exactly a whole number; a floating-point
/// field any finite number (or `"NaN"`, `"Infinity"`, `"-Infinity"`). Text that starts
/// with `marker` was a JSON number in the input, quoted by [`crate::cli::input`] to keep
/// its digits: in any other field it becomes that number again, so that a text field
/// refuses it as the mapping does. An error names the field.
pub fn numbers_as_written(
    value: &mut serde_json::Value,
    type_name: &str,
    marker: &str,
) -> Result<(), String> {
    let mut refused = None;
    each_field(
        value,
        (&format!(".{type_name}"), ""),
        &mut |kind, at, item| {
            let Some(text) = item.as_str() else { return };
            let (was_number, text) = match text.strip_prefix(marker) {
                Some(number) => (true, number),
                None => (false, text),
            };
            let read = match kind {
                Type::Int32
                | Type::Sint32
                | Type::Sfixed32
                | Type::Uint32
                | Type::Fixed32
                | Type::Int64
                | Type::Sint64
                | Type::Sfixed64
                | Type::Uint64
                | Type::Fixed64 => whole_number(text).map(Some),
                Type::Double | Type::Float => float(text),
                _ if was_number => float(text),
                _ => Ok(None),
            };
            match read {
                Ok(Some(number)) => *item = serde_json::Value::Number(number),
                Ok(None) => {}
                Err(why) => {
                    refused.get_or_insert_with(|| format!("{at}: {text} {why}"));
                }
            }
        },
    );
    if let Some(refused) = refused {
        return Err(refused);
    }
    // Numbers where no field of the message is (unknown fields): numbers again.
    unmark(value, marker);
    Ok(())
}

/// Turns every text that starts with `marker` back into the number it was.
fn unmark(value: &mut serde_json::Value, marker: &str) {
    match value {
        serde_json::Value::String(text) => {
            let number = text
                .strip_prefix(marker)
                .and_then(|n| serde_json::from_str::<serde_json::Number>(n).ok());
            if let Some(number) = number {
                *value = serde_json::Value::Number(number);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| unmark(v, marker)),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(|v| unmark(v, marker)),
        _ => {}
    }
}

/// The whole number a JSON number literal denotes exactly (`12`, `12.0`, `1.2e1`,
/// `120e-1`), worked out from its digits, never through a float.
fn whole_number(text: &str) -> Result<serde_json::Number, &'static str> {
    const SPELLING: &str =
        "is not a number as JSON writes one (no + sign, spaces or leading zeros)";
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(digits) => (-1, digits),
                None => (1, e.strip_prefix('+').unwrap_or(e)),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SPELLING);
            }
            // Beyond ±10^30 every exponent acts alike: saturate rather than overflow.
            let magnitude = digits.trim_start_matches('0');
            let magnitude: i128 = if magnitude.len() > 30 {
                10_i128.pow(30)
            } else {
                magnitude.parse().unwrap_or(0)
            };
            (m, sign * magnitude)
        }
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_only(whole)
        || (whole.len() > 1 && whole.starts_with('0'))
        || (mantissa.contains('.') && fraction.is_empty())
        || !digits_only(fraction)
    {
        return Err(SPELLING);
    }
    let digits = format!("{whole}{fraction}");
    if digits.bytes().all(|b| b == b'0') {
        return Ok(serde_json::Number::from(0_u64));
    }
    // The value is digits × 10^shift, exactly.
    let shift = exponent - i128::try_from(fraction.len()).unwrap_or(i128::MAX);
    let integer = if shift >= 0 {
        if shift > 40 {
            return Err("is out of range");
        }
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(shift).unwrap_or(40))
        )
    } else {
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        let (kept, dropped) = digits.split_at(digits.len().saturating_sub(cut));
        if dropped.bytes().any(|b| b != b'0') {
            return Err("is not a whole number");
        }
        if kept.is_empty() {
            "0".to_owned()
        } else {
            kept.to_owned()
        }
    };
    let integer = integer.trim_start_matches('0');
    let magnitude: u128 = if integer.is_empty() {
        0
    } else {
        integer.parse().map_err(|_| "is out of range")?
    };
    let number = if negative {
        i64::try_from(magnitude)
            .ok()
            .and_then(i64::checked_neg)
            .map(serde_json::Number::from)
            .or_else(|| (magnitude == 1 << 63).then(|| i64::MIN.into()))
    } else {
        u64::try_from(magnitude).ok().map(serde_json::Number::from)
    };
    number.ok_or("is out of range")
}

/// A floating-point field's number given as text: finite numbers become numbers; the
/// mapping's names for the special values stay text for the reader.
fn float(text: &str) -> Result<Option<serde_json::Number>, &'static str> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(None);
    }
    if text.trim() != text {
        return Err("is not a number as JSON writes one");
    }
    // serde_json reads exactly JSON's number grammar, and refuses what overflows.
    serde_json::from_str::<serde_json::Number>(text)
        .map(Some)
        .map_err(|e| {
            if e.to_string().contains("out of range") {
                "is out of range"
            } else {
                "is not a number as JSON writes one"
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_are_z_normalized_and_text_is_left_as_written() {
        let me = pb::WhoAmIResponse {
            certificate_not_after: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            name: "2023-11-14T22:13:20+00:00".to_owned(),
            ..pb::WhoAmIResponse::default()
        };
        let json = value(&me, "tidemark.v1.WhoAmIResponse");
        assert_eq!(json["certificateNotAfter"], "2023-11-14T22:13:20Z");
        assert_eq!(json["name"], "2023-11-14T22:13:20+00:00");
    }

    proptest! {
        /// Any text, and any number in JSON's grammar with long digit runs and exponents,
        /// is read or refused, never a panic (an exponent near i64::MIN once overflowed).
        #[test]
        fn reading_a_number_never_panics(
            number in "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,25})?",
            text in "\\PC{0,40}",
        ) {
            let _ = whole_number(&number);
            let _ = float(&number);
            let _ = whole_number(&text);
            let _ = float(&text);
        }

        /// Any whole number, its point moved left and an exponent moving it back, with
        /// trailing zeros, is read as exactly that number; with a digit other than zero
        /// left behind the point, it is not a whole number.
        #[test]
        fn a_whole_number_is_read_exactly_in_any_spelling(
            n in any::<i64>(),
            shift in 0usize..25,
            zeros in 0usize..4,
            tail in 1u8..10,
        ) {
            let digits = n.unsigned_abs().to_string();
            // Zeros in front so the point can move left of every digit: 5 -> 0.005e3.
            let padded = format!("{}{digits}", "0".repeat(shift.saturating_sub(digits.len() - 1)));
            let (whole, fraction) = padded.split_at(padded.len() - shift);
            let sign = if n < 0 { "-" } else { "" };
            let point = if shift + zeros > 0 { "." } else { "" };
            let text = format!("{sign}{whole}{point}{fraction}{}e{shift}", "0".repeat(zeros));
            prop_assert_eq!(whole_number(&text), Ok(serde_json::Number::from(n)), "{}", text);
            let not_whole = format!("{sign}{digits}.{}{tail}", "0".repeat(zeros));
            prop_assert_eq!(whole_number(&not_whole), Err("is not a whole number"));
        }
    }

    #[test]
    fn sixty_four_bit_integers_are_numbers_and_texts_stay_texts() {
        let response = pb::AggregateResponse {
            cells: vec![pb::Cell {
                keys: vec!["2024".into(), "123".into()],
                values: vec![460, 7],
                ..pb::Cell::default()
            }],
            minimum_reports: 3,
            ..pb::AggregateResponse::default()
        };
        let v = value(&response, "tidemark.v1.AggregateResponse");
        assert_eq!(v["cells"][0]["values"], serde_json::json!([460, 7]));
        // A string field that holds digits stays a string.
        assert_eq!(v["cells"][0]["keys"][1], "123");
        let meta = pb::EnvelopeMeta {
            sequence: 12,
            accepted_at_unix: 1_700_000_000,
            ..pb::EnvelopeMeta::default()
        };
        let v = value(&meta, "tidemark.v1.EnvelopeMeta");
        assert_eq!(v["sequence"], 12);
        assert_eq!(v["acceptedAtUnix"], 1_700_000_000_i64);
    }
}
