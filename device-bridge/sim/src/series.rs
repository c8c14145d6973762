//! Realistic sensor series for simulated devices: what a fleet of temperature and humidity
//! sensors reports, with the faults real fleets show, for demos and tests that want data worth
//! smoothing and alerting on (`silt demo` uses it).
//!
//! Each device has its own level, daily swing, time-of-day phase and noise; a share of the
//! devices drift slowly; and faults come and go: spikes (one wild reading), stuck sensors (the
//! same value repeated for a while) and dropouts (no value, sent as NaN, which the bridge
//! stores as `null`). A simulated day is compressed into [`SeriesConfig::day`], so the cycle
//! shows within minutes.
//!
//! Everything is a pure function of the seed, the device id and the frame's sequence number
//! (time is `seq / rate`): a frame sent again carries the same readings, and the same seed
//! gives the same series on every run and platform. The only state is bookkeeping of what was
//! injected ([`Sensors::counts`], [`Sensors::explain`]), kept for the readings handed out.
//!
//! Deliberately absent: any clock or I/O; correlation between devices (no weather); and faults
//! that a rolling z-score could never tell apart from a change of level.

use std::collections::{HashMap, VecDeque};
use std::f64::consts::TAU;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use silt_frame::{Reading, Readings};

use crate::Rng;

/// The readings of one frame.
pub type FrameReadings = Readings<'static>;

/// What a simulated device's frames carry, instead of the simulator's plain counters
/// (`SimConfig::source`).
pub trait ReadingSource: Send + Sync + fmt::Debug {
    /// Fills `out` (empty) with the readings of frame `seq` of `device`. Called again for
    /// every retransmission of the frame, so it must give the same readings each time.
    fn readings(&self, device: &str, seq: u32, out: &mut FrameReadings);
}

/// Spikes per reading and per channel at `faults = 1`: with 300 devices at one reading a
/// second, about one spike every 5 s on each channel, enough to keep an alert list moving
/// without drowning it.
const SPIKE_P: f64 = 1.0 / 1500.0;
/// Stuck episodes starting per reading at `faults = 1` (a few devices stuck at any time in a
/// fleet of 300), and their length in readings.
const STUCK_P: f64 = 1.0 / 6000.0;
const STUCK_READINGS: (u32, u32) = (20, 90);
/// Dropout episodes starting per reading at `faults = 1`, and their length in readings.
const DROPOUT_P: f64 = 1.0 / 4000.0;
const DROPOUT_READINGS: (u32, u32) = (5, 30);
/// Spike sizes: far outside a day's swing (so a z-score over a short window sees them at any
/// time of day), and still physical.
const TEMPERATURE_SPIKE_C: (f64, f64) = (9.0, 18.0);
const HUMIDITY_SPIKE_PCT: (f64, f64) = (25.0, 45.0);
/// Readings remembered per device for [`Sensors::explain`].
const NOTABLE_MAX: usize = 32;
/// Readings counted at most when a device's sequence jumps ahead (a device that starts late
/// in its sequence space is not counted from 1).
const CATCH_UP_MAX: u32 = 10_000;

/// Settings of a fleet's series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesConfig {
    pub seed: u64,
    /// Readings per second of each device: maps a frame's sequence to time.
    pub rate_per_s: f64,
    /// Length of one simulated day.
    pub day: Duration,
    /// Share of devices whose sensors drift (0 to 1).
    pub drift_fraction: f64,
    /// Scale of the fault probabilities: 0 turns faults off, 1 is the default mix.
    pub faults: f64,
    /// One device (chosen by the seed) gets a temperature spike at this reading, so that a
    /// short run is sure to show an anomaly.
    pub early_spike_seq: Option<u32>,
}

impl SeriesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate_per_s > 0.0 && self.rate_per_s.is_finite()) {
            return Err("the rate must be above 0 readings per second".into());
        }
        if self.day.is_zero() {
            return Err("a day must last longer than 0 s".into());
        }
        if !(0.0..=1.0).contains(&self.drift_fraction) {
            return Err("the drifting share must be between 0 and 1".into());
        }
        if !(self.faults >= 0.0 && self.faults.is_finite()) {
            return Err("the fault scale must be 0 or more".into());
        }
        Ok(())
    }
}

