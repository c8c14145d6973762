//! Running processors natively, in `cargo test`, through the same [`Guest`] the wasm exports
//! drive: parameters are encoded as the host encodes them, batches are real version-1 batches
//! (CRC-32C checksums included, stamped with offsets), and output is decoded and checked as
//! the host checks it (fields inside each record, at most 64 headers, records ending exactly
//! at the end, the per-batch limits).
//!
//! ```
//! use silt_processor::testing::Harness;
//! # use silt_processor::{Batch, Error, Output, Params, Processor};
//! # struct Upper;
//! # impl Processor for Upper {
//! #     fn init(_: &Params<'_>) -> Result<Self, Error> { Ok(Upper) }
//! #     fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
//! #         for r in batch.records() { out.emit(r.timestamp_ms, r.key, &r.value.to_ascii_uppercase()); }
//! #         Ok(())
//! #     }
//! # }
//! let mut h = Harness::<Upper>::new(&[]).unwrap();
//! let out = h.process(&[(5, "k", "abc")]).unwrap();
//! assert_eq!(out[0].value_str(), "ABC");
//! ```
//!
//! Helpers here panic with a message on misuse (an empty batch, say): they are for tests.

use alloc::string::String;
use alloc::vec::Vec;

use silt_wire::batch::record::{self, RecordIter};

use crate::batch::{malformed, HEADER_LEN};
use crate::output::{OUTPUT_BYTES_MAX, OUTPUT_RECORDS_MAX};
use crate::{json, params, Batch, Error, Guest, Output, Processor, Stateful};

/// CRC-32C (Castagnoli, reflected), as `docs/record-batch.md` specifies: silt-wire's, the
/// function the broker checks batches with.
pub use silt_wire::crc::crc32c;

/// Builds a stamped, uncompressed version-1 batch, as the host would pass it.
#[derive(Debug)]
pub struct BatchBuilder {
    base_offset: u64,
    append_time_ms: Option<i64>,
    producer_id: u64,
    sequence: u64,
    records: Output,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    /// An empty batch whose first record will have offset `base_offset`.
    pub fn new(base_offset: u64) -> Self {
        BatchBuilder {
            base_offset,
            append_time_ms: None,
            producer_id: 0,
            sequence: 0,
            records: Output::new(),
            max_timestamp_ms: i64::MIN,
        }
    }

    /// Sets the broker's append time (default: the largest event time).
    pub fn append_time_ms(mut self, append_time_ms: i64) -> Self {
        self.append_time_ms = Some(append_time_ms);
        self
    }

    /// Sets the producer id and sequence (default 0, 0).
    pub fn producer(mut self, producer_id: u64, sequence: u64) -> Self {
        self.producer_id = producer_id;
        self.sequence = sequence;
        self
    }

    /// Adds a record without headers.
    pub fn record(mut self, timestamp_ms: i64, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.push::<&[u8], &[u8]>(timestamp_ms, key.as_ref(), value.as_ref(), &[]);
        self
    }

    /// Adds a record with headers.
    pub fn record_with_headers<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        mut self,
        timestamp_ms: i64,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        headers: &[(N, V)],
    ) -> Self {
        self.push(timestamp_ms, key.as_ref(), value.as_ref(), headers);
        self
    }

    /// Adds a record, by reference (for loops).
    pub fn push<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
        headers: &[(N, V)],
    ) {
        if self.records.is_empty() {
            self.records.reset(timestamp_ms);
        }
        let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
        self.records.emit_with_headers(timestamp_ms, key, value, &headers);
        if let Some(e) = self.records.error() {
            panic!("BatchBuilder: {e}");
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
    }

    /// Number of records so far.
    pub fn len(&self) -> u32 {
        self.records.len()
    }
    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The finished batch: header fields, both checksums and the records.
    pub fn build(&self) -> Vec<u8> {
        assert!(!self.records.is_empty(), "a batch holds at least one record");
        let records = self.records.as_bytes();
        let len = u32::try_from(HEADER_LEN + records.len()).expect("test batch under 4 GiB");
        let mut b = Vec::with_capacity(len as usize);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[crate::batch::BATCH_VERSION, 0, 0, 0]);
        b.extend_from_slice(&self.base_offset.to_le_bytes());
        b.extend_from_slice(&self.append_time_ms.unwrap_or(self.max_timestamp_ms).to_le_bytes());
        b.extend_from_slice(&[0; 8]); // header_crc and body_crc, filled in below
        b.extend_from_slice(&self.producer_id.to_le_bytes());
        b.extend_from_slice(&self.sequence.to_le_bytes());
        b.extend_from_slice(&self.records.len().to_le_bytes());
        b.extend_from_slice(&self.records.first_timestamp_ms().to_le_bytes());
        b.extend_from_slice(&self.max_timestamp_ms.to_le_bytes());
        b.extend_from_slice(records);
        let header_crc = crc32c(&b[..24]);
        b[24..28].copy_from_slice(&header_crc.to_le_bytes());
        let body_crc = crc32c(&b[32..]);
        b[28..32].copy_from_slice(&body_crc.to_le_bytes());
        b
    }
}

