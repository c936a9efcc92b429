//! The light role: serves the `ShardStore` gRPC service (PutShard, streaming GetShard,
//! Challenge) over a local [`ShardStore`] with a quota, and signs a receipt (PoH_ACK) with
//! the node's ML-DSA-87 key for every shard it stores.
//!
//! Store operations (an fsync per put) and signing (≈ 0.2 ms) run on the blocking pool,
//! never on the reactor. A shard is checked when it arrives and again when it is read: a
//! shard corrupted on disk is answered with `DataLoss` and never sent.
//!
//! Disk pressure ([`health`]): puts are refused with `RESOURCE_EXHAUSTED` before the quota or
//! the free-space floor is crossed; after a store I/O error the node answers NOT_SERVING on
//! gRPC health and `UNAVAILABLE` to puts, and a watchdog reopens the store once it can and
//! comes back by itself. A `shards.redb` that no longer opens is moved aside at start and
//! the node starts empty under the same identity.

mod health;

mod repair;

use crate::runtime::{self, ServerHandle, SystemClock};
use crate::{Error, Result};
use dag_core::{Clock, NodeId, StripeId};
use pqc::Keypair;
use rpc::{ShardHolder, Stored};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use storage::{ChallengeNonce, ChallengeProof, PutOutcome, Shard, ShardStore, StoreConfig};

/// Configuration of the light role. `Default` holds the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LightConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory for the key file and the shard store (`shards.redb`).
    pub data_dir: PathBuf,
    /// Most bytes of shards (encoded) this node stores. Default 1 GiB.
    pub quota_bytes: u64,
    /// Bytes that must stay free on the data directory's file system (statvfs); puts that
    /// would cross it are refused. Default 64 MiB; 0 turns the check off.
    pub min_free_bytes: u64,
    /// Hard limit on the size of `shards.redb` (`u64::MAX` = none, the default): past it
    /// writes fail as on a full disk.
    pub max_store_file_bytes: u64,
    /// The genesis file naming the city's committee: REPAIR_REQUESTs are then answered only
    /// when signed by one of the representatives of the node's city. Without it, any validly
    /// signed request is answered (counted in `citychain_light_repair_unchecked_total`, and
    /// warned about at start).
    pub genesis: Option<PathBuf>,
    /// Mutual TLS. Default: TLS with the identity in `data_dir` (made on first start);
    /// plaintext only when set to `Insecure` explicitly (`--insecure`). Not from TOML.
    #[serde(skip)]
    pub links: rpc::tls::LinkSecurity,
    /// Who may PutShard: the representatives of this node's city, read through a committee
    /// source (genesis, later DPoS). `None`: any authenticated node. Not from TOML.
    #[serde(skip)]
    pub writers: Option<LightWriters>,
}

/// The representatives of one city, the only nodes a light node takes shards from.
#[derive(Debug, Clone)]
pub struct LightWriters {
    /// Where committees come from (genesis; DPoS per epoch).
    pub committees: Arc<dyn genesis::CommitteeSource>,
    /// The light node's city.
    pub city_id: String,
}

impl LightWriters {
    /// True when `node` is a member of the city's current committee.
    pub fn admits(&self, node: &dag_core::NodeId) -> bool {
        self.committees
            .committee(&self.city_id)
            .is_some_and(|c| c.committee.authority(node).is_some())
    }
}

impl Default for LightConfig {
    fn default() -> Self {
        LightConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7710)),
            data_dir: PathBuf::from("./light-data"),
            quota_bytes: StoreConfig::default().quota_bytes,
            min_free_bytes: StoreConfig::default().min_free_bytes,
            max_store_file_bytes: u64::MAX,
            genesis: None,
            links: rpc::tls::LinkSecurity::default(),
            writers: None,
        }
    }
}

/// A light node: its shard store, its key and its clock. Implements [`ShardHolder`].
pub struct LightNode {
    store: Arc<ShardStore>,
    key: Arc<Keypair>,
    clock: Arc<dyn Clock>,
    /// Wakes the health watchdog when a store call fails.
    wake: Arc<tokio::sync::Notify>,
    /// The representatives of this node's city, once known (see [`LightConfig::genesis`]).
    representatives: Arc<std::sync::OnceLock<std::collections::BTreeSet<NodeId>>>,
}

