//! Who a caller is: the [`Principal`] named by a client certificate's SPIFFE ID.
//!
//! Nothing in a certificate grants anything except its single URI subject alternative
//! name, of one of these forms (see `docs/design.md`, trust model):
//!
//! ```text
//! spiffe://<trust-domain>/state/<ISO3>/node/<name>
//! spiffe://<trust-domain>/state/<ISO3>/analyst/<name>
//! spiffe://<trust-domain>/regional/analyst/<name>
//! spiffe://<trust-domain>/operator/<name>
//! ```
//!
//! Every SPIFFE ID is held to the SPIFFE ID specification (spiffe/spiffe
//! `standards/SPIFFE-ID.md` §2): at most 2,048 bytes, no port, user info, query or
//! fragment, no percent-encoding, no empty, `.` or `..` path segments. Tidemark is
//! stricter where the spec leaves room: a principal name is 1–64 characters from
//! `a-z 0-9 - _ .` and starts with a letter or digit (one spelling per name, and never
//! a hidden file when it names one). The same check runs when a CSR is made, when a
//! certificate is issued and when a certificate authenticates.
//!
//! A [`PeerIdentity`] can only be made by [`PeerIdentity::from_certificate`], which checks
//! all of this, so code that holds one knows the caller was authenticated.

use std::{fmt, sync::Arc};

use rustls::pki_types::CertificateDer;

use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::country::{CountryCode, CountryCodeError};

/// The longest principal name accepted (`canberra-1`, `jakarta-coastguard`, …).
const MAX_NAME_LEN: usize = 64;
/// The longest SPIFFE ID the specification allows, in bytes.
const MAX_SPIFFE_ID_LEN: usize = 2048;

/// What a principal is, and for state roles, which state it acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A state's node system: submits its state's reports, reads others'.
    Node(CountryCode),
    /// A state's analyst: aggregate queries under its state's standing.
    StateAnalyst(CountryCode),
    /// The regional office's analyst: aggregates over all contributed data.
    RegionalAnalyst,
    /// An exchange operator: enrolment, certificates, keys.
    Operator,
}

impl Role {
    /// The state this role acts for, if any.
    pub fn state(&self) -> Option<CountryCode> {
        match self {
            Self::Node(state) | Self::StateAnalyst(state) => Some(*state),
            Self::RegionalAnalyst | Self::Operator => None,
        }
    }

    /// A short human name for the role.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Node(_) => "node",
            Self::StateAnalyst(_) => "state analyst",
            Self::RegionalAnalyst => "regional analyst",
            Self::Operator => "operator",
        }
    }

    /// The label with its article, for messages: "a node", "an operator", ….
    pub fn with_article(&self) -> &'static str {
        match self {
            Self::Node(_) => "a node",
            Self::StateAnalyst(_) => "a state analyst",
            Self::RegionalAnalyst => "a regional analyst",
            Self::Operator => "an operator",
        }
    }
}

/// An authenticated identity: a role and a name within one trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    trust_domain: String,
    role: Role,
    name: String,
}

