//! What the caller of an audited read has taken: a read's audit record is completed
//! from this, not from what the read queued for it.
//!
//! A read's items wait in a queue (a channel) until HTTP/2 takes them for the caller.
//! [`Ledger`] counts each item as it is taken ([`Delivering`], the stream HTTP/2 polls),
//! by owner and report. When the read ends, [`Ledger::close`] stops the count and drops
//! what is still queued unsent, so the record says exactly what was handed to the
//! transport — what can have reached the caller — even when the caller went away, was
//! refused, or stopped reading with items queued. (What HTTP/2 took but the caller never
//! read cannot be told apart from what it read; it counts as read.)
//!
//! Crash safety is separate: the record is raised ahead of what is queued
//! ([`crate::access::Allowance`]), so after a crash it bounds what was sent.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;
use uuid::Uuid;

use crate::{
    access::{ReadLog, Recheck},
    country::CountryCode,
    pb,
};

/// An item of an audited read: whose report it carries, and which.
pub(super) trait Delivered {
    /// The item's metadata (every item a read sends has it).
    fn meta(&self) -> Option<&pb::EnvelopeMeta>;

    /// The same, to bring up to date as the item goes.
    fn meta_mut(&mut self) -> Option<&mut pb::EnvelopeMeta>;

    /// The owning state, and the report's id if it reads as one.
    fn owner_and_report(&self) -> Option<(&str, Option<Uuid>)> {
        let meta = self.meta()?;
        Some((
            meta.reporting_state.as_str(),
            Uuid::parse_str(&meta.report_id).ok(),
        ))
    }
}

impl Delivered for pb::QueryResult {
    fn meta(&self) -> Option<&pb::EnvelopeMeta> {
        self.meta.as_ref()
    }

    fn meta_mut(&mut self) -> Option<&mut pb::EnvelopeMeta> {
        self.meta.as_mut()
    }
}

impl Delivered for pb::SyncItem {
    fn meta(&self) -> Option<&pb::EnvelopeMeta> {
        self.meta.as_ref()
    }

    fn meta_mut(&mut self) -> Option<&mut pb::EnvelopeMeta> {
        self.meta.as_mut()
    }
}

/// The last check of an item as HTTP/2 takes it from the queue: `false` drops it
/// unsent. An item can wait in the queue (and HTTP/2 buffers) while its owner narrows
/// the report's scope, amends or retracts it: the read's own checks ran when it was
/// queued.
pub(super) type Gate<T> = Box<dyn FnMut(&mut T) -> bool + Send>;

/// A [`Gate`] that holds each item to its report as the store now stands
/// ([`Recheck::still_allows`]): its scope must still let `reader` have it, and its
/// status is brought up to date. A store error drops the item (and is logged).
pub(super) fn rechecked<T: Delivered>(mut recheck: Recheck, reader: CountryCode) -> Gate<T> {
    Box::new(move |item: &mut T| {
        let Some(meta) = item.meta_mut() else {
            return true;
        };
        recheck.still_allows(meta, reader).unwrap_or_else(|e| {
            tracing::error!(error = %e, "an item of a read could not be checked against the store, so it was not sent");
            false
        })
    })
}

/// Results queued ahead of a slow reader.
const STREAM_BUFFER: usize = 256;

/// A read's queue: where the read sends its results, the [`Ledger`] of what its caller
/// took, and the stream HTTP/2 takes them from.
pub(super) fn queue<T: Delivered>(
    gate: Gate<T>,
) -> (
    tokio::sync::mpsc::Sender<Result<T, Status>>,
    Arc<Ledger>,
    Delivering<T>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let ledger = Arc::new(Ledger::default());
    let taken = ledger.stream(ReceiverStream::new(rx), gate);
    (tx, ledger, taken)
}

/// What one read's caller has taken so far.
#[derive(Default)]
pub(super) struct Ledger {
    state: Mutex<State>,
    /// Woken whenever an item is taken or the caller goes away.
    changed: Notify,
}

