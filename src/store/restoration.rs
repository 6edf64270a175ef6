//! A store restored from a backup: the mark `tidemark restore` leaves in it, and what the
//! first server to start on it writes before anything else — the restore's own audit
//! record and the trust changes the backup predates — each with its log leaf and one
//! checkpoint, so that every state sees in the log that the operator restored and what
//! was carried over.
//!
//! A restore rolls the store back to the backup: revocations, suspensions and key
//! revocations made after it are not in it. They survive in files the server rewrites at
//! every such change and keeps beside its certificates: certificate revocations in the
//! CRL file, suspensions and signing-key revocations in the access journal
//! (`crate::journal`). At every start the server carries what those hold and the store
//! lacks into it ([`Store::record_start`]).

use std::{fmt::Write as _, path::Path};

use redb::{Database, ReadableDatabase};

use super::{
    META, Store, StoreError,
    admin::{self, AdminChange},
    apply::{self, Tables},
    records::{AuditRecord, OwnerReads, RevokedCertificate},
    trail::{self, TrailJournal},
};
use crate::{clock::format_time, tlog::LogSigner};

/// `meta` keys of the mark: when the backup was taken (Unix seconds) and its log size.
const TAKEN_AT: &str = "restored_backup_taken_at";
const LOG_SIZE: &str = "restored_backup_log_size";

/// The backup a store was restored from, until a server has started on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreMark {
    /// When the backup was taken, Unix seconds.
    pub taken_at: i64,
    /// Leaves of the transparency log the backup holds.
    pub log_size: u64,
}

/// What a server starting on the store wrote first (see [`Store::record_start`]).
#[derive(Debug, Default)]
pub(crate) struct StartRecords {
    /// The store was restored from this backup (now recorded, and the mark removed).
    pub restored: Option<RestoreMark>,
    /// The audit records of the changes carried over, as written.
    pub carried: Vec<AuditRecord>,
    /// What became of the audit records written after the copy, for a store rolled
    /// back (restored, or a copy behind its trail journal).
    pub trail: Option<String>,
}

