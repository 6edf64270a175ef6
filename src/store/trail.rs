//! The trail journal: every audit record the store writes (each version of it, as a read
//! raises its record), appended after its commit to a file beside the access journal,
//! so that a store restored from an older backup gets back the access trail written
//! after the backup: at start the server writes each record the restored store lacks
//! again, as a new record in the store and the transparency log, and no state's access
//! list loses a read.
//!
//! One file per **fork** of the store, `audit-trail-<fork>.journal`: the fork id (16 hex
//! digits, random) is kept in the store, so its backups carry it. A store restored with
//! `tidemark restore` carries the lines its log does not reach and then starts a fork of
//! its own, so a restore drill beside the live server never writes into the live
//! server's file, and the next restore from the same backup reads the history the backup
//! was taken from. A copy made by hand that finds its journal ahead of its log, or not its
//! history, cannot tell whether it was rolled back or another copy ran ahead: it carries
//! nothing and forks too. Format (text, one line each, version 2):
//!
//! - `tidemark-audit-trail v2` — the first line;
//! - `fork <fork> from <parent fork or -> at <log size>` — the second line;
//! - `<leaf> <number> <record>` — audit record `number` (base64 of the record as stored,
//!   a `store::AuditRecord` message) as written at transparency-log leaf `leaf`;
//! - `leaves <from> <to>` — closes a commit: the record lines since the last such line
//!   are every audit record among leaves `from` to `to - 1`.
//!
//! The store is the authority: lines are written after their commit without an fsync of
//! their own, so a crash of the machine can lose the last ones. Lines after the last
//! closing line are not trusted (a commit cut short) and are cut off when the journal is
//! opened; a journal that ends before the store's log is filled back from the store.
//! Gaps in what the lines cover are found, and named in the restore's record. The lines
//! are not signed (as the access journal is not): they bring the trail back; the states'
//! witnesses' checkpoints of the rolled-back log stay the evidence of what it held.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::Engine as _;

use super::{AuditRecord, StoreError, decode, log};

/// The journal's first line.
const HEADER: &str = "tidemark-audit-trail v2";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One audit record as the journal holds it.
#[derive(Debug, Clone)]
pub(crate) struct TrailLine {
    /// The index of its transparency-log leaf.
    pub(crate) leaf: u64,
    /// Its number in the audit table.
    pub(crate) number: u64,
    /// The record as stored (encoded).
    pub(crate) record: Vec<u8>,
}

/// The journal file of fork `fork` in `dir`.
pub(crate) fn path(dir: &Path, fork: u64) -> PathBuf {
    dir.join(format!("audit-trail-{fork:016x}.journal"))
}

/// A fresh fork id.
pub(super) fn new_fork() -> Result<u64, StoreError> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| StoreError::Corrupt("the system's random source failed".to_owned()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// What a journal holds.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    /// The record lines of every closed commit, in file order.
    pub(crate) lines: Vec<TrailLine>,
    /// The leaf ranges the closed commits cover, in file order.
    pub(crate) covered: Vec<(u64, u64)>,
    /// The log size the fork began at.
    pub(crate) start: u64,
    /// Bytes up to the end of the last closed commit (what [`TrailJournal::open`] keeps).
    kept: u64,
    /// Bytes after it: a commit that did not finish (a crash), cut off when opened.
    pub(crate) cut: u64,
}

impl Trail {
    /// The end of what the lines cover (the fork's start if nothing is).
    pub(crate) fn end(&self) -> u64 {
        self.covered.iter().map(|r| r.1).max().unwrap_or(self.start)
    }

    /// The leaf ranges from `from` to [`Trail::end`] that no closed commit covers
    /// (leaves before the fork's start are not covered).
    pub(crate) fn gaps(&self, from: u64) -> Vec<(u64, u64)> {
        let mut ranges = self.covered.clone();
        ranges.sort_unstable();
        let mut gaps = Vec::new();
        let mut next = from;
        for (start, end) in ranges {
            if start > next {
                gaps.push((next, start));
            }
            next = next.max(end);
        }
        if next < self.start {
            gaps.push((next, self.start));
        }
        gaps
    }
}

