//! The one writer: group commit of accepted envelopes.
//!
//! Submissions queue on a channel; a dedicated thread takes everything queued (up to a
//! batch limit), applies it in one redb write transaction, commits durably, and only then
//! answers each submitter. Version rules are checked inside the transaction, so two
//! submissions of the same report in one batch see each other.
//!
//! The writer hands back the receipt's facts, not a signature: signing happens on the
//! caller's task after the commit, in parallel, keeping the writer's critical section
//! short. Ed25519 is deterministic, so re-signing the stored facts of a duplicate yields
//! the original receipt.

use std::{sync::Arc, thread};

use prost::Message as _;
use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{
    AUDIT, AUDIT_BY_OWNER, AuditRecord, BY_DATE, BY_STATE, CONTRIBUTIONS, COUNTERS, ENVELOPES,
    EnvelopeRecord, FEES, REPORTS, ReportHead, ReportSummary, StoreError, VersionRef, counters,
    decode,
};
use crate::{clock::Clock, country::CountryCode, pb};

/// What kind of envelope is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    Report,
    Retraction,
}

impl EnvelopeKind {
    fn code(self) -> u32 {
        match self {
            Self::Report => 1,
            Self::Retraction => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Retraction => "retraction",
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Report),
            2 => Some(Self::Retraction),
            _ => None,
        }
    }
}

/// A verified envelope, ready to append.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    /// The envelope exactly as verified (encoded `tidemark.v1.Envelope`).
    pub envelope: Vec<u8>,
    pub state: CountryCode,
    pub report_id: Uuid,
    pub version: u32,
    pub kind: EnvelopeKind,
    /// What queries filter on; `None` for a retraction.
    pub summary: Option<ReportSummary>,
    pub digest: [u8; 32],
    pub key_id: String,
}

/// The outcome of an append that succeeded.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sequence: u64,
    /// What the receipt states (the original facts for a duplicate); unsigned.
    pub receipt: pb::Receipt,
    /// The identical envelope had been accepted before.
    pub duplicate: bool,
}

/// Why an append was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error(
        "report {id} version {version} already exists with different content (stored digest \
         {stored}, this one {submitted}); to change a report, submit version {next}"
    )]
    Conflict {
        id: Uuid,
        version: u32,
        stored: String,
        submitted: String,
        next: u32,
    },
    #[error("report {id} belongs to {owner}; only {owner} may amend or retract it")]
    NotOwner { id: Uuid, owner: String },
    #[error("report {id} is at version {latest}; the next version must be {expected}, not {got}")]
    VersionOrder {
        id: Uuid,
        latest: u32,
        expected: u32,
        got: u32,
    },
    #[error("report {id} does not exist yet; its first version must be 1, not {got}")]
    FirstVersion { id: Uuid, got: u32 },
    #[error("report {id} was retracted; it cannot be amended or retracted again")]
    Retracted { id: Uuid },
    #[error("report {id} does not exist, so there is nothing to retract")]
    NothingToRetract { id: Uuid },
    #[error("the store failed: {0}")]
    Store(String),
}

type Reply = oneshot::Sender<Result<Accepted, AppendError>>;
type AuditReply = oneshot::Sender<Result<u64, AppendError>>;

enum Message {
    Append(Box<NewEnvelope>, Reply),
    Audit(Box<AuditRecord>, AuditReply),
    UpdateAudit(u64, Box<AuditRecord>, AuditReply),
    /// Finish what is queued, then stop.
    Stop,
}

/// One unit of work in a batch.
enum Job {
    Append(Box<NewEnvelope>, Reply),
    Audit(Box<AuditRecord>, AuditReply),
    /// Rewrites an in-progress audit record with what its read returned so far.
    UpdateAudit(u64, Box<AuditRecord>, AuditReply),
}

/// Handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Message>,
    latest: watch::Receiver<u64>,
    disk: watch::Receiver<Option<String>>,
}

