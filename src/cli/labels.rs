//! How the command line names things: the API's enum values in tables, CSV headings and
//! charts, and counts of things.

/// "METRIC_UNACCOMPANIED_MINORS" → "unaccompanied minors".
pub fn name_of<E>(name: Result<&str, E>, prefix: &str) -> String {
    name.ok()
        .and_then(|n| n.strip_prefix(prefix))
        .unwrap_or("?")
        .to_lowercase()
        .replace('_', " ")
}

/// Text from the server as one terminal line shows it safely: control characters and
/// line separators (a newline would start what looks like another record),
/// bidirectional formatting characters (which reorder what follows them on screen;
/// Unicode TR #9, "Trojan Source") and zero-width characters are written as `\u{..}`
/// escapes.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(
                c,
                // Bidirectional formatting, line and paragraph separators, zero-width.
                '\u{061C}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
            )
    };
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let out = text
        .chars()
        .map(|c| {
            if unsafe_char(c) {
                format!("\\u{{{:04x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect();
    std::borrow::Cow::Owned(out)
}

/// `n` and the noun: "1 report", "2 reports".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn text_that_could_pass_for_another_line_or_reorder_the_screen_is_escaped() {
        assert_eq!(printable("key-compromise (AUS)"), "key-compromise (AUS)");
        assert_eq!(
            printable("ok)\n#999 fake\u{202e}txt.exe\u{2066}\r\u{7}"),
            "ok)\\u{000a}#999 fake\\u{202e}txt.exe\\u{2066}\\u{000d}\\u{0007}"
        );
        assert!(!printable("a\u{85}b\u{200f}").contains(['\u{85}', '\u{200f}']));
    }
}
