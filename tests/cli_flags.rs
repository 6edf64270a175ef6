//! One flag per concept across the command line (#20): the report filters `query`,
//! `watch` and `aggregate` share, dates and times as RFC 3339 wherever a flag takes one,
//! and `retract`, which finds the version it creates and explains a refusal in words.

mod common;

use std::process::{Command, Output};

use common::{
    TestPki, TestServer,
    cli::{args as strings, assert_ok, run, run_ok},
    cli_profile as profile,
};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// A well-formed signing key id (64 lower-case hex digits).
const KEY_ID: &str = "abababababababababababababababababababababababababababababababab";

/// Runs the command offline, against a profile that does not exist: a command whose
/// flags parse gets as far as loading the profile.
fn offline(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--as", "/nonexistent/aus-node"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn query_watch_and_aggregate_take_the_same_filter_flags() {
    let filters: [&[&str]; 8] = [
        &["--state", "AUS,IDN"],
        &["--route-country", "AFG"],
        // The old spelling still works for `query` and `watch` scripts.
        &["--route", "AFG"],
        &["--nationality", "AFG,IRN"],
        &["--modus-operandi", "sea"],
        &["--maritime-event", "rescue"],
        &["--vessel-type", "wooden-boat"],
        &["--bbox", "-10,110,0,125"],
    ];
    for command in ["query", "watch", "aggregate"] {
        for filter in filters {
            let mut args = vec![command, "--category", "maritime"];
            args.extend_from_slice(filter);
            let said = offline(&args);
            assert!(said.contains("loading profile"), "{args:?}: {said}");
        }
        let said = offline(&[command, "--category", "maritime", "--vessel-type", "raft"]);
        assert!(
            said.contains("\"raft\" is not one of: fishing-boat, wooden-boat"),
            "{command}: {said}"
        );
        // One spelling: lower case with hyphens.
        for other in [
            &["--vessel-type", "FISHING-BOAT"][..],
            &["--vessel-type", "fishing_boat"],
            &["--modus-operandi", "Sea"],
            &["--maritime-event", "RESCUE"],
        ] {
            let mut args = vec![command, "--category", "maritime"];
            args.extend_from_slice(other);
            let said = offline(&args);
            assert!(said.contains("is not one of"), "{args:?}: {said}");
        }
    }
}

#[test]
fn zero_limits_and_counts_and_json_with_a_check_are_refused_not_ignored() {
    // `query --limit 0` would return nothing; the audit lists would return everything.
    for args in [
        &["audit", "--limit", "0"][..],
        &["admin", "audit", "--limit", "0"],
        &["query", "--category", "maritime", "--limit", "0"],
    ] {
        let said = offline(args);
        assert!(
            said.contains("invalid value '0' for '--limit"),
            "{args:?}: {said}"
        );
    }
    let said = offline(&["audit", "--verify", "--state-dir", "w", "--json"]);
    assert!(said.contains("cannot be used with"), "{said}");
    // Proofs only go into JSON lines: not asked for and then dropped from CSV.
    for format in ["--csv", "--json"] {
        let said = offline(&["query", "--category", "maritime", format, "--log-proofs"]);
        assert_eq!(
            said.contains("cannot be used with") || said.contains("required"),
            format == "--csv",
            "{format}: {said}"
        );
    }
    assert!(offline(&["audit", "--limit", "1", "--json"]).contains("loading profile"));
    // Nothing to write is not written as an empty file.
    let said = offline(&["sample-reports", "--count", "0", "--out", "/nonexistent/s"]);
    assert!(said.contains("invalid value '0' for '--count"), "{said}");
}

/// A standard error that cannot be written (a full disk) loses the message, not the
/// exit status: no panic (101).
#[test]
fn errors_end_with_their_status_when_stderr_cannot_be_written() {
    let commands: [&[&str]; 4] = [
        &[
            "query",
            "--category",
            "smuggling",
            "--as",
            "/nonexistent/aus-node",
        ],
        &["submit", "/nonexistent", "--as", "/nonexistent/aus-node"],
        &["verify", "/nonexistent", "--public-key", "/nonexistent"],
        &["query", "--no-such-flag"],
    ];
    for args in commands {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let status = Command::new(BIN)
            .args(args)
            .stderr(full)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        let expected = if args[1] == "--no-such-flag" { 2 } else { 1 };
        assert_eq!(status.code(), Some(expected), "{args:?}");
    }
}

