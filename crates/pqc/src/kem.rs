//! KEM key wrapping: random 32-byte data keys sealed for a KEM public key
//! (KEM → HKDF-SHA256 → XChaCha20-Poly1305), key ids, and a [`Keyring`] with rotation and
//! re-wrapping from one KEM to another.
//!
//! # KEMs
//!
//! [`Kem`] names the mechanism: NTRU ([`Kem::Ntru`], pqcrypto-ntru; NTRU-HPS-4096-821 by
//! default, the design's choice) or ML-KEM-1024 ([`Kem::MlKem1024`], FIPS 203, aws-lc-rs).
//! Every wrapped key and every key in a key ring file carries the KEM's byte (`alg`: 1–4 the
//! NTRU sets, 5 ML-KEM-1024), so records wrapped before ML-KEM existed decode unchanged and
//! a ring may hold keys of both.
//!
//! # Scheme
//!
//! To wrap a [`DataKey`] for a KEM public key `pk` (key id `kid`):
//!
//! 1. `(ss, ct) = KEM.Encaps(pk)`.
//! 2. `kek = HKDF-SHA256(salt = "citychain/kem-wrap/v1", ikm = ss, info = alg ‖ kid ‖ BLAKE3(ct))`.
//! 3. `sealed = XChaCha20-Poly1305(kek, nonce = 24 random bytes, aad = header, data key)`, where
//!    the header is `version ‖ alg ‖ kid ‖ ct`.
//!
//! The [`WrappedKey`] is `version ‖ alg ‖ kid ‖ ct ‖ nonce ‖ sealed`. Both KEMs decapsulate
//! with implicit rejection (a bad ciphertext yields an unrelated secret), so any change to any byte
//! of a wrapped key, or unwrapping with another secret key, ends in an AEAD failure: a typed
//! [`KemError::UnwrapFailed`], never a wrong key.
//!
//! A key id is `BLAKE3-derive-key("citychain kem key id v1", alg ‖ public key)`: 32 bytes.
//!
//! # Keyring and rotation
//!
//! A [`Keyring`] holds every KEM key pair ever used, oldest first; the newest is *current*
//! and wraps new data keys ([`Keyring::wrap_new`]), while [`Keyring::unwrap`] finds the key
//! named in the wrapped key, so records written before a [`Keyring::rotate`] stay readable.
//! Keys are never dropped from a ring. [`Keyring::rotate_to`] makes a key of another KEM
//! current; [`Keyring::rewrap`] then re-wraps an existing data key under it (the data key
//! itself, and so everything sealed under it, is unchanged). A caller that stores wrapped keys
//! saves the ring with its new key first, then replaces each stored wrapped key atomically:
//! every record is readable at every moment, before and after its replacement. A ring also holds a 32-byte root secret, never
//! rotated, from which callers derive stable secrets ([`Keyring::derive_secret`]) such as
//! blind-index keys. Key ring files are written with mode 0600 through an atomic rename and
//! checked with a BLAKE3 checksum.
//!
//! ```
//! use pqc::{DataKey, Keyring, NtruParams};
//!
//! let mut ring = Keyring::generate(NtruParams::default()).unwrap();
//! let (dk, wrapped) = ring.wrap_new().unwrap();
//! let sealed = dk.seal(b"aad", b"secret amount").unwrap();
//!
//! ring.rotate().unwrap(); // new data goes under a new key...
//! let back = ring.unwrap(&pqc::WrappedKey::decode(&wrapped.encode()).unwrap()).unwrap();
//! assert_eq!(back.open(b"aad", &sealed).unwrap(), b"secret amount"); // ...old data still reads
//! ```

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_1024};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use pqcrypto_ntru::{ntruhps2048509, ntruhps2048677, ntruhps4096821, ntruhrss701};
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};
use rand::TryRngCore;
use sha2::Sha256;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// Length of a data key: 32 bytes.
pub const DATA_KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce: 24 bytes.
const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag: 16 bytes.
const TAG_LEN: usize = 16;
/// Overhead of [`DataKey::seal`]: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const WRAP_VERSION: u8 = 1;
const HKDF_SALT: &[u8] = b"citychain/kem-wrap/v1";
const KEY_ID_CONTEXT: &str = "citychain kem key id v1";
const KEYRING_MAGIC: &[u8; 8] = b"CCKRING1";
const SEALED_KEY_LEN: usize = DATA_KEY_LEN + TAG_LEN;

