//! Administrative changes to the store: a state enrolled or suspended, a signing key
//! registered or revoked, a client certificate issued or revoked.
//!
//! The writer applies each change in the same transaction as its audit record (and so
//! its transparency-log leaf): an action is never in force without its record, and a
//! record never names an action that did not happen. [`apply`] is that one step; the
//! store's own [`super::Store::put_state`] and [`super::Store::register_signing_key`],
//! used to set a store up before a server runs, call it in a transaction of their own.

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use crate::clock::format_time;

use super::{
    AuditRecord, ISSUED_CERTS, IssuedCertificate, KeyRecord, KeyRegistryError, OwnerReads,
    REVOKED_CERTS, RevokedCertificate, SIGNING_KEYS, STATES, StateRecord, StoreError, decode,
};

/// One administrative change.
#[derive(Debug, Clone)]
pub(crate) enum AdminChange {
    /// Writes a state's record (enrolment, suspension, reinstatement).
    State(StateRecord),
    /// Registers a signing key; the same key for the same state again changes nothing,
    /// for another state it is refused.
    RegisterKey(KeyRecord),
    /// Revokes a signing key from `at` on (0: from when it is stored, see
    /// [`AdminChange::stamped`]); a key already revoked keeps the earlier time.
    RevokeKey {
        key_id: String,
        at: i64,
        reason: String,
    },
    /// Records a certificate this server issued.
    Issued(IssuedCertificate),
    /// Records a certificate's revocation (as of when it is stored); revoking again keeps
    /// the first record.
    RevokeCertificate(RevokedCertificate),
}

impl AdminChange {
    /// The change with the times it takes from the transaction that stores it, at `now`:
    /// a certificate is revoked as of `now`, and a signing key revoked without a time of
    /// compromise as of the second after `now`, so that every envelope it signed that
    /// was stored before — also earlier in the same second — was accepted before its
    /// revocation, and nothing after ([`super::admission`]).
    pub(super) fn stamped(&self, now: i64) -> Self {
        match self {
            Self::RevokeKey {
                key_id,
                at: 0,
                reason,
            } => Self::RevokeKey {
                key_id: key_id.clone(),
                at: now.saturating_add(1),
                reason: reason.clone(),
            },
            Self::RevokeCertificate(asked) => Self::RevokeCertificate(RevokedCertificate {
                revoked_at: now,
                ..asked.clone()
            }),
            other => other.clone(),
        }
    }

    /// Whether the change touches signing keys (whose cache is then dropped).
    pub(crate) fn touches_keys(&self) -> bool {
        matches!(self, Self::RegisterKey(_) | Self::RevokeKey { .. })
    }

    /// The audit log's name for the action (one of [`ACTIONS`]).
    fn action(&self) -> &'static str {
        match self {
            Self::State(record) if record.suspended => "suspend-state",
            Self::State(_) => "enrol-state",
            Self::RegisterKey(_) => "register-key",
            Self::RevokeKey { .. } => "revoke-key",
            Self::Issued(_) => "issue-certificate",
            Self::RevokeCertificate(_) => "revoke-certificate",
        }
    }
}

/// The audit log's names for administrative changes.
pub(crate) const ACTIONS: [&str; 6] = [
    "enrol-state",
    "suspend-state",
    "register-key",
    "revoke-key",
    "issue-certificate",
    "revoke-certificate",
];

/// The audit record of `change`, asked for by `operator` (a SPIFFE ID), from what it
/// found and left in the store (`tx`): an action that changes nothing (a state enrolled
/// again, a key registered or revoked again) says so, and times are RFC 3339. The state
/// an action concerns ([`concerned_state`]) is named among its owners, with no reports,
/// so that the action is in that state's access list and its log entry names the state:
/// a state sees every key registered and certificate issued in its name.
pub(super) fn audit_record(
    tx: &WriteTransaction,
    operator: &str,
    change: &AdminChange,
    applied: &AdminApplied,
) -> Result<AuditRecord, StoreError> {
    let detail = match applied {
        AdminApplied::State(record, before) => state_detail(record, before.as_ref()),
        AdminApplied::Key(key, before) => match (change, before) {
            (AdminChange::RevokeKey { at, reason, .. }, Some(before)) => {
                revocation_detail(key, before, (*at, reason))
            }
            (_, Some(_)) => format!(
                "key {} for {} (already registered; changes nothing)",
                key.key_id, key.state
            ),
            (_, None) => format!(
                "key {} for {}, valid from {} {}",
                key.key_id,
                key.state,
                crate::clock::format_time(key.valid_from),
                if key.valid_until == 0 {
                    "with no end".to_owned()
                } else {
                    format!("until {}", crate::clock::format_until(key.valid_until))
                }
            ),
        },
        AdminApplied::Issued(certificate) => format!(
            "serial {} for {}",
            certificate.serial, certificate.spiffe_id
        ),
        // A compromise learnt after an earlier revocation: that one stands, now with the
        // reason or the key (the same revocation would be this change's own).
        AdminApplied::Revoked(revoked, true)
            if let AdminChange::RevokeCertificate(asked) = change
                && asked != revoked =>
        {
            let learnt = if asked.compromised() {
                "its key is now reported compromised (key-compromise)"
            } else {
                "its key, reported compromised, is now known"
            };
            format!(
                "serial {} (revoked at {}): {learnt} and is not certified again",
                revoked.named(),
                format_time(revoked.revoked_at)
            )
        }
        AdminApplied::Revoked(revoked, true) if !revoked.holder.is_empty() => format!(
            "serial {} ({}) held by {}",
            revoked.named(),
            revoked.reason_name,
            revoked.holder
        ),
        AdminApplied::Revoked(revoked, true) => {
            format!("serial {} ({})", revoked.named(), revoked.reason_name)
        }
        AdminApplied::Revoked(revoked, false) => {
            let asked = match change {
                AdminChange::RevokeCertificate(asked) => format!(" ({})", asked.reason_name),
                _ => String::new(),
            };
            format!(
                "serial {} already revoked at {} ({}); revoking it again{asked} changes \
                 nothing",
                revoked.named(),
                format_time(revoked.revoked_at),
                revoked.reason_name
            )
        }
    };
    let owners = concerned_state(tx, applied)?
        .into_iter()
        .map(|owner| OwnerReads {
            owner,
            ..OwnerReads::default()
        })
        .collect();
    Ok(AuditRecord {
        principal: operator.to_owned(),
        action: change.action().to_owned(),
        detail,
        owners,
        ..AuditRecord::default()
    })
}

