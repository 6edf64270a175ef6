//! Rebuilding every report's summary and the aggregate counters from the stored
//! envelopes, when a build changes how they are made (the counters' layout or what a
//! summary holds).
//!
//! Two passes, so that memory grows by about 50 bytes a report rather than by every
//! report head (1.35 GB at a million reports when the heads were held): the first reads
//! the report heads and keeps, per report, only the sequence number of its latest report
//! version, its state, whether it is retracted and a digest of its summary; the second
//! reads those envelopes in sequence order (front to back through the file), counts each
//! report and rewrites only a head whose summary this build makes differently, moving
//! its index entries with it ([`apply::Indexes::refile`]).

use prost::Message as _;
use redb::{ReadableTable, ReadableTableMetadata};
use uuid::Uuid;

use super::{
    COUNTER_QUARTERS, COUNTERS, ENVELOPES, EnvelopeKind, EnvelopeRecord, FEES, QUARTERS_BEHIND,
    REPORTS, ReportHead, SECRETS, StoreError, apply, counters, decode, record_keys,
};
use crate::report::ReportSummary;

/// What the second pass needs of one report head.
struct Pending {
    /// The sequence number of its latest report version (not a retraction).
    sequence: u64,
    key: u128,
    /// The reporting state's code, as the head spells it.
    state: [u8; 3],
    /// Retracted, or its latest version signed under a compromised key: not counted.
    uncounted: bool,
    /// [`summary_digest`] of the summary the head holds.
    summary: [u8; 16],
}

/// Empties the counters and counts every report again, in `tx`. Returns the number of
/// reports counted (a retracted report is not, nor one whose latest version was signed
/// under a compromised key).
pub(super) fn counters(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    tx.delete_table(COUNTERS)?;
    tx.delete_table(COUNTER_QUARTERS)?;
    tx.delete_table(QUARTERS_BEHIND)?;
    tx.delete_table(FEES)?;
    let mut deltas = counters::Deltas::new(record_keys(&tx.open_table(SECRETS)?)?);
    let mut months = tx.open_table(COUNTERS)?;
    let mut behind = tx.open_table(QUARTERS_BEHIND)?;
    let envelopes = tx.open_table(ENVELOPES)?;
    let mut reports = tx.open_table(REPORTS)?;
    let mut indexes = apply::Indexes::open(tx)?;
    let mut pending = Vec::with_capacity(usize::try_from(reports.len()?).unwrap_or(0));
    for entry in reports.iter()? {
        let (key, value) = entry?;
        let (key, head) = (key.value(), decode::<ReportHead>(value.value())?);
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("report {}: {what}", Uuid::from_u128(key)));
        // A retraction is always the last version, and there is at most one; the second
        // pass looks through all versions if this is not a report version after all.
        let skip = usize::from(head.retracted && head.versions.len() > 1);
        let latest = head.versions.iter().rev().nth(skip);
        pending.push(Pending {
            sequence: latest.ok_or_else(|| corrupt("no report version"))?.sequence,
            key,
            state: head
                .state
                .as_bytes()
                .try_into()
                .map_err(|_| corrupt(&format!("state {:?} is not 3 bytes", head.state)))?,
            uncounted: head.retracted || head.contribution_revoked,
            summary: summary_digest(head.summary.as_ref()),
        });
    }
    pending.sort_unstable_by_key(|p| p.sequence);
    let mut counted = 0;
    for report in pending {
        let summary = latest_summary(&envelopes, &reports, &report)?;
        if !report.uncounted {
            // Three bytes of a `String` are UTF-8.
            let state = std::str::from_utf8(&report.state).unwrap_or_default();
            deltas.record(report.key, &summary, state, 1)?;
            counted += 1;
        }
        if summary_digest(Some(&summary)) != report.summary {
            let mut head = head(&reports, report.key)?;
            // The envelope's record and its log entry name the category it was accepted
            // under; a head that says another was damaged, not written by an older build.
            if let Some(old) = head
                .summary
                .as_ref()
                .filter(|s| s.category != summary.category)
            {
                return Err(StoreError::Corrupt(format!(
                    "report {}: its head says category {} but its envelope says {}",
                    Uuid::from_u128(report.key),
                    old.category,
                    summary.category
                )));
            }
            indexes.refile(&mut head, report.key, summary)?;
            reports.insert(report.key, head.encode_to_vec().as_slice())?;
        }
    }
    deltas.write(&mut months, &mut behind)?;
    let done = counters::catch_up_quarters(
        &months,
        &mut tx.open_table(COUNTER_QUARTERS)?,
        &mut behind,
        (usize::MAX, &std::collections::BTreeSet::new()),
    )?;
    if let Some((_, e)) = done.failed.into_iter().next() {
        return Err(e);
    }
    Ok(counted)
}

