//! A tx's offline proof of ordering and federation ([`TxProof`]): the committed batch that
//! carries it, the checkpoint naming that batch, and the continent's [`FederationProof`] of
//! the certified checkpoint. Pure data and checks, no I/O: a client verifies it with the
//! city committee and the continent's public key alone.

use crate::federation::{
    CheckpointHeader, FEDERATION_VERSION, FederationError, FederationProof, LogKind,
    MAX_FEDERATION_MESSAGE_BYTES,
};
use dag_core::consensus::{BatchHeader, BatchItem, Checkpoint, Committee, MAX_BATCH_ITEMS};
use dag_core::{DecodeError, Hash32, NodeId, Reader, TxId, Writer};

/// Most batch digests a checkpoint in a proof may name.
pub const MAX_PROOF_CHECKPOINT_BATCHES: usize = 100_000;
/// Largest encoded [`TxProof`].
pub const MAX_TX_PROOF_BYTES: usize = 8 * 1024 * 1024;

/// Why a proof does not verify: one variant per check, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The batch does not carry the tx as `BatchItem::Tx`.
    #[error("batch {} does not carry tx {tx}", batch.short())]
    TxNotInBatch {
        /// The tx.
        tx: TxId,
        /// The batch digest.
        batch: Hash32,
    },
    /// The batch's digest is not among the checkpoint's batches.
    #[error("batch {} is not ordered by checkpoint {sequence}", batch.short())]
    BatchNotInCheckpoint {
        /// The batch digest.
        batch: Hash32,
        /// The checkpoint's sequence.
        sequence: u64,
    },
    /// The certified header is not the header of this checkpoint.
    #[error("the certified header is not checkpoint {sequence}'s header")]
    HeaderMismatch {
        /// The checkpoint's sequence.
        sequence: u64,
    },
    /// The certificate names a signer outside the committee.
    #[error("certificate signer {} is not a committee member", signer.short())]
    NotMember {
        /// The signer.
        signer: NodeId,
    },
    /// A certificate signature does not verify.
    #[error("certificate signature of {} does not verify", signer.short())]
    BadCertificateSignature {
        /// The signer.
        signer: NodeId,
    },
    /// The certificate's valid signatures are not a quorum by stake.
    #[error("certificate has stake {have}, a quorum needs {need}")]
    NoQuorum {
        /// Stake signed.
        have: u64,
        /// Quorum stake.
        need: u64,
    },
    /// The certificate is malformed (unsorted or repeated signers).
    #[error("certificate malformed: {0}")]
    MalformedCertificate(String),
    /// The receipt's leaf is not the certificate's leaf hash.
    #[error("receipt leaf is not the certificate's leaf hash")]
    LeafMismatch,
    /// The inclusion path is not for the receipt's index and size, or does not lead to the
    /// receipt's root.
    #[error("inclusion path does not lead to the receipt's root: {0}")]
    BadPath(String),
    /// The receipt names another log than the continent key given.
    #[error("receipt is signed by {}, not the given continent", log.short())]
    WrongContinent {
        /// The log named in the receipt.
        log: NodeId,
    },
    /// The continent's receipt signature does not verify.
    #[error("continent receipt signature does not verify")]
    BadReceiptSignature,
}

/// What a verified [`TxProof`] establishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedOrdering {
    /// The checkpoint sequence that ordered the tx.
    pub sequence: u64,
    /// The committed leader's round.
    pub leader_round: u64,
    /// The checkpoint's leaf index in the continent log.
    pub log_index: u64,
    /// The continent log size the receipt's root is for.
    pub tree_size: u64,
}

impl FederationProof {
    /// Checks a federation proof offline: the certificate is a quorum of valid signatures
    /// of `committee`, the receipt's leaf is the certificate's leaf hash, the inclusion
    /// path leads from it to the receipt's root, and the receipt is signed by the
    /// continent holding `continent_public_key`.
    pub fn verify(
        &self,
        committee: &Committee,
        continent_public_key: &[u8],
    ) -> Result<(), ProofError> {
        self.certified.verify(committee).map_err(|e| match e {
            FederationError::NotMember { signer, .. } => ProofError::NotMember { signer },
            FederationError::BadSignature { signer, .. } => {
                ProofError::BadCertificateSignature { signer }
            }
            FederationError::NoQuorum { have, need, .. } => ProofError::NoQuorum { have, need },
            other => ProofError::MalformedCertificate(other.to_string()),
        })?;
        let r = &self.receipt;
        if self.certified.leaf_hash() != r.leaf {
            return Err(ProofError::LeafMismatch);
        }
        if self.proof.index != r.log_index || self.proof.size != r.tree_size || self.root != r.root
        {
            return Err(ProofError::BadPath(format!(
                "proof is for leaf {} of {} (root {}), receipt for leaf {} of {} (root {})",
                self.proof.index,
                self.proof.size,
                self.root.short(),
                r.log_index,
                r.tree_size,
                r.root.short()
            )));
        }
        self.proof
            .verify(&r.leaf, &r.root)
            .map_err(|e| ProofError::BadPath(e.to_string()))?;
        if NodeId::from_public_key(continent_public_key) != r.continent {
            return Err(ProofError::WrongContinent { log: r.continent });
        }
        r.verify(LogKind::Continent, continent_public_key)
            .map_err(|_| ProofError::BadReceiptSignature)
    }
}