impl Principal {
    /// Builds a principal from its parts, checking the trust domain and name.
    pub fn new(trust_domain: &str, role: Role, name: &str) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain)?;
        check_name(name)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role,
            name: name.to_owned(),
        })
    }

    /// Parses a SPIFFE ID and checks that it belongs to `trust_domain`.
    pub fn from_spiffe_id(uri: &str, trust_domain: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(uri.to_owned()))?;
        if uri.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdentityError::TooLong(uri.len()));
        }
        let (domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::UnknownPath(uri.to_owned()))?;
        check_trust_domain(domain)?;
        check_path(uri, path)?;
        if domain != trust_domain {
            return Err(IdentityError::WrongTrustDomain {
                found: domain.to_owned(),
                expected: trust_domain.to_owned(),
            });
        }
        let segments: Vec<&str> = path.split('/').collect();
        let (role, name) = match segments.as_slice() {
            ["state", state, "node", name] => (Role::Node(CountryCode::parse(state)?), *name),
            ["state", state, "analyst", name] => {
                (Role::StateAnalyst(CountryCode::parse(state)?), *name)
            }
            ["regional", "analyst", name] => (Role::RegionalAnalyst, *name),
            ["operator", name] => (Role::Operator, *name),
            _ => return Err(IdentityError::UnknownPath(uri.to_owned())),
        };
        Self::new(domain, role, name)
    }

    /// The state of the principal the SPIFFE ID `id` names, of whatever trust domain, if
    /// it is a state's (its node or analyst).
    pub fn state_in_id(id: &str) -> Option<CountryCode> {
        let domain = id.strip_prefix("spiffe://")?.split('/').next()?;
        Self::from_spiffe_id(id, domain).ok()?.state()
    }

    /// Whether `id` is, in its one spelling, the SPIFFE ID of a principal of its own
    /// trust domain, or that domain's server (`spiffe://<trust domain>/server`, which
    /// records what the server does itself).
    pub fn is_canonical_id(id: &str) -> bool {
        let Some((domain, path)) = id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
        else {
            return false;
        };
        if path == "server" {
            return check_trust_domain(domain).is_ok();
        }
        Self::from_spiffe_id(id, domain).is_ok_and(|p| p.spiffe_id() == id)
    }

    /// The SPIFFE ID naming this principal.
    pub fn spiffe_id(&self) -> String {
        let domain = &self.trust_domain;
        let name = &self.name;
        match self.role {
            Role::Node(state) => format!("spiffe://{domain}/state/{state}/node/{name}"),
            Role::StateAnalyst(state) => format!("spiffe://{domain}/state/{state}/analyst/{name}"),
            Role::RegionalAnalyst => format!("spiffe://{domain}/regional/analyst/{name}"),
            Role::Operator => format!("spiffe://{domain}/operator/{name}"),
        }
    }

    /// The SPIFFE trust domain (the exchange's name).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// What the principal may do.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The last path segment: the node's, analyst's or operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state this principal acts for, if any.
    pub fn state(&self) -> Option<CountryCode> {
        self.role.state()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

/// An authenticated peer: its principal and the certificate that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    principal: Principal,
    serial: String,
    /// The certificate's issuer's name (RFC 4514).
    issuer_name: String,
    not_before: i64,
    not_after: i64,
    /// The chain it presented, leaf first: checked again against the CA bundle as it
    /// stands after a reload.
    chain: Arc<[CertificateDer<'static>]>,
    /// The earliest `notAfter` of the chain (Unix seconds): when an intermediate CA
    /// expires before the leaf does, its certificates' rights end then.
    chain_not_after: i64,
    /// Each certificate of the chain by issuer and serial, leaf first: what a
    /// revocation names (an intermediate CA's revocation ends its certificates' rights).
    certificates: Arc<[CertificateId]>,
    /// [`chain_digest`] of the chain: names it in the trust state's per-chain answers,
    /// made once rather than at every check of a stream's items.
    chain_key: [u8; 32],
    /// SHA-256 of the leaf's SubjectPublicKeyInfo: names its key, whatever certifies it.
    key_fingerprint: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// SHA-256 over a chain's certificates, each preceded by its length: names the chain.
pub fn chain_digest(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for der in chain {
        digest.update(&(der.len() as u64).to_be_bytes());
        digest.update(der.as_ref());
    }
    let mut out = [0; 32];
    out.copy_from_slice(digest.finish().as_ref());
    out
}

/// One certificate as a revocation names it (RFC 5280 §5.1.2.1, §5.3.3): its issuer's
/// name and its serial number, which is unique per issuer only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateId {
    /// [`issuer_id`] of the issuer's name.
    pub issuer: String,
    /// The serial, canonical ([`serial_hex`]).
    pub serial: String,
}

impl CertificateId {
    /// The issuer and serial of a parsed certificate.
    pub(crate) fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        Self {
            issuer: issuer_id(cert.issuer().as_raw()),
            serial: serial_hex(cert.raw_serial()),
        }
    }
}

