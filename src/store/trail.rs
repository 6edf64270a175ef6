//! The trail journal: every audit record the store writes (each version of it, as a read
//! raises its record), appended after its commit to a file beside the access journal,
//! so that a store restored from an older backup gets back the access trail written
//! after the backup: at start the server writes each record the restored store lacks
//! again, as a new record in the store and the transparency log, and no state's access
//! list loses a read.
//!
//! One file per store lineage, `audit-trail-<id>.journal`: `<id>` is 16 hex digits
//! derived from the store's own secret, which its backups share and another store does
//! not, so two stores sharing one certificate directory keep apart. Format (text, one
//! line each, version 1):
//!
//! - `tidemark-audit-trail v1` — the first line;
//! - `<leaf> <number> <record>` — audit record `number` (base64 of the record as stored,
//!   a `store::AuditRecord` message) and the index of its transparency-log leaf;
//! - `carried <size>` — the records after leaf `size - 1` above were written again
//!   after a restore to a log of `size` leaves (the copies follow): they are not written
//!   a second time.
//!
//! The store is the authority: a line is only ever written after its commit, without an
//! fsync of its own (a crash of the machine can lose the last lines, which the store
//! holds), and a last line cut short by a crash is ignored. The records to write again
//! are the lines whose leaf the store's log does not reach; before writing any, the last
//! line the log does reach must be the log's own entry at that leaf, or the journal is
//! another history's and the server stops rather than write it into this one.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::Engine as _;

use super::{AuditRecord, StoreError, decode, log};

/// The journal's first line.
const HEADER: &str = "tidemark-audit-trail v1";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One audit record as the journal holds it.
#[derive(Debug, Clone)]
pub(crate) struct TrailLine {
    /// The index of its transparency-log leaf.
    pub(crate) leaf: u64,
    /// Its number in the audit table.
    pub(crate) number: u64,
    /// The record as stored (encoded).
    pub(crate) record: Vec<u8>,
}

/// The journal file of the store whose secret gives `id`, in `dir`.
pub(crate) fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("audit-trail-{id}.journal"))
}

/// The id of a store lineage: the first 8 bytes of SHA-256 over a label and the store's
/// cursor secret, in hex.
pub(super) fn lineage_id(secret: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tidemark audit trail journal\0");
    ctx.update(secret);
    hex::encode(&ctx.finish().as_ref()[..8])
}

/// What the journal at `path` holds, carried copies replacing what they copy; empty if
/// there is no file.
pub(crate) fn read(path: &Path) -> Result<Vec<TrailLine>, StoreError> {
    let unreadable = |why: String| StoreError::Open {
        path: path.display().to_string(),
        reason: format!(
            "the audit trail journal: {why}; it holds the access trail a restore needs. \
             Move it aside to start without it (records written after the backup a store \
             is restored from are then not written again)"
        ),
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut lines: Vec<TrailLine> = Vec::new();
    let mut rest = text.as_slice();
    let mut first = true;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            // The last line, cut short by a crash: its record is in the store.
            break;
        };
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| unreadable("a line is not UTF-8".to_owned()))?;
        rest = &rest[end + 1..];
        if std::mem::take(&mut first) {
            if line != HEADER {
                return Err(unreadable(format!("its first line is not {HEADER:?}")));
            }
            continue;
        }
        let bad = || unreadable(format!("a line is not a journal line: {line:.80}"));
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("carried"), Some(size), None, None) => {
                let size: u64 = size.parse().map_err(|_| bad())?;
                lines.retain(|l| l.leaf < size);
            }
            (Some(leaf), Some(number), Some(record), None) => lines.push(TrailLine {
                leaf: leaf.parse().map_err(|_| bad())?,
                number: number.parse().map_err(|_| bad())?,
                record: B64.decode(record).map_err(|_| bad())?,
            }),
            _ => return Err(bad()),
        }
    }
    Ok(lines)
}

/// The records to write again into a store whose log holds `size` leaves and whose
/// entries `entry_at` gives: the journal's lines past the log, in log order, after
/// checking that the last line within it is the log's own entry.
pub(super) fn lost(
    lines: Vec<TrailLine>,
    size: u64,
    entry_at: impl Fn(u64) -> Result<Option<Vec<u8>>, StoreError>,
    path: &Path,
) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
    let (mut past, within): (Vec<TrailLine>, Vec<TrailLine>) =
        lines.into_iter().partition(|l| l.leaf >= size);
    if past.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(last) = within.iter().max_by_key(|l| l.leaf) {
        let record: AuditRecord = decode(&last.record)?;
        let journaled = log::audit_entry(last.number, &record).encode();
        if entry_at(last.leaf)?.as_deref() != Some(journaled.as_slice()) {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                reason: format!(
                    "the audit trail journal says leaf {} of the transparency log records \
                     audit record {}, but this store's log has another entry there: the \
                     journal is another history's (two servers restored from one backup?). \
                     Move it aside to start; its records are then not written again",
                    last.leaf, last.number
                ),
            });
        }
    }
    past.sort_by_key(|l| l.leaf);
    past.into_iter()
        .map(|l| Ok((l.number, decode(&l.record)?)))
        .collect()
}

