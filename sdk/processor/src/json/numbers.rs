//! Parsing JSON number text into an `f64`: a fast path for the short decimals sensors send,
//! the general parser for the rest.

use super::grammar::scan_number;

/// Powers of ten an `f64` holds exactly.
const POW10_EXACT: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];
/// Most significant digits the fast path takes: below 2^53, so the digits are exact as an `f64`.
const FAST_DIGITS_MAX: usize = 15;

/// Parses the text of a JSON number (the whole slice, nothing around it); `None` when it is
/// not one or is beyond the range of an `f64`.
pub fn parse_number(raw: &[u8]) -> Option<f64> {
    match parse_short_decimal(raw) {
        Some(v) => Some(v),
        None => parse_number_general(raw),
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with at most 15 digits, the shape of sensor readings: the
/// digits as an integer are exact in an `f64`, and so is 10^k for k <= 22, so one IEEE
/// division gives the correctly rounded value, bit for bit what the general parser gives
/// (Clinger's fast path). `None` for anything else, which the general parser then decides.
#[inline]
fn parse_short_decimal(raw: &[u8]) -> Option<f64> {
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if digits.len() > FAST_DIGITS_MAX + 1 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut point: Option<usize> = None;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() && count > 0 => point = Some(count),
            _ => return None,
        }
    }
    let int_digits = point.unwrap_or(count);
    if count == 0 || count > FAST_DIGITS_MAX || point == Some(count) {
        return None;
    }
    if digits.first() == Some(&b'0') && int_digits > 1 {
        return None; // a leading zero: not JSON; the general parser refuses it
    }
    let v = mantissa as f64 / *POW10_EXACT.get(count - int_digits)?;
    Some(if negative { -v } else { v })
}

#[inline(never)]
fn parse_number_general(raw: &[u8]) -> Option<f64> {
    let end = scan_number(raw, 0).ok()?;
    if end != raw.len() {
        return None;
    }
    // The grammar check above is stricter than Rust's float syntax, so "inf", "1." and "+1"
    // never reach `parse`. A number beyond f64's range ("1e400") parses to infinity, which no
    // arithmetic downstream expects: it is refused too.
    let v: f64 = core::str::from_utf8(raw).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fast decimal path agrees with the general parser on the readings it sees.
    #[test]
    fn short_decimals() {
        for text in
            ["0", "-0", "21.53", "-40.125", "0.1", "3.71", "123456789012345", "99.0", "1e2", "01", "1.", ".5"]
        {
            let general = parse_number_general(text.as_bytes()).map(f64::to_bits);
            assert_eq!(parse_number(text.as_bytes()).map(f64::to_bits), general, "{text}");
        }
    }

    proptest! {
        /// Decimals with up to 17 digits parse to the same bits on both paths.
        #[test]
        fn fast_decimals_match_general(int in 0u64..10_000_000_000, frac in 0u64..10_000_000, zeros in 0usize..3, neg in any::<bool>()) {
            let text = alloc::format!("{}{int}.{}{frac}", if neg { "-" } else { "" }, "0".repeat(zeros));
            let general = parse_number_general(text.as_bytes()).map(f64::to_bits);
            prop_assert_eq!(parse_number(text.as_bytes()).map(f64::to_bits), general);
        }

    }
}
