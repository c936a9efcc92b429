//! In-memory presence store: one process, same behaviour as Redis (used by the devnet and
//! as the test double of [`PresenceStore`]).

use crate::{
    AuthFailure, Error, EventStream, LeaveReason, ListFilter, MAX_LOGIN_SKEW, PresenceEvent,
    PresenceStore, Result, Session, SessionHash, SessionStore,
};
use dag_core::{Clock, NodeId, NodeInfo};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Events buffered per subscriber before it is told it missed some.
const EVENT_BUFFER: usize = 4096;

#[derive(Debug)]
struct Entry {
    info: NodeInfo,
    last_seen_ms: u64,
    /// The current session's token hash (`None` after a trusted in-process login).
    session: Option<SessionHash>,
}

/// An in-memory [`PresenceStore`]. Clones share the same state, so one instance can serve
/// every node of an in-process devnet.
#[derive(Clone)]
pub struct MemoryPresenceStore {
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
    nodes: Arc<Mutex<BTreeMap<NodeId, Entry>>>,
    /// Last accepted session-login timestamp per node, kept for the skew window after it
    /// (lock order: `nodes` first).
    last_login: Arc<Mutex<HashMap<NodeId, u64>>>,
    events: broadcast::Sender<PresenceEvent>,
}

impl std::fmt::Debug for MemoryPresenceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPresenceStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("nodes", &self.nodes.lock().len())
            .finish()
    }
}

impl MemoryPresenceStore {
    /// An empty store with online TTL `ttl`, reading time from `clock`.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        MemoryPresenceStore {
            ttl_ms: ttl.as_millis() as u64,
            clock,
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            last_login: Arc::new(Mutex::new(HashMap::new())),
            events,
        }
    }

    fn cutoff(&self, now: u64) -> u64 {
        now.saturating_sub(self.ttl_ms)
    }

    fn emit(&self, ev: PresenceEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(ev);
    }

    fn login_inner(&self, info: NodeInfo, session: Option<Session>) -> Result<()> {
        let now = self.clock.now_ms();
        let cutoff = self.cutoff(now);
        let id = info.node_id;
        let mut events = Vec::with_capacity(2);
        {
            let mut nodes = self.nodes.lock();
            if let Some(s) = &session {
                let mut last = self.last_login.lock();
                if last.get(&id).is_some_and(|&t| t >= s.issued_at_ms) {
                    return Err(Error::Unauthorized {
                        node: id,
                        reason: AuthFailure::Replayed,
                    });
                }
                last.insert(id, s.issued_at_ms);
            }
            match nodes.get(&id) {
                Some(e) if e.last_seen_ms >= cutoff => {
                    events.push(PresenceEvent::Update { node: info.clone() })
                }
                Some(_) => {
                    events.push(PresenceEvent::Leave {
                        node_id: id,
                        reason: LeaveReason::Expired,
                    });
                    events.push(PresenceEvent::Join { node: info.clone() });
                }
                None => events.push(PresenceEvent::Join { node: info.clone() }),
            }
            let last_seen_ms = nodes.get(&id).map_or(now, |e| e.last_seen_ms.max(now));
            nodes.insert(
                id,
                Entry {
                    info,
                    last_seen_ms,
                    session: session.map(|s| s.hash),
                },
            );
            // Emit under the lock so subscribers see events in the order of the changes.
            for ev in events {
                self.emit(ev);
            }
        }
        Ok(())
    }

    fn heartbeat_inner(&self, node: NodeId, session: Option<SessionHash>) -> Result<()> {
        let now = self.clock.now_ms();
        let cutoff = self.cutoff(now);
        let mut nodes = self.nodes.lock();
        match nodes.get_mut(&node) {
            Some(e) if e.last_seen_ms >= cutoff => {
                check_session(node, e, session)?;
                e.last_seen_ms = e.last_seen_ms.max(now);
                Ok(())
            }
            Some(_) => {
                nodes.remove(&node);
                self.emit(PresenceEvent::Leave {
                    node_id: node,
                    reason: LeaveReason::Expired,
                });
                Err(Error::UnknownNode(node))
            }
            None => Err(Error::UnknownNode(node)),
        }
    }

    fn logout_inner(&self, node: NodeId, session: Option<SessionHash>) -> Result<()> {
        let mut nodes = self.nodes.lock();
        if let Some(e) = nodes.get(&node) {
            check_session(node, e, session)?;
        }
        if nodes.remove(&node).is_some() {
            self.emit(PresenceEvent::Leave {
                node_id: node,
                reason: LeaveReason::Logout,
            });
            Ok(())
        } else {
            Err(Error::UnknownNode(node))
        }
    }
}

/// A session request must carry the entry's session; trusted calls (`None`) need none.
fn check_session(node: NodeId, e: &Entry, session: Option<SessionHash>) -> Result<()> {
    match session {
        Some(h) if e.session != Some(h) => Err(Error::Unauthorized {
            node,
            reason: AuthFailure::BadSession,
        }),
        _ => Ok(()),
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryPresenceStore {
    async fn login_session(&self, info: NodeInfo, session: Session) -> Result<()> {
        self.login_inner(info, Some(session))
    }

    async fn heartbeat_session(&self, node: NodeId, session: SessionHash) -> Result<()> {
        self.heartbeat_inner(node, Some(session))
    }

    async fn logout_session(&self, node: NodeId, session: SessionHash) -> Result<()> {
        self.logout_inner(node, Some(session))
    }
}

#[async_trait::async_trait]
impl PresenceStore for MemoryPresenceStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn login(&self, info: NodeInfo) -> Result<()> {
        self.login_inner(info, None)
    }

    async fn heartbeat(&self, node: NodeId) -> Result<()> {
        self.heartbeat_inner(node, None)
    }

    async fn logout(&self, node: NodeId) -> Result<()> {
        self.logout_inner(node, None)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<NodeInfo>> {
        let cutoff = self.cutoff(self.clock.now_ms());
        Ok(self
            .nodes
            .lock()
            .values()
            .filter(|e| e.last_seen_ms >= cutoff && filter.matches(&e.info))
            .map(|e| e.info.clone())
            .collect())
    }

    async fn subscribe(&self) -> Result<EventStream> {
        let rx = self.events.subscribe();
        Ok(BroadcastStream::new(rx)
            .map(|item| {
                item.map_err(
                    |BroadcastStreamRecvError::Lagged(missed)| Error::EventsMissed { missed },
                )
            })
            .boxed())
    }

    async fn sweep(&self) -> Result<Vec<NodeId>> {
        let cutoff = self.cutoff(self.clock.now_ms());
        let mut nodes = self.nodes.lock();
        let gone: Vec<NodeId> = nodes
            .iter()
            .filter(|(_, e)| e.last_seen_ms < cutoff)
            .map(|(id, _)| *id)
            .collect();
        let forget_before = self
            .clock
            .now_ms()
            .saturating_sub(MAX_LOGIN_SKEW.as_millis() as u64);
        self.last_login.lock().retain(|_, t| *t >= forget_before);
        for id in &gone {
            nodes.remove(id);
            self.emit(PresenceEvent::Leave {
                node_id: *id,
                reason: LeaveReason::Expired,
            });
        }
        Ok(gone)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
