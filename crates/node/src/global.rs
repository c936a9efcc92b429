//! The global role: serves `Federation` over a persistent Merkle log of continents' signed
//! tree heads (the same log shape as a continent's).
//!
//! A push ([`TreeHeadPush`]) is accepted from a configured continent (its node id and
//! ML-DSA-87 key) when the head's signature verifies and it extends the last head logged
//! for that continent: the first head is taken as is; a head of the same size must have the
//! same root (then the logged head's receipt is answered again); a larger one needs a
//! consistency proof from the logged size (`NeedConsistency { from_size }` when absent,
//! `Inconsistent` when it fails — a forged or forked continent log); a smaller one is
//! `Stale`. Leaf and signed receipt are fsynced together before answering
//! (`<data_dir>/global.redb`); on restart each continent's last head is recovered.

use crate::fed_log::{FedServer, PersistentLog, blocking, fed_store};
use crate::{Error, Result};
use dag_core::merkle::ConsistencyProof;
use dag_core::{Hash32, NodeId, Signer};
use pqc::Keypair;
use rpc::{
    FederationError, FederationHandler, InclusionReceipt, LogKind, ProofAnswer, SignedTreeHead,
    TreeHeadPush,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type FedResult<T> = std::result::Result<T, FederationError>;

/// Configuration of the global role.
#[derive(Debug, Clone)]
pub struct GlobalConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory of `global.redb`.
    pub data_dir: PathBuf,
    /// ML-DSA-87 public keys of the continents accepted.
    pub continents: Vec<Vec<u8>>,
    /// Mutual TLS for the server. Default: TLS with the identity in `data_dir`; plaintext
    /// only when set to `Insecure` explicitly.
    pub links: rpc::tls::LinkSecurity,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    size: u64,
    root: Hash32,
    index: u64,
}

#[derive(Debug)]
struct State {
    log: PersistentLog,
    last: HashMap<NodeId, Last>,
    head: Option<SignedTreeHead>,
}

/// The global's persistent log of continents' tree heads.
pub struct GlobalLog {
    state: parking_lot::Mutex<State>,
    key: Keypair,
    continents: HashMap<NodeId, Vec<u8>>,
}

impl std::fmt::Debug for GlobalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalLog")
            .field("log", &self.state.lock().log)
            .finish_non_exhaustive()
    }
}

