//! `tidemark serve`: run the exchange server.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tidemark::{
    KeyRecord, StateRecord, Store,
    config::{Config, SigningConfig, StoreConfig, TlsConfig},
    pki,
    server::Server,
    signing::PublicKey,
};
use tokio::net::TcpListener;

/// Run the exchange server.
///
/// With no flags it listens on 127.0.0.1:50051, keeps its data in data/tidemark.redb and
/// uses the certificates in certs/, creating a development PKI there on first run. With
/// --config it uses exactly the certificate files the config names — a setting the file
/// leaves out takes its default, as --print-config shows (`[tls] ca_key = ""` for a CA
/// kept offline) — and creates no certificate or key; it writes its store, the CRL it
/// signs (when it holds the CA key), and access-journal.json and the store's
/// audit-trail-<fork>.journal beside the CRL path.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (see --print-config for every setting and its default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on, e.g. 127.0.0.1:50051 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", value_parser = tidemark::config::socket_address)]
    listen: Option<SocketAddr>,

    /// Address of the plain-HTTP metrics endpoint, e.g. 127.0.0.1:9464 (port 0 picks a
    /// free port; "" turns it off). Overrides the config's `metrics.listen`. A taken
    /// address asked for here or in a config file stops the server before it writes
    /// anything; the default taken is only warned about.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,

    /// Directory with ca.pem, server.pem, server.key and receipt.key, and ca.key if the
    /// CA is kept there (without it, the CA is offline: no issuing, no CRL signing).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,

    /// Directory for the store file tidemark.redb.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=tidemark=debug): text,
    /// coloured only on a terminal, or json, one object per line with the fields
    /// timestamp, level, target, message and the event's own fields.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,

    /// Start a store restored from a backup (`tidemark restore`) although the CRL file,
    /// access-journal.json or the store's audit-trail-<fork>.journal beside it is
    /// missing. Those files carry the certificate revocations, suspensions and
    /// signing-key revocations made since the backup, and the audit records written
    /// since; without them, the changes are lost and must be made again, and the records
    /// are lost (the restore's own record says so). Without this flag the server refuses
    /// to start such a store.
    #[arg(long)]
    trust_files_lost: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Whether the server logs JSON lines (`--log-format json`): then where it listens, on
