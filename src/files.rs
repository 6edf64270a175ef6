//! Reading the text files people hand over: certificates, keys, CSRs, manifests. A UTF-8
//! byte-order mark, which some editors and spreadsheet programs write first, is not
//! part of the text: it is skipped, whatever the format. And writing files whole or not
//! at all: those the server keeps rewriting (the CRL, the access journal), so that a crash
//! leaves the old one or the new one, never half of either; and those the CLI makes (keys,
//! CSRs, receipts, charts), so that a full disk or a kill leaves no empty or cut file.

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
    refuse_special(path)?;
    let mut bytes = std::fs::read(path)?;
    marked_utf16(&bytes)?;
    // DER starts with 0x30 (a SEQUENCE) and may hold NULs; PEM is text.
    if bytes.first() != Some(&0x30) {
        nul_at_start(&bytes)?;
    }
    if bytes.starts_with(BOM.as_bytes()) {
        bytes.drain(..BOM.len());
        if bytes.starts_with(BOM.as_bytes()) {
            return Err(two_boms());
        }
    }
    Ok(bytes)
}

/// The file as UTF-8 text, without a leading byte-order mark (see [`utf8_text`]).
pub fn read_text(path: &Path) -> io::Result<String> {
    refuse_special(path)?;
    utf8_text(std::fs::read(path)?)
}

/// Refuses a FIFO, socket or device named by a path of its own (`mkfifo`, a link to
/// `/dev/zero`): opening a FIFO waits for a writer — for ever, and a server reading its
/// CRL on a reload stopped enforcing revocations while it waited (tester D of
/// 2026-12-07) — and a device may never end. A descriptor the shell handed over
/// (`/dev/stdin`, `/dev/fd/N` as process substitution makes, `/proc/self/fd/N`) is read
/// as given.
pub fn refuse_special(path: &Path) -> io::Result<()> {
    let handed_over = path == Path::new("/dev/stdin")
        || path.starts_with("/dev/fd")
        || path.starts_with("/proc/self/fd");
    match std::fs::metadata(path) {
        Ok(meta) if !handed_over && !meta.is_file() && !meta.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, a socket or a device), which is not read here: \
             name a regular file",
        )),
        _ => Ok(()),
    }
}

/// `bytes` as UTF-8 text, without a leading byte-order mark; two are refused, as by
/// [`read_bytes`]. Text that is not UTF-8 is refused saying to save it as UTF-8, and
/// UTF-16 (which Windows editors call "Unicode") by name ([`refuse_utf16`]).
pub fn utf8_text(bytes: Vec<u8>) -> io::Result<String> {
    refuse_utf16(&bytes)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is not UTF-8 text ({}): save it as UTF-8",
                e.utf8_error()
            ),
        )
    })?;
    match text.strip_prefix(BOM) {
        Some(rest) if rest.starts_with(BOM) => Err(two_boms()),
        Some(rest) => Ok(rest.to_owned()),
        None => Ok(text),
    }
}

/// Refuses text in UTF-16 or UTF-32 (`start` is its first bytes): every file read here
/// is UTF-8, and such a file would otherwise fail as "not UTF-8" at its first byte, or
/// as JSON that is not JSON, without a word on why. Told by its byte-order mark, or,
/// without one, by a NUL among its first four bytes, which no text here holds (UTF-16
/// and UTF-32 of ASCII text have one there).
pub fn refuse_utf16(start: &[u8]) -> io::Result<()> {
    marked_utf16(start)?;
    nul_at_start(start)
}

/// See [`refuse_utf16`].
fn nul_at_start(start: &[u8]) -> io::Result<()> {
    if start.iter().take(4).any(|b| *b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file holds NUL bytes at its start, as UTF-16 or UTF-32 text without a \
             byte-order mark does: save it as UTF-8",
        ));
    }
    Ok(())
}

