//! The input batch, read in place: `docs/record-batch.md`, version 1, uncompressed.
//!
//! [`Batch::new`] checks the header and the framing of every record once (a few varints per
//! record, no checksums: the host verified those), so iterating [`Batch::records`] afterwards
//! cannot fail and never copies.

use crate::varint;
use crate::Error;

/// Bytes before the first record.
pub const HEADER_LEN: usize = 68;
/// The only batch layout this crate reads.
pub const BATCH_VERSION: u8 = 1;
/// Most records one batch may carry (`docs/record-batch.md`, validation rule 5).
pub const BATCH_RECORDS_MAX: u32 = 1_000_000;
/// Most headers one record may carry.
pub const RECORD_HEADERS_MAX: u64 = 64;

const OFF_LENGTH: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_ATTRIBUTES: usize = 5;
const OFF_RESERVED: usize = 6;
const OFF_BASE_OFFSET: usize = 8;
const OFF_APPEND_TIME: usize = 16;
const OFF_PRODUCER_ID: usize = 32;
const OFF_SEQUENCE: usize = 40;
const OFF_RECORD_COUNT: usize = 48;
const OFF_FIRST_TS: usize = 52;
const OFF_MAX_TS: usize = 60;

fn le_bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers only read header fields of a buffer already checked to be HEADER_LEN long.
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// One input batch. Cheap to copy: it is a slice.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks that `bytes` is one uncompressed version-1 batch whose records are framed as the
    /// format says, and wraps it. Checksums are not checked.
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        let bad = |what| Err(malformed(what));
        if bytes.len() < HEADER_LEN {
            return bad("shorter than the 68-byte header");
        }
        let batch = Batch { bytes };
        if u32::from_le_bytes(le_bytes(bytes, OFF_LENGTH)) as usize != bytes.len() {
            return bad("length field does not match the buffer");
        }
        if bytes[OFF_VERSION] != BATCH_VERSION {
            return bad("version is not 1");
        }
        if bytes[OFF_ATTRIBUTES] != 0 {
            return bad("compressed or unknown attributes (the host passes uncompressed batches)");
        }
        if bytes[OFF_RESERVED] != 0 || bytes[OFF_RESERVED + 1] != 0 {
            return bad("reserved header bytes are not zero");
        }
        let count = batch.record_count();
        if count == 0 || count > BATCH_RECORDS_MAX {
            return bad("record count is not between 1 and 1,000,000");
        }
        // One tight walk over the framing; `records` then decodes the same bytes again without
        // having to report errors. Errors stay `Malformed` strings until one is found.
        let mut cur = Cursor { rest: &bytes[HEADER_LEN..] };
        let first_timestamp_ms = batch.first_timestamp_ms();
        for _ in 0..count {
            decode_record(&mut cur, first_timestamp_ms).map_err(malformed)?;
        }
        if !cur.rest.is_empty() {
            return bad("bytes after the last record");
        }
        Ok(batch)
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Offset of the first record; record `i` has offset `base_offset + i`.
    pub fn base_offset(&self) -> u64 {
        u64::from_le_bytes(le_bytes(self.bytes, OFF_BASE_OFFSET))
    }
    /// Broker time of the append, milliseconds since the Unix epoch. Not an event time.
    pub fn append_time_ms(&self) -> i64 {
        i64::from_le_bytes(le_bytes(self.bytes, OFF_APPEND_TIME))
    }
    /// Idempotent producer id; 0 when the producer is not idempotent.
    pub fn producer_id(&self) -> u64 {
        u64::from_le_bytes(le_bytes(self.bytes, OFF_PRODUCER_ID))
    }
    /// The producer's batch sequence number on this partition.
    pub fn sequence(&self) -> u64 {
        u64::from_le_bytes(le_bytes(self.bytes, OFF_SEQUENCE))
    }
    /// Number of records, at least 1.
    pub fn record_count(&self) -> u32 {
        u32::from_le_bytes(le_bytes(self.bytes, OFF_RECORD_COUNT))
    }
    /// Event time of the first record; output timestamp deltas are relative to it.
    pub fn first_timestamp_ms(&self) -> i64 {
        i64::from_le_bytes(le_bytes(self.bytes, OFF_FIRST_TS))
    }
    /// Largest event time of any record, as the producer wrote it.
    pub fn max_timestamp_ms(&self) -> i64 {
        i64::from_le_bytes(le_bytes(self.bytes, OFF_MAX_TS))
    }
    /// The records in offset order.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.bytes.get(HEADER_LEN..).unwrap_or(&[]),
            next_offset: self.base_offset(),
            left: self.record_count(),
            first_timestamp_ms: self.first_timestamp_ms(),
        }
    }
}

