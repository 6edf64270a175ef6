//! `tidemark query`, `sync`, `standing` and `audit`: reading what the exchange holds.

use super::whole::whole;
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use prost::Message;
use tidemark::{
    client,
    clock::format_time,
    pb::{self, exchange_client::ExchangeClient, transparency_client::TransparencyClient},
};

use super::{client_args::ClientArgs, csv_rows::CsvRow, report_filter::ReportFilter};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CategoryArg {
    Smuggling,
    Maritime,
}

impl CategoryArg {
    pub fn to_pb(self) -> pb::Category {
        match self {
            Self::Smuggling => pb::Category::SmugglingIncident,
            Self::Maritime => pb::Category::MaritimeMovement,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Smuggling => "smuggling",
            Self::Maritime => "maritime",
        }
    }
}

/// Query other states' reports (and your own) that your state may see.
///
/// Needs a node certificate and, for other states' reports, give-to-get standing in the
/// category (see `tidemark standing`). A refusal prints its reason and exits non-zero.
#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Include retracted reports.
    #[arg(long)]
    include_retracted: bool,
    /// Stop after this many results, at least 1 (default: all, page by page).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1u32, u32::MAX))]
    limit: Option<u32>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: QueryOutput,
}

/// How `query` writes its results (a table by default).
#[derive(Args, Debug)]
struct QueryOutput {
    /// JSON lines: {"meta", "envelope" (DSSE JSON), "report"}.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// With --json: each line also carries its report's log proof ("logProof", a C2SP
    /// tlog-proof of the envelope's transparency-log entry). `tidemark verify --log-key`
    /// checks it offline and takes the acceptance time from it, so that a report signed
    /// by a key revoked later is shown to have been accepted before the revocation.
    /// About 1 KiB more per line.
    // `conflicts_with` as well: clap skips `requires` when the present --csv conflicts
    // with the required --json (clap-rs/clap#4520).
    #[arg(long, requires = "json", conflicts_with = "csv")]
    log_proofs: bool,
    /// CSV, one row per report: the columns `import` reads, so exporting and importing
    /// gives back the same reports. Safe to open in a spreadsheet: a text cell that would
    /// start a formula (=, +, -, @, tab; also after leading spaces) is written with a
    /// leading ', which `import` removes again.
    #[arg(long)]
    csv: bool,
}

/// Which reports: shared by `query` and `watch`.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Which category: smuggling incidents or maritime movements.
    #[arg(long, value_enum)]
    category: CategoryArg,
    /// First incident date, YYYY-MM-DD, or a month YYYY-MM (from its first day).
    #[arg(long, value_name = "DATE|MONTH")]
    from: Option<String>,
    /// Last incident date, YYYY-MM-DD, or a month YYYY-MM (to its last day).
    #[arg(long, value_name = "DATE|MONTH")]
    to: Option<String>,
    #[command(flatten)]
    content: ReportFilter,
    /// Only reports accepted or changed since this time: an RFC 3339 date-time
    /// (2024-03-09T12:00:00Z) or a date (2024-03-09, from midnight UTC).
    #[arg(long, value_name = "TIME|DATE", value_parser = parse_instant)]
    changed_since: Option<i64>,
}

/// An RFC 3339 date-time, or a date (its midnight UTC), as Unix seconds.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    tidemark::calendar::parse_instant(text).ok_or_else(|| {
        tidemark::calendar::refusal(
            text,
            "a date-time 2024-03-09T12:00:00Z (RFC 3339, with its offset) or a date 2024-03-09",
        )
    })
}

/// Watch for new reports matching a filter, as they are accepted (until Ctrl-C, until
/// your state's standing lapses, or until your certificate is revoked or expires or your
/// state is suspended). Catch up on what you missed with `sync`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    client: ClientArgs,
    /// JSON lines: {"meta", "envelope", "report"}.
    #[arg(long)]
    json: bool,
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let request = query_request(&args.filter)?;
    let mut stream = ExchangeClient::new(args.client.connect().await?)
        .subscribe(request)
        .await
        .map_err(|s| super::refused_request(&s))?
        .into_inner();
    errln!("watching; Ctrl-C to stop");
    if !args.json {
        let mut out = super::stdout();
        write_header(&mut out)?;
        out.flush()?;
    }
    while let Some(item) = stream
        .message()
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
    {
        let result = pb::QueryResult {
            envelope: item.envelope,
            meta: item.meta,
            cursor: String::new(),
            log_proof: String::new(),
        };
        let mut out = super::stdout();
        print_result(&mut out, None, args.json, &result)?;
        out.flush()?;
    }
    Ok(())
}

/// The table's column names (`query`, `watch`).
fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<5} {:<36} {:>3} {:<9} {:<10} {:>7}  route",
        "state", "report id", "v", "status", "date", "persons"
    )
}