impl std::fmt::Debug for LightNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightNode")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl LightNode {
    /// A light node over `store`, signing receipts with `key`, timestamped by `clock`.
    pub fn new(store: ShardStore, key: Keypair, clock: Arc<dyn Clock>) -> Self {
        LightNode {
            store: Arc::new(store),
            key: Arc::new(key),
            clock,
            wake: Arc::new(tokio::sync::Notify::new()),
            representatives: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Answers REPAIR_REQUESTs only from these representatives of the node's city (set
    /// once; later calls are ignored and return false).
    pub fn set_representatives(&self, reps: std::collections::BTreeSet<NodeId>) -> bool {
        self.representatives.set(reps).is_ok()
    }

    /// The node id (BLAKE3 of its public key): the holder named in its receipts.
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The shard store (for status and tests).
    pub fn store(&self) -> &Arc<ShardStore> {
        &self.store
    }

    /// After a failed store call: wake the watchdog if the store went down.
    fn after<R>(&self, r: storage::Result<R>) -> storage::Result<R> {
        if r.is_err() && self.store.is_failed() {
            self.wake.notify_one();
        }
        r
    }
}

/// Runs a store operation on the blocking pool (see [`runtime::run_blocking`]).
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> storage::Result<R> + Send + 'static,
) -> storage::Result<R> {
    runtime::run_blocking("light node store", f)
        .await
        .unwrap_or_else(|e| {
            Err(storage::Error::Db {
                op: "light node task",
                source: Box::new(redb::Error::Io(std::io::Error::other(e.to_string()))),
            })
        })
}

impl ShardHolder for LightNode {
    async fn put(&self, shard: Shard) -> storage::Result<Stored> {
        let (store, key, clock) = (self.store.clone(), self.key.clone(), self.clock.clone());
        let bytes = shard.data.len() as u64;
        let t0 = std::time::Instant::now();
        let r = blocking(move || {
            let outcome = store.put(&shard)?;
            let receipt = storage::issue_receipt(&shard.header, &*key, clock.now_ms());
            Ok(Stored {
                receipt,
                already_stored: outcome == PutOutcome::AlreadyStored,
            })
        })
        .await;
        crate::metrics_catalog::light_put(
            &r.as_ref().map(|s| s.already_stored),
            bytes,
            t0.elapsed(),
        );
        self.after(r)
    }

    async fn get(&self, stripe: StripeId, index: u16) -> storage::Result<Option<Shard>> {
        let store = self.store.clone();
        let r = blocking(move || store.get(&stripe, index)).await;
        self.after(r)
    }

    async fn challenge(
        &self,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> storage::Result<Option<ChallengeProof>> {
        let store = self.store.clone();
        let r = blocking(move || {
            Ok(store
                .get(&stripe, index)?
                .map(|s| storage::prove(&nonce, &s.data)))
        })
        .await;
        crate::metrics_catalog::light_challenge(&r.as_ref().map(Option::is_some));
        r
    }
}

/// A running light node. Drop does not stop it: call [`LightHandle::shutdown`] (graceful)
/// or [`LightHandle::kill`] (abrupt, as a crash).
#[derive(Debug)]
pub struct LightHandle {
    server: ServerHandle,
    node: Arc<LightNode>,
    watchdog: health::Watchdog,
    readiness: runtime::Readiness,
    quarantined: Option<PathBuf>,
}

impl LightHandle {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The node (id, store).
    pub fn node(&self) -> &Arc<LightNode> {
        &self.node
    }

    /// Where a corrupt `shards.redb` found at start was moved (the node started empty).
    pub fn quarantined(&self) -> Option<&std::path::Path> {
        self.quarantined.as_deref()
    }

    /// True while gRPC health says SERVING (the store takes writes).
    pub fn is_serving(&self) -> bool {
        self.watchdog.is_serving()
    }

    /// Stops accepting and lets in-flight calls finish.
    pub async fn shutdown(self) -> Result<()> {
        // NOT_SERVING from the signal on, before the calls in flight drain.
        self.readiness
            .set(runtime::readiness::STOPPING, false)
            .await;
        self.watchdog.stop().await;
        self.server.shutdown(SHUTDOWN_GRACE).await
    }