/// A batch of `(timestamp_ms, key, value)` records starting at `base_offset`.
pub fn batch<K: AsRef<[u8]>, V: AsRef<[u8]>>(base_offset: u64, records: &[(i64, K, V)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(base_offset);
    for (ts, key, value) in records {
        builder.push::<&[u8], &[u8]>(*ts, key.as_ref(), value.as_ref(), &[]);
    }
    builder.build()
}

/// One output record, decoded and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Event time: the input batch's first timestamp plus the record's delta.
    pub timestamp_ms: i64,
    /// Key bytes; empty means none.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// `(name, value)` headers in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OutputRecord {
    /// The key as UTF-8; panics when it is not.
    pub fn key_str(&self) -> &str {
        core::str::from_utf8(&self.key).expect("output key is UTF-8")
    }
    /// The value as UTF-8; panics when it is not.
    pub fn value_str(&self) -> &str {
        core::str::from_utf8(&self.value).expect("output value is UTF-8")
    }
    /// Top-level numeric field `name` of a JSON value.
    pub fn number(&self, name: &str) -> Option<f64> {
        json::number(&self.value, name)
    }
    /// Top-level string field `name` of a JSON value, unescaped.
    pub fn string(&self, name: &str) -> Option<String> {
        json::string(&self.value, name).map(|s| s.chars().collect())
    }
}

/// Decodes a processor's output as the host checks it, with deltas relative to
/// `first_timestamp_ms` (the input batch's).
pub fn decode_output(bytes: &[u8], first_timestamp_ms: i64) -> Result<Vec<OutputRecord>, Error> {
    if bytes.len() > OUTPUT_BYTES_MAX {
        return Err(Error::Output(alloc::format!("{} bytes is over the limit", bytes.len())));
    }
    let scan = record::scan(bytes, OUTPUT_RECORDS_MAX, first_timestamp_ms).map_err(|m| malformed(m.0))?;
    if !scan.rest.is_empty() {
        return Err(Error::Output(alloc::format!("more than {OUTPUT_RECORDS_MAX} records")));
    }
    let records = RecordIter::new(bytes, 0, scan.count, first_timestamp_ms).map(|r| OutputRecord {
        timestamp_ms: r.timestamp_ms,
        key: r.key.to_vec(),
        value: r.value.to_vec(),
        headers: r.headers().map(|(name, value)| (name.to_vec(), value.to_vec())).collect(),
    });
    Ok(records.collect())
}

/// Runs one processor instance the way the host does: `init` with encoded parameters, then
/// batches with consecutive offsets, snapshots, and restarts from a snapshot.
pub struct Harness<P> {
    guest: Guest<P>,
    params: Vec<u8>,
    next_offset: u64,
}

impl<P> core::fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Harness").field("next_offset", &self.next_offset).finish_non_exhaustive()
    }
}

impl<P: Processor> Harness<P> {
    /// Initialises the processor with `params` (any order; encoded sorted, as the host does).
    pub fn new(params: &[(&str, &str)]) -> Result<Self, Error> {
        let params = params::encode(params)?;
        let mut guest = Guest::new();
        guest.init(&params)?;
        Ok(Harness { guest, params, next_offset: 0 })
    }

