//! The latency figures Silt's measuring tools report: the load test's runs and the device
//! simulator's frame-to-ack times are read from an HDR histogram of microseconds in the same
//! way, and printed and written under the same names.

use hdrhistogram::Histogram;

/// The percentiles of one histogram of latencies in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// How many latencies the histogram holds; 0 leaves every other field 0.
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            samples: h.len(),
        }
    }

    /// The figures under the names the JSON reports use for them.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("p50_us", self.p50_us),
            ("p90_us", self.p90_us),
            ("p99_us", self.p99_us),
            ("p999_us", self.p999_us),
            ("max_us", self.max_us),
            ("latency_samples", self.samples),
        ]
    }
}

impl std::fmt::Display for Percentiles {
    /// `p50 .. p90 .. p99 .. p99.9 .. max .. (N samples)`, in µs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.samples
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the percentiles come from the histogram and an empty one gives zeros.
    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!((p.p50_us, p.max_us, p.samples), (500, 1000, 1000));
        assert!((989..=991).contains(&p.p99_us), "p99 {}", p.p99_us);
        assert_eq!(p.named()[5], ("latency_samples", 1000));
        assert!(p.to_string().starts_with("p50 500 p90 "));
    }
}
