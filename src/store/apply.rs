//! Applying one job to a batch's write transaction: an accepted envelope (version
//! rules, the envelope, the report head, its indexes, the aggregate counters and its log
//! leaf) or an audit record (with its by-owner index and its log leaf). The queue that
//! batches jobs is [`super::writer`]; this is what one job does inside the transaction.

use std::sync::Arc;

use prost::Message as _;
use redb::ReadableTable;
use uuid::Uuid;

use super::{
    AUDIT, AUDIT_BY_OWNER, AuditRecord, BUDGETS, BY_DATE, BY_STATE, CONTRIBUTIONS, COUNTERS,
    ENVELOPES, EnvelopeKind, EnvelopeRecord, QUARTERS_BEHIND, REPORTS, ReportHead, SECRETS,
    SEEN_KEYS, StoreError, VersionRef, counters, decode,
    leaves::LeafIndex,
    log::{self, Leaf, LogTables},
};
use crate::{
    country::CountryCode,
    report::{Category, ReportSummary},
};

/// A verified envelope, ready to append.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    /// The envelope exactly as verified (encoded `tidemark.v1.Envelope`).
    pub envelope: Vec<u8>,
    pub state: CountryCode,
    pub report_id: Uuid,
    pub version: u32,
    pub kind: EnvelopeKind,
    /// What queries filter on; `None` for a retraction.
    pub summary: Option<ReportSummary>,
    pub digest: [u8; 32],
    /// SHA-256 of the DSSE payload bytes (what the log entry commits to).
    pub payload_sha256: [u8; 32],
    /// The key of the first valid signature.
    pub key_id: String,
    /// The state's other keys whose signatures on it are valid too (DSSE: each signature
    /// stands alone).
    pub also_signed_by: Vec<String>,
    /// The chain of the client certificate that submitted it, leaf first, by issuer and
    /// serial: checked again when it is stored ([`super::admission`]).
    pub certificates: Vec<crate::identity::CertificateId>,
}

/// The outcome of an append that succeeded: the facts a receipt states (the original
/// facts for a duplicate).
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The envelope's place in the store (1, 2, 3, …).
    pub sequence: u64,
    /// The identical envelope had been accepted before.
    pub duplicate: bool,
    /// SHA-256 of the encoded envelope.
    pub digest: Vec<u8>,
    /// The reporting state.
    pub state: String,
    pub report_id: Uuid,
    pub version: u32,
    /// When its batch committed, Unix seconds.
    pub at: i64,
    pub kind: EnvelopeKind,
    /// The envelope's leaf in the transparency log.
    pub leaf: Leaf,
}

