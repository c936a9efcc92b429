//! Events and list filters shared by stores, server and client.

use dag_core::{NodeId, NodeInfo, Role};
use serde::{Deserialize, Serialize};

/// Why a node left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The node logged out.
    Logout,
    /// The node stopped heartbeating and its TTL ran out.
    Expired,
}

/// A change in who is online. JSON: `{"type":"join","node":{…}}`,
/// `{"type":"update","node":{…}}`, `{"type":"leave","node_id":"…","reason":"expired"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresenceEvent {
    /// A node logged in.
    Join {
        /// Its info.
        node: NodeInfo,
    },
    /// An online node logged in again with new info.
    Update {
        /// Its new info.
        node: NodeInfo,
    },
    /// A node left.
    Leave {
        /// Which node.
        node_id: NodeId,
        /// Why.
        reason: LeaveReason,
    },
}

impl PresenceEvent {
    /// The node the event is about.
    pub fn node_id(&self) -> NodeId {
        match self {
            PresenceEvent::Join { node } | PresenceEvent::Update { node } => node.node_id,
            PresenceEvent::Leave { node_id, .. } => *node_id,
        }
    }

    /// "join", "update" or "leave" (the SSE event name).
    pub fn kind(&self) -> &'static str {
        match self {
            PresenceEvent::Join { .. } => "join",
            PresenceEvent::Update { .. } => "update",
            PresenceEvent::Leave { .. } => "leave",
        }
    }
}

/// Which online nodes to list. Empty = all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this role.
    pub role: Option<Role>,
    /// Only this city id.
    pub city: Option<String>,
}

impl ListFilter {
    /// True if `info` passes the filter.
    pub fn matches(&self, info: &NodeInfo) -> bool {
        self.role.is_none_or(|r| r == info.role)
            && self.city.as_deref().is_none_or(|c| c == info.city_id)
    }

    /// Only nodes of `role`.
    pub fn role(role: Role) -> Self {
        ListFilter {
            role: Some(role),
            city: None,
        }
    }
}
