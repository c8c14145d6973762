//! String content as the reader finds it: escapes intact, unescaped on demand without
//! allocating.

/// A JSON string's content between its quotes, escapes intact (valid UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a str,
}

impl<'a> JsonStr<'a> {
    /// Wraps string content the grammar scan accepted.
    pub(super) fn new(raw: &'a str) -> Self {
        JsonStr { raw }
    }
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

#[cfg(test)]
mod tests {
    use super::super::string;
    use alloc::string::String;

    /// Escapes decode, surrogate pairs included.
    #[test]
    fn unescapes() {
        let s = string(br#"{"s":"a\"b\\c\/\n\u00e9\ud83d\ude00\ud800x"}"#, "s").unwrap();
        let text: String = s.chars().collect();
        assert_eq!(text, "a\"b\\c/\né😀\u{fffd}x");
        assert!(s.as_str().is_none());
    }
}
