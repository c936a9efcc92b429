//! # genesis
//!
//! The genesis file: who runs the network at its start — each city's committee of
//! representatives (ML-DSA-87 public keys, stake, addresses), the continent and global log
//! nodes, and the accounts with their opening balances. Every role reads it; the committee
//! is read through one interface ([`CommitteeSource`]) so DPoS can drive it per epoch later.
//!
//! Format (TOML; keys and ids in hex):
//! ```toml
//! chain = "citychain-localnet"
//!
//! [[cities]]
//! id = "JP-13"
//! [[cities.members]]
//! public_key = "…5,184 hex chars…"
//! stake = 1
//! address = "127.0.0.1:7701"   # the representative's gRPC (CityNode + Consensus)
//!
//! [continent]
//! public_key = "…"
//! address = "127.0.0.1:7800"
//!
//! [global]
//! public_key = "…"
//! address = "127.0.0.1:7900"
//!
//! [[accounts]]
//! account = "…64 hex chars…"
//! balance = 1000000
//! ```

use dag_core::consensus::{Committee, Stake};
use dag_core::{AccountId, Hash32, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a genesis file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is malformed or inconsistent.
    #[error("genesis {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result with the genesis [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

/// One representative in the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisMember {
    /// ML-DSA-87 public key, hex.
    pub public_key: String,
    /// Stake (weights votes and certificates).
    pub stake: Stake,
    /// gRPC address (`host:port`) serving CityNode and Consensus.
    pub address: String,
}

/// One city and its first committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisCity {
    /// The city's region id (ISO 3166-2 where it has one, e.g. `JP-13`).
    pub id: String,
    /// Its representatives.
    pub members: Vec<GenesisMember>,
}

/// A log node (continent or global).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisLog {
    /// ML-DSA-87 public key, hex (verifies its receipts and tree heads).
    pub public_key: String,
    /// gRPC address (`host:port`).
    pub address: String,
}

/// An account and its opening balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Account id (BLAKE3 of its public key), hex.
    pub account: String,
    /// Opening balance.
    pub balance: u64,
    /// The account's home city: only that city's ledger opens it. Absent: every city's
    /// ledger opens it (one-city networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// The genesis file as written on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Name of the network (informational; keeps two networks' files apart). Optional.
    #[serde(default)]
    pub chain: String,
    /// The cities and their committees.
    pub cities: Vec<GenesisCity>,
    /// The continent log node.
    pub continent: Option<GenesisLog>,
    /// The global log node.
    pub global: Option<GenesisLog>,
    /// Opening balances.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
}

/// A city's committee, checked: the dag-core [`Committee`] plus where each member listens.
#[derive(Debug, Clone)]
pub struct CityCommittee {
    /// The city's region id.
    pub city_id: String,
    /// The id the continent logs the city under ([`city_hash`]).
    pub city: Hash32,
    /// Members, stake, quorum rules.
    pub committee: Committee,
    /// gRPC address of each member.
    pub addresses: BTreeMap<NodeId, String>,
}

/// A log node, checked.
#[derive(Debug, Clone)]
pub struct LogNode {
    /// Its node id.
    pub node_id: NodeId,
    /// Its ML-DSA-87 public key.
    pub public_key: Vec<u8>,
    /// gRPC address.
    pub address: String,
}

/// A parsed and validated genesis.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// The file's name of the network.
    pub chain: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// Every city's committee, by city id.
    pub cities: BTreeMap<String, CityCommittee>,
    /// The continent.
    pub continent: Option<LogNode>,
    /// The global log.
    pub global: Option<LogNode>,
    /// Opening balances.
    pub accounts: BTreeMap<AccountId, u64>,
    /// Home cities of the accounts that name one ([`GenesisAccount::city`]).
    pub account_cities: BTreeMap<AccountId, String>,
}

impl Genesis {
    /// The opening balances `city`'s ledger starts from: the accounts whose home is
    /// `city`, and those that name no home.
    pub fn accounts_of(&self, city: &str) -> BTreeMap<AccountId, u64> {
        self.accounts
            .iter()
            .filter(|(a, _)| self.account_cities.get(a).is_none_or(|c| c == city))
            .map(|(a, b)| (*a, *b))
            .collect()
    }
}

/// Reads the committee of a city. Genesis answers with the first committee; DPoS answers
/// with the elected one per epoch. Every role asks through this trait.
pub trait CommitteeSource: Send + Sync + std::fmt::Debug {
    /// The committee of `city_id` now, or `None` for a city it does not know.
    fn committee(&self, city_id: &str) -> Option<CityCommittee>;
    /// The city whose committee has `node` as a member.
    fn city_of(&self, node: &NodeId) -> Option<CityCommittee>;
    /// Every city's committee.
    fn cities(&self) -> Vec<CityCommittee>;
}

