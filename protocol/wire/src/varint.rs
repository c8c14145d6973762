//! LEB128 unsigned varints and the zigzag mapping for signed values, as `docs/record-batch.md`
//! specifies them. `no_std`: the guest SDK encodes and decodes with these too.

use alloc::vec::Vec;

/// Longest encoding of a `u64`.
pub const LEN_MAX: usize = 10;

/// Appends `v` as LEB128.
pub fn encode(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encoded length of `v`, in bytes.
pub fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Why a varint did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes ended inside the varint.
    Truncated,
    /// More than ten bytes, or a value above `u64::MAX`.
    Overflow,
}

/// Decodes one varint at the start of `buf`, returning the value and the bytes it used.
/// Rejects encodings longer than ten bytes or overflowing 64 bits.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(LEN_MAX) {
        if i == LEN_MAX - 1 && b > 1 {
            return Err(VarintError::Overflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= LEN_MAX {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
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
            prop_assert_eq!(decode(&out), Ok((v, out.len())));
        }

        /// Zigzag is a bijection on i64.
        #[test]
        fn zigzag_round_trip(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        /// Arbitrary bytes never panic the decoder, and a decoded length is within the input.
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((_, n)) = decode(&b) {
                prop_assert!(n <= b.len());
            }
        }
    }

    /// The edges: an empty buffer is truncated, eleven continuation bytes overflow, and the
    /// tenth byte may only carry the top bit of a u64.
    #[test]
    fn edges() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80; 11]), Err(VarintError::Overflow));
        let mut max = Vec::new();
        encode(u64::MAX, &mut max);
        assert_eq!(max.len(), LEN_MAX);
        assert_eq!(decode(&max), Ok((u64::MAX, LEN_MAX)));
        *max.last_mut().unwrap() = 2;
        assert_eq!(decode(&max), Err(VarintError::Overflow));
    }
}
