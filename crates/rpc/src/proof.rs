//! A tx's offline proof of ordering and federation ([`TxProof`]): the committed batch that
//! carries it, the checkpoint naming that batch, the continent's [`FederationProof`] of
//! the certified checkpoint and, once the global logged a continent head covering it, a
//! [`GlobalAnchor`]. Pure data and checks, no I/O: a client verifies it with the
//! city committee and the continent's public key alone.

use crate::federation::{
    CheckpointHeader, FEDERATION_VERSION, FederationError, FederationProof, InclusionReceipt,
    LogKind, MAX_FEDERATION_MESSAGE_BYTES, SignedTreeHead,
};
use dag_core::consensus::{BatchHeader, BatchItem, Checkpoint, Committee, MAX_BATCH_ITEMS};
use dag_core::merkle::{ConsistencyProof, InclusionProof};
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
    /// [`TxProof::verify_global`] on a proof without a global anchor.
    #[error("the proof has no global anchor yet")]
    NoGlobalAnchor,
    /// The anchored continent head is not signed by the continent.
    #[error("the anchored continent tree head does not verify")]
    BadContinentHead,
    /// The anchored continent head is older than the receipt's tree.
    #[error("anchored head of size {head} is older than the receipt's tree of {receipt}")]
    AnchorTooOld {
        /// The head's size.
        head: u64,
        /// The receipt's tree size.
        receipt: u64,
    },
    /// The anchored head does not extend the receipt's tree (consistency fails).
    #[error("anchored head does not extend the receipt's tree: {0}")]
    AnchorInconsistent(String),
    /// The global receipt's leaf is not the anchored head's leaf hash.
    #[error("global receipt leaf is not the anchored head's leaf hash")]
    GlobalLeafMismatch,
    /// The global inclusion path is not for the global receipt or does not lead to its root.
    #[error("global inclusion path does not lead to the global receipt's root: {0}")]
    GlobalBadPath(String),
    /// The global receipt names another log than the global key given.
    #[error("global receipt is signed by {}, not the given global", log.short())]
    WrongGlobal {
        /// The log named in the receipt.
        log: NodeId,
    },
    /// The global's receipt signature does not verify.
    #[error("global receipt signature does not verify")]
    BadGlobalSignature,
}

/// A continent tree head logged by the global, covering a continent receipt's tree: the
/// continent's signed head, the consistency proof from the receipt's tree size to the
/// head's size, and the global's receipt and inclusion path for that head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalAnchor {
    /// The continent's signed tree head the global logged.
    pub head: SignedTreeHead,
    /// Consistency from the continent receipt's tree size to `head.size` (an empty path
    /// when the sizes are equal).
    pub consistency: ConsistencyProof,
    /// The global's receipt for `head`.
    pub receipt: InclusionReceipt,
    /// Inclusion of `head` in the global log at `receipt.tree_size`.
    pub proof: InclusionProof,
}

impl GlobalAnchor {
    /// Checks that `head` (signed by the continent) extends the tree of the continent
    /// receipt `covered`, and that the global logged it (path and signature).
    pub fn verify(
        &self,
        covered: &InclusionReceipt,
        continent_public_key: &[u8],
        global_public_key: &[u8],
    ) -> Result<(), ProofError> {
        let h = &self.head;
        h.verify(continent_public_key)
            .map_err(|_| ProofError::BadContinentHead)?;
        if h.log_id != covered.continent {
            return Err(ProofError::BadContinentHead);
        }
        if h.size < covered.tree_size {
            return Err(ProofError::AnchorTooOld {
                head: h.size,
                receipt: covered.tree_size,
            });
        }
        if h.size == covered.tree_size {
            if h.root != covered.root {
                return Err(ProofError::AnchorInconsistent(
                    "same size, another root".into(),
                ));
            }
        } else {
            let c = &self.consistency;
            if c.old_size != covered.tree_size || c.new_size != h.size {
                return Err(ProofError::AnchorInconsistent(format!(
                    "proof is from {} to {}, needed {} to {}",
                    c.old_size, c.new_size, covered.tree_size, h.size
                )));
            }
            c.verify(&covered.root, &h.root)
                .map_err(|e| ProofError::AnchorInconsistent(e.to_string()))?;
        }
        let r = &self.receipt;
        if r.leaf != h.leaf_hash() {
            return Err(ProofError::GlobalLeafMismatch);
        }
        if self.proof.index != r.log_index || self.proof.size != r.tree_size {
            return Err(ProofError::GlobalBadPath(format!(
                "proof is for leaf {} of {}, receipt for leaf {} of {}",
                self.proof.index, self.proof.size, r.log_index, r.tree_size
            )));
        }
        self.proof
            .verify(&r.leaf, &r.root)
            .map_err(|e| ProofError::GlobalBadPath(e.to_string()))?;
        if NodeId::from_public_key(global_public_key) != r.continent {
            return Err(ProofError::WrongGlobal { log: r.continent });
        }
        r.verify(LogKind::Global, global_public_key)
            .map_err(|_| ProofError::BadGlobalSignature)
    }

