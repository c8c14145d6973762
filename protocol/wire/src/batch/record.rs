//! Records: how one is laid out in a batch's records section, read in place and written.
//!
//! A record is `varint length | body`, the body being `zigzag varint timestamp delta | key |
//! value | varint header count | (name, value) pairs`, every byte string prefixed by its
//! varint length (`docs/record-batch.md`, "Records"). Reading never copies and never panics;
//! this is the one decoder, used by the broker's validation and by the guest SDK on every
//! record a processor sees, so the per-record path is kept short.

use alloc::vec::Vec;

use super::RECORD_HEADERS_MAX;
use crate::varint;

/// What is wrong with a record's framing. A static description rather than a
/// [`WireError`](crate::WireError) so that the per-record path returns two words and the full
/// error is built only when something is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl From<Malformed> for crate::WireError {
    #[cold]
    fn from(m: Malformed) -> Self {
        crate::WireError::Invalid { what: m.0 }
    }
}

const FIELD_PAST_RECORD: Malformed = Malformed("record field runs past its record");

/// One record: borrowed slices into the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset in the partition (base offset + index in the batch).
    pub offset: u64,
    /// Event time in milliseconds since the Unix epoch, set by the producer.
    pub timestamp_ms: i64,
    /// Partitioning key; empty means no key.
    pub key: &'a [u8],
    /// The payload.
    pub value: &'a [u8],
    headers: &'a [u8],
    header_count: u8,
    encoded: &'a [u8],
    batch_first_timestamp_ms: i64,
}

impl<'a> Record<'a> {
    /// The key as UTF-8, or `None` when it is not.
    #[inline]
    pub fn key_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.key).ok()
    }
    /// The record's `(name, value)` headers in order.
    #[inline]
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { rest: self.headers, left: self.header_count }
    }
    /// The value of the first header called `name`.
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// Number of headers, at most [`RECORD_HEADERS_MAX`].
    #[inline]
    pub fn header_count(&self) -> u8 {
        self.header_count
    }
    /// The whole record as encoded in its batch, length prefix included: what a copy of the
    /// record into another batch with the same first timestamp writes.
    #[inline]
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }
    /// The encoded `(name, value)` pairs of the headers, without their count.
    #[inline]
    pub fn encoded_headers(&self) -> &'a [u8] {
        self.headers
    }
    /// The first timestamp of the batch the record was read from: its timestamp delta is
    /// relative to it.
    #[inline]
    pub fn batch_first_timestamp_ms(&self) -> i64 {
        self.batch_first_timestamp_ms
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // The record's framing was checked when it was decoded, so this does not fail.
        let mut cur = Cursor { rest: self.rest };
        let name = cur.bytes().ok()?;
        let value = cur.bytes().ok()?;
        self.rest = cur.rest;
        self.left -= 1;
        Some((name, value))
    }
}

/// Iterator over the records of a records section whose framing was checked (by [`scan`],
/// which every way of making a [`BatchView`](super::BatchView) runs).
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    /// The records not yet read.
    rest: &'a [u8],
    next_offset: u64,
    left: u32,
    first_timestamp_ms: i64,
}

