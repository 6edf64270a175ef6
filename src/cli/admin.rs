//! `tidemark admin …`: operator commands against a running server.

use super::whole::whole;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use tidemark::{
    client,
    clock::format_time,
    country::CountryCode,
    pb::{self, admin_client::AdminClient},
};

use super::{client_args::ClientArgs, labels::printable};

/// Administration (operator certificate required).
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Register a state's report-signing public key.
    RegisterKey {
        /// The owning state (ISO 3166-1 alpha-3).
        #[arg(long)]
        state: CountryCode,
        /// The public key file (PEM), as written by `tidemark keygen`.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The end of validity: an RFC 3339 date-time (2027-06-30T00:00:00Z), or a date
        /// (2027-06-30: valid through that day, UTC). Default: no end.
        #[arg(long, value_name = "TIME|DATE", value_parser = parse_until)]
        valid_until: Option<i64>,
    },
    /// Revoke a signing key; reports accepted before --compromised-at stay valid.
    RevokeKey {
        /// The key's id, as `tidemark keys` lists it (64 lower-case hex digits).
        #[arg(value_parser = key_id_arg)]
        key_id: String,
        /// Why (an RFC 5280 reason name): unspecified, key-compromise, ca-compromise,
        /// affiliation-changed, superseded, cessation-of-operation or privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// Revoked as of this time, whatever the reason (for key-compromise, when the key
        /// was compromised): an RFC 3339 date-time (2026-11-02T08:00:00Z), or a date
        /// (2026-11-02: from its midnight UTC). Default: now (the second after the server
        /// stores the revocation; what it signed and was stored before stays valid).
        /// What it signed that was accepted from then on is UNTRUSTED for `verify` and no
        /// longer counts towards the state's give-to-get standing; the server recounts in
        /// the revocation's own write, about 0.1 s per thousand envelopes accepted since
        /// that time, while submissions wait.
        #[arg(long, value_name = "TIME|DATE", value_parser = parse_compromised_at)]
        compromised_at: Option<i64>,
    },
    /// Read the audit log, oldest first: reads of states' data, refusals, administrative
    /// actions, operator reads (a page holding only operator reads is not itself
    /// recorded, so paging with --after ends). Page on with --after set to the last
    /// number printed; the newest entries are those of the last page.
    Audit {
        /// Entries after this number.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole(0u64, u64::MAX))]
        after: u64,
        /// At most this many entries (1 to 10000; page on with --after).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole(1u32, 10_000))]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Enrol a state, or reinstate a suspended one (within `limits.lapsed_connection_grace_secs`,
    /// 5 s, of the suspension its open connections are kept).
    Enrol {
        /// The state (ISO 3166-1 alpha-3).
        state: CountryCode,
    },
    /// Suspend a state: its certificates stop working at once (calls in progress end with
    /// the reason, and its connections are closed `limits.lapsed_connection_grace_secs`,
    /// 5 s, later); its data stays.
    Suspend {
        /// The state (ISO 3166-1 alpha-3).
        state: CountryCode,
    },
    /// List every state taking part, with its certificates issued here, signing keys and
    /// give-to-get standing.
    ///
    /// Enrolment is what `admin issue` needs; a certificate issued offline with the CA key
    /// (`pki issue`) and a registered signing key let a state exchange without it. So the
    /// list holds the states enrolled or suspended and any other with signing keys or
    /// certificates issued here, shown as "never enrolled".
    States,
    /// Issue a certificate from a CSR made with `tidemark pki csr`.
    Issue {
        /// The CSR file (PEM).
        csr: PathBuf,
        /// Validity in days (1 to 397).
        #[arg(long, default_value_t = 90, allow_negative_numbers = true, value_parser = whole(1u32, 397))]
        days: u32,
        /// Write the certificate here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a client certificate, by serial (hex, as `whoami` or `admin certs` show) or
    /// by presenting it (--certificate FILE): it is refused at once (calls in progress end with the reason, and its connections are
    /// closed `limits.lapsed_connection_grace_secs`, 5 s, later). Not the certificate
    /// this command runs with: revoke that one with another operator's.
    ///
    /// Or give the certificate itself with --certificate: revoked for its own issuer, also an
    /// intermediate CA outside the bundle (a partner's issuing CA), which --issuer cannot
    /// name, once the server has checked that it chains to a CA it trusts. A CA's
    /// certificate is not revoked this way: revoke an intermediate CA by its serial and
    /// --issuer (which ends the rights of every certificate it issued).
    #[command(group = clap::ArgGroup::new("which").required(true).args(["serial", "certificate"]))]
    Revoke {
        /// The certificate's serial number (hex).
        serial: Option<String>,
        /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
        /// cessation-of-operation or privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// The CA of the server's bundle that issued it, by its subject (RFC 4514, as
        /// `openssl x509 -noout -issuer -nameopt rfc2253 -in CERT` prints it). Serials
        /// are unique per CA only: with more than one CA in the bundle, name it, or a
        /// certificate this server did not issue is revoked for every CA of the bundle.
        #[arg(long, value_name = "NAME")]
        issuer: Option<String>,
        /// The certificate to revoke (PEM), followed by the intermediate CAs it is
        /// presented with, as the holder's certificate file has them; instead of SERIAL
        /// and --issuer. Only its CERTIFICATE blocks are sent (not a private key the file
        /// may also hold).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["serial", "issuer"])]
        certificate: Option<PathBuf>,
    },
    /// Certificates issued through this server (`admin issue`) and the development
    /// certificates `serve` wrote into certs/; `--expiring 30d` shows those that need
    /// renewal. Certificates made offline with `tidemark pki issue` are not listed.
    Certs {
        /// Only those expiring within this many days (1 or more, e.g. 30 or 30d), not
        /// revoked and of a key not reported compromised: those that need renewal.
        #[arg(long, value_name = "DAYS", value_parser = expiring_days)]
        expiring: Option<u32>,
    },
    /// Re-read the server certificate, key and CA bundle, and the CRL file, from disk
    /// (no restart). The CRL file may hold several CRLs (this server's and partner CAs');
    /// each must be signed by the CA of the bundle it names as its issuer, and revokes
    /// that CA's certificates only: enforced from then on and kept in the file.
    ReloadTls,
    /// Take an online backup: a consistent copy of the whole store, made while
    /// submissions go on, written to FILE with FILE.manifest.json beside it (restore it
    /// with `tidemark restore FILE --data DIR`). It holds secrets: keep it safe. The
    /// server copies the store beside itself first, so its data directory needs free
    /// space of the store's size plus a tenth, and 64 MiB more; one copy is made at a
    /// time. The store is not the whole server: keep certs/ (the CA and receipt keys),
    /// the configuration, and the CRL file with access-journal.json and
    /// audit-trail-<fork>.journal beside it (a restored store takes the revocations and
    /// suspensions, and the audit records, made after its backup from them) too.
    Backup {
        /// Where to write the copy: a new file (an existing one is never replaced).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The current certificate revocation list (PEM). CRLs are public: any certificate
    /// of the exchange may fetch it, not only an operator's.
    Crl {
        /// Write the CRL (PEM) here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List signing keys.
    Keys {
        /// Only this state's keys.
        #[arg(long)]
        state: Option<CountryCode>,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let channel = args.client.connect().await?;
    let mut admin = AdminClient::new(channel.clone());
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    match args.command {
        AdminCommand::Crl { out } => {
            // The CRL is public: Exchange.GetCrl answers any certificate.
            let crl = pb::exchange_client::ExchangeClient::new(channel)
                .get_crl(pb::GetCrlRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .crl_pem;
            match out {
                Some(path) => tidemark::files::replace(&path, crl.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => out!("{crl}")?,
            }
        }
        AdminCommand::RegisterKey {
            state,
            public_key,
            valid_until,
        } => register_key(&mut admin, &state, &public_key, valid_until).await?,
        AdminCommand::RevokeKey {
            key_id,
            reason,
            compromised_at,
        } => {
            let info = admin
                .revoke_signing_key(pb::RevokeSigningKeyRequest {
                    key_id,
                    compromised_at_unix: compromised_at.unwrap_or(0),
                    reason: reason.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_key(&info)?;
            warn_not_written("revocation", &info.not_written);
            if info.already_revoked {
                errln!(
                    "the key was already revoked as of {} ({}), which stands: only an earlier \
                     --compromised-at moves a revocation",
                    format_time(info.revoked_at_unix),
                    printable(&info.revocation_reason)
                );
            }
        }
        AdminCommand::Audit { after, limit, json } => {
            let page = admin
                .audit_log(pb::AuditLogRequest { after, limit })
                .await
                .map_err(explain)?
                .into_inner();
            print_audit(&page.entries, json)?;
            if let (true, Some(last)) = (page.more, page.entries.last()) {
                errln!(
                    "the page stopped at the size a message may have: run again with --after {} \
                     for the records after it",
                    last.number
                );
            }
            if page.entries.is_empty() {
                errln!("no audit records after number {after}");
            }
        }
        AdminCommand::Keys { state } => {
            let keys = admin
                .list_signing_keys(pb::ListSigningKeysRequest {
                    state: state.map(|s| s.to_string()).unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .keys;
            for key in &keys {
                print_key(key)?;
            }
            if keys.is_empty() {
                errln!("no signing keys registered");
            }
        }
        other => run_certificates(&mut admin, other).await?,
    }
    Ok(())
}

/// States and certificates: enrol, suspend, issue, revoke, expiry, reload, CRL.
async fn run_certificates(
    admin: &mut AdminClient<tonic::transport::Channel>,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    let suspend = matches!(command, AdminCommand::Suspend { .. });
    match command {
        AdminCommand::Enrol { state } | AdminCommand::Suspend { state } => {
            let request = pb::StateRequest {
                state: state.to_string(),
            };
            let info = if suspend {
                admin.suspend_state(request).await
            } else {
                admin.enrol_state(request).await
            }
            .map_err(explain)?
            .into_inner();
            let how = if info.suspended {
                "suspended"
            } else {
                "enrolled"
            };
            if info.unchanged {
                outln!("{} was already {how}: nothing changed", info.state)?;
            } else {
                outln!("{} {how}", info.state)?;
            }
            warn_not_written("change", &info.not_written);
        }
        AdminCommand::States => {
            let states = admin
                .list_states(pb::ListStatesRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .states;
            if states.is_empty() {
                errln!("no states are enrolled (`tidemark admin enrol STATE` enrols one)");
            }
            for s in &states {
                outln!(
                    "{} {} ({}), {}, {}",
                    s.state,
                    if s.suspended { "SUSPENDED" } else { "active" },
                    if s.enrolled_at_unix == 0 {
                        "never enrolled".to_owned()
                    } else {
                        format!("enrolled {}", format_time(s.enrolled_at_unix))
                    },
                    super::labels::count(
                        s.certificates.len() as u64,
                        "certificate",
                        "certificates"
                    ),
                    signing_keys(&s.signing_keys)
                )?;
                for c in &s.certificates {
                    outln!(
                        "  cert {} {} until {}{}",
                        c.serial,
                        c.spiffe_id,
                        format_time(c.not_after_unix),
                        standing(c)
                    )?;
                }
                for standing in &s.standing {
                    outln!("  {}", standing.explanation)?;
                }
            }
        }
        AdminCommand::Issue { csr, days, out } => issue(admin, &csr, days, out).await?,
        AdminCommand::Revoke {
            serial,
            reason,
            issuer,
            certificate,
        } => revoke(admin, revocation(serial, reason, issuer, certificate)?).await?,
        AdminCommand::Certs { expiring } => certs(admin, expiring.unwrap_or(0)).await?,
        AdminCommand::Backup { out } => super::backup::backup(admin, &out).await?,
        AdminCommand::ReloadTls => reload_tls(admin).await?,
        // Invariant: `run` handles the signing-key, audit and CRL commands itself.
        AdminCommand::Crl { .. }
        | AdminCommand::RegisterKey { .. }
        | AdminCommand::RevokeKey { .. }
        | AdminCommand::Audit { .. }
        | AdminCommand::Keys { .. } => unreachable!("handled by run"),
    }
    Ok(())
}

async fn reload_tls(admin: &mut AdminClient<tonic::transport::Channel>) -> anyhow::Result<()> {
    let r = admin
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .map_err(|status| anyhow!(client::explain(&status)))?
        .into_inner();
    outln!(
        "reloaded; new connections get server certificate {}",
        r.server_certificate_serial
    )?;
    if !r.crl_not_written.is_empty() {
        errln!(
            "warning: the reloaded files are in force, but the server could not write its \
             CRL file or access journal ({}): fix that and reload again",
            r.crl_not_written
        );
    }
    if !r.server_certificate_issuer_outside_bundle.is_empty() {
        errln!(
            "warning: the server certificate is issued by {}, which is not a CA of the \
             server's CA bundle: clients that trust only the bundle (as `tidemark` clients \
             do) will refuse it; give them its CA, or use a server certificate from a CA of \
             the bundle",
            printable(&r.server_certificate_issuer_outside_bundle)
        );
    }
    if !r.waiting_for_restart.is_empty() {
        errln!(
            "warning: these settings changed in the server's configuration file since it \
             started, and a reload does not apply them (only tls.partner_cas): {}; restart \
             the server for them to take effect (where a `serve` flag sets one, the flag \
             still wins)",
            printable(&r.waiting_for_restart.join(", "))
        );
    }
    Ok(())
}

/// The CERTIFICATE blocks of the PEM file at `path` (each as it is written, in order),
/// for `admin revoke --certificate`: the server checks them; a private key the file may
/// also hold is not sent.
fn certificate_blocks(path: &std::path::Path) -> anyhow::Result<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bytes = tidemark::files::read_bytes(path)
        .map_err(|e| anyhow!("cannot read the certificate {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{} is not a PEM text file (DER? `openssl x509 -inform DER -in {0} -out \
             cert.pem` converts it): give the certificate to revoke as PEM",
            path.display()
        )
    })?;
    let mut blocks = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(length) = rest[start..].find(END) else {
            // Sent as it is: the server says what is wrong with it.
            blocks.push_str(&rest[start..]);
            break;
        };
        blocks.push_str(&rest[start..start + length + END.len()]);
        blocks.push('\n');
        rest = &rest[start + length + END.len()..];
    }
    if blocks.is_empty() {
        anyhow::bail!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----): give the certificate to \
             revoke, followed by the intermediate CAs it is presented with, as PEM",
            path.display()
        );
    }
    Ok(blocks)
}

/// Warns that a `change` (in force and on record) is missing from a file the server
/// keeps (the CRL file, the access journal), when the server says which and why
/// (`not_written`).
fn warn_not_written(change: &str, not_written: &str) {
    if !not_written.is_empty() {
        errln!(
            "warning: the {change} is in force and on record, but the server could not write \
             everything: {}",
            printable(not_written)
        );
    }
}

/// What `admin revoke` asks for: the certificate file `certificate` (read here, checked
/// by the server), or `serial` of `issuer`.
fn revocation(
    serial: Option<String>,
    reason: String,
    issuer: Option<String>,
    certificate: Option<PathBuf>,
) -> anyhow::Result<pb::RevokeCertificateRequest> {
    Ok(match certificate {
        Some(path) => pb::RevokeCertificateRequest {
            certificate_pem: certificate_blocks(&path)?,
            reason,
            ..Default::default()
        },
        None => pb::RevokeCertificateRequest {
            serial: serial.unwrap_or_default(),
            reason,
            issuer: issuer.unwrap_or_default(),
            ..Default::default()
        },
    })
}

async fn revoke(
    admin: &mut AdminClient<tonic::transport::Channel>,
    request: pb::RevokeCertificateRequest,
) -> anyhow::Result<()> {
    let presented = !request.certificate_pem.is_empty();
    let r = admin
        .revoke_certificate(request)
        .await
        .map_err(|status| anyhow!(client::explain(&status)))?
        .into_inner();
    let of = if r.every_issuer {
        " of every CA of the bundle".to_owned()
    } else if r.issuer.is_empty() {
        String::new()
    } else {
        format!(" of {}", r.issuer)
    };
    if r.already_revoked {
        outln!(
            "{}{of} was already revoked ({}) as of {}, which stands: nothing changed",
            r.serial,
            r.reason,
            format_time(r.revoked_at_unix)
        )?;
    } else {
        outln!(
            "revoked {}{of} ({}) as of {}",
            r.serial,
            r.reason,
            format_time(r.revoked_at_unix)
        )?;
    }
    if !r.holder.is_empty() {
        outln!("holder: {}", r.holder)?;
    }
    let compromise = r.reason == "key-compromise";
    if compromise && !r.key_sha256.is_empty() {
        outln!(
            "key sha256:{} reported compromised: every certificate of it is refused, on \
             new calls and on those in progress, and it is not certified again",
            r.key_sha256
        )?;
    } else if compromise && !r.key_not_barred.is_empty() {
        errln!(
            "warning: only this certificate is refused: {}",
            r.key_not_barred
        );
    } else if compromise {
        errln!(
            "warning: the server does not know this certificate's key (it did not issue \
             it, and no handshake it noted has presented it): only serial \
             {}{of} is refused. Other certificates of the same key stay valid until you \
             present this one, if the exchange's CA issued it: `tidemark admin revoke \
             --certificate FILE --reason key-compromise` (a partner CA's certificate is \
             barred alone: that CA revokes its others)",
            r.serial
        );
    }
    // (Said when it was revoked; again, it would contradict "nothing changed".)
    if !r.issued_here && !presented && !r.already_revoked {
        errln!(
            "this server issued no certificate of serial {}{of} (`admin certs` lists those \
             it did): it is revoked all the same, which is right for one made offline or by \
             another CA, but check the serial and the issuer",
            r.serial
        );
    }
    if r.every_issuer {
        errln!(
            "serials are unique per CA only: a certificate of this serial from any CA of \
             the bundle is refused; to revoke one CA's alone, revoke with --issuer"
        );
    }
    if !r.crl_not_written.is_empty() {
        errln!(
            "warning: the revocation is in force and on record, but the server could not \
             write everything ({}). Once that is fixed, `tidemark admin reload-tls` writes \
             both files again: until then a CRL file it could not write lacks the \
             revocation, and a stale access journal would not give it back to a store \
             restored from an older backup",
            r.crl_not_written
        );
    }
    Ok(())
}

async fn issue(
    admin: &mut AdminClient<tonic::transport::Channel>,
    csr: &std::path::Path,
    days: u32,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    let csr_pem = super::input::read_text(csr)?;
    // Checked before anything is issued: an issued certificate is on record.
    if let Some(path) = &out {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; choose another --out (nothing was issued)",
                path.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            bail!(
                "{} is not a directory; create it or choose another --out (nothing was issued)",
                dir.display()
            );
        }
    }
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest { csr_pem, days })
        .await
        .map_err(explain)?
        .into_inner();
    match out {
        Some(path) => {
            if let Err(e) = tidemark::pki::write_new(&path, &issued.certificate_pem, false) {
                // Issued and recorded: the certificate must not be lost with the file.
                out!("{}", issued.certificate_pem)?;
                let why = match e {
                    tidemark::pki::PkiError::Exists(_) => "it was made meanwhile".to_owned(),
                    e => e.to_string(),
                };
                bail!(
                    "the certificate above was issued but not written to {}: {why}",
                    path.display()
                );
            }
            errln!(
                "issued {} (serial {}, until {}) -> {}",
                issued.spiffe_id,
                issued.serial,
                format_time(issued.not_after_unix),
                path.display()
            );
        }
        None => out!("{}", issued.certificate_pem)?,
    }
    Ok(())
}

/// `--expiring`: whole days from 1, written `30` or `30d` (digits only, no leading zero,
/// one `d`).
fn expiring_days(text: &str) -> Result<u32, String> {
    let digits = text.strip_suffix('d').unwrap_or(text);
    whole(1u32, u32::MAX)(digits).map_err(|_| {
        format!(
            "a number of days from 1 to {}, e.g. 30 or 30d, not {}",
            u32::MAX,
            super::labels::printable(text)
        )
    })
}

/// `admin register-key`, saying when a key registered before keeps its validity.
async fn register_key(
    admin: &mut AdminClient<tonic::transport::Channel>,
    state: &CountryCode,
    public_key: &std::path::Path,
    valid_until: Option<i64>,
) -> anyhow::Result<()> {
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    let pem = super::input::read_text(public_key)?;
    // Only a public key is sent: a private key never leaves the machine it is on, not
    // even to be refused, nor does anything else the file may hold.
    // Any PEM private key: PKCS#8, SEC 1, PKCS#1, encrypted, OpenSSH.
    let private = pem
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains("PRIVATE"));
    if private {
        bail!(
            "{} holds a private key: give the public half (`tidemark keygen` writes it as \
             NAME.pub.pem beside NAME.key); nothing was sent",
            public_key.display()
        );
    }
    if let Err(e) = tidemark::PublicKey::from_spki_pem(&pem) {
        bail!(
            "{} is not an Ed25519 public key in PEM ({e}): give the NAME.pub.pem `tidemark \
             keygen` wrote; nothing was sent",
            public_key.display()
        );
    }
    let info = admin
        .register_signing_key(pb::RegisterSigningKeyRequest {
            state: state.to_string(),
            public_key_pem: pem,
            valid_from_unix: 0,
            valid_until_unix: valid_until.unwrap_or(0),
        })
        .await
        .map_err(explain)?
        .into_inner();
    print_key(&info)?;
    // A key registered before stays as it was (the API's no-op).
    if let Some(asked) = valid_until.filter(|v| *v != info.valid_until_unix) {
        errln!(
            "this key was registered before, and a registration is not changed: its \
             validity stays as shown, not until {} as --valid-until asked. To end it \
             sooner, revoke it (admin revoke-key); for a later end, register a new key",
            tidemark::clock::format_until(asked)
        );
    }
    Ok(())
}

/// What a listed certificate's line ends with: REVOKED, and KEY COMPROMISED naming the
/// revocation that says so (its own, or another certificate's of its key), or nothing
/// for one still admitted.
fn standing(c: &pb::IssuedCertificateInfo) -> String {
    let revoked = if c.revoked { " REVOKED" } else { "" };
    if c.key_compromised_by.is_empty() {
        revoked.to_owned()
    } else {
        let and = if c.revoked { "," } else { "" };
        format!(
            "{revoked}{and} KEY COMPROMISED (certificate {} was revoked for key-compromise)",
            c.key_compromised_by
        )
    }
}

async fn certs(
    admin: &mut AdminClient<tonic::transport::Channel>,
    days: u32,
) -> anyhow::Result<()> {
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    let certs = admin
        .list_certificates(pb::ListCertificatesRequest {
            expiring_within_days: days,
        })
        .await
        .map_err(explain)?
        .into_inner()
        .certificates;
    for c in &certs {
        outln!(
            "{} {} until {}{}",
            c.serial,
            c.spiffe_id,
            format_time(c.not_after_unix),
            standing(c)
        )?;
    }
    if certs.is_empty() {
        // Certificates made with `tidemark pki issue` are not issued through the
        // server: not listed here (the development certificates `serve` wrote are). On
        // stderr, as every command's "nothing to show" note.
        errln!(
            "no certificates issued through this server (`admin issue`, and the \
             development certificates `serve` wrote){}; certificates made offline with \
             `tidemark pki issue` are not listed",
            if days > 0 {
                format!(
                    " expire within {}",
                    super::labels::count(u64::from(days), "day", "days")
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `2 signing keys (1 revoked)`: how many a state has, and how many of them are revoked
/// — or that none is left to sign with.
fn signing_keys(keys: &[pb::SigningKeyInfo]) -> String {
    let all = super::labels::count(keys.len() as u64, "signing key", "signing keys");
    match keys.iter().filter(|k| k.revoked_at_unix != 0).count() {
        0 => all,
        revoked if revoked == keys.len() => {
            format!(
                "{all}, {}: none to sign with",
                if revoked == 1 {
                    "revoked"
                } else {
                    "all revoked"
                }
            )
        }
        revoked => format!("{all} ({revoked} revoked)"),
    }
}

fn print_key(k: &pb::SigningKeyInfo) -> anyhow::Result<()> {
    let until = if k.valid_until_unix == 0 {
        "no end".to_owned()
    } else {
        tidemark::clock::format_until(k.valid_until_unix)
    };
    let revoked = if k.revoked_at_unix == 0 {
        String::new()
    } else {
        format!(
            ", REVOKED as of {} ({})",
            format_time(k.revoked_at_unix),
            printable(&k.revocation_reason)
        )
    };
    outln!(
        "{} {}  valid {} to {}{}",
        k.state,
        k.key_id,
        format_time(k.valid_from_unix),
        until,
        revoked
    )?;
    Ok(())
}

/// The audit actions of reads, whose count of reports returned is shown even when 0.
const READS: [&str; 4] = ["query", "sync", "subscribe", "aggregate"];

/// Prints audit entries, one line each (JSON lines with `json`); text from the server is
/// shown through [`printable`], so no record can look like two.
fn print_audit(entries: &[pb::AuditEntry], json: bool) -> anyhow::Result<()> {
    for e in entries {
        if json {
            outln!("{}", super::json::line(e, "tidemark.v1.AuditEntry"))?;
        } else {
            // What a read returned; other records (actions, refusals) return no reports.
            let returned = if READS.contains(&e.action.as_str()) || e.count > 0 {
                let by_owner: String = e
                    .by_owner
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into_iter()
                    .fold(String::new(), |mut line, (k, v)| {
                        line.push(' ');
                        line.push_str(&printable(k));
                        line.push(':');
                        line.push_str(&v.to_string());
                        line
                    });
                // An unfinished read's counts bound what it sent (they are raised ahead).
                let at_most = if e.in_progress { "at most " } else { "" };
                format!(
                    " {at_most}{}{by_owner}",
                    super::labels::count(e.count, "report", "reports")
                )
            } else {
                String::new()
            };
            outln!(
                "#{} {} {} {}{} [{}]{returned}",
                e.number,
                format_time(e.at_unix),
                printable(&e.principal),
                printable(&e.action),
                match (e.in_progress, e.cut_short) {
                    (_, true) => " (cut short: the server stopped before the read ended)",
                    (true, false) => " (in progress)",
                    (false, false) => "",
                },
                printable(&e.detail),
            )?;
        }
    }
    Ok(())
}

/// `--valid-until`: a date-time as given, or a date as the whole of that day (UTC): the
/// validity ends at the next midnight.
fn parse_until(text: &str) -> Result<i64, String> {
    super::reads::parse_instant(text)?;
    after_the_epoch(
        text,
        tidemark::calendar::parse_until(text).unwrap_or_default(),
    )
}

/// `--compromised-at`: a date-time, or a date from its midnight (UTC).
fn parse_compromised_at(text: &str) -> Result<i64, String> {
    after_the_epoch(text, super::reads::parse_instant(text)?)
}

/// A time after the Unix epoch, as the exchange keeps them (0 in the API means "not
/// given": now, or no end).
fn after_the_epoch(text: &str, at: i64) -> Result<i64, String> {
    if at <= 0 {
        Err(format!(
            "{text:?} is not after 1970-01-01T00:00:00Z: the exchange keeps times after the \
             Unix epoch"
        ))
    } else {
        Ok(at)
    }
}

/// A signing key id as the command line gives it: 64 lower-case hex digits, as `tidemark
/// keys` and `keygen` print it.
fn key_id_arg(text: &str) -> Result<String, String> {
    if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(text.to_owned())
    } else {
        Err(
            "not a signing key id: 64 lower-case hex digits, as `tidemark keys` lists them"
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{expiring_days, parse_compromised_at, parse_until, signing_keys};
    use tidemark::pb;

    /// A state's listing says how many of its keys are revoked.
    #[test]
    fn a_states_keys_are_counted_with_the_revoked_ones() {
        let key = |revoked_at_unix| pb::SigningKeyInfo {
            revoked_at_unix,
            ..pb::SigningKeyInfo::default()
        };
        assert_eq!(signing_keys(&[]), "0 signing keys");
        assert_eq!(signing_keys(&[key(0)]), "1 signing key");
        assert_eq!(
            signing_keys(&[key(5), key(0)]),
            "2 signing keys (1 revoked)"
        );
        // Tester X read "1 signing key (1 revoked)" as a usable key.
        assert_eq!(
            signing_keys(&[key(5)]),
            "1 signing key, revoked: none to sign with"
        );
        assert_eq!(
            signing_keys(&[key(5), key(6)]),
            "2 signing keys, all revoked: none to sign with"
        );
    }

    #[test]
    fn expiring_takes_whole_days_in_one_spelling() {
        assert_eq!(expiring_days("30").unwrap(), 30);
        assert_eq!(expiring_days("30d").unwrap(), 30);
        for bad in [
            "30dd",
            "+30",
            "0",
            "0d",
            "030",
            "d",
            "",
            " 30",
            "-1",
            "3.5",
            "99999999999",
        ] {
            assert!(expiring_days(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_time_up_to_the_epoch_is_refused_naming_what_was_given() {
        for before in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
        ] {
            let said = parse_compromised_at(before).unwrap_err();
            assert!(
                said.starts_with(&format!("{before:?} is not after 1970")),
                "{said}"
            );
            let said = parse_until(before).unwrap_err();
            assert!(
                said.starts_with(&format!("{before:?} is not after 1970")),
                "{said}"
            );
        }
        assert_eq!(parse_compromised_at("1970-01-01T00:00:01Z"), Ok(1));
        assert_eq!(parse_until("1970-01-01"), Ok(86_400));
    }
}
