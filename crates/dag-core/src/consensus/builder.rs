//! A test builder that reads DAGs from a small text description, so commit-rule tests are
//! one-liners.
//!
//! # The DSL
//! One line per round (blank lines and `#` comments ignored; `;` also separates lines):
//! ```text
//! r0: A B C D
//! r1: A B C<-[A,B,D] D<-*
//! ```
//! - `rN:` names the round; then one entry per author that has a certified batch there.
//! - Authors are capital letters: `A` is committee member 0, `B` member 1, …
//! - `X` or `X<-*`: X's batch names every batch of round N − 1 present so far.
//! - `X<-[A,B,D]`: X's batch names exactly the batches of A, B and D in round N − 1.
//! - `X~[D1,B0]` or `X<-[A,B,D]~[D1]`: X's batch also weak-links the batches labelled `D1`
//!   and `B0` (of rounds ≤ N − 2, already built).
//!
//! Each entry becomes a batch signed by its author, certified by every member's vote
//! (test-double signatures), verified and inserted into a [`DagStore`], so the store's
//! rules apply: too few parents is an error naming the line. Batches are labelled
//! `<author><round>` (`B2`) for assertions.

use super::{
    BatchDigest, BatchHeader, BatchItem, Certificate, CommittedSubDag, Committee, Committer,
    DagStore, Round, SignedBatch, Stake, TestSigner, TestVerifier, Vote,
};
use crate::Signer;
use std::collections::HashMap;

/// Builds DAGs from text and runs the commit rule on them.
#[derive(Debug, Clone)]
pub struct DagBuilder {
    signers: Vec<TestSigner>,
    committee: Committee,
    store: DagStore,
    committer: Committer,
    labels: HashMap<BatchDigest, String>,
}

impl DagBuilder {
    /// `n` members with equal stake (at most 26), round-robin leaders.
    pub fn new(n: usize) -> Self {
        Self::with_stakes(&vec![1; n])
    }

    /// Members with the given stakes (at most 26).
    pub fn with_stakes(stakes: &[Stake]) -> Self {
        assert!(
            !stakes.is_empty() && stakes.len() <= 26,
            "1 to 26 authorities"
        );
        let signers: Vec<TestSigner> = (0..stakes.len() as u64).map(TestSigner::new).collect();
        let committee = Committee::new(
            signers
                .iter()
                .zip(stakes)
                .map(|(s, st)| (s.public_key().to_vec(), *st))
                .collect(),
        )
        .expect("distinct test keys and non-zero stakes");
        DagBuilder {
            signers,
            committee,
            store: DagStore::new(),
            committer: Committer::new(),
            labels: HashMap::new(),
        }
    }

    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
    /// The DAG built so far.
    pub fn store(&self) -> &DagStore {
        &self.store
    }
    /// Member `index`'s signer.
    pub fn signer(&self, index: usize) -> &TestSigner {
        &self.signers[index]
    }

    /// A batch by member `author` (signed, not certified), without weak links.
    pub fn batch(
        &self,
        author: usize,
        round: Round,
        parents: Vec<BatchDigest>,
        items: Vec<BatchItem>,
    ) -> SignedBatch {
        self.batch_with_weak_links(author, round, parents, Vec::new(), items)
    }

    /// A batch by member `author` (signed, not certified) with weak links.
    pub fn batch_with_weak_links(
        &self,
        author: usize,
        round: Round,
        parents: Vec<BatchDigest>,
        weak_links: Vec<BatchDigest>,
        items: Vec<BatchItem>,
    ) -> SignedBatch {
        let header = BatchHeader {
            epoch: self.committee.epoch(),
            round,
            author: self.signers[author].node_id(),
            timestamp_ms: round * 1000,
            parents,
            weak_links,
            items,
        };
        SignedBatch::sign(header, &self.signers[author])
    }

    /// A certificate of `batch` with votes from the members in `voters`.
    pub fn certify(&self, batch: SignedBatch, voters: &[usize]) -> Certificate {
        let digest = batch.digest();
        let votes = voters
            .iter()
            .map(|v| {
                let s = &self.signers[*v];
                let vote = Vote::sign(digest, s.node_id(), s);
                (vote.voter, vote.signature)
            })
            .collect();
        Certificate { batch, votes }
    }

    /// Verifies and inserts a certificate, labelling it `<author><round>`.
    pub fn insert(&mut self, cert: Certificate) -> super::Result<bool> {
        let verified = cert.verify(&self.committee, &TestVerifier)?;
        let label = format!(
            "{}{}",
            letter(self.committee.index_of(&verified.author()).unwrap_or(0)),
            verified.round()
        );
        let digest = verified.digest();
        let new = self.store.insert(verified, &self.committee)?;
        self.labels.insert(digest, label);
        Ok(new)
    }

