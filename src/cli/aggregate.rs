//! `tidemark aggregate`: statistics for analysts, as a table, CSV or JSON, and a chart.

use std::{collections::BTreeSet, io::Write, path::PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum, builder::TypedValueParser as _};
use tidemark::{
    analytics, calendar,
    pb::{self, analytics_client::AnalyticsClient},
};

use super::{
    chart, client_args::ClientArgs, labels::name_of, reads::CategoryArg,
    report_filter::ReportFilter,
};

/// Aggregate statistics over all contributed reports (analyst certificates only).
///
/// Counts and sums per cell of a table grouped by up to three dimensions, with totals
/// and margins (shown as "(all)"), over whole months. Figures carry consistent noise
/// (the cell key method: a count of 5 or more is off by at most 2, a smaller one by at
/// most 4, and none is shown as 1 or 2; every report moves each sum by a fixed 10-20 %
/// and 1.5-3.5, a few percent of a large cell; the
/// same reports always give the same figures, so cells need not add up to margins). Cells
/// with fewer reports than the exchange's minimum are not listed, as empty cells are not;
/// on exact figures (perturbation off) enough other cells are withheld (x) that they
/// cannot be worked out from the totals. The notes say which rules applied, and what
/// protection. A state analyst needs its state's give-to-get standing in each category it
/// asks about (see `tidemark standing`). See docs/disclosure.md.
///
/// Example: tidemark aggregate --as certs/regional-analyst --by month,route
///   --metric persons,deaths --from 2024-01 --to 2024-12 --chart chart.svg
#[derive(Args, Debug)]
pub struct AggregateArgs {
    /// Group by up to three dimensions (comma-separated), at most one period; `route` is
    /// origin and destination together.
    #[arg(long, value_parser = dimension_arg(), value_delimiter = ',', value_name = "DIMENSION")]
    by: Vec<pb::Dimension>,
    /// What each cell reports (comma-separated); `fee` is the fee per person, as quartiles.
    #[arg(
        long,
        value_parser = metric_arg(),
        value_delimiter = ',',
        default_value = "reports",
        value_name = "METRIC"
    )]
    metric: Vec<pb::Metric>,
    /// First month (YYYY-MM) of the incident dates. Statistics are published by whole
    /// months: a date (YYYY-MM-DD) must be a month's first day.
    #[arg(long, value_name = "MONTH|DATE")]
    from: Option<String>,
    /// Last month (YYYY-MM, inclusive); a date (YYYY-MM-DD) must be a month's last day.
    #[arg(long, value_name = "MONTH|DATE")]
    to: Option<String>,
    /// One category only (default: both, or the one a --modus-operandi, --maritime-event
    /// or --vessel-type filter belongs to).
    #[arg(long, value_enum)]
    category: Option<CategoryArg>,
    #[command(flatten)]
    filter: ReportFilter,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The same as --format json (the API's AggregateResponse, proto3 JSON mapping), as
    /// `query` spells it.
    #[arg(long, conflicts_with_all = ["format", "csv"])]
    json: bool,
    /// The same as --format csv, as `query` spells it.
    #[arg(long, conflicts_with = "format")]
    csv: bool,
    /// Also write a chart (SVG, or PNG when the name ends in .png): a time series when grouped
    /// by a period (a line per value of the other dimensions, a gap where a period has no
    /// figure), bars otherwise. It shows the first metric asked for and says what it
    /// leaves out.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    chart: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    /// Safe to open in a spreadsheet: a cell that would start a formula gets a leading '.
    Csv,
    Json,
}

/// `--by NAME`: a dimension of [`analytics::DIMENSIONS`].
fn dimension_arg() -> impl clap::builder::TypedValueParser<Value = pb::Dimension> {
    clap::builder::PossibleValuesParser::new(analytics::DIMENSIONS.map(|d| d.0))
        .try_map(|name: String| analytics::dimension_named(&name).ok_or("not a dimension"))
}

/// `--metric NAME`: a metric of [`analytics::METRICS`].
fn metric_arg() -> impl clap::builder::TypedValueParser<Value = pb::Metric> {
    clap::builder::PossibleValuesParser::new(analytics::METRICS.map(|m| m.0))
        .try_map(|name: String| analytics::metric_named(&name).ok_or("not a metric"))
}

