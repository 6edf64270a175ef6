//! The `tidemark serve` binary on a fresh directory: first run creates the development
//! PKI and the store, a second run reuses both; config files are strict.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use tidemark::{client::ClientIdentity, pb};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Starts `tidemark serve --listen 127.0.0.1:0` in `dir` and returns the process with the
/// endpoint from its "listening on" line.
fn spawn_serve(dir: &Path, extra: &[&str]) -> (Child, String) {
    spawn_serve_logging_to(dir, extra, Stdio::null())
}

/// As [`spawn_serve`], its log (standard error) going to `log`.
fn spawn_serve_logging_to(dir: &Path, extra: &[&str], log: Stdio) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn tidemark serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let endpoint = endpoint_of(&line);
    (child, endpoint)
}

/// The endpoint the server's first line on standard output names: a JSON line under
/// `--log-format json`, else a sentence.
fn endpoint_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|hint| hint["endpoint"].as_str().map(str::to_owned))
        .or_else(|| {
            line.split_whitespace()
                .find(|w| w.starts_with("https://"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no endpoint in {line:?}"))
}

/// A directory in which `tidemark pki init` made a development PKI (certs/).
fn pki_init() -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    let init = Command::new(BIN)
        .args(["pki", "init"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    dir
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exits cleanly on SIGTERM: {exit:?}");
}

async fn whoami(endpoint: &str, profile: &Path) -> pb::WhoAmIResponse {
    let identity = ClientIdentity::from_profile(profile).unwrap();
    let channel = tidemark::client::connect(endpoint, &identity)
        .await
        .unwrap();
    pb::exchange_client::ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// A log that cannot be written (a full disk) is lost; the server goes on serving, in
/// either log format. It used to panic on its first log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_log_cannot_be_written_goes_on_serving() {
    for format in ["text", "json"] {
        let dir = tempfile::TempDir::new().unwrap();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let (child, endpoint) =
            spawn_serve_logging_to(dir.path(), &["--log-format", format], full.into());
        let me = whoami(&endpoint, &dir.path().join("certs/aus-node")).await;
        assert_eq!(me.state, "AUS", "{format}");
        terminate(child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_creates_pki_and_store_and_second_run_reuses_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let certs = dir.path().join("certs");

    let (child, endpoint) = spawn_serve(dir.path(), &[]);
    let me = whoami(&endpoint, &certs.join("idn-node")).await;
    assert_eq!((me.state.as_str(), me.role()), ("IDN", pb::Role::Node));
    // The sample states' signing keys were registered on first start: a report signed
    // with certs/idn-signing.key is accepted.
    let key = tidemark::signing::SigningKey::from_file(&certs.join("idn-signing.key")).unwrap();
    let mut rng = tidemark::sample::Rng::new(1);
    let report = tidemark::sample::report(&mut rng, "IDN");
    let envelope = tidemark::envelope::sign(
        tidemark::envelope::REPORT_PAYLOAD_TYPE,
        prost::Message::encode_to_vec(&report),
        &key,
    );
    let identity = ClientIdentity::from_profile(&certs.join("idn-node")).unwrap();
    let channel = tidemark::client::connect(&endpoint, &identity)
        .await
        .unwrap();
    let response = pb::exchange_client::ExchangeClient::new(channel)
        .submit(pb::SubmitRequest {
            envelope: Some(envelope),
            ..Default::default()
        })
        .await
        .expect("a dev-PKI report is accepted")
        .into_inner();
    assert!(!response.duplicate);
    terminate(child);

    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    assert!(dir.path().join("data/tidemark.redb").is_file());
    for stem in [
        "server",
        "aus-node",
        "aus-analyst",
        "idn-node",
        "idn-analyst",
        "tha-node",
        "tha-analyst",
        "regional-analyst",
        "operator",
        "receipt",
        "aus-signing",
        "idn-signing",
        "tha-signing",
    ] {
        let public = ["pem", "pub.pem"].map(|ext| certs.join(format!("{stem}.{ext}")));
        assert!(
            public.iter().any(|p| p.is_file()),
            "{stem}.pem or {stem}.pub.pem"
        );
        let key = certs.join(format!("{stem}.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{stem}.key is private");
        }
    }

    let (child, endpoint) = spawn_serve(dir.path(), &[]);
    let me = whoami(&endpoint, &certs.join("operator")).await;
    assert_eq!(me.role(), pb::Role::Operator);
    terminate(child);
    assert_eq!(
        std::fs::read(certs.join("ca.pem")).unwrap(),
        ca,
        "the PKI is reused"
    );
}

#[test]
fn a_config_file_naming_missing_certificates_is_an_error_that_names_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("tidemark.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[tls]\nca = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    assert!(
        !dir.path().join("certs").exists(),
        "no PKI is made when a config is given"
    );
    assert!(stderr.contains("tls.ca"), "the setting is named: {stderr}");
}

/// A server that cannot start — it cannot listen (the port is another's, for the
/// exchange or for the metrics asked for), or its store's path cannot be a store — says
/// so and leaves nothing behind: no development PKI, no store (tester D: a busy metrics
/// address was only warned about, and the server ran without metrics).
#[test]
fn a_server_that_cannot_start_writes_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mapped = format!("[::ffff:127.0.0.1]:{}", taken.local_addr().unwrap().port());
    let free = "127.0.0.1:0";
    // (listen, metrics listen, data directory, what is said)
    let cases = [
        (addr.as_str(), "", "d", format!("cannot listen on {addr}")),
        (
            free,
            &addr,
            "d",
            format!("cannot listen for metrics on {addr}"),
        ),
        (free, "", "f/d", "f is a file, not a directory".to_owned()),
        // A store that is a link to nothing (tester D: an unmounted volume's link was
        // replaced by a new, empty store).
        (free, "", "l", "is a symbolic link to nothing".to_owned()),
        // A store that is a directory (tester C: the PKI was made first).
        (
            free,
            "",
            "s",
            "it is a directory, and the store is one file".to_owned(),
        ),
        // A store that is no redb database, or a FIFO (tester D: found after the PKI
        // was made; a FIFO's open would wait for a writer).
        (free, "", "g", "it is not a Tidemark store".to_owned()),
        (free, "", "p", "it is not a regular file".to_owned()),
        // An empty store file (a failed copy) is no new store; a store without the PKI
        // it was made with is not given a new one (tester D of 2026-12-07).
        (free, "", "e", "it is an empty file, not a store".to_owned()),
        (free, "", "v", "holds no development PKI".to_owned()),
        // Both on one port, spelled two ways (tester C: the server failed after writing
        // its files).
        (&addr, &mapped, "d", "a port of its own".to_owned()),
    ];
    let made = ["e", "f", "g", "l", "p", "s", "v"];
    for (listen, metrics, data, said) in cases {
        let dir = tempfile::TempDir::new().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("f"), "").unwrap();
        std::fs::create_dir_all(at("s/tidemark.redb")).unwrap();
        for made in ["e", "g", "l", "p"] {
            std::fs::create_dir(at(made)).unwrap();
        }
        std::fs::write(at("e/tidemark.redb"), "").unwrap();
        drop(tidemark::Store::open(&tidemark::config::StoreConfig::in_dir(&at("v"))).unwrap());
        std::fs::write(at("g/tidemark.redb"), "not a database\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent/tidemark.redb", at("l/tidemark.redb")).unwrap();
        let fifo = Command::new("mkfifo")
            .arg(at("p/tidemark.redb"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let out = Command::new(BIN)
            .args(["serve", "--listen", listen, "--metrics-listen", metrics])
            .args(["--data", data, "--certs", "c"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&said), "{stderr}");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, made, "{stderr}");
        for made in made.iter().filter(|m| **m != "f") {
            assert_eq!(std::fs::read_dir(at(made)).unwrap().count(), 1, "{made}");
        }
    }
}

/// Makes a development PKI in `dir` with `tidemark pki init --dir`.
fn pki_init_in(dir: &std::path::Path) {
    let pki = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(pki.status.success(), "{pki:?}");
}

/// A configuration file whose log signing key or CRL file cannot be used stops the
/// server before its store is made (tester D: the store file was created first).
#[test]
fn a_config_whose_signing_key_or_crl_cannot_be_used_makes_no_store() {
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name);
    pki_init_in(&at("c"));
    std::fs::create_dir(at("crl-dir")).unwrap();
    std::fs::write(at("crl-garbage.pem"), "not a CRL\n").unwrap();
    std::fs::create_dir_all(at("jdir/access-journal.json")).unwrap();
    // Links to a volume not mounted (tester D of 2026-12-07: each was replaced by a file).
    std::fs::create_dir(at("links")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-volume/crl.pem", at("links/crl.pem")).unwrap();
    std::fs::create_dir(at("jlinks")).unwrap();
    std::os::unix::fs::symlink(
        "/nonexistent-volume/access-journal.json",
        at("jlinks/access-journal.json"),
    )
    .unwrap();
    // (server key, receipt key, CRL file, what is said)
    let cases = [
        (
            "c/server.key",
            "c/missing.key",
            "c/crl.pem",
            "c/missing.key",
        ),
        (
            "c/server.key",
            "c/receipt.key",
            "crl-dir",
            "the CRL file crl-dir",
        ),
        (
            "c/server.key",
            "c/receipt.key",
            "crl-garbage.pem",
            "the CRL file crl-garbage.pem",
        ),
        // Tester D of 2026-12-07: found once the store (and a journal) were written.
        (
            "c/server.key",
            "c/receipt.key",
            "nodir/sub/crl.pem",
            "the directory of [tls] crl, nodir/sub, is not there",
        ),
        (
            "c/server.key",
            "c/receipt.key",
            "jdir/crl.pem",
            "the access journal jdir/access-journal.json",
        ),
        (
            "c/operator.key",
            "c/receipt.key",
            "c/crl.pem",
            "the server key is not the server certificate's key",
        ),
        (
            "c/server.key",
            "c/receipt.key",
            "links/crl.pem",
            "[tls] crl, links/crl.pem: it is a symbolic link to /nonexistent-volume/crl.pem",
        ),
        (
            "c/server.key",
            "c/receipt.key",
            "jlinks/crl.pem",
            "the access journal, jlinks/access-journal.json: it is a symbolic link to",
        ),
    ];
    for (key, receipt_key, crl, said) in cases {
        let config = at("tidemark.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n[tls]\nca = \"c/ca.pem\"\ncert = \"c/server.pem\"\n\
                 key = \"{key}\"\nca_key = \"c/ca.key\"\ncrl = \"{crl}\"\n\
                 [signing]\nreceipt_key = \"{receipt_key}\"\n[store]\npath = \"d/tidemark.redb\"\n\
                 [metrics]\nlisten = \"\"\n"
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{stderr}");
        assert!(!at("d").exists(), "no store is made: {stderr}");
        let journals = std::fs::read_dir(at("c"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".journal")
            })
            .count();
        assert_eq!(journals, 0, "no journal is written: {stderr}");
    }
}

/// `serve` on a development PKI that lost its `ca.pem`, or whose `pki init` was stopped
/// part-way, stops and says so, and leaves the keys as they were (tester A of
/// 2026-12-07: it made a new PKI over the CA and receipt keys, and the store's log could
/// never be served again).
#[test]
fn serve_keeps_a_pki_that_is_not_whole() {
    let dir = tempfile::TempDir::new().unwrap();
    let at = |name: &str| dir.path().join(name);
    pki_init_in(&at("c"));
    let keys = || ["c/ca.key", "c/receipt.key"].map(|k| std::fs::read(at(k)).unwrap());
    let before = keys();
    let serve = || {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
            .args(["--certs", "c", "--data", "d"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    std::fs::rename(at("c/ca.pem"), at("ca.pem.moved")).unwrap();
    let out = serve();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds a PKI's files") && stderr.contains("but no ca.pem"),
        "{stderr}"
    );
    assert_eq!(keys(), before);
    assert!(!at("c/ca.pem").exists() && !at("d").exists(), "{stderr}");

    std::fs::rename(at("ca.pem.moved"), at("c/ca.pem")).unwrap();
    std::fs::write(at("c/.pki-unfinished"), "").unwrap();
    let out = serve();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was stopped part-way"), "{stderr}");
    assert_eq!(keys(), before);
    assert!(!at("d").exists(), "{stderr}");
}

/// The embedded default metrics address busy (a second development server on this
/// machine) is said, and the server runs without metrics.
#[test]
fn the_default_metrics_address_busy_is_said_and_the_server_runs() {
    let dir = tempfile::TempDir::new().unwrap();
    // Held here once other tests' servers let go of it; held by something else all
    // along, it is just as busy.
    let _held = (0..100).find_map(|_| {
        std::net::TcpListener::bind("127.0.0.1:9464")
            .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(100)))
            .ok()
    });
    let logged = logs_while(dir.path(), &[], |endpoint| {
        assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    });
    assert!(
        logged.contains("the default metrics address is busy")
            && logged.contains("running without metrics"),
        "{logged}"
    );
    // So is a configuration file that leaves the setting out (tester C: it was taken as
    // asked for, and the server stopped).
    let printed = Command::new(BIN)
        .args(["serve", "--print-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let config = String::from_utf8(printed.stdout)
        .unwrap()
        .replace("listen = \"127.0.0.1:9464\"\n", "");
    assert!(config.contains("[metrics]"), "{config}");
    std::fs::write(dir.path().join("tidemark.toml"), config).unwrap();
    let logged = logs_while(dir.path(), &["--config", "tidemark.toml"], |_| {});
    assert!(logged.contains("running without metrics"), "{logged}");
}

/// A configuration file whose own `listen` and `[metrics] listen` clash runs when the
/// flags part them: the file is read again for its partner CAs only (tester D: that
/// reading checked the whole file without the flags, after the store was written).
#[test]
fn flags_that_part_a_config_files_clashing_listeners_are_enough() {
    let dir = pki_init();
    let printed = Command::new(BIN)
        .args(["serve", "--print-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let config = String::from_utf8(printed.stdout).unwrap().replace(
        "listen = \"127.0.0.1:9464\"",
        "listen = \"127.0.0.1:50051\"",
    );
    std::fs::write(dir.path().join("tidemark.toml"), config).unwrap();
    let flags = ["--config", "tidemark.toml", "--metrics-listen", ""];
    let logged = logs_while(dir.path(), &flags, |endpoint| {
        assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    });
    assert!(!logged.contains("ERROR"), "{logged}");
}

/// Relative paths in a configuration file are taken from the working directory: a
/// server started elsewhere is told so, naming the setting and where the file is.
#[test]
fn a_relative_path_missed_from_another_directory_is_explained() {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), "").unwrap();
    std::fs::write(
        dir.path().join("tidemark.toml"),
        "listen = \"127.0.0.1:0\"\n[tls]\nca = \"certs/ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", "../tidemark.toml"])
        .current_dir(dir.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.ca in ../tidemark.toml names certs/ca.pem")
            && stderr.contains("taken from the working directory")
            && stderr.contains("there is one at ../certs/ca.pem"),
        "{stderr}"
    );
}

/// A CA key in a form the server cannot read (OpenSSL's default `EC PRIVATE KEY`, say)
/// is named with the form it must have, before any store is made.
#[test]
fn an_unreadable_ca_key_is_named_with_its_form_before_the_store_is_made() {
    let dir = pki_init();
    // The key pki init made, labelled as OpenSSL labels a SEC1 key: made here, never
    // kept in the repository.
    let ca_key = dir.path().join("certs/ca.key");
    let text = std::fs::read_to_string(&ca_key).unwrap();
    let body: String = text.lines().nth(1).unwrap().chars().take(12).collect();
    let relabelled = format!(
        "-----BEGIN EC{0}-----\n{body}\n-----END EC{0}-----\n",
        " PRIVATE KEY"
    );
    assert!(relabelled.contains("EC PRIVATE KEY"));
    std::fs::write(&ca_key, relabelled).unwrap();
    let printed = Command::new(BIN)
        .args(["serve", "--print-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    std::fs::write(dir.path().join("tidemark.toml"), &printed.stdout).unwrap();
    // Refused before any store is made; says why.
    let refused = || {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--config",
                "tidemark.toml",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!dir.path().join("data").exists(), "no store is made");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused();
    assert!(
        stderr.contains("certs/ca.key") && stderr.contains("PKCS#8"),
        "{stderr}"
    );
    // Nor is a CA key the config names and the disk lacks (a CA kept offline is
    // `ca_key = ""`, said explicitly).
    std::fs::remove_file(&ca_key).unwrap();
    let stderr = refused();
    assert!(
        stderr.contains("certs/ca.key") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn print_config_shows_every_default_and_rejects_unknown_keys() {
    let out = Command::new(BIN)
        .args(["serve", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "listen = \"127.0.0.1:50051\"",
        "trust_domain",
        "max_message_bytes",
        "[store]",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }

    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

/// `--metrics-listen` moves (or turns off) the metrics endpoint without a config file,
/// held to the config's rule: an IP address and port.
#[test]
fn the_metrics_endpoint_moves_with_a_flag() {
    let print = |address: &str| {
        Command::new(BIN)
            .args(["serve", "--print-config", "--metrics-listen", address])
            .output()
            .unwrap()
    };
    for (address, shown) in [
        ("127.0.0.1:59464", "listen = \"127.0.0.1:59464\""),
        ("", "listen = \"\""),
    ] {
        let out = print(address);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let metrics = text.split("[metrics]").nth(1).unwrap();
        assert!(metrics.contains(shown), "{address:?}: {text}");
    }
    // A flag replaces a value the config file has wrong before the values are checked.
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[metrics]\nlisten = \"bogus\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--print-config",
            "--metrics-listen",
            "127.0.0.1:59464",
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = print("localhost:9464");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics.listen"),
        "{out:?}"
    );
}

/// Starts `tidemark serve` with `args`, stderr piped (not a terminal), runs `during`
/// with its endpoint, stops it, and returns what it logged.
fn logs_while(dir: &Path, args: &[&str], during: impl FnOnce(&str)) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidemark serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = endpoint_of(&line);
    let stderr = child.stderr.take().unwrap();
    during(&endpoint);
    terminate(child);
    let mut logged = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut logged).unwrap();
    logged
}

/// The events of a JSON log whose message is `message`.
fn events(json: &str, message: &str) -> Vec<serde_json::Value> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["message"] == message)
        .collect()
}

/// Starts `tidemark serve` with `args`, stops it, and returns what it logged.
fn logs_of(dir: &Path, args: &[&str]) -> String {
    logs_while(dir, args, |_| {})
}

#[test]
fn a_refused_client_certificate_is_logged_with_its_serial_and_claimed_identity() {
    let dir = tempfile::TempDir::new().unwrap();
    // A certificate from another CA (its own), claiming AUS's node, serial 0x7e57ab1e.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let claimed = "spiffe://tidemark.local/state/AUS/node/aus-1";
    params.subject_alt_names = vec![rcgen::SanType::URI(claimed.try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x7e, 0x57, 0xab, 0x1e]));
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("other.pem"), dir.path().join("other.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let json = logs_while(dir.path(), &["--log-format", "json"], |endpoint| {
        let out = Command::new(BIN)
            .args(["whoami", "--endpoint", endpoint, "--cert"])
            .arg(&cert_file)
            .arg("--key")
            .arg(&key_file)
            .arg("--ca")
            .arg(dir.path().join("certs/ca.pem"))
            .output()
            .unwrap();
        assert!(!out.status.success());
    });
    let refused = events(&json, "client certificate refused");
    assert_eq!(refused.len(), 1, "{json}");
    assert_eq!(refused[0]["serial"], "7e57ab1e", "{json}");
    let peer = refused[0]["span"]["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{json}");
    let said = refused[0]["claimed"].as_str().unwrap_or_default();
    assert!(said.contains(claimed), "{json}");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("UnknownIssuer"),
        "{json}"
    );
}

#[test]
fn every_refusal_is_logged_once_with_its_reason_and_the_caller() {
    let dir = tempfile::TempDir::new().unwrap();
    let json = logs_while(dir.path(), &["--log-format", "json"], |endpoint| {
        // AUS has contributed nothing: reading others' reports is refused.
        let out = Command::new(BIN)
            .args([
                "query",
                "--category",
                "smuggling",
                "--endpoint",
                endpoint,
                "--as",
            ])
            .arg(dir.path().join("certs/aus-node"))
            .output()
            .unwrap();
        assert!(!out.status.success());
    });
    let refusals = events(&json, "call refused");
    assert_eq!(refusals.len(), 1, "{json}");
    let refusal = &refusals[0];
    assert_eq!(refusal["code"], "PERMISSION_DENIED");
    assert_eq!(refusal["method"], "tidemark.v1.Exchange/Query");
    assert!(
        refusal["principal"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/state/AUS/node/aus-1"),
        "{refusal}"
    );
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("contributed"),
        "{refusal}"
    );
}

/// A caller refused in a loop cannot fill the server's log: its refusals are logged at
/// INFO from a budget (60 at once, then one a second), and that its refusals are no
/// longer recorded is said once a minute (an outside pass: two lines per refusal, 18 MB
/// a minute from one client).
#[test]
fn a_caller_refused_in_a_loop_is_logged_from_a_budget() {
    const CALLS: usize = 300;
    let dir = tempfile::TempDir::new().unwrap();
    let profile = dir.path().join("certs/aus-node");
    let json = logs_while(dir.path(), &["--log-format", "json"], |endpoint| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let identity = ClientIdentity::from_profile(&profile).unwrap();
            let channel = tidemark::client::connect(endpoint, &identity)
                .await
                .unwrap();
            let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
            // AUS has contributed nothing: each is refused.
            for _ in 0..CALLS {
                let refused = exchange
                    .query(pb::QueryRequest {
                        category: pb::Category::SmugglingIncident as i32,
                        ..Default::default()
                    })
                    .await;
                assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
            }
        });
    });
    let refusals = events(&json, "call refused").len();
    assert!(
        (60..=70).contains(&refusals),
        "{refusals} refusals logged at INFO"
    );
    let unrecorded = json
        .lines()
        .filter(|l| l.contains("refusals not recorded"))
        .count();
    assert_eq!(unrecorded, 1, "{json}");
}

