//! The client commands as a user runs them: `sample-reports`, `import`, `submit`,
//! `verify-receipt`, `keygen`, against a real server.

mod common;

use std::{path::Path, process::Command};

use common::{
    TestPki, TestServer,
    cli::{args, assert_ok, run, run_ok},
    node,
};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

use common::cli_profile as profile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_bad_lines_by_number_and_a_rerun_skips_what_was_accepted() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();

    let out = run(args(&[
        "sample-reports",
        "--count",
        "100",
        "--states",
        "AUS",
        "--seed",
        "9",
    ]))
    .await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 100);
    // Line 17: a report the server refuses; line 64: not JSON at all.
    lines[16] = lines[16].replace("\"reportingState\":\"AUS\"", "\"reportingState\":\"XXX\"");
    lines[63] = "{this is not json".to_owned();
    let file = dir.path().join("reports.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let import = |file: &Path| {
        args(&[
            "import",
            &file.display().to_string(),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
            "--json",
            // Small batches, so that line numbers must survive batch boundaries.
            "--batch",
            "7",
        ])
    };
    let out = run(import(&file)).await;
    assert!(!out.status.success(), "rejections make the command fail");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["accepted"], 98, "{summary}");
    assert_eq!(summary["rejected"], 2);
    let lines: Vec<u64> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [17, 64]);
    assert!(
        summary["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("reporting_state")
    );

    let out = run(import(&file)).await;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["accepted"].as_u64(), summary["duplicates"].as_u64()),
        (Some(0), Some(98))
    );

    // The same through CSV, for another state.
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let out = run(args(&[
        "sample-reports",
        "--count",
        "20",
        "--states",
        "IDN",
        "--format",
        "csv",
    ]))
    .await;
    let csv_file = dir.path().join("idn.csv");
    std::fs::write(&csv_file, &out.stdout).unwrap();
    let out = run(args(&[
        "import",
        &csv_file.display().to_string(),
        "--endpoint",
        &endpoint,
        "--as",
        &idn,
        "--json",
    ]))
    .await;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["accepted"],
        20,
        "{summary} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

/// `envelope` with what DSSE consumers must read past (envelope.md): a field it does not
/// define, and a signature that cannot be read before the good one; written into `dir`.
fn padded(envelope: &serde_json::Value, dir: &Path) -> std::path::PathBuf {
    let mut padded = envelope.clone();
    padded["note"] = "filed".into();
    padded["signatures"]
        .as_array_mut()
        .unwrap()
        .insert(0, serde_json::json!({"keyid": "a", "sig": "@@@", "x": 1}));
    let file = dir.join("padded.json");
    std::fs::write(&file, padded.to_string()).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_writes_a_receipt_that_verifies_offline_and_fails_when_altered() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let out = run(args(&["sample-reports", "--count", "1", "--states", "AUS"])).await;
    let report = dir.path().join("report.json");
    std::fs::write(&report, &out.stdout).unwrap();
    let receipt = dir.path().join("receipt.json");
    let proof = dir.path().join("receipt.proof");
    let out = run(args(&[
        "submit",
        &report.display().to_string(),
        "--endpoint",
        &server.endpoint(),
        "--as",
        &aus,
        "--signed-receipt-out",
        &receipt.display().to_string(),
        "--receipt-out",
        &proof.display().to_string(),
    ]))
    .await;
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("accepted: report"));

    // The receipt is a standard DSSE JSON envelope.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    assert!(json["payloadType"].as_str().unwrap().contains("receipt"));
    assert!(json["signatures"][0]["keyid"].is_string() && json["signatures"][0]["sig"].is_string());

    let server_key = dir.path().join("receipt.pub.pem");
    let public = server.receipt_key(&node(&pki, "AUS")).await;
    std::fs::write(&server_key, public.to_spki_pem()).unwrap();
    let verify = |file: &Path| {
        args(&[
            "verify-receipt",
            &file.display().to_string(),
            "--server-key",
            &server_key.display().to_string(),
        ])
    };
    let out = run(verify(&receipt)).await;
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("valid receipt"));
    assert_ok(&run(verify(&padded(&json, dir.path()))).await);

    // Change one byte of the signed payload: verification fails.
    let mut envelope: tidemark::pb::Envelope = serde_json::from_value(json).unwrap();
    envelope.payload[3] ^= 0x01;
    let altered = dir.path().join("altered.json");
    std::fs::write(&altered, serde_json::to_string(&envelope).unwrap()).unwrap();
    let out = run(verify(&altered)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));

    // The log proof verifies with the log's verifier key, given as text or as a file,
    // and fails with another key or with one byte changed.
    let log_key = common::log_key(
        &mut tidemark::pb::transparency_client::TransparencyClient::new(
            server.channel(&node(&pki, "AUS")).await,
        ),
    )
    .await;
    let key_file = dir.path().join("log.vkey");
    std::fs::write(&key_file, &log_key).unwrap();
    let verify_proof = |file: &Path, key: &str| {
        args(&[
            "verify-receipt",
            &file.display().to_string(),
            "--log-key",
            key,
        ])
    };
    for key in [log_key.as_str(), &key_file.display().to_string()] {
        let out = run(verify_proof(&proof, key)).await;
        assert_ok(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("valid log proof"), "{stdout}");
        assert!(stdout.contains("state AUS"), "{stdout}");
    }
    // Saved with CR LF line ends, as some editors do: the same proof.
    let crlf = dir.path().join("crlf.proof");
    let original = std::fs::read_to_string(&proof).unwrap();
    std::fs::write(&crlf, original.replace('\n', "\r\n")).unwrap();
    let out = run(verify_proof(&crlf, &log_key)).await;
    assert_ok(&out);
    let mut text = original;
    let at = text.find("\n\n").unwrap() + 3;
    text.replace_range(at..=at, if &text[at..=at] == "a" { "b" } else { "a" });
    let altered = dir.path().join("altered.proof");
    std::fs::write(&altered, text).unwrap();
    let out = run(verify_proof(&altered, &log_key)).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the checkpoint is not signed by tidemark.test/log+"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proof_files_handled_carelessly_say_what_is_wrong(dir.path(), &proof, &log_key).await;
}

