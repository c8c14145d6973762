//! CRC-32C (Castagnoli, reflected), the checksum of `docs/record-batch.md`.
//!
//! With `std` it is the `crc32c` crate's (hardware instructions where the CPU has them);
//! without, a table-driven loop in `const` data, so a microcontroller or a processor module can
//! build and check batches with the same function the broker's tests compare against.

/// CRC-32C of `bytes`.
#[cfg(feature = "std")]
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC-32C of `bytes`.
#[cfg(not(feature = "std"))]
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    by_table(bytes)
}

/// CRC-32C one byte at a time through a 256-entry table (1 KiB of read-only data).
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn by_table(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The standard check value, and the empty input.
    #[test]
    fn check_value() {
        assert_eq!(by_table(b"123456789"), 0xe306_9283);
        assert_eq!(by_table(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    proptest! {
        /// The table gives what the function the broker uses gives, for any bytes.
        #[test]
        fn table_matches_crc32c(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(by_table(&bytes), crc32c(&bytes));
        }
    }
}
