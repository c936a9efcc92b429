//! Integration tests of the storage crate (one binary): codec properties, receipts with real
//! ML-DSA-87 keys, the redb store on a real file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod churn;
mod codec_props;
mod pipeline;
mod receipts;
mod store_file;
mod vectors;
