//! What the continent and global logs share: a persistent RFC 6962 Merkle log in redb (leaf
//! hash, leaf bytes and the signed receipt of every leaf, written in one fsynced transaction
//! before anyone is answered), the one redb open-and-error helper, and the gRPC server a
//! federation role runs.

use crate::{Error, Result};
use dag_core::Hash32;
use dag_core::merkle::{ConsistencyProof, InclusionProof, MerkleError, MerkleLog, leaf_hash};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rpc::{FederationError, FederationHandler, ProofAnswer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Leaf index → leaf hash.
const LEAVES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("leaves");
/// Leaf index → leaf bytes (a certified checkpoint or a signed tree head).
const VALUES: TableDefinition<u64, &[u8]> = TableDefinition::new("values");
/// Leaf index → the receipt signed when the leaf was appended.
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");

/// Maps any redb failure at a path to [`Error::Store`]: `db_call().at(path)?`.
pub(crate) trait StoreAt<T> {
    /// The result with a redb error turned into [`Error::Store`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<redb::Error>> StoreAt<T> for std::result::Result<T, E> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::Store {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })
    }
}

/// One stored leaf, as read back on open.
#[derive(Debug)]
pub(crate) struct StoredLeaf {
    /// The leaf bytes.
    pub(crate) value: Vec<u8>,
    /// The encoded receipt.
    pub(crate) receipt: Vec<u8>,
}

/// A Merkle log whose leaves live in redb; the tree is rebuilt in memory on open.
pub(crate) struct PersistentLog {
    db: Database,
    path: PathBuf,
    log: MerkleLog,
}

impl std::fmt::Debug for PersistentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentLog")
            .field("path", &self.path)
            .field("size", &self.log.size())
            .finish_non_exhaustive()
    }
}

fn corrupt(path: &Path, index: u64, reason: impl Into<String>) -> Error {
    Error::LogCorrupt {
        path: path.to_path_buf(),
        index,
        reason: reason.into(),
    }
}

impl PersistentLog {
    /// Opens the log at `path` and returns every stored leaf in index order, after checking
    /// that indexes are contiguous and each leaf hash is the hash of its bytes.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<StoredLeaf>)> {
        let db = crate::runtime::open_db(path, |w| {
            w.open_table(LEAVES)?;
            w.open_table(VALUES)?;
            w.open_table(RECEIPTS)?;
            Ok(())
        })?;
        let mut leaves = Vec::new();
        let mut stored = Vec::new();
        {
            let r = db.begin_read().at(path)?;
            let lt = r.open_table(LEAVES).at(path)?;
            let vt = r.open_table(VALUES).at(path)?;
            let rt = r.open_table(RECEIPTS).at(path)?;
            for (i, row) in lt.iter().at(path)?.enumerate() {
                let (k, v) = row.at(path)?;
                let (index, leaf) = (k.value(), Hash32(*v.value()));
                if index != i as u64 {
                    return Err(corrupt(path, index, format!("expected leaf {i}")));
                }
                let value = vt
                    .get(index)
                    .at(path)?
                    .ok_or_else(|| corrupt(path, index, "leaf bytes missing"))?
                    .value()
                    .to_vec();
                if leaf_hash(&value) != leaf {
                    return Err(corrupt(path, index, "leaf hash does not match its bytes"));
                }
                let receipt = rt
                    .get(index)
                    .at(path)?
                    .ok_or_else(|| corrupt(path, index, "receipt missing"))?
                    .value()
                    .to_vec();
                leaves.push(leaf);
                stored.push(StoredLeaf { value, receipt });
            }
        }
        Ok((
            PersistentLog {
                db,
                path: path.to_path_buf(),
                log: MerkleLog::from_leaf_hashes(leaves),
            },
            stored,
        ))
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves in the log.
    pub(crate) fn size(&self) -> u64 {
        self.log.size()
    }

    /// The current root.
    pub(crate) fn root(&self) -> Hash32 {
        self.log.root()
    }

    /// Appends `value`: `receipt` gets (index, new size, new root, leaf hash) and returns
    /// the encoded receipt; leaf, bytes and receipt are committed (fsync) together before
    /// the in-memory tree grows. On error nothing changed.
    pub(crate) fn append(
        &mut self,
        value: &[u8],
        receipt: impl FnOnce(u64, u64, Hash32, Hash32) -> Vec<u8>,
    ) -> Result<(u64, Vec<u8>)> {
        let leaf = leaf_hash(value);
        let index = self.log.size();
        self.log.append_leaf_hash(leaf);
        let bytes = receipt(index, index + 1, self.log.root(), leaf);
        if let Err(e) = self.write(index, &leaf, value, &bytes) {
            // Undo the in-memory append (rare: only when the disk failed).
            let leaves: Vec<Hash32> = (0..index).filter_map(|i| self.log.leaf(i)).collect();
            self.log = MerkleLog::from_leaf_hashes(leaves);
            return Err(e);
        }
        Ok((index, bytes))
    }

