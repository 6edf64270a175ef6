//! Operator actions and their rules, independent of gRPC: enrolling and suspending
//! states, registering and revoking signing keys, issuing and revoking client
//! certificates, re-reading the TLS files.
//!
//! Each action checks its preconditions, changes the store — through the writer, in one
//! transaction with the action's audit record ([`crate::store::AdminChange`]) — then
//! the live trust state where it must, and returns what changed. The Admin service
//! resolves the operator, runs the action off the async threads (several read files or
//! sign a CRL, and the writer is waited for) and answers.

use std::sync::{Arc, atomic::AtomicBool};

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::{
    clock::format_time,
    country::CountryCode,
    identity::{self, IdentityError, PeerIdentity, Principal, Role},
    pb,
    pki::{self, Validity},
    signing::PublicKey,
    store::{
        AdminApplied, AdminChange, AdminWriteError, IssuedCertificate, KeyRecord,
        RevokedCertificate, StateRecord, Store, StoreError, Writer,
    },
    trust::{Presented, Trust, TrustError},
};

use crate::pki::MAX_CERT_DAYS;

/// The operator actions over one store and trust state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Administration {
    store: Store,
    /// Writes each change with its audit record.
    writer: Writer,
    trust: Arc<Trust>,
    trust_domain: Arc<str>,
    /// The key id of the server's own receipt and log key, which no state may sign with.
    server_key_id: Arc<str>,
    /// Set while a backup is being copied: one at a time.
    backing_up: Arc<std::sync::atomic::AtomicBool>,
}

/// A signing key to register, as the operator asked for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyRegistration {
    /// ISO 3166-1 alpha-3 code of the owning state.
    pub state: String,
    /// The Ed25519 public key, SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    /// Unix seconds; 0 for now.
    pub valid_from: i64,
    /// Unix seconds; 0 for no end.
    pub valid_until: i64,
}