/// An envelope digest as the receipt's shows it: base64, as the command line and every
/// JSON rendering of a receipt write it, so that the two can be compared by eye.
fn digest_text(digest: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Why an append was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error(
        "report {id} version {version} already exists with different content (stored \
         envelope digest {stored}, this one {submitted}, base64 as receipts show them); to \
         change a report, submit version {next}"
    )]
    Conflict {
        id: Uuid,
        version: u32,
        stored: String,
        submitted: String,
        next: u32,
    },
    /// Which state it is not said: a caller that cannot read the report would learn
    /// whose a report id is.
    #[error(
        "report {id} is another state's; only that state may amend or retract it, and a new \
         report needs an id of its own (a fresh random UUID)"
    )]
    NotOwner { id: Uuid },
    #[error("report {id} is at version {latest}; the next version must be {expected}, not {got}")]
    VersionOrder {
        id: Uuid,
        latest: u32,
        expected: u32,
        got: u32,
    },
    #[error("report {id} does not exist yet; its first version must be 1, not {got}")]
    FirstVersion { id: Uuid, got: u32 },
    /// A report's versions are of one category: each category's readers and mirrors
    /// (`sync --category`) see its versions, and would keep one that left it as current.
    #[error(
        "report {id} is of category {stored}, as its version 1 is, and its versions keep \
         that category; this version is of {submitted}. To report it as {submitted}, \
         retract it and submit a new report (a fresh random UUID)"
    )]
    CategoryChange {
        id: Uuid,
        stored: &'static str,
        submitted: &'static str,
    },
    #[error(
        "the reader's standing may have changed since it was checked (its state retracted \
         or amended a report); check it again"
    )]
    StandingUnsure,
    #[error("report {id} was retracted; it cannot be amended or retracted again")]
    Retracted { id: Uuid },
    /// The same content again cannot make it trusted: the exchange keeps the envelope
    /// it accepted first, so the content comes back as the next version.
    #[error(
        "version {version} of report {id} is stored, but signed with a key revoked as of \
         its acceptance (a compromise), so the exchange no longer vouches for it and the \
         same version again cannot replace it; submit this content as version {next}, \
         signed with a current key"
    )]
    Untrusted { id: Uuid, version: u32, next: u32 },
    #[error("report {id} does not exist, so there is nothing to retract")]
    NothingToRetract { id: Uuid },
    #[error(
        "client certificate {serial} was revoked while this envelope waited to be stored; \
         nothing was stored — ask your operator for a new certificate"
    )]
    CertificateRevoked { serial: String },
    #[error(
        "{state} was suspended from the exchange while this envelope waited to be stored; \
         nothing was stored — its certificates work again once an operator reinstates it"
    )]
    StateSuspended { state: String },
    #[error(
        "signing key {key_id} was revoked as of {} ({reason}) while this envelope waited to \
         be stored; nothing was stored — sign with a current key",
        crate::clock::format_time(*at)
    )]
    KeyRevoked {
        key_id: String,
        at: i64,
        reason: String,
    },
    #[error(
        "signing key {key_id} is no longer valid (see `tidemark keys`); nothing was stored — \
         sign with a current key"
    )]
    KeyInactive { key_id: String },
    #[error("the store failed: {0}")]
    Store(String),
}

/// The tables one batch writes, open in its write transaction.
pub(super) struct Tables<'t> {
    envelopes: redb::Table<'t, u64, &'static [u8]>,
    reports: redb::Table<'t, u128, &'static [u8]>,
    indexes: Indexes<'t>,
    audit: redb::Table<'t, u64, &'static [u8]>,
    audit_by_owner: redb::Table<'t, (&'static str, u64), u64>,
    counters: redb::Table<'t, &'static [u8], &'static [u8]>,
    /// Quarters whose counter rows are behind their months.
    quarters_behind: redb::Table<'t, (u8, u32), ()>,
    /// Privacy budgets spent.
    pub(super) budgets: redb::Table<'t, (&'static str, i32), u64>,
    /// Reports' record keys for the counters (the store's cell key secret).
    pub(super) record_keys: counters::RecordKeys,
    /// The transparency log: every envelope and audit record is a leaf.
    pub(super) log: LogTables<'t>,
    /// Keys of certificates handshakes presented (`seen_keys.rs`).
    pub(super) seen_keys: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    /// The audit records written in this transaction, for the trail journal.
    pub(super) trail: Vec<super::trail::TrailLine>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(
        tx: &'t redb::WriteTransaction,
        leaves: &Arc<LeafIndex>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            envelopes: tx.open_table(ENVELOPES)?,
            reports: tx.open_table(REPORTS)?,
            indexes: Indexes::open(tx)?,
            audit: tx.open_table(AUDIT)?,
            audit_by_owner: tx.open_table(AUDIT_BY_OWNER)?,
            counters: tx.open_table(COUNTERS)?,
            quarters_behind: tx.open_table(QUARTERS_BEHIND)?,
            budgets: tx.open_table(BUDGETS)?,
            record_keys: super::record_keys(&tx.open_table(SECRETS)?)?,
            log: LogTables::open(tx, leaves.clone())?,
            seen_keys: tx.open_table(SEEN_KEYS)?,
            trail: Vec::new(),
        })
    }

    /// The sequence number the next accepted envelope takes.
    pub(super) fn next_sequence(&self) -> Result<u64, StoreError> {
        Ok(self.envelopes.last()?.map_or(1, |(k, _)| k.value() + 1))
    }

    /// Adds a batch's counter changes.
    pub(super) fn write_counters(&mut self, deltas: counters::Deltas) -> Result<(), StoreError> {
        deltas.write(&mut self.counters, &mut self.quarters_behind)
    }

    /// The number the next audit record takes.
    pub(super) fn next_audit(&self) -> Result<u64, StoreError> {
        Ok(self.audit.last()?.map_or(1, |(k, _)| k.value() + 1))
    }
}

