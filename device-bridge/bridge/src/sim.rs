//! Simulated devices, for the bridge's tests, `silt-devsim` and `silt-loadtest devices`.
//!
//! N virtual devices send readings to a bridge over TCP (frames, `silt-frame`,
//! docs/device-frames.md) or MQTT 3.1.1 (QoS 1 publishes), each at a set rate with a window of
//! frames in flight, and prove at the end that every reading they generated was acknowledged
//! as durable. Faults can be switched on, each with a probability per generated frame: drop it
//! (never send its first copy), duplicate it, swap it with the next one, corrupt its tag, or
//! close the connection after it and reconnect.
//!
//! The fault plan is deterministic: each device draws from its own small PRNG seeded from the
//! run's seed and its index, once per generated frame, so the same seed gives every device the
//! same faults on the same frames again (timing, and so the interleaving with acks, is not
//! replayed). Print the seed with every failure.
//!
//! Code map: [`FaultPlan`] and [`Rng`]; [`FrameDevice`], one device's side of the frame
//! protocol without I/O (instants and bytes in, bytes out, like the firmware's state machine,
//! and unit-tested against the bridge's own `session` core on virtual time); `MqttDevice`,
//! the same bookkeeping for MQTT, whose protocol state lives in rumqttc's event loop; the
//! tokio drivers; [`run`], which starts the fleet, waits until every device is connected,
//! starts them together and gathers a [`SimReport`]; [`provision`], which registers
//! `sim-00000`.. in the broker's registry (or fetches the keys of those that exist).
//!
//! Latency is measured per frame from its *first* send (or the moment it would have been sent,
//! for a dropped frame) to the durable ack that covers it, so retransmissions count against
//! it. It is not measured from the frame's scheduled time: a device whose window is full sends
//! late, and `late` counts those frames.
//!
//! Deliberately absent: MQTT bad tags (MQTT has no per-message tag; the fault applies to frames
//! only), payload corruption other than the tag, and any device-side persistence (a device's
//! counter lives as long as the run).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use silt_client::{Client, ClientError, ErrorCode};
use silt_frame::{
    Body, Data, Deframer, Frame, Hello, Key, Nack, NackReason, Reading, Time, STUFFED_BYTES_MAX,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};

use crate::series::ReadingSource;

/// Most devices one run simulates; a run holds one task and one connection per device.
pub const DEVICES_MAX: usize = 100_000;
/// Largest window of frames in flight per device.
pub const WINDOW_MAX: u32 = 1024;
/// Generated frames one device holds unacknowledged (in flight or waiting for room in the
/// window). A rate-limited device that falls this far behind stops generating until acks come,
/// and its frames count as late.
pub const PENDING_MAX: usize = 4096;
/// Highest rate per device, frames per second (the timer resolution is a millisecond).
pub const RATE_PER_S_MAX: f64 = 1000.0;
/// An idle frame connection sends a heartbeat this often; the bridge closes connections idle
/// for its `limits.idle_timeout_ms` (120 s by default).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// First and last pause between connection attempts of one device (doubling, with jitter).
const RECONNECT_FIRST: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_millis(1000);
/// Connect attempts in progress at once, by default: a burst of thousands of SYNs at one
/// listener overflows its accept backlog and costs seconds of SYN retries.
pub const CONNECT_CONCURRENCY: usize = 256;
/// Bytes read from a frame connection at a time.
const READ_BYTES: usize = 4096;
/// Latency histogram range: 1 µs to 10 minutes.
const LATENCY_US_MAX: u64 = 600_000_000;
/// Keep-alive of MQTT sessions (the bridge closes them after one and a half of it).
const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// MQTT topic of simulated readings; the bridge stores it as `sensors.temperature`.
pub const MQTT_TOPIC: &str = "sensors/temperature";

/// Why the simulator could not run, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator settings: {0}")]
    Config(String),
    #[error("provisioning device {id}: {source}")]
    Provision { id: String, source: ClientError },
    #[error(
        "{} of {} devices did not get every reading acked (seed {}): {}",
        .0.incomplete(), .0.devices, .0.seed, .0.problems_text()
    )]
    Incomplete(Box<SimReport>),
}

/// How the simulated devices reach the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Frames over TCP (`--listen-tcp` of the bridge).
    Tcp,
    /// MQTT 3.1.1 QoS 1 publishes (`--listen-mqtt`).
    Mqtt,
}

impl Transport {
    /// The bridge's default listener for this transport.
    pub fn default_bridge(&self) -> &'static str {
        match self {
            Transport::Tcp => "127.0.0.1:7410",
            Transport::Mqtt => "127.0.0.1:1883",
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Mqtt => "mqtt",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "mqtt" => Ok(Transport::Mqtt),
            _ => Err(format!("{s:?}: expected tcp or mqtt")),
        }
    }
}

/// A small, fast, seedable PRNG (splitmix64): enough for fault plans and jitter, and the same
/// sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of device `index` in a run seeded with `seed`.
    pub fn for_device(seed: u64, index: usize) -> Rng {
        let mut r = Rng(seed ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one generated frame on its first transmission. Retransmissions are always
/// sent as they are, so every fault is recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The first copy is not sent: a gap the bridge nacks (out of order) or an ack timeout.
    Drop,
    /// Sent twice in a row: the second copy is in flight or a duplicate at the bridge.
    Duplicate,
    /// Swapped with the next frame: the bridge nacks the early one as out of order.
    Reorder,
    /// Sent with a corrupted tag: the bridge nacks it (bad tag) and it is sent again.
    BadTag,
    /// The connection is closed right after it and opened again (hello, resend).
    Reconnect,
}

/// Probability of each fault per generated frame; at most one fault per frame. Also the
/// fault flags of `silt-devsim` and `silt-loadtest devices` (flattened into both).
#[derive(Debug, Clone, Copy, Default, PartialEq, clap::Args)]
pub struct FaultPlan {
    /// Probability that a frame's first copy is not sent.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop: f64,
    /// Probability that a frame is sent twice.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub duplicate: f64,
    /// Probability that a frame is swapped with the next one.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub reorder: f64,
    /// Probability that a frame's tag is corrupted (TCP only).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub bad_tag: f64,
    /// Probability that the connection is closed and opened again after a frame.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub reconnect: f64,
}

impl FaultPlan {
    pub fn validate(&self) -> Result<(), SimError> {
        let all = [self.drop, self.duplicate, self.reorder, self.bad_tag, self.reconnect];
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(SimError::Config("fault probabilities must be between 0 and 1".into()));
        }
        if all.iter().sum::<f64>() > 1.0 {
            return Err(SimError::Config("fault probabilities must add up to at most 1".into()));
        }
        Ok(())
    }

    pub fn is_none(&self) -> bool {
        *self == FaultPlan::default()
    }

    /// One draw: which fault, if any, the next frame gets.
    pub fn draw(&self, rng: &mut Rng) -> Fault {
        if self.is_none() {
            return Fault::None;
        }
        let mut u = rng.next_f64();
        for (p, fault) in [
            (self.drop, Fault::Drop),
            (self.duplicate, Fault::Duplicate),
            (self.reorder, Fault::Reorder),
            (self.bad_tag, Fault::BadTag),
            (self.reconnect, Fault::Reconnect),
        ] {
            if u < p {
                return fault;
            }
            u -= p;
        }
        Fault::None
    }
}

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
    /// Nacks received, indexed by [`nack_index`].
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

const NACK_REASONS: [NackReason; 8] = [
    NackReason::BadTag,
    NackReason::UnknownDevice,
    NackReason::Revoked,
    NackReason::Decode,
    NackReason::OutOfOrder,
    NackReason::WrongDevice,
    NackReason::Unavailable,
    NackReason::NoHello,
];

