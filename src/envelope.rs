//! DSSE envelopes: the pre-authentication encoding, signing, verification, digests.
//!
//! The bytes a signature covers are `PAE(payload_type, payload)` (see
//! `proto/tidemark/v1/envelope.proto`). The server never re-encodes a payload: what it
//! verified is what it stores and hands out.

use ring::digest::{SHA256, digest as sha256};

use crate::{pb, signing::SigningKey};

pub const REPORT_PAYLOAD_TYPE: &str = "application/vnd.tidemark.report.v1+protobuf";
pub const RETRACTION_PAYLOAD_TYPE: &str = "application/vnd.tidemark.retraction.v1+protobuf";
pub const RECEIPT_PAYLOAD_TYPE: &str = "application/vnd.tidemark.receipt.v1+protobuf";

/// The DSSE v1 pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// SHA-256 of the PAE: identifies exactly what was signed, whoever signed it.
pub fn digest(envelope: &pb::Envelope) -> [u8; 32] {
    let hash = sha256(&SHA256, &pae(&envelope.payload_type, &envelope.payload));
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

/// Wraps `payload` in an envelope signed by `key`.
pub fn sign(payload_type: &str, payload: Vec<u8>, key: &SigningKey) -> pb::Envelope {
    let sig = key.sign(&pae(payload_type, &payload));
    pb::Envelope {
        payload,
        payload_type: payload_type.to_owned(),
        signatures: vec![pb::Signature {
            keyid: key.key_id().to_owned(),
            sig,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_signature_covers_type_and_payload() {
        let (key, _) = SigningKey::generate().unwrap();
        let env = sign(REPORT_PAYLOAD_TYPE, b"abc".to_vec(), &key);
        let sig = &env.signatures[0].sig;
        let public = key.public_key();
        assert!(public.verify(&pae(&env.payload_type, &env.payload), sig));
        assert!(!public.verify(&pae(RECEIPT_PAYLOAD_TYPE, &env.payload), sig));
        assert!(!public.verify(&pae(&env.payload_type, b"abd"), sig));
    }
}
