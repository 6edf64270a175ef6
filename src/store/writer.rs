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
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{ENVELOPES, EnvelopeRecord, REPORTS, ReportHead, StoreError, VersionRef, decode};
use crate::{country::CountryCode, pb};

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
    /// For reports; a retraction inherits the report's category.
    pub category: pb::Category,
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

enum Message {
    Append(Box<NewEnvelope>, Reply),
    /// Finish what is queued, then stop.
    Stop,
}

/// Handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Message>,
}

/// The writer thread itself: [`WriterThread::stop`] commits what is queued, stops the
/// thread and releases its hold on the database.
pub struct WriterThread {
    queue: mpsc::Sender<Message>,
    thread: thread::JoinHandle<()>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>, max_batch: usize) -> (Self, WriterThread) {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let thread = thread::Builder::new()
            .name("tidemark-writer".to_owned())
            .spawn(move || run(&db, rx, max_batch))
            // Invariant: spawning fails only if the OS is out of threads at start-up.
            .expect("start the store writer thread");
        (
            Self {
                queue: queue.clone(),
            },
            WriterThread { queue, thread },
        )
    }

    /// Queues an envelope; resolves once its batch is durable (or refused).
    pub async fn append(&self, envelope: NewEnvelope) -> Result<Accepted, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Message::Append(Box::new(envelope), tx))
            .await
            .map_err(|_| AppendError::Store("the store writer has stopped".to_owned()))?;
        rx.await
            .map_err(|_| AppendError::Store("the store writer stopped mid-batch".to_owned()))?
    }
}

impl WriterThread {
    /// Commits everything queued so far, then stops the thread and waits for it.
    pub async fn stop(self) {
        let _ = self.queue.send(Message::Stop).await;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn run(db: &Database, mut rx: mpsc::Receiver<Message>, max_batch: usize) {
    let mut batch: Vec<(Box<NewEnvelope>, Reply)> = Vec::with_capacity(max_batch);
    let mut stopping = false;
    while !stopping {
        match rx.blocking_recv() {
            Some(Message::Append(envelope, reply)) => batch.push((envelope, reply)),
            Some(Message::Stop) | None => stopping = true,
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Message::Append(envelope, reply)) => batch.push((envelope, reply)),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if stopping {
            // Refuse what arrives from now on; take what is already queued.
            rx.close();
            while let Ok(message) = rx.try_recv() {
                if let Message::Append(envelope, reply) = message {
                    batch.push((envelope, reply));
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let envelopes: Vec<&NewEnvelope> = batch.iter().map(|(e, _)| e.as_ref()).collect();
        match commit_batch(db, &envelopes) {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "a submission batch failed to commit");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(AppendError::Store(e.to_string())));
                }
            }
        }
    }
}

fn commit_batch(
    db: &Database,
    batch: &[&NewEnvelope],
) -> Result<Vec<Result<Accepted, AppendError>>, StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_two_phase_commit(true);
    let accepted_at = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut envelopes = tx.open_table(ENVELOPES)?;
        let mut reports = tx.open_table(REPORTS)?;
        let mut next_sequence = envelopes.last()?.map_or(1, |(k, _)| k.value() + 1);
        for new in batch {
            let key = new.report_id.as_u128();
            let head: Option<ReportHead> =
                reports.get(key)?.map(|v| decode(v.value())).transpose()?;
            match check(new, head.as_ref()) {
                Check::Duplicate(sequence) => {
                    let stored: EnvelopeRecord = envelopes
                        .get(sequence)?
                        .map(|v| decode(v.value()))
                        .transpose()?
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("envelope {sequence} is missing"))
                        })?;
                    results.push(Ok(Accepted {
                        sequence,
                        receipt: receipt_facts(sequence, &stored)?,
                        duplicate: true,
                    }));
                }
                Check::Refuse(e) => results.push(Err(e)),
                Check::Append => {
                    let sequence = next_sequence;
                    next_sequence += 1;
                    let mut head = head.unwrap_or_else(|| ReportHead {
                        state: new.state.to_string(),
                        category: new.category as i32,
                        retracted: false,
                        versions: Vec::new(),
                    });
                    head.versions.push(VersionRef {
                        version: new.version,
                        sequence,
                        digest: new.digest.to_vec(),
                    });
                    if new.kind == EnvelopeKind::Retraction {
                        head.retracted = true;
                    }
                    let receipt = pb::Receipt {
                        sequence,
                        envelope_digest: new.digest.to_vec(),
                        reporting_state: new.state.to_string(),
                        report_id: new.report_id.to_string(),
                        version: new.version,
                        accepted_at_unix: accepted_at,
                        kind: new.kind.label().to_owned(),
                    };
                    let record = EnvelopeRecord {
                        envelope: new.envelope.clone(),
                        state: new.state.to_string(),
                        report_id: new.report_id.as_bytes().to_vec(),
                        version: new.version,
                        accepted_at,
                        digest: new.digest.to_vec(),
                        kind: new.kind.code(),
                        category: head.category,
                        key_id: new.key_id.clone(),
                    };
                    envelopes.insert(sequence, record.encode_to_vec().as_slice())?;
                    reports.insert(key, head.encode_to_vec().as_slice())?;
                    results.push(Ok(Accepted {
                        sequence,
                        receipt,
                        duplicate: false,
                    }));
                }
            }
        }
    }
    tx.commit()?;
    Ok(results)
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
