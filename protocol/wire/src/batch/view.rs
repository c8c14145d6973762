//! Reading a batch: [`BatchView`] over checked bytes, [`validate`] for bytes from outside, and
//! [`split_batches`] for a fetch response's concatenated batches.

#[cfg(feature = "std")]
use super::header::{body_crc, header_crc, OFF_BODY_CRC, OFF_HEADER_CRC};
use super::header::{
    check_framing, check_record_count, i64_at, is_compressed, u32_at, u64_at, OFF_APPEND_TIME,
    OFF_BASE_OFFSET, OFF_FIRST_TS, OFF_MAX_TS, OFF_PRODUCER_ID, OFF_RECORD_COUNT, OFF_SEQUENCE,
};
use super::record::{self, RecordIter};
use super::HEADER_LEN;
use crate::WireError;

/// A read-only view of one batch whose framing and records were checked, and whose checksums
/// were checked here or by whoever handed the bytes over.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validates `bytes` as exactly one batch (see [`validate`]) and returns a view of it.
    #[cfg(feature = "std")]
    pub fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
        validate(bytes)?;
        Ok(BatchView { bytes })
    }

    /// Wraps bytes that were validated before (for example when they were appended) after a
    /// cheap check of both checksums. Storage uses this on every read.
    #[cfg(feature = "std")]
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

    /// Wraps an uncompressed batch whose checksums someone else verified (a processor's host
    /// validated the batch before passing it in): checks all that [`validate`] checks except the
    /// checksums, and refuses a compressed batch, whose records cannot be read in place. Needs
    /// no `std`.
    pub fn without_checksums(bytes: &'a [u8]) -> Result<Self, WireError> {
        check_framing(bytes)?;
        if is_compressed(bytes) {
            return Err(WireError::Invalid {
                what: "compressed records section (decompress the batch first)",
            });
        }
        let count = check_record_count(bytes)?;
        check_records(&bytes[HEADER_LEN..], count, bytes)?;
        Ok(BatchView { bytes })
    }

    /// The whole batch, header included: what is stored and sent.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Offset of the first record; record `i` has offset `base_offset + i`.
    #[inline]
    pub fn base_offset(&self) -> u64 {
        u64_at(self.bytes, OFF_BASE_OFFSET)
    }
    /// Offset one past the last record.
    #[inline]
    pub fn next_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count())
    }
    /// Broker time of the append, milliseconds since the Unix epoch. Not an event time.
    #[inline]
    pub fn append_time_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_APPEND_TIME)
    }
    /// Idempotent producer id, 0 when the producer is not idempotent.
    #[inline]
    pub fn producer_id(&self) -> u64 {
        u64_at(self.bytes, OFF_PRODUCER_ID)
    }
    /// Producer-assigned batch sequence number, per partition.
    #[inline]
    pub fn sequence(&self) -> u64 {
        u64_at(self.bytes, OFF_SEQUENCE)
    }
    /// Number of records, at least 1.
    #[inline]
    pub fn record_count(&self) -> u32 {
        u32_at(self.bytes, OFF_RECORD_COUNT)
    }
    /// Event time of the first record; the records' (and a processor's output's) timestamp
    /// deltas are relative to it.
    #[inline]
    pub fn first_timestamp_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_FIRST_TS)
    }
    /// Largest event time in the batch.
    #[inline]
    pub fn max_timestamp_ms(&self) -> i64 {
        i64_at(self.bytes, OFF_MAX_TS)
    }
    /// True when the records section is LZ4-compressed; read such a batch through
    /// [`decompress`](super::decompress) first.
    #[inline]
    pub fn is_compressed(&self) -> bool {
        is_compressed(self.bytes)
    }
    /// Iterates the records in offset order. The batch must not be compressed (see
    /// [`decompress`](super::decompress)).
    #[inline]
    pub fn records(&self) -> RecordIter<'a> {
        assert!(!self.is_compressed(), "records() of a compressed batch: call batch::decompress first");
        let records = self.bytes.get(HEADER_LEN..).unwrap_or(&[]);
        RecordIter::new(records, self.base_offset(), self.record_count(), self.first_timestamp_ms())
    }
}

/// Checks that the (uncompressed) records section of the batch `header` holds exactly `count`
/// well-framed records and that the header's max timestamp is theirs.
fn check_records(records: &[u8], count: u32, header: &[u8]) -> Result<(), WireError> {
    let scan = record::scan(records, count, i64_at(header, OFF_FIRST_TS))?;
    if scan.count < count {
        return Err(WireError::Invalid { what: "record count: the batch holds fewer records" });
    }
    if !scan.rest.is_empty() {
        return Err(WireError::Invalid { what: "bytes after the last record" });
    }
    if scan.max_timestamp_ms != i64_at(header, OFF_MAX_TS) {
        return Err(WireError::Invalid { what: "max timestamp does not match the records" });
    }
    Ok(())
}

/// Checks that `bytes` is exactly one well-formed batch: length, version, attributes, body
/// checksum, record count, and every record inside its bounds. Never panics on any input.
#[cfg(feature = "std")]
pub fn validate(bytes: &[u8]) -> Result<(), WireError> {
    check_framing(bytes)?;
    if body_crc(bytes) != u32_at(bytes, OFF_BODY_CRC) {
        return Err(WireError::Checksum { what: "batch body" });
    }
    let count = check_record_count(bytes)?;
    let records = super::compression::records_section(bytes)?;
    check_records(&records, count, bytes)
}

/// Splits a buffer of concatenated batches (a fetch response) into checked views.
#[cfg(feature = "std")]
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

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::super::samples::{build, rec};
    use super::super::stamp;
    use super::*;
    use proptest::prelude::*;

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
            let trusted = BatchView::without_checksums(&bytes).unwrap();
            prop_assert!(trusted.records().eq(view.records()));
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
            if let Ok(view) = BatchView::without_checksums(&bytes) {
                prop_assert_eq!(view.records().count(), view.record_count() as usize);
            }
            let good = build(&[(1, vec![], b"x".to_vec(), vec![])]);
            let _ = validate(&good[..cut.index(good.len())]);
            for b in split_batches(&bytes) { let _ = b; }
        }
    }
}
