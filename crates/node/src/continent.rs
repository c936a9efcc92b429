//! The continent role: serves `Federation` over a persistent RFC 6962 Merkle log of cities'
//! quorum-certified checkpoint headers, and pushes its signed tree head to the global.
//!
//! - **Quorum.** A push carries a [`CertifiedCheckpoint`]. Every signature must be a
//!   member's and valid (else `NotMember` / `BadSignature`, nothing kept). One signature is
//!   a *share*: the continent pools shares of an identical header — only members, only for
//!   sequences in `[next, next + pool_window)`, one share per member and sequence (a newer
//!   share for another header replaces the older) — and appends once the pooled stake is a
//!   quorum; until then the push answers the retryable `AwaitingQuorum { have, need }`.
//!   More than one signature is a full certificate and must be a quorum by itself
//!   (`NoQuorum`). The leaf is the header with exactly the signatures that made the quorum.
//! - **Continuity.** Per city, only `sequence == next` with `prev_hash ==` the last logged
//!   running hash is appended (`Gap { expected }` / `WrongPrev`); another header at a logged
//!   sequence is a `Fork`. Re-pushing a logged checkpoint answers its stored proof.
//! - **Durability.** Leaf, certificate and the signed receipt are written in one fsynced
//!   redb transaction (`<data_dir>/continent.redb`) before anyone is answered; on restart
//!   the log is rebuilt and every city's chain re-checked ([`crate::Error::LogCorrupt`]).
//! - **Upward.** With a [`GlobalTarget`], a task pushes the newest signed tree head to the
//!   global every `head_push_interval` when it changed, with a consistency proof from the
//!   size the global last logged; outages of any length only delay it. The newest head
//!   the global logged (receipt checked, inclusion path fetched) is served as a
//!   [`GlobalAnchor`] for any receipt it covers (`GetGlobalAnchor`).

use crate::fed_log::{FedServer, PersistentLog, blocking, fed_store};
use crate::{Error, Result};
use dag_core::consensus::{Committee, Stake};
use dag_core::merkle::{ConsistencyProof, InclusionProof};
use dag_core::{Hash32, NodeId, Signer};
use pqc::{Keypair, MlDsa87};
use resilience::RetryPolicy;
use rpc::{
    CertifiedCheckpoint, CheckpointHeader, CityHead, FederationClient, FederationError,
    FederationHandler, FederationProof, GlobalAnchor, InclusionReceipt, LogKind, ProofAnswer,
    SignedTreeHead, TreeHeadPush, quorum_stake,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type FedResult<T> = std::result::Result<T, FederationError>;

/// A city the continent accepts checkpoints from: its id and its committee.
#[derive(Debug, Clone)]
pub struct CityCommittee {
    /// The city id headers carry.
    pub city: Hash32,
    /// The representatives (public keys, stake) whose 2f + 1 certify its checkpoints.
    pub committee: Committee,
}

impl CityCommittee {
    /// Every city's committee named in `genesis`.
    pub fn from_genesis(genesis: &genesis::Genesis) -> Vec<CityCommittee> {
        genesis
            .cities
            .values()
            .map(|c| CityCommittee {
                city: c.city,
                committee: c.committee.clone(),
            })
            .collect()
    }
}

impl GlobalTarget {
    /// The global log named in `genesis`, if any.
    pub fn from_genesis(genesis: &genesis::Genesis) -> Option<GlobalTarget> {
        genesis.global.as_ref().map(|g| GlobalTarget {
            addr: g.address.clone(),
            public_key: g.public_key.clone(),
        })
    }
}

/// Where the continent pushes its tree heads.
#[derive(Debug, Clone)]
pub struct GlobalTarget {
    /// The global's gRPC address.
    pub addr: String,
    /// The global's public key (to check its receipts).
    pub public_key: Vec<u8>,
}

/// Configuration of the continent role.
#[derive(Debug, Clone)]
pub struct ContinentConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory of `continent.redb`.
    pub data_dir: PathBuf,
    /// The cities accepted.
    pub cities: Vec<CityCommittee>,
    /// Sequences ahead of the next expected one whose shares are pooled (default 16).
    pub pool_window: u64,
    /// The global log, if any.
    pub global: Option<GlobalTarget>,
    /// Period of the tree-head push to the global (default 500 ms).
    pub head_push_interval: Duration,
    /// Mutual TLS for the server and the push to the global, which must prove the NodeId
    /// of `global.public_key`. Default: TLS with the identity in `data_dir`; plaintext
    /// only when set to `Insecure` explicitly.
    pub links: rpc::tls::LinkSecurity,
}