/// A log proof and its key as a copy from a terminal, a Windows editor or a careless
/// `cat` leave them: each refusal names what is wrong (an outside tester's pass).
async fn proof_files_handled_carelessly_say_what_is_wrong(dir: &Path, proof: &Path, key: &str) {
    let refused = |argv: Vec<String>, said: &'static [&'static str]| async move {
        let out = run(argv).await;
        assert!(!out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.iter().all(|s| stderr.contains(s)),
            "{said:?}: {stderr}"
        );
    };
    let verify = |file: &Path, key: &str| {
        args(&[
            "verify-receipt",
            &file.display().to_string(),
            "--log-key",
            key,
        ])
    };
    let original = std::fs::read_to_string(proof).unwrap();
    // Trailing spaces: the first line is quoted, its space visible.
    let spaced = dir.join("spaced.proof");
    std::fs::write(&spaced, original.replace('\n', " \n")).unwrap();
    refused(
        verify(&spaced, key),
        &["this one starts with \"c2sp.org/tlog-proof@v1 \""],
    )
    .await;
    // Past the first line, the line is named.
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let last = lines.len();
    lines[last - 1].push(' ');
    std::fs::write(&spaced, lines.join("\n") + "\n").unwrap();
    let out = run(verify(&spaced, key)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("line {last} ends in a space or tab")),
        "{stderr}"
    );
    // UTF-16 (with its byte-order mark), the proof or the key file.
    let utf16 = |text: &str, name: &str| {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let said: &[&str] = &["UTF-16", "save it as UTF-8"];
    refused(verify(&utf16(&original, "utf16.proof"), key), said).await;
    let key_file = utf16(&format!("{key}\n"), "utf16.vkey");
    refused(verify(proof, &key_file.display().to_string()), said).await;
    // Two keys in one file.
    let two = dir.join("two.vkey");
    std::fs::write(&two, format!("{key}\n{key}\n")).unwrap();
    refused(
        verify(proof, &two.display().to_string()),
        &["holds 2 lines", "one key, on one line"],
    )
    .await;
    refused(
        verify(proof, &format!("{key}\n{key}")),
        &["the key given holds 2 lines"],
    )
    .await;
    // A PEM key given as a witness key (tester C: "key name ... is invalid").
    let pem = dir.join("witness.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let mut argv = verify(proof, key);
    argv.extend(["--witness-key".to_owned(), pem.display().to_string()]);
    refused(argv, &["is a PEM key; a witness key is one line"]).await;
}

/// A server, an AUS node profile in a temporary directory, and one sample AUS report
/// written there (`report.json`).
struct OneReport {
    server: TestServer,
    pki: TestPki,
    dir: tempfile::TempDir,
    aus: String,
    report: std::path::PathBuf,
}

async fn one_report() -> OneReport {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let out = run(args(&["sample-reports", "--count", "1", "--states", "AUS"])).await;
    let report = dir.path().join("report.json");
    std::fs::write(&report, &out.stdout).unwrap();
    OneReport {
        server,
        pki,
        dir,
        aus,
        report,
    }
}

/// A log proof is tied to its report by the payload digest its entry names:
/// `verify-receipt --envelope` accepts the report's own envelope (a `query --json` line)
/// and refuses another (the signed receipt is a DSSE envelope too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_proof_is_checked_against_the_envelope_it_is_the_receipt_of() {
    let OneReport {
        server,
        pki,
        dir,
        aus,
        report,
    } = one_report().await;
    let endpoint = server.endpoint();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let client = ["--endpoint", &endpoint, "--as", &aus];
    let mut submit = vec!["submit", &report.to_str().unwrap()];
    let (proof, signed) = (file("r.proof"), file("r.json"));
    submit.extend(["--receipt-out", &proof, "--signed-receipt-out", &signed]);
    submit.extend(client);
    assert_ok(&run(args(&submit)).await);
    let mut query = vec![
        "query",
        "--category",
        "smuggling",
        "--state",
        "AUS",
        "--json",
    ];
    query.extend(client);
    let out = run(args(&query)).await;
    assert_ok(&out);
    let line = file("line.json");
    std::fs::write(&line, &out.stdout).unwrap();
    let log_key = common::log_key(
        &mut tidemark::pb::transparency_client::TransparencyClient::new(
            server.channel(&node(&pki, "AUS")).await,
        ),
    )
    .await;
    let check = |envelope: &str| {
        args(&[
            "verify-receipt",
            &proof,
            "--log-key",
            &log_key,
            "--envelope",
            envelope,
        ])
    };
    let out = run(check(&line)).await;
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("the entry commits to the payload")
            && said.contains("its signatures are not checked here"),
        "{said}"
    );
    let out = run(check(&signed)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the proof is valid, but not of"));
    // Nothing on stdout says valid when the check as a whole fails.
    assert!(out.stdout.is_empty(), "{out:?}");
    // The line is read as `verify` reads it: a field no line holds, or a report that is
    // not the signed payload, is refused, not read past.
    let original: serde_json::Value = serde_json::from_slice(&out_line(&line)).unwrap();
    let mut unknown = original.clone();
    unknown["foo"] = 1.into();
    let mut altered = original.clone();
    altered["report"]["persons"]["total"] = 9_999.into();
    // Nor is a meta that says another time than the proof's entry, nor more signatures
    // than the server takes.
    let mut late = original.clone();
    late["meta"]["acceptedAtUnix"] = 5.into();
    let mut padded = original.clone();
    let first = padded["envelope"]["signatures"][0].clone();
    for _ in 0..4 {
        padded["envelope"]["signatures"]
            .as_array_mut()
            .unwrap()
            .push(first.clone());
    }
    // Nor an envelope the server would not have taken as it is, its payload the same.
    let mut unsigned = original.clone();
    unsigned["envelope"]["signatures"] = serde_json::json!([]);
    let mut empty_signature = original.clone();
    empty_signature["envelope"]["signatures"] = serde_json::json!([{"keyid": "", "sig": ""}]);
    let mut retyped = original.clone();
    retyped["envelope"]["payloadType"] = "application/vnd.example+protobuf".into();
    retyped.as_object_mut().unwrap().remove("report");
    for (changed, says) in [
        (unknown, "which no line holds"),
        (altered, "its report is not the signed payload's"),
        (late, "but its log entry"),
        (padded, "5 signatures"),
        (unsigned, "carries no signature"),
        (empty_signature, "carries no signature"),
        (retyped, "is not a Tidemark report"),
    ] {
        std::fs::write(&line, changed.to_string()).unwrap();
        let out = run(check(&line)).await;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(said.contains(says), "{says}: {said}");
        assert!(out.stdout.is_empty(), "{says}: {out:?}");
    }
}

