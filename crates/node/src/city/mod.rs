//! The city role: admission ([`admission`]), the tx store ([`store`]), the light-node
//! pipeline ([`pipeline`], with [`placement`] and [`transport`]) and membership
//! ([`membership`]), composed by one root, [`run_city_with`], which the binary, the
//! devnet, the demo and the tests all use.

pub(crate) mod admission;
pub(crate) mod challenges;
pub(crate) mod committee;
pub mod consensus;
pub(crate) mod cross;
pub(crate) mod epochs;
pub(crate) mod events;
pub(crate) mod execution;
#[cfg(test)]
mod gated;
pub(crate) mod gateway;
pub(crate) mod light_admission;
pub(crate) mod membership;
pub(crate) mod order;
pub(crate) mod pipeline;
pub(crate) mod placement;
pub(crate) mod prune; // issue 18w: the working store leaves
pub(crate) mod recovery;
pub(crate) mod repair_protocol;
pub(crate) mod scheduling;
pub(crate) mod stake;
pub(crate) mod stake_reporter;
pub(crate) mod standby;
pub(crate) mod store;
#[cfg(any(test, feature = "test-utils"))]
pub(crate) mod test_utils;
pub(crate) mod transport;
pub(crate) mod working_set;

use crate::runtime::{self, ServerHandle};
use crate::{Error, MembershipConfig, Result, RunningRole};
use admission::CityNode;
use membership::{NodeListDirectory, node_info, spawn_rereplicator};
use node_list::NodeListManager;
use pqc::{BatchVerifier, Keypair};
use presence::PresenceStore;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::TxStore;

/// Configuration of the city role. `Default` holds the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CityConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory for the key file and the embedded store.
    pub data_dir: PathBuf,
    /// Signature verification threads (0 = one per core).
    pub verify_threads: usize,
    /// Most txs admitted concurrently before answering `Overloaded`.
    pub max_inflight: usize,
    /// Micro-batches stored at once (placement slots; see
    /// [`pipeline::PipelineConfig::max_batches_in_flight`]). Used by [`run_city`]; callers of
    /// [`run_city_with`] set it in their [`CityEnv`].
    pub batches_in_flight: usize,
    /// Least time between two micro-batches cut (see
    /// [`pipeline::PipelineConfig::stripe_spacing`]). Used by [`run_city`], like
    /// `batches_in_flight`.
    pub stripe_spacing: Duration,
    /// Keep the encrypted long-term archive (embedded redb in `<data_dir>/archive`).
    pub archive: bool,
    /// The genesis file naming the city's committee. With it, this node runs as one of the
    /// city's representatives (it must be listed); without it, it stops at Held.
    pub genesis: Option<PathBuf>,
    /// The DApp HTTP gateway (`/v1`, events, explorer); off unless set.
    pub gateway: Option<::gateway::GatewayConfig>,
    /// A fixed interval between a representative's proposals, in ms. Unset (the default):
    /// the domain's dynamic interval (start 1.0 s; > 50 pending → 0.5 s; none pending →
    /// +0.5 s up to 5 s; else −0.1 s down to 0.5 s). Tests and tiny local networks set a
    /// short fixed one.
    pub batch_interval_ms: Option<u64>,
    /// The periodic storage audit of this city's light nodes (on, every 10 minutes).
    pub audit: challenges::AuditConfig,
    /// Mutual TLS on node links (the binary's default; `--insecure` turns it off): to the
    /// light nodes, to the other representatives, and on this node's server (which still
    /// serves wallets' plaintext h2, but the node-only methods there need a TLS peer).
    /// Default: TLS with the identity in `data_dir`; plaintext only when set to `Insecure`
    /// explicitly (`--insecure`). Not from TOML.
    #[serde(skip)]
    pub links: rpc::tls::LinkSecurity,
    /// An events file (TOML, or JSON by its `.json` name): city and location event
    /// multipliers in epoch windows, applied to the placement weights of light nodes in
    /// their area ([`pop_geo::EventCalendar`]). None: no events.
    pub events: Option<PathBuf>,
    /// The DPoS rules of the city's stake state (`[dpos]`; e.g. `term_ms` in seconds for a
    /// localnet). Every representative of a city must run the same rules.
    pub dpos: dpos::DposConfig,
    /// Which light nodes may hold the city's shards (`[admission]`: an operator allow-list
    /// and/or a minimum bonded stake); default: every light node of the city.
    pub admission: light_admission::AdmissionConfig,
    /// **Test hook** (devnet tests only; not from TOML): this representative equivocates
    /// (see `RepresentativeConfig::equivocate_for_test`).
    #[serde(skip)]
    pub equivocate_for_test: bool,
    /// When a representative that misses every leader slot of a window of rounds is
    /// reported as a `ReportIncident` (`[consensus.missed_rounds]` in the binary's TOML;
    /// default: windows of 64 rounds, ≥ 4 slots, decided 16 rounds after). The same on
    /// every representative of a city.
    pub missed_rounds: stake_reporter::MissedRule,
    /// Start as a standby representative when the node key is not in the genesis
    /// committee of its city (`[consensus] standby`): follow the committee's checkpoints
    /// (ledger and dpos state applied as on members) and start consensus at the epoch dpos
    /// elects this node into (see `city::standby`). Submissions are refused until then.
    pub standby: bool,
}