/// SHA-256 of a summary's encoding, cut to 16 bytes: tells whether a head's summary
/// differs from the one this build makes without keeping either.
fn summary_digest(summary: Option<&ReportSummary>) -> [u8; 16] {
    let bytes = summary.map(ReportSummary::encode_to_vec);
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes.as_deref().unwrap_or(b"none"));
    let mut cut = [0; 16];
    cut.copy_from_slice(&digest.as_ref()[..16]);
    cut
}

fn head(
    reports: &redb::Table<'_, u128, &'static [u8]>,
    key: u128,
) -> Result<ReportHead, StoreError> {
    let value = reports
        .get(key)?
        .ok_or_else(|| StoreError::Corrupt(format!("report {} vanished", Uuid::from_u128(key))))?;
    decode(value.value())
}

/// The summary of `report`'s latest report version: the envelope the first pass found
/// or, if that is missing or a retraction, the latest report version its head lists. A
/// report version this build cannot summarize is corrupt: an older version's summary
/// would count, file and scope the report as it no longer is.
fn latest_summary(
    envelopes: &redb::Table<'_, u64, &'static [u8]>,
    reports: &redb::Table<'_, u128, &'static [u8]>,
    report: &Pending,
) -> Result<ReportSummary, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("report {}: {what}", Uuid::from_u128(report.key)));
    let mut found = report_version(envelopes, report.sequence)?;
    if found.is_none() {
        for version in head(reports, report.key)?.versions.iter().rev() {
            found = report_version(envelopes, version.sequence)?;
            if found.is_some() {
                break;
            }
        }
    }
    let record = found.ok_or_else(|| corrupt("no report version is stored"))?;
    crate::report::summarize_stored(&record.envelope)
        .ok_or_else(|| corrupt("its latest report version cannot be read"))
}