/// The writer thread itself: [`WriterThread::stop`] commits what is queued, stops the
/// thread and releases its hold on the database.
pub struct WriterThread {
    queue: mpsc::Sender<Message>,
    thread: thread::JoinHandle<()>,
}

impl Writer {
    pub(super) fn start(
        db: Arc<Database>,
        clock: Clock,
        max_batch: usize,
        latest_sequence: u64,
    ) -> Result<(Self, WriterThread), StoreError> {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let (published, latest) = watch::channel(latest_sequence);
        let (disk_failed, disk) = watch::channel(None);
        let thread = thread::Builder::new()
            .name("tidemark-writer".to_owned())
            .spawn(move || run(&db, rx, &clock, max_batch, &published, &disk_failed))
            .map_err(|e| StoreError::Open {
                path: "writer thread".to_owned(),
                reason: format!("cannot start the store writer thread: {e}"),
            })?;
        Ok((
            Self {
                queue: queue.clone(),
                latest,
                disk,
            },
            WriterThread { queue, thread },
        ))
    }

    /// Queues an envelope; resolves once its batch is durable (or refused).
    pub async fn append(&self, envelope: NewEnvelope) -> Result<Accepted, AppendError> {
        self.enqueue(envelope).await?.await
    }

    /// Queues an envelope now, so that envelopes are applied in the order of these
    /// calls; the returned future resolves once its batch is durable (or refused).
    pub async fn enqueue(
        &self,
        envelope: NewEnvelope,
    ) -> Result<impl Future<Output = Result<Accepted, AppendError>> + use<>, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Message::Append(Box::new(envelope), tx))
            .await
            .map_err(|_| stopped())?;
        Ok(async move { rx.await.map_err(|_| stopped())? })
    }

    /// The latest committed sequence number, updated after every commit.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.latest.clone()
    }

    /// Becomes `Some(reason)` when a commit fails because the disk did: the store takes
    /// no more writes until it is opened again.
    pub fn disk_failure(&self) -> watch::Receiver<Option<String>> {
        self.disk.clone()
    }

    /// Appends an audit record; resolves with its number once it is durable.
    pub async fn audit(&self, record: AuditRecord) -> Result<u64, AppendError> {
        self.send_audit(|tx| Message::Audit(Box::new(record), tx))
            .await
    }

    /// Rewrites audit record `number` (written with `in_progress` set before a read
    /// began) with what the read returned so far — `record.in_progress` says whether it
    /// goes on; the record's time stays the time the read began.
    pub async fn update_audit(&self, number: u64, record: AuditRecord) -> Result<u64, AppendError> {
        self.send_audit(|tx| Message::UpdateAudit(number, Box::new(record), tx))
            .await
    }

    async fn send_audit(
        &self,
        message: impl FnOnce(AuditReply) -> Message,
    ) -> Result<u64, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(message(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> AppendError {
    AppendError::Store("the store writer has stopped".to_owned())
}

impl WriterThread {
    /// Commits everything queued so far, then stops the thread and waits for it.
    pub async fn stop(self) {
        let _ = self.queue.send(Message::Stop).await;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn run(
    db: &Database,
    mut rx: mpsc::Receiver<Message>,
    clock: &Clock,
    max_batch: usize,
    published: &watch::Sender<u64>,
    disk_failed: &watch::Sender<Option<String>>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut stopping = false;
    let take = |message: Message, batch: &mut Vec<Job>, stopping: &mut bool| match message {
        Message::Append(envelope, reply) => batch.push(Job::Append(envelope, reply)),
        Message::Audit(record, reply) => batch.push(Job::Audit(record, reply)),
        Message::UpdateAudit(number, record, reply) => {
            batch.push(Job::UpdateAudit(number, record, reply));
        }
        Message::Stop => *stopping = true,
    };
    while !stopping {
        match rx.blocking_recv() {
            Some(message) => take(message, &mut batch, &mut stopping),
            None => stopping = true,
        }
        while batch.len() < max_batch && !stopping {
            match rx.try_recv() {
                Ok(message) => take(message, &mut batch, &mut stopping),
                Err(_) => break,
            }
        }
        if stopping {
            // Refuse what arrives from now on; take what is already queued.
            rx.close();
            while let Ok(message) = rx.try_recv() {
                take(message, &mut batch, &mut stopping);
            }
        }
        if batch.is_empty() {
            continue;
        }
        match commit_batch(db, &batch, clock.now()) {
            Ok(results) => {
                let newest = results
                    .iter()
                    .filter_map(|done| match done {
                        Done::Append(Ok(a)) if !a.duplicate => Some(a.sequence),
                        _ => None,
                    })
                    .max();
                if let Some(sequence) = newest {
                    published.send_replace(sequence);
                }
                for (job, result) in batch.drain(..).zip(results) {
                    match (job, result) {
                        (Job::Append(_, reply), Done::Append(result)) => {
                            let _ = reply.send(result);
                        }
                        (
                            Job::Audit(_, reply) | Job::UpdateAudit(_, _, reply),
                            Done::Audit(number),
                        ) => {
                            let _ = reply.send(Ok(number));
                        }
                        // Invariant: commit_batch answers each job in order, in kind.
                        _ => unreachable!("a batch result out of order"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "a write batch failed to commit");
                if e.is_disk_failure() {
                    disk_failed.send_replace(Some(e.to_string()));
                }
                let failure = || AppendError::Store(e.to_string());
                for job in batch.drain(..) {
                    match job {
                        Job::Append(_, reply) => {
                            let _ = reply.send(Err(failure()));
                        }
                        Job::Audit(_, reply) | Job::UpdateAudit(_, _, reply) => {
                            let _ = reply.send(Err(failure()));
                        }
                    }
                }
            }
        }
    }
}

enum Done {
    Append(Result<Accepted, AppendError>),
    Audit(u64),
}

/// The tables one batch writes.
struct Tables<'t> {
    envelopes: redb::Table<'t, u64, &'static [u8]>,
    reports: redb::Table<'t, u128, &'static [u8]>,
    contributions: redb::Table<'t, (&'static str, i32, i64, u128), ()>,
    by_date: redb::Table<'t, (i32, i32, u128), ()>,
    by_state: redb::Table<'t, (&'static str, i32, i32, u128), ()>,
    audit: redb::Table<'t, u64, &'static [u8]>,
    audit_by_owner: redb::Table<'t, (&'static str, u64), u64>,
    counters: redb::Table<'t, &'static [u8], &'static [u8]>,
    fees: redb::Table<'t, &'static [u8], &'static [u8]>,
}

fn commit_batch(db: &Database, batch: &[Job], now: i64) -> Result<Vec<Done>, StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_two_phase_commit(true);
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = Tables {
            envelopes: tx.open_table(ENVELOPES)?,
            reports: tx.open_table(REPORTS)?,
            contributions: tx.open_table(CONTRIBUTIONS)?,
            by_date: tx.open_table(BY_DATE)?,
            by_state: tx.open_table(BY_STATE)?,
            audit: tx.open_table(AUDIT)?,
            audit_by_owner: tx.open_table(AUDIT_BY_OWNER)?,
            counters: tx.open_table(COUNTERS)?,
            fees: tx.open_table(FEES)?,
        };
        let mut deltas = counters::Deltas::default();
        let mut next_sequence = t.envelopes.last()?.map_or(1, |(k, _)| k.value() + 1);
        let mut next_audit = t.audit.last()?.map_or(1, |(k, _)| k.value() + 1);
        for job in batch {
            match job {
                Job::Append(new, _) => {
                    results.push(Done::Append(append(
                        &mut t,
                        &mut deltas,
                        new,
                        &mut next_sequence,
                        now,
                    )?));
                }
                Job::Audit(record, _) => {
                    let number = next_audit;
                    next_audit += 1;
                    put_audit(&mut t, number, record, now)?;
                    results.push(Done::Audit(number));
                }
                Job::UpdateAudit(number, record, _) => {
                    let started: Option<AuditRecord> = t
                        .audit
                        .get(*number)?
                        .map(|v| decode(v.value()))
                        .transpose()?;
                    let at = started.map_or(now, |s| s.at);
                    put_audit(&mut t, *number, record, at)?;
                    results.push(Done::Audit(*number));
                }
            }
        }
        deltas.write(&mut t.counters, &mut t.fees)?;
    }
    tx.commit()?;
    Ok(results)
}