impl Default for CityConfig {
    fn default() -> Self {
        let pipe = pipeline::PipelineConfig::default();
        CityConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            data_dir: PathBuf::from("./city-data"),
            verify_threads: 0,
            max_inflight: 16_384,
            batches_in_flight: pipe.max_batches_in_flight,
            stripe_spacing: pipe.stripe_spacing,
            archive: true,
            genesis: None,
            gateway: None,
            batch_interval_ms: None,
            audit: challenges::AuditConfig::default(),
            links: rpc::tls::LinkSecurity::default(),
            events: None,
            dpos: dpos::DposConfig::default(),
            admission: light_admission::AdmissionConfig::default(),
            equivocate_for_test: false,
            missed_rounds: stake_reporter::MissedRule::default(),
            standby: false,
        }
    }
}

/// Loads `<data_dir>/node.key`, or creates it (mode 0600) on first start.
pub fn load_or_create_key(data_dir: &Path) -> Result<Keypair> {
    let path = data_dir.join("node.key");
    if path.exists() {
        Ok(Keypair::load(&path)?)
    } else {
        let kp = Keypair::generate();
        kp.save(&path)?;
        tracing::info!(path = %path.display(), node_id = %kp.node_id(), "created a new node key");
        Ok(kp)
    }
}

/// A running city node. Drop does not stop it: call [`CityHandle::shutdown`].
#[derive(Debug)]
pub struct CityHandle {
    server: ServerHandle,
    node: Option<Arc<CityNode>>,
    representation: Option<committee::Representation>,
    gateway: Option<::gateway::GatewayHandle>,
    working_set_gc: Option<working_set::WorkingSetGc>,
    /// The periodic storage audit, when it runs.
    audit: Option<challenges::AuditHandle>,
    /// The start-up scan finishing txs left Admitted.
    recovery: Option<tokio::task::JoinHandle<Option<recovery::RecoveryReport>>>,
    /// What gRPC health says, and the live-holder count behind it (with storage).
    readiness: runtime::Readiness,
    holders_watch: Option<tokio::task::JoinHandle<()>>,
    /// Prunes the working store (representatives with an archive and storage).
    pruner: Option<prune::PrunerHandle>,
}

