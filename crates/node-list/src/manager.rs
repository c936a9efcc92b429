//! The background task that keeps a [`NodeRegistry`] fresh and this node logged in.

use crate::{NodeListConfig, NodeRegistry, Result};
use dag_core::{NodeId, NodeInfo};
use futures::StreamExt;
use presence::{Error as PresenceError, EventStream, ListFilter, PresenceStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Starts node-list managers.
#[derive(Debug)]
pub struct NodeListManager;

impl NodeListManager {
    /// Starts the manager over `store`. With `me`, the node logs in, heartbeats every
    /// `config.heartbeat` (logging in again if presence forgot it) and logs out on
    /// shutdown; without, it only watches. The view is fed by presence events and
    /// refreshed in full every `config.poll_interval` (the fallback when events are lost).
    /// Must be called inside a tokio runtime.
    pub fn start(
        store: Arc<dyn PresenceStore>,
        me: Option<NodeInfo>,
        config: NodeListConfig,
    ) -> NodeListHandle {
        let registry = NodeRegistry::new(config.cache_ttl);
        let (stop_tx, stop_rx) = oneshot::channel();
        let me_id = me.as_ref().map(|m| m.node_id);
        let task = tokio::spawn(run(store.clone(), me, config, registry.clone(), stop_rx));
        NodeListHandle {
            registry,
            store,
            me: me_id,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Builds the store from `config.backend` (memory / redis / http) and starts. With
    /// `me`, the node's key signs its presence logins (required over http).
    pub async fn connect(
        config: NodeListConfig,
        me: Option<(NodeInfo, Arc<dyn dag_core::Signer>)>,
    ) -> Result<NodeListHandle> {
        let (me, signer) = match me {
            Some((info, signer)) => (Some(info), Some(signer)),
            None => (None, None),
        };
        let store = config.connect_store_as(signer).await?;
        Ok(Self::start(store, me, config))
    }
}

/// A running manager. Dropping it stops the task without logging out (as a crash would);
/// call [`shutdown`](Self::shutdown) to leave cleanly.
#[derive(Debug)]
pub struct NodeListHandle {
    registry: NodeRegistry,
    store: Arc<dyn PresenceStore>,
    me: Option<NodeId>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl NodeListHandle {
    /// The live view.
    pub fn registry(&self) -> &NodeRegistry {
        &self.registry
    }

    /// The presence store the manager uses.
    pub fn store(&self) -> Arc<dyn PresenceStore> {
        self.store.clone()
    }

    /// This node's id, if it logged in.
    pub fn node_id(&self) -> Option<NodeId> {
        self.me
    }

    /// Stops heartbeating and logs out (leave event for everyone else), then stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops at once without logging out, as a crash would (the node expires by TTL).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for NodeListHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn next_event(
    sub: &mut Option<EventStream>,
) -> Option<presence::Result<presence::PresenceEvent>> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn refresh(store: &dyn PresenceStore, registry: &NodeRegistry) {
    match store.list(&ListFilter::default()).await {
        Ok(nodes) => {
            registry.presence_answered(true);
            registry.replace_all(nodes)
        }
        // Keep the view: entries gossip vouches for stay; the others age out after the
        // cache TTL (as Stale, which re-replicates nothing) if this persists.
        Err(e) => {
            registry.presence_answered(false);
            let s = registry.status();
            tracing::warn!(error = %e, gossip_live = s.gossip_live, gossip_only = s.gossip_only(),
                "node-list refresh failed; keeping the view");
        }
    }
}

async fn subscribe(store: &dyn PresenceStore) -> Option<EventStream> {
    match store.subscribe().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "presence events unavailable; polling");
            None
        }
    }
}

async fn run(
    store: Arc<dyn PresenceStore>,
    me: Option<NodeInfo>,
    config: NodeListConfig,
    registry: NodeRegistry,
    mut stop: oneshot::Receiver<()>,
) {
    let view_label: &'static str = if me.is_some() { "login" } else { "watch" };
    let mut logged_in = false;
    if let Some(me) = &me {
        logged_in = login(store.as_ref(), me).await;
    }
    // Subscribe before the first listing, so nothing between the two is missed.
    let mut sub = subscribe(store.as_ref()).await;
    refresh(store.as_ref(), &registry).await;

    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + config.heartbeat,
        config.heartbeat.max(Duration::from_millis(1)),
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval_at(
        tokio::time::Instant::now() + config.poll_interval,
        config.poll_interval.max(Duration::from_millis(1)),
    );
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expire_every =
        (config.cache_ttl / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut expire = tokio::time::interval(expire_every);
    expire.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = heartbeat.tick(), if me.is_some() => {
                if let Some(me) = &me {
                    logged_in = beat(store.as_ref(), &registry, me, logged_in).await;
                }
            }
            _ = poll.tick() => {
                if sub.is_none() {
                    sub = subscribe(store.as_ref()).await;
                }
                refresh(store.as_ref(), &registry).await;
            }
            item = next_event(&mut sub) => match item {
                Some(Ok(ev)) => registry.apply(&ev),
                Some(Err(PresenceError::EventsMissed { .. })) => {
                    refresh(store.as_ref(), &registry).await;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "presence event stream failed; polling");
                    sub = None;
                }
                None => sub = None,
            },
            _ = expire.tick() => {
                registry.expire();
                publish_status(&registry, view_label);
            }
        }
    }

    if let (Some(me), true) = (&me, logged_in) {
        match tokio::time::timeout(Duration::from_secs(2), store.logout(me.node_id)).await {
            Ok(Ok(())) | Ok(Err(PresenceError::UnknownNode(_))) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "logout failed"),
            Err(_) => tracing::warn!("logout timed out"),
        }
    }
}

async fn login(store: &dyn PresenceStore, me: &NodeInfo) -> bool {
    match store.login(me.clone()).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, node = %me.node_id.short(), "presence login failed; will retry");
            false
        }
    }
}

/// One heartbeat tick: log in if needed, else heartbeat (re-login if presence forgot us).
async fn beat(
    store: &dyn PresenceStore,
    registry: &NodeRegistry,
    me: &NodeInfo,
    logged_in: bool,
) -> bool {
    if !logged_in {
        return login(store, me).await;
    }
    match store.heartbeat(me.node_id).await {
        Ok(()) => {
            registry.presence_answered(true);
            true
        }
        // Presence forgot us, or our session was replaced (a newer login of ours, e.g. a
        // capacity update): a fresh signed login.
        Err(PresenceError::UnknownNode(_))
        | Err(PresenceError::Unauthorized {
            reason: presence::AuthFailure::BadSession,
            ..
        }) => login(store, me).await,
        Err(e) => {
            registry.presence_answered(false);
            tracing::warn!(error = %e, "heartbeat failed");
            true
        }
    }
}

/// The view's status as Prometheus gauges (label `view`: `watch` or `login`; the
/// city and light counts also by `role`).
fn publish_status(registry: &NodeRegistry, view: &'static str) {
    let s = registry.status();
    metrics::gauge!("nodelist_presence_reachable", "view" => view).set(if s.presence_reachable {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("nodelist_gossip_only", "view" => view).set(if s.gossip_only() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("nodelist_view_nodes", "view" => view).set(s.nodes as f64);
    for role in [dag_core::Role::City, dag_core::Role::Light] {
        metrics::gauge!("nodelist_view_role_nodes", "view" => view, "role" => role.as_str())
            .set(registry.by_role(role).len() as f64);
    }
    metrics::gauge!("nodelist_gossip_live", "view" => view).set(s.gossip_live as f64);
}
