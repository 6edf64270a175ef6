//! Shared test helpers: a PKI made in a temp dir, and a real server on 127.0.0.1:0.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;

pub mod cli;

use tempfile::TempDir;
use tidemark::{
    client::{self, ClientIdentity},
    clock::Clock,
    config::{Config, SigningConfig, StoreConfig, TlsConfig},
    country::CountryCode,
    identity::{Principal, Role},
    pb,
    pki::{CertificateAuthority, IssuedCert, Validity},
    server::Server,
    signing::{PublicKey, SigningKey},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub const TRUST_DOMAIN: &str = "tidemark.test";

/// A CA and server certificate written into a temp dir.
pub struct TestPki {
    pub dir: TempDir,
    pub ca: CertificateAuthority,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ca =
            CertificateAuthority::generate("test CA", Validity::days_from_now(30)).expect("CA");
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(30))
            .expect("server cert");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        tidemark::pki::write_private(&dir.path().join("ca.key"), &ca.key_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        tidemark::pki::write_signing_key(&dir.path().join("receipt")).expect("receipt key");
        Self { dir, ca }
    }

    /// A client identity for a well-formed principal.
    pub fn client(&self, role: Role, name: &str) -> ClientIdentity {
        let principal = Principal::new(TRUST_DOMAIN, role, name).expect("principal");
        let issued = self
            .ca
            .issue_client(&principal, Validity::days_from_now(30))
            .expect("client cert");
        self.identity(&issued)
    }

    /// A client identity whose certificate carries exactly these URI SANs.
    pub fn client_with_uris(&self, uris: &[&str], validity: Validity) -> ClientIdentity {
        let uris: Vec<String> = uris.iter().map(|u| (*u).to_owned()).collect();
        let issued = self
            .ca
            .issue_client_with_uris(&uris, validity)
            .expect("client cert");
        self.identity(&issued)
    }

    pub fn identity(&self, issued: &IssuedCert) -> ClientIdentity {
        ClientIdentity::from_pem(
            issued.cert_pem.clone(),
            issued.key_pem.clone(),
            self.ca.cert_pem().to_owned(),
        )
    }

    pub fn config(&self, data: &TempDir) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            trust_domain: TRUST_DOMAIN.to_owned(),
            tls: TlsConfig::in_dir(self.dir.path()),
            signing: SigningConfig::in_dir(self.dir.path()),
            store: StoreConfig::in_dir(data.path()),
            // No metrics endpoint unless a test asks for one (see `start_with_metrics`).
            metrics: tidemark::config::MetricsConfig {
                listen: String::new(),
            },
            // Tests read far more often than a state's system would; the budget has
            // tests of its own (`hostile_load`).
            limits: tidemark::config::Limits {
                reads_per_minute_per_principal: 10_000_000,
                lookups_per_minute_per_principal: 10_000_000,
                ..Default::default()
            },
            ..Config::default()
        }
    }
}

pub fn state(code: &str) -> CountryCode {
    CountryCode::parse(code).expect("state code")
}

/// A real server on 127.0.0.1:0 with its store in a temp dir.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tidemark::server::ServerError>>>,
}

impl TestServer {
    pub async fn start(pki: &TestPki) -> Self {
        Self::start_with(pki, TempDir::new().expect("temp dir"), |_| {}).await
    }

    /// Starts a server on `data`, letting the test adjust the config first.
    pub async fn start_with(
        pki: &TestPki,
        data: TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with_clock(pki, data, adjust, Clock::system()).await
    }

    /// A server with its metrics endpoint on a port of its own: the server and the
    /// endpoint's address.
    pub async fn start_with_metrics(pki: &TestPki) -> (Self, SocketAddr) {
        Self::start_with_metrics_and(pki, |_| {}).await
    }

    /// As [`Self::start_with_metrics`], letting the test adjust the config first.
    pub async fn start_with_metrics_and(
        pki: &TestPki,
        adjust: impl FnOnce(&mut Config),
    ) -> (Self, SocketAddr) {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = metrics.local_addr().unwrap();
        let data = TempDir::new().expect("temp dir");
        let mut config = pki.config(&data);
        adjust(&mut config);
        let server = Server::build(config)
            .expect("server builds")
            .with_metrics_listener(metrics);
        (Self::run(server, data).await, addr)
    }

    /// As [`Self::start_with`], on a clock the test controls.
    pub async fn start_with_clock(
        pki: &TestPki,
        data: TempDir,
        adjust: impl FnOnce(&mut Config),
        clock: Clock,
    ) -> Self {
        let mut config = pki.config(&data);
        adjust(&mut config);
        let server = Server::build(config)
            .expect("server builds")
            .with_clock(clock);
        Self::run(server, data).await
    }

