//! A read-only MVCC snapshot of the store, with typed look-ups and index ranges.
//!
//! Readers never wait for the writer: a snapshot sees the store as of its start.
//!
//! Every "after" position is an exclusive bound (`Bound::Excluded`), never "the next
//! key": a resume point always moves strictly forward, whatever the key — the largest
//! UUID or sequence number included.

use std::{ops::Bound, sync::Arc};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{
    AUDIT, AUDIT_BY_OWNER, AuditRecord, BUDGETS, BY_DATE, BY_STATE, CONTRIBUTIONS,
    COUNTER_QUARTERS, COUNTERS, ENVELOPES, EnvelopeRecord, KeyRecord, QUARTERS_BEHIND, REPORTS,
    ReportHead, SECRETS, SIGNING_KEYS, StoreError,
    counters::{self, CounterRow, CounterTables, Cuboid, Grain, RecordKeys},
    decode,
    leaves::LeafIndex,
    log::{Leaf, LogView, ProofRequestError, StoredCheckpoint},
};
use crate::tlog::merkle::Hash;

pub struct Snapshot {
    envelopes: ReadOnlyTable<u64, &'static [u8]>,
    reports: ReadOnlyTable<u128, &'static [u8]>,
    contributions: ReadOnlyTable<(&'static str, i32, i64, u128), ()>,
    by_date: ReadOnlyTable<(i32, i32, u128), ()>,
    by_state: ReadOnlyTable<(&'static str, i32, i32, u128), ()>,
    signing_keys: ReadOnlyTable<&'static str, &'static [u8]>,
    audit: ReadOnlyTable<u64, &'static [u8]>,
    audit_by_owner: ReadOnlyTable<(&'static str, u64), u64>,
    counters: ReadOnlyTable<&'static [u8], &'static [u8]>,
    counter_quarters: ReadOnlyTable<&'static [u8], &'static [u8]>,
    quarters_behind: ReadOnlyTable<(u8, u32), ()>,
    record_keys: RecordKeys,
    cursor_key: ring::hmac::Key,
    budgets: ReadOnlyTable<(&'static str, i32), u64>,
    log: LogView,
}

/// An index position: (state or "", incident day, report).
pub(super) type IndexKey = (String, i32, u128);

impl Snapshot {
    pub(super) fn open(db: &Database, leaves: &Arc<LeafIndex>) -> Result<Self, StoreError> {
        let tx = db.begin_read()?;
        Ok(Self {
            envelopes: tx.open_table(ENVELOPES)?,
            reports: tx.open_table(REPORTS)?,
            contributions: tx.open_table(CONTRIBUTIONS)?,
            by_date: tx.open_table(BY_DATE)?,
            by_state: tx.open_table(BY_STATE)?,
            signing_keys: tx.open_table(SIGNING_KEYS)?,
            audit: tx.open_table(AUDIT)?,
            audit_by_owner: tx.open_table(AUDIT_BY_OWNER)?,
            counters: tx.open_table(COUNTERS)?,
            counter_quarters: tx.open_table(COUNTER_QUARTERS)?,
            quarters_behind: tx.open_table(QUARTERS_BEHIND)?,
            record_keys: super::record_keys(&tx.open_table(SECRETS)?)?,
            cursor_key: super::cursor_key(&tx.open_table(SECRETS)?)?,
            budgets: tx.open_table(BUDGETS)?,
            log: LogView::open(&tx, leaves.clone())?,
        })
    }

    /// Micro-ρ of privacy budget `principal` has spent in `year`.
    pub(crate) fn budget_spent(&self, principal: &str, year: i32) -> Result<u64, StoreError> {
        super::budget::spent(&self.budgets, principal, year)
    }

    /// Reports' record keys (for the cell key method of aggregates).
    pub(crate) fn record_keys(&self) -> &RecordKeys {
        &self.record_keys
    }

    /// The key that seals query cursors.
    pub(crate) fn cursor_key(&self) -> &ring::hmac::Key {
        &self.cursor_key
    }

    /// The number of leaves in the transparency log.
    pub fn log_size(&self) -> Result<u64, StoreError> {
        self.log.size()
    }

    /// The newest signed checkpoint of the log.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.log.latest_checkpoint()
    }

    /// The signed checkpoint of exactly `size` leaves, if one was published.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.log.checkpoint_at(size)
    }

    /// The log entry of leaf `index`.
    pub fn log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.log.entry(index)
    }

    /// The log entries of leaves `start..end`.
    pub fn log_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.log.entries(start, end)
    }