/// Index of a nack reason in [`Counters::nacks`].
pub fn nack_index(r: NackReason) -> usize {
    NACK_REASONS.iter().position(|x| *x == r).expect("every reason is listed")
}

impl Counters {
    fn add(&mut self, o: &Counters) {
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

/// A registered device the simulator plays.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub id: String,
    pub key: Key,
}

/// The id of simulated device `index`: `sim-00000`, `sim-00001`, ...
pub fn device_id(index: u32) -> String {
    format!("sim-{index:05}")
}

/// Registers devices `first..first + count` (ids from [`device_id`]) with the broker's
/// registry, or fetches the keys of those already registered; `concurrency` requests at once.
pub async fn provision(
    client: &Client,
    first: u32,
    count: u32,
    concurrency: usize,
) -> Result<Vec<SimDevice>, SimError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let ids = (first..first.saturating_add(count)).map(device_id);
    stream::iter(ids)
        .map(|id| async move {
            let info = match client.add_device(&id).await {
                Ok(info) => Ok(info),
                Err(ClientError::Broker { code: ErrorCode::DeviceExists, .. }) => {
                    client.get_device(&id).await
                }
                Err(e) => Err(e),
            };
            let info = info.map_err(|source| SimError::Provision { id: id.clone(), source })?;
            if info.revoked_ms.is_some() {
                return Err(SimError::Config(format!("device {id} is revoked; pick other ids (--first)")));
            }
            let key = info
                .key
                .as_deref()
                .and_then(|k| Key::try_from(k).ok())
                .ok_or_else(|| SimError::Config(format!("the broker gave device {id} no 32-byte key")))?;
            Ok(SimDevice { id, key })
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The bridge's frame listener (TCP) or MQTT listener, `HOST:PORT`.
    pub bridge: String,
    pub transport: Transport,
    pub devices: Vec<SimDevice>,
    /// Frames per second per device; 0 sends as fast as the window allows.
    pub rate_per_s: f64,
    /// Frames per device; `None` generates until `duration` ends.
    pub frames: Option<u64>,
    /// How long devices generate frames; `None` until each has sent `frames`.
    pub duration: Option<Duration>,
    /// Frames in flight per device (sent, not yet acked).
    pub window: u32,
    /// A device resends everything unacked when its cumulative ack has not moved for this long.
    pub ack_timeout: Duration,
    /// Readings per frame (1..=16): temperature, humidity, then numeric channels 2, 3, ...
    /// MQTT publishes carry one temperature each.
    pub readings: u8,
    /// What frames carry instead of those readings (e.g. `series::Sensors`); TCP only.
    pub source: Option<Arc<dyn ReadingSource>>,
    pub faults: FaultPlan,
    pub seed: u64,
    /// Bound on the whole run: connecting, sending and waiting for the last ack.
    pub timeout: Duration,
    /// Connect attempts in progress at once.
    pub connect_concurrency: usize,
}

impl SimConfig {
    /// Defaults for `devices` talking to `bridge`: 10 frames each, as fast as a window of 8
    /// allows, no faults, seed 1, a 1 s ack timeout and a 120 s bound.
    pub fn new(bridge: String, transport: Transport, devices: Vec<SimDevice>) -> SimConfig {
        SimConfig {
            bridge,
            transport,
            devices,
            rate_per_s: 0.0,
            frames: Some(10),
            duration: None,
            window: 8,
            ack_timeout: Duration::from_secs(1),
            readings: 2,
            source: None,
            faults: FaultPlan::default(),
            seed: 1,
            timeout: Duration::from_secs(120),
            connect_concurrency: CONNECT_CONCURRENCY,
        }
    }

    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Config(m.to_string()));
        if self.devices.is_empty() || self.devices.len() > DEVICES_MAX {
            return bad(&format!("between 1 and {DEVICES_MAX} devices"));
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return bad(&format!("window must be between 1 and {WINDOW_MAX}"));
        }
        if !(0.0..=RATE_PER_S_MAX).contains(&self.rate_per_s) {
            return bad(&format!("rate must be between 0 and {RATE_PER_S_MAX} frames/s per device"));
        }
        if self.frames.is_none() && self.duration.is_none() {
            return bad("give a frame count per device, a duration, or both");
        }
        if self.readings == 0 || usize::from(self.readings) > silt_frame::READINGS_MAX {
            return bad(&format!("readings per frame must be between 1 and {}", silt_frame::READINGS_MAX));
        }
        if self.ack_timeout.is_zero() {
            return bad("the ack timeout must be above zero");
        }
        if self.transport == Transport::Mqtt && self.source.is_some() {
            return bad("a reading source applies to TCP frames only");
        }
        if self.transport == Transport::Mqtt && self.faults.bad_tag > 0.0 {
            return bad("MQTT publishes carry no tag: the bad-tag fault applies to TCP frames only");
        }
        self.faults.validate()
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
    fn bump(&self, counter: &AtomicU64, by: u64) {
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
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
    pub outcomes: Vec<DeviceOutcome>,
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
        NACK_REASONS
            .iter()
            .zip(self.counters.nacks)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
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
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "latency_samples": self.samples,
            "complete": self.incomplete() == 0,
        })
    }

    pub fn to_text(&self) -> String {
        let c = &self.counters;
        let nacks: Vec<String> = self.nacks().iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!(
            "devices ({}): {} devices, seed {}; connected in {:.2} s\n\
             {} frames generated, {} acked in {:.2} s: {:.0} frames/s\n\
             sent {} (retransmits {}), nacks: {}; ack timeouts {}, reconnects {}, connection losses {}, stale acks {}\n\
             faults applied: dropped {}, duplicated {}, reordered {}, bad tags {}\n\
             frame to ack (us): p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)\n\
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
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.samples,
            if self.incomplete() == 0 {
                "every generated reading was acked".to_string()
            } else {
                format!("INCOMPLETE: {}", self.problems_text())
            },
        )
    }
}

/// One device's part of the settings.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub id: String,
    pub key: Key,
    pub rng: Rng,
    pub faults: FaultPlan,
    pub window: u32,
    pub ack_timeout: Duration,
    /// Time between generated frames; `None`: as fast as the window allows.
    pub interval: Option<Duration>,
    pub frames: Option<u64>,
    pub duration: Option<Duration>,
    pub readings: u8,
    pub source: Option<Arc<dyn ReadingSource>>,
}

impl DeviceSettings {
    fn of(config: &SimConfig, index: usize) -> DeviceSettings {
        let d = &config.devices[index];
        DeviceSettings {
            id: d.id.clone(),
            key: d.key,
            rng: Rng::for_device(config.seed, index),
            faults: config.faults,
            window: config.window,
            ack_timeout: config.ack_timeout,
            interval: (config.rate_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / config.rate_per_s)),
            frames: config.frames,
            duration: config.duration,
            readings: config.readings,
            source: config.source.clone(),
        }
    }
}

/// When a device may generate frames.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    started: bool,
    /// No more frames: the count or the duration is reached.
    over: bool,
    next_due: Instant,
    until: Option<Instant>,
}

impl Schedule {
    fn new(now: Instant) -> Schedule {
        Schedule { started: false, over: false, next_due: now, until: None }
    }

