//! Gossip wired into a role: a SWIM agent ([`gossip::GossipAgent`]) on the role's UDP port
//! (the same port number as its gRPC listener, so presence's `grpc_addr` is also the
//! gossip address), bootstrapped from the presence view, feeding that view (node-list)
//! with who is alive and who is confirmed down.

use crate::{Error, Result};
use dag_core::NodeId;
use gossip::{GossipAgent, GossipConfig, GossipEvent, GossipHandle, GossipView, MemberState};
use node_list::NodeRegistry;
use pqc::Keypair;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Gossip settings of a role. `Default`: off (in-process devnets); the binary turns it on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GossipSettings {
    /// Run gossip.
    pub enabled: bool,
    /// UDP address to bind (default: the gRPC listen address, UDP).
    pub listen: Option<SocketAddr>,
    /// Extra bootstrap members (`<node id hex>@<host:port>`) beside the presence view.
    pub seeds: Vec<(NodeId, SocketAddr)>,
    /// SWIM timing.
    pub config: GossipConfig,
}

impl GossipSettings {
    /// Parses a seed written `<node id hex>@<host:port>`.
    pub fn parse_seed(s: &str) -> std::result::Result<(NodeId, SocketAddr), String> {
        let (id, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("seed {s:?}: expected <node id hex>@<host:port>"))?;
        let id = NodeId::from_hex(id).map_err(|e| format!("seed {s:?}: node id: {e}"))?;
        let addr = addr
            .parse()
            .map_err(|e| format!("seed {s:?}: address: {e}"))?;
        Ok((id, addr))
    }
}

/// A running gossip agent and the task that feeds the view.
#[derive(Debug)]
pub struct RunningGossip {
    handle: GossipHandle,
    bridge: JoinHandle<()>,
}

impl RunningGossip {
    /// The agent (members, counters, events).
    pub fn handle(&self) -> &GossipHandle {
        &self.handle
    }

    /// Leaves the cluster (peers mark this node down at once) and stops.
    pub async fn shutdown(self) {
        self.bridge.abort();
        self.handle.shutdown().await;
    }

    /// Stops as a crash would.
    pub fn abort(self) {
        self.bridge.abort();
        self.handle.abort();
    }
}

/// Starts gossip for the node holding `key`, whose gRPC server is bound on `grpc`, in city
/// `city_id`, feeding `views` (the first one also bootstraps and admits). `None` when
/// gossip is off. Peers are admitted only when the view (presence, or gossip itself) knows
/// them as nodes of this city.
pub async fn start(
    key: &Keypair,
    grpc: SocketAddr,
    advertise: Option<&str>,
    city_id: &str,
    settings: &GossipSettings,
    views: &[&NodeRegistry],
) -> Result<Option<RunningGossip>> {
    let Some(view) = views.first() else {
        return Ok(None);
    };
    if !settings.enabled {
        return Ok(None);
    }
    let bind = settings.listen.unwrap_or(grpc);
    // The published gRPC address names the gossip port too, unless gossip has its own.
    let published = match settings.listen {
        Some(_) => crate::runtime::advertised_addr(bind, None),
        None => crate::runtime::advertised_addr(bind, advertise),
    };
    // A host name is resolved once (peers need an address in the member identity).
    let advertise = match published.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => tokio::net::lookup_host(published.as_str())
            .await
            .ok()
            .and_then(|mut a| a.next()),
    };
    if advertise.is_none() {
        return Err(Error::Membership(format!(
            "gossip: cannot resolve the advertised address {published}"
        )));
    }
    let allow_view: NodeRegistry = (*view).clone();
    let city = city_id.to_string();
    let allow: gossip::AllowFn = Arc::new(move |id: &NodeId| {
        allow_view.gossip_holds(id) || allow_view.get(*id).is_some_and(|n| n.city_id == city)
    });
    let handle = GossipAgent::start(key.clone(), bind, advertise, settings.config.clone(), allow)
        .await
        .map_err(|source| Error::Gossip { source })?;
    for v in views {
        v.attach_gossip();
    }
    tracing::info!(udp = %handle.local_addr(), "gossip started");
    let bridge = tokio::spawn(bridge(
        handle.me().node_id,
        handle.share(),
        views.iter().map(|v| (*v).clone()).collect(),
        city_id.to_string(),
        settings.seeds.clone(),
    ));
    Ok(Some(RunningGossip { handle, bridge }))
}

