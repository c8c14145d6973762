//! Writing flat JSON objects, strings and numbers into a byte buffer.

use alloc::vec::Vec;
use core::fmt::Write as _;

use super::walk::Member;

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
    use super::super::{members, number, string};
    use super::*;
    use proptest::prelude::*;

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
