//! Signed notes per C2SP signed-note (<https://c2sp.org/signed-note>, the format
//! of golang.org/x/mod/sumdb/note) with Ed25519 keys (signature type 0x01):
//! key strings, key ids, signing, and opening notes against trusted keys.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// Signature type identifier byte of Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;
/// Most signature lines [`open`] accepts (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 100;
const SIG_PREFIX: &str = "\u{2014} ";
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key, a text or a note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Key names must be non-empty without whitespace or '+'.
    #[error("key name {0:?} is invalid: it must be non-empty and contain no whitespace or '+'")]
    InvalidName(String),
    /// A verifier key string is not `<name>+<hex id>+<base64 key>`.
    #[error("verifier key is malformed: {0}; expected <name>+<8 hex id>+<base64 key>")]
    MalformedVerifierKey(&'static str),
    /// A private key string is not `PRIVATE+KEY+<name>+<hex id>+<base64 seed>`.
    #[error("private key is malformed: {0}; expected PRIVATE+KEY+<name>+<8 hex id>+<base64>")]
    MalformedPrivateKey(&'static str),
    /// The key's signature type byte is not Ed25519.
    #[error("{}", unsupported_algorithm(*.0))]
    UnsupportedAlgorithm(u8),
    /// The key id written in a key string does not match the key.
    #[error("key id {stated:08x} in the key string does not match the key id {computed:08x}")]
    KeyIdMismatch {
        /// Id written in the key string.
        stated: u32,
        /// Id computed from name and public key.
        computed: u32,
    },
    /// The text to sign does not end with a newline.
    #[error("note text must end with a newline")]
    TextMissingNewline,
    /// The note or text contains an ASCII control character other than newline.
    #[error("note has control character U+{code:04X} at byte {offset}; only newline is allowed")]
    ControlCharacter {
        /// Byte offset of the character.
        offset: usize,
        /// The character's code point.
        code: u32,
    },
    /// No blank line followed by newline-terminated signature lines.
    #[error("note lacks a signature block: text, a blank line, newline-terminated signatures")]
    MissingSignatures,
    /// A signature line is malformed.
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A signature from a trusted key does not verify.
    #[error("signature by trusted key {name}+{key_id:08x} is invalid: note altered or wrong key")]
    InvalidSignature {
        /// Key name.
        name: String,
        /// Key id.
        key_id: u32,
    },
    /// No signature is from a trusted key.
    #[error("note has no signature from a trusted key ({unknown} signature(s) from unknown keys)")]
    NoTrustedSignature {
        /// Number of distinct signatures from unknown keys.
        unknown: usize,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Randomness,
}

/// Why a key of signature type `algorithm` is not read as a note verifier key.
fn unsupported_algorithm(algorithm: u8) -> String {
    if algorithm == 0x04 {
        // C2SP tlog-cosignature: a witness's key signs cosignatures, not notes.
        "this is a witness's cosignature key (type 0x04), not a log's note key (type 0x01): \
         give the log's key, as `tidemark log verifier-key` prints it"
            .to_owned()
    } else {
        format!("unsupported key type {algorithm:#04x}; only Ed25519 (0x01) is supported")
    }
}

/// A key name as signed-note allows it: non-empty, no Unicode white space, no '+'.
pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(NoteError::InvalidName(name.to_owned()));
    }
    Ok(())
}

