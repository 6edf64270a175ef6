//! Whether an envelope verified on a caller's task may still be stored when its batch is
//! written.
//!
//! A submission is checked when it arrives (certificate, state, signing key), then waits
//! in the writer's queue — under load, behind thousands of others. A revocation or a
//! suspension is an administrative change, which goes ahead of that queue, so it is
//! stored while envelopes checked before it still wait. The writer therefore checks each envelope
//! again inside its transaction, against the registry as that transaction holds it at
//! the envelope's place in the batch: once a revocation or suspension is stored, nothing
//! its subject submitted is stored after it, in log order. With signing keys revoked
//! "now" taking effect the second after their revocation is stored
//! ([`super::admin::AdminChange::stamped`]), every envelope a revoked key signed was
//! accepted strictly before the time its key record gives, as `tidemark verify` checks.
//!
//! Lookups are cached for the batch, and forgotten after each administrative change.

use std::collections::HashMap;

use redb::WriteTransaction;

use super::{
    KeyRecord, REVOKED_CERTS, RevokedCertificate, SIGNING_KEYS, STATES, StateRecord, StoreError,
    admin,
    apply::{AppendError, NewEnvelope},
};

/// The registry as a batch's transaction holds it, read on demand.
#[derive(Default)]
pub(super) struct Admission {
    keys: HashMap<String, Option<KeyRecord>>,
    revoked: HashMap<String, Option<RevokedCertificate>>,
    suspended: HashMap<String, bool>,
}

impl Admission {
    /// Forgets what was read: an administrative change in the batch may have changed it.
    pub(super) fn forget(&mut self) {
        self.keys.clear();
        self.revoked.clear();
        self.suspended.clear();
    }

