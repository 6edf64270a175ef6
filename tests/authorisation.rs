//! Authorisation for the whole life of every call: long-lived calls end when their caller
//! is revoked or suspended (busy or idle), health and reflection follow the same rule,
//! serials have one form, versions are served only under their own scope, reads are on
//! record before data flows, and resume cursors advance for every key.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{TestPki, TestServer, World, node, operator, report, sign};
use proptest::prelude::*;
use tidemark::{
    clock::Clock,
    identity::Role,
    pb::{self, transparency_client::TransparencyClient},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

type Exchange = pb::exchange_client::ExchangeClient<Channel>;

/// The serial of the certificate `exchange` connects with.
async fn serial_of(exchange: &mut Exchange) -> String {
    exchange
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial
}

/// Long enough that a call which should end never makes the test hang.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Cause {
    Revoke,
    Suspend,
}

impl Cause {
    fn code(self) -> Code {
        match self {
            Self::Revoke => Code::Unauthenticated,
            Self::Suspend => Code::PermissionDenied,
        }
    }

    /// Revokes the reader's certificate, or suspends its state.
    async fn apply(self, world: &World, reader: &mut Exchange) {
        let mut admin = world.server.admin(&operator(&world.pki)).await;
        match self {
            Self::Revoke => {
                let serial = serial_of(reader).await;
                admin
                    .revoke_certificate(pb::RevokeCertificateRequest {
                        serial,
                        reason: "key-compromise".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            Self::Suspend => {
                admin
                    .suspend_state(pb::StateRequest {
                        state: "IDN".into(),
                    })
                    .await
                    .unwrap();
            }
        }
    }
}

fn smuggling() -> pb::QueryRequest {
    pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    }
}

/// A world where IDN stands (one smuggling report) and AUS has `n` reports visible to it.
async fn world_with_reports(n: u64) -> World {
    fill(World::new(Clock::system()).await, n).await
}

/// `world`, where IDN now stands and AUS has `n` more reports visible to it.
async fn fill(world: World, n: u64) -> World {
    fill_with(world, n, |_| {}).await
}

/// [`fill`], each of AUS's reports changed by `edit` first.
async fn fill_with(world: World, n: u64, edit: impl Fn(&mut pb::Report)) -> World {
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 9_999, false, all, &[])).await;
    let items: Vec<pb::SubmitRequest> = (0..n)
        .map(|seed| {
            let mut aus = report("AUS", seed, false, all, &[]);
            edit(&mut aus);
            pb::SubmitRequest {
                envelope: Some(sign(&aus, world.key("AUS"))),
                ..Default::default()
            }
        })
        .collect();
    let summary = world
        .exchange("AUS")
        .await
        .import(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, n, "{:?}", summary.rejections);
    world
}

/// Waits until `done` holds, checking every 100 ms for at most [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `state`'s `action` read is on the audit log and complete.
async fn completed(world: &World, state: &str, action: &str) -> bool {
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    common::audit_log(&mut admin)
        .await
        .iter()
        .any(|e| e.action == action && e.state == state && !e.in_progress)
}

/// Reads a response stream to its end; returns how many items came and how it ended.
async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (usize, Result<(), Status>) {
    let mut items = 0;
    loop {
        let next = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream neither ends nor sends anything");
        match next {
            Ok(Some(_)) => items += 1,
            Ok(None) => return (items, Ok(())),
            Err(status) => return (items, Err(status)),
        }
    }
}

fn assert_refused(result: Result<(), Status>, cause: Cause, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), cause.code(), "{what}: {status:?}");
    let reason = match cause {
        Cause::Revoke => "revoked",
        Cause::Suspend => "suspended",
    };
    assert!(status.message().contains(reason), "{what}: {status:?}");
}

#[tokio::test]
async fn an_idle_subscription_ends_on_revocation_and_on_suspension() {
    for cause in [Cause::Revoke, Cause::Suspend] {
        let world = world_with_reports(1).await;
        let mut idn = world.exchange("IDN").await;
        let mut stream = idn.subscribe(smuggling()).await.unwrap().into_inner();
        cause.apply(&world, &mut idn).await;
        // Nothing is due to be sent: the stream still ends, with the reason.
        let (items, end) = drain(&mut stream).await;
        assert_eq!(items, 0);
        assert_refused(end, cause, "idle subscription");
    }
}

/// A node of `state` whose HTTP/2 receive windows are small (16 KiB), so that a server
/// streaming to it has to wait for it to read: a stream stays busy for as long as the
/// test likes.
async fn small_window_reader(world: &World, state: &str) -> Exchange {
    pb::exchange_client::ExchangeClient::new(
        common::small_window_channel(&world.server, &node(&world.pki, state)).await,
    )
}

/// An owner who narrows a report's scope while another state's query or sync is
/// running stops that read from sending the report: the scope is rechecked as each item
/// goes, not only as it stood when the read began.
#[tokio::test]
async fn a_scope_narrowed_during_a_read_stops_the_read_from_sending_the_report() {
    for sync in [false, true] {
        let world = world_with_reports(600).await;
        let all = pb::SharingScope::AllContributors;
        let mut last = report("AUS", 100_000, false, all, &[]);
        // Last by date (the query's order) and by sequence (sync's): far behind what the
        // connection holds when the scope is narrowed.
        last.incident_date = "2026-01-01".into();
        world.submit(&last).await;
        let mut idn = small_window_reader(&world, "IDN").await;
        let ids = if sync {
            let request = pb::SyncRequest {
                category: pb::Category::SmugglingIncident as i32,
                after_sequence: 0,
                ..Default::default()
            };
            let stream = idn.sync(request).await.unwrap().into_inner();
            read_while_narrowing(stream, |i| i.meta, &world, &last).await
        } else {
            let stream = idn.query(smuggling()).await.unwrap().into_inner();
            read_while_narrowing(stream, |i| i.meta, &world, &last).await
        };
        assert!(ids.len() > 500, "sync {sync}: {} items", ids.len());
        assert!(
            !ids.contains(&last.report_id),
            "sync {sync}: the narrowed report was sent"
        );
    }
}

/// Reads one item of `stream`, has AUS narrow `last` to aggregate-only, then reads the
/// rest: the report ids read.
async fn read_while_narrowing<T>(
    mut stream: tonic::Streaming<T>,
    meta: impl Fn(T) -> Option<pb::EnvelopeMeta>,
    world: &World,
    last: &pb::Report,
) -> Vec<String> {
    let id = |item: T| meta(item).unwrap().report_id;
    let mut ids = vec![id(stream.message().await.unwrap().unwrap())];
    assert_ne!(ids[0], last.report_id);
    let mut narrowed = last.clone();
    narrowed.version = 2;
    narrowed.sharing = Some(pb::Sharing {
        scope: pb::SharingScope::AggregateOnly as i32,
        ..Default::default()
    });
    world.submit(&narrowed).await;
    while let Some(item) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the read neither ends nor sends anything")
        .unwrap()
    {
        ids.push(id(item));
    }
    ids
}

