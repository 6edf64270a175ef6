//! Verifiable reciprocity: replays the transparency log's entries — the give-to-get
//! rules logged, every contribution (envelope entries: state, hashed report id, version,
//! category, time) and every read (audit entries: reader's state, categories, owners) —
//! and finds each read of another state's reports that the rules in force did not allow.
//!
//! A read is judged at every state of its audit record that adds reports of another
//! state (a streaming read's record is raised before what it sends, and each state is
//! logged with its time): the reader must stand, at that `logged` time, under the rules
//! logged before that entry, with the contributions accepted before it.
//!
//! The replay needs nothing but the entries, in log order (which a caller checks against
//! a signed checkpoint by recomputing its root). A state stands in a category when
//! it has at least `minimum` live reports of it (of either category, with
//! `cross-category`) first accepted within the trailing `window-days`.

use std::collections::{BTreeMap, HashMap};

use crate::tlog::entry::Entry;

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
/// reports (of any other state's, when `owner` is `None`) the rules did not allow.
pub fn replay<'e>(entries: impl IntoIterator<Item = &'e [u8]>, owner: Option<&str>) -> Replay {
    let mut found = Replay::default();
    let mut rules: Option<Rules> = None;
    let mut reports: HashMap<String, Report> = HashMap::new();
    let mut seen: BTreeMap<String, ReadSeen> = BTreeMap::new();
    for (index, bytes) in (0u64..).zip(entries) {
        let text = String::from_utf8_lossy(bytes);
        let field = |key| Entry::field(&text, key).unwrap_or_default();
        match text.lines().next().unwrap_or_default() {
            "tidemark.v1 policy" => {
                found.policies += 1;
                rules = Some(parse_rules(&text));
            }
            "tidemark.v1 envelope" => {
                let report = field("report").to_owned();
                let at = field("accepted").parse().unwrap_or(0);
                match (field("kind"), field("version")) {
                    ("report", "1") => {
                        found.contributions += 1;
                        reports.insert(
                            report,
                            Report {
                                state: field("state").to_owned(),
                                category: field("category").to_owned(),
                                first_accepted: at,
                                retracted: false,
                            },
                        );
                    }
                    ("report", _) => {
                        if let Some(r) = reports.get_mut(&report) {
                            field("category").clone_into(&mut r.category);
                        }
                    }
                    ("retraction", _) => {
                        if let Some(r) = reports.get_mut(&report) {
                            r.retracted = true;
                        }
                    }
                    _ => {}
                }
            }
            "tidemark.v1 audit" => {
                let reader = field("state");
                let reads = ["query", "sync", "subscribe", "aggregate"].contains(&field("action"));
                if !reads || reader == "-" {
                    continue;
                }
                let number = field("number").to_owned();
                let read = seen.entry(number.clone()).or_default();
                // What this state of the record adds of other states' reports was sent at
                // or after `logged`: the reader must stand then.
                let mut grew = false;
                // An owner named without a count (an aggregate's entry, written once,
                // withholds them; any other entry should not) counts as read from: the
                // replay judges more reads, never fewer.
                for (state, count) in Entry::owners(&text)
                    .into_iter()
                    .map(|(s, c)| (s, c.unwrap_or(1)))
                    .filter(|(s, _)| *s != reader && owner.is_none_or(|o| o == *s))
                {
                    let before = read.counts.entry(state.to_owned()).or_default();
                    grew |= count > *before;
                    *before = (*before).max(count);
                }
                if !grew {
                    continue;
                }
                read.judged = true;
                let logged = Entry::field(&text, "logged")
                    .or(Entry::field(&text, "at"))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let verdict = stands(rules.as_ref(), &reports, reader, field("category"), logged);
                if let (Err(reason), false) = (verdict, read.reported) {
                    read.reported = true;
                    found.violations.push(Violation {
                        index,
                        number,
                        action: field("action").to_owned(),
                        principal: field("principal").to_owned(),
                        reader: reader.to_owned(),
                        at: logged,
                        owners: field("owners").to_owned(),
                        reason,
                    });
                }
            }
            _ => {}
        }
    }
    found.reads_checked = seen.values().filter(|r| r.judged).count() as u64;
    found
}

fn parse_rules(text: &str) -> Rules {
    let mut categories = HashMap::new();
    for line in text.lines().skip(1) {
        let words: Vec<&str> = line.split(' ').collect();
        if let [category, "window-days", days, "minimum", minimum] = words.as_slice() {
            categories.insert(
                (*category).to_owned(),
                (
                    days.parse().unwrap_or(0),
                    minimum.parse().unwrap_or(u64::MAX),
                ),
            );
        }
    }
    Rules {
        cross_category: Entry::field(text, "cross-category") == Some("true"),
        categories,
    }
}

/// `Ok` when `reader` stood in every one of `categories` (space-separated) at `at`.
fn stands(
    rules: Option<&Rules>,
    reports: &HashMap<String, Report>,
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
            rules: vec![("smuggling-incident".to_owned(), window_days, minimum)],
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
            count: 1,
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
