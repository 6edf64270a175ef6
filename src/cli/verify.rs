//! `tidemark verify` and `tidemark keys`: check a report's provenance without trusting
//! the server.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use prost::Message;
use tidemark::{
    client,
    clock::format_time,
    country::CountryCode,
    envelope,
    pb::{self, exchange_client::ExchangeClient},
    signing::PublicKey,
};

use super::client_args::ClientArgs;

/// Check downloaded reports' DSSE signatures offline against their owning states' public
/// keys (`tidemark keys --out keys/`).
///
/// Each FILE is a DSSE JSON envelope, or the output of `tidemark query --json` (JSON
/// lines: every line is checked, with a summary at the end). A key that `keys --out`
/// wrote as revoked makes a report it signed untrusted when the report was accepted at
/// or after the revocation (the acceptance time is on each `query --json` line). Exits
/// non-zero unless every envelope is valid and trusted.
///
/// Example: tidemark query --category maritime --json > reports.jsonl;
///   tidemark verify reports.jsonl --public-key keys/
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The envelopes to check: DSSE JSON files, or `tidemark query --json` output.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The owning states' public keys (PEM, as `tidemark keys` prints them or `keys --out`
    /// writes them; a file may hold several): files, or directories whose *.pem files are
    /// all read; several may follow one flag (a file after them that is not a key is
    /// taken as an envelope to check).
    #[arg(long = "public-key", value_name = "FILE|DIR", required = true, num_args = 1..)]
    public_keys: Vec<PathBuf>,
}

/// The PEM header line (RFC 7468 explanatory text) `keys --out` writes for a revoked
/// key: when its revocation takes effect.
const REVOKED_AT: &str = "Revoked-At: ";

/// A public key and, if revoked, since when (Unix seconds).
struct Key {
    public: PublicKey,
    revoked_at: Option<i64>,
}

/// Splits the paths given after --public-key into key files (directories, and files
/// holding a PEM public key) and envelopes to check (anything else).
fn split_keys(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    paths.iter().cloned().partition(|p| {
        p.is_dir()
            || super::input::read_text(p).is_ok_and(|t| t.contains("-----BEGIN PUBLIC KEY-----"))
    })
}

/// Reads every key the arguments name.
fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<Key>> {
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
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut keys = Vec::new();
    for path in &files {
        let text = super::input::read_text(path)?;
        // Each PEM section, with the explanatory lines before it (RFC 7468).
        let mut found = 0;
        for section in text.split_inclusive("-----END PUBLIC KEY-----") {
            if !section.contains("-----BEGIN PUBLIC KEY-----") {
                continue;
            }
            let public = PublicKey::from_spki_pem(section)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let revoked_at = section
                .lines()
                .find_map(|l| l.strip_prefix(REVOKED_AT))
                .map(|t| {
                    tidemark::calendar::parse_instant(t.trim()).ok_or_else(|| {
                        anyhow!(
                            "{}: {REVOKED_AT}{t} is not an RFC 3339 time",
                            path.display()
                        )
                    })
                })
                .transpose()?;
            keys.push(Key { public, revoked_at });
            found += 1;
        }
        if found == 0 {
            bail!("{} holds no PEM public key", path.display());
        }
    }
    Ok(keys)
}

/// What checking one envelope found.
enum Outcome {
    Valid,
    /// Valid, but its key was revoked before the report was accepted (or when it was
    /// accepted is not known).
    Untrusted,
    Invalid,
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let (key_paths, more) = split_keys(&args.public_keys);
    let files: Vec<PathBuf> = args.files.iter().cloned().chain(more).collect();
    if files.is_empty() {
        bail!("name the envelopes to check: tidemark verify FILE… --public-key KEYS");
    }
    if key_paths.is_empty() {
        bail!("no public key given: --public-key keys/ (written by `tidemark keys --out keys/`)");
    }
    let keys = load_keys(&key_paths)?;
    let publics: Vec<PublicKey> = keys.iter().map(|k| k.public.clone()).collect();
    let (mut valid, mut untrusted, mut invalid) = (0u64, 0u64, 0u64);
    for file in &files {
        let text = super::input::read_text(file)?;
        let trimmed = text.trim();
        // A whole file of one (possibly pretty-printed) JSON value, or JSON lines.
        let items: Vec<(Option<usize>, &str)> =
            if serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
                vec![(None, trimmed)]
            } else {
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| (Some(i + 1), l))
                    .collect()
            };
        for (line, item) in items {
            let place = match line {
                Some(n) => format!("{} line {n}", file.display()),
                None => file.display().to_string(),
            };
            match check(item, &keys, &publics) {
                Ok((Outcome::Valid, said)) => {
                    valid += 1;
                    println!("valid: {said}");
                }
                Ok((Outcome::Untrusted, said)) => {
                    untrusted += 1;
                    println!("UNTRUSTED: {place}: {said}");
                }
                Ok((Outcome::Invalid, said)) | Err(said) => {
                    invalid += 1;
                    println!("INVALID: {place}: {said}");
                }
            }
        }
    }
    let checked = valid + untrusted + invalid;
    if checked > 1 || untrusted + invalid > 0 {
        println!(
            "{}: {valid} valid, {untrusted} signed by a key revoked before acceptance, {invalid} invalid",
            super::labels::count(checked, "envelope", "envelopes")
        );
    }
    if untrusted + invalid > 0 {
        bail!("not every envelope is valid and trusted (see above)");
    }
    Ok(())
}

