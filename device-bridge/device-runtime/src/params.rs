//! The parameter block of docs/processor-abi.md ("Parameters").
//!
//! Written here rather than taken from the broker (`silt-runtime` needs std) or the guest SDK
//! (a guest crate, with float formatting and a JSON reader a host does not need); the ABI
//! vector `docs/abi-vectors/params.hex` pins the bytes all three write.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::Error;

/// Most parameter pairs one instance may get.
pub const PARAMS_PAIRS_MAX: usize = 64;
/// Longest parameter key, in bytes.
pub const PARAM_KEY_BYTES_MAX: usize = 128;
/// Longest parameter value, in bytes.
pub const PARAM_VALUE_BYTES_MAX: usize = 4096;

/// Encodes `params` sorted by key bytes: `u32 count`, then `u32 key_len, key, u32 value_len,
/// value` per pair. Empty when there are no parameters (the host then passes pointer 0,
/// length 0). Refuses duplicate keys and anything beyond the ABI's limits.
pub(crate) fn encode_params(params: &[(&str, &str)]) -> Result<Vec<u8>, Error> {
    if params.is_empty() {
        return Ok(Vec::new());
    }
    if params.len() > PARAMS_PAIRS_MAX {
        return Err(Error::Params(format!("{} pairs; at most {PARAMS_PAIRS_MAX} are allowed", params.len())));
    }
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut size = 4;
    for (i, (key, value)) in sorted.iter().enumerate() {
        if i > 0 && sorted[i - 1].0 == *key {
            return Err(Error::Params(format!("key {key:?} is given twice")));
        }
        if key.len() > PARAM_KEY_BYTES_MAX {
            let start: String = key.chars().take(16).collect();
            return Err(Error::Params(format!(
                "key {start:?}... is {} bytes; at most {PARAM_KEY_BYTES_MAX} are allowed",
                key.len()
            )));
        }
        if value.len() > PARAM_VALUE_BYTES_MAX {
            return Err(Error::Params(format!(
                "value of {key:?} is {} bytes; at most {PARAM_VALUE_BYTES_MAX} are allowed",
                value.len()
            )));
        }
        size += 8 + key.len() + value.len();
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (key, value) in sorted {
        for field in [key, value] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field.as_bytes());
        }
    }
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ABI's parameter vector, hex with `#` comments.
    const PARAMS_HEX: &str = include_str!("../../../docs/abi-vectors/params.hex");

    fn from_hex(text: &str) -> Vec<u8> {
        let digits: String =
            text.lines().map(|l| l.split('#').next().unwrap_or("")).flat_map(str::split_whitespace).collect();
        assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn encodes_the_abi_vector() {
        // Proves this encoder writes docs/abi-vectors/params.hex byte for byte, from pairs
        // given out of order.
        let got = encode_params(&[("min_len", "20"), ("key", "dev-1")]).unwrap();
        assert_eq!(got, from_hex(PARAMS_HEX));
        assert!(encode_params(&[]).unwrap().is_empty());
    }

    #[test]
    fn sorts_by_key_bytes() {
        // Proves keys are ordered by their bytes (upper case before lower), not by chars.
        let got = encode_params(&[("b", "2"), ("a", "xy"), ("B", "")]).unwrap();
        let mut want = alloc::vec![3, 0, 0, 0];
        for (k, v) in [("B", ""), ("a", "xy"), ("b", "2")] {
            for field in [k, v] {
                want.extend_from_slice(&(field.len() as u32).to_le_bytes());
                want.extend_from_slice(field.as_bytes());
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        // Proves each of the ABI's parameter limits is enforced, and the largest allowed pass.
        assert!(encode_params(&[("k", "1"), ("k", "2")]).is_err());
        let long_key = "k".repeat(PARAM_KEY_BYTES_MAX + 1);
        assert!(encode_params(&[(&long_key, "")]).is_err());
        assert!(encode_params(&[(&long_key[1..], "")]).is_ok());
        let long_value = "v".repeat(PARAM_VALUE_BYTES_MAX + 1);
        assert!(encode_params(&[("k", &long_value)]).is_err());
        assert!(encode_params(&[("k", &long_value[1..])]).is_ok());
        let keys: Vec<String> = (0..=PARAMS_PAIRS_MAX).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "")).collect();
        assert!(encode_params(&pairs).is_err());
        assert!(encode_params(&pairs[1..]).is_ok());
    }
}
