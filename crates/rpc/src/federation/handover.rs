//! A city's committee change as the continent learns it: the [`CommitteeHandover`] (the new
//! epoch's members, where its checkpoints start, and the old epoch's last checkpoint it
//! continues), certified by a quorum of the OLD committee ([`CertifiedHandover`]).

use super::{FEDERATION_VERSION, FederationError, MAX_CERTIFICATE_SIGNERS, hash, version};
use dag_core::consensus::{Committee, Stake};
use dag_core::{
    DecodeError, Hash32, MAX_KEY_LEN, MAX_SIGNATURE_LEN, NodeId, Reader, SignatureVerifier, Signer,
    Writer,
};
use pqc::MlDsa87;

/// Domain tag of an old-committee member's signature on a [`CommitteeHandover`].
pub const CITY_HANDOVER_DOMAIN: &[u8] = b"citychain/city-handover/v1";
/// Most members of a handed-over committee.
pub const MAX_HANDOVER_MEMBERS: usize = 256;

/// The committee a city runs from checkpoint `last_sequence + 1` on (consensus epoch
/// `epoch`), continuing the old epoch whose last checkpoint is `last_sequence` with running
/// hash `last_running_hash`. Members are `(ML-DSA-87 public key, stake)` in committee index
/// order; decoding insists they form a valid committee (non-empty, stakes > 0, no key
/// twice).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitteeHandover {
    /// The city.
    pub city: Hash32,
    /// The new consensus epoch (>= 1).
    pub epoch: u64,
    /// Sequence of the old epoch's last checkpoint.
    pub last_sequence: u64,
    /// That checkpoint's running hash.
    pub last_running_hash: Hash32,
    /// The new committee: `(public key, stake)` in index order.
    pub members: Vec<(Vec<u8>, u64)>,
}

impl CommitteeHandover {
    /// The handover to `committee` for `epoch`, after checkpoint `last_sequence` whose
    /// running hash is `last_running_hash`.
    pub fn of(
        city: Hash32,
        epoch: u64,
        last_sequence: u64,
        last_running_hash: Hash32,
        committee: &Committee,
    ) -> Self {
        CommitteeHandover {
            city,
            epoch,
            last_sequence,
            last_running_hash,
            members: committee
                .authorities()
                .iter()
                .map(|a| (a.public_key.clone(), a.stake))
                .collect(),
        }
    }

    /// The first checkpoint the new committee certifies (`None` on overflow, which
    /// decoding refuses).
    pub fn first_sequence(&self) -> Option<u64> {
        self.last_sequence.checked_add(1)
    }

    /// The new committee, tagged with its epoch (`None` if the members are not a valid
    /// committee; a decoded handover always is one).
    pub fn committee(&self) -> Option<Committee> {
        Committee::new(self.members.clone()).map(|c| c.with_epoch(self.epoch))
    }

