//! The default rules, their configuration, and the city directory they consult.

use crate::{Continent, Error, Flag, FlagInput, Flagger, RegionClass, Result, Urgency};
use dag_core::{AccountId, CityId, TxKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Flagging configuration (TOML/JSON friendly; kinds by their snake_case names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlaggingConfig {
    /// Registered plugin to use. Default `"default"`.
    pub plugin: String,
    /// Kinds flagged urgent. Default: the repair and ack paths,
    /// `["repair_ack", "repair_request", "poh_ack"]`.
    pub urgent_kinds: Vec<String>,
    /// A tx larger than this (encoded, signed) is oversize. Default 16 KiB: an ML-DSA-87
    /// key and signature alone take ≈ 7.2 KB, and users' messages should stay a few KB.
    pub oversize_bytes: usize,
}

impl Default for FlaggingConfig {
    fn default() -> Self {
        FlaggingConfig {
            plugin: "default".to_string(),
            urgent_kinds: ["repair_ack", "repair_request", "poh_ack"]
                .map(String::from)
                .to_vec(),
            oversize_bytes: 16 * 1024,
        }
    }
}

impl FlaggingConfig {
    /// The urgent kinds, parsed.
    pub fn urgent_kind_set(&self) -> Result<Vec<TxKind>> {
        self.urgent_kinds
            .iter()
            .map(|name| {
                TxKind::BY_PRIORITY
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or(Error::InvalidConfig {
                        field: "urgent_kinds",
                        reason: "unknown tx kind (expected fresh_tx, poh_request, poh_ack, \
                                 repair_request, repair_ack, checkpoint or system_tx)",
                    })
            })
            .collect()
    }
}

/// Where cities are, and (optionally) where receivers live.
pub trait CityDirectory: Send + Sync {
    /// The continent of a city, if known.
    fn continent(&self, city: &CityId) -> Option<Continent>;
    /// The home city of an account, if known. Default: unknown.
    fn receiver_city(&self, _account: &AccountId) -> Option<CityId> {
        None
    }
}

/// The default directory: continent from the ISO 3166-1 country prefix of the city id
/// (`JP-13` → Asia), plus explicit continents and receiver cities set by the operator.
#[derive(Debug, Clone, Default)]
pub struct CountryPrefixDirectory {
    continents: HashMap<CityId, Continent>,
    accounts: HashMap<AccountId, CityId>,
}

impl CountryPrefixDirectory {
    /// Sets a city's continent (overrides the country prefix).
    pub fn set_continent(&mut self, city: CityId, continent: Continent) {
        self.continents.insert(city, continent);
    }
    /// Records an account's home city.
    pub fn set_account_city(&mut self, account: AccountId, city: CityId) {
        self.accounts.insert(account, city);
    }
}

impl CityDirectory for CountryPrefixDirectory {
    fn continent(&self, city: &CityId) -> Option<Continent> {
        self.continents
            .get(city)
            .copied()
            .or_else(|| Continent::of_city_id(city.as_str()))
    }
    fn receiver_city(&self, account: &AccountId) -> Option<CityId> {
        self.accounts.get(account).cloned()
    }
}

/// The default rules: class by kind, urgency by configured kinds, region class from sender and
/// receiver cities through a [`CityDirectory`], oversize by configured limit.
pub struct DefaultFlagger {
    urgent: [bool; 7],
    oversize_bytes: usize,
    directory: Arc<dyn CityDirectory>,
}

impl std::fmt::Debug for DefaultFlagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultFlagger")
            .field("urgent", &self.urgent)
            .field("oversize_bytes", &self.oversize_bytes)
            .finish()
    }
}

impl DefaultFlagger {
    /// Builds the rules from a config and a directory.
    pub fn new(config: &FlaggingConfig, directory: Arc<dyn CityDirectory>) -> Result<Self> {
        if config.oversize_bytes == 0 {
            return Err(Error::InvalidConfig {
                field: "oversize_bytes",
                reason: "must be greater than 0",
            });
        }
        let mut urgent = [false; 7];
        for k in config.urgent_kind_set()? {
            urgent[k.as_u8() as usize] = true;
        }
        Ok(DefaultFlagger {
            urgent,
            oversize_bytes: config.oversize_bytes,
            directory,
        })
    }

    fn urgency(&self, kind: TxKind) -> Urgency {
        if self.urgent[kind.as_u8() as usize] {
            Urgency::Urgent
        } else {
            Urgency::Normal
        }
    }

    /// The region class of a tx from `sender` city to `receiver` city.
    pub fn region_class(&self, sender: &CityId, receiver: Option<&CityId>) -> RegionClass {
        let Some(receiver) = receiver else {
            return RegionClass::Unknown;
        };
        if sender == receiver {
            return RegionClass::Local;
        }
        match (
            self.directory.continent(sender),
            self.directory.continent(receiver),
        ) {
            (Some(a), Some(b)) if a == b => RegionClass::InterCity,
            (Some(_), Some(_)) => RegionClass::InterContinent,
            _ => RegionClass::Unknown,
        }
    }
}

impl Flagger for DefaultFlagger {
    fn name(&self) -> &str {
        "default"
    }

    fn flag(&self, input: &FlagInput<'_>) -> Flag {
        let tx = input.tx;
        let looked_up;
        let receiver = match input.receiver_city {
            Some(c) => Some(c),
            None => {
                looked_up = self.directory.receiver_city(&tx.receiver);
                looked_up.as_ref()
            }
        };
        Flag {
            kind: tx.kind,
            class: tx.kind.processing_rank(),
            urgency: self.urgency(tx.kind),
            region: self.region_class(&tx.city_id, receiver),
            oversize: input.size_bytes > self.oversize_bytes,
        }
    }
}

/// A minimal plugin: class and urgency from the kind only; region unknown, never oversize.
#[derive(Debug, Clone)]
pub struct KindOnlyFlagger {
    urgent: Vec<TxKind>,
}

impl KindOnlyFlagger {
    /// Builds it from a config (uses `urgent_kinds`).
    pub fn new(config: &FlaggingConfig) -> Result<Self> {
        Ok(KindOnlyFlagger {
            urgent: config.urgent_kind_set()?,
        })
    }
}

impl Flagger for KindOnlyFlagger {
    fn name(&self) -> &str {
        "kind-only"
    }
    fn flag(&self, input: &FlagInput<'_>) -> Flag {
        let kind = input.tx.kind;
        Flag {
            kind,
            class: kind.processing_rank(),
            urgency: if self.urgent.contains(&kind) {
                Urgency::Urgent
            } else {
                Urgency::Normal
            },
            region: RegionClass::Unknown,
            oversize: false,
        }
    }
}
