//! Cheap test doubles of the signature ports (keyed BLAKE3), so simulations of hundreds of
//! seeds run in seconds. **Not secure**: anyone knowing the public key can sign. Only in
//! tests and behind the `test-utils` feature.

use crate::{NodeId, SignatureError, SignatureVerifier, Signer};

/// Signs `msg` as `BLAKE3_keyed(BLAKE3(public key), msg)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSigner {
    public_key: Vec<u8>,
}

impl TestSigner {
    /// The signer with public key `"test-key-" ‖ seed`.
    pub fn new(seed: u64) -> Self {
        let mut public_key = b"test-key-".to_vec();
        public_key.extend_from_slice(&seed.to_le_bytes());
        TestSigner { public_key }
    }
    /// The node id of its key.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key)
    }
    fn tag(public_key: &[u8], msg: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(blake3::hash(public_key).as_bytes(), msg).as_bytes()
    }
}

impl Signer for TestSigner {
    fn public_key(&self) -> &[u8] {
        &self.public_key
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        Self::tag(&self.public_key, msg).to_vec()
    }
}

/// Verifies [`TestSigner`] signatures.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestVerifier;

impl SignatureVerifier for TestVerifier {
    fn verify(&self, public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        if sig.len() != 32 {
            return Err(SignatureError::BadLength {
                expected: 32,
                got: sig.len(),
            });
        }
        if TestSigner::tag(public_key, msg) == sig {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}