/// Refuses `--from` after `--to` (both in their one spelling, so compared as text), as
/// the command line is read.
pub(super) fn date_range(from: &str, to: &str) -> anyhow::Result<()> {
    if !from.is_empty() && !to.is_empty() && from > to {
        usage!("--from {from} is after --to {to}: give the earlier date first");
    }
    Ok(())
}

/// "2024-03" → "2024-03-01" (or the month's last day for the end of a range); a date
/// `YYYY-MM-DD` stays as it is. Both in their one spelling (see `tidemark::calendar`).
pub(super) fn date_arg(text: &str, end: bool) -> anyhow::Result<String> {
    if let Some(date) = calendar::parse_date(text) {
        return Ok(calendar::format_date(date));
    }
    let first = calendar::parse_month(text).ok_or_else(|| {
        super::usage_error(format!(
            "{}: {}",
            if end { "--to" } else { "--from" },
            calendar::refusal(
                text,
                "a month YYYY-MM or a date YYYY-MM-DD (e.g. 2024-03 or 2024-03-09)"
            )
        ))
    })?;
    let day = if end {
        first.month().length(first.year())
    } else {
        1
    };
    let date = first
        .replace_day(day)
        .map_err(|e| anyhow!("{text:?}: {e}"))?;
    Ok(calendar::format_date(date))
}

impl AggregateArgs {
    fn request(&self) -> anyhow::Result<pb::AggregateRequest> {
        let mut filter = pb::AggregateFilter {
            category: self.category.map_or(0, |c| c.to_pb() as i32),
            from_date: self
                .from
                .as_deref()
                .map(|t| date_arg(t, false))
                .transpose()?
                .unwrap_or_default(),
            to_date: self
                .to
                .as_deref()
                .map(|t| date_arg(t, true))
                .transpose()?
                .unwrap_or_default(),
            ..pb::AggregateFilter::default()
        };
        date_range(&filter.from_date, &filter.to_date)?;
        self.filter.aggregate(&mut filter)?;
        Ok(pb::AggregateRequest {
            group_by: self.by.iter().map(|d| *d as i32).collect(),
            metrics: self.metric.iter().map(|m| *m as i32).collect(),
            filter: Some(filter),
        })
    }
}

pub async fn aggregate(args: AggregateArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    if let Some(path) = &args.chart {
        chart::check_path(path)?;
    }
    let response = AnalyticsClient::new(args.client.connect().await?)
        .aggregate(request.clone())
        .await
        .map_err(|s| super::refused_request(&s))?
        .into_inner();
    // The chart first (a table piped to `head` ends the command when the reader goes);
    // a chart that cannot be drawn is reported after the table, which is still printed.
    let charted = args.chart.as_ref().map(|path| {
        chart::write(path, &request, &response)
            .with_context(|| format!("no chart written to {}", path.display()))
            .map(|()| errln!("chart written to {}", path.display()))
    });
    let mut out = super::stdout();
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => args.format,
    };
    match format {
        Format::Table => print_table(&mut out, &response)?,
        Format::Csv => {
            print_csv(&mut out, &response)?;
            if let Some(protection) = protection(&response) {
                errln!("{protection}");
            }
        }
        Format::Json => {
            writeln!(
                out,
                "{}",
                super::json::line(&response, "tidemark.v1.AggregateResponse")
            )?;
        }
    }
    // The table says it in its notes; beside CSV or JSON, stderr does.
    if response.cells.is_empty() && format != Format::Table {
        // Why, as the server's notes say it (few reports, or reports of one state only).
        let why = response
            .notes
            .first()
            .map_or("nothing is shown", |n| n.explanation.as_str());
        errln!(
            "{why}: widen the dates or values asked for, or ask for more states \
             (`tidemark aggregate --help` lists them)"
        );
    }
    if let Some(charted) = charted {
        charted?;
    }
    Ok(())
}

