//! Authorisation for the whole life of a call, not only its start.
//!
//! A unary call is checked when it arrives ([`super::auth`]), and an aggregate, which
//! can wait for a worker and compute for a while, again before it answers
//! (`analytics.rs`). A stream or an
//! import can stay open for hours, so it holds a [`CallGuard`]: before each item it sends
//! or accepts, the guard checks again that the caller's certificate is not revoked, that
//! its state is not suspended and — for reads of other states' data — that the state
//! still stands in the category (give-to-get). The guard also wakes by itself, on every
//! change of the trust state, on store commits and once a second, so an idle stream is
//! ended as well: within a second of a revocation, suspension or lapse.
//!
//! Services that are not ours (health, reflection) have their streaming responses
//! guarded the same way by [`GuardStreams`], which wraps the HTTP body.
//!
//! Standing is the one check that reads the store. It is exact between commits (a
//! standing lapses at a known time, [`Standing::lapses_at`], unless the state retracts a
//! contribution or a key that signed some is revoked as compromised), so the guard
//! re-reads it only after a commit, at most once a second.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::Status;

use crate::{
    clock::Clock,
    country::CountryCode,
    identity::PeerIdentity,
    policy::{Policy, Standing},
    report::Category,
    server::auth,
    store::{AppendError, AuditRecord, Snapshot, Stands, Store, Writer},
    trust::Trust,
};

/// How often an open call re-checks by itself, and the shortest interval between two
/// readings of its standing from the store.
const RECHECK: Duration = Duration::from_secs(1);

/// How often a raise is tried again when its reader's standing may have changed, each
/// time checked anew: only a state that amends or retracts without pause gets this far.
const RAISES: usize = 8;

/// A read's standing as last checked, and how to check it again. A record that raises
/// what a read may send of other states' reports is written only where that standing
/// still holds in the log ([`crate::store::Writer::raise_audit`]), so that none lands
/// after a retraction or amendment of the reader's state that ended it, nor after it
/// lapsed: `tidemark audit verify-reciprocity` judges each raise where it lands.
pub(super) struct StandingCheck {
    store: Store,
    policy: Policy,
    clock: Clock,
    category: Category,
    stands: Stands,
}

impl StandingCheck {
    /// `standing`, as checked on `snapshot`.
    pub(super) fn new(
        (store, policy, clock): (Store, Policy, Clock),
        snapshot: &Snapshot,
        standing: &Standing,
    ) -> Result<Self, Status> {
        Ok(Self {
            store,
            policy,
            clock,
            category: standing.category,
            stands: Stands {
                state: standing.state.to_string(),
                through: snapshot.last_sequence()?,
                through_audit: snapshot.last_audit_number()?,
                lapses_at: lapse_time(standing),
            },
        })
    }

    /// Raises audit record `number` to `record` while the standing holds, reading it
    /// again from a fresh snapshot whenever the writer finds it may have changed; the
    /// refusal (PERMISSION_DENIED, saying why) once it does not hold.
    pub(super) async fn raise(
        &mut self,
        writer: &Writer,
        number: u64,
        record: &AuditRecord,
    ) -> Result<(), Status> {
        for _ in 0..RAISES {
            match writer
                .raise_audit(number, record.clone(), self.stands.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(AppendError::StandingUnsure) => self.read_again()?,
                Err(e) => {
                    return Err(Status::unavailable(format!(
                        "the audit record of this read could not be raised, so nothing more \
                         is sent: {e}"
                    )));
                }
            }
        }
        Err(Status::aborted(
            "your state's reports changed throughout this read, so its standing could not be \
             settled; read again",
        ))
    }

    fn read_again(&mut self) -> Result<(), Status> {
        let snapshot = self.store.snapshot()?;
        let state = CountryCode::parse(&self.stands.state)
            .map_err(|e| Status::internal(format!("a reader's state: {e}")))?;
        let standing = self
            .policy
            .entitlement(&snapshot, state, self.category, self.clock.now())?
            .require()?;
        self.stands = Stands {
            state: self.stands.state.clone(),
            through: snapshot.last_sequence()?,
            through_audit: snapshot.last_audit_number()?,
            lapses_at: lapse_time(&standing),
        };
        Ok(())
    }
}

/// What an open call re-checks before each item.
pub(super) struct CallGuard {
    peer: PeerIdentity,
    trust: Arc<Trust>,
    trust_changes: watch::Receiver<u64>,
    standing: Option<StandingWatch>,
}

/// A state's standing in one category, kept current while a read runs.
pub(super) struct StandingWatch {
    store: Store,
    policy: Policy,
    clock: Clock,
    state: CountryCode,
    category: Category,
    store_changes: watch::Receiver<u64>,
    /// When the standing last read lapses by itself (`i64::MIN`: not entitled).
    lapses_at: i64,
    read_at: Instant,
    /// The store has changed since the standing was read.
    stale: bool,
}

impl StandingWatch {
    /// Watches `state`'s standing in `category`, as `standing` found it just now.
    pub(super) fn new(
        store: Store,
        policy: Policy,
        clock: Clock,
        store_changes: watch::Receiver<u64>,
        standing: &Standing,
    ) -> Self {
        Self {
            store,
            policy,
            clock,
            state: standing.state,
            category: standing.category,
            store_changes,
            lapses_at: lapse_time(standing),
            read_at: Instant::now(),
            stale: false,
        }
    }

