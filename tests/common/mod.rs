//! Shared test helpers: a PKI made in a temp dir, and a real server on 127.0.0.1:0.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;

use tempfile::TempDir;
use tidemark::{
    client::{self, ClientIdentity},
    config::{Config, StoreConfig, TlsConfig},
    country::CountryCode,
    identity::{Principal, Role},
    pb,
    pki::{CertificateAuthority, IssuedCert, Validity},
    server::Server,
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
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
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
            store: StoreConfig::in_dir(data.path()),
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
    task: Option<JoinHandle<()>>,
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
        let mut config = pki.config(&data);
        adjust(&mut config);
        let server = Server::build(config).expect("server builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
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
            task.await.expect("server task");
        }
        let data = TempDir::new().expect("temp dir");
        std::mem::replace(&mut self.data, data)
    }
}
