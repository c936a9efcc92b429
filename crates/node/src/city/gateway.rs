//! The city node behind the HTTP gateway: [`CityGateway`] implements the gateway's
//! backend over admission, the tx store, the order store, the manifests and the event bus,
//! and the repair tiers (local store → light nodes over REPAIR_REQUEST / REPAIR_ACK →
//! archive → other representatives → the continent's proof of inclusion) over the same
//! parts.

use super::admission::CityNode;
use super::repair_protocol::{
    LightRepairTier, RepairConfig, RepairService, RepairTier, TierAnswer,
};
use async_trait::async_trait;
use dag_core::{NodeId, SignedTx, StripeId, TxId};
use gateway::{
    CommitteeMember, GatewayBackend, NodeView, NodesView, RepairRefused, RepairTicket,
    Subscription, TierLatency,
};
use rpc::{CityApi, Rejection, StripeInfo, Submitted, TxRecord};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The gateway's view of one city node.
pub struct CityGateway {
    node: Arc<CityNode>,
    city: String,
    committee: Vec<(NodeId, String)>,
    repairs: Arc<RepairService>,
}

impl std::fmt::Debug for CityGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityGateway")
            .field("city", &self.city)
            .finish_non_exhaustive()
    }
}

struct LocalStore(Weak<CityNode>);
struct ArchiveTier(Weak<CityNode>);
/// The other representatives of the city, asked with `GetTx`.
///
/// Why `GetTx` and not a REPAIR_REQUEST tx: a representative keeps whole signed txs, not
/// shards, so its REPAIR_ACK could carry neither a shard nor a storage receipt — only the tx,
/// which `GetTx` returns. The answer authenticates itself: the repair service checks that it
/// hashes to the id asked for and that its ML-DSA-87 signature verifies, so a lying or
/// corrupt peer is detected exactly as a REPAIR_ACK's signature check would; and a
/// representative answers `GetTx` to anyone, so the request needs no signature to be
/// authorized. What a REPAIR_REQUEST would add is a signed record of who asked, which a
/// read does not need.
struct Peers {
    addrs: Vec<String>,
    timeout: Duration,
}
/// The continent tier: the continent keeps batch headers and checkpoint hashes only, never
/// tx bodies, so it cannot serve a tx. What it can say is recorded here already: its signed
/// proof that the checkpoint carrying the tx is in its log (fetched when the checkpoint was
/// federated). This tier turns that into the failure reason — the tx provably existed, at
/// which checkpoint — so a failed repair tells the DApp "included, body lost" apart from
/// "never seen".
struct ContinentTier(Weak<CityNode>);

fn gone() -> String {
    "the node is stopping".into()
}

#[async_trait]
impl RepairTier for LocalStore {
    fn name(&self) -> &'static str {
        "local_store"
    }
    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String> {
        let node = self.0.upgrade().ok_or_else(gone)?;
        let got = node.store().get(&id).map_err(|e| e.to_string())?;
        Ok(got.map(|tx| TierAnswer {
            tx,
            shards_rebuilt: 0,
        }))
    }
}

#[async_trait]
impl RepairTier for ArchiveTier {
    fn name(&self) -> &'static str {
        "archive"
    }
    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String> {
        let node = self.0.upgrade().ok_or_else(gone)?;
        let rec = node.lookup_archive(id).await.map_err(|r| r.to_string())?;
        Ok(rec.and_then(|r| r.tx).map(|tx| TierAnswer {
            tx,
            shards_rebuilt: 0,
        }))
    }
}

#[async_trait]
impl RepairTier for Peers {
    fn name(&self) -> &'static str {
        "peers"
    }
    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String> {
        let mut errors = Vec::new();
        for a in &self.addrs {
            let ask = async {
                let c = rpc::CityClient::connect(a).await?;
                c.get(id).await
            };
            match tokio::time::timeout(self.timeout, ask).await {
                Ok(Ok(Some(rec))) => {
                    if let Some(tx) = rec.tx {
                        return Ok(Some(TierAnswer {
                            tx,
                            shards_rebuilt: 0,
                        }));
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => errors.push(format!("{a}: {e}")),
                Err(_) => errors.push(format!("{a}: no answer in {:?}", self.timeout)),
            }
        }
        if errors.is_empty() || errors.len() < self.addrs.len() {
            Ok(None)
        } else {
            Err(errors.join(", "))
        }
    }
}

#[async_trait]
impl RepairTier for ContinentTier {
    fn name(&self) -> &'static str {
        "continent"
    }
    async fn fetch(&self, id: TxId) -> Result<Option<TierAnswer>, String> {
        let node = self.0.upgrade().ok_or_else(gone)?;
        let rec = CityApi::get(&*node, id).await.map_err(|r| r.to_string())?;
        let Some(pos) = rec.as_ref().and_then(|r| r.ordering) else {
            return Ok(None);
        };
        Err(match rec.and_then(|r| r.proof) {
            Some(proof) => format!(
                "the continent keeps hashes only: its proof ({} bytes) shows tx {id} included \
                 at checkpoint {} (batch {}), but no tier holds its body",
                proof.len(),
                pos.sequence,
                pos.batch.short()
            ),
            None => format!(
                "the continent keeps hashes only and has not certified checkpoint {} yet: \
                 tx {id} was ordered there, but no tier holds its body",
                pos.sequence
            ),
        })
    }
}