/// standard output, and its fatal error are JSON lines too.
pub(super) fn logs_json(args: &ServeArgs) -> bool {
    matches!(args.log_format, LogFormat::Json)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics_asked = metrics_asked(&args);
    let (config, metrics_on_listen) = effective_config(&args, metrics_asked)?;
    if config.policy.danger_grant_reads_without_contributing {
        anyhow::bail!(
            "policy.danger_grant_reads_without_contributing exists only for the tests of \
             `tidemark audit verify-reciprocity`; `tidemark serve` refuses it: remove it from \
             the configuration"
        );
    }
    if args.print_config {
        // Written, not printed: a closed stdout (`| head`) ends this quietly too (the
        // server itself keeps ignoring SIGPIPE, so print! would panic); any other failure
        // (a full disk) is an error.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        return match out
            .write_all(config.to_toml().as_bytes())
            .and_then(|()| out.flush())
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(super::stdout_failed(e)),
            _ => Ok(()),
        };
    }
    if let Some(path) = &args.config {
        files_named(&config, path)?;
    }
    init_tracing(args.log_format);
    if metrics_on_listen {
        tracing::warn!(
            listen = %config.listen,
            "the default metrics address is the one the exchange listens on: running without \
             metrics; give --metrics-listen a free address (port 0 picks one) to have them"
        );
    }
    // Tried before anything is written: a server that cannot listen (the port taken by
    // another, for the exchange or its metrics) leaves no certificates, store or CRL
    // behind. The metrics listener is held from here; the exchange's is let go again
    // until it is ready to serve, so that a port that takes connections is one that
    // answers them.
    let metrics = bind_metrics(&config, metrics_asked)?;
    drop(
        TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?,
    );
    store_can_go(&config.store.path)?;

    // The development PKI is made only on a first run without a config file; with one,
    // a missing certificate is an error that names it.
    if args.config.is_none() && !config.tls.ca.exists() {
        let dir = args.certs.clone().unwrap_or_else(|| PathBuf::from("certs"));
        // A store's log is signed with the receipt key of the PKI it was served with: a
        // new PKI could never serve it (tester D: one was made, and then refused).
        if config.store.path.exists() {
            anyhow::bail!(
                "the store {} exists, but {} holds no development PKI (no ca.pem): the store \
                 can only be served with the PKI it was made with, whose receipt.key signs its \
                 log; restore that directory, or name it with --certs",
                config.store.path.display(),
                dir.display()
            );
        }
        let made = pki::init_dev_pki(&dir, &config.trust_domain, false)
            .with_context(|| format!("creating the development PKI in {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "created a development PKI (not for production)");
        if let Some(replaced) = made.replaced {
            tracing::info!(
                dir = %replaced.display(),
                "finished a PKI that an earlier run left unfinished; the files it had written are kept here"
            );
        }
    }
    // A directory of certificates (the default one, or --certs) without ca.key runs with
    // the CA kept offline; a config file says so itself, with ca_key = "".
    let mut config = config;
    if (args.config.is_none() || args.certs.is_some())
        && config.tls.ca_key.as_ref().is_some_and(|k| !k.exists())
    {
        tracing::info!(
            "no ca.key beside the certificates: the CA is kept offline (no certificates \
             issued here, no CRL signed)"
        );
        config.tls.ca_key = None;
    }

    if metrics.is_none() {
        config.metrics.listen.clear();
    }
    let mut server = Server::build(config.clone())?;
    if let Some(metrics) = metrics {
        server = server.with_metrics_listener(metrics);
    }
    if args.config.is_none() {
        let dir = config.tls.ca.parent().unwrap_or_else(|| Path::new("."));
        register_dev_signing_keys(server.store(), dir)?;
        record_dev_certificates(server.store(), dir, &config.trust_domain)?;
        // The log's verifier key beside the development CA, where `verify-receipt` looks.
        let vkey = dir.join("log.vkey");
        tidemark::files::replace(&vkey, format!("{}\n", server.log_verifier_key()).as_bytes())
            .with_context(|| format!("cannot write {}", vkey.display()))?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Listen for signals before saying where we listen: a SIGTERM right after the line
    // below stops the server cleanly.
    let shutdown = shutdown_signal()?;
    tracing::info!(%addr, trust_domain = %config.trust_domain, store = %config.store.path.display(), "serving");
    warn_if_little_room(&config.store.path);
    print_hint(&args, &config, addr);

    server.run(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Refuses, before a development PKI is made, a store path that cannot be one: under a
/// file, or anything `Store::check_path` refuses (a directory, a link to nothing, a FIFO
/// or device, a file that is no store).
fn store_can_go(store: &Path) -> anyhow::Result<()> {
    let store_dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    tidemark::files::can_make_dir(store_dir)
        .with_context(|| format!("cannot keep the store in {}", store_dir.display()))?;
    Store::check_path(store)?;
    Ok(())
}

/// Says where the server listens, on standard output. A hint for the person at the
/// terminal: a closed or full stdout does not stop the server (the log on stderr says
/// where it listens, too).
fn print_hint(args: &ServeArgs, config: &Config, addr: std::net::SocketAddr) {
    // The development PKI's profiles are named only where there is one. Among JSON
    // lines, a JSON line too.
    // Where a client on this machine reaches it: not 0.0.0.0 or [::] (no certificate
    // names those), but the loopback address of the same family.
    let reach = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        std::net::SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    let _ = if logs_json(args) {
        outln!(
            "{}",
            serde_json::json!({ "message": "listening", "endpoint": format!("https://{reach}") })
        )
    } else if args.config.is_none() {
        let profile = config
            .tls
            .ca
            .parent()
            .map_or_else(|| PathBuf::from("aus-node"), |dir| dir.join("aus-node"));
        outln!(
            "tidemark listening on https://{addr} — try: tidemark whoami --endpoint https://{reach} --as {}",
            profile.display()
        )
    } else {
        outln!(
            "tidemark listening on https://{addr} — try: tidemark whoami --endpoint https://{reach} --as <your profile>"
        )
    };
}

/// Whether the metrics address was asked for: by `--metrics-listen`, or by `[metrics]
/// listen` in the configuration file (a file that leaves it out takes the default).
fn metrics_asked(args: &ServeArgs) -> bool {
    args.metrics_listen.is_some()
        || args.config.as_deref().is_some_and(|path| {
            tidemark::files::read_text(path)
                .ok()
                .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
                .is_some_and(|file| file.get("metrics").and_then(|m| m.get("listen")).is_some())
        })
}

/// The metrics endpoint's listener, bound before anything is written (`None`: no
/// metrics endpoint). An address asked for (`asked`: by `--metrics-listen` or a config
/// file) that is busy stops the server, as a busy `--listen` does; the embedded default
/// (`127.0.0.1:9464`) busy — a second development server on this machine — is said, and
/// the server runs without metrics.
fn bind_metrics(config: &Config, asked: bool) -> anyhow::Result<Option<std::net::TcpListener>> {
    let listen = config.metrics.listen.as_str();
    if listen.is_empty() {
        return Ok(None);
    }
    match std::net::TcpListener::bind(listen) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if asked => anyhow::bail!(
            "cannot listen for metrics on {listen}: {e}; give --metrics-listen (or [metrics] \
             listen) a free address, or \"\" for no metrics endpoint"
        ),
        Err(e) => {
            tracing::warn!(
                listen = %listen,
                error = %e,
                "the default metrics address is busy (another server?): running without \
                 metrics; give --metrics-listen a free address (port 0 picks one) to have them"
            );
            Ok(None)
        }
    }
}

/// The least free space on the store's file system the server starts without a warning:
/// a write that finds none stops it (health NOT_SERVING, then exit), and under a
/// supervisor that restarts it, each start would look healthy until its first write.
const LOW_ROOM: u64 = 64 << 20;

/// Warns when the store's file system has less than [`LOW_ROOM`] free.
fn warn_if_little_room(store: &Path) {
    let dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(fs) = rustix::fs::statvfs(dir) {
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if free < LOW_ROOM {
            tracing::warn!(
                dir = %dir.display(),
                free_mib = free >> 20,
                "the store's file system has little room: a write that finds none stops the \
                 server; free some space"
            );
        }
    }
}

/// Enrols the sample states and registers their development signing keys
/// (`<state>-signing.pub.pem` beside the development CA) into a store that holds no
/// signing key of that state yet: a store that does (restored from a backup, or made
/// with other certificates) keeps the keys it has, and a development key it lacks is
/// only named.
fn register_dev_signing_keys(store: &Store, dir: &Path) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for state in pki::SAMPLE_STATES {
        let path = dir.join(format!("{}-signing.pub.pem", state.to_ascii_lowercase()));
        if !path.exists() {
            continue;
        }
        let public = PublicKey::from_file(&path)?;
        if store.signing_key(public.key_id())?.is_some() {
            continue;
        }
        if !store.signing_keys(Some(state))?.is_empty() {
            tracing::warn!(
                state,
                key_id = public.key_id(),
                file = %path.display(),
                "this store holds other signing keys of the state, so its development key is \
                 not registered; if it should be: tidemark admin register-key"
            );
            continue;
        }
        if store.state(state)?.is_none() {
            store.put_state(&StateRecord {
                state: state.to_owned(),
                suspended: false,
                enrolled_at: now,
                changed_at: now,
                revision: 0,
            })?;
        }
        store.register_signing_key(&KeyRecord::new(
            public.key_id(),
            state,
            public.raw(),
            now,
            0,
            now,
        ))?;
        tracing::info!(
            state,
            key_id = public.key_id(),
            "registered development signing key"
        );
    }
    Ok(())
}

/// Records the development PKI's client certificates (`<profile>.pem` beside the
/// development CA) as issued through this server, each once: `admin certs`, the expiry
/// warnings and `admin revoke` know them like the certificates `admin issue` makes.
fn record_dev_certificates(store: &Store, dir: &Path, trust_domain: &str) -> anyhow::Result<()> {
    for principal in pki::sample_principals(trust_domain)? {
        let path = dir.join(format!("{}.pem", pki::profile_stem(&principal.role())));
        let Ok(pem) = std::fs::read_to_string(&path) else {
            continue;
        };
        match store.record_development_certificate(&pem, trust_domain) {
            Ok(true) => tracing::info!(file = %path.display(), "recorded development certificate"),
            Ok(false) => {}
            // Replaced by a certificate of another trust domain, say: not ours to record.
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "development certificate not recorded");
            }
        }
    }
    Ok(())
}

