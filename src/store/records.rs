//! What the store keeps in its tables, as protobuf messages (compact, and readable by
//! later versions that add fields).

use prost::Message;

use crate::report::ReportSummary;

/// What kind of envelope is appended: stored as its code in `EnvelopeRecord.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A new version of a report (1).
    Report,
    /// The retraction of a report (2).
    Retraction,
}

impl EnvelopeKind {
    /// The code stored in `EnvelopeRecord.kind`.
    pub fn code(self) -> u32 {
        match self {
            Self::Report => 1,
            Self::Retraction => 2,
        }
    }

    /// `report` or `retraction`, as receipts and the API name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Retraction => "retraction",
        }
    }

    /// The kind a stored code names.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Report),
            2 => Some(Self::Retraction),
            _ => None,
        }
    }
}

/// One accepted envelope, keyed by its sequence number.
#[derive(Clone, PartialEq, Message)]
pub struct EnvelopeRecord {
    /// The envelope exactly as verified (encoded `tidemark.v1.Envelope`).
    #[prost(bytes = "vec", tag = "1")]
    pub envelope: Vec<u8>,
    #[prost(string, tag = "2")]
    pub state: String,
    /// The report's UUID, 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub report_id: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub version: u32,
    /// Seconds since the Unix epoch when the batch holding it committed.
    #[prost(int64, tag = "5")]
    pub accepted_at: i64,
    /// SHA-256 of PAE(payload_type, payload).
    #[prost(bytes = "vec", tag = "6")]
    pub digest: Vec<u8>,
    /// 1: report, 2: retraction.
    #[prost(uint32, tag = "7")]
    pub kind: u32,
    /// `tidemark.v1.Category` of the report.
    #[prost(int32, tag = "8")]
    pub category: i32,
    /// The key whose signature was accepted (the first valid one).
    #[prost(string, tag = "9")]
    pub key_id: String,
    /// The state's other keys whose signatures were valid too: the envelope stays trusted
    /// while any of its keys was not revoked as of its acceptance.
    #[prost(string, repeated, tag = "10")]
    pub also_signed_by: Vec<String>,
}

impl EnvelopeRecord {
    /// What kind of envelope this is; `None` for a code this build does not know.
    pub fn kind(&self) -> Option<EnvelopeKind> {
        EnvelopeKind::from_code(self.kind)
    }

    /// Every key whose valid signature it carries.
    pub fn signed_by(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key_id.as_str()).chain(self.also_signed_by.iter().map(String::as_str))
    }
}

/// The version history of one report, keyed by its UUID.
#[derive(Clone, PartialEq, Message)]
pub struct ReportHead {
    /// The owning state.
    #[prost(string, tag = "1")]
    pub state: String,
    #[prost(int32, tag = "2")]
    pub category: i32,
    #[prost(bool, tag = "3")]
    pub retracted: bool,
    /// Every accepted version, in order; the last is the latest.
    #[prost(message, repeated, tag = "4")]
    pub versions: Vec<VersionRef>,
    /// Facts of the latest report version, for filtering without decoding envelopes.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<ReportSummary>,
    /// When version 1 was accepted (its contribution counts from then).
    #[prost(int64, tag = "6")]
    pub first_accepted_at: i64,
    /// When the latest envelope (version or retraction) was accepted.
    #[prost(int64, tag = "7")]
    pub changed_at: i64,
    /// Its latest version was signed with a key revoked as of that version's acceptance
    /// or earlier (a compromise found later): the exchange no longer vouches for it, so
    /// the report does not count as a contribution (give-to-get) until a new version is
    /// accepted.
    #[prost(bool, tag = "8")]
    pub contribution_revoked: bool,
    /// It was retracted by an envelope signed with a key revoked as of that retraction's
    /// acceptance or earlier: the retraction stands for readers, but the state may
    /// overturn it with the next version (a report, or a retraction of its own).
    #[prost(bool, tag = "9")]
    pub retraction_revoked: bool,
}

