//! Send on change (a deadband): per key, passes a record through byte for byte when its JSON
//! numeric field moved by more than `delta` from the last value passed for that key, or when
//! `max_silence_ms` of event time went by since; drops the records in between, which tell a
//! reader nothing the last passed one did not (to within `delta`).
//!
//! Meant for the device tier: on a device it turns a slowly moving reading into a few frames
//! (a record passed unchanged costs a frame no more than the raw reading), and the records that
//! arrive are exactly those the same module would keep in the broker. Records without the
//! field pass unchanged, so no other information is lost. Stateful: the last passed value and
//! time per key survive restarts through `silt_snapshot`/`silt_restore`. See README.md.
#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::binary::{Reader, Write as _};
use silt_processor::{json, Batch, Error, Output, Params, Processor, Stateful};

/// Snapshot layout version, the first byte of every snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// Default for `keys_max`, as ema-smooth's: a fleet on one partition stays well under it.
const KEYS_MAX_DEFAULT: usize = 100_000;

/// The last record passed for one key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Passed {
    value: f64,
    timestamp_ms: i64,
}

/// The processor: parameters and the last passed reading per key.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOnChange {
    field: String,
    delta: f64,
    /// 0: off.
    max_silence_ms: i64,
    keys_max: usize,
    last: BTreeMap<Vec<u8>, Passed>,
}

impl SendOnChange {
    /// The last value passed for `key`.
    pub fn last_value(&self, key: &[u8]) -> Option<f64> {
        self.last.get(key).map(|p| p.value)
    }
}

impl Processor for SendOnChange {
    fn init(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&["field", "delta", "max_silence_ms", "keys_max"])?;
        let delta: f64 = params.parse("delta")?.ok_or_else(|| {
            Error::msg("give --param delta=...: how far a value must move from the last one sent")
        })?;
        if !(delta.is_finite() && delta > 0.0) {
            return Err(params.invalid("delta", "must be a finite number above 0"));
        }
        let max_silence_ms: i64 = params.parse_or("max_silence_ms", 0)?;
        if max_silence_ms < 0 {
            return Err(params.invalid("max_silence_ms", "must be 0 (off) or more"));
        }
        let keys_max = params.parse_or("keys_max", KEYS_MAX_DEFAULT)?;
        if keys_max == 0 {
            return Err(params.invalid("keys_max", "must be at least 1"));
        }
        Ok(SendOnChange {
            field: String::from(params.get("field").unwrap_or("value")),
            delta,
            max_silence_ms,
            keys_max,
            last: BTreeMap::new(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
        if self.last.is_empty() && batch.records().all(|r| json::number(r.value, &self.field).is_none()) {
            // Never a reading yet, and none in this batch: most likely a wrong `field`.
            return match batch.record_count() {
                0 => Ok(()),
                _ => Err(json::no_field_error(batch, &self.field)),
            };
        }
        for record in batch.records() {
            let Some(value) = json::number(record.value, &self.field) else {
                out.pass(&record);
                continue;
            };
            let now = Passed { value, timestamp_ms: record.timestamp_ms };
            let send = match self.last.get_mut(record.key) {
                Some(last) => {
                    let moved = (value - last.value).abs() > self.delta;
                    let silent = self.max_silence_ms > 0
                        && record.timestamp_ms.saturating_sub(last.timestamp_ms) >= self.max_silence_ms;
                    if moved || silent {
                        *last = now;
                    }
                    moved || silent
                }
                None => {
                    if self.last.len() >= self.keys_max {
                        return Err(Error::msg(alloc::format!(
                            "more than {} keys at offset {}; raise --param keys_max",
                            self.keys_max,
                            record.offset
                        )));
                    }
                    self.last.insert(record.key.to_vec(), now);
                    true
                }
            };
            if send {
                out.pass(&record);
            }
        }
        Ok(())
    }
}

impl Stateful for SendOnChange {
    /// Version byte, key count, then `(key, f64 value, i64 time)` in key order.
    fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_u8(SNAPSHOT_VERSION);
        out.put_varint(self.last.len() as u64);
        for (key, passed) in &self.last {
            out.put_bytes(key);
            out.put_f64(passed.value);
            out.put_i64(passed.timestamp_ms);
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes, "send-on-change snapshot");
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(r.error("unknown snapshot version"));
        }
        let count = r.count(self.keys_max)?;
        // Every entry takes at least 17 bytes, so a corrupt count cannot reserve much.
        let mut pairs: Vec<(Vec<u8>, Passed)> = Vec::with_capacity(count.min(r.remaining() / 17));
        for _ in 0..count {
            let key = r.bytes()?;
            if pairs.last().is_some_and(|(p, _)| p.as_slice() >= key) {
                return Err(r.error("keys not in increasing order"));
            }
            let passed = Passed { value: r.f64()?, timestamp_ms: r.i64()? };
            pairs.push((key.to_vec(), passed));
        }
        r.finish()?;
        self.last = BTreeMap::from_iter(pairs);
        Ok(())
    }
}