/// Refused TLS handshakes — which a peer without a certificate causes at will — are
/// logged at INFO from a budget (60 at once, then one a second), and the next line at
/// INFO says how many were held back (an outside pass: 2,582 lines a second from one
/// process sending `GET /`).
#[test]
fn refused_handshakes_are_logged_from_a_budget() {
    use std::io::Write as _;
    const CONNECTIONS: usize = 300;
    let dir = tempfile::TempDir::new().unwrap();
    let json = logs_while(dir.path(), &["--log-format", "json"], |endpoint| {
        let addr = endpoint.trim_start_matches("https://");
        for _ in 0..CONNECTIONS {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = std::io::Read::read_to_end(&mut tcp, &mut Vec::new());
        }
        // A second past the burst: one more line at INFO, telling what was held back.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = std::io::Read::read_to_end(&mut tcp, &mut Vec::new());
    });
    let refused = events(&json, "TLS handshake refused");
    assert!(
        (60..=70).contains(&refused.len()),
        "{} lines at INFO",
        refused.len()
    );
    let held_back: u64 = refused
        .iter()
        .map(|e| e["held_back"].as_u64().unwrap_or(0))
        .sum();
    assert!(held_back >= 200, "{held_back} said to be held back");
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal_and_json_logs_have_stable_fields() {
    let dir = tempfile::TempDir::new().unwrap();
    let text = logs_of(dir.path(), &[]);
    assert!(!text.is_empty());
    assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
    let json = logs_of(dir.path(), &["--log-format", "json"]);
    let mut lines = 0;
    for line in json.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "no {field} in {line}");
        }
        lines += 1;
    }
    assert!(lines > 0);
    assert!(!json.contains('\u{1b}'));
}

