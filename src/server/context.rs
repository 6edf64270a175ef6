//! The server context: what every service shares — store, writer, give-to-get policy,
//! clock, trust state, limits — and the steps every read takes on it, in order:
//! a snapshot, the caller's standing (a refusal is audited), the audit record written
//! *before* any data flows, the read streamed under a [`CallGuard`], and the audit record
//! completed with what was read. A new read RPC uses [`Context::audited_stream`] and
//! cannot forget one of them.

use std::sync::Arc;

use tokio::{sync::mpsc, time::timeout};
use tonic::Status;

use crate::{
    access::{Allowance, ReadKind},
    administration::Administration,
    analytics,
    clock::Clock,
    country::CountryCode,
    identity::PeerIdentity,
    metrics::Metrics,
    policy::{Policy, Standing},
    report::Category,
    server::{
        auth,
        delivery::{self, Cut, Delivered, Drained, Ledger, Unfinished, cut_short},
        feed::Feed,
        guard::{CallGuard, Guarded, StandingCheck, StandingWatch},
        reads::OpenStreams,
    },
    signing::SigningKey,
    store::{AppendError, AuditRecord, Snapshot, Store, StoreError, Writer},
    tlog::LogSigner,
    trust::Trust,
};

/// Everything the services share; cheap to clone.
#[derive(Clone)]
pub(super) struct Context {
    pub store: Store,
    pub writer: Writer,
    pub policy: Policy,
    pub clock: Clock,
    pub trust: Arc<Trust>,
    /// The operator actions over this store and trust state.
    pub admin: Administration,
    /// Signs receipts.
    pub receipt_key: Arc<SigningKey>,
    /// The transparency log's origin and checkpoint key.
    pub log: Arc<LogSigner>,
    /// Subscriptions open per principal.
    pub streams: OpenStreams,
    /// Queries and syncs in progress, per principal.
    pub reads: OpenStreams,
    /// Newly committed envelopes, for subscriptions.
    pub feed: Feed,
    /// Disclosure-control settings of aggregates.
    pub analytics: analytics::Settings,
    /// Most envelopes one import stream may hold.
    pub max_import_items: usize,
    /// How long an import takes envelopes (`limits.request_timeout_secs`); it then answers
    /// for every one it took, however long storing them takes (`super::timeout`).
    pub import_window: std::time::Duration,
    /// How long a read waits for its caller to take the next item (`limits.read_stall_secs`).
    pub read_stall: std::time::Duration,
    /// How long a query or sync may go on sending (`limits.max_read_secs`).
    pub max_read: std::time::Duration,
    /// The most bytes one page of a paged answer holds (access lists, the audit log),
    /// well under the message limit either side applies ([`fitting`]).
    pub page_bytes: usize,
    /// What the metrics endpoint reports.
    pub metrics: Arc<Metrics>,
    /// Refusal records, from each principal's budget.
    pub refusals: super::refusals::RefusalRecords,
    /// Who computes aggregates, and when.
    pub aggregates: Arc<super::analytics::Workers>,
    /// Reads on record each principal may start (`limits.reads_per_minute_per_principal`).
    pub read_budget: Arc<crate::budgets::Budgets>,
    /// `limits.reads_per_minute_per_principal`, for the refusal's message.
    pub reads_per_minute: u32,
    /// Lookups each principal may make (`limits.lookups_per_minute_per_principal`).
    pub lookup_budget: Arc<crate::budgets::Budgets>,
    /// `limits.lookups_per_minute_per_principal`, for the refusal's message.
    pub lookups_per_minute: u32,
    /// Lookups each principal has in progress ([`super::reads::LOOKUPS_IN_FLIGHT`]).
    pub lookups_in_flight: Arc<crate::budgets::InFlight>,
    /// Reads whose audit record is not completed yet.
    pub unfinished: Unfinished,
    /// The last audit record written before this server process started: a read's
    /// record up to it that is still in progress was cut short by a stop.
    pub before_start: u64,
}

impl Context {
    /// Whether record `number`, in progress, belongs to a server process before this
    /// one: its read was cut short by a crash and its record will not be completed.
    pub(super) fn cut_short(&self, number: u64, record: &crate::store::AuditRecord) -> bool {
        record.in_progress && number <= self.before_start
    }
}

impl Context {
    /// A consistent view of the store for one read.
    pub(super) fn snapshot(&self) -> Result<Snapshot, Status> {
        Ok(self.store.snapshot()?)
    }

    /// Where `state` stands in `category` now.
    pub(super) fn standing(
        &self,
        snap: &Snapshot,
        state: CountryCode,
        category: Category,
    ) -> Result<Standing, Status> {
        Ok(self
            .policy
            .standing(snap, state, category, self.clock.now())?)
    }

