//! The transparency log's formats and proofs, with no I/O: the RFC 9162 Merkle tree
//! ([`merkle`]), C2SP signed notes ([`note`]), C2SP checkpoints ([`checkpoint`]), C2SP
//! tlog proofs ([`proof`]), C2SP cosignatures ([`cosignature`]), and what a Tidemark leaf
//! commits to ([`entry`]). The store
//! keeps the tree (`store/log.rs`); [`LogSigner`] signs its checkpoints.

pub mod checkpoint;
pub mod cosignature;
pub mod entry;
pub mod merkle;
pub mod note;
pub mod proof;

use self::{
    checkpoint::{Checkpoint, CheckpointError},
    merkle::Hash,
    note::{NoteError, NoteSigner, NoteVerifier},
};

/// The log's identity: its origin (the checkpoint's first line, and the note key's
/// name) and the Ed25519 key that signs its checkpoints.
#[derive(Debug)]
pub struct LogSigner {
    origin: String,
    signer: NoteSigner,
}

impl LogSigner {
    /// The log named `origin`, signing with the Ed25519 key of 32-byte `seed`.
    pub fn new(origin: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        Ok(Self {
            origin: origin.to_owned(),
            signer: NoteSigner::from_seed(origin, seed)?,
        })
    }

    /// The log named `origin`, signing with `key` (the server's receipt key).
    pub fn from_key(origin: &str, key: &crate::signing::SigningKey) -> Result<Self, NoteError> {
        Self::new(origin, key.seed())
    }

    /// The origin line of every checkpoint.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The note verifier key, `<origin>+<hex key id>+<base64 key>` (C2SP signed-note).
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The verifier of this log's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The signed checkpoint of the tree of `size` leaves with `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String, CheckpointError> {
        Checkpoint::new(self.origin.clone(), size, root).sign(&self.signer)
    }
}
