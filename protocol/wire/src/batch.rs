//! The record-batch format: one layout on the wire, on disk and in processor memory.
//!
//! `docs/record-batch.md` specifies it byte by byte; this module is the reference
//! implementation. A producer builds a batch with [`BatchBuilder`]; the broker checks it with
//! [`validate`] and stamps the broker-owned header fields with [`stamp`]; anyone reads it with
//! [`BatchView`] and iterates its [`Record`]s without copying.

use crate::varint;
use crate::WireError;

/// Version byte of the only layout this crate reads and writes.
pub const BATCH_VERSION: u8 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 68;
/// Largest batch accepted anywhere. Values above a few hundred KB stop paying in sled
/// (docs/design.md, decision 2, measured 100 KB as the sweet spot), and 8 MiB bounds the memory a
/// single request can pin.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most records one batch may carry; bounds per-batch work in validation and processors.
pub const BATCH_RECORDS_MAX: u32 = 1_000_000;
/// Most headers one record may carry.
pub const RECORD_HEADERS_MAX: u64 = 64;

const OFF_LENGTH: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_ATTRIBUTES: usize = 5;
const OFF_RESERVED: usize = 6;
/// Attribute bits 0-2 name the codec of the records section.
const ATTR_COMPRESSION_MASK: u8 = 0b111;
const CODEC_LZ4: u8 = 1;
const OFF_BASE_OFFSET: usize = 8;
const OFF_APPEND_TIME: usize = 16;
const OFF_HEADER_CRC: usize = 24;
const OFF_BODY_CRC: usize = 28;
const OFF_PRODUCER_ID: usize = 32;
const OFF_SEQUENCE: usize = 40;
const OFF_RECORD_COUNT: usize = 48;
const OFF_FIRST_TS: usize = 52;
const OFF_MAX_TS: usize = 60;
/// The body checksum covers everything from the producer id to the end.
const BODY_START: usize = OFF_PRODUCER_ID;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One record as stored: borrowed slices into the batch bytes.
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
    header_count: u64,
}

impl<'a> Record<'a> {
    /// Iterates `(name, value)` pairs of the record's headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { rest: self.headers, left: self.header_count }
    }
}

/// Iterator over a record's headers. The batch was validated, so decoding cannot fail here.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    left: u64,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut cur = Cursor { buf: self.rest, pos: 0 };
        let name = cur.bytes().expect("validated batch");
        let value = cur.bytes().expect("validated batch");
        self.rest = &self.rest[cur.pos..];
        Some((name, value))
    }
}

/// A read-only view of a batch whose framing, checksum and records were checked.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validates `bytes` as exactly one batch (see [`validate`]) and returns a view of it.
    pub fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
        validate(bytes)?;
        Ok(BatchView { bytes })
    }

    /// Wraps bytes that were validated before (for example when they were appended) after a
    /// cheap check of both checksums. Storage uses this on every read.
    pub fn checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        check_framing(bytes)?;
        let want = u32_at(bytes, OFF_HEADER_CRC);
        if want != 0 && header_crc(bytes) != want {
            return Err(WireError::Checksum { what: "batch header" });
        }
        if body_crc(bytes) != u32_at(bytes, OFF_BODY_CRC) {
            return Err(WireError::Checksum { what: "batch body" });
        }
        Ok(BatchView { bytes })
    }

    /// The whole batch, header included: what is stored and sent.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        u64_at(self.bytes, OFF_BASE_OFFSET)
    }
    /// Offset one past the last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count())
    }
    /// Broker time of the append, milliseconds since the Unix epoch.
    pub fn append_time_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_APPEND_TIME)
    }
    /// Idempotent producer id, 0 when the producer is not idempotent.
    pub fn producer_id(&self) -> u64 {
        u64_at(self.bytes, OFF_PRODUCER_ID)
    }
    /// Producer-assigned batch sequence number, per partition.
    pub fn sequence(&self) -> u64 {
        u64_at(self.bytes, OFF_SEQUENCE)
    }
    /// Number of records.
    pub fn record_count(&self) -> u32 {
        u32_at(self.bytes, OFF_RECORD_COUNT)
    }
    /// Event time of the first record.
    pub fn first_timestamp_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_FIRST_TS)
    }
    /// Largest event time in the batch.
    pub fn max_timestamp_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_MAX_TS)
    }
    /// True when the records section is LZ4-compressed; read such a batch through
    /// [`decompress`] first.
    pub fn is_compressed(&self) -> bool {
        is_compressed(self.bytes)
    }
    /// Iterates the records in offset order. The batch must not be compressed (see
    /// [`decompress`]).
    pub fn records(&self) -> RecordIter<'a> {
        assert!(!self.is_compressed(), "records() of a compressed batch: call batch::decompress first");
        RecordIter {
            bytes: self.bytes,
            pos: HEADER_LEN,
            index: 0,
            count: self.record_count(),
            base_offset: self.base_offset(),
            first_ts: self.first_timestamp_ms(),
        }
    }
}

