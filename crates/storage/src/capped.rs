//! Disk-space plumbing shared by every redb store: [`CappedFileBackend`], a redb file backend
//! whose file may not grow past a [`FileCap`] (it answers `StorageFull`, the kind ENOSPC
//! maps to, exactly as a full disk would), and [`disk_free_bytes`] (statvfs).
//!
//! The cap is a real limit on a real file: redb sees the same I/O error it sees when the
//! disk fills, so the poison-and-reopen path is exercised without a tmpfs. Operators use it
//! as a hard size limit on a store file; tests lower and raise it to fill and free "the disk".

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared, changeable limit on a store file's length in bytes (`u64::MAX` = none).
#[derive(Debug, Clone)]
pub struct FileCap(Arc<AtomicU64>);

impl FileCap {
    /// A cap of `bytes`.
    pub fn new(bytes: u64) -> Self {
        FileCap(Arc::new(AtomicU64::new(bytes)))
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// The current limit.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Changes the limit (takes effect on the next write).
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }
}

impl Default for FileCap {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// redb's [`FileBackend`] with a [`FileCap`]: growing the file past the cap fails with
/// [`io::ErrorKind::StorageFull`] and changes nothing.
#[derive(Debug)]
pub struct CappedFileBackend {
    inner: FileBackend,
    cap: FileCap,
}

impl CappedFileBackend {
    /// Opens (or creates) the file at `path` under `cap`.
    pub fn open(path: &Path, cap: FileCap) -> io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(CappedFileBackend { inner, cap })
    }

    fn check(&self, end: u64) -> io::Result<()> {
        let cap = self.cap.get();
        if end > cap {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("no space left: the store file may not grow to {end} bytes (limit {cap})"),
            ));
        }
        Ok(())
    }
}

impl StorageBackend for CappedFileBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? {
            self.check(len)?;
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset.saturating_add(data.len() as u64))?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Bytes available to an unprivileged writer on the file system holding `path` (statvfs
/// `f_bavail × f_frsize`); `path` may be a file or a directory.
pub fn disk_free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Room a failed store wants before it is reopened: 1 MiB of growth under its cap and on
/// the disk. Reopening into a disk that is still full would only fail the next write.
pub const REOPEN_HEADROOM: u64 = 1 << 20;

/// Why a failed store at `path` should not be reopened yet (`None`: there is room): its
/// file is within [`REOPEN_HEADROOM`] of `cap`, or the disk has less than that free.
pub fn no_room_to_reopen(path: &Path, cap: &FileCap) -> Option<String> {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let limit = cap.get();
    if limit != u64::MAX && limit.saturating_sub(len) < REOPEN_HEADROOM {
        return Some(format!("the file is {len} bytes of its {limit}-byte limit"));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match disk_free_bytes(dir) {
        Ok(free) if free < REOPEN_HEADROOM => Some(format!("{free} bytes free on the disk")),
        _ => None,
    }
}

/// True if a redb error means the storage itself failed (ENOSPC, EIO …) or an earlier
/// failure poisoned the database: it must be closed and reopened before it works again.
pub fn is_io_failure(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");

    fn put(db: &redb::Database, i: u64, data: &[u8]) -> Result<(), redb::Error> {
        let w = db.begin_write()?;
        w.open_table(T)?.insert(i, data)?;
        w.commit()?;
        Ok(())
    }

    fn open(path: &Path, cap: &FileCap) -> redb::Database {
        redb::Database::builder()
            .create_with_backend(CappedFileBackend::open(path, cap.clone()).unwrap())
            .unwrap()
    }

    #[test]
    fn the_cap_fails_growth_like_a_full_disk_and_frees_when_raised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let cap = FileCap::new(1 << 20);
        let db = open(&path, &cap);
        let big = vec![7u8; 256 << 10];
        let e = (0..16u64)
            .find_map(|i| put(&db, i, &big).err())
            .expect("a 1 MiB cap must fill");
        assert!(is_io_failure(&e), "{e}");
        // Poisoned until reopened, even with room again.
        cap.set(u64::MAX);
        let again = put(&db, 99, &[1]).unwrap_err();
        assert!(is_io_failure(&again), "{again}");
        drop(db);
        let db = open(&path, &cap);
        put(&db, 99, &[1]).unwrap();
    }

    #[test]
    fn statvfs_reports_free_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_free_bytes(dir.path()).unwrap() > 0);
    }
}
