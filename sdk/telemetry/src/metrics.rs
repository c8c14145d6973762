//! The Prometheus registry a program's metrics are made in, and its text exposition.
//!
//! Each program (broker, bridge) declares its own metrics, with its own names and buckets;
//! this module only makes and registers them and renders the registry, so the programs cannot
//! drift apart in how they do that. Metric names and labels are fixed in code, so an invalid or
//! duplicate one is a bug, and making it panics.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// One program's metrics registry. Every `fn` that makes a metric registers it here.
#[derive(Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    /// Registers `metric` and returns it.
    pub fn register<T: Collector + Clone + 'static>(&self, metric: T) -> T {
        self.registry.register(Box::new(metric.clone())).expect("unique metric");
        metric
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A histogram with the upper bounds `buckets`, in the unit its name says.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric"),
        )
    }

    /// [`MetricsRegistry::histogram`] with labels.
    pub fn histogram_vec(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        self.register(
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("valid metric"),
        )
    }

    /// The text exposition of every metric registered, as `GET /metrics` serves it.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of metric made here shows in the exposition with its name, help and labels.
    #[test]
    fn made_metrics_render() {
        let r = MetricsRegistry::new();
        r.counter("t_counter_total", "A counter.").inc();
        r.counter_vec("t_by_kind_total", "By kind.", &["kind"]).with_label_values(&["a"]).inc_by(2);
        r.gauge("t_gauge", "A gauge.").set(-3);
        r.gauge_vec("t_gauges", "Gauges.", &["k"]).with_label_values(&["x"]).set(4);
        r.histogram("t_seconds", "A histogram.", &[0.1, 1.0]).observe(0.5);
        r.histogram_vec("t_vec_seconds", "Histograms.", &[1.0], &["p"])
            .with_label_values(&["q"])
            .observe(2.0);
        let text = r.render();
        for want in [
            "# HELP t_counter_total A counter.",
            "t_counter_total 1",
            "t_by_kind_total{kind=\"a\"} 2",
            "t_gauge -3",
            "t_gauges{k=\"x\"} 4",
            "t_seconds_bucket{le=\"1\"} 1",
            "t_vec_seconds_count{p=\"q\"} 1",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    /// Registering the same name twice is a bug in the caller, and says so.
    #[test]
    #[should_panic(expected = "unique metric")]
    fn duplicate_names_panic() {
        let r = MetricsRegistry::new();
        r.counter("t_twice_total", "Once.");
        r.counter("t_twice_total", "Twice.");
    }
}
