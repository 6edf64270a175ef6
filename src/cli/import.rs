//! `tidemark import`: bulk submission from JSON lines or CSV.
//!
//! One bad record never stops an import: a line that cannot be read, signed, sent or
//! accepted is reported with its physical line number and the rest goes on. If a whole
//! Import call is refused (a message over the server's size limit, say), that batch is
//! sent again one report at a time with Submit, so the refusal lands on the one line at
//! fault. Only a failure that no retry can help (no connection, a refused certificate)
//! stops the import — and the summary is printed even then.

use super::whole::whole;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use prost::Message;
use tidemark::{
    client,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    pb::{self, exchange_client::ExchangeClient},
};
use tonic::{Code, transport::Channel};

use super::{
    client_args::ClientArgs, csv_rows::CsvRow, input, labels::printable_lines,
    signing_args::SigningArgs,
};

/// The server's default `limits.max_message_bytes`; a signed report larger than this is
/// refused here, by line, without a round trip.
const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;

/// Sign and submit many reports from a file: JSON lines (`.jsonl`, one report per line,
/// proto3 JSON — or the lines `tidemark query --json` writes, whose `report` is taken)
/// or CSV (`.csv`, one report per row; the columns `tidemark query --csv` and `tidemark
/// sample-reports --format csv` write). A sync mirror's lines are signed envelopes
/// without their reports, and are refused.
///
/// Every record that is not accepted is reported by its line number (for CSV, the line
/// where the record starts) and the rest is imported. A byte-order mark at the start of
/// the file is skipped. Re-running an import after an interruption is safe: reports
/// already accepted count as duplicates. The summary is printed when the import ends,
/// also when the server ends it early (not when you stop it with Ctrl-C: run it again to
/// see what was stored); the exit status is non-zero if any record was rejected. Reports
/// the server could not store at all (UNAVAILABLE: its disk full, say) are counted apart,
/// "not stored", and stop the import: run it again once the server is back.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import (.jsonl or .csv); `-` is standard input. A stream (standard
    /// input, a pipe) is read to its end first, into an anonymous temporary file (nothing
    /// is left behind, however the import ends), from where it stands; it is CSV when
    /// its first line is a CSV header with a `report_id` column, as `query --csv` writes.
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    signing: SigningArgs,
    /// Reports per Import call, 1 to 10000.
    #[arg(long, default_value_t = 500, allow_negative_numbers = true, value_parser = whole(1u64, 10_000))]
    batch: u64,
    /// The largest signed report to send, in bytes: the server's limits.max_message_bytes
    /// (at least 1024). A larger report is refused here, by its line, unsent.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
        allow_negative_numbers = true, value_parser = whole(1024u64, u64::MAX)
    )]
    max_message_bytes: u64,
    /// End with one JSON summary object instead of text.
    #[arg(long)]
    json: bool,
}

/// One line's outcome that is not plain acceptance.
struct LineError {
    line: usize,
    message: String,
}

/// What an import did so far.
#[derive(Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    errors: Vec<LineError>,
    /// Refused by an import the server ended before it said which (only how many).
    unlisted: u64,
    /// Sent, and then the call failed without an answer (the connection or the server
    /// went away): some of them may have been stored.
    unanswered: u64,
    /// Retractions skipped (lines of `query --include-retracted --json`).
    retractions: u64,
    /// Why the import stopped early, if it did.
    stopped: Option<String>,
    /// It stopped for the caller's rights (UNAUTHENTICATED, PERMISSION_DENIED): running
    /// it again cannot help until that changes.
    refused: bool,
    /// Records not sent because the import stopped early.
    not_sent: u64,
    /// Records the server answered it could not store now (UNAVAILABLE: its disk full,
    /// say): not rejected — the same file run again stores them.
    not_stored: u64,
    /// Whether the server's limit on one call has been met (and said so).
    limited: bool,
}

impl Tally {
    /// Stops the import `where` for a failure that is not one record's.
    fn stop(&mut self, at: &str, status: &tonic::Status) {
        self.refused = matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied
        );
        self.stopped = Some(format!("{at}: {}", client::explain(status)));
    }
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let key = args.signing.load(&args.client)?;
    // Read more than once: a stream is held in a temporary file first.
    let source = input::rereadable(&args.file)?;
    let format = Format::of(&args.file, &source)?;
    let total = count_records(&source, format)?;
    let mut records = records(&source, format)?;
    let mut exchange = ExchangeClient::new(args.client.connect().await?);
    let progress = super::progress::items(total, "reports");
    let mut tally = Tally::default();
    let batch = usize::try_from(args.batch).unwrap_or(500);
    // Read, sign and send one batch at a time: memory stays bounded by --batch.
    while tally.stopped.is_none() {
        let mut chunk = Vec::with_capacity(batch);
        let mut read = 0u64;
        for (line, record) in records.by_ref() {
            read += 1;
            match record {
                Ok(Line::Retraction) => tally.retractions += 1,
                Ok(Line::Report(report)) => {
                    let request = pb::SubmitRequest {
                        envelope: Some(envelope::sign(
                            REPORT_PAYLOAD_TYPE,
                            report.encode_to_vec(),
                            &key,
                        )),
                        ..Default::default()
                    };
                    let size = request.encoded_len();
                    if size as u64 > args.max_message_bytes
                        && let Err(invalid) =
                            tidemark::report::validate(*report, time::OffsetDateTime::now_utc())
                    {
                        // Too large because a rule is broken (a narrative past its
                        // length, say): that rule is what to fix.
                        tally.errors.push(LineError {
                            line,
                            message: format!("INVALID_ARGUMENT: {invalid}"),
                        });
                    } else if size as u64 > args.max_message_bytes {
                        let limit = if args.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES {
                            "the server accepts at most {} (limits.max_message_bytes)"
                        } else {
                            "--max-message-bytes sends at most {}"
                        }
                        .replace("{}", &args.max_message_bytes.to_string());
                        tally.errors.push(LineError {
                            line,
                            message: format!(
                                "RESOURCE_EXHAUSTED: the signed report is {size} bytes; \
                                 {limit}: shorten its text"
                            ),
                        });
                    } else {
                        chunk.push((line, request));
                    }
                }
                Err(message) => tally.errors.push(LineError { line, message }),
            }
            if chunk.len() >= batch {
                break;
            }
        }
        if read == 0 {
            break;
        }
        if !chunk.is_empty() {
            send_batch(&mut exchange, chunk, &mut tally).await;
        }
        progress.inc(read);
    }
    progress.finish_and_clear();
    // What an early stop left unsent, so that the summary accounts for every record. The
    // file's records are counted again as the import reads them (a document over several
    // lines is one; the progress bar's count is of lines). An import that ran to its end
    // sent everything.
    if tally.stopped.is_some() {
        let accounted = tally.accepted
            + tally.duplicates
            + tally.errors.len() as u64
            + tally.unlisted
            + tally.unanswered
            + tally.not_stored
            + tally.retractions;
        let total = self::records(&source, format)?.count() as u64;
        tally.not_sent = total.saturating_sub(accounted);
    }
    report(&args, tally)
}

