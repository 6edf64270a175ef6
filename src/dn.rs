//! Distinguished names as people write them: RFC 4514 strings, and the comparison of a
//! name someone typed with a certificate's.
//!
//! A name is written most specific first (the reverse of its DER order), its RDNs
//! separated by `,` and the attributes of one RDN by `+`; a value's `"`, `+`, `,`, `;`,
//! `<`, `>` and `\`, a leading `#` or space and a trailing space are escaped with `\`
//! (RFC 4514 §2.4). Attribute types use the short names OpenSSL's `-nameopt rfc2253`
//! prints (CN, O, OU, C, L, ST, serialNumber, emailAddress, DC, UID, …), other types
//! their dotted OID; a value that is not a string is `#` and the hex of its bytes. So an
//! ASCII name reads exactly as `openssl x509 -noout -issuer -nameopt rfc2253` prints it.
//!
//! Names compare (RFC 5280 §7.1, simplified) RDN by RDN, attribute types by OID and
//! string values without regard to case or to the string type that encodes them: two
//! certificates whose names differ only so name one CA to a person, and a bundle holding
//! two such CAs with different keys is refused (`tls::check_ca_bundle`).

use x509_parser::{
    der_parser::oid::Oid,
    x509::{AttributeTypeAndValue, X509Name},
};

/// Short names of attribute types, by OID (OpenSSL's, which include RFC 4514's).
const SHORT_NAMES: [(&str, &str); 18] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

/// Other names people write for the same types (RFC 4514 §3, OpenSSL long names).
const ALIASES: [(&str, &str); 6] = [
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("2.5.4.3", "commonName"),
    ("2.5.4.10", "organizationName"),
    ("2.5.4.11", "organizationalUnitName"),
    ("2.5.4.6", "countryName"),
];

/// `name` as RFC 4514 writes it.
pub(crate) fn to_rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    format!(
                        "{}={}",
                        type_name(attribute.attr_type()),
                        escaped(&value_text(attribute))
                    )
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// A name as it compares: its RDNs in DER order, each a sorted list of (type OID,
/// value folded to lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NameKey(Vec<Vec<(String, String)>>);

impl NameKey {
    /// The key of a certificate's name.
    pub(crate) fn of(name: &X509Name<'_>) -> Self {
        Self(
            name.iter()
                .map(|rdn| {
                    let mut attributes: Vec<(String, String)> = rdn
                        .iter()
                        .map(|a| (a.attr_type().to_id_string(), fold(&value_text(a))))
                        .collect();
                    attributes.sort();
                    attributes
                })
                .collect(),
        )
    }

    /// The key of a name written as RFC 4514 does (`CN=Partner CA,O=Ministry`), with
    /// types by short name, alias or dotted OID in any case, and values escaped with
    /// `\c` or `\XX`, or written `#hex`; what does not read as one says why.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the name is empty".to_owned());
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(text, ',') {
            let mut attributes = Vec::new();
            for attribute in split_unescaped(rdn, '+') {
                let (kind, value) = attribute
                    .split_once('=')
                    .ok_or_else(|| format!("{attribute:?} is not TYPE=VALUE"))?;
                let oid = type_oid(kind.trim())
                    .ok_or_else(|| format!("{:?} is not an attribute type", kind.trim()))?;
                attributes.push((oid, fold(&unescaped(value)?)));
            }
            attributes.sort();
            rdns.push(attributes);
        }
        rdns.reverse();
        Ok(Self(rdns))
    }
}

