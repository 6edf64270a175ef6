//! Accepting a state witness's cosignature of a checkpoint (C2SP tlog-cosignature v1).
//!
//! Each state's witness (`tidemark log witness`) signs with the state's registered
//! signing key under the name `<log origin>/witness/<STATE>`. The server keeps a
//! cosignature only when the name is the caller's state's, the key one of that state's
//! signing keys active now, and the line verifies over the checkpoint the server
//! published for that size; it then serves the checkpoint with the cosignatures held.
//! The cosignature's time (seconds since the epoch, signed with it) may not be more than
//! [`MAX_CLOCK_SKEW`] ahead of the server's clock nor that much before the checkpoint's
//! last entry was written, and replaces a cosignature of the same
//! checkpoint by the same witness only if it is not older: the checkpoint never shows a
//! witness's time going backwards or a time that has not come yet (a held time that is
//! still in the future, kept before these rules, gives way to any valid cosignature).
//! An older one that verifies is answered as cosigned — the checkpoint carries that
//! witness's cosignature already — with the later time held ([`Cosigned::newer_held`]):
//! a witness whose clock ran ahead and was set back is not refused until it catches up.

use crate::{
    country::CountryCode,
    signing::PublicKey,
    store::{Store, StoreError},
    tlog::{
        LogSigner,
        cosignature::WitnessKey,
        entry::Entry,
        note::{self, NoteError},
    },
};

/// How far a cosignature's time may be ahead of the server's clock, or before the
/// checkpoint's last entry was written, in seconds.
pub const MAX_CLOCK_SKEW: u64 = 300;

/// The bytes of a tlog-cosignature/v1 line after its key id: the time (8, big-endian)
/// and the Ed25519 signature (64).
const COSIGNATURE_LEN: usize = 72;

/// The name a state's witness cosigns under.
pub fn witness_name(origin: &str, state: CountryCode) -> String {
    format!("{origin}/witness/{state}")
}

/// A checkpoint cosigned.
#[derive(Debug)]
pub(crate) struct Cosigned {
    /// The checkpoint with every cosignature now held for it.
    pub(crate) checkpoint: String,
    /// The time of the same witness's later cosignature of it, held and kept, when the
    /// one given is older (and so not kept).
    pub(crate) newer_held: Option<u64>,
}

/// Keeps `line`, `state`'s witness's cosignature of the checkpoint of `size` leaves
/// (unless the same witness's cosignature of it with a later time is held), and returns
/// that checkpoint with every cosignature now held for it.
pub(crate) fn accept(
    store: &Store,
    log: &LogSigner,
    state: CountryCode,
    size: u64,
    line: &str,
    now: i64,
) -> Result<Cosigned, CosignError> {
    let cosignature = note::parse_signature(line).map_err(CosignError::Malformed)?;
    if cosignature.signature.len() != COSIGNATURE_LEN {
        return Err(CosignError::NotCosignatureV1(cosignature.signature.len()));
    }
    let name = witness_name(log.origin(), state);
    if cosignature.name != name {
        return Err(CosignError::WrongName {
            found: cosignature.name,
            expected: name,
        });
    }
    let checkpoint = store
        .log()?
        .checkpoint_at(size)?
        .ok_or(CosignError::NoCheckpoint(size))?;
    let body = note::open(&checkpoint.note, &[log.verifier()])
        .map_err(|e| StoreError::Corrupt(format!("checkpoint {size}: {e}")))?
        .text;
    let made_by = |keys: &[crate::store::KeyRecord]| {
        keys.iter().find_map(|k| {
            let public = PublicKey::from_raw(&k.public_key).ok()?;
            let time = WitnessKey::new(&name, *public.raw()).verify_line(&body, &cosignature)?;
            Some((k.clone(), time))
        })
    };
    let signer = made_by(&store.signing_keys(Some(state.as_str()))?);
    let time = match signer {
        // Made with another state's key: not this state's to give.
        None => match made_by(&store.signing_keys(None)?) {
            Some((k, _)) => {
                return Err(CosignError::OtherStatesKey {
                    key_id: k.key_id,
                    owner: k.state,
                    state: state.to_string(),
                });
            }
            None => return Err(CosignError::BadSignature(name)),
        },
        Some((k, _)) if !k.active_at(now) => {
            return Err(CosignError::InactiveKey {
                key_id: k.key_id.clone(),
                state: state.to_string(),
            });
        }
        Some((_, time)) => time,
    };
    let latest = u64::try_from(now)
        .unwrap_or(0)
        .saturating_add(MAX_CLOCK_SKEW);
    if time > latest {
        return Err(CosignError::FutureTime { time, now });
    }
    // The checkpoint was signed when its last leaf was written, or later.
    let last = match size.checked_sub(1) {
        Some(last) => store.snapshot()?.log_entries(last, size)?.pop(),
        None => None,
    };
    let written = last
        .and_then(|entry| Entry::decode(&entry).ok())
        .map(|entry| entry.written_at())
        .and_then(|t| u64::try_from(t).ok());
    if let Some(written) = written
        && time.saturating_add(MAX_CLOCK_SKEW) < written
    {
        return Err(CosignError::BeforeCheckpoint {
            time,
            signed: written,
        });
    }
    let newer_held = store.add_cosignature(size, &name, line, (time, latest))?;
    let cosigned = store
        .log()?
        .checkpoint_at(size)?
        .ok_or(CosignError::NoCheckpoint(size))?;
    Ok(Cosigned {
        checkpoint: cosigned.note,
        newer_held,
    })
}