/// Sends one batch with Import; if the call as a whole is refused for something one of
/// its records may have caused, sends each record alone with Submit instead.
async fn send_batch(
    exchange: &mut ExchangeClient<Channel>,
    mut chunk: Vec<(usize, pb::SubmitRequest)>,
    tally: &mut Tally,
) {
    // Each turn sends what is left after a first record the server refused.
    loop {
        let requests: Vec<pb::SubmitRequest> = chunk.iter().map(|(_, r)| r.clone()).collect();
        match exchange.import(tokio_stream::iter(requests)).await {
            // Ended part-way: what it did is counted, and only what it did not take goes on.
            Err(status) if client::import_trailers::read(&status).is_some() => {
                let mut rest = count_taken(exchange, &mut chunk, &status, tally).await;
                if rest.is_empty() || tally.stopped.is_some() {
                    return;
                }
                if chunk.is_empty() && !fatal(status.code()) {
                    // Ended at its first record, having taken nothing: that record is what
                    // the server refused (one larger than limits.max_message_bytes, say). It
                    // is reported on its line, and the rest goes on.
                    let (line, _) = rest.remove(0);
                    tally.errors.push(LineError {
                        line,
                        message: client::explain(&status),
                    });
                    chunk = rest;
                    continue;
                }
                // The server's window for one call closed after it took some: the rest
                // goes on in calls of what it took.
                let window_closed = status.code() == Code::DeadlineExceeded
                    && status.message().contains("limits.request_timeout_secs")
                    && !chunk.is_empty();
                if fatal(status.code()) && !window_closed {
                    tally.stop(&format!("stopped before line {}", rest[0].0), &status);
                } else {
                    // Past the server's limit on one import, say: the rest in calls of what
                    // it took.
                    if status.code() == Code::ResourceExhausted
                        && status.message().contains("max_import_items")
                        && !tally.limited
                    {
                        tally.limited = true;
                        errln!(
                            "the server takes at most {} reports in one call \
                         (limits.max_import_items); the rest goes in calls of that size \
                         (--batch sets it)",
                            chunk.len()
                        );
                    }
                    let size = chunk.len().max(1);
                    let mut rest = rest;
                    while !rest.is_empty() && tally.stopped.is_none() {
                        let next = rest.split_off(size.min(rest.len()));
                        Box::pin(send_batch(exchange, rest, tally)).await;
                        rest = next;
                    }
                }
            }
            Ok(summary) => {
                let summary = summary.into_inner();
                tally.accepted += summary.accepted;
                tally.duplicates += summary.duplicates;
                note_rejections(&chunk, summary.rejections, tally);
            }
            Err(status) if unanswered(&status) => {
                let (first, last) = (
                    chunk.first().map_or(0, |(line, _)| *line),
                    chunk.last().map_or(0, |(line, _)| *line),
                );
                tally.unanswered += chunk.len() as u64;
                tally.stopped = Some(format!(
                    "stopped: lines {first} to {last} were sent and not answered, so some of them \
                 may have been stored ({})",
                    client::explain(&status)
                ));
            }
            Err(status) if fatal(status.code()) => {
                let line = chunk.first().map_or(0, |(line, _)| *line);
                tally.stop(&format!("stopped before line {line}"), &status);
            }
            Err(_) => submit_each(exchange, chunk, tally).await,
        }
        return;
    }
}

/// Each rejection of an import of `chunk`, on its line.
fn note_rejections(
    chunk: &[(usize, pb::SubmitRequest)],
    rejections: Vec<pb::ImportRejection>,
    tally: &mut Tally,
) {
    let mut failed = Vec::new();
    for rejection in rejections {
        let line = line_of(chunk, rejection.index);
        if rejection.code == "UNAVAILABLE" {
            failed.push((line, rejection.message));
            continue;
        }
        tally.errors.push(LineError {
            line,
            message: rejection_message(&rejection.code, &rejection.message, &rejection.violations),
        });
    }
    // The server could not store them: no fault of theirs, and what follows would fare
    // no better, so the import stops there (as a single Submit's UNAVAILABLE stops it).
    if let (Some((first, why)), Some((last, _))) = (failed.first(), failed.last()) {
        tally.not_stored += failed.len() as u64;
        tally.stopped = Some(format!(
            "stopped: the server could not store {} (lines {first} to {last}): {why}",
            super::labels::count(failed.len() as u64, "report", "reports"),
        ));
    }
}

/// The file line of the import's item `index`.
fn line_of(chunk: &[(usize, pb::SubmitRequest)], index: u64) -> usize {
    usize::try_from(index)
        .ok()
        .and_then(|i| chunk.get(i))
        .map_or(0, |(line, _)| *line)
}

