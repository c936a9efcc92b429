//! The consensus driver: a pure state machine a node runs over any transport. Messages and
//! clock ticks go in (with `now_ms`), messages to send, commits and evidence come out.
//!
//! Protocol, per representative and round `r`:
//! 1. **Propose** when the DAG holds certificates of round `r − 1` with 2f + 1 stake
//!    (round 0: at start). Before leaving an even round, wait up to `leader_timeout_ms` for
//!    its leader's certificate, so the next round can support the leader. The batch names
//!    every certificate of round `r − 1` held as a parent, every older certificate nothing
//!    links to yet as a **weak link** (below), and takes queued payload items. Earlier own
//!    proposals still collecting votes stay open (at most `max_open_proposals`).
//! 2. **Vote**: on a proposal, check signature, parents and weak links (fetching missing ones
//!    from the sender), vote at most once per (author, round), send the vote to the author.
//!    A second, different proposal for the same (author, round) yields [`Output::Evidence`].
//! 3. **Certify**: the author collects votes with 2f + 1 stake into a [`Certificate`],
//!    persists it, and broadcasts it. Receivers verify it, store it once its parents and
//!    weak links are present (fetching them otherwise), and run the commit rule.
//! 4. **Catch up**: a node seeing certificates above its round jumps to the highest round
//!    whose quorum it holds. Every `resend_ms` it re-broadcasts its uncertified proposals and
//!    its latest certificate, and re-requests missing parents, so lost messages are repaired.
//!
//! # Weak links: every certified batch commits, exactly once
//! A certificate can reach the others after they proposed the next round (a slow author, a
//! lost message, a partition healing): no batch of the next round names it as a parent, and
//! with parents alone no later leader's causal history would ever contain it — its items
//! would never be ordered. So, as in Narwhal and Mysticeti, a proposal of round `r` also
//! carries **weak links**: the digests of the certificates of rounds ≤ `r − 2` that the
//! proposer stores and that no stored certificate names yet ([`DagStore::unreferenced`]),
//! oldest first, at most `max_weak_links`, and none more than `gc_depth / 2` rounds old
//! (a voter could have pruned it; so a certificate that late is the one case left out).
//! Together with the parents this puts the proposer's DAG into the new batch's causal
//! history. Voters check weak links like
//! parents (stored or fetched, of rounds ≤ `r − 2`, no repeats, at most
//! [`MAX_WEAK_LINKS`](super::MAX_WEAK_LINKS)); the commit rule orders a leader's history
//! through parents and weak links alike (see [`Committer`]), while support for leaders
//! still counts parents only. A late certificate is thus committed by the first leader
//! whose history reaches it — once, because a committed batch is never ordered again.
//!
//! The author side keeps items safe as well: moving to the next round does not drop the own
//! proposal still collecting votes. Up to `max_open_proposals` of them stay open, so a
//! proposal whose votes arrive late (a straggler) is certified late — and then weak-linked —
//! rather than dropped, and its items are neither lost nor proposed twice. Only a proposal
//! that can no longer be certified — more than `gc_depth / 2` rounds behind, where voters
//! may have pruned its parents — is abandoned, and its items go back to the queue (its votes
//! are refused from then on, so it never commits; [`Consensus::recover`] applies the same
//! age rule to the persisted proposals).
//!
//! A host therefore never re-proposes items itself. After a restart it gives the driver
//! back, with [`Consensus::add_payload`], the items it handed over that are neither
//! committed (the replayed commits say which) nor carried by the driver
//! ([`Consensus::in_flight_items`]).

use super::{
    BatchDigest, BatchHeader, BatchItem, Certificate, ChainStart, CommittedSubDag, Committee,
    Committer, ConsensusError, DagStore, Equivocation, MAX_BATCH_ITEMS, MAX_WEAK_LINKS, Result,
    Round, SignedBatch, VerifiedCertificate, Vote, VotesAggregator,
};
use crate::{DecodeError, Hash32, NodeId, Reader, SignatureVerifier, Signer, Writer};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Tunables of the driver. `Default` holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// How long to wait for an even round's leader before moving on without it (ms). 2000.
    pub leader_timeout_ms: u64,
    /// Re-send period for the own uncertified proposal, the own latest certificate and
    /// fetches of missing parents (ms). 500.
    pub resend_ms: u64,
    /// Shortest time between two own proposals (ms): the dynamic batch interval
    /// ([`crate::BatchInterval`]); change it with [`Consensus::set_proposal_interval`]. 0.
    pub proposal_interval_ms: u64,
    /// Most own proposals collecting votes at once; with that many open, the member waits
    /// for one to be certified before proposing again. 64.
    pub max_open_proposals: usize,
    /// Most payload items per batch. [`MAX_BATCH_ITEMS`].
    pub max_batch_items: usize,
    /// Most weak links per own batch (the oldest unlinked certificates go first, the rest
    /// in the next batch). [`MAX_WEAK_LINKS`]; 0 turns weak links off (tests only: late
    /// certificates are then never committed).
    pub max_weak_links: usize,
    /// Most certificates in one fetch response. 1000.
    pub max_fetch: usize,
    /// Most certificates or proposals parked while their parents are fetched. 10 000.
    pub max_pending: usize,
    /// Rounds kept below the last committed leader before pruning. 1000.
    pub gc_depth: Round,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            leader_timeout_ms: 2000,
            resend_ms: 500,
            proposal_interval_ms: 0,
            max_open_proposals: 64,
            max_batch_items: MAX_BATCH_ITEMS,
            max_weak_links: MAX_WEAK_LINKS,
            max_fetch: 1000,
            max_pending: 10_000,
            gc_depth: 1000,
        }
    }
}

