//! Accepting a submission: signature first, then decoding, validation and ownership.
//!
//! [`verify`] turns an envelope from a principal into a [`NewEnvelope`] for the store, or
//! says precisely why not. The signature is checked before a single payload byte is
//! decoded, and a signature counts only if it comes from a key registered to the *same
//! state as the caller's certificate* and active now.

use prost::Message;
use time::OffsetDateTime;

use crate::{
    country::CountryCode,
    envelope::{self, REPORT_PAYLOAD_TYPE, RETRACTION_PAYLOAD_TYPE},
    identity::{PeerIdentity, Role},
    pb,
    report::{self, ValidationErrors},
    signing::PublicKey,
    store::{AppendError, EnvelopeKind, KeyRecord, NewEnvelope, Store, StoreError},
};

use crate::envelope::MAX_SIGNATURES;
/// The length of every signature accepted (Ed25519, RFC 8032 §5.1.6).
const ED25519_SIGNATURE_BYTES: usize = 64;
/// Longest DSSE keyid accepted (the keyid is stored and served with the envelope).
pub(crate) const MAX_KEYID_CHARS: usize = 128;

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("only node certificates submit reports; this is {0} certificate")]
    NotANode(&'static str),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    BadSignature(String),
    /// Signed with a key revoked as of then or earlier: a bad signature to the caller,
    /// and a refusal on record (who holds a revoked key matters after a compromise).
    #[error("{0}")]
    KeyRevoked(String),
    #[error(
        "the envelope is signed by key {key_id}, registered to {key_state}; a node of \
         {caller} must sign with one of {caller}'s keys"
    )]
    ForeignKey {
        key_id: String,
        key_state: String,
        caller: CountryCode,
    },
    #[error(
        "the report's reporting_state is {reported}, but this certificate is {caller}'s; a \
         node submits only its own state's reports"
    )]
    WrongState {
        reported: CountryCode,
        caller: CountryCode,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Rejected(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// The kind of refusal, as a metric label (a fixed set).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotANode(_) => "not_a_node",
            Self::Malformed(_) => "malformed",
            Self::BadSignature(_)
            | Self::KeyRevoked(_)
            | Self::Rejected(AppendError::KeyRevoked { .. } | AppendError::KeyInactive { .. }) => {
                "bad_signature"
            }
            Self::ForeignKey { .. } => "foreign_key",
            Self::WrongState { .. } => "wrong_state",
            Self::Invalid(_) => "invalid",
            Self::Rejected(AppendError::Store(_)) | Self::Store(_) => "store",
            Self::Rejected(AppendError::CertificateRevoked { .. }) => "revoked",
            Self::Rejected(AppendError::StateSuspended { .. }) => "suspended",
            Self::Rejected(_) => "version_conflict",
        }
    }
}

impl SubmitError {
    /// Whether the envelope was signed with a key revoked as of its submission: a refusal
    /// to put on record.
    pub fn revoked_key(&self) -> bool {
        matches!(
            self,
            Self::KeyRevoked(_) | Self::Rejected(AppendError::KeyRevoked { .. })
        )
    }
}

