//! Scheduling in the city role by tx kind: the priority gate in front of the verify pool
//! (CHECKPOINT > REPAIR_ACK > REPAIR_REQ > POH_ACK > POH_REQUEST > FRESH_TX > SYSTEM_TX, the
//! urgent lane first, oversize txs last within their class), and the dynamic batch interval
//! that sets when a representative proposes.

use dag_core::{BatchInterval, TxKind};
use flagging::Flag;
use parking_lot::Mutex;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Duration;
use tokio::sync::oneshot;

/// Which lane a tx waits in: the flag's urgency, or the oversize path.
pub(crate) fn lane(flag: &Flag) -> &'static str {
    if flag.oversize {
        "oversize"
    } else if flag.is_urgent() {
        "urgent"
    } else {
        "normal"
    }
}

/// The flag of a tx when no flagger is configured: its kind's class, normal lane.
pub(crate) fn kind_flag(kind: TxKind) -> Flag {
    Flag {
        kind,
        class: kind.processing_rank(),
        urgency: flagging::Urgency::Normal,
        region: flagging::RegionClass::Unknown,
        oversize: false,
    }
}

struct Waiter {
    key: (u8, u8, bool),
    seq: u64,
    grant: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// The max-heap pops the smallest queue key first, then the oldest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct GateState {
    free: usize,
    seq: u64,
    waiting: BinaryHeap<Waiter>,
}

/// A bounded set of slots (one per verification in flight) handed out by flag priority:
/// when txs compete for the verify pool, the most important kind is served first, and among
/// equals the one that came first.
pub(crate) struct PriorityGate {
    state: Mutex<GateState>,
}

impl std::fmt::Debug for PriorityGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("PriorityGate")
            .field("free", &s.free)
            .field("waiting", &s.waiting.len())
            .finish()
    }
}

/// A slot of a [`PriorityGate`]; dropping it hands the slot to the best waiter.
#[derive(Debug)]
pub(crate) struct GateSlot<'a> {
    gate: &'a PriorityGate,
}

impl Drop for GateSlot<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// Waiting for a slot; if dropped after a slot was granted, gives it back.
struct Waiting<'a> {
    gate: &'a PriorityGate,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl PriorityGate {
    /// A gate with `slots` slots (at least 1).
    pub(crate) fn new(slots: usize) -> Self {
        PriorityGate {
            state: Mutex::new(GateState {
                free: slots.max(1),
                seq: 0,
                waiting: BinaryHeap::new(),
            }),
        }
    }

    /// Txs waiting for a slot.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().waiting.len()
    }

    /// Waits for a slot in the order of `flag` (urgent lane, then class, oversize last),
    /// and records the decision in metrics.
    pub(crate) async fn acquire(&self, flag: &Flag) -> GateSlot<'_> {
        let lane = lane(flag);
        let rx = {
            let mut s = self.state.lock();
            if s.free > 0 && s.waiting.is_empty() {
                s.free -= 1;
                None
            } else {
                let (grant, rx) = oneshot::channel();
                s.seq += 1;
                let seq = s.seq;
                s.waiting.push(Waiter {
                    key: flag.queue_key(),
                    seq,
                    grant,
                });
                metrics::gauge!("citychain_verify_queue_waiting").set(s.waiting.len() as f64);
                Some(rx)
            }
        };
        let queued = rx.is_some();
        if let Some(rx) = rx {
            let mut waiting = Waiting {
                gate: self,
                rx: Some(rx),
            };
            let granted = match waiting.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            // The slot is ours now (or the gate was dropped, which cannot happen while we
            // borrow it): disarm the give-back.
            waiting.rx = None;
            debug_assert!(granted);
        }
        metrics::counter!(
            "citychain_verify_granted_total",
            "kind" => flag.kind.name(),
            "lane" => lane,
            "queued" => if queued { "true" } else { "false" }
        )
        .increment(1);
        GateSlot { gate: self }
    }

    fn release(&self) {
        let mut s = self.state.lock();
        while let Some(w) = s.waiting.pop() {
            if w.grant.send(()).is_ok() {
                metrics::gauge!("citychain_verify_queue_waiting").set(s.waiting.len() as f64);
                return;
            }
        }
        s.free += 1;
        metrics::gauge!("citychain_verify_queue_waiting").set(0.0);
    }
}

/// Registers the HELP text of `citychain_batch_interval_seconds`.
pub(crate) fn describe_batch_interval() {
    metrics::describe_gauge!(
        "citychain_batch_interval_seconds",
        metrics::Unit::Seconds,
        "Interval between this representative's DAG proposals: dynamic (start 1.0 s; more than 50 pending -> 0.5 s; none -> +0.5 s up to 5 s; else -0.1 s down to 0.5 s) unless configured fixed"
    );
}

