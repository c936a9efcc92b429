//! The commit rule (Bullshark style, on the certified DAG), the deterministic linearisation
//! of a committed leader's causal history, and checkpoints.
//!
//! - Even rounds have a leader ([`Committee::leader`]). The leader's certificate of round
//!   `r` is committed **directly** when certificates of round `r + 1` whose authors hold at
//!   least f + 1 stake ([`Committee::is_validity`]) name it as a parent.
//! - When a leader commits, the earlier leaders since the last commit are walked from newest
//!   to oldest: a leader reachable (through parent links) from the last leader kept is
//!   committed **indirectly** before it; an unreachable one is **skipped**.
//! - Each committed leader's not-yet-committed causal history — everything reachable through
//!   parents **and weak links** — is ordered by (round, author id, digest) and closed by a
//!   [`Checkpoint`] that chains the hash of the previous one. Weak links only widen the
//!   history that is ordered; support and reachability between leaders use parents alone,
//!   so the argument below is unchanged.
//!
//! Why the order is the same everywhere: a batch's links are fixed by its digest, so a
//! leader's causal history is the same set on every node that stores the leader (a stored
//! batch's links are stored too); the committed leaders and hence the already-committed sets
//! agree, and the sort key is total. A late certificate that some later certified batch
//! weak-links is ordered, once, by the first committed leader whose history reaches it.
//!
//! Why every honest node commits the same leaders: if a node commits leader L of round r
//! directly, f + 1 stake of round r + 1 links to L; every certificate of round r + 2 has
//! parents with 2f + 1 stake, which share an author with those f + 1 (certificates are
//! unique per author and round), so every later certificate, in particular every later
//! leader, reaches L. Hence no node skips L, and all order it in the same place.

use super::{BatchDigest, BatchItem, Committee, DagStore, Round, VerifiedCertificate, domain};
use crate::{DecodeError, Hash32, Reader, Writer};
use std::collections::{HashMap, HashSet};

/// The record of one committed leader: which batches, in which order, chained to the
/// previous checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// 0 for the first committed leader, then +1 each.
    pub sequence: u64,
    /// The leader's round.
    pub leader_round: Round,
    /// The leader's batch.
    pub leader: BatchDigest,
    /// The committed batches in order (the leader last).
    pub batches: Vec<BatchDigest>,
    /// [`Checkpoint::hash`] of the previous checkpoint (zero for the first).
    pub prev_hash: Hash32,
}

impl Checkpoint {
    /// Canonical encoding: sequence u64 ‖ leader_round u64 ‖ leader 32 ‖ count u32 ‖
    /// digests 32 each ‖ prev_hash 32.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(8 + 8 + 32 + 4 + 32 * self.batches.len() + 32);
        w.u64(self.sequence)
            .u64(self.leader_round)
            .raw(self.leader.as_bytes());
        w.u32(u32::try_from(self.batches.len()).unwrap_or(u32::MAX));
        for d in &self.batches {
            w.raw(d.as_bytes());
        }
        w.raw(&self.prev_hash.0);
        w.finish()
    }

    /// Strict decoding (at most `max_batches` digests).
    pub fn decode(bytes: &[u8], max_batches: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let sequence = r.u64("sequence")?;
        let leader_round = r.u64("leader_round")?;
        let leader = BatchDigest(Hash32(r.bytes32("leader")?));
        let n = r.count_u32("batches", max_batches)?;
        let mut batches = Vec::with_capacity(n.min(r.remaining() / 32));
        for _ in 0..n {
            batches.push(BatchDigest(Hash32(r.bytes32("batch")?)));
        }
        let prev_hash = Hash32(r.bytes32("prev_hash")?);
        r.finish()?;
        Ok(Checkpoint {
            sequence,
            leader_round,
            leader,
            batches,
            prev_hash,
        })
    }

    /// The running hash: `BLAKE3(domain::CHECKPOINT ‖ encode())`. Equal hashes at one
    /// sequence number mean equal histories up to there.
    pub fn hash(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(domain::CHECKPOINT);
        h.update(&self.encode());
        Hash32(*h.finalize().as_bytes())
    }
}

/// Where an instance's checkpoint chain starts: [`ChainStart::default`] is genesis
/// (sequence 0, zero hash); a new epoch starts right after the previous epoch's last
/// checkpoint ([`ChainStart::after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainStart {
    /// Sequence of the first checkpoint.
    pub next_sequence: u64,
    /// Hash the first checkpoint chains (its `prev_hash`).
    pub prev_hash: Hash32,
}

impl ChainStart {
    /// The chain continuing after `checkpoint`.
    pub fn after(checkpoint: &Checkpoint) -> Self {
        ChainStart {
            next_sequence: checkpoint.sequence + 1,
            prev_hash: checkpoint.hash(),
        }
    }
}

/// One committed leader with its newly ordered batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedSubDag {
    /// The checkpoint (digests in order).
    pub checkpoint: Checkpoint,
    /// The certificates in the same order.
    pub batches: Vec<VerifiedCertificate>,
}

impl CommittedSubDag {
    /// Every payload item in commit order with the batch that carried it. Items repeated
    /// across batches (two representatives proposing one tx) appear each time; the first
    /// occurrence is the one that counts.
    pub fn items(&self) -> impl Iterator<Item = (&VerifiedCertificate, &BatchItem)> + '_ {
        self.batches
            .iter()
            .flat_map(|c| c.batch().header.items.iter().map(move |i| (c, i)))
    }
}