    /// Stops the server at once, dropping connections mid-call (a crash, for tests and
    /// the demo).
    pub async fn kill(self) {
        self.watchdog.stop().await;
        self.server.kill().await;
    }
}

/// The gRPC service name health reports on.
const SERVICE: &str = "citychain.v1.ShardStoreService";

/// How long a graceful stop waits for in-flight calls.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts the light role with `keypair`: opens `<data_dir>/shards.redb` with the quota and
/// free-space floor (a file that no longer opens as a database is moved aside to
/// `shards.redb.corrupt-<ms>` and the node starts empty), binds `cfg.listen` and serves
/// ShardStore, gRPC health and reflection.
pub async fn start_light(cfg: &LightConfig, keypair: Keypair) -> Result<LightHandle> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let path = cfg.data_dir.join("shards.redb");
    let store_cfg = StoreConfig {
        quota_bytes: cfg.quota_bytes,
        min_free_bytes: cfg.min_free_bytes,
        max_file_bytes: cfg.max_store_file_bytes,
        ..StoreConfig::default()
    };
    let (store, quarantined) = ShardStore::open_or_quarantine(&path, store_cfg, runtime::now_ms())?;
    if let Some(aside) = &quarantined {
        metrics::counter!("citychain_store_quarantined_total", "store" => "shards").increment(1);
        tracing::error!(
            store = %path.display(),
            moved_to = %aside.display(),
            node_id = %keypair.node_id(),
            "shard store was corrupt: moved aside for forensics, starting empty under the same identity; \
             its shards are lost here and the city's audit/repair re-creates them elsewhere"
        );
    }
    let links = runtime::resolve_links(&cfg.links, &cfg.data_dir, &keypair)?;
    let mut h = serve_light_over(
        cfg.listen,
        LightNode::new(store, keypair, Arc::new(SystemClock)),
        &links,
        cfg.writers.clone(),
    )
    .await?;
    h.quarantined = quarantined;
    Ok(h)
}

/// Serves an already built [`LightNode`] (any store, any clock) on `listen`, plaintext,
/// taking puts from anyone (tests and in-process tools).
pub async fn serve_light(listen: SocketAddr, node: LightNode) -> Result<LightHandle> {
    serve_light_over(listen, node, &rpc::tls::LinkSecurity::Insecure, None).await
}

