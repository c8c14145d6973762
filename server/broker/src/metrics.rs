//! Prometheus metrics of the broker, served as text on the admin port's `GET /metrics`.
//!
//! Counters and histograms are updated where the work happens; gauges of state (partition
//! sizes and watermarks, processor states) are set from the live objects just before each
//! scrape, so they never drift. Names follow Prometheus conventions: a `silt_` prefix, base
//! units (seconds, bytes) in the name, `_total` on counters.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use silt_telemetry::MetricsRegistry;

/// Latency buckets from 50 µs to 10 s: appends and flushes take tens of microseconds to
/// milliseconds, acknowledgements up to tens of milliseconds under load.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Every metric the broker exports.
pub struct Metrics {
    registry: MetricsRegistry,
    /// Requests by kind (`produce`, `fetch`, `admin`, `processor`).
    pub requests: IntCounterVec,
    /// Requests answered with an error, by kind.
    pub request_errors: IntCounterVec,
    pub records_in: IntCounterVec,
    pub bytes_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub bytes_out: IntCounterVec,
    /// One sled transaction of a partition's appender (one or more batches).
    pub append_seconds: Histogram,
    /// One durability flush (sled flush and syncfs).
    pub flush_seconds: Histogram,
    /// From a produce request's start to its acknowledgement.
    pub ack_seconds: Histogram,
    pub connections: IntGauge,
    /// Requests that waited for a quota, by quota.
    pub quota_throttled: IntCounterVec,
    /// Connections refused before their handshake, by reason.
    pub connections_refused: IntCounterVec,
    /// Fetch response bytes read and not yet dropped (written and acknowledged).
    pub response_bytes_pending: IntGauge,
    /// Request frame bytes read and not yet answered (`Limits::request_bytes_max`).
    pub request_bytes_pending: IntGauge,
    pub partition_size_bytes: IntGaugeVec,
    pub partition_high_watermark: IntGaugeVec,
    pub consumer_group_lag: IntGaugeVec,
    pub processor_events_in: IntCounterVec,
    pub processor_events_out: IntCounterVec,
    pub processor_batch_seconds: HistogramVec,
    pub processor_errors: IntCounterVec,
    pub processor_restarts: IntCounterVec,
    pub processor_state: IntGaugeVec,
    pub processor_lag: IntGaugeVec,
    /// A processor module's own counters (`silt_counters`), summed over its partitions. Not
    /// `silt_processor_counter`: `promtool check metrics` refuses a name holding a metric type.
    pub processor_counts: IntGaugeVec,
    pub flush_failures: IntCounter,
    /// Free bytes of the data directory's filesystem, as last sampled.
    pub disk_free_bytes: IntGauge,
    /// 1 while produces are refused because the disk is nearly full.
    pub disk_full: IntGauge,
    /// Produces refused because the disk is nearly full.
    pub disk_full_refusals: IntCounter,
    /// Requests refused by authentication or authorization, by reason and request.
    pub auth_refusals: IntCounterVec,
    /// Audit events that did not fit the audit writer's queue (still in the log).
    pub audit_dropped: IntCounter,
    /// Storage faults found, by kind (`lost_records`, `ledger`, `scrub`, `metadata`: the
    /// metadata database restored from its copies at start).
    pub storage_faults: IntCounterVec,
    /// Acknowledged records a partition lost to storage damage, found at start.
    pub lost_records: IntGaugeVec,
    /// Offsets whose loss an operator accepted (`silt topic repair --accept-loss`).
    pub accepted_loss_records: IntCounterVec,
    /// The background scrub (`crate::scrub`): bytes and batches read again, whole passes, and
    /// the problems each partition's last scrub found.
    pub scrub_bytes: IntCounter,
    pub scrub_batches: IntCounter,
    pub scrub_passes: IntCounter,
    pub scrub_damage: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = MetricsRegistry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| r.counter_vec(name, help, labels);
        let gauge = |name: &str, help: &str, labels: &[&str]| r.gauge_vec(name, help, labels);
        let histogram = |name: &str, help: &str| r.histogram(name, help, &LATENCY_BUCKETS);
        let metrics = Metrics {
            requests: counter("silt_requests_total", "Requests received, by kind.", &["request"]),
            request_errors: counter(
                "silt_request_errors_total",
                "Requests answered with an error, by kind.",
                &["request"],
            ),
            records_in: counter("silt_records_in_total", "Records appended by producers.", &["topic"]),
            bytes_in: counter(
                "silt_bytes_in_total",
                "Batch bytes appended by producers, as stored.",
                &["topic"],
            ),
            records_out: counter("silt_records_out_total", "Records served to fetches.", &["topic"]),
            bytes_out: counter("silt_bytes_out_total", "Batch bytes served to fetches.", &["topic"]),
            append_seconds: histogram(
                "silt_append_duration_seconds",
                "One append transaction of a partition.",
            ),
            flush_seconds: histogram("silt_flush_duration_seconds", "One durability flush of the store."),
            ack_seconds: histogram(
                "silt_produce_ack_duration_seconds",
                "From a produce request to its acknowledgement.",
            ),
            connections: r.gauge("silt_connections_open", "Open QUIC connections."),
            quota_throttled: counter(
                "silt_quota_throttled_total",
                "Requests that waited because their principal was over a quota, by quota.",
                &["quota"],
            ),
            connections_refused: counter(
                "silt_connections_refused_total",
                "QUIC connections refused before their handshake, by reason.",
                &["reason"],
            ),
            request_bytes_pending: r.gauge(
                "silt_request_bytes_pending",
                "Request bytes read and not yet answered (capped per connection and broker-wide).",
            ),
            response_bytes_pending: r.gauge(
                "silt_response_bytes_pending",
                "Fetch response bytes held until their clients take them (at most response_bytes_max).",
            ),
            partition_size_bytes: gauge(
                "silt_partition_size_bytes",
                "Bytes of stored batches.",
                &["topic", "partition"],
            ),
            partition_high_watermark: gauge(
                "silt_partition_high_watermark",
                "Offset the next durable record gets.",
                &["topic", "partition"],
            ),
            consumer_group_lag: gauge(
                "silt_consumer_group_lag_records",
                "Records of a partition after a consumer group's committed offset.",
                &["group", "topic", "partition"],
            ),
            processor_events_in: counter(
                "silt_processor_events_in_total",
                "Input records a processor committed.",
                &["processor"],
            ),
            processor_events_out: counter(
                "silt_processor_events_out_total",
                "Output records a processor committed.",
                &["processor"],
            ),
            processor_batch_seconds: r.histogram_vec(
                "silt_processor_batch_duration_seconds",
                "Time of one call into a processor (one input batch).",
                &LATENCY_BUCKETS,
                &["processor"],
            ),
            processor_errors: counter(
                "silt_processor_errors_total",
                "Times a processor failed (trap, limit, error).",
                &["processor"],
            ),
            processor_restarts: counter(
                "silt_processor_restarts_total",
                "Starts of a processor's tasks (deploy, resume, rollback, tier switch, broker start).",
                &["processor"],
            ),
            processor_state: gauge(
                "silt_processor_state",
                "1 for the state a processor is in (running, paused, failed).",
                &["processor", "state"],
            ),
            processor_lag: gauge(
                "silt_processor_lag_records",
                "Input records a processor has not processed.",
                &["processor"],
            ),
            processor_counts: gauge(
                "silt_processor_counts",
                "A running processor's own counter (silt_counters; say, records skipped and why), totals since its state began, summed over partitions.",
                &["processor", "counter"],
            ),
            flush_failures: r.counter("silt_flush_failures_total", "Durability flushes that failed."),
            disk_free_bytes: r.gauge(
                "silt_disk_free_bytes",
                "Free bytes of the filesystem that holds the data directory (sampled 5 times a second).",
            ),
            disk_full: r.gauge(
                "silt_disk_full",
                "1 while produces are refused because free space is below disk_free_min_bytes.",
            ),
            disk_full_refusals: r.counter(
                "silt_disk_full_refusals_total",
                "Produces refused because the disk was nearly full (retriable; nothing of them stored).",
            ),
            auth_refusals: counter(
                "silt_auth_refusals_total",
                "Requests refused: unauthenticated (no or a bad credential) or denied (no right).",
                &["reason", "request"],
            ),
            audit_dropped: r.counter(
                "silt_audit_dropped_total",
                "Audit events dropped from the audit topic because its writer fell behind (still logged).",
            ),
            storage_faults: counter(
                "silt_storage_faults_total",
                "Storage faults found: partitions that lost acknowledged records, damaged ledger ranges.",
                &["kind"],
            ),
            lost_records: gauge(
                "silt_partition_lost_records",
                "Acknowledged records a partition lost to storage damage (found when the broker started).",
                &["topic", "partition"],
            ),
            accepted_loss_records: counter(
                "silt_accepted_loss_records_total",
                "Offsets of damaged records whose loss an operator accepted (silt topic repair --accept-loss).",
                &["topic", "partition"],
            ),
            scrub_bytes: r.counter("silt_scrub_bytes_total", "Stored bytes the background scrub read again and checked."),
            scrub_batches: r.counter("silt_scrub_batches_total", "Stored batches the background scrub read again and checked."),
            scrub_passes: r.counter("silt_scrub_passes_total", "Whole passes of the background scrub over every partition."),
            scrub_damage: gauge(
                "silt_partition_scrub_damage",
                "Problems (batches failing their checks, missing offsets) the last scrub of the partition found.",
                &["topic", "partition"],
            ),
            registry: r,
        };
        // Every series of the throttling and refusal counters exists from the start: a panel
        // shows 0 rather than nothing, and a rate sees the first increment.
        for quota in ["produce_bytes", "fetch_bytes", "requests"] {
            metrics.quota_throttled.with_label_values(&[quota]);
        }
        for reason in ["connections_max", "per_address"] {
            metrics.connections_refused.with_label_values(&[reason]);
        }
        for kind in ["lost_records", "ledger", "scrub", "metadata"] {
            metrics.storage_faults.with_label_values(&[kind]);
        }
        metrics
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
