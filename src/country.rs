//! ISO 3166-1 alpha-3 country codes.
//!
//! A [`CountryCode`] can only be built from a code that the maintained ISO 3166-1 table
//! (the `rust_iso3166` crate) knows, so holding one is proof that it is valid.

use std::fmt;

/// A valid ISO 3166-1 alpha-3 country code, upper case (`AUS`, `IDN`, `THA`, …).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 3]);

/// Why a string is not an ISO 3166-1 alpha-3 country code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountryCodeError {
    #[error("{0:?} is not three upper-case letters (ISO 3166-1 alpha-3, e.g. \"AUS\")")]
    /// Not three ASCII letters.
    Malformed(String),
    #[error("{0:?} is not an ISO 3166-1 alpha-3 country code")]
    /// Three letters, but no ISO 3166-1 alpha-3 code.
    Unknown(String),
}

/// Every ISO 3166-1 alpha-3 code the table knows (the domain of a country dimension).
pub fn all_alpha3() -> &'static [&'static str] {
    rust_iso3166::ALL_ALPHA3
}

impl CountryCode {
    /// Parses an upper-case alpha-3 code and checks it against the ISO 3166-1 table.
    pub fn parse(code: &str) -> Result<Self, CountryCodeError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; 3]| b.iter().all(u8::is_ascii_uppercase))
            .ok_or_else(|| CountryCodeError::Malformed(code.to_owned()))?;
        if rust_iso3166::from_alpha3(code).is_none() {
            return Err(CountryCodeError::Unknown(code.to_owned()));
        }
        Ok(Self(bytes))
    }

    /// The code, three upper-case letters.
    pub fn as_str(&self) -> &str {
        // Invariant: built only from three ASCII upper-case letters.
        std::str::from_utf8(&self.0).expect("country codes are ASCII")
    }

    /// The code in lower case, as used in file names (`aus-node.pem`).
    pub fn to_lowercase(&self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl std::str::FromStr for CountryCode {
    type Err = CountryCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_codes() {
        for code in ["AUS", "IDN", "THA", "LKA", "NZL"] {
            assert_eq!(CountryCode::parse(code).unwrap().as_str(), code);
        }
    }

    #[test]
    fn rejects_unknown_and_malformed_codes() {
        assert!(matches!(
            CountryCode::parse("XXX"),
            Err(CountryCodeError::Unknown(_))
        ));
        for bad in ["aus", "AU", "AUST", "", "A1S"] {
            assert!(
                matches!(CountryCode::parse(bad), Err(CountryCodeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
