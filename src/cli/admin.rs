//! `tidemark admin …`: operator commands against a running server.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use tidemark::{
    client,
    country::CountryCode,
    pb::{self, admin_client::AdminClient},
    submission::format_time,
};

use super::client_args::ClientArgs;

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
        /// Last day of validity, seconds since the Unix epoch (default: no end).
        #[arg(long, default_value_t = 0)]
        valid_until_unix: i64,
    },
    /// Revoke a signing key; reports accepted before --compromised-at-unix stay valid.
    RevokeKey {
        key_id: String,
        /// Why: key-compromise, superseded, …
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// When the key was compromised, seconds since the Unix epoch (default: now).
        #[arg(long, default_value_t = 0)]
        compromised_at_unix: i64,
    },
    /// Read the audit log: reads of states' data, refusals, administrative actions.
    Audit {
        /// Entries after this number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List signing keys.
    Keys {
        /// Only this state's keys.
        #[arg(long)]
        state: Option<CountryCode>,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut admin = AdminClient::new(args.client.connect().await?);
    let explain = |status: tonic::Status| anyhow!(client::explain(&status));
    match args.command {
        AdminCommand::RegisterKey {
            state,
            public_key,
            valid_until_unix,
        } => {
            let pem = std::fs::read_to_string(&public_key)
                .map_err(|e| anyhow!("cannot read {}: {e}", public_key.display()))?;
            let info = admin
                .register_signing_key(pb::RegisterSigningKeyRequest {
                    state: state.to_string(),
                    public_key_pem: pem,
                    valid_from_unix: 0,
                    valid_until_unix,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_key(&info);
        }
        AdminCommand::RevokeKey {
            key_id,
            reason,
            compromised_at_unix,
        } => {
            let info = admin
                .revoke_signing_key(pb::RevokeSigningKeyRequest {
                    key_id,
                    compromised_at_unix,
                    reason,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_key(&info);
        }
        AdminCommand::Audit { after, limit, json } => {
            let entries = admin
                .audit_log(pb::AuditLogRequest { after, limit })
                .await
                .map_err(explain)?
                .into_inner()
                .entries;
            for e in &entries {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "#{} {} {} {} [{}] {} reports {}",
                        e.number,
                        format_time(e.at_unix),
                        e.principal,
                        e.action,
                        e.detail,
                        e.count,
                        e.by_owner
                            .iter()
                            .map(|(k, v)| format!("{k}:{v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
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
                print_key(key);
            }
            if keys.is_empty() {
                println!("no signing keys registered");
            }
        }
    }
    Ok(())
}

fn print_key(k: &pb::SigningKeyInfo) {
    let until = if k.valid_until_unix == 0 {
        "no end".to_owned()
    } else {
        format_time(k.valid_until_unix)
    };
    let revoked = if k.revoked_at_unix == 0 {
        String::new()
    } else {
        format!(
            ", REVOKED as of {} ({})",
            format_time(k.revoked_at_unix),
            k.revocation_reason
        )
    };
    println!(
        "{} {}  valid {} to {}{}",
        k.state,
        k.key_id,
        format_time(k.valid_from_unix),
        until,
        revoked
    );
}