/// The commit rule's state: what is already committed.
#[derive(Debug, Clone, Default)]
pub struct Committer {
    last_leader_round: Option<Round>,
    committed: HashMap<BatchDigest, Round>,
    next_sequence: u64,
    last_hash: Hash32,
}

impl Committer {
    /// Nothing committed yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Nothing committed yet in this instance, its checkpoints continuing a chain: the first
    /// has `start.next_sequence` and chains `start.prev_hash` (a new epoch's consensus
    /// continues the previous epoch's checkpoints without a gap).
    pub fn starting_at(start: ChainStart) -> Self {
        Committer {
            next_sequence: start.next_sequence,
            last_hash: start.prev_hash,
            ..Self::default()
        }
    }
    /// Round of the last committed leader.
    pub fn last_committed_round(&self) -> Option<Round> {
        self.last_leader_round
    }
    /// Whether a batch is committed (and not pruned).
    pub fn is_committed(&self, digest: &BatchDigest) -> bool {
        self.committed.contains_key(digest)
    }
    /// Number of checkpoints produced.
    pub fn checkpoints(&self) -> u64 {
        self.next_sequence
    }
    /// Hash of the last checkpoint (zero before the first).
    pub fn last_checkpoint_hash(&self) -> Hash32 {
        self.last_hash
    }
    /// Forgets committed digests below `round` (after [`DagStore::prune_below`] with the
    /// same round).
    pub fn prune_below(&mut self, round: Round) {
        self.committed.retain(|_, r| *r >= round);
    }

    /// Certificates of `round + 1` naming `leader` as a parent, by stake.
    pub fn support(
        store: &DagStore,
        committee: &Committee,
        leader: &BatchDigest,
        round: Round,
    ) -> u64 {
        store
            .round(round + 1)
            .filter(|c| c.parents().contains(leader))
            .map(|c| committee.stake_of(&c.author()))
            .sum()
    }

    /// Whether `to` is in the strong causal history of `from` (following parent links only,
    /// not weak links: the commit rule's reachability between leaders).
    pub fn linked(store: &DagStore, from: &VerifiedCertificate, to: &VerifiedCertificate) -> bool {
        if from.round() <= to.round() {
            return from.digest() == to.digest();
        }
        let mut frontier: HashSet<BatchDigest> = from.parents().iter().copied().collect();
        for _ in (to.round() + 1)..from.round() {
            frontier = frontier
                .iter()
                .filter_map(|d| store.get(d))
                .flat_map(|c| c.parents().iter().copied())
                .collect();
            if frontier.is_empty() {
                return false;
            }
        }
        frontier.contains(&to.digest())
    }

    /// Runs the commit rule over the current DAG and returns the newly committed leaders'
    /// sub-DAGs, oldest first (empty if nothing new commits).
    pub fn try_commit(&mut self, store: &DagStore, committee: &Committee) -> Vec<CommittedSubDag> {
        let Some(highest) = store.highest_round() else {
            return Vec::new();
        };
        let start = self.last_leader_round.map_or(0, |r| r + 2);
        if highest < start + 1 {
            return Vec::new();
        }
        // Highest directly committed leader.
        let mut r = highest - 1;
        if r % 2 == 1 {
            r -= 1;
        }
        let anchor = loop {
            if let Some(l) = store.by_author(r, &committee.leader(r))
                && committee.is_validity(Self::support(store, committee, &l.digest(), r))
            {
                break l;
            }
            if r < start + 2 {
                return Vec::new();
            }
            r -= 2;
        };
        // Earlier leaders reachable from it: indirect commits; the rest are skipped.
        let mut chain = vec![anchor];
        let mut cur = anchor;
        let mut lr = anchor.round();
        while lr >= start + 2 {
            lr -= 2;
            if let Some(l) = store.by_author(lr, &committee.leader(lr))
                && Self::linked(store, cur, l)
            {
                chain.push(l);
                cur = l;
            }
        }
        let mut out = Vec::with_capacity(chain.len());
        for leader in chain.into_iter().rev() {
            out.push(self.commit_leader(store, leader));
        }
        out
    }

    fn commit_leader(&mut self, store: &DagStore, leader: &VerifiedCertificate) -> CommittedSubDag {
        let mut batches = Vec::new();
        let mut stack = vec![leader.digest()];
        let mut seen: HashSet<BatchDigest> = HashSet::new();
        seen.insert(leader.digest());
        while let Some(d) = stack.pop() {
            let Some(c) = store.get(&d) else { continue };
            batches.push(c.clone());
            for p in c.parents().iter().chain(c.weak_links()) {
                if !self.committed.contains_key(p) && store.contains(p) && seen.insert(*p) {
                    stack.push(*p);
                }
            }
        }
        batches.sort_by_key(|c| (c.round(), c.author(), c.digest()));
        for c in &batches {
            self.committed.insert(c.digest(), c.round());
        }
        let checkpoint = Checkpoint {
            sequence: self.next_sequence,
            leader_round: leader.round(),
            leader: leader.digest(),
            batches: batches.iter().map(|c| c.digest()).collect(),
            prev_hash: self.last_hash,
        };
        self.next_sequence += 1;
        self.last_hash = checkpoint.hash();
        self.last_leader_round = Some(leader.round());
        CommittedSubDag {
            checkpoint,
            batches,
        }
    }
}