impl ReportHead {
    /// Sequence number of the latest envelope.
    pub fn latest_sequence(&self) -> u64 {
        self.versions.last().map_or(0, |v| v.sequence)
    }

    pub fn latest_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

/// One audited access or refusal.
#[derive(Clone, PartialEq, Message)]
pub struct AuditRecord {
    #[prost(int64, tag = "1")]
    pub at: i64,
    /// The caller's SPIFFE ID.
    #[prost(string, tag = "2")]
    pub principal: String,
    /// The caller's state, if any.
    #[prost(string, tag = "3")]
    pub state: String,
    /// "query", "sync", "refused", "register-key", …
    #[prost(string, tag = "4")]
    pub action: String,
    /// The request, as JSON.
    #[prost(string, tag = "5")]
    pub detail: String,
    /// How many reports were returned in all.
    #[prost(uint64, tag = "6")]
    pub count: u64,
    /// Per owning state: how many of its reports, and which (first 1,000). An aggregate
    /// lists every state in its scope, with 0 for those none of whose reports its filter
    /// matched, so that its log entry (which names them) does not say whose did.
    #[prost(message, repeated, tag = "7")]
    pub owners: Vec<OwnerReads>,
    /// A read recorded before its data flowed and not yet completed with what it
    /// returned (still running, or cut short by a crash).
    #[prost(bool, tag = "8")]
    pub in_progress: bool,
    /// 16 random bytes: the transparency log commits to SHA-256(salt ‖ detail), so that
    /// nobody can guess a request from its log entry. Empty for records written before
    /// the log existed.
    #[prost(bytes = "vec", tag = "9")]
    pub detail_salt: Vec<u8>,
    /// The report categories a read asked for (labels, space-separated); empty for
    /// anything else.
    #[prost(string, tag = "10")]
    pub category: String,
    /// When the record was last written (a read's record is rewritten as it goes on),
    /// Unix seconds; 0 for records written before this field existed.
    #[prost(int64, tag = "11")]
    pub logged_at: i64,
    /// The log entry names the owners but not the counts (an aggregate: its counts are
    /// exact, and the analyst knows its filter, so published they would undo the
    /// disclosure control). False for records written before this field existed.
    #[prost(bool, tag = "12")]
    pub counts_withheld: bool,
    /// A backup: the copy's size in bytes, and how many of them its operator was sent
    /// (equal once it was sent whole). 0 for any other record, and for backups recorded
    /// before these fields existed.
    #[prost(uint64, tag = "13")]
    pub copy_bytes: u64,
    #[prost(uint64, tag = "14")]
    pub copy_bytes_sent: u64,
}

impl AuditRecord {
    /// The same record, marked as a read still in progress.
    #[must_use]
    pub fn in_progress(self) -> Self {
        Self {
            in_progress: true,
            ..self
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct OwnerReads {
    #[prost(string, tag = "1")]
    pub owner: String,
    #[prost(uint64, tag = "2")]
    pub count: u64,
    /// 16-byte report UUIDs.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub report_ids: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct VersionRef {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub digest: Vec<u8>,
    /// `tidemark.v1.SharingScope` this version was given by its owner (0 for a
    /// retraction, and for versions stored before versions kept their own scope).
    #[prost(int32, tag = "4")]
    pub scope: i32,
    /// States of a listed-states scope of this version.
    #[prost(string, repeated, tag = "5")]
    pub listed_states: Vec<String>,
}

/// A registered report-signing key, keyed by its key id.
#[derive(Clone, PartialEq, Message)]
pub struct KeyRecord {
    #[prost(string, tag = "1")]
    /// The key id: lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo.
    pub key_id: String,
    #[prost(string, tag = "2")]
    /// The state the key signs for.
    pub state: String,
    /// The 32 raw Ed25519 public key bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub public_key: Vec<u8>,
    #[prost(int64, tag = "4")]
    /// Unix seconds from which it signs.
    pub valid_from: i64,
    /// 0: no end.
    #[prost(int64, tag = "5")]
    pub valid_until: i64,
    /// 0: not revoked; otherwise the time from which the key is no longer trusted.
    #[prost(int64, tag = "6")]
    pub revoked_at: i64,
    #[prost(string, tag = "7")]
    /// Why it was revoked.
    pub revocation_reason: String,
    #[prost(int64, tag = "8")]
    /// Unix seconds when it was registered.
    pub registered_at: i64,
}

impl KeyRecord {
    /// A new, unrevoked registration made at `now`; `valid_until` 0 means no end.
    pub fn new(
        key_id: &str,
        state: &str,
        public_key: &[u8],
        valid_from: i64,
        valid_until: i64,
        now: i64,
    ) -> Self {
        Self {
            key_id: key_id.to_owned(),
            state: state.to_owned(),
            public_key: public_key.to_vec(),
            valid_from,
            valid_until,
            revoked_at: 0,
            revocation_reason: String::new(),
            registered_at: now,
        }
    }

    /// Whether the key may sign now, at `now` (seconds since the epoch): within its
    /// validity and not revoked. A stored revocation takes effect at once, whatever time it
    /// gives (a key revoked without a time of compromise gives the second after its
    /// revocation was stored, see `store::admin`); its time says which envelopes accepted
    /// before stay valid.
    pub fn active_at(&self, now: i64) -> bool {
        now >= self.valid_from
            && (self.valid_until == 0 || now < self.valid_until)
            && self.revoked_at == 0
    }
}

/// A revoked certificate, keyed by [`RevokedCertificate::key`].
#[derive(Clone, PartialEq, Message)]
pub struct RevokedCertificate {
    #[prost(string, tag = "1")]
    pub serial: String,
    /// RFC 5280 reason code.
    #[prost(uint32, tag = "2")]
    pub reason: u32,
    #[prost(string, tag = "3")]
    pub reason_name: String,
    #[prost(int64, tag = "4")]
    pub revoked_at: i64,
    /// The operator who revoked it.
    #[prost(string, tag = "5")]
    pub revoked_by: String,
    /// The issuer whose certificate of this serial is revoked
    /// ([`crate::identity::issuer_id`]); empty: the certificates of this serial of every
    /// issuer (an operator's revocation naming no issuer, and every revocation made
    /// before issuers were kept).
    #[prost(string, tag = "6")]
    pub issuer: String,
    /// The issuer's distinguished name as people read it (RFC 4514), for display.
    #[prost(string, tag = "7")]
    pub issuer_name: String,
    /// Its holder's SPIFFE ID, when known: from the certificate an operator presented,
    /// or this server's record of the certificates it issued. Names the state whose
    /// access list shows the revocation.
    #[prost(string, tag = "8")]
    pub holder: String,
    /// SHA-256 of the revoked certificate's SubjectPublicKeyInfo, when known (the
    /// operator presented the certificate, or this server issued it): a key revoked as
    /// compromised is not certified again ([`super::Store::compromised_key`]).
    #[prost(bytes = "vec", tag = "9")]
    pub key_fingerprint: Vec<u8>,
}

impl RevokedCertificate {
    /// Its key in the store: the serial, and `@` and the issuer when it names one.
    pub fn key(&self) -> String {
        revocation_key(&self.serial, &self.issuer)
    }

    /// Whether it says its certificate's key was compromised (RFC 5280 keyCompromise).
    pub(crate) fn compromised(&self) -> bool {
        self.reason_name == "key-compromise"
    }

    /// This revocation as it stands once the same certificate is revoked `again`, if
    /// that adds to a compromise: the reason keyCompromise that `again` reports (the
    /// CRL then says so; the revocation time stays this one's), or, for a compromise,
    /// the key's fingerprint that this one lacked and `again` has (the operator presented
    /// the certificate, for whatever reason) — so that the key is not certified again.
    pub(crate) fn learning_compromise(&self, again: &Self) -> Option<Self> {
        let adds_reason = again.compromised() && !self.compromised();
        let adds_key = (self.compromised() || again.compromised())
            && self.key_fingerprint.is_empty()
            && !again.key_fingerprint.is_empty();
        let (reason, reason_name) = if adds_reason {
            (again.reason, again.reason_name.clone())
        } else {
            (self.reason, self.reason_name.clone())
        };
        (adds_reason || adds_key).then(|| Self {
            reason,
            reason_name,
            key_fingerprint: if adds_key {
                again.key_fingerprint.clone()
            } else {
                self.key_fingerprint.clone()
            },
            holder: if self.holder.is_empty() {
                again.holder.clone()
            } else {
                self.holder.clone()
            },
            ..self.clone()
        })
    }

    /// Its serial, and its issuer when it names one (`1fa0 of CN=Partner CA`).
    pub fn named(&self) -> String {
        if self.issuer.is_empty() {
            self.serial.clone()
        } else {
            format!("{} of {}", self.serial, self.issuer_name)
        }
    }

    /// Whether revocations with these keys ([`Self::key`]) already revoke what it does:
    /// one of its key, or one of its serial naming no issuer.
    pub fn covered_by(&self, keys: &std::collections::HashSet<String>) -> bool {
        keys.contains(&self.key()) || keys.contains(&self.serial)
    }
}

/// The store key of a revocation of `serial` by `issuer` (empty: of every issuer).
pub(crate) fn revocation_key(serial: &str, issuer: &str) -> String {
    if issuer.is_empty() {
        serial.to_owned()
    } else {
        format!("{serial}@{issuer}")
    }
}

/// A state's enrolment, keyed by its ISO alpha-3 code.
#[derive(Clone, PartialEq, Message)]
pub struct StateRecord {
    #[prost(string, tag = "1")]
    /// ISO 3166-1 alpha-3 code.
    pub state: String,
    #[prost(bool, tag = "2")]
    /// Whether its certificates are refused.
    pub suspended: bool,
    #[prost(int64, tag = "3")]
    /// Unix seconds when it was first enrolled.
    pub enrolled_at: i64,
    #[prost(int64, tag = "4")]
    /// Unix seconds of the last change.
    pub changed_at: i64,
    #[prost(uint64, tag = "5")]
    /// How many changes the state's record has had (1 for its first), set as it is
    /// stored: orders two changes of one second (0 for records written before it).
    pub revision: u64,
}

/// A certificate this server issued, keyed by its serial (hex).
#[derive(Clone, PartialEq, Message)]
pub struct IssuedCertificate {
    #[prost(string, tag = "1")]
    pub serial: String,
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
    #[prost(int64, tag = "3")]
    pub not_after: i64,
    #[prost(int64, tag = "4")]
    pub issued_at: i64,
    /// SHA-256 of the certified SubjectPublicKeyInfo (empty for records made before it
    /// was kept).
    #[prost(bytes = "vec", tag = "5")]
    pub key_fingerprint: Vec<u8>,
    /// Its issuer ([`crate::identity::issuer_id`]; empty for records made before it
    /// was kept).
    #[prost(string, tag = "6")]
    pub issuer: String,
}

impl IssuedCertificate {
    /// The record of `peer`'s certificate, issued at `issued_at` (Unix seconds) for the
    /// key of SHA-256 `key_fingerprint` (of its SubjectPublicKeyInfo).
    pub(crate) fn of(
        peer: &crate::identity::PeerIdentity,
        issued_at: i64,
        key_fingerprint: Vec<u8>,
    ) -> Self {
        Self {
            serial: peer.serial().to_owned(),
            spiffe_id: peer.principal().spiffe_id(),
            not_after: peer.not_after(),
            issued_at,
            key_fingerprint,
            issuer: peer
                .certificates()
                .first()
                .map(|c| c.issuer.clone())
                .unwrap_or_default(),
        }
    }

    /// It as a revocation names it; `None` for a record that does not name its issuer.
    pub fn id(&self) -> Option<crate::identity::CertificateId> {
        (!self.issuer.is_empty()).then(|| crate::identity::CertificateId {
            issuer: self.issuer.clone(),
            serial: self.serial.clone(),
        })
    }
}
