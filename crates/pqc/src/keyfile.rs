//! Key files: `magic ‖ version ‖ secret key ‖ public key ‖ BLAKE3 checksum`, written with
//! mode 0600 through a temporary file and an atomic rename.
//!
//! The public key is also written alone, hex-encoded, to `<path>.pub` for sharing.

use crate::{Error, Keypair, PUBLIC_KEY_LEN, Result, SECRET_KEY_LEN};
use dag_core::Signer;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CCMLDSA1";
const FILE_LEN: usize = MAGIC.len() + SECRET_KEY_LEN + PUBLIC_KEY_LEN + 32;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Keypair {
    /// Writes the key pair to `path` (mode 0600, atomically) and the public key to
    /// `<path>.pub` (hex). Parent directories are created.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut body = Vec::with_capacity(FILE_LEN);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(self.secret_bytes());
        body.extend_from_slice(self.public_key());
        let sum = blake3::hash(&body);
        body.extend_from_slice(sum.as_bytes());

        let tmp = tmp_path(path);
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io(&tmp))?;
            f.write_all(&body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        let pub_path = pub_path(path);
        std::fs::write(&pub_path, hex_encode(self.public_key())).map_err(io(&pub_path))?;
        Ok(())
    }

    /// Reads a key pair written by [`Keypair::save`], checking length, magic, checksum and
    /// that the two halves belong together.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let corrupt = |reason: String| Error::CorruptKeyFile {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() != FILE_LEN {
            return Err(corrupt(format!(
                "{} bytes, expected {FILE_LEN}",
                bytes.len()
            )));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a City Chain ML-DSA-87 key file".into()));
        }
        let (body, sum) = bytes.split_at(FILE_LEN - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        let sk = &body[MAGIC.len()..MAGIC.len() + SECRET_KEY_LEN];
        let pk = &body[MAGIC.len() + SECRET_KEY_LEN..];
        let kp = Keypair::from_bytes(pk, sk)?;
        if !kp.is_consistent() {
            return Err(Error::KeyPairMismatch {
                path: path.to_path_buf(),
            });
        }
        Ok(kp)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The path of the public-key companion file: `<path>.pub`.
fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn save_load_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let kp = Keypair::generate();
        kp.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let back = Keypair::load(&path).unwrap();
        assert_eq!(back.node_id(), kp.node_id());
        assert!(dir.path().join("keys/node.key.pub").exists());
    }

    #[test]
    fn corrupt_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        Keypair::generate().save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();

        std::fs::write(&path, &good[..100]).unwrap();
        let e = Keypair::load(&path).unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");

        let mut flipped = good.clone();
        flipped[500] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(
            matches!(Keypair::load(&path), Err(Error::CorruptKeyFile { reason, .. }) if reason.contains("checksum"))
        );

        let mut magic = good.clone();
        magic[0] = b'X';
        std::fs::write(&path, &magic).unwrap();
        assert!(matches!(
            Keypair::load(&path),
            Err(Error::CorruptKeyFile { .. })
        ));

        assert!(matches!(
            Keypair::load(&dir.path().join("missing.key")),
            Err(Error::Io { .. })
        ));
    }
}
