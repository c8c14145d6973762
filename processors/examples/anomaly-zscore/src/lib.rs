//! Anomaly detection per record key on a JSON numeric field, with windows in time: each
//! reading is scored against robust statistics (median and median absolute deviation) of the
//! key's readings in the `window` before it, optionally after subtracting what the same time
//! one `period` earlier looked like (seasonality). Three kinds of anomaly raise an alert
//! `{"key":..,"kind":..,"value":..,"expected":..,"spread":..,"z":..,"offset":..}` with the
//! reading's key and time:
//!
//! - `spike`: `|z| >= threshold`, `z = (value - expected) / max(spread, min_std)`;
//! - `level_shift`: the median of the last `shift_window` moved `shift` spreads away from the
//!   median of the window before it;
//! - `drift`: the window's median moved `drift` spreads (of the window then) from its median
//!   one window earlier: a slow, lasting move that no single reading and no short stretch
//!   shows.
//!
//! A key alerts once per episode: only when its last anomalous reading is at least `cooldown`
//! old. Records without the field, records older than their key's latest, and keys past
//! `keys_max` are skipped and counted (`silt processor status` shows the counts); a batch in
//! which no record has the field, before the processor ever read one, is an error that names
//! the field.
//!
//! Stateful: every key's baseline, seasonal profile, past medians, statistics and episode, and
//! the counters, are snapshotted in key order, so a restored instance computes the same bits
//! as one that never stopped. See README.md for parameters and how the defaults were tuned.
#![no_std]

extern crate alloc;

mod series;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::binary::{Reader, Write as _};
use silt_processor::{json, Batch, Counters, Error, Output, Params, Processor, Stateful};

use series::{Series, BASELINE_MIN};

/// Snapshot layout version, the first byte of every snapshot (1 was the reading-count
/// detector; a new module version starts from fresh state, so it is never read here).
const SNAPSHOT_VERSION: u8 = 2;
/// What the init check lets all keys' worst case take of the 64 MiB memory limit.
const MEMORY_BUDGET: usize = 48 << 20;
/// Most readings a baseline may hold.
const MAX_READINGS_MAX: usize = 100_000;
/// Most slots a seasonal profile may have.
const SEASON_SLOTS_MAX: usize = 1440;
/// Relative size of what rounding can make of a difference: a reading this close to what
/// was expected (relative to either) deviates by nothing.
const ROUNDING: f64 = 1e-12;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Defaults, tuned on the NAB sample with the `nab_evaluation` test (README.md has the grid
/// and the numbers).
const WINDOW_DEFAULT_MS: i64 = 4 * DAY_MS;
const WARMUP_DEFAULT_MS: i64 = DAY_MS;
const THRESHOLD_DEFAULT: f64 = 5.5;
const COOLDOWN_DEFAULT_MS: i64 = 8 * 60 * MINUTE_MS;
const SHIFT_DEFAULT: f64 = 5.0;
const DRIFT_DEFAULT: f64 = 8.0;
const SEASON_SLOTS_DEFAULT: usize = 96;
const MAX_READINGS_DEFAULT: usize = 1024;
const KEYS_MAX_DEFAULT: usize = 2000;

/// Parameters every key takes from the deployment, or from `name@PREFIX` overrides for keys
/// that start with `PREFIX` (the longest matching prefix wins).
const PER_KEY: [&str; 4] = ["threshold", "min_std", "cooldown", "period"];

/// What a key is scored with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Settings {
    threshold: f64,
    min_std: f64,
    cooldown_ms: i64,
    /// 0: no seasonality.
    period_ms: i64,
}

/// A duration parameter: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`), such as `1d`,
/// `90m` or `1.5h`; a bare `0` where `zero` allows it. `None` when not given.
fn duration(params: &Params<'_>, name: &str, zero: bool) -> Result<Option<i64>, Error> {
    let Some(text) = params.get(name) else { return Ok(None) };
    if zero && text == "0" {
        return Ok(Some(0));
    }
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => MINUTE_MS,
        "h" => 60 * MINUTE_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => {
            return Err(params
                .invalid(name, "must be a duration with a unit (ms, s, m, h, d or w), such as 1d or 90m"))
        }
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && n * unit_ms as f64 <= 1e15 && n * unit_ms as f64 >= 1.0 => {
            Ok(Some((n * unit_ms as f64) as i64))
        }
        _ => Err(params.invalid(name, "must be a positive duration of at least 1ms, such as 1d or 90m")),
    }
}

