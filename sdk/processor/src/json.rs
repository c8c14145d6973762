//! JSON payloads without a JSON library: read top-level fields of an object in place, and
//! write flat objects into a reused buffer.
//!
//! Sensor records are small flat objects such as
//! `{"device":"dev-0001","seq":"0000000001","temp":21.53,"humidity":40.12,"battery":3.71}`, and
//! most processors need one or two numbers out of them. [`number`] finds a top-level field and
//! parses it without allocating; [`members`] walks every top-level member as raw text (nested
//! values are skipped, not decoded); [`Object`] writes `{"key":"dev-1","mean":21.5}` style
//! objects. The reader checks the grammar of what it walks, with nesting at most [`DEPTH_MAX`],
//! and returns errors rather than panicking on malformed input.

use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::Error;

/// Deepest nesting of arrays and objects the reader walks through; deeper input is an error
/// rather than a deep recursion on the module's stack.
pub const DEPTH_MAX: usize = 64;

/// The value of top-level field `name` of the JSON object `json`, parsed as a number. `None`
/// when the field is absent, is not a JSON number (strings like `"21.5"` are not numbers), is
/// beyond the range of an `f64`, or the object is malformed before the field. Always finite.
///
/// ```
/// let v = br#"{"device":"dev-0001","temp":21.53,"nested":{"temp":1}}"#;
/// assert_eq!(silt_processor::json::number(v, "temp"), Some(21.53));
/// assert_eq!(silt_processor::json::number(v, "device"), None);
/// ```
pub fn number(json: &[u8], name: &str) -> Option<f64> {
    parse_number(find(json, name).ok()??)
}

/// The top-level string field `name`, or `None` when absent or not a string.
pub fn string<'a>(json: &'a [u8], name: &str) -> Option<JsonStr<'a>> {
    let raw = find(json, name).ok()??;
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    Some(JsonStr { raw: core::str::from_utf8(inner).ok()? })
}

/// The raw text of top-level field `name` (the first one, if repeated). Members after the
/// match are not read, so trailing garbage is only noticed when the field is absent.
pub fn field<'a>(json: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Error> {
    find(json, name).map_err(Error::from)
}

/// [`field`] with the error kept small: the lookup every numeric processor runs per record.
fn find<'a>(json: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Bad> {
    let mut walk = members(json);
    while let Some(member) = walk.step()? {
        let matches = if member.name_plain {
            // Plain ASCII without escapes is valid UTF-8 as it is and equal only byte for byte.
            member.name == name.as_bytes()
        } else {
            member.name_str()?.eq_str(name)
        };
        if matches {
            return Ok(Some(member.value));
        }
    }
    Ok(None)
}

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

/// The top-level members of the JSON object `json`, in order, as raw text.
pub fn members(json: &[u8]) -> Members<'_> {
    Members { bytes: json, pos: 0, state: MembersState::Start }
}

/// One top-level member: its name and its value's raw JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The name, escapes intact.
    pub name: JsonStr<'a>,
    /// The value exactly as written (a number, string with its quotes, object, array, ...).
    pub value: &'a [u8],
}

/// A JSON string's content between its quotes, escapes intact (valid UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a str,
}

impl<'a> JsonStr<'a> {
    /// The text as written between the quotes, escapes intact.
    pub fn raw(&self) -> &'a str {
        self.raw
    }
    /// The text itself when it has no escapes (the common case), without copying.
    pub fn as_str(&self) -> Option<&'a str> {
        (!self.raw.contains('\\')).then_some(self.raw)
    }
    /// The unescaped characters.
    pub fn chars(&self) -> Unescaped<'a> {
        Unescaped { rest: self.raw.chars() }
    }
    /// Compares the unescaped text with `s`, without allocating.
    pub fn eq_str(&self, s: &str) -> bool {
        match self.as_str() {
            Some(plain) => plain == s,
            None => self.chars().eq(s.chars()),
        }
    }
}

/// Iterator over the unescaped characters of a [`JsonStr`]. Lone surrogates become U+FFFD.
#[derive(Debug, Clone)]
pub struct Unescaped<'a> {
    rest: core::str::Chars<'a>,
}

impl Unescaped<'_> {
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + self.rest.next()?.to_digit(16)?;
        }
        Some(v)
    }
}

