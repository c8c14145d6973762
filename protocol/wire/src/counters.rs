//! The counters block: named totals a processor reports through the processor ABI's optional
//! `silt_counters` export (`docs/processor-abi.md`, "Counters"), such as the records it skipped
//! and why.
//!
//! ```text
//! u32 count                  (at most COUNTERS_MAX)
//! count times:
//!     u32 name_len           (1 to COUNTER_NAME_BYTES_MAX)
//!     name_len bytes of name ([a-z0-9_], unique in the block)
//!     u64 value
//! ```
//!
//! All integers little-endian; an empty block (no bytes at all) is no counters. Part of the
//! `no_std` core: the guest SDK (`silt-processor`) and the host (`silt-runtime`) read blocks with
//! this one [`decode`], so what a module's tests accept is what the broker accepts. It encodes
//! nothing: the SDK's `Counters` writes blocks, and a module in any other language writes them
//! from the ABI document.

use alloc::string::String;
use alloc::vec::Vec;

/// Most counters one block holds.
pub const COUNTERS_MAX: usize = 16;
/// Longest counter name, in bytes.
pub const COUNTER_NAME_BYTES_MAX: usize = 64;
/// Largest block read. The largest valid block is 4 + 16 * (4 + 64 + 8) = 1220 bytes; the
/// host checks a block's length against this before it copies anything out of a module.
pub const COUNTERS_BYTES_MAX: usize = 4096;

/// Bytes of the count, of a name's length and of a value.
const COUNT_LEN: usize = 4;
const NAME_LEN_LEN: usize = 4;
const VALUE_LEN: usize = 8;

/// Why bytes are not a counters block. Each variant says where, in bytes from the block's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountersError {
    #[error("counters block of {len} bytes is over the limit of {COUNTERS_BYTES_MAX} bytes")]
    TooLarge { len: usize },
    #[error("counters block cut short at byte {at}")]
    Truncated { at: usize },
    #[error("counters block holds {count} counters; at most {COUNTERS_MAX} are allowed")]
    TooMany { count: u32 },
    #[error("counter name at byte {at} is not 1 to {COUNTER_NAME_BYTES_MAX} bytes of [a-z0-9_]")]
    BadName { at: usize },
    #[error("counter {name:?} (at byte {at}) appears twice in the counters block")]
    Repeated { at: usize, name: String },
    #[error("counters block has bytes left over after its last counter, at byte {at}")]
    TrailingBytes { at: usize },
}

/// True for a name of 1 to [`COUNTER_NAME_BYTES_MAX`] bytes of `[a-z0-9_]`.
pub fn name_is_valid(name: &[u8]) -> bool {
    (1..=COUNTER_NAME_BYTES_MAX).contains(&name.len())
        && name.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Decodes a counters block: `(name, value)` pairs in the block's order, borrowed from
/// `bytes`. Every rule of the module docs is checked; nothing panics and nothing is allocated
/// beyond [`COUNTERS_MAX`] pairs, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Vec<(&str, u64)>, CountersError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() > COUNTERS_BYTES_MAX {
        return Err(CountersError::TooLarge { len: bytes.len() });
    }
    let mut at = 0;
    let count = u32::from_le_bytes(take::<COUNT_LEN>(bytes, &mut at)?);
    if count as usize > COUNTERS_MAX {
        return Err(CountersError::TooMany { count });
    }
    let mut out: Vec<(&str, u64)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_at = at;
        let len = u32::from_le_bytes(take::<NAME_LEN_LEN>(bytes, &mut at)?);
        // A length past the limit is refused before it is used as one, however many bytes follow.
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= COUNTER_NAME_BYTES_MAX)
            .ok_or(CountersError::BadName { at: name_at })?;
        let name = take_slice(bytes, &mut at, len)?;
        let name = match core::str::from_utf8(name) {
            Ok(name) if name_is_valid(name.as_bytes()) => name,
            _ => return Err(CountersError::BadName { at: name_at }),
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(CountersError::Repeated { at: name_at, name: name.into() });
        }
        let value = u64::from_le_bytes(take::<VALUE_LEN>(bytes, &mut at)?);
        out.push((name, value));
    }
    if at != bytes.len() {
        return Err(CountersError::TrailingBytes { at });
    }
    debug_assert!(out.len() <= COUNTERS_MAX);
    Ok(out)
}

