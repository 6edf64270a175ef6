//! Connection flags shared by every client command.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tidemark::client::{self, ClientIdentity, DEFAULT_ENDPOINT};
use tonic::transport::Channel;

/// How to reach the server and whom to present as.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Server address (https:// only).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_parser = endpoint_arg
    )]
    pub endpoint: String,

    /// Identity profile: `certs/aus-node` uses certs/aus-node.pem, certs/aus-node.key and
    /// certs/ca.pem. Ignored when --cert and --key are given.
    #[arg(
        long = "as",
        global = true,
        env = "TIDEMARK_AS",
        value_name = "PROFILE"
    )]
    pub profile: Option<PathBuf>,

    /// Client certificate (PEM); use with --key and --ca instead of --as.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM, PKCS#8).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// CA certificate (PEM) the server's certificate must chain to; overrides the
    /// profile's ca.pem.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl ClientArgs {
    /// The identity these flags name.
    pub fn identity(&self) -> anyhow::Result<ClientIdentity> {
        match (&self.cert, &self.key, &self.profile) {
            (Some(cert), Some(key), _) => {
                let Some(ca) = &self.ca else {
                    usage!("--cert and --key need --ca (the exchange CA certificate)");
                };
                Ok(ClientIdentity::from_files(cert, key, ca)?)
            }
            (_, _, Some(profile)) => {
                let (cert, key, ca) = client::profile_files(profile);
                let given_ca = self.ca.is_some();
                let ca = self.ca.clone().unwrap_or(ca);
                let hint = if !cert.exists() || !key.exists() {
                    format!(
                        "; the profile {0} is the certificate {0}.pem and its key {0}.key \
                         (as `tidemark pki issue` or `admin issue` wrote them)",
                        profile.display()
                    )
                } else if !ca.exists() && !given_ca {
                    format!(
                        "; a profile needs the certificate of the CA that issued the \
                         exchange's server certificate beside it (ask the operator; not a \
                         bundle that also holds partner CAs, which could then speak for the \
                         server): save it as {}, or pass --ca FILE",
                        ca.display()
                    )
                } else {
                    String::new()
                };
                ClientIdentity::from_files(&cert, &key, &ca)
                    .with_context(|| format!("loading profile {}", profile.display()))
                    .map_err(|e| anyhow::anyhow!("{e:#}{hint}"))
            }
            _ => usage!(
                "no client identity: pass --as certs/aus-node (or set TIDEMARK_AS), or \
                 --cert, --key and --ca"
            ),
        }
    }

    /// The default signing key for this identity: `certs/aus-node` → `certs/aus-signing.key`.
    pub fn profile_signing_key(&self) -> Option<PathBuf> {
        let profile = self.profile.as_ref()?;
        // The state the certificate names, whatever the profile is called
        // (node/canberra-1 of AUS: node/aus-signing.key); else the name's first part.
        let state = self
            .identity()
            .ok()
            .and_then(|identity| super::submit::state_of(&identity).ok())
            .map(|state| state.to_lowercase())
            .or_else(|| {
                let name = profile.file_name()?.to_string_lossy().into_owned();
                name.split('-').next().map(str::to_owned)
            })?;
        Some(profile.with_file_name(format!("{state}-signing.key")))
    }

    /// Connects to the server as this identity.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let identity = self.identity()?;
        client::probe(&self.endpoint, &identity).await?;
        Ok(client::connect(&self.endpoint, &identity).await?)
    }
}

/// Whether `host` is a DNS host name as RFC 1123 §2.1 writes one: dot-separated labels
/// of letters, digits and hyphens (not first or last), the last label not all digits (so
/// `127.0.0.01` or `2130706433` is not taken for a name), no empty label or trailing dot.
fn is_host_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.len() <= 253
        && labels.iter().all(label)
        && labels
            .last()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// `--endpoint`: an `https://host:port` URL, checked as the command line is read, and
/// written one way: a port of digits without a leading zero, an IP address as Rust
/// writes it back (IPv6 in brackets, compressed and lower case, RFC 5952), a host name
/// in lower case; nothing after the port but an optional `/`.
fn endpoint_arg(text: &str) -> Result<String, String> {
    const E_G: &str = "e.g. https://127.0.0.1:50051";
    let Some(rest) = text.strip_prefix("https://") else {
        return Err(format!(
            "must start with https:// (Tidemark only speaks TLS), {E_G}"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(at) = authority.find(['/', '?', '#', '@']) {
        let (what, part) = match &authority[at..=at] {
            "@" => ("a user name", &authority[..=at]),
            "#" => ("a fragment", &authority[at..]),
            _ => ("a path or query", &authority[at..]),
        };
        return Err(format!(
            "has {what} ({part:?}): the endpoint is https://HOST:PORT alone, {E_G}"
        ));
    }
    let split = if authority.starts_with('[') {
        authority
            .split_once("]:")
            .map(|(host, port)| (&authority[..=host.len()], port))
    } else {
        authority.rsplit_once(':')
    };
    let Some((host, port)) = split else {
        return Err(format!("names no port: give it after the host, {E_G}"));
    };
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let number = port.parse::<u16>().ok().filter(|p| digits && *p != 0);
    match number {
        None => return Err(format!("port {port:?} is not a port (1 to 65535), {E_G}")),
        Some(n) if n.to_string() != port => {
            return Err(format!("port {port:?} has a leading zero: write {n}"));
        }
        Some(_) => {}
    }
    let canonical = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let address: std::net::Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("[{v6}] is not an IPv6 address, {E_G}"))?;
        format!("[{address}]")
    } else if let Ok(address) = host.parse::<std::net::Ipv4Addr>() {
        address.to_string()
    } else if !is_host_name(host) {
        return Err(format!(
            "{host:?} is not a host name (labels of letters, digits and '-', the last not all \
             digits, no trailing dot) nor an IP address as written (no leading zeros), {E_G}"
        ));
    } else {
        host.to_ascii_lowercase()
    };
    if canonical != host {
        return Err(format!(
            "host {host:?} is written another way than addresses and names are: write \
             https://{canonical}:{port}"
        ));
    }
    tonic::transport::Endpoint::from_shared(text.to_owned())
        .map_err(|e| format!("not a URL: {e}"))?;
    Ok(text.to_owned())
}
