//! Open connections end with their certificate's rights.
//!
//! Every call checks its caller when it starts ([`super::auth`]), and a stream checks
//! again before each item it sends ([`super::guard`]). But a stream whose caller has
//! stopped reading is not asked for its next item, and an idle connection is asked
//! nothing: both would stay open after the certificate is revoked or expires, or its
//! state is suspended. So every connection is watched from its handshake on. Once its
//! certificate's rights lapse, calls in progress have `limits.lapsed_connection_grace_secs`
//! to end with their reason (a stream being read is told within a second), and then the
//! connection is closed: reads and writes on it fail, HTTP/2 drops it with every call on
//! it, and what it still held for the caller is never sent. A state reinstated within the
//! grace period keeps its connections. A connection made while its state was suspended,
//! which can only check the operator ([`auth::open_to_suspended`]), is not closed for
//! that suspension — only once its state has been reinstated and suspended again.

use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use atomic_waker::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::oneshot,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::{identity::PeerIdentity, metrics::Metrics, server::auth, trust::Trust};

/// The longest a watcher sleeps before it looks again: the wall clock can be set while
/// it sleeps, and an intermediate CA in the chain can expire before the leaf (the chain
/// is checked again each minute).
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// Watches the connections that complete a handshake.
#[derive(Clone)]
pub(super) struct Connections {
    trust: Arc<Trust>,
    /// Keeps the key of each certificate a handshake presents (`store/seen_keys.rs`).
    writer: crate::store::Writer,
    trust_domain: Arc<str>,
    grace: Duration,
    /// How long a connection may take, after its handshake, to send anything.
    first_request: Duration,
    /// Connections open per principal (SPIFFE ID), and how many one may hold.
    open_by: Arc<Mutex<HashMap<String, usize>>>,
    max_per_principal: usize,
    /// Connections over that limit, answered RESOURCE_EXHAUSTED until they are closed.
    over_limit: OverLimit,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// Connections are closed `grace` after their certificate's rights lapse, and
    /// `first_request` after their handshake if the client has sent nothing by then.
    pub(super) fn new(
        (trust, writer): (Arc<Trust>, crate::store::Writer),
        trust_domain: &str,
        (grace, first_request, max_per_principal): (Duration, Duration, usize),
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            trust,
            writer,
            trust_domain: trust_domain.into(),
            grace,
            first_request,
            open_by: Arc::default(),
            max_per_principal,
            over_limit: OverLimit {
                addresses: Arc::default(),
                most: max_per_principal,
            },
            metrics,
        }
    }

    /// The connections over their principal's limit, for the calls made on them.
    pub(super) fn over_limit(&self) -> OverLimit {
        self.over_limit.clone()
    }

    /// Counts one more connection of `principal`, unless it already holds as many as it
    /// may: the count goes down when the returned value is dropped.
    fn hold(&self, principal: &str) -> Option<Held> {
        let mut open = self.open_by.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(principal.to_owned()).or_default();
        if *count >= self.max_per_principal {
            return None;
        }
        *count += 1;
        Some(Held {
            open_by: self.open_by.clone(),
            principal: principal.to_owned(),
        })
    }

    /// Starts watching `stream`, just through its handshake with the client at `peer`.
    pub(super) fn open(
        &self,
        stream: TlsStream<TcpStream>,
        peer: std::net::SocketAddr,
    ) -> Connection {
        let (open, closed) = oneshot::channel();
        let cut = Arc::new(Cut::default());
        // A certificate that names no principal of this exchange can make no call (each
        // is refused with the reason), so there is nothing to watch.
        let identity = stream.get_ref().1.peer_certificates().and_then(|chain| {
            let leaf = chain.first()?;
            let peer = PeerIdentity::from_certificate(leaf, &self.trust_domain).ok()?;
            Some(peer.with_chain(chain))
        });
        if let Some(identity) = identity {
            if let Some(seen) = self.trust.saw(&identity) {
                self.writer.keep_seen_key(seen);
            }
            let principal = identity.principal().spiffe_id();
            let lapse = auth::lapse(&self.trust, &identity);
            // Counted among its principal's connections only if it speaks for that
            // principal: a partner CA's certificate naming another state's node (refused,
            // not vouched for) would otherwise take that node's places. Those that do not
            // are counted apart, under the same limit.
            let speaks_for = matches!(lapse, None | Some(auth::Lapse::Suspended));
            let counted = if speaks_for {
                principal.clone()
            } else {
                format!("{principal} (not admitted)")
            };
            if let Some(held) = self.hold(&counted) {
                // Told before any call on the connection is answered.
                let may_exchange = lapse != Some(auth::Lapse::Suspended);
                let watch = Watch {
                    connections: self.clone(),
                    identity,
                    may_exchange,
                    peer,
                    cut: cut.clone(),
                    _held: held,
                };
                tokio::spawn(watch.run(closed));
            } else {
                tracing::warn!(%principal, %peer, most = self.max_per_principal, "a connection over limits.max_connections_per_principal was closed");
                self.metrics.connection_closed("too_many_connections");
                // Its calls are answered why for a moment (not a bare reset, which a
                // client takes for a server away and retries), then it is closed.
                self.over_limit.add(peer);
                let (over_limit, cut) = (self.over_limit.clone(), cut.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(OVER_LIMIT_ANSWERED).await;
                    cut.cut();
                    over_limit.remove(peer);
                });
            }
        }
        Connection {
            stream,
            preface: Some(Box::pin(tokio::time::sleep(self.first_request))),
            cut,
            _open: open,
            _counted: self.metrics.connection_opened(),
        }
    }
}

