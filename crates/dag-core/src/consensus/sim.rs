//! A deterministic discrete-event simulation of 4 representatives running the
//! [`Consensus`] driver over a lossy, delaying network, in three families of faults:
//! - **plain**: message loss, a heavy tail of slow messages and a partition that heals;
//! - **crash-restart**: one node crashes and restarts from its persisted records;
//! - **stragglers**: every message one node sends arrives ~900 ms late (sim time);
//! - and, smaller, **crash-for-good**: one node crashes and never comes back.
//!
//! Besides agreement (same commit order everywhere), no evidence against honest nodes and
//! liveness, every run checks that **every item submitted to a live node commits exactly
//! once**: each node submits items for a while, then the run drains until all of them are
//! committed on every node, none twice, in identical item sequences. Randomness comes from
//! a seeded xorshift generator only, so a failing seed (printed as `SIM_SEED=…`) replays
//! exactly: `SIM_SEED=<seed> cargo test -p dag-core sim_<family>`; `SIM_SEEDS=<lo>..<hi>`
//! runs another range of seeds instead of the default 200 per family.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::{Hash32, NodeId, TxId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::result::Result;

/// xorshift64*: tiny, seedable, good enough for scheduling.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub(super) fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

enum Event {
    Restart(usize),
    Deliver {
        to: usize,
        from: usize,
        msg: Message,
    },
    Tick(usize),
}

/// A family of faults; each seeds its own scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Loss, a slow tail and a partition that heals.
    Plain,
    /// One node crashes and restarts from its persisted records.
    CrashRestart,
    /// Every message one node sends arrives ~900 ms late.
    Stragglers,
    /// One node crashes for good (the f tolerated); the other three carry on.
    CrashForGood,
}

impl Family {
    fn test_name(self) -> &'static str {
        match self {
            Family::Plain => "sim_plain",
            Family::CrashRestart => "sim_crash_restart",
            Family::Stragglers => "sim_stragglers",
            Family::CrashForGood => "sim_crash_for_good",
        }
    }
}

/// What can go wrong in one run.
#[derive(Debug, Clone)]
struct Scenario {
    loss_per_mille: u64,
    delay_ms: (u64, u64),
    /// How long nodes wait for a late leader (short: more skipped and indirect leaders).
    leader_timeout_ms: u64,
    /// Share of messages delayed 100–900 ms.
    slow_per_mille: u64,
    /// `[start, end)` during which nodes in different groups cannot talk.
    partition: (u64, u64),
    groups: [u8; 4],
    /// (node, time) of a crash.
    crash: Option<(usize, u64)>,
    /// When the crashed node restarts from its persisted records (never if `None`).
    restart_ms: Option<u64>,
    /// A node whose every message takes `straggle_ms` (plus the normal delay).
    straggler: Option<usize>,
    straggle_ms: (u64, u64),
    /// A member that equivocates on every proposal (then nobody crashes).
    byzantine: Option<usize>,
    /// Round robin, or stake-weighted draws from a seed.
    leaders: LeaderSchedule,
    /// Nodes submit items until then; afterwards the run drains.
    submit_until_ms: u64,
    /// A live node submits one item per tick with this probability.
    submit_per_mille: u64,
    /// Hard end of the run: whatever is not committed by then is a failure.
    end_ms: u64,
    /// Weak links on (the default); off only to show what they fix.
    weak_links: bool,
}

