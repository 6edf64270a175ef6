//! `tidemark verify` and `tidemark keys`: check a report's provenance without trusting
//! the server.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use prost::Message;
use tidemark::{
    client,
    country::CountryCode,
    envelope,
    pb::{self, exchange_client::ExchangeClient},
    signing::PublicKey,
};

use super::client_args::ClientArgs;

/// Check a downloaded report's DSSE signature offline against its owning state's public
/// key(s). FILE is a DSSE JSON envelope, or one line of `tidemark query --json`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The envelope to check: a DSSE JSON file, or one line of `tidemark query --json`.
    file: PathBuf,
    /// The owning state's public key (PEM), from `tidemark keys`; repeat for several.
    #[arg(long = "public-key", value_name = "FILE", required = true)]
    public_keys: Vec<PathBuf>,
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let text = super::input::read_text(&args.file)?;
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let envelope_json = value.get("envelope").cloned().unwrap_or(value);
    let envelope: pb::Envelope =
        serde_json::from_value(envelope_json).context("not a DSSE envelope")?;
    let keys = args
        .public_keys
        .iter()
        .map(|p| PublicKey::from_file(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if envelope.signatures.is_empty() {
        bail!("the envelope carries no signature, so nothing can be verified");
    }
    let Some(key) = envelope::verified_by(&envelope, &keys) else {
        bail!(
            "the signature does not verify with the given key(s): the report was altered, or signed by another key"
        );
    };
    match pb::Report::decode(envelope.payload.as_slice()) {
        Ok(r) if envelope.payload_type == envelope::REPORT_PAYLOAD_TYPE => println!(
            "valid: report {} version {} of {}, signed by key {}",
            r.report_id,
            r.version,
            r.reporting_state,
            key.key_id()
        ),
        _ => println!(
            "valid: {} signed by key {}",
            envelope.payload_type,
            key.key_id()
        ),
    }
    Ok(())
}

/// Export states' registered report-signing public keys as PEM files, for `verify`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Only this state's keys.
    #[arg(long)]
    state: Option<CountryCode>,
    /// Write <state>-<key id>.pub.pem files here (default: print them).
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
        match &args.out {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!(
                    "{}-{}.pub.pem",
                    k.state.to_lowercase(),
                    &k.key_id[..16.min(k.key_id.len())]
                ));
                std::fs::write(&path, &k.public_key_pem)?;
                println!("{} {} -> {}", k.state, k.key_id, path.display());
            }
            None => print!("# {} {}\n{}", k.state, k.key_id, k.public_key_pem),
        }
    }
    Ok(())
}
