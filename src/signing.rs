//! Ed25519 report-signing keys (through `ring`), their files and their key ids.
//!
//! A key id is the lower-case hex SHA-256 of the public key's DER
//! `SubjectPublicKeyInfo`. Private keys are PKCS#8 PEM files; public keys are standard
//! `-----BEGIN PUBLIC KEY-----` PEM, so other languages' libraries read both.

use std::{fmt, path::Path};

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer, pem::PemObject};

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of an Ed25519 PKCS#8 v1 `PrivateKeyInfo` (RFC 5208, RFC 8410 §7): the
/// 32-byte seed follows.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The seed of an Ed25519 PKCS#8 key (v1 or v2) that ring has already parsed: the
/// `CurvePrivateKey` OCTET STRING (`04 20` + 32 bytes) inside the `privateKey` OCTET
/// STRING (`04 22`), which follows the version and algorithm identifier.
fn pkcs8_seed(der: &[u8]) -> Option<[u8; 32]> {
    let at = der.windows(4).position(|w| w == [0x04, 0x22, 0x04, 0x20])? + 4;
    der.get(at..at + 32)?.try_into().ok()
}

/// An Ed25519 private key that signs envelopes.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
    public: PublicKey,
}

impl SigningKey {
    /// Makes a new key; returns it with its PEM encoding for storage: PKCS#8 v1
    /// (`PrivateKeyInfo`, RFC 8410 §7), the form OpenSSL, Python `cryptography` and Go
    /// read.
    pub fn generate() -> Result<(Self, String), KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let key = Self::from_pkcs8_der(pkcs8.as_ref())?;
        let v1 = [&ED25519_PKCS8_V1_PREFIX[..], &key.seed].concat();
        let pem = pem_encode("PRIVATE KEY", &v1);
        Ok((key, pem))
    }

    /// Reads a PKCS#8 PEM Ed25519 private key (v1 or v2).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            KeyError::Parse(match pem_label(pem) {
                Some("ENCRYPTED PRIVATE KEY") => ENCRYPTED_KEY.to_owned(),
                Some("EC PRIVATE KEY") => "this is an EC (ECDSA) key in SEC1 form; signing \
                                           keys are Ed25519 in PKCS#8 (a PRIVATE KEY block): \
                                           make one with `tidemark keygen`"
                    .to_owned(),
                _ => format!("not a PKCS#8 PEM private key (a PRIVATE KEY block): {e}"),
            })
        })?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// Reads a private key file, naming it in any error.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let pem = read_file(path)?;
        Self::from_pkcs8_pem(&pem)
            .map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| {
            KeyError::Parse(
                "not an Ed25519 key (a TLS key, or another algorithm?): report-signing keys \
                 are Ed25519, made with `tidemark keygen`"
                    .to_owned(),
            )
        })?;
        let seed = pkcs8_seed(der)
            .ok_or_else(|| KeyError::Parse("not an Ed25519 PKCS#8 key: no seed".to_owned()))?;
        let public = PublicKey::from_raw(pair.public_key().as_ref())?;
        Ok(Self { pair, seed, public })
    }

    /// The 32-byte seed the key is derived from (RFC 8032), for signers that take it
    /// (the transparency log's note signer).
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id: lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    /// Signs `message` (64-byte Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// The y coordinates (little-endian, the sign bit of x cleared) of the Ed25519 points of
/// small order (1, 2, 4 or 8), and the non-canonical encodings p and p + 1 of 0 and 1:
/// libsodium's blocklist (`ge25519_has_small_order`). RFC 8032 verification, ring's
/// included, accepts a signature "by" such a key that no private key made.
const SMALL_ORDER_Y: [[u8; 32]; 7] = {
    let mut all = [[0u8; 32]; 7];
    // 0 (order 4) stays all zeros.
    all[1][0] = 1; // 1: the identity (order 1)
    all[2] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ]; // order 8
    all[3] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ]; // order 8
    // p - 1 (order 2), p (0, non-canonical) and p + 1 (1, non-canonical).
    all[4] = near_p(0xec);
    all[5] = near_p(0xed);
    all[6] = near_p(0xee);
    all
};

/// 2^255 - 256 + `low`, little-endian: p - 1, p and p + 1 for 0xec, 0xed and 0xee.
const fn near_p(low: u8) -> [u8; 32] {
    let mut y = [0xff; 32];
    y[31] = 0x7f;
    y[0] = low;
    y
}

