//! A city node as one representative of its city's committee: the consensus driver (served
//! on the city's own gRPC address), the applier that records every commit in the
//! [`OrderStore`], the federation of committed checkpoints to the continent, and the
//! re-proposal after a restart of held txs that were only queued in memory.

use super::admission::CityNode;
use super::execution::{
    CommitteeBodies, ExecutedCheckpoints, Execution, FeedConfig, FeedHandle, spawn_feed,
    state_machines,
};
use super::order::OrderStore;
use super::stake::{DposApplier, StakeStore};
use super::stake_reporter::{
    SenderConfig, SystemTxSender, spawn_contribution_reporter, spawn_evidence_reporter,
};
use crate::city::consensus::{
    CommittedEvent, ConsensusGrpc, ConsensusInbox, EpochState, RepresentativeConfig,
    RepresentativeHandle, RepresentativeStatus, Submitter, spawn_representative_on,
};
use crate::federation_push::{
    CheckpointSource, PusherConfig, PusherHandle, spawn_checkpoint_pusher,
};
use crate::runtime::run_blocking;
use crate::{Error, Result};
use dag_core::consensus::BatchItem;
use genesis::{CityCommittee, LogNode};
use pqc::Keypair;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most items re-proposed in one submission after a restart.
const RESUBMIT_CHUNK: usize = 1_024;