    /// Runs `server` (built by the test on `data`) on 127.0.0.1:0 until the test stops it.
    pub async fn run(server: Server, data: TempDir) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
        });
        Self {
            addr,
            data,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub async fn channel(&self, identity: &ClientIdentity) -> Channel {
        client::connect(&self.endpoint(), identity)
            .await
            .expect("connect")
    }

    pub async fn exchange(
        &self,
        identity: &ClientIdentity,
    ) -> pb::exchange_client::ExchangeClient<Channel> {
        pb::exchange_client::ExchangeClient::new(self.channel(identity).await)
    }

    /// Stops the server and waits until it has finished; returns the data dir.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("the server ran until it was stopped");
        }
        let data = TempDir::new().expect("temp dir");
        std::mem::replace(&mut self.data, data)
    }
}

/// The operator of a test PKI.
pub fn operator(pki: &TestPki) -> ClientIdentity {
    pki.client(Role::Operator, "ops-1")
}

impl TestServer {
    pub async fn admin(&self, identity: &ClientIdentity) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.channel(identity).await)
    }

    /// Makes a signing key for `state` and registers it through the Admin RPC.
    pub async fn register_new_key(&self, pki: &TestPki, state: &str) -> SigningKey {
        let (key, _) = SigningKey::generate().expect("signing key");
        self.register_key(pki, state, &key, 0, 0).await;
        key
    }

    pub async fn register_key(
        &self,
        pki: &TestPki,
        state: &str,
        key: &SigningKey,
        valid_from_unix: i64,
        valid_until_unix: i64,
    ) {
        self.admin(&operator(pki))
            .await
            .register_signing_key(pb::RegisterSigningKeyRequest {
                state: state.to_owned(),
                public_key_pem: key.public_key().to_spki_pem(),
                valid_from_unix,
                valid_until_unix,
            })
            .await
            .expect("register signing key");
    }

    /// The server's receipt public key, from its ServerKeys RPC.
    pub async fn receipt_key(&self, identity: &ClientIdentity) -> PublicKey {
        let keys = self
            .exchange(identity)
            .await
            .server_keys(pb::ServerKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        PublicKey::from_spki_pem(&keys.receipt_public_key_pem).unwrap()
    }
}

/// A node identity for `state`.
pub fn node(pki: &TestPki, state_code: &str) -> ClientIdentity {
    pki.client(
        Role::Node(state(state_code)),
        &format!("{}-1", state_code.to_lowercase()),
    )
}

/// A valid synthetic report of `state`, different for each seed.
pub fn sample_report(state: &str, seed: u64) -> pb::Report {
    let mut rng = tidemark::sample::Rng::new(tidemark::sample::seed_for(seed, state));
    tidemark::sample::report(&mut rng, state)
}

/// The next version of `original` with entirely different content of its category (a
/// report's versions keep their category): the first sample of its state from `seed` on
/// that is of it.
pub fn sample_amendment(original: &pb::Report, seed: u64) -> pb::Report {
    let category = |r: &pb::Report| r.details.as_ref().map(std::mem::discriminant);
    (seed..seed + 10_000)
        .map(|seed| sample_report(&original.reporting_state, seed))
        .find(|r| category(r) == category(original))
        .map(|amended| pb::Report {
            report_id: original.report_id.clone(),
            version: original.version + 1,
            ..amended
        })
        .expect("samples of each category")
}

pub fn sign(report: &pb::Report, key: &SigningKey) -> pb::Envelope {
    tidemark::envelope::sign(
        tidemark::envelope::REPORT_PAYLOAD_TYPE,
        prost::Message::encode_to_vec(report),
        key,
    )
}

/// Submits `envelope` asking for a receipt signed by the server, too.
pub async fn submit_signed(
    exchange: &mut pb::exchange_client::ExchangeClient<Channel>,
    envelope: pb::Envelope,
) -> Result<pb::SubmitResponse, tonic::Status> {
    submit_asking(exchange, envelope, true).await
}

pub async fn submit(
    exchange: &mut pb::exchange_client::ExchangeClient<Channel>,
    envelope: pb::Envelope,
) -> Result<pb::SubmitResponse, tonic::Status> {
    submit_asking(exchange, envelope, false).await
}

/// A Submit or Import request for `envelope` (no signed receipt asked for).
pub fn submit_request(envelope: pb::Envelope) -> pb::SubmitRequest {
    pb::SubmitRequest {
        envelope: Some(envelope),
        signed_receipt: false,
    }
}

