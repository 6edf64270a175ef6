//! Verifiable reciprocity: `tidemark audit verify-reciprocity` replays the transparency log
//! and finds every read the give-to-get rules in force did not allow — here, reads a
//! server granted through a test-only bypass while its log stated the rules.

mod common;

use std::process::Command;

use common::{TestPki, TestServer, World, node, report, sign};
use tempfile::TempDir;
use tidemark::{Clock, Role, pb};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Writes a node profile of `state` into `dir` for `--as`.
fn profile(pki: &TestPki, dir: &std::path::Path, state: &str) -> String {
    let identity = node(pki, state);
    let stem = dir.join(format!("{}-node", state.to_lowercase()));
    std::fs::write(stem.with_extension("pem"), identity.cert_pem()).unwrap();
    std::fs::write(stem.with_extension("key"), identity.key_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), identity.ca_pem()).unwrap();
    stem.display().to_string()
}

async fn verify_reciprocity(
    server: &TestServer,
    profile: &str,
    state: Option<&str>,
) -> (bool, String) {
    let mut args = vec![
        "audit".to_owned(),
        "verify-reciprocity".to_owned(),
        "--endpoint".to_owned(),
        server.endpoint(),
        "--as".to_owned(),
        profile.to_owned(),
    ];
    if let Some(state) = state {
        args.extend(["--state".to_owned(), state.to_owned()]);
    }
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn import(world: &World, state: &str, seeds: std::ops::Range<u64>, maritime: bool) {
    let all = pb::SharingScope::AllContributors;
    let items: Vec<pb::SubmitRequest> = seeds
        .map(|seed| pb::SubmitRequest {
            envelope: Some(sign(
                &report(state, seed, maritime, all, &[]),
                world.key(state),
            )),
            ..Default::default()
        })
        .collect();
    let n = items.len() as u64;
    let summary = world
        .exchange(state)
        .await
        .import(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, n, "{:?}", summary.rejections);
}

async fn query(world: &World, reader: &str, category: pb::Category) -> u64 {
    let mut results = world
        .exchange(reader)
        .await
        .query(pb::QueryRequest {
            category: category as i32,
            ..pb::QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while results.message().await.unwrap().is_some() {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_thousands_of_allowed_reads_verifies() {
    let world = World::new(Clock::system()).await;
    import(&world, "AUS", 0..1200, false).await;
    import(&world, "IDN", 0..900, false).await;
    import(&world, "THA", 0..600, true).await;
    import(&world, "THA", 600..700, false).await;
    // Retractions and amendments change contributions; the replay follows them.
    let retracted = report("IDN", 0, false, pb::SharingScope::AllContributors, &[]);
    let retraction = pb::Retraction {
        report_id: retracted.report_id.clone(),
        reporting_state: "IDN".to_owned(),
        version: 2,
        reason: "duplicate".to_owned(),
    };
    let envelope = tidemark::envelope::sign(
        tidemark::envelope::RETRACTION_PAYLOAD_TYPE,
        prost::Message::encode_to_vec(&retraction),
        world.key("IDN"),
    );
    common::submit(&mut world.exchange("IDN").await, envelope)
        .await
        .unwrap();
    for reader in ["AUS", "IDN", "THA"] {
        assert!(query(&world, reader, pb::Category::SmugglingIncident).await > 0);
    }
    assert!(query(&world, "THA", pb::Category::MaritimeMovement).await > 0);
    // A refused read (AUS has no maritime reports) is logged but not a violation.
    let refused = world
        .exchange("AUS")
        .await
        .query(pb::QueryRequest {
            category: pb::Category::MaritimeMovement as i32,
            ..pb::QueryRequest::default()
        })
        .await;
    assert!(refused.is_err());
    // A state analyst's aggregate over other states' reports.
    let analyst = world
        .pki
        .client(Role::StateAnalyst(common::state("IDN")), "idn-a");
    pb::analytics_client::AnalyticsClient::new(world.server.channel(&analyst).await)
        .aggregate(pb::AggregateRequest {
            group_by: vec![pb::Dimension::ReportingState as i32],
            metrics: vec![pb::Metric::Reports as i32],
            filter: Some(pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                ..pb::AggregateFilter::default()
            }),
        })
        .await
        .unwrap();

    let dir = TempDir::new().unwrap();
    let tha = profile(&world.pki, dir.path(), "THA");
    let (ok, said) = verify_reciprocity(&world.server, &tha, None).await;
    assert!(ok, "{said}");
    assert!(
        said.contains("verified: every read of any state's reports"),
        "{said}"
    );
    let (ok, said) = verify_reciprocity(&world.server, &tha, Some("AUS")).await;
    assert!(ok, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_granted_against_the_logged_rules_is_named() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, TempDir::new().unwrap(), |config| {
        config.policy.danger_grant_reads_without_contributing = true;
    })
    .await;
    let world = World::on(pki, server).await;
    import(&world, "AUS", 0..20, false).await;
    import(&world, "THA", 0..5, false).await;
    // IDN has contributed nothing, yet the bypassed server lets it read.
    assert_eq!(
        query(&world, "IDN", pb::Category::SmugglingIncident).await,
        25
    );
    assert!(query(&world, "THA", pb::Category::SmugglingIncident).await > 0);

    let dir = TempDir::new().unwrap();
    let aus = profile(&world.pki, dir.path(), "AUS");
    let (ok, said) = verify_reciprocity(&world.server, &aus, Some("AUS")).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("1 read(s) of AUS's reports were not allowed"),
        "{said}"
    );
    assert!(
        said.contains("query by spiffe://tidemark.test/state/IDN/node/"),
        "{said}"
    );
    assert!(
        said.contains("IDN had contributed 0 smuggling-incident reports in the 365 days before"),
        "{said}"
    );
    // THA, which contributed, is not named.
    assert!(!said.contains("/state/THA/"), "{said}");
}

#[test]
fn the_serve_command_refuses_the_test_only_bypass() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("tidemark.toml");
    std::fs::write(
        &config,
        "[policy]\ndanger_grant_reads_without_contributing = true\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("exists only for the tests"), "{said}");
}

/// A state that retracts its only contribution while it reads: every record that raises
/// what its reads may send lands in the log while it still stands, never after the
/// retraction (an outside pass had queries that began before a retraction raise their
/// records after it, and verify-reciprocity named them), and its reads then end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_a_retraction_of_the_readers_contribution_are_all_allowed() {
    const ROUNDS: u64 = 24;
    let world = World::new(Clock::system()).await;
    import(&world, "IDN", 0..40, false).await;
    let all = pb::SharingScope::AllContributors;
    let mut aus = world.exchange("AUS").await;
    for round in 0..ROUNDS {
        let mine = report("AUS", 1000 + round, false, all, &[]);
        common::submit(&mut aus, sign(&mine, world.key("AUS")))
            .await
            .unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| tokio::spawn(read_until_refused(aus.clone())))
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(round % 8)).await;
        common::submit(&mut aus, common::retraction(&mine, 2, world.key("AUS")))
            .await
            .unwrap();
        for reader in readers {
            reader.await.unwrap();
        }
    }
    let mut log = pb::transparency_client::TransparencyClient::new(
        world.server.channel(&node(&world.pki, "IDN")).await,
    );
    let mut entries: Vec<Vec<u8>> = Vec::new();
    loop {
        let start = entries.len() as u64;
        let page = log
            .get_entries(pb::GetEntriesRequest {
                start,
                end: start + 1000,
            })
            .await
            .map(|r| r.into_inner().entries);
        match page {
            Ok(page) if !page.is_empty() => entries.extend(page),
            _ => break,
        }
    }
    let replay = tidemark::reciprocity::replay(entries.iter().map(Vec::as_slice), None);
    assert!(replay.reads_checked > 0, "{replay:?}");
    assert!(replay.violations.is_empty(), "{:#?}", replay.violations);
}

/// Queries one report at a time as `aus` until a query is refused for want of standing.
async fn read_until_refused(
    mut aus: pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
) {
    loop {
        let asked = aus
            .query(pb::QueryRequest {
                category: pb::Category::SmugglingIncident as i32,
                limit: 1,
                ..pb::QueryRequest::default()
            })
            .await;
        let ended = match asked {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        match ended {
            None => {}
            Some(status) if status.code() == tonic::Code::PermissionDenied => return,
            // Another read of this principal's still holds its slot.
            Some(status) if status.code() == tonic::Code::ResourceExhausted => {}
            Some(status) => panic!("{status:?}"),
        }
    }
}
