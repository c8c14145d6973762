//! The input batch, read in place: `docs/record-batch.md`, version 1, uncompressed.
//!
//! [`Batch::new`] checks the header and the framing of every record once (a few varints per
//! record, no checksums: the host verified those), so iterating [`Batch::records`] afterwards
//! cannot fail and never copies. The reading is silt-wire's `no_std` core, the same code the
//! broker validates batches with; this module adds the guest's error type.

use core::ops::Deref;

use silt_wire::batch::BatchView;
pub use silt_wire::batch::{
    HeaderIter as Headers, Record, RecordIter as Records, BATCH_RECORDS_MAX, BATCH_VERSION, HEADER_LEN,
    RECORD_HEADERS_MAX,
};

use crate::Error;

/// One input batch. Cheap to copy: it is a slice. Its header fields and
/// [`records`](BatchView::records) are [`BatchView`]'s.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    view: BatchView<'a>,
}

impl<'a> Batch<'a> {
    /// Checks that `bytes` is one uncompressed version-1 batch whose records are framed as the
    /// format says, and wraps it. Checksums are not checked.
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        match BatchView::without_checksums(bytes) {
            Ok(view) => Ok(Batch { view }),
            Err(e) => Err(malformed(e.what())),
        }
    }
}

impl<'a> Deref for Batch<'a> {
    type Target = BatchView<'a>;

    fn deref(&self) -> &BatchView<'a> {
        &self.view
    }
}

/// The error for a framing fault; out of line, since valid batches never get here.
#[cold]
#[inline(never)]
pub(crate) fn malformed(what: &'static str) -> Error {
    Error::MalformedBatch { what }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use silt_wire::batch::header::{OFF_ATTRIBUTES, OFF_LENGTH, OFF_RECORD_COUNT, OFF_VERSION};

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
