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

/// The file's bytes, without a leading byte-order mark; one starting with two is refused
/// (`InvalidData`): the second is content, which no reader here would take.
pub fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    if bytes.starts_with(BOM.as_bytes()) {
        bytes.drain(..BOM.len());
        if bytes.starts_with(BOM.as_bytes()) {
            return Err(two_boms());
        }
    }
    Ok(bytes)
}

/// The file as UTF-8 text, without a leading byte-order mark (two are refused, as by
/// [`read_bytes`]).
pub fn read_text(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    match text.strip_prefix(BOM) {
        Some(rest) if rest.starts_with(BOM) => Err(two_boms()),
        Some(rest) => Ok(rest.to_owned()),
        None => Ok(text),
    }
}

fn two_boms() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the file starts with two byte-order marks (U+FEFF); one is read at the start of a \
         file: save it again as UTF-8",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_once_and_only_at_the_start() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("f.pem");
        std::fs::write(&path, "\u{feff}\u{feff}x").unwrap();
        assert_eq!(
            read_text(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(read_bytes(&path).is_err());
        for (written, read) in [
            ("\u{feff}-----BEGIN", "-----BEGIN"),
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