    /// Reads a DSL description (see the module docs) and inserts its batches.
    pub fn parse(&mut self, text: &str) -> Result<(), String> {
        let all: Vec<usize> = (0..self.signers.len()).collect();
        for (lineno, raw) in text.split(['\n', ';']).enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |m: String| format!("line {} `{line}`: {m}", lineno + 1);
            let (head, rest) = line
                .split_once(':')
                .ok_or_else(|| err("expected `rN: …`".into()))?;
            let round: Round = head
                .trim()
                .strip_prefix('r')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| err("expected a round like `r3`".into()))?;
            for entry in rest.split_whitespace() {
                let (entry_links, weak) = match entry.split_once('~') {
                    Some((e, w)) => (e, Some(w)),
                    None => (entry, None),
                };
                let (who, parents) = match entry_links.split_once("<-") {
                    Some((w, p)) => (w, Some(p)),
                    None => (entry_links, None),
                };
                let mut weak_links = Vec::new();
                if let Some(list) = weak {
                    let inner = list
                        .strip_prefix('[')
                        .and_then(|l| l.strip_suffix(']'))
                        .ok_or_else(|| err(format!("expected `~[D1,…]` in `{entry}`")))?;
                    for l in inner.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                        weak_links.push(
                            self.digest(l)
                                .ok_or_else(|| err(format!("no batch {l} to weak-link")))?,
                        );
                    }
                }
                let author = self
                    .index(who)
                    .ok_or_else(|| err(format!("unknown author `{who}`")))?;
                let parent_digests = if round == 0 {
                    Vec::new()
                } else {
                    match parents {
                        None | Some("*") => {
                            self.store.round(round - 1).map(|c| c.digest()).collect()
                        }
                        Some(list) => {
                            let inner = list
                                .strip_prefix('[')
                                .and_then(|l| l.strip_suffix(']'))
                                .ok_or_else(|| err(format!("expected `[A,B,…]` in `{entry}`")))?;
                            let mut ds = Vec::new();
                            for p in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                                let i = self
                                    .index(p)
                                    .ok_or_else(|| err(format!("unknown parent `{p}`")))?;
                                let id = self.signers[i].node_id();
                                let c = self.store.by_author(round - 1, &id).ok_or_else(|| {
                                    err(format!("no batch {p}{} to name as parent", round - 1))
                                })?;
                                ds.push(c.digest());
                            }
                            ds
                        }
                    }
                };
                let cert = self.certify(
                    self.batch_with_weak_links(
                        author,
                        round,
                        parent_digests,
                        weak_links,
                        Vec::new(),
                    ),
                    &all,
                );
                self.insert(cert)
                    .map_err(|e| err(format!("{who}{round}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Runs the commit rule on what is built so far (incrementally: a second call commits
    /// only what is new).
    pub fn commit(&mut self) -> Vec<CommittedSubDag> {
        self.committer.try_commit(&self.store, &self.committee)
    }

    /// Commits and describes the result: committed leaders separated by spaces, e.g.
    /// `"A0 C4"`; with `with_batches`, each leader followed by its ordered batches, e.g.
    /// `"A0[A0] B2[A1 B1 C1 D1 B2]"`.
    pub fn commit_trace(&mut self, with_batches: bool) -> String {
        let subs = self.commit();
        subs.iter()
            .map(|s| {
                let leader = self.label(&s.checkpoint.leader);
                if with_batches {
                    let bs: Vec<String> =
                        s.checkpoint.batches.iter().map(|d| self.label(d)).collect();
                    format!("{leader}[{}]", bs.join(" "))
                } else {
                    leader
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The label of a batch built here (`"?"` for unknown digests).
    pub fn label(&self, digest: &BatchDigest) -> String {
        self.labels
            .get(digest)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    /// The digest of a labelled batch (`"B2"`).
    pub fn digest(&self, label: &str) -> Option<BatchDigest> {
        self.labels
            .iter()
            .find(|(_, l)| l.as_str() == label)
            .map(|(d, _)| *d)
    }

    fn index(&self, who: &str) -> Option<usize> {
        let mut chars = who.chars();
        let c = chars.next()?;
        if chars.next().is_some() || !c.is_ascii_uppercase() {
            return None;
        }
        let i = (c as u8 - b'A') as usize;
        (i < self.signers.len()).then_some(i)
    }
}

fn letter(i: usize) -> char {
    (b'A' + (i % 26) as u8) as char
}
