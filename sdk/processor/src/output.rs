//! Output records, encoded as the ABI wants them: records back to back, each laid out as in a
//! batch's records section, with `timestamp_delta` relative to the INPUT batch's
//! `first_timestamp_ms`.
//!
//! Emitting never fails at the call site. An output that cannot be sent (over the host's
//! per-batch limits, a timestamp no delta can express, more than 64 headers) is remembered,
//! nothing more is appended, and the batch fails with that error when the processor returns.
//! The buffer is kept across batches so steady-state processing does not allocate.

use alloc::format;
use alloc::vec::Vec;

use silt_wire::batch::record::{body_len, headers_len, put_headers, put_record};

use crate::batch::{Record, RECORD_HEADERS_MAX};
use crate::{varint, Error};

/// Most output bytes per batch: the host wraps the records into one batch, which has a 68-byte
/// header and may not exceed 8 MiB (`docs/processor-abi.md`, limits).
pub const OUTPUT_BYTES_MAX: usize = 8 * 1024 * 1024 - 68;
/// Most output records per batch.
pub const OUTPUT_RECORDS_MAX: u32 = 1_000_000;

/// The records one `process` call produces.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    first_timestamp_ms: i64,
    count: u32,
    error: Option<Error>,
}

impl Output {
    /// An empty output whose deltas are relative to time 0; [`Output::reset`] rebases it.
    pub const fn new() -> Self {
        Output { buf: Vec::new(), first_timestamp_ms: 0, count: 0, error: None }
    }

    /// Empties the output, keeping its buffer, for a batch whose first event time is
    /// `first_timestamp_ms`.
    pub fn reset(&mut self, first_timestamp_ms: i64) {
        self.buf.clear();
        self.first_timestamp_ms = first_timestamp_ms;
        self.count = 0;
        self.error = None;
    }

    /// Emits a record without headers.
    pub fn emit(&mut self, timestamp_ms: i64, key: &[u8], value: &[u8]) {
        self.encode(timestamp_ms, key, value, 0, |_| {}, 0);
    }

    /// Emits a record with headers (at most 64).
    pub fn emit_with_headers(
        &mut self,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) {
        if headers.len() as u64 > RECORD_HEADERS_MAX {
            self.fail(format!("a record with {} headers (at most 64)", headers.len()));
            return;
        }
        self.encode(
            timestamp_ms,
            key,
            value,
            headers.len() as u64,
            |buf| put_headers(buf, headers),
            headers_len(headers),
        );
    }

    /// Copies `record` unchanged. A record of the batch being processed is copied byte for
    /// byte; one from an earlier batch (kept in state) is re-encoded with the same fields.
    pub fn pass(&mut self, record: &Record<'_>) {
        if record.batch_first_timestamp_ms() == self.first_timestamp_ms {
            if self.admit(record.encoded().len()) {
                self.buf.extend_from_slice(record.encoded());
                self.count += 1;
            }
        } else {
            self.pass_with_value(record, record.value);
        }
    }

    /// Emits `record`'s time, key and headers with a new value: what a map produces.
    pub fn pass_with_value(&mut self, record: &Record<'_>, value: &[u8]) {
        let raw_headers = record.encoded_headers();
        self.encode(
            record.timestamp_ms,
            record.key,
            value,
            u64::from(record.header_count()),
            |buf| buf.extend_from_slice(raw_headers),
            raw_headers.len(),
        );
    }