    /// The index of the log leaf with hash `leaf_hash`.
    pub fn log_index_of(&self, leaf_hash: &Hash) -> Result<Option<u64>, StoreError> {
        self.log.index_of(leaf_hash)
    }

    /// The root of the log's first `size` leaves.
    pub fn log_root(&self, size: u64) -> Result<Hash, StoreError> {
        self.log.root(size)
    }

    /// The log as this snapshot sees it.
    pub(crate) fn log(&self) -> &LogView {
        &self.log
    }

    /// The log leaf recording the acceptance of envelope `sequence`, whose stored record
    /// is `record` and whose DSSE payload has SHA-256 `payload_sha256`.
    pub(crate) fn acceptance_leaf(
        &self,
        sequence: u64,
        record: &EnvelopeRecord,
        payload_sha256: [u8; 32],
    ) -> Result<Leaf, StoreError> {
        self.log
            .find(&super::log::envelope_entry(
                sequence,
                record,
                payload_sha256,
            ))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("envelope {sequence} has no transparency-log entry"))
            })
    }

    /// The inclusion proof of leaf `index` in the log of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofRequestError> {
        self.log.inclusion_proof(index, size)
    }

    /// The consistency proof between the log of `old` leaves and that of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofRequestError> {
        self.log.consistency_proof(old, new)
    }

    pub fn head(&self, id: u128) -> Result<Option<ReportHead>, StoreError> {
        self.reports.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Every report head, in key (UUID) order.
    pub fn heads(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u128, ReportHead), StoreError>> + '_, StoreError> {
        Ok(self.reports.iter()?.map(|entry| {
            let (k, v) = entry?;
            Ok((k.value(), decode(v.value())?))
        }))
    }

    pub fn envelope(&self, sequence: u64) -> Result<Option<EnvelopeRecord>, StoreError> {
        self.envelopes
            .get(sequence)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    pub fn signing_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.signing_keys
            .get(key_id)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// The sequence number of the last envelope this snapshot holds (0 if none).
    pub fn last_sequence(&self) -> Result<u64, StoreError> {
        Ok(self.envelopes.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// Envelopes with a sequence number above `after`, in order.
    pub fn envelopes_after(
        &self,
        after: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, EnvelopeRecord), StoreError>> + '_, StoreError>
    {
        let range = self
            .envelopes
            .range((Bound::Excluded(after), Bound::Unbounded))?;
        Ok(range.map(|entry| {
            let (k, v) = entry?;
            Ok((k.value(), decode(v.value())?))
        }))
    }

    /// First-acceptance times of `state`'s live contributions of `category` at or after
    /// `since`, oldest first.
    pub fn contributions(
        &self,
        state: &str,
        category: i32,
        since: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let range = self
            .contributions
            .range((state, category, since, 0u128)..=(state, category, i64::MAX, u128::MAX))?;
        range.map(|entry| Ok(entry?.0.value().2)).collect()
    }

    /// First-acceptance times of `state`'s newest `most` live contributions of
    /// `category` at or after `since`, newest first: reads no more than `most` rows.
    pub fn newest_contributions(
        &self,
        state: &str,
        category: i32,
        since: i64,
        most: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let range = self
            .contributions
            .range((state, category, since, 0u128)..=(state, category, i64::MAX, u128::MAX))?;
        range
            .rev()
            .take(most)
            .map(|entry| Ok(entry?.0.value().2))
            .collect()
    }

    /// Reports of `category` with incident days in `from..=to`, in (day, id) order,
    /// strictly after `after` if given.
    pub fn by_date(
        &self,
        category: i32,
        from: i32,
        to: i32,
        after: Option<(i32, u128)>,
    ) -> Result<impl Iterator<Item = Result<IndexKey, StoreError>> + '_, StoreError> {
        let end = (category, to, u128::MAX);
        let start = match after {
            Some((day, id)) if (day, id) >= (from, 0) => Bound::Excluded((category, day, id)),
            _ => Bound::Included((category, from, 0)),
        };
        let range = match start {
            Bound::Excluded(s) | Bound::Included(s) if s > end => None,
            _ => Some(self.by_date.range((start, Bound::Included(end)))?),
        };
        Ok(range.into_iter().flatten().map(|entry| {
            let (_, day, id) = entry?.0.value();
            Ok((String::new(), day, id))
        }))
    }

    /// Reports of `state` and `category` with incident days in `from..=to`, in (day, id)
    /// order, strictly after `after` if given.
    pub fn by_state(
        &self,
        state: &str,
        category: i32,
        from: i32,
        to: i32,
        after: Option<(i32, u128)>,
    ) -> Result<impl Iterator<Item = Result<IndexKey, StoreError>> + '_, StoreError> {
        let end = (state, category, to, u128::MAX);
        let start = match after {
            Some((day, id)) if (day, id) >= (from, 0) => {
                Bound::Excluded((state, category, day, id))
            }
            _ => Bound::Included((state, category, from, 0)),
        };
        let range = match start {
            Bound::Excluded(s) | Bound::Included(s) if s > end => None,
            _ => Some(self.by_state.range((start, Bound::Included(end)))?),
        };
        Ok(range.into_iter().flatten().map(|entry| {
            let key = entry?.0;
            let (state, _, day, id) = key.value();
            Ok((state.to_owned(), day, id))
        }))
    }

    /// Accesses to `owner`'s reports, newest first, at most `limit`, numbered below
    /// `before` (0: from the newest).
    pub fn accesses_to(
        &self,
        owner: &str,
        (limit, before): (usize, u64),
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let range = match before {
            0 => self
                .audit_by_owner
                .range((owner, 0u64)..=(owner, u64::MAX))?,
            before => self.audit_by_owner.range((owner, 0u64)..(owner, before))?,
        };
        let mut out = Vec::new();
        for entry in range.rev().take(limit) {
            let number = entry?.0.value().1;
            if let Some(record) = self.audit.get(number)? {
                out.push((number, decode(record.value())?));
            }
        }
        Ok(out)
    }

    /// Audit records after `after`, oldest first, at most `limit`.
    pub fn audit_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.audit
            .range((Bound::Excluded(after), Bound::Unbounded))?
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                Ok((k.value(), decode(v.value())?))
            })
            .collect()
    }

    /// The audit records among log leaves `from` to `to - 1`, as the trail journal
    /// holds them: each record at the leaf of the version it now stands at (a leaf of
    /// a version since superseded is left out, as the store no longer holds it).
    pub(super) fn trail_lines(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<super::trail::TrailLine>, StoreError> {
        let mut lines = Vec::new();
        let mut leaf = from;
        while leaf < to {
            let end = to.min(leaf + 1_000);
            for entry in self.log_entries(leaf, end)? {
                if let Ok(crate::tlog::entry::Entry::Audit(audit)) =
                    crate::tlog::entry::Entry::decode(&entry)
                    && let Some(stored) = self.audit.get(audit.number)?
                {
                    let record: super::AuditRecord = decode(stored.value())?;
                    if super::log::audit_entry(audit.number, &record).encode() == entry {
                        lines.push(super::trail::TrailLine {
                            leaf,
                            number: audit.number,
                            record: stored.value().to_vec(),
                        });
                    }
                }
                leaf += 1;
            }
        }
        Ok(lines)
    }

    /// The number of the last audit record written (0: none yet).
    pub fn last_audit_number(&self) -> Result<u64, StoreError> {
        Ok(self.audit.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// Quarters (per category) whose counter rows are behind their months.
    pub fn quarters_behind(&self) -> Result<u64, StoreError> {
        Ok(self.quarters_behind.len()?)
    }

    /// Counter rows of `cuboid` and `category` covering months in `months` (see
    /// [`counters::month_of_day`]) at `grain`.
    pub fn counter_rows(
        &self,
        (cuboid, category): (Cuboid, i32),
        months: (u32, u32),
        grain: Grain,
        each: impl FnMut(&CounterRow<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tables = CounterTables {
            months: &self.counters,
            quarters: &self.counter_quarters,
            behind: &self.quarters_behind,
        };
        counters::read_counters(&tables, (cuboid, category), months, grain, each)
    }
}