/// A fresh random salt for an audit record's detail commitment (see
/// `AuditRecord::detail_salt`).
pub(super) fn detail_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    // The system's random source does not fail on the platforms Tidemark runs on; were it
    // to, an all-zero salt only makes this one commitment guessable.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    salt
}

/// Rewrites in-progress audit record `number` with `record`, keeping the time its read
/// began.
pub(super) fn update_audit(
    t: &mut Tables<'_>,
    number: u64,
    record: &AuditRecord,
    now: i64,
) -> Result<(), StoreError> {
    let started: Option<AuditRecord> = t
        .audit
        .get(number)?
        .map(|v| decode(v.value()))
        .transpose()?;
    let (at, salt) = started.map_or_else(|| (now, detail_salt()), |s| (s.at, s.detail_salt));
    put_audit(t, number, record, (at, salt), now)
}

/// Writes audit record `number`, begun at `at` with its detail salt, as it stands at
/// `logged` (the batch's time), with its log entry, indexed by each owner whose reports it
/// returned (an owner reading its own reports is not indexed).
pub(super) fn put_audit(
    t: &mut Tables<'_>,
    number: u64,
    record: &AuditRecord,
    (at, detail_salt): (i64, Vec<u8>),
    logged: i64,
) -> Result<(), StoreError> {
    let record = AuditRecord {
        at,
        detail_salt,
        // Never before the access began, whatever the clock did since.
        logged_at: logged.max(at),
        ..record.clone()
    };
    for owner in &record.owners {
        if owner.owner != record.state {
            t.audit_by_owner
                .insert((owner.owner.as_str(), number), owner.count)?;
        }
    }
    let encoded = record.encode_to_vec();
    t.audit.insert(number, encoded.as_slice())?;
    let leaf = t.log.append(&log::audit_entry(number, &record))?;
    t.trail.push(super::trail::TrailLine {
        leaf: leaf.index,
        number,
        record: encoded,
    });
    Ok(())
}

/// Applies one envelope: version rules, the envelope, the report head and its indexes.
pub(super) fn append(
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    new: &NewEnvelope,
    next_sequence: &mut u64,
    accepted_at: i64,
) -> Result<Result<Accepted, AppendError>, StoreError> {
    let key = new.report_id.as_u128();
    let head: Option<ReportHead> = t.reports.get(key)?.map(|v| decode(v.value())).transpose()?;
    match check(new, head.as_ref()) {
        Check::Refuse(e) => Ok(Err(e)),
        Check::Duplicate(sequence) => {
            let stored: EnvelopeRecord = t
                .envelopes
                .get(sequence)?
                .map(|v| decode(v.value()))
                .transpose()?
                .ok_or_else(|| StoreError::Corrupt(format!("envelope {sequence} is missing")))?;
            let entry = log::envelope_entry(sequence, &stored, new.payload_sha256);
            let leaf = t.log.find(&entry)?.ok_or_else(|| {
                StoreError::Corrupt(format!("envelope {sequence} has no log entry"))
            })?;
            Ok(Ok(accepted_before(sequence, &stored, leaf)?))
        }
        Check::Append => {
            let sequence = *next_sequence;
            *next_sequence += 1;
            let state = new.state.as_str();
            let mut head = head.unwrap_or_else(|| ReportHead {
                state: state.to_owned(),
                first_accepted_at: accepted_at,
                ..ReportHead::default()
            });
            head.versions.push(VersionRef {
                version: new.version,
                sequence,
                digest: new.digest.to_vec(),
                scope: new.summary.as_ref().map_or(0, |s| s.scope),
                listed_states: new
                    .summary
                    .as_ref()
                    .map(|s| s.listed_states.clone())
                    .unwrap_or_default(),
            });
            head.changed_at = accepted_at;
            update_indexes(t, deltas, new, &mut head, key)?;
            let record = EnvelopeRecord {
                envelope: new.envelope.clone(),
                state: state.to_owned(),
                report_id: new.report_id.as_bytes().to_vec(),
                version: new.version,
                accepted_at,
                digest: new.digest.to_vec(),
                kind: new.kind.code(),
                category: head.category,
                key_id: new.key_id.clone(),
                also_signed_by: new.also_signed_by.clone(),
            };
            t.envelopes
                .insert(sequence, record.encode_to_vec().as_slice())?;
            t.reports.insert(key, head.encode_to_vec().as_slice())?;
            let leaf = t
                .log
                .append(&log::envelope_entry(sequence, &record, new.payload_sha256))?;
            Ok(Ok(Accepted {
                sequence,
                duplicate: false,
                digest: new.digest.to_vec(),
                state: state.to_owned(),
                report_id: new.report_id,
                version: new.version,
                at: accepted_at,
                kind: new.kind,
                leaf,
            }))
        }
    }
}

