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

/// An Ed25519 private key that signs envelopes.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// Makes a new key; returns it with its PKCS#8 PEM encoding for storage.
    pub fn generate() -> Result<(Self, String), KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
        Ok((Self::from_pkcs8_der(pkcs8.as_ref())?, pem))
    }

    /// Reads a PKCS#8 PEM Ed25519 private key (v1 or v2).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| KeyError::Parse(format!("not a PKCS#8 PEM private key: {e}")))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// Reads a private key file, naming it in any error.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let pem = read_file(path)?;
        Self::from_pkcs8_pem(&pem)
            .map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Parse(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = PublicKey::from_raw(pair.public_key().as_ref())?;
        Ok(Self { pair, public })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id: lower-case hex SHA-256 of the raw public key.
    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    /// Signs `message` (64-byte Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
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
        let key_id = hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki_der(&raw)));
        Ok(Self { raw, key_id })
    }

    /// From a `-----BEGIN PUBLIC KEY-----` PEM (Ed25519 `SubjectPublicKeyInfo`).
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| KeyError::Parse(format!("not a PEM public key: {e}")))?;
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

    /// The key id: lower-case hex SHA-256 of the raw public key.
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
    std::fs::read_to_string(path)
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
}