/// Sends each record alone with Submit, so that a refusal lands on its line.
async fn submit_each(
    exchange: &mut ExchangeClient<Channel>,
    chunk: Vec<(usize, pb::SubmitRequest)>,
    tally: &mut Tally,
) {
    for (line, request) in chunk {
        match exchange.submit(request).await {
            Ok(response) if response.get_ref().duplicate => tally.duplicates += 1,
            Ok(_) => tally.accepted += 1,
            Err(status) if unanswered(&status) => {
                tally.unanswered += 1;
                tally.stopped = Some(format!(
                    "stopped: line {line} was sent and not answered, so it may have been \
                     stored ({})",
                    client::explain(&status)
                ));
                return;
            }
            Err(status) if fatal(status.code()) => {
                tally.stop(&format!("stopped at line {line}"), &status);
                return;
            }
            Err(status) => tally.errors.push(LineError {
                line,
                message: client::explain(&status),
            }),
        }
    }
}

/// Counts what an import that ended part-way did (its trailers say): `chunk` keeps the
/// envelopes it took, and the rest are returned. Its status lists its first refusals;
/// if it refused more and the caller may go on, they are sent again one by one to learn
/// which: what the import accepted then comes back as already there, and is counted once.
async fn count_taken(
    exchange: &mut ExchangeClient<Channel>,
    chunk: &mut Vec<(usize, pb::SubmitRequest)>,
    status: &tonic::Status,
    tally: &mut Tally,
) -> Vec<(usize, pb::SubmitRequest)> {
    let [taken, accepted, duplicates, rejected] =
        client::import_trailers::read(status).unwrap_or_default();
    let taken = usize::try_from(taken)
        .unwrap_or(usize::MAX)
        .min(chunk.len());
    let rest = chunk.split_off(taken);
    tally.accepted += accepted;
    let listed = client::import_trailers::summary(status)
        .map(|summary| summary.rejections)
        .unwrap_or_default();
    let unlisted = rejected.saturating_sub(listed.len() as u64);
    if unlisted > 0 && !fatal(status.code()) {
        let before = tally.duplicates;
        submit_each(exchange, chunk.clone(), tally).await;
        // Those the import accepted are "already there" now: not counted twice.
        tally.duplicates = before + (tally.duplicates - before).saturating_sub(accepted);
        return rest;
    }
    tally.duplicates += duplicates;
    // Those not listed come after the last one listed.
    let (after, more) = match listed.last() {
        Some(last) => (last.index + 1, " more"),
        None => (0, ""),
    };
    note_rejections(chunk, listed, tally);
    if unlisted > 0
        && let Some(last) = chunk.last()
    {
        tally.unlisted += unlisted;
        errln!(
            "{unlisted}{more} of lines {} to {} refused; the server ended that import before \
             saying which: import the file again to see them (what was accepted is then \
             recognised as already there)",
            line_of(chunk, after),
            last.0
        );
    }
    rest
}

/// A call that failed without the server's answer — the connection or the server went
/// away, or time ran out — after its envelopes were sent: what it stored is unknown. (A
/// refusal is the server's answer, and an import it ends says what it did.)
fn unanswered(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) && client::import_trailers::read(status).is_none()
        && !never_sent(status)
}

/// Whether the call failed before anything of it was sent: the connection to the server
/// could not be made again (the server stopped between two batches, say).
fn never_sent(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
            )
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Failures that are not about one record: retrying record by record cannot help.
fn fatal(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unknown
    )
}

fn rejection_message(code: &str, message: &str, violations: &[pb::FieldViolation]) -> String {
    // The gRPC code in words, as `client::explain` says it for a single call.
    let code = match code {
        // Not "already there": that is what the summary calls a duplicate, accepted.
        "ALREADY_EXISTS" => "conflict",
        "FAILED_PRECONDITION" => "refused",
        "INVALID_ARGUMENT" => "invalid",
        "UNAUTHENTICATED" => "not accepted",
        "PERMISSION_DENIED" => "not allowed",
        "NOT_FOUND" => "not found",
        "RESOURCE_EXHAUSTED" => "over a limit",
        other => other,
    };
    if violations.is_empty() {
        format!("{code}: {message}")
    } else {
        format!(
            "{code}: {}",
            violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// Prints the summary (always), then fails if anything was rejected or the import
/// stopped early.
fn report(args: &ImportArgs, mut tally: Tally) -> anyhow::Result<()> {
    tally.errors.sort_by_key(|e| e.line);
    let rejected = tally.errors.len() as u64 + tally.unlisted;
    // The lines at fault go to stderr in both modes, for the person watching; a run of
    // lines refused for the same reason (a revoked key, say) is said once.
    for run in tally.errors.chunk_by(|a, b| a.message == b.message) {
        if let Some(first) = run.first() {
            errln!("{}: {}", lines_named(run), printable_lines(&first.message));
        }
    }
    if args.json {
        let value = serde_json::json!({
            "accepted": tally.accepted,
            "duplicates": tally.duplicates,
            "rejected": rejected,
            "errors": tally.errors.iter().map(|e| serde_json::json!({"line": e.line, "error": e.message})).collect::<Vec<_>>(),
            "unanswered": tally.unanswered,
            "notSent": tally.not_sent,
            "notStored": tally.not_stored,
            "retractionsSkipped": tally.retractions,
            "stopped": tally.stopped,
        });
        outln!("{value}")?;
    } else {
        let unanswered = if tally.unanswered > 0 {
            format!(", {} sent but not answered", tally.unanswered)
        } else {
            String::new()
        };
        let not_sent = if tally.not_sent > 0 {
            format!(", {} not sent", tally.not_sent)
        } else {
            String::new()
        };
        let not_stored = if tally.not_stored > 0 {
            format!(", {} not stored", tally.not_stored)
        } else {
            String::new()
        };
        outln!(
            "{} accepted, {} already there, {rejected} rejected{unanswered}{not_stored}{not_sent}",
            tally.accepted,
            tally.duplicates
        )?;
    }
    if tally.retractions > 0 {
        errln!(
            "{} skipped: import takes reports (a retraction is made with `tidemark retract`)",
            super::labels::count(tally.retractions, "retraction", "retractions")
        );
    }
    if let Some(stopped) = tally.stopped {
        if tally.refused {
            bail!(
                "the import {stopped}; running it again cannot help until that is resolved \
                 (then what was accepted counts as a duplicate)"
            );
        }
        bail!(
            "the import {stopped}; run it again to continue (what was accepted, also what was \
             not answered and yet stored, counts as a duplicate)"
        );
    }
    if rejected > 0 {
        bail!(
            "{rejected} of the file's reports {} rejected (see the lines above)",
            if rejected == 1 { "was" } else { "were" }
        );
    }
    Ok(())
}

/// The lines of a run of errors, in words: "line 4", "lines 4 to 7 (4 reports)" when
/// they follow each other, else each of them ("lines 4 and 7"), or the first few and
/// how many.
fn lines_named(run: &[LineError]) -> String {
    const SHOWN: usize = 8;
    let lines: Vec<usize> = run.iter().map(|e| e.line).collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => format!("line {one}"),
        [first, .., last] if last - first + 1 == lines.len() => {
            format!("lines {first} to {last} ({} reports)", lines.len())
        }
        [.., last] if lines.len() <= SHOWN => {
            let before: Vec<String> = lines[..lines.len() - 1]
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("lines {} and {last}", before.join(", "))
        }
        _ => {
            let shown: Vec<String> = lines[..SHOWN].iter().map(ToString::to_string).collect();
            format!(
                "{} reports, on lines {}, … ({} more; --json lists every line)",
                lines.len(),
                shown.join(", "),
                lines.len() - SHOWN
            )
        }
    }
}

/// One record of the file: its line number and the report, or why it is not one.
type Record = (usize, Result<Line, String>);

/// What a line of the file holds.
#[derive(Debug)]
enum Line {
    Report(Box<pb::Report>),
    /// A retraction as `query --include-retracted --json` writes it: skipped, since
    /// import takes reports, so that an export imports back whole.
    Retraction,
}

/// How a file's records are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// CSV when the file is named `.csv` — or, for input with no name to go by (standard
    /// input, redirected from a file or not; a pipe), when its first line that is not
    /// blank is a CSV header ([`is_csv_header`]); JSON lines otherwise.
    fn of(named: &Path, source: &input::Rereadable) -> anyhow::Result<Self> {
        if named
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            return Ok(Self::Csv);
        }
        if source.has_no_name() {
            // The first line that is not blank; a header line is short, and a longer
            // one is no header.
            let first = std::io::BufRead::lines(std::io::Read::take(source.open()?, 64 * 1024))
                .map_while(Result::ok)
                .find(|line| !line.trim().is_empty())
                .unwrap_or_default();
            if is_csv_header(&first) {
                return Ok(Self::Csv);
            }
        }
        Ok(Self::JsonLines)
    }
}

