//! The text policy: which characters each kind of text field of a report accepts.
//!
//! Text in a report is read by people in other states, in other scripts, on screens that
//! obey invisible control characters. So:
//!
//! | | free text (`narrative`, a retraction's `reason`) | short text (`location.place`, `maritime.sar_region`, `maritime.disembarkation_port`) |
//! |---|---|---|
//! | line breaks | LF, or CR LF; not a lone CR | none |
//! | tab | allowed | no |
//! | leading / trailing white space | allowed | no |
//! | ZWNJ U+200C, ZWJ U+200D (needed by Persian, Arabic and Indic scripts) | allowed | between two characters that are not white space only |
//! | a combining mark (categories Mn, Mc, Me) first or after white space | allowed | no (it has no letter to sit on) |
//! | LRM U+200E, RLM U+200F, ALM U+061C (directional marks) | allowed | no |
//! | variation selectors U+FE00–U+FE0F, U+E0100–U+E01EF, U+180B–U+180D, U+180F, combining grapheme joiner U+034F (emoji and ideograph variants) | allowed | no |
//! | braille pattern blank U+2800 (a braille space; shows as nothing) | allowed | no |
//!
//! Refused in both: every other control character (C0, DEL, C1); the bidirectional
//! embedding, override and isolate controls U+202A–U+202E and U+2066–U+2069 (the
//! "Trojan Source" characters, CVE-2021-42574); the line and paragraph separators U+2028
//! and U+2029; the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0 (letters that show as
//! nothing) and the Khmer inherent vowels U+17B4 and U+17B5 (marks that show as nothing;
//! with these, every default-ignorable code point of Unicode is refused somewhere); every
//! other format character (Unicode general category Cf: zero-width
//! space U+200B, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, tag characters, …);
//! private-use and unassigned code points (categories Co and Cn, as of the Unicode version
//! of the `unicode-general-category` crate).

use unicode_general_category::{GeneralCategory, get_general_category};

/// Which rules a text field follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Several lines of prose.
    Free,
    /// One line: a name or a code.
    Short,
}

/// Checks `value` against the policy for `kind`; the error names the first character
/// at fault, where it is, and the rule.
pub fn check(kind: TextKind, value: &str) -> Result<(), String> {
    let mut chars = value.chars().enumerate().peekable();
    while let Some((at, ch)) = chars.next() {
        let refused = match (kind, ch) {
            (TextKind::Free, '\n' | '\t' | '\u{200E}' | '\u{200F}' | '\u{061C}')
            | (_, '\u{200C}' | '\u{200D}') => None,
            (TextKind::Free, '\r') if chars.peek().is_some_and(|(_, next)| *next == '\n') => None,
            (TextKind::Free, '\r') => {
                Some("a carriage return not followed by a line feed (use LF or CR LF)")
            }
            (TextKind::Short, '\n' | '\r' | '\t') => {
                Some("a line break or tab (this field is one line)")
            }
            (_, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') => {
                Some("a bidirectional embedding, override or isolate control")
            }
            (_, '\u{2028}' | '\u{2029}') => Some("a line or paragraph separator (use LF)"),
            // Letters by category, but shown as nothing: blank-looking names.
            (_, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}') => {
                Some("a Hangul filler, which shows as nothing")
            }
            // Marks by category, but default-ignorable: Unicode advises against their use.
            (_, '\u{17B4}' | '\u{17B5}') => Some("a Khmer inherent vowel, which shows as nothing"),
            (
                TextKind::Short,
                '\u{034F}'
                | '\u{180B}'..='\u{180D}'
                | '\u{180F}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{E0100}'..='\u{E01EF}',
            ) => Some("a variation selector or grapheme joiner, which shows as nothing"),
            (TextKind::Short, '\u{2800}') => {
                Some("the blank braille pattern, which shows as nothing")
            }
            _ => match get_general_category(ch) {
                GeneralCategory::Control => Some("a control character"),
                GeneralCategory::Format => Some("an invisible format character"),
                GeneralCategory::PrivateUse => Some("a private-use character"),
                GeneralCategory::Unassigned => Some("an unassigned code point"),
                GeneralCategory::Surrogate => Some("a surrogate code point"),
                _ => None,
            },
        };
        if let Some(what) = refused {
            return Err(format!(
                "contains {what}, U+{:04X}, at character {}; see the text policy in report.proto",
                u32::from(ch),
                at + 1
            ));
        }
    }
    // After the characters: a white-space character that is also a control (U+0085)
    // is named as one.
    if kind == TextKind::Short && value.trim() != value {
        return Err("starts or ends with white space; remove it".to_owned());
    }
    if kind == TextKind::Short {
        short_joins(value)?;
    }
    Ok(())
}

