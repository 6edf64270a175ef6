//! Shared benchmark set-up: a CA and server files in a temp dir, and a node identity.
#![allow(dead_code)] // each bench uses a different subset

use std::{sync::Arc, time::Duration};

use prost::Message;
use rustls::pki_types::pem::PemObject;
use tempfile::TempDir;
use tidemark::{
    KeyRecord, Store,
    client::ClientIdentity,
    config::{Config, SigningConfig, StoreConfig, TlsConfig},
    country::CountryCode,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    identity::{PeerIdentity, Principal, Role},
    internals,
    pki::{self, CertificateAuthority, Validity},
    sample,
    signing::SigningKey,
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
            // The CA kept offline (said as `ca_key = ""` is): no CRL to sign.
            tls: TlsConfig {
                ca_key: None,
                ..TlsConfig::in_dir(dir.path())
            },
            signing: SigningConfig::in_dir(dir.path()),
            store: StoreConfig::in_dir(&dir.path().join("data")),
            metrics: tidemark::config::MetricsConfig {
                listen: String::new(),
            },
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

/// The reporting states of the synthetic data.
pub const STATES: [&str; 20] = [
    "AUS", "IDN", "THA", "MYS", "PHL", "VNM", "KHM", "MMR", "LKA", "BGD", "IND", "PAK", "AFG",
    "IRN", "NZL", "PNG", "TLS", "SGP", "BRN", "LAO",
];

/// The value of `--name N` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Registers `key` as a signing key of `state`, valid from a minute before `now`.
pub fn register_key(store: &Store, state: &str, key: &SigningKey, now: i64) {
    let p = key.public_key();
    store
        .register_signing_key(&KeyRecord::new(
            p.key_id(),
            state,
            p.raw(),
            now - 60,
            0,
            now,
        ))
        .unwrap();
}

/// Each of the synthetic [`STATES`] with a signing key registered in `store` (valid from
/// a minute ago) and the identity of a node of it (certified by a throwaway CA).
pub fn nodes_of_states(store: &Store) -> Vec<(&'static str, SigningKey, PeerIdentity)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ca = CertificateAuthority::generate("load CA", Validity::days_from_now(1)).unwrap();
    STATES
        .into_iter()
        .map(|state| {
            let (key, _) = SigningKey::generate().unwrap();
            register_key(store, state, &key, now);
            let principal = Principal::new(
                TRUST_DOMAIN,
                Role::Node(CountryCode::parse(state).unwrap()),
                "n",
            )
            .unwrap();
            let issued = ca
                .issue_client(&principal, Validity::days_from_now(1))
                .unwrap();
            let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
                .unwrap();
            let peer = PeerIdentity::from_certificate(&der, TRUST_DOMAIN).unwrap();
            (state, key, peer)
        })
        .collect()
}

/// Starts `store`'s writer, signing checkpoints with `config`'s receipt key, batches of
/// up to 1,024.
pub fn start_writer(
    config: &Config,
    store: &Store,
) -> (internals::Writer, internals::WriterThread) {
    let receipt_key = SigningKey::from_file(&config.signing.receipt_key).unwrap();
    let log = tidemark::tlog::LogSigner::from_key(&config.log_origin(), &receipt_key).unwrap();
    store
        .start_writer(
            tidemark::clock::Clock::system(),
            1024,
            Arc::new(log),
            Arc::default(),
        )
        .unwrap()
}

/// Loads `reports` synthetic reports through the real submission path (verify,
/// validate, group commit), several submitters at once.
pub async fn load(config: &Config, reports: usize) {
    let store = Store::open(&config.store).unwrap();
    let (keys, nodes): (Vec<_>, Vec<_>) = nodes_of_states(&store)
        .into_iter()
        .map(|(_, key, peer)| (Arc::new(key), Arc::new(peer)))
        .unzip();
    let nodes = Arc::new(nodes);
    let (writer, thread) = start_writer(config, &store);
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, writer, keys, nodes) =
            (store.clone(), writer.clone(), keys.clone(), nodes.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = sample::Rng::new(sample::seed_for(7, &w.to_string()));
            let mut pending = Vec::new();
            for i in (w..reports).step_by(workers) {
                let s = i % STATES.len();
                let state = STATES[s];
                let report = sample::report(&mut rng, state);
                let env = envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &keys[s]);
                let new = internals::verify_submission(
                    Some(&env),
                    &nodes[s],
                    &store,
                    time::OffsetDateTime::now_utc(),
                )
                .unwrap();
                let writer = writer.clone();
                pending.push(tokio::spawn(
                    async move { writer.append(new).await.unwrap() },
                ));
                if pending.len() >= 256 {
                    for p in pending.drain(..) {
                        p.await.unwrap();
                    }
                }
            }
            for p in pending {
                p.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(writer);
    thread.stop().await;
}