impl<'a> RecordIter<'a> {
    /// The `count` records at the start of `records`, the first at `base_offset`. `records`
    /// must be a section [`scan`] accepted for at least `count` records: debug builds assert
    /// it, and release builds stop at the first framing fault rather than panic.
    #[inline]
    pub fn new(records: &'a [u8], base_offset: u64, count: u32, first_timestamp_ms: i64) -> Self {
        RecordIter { rest: records, next_offset: base_offset, left: count, first_timestamp_ms }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        // The section was scanned, so this does not fail; stopping (rather than panicking)
        // keeps a panic path out of every processor module.
        let mut cur = Cursor { rest: self.rest };
        let Ok(fields) = decode_record(&mut cur, self.first_timestamp_ms) else {
            debug_assert!(false, "records of a scanned section decode");
            return None;
        };
        let encoded = self.rest.get(..self.rest.len() - cur.rest.len())?;
        let record = Record {
            offset: self.next_offset,
            timestamp_ms: fields.timestamp_ms,
            key: fields.key,
            value: fields.value,
            headers: fields.headers,
            header_count: fields.header_count,
            encoded,
            batch_first_timestamp_ms: self.first_timestamp_ms,
        };
        self.rest = cur.rest;
        self.next_offset = self.next_offset.wrapping_add(1);
        self.left -= 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.left as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

/// What [`scan`] found in a records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan<'a> {
    /// Records read.
    pub count: u32,
    /// Largest record timestamp; `i64::MIN` when there were none.
    pub max_timestamp_ms: i64,
    /// What follows the last record read: empty when the section ended with it.
    pub rest: &'a [u8],
}

/// Checks the framing of up to `count_max` records at the start of `records` (timestamp deltas
/// relative to `first_timestamp_ms`): every field inside its record, at most
/// [`RECORD_HEADERS_MAX`] headers, each record's fields ending where its length says. Stops at
/// the end of the section or after `count_max` records; the caller decides whether a short
/// count or bytes left over are wrong.
pub fn scan(records: &[u8], count_max: u32, first_timestamp_ms: i64) -> Result<Scan<'_>, Malformed> {
    let mut cur = Cursor { rest: records };
    let mut count = 0;
    let mut max_timestamp_ms = i64::MIN;
    while count < count_max && !cur.rest.is_empty() {
        let fields = decode_record(&mut cur, first_timestamp_ms)?;
        max_timestamp_ms = max_timestamp_ms.max(fields.timestamp_ms);
        count += 1;
    }
    Ok(Scan { count, max_timestamp_ms, rest: cur.rest })
}

/// Reads the front of a byte slice, shrinking it. Every read is checked.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A varint. Lengths, header counts and small timestamp deltas fit in one byte, so that
    /// case is inline and the general decoder is not.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, Malformed> {
        if let Some((&b, tail)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = tail;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, Malformed> {
        let (v, n) = varint::decode(self.rest).map_err(|e| match e {
            varint::VarintError::Truncated => Malformed("record cut short inside a varint"),
            varint::VarintError::Overflow => Malformed("record varint overflows 64 bits"),
        })?;
        self.rest = self.rest.get(n..).unwrap_or(&[]);
        Ok(v)
    }

    #[inline(always)]
    fn take(&mut self, len: u64) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len).map_err(|_| FIELD_PAST_RECORD)?;
        let (head, tail) = self.rest.split_at_checked(len).ok_or(FIELD_PAST_RECORD)?;
        self.rest = tail;
        Ok(head)
    }

    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        self.take(len)
    }
}

struct Fields<'a> {
    timestamp_ms: i64,
    key: &'a [u8],
    value: &'a [u8],
    headers: &'a [u8],
    header_count: u8,
}

/// Decodes the record at the front of `cur`, leaving `cur` after it, and checks that its fields
/// end exactly where its length says.
#[inline(always)]
fn decode_record<'a>(cur: &mut Cursor<'a>, first_timestamp_ms: i64) -> Result<Fields<'a>, Malformed> {
    let len = cur.varint()?;
    let mut body = Cursor { rest: cur.take(len)? };
    let delta = varint::unzigzag(body.varint()?);
    let timestamp_ms =
        first_timestamp_ms.checked_add(delta).ok_or(Malformed("record timestamp overflows"))?;
    let key = body.bytes()?;
    let value = body.bytes()?;
    let header_count = body.varint()?;
    if header_count > RECORD_HEADERS_MAX {
        return Err(Malformed("more than 64 headers in a record"));
    }
    let headers = body.rest;
    for _ in 0..header_count {
        body.bytes()?;
        body.bytes()?;
    }
    if !body.rest.is_empty() {
        return Err(Malformed("record length does not match its fields"));
    }
    Ok(Fields { timestamp_ms, key, value, headers, header_count: header_count as u8 })
}

/// Encoded size of a length-prefixed byte string.
#[inline]
pub fn field_len(bytes: &[u8]) -> usize {
    varint::len(bytes.len() as u64).saturating_add(bytes.len())
}

