//! The subscription feed: one reader of newly committed envelopes for every open
//! subscription.
//!
//! After each commit one task reads the new envelopes (with their reports' heads) from
//! one snapshot and broadcasts them; each subscription then picks what it may push in
//! memory (`access::pushes`). So a commit costs one read however many subscriptions are
//! open, instead of one read each. A subscription that falls behind the broadcast (or
//! joins between two batches) reads what it missed itself, from its own cursor.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::{
    access::{self, Hit},
    store::Store,
};

/// Batches kept for subscriptions that are a little behind.
const BACKLOG: usize = 256;
/// Most envelopes one batch holds; a larger burst becomes several batches.
const MAX_BATCH: usize = 4096;

/// Newly committed envelopes, in sequence order, with no gaps within a batch.
pub(super) type Batch = Arc<Vec<Hit>>;

/// The handle subscriptions take their batches from.
#[derive(Clone)]
pub(super) struct Feed {
    batches: broadcast::Sender<Batch>,
}

impl Feed {
    /// Starts the reader task, following the writer's committed sequence from `start`.
    pub(super) fn start(
        store: Store,
        mut committed: watch::Receiver<u64>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (batches, _) = broadcast::channel(BACKLOG);
        let feed = Self {
            batches: batches.clone(),
        };
        let mut seen = *committed.borrow_and_update();
        let task = tokio::spawn(async move {
            loop {
                if committed.changed().await.is_err() {
                    return;
                }
                let latest = *committed.borrow_and_update();
                while seen < latest {
                    let store = store.clone();
                    let after = seen;
                    let read = tokio::task::spawn_blocking(move || {
                        let snapshot = store.snapshot()?;
                        access::envelopes_after(&snapshot, after, MAX_BATCH)
                    })
                    .await;
                    let hits = match read {
                        Ok(Ok(hits)) => hits,
                        Ok(Err(e)) => {
                            // Subscriptions notice the gap and read for themselves.
                            tracing::error!(error = %e, "the subscription feed could not read new envelopes");
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the subscription feed's read failed");
                            break;
                        }
                    };
                    let Some(last) = hits.last().map(|h| h.sequence) else {
                        break;
                    };
                    seen = last;
                    // No receivers is fine: nobody is subscribed.
                    let _ = batches.send(Arc::new(hits));
                }
                seen = seen.max(latest);
            }
        });
        (feed, task)
    }

    /// Batches committed from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.batches.subscribe()
    }
}
