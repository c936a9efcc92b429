//! # storage
//!
//! Erasure-coded storage for City Chain: a micro-batch of signed txs becomes one stripe,
//! split into k data + m parity shards (default 4 + 2, at most 32) held by n distinct light
//! nodes; any k good shards rebuild it.
//!
//! - [`Codec`] port with two implementations, chosen by [`CodecId`]: reed-solomon-erasure
//!   and reed-solomon-simd (default). [`ErasureConfig::encode`] makes [`Shard`]s; [`decode`]
//!   and [`StripeLayout::decode`] rebuild from any k good ones (a corrupt shard is missing).
//! - The versioned shard format ([`Shard::to_bytes`], [`Shard::from_bytes`], strict).
//! - Micro-batches: [`MicroBatch`], [`split_micro_batch`], [`tx_at`], [`TxLocation`].
//! - [`ShardStore`]: a light node's redb store with a quota; checks on write and on read.
//! - Storage challenges: [`prove`] = BLAKE3(nonce ‖ shard), [`verify_proof`], [`Challenge`].
//! - Receipts and manifests: [`issue_receipt`], [`verify_receipt`], [`Held`],
//!   [`StripeManifest`].
//! - Re-replication: [`plan_rereplication`].
//!
//! ```
//! use storage::{ErasureConfig, MicroBatch, StripeLayout, tx_bytes_at};
//!
//! let batch = MicroBatch::from_tx_bytes(&[b"tx one".to_vec(), b"tx two".to_vec()]).unwrap();
//! let shards = ErasureConfig::default().encode(&batch.stripe).unwrap();
//! let layout = StripeLayout::from_shards(&shards).unwrap();
//! // two holders vanish; the other four suffice
//! let stripe = layout.decode(&shards[2..]).unwrap();
//! assert_eq!(tx_bytes_at(&stripe, &batch.locations[1]).unwrap(), b"tx two");
//! ```

mod batch;
mod capped;
mod challenge;
mod codec;
mod erasure;
mod error;
mod manifest;
mod planner;
mod shard;
mod simd;
mod store;
mod stripe;

pub use batch::{
    MicroBatch, TX_LOCATION_LEN, TxIndexEntry, TxLocation, split_micro_batch, tx_at, tx_bytes_at,
};
pub use capped::{
    CappedFileBackend, FileCap, REOPEN_HEADROOM, disk_free_bytes, is_io_failure, no_room_to_reopen,
};
pub use challenge::{Challenge, ChallengeNonce, ChallengeProof, prove, verify_proof};
pub use codec::{Codec, CodecId, ErasureConfig, MAX_SHARDS};
pub use error::{Error, Rejected, Result, ShardProblem};
pub use manifest::{
    Held, HeldRules, StripeLayout, StripeManifest, issue_receipt, verify_receipt,
    verify_receipt_from,
};
pub use planner::{LiveNode, Placement, RepairPlan, plan_rereplication};
pub use shard::{FORMAT_VERSION, HEADER_LEN, MAX_STRIPE_LEN, SHARD_MAGIC, Shard, ShardHeader};
pub use store::{HealReport, PutOutcome, ShardStore, StoreConfig};
pub use stripe::decode;
