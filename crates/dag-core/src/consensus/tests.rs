//! Unit tests of the consensus rules: typed rejections, the commit rule on text-described
//! DAGs, the driver's equivocation detection.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::{NodeId, Signer, StripeId, TxId};

fn check(dag: &str, expected: &str) {
    let mut b = DagBuilder::new(4);
    b.parse(dag).unwrap();
    assert_eq!(b.commit_trace(false), expected, "dag:\n{dag}");
}

// Leaders (round robin over even rounds): A0, B2, C4, D6, A8, …
#[test]
fn commit_rule_table() {
    let full = "r0: A B C D; r1: A B C D; r2: A B C D; r3: A B C D";
    // Direct commits.
    check("r0: A B C D; r1: A B C D", "A0");
    check(full, "A0 B2");
    check("r0: A B C D; r1: A B<-[A,B,C] C<-[B,C,D] D<-[B,C,D]", "A0"); // f + 1 = 2 suffice
    // Not yet: round r + 1 missing, or one supporter only.
    check("r0: A B C D", "");
    check("r0: A B C D; r1: A<-[B,C,D] B<-[B,C,D] C D<-[B,C,D]", "");
    // Indirect: A0 had one supporter, B2 commits directly and reaches A0 through C1.
    check(
        "r0: A B C D; r1: A<-[B,C,D] B<-[B,C,D] C D<-[B,C,D]; r2: A B C D; r3: A B C D",
        "A0 B2",
    );
    // Skip: nobody in round 1 names A0, so B2 cannot reach it.
    check(
        "r0: A B C D; r1: A<-[B,C,D] B<-[B,C,D] C<-[B,C,D] D<-[B,C,D]; r2: A B C D; r3: A B C D",
        "B2",
    );
    // Skip: the leader of round 2 never got certified (crashed B).
    check(
        "r0: A B C D; r1: A B C D; r2: A C D; r3: A C D; r4: A C D; r5: A C D",
        "A0 C4",
    );
    // Skip of a leader present but reachable by nobody later: B2 supported by B3 only,
    // and round 4 avoids B3.
    check(
        "r0: A B C D; r1: A B C D; r2: A B C D; r3: A<-[A,C,D] B C<-[A,C,D] D<-[A,C,D]; \
         r4: A<-[A,C,D] C<-[A,C,D] D<-[A,C,D]; r5: A C D",
        "A0 C4",
    );
    // Indirect through a longer gap: B2 and C4 without direct support, D6 commits all.
    check(
        "r0: A B C D; r1: A B C D; r2: A B C D; r3: A<-[A,C,D] B C<-[A,C,D] D<-[A,C,D]; \
         r4: A B C D; r5: A<-[A,B,D] B<-[A,B,D] C D<-[A,B,D]; r6: A B C D; r7: A B C D",
        "A0 B2 C4 D6",
    );
    // Leader of round 0 absent altogether.
    check("r0: B C D; r1: B C D; r2: B C D; r3: B C D", "B2");
}

#[test]
fn commit_orders_sub_dags_by_round_then_author() {
    let mut b = DagBuilder::new(4);
    b.parse("r0: A B C D; r1: A B C D; r2: A B C D; r3: A B C D")
        .unwrap();
    let mut labels: Vec<(NodeId, char)> = (0..4)
        .map(|i| (b.signer(i).node_id(), (b'A' + i as u8) as char))
        .collect();
    labels.sort();
    let order: String = labels.iter().map(|(_, c)| *c).collect();
    let r1: Vec<String> = order.chars().map(|c| format!("{c}1")).collect();
    let r0: Vec<String> = order
        .chars()
        .filter(|c| *c != 'A')
        .map(|c| format!("{c}0"))
        .collect();
    let expected = format!("A0[A0] B2[{} {} B2]", r0.join(" "), r1.join(" "));
    assert_eq!(b.commit_trace(true), expected);
}

#[test]
fn commit_is_incremental_and_checkpoints_chain() {
    let mut b = DagBuilder::new(4);
    b.parse("r0: A B C D; r1: A B C D").unwrap();
    let first = b.commit();
    assert_eq!(first.len(), 1);
    assert!(b.commit().is_empty(), "nothing new");
    b.parse("r2: A B C D; r3: A B C D; r4: A B C D; r5: A B C D")
        .unwrap();
    let next = b.commit();
    assert_eq!(
        next.iter()
            .map(|s| b.label(&s.checkpoint.leader))
            .collect::<Vec<_>>(),
        ["B2", "C4"]
    );
    assert_eq!(next[0].checkpoint.prev_hash, first[0].checkpoint.hash());
    assert_eq!(next[1].checkpoint.prev_hash, next[0].checkpoint.hash());
    assert_eq!(next[1].checkpoint.sequence, 2);
    let total: usize = first.iter().chain(&next).map(|s| s.batches.len()).sum();
    assert_eq!(total, 1 + 8 + 8, "each batch once, the tip round excluded");
    let cp = &next[1].checkpoint;
    assert_eq!(Checkpoint::decode(&cp.encode(), 100).unwrap(), *cp);
}

#[test]
fn weighted_stake_support() {
    // Stakes A=3, B=1, C=1, D=1 (total 6): f + 1 means > 2, quorum means > 4.
    let mut b = DagBuilder::with_stakes(&[3, 1, 1, 1]);
    b.parse("r0: A B C D; r1: B C").unwrap();
    assert_eq!(b.commit_trace(false), "", "B1 + C1 hold 2 of 6");
    b.parse("r1: A").unwrap();
    assert_eq!(b.commit_trace(false), "A0", "with A1: 5 of 6");
    // Parents B1, C1 hold only 2 of 6: not a quorum.
    let err = b.parse("r2: B<-[B,C]").unwrap_err();
    assert!(err.contains("below the quorum"), "{err}");
}

