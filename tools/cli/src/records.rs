//! Parsing input lines into records and writing records out as values, JSON lines or CSV.
//!
//! A value is stored as the producer wrote it: a JSON-lines input's `"value"` that is not a
//! string is stored as its exact text (key order, spacing and number digits kept), and JSON-lines
//! output embeds a stored JSON value as its stored bytes.

use std::io::Write;

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::ValueEnum;
use serde_json::value::RawValue;
use silt_wire::Record;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InputFormat {
    /// Each line is one record value.
    Raw,
    /// Each line is a JSON object: {"value": ..., "key": "...", "timestamp": ..., "headers": {...}}.
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// The value only, one per line.
    Value,
    /// One JSON object per record.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// A parsed input record.
#[derive(Debug, PartialEq)]
pub struct InputRecord {
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, String)>,
}

pub fn parse_input_line(line: &str, format: InputFormat, key: Option<&str>) -> anyhow::Result<InputRecord> {
    match format {
        InputFormat::Raw => Ok(InputRecord {
            key: key.map(str::to_string),
            value: line.as_bytes().to_vec(),
            timestamp_ms: None,
            headers: vec![],
        }),
        InputFormat::Jsonl => {
            // The fields as their source text first, so the value is stored as written.
            let fields: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(line).context("not a JSON object")?;
            // A string is its text; anything else, its exact JSON text.
            let text_of = |v: &RawValue| match serde_json::from_str::<String>(v.get()) {
                Ok(text) => text,
                Err(_) => v.get().to_string(),
            };
            let value = match fields.get("value") {
                Some(v) => text_of(v).into_bytes(),
                None => bail!("no \"value\" field"),
            };
            let key = fields.get("key").map(|k| text_of(k)).or_else(|| key.map(str::to_string));
            let parsed =
                |name: &str| fields.get(name).map(|v| serde_json::from_str::<serde_json::Value>(v.get()));
            let obj: BTreeMap<&str, serde_json::Value> = ["timestamp", "headers"]
                .into_iter()
                .filter_map(|name| parsed(name).map(|v| v.map(|v| (name, v))))
                .collect::<Result<_, _>>()
                .context("not a JSON object")?;
            let timestamp_ms = match obj.get("timestamp") {
                None => None,
                Some(serde_json::Value::Number(n)) => {
                    Some(n.as_i64().context("timestamp in ms must be an integer")?)
                }
                Some(serde_json::Value::String(s)) => {
                    let t = humantime::parse_rfc3339_weak(s)
                        .with_context(|| format!("timestamp {s:?} is not RFC 3339"))?;
                    Some(t.duration_since(std::time::UNIX_EPOCH).context("time before 1970")?.as_millis()
                        as i64)
                }
                Some(_) => bail!("timestamp must be RFC 3339 text or milliseconds"),
            };
            let mut headers = Vec::new();
            if let Some(h) = obj.get("headers") {
                let Some(h) = h.as_object() else { bail!("headers must be an object") };
                for (k, v) in h {
                    headers.push((k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)));
                }
            }
            Ok(InputRecord { key, value, timestamp_ms, headers })
        }
    }
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A CSV error as the I/O error it wraps, if it is one (so a closed pipe is seen as one).
fn csv_io(e: csv::Error) -> anyhow::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io.into(),
        other => anyhow::anyhow!("{other:?}"),
    }
}

/// One record as a JSON line.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: String,
    key: Option<Cow<'a, str>>,
    value: JsonValue<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonValue<'a> {
    /// A stored JSON object or array, as its bytes.
    Stored(&'a RawValue),
    Text(Cow<'a, str>),
}

/// Writes records in one output format.
pub struct RecordWriter<W: Write> {
    sink: Sink<W>,
    topic: String,
}

enum Sink<W: Write> {
    Value(W),
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W, format: OutputFormat, topic: &str) -> Self {
        let sink = match format {
            OutputFormat::Value => Sink::Value(out),
            OutputFormat::Jsonl => Sink::Jsonl(out),
            OutputFormat::Csv => {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
                // Buffered by the csv writer; an I/O error surfaces on the first flush.
                let _ = w.write_record(["topic", "partition", "offset", "timestamp", "key", "value"]);
                Sink::Csv(Box::new(w))
            }
        };
        RecordWriter { sink, topic: topic.to_string() }
    }

    pub fn write(&mut self, partition: u32, r: &Record<'_>) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Value(out) => {
                out.write_all(r.value)?;
                out.write_all(b"\n")?;
            }
            Sink::Jsonl(out) => {
                // A value that is a JSON object or array on one line is embedded as its stored
                // bytes, anything else as a string.
                let raw = std::str::from_utf8(r.value)
                    .ok()
                    .filter(|t| t.trim_start().starts_with(['{', '[']) && !t.contains(['\n', '\r']))
                    .and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
                let line = JsonLine {
                    topic: &self.topic,
                    partition,
                    offset: r.offset,
                    timestamp: rfc3339(r.timestamp_ms),
                    key: (!r.key.is_empty()).then(|| String::from_utf8_lossy(r.key)),
                    value: match raw {
                        Some(v) => JsonValue::Stored(v),
                        None => JsonValue::Text(String::from_utf8_lossy(r.value)),
                    },
                    headers: r
                        .headers()
                        .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
                        .collect(),
                };
                // Written as one buffer, so that a closed pipe is an I/O error of the write.
                let mut bytes = serde_json::to_vec(&line)?;
                bytes.push(b'\n');
                out.write_all(&bytes)?;
            }
            Sink::Csv(w) => {
                let written = w.write_record([
                    self.topic.as_str(),
                    &partition.to_string(),
                    &r.offset.to_string(),
                    &rfc3339(r.timestamp_ms),
                    &String::from_utf8_lossy(r.key),
                    &String::from_utf8_lossy(r.value),
                ]);
                written.map_err(csv_io)?;
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Value(out) | Sink::Jsonl(out) => out.flush()?,
            Sink::Csv(w) => w.flush()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON-lines input accepts value, key, RFC 3339 timestamps and headers.
    #[test]
    fn jsonl_input() {
        let r = parse_input_line(
            r#"{"key":"d1","value":{"t":21.5},"timestamp":"2026-01-01T00:00:00Z","headers":{"a":"b"}}"#,
            InputFormat::Jsonl,
            None,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some("d1"));
        assert_eq!(r.value, br#"{"t":21.5}"#);
        assert_eq!(r.timestamp_ms, Some(1_767_225_600_000));
        assert_eq!(r.headers, vec![("a".to_string(), "b".to_string())]);
        assert!(parse_input_line("nope", InputFormat::Jsonl, None).is_err());
        assert!(parse_input_line(r#"{"key":"x"}"#, InputFormat::Jsonl, None).is_err());
    }
}