/// How an issuer is named in revocations: the lower-case hex SHA-256 of its
/// distinguished name's DER, compared byte for byte as webpki matches a CRL's issuer to
/// a certificate's.
pub fn issuer_id(name_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, name_der))
}

/// Why a certificate's serial number breaks RFC 5280 §4.1.2.2 (a positive integer of at
/// most 20 content octets), if it does: such a serial names no certificate a revocation
/// can name without ambiguity (a negative one reads as a positive one's bytes).
pub(crate) fn nonconforming_serial(raw: &[u8]) -> Option<&'static str> {
    if raw.is_empty() || raw.len() > MAX_SERIAL_BYTES {
        Some("longer than the 20 octets RFC 5280 §4.1.2.2 allows")
    } else if raw[0] & 0x80 != 0 {
        Some("negative, which RFC 5280 §4.1.2.2 forbids")
    } else if raw.iter().all(|b| *b == 0) {
        Some("zero, which RFC 5280 §4.1.2.2 forbids")
    } else {
        None
    }
}

impl PeerIdentity {
    /// Reads the principal from a DER certificate that the TLS layer has already verified
    /// (chain to the exchange CA, validity, client-auth usage).
    pub fn from_certificate(der: &[u8], trust_domain: &str) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let uris: Vec<&str> = sans
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        let uri = match uris.as_slice() {
            [] => return Err(IdentityError::NoUri),
            [uri] => *uri,
            _ => return Err(IdentityError::ManyUris(uris.len())),
        };
        let principal = Principal::from_spiffe_id(uri, trust_domain)?;
        Ok(Self {
            principal,
            serial: serial_hex(cert.raw_serial()),
            issuer_name: crate::dn::to_rfc4514(cert.issuer()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            chain: Arc::from([CertificateDer::from(der.to_vec())]),
            chain_not_after: cert.validity().not_after.timestamp(),
            certificates: Arc::from([CertificateId::of(&cert)]),
            chain_key: chain_digest(&[CertificateDer::from(der)]),
            key_fingerprint: sha256(cert.public_key().raw),
        })
    }

    /// SHA-256 of its certificate's SubjectPublicKeyInfo.
    pub fn key_fingerprint(&self) -> &[u8; 32] {
        &self.key_fingerprint
    }

    /// The same peer with the whole chain it presented (leaf first, as the TLS layer
    /// has it): [`Self::from_certificate`] keeps the leaf alone.
    #[must_use]
    pub fn with_chain(mut self, chain: &[CertificateDer<'static>]) -> Self {
        if !chain.is_empty() {
            self.chain = Arc::from(chain);
            self.chain_key = chain_digest(chain);
            self.chain_not_after = first_expiry(chain).min(self.not_after);
            let intermediates = chain.iter().skip(1).filter_map(|der| {
                x509_parser::parse_x509_certificate(der)
                    .ok()
                    .map(|(_, cert)| CertificateId::of(&cert))
            });
            let leaf = self.certificates.first().cloned();
            self.certificates = leaf.into_iter().chain(intermediates).collect();
        }
        self
    }

    /// [`chain_digest`] of the chain it presented.
    pub fn chain_key(&self) -> [u8; 32] {
        self.chain_key
    }

    /// Each certificate of the chain it presented by issuer and serial, leaf first.
    pub fn certificates(&self) -> &[CertificateId] {
        &self.certificates
    }

    /// When the first certificate of its chain expires (Unix seconds): the leaf's
    /// `notAfter`, or an intermediate CA's if that comes first.
    pub fn chain_not_after(&self) -> i64 {
        self.chain_not_after
    }

    /// The chain the peer presented, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Who the certificate names.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The certificate's serial number, lower-case hex without separators.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The name of the CA that issued the certificate (RFC 4514), as `admin revoke
    /// --issuer` takes it.
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    /// Start of the certificate's validity, seconds since the Unix epoch.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of the certificate's validity, seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// The earliest `notAfter` (Unix seconds) among the certificates of `chain`; one that
/// does not parse counts as expired (`i64::MIN`).
pub(crate) fn first_expiry(chain: &[CertificateDer<'_>]) -> i64 {
    chain
        .iter()
        .map(|der| {
            x509_parser::parse_x509_certificate(der)
                .map_or(i64::MIN, |(_, cert)| cert.validity().not_after.timestamp())
        })
        .min()
        .unwrap_or(i64::MIN)
}

/// What a certificate that was *not* accepted claims, for the log of its refusal: its
/// serial (hex) and its SAN URIs, each cut to 100 characters; `None` when it cannot be
/// parsed. Nothing here is verified: the URIs are whatever the peer put there.
pub(crate) fn claimed_by(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let uris = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri.chars().take(100).collect()),
                    _ => None,
                })
                .take(4)
                .collect()
        })
        .unwrap_or_default();
    // A serial longer than a certificate may have (RFC 5280 §4.1.2.2) is cut, so that
    // a hostile one cannot make each refusal's log line as long as the handshake allows.
    let raw = cert.raw_serial();
    let serial = if raw.len() > MAX_SERIAL_BYTES {
        format!(
            "{}…({} bytes)",
            hex::encode(&raw[..MAX_SERIAL_BYTES]),
            raw.len()
        )
    } else {
        serial_hex(raw)
    };
    Some((serial, uris))
}

