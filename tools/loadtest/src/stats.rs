//! Run results: a [`Recorder`] that producers, consumers and ack handlers share while a run
//! goes on (latency histogram, events and bytes, events per time bucket), and the [`Report`] it
//! becomes: throughput, latency percentiles, the percentile spectrum and throughput over time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use silt_telemetry::latency::Percentiles;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes at 3 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

/// Quantiles of the percentile spectrum in reports and plots: each step is ten times rarer.
pub const SPECTRUM: [f64; 6] = [0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999];

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("histogram bounds")
}

/// Collects one run's measurements from many tasks. Cheap enough to call per record: one
/// uncontended lock per call, and callers that have many samples at once pass them together.
#[derive(Debug)]
pub struct Recorder {
    start: Mutex<Instant>,
    bucket: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    hist: Histogram<u64>,
    events: u64,
    bytes: u64,
    /// Events completed in each `bucket` since `start`.
    timeline: Vec<u64>,
}

impl Recorder {
    /// A recorder whose clock starts at `start`, counting throughput per `bucket`.
    pub fn new(start: Instant, bucket: Duration) -> Recorder {
        assert!(!bucket.is_zero(), "a throughput bucket takes time");
        Recorder {
            start: Mutex::new(start),
            bucket,
            inner: Mutex::new(Inner { hist: histogram(), events: 0, bytes: 0, timeline: Vec::new() }),
        }
    }

    pub fn start(&self) -> Instant {
        *self.start.lock().expect("recorder")
    }

    /// Starts the clock again at `start` (after connecting, say), forgetting what was recorded.
    pub fn restart(&self, start: Instant) {
        *self.start.lock().expect("recorder") = start;
        let mut inner = self.inner.lock().expect("recorder");
        *inner = Inner { hist: histogram(), events: 0, bytes: 0, timeline: Vec::new() };
    }

    /// `events` completed at `now` carrying `bytes`, with the latencies of those that were
    /// measured (any number, usually one per event or one per batch).
    pub fn complete(
        &self,
        now: Instant,
        events: u64,
        bytes: u64,
        latencies: impl IntoIterator<Item = Duration>,
    ) {
        let start = self.start();
        let bucket = (now.saturating_duration_since(start).as_nanos() / self.bucket.as_nanos()) as usize;
        let mut inner = self.inner.lock().expect("recorder");
        for latency in latencies {
            let us = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
            inner.hist.record(us).expect("clamped into the histogram's range");
        }
        inner.events += events;
        inner.bytes += bytes;
        if inner.timeline.len() <= bucket {
            inner.timeline.resize(bucket + 1, 0);
        }
        inner.timeline[bucket] += events;
    }

    pub fn events(&self) -> u64 {
        self.inner.lock().expect("recorder").events
    }

    /// The report of a run that ended at `end`.
    pub fn report(&self, scenario: &str, target: &str, end: Instant) -> Report {
        let inner = self.inner.lock().expect("recorder");
        let elapsed = end.saturating_duration_since(self.start());
        let mut report = Report::new(scenario, inner.events, inner.bytes as f64, elapsed, &inner.hist);
        report.target = target.to_string();
        let width = self.bucket.as_secs_f64();
        // The last bucket is usually cut short by the end of the run: rate it over its real part.
        let full = (elapsed.as_secs_f64() / width).floor() as usize;
        report.timeline = inner
            .timeline
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let span = if i < full {
                    width
                } else {
                    (elapsed.as_secs_f64() - i as f64 * width).max(width / 10.0)
                };
                ((i as f64 + 1.0) * width, n as f64 / span)
            })
            .collect();
        report
    }
}

/// The outcome of one run against one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    /// The system measured: `silt`, `nats`, `mqtt`, or a label given to it.
    pub target: String,
    /// Open loop at this many events/s in all, or closed loop (`None`).
    pub rate: Option<f64>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency: Percentiles,
    /// (quantile, µs) for each of [`SPECTRUM`] that the samples resolve, then (1.0, max).
    pub spectrum: Vec<(f64, u64)>,
    /// (seconds since the start at the end of the bucket, events/s in it).
    pub timeline: Vec<(f64, f64)>,
}