/// Items already queued for a reader (behind its small window) are held to their report
/// as it stands when they go, not as it stood when they were queued: one narrowed or
/// retracted meanwhile is not sent (only a retraction goes to another state once a report
/// is retracted), and one amended meanwhile goes with its status as it now stands (never
/// as live). Query, sync and subscribe.
#[tokio::test]
async fn items_already_queued_are_held_to_a_scope_narrowed_or_a_report_retracted_meanwhile() {
    const REPORTS: u64 = 400;
    let all = pb::SharingScope::AllContributors;
    let sync_request = || pb::SyncRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    for read in ["query", "sync", "subscribe"] {
        let world = world_with_reports(REPORTS).await;
        let by_id: BTreeMap<String, pb::Report> = (0..REPORTS)
            .map(|seed| report("AUS", seed, false, all, &[]))
            .map(|r| (r.report_id.clone(), r))
            .collect();
        // AUS's reports in the order the read sends them (a subscription: as imported).
        let mut wide = world.exchange("IDN").await;
        let order: Vec<String> = if read == "query" {
            let stream = wide.query(smuggling()).await.unwrap().into_inner();
            read_around(stream, |i| i.meta, async {}, usize::MAX, u32::MAX).await
        } else {
            let stream = wide.sync(sync_request()).await.unwrap().into_inner();
            read_around(stream, |i| i.meta, async {}, usize::MAX, u32::MAX).await
        }
        .into_iter()
        .filter(|meta| meta.reporting_state == "AUS")
        .map(|meta| meta.report_id)
        .collect();
        // Well past what the small window and one encoded chunk took (about 110 of these
        // small reports), within the read's queue (256 items) behind them.
        let (narrowed, retracted, amended) = (&order[220], &order[230], &order[240]);
        // A subscription's pushes queue up as AUS amends every report (below): the changes
        // made while they wait are version 3.
        let version = if read == "subscribe" { 3 } else { 2 };
        let change = async {
            let mut v = by_id[narrowed].clone();
            v.version = version;
            v.sharing = Some(pb::Sharing {
                scope: pb::SharingScope::AggregateOnly as i32,
                ..Default::default()
            });
            world.submit(&v).await;
            let mut aus = world.exchange("AUS").await;
            let retraction = common::retraction(&by_id[retracted], version, world.key("AUS"));
            common::submit(&mut aus, retraction).await.unwrap();
            let mut v = by_id[amended].clone();
            v.version = version;
            world.submit(&v).await;
        };
        let mut idn = small_window_reader(&world, "IDN").await;
        let metas: Vec<pb::EnvelopeMeta> = match read {
            "query" => {
                let stream = idn.query(smuggling()).await.unwrap().into_inner();
                Box::pin(read_around(stream, |i| i.meta, change, usize::MAX, version)).await
            }
            "sync" => {
                let stream = idn.sync(sync_request()).await.unwrap().into_inner();
                Box::pin(read_around(stream, |i| i.meta, change, usize::MAX, version)).await
            }
            _ => {
                let stream = idn.subscribe(smuggling()).await.unwrap().into_inner();
                let items = order.iter().map(|id| {
                    let mut v2 = by_id[id].clone();
                    v2.version = 2;
                    common::submit_request(sign(&v2, world.key("AUS")))
                });
                let mut aus = world.exchange("AUS").await;
                let items: Vec<_> = items.collect();
                aus.import(tokio_stream::iter(items)).await.unwrap();
                Box::pin(read_around(stream, |i| i.meta, change, 300, version)).await
            }
        };
        assert!(
            !metas
                .iter()
                .any(|m| m.report_id == *retracted && m.kind == "report"),
            "{read}: a version of the report retracted while queued was sent"
        );
        let seen: BTreeMap<String, pb::EnvelopeMeta> = metas
            .into_iter()
            .map(|meta| (meta.report_id.clone(), meta))
            .collect();
        assert!(seen.len() > 150, "{read}: {} items", seen.len());
        assert!(
            !seen.contains_key(narrowed),
            "{read}: the report narrowed while queued was sent"
        );
        let status = |id: &String| seen.get(id).map(|m| m.status);
        assert_eq!(
            status(amended),
            Some(pb::ReportStatus::Amended as i32),
            "{read}: the report amended while queued"
        );
    }
}