/// The reading channels of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Temperature,
    Humidity,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Temperature => "temperature",
            Kind::Humidity => "humidity",
        }
    }

    pub fn unit(&self) -> &'static str {
        match self {
            Kind::Temperature => "°C",
            Kind::Humidity => "%",
        }
    }
}

/// What is wrong with a reading, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Normal,
    /// One wild reading on either channel or both.
    Spike {
        temperature: bool,
        humidity: bool,
    },
    /// The sensor repeats the reading it gave at sequence `since`.
    Stuck {
        since: u32,
    },
    /// No value (NaN) since sequence `since`.
    Dropout {
        since: u32,
    },
}

impl Condition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::Normal => "normal",
            Condition::Spike { .. } => "spike",
            Condition::Stuck { .. } => "stuck",
            Condition::Dropout { .. } => "dropout",
        }
    }
}

/// One frame's readings and what was injected into them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub temperature: f32,
    pub humidity: f32,
    pub condition: Condition,
}

/// One device's sensor: its level, swing, phase, noise and drift, drawn from the seed and its
/// id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceModel {
    key: u64,
    temperature_base: f64,
    temperature_swing: f64,
    humidity_base: f64,
    humidity_swing: f64,
    /// Offset of the device's day, in days (where it sits: a sunny wall warms earlier).
    phase_days: f64,
    temperature_noise: f64,
    humidity_noise: f64,
    /// Drift per simulated day; zero for devices that do not drift.
    pub temperature_drift: f64,
    pub humidity_drift: f64,
    early_spike_seq: Option<u32>,
}

impl DeviceModel {
    fn new(seed: u64, id: &str, drift_fraction: f64) -> DeviceModel {
        // FNV-1a of the id, mixed with the seed: the model depends on the id, not on the order
        // in which devices are listed.
        let fnv = id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut rng = Rng::new(seed ^ fnv);
        let key = rng.next_u64();
        let mut u = || rng.next_f64();
        let (temperature_drift, humidity_drift) = if u() < drift_fraction {
            let sign = if u() < 0.5 { -1.0 } else { 1.0 };
            (sign * (1.0 + 2.0 * u()), -sign * (3.0 + 5.0 * u()))
        } else {
            (0.0, 0.0)
        };
        DeviceModel {
            key,
            temperature_base: 19.0 + 5.0 * u(),
            temperature_swing: 2.0 + 3.0 * u(),
            humidity_base: 40.0 + 20.0 * u(),
            humidity_swing: 6.0 + 8.0 * u(),
            phase_days: (u() - 0.5) * 0.1,
            temperature_noise: 0.08 + 0.1 * u(),
            humidity_noise: 0.4 + 0.5 * u(),
            temperature_drift,
            humidity_drift,
            early_spike_seq: None,
        }
    }

    pub fn is_drifting(&self) -> bool {
        self.temperature_drift != 0.0
    }

