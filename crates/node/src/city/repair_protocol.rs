//! Repair requests from DApps: each request runs in the background through the tiers,
//! fastest first — local store → light nodes (any k shards; missing shards re-placed) →
//! archive → another representative — under one deadline. What a tier returns is used
//! only if its signature verifies and it hashes to the requested id; a tier answering
//! something else is recorded as a bad answer and the next tier is tried. Every step is an
//! event on the bus; each tier's latency goes to metrics. A request no tier can serve ends
//! `failed` with the reason of every tier, never later than its deadline.

use super::events::EventBus;
use async_trait::async_trait;
use dag_core::{SignedTx, TxId};
use gateway::{EventKind, RepairRefused, RepairState, RepairTicket, TierLatency};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a tier found.
#[derive(Debug, Clone)]
pub struct TierAnswer {
    /// The signed tx (checked by the service before use).
    pub tx: SignedTx,
    /// Shards re-created and placed on other light nodes while serving.
    pub shards_rebuilt: u32,
}

/// One place a tx can be restored from.
#[async_trait]
pub trait RepairTier: Send + Sync + 'static {
    /// Name in events and metrics (`local_store`, `light_nodes`, `archive`, `peers`).
    fn name(&self) -> &'static str;
    /// The tx, `Ok(None)` when this tier does not have it, `Err` with why it failed.
    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String>;
}

/// Settings of the repair service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairConfig {
    /// Whole-request deadline.
    pub deadline: Duration,
    /// Requests running at once (beyond: `Busy`).
    pub max_running: usize,
    /// Finished requests remembered for `GET /v1/repair_requests/{id}`.
    pub remembered: usize,
    /// Latency samples kept per tier.
    pub samples: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            deadline: Duration::from_secs(5),
            max_running: 64,
            remembered: 1024,
            samples: 4096,
        }
    }
}

/// The repair service of one city node.
pub struct RepairService {
    cfg: RepairConfig,
    tiers: Vec<Arc<dyn RepairTier>>,
    events: Arc<EventBus>,
    next: AtomicU64,
    running: AtomicUsize,
    tickets: Mutex<(BTreeMap<u64, RepairTicket>, VecDeque<u64>)>,
    latencies: Mutex<BTreeMap<&'static str, VecDeque<f64>>>,
}

