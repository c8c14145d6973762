//! Tumbling event-time windows per key: count, min, max and mean of one JSON numeric field,
//! emitted once per key and window when the window closes, with the window's start as the
//! output record's time.
//!
//! A window `[start, start + window_ms)` of a key closes when that key's watermark (the
//! largest event time seen for the key, minus `lateness_ms`) reaches its end; the closing
//! event itself is then added to its own, newer window. An event for a window that already
//! closed is late: it is counted, dropped, and the count is reported in the key's next
//! aggregate (`late`). Windows of a key that goes silent stay open until it speaks again: the
//! watermark is per key and no clock exists in a processor (see README.md).
//!
//! Stateful: open windows, watermarks and late counts survive restarts; snapshots list keys
//! and windows in order, so the same state always encodes to the same bytes.
#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::binary::{Reader, Write as _};
use silt_processor::{json, Batch, Error, Output, Params, Processor, Stateful};

/// Snapshot layout version, the first byte of every snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// Default for `keys_max`, a bound on state (a key with one open window costs about 100
/// bytes) that a partition of sensors stays far below.
const KEYS_MAX_DEFAULT: usize = 100_000;
/// Most windows one key may have open at once: `lateness_ms / window_ms + 1` are needed, so
/// this caps that ratio.
const OPEN_WINDOWS_MAX: u64 = 1_000;

/// The running aggregate of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Aggregate {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Aggregate {
    fn new(x: f64) -> Self {
        Aggregate { count: 1, min: x, max: x, sum: x }
    }
    fn add(&mut self, x: f64) {
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.sum += x;
    }
}

/// What the processor keeps per key.
#[derive(Debug, Clone, PartialEq, Default)]
struct KeyState {
    /// Largest event time seen for the key, minus the allowed lateness. `i64::MIN` before the
    /// first event.
    watermark_ms: i64,
    /// Late events dropped since the key's last emitted aggregate.
    late: u64,
    /// Open windows by start time.
    windows: BTreeMap<i64, Aggregate>,
}

/// The processor.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAggregate {
    field: String,
    window_ms: i64,
    lateness_ms: i64,
    keys_max: usize,
    keys: BTreeMap<Vec<u8>, KeyState>,
    value: Vec<u8>,
}

impl WindowAggregate {
    /// Start of the window holding `ts`; floor division, so negative times work too.
    fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms) * self.window_ms
    }

    /// Total late events dropped and not yet reported, over all keys.
    pub fn pending_late(&self) -> u64 {
        self.keys.values().map(|k| k.late).sum()
    }
}