/// Reads the journal at `path`; `None` if there is no file, or only the start of its
/// first two lines (a crash as it was made).
pub(crate) fn read(path: &Path) -> Result<Option<Trail>, StoreError> {
    let unreadable = |why: String| StoreError::Trail {
        path: path.display().to_string(),
        reason: format!(
            "{why}; it holds the access trail a restore needs. Move it aside to start \
             without it: the records it holds are then not written again (a restored store \
             then starts only with `tidemark serve --trust-files-lost`)"
        ),
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut trail = Trail::default();
    let mut forked = false;
    let mut pending: Vec<TrailLine> = Vec::new();
    let mut offset = 0;
    for (index, raw) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(line) = raw.strip_suffix(b"\n") else {
            // The last line, cut short by a crash: its commit is in the store.
            break;
        };
        offset += raw.len() as u64;
        let line = std::str::from_utf8(line)
            .map_err(|_| unreadable(format!("line {} is not UTF-8", index + 1)))?;
        let bad = || {
            unreadable(format!(
                "line {} is not a journal line (remove that line, or the journal): {line:.80}",
                index + 1
            ))
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let number = |i: usize| fields[i].parse::<u64>().map_err(|_| bad());
        match (index, fields.as_slice()) {
            (0, _) if line == HEADER => trail.kept = offset,
            (0, _) => return Err(unreadable(format!("its first line is not {HEADER:?}"))),
            (1, ["fork", fork, "from", _, "at", _]) => {
                let named = path.file_name().and_then(|n| {
                    n.to_str()?
                        .strip_prefix("audit-trail-")?
                        .strip_suffix(".journal")
                });
                if named.is_some_and(|named| named != *fork) {
                    return Err(unreadable(format!(
                        "its fork line names fork {fork}, not the one in its file name"
                    )));
                }
                trail.start = number(5)?;
                trail.kept = offset;
                forked = true;
            }
            (1, _) => {
                return Err(unreadable(
                    "its second line is not its fork line".to_owned(),
                ));
            }
            (_, ["leaves", _, _]) => {
                // Commits follow one another and each adds leaves: one that ends before
                // it begins, adds none, or begins inside the last is not the server's.
                let (from, to) = (number(1)?, number(2)?);
                if to <= from || trail.covered.last().is_some_and(|last| from < last.1) {
                    return Err(bad());
                }
                trail.covered.push((from, to));
                trail.lines.append(&mut pending);
                trail.kept = offset;
            }
            (_, [_, _, record]) => pending.push(TrailLine {
                leaf: number(0)?,
                number: number(1)?,
                record: B64.decode(record).map_err(|_| bad())?,
            }),
            _ => return Err(bad()),
        }
    }
    trail.cut = text.len() as u64 - trail.kept;
    Ok(forked.then_some(trail))
}

/// Where the journal stops being this store's history, for a store whose log holds
/// `size` leaves and whose entries `entry_at` gives: the leaf of the last line within the
/// log, if that line is not the log's own entry there (another copy of the store wrote
/// the journal).
pub(super) fn diverges(
    trail: &Trail,
    size: u64,
    entry_at: impl Fn(u64) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<Option<u64>, StoreError> {
    let Some(last) = trail
        .lines
        .iter()
        .filter(|l| l.leaf < size)
        .max_by_key(|l| l.leaf)
    else {
        return Ok(None);
    };
    let record: AuditRecord = decode(&last.record)?;
    let journaled = log::audit_entry(last.number, &record).encode();
    Ok((entry_at(last.leaf)?.as_deref() != Some(journaled.as_slice())).then_some(last.leaf))
}

/// The record numbers after `stored` up to the highest the journal holds that no line
/// holds (lines removed): every record the store writes is in its journal, so the
/// numbers after a store's last have no gap, as ranges `[from, to)`.
pub(super) fn missing_numbers(trail: &Trail, stored: u64) -> Vec<(u64, u64)> {
    let mut numbers: Vec<u64> = trail
        .lines
        .iter()
        .map(|l| l.number)
        .filter(|n| *n > stored)
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut missing = Vec::new();
    let mut next = stored + 1;
    for n in numbers {
        if n > next {
            missing.push((next, n));
        }
        next = n + 1;
    }
    missing
}

/// The records a store whose log holds `size` leaves lacks: the journal's lines past
/// the log, in log order.
pub(super) fn lost(trail: &Trail, size: u64) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
    let mut past: Vec<&TrailLine> = trail.lines.iter().filter(|l| l.leaf >= size).collect();
    past.sort_by_key(|l| l.leaf);
    past.into_iter()
        .map(|l| Ok((l.number, decode(&l.record)?)))
        .collect()
}

/// The journal open for appending, as the writer and the start hold it.
pub(crate) struct TrailJournal {
    path: PathBuf,
    file: std::fs::File,
    /// The end of what the journal covers: the next commit's lines start here.
    end: u64,
    /// A write failed: nothing more is appended until the next start, which cuts off
    /// what the failed write left and fills the journal back from the store.
    broken: bool,
    /// The file was there before it was opened (not made now).
    existed: bool,
}

impl TrailJournal {
    /// Opens the journal of `fork` at `path` — creating it, for a fork that began at
    /// log size `start`, with its first lines — cutting off what follows its last closed
    /// commit. The file is readable by its owner only: it names who read which reports,
    /// as the store does. `None` when another running server holds it (a copy of this
    /// store made by hand and started beside it), which then goes on without one (said
    /// once): two histories must not interleave in one journal.
    pub(crate) fn open(
        path: PathBuf,
        (fork, parent, start): (u64, Option<u64>, u64),
    ) -> Result<Option<Self>, StoreError> {
        let cannot = |e: std::io::Error| StoreError::Trail {
            path: path.display().to_string(),
            reason: format!("cannot be written: {e}"),
        };
        let existing = read(&path)?;
        // A link to nothing is refused rather than a journal begun beneath a volume
        // that is not mounted.
        crate::files::through_link(&path).map_err(cannot)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(cannot)?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            tracing::warn!(
                path = %path.display(),
                "another running server holds this store's audit trail journal (a copy of \
                 the store made by hand?): this server's audit records are not journaled, so \
                 a restore of this store would not get them back"
            );
            return Ok(None);
        }
        let end = if let Some(trail) = &existing {
            let length = file.metadata().map_err(cannot)?.len();
            if length > trail.kept {
                tracing::warn!(
                    path = %path.display(),
                    bytes = length - trail.kept,
                    "cut off the end of the audit trail journal: a commit that did not finish \
                     (a crash); what it held is filled back from the store"
                );
            }
            file.set_len(trail.kept).map_err(cannot)?;
            trail.end()
        } else {
            let parent = parent.map_or_else(|| "-".to_owned(), |p| format!("{p:016x}"));
            let first = format!("{HEADER}\nfork {fork:016x} from {parent} at {start}\n");
            file.set_len(0).map_err(cannot)?;
            file.write_all(first.as_bytes()).map_err(cannot)?;
            start
        };
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(cannot)?;
        Ok(Some(Self {
            path,
            file,
            end,
            broken: false,
            existed: existing.is_some(),
        }))
    }

    /// The end of what the journal covers.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Whether the file was there before it was opened.
    pub(crate) fn existed(&self) -> bool {
        self.existed
    }

    /// Appends one commit: its audit records, and the line closing it at log size `to`.
    /// A failure is logged, not returned: the store holds the records, and the next
    /// start fills the journal back from it.
    pub(crate) fn append(&mut self, lines: &[TrailLine], to: u64) {
        if self.broken || (lines.is_empty() && to == self.end) {
            return;
        }
        let mut text = String::new();
        for line in lines {
            let record = B64.encode(&line.record);
            let _ = writeln!(text, "{} {} {record}", line.leaf, line.number);
        }
        let _ = writeln!(text, "leaves {} {to}", self.end);
        match self.file.write_all(text.as_bytes()) {
            Ok(()) => self.end = to,
            Err(e) => {
                self.broken = true;
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "the audit trail journal could not be written: nothing more is appended \
                     to it until the server starts again, which fills it back from the store \
                     (a restore from an older backup meanwhile would not get these records \
                     back)"
                );
            }
        }
    }
}

