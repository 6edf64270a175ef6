//! Verifiable reciprocity: replays the transparency log's entries — the give-to-get
//! rules logged, every contribution (envelope entries: state, hashed report id, version,
//! category, time) and every read (audit entries: reader's state, categories, owners) —
//! and finds each read of another state's reports that the rules in force did not allow.
//!
//! A read — any access on record but a refusal, whatever its action — is judged at every
//! state of its audit record that adds reports of another
//! state (a streaming read's record is raised before what it sends, and each state is
//! logged with its time): the reader must stand, at that `logged` time, under the rules
//! logged before that entry, with the contributions accepted before it.
//!
//! The replay needs nothing but the entries, in log order (which a caller checks against
//! a signed checkpoint by recomputing its root). A state stands in a category when
//! it has at least `minimum` live reports of it (of either category, with
//! `cross-category`) first accepted within the trailing `window-days`.

use std::collections::{BTreeMap, HashMap};

use crate::tlog::entry::{Entry, MalformedEntry, PolicyEntry};

const DAY: i64 = 86_400;

/// A read the rules in force did not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The leaf where the read first appears.
    pub index: u64,
    /// Its audit record's number.
    pub number: String,
    /// `query`, `sync`, `subscribe` or `aggregate`.
    pub action: String,
    /// The reader's SPIFFE ID and state.
    pub principal: String,
    /// The reader's state.
    pub reader: String,
    /// When it began, Unix seconds.
    pub at: i64,
    /// The owners whose reports it read, `STATE:count`.
    pub owners: String,
    /// What the rules required and what the reader had.
    pub reason: String,
}

/// What a replay found.
#[derive(Debug, Default, Clone)]
pub struct Replay {
    /// Reads of another state's reports that were judged.
    pub reads_checked: u64,
    /// Contributions (report versions 1) seen.
    pub contributions: u64,
    /// Policy entries seen.
    pub policies: u64,
    /// Reads the rules did not allow.
    pub violations: Vec<Violation>,
    /// Entries that are not well-formed `tidemark.v1` entries, by leaf index.
    pub malformed: Vec<(u64, MalformedEntry)>,
}

#[derive(Debug, Clone)]
struct Rules {
    cross_category: bool,
    /// category label → (window days, minimum).
    categories: HashMap<String, (i64, u64)>,
}

struct Report {
    state: String,
    category: String,
    first_accepted: i64,
    retracted: bool,
}

/// What the log showed of one read so far.
#[derive(Default)]
struct ReadSeen {
    /// Per other owner, the most of its reports the record has stated.
    counts: HashMap<String, u64>,
    /// Some state of the record added reads of another state's reports.
    judged: bool,
    /// A violation of it was named already.
    reported: bool,
}

/// Replays `entries` (in log order, from leaf 0) and returns every read of `owner`'s
/// reports (of any other state's, when `owner` is `None`) the rules did not allow, and
/// every entry that is not a well-formed `tidemark.v1` entry (whatever it records cannot
/// be judged, so it is a finding of its own).
pub fn replay<'e>(entries: impl IntoIterator<Item = &'e [u8]>, owner: Option<&str>) -> Replay {
    let mut found = Replay::default();
    let mut rules: Option<Rules> = None;
    let mut reports: HashMap<[u8; 32], Report> = HashMap::new();
    let mut seen: BTreeMap<u64, ReadSeen> = BTreeMap::new();
    for (index, bytes) in (0u64..).zip(entries) {
        let entry = match Entry::decode(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                found.malformed.push((index, e));
                continue;
            }
        };
        match entry {
            Entry::Policy(policy) => {
                found.policies += 1;
                rules = Some(Rules::from(&policy));
            }
            Entry::Envelope(e) => match (e.kind.as_str(), e.version) {
                ("report", 1) => {
                    found.contributions += 1;
                    reports.insert(
                        e.report_sha256,
                        Report {
                            state: e.state,
                            category: e.category,
                            first_accepted: e.accepted_at,
                            retracted: false,
                        },
                    );
                }
                ("report", _) => {
                    // A version after a retraction overturns it (the server takes one
                    // only over a retraction signed with a key revoked as of then).
                    if let Some(r) = reports.get_mut(&e.report_sha256) {
                        r.category = e.category;
                        r.retracted = false;
                    }
                }
                _ => {
                    if let Some(r) = reports.get_mut(&e.report_sha256) {
                        r.retracted = true;
                    }
                }
            },
            Entry::Audit(read) => {
                // Every access but a refusal that names other owners' reports is judged,
                // whatever its action: a read logged under an action this replay did not
                // know would otherwise go unjudged.
                if read.action.starts_with("refused ") || read.state.is_empty() {
                    continue;
                }
                let reader = read.state.as_str();
                let seen = seen.entry(read.number).or_default();
                // What this state of the record adds of other states' reports was sent at
                // or after `logged`: the reader must stand then.
                let mut grew = false;
                // An owner named without a count (an aggregate's entry, written once,
                // withholds them; any other entry should not) counts as read from: the
                // replay judges more reads, never fewer.
                for (state, count) in read
                    .owners
                    .iter()
                    .map(|(s, c)| (s, if read.counts_withheld { 1 } else { *c }))
                    .filter(|(s, _)| *s != reader && owner.is_none_or(|o| o == *s))
                {
                    let before = seen.counts.entry(state.clone()).or_default();
                    grew |= count > *before;
                    *before = (*before).max(count);
                }
                if !grew {
                    continue;
                }
                seen.judged = true;
                // Records from before `logged` existed say 0: they were written when the
                // read began.
                let logged = if read.logged > 0 {
                    read.logged
                } else {
                    read.at
                };
                let verdict = stands(rules.as_ref(), &reports, reader, &read.category, logged);
                if let (Err(reason), false) = (verdict, seen.reported) {
                    seen.reported = true;
                    let text = String::from_utf8_lossy(bytes);
                    found.violations.push(Violation {
                        index,
                        number: read.number.to_string(),
                        action: read.action.clone(),
                        principal: read.principal.clone(),
                        reader: reader.to_owned(),
                        at: logged,
                        owners: Entry::field(&text, "owners").unwrap_or_default().to_owned(),
                        reason,
                    });
                }
            }
        }
    }
    found.reads_checked = seen.values().filter(|r| r.judged).count() as u64;
    found
}

