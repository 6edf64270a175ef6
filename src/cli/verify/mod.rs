//! `tidemark verify` and `tidemark keys`: check a report's provenance without trusting
//! the server.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tidemark::{
    client,
    clock::format_time,
    country::CountryCode,
    envelope,
    pb::{self, exchange_client::ExchangeClient},
    tlog::note::NoteVerifier,
};

use super::{client_args::ClientArgs, labels::printable};

mod keyfile;
mod line;

use keyfile::{
    KEY_ID, Key, REVOKED_AT, STATE, VALID_FROM, VALID_UNTIL, header_time, load_keys, split_keys,
};
use line::{Acceptance, Unproven};

/// Check downloaded reports' DSSE signatures offline against their owning states' public
/// keys (`tidemark keys --out keys/`).
///
/// Each FILE is a DSSE JSON envelope, or the output of `tidemark query --json` (JSON
/// lines: every line is checked, with a summary at the end). A report is valid only when
/// it verifies with a key of its own reporting state: key files that `keys` writes name
/// their state (a `State:` line), and a report signed by another state's key is invalid.
/// A key file that names no state (a bare public key) is taken as the reporting state's
/// only when it is the one key given — you say whose it is, and the result says it was
/// not checked; among several keys, one that names no state shows nothing (untrusted).
/// A key that `keys --out` wrote as revoked makes a report it signed untrusted when the
/// report was accepted at or after the revocation (the acceptance time is on each
/// `query --json` line). That time is the server's word unless the line carries its log
/// proof (`query --json --log-proofs`) and --log-key is given: then the proof is checked
/// and the time is taken from the report's transparency-log entry. A file that cannot be
/// read, or holds no envelope, is reported and the others are still checked. Exits non-zero unless every file holds envelopes
/// and every envelope is valid and trusted.
///
/// Example: tidemark query --category maritime --json > reports.jsonl;
///   tidemark verify reports.jsonl --public-key keys/
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The envelopes to check: DSSE JSON files, or `tidemark query --json` output.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The owning states' public keys (PEM, as `tidemark keys` prints them or `keys --out`
    /// writes them; a file may hold several): files, or directories whose *.pem files are
    /// all read; several may follow one flag (a file after them that is not a key is
    /// taken as an envelope to check).
    #[arg(long = "public-key", value_name = "FILE|DIR", required = true, num_args = 1..)]
    public_keys: Vec<PathBuf>,
    /// The log's note verifier key (`<origin>+<hex id>+<base64>`), or a file holding it
    /// (`tidemark log verifier-key` prints it). Each line's log proof ("logProof", from
    /// `query --json --log-proofs`) is then checked — inclusion under a checkpoint signed
    /// with this key, of an entry that commits to the envelope's exact payload — and the
    /// acceptance time is taken from that entry. A line whose proof fails is invalid; a
    /// line without one proves nothing, and fails the command (exit 1) once all are
    /// checked.
    #[arg(long, value_name = "KEY|FILE")]
    log_key: Option<String>,
}

/// What checking one envelope found.
enum Outcome {
    Valid,
    /// Valid, but its key was revoked before the report was accepted (or when it was
    /// accepted is not known).
    Untrusted,
    Invalid,
}

/// How many envelopes were found valid, untrusted or invalid, and how many files held none.
#[derive(Default)]
struct Tally {
    valid: u64,
    untrusted: u64,
    invalid: u64,
    unreadable: u64,
    /// Envelopes checked without a log proof beside them.
    unproven: u64,
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let (key_paths, more) = split_keys(&args.public_keys);
    let files: Vec<PathBuf> = args.files.iter().cloned().chain(more).collect();
    if files.is_empty() {
        bail!("name the envelopes to check: tidemark verify FILE… --public-key KEYS");
    }
    // The first path --public-key names is the key (or key directory) the others follow.
    if let Some(absent) = args
        .public_keys
        .first()
        .filter(|p| key_paths.is_empty() && !p.exists())
    {
        bail!(
            "--public-key {}: no such file or directory. Write the keys first: `tidemark keys \
             --out {}`",
            absent.display(),
            absent.display()
        );
    }
    if key_paths.is_empty() && !args.public_keys.is_empty() {
        // A key file that is no text (UTF-16, say) is told as such.
        if let Some(Err(e)) = args.public_keys.first().map(|p| super::input::read_text(p)) {
            bail!("--public-key {e:#}");
        }
        let named: Vec<String> = args
            .public_keys
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        bail!(
            "no PEM public key (-----BEGIN PUBLIC KEY-----) in what --public-key names: {}. \
             Give the key files `tidemark keys --out keys/` writes (an OpenSSH key or a \
             certificate is not one)",
            named.join(", ")
        );
    }
    if key_paths.is_empty() {
        bail!("no public key given: --public-key keys/ (written by `tidemark keys --out keys/`)");
    }
    let keys = load_keys(&key_paths)?;
    let log_key = args.log_key.as_deref().map(log_key).transpose()?;
    let mut tally = Tally::default();
    for file in &files {
        check_file(file, &keys, log_key.as_deref(), &mut tally)?;
    }
    let Tally {
        valid,
        untrusted,
        invalid,
        unreadable,
        unproven,
    } = tally;
    if log_key.is_some() && unproven > 0 {
        errln!(
            "{} of {} carried no log proof, so --log-key proved nothing about them (their \
             acceptance times are as their lines say): `tidemark query --json --log-proofs` \
             writes lines that carry one",
            unproven,
            super::labels::count(valid + untrusted + invalid, "envelope", "envelopes")
        );
    }
    let checked = valid + untrusted + invalid;
    if checked > 1 || untrusted + invalid + unreadable > 0 {
        let files = if unreadable > 0 {
            format!(
                "; {} unreadable or empty",
                super::labels::count(unreadable, "file", "files")
            )
        } else {
            String::new()
        };
        outln!(
            "{}: {valid} valid, {untrusted} untrusted (a key revoked before acceptance, or of no \
             known state), \
             {invalid} invalid{files}",
            super::labels::count(checked, "envelope", "envelopes")
        )?;
    }
    if untrusted + invalid + unreadable > 0 {
        bail!("not every envelope is valid and trusted (see above)");
    }
    if log_key.is_some() && unproven > 0 {
        bail!(
            "--log-key asks every envelope to prove its acceptance, and not every one did (see above)"
        );
    }
    Ok(())
}

/// The log's note verifier key that --log-key gives (as text or in a file), checked.
fn log_key(given: &str) -> anyhow::Result<String> {
    let text = super::submit::key_text(given, "note verifier key")
        .context("get the log's key with `tidemark log verifier-key`")?;
    let text = text.trim().to_owned();
    NoteVerifier::parse(&text).map_err(|e| {
        anyhow!(
            "--log-key {given}: not a note verifier key (`<origin>+<hex id>+<base64>`, as \
             `tidemark log verifier-key` prints it): {e}"
        )
    })?;
    Ok(text)
}