/// Whether `line` is a CSV header as `query --csv` writes one, its columns in any order:
/// no JSON object, and a `report_id` column.
fn is_csv_header(line: &str) -> bool {
    !line.trim_start().starts_with('{')
        && line
            .trim_end()
            .split(',')
            .any(|column| column.trim_matches('"') == "report_id")
}

/// Whether `file` holds nothing but white space (and a byte-order mark).
fn holds_nothing(file: &input::Rereadable) -> anyhow::Result<bool> {
    use std::io::Read as _;
    let mut start = Vec::new();
    file.open()?.take(4096).read_to_end(&mut start)?;
    let text = start.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&start);
    Ok(start.len() < 4096 && text.iter().all(u8::is_ascii_whitespace))
}

/// The records of a JSON-lines or CSV file, read as they are consumed, each with the
/// physical line it starts on.
fn records(
    file: &input::Rereadable,
    format: Format,
) -> anyhow::Result<Box<dyn Iterator<Item = Record>>> {
    let reader = file.open()?;
    if format == Format::Csv && holds_nothing(file)? {
        // An empty file imports nothing, as an empty JSON-lines file does.
        return Ok(Box::new(std::iter::empty()));
    }
    if format == Format::Csv {
        // The csv crate counts only "\n" as a line break (a file saved with "\r\n"
        // would be one line off, one with "\r" all on line 1): lines are counted here.
        let (reader, lines) = LineCounter::new(reader);
        let mut csv = csv::Reader::from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|e| {
                let why = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => {
                        "it is not UTF-8 text: save the file as UTF-8".to_owned()
                    }
                    _ => csv_error(&e, &csv::StringRecord::new(), None),
                };
                anyhow!("{}: the CSV header cannot be read: {why}", file.name())
            })?
            .clone();
        check_header(file.name(), &headers)?;
        Ok(Box::new(csv.into_records().map(move |row| match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| lines.line_at(p.byte()));
                if let Some(fault) = lines.quoting_fault(line) {
                    return (line, Err(format!("not a valid CSV row: {fault}")));
                }
                let misspelled = headers
                    .iter()
                    .zip(row.iter())
                    .find_map(|(column, cell)| super::csv_rows::misspelled_number(column, cell));
                if let Some(why) = misspelled {
                    return (line, Err(format!("not a valid CSV report row: {why}")));
                }
                let report = row
                    .deserialize::<CsvRow>(Some(&headers))
                    .map_err(|e| anyhow!(csv_error(&e, &headers, Some(&row))))
                    .and_then(CsvRow::into_report)
                    .map(|report| Line::Report(Box::new(report)))
                    .map_err(|e| format!("not a valid CSV report row: {e:#}"));
                (line, report)
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
                if let Some(fault) = lines.quoting_fault(line) {
                    return (line, Err(format!("not a valid CSV row: {fault}")));
                }
                let said = csv_error(&e, &headers, None);
                (line, Err(format!("not a valid CSV row: {said}")))
            }
        })))
    } else {
        not_json_lines(file)?;
        // Bytes, not `lines()`: one line that is not UTF-8 is that line's error only.
        let lines = BoundedLines {
            reader,
            max: MAX_LINE_BYTES,
        };
        let texts = lines.enumerate().filter_map(|(i, line)| {
            let line_number = i + 1;
            let bytes = match line {
                Ok(bytes) => bytes,
                Err(e) => {
                    return Some((line_number, Err(format!("cannot read the line: {e}"))));
                }
            };
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
            match std::str::from_utf8(bytes) {
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some((line_number, Ok(text.to_owned()))),
                Err(e) => Some((
                    line_number,
                    Err(format!(
                        "the line is not UTF-8 text ({e}): save the file as UTF-8"
                    )),
                )),
            }
        });
        Ok(Box::new(JsonLines {
            texts: Box::new(texts),
            ready: std::collections::VecDeque::new(),
            again: None,
        }))
    }
}

