//! The transparency log in the store: leaves appended in the writer's transaction, one
//! signed checkpoint per committed batch, and proofs read from a snapshot.
//!
//! Three tables (defined with the others in `store/mod.rs`): the encoded entries by
//! index, the hashes of every *perfect* subtree by (level, index) — the node at level
//! `L`, index `i` covers leaves `[i·2^L, (i+1)·2^L)` —, and the signed checkpoints by
//! tree size; leaf hash → index is held in memory ([`super::leaves`]). Any root,
//! inclusion or consistency proof is computed from O(log n) perfect subtrees
//! ([`crate::tlog::merkle`]); nothing scans the leaves.

use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use super::{AuditRecord, EnvelopeRecord, StoreError, leaves::LeafIndex};
use crate::{
    report::Category,
    tlog::{
        LogSigner,
        entry::{self, AuditEntry, Entry, EnvelopeEntry},
        merkle::{self, Hash, Subtrees, TreeError},
    },
};

/// Perfect subtrees read from a log-nodes table (the writer's or a snapshot's).
pub(super) struct Nodes<'a, T>(pub(super) &'a T);

impl<T: ReadableTable<(u32, u64), &'static [u8]>> Subtrees for Nodes<'_, T> {
    type Error = StoreError;

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        let missing = || StoreError::Corrupt(format!("log node ({level}, {index}) is missing"));
        let value = self.0.get((level, index))?.ok_or_else(missing)?;
        value.value().try_into().map_err(|_| missing())
    }
}

/// The log's tables, open in a write transaction.
pub(super) struct LogTables<'t> {
    entries: redb::Table<'t, u64, &'static [u8]>,
    nodes: redb::Table<'t, (u32, u64), &'static [u8]>,
    checkpoints: redb::Table<'t, u64, &'static str>,
    leaves: Arc<LeafIndex>,
    /// Leaves committed before this transaction.
    committed: u64,
}

/// A leaf appended: its index and its encoded entry.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Its index in the log (0, 1, 2, …).
    pub index: u64,
    /// The entry's bytes.
    pub entry: Vec<u8>,
}

impl<'t> LogTables<'t> {
    pub(super) fn open(
        tx: &'t redb::WriteTransaction,
        leaves: Arc<LeafIndex>,
    ) -> Result<Self, StoreError> {
        let entries = tx.open_table(super::LOG_ENTRIES)?;
        Ok(Self {
            committed: entries.len()?,
            entries,
            nodes: tx.open_table(super::LOG_NODES)?,
            checkpoints: tx.open_table(super::CHECKPOINTS)?,
            leaves,
        })
    }

    /// The number of leaves.
    pub(super) fn size(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len()?)
    }

    /// Appends `entry` as the next leaf, with every perfect subtree it completes.
    pub(super) fn append(&mut self, entry: &Entry) -> Result<Leaf, StoreError> {
        let bytes = entry.encode();
        let index = self.size()?;
        let leaf = merkle::leaf_hash(&bytes);
        let nodes = merkle::appended_nodes(index, leaf, &Nodes(&self.nodes))?;
        for (level, i, hash) in nodes {
            self.nodes.insert((level, i), hash.as_slice())?;
        }
        self.entries.insert(index, bytes.as_slice())?;
        Ok(Leaf {
            index,
            entry: bytes,
        })
    }

    /// The entry of leaf `index`.
    pub(super) fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(index)?.map(|v| v.value().to_vec()))
    }

    /// The index of the leaf whose entry is `entry`, if the log holds it.
    pub(super) fn find(&self, entry: &Entry) -> Result<Option<Leaf>, StoreError> {
        let bytes = entry.encode();
        let hash = merkle::leaf_hash(&bytes);
        let found = self
            .leaves
            .find(&hash, &self.nodes, (self.committed, self.size()?))?;
        Ok(found.map(|index| Leaf {
            index,
            entry: bytes,
        }))
    }

    /// Signs and stores the checkpoint of the tree as it now stands (of size 0 for an
    /// empty log), unless the latest stored checkpoint already covers it.
    pub(super) fn checkpoint(&mut self, signer: &LogSigner) -> Result<(), StoreError> {
        let size = self.size()?;
        let latest = self.checkpoints.last()?.map(|(k, _)| k.value());
        if latest == Some(size) {
            return Ok(());
        }
        let root = merkle::root(size, &Nodes(&self.nodes))?;
        let note = signer
            .sign(size, root)
            .map_err(|e| StoreError::Corrupt(format!("the checkpoint could not be signed: {e}")))?;
        self.checkpoints.insert(size, note.as_str())?;
        Ok(())
    }
}

/// The log's tables in a read transaction (a snapshot's, or its own).
pub(crate) struct LogView {
    pub(super) entries: redb::ReadOnlyTable<u64, &'static [u8]>,
    pub(super) nodes: redb::ReadOnlyTable<(u32, u64), &'static [u8]>,
    pub(super) leaves: Arc<LeafIndex>,
    pub(super) checkpoints: redb::ReadOnlyTable<u64, &'static str>,
    pub(super) cosignatures: redb::ReadOnlyTable<(u64, &'static str), &'static str>,
}

/// A signed checkpoint as stored: the tree size it covers and the note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Leaves the checkpoint covers.
    pub size: u64,
    /// The signed note (C2SP tlog-checkpoint), verbatim.
    pub note: String,
}

