//! `tidemark sample-reports`: synthetic reports for demos, tests and benchmarks.

use std::io::Write;

use clap::{Args, ValueEnum};
use tidemark::{country::CountryCode, sample};

use super::csv_rows::CsvRow;

/// Write realistic synthetic reports (both categories; varied routes, nationalities,
/// vessel types, dates and scopes) to standard output, as JSON lines or CSV.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// How many reports.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Reporting states, comma-separated ISO 3166-1 alpha-3 codes; reports rotate among them.
    #[arg(long, value_delimiter = ',', default_value = "AUS")]
    states: Vec<CountryCode>,
    /// Seed: the same seed gives the same reports.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// jsonl: one report per line, as `import` and `submit` read it; csv: the columns
    /// `import` reads.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    // Different state lists give different report ids for the same seed.
    let states: String = args.states.iter().map(CountryCode::as_str).collect();
    let mut rng = sample::Rng::new(sample::seed_for(args.seed, &states));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut csv = matches!(args.format, Format::Csv).then(|| csv::Writer::from_writer(Vec::new()));
    for i in 0..args.count {
        let state = args.states[usize::try_from(i).unwrap_or(0) % args.states.len()];
        let report = sample::report(&mut rng, state.as_str());
        match &mut csv {
            Some(writer) => writer.serialize(CsvRow::from_report(&report))?,
            None => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        }
    }
    if let Some(writer) = csv {
        out.write_all(&writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    }
    out.flush()?;
    Ok(())
}
