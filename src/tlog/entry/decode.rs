//! Reading an entry back: [`Entry::decode`] takes bytes said to be a `tidemark.v1` entry
//! and gives its fields, or says which line breaks the documented encoding
//! (`docs/transparency.md`, "Entries"). A verifier holds a proven leaf to the format with
//! it: an inclusion proof shows that the log holds the bytes, this shows that they are an
//! entry Tidemark writes, with one meaning.

use super::{AuditEntry, Entry, EnvelopeEntry, PolicyEntry, VERSION};
use crate::report::Category;

/// Why bytes are not a well-formed `tidemark.v1` entry: the line and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEntry(String);

fn malformed(why: impl Into<String>) -> MalformedEntry {
    MalformedEntry(why.into())
}

impl Entry {
    /// The entry whose encoding is exactly `bytes`: UTF-8 text, the header line, each
    /// field's line in its kind's order with a value of its documented form (decimal
    /// numbers without sign or leading zeros, `sha256:` and 64 lower-case hex digits,
    /// states as three capital letters, categories, kinds and statuses from their
    /// lists), every line ended by a line feed, nothing after the last. Any other bytes
    /// are refused, naming the first line at fault.
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedEntry> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            malformed(format!(
                "it is not UTF-8 text (byte {} is not)",
                e.valid_up_to()
            ))
        })?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("its last line does not end with a line feed (0x0A)"))?;
        let mut lines = Lines {
            rest: body.split('\n').enumerate(),
        };
        let (_, header) = lines.next("the header")?;
        let entry = match header
            .strip_prefix(VERSION)
            .and_then(|k| k.strip_prefix(' '))
        {
            Some("envelope") => Self::Envelope(envelope(&mut lines)?),
            Some("audit") => Self::Audit(audit(&mut lines)?),
            Some("policy") => Self::Policy(policy(&mut lines)?),
            Some(kind) => {
                return Err(malformed(format!(
                    "line 1 names kind {}; a {VERSION} entry is an envelope, audit or policy",
                    shown(kind)
                )));
            }
            None => {
                return Err(malformed(format!(
                    "line 1 is {}, not a `{VERSION} <kind>` header (this verifier reads \
                     version {VERSION} only)",
                    shown(header)
                )));
            }
        };
        if let Some((i, line)) = lines.rest.next() {
            return Err(malformed(format!(
                "line {} ({}) follows the last line of {} entry",
                i + 1,
                shown(line),
                entry.kind()
            )));
        }
        // Every value was read in its one spelling, so the fields encode back to the
        // same bytes; checked all the same, so that no rule missed above lets two
        // spellings of one entry through.
        if entry.encode() != bytes {
            return Err(malformed("its fields do not encode back to the same bytes"));
        }
        Ok(entry)
    }

    /// `envelope`, `audit` or `policy`: the kind its header names.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Envelope(_) => "envelope",
            Self::Audit(_) => "audit",
            Self::Policy(_) => "policy",
        }
    }

    /// [`Self::kind`] with its article, for a sentence: `an envelope`, `an audit`, `a
    /// policy`.
    pub fn kind_in_a_sentence(&self) -> &'static str {
        match self {
            Self::Envelope(_) => "an envelope",
            Self::Audit(_) => "an audit",
            Self::Policy(_) => "a policy",
        }
    }
}

fn envelope(lines: &mut Lines<'_>) -> Result<EnvelopeEntry, MalformedEntry> {
    Ok(EnvelopeEntry {
        sequence: lines.field("sequence", positive)?,
        state: lines.field("state", state)?,
        report_sha256: lines.field("report", digest)?,
        version: lines.field("version", |v| {
            u32::try_from(positive(v)?).map_err(|_| "a version of at most 4294967295".to_owned())
        })?,
        category: lines.field("category", |v| category(v).map(str::to_owned))?,
        kind: lines.field("kind", |v| {
            one_of(v, &["report", "retraction"]).map(str::to_owned)
        })?,
        accepted_at: lines.field("accepted", time)?,
        payload_sha256: lines.field("payload", digest)?,
    })
}

