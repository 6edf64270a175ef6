//! Who a caller is: the [`Principal`] named by a client certificate's SPIFFE ID.
//!
//! Nothing in a certificate grants anything except its single URI subject alternative
//! name, of one of these forms (see `DESIGN.md`, trust model):
//!
//! ```text
//! spiffe://<trust-domain>/state/<ISO3>/node/<name>
//! spiffe://<trust-domain>/state/<ISO3>/analyst/<name>
//! spiffe://<trust-domain>/regional/analyst/<name>
//! spiffe://<trust-domain>/operator/<name>
//! ```
//!
//! A [`PeerIdentity`] can only be made by [`PeerIdentity::from_certificate`], which checks
//! all of this, so code that holds one knows the caller was authenticated.

use std::fmt;

use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::country::{CountryCode, CountryCodeError};

/// The longest principal name accepted (`canberra-1`, `jakarta-coastguard`, …).
const MAX_NAME_LEN: usize = 64;

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
        let (domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::UnknownPath(uri.to_owned()))?;
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

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn role(&self) -> Role {
        self.role
    }

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
    not_before: i64,
    not_after: i64,
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
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The certificate's serial number, lower-case hex without separators.
    pub fn serial(&self) -> &str {
        &self.serial
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

/// Formats certificate serial bytes as lower-case hex, leading zero bytes dropped.
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(first) => &raw[first..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    hex::encode(trimmed)
}

/// Why a certificate or SPIFFE ID does not name a Tidemark principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("the client certificate could not be read: {0}")]
    Unreadable(String),
    #[error(
        "the client certificate has no URI subject alternative name; a Tidemark certificate \
         names its holder as spiffe://<trust-domain>/state/<ISO3>/node/<name> (or analyst, \
         regional/analyst, operator)"
    )]
    NoUri,
    #[error(
        "the client certificate has {0} URI subject alternative names; exactly one SPIFFE ID \
         is allowed"
    )]
    ManyUris(usize),
    #[error("{0:?} is not a SPIFFE ID (it must start with spiffe://)")]
    NotSpiffe(String),
    #[error("the certificate belongs to trust domain {found:?}, but this exchange is {expected:?}")]
    WrongTrustDomain { found: String, expected: String },
    #[error(
        "{0:?} is not a Tidemark identity; expected /state/<ISO3>/node/<name>, \
         /state/<ISO3>/analyst/<name>, /regional/analyst/<name> or /operator/<name>"
    )]
    UnknownPath(String),
    #[error("the certificate's state code is invalid: {0}")]
    State(#[from] CountryCodeError),
    #[error(
        "{0:?} is not a valid principal name: use 1 to {MAX_NAME_LEN} characters from a-z, \
         0-9, '-', '_' and '.'"
    )]
    BadName(String),
    #[error("{0:?} is not a valid trust domain: use lower-case letters, digits, '-' and '.'")]
    BadTrustDomain(String),
}

fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_owned()))
    }
}

fn check_trust_domain(domain: &str) -> Result<(), IdentityError> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadTrustDomain(domain.to_owned()))
    }
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
            ("spiffe://tidemark.test/operator/", "principal name"),
            ("spiffe://tidemark.test/operator/Bad Name", "principal name"),
            ("spiffe://tidemark.test", "not a Tidemark"),
        ];
        for (uri, why) in cases {
            let err = Principal::from_spiffe_id(uri, TD).unwrap_err().to_string();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x1f, 0xa0]), "1fa0");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