/// The one line of the file at `path`.
fn out_line(path: &str) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n').next().unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_files_say_what_they_hold_and_a_refusal_leaves_none_behind() {
    let OneReport {
        server,
        pki: _pki,
        dir,
        aus,
        report,
    } = one_report().await;
    let endpoint = server.endpoint();
    let file = |name: &str| dir.path().join(name).display().to_string();
    // Submits the report asking for both receipts, into `proof` and `signed`.
    let submit = |proof: &str, signed: &str| {
        let extra = ["--receipt-out", proof, "--signed-receipt-out", signed];
        let mut all = vec![
            "submit".to_owned(),
            report.display().to_string(),
            "--endpoint".to_owned(),
            endpoint.clone(),
            "--as".to_owned(),
            aus.clone(),
        ];
        all.extend(extra.iter().map(|a| (*a).to_owned()));
        all
    };

    // One path for both files is refused before anything is sent.
    let same = file("same.out");
    let out = run(submit(&same, &same)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different files"));
    assert!(!Path::new(&same).exists());

    let (proof, signed) = (file("r.proof"), file("r.sig"));
    let out = run(submit(&proof, &signed)).await;
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(", log index "), "{stdout}");
    assert!(
        stdout.contains(&format!("log proof written to {proof}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("signed receipt written to {signed}")),
        "{stdout}"
    );

    // A signed receipt has no witnesses: asking for them is refused, not skipped.
    let out = run(args(&[
        "verify-receipt",
        &signed,
        "--witness-key",
        "w+01020304+AAAA",
    ]))
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no witness cosigns"));
    // A file that is neither (here the log proof with a blank line before it) says what a
    // log proof starts with, and what this one starts with.
    let led = file("led.proof");
    std::fs::write(
        &led,
        format!("\n{}", std::fs::read_to_string(&proof).unwrap()),
    )
    .unwrap();
    let out = run(args(&["verify-receipt", &led])).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("is neither a log proof (whose first line is exactly c2sp.org/tlog-proof@v1; this file's is \"\")"),
        "{said}"
    );

    // A refused submission (same id and version, other content) leaves no file.
    let mut changed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    changed["narrative"] = "Another account.".into();
    std::fs::write(&report, changed.to_string()).unwrap();
    let (proof, signed) = (file("refused.proof"), file("refused.sig"));
    let out = run(submit(&proof, &signed)).await;
    assert!(!out.status.success());
    assert!(!Path::new(&proof).exists() && !Path::new(&signed).exists());
    // So does one whose second receipt file cannot be made: nothing is submitted.
    let (proof, nowhere) = (file("first.proof"), file("missing/dir/x.sig"));
    let out = run(submit(&proof, &nowhere)).await;
    assert!(!out.status.success());
    assert!(!Path::new(&proof).exists());

    // A retraction writes its receipts as a submission does.
    let id = changed["reportId"].as_str().unwrap().to_owned();
    let retracted = file("retracted.proof");
    let out = run(args(&[
        "retract",
        &id,
        "--receipt-out",
        &retracted,
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert_ok(&out);
    let text = std::fs::read_to_string(&retracted).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\n"), "{text}");
}

/// `log entries` prints every leaf of the range asked for, in order, past the 1,000 the
/// server returns per call; without `--end`, 100 and what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_entries_prints_the_whole_range_asked_for() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let reports = run(args(&[
        "sample-reports",
        "--count",
        "1100",
        "--states",
        "AUS",
    ]))
    .await;
    assert_ok(&reports);
    let file = dir.path().join("reports.jsonl");
    std::fs::write(&file, &reports.stdout).unwrap();
    let client = |command: &[&str]| {
        let mut all: Vec<&str> = command.to_vec();
        all.extend(["--endpoint", &endpoint, "--as", &aus]);
        args(&all)
    };
    assert_ok(&run(client(&["import", &file.display().to_string()])).await);
    let checkpoint = run(client(&["log", "checkpoint"])).await;
    let size: u64 = String::from_utf8_lossy(&checkpoint.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 1_100, "{size}");
    let leaves = |out: &std::process::Output| -> Vec<u64> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("# leaf "))
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (start, end) = (3, size.to_string());
    let out = run(client(&["log", "entries", "--start", "3", "--end", &end])).await;
    assert_ok(&out);
    assert_eq!(leaves(&out), (start..size).collect::<Vec<_>>());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(client(&["log", "entries", "--start", "3"])).await;
    assert_ok(&out);
    assert_eq!(leaves(&out), (start..start + 100).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "100 entries shown (leaves 3 to 102); the log holds {size}"
        )) && said.contains(&format!("--end {size} shows the rest")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_commands_say_where_the_log_ends_and_why_a_proof_is_empty() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let log = |extra: &[&str]| {
        let mut all = vec!["log".to_owned()];
        all.extend(extra.iter().map(|a| (*a).to_owned()));
        all.extend([
            "--endpoint".to_owned(),
            endpoint.clone(),
            "--as".to_owned(),
            aus.clone(),
        ]);
        all
    };
    // A range past the log is refused before anything is printed, saying its size.
    for range in [
        &["--end", "100000"][..],
        &["--start", "500"],
        &["--start", "18446744073709551615"],
    ] {
        let out = run(log(&[&["entries"][..], range].concat())).await;
        assert!(!out.status.success() && out.stdout.is_empty(), "{range:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("is past the log: the log holds"), "{said}");
    }
    // A follower polling at the log's size has read everything: nothing printed, exit 0.
    let out = run(log(&["checkpoint"])).await;
    assert_ok(&out);
    let size = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let out = run(log(&["entries", "--start", &size])).await;
    assert_ok(&out);
    assert!(out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("no entries from leaf {size} on yet")),
        "{said}"
    );
    let past = (size.parse::<u64>().unwrap() + 1).to_string();
    let out = run(log(&["entries", "--start", &past])).await;
    assert!(!out.status.success() && out.stdout.is_empty());
    // An empty range is a mistake, said as one.
    let out = run(log(&["entries", "--start", "10", "--end", "10"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--end 10 is not after --start 10"));
    let out = run(log(&["consistency", "--old-size", "0"])).await;
    assert_ok(&out);
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("an empty tree is consistent"));
    // Without --new-size, the proof says which tree it leads to.
    let out = run(log(&["consistency", "--old-size", "1"])).await;
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("with the tree of "), "{said}");
    // A negative number is a number the command refuses, not an unknown flag.
    let out = run(log(&["inclusion", "--index", "-1"])).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a whole number"), "{said}");
    // A leaf hash as `log inclusion` prints it names the leaf; no other spelling does.
    let out = run(log(&["inclusion", "--index", "0"])).await;
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    let hash = said
        .split("(hash ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert_eq!(hash.len(), 64, "{said}");
    assert_ok(&run(log(&["inclusion", "--entry-hash", hash])).await);
    for other in [hash.to_uppercase(), format!(" {hash}"), format!("{hash}\n")] {
        let out = run(log(&["inclusion", "--entry-hash", &other])).await;
        // A usage error, as a bad --index is.
        assert_eq!(out.status.code(), Some(2), "{other:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("64 lower-case hex digits"),
            "{other:?}: {said}"
        );
    }
    // A hash of no leaf (here the leaf hash hashed again, as the entry's own SHA-256
    // would be) is not found, saying what a leaf hash is and how a receipt names its leaf.
    let other = hex::encode(tidemark::tlog::entry::sha256(hash.as_bytes()));
    let out = run(log(&["inclusion", "--entry-hash", &other])).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("no leaf of the log has hash {other}"))
            && said.contains("SHA-256(0x00 ‖ entry)")
            && said.contains("`index N` line"),
        "{said}"
    );
}

