//! Compact binary payloads and snapshots: little-endian fixed-width integers and floats,
//! varints, and length-prefixed byte strings.
//!
//! [`Write`] appends to a `Vec<u8>`; [`Reader`] reads in place and turns every short or
//! impossible input into an [`Error::Decode`] naming what was being decoded and where. It is
//! deliberately tiny (no schema, no derive): a snapshot format is a few fields written in a
//! fixed order, usually after a version byte.

use alloc::vec::Vec;

use crate::{varint, Error};

/// Appending fixed-width little-endian values, varints and length-prefixed bytes.
pub trait Write {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// A little-endian u32.
    fn put_u32(&mut self, v: u32);
    /// A little-endian u64.
    fn put_u64(&mut self, v: u64);
    /// A little-endian i64.
    fn put_i64(&mut self, v: i64);
    /// An f64 as its little-endian IEEE 754 bits (NaN payloads kept).
    fn put_f64(&mut self, v: f64);
    /// A LEB128 varint.
    fn put_varint(&mut self, v: u64);
    /// A varint length, then the bytes.
    fn put_bytes(&mut self, v: &[u8]);
}

impl Write for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    fn put_varint(&mut self, v: u64) {
        varint::encode(v, self);
    }
    fn put_bytes(&mut self, v: &[u8]) {
        varint::encode(v.len() as u64, self);
        self.extend_from_slice(v);
    }
}

/// Reads what [`Write`] wrote, in place.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; `context` names them in errors ("ema-smooth snapshot").
    pub fn new(bytes: &'a [u8], context: &'static str) -> Self {
        Reader { bytes, pos: 0, context }
    }

    /// An error at the current position.
    #[cold]
    #[inline(never)]
    pub fn error(&self, what: &'static str) -> Error {
        Error::Decode { context: self.context, at: self.pos, what }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let end = self.pos.checked_add(N).ok_or_else(|| self.error(what))?;
        let raw = self.bytes.get(self.pos..end).ok_or_else(|| self.error(what))?;
        let mut out = [0u8; N];
        out.copy_from_slice(raw);
        self.pos = end;
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>("cut short reading a byte")?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array("cut short reading a u32")?))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array("cut short reading a u64")?))
    }
    /// A little-endian i64.
    pub fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array("cut short reading an i64")?))
    }
    /// An f64 from its little-endian bits.
    pub fn f64(&mut self) -> Result<f64, Error> {
        Ok(f64::from_bits(u64::from_le_bytes(self.array("cut short reading an f64")?)))
    }
    /// A LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, Error> {
        let (v, n) = varint::decode(self.rest()).map_err(|e| {
            self.error(match e {
                varint::VarintError::Truncated => "cut short reading a varint",
                varint::VarintError::Overflow => "varint overflows 64 bits",
            })
        })?;
        self.pos += n;
        Ok(v)
    }
    /// A varint used as a count or length, refused when above `max` so a corrupt value cannot
    /// make the caller allocate gigabytes.
    pub fn count(&mut self, max: usize) -> Result<usize, Error> {
        let v = self.varint()?;
        usize::try_from(v).ok().filter(|&v| v <= max).ok_or_else(|| self.error("count above its limit"))
    }
    /// Exactly `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(len).ok_or_else(|| self.error("length overflows"))?;
        let raw = self.bytes.get(self.pos..end).ok_or_else(|| self.error("cut short reading bytes"))?;
        self.pos = end;
        Ok(raw)
    }
    /// A varint length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.count(self.remaining())?;
        self.take(len)
    }
    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }
    /// Position from the start, in bytes.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// An error unless every byte was read: a snapshot with trailing bytes was not written by
    /// this code.
    pub fn finish(self) -> Result<(), Error> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error("bytes left over"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    proptest! {
        /// Every value written reads back, and the reader ends exactly at the end.
        #[test]
        fn round_trip(a in any::<u8>(), b in any::<u32>(), c in any::<u64>(), d in any::<i64>(), e in any::<f64>(), f in any::<u64>(), g in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut buf = Vec::new();
            buf.put_u8(a);
            buf.put_u32(b);
            buf.put_u64(c);
            buf.put_i64(d);
            buf.put_f64(e);
            buf.put_varint(f);
            buf.put_bytes(&g);
            let mut r = Reader::new(&buf, "test");
            prop_assert_eq!(r.u8().unwrap(), a);
            prop_assert_eq!(r.u32().unwrap(), b);
            prop_assert_eq!(r.u64().unwrap(), c);
            prop_assert_eq!(r.i64().unwrap(), d);
            prop_assert_eq!(r.f64().unwrap().to_bits(), e.to_bits());
            prop_assert_eq!(r.varint().unwrap(), f);
            prop_assert_eq!(r.bytes().unwrap(), &g[..]);
            prop_assert!(r.finish().is_ok());
        }

        /// Arbitrary bytes never panic any read.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let mut r = Reader::new(&bytes, "test");
            let _ = r.bytes();
            let _ = r.f64();
            let _ = r.count(10);
            let _ = r.u32();
            let _ = r.take(usize::MAX);
        }
    }

    /// A short read names the context and the position.
    #[test]
    fn errors_name_context() {
        let mut r = Reader::new(&[1, 2], "ema-smooth snapshot");
        assert_eq!(r.u8().unwrap(), 1);
        let e = r.u32().unwrap_err();
        assert_eq!(
            e,
            Error::Decode { context: "ema-smooth snapshot", at: 1, what: "cut short reading a u32" }
        );
        assert!(e.to_string().contains("ema-smooth snapshot at byte 1"));
    }
}