#[test]
fn builder_reports_bad_descriptions() {
    let mut b = DagBuilder::new(4);
    assert!(b.parse("r0: A E").unwrap_err().contains("unknown author"));
    let mut b = DagBuilder::new(4);
    assert!(
        b.parse("r0: A B C; r1: A<-[D]")
            .unwrap_err()
            .contains("no batch D0")
    );
    assert!(b.parse("x1: A").is_err());
    // `X<-*` and a bare `X` both name the whole previous round; comments and `;` work.
    let mut c = DagBuilder::new(4);
    c.parse("r0: A B C D # genesis\nr1: A<-* B; r1: C D")
        .unwrap();
    let d0 = c.store().round(0).count();
    assert!(c.store().round(1).all(|x| x.parents().len() == d0));
    assert!(
        b.parse("r1: A<-[A,B]")
            .unwrap_err()
            .contains("below the quorum")
    );
}

fn setup() -> DagBuilder {
    let mut b = DagBuilder::new(4);
    b.parse("r0: A B C D; r1: A B C").unwrap();
    b
}

#[test]
fn batch_signature_errors() {
    let b = setup();
    let c = b.committee();
    let good = b.batch(0, 0, vec![], vec![BatchItem::Tx(TxId::from_bytes([1; 32]))]);
    good.verify(c, &TestVerifier).unwrap();
    // Unsigned.
    let mut unsigned = good.clone();
    unsigned.signature.clear();
    assert!(matches!(
        unsigned.verify(c, &TestVerifier),
        Err(ConsensusError::BadSignature { .. })
    ));
    // Signed by another member.
    let forged = SignedBatch::sign(good.header.clone(), b.signer(1));
    assert!(matches!(
        forged.verify(c, &TestVerifier),
        Err(ConsensusError::BadSignature { .. })
    ));
    // Altered after signing.
    let mut altered = good.clone();
    altered.header.timestamp_ms += 1;
    assert!(matches!(
        altered.verify(c, &TestVerifier),
        Err(ConsensusError::BadSignature { .. })
    ));
    // Unknown author.
    let stranger = TestSigner::new(99);
    let mut h = good.header.clone();
    h.author = stranger.node_id();
    let s = SignedBatch::sign(h, &stranger);
    assert!(matches!(
        s.verify(c, &TestVerifier),
        Err(ConsensusError::UnknownAuthority { role: "author", .. })
    ));
    // Oversized.
    let big = b.batch(
        0,
        0,
        vec![],
        vec![BatchItem::Stripe(StripeId::from_bytes([2; 32])); MAX_BATCH_ITEMS + 1],
    );
    assert!(matches!(
        big.verify(c, &TestVerifier),
        Err(ConsensusError::Oversized {
            field: "batch items",
            ..
        })
    ));
    let bytes = big.encode();
    assert!(SignedBatch::decode(&bytes).is_err());
    let many_parents = b.batch(0, 1, vec![BatchDigest::default(); 5], vec![]);
    assert!(matches!(
        many_parents.verify(c, &TestVerifier),
        Err(ConsensusError::Oversized {
            field: "parents",
            ..
        })
    ));
    let genesis_parent = b.batch(0, 0, vec![BatchDigest::default()], vec![]);
    assert!(matches!(
        genesis_parent.verify(c, &TestVerifier),
        Err(ConsensusError::GenesisWithParents { .. })
    ));
    // Round trip.
    assert_eq!(SignedBatch::decode(&good.encode()).unwrap(), good);
    assert_eq!(
        BatchHeader::decode(&good.header.encode()).unwrap(),
        good.header
    );
    let mut trailing = good.encode();
    trailing.push(0);
    assert!(SignedBatch::decode(&trailing).is_err());
}

#[test]
fn vote_and_certificate_errors() {
    let b = setup();
    let c = b.committee();
    let batch = b.batch(3, 1, vec![], vec![]);
    let batch = SignedBatch::sign(
        BatchHeader {
            epoch: 0,
            parents: b.store().round(0).map(|x| x.digest()).collect(),
            ..batch.header
        },
        b.signer(3),
    );
    let digest = batch.digest();
    let mut agg = VotesAggregator::new(batch.clone());
    let vote = |i: usize| Vote::sign(digest, b.signer(i).node_id(), b.signer(i));
    // Vote for an unknown batch.
    let other = Vote::sign(BatchDigest::default(), b.signer(0).node_id(), b.signer(0));
    assert!(matches!(
        agg.add(other, c, &TestVerifier),
        Err(ConsensusError::UnknownBatch { .. })
    ));
    // Wrongly signed vote, unsigned vote, stranger's vote: nothing counted.
    let mut bad = vote(0);
    bad.signature = b.signer(1).sign(&Vote::signing_message(&digest));
    assert!(matches!(
        agg.add(bad, c, &TestVerifier),
        Err(ConsensusError::BadSignature { .. })
    ));
    let mut unsigned = vote(0);
    unsigned.signature.clear();
    assert!(agg.add(unsigned, c, &TestVerifier).is_err());
    let s = TestSigner::new(42);
    assert!(matches!(
        agg.add(Vote::sign(digest, s.node_id(), &s), c, &TestVerifier),
        Err(ConsensusError::UnknownAuthority { role: "voter", .. })
    ));
    assert_eq!(agg.stake(), 0);
    assert!(agg.add(vote(3), c, &TestVerifier).unwrap().is_none());
    assert!(
        agg.add(vote(3), c, &TestVerifier).unwrap().is_none(),
        "repeat ignored"
    );
    assert_eq!(agg.stake(), 1);
    assert!(agg.add(vote(0), c, &TestVerifier).unwrap().is_none());
    let cert = agg.add(vote(1), c, &TestVerifier).unwrap().unwrap();
    assert!(
        agg.add(vote(2), c, &TestVerifier).unwrap().is_none(),
        "certificate made once"
    );
    assert_eq!(Vote::decode(&vote(2).encode()).unwrap(), vote(2));
    cert.clone().verify(c, &TestVerifier).unwrap();
    assert_eq!(Certificate::decode(&cert.encode()).unwrap(), cert);
    // Too little stake.
    let weak = b.certify(batch.clone(), &[0, 3]);
    assert!(matches!(
        weak.verify(c, &TestVerifier),
        Err(ConsensusError::InsufficientStake {
            stake: 2,
            total: 4,
            ..
        })
    ));
    // Duplicate signer padding the stake.
    let dup = b.certify(batch.clone(), &[0, 3, 3]);
    assert!(matches!(
        dup.verify(c, &TestVerifier),
        Err(ConsensusError::DuplicateSigner { .. })
    ));
    // A vote signature moved onto another certificate.
    let mut moved = b.certify(batch.clone(), &[0, 1, 3]);
    moved.votes[1].1 = b
        .signer(1)
        .sign(&Vote::signing_message(&BatchDigest::default()));
    assert!(matches!(
        moved.verify(c, &TestVerifier),
        Err(ConsensusError::BadSignature { .. })
    ));
}