#[test]
fn keygen_writes_a_private_and_a_public_key_and_refuses_to_overwrite() {
    let dir = tempfile::TempDir::new().unwrap();
    let stem = dir.path().join("canberra");
    let keygen = || {
        Command::new(BIN)
            .args(["keygen", "--out"])
            .arg(&stem)
            .output()
            .unwrap()
    };
    let out = keygen();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = tidemark::signing::SigningKey::from_file(&dir.path().join("canberra.key")).unwrap();
    assert!(stdout.contains(key.key_id()), "{stdout}");
    let public =
        tidemark::signing::PublicKey::from_file(&dir.path().join("canberra.pub.pem")).unwrap();
    assert_eq!(public.key_id(), key.key_id());
    assert!(
        !keygen().status.success(),
        "an existing key is never overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one user session, read top to bottom
async fn a_queried_report_verifies_offline_and_a_mirror_catches_up() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let endpoint = server.endpoint();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let sample = |states: &str, count: &str, seed: &str, file: &str| {
        let out = Command::new(BIN)
            .args([
                "sample-reports",
                "--count",
                count,
                "--states",
                states,
                "--seed",
                seed,
            ])
            .output()
            .unwrap();
        std::fs::write(dir.path().join(file), out.stdout).unwrap();
    };
    sample("AUS", "40", "1", "aus.jsonl");
    sample("IDN", "10", "2", "idn.jsonl");
    for (file, who) in [("aus.jsonl", &aus), ("idn.jsonl", &idn)] {
        run_ok(args(&[
            "import",
            &path(file),
            "--endpoint",
            &endpoint,
            "--as",
            who,
        ]))
        .await;
    }

    // Export AUS's key, fetch one AUS report as JSON, verify it offline.
    run_ok(args(&[
        "keys",
        "--state",
        "AUS",
        "--out",
        &path("keys"),
        "--endpoint",
        &endpoint,
        "--as",
        &idn,
    ]))
    .await;
    let key = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = run(args(&[
        "query",
        "--category",
        "smuggling",
        "--state",
        "AUS",
        "--limit",
        "1",
        "--json",
        "--endpoint",
        &endpoint,
        "--as",
        &idn,
    ]))
    .await;
    assert_ok(&out);
    let line = String::from_utf8(out.stdout).unwrap();
    std::fs::write(dir.path().join("one.json"), &line).unwrap();
    let verify = |file: &str| {
        args(&[
            "verify",
            &path(file),
            "--public-key",
            &key.display().to_string(),
        ])
    };
    let out = run(verify("one.json")).await;
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("of AUS"));

    let mut value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let mut envelope: tidemark::pb::Envelope =
        serde_json::from_value(value["envelope"].take()).unwrap();
    // A DSSE keyid is only a hint: empty, absent or wrong, the signature still verifies.
    for keyid in [Some(""), None, Some("0123")] {
        let mut json = serde_json::to_value(&envelope).unwrap();
        match keyid {
            Some(k) => json["signatures"][0]["keyid"] = k.into(),
            None => {
                json["signatures"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("keyid");
            }
        }
        std::fs::write(dir.path().join("hint.json"), json.to_string()).unwrap();
        run_ok(verify("hint.json")).await;
    }
    envelope.payload[5] ^= 0x01;
    std::fs::write(
        dir.path().join("altered.json"),
        serde_json::to_string(&envelope).unwrap(),
    )
    .unwrap();
    let out = run(verify("altered.json")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID: "));
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not verify"));

    // A mirror: the first run copies, the second brings it up to date with new reports.
    let sync = || {
        args(&[
            "sync",
            "--category",
            "smuggling",
            "--into",
            &path("mirror"),
            "--endpoint",
            &endpoint,
            "--as",
            &idn,
        ])
    };
    let lines = || {
        std::fs::read_to_string(dir.path().join("mirror/smuggling.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    let out = run(sync()).await;
    assert_ok(&out);
    let first = lines();
    assert!(first > 10, "{first}");
    sample("AUS", "20", "3", "more.jsonl");
    let out = run(args(&[
        "import",
        &path("more.jsonl"),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(out.status.success());
    let out = run(sync()).await;
    assert!(out.status.success());
    let second = lines();
    assert!(second > first, "{first} -> {second}");
    let out = run(sync()).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 changes"));
    assert_eq!(lines(), second, "nothing duplicated");
    // Another state's node neither carries on from IDN's cursor with its own view nor
    // adds a category of its own beside IDN's.
    let sync_as = |category: &str, profile: &str| {
        args(&[
            "sync",
            "--category",
            category,
            "--into",
            &path("mirror"),
            "--endpoint",
            &endpoint,
            "--as",
            profile,
        ])
    };
    for category in ["smuggling", "maritime"] {
        let out = run(sync_as(category, &aus)).await;
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("holds IDN's view"),
            "{out:?}"
        );
    }
    assert_eq!(lines(), second, "nothing written");
    // The state file read as every file is (a byte-order mark skipped); a mirror without
    // one (an older tidemark's) is not guessed to be anyone's.
    let state_file = dir.path().join("mirror/state");
    std::fs::write(&state_file, "\u{feff}IDN\n").unwrap();
    assert_ok(&run(sync()).await);
    std::fs::remove_file(&state_file).unwrap();
    let out = run(sync_as("smuggling", &aus)).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("saying whose view it is"),
        "{out:?}"
    );
    assert!(!out.status.success() && !state_file.exists(), "{out:?}");
    std::fs::write(&state_file, "IDN\n").unwrap();

    // One writer per mirror: while another holds the lock, a run is refused.
    let lock = std::fs::File::open(dir.path().join("mirror/sync.lock")).unwrap();
    lock.lock().unwrap();
    let out = run(sync()).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another `tidemark sync`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(lock);

    // A run cut short after writing data but before moving the cursor, in the middle of
    // a line: the next run removes the partial line and neither repeats nor misses one.
    let data = dir.path().join("mirror/smuggling.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    let cut = kept.len() / 2;
    let partial = &kept[cut][..kept[cut].len() / 2];
    std::fs::write(&data, format!("{}\n{partial}", kept[..cut].join("\n"))).unwrap();
    std::fs::write(dir.path().join("mirror/smuggling.cursor"), "0\n").unwrap();
    let out = run(sync()).await;
    assert_ok(&out);
    let sequences: Vec<String> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            // Numbers as numbers, as `query --json` writes them.
            assert!(v["meta"]["acceptedAtUnix"].is_i64(), "{v}");
            v["meta"]["sequence"].to_string()
        })
        .collect();
    let distinct: std::collections::BTreeSet<_> = sequences.iter().collect();
    assert_eq!(sequences.len(), second, "every change once");
    assert_eq!(distinct.len(), second, "no change twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one operator's session, read top to bottom
async fn an_operator_issues_from_a_csr_and_revokes_and_the_node_is_told_why() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let endpoint = server.endpoint();
    // The operator's profile.
    let ops = common::operator(&pki);
    std::fs::write(dir.path().join("operator.pem"), ops.cert_pem()).unwrap();
    std::fs::write(dir.path().join("operator.key"), ops.key_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ops.ca_pem()).unwrap();
    let admin = |extra: &[&str]| {
        let mut a = vec!["admin".to_owned()];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a.extend(args(&["--endpoint", &endpoint, "--as", &path("operator")]));
        a
    };
    assert!(run(admin(&["enrol", "AUS"])).await.status.success());

    run_ok(args(&[
        "pki",
        "csr",
        "--state",
        "AUS",
        "--role",
        "node",
        "--name",
        "canberra-1",
        "--out",
        &path(""),
        "--trust-domain",
        common::TRUST_DOMAIN,
    ]))
    .await;
    // An --out that cannot be written is refused before anything is issued: a file (even
    // a dangling link), a missing directory.
    #[cfg(unix)]
    std::os::unix::fs::symlink(path("nowhere"), path("link.pem")).unwrap();
    for out in [path("ca.pem"), path("link.pem"), path("missing/c.pem")] {
        let said = run(admin(&[
            "issue",
            &path("canberra-1.csr.pem"),
            "--out",
            &out,
        ]))
        .await;
        assert!(!said.status.success(), "{out}");
        assert!(
            String::from_utf8_lossy(&said.stderr).contains("nothing was issued"),
            "{said:?}"
        );
    }
    let listed = run(admin(&["certs"])).await;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("canberra-1"));
    run_ok(admin(&[
        "issue",
        &path("canberra-1.csr.pem"),
        "--days",
        "90",
        "--out",
        &path("canberra-1.pem"),
    ]))
    .await;

    let whoami = || {
        args(&[
            "whoami",
            "--endpoint",
            &endpoint,
            "--as",
            &path("canberra-1"),
            "--json",
        ])
    };
    let out = run(whoami()).await;
    assert_ok(&out);
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["name"], "canberra-1");
    let serial = me["certificateSerial"].as_str().unwrap().to_owned();
    // The node signs with its state's key beside its profile, whatever the profile is
    // called: node/canberra-1 of AUS signs with node/aus-signing.key.
    run_ok(args(&["keygen", "--out", &path("aus-signing")])).await;
    // The private half by mistake, or its body without the PEM lines: refused before
    // anything is sent.
    let private = std::fs::read_to_string(path("aus-signing.key")).unwrap();
    let body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    std::fs::write(path("body.txt"), body).unwrap();
    for (file, says) in [
        ("aus-signing.key", "holds a private key"),
        ("body.txt", "is not an Ed25519 public key in PEM"),
    ] {
        let out = run(admin(&[
            "register-key",
            "--state",
            "AUS",
            "--public-key",
            &path(file),
        ]))
        .await;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(says) && said.contains("nothing was sent"),
            "{said}"
        );
    }
    run_ok(admin(&[
        "register-key",
        "--state",
        "AUS",
        "--public-key",
        &path("aus-signing.pub.pem"),
    ]))
    .await;
    let report = path("report.json");
    let sample = run(args(&["sample-reports", "--count", "1", "--states", "AUS"])).await;
    std::fs::write(&report, &sample.stdout).unwrap();
    let out = run(args(&[
        "submit",
        &report,
        "--endpoint",
        &endpoint,
        "--as",
        &path("canberra-1"),
    ]))
    .await;
    assert_ok(&out);

    // Revoked by presenting the certificate file; by its serial again, it says so.
    let out = run(admin(&[
        "revoke",
        "--certificate",
        &path("canberra-1.pem"),
        "--reason",
        "key-compromise",
    ]))
    .await;
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("revoked {serial}")) && said.contains("holder: spiffe://"),
        "{said}"
    );
    let out = run(admin(&["revoke", &serial])).await;
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&serial)
            && said.contains(" was already revoked (key-compromise)")
            && said.contains("nothing changed"),
        "{out:?}"
    );
    let out = run(whoami()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused this client certificate") && stderr.contains("CertificateRevoked"),
        "{stderr}"
    );
    // The alert says why: no list of other things to check.
    assert!(
        stderr.contains("it has been revoked") && !stderr.contains("within its validity"),
        "{stderr}"
    );

    // Listed as revoked; not among those that need renewal.
    let out = run(admin(&["certs"])).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("{serial} ")) && listed.contains("REVOKED"),
        "{listed}"
    );
    let out = run(admin(&["certs", "--expiring", "91d"])).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("{serial} ")));
    // Days from 1, checked as the command line is read: a usage error.
    for bad in ["0", "0d", "-1", "30days"] {
        let out = run(admin(&["certs", "--expiring", bad])).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}

