//! The city's periodic storage audit: once per epoch every holder of a shard of this city's
//! stripes answers a storage challenge (`BLAKE3(nonce ‖ shard)`, fresh random nonce) on one
//! of its shards picked at random. Answers are checked against the shard rebuilt from k
//! others, counted in `citychain_storage_challenges_total{result}`, and kept as
//! [`ContributionRecord`]s in `<data_dir>/contributions.redb` for rewards.
//!
//! A keyed challenge only means something if the challenger knows the shard without asking
//! the challenged node for it: the auditor fetches k shards of the stripe from holders that
//! are **not** challenged in it when it can (checked against the manifest's hashes), rebuilds
//! the challenged shards from them, and only then sends the nonces. When fewer than k other
//! holders answer, it also fetches from challenged holders (whose own shard is then rebuilt
//! from the others' when possible); when no k good shards can be had, an answer cannot be
//! checked: it is counted `unverifiable` and recorded for nobody, while a silent holder or
//! one that says it lost the shard is recorded as failed all the same.

use super::pipeline::Pipeline;
use crate::runtime::{db_err, open_db, run_blocking};
use crate::{Error, Result};
use async_trait::async_trait;
use dag_core::{NodeId, NodeInfo, StripeId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::Rng;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rpc::{ClientError, ShardStoreClient};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use storage::{Challenge, ChallengeNonce, ChallengeProof, Shard, StripeManifest};
use tonic::transport::Endpoint;

/// epoch (u64 BE) ‖ stripe (32) ‖ shard index (u16 BE) → holder (32) ‖ result code (1).
const CONTRIBUTIONS: TableDefinition<&[u8; 42], &[u8; 33]> = TableDefinition::new("contributions");

/// The file under the city's data directory.
pub const CONTRIBUTIONS_FILE: &str = "contributions.redb";

/// Settings of the periodic audit. `Default`: on, one epoch every 10 minutes, 2 s per call.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Run the audit at all.
    pub enabled: bool,
    /// Length of an epoch in milliseconds: one challenge per holder per epoch. Epoch `e`
    /// covers the wall-clock milliseconds `[e·interval, (e+1)·interval)` since the Unix epoch,
    /// so records from different nodes and restarts line up.
    pub interval_ms: u64,
    /// Deadline of one GetShard or Challenge call.
    pub call_timeout_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            interval_ms: 600_000,
            call_timeout_ms: 2_000,
        }
    }
}

/// What a challenged holder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChallengeResult {
    /// Answered with the expected proof.
    Passed,
    /// Answered with another proof: it does not hold the shard's bytes.
    WrongProof,
    /// Said it does not hold the shard (or holds a corrupt copy).
    NotHeld,
    /// Did not answer within the deadline, or could not be reached.
    Unreachable,
    /// Listed as holder in the manifest but not live in the city's view.
    NotLive,
}

impl ChallengeResult {
    /// Every result, for metrics and tests.
    pub const ALL: [ChallengeResult; 5] = [
        ChallengeResult::Passed,
        ChallengeResult::WrongProof,
        ChallengeResult::NotHeld,
        ChallengeResult::Unreachable,
        ChallengeResult::NotLive,
    ];

    /// The `result` label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            ChallengeResult::Passed => "passed",
            ChallengeResult::WrongProof => "wrong_proof",
            ChallengeResult::NotHeld => "not_held",
            ChallengeResult::Unreachable => "unreachable",
            ChallengeResult::NotLive => "not_live",
        }
    }

    fn code(self) -> u8 {
        match self {
            ChallengeResult::Passed => 0,
            ChallengeResult::WrongProof => 1,
            ChallengeResult::NotHeld => 2,
            ChallengeResult::Unreachable => 3,
            ChallengeResult::NotLive => 4,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == c)
    }
}