/// The records of JSON lines from their non-blank lines (number, text or why it cannot
/// be read). A JSON document that starts on a line and ends some lines later (one
/// pretty-printed report among JSON lines) is one record refused, naming its lines —
/// not one refusal per line, which counted one report as dozens.
struct JsonLines {
    texts: Box<dyn Iterator<Item = (usize, Result<String, String>)>>,
    /// Records made and not yet given, in order.
    ready: std::collections::VecDeque<Record>,
    /// A line to read afresh once they are given: the one that showed the lines before
    /// it were not one document (it may start one of its own).
    again: Option<(usize, String)>,
}

/// Most lines and bytes a document over several lines is followed for.
const MOST_DOCUMENT_LINES: usize = 10_000;

impl Iterator for JsonLines {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if let Some(record) = self.ready.pop_front() {
            return Some(record);
        }
        let (first, text) = match self.again.take().map(|(line, text)| (line, Ok(text))) {
            Some(again) => again,
            None => self.texts.next()?,
        };
        let text = match text {
            Ok(text) => text,
            Err(why) => return Some((first, Err(why))),
        };
        let record = report_of_line(&text);
        let cut_short = |text: &str| {
            serde_json::from_str::<serde::de::IgnoredAny>(text).is_err_and(|e| e.is_eof())
        };
        if record.is_ok() || !cut_short(&text) {
            return Some((first, record));
        }
        // A document cut short at the line's end: follow it over the next lines.
        let mut held = vec![(first, text.clone())];
        let mut document = text;
        while held.len() < MOST_DOCUMENT_LINES && document.len() < MAX_LINE_BYTES {
            let (line, next) = match self.texts.next() {
                None => break,
                Some((line, Ok(next))) => (line, next),
                Some((line, Err(why))) => {
                    self.ready.push_back((line, Err(why)));
                    break;
                }
            };
            document.push('\n');
            document.push_str(&next);
            if serde_json::from_str::<serde::de::IgnoredAny>(&document).is_ok() {
                return Some((
                    first,
                    Err(format!(
                        "lines {first} to {line} hold one JSON document over several lines; \
                         import reads one report per line (`jq -c . FILE` writes them so)"
                    )),
                ));
            }
            if !cut_short(&document) {
                // Not one document: this line is read afresh, after those held.
                self.again = Some((line, next));
                break;
            }
            held.push((line, next));
        }
        // Not one document, or one that never ends: each line held is its own record,
        // before what was read after them.
        let mut records: std::collections::VecDeque<Record> = held
            .into_iter()
            .map(|(line, text)| (line, report_of_line(&text)))
            .collect();
        records.append(&mut self.ready);
        self.ready = records;
        self.ready.pop_front()
    }
}

/// The longest line of JSON lines read: 16 MiB, four times the largest signed report the
/// server takes by default (a line's JSON is larger than its report's protobuf, but not
/// by that much). A longer line is the error of that line alone, and is never held in
/// memory: read whole, a 400 MB line took 1.6 GB and ended the import with an abort.
const MAX_LINE_BYTES: usize = 16 << 20;

/// The lines of a reader, each at most `max` bytes (without its line feed); a longer one
/// is skipped to its end and given as an `InvalidData` error.
struct BoundedLines<R> {
    reader: R,
    max: usize,
}

impl<R: std::io::BufRead> Iterator for BoundedLines<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        let mut length = 0usize;
        let mut read_any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if chunk.is_empty() {
                break;
            }
            read_any = true;
            let (part, used, ended) = match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => (&chunk[..at], at + 1, true),
                None => (chunk, chunk.len(), false),
            };
            length += part.len();
            if length <= self.max {
                line.extend_from_slice(part);
            } else {
                line = Vec::new();
            }
            self.reader.consume(used);
            if ended {
                break;
            }
        }
        if !read_any {
            return None;
        }
        if length > self.max {
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "it is {length} bytes long; a line of JSON lines holds one report, at most \
                     {} bytes",
                    self.max
                ),
            )));
        }
        Some(Ok(line))
    }
}

/// The report on a line of JSON lines: the line itself, or the `report` of a line that
/// `query --json` writes (`{"meta", "envelope", "report"}`), so that an export imports
/// back.
fn report_of_line(text: &str) -> Result<Line, String> {
    if text.contains("\"envelope\"")
        && let Ok(serde_json::Value::Object(mut line)) = serde_json::from_str(text)
        && line.contains_key("envelope")
    {
        if let Some(other) = line
            .keys()
            .find(|k| !["meta", "envelope", "report", "logProof"].contains(&k.as_str()))
        {
            return Err(format!(
                "a line of `query --json` holds meta, envelope, report and logProof; not \
                 {other:?}"
            ));
        }
        let meta = line.remove("meta");
        let field = |name: &str| {
            meta.as_ref()
                .and_then(|m| m.get(name))
                .and_then(|v| v.as_str())
        };
        return match line.remove("report") {
            Some(serde_json::Value::Object(report)) => {
                input::from_json::<pb::Report>(&serde_json::Value::Object(report).to_string())
                    .map(|report| Line::Report(Box::new(report)))
                    .map_err(|e| format!("not a report in JSON: report.{e}"))
            }
            Some(serde_json::Value::Null) if field("kind") == Some("retraction") => {
                Ok(Line::Retraction)
            }
            Some(other) => Err(format!("`report` is {other}, not a report (a JSON object)")),
            None => Err(MIRROR_LINE.to_owned()),
        };
    }
    input::from_json::<pb::Report>(text)
        .map(|report| Line::Report(Box::new(report)))
        .map_err(|e| format!("not a report in JSON: {e}"))
}

