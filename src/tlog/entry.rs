//! What a leaf of Tidemark's log commits to: an accepted envelope or an audit record,
//! encoded deterministically as text (version `tidemark.v1`), so that anyone holding the
//! facts can rebuild the exact bytes by hand and hash them (`docs/transparency.md` has a
//! worked example).
//!
//! An entry is a header line naming the version and the kind, then `key value` lines in
//! a fixed order, each ended by a line feed (0x0A). Entries are commitments, never
//! content: an envelope entry carries the SHA-256 of the DSSE payload bytes, an audit
//! entry the SHA-256 of the request detail and only counts per owning state.

use std::fmt::Write as _;

use ring::digest::{SHA256, digest};

mod decode;

pub use decode::MalformedEntry;

/// The first word of every entry: the encoding's version.
pub const VERSION: &str = "tidemark.v1";

/// The facts an envelope entry commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeEntry {
    /// The envelope's sequence number in the store (1, 2, 3, …).
    pub sequence: u64,
    /// The reporting state, ISO 3166-1 alpha-3.
    pub state: String,
    /// SHA-256 of the report id in its one spelling (lower-case, hyphenated): links the
    /// versions and the retraction of one report without naming it.
    pub report_sha256: [u8; 32],
    /// The version this envelope creates (1 for a new report).
    pub version: u32,
    /// `smuggling-incident` or `maritime-movement`.
    pub category: String,
    /// `report` (a new version) or `retraction`.
    pub kind: String,
    /// When the batch holding it committed, Unix seconds.
    pub accepted_at: i64,
    /// SHA-256 of the exact DSSE payload bytes.
    pub payload_sha256: [u8; 32],
}

#[cfg(test)]
impl EnvelopeEntry {
    /// Version 1 of AUS's report `0f8fad5b-…` as the worked example of
    /// docs/transparency.md has it, sequence 1, accepted at 1764424800, with `payload`.
    pub(crate) fn example(payload: &[u8]) -> Self {
        Self {
            sequence: 1,
            state: "AUS".to_owned(),
            report_sha256: sha256(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
            version: 1,
            category: "smuggling-incident".to_owned(),
            kind: "report".to_owned(),
            accepted_at: 1_764_424_800,
            payload_sha256: sha256(payload),
        }
    }
}

/// The facts an audit entry commits to: one state of one audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The audit record's number (1, 2, 3, …).
    pub number: u64,
    /// Whether the read it records was still going on (`in-progress`) or had ended
    /// (`complete`). A record written before a read and completed after it has two
    /// entries.
    pub in_progress: bool,
    /// When the access began, Unix seconds.
    pub at: i64,
    /// When this state of the record was written, Unix seconds: what a read sent as of
    /// this entry, it sent at or after this time.
    pub logged: i64,
    /// The SPIFFE ID of the caller.
    pub principal: String,
    /// The caller's state, ISO 3166-1 alpha-3; empty for a caller of no state.
    pub state: String,
    /// What was done: `query`, `sync`, `subscribe`, `aggregate`, `refused query`,
    /// `revoke-certificate`, ….
    pub action: String,
    /// The report categories a read asked for (`smuggling-incident`, `maritime-movement`,
    /// space-separated); empty for anything else.
    pub category: String,
    /// SHA-256 of the record's 16-byte random salt followed by the request detail as the
    /// record keeps it (UTF-8): a commitment nobody can reverse by guessing requests.
    pub detail_sha256: [u8; 32],
    /// How many reports the access returned or counted.
    pub count: u64,
    /// How many of each owning state's reports, sorted by state code.
    pub owners: Vec<(String, u64)>,
    /// Encode `count` as `-` and the owners without their counts (an aggregate's entry).
    pub counts_withheld: bool,
}

/// The give-to-get policy in force from a time on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    /// When the server started with it, Unix seconds.
    pub at: i64,
    /// Whether contributions of either category count for both.
    pub cross_category: bool,
    /// Per category label: (trailing window in days, minimum live reports first accepted
    /// in it), in category order.
    pub rules: Vec<(String, u32, u32)>,
}

