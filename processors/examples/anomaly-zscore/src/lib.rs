//! Rolling z-score anomaly detection per key: each reading of a JSON numeric field is scored
//! against the mean and standard deviation of the key's previous `window` readings, and an
//! alert `{"key":..,"value":..,"mean":..,"std":..,"z":..,"offset":..}` is emitted, with the
//! reading's key and time, when `|z|` reaches `threshold`. Normal readings produce nothing.
//!
//! Two things keep one anomaly from becoming many alerts or from hiding the next one: a key
//! alerts only after `cooldown` normal readings in a row since its last anomalous reading (one
//! alert per episode of anomalies, however long), and every reading enters the baseline
//! clipped to `mean ± clip·std`, so a spike does not inflate the deviation it is measured
//! against, while a lasting level shift still moves the baseline over time.
//!
//! Stateful: windows and cooldown counts survive restarts. The running sums are part of the
//! snapshot, so a restored instance computes the same bits as one that never stopped.
//! See README.md for parameters and for how the defaults were tuned on NAB data.
#![no_std]

extern crate alloc;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::binary::{Reader, Write as _};
use silt_processor::{json, math, Batch, Error, Output, Params, Processor, Stateful};

/// Snapshot layout version, the first byte of every snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// Default for `keys_max`: a window of 288 readings costs about 2.4 KB a key, so 10,000 keys
/// stay within a few tens of MB of the 64 MiB memory limit.
const KEYS_MAX_DEFAULT: usize = 10_000;
/// Largest `window`: bounds per-key memory (8 bytes a reading).
const WINDOW_MAX: usize = 100_000;

/// Defaults, tuned on the NAB sample with the `nab_evaluation` test (README.md has the grid
/// and the numbers): a day of 5-minute readings as the window, and the threshold and cooldown
/// that flagged the most labelled windows per false alarm.
const WINDOW_DEFAULT: usize = 288;
const THRESHOLD_DEFAULT: f64 = 5.5;
const COOLDOWN_DEFAULT: u32 = 96;

/// One key's recent readings and running sums.
///
/// The sums are of `x - shift`, and are recomputed from the readings (with `shift` moved to
/// their mean) every `window` updates, which keeps the variance from cancelling away when
/// values are large next to their spread, and keeps rounding drift bounded.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    values: VecDeque<f64>,
    shift: f64,
    sum: f64,
    sum_sq: f64,
    updates: u32,
    /// Normal readings in a row since the last anomalous one (saturating; starts saturated,
    /// so the first anomaly of a key alerts).
    quiet: u32,
}

impl Series {
    fn new() -> Self {
        Series { values: VecDeque::new(), shift: 0.0, sum: 0.0, sum_sq: 0.0, updates: 0, quiet: u32::MAX }
    }

    fn mean_std(&self) -> (f64, f64) {
        let n = self.values.len() as f64;
        let m = self.sum / n;
        let var = (self.sum_sq / n - m * m).max(0.0);
        (self.shift + m, math::sqrt(var))
    }

    fn push(&mut self, x: f64, window: usize) {
        if self.values.len() == window {
            if let Some(old) = self.values.pop_front() {
                let d = old - self.shift;
                self.sum -= d;
                self.sum_sq -= d * d;
            }
        }
        self.values.push_back(x);
        let d = x - self.shift;
        self.sum += d;
        self.sum_sq += d * d;
        self.updates += 1;
        if self.updates as usize >= window {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        let n = self.values.len() as f64;
        self.shift = self.values.iter().sum::<f64>() / n;
        self.sum = self.values.iter().map(|x| x - self.shift).sum();
        self.sum_sq = self.values.iter().map(|x| (x - self.shift) * (x - self.shift)).sum();
        self.updates = 0;
    }
}

/// The processor.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyZscore {
    field: String,
    window: usize,
    threshold: f64,
    min_count: usize,
    min_std: f64,
    cooldown: u32,
    clip: f64,
    keys_max: usize,
    series: BTreeMap<Vec<u8>, Series>,
    value: Vec<u8>,
}

