//! The access journal: who is suspended and which signing keys are revoked, written
//! beside the CRL file (`access-journal.json` in its directory) at every start and every
//! such change, so that a store restored from an older backup gets them back when the
//! server starts on it — the CRL carries certificate revocations only.
//!
//! The file is unsigned and the store stays the authority, so the journal only ever
//! *restricts*: at start the server takes from it a suspension newer than the store's
//! record of that state (a change of the same second with a later revision — the
//! record's count of changes — is newer; a suspension wins a tie of both), and a key
//! revocation the
//! store lacks or has as of a later time (a key it does not know at all — registered
//! after the backup — is recorded as registered and revoked, so it cannot be registered
//! again). A reinstatement or an enrolment is never taken from it: one lost to a restore
//! is made again (the server names it). Writing merges: what the file holds that is newer
//! than the store is kept, so that two servers sharing one certificate directory, or a
//! change made elsewhere, do not drop each other's entries.
//!
//! Format (JSON, version 1): `{"version": 1, "states": [{"state": "THA", "suspended":
//! true, "enrolledAt": 1796400000, "changedAt": 1796500000, "revision": 2}],
//! "revokedKeys": [{"keyId": "…", "state": "THA", "publicKey": "<base64 of the 32 Ed25519 bytes>", "validFrom": 0,
//! "validUntil": 0, "registeredAt": 1796400000, "revokedAt": 1796500000, "reason":
//! "key-compromise"}], "revokedCertificates": [{"serial": "1fa0", "reason":
//! "key-compromise", "revokedAt": 1796500000, "revokedBy": "spiffe://…", "issuer":
//! "<hex SHA-256 of the issuer name's DER; absent: every issuer>", "issuerName": "CN=…",
//! "holder": "spiffe://…/node/THA/…" (when known)}]}`;
//! times are Unix seconds. Revoked certificates are in the CRL too, when the server holds the CA
//! key; with the CA offline, the journal is what carries them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::store::{AdminChange, KeyRecord, RevokedCertificate, StateRecord, Store, StoreError};

/// The journal's file name, in the CRL file's directory.
const FILE_NAME: &str = "access-journal.json";

/// The version this server writes and reads.
const VERSION: u32 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
    /// Revoked client certificates: the CRL carries them too, but only a server holding
    /// the CA key writes a CRL (with the CA offline this is their only carrier).
    #[serde(default)]
    revoked_certificates: Vec<CertificateEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateEntry {
    serial: String,
    reason: String,
    revoked_at: i64,
    revoked_by: String,
    /// The issuer whose certificate of this serial is revoked (lower-case hex SHA-256 of
    /// its name's DER); absent: of every issuer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    issuer: String,
    /// The issuer's name (RFC 4514), for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    issuer_name: String,
    /// The holder's SPIFFE ID, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    holder: String,
    /// The certificate's key (lower-case hex SHA-256 of its SubjectPublicKeyInfo), when
    /// known: a key revoked as compromised is not certified again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key_fingerprint: String,
}

impl CertificateEntry {
    fn of(record: &RevokedCertificate) -> Self {
        Self {
            serial: record.serial.clone(),
            reason: record.reason_name.clone(),
            revoked_at: record.revoked_at,
            revoked_by: record.revoked_by.clone(),
            issuer: record.issuer.clone(),
            issuer_name: record.issuer_name.clone(),
            holder: record.holder.clone(),
            key_fingerprint: hex::encode(&record.key_fingerprint),
        }
    }

