//! The embedded store: one redb file holding everything the exchange keeps.
//!
//! - Every write transaction is durable when it commits (`Durability::Immediate`) and
//!   uses redb's two-phase commit, whose commit record a crash cannot forge.
//! - Submissions go through one writer thread (`writer.rs`) that batches concurrent
//!   envelopes into one transaction (group commit); a submitter is answered only after
//!   its batch is durable. Reads use read transactions (MVCC snapshots) and never wait
//!   for the writer.
//! - Table definitions are the constants below, in one place.
//! - Aggregates the counters cannot answer scan an in-memory columnar projection of the
//!   reports (`projection.rs`), which the writer keeps in step after each commit.

mod admin;
mod admission;
mod apply;
mod backup;
mod budget;
pub(crate) mod counters;
mod disk;
mod leaves;
mod log;
mod projection;
mod rebuild;
mod records;
mod restoration;
mod seen_keys;
mod snapshot;
mod trail;
mod writer;

use std::{
    path::Path,
    sync::{Arc, PoisonError},
};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

pub(crate) use self::{
    admin::{ACTIONS as ADMIN_ACTIONS, AdminApplied, AdminChange, AdminWriteError},
    apply::{Accepted, AppendError, NewEnvelope},
    budget::{BudgetCharge, BudgetError},
    log::{Leaf, LogView, ProofRequestError, StoredCheckpoint, audit_entry},
    projection::{POINT_ELSEWHERE, fixed_range, flag},
    records::{
        AuditRecord, EnvelopeKind, EnvelopeRecord, IssuedCertificate, OwnerReads, ReportHead,
        RevokedCertificate, VersionRef, revocation_key,
    },
    seen_keys::SeenKey,
    snapshot::Snapshot,
    writer::Stands,
};
pub use self::{
    backup::Contents as BackupContents,
    disk::DiskFailure,
    projection::Projection,
    records::{KeyRecord, StateRecord},
    restoration::RestoreMark,
    writer::{Writer, WriterThread},
};
use crate::{clock::Clock, config::StoreConfig, tlog::LogSigner};

/// The layout version this build reads and writes.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// The version of the aggregate counters' layout; a store whose `counters_version`
/// differs has its counters rebuilt from the reports when the server starts.
pub(crate) const COUNTERS_VERSION: u64 = 11;

/// The version of the transparency log's layout; a store without it (written before the
/// log existed) has its log built from its envelopes and audit records at start.
pub(crate) const LOG_VERSION: u64 = 1;

/// The first bytes of every redb database file (redb 4, `tree_store/page_store/header.rs`).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Store-wide facts: `schema_version`, `counters_version`, `log_version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The `meta` key of the store's fork, whose trail journal it writes (see `trail.rs`).
const TRAIL_FORK: &str = "trail_fork";
/// Accepted envelopes by sequence number (1, 2, 3, … with no gaps).
const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
/// Report version history by report UUID.
const REPORTS: TableDefinition<u128, &[u8]> = TableDefinition::new("reports");
/// Registered signing keys by key id.
const SIGNING_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
/// Live contributions: (state, category, first accepted at, report) for give-to-get.
const CONTRIBUTIONS: TableDefinition<(&str, i32, i64, u128), ()> =
    TableDefinition::new("contributions");
