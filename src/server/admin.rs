//! The `tidemark.v1.Admin` service: operator-only administration.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use tonic::{Request, Response, Status};

use crate::{
    clock::Clock,
    config::PolicyConfig,
    country::CountryCode,
    identity::{PeerIdentity, Principal, Role},
    pb,
    pki::{self, Validity},
    policy::Policy,
    report::Category,
    server::{auth, status::store_status},
    signing::PublicKey,
    store::{
        AuditRecord, IssuedCertificate, KeyRecord, RevokedCertificate, StateRecord, Store, Writer,
    },
    trust::Trust,
};

pub(super) struct AdminService {
    pub store: Store,
    pub writer: Writer,
    pub trust: Arc<Trust>,
    pub clock: Clock,
    pub trust_domain: String,
    pub policy: PolicyConfig,
}

/// The longest validity the server gives an issued certificate (CA/B-style 397 days).
const MAX_CERT_DAYS: u32 = 397;

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

impl AdminService {
    /// Rebuilds the live trust state from the files and the store.
    fn refresh(&self) -> Result<(), Status> {
        self.trust.refresh(&self.store).map_err(|e| {
            tracing::error!(error = %e, "the TLS configuration could not be rebuilt; the old one stays");
            Status::failed_precondition(format!("the TLS configuration could not be rebuilt (the old one stays in use): {e}"))
        })
    }

    async fn set_suspended(
        &self,
        operator: String,
        code: &str,
        suspended: bool,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let state = CountryCode::parse(code)
            .map_err(|e| Status::invalid_argument(format!("state: {e}")))?;
        let now = self.clock.now();
        let existing = self
            .store
            .state(state.as_str())
            .map_err(|e| store_status(&e))?;
        let record = StateRecord {
            state: state.to_string(),
            suspended,
            enrolled_at: existing.map_or(now, |s| s.enrolled_at),
            changed_at: now,
        };
        self.store
            .put_state(&record)
            .map_err(|e| store_status(&e))?;
        self.refresh()?;
        let action = if suspended {
            "suspend-state"
        } else {
            "enrol-state"
        };
        self.audit(operator, action, state.to_string()).await?;
        Ok(Response::new(state_info(&record)))
    }
}