/// Formats certificate serial bytes in their one canonical form: lower-case hex of the
/// number's bytes, leading zero bytes dropped (`00` for zero).
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(first) => &raw[first..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    hex::encode(trimmed)
}

/// The longest serial number RFC 5280 §4.1.2.2 allows, in bytes.
const MAX_SERIAL_BYTES: usize = 20;

/// Reads a serial number as people write it — any case, with or without `:` separators
/// or leading zeros (`00:A1:B2`, `a1b2`) — and returns the canonical form that
/// [`serial_hex`] gives the same number, so every spelling names one certificate.
pub fn canonical_serial(text: &str) -> Result<String, SerialError> {
    // Whitespace is no part of any spelling: refused like every other identifier's.
    let trimmed = text;
    // With separators, each group is one byte of two digits (`01:02:03`); only the first
    // may have one, as a leading zero changes nothing there — `1f:a` could be 1f0a or
    // 1fa, so it is refused rather than read as either.
    let groups: Vec<&str> = trimmed.split(':').collect();
    if groups.len() > 1
        && groups
            .iter()
            .enumerate()
            .any(|(i, g)| g.is_empty() || g.len() > 2 || (i > 0 && g.len() != 2))
    {
        return Err(SerialError(text.to_owned()));
    }
    let digits: String = if groups.len() > 1 {
        groups.iter().fold(String::new(), |mut out, g| {
            if g.len() == 1 {
                out.push('0');
            }
            out.push_str(g);
            out
        })
    } else {
        trimmed.to_owned()
    }
    .to_ascii_lowercase();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SerialError(text.to_owned()));
    }
    let significant = digits.trim_start_matches('0');
    let even = if significant.len() % 2 == 1 {
        format!("0{significant}")
    } else {
        significant.to_owned()
    };
    let bytes = hex::decode(&even).map_err(|_| SerialError(text.to_owned()))?;
    // As DER writes it: a positive number whose top bit is set takes a leading 00.
    let encoded = bytes.len() + usize::from(bytes.first().is_some_and(|b| b & 0x80 != 0));
    if encoded > MAX_SERIAL_BYTES {
        return Err(SerialError(text.to_owned()));
    }
    if bytes.is_empty() {
        // RFC 5280 §4.1.2.2: a serial number is a positive integer.
        return Err(SerialError(text.to_owned()));
    }
    Ok(serial_hex(&bytes))
}