#[test]
fn store_rejects_bad_parents_and_keeps_nothing() {
    let mut b = setup();
    let all = [0, 1, 2, 3];
    let r0: Vec<BatchDigest> = b.store().round(0).map(|x| x.digest()).collect();
    let r1: Vec<BatchDigest> = b.store().round(1).map(|x| x.digest()).collect();
    let before = b.store().len();
    // Parents from the wrong round.
    let mixed = vec![r1[0], r1[1], r0[0]];
    let e = b
        .insert(b.certify(b.batch(0, 2, mixed, vec![]), &all))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConsensusError::WrongParentRound {
                parent_round: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = b
        .insert(b.certify(b.batch(3, 1, r1.clone(), vec![]), &all))
        .unwrap_err();
    assert!(matches!(e, ConsensusError::WrongParentRound { .. }), "{e}");
    // Too little parent stake.
    let e = b
        .insert(b.certify(b.batch(0, 2, r1[..2].to_vec(), vec![]), &all))
        .unwrap_err();
    assert!(
        matches!(e, ConsensusError::InsufficientParentStake { stake: 2, .. }),
        "{e}"
    );
    // The same parent twice.
    let e = b
        .insert(b.certify(b.batch(0, 2, vec![r1[0], r1[0], r1[1]], vec![]), &all))
        .unwrap_err();
    assert!(matches!(e, ConsensusError::DuplicateParent { .. }), "{e}");
    // Missing parents.
    let e = b
        .insert(b.certify(
            b.batch(0, 2, vec![r1[0], r1[1], BatchDigest::default()], vec![]),
            &all,
        ))
        .unwrap_err();
    assert!(
        matches!(e, ConsensusError::MissingParents { ref missing, .. } if missing.len() == 1),
        "{e}"
    );
    assert_eq!(b.store().len(), before, "nothing stored");
    // Equivocation: a second certified batch by A in round 1.
    let twin = b.certify(
        b.batch(
            0,
            1,
            r0.clone(),
            vec![BatchItem::Tx(TxId::from_bytes([9; 32]))],
        ),
        &all,
    );
    let e = b.insert(twin).unwrap_err();
    let ConsensusError::Equivocation(ev) = e else {
        panic!("{e}")
    };
    assert_eq!(ev.author(), b.signer(0).node_id());
    ev.verify(b.committee(), &TestVerifier).unwrap();
    assert_eq!(b.store().len(), before);
    // A good one goes in, once.
    assert!(
        b.insert(b.certify(b.batch(3, 1, r0, vec![]), &all))
            .unwrap()
    );
    let again = b.store().round(1).last().unwrap().certificate().clone();
    assert!(!b.insert(again).unwrap());
}

#[test]
fn equivocation_evidence_for_dpos() {
    let b = setup();
    let x = b.batch(1, 5, vec![], vec![]);
    let y = b.batch(1, 5, vec![], vec![BatchItem::Tx(TxId::from_bytes([1; 32]))]);
    let e = Equivocation::new(x.clone(), y.clone()).unwrap();
    e.verify(b.committee(), &TestVerifier).unwrap();
    assert_eq!(Equivocation::decode(&e.encode()).unwrap(), e);
    // The compact double-sign form: both signatures over domain ‖ round ‖ digest.
    let (round, pairs) = e.double_sign();
    let key = b.signer(1).public_key();
    for (digest, sig) in pairs {
        crate::SignatureVerifier::verify(
            &TestVerifier,
            key,
            &BatchHeader::signing_message_for(round, &digest),
            sig,
        )
        .unwrap();
    }
    assert!(Equivocation::new(x.clone(), x.clone()).is_err());
    assert!(Equivocation::new(x.clone(), b.batch(1, 6, vec![], vec![])).is_err());
    assert!(Equivocation::new(x, b.batch(2, 5, vec![], vec![])).is_err());
    let mut forged = y;
    forged.signature = vec![0; 32];
    assert!(
        Equivocation::new(b.batch(1, 5, vec![], vec![]), forged)
            .unwrap()
            .verify(b.committee(), &TestVerifier)
            .is_err()
    );
}

fn drivers(n: u64) -> Vec<Consensus<TestSigner, TestVerifier>> {
    let signers: Vec<TestSigner> = (0..n).map(TestSigner::new).collect();
    let committee =
        Committee::equal(signers.iter().map(|s| s.public_key().to_vec()).collect()).unwrap();
    signers
        .into_iter()
        .map(|s| {
            Consensus::new(
                committee.clone(),
                s,
                TestVerifier,
                ConsensusConfig::default(),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn driver_catches_an_equivocating_representative() {
    let mut nodes = drivers(4);
    let liar = TestSigner::new(1);
    let mk = |items| {
        SignedBatch::sign(
            BatchHeader {
                epoch: 0,
                round: 0,
                author: liar.node_id(),
                timestamp_ms: 1,
                parents: vec![],
                weak_links: vec![],
                items,
            },
            &liar,
        )
    };
    let (x, y) = (
        mk(vec![]),
        mk(vec![BatchItem::Tx(TxId::from_bytes([7; 32]))]),
    );
    let _ = nodes[0].start(0);
    let out = nodes[0]
        .handle(1, liar.node_id(), Message::Propose(x))
        .unwrap();
    assert!(
        matches!(
            &out[..],
            [
                Output::Persist(Record::Voted { .. }),
                Output::Send {
                    message: Message::Vote(_),
                    ..
                }
            ]
        ),
        "{out:?}"
    );
    let out = nodes[0]
        .handle(2, liar.node_id(), Message::Propose(y))
        .unwrap();
    let [Output::Evidence(e)] = &out[..] else {
        panic!("{out:?}")
    }; // and no second vote
    assert_eq!(e.author(), liar.node_id());
    e.verify(nodes[0].committee(), &TestVerifier).unwrap();
    // Bad messages are typed errors.
    let stranger = TestSigner::new(50);
    assert!(matches!(
        nodes[0].handle(
            3,
            stranger.node_id(),
            Message::Fetch(FetchRequest {
                digests: vec![],
                have_round: 0
            })
        ),
        Err(ConsensusError::UnknownAuthority { .. })
    ));
    let v = Vote::sign(BatchDigest::default(), liar.node_id(), &liar);
    assert!(matches!(
        nodes[0].handle(3, liar.node_id(), Message::Vote(v)),
        Err(ConsensusError::UnknownBatch { .. })
    ));
}

#[test]
fn driver_lockstep_commits() {
    // Deliver every message immediately, in order: commits follow every two rounds.
    let mut nodes = drivers(4);
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    let mut queue: std::collections::VecDeque<(usize, usize, Message)> = Default::default();
    let mut committed: Vec<Vec<BatchDigest>> = vec![Vec::new(); 4];
    let route = |from: usize,
                 outs: Vec<Output>,
                 q: &mut std::collections::VecDeque<_>,
                 c: &mut Vec<Vec<_>>| {
        for o in outs {
            match o {
                Output::Broadcast(m) => (0..4)
                    .filter(|t| *t != from)
                    .for_each(|t| q.push_back((from, t, m.clone()))),
                Output::Send { to, message } => {
                    q.push_back((from, ids.iter().position(|i| *i == to).unwrap(), message))
                }
                Output::Committed(s) => c[from].extend(s.checkpoint.batches),
                Output::Evidence(e) => panic!("{e:?}"),
                Output::Persist(_) => {}
            }
        }
    };
    for (i, n) in nodes.iter_mut().enumerate() {
        n.add_payload([BatchItem::Tx(TxId::from_bytes([i as u8; 32]))]);
        let o = n.start(0);
        route(i, o, &mut queue, &mut committed);
    }
    let mut steps = 0;
    while let Some((from, to, m)) = queue.pop_front() {
        steps += 1;
        if steps > 5000 {
            break;
        }
        let from_id = nodes[from].node_id();
        let o = nodes[to].handle(steps, from_id, m).unwrap_or_default();
        route(to, o, &mut queue, &mut committed);
    }
    assert!(committed[0].len() > 40, "{}", committed[0].len());
    let n = committed.iter().map(Vec::len).min().unwrap();
    assert!(committed.iter().all(|c| c[..n] == committed[0][..n]));
    assert_eq!(nodes[0].pending_payload(), 0);
}

/// xorshift64* for the randomized DAG tests.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A random DAG: each round, 3 or 4 of 4 authors certify a batch naming a random quorum
/// (or more) of the previous round; leaders often get little or no support.
fn random_dag(rng: &mut Rng, rounds: u64) -> DagBuilder {
    let mut b = DagBuilder::new(4);
    let all = [0, 1, 2, 3];
    for r in 0..rounds {
        let prev: Vec<VerifiedCertificate> = if r == 0 {
            vec![]
        } else {
            b.store().round(r - 1).cloned().collect()
        };
        let absent = if rng.below(3) == 0 {
            Some(rng.below(4) as usize)
        } else {
            None
        };
        // Often one batch of the previous round (a leader, or a leader's supporter) is
        // shunned by most of this round: weakly supported leaders, skips, indirect commits.
        let shunned = if !prev.is_empty() && rng.below(2) == 0 {
            Some(prev[rng.below(prev.len() as u64) as usize].digest())
        } else {
            None
        };
        for a in 0..4 {
            if Some(a) == absent {
                continue;
            }
            let mut parents: Vec<BatchDigest> = prev.iter().map(|c| c.digest()).collect();
            if let Some(s) = shunned
                && parents.len() > 3
                && rng.below(4) != 0
            {
                parents.retain(|p| *p != s);
            }
            while parents.len() > 3 && rng.below(2) == 0 {
                parents.remove(rng.below(parents.len() as u64) as usize);
            }
            let cert = b.certify(b.batch(a, r, parents, vec![]), &all);
            b.insert(cert).unwrap();
        }
    }
    b
}

/// One node's view: the DAG inserted in a random causal order, the commit rule run after
/// every insertion. Returns the committed sequence and the leader rounds.
fn replay(
    rng: &mut Rng,
    b: &DagBuilder,
    certs: &[VerifiedCertificate],
) -> (Vec<BatchDigest>, Vec<Round>) {
    let mut store = DagStore::new();
    let mut committer = Committer::new();
    let mut left: Vec<&VerifiedCertificate> = certs.iter().collect();
    let (mut seq, mut leaders) = (Vec::new(), Vec::new());
    while !left.is_empty() {
        let ready: Vec<usize> = (0..left.len())
            .filter(|i| left[*i].parents().iter().all(|p| store.contains(p)))
            .collect();
        let pick = ready[rng.below(ready.len() as u64) as usize];
        store
            .insert(left.swap_remove(pick).clone(), b.committee())
            .unwrap();
        for s in committer.try_commit(&store, b.committee()) {
            leaders.push(s.checkpoint.leader_round);
            seq.extend(s.checkpoint.batches);
        }
    }
    (seq, leaders)
}

#[test]
fn random_dags_commit_consistently_in_any_insertion_order() {
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let b = random_dag(&mut rng, 30);
        let certs: Vec<VerifiedCertificate> = (0..30)
            .flat_map(|r| b.store().round(r).cloned().collect::<Vec<_>>())
            .collect();
        let views: Vec<(Vec<BatchDigest>, Vec<Round>)> =
            (0..6).map(|_| replay(&mut rng, &b, &certs)).collect();
        let (first, first_leaders) = &views[0];
        for (i, (seq, leaders)) in views.iter().enumerate() {
            // Everyone saw the whole DAG: same leaders, same order, each batch once.
            assert_eq!(
                leaders, first_leaders,
                "seed {seed}: view {i} committed other leaders"
            );
            assert_eq!(seq, first, "seed {seed}: view {i} ordered differently");
        }
        let mut uniq = first.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            first.len(),
            "seed {seed}: a batch committed twice"
        );
    }
}

#[test]
fn messages_round_trip_on_the_wire() {
    let b = setup();
    let cert = b.store().round(0).next().unwrap().certificate().clone();
    let batch = b.batch(
        2,
        1,
        vec![cert.digest()],
        vec![BatchItem::Tx(TxId::from_bytes([3; 32]))],
    );
    let msgs = [
        Message::Propose(batch.clone()),
        Message::Vote(Vote::sign(
            batch.digest(),
            b.signer(1).node_id(),
            b.signer(1),
        )),
        Message::Certificate(cert.clone()),
        Message::Fetch(FetchRequest {
            digests: vec![cert.digest(), batch.digest()],
            have_round: 7,
        }),
        Message::FetchResponse(vec![cert.clone(), cert]),
    ];
    for m in msgs {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
        assert!(Message::decode(&bytes[..bytes.len() - 1]).is_err());
    }
    assert!(Message::decode(&[9]).is_err());
    assert!(Message::decode(&[]).is_err());
}

#[test]
fn driver_reports_a_conflicting_certificate() {
    // Two certified genesis batches by B: the second is refused and becomes evidence.
    let b = DagBuilder::new(4);
    let mut nodes = drivers(4);
    let x = b.certify(b.batch(1, 0, vec![], vec![]), &[0, 1, 2]);
    let y = b.certify(
        b.batch(1, 0, vec![], vec![BatchItem::Tx(TxId::from_bytes([5; 32]))]),
        &[1, 2, 3],
    );
    let from = b.signer(2).node_id();
    nodes[0]
        .handle(0, from, Message::Certificate(x.clone()))
        .unwrap();
    let out = nodes[0].handle(1, from, Message::Certificate(y)).unwrap();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Evidence(e) if e.author() == b.signer(1).node_id())),
        "{out:?}"
    );
    assert_eq!(
        nodes[0]
            .store()
            .by_author(0, &b.signer(1).node_id())
            .unwrap()
            .digest(),
        x.digest()
    );
}