#[derive(Default)]
struct State {
    taken: ReadLog,
    /// Items queued and not yet taken.
    queued: u64,
    /// Counting has stopped: what is still queued is dropped unsent.
    closed: bool,
    /// The caller's stream is gone.
    gone: bool,
    /// Someone waits in [`Ledger::drained`]: each take wakes it.
    draining: bool,
}

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An item is about to be queued for the caller (call before it is, so that it
    /// cannot be taken uncounted).
    pub(super) fn queueing(&self) {
        self.state().queued += 1;
    }

    /// The item announced by [`Self::queueing`] was not queued after all.
    pub(super) fn not_queued(&self) {
        let mut state = self.state();
        state.queued = state.queued.saturating_sub(1);
    }

    /// Waits until the caller has taken everything queued, or has gone away — unless it
    /// takes nothing for `stall`, or the server cuts the read.
    pub(super) async fn drained(&self, stall: Duration, cut: &mut Cut) -> Drained {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a take in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if state.queued == 0 || state.gone {
                    return Drained::Taken;
                }
                state.draining = true;
            }
            tokio::select! {
                taken = tokio::time::timeout(stall, changed) => {
                    if taken.is_err() {
                        return Drained::Stalled;
                    }
                }
                () = cut.wait() => return Drained::Cut,
            }
        }
    }

    /// Stops the count and returns what the caller took; whatever is still queued is
    /// dropped, never sent.
    pub(super) fn close(&self) -> ReadLog {
        let mut state = self.state();
        state.closed = true;
        std::mem::take(&mut state.taken)
    }

    /// The stream HTTP/2 polls for the caller: it counts each item it hands on.
    pub(super) fn stream<T: Delivered>(
        self: &Arc<Self>,
        items: ReceiverStream<Result<T, Status>>,
        gate: Gate<T>,
    ) -> Delivering<T> {
        Delivering {
            items,
            ledger: self.clone(),
            gate,
        }
    }
}

/// A read's queue as HTTP/2 takes from it, counted in its [`Ledger`].
pub(super) struct Delivering<T> {
    items: ReceiverStream<Result<T, Status>>,
    ledger: Arc<Ledger>,
    gate: Gate<T>,
}

impl<T: Delivered> Stream for Delivering<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let mut item = match Pin::new(&mut this.items).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => item,
                other => return other,
            };
            let closed = this.ledger.state().closed;
            // Checked outside the lock: the gate reads the store.
            let send = !closed && (this.gate)(&mut item);
            let mut state = this.ledger.state();
            state.queued = state.queued.saturating_sub(1);
            if state.closed {
                // Queued before the read ended, and not taken by then: never sent.
                continue;
            }
            if !send {
                let wake = state.draining;
                drop(state);
                if wake {
                    this.ledger.changed.notify_waiters();
                }
                continue;
            }
            if let Some((owner, report)) = item.owner_and_report() {
                state.taken.note(owner, report.as_ref().map(Uuid::as_bytes));
            }
            let wake = state.draining;
            drop(state);
            if wake {
                this.ledger.changed.notify_waiters();
            }
            return Poll::Ready(Some(Ok(item)));
        }
    }
}

impl<T> Drop for Delivering<T> {
    fn drop(&mut self) {
        {
            let mut state = self.ledger.state();
            state.gone = true;
            state.closed = true;
        }
        self.ledger.changed.notify_waiters();
    }
}

/// Reads whose audit record is not completed yet. When the server stops, it cuts them
/// — subscriptions, which never end by themselves, as soon as it begins to stop
/// ([`Unfinished::end_subscriptions`]); queries and syncs once the grace period is over
/// ([`Unfinished::cut_all`]) — each ending with UNAVAILABLE, and waits for them (a
/// little) before it stops the writer, so that their records are completed, not left in
/// progress.
#[derive(Clone)]
pub(super) struct Unfinished {
    open: Arc<(std::sync::atomic::AtomicUsize, Notify)>,
    cut: Arc<watch::Sender<bool>>,
    subscriptions: Arc<watch::Sender<bool>>,
}

