//! `tidemark admin backup` (an online copy of a running server's store, with its
//! manifest) and `tidemark restore` (the checks, then the store in a data directory).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use tidemark::{
    RestoreMark, Store,
    clock::format_time,
    config::StoreConfig,
    file_sha256, file_sha256_with,
    pb::{self, admin_client::AdminClient},
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// The manifest written beside a backup file `FILE`: `FILE.manifest.json`.
fn manifest_path(file: &Path) -> PathBuf {
    suffixed(file, ".manifest.json")
}

/// `file` with `suffix` after its whole name (`b.redb` → `b.redb.partial`).
fn suffixed(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `partial`, the file a backup to `out` is received in, readable by its owner
/// only; refused if it exists.
async fn create_partial(partial: &Path, out: &Path) -> anyhow::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(partial).await {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists: another backup to {} is being written (or one was killed): wait for \
             it, or remove the file if none is running",
            partial.display(),
            out.display()
        ),
        Err(e) => Err(tidemark::files::no_directory(out, e))
            .with_context(|| format!("cannot write {}", out.display())),
    }
}

/// Holds `dir` for one restore while the returned handle is open; refused while another
/// restore holds it.
fn lock_directory(dir: &Path) -> anyhow::Result<std::fs::File> {
    let handle =
        std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `tidemark restore` into {} is running: wait for it to finish",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", dir.display()))
        }
    }
}

/// Moves `from` to `to`, never over a file (a hard link, then `from` removed).
fn place(from: &Path, to: &Path) -> anyhow::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => {
            std::fs::remove_file(from).with_context(|| format!("cannot remove {}", from.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} appeared while this backup was taken (another backup to the same name?): it \
             was kept, and this backup was not written; take it again under a new name",
            to.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", to.display())),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C, SIGTERM, SIGHUP), listening from
/// when it is called, not from when it is first awaited.
fn stop_requested() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| signal(kind).context("cannot listen for signals");
        let mut interrupt = listen(SignalKind::interrupt())?;
        let mut terminate = listen(SignalKind::terminate())?;
        let mut hangup = listen(SignalKind::hangup())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Asks the server for a backup and receives its data into `file`; returns its manifest.
async fn fetch(
    admin: &mut AdminClient<Channel>,
    file: &mut tokio::fs::File,
    partial: &Path,
) -> anyhow::Result<pb::BackupManifest> {
    let mut stream = admin
        .backup(pb::BackupRequest {})
        .await
        .map_err(|s| anyhow!(tidemark::client::explain(&s)))?
        .into_inner();
    let manifest = match stream.next().await {
        Some(Ok(pb::BackupChunk {
            part: Some(pb::backup_chunk::Part::Manifest(m)),
        })) => m,
        Some(Err(s)) => bail!(
            "the backup stopped before it was complete ({}): take it again",
            tidemark::client::explain(&s)
        ),
        _ => bail!("the server's backup did not start with its manifest"),
    };
    receive(&mut stream, file, partial, manifest.bytes).await?;
    Ok(manifest)
}

/// Receives the backup's data into `file`.
async fn receive(
    stream: &mut tonic::Streaming<pb::BackupChunk>,
    file: &mut tokio::fs::File,
    partial: &Path,
    total: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let progress = super::progress::bytes(total, "backup");
    while let Some(chunk) = stream.next().await {
        match chunk
            .map_err(|s| anyhow!(tidemark::client::explain(&s)))?
            .part
        {
            Some(pb::backup_chunk::Part::Data(data)) => {
                file.write_all(&data)
                    .await
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                progress.inc(data.len() as u64);
            }
            _ => bail!("the server's backup sent a second manifest"),
        }
    }
    progress.finish_and_clear();
    file.sync_all()
        .await
        .with_context(|| format!("cannot write {}", partial.display()))
}

/// Streams a backup into `out` (through a temporary file, renamed when its SHA-256
/// matches the manifest) and writes the manifest beside it.
pub async fn backup(admin: &mut AdminClient<Channel>, out: &Path) -> anyhow::Result<()> {
    for path in [out.to_owned(), manifest_path(out)] {
        if path.exists() || path.is_symlink() {
            bail!(
                "{} exists: a backup never replaces a file; choose a new name",
                path.display()
            );
        }
    }
    // The copy holds the store's secrets: readable by its owner only from its first byte,
    // and removed if the backup does not complete (an error, Ctrl-C, SIGTERM, SIGHUP:
    // listened for before the file exists). It is made before the server is asked, so
    // that a name that cannot be written is said at once — not after the server has
    // copied its store, and put the copy on every state's access list.
    let stop = stop_requested()?;
    let partial = suffixed(out, ".partial");
    let mut file = create_partial(&partial, out).await?;
    let received = tokio::select! {
        received = fetch(admin, &mut file, &partial) => received,
        () = stop => Err(anyhow!("interrupted")),
    };
    drop(file);
    let manifest = match received {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "the backup was not completed; nothing was written to {}",
                out.display()
            )));
        }
    };
    Store::owner_only(&partial).map_err(|e| anyhow!("{e}"))?;
    let (bytes, sha256) =
        file_sha256(&partial).with_context(|| format!("cannot read {}", partial.display()))?;
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the backup arrived damaged ({bytes} bytes, sha256 {sha256}; the manifest says \
             {} bytes, {}); take it again",
            manifest.bytes,
            manifest.sha256
        );
    }
    // The manifest first, so that a backup file never stands without its own manifest;
    // neither over a file (another backup to the same name may have finished meanwhile).
    let manifest_file = manifest_path(out);
    let manifest_partial = suffixed(&manifest_file, ".partial");
    let placed = std::fs::write(
        &manifest_partial,
        // 64-bit counts as JSON numbers, so that `jq '.envelopes > 1000'` compares them.
        serde_json::to_string_pretty(&super::json::value(&manifest, "tidemark.v1.BackupManifest"))?
            + "\n",
    )
    .with_context(|| format!("cannot write {}", manifest_partial.display()))
    .and_then(|()| place(&manifest_partial, &manifest_file))
    .and_then(|()| {
        place(&partial, out).inspect_err(|_| {
            let _ = std::fs::remove_file(&manifest_file);
        })
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&manifest_partial);
        return Err(e);
    }
    outln!(
        "backup of {} envelopes (last sequence {}), {} audit records, log of {} leaves, \
         taken at {}: {} ({} bytes, sha256 {}) and {}",
        manifest.envelopes,
        manifest.last_sequence,
        manifest.audit_records,
        manifest.log_size,
        format_time(manifest.taken_at_unix),
        out.display(),
        manifest.bytes,
        manifest.sha256,
        manifest_path(out).display()
    )?;
    Ok(())
}

