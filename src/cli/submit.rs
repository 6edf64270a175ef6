//! `tidemark submit`, `tidemark retract` and `tidemark verify-receipt`.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use prost::Message;
use tidemark::{
    client,
    clock::format_time,
    envelope::{self, REPORT_PAYLOAD_TYPE, RETRACTION_PAYLOAD_TYPE},
    pb, receipt,
    signing::PublicKey,
};

use super::{client_args::ClientArgs, input, signing_args::SigningArgs};

/// Sign a report locally and submit it; prints the server's signed receipt.
///
/// The report is JSON in the standard proto3 JSON mapping of tidemark.v1.Report (see
/// proto/tidemark/v1/report.proto; `tidemark sample-reports --count 1` prints an example).
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The report, as JSON.
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
    /// Also write the receipt (a DSSE JSON envelope) to this file.
    #[arg(long, value_name = "FILE")]
    receipt_out: Option<PathBuf>,
    /// Print the receipt as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Withdraw one of your state's reports with a signed retraction. It stays stored,
/// marked retracted, and is never served as live data again.
#[derive(Args, Debug)]
pub struct RetractArgs {
    /// The report's id (UUID).
    report_id: String,
    /// The version this retraction creates: the report's latest version plus one.
    #[arg(long)]
    version: u32,
    /// Why the report is withdrawn.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
    #[arg(long)]
    json: bool,
}

/// Check a receipt offline against the server's receipt public key.
#[derive(Args, Debug)]
pub struct VerifyReceiptArgs {
    /// The receipt: a DSSE JSON envelope as written by `submit --receipt-out`.
    file: PathBuf,
    /// The server's receipt public key (PEM), e.g. certs/receipt.pub.pem.
    #[arg(long, value_name = "FILE", default_value = "certs/receipt.pub.pem")]
    server_key: PathBuf,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let text = input::read_text(&args.file)?;
    let report: pb::Report = input::from_json(&text)
        .map_err(|e| anyhow!("{} is not a report in JSON: {e}", args.file.display()))?;
    let key = args.signing.load(&args.client)?;
    let envelope = envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &key);
    send(
        &args.client,
        envelope,
        args.receipt_out.as_deref(),
        args.json,
    )
    .await
}

pub async fn retract(args: RetractArgs) -> anyhow::Result<()> {
    let identity = args.client.identity()?;
    let state = state_of(&identity)?;
    let retraction = pb::Retraction {
        report_id: args.report_id.clone(),
        reporting_state: state,
        version: args.version,
        reason: args.reason.clone(),
    };
    let key = args.signing.load(&args.client)?;
    let envelope = envelope::sign(RETRACTION_PAYLOAD_TYPE, retraction.encode_to_vec(), &key);
    send(&args.client, envelope, None, args.json).await
}

/// The state a node certificate names, read from its SPIFFE ID.
fn state_of(identity: &client::ClientIdentity) -> anyhow::Result<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(identity.cert_pem().as_bytes())
        .map_err(|e| anyhow!("reading the client certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("reading the client certificate: {e}"))?;
    let sans = cert.subject_alternative_name().ok().flatten();
    let uri = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the client certificate names no SPIFFE ID"))?;
    let state = uri
        .split("/state/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("{uri} is not a state's node"))?;
    Ok(state.to_owned())
}

async fn send(
    client_args: &ClientArgs,
    envelope: pb::Envelope,
    receipt_out: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let channel = client_args.connect().await?;
    let response = pb::exchange_client::ExchangeClient::new(channel)
        .submit(pb::SubmitRequest {
            envelope: Some(envelope),
        })
        .await
        .map_err(|status| anyhow!(client::explain(&status)))?
        .into_inner();
    let receipt_env = response
        .receipt
        .ok_or_else(|| anyhow!("the server answered without a receipt"))?;
    let receipt = pb::Receipt::decode(receipt_env.payload.as_slice())
        .map_err(|e| anyhow!("the server's receipt is malformed: {e}"))?;
    let receipt_json = serde_json::to_string_pretty(&receipt_env)?;
    if let Some(path) = receipt_out {
        std::fs::write(path, format!("{receipt_json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        let value = serde_json::json!({
            "duplicate": response.duplicate,
            "receipt": receipt,
            "envelope": serde_json::from_str::<serde_json::Value>(&receipt_json)?,
        });
        println!("{value}");
    } else {
        println!(
            "{} {} {} from {}: sequence {}, accepted {}",
            if response.duplicate {
                "already accepted:"
            } else {
                "accepted:"
            },
            receipt.kind,
            receipt.report_id,
            receipt.reporting_state,
            receipt.sequence,
            format_time(receipt.accepted_at_unix),
        );
        println!(
            "  version {}, digest {}",
            receipt.version,
            hex::encode(&receipt.envelope_digest)
        );
        if let Some(path) = receipt_out {
            println!("  receipt written to {}", path.display());
        }
    }
    Ok(())
}

pub fn verify_receipt(args: &VerifyReceiptArgs) -> anyhow::Result<()> {
    let text = input::read_text(&args.file)?;
    let envelope: pb::Envelope = input::from_json(&text)
        .map_err(|e| anyhow!("{} is not a DSSE JSON envelope: {e}", args.file.display()))?;
    let key = PublicKey::from_file(&args.server_key)?;
    let receipt = receipt::verify(&envelope, &key)?;
    println!(
        "valid receipt: {} {} v{} from {}, sequence {}, accepted {}, digest {}",
        receipt.kind,
        receipt.report_id,
        receipt.version,
        receipt.reporting_state,
        receipt.sequence,
        format_time(receipt.accepted_at_unix),
        hex::encode(&receipt.envelope_digest)
    );
    Ok(())
}