/// The configuration the flags and the file make, checked; and whether the default
/// metrics address, not asked for (`metrics_asked`), was turned off because `--listen`
/// or the file's `listen` takes its port.
fn effective_config(args: &ServeArgs, metrics_asked: bool) -> anyhow::Result<(Config, bool)> {
    let mut config = match &args.config {
        // Checked once the flags are applied: a flag may replace a value the file has wrong.
        Some(path) => {
            let mut config = Config::read(path)?;
            // Read again at each reload of the TLS files.
            config.tls.partner_cas_from = Some(std::path::absolute(path)?);
            config
        }
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen) = &args.metrics_listen {
        config.metrics.listen.clone_from(listen);
    }
    if let Some(dir) = &args.certs {
        config.tls = TlsConfig::in_dir(dir);
        config.signing = SigningConfig::in_dir(dir);
    }
    if let Some(dir) = &args.data {
        config.store.path = StoreConfig::in_dir(dir).path;
    }
    config.trust_files_lost = args.trust_files_lost;
    let metrics_on_listen = !metrics_asked
        && tidemark::config::socket_address(&config.metrics.listen)
            .is_ok_and(|metrics| tidemark::config::overlap(metrics, config.listen));
    if metrics_on_listen {
        config.metrics.listen.clear();
    }
    config.check()?;
    Ok((config, metrics_on_listen))
}