/// Writes one query result as a table row, a CSV row or a JSON line.
fn print_result(
    out: &mut impl Write,
    csv: Option<&mut csv::Writer<Vec<u8>>>,
    json: bool,
    item: &pb::QueryResult,
) -> anyhow::Result<()> {
    let report = item
        .envelope
        .as_ref()
        .and_then(|e| pb::Report::decode(e.payload.as_slice()).ok());
    let meta = item.meta.clone().unwrap_or_default();
    if json {
        let mut value = serde_json::json!({
            "meta": super::json::value(&meta, "tidemark.v1.EnvelopeMeta"),
            "envelope": item.envelope,
            "report": report.map(|r| super::json::value(&r, "tidemark.v1.Report")),
        });
        if !item.log_proof.is_empty() {
            value["logProof"] = item.log_proof.clone().into();
        }
        writeln!(out, "{value}")?;
    } else if let Some(writer) = csv {
        if let Some(r) = &report {
            writer.serialize(CsvRow::from_report(r))?;
        }
    } else if report.is_none() {
        // A retraction: no report content to show.
        writeln!(
            out,
            "{:<5} {:<36} {:>3} {:<9}",
            meta.reporting_state, meta.report_id, meta.version, "retracted"
        )?;
    } else {
        let r = report.unwrap_or_default();
        let route = r.route.unwrap_or_default();
        let status = pb::ReportStatus::try_from(meta.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("REPORT_STATUS_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:<5} {:<36} {:>3} {:<9} {:<10} {:>7}  {} -> {}",
            meta.reporting_state,
            meta.report_id,
            meta.version,
            status,
            r.incident_date,
            r.persons.map_or(0, |p| p.total),
            route.origin,
            route.intended_destination
        )?;
    }
    Ok(())
}

fn query_request(args: &FilterArgs) -> anyhow::Result<pb::QueryRequest> {
    let mut request = pb::QueryRequest {
        category: args.category.to_pb() as i32,
        from_date: args
            .from
            .as_deref()
            .map(|t| super::aggregate::date_arg(t, false))
            .transpose()?
            .unwrap_or_default(),
        to_date: args
            .to
            .as_deref()
            .map(|t| super::aggregate::date_arg(t, true))
            .transpose()?
            .unwrap_or_default(),
        changed_since_unix: args.changed_since.unwrap_or(0),
        ..Default::default()
    };
    super::aggregate::date_range(&request.from_date, &request.to_date)?;
    args.content.query(&mut request)?;
    Ok(request)
}

pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let mut request = pb::QueryRequest {
        include_retracted: args.include_retracted,
        include_log_proofs: args.output.log_proofs,
        ..query_request(&args.filter)?
    };
    let exchange = ExchangeClient::new(args.client.connect().await?);
    let mut out = std::io::BufWriter::new(super::stdout());
    let mut csv = args
        .output
        .csv
        .then(|| csv::Writer::from_writer(Vec::new()));
    let table = !args.output.json && !args.output.csv;
    let mut total: u64 = 0;
    let mut retractions: u64 = 0;
    loop {
        let remaining = args
            .limit
            .map(|l| l.saturating_sub(u32::try_from(total).unwrap_or(u32::MAX)));
        if remaining == Some(0) {
            break;
        }
        request.limit = remaining.unwrap_or(0);
        let mut stream = budgeted(|| {
            let (mut exchange, request) = (exchange.clone(), request.clone());
            async move { exchange.query(request).await }
        })
        .await
        .map_err(|s| super::refused_request(&s))?
        .into_inner();
        if table && total == 0 {
            write_header(&mut out)?;
        }
        let mut page = 0;
        let mut last_cursor = String::new();
        loop {
            let item = match stream.message().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                // Ended for its length after some progress: continued from there.
                Err(status) if continues(&status) && !last_cursor.is_empty() => {
                    request.after = std::mem::take(&mut last_cursor);
                    // What is left of --limit, less what this page already gave.
                    if let Some(limit) = args.limit {
                        match limit.saturating_sub(u32::try_from(total).unwrap_or(u32::MAX)) {
                            0 => break,
                            left => request.limit = left,
                        }
                    }
                    page = 0;
                    stream = budgeted(|| {
                        let (mut exchange, request) = (exchange.clone(), request.clone());
                        async move { exchange.query(request).await }
                    })
                    .await
                    .map_err(|s| anyhow!(client::explain(&s)))?
                    .into_inner();
                    continue;
                }
                Err(status) => bail!(client::explain(&status)),
            };
            page += 1;
            total += 1;
            last_cursor.clone_from(&item.cursor);
            if csv.is_some() && item.meta.as_ref().is_some_and(|m| m.kind == "retraction") {
                retractions += 1;
            }
            print_result(&mut out, csv.as_mut(), args.output.json, &item)?;
        }
        // A page shorter than asked for is the last one: no empty page (and no audit
        // record for it) is asked for after it.
        let asked = match request.limit {
            0 => tidemark::MAX_QUERY_RESULTS,
            n => n.min(tidemark::MAX_QUERY_RESULTS),
        };
        if page < u64::from(asked)
            || last_cursor.is_empty()
            || args.limit.is_some_and(|l| total >= u64::from(l))
        {
            break;
        }
        request.after = last_cursor;
    }
    if let Some(mut writer) = csv {
        writer.flush()?;
        if writer.get_ref().is_empty() {
            // No report matched: the header still says what the columns are, so that
            // `import` reads this file as it reads any other export.
            writer.write_record(super::csv_rows::columns())?;
        }
        out.write_all(&writer.into_inner().map_err(|e| anyhow!("{e}"))?)?;
    }
    out.flush()?;
    if table {
        errln!("{}", super::labels::count(total, "report", "reports"));
    }
    if retractions > 0 {
        errln!(
            "{} not written: a CSV row is a report's content, which a retraction does not \
             have (--json carries them)",
            super::labels::count(retractions, "retraction", "retractions")
        );
    }
    Ok(())
}

