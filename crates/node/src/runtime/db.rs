//! The one redb open-and-error helper: create the parent directory, open (or create) the
//! database, create its tables up front (so readers never see "table does not exist"), and
//! map every redb error to [`Error::Store`] naming the file.

use crate::{Error, Result};
use redb::{Database, WriteTransaction};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The page cache each of a node's redb databases gets by default: 16 MiB (redb's own
/// default is 1 GiB per database, and a city opens eight, so its memory grew with history).
pub const DEFAULT_DB_CACHE_BYTES: usize = 16 << 20;

static DB_CACHE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_DB_CACHE_BYTES);

/// Sets the page cache of every redb database this process opens from now on (the
/// operator's `[node] db_cache_mib`). A process runs one node's configuration, so this is
/// process-wide.
pub fn set_db_cache_bytes(bytes: usize) {
    DB_CACHE_BYTES.store(bytes, Ordering::Relaxed);
}

/// The page cache each redb database opened now gets (see [`set_db_cache_bytes`]).
pub fn db_cache_bytes() -> usize {
    DB_CACHE_BYTES.load(Ordering::Relaxed)
}

/// Maps a redb error on the database at `path` to [`Error::Store`].
pub(crate) fn db_err(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::Store {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Opens (or creates) the database at `path`, then runs `init` in one write transaction
/// (open every table there) and commits it.
pub(crate) fn open_db(
    path: &Path,
    init: impl FnOnce(&WriteTransaction) -> std::result::Result<(), redb::TableError>,
) -> Result<Database> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let err = db_err(path);
    let db = Database::builder()
        .set_cache_size(db_cache_bytes())
        .create(path)
        .map_err(|e| err(e.into()))?;
    let w = db.begin_write().map_err(|e| err(e.into()))?;
    init(&w).map_err(|e| err(e.into()))?;
    w.commit().map_err(|e| err(e.into()))?;
    Ok(db)
}

/// Like [`open_db`], through [`storage::CappedFileBackend`]: the file may not grow past
/// `cap` (writes past it fail as on a full disk), and the caller can close and reopen it
/// after an I/O error.
pub(crate) fn open_db_capped(
    path: &Path,
    cap: &storage::FileCap,
    init: impl FnOnce(&WriteTransaction) -> std::result::Result<(), redb::TableError>,
) -> Result<Database> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let err = db_err(path);
    let backend =
        storage::CappedFileBackend::open(path, cap.clone()).map_err(|e| err(redb::Error::Io(e)))?;
    let db = Database::builder()
        .set_cache_size(db_cache_bytes())
        .create_with_backend(backend)
        .map_err(|e| err(e.into()))?;
    let w = db.begin_write().map_err(|e| err(e.into()))?;
    init(&w).map_err(|e| err(e.into()))?;
    w.commit().map_err(|e| err(e.into()))?;
    Ok(db)
}
