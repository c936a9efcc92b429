//! Churn at scale (issue 14): a deterministic simulation of the storage layer with a few
//! hundred light nodes joining, leaving, crashing for good and flapping (down and back with
//! their disk) while repairs are under way, 1,000 seeds split over several tests.
//!
//! What is real: every light node's [`ShardStore`] (redb in memory), the erasure codec,
//! [`StripeLayout`] checks, ML-DSA-87 receipts issued by the holder's key and verified by
//! the city ([`verify_receipt_from`]), [`plan_rereplication`]. What is modelled: time (ticks
//! of 500 ms), presence (a node heartbeats every 3 s; the city's live view drops a node 6 s
//! after its last heartbeat, at once on a logout: node-list's and presence's defaults) and
//! the city's sweep: each tick it plans every stripe with a holder out of the live view,
//! fetches k good shards from live holders (the planner's sources, then its spares; a source
//! that crashed unseen fails the fetch), rebuilds the lost ones and puts them one tick later
//! (churn happens in between), trying the next live node when the target is down; every
//! 5 s it garbage-collects shards the manifests no longer name on their node.
//!
//! The event generator keeps the promise's premise: a crash or a leave is skipped if it
//! would leave some stripe with more than m of its n slots unavailable at once.
//! Checked, per seed: every Held stripe keeps ≥ k available good shards at every tick (and
//! decodes from the real stores whenever it is down to exactly k); every lost slot is back
//! on a live node within one heartbeat + TTL (9 s); at the end every stripe has n distinct
//! live holders with verified receipts, every tx reads back, and no node keeps a shard no
//! manifest names (no orphan after GC). A failure prints its seed; `SIM_SEED=<n>` replays
//! just that seed in every churn test.

use dag_core::{NodeId, StripeId};
use pqc::{Keypair, MlDsa87};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use storage::{
    ErasureConfig, LiveNode, MicroBatch, Placement, Shard, ShardStore, StoreConfig, StripeLayout,
    StripeManifest, TxLocation, issue_receipt, plan_rereplication, tx_bytes_at,
    verify_receipt_from,
};

const TICK_MS: u64 = 500;
/// node-list's default heartbeat.
const HEARTBEAT_MS: u64 = 3_000;
/// presence's default online TTL.
const TTL_MS: u64 = 6_000;
/// The promise: a lost slot is back on a live node within one heartbeat + TTL.
const WINDOW_MS: u64 = HEARTBEAT_MS + TTL_MS;
/// Light nodes at the start; joins add more (up to the key pool).
const INITIAL_NODES: usize = 240;
const KEY_POOL: usize = 400;
const ZONES: usize = 8;
const INITIAL_STRIPES: usize = 12;
/// Ticks with churn, then quiet ticks (flappers come back, repairs and GC settle).
const CHURN_TICKS: u64 = 240;
const QUIET_TICKS: u64 = 40;
const GC_EVERY_TICKS: u64 = 10;

/// Deterministic keys, shared by every seed (ML-DSA-87 key generation is the slow part).
fn key_pool() -> &'static [Keypair] {
    static POOL: OnceLock<Vec<Keypair>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..KEY_POOL)
            .map(|i| {
                let mut seed = [0x5c; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Keypair::from_seed(&seed).unwrap()
            })
            .collect()
    })
}

/// splitmix64: small, deterministic, good enough to drive events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Crashed; comes back with its disk at `back_at` (a flap), or never.
    Crashed {
        back_at: Option<u64>,
    },
    /// Left for good (graceful leave, or a crash it never comes back from): disk gone.
    Gone,
}

struct Node {
    key: &'static Keypair,
    id: NodeId,
    zone: String,
    state: State,
    /// Last heartbeat the city saw.
    last_hb: u64,
    logged_out: bool,
    store: Option<ShardStore>,
    /// What `store` holds, (stripe number, index): kept in step with every write and delete
    /// and compared with the store at the end.
    held: BTreeSet<(usize, u16)>,
}

impl Node {
    fn store(&mut self) -> &ShardStore {
        self.store
            .get_or_insert_with(|| ShardStore::in_memory(StoreConfig::default()).unwrap())
    }
}