#[tokio::test]
async fn pki_csr_refuses_names_the_spiffe_rules_forbid_and_writes_nothing() {
    for name in ["..", ".", ".hidden", "a/b", "", "Upper"] {
        let dir = tempfile::TempDir::new().unwrap();
        let out = run(args(&[
            "pki",
            "csr",
            "--state",
            "AUS",
            "--role",
            "node",
            "--name",
            name,
            "--out",
            &dir.path().display().to_string(),
        ]))
        .await;
        assert!(!out.status.success(), "{name:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("principal name"), "{name:?}: {stderr}");
        let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(written.is_empty(), "{name:?}: {written:?}");
    }
}

/// `n` sample reports of `state` as JSON lines.
async fn sample_lines(state: &str, n: usize, seed: &str) -> Vec<String> {
    let out = run(args(&[
        "sample-reports",
        "--count",
        &n.to_string(),
        "--states",
        state,
        "--seed",
        seed,
    ]))
    .await;
    assert_ok(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Standard input — `/dev/stdin` or `-`, from a pipe or redirected from a file — is
/// imported whole, JSON lines or CSV (told by its header line): the import reads its
/// input twice, and a pipe gives nothing the second time (an outside pass saw "0
/// accepted" and success); a file redirected to it was told to be named .csv (tester A).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_standard_input_whole_in_either_format() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let cases = [
        ("jsonl", "11", "/dev/stdin", false),
        ("csv", "12", "/dev/stdin", false),
        ("jsonl", "13", "-", true),
        ("csv", "14", "-", true),
        ("csv", "15", "/dev/fd/0", true),
    ];
    for (format, seed, stdin, redirected) in cases {
        let reports = run_ok(args(&[
            "sample-reports",
            "--count",
            "3",
            "--states",
            "AUS",
            "--seed",
            seed,
            "--format",
            format,
        ]))
        .await;
        let import = args(&[
            "import",
            stdin,
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
            "--json",
        ]);
        let out = if redirected {
            // Named as no format: only its first line can tell. A script has read a line
            // of it already: the import reads from there on (it reopened the file from
            // its start, tester C).
            use std::io::{BufRead as _, Seek as _};
            let file = dir.path().join(format!("{seed}.txt"));
            // A blank line before the header does not hide it (tester D).
            std::fs::write(&file, format!("a line the script read\n\n{reports}")).unwrap();
            let mut input = std::io::BufReader::new(std::fs::File::open(&file).unwrap());
            let mut read = String::new();
            input.read_line(&mut read).unwrap();
            let mut input = input.into_inner();
            input
                .seek(std::io::SeekFrom::Start(read.len() as u64))
                .unwrap();
            common::cli::run_redirected(import, input).await
        } else {
            common::cli::run_piped(import, reports.into_bytes()).await
        };
        assert_ok(&out);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["accepted"], 3, "{format} {stdin}: {summary}");
        assert_eq!(summary["rejected"], 0, "{format} {stdin}: {summary}");
    }
}

/// What a stream holds is kept in an anonymous temporary file: nothing is left behind
/// when the import is killed (an outside pass found named copies of the reports left in
/// /tmp after Ctrl-C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_from_a_pipe_leaves_no_copy_of_its_input_when_killed() {
    use std::io::Write;
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let tmp = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "import",
            "-",
            "--endpoint",
            &server.endpoint(),
            "--as",
            &aus,
        ])
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"reportId\": \"secret\"}\n").unwrap();
    // The import is reading its input, which is not over yet.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let named = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(
        named(tmp.path()),
        0,
        "a named copy of the input while it is read"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(named(tmp.path()), 0, "a copy of the input left behind");
}

