//! Prometheus metrics of the bridge, served on the admin port's `GET /metrics`. Names follow
//! the broker's conventions: `silt_bridge_` prefix, base units in the name, `_total` on
//! counters.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use silt_telemetry::MetricsRegistry;

/// Latency buckets from 100 µs to 10 s: a durable ack takes one journal flush and one broker
/// append, about 1-5 ms on this machine kind, more under load.
const LATENCY_BUCKETS: [f64; 15] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

pub struct Metrics {
    registry: MetricsRegistry,
    /// Frame connections bound to a device by a valid hello.
    pub devices_connected: IntGauge,
    /// Open connections by transport (`tcp`, `serial`, `mqtt`).
    pub connections: IntGaugeVec,
    pub frames_accepted: IntCounter,
    /// Frames refused with a nack, by reason (the nack reasons of docs/device-frames.md).
    pub frames_rejected: IntCounterVec,
    /// Data frames whose sequence was already durable: acked again, not stored again.
    pub duplicates_dropped: IntCounter,
    pub mqtt_sessions: IntGauge,
    /// MQTT PUBLISH packets, `in` from clients and `out` to subscribers.
    pub mqtt_messages: IntCounterVec,
    /// MQTT connections refused at CONNECT, by reason.
    pub mqtt_refused: IntCounterVec,
    pub records_appended: IntCounter,
    /// From a frame's or publish's submission to its durable confirmation.
    pub ack_seconds: Histogram,
    /// One appender round: journal, broker appends, completion.
    pub round_seconds: Histogram,
    /// One durable journal flush.
    pub journal_flush_seconds: Histogram,
    /// Broker requests of the appender that failed and were retried.
    pub broker_retries: IntCounter,
    /// Device refusals that could not reach the broker's audit topic (they are still logged).
    pub audit_dropped: IntCounter,
    /// Fresh producer ids taken after the broker refused a batch as out of order.
    pub producer_renewals: IntCounter,
    /// Records from device frames by who made them (`made_by`): `sensor` (a reading as it
    /// came) and `device_processor` (a processor on the device, the device tier); the two
    /// series resolved once, since every frame counts.
    pub records_from_sensors: IntCounter,
    pub records_from_device_processors: IntCounter,
    /// Records through bridge-tier processors, by processor and `direction` (`in`, `out`).
    pub processor_records: IntCounterVec,
    /// Bridge-tier processors stopped in this bridge after a failure, by processor.
    pub processor_failures: IntCounterVec,
    /// Module chunks sent to devices (module delivery).
    pub module_chunks: IntCounter,
    /// Module deliveries that ended, by `outcome` (`running`, `refused`).
    pub module_deliveries: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = MetricsRegistry::new();
        let c = |name: &str, help: &str| r.counter(name, help);
        let cv = |name: &str, help: &str, label: &str| r.counter_vec(name, help, &[label]);
        let histogram = |name: &str, help: &str| r.histogram(name, help, &LATENCY_BUCKETS);
        let device_records = cv(
            "silt_bridge_device_records_total",
            "Records from device frames, by who made them (sensor, device_processor).",
            "made_by",
        );
        Metrics {
            devices_connected: r
                .gauge("silt_bridge_devices_connected", "Frame connections bound to a device."),
            connections: r.gauge_vec(
                "silt_bridge_connections_open",
                "Open connections by transport.",
                &["transport"],
            ),
            frames_accepted: c(
                "silt_bridge_frames_accepted_total",
                "Data frames accepted and submitted for append.",
            ),
            frames_rejected: cv(
                "silt_bridge_frames_rejected_total",
                "Frames refused, by nack reason.",
                "reason",
            ),
            duplicates_dropped: c(
                "silt_bridge_duplicates_dropped_total",
                "Retransmitted data frames already durable, acked again and not stored.",
            ),
            mqtt_sessions: r.gauge("silt_bridge_mqtt_sessions", "Connected MQTT sessions."),
            mqtt_messages: cv(
                "silt_bridge_mqtt_messages_total",
                "MQTT PUBLISH packets by direction.",
                "direction",
            ),
            mqtt_refused: cv(
                "silt_bridge_mqtt_refused_total",
                "MQTT connections refused, by reason.",
                "reason",
            ),
            records_appended: c(
                "silt_bridge_records_appended_total",
                "Records the broker confirmed durable.",
            ),
            ack_seconds: histogram("silt_bridge_ack_duration_seconds", "Submission to durable confirmation."),
            round_seconds: histogram("silt_bridge_round_duration_seconds", "One appender round."),
            journal_flush_seconds: histogram(
                "silt_bridge_journal_flush_duration_seconds",
                "One journal flush.",
            ),
            broker_retries: c("silt_bridge_broker_retries_total", "Broker requests retried after a failure."),
            audit_dropped: c(
                "silt_bridge_audit_dropped_total",
                "Device refusals that did not reach the broker's audit topic (still logged).",
            ),
            producer_renewals: c(
                "silt_bridge_producer_renewals_total",
                "Fresh producer ids taken after the broker refused a batch as out of order.",
            ),
            records_from_sensors: device_records.with_label_values(&["sensor"]),
            records_from_device_processors: device_records.with_label_values(&["device_processor"]),
            processor_records: r.counter_vec(
                "silt_bridge_processor_records_total",
                "Records through bridge-tier processors, by processor and direction.",
                &["processor", "direction"],
            ),
            processor_failures: cv(
                "silt_bridge_processor_failures_total",
                "Bridge-tier processors stopped in this bridge after a failure.",
                "processor",
            ),
            module_chunks: c("silt_bridge_module_chunks_sent_total", "Module chunks sent to devices."),
            module_deliveries: cv(
                "silt_bridge_module_deliveries_total",
                "Module deliveries to devices that ended, by outcome (running, refused).",
                "outcome",
            ),
            registry: r,
        }
    }

    pub fn render(&self) -> String {
        self.registry.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
