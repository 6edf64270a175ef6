//! The client side: a certificate identity, a TLS channel to the server, and plain
//! explanations of what went wrong.
//!
//! Under TLS 1.3 a server that refuses a client certificate says so with an alert that
//! the client only reads at its first call, where it would otherwise surface as a bare
//! "connection closed"; [`explain`] digs the alert out and names it.

use std::{
    error::Error as StdError,
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// Where `tidemark` clients connect by default.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:50051";

/// A client's certificate, its private key and the CA that the server's certificate
/// must chain to, all PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    cert: String,
    key: String,
    ca: String,
}

impl ClientIdentity {
    /// An identity from PEM texts: certificate (chain), private key, CA bundle.
    pub fn from_pem(cert_pem: String, key_pem: String, ca_pem: String) -> Self {
        Self {
            cert: cert_pem,
            key: key_pem,
            ca: ca_pem,
        }
    }

    /// The client certificate (chain), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert
    }

    /// The client's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key
    }

    /// The CA bundle that the server's certificate must chain to, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca
    }

    /// Loads a profile: `certs/aus-node` means `certs/aus-node.pem`, `certs/aus-node.key`
    /// and `certs/ca.pem` beside them.
    pub fn from_profile(profile: &Path) -> Result<Self, ClientError> {
        let (cert, key, ca) = profile_files(profile);
        Self::from_files(&cert, &key, &ca)
    }

    /// Loads the three PEM files, naming any that cannot be read or does not hold what
    /// it should (a certificate, a private key, a CA certificate).
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, ClientError> {
        let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
        let holds_cert = |text: &str| {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            CertificateDer::pem_slice_iter(text.as_bytes()).any(|c| c.is_ok())
        };
        let holds_key = |text: &str| {
            use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
            PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok()
        };
        let wrong = |path: &Path, what: &'static str| ClientError::Contents {
            path: path.to_owned(),
            what,
        };
        if !holds_cert(&cert_pem) {
            return Err(wrong(
                cert,
                "no certificate: the certificate file (--cert, or the profile's .pem) should hold a CERTIFICATE block and holds none; was the key given instead?",
            ));
        }
        if crate::signing::pem_label(&key_pem) == Some("ENCRYPTED PRIVATE KEY") {
            return Err(wrong(key, crate::signing::ENCRYPTED_KEY));
        }
        if !holds_key(&key_pem) {
            return Err(wrong(
                key,
                "no private key: the key file (--key, or the profile's .key) should hold a PRIVATE KEY block and holds none; was the certificate given instead?",
            ));
        }
        if !holds_cert(&ca_pem) {
            return Err(wrong(
                ca,
                "no certificate: the CA file (--ca, or ca.pem beside the profile) holds the exchange's CA certificate",
            ));
        }
        if !is_pair(&cert_pem, &key_pem) {
            return Err(ClientError::NotAPair {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(Self::from_pem(cert_pem, key_pem, ca_pem))
    }
}

/// Whether the private key is the one the first certificate certifies.
fn is_pair(cert_pem: &str, key_pem: &str) -> bool {
    use rustls::{
        crypto::ring::sign::any_supported_type,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        sign::CertifiedKey,
    };
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        return false;
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    any_supported_type(&key)
        .is_ok_and(|signer| CertifiedKey::new(certs, signer).keys_match().is_ok())
}

/// The certificate, key and CA files of a profile path such as `certs/aus-node`.
pub fn profile_files(profile: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = profile.parent().unwrap_or_else(|| Path::new("."));
    let stem = profile
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
        dir.join("ca.pem"),
    )
}

fn read(path: &Path) -> Result<String, ClientError> {
    crate::files::read_text(path).map_err(|reason| ClientError::Read {
        path: path.to_owned(),
        reason,
    })
}

/// Refuses a CA bundle holding a certificate whose Ed25519 key is of small order
/// ([`crate::tls::weak_key`]): anyone could make server certificates "signed" by it.
fn weak_ca(bundle: &str) -> Result<(), ClientError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for (place, cert) in (1..).zip(CertificateDer::pem_slice_iter(bundle.as_bytes())) {
        if let Some(why) = cert.ok().as_ref().and_then(crate::tls::weak_key) {
            return Err(ClientError::Endpoint(format!(
                "the CA file's certificate {place} has an Ed25519 key that is {why}: anyone \
                 can make certificates \"signed\" by it, so it is not trusted; take it out"
            )));
        }
    }
    Ok(())
}

