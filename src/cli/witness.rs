//! `tidemark log witness`: a state checks that the log only grew, then cosigns it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tidemark::{
    client,
    cosigning::witness_name,
    country::CountryCode,
    pb::{self, transparency_client::TransparencyClient},
    tlog::{checkpoint::Checkpoint, cosignature::Cosigner, merkle, note::NoteVerifier},
};

use super::{client_args::ClientArgs, signing_args::SigningArgs, submit::node_state_of};

/// Check that the log only grew since this witness last looked, then cosign it.
///
/// A state runs it on its own machine, e.g. from cron. The first run records the log's
/// verifier key (from --log-key, or the server's answer, trusted on first use) and the
/// newest checkpoint in --state-dir. Each later run fetches the newest checkpoint and a
/// consistency proof (RFC 9162) from the one held, verifies both, stores the new
/// checkpoint (atomically, before anything else), cosigns it with the state's signing key
/// (C2SP tlog-cosignature, as `<origin>/witness/<STATE>`) and hands the cosignature back.
///
/// Exit codes: 0 verified and cosigned; 1 an error (network, files, a refused
/// cosignature: a checkpoint already verified is kept, nothing else was decided); 2 a
/// usage error (an unknown or missing flag); 3 the log was rolled back (smaller than the
/// checkpoint held); 4 the log was rewritten (not a consistent extension of the
/// checkpoint held); 5 another run holds this directory's lock (overlapping cron runs). On 3 or 4 nothing is cosigned and the checkpoint held stays: keep it
/// as evidence and raise it with the operator and the other states.
#[derive(Args, Debug)]
pub struct WitnessArgs {
    /// This witness's directory: log.vkey, checkpoint, witness.vkey, witness.lock. Back it
    /// up: a witness that has cosigned and whose checkpoint is lost refuses to run until
    /// it is restored (or the witness starts over in an empty directory).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// The log's note verifier key (`<origin>+<hex id>+<base64>`, or a file holding it),
    /// for the first run; later runs use the one recorded in --state-dir.
    #[arg(long, value_name = "KEY|FILE")]
    log_key: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
}

/// An outcome with its own exit code: the lock is held (5), the log was rolled back (3)
/// or rewritten (4).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Alarm {
    /// 3: rolled back; 4: rewritten; 5: locked.
    pub code: u8,
    message: String,
}

impl Alarm {
    /// An alarm with exit code `code` (3 rolled back, 4 rewritten, 5 locked).
    pub(super) fn new(code: u8, message: String) -> Self {
        Self { code, message }
    }
}

/// The largest file this witness reads from its directory.
const MAX_STATE_FILE: u64 = 64 * 1024;

pub async fn run(args: WitnessArgs) -> anyhow::Result<()> {
    // Who runs it is checked before anything is written.
    let identity = args.client.identity()?;
    let state = CountryCode::parse(&node_state_of(&identity, "a witness")?)
        .map_err(|e| anyhow!("the node certificate's state: {e}"))?;
    let key = args.signing.load(&args.client)?;
    let lock_path = args.state_dir.join("witness.lock");
    // What this run makes: a first run refused before it records a log key leaves none
    // of it.
    let made = tidemark::files::not_there(&[&args.state_dir, &lock_path]);
    tidemark::files::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the directory {}", args.state_dir.display()))?;
    let lock = lock(&lock_path)?;
    let witnessed = witness(&args, state, &key).await;
    if witnessed.is_err() && !args.state_dir.join("log.vkey").exists() {
        // Removed while the lock is held, so no other run takes the directory in between.
        tidemark::files::remove_made(&made);
    }
    drop(lock);
    witnessed
}