impl From<&PolicyEntry> for Rules {
    fn from(policy: &PolicyEntry) -> Self {
        Self {
            cross_category: policy.cross_category,
            categories: policy
                .rules
                .iter()
                .map(|(category, days, minimum)| {
                    (category.clone(), (i64::from(*days), u64::from(*minimum)))
                })
                .collect(),
        }
    }
}

/// `Ok` when `reader` stood in every one of `categories` (space-separated) at `at`.
fn stands(
    rules: Option<&Rules>,
    reports: &HashMap<[u8; 32], Report>,
    reader: &str,
    categories: &str,
    at: i64,
) -> Result<(), String> {
    let Some(rules) = rules else {
        return Err("no give-to-get rules were logged before it".to_owned());
    };
    for category in categories.split(' ').filter(|c| !c.is_empty() && *c != "-") {
        let Some(&(days, minimum)) = rules.categories.get(category) else {
            return Err(format!("the rules logged name no category {category:?}"));
        };
        let since = at - days * DAY;
        let contributed = reports
            .values()
            .filter(|r| r.state == reader && !r.retracted && r.first_accepted >= since)
            .filter(|r| rules.cross_category || r.category == category)
            .count() as u64;
        if contributed < minimum {
            return Err(format!(
                "{reader} had contributed {contributed} {category} reports in the {days} days \
                 before; {minimum} were required"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::entry::{AuditEntry, EnvelopeEntry, PolicyEntry, sha256};

    fn policy(window_days: u32, minimum: u32) -> Vec<u8> {
        Entry::Policy(PolicyEntry {
            at: 0,
            cross_category: false,
            rules: vec![
                ("smuggling-incident".to_owned(), window_days, minimum),
                ("maritime-movement".to_owned(), window_days, minimum),
            ],
        })
        .encode()
    }

    fn envelope(state: &str, report: &str, version: u32, kind: &str, at: i64) -> Vec<u8> {
        Entry::Envelope(EnvelopeEntry {
            sequence: 1,
            state: state.to_owned(),
            report_sha256: sha256(report.as_bytes()),
            version,
            category: "smuggling-incident".to_owned(),
            kind: kind.to_owned(),
            accepted_at: at,
            payload_sha256: [0; 32],
        })
        .encode()
    }

    fn read(number: u64, reader: &str, at: i64, owners: &[(&str, u64)]) -> Vec<u8> {
        Entry::Audit(AuditEntry {
            number,
            in_progress: false,
            at,
            logged: at,
            principal: format!("spiffe://t/state/{reader}/node/n"),
            state: reader.to_owned(),
            action: "query".to_owned(),
            category: "smuggling-incident".to_owned(),
            detail_sha256: [0; 32],
            count: owners.iter().map(|(_, c)| c).sum(),
            owners: owners.iter().map(|(s, c)| ((*s).to_owned(), *c)).collect(),
            counts_withheld: false,
        })
        .encode()
    }

    fn violations(entries: &[Vec<u8>]) -> Vec<String> {
        replay(entries.iter().map(Vec::as_slice), Some("AUS"))
            .violations
            .into_iter()
            .map(|v| v.number)
            .collect()
    }

    #[test]
    fn a_read_stands_on_live_contributions_within_the_window_before_it() {
        let day = DAY;
        let log = vec![
            policy(30, 1),
            envelope("AUS", "a", 1, "report", 0),
            envelope("IDN", "i", 1, "report", 10 * day),
            read(1, "IDN", 20 * day, &[("AUS", 1)]),
            // 40 days after its only contribution: out of the window.
            read(2, "IDN", 41 * day, &[("AUS", 1)]),
            envelope("IDN", "j", 1, "report", 42 * day),
            read(3, "IDN", 43 * day, &[("AUS", 1)]),
            // Its contribution retracted: no standing.
            envelope("IDN", "j", 2, "retraction", 44 * day),
            read(4, "IDN", 45 * day, &[("AUS", 1)]),
            // Reading only its own reports needs no standing.
            read(5, "IDN", 45 * day, &[("IDN", 1)]),
            // A stricter rule logged later applies to reads after it.
            policy(365, 3),
            envelope("IDN", "k", 1, "report", 46 * day),
            read(6, "IDN", 47 * day, &[("AUS", 1)]),
        ];
        assert_eq!(violations(&log), ["2", "4", "6"]);
    }

    #[test]
    fn a_read_whose_entry_names_owners_without_counts_is_judged() {
        let read_without_counts = |number: u64, action: &str| {
            Entry::Audit(AuditEntry {
                number,
                in_progress: false,
                at: 1,
                logged: 1,
                principal: "spiffe://t/state/IDN/analyst/a".to_owned(),
                state: "IDN".to_owned(),
                action: action.to_owned(),
                category: "smuggling-incident".to_owned(),
                detail_sha256: [0; 32],
                count: 1,
                owners: vec![("AUS".to_owned(), 1)],
                counts_withheld: true,
            })
            .encode()
        };
        // IDN never contributed: an aggregate over AUS's reports is a violation, and so
        // is a query whose entry (wrongly) leaves the counts out.
        let log = [
            policy(30, 1),
            read_without_counts(1, "aggregate"),
            read_without_counts(2, "query"),
        ];
        assert_eq!(violations(&log), ["1", "2"]);
    }

    #[test]
    fn a_stream_that_goes_on_after_its_standing_lapsed_is_caught_where_it_grew() {
        let raise = |count: u64, logged: i64| {
            Entry::Audit(AuditEntry {
                number: 7,
                in_progress: true,
                at: 1,
                logged,
                principal: "spiffe://t/state/IDN/node/n".to_owned(),
                state: "IDN".to_owned(),
                action: "subscribe".to_owned(),
                category: "smuggling-incident".to_owned(),
                detail_sha256: [0; 32],
                count,
                owners: vec![("AUS".to_owned(), count)],
                counts_withheld: false,
            })
            .encode()
        };
        let log = [
            policy(30, 1),
            envelope("IDN", "i", 1, "report", 0),
            raise(0, 1),
            raise(64, 2),
            envelope("IDN", "i", 2, "retraction", 3),
            raise(64, 4),
            raise(128, 5),
        ];
        let found = replay(log.iter().map(Vec::as_slice), Some("AUS"));
        assert_eq!(found.violations.len(), 1, "{:?}", found.violations);
        assert_eq!((found.violations[0].index, found.violations[0].at), (6, 5));
    }

    /// A read is judged whatever its action is called: an operator that logged one as
    /// `read` (or any name this replay does not know) does not hide it.
    #[test]
    fn a_read_under_any_action_is_judged() {
        let renamed = String::from_utf8(read(2, "IDN", 1, &[("AUS", 3)]))
            .unwrap()
            .replace("action query", "action read");
        let log = [policy(30, 1), renamed.into_bytes()];
        assert_eq!(violations(&log), ["2"]);
    }

    /// An entry that is not in the documented encoding cannot be judged: it is named,
    /// and the entries around it are still replayed.
    #[test]
    fn an_entry_not_in_the_documented_encoding_is_a_finding() {
        let hidden = String::from_utf8(read(2, "IDN", 1, &[("AUS", 3)]))
            .unwrap()
            .replace("tidemark.v1 audit", "tidemark.v1  audit");
        let log = [
            policy(30, 1),
            hidden.into_bytes(),
            read(3, "IDN", 1, &[("AUS", 3)]),
        ];
        let found = replay(log.iter().map(Vec::as_slice), None);
        assert_eq!(found.malformed.len(), 1, "{:?}", found.malformed);
        assert_eq!(found.malformed[0].0, 1);
        assert!(found.malformed[0].1.to_string().contains("line 1"));
        assert_eq!(violations(&log), ["3"]);
    }

    #[test]
    fn a_read_before_any_rules_were_logged_is_a_violation() {
        let log = [
            envelope("IDN", "i", 1, "report", 0),
            read(1, "IDN", 1, &[("AUS", 3)]),
        ];
        let found = replay(log.iter().map(Vec::as_slice), None);
        assert_eq!(found.violations.len(), 1);
        assert!(found.violations[0].reason.contains("no give-to-get rules"));
    }
}
