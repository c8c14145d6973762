//! `silt-devsim`: simulated devices, for the bridge's tests, the `silt-devsim` binary,
//! `silt-loadtest devices` and `silt demo`.
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
//! Code map: `faults` ([`FaultPlan`], [`Rng`]); `config` ([`SimConfig`], [`Transport`],
//! [`provision`], which registers `sim-00000`.. in the broker's registry or fetches the keys of
//! those that exist); `schedule` (when a device generates a frame); `frames`
//! ([`FrameDevice`], one device's side of the frame protocol without I/O: `silt-link`, the
//! core the firmwares run too, with the faults and the bookkeeping of a simulated device, and
//! unit-tested against the bridge's own `session` core on virtual time); `mqtt` (the same
//! bookkeeping for MQTT, whose protocol state lives in rumqttc's event loop, and its driver);
//! `fleet` ([`run`], which starts the fleet, waits until every device is connected, starts
//! them together and gathers a [`SimReport`], and the TCP driver); `report` (counters and the
//! report); [`series`] (realistic sensor readings for frames); [`cli`] (the flags that
//! `silt-devsim` and `silt-loadtest devices` share).
//!
//! Latency is measured per frame from its *first* send (or the moment it would have been sent,
//! for a dropped frame) to the durable ack that covers it, so retransmissions count against
//! it. It is not measured from the frame's scheduled time: a device whose window is full sends
//! late, and `late` counts those frames.
//!
//! Deliberately absent: MQTT bad tags (MQTT has no per-message tag; the fault applies to frames
//! only), payload corruption other than the tag, any device-side persistence (a device's
//! counter lives as long as the run), and anything of the bridge: this crate talks to one over
//! sockets like any device.

pub mod cli;
mod config;
mod faults;
mod fleet;
mod frames;
mod mqtt;
mod report;
mod schedule;
pub mod series;

pub use config::{
    device_id, provision, DeviceSettings, SimConfig, SimDevice, Transport, CONNECT_CONCURRENCY, DEVICES_MAX,
    MQTT_TOPIC, PENDING_MAX, RATE_PER_S_MAX, WINDOW_MAX,
};
pub use faults::{Fault, FaultPlan, Rng};
pub use fleet::{raise_open_files_limit, run};
pub use frames::FrameDevice;
pub use report::{Counters, DeviceOutcome, Progress, SimReport, LATENCY_US_MAX};

use silt_client::ClientError;

/// Why the simulator could not run, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator settings: {0}")]
    Config(String),
    #[error("connecting to the broker at {broker}: {source}")]
    Connect { broker: String, source: ClientError },
    #[error("provisioning device {id}: {source}")]
    Provision { id: String, source: ClientError },
    #[error(
        "{} of {} devices did not get every reading acked (seed {}): {}",
        .0.incomplete(), .0.devices, .0.seed, .0.problems_text()
    )]
    Incomplete(Box<SimReport>),
}