/// How long a connection over its principal's limit is answered before it is closed.
const OVER_LIMIT_ANSWERED: Duration = Duration::from_secs(2);

/// The client addresses of connections over their principal's limit
/// (`limits.max_connections_per_principal`): every call on one is refused
/// RESOURCE_EXHAUSTED, saying so, until it is closed.
#[derive(Clone)]
pub(super) struct OverLimit {
    addresses: Arc<Mutex<std::collections::HashSet<std::net::SocketAddr>>>,
    most: usize,
}

impl OverLimit {
    fn add(&self, peer: std::net::SocketAddr) {
        self.lock().insert(peer);
    }

    fn remove(&self, peer: std::net::SocketAddr) {
        self.lock().remove(&peer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<std::net::SocketAddr>> {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The refusal of a call from `peer` on a connection over the limit, if it is one.
    pub(super) fn refusal(&self, peer: Option<std::net::SocketAddr>) -> Option<tonic::Status> {
        let peer = peer?;
        self.lock().contains(&peer).then(|| {
            tonic::Status::resource_exhausted(format!(
                "this principal already holds {} connections (limits.max_connections_per_principal), \
                 so this one is being closed: make calls on the connections it holds, or close \
                 some",
                self.most
            ))
        })
    }
}

/// One of a principal's open connections, counted until dropped.
struct Held {
    open_by: Arc<Mutex<HashMap<String, usize>>>,
    principal: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.open_by.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

/// One connection's watch.
struct Watch {
    connections: Connections,
    identity: PeerIdentity,
    /// Whether calls of the exchange may have been made on the connection: its state was
    /// not suspended when it was made, or has been reinstated since.
    may_exchange: bool,
    peer: std::net::SocketAddr,
    cut: Arc<Cut>,
    /// Counts the connection among its principal's while it is watched (one that does
    /// not speak for its principal apart).
    _held: Held,
}

impl Watch {
    /// Until the connection ends (`closed` resolves), or is cut here.
    async fn run(mut self, mut closed: oneshot::Receiver<()>) {
        let trust = &self.connections.trust;
        let mut changes = trust.changes();
        // When the rights lapsed, if they have: the grace period runs from then.
        let mut lapsed_at = None;
        loop {
            lapsed_at = match (auth::lapse(trust, &self.identity), lapsed_at) {
                // Reinstated: a later lapse has a grace period of its own.
                (None, _) => {
                    self.may_exchange = true;
                    None
                }
                // Suspended since before the connection was made: it only checks.
                (Some(auth::Lapse::Suspended), _) if !self.may_exchange => None,
                (Some(_), None) => Some(tokio::time::Instant::now()),
                (Some(lapse), Some(since)) if since.elapsed() >= self.connections.grace => {
                    self.close(lapse);
                    return;
                }
                (Some(_), since) => since,
            };
            let wake = match lapsed_at {
                Some(since) => since + self.connections.grace,
                None => tokio::time::Instant::now() + until_expiry(&self.identity),
            };
            tokio::select! {
                next = changes.changed() => if next.is_err() { return },
                () = tokio::time::sleep_until(wake) => {}
                _ = &mut closed => return,
            }
        }
    }

    /// Cuts the connection, whose rights lapsed for `lapse` a grace period ago.
    fn close(&self, lapse: auth::Lapse) {
        tracing::info!(
            peer = %self.peer,
            principal = %self.identity.principal(),
            serial = self.identity.serial(),
            reason = lapse.label(),
            "connection closed: its certificate's rights have lapsed"
        );
        self.connections.metrics.connection_closed(lapse.label());
        self.cut.cut();
    }
}

/// How long until `identity`'s certificate, or a CA certificate of its chain, has expired
/// (`auth::lapse` counts whole seconds past a `notAfter`), at most [`LONGEST_SLEEP`].
pub(super) fn until_expiry(identity: &PeerIdentity) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let expired = u64::try_from(identity.chain_not_after().saturating_add(1)).unwrap_or(0);
    Duration::from_secs(expired)
        .saturating_sub(now)
        .min(LONGEST_SLEEP)
}

/// Whether a connection has been cut, and the task to wake when it is.
#[derive(Default)]
struct Cut {
    done: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    fn cut(&self) {
        self.done.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Fails once the connection is cut; until then, wakes `cx` when it is.
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        self.waker.register(cx.waker());
        if self.done.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate's rights have lapsed",
            ));
        }
        Ok(())
    }
}

/// A TLS connection that its [`Watch`] can cut; tonic reads the peer's certificates
/// through it as from the TLS stream itself.
pub(super) struct Connection {
    stream: TlsStream<TcpStream>,
    /// Until the client's first bytes (its HTTP/2 preface) arrive: when they are due. A
    /// certificate holder that completed handshakes and sent nothing kept each
    /// connection (and its file descriptor) open for good, until the server could accept
    /// no other.
    preface: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Arc<Cut>,
    /// Dropped with the connection, which ends its watch.
    _open: oneshot::Sender<()>,
    /// Counts it among the open connections while it is.
    _counted: crate::metrics::OpenConnection,
}

impl Connected for Connection {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Some(due) = self.preface.as_mut() {
            if buf.filled().len() > before {
                self.preface = None;
            } else if read.is_pending() && due.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing after its TLS handshake",
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