    /// Canonical encoding: version u8 ‖ u16 length ‖ head ‖ u16 length ‖ consistency ‖
    /// u16 length ‖ receipt ‖ u16 length ‖ inclusion proof.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16_000);
        w.u8(FEDERATION_VERSION)
            .bytes_u16(&self.head.encode())
            .bytes_u16(&self.consistency.encode())
            .bytes_u16(&self.receipt.encode())
            .bytes_u16(&self.proof.encode());
        w.finish()
    }

    /// Strict decoding of [`GlobalAnchor::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("anchor version")?;
        if v != FEDERATION_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let max = u16::MAX as usize;
        let a = GlobalAnchor {
            head: SignedTreeHead::decode(r.bytes_u16("anchor head", max)?)?,
            consistency: ConsistencyProof::decode(r.bytes_u16("anchor consistency", max)?)?,
            receipt: InclusionReceipt::decode(r.bytes_u16("anchor receipt", max)?)?,
            proof: InclusionProof::decode(r.bytes_u16("anchor proof", max)?)?,
        };
        r.finish()?;
        Ok(a)
    }
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
    /// A continent head covering that leaf, logged by the global (None until the global
    /// logged one).
    pub global: Option<GlobalAnchor>,
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

    /// [`TxProof::verify`], then the global anchor ([`GlobalAnchor::verify`]) against the
    /// global's key; [`ProofError::NoGlobalAnchor`] without one.
    pub fn verify_global(
        &self,
        city_committee: &Committee,
        continent_public_key: &[u8],
        global_public_key: &[u8],
    ) -> Result<VerifiedOrdering, ProofError> {
        let v = self.verify(city_committee, continent_public_key)?;
        self.global
            .as_ref()
            .ok_or(ProofError::NoGlobalAnchor)?
            .verify(
                &self.federation.receipt,
                continent_public_key,
                global_public_key,
            )?;
        Ok(v)
    }

    /// Canonical encoding: version u8 ‖ tx id 32 ‖ u32 length ‖ batch header ‖ u32 length ‖
    /// checkpoint ‖ u32 length ‖ federation proof ‖ global flag u8 (0: none, 1: followed by
    /// u32 length ‖ [`GlobalAnchor`]).
    pub fn encode(&self) -> Vec<u8> {
        let batch = self.batch.encode();
        let cp = self.checkpoint.encode();
        let fed = self.federation.encode();
        let mut w = Writer::with_capacity(1 + 32 + 12 + batch.len() + cp.len() + fed.len() + 1);
        w.u8(FEDERATION_VERSION)
            .raw(self.tx_id.as_bytes())
            .bytes_u32(&batch)
            .bytes_u32(&cp)
            .bytes_u32(&fed);
        match &self.global {
            Some(g) => w.u8(1).bytes_u32(&g.encode()),
            None => w.u8(0),
        };
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
        let global = match r.u8("global flag")? {
            0 => None,
            1 => Some(GlobalAnchor::decode(
                r.bytes_u32("global anchor", 64 * 1024)?,
            )?),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "global flag",
                    reason: "expected 0 or 1",
                });
            }
        };
        r.finish()?;
        Ok(TxProof {
            tx_id,
            batch,
            checkpoint,
            federation,
            global,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::federation::{CertifiedCheckpoint, InclusionReceipt, sign_share};
    use dag_core::Signer;
    use dag_core::merkle::MerkleLog;
    use pqc::Keypair;

    struct Fixture {
        committee: Committee,
        continent: Keypair,
        global: Keypair,
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
            epoch: 0,
            round: 3,
            author: keys[1].node_id(),
            timestamp_ms: 1_700_000_000_000,
            parents: vec![],
            weak_links: vec![],
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
        // The global logged a later continent head (size 4) as its leaf 1.
        let global = Keypair::generate();
        let head = SignedTreeHead::sign(4, log.root(), 1_700_000_000_000, &continent);
        let mut glog = MerkleLog::new();
        glog.append(b"another continent's head");
        let gi = glog.append(&head.encode());
        let g_receipt = InclusionReceipt::sign(
            LogKind::Global,
            gi,
            gi + 1,
            glog.root(),
            head.leaf_hash(),
            &global,
        );
        let anchor = GlobalAnchor {
            consistency: ConsistencyProof {
                old_size: size,
                new_size: 4,
                path: log.consistency_proof(size, 4).unwrap(),
            },
            head,
            receipt: g_receipt,
            proof: InclusionProof {
                index: gi,
                size: gi + 1,
                path: glog.inclusion_proof(gi, gi + 1).unwrap(),
            },
        };
        Fixture {
            committee,
            global,
            proof: TxProof {
                global: Some(anchor),
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

    #[test]
    fn the_global_anchor_verifies_and_each_tampering_fails() {
        let f = fixture();
        let (c, g) = (f.continent.public_key(), f.global.public_key());
        f.proof.verify_global(&f.committee, c, g).unwrap();
        let gcheck = |tamper: &dyn Fn(&mut GlobalAnchor),
                      expected: &dyn Fn(&ProofError) -> bool| {
            let mut p = f.proof.clone();
            tamper(p.global.as_mut().unwrap());
            let e = p.verify_global(&f.committee, c, g).unwrap_err();
            assert!(expected(&e), "unexpected {e:?}");
        };
        gcheck(&|a| a.head.root.0[0] ^= 1, &|e| {
            matches!(e, ProofError::BadContinentHead)
        });
        gcheck(&|a| a.consistency.path[0].0[0] ^= 1, &|e| {
            matches!(e, ProofError::AnchorInconsistent(_))
        });
        gcheck(&|a| a.receipt.leaf.0[0] ^= 1, &|e| {
            matches!(e, ProofError::GlobalLeafMismatch)
        });
        gcheck(&|a| a.proof.path[0].0[0] ^= 1, &|e| {
            matches!(e, ProofError::GlobalBadPath(_))
        });
        gcheck(&|a| a.receipt.signature[9] ^= 1, &|e| {
            matches!(e, ProofError::BadGlobalSignature)
        });
        let e = f
            .proof
            .verify_global(&f.committee, c, Keypair::generate().public_key())
            .unwrap_err();
        assert!(matches!(e, ProofError::WrongGlobal { .. }), "{e:?}");
        let mut none = f.proof.clone();
        none.global = None;
        assert_eq!(
            none.verify_global(&f.committee, c, g).unwrap_err(),
            ProofError::NoGlobalAnchor
        );
        assert_eq!(TxProof::decode(&none.encode()).unwrap(), none);
        // A head older than the receipt's tree cannot cover the leaf.
        let mut old = f.proof.clone();
        let a = old.global.as_mut().unwrap();
        a.head = SignedTreeHead::sign(2, Hash32([1; 32]), 1, &f.continent);
        let e = old.verify_global(&f.committee, c, g).unwrap_err();
        assert!(
            matches!(
                e,
                ProofError::AnchorTooOld {
                    head: 2,
                    receipt: 3
                }
            ),
            "{e:?}"
        );
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
