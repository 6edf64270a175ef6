//! `tidemark submit`, `tidemark retract` and `tidemark verify-receipt`.

use super::whole::whole;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use prost::Message;
use tidemark::{
    client,
    clock::format_time,
    envelope::{self, REPORT_PAYLOAD_TYPE, RETRACTION_PAYLOAD_TYPE},
    pb, receipt,
    signing::PublicKey,
};

use tidemark::tlog::{
    cosignature::{WitnessKey, cosigned_by},
    entry::Entry,
    note::NoteVerifier,
};

use super::{client_args::ClientArgs, input, signing_args::SigningArgs};

/// Sign a report locally and submit it; prints what the server accepted, and writes its
/// receipts on request (--receipt-out: the log proof `verify-receipt` checks offline).
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
    #[command(flatten)]
    receipts: ReceiptArgs,
    /// Print the answer as JSON (tidemark.v1.SubmitResponse: what was accepted, the log
    /// proof, and the signed receipt if asked for) instead of text.
    #[arg(long)]
    json: bool,
}

/// Where to write a submission's receipts.
#[derive(Args, Debug)]
struct ReceiptArgs {
    /// Also write the receipt to this file: a C2SP tlog proof (the envelope's log entry,
    /// its inclusion proof, the signed checkpoint), checked offline by `verify-receipt`.
    /// A new file, whole or not at all: one that exists is refused before anything is
    /// submitted (a receipt is never written over another file).
    #[arg(long, value_name = "FILE")]
    receipt_out: Option<PathBuf>,
    /// Also ask the server for a receipt signed with its receipt key (a DSSE JSON
    /// envelope; one signature per submission, so not by default) and write it here (a
    /// new file, as --receipt-out).
    #[arg(long, value_name = "FILE")]
    signed_receipt_out: Option<PathBuf>,
}

/// Withdraw one of your state's reports with a signed retraction. It stays stored,
/// marked retracted, and is never served as live data again.
#[derive(Args, Debug)]
pub struct RetractArgs {
    /// The report's id (UUID).
    report_id: String,
    /// The version this retraction creates: the report's latest version plus one
    /// (default: asked of the server, which refuses a signed retraction of the wrong
    /// version and says which is next).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole(1u32, u32::MAX))]
    new_version: Option<u32>,
    /// Why the report is withdrawn (kept with the retraction; default: none given).
    #[arg(long, default_value = "", hide_default_value = true)]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    receipts: ReceiptArgs,
    /// Print the answer as JSON (tidemark.v1.SubmitResponse) instead of text.
    #[arg(long)]
    json: bool,
}