/// The state an administrative change concerns: the state enrolled or suspended, the
/// state of the signing key, of the certificate issued, or of the certificate revoked
/// when its holder is known (this server issued it, or the operator presented it). None
/// for an operator's certificate, a regional analyst's, or a serial of unknown holder.
fn concerned_state(
    tx: &WriteTransaction,
    applied: &AdminApplied,
) -> Result<Option<String>, StoreError> {
    Ok(match applied {
        AdminApplied::State(record, _) => Some(record.state.clone()),
        AdminApplied::Key(key, _) => Some(key.state.clone()),
        AdminApplied::Issued(certificate) => holder_state(&certificate.spiffe_id),
        AdminApplied::Revoked(revoked, _) => {
            let issued: Option<IssuedCertificate> = get(tx, ISSUED_CERTS, &revoked.serial)?;
            issued
                .filter(|c| {
                    revoked.issuer.is_empty() || c.issuer.is_empty() || c.issuer == revoked.issuer
                })
                .map(|c| c.spiffe_id)
                .or_else(|| Some(revoked.holder.clone()))
                .and_then(|holder| holder_state(&holder))
        }
    })
}

/// The state of the principal a SPIFFE ID names, if it is a state's.
fn holder_state(spiffe_id: &str) -> Option<String> {
    crate::identity::Principal::state_in_id(spiffe_id).map(|s| s.to_string())
}

fn state_detail(record: &StateRecord, before: Option<&StateRecord>) -> String {
    match before {
        Some(before) if before.suspended == record.suspended => {
            let already = if record.suspended {
                "suspended"
            } else {
                "enrolled"
            };
            format!("{} (already {already}; changes nothing)", record.state)
        }
        Some(before) if before.suspended => format!("{} (reinstated)", record.state),
        _ => record.state.clone(),
    }
}

/// A key's revocation as of `asked` (time, reason), from the key `before` the change to
/// the key `after` it.
fn revocation_detail(after: &KeyRecord, before: &KeyRecord, asked: (i64, &str)) -> String {
    let of = format!("key {} of {}", after.key_id, after.state);
    let as_of = |key: &KeyRecord| {
        format!(
            "{} ({})",
            format_time(key.revoked_at),
            key.revocation_reason
        )
    };
    if before.revoked_at == 0 {
        format!("{of} revoked as of {}", as_of(after))
    } else if after.revoked_at < before.revoked_at {
        format!(
            "{of}: revocation moved earlier, from {} to {}",
            as_of(before),
            as_of(after)
        )
    } else {
        format!(
            "{of} already revoked as of {}; as of {} ({}) changes nothing",
            as_of(before),
            format_time(asked.0),
            asked.1
        )
    }
}

/// What a change found and left in the store.
#[derive(Debug, Clone)]
pub(crate) enum AdminApplied {
    /// The state's record, and what it was before (`None`: not enrolled before).
    State(StateRecord, Option<StateRecord>),
    /// The key as stored, and as it was before (`None`: registered by this change).
    Key(KeyRecord, Option<KeyRecord>),
    Issued(IssuedCertificate),
    /// The revocation as stored, and whether this change made or changed it (a
    /// certificate revoked again keeps its first revocation; reported compromised, that
    /// revocation takes the reason keyCompromise and the key).
    Revoked(RevokedCertificate, bool),
}

/// Why an administrative change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminWriteError {
    /// The signing-key registry refused it; nothing was written.
    #[error(transparent)]
    Refused(KeyRegistryError),
    /// The writer has stopped: neither the change nor its record was written.
    #[error(
        "neither the action nor its audit record could be written, so nothing changed \
         ({0}); try again once the server is running"
    )]
    NotWritten(String),
    /// Its transaction failed, perhaps part-way through its commit: the change and its
    /// record took effect together or not at all.
    #[error(
        "the store failed while writing the action with its audit record ({0}): either \
         both took effect or neither did; once the server is back, see which with \
         `tidemark admin audit` before trying again"
    )]
    Failed(String),
}

