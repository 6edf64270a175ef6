//! TLS configuration: TLS 1.3 only, AES-GCM suites only, ring provider, mutual TLS.
//!
//! The server requires a client certificate that chains to the exchange CA and carries
//! the client-auth extended key usage; rustls' `WebPKI` verifier also enforces validity
//! dates. Which principal a valid certificate names is decided later, in
//! [`crate::identity`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, ring},
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, TrustAnchor, UnixTime,
        pem::PemObject,
    },
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

/// ALPN protocol for gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The ring provider restricted to the TLS 1.3 AES-GCM suites (NIST SP 800-52r2,
/// BSI TR-03116-4): ChaCha20-Poly1305 and every TLS 1.2 suite are left out.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        ..ring::default_provider()
    })
}

/// Paths of the PEM files the server's TLS needs.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// The exchange CA certificate(s) that client certificates must chain to.
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Partner CAs of the bundle by name (RFC 4514), each with the states it vouches for
    /// (`[tls] partner_cas`).
    pub partner_cas: std::collections::BTreeMap<String, Vec<String>>,
    /// The configuration file to read `partner_cas` from again at each reload, if any.
    pub partner_cas_from: Option<PathBuf>,
}

/// Loaded server TLS material.
pub(crate) struct ServerTlsMaterial {
    pub client_ca: Vec<CertificateDer<'static>>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The server certificate's issuer (RFC 4514), when its chain leads to no CA of the
    /// bundle: clients given only the bundle to trust (as `tidemark` clients are) refuse
    /// it. It may be meant (a public CA's certificate): said, not refused.
    pub issuer_outside_bundle: Option<String>,
}

impl ServerTlsMaterial {
    /// Reads every file, naming the one that is missing or unreadable.
    pub(crate) fn load(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        let client_ca = read_certs(&files.ca)?;
        check_ca_bundle(&files.ca, &client_ca)?;
        let cert_chain = read_certs(&files.cert)?;
        check_server_certificate(&files.cert, &cert_chain)?;
        let issuer_outside_bundle = check_server_chain(&files.cert, &cert_chain, &client_ca)?;
        if let Some(issuer) = &issuer_outside_bundle {
            tracing::warn!(
                %issuer,
                "the server certificate does not chain to a CA of the CA bundle: clients that \
                 trust only the bundle will refuse it (give them its CA, or use a server \
                 certificate from a CA of the bundle)"
            );
        }
        let material = Self {
            client_ca,
            cert_chain,
            key: read_key(&files.key)?,
            issuer_outside_bundle,
        };
        // Built once here to be refused here, before a server makes anything (a key
        // that is not the certificate's was found after the store was made).
        material.server_config(Vec::new()).map_err(|e| match e {
            TlsError::Config(why) => TlsError::Config(format!(
                "{} and {}: {why}",
                files.cert.display(),
                files.key.display()
            )),
            e => e,
        })?;
        Ok(material)
    }

    /// Builds the rustls server configuration; client certificates listed in `crls` are
    /// refused at the handshake.
    pub(crate) fn server_config(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(self.client_roots()?, provider.clone());
        if !crls.is_empty() {
            // Each CRL covers its own CA's certificates, intermediate CAs among them; a
            // CA without a CRL here (an intermediate, the other CA of a rollover) leaves
            // its certificates' status unknown, and revocation is also checked per call.
            verifier = verifier.with_crls(crls).allow_unknown_revocation_status();
        }
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
        let verifier = Arc::new(LoggingVerifier(verifier, PathLimits::of(&self.client_ca)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::Config(
                    "the server key is not the server certificate's key: give the key that was \
                     made with this certificate"
                        .to_owned(),
                ),
                e => TlsError::Config(format!("server certificate and key: {e}")),
            })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }
}