impl Store {
    /// Marks the store file at `path` (not open elsewhere) as restored from a backup,
    /// for the first server that starts on it.
    pub fn mark_restored(path: &Path, mark: RestoreMark) -> Result<(), StoreError> {
        let db = Database::open(path).map_err(|e| StoreError::open(path, e))?;
        let mut tx = db.begin_write()?;
        tx.set_two_phase_commit(true);
        {
            let mut meta = tx.open_table(META)?;
            meta.insert(TAKEN_AT, u64::try_from(mark.taken_at).unwrap_or(0))?;
            meta.insert(LOG_SIZE, mark.log_size)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The backup this store was restored from, if no server has started on it since.
    pub fn restore_mark(&self) -> Result<Option<RestoreMark>, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let taken_at = meta.get(TAKEN_AT)?.map(|v| v.value());
        let log_size = meta.get(LOG_SIZE)?.map_or(0, |v| v.value());
        Ok(taken_at.map(|taken_at| RestoreMark {
            taken_at: i64::try_from(taken_at).unwrap_or(i64::MAX),
            log_size,
        }))
    }

    /// The revocations among `revocations` (from the CRL file) that the store does not
    /// hold, as changes for [`Self::record_start`].
    pub(crate) fn revocations_missing(
        &self,
        revocations: Vec<RevokedCertificate>,
    ) -> Result<Vec<AdminChange>, StoreError> {
        let known: std::collections::HashSet<String> = self
            .revoked_certificates()?
            .into_iter()
            .map(|r| r.key())
            .collect();
        Ok(revocations
            .into_iter()
            .filter(|r| !r.covered_by(&known))
            .map(AdminChange::RevokeCertificate)
            .collect())
    }

    /// Writes, as `principal` (the server's own SPIFFE ID) at `now`, in one transaction
    /// with one checkpoint signed by `log`: a `restore` audit record if the store is
    /// marked restored (and removes the mark), and each of `carried` (what the CRL file
    /// and the access journal hold that the store does not), with its record. Writes
    /// nothing when there is nothing to say.
    ///
    /// Then, in the same transaction, on a restored store, each audit record of the trail
    /// journal that its log does not reach (written after the backup) again: one whose
    /// number the store holds as its new version, any other as a new record. A restored
    /// store, or a copy made by hand that is behind its journal or not its history,
    /// starts a fork of its own; the journal, filled back from the store where it ends
    /// early, is then open for the writer ([`super::trail`], in `trail_dir`).
    pub(crate) fn record_start(
        &self,
        log: &LogSigner,
        (principal, now, lost, told): (&str, i64, bool, bool),
        carried: &[AdminChange],
        trail_dir: &Path,
    ) -> Result<StartRecords, StoreError> {
        let log_size = self.snapshot()?.log_size()?;
        let restored = self.restore_mark()?;
        let trail = self.trail_at_start(trail_dir, (log_size, restored.is_some()), told)?;
        if restored.is_none() && carried.is_empty() && !trail.rolled_back {
            let fork = match trail.fork {
                Some(fork) => fork,
                None => self.start_fork()?,
            };
            self.open_trail(trail_dir, (fork, None), (0, log_size), &[])?;
            return Ok(StartRecords::default());
        }
        let mut written = Vec::new();
        let trail_lines;
        let tx = self.begin_write()?;
        {
            let mut t = Tables::open(&tx, &self.leaves)?;
            let mut deltas = super::counters::Deltas::new(t.record_keys.clone());
            let stored = t.next_audit()? - 1;
            let mut number = stored + 1;
            let mut put = |t: &mut Tables<'_>, record: AuditRecord| {
                apply::put_audit(t, number, &record, (now, apply::detail_salt()), now)?;
                number += 1;
                written.push(record);
                Ok::<_, StoreError>(())
            };
            if let Some(mark) = restored {
                // The backup's own record (it copied every state's reports) was written
                // after its copy was made, so no restored store holds it: this one names
                // the owners of what was restored, for their access lists.
                let owners = super::backup::contents(&self.db)?.reports_by_state;
                put(
                    &mut t,
                    restore_record(principal, mark, (carried.len(), &trail, lost), owners),
                )?;
            }
            for change in carried {
                let applied = admin::apply(&tx, change)?.map_err(|refused| {
                    StoreError::Corrupt(format!("a carried change was refused: {refused}"))
                })?;
                apply::follow_admin(&tx, &mut t, &mut deltas, &applied)?;
                put(
                    &mut t,
                    admin::audit_record(&tx, principal, change, &applied)?,
                )?;
            }
            put_lost(&mut t, (stored, number), &trail.lost)?;
            t.write_counters(deltas)?;
            t.log.checkpoint(log)?;
            trail_lines = std::mem::take(&mut t.trail);
            drop(t);
            let mut meta = tx.open_table(META)?;
            meta.remove(TAKEN_AT)?;
            meta.remove(LOG_SIZE)?;
        }
        tx.commit()?;
        // A rolled-back store is a fork of its own from here, whose journal begins where
        // its log began to differ; a store that lost its journal fills it back from the
        // start.
        let (fork, start) = if trail.rolled_back || trail.fork.is_none() {
            (self.start_fork()?, log_size)
        } else {
            (trail.fork.unwrap_or_default(), 0)
        };
        let parent = trail.fork.filter(|f| *f != fork);
        self.open_trail(trail_dir, (fork, parent), (start, log_size), &trail_lines)?;
        if carried.iter().any(AdminChange::touches_keys) {
            self.forget_keys();
            self.forget_projection();
        }
        if restored.is_some() {
            written.remove(0);
        }
        Ok(StartRecords {
            restored,
            carried: written,
            trail: trail.rolled_back.then(|| trail.said()),
        })
    }

