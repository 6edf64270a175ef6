//! Command-line interface: argument parsing and dispatch to one module per command.

// Doc comments here are the `--help` text that people read in a terminal, not rustdoc.
#![allow(clippy::doc_markdown)]

/// `print!` for commands: an error to pass on with `?`, not a panic, when standard
/// output cannot be written (a full disk, a file closed under us). A closed pipe ends the
/// process quietly before this is reached (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::stdout_failed)
    }};
}

/// A [`Usage`] error, for `ok_or_else` and the like.
pub(crate) fn usage_error(message: String) -> anyhow::Error {
    anyhow::Error::new(Usage(message))
}

/// A refusal of a request built from the command line: INVALID_ARGUMENT (the server
/// found a flag's value wrong: a range backwards, dimensions it does not combine) is a
/// usage error, exit 2; anything else an error, exit 1.
pub(crate) fn refused_request(status: &tonic::Status) -> anyhow::Error {
    let said = tidemark::client::explain(status);
    if status.code() == tonic::Code::InvalidArgument {
        usage_error(said)
    } else {
        anyhow::anyhow!(said)
    }
}

/// Returns a [`Usage`] error from the current function: `usage!("--end {end} …")`.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::cli::usage_error(format!($($arg)*)))
    };
}

/// `eprintln!` that cannot panic: a standard error that cannot be written (a full disk,
/// `2>/dev/full`) loses the message, and the command ends with its own status.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `println!` for commands, as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::stdout_failed)
    }};
}

/// An error and its causes, joined by ": ", each said once: many errors already end
/// their message with their cause, which `{:#}` would repeat.
fn said_once(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(ToString::to_string) {
        // As "…: {source}" ends a message that quotes its cause.
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Standard output for commands that write through `std::io::Write` (tables, CSV, JSON
/// lines): a failed write says it was standard output that failed.
pub(crate) struct Stdout(std::io::StdoutLock<'static>);

/// Locks standard output for [`Stdout`] writes.
pub(crate) fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(named)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(named)
    }
}

/// `e`, saying that it was standard output that failed.
fn named(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), StdoutFailed(e))
}

/// A write to standard output that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
struct StdoutFailed(std::io::Error);

/// The error of a failed write to standard output.
fn stdout_failed(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("cannot write to standard output")
}

mod admin;
mod aggregate;
mod audit_check;
mod backup;
mod chart;
mod client_args;
mod csv_quoting;
mod csv_rows;
mod import;
mod input;
mod json;
mod keys;
mod labels;
mod lock;
mod log;
mod pki;
mod progress;
mod pushback;
mod reads;
mod reciprocity;
mod report_filter;
mod sample;
mod serve;
mod signing_args;
mod submit;
mod verify;
mod whoami;
mod whole;
mod witness;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tidemark: a secure, reciprocal exchange of signed incident reports on migrant
/// smuggling and irregular maritime movements between states.
///
/// Start a server on this machine with `tidemark serve` (it creates a development PKI
/// under certs/ on first run), then talk to it as one of the sample states with
/// `tidemark whoami --as certs/aus-node`.
#[derive(Parser)]
#[command(name = "tidemark", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    Whoami(whoami::WhoamiArgs),
    Submit(submit::SubmitArgs),
    // `--version` here is the retraction's version, not the program's.
    #[command(disable_version_flag = true)]
    Retract(submit::RetractArgs),
    Import(import::ImportArgs),
    VerifyReceipt(submit::VerifyReceiptArgs),
    Keygen(keys::KeygenArgs),
    SampleReports(sample::SampleArgs),
    Query(reads::QueryArgs),
    Sync(reads::SyncArgs),
    Watch(reads::WatchArgs),
    Standing(reads::StandingArgs),
    Aggregate(aggregate::AggregateArgs),
    Audit(reads::AuditArgs),
    Verify(verify::VerifyArgs),
    Keys(verify::KeysArgs),
    Admin(admin::AdminArgs),
    Restore(backup::RestoreArgs),
    #[command(subcommand)]
    Log(log::LogCommand),
}

