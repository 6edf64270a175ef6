//! Online backup: a consistent copy of the whole store, taken from one read transaction
//! while the writer goes on (redb has no backup API; its maintainers' advice is a copy
//! from inside the process through a read transaction), and the checks a restore makes.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};

use super::{
    AUDIT, AUDIT_BY_OWNER, BUDGETS, BY_DATE, BY_STATE, CHECKPOINTS, CONTRIBUTIONS, COSIGNATURES,
    COUNTER_QUARTERS, COUNTERS, ENVELOPES, ISSUED_CERTS, LOG_ENTRIES, LOG_NODES, META,
    QUARTERS_BEHIND, REPORTS, REVOKED_CERTS, SECRETS, SEEN_KEYS, SIGNING_KEYS, STATES, StoreError,
};

/// What a backup (or a store being restored) holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// Accepted envelopes; their sequence numbers are 1 ..= this, without gaps.
    pub envelopes: u64,
    /// The last sequence number (equal to `envelopes` in a sound store).
    pub last_sequence: u64,
    /// Audit records.
    pub audit_records: u64,
    /// Leaves of the transparency log.
    pub log_size: u64,
    /// The latest signed checkpoint (C2SP tlog-checkpoint note), if any.
    pub checkpoint: String,
    /// Reports (each with all its versions, retracted or not) per owning state.
    pub reports_by_state: std::collections::BTreeMap<String, u64>,
    /// When its newest record was made (Unix seconds): the later of its last envelope's
    /// acceptance and its last audit record; 0 for an empty store. A backup is taken
    /// after it, which `restore` holds its manifest's time to.
    pub newest_record_at: i64,
}

/// Every table of the store, copied by [`copy`]: a store holding any other table is
/// refused, so that a table added without being listed here cannot be left out.
macro_rules! each_table {
    ($m:ident) => {
        $m!(
            META,
            ENVELOPES,
            REPORTS,
            SIGNING_KEYS,
            CONTRIBUTIONS,
            BY_DATE,
            BY_STATE,
            REVOKED_CERTS,
            STATES,
            ISSUED_CERTS,
            AUDIT,
            AUDIT_BY_OWNER,
            COUNTERS,
            COUNTER_QUARTERS,
            QUARTERS_BEHIND,
            LOG_ENTRIES,
            LOG_NODES,
            CHECKPOINTS,
            COSIGNATURES,
            SECRETS,
            BUDGETS,
            SEEN_KEYS
        )
    };
}

/// Rows copied between two looks at the stop flag.
const ROWS_BETWEEN_CHECKS: u32 = 4096;

/// Copies every table of `source` (one read transaction: a consistent point) into a new
/// store file at `out`, and returns what it holds; `None`, with `out` left to the caller
/// to delete, once `stop` is set (looked at every few thousand rows).
pub(super) fn copy(
    source: &Database,
    out: &Path,
    stop: &AtomicBool,
) -> Result<Option<Contents>, StoreError> {
    let rtx = source.begin_read()?;
    let known: Vec<&str> = {
        macro_rules! names {
            ($($t:ident),*) => { vec![$($t.name()),*] };
        }
        each_table!(names)
    };
    for table in rtx.list_tables()? {
        if !known.contains(&table.name()) {
            return Err(StoreError::Corrupt(format!(
                "the store holds a table the backup does not know: {}",
                table.name()
            )));
        }
    }
    // Readable by the owner only from its creation: the copy holds the store's secrets,
    // and the data directory may be readable by others.
    create_owner_only(out)?;
    let target = Database::create(out).map_err(|e| StoreError::open(out, e))?;
    let mut wtx = target.begin_write()?;
    wtx.set_two_phase_commit(true);
    {
        let mut rows = 0u32;
        macro_rules! copy_tables {
            ($($t:ident),*) => {
                $(
                    let src = rtx.open_table($t)?;
                    let mut dst = wtx.open_table($t)?;
                    for entry in src.iter()? {
                        rows = rows.wrapping_add(1);
                        if rows % ROWS_BETWEEN_CHECKS == 0 && stop.load(Ordering::Relaxed) {
                            return Ok(None);
                        }
                        let (k, v) = entry?;
                        dst.insert(k.value(), v.value())?;
                    }
                )*
            };
        }
        each_table!(copy_tables);
    }
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    wtx.commit()?;
    contents(&target).map(Some)
}