fn audit(lines: &mut Lines<'_>) -> Result<AuditEntry, MalformedEntry> {
    let record = lines.field("number", positive)?;
    let in_progress = lines.field("status", |v| {
        one_of(v, &["in-progress", "complete"]).map(|s| s == "in-progress")
    })?;
    let at = lines.field("at", time)?;
    let logged = lines.field("logged", time)?;
    let principal = lines.field("principal", |v| {
        if crate::identity::Principal::is_canonical_id(v) {
            Ok(v.to_owned())
        } else {
            Err(
                "a principal's SPIFFE ID in its one spelling (spiffe://<trust \
                 domain>/state/<STATE>/node/<name>, …, or spiffe://<trust domain>/server)"
                    .to_owned(),
            )
        }
    })?;
    let state = lines.field("state", |v| {
        if v == "-" {
            Ok(String::new())
        } else {
            state(v)
        }
    })?;
    let action = lines.field("action", action)?;
    let category = lines.field("category", categories)?;
    let detail_sha256 = lines.field("detail", digest)?;
    // `-` for an aggregate, whose owners are then named without counts.
    let count = lines.field("count", |v| {
        if v == "-" {
            Ok(None)
        } else {
            number(v).map(Some)
        }
    })?;
    let counts_withheld = count.is_none();
    let owners = lines.field("owners", |v| owners(v, counts_withheld))?;
    // The fields hold together as the server writes them: one meaning per entry.
    // (0: written before `logged` existed, judged at its `at`.)
    if logged != 0 && logged < at {
        return Err(malformed(format!(
            "it was logged ({logged}) before the access began (at {at}): a record is written \
             when its access begins, then only later"
        )));
    }
    let callers_state = crate::identity::Principal::state_in_id(&principal).map(|s| s.to_string());
    if callers_state.as_deref().unwrap_or_default() != state {
        return Err(malformed(format!(
            "its state ({}) is not the principal's ({principal} is of {}): the state line \
             names the caller's state, `-` for a principal of none",
            if state.is_empty() { "-" } else { &state },
            callers_state.as_deref().unwrap_or("no state")
        )));
    }
    if let Some(count) = count {
        let sum = owners
            .iter()
            .try_fold(0u64, |sum, (_, n)| sum.checked_add(*n));
        if sum != Some(count) {
            return Err(malformed(format!(
                "its count ({count}) is not the sum of its owners' counts: count is the \
                 reports read of every owner listed"
            )));
        }
    }
    // A refusal read nothing: an entry that says it did is not one the server writes
    // (and would hide a read from every check that passes over refusals).
    if action.starts_with("refused ") && (count != Some(0) || !owners.is_empty()) {
        return Err(malformed(format!(
            "it records a refusal ({action}) with reports read (count and owners): a refusal \
             has count 0 and owners -"
        )));
    }
    Ok(AuditEntry {
        number: record,
        in_progress,
        at,
        logged,
        principal,
        state,
        action,
        category,
        detail_sha256,
        count: count.unwrap_or(0),
        owners,
        counts_withheld,
    })
}

fn policy(lines: &mut Lines<'_>) -> Result<PolicyEntry, MalformedEntry> {
    let at = lines.field("at", time)?;
    let cross_category = lines.field("cross-category", |v| {
        one_of(v, &["true", "false"]).map(|v| v == "true")
    })?;
    let mut rules = Vec::new();
    for category in Category::ALL {
        rules.push(lines.field(category.label(), |v| {
            // A window of no days was never configurable. (A minimum of 0, give-to-get
            // off, was until 808dbb3, and logs keep its entries.)
            let rule = || -> Option<(u32, u32)> {
                let (window, minimum) = v.strip_prefix("window-days ")?.split_once(" minimum ")?;
                Some((small(window).filter(|w| *w > 0)?, small(minimum)?))
            };
            let (window, minimum) = rule().ok_or_else(|| {
                "`window-days N minimum M`, whole numbers, N at least 1".to_owned()
            })?;
            Ok((category.label().to_owned(), window, minimum))
        })?);
    }
    Ok(PolicyEntry {
        at,
        cross_category,
        rules,
    })
}

/// The lines after the header, numbered from 1.
struct Lines<'t> {
    rest: std::iter::Enumerate<std::str::Split<'t, char>>,
}

impl<'t> Lines<'t> {
    /// The next line and its number; `what` names it if there is none.
    fn next(&mut self, what: &str) -> Result<(usize, &'t str), MalformedEntry> {
        self.rest
            .next()
            .map(|(i, line)| (i + 1, line))
            .ok_or_else(|| malformed(format!("it ends before {what} line")))
    }