    fn start(&mut self, s: &mut DeviceSettings, at: Instant) {
        self.started = true;
        // Devices start at a random phase of their interval, so a fleet at 1 frame/s does not
        // send 10,000 frames in the same millisecond each second.
        let phase = s.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(s.rng.next_f64()));
        self.next_due = at + phase;
        self.until = s.duration.map(|d| at + d);
    }

    /// Whether one more frame is due now (and moves the schedule if so); `late` is set when it
    /// is more than one interval behind.
    fn due(&mut self, s: &DeviceSettings, generated: u64, room: bool, now: Instant, late: &mut u64) -> bool {
        if !self.started || self.over {
            return false;
        }
        if s.frames.is_some_and(|m| generated >= m) || self.until.is_some_and(|u| now >= u) {
            self.over = true;
            return false;
        }
        if !room {
            return false;
        }
        match s.interval {
            None => true,
            Some(iv) if now >= self.next_due => {
                if now >= self.next_due + iv {
                    *late += 1;
                }
                self.next_due += iv;
                true
            }
            Some(_) => false,
        }
    }

    /// When the next frame is due, if one can be.
    fn wake(&self, s: &DeviceSettings) -> Option<Instant> {
        if !self.started || self.over {
            return None;
        }
        let next = s.interval.map(|_| self.next_due);
        match (next, self.until) {
            (Some(n), Some(u)) => Some(n.min(u)),
            (n, u) => n.or(u),
        }
    }
}

/// One generated frame that is not acked yet.
#[derive(Debug, Clone)]
struct Pending {
    fault: Fault,
    /// The first transmission (sent or dropped) happened, at this instant.
    first_sent: Option<Instant>,
    /// Device tick when generated: the frame's event time.
    tick_ms: u64,
    /// The bridge nacked the corrupted copy already.
    bad_tag_seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// Hello sent at this instant, no answer yet.
    Hello(Instant),
    Up,
}

/// One device's side of the frame protocol (docs/device-frames.md, "Exchange"), without I/O.
///
/// The driver calls [`FrameDevice::connected`] when a connection opens,
/// [`FrameDevice::handle_frame`] with each unstuffed frame the bridge sends,
/// [`FrameDevice::poll_transmit`] for the bytes to write, and
/// [`FrameDevice::handle_timeout`] at [`FrameDevice::poll_timeout`]. Sequences are go-back-N:
/// the device sends in order within its window, and on an ack timeout, an out-of-order or a
/// bad-tag nack it goes back and sends again from the first frame the bridge lacks. A nack
/// about a frame sent before the last go-back is a reply to an old copy and is ignored (the ack
/// timeout covers anything that slips through), which keeps a burst of out-of-order nacks from
/// restarting the window once per nack.
#[derive(Debug)]
pub struct FrameDevice {
    s: DeviceSettings,
    boot: Instant,
    schedule: Schedule,
    /// Sequence of the first hello's ack: data sequences are `base + 1 ..= base + generated`.
    base: Option<u32>,
    generated: u64,
    acked: u32,
    next_tx: u32,
    /// Nacks for sequences below this are replies to copies sent before the last go-back.
    guard: u32,
    /// Frames `acked + 1 ..= last_generated`, oldest first.
    pending: VecDeque<Pending>,
    /// The ack timeout runs from this instant, while frames are in flight.
    timer: Option<Instant>,
    link: Link,
    hello_queued: bool,
    last_tx: Instant,
    pub counters: Counters,
    latencies_us: Vec<u64>,
    failed: Option<String>,
}

impl FrameDevice {
    pub fn new(s: DeviceSettings, now: Instant) -> FrameDevice {
        assert!(s.window > 0 && s.window <= WINDOW_MAX);
        assert!(s.readings > 0 && usize::from(s.readings) <= silt_frame::READINGS_MAX);
        FrameDevice {
            s,
            boot: now,
            schedule: Schedule::new(now),
            base: None,
            generated: 0,
            acked: 0,
            next_tx: 1,
            guard: 1,
            pending: VecDeque::new(),
            timer: None,
            link: Link::Down,
            hello_queued: false,
            last_tx: now,
            counters: Counters::default(),
            latencies_us: Vec::new(),
            failed: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.s.id
    }

    /// A connection opened: the device will send its hello first.
    pub fn connected(&mut self, now: Instant) {
        self.link = Link::Hello(now);
        self.hello_queued = true;
        self.timer = None;
    }

    /// The connection closed or failed.
    pub fn disconnected(&mut self) {
        self.link = Link::Down;
        self.hello_queued = false;
        self.timer = None;
    }

    /// Whether the bridge has answered a hello on this connection.
    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// Whether the device learned its first sequence (its first hello was answered).
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// Starts generating frames (the fleet starts together once every device is connected).
    pub fn start(&mut self, at: Instant) {
        self.schedule.start(&mut self.s, at);
    }

    /// Stops generating; frames generated so far are still sent until acked.
    pub fn stop_generating(&mut self) {
        self.schedule.over = true;
    }

    /// Every generated frame is acked and no more will be generated.
    pub fn is_done(&self) -> bool {
        self.base.is_some() && self.schedule.started && self.schedule.over && self.pending.is_empty()
    }

    /// Why the device gave up (the bridge refused it for good), if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The data sequences generated so far, `first..=last`.
    pub fn seqs(&self) -> (u32, u32) {
        let base = self.base.unwrap_or(0);
        (base + 1, self.last_generated())
    }

    /// Moves the latencies measured since the last call (µs, first send to durable ack) out.
    pub fn drain_latencies(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.latencies_us);
    }

    fn last_generated(&self) -> u32 {
        // Generation stops before the sequence space ends (see `generate`).
        self.base.unwrap_or(0) + self.generated as u32
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    fn tick_ms(&self, now: Instant) -> u64 {
        // The device "booted" a second before the run: ticks are never zero.
        1_000 + now.saturating_duration_since(self.boot).as_millis() as u64
    }

    /// Handles one unstuffed frame from the bridge.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Instant) {
        let verified = silt_frame::decode(bytes).and_then(|u| u.verify(&self.s.key));
        let (frame, verified) = match verified {
            Ok(f) => (f, true),
            Err(_) => match silt_frame::decode(bytes).and_then(|u| u.verify(&crate::session::ZERO_KEY)) {
                Ok(f) => (f, false),
                Err(_) => {
                    self.counters.bad_replies += 1;
                    return;
                }
            },
        };
        match frame.body {
            Body::Ack | Body::Heartbeat if verified => self.on_ack(frame.ack, now),
            Body::Nack(n) => {
                self.counters.nacks[nack_index(n.reason)] += 1;
                self.on_nack(n, frame.ack, verified, now);
            }
            _ => self.counters.bad_replies += 1,
        }
    }

    fn on_ack(&mut self, ack: u32, now: Instant) {
        match self.link {
            Link::Down => {}
            Link::Hello(_) => {
                self.link = Link::Up;
                match self.base {
                    None => {
                        self.base = Some(ack);
                        self.acked = ack;
                    }
                    Some(_) if ack < self.acked => self.counters.stale_acks += 1,
                    Some(_) => self.advance(ack, now),
                }
                // Whatever was in flight on an earlier connection is sent again.
                self.next_tx = self.acked + 1;
                self.guard = self.next_tx;
                self.timer = None;
            }
            Link::Up if ack < self.acked => self.counters.stale_acks += 1,
            Link::Up => self.advance(ack, now),
        }
    }

    fn advance(&mut self, ack: u32, now: Instant) {
        if ack <= self.acked {
            return;
        }
        let last = self.last_generated();
        if ack > last {
            self.fail(format!("the bridge acked sequence {ack}, beyond the last one sent ({last})"));
            return;
        }
        for _ in self.acked..ack {
            let p = self.pending.pop_front().expect("pending covers acked + 1 ..= last generated");
            match p.first_sent {
                Some(t) => self.latencies_us.push(now.saturating_duration_since(t).as_micros() as u64),
                None => {
                    self.fail(format!("the bridge acked a frame that was never sent (ack {ack})"));
                    return;
                }
            }
        }
        self.counters.acked += u64::from(ack - self.acked);
        self.acked = ack;
        self.next_tx = self.next_tx.max(ack + 1);
        self.guard = self.guard.max(ack + 1);
        self.timer = (self.next_tx > self.acked + 1).then_some(now);
    }

