//! [`Codec`] implementation on `reed-solomon-erasure` 6 (GF(2^8)).

use crate::codec::{Codec, CodecId};
use crate::{Error, Result};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// The reed-solomon-erasure codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RsErasure;

fn err(e: reed_solomon_erasure::Error) -> Error {
    Error::Codec {
        codec: "reed-solomon-erasure",
        reason: format!("{e:?}"),
    }
}

impl Codec for RsErasure {
    fn id(&self) -> CodecId {
        CodecId::ReedSolomonErasure
    }
    fn shard_alignment(&self) -> usize {
        1
    }
    fn encode_parity(&self, k: usize, m: usize, data: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        let rs = ReedSolomon::new(k, m).map_err(err)?;
        let len = data.first().map_or(0, |d| d.len());
        let mut parity = vec![vec![0u8; len]; m];
        rs.encode_sep(data, &mut parity).map_err(err)?;
        Ok(parity)
    }
    fn reconstruct_data(&self, k: usize, m: usize, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        let rs = ReedSolomon::new(k, m).map_err(err)?;
        rs.reconstruct_data(shards).map_err(err)
    }
}
