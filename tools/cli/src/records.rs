//! Parsing input lines into records and writing records out as values, JSON lines or CSV.

use std::io::Write;

use anyhow::{bail, Context};
use clap::ValueEnum;
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
            let v: serde_json::Value = serde_json::from_str(line).context("not a JSON object")?;
            let Some(obj) = v.as_object() else { bail!("not a JSON object") };
            let value = match obj.get("value") {
                Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
                Some(other) => other.to_string().into_bytes(),
                None => bail!("no \"value\" field"),
            };
            let key = match obj.get("key") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
                None => key.map(str::to_string),
            };
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
                let text = String::from_utf8_lossy(r.value);
                // A value that is JSON is embedded as JSON, anything else as a string.
                let value = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .filter(|v| v.is_object() || v.is_array())
                    .unwrap_or(serde_json::Value::String(text.into_owned()));
                let mut obj = serde_json::json!({
                    "topic": self.topic,
                    "partition": partition,
                    "offset": r.offset,
                    "timestamp": rfc3339(r.timestamp_ms),
                    "key": if r.key.is_empty() { serde_json::Value::Null } else { String::from_utf8_lossy(r.key).into() },
                    "value": value,
                });
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned().into(),
                        )
                    })
                    .collect();
                if !headers.is_empty() {
                    obj["headers"] = headers.into();
                }
                serde_json::to_writer(&mut *out, &obj)?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(w) => {
                w.write_record([
                    self.topic.as_str(),
                    &partition.to_string(),
                    &r.offset.to_string(),
                    &rfc3339(r.timestamp_ms),
                    &String::from_utf8_lossy(r.key),
                    &String::from_utf8_lossy(r.value),
                ])?;
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
