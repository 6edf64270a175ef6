//! Log checkpoints per C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>):
//! the note body `<origin>\n<tree size>\n<base64 root hash>\n[<extension>\n...]`,
//! its strict parsing, and signing/opening it as a C2SP signed note.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::Hash;
use super::note::{self, NoteError, NoteSigner, NoteVerifier};

/// Why a checkpoint body or signed checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The body does not end with a newline.
    #[error("checkpoint body must end with a newline")]
    MissingFinalNewline,
    /// Fewer than the three mandatory lines.
    #[error("checkpoint body has {0} line(s); it needs origin, tree size and root hash lines")]
    TooFewLines(usize),
    /// The origin is empty or contains a newline.
    #[error("checkpoint origin must be a non-empty single line")]
    InvalidOrigin,
    /// The tree size is not canonical decimal.
    #[error("checkpoint tree size {0:?} is not a decimal u64 without leading zeros")]
    InvalidSize(String),
    /// The root hash is not base64 of 32 bytes.
    #[error("checkpoint root hash {0:?} is not the standard base64 encoding of 32 bytes")]
    InvalidRootHash(String),
    /// An extension line is empty or contains a newline.
    #[error("checkpoint extension line {0} must be a non-empty single line")]
    InvalidExtension(usize),
    /// Signing or opening the note failed.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
}

/// Parses an ASCII decimal u64 with no sign and no leading zeros (except "0").
pub(super) fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// A signed tree head: the log's origin, tree size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, e.g. `example.com/log`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Merkle root of the first `size` leaves.
    pub root: Hash,
    /// Optional, opaque extension lines (the spec discourages them); usually empty.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: origin, size, base64 root, extension lines, each newline-terminated.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        body
    }

    /// Strictly parses a note text produced by [`Checkpoint::to_body`].
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let body = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines(lines.len()));
        };
        if origin.is_empty() {
            return Err(CheckpointError::InvalidOrigin);
        }
        let size =
            parse_decimal(size).ok_or_else(|| CheckpointError::InvalidSize((*size).to_owned()))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or_else(|| CheckpointError::InvalidRootHash((*root).to_owned()))?;
        if let Some(i) = extensions.iter().position(|e| e.is_empty()) {
            return Err(CheckpointError::InvalidExtension(i + 4));
        }
        let extensions = extensions.iter().map(|&e| e.to_owned()).collect();
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint, returning the signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if self.origin.is_empty() || self.origin.contains('\n') {
            return Err(CheckpointError::InvalidOrigin);
        }
        if let Some(i) = self
            .extensions
            .iter()
            .position(|e| e.is_empty() || e.contains('\n'))
        {
            return Err(CheckpointError::InvalidExtension(i + 4));
        }
        Ok(signer.sign(&self.to_body())?)
    }

    /// Opens a signed checkpoint note, requiring a valid signature by
    /// `verifier` (other signatures, e.g. witness cosignatures, are ignored),
    /// and parses its body. The caller should check that `origin` is the log
    /// it expects: the spec only recommends that the key name match it.
    pub fn open(signed_note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let opened = note::open(signed_note, std::slice::from_ref(verifier))?;
        Self::parse_body(&opened.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_body() {
        // The example in C2SP/C2SP tlog-checkpoint.md.
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::parse_body(body).unwrap();
        assert_eq!(
            (c.origin.as_str(), c.size, c.root[0]),
            ("example.com/behind-the-sofa", 20_852_163, 0x0a)
        );
        assert_eq!(c.to_body(), body);
    }

    #[test]
    fn strict_parsing() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        let ok = |b: &str| Checkpoint::parse_body(b);
        assert_eq!(ok(&format!("o\n0\n{root}\n")).unwrap().size, 0);
        let ext = ok(&format!("o\n1\n{root}\next a\next b\n")).unwrap();
        assert_eq!(ext.extensions, ["ext a", "ext b"]);
        assert_eq!(Checkpoint::parse_body(&ext.to_body()), Ok(ext));
        let bad = [
            (
                format!("o\n1\n{root}"),
                CheckpointError::MissingFinalNewline,
            ),
            ("o\n1\n".to_owned(), CheckpointError::TooFewLines(2)),
            (format!("\n1\n{root}\n"), CheckpointError::InvalidOrigin),
            (
                format!("o\n01\n{root}\n"),
                CheckpointError::InvalidSize("01".into()),
            ),
            (
                format!("o\n+1\n{root}\n"),
                CheckpointError::InvalidSize("+1".into()),
            ),
            (
                format!("o\n\n{root}\n"),
                CheckpointError::InvalidSize(String::new()),
            ),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                CheckpointError::InvalidSize("18446744073709551616".into()),
            ),
            (
                "o\n1\nAAAA\n".to_owned(),
                CheckpointError::InvalidRootHash("AAAA".into()),
            ),
            (
                format!("o\n1\n{}\n", &root[..43]),
                CheckpointError::InvalidRootHash(root[..43].into()),
            ),
            (
                format!("o\n1\n{root}\n\nx\n"),
                CheckpointError::InvalidExtension(4),
            ),
        ];
        for (body, err) in bad {
            assert_eq!(Checkpoint::parse_body(&body), Err(err), "{body:?}");
        }
    }

    #[test]
    fn sign_and_open() {
        let signer = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
        let other = NoteSigner::from_seed("example.com/log", [8; 32]).unwrap();
        let cp = Checkpoint::new("example.com/log", 42, [9; 32]);
        let note_text = cp.sign(&signer).unwrap();
        assert!(note_text.starts_with(&format!("{}\n— example.com/log ", cp.to_body())));
        assert_eq!(
            Checkpoint::open(&note_text, &signer.verifier()),
            Ok(cp.clone())
        );
        // Witness cosignature lines from unknown keys are ignored.
        let cosigned = format!(
            "{note_text}{}",
            &other.sign(&cp.to_body()).unwrap()[cp.to_body().len() + 1..]
        );
        assert_eq!(
            Checkpoint::open(&cosigned, &signer.verifier()),
            Ok(cp.clone())
        );
        assert!(matches!(
            Checkpoint::open(&note_text, &other.verifier()),
            Err(CheckpointError::Note(NoteError::NoTrustedSignature {
                unknown: 1
            }))
        ));
        let forged = note_text.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            Checkpoint::open(&forged, &signer.verifier()),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));
        let bad = Checkpoint::new("two\nlines", 1, [0; 32]);
        assert_eq!(bad.sign(&signer), Err(CheckpointError::InvalidOrigin));
    }
}