/// A certificate issued from a CSR.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its serial, canonical hex.
    pub serial: String,
    /// The SPIFFE ID it names.
    pub spiffe_id: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl Administration {
    /// Copies the store (one read transaction) to a temporary file beside it and returns
    /// the file with its manifest; the caller streams the file and deletes it. Setting
    /// `stop` (the caller went away, or may no longer take it) ends the copy early with
    /// [`AdminError::Stopped`], the partial copy deleted.
    pub(crate) fn backup(&self, now: i64, stop: &AtomicBool) -> Result<Backup, AdminError> {
        use std::sync::atomic::Ordering;
        if self.backing_up.swap(true, Ordering::AcqRel) {
            return Err(AdminError::Busy(
                "a backup is already being taken; try again when it has finished".to_owned(),
            ));
        }
        let result = self.backup_now(now, stop);
        self.backing_up.store(false, Ordering::Release);
        result
    }

    fn backup_now(&self, now: i64, stop: &AtomicBool) -> Result<Backup, AdminError> {
        let store = self.store.path();
        // The copy is made beside the store, then streamed: it needs about the store's
        // size free there, and must not fill the disk the writer needs.
        let size = std::fs::metadata(store).map_or(0, |m| m.len());
        let dir = store
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if let Ok(fs) = rustix::fs::statvfs(dir) {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            let needed = size.saturating_add(size / 10).saturating_add(64 << 20);
            if free < needed {
                return Err(AdminError::NoSpace(format!(
                    "{} has {} MiB free; a backup needs about {} MiB there for its copy of \
                     the store and room for the writer to go on: free some space first",
                    dir.display(),
                    free >> 20,
                    needed >> 20
                )));
            }
        }
        // Each copy its own name: one may still be streaming when the next is taken.
        let n = BACKUPS_TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = store.with_extension(format!("backup-{now}-{n}.tmp"));
        // Removed whenever it is dropped: on an error here, when its stream ends, or when
        // the caller went away before the copy was made.
        let copy = BackupCopy(path);
        let stopped = || AdminError::Stopped("the backup copy was stopped before it was complete");
        let contents = self.store.backup(&copy.0, stop)?.ok_or_else(stopped)?;
        let (bytes, sha256) =
            file_sha256(&copy.0).map_err(|e| AdminError::Store(StoreError::open(&copy.0, e)))?;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped());
        }
        Ok(Backup {
            copy,
            owners: contents.reports_by_state,
            manifest: pb::BackupManifest {
                taken_at_unix: now,
                envelopes: contents.envelopes,
                last_sequence: contents.last_sequence,
                audit_records: contents.audit_records,
                log_size: contents.log_size,
                checkpoint: contents.checkpoint,
                bytes,
                sha256,
            },
        })
    }

    /// The actions over `store` (changed through its `writer`) and `trust`, for
    /// certificates of `trust_domain`, on a server whose own key has `server_key_id`.
    pub(crate) fn new(
        (store, writer): (Store, Writer),
        trust: Arc<Trust>,
        trust_domain: &str,
        server_key_id: &str,
    ) -> Self {
        Self {
            store,
            writer,
            trust,
            trust_domain: trust_domain.into(),
            server_key_id: server_key_id.into(),
            backing_up: Arc::default(),
        }
    }

    /// Writes `change`, asked for by `operator` (a SPIFFE ID), with its audit record in
    /// one transaction; returns what it left in the store.
    fn change(&self, change: AdminChange, operator: &str) -> Result<AdminApplied, AdminError> {
        let (applied, _) = self.writer.admin_blocking(change, operator)?;
        Ok(applied)
    }

    /// Enrols (`suspended = false`, also reinstating) or suspends a state, effective
    /// for every open connection at once; `true` when it already stood so (nothing
    /// changed).
    pub(crate) fn set_suspended(
        &self,
        code: &str,
        suspended: bool,
        (operator, now): (&str, i64),
    ) -> Result<(StateRecord, bool, Option<String>), AdminError> {
        let state = CountryCode::parse(code).map_err(|e| invalid("state", e))?;
        let existing = self.store.state(state.as_str())?;
        let record = StateRecord {
            state: state.to_string(),
            suspended,
            // A state suspended before it was ever enrolled has no enrolment time.
            enrolled_at: match existing.map(|s| s.enrolled_at) {
                Some(at) if at != 0 => at,
                _ if suspended => 0,
                _ => now,
            },
            changed_at: now,
            // Set as it is stored.
            revision: 0,
        };
        let (record, unchanged) = match self.change(AdminChange::State(record), operator)? {
            AdminApplied::State(record, before) => {
                let unchanged = before.is_some_and(|b| b.suspended == record.suspended);
                (record, unchanged)
            }
            other => return Err(unexpected(&other)),
        };
        // A suspension changes no CRL: whatever could not be rebuilt or written is
        // logged and said, and the suspension is in force all the same.
        let not_written = self.refresh_after_change()?;
        Ok((record, unchanged, not_written))
    }

    /// Registers a state's signing key; submissions signed with it are accepted from
    /// `valid_from` (now when 0) until `valid_until` (no end when 0).
    pub(crate) fn register_key(
        &self,
        key: &KeyRegistration,
        (operator, now): (&str, i64),
    ) -> Result<KeyRecord, AdminError> {
        let state = CountryCode::parse(&key.state).map_err(|e| invalid("state", e))?;
        // Times RFC 3339 can write, as `keys` and key files show them again: a key file
        // cannot say a start in the year 10000, nor an end after it begins.
        let last = crate::calendar::LAST_SECOND;
        for (field, at, (latest, named)) in [
            (
                "valid_from_unix",
                key.valid_from,
                (last, "9999-12-31T23:59:59Z"),
            ),
            (
                "valid_until_unix",
                key.valid_until,
                (last + 1, "the end of 9999-12-31"),
            ),
        ] {
            if at < 0 {
                return Err(invalid(
                    field,
                    format!("is {at}, before 1970: give Unix seconds after it (0: not given)"),
                ));
            }
            if at > latest {
                return Err(invalid(
                    field,
                    format!(
                        "is {at}, after {named}, the last time RFC 3339 can write: give an \
                         earlier time, or 0 for none"
                    ),
                ));
            }
        }
        // A PEM field may be a file's contents passed through, byte-order mark and all.
        let public = PublicKey::from_spki_pem(crate::files::without_bom(&key.public_key_pem))
            .map_err(|e| invalid("public_key_pem", e))?;
        if public.key_id() == &*self.server_key_id {
            // Whoever holds it signs receipts and checkpoints: it cannot be a state's too.
            return Err(invalid(
                "public_key_pem",
                "this is the server's own receipt and log key; a state signs with a key of \
                 its own (make one with `tidemark keygen`)",
            ));
        }
        let valid_from = if key.valid_from == 0 {
            now
        } else {
            key.valid_from
        };
        if key.valid_until != 0 && key.valid_until <= valid_from {
            let after = if key.valid_from == 0 {
                format!(
                    "is not in the future (the server's time is {}): give a later time, or \
                     none for no end",
                    format_time(now)
                )
            } else {
                format!("is not after valid_from_unix {}", format_time(valid_from))
            };
            // A date given ends at the next midnight: name the day too.
            let day = (key.valid_until % 86_400 == 0)
                .then(|| time::OffsetDateTime::from_unix_timestamp(key.valid_until - 86_400))
                .and_then(Result::ok)
                .map(|t| format!(" (the end of {}, for a date)", t.date()))
                .unwrap_or_default();
            return Err(invalid(
                "valid_until_unix",
                format!(
                    "(--valid-until) {}{day} {after}",
                    format_time(key.valid_until)
                ),
            ));
        }
        let record = KeyRecord::new(
            public.key_id(),
            state.as_str(),
            public.raw(),
            valid_from,
            key.valid_until,
            now,
        );
        match self.change(AdminChange::RegisterKey(record), operator)? {
            AdminApplied::Key(stored, _) => Ok(stored),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a signing key as of `compromised_at` (never in the future; 0: as of the
    /// second after the revocation is stored, see `AdminChange::stamped`): envelopes it
    /// signed are refused from then on. Returns the key, and whether it
    /// was already revoked as of that time or earlier (nothing changed).
    pub(crate) fn revoke_key(
        &self,
        key_id: &str,
        (compromised_at, reason): (i64, &str),
        (operator, now): (&str, i64),
    ) -> Result<(KeyRecord, bool, Option<String>), AdminError> {
        let key_id = canonical_key_id(key_id)?;
        if compromised_at < 0 {
            return Err(invalid(
                "compromised_at_unix",
                format!(
                    "is {compromised_at}, before 1970: give Unix seconds after it (0: as of \
                     now)"
                ),
            ));
        }
        if compromised_at > now {
            return Err(invalid(
                "compromised_at_unix",
                format!(
                    "(--compromised-at) {} is in the future; the server's time is {}",
                    format_time(compromised_at),
                    format_time(now)
                ),
            ));
        }
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            reason
        };
        // A name, not free text: it is shown wherever the key is (RFC 5280 §5.3.1 names,
        // as for certificates).
        if pki::parse_reason(reason).is_none() {
            return Err(invalid(
                "reason",
                format!("{} is not one of: {}", quoted(reason), pki::REASONS),
            ));
        }
        // 0: as of when the revocation is stored (see `AdminChange::stamped`).
        let change = AdminChange::RevokeKey {
            key_id,
            at: compromised_at,
            reason: reason.to_owned(),
        };
        match self.change(change, operator)? {
            AdminApplied::Key(record, before) => {
                let not_written = self.trust.write_journal(&self.store);
                let already =
                    before.is_some_and(|b| b.revoked_at != 0 && b.revoked_at == record.revoked_at);
                Ok((record, already, not_written))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Issues a certificate for the identity a CSR asks for, valid for `days` (1 to
    /// [`MAX_CERT_DAYS`]) from an hour ago: only with the CA key, never for a key
    /// reported compromised, for a node or state analyst only while its state is
    /// enrolled and not suspended, and never for an operator.
    pub(crate) fn issue_certificate(
        &self,
        (csr_pem, days): (&str, u32),
        (operator, now): (&str, time::OffsetDateTime),
    ) -> Result<Issued, AdminError> {
        let ca = self.trust.issuing_ca().ok_or(AdminError::NoCaKey {
            action: "cannot issue certificates; issue offline with `tidemark pki issue`",
        })?;
        if days == 0 || days > MAX_CERT_DAYS {
            return Err(AdminError::Invalid {
                field: "days",
                reason: format!("must be 1 to {MAX_CERT_DAYS}"),
                whole: format!("days must be 1 to {MAX_CERT_DAYS}"),
            });
        }
        let csr =
            pki::read_csr(crate::files::without_bom(csr_pem)).map_err(|e| invalid("csr_pem", e))?;
        if let Some(by) = self.store.compromised_key(&csr.key_fingerprint())? {
            return Err(AdminError::CompromisedKey { by });
        }
        let uri = csr.requested_uri();
        let principal = Principal::from_spiffe_id(uri, &self.trust_domain).map_err(|e| {
            let fix = match e {
                IdentityError::WrongTrustDomain { .. } => format!(
                    " (make the CSR again with `tidemark pki csr --trust-domain {}`)",
                    self.trust_domain
                ),
                _ => String::new(),
            };
            AdminError::Invalid {
                field: "csr_pem",
                reason: format!("asks for {uri}: {e}{fix}"),
                whole: format!("the CSR asks for {uri}: {e}{fix}"),
            }
        })?;
        self.check_issuable(&principal)?;
        let validity = Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(days)),
        };
        let certificate_pem = ca
            .issue_from_csr(&csr, &principal, validity)
            .map_err(|e| invalid("csr_pem", e))?;
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| AdminError::Internal(format!("the issued certificate: {e}")))?;
        let issued = PeerIdentity::from_certificate(der.as_ref(), &self.trust_domain)
            .map_err(|e| AdminError::Internal(format!("the issued certificate: {e}")))?;
        let record = IssuedCertificate::of(&issued, now.unix_timestamp(), csr.key_fingerprint());
        self.change(AdminChange::Issued(record), operator)?;
        Ok(Issued {
            certificate_pem,
            serial: issued.serial().to_owned(),
            spiffe_id: principal.spiffe_id(),
            not_after: issued.not_after(),
        })
    }

    /// Whether a certificate may be issued to `principal` now.
    fn check_issuable(&self, principal: &Principal) -> Result<(), AdminError> {
        match principal.role() {
            Role::Node(state) | Role::StateAnalyst(state) => {
                match self.store.state(state.as_str())? {
                    Some(s) if !s.suspended => Ok(()),
                    Some(_) => Err(AdminError::Suspended(state)),
                    None => Err(AdminError::NotEnrolled(state)),
                }
            }
            Role::RegionalAnalyst => Ok(()),
            Role::Operator => Err(AdminError::OperatorFromCsr),
        }
    }

    /// Revokes a client `certificate` — named by serial (any common spelling; stored
    /// canonical) or presented — for an RFC 5280 reason name (`unspecified` when empty),
    /// effective at once, asked for by `operator` (a SPIFFE ID) on a connection with
    /// certificate `caller` (serial, and its key's SHA-256), which it refuses to revoke —
    /// nor to report its key compromised through another certificate of it. Serials are unique per
    /// issuer only: by serial, `issuer` names the CA of the bundle whose certificate it
    /// is (its subject, RFC 4514); without it, a certificate issued through this server
    /// is revoked as its record names its issuer, and any other serial for every issuer.
    /// A presented certificate is revoked for its own issuer, a CA of the bundle or an
    /// intermediate CA, once its path is verified ([`Trust::presented`]). The revocation
    /// keeps the certificate's key when it is known — presented, issued here, or seen in
    /// a handshake ([`Trust::seen_keys`], `store/seen_keys.rs`) — so that a
    /// key-compromise bars every certificate of the key.
    pub(crate) fn revoke_certificate(
        &self,
        certificate: Named<'_>,
        reason: &str,
        (operator, (caller, caller_key)): (&str, (&str, &[u8])),
        now: i64,
    ) -> Result<Revocation, AdminError> {
        let revoking = self.certificate_named(certificate)?;
        // A partner CA can certify anyone's public key: its certificate's key bars nothing
        // beyond it (unless a handshake showed the key, below).
        let partners_word = revoking.by_partner;
        let (serial, issuer, issuer_name, holder) = (
            revoking.id.serial,
            revoking.id.issuer,
            revoking.issuer_name,
            revoking.holder,
        );
        let key_fingerprint = if partners_word {
            Vec::new()
        } else {
            revoking.key_fingerprint
        };
        if serial == caller {
            return Err(AdminError::OwnCall(serial));
        }
        let on_record = self.store.issued_certificates()?.into_iter().find(|c| {
            c.serial == serial && (issuer.is_empty() || c.issuer.is_empty() || c.issuer == issuer)
        });
        // Without an issuer, one issued here is revoked as its record names its issuer.
        let (issuer, issuer_name) = match &on_record {
            Some(c) if issuer.is_empty() && !c.issuer.is_empty() => {
                let names = self.trust.bundle_names();
                let name = names.iter().find(|(id, _, _)| *id == c.issuer);
                (
                    c.issuer.clone(),
                    name.map(|(_, n, _)| n.clone()).unwrap_or_default(),
                )
            }
            _ => (issuer, issuer_name),
        };
        let holder = match &on_record {
            Some(c) if holder.is_empty() => c.spiffe_id.clone(),
            _ => holder,
        };
        // By serial alone, its key is known from the record of one issued here, or from
        // a handshake that presented it (kept in the store across restarts).
        let key_fingerprint = match &on_record {
            Some(c) if key_fingerprint.is_empty() => c.key_fingerprint.clone(),
            _ => key_fingerprint,
        };
        let (key_fingerprint, several_keys) = if key_fingerprint.is_empty() {
            self.seen_key(&serial, &issuer)?
        } else {
            (key_fingerprint, 0)
        };
        self.not_own_key(&serial, (reason, &key_fingerprint), caller_key)?;
        if let Some(what) = self.trust.own_certificate(&serial, &issuer) {
            return Err(AdminError::OwnCertificate { serial, what });
        }
        let reason_name = if reason.is_empty() {
            "unspecified"
        } else {
            reason
        };
        let code = pki::parse_reason(reason_name).ok_or_else(|| {
            invalid(
                "reason",
                format!("{} is not one of: {}", quoted(reason_name), pki::REASONS),
            )
        })?;
        let asked = RevokedCertificate {
            serial,
            reason: code as u32,
            reason_name: reason_name.to_owned(),
            revoked_at: now,
            revoked_by: operator.to_owned(),
            issuer,
            issuer_name,
            holder,
            key_fingerprint,
        };
        let (record, new) = match self.change(AdminChange::RevokeCertificate(asked), operator)? {
            AdminApplied::Revoked(record, new) => (record, new),
            other => return Err(unexpected(&other)),
        };
        let crl_not_written = self.refresh_after_change()?;
        let issued_here = on_record.is_some_and(|c| {
            record.issuer.is_empty() || c.issuer.is_empty() || c.issuer == record.issuer
        });
        Ok(Revocation {
            key_not_barred: key_not_barred(&record, partners_word, several_keys),
            record,
            already_revoked: !new,
            issued_here,
            crl_not_written,
        })
    }

    /// The key of the certificates of `serial` (of `issuer`, or of any when empty) that
    /// TLS handshakes presented, if they were of one key; otherwise none, and how many
    /// different keys they were of (several issuers' certificates of one serial: which
    /// key a compromise by serial means is not known).
    fn seen_key(&self, serial: &str, issuer: &str) -> Result<(Vec<u8>, usize), AdminError> {
        let mut keys = self.trust.seen_keys(serial, issuer);
        keys.extend(self.store.seen_keys(serial, issuer)?);
        keys.sort_unstable();
        keys.dedup();
        Ok(match keys.as_slice() {
            [one] => (one.to_vec(), 1),
            more => (Vec::new(), more.len()),
        })
    }

    /// The certificate a revocation names: by serial (canonical) and, when named, the
    /// issuer of the bundle; or presented, once its path is verified.
    fn certificate_named(&self, certificate: Named<'_>) -> Result<Presented, AdminError> {
        match certificate {
            Named::Serial { serial, issuer } => {
                let serial =
                    identity::canonical_serial(serial).map_err(|e| invalid("serial", e))?;
                let (issuer, issuer_name) = if issuer.is_empty() {
                    (String::new(), String::new())
                } else {
                    self.trust
                        .bundle_ca_named(issuer)
                        .map_err(|why| invalid("issuer", why))?
                };
                Ok(Presented {
                    id: identity::CertificateId { issuer, serial },
                    issuer_name,
                    holder: String::new(),
                    key_fingerprint: Vec::new(),
                    by_partner: false,
                })
            }
            Named::Presented(pem) => self
                .trust
                .presented(pem, &self.trust_domain)
                .map_err(|why| invalid("certificate_pem", why)),
        }
    }

    /// Refuses a revocation that would report the key of the caller's own certificate
    /// compromised — the certificate of `serial` has it (`key`, as far as known), and
    /// this revocation or an earlier one of the serial says key-compromise — which would
    /// end the caller's access as revoking its own certificate would.
    fn not_own_key(
        &self,
        serial: &str,
        (reason, key): (&str, &[u8]),
        caller_key: &[u8],
    ) -> Result<(), AdminError> {
        if caller_key.is_empty() {
            return Ok(());
        }
        let earlier = self
            .store
            .revoked_certificates()?
            .into_iter()
            .filter(|r| r.serial == serial)
            .collect::<Vec<_>>();
        let compromise =
            reason == "key-compromise" || earlier.iter().any(RevokedCertificate::compromised);
        let shares = key == caller_key || earlier.iter().any(|r| r.key_fingerprint == caller_key);
        if compromise && shares {
            return Err(AdminError::OwnKey(serial.to_owned()));
        }
        Ok(())
    }

    /// The server's own SPIFFE ID: who records what no operator asked for.
    pub(crate) fn server_principal(&self) -> String {
        format!("spiffe://{}/server", self.trust_domain)
    }

    /// Re-reads the TLS files. The revocations the CRL file holds that the store did not
    /// (revoked by editing the file) are each put in the store with an audit record by
    /// the server's own SPIFFE ID, as a restart would carry them over — a revocation is
    /// never in force without its record.
    pub(crate) fn reload_tls(&self) -> Result<Reloaded, AdminError> {
        let old = self.trust.server_serial();
        let server = self.server_principal();
        // Everything is read and checked before anything is recorded or written: a CRL
        // file it cannot verify or use is refused, not only logged (the operator who put
        // it there is told, and the next start would refuse it too), and a refused
        // reload changes nothing.
        let reloading = self.trust.reload(&self.store).map_err(|e| {
            tracing::error!(error = %e, "the TLS files could not be reloaded; the old ones stay");
            AdminError::Trust(e)
        })?;
        let by = format!("{server} (carried over from the CRL file)");
        let listed = reloading
            .carried()
            .iter()
            .map(|r| RevokedCertificate {
                revoked_by: by.clone(),
                ..r.clone()
            })
            .collect();
        let mut carried = Vec::new();
        for change in self.store.revocations_missing(listed)? {
            if let AdminApplied::Revoked(record, true) = self.change(change, &server)? {
                carried.push(record.named());
            }
        }
        let waiting_for_restart = reloading.waiting_for_restart().to_vec();
        if !waiting_for_restart.is_empty() {
            tracing::warn!(
                settings = %waiting_for_restart.join(", "),
                "these settings changed in the configuration file since start; a reload applies only tls.partner_cas, the others wait for a restart"
            );
        }
        let issuer_outside_bundle = reloading.issuer_outside_bundle().map(str::to_owned);
        let bundle_changes = reloading.bundle_changes().to_vec();
        let crl_not_written = reloading.install(&self.store).map_err(AdminError::Trust)?;
        Ok(Reloaded {
            waiting_for_restart,
            issuer_outside_bundle,
            bundle_changes,
            old_serial: old,
            serial: self.trust.server_serial(),
            carried,
            crl_not_written,
            partners: self.trust.partners(),
        })
    }

    /// Rebuilds the live trust state after a revocation or suspension. When the CRL or
    /// the TLS configuration cannot be rebuilt, who is revoked or suspended is still
    /// taken from the store ([`Trust::refresh_access`]), so the action is in force; the
    /// rebuild failure is logged, not a reason to answer the action as refused. Returns
    /// why the CRL file or the access journal was not written, when it was not.
    fn refresh_after_change(&self) -> Result<Option<String>, AdminError> {
        let e = match self.trust.refresh(&self.store) {
            Ok(unwritten) => return Ok(unwritten),
            Err(e) => e,
        };
        self.trust
            .refresh_access(&self.store)
            .map_err(AdminError::Trust)?;
        let journal = self.trust.write_journal(&self.store);
        tracing::error!(
            error = %e,
            "the revocation or suspension is in force for every connection, but the \
             CRL or TLS configuration could not be rebuilt; fix it, then Admin.ReloadTls"
        );
        Ok(Some(
            std::iter::once(e.to_string())
                .chain(journal)
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

/// The TLS files re-read ([`Administration::reload_tls`]).
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// The serial of the server certificate before and after.
    pub(crate) old_serial: String,
    pub(crate) serial: String,
    /// The revocations found only in the CRL file, now recorded.
    pub(crate) carried: Vec<String>,
    /// Why the CRL file or the access journal could not be written, if so.
    pub(crate) crl_not_written: Option<String>,
    /// The partner CAs now in force ([`crate::trust::Trust::partners`]).
    pub(crate) partners: Vec<String>,
    /// Settings of the configuration file changed since start, which wait for a restart.
    pub(crate) waiting_for_restart: Vec<String>,
    /// The server certificate's issuer, when its chain leads to no CA of the bundle.
    pub(crate) issuer_outside_bundle: Option<String>,
    /// CAs of the bundle added and removed, and a change of the CA key held.
    pub(crate) bundle_changes: Vec<String>,
}

/// A certificate revocation made ([`Administration::revoke_certificate`]).
#[derive(Debug)]
pub(crate) struct Revocation {
    /// The revocation that stands: the first, for a certificate revoked again.
    pub(crate) record: RevokedCertificate,
    /// The certificate was already revoked; nothing changed.
    pub(crate) already_revoked: bool,
    /// The certificate was issued through this server.
    pub(crate) issued_here: bool,
    /// Why the CRL file and TLS configuration could not be rebuilt, if they could not:
    /// the revocation is in force and on record all the same, but the published CRL
    /// lacks it until the cause is fixed and the TLS files are reloaded.
    pub(crate) crl_not_written: Option<String>,
    /// Why the presented certificate's key is not kept to bar its other certificates,
    /// when it is not (a partner CA's certificate).
    pub(crate) key_not_barred: Option<String>,
}

/// Which certificate a revocation names.
#[derive(Clone, Copy)]
pub(crate) enum Named<'a> {
    /// By serial, and the CA of the bundle that issued it (empty: see
    /// [`Administration::revoke_certificate`]).
    Serial { serial: &'a str, issuer: &'a str },
    /// The certificate itself (PEM), followed by the intermediate CAs it is presented
    /// with.
    Presented(&'a str),
}

impl<'a> Named<'a> {
    /// The certificate a request names: `certificate_pem` when given, else `serial` of
    /// `issuer`; both is refused.
    pub(crate) fn of(
        serial: &'a str,
        issuer: &'a str,
        certificate_pem: &'a str,
    ) -> Result<Self, AdminError> {
        match (
            certificate_pem.is_empty(),
            serial.is_empty() && issuer.is_empty(),
        ) {
            (true, _) => Ok(Self::Serial { serial, issuer }),
            (false, true) => Ok(Self::Presented(crate::files::without_bom(certificate_pem))),
            (false, false) => Err(invalid(
                "certificate_pem",
                "give the certificate or its serial (and issuer), not both",
            )),
        }
    }
}

/// A signing key's id in its one spelling: 64 lower-case hex digits, as `admin keys`
/// lists it and key files name it.
fn canonical_key_id(key_id: &str) -> Result<String, AdminError> {
    if key_id.len() == 64
        && key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(key_id.to_owned())
    } else {
        Err(invalid(
            "key_id",
            format!(
                "{} is not a signing key id: 64 lower-case hex digits, as `tidemark admin \
                 keys` lists them",
                quoted(key_id)
            ),
        ))
    }
}

/// The store answered a change with what another kind of change leaves: cannot happen.
fn unexpected(applied: &AdminApplied) -> AdminError {
    AdminError::Internal(format!(
        "the store answered an administrative change with {applied:?}"
    ))
}

/// A value as an error message quotes it: escaped, and cut short if long.
fn quoted(value: &str) -> String {
    format!("{:?}", crate::report::shorten(value.to_owned(), 64))
}

fn invalid(field: &'static str, err: impl std::fmt::Display) -> AdminError {
    AdminError::Invalid {
        field,
        reason: err.to_string(),
        whole: format!("{field}: {err}"),
    }
}

/// A backup taken: its copy, its manifest, and the reports it holds by owning state (each
/// owner finds the backup among the reads of its data).
pub(crate) struct Backup {
    pub(crate) copy: BackupCopy,
    pub(crate) manifest: pb::BackupManifest,
    pub(crate) owners: std::collections::BTreeMap<String, u64>,
}

/// A backup's copy of the store beside it, deleted when this is dropped.
pub(crate) struct BackupCopy(std::path::PathBuf);

impl BackupCopy {
    /// Where the copy is.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for BackupCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Backup copies taken by this process, to name each copy.
static BACKUPS_TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A request field is wrong.
    #[error("{whole}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
        /// The whole message.
        whole: String,
    },
    /// The server does not hold the CA key.
    #[error("this server does not hold the CA key (tls.ca_key), so it {action}")]
    NoCaKey {
        /// What it therefore cannot do, and what to do instead.
        action: &'static str,
    },
    /// The CSR's key was reported compromised.
    #[error(
        "this CSR's key was reported compromised (certificate {by} was revoked for \
         key-compromise); make a new key and CSR (`tidemark pki csr`)"
    )]
    CompromisedKey {
        /// The revoked certificate that reported it: its serial, and its issuer when the
        /// revocation names one.
        by: String,
    },
    /// The certificate is the one the operator's call is made with.
    #[error(
        "certificate {0} is the one making this call: revoking it would end your own access \
         (and the last operator's would lock every operator out); revoke it with another \
         operator's certificate (`tidemark pki issue --role operator` makes one from the CA \
         files)"
    )]
    OwnCall(String),
    /// The certificate shares the key of the one the operator's call is made with, and
    /// the key would be reported compromised.
    #[error(
        "certificate {0} has the key of the certificate making this call: reporting that \
         key compromised would end your own access (and the last operator's would lock \
         every operator out); make a new key and an operator certificate of it first \
         (`tidemark pki issue --role operator` makes one from the CA files), then report \
         the compromise from it"
    )]
    OwnKey(String),
    /// The serial is the exchange's own: the server's certificate or a CA's.
    #[error(
        "{serial} is the serial of {what}, which a CRL of this exchange cannot revoke: \
         replace it (see README, \"Operators\": the server certificate, or a CA rollover) \
         and run `tidemark admin reload-tls`"
    )]
    OwnCertificate {
        /// The serial asked for.
        serial: String,
        /// Whose certificate it is.
        what: &'static str,
    },
    /// The state is not enrolled.
    #[error("{0} is not enrolled in this exchange; enrol it first (`tidemark admin enrol {0}`)")]
    NotEnrolled(CountryCode),
    /// The state is suspended.
    #[error("{0} is suspended; reinstate it first (`tidemark admin enrol {0}`)")]
    Suspended(CountryCode),
    /// Operator certificates are never issued from CSRs.
    #[error("operator certificates are not issued from CSRs; make them offline with the CA files")]
    OperatorFromCsr,
    /// The trust state could not be rebuilt; the old one stays.
    #[error("the TLS configuration could not be rebuilt (the old one stays in use): {0}")]
    Trust(#[source] TrustError),
    /// The change and its audit record were not written (or the registry refused it).
    #[error(transparent)]
    Write(#[from] AdminWriteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The action cannot be taken now (another is running); the message says what to do.
    #[error("{0}")]
    Busy(String),
    /// The data directory has no room for what the action needs; the message says how
    /// much.
    #[error("{0}")]
    NoSpace(String),
    /// Something that cannot happen with a working CA did.
    #[error("{0}")]
    Internal(String),
    /// The action was stopped part-way: its caller went away or lost its rights.
    #[error("{0}")]
    Stopped(&'static str),
}

/// The size and SHA-256 (lower-case hex) of the file at `path`, read in chunks.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    file_sha256_with(path, |_| {})
}

/// As [`file_sha256`], calling `read` with the bytes of each piece as it is read.
pub fn file_sha256_with(
    path: &std::path::Path,
    mut read: impl FnMut(u64),
) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
        bytes += n as u64;
        read(n as u64);
    }
    Ok((bytes, hex::encode(digest.finish())))
}

