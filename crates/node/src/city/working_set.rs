//! The city node's working set by kind: every tx it admitted, from Admitted (Pending) to
//! Held to Ordered, with dag-core's [`WorkingSet`] rule applied by a garbage-collection task
//! on the domain's interval ([`GC_INTERVAL`], 5 s):
//!
//! - a Pending tx older than its kind's TTL (`fresh_tx` 60 s, `poh_request` 30 s,
//!   `repair_request` 15 s, …) leaves the set; an admission still waiting for its
//!   micro-batch to be Held is then answered `Overloaded` ("EXPIRED: …") and withdrawn;
//! - a Held tx stays until the committee has ordered it (checked against the order store
//!   on each pass), then leaves; on a node without a committee Held is where its work ends,
//!   so it leaves at once;
//! - kinds without a TTL (`checkpoint`, `system_tx`) stay until their work ends.
//!
//! Time comes from an injected [`Clock`]; the task stops on the role's stop signal. Metrics:
//! `citychain_working_set_evicted_total{kind,reason}` and
//! `citychain_working_set_txs{kind,state}` (what is kept, by kind and state).

use super::order::OrderStore;
use dag_core::{Clock, GC_INTERVAL, TxId, TxKind, WorkState, WorkingSet};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Working-set settings. `Default`: the domain's 5 s GC interval, at most 1,000,000 txs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingSetConfig {
    /// How often the garbage collector runs.
    pub gc_interval: Duration,
    /// Txs tracked at most; beyond that admission answers `Overloaded` until a pass frees
    /// room (held txs waiting for a stalled committee are never dropped to make room).
    pub capacity: usize,
}

impl Default for WorkingSetConfig {
    fn default() -> Self {
        WorkingSetConfig {
            gc_interval: GC_INTERVAL,
            capacity: 1_000_000,
        }
    }
}

/// Why a tx left the working set (the `reason` label).
const EXPIRED: &str = "expired";
const ORDERED: &str = "ordered";
const HELD_FINAL: &str = "held_no_committee";

const STATES: [(WorkState, &str); 3] = [
    (WorkState::Pending, "pending"),
    (WorkState::Held, "held"),
    (WorkState::Ordered, "ordered"),
];

struct Inner {
    set: WorkingSet,
    /// Admissions waiting while their tx is Pending: told when it expires.
    waiters: HashMap<TxId, oneshot::Sender<()>>,
}

/// What one pass did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Pending txs that expired, with their kind.
    pub expired: Vec<(TxId, TxKind)>,
    /// Held txs found ordered and dropped.
    pub ordered: usize,
    /// Txs still in the set after the pass.
    pub kept: usize,
}

/// The working set of one city node (shared by admission and the GC task).
pub struct CityWorkingSet {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    /// True when a committee orders held txs (then Held is kept until Ordered).
    keeps_held: bool,
    passes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CityWorkingSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityWorkingSet")
            .field("len", &self.len())
            .field("keeps_held", &self.keeps_held)
            .finish()
    }
}

/// Told when an admitted tx expired in the working set before it was held.
#[derive(Debug)]
pub(crate) struct Expiry(Option<oneshot::Receiver<()>>);