/// Errors of KEM key wrapping, data-key encryption and key rings.
#[derive(Debug, Error)]
pub enum KemError {
    /// A key or ciphertext had the wrong length.
    #[error("{what} has {got} bytes, expected {expected}")]
    BadLength {
        /// Which value.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// A KEM byte we do not know (neither an NTRU parameter set nor ML-KEM-1024).
    #[error("unknown KEM algorithm {0}")]
    UnknownParams(u8),
    /// The KEM implementation failed (aws-lc reported an internal error).
    #[error("{kem} {op} failed")]
    Kem {
        /// The KEM.
        kem: Kem,
        /// The operation: key generation, encapsulation or decapsulation.
        op: &'static str,
    },
    /// Encoded bytes are not a well-formed value.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it is malformed.
        reason: String,
    },
    /// No key in the ring has this id.
    #[error("no key with id {0} in the key ring")]
    UnknownKeyId(KeyId),
    /// The wrapped key names another KEM key than the one given to unwrap it.
    #[error("wrapped for key {wrapped_for}, but unwrap was given key {given}")]
    KeyMismatch {
        /// Key id in the wrapped key.
        wrapped_for: KeyId,
        /// Key id of the key pair given.
        given: KeyId,
    },
    /// Authentication of a wrapped key failed: it was tampered with, or the key pair's secret
    /// does not belong to its key id.
    #[error("wrapped data key for key {key_id} failed authentication (tampered or wrong key)")]
    UnwrapFailed {
        /// Key id the wrapped key names.
        key_id: KeyId,
    },
    /// Authentication of sealed data failed: tampered, or sealed under another data key or
    /// another associated data.
    #[error("sealed data failed authentication (tampered, wrong key or wrong context)")]
    DecryptFailed,
    /// Encryption failed (only for inputs beyond the AEAD's limits).
    #[error("encryption failed: {0}")]
    EncryptFailed(String),
    /// The operating system's random number generator failed.
    #[error("operating system randomness unavailable: {0}")]
    Random(String),
    /// A key ring file could not be read or written.
    #[error("key ring file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key ring file is damaged or not a key ring file.
    #[error("key ring file {path} is corrupt: {reason}")]
    CorruptKeyring {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result with [`KemError`].
pub type KemResult<T> = std::result::Result<T, KemError>;

fn random_bytes<const N: usize>() -> KemResult<[u8; N]> {
    let mut out = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut out)
        .map_err(|e| KemError::Random(e.to_string()))?;
    Ok(out)
}

/// An NTRU parameter set (NIST round 3). The default, [`NtruParams::Hps4096821`], is the
/// category-5 HPS set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum NtruParams {
    /// ntruhps2048509 (category 1).
    Hps2048509 = 1,
    /// ntruhps2048677 (category 3).
    Hps2048677 = 2,
    /// ntruhps4096821 (category 5), the default.
    #[default]
    Hps4096821 = 3,
    /// ntruhrss701 (category 3).
    Hrss701 = 4,
}

/// Runs `$body` with `$m` bound to the pqcrypto module of `$p`.
macro_rules! with_params {
    ($p:expr, $m:ident => $body:expr) => {
        match $p {
            NtruParams::Hps2048509 => {
                use ntruhps2048509 as $m;
                $body
            }
            NtruParams::Hps2048677 => {
                use ntruhps2048677 as $m;
                $body
            }
            NtruParams::Hps4096821 => {
                use ntruhps4096821 as $m;
                $body
            }
            NtruParams::Hrss701 => {
                use ntruhrss701 as $m;
                $body
            }
        }
    };
}

impl NtruParams {
    /// Every supported set.
    pub const ALL: [NtruParams; 4] = [
        NtruParams::Hps2048509,
        NtruParams::Hps2048677,
        NtruParams::Hps4096821,
        NtruParams::Hrss701,
    ];

    /// The byte stored in wrapped keys and key ring files.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the stored byte.
    pub fn from_u8(b: u8) -> KemResult<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_u8() == b)
            .ok_or(KemError::UnknownParams(b))
    }

    /// The pqcrypto name, e.g. `ntruhps4096821`.
    pub fn name(self) -> &'static str {
        match self {
            NtruParams::Hps2048509 => "ntruhps2048509",
            NtruParams::Hps2048677 => "ntruhps2048677",
            NtruParams::Hps4096821 => "ntruhps4096821",
            NtruParams::Hrss701 => "ntruhrss701",
        }
    }

    /// Public key length in bytes.
    pub fn public_key_len(self) -> usize {
        with_params!(self, m => m::public_key_bytes())
    }

    /// Secret key length in bytes.
    pub fn secret_key_len(self) -> usize {
        with_params!(self, m => m::secret_key_bytes())
    }

    /// KEM ciphertext length in bytes.
    pub fn ciphertext_len(self) -> usize {
        with_params!(self, m => m::ciphertext_bytes())
    }

    /// Length of an encoded [`WrappedKey`] under this set.
    pub fn wrapped_key_len(self) -> usize {
        Kem::Ntru(self).wrapped_key_len()
    }

    fn keypair(self) -> (Vec<u8>, Zeroizing<Vec<u8>>) {
        with_params!(self, m => {
            let (pk, sk) = m::keypair();
            (pk.as_bytes().to_vec(), Zeroizing::new(sk.as_bytes().to_vec()))
        })
    }

    fn encapsulate(self, pk: &[u8]) -> KemResult<(Zeroizing<[u8; 32]>, Vec<u8>)> {
        check_len("KEM public key", self.public_key_len(), pk.len())?;
        with_params!(self, m => {
            let pk = m::PublicKey::from_bytes(pk).map_err(|_| KemError::BadLength {
                what: "KEM public key",
                expected: self.public_key_len(),
                got: pk.len(),
            })?;
            let (ss, ct) = m::encapsulate(&pk);
            Ok((shared_secret(ss.as_bytes())?, ct.as_bytes().to_vec()))
        })
    }

    fn decapsulate(self, sk: &[u8], ct: &[u8]) -> KemResult<Zeroizing<[u8; 32]>> {
        check_len("KEM secret key", self.secret_key_len(), sk.len())?;
        check_len("KEM ciphertext", self.ciphertext_len(), ct.len())?;
        with_params!(self, m => {
            let sk = m::SecretKey::from_bytes(sk).map_err(|_| KemError::BadLength {
                what: "KEM secret key",
                expected: self.secret_key_len(),
                got: sk.len(),
            })?;
            let ct = m::Ciphertext::from_bytes(ct).map_err(|_| KemError::BadLength {
                what: "KEM ciphertext",
                expected: self.ciphertext_len(),
                got: ct.len(),
            })?;
            shared_secret(m::decapsulate(&ct, &sk).as_bytes())
        })
    }
}

impl fmt::Display for NtruParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The byte of ML-KEM-1024 in wrapped keys and key ring files (1–4 are the NTRU sets).
const ML_KEM_1024_ALG: u8 = 5;
/// FIPS 203 sizes of ML-KEM-1024 (encapsulation key, decapsulation key, ciphertext).
const ML_KEM_1024_PUBLIC_KEY_LEN: usize = 1568;
const ML_KEM_1024_SECRET_KEY_LEN: usize = 3168;
const ML_KEM_1024_CIPHERTEXT_LEN: usize = 1568;