/// A string that is not a certificate serial number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a certificate serial number: give a positive number in hex (at most 20 \
     bytes as DER encodes it, so a 20-byte number below 80…; `:` between bytes allowed, \
     each byte after the first as two digits, no spaces), as `tidemark admin certs` prints it, or `openssl x509 -noout -serial` \
     after its `serial=`"
)]
pub struct SerialError(String);

/// Why a certificate or SPIFFE ID does not name a Tidemark principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("the client certificate could not be read: {0}")]
    /// The certificate could not be parsed.
    Unreadable(String),
    #[error(
        "the client certificate has no URI subject alternative name; a Tidemark certificate \
         names its holder as spiffe://<trust-domain>/state/<ISO3>/node/<name> (or analyst, \
         regional/analyst, operator)"
    )]
    /// The certificate names no URI SAN.
    NoUri,
    #[error(
        "the client certificate has {0} URI subject alternative names; exactly one SPIFFE ID \
         is allowed"
    )]
    /// The certificate names several URIs.
    ManyUris(usize),
    #[error("{0:?} is not a SPIFFE ID (it must start with spiffe://)")]
    /// The URI is not a SPIFFE ID.
    NotSpiffe(String),
    #[error("the certificate belongs to trust domain {found:?}, but this exchange is {expected:?}")]
    /// The SPIFFE ID belongs to another trust domain.
    WrongTrustDomain {
        /// The trust domain the certificate names.
        found: String,
        /// This exchange's.
        expected: String,
    },
    #[error(
        "{0:?} is not a Tidemark identity; expected /state/<ISO3>/node/<name>, \
         /state/<ISO3>/analyst/<name>, /regional/analyst/<name> or /operator/<name>"
    )]
    /// The SPIFFE ID's path names no Tidemark role.
    UnknownPath(String),
    #[error("the certificate's state code is invalid: {0}")]
    /// The path's state is not a country code.
    State(#[from] CountryCodeError),
    #[error(
        "{0:?} is not a valid principal name: use 1 to {MAX_NAME_LEN} characters from a-z, \
         0-9, '-', '_' and '.', starting with a letter or digit"
    )]
    /// The name segment is not allowed.
    BadName(String),
    #[error(
        "{0:?} is not a valid trust domain: use lower-case letters, digits, '-', '_' and '.' \
         between non-empty labels (SPIFFE ID §2.1; no port, no user info, no trailing dot)"
    )]
    /// The trust domain breaks the SPIFFE ID rules.
    BadTrustDomain(String),
    #[error(
        "{uri:?} is not a valid SPIFFE ID: {reason} (SPIFFE ID §2.2: path segments are \
         non-empty, not '.' or '..', and use only letters, digits, '.', '-' and '_')"
    )]
    /// The path breaks the SPIFFE ID rules.
    BadPath {
        /// The SPIFFE ID.
        uri: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    #[error("the SPIFFE ID is {0} bytes long; the SPIFFE ID specification allows at most 2048")]
    /// The SPIFFE ID is longer than allowed.
    TooLong(usize),
}

fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_owned()))
    }
}

/// The SPIFFE trust domain rules (SPIFFE ID §2.1): lower-case letters, digits, `-`, `.`
/// and `_`, at most 255 characters; and, as a DNS name has one spelling, no empty label
/// (`tidemark.local.`, `.tidemark`, `a..b`): certificates issued under one spelling
/// would not match a server configured with the other.
pub fn check_trust_domain(domain: &str) -> Result<(), IdentityError> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| !label.is_empty())
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadTrustDomain(domain.to_owned()))
    }
}