/// A request for certificates by digest, plus their ancestors above `have_round`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchRequest {
    /// Wanted certificates.
    pub digests: Vec<BatchDigest>,
    /// The requester holds (almost) everything up to this round; send ancestors above it.
    pub have_round: Round,
}

/// Messages between representatives (the `Consensus` gRPC service carries them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A signed batch asking for votes (ProposeBatch).
    Propose(SignedBatch),
    /// A vote for the receiver's batch (Vote).
    Vote(Vote),
    /// A certified batch (Certificate).
    Certificate(Certificate),
    /// Ask for missing certificates (FetchBatches request).
    Fetch(FetchRequest),
    /// Certificates answering a fetch, lowest round first (FetchBatches response).
    FetchResponse(Vec<Certificate>),
}

/// Most digests in a fetch request and certificates in a fetch response on the wire.
pub const MAX_FETCH: usize = 1000;

impl Message {
    /// Canonical encoding, for transports that carry opaque bytes: a tag byte
    /// (0 propose, 1 vote, 2 certificate, 3 fetch, 4 fetch response) and the value:
    /// propose/vote/certificate use their own encodings; fetch is `have_round u64 ‖ count
    /// u16 ‖ digests`; a fetch response is `count u16 ‖ (u32 length ‖ certificate)*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Propose(b) => {
                w.u8(0).raw(&b.encode());
            }
            Message::Vote(v) => {
                w.u8(1).raw(&v.encode());
            }
            Message::Certificate(c) => {
                w.u8(2).raw(&c.encode());
            }
            Message::Fetch(f) => {
                let n = f.digests.len().min(MAX_FETCH);
                w.u8(3).u64(f.have_round).u16(n as u16);
                for d in &f.digests[..n] {
                    w.raw(d.as_bytes());
                }
            }
            Message::FetchResponse(certs) => {
                let n = certs.len().min(MAX_FETCH);
                w.u8(4).u16(n as u16);
                for c in &certs[..n] {
                    w.bytes_u32(&c.encode());
                }
            }
        }
        w.finish()
    }

    /// Strict decoding of [`Message::encode`].
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Truncated {
            field: "message tag",
            needed: 1,
            had: 0,
        })?;
        Ok(match tag {
            0 => Message::Propose(SignedBatch::decode(rest)?),
            1 => Message::Vote(Vote::decode(rest)?),
            2 => Message::Certificate(Certificate::decode(rest)?),
            3 => {
                let mut r = Reader::new(rest);
                let have_round = r.u64("have_round")?;
                let n = r.count_u16("digests", MAX_FETCH)?;
                let mut digests = Vec::with_capacity(n.min(r.remaining() / 32));
                for _ in 0..n {
                    digests.push(BatchDigest(Hash32(r.bytes32("digest")?)));
                }
                r.finish()?;
                Message::Fetch(FetchRequest {
                    digests,
                    have_round,
                })
            }
            4 => {
                let mut r = Reader::new(rest);
                let n = r.count_u16("certificates", MAX_FETCH)?;
                let mut certs = Vec::with_capacity(n.min(r.remaining() / 64));
                for _ in 0..n {
                    certs.push(Certificate::decode(
                        r.bytes_u32("certificate", usize::MAX)?,
                    )?);
                }
                r.finish()?;
                Message::FetchResponse(certs)
            }
            _ => {
                return Err(DecodeError::Invalid {
                    field: "message tag",
                    reason: "expected 0..=4",
                });
            }
        })
    }
}