impl ServerTlsMaterial {
    /// The client CA bundle as trust anchors.
    fn client_roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.client_ca {
            roots
                .add(ca.clone())
                .map_err(|e| TlsError::Config(format!("client CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// A verifier of client certificate chains against the CA bundle alone (revocation
    /// is checked apart): whether a peer admitted at its handshake still chains to a CA
    /// the server trusts after the bundle was reloaded.
    pub(crate) fn chain_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        WebPkiClientVerifier::builder_with_provider(self.client_roots()?, provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))
    }
}

/// The client-certificate verifier, logging what it refuses with the presented
/// certificate's serial and SAN URIs (the principal it claims, unverified), which the
/// handshake's own error does not carry.
#[derive(Debug)]
struct LoggingVerifier(Arc<dyn ClientCertVerifier>, PathLimits);

/// The CAs of the bundle as webpki's trust anchors, each with the most intermediate CAs
/// its basicConstraints pathLenConstraint allows under it (RFC 5280 §4.2.1.9), if it
/// limits them (webpki does not apply a trust anchor's own constraints), and its name.
#[derive(Debug, Default)]
struct PathLimits {
    anchors: Vec<TrustAnchor<'static>>,
    limits: Vec<Option<u32>>,
    /// Each anchor's subject: its comparison key and RFC 4514 form.
    names: Vec<(crate::dn::NameKey, String)>,
}

impl PathLimits {
    fn of(bundle: &[CertificateDer<'_>]) -> Self {
        let mut limits = Self::default();
        for der in bundle {
            let (Ok(anchor), Ok((_, cert))) = (
                webpki::anchor_from_trusted_cert(der),
                x509_parser::parse_x509_certificate(der),
            ) else {
                continue;
            };
            let limit = match cert.basic_constraints() {
                Ok(Some(bc)) => bc.value.path_len_constraint,
                _ => None,
            };
            limits.anchors.push(anchor.to_owned());
            limits.limits.push(limit);
            limits.names.push((
                crate::dn::NameKey::of(cert.subject()),
                crate::dn::to_rfc4514(cert.subject()),
            ));
        }
        limits
    }

    /// Why the path verified from `end_entity` through `intermediates` is not to be
    /// trusted, if it is not: it breaks the limit of the CA it ends at, or an
    /// intermediate CA on it bears the name of a CA of the bundle with another key. The
    /// path webpki builds and checks, not the certificates presented (a chain can carry
    /// certificates no path uses).
    fn refuses(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<Unusable> {
        self.check(end_entity, intermediates, now).err().flatten()
    }

    /// Whether `end_entity` is admitted, or why not: `None` when there is no path, else
    /// what [`Self::refuses`] finds.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Option<Unusable>> {
        let (anchor, path) =
            verified_path(&self.anchors, end_entity, intermediates, now).ok_or(None)?;
        let below = u32::try_from(path.len()).unwrap_or(u32::MAX);
        if let Some(limit) = self
            .limits
            .get(anchor)
            .copied()
            .flatten()
            .filter(|limit| below > *limit)
        {
            return Err(Some(Unusable::PathLength { below, limit }));
        }
        match path.iter().find_map(|ca| self.named_like_an_anchor(ca)) {
            Some(unusable) => Err(Some(unusable)),
            None => Ok(()),
        }
    }

    /// The name of the CA of the bundle that the intermediate CA `ca` is named like
    /// without having its key, if any. Revocations and the audit know an issuer by its
    /// name: a partner's intermediate CA named like the exchange's CA would pass for it
    /// in `whoami`, and `admin revoke SERIAL --issuer` of its certificates would revoke
    /// the exchange's certificate of the same serial too (an outside pass).
    fn named_like_an_anchor(&self, ca: &CertificateDer<'_>) -> Option<Unusable> {
        let (_, cert) = x509_parser::parse_x509_certificate(ca).ok()?;
        let key = crate::dn::NameKey::of(cert.subject());
        let spki = cert.public_key().raw;
        self.anchors
            .iter()
            .zip(&self.names)
            .find(|(anchor, (name, _))| {
                *name == key && webpki::spki_for_anchor(anchor).as_ref() != spki
            })
            .map(|(_, (_, name))| Unusable::NamedLikeABundleCa {
                intermediate: crate::dn::to_rfc4514(cert.subject()),
                serial: crate::identity::serial_hex(cert.raw_serial()),
                ca: name.clone(),
            })
    }
}

/// Whether a client presenting `end_entity` with `intermediates` would be admitted at
/// `now` under the CA bundle `bundle` (revocation and the partner CAs' states aside), or
/// why not, in words.
pub(crate) fn admissible(
    bundle: &[CertificateDer<'_>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), Inadmissible> {
    if let Some(unreadable) = unreadable_chain(intermediates) {
        return Err(Inadmissible::Refused(unreadable.to_string()));
    }
    let limits = PathLimits::of(bundle);
    if let Err(e) = verify_path(&limits.anchors, end_entity, intermediates, now) {
        return Err(match e {
            webpki::Error::UnknownIssuer => Inadmissible::Unchained,
            webpki::Error::CaUsedAsEndEntity => Inadmissible::Refused(
                "it is a CA certificate (basicConstraints cA), not a client's".to_owned(),
            ),
            webpki::Error::RequiredEkuNotFoundContext(_) => Inadmissible::Refused(
                "its extended key usage does not allow client authentication (clientAuth)"
                    .to_owned(),
            ),
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                Inadmissible::Refused(
                    "a CA certificate of its chain is not valid while it is (expired, or not \
                     yet valid)"
                        .to_owned(),
                )
            }
            webpki::Error::PathLenConstraintViolated => Inadmissible::Refused(
                "its chain has more intermediate CAs than a CA's pathLenConstraint allows"
                    .to_owned(),
            ),
            webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | webpki::Error::UnsupportedSignatureAlgorithmContext(_) => Inadmissible::Refused(
                "a signature on its chain does not verify with the key of the CA it names \
                 (a certificate not issued by the CA whose name it bears)"
                    .to_owned(),
            ),
            webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
                Inadmissible::Refused("a certificate of its chain is not valid DER".to_owned())
            }
            other => Inadmissible::Refused(format!("its path does not verify ({other:?})")),
        });
    }
    match limits.check(end_entity, intermediates, now) {
        Ok(()) => Ok(()),
        Err(None) => Err(Inadmissible::Unchained),
        Err(Some(unusable)) => Err(Inadmissible::Refused(unusable.to_string())),
    }
}

/// Why a client certificate would not be admitted ([`admissible`]).
pub(crate) enum Inadmissible {
    /// It chains to no CA of the bundle through the intermediates given.
    Unchained,
    /// Why a handshake would refuse it, in words.
    Refused(String),
}

/// The path webpki builds and verifies for client authentication at `now`, from
/// `end_entity` through some of `intermediates` to one of `anchors` (revocation aside):
/// the index of its anchor, and the intermediate CAs it goes through (leaf side first).
/// `None` when there is none. What a chain is trusted *as* is decided by this path, never
/// by the certificates presented: a client may add any certificate to its chain (an
/// outside pass appended the exchange CA's to a partner CA's chain).
pub(crate) fn verified_path(
    anchors: &[TrustAnchor<'_>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Option<(usize, Vec<CertificateDer<'static>>)> {
    verify_path(anchors, end_entity, intermediates, now).ok()
}

/// [`verified_path`], or webpki's reason why there is none.
fn verify_path(
    anchors: &[TrustAnchor<'_>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(usize, Vec<CertificateDer<'static>>), webpki::Error> {
    let leaf = webpki::EndEntityCert::try_from(end_entity)?;
    let algorithms = provider().signature_verification_algorithms.all;
    let path = leaf.verify_for_usage(
        algorithms,
        anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    let anchor = path.anchor();
    let index = anchors
        .iter()
        .position(|a| {
            a.subject.as_ref() == anchor.subject.as_ref()
                && a.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
        })
        .ok_or(webpki::Error::UnknownIssuer)?;
    let path = path
        .intermediate_certificates()
        .map(|c| c.der().into_owned())
        .collect();
    Ok((index, path))
}

impl ClientCertVerifier for LoggingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        unreadable_chain(intermediates)
            .or_else(|| {
                std::iter::once(end_entity)
                    .chain(intermediates)
                    .find_map(unusable)
            })
            .map_or(Ok(()), |why| {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(why))),
                ))
            })
            .and_then(|()| {
                self.1
                    .refuses(end_entity, intermediates, now)
                    .map_or(Ok(()), |why| {
                        Err(rustls::Error::InvalidCertificate(
                            rustls::CertificateError::Other(rustls::OtherError(Arc::new(why))),
                        ))
                    })
            })
            .and_then(|()| {
                if for_client_auth(end_entity) {
                    Ok(())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::InvalidPurpose,
                    ))
                }
            })
            .and_then(|()| self.0.verify_client_cert(end_entity, intermediates, now))
            .inspect_err(|e| log_refused(end_entity, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    /// A valid certificate presented without its private key fails here.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|e| log_refused(cert, e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// Why `cert`'s key is an Ed25519 key no one need hold the private half of
/// ([`crate::signing::weak_ed25519`]), if it is one: signatures by it are made without
/// one, so neither a TLS handshake nor a certificate it signs proves anything.
pub(crate) fn weak_key(cert: &CertificateDer<'_>) -> Option<&'static str> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return None;
    }
    let raw: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().ok()?;
    crate::signing::weak_ed25519(&raw)
}

/// Whether `cert` is made for TLS client authentication: an extended key usage that
/// names clientAuth (RFC 5280 §4.2.1.12; webpki takes a certificate without one for any
/// purpose), and, if it limits its key's usage, digitalSignature among them (the
/// handshake signature is one).
fn for_client_auth(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let eku = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    let key_usage = match cert.key_usage() {
        Ok(Some(usage)) => usage.value.digital_signature(),
        Ok(None) => true,
        Err(_) => false,
    };
    eku && key_usage
}

/// Why a certificate of a client's chain is refused before webpki looks at it, if it is.
fn unusable(cert: &CertificateDer<'_>) -> Option<Unusable> {
    if let Some(why) = weak_key(cert) {
        return Some(Unusable::WeakKey(why));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    crate::identity::nonconforming_serial(parsed.raw_serial()).map(Unusable::Serial)
}

/// The most intermediate CA certificates a client's chain is read with. webpki builds
/// paths through at most 6; more only cost path building.
pub(crate) const MAX_INTERMEDIATES: usize = 8;

/// Why a client's chain is not read at all, before any path is built: more than
/// [`MAX_INTERMEDIATES`] intermediates, or two intermediates of one name (as DER, which
/// is how a path links) with different keys. Path building tries every combination of
/// such look-alikes, and its cost grows steeply with them: an outside pass stalled the
/// server with 49 cross-signed certificates of one name, each costing seconds of CPU
/// before the handshake could fail. No real chain needs either.
fn unreadable_chain(intermediates: &[CertificateDer<'_>]) -> Option<Unusable> {
    if intermediates.len() > MAX_INTERMEDIATES {
        return Some(Unusable::TooManyIntermediates(intermediates.len()));
    }
    let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(intermediates.len());
    for der in intermediates {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            // Not a certificate: webpki refuses it as such.
            continue;
        };
        let (name, key) = (cert.subject().as_raw(), cert.public_key().raw);
        if seen.iter().any(|(n, k)| n == name && *k != key) {
            return Some(Unusable::LookAlikeIntermediates(crate::dn::to_rfc4514(
                cert.subject(),
            )));
        }
        seen.push((name.to_vec(), key.to_vec()));
    }
    None
}

/// A certificate refused for what it is, not for its chain.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    /// More intermediate CAs than are read.
    #[error(
        "the chain presents {0} intermediate CA certificates; at most {MAX_INTERMEDIATES} are \
         read (send only the ones between the certificate and the exchange's CA)"
    )]
    TooManyIntermediates(usize),
    /// Two intermediate CAs of one name with different keys.
    #[error(
        "the chain presents two intermediate CAs named {0} with different keys; send only the \
         one that issued the certificate's chain"
    )]
    LookAlikeIntermediates(String),
    /// Its key ([`weak_key`]).
    #[error("the certificate's Ed25519 key is {0}, which proves nothing")]
    WeakKey(&'static str),
    /// Its serial, which no revocation could name without ambiguity.
    #[error("the certificate's serial number is {0}")]
    Serial(&'static str),
    /// More intermediate CAs under a CA of the bundle than it allows.
    #[error(
        "the chain has {below} intermediate CAs under a CA of the bundle whose \
         pathLenConstraint allows {limit}"
    )]
    PathLength { below: u32, limit: u32 },
    /// An intermediate CA named like a CA of the bundle, with another key.
    #[error(
        "the chain's intermediate CA {intermediate} (serial {serial}) bears the name of the \
         bundle's CA {ca} but not its key: revocations and the audit know issuers by name, \
         so it would pass for that CA; its issuer must give it a name of its own"
    )]
    NamedLikeABundleCa {
        intermediate: String,
        serial: String,
        ca: String,
    },
}