/// A tx's proof of ordering (the committed batch carrying it, the checkpoint ordering that
/// batch) and of federation (the certified checkpoint in the continent log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxProof {
    /// The tx.
    pub tx_id: TxId,
    /// The committed batch that carries the tx as `BatchItem::Tx(tx_id)`.
    pub batch: BatchHeader,
    /// The checkpoint whose batches include the batch's digest.
    pub checkpoint: Checkpoint,
    /// The certified header of that checkpoint in the continent log.
    pub federation: FederationProof,
}

impl TxProof {
    /// Checks everything offline, in order: the batch carries the tx; the batch's digest
    /// (BLAKE3 of its canonical encoding) is in the checkpoint; the certified header is
    /// `CheckpointHeader::of(city, checkpoint)` (so its running hash is the checkpoint's
    /// hash); then [`FederationProof::verify`] (quorum, leaf, path, continent signature).
    pub fn verify(
        &self,
        city_committee: &Committee,
        continent_public_key: &[u8],
    ) -> Result<VerifiedOrdering, ProofError> {
        let digest = self.batch.digest();
        if !self.batch.items.contains(&BatchItem::Tx(self.tx_id)) {
            return Err(ProofError::TxNotInBatch {
                tx: self.tx_id,
                batch: digest.0,
            });
        }
        if !self.checkpoint.batches.contains(&digest) {
            return Err(ProofError::BatchNotInCheckpoint {
                batch: digest.0,
                sequence: self.checkpoint.sequence,
            });
        }
        let header = &self.federation.certified.header;
        let expected = CheckpointHeader {
            state_hash: header.state_hash,
            ..CheckpointHeader::of(header.city, &self.checkpoint)
        };
        if *header != expected {
            return Err(ProofError::HeaderMismatch {
                sequence: self.checkpoint.sequence,
            });
        }
        self.federation
            .verify(city_committee, continent_public_key)?;
        Ok(VerifiedOrdering {
            sequence: self.checkpoint.sequence,
            leader_round: self.checkpoint.leader_round,
            log_index: self.federation.receipt.log_index,
            tree_size: self.federation.receipt.tree_size,
        })
    }

    /// Canonical encoding: version u8 ‖ tx id 32 ‖ u32 length ‖ batch header ‖ u32 length ‖
    /// checkpoint ‖ u32 length ‖ federation proof ‖ global flag u8 (0: no global part yet).
    pub fn encode(&self) -> Vec<u8> {
        let batch = self.batch.encode();
        let cp = self.checkpoint.encode();
        let fed = self.federation.encode();
        let mut w = Writer::with_capacity(1 + 32 + 12 + batch.len() + cp.len() + fed.len() + 1);
        w.u8(FEDERATION_VERSION)
            .raw(self.tx_id.as_bytes())
            .bytes_u32(&batch)
            .bytes_u32(&cp)
            .bytes_u32(&fed)
            .u8(0);
        w.finish()
    }