/// How long a graceful stop waits for in-flight calls and streams.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl CityHandle {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The node (counters, store).
    pub fn node(&self) -> &Arc<CityNode> {
        self.node.as_ref().expect("node is present until shutdown")
    }

    /// Stops accepting, lets in-flight calls finish, then closes the store so the data
    /// directory can be reopened.
    pub async fn shutdown(mut self) -> Result<()> {
        // NOT_SERVING from the signal on, before the calls in flight drain.
        self.readiness
            .set(runtime::readiness::STOPPING, false)
            .await;
        self.stop_background().await;
        if let Some(g) = self.gateway.take()
            && let Err(e) = g.shutdown().await
        {
            tracing::warn!(error = %e, "gateway stopped with an error");
        }
        self.server.shutdown(SHUTDOWN_GRACE).await?;
        if let Some(gc) = self.working_set_gc.take() {
            gc.shutdown().await;
        }
        if let Some(r) = self.representation.take() {
            r.shutdown().await?;
        }
        // Wait for the last reference (streams finishing) so the database file is released.
        if let Some(mut node) = self.node.take() {
            for _ in 0..500 {
                match Arc::try_unwrap(node) {
                    Ok(n) => {
                        // Flushes the archive queue and releases its files.
                        n.close().await;
                        break;
                    }
                    Err(back) => {
                        node = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops at once, as a crash: connections fail mid-call, nothing is flushed.
    pub async fn kill(mut self) {
        self.stop_background().await;
        if let Some(g) = self.gateway.take() {
            g.abort();
        }
        self.server.kill().await;
        if let Some(gc) = self.working_set_gc.take() {
            gc.kill().await;
        }
        if let Some(r) = self.representation {
            r.kill().await;
        }
    }

    /// Stops the audit and the start-up scan (work in progress is abandoned; a tx left
    /// Admitted is picked up at the next start).
    async fn stop_background(&mut self) {
        if let Some(p) = self.pruner.take() {
            p.shutdown().await;
        }
        if let Some(w) = self.holders_watch.take() {
            w.abort();
            let _ = w.await;
        }
        if let Some(a) = self.audit.take() {
            a.stop().await;
        }
        if let Some(r) = self.recovery.take() {
            r.abort();
            let _ = r.await;
        }
    }

    /// The contribution records of the storage audit, when it runs.
    pub fn contributions(&self) -> Option<&challenges::ContributionLog> {
        self.audit.as_ref().map(challenges::AuditHandle::log)
    }

    /// Waits for the start-up scan that finishes the holding of txs left Admitted by a
    /// crash; `None` when it did not run or failed (logged).
    pub async fn recovered(&mut self) -> Option<recovery::RecoveryReport> {
        self.recovery.take()?.await.ok().flatten()
    }

    /// The gateway's address, when it runs.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(::gateway::GatewayHandle::addr)
    }

    /// The representative, when this node is a member of its city's committee.
    pub fn representative(&self) -> Option<&crate::city::consensus::RepresentativeHandle> {
        self.representation
            .as_ref()
            .and_then(committee::Representation::representative)
    }

    /// The city's DPoS state, when this node is a representative.
    pub fn stake(&self) -> Option<&Arc<stake::StakeStore>> {
        self.representation
            .as_ref()
            .map(committee::Representation::stake)
    }

    /// Waits until the server stops by itself (an error) — for binaries that run until a
    /// signal arrives, use [`CityHandle::shutdown`] on the signal instead.
    pub async fn wait(&mut self) -> Result<()> {
        self.server.wait().await
    }
}

/// Light-node storage for a city: how to reach light nodes, who they are, the settings.
pub struct StorageParts {
    /// Transport to light nodes.
    pub transport: Arc<dyn pipeline::ShardTransport>,
    /// Live light nodes.
    pub directory: Arc<dyn pipeline::HolderDirectory>,
    /// Pipeline settings.
    pub config: pipeline::PipelineConfig,
}

/// Optional parts of a city node, wired in by the caller (binary or devnet).
#[derive(Default)]
pub struct CityParts {
    /// Light-node storage. Without it, txs are answered Admitted (stored locally only).
    pub storage: Option<StorageParts>,
    /// Proof of place.
    pub pop: Option<admission::PopCheck>,
    /// Flagger.
    pub flagger: Option<Arc<dyn flagging::Flagger>>,
    /// Membership of the city's committee (ordering and federation).
    pub committee: Option<committee::CommitteeParts>,
    /// The working set's settings (GC interval, capacity).
    pub working_set: working_set::WorkingSetConfig,
    /// The clock the working set's TTLs are measured on (default: the system clock).
    pub clock: Option<Arc<dyn dag_core::Clock>>,
}

impl std::fmt::Debug for CityParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityParts")
            .field("storage", &self.storage.is_some())
            .field("pop", &self.pop.is_some())
            .field("flagger", &self.flagger.is_some())
            .field("committee", &self.committee.is_some())
            .finish()
    }
}

/// Starts the city role: opens the store in `cfg.data_dir`, binds `cfg.listen` and serves
/// CityNode, gRPC health and reflection.
pub async fn start_city(cfg: &CityConfig, keypair: &Keypair) -> Result<CityHandle> {
    start_city_with(cfg, keypair, CityParts::default()).await
}

/// Like [`start_city`], with optional parts (light-node storage).
pub async fn start_city_with(
    cfg: &CityConfig,
    keypair: &Keypair,
    parts: CityParts,
) -> Result<CityHandle> {
    let cfg = &CityConfig {
        links: runtime::resolve_links(&cfg.links, &cfg.data_dir, keypair)?,
        ..cfg.clone()
    };
    let store = TxStore::open(&cfg.data_dir.join("txs.redb"))?;
    let verifier = Arc::new(BatchVerifier::new(cfg.verify_threads)?);
    let mut city = CityNode::new(keypair.node_id(), store, verifier.clone(), cfg.max_inflight);
    // Health needs k live holders when this city stores on light nodes.
    let mut holders: Option<(Arc<dyn pipeline::HolderDirectory>, usize)> = None;
    if let Some(sp) = parts.storage {
        holders = Some((sp.directory.clone(), usize::from(sp.config.erasure.k)));
        let pipeline = pipeline::Pipeline::start(
            sp.config,
            &cfg.data_dir.join("stripes.redb"),
            sp.transport,
            sp.directory,
            verifier,
        )?;
        city = city.with_pipeline(pipeline);
    }
    let mut archive_for_prune = None;
    if cfg.archive {
        let a = archive::RedbArchive::open_in_dir(&cfg.data_dir.join("archive"))
            .map_err(|source| Error::Archive { source })?;
        archive_for_prune = Some(a.clone());
        let writer =
            archive::ArchiveWriter::spawn(a.clone(), archive::ArchiveWriterConfig::default());
        city = city.with_archive(a, writer);
    }
    if let Some(pop) = parts.pop {
        city = city.with_pop(pop);
    }
    if let Some(f) = parts.flagger {
        city = city.with_flagger(f);
    }
    let working_set = Arc::new(working_set::CityWorkingSet::new(
        &parts.working_set,
        parts
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(runtime::SystemClock)),
        parts.committee.is_some(),
    ));
    city = city.with_working_set(working_set.clone());
    if let Some(home) = parts
        .committee
        .as_ref()
        .and_then(|cp| dag_core::CityId::new(cp.committee.city_id.clone()).ok())
    {
        city = city.with_home_city(home);
    }
    // Bind before starting the representative, so a taken port fails fast.
    let (listener, addr) = runtime::bind(cfg.listen).await?;
    let mut representation = None;
    let mut consensus_svc = None;
    if let Some(cp) = &parts.committee {
        let (r, svc) =
            committee::Representation::start(&cfg.data_dir, keypair, cp, &cfg.links).await?;
        city = city
            .with_ordering(r.order().clone(), r.submitter())
            .with_standby_gate(r.status());
        city = city.with_execution(r.execution().clone());
        city = city.with_stake_reads(r.stake_reads());
        representation = Some(r);
        consensus_svc = Some(svc);
    }
    let node = Arc::new(city);
    let working_set_gc = Some(working_set::WorkingSetGc::spawn(
        working_set,
        representation.as_ref().map(|r| r.order().clone()),
        parts.working_set.gc_interval,
    ));
    let mut pruner = None;
    if let Some(r) = representation.as_mut() {
        r.order().set_events(node.events().clone());
        r.spawn_resubmitter(node.clone());
        r.spawn_feed(node.clone());
        pruner = Some(prune::spawn(
            prune::Pruner::new(
                node.clone(),
                r.order().clone(),
                r.execution().clone(),
                archive_for_prune.take(),
            ),
            prune::PruneConfig::default(),
        ));
        if let Some(cp) = &parts.committee {
            r.spawn_stake_reporter(node.clone(), keypair, &cp.committee.city_id);
            r.spawn_relayer(keypair, cp);
        }
    }
    let recovery = recovery::spawn_finish_admitted(node.clone());
    let audit = match (node.pipeline(), cfg.audit.enabled) {
        (Some(p), true) => Some(challenges::spawn_audit(
            &cfg.audit,
            &cfg.data_dir,
            p,
            Arc::new(challenges::GrpcProbe::default()),
        )?),
        _ => None,
    };
    if let (Some(r), Some(a)) = (representation.as_ref(), audit.as_ref()) {
        r.use_challenge_results(a.log().clone());
    }
    let gateway = match &cfg.gateway {
        Some(gcfg) => {
            let (city_id, members) = match &parts.committee {
                Some(cp) => (
                    cp.committee.city_id.clone(),
                    cp.committee
                        .addresses
                        .iter()
                        .map(|(id, a)| (*id, a.clone()))
                        .collect(),
                ),
                None => (String::new(), Vec::new()),
            };
            let backend = Arc::new(gateway::CityGateway::new(
                node.clone(),
                keypair.clone(),
                city_id,
                members,
                repair_protocol::RepairConfig::default(),
            ));
            Some(
                ::gateway::Gateway::start(gcfg, backend, None)
                    .await
                    .map_err(|source| Error::Gateway { source })?,
            )
        }
        None => None,
    };
    let cross_city = parts
        .committee
        .as_ref()
        .map(|c| c.committee.city_id.clone());
    let served: &[&str] = if consensus_svc.is_some() {
        &[
            "citychain.v1.CityNodeService",
            "citychain.v1.ConsensusService",
            "citychain.v1.CrossCityService",
        ]
    } else {
        &["citychain.v1.CityNodeService"]
    };
    let (reporter, health, reflection, reflection_alpha) =
        runtime::health_reporter_and_reflection("citychain.v1.CityNodeService", served).await?;
    let readiness = runtime::Readiness::new(reporter, "citychain.v1.CityNodeService").await;
    // NOT_SERVING while the tx store is down after an I/O error; reopened by itself.
    node.store()
        .spawn_watchdog(readiness.clone(), Duration::from_millis(250));
    let svc = rpc::CityNodeService::new(node.clone()).into_server();
    let router = runtime::server_builder(false)
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(svc)
        .add_optional_service(consensus_svc)
        .add_optional_service(representation.as_ref().zip(cross_city).map(|(r, here)| {
            rpc::CrossCityGrpc::new(Arc::new(cross::CrossView {
                here,
                exec: r.execution().clone(),
            }))
            .into_server()
        }));
    let server = runtime::serve(listener, router, "city", &cfg.links);
    let holders_watch = match holders {
        Some((dir, k)) => Some(
            runtime::readiness::watch_holders(readiness.clone(), k, move || {
                dir.live_lights().len()
            })
            .await,
        ),
        None => None,
    };
    readiness.set(runtime::readiness::STARTING, true).await;
    tracing::info!(%addr, node_id = %keypair.node_id(), data_dir = %cfg.data_dir.display(),
        representative = representation.is_some(), "city node serving");
    Ok(CityHandle {
        server,
        node: Some(node),
        representation,
        gateway,
        working_set_gc,
        audit,
        recovery: Some(recovery),
        readiness,
        holders_watch,
        pruner,
    })
}

