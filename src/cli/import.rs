//! `tidemark import`: bulk submission from JSON lines or CSV.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use tidemark::{
    client,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    pb,
    signing::SigningKey,
};

use super::{client_args::ClientArgs, csv_rows::CsvRow, signing_args::SigningArgs};

/// Sign and submit many reports from a file: JSON lines (`.jsonl`, one report per line,
/// proto3 JSON) or CSV (`.csv`, one report per row; see the columns written by
/// `tidemark sample-reports --format csv`).
///
/// Bad lines are reported by line number without stopping the rest. Re-running an import
/// after an interruption is safe: reports already accepted count as duplicates.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import (.jsonl or .csv).
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
    /// Reports per Import call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// End with one JSON summary object instead of text.
    #[arg(long)]
    json: bool,
}

/// One line's outcome that is not plain acceptance.
struct LineError {
    line: usize,
    message: String,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let key = args.signing.load(&args.client)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut errors = Vec::new();
    let items = parse(&args.file, &text, &key, &mut errors);

    let channel = args.client.connect().await?;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    let progress = ProgressBar::new(items.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} reports  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    let batch = usize::try_from(args.batch).unwrap_or(500);
    for chunk in items.chunks(batch) {
        let requests: Vec<pb::SubmitRequest> = chunk
            .iter()
            .map(|(_, env)| pb::SubmitRequest {
                envelope: Some(env.clone()),
            })
            .collect();
        let summary = exchange
            .import(tokio_stream::iter(requests))
            .await
            .map_err(|status| anyhow!(client::explain(&status)))?
            .into_inner();
        accepted += summary.accepted;
        duplicates += summary.duplicates;
        for rejection in summary.rejections {
            let line = usize::try_from(rejection.index)
                .ok()
                .and_then(|i| chunk.get(i))
                .map_or(0, |(line, _)| *line);
            let mut message = format!("{}: {}", rejection.code, rejection.message);
            if !rejection.violations.is_empty() {
                message = format!(
                    "{}: {}",
                    rejection.code,
                    rejection
                        .violations
                        .iter()
                        .map(|v| format!("{}: {}", v.field, v.description))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            errors.push(LineError { line, message });
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    errors.sort_by_key(|e| e.line);

    let rejected = errors.len();
    if args.json {
        let value = serde_json::json!({
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "errors": errors.iter().map(|e| serde_json::json!({"line": e.line, "error": e.message})).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        for e in &errors {
            eprintln!("line {}: {}", e.line, e.message);
        }
        println!("{accepted} accepted, {duplicates} already there, {rejected} rejected");
    }
    if rejected > 0 {
        bail!("{rejected} of the file's reports were rejected (see the lines above)");
    }
    Ok(())
}

/// Parses and signs every record; unparseable ones go to `errors` by line.
fn parse(
    file: &std::path::Path,
    text: &str,
    key: &SigningKey,
    errors: &mut Vec<LineError>,
) -> Vec<(usize, pb::Envelope)> {
    let sign =
        |report: &pb::Report| envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), key);
    let mut items = Vec::new();
    let is_csv = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for (i, row) in reader.deserialize::<CsvRow>().enumerate() {
            let line = i + 2; // the header is line 1
            match row
                .map_err(anyhow::Error::from)
                .and_then(CsvRow::into_report)
            {
                Ok(report) => items.push((line, sign(&report))),
                Err(e) => errors.push(LineError {
                    line,
                    message: format!("not a valid CSV report row: {e:#}"),
                }),
            }
        }
    } else {
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<pb::Report>(raw) {
                Ok(report) => items.push((i + 1, sign(&report))),
                Err(e) => errors.push(LineError {
                    line: i + 1,
                    message: format!("not a report in JSON: {e}"),
                }),
            }
        }
    }
    items
}