    /// The revocation, if the entry reads as one a server writes (a serial in its one
    /// form, a known reason, an issuer that is a SHA-256 in hex or none, an issuer name
    /// that reads as an RFC 4514 name, a holder that is a SPIFFE ID of a principal in its
    /// one spelling), or which of its fields does not.
    fn record(&self) -> Result<RevokedCertificate, &'static str> {
        let serial = crate::identity::canonical_serial(&self.serial)
            .ok()
            .filter(|serial| *serial == self.serial)
            .ok_or("its serial is not in its one form (lower-case hex, no leading zeros)")?;
        let reason = crate::pki::parse_reason(&self.reason).ok_or(
            "its reason is not a CRL reason code's name (keyCompromise, superseded, …) as \
             the server writes it",
        )?;
        let sha256_or_none = |v: &str| {
            v.is_empty()
                || (v.len() == 64
                    && v.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        };
        if !sha256_or_none(&self.issuer) {
            return Err("its issuer is not the lower-case hex SHA-256 of the issuer name's DER");
        }
        if !sha256_or_none(&self.key_fingerprint) {
            return Err(
                "its keyFingerprint is not the lower-case hex SHA-256 of a SubjectPublicKeyInfo",
            );
        }
        if !self.issuer_name.is_empty() && crate::dn::NameKey::parse(&self.issuer_name).is_err() {
            return Err("its issuerName is not an RFC 4514 distinguished name");
        }
        if !self.holder.is_empty()
            && (!crate::identity::Principal::is_canonical_id(&self.holder)
                || self.holder.ends_with("/server"))
        {
            return Err(
                "its holder is not the SPIFFE ID of a principal in its one spelling \
                 (spiffe://<trust domain>/state/<STATE>/node/<name>, …)",
            );
        }
        Ok(RevokedCertificate {
            serial,
            reason: reason as u32,
            reason_name: self.reason.clone(),
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by.clone(),
            issuer: self.issuer.clone(),
            issuer_name: self.issuer_name.clone(),
            holder: self.holder.clone(),
            key_fingerprint: hex::decode(&self.key_fingerprint).unwrap_or_default(),
        })
    }