/// Reads the first item of `stream`, waits for the server to fill the read's queue
/// behind a small window, runs `change`, then reads on until the stream ends or
/// `wanted` reports were read: the first item of each report, of a version below
/// `below`, in the order read.
async fn read_around<T>(
    mut stream: tonic::Streaming<T>,
    meta: impl Fn(T) -> Option<pb::EnvelopeMeta>,
    change: impl std::future::Future<Output = ()>,
    wanted: usize,
    below: u32,
) -> Vec<pb::EnvelopeMeta> {
    let mut seen: Vec<pb::EnvelopeMeta> = Vec::new();
    let keep = |seen: &mut Vec<pb::EnvelopeMeta>, item: T| {
        let meta = meta(item).unwrap();
        if meta.version < below && !seen.iter().any(|m| m.report_id == meta.report_id) {
            seen.push(meta);
        }
    };
    keep(
        &mut seen,
        stream.message().await.unwrap().expect("the first item"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    change.await;
    while seen.len() < wanted {
        let next = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the read neither ends nor sends anything");
        match next.unwrap() {
            Some(item) => keep(&mut seen, item),
            None => break,
        }
    }
    seen
}

#[tokio::test]
async fn a_busy_query_or_sync_ends_on_revocation_and_on_suspension() {
    // Far more than the reader's 16 KiB receive window holds, so the server is still
    // sending when the caller loses its rights.
    const REPORTS: u64 = 1_000;
    let world = world_with_reports(REPORTS).await;
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    for cause in [Cause::Revoke, Cause::Suspend] {
        for sync in [false, true] {
            // A fresh certificate each time (`exchange` issues one), IDN reinstated.
            admin
                .enrol_state(pb::StateRequest {
                    state: "IDN".into(),
                })
                .await
                .unwrap();
            let mut idn = small_window_reader(&world, "IDN").await;
            let what = format!("{} after {cause:?}", if sync { "sync" } else { "query" });
            let (first, end, rest) = if sync {
                let mut stream = idn
                    .sync(pb::SyncRequest {
                        category: pb::Category::SmugglingIncident as i32,
                        after_sequence: 0,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let first = stream.message().await.unwrap();
                cause.apply(&world, &mut idn).await;
                let (rest, end) = drain(&mut stream).await;
                (first.is_some(), end, rest)
            } else {
                let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
                let first = stream.message().await.unwrap();
                cause.apply(&world, &mut idn).await;
                let (rest, end) = drain(&mut stream).await;
                (first.is_some(), end, rest)
            };
            assert!(first, "{what}: the first item arrives");
            if let (Cause::Suspend, Err(status)) = (cause, &end) {
                // A refusal met mid-stream is on record too, named in the trailers.
                let method = if sync {
                    "refused sync"
                } else {
                    "refused query"
                };
                assert_refusal_on_record(&mut admin, status, ("IDN", method)).await;
            }
            assert_refused(end, cause, &what);
            // What was already in flight may arrive; the rest is never sent.
            assert!(
                (rest as u64) < REPORTS / 4,
                "{what}: {rest} items after the revocation"
            );
        }
    }
}

/// A world of 1,000 reports for IDN to read, on a server that closes a connection one
/// second after its certificate's rights lapse.
async fn world_closing_lapsed_connections() -> World {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.lapsed_connection_grace_secs = 1;
    })
    .await;
    fill(World::on(pki, server).await, 1_000).await
}

/// Starts a query on `reader` and takes its first item only: the server is soon held up
/// by the reader's small window and is no longer asked for items.
async fn stalled_query(reader: &mut Exchange) -> tonic::Streaming<pb::QueryResult> {
    let mut stream = reader.query(smuggling()).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the first item");
    stream
}

/// A read whose caller has stopped reading is not asked for its next item, so it cannot
/// see a revocation or suspension; its connection is closed
/// `limits.lapsed_connection_grace_secs` after, which ends the read and completes its
/// record at once, not after `limits.read_stall_secs` (60 s).
#[tokio::test]
async fn a_stalled_read_ends_with_its_connection_on_revocation_and_on_suspension() {
    for cause in [Cause::Revoke, Cause::Suspend] {
        let world = world_closing_lapsed_connections().await;
        let mut idn = small_window_reader(&world, "IDN").await;
        let mut stream = stalled_query(&mut idn).await;
        cause.apply(&world, &mut idn).await;
        eventually("the stalled query ends and its record is completed", || {
            completed(&world, "IDN", "query")
        })
        .await;
        let (rest, end) = drain(&mut stream).await;
        // The refusal, if its trailers got out before the connection was closed, or
        // the broken connection.
        let status = end.expect_err("the read ended");
        assert!(
            [cause.code(), Code::Unknown].contains(&status.code()),
            "{cause:?}: {status:?}"
        );
        assert!(rest < 250, "{cause:?}: {rest} items after the lapse");
    }
}

/// A state reinstated within the grace period keeps its connections.
#[tokio::test]
async fn a_state_reinstated_within_the_grace_period_keeps_its_connection() {
    let world = world_closing_lapsed_connections().await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = stalled_query(&mut idn).await;
    Cause::Suspend.apply(&world, &mut idn).await;
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    admin
        .enrol_state(pb::StateRequest {
            state: "IDN".into(),
        })
        .await
        .unwrap();
    // Past the grace period.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // The query ends with the reason if it was asked for an item while IDN was
    // suspended, or goes on to its end; had the connection been closed, it would end
    // with the broken connection.
    let (rest, end) = drain(&mut stream).await;
    match end {
        Ok(()) => assert_eq!(rest, 1_000, "AUS's 1,000 reports and IDN's own, less one"),
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
    }
}

/// A connection whose certificate expires is closed, whether or not its stalled read is
/// ever asked for an item again.
#[tokio::test]
async fn a_stalled_read_ends_with_its_connection_when_the_certificate_expires() {
    let world = world_closing_lapsed_connections().await;
    let now = time::OffsetDateTime::now_utc();
    let principal = tidemark::identity::Principal::new(
        common::TRUST_DOMAIN,
        Role::Node(common::state("IDN")),
        "idn-short-lived",
    )
    .unwrap();
    let issued = world
        .pki
        .ca
        .issue_client(
            &principal,
            tidemark::pki::Validity {
                not_before: now - time::Duration::hours(1),
                not_after: now + time::Duration::seconds(3),
            },
        )
        .unwrap();
    let mut idn = pb::exchange_client::ExchangeClient::new(
        common::small_window_channel(&world.server, &world.pki.identity(&issued)).await,
    );
    let mut stream = stalled_query(&mut idn).await;
    eventually("the stalled query ends and its record is completed", || {
        completed(&world, "IDN", "query")
    })
    .await;
    let (_, end) = drain(&mut stream).await;
    end.expect_err("the connection was closed");
}

/// The audit record of IDN's query, as the operator reads it.
async fn idn_query_record(world: &World) -> pb::AuditEntry {
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    common::audit_log(&mut admin)
        .await
        .into_iter()
        .find(|e| e.action == "query" && e.state == "IDN")
        .unwrap()
}

/// A read whose caller goes away part-way is on record with what the server handed to
/// HTTP/2 — what can have reached the caller — not with what it had queued behind that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_left_part_way_is_on_record_with_what_was_taken_not_what_was_queued() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let world = fill(World::on(pki, server).await, 1_000).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
    let mut received = 0;
    for _ in 0..10 {
        let item = stream.message().await.unwrap().unwrap();
        received += u64::from(item.meta.unwrap().reporting_state == "AUS");
    }
    // The server queues what it can meanwhile; then the caller goes away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stream);
    eventually("the query's record is completed", || {
        completed(&world, "IDN", "query")
    })
    .await;
    let record = idn_query_record(&world).await;
    // What HTTP/2 took but the caller did not read (about 50 items with these windows)
    // counts; the server's queue behind it (256 items) does not.
    let recorded = record.by_owner.get("AUS").copied().unwrap_or(0);
    assert!(!record.in_progress, "{record:?}");
    assert!(
        (received..received + 128).contains(&recorded),
        "{recorded} recorded, {received} received"
    );
}

/// An operator's backup over a small-window channel, read as far as its manifest.
async fn backup_to_its_manifest(world: &World) -> tonic::Streaming<pb::BackupChunk> {
    let channel = common::small_window_channel(&world.server, &operator(&world.pki)).await;
    let mut backup = pb::admin_client::AdminClient::new(channel)
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    backup.message().await.unwrap().expect("the manifest");
    backup
}

/// A read the server's shutdown cuts still has its audit record completed, with what its
/// caller took, before the store is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_by_a_shutdown_is_completed_on_record() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.shutdown_grace_secs = 1;
    })
    .await;
    let world = fill(World::on(pki, server).await, 1_000).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let subscription = idn.subscribe(smuggling()).await.unwrap().into_inner();
    // A backup too, read no further than its manifest.
    let backup = backup_to_its_manifest(&world).await;
    let World { pki, server, .. } = world;
    let data = server.stop().await;
    drop((stream, subscription, backup));
    let store = common::open_store_after_stop(&data).await;
    let server = tidemark::server::Server::build_on(pki.config(&data), store).unwrap();
    let server = TestServer::run(server, data).await;
    let mut admin = server.admin(&operator(&pki)).await;
    let log = common::audit_log(&mut admin).await;
    let record = |action: &str| {
        log.iter()
            .find(|e| e.action == action && e.state == "IDN")
            .unwrap()
    };
    let query = record("query");
    assert!(!query.in_progress, "{query:?}");
    assert!(
        query.by_owner.get("AUS").is_some_and(|&n| n < 1_000),
        "{query:?}"
    );
    let subscription = record("subscribe");
    assert!(!subscription.in_progress, "{subscription:?}");
    let backup = log.iter().find(|e| e.action == "backup").unwrap();
    assert!(!backup.in_progress, "{backup:?}");
    assert!(
        backup.detail.contains("; cut short after ")
            && backup.detail.contains("the server is stopping"),
        "{backup:?}"
    );
}

/// Subscriptions never end by themselves, so they end as the server begins to stop —
/// told why — instead of holding it for the whole grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_as_the_server_begins_to_stop() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.shutdown_grace_secs = 60;
    })
    .await;
    let world = fill(World::on(pki, server).await, 1).await;
    let mut idn = world.exchange("IDN").await;
    let mut subscription = idn.subscribe(smuggling()).await.unwrap().into_inner();
    let World { server, .. } = world;
    let stopped = tokio::time::timeout(PATIENCE, server.stop())
        .await
        .expect("the server stops well within its 60 s grace period");
    let end = tokio::time::timeout(PATIENCE, subscription.message())
        .await
        .expect("the subscription ends")
        .expect_err("with the reason");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("the server is stopping"), "{end:?}");
    drop(stopped);
}

/// A read whose caller stops taking items ends after `limits.read_stall_secs` with
/// DEADLINE_EXCEEDED, its audit record completed with what was sent: a caller that stops
/// reading holds no server thread or store snapshot for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_its_caller_stops_taking_ends_and_is_on_record_with_what_was_sent() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.read_stall_secs = 1;
    })
    .await;
    let world = fill(World::on(pki, server).await, 1_000).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    // The server gives up on the stalled read and completes its record.
    eventually("the stalled query ends", || {
        completed(&world, "IDN", "query")
    })
    .await;
    // Read again only after more than another stall: the end is still said, not a
    // clean close.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut received = u64::from(first.meta.unwrap().reporting_state == "AUS");
    let end = loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(item)) => received += u64::from(item.meta.unwrap().reporting_state == "AUS"),
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    let status = end.expect_err("the stalled read ends");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("not read from"), "{status:?}");
    assert!(received < 1_000, "{received}");
    let record = idn_query_record(&world).await;
    assert!(!record.in_progress, "{record:?}");
    assert_eq!(record.by_owner.get("AUS"), Some(&received), "{record:?}");
}