/// Starts a read, waiting out the server's pushback when this caller's budget of reads
/// is spent ([`super::pushback`]).
async fn budgeted<T, Fut: std::future::Future<Output = Result<T, tonic::Status>>>(
    start: impl FnMut() -> Fut,
) -> Result<T, tonic::Status> {
    super::pushback::waiting_out("reads", start).await
}

/// Starts a sync, waiting out the server's pushback ([`budgeted`]).
async fn start_sync(
    exchange: &ExchangeClient<tonic::transport::Channel>,
    request: pb::SyncRequest,
) -> Result<tonic::Streaming<pb::SyncItem>, tonic::Status> {
    budgeted(|| {
        let mut exchange = exchange.clone();
        async move { exchange.sync(request).await }
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Whether a read that ended with `status` is continued from where it got to: the
/// server ends one that has been sending for `limits.max_read_secs`, and one whose
/// caller took nothing for `limits.read_stall_secs` (this command reads as fast as its
/// output is written), with DEADLINE_EXCEEDED.
fn continues(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
}

/// Keep a local mirror of one category: the first run copies everything your state may
/// see, later runs bring it up to date. DIR/<category>.jsonl holds one line per change
/// ({"meta", "envelope"}: new reports, amendments, retractions, in order) and
/// DIR/<category>.cursor the last sequence number mirrored, DIR/state whose view it is
/// (another state's node is refused: mirror into another directory); with
/// --log-proofs each line also carries its log proof ("logProof").
///
/// One run at a time per mirror directory (DIR/sync.lock; a second run is refused with
/// a message). The data file is the truth: each run resumes after the last complete line
/// in it (a line cut short by a crash is removed first), so an interrupted run — Ctrl-C,
/// kill -9, a lost connection — never leaves a change twice or misses one.
///
/// Each later run first checks that the change the mirror ends with is in the server's
/// transparency log (its entry, recomputed from the line): if it is not (the exchange was
/// restored from an older backup, or its history rewritten), the run writes nothing and
/// exits 4.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Which category: smuggling incidents or maritime movements.
    #[arg(long, value_enum)]
    category: CategoryArg,
    /// The mirror directory (created if missing; a run refused before it mirrors
    /// anything leaves nothing it made behind).
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Each new line also carries its envelope's log proof ("logProof", as `query
    /// --log-proofs` writes it), so that `tidemark verify --log-key` proves from the
    /// mirror alone when each change was accepted. About 1 KiB more per line.
    #[arg(long)]
    log_proofs: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Changes written between cursor updates at most, and the longest time between two
/// (a slow link's changes reach the disk as they come, not all at the end).
const SYNC_CHECKPOINT: usize = 5_000;
const SYNC_CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let name = args.category.name();
    let lock_path = args.into.join("sync.lock");
    let cursor_path = args.into.join(format!("{name}.cursor"));
    let data_path = args.into.join(format!("{name}.jsonl"));
    let state_path = args.into.join("state");
    // What this run makes: a run refused before it mirrors anything leaves none of it.
    let made = tidemark::files::not_there(&[
        &args.into,
        &lock_path,
        &state_path,
        &cursor_path,
        &data_path,
    ]);
    tidemark::files::create_dir_all(&args.into)
        .with_context(|| format!("cannot create the directory {}", args.into.display()))?;
    // One run at a time per directory, not per category: two states' first runs into
    // one directory would otherwise both find it empty and both claim it.
    let lock = lock_mirror(&lock_path)?;
    let mirrored = mirror(&args, &cursor_path, &data_path).await;
    if mirrored.is_err() && fs::metadata(&data_path).map_or(true, |m| m.len() == 0) {
        // Removed while the lock is held, so no other run takes the directory in between.
        tidemark::files::remove_made(&made);
    }
    drop(lock);
    mirrored
}

/// Mirrors the changes after the last one in `data_path` into it (under the mirror's
/// lock).
async fn mirror(args: &SyncArgs, cursor_path: &Path, data_path: &Path) -> anyhow::Result<()> {
    let (cursor_path, data_path) = (cursor_path.to_path_buf(), data_path.to_path_buf());
    let (mut cursor, mirrored) = match reconcile(&data_path, &cursor_path)? {
        Some((sequence, last)) => (sequence, Some(last)),
        None => (0, None),
    };
    // A mirror is one state's view: what a node may see depends on its state.
    if let Ok(state) = super::submit::state_of(&args.client.identity()?) {
        own_mirror(&args.into, &state)?;
    }
    let channel = args.client.connect().await?;
    if let Some(last) = &mirrored {
        same_history(channel.clone(), last, &data_path).await?;
    }
    let exchange = ExchangeClient::new(channel);
    let mut request = pb::SyncRequest {
        category: args.category.to_pb() as i32,
        after_sequence: cursor,
        include_log_proofs: args.log_proofs,
    };
    let mut stream = start_sync(&exchange, request)
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&data_path)
        .with_context(|| format!("cannot open {}", data_path.display()))?;
    let mut buffer = Vec::new();
    let (mut pending, mut total) = (0usize, 0u64);
    let mut written = std::time::Instant::now();
    let started = cursor;
    let progress = super::progress::counter("changes received");
    // Where the current stream started: a stream the server ends for its length after
    // some progress is continued from where it got to.
    let mut resumed_at = cursor;
    let outcome = loop {
        match stream.message().await {
            Err(status) if continues(&status) && cursor > resumed_at => {
                checkpoint(&mut file, &mut buffer, (&data_path, &cursor_path), cursor)?;
                (pending, written) = (0, std::time::Instant::now());
                resumed_at = cursor;
                request.after_sequence = cursor;
                match start_sync(&exchange, request).await {
                    Ok(next) => stream = next,
                    Err(status) => break Err(status),
                }
            }
            Ok(Some(item)) => {
                let sequence = item.meta.as_ref().map_or(0, |m| m.sequence);
                // The meta as `query --json` writes it (numbers as numbers).
                let meta = item
                    .meta
                    .as_ref()
                    .map(|m| super::json::value(m, "tidemark.v1.EnvelopeMeta"));
                let mut line = serde_json::json!({"meta": meta, "envelope": item.envelope});
                if !item.log_proof.is_empty() {
                    line["logProof"] = item.log_proof.into();
                }
                serde_json::to_writer(&mut buffer, &line)?;
                buffer.push(b'\n');
                cursor = sequence;
                pending += 1;
                total += 1;
                progress.inc(1);
                if pending >= SYNC_CHECKPOINT || written.elapsed() >= SYNC_CHECKPOINT_AFTER {
                    checkpoint(&mut file, &mut buffer, (&data_path, &cursor_path), cursor)?;
                    (pending, written) = (0, std::time::Instant::now());
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    checkpoint(&mut file, &mut buffer, (&data_path, &cursor_path), cursor)?;
    progress.finish_and_clear();
    match outcome {
        Ok(()) => {
            outln!(
                "{} mirrored into {} (sequence {started} -> {cursor})",
                super::labels::count(total, "change", "changes"),
                data_path.display()
            )?;
            Ok(())
        }
        Err(status) => bail!(
            "sync stopped after {}, at sequence {cursor} (saved; run again to resume): {}",
            super::labels::count(total, "change", "changes"),
            client::explain(&status)
        ),
    }
}

/// Records whose view the mirror directory holds (DIR/state, one state code), and
/// refuses another state's node: its lines would mix two states' views, in one category
/// under one cursor or in two side by side. A directory that already holds a mirror but
/// no DIR/state (an older tidemark's) is refused too, rather than guessed.
fn own_mirror(dir: &Path, state: &str) -> anyhow::Result<()> {
    let path = dir.join("state");
    let holds_a_mirror = [CategoryArg::Smuggling, CategoryArg::Maritime]
        .iter()
        .any(|c| fs::metadata(dir.join(format!("{}.jsonl", c.name()))).is_ok_and(|m| m.len() > 0));
    // An empty mirror (a first run refused, say) is anyone's.
    if holds_a_mirror && path.exists() {
        let held = super::input::read_text_at_most(&path, 64)?;
        let held = held.trim_end_matches(['\n', '\r']);
        let held = tidemark::country::CountryCode::parse(held).map_err(|e| {
            anyhow!(
                "{} should name whose view this mirror holds (a state code, e.g. AUS): {e}",
                path.display()
            )
        })?;
        if held.as_str() != state {
            bail!(
                "this mirror holds {held}'s view (see {}) and you are {state}'s node: mirror \
                 into another directory",
                path.display()
            );
        }
        return Ok(());
    }
    if holds_a_mirror {
        bail!(
            "{} holds a mirror but not {} saying whose view it is (an older tidemark made \
             it): write that state's code into it (e.g. `echo {state} > {}`) if it is yours, \
             or mirror into another directory",
            dir.display(),
            path.display(),
            path.display()
        );
    }
    tidemark::files::replace(&path, format!("{state}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Holds the mirror's lock for as long as the returned file is open.
fn lock_mirror(path: &Path) -> anyhow::Result<fs::File> {
    super::lock::try_lock(path)?.ok_or_else(|| {
        anyhow!(
            "another `tidemark sync` is writing this mirror ({} is locked); wait for it to \
             finish, or mirror into another directory",
            path.display()
        )
    })
}

/// Checks that the change the mirror ends with (`last`, its last line) is in the
/// server's transparency log: its envelope entry, recomputed from the line's meta and
/// payload (docs/transparency.md), must have a leaf there. If not, the server's history
/// is not the one mirrored — restored from an older backup, or rewritten — and resuming
/// would mix two histories (and skip the changes that now have the mirrored sequence
/// numbers): exit 4, nothing written. A line without the facts the entry needs (written
/// before meta carried its kind) is not checked.
async fn same_history(
    channel: tonic::transport::Channel,
    last: &serde_json::Value,
    data_path: &Path,
) -> anyhow::Result<()> {
    if let Some(kind) = last["meta"]["kind"]
        .as_str()
        .filter(|k| !["report", "retraction"].contains(k))
    {
        bail!(
            "the last line of {} says meta.kind {kind:?}; a mirrored change is a \"report\" or \
             a \"retraction\", as sync writes it: the line was edited; put it back, or move \
             the file away to mirror anew",
            data_path.display()
        );
    }
    let Some(entry) = mirrored_entry(last) else {
        return Ok(());
    };
    let leaf = tidemark::tlog::merkle::leaf_hash(&entry.encode());
    let sequence = last["meta"]["sequence"].clone();
    match TransparencyClient::new(channel)
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(pb::get_inclusion_proof_request::Leaf::LeafHash(
                leaf.to_vec(),
            )),
            tree_size: 0,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Err(super::witness::Alarm::new(
            4,
            format!(
                "the change {} ends with (sequence {sequence}) is not in the server's \
                 transparency log: the exchange was restored from an older backup, or its \
                 history was rewritten (or that line was edited), so this mirror is no longer \
                 a copy of it. Nothing was written; keep the mirror as evidence, mirror again \
                 into a new directory, and tell the operator",
                data_path.display()
            ),
        )
        .into()),
        Err(status) => Err(anyhow!(client::explain(&status))),
    }
}

/// The transparency-log entry of a mirrored change, from its line (None if the line
/// lacks what the entry needs).
fn mirrored_entry(line: &serde_json::Value) -> Option<tidemark::tlog::entry::Entry> {
    use tidemark::tlog::entry::{Entry, EnvelopeEntry, sha256};
    let meta: pb::EnvelopeMeta = serde_json::from_value(line.get("meta")?.clone()).ok()?;
    let envelope: pb::Envelope = serde_json::from_value(line.get("envelope")?.clone()).ok()?;
    let category = tidemark::report::Category::ALL
        .into_iter()
        .find(|c| c.to_pb() as i32 == meta.category)?;
    if meta.kind.is_empty() || meta.accepted_at_unix == 0 {
        return None;
    }
    Some(Entry::Envelope(EnvelopeEntry {
        sequence: meta.sequence,
        state: meta.reporting_state,
        report_sha256: sha256(meta.report_id.as_bytes()),
        version: meta.version,
        category: category.label().to_owned(),
        kind: meta.kind,
        accepted_at: meta.accepted_at_unix,
        payload_sha256: sha256(&envelope.payload),
    }))
}

/// Brings the data file and the cursor into agreement and returns where to resume: the
/// sequence of the last complete line of the data file, and that line (none if there is
/// none). A partial last line (a write cut short) is removed; the cursor file is
/// rewritten to match.
fn reconcile(
    data_path: &Path,
    cursor_path: &Path,
) -> anyhow::Result<Option<(u64, serde_json::Value)>> {
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = fs::remove_file(cursor_path);
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", data_path.display())),
    };
    // Before anything is cut off it: a file in another encoding is no mirror of ours
    // (its line feeds are not where a mirror's are).
    let mut start = [0u8; 4];
    let read = std::io::Read::read(&mut file, &mut start)?;
    tidemark::files::refuse_utf16(&start[..read]).map_err(|e| {
        anyhow!(
            "{}: {e}, or move it away to mirror anew: a mirror is UTF-8 JSON lines",
            data_path.display()
        )
    })?;
    trim_blank_end(&mut file)?;
    let len = file.metadata()?.len();
    let Some(feed) = last_feed(&mut file, len)? else {
        // Not one complete line: nothing was mirrored for sure.
        file.set_len(0)?;
        let _ = fs::remove_file(cursor_path);
        return Ok(None);
    };
    let end = feed + 1;
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
    }
    let (first, line) = line_ending_at(&mut file, feed)?;
    // The first line may follow a byte-order mark (a file saved by an editor).
    let line = line
        .strip_prefix(tidemark::files::BOM.as_bytes())
        .unwrap_or(&line);
    let last: serde_json::Value = serde_json::from_slice(line).with_context(|| {
        format!(
            "the last line of {} is not a mirrored change; move the file away to mirror anew",
            data_path.display()
        )
    })?;
    // Read as the proto3 JSON mapping reads an EnvelopeMeta (mirrors written before
    // 2026-12 hold the sequence as a string, and the mapping takes 19.0 or 1.9e1 too).
    let text = std::str::from_utf8(line).unwrap_or_default();
    let meta = super::input::field_as_written(text, "meta")
        .map(super::input::from_json::<pb::EnvelopeMeta>)
        .transpose()
        .map_err(|e| {
            anyhow!(
                "the last line of {} has a meta that is not an EnvelopeMeta (proto3 JSON): \
                 {e}; move the file away to mirror anew",
                data_path.display()
            )
        })?;
    let sequence = meta.map(|m| m.sequence).filter(|s| *s > 0).ok_or_else(|| {
        anyhow!(
            "the last line of {} has no meta.sequence; move the file away to mirror anew",
            data_path.display()
        )
    })?;
    // A mirror holds changes in sequence order: a last line that does not follow the one
    // before it (an older change appended by hand) would resume from the past and
    // mirror every change after it twice.
    if first > 0
        && let Some(before) = sequence_of(&line_ending_at(&mut file, first - 1)?.1)
        && before >= sequence
    {
        bail!(
            "the last line of {} is change {sequence}, but the line before it is change \
             {before}: a mirror holds changes in sequence order, so it was changed by hand; \
             remove the lines out of order, or move the file away to mirror anew",
            data_path.display()
        );
    }
    write_cursor(cursor_path, sequence)?;
    Ok(Some((sequence, last)))
}

/// Where the last line feed of `file` before byte `before` is, if there is one: read
/// backwards a chunk at a time, so a large file is not read whole.
fn last_feed(file: &mut fs::File, before: u64) -> anyhow::Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut start = before;
    while start > 0 {
        let step = start.min(64 * 1024);
        start -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + i as u64));
        }
    }
    Ok(None)
}

/// The line of `file` whose line feed is at byte `feed`: where it starts, and its bytes
/// (without the line feed).
fn line_ending_at(file: &mut fs::File, feed: u64) -> anyhow::Result<(u64, Vec<u8>)> {
    use std::io::{Read, Seek, SeekFrom};
    let start = last_feed(file, feed)?.map_or(0, |before| before + 1);
    let mut line = vec![0u8; usize::try_from(feed - start)?];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok((start, line))
}

/// The `meta.sequence` of a mirrored line, if it has one.
fn sequence_of(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_prefix(tidemark::files::BOM).unwrap_or(text);
    let meta = super::input::field_as_written(text, "meta")?;
    super::input::from_json::<pb::EnvelopeMeta>(meta)
        .ok()
        .map(|m| m.sequence)
        .filter(|s| *s > 0)
}

/// Removes blank lines at the end of a mirror file (an editor's), keeping the line feed
/// that ends its last line; a last line without one (cut short) is left as it is.
fn trim_blank_end(file: &mut fs::File) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 * 1024);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.read_to_end(&mut tail)?;
    let Some(last) = tail.iter().rposition(|b| !b.is_ascii_whitespace()) else {
        return Ok(());
    };
    if let Some(feed) = tail[last..].iter().position(|b| *b == b'\n') {
        let keep = start + (last + feed) as u64 + 1;
        if keep < len {
            file.set_len(keep)?;
            file.sync_data()?;
        }
    }
    Ok(())
}

