//! Authentication of every call: the peer's verified client certificate becomes a
//! [`PeerIdentity`] in the request's extensions, or the call is refused with
//! UNAUTHENTICATED and the reason.

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

use crate::identity::PeerIdentity;

/// A tonic interceptor that authenticates each call from its connection's certificate.
#[derive(Clone)]
pub struct Authenticate {
    trust_domain: Arc<str>,
}

impl Authenticate {
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
        }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate on this connection; connect with a certificate \
                 issued by the exchange CA",
            )
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("the client certificate chain is empty"))?;
        let peer = PeerIdentity::from_certificate(leaf.as_ref(), &self.trust_domain)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(peer);
        Ok(request)
    }
}

/// The authenticated caller of a request that passed [`Authenticate`].
pub fn peer<T>(request: &Request<T>) -> Result<&PeerIdentity, Status> {
    request.extensions().get::<PeerIdentity>().ok_or_else(|| {
        // Reaching a handler without the interceptor is a wiring bug, not a client error.
        Status::internal("the call was not authenticated; this is a server bug")
    })
}
