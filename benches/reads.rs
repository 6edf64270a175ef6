//! Query latency and sync throughput over mTLS, against a full scan in the same run.
//!
//! `cargo bench --bench reads [-- --reports 100000 --queries 200 --cache-mib N]`
//!
//! Loads synthetic reports from 20 states through the real submission path (verify,
//! validate, group commit), then serves them with a real server on 127.0.0.1:0 and
//! measures, as IDN's node:
//! - a one-month, one-route query (p50/p99 over many runs) — through the date index;
//! - the same filter answered by a full scan of every stored envelope (decode, check
//!   scope and filter), in-process, without network: the baseline;
//! - a full sync of one category into a local mirror file (JSON lines, fsync at end).

mod common;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use prost::Message;
use tidemark::{
    Store,
    client::{self},
    country::CountryCode,
    identity::Role,
    internals,
    pb::{self, exchange_client::ExchangeClient},
    report::parse_date,
    server::Server,
};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reports = common::arg("--reports", 100_000);
    let queries = common::arg("--queries", 200);
    let bench = common::BenchPki::new();
    let mut config = bench.config.clone();

    // Load through the real submission path, several submitters at once.
    let started = Instant::now();
    common::load(&config, reports).await;
    eprintln!(
        "loaded {reports} reports from {} states in {:.1} s",
        common::STATES.len(),
        started.elapsed().as_secs_f64()
    );

    // The store's page cache (redb) for serving: `--cache-mib N` (default as configured).
    config.store.cache_mib = common::arg("--cache-mib", config.store.cache_mib);
    eprintln!("serving with a {} MiB page cache", config.store.cache_mib);
    let server = Server::build(config).unwrap();
    let store = server.store().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let idn = CountryCode::parse("IDN").unwrap();
    let identity = bench.client(Role::Node(idn), "idn-1");
    let mut exchange = ExchangeClient::new(client::connect(&endpoint, &identity).await.unwrap());

    // One month, one route, through the index, over gRPC.
    let request = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        from_date: "2023-03-01".into(),
        to_date: "2023-03-31".into(),
        route_countries: vec!["LKA".into()],
        ..Default::default()
    };
    let mut latencies = Vec::new();
    let mut hits = 0;
    for _ in 0..queries {
        let t = Instant::now();
        let mut stream = exchange.query(request.clone()).await.unwrap().into_inner();
        hits = 0;
        while stream.message().await.unwrap().is_some() {
            hits += 1;
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();

    let (scan, scan_hits) = full_scan(&store, &request, idn);
    assert_eq!(hits, scan_hits, "index and scan must agree");

    let (synced, sync_time) =
        sync_to_mirror(&mut exchange, &bench.dir.path().join("mirror.jsonl")).await;
    let p50 = common::percentile(&latencies, 0.5);
    let p99 = common::percentile(&latencies, 0.99);
    println!(
        "{reports} reports from {} states; IDN's view",
        common::STATES.len()
    );
    println!(
        "one-month one-route query ({hits} results, {queries} runs over mTLS): p50 {:.2} ms, p99 {:.2} ms",
        common::ms(p50),
        common::ms(p99)
    );
    println!(
        "same filter by full scan (in-process, median of 5): {:.1} ms",
        common::ms(scan)
    );
    println!(
        "indexed query vs full scan: {:.0}x faster (p50)",
        scan.as_secs_f64() / p50.as_secs_f64()
    );
    #[allow(clippy::cast_precision_loss)]
    let rate = synced as f64 / sync_time.as_secs_f64();
    println!(
        "full sync of smuggling incidents into a local mirror: {synced} reports in {:.2} s = {rate:.0} reports/s",
        sync_time.as_secs_f64()
    );
    let _ = stop.send(());
    let _ = server_task.await;
}

/// The same filter by full scan of every envelope, in-process (no network: this
/// flatters the baseline). Returns the median of 5 runs and the number of hits.
fn full_scan(store: &Store, request: &pb::QueryRequest, idn: CountryCode) -> (Duration, usize) {
    let filter = internals::QueryFilter::from_request(request).unwrap();
    let from = parse_date("2023-03-01").unwrap();
    let to = parse_date("2023-03-31").unwrap();
    let mut scans = Vec::new();
    let mut scan_hits = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let snap = store.snapshot().unwrap();
        scan_hits = 0;
        for entry in snap.envelopes_after(0).unwrap() {
            let (_, record) = entry.unwrap();
            let env = pb::Envelope::decode(record.envelope.as_slice()).unwrap();
            let Ok(report) = pb::Report::decode(env.payload.as_slice()) else {
                continue;
            };
            let Some(date) = parse_date(&report.incident_date) else {
                continue;
            };
            let route = report.route.unwrap_or_default();
            let on_route = route.origin == "LKA"
                || route.transit.iter().any(|c| c == "LKA")
                || route.intended_destination == "LKA";
            let smuggling = matches!(report.details, Some(pb::report::Details::Smuggling(_)));
            if smuggling && on_route && date >= from && date <= to {
                let head = snap
                    .head(uuid::Uuid::parse_str(&report.report_id).unwrap().as_u128())
                    .unwrap()
                    .unwrap();
                if internals::visible_to(&head, idn) && filter.matches(&head) {
                    scan_hits += 1;
                }
            }
        }
        scans.push(t.elapsed());
    }
    scans.sort();
    (common::percentile(&scans, 0.5), scan_hits)
}

/// A full sync of smuggling incidents into a mirror file (JSON lines, fsync at end).
async fn sync_to_mirror(
    exchange: &mut ExchangeClient<tonic::transport::Channel>,
    mirror: &std::path::Path,
) -> (u64, Duration) {
    let t = Instant::now();
    let mut stream = exchange
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut file = std::io::BufWriter::new(std::fs::File::create(mirror).unwrap());
    let mut synced = 0u64;
    while let Some(item) = stream.message().await.unwrap() {
        serde_json::to_writer(
            &mut file,
            &serde_json::json!({"meta": item.meta, "envelope": item.envelope}),
        )
        .unwrap();
        file.write_all(b"\n").unwrap();
        synced += 1;
    }
    let file = file.into_inner().unwrap();
    file.sync_all().unwrap();
    let sync_time = t.elapsed();

    (synced, sync_time)
}
