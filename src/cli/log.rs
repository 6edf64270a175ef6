//! `tidemark log`: the transparency log's verifier key, checkpoints, proofs and entries.

use super::whole::whole;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use tidemark::{
    Config, SigningKey, client,
    config::{SigningConfig, TlsConfig},
    pb::{self, get_inclusion_proof_request::Leaf, transparency_client::TransparencyClient},
    tlog::{LogSigner, merkle},
};

use super::client_args::ClientArgs;

/// The transparency log: every accepted envelope and every audit record is a leaf of
/// one Merkle tree (RFC 9162) whose signed checkpoints (C2SP tlog-checkpoint) let anyone
/// check, offline, that an entry is in the log and that the log only grew.
#[derive(Subcommand, Debug)]
pub enum LogCommand {
    VerifierKey(VerifierKeyArgs),
    Checkpoint(CheckpointArgs),
    Inclusion(InclusionArgs),
    Consistency(ConsistencyArgs),
    Entries(EntriesArgs),
    Proof(ProofArgs),
    Witness(super::witness::WitnessArgs),
}

/// Write a receipt (C2SP tlog proof) for one entry against a checkpoint the server holds
/// now, with the witnesses' cosignatures it holds for it: `verify-receipt --witness-key`
/// then checks them.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("leaf").required(true).args(["index", "entry_hash"])))]
pub struct ProofArgs {
    /// The leaf's index (or name it with --entry-hash).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    index: Option<u64>,
    /// The leaf hash, SHA-256(0x00 ‖ entry), 64 hex digits.
    #[arg(long, value_name = "HEX", value_parser = leaf_hash)]
    entry_hash: Option<[u8; 32]>,
    /// The checkpoint's tree size (default: the newest): pick one the witnesses cosigned
    /// — the size on the second line of a witness's `--state-dir`/checkpoint, or of
    /// `tidemark log checkpoint` once the witnesses have run. The server keeps a
    /// checkpoint for each batch it committed; a size it has none of is NOT_FOUND.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX))]
    size: Option<u64>,
    /// Where to write it (default: stdout): a new file, written whole or not at all; a
    /// file that exists is never replaced (as by `submit --receipt-out`).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Print the log's note verifier key (`<origin>+<hex key id>+<base64 key>`), which
/// verifies its checkpoints and receipts.
///
/// Read from the server's configuration (the receipt key signs checkpoints), as its
/// operator publishes it; with --from-server, asked of a running server instead.
#[derive(Args, Debug)]
pub struct VerifierKeyArgs {
    /// The server's TOML config file (default: the embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory with the server's receipt.key (as `serve --certs`).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Ask the running server (Transparency.GetVerifierKey) instead.
    #[arg(long)]
    from_server: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Print the newest signed checkpoint, verbatim.
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Print the inclusion proof of one entry: its hashes, base64, one per line.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("leaf").required(true).args(["index", "entry_hash"])))]
pub struct InclusionArgs {
    /// The leaf's index.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    index: Option<u64>,
    /// The leaf hash, SHA-256(0x00 ‖ entry), 64 hex digits.
    #[arg(long, value_name = "HEX", value_parser = leaf_hash)]
    entry_hash: Option<[u8; 32]>,
    /// The tree size to prove inclusion in (default: the newest checkpoint's).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX))]
    size: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Print the consistency proof between two tree sizes: its hashes, base64, one per line.
#[derive(Args, Debug)]
pub struct ConsistencyArgs {
    /// The older (smaller) tree size.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    old_size: u64,
    /// The newer tree size (default: the newest checkpoint's).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX))]
    new_size: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Print log entries [start, end), each after a `# leaf N` line.
#[derive(Args, Debug)]
pub struct EntriesArgs {
    /// The first leaf. The log's size (one past its last leaf) prints nothing and
    /// exits 0, so a follower can poll with the number of leaves it has read.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    start: u64,
    /// One past the last leaf, at most the log's size (default: start + 100, or the
    /// log's size if smaller). Any range is fetched whole, 1,000 entries per call.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    end: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::VerifierKey(args) => verifier_key(args).await,
        LogCommand::Checkpoint(args) => {
            let checkpoint = connect(&args.client)
                .await?
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .map_err(|s| anyhow!(client::explain(&s)))?
                .into_inner();
            out!("{}", checkpoint.note)?;
            Ok(())
        }
        LogCommand::Inclusion(args) => inclusion(args).await,
        LogCommand::Consistency(args) => {
            let proof = connect(&args.client)
                .await?
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    old_size: args.old_size,
                    new_size: args.new_size.unwrap_or(0),
                })
                .await
                .map_err(|s| anyhow!(client::explain(&s)))?
                .into_inner();
            if proof.hashes.is_empty() {
                // RFC 9162 §2.1.4.1: nothing to prove, said on stderr (stdout stays the
                // hashes, here none).
                errln!(
                    "the proof from size {} to {} is empty: {}",
                    proof.old_size,
                    proof.new_size,
                    if proof.old_size == 0 {
                        "an empty tree is consistent with every tree"
                    } else {
                        "the two sizes are the same tree"
                    }
                );
            } else {
                // Which tree the proof leads to, when --new-size was left to the server.
                errln!(
                    "consistency of the tree of {} leaves with the tree of {} leaves: {} hashes",
                    proof.old_size,
                    proof.new_size,
                    proof.hashes.len()
                );
            }
            print_hashes(&proof.hashes)?;
            Ok(())
        }
        LogCommand::Entries(args) => entries(args).await,
        LogCommand::Proof(args) => proof(args).await,
        LogCommand::Witness(args) => super::witness::run(args).await,
    }
}

