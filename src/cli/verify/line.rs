//! What a `tidemark query --json` line states beside its signed envelope — `meta`,
//! `report` and `logProof` — checked against that envelope, so that nothing on a line
//! that verifies says what the signed payload or the log does not. The envelope's
//! signature is checked by the caller.

use prost::Message;
use serde_json::Value;
use tidemark::{
    clock::format_time,
    envelope, pb, receipt,
    tlog::entry::{self, Entry},
};

/// When an envelope was accepted, and how that is known.
#[derive(Clone, Copy)]
pub(super) enum Acceptance {
    /// From its transparency-log entry, whose inclusion under a checkpoint signed with
    /// the log's key was checked.
    Proven { at: i64, index: u64, size: u64 },
    /// From the line's meta (the server's word, not signed), if it says.
    Said { at: Option<i64>, unproven: Unproven },
}

/// Why an acceptance time is not proven.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Unproven {
    /// The line carries a log proof, but no log key was given to check it.
    NoKey,
    /// The line carries no log proof; `key_given`: one was asked for (--log-key).
    NoProof { key_given: bool },
}

/// What a line holding an `envelope` may hold beside it, as `query --json` and `sync
/// --into` write it (proto3 JSON: a field by its lowerCamelCase name or its own).
const LINE_FIELDS: [(&str, &str); 5] = [
    ("envelope", "envelope"),
    ("meta", "meta"),
    ("report", "report"),
    ("cursor", "cursor"),
    ("logProof", "log_proof"),
];

/// Refuses a line (a JSON object with an `envelope`) that holds a field no line holds,
/// or one field under both its names: read past, a misspelt or second log proof was
/// taken for none, or not the one checked. A bare DSSE envelope (no `envelope`) may hold
/// fields DSSE does not define, which its readers ignore, but not a line's: read as the
/// line's, they would say what the envelope's readers do not see.
pub(super) fn check_fields(line: &Value) -> Result<(), String> {
    let Some(object) = line.as_object() else {
        return Ok(());
    };
    if !object.contains_key("envelope") {
        if let Some(field) = object.keys().find(|k| {
            LINE_FIELDS
                .iter()
                .any(|(camel, own)| k == camel || k == own)
        }) {
            return Err(format!(
                "a DSSE envelope with a line's {:?} beside its fields: a line holds its \
                 envelope under \"envelope\" (as `tidemark query --json` writes it)",
                crate::cli::labels::printable(field)
            ));
        }
        return Ok(());
    }
    if let Some(unknown) = object.keys().find(|k| {
        !LINE_FIELDS
            .iter()
            .any(|(camel, own)| k == camel || k == own)
    }) {
        return Err(format!(
            "the line holds {:?}, which no line holds: beside \"envelope\" a line holds \
             \"meta\", \"report\", \"cursor\" and \"logProof\" (as `tidemark query --json` \
             writes them)",
            crate::cli::labels::printable(unknown)
        ));
    }
    if let Some((camel, own)) = LINE_FIELDS.iter().find(|(camel, own)| {
        camel != own && object.contains_key(*camel) && object.contains_key(*own)
    }) {
        return Err(format!(
            "the line holds both {camel:?} and {own:?}, two names of one field: give it once"
        ));
    }
    Ok(())
}

/// The line's log proof, under either of its proto3 JSON names (`check_fields` has
/// refused both); `None` when absent or null.
pub(super) fn log_proof(line: &Value) -> Result<Option<&str>, String> {
    match line.get("logProof").or_else(|| line.get("log_proof")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(proof)) => Ok(Some(proof)),
        Some(_) => Err(
            "its logProof is not a string (a C2SP tlog-proof, as `tidemark query \
                        --json --log-proofs` writes it)"
                .to_owned(),
        ),
    }
}