/// A key-encapsulation mechanism that wraps data keys. The default is NTRU-HPS-4096-821.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kem {
    /// NTRU (pqcrypto-ntru) with a parameter set.
    Ntru(NtruParams),
    /// ML-KEM-1024 (FIPS 203, category 5) on aws-lc-rs.
    MlKem1024,
}

impl Default for Kem {
    fn default() -> Self {
        Kem::Ntru(NtruParams::default())
    }
}

impl From<NtruParams> for Kem {
    fn from(p: NtruParams) -> Self {
        Kem::Ntru(p)
    }
}

/// Lets callers written when every key was NTRU compare a key's KEM with a parameter set.
impl PartialEq<NtruParams> for Kem {
    fn eq(&self, other: &NtruParams) -> bool {
        *self == Kem::Ntru(*other)
    }
}

impl Kem {
    /// Every supported KEM: the NTRU sets, then ML-KEM-1024.
    pub const ALL: [Kem; 5] = [
        Kem::Ntru(NtruParams::Hps2048509),
        Kem::Ntru(NtruParams::Hps2048677),
        Kem::Ntru(NtruParams::Hps4096821),
        Kem::Ntru(NtruParams::Hrss701),
        Kem::MlKem1024,
    ];

    /// The byte stored in wrapped keys and key ring files.
    pub fn as_u8(self) -> u8 {
        match self {
            Kem::Ntru(p) => p.as_u8(),
            Kem::MlKem1024 => ML_KEM_1024_ALG,
        }
    }

    /// Parses the stored byte.
    pub fn from_u8(b: u8) -> KemResult<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_u8() == b)
            .ok_or(KemError::UnknownParams(b))
    }

    /// The name, e.g. `ntruhps4096821` or `ml-kem-1024`.
    pub fn name(self) -> &'static str {
        match self {
            Kem::Ntru(p) => p.name(),
            Kem::MlKem1024 => "ml-kem-1024",
        }
    }

    /// The NTRU parameter set, if this is NTRU.
    pub fn ntru(self) -> Option<NtruParams> {
        match self {
            Kem::Ntru(p) => Some(p),
            Kem::MlKem1024 => None,
        }
    }

    /// Public key length in bytes.
    pub fn public_key_len(self) -> usize {
        match self {
            Kem::Ntru(p) => p.public_key_len(),
            Kem::MlKem1024 => ML_KEM_1024_PUBLIC_KEY_LEN,
        }
    }

    /// Secret key length in bytes.
    pub fn secret_key_len(self) -> usize {
        match self {
            Kem::Ntru(p) => p.secret_key_len(),
            Kem::MlKem1024 => ML_KEM_1024_SECRET_KEY_LEN,
        }
    }

    /// KEM ciphertext length in bytes.
    pub fn ciphertext_len(self) -> usize {
        match self {
            Kem::Ntru(p) => p.ciphertext_len(),
            Kem::MlKem1024 => ML_KEM_1024_CIPHERTEXT_LEN,
        }
    }

    /// Length of an encoded [`WrappedKey`] under this KEM.
    pub fn wrapped_key_len(self) -> usize {
        1 + 1 + 32 + self.ciphertext_len() + NONCE_LEN + SEALED_KEY_LEN
    }

    fn fail(self, op: &'static str) -> impl FnOnce(aws_lc_rs::error::Unspecified) -> KemError {
        move |_| KemError::Kem { kem: self, op }
    }

    fn keypair(self) -> KemResult<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        match self {
            Kem::Ntru(p) => Ok(p.keypair()),
            Kem::MlKem1024 => {
                let fail = self.fail("key generation");
                let dk = DecapsulationKey::generate(&ML_KEM_1024).map_err(fail)?;
                let fail = self.fail("key generation");
                let pk = dk
                    .encapsulation_key()
                    .and_then(|ek| ek.key_bytes())
                    .map_err(fail)?;
                let fail = self.fail("key generation");
                let sk = dk.key_bytes().map_err(fail)?;
                Ok((pk.as_ref().to_vec(), Zeroizing::new(sk.as_ref().to_vec())))
            }
        }
    }

    fn encapsulate(self, pk: &[u8]) -> KemResult<(Zeroizing<[u8; 32]>, Vec<u8>)> {
        check_len("KEM public key", self.public_key_len(), pk.len())?;
        match self {
            Kem::Ntru(p) => p.encapsulate(pk),
            Kem::MlKem1024 => {
                let ek =
                    EncapsulationKey::new(&ML_KEM_1024, pk).map_err(|_| KemError::Malformed {
                        what: "ML-KEM-1024 public key",
                        reason: "rejected by aws-lc".into(),
                    })?;
                let (ct, ss) = ek.encapsulate().map_err(self.fail("encapsulation"))?;
                Ok((shared_secret(ss.as_ref())?, ct.as_ref().to_vec()))
            }
        }
    }

    fn decapsulate(self, sk: &[u8], ct: &[u8]) -> KemResult<Zeroizing<[u8; 32]>> {
        check_len("KEM secret key", self.secret_key_len(), sk.len())?;
        check_len("KEM ciphertext", self.ciphertext_len(), ct.len())?;
        match self {
            Kem::Ntru(p) => p.decapsulate(sk, ct),
            Kem::MlKem1024 => {
                let dk =
                    DecapsulationKey::new(&ML_KEM_1024, sk).map_err(|_| KemError::Malformed {
                        what: "ML-KEM-1024 secret key",
                        reason: "rejected by aws-lc".into(),
                    })?;
                let ss = dk
                    .decapsulate(Ciphertext::from(ct))
                    .map_err(self.fail("decapsulation"))?;
                shared_secret(ss.as_ref())
            }
        }
    }
}

impl fmt::Display for Kem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> KemResult<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KemError::BadLength {
            what,
            expected,
            got,
        })
    }
}

