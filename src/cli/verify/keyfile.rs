//! Public-key files as `tidemark keys --out` writes them and `verify` reads them: PEM
//! public keys (RFC 7468), each preceded by header lines of explanatory text —
//! `Key-Id: <id>`, `State: <ISO 3166-1 alpha-3>`, `Valid-From: <RFC 3339 time>` (when its
//! validity starts), for a key with an end of validity `Valid-Until: <RFC 3339 time>` and,
//! for a revoked key, `Revoked-At: <RFC 3339 time>` (a date alone means what it means to
//! `admin register-key --valid-until` and `admin revoke-key --compromised-at`: the end of
//! that day, and its start; `Valid-From` as `Revoked-At`).
//!
//! A header is read in exactly that spelling, before the key it describes, at most once
//! per key; besides them and the PEM blocks, a file holds blank lines and `#` comments
//! only. Any other line (`revoked-at:`, `Revoked:`, `State IDN`), a header after the last
//! key or inside one is refused with its line number: read past as explanatory text, a
//! misspelt revocation would let a report pass as valid.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use tidemark::{country::CountryCode, signing::PublicKey};

/// The header `keys --out` writes for a revoked key: when its revocation takes effect.
pub(super) const REVOKED_AT: &str = "Revoked-At: ";
/// The header `keys` writes first: the key's id.
pub(super) const KEY_ID: &str = "Key-Id: ";
/// The header `keys` writes second: the state the key is registered to.
pub(super) const STATE: &str = "State: ";
/// The header `keys --out` writes for a key registered with an end: when it ends.
pub(super) const VALID_UNTIL: &str = "Valid-Until: ";
/// The header `keys --out` writes third: when the key's validity starts.
pub(super) const VALID_FROM: &str = "Valid-From: ";

/// A time as a header holds it: RFC 3339 (UTC), and the end of validity the server
/// allows last, 10000-01-01T00:00:00Z, as its date `9999-12-31` (the whole of that day:
/// the same end; `clock::format_until`). Later times, which the server no longer takes,
/// are written as that too (`9999-12-31` read as a start is its midnight, no later).
pub(super) fn header_time(at: i64) -> String {
    tidemark::clock::format_until(at.min(tidemark::calendar::LAST_SECOND + 1))
}

const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const END: &str = "-----END PUBLIC KEY-----";

/// A public key, the state it is registered to (when its file says), and, if revoked,
/// since when, and when its validity ends (Unix seconds).
pub(super) struct Key {
    pub(super) public: PublicKey,
    pub(super) state: Option<CountryCode>,
    pub(super) revoked_at: Option<i64>,
    pub(super) valid_until: Option<i64>,
    pub(super) valid_from: Option<i64>,
}

/// Splits the paths given after --public-key into key files (directories, and files
/// holding a PEM public key) and envelopes to check (anything else).
pub(super) fn split_keys(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    paths.iter().cloned().partition(|p| {
        p.is_dir() || super::super::input::read_text(p).is_ok_and(|t| t.contains(BEGIN))
    })
}

/// Reads every key the arguments name (a directory: its `.pem` files).
pub(super) fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<Key>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect();
            if found.is_empty() {
                bail!(
                    "{} holds no .pem key files: write them with `tidemark keys --out {}`",
                    path.display(),
                    path.display()
                );
            }
            found.sort();
            files.extend(found.into_iter().map(|p| (p, true)));
        } else {
            files.push((path.clone(), false));
        }
    }
    let mut keys: Vec<(PathBuf, Key)> = Vec::new();
    for (path, in_directory) in &files {
        let found = super::super::input::read_text(path).and_then(|text| {
            let found = read_file(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if found.is_empty() {
                bail!("{} holds no PEM public key", path.display());
            }
            Ok(found)
        });
        match found {
            Ok(found) => keys.extend(found.into_iter().map(|k| (path.clone(), k))),
            // A file of a directory that is not a key file (a certificate, say) is left
            // out, not the whole check: none of its keys is trusted.
            Err(e) if *in_directory => {
                errln!("warning: left out {}: {e:#}", path.display());
            }
            Err(e) => return Err(e),
        }
    }
    if keys.is_empty() {
        bail!(
            "no key file could be read among those given: write them with `tidemark keys \
             --out DIR`"
        );
    }
    merge(keys)
}

/// Which header a line of explanatory text names, however it is spelt: its name with
/// everything but letters dropped, compared without case.
fn names_header(line: &str) -> Option<&'static str> {
    let (name, _) = line.split_once(':')?;
    let squeezed: String = name
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [KEY_ID, STATE, VALID_FROM, VALID_UNTIL, REVOKED_AT]
        .into_iter()
        .find(|h| {
            h.chars()
                .filter(char::is_ascii_alphabetic)
                .collect::<String>()
                .eq_ignore_ascii_case(&squeezed)
        })
}

