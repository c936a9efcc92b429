//! Starting and stopping the city role: gRPC server (CityNode + health + reflection) over
//! the admission pipeline, with graceful shutdown.

use crate::city::CityNode;
use crate::store::TxStore;
use crate::{Error, Result};
use pqc::{BatchVerifier, Keypair};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
    /// Keep the encrypted long-term archive (embedded redb in `<data_dir>/archive`).
    pub archive: bool,
}

impl Default for CityConfig {
    fn default() -> Self {
        CityConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            data_dir: PathBuf::from("./city-data"),
            verify_threads: 0,
            max_inflight: 16_384,
            archive: true,
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
    addr: SocketAddr,
    node: Option<Arc<CityNode>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl CityHandle {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node (counters, store).
    pub fn node(&self) -> &Arc<CityNode> {
        self.node.as_ref().expect("node is present until shutdown")
    }

    /// Stops accepting, lets in-flight calls finish, then closes the store so the data
    /// directory can be reopened.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "gRPC server task panicked"),
            }
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

    /// Waits until the server stops by itself (an error) — for binaries that run until a
    /// signal arrives, use [`CityHandle::shutdown`] on the signal instead.
    pub async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.task.as_mut() {
            match task.await {
                Ok(r) => {
                    self.task = None;
                    r
                }
                Err(e) => Err(Error::Config(format!("server task failed: {e}"))),
            }
        } else {
            Ok(())
        }
    }
}

/// Light-node storage for a city: how to reach light nodes, who they are, the settings.
pub struct StorageParts {
    /// Transport to light nodes.
    pub transport: Arc<dyn crate::ShardTransport>,
    /// Live light nodes.
    pub directory: Arc<dyn crate::HolderDirectory>,
    /// Pipeline settings.
    pub config: crate::PipelineConfig,
}

/// Optional parts of a city node, wired in by the caller (binary or devnet).
#[derive(Default)]
pub struct CityParts {
    /// Light-node storage. Without it, txs are answered Admitted (stored locally only).
    pub storage: Option<StorageParts>,
    /// Proof of place.
    pub pop: Option<crate::PopCheck>,
    /// Flagger.
    pub flagger: Option<Arc<dyn flagging::Flagger>>,
}

impl std::fmt::Debug for CityParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityParts")
            .field("storage", &self.storage.is_some())
            .field("pop", &self.pop.is_some())
            .field("flagger", &self.flagger.is_some())
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
    let store = TxStore::open(&cfg.data_dir.join("txs.redb"))?;
    let verifier = Arc::new(BatchVerifier::new(cfg.verify_threads)?);
    let mut city = CityNode::new(keypair.node_id(), store, verifier.clone(), cfg.max_inflight);
    if let Some(sp) = parts.storage {
        let pipeline = crate::Pipeline::start(
            sp.config,
            &cfg.data_dir.join("stripes.redb"),
            sp.transport,
            sp.directory,
            verifier,
        )?;
        city = city.with_pipeline(pipeline);
    }
    if cfg.archive {
        let a = archive::RedbArchive::open_in_dir(&cfg.data_dir.join("archive"))
            .map_err(|e| Error::Config(format!("archive: {e}")))?;
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
    let node = Arc::new(city);
    let (listener, addr) = crate::net::bind(cfg.listen).await?;
    let (health, reflection) = crate::net::health_and_reflection("citychain.v1.CityNode").await?;
    let svc = rpc::CityNodeService::new(node.clone()).into_server();
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .add_service(reflection)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(Error::from)
    });
    tracing::info!(%addr, node_id = %keypair.node_id(), data_dir = %cfg.data_dir.display(), "city node serving");
    Ok(CityHandle {
        addr,
        node: Some(node),
        stop: Some(stop),
        task: Some(task),
    })
}
