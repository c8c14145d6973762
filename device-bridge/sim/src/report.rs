//! What a run counted and measured: per-device counters, progress while it runs, and the
//! report at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use silt_frame::NackReason;
use silt_telemetry::latency::Percentiles;
use tokio::sync::Notify;

use crate::{FaultPlan, Transport};

/// What one device counted; summed over the fleet in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames (readings, for MQTT) generated.
    pub generated: u64,
    /// Data frames (publishes) written to a connection, copies and retransmissions included.
    pub sent: u64,
    /// Transmissions after the first of a frame.
    pub retransmits: u64,
    /// Frames acknowledged as durable.
    pub acked: u64,
    /// Nacks received, verified or not, indexed by [`NackReason::index`].
    pub nacks: [u64; 8],
    pub ack_timeouts: u64,
    pub hellos: u64,
    /// Connections closed by the reconnect fault.
    pub reconnects: u64,
    /// Connections lost otherwise (refused, reset, closed by the bridge).
    pub connection_losses: u64,
    /// Cumulative acks lower than one received before: a bridge that forgot what it acked, or a
    /// late reply; ignored, since an ack is a promise.
    pub stale_acks: u64,
    /// Replies that failed to decode or verify.
    pub bad_replies: u64,
    /// MQTT: PUBACKs for a reading acked before (its duplicate or retransmission).
    pub duplicate_acks: u64,
    /// Frames generated more than one interval after their scheduled time.
    pub late: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub bad_tagged: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, o: &Counters) {
        self.generated += o.generated;
        self.sent += o.sent;
        self.retransmits += o.retransmits;
        self.acked += o.acked;
        for (a, b) in self.nacks.iter_mut().zip(o.nacks) {
            *a += b;
        }
        self.ack_timeouts += o.ack_timeouts;
        self.hellos += o.hellos;
        self.reconnects += o.reconnects;
        self.connection_losses += o.connection_losses;
        self.stale_acks += o.stale_acks;
        self.bad_replies += o.bad_replies;
        self.duplicate_acks += o.duplicate_acks;
        self.late += o.late;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.bad_tagged += o.bad_tagged;
    }
}

/// Progress of a running simulation, readable while it runs (progress bars, tests that act
/// at some point of a run).
#[derive(Debug, Default)]
pub struct Progress {
    /// Devices whose first hello (or MQTT CONNECT) was answered.
    pub connected: AtomicU64,
    pub generated: AtomicU64,
    pub acked: AtomicU64,
    /// Devices finished (every reading acked) or given up.
    pub finished: AtomicU64,
    changed: Notify,
}

impl Progress {
    pub(crate) fn bump(&self, counter: &AtomicU64, by: u64) {
        if by > 0 {
            counter.fetch_add(by, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// Waits until `f(self)` holds, or `within` passes; returns whether it holds.
    pub async fn wait_for(&self, within: Duration, f: impl Fn(&Progress) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if f(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return f(self);
            }
        }
    }
}

/// The readings of one device in the log: sequences `first_seq..=last_seq` (none when
/// `first_seq > last_seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutcome {
    pub id: String,
    pub first_seq: u32,
    pub last_seq: u32,
    /// Every generated reading was acked.
    pub complete: bool,
    /// Why the device stopped early, or what it had left when the run's time was up.
    pub problem: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub transport: Transport,
    pub devices: usize,
    pub seed: u64,
    pub faults: FaultPlan,
    pub counters: Counters,
    /// From the start of the run until every device was connected.
    pub connect_seconds: f64,
    /// From the common start until the last device finished.
    pub seconds: f64,
    /// Acked frames per second over `seconds`.
    pub frames_per_s: f64,
    /// Frame-to-ack latencies.
    pub latency: Percentiles,
    /// Every frame-to-ack latency, in µs (1 µs to [`LATENCY_US_MAX`]), for what the fields
    /// above do not say (a load test's percentile spectrum).
    pub latencies: Histogram<u64>,
    pub outcomes: Vec<DeviceOutcome>,
}

/// Latencies are recorded in µs, from 1 µs to 10 minutes at 3 significant digits.
pub const LATENCY_US_MAX: u64 = 600_000_000;

/// An empty latency histogram of the range [`SimReport::latencies`] holds.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

impl SimReport {
    /// Devices that did not get every reading acked.
    pub fn incomplete(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.complete).count()
    }

    /// The first few problems, for an error message.
    pub fn problems_text(&self) -> String {
        let mut out: Vec<String> = self
            .outcomes
            .iter()
            .filter(|o| !o.complete)
            .take(5)
            .map(|o| format!("{}: {}", o.id, o.problem.as_deref().unwrap_or("incomplete")))
            .collect();
        if self.incomplete() > out.len() {
            out.push(format!("and {} more", self.incomplete() - out.len()));
        }
        out.join("; ")
    }

    /// Nacks by reason name, only those that occurred.
    pub fn nacks(&self) -> BTreeMap<&'static str, u64> {
        NackReason::ALL
            .iter()
            .zip(self.counters.nacks)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counters;
        let mut v = serde_json::json!({
            "scenario": "devices",
            "transport": self.transport.as_str(),
            "devices": self.devices,
            "seed": self.seed,
            "faults": {
                "drop": self.faults.drop, "duplicate": self.faults.duplicate, "reorder": self.faults.reorder,
                "bad_tag": self.faults.bad_tag, "reconnect": self.faults.reconnect,
            },
            "generated": c.generated,
            "sent": c.sent,
            "retransmits": c.retransmits,
            "acked": c.acked,
            "nacks": self.nacks(),
            "ack_timeouts": c.ack_timeouts,
            "hellos": c.hellos,
            "reconnects": c.reconnects,
            "connection_losses": c.connection_losses,
            "stale_acks": c.stale_acks,
            "bad_replies": c.bad_replies,
            "duplicate_acks": c.duplicate_acks,
            "late": c.late,
            "faults_applied": {
                "dropped": c.dropped, "duplicated": c.duplicated, "reordered": c.reordered,
                "bad_tagged": c.bad_tagged, "reconnected": c.reconnects,
            },
            "connect_seconds": self.connect_seconds,
            "seconds": self.seconds,
            "frames_per_s": self.frames_per_s,
            "complete": self.incomplete() == 0,
        });
        for (name, us) in self.latency.named() {
            v[name] = us.into();
        }
        v
    }

    pub fn to_text(&self) -> String {
        let c = &self.counters;
        let nacks: Vec<String> = self.nacks().iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!(
            "devices ({}): {} devices, seed {}; connected in {:.2} s\n\
             {} frames generated, {} acked in {:.2} s: {:.0} frames/s\n\
             sent {} (retransmits {}), nacks: {}; ack timeouts {}, reconnects {}, connection losses {}, stale acks {}\n\
             faults applied: dropped {}, duplicated {}, reordered {}, bad tags {}\n\
             frame to ack (us): {}\n\
             {}",
            self.transport.as_str(),
            self.devices,
            self.seed,
            self.connect_seconds,
            c.generated,
            c.acked,
            self.seconds,
            self.frames_per_s,
            c.sent,
            c.retransmits,
            if nacks.is_empty() { "none".to_string() } else { nacks.join(", ") },
            c.ack_timeouts,
            c.reconnects,
            c.connection_losses,
            c.stale_acks,
            c.dropped,
            c.duplicated,
            c.reordered,
            c.bad_tagged,
            self.latency,
            if self.incomplete() == 0 {
                "every generated reading was acked".to_string()
            } else {
                format!("INCOMPLETE: {}", self.problems_text())
            },
        )
    }
}
