//! [`Codec`] implementation on `reed-solomon-simd` 3 (GF(2^16), SIMD). Shard lengths must
//! be even; [`crate::ErasureConfig::shard_len`] pads for it.

use crate::codec::{Codec, CodecId};
use crate::{Error, Result};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::cell::RefCell;

// One encoder and one decoder per thread, `reset` to each call's shape: they keep their
// work buffers and engine tables instead of allocating them per stripe.
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
        ENCODER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let enc = match slot.as_mut() {
                Some(enc) => {
                    enc.reset(k, m, len).map_err(err)?;
                    enc
                }
                None => slot.insert(ReedSolomonEncoder::new(k, m, len).map_err(err)?),
            };
            for d in data {
                enc.add_original_shard(d).map_err(err)?;
            }
            let out = enc.encode().map_err(err)?;
            Ok(out.recovery_iter().map(<[u8]>::to_vec).collect())
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
        DECODER
            .with(|cell| {
                let mut slot = cell.borrow_mut();
                let dec = match slot.as_mut() {
                    Some(dec) => {
                        dec.reset(k, m, len).map_err(err)?;
                        dec
                    }
                    None => slot.insert(ReedSolomonDecoder::new(k, m, len).map_err(err)?),
                };
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
                Ok::<_, Error>(restored)
            })?
            .into_iter()
            .for_each(|(i, r)| shards[i] = Some(r));
        Ok(())
    }
}
