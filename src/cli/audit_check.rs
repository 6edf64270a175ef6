//! `tidemark audit --my-data --verify`: the access list the server shows an owner, checked
//! against the transparency log under the checkpoint the owner's witness holds — every
//! access shown is in the log, and the log names no access of the owner's data that the
//! list leaves out.

use std::{collections::BTreeMap, path::Path};

use anyhow::{anyhow, bail};
use tidemark::{
    client,
    pb::{self, get_inclusion_proof_request::Leaf, transparency_client::TransparencyClient},
    tlog::{
        checkpoint::Checkpoint,
        entry::{AuditEntry, Entry, MalformedEntry, VERSION},
        merkle,
        note::NoteVerifier,
    },
};
use tonic::{Code, transport::Channel};

/// The witness's file `name` in `dir`, read as every reader of a witness's files reads
/// them (a note: CR LF is LF). Missing: not a witness's directory (yet), said so; there
/// but unreadable: its own fault, said alone.
pub(super) fn witness_file(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    super::input::read_note(&path, 64 * 1024).map_err(|e| {
        if path.exists() {
            anyhow!("{e:#}")
        } else {
            anyhow!(
                "{e:#}; --state-dir names this state's witness directory (run `tidemark log \
                 witness --state-dir {}` first)",
                dir.display()
            )
        }
    })
}

/// The log key a witness recorded in `dir` (`log.vkey`), held to one key on one line;
/// with the file's name, for messages.
pub(super) fn witness_log_key(dir: &Path) -> anyhow::Result<(String, String)> {
    let vkey = witness_file(dir, "log.vkey")?;
    let file = dir.join("log.vkey").display().to_string();
    super::submit::one_line_key(&vkey, &file, "note verifier key")?;
    Ok((vkey, file))
}