#[test]
fn recovered_member_neither_reproposes_nor_votes_twice() {
    let signers: Vec<TestSigner> = (0..4).map(TestSigner::new).collect();
    let committee =
        Committee::equal(signers.iter().map(|s| s.public_key().to_vec()).collect()).unwrap();
    let cfg = ConsensusConfig::default();
    let mut node = Consensus::new(
        committee.clone(),
        signers[0].clone(),
        TestVerifier,
        cfg.clone(),
    )
    .unwrap();
    node.add_payload([BatchItem::Tx(TxId::from_bytes([1; 32]))]);
    let mut records = Vec::new();
    let keep = |outs: Vec<Output>, records: &mut Vec<Record>| {
        for o in outs {
            if let Output::Persist(r) = o {
                records.push(r);
            }
        }
    };
    keep(node.start(0), &mut records);
    // B proposes round 0; we vote.
    let b0 = SignedBatch::sign(
        BatchHeader {
            epoch: 0,
            round: 0,
            author: signers[1].node_id(),
            timestamp_ms: 0,
            parents: vec![],
            weak_links: vec![],
            items: vec![],
        },
        &signers[1],
    );
    keep(
        node.handle(1, signers[1].node_id(), Message::Propose(b0.clone()))
            .unwrap(),
        &mut records,
    );
    let own = match &records[0] {
        Record::Proposed(b) => b.clone(),
        r => panic!("{r:?}"),
    };
    // Crash; restart from the records with an empty payload queue.
    let (mut node, outs) =
        Consensus::recover(committee, signers[0].clone(), TestVerifier, cfg, records).unwrap();
    assert_eq!(node.round(), Some(0));
    assert_eq!(
        outs,
        vec![Output::Broadcast(Message::Propose(own.clone()))],
        "the same proposal again"
    );
    let outs = node.tick(10_000);
    assert!(
        outs.iter()
            .all(|o| !matches!(o, Output::Broadcast(Message::Propose(b)) if *b != own))
    );
    // The same proposal by B gets the same vote; a different one gets none (and is evidence).
    let again = node
        .handle(10_001, signers[1].node_id(), Message::Propose(b0))
        .unwrap();
    assert!(
        matches!(
            &again[..],
            [Output::Send {
                message: Message::Vote(_),
                ..
            }]
        ),
        "{again:?}"
    );
    let b0x = SignedBatch::sign(
        BatchHeader {
            epoch: 0,
            round: 0,
            author: signers[1].node_id(),
            timestamp_ms: 5,
            parents: vec![],
            weak_links: vec![],
            items: vec![],
        },
        &signers[1],
    );
    let out = node
        .handle(10_002, signers[1].node_id(), Message::Propose(b0x))
        .unwrap();
    assert!(
        out.iter().all(|o| !matches!(
            o,
            Output::Send {
                message: Message::Vote(_),
                ..
            }
        )),
        "{out:?}"
    );
}