/// One holder's answer to one storage challenge in one epoch: what rewards are computed
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContributionRecord {
    /// The audit epoch.
    pub epoch: u64,
    /// The challenged light node.
    pub holder: NodeId,
    /// The stripe of the challenged shard.
    pub stripe: StripeId,
    /// The shard's index in the stripe.
    pub index: u16,
    /// True when the holder proved it holds the shard.
    pub passed: bool,
    /// What happened.
    pub result: ChallengeResult,
}

impl ContributionRecord {
    fn new(epoch: u64, holder: NodeId, stripe: StripeId, index: u16, r: ChallengeResult) -> Self {
        ContributionRecord {
            epoch,
            holder,
            stripe,
            index,
            passed: r == ChallengeResult::Passed,
            result: r,
        }
    }

    fn key(&self) -> [u8; 42] {
        let mut k = [0u8; 42];
        k[..8].copy_from_slice(&self.epoch.to_be_bytes());
        k[8..40].copy_from_slice(self.stripe.as_bytes());
        k[40..].copy_from_slice(&self.index.to_be_bytes());
        k
    }

    fn value(&self) -> [u8; 33] {
        let mut v = [0u8; 33];
        v[..32].copy_from_slice(self.holder.as_bytes());
        v[32] = self.result.code();
        v
    }

    fn decode(path: &Path, k: &[u8; 42], v: &[u8; 33]) -> Result<Self> {
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&k[..8]);
        let epoch = u64::from_be_bytes(epoch);
        let mut stripe = [0u8; 32];
        stripe.copy_from_slice(&k[8..40]);
        let mut holder = [0u8; 32];
        holder.copy_from_slice(&v[..32]);
        let result = ChallengeResult::from_code(v[32]).ok_or_else(|| Error::CorruptRecord {
            path: path.to_path_buf(),
            index: epoch,
            source: dag_core::DecodeError::Invalid {
                field: "challenge result",
                reason: "unknown code",
            },
        })?;
        Ok(Self::new(
            epoch,
            NodeId::from_bytes(holder),
            StripeId::from_bytes(stripe),
            u16::from_be_bytes([k[40], k[41]]),
            result,
        ))
    }
}

/// The durable log of contribution records (redb), readable by whoever computes rewards.
#[derive(Clone)]
pub struct ContributionLog {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for ContributionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContributionLog")
            .field("path", &self.path)
            .finish()
    }
}

