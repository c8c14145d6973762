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
    parse_number(field(json, name).ok()??)
}

/// The top-level string field `name`, or `None` when absent or not a string.
pub fn string<'a>(json: &'a [u8], name: &str) -> Option<JsonStr<'a>> {
    let raw = field(json, name).ok()??;
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    Some(JsonStr { raw: core::str::from_utf8(inner).ok()? })
}

/// The raw text of top-level field `name` (the first one, if repeated). Members after the
/// match are not read, so trailing garbage is only noticed when the field is absent.
pub fn field<'a>(json: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Error> {
    for member in members(json) {
        let member = member?;
        if member.name.eq_str(name) {
            return Ok(Some(member.value));
        }
    }
    Ok(None)
}

/// Parses the text of a JSON number (the whole slice, nothing around it); `None` when it is
/// not one or is beyond the range of an `f64`.
pub fn parse_number(raw: &[u8]) -> Option<f64> {
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

impl<'a> Members<'a> {
    fn step(&mut self) -> Result<Option<Member<'a>>, Error> {
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
        let name_end = scan_string(b, self.pos)?;
        let name = core::str::from_utf8(&b[self.pos + 1..name_end - 1])
            .map_err(|_| json_error(self.pos, "member name is not UTF-8"))?;
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
        Ok(Some(Member { name: JsonStr { raw: name }, value: &b[start..end] }))
    }

    fn end(&mut self, after_brace: usize) -> Result<Option<Member<'a>>, Error> {
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
        let item = self.step();
        if item.is_err() {
            self.state = MembersState::Done;
        }
        item.transpose()
    }
}

fn json_error(at: usize, what: &'static str) -> Error {
    Error::Json { at, what }
}

fn expect(b: &[u8], pos: usize, want: u8, what: &'static str) -> Result<(), Error> {
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

/// Scans the string starting at the quote at `pos`; returns the position after its closing
/// quote.
fn scan_string(b: &[u8], pos: usize) -> Result<usize, Error> {
    let mut i = pos + 1;
    loop {
        match b.get(i) {
            None => return Err(json_error(i, "unterminated string")),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = b.get(i + 2..i + 6).ok_or(json_error(i, "short \\u escape"))?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(json_error(i, "bad \\u escape"));
                    }
                    i += 6;
                }
                _ => return Err(json_error(i, "bad escape")),
            },
            Some(&c) if c < 0x20 => return Err(json_error(i, "control character in a string")),
            Some(_) => i += 1,
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
fn scan_number(b: &[u8], mut pos: usize) -> Result<usize, Error> {
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
fn scan_value(b: &[u8], pos: usize, depth: usize) -> Result<usize, Error> {
    match b.get(pos) {
        Some(b'"') => scan_string(b, pos),
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
                    i = skip_ws(b, scan_string(b, i)?);
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

fn scan_literal(b: &[u8], pos: usize, word: &[u8]) -> Result<usize, Error> {
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

    proptest! {
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