/// Checks every envelope in `file`, or says why it holds none.
fn check_file(
    file: &Path,
    keys: &[Key],
    log_key: Option<&str>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let unreadable = |tally: &mut Tally, said: String| -> anyhow::Result<()> {
        tally.unreadable += 1;
        outln!("UNREADABLE: {}", printable(&said))?;
        Ok(())
    };
    let whole = std::fs::metadata(file).map_or(true, |m| m.len() <= MAX_WHOLE_FILE);
    let mut found = 0u64;
    // An item is a line's text, or why it has none.
    let mut check_item = |line: Option<usize>, item: Result<&str, String>| -> anyhow::Result<()> {
        found += 1;
        let place = match line {
            Some(n) => format!("{} line {n}", file.display()),
            None => file.display().to_string(),
        };
        // The file's name and what its envelope says are anyone's text.
        let place = printable(&place);
        let proof = |item: &str| {
            serde_json::from_str::<serde_json::Value>(item)
                .ok()
                .is_some_and(|v| line::log_proof(&v).is_ok_and(|p| p.is_some()))
        };
        if item.as_ref().is_ok_and(|item| !proof(item)) {
            tally.unproven += 1;
        }
        match item.and_then(|item| check(item, keys, log_key)) {
            Ok((Outcome::Valid, said)) => {
                tally.valid += 1;
                outln!("valid: {}", printable(&said))?;
            }
            Ok((Outcome::Untrusted, said)) => {
                tally.untrusted += 1;
                outln!("UNTRUSTED: {place}: {}", printable(&said))?;
            }
            Ok((Outcome::Invalid, said)) | Err(said) => {
                tally.invalid += 1;
                outln!("INVALID: {place}: {}", printable(&said))?;
            }
        }
        Ok(())
    };
    // A small file that is UTF-8 text throughout is read whole: it may be one
    // pretty-printed envelope. Anything else can only be JSON lines (a query's output),
    // read one at a time, so that a line that is not UTF-8 is that line's fault only.
    let text = if whole {
        match std::fs::read(file) {
            Ok(bytes) => {
                if let Err(e) = tidemark::files::refuse_utf16(&bytes) {
                    return unreadable(tally, format!("{}: {e}", file.display()));
                }
                String::from_utf8(bytes).ok()
            }
            Err(e) => {
                return unreadable(tally, format!("{}: cannot read it: {e}", file.display()));
            }
        }
    } else {
        None
    };
    if let Some(text) = text {
        match items_of(&text) {
            Ok(items) => {
                for (line, item) in items {
                    check_item(line, Ok(item))?;
                }
            }
            Err(said) => return unreadable(tally, format!("{}: {said}", file.display())),
        }
    } else {
        use std::io::BufRead as _;
        let reader = match super::input::open(file) {
            Ok(reader) => reader,
            // Its errors name the file.
            Err(e) => return unreadable(tally, format!("{e:#}")),
        };
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    let said = format!("{} line {}: {e}", file.display(), i + 1);
                    return unreadable(tally, said);
                }
            };
            match std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(&line)) {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => check_item(Some(i + 1), Ok(line))?,
                Err(e) => check_item(
                    Some(i + 1),
                    Err(format!(
                        "the line is not UTF-8 text ({e}): save the file as UTF-8"
                    )),
                )?,
            }
        }
    }
    if found == 0 {
        return unreadable(
            tally,
            format!("{}: holds no envelope (the file is empty)", file.display()),
        );
    }
    Ok(())
}

/// The envelopes of a file read whole (after a byte-order mark): the file, if it is one
/// JSON document, or else each line that is not blank, with its number. A file of several
/// lines none of which is a JSON object is not JSON lines either (several pretty-printed
/// envelopes, say): one fault, said once, not one per line.
fn items_of(text: &str) -> Result<Vec<(Option<usize>, &str)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json = |text: &str| serde_json::from_str::<serde_json::Value>(text);
    let Err(whole) = is_json(text.trim()) else {
        return Ok(vec![(None, text.trim())]);
    };
    let lines: Vec<(Option<usize>, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (Some(i + 1), line))
        .collect();
    let object = |line: &str| is_json(line).is_ok_and(|v| v.is_object());
    if lines.len() > 1 && !lines.iter().any(|(_, line)| object(line)) {
        return Err(format!(
            "neither one JSON document ({whole}) nor JSON lines (no line is a JSON object): \
             put each envelope on a line of its own (`jq -c .` does), or in a file of its own"
        ));
    }
    Ok(lines)
}

/// The largest file read whole, as one (possibly pretty-printed) envelope or JSON lines;
/// a larger one is read as JSON lines, one at a time, whatever its size.
const MAX_WHOLE_FILE: u64 = 16 * 1024 * 1024;

/// The owning state and a description of a signed report or retraction (one that
/// [`not_a_report`] let through).
fn payload_facts(envelope: &pb::Envelope, key_id: &str) -> (String, String) {
    let (id, state, version, kind) = line::payload_names(envelope);
    let what = if kind == "retraction" {
        format!("retraction of report {id} version {version} of {state}, signed by key {key_id}")
    } else {
        format!("report {id} version {version} of {state}, signed by key {key_id}")
    };
    (state, what)
}

/// Why an envelope is not a report or retraction as the server accepts one: another
/// payload type, a payload that does not decode or is not in its one encoding, or one
/// that names no report or state.
fn not_a_report(envelope: &pb::Envelope) -> Option<String> {
    let payload = &envelope.payload;
    let refused = match envelope.payload_type.as_str() {
        envelope::REPORT_PAYLOAD_TYPE => {
            envelope::decode_canonical::<pb::Report>(payload, "tidemark.v1.Report").err()
        }
        envelope::RETRACTION_PAYLOAD_TYPE => {
            envelope::decode_canonical::<pb::Retraction>(payload, "tidemark.v1.Retraction").err()
        }
        other => {
            return Some(format!(
                "payload type {other:?} is not a Tidemark report ({:?}) or retraction ({:?})",
                envelope::REPORT_PAYLOAD_TYPE,
                envelope::RETRACTION_PAYLOAD_TYPE
            ));
        }
    };
    if let Some(refused) = refused {
        return Some(refused.to_string());
    }
    let (id, state, _, kind) = line::payload_names(envelope);
    (id.is_empty() || state.is_empty()).then(|| {
        format!(
            "the signed {kind} names no report id or no reporting state: not one the server accepts"
        )
    })
}

