//! Advisory file locks for commands that must not run twice on one directory (`sync
//! --into`, `log witness`, `sample-reports --out`): an OS lock, released by the kernel if the process dies, so a
//! crash never leaves it stale.

use std::{fs, path::Path};

use anyhow::Context;

/// The lock on `path`, held for as long as the returned file is open; `None` when another
/// process holds it.
pub fn try_lock(path: &Path) -> anyhow::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
