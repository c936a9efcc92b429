//! Structure-aware decoder properties, shared by the crates' integration tests (included
//! with `#[path]`): start from a valid encoding and flip bits, truncate, extend, and write
//! small and huge values over every possible length field (as u8, u16, u32 and u64 at every
//! offset, which covers each real length field whatever the layout). Every outcome must be
//! a value that re-encodes to exactly the mutated bytes, or a typed error — never a panic,
//! and never more allocation than the input allows (a counting global allocator sums what
//! the decoder allocates; so each binary including this module holds one test).

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

// Counts every allocation of the process. The binary that includes this module runs one
// test, so nothing else allocates while a decode is measured.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f`, returning its result and the bytes it allocated (all allocations summed, plus
/// growth by reallocation).
fn watched<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    let c = region.change();
    (r, c.bytes_allocated + c.bytes_reallocated.max(0) as usize)
}

/// What one wire type's checks found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Mutated inputs tried.
    pub(crate) tried: usize,
    /// Of them, decoded to a value (which re-encoded to the same bytes).
    pub(crate) decoded: usize,
}

/// The most a decoder may allocate in total for an input of `len` bytes: a few times the
/// input (decoded values are owned copies; a vector of 32-byte ids takes at most its input
/// bytes, a vector of owned byte strings adds 24 bytes per entry of at least 2 input bytes)
/// and a small constant for error messages.
pub(crate) fn allowed(len: usize) -> usize {
    16 * len + 4096
}

/// One mutated input: decodes to a value that re-encodes to exactly `bytes`, or to an
/// error; never panics, never allocates beyond [`allowed`].
fn one<T, E: std::fmt::Debug>(
    name: &str,
    what: &str,
    bytes: &[u8],
    decode: &impl Fn(&[u8]) -> Result<T, E>,
    encode: &impl Fn(&T) -> Vec<u8>,
    out: &mut Outcome,
) {
    out.tried += 1;
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watched(|| decode(bytes))));
    let (decoded, allocated) =
        result.unwrap_or_else(|_| panic!("{name}: decoding panicked on {what}"));
    assert!(
        allocated <= allowed(bytes.len()),
        "{name}: decoding {what} ({} bytes) allocated {allocated} bytes",
        bytes.len()
    );
    if let Ok(v) = decoded {
        out.decoded += 1;
        assert!(
            encode(&v) == bytes,
            "{name}: {what} decoded to a value that re-encodes differently"
        );
    }
}

/// Every mutation of `valid` (which must decode and re-encode to itself).
pub(crate) fn check<T, E: std::fmt::Debug>(
    name: &str,
    valid: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Outcome {
    let v = decode(valid).unwrap_or_else(|e| panic!("{name}: the valid input fails: {e:?}"));
    assert_eq!(encode(&v), valid, "{name}: the valid input re-encodes");
    let mut out = Outcome::default();
    let n = valid.len();
    // Bit flips: every bit of the first 512 bytes (headers, counts, lengths), then one bit
    // per byte, rotating, through the rest.
    for i in 0..n {
        let bits: Vec<u8> = if i < 512 {
            (0..8).collect()
        } else {
            vec![(i % 8) as u8]
        };
        for b in bits {
            let mut m = valid.to_vec();
            m[i] ^= 1 << b;
            one(
                name,
                &format!("bit {b} of byte {i} flipped"),
                &m,
                &decode,
                &encode,
                &mut out,
            );
        }
    }
    // Truncations at every length.
    for len in 0..n {
        one(
            name,
            &format!("truncation to {len} bytes"),
            &valid[..len],
            &decode,
            &encode,
            &mut out,
        );
    }
    // Extensions: a zero byte, a 0xff byte, a copy of itself.
    for tail in [vec![0u8], vec![0xff], valid.to_vec()] {
        let mut m = valid.to_vec();
        m.extend_from_slice(&tail);
        one(
            name,
            &format!("extension by {} bytes", tail.len()),
            &m,
            &decode,
            &encode,
            &mut out,
        );
    }
    // Length-field overflow: small and huge values of every width at every offset.
    for i in 0..n {
        for width in [1usize, 2, 4, 8] {
            if i + width > n {
                continue;
            }
            let max = if width == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * width)) - 1
            };
            let cur = {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(&valid[i..i + width]);
                u64::from_le_bytes(b)
            };
            for value in [
                0,
                1,
                cur.wrapping_add(1) & max,
                cur.wrapping_sub(1) & max,
                max,
                max / 2 + 1,
            ] {
                if value == cur {
                    continue;
                }
                let mut m = valid.to_vec();
                m[i..i + width].copy_from_slice(&value.to_le_bytes()[..width]);
                one(
                    name,
                    &format!("u{} at byte {i} set to {value}", 8 * width),
                    &m,
                    &decode,
                    &encode,
                    &mut out,
                );
            }
        }
    }
    assert!(out.tried > n, "{name}: mutations ran");
    out
}