/// One witness run under the directory's lock: checks the server's newest checkpoint
/// against the one held, keeps it and cosigns it.
async fn witness(
    args: &WitnessArgs,
    state: CountryCode,
    key: &tidemark::signing::SigningKey,
) -> anyhow::Result<()> {
    let identity = args.state_dir.join("witness.vkey");
    let held_path = args.state_dir.join("checkpoint");
    if !held_path.exists() && identity.exists() {
        // witness.vkey is written only after a checkpoint was kept and cosigned: this one
        // has been lost, and a witness that trusts whatever it is shown next cannot see a
        // rollback.
        bail!(
            "{} has cosigned before (witness.vkey) but its checkpoint is gone: restore the \
             checkpoint file from a backup, or start over in an empty directory on purpose \
             (a rollback since the last run would then go unseen)",
            args.state_dir.display()
        );
    }
    let mut log = TransparencyClient::new(args.client.connect().await?);

    let (vkey, first_run) = log_key(args, &mut log).await?;
    let verifier = NoteVerifier::parse(vkey.trim())
        .map_err(|e| anyhow!("the log key in {}: {e}", args.state_dir.display()))?;
    // What this witness holds is checked first: a fault in its own files (a log key
    // that does not open its checkpoint) is said as such, not as the server's log being
    // another (exit 4).
    let held = if held_path.exists() {
        let held_note = super::input::read_note(&held_path, MAX_STATE_FILE)?;
        Some(Checkpoint::open(&held_note, &verifier).map_err(|e| {
            anyhow!(
                "the checkpoint held in {} does not open with the log key held beside it \
                 ({e}): restore it from a backup of the directory, or start over in an \
                 empty directory on purpose (a rollback since the last run would then go \
                 unseen)",
                held_path.display()
            )
        })?)
    } else {
        None
    };
    let (newest, new) = newest_checkpoint(&mut log, &verifier, first_run).await?;
    // Before anything is named from the server's checkpoint (the witness's own name is
    // made from its origin): a log of another name is an alarm, not another witness.
    if let Some(held) = &held {
        check_extension(&mut log, held, &new, WITNESSED).await?;
    } else {
        errln!(
            "no checkpoint held yet in {}: the server's newest ({} leaves) is the starting \
             point this witness checks every later one against",
            args.state_dir.display(),
            new.size
        );
    }
    let name = witness_name(&new.origin, state);
    let cosigner = Cosigner::from_key(&name, key).map_err(|e| anyhow!("{e}"))?;
    if identity.exists() {
        let held = super::input::read_text_at_most(&identity, MAX_STATE_FILE)?;
        super::submit::one_line_key(&held, &identity.display().to_string(), "witness key")?;
        if held.trim() != cosigner.key().verifier_key() {
            bail!(
                "{} is the directory of another witness ({}); this one is {}: give each \
                 witness (state and signing key) its own --state-dir. If this state's \
                 signing key was rotated, start the new key's directory from this one's log \
                 key and checkpoint (copy log.vkey and checkpoint into an empty directory), \
                 so that a rollback since the last run is still seen",
                args.state_dir.display(),
                held.trim(),
                cosigner.key().verifier_key()
            );
        }
    }
    if first_run {
        // Recorded once a checkpoint has verified with it.
        write_atomically(
            &args.state_dir.join("log.vkey"),
            format!("{}\n", vkey.trim()).as_bytes(),
        )?;
    }
    write_atomically(&held_path, newest.note.as_bytes())?;
    send_cosignature(&mut log, &cosigner, &new).await?;
    // The directory becomes this witness's once the server took its cosignature: a first
    // run refused (another state's key, say) leaves it free for the right one.
    if !identity.exists() {
        write_atomically(
            &identity,
            format!("{}\n", cosigner.key().verifier_key()).as_bytes(),
        )?;
    }
    outln!(
        "checkpoint of {} leaves verified and cosigned as {name} (witness key in {})",
        new.size,
        args.state_dir.join("witness.vkey").display()
    )?;
    Ok(())
}

/// Cosigns `checkpoint` now and gives the cosignature to the server.
async fn send_cosignature(
    log: &mut TransparencyClient<tonic::transport::Channel>,
    cosigner: &Cosigner,
    checkpoint: &Checkpoint,
) -> anyhow::Result<()> {
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let answer = log
        .add_cosignature(pb::AddCosignatureRequest {
            tree_size: checkpoint.size,
            cosignature: cosigner.cosign(&checkpoint.to_body(), now),
        })
        .await
        .map_err(|s| {
            anyhow!(
                "the checkpoint verified and is kept, but the server refused the cosignature: {} \
                 (the witness signs with this state's registered signing key: check --signing-key)",
                client::explain(&s)
            )
        })?
        .into_inner();
    if answer.newer_held_time != 0 {
        let time = |t: u64| tidemark::clock::format_time(i64::try_from(t).unwrap_or(i64::MAX));
        errln!(
            "the server holds this witness's cosignature of this checkpoint with a later \
             time ({}) than this one's ({}), and keeps it (a witness's time never goes \
             backwards): was this machine's clock ahead then?",
            time(answer.newer_held_time),
            time(now)
        );
    }
    Ok(())
}

/// The server's newest checkpoint, as a note and as verified with the log key.
async fn newest_checkpoint(
    log: &mut TransparencyClient<tonic::transport::Channel>,
    verifier: &NoteVerifier,
    first_run: bool,
) -> anyhow::Result<(pb::Checkpoint, Checkpoint)> {
    let newest = log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner();
    match Checkpoint::open(&newest.note, verifier) {
        Ok(new) => Ok((newest, new)),
        // Nothing is recorded yet: a wrong key given, or the wrong server.
        Err(e) if first_run => bail!(
            "the server's newest checkpoint does not verify with the log key {} ({e}); \
             nothing was recorded: check --log-key against the key the operator published \
             and the server you connect to",
            verifier.verifier_key()
        ),
        Err(e) => Err(Alarm {
            code: 4,
            message: format!(
                "the server's newest checkpoint is not signed by the log key this witness \
                 holds ({e}): the log's key or origin changed, or this is not the same log"
            ),
        }
        .into()),
    }
}