/// A value as it compares: lower case, runs of white space one space, none at the ends
/// (RFC 4518's caseIgnoreMatch, for the characters names use).
fn fold(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn type_name(oid: &Oid<'_>) -> String {
    let id = oid.to_id_string();
    SHORT_NAMES
        .iter()
        .find(|(o, _)| *o == id)
        .map_or(id, |(_, short)| (*short).to_owned())
}

/// The OID a written attribute type names: a short name or alias in any case, or a
/// dotted OID (`2.5.4.3`, or `OID.2.5.4.3`).
fn type_oid(kind: &str) -> Option<String> {
    if let Some((oid, _)) = SHORT_NAMES
        .iter()
        .chain(&ALIASES)
        .find(|(_, name)| name.eq_ignore_ascii_case(kind))
    {
        return Some((*oid).to_owned());
    }
    let dotted = kind
        .strip_prefix("OID.")
        .or_else(|| kind.strip_prefix("oid."))
        .unwrap_or(kind);
    let numbers: Vec<&str> = dotted.split('.').collect();
    (numbers.len() >= 2
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
    .then(|| dotted.to_owned())
}

/// An attribute's value as text: its string, or `#` and the hex of its bytes.
fn value_text(attribute: &AttributeTypeAndValue<'_>) -> String {
    match attribute.as_str() {
        Ok(text) => text.to_owned(),
        Err(_) => format!("#{}", hex::encode(attribute.attr_value().data)),
    }
}

/// `value` escaped as RFC 4514 §2.4 asks (a `#hex` value as it is).
fn escaped(value: &str) -> String {
    if value.starts_with('#')
        && value.len() > 1
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return value.to_owned();
    }
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (at, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if at == 0 => out.push_str("\\#"),
            ' ' if at == 0 || at == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `text` split at each `separator` that no `\` escapes.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaping) = (0, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaping => escaping = false,
            '\\' => escaping = true,
            c if c == separator => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A written value, its escapes undone: `\c`, `\XX` (bytes of UTF-8), or a whole
/// `#hex` value (kept as written: it compares as the same form of a certificate's).
fn unescaped(value: &str) -> Result<String, String> {
    let value = value.trim_start();
    if value.starts_with('#') {
        return Ok(value.to_ascii_lowercase());
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut chars = value.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            let mut buffer = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            continue;
        }
        let pair = value
            .get(at + 1..at + 3)
            .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        match (pair, chars.next()) {
            (Some(pair), Some(_)) => {
                chars.next();
                bytes.push(u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?);
            }
            (None, Some((_, escaped))) => {
                let mut buffer = [0; 4];
                bytes.extend_from_slice(escaped.encode_utf8(&mut buffer).as_bytes());
            }
            (_, None) => return Err(format!("{value:?} ends with a lone \\")),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{value:?} escapes bytes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(subject: &str, printable: bool) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for part in subject.split('/').filter(|p| !p.is_empty()) {
            let (kind, value) = part.split_once('=').unwrap();
            let kind = match kind {
                "CN" => rcgen::DnType::CommonName,
                "O" => rcgen::DnType::OrganizationName,
                "C" => rcgen::DnType::CountryName,
                other => rcgen::DnType::CustomDnType(
                    other.split('.').map(|n| n.parse().unwrap()).collect(),
                ),
            };
            let value = if printable {
                rcgen::DnValue::PrintableString(value.try_into().unwrap())
            } else {
                rcgen::DnValue::Utf8String(value.to_owned())
            };
            params.distinguished_name.push(kind, value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn subject(der: &[u8]) -> (String, NameKey) {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        (to_rfc4514(cert.subject()), NameKey::of(cert.subject()))
    }

    /// Written most specific first, escaped, with OpenSSL's short names: what
    /// `-nameopt rfc2253` prints.
    #[test]
    fn names_are_written_as_rfc_4514_and_openssl_write_them() {
        let (text, _) = subject(&name_of("/C=AU/O=Ops, Exchange/CN=Partner CA", false));
        assert_eq!(text, "CN=Partner CA,O=Ops\\, Exchange,C=AU");
        let (text, _) = subject(&name_of("/CN= #lead/2.5.4.5=980995b3", false));
        assert_eq!(text, "serialNumber=980995b3,CN=\\ #lead");
    }

    /// Two names that differ by an escaped comma are two names; names that differ only
    /// in case or string type are one.
    #[test]
    fn names_compare_by_structure_not_by_their_text() {
        let (one, one_key) = subject(&name_of("/CN=Ops, O=Exchange", false));
        let (two, two_key) = subject(&name_of("/O=Exchange/CN=Ops", false));
        assert_ne!(one, two);
        assert_ne!(one_key, two_key);
        assert_eq!(NameKey::parse(&one).unwrap(), one_key);
        assert_eq!(NameKey::parse(&two).unwrap(), two_key);
        let (_, utf8) = subject(&name_of("/CN=Partner CA", false));
        let (_, printable) = subject(&name_of("/CN=Partner CA", true));
        assert_eq!(utf8, printable);
        for spelling in [
            "CN=Partner CA",
            "cn=partner ca",
            "2.5.4.3=Partner CA",
            "OID.2.5.4.3=Partner\\20CA",
            "commonName=Partner  CA",
        ] {
            assert_eq!(NameKey::parse(spelling).unwrap(), utf8, "{spelling}");
        }
        for bad in ["", "Partner CA", "XX=Partner", "CN=Partner\\"] {
            assert!(NameKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a name's values hold, its RFC 4514 text reads back as the same name.
        #[test]
        fn a_written_name_reads_back_as_itself(
            cn in "[ -.0-~]{1,20}",
            o in "[ -.0-~é]{1,20}",
        ) {
            let der = name_of(&format!("/O={o}/CN={cn}"), false);
            let (text, key) = subject(&der);
            proptest::prop_assert_eq!(NameKey::parse(&text).unwrap(), key, "{}", text);
        }
    }
}