/// Runs `import FILE --json` with extra flags; returns the summary and stderr.
async fn import_json(
    file: &Path,
    endpoint: &str,
    profile: &str,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let mut a = args(&[
        "import",
        &file.display().to_string(),
        "--endpoint",
        endpoint,
        "--as",
        profile,
        "--json",
    ]);
    a.extend(args(extra));
    let out = run(a).await;
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn error_lines(summary: &serde_json::Value) -> Vec<u64> {
    summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_goes_on_past_every_bad_record_and_names_its_physical_line() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();

    // JSON lines behind a byte-order mark: an oversized line, a line longer than any
    // report's (never read whole), an integral value written 12.0, a blank line.
    let mut lines = sample_lines("AUS", 6, "21").await;
    let mut huge: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    huge["narrative"] = "y".repeat(5 * 1024 * 1024).into();
    lines[1] = huge.to_string();
    lines[2] = format!("{{\"narrative\": \"{}", "z".repeat(17 << 20));
    let mut float: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    let total = float["persons"]["total"].as_u64().unwrap();
    float["persons"]["total"] = serde_json::json!(f64::from(u32::try_from(total).unwrap()));
    lines[3] = float.to_string();
    assert!(lines[3].contains(&format!("{total}.0")), "{}", lines[3]);
    lines.insert(4, String::new());
    // Line 7: a byte-order mark that is not at the start of the file.
    lines[6] = format!("\u{feff}{}", lines[6]);
    let file = dir.path().join("bom.jsonl");
    let mut bytes = format!("\u{feff}{}\n", lines.join("\n")).into_bytes();
    // Line 8: not UTF-8 at all.
    bytes.extend_from_slice(b"{\"narrative\": \"\xff\"}\n");
    std::fs::write(&file, bytes).unwrap();
    for batch in ["1", "500"] {
        let (summary, stderr) = import_json(&file, &endpoint, &aus, &["--batch", batch]).await;
        assert_eq!(
            summary["accepted"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            3,
            "batch {batch}: {summary}"
        );
        assert_eq!(
            error_lines(&summary),
            [2, 3, 7, 8],
            "batch {batch}: {summary}"
        );
        assert!(stderr.contains("line 2:"), "{stderr}");
        let third = &summary["errors"][1];
        assert!(
            third["error"]
                .as_str()
                .is_some_and(|r| r.contains("bytes long")),
            "{third}"
        );
    }

    // CSV behind a byte-order mark, with a quoted narrative over several lines: a bad
    // row is named by the line it starts on.
    let out = run(args(&[
        "sample-reports",
        "--count",
        "4",
        "--states",
        "AUS",
        "--seed",
        "22",
        "--format",
        "csv",
    ]))
    .await;
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let narrative = headers.iter().position(|h| h == "narrative").unwrap();
    let state = headers.iter().position(|h| h == "reporting_state").unwrap();
    let mut rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut multi = rows[0].iter().map(str::to_owned).collect::<Vec<_>>();
    multi[narrative] = "line one\nline two\nline three".to_owned();
    rows[0] = csv::StringRecord::from(multi);
    let mut bad = rows[1].iter().map(str::to_owned).collect::<Vec<_>>();
    bad[state] = "XXX".to_owned();
    rows[1] = csv::StringRecord::from(bad);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&headers).unwrap();
    for row in &rows {
        writer.write_record(row).unwrap();
    }
    let csv_file = dir.path().join("bom.csv");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(writer.into_inner().unwrap());
    std::fs::write(&csv_file, bytes).unwrap();
    let (summary, _) = import_json(&csv_file, &endpoint, &aus, &[]).await;
    // Header line 1, the first record on lines 2-4, the bad one starts on line 5.
    assert_eq!(error_lines(&summary), [5], "{summary}");
    assert_eq!(summary["accepted"], 3, "{summary}");
    // One byte-order mark is skipped, not two (the CSV reader would skip the second).
    let twice = dir.path().join("twice.csv");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(std::fs::read(&csv_file).unwrap());
    std::fs::write(&twice, bytes).unwrap();
    let out = run(args(&[
        "import",
        twice.to_str().unwrap(),
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("two byte-order marks"),
        "{out:?}"
    );
}

/// A record larger than the server takes in one message, though smaller than the CLI's
/// own limit, is named by its line and the import goes on (it used to be taken for the
/// server's limit on items per call, halved to nothing and retried until the stack ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_servers_message_limit_is_named_and_the_import_goes_on() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let mut lines = sample_lines("AUS", 5, "31").await;
    for i in [1, 2] {
        let mut huge: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
        huge["narrative"] = "z".repeat(100 * 1024).into();
        lines[i] = huge.to_string();
    }
    let file = dir.path().join("big.jsonl");
    std::fs::write(&file, format!("{}\n", lines.join("\n"))).unwrap();
    for batch in ["500", "1"] {
        let (summary, stderr) =
            import_json(&file, &server.endpoint(), &aus, &["--batch", batch]).await;
        assert_eq!(error_lines(&summary), [2, 3], "batch {batch}: {summary}");
        assert_eq!(
            summary["accepted"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            3,
            "batch {batch}: {summary}"
        );
        assert!(!stderr.contains("max_import_items"), "{stderr}");
    }
    // Past the command's own limit too, a record too large for breaking a rule is
    // refused for that rule (an outside pass: a 6 MB narrative was told to shorten its
    // text for limits.max_message_bytes, not that a narrative holds 4,000 characters).
    let mut huge: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    huge["narrative"] = "z".repeat(5 << 20).into();
    std::fs::write(&file, format!("{huge}\n{}\n", lines[3])).unwrap();
    let (summary, _) = import_json(&file, &server.endpoint(), &aus, &[]).await;
    assert_eq!(error_lines(&summary), [1], "{summary}");
    let said = summary["errors"][0]["error"].as_str().unwrap();
    assert!(
        said.contains("narrative") && said.contains("at most 4000"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_export_is_safe_to_open_and_imports_back_unchanged() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let mut lines = sample_lines("AUS", 40, "23").await;
    let risky = [
        "=HYPERLINK(\"http://x\")",
        "@SUM(A1)",
        "+1+1",
        "-2+3",
        "'=quoted",
        "\tcmd",
        "  =1+2",
        "\u{3000}@SUM(1)",
        " -1+1",
    ];
    for (line, text) in lines.iter_mut().zip(risky) {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["narrative"] = text.into();
        *line = value.to_string();
    }
    let file = dir.path().join("risky.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (summary, _) = import_json(&file, &endpoint, &aus, &[]).await;
    assert_eq!(summary["accepted"], 40, "{summary}");

    let out = run(args(&[
        "query",
        "--category",
        "smuggling",
        "--csv",
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert_ok(&out);
    let export = dir.path().join("export.csv");
    std::fs::write(&export, &out.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let mut rows = 0;
    for row in reader.records() {
        rows += 1;
        for cell in &row.unwrap() {
            // Also after leading white space, which a spreadsheet may trim.
            let trimmed = cell.trim_start();
            let first = trimmed.chars().next();
            let number = trimmed.parse::<f64>().is_ok();
            let formula = matches!(cell.chars().next(), Some('\t' | '\r'))
                || matches!(first, Some('=' | '@'))
                || (matches!(first, Some('+' | '-')) && !number);
            assert!(!formula, "a formula cell: {cell:?}");
        }
    }
    assert!(rows > 0);
    // Importing one's own export finds every report already there, unchanged.
    let (summary, stderr) = import_json(&export, &endpoint, &aus, &[]).await;
    assert_eq!(summary["rejected"], 0, "{summary} {stderr}");
    assert_eq!(summary["duplicates"], rows, "{summary}");

    // An export of nothing still has its header, and imports as nothing.
    let out = run(args(&[
        "query",
        "--category",
        "smuggling",
        "--from",
        "1990-01-01",
        "--to",
        "1990-01-31",
        "--csv",
        "--endpoint",
        &endpoint,
        "--as",
        &aus,
    ]))
    .await;
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("report_id,"),
        "{out:?}"
    );
    std::fs::write(&export, &out.stdout).unwrap();
    let (summary, stderr) = import_json(&export, &endpoint, &aus, &[]).await;
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&0.into(), &0.into()),
        "{summary} {stderr}"
    );
}

/// Quoting the csv crate reads leniently is refused by the line its record starts on
/// (and a file of another format once):
/// nothing is signed with text its author did not write, nothing is lost unreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_what_it_would_misread_csv_quoting_and_files_of_another_format() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let out = run(args(&[
        "sample-reports",
        "--count",
        "6",
        "--states",
        "AUS",
        "--seed",
        "31",
        "--format",
        "csv",
    ]))
    .await;
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1..].iter().all(|l| l.contains(",Synthetic")),
        "{text}"
    );
    let with = |line: usize, replacement: &str| {
        let mut changed: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        changed[line - 1] = changed[line - 1].replacen(",Synthetic", replacement, 1);
        changed.join("\r\n") + "\r\n"
    };
    for (name, csv, accepted, faults, says) in [
        // Read leniently, this narrative would be signed as `Boat Synthetic…`.
        (
            "after",
            with(4, ",\"Boat\" Synthetic"),
            5,
            vec![4],
            "after the closing",
        ),
        (
            "inside",
            with(5, ",Boat\"s Synthetic"),
            5,
            vec![5],
            "inside a cell",
        ),
        // A stray quote opens a cell that runs to the end of the file.
        ("open", with(3, ",\"Synthetic"), 1, vec![3], "lines 3 to 7"),
    ] {
        let file = dir.path().join(format!("{name}.csv"));
        std::fs::write(&file, csv).unwrap();
        let (summary, stderr) = import_json(&file, &endpoint, &aus, &["--batch", "1"]).await;
        assert_eq!(error_lines(&summary), faults, "{name}: {summary}");
        assert!(
            summary.to_string().contains(says),
            "{name}: {summary} {stderr}"
        );
        assert_eq!(
            summary["accepted"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            accepted,
            "{name}: {summary}"
        );
    }
    // A file that is not JSON lines at all is refused once, saying what it is.
    let one =
        serde_json::from_str::<serde_json::Value>(&sample_lines("AUS", 1, "32").await[0]).unwrap();
    for (name, text, says) in [
        (
            "pretty.json",
            serde_json::to_string_pretty(&one).unwrap(),
            "one JSON document",
        ),
        (
            "two.json",
            format!("{one:#}\n{one:#}\n"),
            "holds 2 JSON documents, each over several lines",
        ),
        ("export.txt", text.clone(), "holds CSV"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = run(args(&[
            "import",
            file.to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--as",
            &aus,
        ]))
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
    }
}

/// JSON lines whose first line holds two reports (or one over several lines, or `{}{}`):
/// that line is refused, with its number, and the others imported — not the whole file.
#[tokio::test]
async fn import_refuses_a_bad_first_line_alone() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let endpoint = server.endpoint();
    let lines = sample_lines("AUS", 5, "33").await;
    let pretty = format!(
        "{:#}",
        serde_json::from_str::<serde_json::Value>(&lines[4]).unwrap()
    );
    let pretty_lines = pretty.lines().count();
    for (name, first) in [
        ("doubled.jsonl", format!("{}{}", lines[0], lines[1])),
        ("empties.jsonl", "{}{}".to_owned()),
        ("pretty-first.jsonl", pretty.clone()),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{first}\n{}\n{}\n", lines[2], lines[3])).unwrap();
        let (summary, stderr) = import_json(&file, &endpoint, &aus, &[]).await;
        // One record refused, at line 1 (a report over several lines is one, named by
        // its lines, not one refusal per line).
        assert_eq!(error_lines(&summary), [1], "{name}: {summary} {stderr}");
        assert_eq!(summary["rejected"], 1, "{name}: {summary}");
        assert_eq!(
            summary["accepted"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            2,
            "{name}: {summary}"
        );
    }
    assert!(pretty_lines > 10, "{pretty}");
    // In the middle, and one cut short: its lines each refused, the lines after it read.
    let cut = pretty.lines().take(5).collect::<Vec<_>>().join("\n");
    let file = dir.path().join("middle.jsonl");
    std::fs::write(
        &file,
        format!("{}\n{pretty}\n{cut}\n{}\n", lines[0], lines[1]),
    )
    .unwrap();
    let (summary, stderr) = import_json(&file, &endpoint, &aus, &[]).await;
    let errors = error_lines(&summary);
    let after = u64::try_from(pretty_lines).unwrap() + 2;
    assert_eq!(errors[0], 2, "{summary} {stderr}");
    assert_eq!(
        errors[1..],
        (after..after + 5).collect::<Vec<_>>()[..],
        "{summary}"
    );
    assert!(
        summary
            .to_string()
            .contains(&format!("lines 2 to {}", after - 1)),
        "{summary}"
    );
    // One cut short right before a whole one: the whole one is still one record.
    let file = dir.path().join("cut-then-pretty.jsonl");
    std::fs::write(&file, format!("{cut}\n{pretty}\n{}\n", lines[2])).unwrap();
    let (summary, stderr) = import_json(&file, &endpoint, &aus, &[]).await;
    assert_eq!(
        error_lines(&summary),
        [1, 2, 3, 4, 5, 6],
        "{summary} {stderr}"
    );
    assert!(
        summary
            .to_string()
            .contains(&format!("lines 6 to {}", 5 + pretty_lines)),
        "{summary}"
    );
}

/// Two states' first runs into one mirror directory at once (different categories):
/// never both, so the directory never holds two states' views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_syncing_into_one_directory_at_once_never_both_write_it() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let endpoint = server.endpoint();
    // Both contribute to both categories, so either may sync either.
    for (state, who) in [("AUS", &aus), ("IDN", &idn)] {
        let file = dir.path().join(format!("{state}.jsonl"));
        std::fs::write(&file, sample_lines(state, 40, "41").await.join("\n")).unwrap();
        let (summary, _) = import_json(&file, &endpoint, who, &[]).await;
        assert_eq!(summary["accepted"], 40, "{summary}");
    }
    for round in 0..3 {
        let mirror = dir.path().join(format!("mirror-{round}"));
        let sync = |category: &str, who: &str| {
            run(args(&[
                "sync",
                "--category",
                category,
                "--into",
                mirror.to_str().unwrap(),
                "--endpoint",
                &endpoint,
                "--as",
                who,
            ]))
        };
        let (a, b) = tokio::join!(sync("maritime", &aus), sync("smuggling", &idn));
        assert!(
            !(a.status.success() && b.status.success()),
            "round {round}: both wrote one mirror"
        );
        let state = std::fs::read_to_string(mirror.join("state")).unwrap();
        let winner = if a.status.success() { "AUS" } else { "IDN" };
        assert_eq!(state.trim(), winner, "round {round}");
    }
}

/// An import stopped for the caller's rights (its state suspended) says that running it
/// again cannot help until that is resolved, not to run it again.
#[tokio::test]
async fn an_import_refused_for_the_callers_rights_does_not_say_to_run_it_again() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    server
        .admin(&common::operator(&pki))
        .await
        .suspend_state(tidemark::pb::StateRequest {
            state: "AUS".into(),
        })
        .await
        .unwrap();
    let file = dir.path().join("aus.jsonl");
    // Three reports a line each, then one over several lines.
    let mut lines = sample_lines("AUS", 4, "7").await;
    let last: serde_json::Value = serde_json::from_str(&lines.pop().unwrap()).unwrap();
    lines.push(serde_json::to_string_pretty(&last).unwrap());
    std::fs::write(&file, lines.join("\n")).unwrap();
    for batch in ["500", "1"] {
        let (summary, said) =
            import_json(&file, &server.endpoint(), &aus, &["--batch", batch]).await;
        assert_eq!(summary["accepted"], 0, "{summary}");
        // Every record is accounted for, those never sent included, once each.
        let counted: u64 = [
            "accepted",
            "duplicates",
            "rejected",
            "unanswered",
            "notSent",
        ]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
        assert_eq!(counted, 4, "--batch {batch}: {summary}");
        assert!(said.contains("suspended"), "{said}");
    }
    let (summary, said) = import_json(&file, &server.endpoint(), &aus, &[]).await;
    assert_eq!(summary["accepted"], 0, "{summary}");
    assert!(
        said.contains("suspended") && said.contains("cannot help until that is resolved"),
        "{said}"
    );
    assert!(!said.contains("run it again to continue"), "{said}");
}

/// A sync refused before it mirrors anything (no standing, wrong role, no server) leaves
/// no directory or file behind; one that mirrored keeps its mirror.
#[tokio::test]
async fn a_refused_sync_creates_no_mirror() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let endpoint = server.endpoint();
    let mirror = dir.path().join("mirror");
    let sync = |endpoint: &str| {
        run(args(&[
            "sync",
            "--category",
            "maritime",
            "--into",
            mirror.to_str().unwrap(),
            "--endpoint",
            endpoint,
            "--as",
            &idn,
        ]))
    };
    // IDN has contributed nothing: refused.
    let refused = sync(&endpoint).await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(!mirror.exists(), "a refused sync left {}", mirror.display());
    // No server at that address.
    let refused = sync("https://127.0.0.1:9").await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(!mirror.exists(), "a failed sync left {}", mirror.display());
}

