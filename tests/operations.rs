//! Operating a server: the Prometheus metrics endpoint, scraped after real calls over
//! mTLS and parsed as the Prometheus text format.

mod common;

use common::{TestPki, TestServer, aggregate, node, regional, sample_report, sign, submit};
use tidemark::pb;

/// `GET path` on `addr` over plain HTTP/1.1: (status line, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample of `family` whose labels include every pair of `labels`.
fn value(scrape: &prometheus_parse::Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == family)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |b| b.count)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// A counter's (or histogram's) count: a whole number.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn count(scrape: &prometheus_parse::Scrape, family: &str, labels: &[(&str, &str)]) -> u64 {
    value(scrape, family, labels).round() as u64
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_real_calls_in_the_prometheus_format() {
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics(&pki).await;
    let before = scrape(metrics).await;
    let submit_ok = [
        ("grpc_service", "tidemark.v1.Exchange"),
        ("grpc_method", "Submit"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(count(&before, "grpc_server_handled_total", &submit_ok), 0);
    // Two accepted submissions, one duplicate, one refused (a state's node signing
    // with no registered key), a give-to-get refusal and an aggregate.
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    let first = sign(&sample_report("AUS", 1), &key);
    submit(&mut exchange, first.clone()).await.unwrap();
    submit(&mut exchange, sign(&sample_report("AUS", 2), &key))
        .await
        .unwrap();
    submit(&mut exchange, first).await.unwrap();
    let mut idn = server.exchange(&node(&pki, "IDN")).await;
    let refused = submit(&mut idn, sign(&sample_report("IDN", 3), &key)).await;
    assert!(refused.is_err());
    let denied = idn
        .query(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..Default::default()
        })
        .await;
    assert!(denied.is_err());
    aggregate(
        &server,
        &regional(&pki),
        pb::AggregateRequest {
            metrics: vec![pb::Metric::Reports as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let after = scrape(metrics).await;
    assert_eq!(count(&after, "grpc_server_handled_total", &submit_ok), 3);
    assert_eq!(
        count(
            &after,
            "grpc_server_started_total",
            &[("grpc_method", "Submit")]
        ),
        4
    );
    assert!(
        count(
            &after,
            "grpc_server_handled_total",
            &[("grpc_method", "Query"), ("grpc_code", "PERMISSION_DENIED")]
        ) >= 1
    );
    assert_eq!(
        count(
            &after,
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "Submit")]
        ),
        4
    );
    let outcome = |o: &str| count(&after, "tidemark_submissions_total", &[("outcome", o)]);
    assert_eq!(
        (
            outcome("accepted"),
            outcome("duplicate"),
            outcome("refused")
        ),
        (2, 1, 1)
    );
    assert!(
        value(
            &after,
            "tidemark_give_to_get_refusals_total",
            &[("category", "smuggling-incident")]
        ) >= 1.0
    );
    assert!(count(&after, "tidemark_audit_records_total", &[]) >= 2);
    assert!(count(&after, "tidemark_writer_batch_size_count", &[]) >= 3);
    assert!(value(&after, "tidemark_store_bytes", &[]) > 0.0);
    // Two live AUS reports, whatever their categories; none of IDN's.
    assert_eq!(count(&after, "tidemark_reports", &[("state", "AUS")]), 2);
    assert_eq!(count(&after, "tidemark_reports", &[("state", "IDN")]), 0);
    let expiry = value(&after, "tidemark_server_certificate_expiry_seconds", &[]);
    assert!(expiry > 0.0 && expiry < 400.0 * 86_400.0, "{expiry}");
    // No label takes an unbounded value: nothing names a principal, report or serial.
    for sample in &after.samples {
        for (k, v) in sample.labels.iter() {
            assert!(
                !v.contains("spiffe://") && v.len() < 64,
                "{}: {k}={v}",
                sample.metric
            );
        }
    }
    // Anything else is 404.
    let (status, _) = get(metrics, "/").await;
    assert!(status.contains("404"), "{status}");
}