struct Stripe {
    layout: StripeLayout,
    manifest: StripeManifest,
    receipts: Vec<Option<dag_core::SignedReceipt>>,
    /// The manifest's holders as node numbers (kept with every `set_holder`).
    holder_idx: Vec<Option<usize>>,
    bytes: Vec<u8>,
    txs: Vec<Vec<u8>>,
    locations: Vec<TxLocation>,
    /// Slots whose holder became unavailable, and since when.
    lost_since: BTreeMap<u16, u64>,
    /// Shards rebuilt this tick, put next tick.
    pending: Option<(Vec<Shard>, Vec<Placement>)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    stripes: usize,
    nodes_seen: usize,
    crashes: usize,
    flaps: usize,
    leaves: usize,
    joins: usize,
    skipped_unsafe: usize,
    slot_losses: usize,
    shards_placed: usize,
    fetch_retries: usize,
    target_down: usize,
    orphans_collected: usize,
    at_k_decodes: usize,
    worst_to_full_ms: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    nodes: Vec<Node>,
    by_id: BTreeMap<NodeId, usize>,
    /// This seed's order of the key pool; `nodes.len()` of them are in use.
    key_order: Vec<usize>,
    stripes: Vec<Stripe>,
    stats: Stats,
    tracing: bool,
}