    /// Canonical encoding: version u8 ‖ city 32 ‖ epoch u64 ‖ last_sequence u64 ‖
    /// last_running_hash 32 ‖ count u16 ‖ (u16 length ‖ public key ‖ stake u64) per member.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write(&mut w);
        w.finish()
    }

    fn encoded_len(&self) -> usize {
        1 + 32
            + 8
            + 8
            + 32
            + 2
            + self
                .members
                .iter()
                .map(|(k, _)| 10 + k.len())
                .sum::<usize>()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(FEDERATION_VERSION)
            .raw(&self.city.0)
            .u64(self.epoch)
            .u64(self.last_sequence)
            .raw(&self.last_running_hash.0)
            .u16(u16::try_from(self.members.len()).unwrap_or(u16::MAX));
        for (key, stake) in &self.members {
            w.bytes_u16(key).u64(*stake);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        version(r, "handover version")?;
        let city = hash(r, "city")?;
        let epoch = r.u64("epoch")?;
        let last_sequence = r.u64("last_sequence")?;
        let last_running_hash = hash(r, "last_running_hash")?;
        let n = r.count_u16("members", MAX_HANDOVER_MEMBERS)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let key = r.bytes_u16("member key", MAX_KEY_LEN)?.to_vec();
            let stake = r.u64("member stake")?;
            members.push((key, stake));
        }
        let h = CommitteeHandover {
            city,
            epoch,
            last_sequence,
            last_running_hash,
            members,
        };
        if h.epoch == 0 {
            return Err(DecodeError::Invalid {
                field: "epoch",
                reason: "epoch 0 is the genesis committee, never handed over",
            });
        }
        if h.first_sequence().is_none() {
            return Err(DecodeError::Invalid {
                field: "last_sequence",
                reason: "no checkpoint can follow it",
            });
        }
        if h.committee().is_none() {
            return Err(DecodeError::Invalid {
                field: "members",
                reason: "not a committee: empty, a zero stake, a key twice or stake overflow",
            });
        }
        Ok(h)
    }

    /// Strict decoding of [`CommitteeHandover::encode`]: at most [`MAX_HANDOVER_MEMBERS`]
    /// members, keys at most [`MAX_KEY_LEN`] bytes, a valid committee, epoch >= 1.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let h = Self::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    /// What an old-committee member signs: [`CITY_HANDOVER_DOMAIN`] ‖
    /// [`CommitteeHandover::encode`].
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(CITY_HANDOVER_DOMAIN.len() + self.encoded_len());
        m.extend_from_slice(CITY_HANDOVER_DOMAIN);
        m.extend_from_slice(&self.encode());
        m
    }
}

/// One old-committee member's signature share on `handover`: `(its node id, signature)`.
pub fn sign_handover_share(
    handover: &CommitteeHandover,
    signer: &(impl Signer + ?Sized),
) -> (NodeId, Vec<u8>) {
    (
        NodeId::from_public_key(signer.public_key()),
        signer.sign(&handover.signing_message()),
    )
}

/// A handover with signatures of the OLD committee's members. Canonical form like
/// [`super::CertifiedCheckpoint`]: sorted by node id, each signer once. One signature is a
/// share the continent pools; more than one must be a quorum of the old committee alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertifiedHandover {
    /// The certified handover.
    pub handover: CommitteeHandover,
    /// `(old member's node id, signature over [`CommitteeHandover::signing_message`])`.
    pub signatures: Vec<(NodeId, Vec<u8>)>,
}

impl CertifiedHandover {
    /// The canonical certificate: signatures sorted by node id, a repeated signer's later
    /// signatures dropped.
    pub fn new(handover: CommitteeHandover, mut signatures: Vec<(NodeId, Vec<u8>)>) -> Self {
        signatures.sort_by_key(|a| a.0);
        signatures.dedup_by(|later, first| later.0 == first.0);
        CertifiedHandover {
            handover,
            signatures,
        }
    }

    /// Whether the signatures are sorted by node id with no signer twice.
    pub fn is_canonical(&self) -> bool {
        self.signatures.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Canonical encoding: version u8 ‖ u32 length ‖ handover ‖ count u16 ‖ (node id 32 ‖
    /// u16 length ‖ signature) per signer, by node id.
    pub fn encode(&self) -> Vec<u8> {
        let handover = self.handover.encode();
        let sigs: usize = self.signatures.iter().map(|(_, s)| 34 + s.len()).sum();
        let mut w = Writer::with_capacity(1 + 4 + handover.len() + 2 + sigs);
        w.u8(FEDERATION_VERSION)
            .bytes_u32(&handover)
            .u16(u16::try_from(self.signatures.len()).unwrap_or(u16::MAX));
        for (id, sig) in &self.signatures {
            w.raw(id.as_bytes()).bytes_u16(sig);
        }
        w.finish()
    }

    /// Strict decoding: a valid handover, at most [`MAX_CERTIFICATE_SIGNERS`] signers,
    /// node ids strictly ascending, signatures at most [`MAX_SIGNATURE_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r, "certified handover version")?;
        let max_handover = 1 + 32 + 8 + 8 + 32 + 2 + MAX_HANDOVER_MEMBERS * (10 + MAX_KEY_LEN);
        let handover = CommitteeHandover::decode(r.bytes_u32("handover", max_handover)?)?;
        let n = r.count_u16("signatures", MAX_CERTIFICATE_SIGNERS)?;
        let mut signatures: Vec<(NodeId, Vec<u8>)> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = NodeId::from_bytes(r.bytes32("signer")?);
            if signatures.last().is_some_and(|(last, _)| *last >= id) {
                return Err(DecodeError::Invalid {
                    field: "signer",
                    reason: "signers must be sorted by node id, each once",
                });
            }
            let sig = r.bytes_u16("signature", MAX_SIGNATURE_LEN)?.to_vec();
            signatures.push((id, sig));
        }
        r.finish()?;
        Ok(CertifiedHandover {
            handover,
            signatures,
        })
    }