impl CommitteeSource for Genesis {
    fn committee(&self, city_id: &str) -> Option<CityCommittee> {
        self.cities.get(city_id).cloned()
    }
    fn city_of(&self, node: &NodeId) -> Option<CityCommittee> {
        self.cities
            .values()
            .find(|c| c.committee.authority(node).is_some())
            .cloned()
    }
    fn cities(&self) -> Vec<CityCommittee> {
        self.cities.values().cloned().collect()
    }
}

/// The id the continent logs a city under: BLAKE3 of `citychain/city/` ‖ the region id.
pub fn city_hash(city_id: &str) -> Hash32 {
    let mut m = b"citychain/city/".to_vec();
    m.extend_from_slice(city_id.as_bytes());
    Hash32::digest(&m)
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn public_key(path: &Path, what: &str, hex_key: &str) -> Result<Vec<u8>> {
    let pk = hex::decode(hex_key.trim())
        .map_err(|e| bad(path, format!("{what}: public key is not hex: {e}")))?;
    if pk.len() != pqc::PUBLIC_KEY_LEN {
        return Err(bad(
            path,
            format!(
                "{what}: public key has {} bytes, ML-DSA-87 keys have {}",
                pk.len(),
                pqc::PUBLIC_KEY_LEN
            ),
        ));
    }
    Ok(pk)
}

fn log_node(path: &Path, what: &str, l: &GenesisLog) -> Result<LogNode> {
    let pk = public_key(path, what, &l.public_key)?;
    if l.address.trim().is_empty() {
        return Err(bad(path, format!("{what}: empty address")));
    }
    Ok(LogNode {
        node_id: NodeId::from_public_key(&pk),
        public_key: pk,
        address: l.address.clone(),
    })
}

impl Genesis {
    /// Reads and validates the genesis file at `path`.
    pub fn load(path: &Path) -> Result<Genesis> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: GenesisFile = toml::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        Genesis::from_file(file, path)
    }

    /// Validates a parsed file (`path` names it in errors): hex keys of the right length,
    /// no member twice, non-zero stake, a non-empty committee per city, unique cities and
    /// accounts.
    pub fn from_file(file: GenesisFile, path: &Path) -> Result<Genesis> {
        let mut cities = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for c in &file.cities {
            if c.id.trim().is_empty() {
                return Err(bad(path, "a city without an id"));
            }
            if c.members.is_empty() {
                return Err(bad(path, format!("city {}: no members", c.id)));
            }
            let mut members = Vec::new();
            let mut addresses = BTreeMap::new();
            for (i, m) in c.members.iter().enumerate() {
                let what = format!("city {} member {i}", c.id);
                let pk = public_key(path, &what, &m.public_key)?;
                if m.stake == 0 {
                    return Err(bad(path, format!("{what}: zero stake")));
                }
                let id = NodeId::from_public_key(&pk);
                if !seen.insert(id) {
                    return Err(bad(path, format!("{what}: node {id} is listed twice")));
                }
                addresses.insert(id, m.address.clone());
                members.push((pk, m.stake));
            }
            let committee = Committee::new(members)
                .ok_or_else(|| bad(path, format!("city {}: invalid committee", c.id)))?;
            let cc = CityCommittee {
                city_id: c.id.clone(),
                city: city_hash(&c.id),
                committee,
                addresses,
            };
            if cities.insert(c.id.clone(), cc).is_some() {
                return Err(bad(path, format!("city {} is listed twice", c.id)));
            }
        }
        let continent = file
            .continent
            .as_ref()
            .map(|l| log_node(path, "continent", l))
            .transpose()?;
        let global = file
            .global
            .as_ref()
            .map(|l| log_node(path, "global", l))
            .transpose()?;
        let mut accounts = BTreeMap::new();
        let mut account_cities = BTreeMap::new();
        for a in &file.accounts {
            let id = AccountId::from_hex(a.account.trim())
                .map_err(|e| bad(path, format!("account {}: {e}", a.account)))?;
            if accounts.insert(id, a.balance).is_some() {
                return Err(bad(path, format!("account {} is listed twice", a.account)));
            }
            if let Some(c) = &a.city {
                if !cities.contains_key(c) {
                    return Err(bad(
                        path,
                        format!("account {}: home city {c} is not listed", a.account),
                    ));
                }
                account_cities.insert(id, c.clone());
            }
        }
        Ok(Genesis {
            chain: file.chain,
            path: path.to_path_buf(),
            cities,
            continent,
            global,
            accounts,
            account_cities,
        })
    }
}