/// Checks `accesses` (the access list shown to `state`) against the log under the
/// checkpoint held in `witness_dir`; fails naming every discrepancy.
pub async fn verify(
    channel: Channel,
    witness_dir: &Path,
    state: &str,
    accesses: &[pb::DataAccess],
) -> anyhow::Result<()> {
    let (vkey, vkey_file) = witness_log_key(witness_dir)?;
    let verifier = NoteVerifier::parse(vkey.trim()).map_err(|e| anyhow!("{vkey_file}: {e}"))?;
    let held = Checkpoint::open(&witness_file(witness_dir, "checkpoint")?, &verifier)
        .map_err(|e| anyhow!("the checkpoint held in {}: {e}", witness_dir.display()))?;
    let mut log = TransparencyClient::new(channel);
    let (latest, malformed) = latest_audit_entries(&mut log, &held).await?;

    let mut problems: Vec<String> = malformed
        .iter()
        .map(|(index, e)| {
            format!(
                "leaf {index} of the log is not a well-formed {VERSION} entry ({e}): an access \
                 it records cannot be checked"
            )
        })
        .collect();
    let mut shown_numbers: Vec<u64> = Vec::new();
    let mut pending = 0;
    for access in accesses {
        let label = format!(
            "{} by {} at {}",
            access.action, access.reader, access.at_unix
        );
        let entry = match Entry::decode(&access.log_entry) {
            Ok(Entry::Audit(entry)) => entry,
            Ok(other) => {
                problems.push(format!(
                    "{label}: its log entry is {} entry, not an audit record's",
                    other.kind_in_a_sentence()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!(
                    "{label}: its log entry is not a well-formed {VERSION} entry ({e})"
                ));
                continue;
            }
        };
        let number = entry.number;
        if shown_numbers.contains(&number) {
            problems.push(format!("{label}: audit record {number} is shown twice"));
            continue;
        }
        shown_numbers.push(number);
        if let Some(problem) = displayed_wrong(access, &entry, &access.log_entry, state) {
            problems.push(format!("{label}: {problem}"));
        }
        match inclusion(&mut log, &access.log_entry, &held).await? {
            Included::Yes => {}
            Included::Newer => {
                pending += 1;
                continue;
            }
            Included::No(why) => {
                problems.push(format!("{label}: {why}"));
                continue;
            }
        }
        // And it must be the record as it stands under the checkpoint, not an older state.
        if latest
            .get(&number)
            .is_some_and(|(bytes, _)| *bytes != access.log_entry)
        {
            problems.push(format!(
                "{label}: the list shows an older state of audit record {number} than the log \
                 holds"
            ));
        }
    }

    problems.extend(left_out(&latest, state, &shown_numbers));
    for access in accesses {
        outln!("{}", super::reads::access_line(access))?;
    }
    if !problems.is_empty() {
        bail!(
            "the access list does not match the log under the checkpoint of {} leaves held \
             in {}:\n  {}",
            held.size,
            witness_dir.display(),
            problems.join("\n  ")
        );
    }
    outln!(
        "{}",
        verified(&held, witness_dir, accesses.len() - pending, pending)
    )?;
    Ok(())
}

/// What `audit --verify` says when the list matches the log under `held`: `checked`
/// accesses checked, `pending` newer than `held`.
fn verified(held: &Checkpoint, witness_dir: &Path, checked: usize, pending: usize) -> String {
    format!(
        "verified against the checkpoint of {} leaves held in {}: {} shown, each in the log \
         as it stands, and the log names none that the list leaves out{}",
        held.size,
        witness_dir.display(),
        super::labels::count(checked as u64, "access", "accesses"),
        if pending == 0 {
            String::new()
        } else {
            format!(
                "; {} newer than that checkpoint and not yet checked (run the witness, then \
                 this again)",
                if pending == 1 {
                    "1 more is".to_owned()
                } else {
                    format!("{pending} more are")
                }
            )
        }
    )
}

/// Why what the list displays of `access` is not what its log entry (`entry`, decoded
/// from `bytes`) states, if it is not.
fn displayed_wrong(
    access: &pb::DataAccess,
    entry: &AuditEntry,
    bytes: &[u8],
    state: &str,
) -> Option<String> {
    // An aggregate's entry names the owners without counts: only that it counted some
    // of this state's reports can be checked. Every other entry states the count.
    let mine = match entry.owners.iter().find(|(owner, _)| owner == state) {
        Some(_) if entry.counts_withheld => entry.action == "aggregate",
        Some((_, n)) => *n == access.count,
        // Named while in progress (raised ahead), then completed without this state's
        // reports: the list shows it with none.
        None => access.count == 0,
    };
    let same = entry.principal == access.reader
        && entry.action == access.action
        && entry.at == access.at_unix
        && mine
        && entry.in_progress == access.in_progress;
    (!same).then(|| {
        let text = String::from_utf8_lossy(bytes);
        let field = |key| Entry::field(&text, key).unwrap_or_default().to_owned();
        format!(
            "the list says {} of your reports ({}), but its log entry says {} by {} at {}, \
             owners {} ({})",
            access.count,
            if access.in_progress {
                "in-progress"
            } else {
                "complete"
            },
            entry.action,
            entry.principal,
            entry.at,
            field("owners"),
            field("status")
        )
    })
}

/// The accesses of `state`'s reports the log names and the list (`shown` numbers) leaves
/// out.
fn left_out(latest: &Latest, state: &str, shown: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    for (number, (_, entry)) in latest {
        let reads_mine =
            entry.state != state && entry.owners.iter().any(|(owner, _)| owner == state);
        if reads_mine && !shown.contains(number) {
            out.push(format!(
                "audit record {number} ({} by {} at {}) reads {state}'s reports in the log, \
                 but the access list leaves it out",
                entry.action, entry.principal, entry.at
            ));
        }
    }
    out
}

/// Whether an entry is in the log under `held`.
enum Included {
    Yes,
    /// In the log, but past the checkpoint.
    Newer,
    No(String),
}

async fn inclusion(
    log: &mut TransparencyClient<Channel>,
    entry: &[u8],
    held: &Checkpoint,
) -> anyhow::Result<Included> {
    let leaf = merkle::leaf_hash(entry);
    let answer = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::LeafHash(leaf.to_vec())),
            tree_size: held.size,
        })
        .await;
    let proof = match answer {
        Ok(proof) => proof.into_inner(),
        Err(status) if status.code() == Code::OutOfRange => return Ok(Included::Newer),
        Err(status) if status.code() == Code::NotFound => {
            return Ok(Included::No("shown, but not in the log".to_owned()));
        }
        Err(status) => bail!(client::explain(&status)),
    };
    let hashes = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into())
        .collect::<Result<Vec<merkle::Hash>, _>>()
        .map_err(|_| anyhow!("the server sent a proof hash that is not 32 bytes"))?;
    Ok(
        match merkle::verify_inclusion(&leaf, proof.index, held.size, &hashes, &held.root) {
            Ok(()) => Included::Yes,
            Err(_) => Included::No(
                "its inclusion proof does not verify under the checkpoint held: the log \
                 was rewritten (run the witness)"
                    .to_owned(),
            ),
        },
    )
}

