//! The primitives of the canonical binary encoding: fixed-width little-endian integers and
//! length-prefixed byte strings, read back strictly (no trailing bytes, no over-long fields).
//!
//! Every encoded City Chain value is built from these primitives only, so the same value
//! always has exactly one encoding, and that encoding is what gets hashed and signed.

use crate::DecodeError;

/// Appends primitives to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// u16, little endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u32, little endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// i32, little endian two's complement.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u64, little endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Bytes prefixed by a u8 length. Panics if longer than 255: callers check limits first.
    pub fn bytes_u8(&mut self, v: &[u8]) -> &mut Self {
        let len = u8::try_from(v.len()).expect("caller enforces the u8 length limit");
        self.u8(len).raw(v)
    }
    /// Bytes prefixed by a u16 length. Panics if longer than 65535: callers check limits first.
    pub fn bytes_u16(&mut self, v: &[u8]) -> &mut Self {
        let len = u16::try_from(v.len()).expect("caller enforces the u16 length limit");
        self.u16(len).raw(v)
    }
    /// Bytes prefixed by a u32 length.
    pub fn bytes_u32(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("caller enforces the u32 length limit");
        self.u32(len).raw(v)
    }
    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    /// The finished buffer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads primitives from a byte slice, failing with a [`DecodeError`] naming the field.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                had: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    /// u16, little endian.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    /// A u8 element count, at most `max` (`TooLong` otherwise).
    pub fn count_u8(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u8(field)?);
        Self::check_len(field, n, max)?;
        Ok(n)
    }
    /// A u16 element count, at most `max` (`TooLong` otherwise).
    pub fn count_u16(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(field)?);
        Self::check_len(field, n, max)?;
        Ok(n)
    }
    /// A u32 element count, at most `max` (`TooLong` otherwise).
    pub fn count_u32(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        Self::check_len(field, n, max)?;
        Ok(n)
    }
    /// u32, little endian.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    /// i32, little endian.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }
    /// u64, little endian.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// 32 raw bytes.
    pub fn bytes32(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }
    /// u8-length-prefixed bytes, at most `max`.
    pub fn bytes_u8(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u8(field)? as usize;
        Self::check_len(field, len, max)?;
        self.take(len, field)
    }
    /// u16-length-prefixed bytes, at most `max`.
    pub fn bytes_u16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)? as usize;
        Self::check_len(field, len, max)?;
        self.take(len, field)
    }
    /// u32-length-prefixed bytes, at most `max`.
    pub fn bytes_u32(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        Self::check_len(field, len, max)?;
        self.take(len, field)
    }
    pub(crate) fn check_len(
        field: &'static str,
        len: usize,
        max: usize,
    ) -> Result<(), DecodeError> {
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        Ok(())
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::default();
        w.u8(1).u16(2).u32(3).i32(-4).u64(5).bytes_u16(b"hi");
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.i32("d").unwrap(), -4);
        assert_eq!(r.u64("e").unwrap(), 5);
        assert_eq!(r.bytes_u16("f", 10).unwrap(), b"hi");
        r.finish().unwrap();
    }

    #[test]
    fn strictness() {
        let mut r = Reader::new(&[1, 2]);
        assert!(matches!(
            r.u32("x"),
            Err(DecodeError::Truncated { field: "x", .. })
        ));
        let mut r = Reader::new(&[5, 0, 1, 2, 3, 4, 5]);
        assert!(matches!(
            r.bytes_u16("y", 4),
            Err(DecodeError::TooLong { len: 5, max: 4, .. })
        ));
        let r = Reader::new(&[0]);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }
}
