//! The `tidemark.v1.Exchange` service: thin handlers over the domain.

use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::{
    identity::{PeerIdentity, Role},
    pb,
    server::auth,
};

/// The Exchange service implementation; see [`super::Server`] for how it is mounted.
pub(super) struct ExchangeService;

#[tonic::async_trait]
impl pb::exchange_server::Exchange for ExchangeService {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let peer = auth::peer(&request)?;
        Ok(Response::new(who_am_i(peer)))
    }
}

fn who_am_i(peer: &PeerIdentity) -> pb::WhoAmIResponse {
    let principal = peer.principal();
    let role = match principal.role() {
        Role::Node(_) => pb::Role::Node,
        Role::StateAnalyst(_) => pb::Role::StateAnalyst,
        Role::RegionalAnalyst => pb::Role::RegionalAnalyst,
        Role::Operator => pb::Role::Operator,
    };
    pb::WhoAmIResponse {
        spiffe_id: principal.spiffe_id(),
        trust_domain: principal.trust_domain().to_owned(),
        role: role.into(),
        state: principal
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        name: principal.name().to_owned(),
        certificate_serial: peer.serial().to_owned(),
        certificate_not_before: Some(Timestamp {
            seconds: peer.not_before(),
            nanos: 0,
        }),
        certificate_not_after: Some(Timestamp {
            seconds: peer.not_after(),
            nanos: 0,
        }),
    }
}