fn write_cursor(cursor_path: &Path, cursor: u64) -> anyhow::Result<()> {
    tidemark::files::replace(cursor_path, format!("{cursor}\n").as_bytes())
        .with_context(|| format!("cannot write {}", cursor_path.display()))
}

/// Makes the mirrored lines durable, then records the cursor (atomically), in that order,
/// so a crash never leaves a cursor ahead of the data.
fn checkpoint(
    file: &mut fs::File,
    buffer: &mut Vec<u8>,
    (data_path, cursor_path): (&Path, &Path),
    cursor: u64,
) -> anyhow::Result<()> {
    file.write_all(buffer)
        .and_then(|()| file.sync_data())
        .with_context(|| {
            format!(
                "cannot write the mirror {}: make room and run sync again (it resumes after \
                 the last whole line)",
                data_path.display()
            )
        })?;
    buffer.clear();
    write_cursor(cursor_path, cursor)
}

/// Where your state stands under give-to-get, per category, and when access lapses; for
/// a state analyst on an exchange with a privacy budget, what is left of it this year.
#[derive(Args, Debug)]
pub struct StandingArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the standing as JSON (the API's MyStandingResponse).
    #[arg(long)]
    json: bool,
}

pub async fn standing(args: StandingArgs) -> anyhow::Result<()> {
    let exchange = ExchangeClient::new(args.client.connect().await?);
    let response = super::pushback::waiting_out("lookups", || {
        let mut exchange = exchange.clone();
        async move { exchange.my_standing(pb::MyStandingRequest {}).await }
    })
    .await
    .map_err(|s| anyhow!(client::explain(&s)))?
    .into_inner();
    if args.json {
        outln!(
            "{}",
            super::json::line(&response, "tidemark.v1.MyStandingResponse")
        )?;
        return Ok(());
    }
    for c in &response.categories {
        let lapses = if c.lapses_at_unix > 0 {
            format!(" (until {})", format_time(c.lapses_at_unix))
        } else {
            String::new()
        };
        outln!("{}{lapses}", c.explanation)?;
    }
    if let Some(b) = &response.privacy_budget {
        outln!(
            "privacy budget {}: {:.3} of {:.3} rho spent; {} aggregate{} left this year \
             (each costs {:.3}; renews on 1 January UTC)",
            b.year,
            b.rho_spent,
            b.rho_per_year,
            b.queries_left,
            if b.queries_left == 1 { "" } else { "s" },
            b.rho_per_query
        )?;
    }
    Ok(())
}

