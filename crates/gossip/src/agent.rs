//! The async driver of one member: a UDP socket, foca, the authentication [`Sessions`], a
//! timer queue, and the view other components read.

use crate::session::AllowFn;
use crate::{Error, GossipConfig, Member, Opened, Result, SealOutcome, Sessions};
use bytes::Buf;
use dag_core::NodeId;
use foca::{AccumulatingRuntime, Codec, Foca, OwnedNotification, PostcardCodec, Timer};
use parking_lot::Mutex;
use pqc::Keypair;
use rand_010::SeedableRng;
use rand_010::rngs::StdRng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A change in this member's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// A member is alive (joined, or came back under a new generation).
    Up(Member),
    /// A member missed its probes and is suspected (not yet down).
    Suspected(NodeId),
    /// A suspected member refuted the suspicion.
    Refuted(NodeId),
    /// The cluster confirmed a member down (crashed, or left).
    Down(Member),
}

/// How a live member is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Suspected: missed a probe cycle, not yet confirmed down.
    Suspect,
}

/// Counters of one agent (monotonic since start).
#[derive(Debug, Default)]
pub struct GossipStats {
    /// UDP bytes sent (with envelopes and handshakes).
    pub bytes_sent: AtomicU64,
    /// UDP bytes received.
    pub bytes_received: AtomicU64,
    /// Datagrams rejected (bad MAC, replay, bad handshake, not allowed, malformed).
    pub rejected: AtomicU64,
    /// Suspicions raised against other members.
    pub suspicions: AtomicU64,
    /// Members confirmed down.
    pub downs: AtomicU64,
}

type View = Arc<Mutex<HashMap<NodeId, (Member, MemberState)>>>;

enum Cmd {
    Announce(NodeId, SocketAddr),
    Suspect(NodeId),
    Leave(oneshot::Sender<()>),
}

/// Starts gossip agents.
#[derive(Debug)]
pub struct GossipAgent;

