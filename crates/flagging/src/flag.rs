//! The flag a tx gets, and the input a flagger sees.

use dag_core::{CityId, Tx, TxKind};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How soon a tx must be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Repair and ack paths: served first; holder choice weighs latency first.
    Urgent,
    /// Everything else.
    Normal,
}

/// Where a tx travels, from the sender's city to the receiver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionClass {
    /// Sender and receiver in the same city.
    Local,
    /// Different cities on the same continent.
    InterCity,
    /// Different continents.
    InterContinent,
    /// The receiver's city (or a continent) is not known.
    Unknown,
}

impl RegionClass {
    /// snake_case name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RegionClass::Local => "local",
            RegionClass::InterCity => "inter_city",
            RegionClass::InterContinent => "inter_continent",
            RegionClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RegionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdict of a [`crate::Flagger`] on one tx.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flag {
    /// The tx kind.
    pub kind: TxKind,
    /// Processing class: 0 is served first (`TxKind::processing_rank`: checkpoint 0,
    /// repair_ack 1, repair_request 2, poh_ack 3, poh_request 4, fresh_tx 5, system_tx 6).
    pub class: u8,
    /// Urgency.
    pub urgency: Urgency,
    /// Region class.
    pub region: RegionClass,
    /// True when the tx is larger than the configured limit.
    pub oversize: bool,
}

impl Flag {
    /// True for [`Urgency::Urgent`].
    pub fn is_urgent(&self) -> bool {
        self.urgency == Urgency::Urgent
    }

    /// Queue order: a smaller key is served first (urgent before normal, then by class,
    /// oversize last within a class).
    pub fn queue_key(&self) -> (u8, u8, bool) {
        (
            match self.urgency {
                Urgency::Urgent => 0,
                Urgency::Normal => 1,
            },
            self.class,
            self.oversize,
        )
    }
}

/// What a flagger looks at: the tx, its encoded size, and the receiver's city when the
/// caller knows it (a tx carries only the sender's city).
#[derive(Debug, Clone, Copy)]
pub struct FlagInput<'a> {
    /// The tx body.
    pub tx: &'a Tx,
    /// Encoded size in bytes (of the signed tx as received).
    pub size_bytes: usize,
    /// The receiver's city, if known to the caller.
    pub receiver_city: Option<&'a CityId>,
}

impl<'a> FlagInput<'a> {
    /// Input without a receiver city.
    pub fn new(tx: &'a Tx, size_bytes: usize) -> Self {
        FlagInput {
            tx,
            size_bytes,
            receiver_city: None,
        }
    }
    /// Sets the receiver's city.
    pub fn with_receiver_city(mut self, city: &'a CityId) -> Self {
        self.receiver_city = Some(city);
        self
    }
}
