//! ML-DSA-87 keys, signing and verification.

use crate::{Error, Result};
use dag_core::{AccountId, NodeId, SignatureError, SignatureVerifier, SignedTx, Signer, Tx};
use pqcrypto_mldsa::mldsa87;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use zeroize::Zeroize;

/// Length of an ML-DSA-87 public key: 2592 bytes.
pub const PUBLIC_KEY_LEN: usize = 2592;
/// Length of an ML-DSA-87 secret key: 4896 bytes.
pub const SECRET_KEY_LEN: usize = 4896;
/// Length of an ML-DSA-87 signature: 4627 bytes.
pub const SIGNATURE_LEN: usize = 4627;

/// The ML-DSA-87 verifier. Stateless; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct MlDsa87;

impl SignatureVerifier for MlDsa87 {
    fn verify(
        &self,
        public_key: &[u8],
        msg: &[u8],
        sig: &[u8],
    ) -> std::result::Result<(), SignatureError> {
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(SignatureError::BadKey {
                expected: PUBLIC_KEY_LEN,
                got: public_key.len(),
            });
        }
        if sig.len() != SIGNATURE_LEN {
            return Err(SignatureError::BadLength {
                expected: SIGNATURE_LEN,
                got: sig.len(),
            });
        }
        let pk =
            mldsa87::PublicKey::from_bytes(public_key).map_err(|_| SignatureError::BadKey {
                expected: PUBLIC_KEY_LEN,
                got: public_key.len(),
            })?;
        let sig =
            mldsa87::DetachedSignature::from_bytes(sig).map_err(|_| SignatureError::BadLength {
                expected: SIGNATURE_LEN,
                got: sig.len(),
            })?;
        mldsa87::verify_detached_signature(&sig, msg, &pk).map_err(|_| SignatureError::Invalid)
    }
}

/// An ML-DSA-87 key pair. The secret key bytes are wiped on drop.
pub struct Keypair {
    pk: Vec<u8>,
    sk: Vec<u8>,
    sk_parsed: mldsa87::SecretKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.node_id().short())
    }
}

impl Drop for Keypair {
    fn drop(&mut self) {
        self.sk.zeroize();
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        // Both halves were validated when this pair was made.
        Keypair::from_bytes(&self.pk, &self.sk).expect("a valid key pair stays valid")
    }
}

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Self {
        let (pk, sk) = mldsa87::keypair();
        Keypair {
            pk: pk.as_bytes().to_vec(),
            sk: sk.as_bytes().to_vec(),
            sk_parsed: sk,
        }
    }

    /// Rebuilds a pair from its bytes, checking both lengths. Use
    /// [`Keypair::is_consistent`] to check that the halves belong together.
    pub fn from_bytes(public_key: &[u8], secret_key: &[u8]) -> Result<Self> {
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(Error::BadKeyLength {
                what: "public key",
                expected: PUBLIC_KEY_LEN,
                got: public_key.len(),
            });
        }
        if secret_key.len() != SECRET_KEY_LEN {
            return Err(Error::BadKeyLength {
                what: "secret key",
                expected: SECRET_KEY_LEN,
                got: secret_key.len(),
            });
        }
        let sk_parsed =
            mldsa87::SecretKey::from_bytes(secret_key).map_err(|_| Error::BadKeyLength {
                what: "secret key",
                expected: SECRET_KEY_LEN,
                got: secret_key.len(),
            })?;
        Ok(Keypair {
            pk: public_key.to_vec(),
            sk: secret_key.to_vec(),
            sk_parsed,
        })
    }

    /// True if the secret key signs messages that verify under the public key.
    pub fn is_consistent(&self) -> bool {
        let probe = b"citychain/keycheck";
        MlDsa87.verify(&self.pk, probe, &self.sign(probe)).is_ok()
    }

    /// The secret key bytes (for key files only).
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        &self.sk
    }

    /// The account id of this key (BLAKE3 of the public key).
    pub fn account_id(&self) -> AccountId {
        AccountId::from_public_key(&self.pk)
    }

    /// The node id of this key (BLAKE3 of the public key).
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.pk)
    }
}