/// Opens a TLS channel to `endpoint` (which must be `https://`) as `identity`.
pub async fn connect(endpoint: &str, identity: &ClientIdentity) -> Result<Channel, ClientError> {
    if !endpoint.starts_with("https://") {
        return Err(ClientError::Endpoint(format!(
            "{endpoint:?} must start with https:// (Tidemark only speaks TLS)"
        )));
    }
    weak_ca(&identity.ca)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca))
        .identity(Identity::from_pem(&identity.cert, &identity.key));
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| ClientError::Endpoint(format!("{endpoint:?}: {e}")))?
        .tls_config(tls)
        .map_err(|e| ClientError::Endpoint(format!("TLS settings: {}", chain(&e))))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| match tls_refusal(&e) {
            Some(reason) => ClientError::Refused(reason),
            None => ClientError::Connect {
                endpoint: endpoint.to_owned(),
                reason: chain(&e),
            },
        })?;
    Ok(channel)
}

/// Checks that the server accepts this identity, with one bare TLS connection that
/// waits for the server's first bytes: under TLS 1.3 a refused client certificate is
/// only announced then, and a gRPC call could see just a broken pipe instead. Command-
/// line tools call this before their first request so that the refusal is named.
pub async fn probe(endpoint: &str, identity: &ClientIdentity) -> Result<(), ClientError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use tokio::io::AsyncReadExt;

    let bad = |what: &str, e: &dyn std::fmt::Display| ClientError::Endpoint(format!("{what}: {e}"));
    let authority = endpoint
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| ClientError::Endpoint(format!("{endpoint:?} must start with https://")))?;
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    weak_ca(&identity.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(identity.ca.as_bytes()) {
        roots
            .add(cert.map_err(|e| bad("the CA file", &e))?)
            .map_err(|e| bad("the CA file", &e))?;
    }
    let cert_chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the certificate file", &e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes())
        .map_err(|e| bad("the key file", &e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(cert_chain, key)
        .map_err(|e| bad("the certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| bad("the endpoint's host", &e))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&address).await?;
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?;
        let mut first = [0u8; 1];
        tls.read_exact(&mut first).await?;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(match tls_refusal(&e) {
            Some(reason) => ClientError::Refused(reason),
            None => ClientError::Connect {
                endpoint: endpoint.to_owned(),
                reason: chain(&e),
            },
        }),
        Err(_) => Err(ClientError::Connect {
            endpoint: endpoint.to_owned(),
            reason: "no answer within 10 s".to_owned(),
        }),
    }
}

/// Trailers of an Import that ended early (refused part-way, or past the server's
/// limit): envelopes taken from the stream, in order (the rest were not looked at), and
/// of those, how many were accepted, already there and refused.
pub mod import_trailers {
    use crate::pb;

    /// Envelopes taken from the stream.
    pub const TAKEN: &str = "tidemark-import-taken";
    /// Of those, accepted.
    pub const ACCEPTED: &str = "tidemark-import-accepted";
    /// Of those, already there.
    pub const DUPLICATES: &str = "tidemark-import-duplicates";
    /// Of those, refused.
    pub const REJECTED: &str = "tidemark-import-rejected";

    /// The type URL of the [`pb::ImportResponse`] in an ended import's status details:
    /// its counts and the first of its rejections.
    pub const SUMMARY_TYPE_URL: &str = "type.googleapis.com/tidemark.v1.ImportResponse";

    /// The part of an ended import's answer its status details carry, if they do.
    pub fn summary(status: &tonic::Status) -> Option<pb::ImportResponse> {
        let details = <tonic_types::pb::Status as prost::Message>::decode(status.details()).ok()?;
        let any = details
            .details
            .into_iter()
            .find(|any| any.type_url == SUMMARY_TYPE_URL)?;
        prost::Message::decode(any.value.as_slice()).ok()
    }

    /// The counts an ended import's status carries, in that order, if it carries them.
    pub fn read(status: &tonic::Status) -> Option<[u64; 4]> {
        let number = |key: &str| status.metadata().get(key)?.to_str().ok()?.parse().ok();
        Some([
            number(TAKEN)?,
            number(ACCEPTED)?,
            number(DUPLICATES)?,
            number(REJECTED)?,
        ])
    }
}

/// A sentence for a failed call: what went wrong and, where it helps, what to do.
pub fn explain(status: &Status) -> String {
    if let Some(reason) = tls_refusal(status) {
        return reason;
    }
    match status.code() {
        Code::Unauthenticated if error_reason(status).as_deref() == Some("SIGNATURE") => {
            format!(
                "the server did not accept the signature: {}",
                status.message()
            )
        }
        Code::Unauthenticated => format!(
            "the server did not accept this certificate's identity: {}",
            status.message()
        ),
        Code::PermissionDenied => format!("not allowed: {}", status.message()),
        Code::InvalidArgument => {
            use tonic_types::StatusExt;
            let mut text = format!("refused as invalid: {}", status.message());
            if let Some(bad) = status.get_details_bad_request() {
                text = String::from("refused as invalid; fix these fields:");
                for v in bad.field_violations {
                    text.push_str("\n  ");
                    text.push_str(&v.field);
                    text.push_str(": ");
                    text.push_str(&v.description);
                }
            }
            text
        }
        Code::Unavailable => {
            // The message and the causes' own words: Status's Display would add its
            // fields and the source's Debug form.
            let mut text = status.message().to_owned();
            if let Some(cause) = status.source().map(chain)
                && !text.contains(&cause)
            {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&cause);
            }
            format!("the server is unavailable: {text}")
        }
        Code::FailedPrecondition => format!("refused: {}", status.message()),
        Code::NotFound => format!("not found: {}", status.message()),
        Code::AlreadyExists => format!("conflict: {}", status.message()),
        Code::ResourceExhausted => format!("over a limit: {}", status.message()),
        Code::DeadlineExceeded => format!("timed out: {}", status.message()),
        Code::Aborted => format!("interrupted (try again): {}", status.message()),
        // The connection itself broke: the server went away, something between, or the
        // server closed it because the certificate's rights lapsed (a caller that was
        // not reading cannot be told why).
        Code::Internal | Code::Unknown
            if status.message().starts_with("h2 protocol error")
                || status.message() == "transport error" =>
        {
            format!(
                "the connection to the server broke ({}); try again. The server also closes \
                 the connections of a certificate that was revoked or expired, or whose \
                 state was suspended: `tidemark whoami` says whether this one still works",
                status.message()
            )
        }
        Code::Internal | Code::Unknown | Code::DataLoss => {
            format!("the server failed: {}", status.message())
        }
        _ => status.message().to_owned(),
    }
}

/// The `google.rpc.ErrorInfo` reason a refusal carries, if any.
fn error_reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason)
}