fn state_info(s: &StateRecord) -> pb::StateInfo {
    pb::StateInfo {
        state: s.state.clone(),
        suspended: s.suspended,
        enrolled_at_unix: s.enrolled_at,
        changed_at_unix: s.changed_at,
        ..pb::StateInfo::default()
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
        let now = self.clock.now();
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
        Ok(Response::new(info_of_key(&stored)))
    }

    async fn revoke_signing_key(
        &self,
        request: Request<pb::RevokeSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let now = self.clock.now();
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
        Ok(Response::new(info_of_key(&record)))
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
            keys: keys.iter().map(info_of_key).collect(),
        }))
    }

    async fn enrol_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let operator = require_operator(&request)?;
        self.set_suspended(operator, &request.get_ref().state, false)
            .await
    }

    async fn suspend_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let operator = require_operator(&request)?;
        self.set_suspended(operator, &request.get_ref().state, true)
            .await
    }

    async fn list_states(
        &self,
        request: Request<pb::ListStatesRequest>,
    ) -> Result<Response<pb::ListStatesResponse>, Status> {
        require_operator(&request)?;
        let states = self.store.states().map_err(|e| store_status(&e))?;
        let certs = self
            .store
            .issued_certificates()
            .map_err(|e| store_status(&e))?;
        let keys = self
            .store
            .signing_keys(None)
            .map_err(|e| store_status(&e))?;
        let snapshot = self.store.snapshot().map_err(|e| store_status(&e))?;
        let policy = Policy::new(self.policy.clone());
        let mut out = Vec::new();
        for record in &states {
            let mut info = state_info(record);
            let marker = format!("/state/{}/", record.state);
            info.certificates = certs
                .iter()
                .filter(|c| c.spiffe_id.contains(&marker))
                .map(|c| pb::IssuedCertificateInfo {
                    serial: c.serial.clone(),
                    spiffe_id: c.spiffe_id.clone(),
                    not_after_unix: c.not_after,
                    revoked: self.trust.is_revoked(&c.serial),
                })
                .collect();
            info.signing_keys = keys
                .iter()
                .filter(|k| k.state == record.state)
                .map(info_of_key)
                .collect();
            if let Ok(code) = CountryCode::parse(&record.state) {
                for category in [Category::SmugglingIncident, Category::MaritimeMovement] {
                    let s = policy
                        .standing(&snapshot, code, category, self.clock.now())
                        .map_err(|e| store_status(&e))?;
                    info.standing.push(s.to_pb());
                }
            }
            out.push(info);
        }
        Ok(Response::new(pb::ListStatesResponse { states: out }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let ca = self.trust.issuing_ca().ok_or_else(|| {
            Status::failed_precondition(
                "this server does not hold the CA key (tls.ca_key), so it cannot issue \
                 certificates; issue offline with `tidemark pki issue`",
            )
        })?;
        if req.days == 0 || req.days > MAX_CERT_DAYS {
            return Err(Status::invalid_argument(format!(
                "days must be 1 to {MAX_CERT_DAYS}"
            )));
        }
        let csr = pki::read_csr(&req.csr_pem)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        if let Some(serial) = self
            .store
            .compromised_key(&csr.key_fingerprint())
            .map_err(|e| store_status(&e))?
        {
            return Err(Status::failed_precondition(format!(
                "this CSR's key was reported compromised (certificate {serial} was revoked for \
                 key-compromise); make a new key and CSR (`tidemark pki csr`)"
            )));
        }
        let uri = csr.requested_uri();
        let principal = Principal::from_spiffe_id(uri, &self.trust_domain)
            .map_err(|e| Status::invalid_argument(format!("the CSR asks for {uri}: {e}")))?;
        match principal.role() {
            Role::Node(state) | Role::StateAnalyst(state) => {
                let enrolled = self
                    .store
                    .state(state.as_str())
                    .map_err(|e| store_status(&e))?;
                match enrolled {
                    Some(s) if !s.suspended => {}
                    Some(_) => {
                        return Err(Status::failed_precondition(format!(
                            "{state} is suspended; reinstate it first"
                        )));
                    }
                    None => {
                        return Err(Status::failed_precondition(format!(
                            "{state} is not enrolled in this exchange; enrol it first (`tidemark admin enrol {state}`)"
                        )));
                    }
                }
            }
            Role::RegionalAnalyst => {}
            Role::Operator => {
                return Err(Status::permission_denied(
                    "operator certificates are not issued from CSRs; make them offline with the CA files",
                ));
            }
        }
        let now = self.clock.now_utc();
        let validity = Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(req.days)),
        };
        let cert_pem = ca
            .issue_from_csr(&csr, &principal, validity)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Status::internal(e.to_string()))?;
        let issued = PeerIdentity::from_certificate(der.as_ref(), &self.trust_domain)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.store
            .record_issued(&IssuedCertificate {
                serial: issued.serial().to_owned(),
                spiffe_id: principal.spiffe_id(),
                not_after: issued.not_after(),
                issued_at: self.clock.now(),
                key_fingerprint: csr.key_fingerprint(),
            })
            .map_err(|e| store_status(&e))?;
        self.audit(
            operator,
            "issue-certificate",
            format!("serial {} for {}", issued.serial(), principal.spiffe_id()),
        )
        .await?;
        Ok(Response::new(pb::IssueCertificateResponse {
            certificate_pem: cert_pem,
            serial: issued.serial().to_owned(),
            spiffe_id: principal.spiffe_id(),
            not_after_unix: issued.not_after(),
        }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let serial = crate::identity::canonical_serial(&req.serial)
            .map_err(|e| Status::invalid_argument(format!("serial: {e}")))?;
        let reason_name = if req.reason.is_empty() {
            "unspecified"
        } else {
            req.reason.as_str()
        };
        let reason = pki::parse_reason(reason_name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "reason {reason_name:?} is not one of: {}",
                pki::REASONS
            ))
        })?;
        let record = self
            .store
            .revoke_certificate(&RevokedCertificate {
                serial: serial.clone(),
                reason: reason as u32,
                reason_name: reason_name.to_owned(),
                revoked_at: self.clock.now(),
                revoked_by: operator.clone(),
            })
            .map_err(|e| store_status(&e))?;
        self.refresh()?;
        self.audit(
            operator,
            "revoke-certificate",
            format!("serial {serial} ({reason_name})"),
        )
        .await?;
        tracing::warn!(serial, reason = reason_name, "certificate revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {
            serial: record.serial,
            reason: record.reason_name,
            revoked_at_unix: record.revoked_at,
        }))
    }

    async fn reload_tls(
        &self,
        request: Request<pb::ReloadTlsRequest>,
    ) -> Result<Response<pb::ReloadTlsResponse>, Status> {
        let operator = require_operator(&request)?;
        let old = self.trust.server_serial();
        self.refresh()?;
        let serial = self.trust.server_serial();
        self.audit(
            operator,
            "reload-tls",
            format!("server certificate {old} -> {serial}; CA bundle re-read"),
        )
        .await?;
        Ok(Response::new(pb::ReloadTlsResponse {
            server_certificate_serial: serial,
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        require_operator(&request)?;
        let within = i64::from(request.get_ref().expiring_within_days);
        let horizon = self.clock.now() + within * 86_400;
        let certificates = self
            .store
            .issued_certificates()
            .map_err(|e| store_status(&e))?
            .into_iter()
            .filter(|c| within == 0 || c.not_after <= horizon)
            .map(|c| pb::IssuedCertificateInfo {
                revoked: self.trust.is_revoked(&c.serial),
                serial: c.serial,
                spiffe_id: c.spiffe_id,
                not_after_unix: c.not_after,
            })
            .collect();
        Ok(Response::new(pb::ListCertificatesResponse { certificates }))
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
                in_progress: r.in_progress,
            })
            .collect();
        Ok(Response::new(pb::AuditLogResponse { entries }))
    }
}

fn info_of_key(record: &KeyRecord) -> pb::SigningKeyInfo {
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
