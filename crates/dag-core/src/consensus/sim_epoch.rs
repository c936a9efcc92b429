//! A deterministic simulation of **reconfiguration**: the committee changes twice, at epoch
//! boundaries decided by the committed sequence, while messages are lost, delayed, a
//! partition heals or a node crashes and restarts around a boundary.
//!
//! The design is Sui's/Narwhal's: an epoch is a fresh consensus instance
//! ([`Consensus::for_epoch`]) with its own committee; its rounds start at 0 again, every
//! batch carries its epoch (and only verifies against that epoch's committee), and its
//! checkpoints continue the previous epoch's chain ([`ChainStart::after`]), so the global
//! commit sequence has no gap. Five nodes, three committees:
//! - epoch 0: nodes 0–3, equal stake;
//! - epoch 1: one of them (the leaver) leaves, node 4 (the joiner) joins; stakes 1 or 2
//!   (re-weighting);
//! - epoch 2: another member leaves and the leaver of epoch 1 comes back (it missed a whole
//!   epoch and must catch up on it).
//!
//! **The boundary** is part of the committed sequence: epoch `e` ends with the first
//! checkpoint whose leader's timestamp (in the certified leader batch, so the same on every
//! node) is at or after the epoch's end time. Each node, on applying that checkpoint,
//! retires its instance of epoch `e` ([`Consensus::retire`]: no more proposals nor votes;
//! it still serves fetches) and ignores whatever else it commits; if it is a member of
//! `e + 1` it starts that instance and hands it every item it holds that is not committed
//! (a leaving member hands them to a member of the next committee, as a client resubmitting
//! would). The host routes messages by their epoch tag; a share of messages is deliberately
//! misrouted to the receiver's current instance, to show that messages of another epoch are
//! refused and raise no evidence.
//!
//! **Joining / catching up** (state sync, not consensus): a node that is not running its
//! current epoch's instance (the joiner, the returning leaver, a node behind a boundary
//! that others already crossed) asks others for the checkpoints from its position to the end
//! of that epoch; it applies them once members of that epoch holding f + 1 stake sent the
//! same ones (chain-linked to its own last checkpoint), then crosses the boundary itself.
//!
//! Checked per run: all nodes' checkpoint chains agree (same sequence, same epoch at each
//! position, same boundaries); no item is committed twice (across epochs too); every item
//! submitted anywhere commits on every member of the last committee; no checkpoint of an
//! epoch follows that epoch's boundary; no evidence is raised (everyone is honest); and every
//! member of the last committee commits at least 3 checkpoints after the last change.
//! `SIM_SEED=<n>` replays one seed; `SIM_SEEDS=<lo>..<hi>` runs another range.

#![allow(clippy::unwrap_used)]

use super::sim::Rng;
use super::*;
use crate::{Hash32, NodeId, TxId};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::result::Result;

const NODES: usize = 5;
const TICK_MS: u64 = 50;
/// How often a node not running its epoch asks for the epoch's end (ms).
const SYNC_POLL_MS: u64 = 200;

/// What travels between nodes.
#[derive(Debug, Clone)]
enum Wire {
    /// A consensus message tagged with its epoch.
    Consensus { epoch: u64, msg: Message },
    /// "Send me the checkpoints from `have` to the end of `epoch`."
    SyncRequest { epoch: u64, have: u64 },
    /// The checkpoints (with their items) from the requested position to the last one of
    /// `epoch`.
    SyncResponse { epoch: u64, entries: Vec<Entry> },
}

/// One applied checkpoint: the host's durable log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: u64,
    checkpoint: Checkpoint,
    items: Vec<BatchItem>,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        wire: Wire,
    },
    Tick(usize),
    Restart(usize),
    /// Items a leaving member hands to a member of the next committee.
    Resubmit {
        to: usize,
        items: Vec<BatchItem>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Loss and delays only.
    Lossy,
    /// A partition around the first or second boundary, which heals.
    Partition,
    /// One node crashes around a boundary and restarts from its records.
    CrashRestart,
}

#[derive(Debug, Clone)]
struct Scenario {
    fault: Fault,
    loss_per_mille: u64,
    delay_ms: (u64, u64),
    slow_per_mille: u64,
    leader_timeout_ms: u64,
    /// Members and stakes of epochs 0, 1, 2.
    committees: Vec<Vec<(usize, Stake)>>,
    /// Epoch `e` ends with the first checkpoint whose leader timestamp is ≥ `epoch_end[e]`.
    epoch_end: Vec<u64>,
    partition: (u64, u64),
    groups: [u8; NODES],
    crash: Option<(usize, u64)>,
    restart_ms: u64,
    leaders: LeaderSchedule,
    /// Share of messages handed to the receiver's current instance whatever their tag.
    misroute_per_mille: u64,
    submit_until_ms: u64,
    end_ms: u64,
}

