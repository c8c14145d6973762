//! Batches for the tests of this module's parts: records as plain tuples, a proptest strategy
//! for them, and a builder of finished batches.

use proptest::prelude::*;

use super::BatchBuilder;

/// `(timestamp_ms, key, value, headers)`.
pub(super) type Rec = (i64, Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// A finished, unstamped batch of `records` for producer 7, sequence 3.
pub(super) fn build(records: &[Rec]) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for (ts, k, v, h) in records {
        let h: Vec<(&[u8], &[u8])> = h.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        b.push(*ts, k, v, &h).unwrap();
    }
    b.finish(7, 3)
}

/// Any record: timestamps around the present, short keys, values up to 300 bytes, a few headers.
pub(super) fn rec() -> impl Strategy<Value = Rec> {
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