/// Refuses bytes that start with a UTF-16 or UTF-32 byte-order mark (PEM is text; DER
/// starts with 0x30, never with one).
fn marked_utf16(start: &[u8]) -> io::Result<()> {
    let encoding =
        if start.starts_with(&[0xFF, 0xFE, 0, 0]) || start.starts_with(&[0, 0, 0xFE, 0xFF]) {
            "UTF-32"
        } else if start.starts_with(&[0xFF, 0xFE]) || start.starts_with(&[0xFE, 0xFF]) {
            "UTF-16"
        } else {
            return Ok(());
        };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the file is {encoding} text (it starts with a {encoding} byte-order mark): save it \
             as UTF-8"
        ),
    ))
}

/// Why a file that starts with two byte-order marks is refused.
pub fn two_boms() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the file starts with two byte-order marks (U+FEFF); one is read at the start of a \
         file: save it again as UTF-8",
    )
}

/// `std::fs::create_dir_all`, saying plainly when `dir`, or a directory above it, is a
/// file: the OS says only "File exists" or "Not a directory".
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| match nearest_existing(dir) {
        Some(file) if !file.is_dir() => not_a_directory(file),
        _ => e,
    })
}

/// Whether [`create_dir_all`] of `dir` would succeed and files could be made in it, with
/// nothing made: its nearest existing ancestor (or itself) is a directory this process can
/// write in (tried with a probe file, removed at once). For a command that must refuse
/// before it writes anything elsewhere.
pub fn can_make_dir(dir: &Path) -> io::Result<()> {
    let existing = nearest_existing(dir).unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(not_a_directory(existing));
    }
    can_place(&existing.join("directory"))
}

/// `dir` or its nearest ancestor that exists; `None` when none does (a relative path
/// whose first part is missing: the working directory is then the one that matters).
fn nearest_existing(dir: &Path) -> Option<&Path> {
    dir.ancestors()
        .find(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_ok())
}

/// Why `path`, which exists but is no directory, cannot be one: a file, or a symbolic
/// link that leads nowhere (to nothing, or round in a loop).
fn not_a_directory(path: &Path) -> io::Error {
    let what = if path.metadata().is_err() {
        "a symbolic link to nothing (or a loop of links)"
    } else {
        "a file"
    };
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!(
            "{} is {what}, not a directory: name a directory (it is made if missing)",
            path.display()
        ),
    )
}

/// Replaces the file at `path` with `contents` atomically and durably: written to a
/// temporary file beside it, flushed to disk, renamed over it, and the directory flushed.
/// A crash at any point leaves the old file or the new one (rewritten in place, a kill
/// between truncating and writing left the CRL empty, and no server could start on it);
/// a failure (a full disk, say) leaves the old one and no temporary file.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    place(path, contents, Placing::Replace)
}

/// [`replace`], the new file readable by its owner only (0600 on Unix): a private key.
pub fn replace_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    place(path, contents, Placing::ReplacePrivate)
}

/// Writes `contents` to a new file at `path`, whole or not at all: written to a temporary
/// file beside it and flushed, then linked into place only if no file is there
/// (`AlreadyExists` otherwise: of two runs at once, one writes it). A failure (a full
/// disk, say) leaves no file at `path` and no temporary one. `private`: readable by its
/// owner only (0600 on Unix).
pub fn create_new(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    place(
        path,
        contents,
        if private {
            Placing::NewPrivate
        } else {
            Placing::New
        },
    )
}

/// Whether a new file can be made at `path` before it is written: none is there
/// (`AlreadyExists` otherwise) and its directory takes a new file (one is made beside it
/// and removed again).
pub fn can_create(path: &Path) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    can_place(path)
}

