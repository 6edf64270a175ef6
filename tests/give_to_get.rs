//! Give-to-get: standing, owner scopes, query, sync and the access audit, against a
//! real server with several states.

mod common;

use std::{collections::BTreeSet, sync::atomic::Ordering, time::Duration};

use common::{World, report, state, submit};
use prost::Message;
use tidemark::{clock::Clock, identity::Role, pb};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

type Exchange = pb::exchange_client::ExchangeClient<Channel>;

const DAY: i64 = 86_400;

async fn query(
    exchange: &mut Exchange,
    req: pb::QueryRequest,
) -> Result<Vec<pb::QueryResult>, tonic::Status> {
    let mut stream = exchange.query(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await? {
        out.push(item);
    }
    Ok(out)
}

async fn sync_all(
    exchange: &mut Exchange,
    category: pb::Category,
    after: u64,
) -> Result<Vec<pb::SyncItem>, tonic::Status> {
    let mut stream = exchange
        .sync(pb::SyncRequest {
            category: category as i32,
            after_sequence: after,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await? {
        out.push(item);
    }
    Ok(out)
}

fn ids_of(results: &[pb::QueryResult]) -> BTreeSet<String> {
    results
        .iter()
        .map(|r| r.meta.as_ref().unwrap().report_id.clone())
        .collect()
}

fn by_category(category: pb::Category) -> pb::QueryRequest {
    pb::QueryRequest {
        category: category as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn standing_opens_one_category_at_a_time_and_lapses_with_the_window() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let world = World::new(clock).await;
    let all = pb::SharingScope::AllContributors;
    let aus_smuggling = report("AUS", 1, false, all, &[]);
    world.submit(&aus_smuggling).await;
    world.submit(&report("AUS", 2, true, all, &[])).await;
    let mut idn = world.exchange("IDN").await;

    // IDN has contributed nothing: refused in both categories, with the exact reason.
    for (category, label) in [
        (pb::Category::SmugglingIncident, "smuggling-incident"),
        (pb::Category::MaritimeMovement, "maritime-movement"),
    ] {
        let status = query(&mut idn, by_category(category)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            format!("IDN has contributed 0 {label} reports in the last 365 days; 1 is required")
        );
        let info = status.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "INSUFFICIENT_CONTRIBUTION");
        assert_eq!(info.metadata["contributed"], "0");
        assert_eq!(info.metadata["required"], "1");
        let sync = sync_all(&mut idn, category, 0).await.unwrap_err();
        assert_eq!(sync.code(), Code::PermissionDenied);
    }

    // One smuggling report opens smuggling, not maritime.
    world.submit(&report("IDN", 3, false, all, &[])).await;
    let results = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap();
    assert!(ids_of(&results).contains(&aus_smuggling.report_id));
    let maritime = query(&mut idn, by_category(pb::Category::MaritimeMovement))
        .await
        .unwrap_err();
    assert_eq!(maritime.code(), Code::PermissionDenied);

    let standing = idn
        .my_standing(pb::MyStandingRequest {})
        .await
        .unwrap()
        .into_inner();
    let smuggling = &standing.categories[0];
    assert!(smuggling.entitled);
    assert_eq!(smuggling.contributed, 1);
    let lapses = smuggling.lapses_at_unix;
    assert!(
        lapses >= start + 365 * DAY && lapses <= start + 365 * DAY + 5,
        "{lapses}"
    );
    assert!(!standing.categories[1].entitled);

    // A year and a day later the contribution has left the window.
    now.fetch_add(366 * DAY, Ordering::SeqCst);
    let status = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .starts_with("IDN has contributed 0 smuggling-incident reports")
    );
}

/// How many reports the caller's state has contributed in its first category.
async fn contributed(exchange: &mut Exchange) -> u64 {
    exchange
        .my_standing(pb::MyStandingRequest {})
        .await
        .unwrap()
        .into_inner()
        .categories[0]
        .contributed
}

/// A report whose latest version was signed with a key revoked as of that version's
/// acceptance (a compromise found later) no longer buys reading rights; a new version
/// signed with a good key counts again. Reports accepted before the compromise count.
#[tokio::test]
async fn contributions_signed_after_a_keys_compromise_do_not_count() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let world = World::new(clock).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("AUS", 1, false, all, &[])).await;
    world.submit(&report("IDN", 2, false, all, &[])).await;
    now.fetch_add(100, Ordering::SeqCst);
    let later = report("IDN", 3, false, all, &[]);
    world.submit(&later).await;
    let mut idn = world.exchange("IDN").await;
    assert_eq!(contributed(&mut idn).await, 2);
    let mut admin = world.server.admin(&common::operator(&world.pki)).await;
    let revoke = |at: i64| pb::RevokeSigningKeyRequest {
        key_id: world.key("IDN").key_id().to_owned(),
        reason: "key-compromise".into(),
        compromised_at_unix: at,
    };
    // Compromised between the two: the later one stops counting.
    admin.revoke_signing_key(revoke(start + 50)).await.unwrap();
    assert_eq!(contributed(&mut idn).await, 1);
    // Found to be compromised before either: neither counts, and IDN may not read — a
    // subscription already open ends too.
    let mut watching = idn
        .subscribe(by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap()
        .into_inner();
    // Idle: it has nothing to send, and nothing else is submitted meanwhile.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), watching.message()).await;
    assert!(quiet.is_err(), "sent before the compromise: {quiet:?}");
    admin.revoke_signing_key(revoke(start - 10)).await.unwrap();
    // Ended within a second or so of the revocation (its guard re-checks once a second).
    let ended = tokio::time::timeout(Duration::from_secs(3), watching.message())
        .await
        .expect("the idle subscription still open 3 s after its state's standing lapsed");
    assert_eq!(contributed(&mut idn).await, 0);
    let status = ended.expect_err("the subscription ends refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let refused = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The report signed again with a new key is vouched for again, and counts.
    let key = world.server.register_new_key(&world.pki, "IDN").await;
    // The same version again under the new key cannot make it trusted: refused, naming
    // the next version (the untrusted envelope stays what the exchange holds).
    let same = submit(&mut idn, common::sign(&later, &key))
        .await
        .unwrap_err();
    assert_eq!(same.code(), Code::AlreadyExists, "{same:?}");
    assert!(same.message().contains("as version 2"), "{same:?}");
    assert_eq!(tidemark::client::expected_version(&same), Some(2));
    assert_eq!(contributed(&mut idn).await, 0);
    let again = pb::Report {
        version: 2,
        ..later
    };
    submit(&mut idn, common::sign(&again, &key)).await.unwrap();
    assert_eq!(contributed(&mut idn).await, 1);
    query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap();
}

/// Each DSSE signature stands alone: a report signed by two of its state's keys keeps
/// counting while either was not revoked as of its acceptance, whatever their order.
#[tokio::test]
async fn a_report_signed_twice_counts_until_both_keys_are_compromised() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let world = World::new(clock).await;
    let all = pb::SharingScope::AllContributors;
    let first = world.key("IDN");
    let second = world.server.register_new_key(&world.pki, "IDN").await;
    now.fetch_add(100, Ordering::SeqCst);
    let signed_by = |report: &pb::Report, keys: [&tidemark::signing::SigningKey; 2]| {
        let mut envelope = common::sign(report, keys[0]);
        envelope
            .signatures
            .extend(common::sign(report, keys[1]).signatures);
        envelope
    };
    let mut idn = world.exchange("IDN").await;
    submit(
        &mut idn,
        signed_by(&report("IDN", 1, false, all, &[]), [first, &second]),
    )
    .await
    .unwrap();
    submit(
        &mut idn,
        signed_by(&report("IDN", 2, false, all, &[]), [&second, first]),
    )
    .await
    .unwrap();
    assert_eq!(contributed(&mut idn).await, 2);
    let mut admin = world.server.admin(&common::operator(&world.pki)).await;
    let compromised = |key: &tidemark::signing::SigningKey| pb::RevokeSigningKeyRequest {
        key_id: key.key_id().to_owned(),
        reason: "key-compromise".into(),
        compromised_at_unix: start,
    };
    admin.revoke_signing_key(compromised(first)).await.unwrap();
    assert_eq!(
        contributed(&mut idn).await,
        2,
        "the second key still vouches for both"
    );
    admin
        .revoke_signing_key(compromised(&second))
        .await
        .unwrap();
    assert_eq!(contributed(&mut idn).await, 0, "no key vouches for either");
}

/// A retraction signed with a key revoked as of then (a thief's) can be overturned by
/// its state with the next version under a current key; one signed before stays final.
#[tokio::test]
async fn a_retraction_under_a_compromised_key_can_be_overturned() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let world = World::new(clock).await;
    let all = pb::SharingScope::AllContributors;
    let (kept, stolen) = (
        report("AUS", 1, false, all, &[]),
        report("AUS", 2, false, all, &[]),
    );
    world.submit(&kept).await;
    world.submit(&stolen).await;
    world.submit(&report("IDN", 3, false, all, &[])).await;
    let mut aus = world.exchange("AUS").await;
    let old_key = world.key("AUS");
    // Retracted by its owner before the compromise, and by the thief after it.
    submit(&mut aus, common::retraction(&kept, 2, old_key))
        .await
        .unwrap();
    now.fetch_add(100, Ordering::SeqCst);
    submit(&mut aus, common::retraction(&stolen, 2, old_key))
        .await
        .unwrap();
    let key = world.server.register_new_key(&world.pki, "AUS").await;
    let again = |r: &pb::Report| {
        common::sign(
            &pb::Report {
                version: 3,
                ..r.clone()
            },
            &key,
        )
    };
    // Before the compromise is known, both retractions are final.
    let refused = submit(&mut aus, again(&stolen)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    world
        .server
        .admin(&common::operator(&world.pki))
        .await
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: old_key.key_id().to_owned(),
            reason: "key-compromise".into(),
            compromised_at_unix: start + 50,
        })
        .await
        .unwrap();
    let refused = submit(&mut aus, again(&kept)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // Over its retraction's own version too: withdrawn for good, no next version named.
    let over = common::sign(
        &pb::Report {
            version: 2,
            ..kept.clone()
        },
        &key,
    );
    let refused = submit(&mut aus, over).await.unwrap_err();
    assert!(
        refused.code() == Code::FailedPrecondition && refused.message().contains("was retracted"),
        "{refused:?}"
    );
    // The thief's retraction sent again under the new key is not taken as its own.
    let same = submit(&mut aus, common::retraction(&stolen, 2, &key))
        .await
        .unwrap_err();
    assert_eq!(
        tidemark::client::expected_version(&same),
        Some(3),
        "{same:?}"
    );
    submit(&mut aus, again(&stolen)).await.unwrap();
    // The report is back for readers and counts towards its state's standing.
    let mut idn = world.exchange("IDN").await;
    let seen = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap();
    let back = seen
        .iter()
        .find(|r| r.meta.as_ref().unwrap().report_id == stolen.report_id)
        .expect("the report is back");
    assert_eq!(back.meta.as_ref().unwrap().version, 3);
    let standing = aus
        .my_standing(pb::MyStandingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(standing.categories[0].contributed, 1, "{standing:?}");
}

#[tokio::test]
async fn owner_scopes_hold_for_every_raw_read() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    let listed = report("AUS", 10, false, pb::SharingScope::ListedStates, &["IDN"]);
    let aggregate = report("AUS", 11, false, pb::SharingScope::AggregateOnly, &[]);
    let open = report("AUS", 12, false, all, &[]);
    for r in [&listed, &aggregate, &open] {
        world.submit(r).await;
    }
    // IDN and THA both contribute, so both stand.
    world.submit(&report("IDN", 13, false, all, &[])).await;
    world.submit(&report("THA", 14, false, all, &[])).await;

    let sees = |results: &BTreeSet<String>, r: &pb::Report| results.contains(&r.report_id);
    for (reader, sees_listed) in [("IDN", true), ("THA", false)] {
        let mut ex = world.exchange(reader).await;
        let queried = ids_of(
            &query(&mut ex, by_category(pb::Category::SmugglingIncident))
                .await
                .unwrap(),
        );
        let synced: BTreeSet<String> = sync_all(&mut ex, pb::Category::SmugglingIncident, 0)
            .await
            .unwrap()
            .iter()
            .map(|i| i.meta.as_ref().unwrap().report_id.clone())
            .collect();
        for ids in [&queried, &synced] {
            assert_eq!(
                sees(ids, &listed),
                sees_listed,
                "{reader} and the listed-states report"
            );
            assert!(
                !sees(ids, &aggregate),
                "{reader} must never see an aggregate-only record"
            );
            assert!(
                sees(ids, &open),
                "{reader} sees the report shared with all contributors"
            );
        }
    }
    // The owner sees all of its own.
    let mut aus = world.exchange("AUS").await;
    let own = ids_of(
        &query(&mut aus, by_category(pb::Category::SmugglingIncident))
            .await
            .unwrap(),
    );
    assert!(sees(&own, &listed) && sees(&own, &aggregate) && sees(&own, &open));

    // Analysts never get raw records.
    let mut analyst = world
        .server
        .exchange(&world.pki.client(Role::StateAnalyst(state("IDN")), "a"))
        .await;
    let status = query(&mut analyst, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn sync_carries_amendments_and_retractions_and_resumes_without_gaps() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    let mut reports = Vec::new();
    for i in 0..30 {
        let r = report(["AUS", "THA"][i % 2], 100 + i as u64, false, all, &[]);
        world.submit(&r).await;
        reports.push(r);
    }
    world.submit(&report("IDN", 200, false, all, &[])).await;
    // An amendment and a retraction.
    let amended = pb::Report {
        version: 2,
        narrative: "Amended.".into(),
        ..reports[0].clone()
    };
    world.submit(&amended).await;
    let retraction = pb::Retraction {
        report_id: reports[1].report_id.clone(),
        reporting_state: reports[1].reporting_state.clone(),
        version: 2,
        reason: "duplicate".into(),
    };
    let env = tidemark::envelope::sign(
        tidemark::envelope::RETRACTION_PAYLOAD_TYPE,
        retraction.encode_to_vec(),
        world.key(&reports[1].reporting_state),
    );
    let mut owner = world.exchange(&reports[1].reporting_state).await;
    submit(&mut owner, env).await.unwrap();

    let mut idn = world.exchange("IDN").await;
    let full = sync_all(&mut idn, pb::Category::SmugglingIncident, 0)
        .await
        .unwrap();
    let kinds: Vec<(String, u32, String)> = full
        .iter()
        .map(|i| {
            let m = i.meta.as_ref().unwrap();
            (m.report_id.clone(), m.version, m.kind.clone())
        })
        .collect();
    assert!(
        kinds.contains(&(reports[0].report_id.clone(), 2, "report".into())),
        "the amendment is synced"
    );
    assert!(
        kinds.contains(&(reports[1].report_id.clone(), 2, "retraction".into())),
        "the retraction is synced"
    );
    // A retracted report is withdrawn: a state that syncs after the retraction gets the
    // retraction alone, none of the report's versions.
    assert!(
        !kinds.contains(&(reports[1].report_id.clone(), 1, "report".into())),
        "the retracted report's content is synced"
    );
    assert_eq!(
        full.len(),
        32,
        "29 + IDN's own + amendment + retraction (not the retracted report)"
    );

    // Interrupted after 7 items, resumed from the last sequence: the same set, once each.
    let mut stream = idn
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut resumed = Vec::new();
    for _ in 0..7 {
        resumed.push(stream.message().await.unwrap().unwrap());
    }
    drop(stream);
    let last = resumed.last().unwrap().meta.as_ref().unwrap().sequence;
    resumed.extend(
        sync_all(&mut idn, pb::Category::SmugglingIncident, last)
            .await
            .unwrap(),
    );
    let seqs = |items: &[pb::SyncItem]| {
        items
            .iter()
            .map(|i| i.meta.as_ref().unwrap().sequence)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&resumed), seqs(&full));
}

