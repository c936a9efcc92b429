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

/// Checks one holder's REPAIR_ACK before its shard is used: the ack is a REPAIR_ACK signed
/// by the holder the manifest names for `index`, answering `request`; the shard decodes, is
/// shard `index` of this stripe and hashes to the manifest's hash (and to the ack's); the
/// receipt is the holder's, valid, for this shard. Anything else is a wrong answer.
pub(crate) fn check_ack(
    layout: &storage::StripeLayout,
    index: u16,
    holder: dag_core::NodeId,
    request: TxId,
    a: rpc::RepairAnswer,
) -> Result<storage::Shard, String> {
    let ack = a
        .ack
        .verify(&pqc::MlDsa87)
        .map_err(|e| format!("ack signature: {e}"))?;
    if ack.tx().kind != dag_core::TxKind::RepairAck {
        return Err(format!("ack is a {} tx", ack.tx().kind));
    }
    if ack.tx().sender.as_bytes() != holder.as_bytes() {
        return Err(format!(
            "ack signed by {}, not by holder {holder}",
            ack.tx().sender
        ));
    }
    let p = rpc::RepairAckPayload::decode(&ack.tx().payload).map_err(|e| e.to_string())?;
    if p.request != request {
        return Err(format!("ack answers request {}, not {request}", p.request));
    }
    let shard = storage::Shard::from_bytes(&a.shard).map_err(|e| format!("shard: {e}"))?;
    if shard.stripe_id() != layout.stripe_id || shard.index() != index {
        return Err(format!(
            "sent shard {} of stripe {}, asked for {index} of {}",
            shard.index(),
            shard.stripe_id(),
            layout.stripe_id
        ));
    }
    layout
        .check_shard(&shard)
        .map_err(|e| format!("shard fails the manifest: {e}"))?;
    if p.shard_hash != shard.hash() {
        return Err("ack names another shard hash".into());
    }
    let r = storage::verify_receipt(layout, a.receipt, &pqc::MlDsa87)
        .map_err(|e| format!("receipt: {e}"))?;
    if r.receipt().holder != holder || r.receipt().shard_index != index {
        return Err("receipt is not the holder's for this shard".into());
    }
    Ok(shard)
}

/// The light-node tier over the repair protocol: a REPAIR_REQUEST tx signed by this
/// representative to every live holder of the tx's stripe (from the manifest), their
/// REPAIR_ACKs checked (signature, holder, request, shard hash, receipt), the stripe decoded from the first k good shards and
/// the tx taken from it; then the shards whose holders did not answer are re-placed.
pub struct LightRepairTier {
    node: std::sync::Weak<super::admission::CityNode>,
    key: pqc::Keypair,
    city: dag_core::CityId,
    position: dag_core::Position,
    call_timeout: Duration,
}

impl LightRepairTier {
    /// The tier of `node`, signing requests with `key` (the representative's key) as a
    /// member of `city` at `position`.
    pub fn new(
        node: std::sync::Weak<super::admission::CityNode>,
        key: pqc::Keypair,
        city: dag_core::CityId,
        position: dag_core::Position,
        call_timeout: Duration,
    ) -> Self {
        LightRepairTier {
            node,
            key,
            city,
            position,
            call_timeout,
        }
    }

    fn request(
        &self,
        payload: rpc::RepairRequestPayload,
        to: dag_core::NodeId,
    ) -> dag_core::SignedTx {
        let now = crate::runtime::now_ms();
        let tx = dag_core::Tx {
            kind: dag_core::TxKind::RepairRequest,
            sender: self.key.account_id(),
            receiver: dag_core::AccountId::from_bytes(*to.as_bytes()),
            amount: 0,
            nonce: now.saturating_mul(64) + u64::from(payload.index),
            timestamp_ms: now,
            city_id: self.city.clone(),
            position: self.position,
            method: dag_core::PositionMethod::Gps,
            read_set: Vec::new(),
            write_set: Vec::new(),
            payload: payload.encode(),
        };
        pqc::sign_tx(tx, &self.key)
    }
}

#[async_trait]
impl RepairTier for LightRepairTier {
    fn name(&self) -> &'static str {
        "light_nodes"
    }

    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String> {
        use futures::StreamExt as _;
        let node = self.node.upgrade().ok_or("the node is stopping")?;
        let Some(p) = node.pipeline().cloned() else {
            return Ok(None);
        };
        let Some(held) = p.held(&id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let (manifest, _) = p
            .manifests()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(m, _)| m.stripe_id() == held.stripe_id)
            .ok_or_else(|| format!("no manifest for stripe {}", held.stripe_id))?;
        let layout = manifest.layout.clone();
        let live: BTreeMap<dag_core::NodeId, String> = p
            .live_lights()
            .into_iter()
            .map(|n| (n.node_id, n.grpc_addr))
            .collect();
        let mut asks = futures::stream::FuturesUnordered::new();
        let mut not_live = 0;
        for (i, h) in manifest.holders.iter().enumerate() {
            let (Some(h), Ok(index)) = (*h, u16::try_from(i)) else {
                continue;
            };
            let Some(addr) = live.get(&h).cloned() else {
                not_live += 1;
                continue;
            };
            let req = self.request(
                rpc::RepairRequestPayload {
                    stripe: held.stripe_id,
                    index,
                    tx: id,
                },
                h,
            );
            let timeout = self.call_timeout;
            asks.push(async move {
                let rid = req.id();
                let got = match rpc::RepairClient::connect(&addr, timeout).await {
                    Ok(c) => c.request(&req).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (index, h, rid, got)
            });
        }
        let k = usize::from(layout.k);
        let mut shards = Vec::new();
        let mut problems = Vec::new();
        while let Some((index, holder, rid, got)) = asks.next().await {
            let checked = got.and_then(|a| check_ack(&layout, index, holder, rid, a));
            match checked {
                Ok(s) => {
                    node.events().publish(
                        EventKind::RepairAcknowledged,
                        id,
                        serde_json::json!({ "tier": "light_nodes", "holder": holder.to_hex(),
                            "index": index }),
                    );
                    shards.push(s);
                    if shards.len() >= k {
                        break;
                    }
                }
                Err(why) => {
                    metrics::counter!("citychain_repair_bad_answers_total", "tier" => "light_nodes")
                        .increment(1);
                    tracing::warn!(tx = %id, %holder, index, %why, "REPAIR_ACK not used");
                    problems.push(format!("shard {index} from {}: {why}", holder.short()));
                }
            }
        }
        if shards.len() < k {
            return Err(format!(
                "{} good shards of the {k} needed ({not_live} holders not live; {})",
                shards.len(),
                problems.join("; ")
            ));
        }
        let stripe = layout.decode(&shards).map_err(|e| e.to_string())?;
        let tx = storage::split_micro_batch(&stripe)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|b| dag_core::SignedTx::decode(b).ok())
            .find(|t| t.id() == id)
            .ok_or_else(|| format!("stripe {} does not carry tx {id}", layout.stripe_id))?;
        // Re-place the shards whose holders are gone or silent, so the stripe is whole again.
        let rebuilt = match p.repair_stripe_of(id).await {
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!(tx = %id, error = %e, "repair: re-placing shards failed");
                0
            }
        };
        Ok(Some(TierAnswer {
            tx,
            shards_rebuilt: rebuilt,
        }))
    }
}