/// The version the server says a report's next envelope must have, when it refused one
/// out of order or already taken (`google.rpc.ErrorInfo` reasons `VERSION_ORDER` and
/// `VERSION_EXISTS`, see exchange.proto).
pub fn expected_version(status: &Status) -> Option<u32> {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info()?;
    if !matches!(info.reason.as_str(), "VERSION_ORDER" | "VERSION_EXISTS") {
        return None;
    }
    info.metadata.get("expected_version")?.parse().ok()
}

/// Finds a TLS failure anywhere in an error's source chain and explains it.
fn tls_refusal(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(describe_tls(tls));
            }
            // tokio-rustls hands a received alert up as an I/O error carrying only
            // rustls' text, "received fatal alert: <Alert>".
            if let Some(alert) = io.to_string().strip_prefix("received fatal alert: ") {
                return Some(refused_by_server(alert));
            }
        }
        current = e.source();
    }
    None
}

fn describe_tls(err: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    match err {
        rustls::Error::AlertReceived(alert) => refused_by_server(&format!("{alert:?}")),
        rustls::Error::InvalidCertificate(reason) => {
            let why = match reason {
                Cert::BadSignature | Cert::UnknownIssuer => {
                    "it was not issued by the CA in --ca (or the profile's ca.pem): is that \
                     this exchange's CA?"
                }
                Cert::Expired | Cert::ExpiredContext { .. } => {
                    "it has expired: the operator must renew it"
                }
                Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                    "it is not valid yet: check this machine's clock"
                }
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                    "it does not name the endpoint's host: connect by a name or address the \
                     server certificate names"
                }
                Cert::Revoked => "it has been revoked",
                _ => "check --ca, and that the endpoint's host name is one it names",
            };
            format!("the server's certificate is not trusted: {why}")
        }
        rustls::Error::InvalidMessage(_) => "the other end did not answer in TLS: is the \
             endpoint the exchange's gRPC port (not, say, its metrics port)?"
            .to_owned(),
        other => format!("TLS failed: {other}"),
    }
}

fn refused_by_server(alert: &str) -> String {
    // The alerts that say why (RFC 8446 §6.2), said as such; the others, what to check.
    let why = match alert {
        "CertificateRevoked" => {
            "it has been revoked: ask the operator why, and for a new certificate"
        }
        "CertificateExpired" => {
            "it has expired, or is not valid yet: check its dates (and this machine's clock), \
             and ask the operator to renew it"
        }
        "UnknownCA" => {
            "it was not issued by a CA this exchange trusts: use a certificate the operator \
             issued for this exchange"
        }
        _ => {
            "check that it was issued by this exchange's CA for client use, is within its \
             validity dates and has not been revoked"
        }
    };
    format!("the server refused this client certificate (TLS alert: {alert}); {why}")
}

