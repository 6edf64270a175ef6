//! Reading the text files people hand over: certificates, keys, CSRs, manifests. A UTF-8
//! byte-order mark, which some editors and spreadsheet programs write first, is not
//! part of the text: it is skipped, whatever the format. And replacing the files the
//! server keeps rewriting (the CRL, the access journal) so that a crash leaves the old
//! one or the new one, never half of either.

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

/// Replaces the file at `path` with `contents` atomically and durably: written to a
/// temporary file beside it, flushed to disk, renamed over it, and the directory flushed.
/// A crash at any point leaves the old file or the new one (rewritten in place, a kill
/// between truncating and writing left the CRL empty, and no server could start on it).
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(directory.unwrap_or_else(|| Path::new(".")))?.sync_all()
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

    #[test]
    fn a_file_is_replaced_by_a_new_one_never_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("crl.pem");
        replace(&path, b"first").unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        replace(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // A new file renamed over the old: a crash leaves one or the other whole.
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), before);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
}
