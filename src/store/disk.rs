//! The store's disk: the redb file, optionally behind a switch that makes every write,
//! resize and sync fail — the test hook for a full or failing disk (ENOSPC, EIO) at the
//! store boundary, since a test cannot fill the machine's disk.

use std::{
    fs::File,
    ops::Bound,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use redb::{BackendError, StorageBackend, backends::FileBackend};

/// A file backend whose writes fail while its switch is on.
#[derive(Debug)]
pub(super) struct SwitchableDisk {
    file: FileBackend,
    failing: Arc<AtomicBool>,
}

/// Turns the disk's failures on and off.
#[derive(Debug, Clone, Default)]
pub struct DiskFailure(Arc<AtomicBool>);

impl DiskFailure {
    /// From now on every write, resize and sync of the store fails, as on a full disk.
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The disk works again.
    pub fn stop(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl SwitchableDisk {
    pub(super) fn new(file: File, switch: &DiskFailure) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            file: FileBackend::new(file)?,
            failing: switch.0.clone(),
        })
    }

    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
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