/// Two runs into one directory: the files are one run's, each whole — never a mix of
/// lines, nor of files from both runs. A run that finds the other writing says so, and
/// one that finds its files there replaces none.
#[test]
fn sample_reports_into_one_directory_twice_at_once_writes_one_runs_files() {
    for round in 0..3 {
        let dir = tempfile::TempDir::new().unwrap();
        let runs: Vec<_> = [("3000", "1"), ("2000", "2")]
            .into_iter()
            .map(|(count, seed)| {
                Command::new(BIN)
                    .args(["sample-reports", "--states", "AUS,IDN,THA"])
                    .args(["--count", count, "--seed", seed, "--out"])
                    .arg(dir.path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut succeeded = 0;
        for run in runs {
            let out = run.wait_with_output().unwrap();
            if out.status.success() {
                succeeded += 1;
            } else {
                let said = String::from_utf8_lossy(&out.stderr);
                assert!(
                    said.contains("another `tidemark sample-reports`")
                        || said.contains("is there already"),
                    "{said}"
                );
            }
        }
        assert_eq!(succeeded, 1, "round {round}");
        let counts: Vec<usize> = ["aus", "idn", "tha"]
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(dir.path().join(format!("{s}.jsonl"))).unwrap();
                for line in text.lines() {
                    serde_json::from_str::<serde_json::Value>(line).unwrap();
                }
                text.lines().count()
            })
            .collect();
        assert!(
            counts == [3000; 3] || counts == [2000; 3],
            "round {round}: {counts:?}"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".sample-reports.lock",
                "aus.jsonl",
                "idn.jsonl",
                "tha.jsonl"
            ]
        );
    }
}