    fn on_nack(&mut self, n: Nack, ack: u32, verified: bool, now: Instant) {
        match n.reason {
            NackReason::BadTag => {
                if self.link != Link::Up {
                    self.fail("the bridge refused the hello's tag: is the key right?".into());
                    return;
                }
                let s = n.seq;
                if s <= self.acked || s >= self.next_tx {
                    return;
                }
                let p = &mut self.pending[(s - self.acked - 1) as usize];
                if p.fault != Fault::BadTag {
                    self.fail(format!("the bridge refused the tag of frame {s}, which was tagged correctly"));
                } else if !p.bad_tag_seen {
                    p.bad_tag_seen = true;
                    self.rewind(s, now);
                }
            }
            NackReason::OutOfOrder => {
                // Unverified nacks are hints only; the ack timeout handles what they hint at.
                if !verified || self.link != Link::Up {
                    return;
                }
                if ack < self.acked {
                    self.counters.stale_acks += 1;
                }
                if n.seq >= self.guard {
                    let from = self.acked.max(ack) + 1;
                    if from < self.next_tx {
                        self.rewind(from, now);
                    }
                }
            }
            NackReason::NoHello => {
                self.link = Link::Hello(now);
                self.hello_queued = true;
            }
            // The bridge could not make the frame durable or could not reach the registry; the
            // ack timeout sends it again.
            NackReason::Unavailable => {}
            NackReason::UnknownDevice
            | NackReason::Revoked
            | NackReason::WrongDevice
            | NackReason::Decode => {
                self.fail(format!("the bridge refused frame {}: {}", n.seq, n.reason.as_str()));
            }
        }
    }

    /// Go-back-N: the next transmission is `from`, and nacks about copies sent so far are stale.
    fn rewind(&mut self, from: u32, now: Instant) {
        debug_assert!(from > self.acked && from < self.next_tx);
        self.guard = self.guard.max(self.next_tx);
        self.next_tx = from;
        self.timer = Some(now);
    }

    /// Handles the deadline of [`FrameDevice::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.link {
            Link::Hello(at) if now >= at + self.s.ack_timeout => {
                self.link = Link::Hello(now);
                self.hello_queued = true;
            }
            Link::Up => {
                if let Some(t) = self.timer {
                    if now >= t + self.s.ack_timeout && self.next_tx > self.acked + 1 {
                        self.counters.ack_timeouts += 1;
                        self.rewind(self.acked + 1, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// When [`FrameDevice::handle_timeout`] (or another [`FrameDevice::poll_transmit`]) is
    /// due; `None`: only a reply or the start can move the device on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        match self.link {
            Link::Down => None,
            Link::Hello(at) => Some(at + self.s.ack_timeout),
            Link::Up => {
                let ack = self.timer.map(|t| t + self.s.ack_timeout);
                let heartbeat = Some(self.last_tx + HEARTBEAT_INTERVAL);
                [ack, heartbeat, self.schedule.wake(&self.s)].into_iter().flatten().min()
            }
        }
    }

    /// Appends the bytes to write now to `out`; returns true when the connection must be closed
    /// after writing them (the reconnect fault).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let before = out.len();
        match self.link {
            Link::Down => return false,
            Link::Hello(_) => {
                if self.hello_queued {
                    self.hello_queued = false;
                    self.counters.hellos += 1;
                    // The first hello says "no counter" (0) so that the device continues from the
                    // bridge's state; later ones carry the next sequence, so a bridge whose state
                    // is behind (or gone) moves to it instead of asking for frames already acked.
                    let next = if self.base.is_some() { self.acked + 1 } else { 0 };
                    let tick_ms = self.tick_ms(now);
                    let body = Body::Hello(Hello { device: &self.s.id, tick_ms, firmware: "silt-devsim" });
                    encode(out, &Frame { seq: next, ack: 0, body }, &self.s.key);
                    self.last_tx = now;
                }
                return false;
            }
            Link::Up => {}
        }
        self.generate(now);
        let mut reconnect = false;
        let window_end = self.acked.saturating_add(self.s.window);
        while self.next_tx <= self.last_generated() && self.next_tx <= window_end && !reconnect {
            let s = self.next_tx;
            let i = (s - self.acked - 1) as usize;
            if self.timer.is_none() {
                self.timer = Some(now);
            }
            if self.pending[i].first_sent.is_some() {
                self.write_data(out, s, false);
                self.counters.retransmits += 1;
                self.next_tx += 1;
                continue;
            }
            self.pending[i].first_sent = Some(now);
            self.next_tx += 1;
            match self.pending[i].fault {
                Fault::None => self.write_data(out, s, false),
                Fault::Drop => self.counters.dropped += 1,
                Fault::Duplicate => {
                    self.write_data(out, s, false);
                    self.write_data(out, s, false);
                    self.counters.duplicated += 1;
                }
                Fault::Reorder => {
                    let next_ready = s < self.last_generated() && s < window_end;
                    if next_ready && self.pending[i + 1].first_sent.is_none() {
                        // The next frame goes first; its own fault is not applied.
                        self.pending[i + 1].first_sent = Some(now);
                        self.pending[i + 1].fault = Fault::None;
                        self.write_data(out, s + 1, false);
                        self.write_data(out, s, false);
                        self.next_tx += 1;
                        self.counters.reordered += 1;
                    } else if !next_ready && !self.schedule.over && s < window_end {
                        // The next frame is not generated yet and will fit the window: hold this
                        // one back until it is, so the swap happens whatever the rate.
                        self.pending[i].first_sent = None;
                        self.next_tx -= 1;
                        if self.next_tx == self.acked + 1 {
                            self.timer = None;
                        }
                        break;
                    } else {
                        self.write_data(out, s, false);
                    }
                }
                Fault::BadTag => {
                    self.write_data(out, s, true);
                    self.counters.bad_tagged += 1;
                }
                Fault::Reconnect => {
                    self.write_data(out, s, false);
                    self.counters.reconnects += 1;
                    reconnect = true;
                }
            }
        }
        if out.len() == before && now >= self.last_tx + HEARTBEAT_INTERVAL {
            encode(out, &Frame { seq: 0, ack: 0, body: Body::Heartbeat }, &self.s.key);
        }
        if out.len() > before {
            self.last_tx = now;
        }
        reconnect
    }

    fn generate(&mut self, now: Instant) {
        let Some(base) = self.base else { return };
        loop {
            // The sequence space ends at u32::MAX; a device that reaches it stops generating.
            let room_in_space = u64::from(base) + self.generated < u64::from(u32::MAX);
            let room = self.pending.len() < PENDING_MAX
                && room_in_space
                && (self.s.interval.is_some() || self.pending.len() < self.s.window as usize);
            if !room_in_space {
                self.schedule.over = true;
            }
            if !self.schedule.due(&self.s, self.generated, room, now, &mut self.counters.late) {
                return;
            }
            let fault = self.s.faults.draw(&mut self.s.rng);
            let tick_ms = self.tick_ms(now);
            self.pending.push_back(Pending { fault, first_sent: None, tick_ms, bad_tag_seen: false });
            self.generated += 1;
            self.counters.generated += 1;
        }
    }

    fn write_data(&mut self, out: &mut Vec<u8>, seq: u32, bad_tag: bool) {
        let p = &self.pending[(seq - self.acked - 1) as usize];
        let mut readings = heapless::Vec::new();
        match &self.s.source {
            Some(source) => source.readings(&self.s.id, seq, &mut readings),
            None => {
                for i in 0..self.s.readings {
                    let r = reading(i, seq);
                    readings.push(r).expect("readings are at most READINGS_MAX");
                }
            }
        }
        let body = Body::Data(Data { device: &self.s.id, time: Time::TickMs(p.tick_ms), readings });
        let frame = Frame { seq, ack: 0, body };
        if bad_tag {
            // A tag made with another key is as wrong as a corrupted one, and stays a valid frame.
            let mut key = self.s.key;
            key[0] ^= 0xff;
            encode(out, &frame, &key);
        } else {
            encode(out, &frame, &self.s.key);
        }
        self.counters.sent += 1;
    }
}

/// Reading `i` of frame `seq`: values that vary with the sequence, so a reader can tell frames
/// apart, and that are always finite.
fn reading(i: u8, seq: u32) -> Reading<'static> {
    let wobble = f64::from(seq % 1000) / 100.0;
    match i {
        0 => Reading::Temperature(15.0 + wobble as f32),
        1 => Reading::Humidity(40.0 + wobble as f32),
        c => Reading::Numeric { channel: u16::from(c), value: 1000.0 + wobble },
    }
}