/// The line (or file) `item` as JSON, and the DSSE envelope it is or holds.
fn read_envelope(item: &str) -> Result<(serde_json::Value, pb::Envelope), String> {
    if item.trim_start().starts_with(tidemark::files::BOM) {
        return Err(
            "a byte-order mark (U+FEFF) here: one is read only at the very start of a file"
                .to_owned(),
        );
    }
    let value: serde_json::Value =
        serde_json::from_str(item).map_err(|e| format!("not JSON: {e}"))?;
    // Which of two "payload"s (or acceptance times) would be checked is the reader's
    // guess: a key given twice is refused.
    super::input::no_duplicate_keys(item)?;
    if value.is_array() {
        return Err(
            "a JSON array: verify reads one envelope per file, or JSON lines (one \
                    envelope or `query --json` line per line)"
                .to_owned(),
        );
    }
    line::check_fields(&value)?;
    let mut envelope_json = value
        .get("envelope")
        .cloned()
        .unwrap_or_else(|| value.clone());
    // As the proto3 JSON mapping reads it: null is the default ("keyid": null is no key id).
    super::input::integral_numbers(&mut envelope_json);
    // With unknown fields ignored, any object would read as an envelope with nothing in
    // it: one must carry a DSSE field (proto3 JSON leaves out those at their defaults).
    let not_dsse = || {
        "not a DSSE envelope (a report as JSON is not signed: verify what `tidemark query \
         --json` prints, or a DSSE JSON file)"
            .to_owned()
    };
    if !["payloadType", "payload_type", "payload", "signatures"]
        .iter()
        .any(|k| envelope_json.get(k).is_some())
    {
        return Err(not_dsse());
    }
    super::input::dsse_fields(&mut envelope_json);
    for name in ["payload", "payloadType", "payload_type"] {
        let field = envelope_json.get(name).filter(|v| !v.is_null());
        let fault = match (name, field) {
            (_, None) => None,
            ("payload", Some(payload)) => super::input::base64_fault(payload),
            (_, Some(text)) => (!text.is_string()).then(|| format!("is not text but {text}")),
        };
        if let Some(fault) = fault {
            return Err(format!("not a DSSE envelope as JSON: {name} {fault}"));
        }
    }
    let voided = super::input::void_unreadable_signatures(&mut envelope_json);
    // No signature left to check but those that could not be read (the others empty):
    // those are what the envelope's signing went wrong with.
    let checkable = envelope_json
        .get("signatures")
        .and_then(serde_json::Value::as_array)
        .map_or(0, |all| {
            all.iter()
                .filter(|s| {
                    s.get("sig")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                })
                .count()
        });
    if !voided.is_empty() && checkable == 0 {
        return Err(format!(
            "no signature of the envelope can be read: {}",
            voided.join("; ")
        ));
    }
    let envelope = serde_json::from_value(envelope_json)
        .map_err(|e| format!("not a DSSE envelope as JSON: {e}"))?;
    Ok((value, envelope))
}

/// The envelope in `item` (DSSE JSON, or a `query --json` or `sync` line) as `verify`
/// reads it, for `verify-receipt --envelope`: refused as `verify` refuses it when the
/// server would not have accepted it as it is (too many signatures, say).
pub(super) fn read_line(item: &str) -> Result<pb::Envelope, String> {
    let (_, envelope) = read_envelope(item)?;
    if let Some(why) = too_many_signatures(&envelope) {
        return Err(why);
    }
    Ok(envelope)
}

/// What the line `item` says beside `envelope` (its meta and report), against the
/// payload and against `accepted`, the log entry at `index` of a proof that verified:
/// for `verify-receipt --envelope`, which holds a line to its proof as `verify` does.
pub(super) fn line_against_entry(
    item: &str,
    envelope: &pb::Envelope,
    accepted: &tidemark::tlog::entry::EnvelopeEntry,
    index: u64,
) -> Result<(), String> {
    line::against_entry(item, envelope, accepted, index)
}

/// Why the server would not have accepted `envelope` as it is, whoever signed it: no
/// signature, more than it takes (as the Python client judges it), or no report or
/// retraction in its one encoding.
pub(super) fn not_accepted_as_it_is(envelope: &pb::Envelope) -> Option<String> {
    // A signature of no bytes is none.
    if envelope.signatures.iter().all(|s| s.sig.is_empty()) {
        return Some("the envelope carries no signature".to_owned());
    }
    too_many_signatures(envelope).or_else(|| not_a_report(envelope))
}

/// Why the server would not have accepted `envelope` as it is: more signatures than it
/// takes (added since).
fn too_many_signatures(envelope: &pb::Envelope) -> Option<String> {
    let most = envelope::MAX_SIGNATURES;
    let n = envelope.signatures.len();
    (n > most).then(|| {
        format!(
            "the envelope carries {n} signatures; the server accepts at most {most}, so it \
             did not accept this envelope as it is (signatures were added since)"
        )
    })
}

/// Checks one envelope (or `query --json` line) against the keys, and the line's log
/// proof against the log key if given.
fn check(item: &str, keys: &[Key], log_key: Option<&str>) -> Result<(Outcome, String), String> {
    let (value, envelope) = read_envelope(item)?;
    if let Some(why) = not_accepted_as_it_is(&envelope) {
        return Ok((Outcome::Invalid, why));
    }
    // What the line says beside the envelope (meta, report, log proof) must agree with it.
    let accepted = match line::check((&value, item), &envelope, log_key) {
        Ok(accepted) => accepted,
        Err(why) => return Ok((Outcome::Invalid, why)),
    };
    // Every given key that made one of the signatures; the owner's own keys, if among
    // them, are the ones that count, whatever the order of signatures or files. Each
    // signature stands alone (DSSE: several signatures are as several envelopes), so one
    // trusted signature suffices, as for the server; when none is, the key revoked or
    // expiring latest or not at all says why.
    let signed = envelope::SignedBytes::of(&envelope);
    let signers: Vec<&Key> = keys
        .iter()
        .filter(|k| {
            envelope
                .signatures
                .iter()
                .any(|s| signed.verifies(s, &k.public))
        })
        .collect();
    let (owner, _) = payload_facts(&envelope, "");
    let latest = |k: &&Key| {
        let end = |t: Option<i64>| t.unwrap_or(i64::MAX);
        std::cmp::Reverse(end(k.revoked_at).min(end(k.valid_until)))
    };
    let owners: Vec<&Key> = signers
        .iter()
        .copied()
        .filter(|k| k.state.is_some_and(|s| owner == s.as_str()))
        .collect();
    let stateless: Vec<&Key> = signers
        .iter()
        .copied()
        .filter(|k| k.state.is_none())
        .collect();
    let mut candidates = if !owners.is_empty() {
        owners
    } else if !stateless.is_empty() {
        stateless
    } else {
        signers.first().copied().into_iter().collect()
    };
    candidates.sort_by_key(latest);
    let Some(first) = candidates.first() else {
        return Ok((
            Outcome::Invalid,
            format!(
                "the signature does not verify with the given keys: the report was altered, \
                 or the {owner} key that signed it was not given (`tidemark keys --out keys/` \
                 exports every state's)"
            ),
        ));
    };
    let judged = |key: &Key| judge(key, keys, &envelope, accepted);
    Ok(candidates
        .iter()
        .map(|key| judged(key))
        .find(|(outcome, _)| matches!(outcome, Outcome::Valid))
        .unwrap_or_else(|| judged(first)))
}

