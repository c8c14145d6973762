//! Scanning JSON text: whitespace, strings, numbers, literals and nested values, each
//! checked against the grammar and returning the position after it. Nothing is decoded.

use super::DEPTH_MAX;
use crate::Error;

/// A grammar fault: where and what. Small and `Copy`, so the scanners return it in registers;
/// it becomes an [`Error::Json`] only when a caller reports it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bad {
    at: usize,
    what: &'static str,
}

impl From<Bad> for Error {
    #[cold]
    #[inline(never)]
    fn from(bad: Bad) -> Error {
        Error::Json { at: bad.at, what: bad.what }
    }
}

#[inline]
pub(super) fn json_error(at: usize, what: &'static str) -> Bad {
    Bad { at, what }
}

#[inline]
pub(super) fn expect(b: &[u8], pos: usize, want: u8, what: &'static str) -> Result<(), Bad> {
    if b.get(pos) == Some(&want) {
        Ok(())
    } else {
        Err(json_error(pos, what))
    }
}

#[inline]
pub(super) fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// `0x01` in every byte of a word.
const LOW_BITS: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The bytes of `w` that end a plain run in a string (`"`, `\` or a control character below
/// 0x20), as the high bit of each such byte. Above the lowest marked byte the marks may be
/// wrong (a borrow carries upwards), so callers only use the lowest one, which is exact.
#[inline(always)]
fn string_stops(w: u64) -> u64 {
    let quote = w ^ (LOW_BITS * u64::from(b'"'));
    let backslash = w ^ (LOW_BITS * u64::from(b'\\'));
    let zero_byte = |x: u64| x.wrapping_sub(LOW_BITS) & !x;
    let below_space = w.wrapping_sub(LOW_BITS * 0x20) & !w;
    (zero_byte(quote) | zero_byte(backslash) | below_space) & HIGH_BITS
}

/// Scans the string starting at the quote at `pos`; returns the position after its closing
/// quote, and whether the string is plain (ASCII, no escapes).
///
/// Eight bytes at a time: a loop iteration per byte costs a bounds check and, under wasmtime,
/// an epoch check at the loop header, which made this scan the largest part of a filter.
pub(super) fn scan_string(b: &[u8], pos: usize) -> Result<(usize, bool), Bad> {
    let mut i = pos + 1;
    // The OR of every byte inside the string so far: its high bit says "not ASCII".
    let mut seen: u64 = 0;
    let mut escaped = false;
    loop {
        while let Some(word) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            let w = u64::from_le_bytes(*word);
            let stops = string_stops(w);
            if stops != 0 {
                let k = stops.trailing_zeros() / 8;
                // The bytes before the stop (none when k is 0) are string content.
                seen |= w & ((1u64 << (8 * k)) - 1);
                i += k as usize;
                break;
            }
            seen |= w;
            i += 8;
        }
        match b.get(i) {
            None => return Err(json_error(i, "unterminated string")),
            Some(b'"') => return Ok((i + 1, !escaped && seen & HIGH_BITS == 0)),
            Some(b'\\') => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = b.get(i + 2..i + 6).ok_or(json_error(i, "short \\u escape"))?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(json_error(i, "bad \\u escape"));
                        }
                        i += 6;
                    }
                    _ => return Err(json_error(i, "bad escape")),
                }
            }
            Some(&c) if c < 0x20 => return Err(json_error(i, "control character in a string")),
            Some(&c) => {
                // The last few bytes, fewer than a word.
                seen |= u64::from(c);
                i += 1;
            }
        }
    }
}

#[inline]
fn scan_digits(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

/// Scans `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` at `pos`.
pub(super) fn scan_number(b: &[u8], mut pos: usize) -> Result<usize, Bad> {
    let start = pos;
    if b.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match b.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos = scan_digits(b, pos + 1),
        _ => return Err(json_error(start, "bad number")),
    }
    if b.get(pos) == Some(&b'.') {
        let end = scan_digits(b, pos + 1);
        if end == pos + 1 {
            return Err(json_error(start, "bad number"));
        }
        pos = end;
    }
    if matches!(b.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(b.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        let end = scan_digits(b, pos);
        if end == pos {
            return Err(json_error(start, "bad number"));
        }
        pos = end;
    }
    Ok(pos)
}

/// Scans one value at `pos` (no leading whitespace); returns the position after it.
pub(super) fn scan_value(b: &[u8], pos: usize, depth: usize) -> Result<usize, Bad> {
    match b.get(pos) {
        Some(b'"') => scan_string(b, pos).map(|(end, _)| end),
        Some(b'-' | b'0'..=b'9') => scan_number(b, pos),
        Some(b't') => scan_literal(b, pos, b"true"),
        Some(b'f') => scan_literal(b, pos, b"false"),
        Some(b'n') => scan_literal(b, pos, b"null"),
        Some(&open @ (b'{' | b'[')) => {
            if depth >= DEPTH_MAX {
                return Err(json_error(pos, "nested deeper than 64"));
            }
            let close = if open == b'{' { b'}' } else { b']' };
            let mut i = skip_ws(b, pos + 1);
            if b.get(i) == Some(&close) {
                return Ok(i + 1);
            }
            loop {
                if open == b'{' {
                    expect(b, i, b'"', "expected a member name")?;
                    i = skip_ws(b, scan_string(b, i)?.0);
                    expect(b, i, b':', "expected ':'")?;
                    i = skip_ws(b, i + 1);
                }
                i = skip_ws(b, scan_value(b, i, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(&c) if c == close => return Ok(i + 1),
                    _ => return Err(json_error(i, "expected ',' or a closing bracket")),
                }
            }
        }
        _ => Err(json_error(pos, "expected a value")),
    }
}

fn scan_literal(b: &[u8], pos: usize, word: &[u8]) -> Result<usize, Bad> {
    if b.get(pos..pos + word.len()) == Some(word) {
        Ok(pos + word.len())
    } else {
        Err(json_error(pos, "bad literal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// The byte-at-a-time string scan the word-at-a-time `scan_string` replaced: the model
    /// it is checked against.
    fn scan_string_bytewise(b: &[u8], pos: usize) -> Option<(usize, bool)> {
        let mut i = pos + 1;
        let mut plain = true;
        loop {
            match *b.get(i)? {
                b'"' => return Some((i + 1, plain)),
                b'\\' => {
                    plain = false;
                    match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                c => {
                    plain &= c.is_ascii();
                    i += 1;
                }
            }
        }
    }

    proptest! {
        /// The word-at-a-time string scan finds the same end, plainness and faults as the
        /// byte-at-a-time model, wherever the stops fall in a word.
        #[test]
        fn string_scan_matches_bytewise(
            body in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'"', b'\\', b'u', b'0', b'n', 0x1f, 0x7f, 0x80, 0xc3, 0xa9]),
                0..40,
            ),
        ) {
            let mut text = vec![b'"'];
            text.extend_from_slice(&body);
            let fast = scan_string(&text, 0).ok();
            prop_assert_eq!(fast, scan_string_bytewise(&text, 0));
        }

    }
}