/// Iterator over the records of a validated batch.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    index: u32,
    count: u32,
    base_offset: u64,
    first_ts: i64,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        if self.index >= self.count {
            return None;
        }
        let mut cur = Cursor { buf: self.bytes, pos: self.pos };
        let (record, end) = decode_record(&mut cur, self.base_offset, self.index, self.first_ts)
            .expect("records of a validated batch decode");
        self.pos = end;
        self.index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.index) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let (v, n) = varint::decode(&self.buf[self.pos..])?;
        self.pos += n;
        Ok(v)
    }
    fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(len).map_err(|_| WireError::Truncated { what: "record field" })?;
        let end = self.pos.checked_add(len).ok_or(WireError::Truncated { what: "record field" })?;
        if end > self.buf.len() {
            return Err(WireError::Truncated { what: "record field" });
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        self.take(len)
    }
}

/// Decodes one record at `cur`, returning it and the position after it.
fn decode_record<'a>(
    cur: &mut Cursor<'a>,
    base_offset: u64,
    index: u32,
    first_ts: i64,
) -> Result<(Record<'a>, usize), WireError> {
    let len = cur.varint()?;
    let body = cur.take(len)?;
    let end = cur.pos;
    let mut rc = Cursor { buf: body, pos: 0 };
    let ts_delta = varint::unzigzag(rc.varint()?);
    let timestamp_ms =
        first_ts.checked_add(ts_delta).ok_or(WireError::Invalid { what: "record timestamp overflows" })?;
    let key = rc.bytes()?;
    let value = rc.bytes()?;
    let header_count = rc.varint()?;
    if header_count > RECORD_HEADERS_MAX {
        return Err(WireError::Invalid { what: "too many record headers" });
    }
    let headers_start = rc.pos;
    for _ in 0..header_count {
        rc.bytes()?;
        rc.bytes()?;
    }
    if rc.pos != body.len() {
        return Err(WireError::Invalid { what: "record length does not match its fields" });
    }
    let record = Record {
        offset: base_offset + u64::from(index),
        timestamp_ms,
        key,
        value,
        headers: &body[headers_start..],
        header_count,
    };
    Ok((record, end))
}

fn check_framing(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() < HEADER_LEN {
        return Err(WireError::Truncated { what: "batch header" });
    }
    let version = bytes[OFF_VERSION];
    if version != BATCH_VERSION {
        return Err(WireError::UnsupportedVersion { what: "record batch", version });
    }
    let length = u32_at(bytes, OFF_LENGTH) as usize;
    if length != bytes.len() {
        return Err(WireError::Invalid { what: "batch length field does not match its size" });
    }
    if length > BATCH_BYTES_MAX {
        return Err(WireError::TooLarge { what: "record batch", size: length, max: BATCH_BYTES_MAX });
    }
    if bytes[OFF_RESERVED] != 0 || bytes[OFF_RESERVED + 1] != 0 {
        return Err(WireError::Invalid { what: "reserved batch header bytes are not zero" });
    }
    if bytes[OFF_ATTRIBUTES] & !ATTR_COMPRESSION_MASK != 0 {
        return Err(WireError::Invalid { what: "unknown batch attribute bits" });
    }
    match bytes[OFF_ATTRIBUTES] & ATTR_COMPRESSION_MASK {
        0 => {}
        CODEC_LZ4 => {
            if bytes.len() < HEADER_LEN + 4 {
                return Err(WireError::Truncated { what: "compressed records length" });
            }
        }
        _ => return Err(WireError::Invalid { what: "unknown batch compression codec" }),
    }
    Ok(())
}