    /// Why `new` may no longer be stored at `now`, if it may not.
    pub(super) fn refusal(
        &mut self,
        tx: &WriteTransaction,
        new: &NewEnvelope,
        now: i64,
    ) -> Result<Option<AppendError>, StoreError> {
        for certificate in &new.certificates {
            // Revoked for every issuer, or for this one.
            for key in [
                certificate.serial.clone(),
                super::records::revocation_key(&certificate.serial, &certificate.issuer),
            ] {
                if !self.revoked.contains_key(&key) {
                    let revoked = admin::get(tx, REVOKED_CERTS, &key)?;
                    self.revoked.insert(key.clone(), revoked);
                }
                if let Some(Some(revoked)) = self.revoked.get(&key) {
                    return Ok(Some(AppendError::CertificateRevoked {
                        serial: revoked.serial.clone(),
                    }));
                }
            }
        }
        let state = new.state.as_str();
        if !self.suspended.contains_key(state) {
            let record: Option<StateRecord> = admin::get(tx, STATES, state)?;
            self.suspended
                .insert(state.to_owned(), record.is_some_and(|r| r.suspended));
        }
        if self.suspended.get(state) == Some(&true) {
            return Ok(Some(AppendError::StateSuspended {
                state: state.to_owned(),
            }));
        }
        for key_id in std::iter::once(&new.key_id).chain(&new.also_signed_by) {
            if !self.keys.contains_key(key_id) {
                let key = admin::get(tx, SIGNING_KEYS, key_id)?;
                self.keys.insert(key_id.clone(), key);
            }
        }
        // One key still active suffices (each signature stands alone, DSSE); else the
        // first key's state says why.
        let active = |key_id: &String| matches!(self.keys.get(key_id), Some(Some(key)) if key.active_at(now));
        if new.also_signed_by.iter().any(active) {
            return Ok(None);
        }
        let refusal = match self.keys.get(&new.key_id) {
            Some(Some(key)) if key.active_at(now) => None,
            Some(Some(key)) if key.revoked_at != 0 => Some(AppendError::KeyRevoked {
                key_id: key.key_id.clone(),
                at: key.revoked_at,
                reason: key.revocation_reason.clone(),
            }),
            _ => Some(AppendError::KeyInactive {
                key_id: new.key_id.clone(),
            }),
        };
        Ok(refusal)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::super::{
        KeyRecord, RevokedCertificate, StateRecord, Store, Writer,
        admin::AdminChange,
        apply::{AppendError, NewEnvelope},
    };
    use crate::{
        clock::Clock,
        config::StoreConfig,
        envelope::{self, REPORT_PAYLOAD_TYPE},
        identity::{PeerIdentity, Principal, Role},
        metrics::Metrics,
        pki::{CertificateAuthority, Validity},
        sample,
        signing::SigningKey,
        submission,
        tlog::LogSigner,
    };

    const OPERATOR: &str = "spiffe://tidemark.test/operator/ops";

    /// A state's node and signing key, registered in the store.
    struct Node {
        peer: PeerIdentity,
        key: SigningKey,
    }

    fn node(store: &Store, ca: &CertificateAuthority, state: &str, now: i64) -> Node {
        let principal = Principal::new(
            "tidemark.test",
            Role::Node(state.parse().unwrap()),
            "node-1",
        )
        .unwrap();
        let issued = ca
            .issue_client(&principal, Validity::days_from_now(1))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let peer = PeerIdentity::from_certificate(&der, "tidemark.test").unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key();
        store
            .register_signing_key(&KeyRecord::new(
                key.key_id(),
                state,
                public.raw(),
                now - 60,
                0,
                now,
            ))
            .unwrap();
        store
            .put_state(&StateRecord {
                state: state.to_owned(),
                enrolled_at: now,
                changed_at: now,
                ..StateRecord::default()
            })
            .unwrap();
        Node { peer, key }
    }

    /// A report of `node`'s state, verified as the server verifies it on arrival.
    fn verified(store: &Store, node: &Node, seed: u64) -> NewEnvelope {
        let state = node.peer.principal().state().unwrap().to_string();
        let mut rng = sample::Rng::new(sample::seed_for(seed, &state));
        let report = sample::report(&mut rng, &state);
        let signed = envelope::sign(
            REPORT_PAYLOAD_TYPE,
            prost::Message::encode_to_vec(&report),
            &node.key,
        );
        submission::verify(
            Some(&signed),
            &node.peer,
            store,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
    }

    fn admin(writer: &Writer, change: AdminChange) {
        let writer = writer.clone();
        std::thread::spawn(move || writer.admin_blocking(change, OPERATOR).unwrap())
            .join()
            .unwrap();
    }

    /// Envelopes checked on arrival, then stored after their key's or certificate's
    /// revocation or their state's suspension was stored, are refused; one stored before
    /// a key's revocation in the same second was accepted before the time its key record
    /// gives.
    #[test]
    fn what_waited_in_the_queue_is_checked_again_when_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (clock, _) = Clock::manual(now);
        let ca = CertificateAuthority::generate("test CA", Validity::days_from_now(1)).unwrap();
        let [aus, idn, nzl] = ["AUS", "IDN", "NZL"].map(|s| node(&store, &ca, s, now));
        let log = Arc::new(LogSigner::new("log.test", [1; 32]).unwrap());
        let (writer, thread) = store
            .start_writer(clock, 64, log, Arc::new(Metrics::new()))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let append = |new| runtime.block_on(writer.append(new));

        let [first, waiting] = [1, 2].map(|seed| verified(&store, &aus, seed));
        let accepted = append(first).unwrap();
        assert_eq!(accepted.at, now);
        admin(
            &writer,
            AdminChange::RevokeKey {
                key_id: aus.key.key_id().to_owned(),
                at: 0,
                reason: "superseded".to_owned(),
            },
        );
        let key = store.signing_key(aus.key.key_id()).unwrap().unwrap();
        assert_eq!(key.revoked_at, now + 1, "the second after the revocation");
        assert!(matches!(
            append(waiting),
            Err(AppendError::KeyRevoked { at, .. }) if at == now + 1
        ));

        let waiting = verified(&store, &idn, 1);
        admin(
            &writer,
            AdminChange::RevokeCertificate(RevokedCertificate {
                serial: idn.peer.serial().to_owned(),
                revoked_at: now - 1_000,
                ..RevokedCertificate::default()
            }),
        );
        let revoked = store.revoked_certificates().unwrap();
        assert_eq!(revoked[0].revoked_at, now, "as of when it was stored");
        assert!(matches!(
            append(waiting),
            Err(AppendError::CertificateRevoked { serial }) if serial == idn.peer.serial()
        ));

        let [first, waiting] = [1, 2].map(|seed| verified(&store, &nzl, seed));
        append(first).unwrap();
        admin(
            &writer,
            AdminChange::State(StateRecord {
                state: "NZL".to_owned(),
                suspended: true,
                ..StateRecord::default()
            }),
        );
        assert!(matches!(
            append(waiting),
            Err(AppendError::StateSuspended { state }) if state == "NZL"
        ));
        assert_eq!(store.envelope_count().unwrap(), 2);
        runtime.block_on(thread.stop());
    }

    /// A revocation queued behind envelopes that wait for the writer goes ahead of them:
    /// they are refused, not stored before it. The writer is held (a write transaction
    /// open elsewhere) while both are queued; a batch holds at most two jobs, so at most
    /// two envelopes were taken before the revocation arrived.
    #[test]
    fn a_revocation_overtakes_the_envelopes_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (clock, _) = Clock::manual(now);
        let ca = CertificateAuthority::generate("test CA", Validity::days_from_now(1)).unwrap();
        let idn = node(&store, &ca, "IDN", now);
        let log = Arc::new(LogSigner::new("log.test", [1; 32]).unwrap());
        let (writer, thread) = store
            .start_writer(clock, 2, log, Arc::new(Metrics::new()))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();

        let held = store.db.begin_write().unwrap();
        let waiting: Vec<_> = (1..=8)
            .map(|seed| {
                runtime
                    .block_on(writer.enqueue(verified(&store, &idn, seed)))
                    .unwrap()
            })
            .collect();
        let revocation = writer
            .queue_admin(
                AdminChange::RevokeCertificate(RevokedCertificate {
                    serial: idn.peer.serial().to_owned(),
                    ..RevokedCertificate::default()
                }),
                OPERATOR,
            )
            .unwrap();
        held.abort().unwrap();
        revocation.blocking_recv().unwrap().unwrap();
        let refused = waiting
            .into_iter()
            .map(|outcome| runtime.block_on(outcome))
            .filter(|outcome| matches!(outcome, Err(AppendError::CertificateRevoked { .. })))
            .count();
        assert!(refused >= 6, "only {refused} of 8 refused");
        assert_eq!(store.envelope_count().unwrap(), 8 - refused as u64);
        runtime.block_on(thread.stop());
    }
}
