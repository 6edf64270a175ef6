//! How the command line names things: the API's enum values in tables, CSV headings and
//! charts, and counts of things; and how it shows text from the server on a terminal.

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
/// Unicode TR #9, "Trojan Source"), every other invisible format character (Unicode
/// category Cf: zero-width characters, tag characters, soft hyphen, invisible
/// operators, …) and the Hangul fillers (letters that show as nothing) are written as
/// `\u{..}` escapes.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, unsafe_char)
}

/// As [`printable`], but line feeds are kept: for the command line's own messages,
/// which lay out lists on lines of their own, around text they quote.
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, |c| c != '\n' && unsafe_char(c))
}

fn escaped(text: &str, unsafe_char: impl Fn(char) -> bool + Copy) -> std::borrow::Cow<'_, str> {
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

/// Whether `c` would break a line, or move, reorder or hide text on a terminal.
fn unsafe_char(c: char) -> bool {
    use unicode_general_category::{GeneralCategory, get_general_category};
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators; letters that show as nothing.
            '\u{2028}'
                | '\u{2029}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{3164}'
                | '\u{FFA0}'
                | '\u{17B4}'
                | '\u{17B5}'
        )
        || get_general_category(c) == GeneralCategory::Format
}

/// `n` and the noun: "1 report", "2 reports".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{printable, printable_lines, unsafe_char};

    proptest! {
        /// Whatever the server sends, it shows as one line with no character that moves
        /// or hides text, and text without such characters is shown as it is.
        #[test]
        fn any_text_is_shown_on_one_line_without_reordering_or_hidden_characters(
            chars in proptest::collection::vec(any::<char>(), 0..64)
        ) {
            let text: String = chars.into_iter().collect();
            let shown = printable(&text);
            prop_assert!(!shown.contains(unsafe_char), "{shown:?}");
            if shown == text {
                prop_assert!(matches!(shown, std::borrow::Cow::Borrowed(_)));
            }
        }
    }

    #[test]
    fn text_that_could_pass_for_another_line_or_reorder_the_screen_is_escaped() {
        assert_eq!(printable("key-compromise (AUS)"), "key-compromise (AUS)");
        assert_eq!(
            printable("ok)\n#999 fake\u{202e}txt.exe\u{2066}\r\u{7}"),
            "ok)\\u{000a}#999 fake\\u{202e}txt.exe\\u{2066}\\u{000d}\\u{0007}"
        );
        assert!(!printable("a\u{85}b\u{200f}").contains(['\u{85}', '\u{200f}']));
        for hidden in [
            '\u{e0041}',
            '\u{ad}',
            '\u{2061}',
            '\u{206a}',
            '\u{fff9}',
            '\u{3164}',
        ] {
            assert!(
                !printable(&format!("a{hidden}b")).contains(hidden),
                "{hidden:?}"
            );
        }
    }

    #[test]
    fn the_command_lines_own_line_breaks_are_kept() {
        assert_eq!(
            printable_lines("fix these fields:\n  a: \u{1b}[2J\n  b"),
            "fix these fields:\n  a: \\u{001b}[2J\n  b"
        );
    }
}
