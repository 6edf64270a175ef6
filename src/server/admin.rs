//! The `tidemark.v1.Admin` service: operator-only administration.

use tonic::{Request, Response, Status};

use crate::{
    administration::{AdminError, Backup, BackupCopy, KeyRegistration, Named, Reloaded},
    country::CountryCode,
    identity::Role,
    pb,
    report::Category,
    server::{
        auth,
        context::Context,
        delivery::{Cut, UnfinishedRead, cut_short},
        guard::{CallGuard, Guarded},
    },
    signing::PublicKey,
    store::{AuditRecord, KeyRecord, OwnerReads, StateRecord, Writer},
};

/// The audit actions of an operator's reads.
pub(super) const LIST_STATES: &str = "list-states";
pub(super) const LIST_CERTIFICATES: &str = "list-certificates";
pub(super) const LIST_SIGNING_KEYS: &str = "list-signing-keys";
pub(super) const READ_AUDIT_LOG: &str = "read-audit-log";
const OPERATOR_READS: [&str; 4] = [
    LIST_STATES,
    LIST_CERTIFICATES,
    LIST_SIGNING_KEYS,
    READ_AUDIT_LOG,
];

/// The Admin handlers: operator → [`crate::administration`] (which writes each change
/// with its audit record) → answer.
pub(super) struct AdminService {
    pub ctx: Context,
}

impl AdminService {
    /// Records an action that changes nothing in the store (a backup, a TLS reload, a
    /// read of the operator's lists or of the audit log); the action is refused if it
    /// cannot be recorded.
    async fn audit(&self, operator: String, action: &str, detail: String) -> Result<(), Status> {
        self.ctx
            .audit(AuditRecord {
                principal: operator,
                action: action.to_owned(),
                detail,
                ..AuditRecord::default()
            })
            .await
            .map(|_| ())
    }

    async fn set_suspended(
        &self,
        operator: String,
        code: String,
        suspended: bool,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let now = self.ctx.clock.now();
        let (record, unchanged, not_written) = self
            .ctx
            .blocking(move |ctx| ctx.admin.set_suspended(&code, suspended, (&operator, now)))
            .await?;
        Ok(Response::new(pb::StateInfo {
            not_written: not_written.unwrap_or_default(),
            unchanged,
            ..state_info(&record)
        }))
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
            "administration needs an operator certificate; this is {} certificate",
            other.with_article()
        ))),
    }
}

/// Sends the file at `path` in chunks; the status to end with, if it did not go through.
/// How streaming a backup copy ended.
enum Sent {
    /// Every byte was handed on.
    Whole,
    /// The caller went away after `0` bytes of the copy.
    Gone(u64),
    /// The server ended it after `0` bytes, for the reason given.
    Ended(u64, Status),
}

async fn send_file(
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<Result<pb::BackupChunk, Status>>,
    stall: std::time::Duration,
    (cut, lapse): (&mut Cut, &mut CallGuard),
) -> Sent {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) => {
            return Sent::Ended(
                0,
                Status::internal(format!("the backup copy cannot be opened: {e}; try again")),
            );
        }
    };
    let mut sent = 0u64;
    loop {
        let mut chunk = vec![0u8; BACKUP_CHUNK];
        let n = match file.read(&mut chunk).await {
            Ok(0) => return Sent::Whole,
            Ok(n) => n,
            Err(e) => {
                return Sent::Ended(
                    sent,
                    Status::internal(format!("reading the backup copy failed: {e}; try again")),
                );
            }
        };
        chunk.truncate(n);
        let data = pb::BackupChunk {
            part: Some(pb::backup_chunk::Part::Data(chunk)),
        };
        let handed = tokio::select! {
            handed = tokio::time::timeout(stall, tx.send(Ok(data))) => handed,
            // The server is stopping: the copy ends here, and its record says so.
            () = cut.wait() => return Sent::Ended(sent, cut_short()),
            // The operator's certificate revoked (or expired) while the copy waits on a
            // caller that is not reading: ended for that, and on record as such.
            refused = lapse.lapsed() => return Sent::Ended(sent, refused),
        };
        match handed {
            Ok(Ok(())) => sent += n as u64,
            Ok(Err(_)) => return Sent::Gone(sent),
            Err(_) => {
                return Sent::Ended(
                    sent,
                    Status::deadline_exceeded(format!(
                        "the backup was not read from for {} s, so the server ended it; take \
                         it again",
                        stall.as_secs()
                    )),
                );
            }
        }
    }
}

