//! Operating a server: the Prometheus metrics endpoint, scraped after real calls over
//! mTLS and parsed as the Prometheus text format.

mod common;

use common::{
    TestPki, TestServer, aggregate, node, regional, sample_report, sign, submit, submit_request,
};
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

/// No label takes an unbounded value (nothing names a principal, report or serial), and
/// anything but /metrics is 404.
async fn bounded_labels_and_nothing_else(
    after: &prometheus_parse::Scrape,
    metrics: std::net::SocketAddr,
) {
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

/// A scrape once the writer, idle, has brought the quarter counter rows up to date with
/// the months (the report counts are then read from quarter rows); fails after 10 s.
async fn quarters_caught_up(metrics: std::net::SocketAddr) -> prometheus_parse::Scrape {
    for _ in 0..200 {
        let now = scrape(metrics).await;
        if count(&now, "tidemark_counter_quarters_behind", &[]) == 0 {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("quarters still behind after 10 s idle");
}

/// Whether a scrape on a new connection to `addr` is answered (`false`: the connection
/// was closed without an answer).
async fn answered(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // A connection closed on arrival may refuse the write or the read.
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    response.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_cannot_take_more_than_their_share() {
    let pki = TestPki::new();
    let (_server, metrics) = TestServer::start_with_metrics(&pki).await;
    assert!(answered(metrics).await);
    // 32 connections that never send a request hold every slot (until their 10 s
    // header timeout); the next is closed on arrival, once the server has taken them.
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(tokio::net::TcpStream::connect(metrics).await.unwrap());
    }
    assert!(
        soon_answered(metrics, false).await,
        "a 33rd connection was answered while 32 were held open"
    );
    // Closing them frees the slots.
    drop(idle);
    assert!(
        soon_answered(metrics, true).await,
        "no scrape answered after the idle connections closed"
    );
}

/// Whether, within 2 s, a new connection to `addr` is answered (`want`) or closed
/// unanswered (`!want`).
async fn soon_answered(addr: std::net::SocketAddr, want: bool) -> bool {
    for _ in 0..100 {
        if answered(addr).await == want {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_brings_quarter_counter_rows_up_to_date_when_idle() {
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    // Reports over several years: many quarters marked behind.
    for seed in 0..40 {
        submit(&mut exchange, sign(&sample_report("AUS", seed), &key))
            .await
            .unwrap();
    }
    let caught_up = quarters_caught_up(metrics).await;
    assert_eq!(
        count(&caught_up, "tidemark_reports", &[("state", "AUS")]),
        40
    );
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
    // Import counts too: one accepted, one refused (another state's report).
    let imported = exchange
        .import(tokio_stream::iter(
            [
                sign(&sample_report("AUS", 4), &key),
                sign(&sample_report("IDN", 5), &key),
            ]
            .map(submit_request),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.accepted, imported.rejected), (1, 1));
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
        (3, 1, 2)
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
    // Three live AUS reports, whatever their categories; none of IDN's.
    assert_eq!(count(&after, "tidemark_reports", &[("state", "AUS")]), 3);
    assert_eq!(count(&after, "tidemark_reports", &[("state", "IDN")]), 0);
    let expiry = value(&after, "tidemark_server_certificate_expiry_seconds", &[]);
    assert!(expiry > 0.0 && expiry < 400.0 * 86_400.0, "{expiry}");
    bounded_labels_and_nothing_else(&after, metrics).await;
}

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Writes `who`'s certificate, key and the CA as a CLI profile in `dir`; returns it.
fn profile(dir: &std::path::Path, stem: &str, who: &tidemark::client::ClientIdentity) -> String {
    std::fs::write(dir.join(format!("{stem}.pem")), who.cert_pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), who.key_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), who.ca_pem()).unwrap();
    dir.join(stem).display().to_string()
}

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

/// An exact aggregate (the regional analyst, unperturbed) of every report, by year.
async fn by_year(server: &TestServer, pki: &TestPki) -> Vec<pb::Cell> {
    aggregate(
        server,
        &regional(pki),
        pb::AggregateRequest {
            group_by: vec![pb::Dimension::Year as i32],
            metrics: vec![pb::Metric::Reports as i32, pb::Metric::Persons as i32],
            filter: None,
        },
    )
    .await
    .unwrap()
    .cells
}

/// Submissions acknowledged: when, the envelope, its sequence number.
type Acked = Vec<(std::time::Instant, pb::Envelope, u64)>;

/// The restore drill: four clients submit without pause; an online backup is taken in
/// the middle; it is restored into a new directory and a server started on it. Every
/// submission acknowledged before the backup began is there with its sequence number,
/// the sequence numbers have no gaps, the counters equal a recount, and the restored
/// server accepts new submissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one drill, step by step
async fn a_backup_taken_under_load_restores_every_acknowledged_submission() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let pki = TestPki::new();
    let exact = |c: &mut tidemark::Config| {
        c.analytics.perturb_regional_analyst = false;
        c.analytics.minimum_reports = 1;
    };
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), exact).await;
    let states = ["AUS", "IDN", "THA", "AUS"];
    let mut keys = std::collections::BTreeMap::new();
    for state in ["AUS", "IDN", "THA"] {
        keys.insert(state, Arc::new(server.register_new_key(&pki, state).await));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut clients = Vec::new();
    for (i, state) in states.into_iter().enumerate() {
        let mut exchange = server.exchange(&node(&pki, state)).await;
        let key = keys[state].clone();
        let (stop, acked) = (stop.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let mut seed = 1_000 * i as u64;
            while !stop.load(Ordering::Relaxed) {
                seed += 1;
                let envelope = sign(&sample_report(state, seed), &key);
                let response = submit(&mut exchange, envelope.clone()).await.unwrap();
                let sequence = sequence_of(&response);
                acked
                    .lock()
                    .unwrap()
                    .push((std::time::Instant::now(), envelope, sequence));
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // The backup, with the CLI, as the operator, while the clients go on.
    let dir = tempfile::TempDir::new().unwrap();
    let operator = profile(dir.path(), "operator", &common::operator(&pki));
    let file = dir.path().join("tidemark.backup");
    let file_arg = file.display().to_string();
    let began = std::time::Instant::now();
    let endpoint = server.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "admin",
            "backup",
            "--out",
            &file_arg,
            "--endpoint",
            &endpoint,
            "--as",
            &operator,
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: Vec<_> = acked.iter().filter(|(at, _, _)| *at < began).collect();
    assert!(
        before.len() >= 10 && before.len() < acked.len(),
        "{} of {}",
        before.len(),
        acked.len()
    );

    // Only an operator may take one.
    let refused = pb::admin_client::AdminClient::new(server.channel(&node(&pki, "AUS")).await)
        .backup(pb::BackupRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // A damaged copy is refused, naming what is wrong.
    let damaged = dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::copy(
        dir.path().join("tidemark.backup.manifest.json"),
        dir.path().join("damaged.backup.manifest.json"),
    )
    .unwrap();
    let empty = tempfile::TempDir::new().unwrap();
    let out = run(&[
        "restore",
        &damaged.display().to_string(),
        "--data",
        &empty.path().display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut short"));
    assert!(!empty.path().join("tidemark.redb").exists());

    // Restore into an empty directory; a second restore there is refused without --force.
    let restored = tempfile::TempDir::new().unwrap();
    let data = restored.path().display().to_string();
    let file_arg = file.display().to_string();
    let out = run(&["restore", &file_arg, "--data", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("restored"), "{said}");
    let again = run(&["restore", &file_arg, "--data", &data]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let contents = tidemark::Store::check_file(&restored.path().join("tidemark.redb")).unwrap();
    assert_eq!(contents.envelopes, contents.last_sequence, "no gaps");
    assert!(contents.envelopes >= before.len() as u64);

    // Restoring over a running server's store is refused, even with --force.
    let live = server.data.path().display().to_string();
    let over = run(&["restore", &file_arg, "--data", &live, "--force"]);
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("running server"));
    // A server on the restored store holds every acknowledged submission; a copy an
    // interrupted backup left beside the store is removed when it starts.
    server.stop().await;
    let leftover = restored.path().join("tidemark.backup-1.tmp");
    std::fs::write(&leftover, b"secret copy").unwrap();
    let server = TestServer::start_with(&pki, restored, exact).await;
    assert!(!leftover.exists());
    for (_, envelope, sequence) in &before {
        let state = if envelope_state(envelope) == "IDN" {
            "IDN"
        } else {
            envelope_state(envelope)
        };
        let mut exchange = server.exchange(&node(&pki, state)).await;
        let again = submit(&mut exchange, envelope.clone()).await.unwrap();
        assert!(again.duplicate, "sequence {sequence} is missing");
        assert_eq!(sequence_of(&again), *sequence);
    }
    // The counters equal a recount from the envelopes.
    let counted = by_year(&server, &pki).await;
    let data = server.stop().await;
    common::open_store_after_stop(&data)
        .await
        .rebuild_counters()
        .unwrap();
    let server = TestServer::start_with(&pki, data, exact).await;
    assert_eq!(by_year(&server, &pki).await, counted);
    // And it takes new submissions, after the last restored one.
    let mut exchange = server.exchange(&node(&pki, "THA")).await;
    let fresh = submit(
        &mut exchange,
        sign(&sample_report("THA", 99_999), &keys["THA"]),
    )
    .await
    .unwrap();
    assert!(!fresh.duplicate);
    assert_eq!(sequence_of(&fresh), contents.last_sequence + 1);
}

/// The sequence number a submission's receipt states.
fn sequence_of(response: &pb::SubmitResponse) -> u64 {
    response.accepted.as_ref().unwrap().sequence
}

/// The reporting state named in a report envelope's payload.
fn envelope_state(envelope: &pb::Envelope) -> &'static str {
    let report: pb::Report = prost::Message::decode(envelope.payload.as_slice()).unwrap();
    match report.reporting_state.as_str() {
        "AUS" => "AUS",
        "IDN" => "IDN",
        _ => "THA",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one operator's backups and restores, in order
async fn a_backup_never_replaces_a_file_and_a_restore_checks_its_whole_manifest() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    submit(&mut exchange, sign(&sample_report("AUS", 1), &key))
        .await
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let operator = profile(dir.path(), "operator", &common::operator(&pki));
    let file = dir.path().join("one.backup").display().to_string();
    let endpoint = server.endpoint();
    let backup = |out: String| {
        let (endpoint, operator) = (endpoint.clone(), operator.clone());
        tokio::task::spawn_blocking(move || {
            run(&[
                "admin",
                "backup",
                "--out",
                &out,
                "--endpoint",
                &endpoint,
                "--as",
                &operator,
            ])
        })
    };
    // Two at once: each either succeeds or is told another is being taken.
    let name = |n: &str| dir.path().join(n).display().to_string();
    let (a, b) = (backup(name("two.backup")), backup(name("three.backup")));
    let mut busy = 0;
    for out in [a.await.unwrap(), b.await.unwrap()] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("already being taken"),
            "{stderr}"
        );
        busy += usize::from(!out.status.success());
    }
    // One told to try again is on record as a refused read, as every limit's refusal.
    let log = common::audit_log(&mut server.admin(&common::operator(&pki)).await).await;
    assert_eq!(
        log.iter().filter(|e| e.action == "refused backup").count(),
        busy,
        "{log:?}"
    );
    let out = backup(file.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On record as sent whole once the CLI has it all (the record is completed after the
    // last byte is handed on: a moment's wait at most).
    let mut admin = server.admin(&common::operator(&pki)).await;
    let whole = loop {
        let log = common::audit_log(&mut admin).await;
        let last = log.into_iter().rfind(|e| e.action == "backup").unwrap();
        if !last.in_progress {
            break last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(whole.detail.ends_with("; sent whole"), "{whole:?}");
    // A backup reads every state's reports: AUS finds each one taken on its access list,
    // with its one report.
    // (Reads only: the list also holds the registration of AUS's key, with its detail.)
    let reads = async || -> Vec<pb::DataAccess> {
        let mut exchange = exchange.clone();
        exchange
            .access_to_my_data(pb::AccessToMyDataRequest::default())
            .await
            .unwrap()
            .into_inner()
            .accesses
            .into_iter()
            .filter(|a| a.detail.is_empty())
            .collect()
    };
    let accesses = reads().await;
    assert!(!accesses.is_empty());
    // The newest, completed: the whole copy was sent.
    assert!(
        accesses[0].copy_bytes > 0 && accesses[0].copy_bytes_sent == accesses[0].copy_bytes,
        "{:?}",
        accesses[0]
    );
    for access in &accesses {
        assert_eq!(
            (
                access.action.as_str(),
                access.count,
                access.reader_state.as_str()
            ),
            ("backup", 1, ""),
            "{access:?}"
        );
        assert!(access.reader.contains("/operator/"), "{access:?}");
    }
    // A name that cannot be written is said before the server is asked: no backup is
    // taken, and none more is on AUS's access list.
    let out = backup(name("no-such-directory/four.backup")).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no-such-directory"),
        "{stderr}"
    );
    let listed = reads().await.len();
    assert_eq!(listed, accesses.len());
    // An existing file is never replaced.
    let before = std::fs::read(&file).unwrap();
    let out = backup(file.clone()).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never replaces"));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // Nor is another backup's file being written to the same name.
    let busy = name("four.backup");
    std::fs::write(format!("{busy}.partial"), b"another backup's").unwrap();
    let out = backup(busy.clone()).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another backup to"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(format!("{busy}.partial")).unwrap(),
        b"another backup's"
    );
    assert!(!std::path::Path::new(&busy).exists());
    // What a restore stopped part-way (Ctrl-C) left — or one still running — is named.
    let restored = tempfile::TempDir::new().unwrap();
    std::fs::write(restored.path().join("tidemark.restoring"), b"half a copy").unwrap();
    let out = run(&[
        "restore",
        &file,
        "--data",
        &restored.path().display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tidemark.restoring, a restore's copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restored.path().join("tidemark.restoring").exists());
    // While another restore holds the directory, even --force is refused, touching nothing.
    let held = std::fs::File::open(restored.path()).unwrap();
    held.try_lock().unwrap();
    let into = restored.path().display().to_string();
    let out = run(&["restore", &file, "--data", &into, "--force"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another `tidemark restore`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restored.path().join("tidemark.restoring").exists());
    drop(held);
    // A store that is a link to another volume's is not replaced by a file here (tester
    // D of 2026-12-07): the link and the store it names stay as they were.
    let elsewhere = tempfile::TempDir::new().unwrap();
    let linked = tempfile::TempDir::new().unwrap();
    let store = elsewhere.path().join("tidemark.redb");
    std::fs::write(&store, b"another volume's store").unwrap();
    std::os::unix::fs::symlink(&store, linked.path().join("tidemark.redb")).unwrap();
    let into = linked.path().display().to_string();
    let out = run(&["restore", &file, "--data", &into, "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is a symbolic link to"),
        "{stderr}"
    );
    assert!(linked.path().join("tidemark.redb").is_symlink());
    assert_eq!(std::fs::read(&store).unwrap(), b"another volume's store");

    // A manifest whose counts do not match the file is refused, even with the right
    // SHA-256.
    let manifest = format!("{file}.manifest.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    // Its counts are JSON numbers, as `jq` compares them.
    for count in [
        "envelopes",
        "lastSequence",
        "auditRecords",
        "logSize",
        "bytes",
    ] {
        assert!(json[count].is_u64(), "{count}: {json}");
    }
    // Its time goes into the log with the restore: one earlier than the backup's newest
    // record, or later than now, is refused too (tester A of 2026-12-07: a month back
    // was taken, and written into the log).
    let taken_at = json["takenAtUnix"].as_i64().unwrap();
    for (field, value, said) in [
        (
            "auditRecords",
            serde_json::Value::from(9999),
            "audit records",
        ),
        (
            "takenAtUnix",
            (taken_at - 30 * 86_400).into(),
            "it holds a record made at",
        ),
        (
            "takenAtUnix",
            (taken_at + 30 * 86_400).into(),
            "which is later than now",
        ),
    ] {
        let mut edited = json.clone();
        edited[field] = value;
        std::fs::write(&manifest, edited.to_string()).unwrap();
        // A directory that does not exist yet: refused, it is not left behind either.
        let empty = tempfile::TempDir::new().unwrap();
        let data = empty.path().join("new").join("deeper");
        let out = run(&["restore", &file, "--data", &data.display().to_string()]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not what its manifest describes") && stderr.contains(said),
            "{stderr}"
        );
        assert!(!empty.path().join("new").exists());
    }
    // A manifest named, its backup file missing: said so (tester A: the path was read
    // as a backup, and its manifest looked for at FILE.manifest.json.manifest.json).
    let ghost = format!("{file}.ghost.manifest.json");
    std::fs::copy(&manifest, &ghost).unwrap();
    let out = run(&["restore", &ghost, "--data", "unused"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the backup it describes, {file}.ghost, is missing"
        )),
        "{stderr}"
    );
    // A FIFO as the backup is refused at once, not waited on (tester D of 2026-12-07).
    let fifo = format!("{file}.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = run(&["restore", &fifo, "--data", "unused"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// An HTTP/2 connection of `identity` that says its preface and then nothing.
async fn idle_http2_connection(
    pki: &TestPki,
    server: &TestServer,
    identity: &tidemark::client::ClientIdentity,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = common::raw_tls(
        server,
        (pki.ca.cert_pem(), identity),
        (
            rustls::crypto::ring::default_provider(),
            &[&rustls::version::TLS13],
        ),
        &[b"h2"],
    )
    .await
    .unwrap();
    // The client preface, then an empty SETTINGS frame (RFC 9113 §3.4).
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    stream
}

/// An idle connection whose certificate is revoked is closed (it would otherwise stay
/// open: nothing on it is asked to check), and counted; other connections stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_when_its_certificate_is_revoked() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics_and(&pki, |config| {
        config.limits.lapsed_connection_grace_secs = 1;
    })
    .await;
    let identity = node(&pki, "IDN");
    let mut idle = idle_http2_connection(&pki, &server, &identity).await;
    let mut aus = server.exchange(&node(&pki, "AUS")).await;
    aus.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(identity.cert_pem().as_bytes());
    let der: rustls::pki_types::CertificateDer = der.unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let serial = tidemark::identity::serial_hex(parsed.raw_serial());
    server
        .admin(&common::operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial,
            reason: "superseded".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The server's SETTINGS and whatever else it says, then the end.
    let mut said = Vec::new();
    let end = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        idle.read_to_end(&mut said),
    )
    .await;
    assert!(
        end.is_ok(),
        "the revoked connection is still open after 10 s"
    );
    let scrape = scrape(metrics).await;
    // The idle connection, not AUS's.
    let closed = count(
        &scrape,
        "tidemark_connections_closed_total",
        &[("reason", "revoked")],
    );
    assert_eq!(closed, 1);
    aus.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

/// Each lapse has a whole grace period: a state suspended, reinstated and suspended
/// again keeps its connections for the grace period after the second suspension, not
/// what is left of the first one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_suspension_has_a_grace_period_of_its_own() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    let (server, _) = TestServer::start_with_metrics_and(&pki, |config| {
        config.limits.lapsed_connection_grace_secs = 3;
    })
    .await;
    let mut idle = idle_http2_connection(&pki, &server, &node(&pki, "IDN")).await;
    let mut admin = server.admin(&common::operator(&pki)).await;
    let idn = || pb::StateRequest {
        state: "IDN".into(),
    };
    admin.suspend_state(idn()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    admin.enrol_state(idn()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    admin.suspend_state(idn()).await.unwrap();
    // What the server said at the start, then nothing for well past what was left of
    // the first grace period (1.5 s)...
    let mut said = Vec::new();
    let open = tokio::time::timeout(
        std::time::Duration::from_millis(2_200),
        idle.read_to_end(&mut said),
    )
    .await;
    assert!(open.is_err(), "closed before its grace period ended");
    // ... and the end within the second grace period.
    let end = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        idle.read_to_end(&mut said),
    )
    .await;
    assert!(end.is_ok(), "still open 10 s after the second suspension");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_method_names_share_one_metric_label() {
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics(&pki).await;
    let mut grpc = tonic::client::Grpc::new(server.channel(&node(&pki, "AUS")).await);
    for i in 0..20 {
        grpc.ready().await.unwrap();
        let path = format!("/tidemark.v1.Exchange/MadeUp{i}");
        let status = grpc
            .unary(
                tonic::Request::new(pb::WhoAmIRequest {}),
                http::uri::PathAndQuery::try_from(path).unwrap(),
                tonic_prost::ProstCodec::<pb::WhoAmIRequest, pb::WhoAmIResponse>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let after = scrape(metrics).await;
    assert!(
        after
            .samples
            .iter()
            .all(|s| s.labels.iter().all(|(_, v)| !v.contains("MadeUp"))),
        "a made-up name became a label value"
    );
    let unknown = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "UNIMPLEMENTED"),
    ];
    assert_eq!(count(&after, "grpc_server_handled_total", &unknown), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_counted_by_what_was_wrong() {
    use tidemark::pki::Validity;
    use time::{Duration, OffsetDateTime};
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics(&pki).await;
    let uri = format!("spiffe://{}/state/AUS/node/n1", common::TRUST_DOMAIN);
    let now = OffsetDateTime::now_utc();
    let expired = pki.client_with_uris(
        &[&uri],
        Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        },
    );
    // A certificate from another CA, presented to a client that trusts this server.
    let other = common::node(&TestPki::new(), "AUS");
    let stranger = tidemark::client::ClientIdentity::from_pem(
        other.cert_pem().to_owned(),
        other.key_pem().to_owned(),
        pki.ca.cert_pem().to_owned(),
    );
    let no_certificate = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca.cert_pem())),
        )
        .unwrap();
    for identity in [&expired, &stranger] {
        if let Ok(channel) = tidemark::client::connect(&server.endpoint(), identity).await {
            let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
            assert!(exchange.who_am_i(pb::WhoAmIRequest {}).await.is_err());
        }
    }
    if let Ok(channel) = no_certificate.connect().await {
        let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
        assert!(exchange.who_am_i(pb::WhoAmIRequest {}).await.is_err());
    }
    // (A client may try a refused connection more than once.)
    let refused = |scrape: &prometheus_parse::Scrape, reason: &str| {
        count(
            scrape,
            "tidemark_handshakes_refused_total",
            &[("reason", reason)],
        )
    };
    // The server counts a refusal as it ends the handshake, which the client may see
    // first: wait for the counts.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let after = scrape(metrics).await;
        if ["expired", "no_certificate"]
            .iter()
            .all(|reason| refused(&after, reason) >= 1)
            || tokio::time::Instant::now() > deadline
        {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let refused = |reason: &str| refused(&after, reason);
    for reason in ["expired", "no_certificate"] {
        assert!(refused(reason) >= 1, "{reason}");
    }
    // Every test CA has the same name, so another one's certificate names our CA as its
    // issuer and fails on its signature.
    assert!(refused("bad_certificate") + refused("unknown_ca") >= 1);
    assert_eq!(refused("tls_error"), 0, "every refusal here has its reason");
}

/// A suspended state is out of the exchange, not out of checking the operator: its node
/// may still read the log and who read its data, on a connection made while it is
/// suspended, which stays open; every other call is refused with the reason. Once the
/// state is reinstated and suspended again, that connection is closed like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_state_still_checks_the_operator_and_nothing_else() {
    use pb::{exchange_client::ExchangeClient, transparency_client::TransparencyClient};
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics_and(&pki, |config| {
        config.limits.lapsed_connection_grace_secs = 0;
    })
    .await;
    let mut admin = server.admin(&common::operator(&pki)).await;
    let idn = || pb::StateRequest {
        state: "IDN".into(),
    };
    admin.suspend_state(idn()).await.unwrap();
    let channel = server.channel(&node(&pki, "IDN")).await;
    let (mut log, mut exchange) = (
        TransparencyClient::new(channel.clone()),
        ExchangeClient::new(channel),
    );
    let entries = common::log_entries(&mut log).await;
    assert!(entries.last().unwrap().contains("suspend-state"));
    exchange
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap();
    let refusals = [
        exchange.who_am_i(pb::WhoAmIRequest {}).await.map(drop),
        exchange
            .submit(submit_request(pb::Envelope::default()))
            .await
            .map(drop),
        exchange
            .my_standing(pb::MyStandingRequest {})
            .await
            .map(drop),
        exchange
            .signing_keys(pb::SigningKeysRequest::default())
            .await
            .map(drop),
    ];
    for refused in refusals {
        let status = refused.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("suspended"), "{status:?}");
    }
    // Well past the grace period (0 s), the connection is still open.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    log.get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap();
    let closed = |scrape: &prometheus_parse::Scrape| {
        count(
            scrape,
            "tidemark_connections_closed_total",
            &[("reason", "suspended")],
        )
    };
    assert_eq!(closed(&scrape(metrics).await), 0);

    admin.enrol_state(idn()).await.unwrap();
    exchange.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    admin.suspend_state(idn()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while closed(&scrape(metrics).await) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a connection that exchanged is still open 10 s after its suspension"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An operator's profile in `dir`, and a backup taken with the CLI into `dir`.
fn backup_as_operator(
    pki: &TestPki,
    server: &TestServer,
    dir: &std::path::Path,
) -> (String, std::path::PathBuf) {
    let operator = profile(dir, "operator", &common::operator(pki));
    let file = dir.join("before.backup");
    let out = run(&[
        "admin",
        "backup",
        "--out",
        &file.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        &operator,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (operator, file)
}

/// The newest 100 accesses to `code`'s reports, as its node is shown them.
async fn access_list(server: &TestServer, pki: &TestPki, code: &str) -> Vec<pb::DataAccess> {
    server
        .exchange(&node(pki, code))
        .await
        .access_to_my_data(pb::AccessToMyDataRequest {
            limit: 100,
            before: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .accesses
}

/// `file` restored with the CLI into a new directory, and what the CLI said.
fn restore(file: &std::path::Path) -> (tempfile::TempDir, std::process::Output) {
    let data = tempfile::TempDir::new().unwrap();
    let out = run(&[
        "restore",
        &file.display().to_string(),
        "--data",
        &data.path().display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (data, out)
}

/// A restore rolls the store back, but not a certificate revocation made after the
/// backup: the server carries the CRL file's revocations into the restored store at
/// start, and records the restore and each carried revocation in the audit log (and so
/// in the transparency log). A CRL file it cannot verify stops it before it overwrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one drill, step by step
async fn a_restore_keeps_the_revocations_and_suspensions_made_after_its_backup() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "THA").await;
    let key_id = key.public_key().key_id().to_owned();
    let mut tha = server.exchange(&node(&pki, "THA")).await;
    submit(&mut tha, sign(&sample_report("THA", 7), &key))
        .await
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let (operator, file) = backup_as_operator(&pki, &server, dir.path());
    // After the backup: a signing key is revoked and a state suspended, then reinstated
    // and suspended again (the latest status counts), and a node's certificate revoked.
    let mut admin = server.admin(&common::operator(&pki)).await;
    admin
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key_id.clone(),
            compromised_at_unix: 0,
            reason: "key-compromise".into(),
        })
        .await
        .unwrap();
    for suspend in [true, false, true] {
        let idn = pb::StateRequest {
            state: "IDN".into(),
        };
        if suspend {
            admin.suspend_state(idn).await.unwrap();
        } else {
            admin.enrol_state(idn).await.unwrap();
        }
    }
    let lost = pki.client(tidemark::Role::Node(common::state("THA")), "bangkok-9");
    let serial = server
        .exchange(&lost)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    server
        .admin(&common::operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: serial.clone(),
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A receipt for the revocation's log entry, which the backup does not hold: the log
    // holds it now, and will not once restored.
    let mut log = pb::transparency_client::TransparencyClient::new(
        server.channel(&common::operator(&pki)).await,
    );
    let size = common::log_size(&mut log).await;
    let log_key = common::log_key(&mut log).await;
    let receipt = dir.path().join("revocation.proof");
    let out = run(&[
        "log",
        "proof",
        "--index",
        &(size - 1).to_string(),
        "--out",
        &receipt.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        &operator,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let against_log = |endpoint: &str| {
        run(&[
            "verify-receipt",
            &receipt.display().to_string(),
            "--log-key",
            &log_key,
            "--against-log",
            "--endpoint",
            endpoint,
            "--as",
            &operator,
        ])
    };
    let out = against_log(&server.endpoint());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("still holds it"));
    server.stop().await;

    let (restored, out) = restore(&file);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access-journal.json"),
        "the restore says which files to keep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::start_with(&pki, restored, |_| {}).await;
    let refused = server
        .exchange(&lost)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await;
    assert!(
        refused.is_err(),
        "the revoked certificate is back: {refused:?}"
    );
    let mut admin = server.admin(&common::operator(&pki)).await;
    let log = common::audit_log(&mut admin).await;
    let by_server = format!("spiffe://{}/server", common::TRUST_DOMAIN);
    let actions: Vec<&str> = log
        .iter()
        .filter(|e| e.principal == by_server)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "restore",
            "revoke-certificate",
            "suspend-state",
            "revoke-key"
        ],
        "{log:#?}"
    );
    let states = admin
        .list_states(pb::ListStatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .states;
    assert!(
        states.iter().any(|s| s.state == "IDN" && s.suspended),
        "{states:?}"
    );
    let keys = admin
        .list_signing_keys(pb::ListSigningKeysRequest {
            state: "THA".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        keys.iter()
            .any(|k| k.key_id == key_id && k.revoked_at_unix != 0),
        "{keys:?}"
    );
    assert!(
        log.iter()
            .any(|e| e.principal == by_server && e.detail.contains(&serial))
    );
    // THA's access list says its report was restored from a backup (and the backup's
    // own record, written after its copy, is back from the trail journal).
    let accesses = access_list(&server, &pki, "THA").await;
    assert!(
        accesses
            .iter()
            .any(|a| a.action == "restore" && a.count == 1 && a.reader == by_server),
        "{accesses:#?}"
    );
    // The receipt still verifies offline, but not against the restored log.
    let out = against_log(&server.endpoint());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(3 | 4)) && said.contains("this receipt was issued under"),
        "{:?}: {said}",
        out.status
    );
    // Recorded once: a restart finds nothing more to carry, and no mark.
    let data = server.stop().await;
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    let mut admin = server.admin(&common::operator(&pki)).await;
    let again = common::audit_log(&mut admin).await;
    assert_eq!(
        again.iter().filter(|e| e.principal == by_server).count(),
        4,
        "{again:#?}"
    );
    let data = server.stop().await;

    // Restored again, without the access journal: the first start is refused, naming
    // it, unless told the files are lost.
    let (again, _) = restore(&file);
    let journal = pki.dir.path().join("access-journal.json");
    let kept = std::fs::read(&journal).unwrap();
    std::fs::remove_file(&journal).unwrap();
    let refused = tidemark::Server::build(pki.config(&again))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        refused.contains("access-journal.json") && refused.contains("--trust-files-lost"),
        "{refused}"
    );
    let mut lost = pki.config(&again);
    lost.trust_files_lost = true;
    drop(tidemark::Server::build(lost).expect("started when told the files are lost"));
    std::fs::write(&journal, kept).unwrap();

    // A CRL file signed by another CA is not overwritten: the server does not start.
    let other = TestPki::new();
    drop(TestServer::start(&other).await.stop().await);
    std::fs::copy(
        other.dir.path().join("crl.pem"),
        pki.dir.path().join("crl.pem"),
    )
    .unwrap();
    let refused = tidemark::Server::build(pki.config(&data))
        .err()
        .expect("refused");
    let said = refused.to_string();
    assert!(
        said.contains("crl.pem") && said.contains("which is no CA of"),
        "{said}"
    );
}

/// With the CA kept offline the server signs no CRL: the access journal alone carries a
/// certificate revocation made after a backup into the restored store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_offline_a_restore_keeps_certificate_revocations_too() {
    let pki = TestPki::new();
    let offline = |c: &mut tidemark::Config| c.tls.ca_key = None;
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), offline).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_, file) = backup_as_operator(&pki, &server, dir.path());
    let lost = pki.client(tidemark::Role::Node(common::state("IDN")), "jakarta-9");
    let serial = server
        .exchange(&lost)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    server
        .admin(&common::operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial,
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.stop().await;
    assert!(
        !pki.dir.path().join("crl.pem").exists(),
        "no CRL without the CA key"
    );
    let (restored, _) = restore(&file);
    let server = TestServer::start_with(&pki, restored, offline).await;
    let refused = server
        .exchange(&lost)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await;
    assert!(
        refused.is_err(),
        "the revoked certificate is back: {refused:?}"
    );
}

/// A restore's copy left beside the store (its process killed before it renamed the copy
/// into place) stops the server from starting: it would serve an empty or older store
/// and sign a new history with the exchange's log key. Once the copy is removed, it starts.
#[test]
fn a_server_does_not_start_beside_an_unfinished_restore() {
    let pki = common::TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let config = pki.config(&data);
    let staged = config.store.path.with_extension("restoring");
    std::fs::write(&staged, b"part of a copy").unwrap();
    let refused = tidemark::Server::build(pki.config(&data))
        .err()
        .expect("refused beside an unfinished restore");
    let message = refused.to_string();
    assert!(
        message.contains("a restore that did not finish") && message.contains("tidemark restore"),
        "{message}"
    );
    assert!(!config.store.path.exists(), "no store was made");
    std::fs::remove_file(&staged).unwrap();
    tidemark::Server::build(pki.config(&data)).expect("it starts once the copy is gone");
}

/// A server whose AUS and IDN have each submitted one smuggling report shared with
/// every contributor (so IDN may read AUS's).
async fn two_contributors(pki: &TestPki) -> TestServer {
    let server = TestServer::start(pki).await;
    let all = pb::SharingScope::AllContributors;
    for (code, seed) in [("AUS", 1), ("IDN", 2)] {
        let key = server.register_new_key(pki, code).await;
        let mut node = server.exchange(&node(pki, code)).await;
        submit(
            &mut node,
            sign(&common::report(code, seed, false, all, &[]), &key),
        )
        .await
        .unwrap();
    }
    server
}

/// Every smuggling report `code`'s node may read, read to the end.
async fn read_smuggling(server: &TestServer, pki: &TestPki, code: &str) {
    let mut stream = server
        .exchange(&node(pki, code))
        .await
        .query(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
}

/// How many of IDN's queries AUS's access list shows.
async fn reads_by_idn(server: &TestServer, pki: &TestPki) -> usize {
    access_list(server, pki, "AUS")
        .await
        .iter()
        .filter(|a| a.action == "query" && a.reader_state == "IDN")
        .count()
}

/// The trail journals in `pki`'s certificate directory.
fn trail_journals(pki: &TestPki) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(pki.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("audit-trail-"))
        .collect()
}

/// The trail journal covers the whole log from the first start on: the give-to-get
/// rules' leaf (no audit record) too, so the next start does not find the journal short
/// of the log, as after a crash.
#[tokio::test]
async fn the_trail_journal_covers_the_rules_leaf_of_the_first_start() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let channel = server.channel(&node(&pki, "AUS")).await;
    let size = common::log_size(&mut pb::transparency_client::TransparencyClient::new(
        channel,
    ))
    .await;
    assert!(size >= 1, "the rules are a leaf");
    let journals = trail_journals(&pki);
    let [journal] = journals.as_slice() else {
        panic!("{journals:?}");
    };
    let text = std::fs::read_to_string(journal).unwrap();
    let covered = text
        .lines()
        .filter_map(|line| line.strip_prefix("leaves "))
        .filter_map(|range| range.split_once(' '))
        .filter_map(|(_, to)| to.parse::<u64>().ok())
        .max();
    assert_eq!(covered, Some(size), "{text}");
}

/// A restore does not take back the access trail: the audit records written after the
/// backup (a state's read of another's reports, a refusal, the backup's own record) are
/// written again at start from the trail journal beside the access journal, once, and
/// the owner's access list shows them. A restored store is a fork of its own: a restore
/// drill served beside the live server writes nothing into the live server's trail, and
/// the next restore from the backup gets back what the live server recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one drill, step by step
async fn a_restore_keeps_the_access_trail_written_after_its_backup() {
    let pki = TestPki::new();
    let live = two_contributors(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_, file) = backup_as_operator(&pki, &live, dir.path());
    // After the backup: IDN reads AUS's report, and THA (no contribution) is refused.
    let query = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let read = async |server: &TestServer| read_smuggling(server, &pki, "IDN").await;
    read(&live).await;
    let refused = live
        .exchange(&node(&pki, "THA"))
        .await
        .query(query.clone())
        .await
        .expect_err("THA has not contributed");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let reads_by_idn = async |server: &TestServer| reads_by_idn(server, &pki).await;
    let audit = async |server: &TestServer| {
        let mut admin = server.admin(&common::operator(&pki)).await;
        common::audit_log(&mut admin).await
    };
    let refusals = |log: &[pb::AuditEntry]| {
        log.iter()
            .filter(|e| e.action == "refused query" && e.principal.contains("/THA/"))
            .count()
    };
    assert_eq!(reads_by_idn(&live).await, 1);

    // A restore drill beside the live server: the trail is back, once, and the drill's
    // own read stays in the drill's fork.
    let (drilled, _) = restore(&file);
    let drill = TestServer::start_with(&pki, drilled, |_| {}).await;
    assert_eq!(reads_by_idn(&drill).await, 1);
    let log = audit(&drill).await;
    assert_eq!(refusals(&log), 1);
    assert!(
        log.iter().any(|e| e.action == "backup"),
        "the backup's own record is back: {log:#?}"
    );
    let restore_record = log.iter().find(|e| e.action == "restore").unwrap();
    assert!(
        restore_record
            .detail
            .contains("\"audit_records_carried_over\":3"),
        "{}",
        restore_record.detail
    );
    read(&drill).await;
    read(&live).await;
    let data = drill.stop().await;
    let drill = TestServer::start_with(&pki, data, |_| {}).await;
    assert_eq!(reads_by_idn(&drill).await, 2, "nothing written twice");
    drill.stop().await;

    // The live server restarts on its own history — its journal, emptied here as a
    // crash of the machine could leave it, filled back from the store —; restored again
    // from the backup, it gets back its own two reads, not the drill's.
    let data = live.stop().await;
    let journals = trail_journals(&pki);
    assert_eq!(journals.len(), 2, "one per fork: {journals:?}");
    let live_journal = journals
        .iter()
        .find(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains(" from - at 0\n")
        })
        .unwrap();
    let text = std::fs::read_to_string(live_journal).unwrap();
    let first_two: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(live_journal, first_two.join("\n") + "\n").unwrap();
    let live = TestServer::start_with(&pki, data, |_| {}).await;
    assert_eq!(reads_by_idn(&live).await, 2);
    live.stop().await;
    let (restored, _) = restore(&file);
    let server = TestServer::start_with(&pki, restored, |_| {}).await;
    let log = audit(&server).await;
    assert_eq!(reads_by_idn(&server).await, 2, "{log:#?}");
    assert_eq!(refusals(&log), 1);
    server.stop().await;

    // A journal edited to name another operator is not this store's history: a restored
    // store does not start on it unless told.
    let live_text = std::fs::read_to_string(live_journal).unwrap();
    let edited: Vec<String> = live_text
        .lines()
        .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            [leaf, number, record] if leaf.parse::<u64>().is_ok() => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut bytes = b64.decode(record).unwrap();
                if let Some(at) = bytes.windows(5).position(|w| w == b"ops-1") {
                    bytes[at + 4] = b'9';
                }
                format!("{leaf} {number} {}", b64.encode(bytes))
            }
            _ => line.to_owned(),
        })
        .collect();
    assert_ne!(
        edited.join("\n") + "\n",
        live_text,
        "an operator was renamed"
    );
    std::fs::write(live_journal, edited.join("\n") + "\n").unwrap();
    let (restored, _) = restore(&file);
    let refused = tidemark::Server::build(pki.config(&restored))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        refused.contains("does not match this store's log")
            && refused.contains("--trust-files-lost"),
        "{refused}"
    );
    std::fs::write(live_journal, live_text).unwrap();

    // Without its trail journal, a restored store does not start unless told. (The
    // backup named by its manifest restores as well.)
    let mut manifest = file.clone().into_os_string();
    manifest.push(".manifest.json");
    let (restored, _) = restore(std::path::Path::new(&manifest));
    // Emptied is missing too, and so is removed.
    for empty in [true, false] {
        for journal in trail_journals(&pki) {
            if empty {
                std::fs::write(journal, "").unwrap();
            } else {
                std::fs::remove_file(journal).unwrap();
            }
        }
        let refused = tidemark::Server::build(pki.config(&restored))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            refused.contains("audit-trail-") && refused.contains("--trust-files-lost"),
            "{refused}"
        );
    }
    // Told, it starts, and its restore record says the trail was lost.
    let mut told = pki.config(&restored);
    told.trust_files_lost = true;
    drop(tidemark::Server::build(told).expect("started when told"));
    let server = TestServer::start_with(&pki, restored, |_| {}).await;
    let log = audit(&server).await;
    let restore_record = log.iter().find(|e| e.action == "restore").unwrap();
    assert!(
        restore_record
            .detail
            .contains("the audit trail journal was missing"),
        "{}",
        restore_record.detail
    );
}

/// Two copies of one store made by hand (not with `tidemark restore`) share its fork;
/// the one behind the journal cannot tell whether it was rolled back or its copy ran
/// ahead, so it takes none of the other's records and starts a journal of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_made_by_hand_takes_none_of_the_other_copys_records() {
    let pki = TestPki::new();
    let original = two_contributors(&pki).await.stop().await;
    let copy = tempfile::TempDir::new().unwrap();
    let store = |dir: &std::path::Path| tidemark::config::StoreConfig::in_dir(dir).path;
    std::fs::copy(store(original.path()), store(copy.path())).unwrap();
    let ahead = TestServer::start_with(&pki, copy, |_| {}).await;
    read_smuggling(&ahead, &pki, "IDN").await;
    ahead.stop().await;
    let behind = TestServer::start_with(&pki, original, |_| {}).await;
    assert_eq!(
        reads_by_idn(&behind, &pki).await,
        0,
        "the copy's read is not taken"
    );
    read_smuggling(&behind, &pki, "IDN").await;
    let data = behind.stop().await;
    let again = TestServer::start_with(&pki, data, |_| {}).await;
    assert_eq!(reads_by_idn(&again, &pki).await, 1);
    again.stop().await;
    assert_eq!(
        trail_journals(&pki).len(),
        2,
        "the copy behind started a journal of its own"
    );
}