    /// What the trail journal of this store's fork says at start, for a store whose log
    /// holds `log_size` leaves (and that is `restored`, marked by `tidemark restore`). On
    /// a restored store, a journal that is not this store's history or ends before its
    /// log is refused unless the operator `told` the server its files are lost (`serve
    /// --trust-files-lost`), as a missing one is.
    fn trail_at_start(
        &self,
        dir: &Path,
        (log_size, restored): (u64, bool),
        told: bool,
    ) -> Result<TrailStart, StoreError> {
        let Some(fork) = self.trail_fork()? else {
            // No server of this build has run on it: a restored one's trail is lost.
            return Ok(TrailStart {
                missing: restored,
                rolled_back: restored,
                restored,
                ..TrailStart::default()
            });
        };
        let path = trail::path(dir, fork);
        let Some(journal) = trail::read(&path)? else {
            if !restored {
                tracing::warn!(
                    path = %path.display(),
                    "this store's audit trail journal is missing (or empty): a new one \
                     begins, filled back from the store; versions of records the store no \
                     longer holds (a read's record as it stood before it was raised) are not \
                     in it"
                );
            }
            return Ok(TrailStart {
                fork: Some(fork),
                missing: restored,
                rolled_back: restored,
                restored,
                ..TrailStart::default()
            });
        };
        let snapshot = self.snapshot()?;
        let entry_at = |leaf: u64| Ok(snapshot.log_entries(leaf, leaf + 1)?.pop());
        let diverged_at = trail::diverges(&journal, log_size, entry_at)?;
        // Only a store `tidemark restore` installed gets records back: a copy made by
        // hand that is behind its journal may as well be the original, whose copy ran
        // ahead on the same fork — neither can tell, so neither takes the other's.
        let carry = restored && diverged_at.is_none();
        let short = restored && journal.end() < log_size;
        if restored && !told && (diverged_at.is_some() || short) {
            let why = match diverged_at {
                Some(leaf) => format!(
                    "does not match this store's log at leaf {leaf} (it was edited, or written \
                     by another copy of the store)"
                ),
                None => format!(
                    "ends at leaf {}, before the restored log ({log_size} leaves): it was cut \
                     short",
                    journal.end()
                ),
            };
            return Err(StoreError::Trail {
                path: path.display().to_string(),
                reason: format!(
                    "{why}, so the audit records written after the backup cannot be written \
                     again from it. Put back the journal the last server wrote; if it is \
                     lost, start with `tidemark serve --trust-files-lost` (those records are \
                     then lost, and the restore's record says so)"
                ),
            });
        }
        let stored = snapshot.last_audit_number()?;
        if carry && journal.cut > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = journal.cut,
                "the audit trail journal ends in a commit that did not finish (a crash): what \
                 it held is not written again"
            );
        }
        Ok(TrailStart {
            cut: if carry { journal.cut } else { 0 },
            unnumbered: if carry {
                trail::missing_numbers(&journal, stored)
            } else {
                Vec::new()
            },
            cut_short: short,
            fork: Some(fork),
            gaps: if carry {
                journal.gaps(log_size)
            } else {
                Vec::new()
            },
            lost: if carry {
                trail::lost(&journal, log_size)?
            } else {
                Vec::new()
            },
            missing: false,
            rolled_back: restored || diverged_at.is_some() || journal.end() > log_size,
            diverged_at,
            covered_to: journal.end(),
            restored,
        })
    }

    /// Opens the journal of `fork` (begun from `parent` at leaf `start`, if new), fills
    /// it back from the store where it ends before `log_size` (the log before the
    /// start's own records), appends the start's own `lines`, and hands it to the writer.
    fn open_trail(
        &self,
        dir: &Path,
        (fork, parent): (u64, Option<u64>),
        (start, log_size): (u64, u64),
        lines: &[trail::TrailLine],
    ) -> Result<(), StoreError> {
        let Some(mut journal) = TrailJournal::open(trail::path(dir, fork), (fork, parent, start))?
        else {
            self.keep_trail(None);
            return Ok(());
        };
        let snapshot = self.snapshot()?;
        if journal.end() < log_size {
            if journal.existed() {
                tracing::warn!(
                    from = journal.end(),
                    to = log_size,
                    "the audit trail journal ended before the store's log (a crash, or lines \
                     removed): filled back from the store"
                );
            }
            let behind = snapshot.trail_lines(journal.end(), log_size)?;
            journal.append(&behind, log_size);
        }
        journal.append(lines, snapshot.log_size()?);
        self.keep_trail(Some(journal));
        Ok(())
    }
}

/// The trail journal as a starting server finds it.
#[derive(Debug, Default)]
#[allow(clippy::struct_excessive_bools)] // what a start found, said field by field
struct TrailStart {
    /// The store's fork (`None` for a store no server of this build has started on).
    fork: Option<u64>,
    /// The records (versions) the store's log does not reach, in log order.
    lost: Vec<(u64, AuditRecord)>,
    /// Leaf ranges past the store's log the journal does not cover.
    gaps: Vec<(u64, u64)>,
    /// The fork's journal is not there.
    missing: bool,
    /// The store is marked restored, or its journal goes past its log or is not its
    /// history: it starts a fork of its own.
    rolled_back: bool,
    /// The leaf where the journal stops being this store's history (another copy of
    /// the store wrote it).
    diverged_at: Option<u64>,
    /// The end of what the journal covers.
    covered_to: u64,
    /// The store is marked restored (`tidemark restore`).
    restored: bool,
    /// Record numbers past the restored store's that the journal lacks (lines removed).
    unnumbered: Vec<(u64, u64)>,
    /// The journal ends before the restored log.
    cut_short: bool,
    /// Bytes of an unfinished commit at the journal's end.
    cut: u64,
}