/// Checks a backup (its manifest, SHA-256, redb's integrity check, gap-free sequence
/// numbers) and installs it as the store of a data directory.
///
/// Stop the server first (a store a running server holds is refused). The first server
/// to start on the restored store records the restore in the transparency log and
/// carries in the certificate revocations, suspensions and signing-key revocations made
/// after the backup, from the CRL file and access-journal.json beside it: keep both as
/// the last server wrote them (if they are lost, `tidemark serve --trust-files-lost`
/// starts anyway, and those changes must be made again). The audit records written
/// after the backup (every read, refusal and action since) are written again from the
/// trail journal beside them (audit-trail-<fork>.journal; the backup names its fork):
/// keep it with them. States'
/// witnesses will report the log's rollback: tell the states.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file `tidemark admin backup --out` wrote (its FILE.manifest.json must
    /// be beside it), or that manifest.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory to restore into (what `tidemark serve --data` is given).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Restore into a directory that is not empty, replacing the store it holds.
    #[arg(long)]
    force: bool,
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let file = backup_file(&args.file)?;
    if file != args.file {
        return restore(&RestoreArgs {
            file,
            ..args.clone()
        });
    }
    tidemark::files::refuse_special(&args.file)
        .with_context(|| format!("{} is not a backup file", args.file.display()))?;
    let manifest_file = manifest_path(&args.file);
    let manifest = read_manifest(&manifest_file)?;
    let progress = super::progress::bytes(manifest.bytes, "checked");
    let (bytes, sha256) = file_sha256_with(&args.file, |n| progress.inc(n))
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    progress.finish_and_clear();
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        bail!(
            "{} is not the file its manifest describes ({bytes} bytes, sha256 {sha256}; the \
             manifest says {} bytes, {}): it was changed or cut short",
            args.file.display(),
            manifest.bytes,
            manifest.sha256
        );
    }
    let target = StoreConfig::in_dir(&args.data).path;
    not_a_link(&target)?;
    let staged = target.with_extension("restoring");
    let occupied = std::fs::read_dir(&args.data).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !args.force {
        let holds = if target.exists() {
            format!(" (it holds a store, {})", target.display())
        } else if staged.exists() {
            // Not removed here: it may be another restore's, still running.
            format!(
                " (it holds {}, a restore's copy: left by one that did not finish — remove \
                 it — or another restore into it is running)",
                staged.display()
            )
        } else {
            String::new()
        };
        bail!(
            "{} is not empty{holds}; restoring would replace its store: choose an empty \
             directory, or pass --force (stop its server first)",
            args.data.display(),
        );
    }
    if target.exists() {
        Store::ensure_not_open(&target).map_err(|e| anyhow!("{e}"))?;
    }
    // The directories this restore makes, deepest first.
    let created: Vec<&Path> = args
        .data
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    tidemark::files::create_dir_all(&args.data)
        .with_context(|| format!("cannot create the directory {}", args.data.display()))?;
    // One restore into a directory at a time: an OS lock on the directory itself
    // (released if the process dies), taken before anything is written into it.
    let _restoring = lock_directory(&args.data)?;
    // A refused backup leaves nothing behind: not its copy, nor a directory made for it.
    let abandon = || {
        let _ = std::fs::remove_file(&staged);
        for dir in &created {
            let _ = std::fs::remove_dir(dir);
        }
    };
    let staged_ok = std::fs::copy(&args.file, &staged)
        .with_context(|| format!("cannot write {}", staged.display()))
        .and_then(|_| Store::owner_only(&staged).map_err(|e| anyhow!("{e}")));
    if let Err(e) = staged_ok {
        abandon();
        return Err(e);
    }
    let contents = match Store::check_file(&staged) {
        Ok(contents) => contents,
        Err(e) => {
            abandon();
            bail!("{} failed its checks: {e}", args.file.display());
        }
    };
    if let Err(differs) = same_as_manifest(&contents, &manifest) {
        abandon();
        bail!(
            "{} is not what its manifest describes: {differs}",
            args.file.display()
        );
    }
    // The first server to start on it records the restore in the log.
    let marked = Store::mark_restored(
        &staged,
        RestoreMark {
            taken_at: manifest.taken_at_unix,
            log_size: contents.log_size,
        },
    );
    if let Err(e) = marked {
        abandon();
        bail!("cannot mark {} as restored: {e}", staged.display());
    }
    std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    say_restored(&contents, &manifest, (&target, &args.data))
}

