//! What every `--json` prints: the API's messages in the proto3 JSON mapping (pbjson),
//! one object per line, except that 64-bit integers are written as JSON numbers, not
//! strings. The mapping writes them as strings so that JavaScript's doubles cannot round
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

/// Calls `each` with the type of every field of `value` (a message of type `full_name`),
/// and of the messages within it, and the field's value (each item of a repeated one).
fn each_field(
    value: &mut serde_json::Value,
    full_name: &str,
    each: &mut impl FnMut(Type, &mut serde_json::Value),
) {
    let Some((_, descriptor)) = descriptors().iter().find(|(n, _)| n == full_name) else {
        return;
    };
    let serde_json::Value::Object(object) = value else {
        return;
    };
    for field in &descriptor.field {
        let Some(slot) = object.get_mut(field.json_name()) else {
            continue;
        };
        let items: Vec<&mut serde_json::Value> = match slot {
            serde_json::Value::Array(items) => items.iter_mut().collect(),
            other => vec![other],
        };
        for item in items {
            if field.r#type() == Type::Message && field.type_name().starts_with(".tidemark.") {
                each_field(item, field.type_name(), each);
            } else {
                each(field.r#type(), item);
            }
        }
    }
}

/// Rewrites the 64-bit integer fields of `value` (a message of type `full_name`), and of
/// the messages within it, as numbers.
fn numbers(value: &mut serde_json::Value, full_name: &str) {
    each_field(value, full_name, &mut |kind, item| match kind {
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
        _ => {}
    });
}

/// Reads the integer fields of `value` (a message of the API type `type_name`) given as
/// quoted numbers in any JSON spelling (`"1.2e1"`, `"12.0"`) as those numbers, as the
/// proto3 JSON mapping reads them; a number that is not a whole one stays quoted, and is
/// refused as such.
pub fn quoted_integers(value: &mut serde_json::Value, type_name: &str) {
    each_field(value, &format!(".{type_name}"), &mut |kind, item| {
        let integer = matches!(
            kind,
            Type::Int32
                | Type::Sint32
                | Type::Sfixed32
                | Type::Uint32
                | Type::Fixed32
                | Type::Int64
                | Type::Sint64
                | Type::Sfixed64
                | Type::Uint64
                | Type::Fixed64
        );
        let number = item
            .as_str()
            .filter(|t| integer && t.trim() == *t)
            .and_then(|t| serde_json::from_str::<serde_json::Number>(t).ok());
        if let Some(number) = number {
            *item = serde_json::Value::Number(number);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