impl Expiry {
    /// Resolves when the tx expired; never resolves when it is held, withdrawn, or not
    /// tracked.
    pub(crate) async fn expired(&mut self) {
        match self.0.as_mut() {
            Some(rx) => {
                if rx.await.is_ok() {
                    return;
                }
                self.0 = None;
                std::future::pending::<()>().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

impl CityWorkingSet {
    /// An empty working set reading time from `clock`; `keeps_held` when a committee will
    /// order the node's held txs.
    pub fn new(cfg: &WorkingSetConfig, clock: Arc<dyn Clock>, keeps_held: bool) -> Self {
        metrics::describe_counter!(
            "citychain_working_set_evicted_total",
            "Txs that left the city's working set, by kind and reason (expired: TTL passed before Held; ordered: committed; held_no_committee: Held on a node without a committee)"
        );
        metrics::describe_gauge!(
            "citychain_working_set_txs",
            "Txs kept in the city's working set after the last GC pass, by kind and state"
        );
        CityWorkingSet {
            inner: Mutex::new(Inner {
                set: WorkingSet::default(),
                waiters: HashMap::new(),
            }),
            clock,
            capacity: cfg.capacity.max(1),
            keeps_held,
            passes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Collection passes run so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// True when no more txs should be admitted until a pass frees room.
    pub(crate) fn is_full(&self) -> bool {
        self.inner.lock().set.len() >= self.capacity
    }

    /// Txs tracked.
    pub fn len(&self) -> usize {
        self.inner.lock().set.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `id` stands in the set.
    pub fn state(&self, id: &TxId) -> Option<WorkState> {
        self.inner.lock().set.state(id)
    }

    /// Counts by (kind, state).
    pub fn counts(&self) -> HashMap<(TxKind, WorkState), usize> {
        self.inner.lock().set.counts()
    }

    /// A tx was admitted (durably stored): it is Pending from now on.
    pub(crate) fn admitted(&self, id: TxId, kind: TxKind) -> Expiry {
        let now = self.clock.now_ms();
        let mut g = self.inner.lock();
        if g.set.contains(&id) {
            return Expiry(None);
        }
        g.set.insert(id, kind, now);
        let (tx, rx) = oneshot::channel();
        g.waiters.insert(id, tx);
        Expiry(Some(rx))
    }

    /// A tx was answered Held: kept until ordered (or leaves at once without a committee).
    pub(crate) fn held(&self, id: TxId, kind: TxKind) {
        let now = self.clock.now_ms();
        let mut g = self.inner.lock();
        g.waiters.remove(&id);
        if self.keeps_held {
            if !g.set.set_state(&id, WorkState::Held) {
                // It expired in the same instant its hold completed: the promise stands.
                g.set.insert(id, kind, now);
                g.set.set_state(&id, WorkState::Held);
            }
        } else if g.set.remove(&id).is_some() {
            metrics::counter!("citychain_working_set_evicted_total", "kind" => kind.name(), "reason" => HELD_FINAL).increment(1);
        }
    }

    /// A tx's admission was taken back (not held, or expired): it leaves the set.
    pub(crate) fn withdrawn(&self, id: &TxId) {
        let mut g = self.inner.lock();
        g.waiters.remove(id);
        g.set.remove(id);
    }

    /// Marks the held txs among `ids` that the committee ordered.
    fn mark_ordered(&self, ids: &[TxId]) {
        let mut g = self.inner.lock();
        for id in ids {
            if g.set.state(id) == Some(WorkState::Held) {
                g.set.set_state(id, WorkState::Ordered);
            }
        }
    }

    /// Held txs (the candidates for Ordered).
    fn held_ids(&self) -> Vec<TxId> {
        self.inner.lock().set.ids_in(WorkState::Held)
    }

    /// One collection pass: expired Pending txs and Ordered ones leave; waiting admissions
    /// of expired txs are told; metrics updated.
    pub fn collect(&self) -> PassReport {
        let now = self.clock.now_ms();
        let mut g = self.inner.lock();
        // Kinds of the ordered ones, read before the pass removes them.
        let ordered_kinds: Vec<TxKind> = g
            .set
            .ids_in(WorkState::Ordered)
            .iter()
            .filter_map(|id| g.set.kind(id))
            .collect();
        let report = g.set.gc(now);
        for (id, kind) in &report.expired {
            if let Some(w) = g.waiters.remove(id) {
                let _ = w.send(());
            }
            metrics::counter!("citychain_working_set_evicted_total", "kind" => kind.name(), "reason" => EXPIRED).increment(1);
        }
        for kind in ordered_kinds {
            metrics::counter!("citychain_working_set_evicted_total", "kind" => kind.name(), "reason" => ORDERED).increment(1);
        }
        let counts = g.set.counts();
        let kept = g.set.len();
        drop(g);
        for kind in TxKind::BY_PRIORITY {
            for (state, name) in STATES {
                let n = counts.get(&(kind, state)).copied().unwrap_or(0);
                metrics::gauge!("citychain_working_set_txs", "kind" => kind.name(), "state" => name)
                    .set(n as f64);
            }
        }
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PassReport {
            expired: report.expired,
            ordered: report.completed.len(),
            kept,
        }
    }

    /// A full pass: held txs the order store knows are marked Ordered, then [`collect`].
    ///
    /// [`collect`]: CityWorkingSet::collect
    pub(crate) async fn pass(&self, order: Option<&Arc<OrderStore>>) -> PassReport {
        if let Some(order) = order {
            let held = self.held_ids();
            if !held.is_empty() {
                let o = order.clone();
                let found = crate::runtime::run_blocking("working set: ordered?", move || {
                    held.into_iter()
                        .filter(|id| matches!(o.ordering(id), Ok(Some(_))))
                        .collect::<Vec<_>>()
                })
                .await;
                match found {
                    Ok(ids) => self.mark_ordered(&ids),
                    Err(e) => tracing::warn!(error = %e, "working set: order store not read"),
                }
            }
        }
        self.collect()
    }
}

/// The running garbage collector of a working set. Drop does not stop it: call
/// [`WorkingSetGc::shutdown`] (or [`WorkingSetGc::kill`]).
#[derive(Debug)]
pub(crate) struct WorkingSetGc {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkingSetGc {
    /// Runs a pass of `ws` every `interval` until stopped.
    pub(crate) fn spawn(
        ws: Arc<CityWorkingSet>,
        order: Option<Arc<OrderStore>>,
        interval: Duration,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once; the first pass is one interval in.
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = ticker.tick() => {
                        let r = ws.pass(order.as_ref()).await;
                        if !r.expired.is_empty() || r.ordered > 0 {
                            tracing::debug!(expired = r.expired.len(), ordered = r.ordered,
                                kept = r.kept, "working set collected");
                        }
                    }
                }
            }
        });
        WorkingSetGc { stop, task }
    }

    /// Stops after the pass in progress (if any) and waits for the task.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "working set collector panicked");
        }
    }

    /// Stops at once.
    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::gated::GatedTransport;
    use crate::city::pipeline::PipelineConfig;
    use crate::city::test_utils::StaticDirectory;
    use crate::city::test_utils::until;
    use crate::city::{CityConfig, CityParts, StorageParts, committee::CommitteeParts};
    use dag_core::{AccountId, CityId, ManualClock, NodeInfo, Position, PositionMethod, Tx};
    use pqc::Keypair;
    use rpc::{CityApi, RejectCode, TxState};

    fn signed(kp: &Keypair, nonce: u64) -> dag_core::SignedTx {
        let tx = Tx::fresh(
            kp.account_id(),
            AccountId::from_bytes([9; 32]),
            10,
            nonce,
            1_767_225_600_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        );
        pqc::sign_tx(tx, kp)
    }

    /// Polls `cond` (no clock involved beyond a generous deadline).

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_fresh_txs_leave_the_running_nodes_working_set_while_held_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let (gate, open) = watch::channel(true);
        let transport = Arc::new(GatedTransport::new(open));
        let nodes: Vec<NodeInfo> = (0..6)
            .map(|i| {
                transport
                    .inner
                    .add_node(&format!("zone-{}", i % 3))
                    .unwrap()
            })
            .collect();
        // A committee of four of which only this node runs: nothing is ever ordered, so
        // Held txs must stay (Held, not yet Ordered).
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let committee = dag_core::consensus::Committee::equal(
            keys.iter()
                .map(|k| dag_core::Signer::public_key(k).to_vec())
                .collect(),
        )
        .unwrap();
        let addresses = keys
            .iter()
            .map(|k| (k.node_id(), "127.0.0.1:1".to_string()))
            .collect();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let parts = CityParts {
            storage: Some(StorageParts {
                transport: transport.clone(),
                directory: Arc::new(StaticDirectory::new(nodes)),
                config: PipelineConfig {
                    call_timeout: Duration::from_secs(600),
                    ..PipelineConfig::default()
                },
            }),
            committee: Some(CommitteeParts {
                committee: genesis::CityCommittee {
                    city_id: "JP-13".into(),
                    city: genesis::city_hash("JP-13"),
                    committee,
                    addresses,
                },
                continent: None,
                consensus: None,
                accounts: Default::default(),
                dpos: dpos::DposConfig::default(),
                cities: Default::default(),
                missed_rounds: Default::default(),
                standby: false,
            }),
            working_set: WorkingSetConfig {
                gc_interval: Duration::from_millis(20),
                ..WorkingSetConfig::default()
            },
            clock: Some(clock.clone()),
            ..CityParts::default()
        };
        let cfg = CityConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: tmp.path().to_path_buf(),
            verify_threads: 2,
            archive: false,
            // Plaintext links, chosen explicitly (the default is TLS).
            links: rpc::tls::LinkSecurity::Insecure,
            ..CityConfig::default()
        };
        let city = crate::city::start_city_with(&cfg, &keys[0], parts)
            .await
            .unwrap();
        let node = city.node().clone();
        let ws = node.working_set().unwrap().clone();
        let alice = Keypair::generate();

        // Three fresh txs held while the light nodes answer.
        let mut held = Vec::new();
        for n in 0..3 {
            let s = node.submit(signed(&alice, n)).await.unwrap();
            assert_eq!(s.state, TxState::Held);
            held.push(s.tx_id);
        }
        // Then the light nodes stall: two more wait for their micro-batch.
        gate.send(false).unwrap();
        let waiting: Vec<_> = (3..5)
            .map(|n| {
                let (node, tx) = (node.clone(), signed(&alice, n));
                let id = tx.id();
                (id, tokio::spawn(async move { node.submit(tx).await }))
            })
            .collect();
        until("two pending txs", || {
            ws.counts().get(&(TxKind::FreshTx, WorkState::Pending)) == Some(&2)
        })
        .await;

        // At exactly the TTL nothing expires, however many passes run.
        clock.advance(60_000);
        let p = ws.passes();
        until("three more passes", || ws.passes() >= p + 3).await;
        assert_eq!(
            ws.counts().get(&(TxKind::FreshTx, WorkState::Pending)),
            Some(&2)
        );
        // One millisecond later the pending ones expire; the held ones stay.
        clock.advance(1);
        until("the pending txs expire", || {
            !ws.counts()
                .contains_key(&(TxKind::FreshTx, WorkState::Pending))
        })
        .await;
        for (id, task) in waiting {
            let r = task.await.unwrap().unwrap_err();
            assert_eq!(r.code, RejectCode::Overloaded);
            assert!(r.message.contains("EXPIRED"), "{}", r.message);
            assert_eq!(ws.state(&id), None);
            assert!(node.store().get(&id).unwrap().is_none(), "withdrawn");
        }
        // Held txs outlive any TTL while the committee has not ordered them.
        clock.advance(24 * 3600 * 1000);
        let p = ws.passes();
        until("three more passes", || ws.passes() >= p + 3).await;
        for id in &held {
            assert_eq!(ws.state(id), Some(WorkState::Held));
        }
        assert_eq!(ws.len(), 3);
        // The collector stops with the role.
        drop(gate);
        city.shutdown().await.unwrap();
    }