/// Verifies an envelope submitted by `peer` at `now`.
pub fn verify(
    envelope: Option<&pb::Envelope>,
    peer: &PeerIdentity,
    store: &Store,
    now: OffsetDateTime,
) -> Result<NewEnvelope, SubmitError> {
    let principal = peer.principal();
    // The caller's role first: an empty request from an analyst is refused as an
    // analyst's, not as a malformed one.
    let Role::Node(caller) = principal.role() else {
        return Err(SubmitError::NotANode(principal.role().with_article()));
    };
    let envelope = envelope
        .ok_or_else(|| SubmitError::Malformed("SubmitRequest.envelope is required".to_owned()))?;
    let kind = match envelope.payload_type.as_str() {
        REPORT_PAYLOAD_TYPE => EnvelopeKind::Report,
        RETRACTION_PAYLOAD_TYPE => EnvelopeKind::Retraction,
        other => {
            // Quoted, and cut short: the caller's bytes go into the answer and the log.
            let other = crate::report::shorten(format!("{other:?}"), 100);
            return Err(SubmitError::Malformed(format!(
                "payload type {other} is not accepted; use {REPORT_PAYLOAD_TYPE:?} or \
                 {RETRACTION_PAYLOAD_TYPE:?}"
            )));
        }
    };
    let mut key_ids = verify_signatures(envelope, caller, store, now.unix_timestamp())?;
    let key_id = key_ids.remove(0);

    let (state, report_id, version, summary) = match kind {
        EnvelopeKind::Report => {
            let decoded: pb::Report =
                envelope::decode_canonical(&envelope.payload, "tidemark.v1.Report")
                    .map_err(|e| SubmitError::Malformed(e.to_string()))?;
            let valid = report::validate(decoded, now)?;
            (
                valid.state(),
                valid.id(),
                valid.version(),
                Some(report::summarize(
                    valid.report(),
                    valid.category(),
                    valid.incident_date().to_julian_day(),
                )),
            )
        }
        EnvelopeKind::Retraction => {
            let decoded: pb::Retraction =
                envelope::decode_canonical(&envelope.payload, "tidemark.v1.Retraction")
                    .map_err(|e| SubmitError::Malformed(e.to_string()))?;
            let valid = report::validate_retraction(&decoded)?;
            (valid.state(), valid.id(), valid.version(), None)
        }
    };
    if state != caller {
        return Err(SubmitError::WrongState {
            reported: state,
            caller,
        });
    }
    Ok(NewEnvelope {
        envelope: envelope.encode_to_vec(),
        state,
        report_id,
        version,
        kind,
        summary,
        digest: envelope::digest(envelope),
        payload_sha256: crate::tlog::entry::sha256(&envelope.payload),
        key_id,
        also_signed_by: key_ids,
        certificates: peer.certificates().to_vec(),
    })
}

/// Refuses an envelope whose signatures are none, too many, or not in the shape every
/// accepted one has (64 bytes; a keyid that is a key id, or none).
fn signatures_in_shape(envelope: &pb::Envelope) -> Result<(), SubmitError> {
    if envelope.signatures.is_empty() {
        return Err(SubmitError::BadSignature(
            "the envelope has no signature; sign it with your state's registered signing key"
                .to_owned(),
        ));
    }
    if envelope.signatures.len() > MAX_SIGNATURES {
        return Err(SubmitError::Malformed(format!(
            "the envelope has {} signatures; at most {MAX_SIGNATURES} are accepted",
            envelope.signatures.len()
        )));
    }
    for signature in &envelope.signatures {
        // What is stored is served back: a signature padded to megabytes made an envelope
        // that no read could send (over the message limit), and every read of its
        // category, sync included, stopped there for good.
        if signature.sig.len() != ED25519_SIGNATURE_BYTES {
            return Err(SubmitError::Malformed(format!(
                "a signature is {} bytes; an Ed25519 signature is {ED25519_SIGNATURE_BYTES}",
                signature.sig.len()
            )));
        }
        let fits = signature.keyid.len() <= MAX_KEYID_CHARS
            && signature.keyid.bytes().all(|b| b.is_ascii_graphic());
        if !fits {
            return Err(SubmitError::Malformed(format!(
                "a signature's keyid is not a key id: at most {MAX_KEYID_CHARS} printable \
                 ASCII characters (Tidemark key ids are 64 hex digits), or empty"
            )));
        }
    }
    Ok(())
}