    /// Processes one batch of `(timestamp_ms, key, value)` records (at least one), with
    /// offsets following the previous batch's.
    pub fn process<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        records: &[(i64, K, V)],
    ) -> Result<Vec<OutputRecord>, Error> {
        let bytes = batch(self.next_offset, records);
        self.process_batch(&bytes)
    }

    /// Processes a ready batch (see [`BatchBuilder`]).
    pub fn process_batch(&mut self, batch: &[u8]) -> Result<Vec<OutputRecord>, Error> {
        let view = Batch::new(batch)?;
        self.next_offset = view.base_offset() + u64::from(view.record_count());
        let first = view.first_timestamp_ms();
        let out = self.guest.process(batch)?;
        decode_output(out, first)
    }

    /// Processes a ready batch and returns the raw output bytes, as the result slot names them.
    pub fn process_raw(&mut self, batch: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.guest.process(batch)?.to_vec())
    }

    /// `silt_counters`, decoded: `(name, value)` in the order the processor set them.
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, Error> {
        let block = self.guest.counters()?;
        Ok(crate::counters::decode(block)?.into_iter().map(|(n, v)| (String::from(n), v)).collect())
    }

    /// The processor, to inspect its state.
    pub fn processor(&self) -> &P {
        self.guest.processor().expect("initialised in new")
    }
}

impl<P: Stateful> Harness<P> {
    /// `silt_snapshot`.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
        Ok(self.guest.snapshot()?.to_vec())
    }

    /// `silt_restore` into this instance.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), Error> {
        self.guest.restore(state)
    }

    /// What a restart does: snapshot, then a fresh instance initialised with the same
    /// parameters and restored from that snapshot. Also checks that the fresh instance
    /// snapshots to the same bytes, which is what "leaves the module as it was" can be tested
    /// by from outside.
    pub fn restart(&mut self) -> Result<(), Error> {
        let state = self.snapshot()?;
        let mut fresh = Guest::new();
        fresh.init(&self.params)?;
        fresh.restore(&state)?;
        let again = fresh.snapshot()?.to_vec();
        assert_eq!(again, state, "a restored instance snapshots to the bytes it was restored from");
        self.guest = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table-driven CRC-32C matches the standard check value and the `crc32c` crate's
    /// answers via silt-wire.
    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// Batches built here pass silt-wire's full validation (checksums included), and
    /// silt-wire reads the same records.
    #[test]
    fn batches_are_valid_for_silt_wire() {
        let bytes = BatchBuilder::new(1_000)
            .append_time_ms(77)
            .producer(5, 9)
            .record(100, "k1", "v1")
            .record_with_headers(50, "", "v2", &[("h", "x")])
            .record(200, "k3", "")
            .build();
        let view = silt_wire::batch::BatchView::new(&bytes).unwrap();
        assert!(silt_wire::batch::BatchView::checked(&bytes).is_ok(), "header checksum");
        assert_eq!(view.base_offset(), 1_000);
        assert_eq!(view.append_time_ms(), 77);
        assert_eq!((view.producer_id(), view.sequence()), (5, 9));
        assert_eq!(view.max_timestamp_ms(), 200);
        let ours = Batch::new(&bytes).unwrap();
        for (w, o) in view.records().zip(ours.records()) {
            assert_eq!(
                (w.offset, w.timestamp_ms, w.key, w.value),
                (o.offset, o.timestamp_ms, o.key, o.value)
            );
            assert!(w.headers().eq(o.headers()));
        }
    }

    /// Batches silt-wire builds are read the same way here.
    #[test]
    fn reads_silt_wire_batches() {
        let mut b = silt_wire::batch::BatchBuilder::default();
        b.push(10, b"a", b"1", &[]).unwrap();
        b.push(-5, b"", b"2", &[(b"n", b"v")]).unwrap();
        let mut bytes = b.finish(0, 0);
        silt_wire::batch::stamp(&mut bytes, 42, 7);
        let batch = Batch::new(&bytes).unwrap();
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records[1].offset, 43);
        assert_eq!(records[1].timestamp_ms, -5);
        assert_eq!(records[1].header(b"n"), Some(&b"v"[..]));
    }
}