    /// Its revocation's key in the store ([`RevokedCertificate::key`]).
    fn key(&self) -> String {
        crate::store::revocation_key(&self.serial, &self.issuer)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateEntry {
    state: String,
    suspended: bool,
    enrolled_at: i64,
    changed_at: i64,
    /// The record's revision ([`StateRecord::revision`]; 0 in journals written before
    /// it).
    #[serde(default)]
    revision: u64,
}

impl StateEntry {
    fn of(record: &StateRecord) -> Self {
        Self {
            state: record.state.clone(),
            suspended: record.suspended,
            enrolled_at: record.enrolled_at,
            changed_at: record.changed_at,
            revision: record.revision,
        }
    }

    /// Whether this status is newer than `held`'s: changed later; or at the same second
    /// by a later revision (a suspension and a reinstatement in one second of one
    /// history); or at the same second and revision to a suspension (two histories:
    /// the suspension fails safe).
    fn newer_than(&self, held: &StateEntry) -> bool {
        (held.changed_at, held.revision) < (self.changed_at, self.revision)
            || (held.changed_at == self.changed_at
                && held.revision == self.revision
                && self.suspended
                && !held.suspended)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    key_id: String,
    state: String,
    public_key: String,
    valid_from: i64,
    valid_until: i64,
    registered_at: i64,
    revoked_at: i64,
    reason: String,
}

impl KeyEntry {
    fn of(record: &KeyRecord) -> Self {
        Self {
            key_id: record.key_id.clone(),
            state: record.state.clone(),
            public_key: B64.encode(&record.public_key),
            valid_from: record.valid_from,
            valid_until: record.valid_until,
            registered_at: record.registered_at,
            revoked_at: record.revoked_at,
            reason: record.revocation_reason.clone(),
        }
    }

    /// The key's whole record, revoked, for a store that does not know the key.
    fn record(&self) -> Option<KeyRecord> {
        let public_key = B64.decode(&self.public_key).ok()?;
        let public = crate::signing::PublicKey::from_raw(&public_key).ok()?;
        (public.key_id() == self.key_id).then(|| KeyRecord {
            revoked_at: self.revoked_at,
            revocation_reason: self.reason.clone(),
            ..KeyRecord::new(
                &self.key_id,
                &self.state,
                &public_key,
                self.valid_from,
                self.valid_until,
                self.registered_at,
            )
        })
    }
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

/// The journal beside `crl`, or `None` if there is none.
/// Refuses a journal beside `crl` that is there but cannot be read: at start, before
/// a store is made.
pub(crate) fn check(crl: &Path) -> Result<(), JournalError> {
    read(crl).map(drop)
}

fn read(crl: &Path) -> Result<Option<Journal>, JournalError> {
    let path = path(crl);
    let unreadable = |why: String| JournalError::Unreadable {
        path: path.display().to_string(),
        why,
    };
    // Past a byte-order mark (an editor's), as every file Tidemark reads.
    let text = match crate::files::read_text(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let journal: Journal = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if journal.version != VERSION {
        return Err(unreadable(format!(
            "it is version {}, and this server reads version {VERSION}",
            journal.version
        )));
    }
    Ok(Some(plausible(journal, &path)))
}

/// Seconds a time in the journal may lie ahead of the server's clock (clock skew).
const MAX_AHEAD: i64 = 300;

/// The journal without entries no server writes — a state code not in its one spelling
/// (upper-case ISO 3166-1 alpha-3), a time ahead of the clock (it would outrank every
/// later change) or at or before 1970, a key id that is not its key's, a serial not in
/// its one form, an unknown reason, an issuer that is not a SHA-256 in hex or an issuer
/// name that is not an RFC 4514 name, a holder that is not a principal's SPIFFE ID in its
/// one spelling —, each named in a warning and set aside, with why (the field at fault),
/// in `access-journal.refused.jsonl` beside it (an edit is not lost when the journal is
/// next rewritten). What is left may only restrict.
fn plausible(mut journal: Journal, path: &Path) -> Journal {
    let latest = time::OffsetDateTime::now_utc().unix_timestamp() + MAX_AHEAD;
    let time_ok = |t: i64| (1..=latest).contains(&t);
    let state_ok = |s: &str| crate::country::CountryCode::parse(s).is_ok();
    let mut refused: Vec<serde_json::Value> = Vec::new();
    let mut refuse = |entry: serde_json::Value, why: &str| {
        tracing::warn!(file = %path.display(), %entry, "an access journal entry is ignored and set aside: {why}");
        refused.push(serde_json::json!({"entry": entry, "why": why}));
    };
    journal.states.retain(|s| {
        let why = if !state_ok(&s.state) {
            Some("its state is not an upper-case ISO 3166-1 alpha-3 code")
        } else if !time_ok(s.changed_at) {
            Some("its time is not one the server writes (after 1970, not ahead of the clock)")
        } else {
            None
        };
        if let Some(why) = why {
            refuse(serde_json::to_value(s).unwrap_or_default(), why);
        }
        why.is_none()
    });
    journal.revoked_keys.retain(|k| {
        let why = if !state_ok(&k.state) {
            Some("its state is not an upper-case ISO 3166-1 alpha-3 code")
        } else if !time_ok(k.revoked_at) {
            Some("its revocation time is not one the server writes (after 1970, not ahead of the clock)")
        } else if k.record().is_none() {
            Some("its key id is not the lower-case hex SHA-256 of its public key's SubjectPublicKeyInfo")
        } else {
            None
        };
        if let Some(why) = why {
            refuse(serde_json::to_value(k).unwrap_or_default(), why);
        }
        why.is_none()
    });
    journal.revoked_certificates.retain(|c| {
        let why = if time_ok(c.revoked_at) {
            c.record().err()
        } else {
            Some("its revocation time is not one the server writes (after 1970, not ahead of the clock)")
        };
        if let Some(why) = why {
            refuse(serde_json::to_value(c).unwrap_or_default(), why);
        }
        why.is_none()
    });
    if !refused.is_empty() {
        set_aside(path, &refused);
    }
    journal
}

/// Appends `refused` entries, one JSON line each, to the file beside the journal that
/// keeps what it ignored.
fn set_aside(path: &Path, refused: &[serde_json::Value]) {
    use std::io::Write as _;
    let aside = path.with_file_name("access-journal.refused.jsonl");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&aside)
        .and_then(|mut file| {
            for entry in refused {
                writeln!(file, "{entry}")?;
            }
            file.sync_data()
        });
    if let Err(e) = written {
        tracing::error!(file = %aside.display(), error = %e, "the ignored access journal entries could not be set aside");
    }
}

/// Whether there is a journal beside `crl`.
pub(crate) fn exists(crl: &Path) -> bool {
    path(crl).exists()
}

/// Writes the journal beside `crl` from the store, merged with what the file holds that
/// is newer (see the module's comment), atomically (a temporary file renamed over it). A
/// file that cannot be read is replaced.
pub(crate) fn write(store: &Store, crl: &Path) -> Result<(), JournalError> {
    let held = read(crl).ok().flatten().unwrap_or_default();
    let mut states: BTreeMap<String, StateEntry> = held
        .states
        .into_iter()
        .map(|s| (s.state.clone(), s))
        .collect();
    for record in store.states()? {
        let entry = StateEntry::of(&record);
        // The file's entry stays where it is newer (another server's, or one this store
        // lost to a restore: a restore drill must not write a live server's later
        // reinstatement back to the suspension its older copy holds); the store's own
        // record wins otherwise. Only a suspension is ever taken from the file.
        match states.get(&entry.state) {
            Some(file) if file.newer_than(&entry) => {}
            _ => {
                states.insert(entry.state.clone(), entry);
            }
        }
    }
    let mut keys: BTreeMap<String, KeyEntry> = held
        .revoked_keys
        .into_iter()
        .map(|k| (k.key_id.clone(), k))
        .collect();
    for record in store.signing_keys(None)? {
        if record.revoked_at == 0 {
            continue;
        }
        let entry = KeyEntry::of(&record);
        match keys.get(&entry.key_id) {
            Some(file) if file.revoked_at <= entry.revoked_at => {}
            _ => {
                keys.insert(entry.key_id.clone(), entry);
            }
        }
    }
    let mut certificates: BTreeMap<String, CertificateEntry> = held
        .revoked_certificates
        .into_iter()
        .map(|c| (c.key(), c))
        .collect();
    for record in store.revoked_certificates()? {
        let entry = CertificateEntry::of(&record);
        // The file's entry stays where it reports the key compromised and the store's
        // does not (yet: a store restored from before the report).
        let file_knows_more = certificates
            .get(&entry.key())
            .and_then(|file| file.record().ok())
            .is_some_and(|file| record.learning_compromise(&file).is_some());
        if file_knows_more {
            continue;
        }
        certificates.insert(entry.key(), entry);
    }
    let journal = Journal {
        version: VERSION,
        states: states.into_values().collect(),
        revoked_keys: keys.into_values().collect(),
        revoked_certificates: certificates.into_values().collect(),
    };
    let path = path(crl);
    let unwritable = |e: std::io::Error| JournalError::Unwritable {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let mut text = serde_json::to_string_pretty(&journal).unwrap_or_default();
    text.push('\n');
    crate::files::replace(&path, text.as_bytes()).map_err(unwritable)
}

/// What the journal beside `crl` holds that the store lacks and that restricts (see the
/// module's comment), as administrative changes to apply; and the states the journal
/// has reinstated or enrolled later than the store's record, which are not applied.
pub(crate) fn newer_than_store(
    store: &Store,
    crl: &Path,
) -> Result<(Vec<AdminChange>, Vec<String>), JournalError> {
    let Some(journal) = read(crl)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut changes = Vec::new();
    let mut not_taken = Vec::new();
    for entry in journal.states {
        let held = store.state(&entry.state)?;
        let newer = held
            .as_ref()
            .is_none_or(|held| entry.newer_than(&StateEntry::of(held)));
        if !newer
            || held
                .as_ref()
                .is_some_and(|h| h.suspended == entry.suspended)
        {
            continue;
        }
        if entry.suspended {
            changes.push(AdminChange::State(StateRecord {
                enrolled_at: held.map_or(0, |h| h.enrolled_at),
                state: entry.state,
                suspended: true,
                changed_at: entry.changed_at,
                revision: 0,
            }));
        } else {
            not_taken.push(entry.state);
        }
    }
    for entry in journal.revoked_keys {
        match store.signing_key(&entry.key_id)? {
            Some(held) if held.revoked_at != 0 && held.revoked_at <= entry.revoked_at => {}
            Some(_) => changes.push(AdminChange::RevokeKey {
                key_id: entry.key_id,
                at: entry.revoked_at,
                reason: entry.reason,
            }),
            // Registered after the backup: recorded as registered, then revoked (two
            // records, as it happened), so it is never registered again as a valid key.
            None => {
                if let Some(record) = entry.record() {
                    changes.push(AdminChange::RegisterKey(KeyRecord {
                        revoked_at: 0,
                        revocation_reason: String::new(),
                        ..record
                    }));
                    changes.push(AdminChange::RevokeKey {
                        key_id: entry.key_id,
                        at: entry.revoked_at,
                        reason: entry.reason,
                    });
                }
            }
        }
    }
    let known: BTreeMap<String, RevokedCertificate> = store
        .revoked_certificates()?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    for entry in journal.revoked_certificates {
        let Ok(record) = entry.record() else {
            continue;
        };
        // Not in the store, for this issuer nor for every issuer; or there, but the
        // journal reports its key compromised and the store does not.
        let stored = known
            .get(&record.key())
            .or_else(|| known.get(&record.serial));
        if stored.is_none_or(|stored| stored.learning_compromise(&record).is_some()) {
            changes.push(AdminChange::RevokeCertificate(record));
        }
    }
    Ok((changes, not_taken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::StoreConfig, signing::SigningKey};

    fn state(code: &str, suspended: bool, changed_at: i64) -> StateRecord {
        StateRecord {
            state: code.to_owned(),
            suspended,
            enrolled_at: 1,
            changed_at,
            revision: 0,
        }
    }

    fn key(state: &str) -> KeyRecord {
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key();
        KeyRecord::new(public.key_id(), state, public.raw(), 1, 0, 1)
    }

    fn store(dir: &Path) -> Store {
        Store::open(&StoreConfig::in_dir(dir)).unwrap()
    }

    /// A suspension and a reinstatement in one second of one store: the journal written
    /// after each holds the reinstatement, and the next start carries nothing back (an
    /// outside pass saw such a state suspended again at every restart).
    #[test]
    fn a_reinstatement_in_the_second_of_its_suspension_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("crl.pem");
        let store = store(&dir.path().join("store"));
        for suspended in [false, true, false] {
            store.put_state(&state("PHL", suspended, 20)).unwrap();
            write(&store, &crl).unwrap();
        }
        let (changes, _) = newer_than_store(&store, &crl).unwrap();
        assert!(changes.is_empty(), "{changes:#?}");
        assert_eq!(store.state("PHL").unwrap().unwrap().revision, 3);
    }

    /// The journal only restricts, and only where it is newer than the store.
    #[test]
    fn a_journal_adds_only_newer_restrictions() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("crl.pem");
        let (a, b, c) = (key("THA"), key("THA"), key("THA"));
        // Written by a later history: THA suspended at 50, AUS suspended at 20 (a tie
        // with the store's reinstatement), IDN reinstated at 40, FRA reinstated at 45;
        // keys a, b, c revoked as of 30, 20 and 10 (c unknown to the store).
        let later = store(&dir.path().join("later"));
        for record in [
            state("THA", true, 50),
            state("AUS", true, 20),
            state("IDN", false, 40),
            state("FRA", false, 45),
        ] {
            later.put_state(&record).unwrap();
        }
        for (k, at) in [(&a, 30), (&b, 20), (&c, 10)] {
            later.register_signing_key(k).unwrap();
            later
                .revoke_key_for_tests(&k.key_id, at, "key-compromise")
                .unwrap();
        }
        write(&later, &crl).unwrap();
        // The store: THA active since 10, AUS reinstated at 20, IDN suspended at 60
        // (newer: stays), FRA suspended at 10 (the journal's reinstatement is not taken);
        // key a valid, key b revoked as of 5 (earlier: stays).
        let store = store(&dir.path().join("restored"));
        for record in [
            state("THA", false, 10),
            state("AUS", false, 20),
            state("IDN", true, 60),
            state("FRA", true, 10),
        ] {
            store.put_state(&record).unwrap();
        }
        store.register_signing_key(&a).unwrap();
        store.register_signing_key(&b).unwrap();
        store
            .revoke_key_for_tests(&b.key_id, 5, "superseded")
            .unwrap();
        let (changes, not_taken) = newer_than_store(&store, &crl).unwrap();
        let said = format!("{changes:#?}");
        assert_eq!(changes.len(), 5, "{said}");
        assert!(
            matches!(&changes[0], AdminChange::State(s) if s.state == "AUS" && s.suspended),
            "{said}"
        );
        assert!(
            matches!(&changes[1], AdminChange::State(s) if s.state == "THA" && s.suspended),
            "{said}"
        );
        assert!(
            changes.iter().any(|change| matches!(change,
                AdminChange::RevokeKey { key_id, at: 30, .. } if *key_id == a.key_id)),
            "{said}"
        );
        // The unknown key: registered, then revoked, two records as it happened.
        let at = changes
            .iter()
            .position(
                |change| matches!(change, AdminChange::RegisterKey(k) if k.key_id == c.key_id),
            )
            .expect(&said);
        assert!(
            matches!(&changes[at + 1], AdminChange::RevokeKey { key_id, at: 10, .. } if *key_id == c.key_id),
            "{said}"
        );
        assert_eq!(not_taken, ["FRA"]);
        // Writing from the restored store keeps what the file holds that is newer.
        write(&store, &crl).unwrap();
        let (again, _) = newer_than_store(&store, &crl).unwrap();
        assert_eq!(again.len(), 5, "{again:#?}");
        // Saved by an editor with a byte-order mark first: read all the same.
        let text = std::fs::read_to_string(path(&crl)).unwrap();
        std::fs::write(path(&crl), format!("\u{feff}{text}")).unwrap();
        assert_eq!(newer_than_store(&store, &crl).unwrap().0.len(), 5);
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
        assert!(newer_than_store(&store, &crl).unwrap().0.is_empty());
    }

    /// The journal beside `crl` once `store` has written it.
    fn written_back(store: &Store, crl: &Path) -> Journal {
        write(store, crl).unwrap();
        serde_json::from_str(&std::fs::read_to_string(path(crl)).unwrap()).unwrap()
    }

    /// A store written back to the journal keeps the file's newer entry of a state, a
    /// reinstatement too (a restore drill must not turn a live server's reinstatement
    /// back into the suspension its older copy holds); none is taken into the store.
    #[test]
    fn writing_keeps_the_files_newer_reinstatement() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("crl.pem");
        let store = store(&dir.path().join("store"));
        let journal = serde_json::json!({
            "version": 1,
            "states": [
                {"state": "IDN", "suspended": false, "enrolledAt": 1, "changedAt": 200, "revision": 3},
            ],
            "revokedKeys": [],
        });
        std::fs::write(path(&crl), journal.to_string()).unwrap();
        store.put_state(&state("IDN", true, 100)).unwrap();
        assert!(newer_than_store(&store, &crl).unwrap().0.is_empty());
        let written = written_back(&store, &crl);
        assert!(
            written
                .states
                .iter()
                .any(|s| s.state == "IDN" && !s.suspended && s.revision == 3),
            "{written:?}"
        );
        assert!(
            store.state("IDN").unwrap().unwrap().suspended,
            "the store keeps its own"
        );
    }

    /// A key reported compromised after its certificate was revoked for another reason
    /// (for every issuer, by serial; then presented, for its issuer) stays reported when
    /// a store from before the report — a restore — writes the journal back and reads
    /// it: the file's entry is kept, and carried into the store as the same revocation
    /// with the reason keyCompromise and the key.
    #[test]
    fn a_compromise_reported_after_a_revocation_survives_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("crl.pem");
        let revocation = |issuer: &str, reason: &str, fingerprint: &[u8]| RevokedCertificate {
            serial: "1fa0".to_owned(),
            reason_name: reason.to_owned(),
            reason: crate::pki::parse_reason(reason).unwrap() as u32,
            revoked_at: 100,
            revoked_by: "spiffe://tidemark.local/operator/ops".to_owned(),
            issuer: issuer.to_owned(),
            key_fingerprint: fingerprint.to_vec(),
            ..RevokedCertificate::default()
        };
        let issuer = "ab".repeat(32);
        // The live store: superseded by serial, then the certificate presented as
        // compromised — one revocation, now keyCompromise with the key, time kept.
        let live = store(&dir.path().join("live"));
        live.revoke_certificate_for_tests(revocation("", "superseded", &[]))
            .unwrap();
        let upgraded = live
            .revoke_certificate_for_tests(RevokedCertificate {
                revoked_at: 200,
                ..revocation(&issuer, "key-compromise", &[7; 32])
            })
            .unwrap();
        assert_eq!(
            (
                upgraded.key(),
                upgraded.reason_name.as_str(),
                upgraded.revoked_at
            ),
            ("1fa0".to_owned(), "key-compromise", 100)
        );
        assert_eq!(upgraded.key_fingerprint, [7; 32]);
        assert_eq!(live.revoked_certificates().unwrap().len(), 1);
        write(&live, &crl).unwrap();
        // The store from before the report writes back: the file's entry stays.
        let older = store(&dir.path().join("older"));
        older
            .revoke_certificate_for_tests(revocation("", "superseded", &[]))
            .unwrap();
        let written = written_back(&older, &crl);
        assert!(
            written
                .revoked_certificates
                .iter()
                .any(|c| c.reason == "key-compromise" && c.key_fingerprint == "07".repeat(32)),
            "{written:?}"
        );
        // And reads it: the compromise is carried, the revocation made so in place.
        let (changes, _) = newer_than_store(&older, &crl).unwrap();
        let [AdminChange::RevokeCertificate(carried)] = changes.as_slice() else {
            panic!("{changes:#?}");
        };
        let stands = older.revoke_certificate_for_tests(carried.clone()).unwrap();
        assert_eq!(
            (
                stands.reason_name.as_str(),
                stands.revoked_at,
                stands.key_fingerprint.as_slice()
            ),
            ("key-compromise", 100, [7u8; 32].as_slice())
        );
        assert!(
            newer_than_store(&older, &crl).unwrap().0.is_empty(),
            "carried once"
        );
    }

    /// Entries no server writes are ignored: a key "revoked" at 0 (it would register a
    /// valid key), a time ahead of the clock (it would outrank every later change); and
    /// a store's suspension is written over a file's later reinstatement.
    #[test]
    fn a_journal_entry_no_server_writes_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("crl.pem");
        let store = store(&dir.path().join("store"));
        let forged = key("THA");
        let far = time::OffsetDateTime::now_utc().unix_timestamp() + 3_600;
        let journal = serde_json::json!({
            "version": 1,
            "states": [
                {"state": "FRA", "suspended": true, "enrolledAt": 1, "changedAt": far},
                {"state": "THA", "suspended": false, "enrolledAt": 1, "changedAt": far},
                {"state": "idn", "suspended": true, "enrolledAt": 1, "changedAt": 100},
            ],
            "revokedKeys": [KeyEntry { revoked_at: 0, ..KeyEntry::of(&forged) }],
            "revokedCertificates": [
                {"serial": "a1", "reason": "unspecified", "revokedAt": -1, "revokedBy": "x"},
                {"serial": "A1", "reason": "unspecified", "revokedAt": 100, "revokedBy": "x"},
                {"serial": "a2", "reason": "Unspecified", "revokedAt": 100, "revokedBy": "x"},
                {"serial": "a3", "reason": "unspecified", "revokedAt": 100, "revokedBy": "x",
                 "issuer": "AB".repeat(32)},
                {"serial": "a4", "reason": "unspecified", "revokedAt": 100, "revokedBy": "x",
                 "holder": "spiffe://TIDEMARK.LOCAL/state/AUS/node/x"},
                {"serial": "a5", "reason": "unspecified", "revokedAt": 100, "revokedBy": "x",
                 "holder": "spiffe://tidemark.local/state/AUS/node/.."},
                {"serial": "a6", "reason": "unspecified", "revokedAt": 100, "revokedBy": "x",
                 "issuerName": "CN=a,,="},
            ],
        });
        std::fs::write(path(&crl), journal.to_string()).unwrap();
        assert!(newer_than_store(&store, &crl).unwrap().0.is_empty());
        // Nothing refused is lost: each is set aside, with why (the field at fault).
        let aside =
            std::fs::read_to_string(dir.path().join("access-journal.refused.jsonl")).unwrap();
        assert_eq!(aside.lines().count(), 11, "{aside}");
        for why in [
            "upper-case ISO 3166-1",
            "its serial is not",
            "its reason is not",
            "its issuer is not",
            "its issuerName is not",
        ] {
            assert!(aside.contains(why), "{why}: {aside}");
        }
        assert_eq!(aside.matches("its holder is not").count(), 2, "{aside}");
        // THA suspended now in the store: written over the file's "reinstated" entry.
        store.put_state(&state("THA", true, 100)).unwrap();
        let written = written_back(&store, &crl);
        assert!(
            written
                .states
                .iter()
                .any(|s| s.state == "THA" && s.suspended),
            "{written:?}"
        );
        assert!(written.revoked_keys.is_empty(), "{written:?}");
    }
}
