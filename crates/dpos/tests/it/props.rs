//! Property tests over random sequences of signed system txs (real ML-DSA-87 keys from the
//! shared pool): supply is conserved except for slashing and rewards, which are accounted
//! exactly; one offence never slashes twice; a failed apply leaves the snapshot bytes
//! unchanged; snapshots round-trip; election and the whole machine are deterministic.

use crate::{T0, TOKEN, receipt};
use dag_core::Hash32;
use dpos::test_utils::{city, keys, metrics_for_test, verified_for_test};
use dpos::{
    ApplyCtx, Candidate, DAY_MS, DoubleSignEvidence, DposConfig, DposState, Error, Genesis,
    GenesisBond, Metrics, NodeKind, Outcome, Score, SignedHeaderDigest, SlashLevel, SystemPayload,
    VerifiedSystemTx, elect,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Keys 0–3 full nodes, 4–5 plain accounts, 6 a light node, 7 unregistered with a balance.
fn genesis() -> Genesis {
    let k = keys();
    let mut g = Genesis {
        config: DposConfig::default(),
        time_ms: T0,
        ..Genesis::default()
    };
    for (i, key) in k.iter().enumerate() {
        g.balances.push((key.account_id(), 500 * TOKEN));
        let kind = match i {
            0..=3 => NodeKind::Full,
            6 => NodeKind::Light,
            _ => continue,
        };
        g.nodes.push((key.account_id(), kind, metrics_for_test()));
        g.bonds.push(GenesisBond {
            delegator: key.account_id(),
            validator: key.account_id(),
            amount: (20 + 30 * i as u64) * TOKEN,
        });
    }
    g
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        who: usize,
        light: bool,
        metrics: Metrics,
    },
    Update {
        who: usize,
        metrics: Metrics,
    },
    Bond {
        who: usize,
        amount: u64,
    },
    Delegate {
        who: usize,
        to: usize,
        amount: u64,
    },
    Unbond {
        who: usize,
        to: usize,
        amount: u64,
    },
    Withdraw {
        who: usize,
        to: usize,
    },
    DoubleSign {
        who: usize,
        offender: usize,
        round: u64,
        level: usize,
        digests: (u8, u8),
    },
    Incident {
        who: usize,
        node: usize,
        incident: u8,
    },
    Contribute {
        who: usize,
        holders: Vec<(usize, u64)>,
    },
    Claim {
        who: usize,
    },
    EndTerm {
        who: usize,
    },
    /// Unbond `pct` % of an existing bond (picked among all), so unbonding really happens.
    UnbondExisting {
        pick: prop::sample::Index,
        pct: u64,
    },
    /// Withdraw from an existing unbonding (picked among all).
    WithdrawExisting {
        pick: prop::sample::Index,
    },
    /// The last double-sign evidence that was applied, submitted again.
    ReplayEvidence {
        who: usize,
    },
    /// A tx with a stale or future nonce.
    BadNonce {
        who: usize,
        skew: u64,
    },
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        (1u64..300).prop_map(|t| t * TOKEN),
        any::<u64>(),
        Just(u64::MAX),
    ]
}

