//! A deterministic simulation of many SWIM members (the same foca configuration the agent
//! runs) without sockets: virtual time, seeded randomness, per-message latency and loss,
//! crashes, pauses (a stopped process: its datagrams and timers wait until it resumes),
//! graceful leaves and joins. Every datagram is counted with the authentication envelope
//! ([`crate::WIRE_OVERHEAD`]) so byte figures match the wire.
//!
//! A run is reproduced from its seed (`SIM_SEED`); tests print it.

use crate::{GossipConfig, Member, Result, WIRE_OVERHEAD};
use dag_core::NodeId;
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand_010::rngs::StdRng;
use rand_010::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use crate::suspicion::{SuspicionClock, Swim};

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// SWIM settings of every member.
    pub gossip: GossipConfig,
    /// One-way latency range, ms (uniform).
    pub latency_ms: (u64, u64),
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl SimConfig {
    /// Defaults for `seed`: the agent's settings, 1–5 ms latency, 0.5 % loss.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            gossip: GossipConfig::default(),
            latency_ms: (1, 5),
            loss: 0.005,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Paused { until: u64 },
    Crashed { at: u64 },
    Left { at: u64 },
}

struct Node {
    foca: Swim,
    rt: AccumulatingRuntime<Member>,
    status: Status,
    bytes_sent: u64,
    clock: SuspicionClock,
}

enum Event {
    Deliver { to: usize, data: Vec<u8> },
    Timer { node: usize, timer: Timer<Member> },
}

/// Orders the queue by (time, sequence) only.
struct Slot(Event);
impl PartialEq for Slot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Slot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Down notifications: who saw whom go down, and when (virtual ms).
pub type DownLog = HashMap<(usize, usize), u64>;

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    foca_config: foca::Config,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Slot)>>,
    nodes: Vec<Node>,
    by_id: HashMap<NodeId, usize>,
    downs: DownLog,
    last_bootstrap: u64,
    last_suspicion_scan: u64,
    presence: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.cfg.seed)
            .field("now_ms", &self.now)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

fn member(i: usize) -> Member {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Member {
        node_id: NodeId::from_bytes(*blake3::hash(&id).as_bytes()),
        addr: SocketAddr::from((Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 7000)),
        generation: 1,
    }
}