#[test]
fn a_role_that_serves_no_state_refuses_one_and_writes_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    for role in ["regional-analyst", "operator"] {
        let out = Command::new(BIN)
            .args([
                "pki", "csr", "--role", role, "--state", "AUS", "--name", "x1",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role}: {said}");
        assert!(
            said.contains(&format!("does not fit the {role} role")),
            "{said}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{role}");
    }
    // An operator's CSR, which `admin issue` always refuses, is not made at all.
    let out = Command::new(BIN)
        .args(["pki", "csr", "--role", "operator", "--name", "ops2"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("pki issue --role operator"),
        "{said}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn pki_issue_never_writes_over_a_file() {
    let pki = TestPki::new();
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("ca.key"), pki.ca.key_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), "server's").unwrap();
    let before = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let (ca_pem, ca_key) = (before("ca.pem"), before("ca.key"));
    let issue = |name: &str| {
        Command::new(BIN)
            .args([
                "pki", "issue", "--role", "node", "--state", "AUS", "--name", name,
            ])
            .args(["--trust-domain", "tidemark.test", "--ca-dir"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    for name in ["ca", "server"] {
        let out = issue(name);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("already exists"),
            "{name}: {said}"
        );
    }
    // The CA is as it was, and no key was left beside the server's certificate.
    assert_eq!((before("ca.pem"), before("ca.key")), (ca_pem, ca_key));
    assert!(!dir.path().join("server.key").exists());
    // A new name is issued, once.
    for ok in [true, false] {
        let out = issue("aus-2");
        assert_eq!(out.status.success(), ok, "{out:?}");
    }
}

#[test]
fn pki_issue_refuses_a_ca_directory_whose_files_do_not_make_a_ca() {
    let pki = TestPki::new();
    let dir = tempfile::TempDir::new().unwrap();
    let node = common::node(&pki, "AUS");
    let issue = |ca_pem: &str, ca_key: &str| {
        let ca = dir.path().join("ca");
        std::fs::create_dir_all(&ca).unwrap();
        std::fs::write(ca.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(ca.join("ca.key"), ca_key).unwrap();
        let out = Command::new(BIN)
            .args(["pki", "issue", "--role", "operator", "--name", "op-9"])
            .args(["--trust-domain", "tidemark.test", "--ca-dir"])
            .arg(&ca)
            .arg("--out")
            .arg(dir.path().join(format!("out-{}", ca_key.len())))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ca_pem, ca_key) = (pki.ca.cert_pem().to_owned(), pki.ca.key_pem());
    assert!(issue(&ca_pem, &ca_key).0);
    for (cert, key, says) in [
        (
            ca_pem.as_str(),
            node.key_pem(),
            "not the private key of the CA certificate",
        ),
        (node.cert_pem(), node.key_pem(), "not a CA's"),
        (ca_pem.as_str(), "junk", "PEM"),
    ] {
        let (ok, said) = issue(cert, key);
        assert!(!ok && said.contains(says), "{says}: {said}");
        assert!(said.contains("ca.pem, ca.key"), "{said}");
    }
}

#[test]
fn query_takes_months_as_aggregate_does() {
    for (from, to) in [("2021-01", "2021-06"), ("2021-01-15", "2021-06")] {
        let said = offline(&[
            "query",
            "--category",
            "smuggling",
            "--from",
            from,
            "--to",
            to,
        ]);
        assert!(said.contains("loading profile"), "{from} {to}: {said}");
    }
    let said = offline(&["query", "--category", "smuggling", "--from", "2021-1"]);
    assert!(
        said.contains("is not a month YYYY-MM or a date YYYY-MM-DD"),
        "{said}"
    );
    // A month or day that does not exist is named as such.
    for (from, says) in [
        (
            "2021-13",
            "\"2021-13\" does not exist: there is no month 13",
        ),
        (
            "2021-02-29",
            "\"2021-02-29\" does not exist: February 2021 has 28 days",
        ),
    ] {
        let said = offline(&["query", "--category", "smuggling", "--from", from]);
        assert!(said.contains(says), "{said}");
    }
}

#[test]
fn times_are_rfc_3339_dates_or_date_times_never_epoch_seconds() {
    for when in [
        "2024-03-09",
        "2024-03-09T12:00:00Z",
        "2024-03-09T14:00:00+02:00",
    ] {
        for command in ["query", "watch"] {
            let said = offline(&[command, "--category", "smuggling", "--changed-since", when]);
            assert!(said.contains("loading profile"), "{command} {when}: {said}");
        }
    }
    for bad in ["1709985600", "2024-3-9", "2024-03-09 12:00"] {
        let said = offline(&["query", "--category", "smuggling", "--changed-since", bad]);
        assert!(
            said.contains("is not a date-time 2024-03-09T12:00:00Z"),
            "{bad}: {said}"
        );
    }
    let admin = [
        &[
            "register-key",
            "--state",
            "AUS",
            "--public-key",
            "k.pem",
            "--valid-until",
            "2027-06-30",
        ][..],
        &[
            "revoke-key",
            KEY_ID,
            "--compromised-at",
            "2026-11-02T08:00:00Z",
        ][..],
    ];
    for args in admin {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        let said = offline(&all);
        assert!(
            !said.contains("unexpected argument") && !said.contains("invalid value"),
            "{all:?}: {said}"
        );
    }
    let said = offline(&["admin", "revoke-key", KEY_ID, "--compromised-at-unix", "5"]);
    assert!(said.contains("unexpected argument"), "{said}");
}

/// Submits `report` (JSON) through the command line.
async fn submit(dir: &std::path::Path, endpoint: &str, aus: &str, report: &serde_json::Value) {
    let file = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, report.to_string()).unwrap();
    run_ok(strings(&[
        "submit",
        &file.display().to_string(),
        "--endpoint",
        endpoint,
        "--as",
        aus,
    ]))
    .await;
}

/// `tidemark retract ID --json` without a version.
async fn retract(endpoint: &str, aus: &str, id: &str) -> Output {
    run(strings(&[
        "retract",
        id,
        "--reason",
        "test",
        "--endpoint",
        endpoint,
        "--as",
        aus,
        "--json",
    ]))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retract_finds_the_version_it_creates_and_says_why_it_cannot() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let sample = run(strings(&[
        "sample-reports",
        "--count",
        "2",
        "--states",
        "AUS",
    ]))
    .await;
    let lines: Vec<serde_json::Value> = String::from_utf8(sample.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // The first report is amended twice (versions 2 and 3); the second stays at 1.
    for report in &lines {
        submit(dir.path(), &endpoint, &aus, report).await;
    }
    for version in [2, 3] {
        let mut amended = lines[0].clone();
        amended["version"] = version.into();
        amended["narrative"] = format!("Amended to version {version}.").into();
        submit(dir.path(), &endpoint, &aus, &amended).await;
    }
    let id = |i: usize| lines[i]["reportId"].as_str().unwrap().to_owned();
    for (i, creates) in [(0, 4), (1, 2)] {
        let out = retract(&endpoint, &aus, &id(i)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["accepted"]["version"], creates, "{json}");
        assert_eq!(json["accepted"]["kind"], "retraction", "{json}");
    }
    // The same retraction again is a duplicate: the original receipt.
    let out = retract(&endpoint, &aus, &id(1)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["duplicate"], &json["accepted"]["version"]),
        (&true.into(), &2.into())
    );
    // Another retraction of a retracted report: refused, in words, without the gRPC
    // code's name.
    let out = run(strings(&[
        "retract",
        &id(0),
        "--reason",
        "again",
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    let expected = format!("refused: report {} was retracted", id(0));
    assert!(said.contains(&expected), "{said}");
    assert!(!said.contains("FailedPrecondition"), "{said}");
    let out = retract(&endpoint, &aus, "0191f3a4-0000-7000-8000-000000000000").await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not found: report"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_who_read_my_data_without_a_mode_flag() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    for extra in [&[][..], &["--my-data"][..]] {
        let mut args = strings(&["audit", "--endpoint", &server.endpoint(), "--as", &aus]);
        args.extend(strings(extra));
        let out = run(args).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        let note = String::from_utf8_lossy(&out.stderr);
        // The note on stderr, as every command's "nothing to show": stdout is the list.
        assert!(
            note.contains("no other state has read your reports") && !said.contains("no other"),
            "{note}"
        );
        // The operator's registration of AUS's signing key is on AUS's list.
        assert!(said.contains(" register-key: key "), "{said}");
    }
    // A page cut short by --limit says where the list goes on, not that nobody read.
    server.register_new_key(&pki, "AUS").await;
    let audit = |extra: &[&str]| {
        let mut args = strings(&["audit", "--endpoint", &server.endpoint(), "--as", &aus]);
        args.extend(strings(extra));
        run(args)
    };
    let out = audit(&["--limit", "1"]).await;
    let (said, note) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        note.contains("no reads of your reports among these 1")
            && !note.contains("no other state has read")
            && !said.contains("no reads"),
        "{note}"
    );
    let before = note
        .split("--before ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{note}"));
    let out = audit(&["--limit", "1", "--before", before]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(" register-key: key "), "{said}");
    assert_eq!(
        note.trim(),
        "no other state read your reports before these",
        "{note}"
    );
}

#[test]
fn a_profile_without_its_ca_says_what_to_copy_and_each_reason_once() {
    let pki = TestPki::new();
    let dir = tempfile::TempDir::new().unwrap();
    let identity = common::node(&pki, "AUS");
    std::fs::write(dir.path().join("aus-node.pem"), identity.cert_pem()).unwrap();
    std::fs::write(dir.path().join("aus-node.key"), identity.key_pem()).unwrap();
    let profile = dir.path().join("aus-node").display().to_string();
    let out = Command::new(BIN)
        .args(["whoami", "--as", &profile])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("the CA that issued the exchange's server certificate"),
        "{said}"
    );
    assert!(said.contains("or pass --ca FILE"), "{said}");
    assert_eq!(said.matches("os error 2").count(), 1, "{said}");
    // Without the certificate: which two files a profile is.
    let out = Command::new(BIN)
        .args(["whoami", "--as", &format!("{profile}-missing")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("aus-node-missing.pem and its key"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_signing_key_is_named_not_the_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let key = revoke_profile_key(&server, &pki, dir.path(), 0).await;
    let sample = run(strings(&[
        "sample-reports",
        "--count",
        "1",
        "--states",
        "AUS",
    ]))
    .await;
    let file = dir.path().join("r.json");
    std::fs::write(&file, &sample.stdout).unwrap();
    let out = run(strings(&[
        "submit",
        &file.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        &aus,
    ]))
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("did not accept the signature")
            && said.contains(&format!("signing key {} was revoked", key.key_id())),
        "{said}"
    );
    assert!(!said.contains("certificate's identity"), "{said}");
    // An import with that key: the same refusal for every line is said once, in words.
    let sample = run_ok(strings(&["sample-reports", "--count", "3", "--seed", "9"])).await;
    let many = dir.path().join("many.jsonl");
    std::fs::write(&many, sample).unwrap();
    let out = run(strings(&[
        "import",
        &many.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        &aus,
    ]))
    .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("lines 1 to 3 (3 reports): not accepted"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certs_says_which_certificates_it_lists() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let operator = common::operator(&pki);
    std::fs::write(dir.path().join("operator.pem"), operator.cert_pem()).unwrap();
    std::fs::write(dir.path().join("operator.key"), operator.key_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), operator.ca_pem()).unwrap();
    let profile = dir.path().join("operator").display().to_string();
    let out = run(strings(&[
        "admin",
        "certs",
        "--endpoint",
        &server.endpoint(),
        "--as",
        &profile,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no certificates issued through this server")
            && said.contains("made offline"),
        "{said}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// Submits `n` sample reports of `state` through the command line; returns them.
async fn submit_samples(
    dir: &std::path::Path,
    endpoint: &str,
    profile: &str,
    state: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    let sample = run(strings(&[
        "sample-reports",
        "--count",
        &n.to_string(),
        "--states",
        state,
    ]))
    .await;
    let reports: Vec<serde_json::Value> = String::from_utf8(sample.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &reports {
        submit(dir, endpoint, profile, r).await;
    }
    reports
}

/// The JSON export of AUS's reports, a retraction included, imports back: its two live
/// reports are there already, and the retraction's line is skipped, saying so. An empty
/// file imports nothing, whatever its format.
async fn json_export_imports_back(dir: &std::path::Path, endpoint: &str, aus: &str) {
    let mut export = String::new();
    for category in ["smuggling", "maritime"] {
        export.push_str(
            &run_ok(strings(&[
                "query",
                "--category",
                category,
                "--state",
                "AUS",
                "--include-retracted",
                "--json",
                "--endpoint",
                endpoint,
                "--as",
                aus,
            ]))
            .await,
        );
    }
    let import = async |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = run(strings(&[
            "import",
            &file.display().to_string(),
            "--endpoint",
            endpoint,
            "--as",
            aus,
        ]))
        .await;
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{name}: {said}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), said)
    };
    let (summary, said) = import("export.jsonl", &export).await;
    assert!(said.contains("1 retraction skipped"), "{said}");
    assert!(
        summary.contains("0 accepted, 2 already there, 0 rejected"),
        "{said}"
    );
    // An empty file imports nothing, CSV as JSON lines (a byte-order mark and blank lines
    // are nothing too).
    for (name, text) in [("empty.csv", "\u{feff}\n"), ("empty.jsonl", "\n")] {
        let (summary, said) = import(name, text).await;
        assert!(
            summary.contains("0 accepted, 0 already there"),
            "{name}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_show_retractions_plainly_and_count_in_words() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let reports = submit_samples(dir.path(), &endpoint, &aus, "AUS", 3).await;
    let retracted = reports[0]["reportId"].as_str().unwrap().to_owned();
    let out = retract(&endpoint, &aus, &retracted).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    for category in ["smuggling", "maritime"] {
        let out = run(strings(&[
            "query",
            "--category",
            category,
            "--state",
            "AUS",
            "--include-retracted",
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]))
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("state "), "a header first: {text}");
        rows.extend(text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>());
        counts.push(String::from_utf8(out.stderr).unwrap().trim().to_owned());
    }
    let row = rows.iter().find(|r| r.contains(&retracted)).unwrap();
    assert!(row.trim_end().ends_with("retracted"), "{row:?}");
    json_export_imports_back(dir.path(), &endpoint, &aus).await;
    assert!(!row.contains("->"), "{row:?}");
    let shown: Vec<&str> = counts.iter().map(String::as_str).collect();
    assert!(
        shown
            .iter()
            .all(|c| ["0 reports", "1 report", "2 reports", "3 reports"].contains(c)),
        "{shown:?}"
    );

    let out = run(strings(&[
        "whoami",
        "--json",
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["role"], "ROLE_NODE", "the proto3 JSON mapping: {me}");
    assert!(
        me["spiffeId"].as_str().unwrap().contains("/state/AUS/"),
        "{me}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_one_named_state_is_not_flagged_as_one_state_only() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let endpoint = server.endpoint();
    for state in ["AUS", "THA"] {
        let node = profile(&pki, &server, dir.path(), state).await;
        submit_samples(dir.path(), &endpoint, &node, state, 12).await;
    }
    let regional = regional_profile(&pki, dir.path());
    let table = run_ok(strings(&[
        "aggregate",
        "--by",
        "state",
        "--endpoint",
        &endpoint,
        "--as",
        &regional,
    ]))
    .await;
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("AUS") || l.starts_with("THA"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in rows {
        assert!(!row.contains("one state only"), "{table}");
    }
    // Flags the server finds wrong are usage errors too: exit 2.
    let aus = dir.path().join("aus-node").display().to_string();
    for (line, who) in [
        (
            &["aggregate", "--from", "2024-06", "--to", "2024-01"][..],
            &regional,
        ),
        (&["aggregate", "--by", "month,year"], &regional),
        (
            &[
                "query",
                "--category",
                "smuggling",
                "--from",
                "2024-06-01",
                "--to",
                "2024-01-01",
            ],
            &aus,
        ),
    ] {
        let mut args = strings(line);
        args.extend(strings(&["--endpoint", &endpoint, "--as", who]));
        let out = run(args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Sync counts in words too.
    for category in ["smuggling", "maritime"] {
        let mirror = dir.path().join(format!("mirror-{category}"));
        let out = run(strings(&[
            "sync",
            "--category",
            category,
            "--into",
            &mirror.display().to_string(),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]))
        .await;
        let said = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = said.split_whitespace().collect();
        let n: u64 = words[0].parse().unwrap();
        let noun = if n == 1 { "change" } else { "changes" };
        assert_eq!(words[1], noun, "{said}");
    }
}

/// Revokes the signing key of the AUS profile in `dir` as compromised at `at` (0: now).
async fn revoke_profile_key(
    server: &TestServer,
    pki: &TestPki,
    dir: &std::path::Path,
    at: i64,
) -> tidemark::signing::SigningKey {
    let key = tidemark::signing::SigningKey::from_file(&dir.join("aus-signing.key")).unwrap();
    server
        .admin(&common::operator(pki))
        .await
        .revoke_signing_key(tidemark::pb::RevokeSigningKeyRequest {
            key_id: key.key_id().into(),
            compromised_at_unix: at,
            reason: "key-compromise".into(),
        })
        .await
        .unwrap();
    key
}

/// `query --json` of AUS's own reports, both categories, with `more` arguments.
async fn own_reports_as_json_lines(endpoint: &str, aus: &str, more: &[&str]) -> String {
    let mut lines = String::new();
    for category in ["smuggling", "maritime"] {
        let mut args = strings(&[
            "query",
            "--category",
            category,
            "--state",
            "AUS",
            "--json",
            "--endpoint",
            endpoint,
            "--as",
            aus,
        ]);
        args.extend(strings(more));
        let out = run(args).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_json_lines_against_a_key_directory_and_flags_revoked_keys() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let reports = submit_samples(dir.path(), &endpoint, &aus, "AUS", 3).await;
    // The first report was accepted before the key's compromise; the others after.
    let first = reports[0].clone();
    let mut later = reports[1..].to_vec();
    for r in &mut later {
        r["version"] = 2.into();
        r["narrative"] = "Amended after the compromise.".into();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let compromised = time::OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for r in &later {
        submit(dir.path(), &endpoint, &aus, r).await;
    }
    let key = revoke_profile_key(&server, &pki, dir.path(), compromised.unix_timestamp()).await;
    let keys = dir.path().join("keys").display().to_string();
    let out = run(strings(&[
        "keys",
        "--out",
        &keys,
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("{} REVOKED as of ", key.key_id()))
            && listed.contains(&format!("aus-{}.pub.pem", key.key_id())),
        "{listed}"
    );

    let lines = own_reports_as_json_lines(&endpoint, &aus, &[]).await;
    let file = dir.path().join("reports.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let out = run(strings(&[
        "verify",
        &file.display().to_string(),
        "--public-key",
        &keys,
    ]))
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    let first_id = first["reportId"].as_str().unwrap();
    let valid = said.lines().find(|l| l.contains(first_id)).unwrap();
    assert!(
        valid.starts_with("valid: ") && valid.contains("after this report was accepted"),
        "{said}"
    );
    assert_eq!(said.matches("UNTRUSTED: ").count(), 2, "{said}");
    assert!(
        said.contains(
            "3 envelopes: 1 valid, 2 untrusted (a key revoked before acceptance, or of no \
             known state), 0 invalid"
        ),
        "{said}"
    );
    // Several key files after one flag (a shell glob), and one line alone.
    let key_files: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let one = dir.path().join("one.json");
    let line = lines.lines().find(|l| l.contains(first_id)).unwrap();
    std::fs::write(&one, line).unwrap();
    let mut args = strings(&["verify", &one.display().to_string(), "--public-key"]);
    args.extend(key_files);
    let out = run(args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The unsigned report is not an envelope, and says so.
    let plain = dir.path().join("report.json");
    std::fs::write(&plain, first.to_string()).unwrap();
    let out = run(strings(&[
        "verify",
        &plain.display().to_string(),
        "--public-key",
        &keys,
    ]))
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a report as JSON is not signed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    check_log_proofs(dir.path(), &endpoint, &aus, &keys, first_id).await;
}

/// With `query --log-proofs` lines and the log's key, `verify` proves the acceptance
/// times (the first report before its key's revocation, the others after), and a line
/// whose meta or proof was changed, or a proof under another key, is invalid.
async fn check_log_proofs(
    dir: &std::path::Path,
    endpoint: &str,
    aus: &str,
    keys: &str,
    first_id: &str,
) {
    let log_key = run_ok(strings(&[
        "log",
        "verifier-key",
        "--from-server",
        "--endpoint",
        endpoint,
        "--as",
        aus,
    ]))
    .await
    .trim()
    .to_owned();
    let proven = own_reports_as_json_lines(endpoint, aus, &["--log-proofs"]).await;
    let verify_with_log = |text: &str, key: Option<&str>| {
        let file = dir.join("proven.jsonl");
        std::fs::write(&file, text).unwrap();
        let mut args = strings(&["verify", &file.display().to_string(), "--public-key", keys]);
        args.extend(key.map(|k| strings(&["--log-key", k])).unwrap_or_default());
        async move { String::from_utf8(run(args).await.stdout).unwrap() }
    };
    let said = verify_with_log(&proven, Some(&log_key)).await;
    let valid = said.lines().find(|l| l.contains(first_id)).unwrap();
    assert!(
        valid.starts_with("valid: ") && valid.contains("as its log entry"),
        "{said}"
    );
    assert_eq!(said.matches("UNTRUSTED: ").count(), 2, "{said}");
    // Without the key, the proof is not checked and the time stays the server's word.
    let said = verify_with_log(&proven, None).await;
    let valid = said.lines().find(|l| l.contains(first_id)).unwrap();
    assert!(
        valid.starts_with("valid: ") && valid.contains("give --log-key"),
        "{said}"
    );
    let line = proven.lines().find(|l| l.contains(first_id)).unwrap();
    // With the key, a line without a proof is said to prove nothing.
    let mut bare: serde_json::Value = serde_json::from_str(line).unwrap();
    bare.as_object_mut().unwrap().remove("logProof");
    let file = dir.join("bare.jsonl");
    std::fs::write(&file, bare.to_string()).unwrap();
    let out = run(strings(&[
        "verify",
        &file.display().to_string(),
        "--public-key",
        keys,
        "--log-key",
        &log_key,
    ]))
    .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("1 of 1 envelope carried no log proof"));
    let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
    // An acceptance time moved earlier in the meta is caught by the entry.
    let accepted = &mut value["meta"]["acceptedAtUnix"];
    *accepted = (accepted.as_i64().unwrap() - 3600).into();
    let said = verify_with_log(&value.to_string(), Some(&log_key)).await;
    assert!(
        said.contains("INVALID") && said.contains("the meta was altered"),
        "{said}"
    );
    // Another report's proof is not this envelope's.
    let other = proven.lines().find(|l| !l.contains(first_id)).unwrap();
    let other: serde_json::Value = serde_json::from_str(other).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["logProof"] = other["logProof"].clone();
    // (Without its meta, whose time would give it away too.)
    value.as_object_mut().unwrap().remove("meta");
    let said = verify_with_log(&value.to_string(), Some(&log_key)).await;
    assert!(
        said.contains("INVALID") && said.contains("records something else"),
        "{said}"
    );
    // A proof checked with another key of the same log name fails.
    let name = log_key.split('+').next().unwrap();
    let other_key = tidemark::tlog::note::NoteSigner::generate(name)
        .unwrap()
        .verifier_key();
    let said = verify_with_log(line, Some(&other_key)).await;
    assert!(
        said.contains("INVALID") && said.contains("does not verify"),
        "{said}"
    );
    // A mirror made with --log-proofs proves its acceptance times from itself: every
    // change, amendments included, the first report before the revocation.
    let mirror = dir.join("mirror");
    run_ok(strings(&[
        "sync",
        "--category",
        "smuggling",
        "--into",
        &mirror.display().to_string(),
        "--log-proofs",
        "--endpoint",
        endpoint,
        "--as",
        aus,
    ]))
    .await;
    let lines = std::fs::read_to_string(mirror.join("smuggling.jsonl")).unwrap();
    assert!(lines.lines().all(|l| l.contains("\"logProof\"")), "{lines}");
    let said = verify_with_log(&lines, Some(&log_key)).await;
    assert!(!said.contains("INVALID"), "{said}");
    let first = said.lines().find(|l| l.contains(first_id)).unwrap();
    assert!(first.contains("as its log entry"), "{said}");
}

/// Writes the operator's profile `DIR/ops` (beside a `ca.pem` already there).
fn operator_profile(pki: &TestPki, dir: &std::path::Path) {
    let ops = common::operator(pki);
    std::fs::write(dir.join("ops.pem"), ops.cert_pem()).unwrap();
    std::fs::write(dir.join("ops.key"), ops.key_pem()).unwrap();
}

/// Runs the binary in `dir` with a standard output that cannot be written: a pipe whose
/// reader is gone before anything is written (as with `| true`), or a full disk.
fn run_into_broken_stdout(args: &[String], dir: &std::path::Path, full_disk: bool) -> Output {
    let stdout = if full_disk {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into()
    } else {
        std::process::Stdio::piped()
    };
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_ends_quietly_when_its_reader_has_gone_and_fails_on_a_full_disk() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    submit_samples(dir.path(), &endpoint, &aus, "AUS", 2).await;
    let online: [&[&str]; 12] = [
        &["whoami"],
        &["standing"],
        &["keys"],
        &["audit"],
        &["query", "--category", "smuggling", "--state", "AUS"],
        &["sync", "--category", "smuggling", "--into", "mirror"],
        &["log", "checkpoint"],
        &["log", "verifier-key", "--from-server"],
        &["log", "entries", "--start", "0", "--end", "2"],
        &["log", "inclusion", "--index", "0"],
        &["log", "consistency", "--old-size", "1"],
        &["admin", "audit"],
    ];
    let offline: [&[&str]; 5] = [
        &["keygen", "--out", "k"],
        &["sample-reports", "--count", "2"],
        &["serve", "--print-config"],
        &["--help"],
        &["--version"],
    ];
    let with_profile = |command: &[&str]| {
        let mut args = strings(command);
        let who = if command[0] == "admin" {
            dir.path().join("ops").display().to_string()
        } else {
            aus.clone()
        };
        args.extend(strings(&["--endpoint", &endpoint, "--as", &who]));
        args
    };
    let commands: Vec<Vec<String>> = online
        .iter()
        .map(|c| with_profile(c))
        .chain(offline.iter().map(|c| strings(c)))
        .collect();
    operator_profile(&pki, dir.path());
    for args in commands {
        for full_disk in [false, true] {
            let dir = dir.path().to_owned();
            let mut command = args.clone();
            if command[0] == "keygen" {
                // A key is never overwritten: a new one each time.
                command[2] = format!("key-{full_disk}");
            }
            let output = tokio::task::spawn_blocking(move || {
                run_into_broken_stdout(&command, &dir, full_disk)
            })
            .await
            .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let what = format!(
                "{} > {}",
                args[..args.len().min(2)].join(" "),
                if full_disk {
                    "/dev/full"
                } else {
                    "closed pipe"
                }
            );
            assert_ne!(
                output.status.code(),
                Some(101),
                "{what}: no panic: {stderr}"
            );
            if full_disk {
                // Nothing written is no success: the command says so and fails.
                assert!(!output.status.success(), "{what}");
                assert!(
                    stderr.contains("cannot write to standard output: No space left on device"),
                    "{what}: {stderr}"
                );
                assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            } else {
                // Quietly: no error (what goes to stderr anyway, such as a heading, may).
                assert!(
                    output.status.code().is_none_or(|c| c == 0),
                    "{what}: {stderr}"
                );
                assert!(!stderr.contains("error"), "{what}: {stderr}");
            }
        }
    }
}

/// A command that writes files writes all of them before it prints anything, so a
/// reader that has gone (a closed pipe ends the command at its first line) cannot leave
/// the work half done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_written_before_anything_is_printed() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let reports = submit_samples(dir.path(), &endpoint, &aus, "AUS", 1).await;
    // Three states' keys for `keys --out` to write.
    for state in ["IDN", "THA"] {
        profile(&pki, &server, dir.path(), state).await;
    }
    let report = dir.path().join("report.json");
    std::fs::write(&report, reports[0].to_string()).unwrap();
    let report = report.display().to_string();
    let client = ["--endpoint", &endpoint, "--as", &aus];
    let submit = [
        &["submit", &report][..],
        &["--receipt-out", "r.proof", "--signed-receipt-out", "r.sig"],
        &client,
    ]
    .concat();
    let keys = [&["keys", "--out", "kk"][..], &client].concat();
    let samples = [
        "sample-reports",
        "--count",
        "2",
        "--states",
        "AUS,IDN,THA",
        "--out",
        "sr",
    ];
    let cases: [(&[&str], &[&str]); 3] = [
        (&submit, &["r.proof", "r.sig"]),
        (&keys, &["kk"]),
        (&samples, &["sr/aus.jsonl", "sr/idn.jsonl", "sr/tha.jsonl"]),
    ];
    for (command, files) in cases {
        let args = strings(command);
        let here = dir.path().to_owned();
        let output =
            tokio::task::spawn_blocking(move || run_into_broken_stdout(&args, &here, false))
                .await
                .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        for file in files {
            let path = dir.path().join(file);
            let written = if path.is_dir() {
                std::fs::read_dir(&path).unwrap().count() == 3
            } else {
                std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
            };
            assert!(written, "{}: {file} not written: {stderr}", command[0]);
        }
    }
}

/// `query --csv` and `query --json` both write what `import` reads back; a sync
/// mirror's lines are refused once, saying what to export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // each export format in turn, then a mirror
async fn a_csv_or_json_export_imports_back_as_the_same_reports_and_a_mirror_does_not() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    import_samples(
        dir.path(),
        &endpoint,
        &aus,
        &["--count", "60", "--states", "AUS"],
    )
    .await;
    for (category, format) in [
        ("smuggling", "csv"),
        ("maritime", "csv"),
        ("smuggling", "json"),
        ("maritime", "json"),
    ] {
        let out = run(strings(&[
            "query",
            "--category",
            category,
            &format!("--{format}"),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]))
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = if format == "csv" {
            csv::Reader::from_reader(out.stdout.as_slice())
                .records()
                .count()
        } else {
            out.stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        };
        assert!(rows > 5, "{category}: {rows}");
        let export = dir.path().join(format!(
            "{category}.{}",
            if format == "csv" { "csv" } else { "jsonl" }
        ));
        std::fs::write(&export, &out.stdout).unwrap();
        // Every field came back: the same signed content, so each is a duplicate.
        let out = run(strings(&[
            "import",
            &export.display().to_string(),
            "--json",
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]))
        .await;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["duplicates"], rows, "{category}: {summary}");
        assert_eq!(summary["rejected"], 0, "{category}: {summary}");
    }
    // A sync mirror's lines are signed envelopes without their reports: import says so
    // once, naming what to export instead.
    let mirror = dir.path().join("mirror");
    let out = run(strings(&[
        "sync",
        "--category",
        "smuggling",
        "--into",
        &mirror.display().to_string(),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(strings(&[
        "import",
        &mirror.join("smuggling.jsonl").display().to_string(),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("sync mirror") && said.contains("query --json"),
        "{said}"
    );
    assert_eq!(
        said.lines().filter(|l| l.contains("envelope")).count(),
        1,
        "{said}"
    );
}

/// Runs `program` (not tidemark) with `args`, stdin from /dev/null.
async fn shell(program: &str, args: &[&str]) -> Output {
    let (program, args) = (program.to_owned(), strings(args));
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_work_shows_progress_on_a_terminal_only() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let sample = run(strings(&[
        "sample-reports",
        "--count",
        "400",
        "--states",
        "AUS",
    ]))
    .await;
    let file = dir.path().join("sample.jsonl");
    std::fs::write(&file, &sample.stdout).unwrap();
    let import = |file: &std::path::Path| {
        strings(&[
            "import",
            &file.display().to_string(),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ])
    };
    let out = run(import(&file)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sync = |into: &str| {
        format!(
            "{BIN} sync --category smuggling --into {} --endpoint {endpoint} --as {aus}",
            dir.path().join(into).display()
        )
    };
    // On a terminal (util-linux `script` gives the command one): the counter is drawn.
    let on_terminal = shell("script", &["-qec", &sync("on-terminal"), "/dev/null"]).await;
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(
        shown.contains("changes received"),
        "{shown} {} {:?}",
        String::from_utf8_lossy(&on_terminal.stderr),
        on_terminal.status
    );
    // Piped: nothing but the result.
    let piped = shell("sh", &["-c", &sync("piped")]).await;
    assert!(piped.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&piped.stdout),
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(!said.contains("changes received"), "{said}");
    assert!(said.contains("mirrored into"), "{said}");
    // A scan of the transparency log, too.
    let check = format!("{BIN} audit verify-reciprocity --endpoint {endpoint} --as {aus}");
    let on_terminal = shell("script", &["-qec", &check, "/dev/null"]).await;
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("log entries checked"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_analyst_example_draws_a_line_per_state_with_nothing_withheld() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let endpoint = server.endpoint();
    let samples = dir.path().join("samples");
    run_ok(strings(&[
        "sample-reports",
        "--count",
        "300",
        "--states",
        "AUS,IDN,THA",
        "--out",
        &samples.display().to_string(),
    ]))
    .await;
    for state in ["AUS", "IDN", "THA"] {
        let node = profile(&pki, &server, dir.path(), state).await;
        let file = samples.join(format!("{}.jsonl", state.to_lowercase()));
        let out = run(strings(&[
            "import",
            &file.display().to_string(),
            "--json",
            "--endpoint",
            &endpoint,
            "--as",
            &node,
        ]))
        .await;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["accepted"], 300, "{state}: {summary}");
    }
    let regional = regional_profile(&pki, dir.path());
    let chart = dir.path().join("chart.svg");
    let table = run_ok(strings(&[
        "aggregate",
        "--by",
        "year,state",
        "--metric",
        "persons,deaths",
        "--chart",
        &chart.display().to_string(),
        "--endpoint",
        &endpoint,
        "--as",
        &regional,
    ]))
    .await;
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("20") || l.starts_with("(all)"))
        .collect();
    assert!(rows.len() >= 21, "{table}");
    for row in rows {
        assert!(
            !row.split_whitespace().any(|w| w == "x"),
            "nothing withheld: {table}"
        );
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(lines >= 3, "a line per state: {lines} in {svg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_leave_gaps_keep_every_month_group_bars_and_say_what_they_leave_out() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let endpoint = server.endpoint();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    import_with_a_gap(dir.path(), &endpoint, &aus).await;
    let regional = regional_profile(&pki, dir.path());
    let chart = |name: &str, by: &str| {
        let chart = dir.path().join(name).display().to_string();
        strings(&[
            "aggregate",
            "--by",
            by,
            "--metric",
            "reports,persons",
            "--from",
            "2024-01",
            "--to",
            "2024-06",
            "--chart",
            &chart,
            "--endpoint",
            &endpoint,
            "--as",
            &regional,
        ])
    };
    let out = run(chart("months.svg", "month")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (texts, lines) = svg_texts(&dir.path().join("months.svg"));
    for month in ["2024-03", "2024-04"] {
        assert!(
            texts.iter().any(|t| t == month),
            "{month} keeps its place: {texts:?}"
        );
    }
    assert!(lines >= 2, "the line breaks over the gap: {lines}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("the first metric asked for") && t.contains("persons")),
        "{texts:?}"
    );
    // Two dimensions without a period: a group of bars per origin.
    run_ok(chart("bars.svg", "origin,modus-operandi")).await;
    let (texts, _) = svg_texts(&dir.path().join("bars.svg"));
    assert!(
        texts
            .iter()
            .any(|t| *t == "sea" || *t == "land" || *t == "air"),
        "a legend of modi: {texts:?}"
    );
    // Neither SVG nor PNG, or a path where no file can be made: refused before anything
    // is asked (under a privacy budget, before the query is paid for).
    let out = run(chart("chart.jpg", "month")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("charts are written as SVG or PNG"));
    assert!(!dir.path().join("chart.jpg").exists());
    std::fs::create_dir(dir.path().join("a-dir.svg")).unwrap();
    let out = run(chart("a-dir.svg", "month")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("that is a directory"));
    assert!(out.stdout.is_empty(), "the table was asked for");
    let out = run(chart("no/such/dir/c.svg", "month")).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no chart can be written there") && !said.contains("Os {"),
        "{said}"
    );
    assert!(out.stdout.is_empty(), "the table was asked for");
}

/// Writes the regional analyst's profile into `dir`; returns it for `--as`.
fn regional_profile(pki: &TestPki, dir: &std::path::Path) -> String {
    let analyst = common::regional(pki);
    std::fs::write(dir.join("regional.pem"), analyst.cert_pem()).unwrap();
    std::fs::write(dir.join("regional.key"), analyst.key_pem()).unwrap();
    dir.join("regional").display().to_string()
}

/// The texts of an SVG chart, trimmed, and how many lines it draws.
fn svg_texts(path: &std::path::Path) -> (Vec<String>, usize) {
    let svg = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    (texts, lines)
}

/// Imports eight AUS reports in each of January, February, May and June 2024: none in
/// March and April.
async fn import_with_a_gap(dir: &std::path::Path, endpoint: &str, aus: &str) {
    let lines = aus_samples(32, |i, r| {
        r["incidentDate"] = format!("2024-{:02}-10", [1, 2, 5, 6][i / 8]).into();
    })
    .await;
    let file = dir.join("dated.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    import_file(&file, endpoint, aus).await;
}

/// `count` AUS sample reports as JSON lines, each changed by `edit` (given its index).
async fn aus_samples(count: usize, edit: impl Fn(usize, &mut serde_json::Value)) -> Vec<String> {
    let sample = run(strings(&[
        "sample-reports",
        "--count",
        &count.to_string(),
        "--states",
        "AUS",
    ]))
    .await;
    String::from_utf8(sample.stdout)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut report: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(i, &mut report);
            report.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_chart_renders_to_a_png_that_is_not_blank() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let endpoint = server.endpoint();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    import_with_a_gap(dir.path(), &endpoint, &aus).await;
    // Enough fees of one currency for quartiles.
    import_samples(
        dir.path(),
        &endpoint,
        &aus,
        &["--count", "300", "--seed", "2"],
    )
    .await;
    let regional = regional_profile(&pki, dir.path());
    let kinds: [(&str, &str, &str); 4] = [
        ("series.png", "month,category", "persons"),
        ("bars.png", "origin", "reports"),
        ("grouped.png", "category,state", "persons"),
        ("fees.png", "year", "fee"),
    ];
    for (name, by, metric) in kinds {
        let file = dir.path().join(name);
        let out = run(strings(&[
            "aggregate",
            "--by",
            by,
            "--metric",
            metric,
            "--chart",
            &file.display().to_string(),
            "--endpoint",
            &endpoint,
            "--as",
            &regional,
        ]))
        .await;
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let png = std::fs::read(&file).unwrap();
        let image = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
        let pixels = image.pixels();
        let inked = pixels
            .iter()
            .filter(|p| p.red() < 200 || p.green() < 200 || p.blue() < 200)
            .count();
        let mut colours: Vec<(u8, u8, u8)> = pixels
            .iter()
            .map(|p| (p.red(), p.green(), p.blue()))
            .collect();
        colours.sort_unstable();
        colours.dedup();
        assert!(
            inked * 100 > pixels.len(),
            "{name}: {inked} of {} pixels inked",
            pixels.len()
        );
        assert!(colours.len() > 3, "{name}: {} colours", colours.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_takes_keys_first_a_bundle_of_keys_and_names_a_missing_states_key() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    submit_samples(dir.path(), &endpoint, &aus, "AUS", 2).await;
    let lines = own_reports_as_json_lines(&endpoint, &aus, &[]).await;
    let reports = dir.path().join("reports.jsonl");
    std::fs::write(&reports, &lines).unwrap();
    // Every key in one file, as `tidemark keys` prints them.
    let out = run(strings(&["keys", "--endpoint", &endpoint, "--as", &aus])).await;
    let bundle = dir.path().join("all-keys.pem");
    std::fs::write(&bundle, &out.stdout).unwrap();
    let out = run(strings(&[
        "verify",
        "--public-key",
        &bundle.display().to_string(),
        &reports.display().to_string(),
    ]))
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 envelopes: 2 valid"), "{said}");
    // Another key only: the state whose key is missing is named.
    let other = dir.path().join("other");
    let out = run(strings(&["keygen", "--out", &other.display().to_string()])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(strings(&[
        "verify",
        &reports.display().to_string(),
        "--public-key",
        &format!("{}.pub.pem", other.display()),
    ]))
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("the AUS key that signed it was not given"),
        "{said}"
    );
}

/// The key file `keys --out DIR` wrote whose name starts with `prefix` (`aus-`).
fn key_file(dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap()
}

/// AUS's own reports in DIR/reports.jsonl (their lines returned), every key in DIR/keys
/// (`keys --out`), keygen's bare DIR/aus-signing.pub.pem and DIR/idn-signing.pub.pem, and
/// DIR/forged.json: AUS's first report signed again with IDN's key.
async fn reports_keys_and_a_forgery(
    pki: &TestPki,
    server: &TestServer,
    dir: &std::path::Path,
) -> String {
    let at = |name: &str| dir.join(name).display().to_string();
    let aus = profile(pki, server, dir, "AUS").await;
    profile(pki, server, dir, "IDN").await;
    let endpoint = server.endpoint();
    submit_samples(dir, &endpoint, &aus, "AUS", 1).await;
    let lines = own_reports_as_json_lines(&endpoint, &aus, &[]).await;
    std::fs::write(at("reports.jsonl"), &lines).unwrap();
    run_ok(strings(&[
        "keys",
        "--out",
        &at("keys"),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    let line: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let genuine: tidemark::pb::Envelope = serde_json::from_value(line["envelope"].clone()).unwrap();
    let idn_key = tidemark::SigningKey::from_file(&dir.join("idn-signing.key")).unwrap();
    let forged = tidemark::envelope::sign(&genuine.payload_type, genuine.payload, &idn_key);
    std::fs::write(at("forged.json"), serde_json::to_string(&forged).unwrap()).unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_holds_a_report_to_its_own_states_keys() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let verify = |args: &[&str]| run(strings(&[&["verify"][..], args].concat()));
    reports_keys_and_a_forgery(&pki, &server, dir.path()).await;

    // AUS's report, signed again with IDN's key: the signature is good, the owner wrong.
    let out = verify(&[&at("forged.json"), "--public-key", &at("keys")]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.starts_with("INVALID: "), "{said}");
    assert!(said.contains("registered to IDN"), "{said}");
    assert!(said.contains("not AUS's report"), "{said}");
    // Nor does a bare copy of IDN's key, given first, make it AUS's; and a copy that
    // names another state for the same key is refused.
    let out = verify(&[
        &at("forged.json"),
        "--public-key",
        &at("idn-signing.pub.pem"),
        &at("keys"),
    ])
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("INVALID: ") && said.contains("registered to IDN"),
        "{said}"
    );
    // A key file that names no state is taken as the owner's when it is all there is
    // (keygen's .pub.pem, handed to a partner), with a note saying so.
    let out = verify(&[
        &at("reports.jsonl"),
        "--public-key",
        &at("aus-signing.pub.pem"),
    ])
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("names no state"),
        "{said}"
    );
    // Among several keys of no named state, nothing says which is AUS's: IDN's key
    // does not make the forgery AUS's report (an outside pass saw it shown valid).
    let out = verify(&[
        &at("forged.json"),
        "--public-key",
        &at("aus-signing.pub.pem"),
        &at("idn-signing.pub.pem"),
    ])
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.starts_with("UNTRUSTED: ") && said.contains("2 keys given"),
        "{said}"
    );
    // Beside AUS's known keys, a key of no known state shows no report to be AUS's.
    let aus_keys = key_file(&dir.path().join("keys"), "aus-");
    let out = verify(&[
        &at("forged.json"),
        "--public-key",
        &at("idn-signing.pub.pem"),
        &aus_keys.display().to_string(),
    ])
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.starts_with("UNTRUSTED: "),
        "{said}"
    );
    let text = std::fs::read_to_string(key_file(&dir.path().join("keys"), "idn-")).unwrap();
    std::fs::write(at("aa-copy.pem"), text.replace("State: IDN", "State: AUS")).unwrap();
    let out = verify(&[
        &at("forged.json"),
        "--public-key",
        &at("aa-copy.pem"),
        &at("keys"),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is AUS's in") && stderr.contains("but IDN's in"),
        "{stderr}"
    );

    // A key file whose Key-Id line was edited is refused, naming the file.
    let edited = at("edited.pub.pem");
    let text = std::fs::read_to_string(key_file(&dir.path().join("keys"), "aus-")).unwrap();
    std::fs::write(&edited, text.replacen("Key-Id: ", "Key-Id: 00", 1)).unwrap();
    let out = verify(&[&at("reports.jsonl"), "--public-key", &edited]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("edited.pub.pem") && stderr.contains("Key-Id"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_every_file_and_names_those_it_cannot_read() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let verify = |args: &[&str]| run(strings(&[&["verify"][..], args].concat()));
    let lines = reports_keys_and_a_forgery(&pki, &server, dir.path()).await;
    // An empty file, a missing one and one of two pretty-printed lines (no line of it is
    // JSON) are reported, each once; the file after them is still checked.
    std::fs::write(at("empty.jsonl"), "").unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let pretty = format!("{first:#}\n{first:#}\n");
    std::fs::write(at("pretty.json"), pretty).unwrap();
    let out = verify(&[
        &at("empty.jsonl"),
        &at("missing.jsonl"),
        &at("pretty.json"),
        &at("reports.jsonl"),
        "--public-key",
        &at("keys"),
    ])
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("UNREADABLE: ") && said.contains("empty.jsonl: holds no envelope"),
        "{said}"
    );
    assert!(said.contains("missing.jsonl"), "{said}");
    assert!(
        said.contains("pretty.json: neither one JSON document"),
        "{said}"
    );
    let reports = lines.lines().count();
    assert_eq!(said.matches("valid: report").count(), reports, "{said}");
    assert!(said.contains("3 files unreadable or empty"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_files_with_a_byte_order_mark_are_read() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let endpoint = server.endpoint();
    let with_bom = |from: &str, to: &str| {
        let text = std::fs::read_to_string(at(from)).unwrap();
        std::fs::write(at(to), format!("\u{feff}{text}")).unwrap();
    };
    // A profile whose certificate, key and CA file each start with a byte-order mark.
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    std::fs::create_dir(at("bom")).unwrap();
    for (from, to) in [
        ("aus-node.pem", "bom/aus-node.pem"),
        ("aus-node.key", "bom/aus-node.key"),
        ("ca.pem", "bom/ca.pem"),
    ] {
        with_bom(from, to);
    }
    run_ok(strings(&[
        "whoami",
        "--endpoint",
        &endpoint,
        "--as",
        &at("bom/aus-node"),
    ]))
    .await;
    // A signing key, a public key to register and a CSR to issue from.
    with_bom("aus-signing.key", "bom-signing.key");
    let sample = run_ok(strings(&[
        "sample-reports",
        "--count",
        "1",
        "--states",
        "AUS",
    ]))
    .await;
    std::fs::write(at("r.json"), sample.lines().next().unwrap()).unwrap();
    run_ok(strings(&[
        "submit",
        &at("r.json"),
        "--signing-key",
        &at("bom-signing.key"),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    operator_profile(&pki, dir.path());
    run_ok(strings(&["keygen", "--out", &at("new")])).await;
    with_bom("new.pub.pem", "bom.pub.pem");
    run_ok(strings(&[
        "admin",
        "register-key",
        "--state",
        "AUS",
        "--public-key",
        &at("bom.pub.pem"),
        "--endpoint",
        &endpoint,
        "--as",
        &at("ops"),
    ]))
    .await;
    run_ok(strings(&[
        "pki",
        "csr",
        "--state",
        "AUS",
        "--role",
        "node",
        "--name",
        "bom-1",
        "--trust-domain",
        "tidemark.test",
        "--out",
        &at(""),
    ]))
    .await;
    with_bom("bom-1.csr.pem", "bom-1.bom.csr.pem");
    run_ok(strings(&[
        "admin",
        "enrol",
        "AUS",
        "--endpoint",
        &endpoint,
        "--as",
        &at("ops"),
    ]))
    .await;
    run_ok(strings(&[
        "admin",
        "issue",
        &at("bom-1.bom.csr.pem"),
        "--endpoint",
        &endpoint,
        "--as",
        &at("ops"),
    ]))
    .await;
}

#[tokio::test]
async fn a_certificate_key_or_ca_file_that_holds_the_wrong_thing_is_named() {
    let pki = TestPki::new();
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let who = common::node(&pki, "AUS");
    std::fs::write(at("cert.pem"), who.cert_pem()).unwrap();
    std::fs::write(at("key.pem"), who.key_pem()).unwrap();
    std::fs::write(at("ca.pem"), who.ca_pem()).unwrap();
    std::fs::write(at("empty.pem"), "").unwrap();
    std::fs::write(at("other.key"), common::node(&pki, "IDN").key_pem()).unwrap();
    // No server is needed: the files are checked before connecting.
    for (cert, key, ca, named, says) in [
        ("key.pem", "key.pem", "ca.pem", "key.pem", "no certificate"),
        (
            "cert.pem",
            "cert.pem",
            "ca.pem",
            "cert.pem",
            "no private key",
        ),
        ("cert.pem", "key.pem", "empty.pem", "empty.pem", "CA file"),
        (
            "cert.pem",
            "other.key",
            "ca.pem",
            "other.key",
            "is not the private key of the certificate",
        ),
    ] {
        let out = run(strings(&[
            "whoami",
            "--endpoint",
            "https://127.0.0.1:9",
            "--cert",
            &at(cert),
            "--key",
            &at(key),
            "--ca",
            &at(ca),
        ]))
        .await;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains(named) && said.contains(says),
            "{cert} {key} {ca}: {said}"
        );
        assert!(!said.contains("endpoint"), "{cert} {key} {ca}: {said}");
    }
}

#[test]
fn print_config_and_keygen_behave_offline() {
    // A closed stdout: quiet, no panic.
    let mut child = Command::new(BIN)
        .args(["serve", "--print-config"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(101));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // keygen makes the directory it is told to write into.
    let dir = tempfile::TempDir::new().unwrap();
    let stem = dir.path().join("new/dir/aus-signing");
    let out = Command::new(BIN)
        .args(["keygen", "--out", &stem.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("new/dir/aus-signing.key").exists());
}

/// `sample-reports ARGS` imported as `aus` (a node profile) through the command line.
async fn import_samples(dir: &std::path::Path, endpoint: &str, aus: &str, args: &[&str]) {
    let mut all = vec!["sample-reports"];
    all.extend_from_slice(args);
    let sample = run(strings(&all)).await;
    let file = dir.join(format!("{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&file, &sample.stdout).unwrap();
    import_file(&file, endpoint, aus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_output_writes_numbers_as_numbers() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    submit_samples(dir.path(), &endpoint, &aus, "AUS", 12).await;
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text.trim()).unwrap() };
    let standing = run_ok(strings(&[
        "standing",
        "--json",
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    let standing = json(&standing);
    assert!(
        standing["categories"][0]["contributed"].is_u64(),
        "{standing}"
    );
    let lines = own_reports_as_json_lines(&endpoint, &aus, &[]).await;
    let first = json(lines.lines().next().unwrap());
    assert!(first["meta"]["sequence"].is_u64(), "{first}");
    assert!(first["meta"]["acceptedAtUnix"].is_i64(), "{first}");
    let regional = regional_profile(&pki, dir.path());
    let table = run_ok(strings(&[
        "aggregate",
        "--by",
        "category",
        "--json",
        "--endpoint",
        &endpoint,
        "--as",
        &regional,
    ]))
    .await;
    assert_eq!(table.trim().lines().count(), 1, "one object on one line");
    let table = json(&table);
    // Which cells are withheld depends on the store's random cell key: take a shown one.
    let shown = table["cells"]
        .as_array()
        .and_then(|cells| cells.iter().find(|c| c.get("values").is_some()))
        .unwrap_or_else(|| panic!("a shown cell: {table}"));
    assert!(shown["values"][0].is_u64(), "{table}");
    assert_eq!(table["source"], "counters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipts_digest_reads_the_same_in_text_and_json() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let sample = run_ok(strings(&["sample-reports", "--count", "1"])).await;
    let file = dir.path().join("r.json");
    std::fs::write(&file, sample).unwrap();
    let submit = |json: bool| {
        let mut args = strings(&[
            "submit",
            &file.display().to_string(),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]);
        if json {
            args.push("--json".to_owned());
        }
        run_ok(args)
    };
    let text = submit(false).await;
    // The same envelope again: a duplicate, with the original receipt.
    let json: serde_json::Value = serde_json::from_str(submit(true).await.trim()).unwrap();
    let digest = json["accepted"]["envelopeDigest"].as_str().unwrap();
    assert!(
        text.contains(&format!("digest {digest}")),
        "{text} vs {json}"
    );
}

/// `tidemark import FILE` as `aus` (a node profile); it must succeed.
async fn import_file(file: &std::path::Path, endpoint: &str, aus: &str) {
    let out = run(strings(&[
        "import",
        &file.display().to_string(),
        "--endpoint",
        endpoint,
        "--as",
        aus,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `verify` reads — an envelope's fields, a key file's lines, file names — is
/// anyone's text: it is shown with terminal escapes, bidirectional overrides and line
/// breaks escaped, in its verdicts and in its errors.
#[tokio::test]
async fn verify_shows_what_it_reads_safely() {
    let dir = tempfile::TempDir::new().unwrap();
    let (key, _) = tidemark::signing::SigningKey::generate().unwrap();
    let pem = key.public_key().to_spki_pem();
    let hostile = "\u{1b}[2J\u{1b}]0;TITLE\u{7}\u{202e}EVIL\nvalid: forged";
    let report = tidemark::pb::Report {
        report_id: hostile.to_owned(),
        reporting_state: "AUS".to_owned(),
        ..Default::default()
    };
    let envelope = common::sign(&report, &key);
    let file = dir.path().join("envelope.json");
    std::fs::write(&file, serde_json::to_string(&envelope).unwrap()).unwrap();
    let key_file = dir.path().join("k.pub.pem");
    std::fs::write(&key_file, format!("State: {hostile}\n{pem}")).unwrap();
    let plain_key = dir.path().join("plain.pub.pem");
    std::fs::write(&plain_key, &pem).unwrap();
    for key in [&plain_key, &key_file] {
        let out = run(strings(&[
            "verify",
            &file.display().to_string(),
            "--public-key",
            &key.display().to_string(),
        ]))
        .await;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The report id is shown escaped; the key file's header with a line break in it
        // is refused by the line after the break, itself shown escaped.
        if key == &plain_key {
            assert!(said.contains("\\u{001b}[2J"), "{said}");
        } else {
            assert!(said.contains("line 2 ("), "{said}");
        }
        for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(!said.contains(raw), "{raw:?} in {said:?}");
        }
        assert!(!said.contains("\nvalid: forged"), "{said}");
    }
}

/// Files the CLI makes are claimed, not checked and then written: of several `keygen`
/// or `pki init` runs on one path at once, one succeeds and the others write nothing, so
/// a key's two halves always match and a development PKI is one CA's.
#[test]
fn runs_at_once_on_one_path_leave_one_whole_result() {
    let at_once = |dir: &std::path::Path, args: &[&str], n: usize| -> Vec<Output> {
        let children: Vec<_> = (0..n)
            .map(|_| {
                Command::new(BIN)
                    .args(args)
                    .current_dir(dir)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    };
    for _ in 0..10 {
        let dir = tempfile::TempDir::new().unwrap();
        let outputs = at_once(dir.path(), &["keygen", "--out", "k"], 3);
        let succeeded = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(succeeded, 1, "{outputs:?}");
        for failed in outputs.iter().filter(|o| !o.status.success()) {
            let said = String::from_utf8_lossy(&failed.stderr);
            assert!(said.contains("already exists"), "{said}");
        }
        let key = std::fs::read_to_string(dir.path().join("k.key")).unwrap();
        let key = tidemark::signing::SigningKey::from_pkcs8_pem(&key).unwrap();
        let public = std::fs::read_to_string(dir.path().join("k.pub.pem")).unwrap();
        assert_eq!(key.public_key().to_spki_pem(), public);
    }
    for _ in 0..4 {
        let dir = tempfile::TempDir::new().unwrap();
        let outputs = at_once(dir.path(), &["pki", "init", "--dir", "pk"], 2);
        let succeeded = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(succeeded, 1, "{outputs:?}");
    }
    // With --force too, one run at a time: while another holds the directory, a run
    // is refused and writes nothing.
    let dir = tempfile::TempDir::new().unwrap();
    let held = std::fs::File::open(dir.path()).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let out = at_once(dir.path(), &["pki", "init", "--dir", ".", "--force"], 1).remove(0);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("another run is making a PKI"), "{said}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    drop(held);
    let out = at_once(dir.path(), &["pki", "init", "--dir", ".", "--force"], 1).remove(0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An import larger than the server takes in one call (`limits.max_import_items`) goes
/// on from where the server stopped, counts each report once (before, what the refused
/// call had stored was counted again as "already there") and names each refused line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_past_the_servers_limit_counts_every_report_once() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.max_import_items = 5;
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    // Lines 2, 8 and 11 are refused: one in the first call the server cuts short.
    let lines = aus_samples(12, |i, report| {
        if [1, 7, 10].contains(&i) {
            report["location"]["country"] = "ZZZ".into();
        }
    })
    .await;
    let file = dir.path().join("twelve.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run(strings(&[
        "import",
        &file.display().to_string(),
        "--json",
        "--endpoint",
        &server.endpoint(),
        "--as",
        &aus,
    ]))
    .await;
    // The limit is said once.
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(said.matches("limits.max_import_items").count(), 1, "{said}");
    let out = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["accepted"], 9, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["rejected"], 3, "{summary}");
    let refused: Vec<u64> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [2, 8, 11], "{summary}");
}

/// A file after --public-key that holds no PEM public key (an OpenSSH key, say) is
/// named as such, not taken for an envelope with "no public key given".
#[tokio::test]
async fn verify_names_a_key_file_it_cannot_read_as_a_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let ssh = dir.path().join("id_ed25519.pub");
    std::fs::write(&ssh, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx user@host\n").unwrap();
    let envelope = dir.path().join("e.json");
    std::fs::write(&envelope, "{}").unwrap();
    let out = run(strings(&[
        "verify",
        &envelope.display().to_string(),
        "--public-key",
        &ssh.display().to_string(),
    ]))
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no PEM public key"), "{said}");
    assert!(said.contains("id_ed25519.pub"), "{said}");
}

/// In a directory after --public-key, a `.pem` file that is not a key file (the CA's
/// certificate, say) is left out with a warning, and the other keys are used; a directory
/// with no key file at all is refused.
#[tokio::test]
async fn verify_leaves_out_a_file_of_a_key_directory_that_is_not_a_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let at = |name: &str| keys.join(name).display().to_string();
    std::fs::write(
        keys.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let envelope = dir.path().join("e.json");
    std::fs::write(&envelope, "{}").unwrap();
    let verify = || {
        run(strings(&[
            "verify",
            &envelope.display().to_string(),
            "--public-key",
            &keys.display().to_string(),
        ]))
    };
    let out = verify().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("no key file could be read"), "{said}");
    run_ok(strings(&["keygen", "--out", &at("aus")])).await;
    let out = verify().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: left out") && said.contains("ca.pem"),
        "{said}"
    );
    assert!(!said.contains("no key file could be read"), "{said}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("not a DSSE envelope"),
        "the envelope was checked: {stdout}"
    );
}

/// Every key `keys --out` writes is read back by `verify`, with when its validity starts:
/// a key valid through 9999-12-31 (whose end, 10000-01-01, RFC 3339 cannot write) is
/// written as that date (a start or an end past what RFC 3339 can write is refused when
/// the key is registered: `administration` tests). One such key had written an empty `Valid-Until:` that stopped
/// `verify` for every state's reports (found by an outside tester).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_exported_is_read_back_with_its_validity() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    submit_samples(dir.path(), &endpoint, &aus, "AUS", 1).await;
    let lines = own_reports_as_json_lines(&endpoint, &aus, &[]).await;
    std::fs::write(at("reports.jsonl"), &lines).unwrap();
    operator_profile(&pki, dir.path());
    run_ok(strings(&["keygen", "--out", &at("far")])).await;
    let out = run(strings(&[
        "admin",
        "register-key",
        "--state",
        "IDN",
        "--public-key",
        &at("far.pub.pem"),
        "--valid-until",
        "9999-12-31",
        "--endpoint",
        &endpoint,
        "--as",
        &at("ops"),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown as written, not as Unix seconds.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(" to 9999-12-31"), "{said}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Registered again with another end: the registration stands, and the CLI says so.
    let again = run(strings(&[
        "admin",
        "register-key",
        "--state",
        "IDN",
        "--public-key",
        &at("far.pub.pem"),
        "--valid-until",
        "2090-01-01",
        "--endpoint",
        &endpoint,
        "--as",
        &at("ops"),
    ]))
    .await;
    assert!(String::from_utf8_lossy(&again.stdout).contains(" to 9999-12-31"));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("a registration is not changed") && said.contains("not until 2090-01-02"),
        "{said}"
    );
    run_ok(strings(&[
        "keys",
        "--out",
        &at("keys"),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    let far = std::fs::read_to_string(key_file(&dir.path().join("keys"), "idn-")).unwrap();
    assert!(far.contains("\nValid-Until: 9999-12-31\n"), "{far}");
    let own = std::fs::read_to_string(key_file(&dir.path().join("keys"), "aus-")).unwrap();
    assert!(own.contains("\nValid-From: 20"), "{own}");
    let out = run(strings(&[
        "verify",
        &at("reports.jsonl"),
        "--public-key",
        &at("keys"),
    ]))
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.starts_with("valid: report"), "{said}");
}

/// Runs the binary in `dir` where no file can grow (`ulimit -f 0`, SIGXFSZ ignored, so a
/// write fails with EFBIG as on a full disk).
fn run_without_room(args: &[String], dir: &std::path::Path) -> Output {
    Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\""])
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A file the CLI makes is whole or absent: a write that fails (a full disk) leaves no
/// empty or cut key, CSR, receipt, proof or key export, nor a temporary file, and the
/// next run with room succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_written_is_not_left_behind() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let client = ["--endpoint", endpoint.as_str(), "--as", aus.as_str()];
    let sample = run_ok(strings(&[
        "sample-reports",
        "--count",
        "1",
        "--states",
        "AUS",
    ]))
    .await;
    std::fs::write(dir.path().join("r0.json"), sample.trim_end()).unwrap();
    let mut before = names_in(dir.path());
    let online = |command: &[&str]| strings(&[command, &client[..]].concat());
    let cases: [(Vec<String>, &str, &str); 5] = [
        (
            strings(&["keygen", "--out", "k"]),
            "k.key",
            "nothing was written",
        ),
        (
            strings(&[
                "pki", "csr", "--state", "AUS", "--role", "node", "--name", "c2", "--out", "csr",
            ]),
            "csr/c2.csr.pem",
            "nothing was written",
        ),
        (
            online(&[
                "submit",
                "r0.json",
                "--receipt-out",
                "r0.proof",
                "--signed-receipt-out",
                "r0.sig",
            ]),
            "r0.proof",
            "the envelope was accepted, but its signed receipt",
        ),
        (
            online(&["log", "proof", "--index", "0", "--out", "p.proof"]),
            "p.proof",
            "cannot write",
        ),
        (online(&["keys", "--out", "kk"]), "kk", "cannot write"),
    ];
    for (command, made, says) in cases {
        let here = dir.path().to_owned();
        let refused = {
            let command = command.clone();
            tokio::task::spawn_blocking(move || run_without_room(&command, &here))
                .await
                .unwrap()
        };
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{command:?}: {stderr}");
        assert!(stderr.contains(says), "{command:?}: {stderr}");
        // Nothing but a directory the command makes (empty).
        let left: Vec<String> = names_in(dir.path())
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        assert!(
            left.is_empty() || (left == ["kk"] && names_in(&dir.path().join("kk")).is_empty()),
            "{command:?}: {left:?}"
        );
        if command[0] == "submit" {
            // Accepted all the same: the receipt comes with a duplicate.
            assert!(stderr.contains("nor its log proof"), "{stderr}");
        } else {
            let (command, here) = (command.clone(), dir.path().to_owned());
            let again = tokio::task::spawn_blocking(move || {
                Command::new(BIN)
                    .args(&command)
                    .current_dir(here)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert_ok(&again);
            assert!(dir.path().join(made).exists(), "{made}");
        }
        let _ = std::fs::remove_dir(dir.path().join("kk"));
        before = names_in(dir.path());
    }
}

/// A receipt or proof is never written over a file: the report submitted, say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_receipt_or_proof_is_written_over_a_file() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let client = ["--endpoint", endpoint.as_str(), "--as", aus.as_str()];
    let online = |command: &[&str]| strings(&[command, &client[..]].concat());
    let sample = run_ok(strings(&[
        "sample-reports",
        "--count",
        "1",
        "--states",
        "AUS",
    ]))
    .await;
    std::fs::write(dir.path().join("r1.json"), sample.trim_end()).unwrap();
    let report = std::fs::read(dir.path().join("r1.json")).unwrap();
    for command in [
        online(&["submit", "r1.json", "--receipt-out", "r1.json"]),
        online(&["log", "proof", "--index", "0", "--out", "r1.json"]),
    ] {
        let here = dir.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(&command)
                .current_dir(here)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("r1.json already exists"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("accepted"));
    }
    assert_eq!(std::fs::read(dir.path().join("r1.json")).unwrap(), report);
}

/// A mistake between flags, or in a value read after parsing, is a usage error as clap's
/// own are: exit 2, the reason, a pointer to `--help`, and nothing sent or written.
#[test]
fn mistakes_between_flags_exit_2_as_usage_errors() {
    let dir = tempfile::TempDir::new().unwrap();
    let hidden = dir.path().join(".hidden");
    let hidden = hidden.to_str().unwrap();
    let cases: [(&[&str], &str); 14] = [
        (
            &["log", "entries", "--start", "10", "--end", "10"],
            "--end 10 is not after --start 10",
        ),
        (&["log", "inclusion"], "--entry-hash"),
        (
            &["query", "--category", "smuggling", "--bbox", "1,2,3"],
            "--bbox takes four numbers",
        ),
        (&["aggregate", "--from", "2024-13"], "--from"),
        (
            &["aggregate", "--from", "2024-06", "--to", "2024-01"],
            "--from 2024-06-01 is after --to 2024-01-31",
        ),
        (
            &["query", "--category", "smuggling", "--to", "March"],
            "--to",
        ),
        (
            &[
                "pki", "csr", "--role", "node", "--name", "x", "--out", hidden,
            ],
            "--state is required",
        ),
        (
            &[
                "pki", "csr", "--role", "operator", "--state", "AUS", "--name", "x",
            ],
            "does not fit the operator role",
        ),
        (&["keygen", "--out", hidden], "would write hidden files"),
        (
            &["whoami", "--cert", "c.pem", "--key", "k.pem"],
            "need --ca",
        ),
        (
            &["whoami", "--endpoint", "http://127.0.0.1:1"],
            "must start with https://",
        ),
        (
            &["serve", "--listen", "127.0.0.1:050051"],
            "write it \"127.0.0.1:50051\"",
        ),
        (
            &["query", "--category", "smuggling", "--bbox=-020,100,0,140"],
            "no leading zeros",
        ),
        (&["admin", "revoke-key", "ABCDEF"], "not a signing key id"),
    ];
    for (line, said) in cases {
        let out = Command::new(BIN)
            .args(line)
            .env_remove("TIDEMARK_AS")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line:?}: {stderr}");
        assert!(
            stderr.contains(said) && stderr.contains("try '--help'"),
            "{line:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{line:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // No identity at all is one too.
    let out = Command::new(BIN)
        .arg("whoami")
        .env_remove("TIDEMARK_AS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Keys not written yet are named as missing, not as a file without a key in it.
#[test]
fn verify_names_a_key_directory_that_is_not_there() {
    let dir = tempfile::TempDir::new().unwrap();
    let envelopes = dir.path().join("reports.jsonl");
    std::fs::write(&envelopes, "").unwrap();
    let missing = dir.path().join("no-keys");
    let out = Command::new(BIN)
        .args(["verify", &envelopes.display().to_string(), "--public-key"])
        .arg(&missing)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && said.contains("no such file or directory")
            && said.contains("tidemark keys --out"),
        "{said}"
    );
}

/// With `--log-format json`, what the server writes is JSON lines only: a fatal error is
/// one (tester X: it was plain text, breaking a log shipper at the line that mattered).
#[test]
fn a_server_logging_json_fails_with_a_json_line() {
    let dir = tempfile::TempDir::new().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = Command::new(BIN)
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    // Its fields at the top, as every other line of the log has them.
    assert_eq!(last["message"], "the server stopped", "{stderr}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing.toml")),
        "{stderr}"
    );
}

/// An endpoint is `https://HOST:PORT` written one way: another spelling of the same
/// address, or anything more, is a usage error naming what to write.
#[test]
fn an_endpoint_is_written_one_way() {
    for (endpoint, said) in [
        (
            "https://127.0.0.1:050051",
            "port \"050051\" has a leading zero: write 50051",
        ),
        (
            "https://127.0.0.1:50051/foo",
            "has a path or query (\"/foo\")",
        ),
        (
            "https://127.0.0.1:50051?x=1",
            "has a path or query (\"?x=1\")",
        ),
        ("https://127.0.0.1:+50051", "port \"+50051\" is not a port"),
        (
            "https://[0:0:0:0:0:0:0:1]:50051",
            "write https://[::1]:50051",
        ),
        ("https://LOCALHOST:50051", "write https://localhost:50051"),
        ("https://127.0.0.1:50051#f", "has a fragment"),
        ("https://u@127.0.0.1:50051", "has a user name"),
        ("https://[::1]", "names no port"),
        ("https://127.0.0.01:50051", "not a host name"),
        ("https://2130706433:50051", "not a host name"),
        ("https://localhost.:50051", "not a host name"),
        ("https://[fe80::1%eth0]:50051", "not an IPv6 address"),
    ] {
        let out = Command::new(BIN)
            .args(["whoami", "--endpoint", endpoint])
            .env_remove("TIDEMARK_AS")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{endpoint}: {stderr}");
        assert!(stderr.contains(said), "{endpoint}: {stderr}");
    }
}