/// Who read your state's reports: every read by another state, newest first by record
/// number (or, with `verify-reciprocity`, a check of the whole log). Records a restored
/// store carried over from the access trail take new numbers and keep their times, so
/// there times can run out of order.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// List reads of your state's reports by other states (what `audit` does anyway;
    /// accepted for older scripts).
    #[arg(long = "my-data", hide = true)]
    _my_data: bool,
    #[command(subcommand)]
    check: Option<AuditCheck>,
    /// At most this many entries (1 or more; --verify reads them all).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole(1u32, u32::MAX), conflicts_with = "verify")]
    limit: u32,
    /// Check the list against the transparency log under the checkpoint your witness
    /// holds (--state-dir): every access shown is in the log, and the log names none that
    /// the list leaves out. Reads the whole list (page by page) and scans the log's
    /// entries. Exit 3 if the server's log is shorter than that checkpoint (rolled
    /// back), 4 if its entries are not the log under it (rewritten), as `log witness`.
    #[arg(long, requires = "state_dir")]
    verify: bool,
    /// Your state's witness directory (`tidemark log witness --state-dir`), for --verify.
    #[arg(long, value_name = "DIR", requires = "verify")]
    state_dir: Option<PathBuf>,
    /// Only accesses older than this one: its audit record number (`number` in --json;
    /// `audit` names the one to page back from when the list goes on).
    #[arg(long, value_name = "NUMBER", allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX), conflicts_with = "verify")]
    before: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
    /// One JSON object per access (not with --verify, which prints its check).
    #[arg(long, conflicts_with = "verify")]
    json: bool,
}