/// The header used by the pinned encoding tests.
fn pinned_header(weak_links: Vec<BatchDigest>) -> BatchHeader {
    BatchHeader {
        epoch: 0,
        round: 7,
        author: NodeId::from_bytes([0xAA; 32]),
        timestamp_ms: 1_700_000_000_000,
        parents: vec![
            BatchDigest(crate::Hash32([1; 32])),
            BatchDigest(crate::Hash32([2; 32])),
        ],
        weak_links,
        items: vec![
            BatchItem::Tx(TxId::from_bytes([3; 32])),
            BatchItem::Stripe(StripeId::from_bytes([4; 32])),
        ],
    }
}

#[test]
fn batch_encoding_is_pinned_in_both_versions() {
    // Written out by hand, not with the Writer: if this changes, every stored batch, digest
    // and signature changes with it.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&7u64.to_le_bytes());
    v1.extend_from_slice(&[0xAA; 32]);
    v1.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    v1.extend_from_slice(&2u16.to_le_bytes());
    v1.extend_from_slice(&[1; 32]);
    v1.extend_from_slice(&[2; 32]);
    let items = {
        let mut i = 2u32.to_le_bytes().to_vec();
        i.push(0);
        i.extend_from_slice(&[3; 32]);
        i.push(1);
        i.extend_from_slice(&[4; 32]);
        i
    };
    // Version 2: the version byte, then weak links between parents and items.
    let mut v2 = v1.clone();
    v2[0] = 2;
    v2.extend_from_slice(&1u16.to_le_bytes());
    v2.extend_from_slice(&[5; 32]);
    v1.extend_from_slice(&items);
    v2.extend_from_slice(&items);

    // Without weak links a header keeps the version 1 bytes (and digest) of before weak links.
    let plain = pinned_header(vec![]);
    assert_eq!(plain.encode(), v1);
    assert_eq!(
        plain.digest().0.to_hex(),
        "0c729f07109089cd4aae56fef8425c835e9aa5fb52e156a99dd7afd62de19fcf"
    );
    let linked = pinned_header(vec![BatchDigest(crate::Hash32([5; 32]))]);
    assert_eq!(linked.encode(), v2);
    assert_eq!(
        linked.digest().0.to_hex(),
        "9f7c7de0a7fa46062fbb44ccf5e6456ae7515529d3da29d2932b74646b60c727"
    );
    assert_eq!(plain.digest().0, crate::Hash32::digest(&v1));
    assert_eq!(linked.digest().0, crate::Hash32::digest(&v2));
    assert_eq!(BatchHeader::decode(&v1).unwrap(), plain);
    assert_eq!(BatchHeader::decode(&v2).unwrap(), linked);

    // Strict: one encoding per header. Version 2 with no weak links, an unknown version, too
    // many weak links and trailing bytes are refused.
    let mut empty_v2 = v1[..1 + 8 + 32 + 8 + 2 + 64].to_vec();
    empty_v2[0] = 2;
    empty_v2.extend_from_slice(&0u16.to_le_bytes());
    empty_v2.extend_from_slice(&items);
    assert!(matches!(
        BatchHeader::decode(&empty_v2),
        Err(crate::DecodeError::Invalid {
            field: "weak links",
            ..
        })
    ));
    let mut v4 = v2.clone();
    v4[0] = 4;
    assert!(matches!(
        BatchHeader::decode(&v4),
        Err(crate::DecodeError::UnsupportedVersion(4))
    ));
    // Version 3: a header of a later epoch; the epoch right after the version byte, then
    // the version 2 fields with a weak-link count that may be 0.
    let mut v3 = vec![3u8];
    v3.extend_from_slice(&9u64.to_le_bytes());
    v3.extend_from_slice(&v1[1..1 + 8 + 32 + 8 + 2 + 64]);
    v3.extend_from_slice(&0u16.to_le_bytes());
    v3.extend_from_slice(&items);
    let epoch9 = BatchHeader {
        epoch: 9,
        ..pinned_header(vec![])
    };
    assert_eq!(epoch9.encode(), v3);
    assert_eq!(BatchHeader::decode(&v3).unwrap(), epoch9);
    assert_ne!(epoch9.digest(), plain.digest());
    // Signed round: epoch × 2⁴⁰ + round, the round alone in epoch 0.
    assert_eq!(plain.signed_round(), 7);
    assert_eq!(epoch9.signed_round(), 9 * (1u64 << 40) + 7);
    // Epoch 0 written as version 3 is refused (it has a version 1 or 2 encoding).
    let mut zero = v3.clone();
    zero[1..9].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        BatchHeader::decode(&zero),
        Err(crate::DecodeError::Invalid { field: "epoch", .. })
    ));
    let mut too_many = v1[..1 + 8 + 32 + 8 + 2 + 64].to_vec();
    too_many[0] = 2;
    too_many.extend_from_slice(&((MAX_WEAK_LINKS + 1) as u16).to_le_bytes());
    assert!(matches!(
        BatchHeader::decode(&too_many),
        Err(crate::DecodeError::TooLong {
            field: "weak links",
            ..
        })
    ));
    let mut trailing = v2.clone();
    trailing.push(0);
    assert!(BatchHeader::decode(&trailing).is_err());
}