fn encode(out: &mut Vec<u8>, frame: &Frame<'_>, key: &Key) {
    let mut buf = [0u8; STUFFED_BYTES_MAX];
    // Device ids are checked when provisioned and 16 readings fit a frame: encoding succeeds.
    let n = silt_frame::encode_stuffed(frame, key, &mut buf).expect("simulated frames fit");
    out.extend_from_slice(&buf[..n]);
}

/// One MQTT device's bookkeeping: the same schedule, window, faults and latency accounting as
/// [`FrameDevice`], for publishes that rumqttc's event loop carries. Readings are numbered from
/// 1 (MQTT has no bridge-side sequence), acked individually by PUBACK, and retransmitted when
/// unacked for the ack timeout or after a reconnect. QoS 1 is at-least-once: a retransmitted
/// or duplicated publish may be stored twice.
#[derive(Debug)]
struct MqttDevice {
    s: DeviceSettings,
    schedule: Schedule,
    generated: u64,
    /// Unacked readings by sequence: first send, last send, fault.
    unacked: BTreeMap<u32, MqttPending>,
    /// Readings to (re)publish, in order.
    queue: VecDeque<u32>,
    /// A reading with the reorder fault, held back until the next reading's first copy is out.
    held: Option<u32>,
    counters: Counters,
    latencies_us: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct MqttPending {
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    fault: Fault,
}

impl MqttDevice {
    fn new(s: DeviceSettings, now: Instant) -> MqttDevice {
        MqttDevice {
            s,
            schedule: Schedule::new(now),
            generated: 0,
            unacked: BTreeMap::new(),
            queue: VecDeque::new(),
            held: None,
            counters: Counters::default(),
            latencies_us: Vec::new(),
        }
    }

    fn is_done(&self) -> bool {
        self.schedule.started && self.schedule.over && self.unacked.is_empty()
    }

    /// A session opened: every unacked reading is published again (sessions are clean).
    fn connected(&mut self) {
        self.queue = self.unacked.keys().copied().collect();
        self.held = None;
    }

    /// Sequences to publish now, in order (a sequence twice for a duplicate); true when the
    /// session must be closed after them.
    fn poll_publish(&mut self, now: Instant, out: &mut Vec<u32>) -> bool {
        while self.unacked.len() < self.s.window as usize
            && self.schedule.due(
                &self.s,
                self.generated,
                self.unacked.len() < PENDING_MAX && self.generated < u64::from(u32::MAX),
                now,
                &mut self.counters.late,
            )
        {
            self.generated += 1;
            let seq = self.generated as u32;
            let fault = self.s.faults.draw(&mut self.s.rng);
            self.unacked.insert(seq, MqttPending { first_sent: None, last_sent: None, fault });
            self.queue.push_back(seq);
            self.counters.generated += 1;
        }
        let mut reconnect = false;
        while let Some(seq) = self.queue.pop_front() {
            let Some(p) = self.unacked.get_mut(&seq) else { continue };
            p.last_sent = Some(now);
            if p.first_sent.is_some() {
                self.counters.retransmits += 1;
                self.counters.sent += 1;
                out.push(seq);
                continue;
            }
            p.first_sent = Some(now);
            let fault = p.fault;
            if fault == Fault::Reorder && self.held.is_none() {
                // Held until the next reading has gone first (it may not be generated yet).
                self.held = Some(seq);
                continue;
            }
            match fault {
                Fault::Drop => self.counters.dropped += 1,
                Fault::Duplicate => {
                    out.extend([seq, seq]);
                    self.counters.sent += 2;
                    self.counters.duplicated += 1;
                }
                // Refused by `SimConfig::validate` for MQTT; a second reorder while one is held
                // goes out as it is.
                Fault::None | Fault::BadTag | Fault::Reorder | Fault::Reconnect => {
                    out.push(seq);
                    self.counters.sent += 1;
                }
            }
            self.release_held(out, true);
            if fault == Fault::Reconnect {
                self.counters.reconnects += 1;
                reconnect = true;
                break;
            }
        }
        if self.schedule.over && self.queue.is_empty() {
            // The held reading was the last one: no next reading will come.
            self.release_held(out, false);
        }
        reconnect
    }

    /// Publishes the held reading (`reordered`: after a later one), if it is still unacked.
    fn release_held(&mut self, out: &mut Vec<u32>, reordered: bool) {
        if let Some(h) = self.held.take() {
            if self.unacked.contains_key(&h) {
                out.push(h);
                self.counters.sent += 1;
                if reordered {
                    self.counters.reordered += 1;
                }
            }
        }
    }