impl Default for Unfinished {
    fn default() -> Self {
        Self {
            open: Arc::default(),
            cut: Arc::new(watch::Sender::new(false)),
            subscriptions: Arc::new(watch::Sender::new(false)),
        }
    }
}

/// One read not yet completed; dropped when its record is.
pub(super) struct UnfinishedRead(Arc<(std::sync::atomic::AtomicUsize, Notify)>);

/// Resolves once the server cuts the reads still open.
#[derive(Clone)]
pub(super) struct Cut(watch::Receiver<bool>);

impl Cut {
    pub(super) async fn wait(&mut self) {
        // The sender goes only with the server: then too the read is cut.
        let _ = self.0.wait_for(|&cut| cut).await;
    }
}

impl Unfinished {
    /// A query or sync starts: it is counted until the returned value is dropped, and is
    /// told through [`Cut`] when the server stops.
    pub(super) fn start(&self) -> (UnfinishedRead, Cut) {
        self.open
            .0
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (UnfinishedRead(self.open.clone()), Cut(self.cut.subscribe()))
    }

    /// A subscription starts, as [`Self::start`].
    pub(super) fn start_subscription(&self) -> (UnfinishedRead, Cut) {
        self.open
            .0
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (
            UnfinishedRead(self.open.clone()),
            Cut(self.subscriptions.subscribe()),
        )
    }

    /// Ends every subscription: the server is stopping.
    pub(super) fn end_subscriptions(&self) {
        self.subscriptions.send_replace(true);
    }

    /// Cuts every read still open.
    pub(super) fn cut_all(&self) {
        self.end_subscriptions();
        self.cut.send_replace(true);
    }

    /// Waits until every read has completed its record, for at most `within`; `false` if
    /// some have not.
    pub(super) async fn finished(&self, within: Duration) -> bool {
        let all = async {
            loop {
                let done = self.open.1.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.open.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }
}

impl Drop for UnfinishedRead {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.1.notify_waiters();
    }
}

/// The end of a read the server cut as it stopped.
pub(super) fn cut_short() -> Status {
    Status::unavailable(
        "the server is stopping, so it ended this read; what was sent is on record; read \
         again once it is back (a sync resumes from its cursor)",
    )
}

/// How [`Ledger::drained`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// The caller took everything queued, or went away.
    Taken,
    /// The caller took nothing for the stall limit.
    Stalled,
    /// The server cut the read.
    Cut,
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use tokio_stream::StreamExt;

    use super::*;

    fn item(owner: &str, n: u128) -> pb::SyncItem {
        pb::SyncItem {
            envelope: None,
            meta: Some(pb::EnvelopeMeta {
                reporting_state: owner.to_owned(),
                report_id: Uuid::from_u128(n).to_string(),
                ..pb::EnvelopeMeta::default()
            }),
            log_proof: String::new(),
        }
    }

    fn counts(log: &ReadLog, principal: &str) -> Vec<(String, u64)> {
        let kind = crate::access::ReadKind {
            action: "sync",
            category: crate::report::Category::SmugglingIncident,
        };
        log.to_audit(principal, "IDN", &kind, "")
            .owners
            .into_iter()
            .map(|o| (o.owner, o.count))
            .collect()
    }

    /// Queues `owners` in order, as a read does.
    async fn queue(
        ledger: &Ledger,
        tx: &mpsc::Sender<Result<pb::SyncItem, Status>>,
        owners: &[&str],
    ) {
        for (n, owner) in owners.iter().enumerate() {
            ledger.queueing();
            tx.send(Ok(item(owner, n as u128))).await.unwrap();
        }
    }