/// The report indexes, open in a write transaction: by date, by state and date, and the
/// contributions (by state, category and first acceptance) that give-to-get counts.
pub(super) struct Indexes<'t> {
    by_date: redb::Table<'t, (i32, i32, u128), ()>,
    by_state: redb::Table<'t, (&'static str, i32, i32, u128), ()>,
    contributions: redb::Table<'t, (&'static str, i32, i64, u128), ()>,
}

impl<'t> Indexes<'t> {
    pub(super) fn open(tx: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            by_date: tx.open_table(BY_DATE)?,
            by_state: tx.open_table(BY_STATE)?,
            contributions: tx.open_table(CONTRIBUTIONS)?,
        })
    }

    /// Files report `key` of `head` under `summary`: in the date indexes always (a
    /// retracted report stays there, so that sync and audits still find it), as a
    /// contribution only while it is not retracted.
    fn insert(
        &mut self,
        head: &ReportHead,
        key: u128,
        summary: &ReportSummary,
    ) -> Result<(), StoreError> {
        let state = head.state.as_str();
        self.by_date
            .insert((summary.category, summary.incident_day, key), ())?;
        self.by_state
            .insert((state, summary.category, summary.incident_day, key), ())?;
        if !head.retracted && !head.contribution_revoked {
            self.contributions
                .insert((state, summary.category, head.first_accepted_at, key), ())?;
        }
        Ok(())
    }

    /// Removes what [`Indexes::insert`] filed for `summary`.
    fn remove(
        &mut self,
        head: &ReportHead,
        key: u128,
        summary: &ReportSummary,
    ) -> Result<(), StoreError> {
        let state = head.state.as_str();
        self.by_date
            .remove((summary.category, summary.incident_day, key))?;
        self.by_state
            .remove((state, summary.category, summary.incident_day, key))?;
        self.contributions
            .remove((state, summary.category, head.first_accepted_at, key))?;
        Ok(())
    }

    /// Sets `head`'s summary to `summary`, moving its index entries (and its category)
    /// from the summary it had.
    pub(super) fn refile(
        &mut self,
        head: &mut ReportHead,
        key: u128,
        summary: ReportSummary,
    ) -> Result<(), StoreError> {
        if let Some(old) = &head.summary {
            self.remove(head, key, old)?;
        }
        self.insert(head, key, &summary)?;
        head.category = summary.category;
        head.summary = Some(summary);
        Ok(())
    }
}