impl Scenario {
    fn random(rng: &mut Rng, family: Family) -> Self {
        let mut sc = Scenario {
            loss_per_mille: rng.range(0, 60),
            delay_ms: (rng.range(1, 10), rng.range(20, 80)),
            slow_per_mille: rng.range(0, 100),
            leader_timeout_ms: rng.range(0, 400),
            partition: (0, 0),
            groups: [0; 4],
            crash: None,
            restart_ms: None,
            straggler: None,
            straggle_ms: (850, 950),
            byzantine: None,
            leaders: if rng.per_mille(500) {
                LeaderSchedule::RoundRobin
            } else {
                LeaderSchedule::StakeWeighted {
                    seed: [rng.below(256) as u8; 32],
                }
            },
            submit_until_ms: 0,
            submit_per_mille: 250,
            end_ms: 0,
            weak_links: true,
        };
        match family {
            Family::Plain => {
                let start = rng.range(300, 2000);
                sc.partition = (start, start + rng.range(300, 2000));
                if rng.per_mille(500) {
                    sc.groups[rng.below(4) as usize] = 1; // one node cut off
                } else {
                    let a = rng.below(4) as usize; // two against two
                    let b = (a + 1 + rng.below(3) as usize) % 4;
                    sc.groups[a] = 1;
                    sc.groups[b] = 1;
                }
            }
            Family::CrashRestart => {
                let at = rng.range(200, 3000);
                sc.crash = Some((rng.below(4) as usize, at));
                sc.restart_ms = Some(at + rng.range(300, 2500));
            }
            Family::Stragglers => sc.straggler = Some(rng.below(4) as usize),
            Family::CrashForGood => sc.crash = Some((rng.below(4) as usize, rng.range(200, 3000))),
        }
        sc.submit_until_ms = (sc.settle_ms() + 500).max(2500);
        sc.end_ms = sc.submit_until_ms + 20_000;
        sc
    }
    fn settle_ms(&self) -> u64 {
        self.partition
            .1
            .max(self.crash.map_or(0, |c| c.1))
            .max(self.restart_ms.unwrap_or(0))
    }
    fn crashed(&self, node: usize, now: u64) -> bool {
        self.crash.is_some_and(|(n, t)| n == node && now >= t)
            && self.restart_ms.is_none_or(|r| now < r)
    }
    fn cut(&self, a: usize, b: usize, now: u64) -> bool {
        now >= self.partition.0 && now < self.partition.1 && self.groups[a] != self.groups[b]
    }
}

struct SimNode {
    driver: Consensus<TestSigner, TestVerifier>,
    sequence: Vec<BatchDigest>,
    checkpoints: Vec<Hash32>,
    commits_at_settle: Option<usize>,
    payload_counter: u64,
    /// Every item handed to this node's driver, in order (the host's durable tx store).
    submitted: Vec<BatchItem>,
    /// Committed items in commit order (first occurrences and repeats alike).
    items: Vec<BatchItem>,
    committed_items: HashSet<BatchItem>,
    /// When each own payload item was queued, until committed.
    queued_at: HashMap<BatchItem, u64>,
    /// Queue → commit latency of own items (ms).
    latencies: Vec<u64>,
    /// What the driver asked to persist (survives a crash).
    records: Vec<Record>,
}

struct Sim {
    rng: Rng,
    scenario: Scenario,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    /// (reporting node, evidence).
    evidence: Vec<(usize, Equivocation)>,
    committee: Committee,
    config: ConsensusConfig,
    restarts: usize,
    /// Items re-queued by the host after a restart (queued in memory when it crashed).
    requeued: usize,
    now: u64,
}

const TICK_MS: u64 = 50;

impl Sim {
    fn new(seed: u64, family: Family) -> Self {
        let mut rng = Rng::new(seed);
        let scenario = Scenario::random(&mut rng, family);
        Self::with_scenario(rng, scenario)
    }

