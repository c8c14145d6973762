//! LZ4 compression of the records section: choosing it ([`Compression`]), compressing a
//! finished batch ([`compress`]), and reading compressed batches ([`decompress`],
//! [`decompress_all`]). The header stays uncompressed, so routing and stamping never
//! decompress.

use std::borrow::Cow;

use super::header::{
    check_framing, header_crc, is_compressed, put_u32, seal_body, u32_at, u64_at, ATTR_COMPRESSION_MASK,
    CODEC_LZ4, OFF_ATTRIBUTES, OFF_HEADER_CRC, OFF_LENGTH, OFF_PRODUCER_ID, OFF_SEQUENCE,
};
use super::view::split_batches;
use super::{BatchBuilder, BATCH_BYTES_MAX, HEADER_LEN};
use crate::WireError;

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

/// A batch whose records section is `raw` compressed, its header zero but for the attributes
/// and the uncompressed size after it; `None` when compressing would not save at least an
/// eighth, as random payloads are not worth the reader's decompression.
pub(super) fn compress_section(raw: &[u8]) -> Option<Vec<u8>> {
    let bound = lz4_flex::block::get_maximum_output_size(raw.len());
    let mut out = vec![0u8; HEADER_LEN + 4 + bound];
    let n =
        lz4_flex::block::compress_into(raw, &mut out[HEADER_LEN + 4..]).expect("output sized by the bound");
    if HEADER_LEN + 4 + n + raw.len() / 8 > HEADER_LEN + raw.len() {
        return None;
    }
    out.truncate(HEADER_LEN + 4 + n);
    put_u32(&mut out, HEADER_LEN, raw.len() as u32);
    out[OFF_ATTRIBUTES] = CODEC_LZ4;
    Some(out)
}

/// The records section of a framed batch, decompressed when needed. The declared
/// uncompressed size is checked against [`BATCH_BYTES_MAX`] before anything is allocated.
pub(super) fn records_section(bytes: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    if !is_compressed(bytes) {
        return Ok(Cow::Borrowed(&bytes[HEADER_LEN..]));
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
    Ok(Cow::Owned(out))
}

/// The batch with its records section decompressed: borrowed as it is when it was not
/// compressed, else a copy with attributes 0 and both checksums recomputed, so that
/// [`BatchView::checked`](super::BatchView::checked) and
/// [`BatchView::records`](super::BatchView::records) work on it. Base offset, append time,
/// producer, sequence, counts and timestamps are unchanged.
pub fn decompress(bytes: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    check_framing(bytes)?;
    if !is_compressed(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let records = records_section(bytes)?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&bytes[..HEADER_LEN]);
    out.extend_from_slice(&records);
    let len = u32::try_from(out.len()).map_err(|_| WireError::Invalid { what: "batch length" })?;
    put_u32(&mut out, OFF_LENGTH, len);
    out[OFF_ATTRIBUTES] &= !ATTR_COMPRESSION_MASK;
    seal_body(&mut out);
    if u32_at(bytes, OFF_HEADER_CRC) != 0 {
        let crc = header_crc(&out);
        put_u32(&mut out, OFF_HEADER_CRC, crc);
    }
    Ok(Cow::Owned(out))
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

/// Compresses the records section of a finished, uncompressed batch (as from
/// [`from_records`](super::from_records)) the way [`BatchBuilder::finish_with`] does: only
/// when that saves at least an eighth. Header fields are kept; the body checksum is recomputed.
pub fn compress(batch: Vec<u8>, compression: Compression) -> Vec<u8> {
    assert!(batch.len() > HEADER_LEN && batch[OFF_ATTRIBUTES] == 0, "a finished, uncompressed batch");
    let (producer_id, sequence) = (u64_at(&batch, OFF_PRODUCER_ID), u64_at(&batch, OFF_SEQUENCE));
    BatchBuilder::from_finished(batch).finish_with(producer_id, sequence, compression)
}

#[cfg(test)]
mod tests {
    use super::super::samples::{rec, Rec};
    use super::super::{set_producer, stamp, validate, BatchView};
    use super::*;
    use proptest::prelude::*;

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
}
