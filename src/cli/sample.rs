//! `tidemark sample-reports`: synthetic reports for demos, tests and benchmarks.

use super::whole::whole;
use std::io::Write;

use clap::{Args, ValueEnum};
use tidemark::{country::CountryCode, sample};

use super::csv_rows::CsvRow;

/// Write realistic synthetic reports (both categories; varied routes, nationalities,
/// vessel types, dates and scopes; places, seas, points and fee currencies of the
/// reporting state) to standard output, as JSON lines or CSV — or, with --out, one file
/// per state, since each state's reports are imported by its own node.
///
/// Example: tidemark sample-reports --count 300 --states AUS,IDN,THA --out samples/
///   then: tidemark import samples/aus.jsonl --as certs/aus-node (and idn, tha)
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// How many reports, 1 or more (with --out: how many for each state).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = whole(1u64, u64::MAX))]
    count: u64,
    /// Reporting states, comma-separated ISO 3166-1 alpha-3 codes; reports rotate among them.
    #[arg(long, value_delimiter = ',', default_value = "AUS")]
    states: Vec<CountryCode>,
    /// Seed: the same seed gives the same reports.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
    seed: u64,
    /// jsonl: one report per line, as `import` and `submit` read it; csv: the columns
    /// `import` reads.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write one file per state here, DIR/<state>.jsonl (or .csv), instead of printing:
    /// a node may only import its own state's reports.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    let Some(dir) = &args.out else {
        return write(args, &args.states, super::stdout());
    };
    tidemark::files::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the directory {}: {e}", dir.display()))?;
    // One run at a time per directory: of two at once, each file would be whole but the
    // set a mix of both runs'.
    let lock = dir.join(".sample-reports.lock");
    let _lock = super::lock::try_lock(&lock)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another `tidemark sample-reports` is writing into {} ({} is locked); wait for \
             it to finish, or write into another directory",
            dir.display(),
            lock.display()
        )
    })?;
    let extension = match args.format {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
    };
    let mut states: Vec<CountryCode> = Vec::new();
    for state in &args.states {
        if !states.contains(state) {
            states.push(*state);
        }
    }
    let name = |state: &CountryCode| format!("{}.{extension}", state.as_str().to_lowercase());
    // Nothing is replaced: a file of that name may be someone's data.
    if let Some(there) = states
        .iter()
        .map(|s| dir.join(name(s)))
        .find(|p| p.exists())
    {
        anyhow::bail!(
            "{} is there already: sample-reports replaces no file; remove it, or write \
             into another directory",
            there.display()
        );
    }
    // What a run killed while writing left.
    tidemark::files::remove_dead_temporaries(dir)
        .map_err(|e| anyhow::anyhow!("cannot clear {}: {e}", dir.display()))?;
    // Every file is written before anything is said, so that a closed stdout cannot
    // stop the work half done.
    let mut written = Vec::new();
    for state in &states {
        let name = name(state);
        let path = dir.join(&name);
        // Written under a name of this run's own, then renamed into place: of two runs
        // into one directory, each file is one run's whole, never a mix of lines.
        let partial = tidemark::files::temporary_beside(&path);
        let file = std::fs::File::create(&partial)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?;
        let done = write(args, std::slice::from_ref(state), file)
            .and_then(|()| std::fs::rename(&partial, &path).map_err(Into::into));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!("cannot write {}", path.display())));
        }
        written.push((state, path));
    }
    for (state, path) in written {
        outln!(
            "{} {} reports -> {} (import with --as certs/{}-node)",
            args.count,
            state,
            path.display(),
            state.as_str().to_lowercase()
        )?;
    }
    Ok(())
}

/// Writes `args.count` reports rotating among `states` to `out`.
fn write(args: &SampleArgs, states: &[CountryCode], out: impl Write) -> anyhow::Result<()> {
    // Different state lists give different report ids for the same seed.
    let label: String = states.iter().map(CountryCode::as_str).collect();
    let mut rng = sample::Rng::new(sample::seed_for(args.seed, &label));
    let mut out = std::io::BufWriter::new(out);
    let mut csv = matches!(args.format, Format::Csv).then(|| csv::Writer::from_writer(Vec::new()));
    for i in 0..args.count {
        let state = states[usize::try_from(i).unwrap_or(0) % states.len()];
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