/// The dynamic batch interval as a representative uses it: after each proposal, the next
/// interval from how much is pending; exported as `citychain_batch_interval_seconds`.
#[derive(Debug, Clone)]
pub(crate) struct BatchClock {
    rule: BatchInterval,
    current: Duration,
}

impl BatchClock {
    /// Starts at the rule's first interval (1.0 s by default).
    pub(crate) fn new(rule: BatchInterval) -> Self {
        let current = rule.start();
        describe_batch_interval();
        metrics::gauge!("citychain_batch_interval_seconds").set(current.as_secs_f64());
        BatchClock { rule, current }
    }

    /// The interval in force.
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// A batch was proposed with `pending` items still waiting: moves to the next interval.
    pub(crate) fn proposed(&mut self, pending: usize) -> Duration {
        self.current = self.rule.next(self.current, pending);
        metrics::gauge!("citychain_batch_interval_seconds").set(self.current.as_secs_f64());
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn flag(kind: TxKind, urgent: bool) -> Flag {
        Flag {
            urgency: if urgent {
                flagging::Urgency::Urgent
            } else {
                flagging::Urgency::Normal
            },
            ..kind_flag(kind)
        }
    }

    /// Spins the current-thread runtime until `cond` holds (no clock involved).
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn repair_ack_overtakes_queued_fresh_txs() {
        let gate = Arc::new(PriorityGate::new(1));
        let served = Arc::new(Mutex::new(Vec::new()));
        let busy = gate.acquire(&flag(TxKind::FreshTx, false)).await;
        let mut tasks = Vec::new();
        let spawn = |label: String, f: Flag| {
            let (gate, served) = (gate.clone(), served.clone());
            tokio::spawn(async move {
                let _slot = gate.acquire(&f).await;
                served.lock().push(label);
            })
        };
        for i in 0..100 {
            tasks.push(spawn(format!("fresh{i}"), flag(TxKind::FreshTx, false)));
        }
        until(|| gate.waiting() == 100).await;
        tasks.push(spawn("system".into(), flag(TxKind::SystemTx, false)));
        tasks.push(spawn("repair_ack".into(), flag(TxKind::RepairAck, true)));
        tasks.push(spawn("checkpoint".into(), flag(TxKind::Checkpoint, false)));
        until(|| gate.waiting() == 103).await;
        drop(busy);
        for t in tasks {
            t.await.unwrap();
        }
        let served = served.lock().clone();
        // Urgent lane first, then by class; equals in arrival order; system_tx last.
        assert_eq!(served[0], "repair_ack");
        assert_eq!(served[1], "checkpoint");
        let fresh: Vec<String> = (0..100).map(|i| format!("fresh{i}")).collect();
        assert_eq!(&served[2..102], fresh.as_slice());
        assert_eq!(served[102], "system");
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_waiter_does_not_lose_the_slot() {
        let gate = PriorityGate::new(1);
        let busy = gate.acquire(&flag(TxKind::FreshTx, false)).await;
        {
            let f = flag(TxKind::RepairAck, true);
            let fut = gate.acquire(&f);
            tokio::pin!(fut);
            assert!(futures_poll_once(fut.as_mut()).await.is_none());
            assert_eq!(gate.waiting(), 1);
        } // dropped while queued
        drop(busy);
        // The slot is free again: an acquire completes at once.
        let _s = gate.acquire(&flag(TxKind::FreshTx, false)).await;
        assert_eq!(gate.waiting(), 0);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// A running city node whose pipeline has one micro-batch slot of one tx, over light
    /// nodes behind a gate: a REPAIR_ACK that arrives behind a queue of FRESH_TX (and an
    /// oversize FRESH_TX and a SYSTEM_TX) is placed right after the batch in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repair_ack_overtakes_queued_fresh_txs_in_a_running_node() {
        use crate::city::gated::GatedTransport;
        use crate::city::pipeline::PipelineConfig;
        use crate::city::test_utils::StaticDirectory;
        use crate::city::{CityConfig, CityParts, StorageParts};
        use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx, TxId};
        use pqc::Keypair;
        use rpc::CityApi;

        let tmp = tempfile::tempdir().unwrap();
        let (gate, open) = tokio::sync::watch::channel(false);
        let transport = Arc::new(GatedTransport::new(open));
        let nodes: Vec<_> = (0..6)
            .map(|i| {
                transport
                    .inner
                    .add_node(&format!("zone-{}", i % 3))
                    .unwrap()
            })
            .collect();
        let flagger = flagging::FlaggerRegistry::with_defaults()
            .build(&flagging::FlaggingConfig::default())
            .unwrap();
        let parts = CityParts {
            storage: Some(StorageParts {
                transport: transport.clone(),
                directory: Arc::new(StaticDirectory::new(nodes)),
                config: PipelineConfig {
                    max_batch_txs: 1,
                    max_batches_in_flight: 1,
                    call_timeout: Duration::from_secs(600),
                    ..PipelineConfig::default()
                },
            }),
            flagger: Some(flagger),
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
        let city = crate::city::start_city_with(&cfg, &Keypair::generate(), parts)
            .await
            .unwrap();
        let node = city.node().clone();
        let pipeline = node.pipeline().unwrap().clone();
        let alice = Keypair::generate();
        let make = |nonce: u64, kind: TxKind, payload: usize| -> SignedTx {
            let mut tx = Tx::fresh(
                alice.account_id(),
                AccountId::from_bytes([5; 32]),
                1,
                nonce,
                1_767_225_600_000,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.6895, 139.6917).unwrap(),
                PositionMethod::Gps,
            );
            tx.kind = kind;
            tx.payload = vec![7; payload];
            pqc::sign_tx(tx, &alice)
        };
        let mut tasks = Vec::new();
        let mut submit = |tx: SignedTx| {
            let node = node.clone();
            tasks.push(tokio::spawn(async move { node.submit(tx).await }));
        };
        use crate::city::test_utils::until;
        // The first fresh tx takes the only slot and waits at the closed gate.
        let blocker = make(0, TxKind::FreshTx, 0);
        let mut labels: Vec<(TxId, String)> = vec![(blocker.id(), "blocker".into())];
        submit(blocker);
        until("the blocker in flight", || {
            node.counters().stages().get("flag.kind.fresh_tx") == Some(&1)
                && pipeline.waiting() == 0
        })
        .await;
        // Then, one by one (so their arrival order is known): a system tx, 20 fresh txs and
        // an oversize fresh tx, and last a repair ack.
        // A system tx must be a well-formed staking request to be admitted at all.
        let system = dpos::sign_system_tx(
            &dpos::SystemPayload::ClaimRewards,
            1,
            1_767_225_600_000,
            CityId::new("JP-13").unwrap(),
            &alice,
        );
        let mut queue = vec![(system, "system".to_string())];
        for i in 0..20 {
            queue.push((make(2 + i, TxKind::FreshTx, 0), format!("fresh{i}")));
        }
        queue.push((make(30, TxKind::FreshTx, 20_000), "oversize".into()));
        queue.push((make(31, TxKind::RepairAck, 0), "repair_ack".into()));
        for (n, (tx, label)) in queue.into_iter().enumerate() {
            labels.push((tx.id(), label));
            submit(tx);
            until("queued", || pipeline.waiting() == n + 1).await;
        }
        gate.send(true).unwrap();
        for t in tasks {
            let s = t.await.unwrap().unwrap();
            assert_eq!(s.state, rpc::TxState::Held);
        }
        let order = transport.stripe_order();
        let mut served: Vec<(usize, String)> = labels
            .into_iter()
            .map(|(id, label)| {
                let stripe = pipeline.held(&id).unwrap().unwrap().stripe_id;
                (order.iter().position(|s| *s == stripe).unwrap(), label)
            })
            .collect();
        served.sort();
        let served: Vec<String> = served.into_iter().map(|(_, l)| l).collect();
        let mut expected = vec!["blocker".to_string(), "repair_ack".into()];
        expected.extend((0..20).map(|i| format!("fresh{i}")));
        expected.push("oversize".into());
        expected.push("system".into());
        assert_eq!(served, expected);
        city.shutdown().await.unwrap();
    }

    #[test]
    fn oversize_goes_last_within_its_class() {
        let mut big = flag(TxKind::FreshTx, false);
        big.oversize = true;
        assert_eq!(lane(&big), "oversize");
        assert!(big.queue_key() > flag(TxKind::FreshTx, false).queue_key());
        assert!(big.queue_key() < flag(TxKind::SystemTx, false).queue_key());
        assert_eq!(lane(&flag(TxKind::RepairAck, true)), "urgent");
    }

    #[test]
    fn batch_clock_follows_the_rule() {
        let mut c = BatchClock::new(BatchInterval::default());
        assert_eq!(c.current(), Duration::from_millis(1000));
        assert_eq!(c.proposed(0), Duration::from_millis(1500));
        assert_eq!(c.proposed(51), Duration::from_millis(500));
        assert_eq!(c.proposed(3), Duration::from_millis(500));
        for _ in 0..20 {
            c.proposed(0);
        }
        assert_eq!(c.current(), Duration::from_millis(5000));
        assert_eq!(c.proposed(1), Duration::from_millis(4900));
    }
}