/// `--entry-hash`: a leaf hash in its one spelling, as every hash Tidemark prints (lower
/// case, no spaces or prefix).
fn leaf_hash(text: &str) -> Result<[u8; 32], String> {
    let mut hash = [0u8; 32];
    Some(text)
        .filter(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|h| hex::decode_to_slice(h, &mut hash).ok())
        .map(|()| hash)
        .ok_or_else(|| {
            "not a leaf hash: give 64 lower-case hex digits, SHA-256(0x00 ‖ entry), as \
             `tidemark log inclusion` prints it"
                .to_owned()
        })
}

/// `--index N` or `--entry-hash HEX` as the request names a leaf.
fn leaf(index: Option<u64>, entry_hash: Option<&[u8; 32]>) -> anyhow::Result<Leaf> {
    match (index, entry_hash) {
        (Some(index), _) => Ok(Leaf::Index(index)),
        (None, Some(hash)) => Ok(Leaf::LeafHash(hash.to_vec())),
        (None, None) => usage!("name the leaf: --index N or --entry-hash HEX"),
    }
}

async fn proof(args: ProofArgs) -> anyhow::Result<()> {
    let proof = connect(&args.client)
        .await?
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(leaf(args.index, args.entry_hash.as_ref())?),
            tree_size: args.size.unwrap_or(0),
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner();
    if proof.checkpoint.is_empty() {
        bail!(
            "no checkpoint was published for a tree of exactly {} leaves; pick a size from \
             `tidemark log checkpoint` or a witness's",
            proof.tree_size
        );
    }
    let hashes = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into())
        .collect::<Result<Vec<merkle::Hash>, _>>()
        .map_err(|_| anyhow!("the server sent a proof hash that is not 32 bytes"))?;
    let text = tidemark::tlog::proof::TlogProof {
        extra: Some(proof.entry),
        index: proof.index,
        hashes,
        checkpoint_note: proof.checkpoint,
    }
    .encode();
    match &args.out {
        Some(path) => {
            // A receipt is evidence: never written over another file, and whole or not
            // at all.
            tidemark::files::create_new(path, text.as_bytes(), false)
                .map_err(|e| super::submit::unwritten(path, &e))?;
        }
        None => out!("{text}")?,
    }
    Ok(())
}

/// Entries read per call while scanning the log.
const PAGE: u64 = 1000;