/// What the city role takes from its surroundings besides its config and key: where
/// membership lives, which polygons prove place, and how to reach light nodes. The binary
/// builds them from configuration ([`run_city`]); the devnet passes in-process ones.
#[derive(Clone)]
pub struct CityEnv {
    /// The presence store (Redis, HTTP or in-memory).
    pub presence: Arc<dyn PresenceStore>,
    /// Proof-of-place polygons (default: every shipped region).
    pub pop: Option<Arc<pop_geo::CachedIndex>>,
    /// Transport to light nodes (default: gRPC).
    pub transport: Option<Arc<dyn pipeline::ShardTransport>>,
    /// Pipeline settings.
    pub pipeline: pipeline::PipelineConfig,
    /// Pause after a departure before re-replicating (lets several departures settle).
    pub rereplicate_settle: Duration,
}

impl std::fmt::Debug for CityEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityEnv")
            .field("pop", &self.pop.is_some())
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

/// Runs the city role as an operator deploys it: connects presence from `m.nodelist`, then
/// [`run_city_with`] on the shipped polygons over gRPC.
pub async fn run_city(
    cfg: &CityConfig,
    key: &Keypair,
    m: &MembershipConfig,
) -> Result<RunningRole> {
    // Over http the presence server takes only logins this node's key signs.
    let presence = m
        .nodelist
        .connect_store_as(Some(Arc::new(key.clone())))
        .await
        .map_err(|source| Error::Presence { source })?;
    let env = CityEnv {
        presence,
        pop: None,
        transport: None,
        pipeline: pipeline::PipelineConfig {
            max_batches_in_flight: cfg.batches_in_flight.max(1),
            stripe_spacing: cfg.stripe_spacing,
            ..pipeline::PipelineConfig::default()
        },
        rereplicate_settle: Duration::from_millis(500),
    };
    run_city_with(cfg, key, m, env).await
}