/// Check a receipt offline.
///
/// A log proof (`submit --receipt-out`, C2SP tlog-proof@v1) is checked against the log's
/// note verifier key: the checkpoint's signature and origin, then the entry's inclusion
/// proof. A signed receipt (`submit --signed-receipt-out`, a DSSE JSON envelope) is
/// checked against the server's receipt public key.
#[derive(Args, Debug)]
pub struct VerifyReceiptArgs {
    /// The receipt file.
    file: PathBuf,
    /// For a log proof: the log's note verifier key (`<origin>+<hex id>+<base64>`), or a
    /// file holding it (`tidemark log verifier-key` prints it; `tidemark serve` on its
    /// defaults writes certs/log.vkey).
    #[arg(long, value_name = "KEY|FILE", default_value = "certs/log.vkey")]
    log_key: String,
    /// For a signed receipt: the server's receipt public key (PEM).
    #[arg(long, value_name = "FILE", default_value = "certs/receipt.pub.pem")]
    server_key: PathBuf,
    /// For a log proof: a witness's key (`<name>+<hex id>+<base64>`, or a file holding it,
    /// e.g. a state's witness.vkey); repeat for each witness. The proof's checkpoint must
    /// carry valid cosignatures (C2SP tlog-cosignature) of at least --quorum of them
    /// (`tidemark log proof` fetches a cosigned one).
    #[arg(long = "witness-key", value_name = "KEY|FILE")]
    witness_keys: Vec<String>,
    /// How many distinct --witness-key witnesses must have cosigned (default: 1 when
    /// witness keys are given; at most the number of distinct keys).
    #[arg(long, requires = "witness_keys", allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX))]
    quorum: Option<u64>,
    /// For a log proof: also ask the server whether its log still holds the entry. Its
    /// newest checkpoint must verify with the same log key and be the receipt's
    /// checkpoint or a consistent extension of it (RFC 9162 §2.1.4 consistency proof).
    /// Exits 3 when the log now has fewer leaves than the receipt's checkpoint, 4 when it
    /// is not a consistent extension of it (as `tidemark log witness` does): a restore
    /// from an older backup shows as 3, or as 4 once the log has grown past the receipt's
    /// size again; 1 when the server serves another log.
    #[arg(long)]
    against_log: bool,
    /// For a log proof: the DSSE envelope it should be the receipt of (DSSE JSON, or a
    /// line of `tidemark query --json`, whose "envelope" is taken): its entry must name
    /// the SHA-256 of that envelope's payload, which ties the proof to the report.
    #[arg(long, value_name = "FILE")]
    envelope: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let text = input::read_text(&args.file)?;
    let report: pb::Report = input::from_json(&text).map_err(|e| {
        let envelope = serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v.get("payloadType").is_some() || v.get("signatures").is_some());
        if envelope {
            anyhow!(
                "{} is a DSSE envelope (a report already signed); submit reads the report \
                 itself, as JSON, and signs it with your state's key",
                args.file.display()
            )
        } else if e.contains("trailing characters") {
            anyhow!(
                "{} holds more than one JSON value ({e}): submit sends one report; `tidemark \
                 import` sends a file of them (JSON lines or CSV)",
                args.file.display()
            )
        } else {
            anyhow!("{} is not a report in JSON: {e}", args.file.display())
        }
    })?;
    let key = args.signing.load(&args.client)?;
    let envelope = envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &key);
    let out = ReceiptFiles::of(&args.receipts)?;
    let channel = args.client.connect().await?;
    let response = out
        .around(submit_once(channel, envelope, out.signed.is_some()))
        .await?;
    print_accepted(response, out, args.json)
}

pub async fn retract(args: RetractArgs) -> anyhow::Result<()> {
    let identity = args.client.identity()?;
    let state = state_of(&identity)?;
    let key = args.signing.load(&args.client)?;
    let out = ReceiptFiles::of(&args.receipts)?;
    let signed = out.signed.is_some();
    let sign = |version: u32| {
        let retraction = pb::Retraction {
            report_id: args.report_id.clone(),
            reporting_state: state.clone(),
            version,
            reason: args.reason.clone(),
        };
        envelope::sign(RETRACTION_PAYLOAD_TYPE, retraction.encode_to_vec(), &key)
    };
    let channel = args.client.connect().await?;
    // Most reports are retracted at version 1: try 2, then what the server says is next.
    let first = sign(args.new_version.unwrap_or(2));
    let attempt = async {
        match submit_once(channel.clone(), first, signed).await {
            Err(status) if args.new_version.is_none() => match client::expected_version(&status) {
                Some(next) => submit_once(channel, sign(next), signed).await,
                None => Err(status),
            },
            done => done,
        }
    };
    let response = out.around(attempt).await?;
    print_accepted(response, out, args.json)
}

