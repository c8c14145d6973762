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
//!
//! Its parts: `grammar` checks text against the JSON grammar without decoding it, `walk` walks
//! an object's members and looks fields up, `strings` holds string content and its escapes,
//! `numbers` parses number text, and `writer` writes objects.

mod grammar;
mod numbers;
mod strings;
mod walk;
mod writer;

pub use numbers::parse_number;
pub use strings::{JsonStr, Unescaped};
pub use walk::{members, Member, Members};
pub use writer::{write_number, write_string, Object};

use crate::Error;
use walk::find;

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

/// For a processor that reads the number at `name` of each JSON value: the error to return
/// when a batch has records and none of them has that number, while the processor has never
/// read one. Its `field` parameter then most likely names no field of these values, which
/// would otherwise look like a processor with nothing to report. Names the field, the batch's
/// first offset and the start of its first value.
///
/// ```
/// let batch = silt_processor::testing::BatchBuilder::new(7).record(0, "k", r#"{"temp":1}"#).build();
/// let batch = silt_processor::Batch::new(&batch).unwrap();
/// let e = silt_processor::json::no_field_error(&batch, "value").to_string();
/// assert!(e.contains(r#"no record of the batch at offset 7 has a number at "value""#), "{e}");
/// ```
pub fn no_field_error(batch: &crate::Batch<'_>, name: &str) -> Error {
    let first = batch.records().next().map_or(&[][..], |r| r.value);
    let shown = &first[..first.len().min(120)];
    Error::msg(alloc::format!(
        "no record of the batch at offset {} has a number at {name:?} (the first value begins {:?}): \
         set --param field= to the field that holds the reading",
        batch.base_offset(),
        alloc::string::String::from_utf8_lossy(shown)
    ))
}

/// The top-level string field `name`, or `None` when absent or not a string.
pub fn string<'a>(json: &'a [u8], name: &str) -> Option<JsonStr<'a>> {
    let raw = find(json, name).ok()??;
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    Some(JsonStr::new(core::str::from_utf8(inner).ok()?))
}

/// The raw text of top-level field `name` (the first one, if repeated). Members after the
/// match are not read, so trailing garbage is only noticed when the field is absent.
pub fn field<'a>(json: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Error> {
    find(json, name).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    proptest! {
        /// Arbitrary bytes never panic the reader.
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = number(&bytes, "a");
            let _ = members(&bytes).count();
        }

    }
}