/// Whether the directory of `path` takes a new file (one is made beside it and removed
/// again): what [`replace`] needs, checked before work that cannot be undone.
pub fn can_place(path: &Path) -> io::Result<()> {
    let probe = beside(path, "probe");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| no_directory(path, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A hidden name beside `path`, this process's own: `.NAME.PID.SUFFIX`.
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{suffix}", std::process::id()));
    path.with_file_name(name)
}

/// Removes from `dir` the temporary files ([`temporary_beside`]: `.NAME.PID.N.tmp`) of processes
/// that no longer run — what a run killed while writing left — and returns how many.
/// (A process is known to run by `/proc/PID`; where there is no `/proc`, none is removed.)
pub fn remove_dead_temporaries(dir: &Path) -> io::Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            continue;
        };
        // NAME.PID.N: the two last dot-separated parts are numbers.
        let mut parts = stem.rsplitn(3, '.');
        let (Some(n), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let numeric = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !numeric(n) || !numeric(pid) || pid == std::process::id().to_string() {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placing {
    Replace,
    ReplacePrivate,
    New,
    NewPrivate,
}

/// A temporary name for what will become `path`, beside it: hidden, and one per process
/// and call (`.NAME.PID.N.tmp`), so two runs writing one file at once never write into
/// each other's temporary file, and [`remove_dead_temporaries`] knows a killed run's.
pub fn temporary_beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    beside(
        path,
        &format!("{}.tmp", CALLS.fetch_add(1, Ordering::Relaxed)),
    )
}

/// `error`, met making a file at `path` (or one beside it), saying so when the reason is
/// that `path`'s directory does not exist: the error is not about a temporary name the
/// user never gave.
pub fn no_directory(path: &Path, error: io::Error) -> io::Error {
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
    match directory {
        Some(directory) if error.kind() == io::ErrorKind::NotFound && !directory.exists() => {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "its directory {} does not exist: create it, or choose another path",
                    directory.display()
                ),
            )
        }
        _ => error,
    }
}

/// `path`, or the file it is a symbolic link to: what is to be written in its place. A
/// link is written through, not replaced by a file (the file it names stays the one
/// read); a link to nothing is refused — its target is on a volume not mounted, say, and
/// a file written in its place would be lost when the volume comes back.
pub fn through_link(path: &Path) -> io::Result<std::path::PathBuf> {
    if !path.is_symlink() {
        return Ok(path.to_owned());
    }
    std::fs::canonicalize(path).map_err(|e| {
        let target =
            std::fs::read_link(path).map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
        io::Error::new(
            e.kind(),
            format!(
                "it is a symbolic link to {target}, which cannot be reached ({e}): mount the \
                 volume it is on, or replace the link with the file"
            ),
        )
    })
}

fn place(path: &Path, contents: &[u8], placing: Placing) -> io::Result<()> {
    use std::io::Write;
    let resolved;
    let path = if matches!(placing, Placing::Replace | Placing::ReplacePrivate) {
        resolved = through_link(path)?;
        resolved.as_path()
    } else {
        path
    };
    let temporary = temporary_beside(path);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if matches!(placing, Placing::ReplacePrivate | Placing::NewPrivate) {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temporary)
            .map_err(|e| no_directory(path, e))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        match placing {
            Placing::Replace | Placing::ReplacePrivate => std::fs::rename(&temporary, path),
            Placing::New | Placing::NewPrivate => match std::fs::hard_link(&temporary, path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists && !path.exists() => {
                    // A file system without hard links: not atomic against another run
                    // at the same moment, but never over a file that was there.
                    std::fs::rename(&temporary, path)
                }
                linked => linked,
            },
        }
    })();
    // Gone after a rename; after a link or a failure, the copy no one needs.
    let _ = std::fs::remove_file(&temporary);
    written?;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(directory.unwrap_or_else(|| Path::new(".")))?.sync_all()
}

/// Of `paths` (a directory before what goes in it) and the directories above them, those
/// not there yet, outermost first: what a command is about to make, for [`remove_made`]
/// to take away again if it fails before it has anything to keep.
pub fn not_there(paths: &[&Path]) -> Vec<std::path::PathBuf> {
    let mut missing: Vec<std::path::PathBuf> = Vec::new();
    for path in paths {
        let mut chain: Vec<&Path> = path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| p.symlink_metadata().is_err())
            .collect();
        chain.reverse();
        for p in chain {
            if !missing.iter().any(|m| m == p) {
                missing.push(p.to_path_buf());
            }
        }
    }
    missing
}