/// The headers gathered for the next key: (header, value, line number).
type Headers<'a> = Vec<(&'static str, &'a str, usize)>;

/// The keys in one file's text, each with its headers.
fn read_file(text: &str) -> anyhow::Result<Vec<Key>> {
    let mut keys = Vec::new();
    let mut headers: Headers<'_> = Vec::new();
    let mut body: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        if let Some((begun, pem)) = body.as_mut() {
            if line.contains(':') {
                bail!(
                    "line {number} ({}) is inside the key that begins on line {begun}: \
                     header lines go before {BEGIN}",
                    crate::cli::labels::printable(line)
                );
            }
            pem.push_str(line);
            pem.push('\n');
            if line.trim_end() == END {
                let Some((begun, pem)) = body.take() else {
                    continue;
                };
                let key = PublicKey::from_spki_pem(&pem)
                    .map_err(|e| anyhow!("the key at line {begun}: {e}"))?;
                keys.push(with_headers(key, &std::mem::take(&mut headers))?);
            }
            continue;
        }
        if line.trim_end() == BEGIN {
            body = Some((number, format!("{line}\n")));
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        // Nothing else is read past: a header spelt any other way (`Revoked:`,
        // `Revokd-At:`, `State IDN`) would be taken for explanatory text, and a revoked
        // key for a good one.
        let header = names_header(line).ok_or_else(|| {
            anyhow!(
                "line {number} ({}) is none of the lines a key file holds: `{KEY_ID}<id>`, \
                 `{STATE}<ISO 3166-1 alpha-3>`, `{VALID_FROM}<RFC 3339 time or date>`, \
                 `{VALID_UNTIL}<RFC 3339 time or date>`, \
                 `{REVOKED_AT}<RFC 3339 time or date>` before each key, \
                 its PEM block ({BEGIN} … {END}), and `#` comments (`tidemark keys --out DIR` \
                 writes key files this way)",
                crate::cli::labels::printable(line)
            )
        })?;
        let value = line
            .strip_prefix(header)
            .filter(|v| !v.is_empty() && v.trim() == *v)
            .ok_or_else(|| {
                anyhow!(
                    "line {number} ({}) is not read: write it exactly as `{header}<value>`, \
                     one space after the colon and none at the end (`tidemark keys --out DIR` \
                     writes key files this way)",
                    crate::cli::labels::printable(line)
                )
            })?;
        if let Some((_, _, first)) = headers.iter().find(|(h, _, _)| *h == header) {
            bail!(
                "lines {first} and {number} both give one key's `{}`; export the keys again \
                 with `tidemark keys --out DIR`",
                header.trim_end()
            );
        }
        headers.push((header, value, number));
    }
    if let Some((begun, _)) = body {
        bail!("the key at line {begun} has no {END} line");
    }
    if let Some((header, _, number)) = headers.first() {
        bail!(
            "line {number} ({}) follows the last key: a header goes before the key it \
             describes",
            header.trim_end()
        );
    }
    Ok(keys)
}

/// `public` as its headers describe it.
fn with_headers(public: PublicKey, headers: &Headers<'_>) -> anyhow::Result<Key> {
    let header = |name: &str| headers.iter().find(|(h, _, _)| *h == name);
    if let Some((_, id, number)) = header(KEY_ID)
        && *id != public.key_id()
    {
        bail!(
            "line {number} says {KEY_ID}{id} but the key below it has id {}: the file was \
             edited; export the keys again with `tidemark keys --out DIR`",
            public.key_id()
        );
    }
    let state = header(STATE)
        .map(|(_, s, number)| {
            CountryCode::parse(s).map_err(|e| anyhow!("line {number}: {STATE}{s}: {e}"))
        })
        .transpose()?;
    // As `admin revoke-key --compromised-at` and `register-key --valid-until` read them:
    // a date alone is its first second for a revocation, its last for an end.
    let time = |name: &'static str, read: fn(&str) -> Option<i64>| {
        header(name)
            .map(|(_, t, number)| {
                read(t).ok_or_else(|| {
                    anyhow!(
                        "line {number}: {name}{t} is not an RFC 3339 time or date \
                         (e.g. 2026-03-01T00:00:00Z or 2026-03-01)"
                    )
                })
            })
            .transpose()
    };
    Ok(Key {
        public,
        state,
        revoked_at: time(REVOKED_AT, tidemark::calendar::parse_instant)?,
        valid_until: time(VALID_UNTIL, tidemark::calendar::parse_until)?,
        valid_from: time(VALID_FROM, tidemark::calendar::parse_instant)?,
    })
}