/// What to check when a connection failed for `reason` (an error chain's text).
fn connect_hint(reason: &str) -> &'static str {
    let reason = reason.to_lowercase();
    let closed = [
        "handshake eof",
        "unexpected eof",
        "early eof",
        "connection reset",
    ];
    if closed.iter().any(|c| reason.contains(c)) {
        "the server closed the connection during the TLS handshake: it may have stopped (is \
         `tidemark serve` still running?), be at its limit of handshakes in progress \
         (limits.max_pending_handshakes_per_address, 32 from one address, and \
         limits.max_pending_handshakes, 1,024 in all, by default: retry in a moment), or \
         the address may not be a Tidemark server"
    } else if reason.contains("no answer within") || reason.contains("timed out") {
        "check the address, and that the server is reachable from here"
    } else {
        "is `tidemark serve` running there?"
    }
}

/// An error and its sources, joined with ": ".
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = e.source();
    }
    text
}

/// Why a client could not be set up or connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot read {}: {reason}", path.display())]
    /// A certificate or key file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read (in the message, not as a source: said once).
        reason: std::io::Error,
    },
    #[error("{} holds {what}", path.display())]
    /// A certificate or key file does not hold what it should.
    Contents {
        /// The file.
        path: PathBuf,
        /// What it lacks, and which file should hold it.
        what: &'static str,
    },
    #[error(
        "{} is not the private key of the certificate {}: give the key made with that \
         certificate (the profile's .key beside its .pem), not another node's or a \
         report-signing key",
        key.display(),
        cert.display()
    )]
    /// The key file does not hold the certificate's private key.
    NotAPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    #[error("bad endpoint: {0}")]
    /// The endpoint is not a usable `https://host:port` URL.
    Endpoint(String),
    #[error("cannot connect to {endpoint}: {reason}; {}", connect_hint(reason))]
    /// No connection could be made.
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    #[error("{0}")]
    /// The server refused the TLS handshake (certificate unknown, revoked, expired, …).
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A public key given by its raw bytes: the identity point, whose private key no one
    /// holds.
    struct Identity32;

    impl rcgen::PublicKeyData for Identity32 {
        fn der_bytes(&self) -> &[u8] {
            const IDENTITY: [u8; 32] = {
                let mut raw = [0; 32];
                raw[0] = 1;
                raw
            };
            &IDENTITY
        }

        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ED25519
        }
    }

    /// A CA bundle a client trusts the server by may not hold a CA whose key is of small
    /// order (a server certificate "signed" by it needs no private key), naming it.
    #[test]
    fn a_ca_bundle_with_a_key_of_small_order_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let good = params.self_signed(&key).unwrap().pem();
        let issuer = rcgen::Issuer::new(params.clone(), key);
        let weak = params.signed_by(&Identity32, &issuer).unwrap().pem();
        assert!(weak_ca(&good).is_ok());
        let refused = weak_ca(&format!("{good}{weak}")).unwrap_err().to_string();
        assert!(
            refused.contains("certificate 2") && refused.contains("small order"),
            "{refused}"
        );
    }

    #[test]
    fn an_unavailable_server_is_explained_in_words_not_in_debug_form() {
        let mut status = Status::unavailable("error trying to connect");
        status.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert_eq!(
            explain(&status),
            "the server is unavailable: error trying to connect: connection refused"
        );
        assert_eq!(
            explain(&Status::unavailable("draining")),
            "the server is unavailable: draining"
        );
    }

    #[test]
    fn a_broken_connection_is_not_blamed_on_the_server() {
        for status in [
            Status::unknown("transport error"),
            Status::unknown("h2 protocol error: error reading a body from connection"),
        ] {
            let said = explain(&status);
            assert!(
                said.starts_with("the connection to the server broke"),
                "{said}"
            );
            assert!(said.contains("tidemark whoami"), "{said}");
        }
        assert!(explain(&Status::internal("disk full")).starts_with("the server failed"));
    }

    #[test]
    fn tls_failures_are_explained_in_words() {
        use rustls::{CertificateError, Error, InvalidMessage};
        let said = describe_tls(&Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(said.contains("not issued by the CA in --ca"), "{said}");
        let said = describe_tls(&Error::InvalidMessage(InvalidMessage::InvalidContentType));
        assert!(said.contains("did not answer in TLS"), "{said}");
        assert!(!said.contains("InvalidContentType"), "{said}");
    }
}