/// Writes audit record `number` as of `at`, indexed by each owner whose reports it
/// returned (an owner reading its own reports is not indexed).
fn put_audit(
    t: &mut Tables<'_>,
    number: u64,
    record: &AuditRecord,
    at: i64,
) -> Result<(), StoreError> {
    let record = AuditRecord {
        at,
        ..record.clone()
    };
    for owner in &record.owners {
        if owner.owner != record.state {
            t.audit_by_owner
                .insert((owner.owner.as_str(), number), owner.count)?;
        }
    }
    t.audit.insert(number, record.encode_to_vec().as_slice())?;
    Ok(())
}

/// Applies one envelope: version rules, the envelope, the report head and its indexes.
fn append(
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    new: &NewEnvelope,
    next_sequence: &mut u64,
    accepted_at: i64,
) -> Result<Result<Accepted, AppendError>, StoreError> {
    let key = new.report_id.as_u128();
    let head: Option<ReportHead> = t.reports.get(key)?.map(|v| decode(v.value())).transpose()?;
    match check(new, head.as_ref()) {
        Check::Refuse(e) => Ok(Err(e)),
        Check::Duplicate(sequence) => {
            let stored: EnvelopeRecord = t
                .envelopes
                .get(sequence)?
                .map(|v| decode(v.value()))
                .transpose()?
                .ok_or_else(|| StoreError::Corrupt(format!("envelope {sequence} is missing")))?;
            Ok(Ok(Accepted {
                sequence,
                receipt: receipt_facts(sequence, &stored)?,
                duplicate: true,
            }))
        }
        Check::Append => {
            let sequence = *next_sequence;
            *next_sequence += 1;
            let state = new.state.as_str();
            let mut head = head.unwrap_or_else(|| ReportHead {
                state: state.to_owned(),
                first_accepted_at: accepted_at,
                ..ReportHead::default()
            });
            head.versions.push(VersionRef {
                version: new.version,
                sequence,
                digest: new.digest.to_vec(),
                scope: new.summary.as_ref().map_or(0, |s| s.scope),
                listed_states: new
                    .summary
                    .as_ref()
                    .map(|s| s.listed_states.clone())
                    .unwrap_or_default(),
            });
            head.changed_at = accepted_at;
            update_indexes(t, deltas, new, &mut head, key)?;
            let receipt = pb::Receipt {
                sequence,
                envelope_digest: new.digest.to_vec(),
                reporting_state: state.to_owned(),
                report_id: new.report_id.to_string(),
                version: new.version,
                accepted_at_unix: accepted_at,
                kind: new.kind.label().to_owned(),
            };
            let record = EnvelopeRecord {
                envelope: new.envelope.clone(),
                state: state.to_owned(),
                report_id: new.report_id.as_bytes().to_vec(),
                version: new.version,
                accepted_at,
                digest: new.digest.to_vec(),
                kind: new.kind.code(),
                category: head.category,
                key_id: new.key_id.clone(),
            };
            t.envelopes
                .insert(sequence, record.encode_to_vec().as_slice())?;
            t.reports.insert(key, head.encode_to_vec().as_slice())?;
            Ok(Ok(Accepted {
                sequence,
                receipt,
                duplicate: false,
            }))
        }
    }
}