impl Signer for Keypair {
    fn public_key(&self) -> &[u8] {
        &self.pk
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        mldsa87::detached_sign(msg, &self.sk_parsed)
            .as_bytes()
            .to_vec()
    }
}

/// Signs a tx body: the signature covers `domain::TX ‖ tx_id`. The caller sets
/// `tx.sender` to the signer's account id; a mismatch is caught by verification.
pub fn sign_tx(tx: Tx, signer: &(impl Signer + ?Sized)) -> SignedTx {
    let id = tx.id();
    let signature = signer.sign(&Tx::signing_message(&id));
    SignedTx {
        tx,
        public_key: signer.public_key().to_vec(),
        signature,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::{CityId, Position, PositionMethod};

    fn tx_for(kp: &Keypair) -> Tx {
        Tx::fresh(
            kp.account_id(),
            AccountId::from_bytes([9; 32]),
            42,
            1,
            1_700_000_000_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.68, 139.69).unwrap(),
            PositionMethod::Gps,
        )
    }

    #[test]
    fn lengths_match_constants() {
        let kp = Keypair::generate();
        assert_eq!(kp.public_key().len(), PUBLIC_KEY_LEN);
        assert_eq!(kp.secret_bytes().len(), SECRET_KEY_LEN);
        assert_eq!(kp.sign(b"m").len(), SIGNATURE_LEN);
        assert!(kp.is_consistent());
    }

    #[test]
    fn sign_verify_and_failures() {
        let kp = Keypair::generate();
        let other = Keypair::generate();
        let signed = sign_tx(tx_for(&kp), &kp);
        assert!(signed.clone().verify(&MlDsa87).is_ok());

        // Tampered message.
        let mut t = signed.clone();
        t.tx.amount += 1;
        assert!(matches!(
            t.verify(&MlDsa87),
            Err(dag_core::Error::BadSignature {
                source: SignatureError::Invalid,
                ..
            })
        ));
        // Signed by another key but claiming the sender's key.
        let mut forged = sign_tx(tx_for(&kp), &other);
        forged.public_key = kp.public_key().to_vec();
        assert!(matches!(
            forged.verify(&MlDsa87),
            Err(dag_core::Error::BadSignature { .. })
        ));
        // Another key's signature with that key: the key does not match the sender.
        let wrong_key = sign_tx(tx_for(&kp), &other);
        assert!(matches!(
            wrong_key.verify(&MlDsa87),
            Err(dag_core::Error::KeyMismatch { .. })
        ));
        // Truncated signature.
        let mut trunc = signed.clone();
        trunc.signature.truncate(SIGNATURE_LEN - 1);
        assert!(matches!(
            trunc.verify(&MlDsa87),
            Err(dag_core::Error::BadSignature {
                source: SignatureError::BadLength { .. },
                ..
            })
        ));
        // Wrong-length key.
        assert!(matches!(
            MlDsa87.verify(&[0u8; 10], b"m", &kp.sign(b"m")),
            Err(SignatureError::BadKey { got: 10, .. })
        ));
    }

    #[test]
    fn from_bytes_checks_lengths() {
        let kp = Keypair::generate();
        assert!(matches!(
            Keypair::from_bytes(&kp.public_key()[1..], kp.secret_bytes()),
            Err(Error::BadKeyLength {
                what: "public key",
                ..
            })
        ));
        assert!(matches!(
            Keypair::from_bytes(kp.public_key(), &kp.secret_bytes()[1..]),
            Err(Error::BadKeyLength {
                what: "secret key",
                ..
            })
        ));
        let again = Keypair::from_bytes(kp.public_key(), kp.secret_bytes()).unwrap();
        assert_eq!(again.node_id(), kp.node_id());
    }
}