/// Column headings: the dimensions, then the summed metrics, then fees.
fn headings(response: &pb::AggregateResponse) -> (Vec<String>, Vec<String>, bool) {
    let dims = response
        .group_by
        .iter()
        .map(|d| {
            name_of(
                pb::Dimension::try_from(*d).map(|d| d.as_str_name()),
                "DIMENSION_",
            )
        })
        .collect();
    let mut fees = false;
    let metrics = response
        .metrics
        .iter()
        .filter_map(|m| match pb::Metric::try_from(*m) {
            Ok(pb::Metric::FeePerPerson) => {
                fees = true;
                None
            }
            other => Some(name_of(other.map(|m| m.as_str_name()), "METRIC_")),
        })
        .collect();
    (dims, metrics, fees)
}

fn key_label(key: &str) -> &str {
    if key == "*" { "(all)" } else { key }
}

/// What the status column says about a cell; `state_at` is where the reporting state is
/// among its keys (a cell of one named state is one state's by definition: not flagged).
fn status(cell: &pb::Cell, state_at: Option<usize>) -> &'static str {
    let one_state_named = state_at
        .and_then(|i| cell.keys.get(i))
        .is_some_and(|k| k != "*");
    match pb::SuppressionRule::try_from(cell.suppressed) {
        Ok(pb::SuppressionRule::SmallCell) => "withheld: too few reports",
        Ok(pb::SuppressionRule::Dominance) => "withheld: one state only",
        Ok(pb::SuppressionRule::Secondary) => "withheld: protects a small cell",
        _ if cell.single_state && !one_state_named => "one state only",
        _ => "",
    }
}

