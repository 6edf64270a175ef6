//! Offline inclusion proofs per C2SP tlog-proof (<https://c2sp.org/tlog-proof>):
//! header `c2sp.org/tlog-proof@v1`, optional `extra <base64>`, `index <N>`,
//! one base64 RFC 6962 inclusion-proof hash per line, a blank line, then the
//! signed checkpoint note verbatim.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::checkpoint::{Checkpoint, CheckpointError, parse_decimal};
use super::merkle::{Hash, ProofError, leaf_hash, verify_inclusion};
use super::note::NoteVerifier;

/// First line of every proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a tlog proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    /// The first line is not [`HEADER`] (it is the one held, cut to 64 characters).
    #[error("tlog proof must start with the line {HEADER:?}, exactly; this one starts with {0:?}")]
    MissingHeader(String),
    /// The `extra` line is not valid base64.
    #[error("tlog proof extra data is not valid standard base64")]
    InvalidExtra,
    /// No `index <N>` line where expected.
    #[error("tlog proof lacks the \"index <N>\" line after the header and optional extra line")]
    MissingIndex,
    /// The index is not canonical decimal.
    #[error("tlog proof index {0:?} is not a decimal u64 without leading zeros")]
    InvalidIndex(String),
    /// A proof line is not base64 of 32 bytes.
    #[error("tlog proof line {0} is not the standard base64 encoding of a 32-byte hash")]
    InvalidHash(usize),
    /// No blank line followed by a checkpoint.
    #[error("tlog proof has no blank line followed by a signed checkpoint")]
    MissingCheckpoint,
    /// The checkpoint's signature or body is invalid.
    #[error("tlog proof checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The entry is not included under the checkpoint.
    #[error("tlog proof does not show the entry at its index in the checkpoint's tree: {0}")]
    Inclusion(#[from] ProofError),
}

/// A parsed C2SP tlog proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Optional unauthenticated extra data (we carry the entry bytes here).
    pub extra: Option<Vec<u8>>,
    /// Zero-based leaf index of the entry.
    pub index: u64,
    /// Inclusion proof, from the leaf's sibling up to the root's child.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim (including cosignatures).
    pub checkpoint_note: String,
}

fn next_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (line, tail) = rest.split_once('\n')?;
    *rest = tail;
    Some(line)
}

impl TlogProof {
    /// The proof in its text format.
    pub fn encode(&self) -> String {
        let extra = self
            .extra
            .as_ref()
            .map(|e| format!("extra {}\n", B64.encode(e)));
        let hashes: String = self.hashes.iter().map(|h| B64.encode(h) + "\n").collect();
        format!(
            "{HEADER}\n{}index {}\n{hashes}\n{}",
            extra.unwrap_or_default(),
            self.index,
            self.checkpoint_note
        )
    }