/// One leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An accepted envelope.
    Envelope(EnvelopeEntry),
    /// An audit record (a read, a refusal, an administrative action).
    Audit(AuditEntry),
    /// The give-to-get policy, whenever the server starts with one that differs from the
    /// last one logged.
    Policy(PolicyEntry),
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// A value on one line: line breaks and other control characters become spaces, and an
/// empty value is written `-`, so that every entry has the same lines.
fn value(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Entry {
    /// The entry's bytes, exactly as hashed into the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Self::Envelope(e) => {
                let _ = write!(
                    out,
                    "{VERSION} envelope\nsequence {}\nstate {}\nreport sha256:{}\nversion {}\n\
                     category {}\nkind {}\naccepted {}\npayload sha256:{}\n",
                    e.sequence,
                    value(&e.state),
                    hex::encode(e.report_sha256),
                    e.version,
                    value(&e.category),
                    value(&e.kind),
                    e.accepted_at,
                    hex::encode(e.payload_sha256),
                );
            }
            Self::Audit(a) => {
                let mut owners = a.owners.clone();
                owners.sort();
                let owners = if owners.is_empty() {
                    "-".to_owned()
                } else {
                    owners
                        .iter()
                        .map(|(state, count)| {
                            if a.counts_withheld {
                                value(state)
                            } else {
                                format!("{}:{count}", value(state))
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let count = if a.counts_withheld {
                    "-".to_owned()
                } else {
                    a.count.to_string()
                };
                let _ = write!(
                    out,
                    "{VERSION} audit\nnumber {}\nstatus {}\nat {}\nlogged {}\nprincipal {}\nstate {}\n\
                     action {}\ncategory {}\ndetail sha256:{}\ncount {}\nowners {owners}\n",
                    a.number,
                    if a.in_progress {
                        "in-progress"
                    } else {
                        "complete"
                    },
                    a.at,
                    a.logged,
                    value(&a.principal),
                    value(&a.state),
                    value(&a.action),
                    value(&a.category),
                    hex::encode(a.detail_sha256),
                    count,
                );
            }
            Self::Policy(p) => {
                let _ = write!(
                    out,
                    "{VERSION} policy\nat {}\ncross-category {}\n",
                    p.at, p.cross_category
                );
                for (category, window_days, minimum) in &p.rules {
                    let _ = writeln!(
                        out,
                        "{} window-days {window_days} minimum {minimum}",
                        value(category)
                    );
                }
            }
        }
        out.into_bytes()
    }

    /// When the entry was written to the log, Unix seconds: an envelope's `accepted`, an
    /// audit record's `logged` (its `at` for records from before `logged` existed, which
    /// say 0), a policy's `at`.
    pub fn written_at(&self) -> i64 {
        match self {
            Self::Envelope(e) => e.accepted_at,
            Self::Audit(a) if a.logged > 0 => a.logged,
            Self::Audit(a) => a.at,
            Self::Policy(p) => p.at,
        }
    }

    /// The value of line `key` in an encoded entry, if the entry has it.
    pub fn field<'e>(encoded: &'e str, key: &str) -> Option<&'e str> {
        encoded
            .lines()
            .skip(1)
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_entry_has_its_documented_bytes() {
        let entry = Entry::Envelope(EnvelopeEntry {
            sequence: 42,
            state: "AUS".to_owned(),
            report_sha256: sha256(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
            version: 2,
            category: "smuggling-incident".to_owned(),
            kind: "report".to_owned(),
            accepted_at: 1_764_424_800,
            payload_sha256: sha256(b"hello"),
        });
        let text = String::from_utf8(entry.encode()).unwrap();
        assert_eq!(
            text,
            "tidemark.v1 envelope\nsequence 42\nstate AUS\nreport \
             sha256:c812e1edb64417d6090dcfbaf16c21cd8e8665c04396e1edb472fecfb2797c6a\n\
             version 2\ncategory smuggling-incident\nkind report\naccepted 1764424800\n\
             payload sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
        );
        assert_eq!(Entry::field(&text, "state"), Some("AUS"));
    }

    #[test]
    fn an_audit_entry_sorts_owners_and_keeps_one_line_per_field() {
        let entry = Entry::Audit(AuditEntry {
            number: 7,
            in_progress: false,
            at: 100,
            logged: 100,
            principal: "spiffe://tidemark.local/state/IDN/node/n\n1".to_owned(),
            state: String::new(),
            action: "query".to_owned(),
            category: String::new(),
            detail_sha256: sha256(b""),
            count: 15,
            owners: vec![("FRA".to_owned(), 3), ("AUS".to_owned(), 12)],
            counts_withheld: false,
        });
        let text = String::from_utf8(entry.encode()).unwrap();
        assert_eq!(text.lines().count(), 12);
        assert_eq!(Entry::field(&text, "category"), Some("-"));
        assert_eq!(Entry::field(&text, "owners"), Some("AUS:12 FRA:3"));
        assert_eq!(Entry::field(&text, "state"), Some("-"));
        assert_eq!(
            Entry::field(&text, "principal"),
            Some("spiffe://tidemark.local/state/IDN/node/n 1")
        );
    }

    #[test]
    fn an_aggregates_entry_names_its_owners_without_counts() {
        let entry = Entry::Audit(AuditEntry {
            number: 8,
            in_progress: false,
            at: 100,
            logged: 100,
            principal: "spiffe://tidemark.local/state/IDN/analyst/a".to_owned(),
            state: "IDN".to_owned(),
            action: "aggregate".to_owned(),
            category: "smuggling-incident".to_owned(),
            detail_sha256: sha256(b""),
            count: 3,
            owners: vec![("THA".to_owned(), 2), ("AUS".to_owned(), 1)],
            counts_withheld: true,
        });
        let text = String::from_utf8(entry.encode()).unwrap();
        assert_eq!(Entry::field(&text, "count"), Some("-"));
        assert_eq!(Entry::field(&text, "owners"), Some("AUS THA"));
    }

    #[test]
    fn the_worked_example_of_docs_transparency_md_holds() {
        use super::super::merkle::{leaf_hash, node_hash};
        let envelope = Entry::Envelope(EnvelopeEntry::example(
            br#"{"example":"the exact DSSE payload bytes"}"#,
        ));
        let audit = Entry::Audit(AuditEntry {
            number: 1,
            in_progress: false,
            at: 1_764_424_860,
            logged: 1_764_424_861,
            principal: "spiffe://tidemark.local/state/IDN/node/idn-1".to_owned(),
            state: "IDN".to_owned(),
            action: "query".to_owned(),
            category: "smuggling-incident".to_owned(),
            detail_sha256: sha256(
                &[
                    &[0u8; 16][..],
                    br#"{"category":"CATEGORY_SMUGGLING_INCIDENT"}"#,
                ]
                .concat(),
            ),
            count: 1,
            owners: vec![("AUS".to_owned(), 1)],
            counts_withheld: false,
        });
        let (l0, l1) = (leaf_hash(&envelope.encode()), leaf_hash(&audit.encode()));
        assert_eq!(
            hex::encode(l0),
            "bfca0c870e11ee061652ab4dd643c33f7aa000a7f40753a6e0b950400a473121"
        );
        assert_eq!(
            hex::encode(l1),
            "ce3d2a58529a97d2840565c33312c21609a0561c0f9586d143aeaca9ebf8abde"
        );
        assert_eq!(
            hex::encode(node_hash(&l0, &l1)),
            "80c90c1ef0e9b6988b7d1ebf3ad88b8d0c3b052f4bf8bf23d929aa82a693a78a"
        );
    }
}