impl GossipAgent {
    /// Binds `bind` (UDP) and starts gossiping as the node holding `key`; peers must pass
    /// `allow`. Announce to seeds with [`GossipView::announce`]. The member advertises
    /// `advertise` (default: the bound address).
    pub async fn start(
        key: Keypair,
        bind: SocketAddr,
        advertise: Option<SocketAddr>,
        config: GossipConfig,
        allow: AllowFn,
    ) -> Result<GossipHandle> {
        let foca_config = config.to_foca()?;
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let me = Member {
            node_id: key.node_id(),
            addr: advertise.unwrap_or(local),
            generation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let foca = Foca::new(
            me,
            foca_config,
            StdRng::seed_from_u64(rand::random()),
            PostcardCodec,
        );
        let (events, _) = broadcast::channel(4096);
        let view: View = Arc::new(Mutex::new(HashMap::new()));
        let stats = Arc::new(GossipStats::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let driver = Driver {
            foca,
            rt: AccumulatingRuntime::new(),
            sessions: Sessions::new(key, allow),
            socket,
            timers: BinaryHeap::new(),
            seq: 0,
            events: events.clone(),
            view: view.clone(),
            stats: stats.clone(),
            suspects: HashSet::new(),
            clock: SuspicionClock::default(),
            suspect_ms: config.suspect_to_down.as_millis() as u64,
            started: Instant::now(),
            epoch_ms: me.generation,
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        Ok(GossipHandle {
            shared: GossipView {
                me,
                local,
                events,
                view,
                stats,
                cmd: cmd_tx,
            },
            task: Some(task),
        })
    }
}

/// What other tasks read from a running agent: its view, counters and events, and a way
/// to announce. Cheap to clone; does not own the agent.
#[derive(Debug, Clone)]
pub struct GossipView {
    me: Member,
    local: SocketAddr,
    events: broadcast::Sender<GossipEvent>,
    view: View,
    stats: Arc<GossipStats>,
    cmd: mpsc::Sender<Cmd>,
}

impl GossipView {
    /// This member.
    pub fn me(&self) -> Member {
        self.me
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Asks the member `node_id` at `addr` to let us in (bootstrap from presence or
    /// configured seeds). Never blocks; an announce is dropped when the queue is full.
    pub fn announce(&self, node_id: NodeId, addr: SocketAddr) {
        if node_id != self.me.node_id {
            let _ = self.cmd.try_send(Cmd::Announce(node_id, addr));
        }
    }

    /// Raises (and gossips) a suspicion against `node_id` — for when presence says it is
    /// gone while gossip holds it alive: a live node refutes, a dead one is confirmed down
    /// when the suspicion runs out. Never blocks.
    pub fn suspect(&self, node_id: NodeId) {
        let _ = self.cmd.try_send(Cmd::Suspect(node_id));
    }

    /// Members currently alive or suspected (not this node), ordered by id.
    pub fn members(&self) -> Vec<(Member, MemberState)> {
        let mut v: Vec<_> = self.view.lock().values().copied().collect();
        v.sort_by_key(|(m, _)| m.node_id);
        v
    }

    /// Whether `node_id` is alive or suspected in this view.
    pub fn is_live(&self, node_id: &NodeId) -> bool {
        self.view.lock().contains_key(node_id)
    }

    /// The agent's counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<GossipEvent> {
        self.events.subscribe()
    }
}

/// A running agent. Dropping it stops the task without leaving (as a crash would).
#[derive(Debug)]
pub struct GossipHandle {
    shared: GossipView,
    task: Option<JoinHandle<()>>,
}

impl std::ops::Deref for GossipHandle {
    type Target = GossipView;
    fn deref(&self) -> &GossipView {
        &self.shared
    }
}

impl GossipHandle {
    /// A clonable view of the agent for other tasks.
    pub fn share(&self) -> GossipView {
        self.shared.clone()
    }

    /// Stops as a crash would (no leave message).
    pub fn abort(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Leaves the cluster (peers mark us down at once) and stops.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.cmd.send(Cmd::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

use crate::suspicion::{SuspicionClock, Swim};

struct Driver {
    foca: Swim,
    rt: AccumulatingRuntime<Member>,
    sessions: Sessions,
    socket: UdpSocket,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    seq: u64,
    events: broadcast::Sender<GossipEvent>,
    view: View,
    stats: Arc<GossipStats>,
    suspects: HashSet<NodeId>,
    clock: SuspicionClock,
    suspect_ms: u64,
    started: Instant,
    epoch_ms: u64,
}

/// Timers ordered by (deadline, sequence) only.
struct TimerSlot(Timer<Member>);
impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.epoch_ms + self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut scan = tokio::time::interval(Duration::from_millis(100));
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.timers.peek().map(|Reverse((t, _, _))| *t);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(from, &buf[..n]).await,
                    Err(e) => tracing::debug!(error = %e, "gossip recv failed"),
                },
                _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                    let now = Instant::now();
                    while let Some(Reverse((t, _, _))) = self.timers.peek() {
                        if *t > now { break; }
                        let Some(Reverse((_, _, TimerSlot(timer)))) = self.timers.pop() else { break };
                        if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                            tracing::debug!(error = %e, "gossip timer");
                        }
                    }
                    self.drain().await;
                }
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Announce(node_id, addr)) => {
                        let dst = Member { node_id, addr, generation: 0 };
                        if let Err(e) = self.foca.announce(dst, &mut self.rt) {
                            tracing::debug!(error = %e, "gossip announce");
                        }
                        self.drain().await;
                    }
                    Some(Cmd::Suspect(node_id)) => {
                        crate::suspicion::suspect(&mut self.foca, node_id, &mut self.rt);
                        self.drain().await;
                    }
                    Some(Cmd::Leave(done)) => {
                        let _ = self.foca.leave_cluster(&mut self.rt);
                        self.drain().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = scan.tick() => {
                    self.scan_suspects();
                    self.drain().await;
                }
            }
        }
    }