impl Report {
    pub fn new(scenario: &str, events: u64, bytes: f64, elapsed: Duration, hist: &Histogram<u64>) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let samples = hist.len();
        let mut spectrum: Vec<(f64, u64)> = SPECTRUM
            .iter()
            // A quantile needs about 1/(1-q) samples before it says more than the maximum.
            .filter(|&&q| samples > 0 && (samples as f64) * (1.0 - q) >= 1.0)
            .map(|&q| (q, hist.value_at_quantile(q)))
            .collect();
        if samples > 0 {
            spectrum.push((1.0, hist.max()));
        }
        Report {
            scenario: scenario.to_string(),
            target: "silt".to_string(),
            rate: None,
            events,
            seconds,
            events_per_sec: events as f64 / seconds,
            mb_per_sec: bytes / seconds / 1e6,
            latency: Percentiles::of(hist),
            spectrum,
            timeline: Vec::new(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "scenario": self.scenario,
            "target": self.target,
            "mode": if self.rate.is_some() { "open-loop" } else { "closed-loop" },
            "rate": self.rate,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "mb_per_sec": self.mb_per_sec,
            "spectrum": self.spectrum.iter().map(|(q, us)| serde_json::json!({"quantile": q, "us": us})).collect::<Vec<_>>(),
            "timeline": self.timeline.iter().map(|(t, r)| serde_json::json!({"t": t, "events_per_sec": r})).collect::<Vec<_>>(),
        });
        for (name, us) in self.latency.named() {
            v[name] = us.into();
        }
        v
    }

    pub fn to_text(&self) -> String {
        let mode = match (self.rate, self.latency.samples) {
            (Some(r), _) => format!(", open loop at {r:.0} events/s"),
            (None, 0) => String::new(),
            (None, _) => ", closed loop".to_string(),
        };
        let mut text = format!(
            "{} [{}{mode}]: {} events in {:.2} s: {:.0} events/s, {:.1} MB/s",
            self.scenario, self.target, self.events, self.seconds, self.events_per_sec, self.mb_per_sec,
        );
        if self.latency.samples > 0 {
            text.push_str(&format!("\nlatency (us): {}", self.latency));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles and rates come out of the histogram and the clock as expected.
    #[test]
    fn percentiles_and_rates() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let r = Report::new("produce", 2000, 2e6, Duration::from_secs(2), &h);
        assert_eq!(r.events_per_sec, 1000.0);
        assert_eq!(r.mb_per_sec, 1.0);
        assert!((499..=501).contains(&r.latency.p50_us), "p50 {}", r.latency.p50_us);
        assert!((899..=901).contains(&r.latency.p90_us), "p90 {}", r.latency.p90_us);
        assert!((989..=991).contains(&r.latency.p99_us), "p99 {}", r.latency.p99_us);
        assert_eq!(r.latency.max_us, 1000);
        assert!(r.to_json()["events_per_sec"].as_f64().unwrap() > 0.0);
    }

    /// A skewed distribution (99% fast, 1% slow) shows in the tail and not in the median,
    /// at the precision the histogram promises (3 significant digits).
    #[test]
    fn tail_percentiles_of_a_skewed_distribution() {
        let mut h = histogram();
        for _ in 0..99_000 {
            h.record(100).unwrap();
        }
        for _ in 0..1_000 {
            h.record(50_000).unwrap();
        }
        let r = Report::new("produce", 100_000, 0.0, Duration::from_secs(1), &h);
        assert_eq!(r.latency.p50_us, 100);
        assert_eq!(r.latency.p90_us, 100);
        assert_eq!(r.latency.p99_us, 100, "the 99th percentile is the last fast sample");
        assert!((49_950..=50_050).contains(&r.latency.p999_us), "p99.9 {}", r.latency.p999_us);
        assert!((49_950..=50_050).contains(&r.latency.max_us));
    }

    /// The spectrum lists only quantiles the sample count resolves, then the maximum.
    #[test]
    fn spectrum_stops_where_samples_run_out() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let r = Report::new("produce", 1000, 0.0, Duration::from_secs(1), &h);
        let quantiles: Vec<f64> = r.spectrum.iter().map(|(q, _)| *q).collect();
        assert_eq!(quantiles, vec![0.5, 0.9, 0.99, 0.999, 1.0]);
        assert!(r.spectrum.windows(2).all(|w| w[0].1 <= w[1].1), "monotone: {:?}", r.spectrum);
        let empty = Report::new("replay", 10, 0.0, Duration::from_secs(1), &histogram());
        assert!(empty.spectrum.is_empty());
        assert!(!empty.to_text().contains("latency"), "no latency line without samples");
    }

    /// Events land in the bucket of their completion time, and the rates per bucket add up to
    /// the events; the short last bucket is rated over its real length.
    #[test]
    fn timeline_buckets() {
        let start = Instant::now();
        let rec = Recorder::new(start, Duration::from_millis(100));
        rec.complete(start + Duration::from_millis(10), 5, 500, [Duration::from_micros(3)]);
        rec.complete(start + Duration::from_millis(150), 10, 1000, []);
        rec.complete(start + Duration::from_millis(160), 10, 1000, []);
        rec.complete(start + Duration::from_millis(420), 2, 200, []);
        let r = rec.report("produce", "silt", start + Duration::from_millis(450));
        assert_eq!(r.events, 27);
        assert_eq!(r.latency.samples, 1);
        let rates: Vec<f64> = r.timeline.iter().map(|(_, rate)| rate.round()).collect();
        // 5 in 0.1 s, 20 in 0.1 s, none, none, 2 in the last 0.05 s.
        assert_eq!(rates, vec![50.0, 200.0, 0.0, 0.0, 40.0]);
        assert_eq!(r.timeline[1].0, 0.2);
        assert!((r.mb_per_sec - 2700.0 / 0.45 / 1e6).abs() < 1e-9);
    }

    /// Latencies beyond the histogram's range are clamped, not lost or panicking.
    #[test]
    fn out_of_range_latencies_are_clamped() {
        let start = Instant::now();
        let rec = Recorder::new(start, Duration::from_secs(1));
        rec.complete(start, 2, 0, [Duration::ZERO, Duration::from_secs(3600)]);
        let r = rec.report("produce", "silt", start + Duration::from_secs(1));
        assert_eq!(r.latency.samples, 2);
        assert!(r.latency.max_us >= LATENCY_MAX_US - LATENCY_MAX_US / 1000);
    }
}