impl TrailStart {
    /// How many records (not versions) are written again.
    fn records(&self) -> usize {
        self.lost
            .iter()
            .map(|(n, _)| *n)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// What the restore record (and the start's warning) says of the trail.
    fn said(&self) -> String {
        if self.missing {
            return "the audit trail journal was missing: the audit records written after the \
                    backup are lost"
                .to_owned();
        }
        if let Some(leaf) = self.diverged_at {
            return format!(
                "the audit trail journal of this store's fork does not match its log at leaf \
                 {leaf} (it was edited, or another copy of the store wrote it): no record is \
                 written again from it, and this store starts a journal of its own"
            );
        }
        if self.cut_short {
            return format!(
                "the audit trail journal ends at leaf {}, before the restored log: it was cut \
                 short, so the audit records written after the backup are lost",
                self.covered_to
            );
        }
        if !self.restored {
            return format!(
                "the audit trail journal of this store's fork goes on past its log (to leaf \
                 {}): another copy of the store (copied by hand) ran after this one was copied; \
                 no record is written again (only a store installed with `tidemark restore` \
                 gets them back), and this store starts a journal of its own",
                self.covered_to
            );
        }
        let mut said = format!(
            "{} audit records written after the backup are written again from the audit \
             trail journal, which covers the log up to leaf {}",
            self.records(),
            self.covered_to
        );
        if !self.gaps.is_empty() {
            let gaps: Vec<String> = self
                .gaps
                .iter()
                .map(|(from, to)| format!("{from}-{}", to - 1))
                .collect();
            let _ = write!(
                said,
                "; the journal does not cover log leaves {}, so records written there are \
                 lost",
                gaps.join(", ")
            );
        }
        if self.cut > 0 {
            let _ = write!(
                said,
                "; the journal ends in a commit that did not finish ({} bytes, a crash), whose \
                 records are lost",
                self.cut
            );
        }
        if !self.unnumbered.is_empty() {
            let numbers: Vec<String> = self
                .unnumbered
                .iter()
                .map(|(from, to)| match to - from {
                    1 => from.to_string(),
                    _ => format!("{from}-{}", to - 1),
                })
                .collect();
            let _ = write!(
                said,
                "; audit records numbered {} before the restore are not in the journal (its \
                 lines were removed), so they are lost",
                numbers.join(", ")
            );
        }
        said
    }

    /// Whether audit records written after the backup are lost for want of a usable
    /// journal.
    fn trail_lost(&self) -> bool {
        self.missing || (self.restored && (self.diverged_at.is_some() || self.cut_short))
    }
}

/// Writes the lost `records` again: each as it was (its times and detail salt kept, so
/// that `verify-reciprocity` judges a read when it was made), numbered on from the
/// store's last number `stored` (the next free being `next`), each version of one
/// record under one number; a number the store holds gets its newer version.
fn put_lost(
    t: &mut Tables<'_>,
    (stored, mut next): (u64, u64),
    records: &[(u64, AuditRecord)],
) -> Result<(), StoreError> {
    let mut renumbered = std::collections::HashMap::new();
    for (old, record) in records {
        let target = if *old <= stored {
            *old
        } else {
            *renumbered.entry(*old).or_insert_with(|| {
                next += 1;
                next - 1
            })
        };
        let kept = (record.at, record.detail_salt.clone());
        apply::put_audit(t, target, record, kept, record.logged_at)?;
    }
    Ok(())
}

/// The audit record of a restore, written by the first server to start on the store.
fn restore_record(
    principal: &str,
    mark: RestoreMark,
    (carried, trail, lost): (usize, &TrailStart, bool),
    owners: std::collections::BTreeMap<String, u64>,
) -> AuditRecord {
    let trust = if lost {
        "the CRL file or the access journal was missing (serve --trust-files-lost), so \
         revocations and suspensions made after the backup may be lost and must be made again"
    } else {
        "certificate revocations (from the CRL file), and suspensions and signing-key \
         revocations (from the access journal), made after it are carried over"
    };
    let note = format!(
        "the store was restored from a backup: what was accepted after it is not in it; {}; \
         {trust}",
        trail.said()
    );
    AuditRecord {
        principal: principal.to_owned(),
        action: "restore".to_owned(),
        count: owners.values().sum(),
        owners: owners
            .into_iter()
            .map(|(owner, count)| OwnerReads {
                owner,
                count,
                report_ids: Vec::new(),
            })
            .collect(),
        detail: serde_json::json!({
            "backup_taken_at": format_time(mark.taken_at),
            "backup_log_size": mark.log_size,
            "changes_carried_over": carried,
            "audit_records_carried_over": trail.records(),
            "audit_trail_lost": trail.trail_lost(),
            "trust_files_lost": lost,
            "note": note,
        })
        .to_string(),
        ..AuditRecord::default()
    }
}