    fn id(n: u8) -> TxId {
        TxId::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn ordered_txs_leave_and_without_a_committee_held_is_final() {
        let clock = Arc::new(ManualClock::new(0));
        let ws = CityWorkingSet::new(&WorkingSetConfig::default(), clock.clone(), true);
        let _e = ws.admitted(id(1), TxKind::FreshTx);
        let _e = ws.admitted(id(2), TxKind::FreshTx);
        ws.held(id(1), TxKind::FreshTx);
        ws.held(id(2), TxKind::FreshTx);
        ws.mark_ordered(&[id(1)]);
        let r = ws.collect();
        assert_eq!((r.ordered, r.kept), (1, 1));
        assert_eq!(ws.state(&id(2)), Some(WorkState::Held));

        let solo = CityWorkingSet::new(&WorkingSetConfig::default(), clock.clone(), false);
        let _e = solo.admitted(id(3), TxKind::FreshTx);
        solo.held(id(3), TxKind::FreshTx);
        assert!(
            solo.is_empty(),
            "nothing will order it: its work here ended at Held"
        );
        // Withdrawn admissions leave; a full set refuses more.
        let small = CityWorkingSet::new(
            &WorkingSetConfig {
                capacity: 1,
                ..WorkingSetConfig::default()
            },
            clock.clone(),
            true,
        );
        let _e = small.admitted(id(4), TxKind::FreshTx);
        assert!(small.is_full());
        small.withdrawn(&id(4));
        assert!(!small.is_full());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_admission_is_told_and_a_held_one_is_not() {
        let clock = Arc::new(ManualClock::new(0));
        let ws = CityWorkingSet::new(&WorkingSetConfig::default(), clock.clone(), true);
        let mut a = ws.admitted(id(1), TxKind::RepairRequest);
        let mut b = ws.admitted(id(2), TxKind::RepairRequest);
        ws.held(id(2), TxKind::RepairRequest);
        clock.advance(15_001);
        let r = ws.collect();
        assert_eq!(r.expired, vec![(id(1), TxKind::RepairRequest)]);
        tokio::time::timeout(Duration::from_secs(10), a.expired())
            .await
            .expect("told");
        let told = tokio::time::timeout(Duration::from_millis(50), b.expired()).await;
        assert!(told.is_err(), "a held tx is never told it expired");
    }
}