/// One page of the log's entries, waiting out the server's pushback when this
/// certificate's budget of lookups is spent.
async fn entries_page(
    log: &TransparencyClient<tonic::transport::Channel>,
    request: pb::GetEntriesRequest,
) -> anyhow::Result<pb::GetEntriesResponse> {
    super::pushback::waiting_out("lookups", || {
        let mut log = log.clone();
        async move { log.get_entries(request).await }
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|s| anyhow!(client::explain(&s)))
}

/// Every entry under `checkpoint`, in order, checked: the Merkle root recomputed from
/// them must be the checkpoint's, or the server serves one history and signs another.
pub(super) async fn entries_under(
    log: &mut TransparencyClient<tonic::transport::Channel>,
    checkpoint: &tidemark::tlog::checkpoint::Checkpoint,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut entries = Vec::new();
    let mut tree = merkle::MemoryTree::new();
    let progress = super::progress::items(checkpoint.size, "log entries checked");
    while tree.size() < checkpoint.size {
        let start = tree.size();
        let request = pb::GetEntriesRequest {
            start,
            end: checkpoint.size.min(start + PAGE),
        };
        let page = entries_page(log, request).await?;
        if page.entries.is_empty() {
            // Exit 3, as a witness's run reports a rollback.
            return Err(super::witness::Alarm::new(
                3,
                format!(
                    "the server's log ends at leaf {start}, short of the {} leaves of the \
                     checkpoint held: the log was rolled back (or this is not the server \
                     that signed it); keep the checkpoint as evidence and raise it with the \
                     operator",
                    checkpoint.size
                ),
            )
            .into());
        }
        progress.inc(page.entries.len() as u64);
        for entry in page.entries {
            tree.push(&entry);
            entries.push(entry);
        }
    }
    progress.finish_and_clear();
    if tree.root() != checkpoint.root {
        // Exit 4, as a witness's run reports a rewritten log.
        return Err(super::witness::Alarm::new(
            4,
            format!(
                "the {} entries the server returned are not the log under the checkpoint \
                 (the recomputed root differs): the server serves one history and signs \
                 another, or the log was rewritten since (run the witness)",
                checkpoint.size
            ),
        )
        .into());
    }
    Ok(entries)
}

async fn connect(
    args: &ClientArgs,
) -> anyhow::Result<TransparencyClient<tonic::transport::Channel>> {
    Ok(TransparencyClient::new(args.connect().await?))
}

fn print_hashes(hashes: &[Vec<u8>]) -> anyhow::Result<()> {
    for hash in hashes {
        outln!("{}", base64::engine::general_purpose::STANDARD.encode(hash))?;
    }
    Ok(())
}

async fn verifier_key(args: VerifierKeyArgs) -> anyhow::Result<()> {
    if args.from_server {
        let key = connect(&args.client)
            .await?
            .get_verifier_key(pb::GetVerifierKeyRequest {})
            .await
            .map_err(|s| anyhow!(client::explain(&s)))?
            .into_inner();
        outln!("{}", key.verifier_key)?;
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.certs {
        config.tls = TlsConfig::in_dir(dir);
        config.signing = SigningConfig::in_dir(dir);
    }
    let key = SigningKey::from_file(&config.signing.receipt_key).with_context(|| {
        "the log's checkpoints are signed with the server's receipt key (signing.receipt_key); \
         run this where the server's files are, or use --from-server"
    })?;
    let log =
        LogSigner::from_key(&config.log_origin(), &key).map_err(|e| anyhow!("log.origin: {e}"))?;
    outln!("{}", log.verifier_key())?;
    Ok(())
}

async fn inclusion(args: InclusionArgs) -> anyhow::Result<()> {
    let proof = connect(&args.client)
        .await?
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(leaf(args.index, args.entry_hash.as_ref())?),
            tree_size: args.size.unwrap_or(0),
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner();
    errln!(
        "leaf {} (hash {}) in the tree of {}",
        proof.index,
        hex::encode(merkle::leaf_hash(&proof.entry)),
        super::labels::count(proof.tree_size, "leaf", "leaves")
    );
    print_hashes(&proof.hashes)?;
    Ok(())
}

/// Prints leaves [start, end) of the log as its newest checkpoint stands, a page (one
/// `GetEntries` call) at a time: every leaf asked for, or a refusal before any is printed.
async fn entries(args: EntriesArgs) -> anyhow::Result<()> {
    if let Some(end) = args.end
        && end <= args.start
    {
        usage!(
            "--end {end} is not after --start {}: the entries shown are leaves start to end, \
             end excluded; give a larger --end, or none for the next 100",
            args.start
        );
    }
    let mut log = connect(&args.client).await?;
    let size = log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner()
        .tree_size;
    let holds = match size {
        0 => "the log is empty".to_owned(),
        1 => "the log holds 1 entry (leaf 0)".to_owned(),
        _ => format!("the log holds {size} entries (leaves 0 to {})", size - 1),
    };
    if args.start > size {
        bail!("--start {} is past the log: {holds}", args.start);
    }
    if args.start == size && args.end.is_none() {
        errln!("no entries from leaf {size} on yet: {holds}");
        return Ok(());
    }
    let end = match args.end {
        Some(end) if end > size => bail!(
            "--end {end} is past the log: {holds}; give --end {size} at most, or leave it out \
             for the next 100"
        ),
        Some(end) => end,
        None => size.min(args.start.saturating_add(100)),
    };
    let mut next = args.start;
    while next < end {
        let page = entries_page(&log, pb::GetEntriesRequest { start: next, end }).await?;
        if page.entries.is_empty() {
            bail!(
                "the server's log ends at leaf {next}, short of the {size} leaves of its own \
                 newest checkpoint: keep this output as evidence and raise it with the operator"
            );
        }
        for entry in page.entries {
            outln!("# leaf {next}")?;
            out!("{}", String::from_utf8_lossy(&entry))?;
            next += 1;
        }
    }
    if args.end.is_none() && end < size {
        errln!(
            "{} shown (leaves {} to {}); {holds}: --end {size} shows the rest",
            super::labels::count(end - args.start, "entry", "entries"),
            args.start,
            end - 1
        );
    }
    Ok(())
}