/// Set when dropped: tells a backup copy being made on a blocking thread that its call
/// has ended.
#[derive(Default)]
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bytes of the store in one backup chunk: small, because a chunk the HTTP/2 layer has
/// taken is sent even if the call is refused before the caller reads it (a revocation
/// while the caller is not reading).
const BACKUP_CHUNK: usize = 64 * 1024;

/// Streams the backup file at `path` (then deletes it): `manifest` first, then the
/// file's bytes. A caller that takes nothing for `stall` ends it (and the copy is
/// deleted then, not when the connection goes). Its audit record (`number`, written in
/// progress) is completed with how it ended: sent whole, or cut short after how many bytes.
fn stream_backup(
    (copy, manifest, mut lapse): (BackupCopy, pb::BackupManifest, CallGuard),
    (stall, (unfinished, mut cut)): (std::time::Duration, (UnfinishedRead, Cut)),
    (writer, number, mut record): (Writer, u64, AuditRecord),
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let bytes = manifest.bytes;
    tokio::spawn(async move {
        let first = pb::BackupChunk {
            part: Some(pb::backup_chunk::Part::Manifest(manifest)),
        };
        let sent = if tx.send(Ok(first)).await.is_ok() {
            send_file(copy.path(), &tx, stall, (&mut cut, &mut lapse)).await
        } else {
            Sent::Gone(0)
        };
        // The copy is gone (its space freed) before anything else is waited for.
        drop(copy);
        record.in_progress = false;
        let how = match &sent {
            Sent::Whole => {
                record.copy_bytes_sent = bytes;
                "sent whole".to_owned()
            }
            Sent::Gone(n) => {
                record.copy_bytes_sent = *n;
                format!("cut short: the caller went away after {n} of {bytes} bytes")
            }
            Sent::Ended(n, why) => {
                record.copy_bytes_sent = *n;
                format!("cut short after {n} of {bytes} bytes: {}", why.message())
            }
        };
        record.detail = format!("{}; {how}", record.detail);
        if let Err(e) = writer.update_audit(number, record).await {
            tracing::error!(error = %e, number, "a backup's audit record could not be completed");
        }
        // Completed: a stopping server may now stop the writer.
        drop(unfinished);
        if let Sent::Ended(_, status) = sent {
            // Not bounded: a backup cut short must not look complete to a caller that
            // reads again later; waiting holds only this task.
            let _ = tx.send(Err(status)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    type BackupStream = Guarded<pb::BackupChunk>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let operator = require_operator(&request)?;
        self.ctx
            .take_read(auth::peer(&request)?, ("backup", ""))
            .await?;
        // The copy holds every key and report: it stops flowing, as every stream does,
        // once the operator's certificate is revoked. While it is being made, the same
        // lapse — or the caller going away, which drops this future — stops making it.
        let mut guard = self.ctx.guard(auth::peer(&request)?, None);
        let now = self.ctx.clock.now();
        let stop = StopOnDrop::default();
        let flag = stop.0.clone();
        let making = self
            .ctx
            .blocking(move |ctx| Ok::<_, Status>(ctx.admin.backup(now, &flag)));
        let Backup {
            copy,
            manifest,
            owners,
        } = tokio::select! {
            made = making => match made? {
                // A limit on reads at once, as a subscription's: the refusal is on record.
                Err(AdminError::Busy(why)) => {
                    let record = super::reads::refusal_record(auth::peer(&request)?, "", ("backup", ""));
                    return Err(self.ctx.refusals.refuse(record, Status::unavailable(why)).await);
                }
                made => made?,
            },
            refused = guard.lapsed() => return Err(refused),
        };
        // A read of every state's reports: each owner finds it on its access list.
        let owners: Vec<OwnerReads> = owners
            .into_iter()
            .map(|(owner, count)| OwnerReads {
                owner,
                count,
                report_ids: Vec::new(),
            })
            .collect();
        // In progress until the copy is sent whole or cut short (as every read).
        let record = AuditRecord {
            principal: operator,
            action: "backup".to_owned(),
            detail: format!(
                "{} envelopes (last sequence {}), {} bytes, sha256 {}",
                manifest.envelopes, manifest.last_sequence, manifest.bytes, manifest.sha256
            ),
            count: owners.iter().map(|o| o.count).sum(),
            owners,
            in_progress: true,
            copy_bytes: manifest.bytes,
            ..AuditRecord::default()
        };
        let number = self.ctx.audit(record.clone()).await?;
        let lapse = self.ctx.guard(auth::peer(&request)?, None);
        Ok(Response::new(guard.guard(stream_backup(
            (copy, manifest, lapse),
            (self.ctx.read_stall, self.ctx.unfinished.start()),
            (self.ctx.writer.clone(), number, record),
        ))))
    }

    async fn register_signing_key(
        &self,
        request: Request<pb::RegisterSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let key = KeyRegistration {
            state: req.state,
            public_key_pem: req.public_key_pem,
            valid_from: req.valid_from_unix,
            valid_until: req.valid_until_unix,
        };
        let now = self.ctx.clock.now();
        let stored = self
            .ctx
            .blocking(move |ctx| ctx.admin.register_key(&key, (&operator, now)))
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
        let now = self.ctx.clock.now();
        let (record, already_revoked, not_written) = self
            .ctx
            .blocking(move |ctx| {
                ctx.admin.revoke_key(
                    &req.key_id,
                    (req.compromised_at_unix, &req.reason),
                    (&operator, now),
                )
            })
            .await?;
        tracing::warn!(
            key_id = %record.key_id,
            state = %record.state,
            at = record.revoked_at,
            reason = record.revocation_reason,
            already_revoked,
            "signing key revoked"
        );
        Ok(Response::new(pb::SigningKeyInfo {
            already_revoked,
            not_written: not_written.unwrap_or_default(),
            ..info_of_key(&record)
        }))
    }
    async fn list_signing_keys(
        &self,
        request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let operator = require_operator(&request)?;
        self.ctx
            .take_read(auth::peer(&request)?, (LIST_SIGNING_KEYS, ""))
            .await?;
        let state = request.into_inner().state;
        if !state.is_empty() {
            CountryCode::parse(&state).map_err(|e| super::status::state_filter(&e))?;
        }
        let keys = self
            .ctx
            .store
            .signing_keys((!state.is_empty()).then_some(state.as_str()))?;
        let of = if state.is_empty() {
            "every state".to_owned()
        } else {
            state
        };
        self.audit(
            operator,
            LIST_SIGNING_KEYS,
            format!("{} keys of {of}", keys.len()),
        )
        .await?;
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys: keys.iter().map(info_of_key).collect(),
        }))
    }
    async fn enrol_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let operator = require_operator(&request)?;
        self.set_suspended(operator, request.into_inner().state, false)
            .await
    }

    async fn suspend_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateInfo>, Status> {
        let operator = require_operator(&request)?;
        self.set_suspended(operator, request.into_inner().state, true)
            .await
    }

    async fn list_states(
        &self,
        request: Request<pb::ListStatesRequest>,
    ) -> Result<Response<pb::ListStatesResponse>, Status> {
        let operator = require_operator(&request)?;
        self.ctx
            .take_read(auth::peer(&request)?, (LIST_STATES, ""))
            .await?;
        let store = &self.ctx.store;
        let (states, certs, keys) = (
            store.states()?,
            store.issued_certificates()?,
            store.signing_keys(None)?,
        );
        let snapshot = self.ctx.snapshot()?;
        // Every state that takes part, enrolled or not: a certificate of a CA the server
        // trusts admits its holder, enrolment or none (see EnrolState), so a state with
        // signing keys or certificates issued here is listed too, as never enrolled.
        let mut known: std::collections::BTreeMap<String, StateRecord> = states
            .iter()
            .map(|record| (record.state.clone(), record.clone()))
            .collect();
        let named = keys.iter().map(|k| k.state.clone()).chain(
            certs
                .iter()
                .filter_map(|c| crate::identity::Principal::state_in_id(&c.spiffe_id))
                .map(|s| s.to_string()),
        );
        for state in named {
            known.entry(state.clone()).or_insert_with(|| StateRecord {
                state,
                ..StateRecord::default()
            });
        }
        let mut out = Vec::new();
        for record in known.values() {
            let mut info = state_info(record);
            let marker = format!("/state/{}/", record.state);
            info.certificates = certs
                .iter()
                .filter(|c| c.spiffe_id.contains(&marker))
                .map(|c| pb::IssuedCertificateInfo {
                    serial: c.serial.clone(),
                    spiffe_id: c.spiffe_id.clone(),
                    not_after_unix: c.not_after,
                    revoked: self.ctx.trust.is_issued_revoked(c),
                    key_compromised_by: self
                        .ctx
                        .trust
                        .compromised_key(&c.key_fingerprint)
                        .unwrap_or_default(),
                })
                .collect();
            info.signing_keys = keys
                .iter()
                .filter(|k| k.state == record.state)
                .map(info_of_key)
                .collect();
            if let Ok(code) = CountryCode::parse(&record.state) {
                for category in Category::ALL {
                    let s = self.ctx.standing(&snapshot, code, category)?;
                    info.standing.push(s.to_pb());
                }
            }
            out.push(info);
        }
        self.audit(operator, LIST_STATES, format!("{} states", out.len()))
            .await?;
        Ok(Response::new(pb::ListStatesResponse { states: out }))
    }
    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let now = self.ctx.clock.now_utc();
        let issued = self
            .ctx
            .blocking(move |ctx| {
                ctx.admin
                    .issue_certificate((&req.csr_pem, req.days), (&operator, now))
            })
            .await?;
        Ok(Response::new(pb::IssueCertificateResponse {
            certificate_pem: issued.certificate_pem,
            serial: issued.serial,
            spiffe_id: issued.spiffe_id,
            not_after_unix: issued.not_after,
        }))
    }
    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let operator = require_operator(&request)?;
        let peer = auth::peer(&request)?;
        let (caller, caller_key) = (peer.serial().to_owned(), *peer.key_fingerprint());
        let req = request.into_inner();
        let now = self.ctx.clock.now();
        let made = self
            .ctx
            .blocking(move |ctx| {
                let named = Named::of(&req.serial, &req.issuer, &req.certificate_pem)?;
                ctx.admin.revoke_certificate(
                    named,
                    &req.reason,
                    (&operator, (&caller, &caller_key)),
                    now,
                )
            })
            .await?;
        let record = made.record;
        tracing::warn!(
            serial = record.serial,
            reason = record.reason_name,
            already_revoked = made.already_revoked,
            "certificate revoked"
        );
        Ok(Response::new(pb::RevokeCertificateResponse {
            issuer: record.issuer_name,
            every_issuer: record.issuer.is_empty() && self.ctx.trust.bundle_names().len() > 1,
            serial: record.serial,
            reason: record.reason_name,
            revoked_at_unix: record.revoked_at,
            already_revoked: made.already_revoked,
            issued_here: made.issued_here,
            crl_not_written: made.crl_not_written.unwrap_or_default(),
            holder: record.holder,
            key_sha256: hex::encode(&record.key_fingerprint),
            key_not_barred: made.key_not_barred.unwrap_or_default(),
        }))
    }
    async fn reload_tls(
        &self,
        request: Request<pb::ReloadTlsRequest>,
    ) -> Result<Response<pb::ReloadTlsResponse>, Status> {
        let operator = require_operator(&request)?;
        let done = self.ctx.blocking(|ctx| ctx.admin.reload_tls()).await?;
        self.audit(operator, "reload-tls", reloaded(&done)).await?;
        Ok(Response::new(pb::ReloadTlsResponse {
            server_certificate_serial: done.serial,
            crl_not_written: done.crl_not_written.unwrap_or_default(),
            waiting_for_restart: done.waiting_for_restart,
            server_certificate_issuer_outside_bundle: done
                .issuer_outside_bundle
                .unwrap_or_default(),
        }))
    }
    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let operator = require_operator(&request)?;
        self.ctx
            .take_read(auth::peer(&request)?, (LIST_CERTIFICATES, ""))
            .await?;
        let within = i64::from(request.get_ref().expiring_within_days);
        let horizon = self.ctx.clock.now() + within * 86_400;
        let certificates = self
            .ctx
            .store
            .issued_certificates()?
            .into_iter()
            .filter(|c| within == 0 || c.not_after <= horizon)
            .map(|c| pb::IssuedCertificateInfo {
                revoked: self.ctx.trust.is_issued_revoked(&c),
                key_compromised_by: self
                    .ctx
                    .trust
                    .compromised_key(&c.key_fingerprint)
                    .unwrap_or_default(),
                serial: c.serial,
                spiffe_id: c.spiffe_id,
                not_after_unix: c.not_after,
            })
            // A revoked certificate, or one of a compromised key, needs no renewal.
            .filter(|c| within == 0 || (!c.revoked && c.key_compromised_by.is_empty()))
            .collect::<Vec<_>>();
        let expiring = if within == 0 {
            String::new()
        } else {
            format!(" expiring within {within} days")
        };
        self.audit(
            operator,
            LIST_CERTIFICATES,
            format!("{} certificates{expiring}", certificates.len()),
        )
        .await?;
        Ok(Response::new(pb::ListCertificatesResponse { certificates }))
    }

    async fn audit_log(
        &self,
        request: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        let operator = require_operator(&request)?;
        let peer = auth::peer(&request)?.clone();
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(10_000)
        };
        let records = self
            .ctx
            .snapshot()?
            .audit_after(req.after, usize::try_from(limit).unwrap_or(100))?;
        let entries = records
            .into_iter()
            .map(|(number, r)| pb::AuditEntry {
                cut_short: self.ctx.cut_short(number, &r),
                number,
                at_unix: r.at,
                principal: r.principal,
                state: r.state,
                action: r.action,
                detail: r.detail,
                detail_salt: r.detail_salt,
                count: r.count,
                by_owner: r.owners.into_iter().map(|o| (o.owner, o.count)).collect(),
                in_progress: r.in_progress,
            })
            .collect::<Vec<_>>();
        let (entries, more) = super::context::fitting(entries, self.ctx.page_bytes);
        // A page of nothing but operator reads shows nothing of the states, and recording
        // it would put a new record on the next page: paging would never end.
        if let (Some(first), Some(last)) = (entries.first(), entries.last())
            && !entries
                .iter()
                .all(|e| OPERATOR_READS.contains(&e.action.as_str()))
        {
            let detail = format!(
                "{} records ({} to {}) after {}, limit {limit}",
                entries.len(),
                first.number,
                last.number,
                req.after
            );
            self.ctx.take_read(&peer, (READ_AUDIT_LOG, &detail)).await?;
            self.audit(operator, READ_AUDIT_LOG, detail).await?;
        }
        Ok(Response::new(pb::AuditLogResponse { entries, more }))
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
        ..pb::SigningKeyInfo::default()
    }
}

