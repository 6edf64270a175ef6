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

use std::path::Path;

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
    /// How many audit records (versions) were written again from the trail journal.
    pub trail_carried: usize,
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
    /// Then, in the same transaction, each audit record of the trail journal in
    /// `trail_dir` that the store's log does not reach (written after the backup), again:
    /// one whose number the store holds as its new version, any other as a new record.
    /// The journal is then open for the writer ([`super::trail`]).
    pub(crate) fn record_start(
        &self,
        log: &LogSigner,
        (principal, now, lost): (&str, i64, bool),
        carried: &[AdminChange],
        trail_dir: &Path,
    ) -> Result<StartRecords, StoreError> {
        let trail_path = self.trail_journal(trail_dir)?;
        let log_size = self.snapshot()?.log_size()?;
        let trail_lost = {
            let snapshot = self.snapshot()?;
            let entry_at = |leaf: u64| Ok(snapshot.log_entries(leaf, leaf + 1)?.pop());
            trail::lost(trail::read(&trail_path)?, log_size, entry_at, &trail_path)?
        };
        let mut journal = TrailJournal::open(trail_path)?;
        let restored = self.restore_mark()?;
        if restored.is_none() && carried.is_empty() && trail_lost.is_empty() {
            self.keep_trail(journal);
            return Ok(StartRecords::default());
        }
        let mut written = Vec::new();
        let trail_lines;
        let tx = self.begin_write()?;
        {
            let mut t = Tables::open(&tx)?;
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
                    restore_record(
                        principal,
                        mark,
                        (carried.len(), trail_lost.len(), lost),
                        owners,
                    ),
                )?;
            }
            for change in carried {
                let applied = admin::apply(&tx, change)?.map_err(|refused| {
                    StoreError::Corrupt(format!("a carried change was refused: {refused}"))
                })?;
                apply::follow_admin(&mut t, &mut deltas, &applied)?;
                put(
                    &mut t,
                    admin::audit_record(&tx, principal, change, &applied)?,
                )?;
            }
            // Each lost record as it was (its time and detail salt kept), numbered on
            // from the store's, each version of one record under one number.
            let mut renumbered = std::collections::HashMap::new();
            for (old, record) in &trail_lost {
                let target = if *old <= stored {
                    *old
                } else {
                    *renumbered.entry(*old).or_insert_with(|| {
                        number += 1;
                        number - 1
                    })
                };
                let kept = (record.at, record.detail_salt.clone());
                apply::put_audit(&mut t, target, record, kept, now)?;
            }
            t.write_counters(deltas)?;
            t.log.checkpoint(log)?;
            trail_lines = std::mem::take(&mut t.trail);
            drop(t);
            let mut meta = tx.open_table(META)?;
            meta.remove(TAKEN_AT)?;
            meta.remove(LOG_SIZE)?;
        }
        tx.commit()?;
        if let Some(journal) = &mut journal {
            journal.append((!trail_lost.is_empty()).then_some(log_size), &trail_lines);
        }
        self.keep_trail(journal);
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
            trail_carried: trail_lost.len(),
        })
    }
}

/// The audit record of a restore, written by the first server to start on the store.
fn restore_record(
    principal: &str,
    mark: RestoreMark,
    (carried, trail, lost): (usize, usize, bool),
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
        "the store was restored from a backup: what was accepted after it is not in it; the \
         audit records written after it are written again from the audit trail journal \
         ({trail} carried over); {trust}"
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
            "audit_records_carried_over": trail,
            "trust_files_lost": lost,
            "note": note,
        })
        .to_string(),
        ..AuditRecord::default()
    }
}
