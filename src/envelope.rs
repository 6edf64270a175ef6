//! DSSE envelopes: the pre-authentication encoding, signing, verification, digests.
//!
//! The bytes a signature covers are `PAE(payload_type, payload)` (see
//! `proto/tidemark/v1/envelope.proto`). The server never re-encodes a payload: what it
//! verified is what it stores and hands out.

use ring::digest::{SHA256, digest as sha256};

use crate::{
    pb,
    signing::{PublicKey, SigningKey},
};

/// DSSE payload type of a `tidemark.v1.Report`.
pub const REPORT_PAYLOAD_TYPE: &str = "application/vnd.tidemark.report.v1+protobuf";
/// DSSE payload type of a `tidemark.v1.Retraction`.
pub const RETRACTION_PAYLOAD_TYPE: &str = "application/vnd.tidemark.retraction.v1+protobuf";
/// DSSE payload type of a `tidemark.v1.Receipt`.
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

/// The bytes every signature of an envelope signs: PAE(payload type, payload).
pub struct SignedBytes(Vec<u8>);

impl SignedBytes {
    /// The signed bytes of `envelope`.
    pub fn of(envelope: &pb::Envelope) -> Self {
        Self(pae(&envelope.payload_type, &envelope.payload))
    }

    /// Whether `key` made `signature` over these bytes.
    pub fn verifies(&self, signature: &pb::Signature, key: &PublicKey) -> bool {
        key.verify(&self.0, &signature.sig)
    }
}

/// The keys to try for one signature, in order: the key its `keyid` names first, then
/// every other key. A DSSE `keyid` is an optional, unauthenticated hint (DSSE protocol,
/// "Signature"): an empty, absent or unknown keyid still has every key tried.
pub fn hinted_first<'a, 'k: 'a, K>(
    keyid: &'a str,
    keys: &'k [K],
    id_of: impl Fn(&K) -> &str + Copy + 'a,
) -> impl Iterator<Item = &'k K> + 'a {
    let hinted = keys.iter().filter(move |k| id_of(k) == keyid);
    let others = keys.iter().filter(move |k| id_of(k) != keyid);
    hinted.chain(others)
}

/// The first of `keys` that made one of the envelope's signatures, if any: each
/// signature is tried with [`hinted_first`] order. Only when no key verifies any
/// signature is the envelope unverified.
pub fn verified_by<'k>(envelope: &pb::Envelope, keys: &'k [PublicKey]) -> Option<&'k PublicKey> {
    let signed = SignedBytes::of(envelope);
    envelope.signatures.iter().find_map(|signature| {
        hinted_first(&signature.keyid, keys, PublicKey::key_id)
            .find(|k| signed.verifies(signature, k))
    })
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

    #[test]
    fn a_keyid_is_only_a_hint() {
        let (key, _) = SigningKey::generate().unwrap();
        let (other, _) = SigningKey::generate().unwrap();
        let keys = [other.public_key().clone(), key.public_key().clone()];
        let mut env = sign(REPORT_PAYLOAD_TYPE, b"abc".to_vec(), &key);
        for hint in ["", "unknown", other.key_id()] {
            env.signatures[0].keyid = hint.to_owned();
            let found = verified_by(&env, &keys).map(PublicKey::key_id);
            assert_eq!(found, Some(key.key_id()), "keyid {hint:?}");
        }
        env.payload = b"abd".to_vec();
        assert!(verified_by(&env, &keys).is_none());
    }
}