/// Why the key of the certificate `record` revokes is not barred, when its revocation
/// could have barred it and did not: a partner CA's certificate, or a serial presented
/// with `several_keys` keys.
fn key_not_barred(
    record: &RevokedCertificate,
    partners_word: bool,
    several_keys: usize,
) -> Option<String> {
    if !record.key_fingerprint.is_empty() {
        None
    } else if partners_word {
        Some(
            "its path ends at a partner CA, whose certificate proves nothing of who holds its \
             key (a CA may certify anyone's public key): the key is not barred beyond this \
             certificate — the partner CA revokes its other certificates of it (a \
             certificate of the key presented in a TLS handshake would have let it bar the \
             key)"
                .to_owned(),
        )
    } else if record.reason_name == "key-compromise" && several_keys > 1 {
        Some(format!(
            "certificates of serial {} of several CAs were presented in TLS handshakes with \
             {several_keys} different keys, so which key was compromised is not known: name \
             the certificate's issuer (--issuer, its subject as `whoami` shows it) or give \
             the certificate (--certificate) to bar its key",
            record.serial
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{DEFAULT_TRUST_DOMAIN, StoreConfig, TlsConfig},
        country::CountryCode,
    };

    /// The actions over a real store and trust state built from a development PKI.
    fn admin(dir: &std::path::Path) -> Administration {
        let certs = dir.join("certs");
        pki::init_dev_pki(&certs, DEFAULT_TRUST_DOMAIN, false).unwrap();
        let store = Store::open(&StoreConfig::in_dir(&dir.join("data"))).unwrap();
        let tls = TlsConfig::in_dir(&certs);
        let trust = Trust::load(tls.files(), tls.ca_key.clone(), tls.crl.clone(), &store).unwrap();
        let log = crate::tlog::LogSigner::new("tidemark.test/log", [7; 32]).unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        // The writer thread stops once the last handle on it is dropped.
        let (writer, _) = store
            .start_writer(crate::clock::Clock::system(), 16, Arc::new(log), metrics)
            .unwrap();
        Administration::new((store, writer), Arc::new(trust), DEFAULT_TRUST_DOMAIN, "")
    }

    fn csr(role: Role, name: &str) -> String {
        let principal = Principal::new(DEFAULT_TRUST_DOMAIN, role, name).unwrap();
        pki::make_csr(&principal).unwrap().1
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    fn by_serial<'a>(serial: &'a str, issuer: &'a str) -> Named<'a> {
        Named::Serial { serial, issuer }
    }

    #[test]
    fn a_certificate_is_issued_only_to_an_enrolled_unsuspended_state_and_never_to_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        let fra = CountryCode::parse("FRA").unwrap();
        let node = csr(Role::Node(fra), "n1");
        assert!(matches!(
            admin.issue_certificate((&node, 30), ("op", now())),
            Err(AdminError::NotEnrolled(s)) if s == fra
        ));
        admin.set_suspended("FRA", true, ("op", 0)).unwrap();
        assert!(matches!(
            admin.issue_certificate((&node, 30), ("op", now())),
            Err(AdminError::Suspended(s)) if s == fra
        ));
        admin.set_suspended("FRA", false, ("op", 0)).unwrap();
        let issued = admin.issue_certificate((&node, 30), ("op", now())).unwrap();
        assert!(issued.spiffe_id.ends_with("/state/FRA/node/n1"));
        assert!(matches!(
            admin.issue_certificate((&csr(Role::Operator, "op"), 30), ("op", now())),
            Err(AdminError::OperatorFromCsr)
        ));
    }

    #[test]
    fn a_state_suspended_before_any_enrolment_has_no_enrolment_time() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        let enrolled_at = |op: (&str, i64), suspend| {
            admin
                .set_suspended("FRA", suspend, op)
                .unwrap()
                .0
                .enrolled_at
        };
        assert_eq!(enrolled_at(("op", 100), true), 0);
        assert_eq!(enrolled_at(("op", 200), false), 200);
        assert_eq!(enrolled_at(("op", 300), true), 200);
        assert_eq!(enrolled_at(("op", 400), false), 200);
    }

    #[test]
    fn certificate_days_are_bounded_and_bad_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        let analyst = csr(Role::RegionalAnalyst, "a1");
        for days in [0, MAX_CERT_DAYS + 1] {
            assert!(matches!(
                admin.issue_certificate((&analyst, days), ("op", now())),
                Err(AdminError::Invalid { field: "days", .. })
            ));
        }
        assert!(
            admin
                .issue_certificate((&analyst, MAX_CERT_DAYS), ("op", now()))
                .is_ok()
        );
        assert!(matches!(
            admin.issue_certificate(("not a csr", 30), ("op", now())),
            Err(AdminError::Invalid {
                field: "csr_pem",
                ..
            })
        ));
        assert!(matches!(
            admin.set_suspended("XXQ", true, ("op", 0)),
            Err(AdminError::Invalid { field: "state", .. })
        ));
    }

    #[test]
    fn a_revocation_takes_any_serial_spelling_and_a_known_reason_only() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        let issued = admin
            .issue_certificate((&csr(Role::RegionalAnalyst, "a1"), 30), ("op", now()))
            .unwrap();
        assert!(matches!(
            admin.revoke_certificate(
                by_serial(&issued.serial, ""),
                "because",
                ("op", ("", &[])),
                0
            ),
            Err(AdminError::Invalid {
                field: "reason",
                ..
            })
        ));
        let upper_with_colons = issued
            .serial
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let made = admin
            .revoke_certificate(
                by_serial(&upper_with_colons, ""),
                "key-compromise",
                ("op", ("", &[])),
                0,
            )
            .unwrap();
        let revoked = made.record;
        assert_eq!(
            (
                revoked.serial.as_str(),
                made.already_revoked,
                made.issued_here
            ),
            (issued.serial.as_str(), false, true)
        );
        // Revoked as its record names its issuer: this server's CA.
        let record = admin.store.issued_certificates().unwrap().remove(0);
        assert_eq!(revoked.issuer, record.issuer);
        assert!(!revoked.issuer.is_empty());
        let unknown = admin
            .revoke_certificate(by_serial("0a1b2c", ""), "superseded", ("op", ("", &[])), 0)
            .unwrap();
        assert!(!unknown.issued_here, "a serial this server never issued");
        assert_eq!(unknown.record.issuer, "", "of every issuer");
        assert!(admin.trust.is_issued_revoked(&record));
        assert!(matches!(
            admin.revoke_certificate(
                by_serial("0a1b2d", "CN=No Such CA"),
                "superseded",
                ("op", ("", &[])),
                0
            ),
            Err(AdminError::Invalid {
                field: "issuer",
                ..
            })
        ));
    }

    #[test]
    fn a_key_revocation_cannot_be_dated_in_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        let (key, _) = crate::signing::SigningKey::generate().unwrap();
        let registration = KeyRegistration {
            state: "FRA".to_owned(),
            public_key_pem: key.public_key().to_spki_pem(),
            valid_from: 100,
            valid_until: 50,
        };
        assert!(matches!(
            admin.register_key(&registration, ("op", 1_000)),
            Err(AdminError::Invalid {
                field: "valid_until_unix",
                ..
            })
        ));
        // Times past what RFC 3339 can write are refused; the end of 9999-12-31 is not.
        for (valid_from, valid_until, field) in [
            (253_402_300_800, 0, "valid_from_unix"),
            (0, 253_402_300_801, "valid_until_unix"),
            (0, i64::MAX, "valid_until_unix"),
        ] {
            let far = KeyRegistration {
                valid_from,
                valid_until,
                ..registration.clone()
            };
            let refused = admin.register_key(&far, ("op", 1_000)).unwrap_err();
            assert!(
                matches!(refused, AdminError::Invalid { field: f, .. } if f == field),
                "{refused}"
            );
            assert!(refused.to_string().contains("9999-12-31"), "{refused}");
        }
        // A date's end (a midnight) in the past names the day it ends.
        let past_day = KeyRegistration {
            valid_from: 0,
            valid_until: 2 * 86_400,
            ..registration.clone()
        };
        let refused = admin
            .register_key(&past_day, ("op", 1_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("1970-01-03T00:00:00Z (the end of 1970-01-02, for a date)"),
            "{refused}"
        );
        let registration = KeyRegistration {
            valid_until: 0,
            ..registration
        };
        let stored = admin.register_key(&registration, ("op", 1_000)).unwrap();
        assert!(matches!(
            admin.revoke_key(&stored.key_id, (2_000, ""), ("op", 1_000)),
            Err(AdminError::Invalid {
                field: "compromised_at_unix",
                ..
            })
        ));
        // One spelling of a key id, as `admin keys` lists it and key files name it.
        assert!(matches!(
            admin.revoke_key(&stored.key_id.to_uppercase(), (0, ""), ("op", 1_000)),
            Err(AdminError::Invalid {
                field: "key_id",
                ..
            })
        ));
        // Now: the second after the writer (on the system clock here) stores it.
        let before = time::OffsetDateTime::now_utc().unix_timestamp();
        let (key, already, _) = admin
            .revoke_key(&stored.key_id, (0, ""), ("op", 1_000))
            .unwrap();
        let after = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((before + 1..=after + 1).contains(&key.revoked_at));
        assert_eq!(
            (key.revocation_reason.as_str(), already),
            ("unspecified", false)
        );
        // Again, as of later: the first revocation stands.
        let first = key.revoked_at;
        let (key, already, _) = admin
            .revoke_key(&stored.key_id, (0, "superseded"), ("op", 1_500))
            .unwrap();
        assert_eq!((key.revoked_at, already), (first, true));
        // As of earlier: the revocation moves.
        let (key, already, _) = admin
            .revoke_key(&stored.key_id, (900, "key-compromise"), ("op", 1_500))
            .unwrap();
        assert_eq!((key.revoked_at, already), (900, false));
    }
}