/// Why a line with an envelope and no report is not imported.
const MIRROR_LINE: &str = "a signed envelope without its report (a sync mirror's line): \
    import signs reports of your own state; export them with `tidemark query --json` or \
    `--csv`, which import reads back";

/// Refuses, once, a file that is clearly not JSON lines — a CSV export under another
/// name, or one pretty-printed JSON document (a report as `submit` takes it, or an array)
/// — rather than refusing each of its lines as a report.
fn not_json_lines(file: &input::Rereadable) -> anyhow::Result<()> {
    let mut first = String::new();
    let lines = BoundedLines {
        reader: file.open()?,
        max: MAX_LINE_BYTES,
    };
    for line in lines {
        // Unreadable, too long or not UTF-8: the line's own error, when it is imported.
        let Ok(Ok(line)) = line.map(String::from_utf8) else {
            return Ok(());
        };
        if !line.trim().is_empty() {
            first = line;
            break;
        }
    }
    if is_csv_header(&first) {
        bail!(
            "{} holds CSV (its first line is the header `query --csv` writes): name it \
             .csv, which import reads as CSV",
            file.name()
        );
    }
    if let Ok(serde_json::Value::Object(line)) = serde_json::from_str(&first)
        && line.contains_key("envelope")
        && !line.contains_key("report")
    {
        bail!("{}: its first line is {MIRROR_LINE}", file.name());
    }
    let small = file.len() <= MAX_LINE_BYTES as u64;
    if serde_json::from_str::<serde::de::IgnoredAny>(&first).is_err()
        && small
        && let Ok(text) = file.read_text()
        && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok()
    {
        bail!(
            "{} is one JSON document over several lines; import reads JSON lines, one report \
             per line (or CSV). Send one report with `tidemark submit {}`; for a JSON array, \
             write one element per line first (`jq -c '.[]' FILE > FILE.jsonl`)",
            file.name(),
            file.name()
        );
    }
    // Several documents, each over several lines (pretty-printed reports one after another).
    if serde_json::from_str::<serde::de::IgnoredAny>(&first).is_err()
        && small
        && let Ok(text) = file.read_text()
    {
        let documents: Result<Vec<serde::de::IgnoredAny>, _> =
            serde_json::Deserializer::from_str(&text)
                .into_iter()
                .collect();
        // Not when a line is a JSON object on its own: a file of JSON lines whose first
        // holds two reports, or one over several lines, has its lines imported and those
        // refused, each with its line number.
        let a_line_is_an_object = text
            .lines()
            .any(|line| matches!(serde_json::from_str(line), Ok(serde_json::Value::Object(_))));
        if let Some(documents) = documents
            .ok()
            .filter(|d| d.len() > 1 && !a_line_is_an_object)
        {
            bail!(
                "{} holds {} JSON documents, each over several lines; import reads JSON \
                 lines, one report per line (or CSV): `jq -c . FILE > FILE.jsonl` writes them \
                 so",
                file.name(),
                documents.len()
            );
        }
    }
    Ok(())
}

/// Every column once, and no other: a file without its header would take its first
/// report for one, and a column left out would lose what it holds without a word.
fn check_header(file: &str, headers: &csv::StringRecord) -> anyhow::Result<()> {
    let columns = super::csv_rows::columns();
    let missing: Vec<&str> = columns
        .iter()
        .filter(|column| !headers.iter().any(|h| h == column.as_str()))
        .map(String::as_str)
        .collect();
    let unknown: Vec<&str> = headers
        .iter()
        .enumerate()
        .filter(|(i, h)| {
            !columns.iter().any(|c| c == h) || headers.iter().take(*i).any(|e| e == *h)
        })
        .map(|(_, h)| h)
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let mut why = Vec::new();
        if missing.len() == columns.len() {
            why.push("it names none of the columns: is the header missing?".to_owned());
        } else if !missing.is_empty() {
            why.push(format!("it lacks {}", missing.join(", ")));
        }
        if !unknown.is_empty() {
            why.push(format!(
                "it names {} unknown or twice",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        bail!(
            "{}: the first line is not the header `import` reads ({}): write the file as \
             `tidemark query --csv` does, its first line naming every column once, and \
             leave a cell empty where there is nothing to say",
            file,
            why.join("; ")
        );
    }
    Ok(())
}

/// What is wrong with a CSV row, in the file's terms: a column by its header name and
/// with the value in it, and no position (the csv crate counts lines by "\n" alone and
/// records from 0; the caller names the row's real line).
fn csv_error(
    e: &csv::Error,
    headers: &csv::StringRecord,
    row: Option<&csv::StringRecord>,
) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let Some(field) = err.field().and_then(|f| usize::try_from(f).ok()) else {
                return err.kind().to_string();
            };
            let column = headers.get(field).unwrap_or("?");
            match row.and_then(|r| r.get(field)) {
                Some(value) => format!(
                    "column {column}: {:?}: {}",
                    tidemark::report::shorten(value.to_owned(), 60),
                    err.kind()
                ),
                None => format!("column {column}: {}", err.kind()),
            }
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "the row has {len} fields where the header has {expected_len}: a field holding a \
             comma, a double quote or a line break must be in double quotes (RFC 4180)"
        ),
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "column {} is not UTF-8 text: save the file as UTF-8",
            headers.get(err.field()).unwrap_or("?")
        ),
        csv::ErrorKind::Io(e) => format!("the file cannot be read: {e}"),
        _ => e.to_string(),
    }
}

/// A reader that notes where each line ends ("\n", "\r\n" or a lone "\r"), so that a
/// byte offset read through it can be told as a line number.
struct LineCounter<R> {
    inner: R,
    read: u64,
    /// The last byte read was "\r" (its line ends after it, unless "\n" follows).
    after_cr: bool,
    ends: std::sync::Arc<std::sync::Mutex<LineEnds>>,
}

