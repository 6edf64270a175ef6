//! Witnesses as states run them (`tidemark log witness`): they check that the log only
//! grew and cosign it; a rewritten history is refused and never cosigned; a receipt
//! checked with `--quorum` fails for a branch only some witnesses were shown.

mod common;

use std::{path::Path, process::Command};

use common::{TestPki, TestServer, node};
use tempfile::TempDir;
use tidemark::pb::{self, transparency_client::TransparencyClient};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

use common::cli_profile as profile;

async fn run(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tidemark log witness` of `profile` in `state_dir`, against `server`.
fn witness_args(server: &TestServer, profile: &str, state_dir: &Path) -> Vec<String> {
    witness_args_at(&server.endpoint(), profile, state_dir)
}

/// `tidemark log witness` of `profile` in `state_dir`, against the server at `endpoint`.
fn witness_args_at(endpoint: &str, profile: &str, state_dir: &Path) -> Vec<String> {
    vec![
        "log".into(),
        "witness".into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--endpoint".into(),
        endpoint.to_owned(),
        "--as".into(),
        profile.to_owned(),
    ]
}

async fn witness(server: &TestServer, profile: &str, state_dir: &Path) -> std::process::Output {
    run(witness_args(server, profile, state_dir)).await
}

/// `audit --verify` and `audit verify-reciprocity` of `profile` against `server`, each
/// under the checkpoint the witness in `state_dir` holds: the exit code of each and what
/// it said.
async fn audit_checks(
    server: &TestServer,
    profile: &str,
    state_dir: &Path,
) -> [(Option<i32>, String); 2] {
    let common = [
        "--state-dir".to_owned(),
        state_dir.display().to_string(),
        "--endpoint".to_owned(),
        server.endpoint(),
        "--as".to_owned(),
        profile.to_owned(),
    ];
    let mut outs = Vec::new();
    for check in ["--verify", "verify-reciprocity"] {
        let mut args = vec!["audit".to_owned(), check.to_owned()];
        args.extend(common.iter().cloned());
        let out = run(args).await;
        outs.push((out.status.code(), text(&out)));
    }
    [outs[0].clone(), outs[1].clone()]
}

/// Submits sample report `seed` of `state` through the command line.
async fn submit(server: &TestServer, profile: &str, dir: &Path, state: &str, seed: u64) {
    let out = run(vec![
        "sample-reports".into(),
        "--count".into(),
        "1".into(),
        "--states".into(),
        state.into(),
        "--seed".into(),
        seed.to_string(),
    ])
    .await;
    let file = dir.join(format!("report-{state}-{seed}.json"));
    std::fs::write(&file, &out.stdout).unwrap();
    let out = run(vec![
        "submit".into(),
        file.display().to_string(),
        "--endpoint".into(),
        server.endpoint(),
        "--as".into(),
        profile.to_owned(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
}

async fn newest_checkpoint(server: &TestServer, pki: &TestPki) -> pb::Checkpoint {
    TransparencyClient::new(server.channel(&node(pki, "THA")).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// A copy of a stopped server's store, to start a second history from.
fn copy_store(data: &TempDir) -> TempDir {
    let copy = TempDir::new().unwrap();
    std::fs::copy(
        data.path().join("tidemark.redb"),
        copy.path().join("tidemark.redb"),
    )
    .unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_refuses_a_rewritten_history_and_never_cosigns_it() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let state_dir = dir.path().join("aus-witness");
    for seed in 1..=3 {
        submit(&server, &aus, dir.path(), "AUS", seed).await;
    }
    let first = witness(&server, &aus, &state_dir).await;
    assert!(first.status.success(), "{}", text(&first));

    // The operator keeps a copy of the store, and the log goes on.
    let data = server.stop().await;
    let fork = copy_store(&data);
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    for seed in 4..=5 {
        submit(&server, &aus, dir.path(), "AUS", seed).await;
    }
    let second = witness(&server, &aus, &state_dir).await;
    assert!(second.status.success(), "{}", text(&second));
    let cosigned = newest_checkpoint(&server, &pki).await;
    assert!(cosigned.note.contains("/witness/AUS "), "{}", cosigned.note);
    let held = std::fs::read_to_string(state_dir.join("checkpoint")).unwrap();
    drop(server.stop().await);

    // It then serves the old copy with other reports appended: another history.
    let server = TestServer::start_with(&pki, fork, |_| {}).await;
    for seed in 100..=104 {
        submit(&server, &aus, dir.path(), "AUS", seed).await;
    }
    let third = witness(&server, &aus, &state_dir).await;
    let said = text(&third);
    assert_eq!(third.status.code(), Some(4), "{said}");
    assert!(said.contains("the log was rewritten"), "{said}");
    assert!(said.contains("nothing was cosigned"), "{said}");
    // The state's own checks of the log under that checkpoint exit alike.
    for (code, said) in audit_checks(&server, &aus, &state_dir).await {
        assert_eq!(code, Some(4), "{said}");
        assert!(said.contains("the recomputed root differs"), "{said}");
    }
    // The fork was never cosigned, and the witness kept the checkpoint it had verified.
    let forked = newest_checkpoint(&server, &pki).await;
    assert!(!forked.note.contains("/witness/"), "{}", forked.note);
    assert_eq!(
        std::fs::read_to_string(state_dir.join("checkpoint")).unwrap(),
        held
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_refuses_a_rolled_back_log() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let state_dir = dir.path().join("aus-witness");
    submit(&server, &aus, dir.path(), "AUS", 1).await;
    let data = server.stop().await;
    let old = copy_store(&data);
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    for seed in 2..=4 {
        submit(&server, &aus, dir.path(), "AUS", seed).await;
    }
    assert!(witness(&server, &aus, &state_dir).await.status.success());
    drop(server.stop().await);
    let server = TestServer::start_with(&pki, old, |_| {}).await;
    let out = witness(&server, &aus, &state_dir).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("rolled back"), "{}", text(&out));
    // The state's own checks of the log under its checkpoint exit alike.
    for (code, said) in audit_checks(&server, &aus, &state_dir).await {
        assert_eq!(code, Some(3), "{said}");
        assert!(said.contains("the log was rolled back"), "{said}");
    }
    // A witness that lost its checkpoint does not trust the rolled-back log instead.
    std::fs::remove_file(state_dir.join("checkpoint")).unwrap();
    let out = witness(&server, &aus, &state_dir).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("checkpoint is gone"), "{}", text(&out));
    assert!(!state_dir.join("checkpoint").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_directory_belongs_to_one_witness() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let state_dir = dir.path().join("aus-witness");
    let first = witness(&server, &aus, &state_dir).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("no checkpoint held yet"),
        "{}",
        text(&first)
    );
    let before = std::fs::read_to_string(state_dir.join("witness.vkey")).unwrap();
    // Its checkpoint saved with CR LF (an editor's doing) is the same note, as
    // verify-receipt reads a proof so saved.
    let held = state_dir.join("checkpoint");
    let note = std::fs::read_to_string(&held).unwrap();
    std::fs::write(&held, note.replace('\n', "\r\n")).unwrap();
    let again = witness(&server, &aus, &state_dir).await;
    assert!(again.status.success(), "{}", text(&again));
    let out = witness(&server, &idn, &state_dir).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("another witness"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(state_dir.join("witness.vkey")).unwrap(),
        before
    );
    // Its own log key replaced by another: a fault in its own files (exit 1), said as
    // such before the server is asked, not an alarm about the server's log (exit 4).
    let other = tidemark::tlog::note::NoteSigner::generate("example.org/log")
        .unwrap()
        .verifier_key();
    std::fs::write(state_dir.join("log.vkey"), format!("{other}\n")).unwrap();
    let out = witness(&server, &aus, &state_dir).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not open with the log key held beside it"),
        "{}",
        text(&out)
    );
}

/// A log that serves `note` as its newest checkpoint and nothing else, with the test
/// exchange's server certificate: what a server that changed its log's name would show.
struct RenamedLog {
    note: String,
}

#[tonic::async_trait]
impl pb::transparency_server::Transparency for RenamedLog {
    async fn get_checkpoint(
        &self,
        _: tonic::Request<pb::GetCheckpointRequest>,
    ) -> Result<tonic::Response<pb::Checkpoint>, tonic::Status> {
        Ok(tonic::Response::new(pb::Checkpoint {
            note: self.note.clone(),
            ..pb::Checkpoint::default()
        }))
    }
    async fn get_verifier_key(
        &self,
        _: tonic::Request<pb::GetVerifierKeyRequest>,
    ) -> Result<tonic::Response<pb::GetVerifierKeyResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not this log"))
    }
    async fn get_inclusion_proof(
        &self,
        _: tonic::Request<pb::GetInclusionProofRequest>,
    ) -> Result<tonic::Response<pb::InclusionProof>, tonic::Status> {
        Err(tonic::Status::unimplemented("not this log"))
    }
    async fn get_consistency_proof(
        &self,
        _: tonic::Request<pb::GetConsistencyProofRequest>,
    ) -> Result<tonic::Response<pb::ConsistencyProof>, tonic::Status> {
        Err(tonic::Status::unimplemented("not this log"))
    }
    async fn get_entries(
        &self,
        _: tonic::Request<pb::GetEntriesRequest>,
    ) -> Result<tonic::Response<pb::GetEntriesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not this log"))
    }
    async fn add_cosignature(
        &self,
        _: tonic::Request<pb::AddCosignatureRequest>,
    ) -> Result<tonic::Response<pb::AddCosignatureResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not this log"))
    }
}

/// A log whose checkpoint, signed with the log's own key, names another log (origin) is
/// an alarm (exit 4, naming both), as a rewritten one is — not "the directory of another
/// witness" (exit 1, which an outside pass got: the witness made its own name from the
/// new origin before it compared the checkpoint with the one it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_changed_its_name_is_an_alarm() {
    use tidemark::tlog::{checkpoint::Checkpoint, note::NoteSigner};
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let state_dir = dir.path().join("aus-witness");
    let first = witness(&server, &aus, &state_dir).await;
    assert!(first.status.success(), "{}", text(&first));
    // The held checkpoint's size and root, under another origin, signed with the log's
    // key under its own name (as the witness holds it).
    let held = std::fs::read_to_string(state_dir.join("checkpoint")).unwrap();
    let body: Vec<&str> = held.lines().take(3).collect();
    let (origin, size) = (body[0], body[1].parse::<u64>().unwrap());
    let root: [u8; 32] =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body[2])
            .unwrap()
            .try_into()
            .unwrap();
    // The log's key (the receipt key): RFC 8410's PKCS#8 holds the 32-byte seed at
    // bytes 16..48, in version 1 and 2 alike.
    let pem = std::fs::read_to_string(pki.dir.path().join("receipt.key")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    let seed: [u8; 32] = der[16..48].try_into().unwrap();
    let signer = NoteSigner::from_seed(origin, seed).unwrap();
    assert_eq!(
        signer.verifier_key(),
        std::fs::read_to_string(state_dir.join("log.vkey"))
            .unwrap()
            .trim(),
        "the log's own key"
    );
    let note = Checkpoint::new("elsewhere.test/log", size, root)
        .sign(&signer)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(pki.dir.path().join("server.pem")).unwrap(),
        std::fs::read(pki.dir.path().join("server.key")).unwrap(),
    );
    let renamed = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(pb::transparency_server::TransparencyServer::new(
            RenamedLog { note },
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let renamed = tokio::spawn(renamed);
    let out = run(witness_args_at(&endpoint, &aus, &state_dir)).await;
    renamed.abort();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("elsewhere.test/log") && text(&out).contains(origin),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("checkpoint")).unwrap(),
        held,
        "nothing is kept"
    );
}

/// A first run whose cosignature the server refuses (signed with a key that is not the
/// state's) does not make the directory that witness's: the right key works in it next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_run_leaves_the_directory_free() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let stray = dir.path().join("unregistered-signing");
    tidemark::pki::write_signing_key(&stray).unwrap();
    let state_dir = dir.path().join("aus-witness");
    let mut args = witness_args(&server, &aus, &state_dir);
    args.extend(["--signing-key".into(), format!("{}.key", stray.display())]);
    let refused = run(args.clone()).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("refused the cosignature"),
        "{}",
        text(&refused)
    );
    assert!(!state_dir.join("witness.vkey").exists());
    args.truncate(args.len() - 2);
    let next = run(args).await;
    assert!(next.status.success(), "{}", text(&next));
    assert!(state_dir.join("witness.vkey").exists());
}

/// A first run given the wrong log key (same origin, another key) records nothing — no
/// log key, no checkpoint — and says so without raising the rewritten-log alarm; the run
/// with the right key then starts the directory. An analyst's certificate is refused
/// before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_with_the_wrong_log_key_or_not_as_a_node_records_nothing() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let wrong = tidemark::tlog::note::NoteSigner::from_seed("tidemark.test/log", [3; 32])
        .unwrap()
        .verifier()
        .verifier_key();
    let wrong_file = dir.path().join("wrong.vkey");
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    // Two directories deep, neither there yet.
    let state_dir = dir.path().join("witnesses/aus-witness");
    let mut args = witness_args(&server, &aus, &state_dir);
    args.extend(["--log-key".into(), wrong_file.display().to_string()]);
    let refused = run(args.clone()).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("nothing was recorded"),
        "{}",
        text(&refused)
    );
    // Not even the directories it made, nor its lock file.
    assert!(!dir.path().join("witnesses").exists());
    // The log key given as text, as verify-receipt takes it: refused alike.
    let mut as_text = args.clone();
    *as_text.last_mut().unwrap() = wrong;
    let refused = run(as_text).await;
    assert!(
        text(&refused).contains("nothing was recorded") && !state_dir.exists(),
        "{}",
        text(&refused)
    );
    args.truncate(args.len() - 2);
    // While another run holds the directory: exit 5, apart from a usage error's 2.
    std::fs::create_dir_all(&state_dir).unwrap();
    let held = std::fs::File::create(state_dir.join("witness.lock")).unwrap();
    held.try_lock().unwrap();
    let locked = run(args.clone()).await;
    assert_eq!(locked.status.code(), Some(5), "{}", text(&locked));
    drop(held);
    let mut bad = args.clone();
    bad.push("--no-such-flag".into());
    assert_eq!(run(bad).await.status.code(), Some(2));
    let next = run(args).await;
    assert!(next.status.success(), "{}", text(&next));
    assert!(state_dir.join("log.vkey").exists());

    let analyst = common::analyst(&pki, "AUS");
    std::fs::write(dir.path().join("aus-analyst.pem"), analyst.cert_pem()).unwrap();
    std::fs::write(dir.path().join("aus-analyst.key"), analyst.key_pem()).unwrap();
    let analyst_dir = dir.path().join("analyst-witness");
    let refused = witness(
        &server,
        &dir.path().join("aus-analyst").display().to_string(),
        &analyst_dir,
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("runs as a state's node"),
        "{}",
        text(&refused)
    );
    assert!(!analyst_dir.exists());
}

/// `tidemark log proof` of leaf `index` under the checkpoint of `size` leaves.
fn proof_args(
    server: &TestServer,
    profile: &str,
    index: u64,
    size: u64,
    out: &Path,
) -> Vec<String> {
    [
        "log",
        "proof",
        "--index",
        &index.to_string(),
        "--size",
        &size.to_string(),
        "--out",
        &out.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        profile,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `tidemark verify-receipt` of `file` with `witnesses` and `quorum`.
fn verify_args(
    file: &Path,
    log_key: &Path,
    witnesses: &[std::path::PathBuf],
    quorum: usize,
) -> Vec<String> {
    let mut args = vec![
        "verify-receipt".to_owned(),
        file.display().to_string(),
        "--log-key".to_owned(),
        log_key.display().to_string(),
        "--quorum".to_owned(),
        quorum.to_string(),
    ];
    for key in witnesses {
        args.extend(["--witness-key".to_owned(), key.display().to_string()]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_needs_a_quorum_of_witnesses_and_a_split_view_lacks_it() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let (aus_dir, idn_dir) = (
        dir.path().join("aus-witness"),
        dir.path().join("idn-witness"),
    );
    submit(&server, &aus, dir.path(), "AUS", 1).await;
    for (profile, state_dir) in [(&aus, &aus_dir), (&idn, &idn_dir)] {
        let out = witness(&server, profile, state_dir).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let shared = newest_checkpoint(&server, &pki).await;

    // Two histories of the same size from the same past: AUS is shown one, IDN the other.
    let data = server.stop().await;
    let copy = copy_store(&data);
    let branch_a = TestServer::start_with(&pki, data, |_| {}).await;
    let branch_b = TestServer::start_with(&pki, copy, |_| {}).await;
    submit(&branch_a, &aus, dir.path(), "AUS", 2).await;
    submit(&branch_b, &aus, dir.path(), "AUS", 3).await;
    let (a, b) = (
        newest_checkpoint(&branch_a, &pki).await,
        newest_checkpoint(&branch_b, &pki).await,
    );
    assert_eq!(a.tree_size, b.tree_size);
    assert_ne!(a.note, b.note);
    assert!(witness(&branch_a, &aus, &aus_dir).await.status.success());
    assert!(witness(&branch_b, &idn, &idn_dir).await.status.success());

    let log_key = dir.path().join("log.vkey");
    std::fs::write(
        &log_key,
        common::log_key(&mut TransparencyClient::new(
            branch_a.channel(&node(&pki, "THA")).await,
        ))
        .await,
    )
    .unwrap();
    let witnesses = [aus_dir.join("witness.vkey"), idn_dir.join("witness.vkey")];
    let proof = |server: &TestServer, index: u64, size: u64, out: &Path| {
        proof_args(server, &aus, index, size, out)
    };
    let verify = |file: &Path, quorum: usize| verify_args(file, &log_key, &witnesses, quorum);
    // The new entry of branch A: only AUS's witness saw that history.
    let branch_receipt = dir.path().join("branch.proof");
    let out = run(proof(
        &branch_a,
        a.tree_size - 1,
        a.tree_size,
        &branch_receipt,
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let refused = run(verify(&branch_receipt, 2)).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("cosigned by 1 of the 2 witnesses"),
        "{}",
        text(&refused)
    );
    let one = run(verify(&branch_receipt, 1)).await;
    assert!(one.status.success(), "{}", text(&one));
    // One witness named twice is one witness, not a quorum of two.
    let mut twice = verify(&branch_receipt, 2);
    let idn_at = twice
        .iter()
        .position(|a| a.contains("idn-witness"))
        .unwrap();
    twice[idn_at] = aus_dir.join("witness.vkey").display().to_string();
    let refused = run(twice).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("than the 1 distinct"),
        "{}",
        text(&refused)
    );

    // An entry of the shared past, under the checkpoint both witnesses cosigned.
    let shared_receipt = dir.path().join("shared.proof");
    let out = run(proof(&branch_a, 0, shared.tree_size, &shared_receipt)).await;
    assert!(out.status.success(), "{}", text(&out));
    let both = run(verify(&shared_receipt, 2)).await;
    assert!(both.status.success(), "{}", text(&both));
    assert!(
        text(&both).contains("cosigned by 2 of 2"),
        "{}",
        text(&both)
    );
}

/// What an operator could do to a stopped server's store without the log: audit record
/// `number` removed from the audit table and from `owner`'s index.
fn remove_audit_record(data: &TempDir, number: u64, owner: &str) {
    let db = redb::Database::open(data.path().join("tidemark.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let audit: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let by_owner: redb::TableDefinition<(&str, u64), u64> =
            redb::TableDefinition::new("audit_by_owner");
        tx.open_table(audit).unwrap().remove(number).unwrap();
        tx.open_table(by_owner)
            .unwrap()
            .remove((owner, number))
            .unwrap();
    }
    tx.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_finds_an_access_record_removed_from_the_audit_table() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let world = common::World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    for seed in 1..=3 {
        world
            .submit(&common::report("AUS", seed, false, all, &[]))
            .await;
    }
    world
        .submit(&common::report("IDN", 9, false, all, &[]))
        .await;
    for _ in 0..2 {
        world.read_all_smuggling("IDN").await;
    }
    // An aggregate whose filter matches none of AUS's reports: its log entry names AUS
    // (in its scope), and AUS's access list holds it, with a count of 0.
    common::aggregate(
        &world.server,
        &common::analyst(&world.pki, "IDN"),
        pb::AggregateRequest {
            group_by: vec![],
            metrics: vec![pb::Metric::Reports as i32],
            filter: Some(pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                from_date: "1990-01-01".into(),
                to_date: "1990-01-31".into(),
                ..pb::AggregateFilter::default()
            }),
        },
    )
    .await
    .unwrap();

    let state_dir = dir.path().join("aus-witness");
    let audit = |server: &TestServer| {
        vec![
            "audit".to_owned(),
            "--my-data".to_owned(),
            "--verify".to_owned(),
            "--state-dir".to_owned(),
            state_dir.display().to_string(),
            "--endpoint".to_owned(),
            server.endpoint(),
            "--as".to_owned(),
            aus.clone(),
        ]
    };
    assert!(
        witness(&world.server, &aus, &state_dir)
            .await
            .status
            .success()
    );
    let clean = run(audit(&world.server)).await;
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(
        // IDN's two queries and aggregate, and the registrations of AUS's two keys.
        text(&clean).contains(": 5 accesses shown, each in the log as it stands"),
        "{}",
        text(&clean)
    );

    // Tampering the operator could do without the log: one of IDN's reads removed from
    // the audit table and its index.
    let number = common::audit_log(&mut world.server.admin(&common::operator(&world.pki)).await)
        .await
        .into_iter()
        .find(|e| e.action == "query" && e.state == "IDN")
        .unwrap()
        .number;
    let common::World { pki, server, .. } = world;
    let data = server.stop().await;
    remove_audit_record(&data, number, "AUS");
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    let caught = run(audit(&server)).await;
    let said = text(&caught);
    assert!(!caught.status.success(), "{said}");
    assert!(
        said.contains(&format!("audit record {number} (query by spiffe://")),
        "{said}"
    );
    assert!(said.contains("the access list leaves it out"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_signing_with_a_revoked_key_is_refused_and_told_which_key() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    submit(&server, &aus, dir.path(), "AUS", 1).await;
    let key =
        tidemark::signing::SigningKey::from_file(&dir.path().join("aus-signing.key")).unwrap();
    server
        .admin(&common::operator(&pki))
        .await
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key.key_id().into(),
            compromised_at_unix: 0,
            reason: "key-compromise".into(),
        })
        .await
        .unwrap();
    let out = witness(&server, &aus, &dir.path().join("aus-witness")).await;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "signing key {} of AUS, which is revoked",
            key.key_id()
        )),
        "{said}"
    );
    assert!(!said.contains("certificate's identity"), "{said}");
    let checkpoint = newest_checkpoint(&server, &pki).await;
    assert!(
        !checkpoint.note.contains("/witness/AUS "),
        "{}",
        checkpoint.note
    );
}