    /// Strictly parses the text format. The checkpoint note is kept verbatim
    /// and only checked by [`TlogProof::verify`].
    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        let mut rest = text;
        if next_line(&mut rest) != Some(HEADER) {
            let first = text.split('\n').next().unwrap_or_default();
            return Err(TlogProofError::MissingHeader(
                first.chars().take(64).collect(),
            ));
        }
        let mut line = next_line(&mut rest).ok_or(TlogProofError::MissingIndex)?;
        let extra = match line.strip_prefix("extra ") {
            Some(b64) => {
                let extra = B64.decode(b64).map_err(|_| TlogProofError::InvalidExtra)?;
                line = next_line(&mut rest).ok_or(TlogProofError::MissingIndex)?;
                Some(extra)
            }
            None => None,
        };
        let index = line
            .strip_prefix("index ")
            .ok_or(TlogProofError::MissingIndex)?;
        let index =
            parse_decimal(index).ok_or_else(|| TlogProofError::InvalidIndex(index.to_owned()))?;
        let mut hashes = Vec::new();
        let mut line_no = 3 + usize::from(extra.is_some());
        loop {
            let line = next_line(&mut rest).ok_or(TlogProofError::MissingCheckpoint)?;
            if line.is_empty() {
                break;
            }
            let hash = B64.decode(line).ok().and_then(|h| Hash::try_from(h).ok());
            hashes.push(hash.ok_or(TlogProofError::InvalidHash(line_no))?);
            line_no += 1;
        }
        if rest.is_empty() {
            return Err(TlogProofError::MissingCheckpoint);
        }
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint_note: rest.to_owned(),
        })
    }

    /// Checks the checkpoint's signature by `verifier`, parses it, and checks
    /// that `entry` is leaf `index` of its tree. Returns the checkpoint; the
    /// caller should check its `origin`. `extra` is not used: pass it as
    /// `entry` to authenticate it.
    pub fn verify(
        &self,
        entry: &[u8],
        verifier: &NoteVerifier,
    ) -> Result<Checkpoint, TlogProofError> {
        let checkpoint = Checkpoint::open(&self.checkpoint_note, verifier)?;
        verify_inclusion(
            &leaf_hash(entry),
            self.index,
            checkpoint.size,
            &self.hashes,
            &checkpoint.root,
        )?;
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{MemoryTree, inclusion_proof};
    use super::super::note::{NoteError, NoteSigner};
    use super::*;

    fn setup() -> (NoteSigner, MemoryTree, Checkpoint) {
        let signer = NoteSigner::from_seed("example.com/log", [1; 32]).unwrap();
        let mut tree = MemoryTree::new();
        for i in 0..13u8 {
            tree.push(&[b'e', i]);
        }
        let cp = Checkpoint::new("example.com/log", tree.size(), tree.root());
        (signer, tree, cp)
    }

    fn proof_for(i: u8, tree: &MemoryTree, note: String) -> TlogProof {
        let hashes = inclusion_proof(u64::from(i), tree.size(), tree).unwrap();
        TlogProof {
            extra: Some(vec![b'e', i]),
            index: u64::from(i),
            hashes,
            checkpoint_note: note,
        }
    }

    #[test]
    fn round_trip_and_verify() {
        let (signer, tree, cp) = setup();
        let note = cp.sign(&signer).unwrap();
        for i in 0..13u8 {
            let proof = proof_for(i, &tree, note.clone());
            let text = proof.encode();
            assert!(text.starts_with(&format!(
                "{HEADER}\nextra {}\nindex {i}\n",
                B64.encode([b'e', i])
            )));
            assert!(text.ends_with(&format!("\n\n{note}")));
            let parsed = TlogProof::parse(&text).unwrap();
            assert_eq!(parsed, proof);
            let entry = parsed.extra.clone().unwrap();
            assert_eq!(parsed.verify(&entry, &signer.verifier()), Ok(cp.clone()));
        }
        let bare = TlogProof {
            extra: None,
            ..proof_for(0, &tree, note)
        };
        assert_eq!(TlogProof::parse(&bare.encode()), Ok(bare));
    }

    #[test]
    fn verify_rejects_wrong_inputs() {
        let (signer, tree, cp) = setup();
        let note = cp.sign(&signer).unwrap();
        let proof = proof_for(5, &tree, note.clone());
        let v = signer.verifier();
        assert_eq!(
            proof.verify(b"e\x06", &v),
            Err(TlogProofError::Inclusion(ProofError::RootMismatch))
        );
        let moved = TlogProof {
            index: 6,
            ..proof.clone()
        };
        assert!(matches!(
            moved.verify(b"e\x05", &v),
            Err(TlogProofError::Inclusion(_))
        ));
        let far = TlogProof {
            index: 13,
            ..proof.clone()
        };
        assert_eq!(
            far.verify(b"e\x05", &v),
            Err(TlogProofError::Inclusion(ProofError::IndexOutOfRange {
                index: 13,
                size: 13
            }))
        );
        let other = NoteSigner::from_seed("example.com/log", [2; 32]).unwrap();
        assert!(matches!(
            proof.verify(b"e\x05", &other.verifier()),
            Err(TlogProofError::Checkpoint(CheckpointError::Note(
                NoteError::NoTrustedSignature { .. }
            )))
        ));
        let forged = TlogProof {
            checkpoint_note: note.replacen("\n13\n", "\n12\n", 1),
            ..proof
        };
        assert!(matches!(
            forged.verify(b"e\x05", &v),
            Err(TlogProofError::Checkpoint(CheckpointError::Note(_)))
        ));
    }

    #[test]
    fn spec_example_parses() {
        // The example in C2SP/C2SP tlog-proof.md (its signatures are elided, so only parsing applies).
        let text = "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\nindex 73894\n\
            gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\nB95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n\
            EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\nRoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n\
            AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n\nexample.com/fancylog\n109482\n\
            sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n— example.com/fancylog hI2DJw[...]1roloI=\n";
        let p = TlogProof::parse(text).unwrap();
        assert_eq!((p.index, p.hashes.len()), (73894, 5));
        assert!(
            p.extra
                .unwrap()
                .starts_with(b"age-v1.2.1-darwin-arm64.tar.gz")
        );
        assert!(
            p.checkpoint_note
                .starts_with("example.com/fancylog\n109482\n")
        );
        assert_eq!(TlogProof::parse(text).unwrap().encode(), text);
    }

    #[test]
    fn parse_is_strict() {
        let h = B64.encode([0u8; 32]);
        let cases = [
            (
                "c2sp.org/tlog-proof@v2\nindex 0\n\ncp\n".to_owned(),
                TlogProofError::MissingHeader("c2sp.org/tlog-proof@v2".to_owned()),
            ),
            (
                format!("{HEADER} \nindex 0\n\ncp\n"),
                TlogProofError::MissingHeader(format!("{HEADER} ")),
            ),
            (
                format!("{HEADER}\nextra !!\nindex 0\n\ncp\n"),
                TlogProofError::InvalidExtra,
            ),
            (format!("{HEADER}\n\n\ncp\n"), TlogProofError::MissingIndex),
            (
                format!("{HEADER}\nindex 01\n\ncp\n"),
                TlogProofError::InvalidIndex("01".into()),
            ),
            (
                format!("{HEADER}\nindex -5\n\ncp\n"),
                TlogProofError::InvalidIndex("-5".into()),
            ),
            (
                format!("{HEADER}\nindex 0\n{h}\n{}\n\ncp\n", B64.encode([0u8; 64])),
                TlogProofError::InvalidHash(4),
            ),
            (
                format!("{HEADER}\nindex 0\nnot base64\n\ncp\n"),
                TlogProofError::InvalidHash(3),
            ),
            (
                format!("{HEADER}\nindex 0\n{h}\n"),
                TlogProofError::MissingCheckpoint,
            ),
            (
                format!("{HEADER}\nindex 0\n{h}\n\n"),
                TlogProofError::MissingCheckpoint,
            ),
        ];
        for (text, err) in cases {
            assert_eq!(TlogProof::parse(&text), Err(err), "{text:?}");
        }
    }
}