impl Iterator for Unescaped<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c != '\\' {
            return Some(c);
        }
        Some(match self.rest.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = self.hex4().unwrap_or(0xfffd);
                if (0xd800..0xdc00).contains(&hi) {
                    let mut ahead = self.clone();
                    let lo = match (ahead.rest.next(), ahead.rest.next()) {
                        (Some('\\'), Some('u')) => ahead.hex4(),
                        _ => None,
                    };
                    match lo {
                        Some(lo) if (0xdc00..0xe000).contains(&lo) => {
                            *self = ahead;
                            char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                                .unwrap_or('\u{fffd}')
                        }
                        _ => '\u{fffd}',
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{fffd}')
                }
            }
            other => other, // '"', '\\' and '/' stand for themselves
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MembersState {
    Start,
    Next,
    Done,
}

/// Iterator over the members of an object; see [`members`]. Yields an error once and stops
/// when the text is not a well-formed object.
#[derive(Debug, Clone)]
pub struct Members<'a> {
    bytes: &'a [u8],
    pos: usize,
    state: MembersState,
}

/// A grammar fault: where and what. Small and `Copy`, so the scanners return it in registers;
/// it becomes an [`Error::Json`] only when a caller reports it.
#[derive(Debug, Clone, Copy)]
struct Bad {
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

/// A member as the walk finds it, before its name is checked for UTF-8.
struct RawMember<'a> {
    name: &'a [u8],
    /// ASCII without escapes: valid UTF-8 and its own unescaped text.
    name_plain: bool,
    /// Where the name's opening quote is, for errors.
    name_at: usize,
    value: &'a [u8],
}

impl<'a> RawMember<'a> {
    fn name_str(&self) -> Result<JsonStr<'a>, Bad> {
        match core::str::from_utf8(self.name) {
            Ok(raw) => Ok(JsonStr { raw }),
            Err(_) => Err(json_error(self.name_at, "member name is not UTF-8")),
        }
    }
}

impl<'a> Members<'a> {
    fn step(&mut self) -> Result<Option<RawMember<'a>>, Bad> {
        let b = self.bytes;
        match self.state {
            MembersState::Done => return Ok(None),
            MembersState::Start => {
                self.pos = skip_ws(b, 0);
                expect(b, self.pos, b'{', "expected an object")?;
                self.pos = skip_ws(b, self.pos + 1);
                if b.get(self.pos) == Some(&b'}') {
                    return self.end(self.pos + 1);
                }
            }
            MembersState::Next => {
                self.pos = skip_ws(b, self.pos);
                match b.get(self.pos) {
                    Some(b',') => self.pos = skip_ws(b, self.pos + 1),
                    Some(b'}') => return self.end(self.pos + 1),
                    _ => return Err(json_error(self.pos, "expected ',' or '}'")),
                }
            }
        }
        expect(b, self.pos, b'"', "expected a member name")?;
        let name_at = self.pos;
        let (name_end, name_plain) = scan_string(b, name_at)?;
        let name = b.get(name_at + 1..name_end - 1).unwrap_or_default();
        self.pos = skip_ws(b, name_end);
        expect(b, self.pos, b':', "expected ':'")?;
        let start = skip_ws(b, self.pos + 1);
        let end = scan_value(b, start, 1)?;
        // Check the delimiter now, so that a match is never returned from "01" or "1x".
        if !matches!(b.get(skip_ws(b, end)), Some(b',' | b'}')) {
            return Err(json_error(end, "expected ',' or '}'"));
        }
        self.pos = end;
        self.state = MembersState::Next;
        let value = b.get(start..end).unwrap_or_default();
        Ok(Some(RawMember { name, name_plain, name_at, value }))
    }

    fn end(&mut self, after_brace: usize) -> Result<Option<RawMember<'a>>, Bad> {
        self.state = MembersState::Done;
        let rest = skip_ws(self.bytes, after_brace);
        if rest != self.bytes.len() {
            return Err(json_error(rest, "bytes after the object"));
        }
        Ok(None)
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<Member<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self
            .step()
            .and_then(|raw| raw.map(|m| Ok(Member { name: m.name_str()?, value: m.value })).transpose());
        if item.is_err() {
            self.state = MembersState::Done;
        }
        item.map_err(Error::from).transpose()
    }
}

fn json_error(at: usize, what: &'static str) -> Bad {
    Bad { at, what }
}

