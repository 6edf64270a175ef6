//! `tidemark pki …`: offline certificate commands that work on the CA files directly.

use super::whole::whole;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use tidemark::{
    config::DEFAULT_TRUST_DOMAIN,
    country::CountryCode,
    identity::{Principal, Role},
    pki,
};

/// Offline PKI commands, run on the machine that holds the CA files.
#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    Init(InitArgs),
    Csr(CsrArgs),
    Issue(IssueArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Node,
    Analyst,
    RegionalAnalyst,
    Operator,
}

/// Which identity: shared by `csr` and `issue`.
#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// The state (ISO 3166-1 alpha-3); not used for regional analysts and operators.
    #[arg(long)]
    state: Option<CountryCode>,
    /// What the certificate is for: the SPIFFE ID's role.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The principal's name, e.g. canberra-1: 1-64 characters from a-z, 0-9, '-', '_', '.',
    /// starting with a letter or digit (a SPIFFE ID path segment, one spelling only).
    #[arg(long)]
    name: String,
    /// SPIFFE trust domain of the exchange.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

impl IdentityArgs {
    fn principal(&self) -> anyhow::Result<Principal> {
        let role_name = clap::ValueEnum::to_possible_value(&self.role)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let need_state = || {
            self.state.ok_or_else(|| {
                super::usage_error(format!("--state is required for the {role_name} role"))
            })
        };
        let no_state = || match self.state {
            Some(state) => Err(super::usage_error(format!(
                "--state {state} does not fit the {role_name} role, which serves no one \
                 state: leave --state out (or use --role node or analyst)"
            ))),
            None => Ok(()),
        };
        let role = match self.role {
            RoleArg::Node => Role::Node(need_state()?),
            RoleArg::Analyst => Role::StateAnalyst(need_state()?),
            RoleArg::RegionalAnalyst => no_state().map(|()| Role::RegionalAnalyst)?,
            RoleArg::Operator => no_state().map(|()| Role::Operator)?,
        };
        Ok(Principal::new(&self.trust_domain, role, &self.name)?)
    }
}

/// Make a private key and a certificate signing request on the node's side:
/// NAME.key (keep it here, mode 0600) and NAME.csr.pem (send it to an operator, who runs
/// `tidemark admin issue NAME.csr.pem`). The private key never leaves this machine.
#[derive(Args, Debug)]
pub struct CsrArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Issue a certificate offline from the CA files (bootstrapping, air-gapped roots):
/// writes NAME.pem and NAME.key into --out.
#[derive(Args, Debug)]
pub struct IssueArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Directory holding ca.pem and ca.key.
    #[arg(long, default_value = "certs")]
    ca_dir: PathBuf,
    /// Validity in days (1 to 397, as `admin issue` gives).
    #[arg(long, default_value_t = 90, allow_negative_numbers = true, value_parser = whole(1i64, i64::from(tidemark::pki::MAX_CERT_DAYS)))]
    days: i64,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
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

    /// Replace an existing PKI in --dir: its certificates stop working. Its files (keys,
    /// certificates, CSRs, the CRL, log.vkey and a server's journals) are moved into
    /// --dir/replaced-<UTC time>/, not deleted.
    #[arg(long)]
    force: bool,
}

/// `pki csr`: a new private key and a CSR for it, both or neither.
fn csr(args: &CsrArgs) -> anyhow::Result<()> {
    let principal = args.identity.principal()?;
    if principal.role() == tidemark::identity::Role::Operator {
        anyhow::bail!(
            "operator certificates are not issued from CSRs (`admin issue` refuses \
             them); make one offline from the CA files: `tidemark pki issue --role \
             operator --name {} --ca-dir DIR`",
            principal.name()
        );
    }
    let (key, csr) = pki::make_csr(&principal)?;
    let made_dir = !args.out.exists();
    tidemark::files::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create the directory {}: {e}", args.out.display()))?;
    let key_path = args.out.join(format!("{}.key", args.identity.name));
    let csr_path = args.out.join(format!("{}.csr.pem", args.identity.name));
    if key_path.exists() {
        anyhow::bail!(
            "{} already exists; choose another --name or --out",
            key_path.display()
        );
    }
    let refused = |e| {
        // Nothing written means nothing: not even the directory this run made.
        if made_dir {
            let _ = std::fs::remove_dir(&args.out);
        }
        match e {
            pki::PkiError::Exists(path) => anyhow::anyhow!(
                "{} already exists; choose another --name or --out",
                path.display()
            ),
            e => anyhow::anyhow!("{e}; nothing was written, run it again"),
        }
    };
    // A new file: of two runs at once, one writes the key, the other stops.
    pki::write_new(&key_path, &key, true).map_err(refused)?;
    // Both or neither: a key without its CSR would block the next run.
    if let Err(e) = pki::write_new(&csr_path, &csr, false) {
        let _ = std::fs::remove_file(&key_path);
        return Err(refused(e));
    }
    outln!("requested identity {}", principal.spiffe_id())?;
    outln!("private key  {} (keep it here)", key_path.display())?;
    outln!(
        "CSR          {} (send it to an operator)",
        csr_path.display()
    )?;
    Ok(())
}

pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Csr(args) => csr(&args),
        PkiCommand::Issue(args) => {
            let principal = args.identity.principal()?;
            let read = |name: &str| {
                let path = args.ca_dir.join(name);
                super::input::read_text(&path)
            };
            let ca = pki::CertificateAuthority::from_pem(&read("ca.pem")?, &read("ca.key")?)
                .map_err(|e| {
                    anyhow::anyhow!("the CA in {} (ca.pem, ca.key): {e}", args.ca_dir.display())
                })?;
            let issued = ca.issue_client(&principal, pki::Validity::days_from_now(args.days))?;
            tidemark::files::create_dir_all(&args.out).map_err(|e| {
                anyhow::anyhow!("cannot create the directory {}: {e}", args.out.display())
            })?;
            let cert_path = args.out.join(format!("{}.pem", args.identity.name));
            let key_path = args.out.join(format!("{}.key", args.identity.name));
            // Never over another file: --name ca in the CA's directory would replace the
            // CA's own key (or the server's, or the log's).
            let exists = |path: &std::path::Path| {
                anyhow::anyhow!(
                    "{} already exists; choose another --name or --out (nothing was written)",
                    path.display()
                )
            };
            if let Some(path) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
                return Err(exists(path));
            }
            pki::write_new(&key_path, &issued.key_pem, true).map_err(|e| match e {
                pki::PkiError::Exists(path) => exists(&path),
                e => e.into(),
            })?;
            if let Err(e) = pki::write_new(&cert_path, &issued.cert_pem, false) {
                // Another run took the name meanwhile: leave its files, take back ours.
                let _ = std::fs::remove_file(&key_path);
                return Err(match e {
                    pki::PkiError::Exists(path) => exists(&path),
                    e => e.into(),
                });
            }
            outln!(
                "issued {} for {} days: {} and {}",
                principal.spiffe_id(),
                args.days,
                cert_path.display(),
                key_path.display()
            )?;
            Ok(())
        }
        PkiCommand::Init(args) => {
            let made = pki::init_dev_pki(&args.dir, &args.trust_domain, args.force)?;
            outln!(
                "created a development PKI for trust domain {} in {}:",
                args.trust_domain,
                args.dir.display()
            )?;
            for path in made.written {
                outln!("  {}", path.display())?;
            }
            if let Some(replaced) = made.replaced {
                outln!(
                    "the files it replaced (keys, certificates, CRL, journals) are in {}",
                    replaced.display()
                )?;
            }
            Ok(())
        }
    }
}