#[test]
fn weak_link_rules_are_typed_errors_and_keep_nothing() {
    let mut b = DagBuilder::new(4);
    b.parse("r0: A B C D; r1: A B C D; r2: A B C D; r3: A B C D")
        .unwrap();
    let all = [0, 1, 2, 3];
    let frozen = b.clone();
    let d = |l: &str| frozen.digest(l).unwrap();
    let r3: Vec<BatchDigest> = ["A3", "B3", "C3", "D3"].iter().map(|l| d(l)).collect();
    let c = b.committee().clone();
    let before = b.store().len();
    let with = |links: Vec<BatchDigest>, round: Round, parents: Vec<BatchDigest>| {
        frozen.certify(
            frozen.batch_with_weak_links(0, round, parents, links, vec![]),
            &all,
        )
    };
    // Stateless: rounds 0 and 1 link nothing, no repeats, at most MAX_WEAK_LINKS.
    let early = with(vec![d("B0")], 1, vec![d("A0"), d("B0"), d("C0")]);
    assert!(matches!(
        early.verify(&c, &TestVerifier),
        Err(ConsensusError::WeakLinksTooEarly {
            round: 1,
            count: 1,
            ..
        })
    ));
    let twice = with(vec![d("B1"), d("B1")], 4, r3.clone());
    assert!(matches!(
        twice.verify(&c, &TestVerifier),
        Err(ConsensusError::DuplicateWeakLink { .. })
    ));
    let many = with(vec![d("B1"); MAX_WEAK_LINKS + 1], 4, r3.clone());
    assert!(matches!(
        many.verify(&c, &TestVerifier),
        Err(ConsensusError::Oversized {
            field: "weak links",
            ..
        })
    ));
    // Against the DAG: the previous round is for parents; unknown links are missing.
    let e = b.insert(with(vec![d("B3")], 4, r3.clone())).unwrap_err();
    assert!(
        matches!(
            e,
            ConsensusError::WrongWeakLinkRound {
                round: 4,
                link_round: 3,
                ..
            }
        ),
        "{e}"
    );
    let unknown = BatchDigest(crate::Hash32([7; 32]));
    let e = b.insert(with(vec![unknown], 4, r3.clone())).unwrap_err();
    assert!(
        matches!(e, ConsensusError::MissingParents { ref missing, .. } if *missing == vec![unknown]),
        "{e}"
    );
    assert_eq!(b.store().len(), before, "nothing stored");
    // A good one: B1 is already in the history, a redundant link is allowed.
    assert!(b.insert(with(vec![d("B1")], 4, r3)).unwrap());
}