/// A read whose caller takes items steadily but slowly ends after
/// `limits.max_read_secs` in all, with DEADLINE_EXCEEDED, its audit record completed
/// with what was sent: no caller holds a store snapshot (which keeps the pages written
/// meanwhile from being reused) without end. It continues after its last cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_ends_after_the_longest_a_read_may_take_and_continues_from_its_cursor() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.max_read_secs = 1;
    })
    .await;
    let world = fill(World::on(pki, server).await, 1_000).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
    let mut ids = std::collections::BTreeSet::new();
    let mut received = 0u64;
    let mut cursor = String::new();
    let end = loop {
        // Never long enough to stall (`read_stall_secs`, 60 s).
        tokio::time::sleep(Duration::from_millis(10)).await;
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(item)) => {
                let meta = item.meta.unwrap();
                if meta.reporting_state == "AUS" {
                    received += 1;
                    ids.insert(meta.report_id);
                }
                cursor = item.cursor;
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    let status = end.expect_err("the slow read ends");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("limits.max_read_secs"),
        "{status:?}"
    );
    assert!(0 < received && received < 1_000, "{received}");
    let record = idn_query_record(&world).await;
    assert!(!record.in_progress, "{record:?}");
    assert_eq!(record.by_owner.get("AUS"), Some(&received), "{record:?}");
    // Continued after its last cursor, it gets the rest, once each.
    let mut rest = idn
        .query(pb::QueryRequest {
            after: cursor,
            ..smuggling()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(item) = rest.message().await.unwrap() {
        let meta = item.meta.unwrap();
        if meta.reporting_state == "AUS" {
            received += 1;
            ids.insert(meta.report_id);
        }
    }
    assert_eq!((received, ids.len()), (1_000, 1_000));
}

/// `tidemark query` whose output is read slowly goes on after the server ends its read
/// for its length (`limits.max_read_secs`), from its last cursor: each report once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidemark_query_goes_on_after_the_server_ends_a_long_read() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.max_read_secs = 1;
    })
    .await;
    // More than a stock client's HTTP/2 windows (2 MiB a stream) hold, so the server
    // has to wait for the command's output to be read.
    let world = fill_with(World::on(pki, server).await, 1_000, |long| {
        long.narrative = "Seen at dawn. ".repeat(280);
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let profile = common::cli_profile(&world.pki, &world.server, dir.path(), "IDN").await;
    // Without --limit, and with one the continuation must not start over (it returned
    // 5,000 more after 3,634 of --limit 5000, an outside pass).
    for limit in [None, Some(900)] {
        let reads_before = query_records(&world).await;
        let mut args = vec!["query", "--category", "smuggling", "--json"];
        let limit_text = limit.map(|l: u32| l.to_string()).unwrap_or_default();
        if limit.is_some() {
            args.extend(["--limit", &limit_text]);
        }
        let (lines, distinct) = slowly_read(&args, &profile, &world.server.endpoint()).await;
        // AUS's thousand and IDN's own, once each; or as many as the limit.
        let expected = limit.map_or(1_001, |l| usize::try_from(l).unwrap());
        assert_eq!((lines, distinct), (expected, expected), "--limit {limit:?}");
        let reads = query_records(&world).await - reads_before;
        assert!(
            reads >= 2,
            "the CLI's read was ended and continued: {reads} reads"
        );
    }
}

/// Runs `tidemark ARGS --as PROFILE --endpoint ENDPOINT`, reading its output slowly for
/// two seconds (past a 1 s `limits.max_read_secs`), then at once; it must succeed.
/// Returns how many lines it wrote, and how many distinct report ids they hold.
async fn slowly_read(args: &[&str], profile: &str, endpoint: &str) -> (usize, usize) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
    command
        .args(args)
        .args(["--as", profile, "--endpoint", endpoint])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut ids = std::collections::BTreeSet::new();
        let mut lines = 0;
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            if lines < 100 {
                std::thread::sleep(Duration::from_millis(20));
            }
            let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            ids.insert(line["meta"]["reportId"].as_str().unwrap().to_owned());
            lines += 1;
        }
        let out = child.wait_with_output().unwrap();
        common::cli::assert_ok(&out);
        (lines, ids.len())
    })
    .await
    .unwrap()
}

/// How many queries by IDN are on the audit log.
async fn query_records(world: &World) -> usize {
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    common::audit_log(&mut admin)
        .await
        .iter()
        .filter(|e| e.action == "query" && e.state == "IDN")
        .count()
}

/// Queries and syncs one principal has in progress are bounded: each holds a server
/// thread while its caller reads, however slowly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_may_have_only_so_many_reads_in_progress() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.max_reads_per_principal = 2;
    })
    .await;
    let world = fill(World::on(pki, server).await, 1_000).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let first = idn.query(smuggling()).await.unwrap().into_inner();
    let _second = idn
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = idn.query(smuggling()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_reads_per_principal = 2"),
        "{refused:?}"
    );
    // The refusal is on record, like every other, and its status names the record.
    let number = common::named_audit_number(&refused);
    let mut admin = world.server.admin(&common::operator(&world.pki)).await;
    let record = common::audit_record(&mut admin, number).await;
    assert_eq!(
        (record.action.as_str(), record.state.as_str()),
        ("refused query", "IDN"),
        "{record:?}"
    );
    // Its record says why, as the caller was told.
    let detail: serde_json::Value = serde_json::from_str(&record.detail).unwrap();
    assert_eq!(
        detail["refusal"].as_str(),
        Some(refused.message()),
        "{detail}"
    );
    // Another principal is not held back; and once a read ends, a new one may start.
    let other = world
        .pki
        .client(Role::Node(common::state("IDN")), "idn-other");
    let mut other = pb::exchange_client::ExchangeClient::new(world.server.channel(&other).await);
    assert!(other.query(smuggling()).await.is_ok());
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match idn.query(smuggling()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// A subscription whose caller stops reading while changes arrive ends after
/// `limits.read_stall_secs` with DEADLINE_EXCEEDED, telling it to catch up with sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_its_caller_stops_reading_ends() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.read_stall_secs = 1;
    })
    .await;
    let world = fill(World::on(pki, server).await, 0).await;
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.subscribe(smuggling()).await.unwrap().into_inner();
    // Far more than the stream's buffer and the reader's window hold.
    let world = fill(world, 2_000).await;
    eventually("the stalled subscription ends", || {
        completed(&world, "IDN", "subscribe")
    })
    .await;
    // Read again only after more than another stall: the end is still said, not a
    // clean close.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (received, end) = drain(&mut stream).await;
    let status = end.expect_err("the stalled subscription ends");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("sync"), "{status:?}");
    assert!(received < 2_000, "{received}");
    drop(world);
}