silt_processor::export!(SendOnChange, stateful);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use silt_processor::testing::{BatchBuilder, Harness};

    fn times(out: &[silt_processor::testing::OutputRecord]) -> Vec<i64> {
        out.iter().map(|r| r.timestamp_ms).collect()
    }

    /// The first reading of a key passes; later ones pass when they moved by more than delta
    /// from the last one passed (not from the last one seen), per key.
    #[test]
    fn passes_what_moved_by_more_than_delta() {
        let mut h = Harness::<SendOnChange>::new(&[("delta", "0.5")]).unwrap();
        let out = h
            .process(&[
                (1, "a", r#"{"value":20.0}"#),
                (2, "a", r#"{"value":20.3}"#),
                (3, "a", r#"{"value":20.5}"#),
                (4, "a", r#"{"value":20.6}"#),
                (5, "b", r#"{"value":30}"#),
                (6, "a", r#"{"value":19.4}"#),
                (7, "b", r#"{"value":30.4}"#),
            ])
            .unwrap();
        assert_eq!(times(&out), [1, 4, 5, 6], "20.6 moved 0.6 from 20.0; 19.4 moved 1.2 from 20.6");
        assert_eq!(h.processor().last_value(b"a"), Some(19.4));
    }

    /// Passed records are the input's, byte for byte, headers included.
    #[test]
    fn passes_records_unchanged() {
        let mut h = Harness::<SendOnChange>::new(&[("delta", "1")]).unwrap();
        let batch = BatchBuilder::new(0)
            .record_with_headers(1, "dev-1", r#"{"value":1.5}"#, &[("silt-device", "dev-1")])
            .record(2, "dev-1", r#"{"value":1.6}"#)
            .build();
        let raw = h.process_raw(&batch).unwrap();
        let view = silt_processor::Batch::new(&batch).unwrap();
        let first = view.records().next().unwrap();
        let mut want = Output::new();
        want.reset(view.first_timestamp_ms());
        want.pass(&first);
        assert_eq!(raw, want.as_bytes());
    }

    /// With max_silence_ms, a key that has not moved still sends one record that often (event
    /// time), so a reader can tell a steady sensor from a silent one.
    #[test]
    fn max_silence_sends_a_steady_reading_now_and_then() {
        let mut h = Harness::<SendOnChange>::new(&[("delta", "1"), ("max_silence_ms", "10000")]).unwrap();
        let batch: Vec<(i64, &str, &str)> = (0..25).map(|i| (i * 1_000, "a", r#"{"value":5}"#)).collect();
        assert_eq!(times(&h.process(&batch).unwrap()), [0, 10_000, 20_000]);
    }

    /// Records without the field pass; a field no record of the first batch has is an error
    /// naming it.
    #[test]
    fn other_records_pass_and_a_wrong_field_is_an_error() {
        let mut h = Harness::<SendOnChange>::new(&[("delta", "1")]).unwrap();
        let out = h.process(&[(1, "a", r#"{"value":1}"#), (2, "a", r#"{"status":"ok"}"#)]).unwrap();
        assert_eq!(times(&out), [1, 2]);
        let mut h = Harness::<SendOnChange>::new(&[("delta", "1"), ("field", "temp")]).unwrap();
        let e = h.process(&[(1, "a", r#"{"value":1}"#)]).unwrap_err();
        assert!(e.to_string().contains(r#""temp""#), "{e}");
    }

    /// Restarting from a snapshot between batches gives the same output as running through.
    #[test]
    fn snapshot_restore_is_invisible() {
        let batches: Vec<Vec<(i64, String, String)>> = (0..5)
            .map(|b| {
                (0..30)
                    .map(|i| {
                        let t = b * 30 + i;
                        let v = (t % 17) as f64 * 0.3;
                        (t, alloc::format!("dev-{}", t % 3), alloc::format!(r#"{{"value":{v}}}"#))
                    })
                    .collect()
            })
            .collect();
        let params = [("delta", "0.7"), ("max_silence_ms", "20")];
        let mut straight = Harness::<SendOnChange>::new(&params).unwrap();
        let mut restarted = Harness::<SendOnChange>::new(&params).unwrap();
        for batch in &batches {
            let a = straight.process(batch).unwrap();
            restarted.restart().unwrap();
            assert_eq!(a, restarted.process(batch).unwrap());
        }
        assert_eq!(straight.snapshot().unwrap(), restarted.snapshot().unwrap());
    }

    /// Bad parameters fail init with a message naming them.
    #[test]
    fn bad_params() {
        let err = |p: &[(&str, &str)]| Harness::<SendOnChange>::new(p).unwrap_err().to_string();
        assert!(err(&[]).contains("delta"));
        assert!(err(&[("delta", "0")]).contains("`delta`"));
        assert!(err(&[("delta", "inf")]).contains("`delta`"));
        assert!(err(&[("delta", "1"), ("max_silence_ms", "-1")]).contains("`max_silence_ms`"));
        assert!(err(&[("delta", "1"), ("dleta", "1")]).contains("unknown parameter `dleta`"));
    }
}