    fn check(&mut self) -> Result<(), Status> {
        let lapsed = self.clock.now() >= self.lapses_at;
        if lapsed || (self.stale && self.read_at.elapsed() >= RECHECK) {
            let snapshot = self.store.snapshot()?;
            let standing =
                self.policy
                    .entitlement(&snapshot, self.state, self.category, self.clock.now())?;
            self.lapses_at = lapse_time(&standing);
            self.read_at = Instant::now();
            self.stale = false;
            standing.require()?;
        }
        Ok(())
    }
}

fn lapse_time(standing: &Standing) -> i64 {
    if standing.entitled() {
        standing.lapses_at.unwrap_or(i64::MAX)
    } else {
        i64::MIN
    }
}

impl CallGuard {
    /// Guards a call of `peer`: revocation and suspension.
    pub(super) fn new(peer: &PeerIdentity, trust: &Arc<Trust>) -> Self {
        Self {
            peer: peer.clone(),
            trust: trust.clone(),
            trust_changes: trust.changes(),
            standing: None,
        }
    }

    /// Also requires the caller's state to keep its standing.
    #[must_use]
    pub(super) fn with_standing(mut self, standing: StandingWatch) -> Self {
        self.standing = Some(standing);
        self
    }

    /// Whether the call may go on; the refusal says why not.
    pub(super) fn check(&mut self) -> Result<(), Status> {
        auth::admit(&self.trust, &self.peer)?;
        if let Some(standing) = &mut self.standing {
            standing.check()?;
        }
        Ok(())
    }

    /// Resolves, with the reason, once the call may no longer go on. Cancel-safe: a
    /// caller may drop it and call again.
    pub(super) async fn lapsed(&mut self) -> Status {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(status) = self.check() {
                return status;
            }
            let Self {
                trust_changes,
                standing,
                ..
            } = self;
            let store_changes = async {
                match standing {
                    Some(watch) => {
                        changed(&mut watch.store_changes).await;
                        watch.stale = true;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = changed(trust_changes) => {}
                () = store_changes => {}
                _ = tick.tick() => {}
                // The certificate's (or its chain's) expiry, to the second, even while
                // nothing is sent.
                () = tokio::time::sleep(super::connections::until_expiry(&self.peer)) => {}
            }
        }
    }

    /// Wraps a stream of results so that each item is sent only while the guard
    /// admits the caller, and the stream ends with the reason as soon as it does not.
    pub(super) fn guard<T: Send + 'static>(
        mut self,
        items: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> Guarded<T> {
        Guarded {
            trust: self.trust.clone(),
            peer: self.peer.clone(),
            items: Box::pin(items),
            lapse: Box::pin(async move { self.lapsed().await }),
            ended: false,
        }
    }
}

/// Waits for the next change; never resolves once the sender is gone (the server is
/// stopping, and the call ends with it).
async fn changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A response stream that ends, with the guard's refusal, once its caller is no longer
/// admitted — checked before every item, and while idle.
pub(super) struct Guarded<T> {
    /// For the exact check before each item (revocation, suspension, expiry): the
    /// guard's own wakes by itself only on a change, at the expiry or once a second.
    trust: Arc<Trust>,
    peer: PeerIdentity,
    items: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    lapse: Pin<Box<dyn Future<Output = Status> + Send>>,
    ended: bool,
}

impl<T> Stream for Guarded<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(status) = this.lapse.as_mut().poll(cx) {
            this.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        if let Err(status) = auth::admit(&this.trust, &this.peer) {
            this.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        match this.items.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(status))) => {
                this.ended = true;
                Poll::Ready(Some(Err(status)))
            }
            other => other,
        }
    }
}

/// Wraps a service (health, reflection) so that every response body — a Watch stream
/// included — ends with the caller's refusal (UNAUTHENTICATED, PERMISSION_DENIED) as
/// soon as the caller is no longer admitted. Goes inside the authenticating interceptor,
/// which leaves the caller's [`PeerIdentity`] in the request.
#[derive(Clone)]
pub(super) struct GuardStreams<S> {
    inner: S,
    trust: Arc<Trust>,
}

impl<S> GuardStreams<S> {
    pub(super) fn new(inner: S, trust: &Arc<Trust>) -> Self {
        Self {
            inner,
            trust: trust.clone(),
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GuardStreams<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for GuardStreams<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<PeerIdentity>()
            .map(|peer| CallGuard::new(peer, &self.trust));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(mut guard) => response.map(|body| {
                    tonic::body::Body::new(GuardedBody {
                        inner: body,
                        trust: guard.trust.clone(),
                        peer: guard.peer.clone(),
                        lapse: Box::pin(async move { guard.lapsed().await }),
                        ended: false,
                    })
                }),
                None => response,
            })
        })
    }
}

/// An HTTP response body that ends with gRPC trailers carrying the guard's refusal.
struct GuardedBody {
    inner: tonic::body::Body,
    /// For the exact check before each frame (revocation, suspension, expiry): the
    /// guard's own wakes by itself only on a change, at the expiry or once a second.
    trust: Arc<Trust>,
    peer: PeerIdentity,
    lapse: Pin<Box<dyn Future<Output = Status> + Send>>,
    ended: bool,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let refused = match this.lapse.as_mut().poll(cx) {
            Poll::Ready(status) => Err(status),
            Poll::Pending => auth::admit(&this.trust, &this.peer),
        };
        if let Err(status) = refused {
            this.ended = true;
            // The status as gRPC trailers (grpc-status, grpc-message, details).
            let mut trailers = status.into_http::<()>().into_parts().0.headers;
            trailers.remove(http::header::CONTENT_TYPE);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}