fn metrics() -> impl Strategy<Value = Metrics> {
    (
        0u32..=1_100_000,
        0u32..5000,
        0u32..=1_000_000,
        0u32..=1_000_000,
        0u32..=1_000_000,
        0u32..=1_000_000,
    )
        .prop_map(|(a, m, h, b, u, e)| Metrics {
            access_rate_ppm: a,
            memory_gb: m,
            harmony_ppm: h,
            bandwidth_ppm: b,
            uptime_ppm: u,
            error_rate_ppm: e,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0usize..8;
    // Validators: mostly the registered nodes, sometimes anyone.
    let node = prop_oneof![3 => 0usize..4, 1 => 0usize..8];
    prop_oneof![
        1 => (who.clone(), any::<bool>(), metrics()).prop_map(|(who, light, metrics)| Op::Register { who, light, metrics }),
        1 => (who.clone(), metrics()).prop_map(|(who, metrics)| Op::Update { who, metrics }),
        2 => (who.clone(), amount()).prop_map(|(who, amount)| Op::Bond { who, amount }),
        2 => (who.clone(), node.clone(), amount()).prop_map(|(who, to, amount)| Op::Delegate { who, to, amount }),
        3 => (node.clone(), prop::option::of(who.clone()), amount())
            .prop_map(|(to, who, amount)| Op::Unbond { who: who.unwrap_or(to), to, amount }),
        2 => (node.clone(), prop::option::of(who.clone())).prop_map(|(to, who)| Op::Withdraw { who: who.unwrap_or(to), to }),
        2 => (who.clone(), node.clone(), 0u64..2, prop_oneof![3 => Just(0usize), 1 => 1usize..3], (0u8..3, 0u8..3)).prop_map(
            |(who, offender, round, level, digests)| Op::DoubleSign { who, offender, round, level, digests }
        ),
        1 => who.clone().prop_map(|who| Op::ReplayEvidence { who }),
        2 => (any::<prop::sample::Index>(), 1u64..=100).prop_map(|(pick, pct)| Op::UnbondExisting { pick, pct }),
        2 => any::<prop::sample::Index>().prop_map(|pick| Op::WithdrawExisting { pick }),
        2 => (node.clone(), node.clone(), 0u8..4).prop_map(|(who, node, incident)| Op::Incident { who, node, incident }),
        3 => (who.clone(), proptest::collection::vec((prop_oneof![4 => 0usize..4, 1 => 4usize..8], prop_oneof![4 => 0u64..DAY_MS, 1 => 0u64..3 * DAY_MS]), 1..3))
            .prop_map(|(who, holders)| Op::Contribute { who, holders }),
        2 => node.clone().prop_map(|who| Op::Claim { who }),
        1 => who.clone().prop_map(|who| Op::EndTerm { who }),
        1 => (who, 1u64..3).prop_map(|(who, skew)| Op::BadNonce { who, skew }),
    ]
}

fn step() -> impl Strategy<Value = (Op, u64)> {
    let dt = prop_oneof![
        Just(0u64),
        Just(3_600_000),
        Just(DAY_MS),
        Just(45 * DAY_MS),
        Just(91 * DAY_MS)
    ];
    (op(), dt)
}

/// Every (delegator, validator) pair of pool keys.
fn pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..keys().len()).flat_map(|d| (0..keys().len()).map(move |v| (d, v)))
}

