//! [`Codec`] implementation on `reed-solomon-simd` 3 (GF(2^16), SIMD). Shard lengths must
//! be even; [`crate::ErasureConfig::shard_len`] pads for it.
//!
//! Decoding with data shards missing has a fixed cost of roughly half a millisecond here
//! (the Leopard-style error locator is evaluated over the whole field), whatever the
//! stripe size; with all data shards present no decoding happens at all.

use crate::codec::{Codec, CodecId};
use crate::{Error, Result};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::cell::RefCell;

/// Shards up to this size reuse the thread's coder (its work buffers and tables); larger
/// ones get a fresh coder, so no thread keeps huge buffers alive.
const REUSE_LIMIT: usize = 1 << 20;

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

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
        if len > REUSE_LIMIT {
            return encode_with(&mut ReedSolomonEncoder::new(k, m, len).map_err(err)?, data);
        }
        ENCODER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let enc = match slot.as_mut() {
                Some(enc) => {
                    enc.reset(k, m, len).map_err(err)?;
                    enc
                }
                None => slot.insert(ReedSolomonEncoder::new(k, m, len).map_err(err)?),
            };
            encode_with(enc, data)
        })
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
        let restored = if len > REUSE_LIMIT {
            decode_with(
                &mut ReedSolomonDecoder::new(k, m, len).map_err(err)?,
                k,
                shards,
            )?
        } else {
            DECODER.with(|cell| {
                let mut slot = cell.borrow_mut();
                let dec = match slot.as_mut() {
                    Some(dec) => {
                        dec.reset(k, m, len).map_err(err)?;
                        dec
                    }
                    None => slot.insert(ReedSolomonDecoder::new(k, m, len).map_err(err)?),
                };
                decode_with(dec, k, shards)
            })?
        };
        for (i, r) in restored {
            shards[i] = Some(r);
        }
        Ok(())
    }
}

fn encode_with(enc: &mut ReedSolomonEncoder, data: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
    for d in data {
        enc.add_original_shard(d).map_err(err)?;
    }
    let out = enc.encode().map_err(err)?;
    Ok(out.recovery_iter().map(<[u8]>::to_vec).collect())
}

/// Feeds the present shards to `dec` and returns the restored data shards.
fn decode_with(
    dec: &mut ReedSolomonDecoder,
    k: usize,
    shards: &[Option<Vec<u8>>],
) -> Result<Vec<(usize, Vec<u8>)>> {
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
    let mut restored = Vec::new();
    for (i, slot) in shards.iter().enumerate().take(k) {
        if slot.is_none() {
            let r = out.restored_original(i).ok_or_else(|| Error::Codec {
                codec: "reed-solomon-simd",
                reason: format!("data shard {i} was not restored"),
            })?;
            restored.push((i, r.to_vec()));
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{CodecId, ErasureConfig, decode};

    #[test]
    fn large_shards_bypass_the_reused_coder() {
        // 4 MiB + a bit over k = 2: shards above REUSE_LIMIT, then a small stripe again.
        let cfg = ErasureConfig::new(CodecId::ReedSolomonSimd, 2, 1).unwrap();
        for len in [4 * 1024 * 1024 + 6, 100] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let shards = cfg.encode(&data).unwrap();
            assert_eq!(decode(shards[0].stripe_id(), &shards[1..]).unwrap(), data);
        }
    }
}