    /// The value of the next line, which must be `key value`, read by `read` (which
    /// says, on failure, what the value should be).
    fn field<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&'t str) -> Result<T, String>,
    ) -> Result<T, MalformedEntry> {
        let (n, line) = self.next(&format!("its `{key}`"))?;
        let value = line
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| malformed(format!("line {n} is {}, not `{key} …`", shown(line))))?;
        read(value).map_err(|should| {
            malformed(format!(
                "line {n}: `{key}` is {}; it should be {should}",
                shown(value)
            ))
        })
    }
}

/// A value quoted for a message, cut short if long.
fn shown(text: &str) -> String {
    const MOST: usize = 80;
    match text.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A whole number in its one spelling: decimal digits, no sign, no leading zero.
fn number(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| n.to_string() == v)
        .ok_or_else(|| "a whole number in decimal, without sign or leading zeros".to_owned())
}

fn positive(v: &str) -> Result<u64, String> {
    match number(v)? {
        0 => Err("a whole number from 1".to_owned()),
        n => Ok(n),
    }
}

fn small(v: &str) -> Option<u32> {
    number(v).ok().and_then(|n| u32::try_from(n).ok())
}

/// Unix seconds, 0 or after.
fn time(v: &str) -> Result<i64, String> {
    number(v)
        .ok()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| "a time in Unix seconds (a whole number, 0 or more)".to_owned())
}

/// `sha256:` and 64 lower-case hex digits.
fn digest(v: &str) -> Result<[u8; 32], String> {
    let hex = v
        .strip_prefix("sha256:")
        .filter(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let mut out = [0u8; 32];
    match hex.map(|h| hex::decode_to_slice(h, &mut out)) {
        Some(Ok(())) => Ok(out),
        _ => Err("`sha256:` and 64 lower-case hex digits".to_owned()),
    }
}

/// A state: ISO 3166-1 alpha-3, three capital letters.
fn state(v: &str) -> Result<String, String> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(v.to_owned())
    } else {
        Err("a state's ISO 3166-1 alpha-3 code (three capital letters)".to_owned())
    }
}

fn category(v: &str) -> Result<&'static str, String> {
    Category::ALL
        .iter()
        .map(|c| c.label())
        .find(|label| *label == v)
        .ok_or_else(|| "`smuggling-incident` or `maritime-movement`".to_owned())
}