/// Where short text may hold a joiner or a combining mark: a zero-width joiner or
/// non-joiner joins the characters on either side of it, so next to white space or at an
/// end (or as the whole value) it only makes a name that looks like another; and a
/// combining mark sits on the character before it, so not first or after white space.
fn short_joins(value: &str) -> Result<(), String> {
    let joiner = |ch: char| matches!(ch, '\u{200C}' | '\u{200D}');
    let mark = |ch: char| {
        matches!(
            get_general_category(ch),
            GeneralCategory::NonspacingMark
                | GeneralCategory::SpacingMark
                | GeneralCategory::EnclosingMark
        )
    };
    let chars: Vec<char> = value.chars().collect();
    for (at, ch) in chars.iter().copied().enumerate() {
        let before = at.checked_sub(1).map(|i| chars[i]);
        let after = chars.get(at + 1).copied();
        let bare = |side: Option<char>| side.is_none_or(char::is_whitespace);
        if joiner(ch) && (bare(before) || bare(after)) {
            return Err(format!(
                "contains a zero-width joiner or non-joiner, U+{:04X}, at character {}, at an \
                 end or beside white space: it belongs between two characters of a word; see \
                 the text policy in report.proto",
                u32::from(ch),
                at + 1
            ));
        }
        if mark(ch) && bare(before) {
            return Err(format!(
                "contains a combining mark, U+{:04X}, at character {}, first or after white \
                 space, where it has no letter to sit on; see the text policy in report.proto",
                u32::from(ch),
                at + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn free_text_keeps_its_line_breaks_and_scripts() {
        for ok in [
            "two lines\nof text",
            "windows\r\nline breaks\r\n",
            "a\ttab",
            "  indented",
            "می‌خواهم", // Persian with ZWNJ
            "क्‍ष",      // Devanagari with ZWJ
            "שלום \u{200F}(1)",
            "emoji 🚤 and accents é",
            "warning \u{26A0}\u{FE0F}", // emoji presentation
        ] {
            assert_eq!(check(TextKind::Free, ok), Ok(()), "{ok:?}");
        }
    }

    /// Every default-ignorable code point (Unicode's DerivedCoreProperties.txt,
    /// `Default_Ignorable_Code_Point`: shown as nothing where not supported) is refused
    /// in short text, but for ZWNJ and ZWJ, which scripts need.
    #[test]
    fn short_text_refuses_every_default_ignorable_code_point_but_the_joiners() {
        const DEFAULT_IGNORABLE: [(u32, u32); 17] = [
            (0x00AD, 0x00AD),
            (0x034F, 0x034F),
            (0x061C, 0x061C),
            (0x115F, 0x1160),
            (0x17B4, 0x17B5),
            (0x180B, 0x180F),
            (0x200B, 0x200F),
            (0x202A, 0x202E),
            (0x2060, 0x206F),
            (0x3164, 0x3164),
            (0xFE00, 0xFE0F),
            (0xFEFF, 0xFEFF),
            (0xFFA0, 0xFFA0),
            (0xFFF0, 0xFFF8),
            (0x1BCA0, 0x1BCA3),
            (0x1D173, 0x1D17A),
            (0xE0000, 0xE0FFF),
        ];
        for (first, last) in DEFAULT_IGNORABLE {
            for ch in (first..=last).filter_map(char::from_u32) {
                let text = format!("a{ch}b");
                assert_eq!(
                    check(TextKind::Short, &text).is_ok(),
                    matches!(ch, '\u{200C}' | '\u{200D}'),
                    "U+{:04X}",
                    u32::from(ch)
                );
            }
        }
    }

    /// A short value does not start or end with a joiner, nor start with a combining
    /// mark: it would look like another value, or like nothing.
    #[test]
    fn short_text_does_not_start_or_end_with_what_joins() {
        for bad in [
            "\u{200D}",
            "\u{200C}\u{200D}",
            "Darwin\u{200D}",
            "\u{200C}Darwin",
            "\u{0301}",
            "\u{0301}Darwin",
            "\u{20DD}x",
            "\u{0903}x",
            "Port\u{200D} Town",
            "Port \u{200D}Town",
            "Port \u{0301}x",
        ] {
            assert!(check(TextKind::Short, bad).is_err(), "{bad:?}");
            assert_eq!(check(TextKind::Free, bad), Ok(()), "free text: {bad:?}");
        }
        for ok in ["می‌خواهم", "क्‍ष", "Darwin", "e\u{0301}", "x"] {
            assert_eq!(check(TextKind::Short, ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn each_rule_refuses_what_it_names() {
        for (kind, bad, why) in [
            (TextKind::Free, "a\rb", "carriage return"),
            (TextKind::Free, "end\r", "carriage return"),
            (TextKind::Free, "bell\u{7}", "control character"),
            (TextKind::Free, "del\u{7f}", "control character"),
            (TextKind::Free, "c1\u{85}", "control character"),
            (TextKind::Free, "evil\u{202E}txt", "bidirectional"),
            (TextKind::Free, "iso\u{2067}late", "bidirectional"),
            (TextKind::Free, "line\u{2028}sep", "separator"),
            (TextKind::Free, "zero\u{200B}width", "invisible format"),
            (TextKind::Free, "\u{FEFF}bom", "invisible format"),
            (TextKind::Free, "soft\u{AD}hyphen", "invisible format"),
            (TextKind::Free, "tag\u{E0041}", "invisible format"),
            (TextKind::Free, "private\u{E000}", "private-use"),
            (TextKind::Short, "two\nlines", "line break"),
            (TextKind::Short, "tab\there", "line break or tab"),
            (TextKind::Short, " Bangkok", "white space"),
            (TextKind::Short, "Bangkok ", "white space"),
            (TextKind::Short, "AUS\u{0085}", "control character, U+0085"),
            (TextKind::Short, "Bang\u{200E}kok", "invisible format"),
            (TextKind::Short, "Darwin\u{2800}", "blank braille"),
            (TextKind::Short, "\u{3164}", "Hangul filler"),
            (TextKind::Free, "blank\u{115F}name", "Hangul filler"),
            (TextKind::Short, "Dar\u{17B4}win", "Khmer inherent vowel"),
            (TextKind::Free, "Dar\u{17B5}win", "Khmer inherent vowel"),
            (TextKind::Short, "Bang\u{034F}kok", "variation selector"),
            (TextKind::Short, "Bangkok\u{FE0F}", "variation selector"),
        ] {
            let err = check(kind, bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(why == "white space" || err.contains("U+"), "{bad:?}: {err}");
        }
    }

    proptest! {
        /// Whatever the input, an accepted short field has no line break, tab, control,
        /// bidi control or (apart from ZWNJ/ZWJ) format character, and no outer spaces.
        #[test]
        fn accepted_text_holds_no_forbidden_character(text in "\\PC{0,8}[\\x00-\\x1f\\u{200b}-\\u{206f}\\u{feff}]?\\PC{0,8}") {
            if check(TextKind::Short, &text).is_ok() {
                prop_assert_eq!(text.trim(), text.as_str());
                for ch in text.chars() {
                    let category = get_general_category(ch);
                    prop_assert!(category != GeneralCategory::Control);
                    let joiner = matches!(ch, '\u{200C}' | '\u{200D}');
                    prop_assert!(category != GeneralCategory::Format || joiner, "{:?}", ch);
                    let separator = matches!(ch, '\u{2028}' | '\u{2029}');
                    prop_assert!(!separator, "{:?}", ch);
                }
            }
            if check(TextKind::Free, &text).is_ok() {
                for (i, ch) in text.char_indices() {
                    if ch == '\r' {
                        prop_assert_eq!(text[i + 1..].chars().next(), Some('\n'));
                    }
                    let bidi = matches!(ch, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
                    prop_assert!(!bidi, "{:?}", ch);
                }
            }
        }
    }
}