/// The journal open for appending, as the writer and the start hold it.
pub(crate) struct TrailJournal {
    path: PathBuf,
    file: std::fs::File,
    /// A write failed (said once, until one succeeds again).
    failing: bool,
}

impl TrailJournal {
    /// Opens (or creates, with its first line) the journal at `path`, readable by its
    /// owner only: it names who read which reports, as the store does. `None` when
    /// another running server holds it — a store of the same lineage, such as a restore
    /// drill beside the live server —, which then goes on without one (said once): two
    /// histories must not interleave in one journal.
    pub(crate) fn open(path: PathBuf) -> Result<Option<Self>, StoreError> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .and_then(|mut file| {
                if file.metadata()?.len() == 0 {
                    file.write_all(format!("{HEADER}\n").as_bytes())?;
                }
                Ok(file)
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("the audit trail journal cannot be written: {e}"),
            })?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            tracing::warn!(
                path = %path.display(),
                "another running server of this store's lineage (a copy restored from the \
                 same backups) holds the audit trail journal: this server's audit records \
                 are not journaled, so a restore of this store would not get them back"
            );
            return Ok(None);
        }
        Ok(Some(Self {
            path,
            file,
            failing: false,
        }))
    }

    /// Appends `lines`, after a `carried <size>` line when they are a restore's copies.
    /// A failure is logged, not returned: the store holds the records.
    pub(crate) fn append(&mut self, carried: Option<u64>, lines: &[TrailLine]) {
        if lines.is_empty() && carried.is_none() {
            return;
        }
        let mut text = String::new();
        if let Some(size) = carried {
            let _ = writeln!(text, "carried {size}");
        }
        for line in lines {
            let record = B64.encode(&line.record);
            let _ = writeln!(text, "{} {} {record}", line.leaf, line.number);
        }
        match self.file.write_all(text.as_bytes()) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "the audit trail journal could not be written: a restore from an older \
                     backup would not get these records back (the store holds them)"
                );
            }
            Err(_) => {}
        }
    }
}

/// Where the writer appends, once the server has opened the journal.
pub(crate) type TrailCell = std::sync::Mutex<Option<TrailJournal>>;

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{AuditRecord, TrailJournal, TrailLine, log, lost, read};

    fn line(leaf: u64, number: u64) -> TrailLine {
        TrailLine {
            leaf,
            number,
            record: vec![8, u8::try_from(number).unwrap()],
        }
    }

    /// Lines read back as written; a carried mark drops what it copied; a last line cut
    /// short is ignored; a file of something else is refused.
    #[test]
    fn the_journal_reads_back_what_was_appended_and_what_a_restore_carried() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.journal");
        assert!(read(&path).unwrap().is_empty());
        let mut journal = TrailJournal::open(path.clone()).unwrap().unwrap();
        assert!(
            TrailJournal::open(path.clone()).unwrap().is_none(),
            "held by one at a time"
        );
        journal.append(None, &[line(3, 1), line(5, 2), line(6, 1)]);
        journal.append(Some(5), &[line(5, 2), line(7, 3)]);
        drop(journal);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
        }
        let read_back: Vec<(u64, u64)> = read(&path)
            .unwrap()
            .iter()
            .map(|l| (l.leaf, l.number))
            .collect();
        assert_eq!(read_back, [(3, 1), (5, 2), (7, 3)]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"9 4 CA");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().len(), 3);
        std::fs::write(&path, "something else\n").unwrap();
        assert!(read(&path).is_err());
    }

    /// What the log does not reach is written again, in log order; nothing at all when
    /// the last line it does reach is not the log's own entry there (another history).
    #[test]
    fn only_lines_past_the_log_are_lost_and_only_from_this_logs_history() {
        let record = |principal: &str| AuditRecord {
            principal: principal.to_owned(),
            ..AuditRecord::default()
        };
        let at = |leaf, number, principal: &str| TrailLine {
            leaf,
            number,
            record: record(principal).encode_to_vec(),
        };
        let lines = vec![at(2, 1, "a"), at(9, 3, "c"), at(4, 2, "b")];
        let entry = log::audit_entry(1, &record("a")).encode();
        let ours = |leaf: u64| Ok((leaf == 2).then(|| entry.clone()));
        let path = std::path::Path::new("t.journal");
        let found = lost(lines.clone(), 4, ours, path).unwrap();
        let found: Vec<(u64, String)> = found.into_iter().map(|(n, r)| (n, r.principal)).collect();
        assert_eq!(found, [(2, "b".to_owned()), (3, "c".to_owned())]);
        assert!(lost(lines.clone(), 10, ours, path).unwrap().is_empty());
        let theirs = |_: u64| Ok(Some(b"another entry".to_vec()));
        let refused = lost(lines, 4, theirs, path).unwrap_err().to_string();
        assert!(refused.contains("another history"), "{refused}");
    }
}