/// True when the records section is compressed.
fn is_compressed(bytes: &[u8]) -> bool {
    bytes[OFF_ATTRIBUTES] & ATTR_COMPRESSION_MASK != 0
}

/// The records section of a framed batch, decompressed when needed. The declared
/// uncompressed size is checked against [`BATCH_BYTES_MAX`] before anything is allocated.
fn records_section(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
    if !is_compressed(bytes) {
        return Ok(std::borrow::Cow::Borrowed(&bytes[HEADER_LEN..]));
    }
    let raw_len = u32_at(bytes, HEADER_LEN) as usize;
    if raw_len > BATCH_BYTES_MAX - HEADER_LEN {
        return Err(WireError::TooLarge {
            what: "decompressed records",
            size: raw_len,
            max: BATCH_BYTES_MAX,
        });
    }
    let mut out = vec![0u8; raw_len];
    let n = lz4_flex::block::decompress_into(&bytes[HEADER_LEN + 4..], &mut out)
        .map_err(|_| WireError::Invalid { what: "lz4 records section does not decompress" })?;
    if n != raw_len {
        return Err(WireError::Invalid { what: "lz4 records section decompresses to the wrong size" });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The batch with its records section decompressed: borrowed as it is when it was not
/// compressed, else a copy with attributes 0 and both checksums recomputed, so that
/// [`BatchView::checked`] and [`BatchView::records`] work on it. Base offset, append time,
/// producer, sequence, counts and timestamps are unchanged.
pub fn decompress(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
    check_framing(bytes)?;
    if !is_compressed(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let records = records_section(bytes)?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&bytes[..HEADER_LEN]);
    out.extend_from_slice(&records);
    let len = u32::try_from(out.len()).map_err(|_| WireError::Invalid { what: "batch length" })?;
    out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
    out[OFF_ATTRIBUTES] &= !ATTR_COMPRESSION_MASK;
    let crc = body_crc(&out);
    out[OFF_BODY_CRC..OFF_BODY_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    if u32_at(bytes, OFF_HEADER_CRC) != 0 {
        let crc = header_crc(&out);
        out[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Rewrites a buffer of concatenated batches (a fetch response) with every compressed batch
/// decompressed; `None` when none was compressed.
pub fn decompress_all(bytes: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    for view in split_batches(bytes) {
        let view = view?;
        let one = view.as_bytes();
        if is_compressed(one) {
            let buf = out.get_or_insert_with(|| {
                let mut v = Vec::with_capacity(bytes.len() * 4);
                v.extend_from_slice(&bytes[..at]);
                v
            });
            buf.extend_from_slice(&decompress(one)?);
        } else if let Some(buf) = out.as_mut() {
            buf.extend_from_slice(one);
        }
        at += one.len();
    }
    Ok(out)
}

/// crc32c (Castagnoli) of bytes 0..24: length, version, attributes and the stamped fields.
pub fn header_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(&bytes[..OFF_HEADER_CRC])
}

/// crc32c of everything from the producer id to the end of the batch.
pub fn body_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(&bytes[BODY_START..])
}

/// Checks that `bytes` is exactly one well-formed batch: length, version, attributes, body
/// checksum, record count, and every record inside its bounds. Never panics on any input.
pub fn validate(bytes: &[u8]) -> Result<(), WireError> {
    check_framing(bytes)?;
    if body_crc(bytes) != u32_at(bytes, OFF_BODY_CRC) {
        return Err(WireError::Checksum { what: "batch body" });
    }
    let count = u32_at(bytes, OFF_RECORD_COUNT);
    if count == 0 {
        return Err(WireError::Invalid { what: "batch has no records" });
    }
    if count > BATCH_RECORDS_MAX {
        return Err(WireError::Invalid { what: "batch has too many records" });
    }
    let first_ts = i64_at(bytes, OFF_FIRST_TS);
    let records = records_section(bytes)?;
    let mut max_ts = i64::MIN;
    let mut cur = Cursor { buf: &records, pos: 0 };
    for index in 0..count {
        if cur.pos == records.len() {
            return Err(WireError::Invalid { what: "record count: the batch holds fewer records" });
        }
        let (record, end) = decode_record(&mut cur, 0, index, first_ts)?;
        max_ts = max_ts.max(record.timestamp_ms);
        cur.pos = end;
    }
    if cur.pos != records.len() {
        return Err(WireError::Invalid { what: "bytes after the last record" });
    }
    if max_ts != i64_at(bytes, OFF_MAX_TS) {
        return Err(WireError::Invalid { what: "max timestamp does not match the records" });
    }
    Ok(())
}

/// Writes the broker-owned fields (base offset, append time) and the header checksum.
/// The body is untouched, so the body checksum the producer computed stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: u64, append_time_ms: i64) {
    assert!(bytes.len() >= HEADER_LEN, "stamp needs a whole header");
    bytes[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    bytes[OFF_APPEND_TIME..OFF_APPEND_TIME + 8].copy_from_slice(&append_time_ms.to_le_bytes());
    let crc = header_crc(bytes);
    bytes[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the header fields a router needs without validating the body: `(record_count,
/// producer_id, sequence, max_timestamp_ms)`. Call only on bytes that passed [`validate`].
pub fn peek_header(bytes: &[u8]) -> (u32, u64, u64, i64) {
    (
        u32_at(bytes, OFF_RECORD_COUNT),
        u64_at(bytes, OFF_PRODUCER_ID),
        u64_at(bytes, OFF_SEQUENCE),
        i64_at(bytes, OFF_MAX_TS),
    )
}

/// Splits a buffer of concatenated batches (a fetch response) into checked views.
pub fn split_batches(mut bytes: &[u8]) -> impl Iterator<Item = Result<BatchView<'_>, WireError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() < 4 {
            bytes = &[];
            return Some(Err(WireError::Truncated { what: "batch length" }));
        }
        let len = u32_at(bytes, 0) as usize;
        if len < HEADER_LEN || len > bytes.len() {
            bytes = &[];
            return Some(Err(WireError::Truncated { what: "batch" }));
        }
        let (one, rest) = bytes.split_at(len);
        bytes = rest;
        Some(BatchView::checked(one))
    })
}

/// How a producer compresses the records section of its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// LZ4 block compression (sensor readings typically shrink 3-10x).
    #[default]
    Lz4,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            _ => Err(format!("compression {s:?} is not one of: none, lz4")),
        }
    }
}