/// Checks of the log anyone can run.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCheck {
    VerifyReciprocity(super::reciprocity::ReciprocityArgs),
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let channel = args.client.connect().await?;
    if let Some(AuditCheck::VerifyReciprocity(check)) = &args.check {
        return super::reciprocity::run(check, channel).await;
    }
    // One more than shown, to know whether the list goes on.
    let wanted = if args.verify {
        u32::MAX
    } else {
        args.limit.saturating_add(1)
    };
    let mut accesses = accesses(
        &mut ExchangeClient::new(channel.clone()),
        (wanted, args.before.unwrap_or(0)),
    )
    .await?;
    let more = !args.verify && accesses.len() > args.limit as usize;
    accesses.truncate(args.limit as usize);
    if let (true, Some(dir)) = (args.verify, &args.state_dir) {
        let state = super::submit::state_of(&args.client.identity()?)?;
        return super::audit_check::verify(channel, dir, &state, &accesses).await;
    }
    if args.json {
        for a in &accesses {
            outln!("{}", super::json::line(a, "tidemark.v1.DataAccess"))?;
        }
    } else {
        for a in &accesses {
            outln!("{}", access_line(a))?;
        }
        // The list also holds the operators' actions in the state's name (with a detail).
        let no_reads = accesses.iter().all(|a| !a.detail.is_empty());
        // Said on stderr, as every command's "nothing to show" note: stdout holds the
        // list only.
        match (no_reads, more) {
            (true, false) if args.before.is_none() => {
                errln!("no other state has read your reports");
            }
            (true, false) => errln!("no other state read your reports before these"),
            (true, true) => errln!("no reads of your reports among these {}", accesses.len()),
            (false, _) => {}
        }
    }
    if let (true, Some(last)) = (more, accesses.last()) {
        errln!(
            "the list goes on: --before {} for older entries (or a larger --limit)",
            last.number
        );
    }
    Ok(())
}

