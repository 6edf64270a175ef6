//! Receipts: the server's signed statement that it accepted an envelope, and their
//! offline verification.
//!
//! A receipt is itself a DSSE envelope (payload type
//! `application/vnd.tidemark.receipt.v1+protobuf`) over a `tidemark.v1.Receipt`, signed
//! with the server's Ed25519 receipt key.

use prost::Message;

use crate::{
    envelope::{self, RECEIPT_PAYLOAD_TYPE},
    pb,
    signing::{PublicKey, SigningKey},
    store::Accepted,
};

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