/// The `len` bytes at `*at`, moving `*at` past them.
fn take_slice<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], CountersError> {
    let end = at.checked_add(len).ok_or(CountersError::Truncated { at: *at })?;
    let taken = bytes.get(*at..end).ok_or(CountersError::Truncated { at: *at })?;
    *at = end;
    Ok(taken)
}

/// The `N` bytes at `*at` as an array, moving `*at` past them.
fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], CountersError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take_slice(bytes, at, N)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use proptest::prelude::*;

    /// A block as the ABI lays it out, without any check (so tests can write bad ones).
    fn block(counters: &[(&[u8], u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(counters.len() as u32).to_le_bytes());
        for (name, value) in counters {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    #[test]
    fn decodes_blocks_and_refuses_each_broken_rule() {
        // Proves every rule of the format is checked, each with the byte it failed at.
        assert!(decode(b"").unwrap().is_empty());
        assert!(decode(&0u32.to_le_bytes()).unwrap().is_empty());
        let good = block(&[(b"skipped_no_field", 3), (b"keys_over_max", u64::MAX)]);
        assert_eq!(decode(&good).unwrap(), [("skipped_no_field", 3), ("keys_over_max", u64::MAX)]);
        for cut in 1..good.len() {
            assert!(matches!(decode(&good[..cut]), Err(CountersError::Truncated { .. })), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(CountersError::TrailingBytes { at: good.len() }));
        assert_eq!(decode(&block(&[(b"", 1)])), Err(CountersError::BadName { at: 4 }));
        assert_eq!(decode(&block(&[(b"a", 1), (b"Upper", 1)])), Err(CountersError::BadName { at: 17 }));
        assert_eq!(decode(&block(&[(&[b'a'; 65], 1)])), Err(CountersError::BadName { at: 4 }));
        assert!(decode(&block(&[(&[b'a'; 64], 1)])).is_ok());
        let err = decode(&block(&[(b"a", 1), (b"a", 2)])).unwrap_err();
        assert_eq!(err, CountersError::Repeated { at: 17, name: "a".into() });
        assert!(err.to_string().contains("\"a\""), "{err}");
        // A name length of 4 GiB is refused as a name, not read as a length.
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(CountersError::BadName { at: 4 }));
        let names: Vec<Vec<u8>> = (0..=COUNTERS_MAX).map(|i| format!("c{i}").into_bytes()).collect();
        let many: Vec<(&[u8], u64)> = names.iter().map(|n| (&n[..], 0)).collect();
        assert!(decode(&block(&many[..COUNTERS_MAX])).is_ok());
        assert_eq!(decode(&block(&many)), Err(CountersError::TooMany { count: 17 }));
        assert_eq!(decode(&[0; 4097]), Err(CountersError::TooLarge { len: 4097 }));
        let widest: Vec<Vec<u8>> = (0..COUNTERS_MAX).map(|i| format!("{i:_>64}").into_bytes()).collect();
        let widest: Vec<(&[u8], u64)> = widest.iter().map(|n| (&n[..], u64::MAX)).collect();
        assert_eq!(block(&widest).len(), 1220, "the largest valid block, well under the byte limit");
        assert_eq!(decode(&block(&widest)).unwrap().len(), COUNTERS_MAX);
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever it accepts keeps the limits.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(counters) = decode(&bytes) {
                prop_assert!(counters.len() <= COUNTERS_MAX);
                prop_assert!(counters.iter().all(|(n, _)| name_is_valid(n.as_bytes())));
            }
        }

        /// Valid blocks with a corrupted byte or a wrong length never panic either (random
        /// bytes rarely get past the count).
        #[test]
        fn corrupted_blocks_never_panic(
            values in proptest::collection::vec(any::<u64>(), 0..=COUNTERS_MAX),
            flip in any::<(usize, u8)>(),
        ) {
            let names: Vec<Vec<u8>> = (0..values.len()).map(|i| format!("counter_{i}").into_bytes()).collect();
            let counters: Vec<(&[u8], u64)> = names.iter().map(|n| &n[..]).zip(values.iter().copied()).collect();
            let mut bytes = block(&counters);
            let decoded = decode(&bytes).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            prop_assert!(decoded.iter().map(|(_, v)| *v).eq(values.iter().copied()));
            let at = flip.0 % bytes.len();
            bytes[at] ^= flip.1.max(1);
            let _ = decode(&bytes);
        }
    }
}