impl GlobalLog {
    /// Opens (or creates) the log at `path`, signing with `key`, accepting `continents`.
    pub fn open(path: &Path, key: Keypair, continents: &[Vec<u8>]) -> Result<Self> {
        let (log, stored) = PersistentLog::open(path)?;
        let mut last: HashMap<NodeId, Last> = HashMap::new();
        for (index, leaf) in stored.iter().enumerate() {
            let index = index as u64;
            let bad = |reason: String| Error::LogCorrupt {
                path: path.to_path_buf(),
                index,
                reason,
            };
            let h = SignedTreeHead::decode(&leaf.value).map_err(|e| bad(format!("head: {e}")))?;
            let r = InclusionReceipt::decode(&leaf.receipt)
                .map_err(|e| bad(format!("receipt: {e}")))?;
            if r.log_index != index || r.leaf != h.leaf_hash() {
                return Err(bad("receipt is not for this leaf".into()));
            }
            if let Some(prev) = last.get(&h.log_id).copied()
                && prev.size > h.size
            {
                return Err(bad(format!(
                    "head of size {} after size {}",
                    h.size, prev.size
                )));
            }
            last.insert(
                h.log_id,
                Last {
                    size: h.size,
                    root: h.root,
                    index,
                },
            );
        }
        Ok(GlobalLog {
            state: parking_lot::Mutex::new(State {
                log,
                last,
                head: None,
            }),
            key,
            continents: continents
                .iter()
                .map(|pk| (NodeId::from_public_key(pk), pk.clone()))
                .collect(),
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

    /// The global's public key (to verify its receipts).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().to_vec()
    }

    /// The last logged head size of a continent.
    pub fn logged_size(&self, continent: &NodeId) -> Option<u64> {
        self.state.lock().last.get(continent).map(|l| l.size)
    }

    /// Checks and logs a continent's head (see the module docs). Blocking.
    pub fn push_blocking(&self, p: &TreeHeadPush) -> FedResult<InclusionReceipt> {
        let head = &p.head;
        let pk = self
            .continents
            .get(&head.log_id)
            .ok_or(FederationError::UnknownLog {
                log_id: head.log_id,
            })?;
        head.verify(pk)?;
        let mut st = self.state.lock();
        if let Some(last) = st.last.get(&head.log_id).copied() {
            let log_id = head.log_id;
            if head.size < last.size {
                return Err(FederationError::Stale {
                    log_id,
                    logged: last.size,
                    got: head.size,
                });
            }
            if head.size == last.size {
                if head.root != last.root {
                    return Err(FederationError::Inconsistent {
                        log_id,
                        old_size: last.size,
                        new_size: head.size,
                    });
                }
                let leaf = st.log.read(last.index).map_err(fed_store)?;
                return InclusionReceipt::decode(&leaf.receipt)
                    .map_err(|e| FederationError::Store(e.to_string()));
            }
            if last.size > 0 {
                match &p.consistency {
                    Some(c) if c.old_size == last.size && c.new_size == head.size => {
                        c.verify(&last.root, &head.root).map_err(|_| {
                            FederationError::Inconsistent {
                                log_id,
                                old_size: last.size,
                                new_size: head.size,
                            }
                        })?;
                    }
                    _ => {
                        return Err(FederationError::NeedConsistency {
                            log_id,
                            from_size: last.size,
                        });
                    }
                }
            }
        }
        let key = &self.key;
        let (index, receipt) = st
            .log
            .append(&head.encode(), |index, size, root, leaf| {
                InclusionReceipt::sign(LogKind::Global, index, size, root, leaf, key).encode()
            })
            .map_err(fed_store)?;
        st.last.insert(
            head.log_id,
            Last {
                size: head.size,
                root: head.root,
                index,
            },
        );
        metrics::counter!("global_heads_logged").increment(1);
        InclusionReceipt::decode(&receipt).map_err(|e| FederationError::Store(e.to_string()))
    }

    /// The current signed tree head (signed again only when the size changed).
    pub fn tree_head(&self) -> SignedTreeHead {
        let mut st = self.state.lock();
        let st = &mut *st;
        crate::fed_log::signed_head(&st.log, &mut st.head, &self.key)
    }
}

/// [`FederationHandler`] over a shared [`GlobalLog`].
#[derive(Debug, Clone)]
pub struct GlobalNode(pub Arc<GlobalLog>);

impl FederationHandler for GlobalNode {
    async fn push_tree_head(&self, push: TreeHeadPush) -> FedResult<InclusionReceipt> {
        let log = self.0.clone();
        blocking(move || log.push_blocking(&push)).await
    }

    async fn tree_head(&self) -> FedResult<SignedTreeHead> {
        let log = self.0.clone();
        blocking(move || Ok(log.tree_head())).await
    }

    async fn inclusion_proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        self.0.state.lock().log.inclusion(index, tree_size)
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> FedResult<ConsistencyProof> {
        self.0.state.lock().log.consistency(old, new)
    }
}

/// A running global node.
#[derive(Debug)]
pub struct GlobalHandle {
    server: FedServer,
    log: Arc<GlobalLog>,
}

impl GlobalHandle {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    /// The log.
    pub fn log(&self) -> &Arc<GlobalLog> {
        &self.log
    }
    /// Stops accepting, lets in-flight calls finish.
    pub async fn shutdown(mut self) -> Result<()> {
        self.server.shutdown().await
    }
    /// Stops the server at once.
    pub async fn kill(mut self) {
        self.server.kill().await;
    }
}

/// Starts the global role: opens `<data_dir>/global.redb`, binds `cfg.listen`, serves
/// Federation, gRPC health and reflection.
pub async fn start_global(cfg: &GlobalConfig, key: Keypair) -> Result<GlobalHandle> {
    let cfg = &GlobalConfig {
        links: crate::runtime::resolve_links(&cfg.links, &cfg.data_dir, &key)?,
        ..cfg.clone()
    };
    let path = cfg.data_dir.join("global.redb");
    let continents = cfg.continents.clone();
    let log = crate::runtime::run_blocking("global log", move || {
        GlobalLog::open(&path, key, &continents)
    })
    .await??;
    let log = Arc::new(log);
    let server =
        FedServer::start(cfg.listen, Arc::new(GlobalNode(log.clone())), &cfg.links).await?;
    tracing::info!(addr = %server.addr, size = log.size(), "global serving");
    Ok(GlobalHandle { server, log })
}
