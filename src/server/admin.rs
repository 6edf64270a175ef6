//! The `tidemark.v1.Admin` service: operator-only administration.

use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::{
    country::CountryCode,
    identity::Role,
    pb,
    server::{auth, status::store_status},
    signing::PublicKey,
    store::{AuditRecord, KeyRecord, Store, Writer},
};

pub(super) struct AdminService {
    pub store: Store,
    pub writer: Writer,
}

impl AdminService {
    /// Records an administrative action; the action is refused if it cannot be recorded.
    async fn audit(&self, operator: String, action: &str, detail: String) -> Result<(), Status> {
        self.writer
            .audit(AuditRecord {
                principal: operator,
                action: action.to_owned(),
                detail,
                ..AuditRecord::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| Status::unavailable(format!("the audit log could not be written: {e}")))
    }
}

/// Refuses every caller that is not an operator; returns the operator's SPIFFE ID.
fn require_operator<T>(request: &Request<T>) -> Result<String, Status> {
    let peer = auth::peer(request)?;
    match peer.principal().role() {
        Role::Operator => Ok(peer.principal().spiffe_id()),
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
        let operator = require_operator(&request)?;
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
        self.audit(
            operator,
            "register-key",
            format!("key {} for {}", stored.key_id, stored.state),
        )
        .await?;
        tracing::info!(key_id = %stored.key_id, state = %stored.state, "signing key registered");
        Ok(Response::new(info(&stored)))
    }

    async fn revoke_signing_key(
        &self,
        request: Request<pb::RevokeSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let operator = require_operator(&request)?;
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
        self.audit(
            operator,
            "revoke-key",
            format!(
                "key {} of {} revoked as of {at} ({reason})",
                record.key_id, record.state
            ),
        )
        .await?;
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

    async fn audit_log(
        &self,
        request: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(10_000)
        };
        let records = self
            .store
            .snapshot()
            .and_then(|s| s.audit_after(req.after, usize::try_from(limit).unwrap_or(100)))
            .map_err(|e| store_status(&e))?;
        let entries = records
            .into_iter()
            .map(|(number, r)| pb::AuditEntry {
                number,
                at_unix: r.at,
                principal: r.principal,
                state: r.state,
                action: r.action,
                detail: r.detail,
                count: r.count,
                by_owner: r.owners.into_iter().map(|o| (o.owner, o.count)).collect(),
            })
            .collect();
        Ok(Response::new(pb::AuditLogResponse { entries }))
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