/// What a valid signature by `key` (one of the given `keys`) makes of `envelope`'s report,
/// accepted as `accepted` says.
fn judge(
    key: &Key,
    keys: &[Key],
    envelope: &pb::Envelope,
    accepted: Acceptance,
) -> (Outcome, String) {
    let (owner, what) = payload_facts(envelope, key.public.key_id());
    match (key.state, owner) {
        (Some(registered), owner) if registered.as_str() != owner => {
            return (
                Outcome::Invalid,
                format!(
                    "{what}, a key registered to {registered}: a state's reports are valid \
                     only under its own keys, so this is not {owner}'s report"
                ),
            );
        }
        // A key whose file names no state is taken as the owner's only when it is the
        // one key given (the caller said whose it is): once the owner's keys are known,
        // any other key's signature does not make the report the owner's, and among
        // several keys of no named state nothing says which is whose.
        (None, owner)
            if keys
                .iter()
                .any(|k| k.state.is_some_and(|s| s.as_str() == owner)) =>
        {
            return (
                Outcome::Untrusted,
                format!(
                    "{what}, whose key file names no state and which is not one of the \
                     {owner} keys given: not shown to be {owner}'s report"
                ),
            );
        }
        (None, owner) if keys.len() > 1 => {
            return (
                Outcome::Untrusted,
                format!(
                    "{what}, whose key file names no state, one of {} keys given: nothing \
                     shows it is {owner}'s rather than another state's — give {owner}'s key \
                     alone, or key files that name their state (`tidemark keys --out DIR`)",
                    keys.len()
                ),
            );
        }
        (None, owner) => {
            let noted = format!(
                "{what} (its key file names no state, so the key was not checked to be \
                 {owner}'s; `tidemark keys --out` writes key files that do)"
            );
            return outside_validity(key, &accepted, &noted)
                .unwrap_or_else(|| trust_at(noted, key.revoked_at, accepted));
        }
        (Some(_), _) => {}
    }
    outside_validity(key, &accepted, &what)
        .unwrap_or_else(|| trust_at(what, key.revoked_at, accepted))
}

/// Why a report is not trusted if it is not shown to have been accepted while its key
/// was valid: before its validity began ([`not_yet_valid`]) or after it ended
/// ([`expired`]).
fn outside_validity(key: &Key, accepted: &Acceptance, what: &str) -> Option<(Outcome, String)> {
    not_yet_valid(key, accepted, what).or_else(|| expired(key, accepted, what))
}

/// Why a report is not trusted if it was accepted before its key's validity began, as
/// proven or as its line says (the server accepts nothing a key signs before), or the
/// key is not valid yet at all.
fn not_yet_valid(key: &Key, accepted: &Acceptance, what: &str) -> Option<(Outcome, String)> {
    let from = key.valid_from?;
    let from_text = format_time(from);
    let said = |at: i64, how: &str| {
        format!(
            "{what}, valid from {from_text}, after this report was accepted ({}, {how}): the \
             server accepts nothing a key signs before its validity begins",
            format_time(at)
        )
    };
    let untrusted = match *accepted {
        Acceptance::Proven { at, index, .. } if at < from => {
            said(at, &format!("as its log entry {index} proves"))
        }
        Acceptance::Said { at: Some(at), .. } if at < from => said(at, "as the line's meta says"),
        _ if from > time::OffsetDateTime::now_utc().unix_timestamp() => format!(
            "{what}, valid from {from_text}, which has not come: no report signed with it \
             can have been accepted yet"
        ),
        _ => return None,
    };
    Some((Outcome::Untrusted, untrusted))
}

/// Why a report is not trusted if its key's validity has ended and the report is not
/// shown to have been accepted before that (the server accepts nothing a key signs
/// after): accepted at or after the end, as proven or as its line says; or, as for a
/// revoked key, accepted when nobody can tell, or without the log proof --log-key asks
/// for. A key whose validity has not ended yet is no reason to doubt a report whose
/// acceptance is not known to be after its end.
fn expired(key: &Key, accepted: &Acceptance, what: &str) -> Option<(Outcome, String)> {
    let until = key.valid_until?;
    let ended = until <= time::OffsetDateTime::now_utc().unix_timestamp();
    let until_text = format_time(until);
    let said = |at: i64, how: &str| {
        format!(
            "{what}, valid until {until_text}, before this report was accepted ({}, {how}): \
             the server accepts nothing a key signs after its validity ends",
            format_time(at)
        )
    };
    let untrusted = match *accepted {
        Acceptance::Proven { at, index, .. } if at >= until => {
            said(at, &format!("as its log entry {index} proves"))
        }
        Acceptance::Said { at: Some(at), .. } if at >= until => said(at, "as the line's meta says"),
        // Accepted before the end, or not known when, while the key is still valid.
        _ if !ended => return None,
        Acceptance::Said { at: None, .. } => format!(
            "{what}, valid until {until_text}; when this envelope was accepted is not known \
             (verify a line of `tidemark query --json --log-proofs`, which proves it)"
        ),
        Acceptance::Said {
            at: Some(at),
            unproven: Unproven::NoProof { key_given: true },
        } => format!(
            "{what}, valid until {until_text}; the line's meta says it was accepted before \
             ({}), but the line carries no log proof to show it, which --log-key asks for \
             (`tidemark query --json --log-proofs` adds them)",
            format_time(at)
        ),
        Acceptance::Proven { .. } | Acceptance::Said { .. } => return None,
    };
    Some((Outcome::Untrusted, untrusted))
}

/// Whether a valid signature is trusted: its key was not revoked before the report was
/// accepted, as the log proves or, unless a proof was asked for (--log-key), as the
/// line's meta says.
fn trust_at(what: String, revoked_at: Option<i64>, accepted: Acceptance) -> (Outcome, String) {
    let Some(revoked) = revoked_at else {
        return match accepted {
            Acceptance::Proven { at, index, size } => (
                Outcome::Valid,
                format!(
                    "{what}, accepted at {} (log entry {index}, under the checkpoint of size \
                     {size})",
                    format_time(at)
                ),
            ),
            Acceptance::Said { .. } => (Outcome::Valid, what),
        };
    };
    let revoked_text = format_time(revoked);
    match accepted {
        Acceptance::Proven { at, index, size } if at < revoked => (
            Outcome::Valid,
            format!(
                "{what} (revoked as of {revoked_text}, after this report was accepted at {}, \
                 as its log entry {index} under the checkpoint of size {size} proves)",
                format_time(at)
            ),
        ),
        Acceptance::Proven { at, index, .. } => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {revoked_text}, at or before this report was accepted \
                 ({}, as its log entry {index} proves)",
                format_time(at)
            ),
        ),
        Acceptance::Said {
            at: Some(at),
            unproven: Unproven::NoProof { key_given: true },
        } if at < revoked => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {revoked_text}; the line's meta says it was accepted \
                 before ({}), but the line carries no log proof to show it, which --log-key \
                 asks for (`tidemark query --json --log-proofs` adds them)",
                format_time(at)
            ),
        ),
        Acceptance::Said {
            at: Some(at),
            unproven,
        } if at < revoked => (
            Outcome::Valid,
            format!(
                "{what} (revoked as of {revoked_text}, after this report was accepted at {} — \
                 that time is the server's, from the line's meta, which is not signed: {})",
                format_time(at),
                if unproven == Unproven::NoKey {
                    "give --log-key to check the line's log proof, which proves it"
                } else {
                    "`tidemark query --json --log-proofs` and `verify --log-key` prove it"
                }
            ),
        ),
        Acceptance::Said { at: Some(at), .. } => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {revoked_text}, at or before this report was accepted \
                 ({}, as the line's meta says)",
                format_time(at)
            ),
        ),
        Acceptance::Said { at: None, .. } => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {revoked_text}; when this envelope was accepted is not \
                 known (verify a line of `tidemark query --json --log-proofs`, which proves it)"
            ),
        ),
    }
}