impl ContinentConfig {
    /// Defaults: a pool window of 16 sequences, no global, 500 ms head pushes.
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        cities: Vec<CityCommittee>,
    ) -> Self {
        ContinentConfig {
            listen,
            data_dir: data_dir.into(),
            cities,
            pool_window: 16,
            global: None,
            head_push_interval: Duration::from_millis(500),
            links: rpc::tls::LinkSecurity::default(),
        }
    }
}

/// Shares pooled for one (city, sequence).
#[derive(Debug, Default)]
struct SeqPool {
    /// header → member → signature.
    by_header: HashMap<CheckpointHeader, BTreeMap<NodeId, Vec<u8>>>,
}

impl SeqPool {
    /// Adds a member's share (replacing its share for another header); returns the pooled
    /// stake for `header`.
    fn add(
        &mut self,
        committee: &Committee,
        header: CheckpointHeader,
        id: NodeId,
        sig: Vec<u8>,
    ) -> Stake {
        for (h, sigs) in self.by_header.iter_mut() {
            if *h != header {
                sigs.remove(&id);
            }
        }
        self.by_header.retain(|_, s| !s.is_empty());
        let sigs = self.by_header.entry(header).or_default();
        sigs.insert(id, sig);
        sigs.keys().map(|id| committee.stake_of(id)).sum()
    }

    /// A header whose pooled shares are a quorum.
    fn quorum(&self, committee: &Committee) -> Option<CertifiedCheckpoint> {
        self.by_header.iter().find_map(|(h, sigs)| {
            let stake: Stake = sigs.keys().map(|id| committee.stake_of(id)).sum();
            committee.is_quorum(stake).then(|| {
                CertifiedCheckpoint::new(*h, sigs.iter().map(|(i, s)| (*i, s.clone())).collect())
            })
        })
    }
}

#[derive(Debug)]
struct CityState {
    /// Next sequence to append.
    next: u64,
    /// Running hash of the last logged checkpoint (zero when none).
    last_hash: Hash32,
    /// Logged sequence → (leaf index, header).
    logged: HashMap<u64, (u64, CheckpointHeader)>,
    /// Pooled shares by sequence (within the window).
    pools: BTreeMap<u64, SeqPool>,
}

#[derive(Debug)]
struct State {
    log: PersistentLog,
    cities: HashMap<Hash32, CityState>,
    /// The last signed head (re-signed when the size changes).
    head: Option<SignedTreeHead>,
}

/// The continent's persistent log. Implements [`FederationHandler`] (through
/// [`ContinentNode`]); the blocking methods are what the handler runs off the reactor.
pub struct ContinentLog {
    state: parking_lot::Mutex<State>,
    /// The newest head the global logged, with its receipt and inclusion path there.
    anchor: parking_lot::Mutex<Option<(SignedTreeHead, InclusionReceipt, InclusionProof)>>,
    key: Keypair,
    committees: HashMap<Hash32, Committee>,
    pool_window: u64,
}

impl std::fmt::Debug for ContinentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinentLog")
            .field("log", &self.state.lock().log)
            .finish_non_exhaustive()
    }
}