impl Scenario {
    fn random(rng: &mut Rng) -> Self {
        let fault = match rng.below(3) {
            0 => Fault::Lossy,
            1 => Fault::Partition,
            _ => Fault::CrashRestart,
        };
        let leaver = rng.below(4) as usize;
        let e0: Vec<(usize, Stake)> = (0..4).map(|i| (i, 1)).collect();
        let e1: Vec<(usize, Stake)> = (0..NODES)
            .filter(|i| *i != leaver)
            .map(|i| (i, rng.range(1, 2)))
            .collect();
        let leaver2 = e1[rng.below(e1.len() as u64) as usize].0;
        let mut e2: Vec<(usize, Stake)> = (0..NODES)
            .filter(|i| *i != leaver2 && (*i == leaver || e1.iter().any(|m| m.0 == *i)))
            .map(|i| (i, 1))
            .collect();
        e2.sort();
        let end0 = rng.range(1000, 2500);
        let end1 = end0 + rng.range(1500, 3000);
        let around = if rng.per_mille(500) { end0 } else { end1 };
        let mut sc = Scenario {
            fault,
            loss_per_mille: rng.range(0, 60),
            delay_ms: (rng.range(1, 10), rng.range(20, 80)),
            slow_per_mille: rng.range(0, 100),
            leader_timeout_ms: rng.range(0, 400),
            committees: vec![e0, e1, e2],
            epoch_end: vec![end0, end1],
            partition: (0, 0),
            groups: [0; NODES],
            crash: None,
            restart_ms: 0,
            leaders: if rng.per_mille(500) {
                LeaderSchedule::RoundRobin
            } else {
                LeaderSchedule::StakeWeighted {
                    seed: [rng.below(256) as u8; 32],
                }
            },
            misroute_per_mille: 20,
            submit_until_ms: 0,
            end_ms: 0,
        };
        match fault {
            Fault::Lossy => {}
            Fault::Partition => {
                let start = around.saturating_sub(rng.range(0, 800));
                sc.partition = (start, start + rng.range(300, 1500));
                for g in sc.groups.iter_mut() {
                    *g = rng.below(2) as u8;
                }
            }
            Fault::CrashRestart => {
                let at = around.saturating_sub(400) + rng.range(0, 800);
                sc.crash = Some((rng.below(NODES as u64) as usize, at));
                sc.restart_ms = at + rng.range(300, 2000);
            }
        }
        let settle = sc
            .partition
            .1
            .max(sc.crash.map_or(0, |_| sc.restart_ms))
            .max(end1);
        sc.submit_until_ms = settle + 1500;
        sc.end_ms = sc.submit_until_ms + 20_000;
        sc
    }
    fn crashed(&self, node: usize, now: u64) -> bool {
        self.crash
            .is_some_and(|(n, t)| n == node && now >= t && now < self.restart_ms)
    }
    fn cut(&self, a: usize, b: usize, now: u64) -> bool {
        now >= self.partition.0 && now < self.partition.1 && self.groups[a] != self.groups[b]
    }
    fn last_epoch(&self) -> u64 {
        self.committees.len() as u64 - 1
    }
}

/// Sync answers for one epoch: digest of the entries → (senders, entries).
type SyncVotes = BTreeMap<Vec<u8>, (BTreeSet<usize>, Vec<Entry>)>;

/// One node: its durable host state (log, epoch, records, submitted items) and its
/// in-memory consensus instances.
struct Node {
    /// The epoch whose checkpoints it applies now.
    epoch: u64,
    /// Running and retired instances, by epoch (lost in a crash).
    instances: BTreeMap<u64, Consensus<TestSigner, TestVerifier>>,
    /// Epochs it started an instance for, with the chain start (durable).
    started: BTreeMap<u64, ChainStart>,
    /// Persisted records per epoch (durable).
    records: BTreeMap<u64, Vec<Record>>,
    log: Vec<Entry>,
    committed: HashSet<BatchItem>,
    /// Every item handed to this node (by a client or a leaving member), durable.
    submitted: Vec<BatchItem>,
    /// Items handed over while no instance ran: go to the next instance it starts.
    backlog: Vec<BatchItem>,
    counter: u64,
    last_poll_ms: u64,
    /// Saw a message of a later epoch than its own: it is behind, so it polls.
    behind: bool,
    /// Sync responses per epoch: (boundary hash, entries) → senders.
    sync_votes: BTreeMap<u64, SyncVotes>,
    /// (epoch, when it crossed into it, when it first committed in it).
    changes: Vec<(u64, u64, Option<u64>)>,
    /// Commits of retired instances, ignored.
    ignored_old_commits: usize,
}

struct Sim {
    rng: Rng,
    sc: Scenario,
    committees: Vec<Committee>,
    ids: Vec<NodeId>,
    nodes: Vec<Node>,
    config: ConsensusConfig,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    evidence: Vec<(usize, Equivocation)>,
    misrouted_refused: usize,
    syncs: usize,
    /// Items handed over by a leaving member, not yet received.
    in_transit: Vec<BatchItem>,
    now: u64,
}