#[cfg(test)]
mod ack_tests {
    use super::*;
    use dag_core::{CityId, Position, PositionMethod, Tx, TxKind};
    use storage::{ErasureConfig, MicroBatch, StripeLayout};

    struct Fixture {
        layout: StripeLayout,
        shards: Vec<storage::Shard>,
        holder: pqc::Keypair,
        request: TxId,
    }

    fn fixture() -> Fixture {
        let user = pqc::Keypair::generate();
        let tx = pqc::sign_tx(
            Tx::fresh(
                user.account_id(),
                dag_core::AccountId::from_bytes([3; 32]),
                1,
                1,
                1,
                CityId::new("JP-13").unwrap(),
                Position::default(),
                PositionMethod::Gps,
            ),
            &user,
        );
        let (batch, _) = MicroBatch::from_signed(&[tx]).unwrap();
        let shards = ErasureConfig::default().encode(&batch.stripe).unwrap();
        let layout = StripeLayout::from_shards(&shards).unwrap();
        Fixture {
            layout,
            shards,
            holder: pqc::Keypair::generate(),
            request: TxId::from_bytes([9; 32]),
        }
    }

    fn answer(
        f: &Fixture,
        signer: &pqc::Keypair,
        shard: &storage::Shard,
        request: TxId,
    ) -> rpc::RepairAnswer {
        let ack = Tx {
            kind: TxKind::RepairAck,
            sender: signer.account_id(),
            receiver: dag_core::AccountId::from_bytes([1; 32]),
            amount: 0,
            nonce: 1,
            timestamp_ms: 1,
            city_id: CityId::new("JP-13").unwrap(),
            position: Position::default(),
            method: PositionMethod::Gps,
            read_set: Vec::new(),
            write_set: Vec::new(),
            payload: rpc::RepairAckPayload {
                request,
                shard_hash: shard.hash(),
            }
            .encode(),
        };
        let _ = f;
        rpc::RepairAnswer {
            ack: pqc::sign_tx(ack, signer),
            shard: shard.to_bytes(),
            receipt: storage::issue_receipt(&shard.header, signer, 1),
        }
    }

    #[test]
    fn a_good_ack_is_used_and_every_wrong_one_is_refused() {
        let f = fixture();
        let h = f.holder.node_id();
        let good = answer(&f, &f.holder, &f.shards[2], f.request);
        assert_eq!(
            check_ack(&f.layout, 2, h, f.request, good.clone())
                .unwrap()
                .index(),
            2
        );
        // A wrong shard: another index than asked.
        let other = answer(&f, &f.holder, &f.shards[3], f.request);
        assert!(
            check_ack(&f.layout, 2, h, f.request, other)
                .unwrap_err()
                .contains("asked for 2")
        );
        // A corrupted shard: same header, one data byte flipped (fails its hash).
        let mut bad = f.shards[2].clone();
        bad.data[0] ^= 1;
        let mut corrupt = good.clone();
        corrupt.shard = bad.to_bytes();
        assert!(check_ack(&f.layout, 2, h, f.request, corrupt).is_err());
        // Signed by someone else than the manifest's holder.
        let stranger = pqc::Keypair::generate();
        let forged = answer(&f, &stranger, &f.shards[2], f.request);
        assert!(
            check_ack(&f.layout, 2, h, f.request, forged)
                .unwrap_err()
                .contains("not by holder")
        );
        // Answering another request.
        let stale = answer(&f, &f.holder, &f.shards[2], TxId::from_bytes([8; 32]));
        assert!(
            check_ack(&f.layout, 2, h, f.request, stale)
                .unwrap_err()
                .contains("answers request")
        );
        // A receipt from another holder.
        let mut borrowed = good.clone();
        borrowed.receipt = storage::issue_receipt(&f.shards[2].header, &stranger, 1);
        assert!(
            check_ack(&f.layout, 2, h, f.request, borrowed)
                .unwrap_err()
                .contains("receipt")
        );
        // A tampered ack signature.
        let mut tampered = good;
        tampered.ack.tx.amount = 5;
        assert!(
            check_ack(&f.layout, 2, h, f.request, tampered)
                .unwrap_err()
                .contains("signature")
        );
    }
}