/// Removes what [`not_there`] listed, the last first (the files, then the directory that
/// holds them, which goes only if it is empty). What cannot be removed is left: an empty
/// file or directory loses nothing.
pub fn remove_made(made: &[std::path::PathBuf]) {
    for path in made.iter().rev() {
        let _ = if path.is_dir() {
            std::fs::remove_dir(path)
        } else {
            std::fs::remove_file(path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file replaced through a symbolic link is written where the link points, and
    /// the link stays; a link to nothing is refused, and left as it was.
    #[test]
    fn a_link_is_written_through_and_a_link_to_nothing_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("volume.pem"), dir.path().join("crl.pem"));
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        replace(&link, b"new").unwrap();
        assert!(link.is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let dangling = dir.path().join("journal.json");
        std::os::unix::fs::symlink(dir.path().join("unmounted/journal.json"), &dangling).unwrap();
        let said = replace(&dangling, b"x").unwrap_err().to_string();
        assert!(
            said.contains("symbolic link to") && said.contains("unmounted"),
            "{said}"
        );
        assert!(dangling.is_symlink() && !dir.path().join("unmounted").exists());
    }

    /// A file whose directory is missing is refused naming that directory, not the
    /// temporary file it would have been written through (an outside pass:
    /// "cannot write bk/b1.redb.partial").
    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("crl.pem");
        for error in [
            replace(&path, b"x").unwrap_err(),
            create_new(&path, b"x", true).unwrap_err(),
            can_create(&path).unwrap_err(),
        ] {
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
            let said = error.to_string();
            assert!(said.contains("missing does not exist: create it"), "{said}");
            assert!(!said.contains("crl.pem"), "{said}");
        }
    }

    /// A FIFO or a device is refused at once, not waited on; a regular file, a link to
    /// one, and a descriptor handed over by the shell are read.
    #[test]
    fn a_fifo_or_a_device_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("crl.pem");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let zero = dir.path().join("key.pem");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for special in [&fifo, &zero] {
            for read in [read_bytes(special).map(drop), read_text(special).map(drop)] {
                let err = read.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{special:?}");
                assert!(err.to_string().contains("not a regular file"), "{err}");
            }
        }
        let file = dir.path().join("file");
        std::fs::write(&file, "text").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_text(&link).unwrap(), "text");
        refuse_special(Path::new("/dev/stdin")).unwrap();
        refuse_special(Path::new("/dev/fd/0")).unwrap();
    }

    /// A directory asked for where a file is (itself or above it) is refused naming the
    /// file, by the check that makes nothing and by the making alike; elsewhere both go.
    #[test]
    fn a_directory_where_a_file_is_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        for asked in [file.clone(), file.join("d"), file.join("d/e")] {
            let said = format!("{} is a file, not a directory", file.display());
            let checked = can_make_dir(&asked).unwrap_err();
            assert!(checked.to_string().contains(&said), "{checked}");
            let made = create_dir_all(&asked).unwrap_err();
            assert!(made.to_string().contains(&said), "{made}");
        }
        // A link to nothing, or a loop of links, is said to be one.
        let (nowhere, looped) = (dir.path().join("nowhere"), dir.path().join("loop"));
        std::os::unix::fs::symlink(dir.path().join("missing"), &nowhere).unwrap();
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        for link in [nowhere, looped] {
            let e = create_dir_all(&link.join("d")).unwrap_err().to_string();
            assert!(e.contains("is a symbolic link to nothing"), "{e}");
        }
        let fresh = dir.path().join("a/b");
        can_make_dir(&fresh).unwrap();
        assert!(!dir.path().join("a").exists(), "the check makes nothing");
        create_dir_all(&fresh).unwrap();
        can_make_dir(&fresh).unwrap();
        assert_eq!(
            std::fs::read_dir(&fresh).unwrap().count(),
            0,
            "no probe is left"
        );
    }

    /// UTF-16 text is refused by name, other bytes that are not UTF-8 with what to do.
    #[test]
    fn text_that_is_not_utf8_is_refused_saying_to_save_it_as_utf8() {
        for utf16 in [vec![0xFF, 0xFE, b'a', 0], vec![0xFE, 0xFF, 0, b'a']] {
            let e = utf8_text(utf16).unwrap_err().to_string();
            assert!(
                e.contains("UTF-16") && e.contains("save it as UTF-8"),
                "{e}"
            );
        }
        for unmarked in [
            vec![b'{', 0, b'"', 0],
            vec![0, b'{', 0, b'"'],
            vec![b'{', 0, 0, 0],
            vec![0, 0, 0, b'{'],
        ] {
            let e = utf8_text(unmarked).unwrap_err().to_string();
            assert!(e.contains("UTF-32 text without a byte-order mark"), "{e}");
        }
        let e = utf8_text(vec![0xFF, 0xFE, 0, 0, b'a', 0, 0, 0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("UTF-32"), "{e}");
        // Certificates and keys, read as bytes (PEM or DER), too.
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("utf16.pem");
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend("-----BEGIN".encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&pem, bytes).unwrap();
        let e = read_bytes(&pem).unwrap_err().to_string();
        assert!(
            e.contains("UTF-16") && e.contains("save it as UTF-8"),
            "{e}"
        );
        let unmarked: Vec<u8> = "-----BEGIN"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        std::fs::write(&pem, unmarked).unwrap();
        let e = read_bytes(&pem).unwrap_err().to_string();
        assert!(e.contains("NUL bytes at its start"), "{e}");
        // DER may hold NULs.
        std::fs::write(&pem, [0x30, 0x00]).unwrap();
        assert_eq!(read_bytes(&pem).unwrap(), [0x30, 0x00]);
        let e = utf8_text(vec![b'a', 0xC3]).unwrap_err().to_string();
        assert!(
            e.contains("not UTF-8") && e.contains("save it as UTF-8"),
            "{e}"
        );
        assert_eq!(utf8_text(format!("{BOM}a").into_bytes()).unwrap(), "a");
    }

    /// What a command makes — directories above included — is listed outermost first
    /// and removed again innermost first; what was there before stays.
    #[test]
    fn what_a_command_made_is_removed_again_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("a");
        std::fs::create_dir(&kept).unwrap();
        let state = kept.join("b/c");
        let lock = state.join("x.lock");
        let made = super::not_there(&[&state, &lock]);
        assert_eq!(made, [kept.join("b"), state.clone(), lock.clone()]);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(&lock, b"").unwrap();
        super::remove_made(&made);
        assert!(kept.exists() && !kept.join("b").exists());
    }

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

    #[test]
    fn a_new_file_is_made_whole_and_never_over_another() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("k.key");
        create_new(&path, b"secret", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = create_new(&path, b"other", true).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let public = dir.path().join("k.pub.pem");
        create_new(&public, b"public", false).unwrap();
        replace_private(&public, b"now private").unwrap();
        let mode = std::fs::metadata(&public).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Asked first: refused where a file is, or where none can be made; a probe leaves
        // nothing behind.
        assert_eq!(
            can_create(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        can_create(&dir.path().join("free.pem")).unwrap();
        // Where it cannot be made, nothing is left: no file, no temporary.
        let nowhere = dir.path().join("k.key").join("x");
        assert!(can_create(&nowhere).is_err());
        assert!(create_new(&nowhere, b"x", false).is_err());
        assert!(replace(&nowhere, b"x").is_err());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["k.key", "k.pub.pem"]);
    }
}
