//! The parameter encoding of docs/processor-abi.md ("Parameters").

use crate::RuntimeError;

/// Most `--param` pairs one deployment may carry.
pub const PARAMS_PAIRS_MAX: usize = 64;
/// Longest parameter key, in bytes.
pub const PARAM_KEY_BYTES_MAX: usize = 128;
/// Longest parameter value, in bytes.
pub const PARAM_VALUE_BYTES_MAX: usize = 4096;

/// Encodes `params` sorted by key bytes: `u32 count`, then `u32 key_len, key, u32 value_len,
/// value` per pair. Empty when there are no parameters (the host then passes pointer 0,
/// length 0). Refuses duplicate keys and anything beyond the ABI's limits.
pub(crate) fn encode_params(params: &[(String, String)]) -> Result<Vec<u8>, RuntimeError> {
    if params.is_empty() {
        return Ok(Vec::new());
    }
    if params.len() > PARAMS_PAIRS_MAX {
        return Err(RuntimeError::Params(format!(
            "{} pairs; at most {PARAMS_PAIRS_MAX} are allowed",
            params.len()
        )));
    }
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(4 + params.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>());
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (i, (key, value)) in sorted.iter().map(|p| (&p.0, &p.1)).enumerate() {
        if i > 0 && sorted[i - 1].0 == *key {
            return Err(RuntimeError::Params(format!("key {key:?} is given twice")));
        }
        if key.len() > PARAM_KEY_BYTES_MAX {
            return Err(RuntimeError::Params(format!(
                "key {:?}... is {} bytes; at most {PARAM_KEY_BYTES_MAX} are allowed",
                key.chars().take(16).collect::<String>(),
                key.len()
            )));
        }
        if value.len() > PARAM_VALUE_BYTES_MAX {
            return Err(RuntimeError::Params(format!(
                "value of {key:?} is {} bytes; at most {PARAM_VALUE_BYTES_MAX} are allowed",
                value.len()
            )));
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pairs_are_sorted_by_key_bytes_and_length_prefixed() {
        // Proves the byte layout of the ABI's parameter encoding, keys sorted by bytes.
        let got = encode_params(&p(&[("b", "2"), ("a", "xy"), ("B", "")])).unwrap();
        let mut want = vec![3, 0, 0, 0];
        for (k, v) in [("B", ""), ("a", "xy"), ("b", "2")] {
            want.extend_from_slice(&(k.len() as u32).to_le_bytes());
            want.extend_from_slice(k.as_bytes());
            want.extend_from_slice(&(v.len() as u32).to_le_bytes());
            want.extend_from_slice(v.as_bytes());
        }
        assert_eq!(got, want);
        assert!(encode_params(&[]).unwrap().is_empty());
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        // Proves each of the ABI's parameter limits is enforced by the host.
        assert!(encode_params(&p(&[("k", "1"), ("k", "2")])).is_err());
        let long_key = "k".repeat(PARAM_KEY_BYTES_MAX + 1);
        assert!(encode_params(&[(long_key, String::new())]).is_err());
        let long_value = "v".repeat(PARAM_VALUE_BYTES_MAX + 1);
        assert!(encode_params(&[("k".into(), long_value)]).is_err());
        let many: Vec<(String, String)> =
            (0..=PARAMS_PAIRS_MAX).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(encode_params(&many).is_err());
        let most: Vec<(String, String)> =
            (0..PARAMS_PAIRS_MAX).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(encode_params(&most).is_ok());
    }
}
