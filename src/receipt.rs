//! Receipts: the server's statements that it accepted an envelope, and their offline
//! verification.
//!
//! - The **log proof** (C2SP `tlog-proof@v1`): the envelope's transparency-log entry,
//!   its inclusion proof and the signed checkpoint of the batch that committed it. It
//!   proves the acceptance is in the one public history, not only that the server said
//!   so; checked with the log's note verifier key.
//! - The **signed receipt**: a DSSE envelope (payload type
//!   `application/vnd.tidemark.receipt.v1+protobuf`) over a `tidemark.v1.Receipt`, signed
//!   with the server's Ed25519 receipt key.

use prost::Message;

use crate::{
    envelope::{self, RECEIPT_PAYLOAD_TYPE},
    pb,
    signing::{PublicKey, SigningKey},
    store::{Accepted, EnvelopeRecord, Leaf, LogView, ProofRequestError, Snapshot, StoreError},
    tlog::{
        checkpoint::{Checkpoint, CheckpointError},
        entry::{Entry, VERSION},
        note::NoteVerifier,
        proof::{TlogProof, TlogProofError},
    },
};

/// The log proof of `leaf` against the newest checkpoint in `log`.
pub(crate) fn log_proof(log: &LogView, leaf: &Leaf) -> Result<String, ProofRequestError> {
    let checkpoint = log
        .latest_checkpoint()?
        .ok_or_else(|| ProofRequestError::OutOfRange("the log has no checkpoint yet".to_owned()))?;
    let hashes = log.inclusion_proof(leaf.index, checkpoint.size)?;
    Ok(TlogProof {
        extra: Some(leaf.entry.clone()),
        index: leaf.index,
        hashes,
        checkpoint_note: checkpoint.note,
    }
    .encode())
}

/// The log proof of the acceptance of envelope `sequence` (stored as `record`, with DSSE
/// payload `payload`) against the newest checkpoint `snapshot` sees: what a query result
/// carries when asked for.
pub(crate) fn acceptance_proof(
    snapshot: &Snapshot,
    sequence: u64,
    record: &EnvelopeRecord,
    payload: &[u8],
) -> Result<String, StoreError> {
    let leaf = snapshot.acceptance_leaf(sequence, record, crate::tlog::entry::sha256(payload))?;
    log_proof(snapshot.log(), &leaf).map_err(|e| match e {
        ProofRequestError::Store(e) => e,
        // The snapshot's checkpoint covers every leaf it holds.
        other => StoreError::Corrupt(format!("envelope {sequence}'s log proof: {other}")),
    })
}

/// A log proof that verified: the entry it proves and the checkpoint it is under.
#[derive(Debug, Clone)]
pub struct VerifiedLogProof {
    /// The log entry's bytes (docs/transparency.md).
    pub entry: Vec<u8>,
    /// What they say: a well-formed `tidemark.v1` entry.
    pub fields: Entry,
    /// Its leaf index.
    pub index: u64,
    /// The checkpoint the entry is included under.
    pub checkpoint: Checkpoint,
}

/// Checks a log proof offline: its checkpoint is signed by `log_key` (a note verifier
/// key, `<origin>+<hex id>+<base64>`), names that key's origin, and includes the entry
/// the proof carries at its index.
pub fn verify_log_proof(text: &str, log_key: &str) -> Result<VerifiedLogProof, ReceiptError> {
    let verifier = NoteVerifier::parse(log_key.trim())
        .map_err(|e| ReceiptError(format!("the log key is not a note verifier key: {e}")))?;
    let proof = TlogProof::parse(text).map_err(|e| ReceiptError(e.to_string()))?;
    let entry = proof.extra.clone().ok_or_else(|| {
        ReceiptError("the proof carries no entry (its `extra` line is missing)".to_owned())
    })?;
    let checkpoint = proof.verify(&entry, &verifier).map_err(|e| {
        ReceiptError(match e {
            TlogProofError::Checkpoint(e @ CheckpointError::Note(_)) => format!(
                "the checkpoint is not signed by {}+{:08x}, or was altered: {e}",
                verifier.name(),
                verifier.key_id()
            ),
            TlogProofError::Checkpoint(e) => {
                format!("the checkpoint is not a well-formed C2SP tlog-checkpoint: {e}")
            }
            other => format!("the entry is not in the log under this checkpoint: {other}"),
        })
    })?;
    if checkpoint.origin != verifier.name() {
        return Err(ReceiptError(format!(
            "the checkpoint is of log {:?}, not of {:?}",
            checkpoint.origin,
            verifier.name()
        )));
    }
    let fields = Entry::decode(&entry).map_err(|e| {
        ReceiptError(format!(
            "the proof is valid, but the log entry {} it proves is not a well-formed \
             {VERSION} entry ({e}): the log holds an entry Tidemark does not write — keep \
             the proof as evidence and tell the exchange's operator",
            proof.index
        ))
    })?;
    Ok(VerifiedLogProof {
        entry,
        fields,
        index: proof.index,
        checkpoint,
    })
}

