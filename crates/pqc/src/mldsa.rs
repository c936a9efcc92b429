//! ML-DSA-87 keys, signing and verification on aws-lc-rs (FIPS 204; mldsa-native with
//! machine-checked x86-64 assembly).
//!
//! Keys are stored as pqcrypto stored them: the 2,592-byte public key and the 4,896-byte
//! expanded secret key, so key files written before the move to aws-lc-rs still load.

use crate::{Error, Result};
use aws_lc_rs::encoding::AsRawBytes;
use aws_lc_rs::signature::{
    KeyPair as _, ML_DSA_87, ML_DSA_87_SIGNING, PqdsaKeyPair, UnparsedPublicKey,
};
use dag_core::{AccountId, NodeId, SignatureError, SignatureVerifier, SignedTx, Signer, Tx};
use zeroize::Zeroizing;

/// Length of an ML-DSA-87 public key: 2592 bytes.
pub const PUBLIC_KEY_LEN: usize = 2592;
/// Length of an ML-DSA-87 secret key: 4896 bytes.
pub const SECRET_KEY_LEN: usize = 4896;
/// Length of an ML-DSA-87 signature: 4627 bytes.
pub const SIGNATURE_LEN: usize = 4627;

/// The ML-DSA-87 verifier. Stateless; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct MlDsa87;

/// Checks the lengths every backend checks first, with the errors callers match on.
pub(crate) fn check_lengths(
    public_key: &[u8],
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
    Ok(())
}

impl SignatureVerifier for MlDsa87 {
    fn verify(
        &self,
        public_key: &[u8],
        msg: &[u8],
        sig: &[u8],
    ) -> std::result::Result<(), SignatureError> {
        check_lengths(public_key, sig)?;
        UnparsedPublicKey::new(&ML_DSA_87, public_key)
            .verify(msg, sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// An ML-DSA-87 key pair. The secret key bytes are wiped on drop.
#[derive(Clone)]
pub struct Keypair {
    pk: Vec<u8>,
    sk: Zeroizing<Vec<u8>>,
    inner: PqdsaKeyPair,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.node_id().short())
    }
}

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    ///
    /// # Panics
    /// If aws-lc cannot generate a key (its randomness or an allocation failed): there is
    /// nothing sensible a node can do without keys.
    pub fn generate() -> Self {
        let inner = PqdsaKeyPair::generate(&ML_DSA_87_SIGNING)
            .expect("aws-lc ML-DSA-87 key generation failed");
        let sk = inner
            .private_key()
            .as_raw_bytes()
            .expect("aws-lc exports a key it generated");
        Keypair {
            pk: inner.public_key().as_ref().to_vec(),
            sk: Zeroizing::new(sk.as_ref().to_vec()),
            inner,
        }
    }

    /// Rebuilds a pair from its bytes (the 4,896-byte expanded secret key, as pqcrypto and
    /// key files store it), checking both lengths. Use [`Keypair::is_consistent`] to check
    /// that the halves belong together.
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
        let inner =
            PqdsaKeyPair::from_raw_private_key(&ML_DSA_87_SIGNING, secret_key).map_err(|e| {
                Error::InvalidKey {
                    what: "ML-DSA-87 secret key",
                    reason: e.to_string(),
                }
            })?;
        Ok(Keypair {
            pk: public_key.to_vec(),
            sk: Zeroizing::new(secret_key.to_vec()),
            inner,
        })
    }

    /// The key pair FIPS 204 derives from a 32-byte seed (`ML-DSA.KeyGen_internal`): the same
    /// seed gives the same keys in every conforming implementation. For tests and
    /// reproducible fixtures; node keys come from [`Keypair::generate`].
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let inner =
            PqdsaKeyPair::from_seed(&ML_DSA_87_SIGNING, seed).map_err(|e| Error::InvalidKey {
                what: "ML-DSA-87 seed",
                reason: e.to_string(),
            })?;
        let sk = inner
            .private_key()
            .as_raw_bytes()
            .map_err(|e| Error::InvalidKey {
                what: "ML-DSA-87 secret key",
                reason: e.to_string(),
            })?;
        Ok(Keypair {
            pk: inner.public_key().as_ref().to_vec(),
            sk: Zeroizing::new(sk.as_ref().to_vec()),
            inner,
        })
    }

    /// True if the secret key belongs to the public key: the public key recomputed from the
    /// secret key is the stored one, and a probe signature verifies under it.
    pub fn is_consistent(&self) -> bool {
        let probe = b"citychain/keycheck";
        self.inner.public_key().as_ref() == self.pk.as_slice()
            && MlDsa87.verify(&self.pk, probe, &self.sign(probe)).is_ok()
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

    /// Signs `msg` (pure ML-DSA-87, empty context, hedged).
    ///
    /// # Panics
    /// If aws-lc fails to sign, which only an allocation failure inside it can cause.
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; SIGNATURE_LEN];
        let n = self
            .inner
            .sign(msg, &mut sig)
            .expect("aws-lc ML-DSA-87 signing failed");
        sig.truncate(n);
        sig
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
        assert!(again.is_consistent());
        // Halves of two different pairs load, but are not consistent.
        let other = Keypair::generate();
        let mixed = Keypair::from_bytes(other.public_key(), kp.secret_bytes()).unwrap();
        assert!(!mixed.is_consistent());
        // The same seed gives the same pair; the secret half round-trips.
        let a = Keypair::from_seed(&[5; 32]).unwrap();
        let b = Keypair::from_seed(&[5; 32]).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.secret_bytes(), b.secret_bytes());
        assert!(
            Keypair::from_bytes(a.public_key(), a.secret_bytes())
                .unwrap()
                .is_consistent()
        );
    }
}
