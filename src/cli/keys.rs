//! `tidemark keygen`: make a report-signing key.

use std::path::PathBuf;

use clap::Args;
use tidemark::pki;

/// Make an Ed25519 report-signing key: writes STEM.key (PKCS#8 PEM, mode 0600; keep it
/// on the node or in its HSM) and STEM.pub.pem (give it to an operator to register with
/// `tidemark admin register-key`), and prints the key id.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path without extension for the two files (a directory: DIR/signing); its
    /// directory is made if missing. A profile (`--as DIR/NAME`) signs with
    /// `DIR/<state>-signing.key`: give `--out DIR/aus-signing` to make AUS's there.
    #[arg(long, value_name = "STEM|DIR", default_value = "signing")]
    out: PathBuf,
}

pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    // A directory (or a path ending in '/') gets DIR/signing.key: never a hidden file.
    let text = args.out.to_string_lossy();
    let out = if args.out.is_dir() || text.ends_with('/') {
        args.out.join("signing")
    } else {
        args.out.clone()
    };
    let stem = out.file_name().map(|n| n.to_string_lossy().into_owned());
    if stem
        .as_deref()
        .is_none_or(|n| n.is_empty() || n.starts_with('.'))
    {
        usage!(
            "--out {} would write hidden files; give a path such as keys/aus-signing",
            args.out.display()
        );
    }
    for suffix in [".key", ".pub.pem"] {
        let mut path = out.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        if path.exists() {
            anyhow::bail!("{} already exists; choose another --out", path.display());
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        tidemark::files::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the directory {}: {e}", dir.display()))?;
    }
    // New files only: of two runs on one --out at once, one writes both, the other none.
    let (key, [key_path, pub_path]) = pki::write_new_signing_key(&out).map_err(|e| match e {
        pki::PkiError::Exists(path) => {
            anyhow::anyhow!("{} already exists; choose another --out", path.display())
        }
        e => anyhow::anyhow!("{e}; nothing was written, run it again"),
    })?;
    outln!("key id {}", key.key_id())?;
    outln!("private key  {}", key_path.display())?;
    outln!("public key   {}", pub_path.display())?;
    Ok(())
}
