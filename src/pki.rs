//! Certificates: the exchange CA, and the server and client certificates it issues.
//!
//! Also the development PKI that `tidemark pki init` (and a first `tidemark serve`)
//! writes under `certs/`: a CA, a server certificate for localhost, and sample node,
//! analyst, regional-analyst and operator certificates, the server's receipt key and a
//! report-signing key per sample state, under the file names that `certs/README.md`
//! documents. Private keys are written with mode 0600.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

pub use rcgen::RevocationReason;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::{
    country::CountryCode,
    identity::{Principal, Role},
    signing::SigningKey,
};

/// The states for which the development PKI makes sample certificates.
pub const SAMPLE_STATES: [&str; 3] = ["AUS", "IDN", "THA"];

/// Validity of development certificates.
const DEV_CA_DAYS: i64 = 3650;

/// The longest validity of a certificate issued to a principal, by the server (`admin
/// issue`) or offline (`pki issue`): CA/B-style 397 days.
pub const MAX_CERT_DAYS: u32 = 397;
const DEV_LEAF_DAYS: i64 = 825;

/// A PEM certificate with its PKCS#8 PEM private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// A certificate's validity period.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (to allow for clock skew) for `days` days.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// The exchange's certificate authority: its certificate and signing key.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Makes a new self-signed CA. Its name is `common_name` and a `serialNumber`
    /// attribute (RFC 5280 §4.1.2.4, X.520) derived from its key, so that two CAs made
    /// with one common name — the old and the new of a rollover — are still told apart:
    /// TLS verifiers match certificates and CRLs to their CA by name.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        let fingerprint = ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        );
        let distinct = hex::encode(&fingerprint.as_ref()[..8]);
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            rcgen::DnValue::PrintableString(distinct.try_into()?),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        // What it issues must chain to this certificate: a CA's, certifying this key.
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| PkiError::Config(format!("the CA certificate is not PEM: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| PkiError::Config(format!("the CA certificate does not parse: {e}")))?;
        if !cert.is_ca() {
            return Err(PkiError::Config(
                "the CA certificate is not a CA's (no basicConstraints CA:TRUE): give the \
                 exchange's ca.pem, not a node's or the server's certificate"
                    .to_owned(),
            ));
        }
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(PkiError::Config(
                "the CA key is not the private key of the CA certificate: give the ca.key \
                 made with this ca.pem"
                    .to_owned(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, hosts: &[&str], validity: Validity) -> Result<IssuedCert, PkiError> {
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = distinguished_name("Tidemark server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity)
    }

    /// Issues a client certificate naming `principal` by its SPIFFE ID.
    pub fn issue_client(
        &self,
        principal: &Principal,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        self.issue_client_with_uris(&[principal.spiffe_id()], validity)
    }

    /// Issues a client certificate with exactly these URI SANs, unchecked. Real
    /// certificates go through [`Self::issue_client`]; this one also makes the malformed
    /// certificates that tests need.
    pub fn issue_client_with_uris(
        &self,
        uris: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(uris.first().map_or("client", |u| u));
        params.subject_alt_names = uris
            .iter()
            .map(|u| Ok(SanType::URI(u.clone().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// One revoked certificate, for a CRL.
pub struct RevokedEntry {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why (RFC 5280 reason code).
    pub reason: RevocationReason,
}

/// Why a certificate was revoked (RFC 5280 reason codes), by their command-line names.
pub fn parse_reason(name: &str) -> Option<RevocationReason> {
    Some(match name {
        "unspecified" => RevocationReason::Unspecified,
        "key-compromise" => RevocationReason::KeyCompromise,
        "ca-compromise" => RevocationReason::CaCompromise,
        "affiliation-changed" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessation-of-operation" => RevocationReason::CessationOfOperation,
        "privilege-withdrawn" => RevocationReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// The command-line name of an RFC 5280 reason code (§5.3.1) as a CRL carries it;
/// codes without one here (hold, remove-from-CRL, AA compromise) read as `unspecified`.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        1 => "key-compromise",
        2 => "ca-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        9 => "privilege-withdrawn",
        _ => "unspecified",
    }
}

/// The names [`parse_reason`] accepts.
pub const REASONS: &str = "unspecified, key-compromise, ca-compromise, affiliation-changed, \
                           superseded, cessation-of-operation, privilege-withdrawn";

impl CertificateAuthority {
    /// Signs a CRL listing `revoked`, valid for `valid_days`; returns it as PEM.
    pub fn crl(
        &self,
        revoked: &[RevokedEntry],
        number: u64,
        valid_days: i64,
    ) -> Result<String, PkiError> {
        self.crl_numbered(revoked, &number.to_be_bytes(), valid_days)
    }

    /// [`Self::crl`] with its CRL number given big-endian (RFC 5280 allows 20 octets).
    pub fn crl_numbered(
        &self,
        revoked: &[RevokedEntry],
        number: &[u8],
        valid_days: i64,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let serial = hex::decode(&r.serial)
                    .map_err(|_| PkiError::Config(format!("bad serial {}", r.serial)))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: r.revoked_at,
                    reason_code: Some(r.reason),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(valid_days),
            crl_number: SerialNumber::from_slice(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Issues a client certificate for `principal` to the public key of a checked CSR.
    /// Nothing else in the CSR is used: the server sets the identity, usage and
    /// validity. The certificate carries exactly the CSR's SubjectPublicKeyInfo.
    pub fn issue_from_csr(
        &self,
        csr: &CheckedCsr,
        principal: &Principal,
        validity: Validity,
    ) -> Result<String, PkiError> {
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(principal.name());
        params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&public_key, &self.issuer)?;
        // Checked, not trusted: the key certified is exactly the key asked for.
        let (_, issued) = x509_parser::parse_x509_certificate(cert.der())
            .map_err(|e| PkiError::Csr(format!("the issued certificate is unreadable: {e}")))?;
        if issued.public_key().raw != csr.spki_der.as_slice() {
            return Err(PkiError::Csr(
                "the certificate would not carry the CSR's exact public key; nothing was issued"
                    .to_owned(),
            ));
        }
        Ok(cert.pem())
    }
}

/// The key types a CSR may carry: what rustls (ring) verifies in a TLS 1.3 client
/// certificate and this CA certifies faithfully.
pub const CSR_KEY_TYPES: &str = "ECDSA P-256, ECDSA P-384 or Ed25519";

/// A PKCS#10 CSR whose key type is accepted and whose signature verifies with its own
/// key (proof of possession); [`read_csr`] is the only way to make one.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    spki_der: Vec<u8>,
    requested_uri: String,
    key_type: &'static str,
}

impl CheckedCsr {
    /// The single URI SAN the CSR asks for, before any identity checks.
    pub fn requested_uri(&self) -> &str {
        &self.requested_uri
    }

    /// "ECDSA P-256", "ECDSA P-384" or "Ed25519".
    pub fn key_type(&self) -> &'static str {
        self.key_type
    }

    /// SHA-256 of the CSR's SubjectPublicKeyInfo: names the key, whatever certifies it.
    pub fn key_fingerprint(&self) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, &self.spki_der)
            .as_ref()
            .to_vec()
    }
}

/// The key type of a CSR's key, if it is one this exchange certifies and usable: an
/// uncompressed EC point, an Ed25519 key not of small order.
fn csr_key_type(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<&'static str, PkiError> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
    };
    let algorithm = &spki.algorithm;
    let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let is_ec = algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY;
    let key_type = if algorithm.algorithm == OID_SIG_ED25519 {
        "Ed25519"
    } else if is_ec && curve.as_ref() == Some(&OID_EC_P256) {
        "ECDSA P-256"
    } else if is_ec && curve.as_ref() == Some(&OID_NIST_EC_P384) {
        "ECDSA P-384"
    } else {
        let what = match curve {
            Some(curve) if is_ec => format!("an elliptic-curve key on {}", curve_name(&curve)),
            None if is_ec => "an elliptic-curve key with explicit curve parameters".to_owned(),
            _ => format!("a key of algorithm {}", algorithm.algorithm),
        };
        return Err(PkiError::Csr(format!(
            "the CSR carries {what}; this exchange certifies {CSR_KEY_TYPES} keys only \
             (make one with `tidemark pki csr`, or `openssl req -new -newkey ec -pkeyopt \
             ec_paramgen_curve:P-256`)"
        )));
    };
    if key_type == "Ed25519" {
        let raw: [u8; 32] = spki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .map_err(|_| PkiError::Csr("the CSR's Ed25519 key is not 32 bytes".to_owned()))?;
        if let Some(why) = crate::signing::weak_ed25519(&raw) {
            return Err(PkiError::Csr(format!(
                "the CSR's Ed25519 key is {why}: a signature by it proves no one holds a \
                 private key (it can be made without one); make a new key and CSR"
            )));
        }
    }
    if is_ec && spki.subject_public_key.data.first() != Some(&0x04) {
        return Err(PkiError::Csr(format!(
            "the CSR's {key_type} key is written as a compressed point; TLS here (rustls, \
             webpki) takes uncompressed points only (SEC 1 §2.3.3): convert the key with \
             `openssl ec -in KEY -conv_form uncompressed -out KEY2` and make the CSR again"
        )));
    }
    Ok(key_type)
}

/// Reads a PEM CSR: one CSR, an accepted key type ([`CSR_KEY_TYPES`]), a signature that
/// verifies with that key, and exactly one URI SAN.
pub fn read_csr(csr_pem: &str) -> Result<CheckedCsr, PkiError> {
    use rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject};
    use x509_parser::{
        certification_request::X509CertificationRequest,
        extensions::{GeneralName, ParsedExtension},
        oid_registry::OID_SIG_ED25519,
        prelude::FromDer,
    };

    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        PkiError::Csr(format!(
            "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----): {e}"
        ))
    })?;
    // One request per file: a second one would be silently left out.
    let requests = CertificateSigningRequestDer::pem_slice_iter(csr_pem.as_bytes()).count();
    if requests > 1 {
        return Err(PkiError::Csr(format!(
            "the file holds {requests} certificate signing requests; give one CSR per file"
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| PkiError::Csr(format!("the CSR could not be parsed (PKCS#10): {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::Csr("the CSR has trailing bytes".to_owned()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let key_type = csr_key_type(spki)?;
    let signed_with = &csr.signature_algorithm.algorithm;
    let signature_ok = if key_type == "Ed25519" {
        *signed_with == OID_SIG_ED25519
    } else {
        // ecdsa-with-SHA256, ecdsa-with-SHA384 (RFC 5758 §3.2): what ring verifies.
        matches!(
            signed_with.to_id_string().as_str(),
            "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3"
        )
    };
    if !signature_ok {
        return Err(PkiError::Csr(format!(
            "the CSR is signed with algorithm {signed_with}; an {key_type} CSR must be \
             signed with {} (e.g. `openssl req -sha256`)",
            if key_type == "Ed25519" {
                "Ed25519"
            } else {
                "ecdsa-with-SHA256 or ecdsa-with-SHA384"
            }
        )));
    }
    csr.verify_signature().map_err(|_| {
        PkiError::Csr(format!(
            "the CSR's signature does not verify with its own {key_type} key (no proof of \
             possession); make a new CSR"
        ))
    })?;
    let uris: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    let [requested_uri] = uris.as_slice() else {
        return Err(PkiError::Csr(format!(
            "the CSR must ask for exactly one SPIFFE ID (URI SAN); it asks for {}",
            uris.len()
        )));
    };
    Ok(CheckedCsr {
        spki_der: spki.raw.to_vec(),
        requested_uri: requested_uri.clone(),
        key_type,
    })
}

/// A curve's common name where it has one, else its OID.
fn curve_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        other => format!("curve {other}"),
    }
}

/// Makes a key and a CSR asking for `principal`'s identity; returns (key PEM, CSR PEM).
pub fn make_csr(principal: &Principal) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&principal.spiffe_id());
    params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// RFC 5280 Appendix A.1 `ub-common-name`: a common name holds at most 64 characters.
const MAX_COMMON_NAME: usize = 64;

/// A subject name; the common name is cut to RFC 5280's 64-character limit (it is a
/// label only: identity is in the URI SAN).
fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tidemark exchange");
    let cn: String = common_name.chars().take(MAX_COMMON_NAME).collect();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The file stem of a development certificate: `<dir>/aus-node` → `aus-node.pem`, `.key`.
pub fn profile_stem(role: &Role) -> String {
    match role {
        Role::Node(state) => format!("{}-node", state.to_lowercase()),
        Role::StateAnalyst(state) => format!("{}-analyst", state.to_lowercase()),
        Role::RegionalAnalyst => "regional-analyst".to_owned(),
        Role::Operator => "operator".to_owned(),
    }
}

/// The principals the development PKI makes certificates for.
pub fn sample_principals(trust_domain: &str) -> Result<Vec<Principal>, PkiError> {
    let mut roles = Vec::new();
    for code in SAMPLE_STATES {
        let state = CountryCode::parse(code).map_err(|e| PkiError::Config(e.to_string()))?;
        roles.push((Role::Node(state), format!("{}-1", state.to_lowercase())));
        roles.push((
            Role::StateAnalyst(state),
            format!("{}-analyst", state.to_lowercase()),
        ));
    }
    roles.push((Role::RegionalAnalyst, "regional-1".to_owned()));
    roles.push((Role::Operator, "operator-1".to_owned()));
    roles
        .into_iter()
        .map(|(role, name)| {
            Principal::new(trust_domain, role, &name).map_err(|e| PkiError::Config(e.to_string()))
        })
        .collect()
}

/// Writes a complete development PKI into `dir`; says what it wrote, and where the files
/// it replaced went.
///
/// Without `force`, refuses a directory that holds any PKI file ([`pki_files`]: a key, a
/// certificate, a CRL, a server's journals…), not only one with `ca.pem`: a PKI missing
/// its `ca.pem` (a slip in a CA rollover) still holds the CA and log keys, which a new PKI
/// would overwrite. With `force`, those files are not deleted but moved into
/// `replaced-<UTC time>/` in `dir`, so no key is lost. One run at a time holds the
/// directory (a lock). While files are being placed, `dir/.pki-unfinished` says so
/// ([`check_finished`], which the server honours); a run killed part-way is finished by
/// the next (with `force` or without), which moves the mixed files aside too.
pub fn init_dev_pki(dir: &Path, trust_domain: &str, force: bool) -> Result<DevPki, PkiError> {
    // Before any directory is made.
    sample_principals(trust_domain)?;
    let ca_path = dir.join("ca.pem");
    let unfinished = dir.join(UNFINISHED);
    let refuse = |present: &[PathBuf]| -> Result<(), PkiError> {
        match present.first() {
            Some(_) if force || unfinished.exists() => Ok(()),
            Some(_) if ca_path.exists() => Err(PkiError::Exists(ca_path.clone())),
            Some(found) => Err(PkiError::Incomplete {
                dir: dir.to_owned(),
                found: found.clone(),
            }),
            None => Ok(()),
        }
    };
    refuse(&pki_files(dir)?)?;
    crate::files::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
    // One run at a time in a directory, --force or not: the lock goes with the process.
    let held = fs::File::open(dir).map_err(|e| PkiError::io(dir, e))?;
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            PkiError::Config(format!(
                "another run is making a PKI in {} right now; let it finish",
                dir.display()
            ))
        },
    )?;
    let present = pki_files(dir)?;
    refuse(&present)?;
    // What an earlier run killed while writing left.
    crate::files::remove_dead_temporaries(dir).map_err(|e| PkiError::io(dir, e))?;
    // Everything that can be refused is made before anything is written: a refused run
    // (a bad trust domain, say) leaves the directory as it was, its CA key included.
    let ca = CertificateAuthority::generate(
        &format!("Tidemark development CA ({trust_domain})"),
        Validity::days_from_now(DEV_CA_DAYS),
    )?;
    let leaf = Validity::days_from_now(DEV_LEAF_DAYS);
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"], leaf)?;
    let mut clients = Vec::new();
    for principal in sample_principals(trust_domain)? {
        clients.push((
            profile_stem(&principal.role()),
            ca.issue_client(&principal, leaf)?,
        ));
    }

    // Until the last file is placed, the directory holds a mix of two PKIs' files (or
    // part of one), and says so.
    crate::files::replace(&unfinished, UNFINISHED_TEXT.as_bytes())
        .map_err(|e| PkiError::io(&unfinished, e))?;
    let replaced = move_aside(dir, &present)?;
    let mut written = vec![write_private(&dir.join("ca.key"), &ca.key_pem())?];
    written.extend(write_pair(dir, "server", &server)?);
    for (stem, issued) in &clients {
        written.extend(write_pair(dir, stem, issued)?);
    }

    // The server's receipt key, and one report-signing key per sample state.
    written.extend(write_signing_key(&dir.join("receipt"))?.1);
    for state in SAMPLE_STATES {
        let stem = dir.join(format!("{}-signing", state.to_ascii_lowercase()));
        written.extend(write_signing_key(&stem)?.1);
    }
    written.push(write_public(&dir.join("README.md"), DEV_PKI_README)?);
    crate::files::replace(&ca_path, ca.cert_pem().as_bytes())
        .map_err(|e| PkiError::io(&ca_path, e))?;
    written.push(ca_path);
    // Last: what says the PKI is whole.
    fs::remove_file(&unfinished).map_err(|e| PkiError::io(&unfinished, e))?;
    Ok(DevPki { written, replaced })
}

/// What [`init_dev_pki`] did.
#[derive(Debug)]
pub struct DevPki {
    /// The files written, `ca.pem` last.
    pub written: Vec<PathBuf>,
    /// Where the files it found (an old PKI's, or an unfinished run's) were moved.
    pub replaced: Option<PathBuf>,
}

/// The files in `dir` that belong to a PKI or to a server that used it, in name order:
/// keys, certificates, CSRs, CRLs and note keys (`*.key`, `*.pem`, `*.csr`, `*.vkey`),
/// and a server's journals (`access-journal.json`, `*.journal`). A missing `dir` has
/// none.
fn pki_files(dir: &Path) -> Result<Vec<PathBuf>, PkiError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PkiError::io(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PkiError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == "access-journal.json"
            || [".key", ".pem", ".csr", ".vkey", ".journal"]
                .iter()
                .any(|ext| name.ends_with(ext));
        let directory = entry.file_type().is_ok_and(|t| t.is_dir());
        if ours && !name.starts_with('.') && !directory {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Moves `files` (of `dir`) into a new `dir/replaced-<UTC time>/`, which it returns (none
/// when there are no files): renames within one file system, nothing copied or lost.
fn move_aside(dir: &Path, files: &[PathBuf]) -> Result<Option<PathBuf>, PkiError> {
    if files.is_empty() {
        return Ok(None);
    }
    let now = OffsetDateTime::now_utc();
    let stamp = format!(
        "replaced-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut aside = dir.join(&stamp);
    let mut n = 1;
    loop {
        match fs::create_dir(&aside) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                n += 1;
                aside = dir.join(format!("{stamp}.{n}"));
            }
            Err(e) => return Err(PkiError::io(&aside, e)),
        }
    }
    for file in files {
        let to = aside.join(file.file_name().unwrap_or_default());
        fs::rename(file, &to).map_err(|e| PkiError::io(file, e))?;
    }
    Ok(Some(aside))
}

/// The file that says a development PKI is being made or replaced in its directory,
/// there until its last file is placed.
const UNFINISHED: &str = ".pki-unfinished";
const UNFINISHED_TEXT: &str = "`tidemark pki init` is making the PKI in this directory; \
    if no run is going on, one was stopped part-way: run it again.\n";

/// Refuses the certificates directory `dir` while a `pki init` there has not finished
/// (or was stopped part-way): its files are then a mix of two PKIs, or part of one.
pub fn check_finished(dir: &Path) -> Result<(), PkiError> {
    if dir.join(UNFINISHED).exists() {
        return Err(PkiError::Unfinished(dir.to_owned()));
    }
    Ok(())
}

/// What `certs/README.md` says about a development PKI: the repository's own file, so a
/// PKI made anywhere carries the same text (and one made in the repository's `certs/`
/// leaves its README unchanged).
const DEV_PKI_README: &str = include_str!("../certs/README.md");

/// Makes an Ed25519 signing key and writes `<stem>.key` (PKCS#8, 0600) and
/// `<stem>.pub.pem`; returns the key with the paths written.
pub fn write_signing_key(stem: &Path) -> Result<(SigningKey, [PathBuf; 2]), PkiError> {
    signing_key_files(stem, true)
}

/// As [`write_signing_key`], but never replacing a file: if `<stem>.key` or
/// `<stem>.pub.pem` exists (made by another run at the same moment, say), nothing is
/// left written and the error is [`PkiError::Exists`].
pub fn write_new_signing_key(stem: &Path) -> Result<(SigningKey, [PathBuf; 2]), PkiError> {
    signing_key_files(stem, false)
}

/// A new signing key in `<stem>.key` and `<stem>.pub.pem`, replacing files there or not.
fn signing_key_files(stem: &Path, replace: bool) -> Result<(SigningKey, [PathBuf; 2]), PkiError> {
    let (key, pem) = SigningKey::generate().map_err(|e| PkiError::Config(e.to_string()))?;
    let with_suffix = |suffix: &str| {
        let mut path = stem.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let (key_path, pub_path) = (with_suffix(".key"), with_suffix(".pub.pem"));
    let public = key.public_key().to_spki_pem();
    if replace {
        write_private(&key_path, &pem)?;
        write_public(&pub_path, &public)?;
    } else {
        write_new(&key_path, &pem, true)?;
        if let Err(e) = write_new(&pub_path, &public, false) {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
    }
    Ok((key, [key_path, pub_path]))
}

fn write_pair(dir: &Path, stem: &str, issued: &IssuedCert) -> Result<[PathBuf; 2], PkiError> {
    Ok([
        write_public(&dir.join(format!("{stem}.pem")), &issued.cert_pem)?,
        write_private(&dir.join(format!("{stem}.key")), &issued.key_pem)?,
    ])
}

fn write_public(path: &Path, contents: &str) -> Result<PathBuf, PkiError> {
    crate::files::replace(path, contents.as_bytes()).map_err(|e| PkiError::io(path, e))?;
    Ok(path.to_owned())
}

/// Writes a private key readable by its owner only (0600), replacing any old file; whole
/// or not at all ([`crate::files::replace_private`]).
pub fn write_private(path: &Path, contents: &str) -> Result<PathBuf, PkiError> {
    crate::files::replace_private(path, contents.as_bytes()).map_err(|e| PkiError::io(path, e))?;
    Ok(path.to_owned())
}

/// Writes `contents` to a new file at `path` (readable by its owner only when
/// `private`), whole or not at all, never replacing one: an existing file is
/// [`PkiError::Exists`] ([`crate::files::create_new`]).
pub fn write_new(path: &Path, contents: &str, private: bool) -> Result<PathBuf, PkiError> {
    crate::files::create_new(path, contents.as_bytes(), private).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            PkiError::Exists(path.to_owned())
        } else {
            PkiError::io(path, e)
        }
    })?;
    Ok(path.to_owned())
}

/// What went wrong making or loading certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error(
        "{} already exists; pass --force to replace the PKI (its files are moved into a \
         replaced-<time> directory beside them, and its certificates stop working)",
        .0.display()
    )]
    /// A file that would be overwritten exists.
    Exists(PathBuf),
    #[error(
        "the PKI in {} is being made by `tidemark pki init`, or a run of it was stopped \
         part-way (its files may be a mix of two PKIs): let it finish, or run `tidemark pki \
         init --dir {}` again (it finishes the run; files it replaces are kept in a \
         replaced-<time> directory beside them)",
        .0.display(), .0.display()
    )]
    /// A `pki init` has not finished in the directory.
    Unfinished(PathBuf),
    #[error(
        "{} holds a PKI's files ({} among them) but no ca.pem: put ca.pem back (from a \
         backup), or make a new PKI with `tidemark pki init --force --dir {}` (the files \
         there are moved into a replaced-<time> directory; certificates of the old CA stop \
         working, and a store whose log was signed with its receipt.key can only be served \
         with that key)",
        dir.display(), found.display(), dir.display()
    )]
    /// A directory with PKI files and no `ca.pem`: not a place for a new PKI.
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// A PKI file found in it.
        found: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error("certificate error: {0}")]
    /// Certificate generation or signing failed.
    Certificate(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    /// The system's random source failed.
    Random,
    #[error("{0}")]
    /// A setting is unusable.
    Config(String),
    #[error("{0}")]
    /// A certificate signing request is unusable.
    Csr(String),
}

