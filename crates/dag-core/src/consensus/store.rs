//! The DAG store: certified batches whose parents and weak links are present, indexed by
//! digest and by (round, author), with the set of batches nothing links to yet (the
//! candidates for weak links). In memory and pure; a node persists what it needs around it.

use super::{
    BatchDigest, BatchHeader, Committee, ConsensusError, Equivocation, Result, Round, Stake,
    VerifiedCertificate,
};
use crate::NodeId;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Certified batches forming a DAG: every stored batch's parents and weak links are stored
/// too (or were pruned below the garbage-collection round).
#[derive(Debug, Default, Clone)]
pub struct DagStore {
    certs: HashMap<BatchDigest, VerifiedCertificate>,
    rounds: BTreeMap<Round, BTreeMap<NodeId, BatchDigest>>,
    /// Stored batches no stored batch names as a parent or weak link, by (round, author).
    unreferenced: BTreeSet<(Round, NodeId, BatchDigest)>,
    pruned_below: Round,
}

impl DagStore {
    /// An empty DAG.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of stored certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
    /// Whether a certificate is stored.
    pub fn contains(&self, digest: &BatchDigest) -> bool {
        self.certs.contains_key(digest)
    }
    /// A stored certificate.
    pub fn get(&self, digest: &BatchDigest) -> Option<&VerifiedCertificate> {
        self.certs.get(digest)
    }
    /// The certificate of `author` in `round`.
    pub fn by_author(&self, round: Round, author: &NodeId) -> Option<&VerifiedCertificate> {
        self.rounds
            .get(&round)?
            .get(author)
            .and_then(|d| self.certs.get(d))
    }
    /// Certificates of one round, ordered by author id.
    pub fn round(&self, round: Round) -> impl Iterator<Item = &VerifiedCertificate> + '_ {
        self.rounds
            .get(&round)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|d| self.certs.get(d))
    }
    /// Highest round with a certificate.
    pub fn highest_round(&self) -> Option<Round> {
        self.rounds.keys().next_back().copied()
    }
    /// Total stake of the authors certified in `round`.
    pub fn round_stake(&self, round: Round, committee: &Committee) -> Stake {
        self.rounds
            .get(&round)
            .map_or(0, |m| m.keys().map(|a| committee.stake_of(a)).sum())
    }
    /// Rounds below this were pruned: parents there are taken as present.
    pub fn pruned_below(&self) -> Round {
        self.pruned_below
    }

    /// Stored batches that no stored batch names as a parent or weak link, lowest (round,
    /// author) first. Every stored batch is in the causal history of one of them, so a
    /// proposal naming the previous round as parents and the older ones as weak links has
    /// the whole local DAG in its causal history.
    pub fn unreferenced(&self) -> impl Iterator<Item = &VerifiedCertificate> + '_ {
        self.unreferenced
            .iter()
            .filter_map(|(_, _, d)| self.certs.get(d))
    }

    /// Parents and weak links of `header` that are not stored (nor pruned).
    pub fn missing_parents(&self, header: &BatchHeader) -> Vec<BatchDigest> {
        if header.round <= self.pruned_below {
            return Vec::new();
        }
        header
            .parents
            .iter()
            .chain(&header.weak_links)
            .filter(|p| !self.certs.contains_key(p))
            .copied()
            .collect()
    }

    /// The parent rule, also used by voters before voting: parents all stored, all of round
    /// `r − 1`, distinct authors, their stake a quorum; weak links all stored, of rounds
    /// ≤ `r − 2`, none twice. Round 0 has no parents; a header at or below the pruning round
    /// is not checked (its ancestry is already settled).
    pub fn check_parents(&self, header: &BatchHeader, committee: &Committee) -> Result<()> {
        let digest = || header.digest();
        if header.round == 0 {
            if !header.parents.is_empty() {
                return Err(ConsensusError::GenesisWithParents {
                    digest: digest(),
                    count: header.parents.len(),
                });
            }
            return Ok(());
        }
        if header.round <= self.pruned_below {
            return Ok(());
        }
        let missing = self.missing_parents(header);
        if !missing.is_empty() {
            return Err(ConsensusError::MissingParents {
                digest: digest(),
                round: header.round,
                missing,
            });
        }
        let mut authors: Vec<NodeId> = Vec::with_capacity(header.parents.len());
        let mut stake: Stake = 0;
        for p in &header.parents {
            let Some(parent) = self.certs.get(p) else {
                continue; // unreachable: checked above
            };
            if parent.round() + 1 != header.round {
                return Err(ConsensusError::WrongParentRound {
                    digest: digest(),
                    round: header.round,
                    parent: *p,
                    parent_round: parent.round(),
                });
            }
            if authors.contains(&parent.author()) {
                return Err(ConsensusError::DuplicateParent {
                    digest: digest(),
                    author: parent.author(),
                });
            }
            authors.push(parent.author());
            stake += committee.stake_of(&parent.author());
        }
        if !committee.is_quorum(stake) {
            return Err(ConsensusError::InsufficientParentStake {
                digest: digest(),
                round: header.round,
                stake,
                total: committee.total_stake(),
            });
        }
        for (i, l) in header.weak_links.iter().enumerate() {
            if header.weak_links[..i].contains(l) {
                return Err(ConsensusError::DuplicateWeakLink {
                    digest: digest(),
                    link: *l,
                });
            }
            let Some(linked) = self.certs.get(l) else {
                continue; // unreachable: checked above
            };
            if linked.round() + 2 > header.round {
                return Err(ConsensusError::WrongWeakLinkRound {
                    digest: digest(),
                    round: header.round,
                    link: *l,
                    link_round: linked.round(),
                });
            }
        }
        Ok(())
    }

    /// Stores a verified certificate whose parents pass [`DagStore::check_parents`].
    /// `Ok(true)` if new, `Ok(false)` if already stored (or pruned). A different certified
    /// batch by the same author in the same round is an [`ConsensusError::Equivocation`].
    /// On any error nothing is stored.
    pub fn insert(&mut self, cert: VerifiedCertificate, committee: &Committee) -> Result<bool> {
        let digest = cert.digest();
        if self.certs.contains_key(&digest) || (cert.round() < self.pruned_below) {
            return Ok(false);
        }
        if let Some(existing) = self.by_author(cert.round(), &cert.author()) {
            let evidence = Equivocation::new(existing.batch().clone(), cert.batch().clone())?;
            return Err(ConsensusError::Equivocation(Box::new(evidence)));
        }
        self.check_parents(&cert.batch().header, committee)?;
        for l in cert.parents().iter().chain(cert.weak_links()) {
            if let Some(c) = self.certs.get(l) {
                self.unreferenced.remove(&(c.round(), c.author(), *l));
            }
        }
        self.unreferenced
            .insert((cert.round(), cert.author(), digest));
        self.rounds
            .entry(cert.round())
            .or_default()
            .insert(cert.author(), digest);
        self.certs.insert(digest, cert);
        Ok(true)
    }

    /// Drops every round below `round` (call with a round well below the last commit; the
    /// committer no longer looks there).
    pub fn prune_below(&mut self, round: Round) {
        if round <= self.pruned_below {
            return;
        }
        let keep = self.rounds.split_off(&round);
        for m in self.rounds.values() {
            for d in m.values() {
                self.certs.remove(d);
            }
        }
        self.rounds = keep;
        self.unreferenced =
            self.unreferenced
                .split_off(&(round, NodeId::default(), BatchDigest::default()));
        self.pruned_below = round;
    }
}