/// Reports by (category, incident day, report).
const BY_DATE: TableDefinition<(i32, i32, u128), ()> = TableDefinition::new("by_date");
/// Reports by (state, category, incident day, report).
const BY_STATE: TableDefinition<(&str, i32, i32, u128), ()> = TableDefinition::new("by_state");
/// Revoked client certificates by serial (hex).
const REVOKED_CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_certs");
/// Enrolled states by ISO alpha-3 code.
const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("states");
/// Certificates issued by this server, by serial (hex).
const ISSUED_CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("issued_certs");
/// The audit log by number (1, 2, 3, …).
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// (owning state, audit number) → how many of its reports that access returned.
const AUDIT_BY_OWNER: TableDefinition<(&str, u64), u64> = TableDefinition::new("audit_by_owner");
/// Aggregate counters (see [`counters`]): cell key → per-state sums, a row per month.
const COUNTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("counters");
/// The same counters a row per quarter (the cell key's month is the quarter's number),
/// brought up to date after the fact (see [`counters::catch_up_quarters`]).
const COUNTER_QUARTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("counter_quarters");
/// (category, quarter) whose quarter rows are behind its month rows.
const QUARTERS_BEHIND: TableDefinition<(u8, u32), ()> = TableDefinition::new("quarters_behind");
/// The transparency log's entries by leaf index (0, 1, 2, …; see `log.rs`).
const LOG_ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("log_entries");
/// Hashes of the log's perfect subtrees by (level, index).
const LOG_NODES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("log_nodes");
/// Leaf hash → leaf index, as stores kept it before the index moved to memory
/// (`leaves.rs`): deleted when such a store is opened.
const LOG_BY_HASH: TableDefinition<&[u8], u64> = TableDefinition::new("log_by_hash");
/// The key (SHA-256 of its SubjectPublicKeyInfo) of each client certificate a TLS
/// handshake presented, by (issuer id, serial) (`seen_keys.rs`).
const SEEN_KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("seen_keys");
/// Signed checkpoints (C2SP tlog-checkpoint notes) by tree size, one per batch.
const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");
/// Witnesses' cosignature lines by (tree size, witness name).
const COSIGNATURES: TableDefinition<(u64, &str), &str> = TableDefinition::new("cosignatures");
/// Server secrets by name, made with the store and never sent anywhere: `cell_key` (16
/// bytes), the key of reports' record keys (see [`counters::RecordKeys`]), and
/// `cursor_key` (32 bytes), the HMAC key that seals query cursors.
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Fee distributions kept by counters versions up to 6 (fee quartiles are now read from
/// the projection): deleted when the counters are rebuilt, which a server does at start
/// (so no store a backup reads from has it).
const FEES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fees");

/// Privacy budgets spent: (analyst SPIFFE ID, year) → micro-ρ (see `budget.rs`).
const BUDGETS: TableDefinition<(&str, i32), u64> = TableDefinition::new("budgets");

/// The name of the cell key secret in [`SECRETS`].
const CELL_KEY_SECRET: &str = "cell_key";
/// The name of the cursor key secret in [`SECRETS`].
const CURSOR_KEY_SECRET: &str = "cursor_key";

/// The key that seals query cursors (HMAC-SHA256).
fn cursor_key(
    secrets: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<ring::hmac::Key, StoreError> {
    let secret = secrets
        .get(CURSOR_KEY_SECRET)?
        .ok_or_else(|| StoreError::Corrupt("the cursor key secret is missing".to_owned()))?;
    Ok(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        secret.value(),
    ))
}

/// The record keys under the store's cell key secret.
fn record_keys(
    secrets: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<counters::RecordKeys, StoreError> {
    let secret = secrets
        .get(CELL_KEY_SECRET)?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .ok_or_else(|| StoreError::Corrupt("the cell key secret is missing".to_owned()))?;
    Ok(counters::RecordKeys::new(secret))
}

/// A handle on the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    keys: Arc<KeyCache>,
    /// The store file.
    path: Arc<std::path::PathBuf>,
    /// The columnar projection, once built.
    projection: Arc<ProjectionCell>,
    /// The trail journal, once the server has opened it.
    trail: Arc<trail::TrailCell>,
    /// The log's leaf hash → index.
    leaves: Arc<leaves::LeafIndex>,
}

/// Where the projection lives: built when the writer starts (or on first use by a store
/// without one), then changed only by the writer after each commit.
pub(crate) type ProjectionCell = std::sync::RwLock<Option<Projection>>;

/// The built projection, read-locked.
pub struct ProjectionGuard<'a>(std::sync::RwLockReadGuard<'a, Option<Projection>>);

impl std::ops::Deref for ProjectionGuard<'_> {
    type Target = Projection;

    fn deref(&self) -> &Projection {
        // Only made from a guard holding a projection (see `Store::projection`).
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("an empty projection guard"))
    }
}

/// The registered signing keys, held in memory: read on every submission, changed only
/// by an operator. Loaded on first use and dropped after each change commits; loading
/// holds the lock, so a load that raced a change is dropped with it.
#[derive(Default)]
struct KeyCache(std::sync::RwLock<Option<Arc<Vec<KeyRecord>>>>);

impl KeyCache {
    /// Drops the cached keys, to be read again on next use.
    fn forget(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Store {
    /// Opens the store file, creating it (and its directory) on first use. A new store
    /// is made whole under another name and only then renamed into place, so a start
    /// killed while making it leaves no store (the next start makes it again), not a
    /// part of one that no later start could open ("not a redb database").
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::check_path(&config.path)?;
        if !config.path.exists() {
            let mut name = config.path.file_name().unwrap_or_default().to_owned();
            name.push(".new");
            let making = config.path.with_file_name(name);
            // What a killed first start left: begun again.
            if making.exists() {
                std::fs::remove_file(&making).map_err(|e| StoreError::open(&making, e))?;
            }
            let fresh = StoreConfig {
                path: making.clone(),
                ..config.clone()
            };
            drop(Self::open_with(&fresh, |builder| builder.create(&making))?);
            std::fs::rename(&making, &config.path).map_err(|e| StoreError::open(&making, e))?;
        }
        Self::open_with(config, |builder| builder.create(&config.path))
    }

    /// Refuses a path that holds something other than a store, without opening or
    /// changing it: a symbolic link to nothing (a data volume not mounted, say: a new
    /// store would replace the link), a directory, a FIFO or a device (opening one could
    /// wait for ever), an empty file (a copy that failed), a file that is not a redb
    /// database. A new store is made only where there is nothing.
    pub fn check_path(path: &Path) -> Result<(), StoreError> {
        let refuse = |reason: &str| Err(StoreError::open(path, reason));
        if path.symlink_metadata().is_err() {
            return Ok(());
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return refuse(
                "it is a symbolic link to nothing (or a loop of links): mount or restore what \
                 it leads to, or name another store path",
            );
        };
        if meta.is_dir() {
            return refuse(
                "it is a directory, and the store is one file: move the directory away, or \
                 name another store path",
            );
        }
        if !meta.is_file() {
            return refuse(
                "it is not a regular file (a FIFO, a socket or a device): the store is one \
                 regular file; name another store path",
            );
        }
        let mut head = Vec::with_capacity(REDB_MAGIC.len());
        std::fs::File::open(path)
            .and_then(|file| {
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(file, REDB_MAGIC.len() as u64),
                    &mut head,
                )
            })
            .map_err(|e| StoreError::open(path, e))?;
        if head.is_empty() {
            return refuse(
                "it is an empty file, not a store (a copy or restore that failed?): a new store \
                 is made only where there is no file; restore it from a backup, or remove the \
                 empty file",
            );
        }
        if head != REDB_MAGIC {
            return refuse(
                "it is not a Tidemark store (no redb database begins this way): check the path; \
                 a store is restored from a backup with `tidemark restore`",
            );
        }
        Ok(())
    }