impl ContributionLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_db(path, |w| w.open_table(CONTRIBUTIONS).map(|_| ()))?;
        Ok(ContributionLog {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    /// Writes one epoch's records in one durable commit (a record for the same epoch,
    /// stripe and shard is replaced).
    pub fn append(&self, records: &[ContributionRecord]) -> Result<()> {
        let err = db_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(CONTRIBUTIONS).map_err(|e| err(e.into()))?;
            for r in records {
                t.insert(&r.key(), &r.value()).map_err(|e| err(e.into()))?;
            }
        }
        w.commit().map_err(|e| err(e.into()))
    }

    /// The records of epochs `from..=to`, in (epoch, stripe, index) order.
    pub fn epochs(&self, from: u64, to: u64) -> Result<Vec<ContributionRecord>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(CONTRIBUTIONS).map_err(|e| err(e.into()))?;
        let mut lo = [0u8; 42];
        lo[..8].copy_from_slice(&from.to_be_bytes());
        let mut hi = [0xFFu8; 42];
        hi[..8].copy_from_slice(&to.to_be_bytes());
        let mut out = Vec::new();
        for row in t.range::<&[u8; 42]>(&lo..=&hi).map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push(ContributionRecord::decode(
                &self.path,
                k.value(),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// Every record of `holder`, oldest epoch first (a full scan).
    pub fn of_holder(&self, holder: &NodeId) -> Result<Vec<ContributionRecord>> {
        Ok(self
            .epochs(0, u64::MAX)?
            .into_iter()
            .filter(|r| r.holder == *holder)
            .collect())
    }

    /// The newest epoch with records.
    pub fn last_epoch(&self) -> Result<Option<u64>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(CONTRIBUTIONS).map_err(|e| err(e.into()))?;
        let last = t.last().map_err(|e| err(e.into()))?;
        Ok(last.map(|(k, _)| {
            let mut e = [0u8; 8];
            e.copy_from_slice(&k.value()[..8]);
            u64::from_be_bytes(e)
        }))
    }
}

/// Why a probe of a light node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// The node says it does not hold the shard (or only a corrupt copy).
    #[error("does not hold the shard")]
    NotHeld,
    /// No answer in time, or the node could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// How the auditor reaches light nodes: `GetShard` and `Challenge` (gRPC `ShardStore` in
/// production, [`GrpcProbe`]).
#[async_trait]
pub trait ChallengeProbe: Send + Sync + 'static {
    /// Fetches shard `index` of `stripe` from `node` (not yet checked).
    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, ProbeFailure>;
    /// Challenges `node` on shard `index` of `stripe` with `nonce`.
    async fn challenge(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> std::result::Result<ChallengeProof, ProbeFailure>;
}

/// [`ChallengeProbe`] over the light nodes' gRPC `ShardStore` service: one lazily
/// connecting channel per address.
#[derive(Debug, Default)]
pub struct GrpcProbe {
    clients: parking_lot::Mutex<HashMap<String, ShardStoreClient>>,
}

impl GrpcProbe {
    fn client(&self, node: &NodeInfo) -> std::result::Result<ShardStoreClient, ProbeFailure> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(&node.grpc_addr) {
            return Ok(c.clone());
        }
        let url = if node.grpc_addr.contains("://") {
            node.grpc_addr.clone()
        } else {
            format!("http://{}", node.grpc_addr)
        };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| ProbeFailure::Unreachable(format!("bad address: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        let c = ShardStoreClient::from_channel(channel);
        clients.insert(node.grpc_addr.clone(), c.clone());
        Ok(c)
    }
}

fn probe_failure(e: ClientError) -> ProbeFailure {
    let code = match &e {
        ClientError::Status { code, .. } => Some(*code),
        ClientError::Rejected(r) => Some(r.code.grpc_code()),
        _ => None,
    };
    match code {
        Some(tonic::Code::NotFound | tonic::Code::DataLoss) => ProbeFailure::NotHeld,
        _ => ProbeFailure::Unreachable(e.to_string()),
    }
}

#[async_trait]
impl ChallengeProbe for GrpcProbe {
    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, ProbeFailure> {
        self.client(node)?
            .get_shard(stripe, index)
            .await
            .map_err(probe_failure)
    }

    async fn challenge(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> std::result::Result<ChallengeProof, ProbeFailure> {
        self.client(node)?
            .challenge(stripe, index, nonce)
            .await
            .map_err(probe_failure)
    }
}

/// What one epoch of the audit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: u64,
    /// One record per challenged holder (also written to the log).
    pub records: Vec<ContributionRecord>,
    /// Answers that could not be checked (fewer than k good shards of the stripe could be
    /// fetched): no record.
    pub unverifiable: usize,
}

impl EpochReport {
    /// Records with this result.
    pub fn count(&self, r: ChallengeResult) -> usize {
        self.records.iter().filter(|x| x.result == r).count()
    }
}

/// For every holder, one of its shards picked uniformly at random among all it holds,
/// chosen while the manifests stream past (reservoir sampling, one slot per holder): a
/// manifest stays in memory only while some holder's pick names it, so the audit holds at
/// most one per holder, however many stripes there are.
#[derive(Debug, Default)]
pub(crate) struct HolderPicks {
    /// Shards seen per holder so far.
    seen: BTreeMap<NodeId, u64>,
    /// holder → (the manifest of its pick, shard index).
    picks: BTreeMap<NodeId, (Arc<StripeManifest>, u16)>,
}

impl HolderPicks {
    /// Considers every shard of `m` for its holder's pick.
    pub(crate) fn offer(&mut self, m: StripeManifest, rng: &mut impl Rng) {
        let mut won = Vec::new();
        for (i, h) in m.holders.iter().enumerate() {
            let (Some(h), Ok(i)) = (h, u16::try_from(i)) else {
                continue;
            };
            let n = self.seen.entry(*h).or_insert(0);
            *n += 1;
            // The n-th shard replaces the pick with probability 1/n: each of a holder's
            // shards ends up its pick with the same probability.
            if rng.random_range(0..*n) == 0 {
                won.push((*h, i));
            }
        }
        if won.is_empty() {
            return;
        }
        let m = Arc::new(m);
        for (h, i) in won {
            self.picks.insert(h, (m.clone(), i));
        }
    }
}

/// One epoch of the audit over values: `manifests` of the city's stripes, the `live` light
/// nodes, a `probe` to reach them. Every holder is challenged once (see the module docs);
/// calls run in parallel per stripe, each within `call_timeout`.
pub async fn audit_epoch(
    epoch: u64,
    manifests: &[StripeManifest],
    live: &BTreeMap<NodeId, NodeInfo>,
    probe: &dyn ChallengeProbe,
    call_timeout: Duration,
    rng: &mut impl Rng,
) -> EpochReport {
    let mut picks = HolderPicks::default();
    for m in manifests {
        picks.offer(m.clone(), rng);
    }
    audit_picks(epoch, picks, live, probe, call_timeout, rng).await
}

/// [`audit_epoch`] over the holders' picks.
async fn audit_picks(
    epoch: u64,
    picks: HolderPicks,
    live: &BTreeMap<NodeId, NodeInfo>,
    probe: &dyn ChallengeProbe,
    call_timeout: Duration,
    rng: &mut impl Rng,
) -> EpochReport {
    type Challenged = (Arc<StripeManifest>, Vec<(NodeId, u16)>);
    let mut by_stripe: BTreeMap<StripeId, Challenged> = BTreeMap::new();
    for (holder, (m, index)) in picks.picks {
        by_stripe
            .entry(m.layout.stripe_id)
            .or_insert_with(|| (m.clone(), Vec::new()))
            .1
            .push((holder, index));
    }
    let mut report = EpochReport {
        epoch,
        ..EpochReport::default()
    };
    for (stripe, (m, challenged)) in by_stripe {
        let mut to_check = Vec::new();
        for (holder, index) in challenged {
            match live.get(&holder) {
                Some(node) => to_check.push((node, index, ChallengeNonce(rng.random()))),
                None => report.records.push(ContributionRecord::new(
                    epoch,
                    holder,
                    stripe,
                    index,
                    ChallengeResult::NotLive,
                )),
            }
        }
        if to_check.is_empty() {
            continue;
        }
        let challenged_idx: BTreeSet<u16> = to_check.iter().map(|(_, i, _)| *i).collect();
        // Without k good shards the answers cannot be checked, but a holder that is silent
        // or says it lost the shard has failed all the same.
        let expected = expected_shards(&m, live, &challenged_idx, probe, call_timeout)
            .await
            .unwrap_or_default();
        let mut calls: FuturesUnordered<_> = to_check
            .into_iter()
            .map(|(node, index, nonce)| async move {
                let got =
                    tokio::time::timeout(call_timeout, probe.challenge(node, stripe, index, nonce))
                        .await;
                (node.node_id, index, nonce, got)
            })
            .collect();
        while let Some((holder, index, nonce, got)) = calls.next().await {
            let result = match got {
                Err(_) | Ok(Err(ProbeFailure::Unreachable(_))) => ChallengeResult::Unreachable,
                Ok(Err(ProbeFailure::NotHeld)) => ChallengeResult::NotHeld,
                Ok(Ok(proof)) => {
                    let Some(shard) = expected.get(&index) else {
                        report.unverifiable += 1;
                        continue;
                    };
                    let c = Challenge::new(stripe, index, shard.hash(), nonce, &shard.data);
                    if c.check(&proof).is_ok() {
                        ChallengeResult::Passed
                    } else {
                        ChallengeResult::WrongProof
                    }
                }
            };
            report.records.push(ContributionRecord::new(
                epoch, holder, stripe, index, result,
            ));
        }
    }
    report
}

/// The shards at `wanted` of stripe `m`, rebuilt from k good shards fetched from live
/// holders, those not in `wanted` first; `None` when no k good shards can be had.
async fn expected_shards(
    m: &StripeManifest,
    live: &BTreeMap<NodeId, NodeInfo>,
    wanted: &BTreeSet<u16>,
    probe: &dyn ChallengeProbe,
    call_timeout: Duration,
) -> Option<BTreeMap<u16, Shard>> {
    let layout = &m.layout;
    let k = usize::from(layout.k);
    let holders: Vec<(u16, &NodeInfo)> = m
        .holders
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((u16::try_from(i).ok()?, live.get(&(*h)?)?)))
        .collect();
    let (others, challenged): (Vec<_>, Vec<_>) =
        holders.into_iter().partition(|(i, _)| !wanted.contains(i));
    let mut good = fetch_good(others, layout, probe, call_timeout).await;
    if good.len() < k {
        good.extend(fetch_good(challenged, layout, probe, call_timeout).await);
    }
    if good.len() < k {
        return None;
    }
    let idx: Vec<u16> = wanted.iter().copied().collect();
    let rebuilt = layout.rebuild(&good, &idx).ok()?;
    Some(rebuilt.into_iter().map(|s| (s.index(), s)).collect())
}

/// The shards of `set` that arrive in time and pass the layout's checks.
async fn fetch_good(
    set: Vec<(u16, &NodeInfo)>,
    layout: &storage::StripeLayout,
    probe: &dyn ChallengeProbe,
    call_timeout: Duration,
) -> Vec<Shard> {
    let mut calls: FuturesUnordered<_> = set
        .into_iter()
        .map(|(i, node)| async move {
            tokio::time::timeout(call_timeout, probe.get_shard(node, layout.stripe_id, i))
                .await
                .ok()
                .and_then(|r| r.ok())
                .filter(|s| s.index() == i && layout.check_shard(s).is_ok())
        })
        .collect();
    let mut good = Vec::new();
    while let Some(r) = calls.next().await {
        good.extend(r);
    }
    good
}

/// Records the metrics of one epoch.
fn count(report: &EpochReport) {
    for r in &report.records {
        metrics::counter!("citychain_storage_challenges_total", "result" => r.result.name())
            .increment(1);
    }
    if report.unverifiable > 0 {
        metrics::counter!("citychain_storage_challenges_total", "result" => "unverifiable")
            .increment(report.unverifiable as u64);
    }
    metrics::gauge!("citychain_storage_audit_epoch").set(report.epoch as f64);
}

fn describe() {
    metrics::describe_counter!(
        "citychain_storage_challenges_total",
        "Storage challenges sent to light nodes by the periodic audit, by result (passed, \
         wrong_proof, not_held, unreachable, not_live, unverifiable)"
    );
    metrics::describe_gauge!(
        "citychain_storage_audit_epoch",
        "The last audit epoch this city completed"
    );
}

/// The running audit. Dropping it does not stop it: call [`AuditHandle::stop`].
#[derive(Debug)]
pub struct AuditHandle {
    task: tokio::task::JoinHandle<()>,
    log: ContributionLog,
}

impl AuditHandle {
    /// The contribution records written so far.
    pub fn log(&self) -> &ContributionLog {
        &self.log
    }

    /// Stops the audit (an epoch in progress is abandoned and not recorded).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs one epoch against `pipeline`'s stripes and records it.
async fn run_one(
    pipeline: &Arc<Pipeline>,
    probe: &dyn ChallengeProbe,
    log: &ContributionLog,
    cfg: &AuditConfig,
    epoch: u64,
) -> Result<EpochReport> {
    let p = pipeline.clone();
    // The manifests stream past the picker: one kept per holder, not every stripe's.
    let (picks, mut rng) = run_blocking("audit manifests", move || {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut picks = HolderPicks::default();
        p.for_each_manifest(|m| picks.offer(m, &mut rng))
            .map(|()| (picks, rng))
    })
    .await?
    .map_err(|source| Error::Pipeline { source })?;
    let live: BTreeMap<NodeId, NodeInfo> = pipeline
        .live_lights()
        .into_iter()
        .map(|n| (n.node_id, n))
        .collect();
    let report = audit_picks(
        epoch,
        picks,
        &live,
        probe,
        Duration::from_millis(cfg.call_timeout_ms),
        &mut rng,
    )
    .await;
    let l = log.clone();
    let records = report.records.clone();
    run_blocking("audit records", move || l.append(&records)).await??;
    count(&report);
    Ok(report)
}

/// Starts the periodic audit of `pipeline`'s stripes, recording into `<data_dir>/`
/// [`CONTRIBUTIONS_FILE`]. An epoch already recorded (a restart within it) is not run
/// again. The task holds the pipeline weakly and ends when it is gone.
pub fn spawn_audit(
    cfg: &AuditConfig,
    data_dir: &Path,
    pipeline: &Arc<Pipeline>,
    probe: Arc<dyn ChallengeProbe>,
) -> Result<AuditHandle> {
    describe();
    let log = ContributionLog::open(&data_dir.join(CONTRIBUTIONS_FILE))?;
    let interval = cfg.interval_ms.max(1);
    let weak: Weak<Pipeline> = Arc::downgrade(pipeline);
    let (cfg, task_log) = (cfg.clone(), log.clone());
    let task = tokio::spawn(async move {
        let mut last = task_log.last_epoch().ok().flatten();
        loop {
            let now = now_ms();
            let epoch = now / interval;
            if last.is_some_and(|l| l >= epoch) {
                // Sleep to the start of the next epoch.
                let wait = (epoch + 1) * interval - now;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            let Some(p) = weak.upgrade() else { return };
            match run_one(&p, probe.as_ref(), &task_log, &cfg, epoch).await {
                Ok(r) => {
                    tracing::info!(
                        epoch,
                        passed = r.count(ChallengeResult::Passed),
                        failed = r.records.len() - r.count(ChallengeResult::Passed),
                        unverifiable = r.unverifiable,
                        "storage audit epoch done"
                    );
                }
                Err(e) => tracing::warn!(epoch, error = %e, "storage audit epoch failed"),
            }
            drop(p);
            last = Some(epoch);
        }
    });
    Ok(AuditHandle { task, log })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use storage::{ErasureConfig, StripeLayout};

    /// Light nodes in memory: each holds shards, may lie, may be down.
    #[derive(Default)]
    struct Nodes {
        shards: parking_lot::Mutex<HashMap<(NodeId, StripeId, u16), Shard>>,
        liars: parking_lot::Mutex<BTreeSet<NodeId>>,
        down: parking_lot::Mutex<BTreeSet<NodeId>>,
    }

    #[async_trait]
    impl ChallengeProbe for Nodes {
        async fn get_shard(
            &self,
            node: &NodeInfo,
            stripe: StripeId,
            index: u16,
        ) -> std::result::Result<Shard, ProbeFailure> {
            if self.down.lock().contains(&node.node_id) {
                return Err(ProbeFailure::Unreachable("down".into()));
            }
            self.shards
                .lock()
                .get(&(node.node_id, stripe, index))
                .cloned()
                .ok_or(ProbeFailure::NotHeld)
        }
        async fn challenge(
            &self,
            node: &NodeInfo,
            stripe: StripeId,
            index: u16,
            nonce: ChallengeNonce,
        ) -> std::result::Result<ChallengeProof, ProbeFailure> {
            if self.down.lock().contains(&node.node_id) {
                return Err(ProbeFailure::Unreachable("down".into()));
            }
            if self.liars.lock().contains(&node.node_id) {
                return Ok(storage::prove(&nonce, b"not the shard"));
            }
            let s = self
                .shards
                .lock()
                .get(&(node.node_id, stripe, index))
                .cloned();
            s.map(|s| storage::prove(&nonce, &s.data))
                .ok_or(ProbeFailure::NotHeld)
        }
    }

    fn node(i: u8) -> NodeInfo {
        super::super::membership::node_info(
            NodeId::from_bytes([i; 32]),
            dag_core::Role::Light,
            format!("mem-{i}"),
            "JP-13",
            "",
            (35.0, 139.0),
            0,
            0,
        )
    }

    /// `stripes` stripes of RS 4+2 spread over nodes 1..=6 (shard i on node i+1).
    fn setup(stripes: usize) -> (Vec<StripeManifest>, BTreeMap<NodeId, NodeInfo>, Nodes) {
        let nodes = Nodes::default();
        let live: BTreeMap<_, _> = (1..=6).map(|i| (node(i).node_id, node(i))).collect();
        let mut manifests = Vec::new();
        for s in 0..stripes {
            let shards = ErasureConfig::default()
                .encode(format!("stripe {s} bytes ").repeat(50).as_bytes())
                .unwrap();
            let layout = StripeLayout::from_shards(&shards).unwrap();
            let mut m = StripeManifest::unplaced(layout.clone());
            for sh in shards {
                let holder = node(sh.index() as u8 + 1).node_id;
                m.set_holder(sh.index(), holder).unwrap();
                nodes
                    .shards
                    .lock()
                    .insert((holder, layout.stripe_id, sh.index()), sh);
            }
            manifests.push(m);
        }
        (manifests, live, nodes)
    }

    async fn run(
        m: &[StripeManifest],
        live: &BTreeMap<NodeId, NodeInfo>,
        nodes: &Nodes,
    ) -> EpochReport {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        audit_epoch(3, m, live, nodes, Duration::from_secs(1), &mut rng).await
    }

    #[test]
    fn each_holder_picks_each_of_its_shards_alike_and_few_manifests_are_kept() {
        let (m, _, _) = setup(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Which stripe node 1 (shard 0 of every stripe) is challenged on, 5,000 epochs.
        let mut hits = vec![0u32; m.len()];
        for _ in 0..5_000 {
            let mut picks = HolderPicks::default();
            for x in &m {
                picks.offer(x.clone(), &mut rng);
            }
            assert_eq!(picks.picks.len(), 6);
            let (pick, index) = &picks.picks[&node(1).node_id];
            assert_eq!(*index, 0);
            let stripe = pick.layout.stripe_id;
            let at = m.iter().position(|x| x.layout.stripe_id == stripe).unwrap();
            hits[at] += 1;
        }
        // Uniform: 500 each expected; a first-or-last bias would show far outside this.
        assert!(hits.iter().all(|h| (400..=600).contains(h)), "{hits:?}");

        // Many stripes: the picker holds a bounded handful, every pick names its holder.
        let (many, _, _) = setup(400);
        let mut picks = HolderPicks::default();
        let mut most = 0;
        for x in &many {
            picks.offer(x.clone(), &mut rng);
            let held: BTreeSet<StripeId> = picks
                .picks
                .values()
                .map(|(m, _)| m.layout.stripe_id)
                .collect();
            most = most.max(held.len());
        }
        assert!(most <= 4 * 16 + 1, "kept up to {most} manifests");
        for (holder, (m, index)) in &picks.picks {
            assert_eq!(m.holders[usize::from(*index)], Some(*holder));
        }
    }

    #[tokio::test]
    async fn every_holder_is_challenged_once_and_honest_ones_pass() {
        let (m, live, nodes) = setup(5);
        let r = run(&m, &live, &nodes).await;
        assert_eq!(r.records.len(), 6, "{r:?}");
        let holders: BTreeSet<_> = r.records.iter().map(|x| x.holder).collect();
        assert_eq!(holders.len(), 6);
        assert_eq!(r.count(ChallengeResult::Passed), 6);
        assert!(r.records.iter().all(|x| x.passed && x.epoch == 3));
        assert_eq!(r.unverifiable, 0);
    }

    #[tokio::test]
    async fn a_liar_a_lost_shard_a_silent_and_a_departed_holder_fail_and_are_recorded_so() {
        let (m, live, nodes) = setup(1);
        nodes.liars.lock().insert(node(1).node_id);
        let sid = m[0].layout.stripe_id;
        nodes.shards.lock().remove(&(node(2).node_id, sid, 1));
        nodes.down.lock().insert(node(3).node_id);
        let r = run(&m, &live, &nodes).await;
        let by: BTreeMap<NodeId, ChallengeResult> =
            r.records.iter().map(|x| (x.holder, x.result)).collect();
        assert_eq!(by[&node(1).node_id], ChallengeResult::WrongProof);
        assert_eq!(by[&node(2).node_id], ChallengeResult::NotHeld);
        assert_eq!(by[&node(3).node_id], ChallengeResult::Unreachable);
        for i in 4..=6 {
            assert_eq!(by[&node(i).node_id], ChallengeResult::Passed);
        }
        assert!(
            !r.records
                .iter()
                .any(|x| x.passed && x.result != ChallengeResult::Passed)
        );

        // A holder that left the city's live view is recorded as such, not asked.
        let (m, mut live, nodes) = setup(1);
        live.remove(&node(6).node_id);
        let r = run(&m, &live, &nodes).await;
        let by: BTreeMap<NodeId, ChallengeResult> =
            r.records.iter().map(|x| (x.holder, x.result)).collect();
        assert_eq!(by[&node(6).node_id], ChallengeResult::NotLive);
        assert_eq!(r.count(ChallengeResult::Passed), 5);
    }

    #[tokio::test]
    async fn without_k_good_shards_answers_are_unverifiable_and_silence_still_fails() {
        let (m, live, nodes) = setup(1);
        for i in 1..=3 {
            nodes.down.lock().insert(node(i).node_id);
        }
        let r = run(&m, &live, &nodes).await;
        // 3 silent of 6 leaves 3 < k = 4 good shards: the other answers cannot be checked.
        assert_eq!(r.unverifiable, 3, "{r:?}");
        assert_eq!(r.records.len(), 3);
        assert_eq!(r.count(ChallengeResult::Unreachable), 3);
        assert!(r.records.iter().all(|x| x.holder.as_bytes()[0] <= 3));
    }

    #[test]
    fn the_log_keeps_records_by_epoch_and_holder_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTRIBUTIONS_FILE);
        let rec = |epoch, h: u8, r| {
            ContributionRecord::new(
                epoch,
                NodeId::from_bytes([h; 32]),
                StripeId::from_bytes([9; 32]),
                u16::from(h),
                r,
            )
        };
        {
            let log = ContributionLog::open(&path).unwrap();
            assert_eq!(log.last_epoch().unwrap(), None);
            log.append(&[
                rec(1, 1, ChallengeResult::Passed),
                rec(1, 2, ChallengeResult::WrongProof),
            ])
            .unwrap();
            log.append(&[rec(2, 1, ChallengeResult::NotLive)]).unwrap();
        }
        let log = ContributionLog::open(&path).unwrap();
        assert_eq!(log.last_epoch().unwrap(), Some(2));
        assert_eq!(log.epochs(1, 1).unwrap().len(), 2);
        assert_eq!(
            log.epochs(2, 9).unwrap(),
            vec![rec(2, 1, ChallengeResult::NotLive)]
        );
        let one = log.of_holder(&NodeId::from_bytes([1; 32])).unwrap();
        assert_eq!(
            one.iter().map(|r| (r.epoch, r.passed)).collect::<Vec<_>>(),
            vec![(1, true), (2, false)]
        );
    }
}
