//! The embedded store: one redb file holding everything the exchange keeps.
//!
//! Every write transaction is durable when it commits (`Durability::Immediate`) and uses
//! redb's two-phase commit, whose commit record cannot be forged by a process crash.
//! Table definitions live here, as named constants, in one place.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::config::StoreConfig;

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Store-wide facts: `schema_version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A handle on the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens the store file, creating it (and its directory) on first use.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let path = &config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::open(path, e))?;
        }
        let db = Database::builder()
            .set_cache_size(config.cache_mib.saturating_mul(1024 * 1024))
            .create(path)
            .map_err(|e| StoreError::open(path, e))?;
        let store = Self { db: Arc::new(db) };
        store.init_schema()?;
        Ok(store)
    }

    /// The layout version recorded in the file.
    pub fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get("schema_version")?.map(|v| v.value()))
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            Some(SCHEMA_VERSION) => return Ok(()),
            Some(found) => return Err(StoreError::Schema(found)),
            None => {}
        }
        let tx = self.begin_write()?;
        tx.open_table(META)?
            .insert("schema_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// A durable, two-phase-commit write transaction.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_two_phase_commit(true);
        Ok(tx)
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "the store was written by a different Tidemark version (schema {0}, this build uses \
         {SCHEMA_VERSION}); use a matching build or restore from backup"
    )]
    Schema(u64),
    #[error("store error: {0}")]
    Redb(#[from] redb::Error),
}

impl StoreError {
    fn open(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self::Open {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