async fn bridge(
    me: NodeId,
    agent: GossipView,
    views: Vec<NodeRegistry>,
    city: String,
    seeds: Vec<(NodeId, SocketAddr)>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    let mut events = agent.subscribe();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(GossipEvent::Up(m)) => views.iter().for_each(|v| v.gossip_alive(m.node_id)),
                Ok(GossipEvent::Down(m)) => {
                    tracing::info!(node = %m.node_id.short(), "gossip confirmed a node down");
                    for v in &views {
                        v.gossip_down(m.node_id);
                    }
                }
                Ok(GossipEvent::Suspected(id)) => {
                    tracing::info!(node = %id.short(), "gossip suspects a node");
                }
                Ok(GossipEvent::Refuted(id)) => {
                    tracing::info!(node = %id.short(), "gossip suspicion refuted");
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                round += 1;
                // Presence says gone, gossip says alive: let gossip check (a live node
                // refutes the suspicion; a dead one a stale view missed is confirmed down).
                for v in &views {
                    for id in v.take_presence_doubts() {
                        if id != me {
                            agent.suspect(id);
                        }
                    }
                }
                let members = agent.members();
                // This node is alive as far as its own views go, presence or not.
                views.iter().for_each(|v| v.gossip_alive(me));
                let mut suspect = 0usize;
                for (m, state) in &members {
                    views.iter().for_each(|v| v.gossip_alive(m.node_id));
                    suspect += usize::from(*state == MemberState::Suspect);
                }
                // Bootstrap: announce to nodes of this city that presence lists and gossip
                // does not know yet (a few per tick), and to the configured seeds.
                let known: std::collections::HashSet<NodeId> =
                    members.iter().map(|(m, _)| m.node_id).collect();
                let mut unknown: Vec<(NodeId, SocketAddr)> = views[0]
                    .by_city(&city)
                    .into_iter()
                    .filter(|n| n.node_id != me && !known.contains(&n.node_id))
                    .filter_map(|n| n.grpc_addr.parse().ok().map(|a| (n.node_id, a)))
                    .collect();
                if members.is_empty() || round.is_multiple_of(10) {
                    unknown.extend(seeds.iter().filter(|(id, _)| !known.contains(id)).copied());
                }
                let k = unknown.len();
                for (i, (id, addr)) in unknown.into_iter().enumerate() {
                    // Rotate through them, 3 per tick.
                    if k <= 3 || (i as u64 + round).is_multiple_of((k as u64).div_ceil(3)) {
                        agent.announce(id, addr);
                    }
                }
                let s = agent.stats();
                let [sent, recv, rejected, suspicions, downs] = [
                    &s.bytes_sent, &s.bytes_received, &s.rejected, &s.suspicions, &s.downs,
                ]
                .map(|c| c.load(Ordering::Relaxed));
                metrics::gauge!("gossip_members_alive").set((members.len() - suspect) as f64);
                metrics::gauge!("gossip_members_suspect").set(suspect as f64);
                metrics::counter!("gossip_bytes_sent_total").absolute(sent);
                metrics::counter!("gossip_bytes_received_total").absolute(recv);
                metrics::counter!("gossip_rejected_total").absolute(rejected);
                metrics::counter!("gossip_suspicions_total").absolute(suspicions);
                metrics::counter!("gossip_downs_total").absolute(downs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_or_say_why() {
        let id = "ab".repeat(32);
        let (n, a) = GossipSettings::parse_seed(&format!("{id}@127.0.0.1:7000")).unwrap();
        assert_eq!(n, NodeId::from_bytes([0xab; 32]));
        assert_eq!(a.port(), 7000);
        for bad in ["127.0.0.1:7000", "zz@127.0.0.1:1", &format!("{id}@nowhere")] {
            assert!(GossipSettings::parse_seed(bad).is_err(), "{bad}");
        }
    }
}