    /// Whether `state` may read `category` now ([`Policy::entitlement`]: counted no
    /// further than the contributions required).
    pub(super) fn entitlement(
        &self,
        snap: &Snapshot,
        state: CountryCode,
        category: Category,
    ) -> Result<Standing, Status> {
        Ok(self
            .policy
            .entitlement(snap, state, category, self.clock.now())?)
    }

    /// Refuses (and audits the refusal) unless `state` stands in `category`; returns
    /// the standing found, counted no further than required.
    pub(super) async fn require_standing(
        &self,
        peer: &PeerIdentity,
        snap: &Snapshot,
        state: CountryCode,
        category: Category,
        action: &str,
        detail: &str,
    ) -> Result<Standing, Status> {
        match self.entitlement(snap, state, category)?.require() {
            Ok(standing) => Ok(standing),
            Err(refusal) => {
                self.metrics.give_to_get_refused(category.label());
                let record = AuditRecord {
                    principal: peer.principal().spiffe_id(),
                    state: state.to_string(),
                    action: format!("refused {action}"),
                    detail: detail.to_owned(),
                    category: category.label().to_owned(),
                    ..AuditRecord::default()
                };
                Err(self.refusals.refuse(record, refusal.into()).await)
            }
        }
    }

    /// Writes an audit record; nothing is served when that fails.
    pub(super) async fn audit(&self, record: AuditRecord) -> Result<u64, Status> {
        self.writer.audit(record).await.map_err(|e| unrecorded(&e))
    }