/// Checks the line's `meta` and `report` against `envelope`'s payload, and its log
/// proof against `log_key` when both are there. Returns when the envelope was accepted;
/// an error says what on the line disagrees (the line is invalid then).
pub(super) fn check(
    (line, text): (&Value, &str),
    envelope: &pb::Envelope,
    log_key: Option<&str>,
) -> Result<Acceptance, String> {
    let said = meta(text, envelope)?;
    report(text, envelope)?;
    let proof = log_proof(line)?;
    let (Some(proof), Some(key)) = (proof, log_key) else {
        let unproven = match proof {
            Some(_) => Unproven::NoKey,
            None => Unproven::NoProof {
                key_given: log_key.is_some(),
            },
        };
        return Ok(Acceptance::Said {
            at: said.at,
            unproven,
        });
    };
    // A proof is lines ending in LF (C2SP tlog-proof); one saved with CR LF is the same.
    let verified = receipt::verify_log_proof(&proof.replace("\r\n", "\n"), key)
        .map_err(|e| format!("its log proof does not verify: {}", e.reason()))?;
    let index = verified.index;
    // The entry commits to the exact payload bytes: it records this envelope only if the
    // digests agree.
    let digest = entry::sha256(&envelope.payload);
    let accepted = match verified.fields {
        Entry::Envelope(e) if e.payload_sha256 == digest => e,
        _ => {
            return Err(format!(
                "its log proof is of log entry {index}, which records something else than \
                 this envelope's acceptance (the entry's payload digest is not sha256:{})",
                hex::encode(digest)
            ));
        }
    };
    agrees_with_entry(&said, envelope, &accepted, index)?;
    let at = accepted.accepted_at;
    Ok(Acceptance::Proven {
        at,
        index,
        size: verified.checkpoint.size,
    })
}

/// What a line says beside `envelope` (its meta) against `accepted`, the envelope's log
/// entry at `index` (which commits to its payload, under a checkpoint that verified):
/// the entry must record what the payload says, and the meta what the entry says.
fn agrees_with_entry(
    said: &Meta,
    envelope: &pb::Envelope,
    accepted: &entry::EnvelopeEntry,
    index: u64,
) -> Result<(), String> {
    entry_describes(accepted, envelope, said.category).map_err(|what| {
        format!("its log entry {index} {what}: the proof is not of this envelope's acceptance")
    })?;
    let sequence = i64::try_from(accepted.sequence).unwrap_or(i64::MAX);
    for (what, on_line, in_entry) in [
        ("accepted at", said.at, accepted.accepted_at),
        ("sequence", said.sequence, sequence),
    ] {
        if let Some(on_line) = on_line
            && on_line != in_entry
        {
            let show = |t: i64| {
                if what == "accepted at" {
                    format_time(t)
                } else {
                    t.to_string()
                }
            };
            return Err(format!(
                "the line's meta says {what} {} but its log entry {index} says {}: the meta \
                 was altered, or the proof is another log's (check the --log-key)",
                show(on_line),
                show(in_entry)
            ));
        }
    }
    Ok(())
}

/// For `verify-receipt --envelope`: what the line `text` says beside `envelope` (its
/// meta and report) against the payload and against `accepted`, the log entry at
/// `index` of a proof that verified — as `verify` holds a line to its own log proof.
pub(super) fn against_entry(
    text: &str,
    envelope: &pb::Envelope,
    accepted: &entry::EnvelopeEntry,
    index: u64,
) -> Result<(), String> {
    let said = meta(text, envelope)?;
    report(text, envelope)?;
    agrees_with_entry(&said, envelope, accepted, index)
}

/// Whether log entry `entry`, which commits to `envelope`'s payload, also records what
/// the payload says: its state, report id, version, kind and (for a report; for a
/// retraction as the line's meta says, if it does) category. `verify-reciprocity`
/// replays those fields: an entry of the right payload but another state's name would
/// credit one state's report to another. Otherwise what differs.
pub(super) fn entry_describes(
    entry: &entry::EnvelopeEntry,
    envelope: &pb::Envelope,
    meta_category: Option<i32>,
) -> Result<(), String> {
    let (id, state, version, kind) = payload_names(envelope);
    // A report's category is its payload's; a retraction names none, so the line's meta
    // says it, if it does.
    let (category, said_by) = match payload_category(envelope) {
        Some(c) => (Some(c), "the signed payload"),
        None => (meta_category, "the line's meta"),
    };
    let category = category
        .and_then(tidemark::report::Category::from_pb)
        .map(tidemark::report::Category::label);
    let differs = [
        (
            "state",
            entry.state != state,
            entry.state.clone(),
            state.clone(),
        ),
        (
            "report",
            entry.report_sha256 != entry::sha256(id.as_bytes()),
            format!("sha256:{}", hex::encode(entry.report_sha256)),
            format!(
                "sha256:{} (of {id})",
                hex::encode(entry::sha256(id.as_bytes()))
            ),
        ),
        (
            "version",
            entry.version != version,
            entry.version.to_string(),
            version.to_string(),
        ),
        (
            "kind",
            entry.kind != kind,
            entry.kind.clone(),
            kind.to_owned(),
        ),
        (
            "category",
            category.is_some_and(|c| entry.category != c),
            entry.category.clone(),
            category.unwrap_or_default().to_owned(),
        ),
    ];
    match differs.into_iter().find(|(_, differs, _, _)| *differs) {
        Some((field, _, recorded, signed)) => Err(format!(
            "records {field} {recorded}, where {} says {signed}",
            if field == "category" {
                said_by
            } else {
                "the signed payload"
            }
        )),
        None => Ok(()),
    }
}