    fn with_scenario(rng: Rng, scenario: Scenario) -> Self {
        let signers: Vec<TestSigner> = (0..4).map(TestSigner::new).collect();
        let committee = Committee::equal(
            signers
                .iter()
                .map(|s| crate::Signer::public_key(s).to_vec())
                .collect(),
        )
        .unwrap()
        .with_leader_schedule(scenario.leaders);
        let config = ConsensusConfig {
            leader_timeout_ms: scenario.leader_timeout_ms,
            resend_ms: 300,
            max_weak_links: if scenario.weak_links {
                MAX_WEAK_LINKS
            } else {
                0
            },
            ..ConsensusConfig::default()
        };
        let ids = signers.iter().map(|s| s.node_id()).collect();
        let nodes = signers
            .iter()
            .cloned()
            .map(|s| SimNode {
                driver: Consensus::new(committee.clone(), s, TestVerifier, config.clone()).unwrap(),
                sequence: Vec::new(),
                checkpoints: Vec::new(),
                commits_at_settle: None,
                payload_counter: 0,
                submitted: Vec::new(),
                items: Vec::new(),
                committed_items: HashSet::new(),
                queued_at: HashMap::new(),
                latencies: Vec::new(),
                records: Vec::new(),
            })
            .collect();
        Sim {
            rng,
            scenario,
            nodes,
            ids,
            queue: BTreeMap::new(),
            committee,
            config,
            restarts: 0,
            requeued: 0,
            seq: 0,
            evidence: Vec::new(),
            now: 0,
        }
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn send(&mut self, now: u64, from: usize, to: usize, msg: Message) {
        if self.rng.per_mille(self.scenario.loss_per_mille) {
            return;
        }
        // Heavy tail: some messages arrive much later than the rest (and after timeouts).
        let mut delay = if self.rng.per_mille(self.scenario.slow_per_mille) {
            self.rng.range(100, 900)
        } else {
            self.rng
                .range(self.scenario.delay_ms.0, self.scenario.delay_ms.1)
        };
        if self.scenario.straggler == Some(from) {
            let (lo, hi) = self.scenario.straggle_ms;
            delay += self.rng.range(lo, hi);
        }
        self.schedule(now + delay, Event::Deliver { to, from, msg });
    }

    fn outputs(&mut self, now: u64, node: usize, outs: Vec<Output>) -> Result<(), String> {
        for o in outs {
            match o {
                Output::Broadcast(m) => {
                    // A Byzantine member shows its last peer another batch for the round.
                    let twin = match &m {
                        Message::Propose(b) if self.scenario.byzantine == Some(node) => {
                            let mut h = b.header.clone();
                            h.timestamp_ms += 1;
                            Some(Message::Propose(SignedBatch::sign(
                                h,
                                &TestSigner::new(node as u64),
                            )))
                        }
                        _ => None,
                    };
                    let last = (0..4).rev().find(|t| *t != node).unwrap_or(0);
                    for to in 0..4 {
                        if to != node {
                            let msg = match &twin {
                                Some(t) if to == last => t.clone(),
                                _ => m.clone(),
                            };
                            self.send(now, node, to, msg);
                        }
                    }
                }
                Output::Send { to, message } => {
                    let to = self
                        .ids
                        .iter()
                        .position(|i| *i == to)
                        .ok_or("send to a stranger")?;
                    self.send(now, node, to, message);
                }
                Output::Committed(sub) => {
                    let n = &mut self.nodes[node];
                    let seq = sub.checkpoint.sequence as usize;
                    if seq < n.checkpoints.len() {
                        // Replayed after a restart: must be exactly what was committed.
                        if n.checkpoints[seq] != sub.checkpoint.hash() {
                            return Err(format!("node {node}: replayed checkpoint {seq} differs"));
                        }
                        continue;
                    }
                    if sub.checkpoint.sequence != n.checkpoints.len() as u64 {
                        return Err(format!("node {node}: checkpoint sequence gap"));
                    }
                    if sub.checkpoint.prev_hash != n.checkpoints.last().copied().unwrap_or_default()
                    {
                        return Err(format!("node {node}: checkpoint chain broken"));
                    }
                    n.sequence.extend(sub.checkpoint.batches.iter().copied());
                    for (_, item) in sub.items() {
                        if !n.committed_items.insert(*item) {
                            return Err(format!(
                                "node {node}: item {item:?} committed twice (checkpoint {seq})"
                            ));
                        }
                        n.items.push(*item);
                        if let Some(t) = n.queued_at.remove(item) {
                            n.latencies.push(now - t);
                        }
                    }
                    n.checkpoints.push(sub.checkpoint.hash());
                }
                Output::Evidence(e) => self.evidence.push((node, e)),
                Output::Persist(r) => self.nodes[node].records.push(r),
            }
        }
        Ok(())
    }

    /// Whether a node is running at the end (crashed nodes that restart count as live).
    fn live_at_end(&self, node: usize) -> bool {
        !self.scenario.crashed(node, self.scenario.end_ms)
    }

    /// Every item submitted to a live node is committed on every live node.
    fn drained(&self) -> bool {
        let live: Vec<usize> = (0..4).filter(|i| self.live_at_end(*i)).collect();
        live.iter().all(|i| {
            live.iter().all(|j| {
                self.nodes[*i]
                    .submitted
                    .iter()
                    .all(|x| self.nodes[*j].committed_items.contains(x))
            })
        })
    }

    fn run(&mut self) -> Result<(), String> {
        for i in 0..4 {
            let outs = self.nodes[i].driver.start(0);
            self.outputs(0, i, outs)?;
            self.schedule(TICK_MS + i as u64 * 7, Event::Tick(i));
        }
        if let (Some((node, _)), Some(at)) = (self.scenario.crash, self.scenario.restart_ms) {
            self.schedule(at, Event::Restart(node));
        }
        let settle = self.scenario.settle_ms();
        let mut next_drain_check = self.scenario.submit_until_ms;
        while let Some(((now, _), event)) = self.queue.pop_first() {
            self.now = now;
            if now > self.scenario.end_ms {
                break;
            }
            if now >= settle {
                for n in &mut self.nodes {
                    n.commits_at_settle.get_or_insert(n.checkpoints.len());
                }
            }
            if now >= next_drain_check {
                // Stop once everything submitted committed and the network kept committing.
                next_drain_check = now + 250;
                if self.drained() && self.committed_since_settle(3) {
                    break;
                }
            }
            match event {
                Event::Restart(i) => {
                    // Everything in memory is gone; only the persisted records remain.
                    let records = self.nodes[i].records.clone();
                    let (driver, outs) = Consensus::recover(
                        self.committee.clone(),
                        TestSigner::new(i as u64),
                        TestVerifier,
                        self.config.clone(),
                        records,
                    )
                    .map_err(|e| format!("node {i} failed to recover: {e}"))?;
                    self.nodes[i].driver = driver;
                    self.restarts += 1;
                    self.outputs(now, i, outs)?;
                    // The host hands back what it holds that is neither committed nor
                    // carried by the recovered driver (it was queued in memory).
                    let n = &mut self.nodes[i];
                    let carried = n.driver.in_flight_items();
                    let lost: Vec<BatchItem> = n
                        .submitted
                        .iter()
                        .filter(|x| !n.committed_items.contains(x) && !carried.contains(x))
                        .copied()
                        .collect();
                    self.requeued += lost.len();
                    n.driver.add_payload(lost);
                    self.schedule(now + TICK_MS, Event::Tick(i));
                }
                Event::Tick(i) => {
                    if self.scenario.crashed(i, now) {
                        continue;
                    }
                    if now < self.scenario.submit_until_ms
                        && self.rng.per_mille(self.scenario.submit_per_mille)
                    {
                        let n = &mut self.nodes[i];
                        n.payload_counter += 1;
                        let mut b = [0u8; 32];
                        b[0] = i as u8;
                        b[8..16].copy_from_slice(&n.payload_counter.to_le_bytes());
                        let item = BatchItem::Tx(TxId::from_bytes(b));
                        n.queued_at.insert(item, now);
                        n.submitted.push(item);
                        n.driver.add_payload([item]);
                    }
                    let outs = self.nodes[i].driver.tick(now);
                    self.outputs(now, i, outs)?;
                    self.schedule(now + TICK_MS, Event::Tick(i));
                }
                Event::Deliver { to, from, msg } => {
                    if self.scenario.crashed(to, now)
                        || self.scenario.crashed(from, now)
                        || self.scenario.cut(from, to, now)
                    {
                        continue;
                    }
                    let from_id = self.ids[from];
                    // Rejections are fine (late votes, stale fetches); they leave no trace.
                    if let Ok(outs) = self.nodes[to].driver.handle(now, from_id, msg) {
                        self.outputs(now, to, outs)?;
                    }
                }
            }
        }
        self.check()
    }

    fn committed_since_settle(&self, at_least: usize) -> bool {
        (0..4).filter(|i| self.live_at_end(*i)).all(|i| {
            let n = &self.nodes[i];
            n.checkpoints.len()
                >= n.commits_at_settle
                    .unwrap_or(usize::MAX)
                    .saturating_add(at_least)
        })
    }

    fn check(&self) -> Result<(), String> {
        // Safety: every pair of committed sequences agrees on their common prefix.
        for a in 0..4 {
            for b in a + 1..4 {
                let (x, y) = (&self.nodes[a], &self.nodes[b]);
                let n = x.sequence.len().min(y.sequence.len());
                if x.sequence[..n] != y.sequence[..n] {
                    let at = (0..n)
                        .find(|i| x.sequence[*i] != y.sequence[*i])
                        .unwrap_or(0);
                    return Err(format!("nodes {a} and {b} diverge at position {at}"));
                }
                let m = x.checkpoints.len().min(y.checkpoints.len());
                if x.checkpoints[..m] != y.checkpoints[..m] {
                    return Err(format!("nodes {a} and {b} have different checkpoints"));
                }
            }
        }
        // No batch is committed twice.
        for (i, n) in self.nodes.iter().enumerate() {
            let mut s = n.sequence.clone();
            s.sort();
            s.dedup();
            if s.len() != n.sequence.len() {
                return Err(format!("node {i} committed a batch twice"));
            }
        }
        let byzantine = self.scenario.byzantine.map(|b| self.ids[b]);
        if let Some((by, e)) = self
            .evidence
            .iter()
            .find(|(_, e)| Some(e.author()) != byzantine)
        {
            return Err(format!(
                "node {by} raised evidence against honest {}",
                e.author()
            ));
        }
        if let Some((by, e)) = self
            .evidence
            .iter()
            .find(|(_, e)| e.verify(&self.committee, &TestVerifier).is_err())
        {
            return Err(format!(
                "node {by} raised unverifiable evidence against {}",
                e.author()
            ));
        }
        // Every item submitted to a live node commits exactly once, on every live node, in
        // the same order (twice is caught as it happens, in `outputs`).
        let live: Vec<usize> = (0..4).filter(|i| self.live_at_end(*i)).collect();
        for &i in &live {
            for &j in &live {
                let missing = self.nodes[i]
                    .submitted
                    .iter()
                    .filter(|x| !self.nodes[j].committed_items.contains(x))
                    .count();
                if missing > 0 {
                    return Err(format!(
                        "{missing} of the {} items submitted to node {i} never committed on node {j} \
                         (run ended at {} ms)",
                        self.nodes[i].submitted.len(),
                        self.now
                    ));
                }
            }
        }
        if let Some(&first) = live.first() {
            let len = live
                .iter()
                .map(|i| self.nodes[*i].items.len())
                .min()
                .unwrap_or(0);
            for &j in &live {
                if self.nodes[j].items[..len] != self.nodes[first].items[..len] {
                    return Err(format!(
                        "nodes {first} and {j} committed items in different orders"
                    ));
                }
            }
        }
        // Liveness: after the partition healed and the crash happened, every live node
        // keeps committing.
        for &i in &live {
            let n = &self.nodes[i];
            let before = n.commits_at_settle.unwrap_or(0);
            if n.checkpoints.len() < before + 3 {
                return Err(format!(
                    "node {i} made only {} commits after the network settled at {} ms ({} before)",
                    n.checkpoints.len().saturating_sub(before),
                    self.scenario.settle_ms(),
                    before
                ));
            }
        }
        Ok(())
    }
}

/// Per run: (fewest checkpoints of a live node, items committed, items re-queued after restarts,
/// weak links proposed).
fn run_seed(seed: u64, family: Family) -> Result<(usize, usize, usize, usize), String> {
    let mut sim = Sim::new(seed, family);
    sim.run().map_err(|e| {
        format!(
            "SIM_SEED={seed} ({} family): {e}; scenario {:?}",
            family.test_name(),
            sim.scenario
        )
    })?;
    let min = (0..4)
        .filter(|i| sim.live_at_end(*i))
        .map(|i| sim.nodes[i].checkpoints.len())
        .min()
        .unwrap_or(0);
    let items = sim.nodes[0].items.len();
    let weak = sim
        .nodes
        .iter()
        .flat_map(|n| &n.records)
        .map(|r| match r {
            Record::Proposed(b) => b.header.weak_links.len(),
            _ => 0,
        })
        .sum();
    Ok((min, items, sim.requeued, weak))
}

#[test]
fn sim_calm_network_commits_steadily() {
    let scenario = Scenario {
        loss_per_mille: 0,
        delay_ms: (5, 20),
        slow_per_mille: 0,
        leader_timeout_ms: 400,
        partition: (0, 0),
        groups: [0; 4],
        crash: None,
        restart_ms: None,
        straggler: None,
        straggle_ms: (0, 0),
        byzantine: None,
        leaders: LeaderSchedule::RoundRobin,
        submit_until_ms: 4000,
        submit_per_mille: 1000,
        end_ms: 6000,
        weak_links: true,
    };
    let mut sim = Sim::with_scenario(Rng::new(1), scenario);
    sim.run().unwrap();
    let mut lat: Vec<u64> = sim
        .nodes
        .iter()
        .flat_map(|n| n.latencies.iter().copied())
        .collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    eprintln!(
        "calm network (5-20 ms delays, 50 ms ticks): {} items, queue→commit p50 {} ms, p99 {} ms",
        lat.len(),
        p(0.5),
        p(0.99)
    );
    assert!(lat.len() > 150);
    for n in &sim.nodes {
        assert!(n.checkpoints.len() > 20, "{}", n.checkpoints.len());
        // Payload flowed: committed batches carry the queued tx ids.
        assert!(n.driver.store().len() > 80);
    }
}

/// Runs the seeds `range` of a family (or only `SIM_SEED` if set), prints statistics, and
/// fails listing every failing seed with its scenario.
fn run_seeds(family: Family, range: std::ops::Range<u64>) {
    // SIM_SEED=<n> replays one seed; SIM_SEEDS=<lo>..<hi> runs another range (a soak).
    let seeds: Vec<u64> = match (std::env::var("SIM_SEED"), std::env::var("SIM_SEEDS")) {
        (Ok(s), _) => vec![s.parse().expect("SIM_SEED is a number")],
        (_, Ok(r)) => {
            let (lo, hi) = r.split_once("..").expect("SIM_SEEDS is <lo>..<hi>");
            (lo.parse().expect("a number")..hi.parse().expect("a number")).collect()
        }
        _ => range.collect(),
    };
    let mut failures = Vec::new();
    let (mut least, mut items, mut requeued, mut weak) = (usize::MAX, 0, 0, 0);
    for s in &seeds {
        match run_seed(*s, family) {
            Ok((min, n, r, w)) => {
                least = least.min(min);
                items += n;
                requeued += r;
                weak += w;
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{}: {} seeds from {}: {items} items committed exactly once, at least {least} checkpoints \
         per live node, {weak} weak links proposed, {requeued} items re-queued after restarts",
        family.test_name(),
        seeds.len(),
        seeds.first().copied().unwrap_or(0)
    );
    assert!(
        failures.is_empty(),
        "{} failing seeds (replay one: SIM_SEED=<seed> cargo test -p dag-core {}):\n{}",
        failures.len(),
        family.test_name(),
        failures.join("\n")
    );
}

// 200 seeds per family, in two tests each so the harness runs them in parallel.
#[test]
fn sim_plain_seeds_0_to_99() {
    run_seeds(Family::Plain, 0..100);
}
#[test]
fn sim_plain_seeds_100_to_199() {
    run_seeds(Family::Plain, 100..200);
}
#[test]
fn sim_crash_restart_seeds_0_to_99() {
    run_seeds(Family::CrashRestart, 0..100);
}
#[test]
fn sim_crash_restart_seeds_100_to_199() {
    run_seeds(Family::CrashRestart, 100..200);
}
#[test]
fn sim_stragglers_seeds_0_to_99() {
    run_seeds(Family::Stragglers, 0..100);
}
#[test]
fn sim_stragglers_seeds_100_to_199() {
    run_seeds(Family::Stragglers, 100..200);
}

// Not a family the issue asks for, but what a permanently lost representative does to the
// rest: every item submitted to the three live ones still commits exactly once.
#[test]
fn sim_crash_for_good_seeds_0_to_49() {
    run_seeds(Family::CrashForGood, 0..50);
}

#[test]
fn sim_without_weak_links_a_straggler_loses_items() {
    // The old bug: a straggler's certificates reach the others after they moved on, so no
    // parent names them and, without weak links, their items never commit. The same seeds
    // pass the stragglers family above.
    for seed in 0..5u64 {
        let mut rng = Rng::new(seed);
        let mut scenario = Scenario::random(&mut rng, Family::Stragglers);
        scenario.weak_links = false;
        scenario.end_ms = scenario.submit_until_ms + 5000;
        let mut sim = Sim::with_scenario(rng, scenario);
        let err = sim
            .run()
            .expect_err("items of a straggler commit without weak links");
        assert!(err.contains("never committed"), "seed {seed}: {err}");
        run_seed(seed, Family::Stragglers).unwrap();
    }
}

#[test]
fn sim_equivocating_representative_is_caught() {
    // One member equivocates on every proposal; the network is lossy, slow at times and
    // partitioned for a while; nobody crashes (the liar is the one fault tolerated).
    let mut caught = 0;
    for seed in 1000..1020u64 {
        let mut rng = Rng::new(seed);
        let mut scenario = Scenario::random(&mut rng, Family::Plain);
        let liar = rng.below(4) as usize;
        scenario.byzantine = Some(liar);
        let mut sim = Sim::with_scenario(rng, scenario);
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}; scenario {:?}", sim.scenario);
        }
        assert!(
            !sim.evidence.is_empty(),
            "seed {seed}: equivocation by node {liar} went unnoticed"
        );
        caught += 1;
    }
    assert_eq!(caught, 20);
}

#[test]
#[ignore = "a tool, not a check: replays one failing seed (SIM_SEED=… SIM_FAMILY=… cargo test -p dag-core sim_debug_seed -- --ignored)"]
fn sim_debug_seed() {
    let seed: u64 = std::env::var("SIM_SEED").unwrap().parse().unwrap();
    let family = match std::env::var("SIM_FAMILY").as_deref() {
        Ok("crash_restart") => Family::CrashRestart,
        Ok("stragglers") => Family::Stragglers,
        Ok("crash_for_good") => Family::CrashForGood,
        _ => Family::Plain,
    };
    let mut sim = Sim::new(seed, family);
    let r = sim.run();
    eprintln!("{r:?}");
    for (i, n) in sim.nodes.iter().enumerate() {
        eprintln!(
            "node {i}: round {:?}, store top {:?}, checkpoints {}, last leader round {:?}, {} submitted, {} committed",
            n.driver.round(),
            n.driver.store().highest_round(),
            n.checkpoints.len(),
            n.driver.committer().last_committed_round(),
            n.submitted.len(),
            n.items.len(),
        );
        eprintln!("    {}", n.driver.debug_state());
    }
}

#[test]
fn sim_replays_exactly_from_its_seed() {
    let run = |seed| {
        let mut sim = Sim::new(seed, Family::Stragglers);
        sim.run().unwrap();
        sim.nodes
            .iter()
            .map(|n| (n.checkpoints.clone(), n.items.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}