/// A file of the name sample-reports would write is someone's: it is not replaced, and
/// nothing else is written. What a killed run left is cleared by the next.
#[test]
fn sample_reports_replaces_no_file() {
    let dir = tempfile::TempDir::new().unwrap();
    let mine = dir.path().join("idn.jsonl");
    std::fs::write(&mine, "MY REAL DATA\n").unwrap();
    let killed = dir.path().join(".aus.jsonl.999999999.0.tmp");
    std::fs::write(&killed, "{\"half\":").unwrap();
    let sample = |states: &str| {
        Command::new(BIN)
            .args([
                "sample-reports",
                "--count",
                "2",
                "--states",
                states,
                "--out",
            ])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = sample("AUS,IDN");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("idn.jsonl is there already"), "{said}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "MY REAL DATA\n");
    assert!(!dir.path().join("aus.jsonl").exists());
    let out = sample("AUS");
    assert!(out.status.success(), "{out:?}");
    assert!(!killed.exists(), "a killed run's partial file is left");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("aus.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[tokio::test]
async fn a_closed_stdout_ends_a_command_quietly() {
    use std::io::{BufRead, BufReader};
    let output = tokio::task::spawn_blocking(|| {
        let mut child = Command::new(BIN)
            .args(["sample-reports", "--count", "20000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader goes away, as `| head -1` does.
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "no panic");
}

#[test]
fn a_bounding_box_south_or_west_is_taken_in_its_comma_form() {
    for command in ["query", "watch", "aggregate"] {
        for bbox in [
            ["--bbox", "-10,110,0,125"],
            ["--bbox", "-35.5,-60,-20,-40.25"],
        ] {
            let out = Command::new(BIN)
                .arg(command)
                .args(["--category", "smuggling"])
                .args(bbox)
                .args(["--as", "/nonexistent/aus-node"])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            // Parsed: the command gets as far as loading the (missing) profile.
            assert!(
                said.contains("loading profile"),
                "{command} {bbox:?}: {said}"
            );
        }
    }
    let out = Command::new(BIN)
        .args(["query", "--category", "smuggling", "--bbox", "-10,110"])
        .args(["--as", "/nonexistent/aus-node"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bbox takes four numbers"));
}

/// A mirror notices when the server's history is no longer the one it mirrored: after a
/// restore from an older backup, new changes take the sequence numbers the mirror
/// already holds, and `sync` refuses (exit 4) without writing instead of mixing the two.
/// On the same history a run resumes without repeating the change it re-reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one drill: mirror, back up, restore, resume
async fn a_mirror_refuses_to_resume_on_another_history() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let dir = tempfile::TempDir::new().unwrap();
    let aus = profile(&pki, &server, dir.path(), "AUS").await;
    let idn = profile(&pki, &server, dir.path(), "IDN").await;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let import = |file: &str, who: &str, endpoint: String| {
        let (file, who) = (path(file), who.to_owned());
        async move {
            run_ok(args(&[
                "import",
                &file,
                "--endpoint",
                &endpoint,
                "--as",
                &who,
            ]))
            .await;
        }
    };
    for (states, seed, file) in [
        ("AUS", "51", "a.jsonl"),
        ("IDN", "52", "i.jsonl"),
        ("AUS", "53", "b.jsonl"),
        ("AUS", "54", "c.jsonl"),
    ] {
        let out = run(args(&[
            "sample-reports",
            "--count",
            "6",
            "--states",
            states,
            "--seed",
            seed,
        ]))
        .await;
        std::fs::write(dir.path().join(file), out.stdout).unwrap();
    }
    import("a.jsonl", &aus, server.endpoint()).await;
    import("i.jsonl", &idn, server.endpoint()).await;
    let operator = dir.path().join("operator");
    let op = common::operator(&pki);
    std::fs::write(operator.with_extension("pem"), op.cert_pem()).unwrap();
    std::fs::write(operator.with_extension("key"), op.key_pem()).unwrap();
    let backup = path("before.backup");
    run_ok(args(&[
        "admin",
        "backup",
        "--out",
        &backup,
        "--endpoint",
        &server.endpoint(),
        "--as",
        &operator.display().to_string(),
    ]))
    .await;
    import("b.jsonl", &aus, server.endpoint()).await;
    let mirror = path("mirror");
    let sync = |endpoint: String| {
        let (mirror, idn) = (mirror.clone(), idn.clone());
        async move {
            run(args(&[
                "sync",
                "--category",
                "smuggling",
                "--into",
                &mirror,
                "--endpoint",
                &endpoint,
                "--as",
                &idn,
            ]))
            .await
        }
    };
    let lines = || {
        std::fs::read_to_string(dir.path().join("mirror/smuggling.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_ok(&sync(server.endpoint()).await);
    let mirrored = lines();
    // Again on the same history: nothing new, nothing repeated.
    assert_ok(&sync(server.endpoint()).await);
    assert_eq!(lines(), mirrored);
    // A last line edited to another spelling of its kind is named, not taken for a
    // rolled-back exchange.
    let data = dir.path().join("mirror/smuggling.jsonl");
    let kept = std::fs::read_to_string(&data).unwrap();
    let edited = {
        let mut all: Vec<&str> = kept.lines().collect();
        let last = all
            .pop()
            .unwrap()
            .replace("\"kind\":\"report\"", "\"kind\":\"REPORT\"");
        format!("{}\n{last}\n", all.join("\n"))
    };
    assert_ne!(edited, kept, "the last line is a report");
    std::fs::write(&data, edited).unwrap();
    let out = sync(server.endpoint()).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("meta.kind"), "{said}");
    std::fs::write(&data, kept).unwrap();

    // Restored from the backup, then other reports take the mirrored sequence numbers.
    server.stop().await;
    let restored = tempfile::TempDir::new().unwrap();
    run_ok(args(&[
        "restore",
        &backup,
        "--data",
        &restored.path().display().to_string(),
    ]))
    .await;
    let server = TestServer::start_with(&pki, restored, |_| {}).await;
    import("c.jsonl", &aus, server.endpoint()).await;
    let out = sync(server.endpoint()).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(said.contains("restored from an older backup"), "{said}");
    assert_eq!(lines(), mirrored, "nothing was written");
}