fn settings(params: &Params<'_>, suffix: &str, base: Settings) -> Result<Settings, Error> {
    let name = |p: &str| alloc::format!("{p}{suffix}");
    let threshold: f64 = params.parse_or(&name("threshold"), base.threshold)?;
    if !(threshold > 0.0 && threshold.is_finite()) {
        return Err(params.invalid(&name("threshold"), "must be a positive number"));
    }
    let min_std: f64 = params.parse_or(&name("min_std"), base.min_std)?;
    if !(min_std >= 0.0 && min_std.is_finite()) {
        return Err(params.invalid(&name("min_std"), "must be a non-negative number"));
    }
    let cooldown_ms = duration(params, &name("cooldown"), true)?.unwrap_or(base.cooldown_ms);
    let period_ms = duration(params, &name("period"), true)?.unwrap_or(base.period_ms);
    Ok(Settings { threshold, min_std, cooldown_ms, period_ms })
}

/// The processor.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyZscore {
    field: String,
    window_ms: i64,
    warmup_ms: i64,
    shift: f64,
    shift_window_ms: i64,
    drift: f64,
    /// Least time between two readings of a baseline: `window / max_readings`.
    gap_ms: i64,
    max_readings: usize,
    season_slots: usize,
    keys_max: usize,
    defaults: Settings,
    /// `(prefix, settings)`, longest prefix first.
    overrides: Vec<(Vec<u8>, Settings)>,
    series: BTreeMap<Vec<u8>, Series>,
    skipped_no_field: u64,
    skipped_out_of_order: u64,
    skipped_keys_max: u64,
    scratch: Vec<f64>,
    value: Vec<u8>,
}

impl AnomalyZscore {
    fn settings_for(&self, key: &[u8]) -> Settings {
        self.overrides.iter().find(|(prefix, _)| key.starts_with(prefix)).map_or(self.defaults, |(_, s)| *s)
    }

    fn new_series(&self, key: &[u8]) -> Series {
        Series::new((self.settings_for(key).period_ms > 0).then_some(self.season_slots))
    }
}