/// Keeps the contribution and date indexes and the aggregate counters in step with the
/// report's latest version.
fn update_indexes(
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    new: &NewEnvelope,
    head: &mut ReportHead,
    key: u128,
) -> Result<(), StoreError> {
    let state = new.state.as_str();
    match (&new.summary, new.kind) {
        (Some(summary), EnvelopeKind::Report) => {
            // A retraction (overturned now), or a compromise of the key that signed it,
            // already took the old version out of the counters.
            if let (false, false, Some(old)) =
                (head.retracted, head.contribution_revoked, &head.summary)
            {
                deltas.record(key, old, state, -1)?;
            }
            deltas.record(key, summary, state, 1)?;
            // Signed with a key active now: the report counts again if a compromise had
            // stopped it counting, or had retracted it.
            head.contribution_revoked = false;
            head.retracted = false;
            head.retraction_revoked = false;
            t.indexes.refile(head, key, summary.clone())?;
        }
        (_, EnvelopeKind::Retraction) => {
            // A retracted report no longer counts as a contribution nor in aggregates; it
            // stays in the date indexes so that sync and audits still find it. (Retracted
            // again over a retraction a revoked key signed, or over a version a revoked
            // key signed: out of them already.)
            head.retraction_revoked = false;
            if let (false, false, Some(old)) =
                (head.retracted, head.contribution_revoked, &head.summary)
            {
                t.indexes.contributions.remove((
                    state,
                    old.category,
                    head.first_accepted_at,
                    key,
                ))?;
                deltas.record(key, old, state, -1)?;
            }
            head.contribution_revoked = false;
            head.retracted = true;
        }
        (None, EnvelopeKind::Report) => {
            return Err(StoreError::Corrupt(
                "a report without its summary".to_owned(),
            ));
        }
    }
    Ok(())
}

/// What was accepted, for a stored envelope submitted again.
fn accepted_before(
    sequence: u64,
    stored: &EnvelopeRecord,
    leaf: Leaf,
) -> Result<Accepted, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("envelope {sequence}: {what}"));
    Ok(Accepted {
        sequence,
        duplicate: true,
        digest: stored.digest.clone(),
        state: stored.state.clone(),
        report_id: Uuid::from_slice(&stored.report_id).map_err(|_| corrupt("report id"))?,
        version: stored.version,
        at: stored.accepted_at,
        kind: stored.kind().ok_or_else(|| corrupt("kind"))?,
        leaf,
    })
}

enum Check {
    Append,
    Duplicate(u64),
    Refuse(AppendError),
}

/// The version rules: idempotent re-submission, no conflicting content, only the owner
/// amends, versions in order, nothing after a retraction.
fn check(new: &NewEnvelope, head: Option<&ReportHead>) -> Check {
    let id = new.report_id;
    let Some(head) = head else {
        return match new.kind {
            EnvelopeKind::Retraction => Check::Refuse(AppendError::NothingToRetract { id }),
            EnvelopeKind::Report if new.version == 1 => Check::Append,
            EnvelopeKind::Report => Check::Refuse(AppendError::FirstVersion {
                id,
                got: new.version,
            }),
        };
    };
    if head.state != new.state.as_str() {
        return Check::Refuse(AppendError::NotOwner { id });
    }
    let latest = head.versions.last().map_or(0, |v| v.version);
    if let Some(existing) = head.versions.iter().find(|v| v.version == new.version) {
        if existing.digest == new.digest {
            // The latest envelope signed under a compromised key is not vouched for:
            // the state's own copy sent again asks for it to be, which only a next
            // version can do.
            let untrusted = if head.retracted {
                head.retraction_revoked
            } else {
                head.contribution_revoked
            };
            if untrusted && existing.version == latest {
                return Check::Refuse(AppendError::Untrusted {
                    id,
                    version: new.version,
                    next: latest + 1,
                });
            }
            return Check::Duplicate(existing.sequence);
        }
        // No next version to name: the report is withdrawn for good.
        if head.retracted && !head.retraction_revoked {
            return Check::Refuse(AppendError::Retracted { id });
        }
        return Check::Refuse(AppendError::Conflict {
            id,
            version: new.version,
            stored: digest_text(&existing.digest),
            submitted: digest_text(&new.digest),
            next: latest + 1,
        });
    }
    // A retraction stands, unless it was signed with a key revoked as of then: its
    // state may overturn it with the next version.
    if head.retracted && !head.retraction_revoked {
        return Check::Refuse(AppendError::Retracted { id });
    }
    if let Some(summary) = new.summary.as_ref().filter(|s| s.category != head.category) {
        let name = |category| Category::from_pb(category).map_or("unknown", Category::label);
        return Check::Refuse(AppendError::CategoryChange {
            id,
            stored: name(head.category),
            submitted: name(summary.category),
        });
    }
    if new.version != latest + 1 {
        return Check::Refuse(AppendError::VersionOrder {
            id,
            latest,
            expected: latest + 1,
            got: new.version,
        });
    }
    Check::Append
}