    /// A uniform draw in [0, 1) for reading `seq` and purpose `tag`, the same every time.
    fn unit(&self, seq: u32, tag: u64) -> f64 {
        Rng::new(self.key ^ ((u64::from(seq) << 8) | tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_f64()
    }

    /// A standard normal draw (Box-Muller) for reading `seq` and purpose `tag`.
    fn gauss(&self, seq: u32, tag: u64) -> f64 {
        let u1 = 1.0 - self.unit(seq, tag); // in (0, 1]: the logarithm stays finite
        let u2 = self.unit(seq, tag | 0x80);
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// Draw purposes, so that different decisions about one reading are independent.
const TAG_NOISE_T: u64 = 1;
const TAG_NOISE_H: u64 = 2;
const TAG_SPIKE_T: u64 = 3;
const TAG_SPIKE_H: u64 = 4;
const TAG_SPIKE_SIZE: u64 = 5;
const TAG_STUCK: u64 = 6;
const TAG_DROPOUT: u64 = 7;
const TAG_LENGTH: u64 = 8;

/// The series of a fleet, and the bookkeeping of what was injected into the readings handed
/// out.
#[derive(Debug)]
pub struct Sensors {
    config: SeriesConfig,
    devices: HashMap<String, DeviceModel>,
    ids: Vec<String>,
    seconds_per_day: f64,
    track: Mutex<Tracking>,
}

/// Totals of what was injected into the readings handed out so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Readings (frames) handed out.
    pub readings: u64,
    pub temperature_spikes: u64,
    pub humidity_spikes: u64,
    /// Stuck-sensor episodes begun.
    pub stuck: u64,
    /// Dropout episodes begun.
    pub dropouts: u64,
}

/// Why a reading stood out, as far as the series knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Spike,
    /// The first reading after a stuck episode (the level may have moved a lot meanwhile).
    StuckEnded,
    /// The first reading after a dropout.
    DropoutEnded,
}

impl Cause {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::Spike => "spike",
            Cause::StuckEnded => "stuck sensor",
            Cause::DropoutEnded => "after dropout",
        }
    }
}

#[derive(Debug, Default)]
struct Tracking {
    totals: FaultCounts,
    devices: HashMap<String, DeviceTrack>,
}

#[derive(Debug)]
struct DeviceTrack {
    counted_to: u32,
    condition: Condition,
    notable: VecDeque<(u32, Sample, Cause)>,
}

impl Sensors {
    /// The series of devices `ids`; the one at position `seed % ids.len()` gets the early
    /// spike when the config asks for one.
    pub fn new(config: SeriesConfig, ids: &[String]) -> Result<Sensors, String> {
        config.validate()?;
        let mut devices: HashMap<String, DeviceModel> = ids
            .iter()
            .map(|id| (id.clone(), DeviceModel::new(config.seed, id, config.drift_fraction)))
            .collect();
        if let (Some(seq), false) = (config.early_spike_seq, ids.is_empty()) {
            let chosen = &ids[(config.seed % ids.len() as u64) as usize];
            if let Some(m) = devices.get_mut(chosen) {
                m.early_spike_seq = Some(seq);
            }
        }
        Ok(Sensors {
            config,
            devices,
            ids: ids.to_vec(),
            seconds_per_day: config.day.as_secs_f64(),
            track: Mutex::new(Tracking::default()),
        })
    }

    pub fn config(&self) -> &SeriesConfig {
        &self.config
    }

    /// The device with the early spike, if any.
    pub fn early_spike_device(&self) -> Option<&str> {
        self.ids.iter().find(|id| self.devices[*id].early_spike_seq.is_some()).map(String::as_str)
    }

    /// The model of a listed device.
    pub fn model(&self, device: &str) -> Option<&DeviceModel> {
        self.devices.get(device)
    }

    /// Listed devices whose sensors drift, in list order.
    pub fn drifting(&self) -> Vec<&str> {
        self.ids.iter().filter(|id| self.devices[*id].is_drifting()).map(String::as_str).collect()
    }

    /// The condition of `device`'s latest reading handed out.
    pub fn condition_now(&self, device: &str) -> Option<Condition> {
        self.lock().devices.get(device).map(|t| t.condition)
    }

    /// What was injected into the readings handed out so far.
    pub fn counts(&self) -> FaultCounts {
        self.lock().totals
    }