impl CityGateway {
    /// The gateway backend of `node` (whose key is `key`) in city `city`, whose committee
    /// is `committee` (node id, gRPC address).
    pub fn new(
        node: Arc<CityNode>,
        key: pqc::Keypair,
        city: String,
        committee: Vec<(NodeId, String)>,
        cfg: RepairConfig,
    ) -> Self {
        let me = node.node_id();
        let peers: Vec<String> = committee
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(_, a)| a.clone())
            .collect();
        let w = Arc::downgrade(&node);
        let tiers: Vec<Arc<dyn RepairTier>> = vec![
            Arc::new(LocalStore(w.clone())),
            Arc::new(LightRepairTier::new(
                w.clone(),
                key,
                dag_core::CityId::new(if city.is_empty() { "-" } else { city.as_str() })
                    .unwrap_or_else(|_| dag_core::CityId::new("-").expect("a valid city id")),
                dag_core::Position::default(),
                Duration::from_secs(1),
            )),
            Arc::new(ArchiveTier(w)),
            Arc::new(Peers {
                addrs: peers,
                timeout: Duration::from_secs(1),
            }),
            Arc::new(ContinentTier(Arc::downgrade(&node))),
        ];
        let repairs = Arc::new(RepairService::new(cfg, tiers, node.events().clone()));
        CityGateway {
            node,
            city,
            committee,
            repairs,
        }
    }

    /// The repair service (for tests and the demo's figures).
    pub fn repairs(&self) -> &Arc<RepairService> {
        &self.repairs
    }

    /// Whether this city has heard of `id` at all: its store, its stripes, its committee's
    /// order or its archive.
    async fn known(&self, id: TxId) -> Result<bool, RepairRefused> {
        let n = &self.node;
        let unavailable = |e: String| RepairRefused::Unavailable(e);
        if n.store()
            .get(&id)
            .map_err(|e| unavailable(e.to_string()))?
            .is_some()
        {
            return Ok(true);
        }
        if let Some(p) = n.pipeline()
            && p.held(&id)
                .map_err(|e| unavailable(e.to_string()))?
                .is_some()
        {
            return Ok(true);
        }
        if let Some(o) = n.order_store()
            && o.ordering(&id)
                .map_err(|e| unavailable(e.to_string()))?
                .is_some()
        {
            return Ok(true);
        }
        Ok(n.lookup_archive(id)
            .await
            .map_err(|r| unavailable(r.to_string()))?
            .is_some())
    }
}

#[async_trait]
impl GatewayBackend for CityGateway {
    async fn submit(&self, tx: SignedTx) -> Result<Submitted, Rejection> {
        CityApi::submit(&*self.node, tx).await
    }

    async fn get(&self, id: TxId) -> Result<Option<TxRecord>, Rejection> {
        CityApi::get(&*self.node, id).await
    }

    async fn request_repair(&self, id: TxId) -> Result<RepairTicket, RepairRefused> {
        if !self.known(id).await? {
            return Err(RepairRefused::UnknownTx(id));
        }
        self.repairs.start(id)
    }

    fn repair_status(&self, request_id: u64) -> Option<RepairTicket> {
        self.repairs.status(request_id)
    }

    fn subscribe(&self, after: Option<u64>) -> Subscription {
        self.node.events().subscribe(after)
    }

    async fn nodes(&self) -> NodesView {
        let me = self.node.node_id();
        let lights = self
            .node
            .pipeline()
            .map(|p| p.live_lights())
            .unwrap_or_default()
            .into_iter()
            .map(|n| NodeView {
                node_id: n.node_id,
                role: n.role.to_string(),
                addr: n.grpc_addr,
                zone: n.zone,
                city: n.city_id,
            })
            .collect();
        NodesView {
            this_node: me,
            city: self.city.clone(),
            lights,
            committee: self
                .committee
                .iter()
                .map(|(id, a)| CommitteeMember {
                    node_id: *id,
                    addr: a.clone(),
                    this_node: *id == me,
                })
                .collect(),
        }
    }

    async fn stripe(&self, id: StripeId) -> Result<Option<StripeInfo>, Rejection> {
        Ok(CityApi::list_stripes(&*self.node)
            .await?
            .into_iter()
            .find(|s| s.stripe_id == id))
    }

    async fn execution(&self, id: TxId) -> Result<Option<rpc::TxExecution>, Rejection> {
        CityApi::execution(&*self.node, id).await
    }

    async fn account(&self, account: dag_core::AccountId) -> Result<rpc::AccountInfo, Rejection> {
        CityApi::account(&*self.node, account).await
    }

    async fn stake(
        &self,
        account: dag_core::AccountId,
    ) -> Result<rpc::StakeInfo, rpc::StakeReadError> {
        CityApi::stake(&*self.node, account).await
    }

    async fn committee(&self) -> Result<rpc::CommitteeInfo, rpc::StakeReadError> {
        CityApi::committee(&*self.node).await
    }

    fn repair_latencies(&self) -> Vec<TierLatency> {
        self.repairs.latencies()
    }

    fn serving(&self) -> Result<(), String> {
        if self.node.store().is_failed() {
            return Err(
                "the tx store is down after an I/O error; it reopens by itself once it can".into(),
            );
        }
        Ok(())
    }
}
