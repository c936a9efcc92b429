//! Storage receipts (PoH_ACK): a holder's signed statement that it stores one shard.

use crate::{
    DecodeError, Error, NodeId, Reader, Result, ShardHash, SignatureVerifier, StripeId, Writer,
};
use serde::{Deserialize, Serialize};

/// What a holder attests: it stores shard `shard_index` of stripe `stripe_id`, whose bytes
/// hash to `shard_hash`, since `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The stripe (micro-batch).
    pub stripe_id: StripeId,
    /// Index of the shard in the stripe.
    pub shard_index: u16,
    /// BLAKE3 of the shard bytes.
    pub shard_hash: ShardHash,
    /// The holder.
    pub holder: NodeId,
    /// Holder's clock when it stored the shard, ms since the Unix epoch.
    pub time_ms: u64,
}

impl Receipt {
    /// Canonical encoding: stripe id, index (u16), shard hash, holder, time (u64).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 * 3 + 10);
        w.raw(self.stripe_id.as_bytes())
            .u16(self.shard_index)
            .raw(self.shard_hash.as_bytes())
            .raw(self.holder.as_bytes())
            .u64(self.time_ms);
        w.finish()
    }
    fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        Ok(Receipt {
            stripe_id: StripeId::from_bytes(r.bytes32("stripe_id")?),
            shard_index: r.u16("shard_index")?,
            shard_hash: ShardHash::from_bytes(r.bytes32("shard_hash")?),
            holder: NodeId::from_bytes(r.bytes32("holder")?),
            time_ms: r.u64("time_ms")?,
        })
    }
    /// The message the holder signs: `domain::RECEIPT ‖ encode()`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = crate::domain::RECEIPT.to_vec();
        m.extend_from_slice(&self.encode());
        m
    }
}

/// A receipt with the holder's public key and signature, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// Holder's ML-DSA-87 public key; its BLAKE3 must equal `receipt.holder`.
    pub holder_public_key: Vec<u8>,
    /// Signature over [`Receipt::signing_message`].
    pub signature: Vec<u8>,
}

impl SignedReceipt {
    /// Signs a receipt.
    pub fn sign(receipt: Receipt, signer: &(impl crate::Signer + ?Sized)) -> Self {
        SignedReceipt {
            signature: signer.sign(&receipt.signing_message()),
            holder_public_key: signer.public_key().to_vec(),
            receipt,
        }
    }

    /// Canonical encoding: receipt, then key and signature with u16 lengths.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&self.receipt.encode())
            .bytes_u16(&self.holder_public_key)
            .bytes_u16(&self.signature);
        w.finish()
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let receipt = Receipt::read(&mut r)?;
        let holder_public_key = r
            .bytes_u16("holder_public_key", crate::MAX_KEY_LEN)?
            .to_vec();
        let signature = r.bytes_u16("signature", crate::MAX_SIGNATURE_LEN)?.to_vec();
        r.finish()?;
        Ok(SignedReceipt {
            receipt,
            holder_public_key,
            signature,
        })
    }

    /// Checks the key belongs to the holder and the signature verifies.
    pub fn verify(self, verifier: &(impl SignatureVerifier + ?Sized)) -> Result<VerifiedReceipt> {
        let actual = NodeId::from_public_key(&self.holder_public_key);
        if actual != self.receipt.holder {
            return Err(Error::KeyMismatch {
                claimed: self.receipt.holder.to_hex(),
                actual: actual.to_hex(),
            });
        }
        verifier
            .verify(
                &self.holder_public_key,
                &self.receipt.signing_message(),
                &self.signature,
            )
            .map_err(|source| Error::BadSignature {
                what: format!(
                    "receipt for shard {} of stripe {} by {}",
                    self.receipt.shard_index,
                    self.receipt.stripe_id.short(),
                    self.receipt.holder.short()
                ),
                source,
            })?;
        Ok(VerifiedReceipt(self))
    }
}

/// A receipt whose signature verified; only [`SignedReceipt::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt(SignedReceipt);

impl VerifiedReceipt {
    /// The statement.
    pub fn receipt(&self) -> &Receipt {
        &self.0.receipt
    }
    /// The signed form (to forward to others, who verify again).
    pub fn signed(&self) -> &SignedReceipt {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_round_trip() {
        let r = SignedReceipt {
            receipt: Receipt {
                stripe_id: StripeId::from_bytes([1; 32]),
                shard_index: 3,
                shard_hash: ShardHash::from_bytes([2; 32]),
                holder: NodeId::from_bytes([3; 32]),
                time_ms: 99,
            },
            holder_public_key: vec![7; 10],
            signature: vec![8; 20],
        };
        assert_eq!(SignedReceipt::decode(&r.encode()).unwrap(), r);
        let mut b = r.encode();
        b.push(1);
        assert!(SignedReceipt::decode(&b).is_err());
    }

    /// Accepts exactly the signature `msg ‖ key` (a stand-in for ML-DSA, which lives in pqc):
    /// enough to check what `verify` itself decides.
    struct Concat;
    impl crate::SignatureVerifier for Concat {
        fn verify(
            &self,
            public_key: &[u8],
            msg: &[u8],
            sig: &[u8],
        ) -> std::result::Result<(), crate::SignatureError> {
            if sig == [msg, public_key].concat() {
                Ok(())
            } else {
                Err(crate::SignatureError::Invalid)
            }
        }
    }

    fn signed_by(key: &[u8], holder: NodeId) -> SignedReceipt {
        let receipt = Receipt {
            stripe_id: StripeId::from_bytes([1; 32]),
            shard_index: 3,
            shard_hash: ShardHash::from_bytes([2; 32]),
            holder,
            time_ms: 99,
        };
        let signature = [receipt.signing_message().as_slice(), key].concat();
        SignedReceipt {
            receipt,
            holder_public_key: key.to_vec(),
            signature,
        }
    }

    #[test]
    fn verify_accepts_the_holders_key_and_refuses_another_or_a_bad_signature() {
        let key = [9u8; 16];
        let holder = NodeId::from_public_key(&key);
        let ok = signed_by(&key, holder).verify(&Concat).unwrap();
        assert_eq!(ok.receipt().holder, holder);

        // Signed correctly, but by a key that is not the claimed holder's.
        let other = NodeId::from_public_key(&[8u8; 16]);
        assert!(matches!(
            signed_by(&key, other).verify(&Concat),
            Err(Error::KeyMismatch { .. })
        ));

        // The holder's key, a signature over something else.
        let mut bad = signed_by(&key, holder);
        bad.receipt.time_ms += 1;
        assert!(matches!(
            bad.verify(&Concat),
            Err(Error::BadSignature { .. })
        ));
    }
}
