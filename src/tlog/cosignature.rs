//! C2SP tlog-cosignature v1 with Ed25519 (https://c2sp.org/tlog-cosignature): a witness's
//! statement that, as of a time, the checkpoint is the largest consistent tree it has
//! seen of the log. A cosignature is one more note signature line on the checkpoint:
//! `— <witness name> base64(key id ‖ u64 timestamp ‖ Ed25519 signature)`, the key id being
//! `SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4]` and the signed message
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint body.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ring::{
    digest::{SHA256, digest},
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};

use super::note::{self, NoteError, NoteVerifier};

/// The signature type byte of an Ed25519 cosignature key (tlog-cosignature §Format).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The key id of an Ed25519 cosigner named `name`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 34);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ALG_COSIGNATURE_V1);
    input.extend_from_slice(public_key);
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&hash.as_ref()[..4]);
    u32::from_be_bytes(id)
}

/// What a cosignature signs: the header, the time, the checkpoint body.
fn message(body: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{body}").into_bytes()
}

/// A witness's public key: its name and Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    public_key: [u8; 32],
}

impl WitnessKey {
    /// The witness `name` with `public_key`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Self {
        Self {
            name: name.to_owned(),
            public_key,
        }
    }

    /// Parses a verifier key `<name>+<hex key id>+<base64(0x04 ‖ key)>`.
    pub fn parse(vkey: &str) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::BadKey(format!("{:?}: {why}", vkey.trim()));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not <name>+<hex key id>+<base64 key>"));
        };
        note::check_name(name).map_err(|e| bad(&e.to_string()))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let (Some((&ALG_COSIGNATURE_V1, public)), 33) = (raw.split_first(), raw.len()) else {
            return Err(bad(if raw.first() == Some(&note::ALG_ED25519) {
                // signed-note: a log's key signs checkpoints, not cosignatures.
                "this is a log's note verifier key (type 0x01), not a witness's cosignature \
                 key (type 0x04): give the witness's key, the witness.vkey that `tidemark log \
                 witness` wrote in its --state-dir"
            } else {
                "not an Ed25519 cosignature key (type 0x04, 32 bytes)"
            }));
        };
        let public: [u8; 32] = public.try_into().map_err(|_| bad("wrong key length"))?;
        if let Some(why) = crate::signing::weak_ed25519(&public) {
            return Err(bad(&format!(
                "the Ed25519 key is {why}: cosignatures it \"verifies\" need no private key"
            )));
        }
        let witness = Self::new(name, public);
        // One spelling, as for a log's key (`note::NoteVerifier`): as signers write it.
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if id.len() != 8 || !id.bytes().all(hex) {
            return Err(bad("the key id must be 8 lower-case hex digits"));
        }
        if u32::from_str_radix(id, 16).ok() != Some(witness.key_id()) {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(witness)
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id its cosignatures carry.
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.public_key)
    }

    /// `<name>+<hex key id>+<base64(0x04 ‖ key)>`.
    pub fn verifier_key(&self) -> String {
        let mut raw = vec![ALG_COSIGNATURE_V1];
        raw.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id(), B64.encode(raw))
    }

    /// The time of a valid cosignature line by this witness over `body`, if `line` is one.
    pub fn verify_line(&self, body: &str, line: &note::NoteSignature) -> Option<u64> {
        if line.name != self.name || line.key_id != self.key_id() || line.signature.len() != 72 {
            return None;
        }
        let (time, signature) = line.signature.split_at(8);
        let timestamp = u64::from_be_bytes(time.try_into().ok()?);
        UnparsedPublicKey::new(&ED25519, self.public_key)
            .verify(&message(body, timestamp), signature)
            .ok()
            .map(|()| timestamp)
    }
}

/// The time a cosignature line states (its signature's first 8 bytes, big-endian), if it
/// is a cosignature/v1 line; not verified.
pub fn time_of(line: &str) -> Option<u64> {
    let line = note::parse_signature(line).ok()?;
    let time: [u8; 8] = line.signature.get(..8)?.try_into().ok()?;
    (line.signature.len() == 72).then_some(u64::from_be_bytes(time))
}

/// A witness that cosigns checkpoints with an Ed25519 key.
pub struct Cosigner {
    key: WitnessKey,
    pair: Ed25519KeyPair,
}

impl Cosigner {
    /// The witness `name` signing with the Ed25519 key of 32-byte `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, WitnessError> {
        note::check_name(name).map_err(|e| WitnessError::BadKey(e.to_string()))?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| WitnessError::BadKey("not an Ed25519 seed".to_owned()))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| WitnessError::BadKey("not an Ed25519 key".to_owned()))?;
        Ok(Self {
            key: WitnessKey::new(name, public),
            pair,
        })
    }

    /// The witness `name` signing with a state's Ed25519 signing key (its cosignatures
    /// are domain-separated from its DSSE signatures by their `cosignature/v1` header).
    pub fn from_key(name: &str, key: &crate::signing::SigningKey) -> Result<Self, WitnessError> {
        Self::from_seed(name, &key.seed())
    }

    /// This witness's public key.
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// The cosignature line (without its line feed) over checkpoint `body` at `timestamp`.
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let signature = self.pair.sign(&message(body, timestamp));
        let mut blob = self.key.key_id().to_be_bytes().to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        format!("— {} {}", self.key.name, B64.encode(blob))
    }
}

