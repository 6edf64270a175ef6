//! Whole-number flags in one spelling: decimal digits, no sign, no leading zero
//! (`--limit 5`, not `+5` or `05`), as every other value has one spelling; a refusal
//! names the range.

use std::{fmt::Display, str::FromStr};

/// A clap value parser for a whole number from `min` to `max`, inclusive.
pub fn whole<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |text: &str| {
        let spelled = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        spelled
            .then(|| text.parse::<T>().ok())
            .flatten()
            .filter(|n| *n >= min && *n <= max)
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a whole number from {min} to {max} (digits only, no sign \
                     or leading zero)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_has_one_spelling() {
        let limit = whole(1u32, 10_000);
        assert_eq!(limit("5"), Ok(5));
        assert_eq!(limit("10000"), Ok(10_000));
        for wrong in ["+5", "05", "0", "10001", "-1", " 5", "5 ", "", "1e3", "５"] {
            let said = limit(wrong).unwrap_err();
            assert!(said.contains("from 1 to 10000"), "{wrong}: {said}");
        }
        let start = whole(0u64, u64::MAX);
        assert_eq!(start("0"), Ok(0));
        assert!(
            start("00")
                .unwrap_err()
                .contains("from 0 to 18446744073709551615")
        );
        assert!(start("18446744073709551616").is_err());
    }
}