/// The path rules of SPIFFE ID §2.2, whatever the path names.
fn check_path(uri: &str, path: &str) -> Result<(), IdentityError> {
    let bad = |reason| {
        Err(IdentityError::BadPath {
            uri: uri.to_owned(),
            reason,
        })
    };
    for segment in path.split('/') {
        match segment {
            "" => return bad("it has an empty path segment (or a trailing '/')"),
            "." | ".." => return bad("it has a '.' or '..' path segment"),
            _ if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
            {
                return bad("a path segment has a character outside the allowed set");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "tidemark.test";

    #[test]
    fn parses_every_role_and_round_trips() {
        for (uri, role) in [
            (
                "spiffe://tidemark.test/state/AUS/node/canberra-1",
                Role::Node(CountryCode::parse("AUS").unwrap()),
            ),
            (
                "spiffe://tidemark.test/state/IDN/analyst/ana",
                Role::StateAnalyst(CountryCode::parse("IDN").unwrap()),
            ),
            (
                "spiffe://tidemark.test/regional/analyst/bkk",
                Role::RegionalAnalyst,
            ),
            ("spiffe://tidemark.test/operator/ops-1", Role::Operator),
        ] {
            let p = Principal::from_spiffe_id(uri, TD).unwrap();
            assert_eq!(p.role(), role);
            assert_eq!(p.spiffe_id(), uri);
        }
    }

    #[test]
    fn refuses_what_is_not_a_principal() {
        let cases = [
            ("https://tidemark.test/operator/x", "not a SPIFFE"),
            ("spiffe://other.test/operator/x", "trust domain"),
            ("spiffe://tidemark.test/state/XXX/node/x", "state code"),
            ("spiffe://tidemark.test/state/AUS/admin/x", "not a Tidemark"),
            ("spiffe://tidemark.test/operator/", "empty path segment"),
            (
                "spiffe://tidemark.test/operator/Bad Name",
                "outside the allowed set",
            ),
            ("spiffe://tidemark.test", "not a Tidemark"),
            ("spiffe://tidemark.test/state/AUS/node/..", "'.' or '..'"),
            ("spiffe://tidemark.test/state/AUS/node/.", "'.' or '..'"),
            (
                "spiffe://tidemark.test/state/AUS/node/.hidden",
                "principal name",
            ),
            (
                "spiffe://tidemark.test/state/AUS//node/x",
                "empty path segment",
            ),
            ("spiffe://tidemark.test/operator/x/", "empty path segment"),
            (
                "spiffe://tidemark.test/operator/a%2e",
                "outside the allowed set",
            ),
            (
                "spiffe://tidemark.test/operator/x?y",
                "outside the allowed set",
            ),
            (
                "spiffe://tidemark.test/state/AUS/node/z1#frag",
                "outside the allowed set",
            ),
            (
                "spiffe://tidemark.test/operator/x#",
                "outside the allowed set",
            ),
            ("spiffe://tidemark.test#f/operator/x", "trust domain"),
            ("spiffe://tidemark.test:443/operator/x", "trust domain"),
            ("spiffe://u@tidemark.test/operator/x", "trust domain"),
            ("spiffe://tidemark.test/operator/Ops", "principal name"),
        ];
        for (uri, why) in cases {
            let err = Principal::from_spiffe_id(uri, TD).unwrap_err().to_string();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }

    /// A refused certificate's claims are logged cut short: a serial far past the 20
    /// bytes RFC 5280 allows, and long URIs, cannot make the log line long.
    #[test]
    fn a_trust_domain_has_one_spelling() {
        for ok in ["tidemark.local", "exchange-1.example_org", "local"] {
            assert!(check_trust_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "tidemark.local.",
            ".tidemark",
            "a..b",
            "",
            "Tidemark.local",
            "a:443",
        ] {
            assert!(check_trust_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_of_a_refused_certificate_are_cut_short() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x5a; 4000]));
        let long = format!("spiffe://tidemark.local/state/AUS/node/{}", "x".repeat(500));
        params.subject_alt_names = vec![rcgen::SanType::URI(long.try_into().unwrap()); 9];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let (serial, uris) = claimed_by(&der).unwrap();
        assert_eq!(serial, format!("{}…(4000 bytes)", "5a".repeat(20)));
        assert_eq!(uris.len(), 4);
        assert!(uris.iter().all(|u| u.chars().count() == 100), "{uris:?}");
        assert_eq!(claimed_by(b"not a certificate"), None);
    }

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x1f, 0xa0]), "1fa0");
        assert_eq!(serial_hex(&[0]), "00");
    }

    #[test]
    fn every_spelling_of_a_serial_is_one_serial() {
        for text in ["1fa0", "001fa0", "00:1F:A0", "1FA0", "0001fa0"] {
            assert_eq!(canonical_serial(text).unwrap(), "1fa0", "{text}");
        }
        assert_eq!(canonical_serial("abc").unwrap(), "0abc");
        assert_eq!(canonical_serial("1:02:03").unwrap(), "010203");
        for bad in [
            "",
            "0",
            "00:00",
            "xyz",
            "12 34",
            " 1FA0 ",
            "1fa0\n",
            "\t1fa0",
            ":",
            "1::2",
            "123:4",
            "1:2:3",
            "1f:a",
            "1f:0a:",
            &"ab".repeat(21),
        ] {
            assert!(canonical_serial(bad).is_err(), "{bad}");
        }
    }

    /// RFC 5280 §4.1.2.2 serials as a certificate encodes them (DER INTEGER content):
    /// positive, at most 20 octets. A negative one (-5 is `fb`) would read as the
    /// positive `fb`'s canonical form.
    #[test]
    fn serials_rfc_5280_forbids_are_named() {
        for conforming in [&[1u8][..], &[0, 0xfb], &[0x7f; 20], &[0, 0x80]] {
            assert_eq!(nonconforming_serial(conforming), None, "{conforming:02x?}");
        }
        for bad in [
            &[][..],
            &[0],
            &[0, 0],
            &[0xfb],
            &[0x80, 1],
            &[1; 21],
            &[0; 21],
        ] {
            assert!(nonconforming_serial(bad).is_some(), "{bad:02x?}");
        }
    }

    proptest::proptest! {
        /// The canonical form of any spelling of a serial is what the certificate's own
        /// bytes give.
        #[test]
        fn canonical_serial_matches_certificate_bytes(
            first in 1u8..=255,
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..=19),
            zeros in 0usize..4,
            colons: bool,
            upper: bool,
        ) {
            let bytes = [vec![first], rest].concat();
            let mut text = format!("{}{}", "00".repeat(zeros), hex::encode(&bytes));
            if upper { text = text.to_uppercase(); }
            if colons {
                text = text.as_bytes().chunks(2)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>().join(":");
            }
            let padded = [vec![0u8; zeros], bytes.clone()].concat();
            // RFC 5280 §4.1.2.2 counts the DER content octets: a leading 00 where the
            // top bit is set.
            if bytes.len() + usize::from(first >= 0x80) > 20 {
                proptest::prop_assert!(canonical_serial(&text).is_err());
            } else {
                proptest::prop_assert_eq!(canonical_serial(&text).unwrap(), serial_hex(&padded));
            }
        }

        /// Any SPIFFE ID that parses names a principal whose ID is exactly the input, and
        /// whose path obeys the specification.
        #[test]
        fn parsed_identities_obey_the_spiffe_rules(
            role in 0usize..4,
            name in "[a-zA-Z0-9._%/ -]{0,12}",
        ) {
            let uri = match role {
                0 => format!("spiffe://{TD}/state/AUS/node/{name}"),
                1 => format!("spiffe://{TD}/state/AUS/analyst/{name}"),
                2 => format!("spiffe://{TD}/regional/analyst/{name}"),
                _ => format!("spiffe://{TD}/operator/{name}"),
            };
            if let Ok(p) = Principal::from_spiffe_id(&uri, TD) {
                proptest::prop_assert_eq!(p.spiffe_id(), uri.clone());
                let n = p.name();
                proptest::prop_assert!(n != "." && n != ".." && !n.starts_with('.'));
                proptest::prop_assert!(!n.is_empty() && n.len() <= MAX_NAME_LEN);
                proptest::prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit() || b"-_.".contains(&b)));
            }
        }
    }
}