/// The newest `wanted` accesses to the caller's reports (all of them for `u32::MAX`)
/// older than audit record `before` (0: from the newest), page by page (the server
/// returns at most 10,000 a call).
async fn accesses(
    exchange: &mut ExchangeClient<tonic::transport::Channel>,
    (wanted, mut before): (u32, u64),
) -> anyhow::Result<Vec<pb::DataAccess>> {
    const PAGE: u32 = 10_000;
    let mut all: Vec<pb::DataAccess> = Vec::new();
    loop {
        let left = wanted.saturating_sub(u32::try_from(all.len()).unwrap_or(u32::MAX));
        if left == 0 {
            return Ok(all);
        }
        let request = pb::AccessToMyDataRequest {
            limit: left.min(PAGE),
            before,
        };
        let answer = super::pushback::waiting_out("lookups", || {
            let mut exchange = exchange.clone();
            async move { exchange.access_to_my_data(request).await }
        })
        .await
        .map_err(|s| anyhow!(client::explain(&s)))?
        .into_inner();
        let page = answer.accesses;
        // A page is cut short of its limit by size too: then `more` says so.
        let full = answer.more || u32::try_from(page.len()).unwrap_or(u32::MAX) == left.min(PAGE);
        match page.last() {
            Some(last) if full && last.number > 1 => before = last.number,
            _ => {
                all.extend(page);
                return Ok(all);
            }
        }
        all.extend(page);
    }
}

/// One access to the caller's reports, as `audit` prints it.
pub(super) fn access_line(a: &pb::DataAccess) -> String {
    let count = if a.cut_short {
        format!(
            "at most {} of your reports (cut short when the server stopped: what was sent \
             is on record as an upper bound)",
            a.count
        )
    } else if a.in_progress {
        format!(
            "at most {} of your reports (in progress: what is sent is on record ahead, as \
             an upper bound)",
            a.count
        )
    } else if a.copy_bytes_sent < a.copy_bytes {
        format!(
            "at most {} of your reports (part of a copy: the backup was cut short after \
             {} of {} bytes)",
            a.count, a.copy_bytes_sent, a.copy_bytes
        )
    } else {
        format!("{} of your reports", a.count)
    };
    let reader = super::labels::printable(&a.reader);
    // A regional analyst is of no state.
    let who = if a.reader_state.is_empty() {
        reader.into_owned()
    } else {
        format!("{} ({reader})", super::labels::printable(&a.reader_state))
    };
    // An administrative action concerning the caller's state says what it did.
    let what = if a.detail.is_empty() {
        count
    } else {
        super::labels::printable(&a.detail).into_owned()
    };
    format!(
        "{}  {who} {}: {what}",
        format_time(a.at_unix),
        super::labels::printable(&a.action)
    )
}

#[cfg(test)]
mod tests {
    use super::{access_line, reconcile};
    use tidemark::pb;

    /// A backup cut short is shown to each owner as part of a copy, its count an upper
    /// bound; one sent whole, as a plain count.
    #[test]
    fn a_backup_cut_short_is_shown_as_part_of_a_copy() {
        let backup = |sent| pb::DataAccess {
            action: "backup".into(),
            reader: "spiffe://tidemark.example/operator/ops".into(),
            count: 12,
            copy_bytes: 4096,
            copy_bytes_sent: sent,
            ..pb::DataAccess::default()
        };
        let cut = access_line(&backup(1024));
        assert!(
            cut.ends_with(
                "backup: at most 12 of your reports (part of a copy: the backup was cut short \
                 after 1024 of 4096 bytes)"
            ),
            "{cut}"
        );
        let whole = access_line(&backup(4096));
        assert!(whole.ends_with("backup: 12 of your reports"), "{whole}");
    }