/// Refuses a configuration file whose certificate files are not where it says, naming
/// the setting: a relative path is taken from the working directory, not from the
/// configuration file's, which is easy to miss when the server is started from
/// elsewhere.
fn files_named(config: &Config, config_path: &std::path::Path) -> anyhow::Result<()> {
    for (setting, file) in [
        ("tls.ca", &config.tls.ca),
        ("tls.cert", &config.tls.cert),
        ("tls.key", &config.tls.key),
    ] {
        if file.exists() {
            continue;
        }
        let mut said = format!(
            "{setting} in {} names {}, which does not exist",
            config_path.display(),
            file.display()
        );
        if file.is_relative() {
            let cwd = std::env::current_dir().unwrap_or_default();
            let beside = config_path
                .parent()
                .map(|dir| dir.join(file))
                .filter(|p| p.exists())
                .map(|p| {
                    format!(
                        "; there is one at {}: give absolute paths, or start the server there",
                        p.display()
                    )
                })
                .unwrap_or_default();
            said = format!(
                "{said} (a relative path is taken from the working directory, {}, not from \
                 the configuration file's{beside})",
                cwd.display()
            );
        }
        anyhow::bail!(said);
    }
    Ok(())
}

/// Standard error for the server's log, whose writes cannot fail: a log line that cannot
/// be written (a full disk, a closed pipe) is lost, and the server goes on serving.
/// tracing-subscriber reports a failed write on stderr itself, which panics when stderr
/// is what failed.
struct LogOutput;

impl std::io::Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Logs to stderr: text with colours only when stderr is a terminal (never escape codes
/// in a file or a journal), or one JSON object per line with the stable fields
/// `timestamp` (RFC 3339, UTC), `level`, `target`, `message` and the event's own fields
/// at the top level.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogOutput)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // Events inside a span carry it as `span` (a TLS handshake's: its `peer`).
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Listens for SIGINT and SIGTERM from now on; the future resolves on the first.
fn shutdown_signal() -> anyhow::Result<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }))
    }
    #[cfg(not(unix))]
    Ok(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}

#[cfg(test)]
mod tests {
    use tidemark::{KeyRecord, Store, config::StoreConfig, pki};

    use super::{record_dev_certificates, register_dev_signing_keys};

    /// The development PKI's client certificates are recorded as issued, once each, so
    /// that `admin certs`, the expiry warnings and `admin revoke` know them.
    #[test]
    fn development_certificates_are_recorded_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let certs = dir.path().join("certs");
        pki::init_dev_pki(&certs, "tidemark.test", false).unwrap();
        let store = Store::open(&StoreConfig::in_dir(&dir.path().join("data"))).unwrap();
        record_dev_certificates(&store, &certs, "tidemark.test").unwrap();
        let issued = store.issued_certificates().unwrap();
        let principals = pki::sample_principals("tidemark.test").unwrap();
        assert_eq!(issued.len(), principals.len());
        for principal in &principals {
            assert!(
                issued.iter().any(|c| c.spiffe_id == principal.spiffe_id()
                    && !c.issuer.is_empty()
                    && c.key_fingerprint.len() == 32),
                "{principal:?}: {issued:?}"
            );
        }
        record_dev_certificates(&store, &certs, "tidemark.test").unwrap();
        assert_eq!(store.issued_certificates().unwrap(), issued);
    }

    /// Development keys go into a store only for states it holds no key of: a store
    /// restored from another exchange's backup keeps its own keys.
    #[test]
    fn development_keys_join_only_states_without_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
        let (other, _) = pki::write_signing_key(&dir.path().join("other")).unwrap();
        let public = other.public_key();
        store
            .register_signing_key(&KeyRecord::new(
                public.key_id(),
                "AUS",
                public.raw(),
                1,
                0,
                1,
            ))
            .unwrap();
        let (aus, _) = pki::write_signing_key(&dir.path().join("aus-signing")).unwrap();
        let (idn, _) = pki::write_signing_key(&dir.path().join("idn-signing")).unwrap();
        register_dev_signing_keys(&store, dir.path()).unwrap();
        let aus_id = aus.public_key().key_id().to_owned();
        let idn_id = idn.public_key().key_id().to_owned();
        assert!(store.signing_key(&aus_id).unwrap().is_none());
        assert!(store.signing_key(&idn_id).unwrap().is_some());
        // Again: nothing changes.
        register_dev_signing_keys(&store, dir.path()).unwrap();
        assert_eq!(store.signing_keys(Some("AUS")).unwrap().len(), 1);
        assert_eq!(store.signing_keys(Some("IDN")).unwrap().len(), 1);
    }
}
