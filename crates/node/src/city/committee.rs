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
    CommittedEvent, ConsensusGrpc, RepresentativeConfig, RepresentativeHandle, spawn_representative,
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
#[derive(Debug)]
pub(crate) struct Representation {
    rep: RepresentativeHandle,
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
    members: std::collections::BTreeMap<dag_core::NodeId, String>,
    pusher: Option<PusherHandle>,
    tasks: Vec<JoinHandle<()>>,
    relayer: Option<JoinHandle<()>>,
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
        if parts.committee.committee.authority(&me).is_none() {
            return Err(Error::Membership(format!(
                "node {me} is not a member of the committee of {}",
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
        if cfg.epochs.is_none() {
            cfg.epochs = Some(epoch_plan(
                parts.dpos.term_ms,
                stake.clone(),
                parts.committee.addresses.clone(),
            ));
        }
        let peers: HashMap<_, _> = parts
            .committee
            .addresses
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let left_out = cfg.epochs.clone().map(|plan| super::epochs::LeftOut {
            data_dir: cfg.data_dir.clone(),
            plan,
        });
        let (mut rep, svc) =
            spawn_representative(cfg, key.clone(), parts.committee.committee.clone(), peers)
                .await?;
        let mut tasks = Vec::new();
        // Each epoch's committee into the order store: the pusher hands the continent over.
        tasks.push(super::epochs::spawn_epoch_recorder(
            order.clone(),
            parts.committee.committee.clone(),
            rep.committee_watch(),
            rep.status(),
            left_out,
        ));
        let evidence = rep.take_evidence();
        let (summaries, missed) = mpsc::channel(super::stake_reporter::COMMIT_SUMMARIES);
        if let Some(commits) = rep.take_commits() {
            tasks.push(tokio::spawn(apply_commits(
                commits,
                order.clone(),
                summaries,
            )));
        }
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
                rep,
                order,
                execution,
                stake,
                evidence,
                sender: None,
                contributions: None,
                missed: Some(missed),
                missed_rule: parts.missed_rounds,
                challenge_log: Default::default(),
                challenge_incidents: None,
                challenge_results: Default::default(),
                feed: None,
                me,
                members: parts.committee.addresses.clone(),
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
            self.rep.status(),
            self.rep.committee_watch(),
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
                    self.rep.committee_watch(),
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

    /// The representative.
    pub(crate) fn representative(&self) -> &RepresentativeHandle {
        &self.rep
    }

    /// After a restart: once the replayed commits are recorded, proposes again the held
    /// txs that are neither ordered nor carried by the recovered DAG (they were only queued
    /// in memory when the process stopped).
    pub(crate) fn spawn_resubmitter(&mut self, node: Arc<CityNode>) {
        let in_flight = self.rep.in_flight().clone();
        let status = self.rep.status();
        let order = self.order.clone();
        let submitter = self.rep.submitter();
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
        let r = self.rep.shutdown().await;
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
        self.rep.kill().await;
        for t in &self.tasks {
            t.abort();
        }
        join_all(self.tasks).await;
        if let Some(s) = self.sender {
            s.shutdown().await;
        }
    }
}

/// The consensus committee changes with the dpos term: when the committed sequence ends a
/// term, the next committee is dpos's elected set, read once the execution feed applied
/// the epoch's last checkpoint (so every representative reads the same state).
///
/// Members must be reachable: dpos's `RegisterNode` carries no address, so only members
/// with an address in the genesis file can join a committee. When the elected set names
/// one without, the next epoch keeps the ending epoch's committee (the same decision on
/// every representative: it depends only on the state and the genesis file) and the node
/// logs an error and counts `citychain_consensus_committee_unreachable_total`.
fn epoch_plan(
    term_ms: u64,
    stake: Arc<StakeStore>,
    addresses: std::collections::BTreeMap<dag_core::NodeId, String>,
) -> crate::city::consensus::EpochPlan {
    use crate::city::consensus::{EpochEnd, EpochPlan};
    let next = move |end: EpochEnd| -> futures::future::BoxFuture<'static, Result<_>> {
        let (stake, addresses) = (stake.clone(), addresses.clone());
        Box::pin(async move {
            let mut applied = stake.subscribe();
            while stake.next_seq() <= end.last.sequence {
                if applied.changed().await.is_err() {
                    return Err(Error::Stopping("stake store"));
                }
            }
            let elected = stake.committee()?;
            let unreachable =
                unreachable_members(elected.authorities().iter().map(|a| a.id), &addresses);
            if unreachable.is_empty() {
                return Ok(elected);
            }
            tracing::error!(
                epoch = end.epoch + 1,
                ?unreachable,
                "elected representatives have no address; the next epoch keeps the committee"
            );
            metrics::counter!("citychain_consensus_committee_unreachable_total").increment(1);
            Ok(end.committee)
        })
    };
    EpochPlan {
        term_ms,
        next_committee: Arc::new(next),
    }
}

/// The members of an elected set that have no genesis address: when there is any, the
/// epoch plan keeps the ending epoch's committee (see [`epoch_plan`]); the stake reads
/// apply the same rule to say what the next epoch runs.
pub(crate) fn unreachable_members(
    elected: impl IntoIterator<Item = dag_core::NodeId>,
    addresses: &std::collections::BTreeMap<dag_core::NodeId, String>,
) -> Vec<dag_core::NodeId> {
    elected
        .into_iter()
        .filter(|id| !addresses.contains_key(id))
        .collect()
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