fn rendezvous(stripe: &StripeId, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(stripe.as_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0xc1c1_c4a1_2026);
        let mut key_order: Vec<usize> = (0..KEY_POOL).collect();
        for i in (1..key_order.len()).rev() {
            let j = rng.below(i + 1);
            key_order.swap(i, j);
        }
        let mut sim = Sim {
            seed,
            rng,
            // Start one heartbeat in, so first heartbeats can be spread over a period.
            now: HEARTBEAT_MS,
            nodes: Vec::new(),
            by_id: BTreeMap::new(),
            key_order,
            stripes: Vec::new(),
            stats: Stats::default(),
            tracing: std::env::var("SIM_SEED").is_ok(),
        };
        for _ in 0..INITIAL_NODES {
            sim.join();
            let off = sim.rng.below(HEARTBEAT_MS as usize) as u64;
            sim.nodes.last_mut().unwrap().last_hb = sim.now - off;
        }
        for _ in 0..INITIAL_STRIPES {
            sim.new_stripe();
        }
        sim
    }

    /// Replaying one seed (`SIM_SEED`) prints what happens to each slot.
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.tracing {
            eprintln!("t={} {}", self.now, what());
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "churn sim, seed {} at t = {} ms: {what}",
            self.seed, self.now
        );
    }

    fn join(&mut self) -> bool {
        let Some(&k) = self.key_order.get(self.nodes.len()) else {
            return false;
        };
        let key = &key_pool()[k];
        let zone = format!("zone-{}", self.rng.below(ZONES));
        self.by_id.insert(key.node_id(), self.nodes.len());
        self.nodes.push(Node {
            key,
            id: key.node_id(),
            zone,
            state: State::Up,
            last_hb: self.now,
            logged_out: false,
            store: None,
            held: BTreeSet::new(),
        });
        self.stats.joins += 1;
        true
    }

    /// The city's live view: logged in and heard from within the TTL (a crashed node stays
    /// in it until its TTL runs out).
    fn in_view(&self, n: &Node) -> bool {
        !n.logged_out && self.now.saturating_sub(n.last_hb) <= TTL_MS
    }

    fn live_view(&self) -> Vec<LiveNode> {
        self.nodes
            .iter()
            .filter(|n| self.in_view(n))
            .map(|n| LiveNode {
                id: n.id,
                failure_domain: n.zone.clone(),
            })
            .collect()
    }

    fn node_of(&self, id: &NodeId) -> usize {
        self.by_id[id]
    }

    /// Slot (s, i) is available: its manifest holder is up and holds the shard.
    fn available(&self, s: usize, i: u16) -> bool {
        self.stripes[s].holder_idx[usize::from(i)].is_some_and(|x| {
            let n = &self.nodes[x];
            n.state == State::Up && n.held.contains(&(s, i))
        })
    }

    fn available_count(&self, s: usize) -> usize {
        (0..self.stripes[s].layout.n())
            .filter(|&i| self.available(s, i))
            .count()
    }

    /// Puts `shard` on node `x` if it is up: the node stores it and signs a receipt, the
    /// city verifies the receipt against the layout. `None` if the node is down.
    fn put(&mut self, s: usize, x: usize, shard: &Shard) -> Option<dag_core::SignedReceipt> {
        if self.nodes[x].state != State::Up {
            return None;
        }
        let now = self.now;
        let node = &mut self.nodes[x];
        node.store().put(shard).unwrap();
        node.held.insert((s, shard.index()));
        let r = issue_receipt(&shard.header, node.key, now);
        let layout = &self.stripes[s].layout;
        match verify_receipt_from(layout, r.clone(), &node.id, &MlDsa87) {
            Ok(_) => Some(r),
            Err(e) => self.fail(format!("receipt from an honest holder refused: {e}")),
        }
    }

    /// Records node `x` as the holder of slot (s, i) with its verified receipt.
    fn set_holder(&mut self, s: usize, i: u16, x: usize, r: dag_core::SignedReceipt) {
        let id = self.nodes[x].id;
        let st = &mut self.stripes[s];
        st.manifest.set_holder(i, id).unwrap();
        st.receipts[usize::from(i)] = Some(r);
        st.holder_idx[usize::from(i)] = Some(x);
    }

    /// A new Held stripe: a micro-batch of random txs, put on n distinct live-view nodes in
    /// rendezvous order (a node down but still in view fails its put; the next one is tried).
    fn new_stripe(&mut self) {
        let count = 2 + self.rng.below(6);
        let txs: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = 60 + self.rng.below(400);
                (0..len).map(|_| self.rng.next() as u8).collect()
            })
            .collect();
        let batch = MicroBatch::from_tx_bytes(&txs).unwrap();
        let shards = ErasureConfig::default().encode(&batch.stripe).unwrap();
        let layout = StripeLayout::from_shards(&shards).unwrap();
        let mut cands: Vec<(usize, [u8; 32])> = (0..self.nodes.len())
            .filter(|&x| self.in_view(&self.nodes[x]))
            .map(|x| (x, rendezvous(&layout.stripe_id, &self.nodes[x].id)))
            .collect();
        cands.sort_by_key(|c| c.1);
        let s = self.stripes.len();
        self.stripes.push(Stripe {
            manifest: StripeManifest::unplaced(layout.clone()),
            receipts: vec![None; shards.len()],
            holder_idx: vec![None; shards.len()],
            layout,
            bytes: batch.stripe.clone(),
            txs,
            locations: batch.locations,
            lost_since: BTreeMap::new(),
            pending: None,
        });
        let mut next = cands.into_iter().map(|c| c.0);
        for shard in &shards {
            let placed = loop {
                let Some(x) = next.next() else {
                    self.fail("fewer than n live nodes for a new stripe".into());
                };
                if let Some(r) = self.put(s, x, shard) {
                    break (x, r);
                }
                self.stats.target_down += 1;
            };
            self.set_holder(s, shard.index(), placed.0, placed.1);
        }
        self.stats.stripes += 1;
    }

    /// Would taking node `x` away leave some stripe with more than m unavailable slots?
    fn safe_to_lose(&self, x: usize) -> bool {
        (0..self.stripes.len()).all(|s| {
            let st = &self.stripes[s];
            let holds = (0..st.layout.n())
                .any(|i| st.holder_idx[usize::from(i)] == Some(x) && self.available(s, i));
            !holds || self.available_count(s) > usize::from(st.layout.k)
        })
    }

    /// Records the slots that become unavailable when `x` goes down.
    fn mark_losses(&mut self, x: usize) {
        let now = self.now;
        for s in 0..self.stripes.len() {
            for i in 0..self.stripes[s].layout.n() {
                if self.stripes[s].holder_idx[usize::from(i)] == Some(x) && self.available(s, i) {
                    self.stripes[s].lost_since.entry(i).or_insert(now);
                    self.trace(|| format!("slot {i} of stripe {s} lost (node {x} down)"));
                    self.stats.slot_losses += 1;
                }
            }
        }
    }

    /// A slot available again (re-placed, or its holder back with its disk) ends its loss.
    fn settle_losses(&mut self) {
        let now = self.now;
        for s in 0..self.stripes.len() {
            let back: Vec<u16> = self.stripes[s]
                .lost_since
                .keys()
                .copied()
                .filter(|&i| self.available(s, i))
                .collect();
            for i in back {
                let since = self.stripes[s].lost_since.remove(&i).unwrap();
                self.trace(|| {
                    format!(
                        "slot {i} of stripe {s} whole again after {} ms",
                        now - since
                    )
                });
                let took = now - since;
                if took > WINDOW_MS {
                    self.fail(format!(
                        "slot {i} of stripe {s} took {took} ms to be whole again (window {WINDOW_MS} ms)"
                    ));
                }
                self.stats.worst_to_full_ms = self.stats.worst_to_full_ms.max(took);
            }
        }
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&x| self.nodes[x].state == State::Up)
            .collect()
    }

    fn take_down(&mut self, x: usize, graceful: bool) {
        // A flapper that came back earlier this tick made its slots whole again: that loss
        // ends now, before this one starts.
        self.settle_losses();
        self.mark_losses(x);
        if graceful {
            let n = &mut self.nodes[x];
            n.state = State::Gone;
            n.logged_out = true;
            n.store = None;
            n.held.clear();
            return;
        }
        let back_at = if self.rng.chance(600) {
            // A flap: back after 0.5–20 s with its disk (before or after its TTL ran out).
            self.stats.flaps += 1;
            Some(self.now + (1 + self.rng.below(40) as u64) * TICK_MS)
        } else {
            None
        };
        self.nodes[x].state = State::Crashed { back_at };
    }

    fn churn(&mut self) {
        // Flappers come back with their disk and log in again.
        let now = self.now;
        for n in &mut self.nodes {
            if let State::Crashed { back_at: Some(t) } = n.state
                && t <= now
            {
                n.state = State::Up;
                n.last_hb = now;
                n.logged_out = false;
            }
        }
        if self.rng.chance(300) {
            self.join();
        }
        for _ in 0..self.rng.below(3) {
            if !self.rng.chance(450) {
                continue;
            }
            let up = self.up_nodes();
            let x = up[self.rng.below(up.len())];
            if !self.safe_to_lose(x) {
                self.stats.skipped_unsafe += 1;
                continue;
            }
            let graceful = self.rng.chance(300);
            if graceful {
                self.stats.leaves += 1;
            } else {
                self.stats.crashes += 1;
            }
            self.take_down(x, graceful);
        }
        if self.rng.chance(80) {
            self.new_stripe();
        }
    }

    fn heartbeats(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            if n.state == State::Up && now >= n.last_hb + HEARTBEAT_MS {
                n.last_hb = now;
            }
        }
        // A node that crashed for good is logged out once presence expires it; its disk is
        // gone.
        for n in &mut self.nodes {
            if n.state == (State::Crashed { back_at: None }) && now - n.last_hb > TTL_MS {
                n.state = State::Gone;
                n.store = None;
                n.held.clear();
            }
        }
    }

    /// Phase 2 of last tick's repairs: put each rebuilt shard on its target, or the next
    /// live-view node without a shard of the stripe when the target is down.
    fn place_pending(&mut self, s: usize) {
        let Some((rebuilt, placements)) = self.stripes[s].pending.take() else {
            return;
        };
        let sid = self.stripes[s].layout.stripe_id;
        for p in placements {
            let shard = rebuilt.iter().find(|r| r.index() == p.index).unwrap();
            let holders = self.stripes[s].manifest.distinct_holders();
            let mut others: Vec<(usize, [u8; 32])> = (0..self.nodes.len())
                .filter(|&x| {
                    let n = &self.nodes[x];
                    self.in_view(n) && !holders.contains(&n.id) && n.id != p.target
                })
                .map(|x| (x, rendezvous(&sid, &self.nodes[x].id)))
                .collect();
            others.sort_by_key(|c| c.1);
            let target = self.node_of(&p.target);
            let mut cands = vec![target];
            if holders.contains(&p.target) {
                cands.clear();
            }
            cands.extend(others.into_iter().map(|c| c.0));
            let mut placed = false;
            for x in cands {
                if let Some(r) = self.put(s, x, shard) {
                    self.set_holder(s, p.index, x, r);
                    self.trace(|| format!("slot {} of stripe {s} placed on node {x}", p.index));
                    self.stats.shards_placed += 1;
                    placed = true;
                    break;
                }
                self.stats.target_down += 1;
            }
            if !placed {
                self.fail(format!("no live node took shard {} of stripe {s}", p.index));
            }
        }
    }

    /// Phase 1: plan the stripe if a holder is out of the live view, fetch k good shards
    /// from live holders, rebuild the lost ones (put next tick).
    fn plan_and_fetch(&mut self, s: usize, view: &[LiveNode]) {
        let st = &self.stripes[s];
        let Some(departed) = st
            .holder_idx
            .iter()
            .flatten()
            .find(|&&x| !self.in_view(&self.nodes[x]))
            .map(|&x| self.nodes[x].id)
        else {
            return;
        };
        let plan = match plan_rereplication(&st.manifest, view, &departed) {
            Ok(p) => p,
            Err(e) => self.fail(format!("stripe {s}: {e}")),
        };
        self.trace(|| format!("stripe {s}: plan lost {:?}", plan.lost));
        if plan.is_empty() {
            return;
        }
        let k = usize::from(st.layout.k);
        let mut got = Vec::new();
        for (i, h) in plan.sources.iter().chain(&plan.spare_sources) {
            if got.len() == k {
                break;
            }
            let n = &self.nodes[self.node_of(h)];
            if n.state != State::Up {
                continue; // crashed, not yet out of the view: the fetch fails
            }
            let Some(store) = &n.store else { continue };
            if let Ok(Some(shard)) = store.get(&st.layout.stripe_id, *i)
                && st.layout.check_shard(&shard).is_ok()
            {
                got.push(shard);
            }
        }
        if got.len() < k {
            self.stats.fetch_retries += 1;
            self.trace(|| format!("stripe {s}: only {} good shards fetched", got.len()));
            return; // not enough answers this tick: the next sweep tries again
        }
        let rebuilt = match st.layout.rebuild(&got, &plan.lost) {
            Ok(r) => r,
            Err(e) => self.fail(format!("stripe {s}: rebuild: {e}")),
        };
        self.stripes[s].pending = Some((rebuilt, plan.placements));
    }

    /// GC: every live-view node that is up drops the shards no manifest names on it.
    fn gc(&mut self) {
        for x in 0..self.nodes.len() {
            if self.nodes[x].state != State::Up || !self.in_view(&self.nodes[x]) {
                continue;
            }
            let orphans: Vec<(usize, u16)> = self.nodes[x]
                .held
                .iter()
                .copied()
                .filter(|&(s, i)| self.stripes[s].holder_idx[usize::from(i)] != Some(x))
                .collect();
            for (s, i) in orphans {
                let sid = self.stripes[s].layout.stripe_id;
                let n = &mut self.nodes[x];
                assert!(n.store().delete(&sid, i).unwrap(), "orphan was stored");
                n.held.remove(&(s, i));
                self.stats.orphans_collected += 1;
            }
        }
    }

    /// Restorability at every tick; a full decode from the real stores at the edge (k left).
    fn check_restorable(&mut self) {
        for s in 0..self.stripes.len() {
            let have = self.available_count(s);
            let k = usize::from(self.stripes[s].layout.k);
            if have < k {
                self.fail(format!(
                    "stripe {s} has {have} available shards of the {k} needed"
                ));
            }
            if have == k {
                self.decode_from_stores(s);
                self.stats.at_k_decodes += 1;
            }
        }
    }

    fn decode_from_stores(&self, s: usize) {
        let st = &self.stripes[s];
        let shards: Vec<Shard> = (0..st.layout.n())
            .filter(|&i| self.available(s, i))
            .map(|i| {
                let h = st.manifest.holders[usize::from(i)].unwrap();
                let n = &self.nodes[self.node_of(&h)];
                n.store
                    .as_ref()
                    .unwrap()
                    .get(&st.layout.stripe_id, i)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        match st.layout.decode(&shards) {
            Ok(bytes) if bytes == st.bytes => {}
            Ok(_) => self.fail(format!("stripe {s} decodes to other bytes")),
            Err(e) => self.fail(format!("stripe {s} unrestorable: {e}")),
        }
    }

    fn tick(&mut self, churn: bool) {
        self.now += TICK_MS;
        if churn {
            self.churn();
        } else {
            // Quiet: only flappers come back.
            let now = self.now;
            for n in &mut self.nodes {
                if let State::Crashed { back_at: Some(t) } = n.state
                    && t <= now
                {
                    n.state = State::Up;
                    n.last_hb = now;
                }
            }
        }
        self.heartbeats();
        self.settle_losses();
        self.check_restorable();
        let mut to_plan = Vec::new();
        for s in 0..self.stripes.len() {
            if self.stripes[s].pending.is_some() {
                self.place_pending(s);
            } else if self.stripes[s]
                .holder_idx
                .iter()
                .any(|x| x.is_none_or(|x| !self.in_view(&self.nodes[x])))
            {
                to_plan.push(s);
            }
        }
        if !to_plan.is_empty() {
            let view = self.live_view();
            for s in to_plan {
                self.plan_and_fetch(s, &view);
            }
        }
        self.settle_losses();
        if (self.now / TICK_MS).is_multiple_of(GC_EVERY_TICKS) {
            self.gc();
        }
    }

    fn run(mut self) -> Stats {
        for _ in 0..CHURN_TICKS {
            self.tick(true);
        }
        for _ in 0..QUIET_TICKS {
            self.tick(false);
        }
        self.gc();
        self.final_checks();
        self.stats.nodes_seen = self.nodes.len();
        self.stats
    }

    fn final_checks(&mut self) {
        for s in 0..self.stripes.len() {
            let st = &self.stripes[s];
            if !st.lost_since.is_empty() || st.pending.is_some() {
                self.fail(format!("stripe {s} still repairing at the end"));
            }
            let named: Vec<Option<NodeId>> = st
                .holder_idx
                .iter()
                .map(|x| x.map(|x| self.nodes[x].id))
                .collect();
            assert_eq!(
                named, st.manifest.holders,
                "seed {}: model and manifest",
                self.seed
            );
            let n = usize::from(st.layout.n());
            if st.manifest.distinct_holders().len() != n || self.available_count(s) != n {
                self.fail(format!("stripe {s} not back to {n} distinct live holders"));
            }
            for (i, r) in st.receipts.iter().enumerate() {
                let h = st.manifest.holders[i].unwrap();
                let r = r.clone().unwrap();
                if let Err(e) = verify_receipt_from(&st.layout, r, &h, &MlDsa87) {
                    self.fail(format!("stripe {s} slot {i}: {e}"));
                }
            }
            self.decode_from_stores(s);
            for (t, loc) in st.txs.iter().zip(&st.locations) {
                assert_eq!(tx_bytes_at(&st.bytes, loc).unwrap(), t.as_slice());
            }
        }
        // No orphan: every stored shard is one a manifest names on that node, and the
        // stores hold exactly what the model says.
        let by_sid: BTreeMap<StripeId, usize> = self
            .stripes
            .iter()
            .enumerate()
            .map(|(s, st)| (st.layout.stripe_id, s))
            .collect();
        for x in 0..self.nodes.len() {
            let n = &self.nodes[x];
            let Some(store) = &n.store else { continue };
            let mut stored = BTreeSet::new();
            for sid in store.list_stripes().unwrap() {
                for i in store.list_shards(&sid).unwrap() {
                    stored.insert((by_sid[&sid], i));
                }
            }
            if stored != n.held {
                self.fail(format!("node {x}: store and model differ"));
            }
            if n.state == State::Up {
                for &(s, i) in &stored {
                    if self.stripes[s].manifest.holders[usize::from(i)] != Some(n.id) {
                        self.fail(format!("node {x} keeps orphan shard {i} of stripe {s}"));
                    }
                }
            }
        }
    }
}

/// Runs `seeds` (or only `SIM_SEED` when set), prints a summary line with the worst time to
/// full redundancy; a failure names its seed.
fn run_seeds(seeds: std::ops::Range<u64>) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => seeds.collect(),
    };
    let mut total = Stats::default();
    let mut worst_seed = 0;
    for &seed in &seeds {
        let st = match std::panic::catch_unwind(|| Sim::new(seed).run()) {
            Ok(st) => st,
            Err(e) => {
                eprintln!("churn sim failed: SIM_SEED={seed} replays it");
                std::panic::resume_unwind(e);
            }
        };
        if st.worst_to_full_ms > total.worst_to_full_ms {
            worst_seed = seed;
        }
        total.worst_to_full_ms = total.worst_to_full_ms.max(st.worst_to_full_ms);
        total.stripes += st.stripes;
        total.nodes_seen += st.nodes_seen;
        total.crashes += st.crashes;
        total.flaps += st.flaps;
        total.leaves += st.leaves;
        total.joins += st.joins;
        total.skipped_unsafe += st.skipped_unsafe;
        total.slot_losses += st.slot_losses;
        total.shards_placed += st.shards_placed;
        total.fetch_retries += st.fetch_retries;
        total.target_down += st.target_down;
        total.orphans_collected += st.orphans_collected;
        total.at_k_decodes += st.at_k_decodes;
    }
    assert!(total.slot_losses > 0, "the simulation must lose holders");
    println!(
        "churn sim seeds {}..={}: {} seeds, 0 lost; stripes {}, crashes {} (flaps {}), leaves {}, \
         joins {}, skipped (would exceed m) {}, slot losses {}, shards re-placed {}, fetch \
         retries {}, puts to down targets {}, orphans collected {}, decodes at exactly k {}; \
         worst time to full redundancy {} ms (seed {worst_seed}; window {WINDOW_MS} ms)",
        seeds.first().unwrap(),
        seeds.last().unwrap(),
        seeds.len(),
        total.stripes,
        total.crashes,
        total.flaps,
        total.leaves,
        total.joins,
        total.skipped_unsafe,
        total.slot_losses,
        total.shards_placed,
        total.fetch_retries,
        total.target_down,
        total.orphans_collected,
        total.at_k_decodes,
        total.worst_to_full_ms,
    );
}