/// What a receipt states about an accepted envelope.
pub fn facts(accepted: &Accepted) -> pb::Receipt {
    pb::Receipt {
        sequence: accepted.sequence,
        envelope_digest: accepted.digest.clone(),
        reporting_state: accepted.state.clone(),
        report_id: accepted.report_id.to_string(),
        version: accepted.version,
        accepted_at_unix: accepted.at,
        kind: accepted.kind.label().to_owned(),
    }
}

/// The receipt of an accepted envelope, signed with the server's receipt key. Ed25519
/// signatures are deterministic: re-issuing the stored facts of a duplicate yields the
/// original receipt.
pub fn issue(accepted: &Accepted, key: &SigningKey) -> pb::Envelope {
    envelope::sign(RECEIPT_PAYLOAD_TYPE, facts(accepted).encode_to_vec(), key)
}

/// Checks a receipt envelope against the server's public key and returns its contents.
pub fn verify(receipt: &pb::Envelope, server_key: &PublicKey) -> Result<pb::Receipt, ReceiptError> {
    if receipt.payload_type != RECEIPT_PAYLOAD_TYPE {
        return Err(ReceiptError(format!(
            "payload type is {:?}, not a Tidemark receipt",
            receipt.payload_type
        )));
    }
    if envelope::verified_by(receipt, std::slice::from_ref(server_key)).is_none() {
        return Err(ReceiptError(format!(
            "no valid signature by the server key {}: the receipt was altered or comes from \
             another server",
            server_key.key_id()
        )));
    }
    pb::Receipt::decode(receipt.payload.as_slice())
        .map_err(|e| ReceiptError(format!("the signed payload is not a receipt: {e}")))
}

/// Why a receipt does not verify.
#[derive(Debug, thiserror::Error)]
#[error("the receipt does not verify: {0}")]
pub struct ReceiptError(String);

impl ReceiptError {
    /// What failed, without the "the receipt does not verify" preface.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::{LogSigner, merkle::leaf_hash};

    /// A proof of `entry` as the only leaf of a log signed by a fresh key, and the key.
    fn one_leaf_proof(entry: &[u8]) -> (String, String) {
        let signer = LogSigner::new("example.org/log", [7; 32]).unwrap();
        let proof = TlogProof {
            extra: Some(entry.to_vec()),
            index: 0,
            hashes: Vec::new(),
            checkpoint_note: signer.sign(1, leaf_hash(entry)).unwrap(),
        };
        (proof.encode(), signer.verifier_key())
    }

    /// An inclusion proof shows that the log holds some bytes; a receipt is valid only if
    /// they are also an entry Tidemark writes, with one meaning.
    #[test]
    fn a_proven_entry_must_be_a_well_formed_entry() {
        let entry = Entry::Envelope(crate::tlog::entry::EnvelopeEntry::example(b"payload"));
        let (proof, key) = one_leaf_proof(&entry.encode());
        assert_eq!(verify_log_proof(&proof, &key).unwrap().fields, entry);

        let text = String::from_utf8(entry.encode()).unwrap();
        for (altered, line) in [
            (text.replace("sequence 1\n", "sequence 01\n"), "line 2"),
            (
                text.replace("kind report\n", "kind report\nnote hello\n"),
                "line 8",
            ),
        ] {
            let (proof, key) = one_leaf_proof(altered.as_bytes());
            let refused = verify_log_proof(&proof, &key).unwrap_err();
            assert!(
                refused
                    .reason()
                    .contains("not a well-formed tidemark.v1 entry")
                    && refused.reason().contains(line),
                "{}",
                refused.reason()
            );
        }
    }
}