/// Refuses a store path that is a symbolic link: renamed over, the link would become a
/// file here, and the store it names on another volume would stay as it was.
fn not_a_link(target: &Path) -> anyhow::Result<()> {
    if target.is_symlink() {
        let to = std::fs::read_link(target).unwrap_or_default();
        bail!(
            "{} is a symbolic link to {}: a restore would replace the link, not the store it \
             names; restore into the directory the store is in (--data), and link to it again",
            target.display(),
            to.display()
        );
    }
    Ok(())
}

/// The backup file `named` is, or names: a manifest (`FILE.manifest.json`) names the
/// file beside it, which must be there.
fn backup_file(named: &Path) -> anyhow::Result<PathBuf> {
    let Some(backup) = named
        .to_str()
        .and_then(|name| name.strip_suffix(".manifest.json"))
        .map(PathBuf::from)
    else {
        return Ok(named.to_owned());
    };
    if backup.is_file() {
        return Ok(backup);
    }
    if named.is_file() {
        bail!(
            "{} is a backup's manifest, and the backup it describes, {}, is missing: `tidemark \
             admin backup --out FILE` writes FILE and FILE.manifest.json side by side; put the \
             backup file back beside its manifest",
            named.display(),
            backup.display()
        );
    }
    Ok(named.to_owned())
}