fn shared_secret(bytes: &[u8]) -> KemResult<Zeroizing<[u8; 32]>> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| KemError::BadLength {
        what: "KEM shared secret",
        expected: 32,
        got: bytes.len(),
    })?;
    Ok(Zeroizing::new(arr))
}

/// Id of a KEM public key: `BLAKE3-derive-key("citychain kem key id v1", alg ‖ pk)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The id of a public key under a KEM (an [`NtruParams`] converts into one).
    pub fn of(kem: impl Into<Kem>, public_key: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(KEY_ID_CONTEXT);
        h.update(&[kem.into().as_u8()]).update(public_key);
        KeyId(*h.finalize().as_bytes())
    }
    /// Wraps raw bytes (no hashing).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyId(bytes)
    }
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({}…)", &self.to_hex()[..8])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

/// A KEM public key with its KEM and id.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    params: Kem,
    bytes: Vec<u8>,
    id: KeyId,
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPublicKey({}, {:?})", self.params, self.id)
    }
}

impl KemPublicKey {
    /// A public key from its bytes, checking the length.
    pub fn from_bytes(kem: impl Into<Kem>, bytes: &[u8]) -> KemResult<Self> {
        let params = kem.into();
        check_len("KEM public key", params.public_key_len(), bytes.len())?;
        Ok(KemPublicKey {
            params,
            bytes: bytes.to_vec(),
            id: KeyId::of(params, bytes),
        })
    }
    /// The KEM.
    pub fn kem(&self) -> Kem {
        self.params
    }
    /// The KEM (named for the NTRU parameter set it was before ML-KEM; same as
    /// [`KemPublicKey::kem`]).
    pub fn params(&self) -> Kem {
        self.params
    }
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Wraps `data_key` for this public key (see the module docs for the scheme).
    pub fn wrap(&self, data_key: &DataKey) -> KemResult<WrappedKey> {
        let (ss, ct) = self.params.encapsulate(&self.bytes)?;
        let kek = derive_kek(self.params, &self.id, &ss, &ct)?;
        let nonce = random_bytes::<NONCE_LEN>()?;
        let aad = wrap_header(self.params, &self.id, &ct);
        let sealed = XChaCha20Poly1305::new(Key::from_slice(&kek[..]))
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &data_key.0[..],
                    aad: &aad,
                },
            )
            .map_err(|e| KemError::EncryptFailed(e.to_string()))?;
        let sealed_key: [u8; SEALED_KEY_LEN] =
            sealed
                .as_slice()
                .try_into()
                .map_err(|_| KemError::BadLength {
                    what: "sealed data key",
                    expected: SEALED_KEY_LEN,
                    got: sealed.len(),
                })?;
        Ok(WrappedKey {
            params: self.params,
            key_id: self.id,
            kem_ciphertext: ct,
            nonce,
            sealed_key,
        })
    }
}

fn derive_kek(params: Kem, id: &KeyId, ss: &[u8; 32], ct: &[u8]) -> KemResult<Zeroizing<[u8; 32]>> {
    let mut info = Vec::with_capacity(1 + 32 + 32);
    info.push(params.as_u8());
    info.extend_from_slice(id.as_bytes());
    info.extend_from_slice(blake3::hash(ct).as_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(HKDF_SALT), ss)
        .expand(&info, &mut kek[..])
        .map_err(|e| KemError::EncryptFailed(format!("HKDF: {e}")))?;
    Ok(kek)
}

fn wrap_header(params: Kem, id: &KeyId, ct: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(2 + 32 + ct.len());
    h.push(WRAP_VERSION);
    h.push(params.as_u8());
    h.extend_from_slice(id.as_bytes());
    h.extend_from_slice(ct);
    h
}

/// A KEM key pair. The secret key bytes are wiped on drop.
#[derive(Clone)]
pub struct KemKeypair {
    public: KemPublicKey,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KemKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemKeypair({}, {:?})",
            self.public.params, self.public.id
        )
    }
}

impl KemKeypair {
    /// A fresh key pair from the operating system's randomness.
    ///
    /// # Panics
    /// If aws-lc fails to generate an ML-KEM key (an internal error); see
    /// [`KemKeypair::try_generate`].
    pub fn generate(kem: impl Into<Kem>) -> Self {
        let kem = kem.into();
        Self::try_generate(kem).unwrap_or_else(|e| panic!("{kem} key generation: {e}"))
    }

    /// A fresh key pair, or the implementation's error.
    pub fn try_generate(kem: impl Into<Kem>) -> KemResult<Self> {
        let params = kem.into();
        let (pk, sk) = params.keypair()?;
        Ok(KemKeypair {
            public: KemPublicKey {
                params,
                id: KeyId::of(params, &pk),
                bytes: pk,
            },
            secret: sk,
        })
    }

    /// Rebuilds a pair from its bytes, checking lengths and that the halves belong together
    /// (one encapsulation and decapsulation, about 60 µs).
    pub fn from_bytes(
        kem: impl Into<Kem>,
        public_key: &[u8],
        secret_key: &[u8],
    ) -> KemResult<Self> {
        let params = kem.into();
        let public = KemPublicKey::from_bytes(params, public_key)?;
        check_len("KEM secret key", params.secret_key_len(), secret_key.len())?;
        let kp = KemKeypair {
            public,
            secret: Zeroizing::new(secret_key.to_vec()),
        };
        let (ss, ct) = params.encapsulate(public_key)?;
        if kp.params().decapsulate(&kp.secret, &ct)? != ss {
            return Err(KemError::Malformed {
                what: "KEM key pair",
                reason: "secret key does not match its public key".into(),
            });
        }
        Ok(kp)
    }