impl std::fmt::Debug for RepairService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairService")
            .field(
                "tiers",
                &self.tiers.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Checks that `tx` is the requested tx with a valid signature.
fn check(id: TxId, tx: SignedTx) -> Result<SignedTx, String> {
    match tx.clone().verify_with_id(id, &pqc::MlDsa87) {
        Ok(_) if tx.id() == id => Ok(tx),
        Ok(_) => Err(format!("answered tx {} instead", tx.id())),
        Err(e) => Err(format!("answer fails verification: {e}")),
    }
}

impl RepairService {
    /// A service over `tiers` (tried in the given order), publishing on `events`.
    pub fn new(cfg: RepairConfig, tiers: Vec<Arc<dyn RepairTier>>, events: Arc<EventBus>) -> Self {
        RepairService {
            cfg,
            tiers,
            events,
            next: AtomicU64::new(1),
            running: AtomicUsize::new(0),
            tickets: Mutex::new((BTreeMap::new(), VecDeque::new())),
            latencies: Mutex::new(BTreeMap::new()),
        }
    }

    fn set(&self, t: RepairTicket) {
        let mut g = self.tickets.lock();
        let (map, order) = &mut *g;
        if !map.contains_key(&t.request_id) {
            order.push_back(t.request_id);
            while order.len() > self.cfg.remembered.max(1) {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        map.insert(t.request_id, t);
    }

    /// Where request `n` stands, while remembered.
    pub fn status(&self, n: u64) -> Option<RepairTicket> {
        self.tickets.lock().0.get(&n).cloned()
    }

    fn record(&self, tier: &'static str, d: Duration) {
        metrics::histogram!("citychain_repair_tier_seconds", "tier" => tier)
            .record(d.as_secs_f64());
        let mut g = self.latencies.lock();
        let v = g.entry(tier).or_default();
        if v.len() >= self.cfg.samples.max(1) {
            v.pop_front();
        }
        v.push_back(d.as_secs_f64());
    }

    /// p50 / p99 per tier over the kept samples.
    pub fn latencies(&self) -> Vec<TierLatency> {
        self.latencies
            .lock()
            .iter()
            .map(|(tier, v)| {
                let mut s: Vec<f64> = v.iter().copied().collect();
                s.sort_by(f64::total_cmp);
                let q = |p: f64| {
                    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                TierLatency {
                    tier: (*tier).to_string(),
                    count: s.len() as u64,
                    p50_seconds: q(0.5),
                    p99_seconds: q(0.99),
                }
            })
            .collect()
    }

    /// Starts a repair of `id` in the background; the caller has checked the tx is known.
    pub fn start(self: &Arc<Self>, id: TxId) -> Result<RepairTicket, RepairRefused> {
        if self.running.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_running {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(RepairRefused::Busy(self.cfg.max_running));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ticket = RepairTicket {
            request_id: n,
            tx_id: id,
            state: RepairState::Running,
        };
        self.set(ticket.clone());
        self.events.publish(
            EventKind::RepairRequested,
            id,
            serde_json::json!({ "request": n, "deadline_ms": self.cfg.deadline.as_millis() as u64 }),
        );
        metrics::counter!("citychain_repair_requests_total").increment(1);
        let me = self.clone();
        tokio::spawn(async move {
            let state = match tokio::time::timeout(me.cfg.deadline, me.run(n, id)).await {
                Ok(s) => s,
                Err(_) => RepairState::Failed {
                    reason: format!(
                        "deadline of {} ms passed before any tier served the tx",
                        me.cfg.deadline.as_millis()
                    ),
                },
            };
            me.finish(n, id, state);
            me.running.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(ticket)
    }

    /// Runs one request to completion (used by [`RepairService::start`]; tests call it to
    /// wait for the outcome).
    async fn run(&self, n: u64, id: TxId) -> RepairState {
        let mut reasons = Vec::new();
        for tier in &self.tiers {
            let t0 = Instant::now();
            let got = tier.fetch(id).await;
            self.record(tier.name(), t0.elapsed());
            match got {
                Ok(Some(a)) => match check(id, a.tx) {
                    Ok(_) => {
                        self.events.publish(
                            EventKind::RepairAcknowledged,
                            id,
                            serde_json::json!({ "request": n, "tier": tier.name(),
                                "seconds": t0.elapsed().as_secs_f64() }),
                        );
                        return RepairState::Completed {
                            tier: tier.name().to_string(),
                            shards_rebuilt: a.shards_rebuilt,
                        };
                    }
                    Err(why) => {
                        metrics::counter!("citychain_repair_bad_answers_total", "tier" => tier.name())
                            .increment(1);
                        tracing::warn!(tx = %id, tier = tier.name(), %why, "repair answer not used");
                        reasons.push(format!("{}: {why}", tier.name()));
                    }
                },
                Ok(None) => reasons.push(format!("{}: not there", tier.name())),
                Err(e) => reasons.push(format!("{}: {e}", tier.name())),
            }
        }
        RepairState::Failed {
            reason: if reasons.is_empty() {
                "no repair tier is configured".into()
            } else {
                reasons.join("; ")
            },
        }
    }

    fn finish(&self, n: u64, id: TxId, state: RepairState) {
        let (kind, detail, outcome) = match &state {
            RepairState::Completed {
                tier,
                shards_rebuilt,
            } => (
                EventKind::RepairCompleted,
                serde_json::json!({ "request": n, "tier": tier, "shards_rebuilt": shards_rebuilt }),
                "completed",
            ),
            RepairState::Failed { reason } => (
                EventKind::RepairFailed,
                serde_json::json!({ "request": n, "reason": reason }),
                "failed",
            ),
            RepairState::Running => return,
        };
        metrics::counter!("citychain_repair_outcomes_total", "outcome" => outcome).increment(1);
        self.set(RepairTicket {
            request_id: n,
            tx_id: id,
            state,
        });
        self.events.publish(kind, id, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::{CityId, Position, PositionMethod, Tx};

    fn signed(nonce: u64) -> SignedTx {
        let kp = pqc::Keypair::generate();
        let tx = Tx::fresh(
            kp.account_id(),
            dag_core::AccountId::from_bytes([2; 32]),
            1,
            nonce,
            1,
            CityId::new("JP-13").unwrap(),
            Position::default(),
            PositionMethod::Gps,
        );
        pqc::sign_tx(tx, &kp)
    }

    struct Fixed(&'static str, Option<SignedTx>);
    #[async_trait]
    impl RepairTier for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn fetch(&self, _id: TxId) -> Result<Option<TierAnswer>, String> {
            Ok(self.1.clone().map(|tx| TierAnswer {
                tx,
                shards_rebuilt: 0,
            }))
        }
    }

    struct Never;
    #[async_trait]
    impl RepairTier for Never {
        fn name(&self) -> &'static str {
            "peers"
        }
        async fn fetch(&self, _id: TxId) -> Result<Option<TierAnswer>, String> {
            futures::future::pending().await
        }
    }

    async fn outcome(svc: &Arc<RepairService>, id: TxId) -> Vec<GatewayEventKind> {
        let mut sub = svc.events.subscribe(Some(0));
        let mut kinds: Vec<_> = sub.backlog.iter().map(|e| e.kind).collect();
        while !matches!(
            kinds.last(),
            Some(EventKind::RepairCompleted | EventKind::RepairFailed)
        ) {
            let e = sub.live.recv().await.unwrap();
            if e.tx_id == id {
                kinds.push(e.kind);
            }
        }
        kinds
    }
    type GatewayEventKind = EventKind;

    #[tokio::test]
    async fn a_wrong_answer_is_not_used_and_the_next_tier_serves() {
        let good = signed(1);
        let id = good.id();
        let mut forged = good.clone();
        forged.tx.amount += 1; // signature no longer matches, id differs
        let svc = Arc::new(RepairService::new(
            RepairConfig::default(),
            vec![
                Arc::new(Fixed("local_store", None)),
                Arc::new(Fixed("light_nodes", Some(forged))),
                Arc::new(Fixed("archive", Some(signed(2)))), // another tx entirely
                Arc::new(Fixed("peers", Some(good))),
            ],
            Arc::new(EventBus::default()),
        ));
        let t = svc.start(id).unwrap();
        let kinds = outcome(&svc, id).await;
        assert_eq!(
            kinds,
            vec![
                EventKind::RepairRequested,
                EventKind::RepairAcknowledged,
                EventKind::RepairCompleted
            ]
        );
        let done = svc.status(t.request_id).unwrap();
        assert_eq!(
            done.state,
            RepairState::Completed {
                tier: "peers".into(),
                shards_rebuilt: 0
            }
        );
        let lat = svc.latencies();
        assert_eq!(lat.len(), 4, "every tier tried was timed: {lat:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_repair_nobody_serves_fails_at_its_deadline() {
        let id = signed(3).id();
        let svc = Arc::new(RepairService::new(
            RepairConfig {
                deadline: Duration::from_millis(800),
                ..RepairConfig::default()
            },
            vec![Arc::new(Fixed("local_store", None)), Arc::new(Never)],
            Arc::new(EventBus::default()),
        ));
        let t0 = tokio::time::Instant::now();
        let t = svc.start(id).unwrap();
        let kinds = outcome(&svc, id).await;
        assert_eq!(kinds.last(), Some(&EventKind::RepairFailed));
        assert_eq!(t0.elapsed(), Duration::from_millis(800));
        let RepairState::Failed { reason } = svc.status(t.request_id).unwrap().state else {
            panic!("not failed");
        };
        assert!(reason.contains("deadline"), "{reason}");
    }

    #[tokio::test]
    async fn every_tier_missing_fails_with_each_reason_and_busy_is_refused() {
        let id = signed(4).id();
        let svc = Arc::new(RepairService::new(
            RepairConfig {
                max_running: 1,
                ..RepairConfig::default()
            },
            vec![
                Arc::new(Fixed("local_store", None)),
                Arc::new(Fixed("archive", None)),
            ],
            Arc::new(EventBus::default()),
        ));
        let t = svc.start(id).unwrap();
        assert!(matches!(svc.start(id), Err(RepairRefused::Busy(1))));
        let kinds = outcome(&svc, id).await;
        assert_eq!(kinds.last(), Some(&EventKind::RepairFailed));
        let RepairState::Failed { reason } = svc.status(t.request_id).unwrap().state else {
            panic!("not failed");
        };
        assert_eq!(reason, "local_store: not there; archive: not there");
    }
}