impl Processor for WindowAggregate {
    fn init(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&["field", "window_ms", "lateness_ms", "keys_max"])?;
        let window_ms: i64 = params.parse_or("window_ms", 60_000)?;
        if window_ms <= 0 {
            return Err(params.invalid("window_ms", "must be at least 1"));
        }
        let lateness_ms: i64 = params.parse_or("lateness_ms", 0)?;
        if lateness_ms < 0 {
            return Err(params.invalid("lateness_ms", "must not be negative"));
        }
        if (lateness_ms / window_ms) as u64 >= OPEN_WINDOWS_MAX {
            return Err(params.invalid("lateness_ms", "must be under 1000 windows"));
        }
        let keys_max = params.parse_or("keys_max", KEYS_MAX_DEFAULT)?;
        Ok(WindowAggregate {
            field: String::from(params.get("field").unwrap_or("temp")),
            window_ms,
            lateness_ms,
            keys_max,
            keys: BTreeMap::new(),
            value: Vec::new(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
        for record in batch.records() {
            let Some(x) = json::number(record.value, &self.field) else { continue };
            let ts = record.timestamp_ms;
            let start = self.window_start(ts);
            if !self.keys.contains_key(record.key) {
                if self.keys.len() >= self.keys_max {
                    return Err(Error::msg(alloc::format!(
                        "more than {} keys at offset {}; raise --param keys_max",
                        self.keys_max,
                        record.offset
                    )));
                }
                let fresh = KeyState { watermark_ms: i64::MIN, ..KeyState::default() };
                self.keys.insert(record.key.to_vec(), fresh);
            }
            let Some(state) = self.keys.get_mut(record.key) else { continue };
            state.watermark_ms = state.watermark_ms.max(ts.saturating_sub(self.lateness_ms));
            if start.saturating_add(self.window_ms) <= state.watermark_ms {
                state.late += 1;
                continue;
            }
            match state.windows.get_mut(&start) {
                Some(agg) => agg.add(x),
                None => {
                    state.windows.insert(start, Aggregate::new(x));
                }
            }
            // Close every window the watermark has passed, oldest first.
            while let Some(entry) = state.windows.first_entry() {
                let window_start = *entry.key();
                let window_end = window_start.saturating_add(self.window_ms);
                if window_end > state.watermark_ms {
                    break;
                }
                let agg = entry.remove();
                self.value.clear();
                json::Object::new(&mut self.value)
                    .string_lossy("key", record.key)
                    .int("window_start", window_start)
                    .int("window_end", window_end)
                    .uint("count", agg.count)
                    .number("min", agg.min)
                    .number("max", agg.max)
                    .number("mean", agg.sum / agg.count as f64)
                    .uint("late", state.late);
                state.late = 0;
                out.emit(window_start, record.key, &self.value);
            }
        }
        Ok(())
    }
}

impl Stateful for WindowAggregate {
    /// Version byte, key count, then per key (in key order): key, watermark, late count,
    /// window count and per window (in start order) start, count, min, max, sum.
    fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_u8(SNAPSHOT_VERSION);
        out.put_varint(self.keys.len() as u64);
        for (key, state) in &self.keys {
            out.put_bytes(key);
            out.put_i64(state.watermark_ms);
            out.put_varint(state.late);
            out.put_varint(state.windows.len() as u64);
            for (start, agg) in &state.windows {
                out.put_i64(*start);
                out.put_varint(agg.count);
                out.put_f64(agg.min);
                out.put_f64(agg.max);
                out.put_f64(agg.sum);
            }
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes, "window-aggregate snapshot");
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(r.error("unknown snapshot version"));
        }
        let key_count = r.count(self.keys_max)?;
        // Every entry takes at least 11 bytes, so a corrupt count cannot reserve much.
        let mut pairs: Vec<(Vec<u8>, KeyState)> = Vec::with_capacity(key_count.min(r.remaining() / 11));
        for _ in 0..key_count {
            let key = r.bytes()?;
            if pairs.last().is_some_and(|(p, _)| p.as_slice() >= key) {
                return Err(r.error("keys not in increasing order"));
            }
            let watermark_ms = r.i64()?;
            let late = r.varint()?;
            let window_count = r.count(OPEN_WINDOWS_MAX as usize)?;
            let mut windows = BTreeMap::new();
            for _ in 0..window_count {
                let start = r.i64()?;
                let count = r.varint()?;
                let agg = Aggregate { count, min: r.f64()?, max: r.f64()?, sum: r.f64()? };
                if count == 0 || windows.insert(start, agg).is_some() {
                    return Err(r.error("empty or repeated window"));
                }
            }
            pairs.push((key.to_vec(), KeyState { watermark_ms, late, windows }));
        }
        r.finish()?;
        // Sorted and unique (checked above): the map is built bottom-up in one pass.
        self.keys = BTreeMap::from_iter(pairs);
        Ok(())
    }
}

silt_processor::export!(WindowAggregate, stateful);

#[cfg(test)]
mod tests {
    use super::*;
    use silt_processor::testing::{Harness, OutputRecord};