/// What the driver asks its host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to every other committee member.
    Broadcast(Message),
    /// Send to one member.
    Send {
        /// Recipient.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// A leader committed: its ordered sub-DAG and checkpoint, in commit order.
    Committed(CommittedSubDag),
    /// An author equivocated; hand to dpos (slashing).
    Evidence(Equivocation),
    /// Write this to durable storage **before** acting on the outputs that follow it, and
    /// give all records back to [`Consensus::recover`] after a restart: a representative
    /// that forgets its own proposals or votes would equivocate (and be slashed).
    Persist(Record),
}

/// A fact the host persists (see [`Output::Persist`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// This member's own proposal for a round.
    Proposed(SignedBatch),
    /// This member voted for `digest` as the batch of (`author`, `round`).
    Voted {
        /// The batch's author.
        author: NodeId,
        /// Its round.
        round: Round,
        /// The batch voted for.
        digest: BatchDigest,
    },
    /// A certificate entered the local DAG (also what FetchBatches serves after restart).
    Stored(Certificate),
}

/// One representative's consensus state machine. See the module docs for the protocol.
#[derive(Debug)]
pub struct Consensus<S, V> {
    me: NodeId,
    signer: S,
    verifier: V,
    committee: Committee,
    config: ConsensusConfig,
    store: DagStore,
    committer: Committer,
    /// Last round proposed in (None before genesis).
    proposed: Option<Round>,
    last_proposal_ms: u64,
    /// Own proposals still collecting votes, by round.
    open: BTreeMap<Round, VotesAggregator>,
    my_latest: Option<Certificate>,
    /// (round whose quorum we hold, since when): for the leader timeout.
    waiting: Option<(Round, u64)>,
    last_resend_ms: u64,
    resend_count: usize,
    payload: VecDeque<BatchItem>,
    headers: HashMap<(NodeId, Round), SignedBatch>,
    voted: HashMap<(NodeId, Round), Vote>,
    reported: HashSet<(NodeId, Round)>,
    pending_certs: BTreeMap<(Round, BatchDigest), (VerifiedCertificate, NodeId)>,
    pending_headers: BTreeMap<(Round, BatchDigest), (SignedBatch, NodeId)>,
    /// Set by [`Consensus::retire`]: the epoch ended; never propose or vote again.
    retired: bool,
}

impl<S: Signer, V: SignatureVerifier> Consensus<S, V> {
    /// A driver for the member whose key `signer` holds. Fails if it is not a member.
    pub fn new(
        committee: Committee,
        signer: S,
        verifier: V,
        config: ConsensusConfig,
    ) -> Result<Self> {
        Self::for_epoch(committee, signer, verifier, config, ChainStart::default())
    }

    /// A driver for one epoch: the committee's epoch tags every batch (rounds start at 0
    /// again), and its checkpoints continue the chain at `start` (the previous epoch's
    /// last checkpoint). See the module docs, "Epochs".
    pub fn for_epoch(
        committee: Committee,
        signer: S,
        verifier: V,
        config: ConsensusConfig,
        start: ChainStart,
    ) -> Result<Self> {
        let me = NodeId::from_public_key(signer.public_key());
        if committee.authority(&me).is_none() {
            return Err(ConsensusError::UnknownAuthority {
                role: "local signer",
                node: me,
            });
        }
        Ok(Consensus {
            me,
            signer,
            verifier,
            committee,
            config,
            store: DagStore::new(),
            committer: Committer::starting_at(start),
            proposed: None,
            last_proposal_ms: 0,
            open: BTreeMap::new(),
            my_latest: None,
            waiting: None,
            last_resend_ms: 0,
            resend_count: 0,
            payload: VecDeque::new(),
            headers: HashMap::new(),
            voted: HashMap::new(),
            reported: HashSet::new(),
            pending_certs: BTreeMap::new(),
            pending_headers: BTreeMap::new(),
            retired: false,
        })
    }