/// A mistake in the command line that clap cannot see (one flag against another, a value
/// read after parsing): the command exits 2, as for clap's own usage errors, before
/// anything is sent or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub String);

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version or a usage error: clap's text, with its exit code, unless it
        // cannot be written.
        Err(e) => {
            use std::io::Write as _;
            let printed = e.print().and_then(|()| std::io::stdout().flush());
            return match printed {
                // Help and version go to stdout; a usage error that cannot be written to
                // stderr still ends with its status.
                Err(failed)
                    if failed.kind() != std::io::ErrorKind::BrokenPipe && !e.use_stderr() =>
                {
                    errln!("error: cannot write to standard output: {failed}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
            };
        }
    };
    // A client command whose stdout is closed (`tidemark query … | head`) ends quietly, as
    // Unix tools do, instead of panicking on the next print. Sockets are unaffected: Rust
    // sends with MSG_NOSIGNAL. The server keeps ignoring SIGPIPE.
    let serving = matches!(cli.command, Command::Serve(_));
    let json_log = matches!(&cli.command, Command::Serve(args) if serve::logs_json(args));
    if !serving {
        sigpipe::reset();
    }
    // Only ring is compiled in; installing it makes that explicit for every rustls user.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Pki(command) => pki::run(command),
            Command::Whoami(args) => whoami::run(args).await,
            Command::Submit(args) => submit::submit(args).await,
            Command::Retract(args) => submit::retract(args).await,
            Command::Import(args) => import::run(args).await,
            Command::VerifyReceipt(args) => submit::verify_receipt(&args).await,
            Command::Keygen(args) => keys::run(&args),
            Command::SampleReports(args) => sample::run(&args),
            Command::Query(args) => reads::query(args).await,
            Command::Sync(args) => reads::sync(args).await,
            Command::Watch(args) => reads::watch(args).await,
            Command::Standing(args) => reads::standing(args).await,
            Command::Aggregate(args) => aggregate::aggregate(args).await,
            Command::Audit(args) => reads::audit(args).await,
            Command::Verify(args) => verify::verify(&args),
            Command::Keys(args) => verify::keys(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Restore(args) => backup::restore(&args),
            Command::Log(command) => log::run(command).await,
        }
    });
    // Whatever is still buffered must reach its file too, or the command has failed —
    // except the server's, whose standard output is only a hint for a person.
    let result = result.and_then(|()| {
        use std::io::Write as _;
        match std::io::stdout().flush() {
            Err(_) if serving => Ok(()),
            flushed => flushed.map_err(stdout_failed),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_log => {
            // One JSON line, as the server's log writes an event (`serve::init_tracing`:
            // fields flattened, the time in microseconds).
            let time = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
                ))
                .unwrap_or_default();
            let line = serde_json::json!({
                "timestamp": time,
                "level": "ERROR",
                "message": "the server stopped",
                "error": said_once(&e),
                "target": "tidemark",
            });
            errln!("{line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            // Errors quote what was read (file names, fields, values): shown safely.
            errln!("error: {}", labels::printable_lines(&said_once(&e)));
            if let Some(alarm) = e.downcast_ref::<witness::Alarm>() {
                ExitCode::from(alarm.code)
            } else if e.downcast_ref::<Usage>().is_some() {
                errln!("\nFor more information, try '--help'.");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn an_error_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x.toml: {source}")]
        struct Quoting {
            source: std::io::Error,
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Quoting { source: io }).context("loading the config");
        assert_eq!(
            super::said_once(&e),
            "loading the config: cannot read x.toml: No such file"
        );
    }

    /// clap's own consistency checks over every command and flag (duplicate names, a
    /// flag clashing with --version or --help, …): what would otherwise panic at run time.
    #[test]
    fn every_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every argument and flag of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tidemark", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:#?}");
    }
}