fn decode_leaf(
    path: &Path,
    index: u64,
    value: &[u8],
    receipt: &[u8],
) -> Result<(CertifiedCheckpoint, InclusionReceipt)> {
    let bad = |reason: String| Error::LogCorrupt {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let c = CertifiedCheckpoint::decode(value).map_err(|e| bad(format!("certificate: {e}")))?;
    let r = InclusionReceipt::decode(receipt).map_err(|e| bad(format!("receipt: {e}")))?;
    if r.log_index != index || r.leaf != c.leaf_hash() {
        return Err(bad("receipt is not for this leaf".into()));
    }
    Ok((c, r))
}

impl ContinentLog {
    /// Opens (or creates) the log at `path`, signing with `key`, accepting `cities`; every
    /// configured city's logged chain is re-checked (sequence and prev-hash continuity).
    pub fn open(
        path: &Path,
        key: Keypair,
        cities: &[CityCommittee],
        pool_window: u64,
    ) -> Result<Self> {
        let (log, stored) = PersistentLog::open(path)?;
        let mut states: HashMap<Hash32, CityState> = cities
            .iter()
            .map(|c| {
                (
                    c.city,
                    CityState {
                        next: 0,
                        last_hash: Hash32([0; 32]),
                        logged: HashMap::new(),
                        pools: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for (index, leaf) in stored.iter().enumerate() {
            let index = index as u64;
            let (c, _) = decode_leaf(path, index, &leaf.value, &leaf.receipt)?;
            let h = c.header;
            let Some(cs) = states.get_mut(&h.city) else {
                tracing::warn!(city = %h.city.short(), index, "logged city is no longer configured");
                continue;
            };
            if h.sequence != cs.next || h.prev_hash != cs.last_hash {
                return Err(Error::LogCorrupt {
                    path: path.to_path_buf(),
                    index,
                    reason: format!(
                        "city {} sequence {} does not continue its chain (expected {})",
                        h.city.short(),
                        h.sequence,
                        cs.next
                    ),
                });
            }
            cs.next += 1;
            cs.last_hash = h.running_hash;
            cs.logged.insert(h.sequence, (index, h));
        }
        Ok(ContinentLog {
            state: parking_lot::Mutex::new(State {
                log,
                cities: states,
                head: None,
            }),
            anchor: parking_lot::Mutex::new(None),
            committees: cities
                .iter()
                .map(|c| (c.city, c.committee.clone()))
                .collect(),
            key,
            pool_window: pool_window.max(1),
        })
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.state.lock().log.size()
    }

    /// The current root.
    pub fn root(&self) -> Hash32 {
        self.state.lock().log.root()
    }

    /// The continent's node id (the log id in its receipts and tree heads).
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The continent's public key (to verify its receipts).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().to_vec()
    }

    /// Where the log stands for `city`.
    pub fn city_head(&self, city: &Hash32) -> FedResult<CityHead> {
        let st = self.state.lock();
        let cs = st
            .cities
            .get(city)
            .ok_or(FederationError::UnknownCity { city: *city })?;
        Ok(CityHead {
            next_sequence: cs.next,
            last_running_hash: cs.last_hash,
        })
    }

    /// Checks, pools and (at a quorum) logs `c` — see the module docs. Blocking: signature
    /// checks, fsync, signing.
    pub fn push_blocking(&self, c: &CertifiedCheckpoint) -> FedResult<FederationProof> {
        let h = c.header;
        let committee = self
            .committees
            .get(&h.city)
            .ok_or(FederationError::UnknownCity { city: h.city })?;
        if c.signatures.is_empty() {
            return Err(FederationError::Malformed(
                "a push needs at least one signature".into(),
            ));
        }
        // Outside the lock: the signature checks are the expensive part.
        let stake = c.verify_signatures(committee, &MlDsa87)?;
        let need = quorum_stake(committee);
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let cs = st
            .cities
            .get_mut(&h.city)
            .ok_or(FederationError::UnknownCity { city: h.city })?;
        if let Some(&(index, logged)) = cs.logged.get(&h.sequence) {
            if logged != h {
                return Err(FederationError::Fork {
                    city: h.city,
                    sequence: h.sequence,
                });
            }
            return proof_of(&st.log, index);
        }
        let full = c.signatures.len() > 1;
        if full && !committee.is_quorum(stake) {
            return Err(FederationError::NoQuorum {
                city: h.city,
                sequence: h.sequence,
                have: stake,
                need,
            });
        }
        if h.sequence > cs.next {
            if !full && h.sequence < cs.next + self.pool_window {
                let (id, sig) = &c.signatures[0];
                cs.pools
                    .entry(h.sequence)
                    .or_default()
                    .add(committee, h, *id, sig.clone());
            }
            return Err(FederationError::Gap {
                city: h.city,
                expected: cs.next,
                got: h.sequence,
            });
        }
        if h.prev_hash != cs.last_hash {
            return Err(FederationError::WrongPrev {
                city: h.city,
                sequence: h.sequence,
            });
        }
        let certified = if full {
            c.clone()
        } else {
            let (id, sig) = &c.signatures[0];
            let pool = cs.pools.entry(h.sequence).or_default();
            let have = pool.add(committee, h, *id, sig.clone());
            match pool.quorum(committee) {
                Some(q) if q.header == h => q,
                _ => {
                    return Err(FederationError::AwaitingQuorum {
                        city: h.city,
                        sequence: h.sequence,
                        have,
                        need,
                    });
                }
            }
        };
        let index = self.append(&mut st.log, cs, &certified)?;
        // Pooled shares ahead may now complete the following sequences.
        while let Some(next) = cs.pools.get(&cs.next).and_then(|p| p.quorum(committee)) {
            if next.header.prev_hash != cs.last_hash {
                cs.pools.remove(&cs.next);
                break;
            }
            self.append(&mut st.log, cs, &next)?;
        }
        proof_of(&st.log, index)
    }

    fn append(
        &self,
        log: &mut PersistentLog,
        cs: &mut CityState,
        c: &CertifiedCheckpoint,
    ) -> FedResult<u64> {
        let key = &self.key;
        let (index, _) = log
            .append(&c.encode(), |index, size, root, leaf| {
                InclusionReceipt::sign(LogKind::Continent, index, size, root, leaf, key).encode()
            })
            .map_err(fed_store)?;
        cs.next = c.header.sequence + 1;
        cs.last_hash = c.header.running_hash;
        cs.logged.insert(c.header.sequence, (index, c.header));
        let next = cs.next;
        cs.pools.retain(|seq, _| *seq >= next);
        metrics::counter!("continent_checkpoints_logged").increment(1);
        Ok(index)
    }

    /// The current signed tree head (signed again only when the size changed).
    pub fn tree_head(&self) -> SignedTreeHead {
        let mut st = self.state.lock();
        let st = &mut *st;
        crate::fed_log::signed_head(&st.log, &mut st.head, &self.key)
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current).
    pub fn proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        self.state.lock().log.inclusion(index, tree_size)
    }

    /// The consistency proof from `old` to `new` (0 = current).
    pub fn consistency(&self, old: u64, new: u64) -> FedResult<ConsistencyProof> {
        self.state.lock().log.consistency(old, new)
    }

    /// The newest head the global logged, if it covers the tree of `tree_size`, with the
    /// consistency proof from `tree_size` (the anchor is kept in memory: after a restart
    /// it is back once the next head push is acknowledged).
    pub fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        let anchor = self.anchor.lock().clone();
        let Some((head, receipt, proof)) = anchor else {
            return Err(FederationError::NotYetAnchored {
                tree_size,
                anchored: 0,
            });
        };
        if head.size < tree_size || tree_size == 0 {
            return Err(FederationError::NotYetAnchored {
                tree_size,
                anchored: head.size,
            });
        }
        let consistency = self.consistency(tree_size, head.size)?;
        Ok(GlobalAnchor {
            head,
            consistency,
            receipt,
            proof,
        })
    }

    fn set_anchor(&self, head: SignedTreeHead, receipt: InclusionReceipt, proof: InclusionProof) {
        *self.anchor.lock() = Some((head, receipt, proof));
    }
}

/// The stored certificate, receipt and inclusion path (at the receipt's size) of `index`.
fn proof_of(log: &PersistentLog, index: u64) -> FedResult<FederationProof> {
    let leaf = log.read(index).map_err(fed_store)?;
    let (certified, receipt) =
        decode_leaf(log.path(), index, &leaf.value, &leaf.receipt).map_err(fed_store)?;
    let a = log.inclusion(index, receipt.tree_size)?;
    Ok(FederationProof {
        certified,
        root: receipt.root,
        receipt,
        proof: a.proof,
    })
}

/// [`FederationHandler`] over a shared [`ContinentLog`].
#[derive(Debug, Clone)]
pub struct ContinentNode(pub Arc<ContinentLog>);

impl FederationHandler for ContinentNode {
    async fn push_checkpoint(&self, c: CertifiedCheckpoint) -> FedResult<FederationProof> {
        let log = self.0.clone();
        blocking(move || log.push_blocking(&c)).await
    }

    async fn city_head(&self, city: Hash32) -> FedResult<CityHead> {
        self.0.city_head(&city)
    }

    async fn tree_head(&self) -> FedResult<SignedTreeHead> {
        let log = self.0.clone();
        blocking(move || Ok(log.tree_head())).await
    }

    async fn inclusion_proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        self.0.proof(index, tree_size)
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> FedResult<ConsistencyProof> {
        self.0.consistency(old, new)
    }

    async fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        self.0.global_anchor(tree_size)
    }
}

/// A running continent. Call [`ContinentHandle::shutdown`] (graceful) or
/// [`ContinentHandle::kill`] (abrupt, as a crash).
#[derive(Debug)]
pub struct ContinentHandle {
    server: FedServer,
    log: Arc<ContinentLog>,
    head_pusher: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    global_acked: watch::Receiver<u64>,
}

impl ContinentHandle {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    /// The log (size, root, keys).
    pub fn log(&self) -> &Arc<ContinentLog> {
        &self.log
    }
    /// The size of the newest tree head the global has logged (0 before the first).
    pub fn global_acked(&self) -> watch::Receiver<u64> {
        self.global_acked.clone()
    }
    /// Stops the head pusher, stops accepting, lets in-flight calls finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some((stop, task)) = self.head_pusher.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.server.shutdown().await
    }
    /// Stops every task at once.
    pub async fn kill(mut self) {
        if let Some((_, task)) = self.head_pusher.take() {
            task.abort();
            let _ = task.await;
        }
        self.server.kill().await;
    }
}