/// Appends `bytes` with its varint length before it.
#[inline]
pub fn put_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    varint::encode(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// Encoded size of `(name, value)` header pairs, their count not included.
#[inline]
pub fn headers_len(headers: &[(&[u8], &[u8])]) -> usize {
    headers.iter().fold(0usize, |sum, (name, value)| {
        sum.saturating_add(field_len(name)).saturating_add(field_len(value))
    })
}

/// Appends `(name, value)` header pairs, their count not included.
#[inline]
pub fn put_headers(buf: &mut Vec<u8>, headers: &[(&[u8], &[u8])]) {
    for (name, value) in headers {
        put_field(buf, name);
        put_field(buf, value);
    }
}

/// Size of a record's body (all after its length prefix) with a zigzagged timestamp delta
/// `delta_zigzag`, and `header_count` headers that take `headers_len` bytes.
#[inline]
pub fn body_len(delta_zigzag: u64, key: &[u8], value: &[u8], header_count: u64, headers_len: usize) -> usize {
    varint::len(delta_zigzag)
        .saturating_add(field_len(key))
        .saturating_add(field_len(value))
        .saturating_add(varint::len(header_count))
        .saturating_add(headers_len)
}

/// Appends one record whose body is `body_len` bytes (as [`body_len`] gives it): the length
/// prefix, the delta, key and value, the header count, and the headers `put_headers` writes.
#[inline]
pub fn put_record(
    buf: &mut Vec<u8>,
    body_len: usize,
    delta_zigzag: u64,
    key: &[u8],
    value: &[u8],
    header_count: u64,
    put_headers: impl FnOnce(&mut Vec<u8>),
) {
    varint::encode(body_len as u64, buf);
    let body_start = buf.len();
    varint::encode(delta_zigzag, buf);
    put_field(buf, key);
    put_field(buf, value);
    varint::encode(header_count, buf);
    put_headers(buf);
    assert_eq!(buf.len() - body_start, body_len, "record body length computed before writing");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(delta: i64, key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let zz = varint::zigzag(delta);
        let body = body_len(zz, key, value, headers.len() as u64, headers_len(headers));
        let mut buf = Vec::new();
        put_record(&mut buf, body, zz, key, value, headers.len() as u64, |b| put_headers(b, headers));
        buf
    }

    /// A written record reads back field by field, with its encoded bytes and headers.
    #[test]
    fn written_records_read_back() {
        let mut section = one(-5, b"k", b"v", &[(b"h", b"1"), (b"g", b"")]);
        section.extend_from_slice(&one(7, b"", b"second", &[]));
        let scan = scan(&section, u32::MAX, 1_000).unwrap();
        assert_eq!((scan.count, scan.max_timestamp_ms, scan.rest), (2, 1_007, &[][..]));
        let records: Vec<_> = RecordIter::new(&section, 40, 2, 1_000).collect();
        assert_eq!((records[0].offset, records[0].timestamp_ms, records[0].key), (40, 995, &b"k"[..]));
        assert_eq!(records[0].header(b"g"), Some(&b""[..]));
        assert_eq!(records[0].header_count(), 2);
        assert_eq!(records[0].encoded().len() + records[1].encoded().len(), section.len());
        assert_eq!(
            (records[1].offset, records[1].value, records[1].key_str()),
            (41, &b"second"[..], Some(""))
        );
    }

    /// `scan` stops after `count_max` records and says what is left.
    #[test]
    fn scan_stops_at_count_max() {
        let mut section = one(0, b"", b"a", &[]);
        section.extend_from_slice(&one(0, b"", b"b", &[]));
        let first = scan(&section, 1, 0).unwrap();
        assert_eq!(first.count, 1);
        assert_eq!(first.rest, &section[section.len() / 2..]);
    }

    proptest! {
        /// Arbitrary bytes never panic `scan` or the iterators, and an iterator yields exactly
        /// what `scan` counted.
        #[test]
        fn arbitrary_sections_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), count in 0u32..6) {
            if let Ok(s) = scan(&bytes, count, 0) {
                let records: Vec<_> = RecordIter::new(&bytes, 0, s.count, 0).collect();
                prop_assert_eq!(records.len(), s.count as usize);
                for r in records {
                    prop_assert_eq!(r.headers().count(), usize::from(r.header_count()));
                }
            }
        }
    }
}