async fn submit_asking(
    exchange: &mut pb::exchange_client::ExchangeClient<Channel>,
    envelope: pb::Envelope,
    signed_receipt: bool,
) -> Result<pb::SubmitResponse, tonic::Status> {
    exchange
        .submit(pb::SubmitRequest {
            envelope: Some(envelope),
            signed_receipt,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A sample report of `state` and the wanted category, with the given scope.
pub fn report(
    state_code: &str,
    seed: u64,
    maritime: bool,
    scope: pb::SharingScope,
    listed: &[&str],
) -> pb::Report {
    let mut seed = seed * 1000;
    loop {
        let mut r = sample_report(state_code, seed);
        seed += 1;
        if matches!(r.details, Some(pb::report::Details::Maritime(_))) == maritime {
            r.sharing = Some(pb::Sharing {
                scope: scope as i32,
                states: listed.iter().map(|s| (*s).to_owned()).collect(),
            });
            return r;
        }
    }
}

/// A server with signing keys registered for AUS, IDN and THA.
pub struct World {
    pub pki: TestPki,
    pub server: TestServer,
    keys: Vec<(String, SigningKey)>,
}

impl World {
    pub async fn new(clock: Clock) -> Self {
        let pki = TestPki::new();
        let server =
            TestServer::start_with_clock(&pki, tempfile::TempDir::new().unwrap(), |_| {}, clock)
                .await;
        Self::on(pki, server).await
    }

    /// The world of a server started by the caller.
    pub async fn on(pki: TestPki, server: TestServer) -> Self {
        let mut keys = Vec::new();
        for s in ["AUS", "IDN", "THA"] {
            keys.push((s.to_owned(), server.register_new_key(&pki, s).await));
        }
        Self { pki, server, keys }
    }

    pub fn key(&self, s: &str) -> &SigningKey {
        &self.keys.iter().find(|(k, _)| k == s).unwrap().1
    }

    pub async fn exchange(&self, s: &str) -> pb::exchange_client::ExchangeClient<Channel> {
        self.server.exchange(&node(&self.pki, s)).await
    }

    pub async fn submit(&self, r: &pb::Report) -> pb::Receipt {
        let mut ex = self.exchange(&r.reporting_state).await;
        let response = submit(&mut ex, sign(r, self.key(&r.reporting_state)))
            .await
            .unwrap();
        response.accepted.unwrap()
    }

    /// `state`'s node reads every smuggling incident it may see (one query, drained):
    /// one access to each owner's reports.
    pub async fn read_all_smuggling(&self, state: &str) {
        let mut results = self
            .exchange(state)
            .await
            .query(pb::QueryRequest {
                category: pb::Category::SmugglingIncident as i32,
                ..pb::QueryRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        while results.message().await.unwrap().is_some() {}
    }
}

/// Writes `<dir>/<state>-node.{pem,key}`, `ca.pem` and `<state>-signing.key` so that the
/// command line's `--as <dir>/<state>-node` works, and registers the signing key.
pub async fn cli_profile(
    pki: &TestPki,
    server: &TestServer,
    dir: &std::path::Path,
    state: &str,
) -> String {
    let identity = node(pki, state);
    let stem = format!("{}-node", state.to_lowercase());
    std::fs::write(dir.join(format!("{stem}.pem")), identity.cert_pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), identity.key_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), identity.ca_pem()).unwrap();
    let signing_stem = dir.join(format!("{}-signing", state.to_lowercase()));
    let (key, _) = tidemark::pki::write_signing_key(&signing_stem).unwrap();
    server.register_key(pki, state, &key, 0, 0).await;
    dir.join(stem).display().to_string()
}

// Analysts and aggregates.

/// The regional analyst.
pub fn regional(pki: &TestPki) -> ClientIdentity {
    pki.client(Role::RegionalAnalyst, "regional-1")
}

/// `code`'s analyst.
pub fn analyst(pki: &TestPki, code: &str) -> ClientIdentity {
    pki.client(
        Role::StateAnalyst(state(code)),
        &format!("{}-analyst", code.to_lowercase()),
    )
}

/// One Aggregate call.
pub async fn aggregate(
    server: &TestServer,
    who: &ClientIdentity,
    request: pb::AggregateRequest,
) -> Result<pb::AggregateResponse, tonic::Status> {
    pb::analytics_client::AnalyticsClient::new(server.channel(who).await)
        .aggregate(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends envelopes through one Import stream; all must be accepted.
pub async fn import(server: &TestServer, pki: &TestPki, code: &str, envelopes: Vec<pb::Envelope>) {
    let n = envelopes.len() as u64;
    let requests: Vec<pb::SubmitRequest> = envelopes
        .into_iter()
        .map(|e| pb::SubmitRequest {
            envelope: Some(e),
            ..Default::default()
        })
        .collect();
    let summary = server
        .exchange(&node(pki, code))
        .await
        .import(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, n, "{:?}", summary.rejections.first());
}

/// A signed retraction of `report`, creating `version`.
pub fn retraction(report: &pb::Report, version: u32, key: &SigningKey) -> pb::Envelope {
    let retraction = pb::Retraction {
        report_id: report.report_id.clone(),
        reporting_state: report.reporting_state.clone(),
        version,
        reason: "entered twice".into(),
    };
    tidemark::envelope::sign(
        tidemark::envelope::RETRACTION_PAYLOAD_TYPE,
        prost::Message::encode_to_vec(&retraction),
        key,
    )
}

/// Opens the store in `data` once a stopped server has let go of it (its connection
/// tasks release the file a moment after the server stops).
pub async fn open_store_after_stop(data: &TempDir) -> tidemark::Store {
    let config = StoreConfig::in_dir(data.path());
    let mut store = tidemark::Store::open(&config);
    for _ in 0..50 {
        if store.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store = tidemark::Store::open(&config);
    }
    store.expect("the store opens once the server has stopped")
}

/// The number of the audit record a refusal (PERMISSION_DENIED) names in its
/// `tidemark-audit` metadata.
pub fn audit_number(refused: &tonic::Status) -> u64 {
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    named_audit_number(refused)
}

/// The number of the audit record any refusal names in its `tidemark-audit` metadata.
pub fn named_audit_number(refused: &tonic::Status) -> u64 {
    refused
        .metadata()
        .get("tidemark-audit")
        .unwrap_or_else(|| panic!("no audit record named: {refused:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The operator's audit log from its first record (up to 10,000).
pub async fn audit_log(admin: &mut pb::admin_client::AdminClient<Channel>) -> Vec<pb::AuditEntry> {
    admin
        .audit_log(pb::AuditLogRequest {
            after: 0,
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// Audit record `number`, as the operator's audit log shows it.
pub async fn audit_record(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    number: u64,
) -> pb::AuditEntry {
    let record = admin
        .audit_log(pb::AuditLogRequest {
            after: number - 1,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .remove(0);
    assert_eq!(record.number, number);
    record
}

/// A raw TLS connection to `server` as `identity`, trusting the CA certificates in
/// `roots_pem`, with `provider`'s suites and `versions`, offering `alpn`.
pub async fn raw_tls(
    server: &TestServer,
    (roots_pem, identity): (&str, &ClientIdentity),
    (provider, versions): (
        rustls::crypto::CryptoProvider,
        &[&'static rustls::SupportedProtocolVersion],
    ),
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = vec![CertificateDer::from_pem_slice(identity.cert_pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem().as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A channel of `identity` whose HTTP/2 receive windows are 16 KiB: a caller that stops
/// reading holds up the server after a few items, not after megabytes.
pub async fn small_window_channel(server: &TestServer, identity: &ClientIdentity) -> Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(identity.ca_pem()))
        .identity(tonic::transport::Identity::from_pem(
            identity.cert_pem(),
            identity.key_pem(),
        ));
    tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap()
}

/// A health Watch of the Exchange service on `channel`: a long-lived call that tests of
/// calls in progress hold open.
pub async fn exchange_health_watch(
    channel: Channel,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "tidemark.v1.Exchange".into(),
        })
        .await
        .expect("a health watch")
        .into_inner()
}

/// Reads a health watch until it ends, which must be with UNAUTHENTICATED (its caller's
/// rights lapsed) within 10 s of the last item.
pub async fn ends_unauthenticated(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) {
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .expect("the watch ends")
        {
            Ok(Some(_)) => {}
            ended => break ended,
        }
    };
    let status = ended.expect_err("the watch ends with the reason");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

/// The log's note verifier key (`<origin>+<hex id>+<base64>`), as the server serves it.
pub async fn log_key(log: &mut pb::transparency_client::TransparencyClient<Channel>) -> String {
    log.get_verifier_key(pb::GetVerifierKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .verifier_key
}

/// The number of leaves in the log's newest checkpoint.
pub async fn log_size(log: &mut pb::transparency_client::TransparencyClient<Channel>) -> u64 {
    log.get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .tree_size
}

/// Every entry of the log, in order, as text; each must be a well-formed `tidemark.v1`
/// entry (the one encoding verifiers read).
pub async fn log_entries(
    log: &mut pb::transparency_client::TransparencyClient<Channel>,
) -> Vec<String> {
    let size = log_size(log).await;
    let mut entries = Vec::new();
    while (entries.len() as u64) < size {
        let page = log
            .get_entries(pb::GetEntriesRequest {
                start: entries.len() as u64,
                end: size,
            })
            .await
            .unwrap()
            .into_inner();
        for entry in page.entries {
            if let Err(e) = tidemark::tlog::entry::Entry::decode(&entry) {
                panic!(
                    "leaf {} is not a well-formed entry: {e}\n{}",
                    entries.len(),
                    String::from_utf8_lossy(&entry)
                );
            }
            entries.push(String::from_utf8(entry).unwrap());
        }
    }
    entries
}