/// One test per 25 seeds, so each stays well under a minute in debug on 2 shared cores.
macro_rules! churn_tests {
    ($($name:ident: $from:literal,)*) => {$(
        #[test]
        fn $name() {
            run_seeds($from..$from + 25);
        }
    )*};
}

churn_tests! {
    churn_seeds_0000: 0,
    churn_seeds_0025: 25,
    churn_seeds_0050: 50,
    churn_seeds_0075: 75,
    churn_seeds_0100: 100,
    churn_seeds_0125: 125,
    churn_seeds_0150: 150,
    churn_seeds_0175: 175,
    churn_seeds_0200: 200,
    churn_seeds_0225: 225,
    churn_seeds_0250: 250,
    churn_seeds_0275: 275,
    churn_seeds_0300: 300,
    churn_seeds_0325: 325,
    churn_seeds_0350: 350,
    churn_seeds_0375: 375,
    churn_seeds_0400: 400,
    churn_seeds_0425: 425,
    churn_seeds_0450: 450,
    churn_seeds_0475: 475,
    churn_seeds_0500: 500,
    churn_seeds_0525: 525,
    churn_seeds_0550: 550,
    churn_seeds_0575: 575,
    churn_seeds_0600: 600,
    churn_seeds_0625: 625,
    churn_seeds_0650: 650,
    churn_seeds_0675: 675,
    churn_seeds_0700: 700,
    churn_seeds_0725: 725,
    churn_seeds_0750: 750,
    churn_seeds_0775: 775,
    churn_seeds_0800: 800,
    churn_seeds_0825: 825,
    churn_seeds_0850: 850,
    churn_seeds_0875: 875,
    churn_seeds_0900: 900,
    churn_seeds_0925: 925,
    churn_seeds_0950: 950,
    churn_seeds_0975: 975,
}