    async fn on_datagram(&mut self, from: SocketAddr, d: &[u8]) {
        self.stats
            .bytes_received
            .fetch_add(d.len() as u64, Ordering::Relaxed);
        let now = self.now_ms();
        match self.sessions.open(from, d, now) {
            Ok(Opened::Payload { peer, data }) => {
                // The SWIM header must name the authenticated sender: a member cannot
                // speak as another.
                let src_ok =
                    Codec::<Member>::decode_header(&mut PostcardCodec, data.as_slice().chunk())
                        .map(|h| h.src.node_id == peer)
                        .unwrap_or(false);
                if !src_ok {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, "gossip payload names another sender");
                    return;
                }
                if let Err(e) = self.foca.handle_data(&data, &mut self.rt) {
                    tracing::debug!(error = %e, "gossip data");
                }
                self.drain().await;
            }
            Ok(Opened::Send(out)) => {
                for (to, d) in out {
                    self.send_raw(to, &d).await;
                }
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "gossip datagram rejected");
            }
        }
    }

    async fn send_raw(&self, to: SocketAddr, d: &[u8]) {
        match self.socket.send_to(d, to).await {
            Ok(n) => {
                self.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(%to, error = %e, "gossip send failed"),
        }
    }

    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((to, data)) = self.rt.to_send() {
                progressed = true;
                let now = self.now_ms();
                match self.sessions.seal(to.node_id, to.addr, &data, now) {
                    Ok(SealOutcome::Data(d)) | Ok(SealOutcome::Hello(d)) => {
                        self.send_raw(to.addr, &d).await
                    }
                    Ok(SealOutcome::Queued) => {}
                    Err(e) => tracing::warn!(error = %e, "gossip seal failed"),
                }
            }
            while let Some((after, timer)) = self.rt.to_schedule() {
                progressed = true;
                self.seq += 1;
                self.timers.push(Reverse((
                    Instant::now() + after,
                    self.seq,
                    TimerSlot(timer),
                )));
            }
            while let Some(n) = self.rt.to_notify() {
                progressed = true;
                self.on_notification(n);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_notification(&mut self, n: OwnedNotification<Member>) {
        match n {
            OwnedNotification::MemberUp(m) => {
                self.view.lock().insert(m.node_id, (m, MemberState::Alive));
                self.suspects.remove(&m.node_id);
                let _ = self.events.send(GossipEvent::Up(m));
            }
            OwnedNotification::Rename(_, m) => {
                if let Some(e) = self.view.lock().get_mut(&m.node_id) {
                    e.0 = m;
                }
            }
            OwnedNotification::MemberDown(m) => {
                let was = self.view.lock().remove(&m.node_id).is_some();
                self.suspects.remove(&m.node_id);
                self.sessions.forget(&m.node_id);
                if was {
                    self.stats.downs.fetch_add(1, Ordering::Relaxed);
                    let _ = self.events.send(GossipEvent::Down(m));
                }
            }
            OwnedNotification::Rejoin(me) => {
                tracing::warn!(
                    generation = me.generation,
                    "gossip: we were declared down; rejoined"
                );
            }
            OwnedNotification::Defunct => {
                tracing::warn!("gossip: declared down and cannot renew");
            }
            _ => {}
        }
    }

    /// foca does not notify suspicion; read it from the membership table (and run the
    /// suspicion timers of suspicions learned from others).
    fn scan_suspects(&mut self) {
        let now_ms = self.now_ms();
        let now: HashSet<NodeId> = self
            .clock
            .tick(&mut self.foca, now_ms, self.suspect_ms, &mut self.rt)
            .into_iter()
            .collect();
        let mut view = self.view.lock();
        for id in now.difference(&self.suspects) {
            if let Some(e) = view.get_mut(id) {
                e.1 = MemberState::Suspect;
                self.stats.suspicions.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.send(GossipEvent::Suspected(*id));
            }
        }
        for id in self.suspects.difference(&now) {
            if let Some(e) = view.get_mut(id) {
                e.1 = MemberState::Alive;
                let _ = self.events.send(GossipEvent::Refuted(*id));
            }
        }
        drop(view);
        self.suspects = now;
    }
}