/// The log's verifier key: the one recorded, or (on a first run: `true`) the one from
/// --log-key or the server, to be recorded once a checkpoint verifies with it.
async fn log_key(
    args: &WitnessArgs,
    log: &mut TransparencyClient<tonic::transport::Channel>,
) -> anyhow::Result<(String, bool)> {
    let recorded = args.state_dir.join("log.vkey");
    if !recorded.exists() && args.state_dir.join("checkpoint").exists() {
        bail!(
            "{} holds a checkpoint but no log key (log.vkey): restore the key recorded with it, \
             or start over in an empty directory on purpose",
            args.state_dir.display()
        );
    }
    let given = match &args.log_key {
        Some(key) => Some(super::submit::key_text(key, "note verifier key")?),
        None => None,
    };
    if recorded.exists() {
        let held = super::input::read_text_at_most(&recorded, MAX_STATE_FILE)?;
        super::submit::one_line_key(&held, &recorded.display().to_string(), "note verifier key")?;
        if let Some(given) = given.filter(|g| g.trim() != held.trim()) {
            bail!(
                "--log-key ({}) differs from the key this witness recorded in {}; a log's \
                 key does not change: remove the directory only to start over on purpose",
                given.trim(),
                recorded.display()
            );
        }
        return Ok((held, false));
    }
    let key = if let Some(key) = given {
        key
    } else {
        let key = log
            .get_verifier_key(pb::GetVerifierKeyRequest {})
            .await
            .map_err(|s| anyhow!(client::explain(&s)))?
            .into_inner()
            .verifier_key;
        errln!(
            "first run: trusting the log key the server names, {key}; compare it with the \
             one the operator published"
        );
        key
    };
    NoteVerifier::parse(key.trim()).map_err(|e| {
        anyhow!(
            "{:?} is not the log's note verifier key (`<origin>+<hex id>+<base64 key>`, as \
             `tidemark log verifier-key` prints it): {e}",
            key.trim()
        )
    })?;
    Ok((key, true))
}

/// How a witness names the checkpoint it holds, and what its alarm left undone.
const WITNESSED: (&str, &str) = ("this witness verified", "; nothing was cosigned");

/// Refuses (with an [`Alarm`]) unless `new` is `held` or a consistent extension of it;
/// `(verified, undone)` say whose `held` is and what was not done, in the alarm.
pub(super) async fn check_extension(
    log: &mut TransparencyClient<tonic::transport::Channel>,
    held: &Checkpoint,
    new: &Checkpoint,
    (verified, undone): (&str, &str),
) -> anyhow::Result<()> {
    if new.origin != held.origin {
        return Err(Alarm {
            code: 4,
            message: format!(
                "the server's log is named {:?}, not {:?} as the checkpoint {verified}{undone}",
                new.origin, held.origin
            ),
        }
        .into());
    }
    if new.size < held.size {
        return Err(Alarm {
            code: 3,
            message: format!(
                "the log was rolled back: it now has {} leaves, fewer than the {} of the \
                 checkpoint {verified}{undone}",
                new.size, held.size
            ),
        }
        .into());
    }
    let rewritten = |why: String| Alarm {
        code: 4,
        message: format!(
            "the log was rewritten: its checkpoint of {} leaves is not a consistent \
             extension of the checkpoint of {} leaves {verified} ({why}){undone}",
            new.size, held.size
        ),
    };
    if new.size == held.size {
        return if new.root == held.root {
            Ok(())
        } else {
            Err(rewritten("same size, another root hash".to_owned()).into())
        };
    }
    let proof = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: held.size,
            new_size: new.size,
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner();
    let hashes: Vec<merkle::Hash> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into())
        .collect::<Result<_, _>>()
        .map_err(|_| rewritten("a proof hash is not 32 bytes".to_owned()))?;
    merkle::verify_consistency(held.size, new.size, &held.root, &new.root, &hashes)
        .map_err(|e| rewritten(e.to_string()))?;
    Ok(())
}

/// Replaces `path` with `contents` atomically ([`tidemark::files::replace`]): a crash
/// leaves the old file or the new, never a mix, and a failure no temporary file.
fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    tidemark::files::replace(path, contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Holds the witness's lock while the returned file is open.
fn lock(path: &Path) -> anyhow::Result<fs::File> {
    super::lock::try_lock(path)?.ok_or_else(|| {
        Alarm {
            code: 5,
            message: format!(
                "another `tidemark log witness` is running on this directory ({} is locked)",
                path.display()
            ),
        }
        .into()
    })
}
