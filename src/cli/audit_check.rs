//! `tidemark audit --my-data --verify`: the access list the server shows an owner, checked
//! against the transparency log under the checkpoint the owner's witness holds — every
//! access shown is in the log, and the log names no access of the owner's data that the
//! list leaves out.

use std::{collections::BTreeMap, path::Path};

use anyhow::{anyhow, bail};
use tidemark::{
    client,
    pb::{self, get_inclusion_proof_request::Leaf, transparency_client::TransparencyClient},
    tlog::{checkpoint::Checkpoint, entry::Entry, merkle, note::NoteVerifier},
};
use tonic::{Code, transport::Channel};

/// Checks `accesses` (the access list shown to `state`) against the log under the
/// checkpoint held in `witness_dir`; fails naming every discrepancy.
pub async fn verify(
    channel: Channel,
    witness_dir: &Path,
    state: &str,
    accesses: &[pb::DataAccess],
) -> anyhow::Result<()> {
    let read = |name: &str| {
        // Notes as every reader of a witness's files reads them (CR LF is LF).
        super::input::read_note(&witness_dir.join(name), 64 * 1024).map_err(|e| {
            anyhow!(
                "{e:#}; --state-dir names this state's witness directory (run `tidemark log \
                 witness --state-dir DIR` first)"
            )
        })
    };
    let verifier = NoteVerifier::parse(read("log.vkey")?.trim()).map_err(|e| anyhow!("{e}"))?;
    let held = Checkpoint::open(&read("checkpoint")?, &verifier)
        .map_err(|e| anyhow!("the checkpoint held in {}: {e}", witness_dir.display()))?;
    let mut log = TransparencyClient::new(channel);
    let latest = latest_audit_entries(&mut log, &held).await?;

    let mut problems = Vec::new();
    let mut shown_numbers: Vec<String> = Vec::new();
    let mut pending = 0;
    for access in accesses {
        let text = String::from_utf8_lossy(&access.log_entry).into_owned();
        let field = |key| Entry::field(&text, key).unwrap_or_default().to_owned();
        let number = field("number");
        let label = format!(
            "{} by {} at {}",
            access.action, access.reader, access.at_unix
        );
        if shown_numbers.contains(&number) {
            problems.push(format!("{label}: audit record {number} is shown twice"));
            continue;
        }
        shown_numbers.push(number.clone());
        if let Some(problem) = displayed_wrong(access, &text, state) {
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
        if latest.get(&number).is_some_and(|e| *e != access.log_entry) {
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
        "verified against the checkpoint of {} leaves held in {}: {} shown, each in the log \
         as it stands, and the log names none that the list leaves out{}",
        held.size,
        witness_dir.display(),
        super::labels::count((accesses.len() - pending) as u64, "access", "accesses"),
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
    )?;
    Ok(())
}

/// Why what the list displays of `access` is not what its log entry states, if it is not.
fn displayed_wrong(access: &pb::DataAccess, entry: &str, state: &str) -> Option<String> {
    let field = |key| Entry::field(entry, key).unwrap_or_default();
    // An aggregate's entry names the owners without counts: only that it counted some
    // of this state's reports can be checked. Every other entry states the count.
    let withheld = field("action") == "aggregate" && field("count") == "-";
    let mine = match Entry::owners(entry)
        .into_iter()
        .find(|(owner, _)| *owner == state)
    {
        Some((_, Some(n))) => n == access.count,
        Some((_, None)) => withheld,
        // Named while in progress (raised ahead), then completed without this state's
        // reports: the list shows it with none.
        None => access.count == 0,
    };
    let status = if access.in_progress {
        "in-progress"
    } else {
        "complete"
    };
    let same = field("principal") == access.reader
        && field("action") == access.action
        && field("at") == access.at_unix.to_string()
        && mine
        && field("status") == status;
    (!same).then(|| {
        format!(
            "the list says {} of your reports ({status}), but its log entry says {} by {} at \
             {}, owners {} ({})",
            access.count,
            field("action"),
            field("principal"),
            field("at"),
            field("owners"),
            field("status")
        )
    })
}

/// The accesses of `state`'s reports the log names and the list (`shown` numbers) leaves
/// out.
fn left_out(latest: &BTreeMap<String, Vec<u8>>, state: &str, shown: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (number, entry) in latest {
        let text = String::from_utf8_lossy(entry);
        let field = |key| Entry::field(&text, key).unwrap_or_default();
        let reads_mine = field("state") != state
            && Entry::owners(&text)
                .iter()
                .any(|(owner, _)| *owner == state);
        if reads_mine && !shown.contains(number) {
            out.push(format!(
                "audit record {number} ({} by {} at {}) reads {state}'s reports in the log, \
                 but the access list leaves it out",
                field("action"),
                field("principal"),
                field("at")
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

/// Per audit number, its latest entry among the leaves under `held` (checked against its
/// root).
async fn latest_audit_entries(
    log: &mut TransparencyClient<Channel>,
    held: &Checkpoint,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut latest = BTreeMap::new();
    for entry in super::log::entries_under(log, held).await? {
        let text = String::from_utf8_lossy(&entry);
        if text.starts_with("tidemark.v1 audit\n") {
            let number = Entry::field(&text, "number").unwrap_or_default().to_owned();
            latest.insert(number, entry);
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read the log has as in progress is not shown as complete, nor the reverse.
    #[test]
    fn the_list_must_show_a_read_as_in_progress_exactly_when_its_entry_does() {
        let entry = |status: &str| {
            format!(
                "tidemark.audit/v1\nnumber 7\nstatus {status}\nat 100\nprincipal \
                 spiffe://t/state/IDN/node/n\nstate IDN\naction query\nowners AUS:64\n"
            )
        };
        for (in_progress, status, wrong) in [
            (true, "in-progress", false),
            (false, "complete", false),
            (false, "in-progress", true),
            (true, "complete", true),
        ] {
            let access = pb::DataAccess {
                at_unix: 100,
                reader: "spiffe://t/state/IDN/node/n".to_owned(),
                action: "query".to_owned(),
                count: 64,
                in_progress,
                ..pb::DataAccess::default()
            };
            assert_eq!(
                displayed_wrong(&access, &entry(status), "AUS").is_some(),
                wrong,
                "{in_progress} {status}"
            );
        }
    }

    /// A read raised ahead for this state's reports that took none of them: its final
    /// entry no longer names the state, and the list shows it with 0 — and only with 0.
    #[test]
    fn a_read_completed_without_the_states_reports_is_shown_with_none() {
        let entry = "tidemark.audit/v1\nnumber 7\nstatus complete\nat 100\nprincipal \
                     spiffe://t/state/IDN/node/n\nstate IDN\naction query\nowners THA:3\n";
        for (count, wrong) in [(0, false), (1, true)] {
            let access = pb::DataAccess {
                at_unix: 100,
                reader: "spiffe://t/state/IDN/node/n".to_owned(),
                action: "query".to_owned(),
                count,
                ..pb::DataAccess::default()
            };
            assert_eq!(
                displayed_wrong(&access, entry, "AUS").is_some(),
                wrong,
                "{count}"
            );
        }
    }

    /// Only an aggregate's entry may leave the owners' counts out.
    #[test]
    fn a_count_may_be_missing_only_from_an_aggregates_entry() {
        let entry = |action: &str, count: &str, owners: &str| {
            format!(
                "tidemark.audit/v1\nnumber 7\nstatus complete\nat 100\nprincipal \
                 spiffe://t/state/IDN/analyst/a\nstate IDN\naction {action}\ncount {count}\n\
                 owners {owners}\n"
            )
        };
        let access = |action: &str| pb::DataAccess {
            at_unix: 100,
            reader: "spiffe://t/state/IDN/analyst/a".to_owned(),
            action: action.to_owned(),
            count: 3,
            ..pb::DataAccess::default()
        };
        for (action, count, owners, wrong) in [
            ("aggregate", "-", "AUS THA", false),
            ("aggregate", "3", "AUS:3", false),
            ("aggregate", "3", "AUS:2", true),
            ("query", "-", "AUS THA", true),
            ("query", "3", "AUS", true),
            ("aggregate", "-", "THA", true),
        ] {
            assert_eq!(
                displayed_wrong(&access(action), &entry(action, count, owners), "AUS").is_some(),
                wrong,
                "{action} {count} {owners}"
            );
        }
    }
}