/// One record, borrowed from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset in the input partition.
    pub offset: u64,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Partitioning key; empty means no key.
    pub key: &'a [u8],
    /// The payload.
    pub value: &'a [u8],
    headers: &'a [u8],
    header_count: u8,
    /// The whole encoded record, length prefix included: what `Output::pass` copies.
    raw: &'a [u8],
    batch_first_timestamp_ms: i64,
}

impl<'a> Record<'a> {
    /// The key as UTF-8, or `None` when it is not.
    pub fn key_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.key).ok()
    }
    /// The record's `(name, value)` headers in order.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.headers, left: self.header_count }
    }
    /// The value of the first header called `name`.
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// Number of headers, at most 64.
    pub fn header_count(&self) -> u8 {
        self.header_count
    }
    pub(crate) fn raw(&self) -> &'a [u8] {
        self.raw
    }
    pub(crate) fn raw_headers(&self) -> &'a [u8] {
        self.headers
    }
    pub(crate) fn batch_first_timestamp_ms(&self) -> i64 {
        self.batch_first_timestamp_ms
    }
}

/// Iterator over a batch's records.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    /// The records not yet read.
    rest: &'a [u8],
    next_offset: u64,
    left: u32,
    first_timestamp_ms: i64,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        // `Batch::new` checked every record already, so this cannot fail; stopping early
        // (rather than panicking) keeps a panic path out of the module.
        let mut cur = Cursor { rest: self.rest };
        let fields = decode_record(&mut cur, self.first_timestamp_ms).ok()?;
        let raw = self.rest.get(..self.rest.len() - cur.rest.len())?;
        let record = Record {
            offset: self.next_offset,
            timestamp_ms: fields.timestamp_ms,
            key: fields.key,
            value: fields.value,
            headers: fields.headers,
            header_count: fields.header_count,
            raw,
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

impl ExactSizeIterator for Records<'_> {}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Framing was checked when the batch was wrapped.
        let mut cur = Cursor { rest: self.rest };
        let name = cur.bytes().ok()?;
        let value = cur.bytes().ok()?;
        self.rest = cur.rest;
        self.left -= 1;
        Some((name, value))
    }
}

/// What is wrong with a record's framing. A `&'static str` rather than an [`Error`], so the
/// decoders on the per-record path return two words and build the `Error` (with
/// [`malformed`]) only when something is wrong.
pub(crate) type Malformed = &'static str;

/// The error for a framing fault; out of line, since valid batches never get here.
#[cold]
#[inline(never)]
pub(crate) fn malformed(what: Malformed) -> Error {
    Error::MalformedBatch { what }
}

const FIELD_PAST_RECORD: Malformed = "record field runs past its record";

/// Reads the front of a byte slice, shrinking it. Every read is checked; errors are
/// [`Malformed`] strings.
pub(crate) struct Cursor<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A varint. Lengths, header counts and small timestamp deltas fit in one byte, so that
    /// case is inline and the general decoder is not.
    #[inline(always)]
    pub(crate) fn varint(&mut self) -> Result<u64, Malformed> {
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
            varint::VarintError::Truncated => "record cut short inside a varint",
            varint::VarintError::Overflow => "record varint overflows 64 bits",
        })?;
        self.rest = self.rest.get(n..).unwrap_or(&[]);
        Ok(v)
    }

    #[inline(always)]
    pub(crate) fn take(&mut self, len: u64) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len).map_err(|_| FIELD_PAST_RECORD)?;
        let (head, tail) = self.rest.split_at_checked(len).ok_or(FIELD_PAST_RECORD)?;
        self.rest = tail;
        Ok(head)
    }

    #[inline(always)]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        self.take(len)
    }
}

/// Decodes the record at the front of `cur`, leaving `cur` after it.
#[inline(always)]
fn decode_record<'a>(cur: &mut Cursor<'a>, first_timestamp_ms: i64) -> Result<Fields<'a>, Malformed> {
    let len = cur.varint()?;
    let body = cur.take(len)?;
    decode_fields(body, first_timestamp_ms)
}