/// The envelope at `sequence`, if one is stored there and is a report version.
fn report_version(
    envelopes: &redb::Table<'_, u64, &'static [u8]>,
    sequence: u64,
) -> Result<Option<EnvelopeRecord>, StoreError> {
    let record: Option<EnvelopeRecord> = envelopes
        .get(sequence)?
        .map(|v| decode(v.value()))
        .transpose()?;
    Ok(record.filter(|r| r.kind() == Some(EnvelopeKind::Report)))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::super::{
        BY_DATE, BY_STATE, CONTRIBUTIONS, ENVELOPES, EnvelopeKind, EnvelopeRecord, REPORTS,
        ReportHead, Store, decode, records,
    };
    use redb::ReadableDatabase;

    use crate::{config::StoreConfig, report::ReportSummary};

    /// A head whose summary is not what this build makes of its envelope is rewritten
    /// by the rebuild, its index entries moved to what the envelope says;
    /// its counters count the envelope. A retracted report stays in the date indexes but
    /// not among the contributions.
    #[test]
    fn a_rebuild_rewrites_a_summary_that_differs_from_the_envelopes() {
        for retracted in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
            let (envelope, made) = signed_sample();
            let mut stale = made.clone();
            stale.incident_day += 400;
            let (id, accepted) = (42u128, 5i64);
            let tx = store.begin_write().unwrap();
            {
                let record = EnvelopeRecord {
                    envelope,
                    state: "AUS".to_owned(),
                    kind: EnvelopeKind::Report.code(),
                    ..EnvelopeRecord::default()
                };
                let mut envelopes = tx.open_table(ENVELOPES).unwrap();
                envelopes
                    .insert(1, record.encode_to_vec().as_slice())
                    .unwrap();
                let mut versions = vec![records::VersionRef {
                    version: 1,
                    sequence: 1,
                    ..records::VersionRef::default()
                }];
                if retracted {
                    let retraction = EnvelopeRecord {
                        kind: EnvelopeKind::Retraction.code(),
                        ..record
                    };
                    envelopes
                        .insert(2, retraction.encode_to_vec().as_slice())
                        .unwrap();
                    versions.push(records::VersionRef {
                        version: 2,
                        sequence: 2,
                        ..records::VersionRef::default()
                    });
                }
                let head = ReportHead {
                    state: "AUS".to_owned(),
                    first_accepted_at: accepted,
                    versions,
                    category: stale.category,
                    summary: Some(stale.clone()),
                    retracted,
                    ..ReportHead::default()
                };
                tx.open_table(BY_DATE)
                    .unwrap()
                    .insert((stale.category, stale.incident_day, id), ())
                    .unwrap();
                tx.open_table(BY_STATE)
                    .unwrap()
                    .insert(("AUS", stale.category, stale.incident_day, id), ())
                    .unwrap();
                if !retracted {
                    tx.open_table(CONTRIBUTIONS)
                        .unwrap()
                        .insert(("AUS", stale.category, accepted, id), ())
                        .unwrap();
                }
                tx.open_table(REPORTS)
                    .unwrap()
                    .insert(id, head.encode_to_vec().as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
            assert_eq!(store.rebuild_counters().unwrap(), u64::from(!retracted));
            let tx = store.db.begin_read().unwrap();
            let table = tx.open_table(REPORTS).unwrap();
            let head: ReportHead = decode(table.get(id).unwrap().unwrap().value()).unwrap();
            assert_eq!(head.summary.as_ref(), Some(&made));
            assert_eq!(head.category, made.category);
            // Contributions are keyed by category and acceptance, not by day.
            assert_eq!(
                indexed(&store, id, accepted, &stale),
                [false, false, !retracted],
                "retracted {retracted}"
            );
            assert_eq!(
                indexed(&store, id, accepted, &made),
                [true, true, !retracted],
                "retracted {retracted}"
            );
        }
    }

    /// What only damage explains fails the rebuild instead of being made to fit: a head
    /// whose category is not its envelope's, and a latest report version that cannot be
    /// read (its older version's summary would count and scope the report as it no
    /// longer is).
    #[test]
    fn a_rebuild_refuses_what_only_damage_explains() {
        let (envelope, made) = signed_sample();
        let record = |envelope: &[u8]| EnvelopeRecord {
            envelope: envelope.to_vec(),
            state: "AUS".to_owned(),
            kind: EnvelopeKind::Report.code(),
            ..EnvelopeRecord::default()
        };
        let mut other_category = made.clone();
        other_category.category = 1 - made.category;
        let cases = [
            (vec![record(&envelope)], other_category, "category"),
            (
                vec![record(&envelope), record(b"not an envelope")],
                made,
                "cannot be read",
            ),
        ];
        for (records, summary, said) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
            let tx = store.begin_write().unwrap();
            {
                let mut envelopes = tx.open_table(ENVELOPES).unwrap();
                let mut versions = Vec::new();
                for (sequence, record) in (1..).zip(&records) {
                    envelopes
                        .insert(sequence, record.encode_to_vec().as_slice())
                        .unwrap();
                    versions.push(records::VersionRef {
                        version: u32::try_from(sequence).unwrap(),
                        sequence,
                        ..records::VersionRef::default()
                    });
                }
                let head = ReportHead {
                    state: "AUS".to_owned(),
                    versions,
                    category: summary.category,
                    summary: Some(summary),
                    ..ReportHead::default()
                };
                tx.open_table(REPORTS)
                    .unwrap()
                    .insert(42, head.encode_to_vec().as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
            let refused = store.rebuild_counters().unwrap_err().to_string();
            assert!(refused.contains(said), "{refused}");
        }
    }

    /// A signed sample report of AUS (an encoded envelope) and its summary.
    fn signed_sample() -> (Vec<u8>, ReportSummary) {
        let report = crate::sample::report(&mut crate::sample::Rng::new(7), "AUS");
        let (key, _) = crate::signing::SigningKey::generate().unwrap();
        let envelope = crate::envelope::sign(
            crate::envelope::REPORT_PAYLOAD_TYPE,
            report.encode_to_vec(),
            &key,
        )
        .encode_to_vec();
        let made = crate::report::summarize_stored(&envelope).unwrap();
        (envelope, made)
    }

    /// Whether report `id` is filed under `summary` by date, by state and date, and as
    /// a contribution accepted at `accepted`.
    fn indexed(store: &Store, id: u128, accepted: i64, summary: &ReportSummary) -> [bool; 3] {
        let (category, day) = (summary.category, summary.incident_day);
        let tx = store.db.begin_read().unwrap();
        let by_date = tx.open_table(BY_DATE).unwrap();
        let by_state = tx.open_table(BY_STATE).unwrap();
        let contributions = tx.open_table(CONTRIBUTIONS).unwrap();
        [
            by_date.get((category, day, id)).unwrap().is_some(),
            by_state.get(("AUS", category, day, id)).unwrap().is_some(),
            contributions
                .get(("AUS", category, accepted, id))
                .unwrap()
                .is_some(),
        ]
    }
}