    /// Checks every signature against the OLD committee with ML-DSA-87 and that they are
    /// a quorum of it; returns the signed stake. See [`CertifiedHandover::verify_with`].
    pub fn verify(&self, old_committee: &Committee) -> Result<Stake, FederationError> {
        self.verify_with(old_committee, &MlDsa87)
    }

    /// [`CertifiedHandover::verify_signatures`] plus the quorum
    /// ([`FederationError::NoQuorum`], its `sequence` the handover's `last_sequence`).
    pub fn verify_with(
        &self,
        old_committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Stake, FederationError> {
        let stake = self.verify_signatures(old_committee, verifier)?;
        if !old_committee.is_quorum(stake) {
            return Err(FederationError::NoQuorum {
                city: self.handover.city,
                sequence: self.handover.last_sequence,
                have: stake,
                need: super::quorum_stake(old_committee),
            });
        }
        Ok(stake)
    }

    /// Checks order, that every signer is a member of `old_committee`
    /// ([`FederationError::NotMember`]) and every signature is valid
    /// ([`FederationError::BadSignature`], its `sequence` the handover's `last_sequence`);
    /// not the quorum. Returns the signed stake.
    pub fn verify_signatures(
        &self,
        old_committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Stake, FederationError> {
        if !self.is_canonical() {
            return Err(FederationError::Malformed(
                "handover signers must be sorted by node id, each once".into(),
            ));
        }
        let city = self.handover.city;
        let msg = self.handover.signing_message();
        let mut stake: Stake = 0;
        for (id, sig) in &self.signatures {
            let member = old_committee
                .authority(id)
                .ok_or(FederationError::NotMember { city, signer: *id })?;
            verifier
                .verify(&member.public_key, &msg, sig)
                .map_err(|_| FederationError::BadSignature {
                    city,
                    sequence: self.handover.last_sequence,
                    signer: *id,
                })?;
            stake = stake.saturating_add(member.stake);
        }
        Ok(stake)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pqc::Keypair;

    fn keys(n: usize) -> (Vec<Keypair>, Committee) {
        let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate()).collect();
        let c = Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
        (keys, c)
    }

    fn handover(new: &Committee) -> CommitteeHandover {
        CommitteeHandover::of(Hash32([1; 32]), 2, 9, Hash32([4; 32]), new)
    }

    #[test]
    fn handovers_round_trip_and_decode_strictly() {
        let (_, new) = keys(3);
        let h = handover(&new);
        let bytes = h.encode();
        assert_eq!(CommitteeHandover::decode(&bytes).unwrap(), h);
        assert_eq!(h.first_sequence(), Some(10));
        assert_eq!(h.committee().unwrap().epoch(), 2);
        assert_eq!(
            h.committee().unwrap().authorities(),
            new.authorities(),
            "the members keep their index order"
        );
        // Truncated, longer, another version: refused.
        assert!(CommitteeHandover::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CommitteeHandover::decode(&longer).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            CommitteeHandover::decode(&v2),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        // Not a committee, epoch 0, a last sequence nothing can follow: refused.
        let check_invalid =
            |h: CommitteeHandover, field: &str| match CommitteeHandover::decode(&h.encode()) {
                Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            };
        check_invalid(
            CommitteeHandover {
                members: vec![],
                ..h.clone()
            },
            "members",
        );
        check_invalid(
            CommitteeHandover {
                members: vec![h.members[0].clone(), h.members[0].clone()],
                ..h.clone()
            },
            "members",
        );
        check_invalid(
            CommitteeHandover {
                members: vec![(h.members[0].0.clone(), 0)],
                ..h.clone()
            },
            "members",
        );
        check_invalid(
            CommitteeHandover {
                epoch: 0,
                ..h.clone()
            },
            "epoch",
        );
        check_invalid(
            CommitteeHandover {
                last_sequence: u64::MAX,
                ..h.clone()
            },
            "last_sequence",
        );
        // Too many members: refused by the count bound before reading them.
        let mut w = Writer::default();
        w.u8(FEDERATION_VERSION)
            .raw(&[1; 32])
            .u64(1)
            .u64(1)
            .raw(&[0; 32])
            .u16(MAX_HANDOVER_MEMBERS as u16 + 1);
        assert!(matches!(
            CommitteeHandover::decode(&w.finish()),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn certified_handovers_are_canonical_and_strict() {
        let (_, new) = keys(2);
        let a = (NodeId::from_bytes([2; 32]), vec![1; 10]);
        let b = (NodeId::from_bytes([1; 32]), vec![2; 10]);
        let c = CertifiedHandover::new(handover(&new), vec![a.clone(), b.clone(), a.clone()]);
        assert_eq!(c.signatures, vec![b.clone(), a.clone()]);
        assert_eq!(CertifiedHandover::decode(&c.encode()).unwrap(), c);
        let unsorted = CertifiedHandover {
            handover: handover(&new),
            signatures: vec![a.clone(), b],
        };
        assert!(CertifiedHandover::decode(&unsorted.encode()).is_err());
        let twice = CertifiedHandover {
            handover: handover(&new),
            signatures: vec![a.clone(), a],
        };
        assert!(CertifiedHandover::decode(&twice.encode()).is_err());
        let bytes = c.encode();
        assert!(CertifiedHandover::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(CertifiedHandover::decode(&longer).is_err());
    }

    #[test]
    fn only_a_quorum_of_the_old_committee_certifies() {
        let (old_keys, old) = keys(4);
        let (new_keys, new) = keys(4);
        let h = handover(&new);
        let shares: Vec<_> = old_keys
            .iter()
            .map(|k| sign_handover_share(&h, k))
            .collect();
        let three = CertifiedHandover::new(h.clone(), shares[..3].to_vec());
        assert_eq!(three.verify(&old).unwrap(), 3);
        let two = CertifiedHandover::new(h.clone(), shares[..2].to_vec());
        assert!(matches!(
            two.verify(&old),
            Err(FederationError::NoQuorum {
                have: 2,
                need: 3,
                sequence: 9,
                ..
            })
        ));
        assert_eq!(two.verify_signatures(&old, &MlDsa87).unwrap(), 2);
        // The new committee certifying itself is not a handover the old one made.
        let self_made = CertifiedHandover::new(
            h.clone(),
            new_keys[..3]
                .iter()
                .map(|k| sign_handover_share(&h, k))
                .collect(),
        );
        assert!(matches!(
            self_made.verify(&old),
            Err(FederationError::NotMember { .. })
        ));
        // A forged signature, or signatures over another handover, do not verify.
        let mut forged = shares[..3].to_vec();
        forged[1].1[5] ^= 1;
        assert!(matches!(
            CertifiedHandover::new(h.clone(), forged).verify(&old),
            Err(FederationError::BadSignature { .. })
        ));
        let other = CommitteeHandover {
            last_sequence: 10,
            ..h.clone()
        };
        assert!(matches!(
            CertifiedHandover::new(other, shares[..3].to_vec()).verify(&old),
            Err(FederationError::BadSignature { .. })
        ));
        // A checkpoint share's signature is not a handover signature (domains differ).
        let header = super::super::CheckpointHeader {
            city: h.city,
            sequence: 9,
            leader_round: 1,
            leader: Hash32([0; 32]),
            prev_hash: Hash32([0; 32]),
            running_hash: h.last_running_hash,
            batches: 0,
            state_hash: Hash32([0; 32]),
        };
        let cross: Vec<_> = old_keys[..3]
            .iter()
            .map(|k| super::super::sign_share(&header, k))
            .collect();
        assert!(matches!(
            CertifiedHandover::new(h, cross).verify(&old),
            Err(FederationError::BadSignature { .. })
        ));
    }
}