/// Builds the signed-and-verified tx for `op` at the sender's current nonce (or `None`
/// when the op cannot even be built, e.g. evidence with equal digests).
fn build(
    state: &DposState,
    op: &Op,
    now: u64,
    last_evidence: Option<&DoubleSignEvidence>,
) -> Option<VerifiedSystemTx> {
    let k = keys();
    let (who, payload) = match op {
        Op::Register {
            who,
            light,
            metrics,
        } => (
            *who,
            SystemPayload::RegisterNode {
                kind: if *light {
                    NodeKind::Light
                } else {
                    NodeKind::Full
                },
                metrics: *metrics,
            },
        ),
        Op::Update { who, metrics } => (*who, SystemPayload::UpdateMetrics { metrics: *metrics }),
        Op::Bond { who, amount } => (*who, SystemPayload::Bond { amount: *amount }),
        Op::Delegate { who, to, amount } => (
            *who,
            SystemPayload::Delegate {
                validator: k[*to].account_id(),
                amount: *amount,
            },
        ),
        Op::Unbond { who, to, amount } => (
            *who,
            SystemPayload::Unbond {
                validator: k[*to].account_id(),
                amount: *amount,
            },
        ),
        Op::Withdraw { who, to } => (
            *who,
            SystemPayload::Withdraw {
                validator: k[*to].account_id(),
            },
        ),
        Op::DoubleSign {
            who,
            offender,
            round,
            level,
            digests,
        } => {
            let level = SlashLevel::ALL[*level];
            let h = |d: u8| SignedHeaderDigest::sign(level, *round, Hash32([d; 32]), &k[*offender]);
            let e = DoubleSignEvidence::new(level, h(digests.0), h(digests.1)).ok()?;
            (*who, SystemPayload::DoubleSign(e))
        }
        Op::UnbondExisting { pick, pct } => {
            let bonds: Vec<(usize, usize, u64)> = pairs()
                .filter_map(|(d, v)| {
                    let lots = state.bond_lots(&k[d].account_id(), &k[v].account_id());
                    (!lots.is_empty()).then(|| (d, v, lots.iter().map(|l| l.amount).sum::<u64>()))
                })
                .collect();
            if bonds.is_empty() {
                return None;
            }
            let (d, v, total) = bonds[pick.index(bonds.len())];
            (
                d,
                SystemPayload::Unbond {
                    validator: k[v].account_id(),
                    amount: (total / 100 * pct).max(1),
                },
            )
        }
        Op::WithdrawExisting { pick } => {
            let pending: Vec<(usize, usize)> = pairs()
                .filter(|(d, v)| {
                    !state
                        .unbonding(&k[*d].account_id(), &k[*v].account_id())
                        .is_empty()
                })
                .collect();
            if pending.is_empty() {
                return None;
            }
            let (d, v) = pending[pick.index(pending.len())];
            (
                d,
                SystemPayload::Withdraw {
                    validator: k[v].account_id(),
                },
            )
        }
        Op::ReplayEvidence { who } => (*who, SystemPayload::DoubleSign(last_evidence?.clone())),
        Op::Incident {
            who,
            node,
            incident,
        } => (
            *who,
            SystemPayload::ReportIncident {
                node: k[*node].account_id(),
                incident: Hash32([*incident; 32]),
            },
        ),
        Op::Contribute { who, holders } => (
            *who,
            SystemPayload::RecordContribution {
                receipts: holders
                    .iter()
                    .map(|(h, back)| receipt(&k[*h], now.saturating_sub(*back), 0))
                    .collect(),
            },
        ),
        Op::Claim { who } => (*who, SystemPayload::ClaimRewards),
        Op::EndTerm { who } => (*who, SystemPayload::EndTerm),
        Op::BadNonce { who, skew } => {
            let n = state.next_nonce(&k[*who].account_id());
            // One behind (a replay) if possible, else ahead.
            let nonce = if n >= *skew { n - skew } else { n + skew };
            return Some(verified_for_test(
                &k[*who],
                nonce,
                &SystemPayload::ClaimRewards,
            ));
        }
    };
    // Out-of-range metrics are refused before apply, by verification.
    let signed = dpos::sign_system_tx(
        &payload,
        state.next_nonce(&k[who].account_id()),
        0,
        city(),
        &k[who],
    );
    match VerifiedSystemTx::verify(signed, &pqc::MlDsa87) {
        Ok(tx) => Some(tx),
        Err(Error::InvalidMetric { .. }) => None,
        Err(e) => panic!("unexpected verification failure of {op:?}: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_properties(steps in proptest::collection::vec(step(), 1..40)) {
        let mut state = DposState::genesis(genesis()).unwrap();
        let genesis_supply = u128::from(state.supply().genesis);
        prop_assert_eq!(state.accounted_supply(), genesis_supply);
        let (mut minted, mut burned) = (0u128, 0u128);
        let mut slashed: BTreeSet<Hash32> = BTreeSet::new();
        let mut log: Vec<(VerifiedSystemTx, ApplyCtx)> = Vec::new();
        let mut now = T0;
        let mut last_evidence = None;
        for (op, dt) in &steps {
            now += dt;
            let Some(tx) = build(&state, op, now, last_evidence.as_ref()) else { continue };
            let ctx = ApplyCtx { now_ms: now };
            let before = state.snapshot();
            let offence = match tx.payload() {
                SystemPayload::DoubleSign(e) => Some(e.offence_id()),
                _ => None,
            };
            match state.apply(&tx, &ctx) {
                Err(err) => {
                    // Failed apply: byte-for-byte unchanged.
                    prop_assert_eq!(&state.snapshot(), &before, "{:?} failed with {} but changed the state", op, err);
                    if let Some(id) = offence
                        && slashed.contains(&id)
                    {
                        prop_assert!(matches!(err, Error::EvidenceReplayed { .. } | Error::BadNonce { .. }), "{err}");
                    }
                    if matches!(op, Op::BadNonce { .. }) {
                        prop_assert!(matches!(err, Error::BadNonce { .. }), "{}", err);
                    }
                }
                Ok(out) => {
                    prop_assert!(!matches!(op, Op::BadNonce { .. }), "a bad nonce was accepted");
                    match &out {
                        Outcome::Slashed { burned: b, .. } => {
                            burned += u128::from(*b);
                            let id = offence.unwrap();
                            prop_assert!(slashed.insert(id), "offence {:?} slashed twice", id);
                            if let SystemPayload::DoubleSign(e) = tx.payload() {
                                last_evidence = Some(e.clone());
                            }
                        }
                        Outcome::Rewarded { credits, minted: m } => {
                            prop_assert_eq!(credits.iter().map(|c| u128::from(c.2)).sum::<u128>(), u128::from(*m));
                            minted += u128::from(*m);
                        }
                        _ => {}
                    }
                    log.push((tx, ctx));
                }
            }
            // Conservation: everything held equals genesis + minted − burned, exactly.
            prop_assert_eq!(state.accounted_supply(), genesis_supply + minted - burned);
            prop_assert_eq!(u128::from(state.supply().minted), minted);
            prop_assert_eq!(u128::from(state.supply().burned), burned);
            state.check_invariants().unwrap();
        }

        // Snapshot round trip.
        let bytes = state.snapshot();
        let restored = DposState::restore(&bytes).unwrap();
        prop_assert_eq!(&restored, &state);
        prop_assert_eq!(restored.snapshot(), bytes.clone());

        // Election is a function of the state: same result after restore, and whatever
        // order the candidates are listed in.
        let seats = state.config().representatives as usize;
        let elected = state.election();
        prop_assert_eq!(&restored.election(), &elected);
        let mut cands = state.candidates();
        cands.reverse();
        prop_assert_eq!(&elect(&cands, seats), &elected);
        let half = cands.len() / 2;
        cands.rotate_left(half);
        prop_assert_eq!(&elect(&cands, seats), &elected);

        // The whole machine is deterministic: replaying the accepted txs from genesis gives
        // the same bytes.
        let mut replay = DposState::genesis(genesis()).unwrap();
        for (tx, ctx) in &log {
            replay.apply(tx, ctx).unwrap();
        }
        prop_assert_eq!(replay.snapshot(), bytes);
    }

    #[test]
    fn restore_of_a_mutated_snapshot_is_an_error_or_canonical(pos in any::<prop::sample::Index>(), xor in 1u8..) {
        static BYTES: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut s = DposState::genesis(genesis()).unwrap();
            let tx = verified_for_test(&keys()[4], 0, &SystemPayload::Delegate { validator: keys()[1].account_id(), amount: TOKEN });
            s.apply(&tx, &ApplyCtx { now_ms: T0 }).unwrap();
            s.snapshot()
        });
        let mut bytes = BYTES.clone();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(s) = DposState::restore(&bytes) {
            prop_assert_eq!(s.snapshot(), bytes);
            s.check_invariants().unwrap();
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), tag in 0u8..12) {
        let _ = DposState::restore(&bytes);
        let _ = SystemPayload::decode(&bytes);
        // With a valid version and tag, the body decoder is reached.
        let mut p = vec![1, tag];
        p.extend_from_slice(&bytes);
        if let Ok(decoded) = SystemPayload::decode(&p) {
            prop_assert_eq!(decoded.encode(), p);
        }
    }

    #[test]
    fn election_is_the_top_of_a_total_order(
        raw in proptest::collection::vec((any::<[u8; 32]>(), 0u128..5, 0u64..4), 0..60),
        seats in 0usize..6,
        rot in any::<prop::sample::Index>(),
    ) {
        let mut seen = BTreeSet::new();
        let mut cands: Vec<Candidate> = raw
            .into_iter()
            .filter(|(id, _, _)| seen.insert(*id))
            .map(|(id, s, st)| Candidate { account: dag_core::AccountId::from_bytes(id), score: Score(s), stake: st })
            .collect();
        let got = elect(&cands, seats);
        let mut sorted = cands.clone();
        sorted.sort_by(dpos::rank_order);
        sorted.truncate(seats);
        prop_assert_eq!(&got, &sorted);
        if !cands.is_empty() {
            let r = rot.index(cands.len());
            cands.rotate_left(r);
            cands.reverse();
        }
        prop_assert_eq!(elect(&cands, seats), got);
    }
}