/// Why a cosignature was not kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosignError {
    /// The line is not a note signature line.
    #[error("the cosignature is not a note signature line: {0}")]
    Malformed(NoteError),
    /// The signature is not of a tlog-cosignature/v1 line's length.
    #[error(
        "the cosignature holds {0} bytes after its key id; a tlog-cosignature/v1 line holds \
         {COSIGNATURE_LEN} (an 8-byte time and a 64-byte Ed25519 signature)"
    )]
    NotCosignatureV1(usize),
    /// The witness name is not the caller's state's.
    #[error("the cosignature is by {found:?}; this state's witness cosigns as {expected:?}")]
    WrongName {
        /// The name in the line.
        found: String,
        /// The caller's state's witness name.
        expected: String,
    },
    /// No checkpoint of that size was published.
    #[error(
        "no checkpoint of {0} leaves was published; cosign a checkpoint from \
         Transparency.GetCheckpoint"
    )]
    NoCheckpoint(u64),
    /// No active signing key of the state made it.
    #[error(
        "the cosignature does not verify with any active signing key of the state under \
         the name {0:?}, over the checkpoint of that size"
    )]
    BadSignature(String),
    /// It was made with a signing key of another state.
    #[error(
        "the cosignature is by signing key {key_id} of {owner}, not a key of {state}: a \
         state's witness cosigns with its own state's key (`--signing-key`)"
    )]
    OtherStatesKey {
        /// The key that made it.
        key_id: String,
        /// The state it is registered to.
        owner: String,
        /// The caller's state.
        state: String,
    },
    /// It was made with a key of the state that is revoked or outside its validity.
    #[error(
        "the cosignature is by signing key {key_id} of {state}, which is revoked or not \
         valid now: cosign with a current key of {state} (an operator registers one with \
         `tidemark admin register-key`)"
    )]
    InactiveKey {
        /// The key that made it.
        key_id: String,
        /// Its state.
        state: String,
    },
    /// Its time is later than the server's clock allows.
    #[error(
        "the cosignature's time ({time}) is more than {MAX_CLOCK_SKEW} s after the server's \
         clock ({now}): check the witness's clock, then cosign again"
    )]
    FutureTime {
        /// The cosignature's time, seconds since the epoch.
        time: u64,
        /// The server's time.
        now: i64,
    },
    /// Its time is before the checkpoint could have been signed.
    #[error(
        "the cosignature's time ({time}) is more than {MAX_CLOCK_SKEW} s before the \
         checkpoint's last entry was written ({signed}): check the witness's clock, then \
         cosign again"
    )]
    BeforeCheckpoint {
        /// The cosignature's time, seconds since the epoch.
        time: u64,
        /// When the checkpoint's last entry was written.
        signed: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