fn check_chars(text: &str) -> Result<(), NoteError> {
    match text.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((offset, c)) => Err(NoteError::ControlCharacter {
            offset,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// The key id of an Ed25519 key: the first 4 bytes, big-endian, of
/// `SHA-256(name || "\n" || 0x01 || public_key)`.
pub fn ed25519_key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut ctx = Context::new(&SHA256);
    for part in [name.as_bytes(), b"\n", &[ALG_ED25519], public_key] {
        ctx.update(part);
    }
    let digest = ctx.finish();
    let d = digest.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Parses `<name>+<8 hex id>+<base64(0x01 || 32 bytes)>` into its parts;
/// `err` builds the caller's "malformed" error.
fn parse_key_parts(
    s: &str,
    err: fn(&'static str) -> NoteError,
) -> Result<(&str, u32, [u8; 32]), NoteError> {
    let (name, rest) = s.split_once('+').ok_or(err("missing '+' after the name"))?;
    let (id, key) = rest
        .split_once('+')
        .ok_or(err("missing '+' after the key id"))?;
    check_name(name)?;
    // One spelling, as every signer writes it (Go's note package: `%08x`).
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if id.len() != 8 || !id.bytes().all(hex) {
        return Err(err("key id must be 8 lower-case hex digits"));
    }
    let id =
        u32::from_str_radix(id, 16).map_err(|_| err("key id must be 8 lower-case hex digits"))?;
    let key = B64
        .decode(key)
        .map_err(|_| err("key is not valid standard base64"))?;
    match key.split_first() {
        None => Err(err("key is empty")),
        Some((&ALG_ED25519, k)) => Ok((
            name,
            id,
            k.try_into()
                .map_err(|_| err("Ed25519 key must be 32 bytes"))?,
        )),
        Some((&alg, _)) => Err(NoteError::UnsupportedAlgorithm(alg)),
    }
}

fn key_string(name: &str, key_id: u32, key: &[u8; 32]) -> String {
    format!(
        "{name}+{key_id:08x}+{}",
        B64.encode([&[ALG_ED25519][..], key].concat())
    )
}

/// A trusted Ed25519 public key with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// A verifier for `public_key` under `name`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        if crate::signing::weak_ed25519(&public_key).is_some() {
            return Err(NoteError::MalformedVerifierKey(
                "the Ed25519 key is of small order or not canonically encoded: signatures \
                 it \"verifies\" need no private key",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &public_key),
            public_key,
        })
    }

    /// Parses a verifier key `<name>+<8 hex key id>+<base64(0x01 || public key)>`,
    /// checking that the key id matches.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, stated, public_key) = parse_key_parts(vkey, NoteError::MalformedVerifierKey)?;
        let verifier = Self::new(name, public_key)?;
        if verifier.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The verifier key string, as accepted by [`NoteVerifier::parse`].
    pub fn verifier_key(&self) -> String {
        key_string(&self.name, self.key_id, &self.public_key)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

/// An Ed25519 signing key with its name. `Debug` does not show the seed.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    seed: [u8; 32],
    key_pair: Ed25519KeyPair,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key_pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| NoteError::MalformedPrivateKey("Ed25519 seed rejected"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(key_pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &public),
            seed,
            key_pair,
        })
    }

    /// A signer with a fresh random key from the system RNG.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let seed: [u8; 32] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map_err(|_| NoteError::Randomness)?
            .expose();
        Self::from_seed(name, seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>`,
    /// checking that the key id matches the derived public key.
    pub fn parse_private_key(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or(NoteError::MalformedPrivateKey(
                "missing PRIVATE+KEY+ prefix",
            ))?;
        let (name, stated, seed) = parse_key_parts(rest, NoteError::MalformedPrivateKey)?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The private key string, as accepted by [`NoteSigner::parse_private_key`]. Keep it secret.
    pub fn private_key(&self) -> String {
        format!(
            "{PRIVATE_PREFIX}{}",
            key_string(&self.name, self.key_id, &self.seed)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.key_pair.public_key().as_ref());
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// The verifier key string for this signer's public key.
    pub fn verifier_key(&self) -> String {
        self.verifier().verifier_key()
    }

    /// Signs `text` (which must end with a newline and contain no control
    /// characters but newline) and returns the signed note: text, blank line,
    /// one signature line `— <name> <base64(key id || signature)>\n`.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::TextMissingNewline);
        }
        check_chars(text)?;
        let sig = self.key_pair.sign(text.as_bytes());
        let blob = [&self.key_id.to_be_bytes()[..], sig.as_ref()].concat();
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id (first 4 bytes of the decoded signature).
    pub key_id: u32,
    /// Signature bytes after the key id.
    pub signature: Vec<u8>,
}

/// A note whose signatures were checked by [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The signed text, including its final newline.
    pub text: String,
    /// Signatures by trusted keys, all verified (at least one).
    pub verified: Vec<NoteSignature>,
    /// Signatures by unknown keys, not checked.
    pub unverified: Vec<NoteSignature>,
}

/// Parses one signature line, `— <name> <base64(key id ‖ signature)>` (no line feed).
pub fn parse_signature(line: &str) -> Result<NoteSignature, NoteError> {
    parse_signature_line(line)
        .map_err(|reason| NoteError::MalformedSignatureLine { line: 1, reason })
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, &'static str> {
    if line.contains('\n') {
        return Err("it holds a line feed: give the line without one");
    }
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or("it must start with an em dash (U+2014) and a space")?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or("missing space between key name and signature")?;
    check_name(name).map_err(|_| "invalid key name")?;
    let raw = B64
        .decode(b64)
        .map_err(|_| "signature is not valid standard base64")?;
    match raw.split_first_chunk::<4>() {
        Some((id, sig)) if !sig.is_empty() => Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes(*id),
            signature: sig.to_vec(),
        }),
        _ => Err("signature is shorter than a 4-byte key id plus a signature"),
    }
}

/// Opens a signed note: splits the text from the signature block at the last
/// blank line, verifies every signature whose name and key id match one of
/// `verifiers` (any failure rejects the note), records the others as
/// unverified, and fails unless at least one trusted signature verified.
pub fn open(note: &str, verifiers: &[NoteVerifier]) -> Result<Opened, NoteError> {
    check_chars(note)?;
    let split = note.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    let sigs = sigs
        .strip_suffix('\n')
        .filter(|s| !s.is_empty())
        .ok_or(NoteError::MissingSignatures)?;
    let mut opened = Opened {
        text: text.to_owned(),
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for (n, line) in sigs.split('\n').enumerate() {
        if n == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let sig =
            parse_signature_line(line).map_err(|reason| NoteError::MalformedSignatureLine {
                line: n + 1,
                reason,
            })?;
        let trusted = verifiers
            .iter()
            .find(|v| v.name == sig.name && v.key_id == sig.key_id);
        let list = match trusted {
            Some(v) if !v.verify(text.as_bytes(), &sig.signature) => {
                return Err(NoteError::InvalidSignature {
                    name: sig.name,
                    key_id: sig.key_id,
                });
            }
            Some(_) => &mut opened.verified,
            None => &mut opened.unverified,
        };
        if !list.contains(&sig) {
            list.push(sig);
        }
    }
    if opened.verified.is_empty() {
        return Err(NoteError::NoTrustedSignature {
            unknown: opened.unverified.len(),
        });
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod sumdb/note/note_test.go (TestNewVerifier, TestSign, TestOpen).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn go_reference_vector() {
        let signer = NoteSigner::parse_private_key(SKEY).unwrap();
        assert_eq!(
            (signer.name(), signer.key_id()),
            ("PeterNeumann", 0xc74f_20a3)
        );
        assert_eq!(signer.private_key(), SKEY);
        assert_eq!(signer.verifier_key(), VKEY);
        assert_eq!(NoteVerifier::parse(VKEY).unwrap(), signer.verifier());
        // One spelling of the key id: as every signer writes it.
        assert_eq!(
            NoteVerifier::parse(&VKEY.replace("c74f20a3", "C74F20A3")),
            Err(NoteError::MalformedVerifierKey(
                "key id must be 8 lower-case hex digits"
            ))
        );
        assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
        assert!(!format!("{signer:?}").contains("seed"));
    }

    #[test]
    fn open_reference_notes() {
        let peter = NoteVerifier::parse(VKEY).unwrap();
        let enoch = NoteVerifier::parse(ENOCH_VKEY).unwrap();
        let note = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let opened = open(&note, std::slice::from_ref(&peter)).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!((opened.verified.len(), opened.unverified.len()), (1, 1));
        assert_eq!(
            (opened.verified[0].name.as_str(), opened.verified[0].key_id),
            ("PeterNeumann", 0xc74f_20a3)
        );
        assert_eq!(opened.unverified[0].key_id, 0xaf0c_fe78);
        let both = open(&note, &[peter.clone(), enoch.clone()]).unwrap();
        assert_eq!((both.verified.len(), both.unverified.len()), (2, 0));
        // Only unknown keys: rejected.
        assert_eq!(
            open(&note, &[]),
            Err(NoteError::NoTrustedSignature { unknown: 2 })
        );
        assert_eq!(
            open(
                &format!("{TEXT}\n{ENOCH_SIG}"),
                std::slice::from_ref(&peter)
            ),
            Err(NoteError::NoTrustedSignature { unknown: 1 })
        );
        // Repeated signatures are recorded once.
        let dup = open(
            &format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}"),
            &[peter],
        )
        .unwrap();
        assert_eq!((dup.verified.len(), dup.unverified.len()), (1, 1));
    }

    #[test]
    fn tampering_is_detected() {
        let peter = NoteVerifier::parse(VKEY).unwrap();
        let note = format!("{TEXT}\n{PETER_SIG}");
        let bad_sig = Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f_20a3,
        });
        for i in 0..note.len() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(
                open(&changed, std::slice::from_ref(&peter)).is_err(),
                "byte {i} changed but note opened"
            );
        }
        let changed_text = note.replacen("cryptography", "cryptographY", 1);
        assert_eq!(open(&changed_text, std::slice::from_ref(&peter)), bad_sig);
        let changed_sig = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert_eq!(open(&changed_sig, std::slice::from_ref(&peter)), bad_sig);
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let peter = [NoteVerifier::parse(VKEY).unwrap()];
        let line = |n, reason| Err(NoteError::MalformedSignatureLine { line: n, reason });
        let cases = [
            (TEXT.to_owned(), Err(NoteError::MissingSignatures)),
            (format!("{TEXT}\n"), Err(NoteError::MissingSignatures)),
            (
                format!("{TEXT}\n{}", PETER_SIG.trim_end()),
                Err(NoteError::MissingSignatures),
            ),
            (
                format!("\x01{TEXT}\n{PETER_SIG}"),
                Err(NoteError::ControlCharacter { offset: 0, code: 1 }),
            ),
            (
                format!(
                    "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
                ),
                line(1, "signature is not valid standard base64"),
            ),
            (
                format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
                line(2, "it must start with an em dash (U+2014) and a space"),
            ),
            (
                format!("{TEXT}\n— a+b AAAAAAA=\n"),
                line(1, "invalid key name"),
            ),
            (
                format!("{TEXT}\n— PeterNeumann AAAAAA==\n"),
                line(
                    1,
                    "signature is shorter than a 4-byte key id plus a signature",
                ),
            ),
            (
                format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1)),
                Err(NoteError::TooManySignatures),
            ),
        ];
        for (note, want) in cases {
            assert_eq!(open(&note, &peter), want, "{note:?}");
        }
    }

    #[test]
    fn key_strings_are_strict() {
        for s in [VKEY, SKEY] {
            let parse = |k: &str| {
                if s == VKEY {
                    NoteVerifier::parse(k).map(|_| ())
                } else {
                    NoteSigner::parse_private_key(k).map(|_| ())
                }
            };
            assert!(parse(s).is_ok());
            for i in 0..s.len() {
                for j in i + 1..=s.len() {
                    if (i, j) != (0, s.len()) {
                        assert!(parse(&s[i..j]).is_err(), "accepted {:?}", &s[i..j]);
                    }
                }
                let mut b = s.as_bytes().to_vec();
                b[i] += 1;
                assert!(
                    parse(std::str::from_utf8(&b).unwrap()).is_err(),
                    "accepted mangled byte {i}"
                );
            }
        }
        // From note_test.go: wrong key length, unknown algorithm (both with adjusted key ids).
        assert!(
            NoteVerifier::parse(
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
            )
            .is_err()
        );
        assert_eq!(
            NoteVerifier::parse(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::UnsupportedAlgorithm(0x65))
        );
        assert_eq!(
            NoteSigner::from_seed("bad name", [0; 32]).map(|_| ()),
            Err(NoteError::InvalidName("bad name".into()))
        );
    }

    #[test]
    fn generated_keys_round_trip() {
        let signer = NoteSigner::generate("example.com/log").unwrap();
        let again = NoteSigner::parse_private_key(&signer.private_key()).unwrap();
        assert_eq!(again.verifier_key(), signer.verifier_key());
        let note = signer.sign("hello\n\nworld\n").unwrap();
        assert_eq!(
            open(
                &note,
                &[NoteVerifier::parse(&signer.verifier_key()).unwrap()]
            )
            .unwrap()
            .text,
            "hello\n\nworld\n"
        );
        assert_eq!(
            signer.sign("no newline"),
            Err(NoteError::TextMissingNewline)
        );
        assert!(matches!(
            signer.sign("tab\there\n"),
            Err(NoteError::ControlCharacter { offset: 3, code: 9 })
        ));
    }
}
