//! The `tidemark.v1.Admin` service: operator-only administration.

use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::{
    country::CountryCode,
    identity::Role,
    pb,
    server::{auth, status::store_status},
    signing::PublicKey,
    store::{KeyRecord, Store},
};

pub(super) struct AdminService {
    pub store: Store,
}

/// Refuses every caller that is not an operator.
fn require_operator<T>(request: &Request<T>) -> Result<(), Status> {
    let peer = auth::peer(request)?;
    match peer.principal().role() {
        Role::Operator => Ok(()),
        other => Err(Status::permission_denied(format!(
            "administration needs an operator certificate; this is a {} certificate",
            other.label()
        ))),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn register_signing_key(
        &self,
        request: Request<pb::RegisterSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let state = CountryCode::parse(&req.state)
            .map_err(|e| Status::invalid_argument(format!("state: {e}")))?;
        let public = PublicKey::from_spki_pem(&req.public_key_pem)
            .map_err(|e| Status::invalid_argument(format!("public_key_pem: {e}")))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let valid_from = if req.valid_from_unix == 0 {
            now
        } else {
            req.valid_from_unix
        };
        if req.valid_until_unix != 0 && req.valid_until_unix <= valid_from {
            return Err(Status::invalid_argument(
                "valid_until_unix must be after valid_from_unix",
            ));
        }
        let record = KeyRecord::new(
            public.key_id(),
            state.as_str(),
            public.raw(),
            valid_from,
            req.valid_until_unix,
            now,
        );
        let stored = self.store.register_signing_key(&record)?;
        tracing::info!(key_id = %stored.key_id, state = %stored.state, "signing key registered");
        Ok(Response::new(info(&stored)))
    }

    async fn revoke_signing_key(
        &self,
        request: Request<pb::RevokeSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if req.compromised_at_unix > now {
            return Err(Status::invalid_argument(
                "compromised_at_unix is in the future",
            ));
        }
        let at = if req.compromised_at_unix == 0 {
            now
        } else {
            req.compromised_at_unix
        };
        let reason = if req.reason.is_empty() {
            "unspecified"
        } else {
            &req.reason
        };
        let record = self.store.revoke_signing_key(&req.key_id, at, reason)?;
        tracing::warn!(key_id = %record.key_id, state = %record.state, at, reason, "signing key revoked");
        Ok(Response::new(info(&record)))
    }

    async fn list_signing_keys(
        &self,
        request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        require_operator(&request)?;
        let state = request.into_inner().state;
        let keys = self
            .store
            .signing_keys((!state.is_empty()).then_some(state.as_str()))
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys: keys.iter().map(info).collect(),
        }))
    }
}

fn info(record: &KeyRecord) -> pb::SigningKeyInfo {
    pb::SigningKeyInfo {
        key_id: record.key_id.clone(),
        state: record.state.clone(),
        public_key_pem: PublicKey::from_raw(&record.public_key)
            .map(|k| k.to_spki_pem())
            .unwrap_or_default(),
        valid_from_unix: record.valid_from,
        valid_until_unix: record.valid_until,
        revoked_at_unix: record.revoked_at,
        revocation_reason: record.revocation_reason.clone(),
    }
}
