//! Shared benchmark set-up: a CA and server files in a temp dir, and a node identity.
#![allow(dead_code)] // each bench uses a different subset

use tempfile::TempDir;
use tidemark::{
    client::ClientIdentity,
    config::{Config, SigningConfig, StoreConfig, TlsConfig},
    identity::{Principal, Role},
    pki::{self, CertificateAuthority, Validity},
};

pub const TRUST_DOMAIN: &str = "bench.test";

/// A CA, server certificate and receipt key in a temp dir, and a config using them.
pub struct BenchPki {
    pub dir: TempDir,
    pub ca: CertificateAuthority,
    pub config: Config,
}

impl BenchPki {
    pub fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let ca = CertificateAuthority::generate("bench CA", Validity::days_from_now(1)).unwrap();
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(1))
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        pki::write_signing_key(&dir.path().join("receipt")).unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            trust_domain: TRUST_DOMAIN.to_owned(),
            tls: TlsConfig::in_dir(dir.path()),
            signing: SigningConfig::in_dir(dir.path()),
            store: StoreConfig::in_dir(&dir.path().join("data")),
            ..Config::default()
        };
        Self { dir, ca, config }
    }

    /// A client identity for `role` named `name`.
    pub fn client(&self, role: Role, name: &str) -> ClientIdentity {
        let principal = Principal::new(TRUST_DOMAIN, role, name).unwrap();
        let issued = self
            .ca
            .issue_client(&principal, Validity::days_from_now(1))
            .unwrap();
        ClientIdentity::from_pem(
            issued.cert_pem,
            issued.key_pem,
            self.ca.cert_pem().to_owned(),
        )
    }
}
