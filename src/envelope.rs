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

/// At most this many signatures are accepted, or looked at, on one envelope.
pub const MAX_SIGNATURES: usize = 4;

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

/// Why a payload was not taken as a message.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not a protobuf encoding of the message at all.
    #[error("the payload is not a {message}: {error}")]
    Undecodable {
        /// The message's full name.
        message: &'static str,
        /// What the decoder found.
        error: prost::DecodeError,
    },
    #[error(
        "the payload is a {message}, but not in its one encoding (the payload's {got} bytes \
         re-encode as {canonical}): encode each field once, in field-number order, with \
         minimal varints, no unknown fields and no fields at their default value, as \
         protobuf libraries do when serialising a message; otherwise the signed bytes could \
         carry content that no reader shows"
    )]
    /// A valid encoding of the message, but not the one it re-encodes to.
    NotCanonical {
        /// The message's full name.
        message: &'static str,
        /// The payload's length.
        got: usize,
        /// The length of its canonical encoding.
        canonical: usize,
    },
}

/// Decodes a signed payload as `message`, accepted only in its canonical encoding: the
/// bytes the message re-encodes to. A signature then covers exactly what every reader
/// shows — no field twice, no unknown field, no second spelling of a value.
pub fn decode_canonical<M: prost::Message + Default>(
    payload: &[u8],
    message: &'static str,
) -> Result<M, PayloadError> {
    let decoded =
        M::decode(payload).map_err(|error| PayloadError::Undecodable { message, error })?;
    let canonical = decoded.encode_to_vec();
    if canonical != payload {
        return Err(PayloadError::NotCanonical {
            message,
            got: payload.len(),
            canonical: canonical.len(),
        });
    }
    Ok(decoded)
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
    use proptest::prelude::*;
    use prost::Message as _;

    fn decode(payload: &[u8]) -> Result<pb::Report, PayloadError> {
        decode_canonical(payload, "tidemark.v1.Report")
    }

    proptest! {
        /// Every report's own encoding is accepted; the same report with a field added
        /// that no reader shows — unknown, or a field given twice — is not, nor is a
        /// value spelled with a longer varint.
        #[test]
        fn only_the_encoding_a_report_re_encodes_to_is_accepted(
            seed in any::<u64>(),
            unknown_field in 100u32..1_000,
            hidden in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let report = crate::sample::report(&mut crate::sample::Rng::new(seed), "AUS");
            let canonical = report.encode_to_vec();
            prop_assert_eq!(decode(&canonical).unwrap(), report.clone());

            let mut unknown = canonical.clone();
            prost::encoding::bytes::encode(unknown_field, &hidden, &mut unknown);
            let refused = decode(&unknown).unwrap_err();
            prop_assert!(matches!(refused, PayloadError::NotCanonical { .. }), "{refused}");

            // report_id given twice: decoders keep the last, the first is hidden.
            let mut twice = Vec::new();
            prost::encoding::string::encode(1, &"0000dead-0000-4000-8000-00000000beef".to_owned(), &mut twice);
            twice.extend_from_slice(&canonical);
            let refused = decode(&twice).unwrap_err();
            prop_assert!(matches!(refused, PayloadError::NotCanonical { .. }), "{refused}");

            // The version (field 2) as a two-byte varint, in its place: the same
            // report, spelled longer.
            let id_only = pb::Report { report_id: report.report_id.clone(), ..Default::default() };
            let after_version = pb::Report {
                report_id: String::new(),
                version: 0,
                ..report.clone()
            };
            let mut longer = id_only.encode_to_vec();
            longer.extend_from_slice(&[0x10, 0x81, 0x00]);
            longer.extend_from_slice(&after_version.encode_to_vec());
            let read = pb::Report::decode(longer.as_slice()).unwrap();
            prop_assert_eq!(read, pb::Report { version: 1, ..report });
            let refused = decode(&longer).unwrap_err();
            prop_assert!(matches!(refused, PayloadError::NotCanonical { .. }), "{refused}");
        }
    }

    #[test]
    fn a_payload_that_is_not_the_message_is_undecodable() {
        assert!(matches!(
            decode(&[0xff, 0xff]),
            Err(PayloadError::Undecodable { .. })
        ));
    }

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