fn signer(i: usize) -> TestSigner {
    TestSigner::new(i as u64)
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let sc = Scenario::random(&mut rng);
        let committees = sc
            .committees
            .iter()
            .enumerate()
            .map(|(e, members)| {
                Committee::new(
                    members
                        .iter()
                        .map(|(i, s)| (crate::Signer::public_key(&signer(*i)).to_vec(), *s))
                        .collect(),
                )
                .unwrap()
                .with_leader_schedule(sc.leaders)
                .with_epoch(e as u64)
            })
            .collect();
        let config = ConsensusConfig {
            leader_timeout_ms: sc.leader_timeout_ms,
            resend_ms: 300,
            ..ConsensusConfig::default()
        };
        let nodes = (0..NODES)
            .map(|_| Node {
                epoch: 0,
                instances: BTreeMap::new(),
                started: BTreeMap::new(),
                records: BTreeMap::new(),
                log: Vec::new(),
                committed: HashSet::new(),
                submitted: Vec::new(),
                backlog: Vec::new(),
                counter: 0,
                last_poll_ms: 0,
                behind: false,
                sync_votes: BTreeMap::new(),
                changes: vec![(0, 0, None)],
                ignored_old_commits: 0,
            })
            .collect();
        Sim {
            rng,
            sc,
            committees,
            ids: (0..NODES).map(|i| signer(i).node_id()).collect(),
            nodes,
            config,
            queue: BTreeMap::new(),
            seq: 0,
            evidence: Vec::new(),
            misrouted_refused: 0,
            syncs: 0,
            in_transit: Vec::new(),
            now: 0,
        }
    }

    fn member(&self, epoch: u64, node: usize) -> bool {
        self.sc.committees[epoch as usize]
            .iter()
            .any(|(i, _)| *i == node)
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn send(&mut self, from: usize, to: usize, wire: Wire) {
        if self.rng.per_mille(self.sc.loss_per_mille) {
            return;
        }
        let delay = if self.rng.per_mille(self.sc.slow_per_mille) {
            self.rng.range(100, 900)
        } else {
            self.rng.range(self.sc.delay_ms.0, self.sc.delay_ms.1)
        };
        self.schedule(self.now + delay, Event::Deliver { to, from, wire });
    }

    /// Starts (or, after a crash, recovers) the instance of `epoch` on `node`.
    fn start_instance(&mut self, node: usize, epoch: u64, start: ChainStart) -> Result<(), String> {
        let committee = self.committees[epoch as usize].clone();
        let n = &mut self.nodes[node];
        n.started.insert(epoch, start);
        let mut driver = Consensus::for_epoch(
            committee,
            signer(node),
            TestVerifier,
            self.config.clone(),
            start,
        )
        .map_err(|e| format!("node {node}: epoch {epoch} instance: {e}"))?;
        let outs = driver.start(self.now);
        n.instances.insert(epoch, driver);
        self.outputs(node, epoch, outs)?;
        // Every item it holds that is not committed goes to the new instance.
        let n = &mut self.nodes[node];
        let mut seen = HashSet::new();
        let pending: Vec<BatchItem> = n
            .submitted
            .iter()
            .chain(n.backlog.iter())
            .filter(|x| !n.committed.contains(x) && seen.insert(**x))
            .copied()
            .collect();
        n.backlog.clear();
        if let Some(d) = n.instances.get_mut(&epoch) {
            d.add_payload(pending);
        }
        n.changes.push((epoch, self.now, None));
        Ok(())
    }

    /// `node` applied the last checkpoint of its epoch: retire, move on, start or hand over.
    fn cross_boundary(&mut self, node: usize, last: &Checkpoint) -> Result<(), String> {
        let old = self.nodes[node].epoch;
        if let Some(d) = self.nodes[node].instances.get_mut(&old) {
            d.retire();
        }
        let next = old + 1;
        self.nodes[node].epoch = next;
        self.nodes[node].behind = false;
        if self.member(next, node) {
            self.start_instance(node, next, ChainStart::after(last))?;
        } else {
            // Not in the next committee: its uncommitted items go to a member of it, and
            // are no longer its own (were it to come back later, it must not propose them
            // a second time).
            self.nodes[node].changes.push((next, self.now, None));
            self.hand_over(node);
        }
        Ok(())
    }

    /// Hands every item `node` holds and has not seen committed to a member of its
    /// current epoch's committee (it is not one).
    fn hand_over(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let (mut items, kept): (Vec<BatchItem>, Vec<BatchItem>) =
            n.submitted.iter().partition(|x| !n.committed.contains(x));
        n.submitted = kept;
        items.append(&mut n.backlog);
        let mut seen = HashSet::new();
        items.retain(|x| !n.committed.contains(x) && seen.insert(*x));
        if items.is_empty() {
            return;
        }
        let members = &self.sc.committees[n.epoch as usize];
        let to = members[node % members.len()].0;
        let at = self.now + 100;
        self.in_transit.extend(items.iter().copied());
        self.schedule(at, Event::Resubmit { to, items });
    }

    fn is_boundary(&self, epoch: u64, leader_ts: u64) -> bool {
        epoch < self.sc.last_epoch() && leader_ts >= self.sc.epoch_end[epoch as usize]
    }

    /// Appends one checkpoint to `node`'s log (checks chain, duplicates) and crosses the
    /// boundary if it is one.
    fn apply(&mut self, node: usize, entry: Entry, leader_ts: u64) -> Result<(), String> {
        let boundary = self.is_boundary(entry.epoch, leader_ts);
        let n = &mut self.nodes[node];
        let seq = entry.checkpoint.sequence as usize;
        if seq < n.log.len() {
            if n.log[seq] != entry {
                return Err(format!(
                    "node {node}: checkpoint {seq} differs from the one applied"
                ));
            }
            return Ok(());
        }
        if seq != n.log.len() {
            return Err(format!(
                "node {node}: checkpoint sequence gap ({seq} after {})",
                n.log.len()
            ));
        }
        let prev = n
            .log
            .last()
            .map(|e| e.checkpoint.hash())
            .unwrap_or_default();
        if entry.checkpoint.prev_hash != prev {
            return Err(format!("node {node}: checkpoint chain broken at {seq}"));
        }
        if entry.epoch != n.epoch {
            return Err(format!(
                "node {node}: checkpoint {seq} of epoch {} applied in epoch {}",
                entry.epoch, n.epoch
            ));
        }
        for item in &entry.items {
            if !n.committed.insert(*item) {
                return Err(format!(
                    "node {node}: item {item:?} committed twice (checkpoint {seq}, epoch {})",
                    entry.epoch
                ));
            }
        }
        if let Some(c) = n.changes.last_mut()
            && c.0 == entry.epoch
            && c.2.is_none()
        {
            c.2 = Some(self.now);
        }
        let checkpoint = entry.checkpoint.clone();
        n.log.push(entry);
        if boundary {
            self.cross_boundary(node, &checkpoint)?;
        }
        Ok(())
    }

    fn outputs(&mut self, node: usize, epoch: u64, outs: Vec<Output>) -> Result<(), String> {
        let members: Vec<usize> = self.sc.committees[epoch as usize]
            .iter()
            .map(|m| m.0)
            .collect();
        for o in outs {
            match o {
                Output::Broadcast(msg) => {
                    for &to in &members {
                        if to != node {
                            let wire = Wire::Consensus {
                                epoch,
                                msg: msg.clone(),
                            };
                            self.send(node, to, wire);
                        }
                    }
                }
                Output::Send { to, message } => {
                    let to = self
                        .ids
                        .iter()
                        .position(|i| *i == to)
                        .ok_or("send to a stranger")?;
                    let wire = Wire::Consensus {
                        epoch,
                        msg: message,
                    };
                    self.send(node, to, wire);
                }
                Output::Committed(sub) => {
                    if epoch != self.nodes[node].epoch {
                        // A retired instance keeps committing the old DAG: ignored.
                        self.nodes[node].ignored_old_commits += 1;
                        continue;
                    }
                    let leader_ts = sub
                        .batches
                        .last()
                        .map_or(0, |c| c.batch().header.timestamp_ms);
                    let items = sub.items().map(|(_, i)| *i).collect();
                    let entry = Entry {
                        epoch,
                        checkpoint: sub.checkpoint,
                        items,
                    };
                    self.apply(node, entry, leader_ts)?;
                }
                Output::Evidence(e) => self.evidence.push((node, e)),
                Output::Persist(r) => self.nodes[node].records.entry(epoch).or_default().push(r),
            }
        }
        Ok(())
    }

    /// Whether `node` should ask for the end of its epoch.
    fn needs_sync(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.behind || n.instances.get(&n.epoch).is_none_or(|d| d.is_retired())
    }

    fn on_sync_request(&mut self, node: usize, from: usize, epoch: u64, have: u64) {
        let n = &self.nodes[node];
        // Answer only for an epoch this node has seen end.
        if n.epoch <= epoch {
            return;
        }
        let entries: Vec<Entry> = n
            .log
            .iter()
            .skip(have as usize)
            .take_while(|e| e.epoch <= epoch)
            .cloned()
            .collect();
        if entries.last().is_none_or(|e| e.epoch != epoch) {
            return;
        }
        self.send(node, from, Wire::SyncResponse { epoch, entries });
    }

    fn on_sync_response(
        &mut self,
        node: usize,
        from: usize,
        epoch: u64,
        entries: Vec<Entry>,
    ) -> Result<(), String> {
        let n = &self.nodes[node];
        if epoch != n.epoch || entries.is_empty() {
            return Ok(());
        }
        // Only members of that epoch vouch for its end.
        let committee = &self.committees[epoch as usize];
        if committee.authority(&self.ids[from]).is_none() {
            return Ok(());
        }
        let mut key = Vec::new();
        for e in &entries {
            key.extend_from_slice(&e.checkpoint.hash().0);
            for i in &e.items {
                key.extend_from_slice(&format!("{i:?}").into_bytes());
            }
        }
        let key = Hash32::digest(&key).0.to_vec();
        let n = &mut self.nodes[node];
        let slot = n
            .sync_votes
            .entry(epoch)
            .or_default()
            .entry(key)
            .or_insert_with(|| (BTreeSet::new(), entries));
        slot.0.insert(from);
        let stake: Stake = slot
            .0
            .iter()
            .map(|i| committee.stake_of(&self.ids[*i]))
            .sum();
        if !committee.is_validity(stake) {
            return Ok(());
        }
        let entries = slot.1.clone();
        n.sync_votes.remove(&epoch);
        self.syncs += 1;
        // The last entry ends the epoch; all are of this epoch (the node is in it).
        let last = entries.len() - 1;
        for (k, e) in entries.into_iter().enumerate() {
            if self.nodes[node].epoch != epoch {
                break; // crossed (its own instance got there first)
            }
            if e.epoch != epoch {
                return Err(format!(
                    "node {node}: sync brought a checkpoint of another epoch"
                ));
            }
            // The boundary is the last one by construction; check the rule agrees.
            let ts = if k == last {
                u64::MAX
            } else {
                0 // not the boundary: a timestamp that never ends the epoch
            };
            self.apply(node, e, ts)?;
        }
        Ok(())
    }

    fn deliver(&mut self, to: usize, from: usize, wire: Wire) -> Result<(), String> {
        match wire {
            Wire::SyncRequest { epoch, have } => {
                self.on_sync_request(to, from, epoch, have);
                Ok(())
            }
            Wire::SyncResponse { epoch, entries } => {
                self.on_sync_response(to, from, epoch, entries)
            }
            Wire::Consensus { epoch, msg } => {
                let current = self.nodes[to].epoch;
                if epoch > current {
                    self.nodes[to].behind = true;
                }
                // Misrouted on purpose: the current instance must refuse another epoch's
                // batches and certificates.
                let target = if epoch != current && self.rng.per_mille(self.sc.misroute_per_mille) {
                    current
                } else {
                    epoch
                };
                let from_id = self.ids[from];
                let now = self.now;
                let Some(d) = self.nodes[to].instances.get_mut(&target) else {
                    return Ok(()); // not a member of that epoch (or not started): ignored
                };
                match d.handle(now, from_id, msg) {
                    Ok(outs) => self.outputs(to, target, outs),
                    Err(_) => {
                        if target != epoch {
                            self.misrouted_refused += 1;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        // Memory is gone; log, epoch, records and submitted items survive.
        let n = &mut self.nodes[node];
        n.instances.clear();
        n.backlog.clear();
        n.sync_votes.clear();
        let current = n.epoch;
        let started: Vec<(u64, ChainStart)> = n.started.iter().map(|(e, s)| (*e, *s)).collect();
        for (epoch, start) in started {
            let records = self.nodes[node]
                .records
                .get(&epoch)
                .cloned()
                .unwrap_or_default();
            let (mut driver, outs) = Consensus::recover_epoch(
                self.committees[epoch as usize].clone(),
                signer(node),
                TestVerifier,
                self.config.clone(),
                start,
                records,
            )
            .map_err(|e| format!("node {node} failed to recover epoch {epoch}: {e}"))?;
            if epoch < current {
                // Ended before the crash: serve fetches only.
                driver.retire();
                self.nodes[node].instances.insert(epoch, driver);
                continue;
            }
            self.nodes[node].instances.insert(epoch, driver);
            self.outputs(node, epoch, outs)?;
            if self.nodes[node].epoch != epoch {
                continue; // the replay reached the boundary (crossed inside `outputs`)
            }
            let n = &mut self.nodes[node];
            if let Some(d) = n.instances.get_mut(&epoch) {
                let carried = d.in_flight_items();
                let lost: Vec<BatchItem> = n
                    .submitted
                    .iter()
                    .filter(|x| !n.committed.contains(x) && !carried.contains(x))
                    .copied()
                    .collect();
                d.add_payload(lost);
            }
        }
        self.schedule(self.now + TICK_MS, Event::Tick(node));
        Ok(())
    }

    fn tick(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        let epoch = self.nodes[i].epoch;
        let running = self.nodes[i]
            .instances
            .get(&epoch)
            .is_some_and(|d| !d.is_retired());
        if running && now < self.sc.submit_until_ms && self.rng.per_mille(250) {
            let n = &mut self.nodes[i];
            n.counter += 1;
            let mut b = [0u8; 32];
            b[0] = i as u8;
            b[8..16].copy_from_slice(&n.counter.to_le_bytes());
            let item = BatchItem::Tx(TxId::from_bytes(b));
            n.submitted.push(item);
            if let Some(d) = n.instances.get_mut(&epoch) {
                d.add_payload([item]);
            }
        }
        let epochs: Vec<u64> = self.nodes[i].instances.keys().copied().collect();
        for e in epochs {
            if let Some(d) = self.nodes[i].instances.get_mut(&e) {
                let outs = d.tick(now);
                self.outputs(i, e, outs)?;
            }
        }
        if self.needs_sync(i) && now >= self.nodes[i].last_poll_ms + SYNC_POLL_MS {
            self.nodes[i].last_poll_ms = now;
            let epoch = self.nodes[i].epoch;
            let have = self.nodes[i].log.len() as u64;
            let members: Vec<usize> = self.sc.committees[epoch as usize]
                .iter()
                .map(|m| m.0)
                .filter(|m| *m != i)
                .collect();
            for to in members {
                self.send(i, to, Wire::SyncRequest { epoch, have });
            }
        }
        self.schedule(now + TICK_MS, Event::Tick(i));
        Ok(())
    }

    fn final_members(&self) -> Vec<usize> {
        self.sc.committees[self.sc.last_epoch() as usize]
            .iter()
            .map(|m| m.0)
            .collect()
    }

    fn all_submitted(&self) -> Vec<BatchItem> {
        let mut all: Vec<BatchItem> = self
            .nodes
            .iter()
            .flat_map(|n| n.submitted.clone())
            .chain(self.in_transit.iter().copied())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn done(&self) -> bool {
        let last = self.sc.last_epoch();
        let all = self.all_submitted();
        self.final_members().iter().all(|i| {
            let n = &self.nodes[*i];
            n.epoch == last
                && n.log.iter().filter(|e| e.epoch == last).count() >= 3
                && all.iter().all(|x| n.committed.contains(x))
        })
    }

    fn run(&mut self) -> Result<(), String> {
        for i in 0..NODES {
            if self.member(0, i) {
                self.start_instance(i, 0, ChainStart::default())?;
            }
            self.schedule(TICK_MS + i as u64 * 7, Event::Tick(i));
        }
        if let Some((node, _)) = self.sc.crash {
            let at = self.sc.restart_ms;
            self.schedule(at, Event::Restart(node));
        }
        let mut next_check = self.sc.submit_until_ms;
        while let Some(((now, _), event)) = self.queue.pop_first() {
            self.now = now;
            if now > self.sc.end_ms {
                break;
            }
            if now >= next_check {
                next_check = now + 250;
                if self.done() {
                    break;
                }
            }
            match event {
                Event::Restart(i) => self.restart(i)?,
                Event::Tick(i) => {
                    if !self.sc.crashed(i, now) {
                        self.tick(i)?;
                    }
                }
                Event::Resubmit { to, items } => {
                    // The client side is reliable (it retries); a crashed node gets them
                    // when it is back.
                    if self.sc.crashed(to, now) {
                        self.schedule(self.sc.restart_ms + 1, Event::Resubmit { to, items });
                        continue;
                    }
                    self.in_transit.retain(|x| !items.contains(x));
                    let n = &mut self.nodes[to];
                    let epoch = n.epoch;
                    let mut seen = HashSet::new();
                    let fresh: Vec<BatchItem> = items
                        .into_iter()
                        .filter(|x| {
                            !n.committed.contains(x) && !n.submitted.contains(x) && seen.insert(*x)
                        })
                        .collect();
                    n.submitted.extend(fresh.iter().copied());
                    match n.instances.get_mut(&epoch) {
                        Some(d) if !d.is_retired() => d.add_payload(fresh),
                        _ => n.backlog.extend(fresh),
                    }
                    if !self.member(epoch, to) {
                        // It moved on to an epoch it is not a member of: pass them on.
                        self.hand_over(to);
                    }
                }
                Event::Deliver { to, from, wire } => {
                    if self.sc.crashed(to, now)
                        || self.sc.crashed(from, now)
                        || self.sc.cut(from, to, now)
                    {
                        continue;
                    }
                    self.deliver(to, from, wire)?;
                }
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        // Agreement: every pair of logs agrees on their common prefix, epochs included.
        for a in 0..NODES {
            for b in a + 1..NODES {
                let (x, y) = (&self.nodes[a].log, &self.nodes[b].log);
                let m = x.len().min(y.len());
                if let Some(k) = (0..m).find(|k| x[*k] != y[*k]) {
                    return Err(format!("nodes {a} and {b} diverge at checkpoint {k}"));
                }
            }
        }
        // Boundaries: per node, epochs never go back, each change happens right after the
        // checkpoint the rule names, and no checkpoint of an epoch follows its boundary.
        for (i, n) in self.nodes.iter().enumerate() {
            for w in n.log.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if b.epoch < a.epoch || b.epoch > a.epoch + 1 {
                    return Err(format!("node {i}: epoch {} after {}", b.epoch, a.epoch));
                }
                if b.epoch == a.epoch + 1 && b.checkpoint.prev_hash != a.checkpoint.hash() {
                    return Err(format!("node {i}: epoch {} does not chain", b.epoch));
                }
            }
        }
        if let Some((by, e)) = self.evidence.first() {
            return Err(format!(
                "node {by} raised evidence against honest {} (epoch {}, round {})",
                e.author(),
                e.epoch(),
                e.round()
            ));
        }
        let last = self.sc.last_epoch();
        let all = self.all_submitted();
        for i in self.final_members() {
            let n = &self.nodes[i];
            if n.epoch != last {
                return Err(format!(
                    "node {i} (member of the last committee) is still in epoch {} at {} ms",
                    n.epoch, self.now
                ));
            }
            let missing = all.iter().filter(|x| !n.committed.contains(x)).count();
            if missing > 0 {
                return Err(format!(
                    "{missing} of {} submitted items never committed on node {i} (run ended at {} ms)",
                    all.len(),
                    self.now
                ));
            }
            let after = n.log.iter().filter(|e| e.epoch == last).count();
            if after < 3 {
                return Err(format!(
                    "node {i} made only {after} commits in the last epoch"
                ));
            }
        }
        // Every epoch's boundary is the same checkpoint on every node that passed it.
        for e in 0..last {
            let ends: BTreeSet<u64> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    n.log
                        .iter()
                        .rfind(|x| x.epoch == e)
                        .filter(|_| n.epoch > e)
                        .map(|x| x.checkpoint.sequence)
                })
                .collect();
            if ends.len() > 1 {
                return Err(format!(
                    "epoch {e} ended at different checkpoints: {ends:?}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Stats {
    seeds: usize,
    /// Seeds per fault: lossy only, partition, crash-restart.
    faults: [usize; 3],
    items: usize,
    syncs: usize,
    ignored_old: usize,
    misrouted_refused: usize,
    /// Epoch-change latency per node and change: crossing → first own commit in the new
    /// epoch (sim ms).
    latencies: Vec<u64>,
    /// Global latency per change: last checkpoint of the old epoch applied first anywhere
    /// → first checkpoint of the new one applied anywhere (sim ms).
    handovers: Vec<u64>,
}

fn run_seed(seed: u64, stats: &mut Stats) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    sim.run()
        .map_err(|e| format!("SIM_SEED={seed} (sim_reconfig): {e}; scenario {:?}", sim.sc))?;
    stats.seeds += 1;
    stats.faults[sim.sc.fault as usize] += 1;
    stats.items += sim.all_submitted().len();
    stats.syncs += sim.syncs;
    stats.misrouted_refused += sim.misrouted_refused;
    stats.ignored_old += sim
        .nodes
        .iter()
        .map(|n| n.ignored_old_commits)
        .sum::<usize>();
    for (i, n) in sim.nodes.iter().enumerate() {
        for (e, at, first) in &n.changes {
            if *e > 0
                && let Some(f) = first
                && sim.member(*e, i)
            {
                stats.latencies.push(f - at);
            }
        }
    }
    for e in 1..=sim.sc.last_epoch() {
        let crossed = sim
            .nodes
            .iter()
            .flat_map(|n| n.changes.iter())
            .filter(|c| c.0 == e)
            .map(|c| c.1)
            .min();
        let first = sim
            .nodes
            .iter()
            .flat_map(|n| n.changes.iter())
            .filter(|c| c.0 == e)
            .filter_map(|c| c.2)
            .min();
        if let (Some(a), Some(b)) = (crossed, first) {
            stats.handovers.push(b.saturating_sub(a));
        }
    }
    Ok(())
}

fn run_seeds(range: std::ops::Range<u64>) {
    let seeds: Vec<u64> = match (std::env::var("SIM_SEED"), std::env::var("SIM_SEEDS")) {
        (Ok(s), _) => vec![s.parse().expect("SIM_SEED is a number")],
        (_, Ok(r)) => {
            let (lo, hi) = r.split_once("..").expect("SIM_SEEDS is <lo>..<hi>");
            (lo.parse().expect("a number")..hi.parse().expect("a number")).collect()
        }
        _ => range.collect(),
    };
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for s in &seeds {
        if let Err(e) = run_seed(*s, &mut stats) {
            failures.push(e);
        }
    }
    let pct = |v: &mut Vec<u64>, q: f64| {
        v.sort();
        v.get(((v.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "sim_reconfig: {} of {} seeds passed from {} (lossy {}, partition {}, crash-restart {}): \
         two committee changes each, {} items \
         committed exactly once, {} state syncs, {} old-epoch commits ignored after a boundary, \
         {} misrouted messages of another epoch refused; epoch-change latency (sim ms, \
         boundary applied → first commit of the new committee): per member p50 {} p99 {} max {}, \
         network-wide p50 {} max {}",
        stats.seeds,
        seeds.len(),
        seeds.first().copied().unwrap_or(0),
        stats.faults[0],
        stats.faults[1],
        stats.faults[2],
        stats.items,
        stats.syncs,
        stats.ignored_old,
        stats.misrouted_refused,
        pct(&mut stats.latencies, 0.5),
        pct(&mut stats.latencies, 0.99),
        pct(&mut stats.latencies, 1.0),
        pct(&mut stats.handovers, 0.5),
        pct(&mut stats.handovers, 1.0),
    );
    assert!(
        failures.is_empty(),
        "{} failing seeds (replay one: SIM_SEED=<seed> cargo test -p dag-core sim_reconfig):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// 200 seeds, in two tests so the harness runs them in parallel.
#[test]
fn sim_reconfig_seeds_0_to_99() {
    run_seeds(0..100);
}
#[test]
fn sim_reconfig_seeds_100_to_199() {
    run_seeds(100..200);
}

#[test]
fn sim_reconfig_replays_exactly_from_its_seed() {
    let run = |seed| {
        let mut sim = Sim::new(seed);
        sim.run().unwrap();
        sim.nodes.iter().map(|n| n.log.clone()).collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn sim_reconfig_batches_of_two_epochs_are_no_double_sign() {
    // Why batches carry their epoch: the same author signs round 0 in epoch 0 and again in
    // epoch 1 (rounds start at 0 in each epoch). With the epoch in the header and in the
    // signed round, the two are no equivocation, and a batch of one epoch does not verify
    // against the committee of the other.
    let s = signer(1);
    let header = |epoch, ts| BatchHeader {
        epoch,
        round: 0,
        author: s.node_id(),
        timestamp_ms: ts,
        parents: vec![],
        weak_links: vec![],
        items: vec![],
    };
    let a = SignedBatch::sign(header(0, 10), &s);
    let b = SignedBatch::sign(header(1, 20), &s);
    assert!(matches!(
        Equivocation::new(a.clone(), b.clone()),
        Err(ConsensusError::NotEquivocation("different epochs"))
    ));
    assert_ne!(a.header.signed_round(), b.header.signed_round());
    let keys = (0..4)
        .map(|i| crate::Signer::public_key(&signer(i)).to_vec())
        .collect();
    let c0 = Committee::equal(keys).unwrap();
    let c1 = c0.clone().with_epoch(1);
    a.verify(&c0, &TestVerifier).unwrap();
    b.verify(&c1, &TestVerifier).unwrap();
    assert!(matches!(
        a.verify(&c1, &TestVerifier),
        Err(ConsensusError::WrongEpoch {
            epoch: 0,
            expected: 1
        })
    ));
    // Same header bytes but for the epoch: different digests, different signed messages.
    let b0 = SignedBatch::sign(header(0, 20), &s);
    assert_ne!(b0.digest(), b.digest());
    assert!(b0.verify(&c1, &TestVerifier).is_err());
    // A real double sign inside epoch 1 is still evidence.
    let b2 = SignedBatch::sign(header(1, 21), &s);
    let e = Equivocation::new(b.clone(), b2).unwrap();
    e.verify(&c1, &TestVerifier).unwrap();
    assert_eq!(e.double_sign().0, signed_round(1, 0));
}

#[test]
fn retired_driver_neither_proposes_nor_votes_but_serves_fetches() {
    let keys: Vec<Vec<u8>> = (0..4)
        .map(|i| crate::Signer::public_key(&signer(i)).to_vec())
        .collect();
    let committee = Committee::equal(keys).unwrap().with_epoch(2);
    let start = ChainStart {
        next_sequence: 17,
        prev_hash: Hash32([7; 32]),
    };
    let cfg = ConsensusConfig::default();
    let mut d: Vec<_> = (0..4)
        .map(|i| {
            Consensus::for_epoch(
                committee.clone(),
                signer(i),
                TestVerifier,
                cfg.clone(),
                start,
            )
            .unwrap()
        })
        .collect();
    // Run 4 members in lockstep until a checkpoint commits: it continues the chain.
    let mut inbox: Vec<(usize, usize, Message)> = Vec::new();
    let ids: Vec<NodeId> = (0..4).map(|i| signer(i).node_id()).collect();
    let route = |i: usize,
                 outs: Vec<Output>,
                 inbox: &mut Vec<(usize, usize, Message)>,
                 commits: &mut Vec<Checkpoint>| {
        for o in outs {
            match o {
                Output::Broadcast(m) => (0..4)
                    .filter(|t| *t != i)
                    .for_each(|t| inbox.push((i, t, m.clone()))),
                Output::Send { to, message } => {
                    inbox.push((i, ids.iter().position(|x| *x == to).unwrap(), message))
                }
                Output::Committed(s) => commits.push(s.checkpoint),
                _ => {}
            }
        }
    };
    let mut commits = Vec::new();
    for (i, di) in d.iter_mut().enumerate() {
        let outs = di.start(0);
        route(i, outs, &mut inbox, &mut commits);
    }
    let mut now = 0;
    while commits.is_empty() && now < 10_000 {
        now += 10;
        for (from, to, m) in std::mem::take(&mut inbox) {
            if let Ok(outs) = d[to].handle(now, ids[from], m) {
                route(to, outs, &mut inbox, &mut commits);
            }
        }
    }
    let first = commits.first().expect("the epoch's instance commits");
    assert_eq!(first.sequence, 17);
    assert_eq!(first.prev_hash, Hash32([7; 32]));
    let store = d[0].store().len();
    d[0].retire();
    assert!(d[0].is_retired());
    // Ticks and others' proposals: no proposal, no vote from the retired member.
    let outs = d[0].tick(now + 100_000);
    assert!(
        outs.iter()
            .all(|o| !matches!(o, Output::Broadcast(Message::Propose(_))))
    );
    let top = d[1].round().unwrap();
    let batch = SignedBatch::sign(
        BatchHeader {
            epoch: 2,
            round: top + 50,
            author: ids[1],
            timestamp_ms: now,
            parents: vec![],
            weak_links: vec![],
            items: vec![],
        },
        &signer(1),
    );
    let outs = d[0]
        .handle(now, ids[1], Message::Propose(batch))
        .unwrap_or_default();
    assert!(outs.iter().all(|o| !matches!(
        o,
        Output::Send {
            message: Message::Vote(_),
            ..
        }
    )));
    // It still answers fetches from the DAG it holds.
    let any = d[0].store().round(0).next().unwrap().digest();
    let outs = d[0]
        .handle(
            now,
            ids[2],
            Message::Fetch(FetchRequest {
                digests: vec![any],
                have_round: 0,
            }),
        )
        .unwrap();
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Send {
            message: Message::FetchResponse(_),
            ..
        }
    )));
    assert!(store > 0);
}
