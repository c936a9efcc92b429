//! The continent role: serves `Federation` (PushBatchHeader, GetInclusionProof) over a
//! persistent RFC 6962 Merkle log of cities' signed checkpoint headers, and the federation
//! client a representative uses to push its committed checkpoints.
//!
//! - A push is accepted only from a configured city, signed (ML-DSA-87) by one of that
//!   city's keys; unknown city or signer → `PermissionDenied`, bad signature →
//!   `Unauthenticated`. Pushes are idempotent per (city, sequence): every representative of
//!   a city may push the same checkpoint and gets a receipt for the one leaf; a different
//!   header under a logged (city, sequence) is a fork → `AlreadyExists`.
//! - The log lives in `<data_dir>/continent.redb`: leaf hashes and the signed headers by
//!   index, written (fsync) before the receipt is signed. On restart the log is rebuilt with
//!   [`MerkleLog::from_leaf_hashes`] and checked against the stored headers.
//! - Receipts are signed with the continent's key ([`rpc::InclusionReceipt`]).

use crate::{Error, Result};
use dag_core::merkle::MerkleLog;
use dag_core::{Hash32, NodeId, Signer};
use futures::StreamExt;
use pqc::{Keypair, MlDsa87};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use resilience::{RetryPolicy, retry};
use rpc::{
    ClientError, FederationClient, FederationError, FederationHandler, InclusionReceipt,
    ProofAnswer, SignedCheckpointHeader,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Leaf index → leaf hash.
const LEAVES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("leaves");
/// Leaf index → signed header bytes.
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");

/// A city the continent accepts pushes from: its id and its representatives' keys.
#[derive(Debug, Clone)]
pub struct CityKeys {
    /// The city id pushes carry.
    pub city: Hash32,
    /// ML-DSA-87 public keys allowed to sign its headers.
    pub public_keys: Vec<Vec<u8>>,
}

/// Configuration of the continent role.
#[derive(Debug, Clone)]
pub struct ContinentConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory of `continent.redb`.
    pub data_dir: PathBuf,
    /// The cities accepted.
    pub cities: Vec<CityKeys>,
}

struct LogState {
    log: MerkleLog,
    by_seq: HashMap<(Hash32, u64), (u64, Hash32)>,
}

/// The continent's persistent log. Implements [`FederationHandler`].
pub struct ContinentLog {
    db: Database,
    path: PathBuf,
    state: parking_lot::Mutex<LogState>,
    key: Keypair,
    /// signer → (city, public key).
    signers: HashMap<NodeId, (Hash32, Vec<u8>)>,
}

impl std::fmt::Debug for ContinentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinentLog")
            .field("path", &self.path)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

