//! Run results: throughput and latency percentiles from an HdrHistogram.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: &'static str,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

impl Report {
    pub fn new(
        scenario: &'static str,
        events: u64,
        bytes: f64,
        elapsed: Duration,
        hist: &Histogram<u64>,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            scenario,
            events,
            seconds,
            events_per_sec: events as f64 / seconds,
            mb_per_sec: bytes / seconds / 1e6,
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            samples: hist.len(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "mb_per_sec": self.mb_per_sec,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "latency_samples": self.samples,
        })
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}: {} events in {:.2} s: {:.0} events/s, {:.1} MB/s\nlatency (us): p50 {} p99 {} p99.9 {} max {} ({} samples)",
            self.scenario,
            self.events,
            self.seconds,
            self.events_per_sec,
            self.mb_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.samples
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles and rates come out of the histogram and the clock as expected.
    #[test]
    fn percentiles_and_rates() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let r = Report::new("produce", 2000, 2e6, Duration::from_secs(2), &h);
        assert_eq!(r.events_per_sec, 1000.0);
        assert_eq!(r.mb_per_sec, 1.0);
        assert!((499..=501).contains(&r.p50_us), "p50 {}", r.p50_us);
        assert!((989..=991).contains(&r.p99_us), "p99 {}", r.p99_us);
        assert_eq!(r.max_us, 1000);
        assert!(r.to_json()["events_per_sec"].as_f64().unwrap() > 0.0);
    }
}