/// A reload's audit detail: the server certificate before and after, the CAs of the
/// bundle added and removed and a change of CA key, and the revocations found only in the
/// CRL file (now in the store, each with its own record).
pub(super) fn reloaded(done: &Reloaded) -> String {
    let bundle = if done.bundle_changes.is_empty() {
        "CA bundle and CA key unchanged".to_owned()
    } else {
        done.bundle_changes.join(", ")
    };
    let mut parts = vec![format!(
        "server certificate {} -> {}; {bundle}",
        done.old_serial, done.serial
    )];
    if !done.carried.is_empty() {
        parts.push(format!(
            "revocations found only in the CRL file, now recorded: {}",
            done.carried.join(", ")
        ));
    }
    if !done.partners.is_empty() {
        parts.push(format!("partner CAs: {}", done.partners.join("; ")));
    }
    if let Some(why) = &done.crl_not_written {
        parts.push(format!("not written: {why}"));
    }
    if let Some(issuer) = &done.issuer_outside_bundle {
        parts.push(format!(
            "the server certificate's issuer {issuer} is not a CA of the bundle"
        ));
    }
    if !done.waiting_for_restart.is_empty() {
        parts.push(format!(
            "changed in the configuration file, waiting for a restart: {}",
            done.waiting_for_restart.join(", ")
        ));
    }
    parts.join("; ")
}