    /// The public half.
    pub fn public(&self) -> &KemPublicKey {
        &self.public
    }
    /// The KEM.
    pub fn kem(&self) -> Kem {
        self.public.params
    }
    /// The KEM (same as [`KemKeypair::kem`]; named for the NTRU parameter set it was).
    pub fn params(&self) -> Kem {
        self.public.params
    }
    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public.id
    }
    /// The secret key bytes (for key ring files).
    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// Wraps `data_key` for this pair's public key.
    pub fn wrap(&self, data_key: &DataKey) -> KemResult<WrappedKey> {
        self.public.wrap(data_key)
    }

    /// Recovers the data key of a [`WrappedKey`] made for this pair. A key made for another
    /// pair is [`KemError::KeyMismatch`]; any tampering is [`KemError::UnwrapFailed`].
    pub fn unwrap(&self, wrapped: &WrappedKey) -> KemResult<DataKey> {
        if wrapped.key_id != self.key_id() {
            return Err(KemError::KeyMismatch {
                wrapped_for: wrapped.key_id,
                given: self.key_id(),
            });
        }
        if wrapped.params != self.params() {
            return Err(KemError::UnwrapFailed {
                key_id: wrapped.key_id,
            });
        }
        let params = self.params();
        let ss = params.decapsulate(&self.secret, &wrapped.kem_ciphertext)?;
        let kek = derive_kek(params, &wrapped.key_id, &ss, &wrapped.kem_ciphertext)?;
        let aad = wrap_header(params, &wrapped.key_id, &wrapped.kem_ciphertext);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(Key::from_slice(&kek[..]))
                .decrypt(
                    XNonce::from_slice(&wrapped.nonce),
                    Payload {
                        msg: &wrapped.sealed_key,
                        aad: &aad,
                    },
                )
                .map_err(|_| KemError::UnwrapFailed {
                    key_id: wrapped.key_id,
                })?,
        );
        let key: [u8; DATA_KEY_LEN] = plain[..].try_into().map_err(|_| KemError::UnwrapFailed {
            key_id: wrapped.key_id,
        })?;
        Ok(DataKey(Zeroizing::new(key)))
    }
}

/// A random 32-byte XChaCha20-Poly1305 key for data. Wiped on drop; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> KemResult<Self> {
        Ok(DataKey(Zeroizing::new(random_bytes()?)))
    }
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }
    /// The raw key bytes.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }

    /// Encrypts `plaintext` bound to `aad`: `nonce (24 random bytes) ‖ ciphertext ‖ tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> KemResult<Vec<u8>> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let ct = XChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|e| KemError::EncryptFailed(e.to_string()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts the output of [`DataKey::seal`] made with the same `aad`. Too short input is
    /// [`KemError::BadLength`]; anything else wrong is [`KemError::DecryptFailed`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> KemResult<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(KemError::BadLength {
                what: "sealed data",
                expected: SEAL_OVERHEAD,
                got: sealed.len(),
            });
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        XChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| KemError::DecryptFailed)
    }
}

/// A data key wrapped for one KEM public key:
/// `version ‖ alg ‖ key id ‖ KEM ciphertext ‖ nonce ‖ sealed key (48 bytes)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    params: Kem,
    key_id: KeyId,
    kem_ciphertext: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    sealed_key: [u8; SEALED_KEY_LEN],
}

impl WrappedKey {
    /// The id of the KEM key this data key was wrapped for.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// The KEM that wrapped it.
    pub fn kem(&self) -> Kem {
        self.params
    }
    /// The KEM that wrapped it (same as [`WrappedKey::kem`]).
    pub fn params(&self) -> Kem {
        self.params
    }

    /// The encoding; its length is [`Kem::wrapped_key_len`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = wrap_header(self.params, &self.key_id, &self.kem_ciphertext);
        out.reserve(NONCE_LEN + SEALED_KEY_LEN);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed_key);
        out
    }

    /// Strictly decodes a wrapped key: version, KEM and exact length are checked. Version 1
    /// is the only version; keys wrapped before ML-KEM existed (NTRU, alg 1–4) decode as
    /// they always did.
    pub fn decode(bytes: &[u8]) -> KemResult<Self> {
        let malformed = |reason: String| KemError::Malformed {
            what: "wrapped key",
            reason,
        };
        if bytes.len() < 2 {
            return Err(malformed(format!("{} bytes is too short", bytes.len())));
        }
        if bytes[0] != WRAP_VERSION {
            return Err(malformed(format!("unsupported version {}", bytes[0])));
        }
        let params = Kem::from_u8(bytes[1])?;
        check_len("wrapped key", params.wrapped_key_len(), bytes.len())?;
        let ct_len = params.ciphertext_len();
        let (key_id, rest) = bytes[2..].split_at(32);
        let (ct, rest) = rest.split_at(ct_len);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key_id = KeyId(key_id.try_into().map_err(|_| malformed("key id".into()))?);
        Ok(WrappedKey {
            params,
            key_id,
            kem_ciphertext: ct.to_vec(),
            nonce: nonce.try_into().map_err(|_| malformed("nonce".into()))?,
            sealed_key: sealed
                .try_into()
                .map_err(|_| malformed("sealed key".into()))?,
        })
    }
}

/// KEM key pairs, oldest first; the newest wraps new data keys, all unwrap. See the module
/// docs.
#[derive(Clone)]
pub struct Keyring {
    root: Zeroizing<[u8; 32]>,
    keys: Vec<KemKeypair>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A new ring with one fresh key pair of `kem` and a fresh root secret.
    pub fn generate(kem: impl Into<Kem>) -> KemResult<Self> {
        Ok(Keyring {
            root: Zeroizing::new(random_bytes()?),
            keys: vec![KemKeypair::try_generate(kem)?],
        })
    }

    /// A ring from a root secret and key pairs (oldest first). Fails when `keys` is empty or
    /// holds the same key twice.
    pub fn from_parts(root: [u8; 32], keys: Vec<KemKeypair>) -> KemResult<Self> {
        if keys.is_empty() {
            return Err(KemError::Malformed {
                what: "key ring",
                reason: "no keys".into(),
            });
        }
        let mut ids: Vec<KeyId> = keys.iter().map(KemKeypair::key_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(KemError::Malformed {
                what: "key ring",
                reason: "the same key appears twice".into(),
            });
        }
        Ok(Keyring {
            root: Zeroizing::new(root),
            keys,
        })
    }

