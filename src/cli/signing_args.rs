//! The `--signing-key` flag shared by commands that sign reports.

use std::path::PathBuf;

use clap::Args;
use tidemark::signing::SigningKey;

use super::client_args::ClientArgs;

#[derive(Args, Debug)]
pub struct SigningArgs {
    /// Ed25519 report-signing key (PKCS#8 PEM). Default with --as DIR/NAME:
    /// DIR/<state>-signing.key, for the state the certificate names (--as certs/aus-node:
    /// certs/aus-signing.key).
    #[arg(long, env = "TIDEMARK_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

impl SigningArgs {
    pub fn load(&self, client: &ClientArgs) -> anyhow::Result<SigningKey> {
        let Some(path) = self
            .signing_key
            .clone()
            .or_else(|| client.profile_signing_key())
        else {
            usage!(
                "no signing key: pass --signing-key FILE (or use --as certs/<state>-node, which \
                 signs with certs/<state>-signing.key)"
            );
        };
        let guessed = self.signing_key.is_none();
        SigningKey::from_file(&path).map_err(|e| {
            if guessed && !path.exists() {
                anyhow::anyhow!(
                    "no report-signing key at {} (the key a profile's name points to): pass \
                     --signing-key FILE, a key made with `tidemark keygen` and registered for \
                     your state by an operator with `tidemark admin register-key`",
                    path.display()
                )
            } else {
                anyhow::anyhow!("loading the report-signing key: {e}")
            }
        })
    }
}