/// Serves `node` on `listen` over `links`; with `writers`, PutShard only from them.
pub async fn serve_light_over(
    listen: SocketAddr,
    node: LightNode,
    links: &rpc::tls::LinkSecurity,
    writers: Option<LightWriters>,
) -> Result<LightHandle> {
    let (listener, addr) = runtime::bind(listen).await?;
    let (reporter, health, reflection, reflection_alpha) =
        runtime::health_reporter_and_reflection(SERVICE, &[SERVICE, "citychain.v1.RepairService"])
            .await?;
    let node = Arc::new(node);
    let readiness = runtime::Readiness::new(reporter, SERVICE).await;
    let watchdog = health::Watchdog::start(node.clone(), readiness.clone());
    let mut svc = rpc::ShardStoreService::new(node.clone());
    if let Some(w) = writers {
        svc = svc.with_writers(Arc::new(move |id: &dag_core::NodeId| w.admits(id)));
    }
    let svc = svc.into_server();
    let router = runtime::server_builder(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(svc)
        .add_service(rpc::RepairGrpc::new(node.clone()).into_server());
    let server = runtime::serve(listener, router, "light", links);
    readiness.set(runtime::readiness::STARTING, true).await;
    tracing::info!(%addr, node_id = %node.node_id(), "light node serving");
    Ok(LightHandle {
        server,
        node,
        watchdog,
        readiness,
        quarantined: None,
    })
}

/// Runs the light role as an operator deploys it: connects presence from `m.nodelist`,
/// then [`run_light_with`].
pub async fn run_light(
    cfg: &LightConfig,
    key: Keypair,
    m: &crate::MembershipConfig,
) -> Result<crate::RunningRole> {
    // Over http the presence server takes only logins this node's key signs.
    let presence = m
        .nodelist
        .connect_store_as(Some(Arc::new(key.clone())))
        .await
        .map_err(|source| Error::Presence { source })?;
    run_light_with(cfg, key, m, presence).await
}

/// The light role's composition root: [`start_light`], then a login to `presence` (and
/// heartbeats) so the city's representatives find it.
pub async fn run_light_with(
    cfg: &LightConfig,
    key: Keypair,
    m: &crate::MembershipConfig,
    presence: Arc<dyn presence::PresenceStore>,
) -> Result<crate::RunningRole> {
    let node_id = key.node_id();
    let gossip_key = m.gossip.enabled.then(|| key.clone());
    let light = start_light(cfg, key).await?;
    match &cfg.genesis {
        Some(path) => {
            let genesis = genesis::Genesis::load(path)?;
            let city = genesis.cities.get(&m.city_id).ok_or_else(|| {
                Error::Membership(format!(
                    "city {} is not in the genesis file {}",
                    m.city_id,
                    path.display()
                ))
            })?;
            light
                .node()
                .set_representatives(city.addresses.keys().copied().collect());
        }
        None => tracing::warn!(
            "no genesis file: REPAIR_REQUESTs are answered without checking that the signer \
             represents this city"
        ),
    }
    let info = crate::city::membership::node_info(
        node_id,
        dag_core::Role::Light,
        runtime::advertised_addr(light.addr(), m.advertise.as_deref()),
        &m.city_id,
        &m.zone,
        (m.lat, m.lon),
        // What it can take now (quota left, bounded by the disk above the floor).
        light.node().store().free_bytes().unwrap_or(0),
        runtime::now_ms(),
    );
    let advertised = info.free_capacity;
    let login =
        node_list::NodeListManager::start(presence.clone(), Some(info.clone()), m.nodelist.clone());
    let advertiser = tokio::spawn(advertise_capacity(
        presence,
        light.node().store().clone(),
        info,
        advertised,
        CAPACITY_EVERY,
    ));
    let gossip = match &gossip_key {
        Some(k) => {
            let (addr, adv) = (light.addr(), m.advertise.as_deref());
            crate::gossip::start(k, addr, adv, &m.city_id, &m.gossip, &[login.registry()]).await?
        }
        None => None,
    };
    Ok(crate::RunningRole::light(light, login)
        .with_gossip(gossip)
        .with_advertiser(advertiser))
}

/// How often a light node checks whether its free capacity moved enough to tell presence.
const CAPACITY_EVERY: Duration = Duration::from_secs(5);

/// Whether free capacity moved from `last` (advertised) to `now` by enough to log in again:
/// by more than 5 % of the last figure and 1 MiB, or to or from zero (full / not full).
fn capacity_changed(last: u64, now: u64) -> bool {
    (last == 0) != (now == 0) || last.abs_diff(now) > (last / 20).max(1 << 20)
}

/// Keeps the free capacity that placement sees (`NodeInfo::free_capacity` in presence)
/// close to the truth as shards arrive, are deleted or the disk fills: a login with the new
/// figure (presence answers it as an update of the online node) whenever it moved enough.
/// Aborted before the role logs out, so it never logs a stopped node back in.
async fn advertise_capacity(
    presence: Arc<dyn presence::PresenceStore>,
    store: Arc<ShardStore>,
    mut info: dag_core::NodeInfo,
    mut last: u64,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let s = store.clone();
        let Ok(free) = tokio::task::spawn_blocking(move || s.free_bytes().unwrap_or(0)).await
        else {
            return;
        };
        metrics::gauge!("citychain_light_advertised_free_bytes").set(last as f64);
        if !capacity_changed(last, free) {
            continue;
        }
        info.free_capacity = free;
        match presence.login(info.clone()).await {
            Ok(()) => {
                tracing::info!(
                    from = last,
                    to = free,
                    "free capacity advertised to presence"
                );
                last = free;
                metrics::gauge!("citychain_light_advertised_free_bytes").set(free as f64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not advertise free capacity; retrying")
            }
        }
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::capacity_changed;

    #[test]
    fn capacity_is_advertised_again_only_when_it_moved_enough() {
        const MIB: u64 = 1 << 20;
        assert!(!capacity_changed(100 * MIB, 100 * MIB));
        assert!(!capacity_changed(100 * MIB, 96 * MIB), "4 % is noise");
        assert!(capacity_changed(100 * MIB, 94 * MIB), "6 % is news");
        assert!(
            !capacity_changed(4 * MIB, 3 * MIB + MIB / 2),
            "under 1 MiB is noise"
        );
        assert!(capacity_changed(4 * MIB, 2 * MIB));
        assert!(capacity_changed(MIB / 2, 0), "full is always news");
        assert!(capacity_changed(0, MIB / 2), "so is room again");
    }
}