/// The distinct witnesses among `witnesses` whose valid cosignatures a checkpoint
/// `signed_note` (signed by `log`) carries. A witness named twice counts once, and so do
/// two names for one key: a quorum is of distinct cosigners. A cosignature line by one of
/// `witnesses` (its name and key id) that does not verify rejects the note, as C2SP
/// signed-note asks of a signature by a known key: something altered it.
pub fn cosigned_by<'w>(
    signed_note: &str,
    log: &NoteVerifier,
    witnesses: &'w [WitnessKey],
) -> Result<Vec<&'w WitnessKey>, NoteError> {
    let opened = note::open(signed_note, std::slice::from_ref(log))?;
    let mut distinct: Vec<&WitnessKey> = Vec::new();
    for w in witnesses {
        if !distinct
            .iter()
            .any(|d| d.name == w.name || d.public_key == w.public_key)
        {
            distinct.push(w);
        }
    }
    for w in &distinct {
        let altered = opened.unverified.iter().find(|line| {
            line.name == w.name
                && line.key_id == w.key_id()
                && w.verify_line(&opened.text, line).is_none()
        });
        if let Some(line) = altered {
            return Err(NoteError::InvalidSignature {
                name: line.name.clone(),
                key_id: line.key_id,
            });
        }
    }
    Ok(distinct
        .into_iter()
        .filter(|w| {
            opened
                .unverified
                .iter()
                .any(|line| w.verify_line(&opened.text, line).is_some())
        })
        .collect())
}

/// Why a witness key or cosignature is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The key is malformed.
    #[error("witness key {0}")]
    BadKey(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::{checkpoint::Checkpoint, note::NoteSigner};

    /// A witness key of small order would count forged cosignatures (R = identity, S = 0)
    /// toward a quorum: it is refused, as is such a log key.
    #[test]
    fn a_witness_or_log_key_of_small_order_is_refused() {
        let mut identity = [0; 32];
        identity[0] = 1;
        let vkey = WitnessKey::new("evil.example/witness", identity).verifier_key();
        let refused = WitnessKey::parse(&vkey).unwrap_err().to_string();
        assert!(refused.contains("small order"), "{refused}");
        let refused = note::NoteVerifier::new("evil.example/log", identity)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("small order"), "{refused}");
    }

    /// A witness key's id is read in one spelling, as a log key's is.
    /// A log's key given where a witness's is asked for is told by its type, and the
    /// key is quoted without the file's line ending.
    #[test]
    fn a_log_key_given_as_a_witness_key_says_which_it_is() {
        let log = NoteSigner::from_seed("example.com/log", [1; 32]).unwrap();
        let err = WitnessKey::parse(&format!("{}\n", log.verifier_key()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a log's note verifier key (type 0x01)"),
            "{err}"
        );
        assert!(!err.contains("\\n"), "{err}");
    }

    #[test]
    fn a_witness_key_id_is_read_in_lower_case_only() {
        // A key whose id has a letter in it (most have).
        let vkey = (0..=u8::MAX)
            .map(|seed| {
                Cosigner::from_seed("example.com/witness/AUS", &[seed; 32])
                    .unwrap()
                    .key()
                    .verifier_key()
            })
            .find(|vkey| {
                vkey.split('+')
                    .nth(1)
                    .is_some_and(|id| id.bytes().any(|b| b.is_ascii_lowercase()))
            })
            .unwrap();
        assert!(WitnessKey::parse(&vkey).is_ok());
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();
        let upper = format!("{name}+{}+{key}", id.to_ascii_uppercase());
        let refused = WitnessKey::parse(&upper).unwrap_err().to_string();
        assert!(refused.contains("lower-case"), "{refused}");
    }

    #[test]
    fn a_cosignature_verifies_over_the_checkpoint_body_and_nothing_else() {
        let log = NoteSigner::from_seed("example.com/log", [1; 32]).unwrap();
        let checkpoint = Checkpoint::new("example.com/log", 5, [9; 32]);
        let note = checkpoint.sign(&log).unwrap();
        let witness = Cosigner::from_seed("example.com/w1", &[2; 32]).unwrap();
        let other = Cosigner::from_seed("example.com/w2", &[3; 32]).unwrap();
        let line = witness.cosign(&checkpoint.to_body(), 1_700_000_000);
        let cosigned = format!("{note}{line}\n");
        let keys = [witness.key().clone(), other.key().clone()];
        let found = cosigned_by(&cosigned, &log.verifier(), &keys).unwrap();
        assert_eq!(found, vec![witness.key()]);
        // The same witness given twice counts once.
        let twice = [witness.key().clone(), witness.key().clone()];
        assert_eq!(
            cosigned_by(&cosigned, &log.verifier(), &twice)
                .unwrap()
                .len(),
            1
        );
        // The key round-trips through its verifier-key form.
        assert_eq!(
            WitnessKey::parse(&witness.key().verifier_key()).unwrap(),
            *witness.key()
        );
        // Over another checkpoint body the same line does not verify.
        let forged = Checkpoint::new("example.com/log", 5, [8; 32])
            .sign(&log)
            .unwrap();
        let forged = format!("{forged}{line}\n");
        // A known witness's cosignature that does not verify rejects the note (C2SP
        // signed-note); an unknown one's is left alone.
        assert!(matches!(
            cosigned_by(&forged, &log.verifier(), &keys),
            Err(NoteError::InvalidSignature { ref name, .. }) if name == "example.com/w1"
        ));
        assert!(
            cosigned_by(&forged, &log.verifier(), &[other.key().clone()])
                .unwrap()
                .is_empty()
        );
        // A note key (type 0x01) is not a witness key.
        assert!(WitnessKey::parse(&log.verifier_key()).is_err());
        // Nor is a key whose name signed-note forbids (its lines could not be parsed).
        for name in ["", "a witness", "a\twitness"] {
            let bad = WitnessKey::new(name, [5; 32]).verifier_key();
            assert!(WitnessKey::parse(&bad).is_err(), "{bad}");
        }
        assert!(Cosigner::from_seed("a witness", &[2; 32]).is_err());
    }
}