fn store_err(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::Store {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

impl ContinentLog {
    /// Opens (or creates) the log at `path`, signing receipts with `key`, accepting `cities`.
    pub fn open(path: &Path, key: Keypair, cities: &[CityKeys]) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let err = store_err(path);
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        w.open_table(LEAVES).map_err(|e| err(e.into()))?;
        w.open_table(HEADERS).map_err(|e| err(e.into()))?;
        w.commit().map_err(|e| err(e.into()))?;
        let mut leaves = Vec::new();
        let mut by_seq = HashMap::new();
        {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let lt = r.open_table(LEAVES).map_err(|e| err(e.into()))?;
            let ht = r.open_table(HEADERS).map_err(|e| err(e.into()))?;
            for (i, row) in lt.iter().map_err(|e| err(e.into()))?.enumerate() {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                let (index, leaf) = (k.value(), Hash32(*v.value()));
                let bytes = ht
                    .get(index)
                    .map_err(|e| err(e.into()))?
                    .ok_or_else(|| Error::Config(format!("continent log: header {index} missing")))?
                    .value()
                    .to_vec();
                let header = SignedCheckpointHeader::decode(&bytes).map_err(|e| {
                    Error::Config(format!("continent log: header {index} corrupt: {e}"))
                })?;
                if index != i as u64 || header.leaf_hash() != leaf {
                    return Err(Error::Config(format!(
                        "continent log: leaf {index} does not match its header"
                    )));
                }
                by_seq.insert((header.header.city, header.header.sequence), (index, leaf));
                leaves.push(leaf);
            }
        }
        let signers = cities
            .iter()
            .flat_map(|c| {
                c.public_keys
                    .iter()
                    .map(move |pk| (NodeId::from_public_key(pk), (c.city, pk.clone())))
            })
            .collect();
        Ok(ContinentLog {
            db,
            path: path.to_path_buf(),
            state: parking_lot::Mutex::new(LogState {
                log: MerkleLog::from_leaf_hashes(leaves),
                by_seq,
            }),
            key,
            signers,
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

    /// The continent's node id (named in its receipts).
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The continent's public key (to verify its receipts).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().to_vec()
    }

    /// Verifies and logs `h` (blocking: signature check, fsync, signing).
    pub fn push_blocking(
        &self,
        h: &SignedCheckpointHeader,
    ) -> std::result::Result<InclusionReceipt, FederationError> {
        let (city, pk) =
            self.signers
                .get(&h.header.signer)
                .ok_or_else(|| FederationError::UnknownCity {
                    city: h.header.city.short(),
                    signer: h.header.signer.short(),
                })?;
        if *city != h.header.city {
            return Err(FederationError::UnknownCity {
                city: h.header.city.short(),
                signer: h.header.signer.short(),
            });
        }
        h.verify(pk, &MlDsa87)
            .map_err(|_| FederationError::BadSignature {
                city: city.short(),
                sequence: h.header.sequence,
            })?;
        let leaf = h.leaf_hash();
        let key = (h.header.city, h.header.sequence);
        let mut st = self.state.lock();
        let index = if let Some(&(index, _)) = st.by_seq.get(&key) {
            // The same checkpoint from another representative (signed bytes differ per
            // signer, so compare the signed-over facts): one leaf, same receipt.
            let same = self
                .header_at(index)
                .map(|old| same_checkpoint(&old, h))
                .unwrap_or(false);
            if !same {
                return Err(FederationError::Fork {
                    city: city.short(),
                    sequence: h.header.sequence,
                });
            }
            index
        } else {
            let index = st.log.size();
            self.persist(index, &leaf, &h.encode())
                .map_err(|e| FederationError::Store(e.to_string()))?;
            st.log.append_leaf_hash(leaf);
            st.by_seq.insert(key, (index, leaf));
            index
        };
        let size = st.log.size();
        let root = st.log.root();
        let leaf = st.log.leaf(index).unwrap_or(leaf);
        drop(st);
        Ok(InclusionReceipt::sign(index, size, root, leaf, &self.key))
    }

    fn header_at(&self, index: u64) -> Option<SignedCheckpointHeader> {
        let r = self.db.begin_read().ok()?;
        let t = r.open_table(HEADERS).ok()?;
        let v = t.get(index).ok()??;
        SignedCheckpointHeader::decode(v.value()).ok()
    }

    fn persist(&self, index: u64, leaf: &Hash32, bytes: &[u8]) -> Result<()> {
        let err = store_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut lt = w.open_table(LEAVES).map_err(|e| err(e.into()))?;
            lt.insert(index, &leaf.0).map_err(|e| err(e.into()))?;
            let mut ht = w.open_table(HEADERS).map_err(|e| err(e.into()))?;
            ht.insert(index, bytes).map_err(|e| err(e.into()))?;
        }
        w.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current).
    pub fn proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> std::result::Result<ProofAnswer, FederationError> {
        let st = self.state.lock();
        let size = if tree_size == 0 {
            st.log.size()
        } else {
            tree_size
        };
        let oor = |e: dag_core::merkle::MerkleError| FederationError::OutOfRange(e.to_string());
        let path = st.log.inclusion_proof(index, size).map_err(oor)?;
        let root = st.log.root_at(size).map_err(oor)?;
        let leaf = st.log.leaf(index).ok_or_else(|| {
            FederationError::OutOfRange(format!("no leaf {index} in a log of {size}"))
        })?;
        Ok(ProofAnswer {
            proof: dag_core::merkle::InclusionProof { index, size, path },
            root,
            leaf,
        })
    }
}

/// Two signed headers describe the same checkpoint (maybe signed by different members).
fn same_checkpoint(a: &SignedCheckpointHeader, b: &SignedCheckpointHeader) -> bool {
    let (a, b) = (&a.header, &b.header);
    a.city == b.city
        && a.sequence == b.sequence
        && a.round == b.round
        && a.leader == b.leader
        && a.running_hash == b.running_hash
        && a.batches == b.batches
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<R, FederationError> + Send + 'static,
) -> std::result::Result<R, FederationError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(FederationError::Store(e.to_string())),
    }
}

/// [`FederationHandler`] over a shared [`ContinentLog`].
#[derive(Debug, Clone)]
pub struct ContinentNode(pub Arc<ContinentLog>);