/// Applies `change` in `tx`. A refusal (`Ok(Err(_))`) writes nothing; a store failure
/// fails the transaction.
pub(super) fn apply(
    tx: &WriteTransaction,
    change: &AdminChange,
) -> Result<Result<AdminApplied, KeyRegistryError>, StoreError> {
    let applied = match change {
        AdminChange::State(record) => {
            let before: Option<StateRecord> = get(tx, STATES, &record.state)?;
            match before {
                // Enrolled again, or suspended again: the record stays as it was.
                Some(before) if before.suspended == record.suspended => {
                    AdminApplied::State(before.clone(), Some(before))
                }
                before => {
                    let record = StateRecord {
                        revision: before.as_ref().map_or(1, |b| b.revision.saturating_add(1)),
                        ..record.clone()
                    };
                    put(tx, STATES, &record.state, &record)?;
                    AdminApplied::State(record, before)
                }
            }
        }
        AdminChange::RegisterKey(record) => {
            let existing: Option<KeyRecord> = get(tx, SIGNING_KEYS, &record.key_id)?;
            match existing {
                Some(existing) if existing.state == record.state && existing.revoked_at != 0 => {
                    return Ok(Err(KeyRegistryError::Revoked {
                        key_id: existing.key_id,
                        state: existing.state,
                        at: existing.revoked_at,
                        reason: existing.revocation_reason,
                    }));
                }
                Some(existing) if existing.state == record.state => {
                    AdminApplied::Key(existing.clone(), Some(existing))
                }
                Some(existing) => {
                    return Ok(Err(KeyRegistryError::OtherState {
                        key_id: record.key_id.clone(),
                        state: existing.state,
                    }));
                }
                None => {
                    put(tx, SIGNING_KEYS, &record.key_id, record)?;
                    AdminApplied::Key(record.clone(), None)
                }
            }
        }
        AdminChange::RevokeKey { key_id, at, reason } => {
            let stored: Option<KeyRecord> = get(tx, SIGNING_KEYS, key_id)?;
            let Some(before) = stored else {
                return Ok(Err(KeyRegistryError::Unknown(key_id.clone())));
            };
            let mut record = before.clone();
            if record.revoked_at == 0 || *at < record.revoked_at {
                record.revoked_at = *at;
                reason.clone_into(&mut record.revocation_reason);
                put(tx, SIGNING_KEYS, key_id, &record)?;
            }
            AdminApplied::Key(record, Some(before))
        }
        AdminChange::Issued(record) => {
            put(tx, ISSUED_CERTS, &record.serial, record)?;
            AdminApplied::Issued(record.clone())
        }
        AdminChange::RevokeCertificate(record) => {
            // A revocation of the serial for every issuer covers this issuer's too.
            let mut first: Option<RevokedCertificate> = get(tx, REVOKED_CERTS, &record.key())?;
            if first.is_none() && !record.issuer.is_empty() {
                first = get(tx, REVOKED_CERTS, &record.serial)?;
            }
            if let Some(first) = first {
                match first.learning_compromise(record) {
                    Some(known) => {
                        put(tx, REVOKED_CERTS, &known.key(), &known)?;
                        AdminApplied::Revoked(known, true)
                    }
                    None => AdminApplied::Revoked(first, false),
                }
            } else {
                if record.issuer.is_empty() {
                    // For every issuer: each issuer's revocation of the serial already
                    // made takes the compromise too (its time stays).
                    for known in issuers_revocations(tx, &record.serial)? {
                        if let Some(learnt) = known.learning_compromise(record) {
                            put(tx, REVOKED_CERTS, &learnt.key(), &learnt)?;
                        }
                    }
                }
                put(tx, REVOKED_CERTS, &record.key(), record)?;
                AdminApplied::Revoked(record.clone(), true)
            }
        }
    };
    Ok(Ok(applied))
}

/// The revocations of `serial` that name their issuer.
fn issuers_revocations(
    tx: &WriteTransaction,
    serial: &str,
) -> Result<Vec<RevokedCertificate>, StoreError> {
    // Keys are `serial@issuer`: from `serial@` up to `serialA` ('A' follows '@').
    let (from, to) = (format!("{serial}@"), format!("{serial}A"));
    let table = tx.open_table(REVOKED_CERTS)?;
    let mut found = Vec::new();
    for entry in table.range::<&str>(from.as_str()..to.as_str())? {
        found.push(decode(entry?.1.value())?);
    }
    Ok(found)
}

pub(super) fn get<M: Message + Default>(
    tx: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<M>, StoreError> {
    tx.open_table(table)?
        .get(key)?
        .map(|v| decode(v.value()))
        .transpose()
}

fn put<M: Message>(
    tx: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
    record: &M,
) -> Result<(), StoreError> {
    tx.open_table(table)?
        .insert(key, record.encode_to_vec().as_slice())?;
    Ok(())
}