/// The SPIFFE ID a client certificate names.
fn spiffe_id_of(identity: &client::ClientIdentity) -> anyhow::Result<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(identity.cert_pem().as_bytes())
        .map_err(|e| anyhow!("reading the client certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("reading the client certificate: {e}"))?;
    let sans = cert.subject_alternative_name().ok().flatten();
    sans.iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the client certificate names no SPIFFE ID"))
}

/// The state a state's certificate names, read from its SPIFFE ID.
pub(super) fn state_of(identity: &client::ClientIdentity) -> anyhow::Result<String> {
    let uri = spiffe_id_of(identity)?;
    let state = uri
        .split("/state/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("{uri} is not a state's node"))?;
    Ok(state.to_owned())
}

/// The state of a node certificate; anything else (an analyst's, an operator's) is
/// refused, saying that `what` needs a node's.
pub(super) fn node_state_of(
    identity: &client::ClientIdentity,
    what: &str,
) -> anyhow::Result<String> {
    let uri = spiffe_id_of(identity)?;
    let state = state_of(identity)?;
    if !uri.contains(&format!("/state/{state}/node/")) {
        bail!("{what} runs as a state's node (--as certs/<state>-node); {uri} is not a node");
    }
    Ok(state)
}

/// The receipt files asked for.
#[derive(Clone, Copy)]
struct ReceiptFiles<'a> {
    proof: Option<&'a Path>,
    signed: Option<&'a Path>,
}

impl<'a> ReceiptFiles<'a> {
    fn of(args: &'a ReceiptArgs) -> anyhow::Result<Self> {
        let files = Self {
            proof: args.receipt_out.as_deref(),
            signed: args.signed_receipt_out.as_deref(),
        };
        if let (Some(proof), Some(signed)) = (files.proof, files.signed)
            && proof == signed
        {
            usage!(
                "--receipt-out and --signed-receipt-out both name {}: the log proof and the \
                 signed receipt are different files",
                proof.display()
            );
        }
        Ok(files)
    }

    /// Runs the submission `call`, having first found out that the receipt files can be
    /// made (new files, in directories that take files) before anything is submitted.
    async fn around<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> anyhow::Result<T> {
        for path in [self.proof, self.signed].into_iter().flatten() {
            // A receipt is evidence, never written over another file (the report
            // submitted, say).
            tidemark::files::can_create(path).map_err(|e| unwritten(path, &e))?;
        }
        call.await
            .map_err(|status| anyhow!(client::explain(&status)))
    }
}

/// Why a receipt or proof could not be written to `path`.
pub(super) fn unwritten(path: &Path, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        anyhow!(
            "{} already exists: a receipt is never written over another file; choose another \
             path, or remove that one first",
            path.display()
        )
    } else {
        anyhow!("cannot write {}: {e}", path.display())
    }
}

/// Submits one envelope, asking for a signed receipt when `signed_receipt`: the answer,
/// and the DSSE payload sent, whose digest its log entry must name.
async fn submit_once(
    channel: tonic::transport::Channel,
    envelope: pb::Envelope,
    signed_receipt: bool,
) -> Result<(pb::SubmitResponse, Vec<u8>), tonic::Status> {
    let payload = envelope.payload.clone();
    pb::exchange_client::ExchangeClient::new(channel)
        .submit(pb::SubmitRequest {
            envelope: Some(envelope),
            signed_receipt,
        })
        .await
        .map(|response| (response.into_inner(), payload))
}