    /// A mirror whose one line follows a byte-order mark (saved by an editor) resumes
    /// after that line; a line cut short after it is removed.
    #[test]
    fn a_mirror_is_read_past_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (data, cursor) = (dir.path().join("m.jsonl"), dir.path().join("m.cursor"));
        let line = r#"{"meta":{"sequence":7},"envelope":{}}"#;
        std::fs::write(&data, format!("\u{feff}{line}\n{{\"meta\":")).unwrap();
        let (sequence, last) = reconcile(&data, &cursor).unwrap().unwrap();
        assert_eq!((sequence, last["meta"]["sequence"].as_u64()), (7, Some(7)));
        assert_eq!(std::fs::read_to_string(&cursor).unwrap(), "7\n");
        // Blank lines at the end (an editor's) are dropped; an integral 8.0 is a number.
        let line = r#"{"meta":{"sequence":8.0},"envelope":{}}"#;
        std::fs::write(&data, format!("{line}\n\n  \r\n")).unwrap();
        let (sequence, _) = reconcile(&data, &cursor).unwrap().unwrap();
        assert_eq!(sequence, 8);
        assert_eq!(std::fs::read_to_string(&data).unwrap(), format!("{line}\n"));
    }

    /// The last line's meta is read as the proto3 JSON mapping reads an EnvelopeMeta: its
    /// sequence as a number or as text, in any spelling of a whole number; anything else
    /// is refused naming the field.
    #[test]
    fn a_mirrors_last_sequence_is_read_as_proto3_json_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, cursor) = (dir.path().join("m.jsonl"), dir.path().join("m.cursor"));
        for written in [
            "122",
            "122.0",
            "1.22e2",
            "\"122\"",
            "\"122.0\"",
            "\"1.22e2\"",
        ] {
            let line = format!(r#"{{"meta":{{"sequence":{written}}},"envelope":{{}}}}"#);
            std::fs::write(&data, format!("{line}\n")).unwrap();
            let (sequence, _) = reconcile(&data, &cursor).unwrap().unwrap();
            assert_eq!(sequence, 122, "{written}");
        }
        for (written, said) in [
            ("122.5", "sequence"),
            ("\"12x\"", "sequence"),
            ("0", "no meta.sequence"),
            ("null", "no meta.sequence"),
        ] {
            let line = format!(r#"{{"meta":{{"sequence":{written}}},"envelope":{{}}}}"#);
            std::fs::write(&data, format!("{line}\n")).unwrap();
            let refused = reconcile(&data, &cursor).unwrap_err().to_string();
            assert!(refused.contains(said), "{written}: {refused}");
        }
    }

    /// A mirror whose last line is an older change than the line before it (appended by
    /// hand) is refused: resuming there would mirror every later change twice. Lines in
    /// order resume from the last, whatever the lengths of the lines before it.
    #[test]
    fn a_mirror_ending_out_of_order_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (data, cursor) = (dir.path().join("m.jsonl"), dir.path().join("m.cursor"));
        let line = |sequence: u64, pad: usize| {
            format!(
                r#"{{"meta":{{"sequence":{sequence}}},"envelope":{{}},"pad":"{}"}}"#,
                "x".repeat(pad)
            )
        };
        for pad in [0, 70_000, 200_000] {
            let lines = [line(5, 0), line(6, pad), line(7, 10)];
            std::fs::write(&data, format!("{}\n", lines.join("\n"))).unwrap();
            assert_eq!(reconcile(&data, &cursor).unwrap().unwrap().0, 7, "{pad}");
            for (earlier, last) in [(7, 6), (7, 7)] {
                let lines = [line(5, 0), line(earlier, pad), line(last, 10)];
                std::fs::write(&data, format!("\u{feff}{}\n", lines.join("\n"))).unwrap();
                let refused = reconcile(&data, &cursor).unwrap_err().to_string();
                assert!(
                    refused.contains(&format!(
                        "is change {last}, but the line before it is change {earlier}"
                    )),
                    "{pad}: {refused}"
                );
            }
        }
        // The first line alone, after a byte-order mark.
        std::fs::write(&data, format!("\u{feff}{}\n", line(3, 0))).unwrap();
        assert_eq!(reconcile(&data, &cursor).unwrap().unwrap().0, 3);
    }

    /// A mirror in UTF-16 (an editor's "Unicode") is refused by its encoding and left as
    /// it is: its line feeds are not a mirror's, and cutting it there lost a byte
    /// (tester C saw only "not a mirrored change").
    #[test]
    fn a_mirror_in_another_encoding_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (data, cursor) = (dir.path().join("m.jsonl"), dir.path().join("m.cursor"));
        let line = "{\"meta\":{\"sequence\":7},\"envelope\":{}}\n";
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(line.encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&data, &bytes).unwrap();
        let refused = reconcile(&data, &cursor).unwrap_err().to_string();
        assert!(
            refused.contains("UTF-16") && refused.contains("move it away to mirror anew"),
            "{refused}"
        );
        assert_eq!(std::fs::read(&data).unwrap(), bytes);
    }
}