/// Handshakes that start and then stall — a first byte, then nothing — from several
/// addresses, as many as the pool of pending handshakes holds, do not lock a new client
/// out until they time out: the oldest of the address holding the most is closed to
/// make room (an outside pass filled the pool from 33 addresses and every new connection
/// failed for the handshake timeout). What is pending, open and closed so is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_many_addresses_make_room_and_are_counted() {
    use tokio::io::AsyncWriteExt;
    const PER_ADDRESS: usize = 8;
    const ADDRESSES: usize = 4;
    let pki = TestPki::new();
    let (server, metrics) = TestServer::start_with_metrics_and(&pki, |c| {
        c.limits.handshake_timeout_secs = 60;
        c.limits.max_pending_handshakes_per_address = PER_ADDRESS;
        c.limits.max_pending_handshakes = PER_ADDRESS * ADDRESSES;
    })
    .await;
    let mut stalled = Vec::new();
    for n in 0..PER_ADDRESS * ADDRESSES {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let from = format!("127.0.0.{}:0", 2 + n % ADDRESSES);
        socket.bind(from.parse().unwrap()).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        // The first byte of a TLS handshake record, and no more.
        tcp.write_all(&[0x16]).await.unwrap();
        stalled.push(tcp);
    }
    let full = |scrape: &prometheus_parse::Scrape| {
        count(scrape, "tidemark_pending_handshakes", &[]) == (PER_ADDRESS * ADDRESSES) as u64
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !full(&scrape(metrics).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool never filled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Every stalled handshake has spoken, so none is closed for silence; a client on
    // 127.0.0.1 is answered all the same.
    let mut exchange = None;
    let me = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let exchange = exchange.insert(server.exchange(&node(&pki, "AUS")).await);
        exchange.who_am_i(pb::WhoAmIRequest {}).await
    })
    .await
    .expect("a new client is answered while the pool is full of stalled handshakes")
    .unwrap();
    assert_eq!(me.into_inner().state, "AUS");
    let after = scrape(metrics).await;
    assert!(
        count(
            &after,
            "tidemark_handshakes_refused_total",
            &[("reason", "evicted")]
        ) >= 1
    );
    assert!(count(&after, "tidemark_open_connections", &[]) >= 1);
    assert!(count(&after, "tidemark_pending_handshakes", &[]) <= (PER_ADDRESS * ADDRESSES) as u64);
    // While the attacker keeps opening such handshakes, each making room, new clients
    // still get in: what is closed is the attacker's, not a client's connection whose
    // hello the server has not read yet (an outside pass: with a rule of the oldest
    // silent connection first, a third of new clients' calls failed).
    let addr = server.addr;
    let churn = tokio::spawn(async move {
        let mut held = std::collections::VecDeque::new();
        for n in 0usize.. {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            let from = format!("127.0.0.{}:0", 2 + n % ADDRESSES);
            socket.bind(from.parse().unwrap()).unwrap();
            if let Ok(mut tcp) = socket.connect(addr).await {
                let _ = tcp.write_all(&[0x16]).await;
                held.push_back(tcp);
            }
            if held.len() > 4 * PER_ADDRESS * ADDRESSES {
                held.pop_front();
            }
            tokio::task::yield_now().await;
        }
    });
    for attempt in 0..20 {
        let me = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            server
                .exchange(&node(&pki, "AUS"))
                .await
                .who_am_i(pb::WhoAmIRequest {})
                .await
        })
        .await
        .unwrap_or_else(|_| panic!("attempt {attempt}: not answered"));
        assert!(me.is_ok(), "attempt {attempt}: {me:?}");
    }
    churn.abort();
    drop((stalled, exchange));
}