    /// Creates the store's directory, opens the database with `open` and readies its
    /// tables.
    fn open_with(
        config: &StoreConfig,
        open: impl FnOnce(&mut redb::Builder) -> Result<Database, redb::DatabaseError>,
    ) -> Result<Self, StoreError> {
        let path = &config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_dir_all(dir).map_err(|e| StoreError::open(path, e))?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_mib.saturating_mul(1024 * 1024));
        let new = !path.exists();
        let db = open(&mut builder).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Open {
                path: path.display().to_string(),
                reason: "another process has it open (a server already running on this data \
                         directory?): stop that one, or give this one another --data"
                    .to_owned(),
            },
            e => StoreError::open(path, e),
        })?;
        if new {
            // The store holds secrets (the cell key secret, the audit salts): a new one is
            // readable by its owner only, as backups are.
            backup::owner_only(path)?;
        }
        let store = Self {
            db: Arc::new(db),
            keys: Arc::default(),
            path: Arc::new(path.clone()),
            projection: Arc::default(),
            trail: Arc::default(),
            leaves: Arc::default(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Opens the store on a disk whose writes can be made to fail (see [`DiskFailure`]):
    /// the test hook for a full or failing disk.
    pub fn open_on_failing_disk(config: &StoreConfig) -> Result<(Self, DiskFailure), StoreError> {
        let switch = DiskFailure::default();
        let store = Self::open_with(config, |builder| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&config.path)?;
            builder.create_with_backend(disk::SwitchableDisk::new(file, &switch)?)
        })?;
        Ok((store, switch))
    }

    /// The layout version recorded in the file.
    pub fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table.get("schema_version")?.map(|v| v.value()))
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(other) => return Err(StoreError::Schema(other)),
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                    // A new store: its (empty) counters and log are current.
                    meta.insert("counters_version", COUNTERS_VERSION)?;
                    meta.insert("log_version", LOG_VERSION)?;
                }
            }
            // Create every table so that readers never meet a missing one.
            tx.open_table(ENVELOPES)?;
            tx.open_table(REPORTS)?;
            tx.open_table(SIGNING_KEYS)?;
            tx.open_table(CONTRIBUTIONS)?;
            tx.open_table(BY_DATE)?;
            tx.open_table(BY_STATE)?;
            tx.open_table(AUDIT)?;
            tx.open_table(AUDIT_BY_OWNER)?;
            tx.open_table(REVOKED_CERTS)?;
            tx.open_table(STATES)?;
            tx.open_table(ISSUED_CERTS)?;
            tx.open_table(COUNTERS)?;
            tx.open_table(COUNTER_QUARTERS)?;
            tx.open_table(QUARTERS_BEHIND)?;
            tx.open_table(LOG_ENTRIES)?;
            tx.open_table(LOG_NODES)?;
            tx.delete_table(LOG_BY_HASH)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(COSIGNATURES)?;
            tx.open_table(BUDGETS)?;
            tx.open_table(SEEN_KEYS)?;
            let mut secrets = tx.open_table(SECRETS)?;
            for (name, length) in [(CELL_KEY_SECRET, 16), (CURSOR_KEY_SECRET, 32)] {
                if secrets.get(name)?.is_none() {
                    let mut secret = vec![0u8; length];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                        .map_err(|_| {
                        StoreError::Corrupt("the system random generator failed".to_owned())
                    })?;
                    secrets.insert(name, secret.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A durable, two-phase-commit write transaction.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_two_phase_commit(true);
        Ok(tx)
    }

    /// Starts the group-commit writer thread: envelopes and audit records, each with
    /// its log entry, and one checkpoint signed by `log` per batch.
    pub fn start_writer(
        &self,
        clock: Clock,
        max_batch: usize,
        log: Arc<LogSigner>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<(Writer, WriterThread), StoreError> {
        let latest = self.envelope_count()?;
        // Built before the writer can commit anything, so it misses no change.
        self.build_projection()?;
        // Before the first receipt needs it.
        self.log()?.index_leaves()?;
        Writer::start(
            self.db.clone(),
            clock,
            max_batch,
            latest,
            (
                log,
                metrics,
                self.projection.clone(),
                self.keys.clone(),
                self.trail.clone(),
                self.leaves.clone(),
            ),
        )
    }

    /// Builds the columnar projection from the store unless it is built; returns the
    /// number of reports it holds and the seconds the build took (0 when built).
    pub fn build_projection(&self) -> Result<(usize, f64), StoreError> {
        let mut cell = self
            .projection
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = cell.as_ref() {
            return Ok((p.rows(), 0.0));
        }
        let started = std::time::Instant::now();
        let snapshot = self.snapshot()?;
        let keys = (snapshot.record_keys().clone(), snapshot.last_sequence()?);
        let built = Projection::build(keys, snapshot.heads()?)?;
        let rows = built.rows();
        *cell = Some(built);
        Ok((rows, started.elapsed().as_secs_f64()))
    }

    /// The columnar projection (built first if need be), read-locked: the writer waits
    /// to apply its next batch until the guard is dropped.
    pub fn projection(&self) -> Result<ProjectionGuard<'_>, StoreError> {
        loop {
            let guard = self
                .projection
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if guard.is_some() {
                return Ok(ProjectionGuard(guard));
            }
            drop(guard);
            self.build_projection()?;
        }
    }

    /// Readies the transparency log: builds it for a store written before it existed
    /// (every envelope by sequence, then every audit record by number) and makes sure a
    /// signed checkpoint covers it (of size 0 for a new store). Returns the number of
    /// leaves built (0 when the log was already current).
    pub(crate) fn prepare_log(&self, log: &LogSigner) -> Result<u64, StoreError> {
        let tx = self.begin_write()?;
        let built = {
            let mut meta = tx.open_table(META)?;
            let current = meta.get("log_version")?.map(|v| v.value()) == Some(LOG_VERSION);
            let mut tables = log::LogTables::open(&tx, self.leaves.clone())?;
            let mut built = 0;
            if !current {
                let envelopes = tx.open_table(ENVELOPES)?;
                for item in envelopes.iter()? {
                    let (sequence, value) = item?;
                    let record: EnvelopeRecord = decode(value.value())?;
                    let payload = crate::pb::Envelope::decode(record.envelope.as_slice())
                        .map_err(|e| {
                            StoreError::Corrupt(format!("envelope {}: {e}", sequence.value()))
                        })?
                        .payload;
                    let digest = crate::tlog::entry::sha256(&payload);
                    tables.append(&log::envelope_entry(sequence.value(), &record, digest))?;
                }
                let audit = tx.open_table(AUDIT)?;
                for item in audit.iter()? {
                    let (number, value) = item?;
                    let record: AuditRecord = decode(value.value())?;
                    tables.append(&log::audit_entry(number.value(), &record))?;
                }
                meta.insert("log_version", LOG_VERSION)?;
                built = tables.size()?;
            }
            tables.checkpoint(log)?;
            built
        };
        tx.commit()?;
        Ok(built)
    }

    /// Whether the aggregate counters match this build's layout (false for a store
    /// written before they existed, until [`Store::rebuild_counters`] runs).
    pub fn counters_current(&self) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table.get("counters_version")?.map(|v| v.value()) == Some(COUNTERS_VERSION))
    }

    /// Rebuilds every report's summary and the aggregate counters from the stored
    /// envelopes, in one transaction.
    /// Returns the number of reports counted.
    pub fn rebuild_counters(&self) -> Result<u64, StoreError> {
        let tx = self.begin_write()?;
        let counted = rebuild::counters(&tx)?;
        tx.open_table(META)?
            .insert("counters_version", COUNTERS_VERSION)?;
        tx.commit()?;
        // Summaries may have been rewritten: the projection is built again when next
        // needed.
        *self
            .projection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        Ok(counted)
    }

    /// A consistent read-only view of the whole store (an MVCC snapshot).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Snapshot::open(&self.db, &self.leaves)
    }

    /// A report's head as the store now stands, and the envelope of `sequence` when one
    /// is asked for: one short read transaction, let go when this returns. (A read
    /// transaction kept open keeps redb from reusing the pages every later commit frees,
    /// so the file grows with every write meanwhile: a check of a slow reader's items
    /// holds none between them.)
    pub(crate) fn current_head(
        &self,
        id: u128,
        sequence: Option<u64>,
    ) -> Result<(Option<ReportHead>, Option<EnvelopeRecord>), StoreError> {
        let tx = self.db.begin_read()?;
        let head = tx
            .open_table(REPORTS)?
            .get(id)?
            .map(|v| decode(v.value()))
            .transpose()?;
        let envelope = match sequence {
            Some(sequence) => tx
                .open_table(ENVELOPES)?
                .get(sequence)?
                .map(|v| decode(v.value()))
                .transpose()?,
            None => None,
        };
        Ok((head, envelope))
    }

    /// The number of accepted envelopes (the latest sequence number).
    pub fn envelope_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(ENVELOPES)?.len()?)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a consistent copy of the whole store to a new file at `out` (one read
    /// transaction: submissions go on meanwhile) and returns what it holds; `None` when
    /// `stop` was set before the copy was complete (`out` is then the caller's to delete).
    pub fn backup(
        &self,
        out: &Path,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<BackupContents>, StoreError> {
        backup::copy(&self.db, out, stop)
    }

    /// Fails when a running server has the store file at `path` open.
    pub fn ensure_not_open(path: &Path) -> Result<(), StoreError> {
        backup::ensure_not_open(path)
    }

    /// Makes the file at `path` readable by its owner only (a store or a backup holds
    /// secrets).
    pub fn owner_only(path: &Path) -> Result<(), StoreError> {
        backup::owner_only(path)
    }

    /// Removes backup copies a killed server left beside the store; returns how many.
    pub fn remove_backup_leftovers(&self) -> usize {
        backup::remove_leftovers(&self.path)
    }

    /// Checks a store file before it is restored: redb's integrity check and gap-free
    /// sequence numbers; returns what it holds. Do not call on a store that is open.
    pub fn check_file(path: &Path) -> Result<BackupContents, StoreError> {
        backup::check(path)
    }

    /// The accepted envelope with this sequence number.
    pub fn envelope(&self, sequence: u64) -> Result<Option<EnvelopeRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ENVELOPES)?;
        table.get(sequence)?.map(|v| decode(v.value())).transpose()
    }

    /// A report's version history.
    pub fn report_head(&self, id: Uuid) -> Result<Option<ReportHead>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REPORTS)?;
        table
            .get(id.as_u128())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// A registered signing key.
    pub fn signing_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .cached_keys()?
            .iter()
            .find(|k| k.key_id == key_id)
            .cloned())
    }

    /// Every registered signing key, of one state or all.
    pub fn signing_keys(&self, state: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .cached_keys()?
            .iter()
            .filter(|k| state.is_none_or(|s| s == k.state))
            .cloned()
            .collect())
    }

    /// Every registered signing key, from memory (see [`KeyCache`]).
    fn cached_keys(&self) -> Result<Arc<Vec<KeyRecord>>, StoreError> {
        let cache = &self.keys.0;
        if let Some(keys) = cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(keys.clone());
        }
        let mut slot = cache.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(keys) = slot.as_ref() {
            return Ok(keys.clone());
        }
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SIGNING_KEYS)?;
        let mut keys = Vec::new();
        for entry in table.iter()? {
            keys.push(decode::<KeyRecord>(entry?.1.value())?);
        }
        let keys = Arc::new(keys);
        *slot = Some(keys.clone());
        Ok(keys)
    }

    /// Drops the cached keys after a change to them committed.
    fn forget_keys(&self) {
        self.keys.forget();
    }

    /// This store's trail journal in `dir`: the journal of its fork (its backups carry
    /// the fork), `None` before a server of this build has started on it.
    pub(crate) fn trail_journal(
        &self,
        dir: &Path,
    ) -> Result<Option<std::path::PathBuf>, StoreError> {
        Ok(self.trail_fork()?.map(|fork| trail::path(dir, fork)))
    }

    /// The store's fork, for its trail journal ([`trail`]).
    fn trail_fork(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(META)?.get(TRAIL_FORK)?.map(|v| v.value()))
    }

    /// Gives the store a fork of its own (see [`trail`]) and returns it.
    fn start_fork(&self) -> Result<u64, StoreError> {
        let fork = trail::new_fork()?;
        let mut tx = self.begin_write()?;
        tx.set_two_phase_commit(true);
        tx.open_table(META)?.insert(TRAIL_FORK, fork)?;
        tx.commit()?;
        Ok(fork)
    }

    /// Hands the trail journal to the writer, which appends each batch's audit records.
    fn keep_trail(&self, journal: Option<trail::TrailJournal>) {
        *self.trail.lock().unwrap_or_else(PoisonError::into_inner) = journal;
    }

    /// Drops the columnar projection, to be built again from the store on next use:
    /// after a change outside the writer moved reports out of the aggregates.
    fn forget_projection(&self) {
        *self
            .projection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Logs the give-to-get rules (with one more checkpoint) unless the last rules logged
    /// are the same; returns whether it logged them.
    pub(crate) fn record_policy(
        &self,
        log: &LogSigner,
        policy: &crate::tlog::entry::PolicyEntry,
    ) -> Result<bool, StoreError> {
        // The rules without their `at` line, to compare.
        fn rules(entry: &[u8]) -> Vec<String> {
            String::from_utf8_lossy(entry)
                .lines()
                .filter(|l| !l.starts_with("at "))
                .map(str::to_owned)
                .collect()
        }
        let entry = crate::tlog::entry::Entry::Policy(policy.clone());
        let tx = self.begin_write()?;
        let logged = {
            let mut meta = tx.open_table(META)?;
            let mut tables = log::LogTables::open(&tx, self.leaves.clone())?;
            let last = match meta.get("policy_leaf")?.map(|v| v.value()) {
                Some(index) => tables.entry(index)?,
                None => None,
            };
            if last.is_some_and(|last| rules(&last) == rules(&entry.encode())) {
                None
            } else {
                let leaf = tables.append(&entry)?;
                meta.insert("policy_leaf", leaf.index)?;
                tables.checkpoint(log)?;
                Some(leaf.index + 1)
            }
        };
        tx.commit()?;
        // The trail journal covers the leaf too (it holds no audit record), so that the
        // next start does not find the journal short of the log.
        if let (Some(log_size), Some(journal)) = (
            logged,
            self.trail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut(),
        ) {
            journal.append(&[], log_size);
        }
        Ok(logged.is_some())
    }

    /// Keeps `line`, witness `name`'s cosignature of the checkpoint of `size` leaves
    /// (replacing an earlier one of the same witness for that size).
    ///
    /// A cosignature by `name` already held for `size` with a later time, not after
    /// `latest`, stays: its time is returned and nothing changes. (One held with a time
    /// past `latest` was kept before times were checked; it gives way.)
    pub(crate) fn add_cosignature(
        &self,
        size: u64,
        name: &str,
        line: &str,
        (time, latest): (u64, u64),
    ) -> Result<Option<u64>, StoreError> {
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(COSIGNATURES)?;
            let held = table
                .get((size, name))?
                .and_then(|held| crate::tlog::cosignature::time_of(held.value()));
            if let Some(held) = held.filter(|&held| held > time && held <= latest) {
                return Ok(Some(held));
            }
            table.insert((size, name), line)?;
        }
        tx.commit()?;
        Ok(None)
    }

    /// The transparency log as of now (a read transaction on its tables only).
    pub(crate) fn log(&self) -> Result<log::LogView, StoreError> {
        log::LogView::open(&self.db.begin_read()?, self.leaves.clone())
    }

    /// Registers a signing key. The same key for the same state again changes nothing
    /// and returns the stored record; for another state it is refused.
    pub fn register_signing_key(&self, record: &KeyRecord) -> Result<KeyRecord, KeyRegistryError> {
        match self.change(&AdminChange::RegisterKey(record.clone()))? {
            AdminApplied::Key(stored, _) => Ok(stored),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a signing key as of `at`, as a set-up step of a unit test.
    #[cfg(test)]
    pub(crate) fn revoke_key_for_tests(
        &self,
        key_id: &str,
        at: i64,
        reason: &str,
    ) -> Result<(), KeyRegistryError> {
        self.change(&AdminChange::RevokeKey {
            key_id: key_id.to_owned(),
            at,
            reason: reason.to_owned(),
        })
        .map(drop)
    }

    /// Revokes a certificate, as a set-up step of a unit test; returns the revocation
    /// that stands.
    #[cfg(test)]
    pub(crate) fn revoke_certificate_for_tests(
        &self,
        revocation: RevokedCertificate,
    ) -> Result<RevokedCertificate, KeyRegistryError> {
        match self.change(&AdminChange::RevokeCertificate(revocation))? {
            AdminApplied::Revoked(record, _) => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// Counts reports of `state` and `category` first accepted at `times` as its
    /// contributions (the index the give-to-get policy reads), as a set-up step of a
    /// unit test.
    #[cfg(test)]
    pub(crate) fn contribute_for_tests(
        &self,
        state: &str,
        category: i32,
        times: &[i64],
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut contributions = tx.open_table(CONTRIBUTIONS)?;
            for (id, at) in (0u128..).zip(times) {
                contributions.insert((state, category, *at, id), ())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Applies an administrative change in a durable transaction of its own, without an
    /// audit record: for setting a store up before a server runs. A running server's
    /// changes go through its writer ([`Writer::admin_blocking`]), each with its record.
    fn change(&self, change: &AdminChange) -> Result<AdminApplied, KeyRegistryError> {
        let tx = self.begin_write()?;
        let applied = admin::apply(&tx, change)??;
        {
            let mut t = apply::Tables::open(&tx, &self.leaves)?;
            let mut deltas = counters::Deltas::new(t.record_keys.clone());
            apply::follow_admin(&tx, &mut t, &mut deltas, &applied)?;
            t.write_counters(deltas)?;
        }
        tx.commit().map_err(StoreError::from)?;
        if change.touches_keys() {
            self.forget_keys();
            self.forget_projection();
        }
        Ok(applied)
    }
}

/// A change answered with what another kind of change leaves: cannot happen.
fn unexpected(applied: &AdminApplied) -> KeyRegistryError {
    KeyRegistryError::Store(StoreError::Corrupt(format!(
        "an administrative change left {applied:?}"
    )))
}

impl Store {
    fn get<M: Message + Default>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<M>, StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(table)?
            .get(key)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn all<M: Message + Default>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<M>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table)?;
        table
            .iter()?
            .map(|entry| decode(entry?.1.value()))
            .collect()
    }

    /// Every revoked client certificate.
    pub fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>, StoreError> {
        self.all(REVOKED_CERTS)
    }

    /// The record of an enrolled state.
    pub fn state(&self, code: &str) -> Result<Option<StateRecord>, StoreError> {
        self.get(STATES, code)
    }

    /// Writes a state's record.
    pub fn put_state(&self, record: &StateRecord) -> Result<(), StoreError> {
        self.change(&AdminChange::State(record.clone()))
            .map(|_| ())
            .map_err(only_store)
    }

    /// Every enrolled state.
    pub fn states(&self) -> Result<Vec<StateRecord>, StoreError> {
        self.all(STATES)
    }

    /// Every certificate this server issued.
    pub fn issued_certificates(&self) -> Result<Vec<IssuedCertificate>, StoreError> {
        self.all(ISSUED_CERTS)
    }

    /// Records a client certificate of the development PKI (PEM) as issued through this
    /// server, unless its serial is recorded already: `admin certs`, the expiry warnings
    /// and metrics, and `admin revoke` then know the certificates `serve` made on its
    /// first run. Whether it was recorded now; an error when it is no client certificate
    /// of `trust_domain`.
    pub fn record_development_certificate(
        &self,
        certificate_pem: &str,
        trust_domain: &str,
    ) -> Result<bool, StoreError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        let unusable = |e: String| StoreError::Corrupt(format!("a development certificate: {e}"));
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| unusable(e.to_string()))?;
        let peer = crate::identity::PeerIdentity::from_certificate(der.as_ref(), trust_domain)
            .map_err(|e| unusable(e.to_string()))?;
        if self
            .issued_certificates()?
            .iter()
            .any(|c| c.serial == peer.serial())
        {
            return Ok(false);
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| unusable(e.to_string()))?;
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
        let record = IssuedCertificate::of(&peer, peer.not_before(), fingerprint.as_ref().to_vec());
        self.change(&AdminChange::Issued(record))
            .map(|_| true)
            .map_err(only_store)
    }

    /// A certificate of the key with this fingerprint that was revoked because the key was
    /// compromised (RFC 5280 reason keyCompromise), if any, named by serial and issuer: such a key is not certified
    /// again ([`Self::compromised_keys`]).
    pub fn compromised_key(&self, fingerprint: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(self.compromised_keys()?.remove(fingerprint))
    }

    /// The keys (SHA-256 of their SubjectPublicKeyInfo) reported compromised, each with
    /// the revocation that says so ([`RevokedCertificate::named`]: its serial, and its
    /// issuer when it names one): a certificate revoked as compromised — of one issuer, or
    /// a serial of every issuer — makes the key of each certificate it covers that is
    /// known here (from another revocation of it that presented the certificate, or from
    /// this server's record of what it issued) compromised. Serials are unique per
    /// issuer only: another issuer's certificate of the serial is not covered (a record
    /// that names no issuer, made before issuers were kept, is).
    pub fn compromised_keys(
        &self,
    ) -> Result<std::collections::HashMap<Vec<u8>, String>, StoreError> {
        let revoked = self.revoked_certificates()?;
        let compromised: Vec<&RevokedCertificate> =
            revoked.iter().filter(|r| r.compromised()).collect();
        let covered = |serial: &str, issuer: &str| {
            compromised.iter().find(|r| {
                r.serial == serial
                    && (r.issuer.is_empty() || issuer.is_empty() || r.issuer == issuer)
            })
        };
        let issued = self.issued_certificates()?;
        let known = revoked
            .iter()
            .map(|r| (&r.key_fingerprint, &r.serial, &r.issuer))
            .chain(
                issued
                    .iter()
                    .map(|c| (&c.key_fingerprint, &c.serial, &c.issuer)),
            );
        Ok(known
            .filter(|(key, _, _)| !key.is_empty())
            .filter_map(|(key, serial, issuer)| {
                Some((key.clone(), covered(serial, issuer)?.named()))
            })
            .collect())
    }
}

/// The store failure of a change the key registry cannot refuse.
fn only_store(e: KeyRegistryError) -> StoreError {
    match e {
        KeyRegistryError::Store(e) => e,
        other => StoreError::Corrupt(other.to_string()),
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Whether the trail journal at `path` is there: a file cut inside its first two lines
/// (or empty) is not; one that cannot be read as a journal is (its start says why).
pub(crate) fn trail_present(path: &Path) -> Result<bool, StoreError> {
    Ok(trail::read(path)?.is_some())
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    /// The store file could not be opened.
    Open {
        /// The store file.
        path: String,
        /// Why it could not be opened.
        reason: String,
    },
    #[error(
        "the store was written by a different Tidemark version (schema {0}, this build uses \
         {SCHEMA_VERSION}); use a matching build or restore from backup"
    )]
    /// The file has a layout this build does not read.
    Schema(u64),
    #[error(
        "a stored record could not be decoded ({0}): the store file is damaged; restore it \
         from a backup (a backup being restored: use another)"
    )]
    /// A stored record could not be read.
    Corrupt(String),
    #[error("store error: {0}")]
    /// redb failed.
    Redb(#[from] redb::Error),
    #[error("the audit trail journal {path}: {reason}")]
    /// The trail journal beside the access journal could not be read or written.
    Trail {
        /// The journal file.
        path: String,
        /// What is wrong, and what to do.
        reason: String,
    },
}