#[test]
fn late_certificate_commits_through_a_weak_link_exactly_once() {
    // D1 is certified but reaches the others after they proposed round 2, and D itself
    // skips round 2: nothing names D1 as a parent. Leaders (round robin): A0, B2, C4, D6.
    let orphaned = "r0: A B C D; r1: A B C D; \
                    r2: A<-[A,B,C] B<-[A,B,C] C<-[A,B,C]; \
                    r3: A B C D; r4: A B C D; r5: A B C D; r6: A B C D; r7: A B C D";
    // Without weak links (the old bug): D1's items never commit.
    let mut old = DagBuilder::new(4);
    old.parse(orphaned).unwrap();
    let trace = old.commit_trace(true);
    assert!(trace.starts_with("A0[A0] B2["), "{trace}");
    assert!(
        !trace.contains("D1"),
        "D1 committed without weak links: {trace}"
    );
    assert!(
        old.store()
            .unreferenced()
            .any(|c| old.label(&c.digest()) == "D1"),
        "D1 is a tip nothing links to"
    );
    // With a weak link from D3 (D proposes again in round 3 and links its own late D1):
    // C4 orders D1 once, by (round, author) inside its sub-DAG.
    let linked = orphaned.replace("r3: A B C D", "r3: A B C D~[D1]");
    let mut new = DagBuilder::new(4);
    new.parse(&linked).unwrap();
    let trace = new.commit_trace(true);
    assert_eq!(trace.matches("D1").count(), 1, "{trace}");
    let c4 = trace
        .split(' ')
        .find(|s| s.starts_with("C4["))
        .unwrap_or("");
    assert!(c4.contains("D1"), "{trace}");
    assert!(
        new.store()
            .unreferenced()
            .all(|c| new.label(&c.digest()) != "D1")
    );
}