fn expect(b: &[u8], pos: usize, want: u8, what: &'static str) -> Result<(), Bad> {
    if b.get(pos) == Some(&want) {
        Ok(())
    } else {
        Err(json_error(pos, what))
    }
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
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
fn scan_string(b: &[u8], pos: usize) -> Result<(usize, bool), Bad> {
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

fn scan_digits(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

/// Scans `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` at `pos`.
fn scan_number(b: &[u8], mut pos: usize) -> Result<usize, Bad> {
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
fn scan_value(b: &[u8], pos: usize, depth: usize) -> Result<usize, Bad> {
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

/// Writes a flat JSON object into a byte buffer. The closing brace is written when the
/// writer is dropped (or [`Object::finish`]ed), so the buffer cannot be read half-written.
///
/// ```
/// let mut buf = Vec::new();
/// let mut o = silt_processor::json::Object::new(&mut buf);
/// o.string("key", "dev-1").number("mean", 21.5).uint("count", 3);
/// o.finish();
/// assert_eq!(buf, br#"{"key":"dev-1","mean":21.5,"count":3}"#);
/// ```
#[derive(Debug)]
pub struct Object<'b> {
    out: &'b mut Vec<u8>,
    empty: bool,
}

impl<'b> Object<'b> {
    /// Starts an object at the end of `out` (which is not cleared).
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    fn name(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(self.out, name);
        self.out.push(b':');
        self.out
    }

    /// A string member.
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        let out = self.name(name);
        write_string(out, value);
        self
    }
    /// A string member from bytes; invalid UTF-8 becomes U+FFFD (keys are bytes in Silt).
    pub fn string_lossy(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let out = self.name(name);
        out.push(b'"');
        for chunk in value.utf8_chunks() {
            write_escaped(out, chunk.valid());
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{fffd}".as_bytes());
            }
        }
        out.push(b'"');
        self
    }
    /// A number member; NaN and infinities, which JSON cannot express, become `null`.
    pub fn number(&mut self, name: &str, value: f64) -> &mut Self {
        let out = self.name(name);
        write_number(out, value);
        self
    }
    /// A signed integer member.
    pub fn int(&mut self, name: &str, value: i64) -> &mut Self {
        let out = self.name(name);
        let _ = write!(VecWriter(out), "{value}");
        self
    }
    /// An unsigned integer member.
    pub fn uint(&mut self, name: &str, value: u64) -> &mut Self {
        let out = self.name(name);
        let _ = write!(VecWriter(out), "{value}");
        self
    }
    /// A boolean member.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        let out = self.name(name);
        out.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }
    /// A `null` member.
    pub fn null(&mut self, name: &str) -> &mut Self {
        self.name(name).extend_from_slice(b"null");
        self
    }
    /// A member whose value is already JSON text (copied as it is, not checked).
    pub fn raw(&mut self, name: &str, json: &[u8]) -> &mut Self {
        self.name(name).extend_from_slice(json);
        self
    }
    /// A member read with [`members`], copied verbatim (name escapes included).
    pub fn member(&mut self, member: &Member<'_>) -> &mut Self {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(member.name.raw().as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out.extend_from_slice(member.value);
        self
    }
    /// Closes the object (dropping the writer does the same).
    pub fn finish(self) {}
}

impl Drop for Object<'_> {
    fn drop(&mut self) {
        self.out.push(b'}');
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escape: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(VecWriter(out), "\\u{c:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

/// Appends `v` as a JSON number: the shortest text that reads back as the same `f64`, in
/// exponent form when very large or small, and `null` for NaN and infinities.
pub fn write_number(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let magnitude = v.abs();
    // Plain notation would print hundreds of digits for 1e300 or 1e-300.
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        let _ = write!(VecWriter(out), "{v:e}");
    } else {
        let _ = write!(VecWriter(out), "{v}");
    }
}

/// `core::fmt::Write` into a byte vector; never fails.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    const READING: &[u8] =
        br#"{"device":"dev-0001","seq":"0000000001","temp":21.53,"humidity":40.12,"battery":3.71}"#;

    /// Numbers of the project's sensor and NAB records are found; strings, absent fields and
    /// nested fields are not numbers of the top level.
    #[test]
    fn reads_numbers() {
        assert_eq!(number(READING, "temp"), Some(21.53));
        assert_eq!(number(READING, "battery"), Some(3.71));
        assert_eq!(number(READING, "seq"), None);
        assert_eq!(number(READING, "pressure"), None);
        assert_eq!(number(br#"{"value":20.0}"#, "value"), Some(20.0));
        assert_eq!(number(br#" { "a" : { "value" : 1 } , "value" : -2.5e3 } "#, "value"), Some(-2500.0));
        assert_eq!(number(br#"{"a":[1,{"b":[]}],"value":0}"#, "value"), Some(0.0));
        assert_eq!(number(br#"{"value":01}"#, "value"), None);
        assert_eq!(number(br#"{"value":1.}"#, "value"), None);
        assert_eq!(number(br#"{"value":"1"}"#, "value"), None);
        assert_eq!(number(br#"{"va\u006cue":7}"#, "value"), Some(7.0));
        assert_eq!(number(b"[1]", "value"), None);
        assert_eq!(number(br#"{"value":1e400}"#, "value"), None);
        assert_eq!(number(br#"{"value":-1e-400}"#, "value"), Some(-0.0));
        assert_eq!(string(READING, "device").and_then(|s| s.as_str()), Some("dev-0001"));
    }

    /// The member walk reports malformed objects as errors.
    #[test]
    fn member_errors() {
        for bad in [&b""[..], b"{", b"{\"a\"}", b"{\"a\":}", b"{\"a\":1,}", b"{\"a\":1} x", b"{\"a\":tru}"] {
            assert!(members(bad).any(|m| m.is_err()), "{:?}", core::str::from_utf8(bad));
        }
        let deep = [vec![b'['; 100], vec![b']'; 100]].concat();
        let mut doc = b"{\"a\":".to_vec();
        doc.extend_from_slice(&deep);
        doc.push(b'}');
        assert!(members(&doc).any(|m| m.is_err()));
        assert_eq!(members(b" {} ").count(), 0);
    }

    /// Escapes decode, surrogate pairs included.
    #[test]
    fn unescapes() {
        let s = string(br#"{"s":"a\"b\\c\/\n\u00e9\ud83d\ude00\ud800x"}"#, "s").unwrap();
        let text: String = s.chars().collect();
        assert_eq!(text, "a\"b\\c/\né😀\u{fffd}x");
        assert!(s.as_str().is_none());
    }

    /// The writer escapes names and values, and writes numbers JSON can read.
    #[test]
    fn writes_objects() {
        let mut buf = Vec::new();
        {
            let mut o = Object::new(&mut buf);
            o.string("k\"ey", "a\u{1}b\n")
                .number("nan", f64::NAN)
                .number("big", 1e300)
                .number("small", 2.5e-9);
            o.number("x", 21.53).int("neg", -5).bool("t", true).null("n").raw("r", b"[1,2]");
            o.string_lossy("bytes", b"ok\xffok");
        }
        let text = core::str::from_utf8(&buf).unwrap();
        assert_eq!(
            text,
            "{\"k\\\"ey\":\"a\\u0001b\\n\",\"nan\":null,\"big\":1e300,\"small\":2.5e-9,\"x\":21.53,\
             \"neg\":-5,\"t\":true,\"n\":null,\"r\":[1,2],\"bytes\":\"ok\u{fffd}ok\"}"
        );
        assert_eq!(members(&buf).filter(|m| m.is_ok()).count(), 10);
        assert_eq!(number(&buf, "big"), Some(1e300));
        assert!(string(&buf, "k\"ey").unwrap().chars().eq("a\u{1}b\n".chars()));
    }

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

        /// Decimals with up to 17 digits parse to the same bits on both paths.
        #[test]
        fn fast_decimals_match_general(int in 0u64..10_000_000_000, frac in 0u64..10_000_000, zeros in 0usize..3, neg in any::<bool>()) {
            let text = alloc::format!("{}{int}.{}{frac}", if neg { "-" } else { "" }, "0".repeat(zeros));
            let general = parse_number_general(text.as_bytes()).map(f64::to_bits);
            prop_assert_eq!(parse_number(text.as_bytes()).map(f64::to_bits), general);
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = number(&bytes, "a");
            let _ = members(&bytes).count();
        }

        /// Any finite f64 written reads back bit for bit, and any string written reads back.
        #[test]
        fn writer_round_trips(v in any::<f64>().prop_filter("finite", |v| v.is_finite()), s in ".{0,16}", name in "s[a-z]{0,7}") {
            let mut buf = Vec::new();
            Object::new(&mut buf).number("v", v).string(&name, &s);
            prop_assert_eq!(number(&buf, "v").map(f64::to_bits), Some(v.to_bits()));
            let back = string(&buf, &name).unwrap();
            prop_assert!(back.chars().eq(s.chars()));
            let ms: Vec<_> = members(&buf).collect::<Result<_, _>>().unwrap();
            let mut copy = Vec::new();
            {
                let mut o = Object::new(&mut copy);
                for m in &ms {
                    o.member(m);
                }
            }
            prop_assert_eq!(copy, buf);
        }
    }
}
