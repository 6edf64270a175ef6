//! Authentication of every call: the peer's verified client certificate becomes a
//! [`PeerIdentity`] in the request's extensions, or the call is refused with
//! UNAUTHENTICATED and the reason.
//!
//! A suspended state is out of the exchange, not out of checking the operator: its nodes
//! may still make the calls that check it ([`open_to_suspended`]) — the transparency
//! log, its proofs and cosigning it as a witness, and the list of who read the state's
//! data —, which show nothing of any report. Every other call is refused with
//! PERMISSION_DENIED and the reason.
//!
//! Parsing a certificate costs more than a small call, so identities are remembered by
//! the exact chain presented (the same bytes always name the same identity and chain).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status, service::Interceptor};

use crate::{identity::PeerIdentity, metrics::MethodLabels, trust::Trust};

/// Most certificates remembered; past this the cache starts over.
const MAX_CACHED: usize = 4096;

/// A tonic interceptor that authenticates each call from its connection's certificate.
#[derive(Clone)]
pub(super) struct Authenticate {
    trust_domain: Arc<str>,
    trust: Arc<Trust>,
    /// By the whole chain presented ([`crate::identity::chain_digest`]): one leaf may come
    /// with other intermediates on another connection, and each chain is judged as it is.
    known: Arc<Mutex<HashMap<[u8; 32], PeerIdentity>>>,
    /// Connections over their principal's limit, whose calls are refused.
    over_limit: super::connections::OverLimit,
}

impl Authenticate {
    pub(super) fn new(
        trust_domain: &str,
        trust: Arc<Trust>,
        over_limit: super::connections::OverLimit,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            trust,
            over_limit,
            known: Arc::default(),
        }
    }

    fn identify(&self, chain: &[CertificateDer<'static>]) -> Result<PeerIdentity, Status> {
        let der = chain
            .first()
            .ok_or_else(|| Status::unauthenticated("the client certificate chain is empty"))?
            .as_ref();
        // A poisoned lock only means another call panicked mid-insert; the map is
        // still a valid cache.
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = crate::identity::chain_digest(chain);
        if let Some(peer) = known.get(&key) {
            return Ok(peer.clone());
        }
        let peer = PeerIdentity::from_certificate(der, &self.trust_domain)
            .map_err(|e| Status::unauthenticated(e.to_string()))?
            .with_chain(chain);
        if known.len() >= MAX_CACHED {
            known.clear();
        }
        known.insert(key, peer.clone());
        Ok(peer)
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
        let peer = self.identify(&certs)?;
        // For the refusal log, whatever happens next.
        if let Some(caller) = request.extensions().get::<super::instrument::Caller>() {
            caller.set(peer.principal().clone());
        }
        if let Some(refused) = self.over_limit.refusal(request.remote_addr()) {
            return Err(refused);
        }
        // Checked on every call: an open connection outlives a revocation or suspension.
        match lapse(&self.trust, &peer) {
            None => {}
            Some(Lapse::Suspended)
                if request
                    .extensions()
                    .get::<MethodLabels>()
                    .is_some_and(open_to_suspended) => {}
            Some(lapse) => return Err(lapse.status(&peer, &self.trust)),
        }
        request.extensions_mut().insert(peer);
        Ok(request)
    }
}

/// Why the trust state no longer admits a peer it admitted at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lapse {
    /// Its certificate has expired since the handshake.
    Expired,
    /// Its certificate has been revoked.
    Revoked,
    /// Its certificate's key was reported compromised (another certificate of it was
    /// revoked for keyCompromise).
    KeyCompromised,
    /// Its certificate no longer chains to a CA of the bundle (a reload took the CA out).
    Untrusted,
    /// Its state has been suspended.
    Suspended,
    /// Its chain ends at a partner CA that does not vouch for it (`[tls] partner_cas`:
    /// a partner CA vouches only for the nodes and analysts of its states).
    NotVouched,
}

