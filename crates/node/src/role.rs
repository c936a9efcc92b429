//! What every role shares when it runs as an operator deploys it: where the node is and
//! how it reaches presence ([`MembershipConfig`]), and the handle of a running role with
//! its membership ([`RunningRole`]). Each role's composition root lives in its module.

use crate::{CityHandle, LightHandle, PopMode, Result};
use node_list::{NodeListConfig, NodeListHandle};
use serde::Deserialize;
use std::net::SocketAddr;

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
    /// Gossip among the city's nodes (flags `--gossip*`); not from TOML.
    #[serde(skip)]
    pub gossip: crate::gossip::GossipSettings,
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
            gossip: crate::gossip::GossipSettings::default(),
        }
    }
}

/// A running role with its membership. Stop it with [`RunningRole::shutdown`].
#[derive(Debug)]
pub struct RunningRole {
    login: Option<NodeListHandle>,
    watcher: Option<NodeListHandle>,
    rereplicator: Option<tokio::task::JoinHandle<()>>,
    city: Option<CityHandle>,
    light: Option<LightHandle>,
    gossip: Option<crate::gossip::RunningGossip>,
    /// A light node's free-capacity advertiser (stopped before the logout).
    advertiser: Option<tokio::task::JoinHandle<()>>,
}

impl RunningRole {
    /// A running city role: its server, its view of the city and its own login.
    pub(crate) fn city(
        city: CityHandle,
        watcher: NodeListHandle,
        login: NodeListHandle,
        rereplicator: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        RunningRole {
            login: Some(login),
            watcher: Some(watcher),
            rereplicator,
            city: Some(city),
            light: None,
            gossip: None,
            advertiser: None,
        }
    }

    /// A running light role and its login.
    pub(crate) fn light(light: LightHandle, login: NodeListHandle) -> Self {
        RunningRole {
            login: Some(login),
            watcher: None,
            rereplicator: None,
            city: None,
            light: Some(light),
            gossip: None,
            advertiser: None,
        }
    }

    /// The role with its gossip agent (when gossip is on).
    pub(crate) fn with_gossip(mut self, gossip: Option<crate::gossip::RunningGossip>) -> Self {
        self.gossip = gossip;
        self
    }

    /// The role with its free-capacity advertiser (light nodes).
    pub(crate) fn with_advertiser(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.advertiser = Some(task);
        self
    }

    /// The gossip agent, when gossip is on.
    pub fn gossip(&self) -> Option<&crate::gossip::RunningGossip> {
        self.gossip.as_ref()
    }

    /// The view this role keeps fresh: the city's watcher, or a light node's own login
    /// view.
    pub fn membership_view(&self) -> Option<&node_list::NodeRegistry> {
        self.watcher
            .as_ref()
            .or(self.login.as_ref())
            .map(NodeListHandle::registry)
    }

    /// The city server, when this is a city role.
    pub fn city_handle(&self) -> Option<&CityHandle> {
        self.city.as_ref()
    }

    /// The role's live view of the network (city roles watch presence).
    pub fn view(&self) -> Option<&node_list::NodeRegistry> {
        self.watcher.as_ref().map(NodeListHandle::registry)
    }

    /// The light server, when this is a light role.
    pub fn light_handle(&self) -> Option<&LightHandle> {
        self.light.as_ref()
    }

    /// The gRPC address served.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.city
            .as_ref()
            .map(CityHandle::addr)
            .or_else(|| self.light.as_ref().map(LightHandle::addr))
    }

    /// Stops as a crash would: no logout (presence notices the missing heartbeats), the
    /// server dropped mid-call.
    pub async fn kill(mut self) {
        if let Some(a) = self.advertiser.take() {
            a.abort();
        }
        if let Some(r) = self.rereplicator.take() {
            r.abort();
        }
        if let Some(g) = self.gossip.take() {
            g.abort();
        }
        for m in [self.login.take(), self.watcher.take()]
            .into_iter()
            .flatten()
        {
            m.abort();
        }
        if let Some(c) = self.city.take() {
            c.kill().await;
        }
        if let Some(l) = self.light.take() {
            l.kill().await;
        }
    }

    /// Logs out of presence, then stops the server gracefully.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(a) = self.advertiser.take() {
            a.abort();
            let _ = a.await;
        }
        if let Some(r) = self.rereplicator.take() {
            r.abort();
        }
        if let Some(g) = self.gossip.take() {
            g.shutdown().await;
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
