//! What a run is asked to do: the devices, their transport, rate, window, faults and bounds.

use std::sync::Arc;
use std::time::Duration;

use silt_client::{Client, ClientError, ErrorCode};
use silt_frame::Key;

use crate::faults::{FaultPlan, Rng};
use crate::series::ReadingSource;
use crate::SimError;

/// Most devices one run simulates; a run holds one task and one connection per device.
pub const DEVICES_MAX: usize = 100_000;
/// Largest window of frames in flight per device: the device link's.
pub const WINDOW_MAX: u32 = silt_link::WINDOW_MAX;
/// Generated frames one device holds unacknowledged (in flight or waiting for room in the
/// window). A rate-limited device that falls this far behind stops generating until acks come,
/// and its frames count as late.
pub const PENDING_MAX: usize = 4096;
/// Highest rate per device, frames per second (the timer resolution is a millisecond).
pub const RATE_PER_S_MAX: f64 = 1000.0;
/// Connect attempts in progress at once, by default: a burst of thousands of SYNs at one
/// listener overflows its accept backlog and costs seconds of SYN retries.
pub const CONNECT_CONCURRENCY: usize = 256;
/// MQTT topic of simulated readings; the bridge stores it as `sensors.temperature`.
pub const MQTT_TOPIC: &str = "sensors/temperature";

/// How the simulated devices reach the bridge (`--transport tcp|mqtt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    pub(crate) fn of(config: &SimConfig, index: usize) -> DeviceSettings {
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

/// The key of the devices unit tests play.
#[cfg(test)]
pub(crate) const TEST_KEY: Key = [3; 32];

/// One device's settings for unit tests: `frames` frames as fast as a window of 8 allows.
#[cfg(test)]
pub(crate) fn test_settings(faults: FaultPlan, frames: u64, seed: u64) -> DeviceSettings {
    DeviceSettings {
        id: "sim-00000".into(),
        key: TEST_KEY,
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