/// Logs a refused client certificate with what it claims (the handshake's span adds
/// the peer's address).
fn log_refused(cert: &CertificateDer<'_>, error: &rustls::Error) {
    // Our own reasons in their own words, not as rustls's Debug of them.
    let error = match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.to_string()
        }
        other => other.to_string(),
    };
    // At INFO from a budget shared with the handshake's own refusal line.
    let held_back = crate::log_budget::HANDSHAKE_REFUSALS.take();
    match (crate::identity::claimed_by(cert), held_back) {
        // Debug-formatted: the claims are the peer's bytes, not to be trusted to hold
        // no line breaks or escape codes.
        (Some((serial, uris)), Some(held_back)) => tracing::info!(
            serial = %serial,
            claimed = ?uris,
            error = %error,
            held_back,
            "client certificate refused"
        ),
        (Some((serial, uris)), None) => tracing::debug!(
            serial = %serial,
            claimed = ?uris,
            error = %error,
            "client certificate refused"
        ),
        (None, Some(held_back)) => {
            tracing::info!(error = %error, held_back, "unreadable client certificate refused");
        }
        (None, None) => tracing::debug!(error = %error, "unreadable client certificate refused"),
    }
}

/// Reads all certificates from a PEM file; an empty file is an error.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Parse {
            path: path.to_owned(),
            reason: "no PEM certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

