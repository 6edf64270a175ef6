//! Distinguished names as people write them: RFC 4514 strings, and the comparison of a
//! name someone typed with a certificate's.
//!
//! A name is written most specific first (the reverse of its DER order), its RDNs
//! separated by `,` and the attributes of one RDN by `+`; a value's `"`, `+`, `,`, `;`,
//! `<`, `>` and `\`, a leading `#` or space and a trailing space are escaped with `\`
//! (RFC 4514 §2.4), and — as OpenSSL does — control and formatting characters as the
//! `\XX` hex of their UTF-8 bytes, so a name on a terminal shows what it holds.
//! Attribute types use the short names OpenSSL's `-nameopt rfc2253` prints (CN, O, OU, C,
//! L, ST, serialNumber, emailAddress, DC, UID, …); a type known only by its dotted OID,
//! or a value that is not a string, is written `#` and the hex of the value's BER (§2.4).
//! Every string type reads as the text it holds (UTF8String, PrintableString, IA5String;
//! BMPString as UTF-16, UniversalString as UTF-32, TeletexString as ISO 8859-1). So a
//! name reads as `openssl x509 -noout -issuer -nameopt rfc2253` prints it, but for
//! non-ASCII letters, which OpenSSL escapes and this writes as they are (both read back).
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
const ALIASES: [(&str, &str); 9] = [
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("2.5.4.3", "commonName"),
    ("2.5.4.10", "organizationName"),
    ("2.5.4.11", "organizationalUnitName"),
    ("2.5.4.6", "countryName"),
    ("0.9.2342.19200300.100.1.25", "domainComponent"),
    ("1.2.840.113549.1.9.1", "E"),
    ("2.5.4.5", "SERIALNUMBER"),
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
                        value_text(attribute)
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
                        .map(|a| (a.attr_type().to_id_string(), value_key(a)))
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
                let oid = type_oid(kind.trim()).ok_or_else(|| {
                    format!(
                        "{:?} is not an attribute type this server knows: write a short name \
                         (CN, O, OU, C, L, ST, serialNumber, emailAddress, DC, UID, …) or a \
                         dotted OID",
                        kind.trim()
                    )
                })?;
                attributes.push((oid, written_key(value)?));
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

/// An attribute's value: its string, whatever string type encodes it, or `None`.
fn value_string(attribute: &AttributeTypeAndValue<'_>) -> Option<String> {
    let value = attribute.attr_value();
    let header = &value.header;
    if header.class() != x509_parser::der_parser::asn1_rs::Class::Universal {
        return None;
    }
    decode_string(header.tag().0, value.data)
}

/// The text of a universal string type's content: UTF8String, PrintableString,
/// IA5String, VisibleString and NumericString as they are, BMPString as UTF-16BE,
/// UniversalString as UTF-32BE, TeletexString as ISO 8859-1 (as OpenSSL reads it).
fn decode_string(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        12 | 18 | 19 | 22 | 26 => String::from_utf8(data.to_vec()).ok(),
        20 => Some(data.iter().map(|b| char::from(*b)).collect()),
        30 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            data.len()
                .is_multiple_of(2)
                .then(|| String::from_utf16(&units).ok())?
        }
        28 => data.len().is_multiple_of(4).then(|| {
            data.chunks_exact(4)
                .map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]])))
                .collect::<Option<String>>()
        })?,
        _ => None,
    }
}

/// The BER (DER) encoding of an attribute's value, as RFC 4514's `#hex` form holds it.
fn value_der(attribute: &AttributeTypeAndValue<'_>) -> Vec<u8> {
    let value = attribute.attr_value();
    let header = &value.header;
    let class = match header.class() {
        x509_parser::der_parser::asn1_rs::Class::Universal => 0u8,
        x509_parser::der_parser::asn1_rs::Class::Application => 1,
        x509_parser::der_parser::asn1_rs::Class::ContextSpecific => 2,
        x509_parser::der_parser::asn1_rs::Class::Private => 3,
    };
    let tag = u8::try_from(header.tag().0).unwrap_or(31).min(30);
    let mut der = vec![class << 6 | u8::from(header.constructed()) << 5 | tag];
    let len = value.data.len();
    if len < 0x80 {
        der.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | u8::try_from(bytes.len()).unwrap_or(0));
        der.extend(bytes);
    }
    der.extend_from_slice(value.data);
    der
}

/// An attribute as it is written: a known type's string value escaped, or — for a type
/// known only by its OID, or a value that is not a string — `#` and the hex of the
/// value's BER encoding (RFC 4514 §2.4).
fn value_text(attribute: &AttributeTypeAndValue<'_>) -> String {
    let known = SHORT_NAMES
        .iter()
        .any(|(oid, _)| *oid == attribute.attr_type().to_id_string());
    match value_string(attribute) {
        Some(text) if known => escaped(&text),
        _ => format!("#{}", hex::encode_upper(value_der(attribute))),
    }
}

/// An attribute's value as it compares: its string folded, or `#` and its BER in hex.
fn value_key(attribute: &AttributeTypeAndValue<'_>) -> String {
    match value_string(attribute) {
        Some(text) => fold(&text),
        None => format!("#{}", hex::encode(value_der(attribute))),
    }
}

