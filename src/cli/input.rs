//! Reading the files people hand to the command line: JSON, JSON lines and CSV.
//!
//! - A UTF-8 byte-order mark at the start of a file is skipped, whatever the format
//!   (spreadsheet programs and Windows editors write one).
//! - Report JSON is read as the proto3 JSON mapping reads it, including integral values
//!   written `12.0` or `1.2e1`; a value that does not fit names its field
//!   (`persons.total: …`).

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use anyhow::Context;
use serde::de::DeserializeOwned;

use tidemark::{files::BOM, pb};

/// The whole file as text, without a leading byte-order mark.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    read_text_at_most(path, MAX_TEXT_FILE)
}

/// The largest text file read whole (reports, envelopes, receipts): far above any valid
/// input, and a bound for `/dev/zero` or a wrong path.
const MAX_TEXT_FILE: u64 = 64 * 1024 * 1024;

/// As [`read_text`], refusing a file longer than `max` bytes.
pub fn read_text_at_most(path: &Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read as _;
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        anyhow::bail!(
            "{} is larger than {max} bytes, more than this kind of file ever is: is it the \
             right file?",
            path.display()
        );
    }
    // One byte-order mark is skipped, as every reader of a file does; a second is content.
    tidemark::files::utf8_text(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A file holding signed-note text (a checkpoint, a C2SP tlog proof), at most `max`
/// bytes: notes are lines ending in LF (C2SP signed-note), and a file saved with CR LF,
/// as some editors do, holds the same note. Every reader of such a file reads it so.
pub fn read_note(path: &Path, max: u64) -> anyhow::Result<String> {
    let text = read_text_at_most(path, max)?.replace("\r\n", "\n");
    // A note ends with one line feed; an editor may have added blank lines, or taken the
    // last line feed away.
    Ok(format!("{}\n", text.trim_end_matches('\n')))
}

/// A file that can be read more than once: the file itself when it is a regular file;
/// a stream — standard input (`-`, `/dev/stdin`), a pipe (`<(…)`), a FIFO — copied
/// first to an anonymous temporary file, which has no name from the start (nothing is
/// left behind however the command ends, Ctrl-C included). A command that reads its
/// input twice (to count, then to send) would otherwise find the stream empty the
/// second time and do nothing, saying it did.
pub struct Rereadable {
    /// How messages name it: its path, or "standard input".
    name: String,
    path: std::path::PathBuf,
    spool: Option<File>,
    /// See [`Self::has_no_name`].
    unnamed: bool,
}

impl Rereadable {
    /// How messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it has no file name to go by: standard input (even when redirected from
    /// a file), a pipe, a FIFO.
    pub fn has_no_name(&self) -> bool {
        self.unnamed
    }

    /// A buffered reader over it from its start, past a leading byte-order mark.
    pub fn open(&self) -> anyhow::Result<BufReader<File>> {
        let Some(spool) = &self.spool else {
            return open(&self.path);
        };
        let mut file = spool
            .try_clone()
            .with_context(|| format!("cannot read {} again", self.name))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
            .with_context(|| format!("cannot read {} again", self.name))?;
        past_bom(file, &self.name)
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match &self.spool {
            Some(spool) => spool.metadata().map_or(0, |m| m.len()),
            None => std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        }
    }

    /// All of it as text, if it is at most [`MAX_TEXT_FILE`] bytes of UTF-8.
    pub fn read_text(&self) -> anyhow::Result<String> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        self.open()?
            .take(MAX_TEXT_FILE)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", self.name))?;
        // Past its byte-order mark already (a second was refused).
        tidemark::files::utf8_text(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", self.name))
    }
}

/// `path` as a [`Rereadable`]; `-` (or `/dev/stdin`, `/dev/fd/0`) is standard input,
/// read from where it stands — a file redirected to it is not opened again from its start, which would
/// take in lines a script had already read from it.
pub fn rereadable(path: &Path) -> anyhow::Result<Rereadable> {
    let stdin = ["-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"]
        .iter()
        .any(|name| path == Path::new(name));
    if stdin {
        return spooled("standard input".to_owned(), path, std::io::stdin().lock());
    }
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
    if meta.is_file() || meta.is_dir() {
        return Ok(Rereadable {
            name,
            path: path.to_owned(),
            spool: None,
            unnamed: false,
        });
    }
    let source = File::open(path).with_context(|| format!("cannot read {name}"))?;
    spooled(name, path, source)
}

/// A [`Rereadable`] of what `source` (named `name`) holds from here to its end.
fn spooled(name: String, path: &Path, mut source: impl Read) -> anyhow::Result<Rereadable> {
    let mut spool = tempfile::tempfile()
        .context("cannot make a temporary file to hold the stream (set TMPDIR)")?;
    std::io::copy(&mut source, &mut spool)
        .with_context(|| format!("cannot read {name} to its end"))?;
    Ok(Rereadable {
        name,
        path: path.to_owned(),
        spool: Some(spool),
        unnamed: true,
    })
}

/// A buffered reader over the file, past a leading byte-order mark.
pub fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    past_bom(file, &path.display().to_string())
}