impl LogView {
    pub(super) fn open(
        tx: &redb::ReadTransaction,
        leaves: Arc<LeafIndex>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            entries: tx.open_table(super::LOG_ENTRIES)?,
            nodes: tx.open_table(super::LOG_NODES)?,
            leaves,
            checkpoints: tx.open_table(super::CHECKPOINTS)?,
            cosignatures: tx.open_table(super::COSIGNATURES)?,
        })
    }

    /// The number of leaves.
    pub(super) fn size(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len()?)
    }

    /// `note` with the cosignature lines held for the checkpoint of `size` leaves.
    fn cosigned(&self, size: u64, note: &str) -> Result<String, StoreError> {
        let mut note = note.to_owned();
        for item in self
            .cosignatures
            .range((size, "")..(size.saturating_add(1), ""))?
        {
            let (key, line) = item?;
            if key.value().0 == size {
                note.push_str(line.value());
                note.push('\n');
            }
        }
        Ok(note)
    }

    /// The newest signed checkpoint.
    pub(crate) fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        match self.checkpoints.last()? {
            Some((k, v)) => Ok(Some(StoredCheckpoint {
                size: k.value(),
                note: self.cosigned(k.value(), v.value())?,
            })),
            None => Ok(None),
        }
    }

    /// The signed checkpoint of exactly `size` leaves, if one was published.
    pub(crate) fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        match self.checkpoints.get(size)? {
            Some(v) => Ok(Some(StoredCheckpoint {
                size,
                note: self.cosigned(size, v.value())?,
            })),
            None => Ok(None),
        }
    }

    /// The entry of leaf `index`.
    pub(super) fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(index)?.map(|v| v.value().to_vec()))
    }

    /// The entries of leaves `start..end`.
    pub(super) fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.entries.range(start..end)? {
            out.push(item?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Indexes every leaf by its hash now rather than at the first lookup.
    pub(super) fn index_leaves(&self) -> Result<(), StoreError> {
        self.leaves.catch_up(&self.nodes, self.size()?)
    }

    /// The index of the leaf with hash `leaf_hash`.
    pub(super) fn index_of(&self, leaf_hash: &Hash) -> Result<Option<u64>, StoreError> {
        let size = self.size()?;
        self.leaves.find(leaf_hash, &self.nodes, (size, size))
    }

    /// The leaf whose entry is `entry`, if the log holds it.
    pub(super) fn find(&self, entry: &Entry) -> Result<Option<Leaf>, StoreError> {
        let bytes = entry.encode();
        Ok(self
            .index_of(&merkle::leaf_hash(&bytes))?
            .map(|index| Leaf {
                index,
                entry: bytes,
            }))
    }

    /// The root of the first `size` leaves.
    pub(super) fn root(&self, size: u64) -> Result<Hash, StoreError> {
        merkle::root(size, &Nodes(&self.nodes))
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub(crate) fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ProofRequestError> {
        merkle::inclusion_proof(index, size, &Nodes(&self.nodes)).map_err(ProofRequestError::from)
    }

    /// The consistency proof between the trees of `old` and `new` leaves.
    pub(super) fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, ProofRequestError> {
        merkle::consistency_proof(old, new, &Nodes(&self.nodes)).map_err(ProofRequestError::from)
    }
}

/// Why a proof could not be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofRequestError {
    /// The request names sizes or an index the log does not have.
    #[error("{0}")]
    OutOfRange(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TreeError<StoreError>> for ProofRequestError {
    fn from(err: TreeError<StoreError>) -> Self {
        match err {
            TreeError::Storage(e) => Self::Store(e),
            other => Self::OutOfRange(other.to_string()),
        }
    }
}

/// The entry of an accepted envelope, from its stored record and payload digest.
pub(crate) fn envelope_entry(
    sequence: u64,
    record: &EnvelopeRecord,
    payload_sha256: [u8; 32],
) -> Entry {
    let report_id = uuid::Uuid::from_slice(&record.report_id)
        .map(|id| id.to_string())
        .unwrap_or_default();
    Entry::Envelope(EnvelopeEntry {
        sequence,
        state: record.state.clone(),
        report_sha256: entry::sha256(report_id.as_bytes()),
        version: record.version,
        category: Category::from_pb(record.category)
            .map_or("", Category::label)
            .to_owned(),
        kind: record
            .kind()
            .map_or("unknown", super::EnvelopeKind::label)
            .to_owned(),
        accepted_at: record.accepted_at,
        payload_sha256,
    })
}

/// The entry of audit record `number` as it stands.
pub(crate) fn audit_entry(number: u64, record: &AuditRecord) -> Entry {
    Entry::Audit(AuditEntry {
        number,
        in_progress: record.in_progress,
        at: record.at,
        logged: if record.logged_at == 0 {
            record.at
        } else {
            record.logged_at
        },
        principal: record.principal.clone(),
        state: record.state.clone(),
        action: record.action.clone(),
        category: record.category.clone(),
        detail_sha256: entry::sha256(&[&record.detail_salt[..], record.detail.as_bytes()].concat()),
        count: record.count,
        owners: record
            .owners
            .iter()
            .map(|o| (o.owner.clone(), o.count))
            .collect(),
        counts_withheld: record.counts_withheld,
    })
}
