//! [`Codec`] implementation on `reed-solomon-erasure` 6 (GF(2^8)).

use crate::codec::{Codec, CodecId};
use crate::{Error, Result};
use reed_solomon_erasure::galois_8::ReedSolomon;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The reed-solomon-erasure codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RsErasure;

fn err(e: reed_solomon_erasure::Error) -> Error {
    Error::Codec {
        codec: "reed-solomon-erasure",
        reason: format!("{e:?}"),
    }
}

/// One codec instance per (k, m): building one inverts a matrix, and each instance keeps
/// an LRU cache of decode matrices, so reuse makes small stripes several times cheaper.
/// At most 32 × 31 / 2 shapes exist, so the map stays small.
type Instances = Mutex<HashMap<(usize, usize), Arc<ReedSolomon>>>;

fn instance(k: usize, m: usize) -> Result<Arc<ReedSolomon>> {
    static CACHE: OnceLock<Instances> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(rs) = map.get(&(k, m)) {
        return Ok(Arc::clone(rs));
    }
    let rs = Arc::new(ReedSolomon::new(k, m).map_err(err)?);
    map.insert((k, m), Arc::clone(&rs));
    Ok(rs)
}

impl Codec for RsErasure {
    fn id(&self) -> CodecId {
        CodecId::ReedSolomonErasure
    }
    fn shard_alignment(&self) -> usize {
        1
    }
    fn encode_parity(&self, k: usize, m: usize, data: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        let rs = instance(k, m)?;
        let len = data.first().map_or(0, |d| d.len());
        let mut parity = vec![vec![0u8; len]; m];
        rs.encode_sep(data, &mut parity).map_err(err)?;
        Ok(parity)
    }
    fn reconstruct_data(&self, k: usize, m: usize, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        if shards[..k].iter().all(Option::is_some) {
            return Ok(());
        }
        instance(k, m)?.reconstruct_data(shards).map_err(err)
    }
}