/// `value` escaped as RFC 4514 §2.4 asks, and — as OpenSSL does — control and invisible
/// formatting characters (bidirectional overrides among them) as the `\XX` hex of their
/// UTF-8 bytes, so that a name printed on a terminal shows what it holds.
fn escaped(value: &str) -> String {
    use unicode_general_category::{GeneralCategory, get_general_category};
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
            c if c.is_control() || get_general_category(c) == GeneralCategory::Format => {
                let mut buffer = [0; 4];
                for byte in c.encode_utf8(&mut buffer).bytes() {
                    out.push('\\');
                    out.push_str(&hex::encode_upper([byte]));
                }
            }
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

/// A written value as it compares ([`value_key`]): a string with its escapes undone, or
/// a `#hex` BER value decoded when it holds a string.
fn written_key(value: &str) -> Result<String, String> {
    let value = value.trim_start();
    let Some(hex_digits) = value.strip_prefix('#') else {
        return Ok(fold(&unescaped(value)?));
    };
    let der = hex::decode(hex_digits.trim_end()).map_err(|_| {
        format!("{value:?} starts with # but is not hex (escape a leading # as \\#)")
    })?;
    let string = match der.as_slice() {
        [tag, len, data @ ..] if *len < 0x80 && usize::from(*len) == data.len() => {
            decode_string(u32::from(*tag), data)
        }
        [tag, 0x81, len, data @ ..] if usize::from(*len) == data.len() => {
            decode_string(u32::from(*tag), data)
        }
        _ => None,
    };
    Ok(string.map_or_else(|| format!("#{}", hex::encode(&der)), |text| fold(&text)))
}

/// A written value, its escapes undone: `\c`, or `\XX` (bytes of UTF-8).
fn unescaped(value: &str) -> Result<String, String> {
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

    /// A name of one RDN whose value is `der` (the attribute's BER), DER-encoded.
    fn name_der(oid: &[u8], value: &[u8]) -> Vec<u8> {
        let attribute = [&[0x06, u8::try_from(oid.len()).unwrap()][..], oid, value].concat();
        let sequence = [
            &[0x30, u8::try_from(attribute.len()).unwrap()][..],
            &attribute,
        ]
        .concat();
        let set = [
            &[0x31, u8::try_from(sequence.len()).unwrap()][..],
            &sequence,
        ]
        .concat();
        [&[0x30, u8::try_from(set.len()).unwrap()][..], &set].concat()
    }

    fn parsed(der: &[u8]) -> (String, NameKey) {
        use x509_parser::prelude::FromDer;
        let (_, name) = X509Name::from_der(der).unwrap();
        (to_rfc4514(&name), NameKey::of(&name))
    }

    /// BMPString (UTF-16), TeletexString (ISO 8859-1) and UniversalString values read as
    /// the text they hold, and compare with the same text in UTF-8; a type known only by
    /// its OID is written `#` and its value's BER in hex, as OpenSSL and RFC 4514 write
    /// it, and that form names it; control and formatting characters are written as
    /// `\XX`, never raw.
    #[test]
    fn every_string_encoding_reads_as_its_text() {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        let utf16: Vec<u8> = "Grüße CA"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let bmp = [&[0x1E, u8::try_from(utf16.len()).unwrap()][..], &utf16].concat();
        let (text, key) = parsed(&name_der(CN, &bmp));
        assert_eq!(text, "CN=Grüße CA");
        let text_bytes = "Grüße CA".as_bytes();
        let utf8 = [
            &[0x0C, u8::try_from(text_bytes.len()).unwrap()][..],
            text_bytes,
        ]
        .concat();
        assert_eq!(parsed(&name_der(CN, &utf8)).1, key);
        let teletex = [
            &[0x14, 8][..],
            &[b'G', b'r', 0xFC, 0xDF, b'e', b' ', b'C', b'A'],
        ]
        .concat();
        assert_eq!(parsed(&name_der(CN, &teletex)).1, key);
        assert_eq!(NameKey::parse("CN=Gr\\C3\\BC\\C3\\9Fe CA").unwrap(), key);
        let bmp_hex = format!("CN=#{}", hex::encode_upper(&bmp));
        assert_eq!(NameKey::parse(&bmp_hex).unwrap(), key);
        // A type known by its OID alone.
        let other = [&[0x0C, 3][..], b"foo"].concat();
        let (text, key) = parsed(&name_der(&[0x53, 0x04], &other));
        assert_eq!(text, "2.3.4=#0C03666F6F");
        assert_eq!(NameKey::parse("2.3.4=#0C03666F6F").unwrap(), key);
        assert!(NameKey::parse("CN=#hash CA").is_err());
        // What a terminal would obey is written as hex.
        let evil = "Evil\u{1b}[31m\u{202e}CA";
        let value = [
            &[0x0C, u8::try_from(evil.len()).unwrap()][..],
            evil.as_bytes(),
        ]
        .concat();
        let (text, key) = parsed(&name_der(CN, &value));
        assert_eq!(text, "CN=Evil\\1B[31m\\E2\\80\\AECA");
        assert_eq!(NameKey::parse(&text).unwrap(), key);
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