    /// Strict decoding of [`TxProof::encode`], at most [`MAX_TX_PROOF_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_TX_PROOF_BYTES {
            return Err(DecodeError::TooLong {
                field: "tx proof",
                len: bytes.len(),
                max: MAX_TX_PROOF_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let v = r.u8("tx proof version")?;
        if v != FEDERATION_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let tx_id = TxId::from_bytes(r.bytes32("tx id")?);
        let batch =
            BatchHeader::decode(r.bytes_u32("batch", 64 + 33 * MAX_BATCH_ITEMS + 32 * 1024)?)?;
        let checkpoint = Checkpoint::decode(
            r.bytes_u32("checkpoint", 100 + 32 * MAX_PROOF_CHECKPOINT_BATCHES)?,
            MAX_PROOF_CHECKPOINT_BATCHES,
        )?;
        let federation = FederationProof::decode(
            r.bytes_u32("federation proof", MAX_FEDERATION_MESSAGE_BYTES)?,
        )?;
        if r.u8("global flag")? != 0 {
            return Err(DecodeError::Invalid {
                field: "global flag",
                reason: "global inclusion is not supported in version 1",
            });
        }
        r.finish()?;
        Ok(TxProof {
            tx_id,
            batch,
            checkpoint,
            federation,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::federation::{CertifiedCheckpoint, InclusionReceipt, sign_share};
    use dag_core::Signer;
    use dag_core::merkle::{InclusionProof, MerkleLog};
    use pqc::Keypair;

    struct Fixture {
        committee: Committee,
        continent: Keypair,
        proof: TxProof,
        keys: Vec<Keypair>,
    }

    fn tx(i: u8) -> TxId {
        TxId::from_bytes([i; 32])
    }

    fn fixture() -> Fixture {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let committee =
            Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
        let batch = BatchHeader {
            round: 3,
            author: keys[1].node_id(),
            timestamp_ms: 1_700_000_000_000,
            parents: vec![],
            items: vec![BatchItem::Tx(tx(1)), BatchItem::Tx(tx(2))],
        };
        let other = BatchHeader {
            items: vec![BatchItem::Tx(tx(9))],
            ..batch.clone()
        };
        let checkpoint = Checkpoint {
            sequence: 2,
            leader_round: 4,
            leader: other.digest(),
            batches: vec![batch.digest(), other.digest()],
            prev_hash: Hash32([7; 32]),
        };
        let header = CheckpointHeader::of(Hash32::digest(b"JP-13"), &checkpoint);
        let certified = CertifiedCheckpoint::new(
            header,
            keys[..3].iter().map(|k| sign_share(&header, k)).collect(),
        );
        let mut log = MerkleLog::new();
        log.append(b"zero");
        log.append(b"one");
        let index = log.append_leaf_hash(certified.leaf_hash());
        log.append(b"three");
        let size = index + 1;
        let continent = Keypair::generate();
        let root = log.root_at(size).unwrap();
        let receipt = InclusionReceipt::sign(
            LogKind::Continent,
            index,
            size,
            root,
            certified.leaf_hash(),
            &continent,
        );
        let path = log.inclusion_proof(index, size).unwrap();
        Fixture {
            committee,
            proof: TxProof {
                tx_id: tx(2),
                batch,
                checkpoint,
                federation: FederationProof {
                    certified,
                    receipt,
                    proof: InclusionProof { index, size, path },
                    root,
                },
            },
            continent,
            keys,
        }
    }

    #[test]
    fn a_valid_proof_verifies_and_round_trips() {
        let f = fixture();
        let v = f
            .proof
            .verify(&f.committee, f.continent.public_key())
            .unwrap();
        assert_eq!(
            v,
            VerifiedOrdering {
                sequence: 2,
                leader_round: 4,
                log_index: 2,
                tree_size: 3
            }
        );
        let bytes = f.proof.encode();
        assert_eq!(TxProof::decode(&bytes).unwrap(), f.proof);
        assert!(TxProof::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TxProof::decode(&longer).is_err());
        let mut v9 = bytes;
        v9[0] = 9;
        assert!(TxProof::decode(&v9).is_err());
    }

    /// Applies `tamper` to a valid proof and checks the named failure.
    fn check(tamper: impl FnOnce(&mut Fixture), expected: impl Fn(&ProofError) -> bool) {
        let mut f = fixture();
        tamper(&mut f);
        let e = f
            .proof
            .verify(&f.committee, f.continent.public_key())
            .unwrap_err();
        assert!(expected(&e), "unexpected {e:?}");
    }

    #[test]
    fn each_tampering_fails_with_its_own_error() {
        check(
            |f| f.proof.tx_id = tx(9),
            |e| matches!(e, ProofError::TxNotInBatch { .. }),
        );
        check(
            |f| {
                f.proof.checkpoint.batches.remove(0);
            },
            // The checkpoint no longer names the batch.
            |e| matches!(e, ProofError::BatchNotInCheckpoint { .. }),
        );
        check(
            |f| f.proof.batch.items.push(BatchItem::Tx(tx(3))),
            |e| matches!(e, ProofError::BatchNotInCheckpoint { .. }),
        );
        check(
            |f| {
                // Another checkpoint that still names the batch: its header differs.
                f.proof.checkpoint.leader_round = 6;
            },
            |e| matches!(e, ProofError::HeaderMismatch { .. }),
        );
        check(
            |f| f.proof.federation.certified.signatures[1].1[100] ^= 1,
            |e| matches!(e, ProofError::BadCertificateSignature { .. }),
        );
        check(
            |f| {
                f.proof.federation.certified.signatures.pop();
            },
            |e| matches!(e, ProofError::NoQuorum { have: 2, need: 3 }),
        );
        check(
            |f| {
                let stranger = Keypair::generate();
                let h = f.proof.federation.certified.header;
                let mut sigs = f.proof.federation.certified.signatures.clone();
                sigs.push(sign_share(&h, &stranger));
                f.proof.federation.certified = CertifiedCheckpoint::new(h, sigs);
            },
            |e| matches!(e, ProofError::NotMember { .. }),
        );
        check(
            |f| {
                // A fourth member's valid share changes the leaf the receipt is for.
                let h = f.proof.federation.certified.header;
                let mut sigs = f.proof.federation.certified.signatures.clone();
                sigs.push(sign_share(&h, &f.keys[3]));
                f.proof.federation.certified = CertifiedCheckpoint::new(h, sigs);
            },
            |e| matches!(e, ProofError::LeafMismatch),
        );
        check(
            |f| f.proof.federation.proof.path[0].0[0] ^= 1,
            |e| matches!(e, ProofError::BadPath(_)),
        );
        check(
            |f| f.proof.federation.proof.index = 1,
            |e| matches!(e, ProofError::BadPath(_)),
        );
        check(
            |f| f.continent = Keypair::generate(),
            |e| matches!(e, ProofError::WrongContinent { .. }),
        );
        check(
            |f| f.proof.federation.receipt.signature[5] ^= 1,
            |e| matches!(e, ProofError::BadReceiptSignature),
        );
    }
}