    /// Records emitted so far in this batch.
    pub fn len(&self) -> u32 {
        self.count
    }
    /// True when nothing was emitted in this batch.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The first event time of the input batch, which deltas are relative to.
    pub fn first_timestamp_ms(&self) -> i64 {
        self.first_timestamp_ms
    }
    /// The encoded records: what the result slot names after `silt_process`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// The first error an emit ran into in this batch, if any.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn fail(&mut self, what: alloc::string::String) {
        if self.error.is_none() {
            self.error = Some(Error::Output(what));
        }
    }

    /// Whether a record of `len` more bytes fits; records the error when it does not.
    fn admit(&mut self, len: usize) -> bool {
        if self.error.is_some() {
            return false;
        }
        if self.count >= OUTPUT_RECORDS_MAX {
            self.fail(format!("more than {OUTPUT_RECORDS_MAX} records from one batch"));
            return false;
        }
        if self.buf.len().saturating_add(len) > OUTPUT_BYTES_MAX {
            self.fail(format!("more than {OUTPUT_BYTES_MAX} bytes from one batch"));
            return false;
        }
        true
    }

    fn encode(
        &mut self,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
        header_count: u64,
        write_headers: impl FnOnce(&mut Vec<u8>),
        headers_len: usize,
    ) {
        let Some(delta) = timestamp_ms.checked_sub(self.first_timestamp_ms) else {
            let first = self.first_timestamp_ms;
            self.fail(format!("timestamp {timestamp_ms} ms is too far from the batch's first, {first} ms"));
            return;
        };
        let delta = varint::zigzag(delta);
        let body_len = body_len(delta, key, value, header_count, headers_len);
        let record_len = varint::len(body_len as u64).saturating_add(body_len);
        if !self.admit(record_len) {
            return;
        }
        self.buf.reserve(record_len);
        put_record(&mut self.buf, body_len, delta, key, value, header_count, write_headers);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{decode_output, BatchBuilder, OutputRecord};
    use crate::Batch;
    use alloc::vec;
    use proptest::prelude::*;

    type Rec = (i64, Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn rec() -> impl Strategy<Value = Rec> {
        (
            any::<i64>().prop_map(|t| t / 4),
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..5), proptest::collection::vec(any::<u8>(), 0..5)),
                0..3,
            ),
        )
    }

    fn emit_all(first: i64, records: &[Rec]) -> Output {
        let mut out = Output::new();
        out.reset(first);
        for (ts, key, value, headers) in records {
            let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            out.emit_with_headers(*ts, key, value, &headers);
        }
        out
    }

    proptest! {
        /// Whatever is emitted decodes back to the same records, with any first timestamp
        /// (deltas of either sign), and the bytes are a valid records section for silt-wire.
        #[test]
        fn emit_round_trips(first in any::<i64>().prop_map(|t| t / 4), records in proptest::collection::vec(rec(), 1..20)) {
            let out = emit_all(first, &records);
            prop_assert!(out.error().is_none());
            prop_assert_eq!(out.len() as usize, records.len());
            let decoded = decode_output(out.as_bytes(), first).unwrap();
            let want: Vec<OutputRecord> = records
                .iter()
                .map(|(ts, key, value, headers)| OutputRecord {
                    timestamp_ms: *ts,
                    key: key.clone(),
                    value: value.clone(),
                    headers: headers.clone(),
                })
                .collect();
            prop_assert_eq!(decoded, want);
            let wrapped = silt_wire::batch::from_records(first, out.as_bytes(), 0, 0).unwrap();
            let view = silt_wire::batch::BatchView::new(&wrapped).unwrap();
            prop_assert_eq!(view.records().count(), records.len());
        }

        /// Passing every record of a batch reproduces its records section byte for byte, and
        /// passing records of another batch re-encodes them to the same fields.
        #[test]
        fn pass_copies_records(records in proptest::collection::vec(rec(), 1..20), other_first in any::<i64>().prop_map(|t| t / 4)) {
            let mut builder = BatchBuilder::new(3);
            for (ts, key, value, headers) in &records {
                let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                builder.push(*ts, key, value, &headers);
            }
            let bytes = builder.build();
            let batch = Batch::new(&bytes).unwrap();
            let mut out = Output::new();
            out.reset(batch.first_timestamp_ms());
            for r in batch.records() {
                out.pass(&r);
            }
            prop_assert_eq!(out.as_bytes(), &bytes[crate::batch::HEADER_LEN..]);

            out.reset(other_first);
            for r in batch.records() {
                out.pass(&r);
            }
            let decoded = decode_output(out.as_bytes(), other_first).unwrap();
            for (d, r) in decoded.iter().zip(batch.records()) {
                prop_assert_eq!(d.timestamp_ms, r.timestamp_ms);
                prop_assert_eq!(&d.key[..], r.key);
                prop_assert_eq!(&d.value[..], r.value);
                prop_assert_eq!(d.headers.len(), r.headers().count());
            }
        }
    }

    /// A record before the batch's first event time gets a negative delta (zigzag odd), and
    /// one after it a positive delta; both decode back.
    #[test]
    fn negative_and_positive_deltas() {
        let mut out = Output::new();
        out.reset(60_000);
        out.emit(0, b"k", b"window start");
        out.emit(60_001, b"k", b"later");
        // Second byte of each record is the zigzag delta: -60000 -> 119999 (three bytes).
        let bytes = out.as_bytes();
        let (zz, _) = varint::decode(&bytes[1..]).unwrap();
        assert_eq!(varint::unzigzag(zz), -60_000);
        let decoded = decode_output(bytes, 60_000).unwrap();
        assert_eq!(decoded[0].timestamp_ms, 0);
        assert_eq!(decoded[1].timestamp_ms, 60_001);
    }

    /// A timestamp whose delta does not fit an i64 fails the batch instead of wrapping.
    #[test]
    fn unrepresentable_delta_is_an_error() {
        let mut out = Output::new();
        out.reset(i64::MAX);
        out.emit(-2, b"", b"");
        assert!(matches!(out.error(), Some(Error::Output(_))));
        assert!(out.is_empty());
        out.emit(i64::MAX, b"", b"");
        assert!(out.is_empty(), "nothing is appended after an error");
        out.reset(0);
        assert!(out.error().is_none());
    }

    /// More than 64 headers is refused.
    #[test]
    fn too_many_headers() {
        let mut out = Output::new();
        out.reset(0);
        let headers = vec![(&b"h"[..], &b""[..]); 65];
        out.emit_with_headers(0, b"", b"", &headers);
        assert!(out.error().is_some());
    }

    /// The byte limit is checked before appending, so a runaway processor cannot grow the
    /// buffer past it.
    #[test]
    fn byte_limit() {
        let mut out = Output::new();
        out.reset(0);
        let big = vec![0u8; 1024 * 1024];
        for _ in 0..9 {
            out.emit(0, b"", &big);
        }
        assert!(out.as_bytes().len() <= OUTPUT_BYTES_MAX);
        assert_eq!(out.len(), 7);
        assert!(out.error().is_some());
    }
}