/// How far a manifest's time may stray from what the backup holds and from now: a few
/// seconds' copy after the time is taken, and a clock stepped back a little.
const SLACK_SECS: i64 = 300;

/// A backup's manifest, read as the proto3 JSON mapping reads it, in the one spelling of
/// each number and of its SHA-256.
fn read_manifest(manifest_file: &Path) -> anyhow::Result<pb::BackupManifest> {
    let manifest: pb::BackupManifest =
        super::input::from_json(&super::input::read_text(manifest_file).with_context(|| {
            format!(
                "cannot read the backup's manifest {} (it is written beside the backup)",
                manifest_file.display()
            )
        })?)
        .map_err(|e| anyhow!("{} is not a backup manifest: {e}", manifest_file.display()))?;
    let hex64 =
        |t: &str| t.len() == 64 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex64(&manifest.sha256) {
        bail!(
            "{}: sha256 {:?} is not 64 lower-case hex digits, as backup writes it: the manifest \
             was edited; put back the one written beside the backup",
            manifest_file.display(),
            manifest.sha256
        );
    }
    Ok(manifest)
}

/// What a restore did, and what the operator must do before serving the store.
fn say_restored(
    contents: &tidemark::BackupContents,
    manifest: &pb::BackupManifest,
    (target, data): (&Path, &Path),
) -> anyhow::Result<()> {
    outln!(
        "restored {} envelopes (sequence 1..={}), {} audit records and a log of {} leaves, \
         as of {}, into {}; start it with: tidemark serve --data {} (with your --config, \
         its store.path set to {})",
        contents.envelopes,
        contents.last_sequence,
        contents.audit_records,
        contents.log_size,
        format_time(manifest.taken_at_unix),
        target.display(),
        data.display(),
        target.display(),
    )?;
    eprintln!(
        "note: a store restored from a backup is the exchange as of {}: before you serve it,\n\
         - keep the CRL file (certs/crl.pem, [tls] crl), and access-journal.json and the \
           audit-trail-*.journal files beside it, as the server last wrote them: at start it \
           carries the certificate revocations, suspensions and signing-key revocations, and \
           the audit records, made since into the store;\n\
         - tell the states: the log is rolled back to {} leaves, so their witnesses will \
           report a rollback, and the first server to start records the restore in the log.",
        format_time(manifest.taken_at_unix),
        contents.log_size,
    );
    Ok(())
}

/// Whether a checked store holds what its manifest says; if not, what differs.
fn same_as_manifest(
    contents: &tidemark::BackupContents,
    manifest: &pb::BackupManifest,
) -> Result<(), String> {
    let held = (
        contents.envelopes,
        contents.last_sequence,
        contents.audit_records,
        contents.log_size,
    );
    let said = (
        manifest.envelopes,
        manifest.last_sequence,
        manifest.audit_records,
        manifest.log_size,
    );
    if held != said {
        return Err(format!(
            "it holds {} envelopes (last sequence {}), {} audit records and a log of {} \
             leaves; the manifest says {}, {}, {} and {}",
            held.0, held.1, held.2, held.3, said.0, said.1, said.2, said.3
        ));
    }
    if contents.checkpoint != manifest.checkpoint {
        return Err("its log's checkpoint is not the manifest's".to_owned());
    }
    // The time goes into the log with the restore: a backup is taken after its newest
    // record, by the server's clock.
    if manifest.taken_at_unix.saturating_add(SLACK_SECS) < contents.newest_record_at {
        return Err(format!(
            "the manifest says it was taken at {}, but it holds a record made at {}, later: \
             the manifest's takenAtUnix was edited",
            format_time(manifest.taken_at_unix),
            format_time(contents.newest_record_at)
        ));
    }
    let now = tidemark::clock::Clock::system().now();
    if manifest.taken_at_unix > now.saturating_add(SLACK_SECS) {
        return Err(format!(
            "the manifest says it was taken at {}, which is later than now ({}): the \
             manifest's takenAtUnix was edited, or this machine's clock is wrong",
            format_time(manifest.taken_at_unix),
            format_time(now)
        ));
    }
    Ok(())
}
