//! Walking the top-level members of an object, checking the grammar of what is walked.

use super::grammar::{expect, json_error, scan_string, scan_value, skip_ws, Bad};
use super::strings::JsonStr;
use crate::Error;

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
            Ok(raw) => Ok(JsonStr::new(raw)),
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

/// [`field`](super::field) with the error kept small: the lookup every numeric processor runs per record.
pub(super) fn find<'a>(json: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Bad> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

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
}