/// A backup its operator stops reading ends after `limits.read_stall_secs`, and the
/// copy of the store it was streaming is deleted then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_its_caller_stops_reading_ends_and_leaves_no_copy() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.read_stall_secs = 1;
    })
    .await;
    // Far more than the stream's buffer of four 64 KiB chunks and the reader's window.
    let world = fill(World::on(pki, server).await, 5_000).await;
    let mut backup = backup_to_its_manifest(&world).await;
    let copies = || {
        std::fs::read_dir(world.server.data.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("backup")
            })
            .count()
    };
    eventually("the copy is deleted when the stall ends the backup", || {
        std::future::ready(copies() == 0)
    })
    .await;
    // Read again only after more than another stall: the end is still said, not a
    // clean close.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let end = loop {
        match tokio::time::timeout(PATIENCE, backup.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    let status = end.expect_err("the stalled backup ends");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// A revocation or suspension is in force even when the CRL cannot be rewritten (its
/// directory is gone): the action is answered, on record, and ends the caller's calls.
#[tokio::test]
async fn a_revocation_takes_effect_when_the_crl_cannot_be_written() {
    let pki = TestPki::new();
    let crl_dir = tempfile::TempDir::new().unwrap();
    let crl = crl_dir.path().join("crl.pem");
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.tls.crl = crl.clone();
    })
    .await;
    let world = World::on(pki, server).await;
    assert!(crl.exists(), "written at start");
    drop(crl_dir);
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    let mut idn = world.exchange("IDN").await;
    let serial = serial_of(&mut idn).await;
    Cause::Revoke.apply(&world, &mut idn).await;
    let refused = idn.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // The CRL served is the new one, from memory, though its file could not be written.
    let crl = world
        .exchange("THA")
        .await
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner()
        .crl_pem;
    let (_, pem) = x509_parser::pem::parse_x509_pem(crl.as_bytes()).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    assert!(
        crl.iter_revoked_certificates()
            .any(|r| tidemark::identity::serial_hex(r.raw_serial()) == serial),
        "{serial} is not in the CRL served"
    );
    // Suspension: a new certificate of IDN is refused too.
    let mut idn = world.exchange("IDN").await;
    Cause::Suspend.apply(&world, &mut idn).await;
    let refused = world
        .exchange("IDN")
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "IDN is suspended: {refused:?}"
    );
    let log = common::audit_log(&mut admin).await;
    for action in ["revoke-certificate", "suspend-state"] {
        assert!(log.iter().any(|e| e.action == action), "{action}: {log:?}");
    }
}