/// What was done, in one spelling: a lower-case name (`query`, `revoke-certificate`), or
/// `refused ` and the name of what was refused — an action's, or a method's as gRPC names
/// it (`refused SuspendState`).
fn action(v: &str) -> Result<String, String> {
    // `query`, `revoke-certificate`: lower case and digits, words joined by one hyphen.
    let kebab = |n: &str| {
        !n.is_empty()
            && n.split('-').all(|word| {
                word.starts_with(|c: char| c.is_ascii_lowercase())
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    // `SuspendState`, `WhoAmI`: a gRPC method's name in upper camel case — a capital,
    // then letters and digits, not all capitals (`QUERY` is no method's spelling).
    let method = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_uppercase())
            && n.bytes().all(|b| b.is_ascii_alphanumeric())
            && n.bytes().any(|b| b.is_ascii_lowercase())
    };
    let ok = match v.strip_prefix("refused ") {
        Some(refused) => kebab(refused) || method(refused),
        None => kebab(v),
    };
    if ok {
        Ok(v.to_owned())
    } else {
        Err(
            "what was done, in one spelling: a lower-case name (`query`, \
             `revoke-certificate`), or `refused ` and the name of what was refused (`refused \
             query`, `refused SuspendState`)"
                .to_owned(),
        )
    }
}

/// `-`, or categories space-separated in the API's order, each once.
fn categories(v: &str) -> Result<String, String> {
    if v == "-" {
        return Ok(String::new());
    }
    let labels: Vec<&str> = Category::ALL.iter().map(|c| c.label()).collect();
    let mut at = 0;
    for word in v.split(' ') {
        match labels[at..].iter().position(|l| *l == word) {
            Some(i) => at += i + 1,
            None => {
                return Err(
                    "`-` or `smuggling-incident`, `maritime-movement` or both, in that order"
                        .to_owned(),
                );
            }
        }
    }
    Ok(v.to_owned())
}

/// `-`, or owning states sorted by code, each once: `STATE:count`, or `STATE` alone
/// when the entry withholds counts.
fn owners(v: &str, counts_withheld: bool) -> Result<Vec<(String, u64)>, String> {
    if v == "-" {
        return Ok(Vec::new());
    }
    let form = if counts_withheld {
        "`-` or states sorted by code, each once (`AUS THA`): counts are withheld (`count -`)"
    } else {
        "`-` or `STATE:count` sorted by state, each once (`AUS:12 FRA:3`)"
    };
    let mut owners: Vec<(String, u64)> = Vec::new();
    for word in v.split(' ') {
        let (code, count) = if counts_withheld {
            (word, 0)
        } else {
            let (code, count) = word.split_once(':').ok_or_else(|| form.to_owned())?;
            (code, number(count).map_err(|_| form.to_owned())?)
        };
        let code = state(code).map_err(|_| form.to_owned())?;
        if owners.last().is_some_and(|(last, _)| *last >= code) {
            return Err(form.to_owned());
        }
        owners.push((code, count));
    }
    Ok(owners)
}

fn one_of(v: &str, allowed: &[&'static str]) -> Result<&'static str, String> {
    allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
        allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(" or ")
    })
}

#[cfg(test)]
mod tests {
    use super::super::sha256;
    use super::*;
    use proptest::prelude::*;

    fn envelope_entry() -> Entry {
        Entry::Envelope(EnvelopeEntry::example(b"payload"))
    }

    fn audit_entry(counts_withheld: bool) -> Entry {
        Entry::Audit(AuditEntry {
            number: 9,
            in_progress: false,
            at: 1_764_424_860,
            logged: 1_764_424_861,
            principal: "spiffe://tidemark.local/state/IDN/node/idn-1".to_owned(),
            state: "IDN".to_owned(),
            action: "query".to_owned(),
            category: "smuggling-incident maritime-movement".to_owned(),
            detail_sha256: sha256(b"detail"),
            count: if counts_withheld { 0 } else { 15 },
            owners: vec![
                ("AUS".to_owned(), if counts_withheld { 0 } else { 12 }),
                ("FRA".to_owned(), if counts_withheld { 0 } else { 3 }),
            ],
            counts_withheld,
        })
    }

    fn policy_entry() -> Entry {
        Entry::Policy(PolicyEntry {
            at: 1_764_424_000,
            cross_category: false,
            rules: vec![
                ("smuggling-incident".to_owned(), 365, 1),
                ("maritime-movement".to_owned(), 90, 0),
            ],
        })
    }

    /// Every kind of entry the server writes reads back as itself.
    #[test]
    fn each_kind_of_entry_decodes_to_itself() {
        for entry in [
            envelope_entry(),
            audit_entry(false),
            audit_entry(true),
            policy_entry(),
        ] {
            assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
        }
    }

    /// Each kind of entry says when it was written: an envelope when accepted, an audit
    /// record when logged (or begun, for records from before `logged`, which say 0), a
    /// policy when the server started with it.
    #[test]
    fn an_entry_says_when_it_was_written() {
        let Entry::Audit(mut before_logged) = audit_entry(false) else {
            unreachable!()
        };
        before_logged.logged = 0;
        for (entry, at) in [
            (envelope_entry(), 1_764_424_800),
            (audit_entry(false), 1_764_424_861),
            (Entry::Audit(before_logged), 1_764_424_860),
            (policy_entry(), 1_764_424_000),
        ] {
            assert_eq!(entry.written_at(), at, "{entry:?}");
        }
    }

    /// Each rule of an envelope entry refuses what breaks it, naming the line.
    #[test]
    fn a_malformed_envelope_entry_is_refused_naming_its_line() {
        let envelope = String::from_utf8(envelope_entry().encode()).unwrap();
        let cases = [
            (
                envelope.replace("sequence 1", "sequence 01"),
                "line 2: `sequence`",
            ),
            (
                envelope.replace("sequence 1", "sequence +1"),
                "line 2: `sequence`",
            ),
            (envelope.replace("sequence 1", "sequence 0"), "from 1"),
            (
                envelope.replace("state AUS", "state aus"),
                "line 3: `state`",
            ),
            (
                envelope.replace("report sha256:c8", "report sha256:C8"),
                "line 4",
            ),
            (
                envelope.replace("report sha256:c8", "report sha256:c"),
                "line 4",
            ),
            (
                envelope.replace("kind report", "kind Report"),
                "`report` or `retraction`",
            ),
            (
                envelope.replace("category smuggling-incident", "category -"),
                "line 6",
            ),
            (
                envelope.replace("accepted 1764424800", "accepted -5"),
                "line 8",
            ),
            (
                envelope.replace("\nversion 1\n", "\nversion 1 \n"),
                "line 5",
            ),
            (
                envelope.replace("\nstate AUS\nreport", "\nreport"),
                "line 3 is \"report",
            ),
            (envelope.replace('\n', "\r\n"), "line 1"),
            (envelope.trim_end().to_owned(), "line feed"),
            (
                format!("{envelope}extra 1\n"),
                "line 10 (\"extra 1\") follows",
            ),
            (
                envelope.replace("tidemark.v1", "tidemark.v2"),
                "version tidemark.v1 only",
            ),
            (envelope.replace("envelope\n", "leaf\n"), "kind \"leaf\""),
            (envelope.replace("\npayload", "\n"), "line 9"),
            (
                envelope.split_inclusive('\n').take(8).collect(),
                "ends before its `payload` line",
            ),
        ];
        refused_saying(&cases);
        assert!(Entry::decode(&[0xff]).is_err_and(|e| e.to_string().contains("UTF-8")));
    }

    /// The rules of audit and policy entries refuse what breaks them, naming the line.
    #[test]
    fn a_malformed_audit_or_policy_entry_is_refused_naming_its_line() {
        let audit = String::from_utf8(audit_entry(false).encode()).unwrap();
        let withheld = String::from_utf8(audit_entry(true).encode()).unwrap();
        let policy = String::from_utf8(policy_entry().encode()).unwrap();
        let cases = [
            (
                audit.replace("AUS:12 FRA:3", "FRA:3 AUS:12"),
                "line 12: `owners`",
            ),
            (
                audit.replace("AUS:12 FRA:3", "AUS:12 AUS:3"),
                "line 12: `owners`",
            ),
            (audit.replace("AUS:12 FRA:3", "AUS FRA"), "`STATE:count`"),
            (
                audit.replace("status complete", "status done"),
                "`in-progress` or",
            ),
            (
                audit.replace("principal spiffe:", "principal https:"),
                "SPIFFE ID",
            ),
            (audit.replace("action query", "action -"), "what was done"),
            (
                audit.replace("action query", "action query "),
                "what was done",
            ),
            (
                audit.replace("action query", "action  query"),
                "line 8: `action`",
            ),
            (
                audit.replace("action query", "action Query"),
                "what was done",
            ),
            (
                audit.replace("action query", "action refused QUERY"),
                "what was done",
            ),
            (
                audit.replace("action query", "action refused query"),
                "a refusal has count 0",
            ),
            (
                audit.replace("action query", "action refused  query"),
                "what was done",
            ),
            (
                audit.replace("/node/idn-1", "/node/idn-1/"),
                "SPIFFE ID in its one spelling",
            ),
            (
                audit.replace("spiffe://tidemark.local", "spiffe://TIDEMARK.local"),
                "SPIFFE ID in its one spelling",
            ),
            (
                audit.replace("/node/idn-1", "/node/.."),
                "SPIFFE ID in its one spelling",
            ),
            (
                audit.replace(
                    "smuggling-incident maritime-movement",
                    "maritime-movement smuggling-incident",
                ),
                "in that order",
            ),
            (
                audit.replace(
                    "smuggling-incident maritime-movement",
                    "smuggling-incident smuggling-incident",
                ),
                "in that order",
            ),
            (
                withheld.replace("AUS FRA", "AUS:1 FRA:2"),
                "counts are withheld",
            ),
            (
                policy.replace("window-days 90", "window-days x"),
                "`window-days N minimum M`",
            ),
            (
                policy.replace("cross-category false", "cross-category no"),
                "line 3",
            ),
            (
                policy.replace("maritime-movement", "smuggling-incident"),
                "line 5 is",
            ),
        ];
        refused_saying(&cases);
    }

    /// Fields each in its one spelling that contradict one another are refused too: an
    /// entry the server does not write has no one meaning.
    #[test]
    fn an_entry_whose_fields_contradict_one_another_is_refused() {
        let audit = String::from_utf8(audit_entry(false).encode()).unwrap();
        let policy = String::from_utf8(policy_entry().encode()).unwrap();
        let cases = [
            (
                policy.replace("window-days 90", "window-days 0"),
                "N at least 1",
            ),
            (
                audit.replace("logged 1764424861", "logged 1764424859"),
                "before the access began",
            ),
            (audit.replace("state IDN", "state AUS"), "is of IDN"),
            (audit.replace("state IDN", "state -"), "is of IDN"),
            (
                audit.replace("state/IDN/node", "regional/analyst"),
                "is of no state",
            ),
            (audit.replace("count 15", "count 16"), "sum of its owners"),
        ];
        refused_saying(&cases);
    }

    /// Each text is refused with a message that holds its phrase.
    fn refused_saying(cases: &[(String, &str)]) {
        for (text, said) in cases {
            let refused = Entry::decode(text.as_bytes());
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains(said)),
                "{text:?} gave {refused:?}, not an error saying {said:?}"
            );
        }
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        let state = "[A-Z]{3}";
        let digest = any::<[u8; 32]>();
        let envelope = (
            1..u64::MAX,
            state,
            digest,
            1..=u32::MAX,
            0..2usize,
            any::<bool>(),
            0..i64::MAX,
            digest,
        )
            .prop_map(
                |(sequence, state, report, version, c, retraction, at, payload)| {
                    Entry::Envelope(EnvelopeEntry {
                        sequence,
                        state,
                        report_sha256: report,
                        version,
                        category: Category::ALL[c].label().to_owned(),
                        kind: if retraction { "retraction" } else { "report" }.to_owned(),
                        accepted_at: at,
                        payload_sha256: payload,
                    })
                },
            );
        let audit = (
            (1..u64::MAX, any::<bool>(), 0..i64::MAX / 2, 0..i64::MAX / 2),
            (
                prop_oneof![
                    "spiffe://[a-z]{1,8}(\\.[a-z]{1,8})?/state/(AUS|IDN|THA|FRA)/(node|analyst)/[a-z0-9][a-z0-9._-]{0,10}",
                    "spiffe://[a-z]{1,8}/(regional/analyst|operator)/[a-z0-9][a-z0-9_-]{0,10}",
                    "spiffe://[a-z]{1,8}/server",
                ],
                prop_oneof![
                    "[a-z]{1,8}(-[a-z]{1,8}){0,2}",
                    "refused [a-z]{1,8}",
                    "refused [A-Z][a-z]{1,6}([A-Z][a-z]{0,6}){0,2}",
                ],
            ),
            (0..4usize, digest, any::<bool>()),
            proptest::collection::btree_map(state, 0..u64::from(u32::MAX), 0..4),
        )
            .prop_map(
                |((number, in_progress, at, later), (principal, action), rest, owners)| {
                    let (categories, detail, counts_withheld) = rest;
                    // Fields that hold together: logged when begun or later (0: before
                    // `logged` existed), the caller's own state, count the owners' sum.
                    let logged = if later == 0 { 0 } else { at + later - 1 };
                    let state = crate::identity::Principal::state_in_id(&principal)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    // A refusal reads nothing.
                    let refused = action.starts_with("refused ");
                    let counts_withheld = counts_withheld && !refused;
                    let owners = if refused { std::collections::BTreeMap::default() } else { owners };
                    let count = owners.values().sum();
                    let category = Category::ALL
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| categories & (1 << i) != 0)
                        .map(|(_, c)| c.label())
                        .collect::<Vec<_>>()
                        .join(" ");
                    Entry::Audit(AuditEntry {
                        number,
                        in_progress,
                        at,
                        logged,
                        principal,
                        state,
                        action,
                        category,
                        detail_sha256: detail,
                        count: if counts_withheld { 0 } else { count },
                        owners: owners
                            .into_iter()
                            .map(|(s, n)| (s, if counts_withheld { 0 } else { n }))
                            .collect(),
                        counts_withheld,
                    })
                },
            );
        prop_oneof![envelope, audit]
    }

    proptest! {
        /// Every entry the encoding can make reads back as itself.
        #[test]
        fn an_encoded_entry_decodes_to_itself(entry in any_entry()) {
            prop_assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
        }

        /// One spelling per entry: bytes that decode are exactly their fields' encoding,
        /// whatever byte of a valid entry is changed, inserted or removed.
        #[test]
        fn what_decodes_is_its_own_encoding(
            entry in any_entry(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            change in 0..3u8,
        ) {
            let mut bytes = entry.encode();
            let i = at.index(bytes.len());
            match change {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
            if let Ok(decoded) = Entry::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