    #[tokio::test]
    async fn only_what_was_taken_counts_and_what_is_queued_at_close_is_never_sent() {
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let mut stream = ledger.stream(ReceiverStream::new(rx), Box::new(|_| true));
        queue(&ledger, &tx, &["AUS", "AUS", "THA", "AUS", "THA"]).await;
        for _ in 0..3 {
            stream.next().await.unwrap().unwrap();
        }
        let log = ledger.close();
        assert_eq!(
            counts(&log, "p"),
            [("AUS".to_owned(), 2), ("THA".to_owned(), 1)]
        );
        // What was still queued is dropped; the end the read says still arrives.
        tx.send(Err(Status::deadline_exceeded("stalled")))
            .await
            .unwrap();
        let end = stream.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_its_gate_refuses_as_it_goes_is_neither_sent_nor_counted() {
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let gate: Gate<pb::SyncItem> = Box::new(|item| {
            let meta = item.meta.as_mut().unwrap();
            meta.status = pb::ReportStatus::Retracted as i32;
            meta.reporting_state != "THA"
        });
        let mut stream = ledger.stream(ReceiverStream::new(rx), gate);
        queue(&ledger, &tx, &["AUS", "THA", "AUS", "THA"]).await;
        let mut sent = Vec::new();
        for _ in 0..2 {
            let meta = stream.next().await.unwrap().unwrap().meta.unwrap();
            assert_eq!(meta.status, pb::ReportStatus::Retracted as i32);
            sent.push(meta.reporting_state);
        }
        assert_eq!(sent, ["AUS", "AUS"]);
        drop(tx);
        assert!(
            stream.next().await.is_none(),
            "the last THA item is not sent"
        );
        // The refused items no longer wait: the read is drained.
        let unfinished = Unfinished::default();
        let (_read, mut cut) = unfinished.start();
        let drained = ledger.drained(Duration::from_millis(200), &mut cut);
        assert!(matches!(drained.await, Drained::Taken));
        assert_eq!(counts(&ledger.close(), "p"), [("AUS".to_owned(), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_caller_to_take_everything_or_go() {
        let stall = Duration::from_millis(200);
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let mut stream = ledger.stream(ReceiverStream::new(rx), Box::new(|_| true));
        queue(&ledger, &tx, &["AUS", "AUS"]).await;
        let unfinished = Unfinished::default();
        let (_read, mut cut) = unfinished.start();
        // Nothing is taken: the caller has stalled.
        assert_eq!(ledger.drained(stall, &mut cut).await, Drained::Stalled);
        // Taking one item at a time, each within the stall, drains it.
        let reader = tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stream.next().await.unwrap().unwrap();
            }
            stream
        });
        assert_eq!(ledger.drained(stall, &mut cut).await, Drained::Taken);
        let stream = reader.await.unwrap();
        assert_eq!(counts(&ledger.close(), "p"), [("AUS".to_owned(), 2)]);
        // A caller that goes away drains it too, with nothing more counted.
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let gone = ledger.stream(ReceiverStream::new(rx), Box::new(|_| true));
        queue(&ledger, &tx, &["THA"]).await;
        drop((gone, stream));
        assert_eq!(ledger.drained(stall, &mut cut).await, Drained::Taken);
        assert!(counts(&ledger.close(), "p").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_was_not_queued_is_not_waited_for() {
        let ledger = Ledger::default();
        ledger.queueing();
        ledger.not_queued();
        let unfinished = Unfinished::default();
        let (_read, mut cut) = unfinished.start();
        assert_eq!(
            ledger.drained(Duration::from_millis(10), &mut cut).await,
            Drained::Taken
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_server_cuts_reads_and_waits_for_their_records() {
        let unfinished = Unfinished::default();
        let (read, mut cut) = unfinished.start();
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let _stream = ledger.stream(ReceiverStream::new(rx), Box::new(|_| true));
        queue(&ledger, &tx, &["AUS"]).await;
        let stall = Duration::from_secs(60);
        let waiting = tokio::spawn(async move { ledger.drained(stall, &mut cut).await });
        assert!(
            !unfinished.finished(Duration::from_secs(1)).await,
            "a read is open"
        );
        unfinished.cut_all();
        assert_eq!(waiting.await.unwrap(), Drained::Cut);
        drop(read);
        assert!(unfinished.finished(Duration::from_secs(1)).await);
    }
}