    /// Why `device`'s recent reading of `kind` with this value stood out, if the series made
    /// it stand out (a spike, or the first reading after a stuck sensor or a dropout).
    /// Readings are matched by value (as the bridge writes an `f32`), among the last few
    /// notable readings of the device.
    pub fn explain(&self, device: &str, kind: Kind, value: f64) -> Option<Cause> {
        let wanted = value as f32;
        let t = self.lock();
        let track = t.devices.get(device)?;
        track.notable.iter().rev().find_map(|(_, s, cause)| {
            let v = match kind {
                Kind::Temperature => s.temperature,
                Kind::Humidity => s.humidity,
            };
            (v == wanted).then_some(*cause)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracking> {
        // The bookkeeping stays consistent even if a holder panicked: every update is a few
        // additions.
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reading `seq` of a device with model `m`.
    pub fn sample(&self, m: &DeviceModel, seq: u32) -> Sample {
        let condition = self.condition(m, seq);
        let (temperature, humidity) = match condition {
            Condition::Normal => self.clean(m, seq),
            Condition::Dropout { .. } => (f64::NAN, f64::NAN),
            Condition::Stuck { since } => self.clean(m, since),
            Condition::Spike { temperature, humidity } => {
                let (mut t, mut h) = self.clean(m, seq);
                let size = m.unit(seq, TAG_SPIKE_SIZE);
                if temperature {
                    let (lo, hi) = TEMPERATURE_SPIKE_C;
                    // Mostly upwards (a heat source, a short circuit), sometimes down.
                    let sign = if m.unit(seq, TAG_SPIKE_SIZE | 0x40) < 0.8 { 1.0 } else { -1.0 };
                    t += sign * (lo + (hi - lo) * size);
                }
                if humidity {
                    let (lo, hi) = HUMIDITY_SPIKE_PCT;
                    // Away from the nearer bound, so that the clamp cannot eat the spike.
                    let sign = if h < 50.0 { 1.0 } else { -1.0 };
                    h = (h + sign * (lo + (hi - lo) * size)).clamp(0.0, 100.0);
                }
                (t, h)
            }
        };
        Sample { temperature: temperature as f32, humidity: humidity as f32, condition }
    }

    /// The true value of reading `seq`: level, daily cycle, drift and noise.
    fn clean(&self, m: &DeviceModel, seq: u32) -> (f64, f64) {
        let days = f64::from(seq) / self.config.rate_per_s / self.seconds_per_day;
        // Warmest (and driest) at 15:00 of the device's day, coolest at 03:00.
        let cycle = (TAU * (days + m.phase_days - 0.625)).cos();
        let t = m.temperature_base
            + m.temperature_swing * cycle
            + m.temperature_drift * days
            + m.temperature_noise * m.gauss(seq, TAG_NOISE_T);
        let h = m.humidity_base - m.humidity_swing * cycle
            + m.humidity_drift * days
            + m.humidity_noise * m.gauss(seq, TAG_NOISE_H);
        (t, h.clamp(0.0, 100.0))
    }

    /// The most recent episode of `tag` (probability `p` of starting at each reading, length
    /// drawn from `lengths`) that covers reading `seq`, by its first reading.
    fn episode(&self, m: &DeviceModel, seq: u32, tag: u64, p: f64, lengths: (u32, u32)) -> Option<u32> {
        if p <= 0.0 {
            return None;
        }
        (0..lengths.1).take_while(|k| *k < seq).map(|k| seq - k).find(|start| {
            let (lo, hi) = lengths;
            let len = lo + ((hi - lo + 1) as f64 * m.unit(*start, TAG_LENGTH | tag << 4)) as u32;
            m.unit(*start, tag) < p && seq - start < len
        })
    }

    fn condition(&self, m: &DeviceModel, seq: u32) -> Condition {
        let scale = self.config.faults;
        let p = |base: f64| (base * scale).min(0.5);
        // The device with the early spike has clean readings up to it and no episode that
        // began before it, so that a detector has a clean baseline when the spike comes.
        let quiet_to = m.early_spike_seq.unwrap_or(0);
        if seq < quiet_to {
            return Condition::Normal;
        }
        let after_quiet = |since: &u32| *since > quiet_to;
        if let Some(since) =
            self.episode(m, seq, TAG_DROPOUT, p(DROPOUT_P), DROPOUT_READINGS).filter(after_quiet)
        {
            return Condition::Dropout { since };
        }
        if let Some(since) = self.episode(m, seq, TAG_STUCK, p(STUCK_P), STUCK_READINGS).filter(after_quiet) {
            return Condition::Stuck { since };
        }
        let early = m.early_spike_seq == Some(seq);
        let temperature = early || m.unit(seq, TAG_SPIKE_T) < p(SPIKE_P);
        let humidity = m.unit(seq, TAG_SPIKE_H) < p(SPIKE_P);
        if temperature || humidity {
            return Condition::Spike { temperature, humidity };
        }
        Condition::Normal
    }

    /// Counts what readings `track.counted_to + 1 ..= seq` of a device carry.
    fn count(&self, t: &mut Tracking, device: &str, m: &DeviceModel, seq: u32) {
        let track = t.devices.entry(device.to_string()).or_insert_with(|| DeviceTrack {
            counted_to: 0,
            condition: Condition::Normal,
            notable: VecDeque::new(),
        });
        if seq <= track.counted_to {
            return; // a retransmission, or a frame sent after a later one
        }
        let first = track.counted_to.max(seq.saturating_sub(CATCH_UP_MAX)) + 1;
        let totals = &mut t.totals;
        let mut previous = if first > 1 { self.condition(m, first - 1) } else { Condition::Normal };
        for s in first..=seq {
            let sample = self.sample(m, s);
            totals.readings += 1;
            let mut notable = None;
            match (previous, sample.condition) {
                (Condition::Stuck { since: a }, Condition::Stuck { since: b }) if a == b => {}
                (Condition::Dropout { since: a }, Condition::Dropout { since: b }) if a == b => {}
                (_, Condition::Stuck { .. }) => totals.stuck += 1,
                (_, Condition::Dropout { .. }) => totals.dropouts += 1,
                (_, Condition::Spike { temperature, humidity }) => {
                    totals.temperature_spikes += u64::from(temperature);
                    totals.humidity_spikes += u64::from(humidity);
                    notable = Some(Cause::Spike);
                }
                (Condition::Stuck { .. }, Condition::Normal) => notable = Some(Cause::StuckEnded),
                (Condition::Dropout { .. }, Condition::Normal) => notable = Some(Cause::DropoutEnded),
                (_, Condition::Normal) => {}
            }
            if let Some(cause) = notable {
                if track.notable.len() == NOTABLE_MAX {
                    track.notable.pop_front();
                }
                track.notable.push_back((s, sample, cause));
            }
            previous = sample.condition;
        }
        track.counted_to = seq;
        track.condition = previous;
    }
}

impl ReadingSource for Sensors {
    fn readings(&self, device: &str, seq: u32, out: &mut FrameReadings) {
        let derived;
        let m = match self.devices.get(device) {
            Some(m) => m,
            None => {
                // A device nobody listed still gets a series of its own (not tracked).
                derived = DeviceModel::new(self.config.seed, device, self.config.drift_fraction);
                &derived
            }
        };
        let sample = self.sample(m, seq);
        if self.devices.contains_key(device) {
            let mut t = self.lock();
            self.count(&mut t, device, m, seq);
        }
        // Two readings always fit a frame (READINGS_MAX is 16).
        let _ = out.push(Reading::Temperature(sample.temperature));
        let _ = out.push(Reading::Humidity(sample.humidity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> SeriesConfig {
        SeriesConfig {
            seed,
            rate_per_s: 1.0,
            day: Duration::from_secs(120),
            drift_fraction: 0.05,
            faults: 1.0,
            early_spike_seq: Some(20),
        }
    }

    fn ids(n: u32) -> Vec<String> {
        (0..n).map(crate::device_id).collect()
    }

    fn values(s: &Sensors, id: &str, seqs: std::ops::RangeInclusive<u32>) -> Vec<Sample> {
        let m = *s.model(id).unwrap();
        seqs.map(|q| s.sample(&m, q)).collect()
    }

    /// The same seed gives the same readings (bit for bit, in any order of asking); another
    /// seed gives other readings.
    #[test]
    fn deterministic_by_seed() {
        let a = Sensors::new(config(7), &ids(5)).unwrap();
        let b = Sensors::new(config(7), &ids(5)).unwrap();
        let c = Sensors::new(config(8), &ids(5)).unwrap();
        let forward = values(&a, "sim-00003", 1..=500);
        let m = *b.model("sim-00003").unwrap();
        let mut backward: Vec<Sample> = (1..=500).rev().map(|q| b.sample(&m, q)).collect();
        backward.reverse();
        let bits = |v: &[Sample]| {
            v.iter().map(|s| (s.temperature.to_bits(), s.humidity.to_bits())).collect::<Vec<_>>()
        };
        assert_eq!(bits(&forward), bits(&backward));
        assert_ne!(bits(&forward), bits(&values(&c, "sim-00003", 1..=500)));
        // Asking twice (a retransmission) gives the same frame.
        let mut f1 = FrameReadings::new();
        let mut f2 = FrameReadings::new();
        a.readings("sim-00003", 42, &mut f1);
        a.readings("sim-00003", 42, &mut f2);
        assert_eq!(f1, f2);
    }

    /// Values are physical: finite except in dropouts (both channels NaN then), humidity
    /// within 0..=100, temperatures in a plausible indoor range apart from spikes and drift.
    #[test]
    fn values_are_physical() {
        let s = Sensors::new(SeriesConfig { drift_fraction: 0.0, ..config(1) }, &ids(50)).unwrap();
        for id in ids(50) {
            for v in values(&s, &id, 1..=2000) {
                match v.condition {
                    Condition::Dropout { .. } => assert!(v.temperature.is_nan() && v.humidity.is_nan()),
                    _ => {
                        assert!(v.temperature.is_finite() && v.humidity.is_finite(), "{v:?}");
                        assert!((0.0..=100.0).contains(&v.humidity), "{v:?}");
                    }
                }
                if v.condition == Condition::Normal {
                    assert!((10.0..=32.0).contains(&v.temperature), "{id}: {v:?}");
                }
            }
        }
    }

    /// The daily cycle: afternoons are warmer and drier than nights, on every device.
    #[test]
    fn daily_cycle() {
        let s =
            Sensors::new(SeriesConfig { faults: 0.0, drift_fraction: 0.0, ..config(3) }, &ids(20)).unwrap();
        for id in ids(20) {
            // Day 120 readings: 15:00 is reading 75, 03:00 is reading 15 (plus the phase).
            let at = |q: std::ops::RangeInclusive<u32>| {
                let v = values(&s, &id, q);
                let n = v.len() as f32;
                (
                    v.iter().map(|x| x.temperature).sum::<f32>() / n,
                    v.iter().map(|x| x.humidity).sum::<f32>() / n,
                )
            };
            let (t_day, h_day) = at(72..=78);
            let (t_night, h_night) = at(12..=18);
            assert!(t_day > t_night + 2.0, "{id}: {t_day} vs {t_night}");
            assert!(h_day < h_night - 5.0, "{id}: {h_day} vs {h_night}");
        }
    }

    /// About the asked share of devices drift, and a drifting device's level moves by its
    /// rate per day.
    #[test]
    fn drift() {
        let s =
            Sensors::new(SeriesConfig { faults: 0.0, drift_fraction: 0.1, ..config(5) }, &ids(1000)).unwrap();
        let drifting = s.drifting();
        assert!((60..=140).contains(&drifting.len()), "{}", drifting.len());
        let id = drifting[0];
        let m = *s.model(id).unwrap();
        // Same time of day, ten days apart.
        let a = values(&s, id, 100..=110);
        let b = values(&s, id, 1300..=1310);
        let mean = |v: &[Sample]| v.iter().map(|x| f64::from(x.temperature)).sum::<f64>() / v.len() as f64;
        let moved = mean(&b) - mean(&a);
        assert!((moved - 10.0 * m.temperature_drift).abs() < 1.0, "{moved} vs {}", m.temperature_drift);
        let none = Sensors::new(SeriesConfig { drift_fraction: 0.0, ..config(5) }, &ids(100)).unwrap();
        assert!(none.drifting().is_empty());
    }

    /// Faults: the early spike lands where asked, on the device the seed picks; episodes hold a
    /// stuck value or NaN for their whole length; `faults = 0` gives none but the early spike.
    #[test]
    fn faults() {
        let s = Sensors::new(config(4), &ids(10)).unwrap();
        let early = s.early_spike_device().unwrap();
        assert_eq!(early, "sim-00004");
        let v = values(&s, early, 20..=20)[0];
        assert!(matches!(v.condition, Condition::Spike { temperature: true, .. }), "{v:?}");

        let s = Sensors::new(config(9), &ids(300)).unwrap();
        let (mut spikes, mut stuck, mut dropouts) = (0, 0, 0);
        for id in ids(300) {
            let m = *s.model(&id).unwrap();
            let v = values(&s, &id, 1..=1000);
            for (i, x) in v.iter().enumerate() {
                match x.condition {
                    Condition::Spike { .. } => spikes += 1,
                    Condition::Stuck { since } => {
                        stuck += 1;
                        let (t, h) = s.clean(&m, since);
                        assert_eq!(x.temperature.to_bits(), (t as f32).to_bits(), "{id} {i}");
                        assert_eq!(x.humidity.to_bits(), (h as f32).to_bits());
                    }
                    Condition::Dropout { .. } => dropouts += 1,
                    Condition::Normal => {}
                }
            }
        }
        // 300,000 readings: about 400 spikes, 50 stuck episodes of 55, 75 dropouts of 17.5.
        assert!((250..=600).contains(&spikes), "{spikes}");
        assert!((1000..=5000).contains(&stuck), "{stuck}");
        assert!((500..=2500).contains(&dropouts), "{dropouts}");

        let quiet = Sensors::new(SeriesConfig { faults: 0.0, ..config(9) }, &ids(50)).unwrap();
        let n = ids(50)
            .iter()
            .flat_map(|id| values(&quiet, id, 1..=1000))
            .filter(|x| x.condition != Condition::Normal)
            .count();
        assert_eq!(n, 1, "only the early spike");
    }

    /// Counting: each episode once, however often and in whatever order frames are asked for;
    /// `explain` names the cause of a spiked or recovering reading by its value.
    #[test]
    fn counts_and_explanations() {
        let s = Sensors::new(SeriesConfig { faults: 20.0, ..config(2) }, &ids(3)).unwrap();
        let m = *s.model("sim-00001").unwrap();
        let mut out = FrameReadings::new();
        for seq in (1..=600).chain(1..=600).chain(300..=700) {
            out.clear();
            s.readings("sim-00001", seq, &mut out);
        }
        let c = s.counts();
        let v: Vec<Sample> = (1..=700).map(|q| s.sample(&m, q)).collect();
        let spikes_t =
            v.iter().filter(|x| matches!(x.condition, Condition::Spike { temperature: true, .. })).count();
        // An episode begins at a reading whose condition the reading before did not have.
        let starts = |f: fn(&Condition) -> Option<u32>| {
            let mut before = Condition::Normal;
            let mut n = 0;
            for x in &v {
                if f(&x.condition).is_some() && x.condition != before {
                    n += 1;
                }
                before = x.condition;
            }
            n
        };
        assert_eq!(c.readings, 700);
        assert_eq!(c.temperature_spikes, spikes_t as u64);
        assert!(c.stuck > 0 && c.dropouts > 0, "{c:?}");
        assert_eq!(c.stuck, starts(|c| if let Condition::Stuck { since } = c { Some(*since) } else { None }));
        assert_eq!(
            c.dropouts,
            starts(|c| if let Condition::Dropout { since } = c { Some(*since) } else { None })
        );

        // The latest spike: fewer than NOTABLE_MAX notable readings can have come after it.
        let spiked = v
            .iter()
            .rev()
            .find(|x| matches!(x.condition, Condition::Spike { temperature: true, .. }))
            .unwrap();
        assert_eq!(
            s.explain("sim-00001", Kind::Temperature, f64::from(spiked.temperature)),
            Some(Cause::Spike)
        );
        assert_eq!(s.explain("sim-00001", Kind::Temperature, 1234.5), None);
        assert_eq!(s.explain("sim-00002", Kind::Temperature, f64::from(spiked.temperature)), None);
        assert_eq!(s.condition_now("sim-00001"), Some(v[699].condition));
    }
}
