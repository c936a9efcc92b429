//! The presence port: what every backend (memory, Redis, HTTP client) offers.

use crate::{ListFilter, PresenceEvent, Result, Session, SessionHash};
use dag_core::{NodeId, NodeInfo};
use futures::stream::BoxStream;

/// Events as a stream. An `Err(Error::EventsMissed)` item means some events were lost
/// (slow consumer, reconnect): re-read the list. The stream ends when the subscription
/// cannot continue; subscribe again (or poll) then.
pub type EventStream = BoxStream<'static, Result<PresenceEvent>>;

/// Who is online. Implementations must give the same answers (see the conformance suite in
/// the crate's tests): a node is listed iff it logged in and was last seen within the TTL;
/// an expired node is never listed, even before a sweep removes it.
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Short name of the backend ("memory", "redis", "http").
    fn backend(&self) -> &'static str;

    /// Logs a node in (or updates the info of an online node). Emits `join` or `update`.
    async fn login(&self, info: NodeInfo) -> Result<()>;

    /// Marks a node as seen now. [`Error::UnknownNode`](crate::Error::UnknownNode) if it is
    /// not online (never logged in, logged out, or expired).
    async fn heartbeat(&self, node: NodeId) -> Result<()>;

    /// Logs a node out. Emits `leave` (logout). `UnknownNode` if it was not online.
    async fn logout(&self, node: NodeId) -> Result<()>;

    /// Online nodes passing `filter`, ordered by node id.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<NodeInfo>>;

    /// Events from now on.
    async fn subscribe(&self) -> Result<EventStream>;

    /// Removes expired nodes and emits a `leave` (expired) for each; returns their ids.
    /// Remote stores (the HTTP client) leave this to the server and return nothing.
    async fn sweep(&self) -> Result<Vec<NodeId>> {
        Ok(Vec::new())
    }

    /// Ok if the backend answers.
    async fn ping(&self) -> Result<()>;
}

impl std::fmt::Debug for dyn PresenceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PresenceStore({})", self.backend())
    }
}

/// A store that keeps login sessions, so an untrusted front end (the HTTP API) can make
/// every write prove it comes from the node itself. The caller verifies the signed login
/// ([`SignedLogin::verify`](crate::SignedLogin::verify)); the store refuses replays and
/// checks session tokens atomically with the change, so a refused request changes nothing.
#[async_trait::async_trait]
pub trait SessionStore: PresenceStore {
    /// Logs `info` in (or updates it) under `session`, replacing the node's previous
    /// session. [`AuthFailure::Replayed`](crate::AuthFailure::Replayed) if
    /// `session.issued_at_ms` is not newer than the node's last accepted session login
    /// (remembered for [`MAX_LOGIN_SKEW`](crate::MAX_LOGIN_SKEW) after it).
    async fn login_session(&self, info: NodeInfo, session: Session) -> Result<()>;

    /// A heartbeat that must carry the node's current session:
    /// [`AuthFailure::BadSession`](crate::AuthFailure::BadSession) otherwise,
    /// `UnknownNode` if it is not online.
    async fn heartbeat_session(&self, node: NodeId, session: SessionHash) -> Result<()>;

    /// A logout that must carry the node's current session (same errors as the heartbeat).
    async fn logout_session(&self, node: NodeId, session: SessionHash) -> Result<()>;
}

impl std::fmt::Debug for dyn SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionStore({})", self.backend())
    }
}
