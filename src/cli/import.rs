//! `tidemark import`: bulk submission from JSON lines or CSV.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use tidemark::{
    client,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    pb,
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
    let total = count_records(&args.file)?;
    let mut records = records(&args.file)?;
    let mut errors = Vec::new();

    let channel = args.client.connect().await?;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} reports  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    let batch = usize::try_from(args.batch).unwrap_or(500);
    // Read, sign and send one batch at a time: memory stays bounded by --batch.
    loop {
        let mut chunk = Vec::with_capacity(batch);
        let mut read = 0u64;
        for (line, record) in records.by_ref() {
            read += 1;
            match record {
                Ok(report) => chunk.push((
                    line,
                    envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &key),
                )),
                Err(message) => errors.push(LineError { line, message }),
            }
            if chunk.len() >= batch {
                break;
            }
        }
        if read == 0 {
            break;
        }
        if chunk.is_empty() {
            progress.inc(read);
            continue;
        }
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
        progress.inc(read);
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

/// One record of the file: its line number and the report, or why it is not one.
type Record = (usize, Result<pb::Report, String>);

fn is_csv(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// The records of a JSON-lines or CSV file, read as they are consumed.
fn records(file: &Path) -> anyhow::Result<Box<dyn Iterator<Item = Record>>> {
    let open =
        || std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()));
    if is_csv(file) {
        let reader = csv::Reader::from_reader(BufReader::new(open()?));
        Ok(Box::new(
            reader
                .into_deserialize::<CsvRow>()
                .enumerate()
                .map(|(i, row)| {
                    let line = i + 2; // the header is line 1
                    let report = row
                        .map_err(anyhow::Error::from)
                        .and_then(CsvRow::into_report)
                        .map_err(|e| format!("not a valid CSV report row: {e:#}"));
                    (line, report)
                }),
        ))
    } else {
        let lines = BufReader::new(open()?).lines();
        Ok(Box::new(lines.enumerate().filter_map(|(i, line)| {
            let line_number = i + 1;
            match line {
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some((
                    line_number,
                    serde_json::from_str::<pb::Report>(&text)
                        .map_err(|e| format!("not a report in JSON: {e}")),
                )),
                Err(e) => Some((line_number, Err(format!("cannot read the line: {e}")))),
            }
        })))
    }
}

/// How many records the file holds, for the progress bar.
fn count_records(file: &Path) -> anyhow::Result<u64> {
    let reader = BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let mut count = 0u64;
    for line in reader.lines() {
        if !line?.trim().is_empty() {
            count += 1;
        }
    }
    Ok(if is_csv(file) {
        count.saturating_sub(1)
    } else {
        count
    })
}