/// A server whose standard output is closed (its reader gone, or a supervisor that
/// closed it) keeps serving: the "listening on" line is only a hint, and the log on
/// stderr says where it listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_standard_output_does_not_stop_the_server() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidemark serve");
    drop(child.stdout.take());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "serving" {
            addr = event["addr"].as_str().map(str::to_owned);
        }
        line.clear();
    }
    let addr = addr.expect("the log says where the server listens");
    // Past the line it could not print.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let who = whoami(
        &format!("https://{addr}"),
        &dir.path().join("certs/aus-node"),
    )
    .await;
    assert!(who.spiffe_id.contains("/state/AUS/"), "{who:?}");
    terminate(child);
}

/// SIGHUP re-reads the files as `admin reload-tls` does, and both are on record: the
/// reload, by the server's own SPIFFE ID, and a revocation the CRL file lists that the
/// store lacked (it used to be enforced with no record until the next restart, and a
/// SIGHUP left none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_and_the_revocations_it_finds_are_on_record() {
    let dir = tempfile::TempDir::new().unwrap();
    let certs = dir.path().join("certs");
    let (child, endpoint) = spawn_serve(dir.path(), &[]);
    let serial = whoami(&endpoint, &certs.join("tha-node"))
        .await
        .certificate_serial;
    let ca = tidemark::pki::CertificateAuthority::from_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let entry = tidemark::pki::RevokedEntry {
        serial: serial.clone(),
        revoked_at: time::OffsetDateTime::now_utc(),
        reason: tidemark::pki::RevocationReason::KeyCompromise,
    };
    std::fs::write(certs.join("crl.pem"), ca.crl(&[entry], 99, 7).unwrap()).unwrap();
    let hangup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let operator = ClientIdentity::from_profile(&certs.join("operator")).unwrap();
    let mut admin = pb::admin_client::AdminClient::new(
        tidemark::client::connect(&endpoint, &operator)
            .await
            .unwrap(),
    );
    let revoked = by_server_eventually(&mut admin, "revoke-certificate")
        .await
        .expect("the revocation the CRL file lists is on record");
    let reload = by_server_eventually(&mut admin, "reload-tls")
        .await
        .expect("the SIGHUP reload is on record");
    assert!(revoked.detail.contains(&serial), "{revoked:?}");
    assert!(reload.detail.starts_with("SIGHUP: "), "{reload:?}");
    assert!(reload.detail.contains(&serial), "{reload:?}");
    assert!(
        refused(&endpoint, &certs.join("tha-node")).await,
        "the revoked certificate is refused"
    );

    // A SIGHUP whose files cannot be loaded is on record too, with why (tester A of
    // 2026-12-07: only the server's log said so). Here the CRL is a FIFO, which is
    // refused at once: reading it waited for ever, and revocations recorded meanwhile
    // were not enforced (tester D of 2026-12-07).
    std::fs::remove_file(certs.join("crl.pem")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(certs.join("crl.pem"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let hangup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let refusal = by_server_eventually(&mut admin, "refused ReloadTls")
        .await
        .expect("the refused SIGHUP reload is on record");
    assert!(
        refusal.detail.contains("SIGHUP") && refusal.detail.contains("not a regular file"),
        "{refusal:?}"
    );
    // A revocation meanwhile is enforced at once.
    let aus = whoami(&endpoint, &certs.join("aus-node"))
        .await
        .certificate_serial;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        admin.revoke_certificate(pb::RevokeCertificateRequest {
            serial: aus,
            reason: "key-compromise".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("a revocation does not wait on the FIFO")
    .unwrap();
    assert!(
        refused(&endpoint, &certs.join("aus-node")).await,
        "the certificate revoked meanwhile is refused"
    );
    std::fs::remove_file(certs.join("crl.pem")).unwrap();
    terminate(child);
}

/// Whether the certificate of `profile` is refused by the server at `endpoint`.
async fn refused(endpoint: &str, profile: &std::path::Path) -> bool {
    let identity = ClientIdentity::from_profile(profile).unwrap();
    match tidemark::client::connect(endpoint, &identity).await {
        Ok(channel) => pb::exchange_client::ExchangeClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_err(),
        Err(_) => true,
    }
}

/// The first audit record of `action` by the server itself, waited for up to 10 s.
async fn by_server_eventually(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    action: &str,
) -> Option<pb::AuditEntry> {
    for _ in 0..100 {
        let entries = admin
            .audit_log(pb::AuditLogRequest {
                after: 0,
                limit: 1_000,
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let found = entries
            .into_iter()
            .find(|e| e.principal == "spiffe://tidemark.local/server" && e.action == action);
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// Without a config file, a directory of certificates without ca.key (the default one,
/// or --certs) runs with the CA kept offline: the server starts, serves, and says it
/// issues nothing. (A config file that names a missing ca_key is refused, above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_directory_without_its_ca_key_runs_with_the_ca_offline() {
    let dir = pki_init();
    std::fs::rename(
        dir.path().join("certs/ca.key"),
        dir.path().join("ca.key.offline"),
    )
    .unwrap();
    for extra in [&[][..], &["--certs", "certs"][..]] {
        let (child, endpoint) = spawn_serve(dir.path(), extra);
        let me = whoami(&endpoint, &dir.path().join("certs/aus-node")).await;
        assert_eq!(me.state, "AUS", "{extra:?}");
        terminate(child);
    }
}
