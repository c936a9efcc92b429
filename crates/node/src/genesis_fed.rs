//! The federation section of a genesis file (a minimal stand-in until the real genesis
//! module absorbs it): the cities' committees, the continent and the global.
//!
//! ```toml
//! [[cities]]
//! id = "JP-13"
//! members = [{ public_key = "<hex ML-DSA-87 public key>", stake = 1, address = "127.0.0.1:7801" }]
//!
//! [continent]
//! public_key = "<hex>"
//! address = "127.0.0.1:7600"
//!
//! [global]
//! public_key = "<hex>"
//! address = "127.0.0.1:7650"
//! ```
//!
//! A city's id in the federation is [`federation_city_id`] of its name (e.g. `JP-13`).

use crate::continent::{CityCommittee, GlobalTarget};
use dag_core::Hash32;
use dag_core::consensus::Committee;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a genesis file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse into the documented shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A public key is not hex.
    #[error("{what}: public key is not hex: {source}")]
    Key {
        /// Which key.
        what: String,
        /// Why.
        source: hex::FromHexError,
    },
    /// A city's members do not form a committee (none, zero stake, a repeated key).
    #[error("city {city}: members do not form a committee (empty, zero stake or a repeated key)")]
    Committee {
        /// The city.
        city: String,
    },
    /// A section the role needs is missing.
    #[error("genesis has no [{0}] section")]
    Missing(&'static str),
}

/// One representative of a city.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// ML-DSA-87 public key, hex.
    pub public_key: String,
    /// Stake (> 0).
    pub stake: u64,
    /// Its Consensus gRPC address.
    pub address: String,
}

/// A city and its committee.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitySpec {
    /// The city's name (e.g. `JP-13`).
    pub id: String,
    /// Its representatives.
    pub members: Vec<MemberSpec>,
}

/// A log endpoint (continent or global).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// ML-DSA-87 public key, hex.
    pub public_key: String,
    /// gRPC address.
    pub address: String,
}

/// The federation section of a genesis file.
#[derive(Debug, Clone, Deserialize)]
pub struct FederationGenesis {
    /// The cities.
    #[serde(default)]
    pub cities: Vec<CitySpec>,
    /// The continent.
    pub continent: Option<LogSpec>,
    /// The global log.
    pub global: Option<LogSpec>,
}

/// A city's federation id: `BLAKE3("citychain/city-id/v1" ‖ name)`.
pub fn federation_city_id(name: &str) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"citychain/city-id/v1");
    h.update(name.as_bytes());
    Hash32(*h.finalize().as_bytes())
}

fn key(what: &str, hex_key: &str) -> Result<Vec<u8>, GenesisError> {
    hex::decode(hex_key.trim()).map_err(|source| GenesisError::Key {
        what: what.to_string(),
        source,
    })
}

impl FederationGenesis {
    /// Reads and parses `path` (other sections of the file are ignored).
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| GenesisError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The cities' committees, for the continent.
    pub fn city_committees(&self) -> Result<Vec<CityCommittee>, GenesisError> {
        self.cities
            .iter()
            .map(|c| {
                let members = c
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        Ok((
                            key(&format!("city {} member {i}", c.id), &m.public_key)?,
                            m.stake,
                        ))
                    })
                    .collect::<Result<Vec<_>, GenesisError>>()?;
                Ok(CityCommittee {
                    city: federation_city_id(&c.id),
                    committee: Committee::new(members)
                        .ok_or_else(|| GenesisError::Committee { city: c.id.clone() })?,
                })
            })
            .collect()
    }

    /// The continent's public key, for the global (and for pushers checking receipts).
    pub fn continent_key(&self) -> Result<Vec<u8>, GenesisError> {
        let c = self
            .continent
            .as_ref()
            .ok_or(GenesisError::Missing("continent"))?;
        key("continent", &c.public_key)
    }

    /// The global target, for the continent (None without a `[global]` section).
    pub fn global_target(&self) -> Result<Option<GlobalTarget>, GenesisError> {
        self.global
            .as_ref()
            .map(|g| {
                Ok(GlobalTarget {
                    addr: g.address.clone(),
                    public_key: key("global", &g.public_key)?,
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let g = FederationGenesis::parse(
            r#"
            [[cities]]
            id = "JP-13"
            members = [{ public_key = "0102", stake = 1, address = "a:1" },
                       { public_key = "0304", stake = 2, address = "b:1" }]
            [continent]
            public_key = "aa"
            address = "c:1"
            [global]
            public_key = "bb"
            address = "g:1"
            "#,
        )
        .unwrap();
        let cc = g.city_committees().unwrap();
        assert_eq!(cc[0].city, federation_city_id("JP-13"));
        assert_eq!(cc[0].committee.total_stake(), 3);
        assert_eq!(g.continent_key().unwrap(), vec![0xaa]);
        assert_eq!(g.global_target().unwrap().unwrap().public_key, vec![0xbb]);
        let bad = FederationGenesis::parse("[[cities]]\nid = \"X\"\nmembers = [{ public_key = \"zz\", stake = 1, address = \"a\" }]").unwrap();
        assert!(matches!(
            bad.city_committees(),
            Err(GenesisError::Key { .. })
        ));
        assert!(FederationGenesis::parse("[continent]\npublic_key = 1").is_err());
    }
}
