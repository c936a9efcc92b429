//! Running a role as an operator deploys it: the role's server plus membership — every
//! role logs in to presence and heartbeats through node-list; the city node learns its
//! light nodes from the live view (ranked by priority), checks proof of place on the
//! shipped polygons, flags txs, and re-replicates shards when a light node leaves.

use crate::grpc_transport::GrpcTransport;
use crate::light::{LightConfig, LightHandle, start_light};
use crate::membership::{NodeListDirectory, node_info, spawn_rereplicator};
use crate::{
    CityConfig, CityHandle, CityParts, Error, PipelineConfig, PopCheck, PopMode, PriorityDirectory,
    Result, StorageParts, start_city_with,
};
use dag_core::Role;
use node_list::{NodeListConfig, NodeListHandle, NodeListManager};
use pqc::Keypair;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a node is and how it reaches presence. `Default`: memory presence (single
/// process), city `JP-13`, Tokyo.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// City the node serves or lives in.
    pub city_id: String,
    /// Failure-domain zone (rack, district, provider).
    pub zone: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Address published to presence (`host:port`); default: the listen address, with
    /// 127.0.0.1 for an unspecified host.
    pub advertise: Option<String>,
    /// Proof of place: reject or flag txs outside their claimed city (city role).
    pub pop_mode: PopMode,
    /// Presence backend and timing (`PRESENCE_BACKEND`, `PRESENCE_REDIS_URI`,
    /// `PRESENCE_HTTP_ENDPOINT`, `NODELIST_*`); not from TOML.
    #[serde(skip)]
    pub nodelist: NodeListConfig,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            city_id: "JP-13".into(),
            zone: String::new(),
            lat: 35.689_5,
            lon: 139.691_7,
            advertise: None,
            pop_mode: PopMode::Reject,
            nodelist: NodeListConfig::default(),
        }
    }
}

impl MembershipConfig {
    fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                format!("127.0.0.1:{}", bound.port())
            } else {
                bound.to_string()
            }
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running role with its membership. Stop it with [`RunningRole::shutdown`].
#[derive(Debug)]
pub struct RunningRole {
    login: Option<NodeListHandle>,
    watcher: Option<NodeListHandle>,
    rereplicator: Option<tokio::task::JoinHandle<()>>,
    city: Option<CityHandle>,
    light: Option<LightHandle>,
}

impl RunningRole {
    /// The gRPC address served.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.city
            .as_ref()
            .map(CityHandle::addr)
            .or_else(|| self.light.as_ref().map(LightHandle::addr))
    }

    /// Logs out of presence, then stops the server gracefully.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(r) = self.rereplicator.take() {
            r.abort();
        }
        if let Some(l) = self.login.take() {
            l.shutdown().await;
        }
        if let Some(w) = self.watcher.take() {
            w.shutdown().await;
        }
        if let Some(c) = self.city.take() {
            c.shutdown().await?;
        }
        if let Some(l) = self.light.take() {
            l.shutdown().await?;
        }
        Ok(())
    }
}

/// Runs the city role with membership, light-node storage, proof of place on the shipped
/// polygons and the default flagger.
pub async fn run_city(
    cfg: &CityConfig,
    key: &Keypair,
    m: &MembershipConfig,
) -> Result<RunningRole> {
    let store = m
        .nodelist
        .connect_store()
        .await
        .map_err(|e| Error::Config(format!("presence: {e}")))?;
    let watcher = NodeListManager::start(store.clone(), None, m.nodelist.clone());
    let directory = Arc::new(PriorityDirectory::new(
        NodeListDirectory::new(watcher.registry().clone(), Some(m.city_id.clone())),
        (m.lat, m.lon),
    ));
    let index = pop_geo::shipped::all().map_err(|e| Error::Config(e.to_string()))?;
    let flagger = flagging::FlaggerRegistry::with_defaults()
        .build(&flagging::FlaggingConfig::default())
        .map_err(|e| Error::Config(e.to_string()))?;
    let parts = CityParts {
        storage: Some(StorageParts {
            transport: Arc::new(GrpcTransport::default()),
            directory,
            config: PipelineConfig::default(),
        }),
        pop: Some(PopCheck {
            index: Arc::new(pop_geo::CachedIndex::new(
                Arc::new(index),
                Default::default(),
            )),
            mode: m.pop_mode,
        }),
        flagger: Some(flagger),
    };
    let city = start_city_with(cfg, key, parts).await?;
    let info = node_info(
        key.node_id(),
        Role::City,
        m.advertised(city.addr()),
        &m.city_id,
        &m.zone,
        (m.lat, m.lon),
        0,
        now_ms(),
    );
    let login = NodeListManager::start(store, Some(info), m.nodelist.clone());
    let rereplicator = city.node().pipeline().map(|p| {
        spawn_rereplicator(
            watcher.registry(),
            Arc::downgrade(p),
            Duration::from_millis(500),
        )
    });
    Ok(RunningRole {
        login: Some(login),
        watcher: Some(watcher),
        rereplicator,
        city: Some(city),
        light: None,
    })
}

/// Runs the light role and logs it in to presence so city nodes find it.
pub async fn run_light(
    cfg: &LightConfig,
    key: Keypair,
    m: &MembershipConfig,
) -> Result<RunningRole> {
    let node_id = key.node_id();
    let light = start_light(cfg, key).await?;
    let info = node_info(
        node_id,
        Role::Light,
        m.advertised(light.addr()),
        &m.city_id,
        &m.zone,
        (m.lat, m.lon),
        cfg.quota_bytes,
        now_ms(),
    );
    let login = NodeListManager::connect(m.nodelist.clone(), Some(info))
        .await
        .map_err(|e| Error::Config(format!("presence: {e}")))?;
    Ok(RunningRole {
        login: Some(login),
        watcher: None,
        rereplicator: None,
        city: None,
        light: Some(light),
    })
}