    fn acked(&mut self, seq: u32, now: Instant) {
        match self.unacked.remove(&seq) {
            Some(p) => {
                let first = p.first_sent.expect("an acked reading was sent");
                self.latencies_us.push(now.saturating_duration_since(first).as_micros() as u64);
                self.counters.acked += 1;
            }
            None => self.counters.duplicate_acks += 1,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.s.ack_timeout;
        let mut expired = false;
        for (seq, p) in &self.unacked {
            if p.last_sent.is_some_and(|t| now >= t + timeout) && !self.queue.contains(seq) {
                self.queue.push_back(*seq);
                expired = true;
                if self.held == Some(*seq) {
                    // It goes out with the retransmissions instead.
                    self.held = None;
                }
            }
        }
        if expired {
            self.counters.ack_timeouts += 1;
            self.queue.make_contiguous().sort_unstable();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let ack = self.unacked.values().filter_map(|p| p.last_sent).min().map(|t| t + self.s.ack_timeout);
        [ack, self.schedule.wake(&self.s)].into_iter().flatten().min()
    }
}

/// What every device task of a run shares.
struct Fleet {
    bridge: String,
    progress: Arc<Progress>,
    start: watch::Receiver<Option<Instant>>,
    deadline: tokio::time::Instant,
    connect_slots: Semaphore,
    latencies: Mutex<Histogram<u64>>,
}

impl Fleet {
    fn record(&self, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.latencies.lock().expect("latency histogram");
        for us in samples.drain(..) {
            h.saturating_record(us.clamp(1, LATENCY_US_MAX));
        }
    }
}

/// Runs the simulation: connects every device, starts them together, and returns when every
/// device had all its readings acked, or fails with [`SimError::Incomplete`] (whose report says
/// what is missing) when `config.timeout` passes first.
pub async fn run(config: SimConfig, progress: Arc<Progress>) -> Result<SimReport, SimError> {
    config.validate()?;
    let began = Instant::now();
    let (start_tx, start_rx) = watch::channel(None);
    let fleet = Arc::new(Fleet {
        bridge: config.bridge.clone(),
        progress: progress.clone(),
        start: start_rx,
        deadline: tokio::time::Instant::now() + config.timeout,
        connect_slots: Semaphore::new(config.connect_concurrency.max(1)),
        latencies: Mutex::new(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.devices.len() {
        let s = DeviceSettings::of(&config, i);
        let fleet = fleet.clone();
        match config.transport {
            Transport::Tcp => tasks.spawn(drive_frames(FrameDevice::new(s, Instant::now()), fleet)),
            Transport::Mqtt => tasks.spawn(drive_mqtt(MqttDevice::new(s, Instant::now()), fleet)),
        };
    }
    let n = config.devices.len() as u64;
    let all_connected = progress.wait_for(config.timeout, |p| p.connected.load(Ordering::Relaxed) >= n).await;
    let connect_seconds = began.elapsed().as_secs_f64();
    let started = Instant::now();
    if all_connected {
        let _ = start_tx.send(Some(started));
    }
    let mut outcomes = Vec::with_capacity(config.devices.len());
    let mut counters = Counters::default();
    let mut finished = started;
    while let Some(done) = tasks.join_next().await {
        let (outcome, c, at) = done.expect("a device task panicked");
        counters.add(&c);
        finished = finished.max(at);
        outcomes.push(outcome);
    }
    outcomes.sort_by(|a, b| a.id.cmp(&b.id));
    if !all_connected {
        for o in outcomes.iter_mut().filter(|o| o.problem.is_none()) {
            o.complete = false;
            o.problem = Some("not every device connected in time, so none started".into());
        }
    }
    let seconds = finished.saturating_duration_since(started).as_secs_f64().max(1e-9);
    let h = fleet.latencies.lock().expect("latency histogram").clone();
    let report = SimReport {
        transport: config.transport,
        devices: config.devices.len(),
        seed: config.seed,
        faults: config.faults,
        frames_per_s: counters.acked as f64 / seconds,
        counters,
        connect_seconds,
        seconds,
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        samples: h.len(),
        outcomes,
    };
    if report.incomplete() > 0 {
        return Err(SimError::Incomplete(Box::new(report)));
    }
    Ok(report)
}

/// Raises this process's soft limit of open files to its hard limit and returns the limit in
/// force (`None` if it cannot be read): each simulated device holds a socket, so 10,000 devices
/// need more than the usual soft limit of 1024.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Pause before connection attempt `attempt` (0-based): doubling, with jitter from the
/// device's generator so a fleet does not reconnect in lockstep.
fn backoff(attempt: u32, rng: &mut Rng) -> Duration {
    let base = RECONNECT_FIRST.saturating_mul(1 << attempt.min(10)).min(RECONNECT_MAX);
    base.mul_f64(0.5 + rng.next_f64() / 2.0)
}

async fn connect_tcp(fleet: &Fleet, rng: &mut Rng) -> Option<TcpStream> {
    let mut attempt = 0;
    loop {
        let result = {
            let _slot = fleet.connect_slots.acquire().await.expect("never closed");
            tokio::time::timeout_at(fleet.deadline, TcpStream::connect(&fleet.bridge)).await.ok()?
        };
        match result {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Err(_) => {
                // A refused connection is a bridge not up yet, or restarting: keep trying until
                // the run's deadline.
                let pause = backoff(attempt, rng);
                attempt += 1;
                if tokio::time::timeout_at(fleet.deadline, tokio::time::sleep(pause)).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Drives one frame device over TCP until it is done, fails, or the run's time is up.
async fn drive_frames(mut dev: FrameDevice, fleet: Arc<Fleet>) -> (DeviceOutcome, Counters, Instant) {
    let mut start = fleet.start.clone();
    let mut jitter = Rng::new(dev.s.rng.clone().next_u64());
    let mut counted_connected = false;
    let mut out = Vec::with_capacity(READ_BYTES);
    let mut buf = vec![0u8; READ_BYTES];
    let mut latencies = Vec::new();
    let mut deframer = Box::new(Deframer::new());
    let mut acked_reported = 0u64;
    let mut generated_reported = 0u64;
    let mut problem = None;
    'connection: while !dev.is_done() && dev.failed().is_none() {
        let Some(stream) = connect_tcp(&fleet, &mut jitter).await else {
            problem = Some("the run's time was up while connecting".to_string());
            break;
        };
        let (mut rd, mut wr) = stream.into_split();
        *deframer = Deframer::new();
        dev.connected(Instant::now());
        loop {
            // Until the fleet starts, only the hello goes out.
            if dev.has_base() && !dev.schedule.started {
                if let Some(at) = *start.borrow() {
                    dev.start(at);
                }
            }
            out.clear();
            let reconnect = dev.poll_transmit(Instant::now(), &mut out);
            if !out.is_empty() && wr.write_all(&out).await.is_err() {
                dev.counters.connection_losses += 1;
                dev.disconnected();
                continue 'connection;
            }
            if dev.is_up() && !counted_connected {
                counted_connected = true;
                fleet.progress.bump(&fleet.progress.connected, 1);
            }
            dev.drain_latencies(&mut latencies);
            fleet.record(&mut latencies);
            fleet.progress.bump(&fleet.progress.acked, dev.counters.acked - acked_reported);
            acked_reported = dev.counters.acked;
            fleet.progress.bump(&fleet.progress.generated, dev.counters.generated - generated_reported);
            generated_reported = dev.counters.generated;
            if dev.is_done() || dev.failed().is_some() {
                break 'connection;
            }
            if reconnect {
                dev.disconnected();
                continue 'connection;
            }
            let wake = dev.poll_timeout().map(tokio::time::Instant::from_std);
            let wait_start = dev.has_base() && !dev.schedule.started;
            tokio::select! {
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => {
                            dev.counters.connection_losses += 1;
                            dev.disconnected();
                            continue 'connection;
                        }
                        Ok(n) => n,
                    };
                    let now = Instant::now();
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        let (used, frame) = deframer.push(input);
                        input = &input[used..];
                        match frame {
                            Some(Ok(bytes)) => dev.handle_frame(bytes, now),
                            Some(Err(_)) => dev.counters.bad_replies += 1,
                            None => {}
                        }
                    }
                }
                () = sleep_until_opt(wake) => dev.handle_timeout(Instant::now()),
                changed = start.changed(), if wait_start => {
                    if changed.is_err() {
                        break 'connection;
                    }
                }
                () = tokio::time::sleep_until(fleet.deadline) => {
                    break 'connection;
                }
            }
        }
    }
    let finished = Instant::now();
    fleet.progress.bump(&fleet.progress.finished, 1);
    let (first_seq, last_seq) = dev.seqs();
    let complete = dev.is_done();
    let problem = dev.failed().map(str::to_string).or(problem).or_else(|| {
        (!complete).then(|| {
            format!("acked up to {} of {}..={} when the run's time was up", dev.acked, first_seq, last_seq)
        })
    });
    let outcome = DeviceOutcome { id: dev.s.id.clone(), first_seq, last_seq, complete, problem };
    (outcome, dev.counters, finished)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn mqtt_payload(device: &str, seq: u32) -> Vec<u8> {
    let value = 15.0 + f64::from(seq % 1000) / 100.0;
    format!(r#"{{"device":"{device}","seq":{seq},"value":{value}}}"#).into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drives one MQTT device until it is done, fails, or the run's time is up. Each session gets a
/// fresh rumqttc client and event loop: sessions are clean, so nothing of an old one carries
/// over, and the device republishes what is unacked itself.
async fn drive_mqtt(mut dev: MqttDevice, fleet: Arc<Fleet>) -> (DeviceOutcome, Counters, Instant) {
    use rumqttc::{
        AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
    };
    let mut start = fleet.start.clone();
    let mut jitter = Rng::new(dev.s.rng.clone().next_u64());
    let (host, port) =
        match fleet.bridge.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
            Some(hp) => hp,
            None => {
                let outcome = DeviceOutcome {
                    id: dev.s.id.clone(),
                    first_seq: 1,
                    last_seq: 0,
                    complete: false,
                    problem: Some(format!("{:?} is not HOST:PORT", fleet.bridge)),
                };
                fleet.progress.bump(&fleet.progress.finished, 1);
                return (outcome, dev.counters, Instant::now());
            }
        };
    let mut options = MqttOptions::new(dev.s.id.clone(), host, port);
    options.set_credentials(dev.s.id.clone(), hex(&dev.s.key));
    options.set_keep_alive(MQTT_KEEP_ALIVE);
    options.set_clean_session(true);
    // Room for the window, each reading possibly twice (duplicates) plus retransmissions.
    let inflight = (dev.s.window * 4 + 8).min(u32::from(u16::MAX)) as u16;
    options.set_inflight(inflight);
    let mut counted_connected = false;
    let mut attempt = 0u32;
    let mut problem = None;
    let mut latencies = Vec::new();
    let mut to_publish = Vec::new();
    let mut acked_reported = 0u64;
    let mut generated_reported = 0u64;
    'session: while !dev.is_done() && problem.is_none() {
        let mut permit = match tokio::time::timeout_at(fleet.deadline, fleet.connect_slots.acquire()).await {
            Ok(p) => Some(p.expect("never closed")),
            Err(_) => {
                problem = Some("the run's time was up while connecting".to_string());
                break;
            }
        };
        let (client, mut events) = AsyncClient::new(options.clone(), usize::from(inflight) * 2);
        // Publishes handed to the client whose packet id is not known yet, in order; then packet
        // id to sequence.
        let mut unassigned: VecDeque<u32> = VecDeque::new();
        let mut by_pkid: HashMap<u16, u32> = HashMap::new();
        let mut up = false;
        loop {
            if up {
                if !dev.schedule.started {
                    if let Some(at) = *start.borrow() {
                        dev.schedule.start(&mut dev.s, at);
                    }
                }
                to_publish.clear();
                let reconnect = dev.poll_publish(Instant::now(), &mut to_publish);
                for &seq in &to_publish {
                    // The request channel holds several windows; if it is full anyway, the ack
                    // timeout publishes the reading again.
                    if client
                        .try_publish(MQTT_TOPIC, QoS::AtLeastOnce, false, mqtt_payload(&dev.s.id, seq))
                        .is_ok()
                    {
                        unassigned.push_back(seq);
                    }
                }
                if reconnect {
                    // Let the event loop write what was just published, then drop the session.
                    while !unassigned.is_empty() {
                        match tokio::time::timeout_at(fleet.deadline, events.poll()).await {
                            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => {
                                unassigned.pop_front();
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) | Err(_) => break,
                        }
                    }
                    continue 'session;
                }
            }
            latencies.append(&mut dev.latencies_us);
            fleet.record(&mut latencies);
            fleet.progress.bump(&fleet.progress.acked, dev.counters.acked - acked_reported);
            acked_reported = dev.counters.acked;
            fleet.progress.bump(&fleet.progress.generated, dev.counters.generated - generated_reported);
            generated_reported = dev.counters.generated;
            if dev.is_done() {
                let _ = client.disconnect().await;
                break 'session;
            }
            let wake = if up { dev.poll_timeout().map(tokio::time::Instant::from_std) } else { None };
            let wait_start = up && !dev.schedule.started;
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up = true;
                        attempt = 0;
                        drop(permit.take());
                        dev.connected();
                        if !counted_connected {
                            counted_connected = true;
                            fleet.progress.bump(&fleet.progress.connected, 1);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(seq) = unassigned.pop_front() {
                            by_pkid.insert(pkid, seq);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = by_pkid.remove(&ack.pkid) {
                            dev.acked(seq, Instant::now());
                        }
                    }
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(
                        code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
                    )) => {
                        problem = Some(format!("the bridge refused the MQTT login: {code:?}"));
                        break 'session;
                    }
                    Err(_) => {
                        dev.counters.connection_losses += 1;
                        drop(permit.take());
                        let pause = backoff(attempt, &mut jitter);
                        attempt += 1;
                        if tokio::time::timeout_at(fleet.deadline, tokio::time::sleep(pause)).await.is_err() {
                            break 'session;
                        }
                        continue 'session;
                    }
                },
                () = sleep_until_opt(wake) => dev.handle_timeout(Instant::now()),
                changed = start.changed(), if wait_start => {
                    if changed.is_err() {
                        break 'session;
                    }
                }
                () = tokio::time::sleep_until(fleet.deadline) => break 'session,
            }
        }
    }
    let finished = Instant::now();
    fleet.progress.bump(&fleet.progress.finished, 1);
    let complete = dev.is_done();
    let problem = problem.or_else(|| {
        (!complete).then(|| format!("{} readings unacked when the run's time was up", dev.unacked.len()))
    });
    let outcome = DeviceOutcome {
        id: dev.s.id.clone(),
        first_seq: 1,
        last_seq: dev.generated as u32,
        complete,
        problem,
    };
    (outcome, dev.counters, finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicConfig;
    use crate::registry::Lookup;
    use crate::sequences::Sequences;
    use crate::session::{Session, Step};

    const KEY: Key = [3; 32];

    fn settings(faults: FaultPlan, frames: u64, seed: u64) -> DeviceSettings {
        DeviceSettings {
            id: "sim-00000".into(),
            key: KEY,
            rng: Rng::for_device(seed, 0),
            faults,
            window: 8,
            ack_timeout: Duration::from_millis(500),
            interval: None,
            frames: Some(frames),
            duration: None,
            readings: 2,
            source: None,
        }
    }

    /// The bridge's frame handling (its sans-IO `Session` and `Sequences`) with an appender
    /// that makes submissions durable a few virtual milliseconds later, in order.
    struct ModelBridge {
        session: Session,
        sequences: Sequences,
        /// (durable at, seq, connection) in submission order.
        appending: VecDeque<(Instant, u32, u64)>,
        connection: u64,
        stored: Vec<u32>,
        deframer: Box<Deframer>,
        rng: Rng,
    }

    impl ModelBridge {
        fn new(seed: u64) -> ModelBridge {
            ModelBridge {
                session: Session::default(),
                sequences: Sequences::default(),
                appending: VecDeque::new(),
                connection: 0,
                stored: Vec::new(),
                deframer: Box::new(Deframer::new()),
                rng: Rng::new(seed),
            }
        }

        /// Handles bytes from the device; returns the replies' bytes.
        fn receive(&mut self, mut input: &[u8], now: Instant) -> Vec<u8> {
            let mut out = Vec::new();
            while !input.is_empty() {
                let (used, frame) = self.deframer.push(input);
                input = &input[used..];
                let Some(frame) = frame else { continue };
                let unverified = silt_frame::decode(frame.unwrap()).unwrap();
                let (step, _) = self.session.handle(
                    unverified,
                    Lookup::Active(KEY),
                    0,
                    &self.sequences,
                    &TopicConfig::default(),
                );
                match step {
                    Step::Reply { reply, key } => encode(&mut out, &reply.frame(), &key),
                    Step::Submit { seq, records, .. } => {
                        assert_eq!(records.len(), 2);
                        let delay = Duration::from_micros(500 + self.rng.next_u64() % 5_000);
                        let at = self.appending.back().map_or(now, |(t, _, _)| *t).max(now) + delay;
                        self.appending.push_back((at, seq, self.connection));
                    }
                    Step::Nothing => {}
                }
            }
            out
        }

        /// Completes what is durable by `now`; returns the acks' bytes.
        fn complete(&mut self, now: Instant) -> Vec<u8> {
            let mut out = Vec::new();
            while self.appending.front().is_some_and(|(t, _, _)| *t <= now) {
                let (_, seq, connection) = self.appending.pop_front().unwrap();
                self.stored.push(seq);
                let ack = self.sequences.complete("sim-00000", seq);
                // Like the bridge, the ack goes to the connection that submitted the frame.
                if connection == self.connection {
                    encode(&mut out, &Frame { seq: 0, ack, body: Body::Ack }, &KEY);
                }
            }
            out
        }

        /// The connection closes: a new session, and acks of what is appending are not sent.
        fn reconnect(&mut self) {
            self.connection += 1;
            self.session = Session::default();
            *self.deframer = Deframer::new();
        }
    }

    /// Runs one device against the model bridge on virtual time (1 ms steps) and returns the
    /// device, the stored sequences and the virtual time taken.
    fn simulate(faults: FaultPlan, frames: u64, seed: u64) -> (FrameDevice, Vec<u32>, Duration) {
        simulate_with(settings(faults, frames, seed), seed)
    }

    fn simulate_with(settings: DeviceSettings, seed: u64) -> (FrameDevice, Vec<u32>, Duration) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut bridge = ModelBridge::new(seed);
        let mut dev = FrameDevice::new(settings, now);
        let mut replies: Vec<u8> = Vec::new();
        let mut deframer = Box::new(Deframer::new());
        dev.connected(now);
        for _ in 0..200_000 {
            if dev.has_base() && !dev.schedule.started {
                dev.start(now);
            }
            let mut out = Vec::new();
            let reconnect = dev.poll_transmit(now, &mut out);
            replies.extend(bridge.receive(&out, now));
            replies.extend(bridge.complete(now));
            if reconnect {
                // Replies in transit are lost with the connection.
                replies.clear();
                bridge.reconnect();
                dev.disconnected();
                *deframer = Deframer::new();
                dev.connected(now);
                continue;
            }
            let mut input = &replies[..];
            while !input.is_empty() {
                let (used, frame) = deframer.push(input);
                input = &input[used..];
                if let Some(f) = frame {
                    dev.handle_frame(f.unwrap(), now);
                }
            }
            replies.clear();
            assert!(dev.failed().is_none(), "seed {seed}: {:?}", dev.failed());
            if dev.is_done() {
                return (dev, bridge.stored, now - t0);
            }
            now += Duration::from_millis(1);
            if dev.poll_timeout().is_some_and(|t| t <= now) {
                dev.handle_timeout(now);
            }
        }
        panic!("seed {seed}: not done after 200 s of virtual time: {dev:?}");
    }

    /// Without faults the device sends each frame once and the bridge stores each once, in order.
    #[test]
    fn without_faults_every_frame_is_stored_once_and_nothing_is_resent() {
        let (dev, stored, _) = simulate(FaultPlan::default(), 500, 1);
        assert_eq!(stored, (1..=500).collect::<Vec<_>>());
        assert_eq!(dev.counters.acked, 500);
        assert_eq!(dev.counters.sent, 500);
        assert_eq!(dev.counters.retransmits, 0);
        assert_eq!(dev.counters.nacks, [0; 8]);
    }

    /// With every fault on, go-back-N recovers every frame and the bridge stores each exactly once.
    #[test]
    fn with_every_fault_every_frame_is_still_stored_exactly_once_for_many_seeds() {
        let faults = FaultPlan { drop: 0.03, duplicate: 0.03, reorder: 0.03, bad_tag: 0.03, reconnect: 0.02 };
        for seed in 1..=40 {
            let (dev, stored, took) = simulate(faults, 300, seed);
            assert_eq!(stored, (1..=300).collect::<Vec<_>>(), "seed {seed}");
            let c = &dev.counters;
            assert_eq!(c.acked, 300, "seed {seed}");
            assert!(c.dropped + c.duplicated + c.reordered + c.bad_tagged + c.reconnects > 0, "seed {seed}");
            // A bad-tag nack can be lost with its connection (the reconnect fault).
            assert!(c.nacks[nack_index(NackReason::BadTag)] <= c.bad_tagged, "seed {seed}: {c:?}");
            assert_eq!(c.nacks.iter().sum::<u64>(), c.nacks[0] + c.nacks[4], "seed {seed}: {c:?}");
            // Recovery is by nacks mostly; the ack timeout (500 ms) is the backstop.
            assert!(took < Duration::from_secs(60), "seed {seed}: {took:?} {c:?}");
        }
    }

    /// The reorder fault is applied at any rate: the frame waits for the next one to go first.
    #[test]
    fn a_rate_limited_device_holds_a_reordered_frame_until_the_next_one_exists() {
        let mut s = settings(FaultPlan { reorder: 0.2, bad_tag: 0.05, ..FaultPlan::default() }, 200, 5);
        s.interval = Some(Duration::from_millis(10));
        let (dev, stored, _) = simulate_with(s, 5);
        assert_eq!(stored, (1..=200).collect::<Vec<_>>());
        assert!(dev.counters.reordered >= 25, "{:?}", dev.counters);
    }

    /// The same seed gives the same faults; another seed other faults; the rates are as asked.
    #[test]
    fn the_fault_plan_replays_from_its_seed() {
        let faults = FaultPlan { drop: 0.1, duplicate: 0.1, reorder: 0.1, bad_tag: 0.1, reconnect: 0.1 };
        let draws = |seed| {
            let mut rng = Rng::for_device(seed, 7);
            (0..1000).map(|_| faults.draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
        let drops = draws(42).iter().filter(|f| **f == Fault::Drop).count();
        assert!((50..150).contains(&drops), "{drops} drops of 1000 at p = 0.1");
        assert!(FaultPlan { drop: 0.6, duplicate: 0.6, ..FaultPlan::default() }.validate().is_err());
    }

    /// MQTT readings with the reorder fault go out after the next reading, the last one alone.
    #[test]
    fn mqtt_reorders_swap_each_reading_with_the_next_and_the_last_goes_alone() {
        let mut s = settings(FaultPlan { reorder: 1.0, ..FaultPlan::default() }, 5, 1);
        s.window = 16;
        let t0 = Instant::now();
        let mut dev = MqttDevice::new(s, t0);
        dev.connected();
        dev.schedule.start(&mut dev.s, t0);
        let mut out = Vec::new();
        dev.poll_publish(t0, &mut out);
        assert_eq!(out, [2, 1, 4, 3, 5]);
        assert_eq!(dev.counters.reordered, 2);
        for seq in [1, 2, 3, 4, 5, 5] {
            dev.acked(seq, t0 + Duration::from_millis(1));
        }
        assert!(dev.is_done());
        assert_eq!(dev.counters.duplicate_acks, 1);
    }

    /// A rate-limited device generates one frame per interval and counts those it generated late.
    #[test]
    fn a_rate_limited_device_sends_on_schedule_and_counts_late_frames() {
        let mut s = settings(FaultPlan::default(), 10, 1);
        s.interval = Some(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut dev = FrameDevice::new(s, t0);
        dev.connected(t0);
        let mut out = Vec::new();
        dev.poll_transmit(t0, &mut out);
        let mut ack = [0u8; silt_frame::FRAME_BYTES_MAX];
        let n = silt_frame::encode(&Frame { seq: 0, ack: 41, body: Body::Ack }, &KEY, &mut ack).unwrap();
        dev.handle_frame(&ack[..n], t0);
        assert!(dev.is_up());
        dev.start(t0);
        dev.poll_transmit(t0 + Duration::from_millis(99), &mut out);
        assert!(dev.counters.generated <= 1, "at most one frame in the first interval");
        // Polled late: the frames due meanwhile come at once, and those more than an interval
        // behind count as late.
        dev.poll_transmit(t0 + Duration::from_millis(450), &mut out);
        let generated = dev.counters.generated;
        assert!((4..=5).contains(&generated), "one frame per 100 ms: {generated}");
        assert!(dev.counters.late >= 2, "{:?}", dev.counters);
        assert_eq!(dev.seqs(), (42, 41 + generated as u32), "sequences continue after the bridge's ack");
    }
}