/// A buffered reader over `file` (named `name` in messages), past a leading byte-order
/// mark.
fn past_bom(file: File, name: &str) -> anyhow::Result<BufReader<File>> {
    let mut reader = BufReader::new(file);
    let start = reader
        .fill_buf()
        .with_context(|| format!("cannot read {name}"))?;
    tidemark::files::refuse_utf16(start).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let starts_with_bom = start.starts_with(BOM.as_bytes());
    if starts_with_bom {
        reader.consume(BOM.len());
        // One is skipped, as every reader of a file does; a second is content (and the
        // CSV reader would skip it silently).
        if reader
            .fill_buf()
            .with_context(|| format!("cannot read {name}"))?
            .starts_with(BOM.as_bytes())
        {
            return Err(anyhow::anyhow!("{name}: {}", tidemark::files::two_boms()));
        }
    }
    Ok(reader)
}

/// A message [`from_json`] reads, by its full protobuf name: the types of its fields say
/// how the proto3 JSON mapping reads them.
pub trait Named {
    const NAME: &'static str;
    /// Shapes the JSON value before it is read: by default, nothing.
    fn prepare(_value: &mut serde_json::Value) {}
}

impl Named for pb::Report {
    const NAME: &'static str = "tidemark.v1.Report";
}

impl Named for pb::EnvelopeMeta {
    const NAME: &'static str = "tidemark.v1.EnvelopeMeta";
}

impl Named for pb::BackupManifest {
    const NAME: &'static str = "tidemark.v1.BackupManifest";
}

impl Named for pb::Envelope {
    const NAME: &'static str = "tidemark.v1.Envelope";
    fn prepare(value: &mut serde_json::Value) {
        dsse_fields(value);
    }
}

/// Keeps only the fields the DSSE envelope defines (`payloadType`, `payload`,
/// `signatures`, and each signature's `keyid` and `sig`): "consumers MUST ignore
/// unrecognized fields" (DSSE protocol, envelope.md). The proto field names are kept too,
/// as the proto3 JSON mapping reads them.
pub fn dsse_fields(value: &mut serde_json::Value) {
    let Some(envelope) = value.as_object_mut() else {
        return;
    };
    envelope.retain(|k, _| {
        matches!(
            k.as_str(),
            "payloadType" | "payload_type" | "payload" | "signatures"
        )
    });
    if let Some(signatures) = envelope
        .get_mut("signatures")
        .and_then(serde_json::Value::as_array_mut)
    {
        for signature in signatures
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            signature.retain(|k, _| matches!(k.as_str(), "keyid" | "sig"));
        }
    }
}

