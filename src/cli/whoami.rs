//! `tidemark whoami`: who the server takes this certificate to be.

use anyhow::anyhow;
use clap::Args;
use tidemark::{client, pb};

use super::client_args::ClientArgs;

/// Ask the server who this certificate says you are: role, state, name, the
/// certificate's serial, issuer and validity, the intermediate CAs it was issued through
/// and the CA of the exchange's bundle it is trusted as. A good first check of a new
/// certificate.
#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[command(flatten)]
    client: ClientArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let channel = args.client.connect().await?;
    let me = pb::exchange_client::ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(|status| anyhow!(client::explain(&status)))?
        .into_inner();
    let role = pb::Role::try_from(me.role).unwrap_or(pb::Role::Unspecified);
    let not_before = format_time(me.certificate_not_before.as_ref());
    let not_after = format_time(me.certificate_not_after.as_ref());
    if args.json {
        // The API's WhoAmIResponse in the proto3 JSON mapping, as every --json prints.
        outln!("{}", super::json::line(&me, "tidemark.v1.WhoAmIResponse"))?;
    } else {
        outln!("spiffe id    {}", me.spiffe_id)?;
        outln!(
            "role         {}",
            role.as_str_name()
                .trim_start_matches("ROLE_")
                .to_ascii_lowercase()
        )?;
        if !me.state.is_empty() {
            outln!("state        {}", me.state)?;
        }
        outln!("name         {}", me.name)?;
        outln!("certificate  serial {}", me.certificate_serial)?;
        outln!("             issuer {}", me.certificate_issuer)?;
        outln!("             valid {not_before} to {not_after}")?;
        for ca in &me.intermediates {
            outln!(
                "issued via   {} (serial {}, issued by {})",
                ca.subject,
                ca.serial,
                ca.issuer
            )?;
        }
        if !me.trust_anchor.is_empty() {
            let whose = if me.trust_anchor_vouches_for.is_empty() {
                String::new()
            } else {
                format!(
                    " (a partner CA, for {})",
                    me.trust_anchor_vouches_for.join(" ")
                )
            };
            outln!("trusted as   {}{whose}", me.trust_anchor)?;
        }
    }
    Ok(())
}

fn format_time(ts: Option<&pbjson_types::Timestamp>) -> String {
    ts.map_or_else(
        || "unknown".to_owned(),
        |ts| tidemark::clock::format_time(ts.seconds),
    )
}
