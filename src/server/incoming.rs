//! The TLS accept loop: TCP connections in, verified TLS 1.3 streams out.
//!
//! The loop only accepts: it never waits for a slot, so a flood of connections cannot
//! stall it. Each accepted connection then takes a pending-handshake slot — one of
//! `max_pending` in all and of `max_pending_per_address` for its client IP address — or
//! is closed at once. When all `max_pending` slots are taken (connections from many
//! addresses), the oldest connection that has not yet sent a byte is closed to make room:
//! a client that sends its hello at once is never the one closed. A connection must send its first byte within `first_byte_timeout`
//! (a TLS client sends its hello straight away) and finish the handshake within
//! `handshake_timeout`; its slot is freed as soon as it is through, or closed. So
//! connections that open and then stall, from one address or many, hold few slots and
//! hold them briefly, and a legitimate client's handshake starts at once. Only completed
//! handshakes reach tonic; a refused one is logged with the peer's address and reason.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tracing::Instrument as _;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

use super::connections::{Connection, Connections};
use crate::{metrics::Metrics, trust::Trust};

/// Connections that completed a TLS handshake, each watched by [`Connections`].
pub(super) type Incoming = ReceiverStream<Result<Connection, std::io::Error>>;

/// Settings of the accept loop.
#[derive(Clone, Copy)]
pub(super) struct AcceptLimits {
    pub handshake_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
}

impl From<&crate::config::Limits> for AcceptLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        Self {
            handshake_timeout: limits.handshake_timeout(),
            first_byte_timeout: limits.first_byte_timeout(),
            max_pending: limits.max_pending_handshakes,
            max_pending_per_address: limits.max_pending_handshakes_per_address,
        }
    }
}

/// Spawns the accept loop and returns the stream of established connections with the
/// task's handle; abort the handle to stop accepting.
pub(super) fn spawn(
    listener: TcpListener,
    (trust, metrics): (Arc<Trust>, Arc<Metrics>),
    connections: Connections,
    limits: AcceptLimits,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.max_pending.max(1));
    let pending = Pending::new(limits);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Some(slot) = pending.take(peer.ip()) else {
                tracing::debug!(%peer, "too many pending handshakes; connection closed");
                metrics.handshake_refused("too_many_pending");
                continue;
            };
            // Each handshake uses the configuration current when it starts.
            let acceptor = TlsAcceptor::from(trust.server_config());
            let tx = tx.clone();
            let metrics = metrics.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                // The span puts the peer's address on what the verifier logs.
                let stream = handshake(&acceptor, tcp, peer, limits, &slot)
                    .instrument(tracing::info_span!("handshake", %peer))
                    .await;
                drop(slot);
                match stream {
                    // The server has stopped if the receiver is gone; drop the connection.
                    Ok(stream) => {
                        let _ = tx.send(Ok(connections.open(stream, peer))).await;
                    }
                    Err(reason) => metrics.handshake_refused(reason),
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}

/// Pending handshakes, in all and per client address.
#[derive(Clone)]
struct Pending {
    limits: AcceptLimits,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    /// Slots whose connection has not sent a byte yet, oldest first.
    silent: VecDeque<(u64, Arc<Notify>)>,
    next_id: u64,
}

/// A pending-handshake slot, given back when dropped.
struct Slot {
    id: u64,
    address: IpAddr,
    /// Told to give up its connection when room is needed.
    evict: Arc<Notify>,
    counts: Arc<Mutex<Counts>>,
}

impl Slot {
    /// The connection has sent its first byte: it is no longer a candidate to close.
    fn spoke(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.silent.retain(|(id, _)| *id != self.id);
    }
}

impl Pending {
    fn new(limits: AcceptLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    fn take(&self, address: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let Counts {
            total,
            by_address,
            silent,
            next_id,
        } = &mut *counts;
        let here = by_address.entry(address).or_default();
        if *here >= self.limits.max_pending_per_address {
            return None;
        }
        if *total >= self.limits.max_pending {
            // Make room: close the oldest connection that has said nothing yet.
            let (_, oldest) = silent.pop_front()?;
            oldest.notify_one();
        }
        *here += 1;
        *total += 1;
        *next_id += 1;
        let evict = Arc::new(Notify::new());
        silent.push_back((*next_id, evict.clone()));
        Some(Slot {
            id: *next_id,
            address,
            evict,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        counts.silent.retain(|(id, _)| *id != self.id);
        if let Some(here) = counts.by_address.get_mut(&self.address) {
            *here = here.saturating_sub(1);
            if *here == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    limits: AcceptLimits,
    slot: &Slot,
) -> Result<TlsStream<TcpStream>, &'static str> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    let spoke = tokio::select! {
        read = tokio::time::timeout(limits.first_byte_timeout, tcp.peek(&mut first)) => read,
        () = slot.evict.notified() => {
            tracing::debug!(%peer, "silent connection closed to make room for a new one");
            return Err("evicted");
        }
    };
    match spoke {
        Ok(Ok(n)) if n > 0 => slot.spoke(),
        Ok(_) => return Err("closed"),
        Err(_) => {
            tracing::debug!(%peer, timeout = ?limits.first_byte_timeout, "no TLS hello; connection closed");
            return Err("no_client_hello");
        }
    }
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            let reason = refusal_reason(&e);
            tracing::info!(%peer, reason, error = %e, "TLS handshake refused");
            Err(reason)
        }
        Err(_) => {
            tracing::info!(%peer, timeout = ?limits.handshake_timeout, "TLS handshake timed out");
            Err("timeout")
        }
    }
}

/// Why rustls refused a handshake, as a metric label (a fixed set).
fn refusal_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "tls_error";
    };
    match tls {
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            _ => "bad_certificate",
        },
        // The client refused the server (its certificate or parameters).
        Error::AlertReceived(_) => "client_alert",
        Error::InvalidMessage(_)
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => "protocol",
        _ => "tls_error",
    }
}