/// Builds a batch on the producer side. Records are appended in order; [`BatchBuilder::finish`]
/// writes the header and the body checksum.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_ts: i64,
    max_ts: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    /// A builder whose buffer is pre-sized for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder { buf, count: 0, first_ts: 0, max_ts: i64::MIN }
    }

    /// Number of records so far.
    pub fn len(&self) -> u32 {
        self.count
    }
    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Encoded size so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The encoded size `push` would add for a record with these fields.
    pub fn record_size(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) -> usize {
        let mut body = varint::MAX_LEN // timestamp delta, worst case
            + varint::len(key.len() as u64)
            + key.len()
            + varint::len(value.len() as u64)
            + value.len()
            + varint::len(headers.len() as u64);
        for (k, v) in headers {
            body += varint::len(k.len() as u64) + k.len() + varint::len(v.len() as u64) + v.len();
        }
        varint::len(body as u64) + body
    }

    /// Appends one record. Fails only when the batch would exceed [`BATCH_BYTES_MAX`], its record
    /// limit, or a record carries more than [`RECORD_HEADERS_MAX`] headers.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) -> Result<(), WireError> {
        if self.count >= BATCH_RECORDS_MAX {
            return Err(WireError::Invalid { what: "batch has too many records" });
        }
        if headers.len() as u64 > RECORD_HEADERS_MAX {
            return Err(WireError::Invalid { what: "too many record headers" });
        }
        let size = Self::record_size(key, value, headers);
        if self.buf.len() + size > BATCH_BYTES_MAX {
            return Err(WireError::TooLarge {
                what: "record batch",
                size: self.buf.len() + size,
                max: BATCH_BYTES_MAX,
            });
        }
        if self.count == 0 {
            self.first_ts = timestamp_ms;
        }
        let delta = timestamp_ms.wrapping_sub(self.first_ts);
        let mut body_len = varint::len(varint::zigzag(delta))
            + varint::len(key.len() as u64)
            + key.len()
            + varint::len(value.len() as u64)
            + value.len()
            + varint::len(headers.len() as u64);
        for (k, v) in headers {
            body_len += varint::len(k.len() as u64) + k.len() + varint::len(v.len() as u64) + v.len();
        }
        varint::encode(body_len as u64, &mut self.buf);
        varint::encode(varint::zigzag(delta), &mut self.buf);
        varint::encode(key.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(key);
        varint::encode(value.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(value);
        varint::encode(headers.len() as u64, &mut self.buf);
        for (k, v) in headers {
            varint::encode(k.len() as u64, &mut self.buf);
            self.buf.extend_from_slice(k);
            varint::encode(v.len() as u64, &mut self.buf);
            self.buf.extend_from_slice(v);
        }
        self.count += 1;
        self.max_ts = self.max_ts.max(timestamp_ms);
        Ok(())
    }

    /// Like [`BatchBuilder::finish`], with the records section compressed by `compression` when
    /// that makes the batch smaller by at least an eighth (else it is left as it is: random
    /// payloads are not worth the reader's decompression).
    pub fn finish_with(self, producer_id: u64, sequence: u64, compression: Compression) -> Vec<u8> {
        if compression == Compression::None || self.count == 0 {
            return self.finish(producer_id, sequence);
        }
        let raw = &self.buf[HEADER_LEN..];
        let bound = lz4_flex::block::get_maximum_output_size(raw.len());
        let mut out = vec![0u8; HEADER_LEN + 4 + bound];
        let n = lz4_flex::block::compress_into(raw, &mut out[HEADER_LEN + 4..])
            .expect("output sized by the bound");
        if HEADER_LEN + 4 + n + raw.len() / 8 > self.buf.len() {
            return self.finish(producer_id, sequence);
        }
        out.truncate(HEADER_LEN + 4 + n);
        out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        let mut head =
            BatchBuilder { buf: out, count: self.count, first_ts: self.first_ts, max_ts: self.max_ts };
        head.buf[OFF_ATTRIBUTES] = CODEC_LZ4;
        head.finish(producer_id, sequence)
    }

    /// Writes the header for `(producer_id, sequence)` and returns the finished batch.
    /// Base offset, append time and header checksum stay zero until the broker stamps them.
    pub fn finish(mut self, producer_id: u64, sequence: u64) -> Vec<u8> {
        assert!(self.count > 0, "a batch holds at least one record");
        let len = u32::try_from(self.buf.len()).expect("batch size is capped");
        let b = &mut self.buf;
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        b[OFF_VERSION] = BATCH_VERSION;
        b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_le_bytes());
        b[OFF_SEQUENCE..OFF_SEQUENCE + 8].copy_from_slice(&sequence.to_le_bytes());
        b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        b[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&self.first_ts.to_le_bytes());
        b[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&self.max_ts.to_le_bytes());
        let crc = body_crc(b);
        b[OFF_BODY_CRC..OFF_BODY_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Wraps a ready records section (records back to back, as a processor returns them) into an
/// uncompressed batch for `(producer_id, sequence)`, base offset and append time unstamped.
/// Every record is checked as validation rule 6 checks a batch (fields inside its length, at
/// most [`RECORD_HEADERS_MAX`] headers, the records ending exactly at the end of `records`),
/// and counted; `timestamp_delta`s are relative to `first_timestamp_ms`, which becomes the
/// batch's, and the batch's max timestamp is the largest record time. Refuses an empty
/// section, more than [`BATCH_RECORDS_MAX`] records and a batch above [`BATCH_BYTES_MAX`],
/// checking the size before allocating.
pub fn from_records(
    first_timestamp_ms: i64,
    records: &[u8],
    producer_id: u64,
    sequence: u64,
) -> Result<Vec<u8>, WireError> {
    let size = HEADER_LEN
        .checked_add(records.len())
        .filter(|&size| size <= BATCH_BYTES_MAX)
        .ok_or(WireError::TooLarge { what: "record batch", size: records.len(), max: BATCH_BYTES_MAX })?;
    if records.is_empty() {
        return Err(WireError::Invalid { what: "batch has no records" });
    }
    let mut count: u32 = 0;
    let mut max_ts = i64::MIN;
    let mut cur = Cursor { buf: records, pos: 0 };
    while cur.pos < records.len() {
        if count == BATCH_RECORDS_MAX {
            return Err(WireError::Invalid { what: "batch has too many records" });
        }
        let (record, end) = decode_record(&mut cur, 0, count, first_timestamp_ms)?;
        max_ts = max_ts.max(record.timestamp_ms);
        cur.pos = end;
        count += 1;
    }
    assert_eq!(cur.pos, records.len(), "records are decoded up to their end");
    let mut buf = Vec::with_capacity(size);
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(records);
    let builder = BatchBuilder { buf, count, first_ts: first_timestamp_ms, max_ts };
    Ok(builder.finish(producer_id, sequence))
}

/// Compresses the records section of a finished, uncompressed batch (as from
/// [`from_records`]) the way [`BatchBuilder::finish_with`] does: only when that saves at least
/// an eighth. Header fields are kept; the body checksum is recomputed.
pub fn compress(batch: Vec<u8>, compression: Compression) -> Vec<u8> {
    assert!(batch.len() > HEADER_LEN && batch[OFF_ATTRIBUTES] == 0, "a finished, uncompressed batch");
    let (producer_id, sequence) = (u64_at(&batch, OFF_PRODUCER_ID), u64_at(&batch, OFF_SEQUENCE));
    let builder = BatchBuilder {
        count: u32_at(&batch, OFF_RECORD_COUNT),
        first_ts: i64_at(&batch, OFF_FIRST_TS),
        max_ts: i64_at(&batch, OFF_MAX_TS),
        buf: batch,
    };
    builder.finish_with(producer_id, sequence, compression)
}

/// Rewrites the producer id and sequence of a finished batch and fixes its body checksum.
/// The client uses it to assign sequences at send time rather than at build time.
pub fn set_producer(bytes: &mut [u8], producer_id: u64, sequence: u64) {
    assert!(bytes.len() >= HEADER_LEN);
    bytes[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_le_bytes());
    bytes[OFF_SEQUENCE..OFF_SEQUENCE + 8].copy_from_slice(&sequence.to_le_bytes());
    let crc = body_crc(bytes);
    bytes[OFF_BODY_CRC..OFF_BODY_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (i64, Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    /// `compress` of a finished batch gives what `finish_with` gives for the same records, and
    /// leaves incompressible batches as they are.
    #[test]
    fn compress_matches_finish_with() {
        let build = |values: &[Vec<u8>]| {
            let mut b = BatchBuilder::default();
            for (i, v) in values.iter().enumerate() {
                b.push(1000 + i as i64, b"key", v, &[]).unwrap();
            }
            b
        };
        let sensor: Vec<Vec<u8>> =
            (0..200).map(|i| format!("{{\"temp\":{}.5}}", i % 7).into_bytes()).collect();
        let plain = build(&sensor).finish(3, 9);
        let direct = build(&sensor).finish_with(3, 9, Compression::Lz4);
        let compressed = compress(plain.clone(), Compression::Lz4);
        assert_eq!(compressed, direct);
        assert!(compressed.len() < plain.len());
        validate(&compressed).unwrap();
        assert_eq!(&decompress(&compressed).unwrap()[..], &plain[..]);
        let noise: Vec<Vec<u8>> =
            (0..50u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes().to_vec()).collect();
        let plain = build(&noise).finish(0, 0);
        assert_eq!(compress(plain.clone(), Compression::Lz4), plain);
    }

    fn build(records: &[Rec]) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        for (ts, k, v, h) in records {
            let h: Vec<(&[u8], &[u8])> = h.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            b.push(*ts, k, v, &h).unwrap();
        }
        b.finish(7, 3)
    }

    fn rec() -> impl Strategy<Value = Rec> {
        (
            -1_000_000_000_000i64..4_000_000_000_000,
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
        )
    }

    proptest! {
        /// Build -> validate -> stamp -> read gives back every field of every record.
        #[test]
        fn round_trip(records in proptest::collection::vec(rec(), 1..40), base in 0u64..u64::MAX / 2) {
            let mut bytes = build(&records);
            validate(&bytes).unwrap();
            stamp(&mut bytes, base, 42);
            let view = BatchView::checked(&bytes).unwrap();
            prop_assert_eq!(view.base_offset(), base);
            prop_assert_eq!(view.append_time_ms(), 42);
            prop_assert_eq!(view.producer_id(), 7);
            prop_assert_eq!(view.sequence(), 3);
            prop_assert_eq!(view.record_count() as usize, records.len());
            for (i, (r, want)) in view.records().zip(&records).enumerate() {
                prop_assert_eq!(r.offset, base + i as u64);
                prop_assert_eq!(r.timestamp_ms, want.0);
                prop_assert_eq!(r.key, &want.1[..]);
                prop_assert_eq!(r.value, &want.2[..]);
                let h: Vec<(Vec<u8>, Vec<u8>)> = r.headers().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
                prop_assert_eq!(&h, &want.3);
            }
            validate(&bytes).unwrap();
        }

        /// Any corruption of a valid batch is refused, never a panic.
        #[test]
        fn corruption_is_detected(records in proptest::collection::vec(rec(), 1..10), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = build(&records);
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            // Stamped fields (8..28) are outside the body checksum; everything else must fail.
            if !(8..28).contains(&i) {
                prop_assert!(validate(&bytes).is_err());
            }
        }

        /// Arbitrary bytes and truncations never panic the validator.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in any::<prop::sample::Index>()) {
            let _ = validate(&bytes);
            let _ = BatchView::checked(&bytes);
            let good = build(&[(1, vec![], b"x".to_vec(), vec![])]);
            let _ = validate(&good[..cut.index(good.len())]);
            for b in split_batches(&bytes) { let _ = b; }
        }
    }

    proptest! {
        /// An LZ4-compressed batch validates, and reads back (through `decompress`) exactly the
        /// records of the same batch built without compression; corruption is still refused.
        #[test]
        fn compressed_round_trip(records in proptest::collection::vec(rec(), 1..40), repeat in 1usize..20, at in any::<prop::sample::Index>()) {
            // Repeating records makes the batch compressible, as sensor data is.
            let records: Vec<Rec> = records.iter().cycle().take(records.len() * repeat).cloned().collect();
            let mut b = BatchBuilder::default();
            for (ts, k, v, h) in &records {
                let h: Vec<(&[u8], &[u8])> = h.iter().map(|(a, b)| (&a[..], &b[..])).collect();
                b.push(*ts, k, v, &h).unwrap();
            }
            let mut packed = b.clone().finish_with(7, 3, Compression::Lz4);
            let plain = b.finish(7, 3);
            validate(&packed).unwrap();
            stamp(&mut packed, 100, 5);
            let mut plain_stamped = plain.clone();
            stamp(&mut plain_stamped, 100, 5);
            let unpacked = decompress(&packed).unwrap();
            prop_assert_eq!(&unpacked[..], &plain_stamped[..]);
            let view = BatchView::checked(&unpacked).unwrap();
            prop_assert_eq!(view.records().count(), records.len());
            let mut two = packed.clone();
            two.extend_from_slice(&plain_stamped);
            let all = decompress_all(&two).unwrap().unwrap_or(two.clone());
            prop_assert_eq!(split_batches(&all).count(), 2);
            let i = at.index(packed.len());
            if !(8..28).contains(&i) {
                packed[i] ^= 0x55;
                prop_assert!(validate(&packed).is_err());
            }
        }
    }

    #[test]
    fn compression_claiming_a_huge_size_is_refused_before_allocating() {
        let mut b = BatchBuilder::default();
        for i in 0..100 {
            b.push(i, b"", b"the same reading again and again", &[]).unwrap();
        }
        let mut packed = b.finish_with(1, 1, Compression::Lz4);
        assert_eq!(packed[OFF_ATTRIBUTES], CODEC_LZ4);
        packed[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        set_producer(&mut packed, 1, 1);
        assert!(matches!(validate(&packed), Err(WireError::TooLarge { .. })));
        packed[OFF_ATTRIBUTES] = 5;
        set_producer(&mut packed, 1, 1);
        assert!(validate(&packed).is_err());
    }

    #[test]
    fn incompressible_records_stay_uncompressed() {
        let mut b = BatchBuilder::default();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for i in 0..50 {
            let v: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            b.push(i, b"", &v, &[]).unwrap();
        }
        let bytes = b.finish_with(1, 1, Compression::Lz4);
        assert!(!BatchView::new(&bytes).unwrap().is_compressed());
    }

    #[test]
    fn header_crc_detects_a_bad_stamp() {
        let mut bytes = build(&[(5, b"k".to_vec(), b"v".to_vec(), vec![])]);
        stamp(&mut bytes, 10, 20);
        bytes[OFF_BASE_OFFSET] ^= 1;
        assert!(matches!(BatchView::checked(&bytes), Err(WireError::Checksum { .. })));
    }

    #[test]
    fn from_records_rewraps_a_records_section_and_refuses_bad_framing() {
        // Proves that the records section of a batch, wrapped again, gives back the same
        // records and timestamps, and that truncated or padded sections are refused.
        let original = build(&[
            (1_000, b"k".to_vec(), b"a".to_vec(), vec![(b"h".to_vec(), b"v".to_vec())]),
            (990, vec![], b"bb".to_vec(), vec![]),
            (1_020, vec![], b"ccc".to_vec(), vec![]),
        ]);
        let section = &original[HEADER_LEN..];
        let wrapped = from_records(1_000, section, 0, 0).unwrap();
        validate(&wrapped).unwrap();
        let view = BatchView::new(&wrapped).unwrap();
        assert_eq!(
            (view.record_count(), view.first_timestamp_ms(), view.max_timestamp_ms()),
            (3, 1_000, 1_020)
        );
        assert_eq!(&wrapped[HEADER_LEN..], section);
        assert!(from_records(1_000, &section[..section.len() - 1], 0, 0).is_err());
        let mut padded = section.to_vec();
        padded.push(0);
        assert!(from_records(1_000, &padded, 0, 0).is_err());
        assert!(from_records(1_000, &[], 0, 0).is_err());
    }

    #[test]
    fn set_producer_keeps_the_batch_valid() {
        let mut bytes = build(&[(5, b"k".to_vec(), b"v".to_vec(), vec![])]);
        set_producer(&mut bytes, 99, 100);
        let v = BatchView::new(&bytes).unwrap();
        assert_eq!((v.producer_id(), v.sequence()), (99, 100));
    }
}
