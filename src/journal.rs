//! The access journal: who is suspended and which signing keys are revoked, written
//! beside the CRL file (`access-journal.json` in its directory) at every start and every
//! such change, so that a store restored from an older backup gets them back when the
//! server starts on it — the CRL carries certificate revocations only.
//!
//! The file is the server's own record, kept with its certificates and CA key (whoever
//! can write it can write those too); the store stays the authority: the journal only
//! adds what is *newer* than the store's own record (a state's status changed later, a
//! key revoked, or revoked as of an earlier time), never undoes anything.
//!
//! Format (JSON, version 1): `{"version": 1, "states": [{"state": "THA", "suspended":
//! true, "enrolledAt": 1796400000, "changedAt": 1796500000}], "revokedKeys": [{"keyId":
//! "…", "state": "THA", "revokedAt": 1796500000, "reason": "key-compromise"}]}`; times
//! are Unix seconds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{AdminChange, StateRecord, Store, StoreError};

/// The journal's file name, in the CRL file's directory.
const FILE_NAME: &str = "access-journal.json";

/// The version this server writes and reads.
const VERSION: u32 = 1;

/// Where the journal beside the CRL file `crl` is.
pub(crate) fn path(crl: &Path) -> PathBuf {
    crl.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(FILE_NAME)
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Journal {
    version: u32,
    states: Vec<StateEntry>,
    revoked_keys: Vec<KeyEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateEntry {
    state: String,
    suspended: bool,
    enrolled_at: i64,
    changed_at: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    key_id: String,
    state: String,
    revoked_at: i64,
    reason: String,
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the access journal {path}: {why}; it carries suspensions and signing-key \
         revocations into a restored store, so the server does not start over one it cannot \
         read: put back the file it last wrote, or move it aside (what it held is then not \
         carried over)"
    )]
    Unreadable { path: String, why: String },
    #[error("the access journal {path} could not be written: {why}")]
    Unwritable { path: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the journal beside `crl` from the store, atomically (a temporary file renamed
/// over it).
pub(crate) fn write(store: &Store, crl: &Path) -> Result<(), JournalError> {
    let journal = Journal {
        version: VERSION,
        states: store
            .states()?
            .into_iter()
            .map(|s| StateEntry {
                state: s.state,
                suspended: s.suspended,
                enrolled_at: s.enrolled_at,
                changed_at: s.changed_at,
            })
            .collect(),
        revoked_keys: store
            .signing_keys(None)?
            .into_iter()
            .filter(|k| k.revoked_at != 0)
            .map(|k| KeyEntry {
                key_id: k.key_id,
                state: k.state,
                revoked_at: k.revoked_at,
                reason: k.revocation_reason,
            })
            .collect(),
    };
    let path = path(crl);
    let unwritable = |e: std::io::Error| JournalError::Unwritable {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let temporary = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(&journal).unwrap_or_default();
    text.push('\n');
    std::fs::write(&temporary, text).map_err(unwritable)?;
    std::fs::rename(&temporary, &path).map_err(unwritable)
}

/// The changes the journal beside `crl` holds that are newer than the store's own
/// record (none if there is no journal), as administrative changes to apply.
pub(crate) fn newer_than_store(
    store: &Store,
    crl: &Path,
) -> Result<Vec<AdminChange>, JournalError> {
    let path = path(crl);
    let unreadable = |why: String| JournalError::Unreadable {
        path: path.display().to_string(),
        why,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let journal: Journal = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if journal.version != VERSION {
        return Err(unreadable(format!(
            "it is version {}, and this server reads version {VERSION}",
            journal.version
        )));
    }
    let mut changes = Vec::new();
    for entry in journal.states {
        let held = store.state(&entry.state)?;
        let newer = held.as_ref().is_none_or(|held| {
            held.changed_at < entry.changed_at && held.suspended != entry.suspended
        });
        if newer {
            changes.push(AdminChange::State(StateRecord {
                enrolled_at: held.map_or(entry.enrolled_at, |h| h.enrolled_at),
                state: entry.state,
                suspended: entry.suspended,
                changed_at: entry.changed_at,
            }));
        }
    }
    for entry in journal.revoked_keys {
        let Some(held) = store.signing_key(&entry.key_id)? else {
            // Registered after the backup: not in this store, so never accepted.
            continue;
        };
        if held.revoked_at == 0 || held.revoked_at > entry.revoked_at {
            changes.push(AdminChange::RevokeKey {
                key_id: entry.key_id,
                at: entry.revoked_at,
                reason: entry.reason,
            });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::StoreConfig, store::KeyRecord};

    fn state(code: &str, suspended: bool, changed_at: i64) -> StateRecord {
        StateRecord {
            state: code.to_owned(),
            suspended,
            enrolled_at: 1,
            changed_at,
        }
    }

    /// What the journal adds is only what is newer than the store's own record.
    #[test]
    fn a_journal_adds_only_what_is_newer_than_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let crl = dir.path().join("crl.pem");
        let key = |id: &str, revoked_at: i64| KeyRecord {
            revoked_at,
            revocation_reason: "key-compromise".to_owned(),
            ..KeyRecord::new(id, "THA", &[7; 32], 1, 0, 1)
        };
        // The journal as written later: THA suspended at 50, IDN reinstated at 40, key
        // "a" revoked as of 30, key "b" as of 20, key "c" (unknown to the store) as of 10.
        let later = Store::open(&StoreConfig::in_dir(&dir.path().join("later"))).unwrap();
        for record in [state("THA", true, 50), state("IDN", false, 40)] {
            later.put_state(&record).unwrap();
        }
        for (id, at) in [("a", 30), ("b", 20), ("c", 10)] {
            later.register_signing_key(&key(id, 0)).unwrap();
            later
                .revoke_key_for_tests(id, at, "key-compromise")
                .unwrap();
        }
        write(&later, &crl).unwrap();
        // The store: THA active since 10 (older: suspended), IDN suspended at 60 (newer
        // than the journal: stays), key "a" not revoked, key "b" revoked as of 5.
        for record in [state("THA", false, 10), state("IDN", true, 60)] {
            store.put_state(&record).unwrap();
        }
        store.register_signing_key(&key("a", 0)).unwrap();
        store.register_signing_key(&key("b", 0)).unwrap();
        store.revoke_key_for_tests("b", 5, "superseded").unwrap();
        let changes = newer_than_store(&store, &crl).unwrap();
        let said: Vec<String> = changes.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(changes.len(), 2, "{said:#?}");
        assert!(matches!(&changes[0], AdminChange::State(s) if s.state == "THA" && s.suspended));
        assert!(
            matches!(&changes[1], AdminChange::RevokeKey { key_id, at: 30, .. } if key_id == "a")
        );
        // A journal it cannot read stops the start, naming the file; none is nothing.
        std::fs::write(
            path(&crl),
            "{\"version\": 2, \"states\": [], \"revokedKeys\": []}",
        )
        .unwrap();
        let refused = newer_than_store(&store, &crl).unwrap_err().to_string();
        assert!(
            refused.contains("access-journal.json") && refused.contains("version 2"),
            "{refused}"
        );
        std::fs::remove_file(path(&crl)).unwrap();
        assert!(newer_than_store(&store, &crl).unwrap().is_empty());
    }
}
