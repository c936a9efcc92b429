//! The archive's keys: a [`pqc::Keyring`] (optionally file-backed), rotated in place (also
//! to another KEM), and the blind-index and fingerprint keys derived from its root secret.

use crate::Result;
use crate::error::keyring_err;
use dag_core::AccountId;
use parking_lot::RwLock;
use pqc::{DataKey, Kem, KeyId, Keyring, WrappedKey};
use std::path::{Path, PathBuf};

const SENDER_INDEX_CONTEXT: &str = "citychain archive sender index v1";
const FINGERPRINT_CONTEXT: &str = "citychain archive fingerprint v1";

/// The key ring an archive encrypts under, shared by reference (`Arc<ArchiveKeys>`) between
/// archives and the code that rotates keys.
///
/// [`ArchiveKeys::rotate`] makes a fresh key of the current KEM current, and
/// [`ArchiveKeys::rotate_to`] one of another KEM (NTRU or ML-KEM-1024): records written
/// afterwards are wrapped under it, records written before stay readable with the older keys,
/// which are never dropped (`RedbArchive::rewrap` moves them to the current key). A
/// file-backed ring saves itself on rotation, before the new key wraps anything.
#[derive(Debug)]
pub struct ArchiveKeys {
    ring: RwLock<Keyring>,
    path: Option<PathBuf>,
    sender_key: [u8; 32],
    fingerprint_key: [u8; 32],
}

impl ArchiveKeys {
    /// Keys held in memory only (tests, or a ring managed by the caller).
    pub fn new(ring: Keyring) -> Self {
        ArchiveKeys {
            sender_key: ring.derive_secret(SENDER_INDEX_CONTEXT),
            fingerprint_key: ring.derive_secret(FINGERPRINT_CONTEXT),
            ring: RwLock::new(ring),
            path: None,
        }
    }

    /// Loads the key ring file at `path`, or creates one (NTRU-HPS-4096-821, mode 0600)
    /// when there is none.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        let ring = Keyring::load_or_create(path, Kem::default()).map_err(keyring_err)?;
        let mut keys = ArchiveKeys::new(ring);
        keys.path = Some(path.to_path_buf());
        Ok(keys)
    }

    /// As [`ArchiveKeys::open_or_create`], with the KEM new records are wrapped with: a new
    /// ring starts with a key of `kem`; an existing ring whose current key is of another KEM
    /// gets a fresh key of `kem`, saved before use. Older records stay readable; move them
    /// with `RedbArchive::rewrap`.
    pub fn open_or_create_with(path: &Path, kem: Kem) -> Result<Self> {
        let ring = Keyring::load_or_create(path, kem).map_err(keyring_err)?;
        let mut keys = ArchiveKeys::new(ring);
        keys.path = Some(path.to_path_buf());
        if keys.current_kem() != kem {
            keys.rotate_to(kem)?;
        }
        Ok(keys)
    }

    /// Loads an existing key ring file; a missing file is an error.
    pub fn load(path: &Path) -> Result<Self> {
        let ring = Keyring::load(path).map_err(keyring_err)?;
        let mut keys = ArchiveKeys::new(ring);
        keys.path = Some(path.to_path_buf());
        Ok(keys)
    }

    /// Makes a fresh key current and returns its id. A file-backed ring is saved first; if
    /// saving fails the rotation is undone and the error returned.
    pub fn rotate(&self) -> Result<KeyId> {
        let kem = self.current_kem();
        self.rotate_to(kem)
    }

    /// Makes a fresh key of `kem` current (NTRU or ML-KEM-1024) and returns its id; saved
    /// first, like [`ArchiveKeys::rotate`].
    pub fn rotate_to(&self, kem: Kem) -> Result<KeyId> {
        let mut ring = self.ring.write();
        let mut next = ring.clone();
        let id = next.rotate_to(kem).map_err(keyring_err)?;
        if let Some(path) = &self.path {
            next.save(path).map_err(keyring_err)?;
        }
        *ring = next;
        Ok(id)
    }

    /// The id of the key that wraps new records.
    pub fn current_key_id(&self) -> KeyId {
        self.ring.read().current().key_id()
    }

    /// The KEM of the key that wraps new records.
    pub fn current_kem(&self) -> Kem {
        self.ring.read().current().kem()
    }

    /// Every key id, oldest first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.ring.read().key_ids()
    }

    /// The key ring file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn wrap_new(&self) -> pqc::KemResult<(DataKey, WrappedKey)> {
        self.ring.read().wrap_new()
    }

    pub(crate) fn unwrap(&self, wrapped: &WrappedKey) -> pqc::KemResult<DataKey> {
        self.ring.read().unwrap(wrapped)
    }

    pub(crate) fn rewrap(
        &self,
        wrapped: &WrappedKey,
    ) -> pqc::KemResult<Option<(DataKey, WrappedKey)>> {
        self.ring.read().rewrap(wrapped)
    }

    /// The blind index of a sender: keyed BLAKE3 under a secret of this ring, so the store
    /// can look records up by sender without seeing the account id.
    pub fn sender_tag(&self, sender: &AccountId) -> [u8; 32] {
        *blake3::keyed_hash(&self.sender_key, sender.as_bytes()).as_bytes()
    }

    /// The keyed fingerprint of a record's content, to tell a repeated put from a conflict
    /// without decrypting.
    pub(crate) fn fingerprint(&self, content: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.fingerprint_key, content).as_bytes()
    }
}