    /// Records the start of a read of `kind` by `principal` of `state`. Written on a task
    /// of its own, and handed back as a [`Started`] record: if the caller goes away before
    /// its read begins — the call is dropped while the record is written, or after —, the
    /// record is completed at once with nothing taken rather than left in progress for
    /// good.
    pub(super) async fn audit_start(
        &self,
        kind: &ReadKind,
        (principal, state): (&str, &str),
        detail: &str,
    ) -> Result<Started, Status> {
        let started = kind.started(principal, state, detail);
        let nothing = Ledger::default()
            .close()
            .to_audit(principal, state, kind, detail);
        let (sent, received) = tokio::sync::oneshot::channel();
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let written = writer.audit(started).await.map(|number| Started {
                number,
                writer,
                nothing: Some(nothing),
            });
            // Not taken: dropped here, and so completed.
            let _ = sent.send(written);
        });
        received
            .await
            .map_err(|_| {
                Status::unavailable("the audit record of this read could not be written; try again")
            })?
            .map_err(|e| unrecorded(&e))
    }

    /// `standing`, as checked on `snapshot`, for raising a read's record while it holds.
    pub(super) fn standing_check(
        &self,
        snapshot: &Snapshot,
        standing: &Standing,
    ) -> Result<StandingCheck, Status> {
        StandingCheck::new(
            (self.store.clone(), self.policy.clone(), self.clock.clone()),
            snapshot,
            standing,
        )
    }

    /// A guard for a call by `peer` that needs `standing` to hold throughout.
    pub(super) fn guard(&self, peer: &PeerIdentity, standing: Option<&Standing>) -> CallGuard {
        let guard = CallGuard::new(peer, &self.trust);
        match standing {
            Some(standing) => guard.with_standing(StandingWatch::new(
                self.store.clone(),
                self.policy.clone(),
                self.clock.clone(),
                self.writer.changes(),
                standing,
            )),
            None => guard,
        }
    }

    /// Records the read in the audit log (refusing it if that fails), then runs `read`
    /// on a blocking thread, streaming what it emits — each item with its owning state —
    /// under `guard`. `read` reads one page at a time, each from a snapshot of its own,
    /// resuming where the last page stopped; it emits until `emit` says the page is full
    /// and says whether there is more. A page is as long as the queue has room for, and
    /// the room is waited for with no snapshot held: a caller that reads slowly holds
    /// none (an open read transaction keeps redb from reusing the pages every later
    /// commit frees, so the store file would grow with every write meanwhile). Before an
    /// item of another state is queued, the record must allow it ([`Allowance`]: raised
    /// ahead, so what left the server is on record even after a crash). When the read has
    /// run to its end, the caller has taken everything (or gone away, or stalled); then
    /// the record is completed with exactly what the caller took, by owner ([`Ledger`]).
    pub(super) async fn audited_stream<T: Delivered + Send + 'static>(
        &self,
        guard: CallGuard,
        peer: &PeerIdentity,
        state: CountryCode,
        (kind, detail, gate, standing): (
            ReadKind,
            String,
            delivery::Gate<T>,
            Option<StandingCheck>,
        ),
        mut read: impl FnMut(&mut dyn FnMut(&str, T) -> bool) -> Result<bool, StoreError>
        + Send
        + 'static,
    ) -> Result<Guarded<T>, Status> {
        let slot = self
            .open_budgeted(&self.reads, peer, state.as_str(), (kind.action, &detail))
            .await?;
        let principal = peer.principal().spiffe_id();
        // No await from here to the read's task: nothing can drop the call in between.
        let number = self
            .audit_start(&kind, (&principal, state.as_str()), &detail)
            .await?
            .begin();
        let (tx, ledger, taken) = delivery::queue(gate);
        let queue = ledger.clone();
        let writer = self.writer.clone();
        let errors = tx.clone();
        let (trust, caller) = (self.trust.clone(), peer.clone());
        let runtime = tokio::runtime::Handle::current();
        let stall = self.read_stall;
        let pace = Pace::from(stall, self.max_read);
        let mut ahead = RaiseAhead {
            writer: writer.clone(),
            principal: principal.clone(),
            state,
            kind,
            detail: detail.clone(),
            number,
            allowance: Allowance::default(),
            standing,
        };
        let (unfinished, mut cut) = self.unfinished.start();
        let mut producer_cut = cut.clone();
        tokio::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                // Why the read ended before its end, if it did: said to the caller once
                // this thread and the snapshot are let go.
                let mut ended = None;
                loop {
                    // Room for a page, waited for before its snapshot is taken.
                    let mut room = match room(&runtime, &tx, (&pace, &mut producer_cut)) {
                        Ok(0) => break,
                        Ok(room) => room,
                        Err(end) => {
                            ended = Some(end);
                            break;
                        }
                    };
                    let more = read(&mut |owner, item| {
                        // Revocation and suspension, exactly, before each item (the guard
                        // watches them too, and standing, while the stream is idle).
                        if let Err(status) = auth::admit(&trust, &caller) {
                            ended = Some(status);
                            return false;
                        }
                        if let Err(status) = ahead.allow(owner, &runtime) {
                            ended = Some(status);
                            return false;
                        }
                        // Room was made for it: this never waits with the snapshot held.
                        queue.queueing();
                        if tx.try_send(Ok(item)).is_err() {
                            queue.not_queued();
                            return false;
                        }
                        room -= 1;
                        room > 0
                    })?;
                    if !more || ended.is_some() {
                        break;
                    }
                }
                Ok::<_, StoreError>(ended)
            })
            .await;
            let ended = match outcome {
                Ok(Ok(ended)) => ended,
                Ok(Err(e)) => Some(e.into()),
                Err(e) => Some(Status::internal(format!("the read failed: {e}"))),
            };
            // The read is over: its slot is free while the caller is told.
            drop(slot);
            // A read that ran to its end is whole once its caller has taken what is
            // queued (or has gone away); one that stops taking it meanwhile has stalled.
            let ended = match ended {
                None => match ledger.drained(stall, &mut cut).await {
                    Drained::Taken => None,
                    Drained::Stalled => Some(stalled(stall)),
                    Drained::Cut => Some(cut_short()),
                },
                ended => ended,
            };
            // From here what is still queued is dropped unsent: the record is exact.
            let record = ledger
                .close()
                .to_audit(&principal, state.as_str(), &kind, &detail);
            let completed = writer.update_audit(number, record).await.map(|_| ());
            drop(unfinished);
            let ended = match completed {
                Err(e) => {
                    tracing::error!(%principal, action = kind.action, number, error = %e, "a read's audit record could not be completed");
                    Some(Status::unavailable(format!(
                        "the audit record of this read could not be completed: {e}"
                    )))
                }
                Ok(()) => ended,
            };
            if let Some(status) = ended {
                // Not bounded: a read cut short must not look complete to a caller that
                // reads again later. Waiting holds only this task, not a thread or a
                // snapshot.
                let _ = errors.send(Err(status)).await;
            }
        });
        Ok(guard.guard(taken))
    }

    /// Runs `work` on a blocking thread: file I/O, CRL signing, long store transactions.
    pub(super) async fn blocking<T: Send + 'static, E: Into<Status> + Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, E> + Send + 'static,
    ) -> Result<T, Status> {
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || work(&ctx).map_err(Into::into))
            .await
            .map_err(|e| Status::internal(format!("the call failed: {e}")))?
    }
}

/// Raises a read's audit record ahead of what it queues ([`Allowance`]).
struct RaiseAhead {
    writer: Writer,
    principal: String,
    state: CountryCode,
    kind: ReadKind,
    detail: String,
    number: u64,
    allowance: Allowance,
    /// The reader's standing, for a read of other states' reports that needs it.
    standing: Option<StandingCheck>,
}

