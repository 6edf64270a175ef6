//! Reading the text files people hand over: certificates, keys, CSRs, manifests. A UTF-8
//! byte-order mark, which some editors and spreadsheet programs write first, is not
//! part of the text: it is skipped, whatever the format.

use std::{io, path::Path};

/// The UTF-8 byte-order mark (U+FEFF).
pub const BOM: &str = "\u{feff}";

/// `text` without a leading byte-order mark.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// The file's bytes, without a leading byte-order mark.
pub fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    if bytes.starts_with(BOM.as_bytes()) {
        bytes.drain(..BOM.len());
    }
    Ok(bytes)
}

/// The file as UTF-8 text, without a leading byte-order mark.
pub fn read_text(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(match text.strip_prefix(BOM) {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_once_and_only_at_the_start() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("f.pem");
        for (written, read) in [
            ("\u{feff}-----BEGIN", "-----BEGIN"),
            ("\u{feff}\u{feff}x", "\u{feff}x"),
            ("x\u{feff}", "x\u{feff}"),
            ("", ""),
        ] {
            std::fs::write(&path, written).unwrap();
            assert_eq!(read_text(&path).unwrap(), read);
            assert_eq!(read_bytes(&path).unwrap(), read.as_bytes());
            assert_eq!(without_bom(written), read);
        }
    }
}