/// Refuses a server certificate no client would accept (a reload would otherwise put it
/// in use and lock every client out, the operator's too): it or a CA certificate of its
/// chain expired or not yet valid, a CA certificate in its place, an extended key usage
/// without serverAuth (a client's certificate, say; anyExtendedKeyUsage alone is refused
/// by rustls and OpenSSL clients), or a key usage without digitalSignature (TLS 1.3 signs
/// with the key).
fn check_server_certificate(path: &Path, chain: &[CertificateDer<'_>]) -> Result<(), TlsError> {
    let refuse = |reason: String| TlsError::Parse {
        path: path.to_owned(),
        reason: format!("{reason}; no client would accept it — give a current server certificate"),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (place, der) in chain.iter().enumerate() {
        let what = if place == 0 {
            "the server certificate".to_owned()
        } else {
            format!("certificate {} of its chain", place + 1)
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| refuse(format!("{what} does not parse ({e})")))?;
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(refuse(format!(
                "{what} is not valid until {}",
                crate::clock::format_time(validity.not_before.timestamp())
            )));
        }
        if now > validity.not_after.timestamp() {
            return Err(refuse(format!(
                "{what} expired at {}",
                crate::clock::format_time(validity.not_after.timestamp())
            )));
        }
        if place > 0 {
            continue;
        }
        if cert.is_ca() {
            return Err(refuse(
                "the server certificate is a CA certificate (basicConstraints cA)".to_owned(),
            ));
        }
        if let Ok(Some(eku)) = cert.extended_key_usage()
            && !eku.value.server_auth
        {
            return Err(refuse(
                "the server certificate's extended key usage does not name TLS server \
                 authentication (serverAuth): a client's certificate?"
                    .to_owned(),
            ));
        }
        if let Ok(Some(usage)) = cert.key_usage()
            && !usage.value.digital_signature()
        {
            return Err(refuse(
                "the server certificate's key usage does not allow digitalSignature, which \
                 TLS 1.3 needs"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

/// Refuses a server certificate chain that a client trusting a CA of `bundle` would not
/// accept for TLS server authentication: an intermediate that is not a CA, or whose
/// extended key usage leaves out serverAuth, or more intermediates than the CA's
/// pathLenConstraint allows (webpki's checks, as the client's; host names aside). A
/// chain to a CA outside the bundle is not judged, since clients may trust another CA:
/// its issuer's name is returned.
fn check_server_chain(
    path: &Path,
    chain: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
) -> Result<Option<String>, TlsError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Ok(None);
    };
    let limits = PathLimits::of(bundle);
    let refuse = |reason: String| TlsError::Parse {
        path: path.to_owned(),
        reason: format!(
            "{reason}; a client trusting the CA bundle would not accept it — give a chain it \
             accepts"
        ),
    };
    let issuer = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, cert)| crate::dn::to_rfc4514(cert.issuer()))
        .unwrap_or_default();
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
        return Ok(None);
    };
    let verified = leaf.verify_for_usage(
        provider().signature_verification_algorithms.all,
        &limits.anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    let path = match verified {
        Ok(path) => path,
        // Issued under a CA outside the bundle: not this check's to judge.
        Err(webpki::Error::UnknownIssuer) => return Ok(Some(issuer)),
        Err(e) => {
            return Err(refuse(format!(
                "the server certificate's chain does not verify for TLS server \
                 authentication ({e:?})"
            )));
        }
    };
    let anchor = path.anchor();
    let below = u32::try_from(path.intermediate_certificates().count()).unwrap_or(u32::MAX);
    let limit = limits
        .anchors
        .iter()
        .position(|a| a.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref())
        .and_then(|i| limits.limits.get(i).copied().flatten());
    match limit {
        Some(limit) if below > limit => Err(refuse(format!(
            "the server certificate's chain has {below} intermediate CAs under a CA whose \
             pathLenConstraint allows {limit}"
        ))),
        _ => Ok(None),
    }
}

/// Refuses a CA bundle that holds a certificate that is not a CA's, or two CAs of one
/// name but different keys. A TLS verifier (webpki) matches a certificate, and a CRL, to
/// its CA by the issuer name: the second CA's certificates would be checked against the
/// first one's key, or its CRL, and refused. The same CA re-issued with its own key is
/// fine. Certificates are named by their place in the file (1 = the first).
fn check_ca_bundle(path: &Path, bundle: &[CertificateDer<'_>]) -> Result<(), TlsError> {
    let refuse = |reason: String| TlsError::Parse {
        path: path.to_owned(),
        reason,
    };
    // Subject (as names compare: not only its DER, which two encodings of one name
    // differ in) → the key and place of the first CA of that name.
    let mut seen: std::collections::HashMap<crate::dn::NameKey, (Vec<u8>, usize)> =
        std::collections::HashMap::new();
    for (place, der) in (1..).zip(bundle) {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            continue; // rustls refuses it, naming why
        };
        if let Some(why) = weak_key(der) {
            return Err(refuse(format!(
                "certificate {place} (\"{}\") has an Ed25519 key that is {why}: anyone can \
                 make certificates \"signed\" by it; take it out",
                cert.subject()
            )));
        }
        if !cert.is_ca() {
            return Err(refuse(format!(
                "certificate {place} (\"{}\") is not a CA's (no basicConstraints CA:TRUE): \
                 the bundle lists the CAs whose certificates the exchange accepts; take \
                 it out",
                cert.subject()
            )));
        }
        let key = cert.public_key().raw.to_vec();
        let name = crate::dn::NameKey::of(cert.subject());
        match seen.get(&name) {
            Some((other, first)) if *other != key => {
                return Err(refuse(format!(
                    "certificates {first} and {place} are both CAs named \"{}\" (or names \
                     that differ only in case or encoding) but hold different keys; \
                     certificates and CRLs are matched to their CA by name, so one CA's \
                     certificates would be refused, and no name could tell them apart in a \
                     revocation. Give the new CA a name of its own (`tidemark pki init` makes \
                     each CA's name distinct)",
                    crate::dn::to_rfc4514(cert.subject())
                )));
            }
            Some(_) => {}
            None => {
                seen.insert(name, (key, place));
            }
        }
    }
    Ok(())
}

/// Reads a private key from a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Parse {
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_bytes(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What is wrong with the TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not usable: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A public key given by its raw bytes, for a certificate whose private key no one
    /// holds.
    struct Raw([u8; 32]);

    impl rcgen::PublicKeyData for Raw {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }

        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ED25519
        }
    }

    /// A client certificate whose Ed25519 key is of small order is refused before its
    /// handshake signature is checked (which anyone can make for it), and so is a CA
    /// certificate with such a key in the bundle; a real key passes.
    #[test]
    fn certificates_with_a_weak_ed25519_key_are_refused() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |key: &dyn rcgen::PublicKeyData| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(
                "spiffe://t.test/state/AUS/node/n".try_into().unwrap(),
            )];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.signed_by(&key, &issuer).unwrap().der().clone()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).unwrap();
        let verifier = LoggingVerifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap(),
            PathLimits::default(),
        );
        let verify = |der: &CertificateDer<'_>| {
            verifier
                .verify_client_cert(der, &[], UnixTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let mut identity = [0; 32];
        identity[0] = 1;
        let weak = leaf(&Raw(identity));
        assert!(weak_key(&weak).is_some());
        let refused = verify(&weak).unwrap_err();
        assert!(refused.contains("small order"), "{refused}");
        let real = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(verify(&leaf(&real)), Ok(()));
        // Made for no purpose, or whose key may only sign certificates: not a client's.
        for (eku, usage) in [
            (vec![], vec![]),
            (
                vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
                vec![rcgen::KeyUsagePurpose::KeyCertSign],
            ),
        ] {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(
                "spiffe://t.test/state/AUS/node/n".try_into().unwrap(),
            )];
            params.extended_key_usages = eku;
            params.key_usages = usage;
            let der = params.signed_by(&real, &issuer).unwrap().der().clone();
            let refused = verify(&der).unwrap_err();
            assert!(refused.contains("InvalidPurpose"), "{refused}");
        }

        // A CA of the bundle with such a key: anyone could sign certificates "by" it.
        let mut weak_ca = CertificateParams::default();
        weak_ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let weak_ca = weak_ca.signed_by(&Raw(identity), &issuer).unwrap();
        let refused = check_ca_bundle(Path::new("ca.pem"), &[ca_der, weak_ca.der().clone()])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("certificate 2") && refused.contains("small order"),
            "{refused}"
        );
    }
}