impl Sim {
    /// An empty cluster.
    pub fn new(cfg: SimConfig) -> Result<Self> {
        let foca_config = cfg.gossip.to_foca()?;
        Ok(Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            foca_config,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_id: HashMap::new(),
            downs: HashMap::new(),
            last_bootstrap: 0,
            last_suspicion_scan: 0,
            presence: true,
        })
    }

    /// A cluster of `n` members that already know each other (as after a bootstrap from
    /// presence), their probe cycles started.
    pub fn formed(cfg: SimConfig, n: usize) -> Result<Self> {
        let mut s = Sim::new(cfg)?;
        for _ in 0..n {
            s.join_silently();
        }
        for i in 0..n {
            let others: Vec<foca::Member<Member>> = (0..n)
                .filter(|&j| j != i)
                .map(|j| foca::Member::alive(member(j)))
                .collect();
            let node = &mut s.nodes[i];
            let _ = node
                .foca
                .apply_many(others.into_iter(), false, &mut node.rt);
            s.drain(i);
        }
        Ok(s)
    }

    fn join_silently(&mut self) -> usize {
        let i = self.nodes.len();
        let seed = self.rng.random::<u64>();
        let m = member(i);
        let foca = Foca::new(
            m,
            self.foca_config.clone(),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        self.nodes.push(Node {
            foca,
            rt: AccumulatingRuntime::new(),
            status: Status::Running,
            bytes_sent: 0,
            clock: SuspicionClock::default(),
        });
        self.by_id.insert(m.node_id, i);
        i
    }

    /// Virtual time, ms.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Members ever started.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True before the first join.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Indices of members that run (not crashed, not left; paused ones count).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                matches!(
                    self.nodes[i].status,
                    Status::Running | Status::Paused { .. }
                )
            })
            .collect()
    }

    fn push(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, Slot(e))));
    }

    /// Starts a new member that announces itself to a random running member (none for the
    /// first). Returns its index.
    pub fn join(&mut self) -> usize {
        let running = self.running();
        let i = self.join_silently();
        if !running.is_empty() {
            let to = running[self.rng.random_range(0..running.len())];
            let dst = member(to);
            let node = &mut self.nodes[i];
            let _ = node.foca.announce(dst, &mut node.rt);
            self.drain(i);
        }
        i
    }

    /// Kills member `i` (no leave message; it stops answering).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].status = Status::Crashed { at: self.now };
    }

    /// Member `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let _ = node.foca.leave_cluster(&mut node.rt);
        self.drain(i);
        self.nodes[i].status = Status::Left { at: self.now };
    }

    /// Stops member `i` for `ms` (like SIGSTOP): what arrives meanwhile waits.
    pub fn pause(&mut self, i: usize, ms: u64) {
        self.nodes[i].status = Status::Paused {
            until: self.now + ms,
        };
    }

    fn drain(&mut self, i: usize) {
        let mut sends = Vec::new();
        let mut timers = Vec::new();
        let mut notes = Vec::new();
        {
            let node = &mut self.nodes[i];
            while let Some(s) = node.rt.to_send() {
                sends.push(s);
            }
            while let Some(t) = node.rt.to_schedule() {
                timers.push(t);
            }
            while let Some(n) = node.rt.to_notify() {
                notes.push(n);
            }
        }
        for (to, data) in sends {
            self.nodes[i].bytes_sent += (data.len() + WIRE_OVERHEAD) as u64;
            if self.rng.random_bool(self.cfg.loss) {
                continue;
            }
            let (lo, hi) = self.cfg.latency_ms;
            let at = self.now + self.rng.random_range(lo..=hi);
            if let Some(&j) = self.by_id.get(&to.node_id) {
                let data = data.to_vec();
                self.push(at, Event::Deliver { to: j, data });
            }
        }
        for (after, timer) in timers {
            let at = self.now + after.as_millis() as u64;
            self.push(at, Event::Timer { node: i, timer });
        }
        for n in notes {
            if let OwnedNotification::MemberDown(m) = n
                && let Some(&j) = self.by_id.get(&m.node_id)
            {
                self.downs.entry((i, j)).or_insert(self.now);
            }
        }
    }

    /// Once a second, a member that misses some running member announces itself to up to
    /// six of those it misses, and suspects members presence no longer lists: what the agent's owner does with the presence list (an announce
    /// can be lost, and two joiners can find only each other). Off with
    /// [`Sim::set_presence`]`(false)`.
    fn bootstrap_from_presence(&mut self) {
        if !self.presence {
            return;
        }
        let running = self.running();
        for &i in &running {
            if self.nodes[i].status != Status::Running {
                continue;
            }
            let view = self.view_of(i);
            // Presence no longer lists members gone for longer than its TTL (6 s): a
            // member that still holds one alive raises a suspicion (as the agent's owner
            // does when presence and gossip disagree).
            for &j in &view {
                if let Status::Crashed { at } | Status::Left { at } = self.nodes[j].status
                    && self.now.saturating_sub(at) > 6_000
                {
                    let node = &mut self.nodes[i];
                    crate::suspicion::suspect(&mut node.foca, member(j).node_id, &mut node.rt);
                }
            }
            let missing: Vec<usize> = running
                .iter()
                .copied()
                .filter(|j| *j != i && !view.contains(j))
                .collect();
            if missing.is_empty() {
                self.drain(i);
                continue;
            }
            // The agent's owner announces to 3 presence-listed members per 500 ms tick.
            for _ in 0..missing.len().min(6) {
                let to = missing[self.rng.random_range(0..missing.len())];
                let node = &mut self.nodes[i];
                let _ = node.foca.announce(member(to), &mut node.rt);
            }
            self.drain(i);
        }
    }

    /// Whether members bootstrap from a presence list (default true): false models a
    /// presence outage, where only gossip carries membership.
    pub fn set_presence(&mut self, on: bool) {
        self.presence = on;
    }

    /// Runs until virtual time `now + ms` (presence bootstrap once per virtual second).
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            if self.now >= self.last_bootstrap + 1_000 {
                self.last_bootstrap = self.now;
                self.bootstrap_from_presence();
            }
            if self.now >= self.last_suspicion_scan + 250 {
                self.last_suspicion_scan = self.now;
                self.tick_suspicions();
            }
            let step = end
                .min(self.last_bootstrap + 1_000)
                .min(self.last_suspicion_scan + 250);
            self.run_to(step);
            if step >= end {
                return;
            }
        }
    }

    /// The agent scans its suspects every 100 ms; the simulation every 250 ms.
    fn tick_suspicions(&mut self) {
        let after = self.cfg.gossip.suspect_to_down.as_millis() as u64;
        for i in 0..self.nodes.len() {
            if self.nodes[i].status != Status::Running {
                continue;
            }
            let now = self.now;
            let node = &mut self.nodes[i];
            node.clock.tick(&mut node.foca, now, after, &mut node.rt);
            self.drain(i);
        }
    }

    fn run_to(&mut self, end: u64) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            let Some(Reverse((at, _, Slot(e)))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            let i = match &e {
                Event::Deliver { to, .. } => *to,
                Event::Timer { node, .. } => *node,
            };
            match self.nodes[i].status {
                Status::Crashed { .. } | Status::Left { .. } => continue,
                Status::Paused { until } if until > at => {
                    self.push(until, e);
                    continue;
                }
                Status::Paused { .. } => self.nodes[i].status = Status::Running,
                Status::Running => {}
            }
            let node = &mut self.nodes[i];
            let _ = match e {
                Event::Deliver { data, .. } => node.foca.handle_data(&data, &mut node.rt),
                Event::Timer { timer, .. } => node.foca.handle_timer(timer, &mut node.rt),
            };
            self.drain(i);
        }
        self.now = end;
    }

    /// Runs in steps of `step` ms until `done(self)` or `max` ms passed; returns the time
    /// it took, if it happened.
    pub fn run_until(&mut self, step: u64, max: u64, done: impl Fn(&Sim) -> bool) -> Option<u64> {
        let t0 = self.now;
        while self.now - t0 <= max {
            if done(self) {
                return Some(self.now - t0);
            }
            self.run_for(step);
        }
        None
    }

    /// The members `i` sees as active (alive or suspect).
    pub fn view_of(&self, i: usize) -> BTreeSet<usize> {
        self.nodes[i]
            .foca
            .iter_members()
            .filter_map(|m| self.by_id.get(&m.id().node_id).copied())
            .collect()
    }

    /// Whether `i` suspects `j` right now.
    pub fn suspects(&self, i: usize, j: usize) -> bool {
        self.nodes[i]
            .foca
            .iter_membership_state()
            .any(|m| m.id().node_id == member(j).node_id && m.state() == foca::State::Suspect)
    }

    /// Every running member sees exactly the other running members.
    pub fn converged(&self) -> bool {
        let running: BTreeSet<usize> = self.running().into_iter().collect();
        running.iter().all(|&i| {
            let mut want = running.clone();
            want.remove(&i);
            self.view_of(i) == want
        })
    }

    /// When each (observer, target) down notification happened.
    pub fn downs(&self) -> &DownLog {
        &self.downs
    }

    /// Bytes member `i` sent (SWIM payload + envelope).
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes[i].bytes_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut s = Sim::new(SimConfig::new(seed)).unwrap();
            for _ in 0..20 {
                s.join();
                s.run_for(50);
            }
            s.run_for(5_000);
            s.crash(3);
            s.run_for(8_000);
            (
                (0..20).map(|i| s.bytes_sent(i)).collect::<Vec<_>>(),
                s.view_of(0),
            )
        };
        assert_eq!(run(7), run(7));
        assert!(!run(7).1.contains(&3));
    }
}
