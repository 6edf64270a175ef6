//! The TLS accept loop: TCP connections in, verified TLS 1.3 streams out.
//!
//! The loop only accepts: it never waits for a slot, so a flood of connections cannot
//! stall it. Each accepted connection then takes a pending-handshake slot — one of
//! `max_pending` in all and of `max_pending_per_address` for its client address group
//! (an IPv4 address, or an IPv6 /64) — or is closed at once. When all `max_pending`
//! slots are taken, one is closed to make room: one of the address group that holds the
//! most — its oldest that has not sent a byte yet, else its oldest. So a client from an
//! address of its own is not the one closed, even when stalled handshakes from many
//! addresses fill the pool (unless every address holds but one). A connection
//! must send its first byte within `first_byte_timeout` (a TLS client sends its hello
//! straight away) and finish the handshake within `handshake_timeout`; its slot is freed
//! as soon as it is through, or closed. So connections that open and then stall, from
//! one address or many, hold few slots and hold them briefly, and a legitimate client's
//! handshake starts at once. Only completed handshakes reach tonic; a refused one is
//! logged with the peer's address and reason, at INFO from a budget
//! ([`crate::log_budget`]). `tidemark_pending_handshakes` and
//! `tidemark_handshakes_refused` count them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
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
use crate::{log_budget::HANDSHAKE_REFUSALS, metrics::Metrics, trust::Trust};

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
    let pending = Pending::new(limits, metrics.clone());
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
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Each client address group's pending slots, oldest first.
    by_address: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
    /// Slots whose connection has not sent a byte yet.
    silent: HashSet<u64>,
    next_id: u64,
}

/// A pending-handshake slot, given back when dropped.
struct Slot {
    id: u64,
    address: IpAddr,
    /// Told to give up its connection when room is needed.
    evict: Arc<Notify>,
    counts: Arc<Mutex<Counts>>,
    metrics: Arc<Metrics>,
}

impl Slot {
    /// The connection has sent its first byte: of its address group's, closed to make
    /// room only once none that has sent nothing is left.
    fn spoke(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.silent.remove(&self.id);
    }
}

/// The group a client address counts in: an IPv4 address alone, an IPv6 address by its
/// /64 (one subscriber's network: RFC 6177 assigns at least that much to a site, so
/// one host can hold a whole /64 of addresses).
fn address_group(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
            v6.to_bits() & !u128::from(u64::MAX),
        )),
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl Pending {
    fn new(limits: AcceptLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            counts: Arc::default(),
            metrics,
        }
    }

    /// A slot for a connection from `address`; `None` when its address group holds as
    /// many as it may. When all slots are taken, one is made ([`Counts::make_room`]).
    fn take(&self, address: IpAddr) -> Option<Slot> {
        let group = address_group(address);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts
            .by_address
            .get(&group)
            .is_some_and(|here| here.len() >= self.limits.max_pending_per_address)
        {
            return None;
        }
        if counts.total >= self.limits.max_pending {
            counts.make_room();
        }
        counts.total += 1;
        counts.next_id += 1;
        let id = counts.next_id;
        let evict = Arc::new(Notify::new());
        counts.silent.insert(id);
        counts
            .by_address
            .entry(group)
            .or_default()
            .push_back((id, evict.clone()));
        self.metrics.pending_handshakes(counts.total);
        Some(Slot {
            id,
            address: group,
            evict,
            counts: self.counts.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

impl Counts {
    /// Closes one pending connection of the address group holding the most (of equals,
    /// the one whose oldest is oldest): its oldest that has sent nothing yet, else its
    /// oldest. Its slot counts no more from now on. A client's connection that has not
    /// been read yet is silent too (an outside pass: a rule of the oldest silent
    /// connection first closed new clients' connections, not the stalled handshakes
    /// that had each sent a byte), so which address is closed comes first.
    fn make_room(&mut self) {
        let chosen = self
            .by_address
            .iter()
            .filter_map(|(group, slots)| Some((slots.len(), slots.front()?.0, *group)))
            .max_by_key(|(len, oldest, _)| (*len, std::cmp::Reverse(*oldest)))
            .map(|(_, _, group)| group);
        let Some(group) = chosen else { return };
        let Some(slots) = self.by_address.get_mut(&group) else {
            return;
        };
        let at = slots
            .iter()
            .position(|(id, _)| self.silent.contains(id))
            .unwrap_or(0);
        if let Some((id, evict)) = slots.remove(at) {
            evict.notify_one();
            self.silent.remove(&id);
            self.total = self.total.saturating_sub(1);
        }
        if slots.is_empty() {
            self.by_address.remove(&group);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.silent.remove(&self.id);
        let mut released = false;
        if let Some(slots) = counts.by_address.get_mut(&self.address) {
            let before = slots.len();
            slots.retain(|(id, _)| *id != self.id);
            released = slots.len() < before;
            if slots.is_empty() {
                counts.by_address.remove(&self.address);
            }
        }
        // An evicted slot was let go when it was told.
        if released {
            counts.total = counts.total.saturating_sub(1);
        }
        self.metrics.pending_handshakes(counts.total);
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
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => accepted,
        () = slot.evict.notified() => {
            tracing::debug!(%peer, "pending handshake closed to make room for a new one");
            return Err("evicted");
        }
    };
    match accepted {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            let reason = refusal_reason(&e);
            if let Some(held_back) = HANDSHAKE_REFUSALS.take() {
                tracing::info!(%peer, reason, error = %e, held_back, "TLS handshake refused");
            } else {
                tracing::debug!(%peer, reason, error = %e, "TLS handshake refused");
            }
            Err(reason)
        }
        Err(_) => {
            let timeout = limits.handshake_timeout;
            if let Some(held_back) = HANDSHAKE_REFUSALS.take() {
                tracing::info!(%peer, ?timeout, held_back, "TLS handshake timed out");
            } else {
                tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            }
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::address_group;

    #[test]
    fn an_ipv6_address_counts_in_its_64_and_an_ipv4_address_alone() {
        let group = |a: &str| address_group(a.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(group("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(group("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::");
        assert_ne!(group("2001:db8:1:3::1"), group("2001:db8:1:2::1"));
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
    }
}