#[test]
fn driver_weak_links_a_late_certificate_and_keeps_open_proposals() {
    // Member A runs the driver; B, C and D are played by the builder. D1 arrives only after
    // A proposed round 2, so A's round-3 proposal weak-links it.
    let b = DagBuilder::new(4);
    let cfg = ConsensusConfig {
        leader_timeout_ms: 0,
        ..ConsensusConfig::default()
    };
    let mut a = Consensus::new(
        b.committee().clone(),
        b.signer(0).clone(),
        TestVerifier,
        cfg,
    )
    .unwrap();
    let item = BatchItem::Tx(TxId::from_bytes([9; 32]));
    a.add_payload([item]);
    let id = |i: usize| b.signer(i).node_id();
    let proposals = |out: &[Output]| -> Vec<SignedBatch> {
        out.iter()
            .filter_map(|o| match o {
                Output::Broadcast(Message::Propose(p)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    };
    // B and C vote for A's proposal; returns what A did with the certificate.
    let certify = |a: &mut Consensus<TestSigner, TestVerifier>, p: &SignedBatch| {
        let mut out = Vec::new();
        for v in [1, 2] {
            let vote = Vote::sign(p.digest(), id(v), b.signer(v));
            out.extend(a.handle(1, id(v), Message::Vote(vote)).unwrap());
        }
        out
    };
    let feed = |a: &mut Consensus<TestSigner, TestVerifier>, c: &Certificate| {
        a.handle(1, id(1), Message::Certificate(c.clone())).unwrap()
    };
    let all = [0, 1, 2, 3];
    let digests = |cs: &[&Certificate]| cs.iter().map(|c| c.digest()).collect::<Vec<_>>();

    let a0 = proposals(&a.start(0)).pop().unwrap();
    assert_eq!(a0.header.items, vec![item]);
    assert!(a.in_flight_items().contains(&item));
    let out = certify(&mut a, &a0);
    // The own certificate is persisted before it is broadcast.
    let persisted = out
        .iter()
        .position(|o| matches!(o, Output::Persist(Record::Stored(_))))
        .unwrap();
    let sent = out
        .iter()
        .position(|o| matches!(o, Output::Broadcast(Message::Certificate(_))))
        .unwrap();
    assert!(persisted < sent, "{out:?}");
    let a0c = b.certify(a0.clone(), &[0, 1, 2]);
    let r0: Vec<Certificate> = (1..4)
        .map(|i| b.certify(b.batch(i, 0, vec![], vec![]), &all))
        .collect();
    let mut out = Vec::new();
    for c in &r0 {
        out.extend(feed(&mut a, c));
    }
    let a1 = proposals(&out).pop().unwrap();
    assert_eq!(a1.header.round, 1);
    certify(&mut a, &a1);
    let p0 = digests(&[&a0c, &r0[0], &r0[1], &r0[2]]);
    let r1: Vec<Certificate> = (1..4)
        .map(|i| b.certify(b.batch(i, 1, p0.clone(), vec![]), &all))
        .collect();
    // B1 and C1 arrive; D1 does not (yet).
    let mut out = feed(&mut a, &r1[0]);
    out.extend(feed(&mut a, &r1[1]));
    let a2 = proposals(&out).pop().unwrap();
    assert_eq!(a2.header.round, 2);
    assert!(a2.header.weak_links.is_empty());
    let a1c = a
        .store()
        .by_author(1, &id(0))
        .unwrap()
        .certificate()
        .clone();
    // Round 2 gets its quorum from B2, C2, D2 (none names D1) while A2 still waits for
    // votes: A proposes round 3 and keeps A2 open instead of dropping it.
    let p1 = digests(&[&a1c, &r1[0], &r1[1]]);
    let mut out = feed(&mut a, &r1[2]); // D1, late
    for i in 1..4 {
        let c = b.certify(b.batch(i, 2, p1.clone(), vec![]), &all);
        out.extend(feed(&mut a, &c));
    }
    let a3 = proposals(&out).pop().unwrap();
    assert_eq!(a3.header.round, 3);
    assert_eq!(
        a3.header.weak_links,
        vec![r1[2].digest()],
        "D1 is weak-linked"
    );
    assert!(!a3.header.parents.contains(&a2.digest()));
    // A2's votes arrive late: it is still certified (a late certificate itself).
    let out = certify(&mut a, &a2);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Broadcast(Message::Certificate(c)) if c.digest() == a2.digest())
        ),
        "{out:?}"
    );
    assert!(a.store().unreferenced().any(|c| c.digest() == a2.digest()));
}

#[test]
fn open_proposals_survive_a_restart_and_only_hopeless_ones_are_abandoned() {
    // B, C and D (the builder) make every round's quorum without A; A's proposals never get
    // votes. With gc_depth 4, A abandons a proposal 2 rounds behind the one it makes.
    let b = DagBuilder::new(4);
    let cfg = ConsensusConfig {
        leader_timeout_ms: 0,
        gc_depth: 4,
        ..ConsensusConfig::default()
    };
    let id = |i: usize| b.signer(i).node_id();
    let mut a = Consensus::new(
        b.committee().clone(),
        b.signer(0).clone(),
        TestVerifier,
        cfg.clone(),
    )
    .unwrap();
    let x = BatchItem::Tx(TxId::from_bytes([7; 32]));
    a.add_payload([x]);
    let mut records = Vec::new();
    let mut proposals = Vec::new();
    let mut keep = |out: Vec<Output>, records: &mut Vec<Record>| {
        for o in out {
            match o {
                Output::Persist(r) => records.push(r),
                Output::Broadcast(Message::Propose(p)) => proposals.push(p),
                _ => {}
            }
        }
    };
    keep(a.start(0), &mut records);
    let mut parents = Vec::new();
    for round in 0..3 {
        let mut next = Vec::new();
        for i in 1..4 {
            let c = b.certify(b.batch(i, round, parents.clone(), vec![]), &[0, 1, 2, 3]);
            next.push(c.digest());
            keep(
                a.handle(1, id(1), Message::Certificate(c)).unwrap(),
                &mut records,
            );
        }
        parents = next;
    }
    let rounds: Vec<Round> = proposals.iter().map(|p| p.header.round).collect();
    assert_eq!(rounds, [0, 1, 2, 3]);
    // A0 carried x; proposing round 3 abandoned A0 (round 0 < 3 − 2) and x moved to A3.
    assert_eq!(proposals[0].header.items, vec![x]);
    assert_eq!(proposals[3].header.items, vec![x]);
    assert!(proposals[1].header.items.is_empty() && proposals[2].header.items.is_empty());
    let late = Vote::sign(proposals[0].digest(), id(1), b.signer(1));
    assert!(matches!(
        a.handle(2, id(1), Message::Vote(late.clone())),
        Err(ConsensusError::UnknownBatch { .. })
    ));
    // Restart: A1, A2 and A3 collect votes again; A0 stays abandoned.
    let (mut a, out) = Consensus::recover(
        b.committee().clone(),
        b.signer(0).clone(),
        TestVerifier,
        cfg,
        records,
    )
    .unwrap();
    let reopened: Vec<Round> = out
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(Message::Propose(p)) => Some(p.header.round),
            _ => None,
        })
        .collect();
    assert_eq!(reopened, [1, 2, 3]);
    assert!(a.in_flight_items().contains(&x));
    assert!(matches!(
        a.handle(3, id(1), Message::Vote(late)),
        Err(ConsensusError::UnknownBatch { .. })
    ));
    // A vote for A1 still counts: with C's, A1 is certified.
    let mut certified = false;
    for v in [1, 2] {
        let vote = Vote::sign(proposals[1].digest(), id(v), b.signer(v));
        let out = a.handle(4, id(v), Message::Vote(vote)).unwrap();
        certified |= out
            .iter()
            .any(|o| matches!(o, Output::Broadcast(Message::Certificate(_))));
    }
    assert!(certified);
}