/// Returns the ids of the keys that validly signed the envelope for `caller` at `now`
/// (at least one; in the order of the signatures), or the most telling reason why there
/// is none. Every signature is checked: each stands alone (DSSE), so a report signed by
/// two current keys keeps counting if either is later found compromised.
fn verify_signatures(
    envelope: &pb::Envelope,
    caller: CountryCode,
    store: &Store,
    now: i64,
) -> Result<Vec<String>, SubmitError> {
    signatures_in_shape(envelope)?;
    let signed = envelope::SignedBytes::of(envelope);
    // The most specific refusal seen so far, ranked: a valid signature by another state's
    // key beats an inactive own key, which beats a signature that does not verify, which
    // beats an unknown key.
    let mut refusal: Option<(u8, SubmitError)> = None;
    let mut note = |rank: u8, err: SubmitError| {
        if refusal.as_ref().is_none_or(|(r, _)| rank > *r) {
            refusal = Some((rank, err));
        }
    };
    // A keyid is an unauthenticated hint (DSSE): the key it names is tried first, then
    // every key registered to the caller's state.
    let own_keys = store.signing_keys(Some(caller.as_str()))?;
    let mut valid = Vec::new();
    for signature in &envelope.signatures {
        let hinted = store.signing_key(&signature.keyid)?;
        if hinted.is_none() && own_keys.is_empty() {
            note(
                0,
                SubmitError::BadSignature(format!(
                    "no registered signing key has id {:?}, and {caller} has no registered \
                     key; an operator registers keys with `tidemark admin register-key`",
                    signature.keyid
                )),
            );
            continue;
        }
        let keys: Vec<&KeyRecord> = hinted
            .iter()
            .chain(own_keys.iter().filter(|k| k.key_id != signature.keyid))
            .collect();
        for record in envelope::hinted_first(&signature.keyid, &keys, |k| k.key_id.as_str()) {
            let Ok(public) = PublicKey::from_raw(&record.public_key) else {
                // A key of small order, registered before such keys were refused,
                // verifies nothing: a signature "by" it needs no private key.
                if <[u8; 32]>::try_from(record.public_key.as_slice())
                    .is_ok_and(|raw| crate::signing::weak_ed25519(&raw).is_some())
                {
                    continue;
                }
                return Err(StoreError::Corrupt(format!(
                    "signing key {} is malformed",
                    record.key_id
                ))
                .into());
            };
            if !signed.verifies(signature, &public) {
                let reason = if hinted.is_some() {
                    format!(
                        "the signature does not verify with key {} (nor with any other key of \
                         {caller}): the payload or the signature was changed after signing",
                        signature.keyid
                    )
                } else {
                    format!(
                        "no registered signing key has id {:?}, and no key registered to \
                         {caller} made this signature; an operator registers keys with \
                         `tidemark admin register-key`",
                        signature.keyid
                    )
                };
                note(1, SubmitError::BadSignature(reason));
                continue;
            }
            if record.state != caller.as_str() {
                note(
                    3,
                    SubmitError::ForeignKey {
                        key_id: record.key_id.clone(),
                        key_state: record.state.clone(),
                        caller,
                    },
                );
                continue;
            }
            if !record.active_at(now) {
                let why = inactive_reason(record, now);
                note(
                    2,
                    if record.revoked_at != 0 {
                        SubmitError::KeyRevoked(why)
                    } else {
                        SubmitError::BadSignature(why)
                    },
                );
                continue;
            }
            if !valid.contains(&record.key_id) {
                valid.push(record.key_id.clone());
            }
            break;
        }
    }
    if !valid.is_empty() {
        return Ok(valid);
    }
    Err(refusal.map_or_else(
        || SubmitError::BadSignature("no valid signature".to_owned()),
        |(_, e)| e,
    ))
}

fn inactive_reason(record: &KeyRecord, now: i64) -> String {
    let id = &record.key_id;
    if record.revoked_at != 0 {
        format!(
            "signing key {id} was revoked as of {} ({}); sign with a current key",
            crate::clock::format_time(record.revoked_at),
            if record.revocation_reason.is_empty() {
                "no reason given"
            } else {
                &record.revocation_reason
            }
        )
    } else if now < record.valid_from {
        format!(
            "signing key {id} is not valid until {}",
            crate::clock::format_time(record.valid_from)
        )
    } else {
        format!(
            "signing key {id} expired at {}; sign with a current key",
            crate::clock::format_time(record.valid_until)
        )
    }
}