/// The city role's composition root: a view of the city's light nodes from presence
/// (ranked by priority), proof of place, the default flagger, the light-node pipeline, the
/// gRPC server, its own presence login, and re-replication when a light node leaves.
pub async fn run_city_with(
    cfg: &CityConfig,
    key: &Keypair,
    m: &MembershipConfig,
    env: CityEnv,
) -> Result<RunningRole> {
    let cfg = &CityConfig {
        links: runtime::resolve_links(&cfg.links, &cfg.data_dir, key)?,
        ..cfg.clone()
    };
    // A bad events file stops the start before anything runs.
    let events = match &cfg.events {
        Some(path) => Some(Arc::new(
            pop_geo::EventCalendar::load(path).map_err(|source| Error::Events { source })?,
        )),
        None => None,
    };
    let watcher = NodeListManager::start(env.presence.clone(), None, m.nodelist.clone());
    let mut directory = placement::PriorityDirectory::new(
        NodeListDirectory::new(watcher.registry().clone(), Some(m.city_id.clone())),
        (m.lat, m.lon),
    );
    if let Some(ev) = events {
        directory = directory.with_events(ev);
    }
    if cfg.admission.min_stake.is_some() && cfg.genesis.is_none() {
        return Err(Error::AdmissionNeedsStake);
    }
    let directory = light_admission::AdmittedDirectory::new(directory, &cfg.admission);
    let stake_cell = directory.stake_cell();
    let directory = Arc::new(directory);
    let pop = match env.pop {
        Some(p) => p,
        None => {
            let index = pop_geo::shipped::all().map_err(|source| Error::Regions { source })?;
            Arc::new(pop_geo::CachedIndex::new(
                Arc::new(index),
                Default::default(),
            ))
        }
    };
    let flagger = flagging::FlaggerRegistry::with_defaults()
        .build(&flagging::FlaggingConfig::default())
        .map_err(|source| Error::Flagging { source })?;
    let committee = match &cfg.genesis {
        Some(path) => {
            let genesis = genesis::Genesis::load(path)?;
            let me = key.node_id();
            // A standby is no genesis member: it follows its configured city's committee.
            let committee = genesis::CommitteeSource::city_of(&genesis, &me)
                .or_else(|| {
                    cfg.standby
                        .then(|| genesis::CommitteeSource::committee(&genesis, &m.city_id))
                        .flatten()
                })
                .ok_or_else(|| {
                    Error::Membership(format!(
                        "node {me} is not a representative of any city in {} (set \
                         consensus.standby to follow {}'s committee until elected)",
                        path.display(),
                        m.city_id
                    ))
                })?;
            if committee.city_id != m.city_id {
                return Err(Error::Membership(format!(
                    "node {me} represents {} in {}, but is configured for city {}",
                    committee.city_id,
                    path.display(),
                    m.city_id
                )));
            }
            Some(committee::CommitteeParts {
                committee,
                continent: genesis.continent.clone(),
                consensus: (cfg.batch_interval_ms.is_some() || cfg.equivocate_for_test).then(
                    || {
                        let mut c = consensus::RepresentativeConfig::new(&cfg.data_dir);
                        if let Some(ms) = cfg.batch_interval_ms {
                            c = c.with_fixed_interval(ms);
                        }
                        c.equivocate_for_test = cfg.equivocate_for_test;
                        c
                    },
                ),
                accounts: genesis.accounts_of(&m.city_id),
                dpos: cfg.dpos.clone(),
                cities: genesis.cities.clone(),
                missed_rounds: cfg.missed_rounds,
                standby: cfg.standby,
            })
        }
        None => None,
    };
    let parts = CityParts {
        committee,
        storage: Some(StorageParts {
            transport: env.transport.unwrap_or_else(|| {
                Arc::new(transport::GrpcTransport::over(
                    transport::CONNECT_TIMEOUT,
                    cfg.links.clone(),
                ))
            }),
            directory,
            config: env.pipeline,
        }),
        pop: Some(admission::PopCheck {
            index: pop,
            mode: m.pop_mode,
        }),
        flagger: Some(flagger),
        ..CityParts::default()
    };
    let city = start_city_with(cfg, key, parts).await?;
    if let Some(stake) = city.stake() {
        let _ = stake_cell.set(stake.clone());
    }
    let info = node_info(
        key.node_id(),
        dag_core::Role::City,
        runtime::advertised_addr(city.addr(), m.advertise.as_deref()),
        &m.city_id,
        &m.zone,
        (m.lat, m.lon),
        0,
        runtime::now_ms(),
    );
    let login = NodeListManager::start(env.presence, Some(info), m.nodelist.clone());
    let rereplicator = city.node().pipeline().map(|p| {
        spawn_rereplicator(
            watcher.registry(),
            Arc::downgrade(p),
            env.rereplicate_settle,
        )
    });
    let gossip = crate::gossip::start(
        key,
        city.addr(),
        m.advertise.as_deref(),
        &m.city_id,
        &m.gossip,
        &[watcher.registry(), login.registry()],
    )
    .await?;
    Ok(RunningRole::city(city, watcher, login, rereplicator).with_gossip(gossip))
}
