//! # flagging
//!
//! Tx → [`Flag`]: processing class (the documented order, `TxKind::processing_rank`),
//! urgency (repair and ack paths first), region class (local / inter-city / inter-continent
//! from sender and receiver cities) and oversize. The [`Flagger`] trait is the plugin point;
//! [`DefaultFlagger`] holds the default rules; a [`FlaggerRegistry`] maps plugin names to
//! factories and builds the one a [`FlaggingConfig`] names; [`FixedFlagger`] is the test
//! double.
//!
//! ```
//! use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxKind};
//! use flagging::{FlagInput, Flagger, FlaggerRegistry, FlaggingConfig, RegionClass, Urgency};
//!
//! let flagger = FlaggerRegistry::with_defaults().build(&FlaggingConfig::default()).unwrap();
//! let tx = Tx::fresh(
//!     AccountId::from_bytes([1; 32]), AccountId::from_bytes([2; 32]), 5, 1, 0,
//!     CityId::new("JP-13").unwrap(), Position::from_degrees(35.69, 139.69).unwrap(),
//!     PositionMethod::Gps,
//! );
//! let osaka = CityId::new("JP-27").unwrap();
//! let flag = flagger.flag(&FlagInput::new(&tx, 900).with_receiver_city(&osaka));
//! assert_eq!(flag.region, RegionClass::InterCity);
//! assert_eq!(flag.urgency, Urgency::Normal);
//! let ack = tx.clone().with_kind(TxKind::RepairAck);
//! assert_eq!(flagger.flag(&FlagInput::new(&ack, 900)).urgency, Urgency::Urgent);
//! ```

mod continent;
mod double;
mod error;
mod flag;
mod registry;
mod rules;

pub use continent::Continent;
pub use double::FixedFlagger;
pub use error::{Error, Result};
pub use flag::{Flag, FlagInput, RegionClass, Urgency};
pub use registry::{FlaggerFactory, FlaggerRegistry};
pub use rules::{
    CityDirectory, CountryPrefixDirectory, DefaultFlagger, FlaggingConfig, KindOnlyFlagger,
};

/// Turns a tx into a [`Flag`]. Implementations are pure: the same input gives the same flag.
pub trait Flagger: Send + Sync {
    /// The plugin name (as registered).
    fn name(&self) -> &str;
    /// Flags one tx.
    fn flag(&self, input: &FlagInput<'_>) -> Flag;
}