impl FederationHandler for ContinentNode {
    async fn push(
        &self,
        header: SignedCheckpointHeader,
    ) -> std::result::Result<InclusionReceipt, FederationError> {
        let log = self.0.clone();
        blocking(move || log.push_blocking(&header)).await
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> std::result::Result<ProofAnswer, FederationError> {
        let log = self.0.clone();
        blocking(move || log.proof(index, tree_size)).await
    }
}

/// A running continent. Call [`ContinentHandle::shutdown`] (graceful) or
/// [`ContinentHandle::kill`].
#[derive(Debug)]
pub struct ContinentHandle {
    addr: SocketAddr,
    log: Arc<ContinentLog>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl ContinentHandle {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The log (size, root, keys).
    pub fn log(&self) -> &Arc<ContinentLog> {
        &self.log
    }
    /// Stops accepting, lets in-flight calls finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "continent server task panicked"),
            }
        }
        Ok(())
    }
    /// Stops the server task at once.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Starts the continent role: opens `<data_dir>/continent.redb`, binds `cfg.listen` and
/// serves Federation, gRPC health and reflection.
pub async fn start_continent(cfg: &ContinentConfig, key: Keypair) -> Result<ContinentHandle> {
    let path = cfg.data_dir.join("continent.redb");
    let cities = cfg.cities.clone();
    let log = tokio::task::spawn_blocking(move || ContinentLog::open(&path, key, &cities))
        .await
        .map_err(|e| Error::Config(format!("continent open task: {e}")))??;
    let log = Arc::new(log);
    let (listener, addr) = crate::runtime::bind(cfg.listen).await?;
    let (health, reflection) =
        crate::runtime::health_and_reflection("citychain.v1.Federation").await?;
    let svc = rpc::FederationService::new(Arc::new(ContinentNode(log.clone()))).into_server();
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|io| {
            let _ = io.set_nodelay(true);
        })
    });
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(Error::from)
    });
    tracing::info!(%addr, size = log.size(), "continent serving");
    Ok(ContinentHandle {
        addr,
        log,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Where and as which city a representative pushes its committed checkpoints.
#[derive(Debug, Clone)]
pub struct FederationTarget {
    /// The continent's gRPC address.
    pub addr: String,
    /// The city id the continent knows this city by.
    pub city: Hash32,
    /// The continent's public key, to verify receipts (None: receipts are not checked).
    pub continent_key: Option<Vec<u8>>,
    /// Retries of one push (attempts, backoff). A representative pushing its checkpoints
    /// keeps retrying a transient failure after `max_delay`, so none is skipped.
    pub retry: RetryPolicy,
    /// Deadline of one attempt.
    pub timeout: Duration,
}

impl FederationTarget {
    /// A target with 5 attempts per round of retries from 100 ms backoff (capped at 1 s,
    /// also the pause between rounds) and 2 s deadlines.
    pub fn new(addr: impl Into<String>, city: Hash32, continent_key: Option<Vec<u8>>) -> Self {
        FederationTarget {
            addr: addr.into(),
            city,
            continent_key,
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                ..RetryPolicy::default()
            },
            timeout: Duration::from_secs(2),
        }
    }
}

/// Pushes signed headers to one continent with retries and backoff.
#[derive(Debug, Clone)]
pub struct FederationPusher {
    client: FederationClient,
    target: FederationTarget,
}

impl FederationPusher {
    /// A pusher for `target` (connects lazily).
    pub fn new(target: FederationTarget) -> Result<Self> {
        let client = FederationClient::lazy(&target.addr, target.timeout)?;
        Ok(FederationPusher { client, target })
    }

    /// The client (proofs).
    pub fn client(&self) -> &FederationClient {
        &self.client
    }

    /// Pushes `header`, retrying transient failures (unavailable, deadline, overload,
    /// internal) with backoff; verifies the receipt's signature and leaf when the
    /// continent's key is configured.
    pub async fn push(&self, header: &SignedCheckpointHeader) -> Result<InclusionReceipt> {
        let transient = |e: &ClientError| match e {
            ClientError::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Internal
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            ClientError::Connect { .. } => true,
            _ => false,
        };
        let receipt = retry(&self.target.retry, None, transient, |_| {
            self.client.push(header)
        })
        .await
        .map_err(|e| Error::Client(e.into_inner()))?;
        if let Some(pk) = &self.target.continent_key {
            receipt
                .verify(pk, &MlDsa87)
                .map_err(|e| Error::Config(format!("continent receipt: {e}")))?;
        }
        Ok(receipt)
    }
}
