//! The one writer: group commit of accepted envelopes, audit records, privacy-budget
//! charges and administrative changes (each with its audit record).
//!
//! Jobs queue on a channel; a dedicated thread takes everything queued (up to a batch
//! limit), applies each job in one redb write transaction ([`super::apply`]), commits
//! durably, and only then answers each caller. Administrative changes queue on a channel
//! of their own and go first into the next batch, ahead of whatever waits on the other:
//! a revocation or suspension is stored, and so enforced, within a batch or two however
//! many envelopes are queued (under an import's load it waited seconds behind them), and
//! the envelopes it overtakes are refused when their turn comes ([`super::admission`]). Version rules are checked inside the
//! transaction, so two submissions of the same report in one batch see each other.
//!
//! The writer hands back the accepted facts, not a signature: the receipt is made on the
//! caller's task after the commit ([`crate::receipt`]), in parallel, keeping the writer's
//! critical section short.
//!
//! Between batches — once the queue has been empty for a moment, or after a second of
//! load without one — the writer brings the quarter counter rows that batches marked
//! behind up to date, a few quarters per transaction ([`CatchUp`]).

use std::{
    collections::BTreeSet,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use redb::{Database, ReadableTableMetadata};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    AuditRecord, COUNTER_QUARTERS, COUNTERS, EnvelopeKind, KeyCache, ProjectionCell,
    QUARTERS_BEHIND, StoreError,
    admin::{self, AdminApplied, AdminChange, AdminWriteError},
    admission::Admission,
    apply::{self, Accepted, AppendError, NewEnvelope, Tables},
    budget::{self, BudgetCharge, BudgetError},
    counters,
    leaves::LeafIndex,
    projection::Change,
    seen_keys::SeenKey,
};
use crate::{clock::Clock, metrics::Metrics, report::Category, tlog::LogSigner};

type Reply = oneshot::Sender<Result<Accepted, AppendError>>;
type AuditReply = oneshot::Sender<Result<u64, AppendError>>;
type BudgetReply = oneshot::Sender<Result<u64, BudgetError>>;
type AdminOutcome = Result<(AdminApplied, u64), AdminWriteError>;
type AdminReply = oneshot::Sender<AdminOutcome>;

/// An administrative change and who asked for it (a SPIFFE ID), for its audit record.
struct AdminJob {
    change: AdminChange,
    operator: String,
}

enum Message {
    Append(Box<NewEnvelope>, Reply),
    Audit(Box<AuditRecord>, AuditReply),
    UpdateAudit(u64, Box<AuditRecord>, Option<Stands>, AuditReply),
    Budget(Box<BudgetCharge>, BudgetReply),
    Admin(Box<AdminJob>, AdminReply),
    SeenKey(Box<SeenKey>),
    /// Finish what is queued, then stop.
    Stop,
}

/// One unit of work in a batch.
enum Job {
    Append(Box<NewEnvelope>, Reply),
    Audit(Box<AuditRecord>, AuditReply),
    /// Rewrites an in-progress audit record with what its read returned so far, if its
    /// reader still stands, when it must.
    UpdateAudit(u64, Box<AuditRecord>, Option<Stands>, AuditReply),
    /// Charges or refunds a privacy budget.
    Budget(Box<BudgetCharge>, BudgetReply),
    /// An administrative change and its audit record.
    Admin(Box<AdminJob>, AdminReply),
    /// Keeps the key of a certificate a handshake presented; nobody waits for it.
    SeenKey(Box<SeenKey>),
}

/// Handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Message>,
    /// Administrative changes, taken before anything on `queue`.
    urgent: mpsc::Sender<Message>,
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
        (log, metrics, projection, keys, trail, leaves): Shared,
    ) -> Result<(Self, WriterThread), StoreError> {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let (urgent, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let (published, latest) = watch::channel(latest_sequence);
        let (disk_failed, disk) = watch::channel(None);
        // The writer is no tokio task: its waits with a timeout run on a clock of its own.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Open {
                path: "writer thread".to_owned(),
                reason: format!("cannot start the store writer's timer: {e}"),
            })?;
        let thread = thread::Builder::new()
            .name("tidemark-writer".to_owned())
            .spawn(move || {
                let ends = Ends {
                    published: &published,
                    disk_failed: &disk_failed,
                    metrics: &metrics,
                    projection: &projection,
                    keys: &keys,
                    trail: &trail,
                    leaves: &leaves,
                };
                let queues = Queues {
                    urgent: urgent_rx,
                    queue: rx,
                };
                run(&db, queues, (&clock, max_batch, &timer), &ends, &log);
            })
            .map_err(|e| StoreError::Open {
                path: "writer thread".to_owned(),
                reason: format!("cannot start the store writer thread: {e}"),
            })?;
        Ok((
            Self {
                queue: queue.clone(),
                urgent,
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
    pub(crate) async fn enqueue(
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

    /// Keeps `seen`'s key in the store with the next batch, if the queue has room (the
    /// server also holds it in memory until it stops: a key lost here is only not
    /// known after a restart).
    pub(crate) fn keep_seen_key(&self, seen: SeenKey) {
        let _ = self.queue.try_send(Message::SeenKey(Box::new(seen)));
    }

    /// The latest committed sequence number, updated after every commit that stores an
    /// envelope; marked changed (the same number) after one that changes signing keys,
    /// whose revocation may take contributions away.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.latest.clone()
    }

    /// Becomes `Some(reason)` when a commit fails because the disk did: the store takes
    /// no more writes until it is opened again.
    pub(crate) fn disk_failure(&self) -> watch::Receiver<Option<String>> {
        self.disk.clone()
    }

    /// Appends an audit record; resolves with its number once it is durable.
    pub(crate) async fn audit(&self, record: AuditRecord) -> Result<u64, AppendError> {
        self.send_audit(|tx| Message::Audit(Box::new(record), tx))
            .await
    }

    /// Rewrites audit record `number` (written with `in_progress` set before a read
    /// began) with what the read returned so far — `record.in_progress` says whether it
    /// goes on; the record's time stays the time the read began.
    pub(crate) async fn update_audit(
        &self,
        number: u64,
        record: AuditRecord,
    ) -> Result<u64, AppendError> {
        self.send_audit(|tx| Message::UpdateAudit(number, Box::new(record), None, tx))
            .await
    }

    /// [`Self::update_audit`] for a record that grows what a read may send of other
    /// states' reports: written only if its reader's standing, as checked, still holds
    /// where the record lands in the log ([`Stands`]); refused with
    /// [`AppendError::StandingUnsure`] otherwise, for the reader to check it again.
    pub(crate) async fn raise_audit(
        &self,
        number: u64,
        record: AuditRecord,
        stands: Stands,
    ) -> Result<u64, AppendError> {
        self.send_audit(|tx| Message::UpdateAudit(number, Box::new(record), Some(stands), tx))
            .await
    }

    /// Charges (or refunds) a privacy budget; resolves with the micro-ρ spent after it
    /// once that is durable, or with the refusal.
    pub(crate) async fn charge_budget(&self, charge: BudgetCharge) -> Result<u64, BudgetError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Message::Budget(Box::new(charge), tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies an administrative change asked for by `operator` (a SPIFFE ID) in one
    /// transaction with its audit record, and so with its log leaf; returns what the
    /// change left and the record's number once both are durable. A change the key
    /// registry refuses writes nothing.
    ///
    /// Blocks: call it from a blocking thread, not from an async task.
    pub(crate) fn admin_blocking(
        &self,
        change: AdminChange,
        operator: &str,
    ) -> Result<(AdminApplied, u64), AdminWriteError> {
        self.queue_admin(change, operator)?
            .blocking_recv()
            .map_err(|_| not_written())?
    }

    /// Queues an administrative change (ahead of everything else queued); the receiver
    /// gets its outcome once it is durable.
    pub(super) fn queue_admin(
        &self,
        change: AdminChange,
        operator: &str,
    ) -> Result<oneshot::Receiver<AdminOutcome>, AdminWriteError> {
        let (tx, rx) = oneshot::channel();
        let job = AdminJob {
            change,
            operator: operator.to_owned(),
        };
        self.urgent
            .blocking_send(Message::Admin(Box::new(job), tx))
            .map_err(|_| not_written())?;
        Ok(rx)
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

fn not_written() -> AdminWriteError {
    AdminWriteError::NotWritten(stopped().to_string())
}

/// Administrative changes that may wait at once; each operator call waits for its own.
const URGENT_QUEUE: usize = 64;

/// The writer's two queues: administrative changes, then everything else.
struct Queues {
    urgent: mpsc::Receiver<Message>,
    queue: mpsc::Receiver<Message>,
}

impl Queues {
    /// The next message, administrative changes first; waits for one at most `idle`
    /// when given (woken as soon as one arrives).
    fn next(&mut self, idle: Option<Duration>, timer: &tokio::runtime::Runtime) -> Polled {
        // The timeout is made inside the timer's runtime, whose clock it needs.
        let next = timer.block_on(async {
            let either = async {
                tokio::select! {
                    biased;
                    Some(message) = self.urgent.recv() => Some(message),
                    message = self.queue.recv() => message,
                }
            };
            match idle {
                Some(idle) => tokio::time::timeout(idle, either).await,
                None => Ok(either.await),
            }
        });
        match next {
            Ok(Some(message)) => Polled::Message(message),
            Ok(None) => Polled::Closed,
            Err(_) => Polled::Idle,
        }
    }

    /// Hands `take` every administrative change queued now.
    fn take_urgent(&mut self, mut take: impl FnMut(Message)) {
        while let Ok(change) = self.urgent.try_recv() {
            take(change);
        }
    }

    /// Refuses what arrives from now on.
    fn close(&mut self) {
        self.urgent.close();
        self.queue.close();
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

/// Where the writer reports what it did.
struct Ends<'a> {
    /// The newest committed sequence number.
    published: &'a watch::Sender<u64>,
    /// Why the disk failed, once it has.
    disk_failed: &'a watch::Sender<Option<String>>,
    metrics: &'a Metrics,
    /// The columnar projection, given each batch's changes after its commit.
    projection: &'a ProjectionCell,
    /// The signing keys held in memory, dropped after a batch that changed them.
    keys: &'a KeyCache,
    /// The trail journal, given each batch's audit records after its commit.
    trail: &'a super::trail::TrailCell,
    /// The log's leaf index, for finding a duplicate's leaf.
    leaves: &'a Arc<LeafIndex>,
}

fn run(
    db: &Database,
    mut queues: Queues,
    (clock, max_batch, timer): (&Clock, usize, &tokio::runtime::Runtime),
    ends: &Ends<'_>,
    log: &LogSigner,
) {
    // Grown as batches need: `max_batch` may be far larger than any batch gets.
    let mut batch: Vec<Job> = Vec::new();
    let mut stopping = false;
    let take = |message: Message, batch: &mut Vec<Job>, stopping: &mut bool| match message {
        Message::Append(envelope, reply) => batch.push(Job::Append(envelope, reply)),
        Message::Audit(record, reply) => batch.push(Job::Audit(record, reply)),
        Message::UpdateAudit(number, record, stands, reply) => {
            batch.push(Job::UpdateAudit(number, record, stands, reply));
        }
        Message::Budget(charge, reply) => batch.push(Job::Budget(charge, reply)),
        Message::Admin(job, reply) => batch.push(Job::Admin(job, reply)),
        Message::SeenKey(seen) => batch.push(Job::SeenKey(seen)),
        Message::Stop => *stopping = true,
    };
    // Quarter counter rows may be behind from before this start.
    let mut catch_up = CatchUp::new(db, ends.disk_failed);
    let mut lowered = Lowered::new();
    while !stopping {
        let idle = catch_up.behind.then_some(IDLE_BEFORE_CATCH_UP);
        let message = match queues.next(idle, timer) {
            Polled::Message(message) => Some(message),
            Polled::Idle => {
                catch_up.step();
                continue;
            }
            Polled::Closed => None,
        };
        // Administrative changes first, in their order, also those that came meanwhile.
        match message {
            Some(change @ Message::Admin(..)) => {
                take(change, &mut batch, &mut stopping);
                queues.take_urgent(|m| take(m, &mut batch, &mut stopping));
            }
            Some(message) => {
                queues.take_urgent(|m| take(m, &mut batch, &mut stopping));
                take(message, &mut batch, &mut stopping);
            }
            None => stopping = true,
        }
        while batch.len() < max_batch && !stopping {
            match queues.queue.try_recv() {
                Ok(message) => take(message, &mut batch, &mut stopping),
                Err(_) => break,
            }
        }
        if stopping {
            // Refuse what arrives from now on; take what is already queued.
            queues.close();
            queues.take_urgent(|m| take(m, &mut batch, &mut stopping));
            while let Ok(message) = queues.queue.try_recv() {
                take(message, &mut batch, &mut stopping);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let committed = commit_batch(db, &batch, (clock.now(), &mut lowered), (log, ends.leaves));
        match committed {
            Ok((results, changes, (trail, log_size))) => {
                // Every batch, so that what the journal covers has no gap.
                if let Some(journal) = ends
                    .trail
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_mut()
                {
                    journal.append(&trail, log_size);
                }
                ends.metrics
                    .batch_committed(batch.len(), started.elapsed().as_secs_f64());
                let newest = results
                    .iter()
                    .filter_map(|done| match done {
                        Done::Append(Ok(a)) if !a.duplicate => Some(a.sequence),
                        _ => None,
                    })
                    .max();
                project(ends.projection, &changes, newest);
                let keys_changed = batch
                    .iter()
                    .any(|job| matches!(job, Job::Admin(a, _) if a.change.touches_keys()));
                if keys_changed {
                    ends.keys.forget();
                }
                if !changes.is_empty() {
                    catch_up.marked();
                }
                if let Some(sequence) = newest {
                    ends.published.send_replace(sequence);
                } else if keys_changed {
                    // No new envelope, but a key's revocation may have taken contributions
                    // away: open reads re-check their standing as after any commit.
                    ends.published.send_modify(|_| {});
                }
                answer(&mut batch, results, ends.metrics);
                if catch_up.overdue() {
                    // Busy without a pause: catch up now and then all the same.
                    catch_up.step();
                }
            }
            Err(e) => fail(&mut batch, &e, ends.disk_failed),
        }
    }
}

/// Answers each job of a committed batch with its result.
fn answer(batch: &mut Vec<Job>, results: Vec<Done>, metrics: &Metrics) {
    for (job, result) in batch.drain(..).zip(results) {
        match (job, result) {
            (Job::Append(_, reply), Done::Append(result)) => {
                let _ = reply.send(result);
            }
            (Job::Audit(_, reply), Done::Audit(number)) => {
                metrics.audit_written();
                let _ = reply.send(Ok(number));
            }
            (Job::UpdateAudit(_, _, _, reply), Done::Audit(number)) => {
                let _ = reply.send(Ok(number));
            }
            (Job::UpdateAudit(_, _, _, reply), Done::StandingUnsure) => {
                let _ = reply.send(Err(AppendError::StandingUnsure));
            }
            (Job::Budget(_, reply), Done::Budget(result)) => {
                let _ = reply.send(result);
            }
            (Job::Admin(_, reply), Done::Admin(result)) => {
                if result.is_ok() {
                    metrics.audit_written();
                }
                let _ = reply.send(result);
            }
            (Job::SeenKey(_), Done::SeenKey) => {}
            // Invariant: commit_batch answers each job in order, in kind.
            _ => unreachable!("a batch result out of order"),
        }
    }
}

/// Answers each job of a batch that failed to commit with the failure.
fn fail(batch: &mut Vec<Job>, e: &StoreError, disk_failed: &watch::Sender<Option<String>>) {
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
            Job::Audit(_, reply) | Job::UpdateAudit(_, _, _, reply) => {
                let _ = reply.send(Err(failure()));
            }
            Job::Budget(_, reply) => {
                let _ = reply.send(Err(BudgetError::Store(failure())));
            }
            Job::Admin(_, reply) => {
                let _ = reply.send(Err(AdminWriteError::Failed(e.to_string())));
            }
            Job::SeenKey(_) => {}
        }
    }
}

/// Quarters whose counter rows one catch-up brings up to date: few enough that a batch
/// arriving meanwhile does not wait long (about 0.7 ms a quarter with 1M reports: the
/// 56 quarters of seven years and two categories took 39 ms).
const QUARTERS_PER_CATCH_UP: usize = 16;

/// Under load without a pause, quarter rows are still caught up after this long.
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// How long the queue must stay empty before the writer catches up, so that under light
/// load a submission seldom waits behind a catch-up.
const IDLE_BEFORE_CATCH_UP: Duration = Duration::from_millis(20);

enum Polled {
    Message(Message),
    Idle,
    Closed,
}

/// The writer's catch-up of quarter counter rows ([`counters::catch_up_quarters`]).
struct CatchUp<'a> {
    db: &'a Database,
    disk_failed: &'a watch::Sender<Option<String>>,
    /// Whether quarters may be behind.
    behind: bool,
    /// Since when quarters have been behind without a pause in the queue to catch up in.
    since: Instant,
    /// Quarters whose rows cannot be made from their months (logged once each): left
    /// marked, so read from their months, and not tried again until the next start.
    skip: BTreeSet<(u8, u32)>,
}

impl<'a> CatchUp<'a> {
    fn new(db: &'a Database, disk_failed: &'a watch::Sender<Option<String>>) -> Self {
        Self {
            db,
            disk_failed,
            behind: true,
            since: Instant::now(),
            skip: BTreeSet::new(),
        }
    }

    /// A batch changed counters: its quarters are behind.
    fn marked(&mut self) {
        if !self.behind {
            self.behind = true;
            self.since = Instant::now();
        }
    }

    /// Whether quarters have been behind for [`CATCH_UP_EVERY`] of load without a pause.
    fn overdue(&self) -> bool {
        self.behind && self.since.elapsed() >= CATCH_UP_EVERY
    }

    /// Brings a few quarters up to date in a write transaction of their own, made like
    /// the batches' (two-phase, durable: a commit left unflushed would keep every page it
    /// frees from reuse until the next flushed one, and an idle writer has none). After
    /// a failure of the store (logged) it waits for the writer's next change.
    fn step(&mut self) {
        let started = Instant::now();
        match self.try_step() {
            Ok((0, left)) => self.behind = left > 0,
            Ok((caught_up, left)) => {
                tracing::debug!(
                    caught_up,
                    left,
                    took = ?started.elapsed(),
                    "quarter counter rows caught up"
                );
                self.behind = left > 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "quarter counter rows could not be brought up to date");
                if e.is_disk_failure() {
                    self.disk_failed.send_replace(Some(e.to_string()));
                }
                self.behind = false;
            }
        }
        self.since = Instant::now();
    }

    /// Returns how many quarters were brought up to date, and how many are still
    /// behind (besides those skipped).
    fn try_step(&mut self) -> Result<(usize, u64), StoreError> {
        let mut tx = self.db.begin_write()?;
        if tx.open_table(QUARTERS_BEHIND)?.is_empty()? {
            tx.abort()?;
            return Ok((0, 0));
        }
        tx.set_two_phase_commit(true);
        let done = counters::catch_up_quarters(
            &tx.open_table(COUNTERS)?,
            &mut tx.open_table(COUNTER_QUARTERS)?,
            &mut tx.open_table(QUARTERS_BEHIND)?,
            (QUARTERS_PER_CATCH_UP, &self.skip),
        )?;
        tx.commit()?;
        for ((code, quarter), e) in done.failed {
            let category = Category::from_pb(i32::from(code)).map_or("unknown", Category::label);
            tracing::error!(
                category,
                quarter = format!("{}-Q{}", quarter / 4, quarter % 4 + 1),
                error = %e,
                "a quarter's counter rows cannot be made from its months; it is read from them"
            );
            self.skip.insert((code, quarter));
        }
        Ok((done.caught_up, done.left))
    }
}

enum Done {
    Append(Result<Accepted, AppendError>),
    Audit(u64),
    /// A raise refused: its reader's standing may have changed ([`Stands`]).
    StandingUnsure,
    Budget(Result<u64, BudgetError>),
    Admin(Result<(AdminApplied, u64), AdminWriteError>),
    SeenKey,
}

/// Applies a committed batch's changes to the projection (before its callers are
/// answered, so that they read their own writes); `newest` is the batch's newest
/// envelope, `None` in a batch that stored none (whose changes can only be reports
/// leaving the aggregates: a key's compromise). A projection that cannot take them is
/// dropped, to be built again from the store on next use.
fn project(projection: &ProjectionCell, changes: &[Change], newest: Option<u64>) {
    if changes.is_empty() {
        return;
    }
    let mut cell = projection
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = cell.as_mut()
        && let Err(e) = match newest {
            Some(sequence) => p.apply(changes, sequence),
            None => p.remove(changes),
        }
    {
        tracing::error!(error = %e, "the aggregate projection is rebuilt from the store");
        *cell = None;
    }
}

/// Where each state's standing may last have dropped, per state. Kept across batches
/// while the writer runs; reads do not outlive it.
pub(super) type Lowered = std::collections::HashMap<String, LoweredAt>;

/// Where one state's standing may last have dropped.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LoweredAt {
    /// The sequence of its newest retraction or amendment (an amendment may move a
    /// report to another category) that this writer stored.
    sequence: u64,
    /// The audit record number of the newest revocation of one of its keys that
    /// stopped reports counting (a compromise, [`apply::follow_admin`]).
    audit: u64,
}

/// A reader's standing as checked, for a record that raises what its read may send: it
/// still holds where the record lands if its state has stored no retraction or
/// amendment after the snapshot it was checked on, and it has not lapsed with time.
#[derive(Debug, Clone)]
pub(crate) struct Stands {
    /// The reading state.
    pub(crate) state: String,
    /// The last envelope sequence of the snapshot the standing was checked on.
    pub(crate) through: u64,
    /// The last audit record number of that snapshot.
    pub(crate) through_audit: u64,
    /// The last second the standing holds by itself, Unix seconds.
    pub(crate) lapses_at: i64,
}

impl Stands {
    fn holds(&self, lowered: &Lowered, now: i64) -> bool {
        // A contribution counts while `now - window <= accepted` (the policy and the
        // replay alike), so its reader still stands at `lapses_at` itself.
        now <= self.lapses_at
            && lowered
                .get(&self.state)
                .is_none_or(|at| at.sequence <= self.through && at.audit <= self.through_audit)
    }
}

/// What the writer shares with the store: the log's signer, the metrics, the columnar
/// projection, the signing keys held in memory, the trail journal and the log's leaf
/// index.
pub(super) type Shared = (
    Arc<LogSigner>,
    Arc<Metrics>,
    Arc<ProjectionCell>,
    Arc<KeyCache>,
    Arc<super::trail::TrailCell>,
    Arc<LeafIndex>,
);

/// A committed batch: each job's outcome, the changes for the projection, and the audit
/// records for the trail journal with the log's size after the batch.
type Committed = (Vec<Done>, Vec<Change>, (Vec<super::trail::TrailLine>, u64));

fn commit_batch(
    db: &Database,
    batch: &[Job],
    (now, lowered): (i64, &mut Lowered),
    (log, leaves): (&LogSigner, &Arc<LeafIndex>),
) -> Result<Committed, StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_two_phase_commit(true);
    let mut results = Vec::with_capacity(batch.len());
    let (changes, trail, log_size);
    {
        let mut t = Tables::open(&tx, leaves)?;
        let mut deltas = counters::Deltas::keeping_changes(t.record_keys.clone());
        let mut next_sequence = t.next_sequence()?;
        let mut next_audit = t.next_audit()?;
        let mut admission = Admission::default();
        for job in batch {
            match job {
                Job::Append(new, _) => {
                    let done = match admission.refusal(&tx, new, now)? {
                        Some(refused) => Err(refused),
                        None => apply::append(&mut t, &mut deltas, new, &mut next_sequence, now)?,
                    };
                    if let Ok(accepted) = &done
                        && !accepted.duplicate
                        && (accepted.version > 1 || accepted.kind == EnvelopeKind::Retraction)
                    {
                        lowered.entry(accepted.state.clone()).or_default().sequence =
                            accepted.sequence;
                    }
                    results.push(Done::Append(done));
                }
                Job::Audit(record, _) => {
                    let number = next_audit;
                    next_audit += 1;
                    apply::put_audit(&mut t, number, record, (now, apply::detail_salt()), now)?;
                    results.push(Done::Audit(number));
                }
                Job::UpdateAudit(number, record, stands, _) => {
                    if stands.as_ref().is_some_and(|s| !s.holds(lowered, now)) {
                        results.push(Done::StandingUnsure);
                    } else {
                        apply::update_audit(&mut t, *number, record, now)?;
                        results.push(Done::Audit(*number));
                    }
                }
                Job::Budget(charge, _) => {
                    results.push(Done::Budget(budget::apply(&mut t.budgets, charge)?));
                }
                Job::Admin(job, _) => {
                    admission.forget();
                    let change = job.change.stamped(now);
                    let done = match admin::apply(&tx, &change)? {
                        Ok(applied) => {
                            let number = next_audit;
                            next_audit += 1;
                            if let Some(state) =
                                apply::follow_admin(&tx, &mut t, &mut deltas, &applied)?
                            {
                                lowered.entry(state).or_default().audit = number;
                            }
                            let record =
                                admin::audit_record(&tx, &job.operator, &change, &applied)?;
                            apply::put_audit(
                                &mut t,
                                number,
                                &record,
                                (now, apply::detail_salt()),
                                now,
                            )?;
                            Ok((applied, number))
                        }
                        Err(refused) => Err(AdminWriteError::Refused(refused)),
                    };
                    results.push(Done::Admin(done));
                }
                Job::SeenKey(seen) => {
                    super::seen_keys::keep(&mut t.seen_keys, seen)?;
                    results.push(Done::SeenKey);
                }
            }
        }
        changes = deltas.take_changes();
        t.write_counters(deltas)?;
        // One signature per batch: the checkpoint of the tree after every job.
        t.log.checkpoint(log)?;
        trail = std::mem::take(&mut t.trail);
        log_size = t.log.size()?;
    }
    tx.commit()?;
    Ok((results, changes, (trail, log_size)))
}

#[cfg(test)]
mod tests {
    use super::{Lowered, LoweredAt, Stands};

    /// A reader stands through the second its standing lapses at (the policy and the
    /// replay count a contribution while `now - window <= accepted`), not after it, and
    /// not once its state stored a retraction or amendment after the snapshot checked,
    /// nor once a revocation of one of its keys stopped its reports counting.
    #[test]
    fn a_standing_holds_through_its_last_second_and_until_its_state_lowers_it() {
        let stands = Stands {
            state: "IDN".to_owned(),
            through: 10,
            through_audit: 20,
            lapses_at: 1_000,
        };
        let at = |sequence, audit| LoweredAt { sequence, audit };
        let mut lowered = Lowered::new();
        assert!(stands.holds(&lowered, 1_000));
        assert!(!stands.holds(&lowered, 1_001));
        lowered.insert("AUS".to_owned(), at(11, 21));
        lowered.insert("IDN".to_owned(), at(10, 20));
        assert!(
            stands.holds(&lowered, 999),
            "lowered before the snapshot, or another's"
        );
        lowered.insert("IDN".to_owned(), at(11, 0));
        assert!(!stands.holds(&lowered, 999), "a retraction after it");
        lowered.insert("IDN".to_owned(), at(0, 21));
        assert!(!stands.holds(&lowered, 999), "a key's compromise after it");
    }
}
