//! `tidemark pki …`: offline certificate commands that work on the CA files directly.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tidemark::{config::DEFAULT_TRUST_DOMAIN, pki};

/// Offline PKI commands, run on the machine that holds the CA files.
#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    Init(InitArgs),
}

/// Create a development PKI: a CA, a server certificate for localhost, and node and
/// analyst certificates for AUS, IDN and THA, a regional analyst and an operator.
/// See certs/README.md for what each file is. Not for production: make real
/// certificates from your own CA.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,

    /// SPIFFE trust domain written into the client certificates.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,

    /// Replace an existing PKI in --dir (its certificates stop working).
    #[arg(long)]
    force: bool,
}

pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init(args) => {
            let written = pki::init_dev_pki(&args.dir, &args.trust_domain, args.force)?;
            println!(
                "created a development PKI for trust domain {} in {}:",
                args.trust_domain,
                args.dir.display()
            );
            for path in written {
                println!("  {}", path.display());
            }
            Ok(())
        }
    }
}
