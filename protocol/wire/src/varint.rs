//! LEB128 unsigned varints and zigzag mapping for signed values.

use crate::WireError;

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Appends `v` as LEB128.
pub fn encode(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encoded length of `v`.
pub fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes one varint, returning the value and the bytes it used. Rejects encodings longer than
/// ten bytes or overflowing 64 bits.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_LEN) {
        let part = u64::from(b & 0x7f);
        if i == MAX_LEN - 1 && b > 1 {
            return Err(WireError::Invalid { what: "varint overflows 64 bits" });
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= MAX_LEN {
        Err(WireError::Invalid { what: "varint longer than 10 bytes" })
    } else {
        Err(WireError::Truncated { what: "varint" })
    }
}

/// Maps signed to unsigned so that small magnitudes stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every u64 survives encode/decode, and `len` predicts the encoded size.
        #[test]
        fn round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            encode(v, &mut out);
            prop_assert_eq!(out.len(), len(v));
            prop_assert_eq!(decode(&out).unwrap(), (v, out.len()));
        }

        /// Zigzag is a bijection on i64.
        #[test]
        fn zigzag_round_trip(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = decode(&b);
        }
    }
}