/// A refusal met mid-stream whose record cannot be written (the disk has failed) does
/// not end the stream as a refusal: the caller is told the audit log could not be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_met_mid_stream_that_cannot_be_recorded_is_not_answered() {
    const DAY: i64 = 86_400;
    let (clock, now) = Clock::manual(time::OffsetDateTime::now_utc().unix_timestamp());
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let config = pki.config(&data);
    let (store, disk) = tidemark::Store::open_on_failing_disk(&config.store).unwrap();
    let server = tidemark::server::Server::build_on(config, store)
        .unwrap()
        .with_clock(clock);
    let server = TestServer::run(server, data).await;
    let world = fill(World::on(pki, server).await, 1).await;
    let mut idn = world.exchange("IDN").await;
    let mut stream = idn.subscribe(smuggling()).await.unwrap().into_inner();
    // The disk fails, then IDN's contribution lapses while its subscription is open.
    disk.start();
    now.fetch_add(366 * DAY, std::sync::atomic::Ordering::SeqCst);
    let (_, end) = drain(&mut stream).await;
    let status = end.expect_err("the subscription ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("refusal could not be written"),
        "{status:?}"
    );
    assert!(
        status.metadata().get("tidemark-audit").is_none(),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_busy_backup_ends_when_the_operators_certificate_is_revoked() {
    let world = world_with_reports(1_000).await;
    let second = world.pki.client(Role::Operator, "ops-2");
    let channel = common::small_window_channel(&world.server, &second).await;
    let mut backup = pb::admin_client::AdminClient::new(channel.clone())
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(pb::backup_chunk::Part::Manifest(manifest)) =
        backup.message().await.unwrap().unwrap().part
    else {
        panic!("the manifest comes first");
    };
    let serial = serial_of(&mut pb::exchange_client::ExchangeClient::new(channel)).await;
    world
        .server
        .admin(&operator(&world.pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial,
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut received = 0;
    let end = loop {
        let next = tokio::time::timeout(PATIENCE, backup.message())
            .await
            .expect("the backup neither ends nor sends anything");
        match next {
            Ok(Some(chunk)) => {
                if let Some(pb::backup_chunk::Part::Data(data)) = chunk.part {
                    received += data.len() as u64;
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    assert_refused(end, Cause::Revoke, "backup");
    // What was already in flight (a chunk or two of 64 KiB) may arrive; the rest of the
    // store is never sent.
    assert!(
        received < (512 * 1024).min(manifest.bytes),
        "{received} of {} bytes after the revocation",
        manifest.bytes
    );
    // Its record says it was cut short, not that a whole copy was taken.
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    let record = loop {
        let log = common::audit_log(&mut admin).await;
        let backup = log
            .into_iter()
            .rfind(|e| e.action == "backup" && e.principal.ends_with("/ops-2"))
            .expect("the backup is on record");
        if !backup.in_progress {
            break backup;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        record
            .detail
            .contains(&format!(" of {} bytes", manifest.bytes))
            && record.detail.contains("; cut short after ")
            && record.detail.contains("revoked"),
        "{record:?}"
    );
    // Each owner is shown part of a copy: its count bounds what left, and how much did.
    let accesses = world
        .exchange("AUS")
        .await
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses;
    let access = accesses
        .iter()
        .find(|a| a.action == "backup" && a.reader.ends_with("/ops-2"))
        .expect("the backup is on the owner's list");
    assert_eq!(access.copy_bytes, manifest.bytes, "{access:?}");
    assert!(
        (received..manifest.bytes).contains(&access.copy_bytes_sent) && access.count > 0,
        "{access:?}, {received} bytes received"
    );
}

/// `status` names its audit record in `tidemark-audit`, and the record is `state`'s
/// `action`.
async fn assert_refusal_on_record(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    status: &Status,
    (state, action): (&str, &str),
) {
    let record = common::audit_record(admin, common::audit_number(status)).await;
    assert_eq!(
        (record.state.as_str(), record.action.as_str()),
        (state, action)
    );
}

/// An import ended by its caller's revocation or suspension says what it did before:
/// its counts, and why it refused what it refused.
#[tokio::test]
async fn an_open_import_ends_on_revocation_and_on_suspension_even_while_waiting() {
    for cause in [Cause::Revoke, Cause::Suspend] {
        let world = world_with_reports(1).await;
        // IDN imports; its stream stays open, waiting for the next envelope.
        let mut idn = world.exchange("IDN").await;
        let (tx, rx) = mpsc::channel(4);
        // One accepted, one refused: a report of AUS's.
        for state in ["IDN", "AUS"] {
            let envelope = sign(
                &report(state, 1, false, pb::SharingScope::AllContributors, &[]),
                world.key("IDN"),
            );
            tx.send(pb::SubmitRequest {
                envelope: Some(envelope),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let mut import = {
            let mut idn = idn.clone();
            tokio::spawn(async move { idn.import(ReceiverStream::new(rx)).await })
        };
        // Let the first envelope be taken before the caller loses its rights.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!import.is_finished());
        cause.apply(&world, &mut idn).await;
        let result = tokio::time::timeout(PATIENCE, &mut import)
            .await
            .expect("the import ends by itself")
            .unwrap();
        let status = result.expect_err("open import");
        let trailers = tidemark::client::import_trailers::read(&status);
        assert_eq!(trailers, Some([2, 1, 0, 1]), "{status:?}");
        let summary = tidemark::client::import_trailers::summary(&status).unwrap();
        assert_eq!((summary.accepted, summary.rejected), (1, 1));
        let [refused] = &summary.rejections[..] else {
            panic!("{summary:?}")
        };
        assert_eq!(
            (refused.index, refused.code.as_str()),
            (1, "PERMISSION_DENIED")
        );
        assert!(refused.message.contains("AUS"), "{refused:?}");
        assert_refused(Err(status), cause, "open import");
        drop(tx);
    }
}

#[tokio::test]
async fn health_and_reflection_refuse_a_revoked_connection_and_end_their_open_streams() {
    let world = world_with_reports(0).await;
    let channel = world.server.channel(&node(&world.pki, "IDN")).await;
    let mut idn = pb::exchange_client::ExchangeClient::new(channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    health.check(check()).await.unwrap();
    // Streams opened before the revocation: a health Watch and a reflection session.
    let mut watch = health.watch(check()).await.unwrap().into_inner();
    watch.message().await.unwrap().unwrap();
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let (ask, questions) = mpsc::channel(4);
    ask.send(list()).await.unwrap();
    let mut reflection = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(ReceiverStream::new(questions))
        .await
        .unwrap()
        .into_inner();
    reflection.message().await.unwrap().unwrap();

    Cause::Revoke.apply(&world, &mut idn).await;
    let (_, end) = drain(&mut watch).await;
    assert_refused(end, Cause::Revoke, "an open health watch");
    let (_, end) = drain(&mut reflection).await;
    assert_refused(end, Cause::Revoke, "an open reflection stream");
    drop(ask);
    // New calls on the connection are refused too.
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([list()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn any_spelling_of_a_serial_revokes_the_one_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut admin = server.admin(&operator(&pki)).await;
    admin
        .enrol_state(pb::StateRequest {
            state: "AUS".into(),
        })
        .await
        .unwrap();
    let principal = tidemark::identity::Principal::new(
        common::TRUST_DOMAIN,
        Role::Node(common::state("AUS")),
        "spelled",
    )
    .unwrap();
    let (key_pem, csr_pem) = tidemark::pki::make_csr(&principal).unwrap();
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 30 })
        .await
        .unwrap()
        .into_inner();
    let identity = tidemark::client::ClientIdentity::from_pem(
        issued.certificate_pem,
        key_pem,
        pki.ca.cert_pem().to_owned(),
    );
    let mut open = server.exchange(&identity).await;
    open.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    // Upper case, colons and leading zero bytes: the same number.
    let bytes: Vec<String> = issued
        .serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let spelled = format!("00:{}", bytes.join(":"));
    let revoked = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: spelled.clone(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.serial, issued.serial, "{spelled}");
    let status = open.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let listed = admin
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert!(
        listed
            .iter()
            .any(|c| c.serial == issued.serial && c.revoked),
        "{listed:?}"
    );
    // Not a serial at all: refused, naming the field.
    let status = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "zz-top".into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("serial:"), "{status:?}");
    // The CRL is public: a node fetches it; Admin stays operator-only.
    let crl = server
        .exchange(&node(&pki, "IDN"))
        .await
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(crl.crl_pem.contains("X509 CRL"));
}

/// The versions of each report that `reader` receives through Sync.
async fn synced_versions(world: &World, reader: &str) -> BTreeMap<String, Vec<u32>> {
    let mut exchange = world.exchange(reader).await;
    let mut stream = exchange
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    while let Some(item) = stream.message().await.unwrap() {
        let meta = item.meta.unwrap();
        out.entry(meta.report_id).or_default().push(meta.version);
    }
    out
}

#[tokio::test]
async fn a_version_is_served_only_where_its_own_and_the_latest_scope_allow() {
    use pb::SharingScope::{AggregateOnly, AllContributors, ListedStates};
    let world = World::new(Clock::system()).await;
    for state in ["AUS", "IDN"] {
        world
            .submit(&report(state, 7_000, false, AllContributors, &[]))
            .await;
    }
    // THA's first report: v1 aggregate-only, v2 to all contributors.
    let widened_v1 = report("THA", 1, false, AggregateOnly, &[]);
    let widened_v2 = pb::Report {
        version: 2,
        sharing: Some(pb::Sharing {
            scope: AllContributors as i32,
            states: vec![],
        }),
        ..widened_v1.clone()
    };
    // THA's second: v1 listed to AUS only, v2 to AUS and IDN.
    let listed_v1 = report("THA", 2, false, ListedStates, &["AUS"]);
    let listed_v2 = pb::Report {
        version: 2,
        sharing: Some(pb::Sharing {
            scope: ListedStates as i32,
            states: vec!["AUS".into(), "IDN".into()],
        }),
        ..listed_v1.clone()
    };
    for r in [&widened_v1, &widened_v2, &listed_v1, &listed_v2] {
        world.submit(r).await;
    }
    let aus = synced_versions(&world, "AUS").await;
    let idn = synced_versions(&world, "IDN").await;
    assert_eq!(aus[&widened_v1.report_id], [2], "v1 was aggregate-only");
    assert_eq!(aus[&listed_v1.report_id], [1, 2], "AUS was listed in both");
    assert_eq!(idn[&widened_v1.report_id], [2]);
    assert_eq!(idn[&listed_v1.report_id], [2], "v1 did not list IDN");
    // The owner sees every version of its own reports.
    let tha = synced_versions(&world, "THA").await;
    assert_eq!(tha[&widened_v1.report_id], [1, 2]);
}

#[tokio::test]
async fn a_read_is_on_record_before_its_first_result_and_completed_once() {
    let world = world_with_reports(400).await;
    // A 16 KiB window: the server cannot send all 400 reports, so the read stays open
    // while it is looked at.
    let mut idn = small_window_reader(&world, "IDN").await;
    let mut stream = idn.query(smuggling()).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    let reads_by_idn = |entries: Vec<pb::AuditEntry>| -> Vec<pb::AuditEntry> {
        entries
            .into_iter()
            .filter(|e| e.action == "query" && e.state == "IDN")
            .collect()
    };
    let log = |admin: &mut pb::admin_client::AdminClient<Channel>| {
        let mut admin = admin.clone();
        async move { common::audit_log(&mut admin).await }
    };
    // The owner's view of IDN's reads.
    let owner_view = || async {
        let mut aus = world.exchange("AUS").await;
        let accesses = aus
            .access_to_my_data(pb::AccessToMyDataRequest::default())
            .await
            .unwrap()
            .into_inner()
            .accesses;
        let reads: Vec<_> = accesses
            .into_iter()
            .filter(|a| a.reader_state == "IDN" && a.action == "query")
            .collect();
        assert_eq!(reads.len(), 1, "{reads:?}");
        reads[0].clone()
    };
    // While the first results are being read, the read is already on record, and the
    // owner is told its count is an upper bound.
    let during = reads_by_idn(log(&mut admin).await);
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(during[0].in_progress);
    let seen = owner_view().await;
    assert!(seen.in_progress && seen.count >= 1, "{seen:?}");
    let (rest, end) = drain(&mut stream).await;
    end.unwrap();
    let seen = owner_view().await;
    assert!(!seen.in_progress, "{seen:?}");
    assert_eq!(seen.count, 400);
    // The same record, completed with what was read, by owner.
    let after = reads_by_idn(log(&mut admin).await);
    assert_eq!(after.len(), 1, "one read, one record: {after:?}");
    assert_eq!(after[0].number, during[0].number);
    assert!(!after[0].in_progress);
    assert_eq!(after[0].count, rest as u64 + 1);
    assert_eq!(after[0].by_owner.get("AUS"), Some(&400));
}

/// Pages through a query `page` results at a time; returns every report id seen, in order.
async fn page_through(
    exchange: &mut Exchange,
    request: &pb::QueryRequest,
    page: u32,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let mut stream = exchange
            .query(pb::QueryRequest {
                limit: page,
                after: after.clone(),
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = 0;
        while let Some(item) = stream.message().await.unwrap() {
            got += 1;
            seen.push(item.meta.unwrap().report_id);
            after = item.cursor;
        }
        if got < page {
            return seen;
        }
        assert!(seen.len() < 1_000, "paging does not end: {seen:?}");
    }
}

/// A report amended while a query's pages are read — moved to another day, before or
/// after the cursor — and one added meanwhile are not missed: each comes once at its
/// latest version, after the unchanged ones; a report already sent at its first version
/// comes again at its second. By date and by state.
#[tokio::test]
async fn reports_changed_while_pages_are_read_are_not_missed() {
    for by_state in [false, true] {
        let world = World::new(Clock::system()).await;
        let dated = |seed: u64, day: u32| {
            let mut r = report("AUS", seed, false, pb::SharingScope::AllContributors, &[]);
            r.incident_date = format!("2024-03-{day:02}");
            r
        };
        let reports: Vec<pb::Report> = (1..=6u32).map(|n| dated(u64::from(n), 10 + n)).collect();
        for r in &reports {
            world.submit(r).await;
        }
        let request = pb::QueryRequest {
            reporting_states: if by_state { vec!["AUS".into()] } else { vec![] },
            limit: 2,
            ..smuggling()
        };
        let aus = world.exchange("AUS").await;
        let page = |after: String| {
            let mut aus = aus.clone();
            let request = pb::QueryRequest {
                after,
                ..request.clone()
            };
            async move {
                let mut stream = aus.query(request).await.unwrap().into_inner();
                let mut got = Vec::new();
                while let Some(item) = stream.message().await.unwrap() {
                    let meta = item.meta.unwrap();
                    got.push((meta.report_id, meta.version, item.cursor));
                }
                got
            }
        };
        let first = page(String::new()).await;
        assert_eq!(first.len(), 2);
        // The first report (sent) moves to the end of March; the fifth (not yet sent)
        // moves to the start, behind the cursor; a seventh report is added.
        for (index, day) in [(0, 31), (4, 1)] {
            let mut amended = reports[index].clone();
            amended.version = 2;
            amended.incident_date = format!("2024-03-{day:02}");
            world.submit(&amended).await;
        }
        let added = dated(7, 20);
        world.submit(&added).await;
        let mut seen = first.clone();
        let mut after = first.last().unwrap().2.clone();
        loop {
            let got = page(after.clone()).await;
            if let Some(last) = got.last() {
                after = last.2.clone();
            }
            let done = got.len() < 2;
            seen.extend(got);
            if done {
                break;
            }
            assert!(seen.len() < 20, "paging does not end: {seen:?}");
        }
        let times = |id: &str| seen.iter().filter(|(i, ..)| i == id).count();
        let versions =
            |id: &str| -> Vec<u32> { seen.iter().filter(|(i, ..)| i == id).map(|s| s.1).collect() };
        assert_eq!(versions(&reports[0].report_id), [1, 2], "{seen:?}");
        assert_eq!(versions(&reports[4].report_id), [2], "{seen:?}");
        assert_eq!(times(&added.report_id), 1, "{seen:?}");
        for r in [1, 2, 3, 5] {
            assert_eq!(times(&reports[r].report_id), 1, "{seen:?}");
        }
    }
}

/// A cursor continues only the query whose result carried it: altered anywhere, made
/// up, or taken to a query with other filters, it is refused; with another limit it
/// still continues.
#[tokio::test]
async fn a_cursor_altered_made_up_or_taken_to_another_query_is_refused() {
    let world = world_with_reports(5).await;
    let idn = world.exchange("IDN").await;
    let first_page = |request: pb::QueryRequest| {
        let mut idn = idn.clone();
        async move {
            let mut stream = idn.query(request).await?.into_inner();
            let mut cursors = Vec::new();
            while let Some(item) = stream.message().await? {
                cursors.push(item.cursor);
            }
            Ok::<_, Status>(cursors)
        }
    };
    let asked = pb::QueryRequest {
        limit: 2,
        ..smuggling()
    };
    let cursor = first_page(asked.clone()).await.unwrap().pop().unwrap();
    let refused = |status: Result<Vec<String>, Status>, what: &str| {
        let status = status.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("after"), "{what}: {status:?}");
    };
    for at in 0..cursor.len() {
        let mut altered = cursor.clone().into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let answer = first_page(pb::QueryRequest {
            after: altered.clone(),
            ..asked.clone()
        })
        .await;
        refused(answer, &altered);
    }
    let (text, _) = cursor.rsplit_once('.').unwrap();
    for made_up in ["changed/0/0", text, &format!("{text}.")] {
        let answer = first_page(pb::QueryRequest {
            after: made_up.to_owned(),
            ..asked.clone()
        })
        .await;
        refused(answer, made_up);
    }
    let other_filters = [
        pb::QueryRequest {
            reporting_states: vec!["AUS".into()],
            ..asked.clone()
        },
        pb::QueryRequest {
            include_retracted: true,
            ..asked.clone()
        },
        pb::QueryRequest {
            from_date: "2020-01-01".into(),
            ..asked.clone()
        },
    ];
    for other in other_filters {
        let answer = first_page(pb::QueryRequest {
            after: cursor.clone(),
            ..other.clone()
        })
        .await;
        refused(answer, &format!("{other:?}"));
    }
    let more = first_page(pb::QueryRequest {
        after: cursor.clone(),
        limit: 10,
        ..asked.clone()
    })
    .await
    .unwrap();
    assert!(!more.is_empty());
    // The same filter written another way is the same query.
    let same = first_page(pb::QueryRequest {
        after: cursor,
        changed_since_unix: -5,
        ..asked
    })
    .await
    .unwrap();
    assert_eq!(same.len(), 2);
}

fn report_id() -> impl Strategy<Value = u128> {
    prop_oneof![Just(u128::MAX), Just(u128::MAX - 1), Just(1u128), (1u128..),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the keys — the smallest and largest UUIDs included, several reports on
    /// one day — paging by date or by state returns each report exactly once, and the
    /// other cursors (sync, audit) never repeat their last position.
    #[test]
    fn every_cursor_strictly_advances_for_every_key(
        reports in proptest::collection::btree_map(report_id(), 0u8..3, 1..8),
        page in 1u32..4,
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let world = World::new(Clock::system()).await;
            let mut expected = Vec::new();
            for (seed, (id, day)) in reports.iter().enumerate() {
                let mut r = report("AUS", seed as u64, false, pb::SharingScope::AllContributors, &[]);
                r.report_id = uuid::Uuid::from_u128(*id).to_string();
                r.incident_date = format!("2024-03-0{}", day + 1);
                world.submit(&r).await;
                expected.push(r.report_id);
            }
            expected.sort();
            let mut aus = world.exchange("AUS").await;
            for request in [
                smuggling(),
                pb::QueryRequest { reporting_states: vec!["AUS".into()], ..smuggling() },
            ] {
                let mut seen = page_through(&mut aus, &request, page).await;
                seen.sort();
                assert_eq!(seen, expected, "{request:?} by {page}");
            }
            // After the last sequence or audit number there is nothing, not the last
            // again; past the newest sequence, a sync is told its cursor is not this
            // store's.
            let sync = |after_sequence| pb::SyncRequest {
                category: pb::Category::SmugglingIncident as i32,
                after_sequence,
                ..Default::default()
            };
            // Only AUS submits, and only smuggling incidents: its last is the newest.
            let mut last = 0;
            let mut stream = aus.sync(sync(0)).await.unwrap().into_inner();
            while let Some(item) = stream.message().await.unwrap() {
                last = item.meta.unwrap().sequence;
            }
            let mut stream = aus.sync(sync(last)).await.unwrap().into_inner();
            assert!(stream.message().await.unwrap().is_none());
            for past in [last + 1, u64::MAX] {
                let status = aus.sync(sync(past)).await.unwrap_err();
                assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
                assert!(status.message().contains("Sync from 0"), "{status:?}");
            }
            let audit = world
                .server
                .admin(&operator(&world.pki))
                .await
                .audit_log(pb::AuditLogRequest { after: u64::MAX, limit: 10 })
                .await
                .unwrap()
                .into_inner();
            assert!(audit.entries.is_empty());
        });
    }
}

/// An import's envelopes are checked when they arrive and stored when the writer gets to
/// them. A revocation or suspension goes ahead of them: whatever of the import still
/// waited is refused, so in the log no envelope of IDN's follows it.
#[tokio::test]
async fn nothing_an_import_queued_is_stored_after_a_revocation_or_suspension() {
    for action in ["revoke-certificate", "suspend-state", "revoke-key"] {
        let world = world_with_reports(1).await;
        let mut log = TransparencyClient::new(world.server.channel(&operator(&world.pki)).await);
        let mut admin = world.server.admin(&operator(&world.pki)).await;
        let mut idn = world.exchange("IDN").await;
        let serial = serial_of(&mut idn).await;
        let start = common::log_size(&mut log).await;
        let requests: Vec<pb::SubmitRequest> = (10..1_510)
            .map(|seed| pb::SubmitRequest {
                envelope: Some(sign(&common::sample_report("IDN", seed), world.key("IDN"))),
                ..Default::default()
            })
            .collect();
        let import = tokio::spawn(async move { idn.import(tokio_stream::iter(requests)).await });
        // Part of the import stored, more of it verified and waiting in the queue.
        while common::log_size(&mut log).await < start + 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match action {
            "revoke-certificate" => admin
                .revoke_certificate(pb::RevokeCertificateRequest {
                    serial,
                    reason: "key-compromise".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "suspend-state" => admin
                .suspend_state(pb::StateRequest {
                    state: "IDN".into(),
                })
                .await
                .map(drop),
            _ => admin
                .revoke_signing_key(pb::RevokeSigningKeyRequest {
                    key_id: world.key("IDN").key_id().to_owned(),
                    compromised_at_unix: 0,
                    reason: "superseded".into(),
                })
                .await
                .map(drop),
        }
        .unwrap();
        let _ended = tokio::time::timeout(PATIENCE, import)
            .await
            .expect("the import ends")
            .unwrap();
        let entries = common::log_entries(&mut log).await;
        let is_idn_envelope =
            |e: &&String| e.starts_with("tidemark.v1 envelope\n") && e.contains("\nstate IDN\n");
        let at = entries
            .iter()
            .position(|e| e.contains(&format!("\naction {action}\n")))
            .unwrap();
        assert!(entries[..at].iter().filter(is_idn_envelope).count() >= 50);
        let after = entries[at..].iter().filter(is_idn_envelope).count();
        assert_eq!(after, 0, "{action}: IDN envelopes stored after it");
    }
}

/// The numbers of the audit records whose log entries name `owner` among their owners.
fn logged_readers_of(entries: &[String], owner: &str) -> std::collections::BTreeSet<u64> {
    entries
        .iter()
        .filter(|e| e.starts_with("tidemark.v1 audit\n"))
        .filter(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("owners "))
                .is_some_and(|o| o.split(' ').any(|x| x.starts_with(&format!("{owner}:"))))
        })
        .map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("number "))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Reads (queries and subscriptions) whose callers leave at once — before the read
/// begins, or once it is on record as able to send AUS's reports but before any went —
/// are all completed on record, and
/// AUS's access list, read in small pages, holds every read the log names AUS in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_left_at_once_are_completed_and_each_is_in_the_owners_access_list() {
    let world = world_with_reports(300).await;
    let idn = world.exchange("IDN").await;
    for i in 0..60u64 {
        let mut idn = idn.clone();
        let call = tokio::spawn(async move {
            if i % 2 == 0 {
                let mut stream = idn.query(smuggling()).await?.into_inner();
                stream.message().await.map(drop)
            } else {
                let mut stream = idn.subscribe(smuggling()).await?.into_inner();
                stream.message().await.map(drop)
            }
        });
        tokio::time::sleep(Duration::from_micros(150 * (i % 30))).await;
        call.abort();
    }
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    eventually("every read's record is completed", || {
        let mut admin = admin.clone();
        async move {
            common::audit_log(&mut admin)
                .await
                .iter()
                .all(|e| !e.in_progress)
        }
    })
    .await;
    let queries = common::audit_log(&mut admin)
        .await
        .iter()
        .filter(|e| e.action == "query" || e.action == "subscribe")
        .count();
    // Some calls are left before they reach the server; most are not.
    assert!(queries >= 10, "{queries} reads reached the server");

    let mut log = TransparencyClient::new(world.server.channel(&operator(&world.pki)).await);
    let logged = logged_readers_of(&common::log_entries(&mut log).await, "AUS");
    let mut aus = world.exchange("AUS").await;
    let (mut listed, mut before) = (std::collections::BTreeSet::new(), 0);
    loop {
        let page = aus
            .access_to_my_data(pb::AccessToMyDataRequest { limit: 7, before })
            .await
            .unwrap()
            .into_inner()
            .accesses;
        listed.extend(page.iter().map(|a| a.number));
        match page.last() {
            Some(last) if page.len() == 7 => before = last.number,
            _ => break,
        }
    }
    assert_eq!(listed, logged);
}

/// An aggregate is answered only if its caller still has its rights when the answer is
/// ready: of an analyst's aggregates in progress (waiting for its turn, one at a time)
/// when its certificate is revoked or its state suspended, those not yet answered end
/// UNAUTHENTICATED or PERMISSION_DENIED, not with the table.
#[tokio::test]
async fn aggregates_in_progress_end_when_their_caller_is_revoked() {
    aggregates_in_progress_end(Role::RegionalAnalyst, Code::Unauthenticated, "revoked").await;
}

#[tokio::test]
async fn aggregates_in_progress_end_when_their_callers_state_is_suspended() {
    let idn = Role::StateAnalyst(common::state("IDN"));
    aggregates_in_progress_end(idn, Code::PermissionDenied, "suspended").await;
}

/// 48 aggregates of `role`'s, all sent at once; once the first is answered, its
/// certificate is revoked (or, for a state's analyst, its state suspended): the rest
/// are answered or end with `code`, saying `why`, and at least one ends so.
async fn aggregates_in_progress_end(role: Role, code: Code, why: &str) {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_reads_per_principal = 64;
        c.limits.reads_per_minute_per_principal = 10_000;
    })
    .await;
    let world = World::on(pki, server).await;
    for code in ["AUS", "IDN", "THA"] {
        let envelopes = (0..40)
            .map(|i| sign(&common::sample_report(code, i), world.key(code)))
            .collect();
        common::import(&world.server, &world.pki, code, envelopes).await;
    }
    let issued = world.pki.client(role, "racer");
    let serial = serial_of(&mut world.server.exchange(&issued).await).await;
    let channel = world.server.channel(&issued).await;
    let request = pb::AggregateRequest {
        group_by: vec![
            pb::Dimension::Month as i32,
            pb::Dimension::Origin as i32,
            pb::Dimension::ReportingState as i32,
        ],
        metrics: vec![pb::Metric::Reports as i32, pb::Metric::Persons as i32],
        filter: None,
    };
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let mut analytics = pb::analytics_client::AnalyticsClient::new(channel.clone());
        let request = request.clone();
        calls.spawn(async move { analytics.aggregate(request).await.map(|_| ()) });
    }
    // Every call has arrived once one is answered (all were sent at once).
    let first = calls.join_next().await.unwrap().unwrap();
    assert!(first.is_ok(), "{first:?}");
    let mut admin = world.server.admin(&operator(&world.pki)).await;
    match role.state() {
        Some(state) => {
            admin
                .suspend_state(pb::StateRequest {
                    state: state.to_string(),
                })
                .await
                .unwrap();
        }
        None => {
            admin
                .revoke_certificate(pb::RevokeCertificateRequest {
                    serial,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let (mut answered, mut ended) = (1, 0);
    while let Some(call) = calls.join_next().await {
        match call.unwrap() {
            Ok(()) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), code, "{status:?}");
                assert!(status.message().contains(why), "{status:?}");
                ended += 1;
            }
        }
    }
    assert!(
        ended > 0,
        "all {answered} aggregates in progress were answered after the change"
    );
}