    fn write(&self, index: u64, leaf: &Hash32, value: &[u8], receipt: &[u8]) -> Result<()> {
        let path = self.path.as_path();
        let w = self.db.begin_write().at(path)?;
        {
            let mut lt = w.open_table(LEAVES).at(path)?;
            lt.insert(index, &leaf.0).at(path)?;
            let mut vt = w.open_table(VALUES).at(path)?;
            vt.insert(index, value).at(path)?;
            let mut rt = w.open_table(RECEIPTS).at(path)?;
            rt.insert(index, receipt).at(path)?;
        }
        w.commit().at(path)?;
        Ok(())
    }

    /// The stored bytes and receipt of leaf `index`.
    pub(crate) fn read(&self, index: u64) -> Result<StoredLeaf> {
        let path = self.path.as_path();
        let r = self.db.begin_read().at(path)?;
        let vt = r.open_table(VALUES).at(path)?;
        let rt = r.open_table(RECEIPTS).at(path)?;
        let value = vt
            .get(index)
            .at(path)?
            .ok_or_else(|| corrupt(&self.path, index, "leaf bytes missing"))?
            .value()
            .to_vec();
        let receipt = rt
            .get(index)
            .at(path)?
            .ok_or_else(|| corrupt(&self.path, index, "receipt missing"))?
            .value()
            .to_vec();
        Ok(StoredLeaf { value, receipt })
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current).
    pub(crate) fn inclusion(
        &self,
        index: u64,
        tree_size: u64,
    ) -> std::result::Result<ProofAnswer, FederationError> {
        let size = if tree_size == 0 {
            self.log.size()
        } else {
            tree_size
        };
        let oor = |e: MerkleError| FederationError::OutOfRange(e.to_string());
        let path = self.log.inclusion_proof(index, size).map_err(oor)?;
        let root = self.log.root_at(size).map_err(oor)?;
        let leaf = self.log.leaf(index).ok_or_else(|| {
            FederationError::OutOfRange(format!("no leaf {index} in a log of {size}"))
        })?;
        Ok(ProofAnswer {
            proof: InclusionProof { index, size, path },
            root,
            leaf,
        })
    }

    /// The consistency proof from `old` to `new` (0 = current).
    pub(crate) fn consistency(
        &self,
        old: u64,
        new: u64,
    ) -> std::result::Result<ConsistencyProof, FederationError> {
        let new = if new == 0 { self.log.size() } else { new };
        let path = self
            .log
            .consistency_proof(old, new)
            .map_err(|e| FederationError::OutOfRange(e.to_string()))?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            path,
        })
    }
}

/// A store failure as the federation error a client sees (retryable).
pub(crate) fn fed_store(e: Error) -> FederationError {
    FederationError::Store(e.to_string())
}

/// Runs `f` on the blocking pool (signature checks, fsync, signing).
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<R, FederationError> + Send + 'static,
) -> std::result::Result<R, FederationError> {
    crate::runtime::run_blocking("federation log", f)
        .await
        .unwrap_or_else(|e| Err(FederationError::Store(e.to_string())))
}

/// The log's signed tree head: `cached` while the log has not grown, else signed anew with
/// `key` (and cached).
pub(crate) fn signed_head(
    log: &PersistentLog,
    cached: &mut Option<rpc::SignedTreeHead>,
    key: &pqc::Keypair,
) -> rpc::SignedTreeHead {
    let (size, root) = (log.size(), log.root());
    match cached {
        Some(h) if h.size == size => h.clone(),
        _ => {
            let h = rpc::SignedTreeHead::sign(size, root, now_ms(), key);
            *cached = Some(h.clone());
            h
        }
    }
}

/// A running federation gRPC server (continent or global), on the runtime's one server
/// handle.
#[derive(Debug)]
pub(crate) struct FedServer {
    pub(crate) addr: SocketAddr,
    server: Option<crate::runtime::ServerHandle>,
    readiness: crate::runtime::Readiness,
}

impl FedServer {
    /// Binds `listen` and serves `handler` with health and reflection.
    pub(crate) async fn start<H: FederationHandler>(
        listen: SocketAddr,
        handler: Arc<H>,
        links: &rpc::tls::LinkSecurity,
    ) -> Result<Self> {
        let (listener, addr) = crate::runtime::bind(listen).await?;
        let (reporter, health, reflection, reflection_alpha) =
            crate::runtime::health_reporter_and_reflection(
                "citychain.v1.FederationService",
                &["citychain.v1.FederationService"],
            )
            .await?;
        let readiness =
            crate::runtime::Readiness::new(reporter, "citychain.v1.FederationService").await;
        let svc = rpc::FederationService::new(handler).into_server();
        let router = crate::runtime::server_builder(true)
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(svc);
        let server = crate::runtime::serve(listener, router, "federation", links);
        readiness
            .set(crate::runtime::readiness::STARTING, true)
            .await;
        Ok(FedServer {
            addr,
            server: Some(server),
            readiness,
        })
    }

    /// Stops accepting and lets in-flight calls finish.
    pub(crate) async fn shutdown(&mut self) -> Result<()> {
        // NOT_SERVING from the signal on, before the calls in flight drain.
        self.readiness
            .set(crate::runtime::readiness::STOPPING, false)
            .await;
        match self.server.take() {
            Some(s) => s.shutdown(std::time::Duration::from_secs(5)).await,
            None => Ok(()),
        }
    }

    /// Stops at once, as a crash.
    pub(crate) async fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.kill().await;
        }
    }
}

pub(crate) use crate::runtime::now_ms;