/// Keeps the contribution and date indexes and the aggregate counters in step with the
/// report's latest version.
fn update_indexes(
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    new: &NewEnvelope,
    head: &mut ReportHead,
    key: u128,
) -> Result<(), StoreError> {
    let state = new.state.as_str();
    let old = head.summary.clone();
    match (&new.summary, new.kind) {
        (Some(summary), EnvelopeKind::Report) => {
            if let Some(old) = &old {
                t.by_date.remove((old.category, old.incident_day, key))?;
                t.by_state
                    .remove((state, old.category, old.incident_day, key))?;
                t.contributions
                    .remove((state, old.category, head.first_accepted_at, key))?;
                deltas.record(old, state, -1)?;
            }
            deltas.record(summary, state, 1)?;
            t.by_date
                .insert((summary.category, summary.incident_day, key), ())?;
            t.by_state
                .insert((state, summary.category, summary.incident_day, key), ())?;
            t.contributions
                .insert((state, summary.category, head.first_accepted_at, key), ())?;
            head.category = summary.category;
            head.summary = Some(summary.clone());
        }
        (_, EnvelopeKind::Retraction) => {
            // A retracted report no longer counts as a contribution nor in aggregates; it
            // stays in the date indexes so that sync and audits still find it.
            if let Some(old) = &old {
                t.contributions
                    .remove((state, old.category, head.first_accepted_at, key))?;
                deltas.record(old, state, -1)?;
            }
            head.retracted = true;
        }
        (None, EnvelopeKind::Report) => {
            return Err(StoreError::Corrupt(
                "a report without its summary".to_owned(),
            ));
        }
    }
    Ok(())
}