pub(crate) struct Fields<'a> {
    pub(crate) timestamp_ms: i64,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) headers: &'a [u8],
    pub(crate) header_count: u8,
}

/// Decodes a record's body (everything after its length), checking that its fields end
/// exactly where the body does.
#[inline(always)]
pub(crate) fn decode_fields(body: &[u8], first_timestamp_ms: i64) -> Result<Fields<'_>, Malformed> {
    let mut cur = Cursor { rest: body };
    let delta = varint::unzigzag(cur.varint()?);
    let timestamp_ms = first_timestamp_ms.checked_add(delta).ok_or("record timestamp overflows")?;
    let key = cur.bytes()?;
    let value = cur.bytes()?;
    let header_count = cur.varint()?;
    if header_count > RECORD_HEADERS_MAX {
        return Err("more than 64 headers in a record");
    }
    let headers = cur.rest;
    for _ in 0..header_count {
        cur.bytes()?;
        cur.bytes()?;
    }
    if !cur.rest.is_empty() {
        return Err("record length does not match its fields");
    }
    Ok(Fields { timestamp_ms, key, value, headers, header_count: header_count as u8 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Header fields read back as the builder wrote them, and records come out in order with
    /// dense offsets.
    #[test]
    fn reads_header_and_records() {
        let bytes = BatchBuilder::new(40)
            .append_time_ms(99)
            .record(1_000, "a", "x")
            .record_with_headers(900, "", "y", &[("h", "1"), ("g", "")])
            .build();
        let batch = Batch::new(&bytes).unwrap();
        assert_eq!(batch.base_offset(), 40);
        assert_eq!(batch.append_time_ms(), 99);
        assert_eq!(batch.record_count(), 2);
        assert_eq!(batch.first_timestamp_ms(), 1_000);
        assert_eq!(batch.max_timestamp_ms(), 1_000);
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].offset, records[0].timestamp_ms, records[0].key), (40, 1_000, &b"a"[..]));
        assert_eq!((records[1].offset, records[1].timestamp_ms, records[1].value), (41, 900, &b"y"[..]));
        let headers: Vec<_> = records[1].headers().collect();
        assert_eq!(headers, [(&b"h"[..], &b"1"[..]), (&b"g"[..], &b""[..])]);
        assert_eq!(records[1].header(b"g"), Some(&b""[..]));
        assert_eq!(records[0].headers().count(), 0);
    }

    /// Each framing rule is enforced with an error, not a panic.
    #[test]
    fn refuses_bad_framing() {
        let good = BatchBuilder::new(0).record(5, "k", "v").build();
        let mut short = good.clone();
        short.pop();
        assert!(Batch::new(&short).is_err());
        let mut version = good.clone();
        version[OFF_VERSION] = 2;
        assert!(Batch::new(&version).is_err());
        let mut compressed = good.clone();
        compressed[OFF_ATTRIBUTES] = 1;
        assert!(Batch::new(&compressed).is_err());
        let mut no_records = good.clone();
        no_records[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(Batch::new(&no_records).is_err());
        let mut more_records = good.clone();
        more_records[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(Batch::new(&more_records).is_err());
        assert!(Batch::new(&good[..HEADER_LEN - 1]).is_err());
        assert!(Batch::new(&good).is_ok());
    }

    proptest! {
        /// Arbitrary bytes after a plausible header never panic `Batch::new` or the iterator.
        #[test]
        fn arbitrary_records_never_panic(
            count in 1u32..5,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = BatchBuilder::new(0).record(0, "", "").build();
            bytes.truncate(HEADER_LEN);
            bytes.extend_from_slice(&body);
            let len = bytes.len() as u32;
            bytes[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
            bytes[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&count.to_le_bytes());
            if let Ok(batch) = Batch::new(&bytes) {
                prop_assert_eq!(batch.records().count(), count as usize);
                for r in batch.records() {
                    let _ = r.headers().count();
                }
            }
        }

        /// Flipping any byte of a valid batch never panics the reader.
        #[test]
        fn mutated_batch_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = BatchBuilder::new(7)
                .record(10, "key", "value")
                .record_with_headers(-10, "", "v2", &[("a", "b")])
                .build();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok(batch) = Batch::new(&bytes) {
                for r in batch.records() {
                    let _ = r.headers().count();
                }
            }
        }
    }
}