impl RaiseAhead {
    /// Allows one more item of `owner`, raising the record first when it must; the end
    /// of the read when the record cannot be raised.
    fn allow(&mut self, owner: &str, runtime: &tokio::runtime::Handle) -> Result<(), Status> {
        if owner == self.state.as_str() || !self.allowance.take(owner, 1) {
            return Ok(());
        }
        let record = self.allowance.to_audit(
            &self.principal,
            self.state.as_str(),
            &self.kind,
            &self.detail,
        );
        match &mut self.standing {
            Some(check) => runtime.block_on(check.raise(&self.writer, self.number, &record)),
            None => runtime
                .block_on(self.writer.update_audit(self.number, record))
                .map(|_| ())
                .map_err(|e| {
                    Status::unavailable(format!(
                        "the audit record of this read could not be raised, so nothing more \
                         is sent: {e}"
                    ))
                }),
        }
    }
}

/// Waits, at most as long as `pace` allows, for room in the caller's queue, unless the
/// server cuts the read: how many items may now be queued without waiting (0 if the
/// caller is gone), or why the read must end. The read's thread is the queue's only
/// sender while it reads, so that room stays free for it.
fn room<T>(
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::Sender<Result<T, Status>>,
    (pace, cut): (&Pace, &mut Cut),
) -> Result<usize, Status> {
    let wait = pace.next_wait()?;
    let reserved = runtime.block_on(async {
        tokio::select! {
            reserved = timeout(wait, tx.reserve()) => Some(reserved.map(|permit| permit.is_ok())),
            () = cut.wait() => None,
        }
    });
    match reserved {
        Some(Ok(true)) => Ok(tx.capacity()),
        Some(Ok(false)) => Ok(0),
        Some(Err(_)) => Err(pace.waited_too_long(wait)),
        None => Err(cut_short()),
    }
}

/// How long a query or sync may wait for its caller: `stall` for each item, and
/// `max_read` in all.
struct Pace {
    stall: std::time::Duration,
    max_read: std::time::Duration,
    deadline: std::time::Instant,
}

impl Pace {
    fn from(stall: std::time::Duration, max_read: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        Self {
            stall,
            max_read,
            deadline: now.checked_add(max_read).unwrap_or(now + stall),
        }
    }

    /// How long the next item may wait to be queued; the end at once when the read is
    /// out of time.
    fn next_wait(&self) -> Result<std::time::Duration, Status> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            Err(self.out_of_time())
        } else {
            Ok(left.min(self.stall))
        }
    }

    /// The end of a read whose item waited `wait` ([`Self::next_wait`]) and was not taken.
    fn waited_too_long(&self, wait: std::time::Duration) -> Status {
        if wait < self.stall {
            self.out_of_time()
        } else {
            stalled(self.stall)
        }
    }

    fn out_of_time(&self) -> Status {
        Status::deadline_exceeded(format!(
            "this read has been sending for {} s, the most one read may (limits.max_read_secs), \
             so the server ended it; what was sent to you is on record; continue after the last \
             cursor (a query) or sequence (a sync) you received",
            self.max_read.as_secs()
        ))
    }
}

/// The end of a read whose caller took nothing for `stall`.
fn stalled(stall: std::time::Duration) -> Status {
    Status::deadline_exceeded(format!(
        "this read was not read from for {} s, so the server ended it; what was sent to you is \
         on record; read again (a sync resumes from its cursor)",
        stall.as_secs()
    ))
}

/// The record of a read written before the read begins. Dropped without
/// [`Started::begin`] — its call went away first —, it is completed with nothing taken.
pub(super) struct Started {
    number: u64,
    writer: Writer,
    nothing: Option<AuditRecord>,
}

impl Started {
    /// The record's number, for the read now beginning, which completes it.
    pub(super) fn begin(mut self) -> u64 {
        self.nothing = None;
        self.number
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let Some(nothing) = self.nothing.take() else {
            return;
        };
        let (writer, number) = (self.writer.clone(), self.number);
        // Without a runtime (the server is gone) the record stays in progress, and is shown
        // as cut short.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = writer.update_audit(number, nothing).await {
                    tracing::error!(number, error = %e, "the record of a read its caller left before it began could not be completed");
                }
            });
        }
    }
}

/// A read refused because its audit record could not be written.
fn unrecorded(e: &AppendError) -> Status {
    Status::unavailable(format!(
        "the audit log could not be written, so nothing is served: {e}"
    ))
}

/// The leading `items` whose encoding fits in `budget` bytes (at least one), and whether
/// any were left out: a page of a paged answer cut by size, not only by count. A page of
/// access records listing 1,000 report ids each reached 4.7 MB at 120 of them, and no
/// client could read it.
pub(super) fn fitting<T: prost::Message>(items: Vec<T>, budget: usize) -> (Vec<T>, bool) {
    let mut used = 0;
    let mut kept = Vec::with_capacity(items.len());
    let total = items.len();
    for item in items {
        // The field's tag and length prefix, at most 1 + 5 bytes.
        let size = item.encoded_len() + 6;
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(item);
    }
    let more = kept.len() < total;
    (kept, more)
}
