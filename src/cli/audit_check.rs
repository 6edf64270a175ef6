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

/// Entries read per call while scanning the log.
const PAGE: u64 = 1000;

/// What one audit number's latest entry under the checkpoint says.
struct Logged {
    action: String,
    principal: String,
    at: String,
}

/// Checks `accesses` (the access list shown to `state`) against the log under the
/// checkpoint held in `witness_dir`; fails naming every discrepancy.
pub async fn verify(
    channel: Channel,
    witness_dir: &Path,
    state: &str,
    accesses: &[pb::DataAccess],
) -> anyhow::Result<()> {
    let read = |name: &str| {
        super::input::read_text_at_most(&witness_dir.join(name), 64 * 1024).map_err(|e| {
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

    // 1. Every access shown is in the log (or newer than the checkpoint held).
    let mut problems = Vec::new();
    let mut shown_numbers = Vec::new();
    let mut pending = 0;
    for access in accesses {
        let text = String::from_utf8_lossy(&access.log_entry).into_owned();
        if let Some(number) = Entry::field(&text, "number") {
            shown_numbers.push(number.to_owned());
        }
        let leaf = merkle::leaf_hash(&access.log_entry);
        let answer = log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(Leaf::LeafHash(leaf.to_vec())),
                tree_size: held.size,
            })
            .await;
        let proof = match answer {
            Ok(proof) => proof.into_inner(),
            Err(status) if status.code() == Code::OutOfRange => {
                pending += 1;
                continue;
            }
            Err(status) if status.code() == Code::NotFound => {
                problems.push(format!(
                    "{} by {} at {}: shown, but not in the log",
                    access.action, access.reader, access.at_unix
                ));
                continue;
            }
            Err(status) => bail!(client::explain(&status)),
        };
        let hashes = proof
            .hashes
            .iter()
            .map(|h| h.as_slice().try_into())
            .collect::<Result<Vec<merkle::Hash>, _>>()
            .map_err(|_| anyhow!("the server sent a proof hash that is not 32 bytes"))?;
        if merkle::verify_inclusion(&leaf, proof.index, held.size, &hashes, &held.root).is_err() {
            problems.push(format!(
                "{} by {} at {}: its inclusion proof does not verify under the checkpoint held",
                access.action, access.reader, access.at_unix
            ));
        }
    }

    // 2. The log names no access of this state's data that the list leaves out.
    let logged = accesses_in_log(&mut log, held.size, state).await?;
    for (number, entry) in &logged {
        if !shown_numbers.iter().any(|n| n == number) {
            problems.push(format!(
                "audit record {number} ({} by {} at {}) reads {state}'s reports in the log, \
                 but the access list leaves it out",
                entry.action, entry.principal, entry.at
            ));
        }
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
    println!(
        "verified: the {} accesses shown are in the log under the checkpoint of {} leaves \
         held in {} ({pending} newer than it), and the log names none that is left out ({} \
         in all)",
        accesses.len() - pending,
        held.size,
        witness_dir.display(),
        logged.len()
    );
    Ok(())
}

/// Per audit number, the latest entry among the first `size` leaves, if it names `state`
/// among the owners read by another state.
async fn accesses_in_log(
    log: &mut TransparencyClient<Channel>,
    size: u64,
    state: &str,
) -> anyhow::Result<BTreeMap<String, Logged>> {
    let mut latest: BTreeMap<String, Option<Logged>> = BTreeMap::new();
    let mut start = 0;
    while start < size {
        let page = log
            .get_entries(pb::GetEntriesRequest {
                start,
                end: size.min(start + PAGE),
            })
            .await
            .map_err(|s| anyhow!(client::explain(&s)))?
            .into_inner();
        if page.entries.is_empty() {
            bail!("the server returned no entries from leaf {start}, below the checkpoint's size");
        }
        start += page.entries.len() as u64;
        for entry in &page.entries {
            let text = String::from_utf8_lossy(entry);
            if !text.starts_with("tidemark.v1 audit\n") {
                continue;
            }
            let field = |key| Entry::field(&text, key).unwrap_or_default().to_owned();
            let reads_mine = field("state") != state
                && field("owners")
                    .split(' ')
                    .any(|o| o.split_once(':').is_some_and(|(owner, _)| owner == state));
            latest.insert(
                field("number"),
                reads_mine.then(|| Logged {
                    action: field("action"),
                    principal: field("principal"),
                    at: field("at"),
                }),
            );
        }
    }
    Ok(latest
        .into_iter()
        .filter_map(|(number, entry)| entry.map(|e| (number, e)))
        .collect())
}