    /// Adds a fresh key pair with the current key's KEM and makes it current.
    /// Returns its id. Older keys stay for unwrapping.
    pub fn rotate(&mut self) -> KemResult<KeyId> {
        self.rotate_to(self.current().kem())
    }

    /// As [`Keyring::rotate`], with a chosen KEM: from now on new data keys are wrapped with
    /// it; keys wrapped before stay readable (move them with [`Keyring::rewrap`]).
    pub fn rotate_to(&mut self, kem: impl Into<Kem>) -> KemResult<KeyId> {
        let kp = KemKeypair::try_generate(kem)?;
        let id = kp.key_id();
        self.keys.push(kp);
        Ok(id)
    }

    /// The key that wraps new data keys: the newest.
    pub fn current(&self) -> &KemKeypair {
        // A ring is never empty: every constructor checks it.
        &self.keys[self.keys.len() - 1]
    }

    /// The key pair with this id.
    pub fn get(&self, id: &KeyId) -> Option<&KemKeypair> {
        self.keys.iter().rev().find(|k| k.key_id() == *id)
    }

    /// Every key id, oldest first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(KemKeypair::key_id).collect()
    }

    /// A fresh data key and its wrapping under the current key.
    pub fn wrap_new(&self) -> KemResult<(DataKey, WrappedKey)> {
        let dk = DataKey::generate()?;
        let wrapped = self.current().wrap(&dk)?;
        Ok((dk, wrapped))
    }

    /// Unwraps with the key the wrapped key names: [`KemError::UnknownKeyId`] when the ring
    /// does not hold it, [`KemError::UnwrapFailed`] when it was tampered with.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> KemResult<DataKey> {
        self.get(&wrapped.key_id)
            .ok_or(KemError::UnknownKeyId(wrapped.key_id))?
            .unwrap(wrapped)
    }

    /// True if `wrapped` is wrapped under the current key (nothing for [`Keyring::rewrap`]
    /// to do).
    pub fn is_current(&self, wrapped: &WrappedKey) -> bool {
        wrapped.key_id == self.current().key_id()
    }

    /// Re-wraps a data key under the current key (after [`Keyring::rotate_to`] another KEM):
    /// `None` when it already is, else the same data key wrapped anew, with the data key that
    /// was recovered. The old wrapping stays valid as long as its key is in the ring, which
    /// is forever: a caller replaces stored wrapped keys one by one, atomically, and a crash
    /// in between leaves each either old (still readable) or new.
    pub fn rewrap(&self, wrapped: &WrappedKey) -> KemResult<Option<(DataKey, WrappedKey)>> {
        if self.is_current(wrapped) {
            return Ok(None);
        }
        let dk = self.unwrap(wrapped)?;
        let again = self.current().wrap(&dk)?;
        Ok(Some((dk, again)))
    }

    /// A 32-byte secret derived from the ring's root secret for `context` (BLAKE3
    /// derive-key). Stable across rotations: use it for blind indexes and keyed hashes.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.root[..])
    }

    /// The file encoding: `magic ‖ root ‖ u16 count ‖ (alg ‖ pk ‖ sk)* ‖ BLAKE3 checksum`,
    /// `alg` being the KEM's byte (so files from before ML-KEM read unchanged).
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut body = Zeroizing::new(Vec::new());
        body.extend_from_slice(KEYRING_MAGIC);
        body.extend_from_slice(&self.root[..]);
        let count = u16::try_from(self.keys.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&count.to_le_bytes());
        for k in self.keys.iter().take(count as usize) {
            body.push(k.kem().as_u8());
            body.extend_from_slice(k.public.as_bytes());
            body.extend_from_slice(k.secret_bytes());
        }
        let sum = blake3::hash(&body);
        body.extend_from_slice(sum.as_bytes());
        body
    }

    fn decode(bytes: &[u8], path: &Path) -> KemResult<Self> {
        let corrupt = |reason: String| KemError::CorruptKeyring {
            path: path.to_path_buf(),
            reason,
        };
        let min = KEYRING_MAGIC.len() + 32 + 2 + 32;
        if bytes.len() < min {
            return Err(corrupt(format!(
                "{} bytes, expected at least {min}",
                bytes.len()
            )));
        }
        if &bytes[..KEYRING_MAGIC.len()] != KEYRING_MAGIC {
            return Err(corrupt("not a City Chain key ring file".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        let mut rest = &body[KEYRING_MAGIC.len()..];
        let root: [u8; 32] = rest[..32]
            .try_into()
            .map_err(|_| corrupt("root secret".into()))?;
        rest = &rest[32..];
        let count = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        let mut keys = Vec::with_capacity(count);
        for i in 0..count {
            let Some((&alg, tail)) = rest.split_first() else {
                return Err(corrupt(format!("truncated at key {i}")));
            };
            let params = Kem::from_u8(alg).map_err(|e| corrupt(format!("key {i}: {e}")))?;
            let (pk_len, sk_len) = (params.public_key_len(), params.secret_key_len());
            if tail.len() < pk_len + sk_len {
                return Err(corrupt(format!("truncated at key {i}")));
            }
            let kp =
                KemKeypair::from_bytes(params, &tail[..pk_len], &tail[pk_len..pk_len + sk_len])
                    .map_err(|e| corrupt(format!("key {i}: {e}")))?;
            keys.push(kp);
            rest = &tail[pk_len + sk_len..];
        }
        if !rest.is_empty() {
            return Err(corrupt(format!("{} trailing bytes", rest.len())));
        }
        Keyring::from_parts(root, keys).map_err(|e| corrupt(e.to_string()))
    }

    /// Writes the ring to `path` with mode 0600 through a temporary file and an atomic
    /// rename. Parent directories are created.
    pub fn save(&self, path: &Path) -> KemResult<()> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KemError::Io { path: p, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io(&tmp))?;
            f.write_all(&self.encode()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; failure to open a directory is not fatal.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Reads a ring written by [`Keyring::save`], checking magic, checksum, lengths and
    /// that every key pair's halves belong together.
    pub fn load(path: &Path) -> KemResult<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KemError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        Self::decode(&bytes, path)
    }

    /// Loads the ring at `path`, or creates, saves and returns a new one (one key of `kem`)
    /// if no file exists. An existing ring is returned as it is, whatever its current KEM.
    pub fn load_or_create(path: &Path, kem: impl Into<Kem>) -> KemResult<Self> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = Self::generate(kem)?;
                ring.save(path)?;
                Ok(ring)
            }
            Err(source) => Err(KemError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wrap_unwrap_every_kem() {
        for kem in Kem::ALL {
            let kp = KemKeypair::generate(kem);
            assert_eq!(kp.public().as_bytes().len(), kem.public_key_len());
            assert_eq!(kp.secret_bytes().len(), kem.secret_key_len());
            assert_eq!(Kem::from_u8(kem.as_u8()).unwrap(), kem);
            let dk = DataKey::generate().unwrap();
            let w = kp.wrap(&dk).unwrap();
            assert_eq!(w.kem(), kem);
            let enc = w.encode();
            assert_eq!(enc.len(), kem.wrapped_key_len(), "{kem}");
            assert_eq!(enc[1], kem.as_u8(), "{kem}: the record names its KEM");
            let back = kp.unwrap(&WrappedKey::decode(&enc).unwrap()).unwrap();
            assert_eq!(back, dk);
            // The pair rebuilds from its bytes, and refuses another pair's secret.
            let again = KemKeypair::from_bytes(kem, kp.public().as_bytes(), kp.secret_bytes());
            assert_eq!(again.unwrap().unwrap(&w).unwrap(), dk);
        }
        assert!(matches!(Kem::from_u8(6), Err(KemError::UnknownParams(6))));
        assert!(matches!(Kem::from_u8(0), Err(KemError::UnknownParams(0))));
        assert_eq!(Kem::default(), NtruParams::Hps4096821);
        assert_eq!(Kem::MlKem1024.to_string(), "ml-kem-1024");
    }

    #[test]
    fn any_bit_flip_in_a_wrapped_key_fails_cleanly() {
        for kem in [Kem::default(), Kem::MlKem1024] {
            let kp = KemKeypair::generate(kem);
            let dk = DataKey::generate().unwrap();
            let enc = kp.wrap(&dk).unwrap().encode();
            // Every region: version, alg, key id, KEM ciphertext, nonce, sealed key.
            let positions = [
                0,
                1,
                2,
                33,
                34,
                500,
                enc.len() - 70,
                enc.len() - 50,
                enc.len() - 1,
            ];
            for pos in positions {
                let mut bad = enc.clone();
                bad[pos] ^= 0x01;
                let res = WrappedKey::decode(&bad).and_then(|w| kp.unwrap(&w));
                match res {
                    Err(KemError::Malformed { .. })
                    | Err(KemError::UnknownParams(_))
                    | Err(KemError::BadLength { .. })
                    | Err(KemError::KeyMismatch { .. })
                    | Err(KemError::UnwrapFailed { .. }) => {}
                    other => panic!("{kem}: flip at {pos}: {other:?}"),
                }
            }
            assert!(matches!(
                WrappedKey::decode(&enc[..enc.len() - 1]),
                Err(KemError::BadLength { .. })
            ));
        }
        assert!(matches!(
            WrappedKey::decode(&[]),
            Err(KemError::Malformed { .. })
        ));
    }

    /// Another key of the same KEM cannot unwrap; a forged pair (b's secret under a's
    /// public key, same key id) fails to unwrap and is refused by `from_bytes`.
    fn wrong_key_and_forged_pair_fail_cleanly(kem: Kem) {
        let a = KemKeypair::generate(kem);
        let b = KemKeypair::generate(kem);
        let w = a.wrap(&DataKey::generate().unwrap()).unwrap();
        assert!(matches!(b.unwrap(&w), Err(KemError::KeyMismatch { .. })));
        let forged = KemKeypair {
            public: a.public().clone(),
            secret: Zeroizing::new(b.secret_bytes().to_vec()),
        };
        assert!(matches!(
            forged.unwrap(&w),
            Err(KemError::UnwrapFailed { .. })
        ));
        assert!(matches!(
            KemKeypair::from_bytes(kem, a.public().as_bytes(), b.secret_bytes()),
            Err(KemError::Malformed { .. })
        ));
    }

    #[test]
    fn wrong_key_fails_cleanly() {
        wrong_key_and_forged_pair_fail_cleanly(Kem::from(NtruParams::default()));
    }

    #[test]
    fn seal_open_and_tampering() {
        let dk = DataKey::generate().unwrap();
        let s = dk.seal(b"ctx", b"hello").unwrap();
        assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(dk.open(b"ctx", &s).unwrap(), b"hello");
        assert!(matches!(dk.open(b"ctX", &s), Err(KemError::DecryptFailed)));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x80;
            assert!(matches!(dk.open(b"ctx", &t), Err(KemError::DecryptFailed)));
        }
        let other = DataKey::generate().unwrap();
        assert!(matches!(
            other.open(b"ctx", &s),
            Err(KemError::DecryptFailed)
        ));
        assert!(matches!(
            dk.open(b"ctx", &s[..10]),
            Err(KemError::BadLength { .. })
        ));
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let mut ring = Keyring::generate(NtruParams::default()).unwrap();
        let first = ring.current().key_id();
        let (dk1, w1) = ring.wrap_new().unwrap();
        let second = ring.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.current().key_id(), second);
        let (dk2, w2) = ring.wrap_new().unwrap();
        assert_eq!(w1.key_id(), first);
        assert_eq!(w2.key_id(), second);
        assert_eq!(ring.unwrap(&w1).unwrap(), dk1);
        assert_eq!(ring.unwrap(&w2).unwrap(), dk2);
        assert_eq!(ring.key_ids(), vec![first, second]);

        let stranger = Keyring::generate(NtruParams::default()).unwrap();
        assert!(matches!(
            stranger.unwrap(&w1),
            Err(KemError::UnknownKeyId(id)) if id == first
        ));
        // The root secret survives rotation; another ring's does not match.
        let before = stranger.derive_secret("x");
        let mut s2 = stranger.clone();
        s2.rotate().unwrap();
        assert_eq!(s2.derive_secret("x"), before);
        assert_ne!(ring.derive_secret("x"), before);
        assert_ne!(ring.derive_secret("x"), ring.derive_secret("y"));
    }

    #[test]
    fn keyring_file_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/archive.keyring");
        let mut ring = Keyring::load_or_create(&path, NtruParams::default()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (dk, w) = ring.wrap_new().unwrap();
        ring.rotate_to(NtruParams::Hrss701).unwrap();
        ring.save(&path).unwrap();
        let back = Keyring::load_or_create(&path, NtruParams::default()).unwrap();
        assert_eq!(back.key_ids(), ring.key_ids());
        assert_eq!(back.unwrap(&w).unwrap(), dk);
        assert_eq!(back.derive_secret("c"), ring.derive_secret("c"));
        assert_eq!(back.current().params(), NtruParams::Hrss701);

        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match Keyring::load(&path) {
                Err(KemError::CorruptKeyring { .. }) => {}
                other => panic!("{other:?}"),
            }
        };
        check(&good[..good.len() - 1]);
        check(&good[..20]);
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        check(&flipped);
        let mut magic = good.clone();
        magic[0] = b'X';
        check(&magic);
        assert!(matches!(
            Keyring::load(&dir.path().join("missing")),
            Err(KemError::Io { .. })
        ));
    }

    #[test]
    fn ml_kem_wrong_key_and_forged_pair_fail_cleanly() {
        wrong_key_and_forged_pair_fail_cleanly(Kem::MlKem1024);
        // An NTRU wrapping presented to an ML-KEM key of the same id cannot happen (the id
        // covers the KEM byte), and a KEM byte swapped in the encoding changes the length.
        let ntru = KemKeypair::generate(Kem::default());
        let nw = ntru.wrap(&DataKey::generate().unwrap()).unwrap().encode();
        let mut swapped = nw.clone();
        swapped[1] = Kem::MlKem1024.as_u8();
        assert!(matches!(
            WrappedKey::decode(&swapped),
            Err(KemError::BadLength { .. })
        ));
    }

    #[test]
    fn rotate_to_ml_kem_then_rewrap_moves_every_key_and_keeps_data() {
        let mut ring = Keyring::generate(NtruParams::default()).unwrap();
        let old: Vec<(DataKey, WrappedKey)> = (0..3).map(|_| ring.wrap_new().unwrap()).collect();
        let sealed: Vec<Vec<u8>> = old
            .iter()
            .map(|(dk, _)| dk.seal(b"aad", b"payload").unwrap())
            .collect();
        let new_id = ring.rotate_to(Kem::MlKem1024).unwrap();
        assert_eq!(ring.current().kem(), Kem::MlKem1024);
        // New data keys use the configured KEM.
        let (_, fresh) = ring.wrap_new().unwrap();
        assert_eq!(fresh.kem(), Kem::MlKem1024);
        assert!(ring.rewrap(&fresh).unwrap().is_none());
        for ((dk, w), s) in old.iter().zip(&sealed) {
            assert_eq!(w.kem(), NtruParams::Hps4096821);
            // Before and after the re-wrap, both wrappings open to the same data key.
            let (dk2, w2) = ring.rewrap(w).unwrap().expect("moved");
            assert_eq!(&dk2, dk);
            assert_eq!(w2.key_id(), new_id);
            assert_eq!(w2.kem(), Kem::MlKem1024);
            assert_eq!(&ring.unwrap(w).unwrap(), dk);
            let back = ring
                .unwrap(&WrappedKey::decode(&w2.encode()).unwrap())
                .unwrap();
            assert_eq!(back.open(b"aad", s).unwrap(), b"payload");
            assert!(ring.rewrap(&w2).unwrap().is_none());
        }
        // And back to NTRU: rewrap works in either direction.
        let (_, w_ml) = ring.wrap_new().unwrap();
        ring.rotate_to(NtruParams::Hrss701).unwrap();
        let (_, w_back) = ring.rewrap(&w_ml).unwrap().expect("moved");
        assert_eq!(w_back.kem(), NtruParams::Hrss701);
        // A key of another ring is not silently re-wrapped.
        let stranger = Keyring::generate(Kem::MlKem1024).unwrap();
        assert!(matches!(
            stranger.rewrap(&old[0].1),
            Err(KemError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn keyring_file_with_both_kems_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.keyring");
        let mut ring = Keyring::load_or_create(&path, Kem::MlKem1024).unwrap();
        assert_eq!(ring.current().kem(), Kem::MlKem1024);
        let (dk1, w1) = ring.wrap_new().unwrap();
        ring.rotate_to(NtruParams::default()).unwrap();
        let (dk2, w2) = ring.wrap_new().unwrap();
        ring.save(&path).unwrap();
        let back = Keyring::load(&path).unwrap();
        assert_eq!(back.key_ids(), ring.key_ids());
        assert_eq!(back.unwrap(&w1).unwrap(), dk1);
        assert_eq!(back.unwrap(&w2).unwrap(), dk2);
        assert_eq!(back.current().kem(), NtruParams::Hps4096821);
    }
}