/// Per audit number, its latest entry among the leaves under `held`, as written and
/// decoded.
type Latest = BTreeMap<u64, (Vec<u8>, AuditEntry)>;

/// The latest entry of each audit record among the leaves under `held` (checked against
/// its root), and the leaves that are not well-formed entries, by index.
async fn latest_audit_entries(
    log: &mut TransparencyClient<Channel>,
    held: &Checkpoint,
) -> anyhow::Result<(Latest, Vec<(u64, MalformedEntry)>)> {
    let mut latest = BTreeMap::new();
    let mut malformed = Vec::new();
    for (index, bytes) in (0u64..).zip(super::log::entries_under(log, held).await?) {
        match Entry::decode(&bytes) {
            Ok(Entry::Audit(entry)) => {
                latest.insert(entry.number, (bytes, entry));
            }
            Ok(_) => {}
            Err(e) => malformed.push((index, e)),
        }
    }
    Ok((latest, malformed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audit entry of record 7, begun at 100 by IDN's `who`, and its bytes.
    fn entry(
        who: &str,
        action: &str,
        in_progress: bool,
        owners: &[(&str, u64)],
        counts_withheld: bool,
    ) -> (AuditEntry, Vec<u8>) {
        let entry = AuditEntry {
            number: 7,
            in_progress,
            at: 100,
            logged: 100,
            principal: format!("spiffe://t/state/IDN/{who}"),
            state: "IDN".to_owned(),
            action: action.to_owned(),
            category: "smuggling-incident".to_owned(),
            detail_sha256: [0; 32],
            count: owners.iter().map(|(_, n)| n).sum(),
            owners: owners.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect(),
            counts_withheld,
        };
        let bytes = Entry::Audit(entry.clone()).encode();
        (entry, bytes)
    }

    fn access(who: &str, action: &str, count: u64, in_progress: bool) -> pb::DataAccess {
        pb::DataAccess {
            at_unix: 100,
            reader: format!("spiffe://t/state/IDN/{who}"),
            action: action.to_owned(),
            count,
            in_progress,
            ..pb::DataAccess::default()
        }
    }

    /// A read the log has as in progress is not shown as complete, nor the reverse.
    #[test]
    fn the_list_must_show_a_read_as_in_progress_exactly_when_its_entry_does() {
        for (shown, logged, wrong) in [
            (true, true, false),
            (false, false, false),
            (false, true, true),
            (true, false, true),
        ] {
            let (entry, bytes) = entry("node/n", "query", logged, &[("AUS", 64)], false);
            let access = access("node/n", "query", 64, shown);
            assert_eq!(
                displayed_wrong(&access, &entry, &bytes, "AUS").is_some(),
                wrong,
                "{shown} {logged}"
            );
        }
    }

    /// A read raised ahead for this state's reports that took none of them: its final
    /// entry no longer names the state, and the list shows it with 0 — and only with 0.
    #[test]
    fn a_read_completed_without_the_states_reports_is_shown_with_none() {
        let (entry, bytes) = entry("node/n", "query", false, &[("THA", 3)], false);
        for (count, wrong) in [(0, false), (1, true)] {
            let access = access("node/n", "query", count, false);
            assert_eq!(
                displayed_wrong(&access, &entry, &bytes, "AUS").is_some(),
                wrong,
                "{count}"
            );
        }
    }

    /// Only an aggregate's entry may leave the owners' counts out.
    #[test]
    fn a_count_may_be_missing_only_from_an_aggregates_entry() {
        for (action, owners, withheld, wrong) in [
            ("aggregate", &[("AUS", 0), ("THA", 0)][..], true, false),
            ("aggregate", &[("AUS", 3)], false, false),
            ("aggregate", &[("AUS", 2)], false, true),
            ("query", &[("AUS", 0), ("THA", 0)], true, true),
            ("aggregate", &[("THA", 0)], true, true),
        ] {
            let (entry, bytes) = entry("analyst/a", action, false, owners, withheld);
            assert_eq!(
                displayed_wrong(
                    &access("analyst/a", action, 3, false),
                    &entry,
                    &bytes,
                    "AUS"
                )
                .is_some(),
                wrong,
                "{action} {owners:?} {withheld}"
            );
        }
    }
}