fn fee_text(fees: &[pb::FeeQuantiles]) -> String {
    fees.iter()
        .map(|f| {
            format!(
                "{} {:.0} | {:.0} | {:.0} (n={})",
                f.currency, f.first_quartile, f.median, f.third_quartile, f.reports
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_table(out: &mut impl Write, response: &pb::AggregateResponse) -> anyhow::Result<()> {
    let (dims, metrics, fees) = headings(response);
    let state_at = response
        .group_by
        .iter()
        .position(|d| *d == pb::Dimension::ReportingState as i32);
    let mut header: Vec<String> = dims.clone();
    header.extend(metrics.iter().cloned());
    if fees {
        header.push("fee per person q1 | median | q3".to_owned());
    }
    header.push(String::new());
    let rows: Vec<Vec<String>> = response
        .cells
        .iter()
        .map(|cell| {
            let withheld = cell.suppressed != 0;
            let mut row: Vec<String> = cell.keys.iter().map(|k| key_label(k).to_owned()).collect();
            for i in 0..metrics.len() {
                row.push(if withheld {
                    "x".to_owned()
                } else {
                    cell.values
                        .get(i)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                });
            }
            if fees {
                row.push(if withheld {
                    "x".to_owned()
                } else {
                    fee_text(&cell.fees)
                });
            }
            row.push(status(cell, state_at).to_owned());
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.chars().count());
        }
    }
    let numeric = |i: usize| i >= dims.len() && i < dims.len() + metrics.len();
    let line = |out: &mut dyn Write, row: &[String]| -> std::io::Result<()> {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if numeric(i) {
                    format!("{v:>w$}", w = widths[i])
                } else {
                    format!("{v:<w$}", w = widths[i])
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())
    };
    line(out, &header)?;
    for row in &rows {
        line(out, row)?;
    }
    // Under a privacy budget every value of the dimensions is listed, data or not.
    let listed = if response
        .protection
        .as_ref()
        .is_some_and(|p| p.method == "zcdp")
    {
        "every value of the dimensions is listed, data or not"
    } else {
        "cells too small to show are not listed"
    };
    writeln!(
        out,
        "\n{} cells (from {}); {listed}; x = withheld",
        response.cells.len(),
        response.source,
    )?;
    for note in &response.notes {
        writeln!(out, "- {}", note.explanation)?;
    }
    if let Some(protection) = protection(response) {
        writeln!(out, "- {protection}")?;
    }
    Ok(())
}

/// What protected the figures, in words (the table's last line; on stderr beside CSV,
/// which has no place for it).
fn protection(response: &pb::AggregateResponse) -> Option<String> {
    let p = response.protection.as_ref()?;
    match p.method.as_str() {
        "cell-key" => Some(format!(
            "protection: cell key method, perturbation table {}: counts differ from the true \
             ones by at most {} (never 1 or 2); each report moves each sum by a fixed \
             {:.0}-{:.0}% plus 1.5-{}; cells need not add up to margins",
            p.perturbation_table,
            p.max_count_deviation,
            p.magnitude_scale * 50.0,
            p.magnitude_scale * 100.0,
            p.magnitude_floor
        )),
        "none" => Some("protection: exact figures (suppression only)".to_owned()),
        "zcdp" => Some(format!(
            "protection: privacy budget (zCDP): this answer was charged rho {:.3}, {:.3} is \
             left this year; counts carry Gaussian noise of SD {:.1}, sums of SD {:.1} (each \
             report counted up to {}); small cells are withheld on the noisy counts",
            p.rho_charged, p.rho_remaining, p.count_noise_sd, p.sum_noise_sd, p.contribution_cap
        )),
        _ => None,
    }
}

fn print_csv(out: &mut impl Write, response: &pb::AggregateResponse) -> anyhow::Result<()> {
    let (dims, metrics, fees) = headings(response);
    let currencies: BTreeSet<&str> = response
        .cells
        .iter()
        .flat_map(|c| c.fees.iter().map(|f| f.currency.as_str()))
        .collect();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = dims.iter().map(|d| d.replace(' ', "_")).collect();
    header.extend(metrics.iter().map(|m| m.replace(' ', "_")));
    if fees {
        for c in &currencies {
            for q in ["reports", "q1", "median", "q3"] {
                header.push(format!("fee_{q}_{c}"));
            }
        }
    }
    header.push("withheld".to_owned());
    header.push("single_state".to_owned());
    csv.write_record(
        header
            .iter()
            .map(|c| super::csv_rows::safe_cell(c).into_owned()),
    )?;
    for cell in &response.cells {
        let withheld = pb::SuppressionRule::try_from(cell.suppressed)
            .ok()
            .filter(|r| *r != pb::SuppressionRule::Unspecified)
            .map(|r| name_of(Ok::<_, ()>(r.as_str_name()), "SUPPRESSION_RULE_").replace(' ', "_"));
        let mut row: Vec<String> = cell.keys.clone();
        for i in 0..metrics.len() {
            row.push(
                cell.values
                    .get(i)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        }
        if fees {
            for c in &currencies {
                match cell.fees.iter().find(|f| f.currency == *c) {
                    Some(f) => row.extend([
                        f.reports.to_string(),
                        f.first_quartile.to_string(),
                        f.median.to_string(),
                        f.third_quartile.to_string(),
                    ]),
                    None => row.extend(std::iter::repeat_n(String::new(), 4)),
                }
            }
        }
        row.push(withheld.unwrap_or_default());
        row.push(cell.single_state.to_string());
        csv.write_record(
            row.iter()
                .map(|c| super::csv_rows::safe_cell(c).into_owned()),
        )?;
    }
    out.write_all(&csv.into_inner().map_err(|e| anyhow!("{e}"))?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method the server names is said under the table: a privacy budget's answer
    /// says what it was charged, what is left and how noisy its figures are.
    #[test]
    fn every_protection_is_said_in_words() {
        let answer = |method: &str| pb::AggregateResponse {
            protection: Some(pb::Protection {
                method: method.to_owned(),
                rho_charged: 0.05,
                rho_remaining: 0.15,
                count_noise_sd: 3.2,
                sum_noise_sd: 12.6,
                contribution_cap: 50,
                ..pb::Protection::default()
            }),
            ..pb::AggregateResponse::default()
        };
        let said = protection(&answer("zcdp")).expect("said");
        for part in [
            "privacy budget",
            "0.050",
            "0.150",
            "SD 3.2",
            "SD 12.6",
            "up to 50",
        ] {
            assert!(said.contains(part), "{part}: {said}");
        }
        assert!(protection(&answer("cell-key")).is_some());
        assert!(protection(&answer("none")).is_some());
    }
}