/// Where an envelope is checked (not where one is sent), each signature is judged on its
/// own: one that cannot be read — not an object, a `keyid` or `sig` that is not text, a
/// `sig` that is not base64 — becomes an empty one, which verifies with no key, instead
/// of making the whole envelope unreadable.
/// Returns what was wrong with each one voided (`signatures[i]: …`).
pub fn void_unreadable_signatures(envelope: &mut serde_json::Value) -> Vec<String> {
    let Some(signatures) = envelope
        .get_mut("signatures")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Vec::new();
    };
    let mut voided = Vec::new();
    for (i, signature) in signatures.iter_mut().enumerate() {
        let fault = match signature.as_object() {
            None => Some("not an object".to_owned()),
            Some(fields) => {
                if fields
                    .get("keyid")
                    .is_some_and(|k| !k.is_string() && !k.is_null())
                {
                    Some("keyid is not text".to_owned())
                } else {
                    fields
                        .get("sig")
                        .filter(|s| !s.is_null())
                        .and_then(|s| base64_fault(s).map(|why| format!("sig {why}")))
                }
            }
        };
        if let Some(fault) = fault {
            voided.push(format!("signatures[{i}]: {fault}"));
            *signature = serde_json::json!({"keyid": "", "sig": ""});
        }
    }
    voided
}

/// Why the JSON `value` of a DSSE bytes field is not base64 text, if it is not.
pub fn base64_fault(value: &serde_json::Value) -> Option<String> {
    let Some(text) = value.as_str() else {
        return Some(format!(
            "is not text but {value}: DSSE carries bytes as base64 text"
        ));
    };
    if is_base64(text) {
        return None;
    }
    let alphabet = |c: char| c.is_ascii_alphanumeric() || "+/-_=".contains(c);
    Some(match text.char_indices().find(|(_, c)| !alphabet(*c)) {
        Some((at, c)) => format!(
            "is not base64: {c:?} at byte {at} (standard or URL-safe alphabet, no spaces or \
             line breaks)"
        ),
        None => "is not base64: its length or padding is wrong".to_owned(),
    })
}

/// Whether `text` is base64 as DSSE allows it (standard or URL-safe alphabet, padded or
/// not).
fn is_base64(text: &str) -> bool {
    use base64::Engine as _;
    let engine = |alphabet: &base64::alphabet::Alphabet| {
        base64::engine::GeneralPurpose::new(
            alphabet,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
    };
    engine(&base64::alphabet::STANDARD).decode(text).is_ok()
        || engine(&base64::alphabet::URL_SAFE).decode(text).is_ok()
}

/// The JSON of field `key` of the JSON object `object`, as written (its numbers' digits
/// as they are, not as a float reads them), for [`from_json`]; `None` if `object` is not
/// a JSON object or the field is absent or null.
pub fn field_as_written<'o>(object: &'o str, key: &str) -> Option<&'o str> {
    serde_json::from_str::<HashMap<String, &serde_json::value::RawValue>>(object)
        .ok()?
        .get(key)
        .map(|v| v.get())
        .filter(|v| *v != "null")
}

/// Reads one JSON value of type `T` (a report, an envelope) as the proto3 JSON mapping
/// does; the error names the field at fault.
pub fn from_json<T: DeserializeOwned + Named>(text: &str) -> Result<T, String> {
    // The file readers skip one byte-order mark at the start of a file; anywhere else
    // (a second one, or at the start of a line of JSON lines) it is not JSON.
    if text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with(BOM)
    {
        return Err(
            "a byte-order mark (U+FEFF) here: one is read only at the very start of a file"
                .to_owned(),
        );
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| format!("not JSON: {e}"))?;
    // Valid JSON (checked above), so any error here is a key given twice, or an escape
    // of a lone surrogate (which the check above does not decode).
    no_duplicate_keys(text)?;
    // Numbers with a fraction or an exponent are read from their digits, by the field's
    // type: through a float, 99.999999999999999 would be taken for the integer 100. They
    // go as text marked with a random word no input can hold, to be told from text.
    let nonce: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .map_err(|_| "the system random generator failed".to_owned())?
        .expose();
    let word = hex::encode(nonce);
    let quoted = quote_decimal_numbers(text, &format!("\\u0001{word}\\u0001"));
    let mut value: serde_json::Value =
        serde_json::from_str(&quoted).map_err(|e| format!("not JSON: {e}"))?;
    super::json::numbers_as_written(&mut value, T::NAME, &format!("\u{1}{word}\u{1}"))?;
    integral_numbers(&mut value);
    T::prepare(&mut value);
    let read = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // pbjson's number reader reports a mismatch as an untagged-enum failure: say
        // what is wrong with the value given.
        let reason = if inner.contains("untagged enum") {
            match at_path(&read, &path) {
                Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => {
                    format!("{n} is out of range for the field")
                }
                _ => "is not a number of the field's type (integers: 12, 12.0, 1.2e1 or \"12\")"
                    .to_owned(),
            }
        } else if let Some(field) = inner
            .strip_prefix("duplicate field `")
            .and_then(|f| f.strip_suffix('`'))
        {
            // Keys given twice were refused above: this is one field under both of its
            // names, or a second member of a oneof.
            let snake = snake_case(field);
            let object = at_path(&read, &path);
            if snake != field
                && object.is_some_and(|o| o.get(field).is_some() && o.get(&snake).is_some())
            {
                format!(
                    "`{field}` is given twice, as `{field}` and `{snake}` (proto3 JSON reads \
                     either name); give it once"
                )
            } else {
                format!(
                    "`{field}` and another field of its oneof are both set; set one of them \
                     (a report's details are `smuggling` or `maritime`, by its category)"
                )
            }
        } else {
            // pbjson's enum reader doubles a word ("expected expected one of").
            inner.replace("expected expected ", "expected ")
        };
        if path == "." {
            reason
        } else {
            format!("{path}: {reason}")
        }
    })
}

