//! The TLS accept loop: TCP connections in, verified TLS 1.3 streams out.
//!
//! Each handshake runs in its own task under a timeout, and a semaphore bounds how many
//! are in progress, so slow or hostile clients cannot stall the listener. Only completed
//! handshakes reach tonic; a refused one is logged with the peer's address and reason.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::trust::Trust;

/// Streams that completed a TLS handshake, in the exact type tonic reads peer
/// certificates from.
pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Settings of the accept loop.
#[derive(Clone, Copy)]
pub struct AcceptLimits {
    pub handshake_timeout: Duration,
    pub max_pending_handshakes: usize,
}

/// Spawns the accept loop and returns the stream of established connections with the
/// task's handle; abort the handle to stop accepting.
pub fn spawn(
    listener: TcpListener,
    trust: Arc<Trust>,
    limits: AcceptLimits,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.max_pending_handshakes.max(1));
    let pending = Arc::new(Semaphore::new(limits.max_pending_handshakes.max(1)));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                return;
            };
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
            // Each handshake uses the configuration current when it starts.
            let acceptor = TlsAcceptor::from(trust.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(stream) =
                    handshake(&acceptor, tcp, peer, limits.handshake_timeout).await
                {
                    // The server has stopped if the receiver is gone; drop the connection.
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "TLS handshake timed out");
            None
        }
    }
}