/// The line ends read so far and not yet looked past: the offsets of their first byte
/// and just past them.
#[derive(Default)]
struct LineEnds {
    passed: usize,
    pending: std::collections::VecDeque<(u64, u64)>,
    /// The quoting of every byte read, checked (RFC 4180).
    quoting: super::csv_quoting::Quoting,
}

/// Tells line numbers of offsets read through a [`LineCounter`], in increasing order.
#[derive(Clone)]
struct Lines(std::sync::Arc<std::sync::Mutex<LineEnds>>);

impl Lines {
    /// The line (from 1) of the first byte at or after `offset` that is not a line
    /// end: where a record that the reader started reading at `offset` begins (it skips
    /// blank lines). Offsets must be asked in increasing order, as records come.
    fn line_at(&self, mut offset: u64) -> usize {
        let mut ends = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(start, end)) = ends.pending.front() {
            if start <= offset {
                // Passed, or a blank line the record starts after.
                offset = offset.max(end);
                ends.pending.pop_front();
                ends.passed += 1;
            } else {
                break;
            }
        }
        ends.passed + 1
    }

    /// The quoting fault of the record starting on `line`, if it has one.
    fn quoting_fault(&self, line: usize) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .quoting
            .take(line)
    }
}

impl<R> LineCounter<R> {
    fn new(inner: R) -> (Self, Lines) {
        let ends = std::sync::Arc::default();
        let lines = Lines(std::sync::Arc::clone(&ends));
        let counter = Self {
            inner,
            read: 0,
            after_cr: false,
            ends,
        };
        (counter, lines)
    }
}

impl<R: std::io::Read> std::io::Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut ends = self
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if n == 0 && !buf.is_empty() {
            ends.quoting.finish();
        }
        ends.quoting.feed(&buf[..n]);
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = self.read + i as u64;
            match byte {
                // "\r\n" is one line end, from the "\r".
                b'\n' if self.after_cr => ends.pending.push_back((at - 1, at + 1)),
                b'\n' => ends.pending.push_back((at, at + 1)),
                _ if self.after_cr => ends.pending.push_back((at - 1, at)),
                _ => {}
            }
            self.after_cr = byte == b'\r';
        }
        self.read += n as u64;
        Ok(n)
    }
}