/// The proto field name of a proto3 JSON name (`byNationality` → `by_nationality`).
fn snake_case(json_name: &str) -> String {
    let mut name = String::with_capacity(json_name.len() + 4);
    for c in json_name.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

/// The value at `path` (`persons.byNationality[1].count`, as serde_path_to_error writes
/// it) in `value`, if there is one.
fn at_path<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let mut at = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            at = at.get(key)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            at = at.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(at)
}

/// `text` (valid JSON) with every number that has a fraction or an exponent written as a
/// JSON string of `marker` (as JSON writes it) and the same characters, so that its
/// digits reach the field's reader as written ([`super::json::numbers_as_written`]).
fn quote_decimal_numbers(text: &str, marker: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let (mut at, mut copied) = (0, 0);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < bytes.len()
                    && matches!(bytes[at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    at += 1;
                }
                let number = &text[start..at];
                if number.contains(['.', 'e', 'E']) {
                    out.push_str(&text[copied..start]);
                    out.push('"');
                    out.push_str(marker);
                    out.push_str(number);
                    out.push('"');
                    copied = at;
                }
            }
            _ => at += 1,
        }
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

/// Refuses JSON `text` in which an object gives a key twice, naming where.
pub fn no_duplicate_keys(text: &str) -> Result<(), String> {
    serde_path_to_error::deserialize::<_, NoDuplicateKeys>(&mut serde_json::Deserializer::from_str(
        text,
    ))
    .map(|_| ())
    .map_err(|e| {
        let path = e.path().to_string();
        let reason = escape_reason(&e.into_inner().to_string());
        if path == "." {
            reason
        } else {
            format!("{path}: {reason}")
        }
    })
}

/// serde_json's reason for a refused string escape, said in terms of what to write
/// instead: it calls a lone *trailing* surrogate a "lone leading surrogate", and a
/// leading one at the end of a string "unexpected end of hex escape".
fn escape_reason(reason: &str) -> String {
    let (what, at) = reason
        .find(" at line ")
        .map_or((reason, ""), |i| reason.split_at(i));
    if what.contains("surrogate") || what.contains("end of hex escape") {
        format!(
            "a `\\u` escape of half a UTF-16 surrogate pair (\\uD800 to \\uDFFF) without its \
             other half{at}: a lone surrogate is no character (RFC 8259 §8.2); write the \
             character itself, or both halves of its pair (\\uD83D\\uDE00 for U+1F600)"
        )
    } else {
        reason.to_owned()
    }
}

/// A JSON value read only to refuse an object that gives a key twice. serde_json keeps
/// the last of them, other readers the first, so the same file would be two different
/// reports; protobuf's JSON parsers refuse it too.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> Result<Self::Value, A::Error> {
        while items.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} is given twice in one object; give each field once"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// Rewrites every number that has an exact integer value (`12.0`, `1.2e1`) as that
