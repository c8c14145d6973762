//! Writing a batch: [`BatchBuilder`] on the producer side, [`from_records`] around a records
//! section a processor returned.

#[cfg(feature = "std")]
use super::compression::{compress_section, Compression};
#[cfg(feature = "std")]
use super::header::{i64_at, u32_at};
use super::header::{
    put_u32, put_u64, seal_body, OFF_FIRST_TS, OFF_LENGTH, OFF_MAX_TS, OFF_PRODUCER_ID, OFF_RECORD_COUNT,
    OFF_SEQUENCE, OFF_VERSION,
};
use super::record::{self, body_len, headers_len, put_headers, put_record};
use super::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, BATCH_VERSION, HEADER_LEN, RECORD_HEADERS_MAX};
use crate::{varint, WireError};
use alloc::vec::Vec;

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

    /// A builder holding the records of a finished, uncompressed batch, to finish it again.
    #[cfg(feature = "std")]
    pub(super) fn from_finished(batch: Vec<u8>) -> Self {
        BatchBuilder {
            count: u32_at(&batch, OFF_RECORD_COUNT),
            first_ts: i64_at(&batch, OFF_FIRST_TS),
            max_ts: i64_at(&batch, OFF_MAX_TS),
            buf: batch,
        }
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

    /// The encoded size `push` would add for a record with these fields, at most: the
    /// timestamp delta is counted at its longest.
    pub fn record_size(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) -> usize {
        let body = body_len(u64::MAX, key, value, headers.len() as u64, headers_len(headers));
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
        let delta = varint::zigzag(timestamp_ms.wrapping_sub(self.first_ts));
        let body = body_len(delta, key, value, headers.len() as u64, headers_len(headers));
        put_record(&mut self.buf, body, delta, key, value, headers.len() as u64, |buf| {
            put_headers(buf, headers)
        });
        self.count += 1;
        self.max_ts = self.max_ts.max(timestamp_ms);
        Ok(())
    }

    /// Like [`BatchBuilder::finish`], with the records section compressed by `compression` when
    /// that makes the batch smaller by at least an eighth (else it is left as it is: random
    /// payloads are not worth the reader's decompression).
    #[cfg(feature = "std")]
    pub fn finish_with(self, producer_id: u64, sequence: u64, compression: Compression) -> Vec<u8> {
        if compression == Compression::None || self.count == 0 {
            return self.finish(producer_id, sequence);
        }
        match compress_section(&self.buf[HEADER_LEN..]) {
            Some(buf) => BatchBuilder { buf, ..self }.finish(producer_id, sequence),
            None => self.finish(producer_id, sequence),
        }
    }

    /// Writes the header for `(producer_id, sequence)` and returns the finished batch.
    /// Base offset, append time and header checksum stay zero until the broker stamps them.
    pub fn finish(mut self, producer_id: u64, sequence: u64) -> Vec<u8> {
        assert!(self.count > 0, "a batch holds at least one record");
        let len = u32::try_from(self.buf.len()).expect("batch size is capped");
        let b = &mut self.buf;
        put_u32(b, OFF_LENGTH, len);
        b[OFF_VERSION] = BATCH_VERSION;
        put_u64(b, OFF_PRODUCER_ID, producer_id);
        put_u64(b, OFF_SEQUENCE, sequence);
        put_u32(b, OFF_RECORD_COUNT, self.count);
        put_u64(b, OFF_FIRST_TS, self.first_ts as u64);
        put_u64(b, OFF_MAX_TS, self.max_ts as u64);
        seal_body(b);
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
    let scan = record::scan(records, BATCH_RECORDS_MAX, first_timestamp_ms)?;
    if !scan.rest.is_empty() {
        return Err(WireError::Invalid { what: "batch has too many records" });
    }
    let mut buf = Vec::with_capacity(size);
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(records);
    let builder =
        BatchBuilder { buf, count: scan.count, first_ts: first_timestamp_ms, max_ts: scan.max_timestamp_ms };
    Ok(builder.finish(producer_id, sequence))
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::super::samples::build;
    use super::super::{validate, BatchView};
    use super::*;

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

    /// `record_size` is never below what `push` adds, whatever the timestamp delta.
    #[test]
    fn record_size_bounds_push() {
        let headers: [(&[u8], &[u8]); 2] = [(b"h", b"1"), (b"", &[7; 300])];
        let mut b = BatchBuilder::default();
        for ts in [0, i64::MIN, i64::MAX, -1] {
            let before = b.size_bytes();
            b.push(ts, b"key", &[1; 200], &headers).unwrap();
            assert!(b.size_bytes() - before <= BatchBuilder::record_size(b"key", &[1; 200], &headers));
        }
    }
}
