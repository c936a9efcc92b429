//! Nodes: roles and the information a node publishes about itself (presence, node-list).

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The role a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A city (full) node: admission, sharding, ordering.
    City,
    /// A light node: stores shards, signs receipts.
    Light,
    /// A continent node: keeps the log of city batch headers.
    Continent,
    /// A global node: keeps the log of continent headers.
    Global,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::City => "city",
            Role::Light => "light",
            Role::Continent => "continent",
            Role::Global => "global",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "city" => Ok(Role::City),
            "light" => Ok(Role::Light),
            "continent" => Ok(Role::Continent),
            "global" => Ok(Role::Global),
            other => Err(format!(
                "unknown role {other:?} (expected city, light, continent or global)"
            )),
        }
    }
}

/// What a node publishes about itself. Serialized as JSON by the presence service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (BLAKE3 of its public key), hex in JSON.
    pub node_id: NodeId,
    /// Role.
    pub role: Role,
    /// gRPC address, `host:port`.
    pub grpc_addr: String,
    /// City id the node serves or lives in.
    pub city_id: String,
    /// Failure-domain zone inside the city (rack, district, provider); empty if unknown.
    #[serde(default)]
    pub zone: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Free storage capacity, bytes.
    pub free_capacity: u64,
    /// Current load in [0, 1].
    pub load: f64,
    /// Software version.
    pub version: String,
    /// When the current session started, ms since the Unix epoch.
    pub session_start_ms: u64,
}