/// What the line's meta says that the log can prove, and its category (a retraction's
/// payload names none).
struct Meta {
    at: Option<i64>,
    sequence: Option<i64>,
    category: Option<i32>,
}

/// Reads the line's `meta` (absent in a bare DSSE envelope) as the proto3 JSON mapping
/// reads an `EnvelopeMeta` (from its digits as written, as `import` reads a report: null
/// or a default value states nothing). What it states must be the payload's report id,
/// state, version, kind and category.
fn meta(line: &str, envelope: &pb::Envelope) -> Result<Meta, String> {
    let Some(written) = super::super::input::field_as_written(line, "meta") else {
        return Ok(Meta {
            at: None,
            sequence: None,
            category: None,
        });
    };
    let meta = super::super::input::from_json::<pb::EnvelopeMeta>(written)
        .map_err(|e| format!("its meta is not an EnvelopeMeta (proto3 JSON): {e}"))?;
    if meta.accepted_at_unix < 0 {
        return Err(format!(
            "its meta.acceptedAtUnix is {}: the server writes no negative time",
            meta.accepted_at_unix
        ));
    }
    // 0 is the proto3 default: not stated.
    let stated = |n: i64| (n != 0).then_some(n);
    let (id, state, payload_version, kind) = payload_names(envelope);
    let signed_category = payload_category(envelope);
    let text = |t: &str, payload: &str| !t.is_empty() && t != payload;
    let differs = [
        (
            "category",
            meta.category != 0 && signed_category.is_some_and(|c| c != meta.category),
        ),
        ("reportId", text(&meta.report_id, &id)),
        ("reportingState", text(&meta.reporting_state, &state)),
        (
            "version",
            meta.version != 0 && meta.version != payload_version,
        ),
        ("kind", text(&meta.kind, kind)),
    ];
    if let Some((key, _)) = differs.iter().find(|(_, differs)| *differs) {
        return Err(format!(
            "its meta.{key} is not what the signed payload says ({kind} {id} version \
             {payload_version} of {state}): the line was altered"
        ));
    }
    Ok(Meta {
        at: stated(meta.accepted_at_unix),
        sequence: stated(i64::try_from(meta.sequence).unwrap_or(i64::MAX)),
        category: (meta.category != 0).then_some(meta.category),
    })
}

/// The category of a signed report (by its details); `None` for a retraction.
fn payload_category(envelope: &pb::Envelope) -> Option<i32> {
    if envelope.payload_type != envelope::REPORT_PAYLOAD_TYPE {
        return None;
    }
    let report = pb::Report::decode(envelope.payload.as_slice()).ok()?;
    Some(match report.details? {
        pb::report::Details::Smuggling(_) => pb::Category::SmugglingIncident as i32,
        pb::report::Details::Maritime(_) => pb::Category::MaritimeMovement as i32,
    })
}

/// The report id, state, version and kind the signed payload names.
pub(super) fn payload_names(envelope: &pb::Envelope) -> (String, String, u32, &'static str) {
    let payload = envelope.payload.as_slice();
    if envelope.payload_type == envelope::RETRACTION_PAYLOAD_TYPE {
        let r = pb::Retraction::decode(payload).unwrap_or_default();
        (r.report_id, r.reporting_state, r.version, "retraction")
    } else {
        let r = pb::Report::decode(payload).unwrap_or_default();
        (r.report_id, r.reporting_state, r.version, "report")
    }
}

/// The line's `report` (what `query --json` decodes for reading) must be the signed
/// payload's report, field for field; a retraction's line has none.
fn report(line: &str, envelope: &pb::Envelope) -> Result<(), String> {
    let Some(shown) = super::super::input::field_as_written(line, "report") else {
        return Ok(());
    };
    let signed = (envelope.payload_type == envelope::REPORT_PAYLOAD_TYPE)
        .then(|| pb::Report::decode(envelope.payload.as_slice()).ok())
        .flatten();
    // Compared as reports, not as text: `2.0` and `"2"` are 2 in the proto3 JSON mapping.
    let shown = super::super::input::from_json::<pb::Report>(shown).ok();
    if signed.is_some() && signed == shown {
        Ok(())
    } else {
        Err(
            "its report is not the signed payload's (the line's \"report\" was altered, or \
             belongs to another envelope): read the report from the envelope's payload"
                .to_owned(),
        )
    }
}