/// What the receipt of a stored envelope states.
fn receipt_facts(sequence: u64, stored: &EnvelopeRecord) -> Result<pb::Receipt, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("envelope {sequence}: {what}"));
    let id = Uuid::from_slice(&stored.report_id).map_err(|_| corrupt("report id"))?;
    let kind = EnvelopeKind::from_code(stored.kind).ok_or_else(|| corrupt("kind"))?;
    Ok(pb::Receipt {
        sequence,
        envelope_digest: stored.digest.clone(),
        reporting_state: stored.state.clone(),
        report_id: id.to_string(),
        version: stored.version,
        accepted_at_unix: stored.accepted_at,
        kind: kind.label().to_owned(),
    })
}

enum Check {
    Append,
    Duplicate(u64),
    Refuse(AppendError),
}

/// The version rules: idempotent re-submission, no conflicting content, only the owner
/// amends, versions in order, nothing after a retraction.
fn check(new: &NewEnvelope, head: Option<&ReportHead>) -> Check {
    let id = new.report_id;
    let Some(head) = head else {
        return match new.kind {
            EnvelopeKind::Retraction => Check::Refuse(AppendError::NothingToRetract { id }),
            EnvelopeKind::Report if new.version == 1 => Check::Append,
            EnvelopeKind::Report => Check::Refuse(AppendError::FirstVersion {
                id,
                got: new.version,
            }),
        };
    };
    if head.state != new.state.as_str() {
        return Check::Refuse(AppendError::NotOwner {
            id,
            owner: head.state.clone(),
        });
    }
    let latest = head.versions.last().map_or(0, |v| v.version);
    if let Some(existing) = head.versions.iter().find(|v| v.version == new.version) {
        if existing.digest == new.digest {
            return Check::Duplicate(existing.sequence);
        }
        return Check::Refuse(AppendError::Conflict {
            id,
            version: new.version,
            stored: hex::encode(&existing.digest),
            submitted: hex::encode(new.digest),
            next: latest + 1,
        });
    }
    if head.retracted {
        return Check::Refuse(AppendError::Retracted { id });
    }
    if new.version != latest + 1 {
        return Check::Refuse(AppendError::VersionOrder {
            id,
            latest,
            expected: latest + 1,
            got: new.version,
        });
    }
    Check::Append
}
