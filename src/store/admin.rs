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

use super::{
    AuditRecord, ISSUED_CERTS, IssuedCertificate, KeyRecord, KeyRegistryError, REVOKED_CERTS,
    RevokedCertificate, SIGNING_KEYS, STATES, StateRecord, StoreError, decode,
};

/// One administrative change.
#[derive(Debug, Clone)]
pub(crate) enum AdminChange {
    /// Writes a state's record (enrolment, suspension, reinstatement).
    State(StateRecord),
    /// Registers a signing key; the same key for the same state again changes nothing,
    /// for another state it is refused.
    RegisterKey(KeyRecord),
    /// Revokes a signing key from `at` on; a key already revoked keeps the earlier time.
    RevokeKey {
        key_id: String,
        at: i64,
        reason: String,
    },
    /// Records a certificate this server issued.
    Issued(IssuedCertificate),
    /// Records a certificate's revocation; revoking again keeps the first record.
    RevokeCertificate(RevokedCertificate),
}

impl AdminChange {
    /// Whether the change touches signing keys (whose cache is then dropped).
    pub(super) fn touches_keys(&self) -> bool {
        matches!(self, Self::RegisterKey(_) | Self::RevokeKey { .. })
    }

    /// The audit log's name for the action.
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

/// The audit record of `change`, asked for by `operator` (a SPIFFE ID), from what it
/// left in the store: a key or certificate revoked again says the first revocation
/// stands.
pub(super) fn audit_record(
    operator: &str,
    change: &AdminChange,
    applied: &AdminApplied,
) -> AuditRecord {
    let detail = match applied {
        AdminApplied::State(record) => record.state.clone(),
        AdminApplied::Key(key) => match change {
            AdminChange::RevokeKey { at, reason, .. }
                if (key.revoked_at, key.revocation_reason.as_str()) != (*at, reason.as_str()) =>
            {
                format!(
                    "key {} of {} already revoked as of {} ({}); as of {at} ({reason}) \
                     changes nothing",
                    key.key_id, key.state, key.revoked_at, key.revocation_reason
                )
            }
            AdminChange::RevokeKey { at, reason, .. } => format!(
                "key {} of {} revoked as of {at} ({reason})",
                key.key_id, key.state
            ),
            _ => format!("key {} for {}", key.key_id, key.state),
        },
        AdminApplied::Issued(certificate) => format!(
            "serial {} for {}",
            certificate.serial, certificate.spiffe_id
        ),
        AdminApplied::Revoked(revoked, true) => {
            format!("serial {} ({})", revoked.serial, revoked.reason_name)
        }
        AdminApplied::Revoked(revoked, false) => format!(
            "serial {} already revoked at {} ({}); changes nothing",
            revoked.serial, revoked.revoked_at, revoked.reason_name
        ),
    };
    AuditRecord {
        principal: operator.to_owned(),
        action: change.action().to_owned(),
        detail,
        ..AuditRecord::default()
    }
}

/// What a change left in the store.
#[derive(Debug, Clone)]
pub(crate) enum AdminApplied {
    State(StateRecord),
    /// The key as stored (for a key registered again, the first registration).
    Key(KeyRecord),
    Issued(IssuedCertificate),
    /// The revocation as stored, and whether it is this change's (a certificate revoked
    /// again keeps its first revocation).
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
            put(tx, STATES, &record.state, record)?;
            AdminApplied::State(record.clone())
        }
        AdminChange::RegisterKey(record) => {
            let mut table = tx.open_table(SIGNING_KEYS)?;
            let existing: Option<KeyRecord> = table
                .get(record.key_id.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?;
            match existing {
                Some(existing) if existing.state == record.state => AdminApplied::Key(existing),
                Some(existing) => {
                    return Ok(Err(KeyRegistryError::OtherState {
                        key_id: record.key_id.clone(),
                        state: existing.state,
                    }));
                }
                None => {
                    table.insert(record.key_id.as_str(), record.encode_to_vec().as_slice())?;
                    AdminApplied::Key(record.clone())
                }
            }
        }
        AdminChange::RevokeKey { key_id, at, reason } => {
            let mut table = tx.open_table(SIGNING_KEYS)?;
            let stored: Option<KeyRecord> = table
                .get(key_id.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(mut record) = stored else {
                return Ok(Err(KeyRegistryError::Unknown(key_id.clone())));
            };
            if record.revoked_at == 0 || *at < record.revoked_at {
                record.revoked_at = *at;
                reason.clone_into(&mut record.revocation_reason);
                table.insert(key_id.as_str(), record.encode_to_vec().as_slice())?;
            }
            AdminApplied::Key(record)
        }
        AdminChange::Issued(record) => {
            put(tx, ISSUED_CERTS, &record.serial, record)?;
            AdminApplied::Issued(record.clone())
        }
        AdminChange::RevokeCertificate(record) => {
            let mut table = tx.open_table(REVOKED_CERTS)?;
            let first: Option<RevokedCertificate> = table
                .get(record.serial.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?;
            if let Some(first) = first {
                AdminApplied::Revoked(first, false)
            } else {
                table.insert(record.serial.as_str(), record.encode_to_vec().as_slice())?;
                AdminApplied::Revoked(record.clone(), true)
            }
        }
    };
    Ok(Ok(applied))
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