/// integer, as the proto3 JSON mapping allows for integer fields (floating-point fields
/// read an integer as the same value), and drops fields set to `null` (their default).
pub fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                // Exact bounds: 2^64 and -2^63 are representable as f64.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *n = (f as u64).into();
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *n = (f as i64).into();
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(fields) => {
            // proto3 JSON: null is the field's default value, as if it were absent.
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(integral_numbers);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use tidemark::pb;

    use super::*;

    /// A lone surrogate escape is refused as what it is, naming the field (tester B of
    /// 2026-12-07: "unexpected end of hex escape"); a pair is a character.
    #[test]
    fn a_lone_surrogate_escape_is_refused_as_one() {
        for escaped in [r"\ud800", r"\udc00", r"\ud800\u0041", r"x\udbff"] {
            let text = format!(r#"{{"narrative":"{escaped}"}}"#);
            let err = from_json::<pb::Report>(&text).unwrap_err();
            assert!(
                err.starts_with("narrative: ") && err.contains("without its other half at line 1"),
                "{escaped}: {err}"
            );
        }
        let report = from_json::<pb::Report>(r#"{"narrative":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(report.narrative, "\u{1F600}");
    }

    #[test]
    fn integral_values_in_any_json_spelling_are_read() {
        for total in [
            "12",
            "12.0",
            "1.2e1",
            "\"12\"",
            "120e-1",
            "\"1.2e1\"",
            "\"12.0\"",
            "\"1.2E1\"",
        ] {
            let text = format!(r#"{{"reportId": "x", "persons": {{"total": {total}}}}}"#);
            let report: pb::Report = from_json(&text).unwrap();
            assert_eq!(report.persons.unwrap().total, 12, "{total}");
        }
        let report: pb::Report =
            from_json(r#"{"location": {"point": {"latitude": -10, "longitude": 110.5}}}"#).unwrap();
        let point = report.location.unwrap().point.unwrap();
        assert_eq!((point.latitude, point.longitude), (-10.0, 110.5));
        // Exactly, from the digits: not rounded through a float.
        for (total, expected) in [
            ("99.999999999999999", None),
            ("\"99.999999999999999\"", None),
            ("100.00000000000001", None),
            ("\"1e-400\"", None),
            ("\"+100\"", None),
            ("\"0100\"", None),
            ("1.00e2", Some(100)),
            ("1.5e-9223372036854775807", None),
            ("30e-9223372036854775808", None),
            ("\"1.5e-9223372036854775808\"", None),
            ("1e99999999999999999999999999999999999", None),
            ("0.0e-9223372036854775808", Some(0)),
            ("0e-9223372036854775809", Some(0)),
            ("\"4294967295.0\"", Some(4_294_967_295)),
            ("0.0e5", Some(0)),
        ] {
            let text =
                format!(r#"{{"persons": {{"total": {total}}}, "narrative": "1.5 e 3, \" 2.5"}}"#);
            match (from_json::<pb::Report>(&text), expected) {
                (Ok(report), Some(n)) => assert_eq!(report.persons.unwrap().total, n, "{total}"),
                (Err(e), None) => assert!(e.starts_with("persons.total"), "{total}: {e}"),
                (got, _) => panic!("{total}: {got:?}"),
            }
        }
        // A number is not text: a text field given one is refused, whatever its spelling.
        for narrative in ["15", "1.5", "-2.50E+2", "7e0"] {
            let text = format!(r#"{{"narrative": {narrative}}}"#);
            let err = from_json::<pb::Report>(&text).unwrap_err();
            assert!(err.starts_with("narrative"), "{narrative}: {err}");
        }
        // Only integer fields read a quoted number as a number: text stays text.
        let report: pb::Report =
            from_json(r#"{"narrative": "1e2", "location": {"place": "12.0"}}"#).unwrap();
        assert_eq!(
            (
                report.narrative.as_str(),
                report.location.unwrap().place.as_str()
            ),
            ("1e2", "12.0")
        );
        let err = from_json::<pb::Report>(
            r#"{"persons": {"byNationality": [{}, {"count": 4294967296}]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "persons.byNationality[1].count: 4294967296 is out of range for the field"
        );
        for refused in [r#""12.5""#, r#"" 12""#, r#""1e400""#] {
            let text = format!(r#"{{"persons": {{"total": {refused}}}}}"#);
            let err = from_json::<pb::Report>(&text).unwrap_err();
            assert!(err.starts_with("persons.total"), "{refused}: {err}");
        }
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_field() {
        for (text, field) in [
            (r#"{"persons": {"total": 12.5}}"#, "persons.total"),
            (r#"{"persons": {"total": -1}}"#, "persons.total"),
            (r#"{"persons": {"total": true}}"#, "persons.total"),
            (r#"{"version": 1e30}"#, "version"),
        ] {
            let err = from_json::<pb::Report>(text).unwrap_err();
            assert!(err.starts_with(field), "{text}: {err}");
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_and_named() {
        for (text, place) in [
            (r#"{"reportId": "a", "reportId": "b"}"#, "\"reportId\""),
            (r#"{"persons": {"total": 12, "total": 13}}"#, "persons: "),
            (
                r#"{"route": {"transit": [{"x": 1, "x": 1}]}}"#,
                "route.transit[0]: ",
            ),
        ] {
            let err = from_json::<pb::Report>(text).unwrap_err();
            assert!(err.contains("given twice"), "{text}: {err}");
            assert!(err.contains(place), "{text}: {err}");
        }
        // Two members of one oneof are not one key twice, and are said to be what they are.
        let err = from_json::<pb::Report>(r#"{"smuggling": {}, "maritime": {}}"#).unwrap_err();
        assert!(err.contains("oneof are both set"), "{err}");
        // Nor is one field under both of its proto3 JSON names.
        for (text, place) in [
            (
                r#"{"reportId": "a", "report_id": "a"}"#,
                "`reportId` is given twice, as `reportId` and `report_id`",
            ),
            (
                r#"{"persons": {"by_nationality": [], "byNationality": []}}"#,
                "persons: `byNationality` is given twice, as `byNationality` and `by_nationality`",
            ),
        ] {
            let err = from_json::<pb::Report>(text).unwrap_err();
            assert!(err.starts_with(place), "{text}: {err}");
        }
        let err = from_json::<pb::Report>(r#"{"sharing": {"scope": 77}}"#).unwrap_err();
        assert!(
            err.starts_with("sharing.scope") && !err.contains("expected expected"),
            "{err}"
        );
        // The same key in two objects is fine.
        let report: pb::Report =
            from_json(r#"{"persons": {"total": 3}, "route": {"transit": []}, "version": 1}"#)
                .unwrap();
        assert_eq!(report.version, 1);
    }

    #[test]
    fn null_is_the_default_value() {
        let report: pb::Report = from_json(
            r#"{"narrative": null, "persons": {"total": null}, "route": {"transit": null}}"#,
        )
        .unwrap();
        assert_eq!(report.narrative, "");
        assert_eq!(report.persons.unwrap().total, 0);
    }

    #[test]
    fn a_note_file_is_read_as_the_note_it_holds_whatever_an_editor_did_to_its_line_ends() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("note");
        let note = "example.org/log\n5\nroot\n\n— example.org/log sig\n";
        for saved in [
            note.to_owned(),
            note.replace('\n', "\r\n"),
            format!("{note}\n\n"),
            note.trim_end().to_owned(),
        ] {
            std::fs::write(&path, &saved).unwrap();
            assert_eq!(read_note(&path, 1024).unwrap(), note, "{saved:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped_once_at_the_start_of_a_file_only() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "\u{feff}{\"version\": 2}").unwrap();
        let report: pb::Report = from_json(&read_text(&path).unwrap()).unwrap();
        assert_eq!(report.version, 2);
        std::fs::write(&path, "\u{feff}\u{feff}{\"version\": 2}").unwrap();
        let error = read_text(&path).unwrap_err().to_string();
        assert!(error.contains("two byte-order marks"), "{error}");
        let error = open(&path).err().unwrap().to_string();
        assert!(error.contains("two byte-order marks"), "{error}");
        // A line of JSON lines is not the start of a file.
        let error = from_json::<pb::Report>("\u{feff}{\"version\": 2}").unwrap_err();
        assert!(error.contains("byte-order mark"), "{error}");
    }
}