    fn temp(t: f64) -> String {
        alloc::format!(r#"{{"device":"d","temp":{t}}}"#)
    }

    fn summary(out: &[OutputRecord]) -> Vec<(i64, String, u64, f64, f64, f64, u64)> {
        out.iter()
            .map(|r| {
                (
                    r.timestamp_ms,
                    String::from(r.key_str()),
                    r.number("count").unwrap() as u64,
                    r.number("min").unwrap(),
                    r.number("max").unwrap(),
                    r.number("mean").unwrap(),
                    r.number("late").unwrap() as u64,
                )
            })
            .collect()
    }

    /// A window closes when an event at or past its end arrives for the same key; the
    /// aggregate carries the window start as its time, which lies before the batch's first
    /// timestamp (a negative delta), and other keys' windows stay open.
    #[test]
    fn tumbling_windows_per_key() {
        let mut h = Harness::<WindowAggregate>::new(&[("window_ms", "1000")]).unwrap();
        let out = h
            .process(&[
                (100, "a", temp(1.0)),
                (900, "a", temp(3.0)),
                (950, "b", temp(10.0)),
                (999, "a", temp(2.0)),
            ])
            .unwrap();
        assert!(out.is_empty());
        // This batch's first timestamp is 1500; the closed window starts at 0: delta -1500.
        let out = h.process(&[(1_500, "a", temp(5.0)), (1_600, "a", temp(6.0))]).unwrap();
        assert_eq!(summary(&out), [(0, String::from("a"), 3, 1.0, 3.0, 2.0, 0)]);
        assert_eq!(
            out[0].value_str(),
            r#"{"key":"a","window_start":0,"window_end":1000,"count":3,"min":1,"max":3,"mean":2,"late":0}"#
        );
        // "b" closes only when "b" moves on; "a" skips a window: only the open one is emitted.
        let out = h.process(&[(3_000, "b", temp(0.0)), (3_100, "a", temp(7.0))]).unwrap();
        assert_eq!(
            summary(&out),
            [(0, String::from("b"), 1, 10.0, 10.0, 10.0, 0), (1_000, String::from("a"), 2, 5.0, 6.0, 5.5, 0)]
        );
    }

    /// Late events are dropped and counted into the key's next aggregate; with lateness,
    /// windows wait for stragglers.
    #[test]
    fn late_events() {
        let mut h = Harness::<WindowAggregate>::new(&[("window_ms", "1000")]).unwrap();
        h.process(&[(100, "a", temp(1.0)), (1_100, "a", temp(2.0))]).unwrap();
        let out =
            h.process(&[(200, "a", temp(100.0)), (300, "a", temp(100.0)), (2_000, "a", temp(3.0))]).unwrap();
        assert_eq!(summary(&out), [(1_000, String::from("a"), 1, 2.0, 2.0, 2.0, 2)]);

        let mut h =
            Harness::<WindowAggregate>::new(&[("window_ms", "1000"), ("lateness_ms", "500")]).unwrap();
        let out =
            h.process(&[(100, "a", temp(1.0)), (1_200, "a", temp(2.0)), (900, "a", temp(3.0))]).unwrap();
        assert!(out.is_empty(), "watermark 700 has not passed 1000");
        let out = h.process(&[(1_500, "a", temp(4.0)), (950, "a", temp(9.0))]).unwrap();
        assert_eq!(summary(&out), [(0, String::from("a"), 2, 1.0, 3.0, 2.0, 0)]);
        assert_eq!(h.processor().pending_late(), 1);
    }

    /// Negative event times land in the right (floor) window.
    #[test]
    fn negative_times() {
        let mut h = Harness::<WindowAggregate>::new(&[("window_ms", "1000")]).unwrap();
        let out = h.process(&[(-1, "a", temp(1.0)), (-1_000, "a", temp(2.0)), (0, "a", temp(3.0))]).unwrap();
        assert_eq!(summary(&out), [(-1_000, String::from("a"), 2, 1.0, 2.0, 1.5, 0)]);
    }

    /// Restarting from a snapshot between batches gives the same output as running through.
    #[test]
    fn snapshot_restore_is_invisible() {
        let params = [("window_ms", "250"), ("lateness_ms", "300")];
        let mut straight = Harness::<WindowAggregate>::new(&params).unwrap();
        let mut restarted = Harness::<WindowAggregate>::new(&params).unwrap();
        for b in 0..8i64 {
            let batch: Vec<(i64, String, String)> = (0..25)
                .map(|i| {
                    let t = b * 400 + (i * 37) % 500;
                    (t, alloc::format!("k{}", i % 3), temp((i % 7) as f64))
                })
                .collect();
            let a = straight.process(&batch).unwrap();
            restarted.restart().unwrap();
            assert_eq!(a, restarted.process(&batch).unwrap());
        }
        let snap = straight.snapshot().unwrap();
        assert_eq!(snap, restarted.snapshot().unwrap());
        for cut in 0..snap.len() {
            assert!(straight.restore(&snap[..cut]).is_err());
        }
    }

    /// Parameters are checked.
    #[test]
    fn bad_params() {
        assert!(Harness::<WindowAggregate>::new(&[("window_ms", "0")]).is_err());
        assert!(Harness::<WindowAggregate>::new(&[("lateness_ms", "-1")]).is_err());
        assert!(Harness::<WindowAggregate>::new(&[("window_ms", "1"), ("lateness_ms", "5000")]).is_err());
    }
}