impl Processor for AnomalyZscore {
    fn init(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&[
            "field",
            "window",
            "threshold",
            "min_count",
            "min_std",
            "cooldown",
            "keys_max",
            "clip",
        ])?;
        let window: usize = params.parse_or("window", WINDOW_DEFAULT)?;
        if !(2..=WINDOW_MAX).contains(&window) {
            return Err(params.invalid("window", "must be between 2 and 100000 readings"));
        }
        let threshold: f64 = params.parse_or("threshold", THRESHOLD_DEFAULT)?;
        if !(threshold > 0.0 && threshold.is_finite()) {
            return Err(params.invalid("threshold", "must be a positive number"));
        }
        let min_count: usize = params.parse_or("min_count", window)?;
        if !(2..=window).contains(&min_count) {
            return Err(params.invalid("min_count", "must be between 2 and window"));
        }
        let min_std: f64 = params.parse_or("min_std", 0.0)?;
        if !(min_std >= 0.0 && min_std.is_finite()) {
            return Err(params.invalid("min_std", "must be a non-negative number"));
        }
        let clip: f64 = params.parse_or("clip", threshold)?;
        if !(clip >= 0.0 && clip.is_finite()) {
            return Err(params.invalid("clip", "must be a non-negative number (0: no clipping)"));
        }
        Ok(AnomalyZscore {
            field: String::from(params.get("field").unwrap_or("value")),
            window,
            threshold,
            min_count,
            min_std,
            cooldown: params.parse_or("cooldown", COOLDOWN_DEFAULT)?,
            clip,
            keys_max: params.parse_or("keys_max", KEYS_MAX_DEFAULT)?,
            series: BTreeMap::new(),
            value: Vec::new(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
        for record in batch.records() {
            let Some(x) = json::number(record.value, &self.field) else { continue };
            if !self.series.contains_key(record.key) {
                if self.series.len() >= self.keys_max {
                    return Err(Error::msg(alloc::format!(
                        "more than {} keys at offset {}; raise --param keys_max",
                        self.keys_max,
                        record.offset
                    )));
                }
                self.series.insert(record.key.to_vec(), Series::new());
            }
            let Some(series) = self.series.get_mut(record.key) else { continue };
            if series.values.len() < self.min_count {
                series.push(x, self.window);
                continue;
            }
            let (mean, std) = series.mean_std();
            let spread = std.max(self.min_std);
            let z = if x == mean {
                0.0
            } else if spread > 0.0 {
                (x - mean) / spread
            } else {
                // A flat baseline: any change is infinitely unusual.
                if x > mean {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                }
            };
            let anomalous = z.abs() >= self.threshold;
            // Clip what enters the baseline, so one spike does not widen its own yardstick. A
            // flat baseline is not clipped: it could then never follow a change of level.
            if self.clip > 0.0 && spread > 0.0 {
                let limit = self.clip * spread;
                series.push(x.max(mean - limit).min(mean + limit), self.window);
            } else {
                series.push(x, self.window);
            }
            // One alert per episode: only after `cooldown` normal readings in a row.
            let quiet = series.quiet;
            series.quiet = if anomalous { 0 } else { series.quiet.saturating_add(1) };
            if anomalous && quiet >= self.cooldown {
                self.value.clear();
                json::Object::new(&mut self.value)
                    .string_lossy("key", record.key)
                    .number("value", x)
                    .number("mean", mean)
                    .number("std", std)
                    .number("z", z)
                    .uint("offset", record.offset);
                out.emit(record.timestamp_ms, record.key, &self.value);
            }
        }
        Ok(())
    }
}

impl Stateful for AnomalyZscore {
    /// Version byte, key count, then per key (in key order): key, quiet count, update count,
    /// shift, sum, sum of squares, reading count and the readings oldest first.
    fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_u8(SNAPSHOT_VERSION);
        out.put_varint(self.series.len() as u64);
        for (key, s) in &self.series {
            out.put_bytes(key);
            out.put_varint(u64::from(s.quiet));
            out.put_varint(u64::from(s.updates));
            out.put_f64(s.shift);
            out.put_f64(s.sum);
            out.put_f64(s.sum_sq);
            out.put_varint(s.values.len() as u64);
            for v in &s.values {
                out.put_f64(*v);
            }
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes, "anomaly-zscore snapshot");
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(r.error("unknown snapshot version"));
        }
        let key_count = r.count(self.keys_max)?;
        // Every entry takes at least 28 bytes, so a corrupt count cannot reserve much.
        let mut pairs: Vec<(Vec<u8>, Series)> = Vec::with_capacity(key_count.min(r.remaining() / 28));
        for _ in 0..key_count {
            let key = r.bytes()?;
            if pairs.last().is_some_and(|(p, _)| p.as_slice() >= key) {
                return Err(r.error("keys not in increasing order"));
            }
            let quiet = u32::try_from(r.varint()?).map_err(|_| r.error("quiet count out of range"))?;
            let updates = r.count(self.window)? as u32;
            let (shift, sum, sum_sq) = (r.f64()?, r.f64()?, r.f64()?);
            // A snapshot taken with a larger window is cut to this one's newest readings.
            let n = r.count(WINDOW_MAX)?;
            let mut values = VecDeque::with_capacity(n.min(self.window));
            for _ in 0..n {
                values.push_back(r.f64()?);
            }
            let mut s = Series { values, shift, sum, sum_sq, updates, quiet };
            if s.values.len() > self.window {
                let extra = s.values.len() - self.window;
                s.values.drain(..extra);
                s.recompute();
            }
            pairs.push((key.to_vec(), s));
        }
        r.finish()?;
        // Sorted and unique (checked above): the map is built bottom-up in one pass.
        self.series = BTreeMap::from_iter(pairs);
        Ok(())
    }
}

silt_processor::export!(AnomalyZscore, stateful);

#[cfg(any(test, feature = "nab"))]
pub mod nab;
#[cfg(test)]
mod tests;
