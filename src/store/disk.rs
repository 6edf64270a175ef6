//! The store's disk: the redb file, optionally behind a switch that makes every write,
//! resize and sync fail — the test hook for a full or failing disk (ENOSPC, EIO) at the
//! store boundary, since a test cannot fill the machine's disk.

use std::{
    fs::File,
    ops::Bound,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use redb::{BackendError, StorageBackend, backends::FileBackend};

/// A file backend whose writes fail while its switch is on.
#[derive(Debug)]
pub(super) struct SwitchableDisk {
    file: FileBackend,
    switch: DiskFailure,
}

/// Turns the disk's failures on and off.
#[derive(Debug, Clone)]
pub struct DiskFailure {
    failing: Arc<AtomicBool>,
    /// Syncs that still succeed before the disk fails; [`NOT_ARMED`] for no limit.
    syncs_left: Arc<AtomicU64>,
}

/// [`DiskFailure::syncs_left`] when no failure is armed.
const NOT_ARMED: u64 = u64::MAX;

impl Default for DiskFailure {
    fn default() -> Self {
        Self {
            failing: Arc::default(),
            syncs_left: Arc::new(AtomicU64::new(NOT_ARMED)),
        }
    }
}

impl DiskFailure {
    /// From now on every write, resize and sync of the store fails, as on a full disk.
    pub fn start(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// The next `syncs` syncs of the store succeed; from the one after, every write,
    /// resize and sync fails: a disk that fails part-way through a commit.
    pub fn start_after_syncs(&self, syncs: u64) {
        self.syncs_left.store(syncs, Ordering::SeqCst);
    }

    /// The disk works again.
    pub fn stop(&self) {
        self.syncs_left.store(NOT_ARMED, Ordering::SeqCst);
        self.failing.store(false, Ordering::SeqCst);
    }

    /// Counts a sync down, and starts the failure if none is left.
    fn count_sync(&self) {
        let counted = self
            .syncs_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                NOT_ARMED | 0 => None,
                left => Some(left - 1),
            });
        if counted == Err(0) {
            self.start();
        }
    }
}

impl SwitchableDisk {
    pub(super) fn new(file: File, switch: &DiskFailure) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            file: FileBackend::new(file)?,
            switch: switch.clone(),
        })
    }

    fn check(&self) -> std::io::Result<()> {
        if self.switch.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (injected by DiskFailure)",
            ))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for SwitchableDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.switch.count_sync();
        self.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}