/// Starts the continent role: opens `<data_dir>/continent.redb`, binds `cfg.listen`, serves
/// Federation, gRPC health and reflection, and pushes tree heads to `cfg.global`.
pub async fn start_continent(cfg: &ContinentConfig, key: Keypair) -> Result<ContinentHandle> {
    let cfg = &ContinentConfig {
        links: crate::runtime::resolve_links(&cfg.links, &cfg.data_dir, &key)?,
        ..cfg.clone()
    };
    let path = cfg.data_dir.join("continent.redb");
    let cities = cfg.cities.clone();
    let window = cfg.pool_window;
    let log = crate::runtime::run_blocking("continent log", move || {
        ContinentLog::open(&path, key, &cities, window)
    })
    .await??;
    let log = Arc::new(log);
    let server =
        FedServer::start(cfg.listen, Arc::new(ContinentNode(log.clone())), &cfg.links).await?;
    let (acked_tx, global_acked) = watch::channel(0u64);
    let head_pusher = match &cfg.global {
        Some(g) => {
            let client = FederationClient::lazy_over(
                &g.addr,
                Duration::from_secs(2),
                &cfg.links,
                Some(NodeId::from_public_key(&g.public_key)),
            )
            .map_err(|source| Error::PeerAddress {
                addr: g.addr.clone(),
                source,
            })?;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(push_heads(
                log.clone(),
                client,
                g.public_key.clone(),
                cfg.head_push_interval,
                stopped,
                acked_tx,
            ));
            Some((stop, task))
        }
        None => None,
    };
    tracing::info!(addr = %server.addr, size = log.size(), "continent serving");
    Ok(ContinentHandle {
        server,
        log,
        head_pusher,
        global_acked,
    })
}