impl GenesisFile {
    /// Writes the file (TOML) to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| bad(path, e.to_string()))?;
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A member entry for `public_key`.
    pub fn member(public_key: &[u8], stake: Stake, address: impl Into<String>) -> GenesisMember {
        GenesisMember {
            public_key: hex::encode(public_key),
            stake,
            address: address.into(),
        }
    }

    /// A log node entry for `public_key`.
    pub fn log(public_key: &[u8], address: impl Into<String>) -> GenesisLog {
        GenesisLog {
            public_key: hex::encode(public_key),
            address: address.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::Signer;

    fn file(keys: &[pqc::Keypair]) -> GenesisFile {
        GenesisFile {
            chain: "test".into(),
            cities: vec![GenesisCity {
                id: "JP-13".into(),
                members: keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        GenesisFile::member(k.public_key(), 1, format!("127.0.0.1:{}", 7000 + i))
                    })
                    .collect(),
            }],
            continent: Some(GenesisFile::log(keys[0].public_key(), "127.0.0.1:7800")),
            global: None,
            accounts: vec![GenesisAccount {
                city: None,
                account: AccountId::from_public_key(keys[0].public_key()).to_hex(),
                balance: 10,
            }],
        }
    }

    #[test]
    fn accounts_with_a_home_city_open_only_there() {
        let keys: Vec<_> = (0..2).map(|_| pqc::Keypair::generate()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.toml");
        let mut f = file(&keys);
        f.cities.push(GenesisCity {
            id: "JP-27".into(),
            members: vec![GenesisFile::member(
                keys[1].public_key(),
                1,
                "127.0.0.1:7100",
            )],
        });
        f.cities[0].members.truncate(1);
        let (a, b) = (
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
        );
        f.accounts.push(GenesisAccount {
            account: a.to_hex(),
            balance: 5,
            city: Some("JP-27".into()),
        });
        f.accounts.push(GenesisAccount {
            account: b.to_hex(),
            balance: 7,
            city: Some("JP-13".into()),
        });
        f.write(&path).unwrap();
        let g = Genesis::load(&path).unwrap();
        let tokyo = g.accounts_of("JP-13");
        let osaka = g.accounts_of("JP-27");
        assert_eq!(tokyo.get(&b), Some(&7));
        assert!(!tokyo.contains_key(&a));
        assert_eq!(osaka.get(&a), Some(&5));
        assert!(!osaka.contains_key(&b));
        // The account without a home opens in both.
        assert_eq!((tokyo.len(), osaka.len()), (2, 2));
        // A home city that is not listed is refused.
        f.accounts[1].city = Some("XX-1".into());
        f.write(&path).unwrap();
        assert!(Genesis::load(&path).is_err());
    }

    #[test]
    fn round_trip_and_lookup() {
        let keys: Vec<_> = (0..4).map(|_| pqc::Keypair::generate()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.toml");
        file(&keys).write(&path).unwrap();
        let g = Genesis::load(&path).unwrap();
        let c = g.committee("JP-13").unwrap();
        assert_eq!(c.committee.size(), 4);
        assert_eq!(c.city, city_hash("JP-13"));
        assert_eq!(g.city_of(&keys[2].node_id()).unwrap().city_id, "JP-13");
        assert!(g.city_of(&pqc::Keypair::generate().node_id()).is_none());
        assert_eq!(g.accounts.len(), 1);
        assert_eq!(
            c.addresses.get(&keys[1].node_id()).map(String::as_str),
            Some("127.0.0.1:7001")
        );
    }

    fn rejects(f: GenesisFile, needle: &str) {
        let err = Genesis::from_file(f, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err} should mention {needle}");
    }

    #[test]
    fn bad_files_are_named() {
        let keys: Vec<_> = (0..2).map(|_| pqc::Keypair::generate()).collect();
        let mut f = file(&keys);
        f.cities[0].members[1].public_key = "zz".into();
        rejects(f, "not hex");
        let mut f = file(&keys);
        f.cities[0].members[1].public_key = "00".into();
        rejects(f, "ML-DSA-87 keys have");
        let mut f = file(&keys);
        f.cities[0].members[1] = f.cities[0].members[0].clone();
        rejects(f, "listed twice");
        let mut f = file(&keys);
        f.cities[0].members[0].stake = 0;
        rejects(f, "zero stake");
        let mut f = file(&keys);
        f.cities[0].members.clear();
        rejects(f, "no members");
    }
}
