//! The keys of client certificates TLS handshakes presented, kept across restarts.
//!
//! A certificate made offline with the CA's key (not issued through the server) is
//! known to the server only by presenting it; its key is what a compromise reported by
//! the certificate's serial alone must bar (`administration::revoke_certificate`). The
//! server notes each certificate's key at its first handshake since start
//! (`trust::Trust::saw`) and keeps it here through the writer's next batch, so that a
//! restart between the handshake and the report does not forget it. At most
//! [`MAX_SEEN_KEYS`] are kept: past that, new ones are held in memory only (a partner
//! CA can make any number of certificates).

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{SEEN_KEYS, Store, StoreError};

/// The most certificates whose keys the store keeps.
pub(crate) const MAX_SEEN_KEYS: u64 = 100_000;

/// A certificate a handshake presented, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenKey {
    /// `crate::identity::issuer_id` of its issuer.
    pub(crate) issuer: String,
    /// Its serial, canonical (`crate::identity::serial_hex`).
    pub(crate) serial: String,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub(crate) key: [u8; 32],
}

/// Keeps `seen` in the writer's transaction, unless the table is full.
pub(super) fn keep(
    table: &mut redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
    seen: &SeenKey,
) -> Result<(), StoreError> {
    if table.len()? < MAX_SEEN_KEYS {
        table.insert(
            (seen.issuer.as_str(), seen.serial.as_str()),
            seen.key.as_slice(),
        )?;
    }
    Ok(())
}

impl Store {
    /// The keys kept for certificates of `serial` — of `issuer`, or of any issuer when it
    /// is empty.
    pub(crate) fn seen_keys(
        &self,
        serial: &str,
        issuer: &str,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SEEN_KEYS)?;
        let mut keys = Vec::new();
        let mut add = |value: &[u8]| {
            if let Ok(key) = value.try_into() {
                keys.push(key);
            }
        };
        if issuer.is_empty() {
            for item in table.iter()? {
                let (id, key) = item?;
                if id.value().1 == serial {
                    add(key.value());
                }
            }
        } else if let Some(key) = table.get((issuer, serial))? {
            add(key.value());
        }
        Ok(keys)
    }
}