/// One entry per key: a key given in several files keeps the state one of them names
/// (files that name different states are refused) and the earliest revocation.
fn merge(keys: Vec<(PathBuf, Key)>) -> anyhow::Result<Vec<Key>> {
    let mut merged: Vec<(PathBuf, Key)> = Vec::new();
    for (path, key) in keys {
        let Some((first_path, first)) = merged
            .iter_mut()
            .find(|(_, k)| k.public.key_id() == key.public.key_id())
        else {
            merged.push((path, key));
            continue;
        };
        match (first.state, key.state) {
            (Some(a), Some(b)) if a != b => bail!(
                "key {} is {a}'s in {} but {b}'s in {}: a key is registered to one state; \
                 export the keys again with `tidemark keys --out DIR`",
                key.public.key_id(),
                first_path.display(),
                path.display()
            ),
            (None, Some(b)) => first.state = Some(b),
            _ => {}
        }
        let earliest = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first.revoked_at = earliest(first.revoked_at, key.revoked_at);
        first.valid_until = earliest(first.valid_until, key.valid_until);
        first.valid_from = first.valid_from.max(key.valid_from);
    }
    Ok(merged.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark::signing::SigningKey;

    fn pem() -> (String, String) {
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key();
        (public.key_id().to_string(), public.to_spki_pem())
    }

    #[test]
    fn a_key_file_as_keys_writes_it_is_read() {
        let (id, pem) = pem();
        let text = format!(
            "{KEY_ID}{id}\n{STATE}AUS\n{VALID_FROM}2019-01-01T00:00:00Z\n\
             {VALID_UNTIL}2021-01-01T00:00:00Z\n{REVOKED_AT}2020-01-01T00:00:00Z\n{pem}"
        );
        let keys = read_file(&text).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].state.map(|s| s.to_string()).as_deref(), Some("AUS"));
        assert_eq!(keys[0].valid_from, Some(1_546_300_800));
        assert_eq!(keys[0].revoked_at, Some(1_577_836_800));
        assert_eq!(keys[0].valid_until, Some(1_609_459_200));
        // The last end the server allows, which RFC 3339 cannot write, as its date.
        let last = tidemark::calendar::LAST_SECOND;
        let far = format!("{VALID_UNTIL}{}\n{pem}", header_time(last + 1));
        assert_eq!(read_file(&far).unwrap()[0].valid_until, Some(last + 1));
        assert_eq!(header_time(last), "9999-12-31T23:59:59Z");
        // A date alone means what it means to the admin commands: a revocation from its
        // first second, an end of validity after its last (the next midnight).
        let dates = format!("{VALID_UNTIL}2021-01-01\n{REVOKED_AT}2020-01-01\n{pem}");
        let keys = read_file(&dates).unwrap();
        assert_eq!(keys[0].revoked_at, Some(1_577_836_800));
        assert_eq!(keys[0].valid_until, Some(1_609_459_200 + 86_400));
        // Comments and blank lines are no headers.
        let commented = format!("# exported for the audit\n\n{text}");
        assert_eq!(read_file(&commented).unwrap().len(), 1);
    }

    #[test]
    fn a_header_spelt_any_other_way_or_placed_after_its_key_is_refused() {
        let (id, pem) = pem();
        for header in [
            "revoked-at: 2020-01-01T00:00:00Z",
            "Revoked-At:2020-01-01T00:00:00Z",
            "Revoked-at: 2020-01-01T00:00:00Z",
            "Revoked-At : 2020-01-01T00:00:00Z",
            "REVOKED AT: 2020-01-01T00:00:00Z",
            " Revoked-At: 2020-01-01T00:00:00Z",
            "state: IDN",
            "State:IDN",
            "STATE: AUS",
            "key-id: x",
            // Nor is anything else read past.
            "Revoked: 2020-01-01T00:00:00Z",
            "Revokd-At: 2020-01-01T00:00:00Z",
            "X-Revoked-At: 2020-01-01T00:00:00Z",
            "Revoked-At 2020-01-01T00:00:00Z",
            "State IDN",
            "State: IDN ",
            "State: IDN\u{a0}",
            "State:  IDN",
            "exported for the audit",
            " -----BEGIN PUBLIC KEY-----",
        ] {
            let before = format!("{KEY_ID}{id}\n{header}\n{pem}");
            let error = read_file(&before).err().unwrap().to_string();
            assert!(error.contains("line 2"), "{header}: {error}");
        }
        let inside = pem.replacen('\n', "\nState: AUS\n", 1);
        let error = read_file(&inside).err().unwrap().to_string();
        assert!(error.contains("inside the key"), "{error}");
        let after = format!("{KEY_ID}{id}\n{pem}{REVOKED_AT}2020-01-01T00:00:00Z\n");
        let error = read_file(&after).err().unwrap().to_string();
        assert!(error.contains("follows the last key"), "{error}");
        let twice =
            format!("{REVOKED_AT}2030-01-01T00:00:00Z\n{REVOKED_AT}2020-01-01T00:00:00Z\n{pem}");
        let error = read_file(&twice).err().unwrap().to_string();
        assert!(error.contains("lines 1 and 2"), "{error}");
    }
}