    /// Rebuilds a restarted member from the records it persisted ([`Output::Persist`], in
    /// any order). It will not propose again in a round it proposed in, nor vote for a
    /// second batch of an (author, round) it voted on. The returned outputs replay the
    /// commits of the restored DAG (same checkpoints, from sequence 0: the host skips the
    /// sequence numbers it already applied) and re-announce the own proposals still
    /// collecting votes. Own proposals more than `gc_depth / 2` rounds below the last one
    /// were abandoned by the running driver and stay so (recover with the same `gc_depth`).
    pub fn recover(
        committee: Committee,
        signer: S,
        verifier: V,
        config: ConsensusConfig,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(Self, Vec<Output>)> {
        Self::recover_epoch(
            committee,
            signer,
            verifier,
            config,
            ChainStart::default(),
            records,
        )
    }

    /// [`Consensus::recover`] of an epoch's driver (made by [`Consensus::for_epoch`] with
    /// the same committee and `start`): give it that epoch's records only.
    pub fn recover_epoch(
        committee: Committee,
        signer: S,
        verifier: V,
        config: ConsensusConfig,
        start: ChainStart,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(Self, Vec<Output>)> {
        let mut c = Self::for_epoch(committee, signer, verifier, config, start)?;
        let mut certs = Vec::new();
        let mut own: BTreeMap<Round, SignedBatch> = BTreeMap::new();
        for record in records {
            match record {
                Record::Proposed(b) => {
                    if b.header.author != c.me {
                        continue;
                    }
                    let round = b.header.round;
                    let vote = Vote::sign(b.digest(), c.me, &c.signer);
                    c.voted.insert((c.me, round), vote);
                    c.headers.insert((c.me, round), b.clone());
                    own.insert(round, b);
                }
                Record::Voted {
                    author,
                    round,
                    digest,
                } => {
                    let vote = Vote::sign(digest, c.me, &c.signer);
                    c.voted.insert((author, round), vote);
                }
                Record::Stored(cert) => certs.push(cert),
            }
        }
        certs.sort_by_key(|x| x.batch.header.round);
        let mut out = Vec::new();
        for cert in certs {
            if c.store.contains(&cert.digest()) {
                continue;
            }
            let verified = cert.verify(&c.committee, &c.verifier)?;
            c.note_header(verified.batch(), &mut out);
            if let Err(e) = c.store.insert(verified, &c.committee) {
                // Persisted in causal order, so only a corrupt log lands here.
                if !matches!(e, ConsensusError::Equivocation(_)) {
                    return Err(e);
                }
            }
        }
        c.commit(&mut out);
        let own_round = own.keys().next_back().copied();
        if let Some(last) = own.values().next_back() {
            c.last_proposal_ms = last.header.timestamp_ms;
        }
        // Own proposals not certified go on collecting votes, except those the running
        // driver had abandoned by the time it made its last proposal (the same age rule).
        let abandon_below = own_round.map_or(0, |r| r.saturating_sub(c.config.gc_depth / 2));
        for (round, b) in own.range(abandon_below..) {
            if c.store.by_author(*round, &c.me).is_some() {
                continue;
            }
            let mut agg = VotesAggregator::new(b.clone());
            let vote = Vote::sign(b.digest(), c.me, &c.signer);
            if agg.add(vote, &c.committee, &c.verifier)?.is_none() {
                out.push(Output::Broadcast(Message::Propose(b.clone())));
                c.open.insert(*round, agg);
            }
        }
        c.proposed = own_round;
        c.my_latest = c
            .store
            .highest_round()
            .and_then(|top| (0..=top).rev().find_map(|r| c.store.by_author(r, &c.me)))
            .map(|v| v.certificate().clone());
        out.retain(|o| !matches!(o, Output::Persist(_)));
        Ok((c, out))
    }

    #[cfg(test)]
    pub(crate) fn debug_state(&self) -> String {
        format!(
            "agg {:?} stake {:?}; pending certs {:?}; pending headers {:?}; waiting {:?}; rounds {:?}",
            self.open.keys().collect::<Vec<_>>(),
            self.open.values().map(|a| a.stake()).collect::<Vec<_>>(),
            self.pending_certs.keys().map(|k| k.0).collect::<Vec<_>>(),
            self.pending_headers
                .values()
                .map(|(b, _)| (b.header.round, self.committee.index_of(&b.header.author)))
                .collect::<Vec<_>>(),
            self.waiting,
            (0..=self.store.highest_round().unwrap_or(0))
                .rev()
                .take(4)
                .map(|r| self
                    .store
                    .round(r)
                    .map(|c| self.committee.index_of(&c.author()).unwrap_or(9))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        )
    }
    /// This member's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }
    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
    /// The local DAG.
    pub fn store(&self) -> &DagStore {
        &self.store
    }
    /// The commit state.
    pub fn committer(&self) -> &Committer {
        &self.committer
    }
    /// The last round this member proposed in.
    pub fn round(&self) -> Option<Round> {
        self.proposed
    }
    /// Payload items queued for the next proposals.
    pub fn pending_payload(&self) -> usize {
        self.payload.len()
    }
    /// Queues items (held tx ids or stripe ids) for the next proposals.
    pub fn add_payload(&mut self, items: impl IntoIterator<Item = BatchItem>) {
        self.payload.extend(items);
    }
    /// The payload items this member still carries toward a commit: queued, in its
    /// uncertified proposal, or in its certified batches not committed yet. After
    /// [`Consensus::recover`], a host re-queues the items it handed over that are neither
    /// committed nor in this set (they were queued in memory when it stopped).
    pub fn in_flight_items(&self) -> HashSet<BatchItem> {
        let mut items: HashSet<BatchItem> = self.payload.iter().copied().collect();
        for agg in self.open.values() {
            items.extend(agg.batch().header.items.iter().copied());
        }
        if let Some(top) = self.store.highest_round() {
            for r in self.store.pruned_below()..=top {
                if let Some(c) = self.store.by_author(r, &self.me)
                    && !self.committer.is_committed(&c.digest())
                {
                    items.extend(c.batch().header.items.iter().copied());
                }
            }
        }
        items
    }
    /// Ends this member's part in the epoch: it never proposes nor votes again (its open
    /// proposals are dropped; their items stay in [`Consensus::in_flight_items`] for the
    /// host to hand to the next epoch). It still stores certificates, commits, answers
    /// fetches and re-sends its latest certificate, so a member still behind the epoch's
    /// end can catch up to it. The host calls it once the committed sequence reached the
    /// epoch's last checkpoint, and ignores the commits that follow.
    pub fn retire(&mut self) {
        self.retired = true;
        self.waiting = None;
    }
    /// Whether [`Consensus::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Sets the shortest time between own proposals (the dynamic batch interval).
    pub fn set_proposal_interval(&mut self, ms: u64) {
        self.config.proposal_interval_ms = ms;
    }

    /// Starts: proposes the genesis batch.
    pub fn start(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        self.last_resend_ms = now_ms;
        self.try_advance(now_ms, &mut out);
        out
    }

    /// Time passed: re-sends, re-fetches, and proposes if a timeout allows it now.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if now_ms >= self.last_resend_ms.saturating_add(self.config.resend_ms) {
            self.last_resend_ms = now_ms;
            self.resend_count = self.resend_count.wrapping_add(1);
            if !self.retired {
                for agg in self.open.values() {
                    out.push(Output::Broadcast(Message::Propose(agg.batch().clone())));
                }
            }
            if let Some(c) = &self.my_latest {
                out.push(Output::Broadcast(Message::Certificate(c.clone())));
            }
            self.refetch(&mut out);
        }
        self.try_advance(now_ms, &mut out);
        out
    }

    /// Handles one message from member `from`. An error means the message was rejected and
    /// left no trace (the host may log it or penalise the sender).
    pub fn handle(&mut self, now_ms: u64, from: NodeId, message: Message) -> Result<Vec<Output>> {
        if self.committee.authority(&from).is_none() {
            return Err(ConsensusError::UnknownAuthority {
                role: "sender",
                node: from,
            });
        }
        let mut out = Vec::new();
        match message {
            Message::Propose(batch) => self.on_propose(batch, from, &mut out)?,
            Message::Vote(vote) => self.on_vote(vote, &mut out)?,
            Message::Certificate(cert) => {
                if !self.store.contains(&cert.digest()) {
                    let verified = cert.verify(&self.committee, &self.verifier)?;
                    self.on_certificate(verified, from, &mut out)?;
                }
            }
            Message::Fetch(req) => self.on_fetch(req, from, &mut out),
            Message::FetchResponse(certs) => {
                let mut certs = certs;
                certs.sort_by_key(|c| c.batch.header.round);
                certs.truncate(self.config.max_fetch);
                let mut first_err = None;
                let mut any_ok = false;
                for cert in certs {
                    if self.store.contains(&cert.digest()) {
                        continue;
                    }
                    let r = cert
                        .verify(&self.committee, &self.verifier)
                        .and_then(|v| self.on_certificate(v, from, &mut out));
                    match r {
                        Ok(()) => any_ok = true,
                        Err(e) => first_err = first_err.or(Some(e)),
                    }
                }
                if let (false, Some(e)) = (any_ok, first_err) {
                    return Err(e);
                }
            }
        }
        self.try_advance(now_ms, &mut out);
        Ok(out)
    }

    fn on_propose(
        &mut self,
        batch: SignedBatch,
        from: NodeId,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        batch.verify(&self.committee, &self.verifier)?;
        let h = &batch.header;
        let key = (h.author, h.round);
        if h.author == self.me {
            return Ok(());
        }
        // Far ahead of our DAG: we could not vote before catching up anyway, and remembering
        // it would let one member fill memory with signed junk.
        let horizon = self.store.highest_round().map_or(0, |r| r + 1);
        if h.round > horizon.saturating_add(self.config.gc_depth) {
            return Ok(());
        }
        if self.note_header(&batch, out) {
            return Ok(()); // equivocation: never vote
        }
        if let Some(v) = self.voted.get(&key) {
            // A re-sent proposal: our vote may have been lost. (A different digest means
            // we voted for another batch of this author and round before a restart.)
            if v.digest == batch.digest() {
                out.push(Output::Send {
                    to: h.author,
                    message: Message::Vote(v.clone()),
                });
            }
            return Ok(());
        }
        if h.round < self.store.pruned_below() {
            return Ok(());
        }
        match self.store.check_parents(h, &self.committee) {
            Ok(()) => {
                self.cast_vote(&batch, out);
                Ok(())
            }
            Err(ConsensusError::MissingParents { missing, .. }) => {
                // Each author gets an equal share of the parking space.
                let share = self.config.max_pending / self.committee.size();
                let parked = self
                    .pending_headers
                    .values()
                    .filter(|(b, _)| b.header.author == h.author)
                    .count();
                if parked < share {
                    let have = self.have_round();
                    out.push(Output::Send {
                        to: from,
                        message: Message::Fetch(FetchRequest {
                            digests: missing,
                            have_round: have,
                        }),
                    });
                    self.pending_headers
                        .insert((h.round, batch.digest()), (batch, from));
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn cast_vote(&mut self, batch: &SignedBatch, out: &mut Vec<Output>) {
        if self.retired {
            return;
        }
        let h = &batch.header;
        let vote = Vote::sign(batch.digest(), self.me, &self.signer);
        self.voted.insert((h.author, h.round), vote.clone());
        out.push(Output::Persist(Record::Voted {
            author: h.author,
            round: h.round,
            digest: vote.digest,
        }));
        out.push(Output::Send {
            to: h.author,
            message: Message::Vote(vote),
        });
    }

    /// Records the first header per (author, round); true (and evidence, once) if `batch`
    /// conflicts with it.
    fn note_header(&mut self, batch: &SignedBatch, out: &mut Vec<Output>) -> bool {
        let key = (batch.header.author, batch.header.round);
        match self.headers.get(&key) {
            None => {
                self.headers.insert(key, batch.clone());
                false
            }
            Some(first) if first.header == batch.header => false,
            Some(first) => {
                if self.reported.insert(key)
                    && let Ok(e) = Equivocation::new(first.clone(), batch.clone())
                {
                    out.push(Output::Evidence(e));
                }
                true
            }
        }
    }

    fn on_vote(&mut self, vote: Vote, out: &mut Vec<Output>) -> Result<()> {
        if self
            .store
            .get(&vote.digest)
            .is_some_and(|c| c.author() == self.me)
            || self
                .my_latest
                .as_ref()
                .is_some_and(|c| c.digest() == vote.digest)
        {
            return Ok(()); // a late vote for a batch already certified
        }
        let Some((&round, agg)) = self
            .open
            .iter_mut()
            .find(|(_, a)| a.batch().digest() == vote.digest)
        else {
            return Err(ConsensusError::UnknownBatch {
                digest: vote.digest,
                voter: vote.voter,
            });
        };
        if let Some(cert) = agg.add(vote, &self.committee, &self.verifier)? {
            self.open.remove(&round);
            self.on_own_certificate(cert, out)?;
        }
        Ok(())
    }

    /// Stores (and so persists) the own certificate, then broadcasts it: a restarted member
    /// must know every certificate it sent.
    fn on_own_certificate(&mut self, cert: Certificate, out: &mut Vec<Output>) -> Result<()> {
        let verified = cert.clone().verify(&self.committee, &self.verifier)?;
        self.my_latest = Some(cert.clone());
        let mut after = Vec::new();
        let r = self.on_certificate(verified, self.me, &mut after);
        // Its records first, then the broadcast, then what storing it caused (commits).
        let split = after
            .iter()
            .position(|o| !matches!(o, Output::Persist(_)))
            .unwrap_or(after.len());
        let rest = after.split_off(split);
        out.extend(after);
        out.push(Output::Broadcast(Message::Certificate(cert)));
        out.extend(rest);
        r
    }

    fn on_certificate(
        &mut self,
        cert: VerifiedCertificate,
        from: NodeId,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        // A certificate conflicting with a proposal seen earlier is evidence, yet it is
        // still stored: a quorum certified it, so every honest node must order it.
        self.note_header(cert.batch(), out);
        match self.store_insert(cert.clone(), out) {
            Ok(_) => {
                self.drain_pending(out);
                self.commit(out);
                Ok(())
            }
            Err(ConsensusError::MissingParents { missing, .. }) => {
                if self.pending_certs.len() < self.config.max_pending {
                    let have = self.have_round();
                    out.push(Output::Send {
                        to: from,
                        message: Message::Fetch(FetchRequest {
                            digests: missing,
                            have_round: have,
                        }),
                    });
                    self.pending_certs
                        .insert((cert.round(), cert.digest()), (cert, from));
                }
                Ok(())
            }
            Err(ConsensusError::Equivocation(e)) => {
                let key = (e.author(), e.round());
                // Not stored; the evidence is the outcome (an error would drop it).
                if self.reported.insert(key) {
                    out.push(Output::Evidence(*e));
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stores a certificate; a new one is also a [`Record::Stored`].
    fn store_insert(&mut self, cert: VerifiedCertificate, out: &mut Vec<Output>) -> Result<bool> {
        let record = cert.certificate().clone();
        let new = self.store.insert(cert, &self.committee)?;
        if new {
            out.push(Output::Persist(Record::Stored(record)));
        }
        Ok(new)
    }

    /// Inserts parked certificates whose parents arrived, and votes on parked proposals.
    fn drain_pending(&mut self, out: &mut Vec<Output>) {
        loop {
            let ready: Vec<(Round, BatchDigest)> = self
                .pending_certs
                .iter()
                .filter(|(_, (c, _))| self.store.missing_parents(&c.batch().header).is_empty())
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                break;
            }
            for k in ready {
                if let Some((c, _)) = self.pending_certs.remove(&k) {
                    // Errors here (bad parent rounds, equivocation) drop the certificate.
                    if let Err(ConsensusError::Equivocation(e)) = self.store_insert(c, out)
                        && self.reported.insert((e.author(), e.round()))
                    {
                        out.push(Output::Evidence(*e));
                    }
                }
            }
        }
        let ready: Vec<(Round, BatchDigest)> = self
            .pending_headers
            .iter()
            .filter(|(_, (b, _))| self.store.missing_parents(&b.header).is_empty())
            .map(|(k, _)| *k)
            .collect();
        for k in ready {
            if let Some((b, _)) = self.pending_headers.remove(&k) {
                let key = (b.header.author, b.header.round);
                if !self.voted.contains_key(&key)
                    && self
                        .headers
                        .get(&key)
                        .is_some_and(|f| f.digest() == b.digest())
                    && self.store.check_parents(&b.header, &self.committee).is_ok()
                {
                    self.cast_vote(&b, out);
                }
            }
        }
    }

    fn refetch(&mut self, out: &mut Vec<Output>) {
        let have = self.have_round();
        let mut by_peer: BTreeMap<NodeId, Vec<BatchDigest>> = BTreeMap::new();
        let n = self.committee.size();
        let headers = self.pending_headers.values().map(|(b, f)| (&b.header, *f));
        let certs = self
            .pending_certs
            .values()
            .map(|(c, f)| (&c.batch().header, *f));
        for (i, (h, from)) in certs.chain(headers).enumerate() {
            // Alternate between the sender and other members, in case the sender is gone.
            let peer = if (self.resend_count + i).is_multiple_of(2) {
                from
            } else {
                self.committee.authorities()[(self.resend_count + i) % n].id
            };
            if peer == self.me {
                continue;
            }
            by_peer
                .entry(peer)
                .or_default()
                .extend(self.store.missing_parents(h));
        }
        for (peer, mut digests) in by_peer {
            digests.sort();
            digests.dedup();
            digests.truncate(self.config.max_fetch);
            out.push(Output::Send {
                to: peer,
                message: Message::Fetch(FetchRequest {
                    digests,
                    have_round: have,
                }),
            });
        }
    }

    fn on_fetch(&mut self, req: FetchRequest, from: NodeId, out: &mut Vec<Output>) {
        let mut found: Vec<&VerifiedCertificate> = Vec::new();
        let mut seen: HashSet<BatchDigest> = HashSet::new();
        let mut stack: Vec<BatchDigest> = req
            .digests
            .iter()
            .take(self.config.max_fetch)
            .copied()
            .collect();
        let requested: HashSet<BatchDigest> = stack.iter().copied().collect();
        let budget = self.config.max_fetch.saturating_mul(4);
        while let Some(d) = stack.pop() {
            if !seen.insert(d) || seen.len() > budget {
                continue;
            }
            let Some(c) = self.store.get(&d) else {
                continue;
            };
            if c.round() <= req.have_round && !requested.contains(&d) {
                continue;
            }
            found.push(c);
            stack.extend(c.parents().iter().chain(c.weak_links()).copied());
        }
        if found.is_empty() {
            return;
        }
        found.sort_by_key(|c| (c.round(), c.author()));
        found.truncate(self.config.max_fetch);
        let certs = found.into_iter().map(|c| c.certificate().clone()).collect();
        out.push(Output::Send {
            to: from,
            message: Message::FetchResponse(certs),
        });
    }

    /// Highest round whose certificates hold a quorum of stake.
    fn highest_quorum_round(&self) -> Option<Round> {
        let top = self.store.highest_round()?;
        let floor = self.proposed.unwrap_or(0).saturating_sub(1);
        (floor..=top).rev().find(|r| {
            self.committee
                .is_quorum(self.store.round_stake(*r, &self.committee))
        })
    }

    fn have_round(&self) -> Round {
        self.committer
            .last_committed_round()
            .unwrap_or(0)
            .max(self.store.pruned_below())
    }

    fn try_advance(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.retired {
            return;
        }
        let target = match (self.proposed, self.highest_quorum_round()) {
            (None, None) => 0,
            (None, Some(q)) => q + 1,
            (Some(_), None) => return,
            (Some(p), Some(q)) => {
                if q < p {
                    return;
                }
                q + 1
            }
        };
        if now_ms
            < self
                .last_proposal_ms
                .saturating_add(self.config.proposal_interval_ms)
            && self.proposed.is_some()
        {
            return;
        }
        // Earlier own proposals may still be collecting votes (they are certified late,
        // not dropped); past the bound, wait for them rather than open more.
        if self.open.len() >= self.config.max_open_proposals.max(1) {
            return;
        }
        if target > 0 {
            let prev = target - 1;
            if Committee::is_leader_round(prev)
                && self
                    .store
                    .by_author(prev, &self.committee.leader(prev))
                    .is_none()
            {
                let since = match self.waiting {
                    Some((r, t)) if r == prev => t,
                    _ => {
                        self.waiting = Some((prev, now_ms));
                        now_ms
                    }
                };
                if now_ms < since.saturating_add(self.config.leader_timeout_ms) {
                    return;
                }
            }
        }
        self.propose(target, now_ms, out);
    }

    fn propose(&mut self, round: Round, now_ms: u64, out: &mut Vec<Output>) {
        // Own proposals so far behind that voters may have pruned their parents can no
        // longer be certified: abandon them (their votes are refused from now on, so they
        // never commit) and queue their items again, first.
        let keep_from = round.saturating_sub(self.config.gc_depth / 2);
        let kept = self.open.split_off(&keep_from);
        let abandoned = std::mem::replace(&mut self.open, kept);
        for old in abandoned.values().rev() {
            for item in old.batch().header.items.iter().rev() {
                self.payload.push_front(*item);
            }
        }
        let parents: Vec<BatchDigest> = if round == 0 {
            Vec::new()
        } else {
            self.store.round(round - 1).map(|c| c.digest()).collect()
        };
        // Late certificates: older ones nothing links to yet. Not those more than
        // gc_depth / 2 rounds below this proposal or our last commit: a voter ahead of us
        // may have pruned them and could never fetch them.
        let floor = self
            .committer
            .last_committed_round()
            .unwrap_or(0)
            .max(round)
            .saturating_sub(self.config.gc_depth / 2);
        let weak_links: Vec<BatchDigest> = self
            .store
            .unreferenced()
            .filter(|c| {
                c.round() + 2 <= round
                    && c.round() >= floor
                    && !self.committer.is_committed(&c.digest())
            })
            .take(self.config.max_weak_links.min(MAX_WEAK_LINKS))
            .map(|c| c.digest())
            .collect();
        let take = self.payload.len().min(self.config.max_batch_items);
        let items: Vec<BatchItem> = self.payload.drain(..take).collect();
        let header = BatchHeader {
            epoch: self.committee.epoch(),
            round,
            author: self.me,
            timestamp_ms: now_ms,
            parents,
            weak_links,
            items,
        };
        let batch = SignedBatch::sign(header, &self.signer);
        self.headers.insert((self.me, round), batch.clone());
        self.proposed = Some(round);
        self.last_proposal_ms = now_ms;
        let mut agg = VotesAggregator::new(batch.clone());
        let own = Vote::sign(batch.digest(), self.me, &self.signer);
        self.voted.insert((self.me, round), own.clone());
        out.push(Output::Persist(Record::Proposed(batch.clone())));
        out.push(Output::Broadcast(Message::Propose(batch)));
        match agg.add(own, &self.committee, &self.verifier) {
            Ok(Some(cert)) => {
                let _ = self.on_own_certificate(cert, out);
            }
            _ => {
                self.open.insert(round, agg);
            }
        }
    }

    fn commit(&mut self, out: &mut Vec<Output>) {
        let subs = self.committer.try_commit(&self.store, &self.committee);
        if subs.is_empty() {
            return;
        }
        out.extend(subs.into_iter().map(Output::Committed));
        if let Some(last) = self.committer.last_committed_round()
            && last > self.config.gc_depth
        {
            let below = last - self.config.gc_depth;
            if below > self.store.pruned_below() {
                self.store.prune_below(below);
                self.committer.prune_below(below);
                self.headers.retain(|(_, r), _| *r >= below);
                self.voted.retain(|(_, r), _| *r >= below);
                self.reported.retain(|(_, r)| *r >= below);
                self.pending_certs.retain(|(r, _), _| *r >= below);
                self.pending_headers.retain(|(r, _), _| *r >= below);
            }
        }
    }
}