impl StoreError {
    /// Whether the disk under the store failed (full, or an I/O error). redb then refuses
    /// every later write until the database is opened again.
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            Self::Redb(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Backend(_))
        )
    }

    pub(crate) fn open(path: &Path, reason: impl std::fmt::Display) -> Self {
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

/// Why a signing-key change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRegistryError {
    #[error("signing key {key_id} is already registered to {state}")]
    OtherState { key_id: String, state: String },
    #[error("no signing key has id {0}; list keys with `tidemark admin keys`")]
    Unknown(String),
    #[error(
        "signing key {key_id} of {state} was revoked as of {} ({reason}), and a revoked key \
         is never trusted again: make a new key (`tidemark keygen`) and register that",
        crate::clock::format_time(*at)
    )]
    Revoked {
        key_id: String,
        state: String,
        at: i64,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::TransactionError> for KeyRegistryError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Store(e.into())
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableHandle};

    use super::{
        AdminChange, COSIGNATURES, IssuedCertificate, LOG_BY_HASH, RevokedCertificate, Store,
    };
    use crate::{config::StoreConfig, tlog::cosignature::Cosigner};

    /// A store from before the leaf index moved to memory loses its table of it when
    /// opened.
    #[test]
    fn an_older_stores_leaf_hash_table_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::in_dir(dir.path());
        drop(Store::open(&config).unwrap());
        let tables = |db: &redb::Database| -> Vec<String> {
            let tx = db.begin_read().unwrap();
            let names = tx.list_tables().unwrap();
            names.map(|t| t.name().to_owned()).collect()
        };
        {
            let db = redb::Database::open(&config.path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(LOG_BY_HASH)
                .unwrap()
                .insert([1u8; 32].as_slice(), 0)
                .unwrap();
            tx.commit().unwrap();
            assert!(tables(&db).contains(&"log_by_hash".to_owned()));
        }
        let store = Store::open(&config).unwrap();
        assert!(!tables(&store.db).contains(&"log_by_hash".to_owned()));
    }

    /// A certificate revoked as compromised makes the keys compromised of the
    /// certificates it covers only: of its issuer, or of every issuer for a serial alone —
    /// not another issuer's certificate of the same serial (serials are unique per issuer).
    #[test]
    fn a_compromise_covers_its_own_issuers_certificate_of_the_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let (ours, partner) = ("a".repeat(64), "b".repeat(64));
        let issued = IssuedCertificate {
            serial: "1fa0".to_owned(),
            spiffe_id: "spiffe://tidemark.local/state/AUS/node/n".to_owned(),
            not_after: 2_000_000_000,
            issued_at: 1,
            key_fingerprint: vec![7; 32],
            issuer: ours.clone(),
        };
        store.change(&AdminChange::Issued(issued)).unwrap();
        let compromise = |issuer: &str| RevokedCertificate {
            serial: "1fa0".to_owned(),
            reason: 1,
            reason_name: "key-compromise".to_owned(),
            revoked_at: 100,
            issuer: issuer.to_owned(),
            issuer_name: if issuer.is_empty() {
                String::new()
            } else {
                format!("CN={issuer}")
            },
            ..RevokedCertificate::default()
        };
        store
            .revoke_certificate_for_tests(compromise(&partner))
            .unwrap();
        assert_eq!(
            store.compromised_key(&[7; 32]).unwrap(),
            None,
            "another issuer's"
        );
        store
            .revoke_certificate_for_tests(compromise(&ours))
            .unwrap();
        assert_eq!(
            store.compromised_key(&[7; 32]).unwrap(),
            Some(format!("1fa0 of CN={ours}")),
            "named with its issuer"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        store
            .change(&AdminChange::Issued(IssuedCertificate {
                key_fingerprint: vec![8; 32],
                serial: "2b".to_owned(),
                issuer: ours,
                ..IssuedCertificate::default()
            }))
            .unwrap();
        store
            .revoke_certificate_for_tests(RevokedCertificate {
                serial: "2b".to_owned(),
                ..compromise("")
            })
            .unwrap();
        assert_eq!(
            store.compromised_key(&[8; 32]).unwrap().as_deref(),
            Some("2b"),
            "every issuer's"
        );
    }

    /// A store another process (or this one) has open is refused, saying what to do.
    #[test]
    fn a_store_already_open_is_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::in_dir(dir.path());
        let _open = Store::open(&config).unwrap();
        let Err(refused) = Store::open(&config) else {
            panic!("a store was opened twice");
        };
        assert!(
            refused
                .to_string()
                .contains("stop that one, or give this one another --data"),
            "{refused}"
        );
    }

    /// A first start killed while making the store leaves only a `.new` file, which the
    /// next start makes again; an existing store that cannot be read is never replaced.
    #[test]
    fn a_store_is_made_whole_before_it_takes_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::in_dir(dir.path());
        let making = dir.path().join("tidemark.redb.new");
        // What a killed first start left: the beginning of a file.
        std::fs::write(&making, [0u8; 4096]).unwrap();
        drop(Store::open(&config).unwrap());
        assert!(config.path.is_file());
        assert!(!making.exists());
        // Opened again, it is the same store.
        drop(Store::open(&config).unwrap());
        // A store file that is not one is refused, and kept.
        std::fs::write(&config.path, [0u8; 4096]).unwrap();
        assert!(Store::open(&config).is_err());
        assert_eq!(std::fs::read(&config.path).unwrap(), [0u8; 4096]);
    }

    /// A witness's held cosignature gives way only to a later one, unless its own time is
    /// past the limit given (kept before times were checked).
    #[test]
    fn a_held_cosignature_gives_way_only_to_a_later_one_or_if_its_time_is_to_come() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let name = "log.test/witness/AUS";
        let witness = Cosigner::from_seed(name, &[7; 32]).unwrap();
        let line = |time| witness.cosign("log.test\n1\nAAAA\n", time);
        let limit = 1_000;
        assert_eq!(
            store
                .add_cosignature(1, name, &line(100), (100, limit))
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .add_cosignature(1, name, &line(50), (50, limit))
                .unwrap(),
            Some(100)
        );
        assert_eq!(
            store
                .add_cosignature(1, name, &line(200), (200, limit))
                .unwrap(),
            None
        );
        let tx = store.begin_write().unwrap();
        tx.open_table(COSIGNATURES)
            .unwrap()
            .insert((1, name), line(u64::MAX).as_str())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            store
                .add_cosignature(1, name, &line(50), (50, limit))
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .add_cosignature(1, name, &line(40), (40, limit))
                .unwrap(),
            Some(50)
        );
    }
}