/// What an administrative change `applied` asks of the report tables: a signing key
/// revoked as of an earlier time than before stops what it signed since from counting
/// as a contribution and in aggregates ([`revoke_contributions`]; the counter changes
/// go to `deltas`). Returns the state whose standing that may have lowered.
pub(super) fn follow_admin(
    tx: &redb::WriteTransaction,
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    applied: &super::AdminApplied,
) -> Result<Option<String>, StoreError> {
    if let super::AdminApplied::Key(key, Some(before)) = applied
        && key.revoked_at != 0
        && key.revoked_at != before.revoked_at
    {
        let stopped = revoke_contributions(tx, t, deltas, key)?;
        if stopped > 0 {
            tracing::info!(
                key_id = %key.key_id,
                state = %key.state,
                reports = stopped,
                "reports signed with the key since it was compromised no longer count as contributions nor in aggregates"
            );
            return Ok(Some(key.state.clone()));
        }
    }
    Ok(None)
}

/// Stops counting, as a contribution and in aggregates, each report of `key`'s state
/// whose latest version `key` signed and that was accepted at or after `key.revoked_at`
/// (the key was revoked as of then: a compromise found later) — unless another of its
/// state's keys signed it too and was not revoked as of its acceptance —, as
/// [`ReportHead::contribution_revoked`] says. Scans the envelopes newest first, back to
/// the revocation time. Returns how many reports stopped counting.
fn revoke_contributions(
    tx: &redb::WriteTransaction,
    t: &mut Tables<'_>,
    deltas: &mut counters::Deltas,
    key: &super::KeyRecord,
) -> Result<u64, StoreError> {
    let mut revoked = 0;
    let mut stopped = Vec::new();
    // Whether another of an envelope's keys still vouches for it: not revoked as of its
    // acceptance (its signature stands alone, DSSE).
    let vouched_otherwise = |envelope: &EnvelopeRecord| -> Result<bool, StoreError> {
        for other in envelope.signed_by().filter(|k| *k != key.key_id) {
            let record: Option<super::KeyRecord> =
                super::admin::get(tx, super::SIGNING_KEYS, other)?;
            if record.is_some_and(|r| r.revoked_at == 0 || r.revoked_at > envelope.accepted_at) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    for entry in t.envelopes.iter()?.rev() {
        let (sequence, value) = entry?;
        let envelope: EnvelopeRecord = decode(value.value())?;
        // Acceptance times grow with the sequence numbers.
        if envelope.accepted_at < key.revoked_at {
            break;
        }
        if envelope.signed_by().any(|k| k == key.key_id)
            && envelope.state == key.state
            && !vouched_otherwise(&envelope)?
            && let Ok(id) = Uuid::from_slice(&envelope.report_id)
        {
            let retraction = envelope.kind() == Some(EnvelopeKind::Retraction);
            stopped.push((id.as_u128(), sequence.value(), retraction));
        }
    }
    for (id, sequence, retraction) in stopped {
        let Some(mut head) = t
            .reports
            .get(id)?
            .map(|v| decode::<ReportHead>(v.value()))
            .transpose()?
        else {
            continue;
        };
        if head.latest_sequence() != sequence {
            continue;
        }
        if retraction {
            // The retraction stands for readers; its state may overturn it.
            head.retraction_revoked = true;
            t.reports.insert(id, head.encode_to_vec().as_slice())?;
            continue;
        }
        if head.contribution_revoked {
            continue;
        }
        if let (false, Some(summary)) = (head.retracted, &head.summary) {
            t.indexes.contributions.remove((
                head.state.as_str(),
                summary.category,
                head.first_accepted_at,
                id,
            ))?;
            deltas.record(id, summary, &head.state, -1)?;
        }
        head.contribution_revoked = true;
        t.reports.insert(id, head.encode_to_vec().as_slice())?;
        revoked += 1;
    }
    Ok(revoked)
}
