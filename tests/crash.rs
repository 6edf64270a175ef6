//! Nothing acknowledged is lost: a server process killed with SIGKILL under concurrent
//! submitters, several times over, still holds every submission it acknowledged.

mod common;

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{sample_report, sign};
use tidemark::{client::ClientIdentity, pb, signing::SigningKey};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
const CYCLES: usize = 3;
const SUBMITTERS: usize = 4;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tidemark serve` on its development defaults in `dir`; waits until it answers.
async fn serve(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--certs", &dir.join("certs").display().to_string()])
        .args(["--data", &dir.join("data").display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if dir.join("certs/aus-node.pem").exists()
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start on port {port}");
}

async fn connect(dir: &Path, port: u16) -> Option<pb::exchange_client::ExchangeClient<Channel>> {
    connect_as(dir, port, "aus-node")
        .await
        .map(pb::exchange_client::ExchangeClient::new)
}

/// A channel to the server as the development profile `certs/<profile>`.
async fn connect_as(dir: &Path, port: u16, profile: &str) -> Option<Channel> {
    let certs = dir.join("certs");
    let identity = ClientIdentity::from_files(
        &certs.join(format!("{profile}.pem")),
        &certs.join(format!("{profile}.key")),
        &certs.join("ca.pem"),
    )
    .unwrap();
    tidemark::client::connect(&format!("https://127.0.0.1:{port}"), &identity)
        .await
        .ok()
}

/// Every report id of AUS's that the server holds.
async fn stored_ids(
    exchange: &mut pb::exchange_client::ExchangeClient<Channel>,
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = String::new();
    loop {
        let mut stream = exchange
            .query(pb::QueryRequest {
                category: pb::Category::SmugglingIncident as i32,
                reporting_states: vec!["AUS".into()],
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut page = 0;
        while let Some(item) = stream.message().await.unwrap() {
            page += 1;
            ids.insert(item.meta.unwrap().report_id);
            after = item.cursor;
        }
        if page < 10_000 {
            return ids;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_submission_survives_kill_9() {
    let dir = tempfile::TempDir::new().unwrap();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut seed = 0u64;
    for cycle in 0..CYCLES {
        let port = free_port();
        let mut server = serve(dir.path(), port).await;
        let key =
            Arc::new(SigningKey::from_file(&dir.path().join("certs/aus-signing.key")).unwrap());
        let mut submitters = Vec::new();
        for _ in 0..SUBMITTERS {
            let (dir, key, acknowledged) =
                (dir.path().to_owned(), key.clone(), acknowledged.clone());
            let first = seed;
            seed += 100_000;
            submitters.push(tokio::spawn(async move {
                let Some(mut exchange) = connect(&dir, port).await else {
                    return;
                };
                for n in first.. {
                    let mut report = sample_report("AUS", n);
                    if !matches!(report.details, Some(pb::report::Details::Smuggling(_))) {
                        continue;
                    }
                    report.report_id = uuid::Uuid::new_v4().to_string();
                    let id = report.report_id.clone();
                    match common::submit(&mut exchange, sign(&report, &key)).await {
                        Ok(_) => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let them get going, then pull the plug mid-stream.
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle as u64)).await;
        server.kill().unwrap();
        server.wait().unwrap();
        for s in submitters {
            s.await.unwrap();
        }
    }
    let port = free_port();
    let mut server = serve(dir.path(), port).await;
    let mut exchange = connect(dir.path(), port).await.unwrap();
    let stored = stored_ids(&mut exchange).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.len() > 20,
        "too few submissions to test: {}",
        acknowledged.len()
    );
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged submissions lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}

/// A read open when the server is killed stays on record, and once the server is back it
/// is shown as cut short, not as still running: its record can no longer be completed.
/// A read of the new server process is in progress, not cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_open_at_kill_9_is_shown_cut_short_after_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let mut server = serve(dir.path(), port).await;
    // IDN contributes, so that it may read; AUS has a report for it to read.
    for state in ["IDN", "AUS"] {
        let lower = state.to_lowercase();
        let key =
            SigningKey::from_file(&dir.path().join(format!("certs/{lower}-signing.key"))).unwrap();
        let channel = connect_as(dir.path(), port, &format!("{lower}-node"))
            .await
            .unwrap();
        let report = (0..1_000)
            .map(|n| sample_report(state, n))
            .find(|r| matches!(r.details, Some(pb::report::Details::Smuggling(_))))
            .unwrap();
        common::submit(
            &mut pb::exchange_client::ExchangeClient::new(channel),
            sign(&report, &key),
        )
        .await
        .unwrap();
    }
    let subscribe = || pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let idn = connect_as(dir.path(), port, "idn-node").await.unwrap();
    let mut idn = pb::exchange_client::ExchangeClient::new(idn);
    // On record before the call is answered.
    let _watching = idn.subscribe(subscribe()).await.unwrap().into_inner();
    server.kill().unwrap();
    server.wait().unwrap();

    let port = free_port();
    let mut server = serve(dir.path(), port).await;
    let idn = connect_as(dir.path(), port, "idn-node").await.unwrap();
    let mut idn = pb::exchange_client::ExchangeClient::new(idn);
    // On record before the call is answered.
    let _watching = idn.subscribe(subscribe()).await.unwrap().into_inner();
    let operator = connect_as(dir.path(), port, "operator").await.unwrap();
    let records = common::audit_log(&mut pb::admin_client::AdminClient::new(operator)).await;
    let subscriptions: Vec<(bool, bool)> = records
        .iter()
        .filter(|e| e.action == "subscribe" && e.state == "IDN")
        .map(|e| (e.in_progress, e.cut_short))
        .collect();
    server.kill().unwrap();
    server.wait().unwrap();
    // The killed server's subscription, then the new one's.
    assert_eq!(subscriptions, [(true, true), (true, false)], "{records:?}");
}

/// An import whose server is killed mid-call says that its lines were sent and not
/// answered — some may have been stored — rather than that nothing was; run again once
/// the server is back, what was stored counts as already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_by_kill_9_says_its_lines_were_sent_and_not_answered() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let mut server = serve(dir.path(), port).await;
    let file = dir.path().join("aus.jsonl");
    let samples = Command::new(BIN)
        .args(["sample-reports", "--count", "3000", "--states", "AUS"])
        .output()
        .unwrap();
    std::fs::write(&file, samples.stdout).unwrap();
    let import = || {
        Command::new(BIN)
            .args(["import", &file.display().to_string(), "--batch", "3000"])
            .args(["--json", "--endpoint", &format!("https://127.0.0.1:{port}")])
            .args([
                "--as",
                &dir.path().join("certs/aus-node").display().to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let cut = import();
    // Part of it stored (the answer comes once all of it is), then the plug pulled.
    let mut exchange = connect(dir.path(), port).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored_ids(&mut exchange).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing stored in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let out = tokio::task::spawn_blocking(move || cut.wait_with_output().unwrap())
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&summary["accepted"], &summary["unanswered"]),
        (&0.into(), &3000.into()),
        "{summary}"
    );
    assert!(
        said.contains("lines 1 to 3000 were sent and not answered"),
        "{said}"
    );

    let mut server = serve(dir.path(), port).await;
    let again = import();
    let out = tokio::task::spawn_blocking(move || again.wait_with_output().unwrap())
        .await
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let duplicates = summary["duplicates"].as_u64().unwrap();
    assert!(duplicates > 0, "{summary}");
    assert_eq!(
        summary["accepted"].as_u64().unwrap() + duplicates,
        3000,
        "{summary}"
    );
}