/// A retraction reaches every state a version of the report may have been shown to,
/// even when the owner narrowed the report before retracting it: a state that mirrored
/// the first version learns it was withdrawn (an outside pass saw its mirror keep it as
/// live for good), on Sync resumed and on Query with retractions; a state it was never
/// shown to gets nothing.
#[tokio::test]
async fn a_report_narrowed_then_retracted_is_retracted_for_those_who_had_it() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    let listed = pb::SharingScope::ListedStates;
    for s in ["IDN", "THA"] {
        world.submit(&report(s, 500, false, all, &[])).await;
    }
    let first = report("AUS", 501, false, listed, &["IDN"]);
    world.submit(&first).await;
    let mut idn = world.exchange("IDN").await;
    let mirrored = sync_all(&mut idn, pb::Category::SmugglingIncident, 0)
        .await
        .unwrap();
    let at = mirrored.last().unwrap().meta.as_ref().unwrap().sequence;
    assert!(
        mirrored
            .iter()
            .any(|i| i.meta.as_ref().unwrap().report_id == first.report_id)
    );
    let narrowed = pb::Report {
        version: 2,
        sharing: Some(pb::Sharing {
            scope: pb::SharingScope::AggregateOnly as i32,
            ..Default::default()
        }),
        ..first.clone()
    };
    world.submit(&narrowed).await;
    let mut aus = world.exchange("AUS").await;
    submit(&mut aus, common::retraction(&first, 3, world.key("AUS")))
        .await
        .unwrap();

    let resumed = sync_all(&mut idn, pb::Category::SmugglingIncident, at)
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = resumed
        .iter()
        .map(|i| {
            let m = i.meta.as_ref().unwrap();
            (m.report_id.clone(), m.kind.clone())
        })
        .collect();
    assert_eq!(kinds, [(first.report_id.clone(), "retraction".to_owned())]);
    let with_retracted = pb::QueryRequest {
        include_retracted: true,
        ..by_category(pb::Category::SmugglingIncident)
    };
    let listed_retraction = |results: &[pb::QueryResult]| {
        results.iter().any(|r| {
            let m = r.meta.as_ref().unwrap();
            m.report_id == first.report_id && m.kind == "retraction"
        })
    };
    assert!(listed_retraction(
        &query(&mut idn, with_retracted.clone()).await.unwrap()
    ));
    // THA was never shown it: neither the report nor its retraction.
    let mut tha = world.exchange("THA").await;
    let synced = sync_all(&mut tha, pb::Category::SmugglingIncident, 0)
        .await
        .unwrap();
    assert!(
        !synced
            .iter()
            .any(|i| i.meta.as_ref().unwrap().report_id == first.report_id)
    );
    assert!(!listed_retraction(
        &query(&mut tha, with_retracted).await.unwrap()
    ));
}