impl Processor for AnomalyZscore {
    fn init(params: &Params<'_>) -> Result<Self, Error> {
        let known = [
            "field",
            "window",
            "warmup",
            "threshold",
            "min_std",
            "cooldown",
            "period",
            "season_slots",
            "shift",
            "shift_window",
            "drift",
            "max_readings",
            "keys_max",
        ];
        let overridden: Vec<&str> = params.iter().map(|(k, _)| k).filter(|k| k.contains('@')).collect();
        for k in &overridden {
            let (base, prefix) = k.split_once('@').unwrap_or((k, ""));
            if !PER_KEY.contains(&base) || prefix.is_empty() {
                return Err(
                    params.invalid(k, "only threshold, min_std, cooldown and period take @KEY_PREFIX")
                );
            }
        }
        if let Some((name, _)) = params.iter().find(|(k, _)| !k.contains('@') && !known.contains(k)) {
            let mut known = known.join(", ");
            known.push_str(", and threshold, min_std, cooldown or period followed by @KEY_PREFIX");
            return Err(Error::UnknownParam { name: String::from(name), known });
        }

        let window_ms = duration(params, "window", false)?.unwrap_or(WINDOW_DEFAULT_MS);
        let warmup_ms = duration(params, "warmup", true)?.unwrap_or(WARMUP_DEFAULT_MS.min(window_ms));
        let shift: f64 = params.parse_or("shift", SHIFT_DEFAULT)?;
        if !(shift >= 0.0 && shift.is_finite()) {
            return Err(params.invalid("shift", "must be a non-negative number of spreads (0: off)"));
        }
        let shift_window_ms = duration(params, "shift_window", false)?.unwrap_or(window_ms / 8);
        if shift_window_ms >= window_ms {
            return Err(params.invalid("shift_window", "must be shorter than window"));
        }
        let drift: f64 = params.parse_or("drift", DRIFT_DEFAULT)?;
        if !(drift >= 0.0 && drift.is_finite()) {
            return Err(params.invalid("drift", "must be a non-negative number (0: off)"));
        }
        let max_readings: usize = params.parse_or("max_readings", MAX_READINGS_DEFAULT)?;
        if !(BASELINE_MIN..=MAX_READINGS_MAX).contains(&max_readings) {
            return Err(params.invalid("max_readings", "must be between 8 and 100000"));
        }
        let season_slots: usize = params.parse_or("season_slots", SEASON_SLOTS_DEFAULT)?;
        if !(1..=SEASON_SLOTS_MAX).contains(&season_slots) {
            return Err(params.invalid("season_slots", "must be between 1 and 1440"));
        }
        let keys_max: usize = params.parse_or("keys_max", KEYS_MAX_DEFAULT)?;
        let base = Settings {
            threshold: THRESHOLD_DEFAULT,
            min_std: 0.0,
            cooldown_ms: COOLDOWN_DEFAULT_MS,
            period_ms: 0,
        };
        let defaults = settings(params, "", base)?;
        let mut prefixes: Vec<&str> =
            overridden.iter().filter_map(|k| k.split_once('@')).map(|(_, p)| p).collect();
        prefixes.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        prefixes.dedup();
        let mut overrides = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            overrides.push((
                prefix.as_bytes().to_vec(),
                settings(params, &alloc::format!("@{prefix}"), defaults)?,
            ));
        }
        let seasonal = defaults.period_ms > 0 || overrides.iter().any(|(_, s)| s.period_ms > 0);
        let per_key = max_readings * 16 + if seasonal { season_slots * 40 } else { 0 } + 256;
        if keys_max.saturating_mul(per_key) > MEMORY_BUDGET {
            return Err(params.invalid(
                "keys_max",
                alloc::format!(
                    "keys_max × (max_readings × 16 B + season_slots × 40 B) must stay within 48 MiB; \
                     at most {} keys with these settings",
                    MEMORY_BUDGET / per_key
                ),
            ));
        }
        Ok(AnomalyZscore {
            field: String::from(params.get("field").unwrap_or("value")),
            window_ms,
            warmup_ms,
            shift,
            shift_window_ms,
            drift,
            gap_ms: window_ms / max_readings as i64,
            max_readings,
            season_slots,
            keys_max,
            defaults,
            overrides,
            series: BTreeMap::new(),
            skipped_no_field: 0,
            skipped_out_of_order: 0,
            skipped_keys_max: 0,
            scratch: Vec::new(),
            value: Vec::new(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
        if self.series.is_empty() && batch.records().all(|r| json::number(r.value, &self.field).is_none()) {
            // Never a reading yet, and none in this batch: a `field` naming nothing in these
            // values would otherwise look like a series without anomalies.
            return match batch.record_count() {
                0 => Ok(()),
                _ => Err(json::no_field_error(batch, &self.field)),
            };
        }
        for record in batch.records() {
            let Some(x) = json::number(record.value, &self.field).filter(|x| x.is_finite()) else {
                self.skipped_no_field += 1;
                continue;
            };
            let settings = self.settings_for(record.key);
            if !self.series.contains_key(record.key) {
                if self.series.len() >= self.keys_max {
                    self.skipped_keys_max += 1;
                    continue;
                }
                let fresh = self.new_series(record.key);
                self.series.insert(record.key.to_vec(), fresh);
            }
            let Some(s) = self.series.get_mut(record.key) else { continue };
            let t = record.timestamp_ms;
            if t < s.last_ms {
                self.skipped_out_of_order += 1;
                continue;
            }
            s.last_ms = t;
            // With a period, what is scored is the residual from the same slot one period
            // earlier; until a period has passed there is nothing to score.
            let (value, reference) = match s.seasonal.as_mut() {
                Some(seasonal) => match seasonal.reference(t, settings.period_ms) {
                    Some(reference) => (x - reference, reference),
                    None => {
                        seasonal.add(t, x, settings.period_ms);
                        continue;
                    }
                },
                None => (x, 0.0),
            };
            // What enters the seasonal profile: the reading, or for an anomalous one what was
            // expected plus at most `threshold` spreads.
            let mut profiled = x;
            if s.first_ms == i64::MIN {
                s.first_ms = t;
            }
            s.evict(t, self.window_ms);
            if t - s.first_ms >= self.warmup_ms && s.readings.len() >= BASELINE_MIN {
                s.refresh(t, self.shift_window_ms, &mut self.scratch);
                let stats = s.stats;
                let spread = stats.spread.max(settings.min_std);
                let z = standardise(value, stats.median, spread);
                let level = match stats.older_recent {
                    Some((older, recent)) if self.shift > 0.0 => standardise(recent, older, spread).abs(),
                    _ => 0.0,
                };
                let drifted = match s.a_window_ago(t, self.window_ms) {
                    Some((before, spread_before)) if self.drift > 0.0 => {
                        standardise(stats.median, before, spread_before.max(settings.min_std)).abs()
                    }
                    _ => 0.0,
                };
                if z.abs() >= settings.threshold {
                    let limit = settings.threshold * spread;
                    profiled = reference + (value.clamp(stats.median - limit, stats.median + limit));
                }
                let kind = if z.abs() >= settings.threshold {
                    Some("spike")
                } else if self.shift > 0.0 && level >= self.shift {
                    Some("level_shift")
                } else if self.drift > 0.0 && drifted >= self.drift {
                    Some("drift")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    // One alert per episode: the key's previous anomaly is `cooldown` old.
                    let quiet = s.last_anomaly_ms.is_none_or(|last| t - last >= settings.cooldown_ms);
                    s.last_anomaly_ms = Some(t);
                    if quiet {
                        self.value.clear();
                        json::Object::new(&mut self.value)
                            .string_lossy("key", record.key)
                            .string("kind", kind)
                            .number("value", x)
                            .number("expected", reference + stats.median)
                            .number("spread", stats.spread)
                            .number("z", z)
                            .uint("offset", record.offset);
                        out.emit(t, record.key, &self.value);
                    }
                }
            }
            if let Some(seasonal) = s.seasonal.as_mut() {
                seasonal.add(t, profiled, settings.period_ms);
            }
            s.push(t, value, self.gap_ms, self.max_readings);
        }
        Ok(())
    }

    fn counters(&self, out: &mut Counters) {
        out.set("skipped_no_field", self.skipped_no_field)
            .set("skipped_out_of_order", self.skipped_out_of_order)
            .set("skipped_keys_max", self.skipped_keys_max);
    }
}

/// `(x - center) / spread`, 0 when the difference is within rounding of either, infinite
/// (signed) for any other difference from a flat baseline.
fn standardise(x: f64, center: f64, spread: f64) -> f64 {
    let d = x - center;
    if d.abs() <= ROUNDING * x.abs().max(center.abs()) {
        0.0
    } else if spread > 0.0 {
        d / spread
    } else if d > 0.0 {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    }
}

impl Stateful for AnomalyZscore {
    /// Version byte, the three skip counters, key count, then per key (in key order) the key
    /// and its [`Series`] state.
    fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_u8(SNAPSHOT_VERSION);
        out.put_varint(self.skipped_no_field);
        out.put_varint(self.skipped_out_of_order);
        out.put_varint(self.skipped_keys_max);
        out.put_varint(self.series.len() as u64);
        for (key, s) in &self.series {
            out.put_bytes(key);
            s.snapshot(out);
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes, "anomaly-zscore snapshot");
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(r.error("unknown snapshot version"));
        }
        let (no_field, out_of_order, keys_max) = (r.varint()?, r.varint()?, r.varint()?);
        let key_count = r.count(self.keys_max)?;
        // Every entry takes at least 60 bytes, so a corrupt count cannot reserve much.
        let mut pairs: Vec<(Vec<u8>, Series)> = Vec::with_capacity(key_count.min(r.remaining() / 60));
        for _ in 0..key_count {
            let key = r.bytes()?;
            if pairs.last().is_some_and(|(p, _)| p.as_slice() >= key) {
                return Err(r.error("keys not in increasing order"));
            }
            let mut s = self.new_series(key);
            s.restore(&mut r, self.max_readings)?;
            pairs.push((key.to_vec(), s));
        }
        r.finish()?;
        (self.skipped_no_field, self.skipped_out_of_order, self.skipped_keys_max) =
            (no_field, out_of_order, keys_max);
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
