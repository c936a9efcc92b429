//! The pqcrypto-mldsa (PQClean) backend of ML-DSA-87, kept behind the `pqcrypto-mldsa`
//! feature (off by default) so a benchmark can compare it with aws-lc-rs in one run and tests
//! can cross-check the two. PQClean is archived upstream: never use this in a node.

use crate::mldsa::check_lengths;
use crate::{Error, PUBLIC_KEY_LEN, Result, SECRET_KEY_LEN};
use dag_core::{SignatureError, SignatureVerifier, Signer};
use pqcrypto_mldsa::mldsa87;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};

/// ML-DSA-87 verification by pqcrypto-mldsa; same checks and errors as [`crate::MlDsa87`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PqcryptoMlDsa87;

impl SignatureVerifier for PqcryptoMlDsa87 {
    fn verify(
        &self,
        public_key: &[u8],
        msg: &[u8],
        sig: &[u8],
    ) -> std::result::Result<(), SignatureError> {
        check_lengths(public_key, sig)?;
        let pk =
            mldsa87::PublicKey::from_bytes(public_key).map_err(|_| SignatureError::BadKey {
                expected: PUBLIC_KEY_LEN,
                got: public_key.len(),
            })?;
        let sig =
            mldsa87::DetachedSignature::from_bytes(sig).map_err(|_| SignatureError::BadLength {
                expected: crate::SIGNATURE_LEN,
                got: sig.len(),
            })?;
        mldsa87::verify_detached_signature(&sig, msg, &pk).map_err(|_| SignatureError::Invalid)
    }
}

/// An ML-DSA-87 key pair signing through pqcrypto-mldsa.
pub struct PqcryptoKeypair {
    pk: Vec<u8>,
    sk: mldsa87::SecretKey,
}

impl std::fmt::Debug for PqcryptoKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PqcryptoKeypair(..)")
    }
}

impl PqcryptoKeypair {
    /// A fresh key pair from pqcrypto's key generation.
    pub fn generate() -> Self {
        let (pk, sk) = mldsa87::keypair();
        PqcryptoKeypair {
            pk: pk.as_bytes().to_vec(),
            sk,
        }
    }

    /// A pair from the same bytes [`crate::Keypair::from_bytes`] takes (lengths checked).
    pub fn from_bytes(public_key: &[u8], secret_key: &[u8]) -> Result<Self> {
        let bad = |what, expected, got| Error::BadKeyLength {
            what,
            expected,
            got,
        };
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(bad("public key", PUBLIC_KEY_LEN, public_key.len()));
        }
        let sk = mldsa87::SecretKey::from_bytes(secret_key)
            .map_err(|_| bad("secret key", SECRET_KEY_LEN, secret_key.len()))?;
        Ok(PqcryptoKeypair {
            pk: public_key.to_vec(),
            sk,
        })
    }

    /// The secret key bytes (the 4,896-byte expanded form).
    pub fn secret_bytes(&self) -> &[u8] {
        self.sk.as_bytes()
    }
}

impl Signer for PqcryptoKeypair {
    fn public_key(&self) -> &[u8] {
        &self.pk
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        mldsa87::detached_sign(msg, &self.sk).as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Keypair, MlDsa87};

    #[test]
    fn backends_cross_verify_with_the_same_key_bytes() {
        let pq = PqcryptoKeypair::generate();
        let ours = Keypair::from_bytes(pq.public_key(), pq.secret_bytes()).unwrap();
        assert!(ours.is_consistent());
        for m in [&b""[..], b"short", &[7u8; 7_300][..]] {
            MlDsa87.verify(pq.public_key(), m, &pq.sign(m)).unwrap();
            PqcryptoMlDsa87
                .verify(ours.public_key(), m, &ours.sign(m))
                .unwrap();
        }
        let mut bad = ours.sign(b"m");
        bad[9] ^= 1;
        assert!(matches!(
            PqcryptoMlDsa87.verify(ours.public_key(), b"m", &bad),
            Err(SignatureError::Invalid)
        ));
        assert!(matches!(
            PqcryptoMlDsa87.verify(&[0; 3], b"m", &bad),
            Err(SignatureError::BadKey { got: 3, .. })
        ));
    }
}