fn count_records(file: &input::Rereadable, format: Format) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let reader = file.open()?;
    if format == Format::Csv {
        return Ok(csv::Reader::from_reader(reader).into_records().count() as u64);
    }
    // Scanned, not split into lines: a line of hundreds of MB is never held whole.
    let (mut count, mut blank) = (0u64, true);
    let mut reader = reader;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        for &byte in chunk {
            if byte == b'\n' {
                count += u64::from(!blank);
                blank = true;
            } else if !byte.is_ascii_whitespace() {
                blank = false;
            }
        }
        let read = chunk.len();
        reader.consume(read);
    }
    Ok(count + u64::from(!blank))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV header is told by its `report_id` column wherever it stands (a spreadsheet
    /// may have moved it); a JSON line naming the field is no header.
    #[test]
    fn a_csv_header_is_told_by_its_report_id_column() {
        for header in [
            "report_id,version,state\n",
            "version,\"report_id\",state\r\n",
            "narrative,report_id",
        ] {
            assert!(is_csv_header(header), "{header}");
        }
        for line in [
            "{\"report_id\": \"x\"}",
            "report_ids,version",
            "",
            "reportId,version",
        ] {
            assert!(!is_csv_header(line), "{line}");
        }
    }

    /// Reports the server could not store (UNAVAILABLE: its disk full) are not counted
    /// as rejected: the import stops, saying the same file run again stores them
    /// (tester X saw a full disk counted as 100 rejected reports, batch after batch).
    #[test]
    fn reports_the_server_could_not_store_are_not_rejected() {
        let chunk: Vec<(usize, pb::SubmitRequest)> = (10..14)
            .map(|line| (line, pb::SubmitRequest::default()))
            .collect();
        let rejection = |index: u64, code: &str| pb::ImportRejection {
            index,
            code: code.to_owned(),
            message: "the store failed: No space left on device".to_owned(),
            violations: Vec::new(),
        };
        let mut tally = Tally::default();
        let rejections = vec![
            rejection(0, "INVALID_ARGUMENT"),
            rejection(2, "UNAVAILABLE"),
            rejection(3, "UNAVAILABLE"),
        ];
        note_rejections(&chunk, rejections, &mut tally);
        assert_eq!(tally.errors.len(), 1);
        assert_eq!(tally.errors[0].line, 10);
        assert_eq!(tally.not_stored, 2);
        let stopped = tally.stopped.expect("the import stops");
        assert!(
            stopped.contains("could not store 2 reports (lines 12 to 13)"),
            "{stopped}"
        );
    }

    /// A call on a channel whose server is gone (nothing listens on its port) is known
    /// never to have been sent, so its lines are not said to be "sent and not answered".
    #[tokio::test]
    async fn a_call_whose_connection_is_refused_was_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let status = ExchangeClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_err();
        assert!(never_sent(&status), "{status:?}");
        assert!(!unanswered(&status), "{status:?}");
        assert!(!never_sent(&tonic::Status::unavailable("connection reset")));
    }

    /// A line of `query --json` gives its report; anything else on such a line, or a
    /// report that is not an object, is named.
    #[test]
    fn a_query_json_line_gives_its_report_and_nothing_else_passes() {
        let report = r#"{"reportId":"7a8b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d","version":1}"#;
        let line = format!(r#"{{"meta":{{}},"envelope":{{"payload":"eA=="}},"report":{report}}}"#);
        let Ok(Line::Report(read)) = report_of_line(&line) else {
            panic!("{line}: no report");
        };
        assert_eq!(read.version, 1);
        let extra = format!(r#"{{"envelope":{{}},"report":{report},"extra":1}}"#);
        assert!(report_of_line(&extra).is_err_and(|e| e.contains("\"extra\"")));
        let null = r#"{"envelope":{},"report":null}"#;
        assert!(report_of_line(null).is_err_and(|e| e.contains("`report` is null")));
        // A retraction, as `query --include-retracted --json` writes it, is skipped.
        let retraction =
            r#"{"meta":{"kind":"retraction","reportId":"r-1"},"envelope":{},"report":null}"#;
        assert!(matches!(report_of_line(retraction), Ok(Line::Retraction)));
        let mirror = r#"{"meta":{},"envelope":{}}"#;
        assert!(report_of_line(mirror).is_err_and(|e| e.contains("sync mirror")));
    }

    /// The line each record of `text` starts on, as the import says it.
    fn record_lines(text: &str) -> Vec<usize> {
        let (reader, lines) = LineCounter::new(text.as_bytes());
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(reader)
            .into_records()
            .map(|row| lines.line_at(row.unwrap().position().unwrap().byte()))
            .collect()
    }

    #[test]
    fn a_line_too_long_is_that_lines_error_and_never_held_whole() {
        let text = format!("a\n\n{}\nb\r\nlast", "x".repeat(100));
        // A reader that hands over 7 bytes at a time: the long line spans many reads.
        let reader = std::io::BufReader::with_capacity(7, text.as_bytes());
        let lines: Vec<Result<Vec<u8>, String>> = BoundedLines { reader, max: 10 }
            .map(|l| l.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0], Ok(b"a".to_vec()));
        assert_eq!(lines[1], Ok(Vec::new()));
        assert!(
            lines[2].as_ref().is_err_and(|e| e.contains("100 bytes")),
            "{lines:?}"
        );
        assert_eq!(lines[3], Ok(b"b\r".to_vec()));
        assert_eq!(lines[4], Ok(b"last".to_vec()));
    }

    #[test]
    fn a_run_of_errors_names_exactly_its_lines() {
        let run = |lines: &[usize]| -> Vec<LineError> {
            lines
                .iter()
                .map(|&line| LineError {
                    line,
                    message: "m".into(),
                })
                .collect()
        };
        assert_eq!(lines_named(&run(&[4])), "line 4");
        assert_eq!(lines_named(&run(&[4, 5, 6])), "lines 4 to 6 (3 reports)");
        assert_eq!(lines_named(&run(&[4, 7])), "lines 4 and 7");
        assert_eq!(lines_named(&run(&[4, 7, 9])), "lines 4, 7 and 9");
        let many: Vec<usize> = (1..=20).map(|i| i * 2).collect();
        assert_eq!(
            lines_named(&run(&many)),
            "20 reports, on lines 2, 4, 6, 8, 10, 12, 14, 16, … (12 more; --json lists every line)"
        );
    }

    /// The csv crate's own position ("record 1 (line: 1, byte: 607)", lines counted by
    /// "\n" alone) and its 0-based field numbers are not what the user sees.
    #[test]
    fn a_bad_csv_row_is_told_by_column_name_and_value_without_the_readers_position() {
        let (headers, row) = super::super::csv_rows::sample_row(1);
        let column = headers.iter().position(|h| h == "persons_total").unwrap();
        let bad: csv::StringRecord = row
            .iter()
            .enumerate()
            .map(|(i, cell)| if i == column { "many" } else { cell })
            .collect();
        let mut out = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        out.write_record(&headers).unwrap();
        out.write_record(&bad).unwrap();
        out.write_record(["a", "b"]).unwrap();
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("bad.csv");
        std::fs::write(&file, out.into_inner().unwrap()).unwrap();
        let said: Vec<(usize, String)> = records(&input::rereadable(&file).unwrap(), Format::Csv)
            .unwrap()
            .map(|(line, r)| (line, r.unwrap_err()))
            .collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(said[0].0, 2);
        assert!(
            said[0]
                .1
                .contains(r#"column persons_total: "many" is not a whole number"#),
            "{said:?}"
        );
        assert_eq!(said[1].0, 3);
        assert!(
            said[1].1.contains("2 fields where the header has"),
            "{said:?}"
        );
        assert!(said.iter().all(|(_, s)| !s.contains("byte")), "{said:?}");
        // The same file without its header is refused as a whole, not read as nothing.
        let text = std::fs::read_to_string(&file).unwrap();
        let headless = dir.path().join("headless.csv");
        std::fs::write(&headless, text.split_once('\n').unwrap().1).unwrap();
        let Err(refused) = records(&input::rereadable(&headless).unwrap(), Format::Csv) else {
            panic!("a file without its header was read");
        };
        assert!(refused.to_string().contains("not the header"), "{refused}");
        // A column left out, or one given twice, is refused as a whole too.
        let (header, body) = text.split_once('\n').unwrap();
        for (changed_header, said) in [
            (header.replace(",women,", ","), "lacks women"),
            (format!("{header},women"), "\"women\" unknown or twice"),
            (format!("{header},remarks"), "\"remarks\" unknown or twice"),
        ] {
            let changed = dir.path().join("changed.csv");
            std::fs::write(&changed, format!("{changed_header}\n{body}")).unwrap();
            let Err(refused) = records(&input::rereadable(&changed).unwrap(), Format::Csv) else {
                panic!("{said}: read");
            };
            assert!(refused.to_string().contains(said), "{refused}");
        }
    }

    #[test]
    fn a_csv_record_is_named_by_its_line_whatever_the_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let text = ["h", "a", "b", "", "c"].join(end) + end;
            // Blank lines are no records; a record's line counts them.
            assert_eq!(record_lines(&text), [1, 2, 3, 5], "{end:?}");
        }
        // A quoted field may hold line breaks: the next record starts after them.
        let text = "h\r\n\"a\r\nstill a\"\r\nb\r\n";
        assert_eq!(record_lines(text), [1, 2, 4]);
        let mixed = "h\na\r\nb\rc\n";
        assert_eq!(record_lines(mixed), [1, 2, 3, 4]);
    }
}
