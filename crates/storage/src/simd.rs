//! [`Codec`] implementation on `reed-solomon-simd` 3 (GF(2^16), SIMD). Shard lengths must
//! be even; [`crate::ErasureConfig::shard_len`] pads for it.

use crate::codec::{Codec, CodecId};
use crate::{Error, Result};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// The reed-solomon-simd codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RsSimd;

fn err(e: reed_solomon_simd::Error) -> Error {
    Error::Codec {
        codec: "reed-solomon-simd",
        reason: e.to_string(),
    }
}

impl Codec for RsSimd {
    fn id(&self) -> CodecId {
        CodecId::ReedSolomonSimd
    }
    fn shard_alignment(&self) -> usize {
        2
    }
    fn encode_parity(&self, k: usize, m: usize, data: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        let len = data.first().map_or(0, |d| d.len());
        let mut enc = ReedSolomonEncoder::new(k, m, len).map_err(err)?;
        for d in data {
            enc.add_original_shard(d).map_err(err)?;
        }
        let out = enc.encode().map_err(err)?;
        Ok(out.recovery_iter().map(<[u8]>::to_vec).collect())
    }
    fn reconstruct_data(&self, k: usize, m: usize, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        if shards[..k].iter().all(Option::is_some) {
            return Ok(());
        }
        let len = shards
            .iter()
            .flatten()
            .map(Vec::len)
            .next()
            .unwrap_or_default();
        let mut dec = ReedSolomonDecoder::new(k, m, len).map_err(err)?;
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < k {
                    dec.add_original_shard(i, s).map_err(err)?;
                } else {
                    dec.add_recovery_shard(i - k, s).map_err(err)?;
                }
            }
        }
        let out = dec.decode().map_err(err)?;
        for (i, slot) in shards.iter_mut().enumerate().take(k) {
            if slot.is_none() {
                let restored = out.restored_original(i).ok_or_else(|| Error::Codec {
                    codec: "reed-solomon-simd",
                    reason: format!("data shard {i} was not restored"),
                })?;
                *slot = Some(restored.to_vec());
            }
        }
        Ok(())
    }
}