impl Lapse {
    /// The lapse as a metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::KeyCompromised => "key_compromised",
            Self::Untrusted => "untrusted",
            Self::Suspended => "suspended",
            Self::NotVouched => "not_vouched",
        }
    }

    /// What `peer` is told: UNAUTHENTICATED for its certificate, PERMISSION_DENIED for
    /// its state.
    fn status(self, peer: &PeerIdentity, trust: &Trust) -> Status {
        match self {
            Self::Expired => Status::unauthenticated(format!(
                "client certificate {} expired at {}; ask your operator for a new one",
                peer.serial(),
                crate::clock::format_time(peer.not_after())
            )),
            Self::Revoked if peer.certificates().len() > 1 => Status::unauthenticated(format!(
                "client certificate {}, or the intermediate CA certificate that issued it, has \
                 been revoked; ask your operator for a new one",
                peer.serial()
            )),
            Self::Revoked => Status::unauthenticated(format!(
                "client certificate {} has been revoked; ask your operator for a new one",
                peer.serial()
            )),
            Self::KeyCompromised => Status::unauthenticated(format!(
                "the key of client certificate {} of {} was reported compromised (certificate \
                 {} was revoked for key-compromise): make a new key and have a certificate \
                 made for it (`tidemark pki csr`, then your operator or your state's CA)",
                peer.serial(),
                peer.issuer_name(),
                trust
                    .compromised_key(peer.key_fingerprint())
                    .unwrap_or_default()
            )),
            Self::Untrusted => Status::unauthenticated(format!(
                "client certificate {} no longer chains to a CA this exchange trusts (the CA \
                 bundle was changed, or a CA certificate in the chain expired); ask your \
                 operator for a certificate of the current CA",
                peer.serial()
            )),
            Self::NotVouched => Status::unauthenticated(format!(
                "client certificate {} chains to the partner CA {}, which vouches only for \
                 the nodes and analysts of the states [tls] partner_cas lists for it, and not \
                 for {}; ask your own state's operator or the exchange's for a certificate",
                peer.serial(),
                trust.verified_chain(peer).map_or_else(
                    || peer.issuer_name().to_owned(),
                    |shown| shown.anchor.clone()
                ),
                peer.principal().spiffe_id()
            )),
            Self::Suspended => {
                let state = peer
                    .principal()
                    .state()
                    .map_or_else(|| "its state".to_owned(), |state| state.to_string());
                Status::permission_denied(format!(
                    "{state} is suspended from the exchange; until an operator reinstates \
                     it, its certificates serve only to check the operator (the transparency \
                     log, witnessing it, and `tidemark audit`)"
                ))
            }
        }
    }
}

/// Whether `peer`'s rights have lapsed since its handshake: its certificate has expired
/// (wall-clock time, as the handshake checked it), been revoked or no longer chains to a
/// CA of the bundle, or its state has been suspended.
pub(super) fn lapse(trust: &Trust, peer: &PeerIdentity) -> Option<Lapse> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if now > peer.not_after() {
        Some(Lapse::Expired)
    } else if trust.revokes(peer.certificates()) {
        Some(Lapse::Revoked)
    } else if trust.compromised_key(peer.key_fingerprint()).is_some() {
        Some(Lapse::KeyCompromised)
    } else if !trust.chains_to_a_trusted_ca(peer.chain()) {
        Some(Lapse::Untrusted)
    } else if trust.partner_refuses(peer) {
        Some(Lapse::NotVouched)
    } else if peer
        .principal()
        .state()
        .is_some_and(|state| trust.is_suspended(state.as_str()))
    {
        Some(Lapse::Suspended)
    } else {
        None
    }
}

/// Whether a suspended state's nodes may still call `method`: the calls that check the
/// operator, and show nothing of any report.
pub(super) fn open_to_suspended(method: &MethodLabels) -> bool {
    match method.grpc_service.as_str() {
        "tidemark.v1.Transparency" => true,
        "tidemark.v1.Exchange" => method.grpc_method == "AccessToMyData",
        _ => false,
    }
}

/// Whether the trust state still admits `peer` (see [`lapse`]). Checked at the start of
/// every call, and again while a long-lived call runs (see [`super::guard`]).
pub(super) fn admit(trust: &Trust, peer: &PeerIdentity) -> Result<(), Status> {
    lapse(trust, peer).map_or(Ok(()), |lapse| Err(lapse.status(peer, trust)))
}

/// The authenticated caller of a request that passed [`Authenticate`].
pub(super) fn peer<T>(request: &Request<T>) -> Result<&PeerIdentity, Status> {
    request.extensions().get::<PeerIdentity>().ok_or_else(|| {
        // Reaching a handler without the interceptor is a wiring bug, not a client error.
        Status::internal("the call was not authenticated; this is a server bug")
    })
}
