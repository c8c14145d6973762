//! The deployment's `--param k=v` pairs, decoded from the ABI's parameter encoding:
//!
//! ```text
//! u32 count, then count times: u32 key_len, key bytes, u32 value_len, value bytes
//! ```
//!
//! Keys are unique and sorted by their bytes; at most 64 pairs, keys at most 128 bytes and
//! values at most 4096 bytes, all UTF-8. The decoder enforces every rule and never panics.

use alloc::borrow::ToOwned;
use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt::Display;
use core::str::FromStr;

use crate::Error;

/// Most parameter pairs.
pub const PARAMS_MAX: usize = 64;
/// Longest key, in bytes.
pub const PARAM_KEY_BYTES_MAX: usize = 128;
/// Longest value, in bytes.
pub const PARAM_VALUE_BYTES_MAX: usize = 4096;

/// Decoded parameters, borrowing the host's buffer. The host may reuse that buffer after
/// `silt_init`, so a processor copies what it keeps (usually by parsing it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    /// No parameters.
    pub fn empty() -> Self {
        Params { pairs: Vec::new() }
    }

    /// Decodes the parameter encoding. Empty input means no parameters (the host passes
    /// `params_len` 0 then).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.is_empty() {
            return Ok(Params::empty());
        }
        let bad = |what| Error::MalformedParams { what };
        let mut pos = 0usize;
        let count = read_u32(bytes, &mut pos).ok_or(bad("cut short in the pair count"))? as usize;
        if count > PARAMS_MAX {
            return Err(bad("more than 64 pairs"));
        }
        let mut pairs: Vec<(&'a str, &'a str)> = Vec::with_capacity(count);
        for _ in 0..count {
            let key = read_str(bytes, &mut pos, PARAM_KEY_BYTES_MAX).map_err(|e| bad(e.describe("key")))?;
            let value =
                read_str(bytes, &mut pos, PARAM_VALUE_BYTES_MAX).map_err(|e| bad(e.describe("value")))?;
            if let Some((last, _)) = pairs.last() {
                if last.as_bytes() >= key.as_bytes() {
                    return Err(bad("keys not unique and sorted by their bytes"));
                }
            }
            pairs.push((key, value));
        }
        if pos != bytes.len() {
            return Err(bad("bytes after the last pair"));
        }
        Ok(Params { pairs })
    }

    /// The value of `key`, if it was given.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value of `key`, or an error saying it is missing.
    pub fn required(&self, key: &str) -> Result<&'a str, Error> {
        self.get(key).ok_or_else(|| Error::MissingParam { name: key.to_owned() })
    }

    /// `key` parsed as a `T`, `None` when it was not given, an error naming the parameter and
    /// its value when it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(value) = self.get(key) else { return Ok(None) };
        value.trim().parse::<T>().map(Some).map_err(|e| Error::InvalidParam {
            name: key.to_owned(),
            value: value.to_owned(),
            reason: e.to_string(),
        })
    }

    /// `key` parsed as a `T`, or `default` when it was not given.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// `key` parsed as a `T`; missing is an error.
    pub fn parse_required<T>(&self, key: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse(key)?.ok_or_else(|| Error::MissingParam { name: key.to_owned() })
    }

    /// An error naming the first parameter not in `known`. Call it first in `init` so that a
    /// misspelt parameter fails the deploy instead of being ignored.
    pub fn expect_only(&self, known: &[&str]) -> Result<(), Error> {
        match self.pairs.iter().find(|(k, _)| !known.contains(k)) {
            None => Ok(()),
            Some((name, _)) => Err(Error::UnknownParam {
                name: (*name).to_owned(),
                known: if known.is_empty() { "no parameters".to_owned() } else { known.join(", ") },
            }),
        }
    }

    /// An [`Error::InvalidParam`] for `key` with the given reason, for checks beyond parsing
    /// (`"must be between 0 and 1"`).
    pub fn invalid(&self, key: &str, reason: impl Display) -> Error {
        Error::InvalidParam {
            name: key.to_owned(),
            value: self.get(key).unwrap_or_default().to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pairs.iter().copied()
    }
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Encodes pairs as the host does: sorted by key, duplicates refused, limits checked. The
/// testing harness uses it; a host written in Rust could too.
pub fn encode(pairs: &[(&str, &str)]) -> Result<Vec<u8>, Error> {
    let bad = |what| Error::MalformedParams { what };
    if pairs.len() > PARAMS_MAX {
        return Err(bad("more than 64 pairs"));
    }
    let mut sorted: Vec<(&str, &str)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad("duplicate key"));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (key, value) in sorted {
        if key.len() > PARAM_KEY_BYTES_MAX {
            return Err(bad("key longer than 128 bytes"));
        }
        if value.len() > PARAM_VALUE_BYTES_MAX {
            return Err(bad("value longer than 4096 bytes"));
        }
        for s in [key, value] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(out)
}

fn read_u32(bytes: &[u8], pos: &mut usize) -> Option<u32> {
    let end = pos.checked_add(4)?;
    let b: [u8; 4] = bytes.get(*pos..end)?.try_into().ok()?;
    *pos = end;
    Some(u32::from_le_bytes(b))
}

enum StrError {
    Truncated,
    TooLong,
    NotUtf8,
}

impl StrError {
    fn describe(&self, field: &'static str) -> &'static str {
        match (self, field) {
            (StrError::Truncated, "key") => "cut short in a key",
            (StrError::TooLong, "key") => "key longer than 128 bytes",
            (StrError::NotUtf8, "key") => "key is not UTF-8",
            (StrError::Truncated, _) => "cut short in a value",
            (StrError::TooLong, _) => "value longer than 4096 bytes",
            (StrError::NotUtf8, _) => "value is not UTF-8",
        }
    }
}

fn read_str<'a>(bytes: &'a [u8], pos: &mut usize, max: usize) -> Result<&'a str, StrError> {
    let len = read_u32(bytes, pos).ok_or(StrError::Truncated)? as usize;
    if len > max {
        return Err(StrError::TooLong);
    }
    let end = pos.checked_add(len).ok_or(StrError::Truncated)?;
    let raw = bytes.get(*pos..end).ok_or(StrError::Truncated)?;
    *pos = end;
    core::str::from_utf8(raw).map_err(|_| StrError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// Typed access: defaults, parse errors naming the parameter, required and unknown keys.
    #[test]
    fn typed_access() {
        let bytes = encode(&[("min", "20.5"), ("field", "temp"), ("bad", "x1")]).unwrap();
        let p = Params::decode(&bytes).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get("field"), Some("temp"));
        assert_eq!(p.parse::<f64>("min").unwrap(), Some(20.5));
        assert_eq!(p.parse::<f64>("max").unwrap(), None);
        assert_eq!(p.parse_or("max", 7.0).unwrap(), 7.0);
        let e = p.parse::<f64>("bad").unwrap_err();
        assert!(e.to_string().contains("`bad`") && e.to_string().contains("x1"), "{e}");
        let e = p.required("window").unwrap_err();
        assert!(e.to_string().contains("--param window="), "{e}");
        assert!(p.expect_only(&["min", "field", "bad"]).is_ok());
        let e = p.expect_only(&["min", "field"]).unwrap_err();
        assert_eq!(e, Error::UnknownParam { name: "bad".into(), known: "min, field".into() });
        assert!(Params::decode(&[]).unwrap().is_empty());
        assert!(Params::decode(&[0, 0, 0, 0]).unwrap().is_empty());
    }

    /// The decoder refuses unsorted or duplicate keys, trailing bytes, and too many pairs.
    #[test]
    fn refuses_bad_encodings() {
        let mut unsorted = vec![2, 0, 0, 0];
        for s in ["b", "1", "a", "2"] {
            unsorted.extend_from_slice(&(s.len() as u32).to_le_bytes());
            unsorted.extend_from_slice(s.as_bytes());
        }
        assert!(Params::decode(&unsorted).is_err());
        let mut trailing = encode(&[("a", "1")]).unwrap();
        trailing.push(0);
        assert!(Params::decode(&trailing).is_err());
        assert!(Params::decode(&[65, 0, 0, 0]).is_err());
        assert!(encode(&[("a", "1"), ("a", "2")]).is_err());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Params::decode(&bytes);
        }

        /// Anything `encode` accepts decodes back to the same pairs, sorted.
        #[test]
        fn round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,12}", ".{0,20}", 0..10)) {
            let list: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bytes = encode(&list).unwrap();
            let p = Params::decode(&bytes).unwrap();
            let back: Vec<(&str, &str)> = p.iter().collect();
            prop_assert_eq!(back, list);
        }

        /// A valid encoding with one byte changed decodes or errors, never panics.
        #[test]
        fn mutated_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode(&[("alpha", "0.1"), ("field", "temp")]).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            let _ = Params::decode(&bytes);
        }
    }
}