/// Why `raw` is not a usable Ed25519 public key although it decodes, if it is not: a
/// point of small order, or a y coordinate written as p or more (non-canonical).
pub(crate) fn weak_ed25519(raw: &[u8; 32]) -> Option<&'static str> {
    let mut y = *raw;
    y[31] &= 0x7f;
    if SMALL_ORDER_Y.contains(&y) {
        return Some("a point of small order");
    }
    // y >= p = 2^255 - 19: all bytes 0xff but the last (0x7f) and the first (>= 0xed).
    if y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed {
        return Some("not canonically encoded (its y coordinate is p or more)");
    }
    None
}

/// What a file says of an encrypted private key, which is not read.
pub(crate) const ENCRYPTED_KEY: &str = "the key is encrypted (ENCRYPTED PRIVATE KEY), which \
     is not read: decrypt it to a file only you can read, e.g. `openssl pkcs8 -in KEY -out \
     KEY.plain`";

/// The label of the first PEM block of `text` (`PUBLIC KEY`, `EC PRIVATE KEY`, …).
pub(crate) fn pem_label(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"))
}

/// An Ed25519 public key with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    key_id: String,
}

impl PublicKey {
    /// From the 32 raw key bytes.
    pub fn from_raw(raw: &[u8]) -> Result<Self, KeyError> {
        let raw: [u8; 32] = raw.try_into().map_err(|_| {
            KeyError::Parse(format!(
                "an Ed25519 public key has 32 bytes, not {}",
                raw.len()
            ))
        })?;
        if let Some(why) = weak_ed25519(&raw) {
            return Err(KeyError::Parse(format!(
                "this Ed25519 public key is {why}: signatures that it \"verifies\" can be made \
                 without any private key, so it is refused; make a new key (`tidemark keygen`)"
            )));
        }
        let key_id = hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki_der(&raw)));
        Ok(Self { raw, key_id })
    }

    /// From a `-----BEGIN PUBLIC KEY-----` PEM (Ed25519 `SubjectPublicKeyInfo`).
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        // One key: of several, which one was meant is the reader's guess (a registration
        // took the first and dropped the rest without a word).
        let blocks = pem
            .lines()
            .filter(|l| l.trim().starts_with("-----BEGIN "))
            .count();
        if blocks > 1 {
            return Err(KeyError::Parse(format!(
                "this holds {blocks} PEM blocks; one public key is read here: give each key \
                 on its own (one file, or one registration, per key)"
            )));
        }
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            // Say what it is instead, when it is another PEM item.
            KeyError::Parse(match pem_label(pem) {
                Some(label) if label.contains("PRIVATE KEY") => format!(
                    "this is a private key ({label}), not a public key: give the .pub.pem \
                     beside it (`tidemark keygen` writes both)"
                ),
                Some(label) if label != "PUBLIC KEY" => format!(
                    "this is a {label}, not a public key (PUBLIC KEY): give the signing key's \
                     .pub.pem (`tidemark keygen` writes it)"
                ),
                _ => format!(
                    "not a PEM public key as RFC 7468 writes one (no header lines, base64 \
                     between the BEGIN and END lines): {e}"
                ),
            })
        })?;
        let raw = der
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .ok_or_else(|| KeyError::Parse("not an Ed25519 public key (RFC 8410)".to_owned()))?;
        Self::from_raw(raw)
    }

    /// Reads a SubjectPublicKeyInfo PEM file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let pem = read_file(path)?;
        Self::from_spki_pem(&pem)
            .map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))
    }

    /// The 32 raw Ed25519 public-key bytes.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// The key id: lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SubjectPublicKeyInfo PEM (RFC 8410).
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &spki_der(&self.raw))
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` by this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

fn spki_der(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

/// PEM-encodes DER bytes with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn read_file(path: &Path) -> Result<String, KeyError> {
    crate::files::read_text(path)
        .map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))
}

/// What is wrong with a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("could not generate a key")]
    /// A key could not be generated.
    Generate,
    #[error("{0}")]
    /// The key text is not a usable Ed25519 key.
    Parse(String),
    #[error("{0}: {1}")]
    /// A key file could not be read or written: (path, reason).
    File(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of small order verify signatures no private key made (a zero scalar and the
    /// identity as R "signs" anything for the identity key): each is refused, in every
    /// encoding, and a real key is not.
    #[test]
    fn weak_ed25519_keys_are_refused() {
        let forged: Vec<u8> = std::iter::once(1).chain([0; 63]).collect();
        let identity = PublicKey {
            raw: SMALL_ORDER_Y[1],
            key_id: String::new(),
        };
        assert!(
            identity.verify(b"any report", &forged),
            "ring takes the forgery"
        );
        for y in SMALL_ORDER_Y {
            for sign in [0, 0x80] {
                let mut raw = y;
                raw[31] |= sign;
                let refused = PublicKey::from_raw(&raw).err().map(|e| e.to_string());
                assert!(
                    refused
                        .as_ref()
                        .is_some_and(|e| e.contains("without any private key")),
                    "{raw:02x?}: {refused:?}"
                );
            }
        }
        let mut above_p = [0xff; 32];
        above_p[31] = 0x7f;
        above_p[0] = 0xf0; // p + 3
        assert!(weak_ed25519(&above_p).is_some());
        let (key, _) = SigningKey::generate().unwrap();
        assert!(weak_ed25519(key.public_key().raw()).is_none());
        assert!(PublicKey::from_raw(key.public_key().raw()).is_ok());
    }

    /// An encrypted or SEC1 key is named as such, with what to do.
    #[test]
    fn an_encrypted_or_ec_key_is_named() {
        let pem = |label: &str| format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
        let said = |label: &str| {
            SigningKey::from_pkcs8_pem(&pem(label))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(said("ENCRYPTED PRIVATE KEY").contains("openssl pkcs8"));
        assert!(said("EC PRIVATE KEY").contains("tidemark keygen"));
    }

    #[test]
    fn keys_round_trip_through_pem_and_verify() {
        let (key, pem) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        let public = PublicKey::from_spki_pem(&key.public_key().to_spki_pem()).unwrap();
        assert_eq!(public, *key.public_key());
        let sig = key.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellp", &sig));
        assert_eq!(key.key_id().len(), 64);
    }

    #[test]
    fn a_private_key_or_certificate_given_as_a_public_key_is_named() {
        let (_, private) = SigningKey::generate().unwrap();
        let err = PublicKey::from_spki_pem(&private).unwrap_err().to_string();
        assert!(err.contains("this is a private key"), "{err}");
        let certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = PublicKey::from_spki_pem(certificate)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("this is a CERTIFICATE, not a public key"),
            "{err}"
        );
        let err = PublicKey::from_spki_pem("junk").unwrap_err().to_string();
        assert!(err.contains("not a PEM public key"), "{err}");
        // Two keys in one: neither is taken for the one meant.
        let (a, _) = SigningKey::generate().unwrap();
        let (b, _) = SigningKey::generate().unwrap();
        let two = format!(
            "{}{}",
            a.public_key().to_spki_pem(),
            b.public_key().to_spki_pem()
        );
        let err = PublicKey::from_spki_pem(&two).unwrap_err().to_string();
        assert!(err.contains("holds 2 PEM blocks"), "{err}");
        // A PUBLIC KEY with header lines (RFC 1421's): not garbled into "a PUBLIC KEY, not
        // a public key".
        let pem = a.public_key().to_spki_pem();
        let headed = pem.replacen("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1);
        let err = PublicKey::from_spki_pem(&headed).unwrap_err().to_string();
        assert!(err.contains("as RFC 7468 writes one"), "{err}");
    }

    #[test]
    fn keys_are_written_as_pkcs8_v1_and_read_in_v1_and_v2() {
        let (key, pem) = SigningKey::generate().unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let der = der.secret_pkcs8_der();
        // RFC 8410 §7: SEQUENCE { INTEGER 0, AlgorithmIdentifier { id-Ed25519 },
        // OCTET STRING { OCTET STRING (32 bytes) } }, with no public key.
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_PKCS8_V1_PREFIX);
        assert_eq!(der[16..], key.seed);
        // ring's own v2 form (with the public key) is read too, as the same key.
        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let from_v2 = SigningKey::from_pkcs8_der(v2.as_ref()).unwrap();
        let v1 = [&ED25519_PKCS8_V1_PREFIX[..], &from_v2.seed].concat();
        let from_v1 = SigningKey::from_pkcs8_der(&v1).unwrap();
        assert_eq!(from_v1.key_id(), from_v2.key_id());
    }
}