/// Checks one envelope (or `query --json` line) against the keys.
fn check(item: &str, keys: &[Key], publics: &[PublicKey]) -> Result<(Outcome, String), String> {
    let value: serde_json::Value =
        serde_json::from_str(item).map_err(|e| format!("not JSON: {e}"))?;
    let accepted_at = value.pointer("/meta/acceptedAtUnix").and_then(|v| {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_i64())
    });
    let envelope_json = value.get("envelope").cloned().unwrap_or(value);
    let envelope: pb::Envelope = serde_json::from_value(envelope_json).map_err(|_| {
        "not a DSSE envelope (a report as JSON is not signed: verify what `tidemark query \
         --json` prints, or a DSSE JSON file)"
            .to_owned()
    })?;
    if envelope.signatures.is_empty() {
        return Ok((
            Outcome::Invalid,
            "the envelope carries no signature".to_owned(),
        ));
    }
    let Some(key) = envelope::verified_by(&envelope, publics) else {
        let state = pb::Report::decode(envelope.payload.as_slice())
            .map(|r| r.reporting_state)
            .unwrap_or_default();
        return Ok((
            Outcome::Invalid,
            format!(
                "the signature does not verify with the given keys: the report was altered, \
                 or {} key that signed it was not given (`tidemark keys --out keys/` exports \
                 every state's)",
                if state.is_empty() {
                    "the".to_owned()
                } else {
                    format!("the {state}")
                }
            ),
        ));
    };
    let what = match pb::Report::decode(envelope.payload.as_slice()) {
        Ok(r) if envelope.payload_type == envelope::REPORT_PAYLOAD_TYPE => format!(
            "report {} version {} of {}, signed by key {}",
            r.report_id,
            r.version,
            r.reporting_state,
            key.key_id()
        ),
        _ => format!("{} signed by key {}", envelope.payload_type, key.key_id()),
    };
    let revoked_at = keys
        .iter()
        .find(|k| k.public.key_id() == key.key_id())
        .and_then(|k| k.revoked_at);
    Ok(match (revoked_at, accepted_at) {
        (None, _) => (Outcome::Valid, what),
        (Some(revoked), Some(accepted)) if accepted < revoked => (
            Outcome::Valid,
            format!(
                "{what} (revoked as of {}, after this report was accepted)",
                format_time(revoked)
            ),
        ),
        (Some(revoked), Some(accepted)) => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {}, before this report was accepted ({})",
                format_time(revoked),
                format_time(accepted)
            ),
        ),
        (Some(revoked), None) => (
            Outcome::Untrusted,
            format!(
                "{what}, revoked as of {}; when this envelope was accepted is not known \
                 (verify a line of `tidemark query --json`, which says)",
                format_time(revoked)
            ),
        ),
    })
}

/// Export states' registered report-signing public keys as PEM files, for `verify`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Only this state's keys.
    #[arg(long)]
    state: Option<CountryCode>,
    /// Write <state>-<key id>.pub.pem files here (default: print them); a revoked key's
    /// file says since when (a `Revoked-At:` line before the PEM), which `verify` reads.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let keys = ExchangeClient::new(args.client.connect().await?)
        .signing_keys(pb::SigningKeysRequest {
            state: args.state.map(|s| s.to_string()).unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner()
        .keys;
    for k in &keys {
        let revoked = (k.revoked_at_unix != 0).then(|| {
            format!(
                "{REVOKED_AT}{}\n",
                time::OffsetDateTime::from_unix_timestamp(k.revoked_at_unix)
                    .ok()
                    .and_then(|t| t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok())
                    .unwrap_or_default()
            )
        });
        match &args.out {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("{}-{}.pub.pem", k.state.to_lowercase(), k.key_id));
                let pem = format!(
                    "Key-Id: {}\nState: {}\n{}{}",
                    k.key_id,
                    k.state,
                    revoked.clone().unwrap_or_default(),
                    k.public_key_pem
                );
                std::fs::write(&path, pem)?;
                println!(
                    "{} {}{} -> {}",
                    k.state,
                    k.key_id,
                    if revoked.is_some() { " REVOKED" } else { "" },
                    path.display()
                );
            }
            None => print!(
                "# {} {}{}\n{}{}",
                k.state,
                k.key_id,
                if revoked.is_some() { " REVOKED" } else { "" },
                revoked.unwrap_or_default(),
                k.public_key_pem
            ),
        }
    }
    Ok(())
}