/// Where the writer appends, once the server has opened the journal.
pub(crate) type TrailCell = std::sync::Mutex<Option<TrailJournal>>;

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{
        AuditRecord, Trail, TrailJournal, TrailLine, diverges, log, lost, missing_numbers, read,
    };

    fn line(leaf: u64, number: u64) -> TrailLine {
        TrailLine {
            leaf,
            number,
            record: vec![8, u8::try_from(number).unwrap()],
        }
    }

    /// Closed commits read back as written, with what they cover and where they leave
    /// gaps; lines after the last closing line, or cut short, are dropped and cut off on
    /// the next open; one server holds the file at a time; a file of something else is
    /// refused.
    #[test]
    fn the_journal_reads_back_its_closed_commits() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.journal");
        assert!(read(&path).unwrap().is_none());
        let fork = (7, Some(3), 2);
        let mut journal = TrailJournal::open(path.clone(), fork).unwrap().unwrap();
        assert!(
            TrailJournal::open(path.clone(), fork).unwrap().is_none(),
            "held by one server at a time"
        );
        journal.append(&[line(3, 1), line(5, 2)], 6);
        journal.append(&[], 9);
        journal.append(&[line(9, 1)], 10);
        assert_eq!(journal.end(), 10);
        drop(journal);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
        }
        let leaves = |t: &Trail| {
            t.lines
                .iter()
                .map(|l| (l.leaf, l.number))
                .collect::<Vec<_>>()
        };
        let trail = read(&path).unwrap().unwrap();
        assert_eq!(leaves(&trail), [(3, 1), (5, 2), (9, 1)]);
        assert_eq!((trail.start, trail.end()), (2, 10));
        assert!(trail.gaps(2).is_empty());
        assert_eq!(trail.gaps(0), [(0, 2)]);
        // A commit cut short (its closing line never written), then a torn line.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"11 4 CAQ=\n12 5 CA");
        std::fs::write(&path, &bytes).unwrap();
        let torn = read(&path).unwrap().unwrap();
        assert_eq!(leaves(&torn).len(), 3);
        assert_eq!(torn.cut, 17, "the unfinished commit's bytes");
        let mut journal = TrailJournal::open(path.clone(), fork).unwrap().unwrap();
        journal.append(&[line(12, 5)], 13);
        drop(journal);
        let trail = read(&path).unwrap().unwrap();
        assert_eq!(leaves(&trail), [(3, 1), (5, 2), (9, 1), (12, 5)]);
        assert!(trail.gaps(2).is_empty());
        // Lines lost from the middle leave a gap.
        let text = std::fs::read_to_string(&path).unwrap();
        let cut: Vec<&str> = text.lines().filter(|l| *l != "leaves 6 9").collect();
        std::fs::write(&path, cut.join("\n") + "\n").unwrap();
        assert_eq!(read(&path).unwrap().unwrap().gaps(2), [(6, 9)]);
        std::fs::write(&path, "something else\n").unwrap();
        assert!(read(&path).is_err());
        // A commit that ends before it begins, adds no leaf, or begins inside the last
        // is not a journal line.
        let first_two: Vec<&str> = text.lines().take(2).collect();
        for commits in ["leaves 9 8", "leaves 9 9", "leaves 2 6\nleaves 5 7"] {
            std::fs::write(&path, first_two.join("\n") + "\n" + commits + "\n").unwrap();
            let refused = read(&path).unwrap_err().to_string();
            assert!(
                refused.contains("is not a journal line"),
                "{commits}: {refused}"
            );
        }
        // Empty, or cut inside its first two lines: as if never made.
        std::fs::write(&path, "").unwrap();
        assert!(read(&path).unwrap().is_none());
        std::fs::write(&path, "tidemark-audit-trail v2\n").unwrap();
        assert!(read(&path).unwrap().is_none());
    }

    /// What the log does not reach is written again, in log order; nothing at all when
    /// the last line it does reach is not the log's own entry there (another history).
    #[test]
    fn only_lines_past_the_log_are_lost_and_only_from_this_logs_history() {
        let record = |principal: &str| AuditRecord {
            principal: principal.to_owned(),
            ..AuditRecord::default()
        };
        let at = |leaf, number, principal: &str| TrailLine {
            leaf,
            number,
            record: record(principal).encode_to_vec(),
        };
        let trail = Trail {
            lines: vec![at(2, 1, "a"), at(9, 3, "c"), at(4, 2, "b")],
            covered: vec![(0, 10)],
            ..Trail::default()
        };
        let entry = log::audit_entry(1, &record("a")).encode();
        let ours = |leaf: u64| Ok((leaf == 2).then(|| entry.clone()));
        let found = lost(&trail, 4).unwrap();
        let found: Vec<(u64, String)> = found.into_iter().map(|(n, r)| (n, r.principal)).collect();
        assert_eq!(found, [(2, "b".to_owned()), (3, "c".to_owned())]);
        assert!(lost(&trail, 10).unwrap().is_empty());
        assert_eq!(diverges(&trail, 4, ours).unwrap(), None);
        let theirs = |_: u64| Ok(Some(b"another entry".to_vec()));
        assert_eq!(diverges(&trail, 4, theirs).unwrap(), Some(2));
        assert_eq!(
            diverges(&trail, 1, theirs).unwrap(),
            None,
            "no line within the log"
        );
        // Every record the store writes is in the journal: a number skipped after the
        // store's last was removed.
        assert!(missing_numbers(&trail, 0).is_empty());
        let removed = Trail {
            lines: vec![at(2, 1, "a"), at(9, 4, "c"), at(4, 2, "b"), at(11, 7, "d")],
            ..Trail::default()
        };
        assert_eq!(missing_numbers(&removed, 1), [(3, 4), (5, 7)]);
        assert!(missing_numbers(&removed, 7).is_empty());
    }

    proptest::proptest! {
        /// Whatever length a crash leaves the file at, it reads back as exactly the
        /// commits whose closing line is whole, covering the leaves from the fork's start
        /// to the last of them without a gap; the next open cuts off the rest and appends
        /// after it, and the commits then read back in order.
        #[test]
        fn a_journal_cut_anywhere_reads_back_its_whole_commits(
            commits in proptest::collection::vec(proptest::collection::vec(0u64..4, 0..4), 1..12),
            cut in 0.0f64..1.0,
        ) {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("t.journal");
            let fork = (1, None, 5);
            let mut journal = TrailJournal::open(path.clone(), fork).unwrap().unwrap();
            // Each commit: its records (numbered by their leaf), then its closing line.
            let mut written = Vec::new();
            let mut leaf = 5;
            for records in &commits {
                let lines: Vec<TrailLine> = records
                    .iter()
                    .map(|gap| {
                        leaf += gap + 1;
                        line(leaf, leaf % 200)
                    })
                    .collect();
                leaf += 1;
                journal.append(&lines, leaf);
                written.push((lines, leaf, std::fs::metadata(&path).unwrap().len()));
            }
            drop(journal);
            let len = std::fs::metadata(&path).unwrap().len();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let cut_at = (len as f64 * cut) as u64;
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..usize::try_from(cut_at).unwrap()]).unwrap();
            let whole: Vec<&(Vec<TrailLine>, u64, u64)> =
                written.iter().filter(|c| c.2 <= cut_at).collect();
            let first_two = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
            match read(&path).unwrap() {
                // Cut inside the first two lines: as if never made.
                None => proptest::prop_assert!(cut_at < first_two as u64),
                Some(trail) => {
                    let want: Vec<u64> =
                        whole.iter().flat_map(|c| c.0.iter().map(|l| l.leaf)).collect();
                    let got: Vec<u64> = trail.lines.iter().map(|l| l.leaf).collect();
                    proptest::prop_assert_eq!(got, want);
                    proptest::prop_assert_eq!(trail.end(), whole.last().map_or(5, |c| c.1));
                    proptest::prop_assert!(trail.gaps(5).is_empty());
                    let mut journal = TrailJournal::open(path.clone(), fork).unwrap().unwrap();
                    journal.append(&[line(1_000, 7)], 1_001);
                    drop(journal);
                    let again = read(&path).unwrap().unwrap();
                    proptest::prop_assert_eq!(again.lines.len(), trail.lines.len() + 1);
                    proptest::prop_assert_eq!(again.end(), 1_001);
                }
            }
        }
    }
}