#[tokio::test]
async fn owners_see_who_read_their_reports() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    for i in 0..3 {
        world.submit(&report("AUS", 300 + i, false, all, &[])).await;
    }
    world.submit(&report("IDN", 310, false, all, &[])).await;
    let mut idn = world.exchange("IDN").await;
    let read = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap();
    assert_eq!(read.len(), 4);

    let mut aus = world.exchange("AUS").await;
    // The audit is written as the stream ends; give it a moment.
    let mut accesses = Vec::new();
    for _ in 0..50 {
        accesses = aus
            .access_to_my_data(pb::AccessToMyDataRequest {
                limit: 10,
                before: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .accesses;
        // The list also holds the operator's registration of AUS's key (with a detail).
        accesses.retain(|a| a.detail.is_empty());
        if !accesses.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(accesses.len(), 1, "{accesses:?}");
    let access = &accesses[0];
    assert_eq!(
        (
            access.reader_state.as_str(),
            access.action.as_str(),
            access.count
        ),
        ("IDN", "query", 3)
    );
    assert_eq!(access.report_ids.len(), 3);
    assert!(access.reader.contains("/state/IDN/node/"));
}

#[tokio::test]
async fn queries_filter_by_date_route_and_state() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    let mut a = report("AUS", 400, false, all, &[]);
    a.incident_date = "2021-03-10".into();
    a.route.as_mut().unwrap().origin = "LKA".into();
    let mut b = report("THA", 401, false, all, &[]);
    b.incident_date = "2021-03-20".into();
    b.route.as_mut().unwrap().origin = "MMR".into();
    b.route.as_mut().unwrap().transit = vec!["MYS".into()];
    let mut c = report("AUS", 402, false, all, &[]);
    c.incident_date = "2022-01-01".into();
    for r in [&a, &b, &c] {
        world.submit(r).await;
    }
    world.submit(&report("IDN", 403, false, all, &[])).await;
    let mut idn = world.exchange("IDN").await;
    let march = pb::QueryRequest {
        from_date: "2021-03-01".into(),
        to_date: "2021-03-31".into(),
        ..by_category(pb::Category::SmugglingIncident)
    };
    assert_eq!(
        ids_of(&query(&mut idn, march.clone()).await.unwrap()),
        BTreeSet::from([a.report_id.clone(), b.report_id.clone()])
    );
    let route = pb::QueryRequest {
        route_countries: vec!["MYS".into()],
        ..march.clone()
    };
    assert_eq!(
        ids_of(&query(&mut idn, route).await.unwrap()),
        BTreeSet::from([b.report_id.clone()])
    );
    let aus_only = pb::QueryRequest {
        reporting_states: vec!["AUS".into()],
        ..by_category(pb::Category::SmugglingIncident)
    };
    assert_eq!(
        ids_of(&query(&mut idn, aus_only).await.unwrap()),
        BTreeSet::from([a.report_id.clone(), c.report_id.clone()])
    );

    // Paging: one at a time with the cursor gives the same results in the same order.
    let everything = query(&mut idn, by_category(pb::Category::SmugglingIncident))
        .await
        .unwrap();
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = query(
            &mut idn,
            pb::QueryRequest {
                limit: 1,
                after: after.clone(),
                ..by_category(pb::Category::SmugglingIncident)
            },
        )
        .await
        .unwrap();
        let Some(last) = page.last() else { break };
        after = last.cursor.clone();
        paged.extend(page);
    }
    assert_eq!(paged, everything);

    let bad = query(
        &mut idn,
        pb::QueryRequest {
            from_date: "2021-13-01".into(),
            ..march
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn next_item(
    stream: &mut tonic::Streaming<pb::SyncItem>,
) -> Result<Option<pb::SyncItem>, tonic::Status> {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the subscription stays silent for 10 s")
}

#[tokio::test]
async fn subscribers_get_matching_new_reports_until_their_standing_lapses() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let world = World::new(clock).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 500, false, all, &[])).await;
    world.submit(&report("THA", 501, false, all, &[])).await;
    let filter = pb::QueryRequest {
        route_countries: vec!["LKA".into()],
        ..by_category(pb::Category::SmugglingIncident)
    };
    let mut idn = world.exchange("IDN").await;
    let mut tha = world.exchange("THA").await;
    let mut idn_stream = idn.subscribe(filter.clone()).await.unwrap().into_inner();
    let mut tha_stream = tha.subscribe(filter).await.unwrap().into_inner();

    let with_origin = |mut r: pb::Report, origin: &str| {
        r.route.as_mut().unwrap().origin = origin.into();
        r.route.as_mut().unwrap().transit.clear();
        r.route.as_mut().unwrap().intended_destination = "AUS".into();
        r
    };
    // Not sent: another route, another category, an aggregate-only report, and (to THA)
    // a report listed for IDN only.
    world
        .submit(&with_origin(report("AUS", 502, false, all, &[]), "AFG"))
        .await;
    world
        .submit(&with_origin(report("AUS", 503, true, all, &[]), "LKA"))
        .await;
    world
        .submit(&with_origin(
            report("AUS", 507, false, pb::SharingScope::AggregateOnly, &[]),
            "LKA",
        ))
        .await;
    let listed = with_origin(
        report("AUS", 504, false, pb::SharingScope::ListedStates, &["IDN"]),
        "LKA",
    );
    world.submit(&listed).await;
    let open = with_origin(report("AUS", 505, false, all, &[]), "LKA");
    world.submit(&open).await;

    let id = |item: Option<pb::SyncItem>| item.unwrap().meta.unwrap().report_id;
    assert_eq!(
        id(next_item(&mut idn_stream).await.unwrap()),
        listed.report_id
    );
    assert_eq!(
        id(next_item(&mut idn_stream).await.unwrap()),
        open.report_id
    );
    assert_eq!(
        id(next_item(&mut tha_stream).await.unwrap()),
        open.report_id,
        "THA is not listed"
    );

    // A year later IDN's contribution has lapsed: the next push ends its stream with the reason.
    now.fetch_add(366 * DAY, Ordering::SeqCst);
    world
        .submit(&with_origin(report("AUS", 506, false, all, &[]), "LKA"))
        .await;
    let status = match next_item(&mut idn_stream).await {
        Err(status) => status,
        Ok(item) => panic!("pushed after the lapse: {:?}", item.map(|i| i.meta)),
    };
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .starts_with("IDN has contributed 0 smuggling-incident reports"),
        "{}",
        status.message()
    );
}