impl PkiError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSR whose Ed25519 key is of small order is refused, saying why, before its
    /// signature is checked (anyone can make one that verifies); the same CSR with its
    /// real key is certified.
    #[test]
    fn a_csr_with_an_ed25519_key_of_small_order_is_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://t.test/state/AUS/node/n".try_into().unwrap(),
        )];
        let csr = params.serialize_request(&key).unwrap();
        let pem = csr.pem().unwrap();
        assert_eq!(read_csr(&pem).unwrap().key_type(), "Ed25519");
        let mut der = csr.der().to_vec();
        let raw = rcgen::PublicKeyData::der_bytes(&key).to_vec();
        let at = der.windows(32).position(|w| w == raw.as_slice()).unwrap();
        der[at..at + 32].copy_from_slice(&{
            let mut identity = [0; 32];
            identity[0] = 1;
            identity
        });
        let weak = crate::signing::pem_encode("CERTIFICATE REQUEST", &der);
        let refused = read_csr(&weak).unwrap_err().to_string();
        assert!(refused.contains("small order"), "{refused}");
        // Two requests in one file: neither is taken.
        let refused = read_csr(&format!("{pem}{pem}")).unwrap_err().to_string();
        assert!(
            refused.contains("holds 2 certificate signing requests"),
            "{refused}"
        );
    }

    /// A run killed part-way left its marker and some files: the next run makes the whole
    /// PKI (the files it found moved aside) and says it is whole; once made, it is not
    /// made again without `force`.
    #[test]
    fn a_development_pki_left_part_made_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UNFINISHED), UNFINISHED_TEXT).unwrap();
        std::fs::write(dir.path().join("server.pem"), "cut short").unwrap();
        assert!(matches!(
            check_finished(dir.path()),
            Err(PkiError::Unfinished(_))
        ));
        let made = init_dev_pki(dir.path(), "tidemark.test", false).unwrap();
        assert_eq!(made.written.last(), Some(&dir.path().join("ca.pem")));
        assert!(dir.path().join("receipt.key").is_file());
        check_finished(dir.path()).unwrap();
        let aside = made.replaced.unwrap();
        assert_eq!(
            std::fs::read(aside.join("server.pem")).unwrap(),
            b"cut short"
        );
        let again = init_dev_pki(dir.path(), "tidemark.test", false);
        assert!(matches!(again, Err(PkiError::Exists(_))), "{again:?}");
    }

    /// A PKI that lost only its `ca.pem` is not made anew over its keys without `force`
    /// (tester A of 2026-12-07: `serve` and `pki init` overwrote `ca.key` and
    /// `receipt.key`, and the store's log could never be served again); with `force`,
    /// every file of the old PKI and its server is moved aside, none lost.
    #[test]
    fn a_pki_without_its_ca_pem_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        init_dev_pki(dir.path(), "tidemark.test", false).unwrap();
        std::fs::write(dir.path().join("access-journal.json"), "{}").unwrap();
        std::fs::write(dir.path().join("log.vkey"), "old\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let (ca_key, receipt_key, ca_pem) = (read("ca.key"), read("receipt.key"), read("ca.pem"));
        std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
        let refused = init_dev_pki(dir.path(), "tidemark.test", false).unwrap_err();
        assert!(matches!(refused, PkiError::Incomplete { .. }), "{refused}");
        assert!(refused.to_string().contains("but no ca.pem"), "{refused}");
        assert_eq!(read("ca.key"), ca_key);
        assert_eq!(read("receipt.key"), receipt_key);
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();

        let aside = init_dev_pki(dir.path(), "tidemark.test", true)
            .unwrap()
            .replaced
            .unwrap();
        assert!(
            aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("replaced-"),
            "{aside:?}"
        );
        assert_eq!(std::fs::read(aside.join("ca.key")).unwrap(), ca_key);
        assert_eq!(
            std::fs::read(aside.join("receipt.key")).unwrap(),
            receipt_key
        );
        assert_eq!(std::fs::read(aside.join("ca.pem")).unwrap(), ca_pem);
        for server_written in ["access-journal.json", "log.vkey"] {
            assert!(aside.join(server_written).is_file(), "{server_written}");
            assert!(
                !dir.path().join(server_written).exists(),
                "{server_written}"
            );
        }
        assert_ne!(read("ca.key"), ca_key);
        assert_eq!(read("notes.txt"), b"mine", "what is no PKI file stays");
        check_finished(dir.path()).unwrap();
    }

    /// A run refused for its trust domain writes nothing — with `force` over a PKI, its
    /// CA key stays — and a run clears what a killed one left (its temporary files).
    #[test]
    fn a_refused_development_pki_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        for bad in ["BAD DOMAIN", "Upper.Case", ""] {
            assert!(init_dev_pki(&fresh, bad, false).is_err(), "{bad:?}");
            assert!(!fresh.exists(), "{bad:?}");
        }
        init_dev_pki(dir.path(), "tidemark.test", false).unwrap();
        let files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            let mut all: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let path = e.unwrap().path();
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    (path, bytes)
                })
                .collect();
            all.sort();
            all
        };
        let before = files(dir.path());
        for bad in ["BAD DOMAIN", "Upper.Case"] {
            assert!(init_dev_pki(dir.path(), bad, true).is_err(), "{bad:?}");
            assert!(files(dir.path()) == before, "{bad:?} changed the PKI");
        }
        let dead = dir.path().join(".ca.key.999999999.0.tmp");
        let other = dir.path().join(".notes.txt.tmp");
        std::fs::write(&dead, "half a key").unwrap();
        std::fs::write(&other, "not ours").unwrap();
        init_dev_pki(dir.path(), "tidemark.test", true).unwrap();
        assert!(!dead.exists(), "a killed run's temporary file is left");
        assert!(other.exists(), "a file not of that shape is removed");
    }
}