/// The committee side of a running city node.
pub(crate) struct Representation {
    /// The driver of a member (started with the node).
    rep: Option<RepresentativeHandle>,
    /// The driver a standby started once elected.
    late_rep: Arc<tokio::sync::Mutex<Option<RepresentativeHandle>>>,
    /// A standby's follower (follows the committee, starts the driver once elected).
    standby: Option<JoinHandle<()>>,
    /// The driver's status (a standby's own until it is elected, then forwarded).
    status: tokio::sync::watch::Receiver<RepresentativeStatus>,
    /// The committee the driver runs (a standby: the one it follows).
    committee_rx: tokio::sync::watch::Receiver<dag_core::consensus::Committee>,
    submitter: Submitter,
    in_flight: std::collections::HashSet<BatchItem>,
    order: Arc<OrderStore>,
    execution: Arc<Execution>,
    stake: Arc<StakeStore>,
    evidence: Option<mpsc::UnboundedReceiver<dpos::DoubleSignEvidence>>,
    sender: Option<SystemTxSender>,
    contributions: Option<JoinHandle<()>>,
    /// Committed checkpoints' summaries for the missed-round monitor (taken when the stake
    /// reporter starts).
    missed: Option<mpsc::Receiver<super::stake_reporter::CommitSummary>>,
    missed_rule: super::stake_reporter::MissedRule,
    /// The storage audit's log, once the audit runs (failed-challenge incidents).
    challenge_log: Arc<std::sync::OnceLock<super::challenges::ContributionLog>>,
    /// Its reporter (runs until stopped, like the contribution reporter).
    challenge_incidents: Option<JoinHandle<()>>,
    challenge_results: super::stake_reporter::ChallengeSlot,
    feed: Option<FeedHandle>,
    me: dag_core::NodeId,
    /// The members' city addresses (genesis file and dpos endpoints).
    members: AddressBook,
    pusher: Option<PusherHandle>,
    tasks: Vec<JoinHandle<()>>,
    relayer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Representation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Representation")
            .field("me", &self.me)
            .field("standby", &self.standby.is_some())
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// Who the node is in its city and where its checkpoints go.
#[derive(Debug, Clone)]
pub struct CommitteeParts {
    /// The city's committee (this node must be a member).
    pub committee: CityCommittee,
    /// The continent to federate checkpoints to (None: no federation).
    pub continent: Option<LogNode>,
    /// The driver's settings (`data_dir` is replaced by the city's).
    pub consensus: Option<RepresentativeConfig>,
    /// The genesis allocation the ledger starts from.
    pub accounts: std::collections::BTreeMap<dag_core::AccountId, u64>,
    /// The DPoS rules the city's stake state runs (`<data_dir>/stake.redb`); its genesis is
    /// the committee's members self-bonded with their genesis stake.
    pub dpos: dpos::DposConfig,
    /// Every city of the genesis file (the directory cross-city transfers use).
    pub cities: std::collections::BTreeMap<String, genesis::CityCommittee>,
    /// When a representative that misses its leader slots is reported
    /// (`stake_reporter::missed`); the same on every representative of the city.
    pub missed_rounds: super::stake_reporter::MissedRule,
    /// Start as a standby when this node is not in the committee: follow the committee's
    /// checkpoints and join the epoch dpos elects it into (see `city::standby`).
    pub standby: bool,
}

impl Representation {
    /// Starts the representative of `key` in `parts.committee`, recording commits in
    /// `<data_dir>/order.redb`. Returns the Consensus service for the city's server.
    pub(crate) async fn start(
        data_dir: &Path,
        key: &Keypair,
        parts: &CommitteeParts,
        links: &rpc::tls::LinkSecurity,
    ) -> Result<(Self, ConsensusGrpc)> {
        let me = key.node_id();
        let dir = data_dir.to_path_buf();
        let persisted =
            run_blocking("consensus epoch state", move || EpochState::load(&dir)).await??;
        // A member: of the genesis committee, or of the epoch this node was elected into.
        let member = parts.committee.committee.authority(&me).is_some()
            || persisted
                .as_ref()
                .is_some_and(|st| st.committee().is_ok_and(|c| c.authority(&me).is_some()));
        if !member && !parts.standby {
            return Err(Error::Membership(format!(
                "node {me} is not a member of the committee of {} (start it as a standby to \
                 follow the committee until it is elected)",
                parts.committee.city_id
            )));
        }
        let path = data_dir.join("order.redb");
        let order = Arc::new(run_blocking("order store", move || OrderStore::open(&path)).await??);
        let (dir, accounts) = (data_dir.to_path_buf(), parts.accounts.clone());
        let (dpos_genesis, genesis_keys) =
            super::stake::dpos_genesis_of(&parts.committee, parts.dpos.clone())?;
        let (here, cities) = (parts.committee.city_id.clone(), parts.cities.clone());
        let (execution, stake) = run_blocking("state machines", move || {
            let (mut appliers, ledger) = state_machines(&dir, &accounts)?;
            super::cross::enable(&ledger, &here, &cities);
            let stake = Arc::new(StakeStore::open(
                &dir.join("stake.redb"),
                dpos_genesis,
                genesis_keys,
            )?);
            stake.use_ledger_nonces(ledger.clone());
            appliers.push(Arc::new(DposApplier {
                stake: stake.clone(),
                ledger: ledger.clone(),
            }));
            let exec = Execution::open(&dir.join("execution.redb"), appliers, Some(ledger))?;
            Ok::<_, Error>((Arc::new(exec), stake))
        })
        .await??;
        let mut cfg = parts
            .consensus
            .clone()
            .unwrap_or_else(|| RepresentativeConfig::new(data_dir));
        cfg.data_dir = data_dir.to_path_buf();
        cfg.links = links.clone();
        let genesis_addresses = parts.committee.addresses.clone();
        let addresses: AddressBook = {
            let (stake, genesis) = (stake.clone(), genesis_addresses.clone());
            Arc::new(move || member_addresses(&genesis, &stake))
        };
        if cfg.epochs.is_none() {
            cfg.epochs = Some(epoch_plan(
                parts.dpos.term_ms,
                stake.clone(),
                addresses.clone(),
            ));
        }
        let inbox = ConsensusInbox::new(cfg.inbound_queue);
        let svc = inbox.service();
        let submitter = inbox.submitter();
        let mut tasks = Vec::new();
        let (summaries, missed) = mpsc::channel(super::stake_reporter::COMMIT_SUMMARIES);
        let (evidence_tx, evidence) = mpsc::unbounded_channel();
        let launch = Launch {
            cfg,
            key: key.clone(),
            genesis: parts.committee.committee.clone(),
            addresses: addresses.clone(),
            order: order.clone(),
            summaries,
            evidence: evidence_tx,
        };
        let slot = Arc::new(tokio::sync::Mutex::new(None));
        let mut member_rep = None;
        let (status, committee_rx, in_flight, standby) = if member {
            let (rep, t) = launch.start(inbox).await?;
            tasks.extend(t);
            let out = (
                rep.status(),
                rep.committee_watch(),
                rep.in_flight().clone(),
                None,
            );
            member_rep = Some(rep);
            out
        } else {
            let (status_tx, status_rx) = tokio::sync::watch::channel(RepresentativeStatus {
                standby: true,
                ..RepresentativeStatus::default()
            });
            let genesis = parts.committee.committee.clone().with_epoch(0);
            let (committee_tx, committee_rx) = tokio::sync::watch::channel(genesis.clone());
            let plan =
                launch.cfg.epochs.clone().ok_or_else(|| {
                    Error::Membership("a standby needs the dpos epoch plan".into())
                })?;
            let (following, mut follow_rx) =
                tokio::sync::watch::channel(super::standby::Following {
                    epoch: 0,
                    first_seq: 0,
                    committee: genesis.clone(),
                });
            let standby = super::standby::Standby {
                me,
                data_dir: data_dir.to_path_buf(),
                order: order.clone(),
                plan,
                genesis,
                addresses: addresses.clone(),
                cfg: Default::default(),
                following,
            };
            let slot2 = slot.clone();
            let task = tokio::spawn(async move {
                let follow = super::standby::follow(standby);
                tokio::pin!(follow);
                // Publish the followed epoch until elected.
                let elected = loop {
                    tokio::select! {
                        r = &mut follow => break r,
                        c = follow_rx.changed() => {
                            if c.is_err() { continue; }
                            let f = follow_rx.borrow_and_update().clone();
                            committee_tx.send_replace(f.committee);
                            status_tx.send_modify(|s| {
                                s.epoch = f.epoch;
                                s.epoch_first_seq = f.first_seq;
                            });
                        }
                    }
                };
                match elected {
                    Ok(state) => {
                        tracing::info!(epoch = state.epoch, "standby starts its consensus driver");
                        match launch.start(inbox).await {
                            Ok((rep, mut t)) => {
                                t.push(forward(rep.status(), status_tx));
                                t.push(forward(rep.committee_watch(), committee_tx));
                                *slot2.lock().await = Some(rep);
                                // Helpers run until the node stops (aborted with it).
                                for h in t {
                                    let _ = h.await;
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "elected standby cannot start its driver")
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "standby stopped following"),
                }
            });
            (status_rx, committee_rx, Default::default(), Some(task))
        };
        // Checkpoints go up from the order store on disk once executed (the header carries
        // the state root): outages of any length are caught up from there, never from a
        // bounded queue.
        let pusher = match &parts.continent {
            Some(c) => Some(spawn_checkpoint_pusher(
                PusherConfig {
                    links: links.clone(),
                    ..PusherConfig::new(
                        c.address.clone(),
                        parts.committee.city,
                        c.public_key.clone(),
                    )
                },
                key.clone(),
                Arc::new(ExecutedCheckpoints {
                    order: order.clone(),
                    exec: execution.clone(),
                }) as Arc<dyn CheckpointSource>,
            )?),
            None => None,
        };
        Ok((
            Representation {
                rep: member_rep,
                late_rep: slot,
                standby,
                status,
                committee_rx,
                submitter,
                in_flight,
                order,
                execution,
                stake,
                evidence: Some(evidence),
                sender: None,
                contributions: None,
                missed: Some(missed),
                missed_rule: parts.missed_rounds,
                challenge_log: Default::default(),
                challenge_incidents: None,
                challenge_results: Default::default(),
                feed: None,
                me,
                members: addresses,
                pusher,
                tasks,
                relayer: None,
            },
            svc,
        ))
    }

    /// The order store.
    pub(crate) fn order(&self) -> &Arc<OrderStore> {
        &self.order
    }

    /// The state machines and the record of executed checkpoints.
    pub(crate) fn execution(&self) -> &Arc<Execution> {
        &self.execution
    }

    /// Starts the execution feed: committed checkpoints in order, bodies from `node` and
    /// the other representatives, to the state machines.
    pub(crate) fn spawn_feed(&mut self, node: Arc<CityNode>) {
        let bodies = Arc::new(CommitteeBodies::new(node, self.me, self.members.clone()));
        self.feed = Some(spawn_feed(
            self.execution.clone(),
            self.order.clone(),
            bodies,
            FeedConfig::default(),
        ));
    }

    /// The DPoS state (applied by the execution feed).
    pub(crate) fn stake(&self) -> &Arc<StakeStore> {
        &self.stake
    }

    /// The stake reads over this representative's dpos state, ledger and driver.
    pub(crate) fn stake_reads(&self) -> super::stake::reads::StakeReads {
        super::stake::reads::StakeReads::new(
            self.stake.clone(),
            self.execution.ledger().cloned(),
            self.status.clone(),
            self.committee_rx.clone(),
            self.members.clone(),
        )
    }

    /// Starts this representative's own system txs: equivocation evidence its consensus
    /// catches becomes a `DoubleSign` tx signed with `key`, submitted through `node`.
    pub(crate) fn spawn_stake_reporter(&mut self, node: Arc<CityNode>, key: &Keypair, city: &str) {
        let Ok(city) = dag_core::CityId::new(city.to_string()) else {
            tracing::error!(city, "no stake reporter: the city id is not valid");
            return;
        };
        let pipeline = node.pipeline().cloned();
        let sender = SystemTxSender::spawn(
            key.clone(),
            self.stake.clone(),
            node,
            SenderConfig {
                city,
                commit_timeout: Duration::from_secs(60),
            },
            None,
        );
        if let Some(ev) = self.evidence.take() {
            self.tasks.push(spawn_evidence_reporter(ev, sender.queue()));
        }
        // The monitor's incidents: a representative that missed every leader slot of a
        // window becomes a `ReportIncident` (see `stake_reporter::missed`).
        if let Some(summaries) = self.missed.take() {
            self.tasks
                .push(super::stake_reporter::spawn_missed_round_reporter(
                    self.missed_rule,
                    summaries,
                    self.committee_rx.clone(),
                    self.me,
                    sender.queue(),
                ));
        }
        // … and holders that failed this node's storage challenges (wrong proof, shard not
        // held) become `ReportIncident`s (see `stake_reporter::failed_challenges`).
        self.challenge_incidents = Some(super::stake_reporter::spawn_challenge_incident_reporter(
            self.challenge_log.clone(),
            self.stake.clone(),
            self.me,
            sender.queue(),
        ));
        // Rewards for holders: receipts of the stripes this representative placed, once
        // committed, become `RecordContribution` txs (see `stake_reporter::contributions`).
        if let Some(p) = pipeline {
            self.contributions = Some(spawn_contribution_reporter(
                self.stake.clone(),
                self.order.clone(),
                p,
                self.challenge_results.clone(),
                self.me,
                sender.queue(),
            ));
        }
        self.sender = Some(sender);
    }

    /// Lets the contribution reporter leave out holders that failed this node's storage
    /// challenges (the audit starts after the representative).
    pub(crate) fn use_challenge_results(&self, log: super::challenges::ContributionLog) {
        let _ = self.challenge_log.set(log.clone());
        let _ = self.challenge_results.set(Arc::new(log));
    }

    /// Starts the relayer of cross-city statements (see [`super::cross`]).
    pub(crate) fn spawn_relayer(&mut self, key: &Keypair, parts: &CommitteeParts) {
        if let Some(r) = super::cross::Relayer::new(
            &parts.committee,
            self.me,
            key.clone(),
            self.execution.clone(),
            self.order.clone(),
            &parts.cities,
        ) {
            self.relayer = Some(r.spawn());
        }
    }

    /// The driver, when this node started as a member (a standby's driver, started once
    /// it is elected, is not exposed here).
    pub(crate) fn representative(&self) -> Option<&RepresentativeHandle> {
        self.rep.as_ref()
    }

    /// Where held txs go to be proposed (queued until a standby's driver starts).
    pub(crate) fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// The driver's status (a standby's own until it is elected).
    pub(crate) fn status(&self) -> tokio::sync::watch::Receiver<RepresentativeStatus> {
        self.status.clone()
    }

    /// After a restart: once the replayed commits are recorded, proposes again the held
    /// txs that are neither ordered nor carried by the recovered DAG (they were only queued
    /// in memory when the process stopped).
    pub(crate) fn spawn_resubmitter(&mut self, node: Arc<CityNode>) {
        let in_flight = self.in_flight.clone();
        let status = self.status.clone();
        let order = self.order.clone();
        let submitter = self.submitter.clone();
        self.tasks.push(tokio::spawn(async move {
            // The driver replays its commits first; wait until the order store holds them.
            let replayed = {
                let mut status = status.clone();
                let _ = tokio::time::timeout(Duration::from_secs(2), status.changed()).await;
                status.borrow().committed
            };
            let mut sub = order.subscribe();
            while order.committed() < replayed {
                if sub.changed().await.is_err() {
                    return;
                }
            }
            let n2 = node.clone();
            let ids = match run_blocking("resubmit scan", move || n2.unordered_held_ids()).await {
                Ok(Ok(ids)) => ids,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot list held txs to re-propose");
                    return;
                }
                Err(_) => return,
            };
            let items: Vec<BatchItem> = ids
                .into_iter()
                .map(BatchItem::Tx)
                .filter(|i| !in_flight.contains(i))
                .collect();
            if items.is_empty() {
                return;
            }
            tracing::info!(
                count = items.len(),
                "re-proposing held txs that were queued when the node stopped"
            );
            for chunk in items.chunks(RESUBMIT_CHUNK) {
                if submitter.submit(chunk.to_vec()).await.is_err() {
                    return;
                }
            }
        }));
    }

    /// Stops the representative (its driver finishes the current group) and its tasks.
    pub(crate) async fn shutdown(self) -> Result<()> {
        stop_task(self.contributions).await;
        stop_task(self.challenge_incidents).await;
        if let Some(r) = self.relayer {
            r.abort();
        }
        if let Some(p) = self.pusher {
            p.shutdown().await;
        }
        if let Some(f) = self.feed {
            f.shutdown().await;
        }
        let rep = take_driver(self.rep, self.standby, &self.late_rep).await;
        let r = match rep {
            Some(rep) => rep.shutdown().await,
            None => Ok(()),
        };
        join_all(self.tasks).await;
        if let Some(s) = self.sender {
            s.shutdown().await;
        }
        r
    }

    /// Stops at once, as a crash.
    pub(crate) async fn kill(self) {
        stop_task(self.contributions).await;
        stop_task(self.challenge_incidents).await;
        if let Some(r) = self.relayer {
            r.abort();
        }
        if let Some(p) = self.pusher {
            p.kill().await;
        }
        if let Some(f) = self.feed {
            f.kill().await;
        }
        if let Some(rep) = take_driver(self.rep, self.standby, &self.late_rep).await {
            rep.kill().await;
        }
        for t in &self.tasks {
            t.abort();
        }
        join_all(self.tasks).await;
        if let Some(s) = self.sender {
            s.shutdown().await;
        }
    }
}

/// The members' city addresses, read when needed: the genesis file's, overridden by the
/// endpoints full nodes published in dpos (`SetEndpoint`).
pub(crate) type AddressBook =
    Arc<dyn Fn() -> std::collections::BTreeMap<dag_core::NodeId, String> + Send + Sync>;

/// The genesis addresses with dpos's published endpoints over them.
fn member_addresses(
    genesis: &std::collections::BTreeMap<dag_core::NodeId, String>,
    stake: &StakeStore,
) -> std::collections::BTreeMap<dag_core::NodeId, String> {
    let mut out = genesis.clone();
    if let Ok(endpoints) = stake.endpoints() {
        out.extend(endpoints);
    }
    out
}

/// The consensus committee changes with the dpos term: when the committed sequence ends a
/// term, the next committee is dpos's elected set, read once the execution feed applied
/// the epoch's last checkpoint (so every representative reads the same state).
///
/// Members must be reachable: a member's address is its genesis one or the endpoint it
/// published (`SetEndpoint`). When the elected set names one with neither, the next epoch
/// keeps the ending epoch's committee (the same decision on every representative: it
/// depends only on the state and the genesis file — an endpoint published in the very
/// checkpoints after a term's last one may be read by some members and not others, so a
/// candidate publishes it before the term ends) and the node logs an error and counts
/// `citychain_consensus_committee_unreachable_total`.
fn epoch_plan(
    term_ms: u64,
    stake: Arc<StakeStore>,
    addresses: AddressBook,
) -> crate::city::consensus::EpochPlan {
    use crate::city::consensus::{EpochEnd, EpochPlan, NextEpoch};
    let next = move |end: EpochEnd| -> futures::future::BoxFuture<'static, Result<NextEpoch>> {
        let (stake, addresses) = (stake.clone(), addresses.clone());
        Box::pin(async move {
            let mut applied = stake.subscribe();
            while stake.next_seq() <= end.last.sequence {
                if applied.changed().await.is_err() {
                    return Err(Error::Stopping("stake store"));
                }
            }
            let elected = stake.committee()?;
            let addresses = addresses();
            let unreachable =
                unreachable_members(elected.authorities().iter().map(|a| a.id), &addresses);
            if unreachable.is_empty() {
                return Ok(NextEpoch {
                    committee: elected,
                    addresses,
                });
            }
            tracing::error!(
                epoch = end.epoch + 1,
                ?unreachable,
                "elected representatives have no address; the next epoch keeps the committee"
            );
            metrics::counter!("citychain_consensus_committee_unreachable_total").increment(1);
            Ok(NextEpoch {
                committee: end.committee,
                addresses,
            })
        })
    };
    EpochPlan {
        term_ms,
        next_committee: Arc::new(next),
    }
}

/// The members of an elected set that have no address (genesis or dpos endpoint): when
/// there is any, the epoch plan keeps the ending epoch's committee (see [`epoch_plan`]);
/// the stake reads apply the same rule to say what the next epoch runs.
pub(crate) fn unreachable_members(
    elected: impl IntoIterator<Item = dag_core::NodeId>,
    addresses: &std::collections::BTreeMap<dag_core::NodeId, String>,
) -> Vec<dag_core::NodeId> {
    elected
        .into_iter()
        .filter(|id| !addresses.contains_key(id))
        .collect()
}

/// What starting the driver needs (at once for a member, once elected for a standby).
struct Launch {
    cfg: RepresentativeConfig,
    key: Keypair,
    genesis: dag_core::consensus::Committee,
    addresses: AddressBook,
    order: Arc<OrderStore>,
    summaries: mpsc::Sender<super::stake_reporter::CommitSummary>,
    evidence: mpsc::UnboundedSender<dpos::DoubleSignEvidence>,
}

impl Launch {
    /// Starts the driver on `inbox` (it loads a persisted epoch state, else runs the
    /// genesis committee); its commits go to the order store, its evidence out.
    async fn start(
        self,
        inbox: ConsensusInbox,
    ) -> Result<(RepresentativeHandle, Vec<JoinHandle<()>>)> {
        let me = self.key.node_id();
        let peers: HashMap<_, _> = (self.addresses)()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .collect();
        let left_out = self.cfg.epochs.clone().map(|plan| super::epochs::LeftOut {
            data_dir: self.cfg.data_dir.clone(),
            plan,
        });
        let genesis = self.genesis.clone();
        let mut rep =
            spawn_representative_on(self.cfg, self.key, self.genesis, peers, inbox).await?;
        let mut tasks = Vec::new();
        // Each epoch's committee into the order store: the pusher hands the continent over.
        tasks.push(super::epochs::spawn_epoch_recorder(
            self.order.clone(),
            genesis,
            rep.committee_watch(),
            rep.status(),
            left_out,
        ));
        if let Some(commits) = rep.take_commits() {
            tasks.push(tokio::spawn(apply_commits(
                commits,
                self.order,
                self.summaries,
            )));
        }
        if let Some(mut ev) = rep.take_evidence() {
            let out = self.evidence;
            tasks.push(tokio::spawn(async move {
                while let Some(e) = ev.recv().await {
                    if out.send(e).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok((rep, tasks))
    }
}

/// Copies every value of `from` into `to` until either side closes.
fn forward<T: Clone + Send + Sync + 'static>(
    mut from: tokio::sync::watch::Receiver<T>,
    to: tokio::sync::watch::Sender<T>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let v = from.borrow_and_update().clone();
            to.send_replace(v);
            if from.changed().await.is_err() || to.is_closed() {
                return;
            }
        }
    })
}

/// The driver to stop: a member's, or the one a standby started once elected (its
/// follower is stopped first, so it starts none after this).
async fn take_driver(
    rep: Option<RepresentativeHandle>,
    standby: Option<JoinHandle<()>>,
    late: &tokio::sync::Mutex<Option<RepresentativeHandle>>,
) -> Option<RepresentativeHandle> {
    if let Some(t) = standby {
        t.abort();
        let _ = t.await;
    }
    match rep {
        Some(r) => Some(r),
        None => late.lock().await.take(),
    }
}

/// Aborts a task that runs until stopped and waits for it (a panic is logged).
async fn stop_task(task: Option<JoinHandle<()>>) {
    if let Some(t) = task {
        t.abort();
        join_all(vec![t]).await;
    }
}

/// Waits for `tasks`; their panics are logged (they are bugs, but a stopping node should
/// still stop).
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        if let Err(e) = t.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "representative task panicked");
        }
    }
}

