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

use tokio::sync::Notify;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;
use uuid::Uuid;

use crate::{access::ReadLog, pb};

/// An item of an audited read: whose report it carries, and which.
pub(super) trait Delivered {
    /// The owning state and the report's id, from the item's metadata.
    fn owner_and_report(&self) -> Option<(&str, Uuid)>;
}

impl Delivered for pb::QueryResult {
    fn owner_and_report(&self) -> Option<(&str, Uuid)> {
        meta_owner_and_report(self.meta.as_ref()?)
    }
}

impl Delivered for pb::SyncItem {
    fn owner_and_report(&self) -> Option<(&str, Uuid)> {
        meta_owner_and_report(self.meta.as_ref()?)
    }
}

fn meta_owner_and_report(meta: &pb::EnvelopeMeta) -> Option<(&str, Uuid)> {
    let id = Uuid::parse_str(&meta.report_id).ok()?;
    Some((meta.reporting_state.as_str(), id))
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

    /// Waits until the caller has taken everything queued, or has gone away. `false` if
    /// it took nothing for `stall` meanwhile.
    pub(super) async fn drained(&self, stall: Duration) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a take in between is not missed.
            changed.as_mut().enable();
            {
                let state = self.state();
                if state.queued == 0 || state.gone {
                    return true;
                }
            }
            if tokio::time::timeout(stall, changed).await.is_err() {
                return false;
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
    ) -> Delivering<T> {
        Delivering {
            items,
            ledger: self.clone(),
        }
    }
}

/// A read's queue as HTTP/2 takes from it, counted in its [`Ledger`].
pub(super) struct Delivering<T> {
    items: ReceiverStream<Result<T, Status>>,
    ledger: Arc<Ledger>,
}

impl<T: Delivered> Stream for Delivering<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let item = match Pin::new(&mut this.items).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => item,
                other => return other,
            };
            let mut state = this.ledger.state();
            state.queued = state.queued.saturating_sub(1);
            if state.closed {
                // Queued before the read ended, and not taken by then: never sent.
                continue;
            }
            if let Some((owner, report)) = item.owner_and_report() {
                state.taken.note(owner, report.as_bytes());
            }
            drop(state);
            this.ledger.changed.notify_waiters();
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
        let mut stream = ledger.stream(ReceiverStream::new(rx));
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

    #[tokio::test]
    async fn drained_waits_for_the_caller_to_take_everything_or_go() {
        let stall = Duration::from_millis(200);
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let mut stream = ledger.stream(ReceiverStream::new(rx));
        queue(&ledger, &tx, &["AUS", "AUS"]).await;
        // Nothing is taken: the caller has stalled.
        assert!(!ledger.drained(stall).await);
        // Taking one item at a time, each within the stall, drains it.
        let reader = tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stream.next().await.unwrap().unwrap();
            }
            stream
        });
        assert!(ledger.drained(stall).await);
        let stream = reader.await.unwrap();
        assert_eq!(counts(&ledger.close(), "p"), [("AUS".to_owned(), 2)]);
        // A caller that goes away drains it too, with nothing more counted.
        let ledger = Arc::new(Ledger::default());
        let (tx, rx) = mpsc::channel(16);
        let gone = ledger.stream(ReceiverStream::new(rx));
        queue(&ledger, &tx, &["THA"]).await;
        drop((gone, stream));
        assert!(ledger.drained(stall).await);
        assert!(counts(&ledger.close(), "p").is_empty());
    }

    #[tokio::test]
    async fn an_item_that_was_not_queued_is_not_waited_for() {
        let ledger = Ledger::default();
        ledger.queueing();
        ledger.not_queued();
        assert!(ledger.drained(Duration::from_millis(10)).await);
    }
}