/// Prints what the server accepted, then writes its receipts to the files asked for,
/// once the log proof's entry is seen to commit to the DSSE payload sent (`payload`): a
/// proof of another entry would prove nothing about this envelope.
fn print_accepted(
    (response, payload): (pb::SubmitResponse, Vec<u8>),
    out: ReceiptFiles<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let response = &response;
    let receipt = response
        .accepted
        .clone()
        .ok_or_else(|| anyhow!("the server answered without saying what it accepted"))?;
    let signed_json = match (&response.receipt, out.signed) {
        (Some(signed), _) => Some(serde_json::to_string_pretty(signed)?),
        (None, Some(path)) => bail!(
            "the envelope was accepted, but the server sent no signed receipt for {}; \
             --receipt-out writes the log proof, the receipt of record",
            path.display()
        ),
        (None, None) => None,
    };
    let proof = tidemark::tlog::proof::TlogProof::parse(&response.log_proof)
        .map_err(|e| anyhow!("the server's log proof is malformed: {e}"))?;
    let index = proof.index;
    let entry = Entry::decode(proof.extra.as_deref().unwrap_or_default()).map_err(|e| {
        anyhow!(
            "the server answered that it accepted the envelope, but its log proof's entry \
             {index} is not a well-formed {} entry ({e}). Keep this output as evidence, \
             and submit again (a duplicate gets the original's proof)",
            tidemark::tlog::entry::VERSION
        )
    })?;
    if let Err((sent, named)) = payload_named(&entry, &payload) {
        bail!(
            "the server answered that it accepted the envelope, but its log proof is of \
             another entry (entry {index} names payload {named}, the envelope sent is \
             {sent}): it proves nothing about this submission. Keep this output as \
             evidence, and submit again (a duplicate gets the original's proof)"
        );
    }
    // The files first, so that a closed stdout cannot stop the work half done; a file
    // that cannot be written is said after the acceptance is printed, so no fact is lost.
    let files = [
        (
            "signed receipt",
            out.signed,
            signed_json.map(|text| format!("{text}\n")),
        ),
        ("log proof", out.proof, Some(response.log_proof.clone())),
    ];
    // Each whole or not at all, and both or neither: a rerun to get the one that could not
    // be written would be refused over the other.
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for (what, path, contents) in files {
        let (Some(path), Some(contents)) = (path, contents) else {
            continue;
        };
        match tidemark::files::create_new(path, contents.as_bytes(), false) {
            Ok(()) => written.push((what, path)),
            Err(e) => failed.push(format!("its {what} ({:#})", unwritten(path, &e))),
        }
    }
    let failed = (!failed.is_empty()).then(|| {
        for (_, path) in written.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        anyhow!(
            "the envelope was accepted, but {} could not be written, so no receipt file was \
             left; submit it again to get them (a duplicate gets the original's)",
            failed.join(", nor ")
        )
    });
    if json {
        // The API's answer in the proto3 JSON mapping, `duplicate` written even when false.
        let mut value = super::json::value(response, "tidemark.v1.SubmitResponse");
        if let Some(object) = value.as_object_mut() {
            object.insert("duplicate".to_owned(), response.duplicate.into());
        }
        outln!("{value}")?;
    } else {
        outln!(
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
        )?;
        outln!(
            "  version {}, digest {}, log index {index}",
            receipt.version,
            digest_text(&receipt.envelope_digest)
        )?;
    }
    if !json {
        for (what, path) in written {
            outln!("  {what} written to {}", path.display())?;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The largest receipt or key file read (a log proof is a few hundred bytes).
const MAX_RECEIPT_FILE: u64 = 1024 * 1024;

pub async fn verify_receipt(args: &VerifyReceiptArgs) -> anyhow::Result<()> {
    let text = input::read_note(&args.file, MAX_RECEIPT_FILE)?;
    if text.starts_with(tidemark::tlog::proof::HEADER) {
        return verify_log_proof(&text, args).await;
    }
    let first = format!(
        "{:?}",
        tidemark::report::shorten(text.lines().next().unwrap_or_default().to_owned(), 64)
    );
    let neither = |e: &dyn std::fmt::Display| {
        anyhow!(
            "{} is neither a log proof (whose first line is exactly {}; this file's is {}) \
             nor a DSSE JSON envelope ({e})",
            args.file.display(),
            tidemark::tlog::proof::HEADER,
            first
        )
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        return Err(neither(&e));
    }
    // A receipt is checked, not sent: a signature that cannot be read spoils no other.
    // (Keys given twice are refused first: a value would keep only the last.)
    input::no_duplicate_keys(&text).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let text = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            let _voided = input::void_unreadable_signatures(&mut value);
            value.to_string()
        }
        Err(_) => text,
    };
    let envelope: pb::Envelope = input::from_json(&text).map_err(|e| neither(&e))?;
    if args.against_log {
        bail!(
            "{} is a signed receipt, which is not in the log: --against-log checks a log \
             proof (write one with `submit --receipt-out`, or fetch one with `tidemark log \
             proof`)",
            args.file.display()
        );
    }
    if !args.witness_keys.is_empty() {
        bail!(
            "{} is a signed receipt, which no witness cosigns: --witness-key checks a log \
             proof's checkpoint (write one with `submit --receipt-out`)",
            args.file.display()
        );
    }
    let key = PublicKey::from_file(&args.server_key)?;
    let receipt = receipt::verify(&envelope, &key)?;
    outln!(
        "valid receipt: {} {} v{} from {}, sequence {}, accepted {}, digest {}",
        receipt.kind,
        receipt.report_id,
        receipt.version,
        receipt.reporting_state,
        receipt.sequence,
        format_time(receipt.accepted_at_unix),
        digest_text(&receipt.envelope_digest)
    )?;
    Ok(())
}

/// An envelope digest as text: base64, as every --json writes bytes (the proto3 JSON
/// mapping), so the two can be compared.
fn digest_text(digest: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A verifier key given as text or as a file holding it (on one line: a file of several
/// keys is refused, naming how many lines it has).
pub(super) fn key_text(key: &str, what: &str) -> anyhow::Result<String> {
    if key.contains('+') {
        one_line_key(key, "the key given", what)?;
        return Ok(key.to_owned());
    }
    let path = Path::new(key);
    if !path.exists() {
        bail!("{key} is neither a {what} (`<name>+<hex id>+<base64 key>`) nor a file");
    }
    let text = input::read_text_at_most(path, MAX_RECEIPT_FILE)
        .with_context(|| format!("{key}, the {what} file"))?;
    one_line_key(&text, key, what)?;
    Ok(text)
}

/// Refuses `text`, the file `file` given as a `what` (a note verifier key, a witness
/// key), when it is a PEM key or holds more than one line, saying what a `what` is.
pub(super) fn one_line_key(text: &str, file: &str, what: &str) -> anyhow::Result<()> {
    if text.contains("-----BEGIN") {
        bail!(
            "{file} is a PEM key; a {what} is one line `<name>+<hex id>+<base64 key>` (the \
             log's is certs/log.vkey, or what `tidemark log verifier-key` prints; a witness's \
             is the witness.vkey of its state directory)"
        );
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    if lines == 0 {
        bail!("{file} holds no key; a {what} file holds one key, on one line");
    }
    if lines > 1 {
        bail!("{file} holds {lines} lines; a {what} file holds one key, on one line");
    }
    Ok(())
}

/// Why the log proof `text` was refused (`e`), naming a line that ends in white space:
/// no line of a proof does, and a copy from a terminal can leave some, which then reads
/// as bad base64 or an altered checkpoint.
fn white_space_named(e: &dyn std::fmt::Display, text: &str) -> anyhow::Error {
    match text.lines().position(|l| l.ends_with([' ', '\t'])) {
        Some(i) => anyhow!(
            "{e}; line {} ends in a space or tab, which no line of a log proof does (left by \
             a copy from a terminal?): remove it",
            i + 1
        ),
        None => anyhow!("{e}"),
    }
}

/// Checks a log proof against the log key, and its checkpoint's cosignatures against the
/// witness keys.
async fn verify_log_proof(text: &str, args: &VerifyReceiptArgs) -> anyhow::Result<()> {
    let log_key = args.log_key.as_str();
    let key = key_text(log_key, "note verifier key").with_context(
        || "get the log's key with `tidemark log verifier-key` and pass it with --log-key",
    )?;
    let verified =
        receipt::verify_log_proof(text, &key).map_err(|e| white_space_named(&e, text))?;
    // Before anything is said to be valid: a proof of another envelope fails the check.
    let envelope_said = match &args.envelope {
        Some(path) => Some(envelope_check((&verified.fields, verified.index), path)?),
        None => None,
    };
    let witnesses = args
        .witness_keys
        .iter()
        .map(|k| {
            let text = key_text(k, "witness key")?;
            WitnessKey::parse(&text).map_err(|e| anyhow!("{e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !witnesses.is_empty() {
        let mut distinct = witnesses.clone();
        distinct.sort_by_key(WitnessKey::verifier_key);
        distinct.dedup_by(|a, b| a.name() == b.name() || a.verifier_key() == b.verifier_key());
        let quorum = usize::try_from(args.quorum.unwrap_or(1)).unwrap_or(usize::MAX);
        if quorum > distinct.len() {
            usage!(
                "--quorum {quorum} asks for more witnesses than the {} distinct --witness-key \
                 keys given",
                distinct.len()
            );
        }
        let log = NoteVerifier::parse(key.trim()).map_err(|e| anyhow!("{e}"))?;
        let proof = tidemark::tlog::proof::TlogProof::parse(text).map_err(|e| anyhow!("{e}"))?;
        let cosigned =
            cosigned_by(&proof.checkpoint_note, &log, &witnesses).map_err(|e| anyhow!("{e}"))?;
        if cosigned.len() < quorum {
            bail!(
                "the checkpoint is cosigned by {} of the {} witnesses given ({}), fewer than \
                 the quorum of {quorum}: the entry may be in a history other states were \
                 not shown (fetch a cosigned proof with `tidemark log proof`)",
                cosigned.len(),
                distinct.len(),
                if cosigned.is_empty() {
                    "none".to_owned()
                } else {
                    cosigned
                        .iter()
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        outln!(
            "cosigned by {} of {} witnesses (quorum {quorum}): {}",
            cosigned.len(),
            distinct.len(),
            cosigned
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    let entry = String::from_utf8_lossy(&verified.entry);
    outln!(
        "valid log proof: entry {} is in log {} (tree size {}, root {})",
        verified.index,
        verified.checkpoint.origin,
        verified.checkpoint.size,
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            verified.checkpoint.root
        ),
    )?;
    for line in entry.lines() {
        // Times in an entry are Unix seconds (docs/transparency.md): said in UTC too.
        let time = line
            .split_once(' ')
            .filter(|(name, _)| matches!(*name, "accepted" | "at" | "logged"))
            .and_then(|(_, value)| value.parse::<i64>().ok());
        match time {
            Some(time) => outln!("  {line} ({})", format_time(time))?,
            None => outln!("  {line}")?,
        }
    }
    if let Some(said) = envelope_said {
        outln!("{said}")?;
    }
    if args.against_log {
        against_log(&verified.checkpoint, &key, &args.client).await?;
    }
    Ok(())
}

/// Whether log entry `entry` names the digest of DSSE payload `payload` (as
/// `payload sha256:<hex>`, docs/transparency.md): that digest, or it and what the entry
/// names instead.
fn payload_named(entry: &Entry, payload: &[u8]) -> Result<String, (String, String)> {
    let digest = tidemark::tlog::entry::sha256(payload);
    let said = |d| format!("sha256:{}", hex::encode(d));
    match entry {
        Entry::Envelope(e) if e.payload_sha256 == digest => Ok(said(digest)),
        Entry::Envelope(e) => Err((said(digest), said(e.payload_sha256))),
        other => Err((
            said(digest),
            format!(
                "none (it is {} entry, not an envelope's)",
                other.kind_in_a_sentence()
            ),
        )),
    }
}

/// `verify-receipt --envelope`: that log entry `entry` commits to the payload of the
/// envelope at `path`, said as a sentence, or why not.
fn envelope_check((entry, index): (&Entry, u64), path: &Path) -> anyhow::Result<String> {
    let text = input::read_text(path)?;
    let text = text.trim();
    let unreadable = |e: String| {
        anyhow!(
            "{} is not a DSSE envelope in JSON, nor a `tidemark query --json` line, as \
             `tidemark verify` reads them: {e}",
            path.display()
        )
    };
    let envelope = super::verify::read_line(text).map_err(unreadable)?;
    let sent = payload_named(entry, &envelope.payload).map_err(|(sent, named)| {
        anyhow!(
            "the proof is valid, but not of {}: its entry names payload {named}, and the \
             envelope's payload is {sent}",
            path.display()
        )
    })?;
    // The proof is of this payload; an envelope the server would not have
    // taken as it is (unsigned, not a report or retraction) is not what it accepted.
    if let Some(why) = super::verify::not_accepted_as_it_is(&envelope) {
        bail!(
            "{} is not an envelope the server accepted as it is: {why}",
            path.display()
        );
    }
    // The entry must also record what the payload says (state, report, version, kind,
    // category), and a line's meta what the entry says, as `verify` holds them.
    if let Entry::Envelope(recorded) = entry {
        super::verify::line_against_entry(text, &envelope, recorded, index).map_err(|why| {
            anyhow!(
                "the proof is valid, but {} does not agree with it: {why}",
                path.display()
            )
        })?;
    }
    Ok(format!(
        "the entry commits to the payload of {} ({sent}); its signatures are not checked \
         here: `tidemark verify {} --public-key KEYS` checks them against the state's keys \
         (`tidemark keys --out KEYS` fetches them)",
        path.display(),
        path.display()
    ))
}

/// Checks that the server's log still holds what checkpoint `held` (verified with the
/// log key `key`) holds: its newest checkpoint is `held` or a consistent extension.
async fn against_log(
    held: &tidemark::tlog::checkpoint::Checkpoint,
    key: &str,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let verifier = NoteVerifier::parse(key.trim()).map_err(|e| anyhow!("{e}"))?;
    let mut log = pb::transparency_client::TransparencyClient::new(client.connect().await?);
    let note = log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner()
        .note;
    // Another exchange's log, or another key: not a fork of this one.
    let newest = tidemark::tlog::checkpoint::Checkpoint::open(&note, &verifier).map_err(|e| {
        anyhow!(
            "the server's newest checkpoint does not verify with the log key the receipt \
             verified with ({e}): it serves another log (check --endpoint), or the log's key \
             changed"
        )
    })?;
    if newest.origin != held.origin {
        bail!(
            "the server's log is named {:?}, not {:?} as the receipt's: it is another log \
             (check --endpoint)",
            newest.origin,
            held.origin
        );
    }
    super::witness::check_extension(
        &mut log,
        held,
        &newest,
        (
            "this receipt was issued under",
            ": the log served now is not the one the receipt was issued from (restored from \
             a backup, or forked); its entry may or may not be in it (`tidemark log proof \
             --entry-hash` says)",
        ),
    )
    .await?;
    outln!(
        "the server's log still holds it: its newest checkpoint ({} leaves) is {} the \
         receipt's ({} leaves)",
        newest.size,
        if newest.size == held.size {
            "the same as"
        } else {
            "a consistent extension of"
        },
        held.size
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::one_line_key;

    /// A key file holds one key on one line: none, several or a PEM key is refused
    /// naming the file and what such a key is (tester D: an empty witness.vkey read as
    /// "another witness ()").
    #[test]
    fn a_key_file_holds_one_key_on_one_line() {
        let key = "log.example+0123abcd+AQIDBA==";
        one_line_key(&format!("{key}\n"), "k", "note verifier key").unwrap();
        one_line_key(&format!("\u{20}{key}\r\n\n"), "k", "note verifier key").unwrap();
        for (text, said) in [
            ("", "k holds no key"),
            ("\n \n", "k holds no key"),
            (&*format!("{key}\n{key}\n"), "k holds 2 lines"),
            (
                "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n",
                "k is a PEM key",
            ),
        ] {
            let e = one_line_key(text, "k", "witness key")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(said) && e.contains("witness key"),
                "{text:?}: {e}"
            );
        }
    }
}