/// Export states' registered report-signing public keys as PEM files, for `verify`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Only this state's keys.
    #[arg(long)]
    state: Option<CountryCode>,
    /// Write <state>-<key id>.pub.pem files here (default: print them); a key's file says
    /// from and until when it is valid (`Valid-From:`, `Valid-Until:`) and, if revoked,
    /// since when (`Revoked-At:`), in lines before the PEM, which `verify` reads.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let keys = ExchangeClient::new(args.client.connect().await?)
        .signing_keys(pb::SigningKeysRequest {
            state: args.state.map(|s| s.to_string()).unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner()
        .keys;
    if keys.is_empty() {
        errln!(
            "no signing key is registered{}; an operator registers them with \
             `tidemark admin register-key`",
            args.state.map(|s| format!(" to {s}")).unwrap_or_default()
        );
    }
    let mut written = Vec::new();
    for k in &keys {
        let header = |name: &str, at: i64| {
            if at == 0 {
                String::new()
            } else {
                format!("{name}{}\n", header_time(at))
            }
        };
        // As of when: what a reader needs to judge what the key signed.
        let flag = if k.revoked_at_unix != 0 {
            format!(
                " REVOKED as of {}",
                tidemark::clock::format_time(k.revoked_at_unix)
            )
        } else {
            String::new()
        };
        // The headers `verify` reads: whose key this is, when it is valid and since when
        // it is revoked.
        let pem = format!(
            "{KEY_ID}{}\n{STATE}{}\n{}{}{}{}",
            k.key_id,
            k.state,
            header(VALID_FROM, k.valid_from_unix),
            header(VALID_UNTIL, k.valid_until_unix),
            header(REVOKED_AT, k.revoked_at_unix),
            k.public_key_pem
        );
        match &args.out {
            Some(dir) => {
                tidemark::files::create_dir_all(dir)
                    .with_context(|| format!("cannot create the directory {}", dir.display()))?;
                let path = dir.join(format!("{}-{}.pub.pem", k.state.to_lowercase(), k.key_id));
                tidemark::files::replace(&path, pem.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                written.push(format!(
                    "{} {}{flag} -> {}",
                    k.state,
                    k.key_id,
                    path.display()
                ));
            }
            None => out!("# {} {}{flag}\n{pem}", k.state, k.key_id)?,
        }
    }
    // Every file is written before anything is said: a closed stdout cannot stop the
    // work half done.
    for line in written {
        outln!("{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tidemark::signing::SigningKey;

    /// An envelope of `payload` as DSSE JSON, signed by `key`.
    fn dsse_json(payload: Vec<u8>, key: &SigningKey) -> String {
        let envelope = envelope::sign(envelope::REPORT_PAYLOAD_TYPE, payload, key);
        serde_json::to_string(&envelope).unwrap()
    }

    #[test]
    fn a_payload_not_in_its_one_encoding_is_invalid_even_when_signed() {
        let (key, _) = SigningKey::generate().unwrap();
        let keys = [Key {
            public: key.public_key().clone(),
            state: Some(CountryCode::parse("AUS").unwrap()),
            revoked_at: None,
            valid_until: None,
            valid_from: None,
        }];
        let mut rng = tidemark::sample::Rng::new(7);
        let report = tidemark::sample::report(&mut rng, "AUS");
        let (outcome, _) = check(&dsse_json(report.encode_to_vec(), &key), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Valid));

        let mut hidden = report.encode_to_vec();
        prost::encoding::string::encode(99, &"hidden note".to_owned(), &mut hidden);
        let (outcome, said) = check(&dsse_json(hidden, &key), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
        assert!(said.contains("one encoding"), "{said}");
    }

    #[test]
    fn an_envelope_of_another_type_or_with_a_key_twice_is_invalid() {
        let (key, keys) = any_key();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(8), "AUS");
        let json = dsse_json(report.encode_to_vec(), &key);
        let other = envelope::sign("text/plain", b"hello".to_vec(), &key);
        let (outcome, said) = check(&serde_json::to_string(&other).unwrap(), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
        assert!(said.contains("not a Tidemark report"), "{said}");
        let twice = json.replacen('{', "{\"payload\":\"AAAA\",", 1);
        let Err(said) = check(&twice, &keys, None) else {
            panic!("an envelope with two payloads was checked");
        };
        assert!(said.contains("given twice"), "{said}");
        assert!(check(&json, &keys, None).is_ok());
    }

    /// A payload, payload type or signature that cannot be read is refused naming the
    /// field and the rule, not with the base64 reader's bare "Invalid symbol".
    #[test]
    fn an_unreadable_field_is_named() {
        let (key, keys) = any_key();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(8), "AUS");
        let json: serde_json::Value =
            serde_json::from_str(&dsse_json(report.encode_to_vec(), &key)).unwrap();
        let payload = json["payload"].as_str().unwrap().to_owned();
        for (field, value, said) in [
            (
                "payload",
                serde_json::json!(format!("!{payload}")),
                "payload is not base64: '!' at byte 0",
            ),
            (
                "payload",
                serde_json::json!(format!("{}\n{}", &payload[..20], &payload[20..])),
                "payload is not base64: '\\n' at byte 20",
            ),
            (
                "payload",
                serde_json::json!(12),
                "payload is not text but 12",
            ),
            (
                "payloadType",
                serde_json::json!(12),
                "payloadType is not text but 12",
            ),
        ] {
            let mut changed = json.clone();
            changed[field] = value;
            let Err(e) = check(&changed.to_string(), &keys, None) else {
                panic!("{changed} was read");
            };
            assert!(e.contains(said), "{field}: {e}");
        }
        // One unreadable signature, alone or beside empty ones: named.
        for others in [
            vec![],
            vec![serde_json::json!({"sig": ""})],
            vec![
                serde_json::json!({"sig": null}),
                serde_json::json!({"keyid": "k"}),
            ],
        ] {
            let mut changed = json.clone();
            changed["signatures"][0]["sig"] = serde_json::json!("!!!!");
            for other in &others {
                changed["signatures"]
                    .as_array_mut()
                    .unwrap()
                    .push(other.clone());
            }
            let Err(e) = check(&changed.to_string(), &keys, None) else {
                panic!("{changed} was read");
            };
            assert!(
                e.contains(
                    "no signature of the envelope can be read: signatures[0]: sig is not base64"
                ),
                "{others:?}: {e}"
            );
        }
    }

    /// DSSE: "consumers MUST ignore unrecognized fields"; each signature is judged alone.
    #[test]
    fn unknown_dsse_fields_are_ignored_and_an_unreadable_signature_spoils_no_other() {
        let (key, keys) = any_key();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(12), "AUS");
        let mut envelope: serde_json::Value =
            serde_json::from_str(&dsse_json(report.encode_to_vec(), &key)).unwrap();
        envelope["foo"] = "bar".into();
        envelope["signatures"][0]["extra"] = 1.into();
        // Three unreadable signatures before the good one (four in all, as many as the
        // server takes), then the fourth kind in place of the first.
        let junk = [
            serde_json::json!({"keyid": "other", "sig": "!!!"}),
            serde_json::json!({"keyid": "other", "sig": 12345}),
            serde_json::json!({"keyid": 5, "sig": "AAAA"}),
            serde_json::json!("not a signature"),
        ];
        for bad in &junk[..3] {
            envelope["signatures"]
                .as_array_mut()
                .unwrap()
                .insert(0, bad.clone());
        }
        for last in [None, Some(&junk[3])] {
            if let Some(bad) = last {
                envelope["signatures"][0] = bad.clone();
            }
            let (outcome, said) = check(&envelope.to_string(), &keys, None).unwrap();
            assert!(matches!(outcome, Outcome::Valid), "{said}");
            let mut voided = envelope.clone();
            let said = crate::cli::input::void_unreadable_signatures(&mut voided);
            assert_eq!(said.len(), 3, "{said:?}");
            let read: pb::Envelope = crate::cli::input::from_json(&voided.to_string()).unwrap();
            assert_eq!(read.signatures.len(), 4);
            assert_eq!(
                read.signatures.iter().filter(|s| s.sig.is_empty()).count(),
                3
            );
        }
    }

    /// A new key, its file naming no state.
    fn any_key() -> (SigningKey, [Key; 1]) {
        let (key, _) = SigningKey::generate().unwrap();
        let keys = [Key {
            public: key.public_key().clone(),
            state: None,
            revoked_at: None,
            valid_until: None,
            valid_from: None,
        }];
        (key, keys)
    }

    /// AUS's key, its file naming AUS, revoked as of `revoked_at` if given.
    fn aus_key(key: &SigningKey, revoked_at: Option<i64>) -> [Key; 1] {
        [Key {
            public: key.public_key().clone(),
            state: Some(CountryCode::parse("AUS").unwrap()),
            revoked_at,
            valid_until: None,
            valid_from: None,
        }]
    }

    /// A `query --json` line of `report`, signed by `key`, accepted at `at`.
    fn query_line(report: &pb::Report, key: &SigningKey, at: i64) -> serde_json::Value {
        let envelope: serde_json::Value =
            serde_json::from_str(&dsse_json(report.encode_to_vec(), key)).unwrap();
        serde_json::json!({
            "meta": {
                "sequence": 7,
                "acceptedAtUnix": at,
                "reportingState": report.reporting_state,
                "reportId": report.report_id,
                "version": report.version,
                "kind": "report",
                "category": if matches!(report.details, Some(pb::report::Details::Smuggling(_))) {
                    "CATEGORY_SMUGGLING_INCIDENT"
                } else {
                    "CATEGORY_MARITIME_MOVEMENT"
                },
            },
            "envelope": envelope,
            "report": crate::cli::json::value(report, "tidemark.v1.Report"),
        })
    }

    /// An envelope signed by two of the owner's keys, one revoked before it was accepted
    /// and one not, is valid whatever the order of signatures and key files.
    #[test]
    fn one_trusted_signature_suffices_whichever_comes_first() {
        let (old, _) = SigningKey::generate().unwrap();
        let (new, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(13), "AUS");
        let at = 1_700_000_000;
        let mut line = query_line(&report, &old, at);
        let second = query_line(&report, &new, at)["envelope"]["signatures"][0].clone();
        line["envelope"]["signatures"]
            .as_array_mut()
            .unwrap()
            .push(second);
        let both = || {
            let [revoked] = aus_key(&old, Some(at - 10));
            let [current] = aus_key(&new, None);
            [revoked, current]
        };
        let mut swapped = both();
        swapped.reverse();
        for keys in [both(), swapped] {
            let (outcome, said) = check(&line.to_string(), &keys, None).unwrap();
            assert!(matches!(outcome, Outcome::Valid), "{said}");
        }
        let mut reversed = line.clone();
        reversed["envelope"]["signatures"]
            .as_array_mut()
            .unwrap()
            .reverse();
        let (outcome, said) =
            check(&reversed.to_string(), &aus_key(&old, Some(at - 10)), None).unwrap();
        assert!(
            !matches!(outcome, Outcome::Valid),
            "only the revoked key given: {said}"
        );
        // Each signature is judged alone: a second one by a key registered after the
        // report was accepted (re-signed after a rotation) spoils nothing, in either
        // order of signatures or of key files; alone, that key vouches for nothing.
        let later = || {
            let [mut k] = aus_key(&new, None);
            k.valid_from = Some(at + 3_600);
            k
        };
        let current_and_later = || {
            let [current] = aus_key(&old, None);
            [current, later()]
        };
        let mut later_first = current_and_later();
        later_first.reverse();
        for text in [line.to_string(), reversed.to_string()] {
            for keys in [current_and_later(), later_first] {
                let (outcome, said) = check(&text, &keys, None).unwrap();
                assert!(matches!(outcome, Outcome::Valid), "{said}");
            }
            let (outcome, said) = check(&text, &[later()], None).unwrap();
            assert!(matches!(outcome, Outcome::Untrusted), "{said}");
            later_first = current_and_later();
            later_first.reverse();
        }
    }

    /// A report accepted after its key's validity ended is not trusted (the server would
    /// have refused it); one accepted before is valid.
    #[test]
    fn a_key_past_its_validity_is_not_trusted_for_what_it_signed_after() {
        let (key, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(14), "AUS");
        let at = 1_700_000_000;
        let line = query_line(&report, &key, at).to_string();
        for (until, trusted) in [(at + 1, true), (at, false), (at - 60, false)] {
            let [mut file] = aus_key(&key, None);
            file.valid_until = Some(until);
            let (outcome, said) = check(&line, &[file], None).unwrap();
            assert_eq!(
                matches!(outcome, Outcome::Valid),
                trusted,
                "{until}: {said}"
            );
            if !trusted {
                assert!(said.contains("valid until"), "{said}");
            }
        }
        // Past its end, an acceptance nobody can show to be earlier is not trusted either:
        // no time, or no log proof where --log-key asks for one. A key still valid is no
        // reason to doubt.
        let mut timeless = query_line(&report, &key, at);
        timeless["meta"] = serde_json::Value::Null;
        let log_key = tidemark::tlog::note::NoteSigner::generate("example.org/log")
            .unwrap()
            .verifier_key();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (text, log_key, until, trusted) in [
            (timeless.to_string(), None, at + 1, false),
            (line.clone(), Some(log_key.as_str()), at + 1, false),
            (line.clone(), None, at + 1, true),
            (timeless.to_string(), None, now + 3_600, true),
            (line.clone(), Some(log_key.as_str()), now + 3_600, true),
        ] {
            check_until(&text, &key, until, log_key, trusted);
        }
        // A line that says it was accepted after the key's end is not trusted, whether
        // or not that end has come yet.
        let late = query_line(&report, &key, now + 7_200).to_string();
        check_until(&late, &key, now + 3_600, None, false);
    }

    /// A report accepted before its key's validity began is not trusted (the server
    /// would have refused it), nor any while the key is not valid yet; one accepted from
    /// its start on is valid.
    #[test]
    fn a_key_before_its_validity_is_not_trusted_for_what_it_signed_before() {
        let (key, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(15), "AUS");
        let at = 1_700_000_000;
        let line = query_line(&report, &key, at).to_string();
        let mut timeless = query_line(&report, &key, at);
        timeless["meta"] = serde_json::Value::Null;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (text, from, trusted) in [
            (&line, at, true),
            (&line, at - 60, true),
            (&line, at + 1, false),
            (&timeless.to_string(), at + 1, true),
            (&timeless.to_string(), now + 3_600, false),
        ] {
            let [mut file] = aus_key(&key, None);
            file.valid_from = Some(from);
            let (outcome, said) = check(text, &[file], None).unwrap();
            assert_eq!(matches!(outcome, Outcome::Valid), trusted, "{from}: {said}");
            if !trusted {
                assert!(said.contains("valid from"), "{said}");
            }
        }
    }

    /// A line's log proof is read under either proto3 JSON name; a field no line holds,
    /// or one under both names, is refused (read past, a misspelt proof was taken for
    /// none and a second one went unchecked).
    #[test]
    fn a_lines_fields_are_read_under_their_proto3_json_names_only() {
        let (key, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(16), "AUS");
        let keys = aus_key(&key, None);
        let log_key = tidemark::tlog::note::NoteSigner::generate("example.org/log")
            .unwrap()
            .verifier_key();
        let line = query_line(&report, &key, 1_700_000_000);
        for name in ["logProof", "log_proof"] {
            let mut proven = line.clone();
            proven[name] = "not a proof".into();
            let (outcome, said) = check(&proven.to_string(), &keys, Some(&log_key)).unwrap();
            assert!(matches!(outcome, Outcome::Invalid), "{name}: {said}");
            assert!(said.contains("log proof does not verify"), "{name}: {said}");
        }
        // More signatures than the server takes: it did not accept this envelope.
        let mut padded = line.clone();
        for _ in 0..4 {
            let first = padded["envelope"]["signatures"][0].clone();
            padded["envelope"]["signatures"]
                .as_array_mut()
                .unwrap()
                .push(first);
        }
        let (outcome, said) = check(&padded.to_string(), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
        assert!(said.contains("5 signatures"), "{said}");
        let mut both = line.clone();
        both["logProof"] = "a".into();
        both["log_proof"] = "b".into();
        let mut unknown = line.clone();
        unknown["bogus"] = 1.into();
        // A bare envelope with a line's field beside its own; an envelope with one field
        // under both names (named, not taken for a report as JSON).
        let mut bare = line["envelope"].clone();
        bare["logProof"] = "a".into();
        let mut twice = line.clone();
        twice["envelope"]["payload_type"] = twice["envelope"]["payloadType"].clone();
        for (text, says) in [
            (both, "two names of one field"),
            (unknown, "\"bogus\""),
            (bare, "a line holds its envelope under"),
            (twice, "payload"),
        ] {
            let Err(refused) = check(&text.to_string(), &keys, None) else {
                panic!("{says}: not refused");
            };
            assert!(refused.contains(says), "{refused}");
        }
    }

    /// A log entry that commits to an envelope's payload must also record what the
    /// payload says: its state, report id, version, kind and category (an operator's
    /// entry of the right payload under another state's name credited one state's report
    /// to another, and both verifiers called the proof valid).
    #[test]
    fn a_log_entry_must_record_what_its_payload_says() {
        use tidemark::tlog::entry::{EnvelopeEntry, sha256};
        let (key, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(17), "AUS");
        let category = match report.details {
            Some(pb::report::Details::Maritime(_)) => "maritime-movement",
            _ => "smuggling-incident",
        };
        let envelope = envelope::sign(envelope::REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &key);
        let entry = EnvelopeEntry {
            sequence: 3,
            state: "AUS".to_owned(),
            report_sha256: sha256(report.report_id.as_bytes()),
            version: report.version,
            category: category.to_owned(),
            kind: "report".to_owned(),
            accepted_at: 1_700_000_000,
            payload_sha256: sha256(&envelope.payload),
        };
        assert_eq!(line::entry_describes(&entry, &envelope, None), Ok(()));
        let other = if category == "maritime-movement" {
            "smuggling-incident"
        } else {
            "maritime-movement"
        };
        for field in ["state", "report", "version", "kind", "category"] {
            let mut altered = entry.clone();
            match field {
                "state" => altered.state = "THA".to_owned(),
                "report" => altered.report_sha256 = sha256(b"another"),
                "version" => altered.version += 6,
                "kind" => altered.kind = "retraction".to_owned(),
                _ => altered.category = other.to_owned(),
            }
            let said = line::entry_describes(&altered, &envelope, None).unwrap_err();
            assert!(said.starts_with(&format!("records {field} ")), "{said}");
        }
        // A retraction names no category: the line's meta says it, and is named so.
        let retraction = pb::Retraction {
            report_id: report.report_id.clone(),
            reporting_state: "AUS".to_owned(),
            version: report.version + 1,
            reason: "test".to_owned(),
        };
        let retracted = envelope::sign(
            envelope::RETRACTION_PAYLOAD_TYPE,
            retraction.encode_to_vec(),
            &key,
        );
        let entry = EnvelopeEntry {
            version: retraction.version,
            kind: "retraction".to_owned(),
            payload_sha256: sha256(&retracted.payload),
            ..entry
        };
        let said_other = if category == "maritime-movement" {
            pb::Category::SmugglingIncident
        } else {
            pb::Category::MaritimeMovement
        };
        assert_eq!(line::entry_describes(&entry, &retracted, None), Ok(()));
        let said = line::entry_describes(&entry, &retracted, Some(said_other as i32)).unwrap_err();
        assert!(said.contains("where the line's meta says"), "{said}");
    }

    /// Checks `text` with `key` valid until `until`: trusted or not.
    fn check_until(text: &str, key: &SigningKey, until: i64, log_key: Option<&str>, trusted: bool) {
        {
            let [mut file] = aus_key(key, None);
            file.valid_until = Some(until);
            let (outcome, said) = check(text, &[file], log_key).unwrap();
            assert_eq!(
                matches!(outcome, Outcome::Valid),
                trusted,
                "{until}: {said}"
            );
        }
    }

    /// Nothing on a line beside the envelope may say what the signed payload does not,
    /// and a signature over a payload that does not decode proves no report.
    #[test]
    fn a_line_whose_meta_or_report_disagrees_with_its_payload_is_invalid() {
        let (key, _) = SigningKey::generate().unwrap();
        let keys = aus_key(&key, None);
        let mut rng = tidemark::sample::Rng::new(9);
        let (report, other) = (
            tidemark::sample::report(&mut rng, "AUS"),
            tidemark::sample::report(&mut rng, "AUS"),
        );
        let line = query_line(&report, &key, 1_700_000_000);
        let (outcome, said) = check(&line.to_string(), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Valid), "{said}");
        // As proto3 JSON reads it: null is absent, 1.0 is 1, "1" is 1.
        for (at, value) in [
            ("/meta/acceptedAtUnix", serde_json::Value::Null),
            ("/meta/version", f64::from(report.version).into()),
            ("/meta/acceptedAtUnix", "1.7e9".into()),
            ("/meta/acceptedAtUnix", "1700000000.0".into()),
            ("/report/version", report.version.to_string().into()),
        ] {
            let mut same = line.clone();
            *same.pointer_mut(at).unwrap() = value;
            let (outcome, said) = check(&same.to_string(), &keys, None).unwrap();
            assert!(matches!(outcome, Outcome::Valid), "{at}: {said}");
        }
        let other_category = if line["meta"]["category"] == "CATEGORY_MARITIME_MOVEMENT" {
            "CATEGORY_SMUGGLING_INCIDENT"
        } else {
            "CATEGORY_MARITIME_MOVEMENT"
        };
        let changes: [(&str, serde_json::Value); 10] = [
            ("/meta/category", other_category.into()),
            ("/meta/reportId", 123.into()),
            (
                "/report",
                crate::cli::json::value(&other, "tidemark.v1.Report"),
            ),
            ("/meta/reportId", other.report_id.clone().into()),
            ("/meta/reportingState", "IDN".into()),
            ("/meta/version", 9.into()),
            ("/meta/kind", "retraction".into()),
            ("/meta/acceptedAtUnix", "abc".into()),
            ("/meta/acceptedAtUnix", 1.5.into()),
            ("/meta/acceptedAtUnix", "1700000000.5".into()),
        ];
        for (at, value) in changes {
            let mut altered = line.clone();
            *altered.pointer_mut(at).unwrap() = value;
            let (outcome, said) = check(&altered.to_string(), &keys, None).unwrap();
            assert!(matches!(outcome, Outcome::Invalid), "{at}: {said}");
        }
        // Compared from the digits as written: not a whole count, though a float reads it
        // as one.
        let total = report.persons.as_ref().unwrap().total;
        let text = line.to_string();
        let almost = text.replacen(
            &format!("\"total\":{total}"),
            &format!("\"total\":{total}.00000000000000001"),
            1,
        );
        assert_ne!(almost, text);
        let (outcome, said) = check(&almost, &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
        let mut truncated = report.encode_to_vec();
        truncated.pop();
        let (outcome, said) = check(&dsse_json(truncated, &key), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
        let (outcome, said) = check(&dsse_json(Vec::new(), &key), &keys, None).unwrap();
        assert!(
            matches!(outcome, Outcome::Invalid) && said.contains("names no report id"),
            "{said}"
        );
    }

    /// A line that is not UTF-8 is that line's fault: the others are still checked.
    #[test]
    fn a_line_that_is_not_utf8_fails_alone() {
        let (key, _) = SigningKey::generate().unwrap();
        let keys = aus_key(&key, None);
        let mut rng = tidemark::sample::Rng::new(11);
        let mut text = Vec::new();
        for bad in [false, true, false] {
            if bad {
                text.extend_from_slice(b"\xff\xfe not text");
            } else {
                let report = tidemark::sample::report(&mut rng, "AUS");
                text.extend_from_slice(query_line(&report, &key, 1).to_string().as_bytes());
            }
            text.push(b'\n');
        }
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("lines.jsonl");
        std::fs::write(&file, text).unwrap();
        let mut tally = Tally::default();
        check_file(&file, &keys, None, &mut tally).unwrap();
        assert_eq!(
            (tally.valid, tally.invalid, tally.unreadable),
            (2, 1, 0),
            "two lines checked, one not text"
        );
    }

    /// With --log-key, a line of a revoked key that carries no log proof is not trusted
    /// on its meta's word; without it, it is (with a caveat). A null keyid is no key id.
    #[test]
    fn a_log_key_asks_for_proof_and_a_null_key_id_is_none() {
        let (key, _) = SigningKey::generate().unwrap();
        let report = tidemark::sample::report(&mut tidemark::sample::Rng::new(10), "AUS");
        let keys = aus_key(&key, Some(1_800_000_000));
        let mut line = query_line(&report, &key, 1_700_000_000);
        let (outcome, said) = check(&line.to_string(), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Valid), "{said}");
        let log_key = tidemark::tlog::note::NoteSigner::generate("example.org/log")
            .unwrap()
            .verifier_key();
        let (outcome, said) = check(&line.to_string(), &keys, Some(&log_key)).unwrap();
        assert!(
            matches!(outcome, Outcome::Untrusted) && said.contains("no log proof"),
            "{said}"
        );
        line["envelope"]["signatures"][0]["keyid"] = serde_json::Value::Null;
        let (outcome, said) = check(&line.to_string(), &keys, None).unwrap();
        assert!(matches!(outcome, Outcome::Valid), "{said}");
        // An acceptance time of 0 (the proto3 default) or a null meta states no time: a
        // revoked key's report is then not known to predate the revocation.
        let revoked = aus_key(&key, Some(1_600_000_000));
        for (at, value) in [
            ("/meta/acceptedAtUnix", serde_json::Value::from(0)),
            ("/meta", serde_json::Value::Null),
        ] {
            let mut unstated = line.clone();
            *unstated.pointer_mut(at).unwrap() = value;
            let (outcome, said) = check(&unstated.to_string(), &revoked, None).unwrap();
            assert!(matches!(outcome, Outcome::Untrusted), "{at}: {said}");
        }
        line["meta"]["acceptedAtUnix"] = (-5).into();
        let (outcome, said) = check(&line.to_string(), &revoked, None).unwrap();
        assert!(matches!(outcome, Outcome::Invalid), "{said}");
    }
}