/// Records every committed sub-DAG in commit order. A failure to record stops the applier
/// (the commit stays in the consensus records and is replayed on restart).
async fn apply_commits(
    mut commits: mpsc::UnboundedReceiver<CommittedEvent>,
    order: Arc<OrderStore>,
    summaries: mpsc::Sender<super::stake_reporter::CommitSummary>,
) {
    while let Some(ev) = commits.recv().await {
        // The missed-round monitor: dropped when it lags (it restarts after a gap).
        if let Some(s) = super::stake_reporter::CommitSummary::of(&ev.sub_dag) {
            let _ = summaries.try_send(s);
        }
        let o = order.clone();
        let seq = ev.sub_dag.checkpoint.sequence;
        match run_blocking("order store", move || {
            o.apply(&ev.sub_dag, ev.committed_at_ms)
        })
        .await
        {
            Ok(Ok(a)) => {
                if a.duplicates > 0 {
                    tracing::warn!(seq, duplicates = a.duplicates, "items committed twice");
                    metrics::counter!("citychain_duplicate_commits_total").increment(a.duplicates);
                }
                metrics::counter!("citychain_ordered_txs_total").increment(a.txs);
            }
            Ok(Err(e)) => {
                tracing::error!(seq, error = %e, "commit not recorded; stopping the applier");
                return;
            }
            Err(_) => return,
        }
    }
}