/// Pushes the newest tree head to the global whenever it changed, forever: a failed push
/// is simply retried with the then-newest head (consistency makes older heads implied).
async fn push_heads(
    log: Arc<ContinentLog>,
    client: FederationClient,
    global_key: Vec<u8>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    acked: watch::Sender<u64>,
) {
    // The size the global logged last (None: unknown; it tells us with NeedConsistency).
    let mut logged: Option<u64> = None;
    let backoff = RetryPolicy {
        base_delay: interval,
        max_delay: Duration::from_secs(5).max(interval),
        ..RetryPolicy::default()
    };
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            interval
        } else {
            backoff.delay(failures)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let l = log.clone();
        let Ok(head) = tokio::task::spawn_blocking(move || l.tree_head()).await else {
            return;
        };
        if head.size == 0 || logged == Some(head.size) {
            continue;
        }
        let mut consistency = match logged {
            Some(old) if old > 0 && old < head.size => log.consistency(old, head.size).ok(),
            _ => None,
        };
        let mut result = Err(FederationError::Store("not pushed".into()));
        for _ in 0..2 {
            let push = TreeHeadPush {
                head: head.clone(),
                consistency: consistency.take(),
            };
            result = client.push_tree_head(&push).await;
            match &result {
                Err(FederationError::NeedConsistency { from_size, .. })
                    if *from_size < head.size =>
                {
                    consistency = log.consistency(*from_size, head.size).ok();
                }
                _ => break,
            }
        }
        match result {
            Ok(receipt) => match anchor_of(&client, &head, &receipt, &global_key).await {
                Ok(proof) => {
                    failures = 0;
                    logged = Some(head.size);
                    log.set_anchor(head.clone(), receipt, proof);
                    let _ = acked.send(head.size);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "global receipt or inclusion proof does not check");
                }
            },
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics::counter!("continent_head_push_failures").increment(1);
                if e.is_retryable() {
                    tracing::debug!(error = %e, "tree head push failed; retrying");
                } else {
                    tracing::warn!(error = %e, "global refused the tree head; retrying");
                }
            }
        }
    }
}

/// Checks the global's receipt for `head` and fetches the inclusion path to its root.
async fn anchor_of(
    client: &FederationClient,
    head: &SignedTreeHead,
    receipt: &InclusionReceipt,
    global_key: &[u8],
) -> FedResult<InclusionProof> {
    receipt.verify(LogKind::Global, global_key)?;
    if receipt.leaf != head.leaf_hash() {
        return Err(FederationError::BadAnswer(
            "global receipt is not for our head".into(),
        ));
    }
    let a = client
        .inclusion_proof(receipt.log_index, receipt.tree_size)
        .await?;
    a.proof
        .verify(&receipt.leaf, &receipt.root)
        .map_err(|e| FederationError::BadAnswer(e.to_string()))?;
    Ok(a.proof)
}