/// What the store `db` holds.
pub(super) fn contents(db: &Database) -> Result<Contents, StoreError> {
    let tx = db.begin_read()?;
    let envelopes = tx.open_table(ENVELOPES)?;
    let checkpoints = tx.open_table(CHECKPOINTS)?;
    let audit = tx.open_table(AUDIT)?;
    let mut newest_record_at = 0;
    if let Some((_, last)) = envelopes.last()? {
        let last: super::EnvelopeRecord = super::decode(last.value())?;
        newest_record_at = last.accepted_at;
    }
    if let Some((_, last)) = audit.last()? {
        let last: super::AuditRecord = super::decode(last.value())?;
        newest_record_at = newest_record_at.max(last.at);
    }
    let mut reports_by_state = std::collections::BTreeMap::new();
    for head in tx.open_table(REPORTS)?.iter()? {
        let head: super::ReportHead = super::decode(head?.1.value())?;
        *reports_by_state.entry(head.state).or_insert(0) += 1;
    }
    Ok(Contents {
        envelopes: envelopes.len()?,
        last_sequence: envelopes.last()?.map_or(0, |(k, _)| k.value()),
        audit_records: audit.len()?,
        log_size: tx.open_table(LOG_ENTRIES)?.len()?,
        checkpoint: checkpoints
            .last()?
            .map(|(_, v)| v.value().to_owned())
            .unwrap_or_default(),
        reports_by_state,
        newest_record_at,
    })
}

/// Fails when a process (a running server) has the store file at `path` open: redb
/// locks the file while a database is open.
///
/// redb holds an exclusive advisory lock (`flock`) on the file while it is open; this
/// tries the same lock without opening the database, so the file is not touched.
pub(super) fn ensure_not_open(path: &Path) -> Result<(), StoreError> {
    let Ok(file) = std::fs::File::open(path) else {
        // Missing or unreadable: nothing is using it that we could stop.
        return Ok(());
    };
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Open {
            path: path.display().to_string(),
            reason: "a running server has it open; stop that server first".to_owned(),
        }),
        Ok(()) | Err(std::fs::TryLockError::Error(_)) => Ok(()),
    }
}

/// Creates the empty file `path`, readable by its owner only (refusing one that exists).
fn create_owner_only(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::open(path, e))
}

/// Only the owner may read a file that holds the store's secrets.
pub(super) fn owner_only(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::open(path, e))?;
    }
    Ok(())
}

/// Removes copies that a backup left beside the store at `store` when the server was
/// killed while streaming one (`<store>.backup-<time>.tmp`); returns how many.
pub(super) fn remove_leftovers(store: &Path) -> usize {
    let (Some(dir), Some(stem)) = (store.parent(), store.file_stem()) else {
        return 0;
    };
    let prefix = format!("{}.backup-", stem.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && path.extension().is_some_and(|x| x == "tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Opens the store file at `path`, runs redb's integrity check (which also repairs what
/// a crash left), and returns what it holds.
pub(super) fn check(path: &Path) -> Result<Contents, StoreError> {
    let mut db = Database::open(path).map_err(|e| StoreError::open(path, e))?;
    let sound = db
        .check_integrity()
        .map_err(|e| StoreError::Corrupt(format!("the integrity check failed: {e}")))?;
    if !sound {
        return Err(StoreError::Corrupt(
            "the integrity check found damage (repaired in place; take another backup)".to_owned(),
        ));
    }
    let contents = contents(&db)?;
    if contents.envelopes != contents.last_sequence {
        return Err(StoreError::Corrupt(format!(
            "{} envelopes but the last sequence number is {}: sequence numbers have gaps",
            contents.envelopes, contents.last_sequence
        )));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A copy told to stop (its caller gone or refused) is not completed.
    #[test]
    fn a_copy_told_to_stop_is_not_completed() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = crate::config::StoreConfig::in_dir(dir.path());
        let store = super::super::Store::open(&config).unwrap();
        let stop = AtomicBool::new(true);
        let stopped = store.backup(&dir.path().join("stopped.redb"), &stop);
        assert!(stopped.unwrap().is_none());
        stop.store(false, Ordering::Relaxed);
        let made = store.backup(&dir.path().join("made.redb"), &stop).unwrap();
        assert!(made.is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let config = crate::config::StoreConfig::in_dir(dir.path());
        let store = super::super::Store::open(&config).unwrap();
        let mode = std::fs::metadata(&config.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Not open to a second opener while the first holds it, as restore checks.
        assert!(super::ensure_not_open(&config.path).is_err());
        drop(store);
        assert!(super::ensure_not_open(&config.path).is_ok());
    }

    /// A backup's copy is its owner's alone from its creation, and never an existing file.
    #[cfg(unix)]
    #[test]
    fn a_copy_is_created_readable_by_its_owner_only_and_never_over_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("copy.redb");
        super::create_owner_only(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(super::create_owner_only(&path).is_err());
    }
}
