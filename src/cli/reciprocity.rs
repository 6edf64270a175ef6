//! `tidemark audit verify-reciprocity`: replays the transparency log and names every read
//! of a state's reports that the give-to-get rules in force did not allow.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use tidemark::{
    client,
    country::CountryCode,
    pb::{self, transparency_client::TransparencyClient},
    reciprocity,
    tlog::{checkpoint::Checkpoint, note::NoteVerifier},
};
use tonic::transport::Channel;

/// Check that every read of a state's reports was allowed by the give-to-get rules in
/// force at that moment, from the transparency log alone.
///
/// Fetches every entry up to a checkpoint, checks that they are exactly the log that
/// checkpoint signs (the Merkle root recomputed from them), and replays them: the rules
/// logged, each contribution, each read. Exits 1 naming every read the rules did not
/// allow; 3 if the server's log is shorter than the checkpoint (rolled back), 4 if its
/// entries are not the log under it (rewritten), as `log witness` exits.
#[derive(Args, Debug)]
pub struct ReciprocityArgs {
    /// Only reads of this state's reports (default: every state's).
    #[arg(long)]
    state: Option<CountryCode>,
    /// Your witness directory: replay up to the checkpoint it holds, with the log key it
    /// recorded (default: the server's newest checkpoint and key, trusted as given).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub async fn run(args: &ReciprocityArgs, channel: Channel) -> anyhow::Result<()> {
    let mut log = TransparencyClient::new(channel);
    let checkpoint = checkpoint(&mut log, args.state_dir.as_deref()).await?;
    let entries = super::log::entries_under(&mut log, &checkpoint).await?;
    let owner = args.state.map(|s| s.to_string());
    let found = reciprocity::replay(entries.iter().map(Vec::as_slice), owner.as_deref());
    let whose = owner.map_or_else(|| "any state's".to_owned(), |s| format!("{s}'s"));
    if found.violations.is_empty() && found.malformed.is_empty() {
        outln!(
            "verified: every read of {whose} reports in the log's {} entries was allowed by \
             the give-to-get rules in force ({} reads, {} contributions, {} rules logged)",
            checkpoint.size,
            found.reads_checked,
            found.contributions,
            found.policies
        )?;
        return Ok(());
    }
    let mut findings = Vec::new();
    if !found.violations.is_empty() {
        let lines: Vec<String> = found
            .violations
            .iter()
            .map(|v| {
                format!(
                    "audit record {} (leaf {}): {} by {} at {} read {}: {}",
                    v.number, v.index, v.action, v.principal, v.at, v.owners, v.reason
                )
            })
            .collect();
        findings.push(format!(
            "{} read(s) of {whose} reports were not allowed by the rules in force:\n  {}",
            lines.len(),
            lines.join("\n  ")
        ));
    }
    if !found.malformed.is_empty() {
        let lines: Vec<String> = found
            .malformed
            .iter()
            .map(|(index, e)| format!("leaf {index}: {e}"))
            .collect();
        let (entries, are) = match lines.len() {
            1 => ("1 entry".to_owned(), "is not a well-formed entry"),
            n => (format!("{n} entries"), "are not well-formed entries"),
        };
        findings.push(format!(
            "{entries} of the log {are} of the {} format, so what they record cannot be \
             judged (keep the log's output as evidence and tell the operator):\n  {}",
            tidemark::tlog::entry::VERSION,
            lines.join("\n  ")
        ));
    }
    bail!("{}", findings.join("\n"))
}

/// The checkpoint to replay up to: the witness's, or the server's newest.
async fn checkpoint(
    log: &mut TransparencyClient<Channel>,
    witness_dir: Option<&Path>,
) -> anyhow::Result<Checkpoint> {
    let (vkey, note) = if let Some(dir) = witness_dir {
        let (vkey, _) = super::audit_check::witness_log_key(dir)?;
        (vkey, super::audit_check::witness_file(dir, "checkpoint")?)
    } else {
        let vkey = log
            .get_verifier_key(pb::GetVerifierKeyRequest {})
            .await
            .map_err(|s| anyhow!(client::explain(&s)))?
            .into_inner()
            .verifier_key;
        let note = log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .map_err(|s| anyhow!(client::explain(&s)))?
            .into_inner()
            .note;
        (vkey, note)
    };
    let verifier = NoteVerifier::parse(vkey.trim()).map_err(|e| anyhow!("the log key: {e}"))?;
    Checkpoint::open(&note, &verifier).map_err(|e| anyhow!("the checkpoint: {e}"))
}
