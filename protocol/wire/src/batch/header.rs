//! The 68-byte batch header: where each field sits, reading the fields, checking the framing
//! they describe, the checksums, and the fields the broker stamps.

use super::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, BATCH_VERSION, HEADER_LEN};
use crate::WireError;

/// `length` (u32): total bytes of the batch, this field included.
pub const OFF_LENGTH: usize = 0;
/// `version` (u8): [`BATCH_VERSION`].
pub const OFF_VERSION: usize = 4;
/// `attributes` (u8): bits 0-2 name the codec of the records section, the rest are zero.
pub const OFF_ATTRIBUTES: usize = 5;
/// `reserved` (u16): zero.
pub const OFF_RESERVED: usize = 6;
/// `base_offset` (u64), stamped by the broker.
pub const OFF_BASE_OFFSET: usize = 8;
/// `append_time_ms` (i64), stamped by the broker.
pub const OFF_APPEND_TIME: usize = 16;
/// `header_crc` (u32): CRC-32C of the bytes before it, stamped by the broker.
pub const OFF_HEADER_CRC: usize = 24;
/// `body_crc` (u32): CRC-32C of everything from the producer id to the end.
pub const OFF_BODY_CRC: usize = 28;
/// `producer_id` (u64).
pub const OFF_PRODUCER_ID: usize = 32;
/// `sequence` (u64).
pub const OFF_SEQUENCE: usize = 40;
/// `record_count` (u32).
pub const OFF_RECORD_COUNT: usize = 48;
/// `first_timestamp_ms` (i64).
pub const OFF_FIRST_TS: usize = 52;
/// `max_timestamp_ms` (i64).
pub const OFF_MAX_TS: usize = 60;

/// Attribute bits 0-2 name the codec of the records section.
pub(super) const ATTR_COMPRESSION_MASK: u8 = 0b111;
pub(super) const CODEC_LZ4: u8 = 1;
/// The body checksum covers everything from the producer id to the end.
const BODY_START: usize = OFF_PRODUCER_ID;

/// The `N` bytes at `at`. Callers read header fields of buffers already checked to hold a
/// whole header.
#[inline]
fn le_bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}
#[inline]
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(le_bytes(b, at))
}
#[inline]
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(le_bytes(b, at))
}
#[inline]
pub(super) fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(le_bytes(b, at))
}

/// Checks what the header says about the batch's framing: a whole header, version, a length
/// field equal to the size and within [`BATCH_BYTES_MAX`], reserved bytes and attribute bits,
/// a known codec. Never panics.
pub(super) fn check_framing(bytes: &[u8]) -> Result<(), WireError> {
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

/// The record count of a framed batch, refused when it is 0 or above [`BATCH_RECORDS_MAX`].
pub(super) fn check_record_count(bytes: &[u8]) -> Result<u32, WireError> {
    let count = u32_at(bytes, OFF_RECORD_COUNT);
    if count == 0 {
        return Err(WireError::Invalid { what: "batch has no records" });
    }
    if count > BATCH_RECORDS_MAX {
        return Err(WireError::Invalid { what: "batch has too many records" });
    }
    Ok(count)
}

/// True when the records section of a framed batch is compressed.
#[inline]
pub(super) fn is_compressed(bytes: &[u8]) -> bool {
    bytes[OFF_ATTRIBUTES] & ATTR_COMPRESSION_MASK != 0
}

/// Reads the header fields a router needs without validating the body: `(record_count,
/// producer_id, sequence, max_timestamp_ms)`. Call only on bytes that passed
/// [`validate`](super::validate).
pub fn peek_header(bytes: &[u8]) -> (u32, u64, u64, i64) {
    (
        u32_at(bytes, OFF_RECORD_COUNT),
        u64_at(bytes, OFF_PRODUCER_ID),
        u64_at(bytes, OFF_SEQUENCE),
        i64_at(bytes, OFF_MAX_TS),
    )
}

/// The producer id of a framed batch, read before any validation (0, no producer, when the
/// bytes are too short to hold a header; validation refuses those).
pub fn peek_producer(bytes: &[u8]) -> u64 {
    match bytes.get(OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => 0,
    }
}

/// crc32c (Castagnoli) of bytes 0..24: length, version, attributes and the stamped fields.
pub fn header_crc(bytes: &[u8]) -> u32 {
    crate::crc::crc32c(&bytes[..OFF_HEADER_CRC])
}

/// crc32c of everything from the producer id to the end of the batch.
pub fn body_crc(bytes: &[u8]) -> u32 {
    crate::crc::crc32c(&bytes[BODY_START..])
}

/// Writes `value` at `at`, little-endian.
pub(super) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Writes `value` at `at`, little-endian.
pub(super) fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Recomputes the body checksum after a change to the body.
pub(super) fn seal_body(bytes: &mut [u8]) {
    let crc = body_crc(bytes);
    put_u32(bytes, OFF_BODY_CRC, crc);
}

/// Writes the broker-owned fields (base offset, append time) and the header checksum.
/// The body is untouched, so the body checksum the producer computed stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: u64, append_time_ms: i64) {
    assert!(bytes.len() >= HEADER_LEN, "stamp needs a whole header");
    put_u64(bytes, OFF_BASE_OFFSET, base_offset);
    put_u64(bytes, OFF_APPEND_TIME, append_time_ms as u64);
    let crc = header_crc(bytes);
    put_u32(bytes, OFF_HEADER_CRC, crc);
}

/// Rewrites the producer id and sequence of a finished batch and fixes its body checksum.
/// The client uses it to assign sequences at send time rather than at build time.
pub fn set_producer(bytes: &mut [u8], producer_id: u64, sequence: u64) {
    assert!(bytes.len() >= HEADER_LEN);
    put_u64(bytes, OFF_PRODUCER_ID, producer_id);
    put_u64(bytes, OFF_SEQUENCE, sequence);
    seal_body(bytes);
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::super::samples::build;
    use super::super::BatchView;
    use super::*;

    #[test]
    fn header_crc_detects_a_bad_stamp() {
        let mut bytes = build(&[(5, b"k".to_vec(), b"v".to_vec(), vec![])]);
        stamp(&mut bytes, 10, 20);
        bytes[OFF_BASE_OFFSET] ^= 1;
        assert!(matches!(BatchView::checked(&bytes), Err(WireError::Checksum { .. })));
    }

    #[test]
    fn set_producer_keeps_the_batch_valid() {
        let mut bytes = build(&[(5, b"k".to_vec(), b"v".to_vec(), vec![])]);
        set_producer(&mut bytes, 99, 100);
        let v = BatchView::new(&bytes).unwrap();
        assert_eq!((v.producer_id(), v.sequence()), (99, 100));
    }
}
