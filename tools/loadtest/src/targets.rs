//! The systems a scenario runs against (`--target`): Silt itself, NATS JetStream and an MQTT
//! broker, behind one small interface: publishers whose acknowledgements feed a
//! [`Recorder`], a reader of everything stored from the start, and a live subscriber.
//!
//! How each maps the scenario's topic and partitions:
//! - **silt**: the topic with its partitions; durable produce acks (the broker's `fsync`).
//! - **nats**: a JetStream stream with file storage named after the topic, one subject
//!   `<topic>.<partition>` per partition; async publish, each ack awaited in order. nats-server
//!   acks once the message is in its file store, and syncs to disk on a timer (2 min by
//!   default; 2.9 has no per-write sync).
//! - **mqtt**: QoS 1 publishes to `<topic>/<partition>`, acked by PUBACK; a subscriber takes
//!   `<topic>/#`. MQTT keeps no log, so the scenarios that read history (`consume`, `replay`)
//!   do not apply to it.

mod mqtt;
mod nats;
mod silt;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_util::{Stream, StreamExt};

use crate::stats::Recorder;

/// How often a subscriber waiting for records looks at its expected count again.
const RECHECK: Duration = Duration::from_millis(100);

/// A live subscriber's loop, the same for every target: takes deliveries (a fetched batch, a
/// message, a client event) and hands each to `record`, which records what it held and says how
/// many records that was, until the count in `expected` is reached. `expected` can still grow
/// while the loop runs (publishers add to it), so the loop looks at it again every [`RECHECK`]
/// while nothing arrives. Stops early when the deliveries end.
async fn receive_until<T>(
    expected: &AtomicU64,
    deliveries: impl Stream<Item = T>,
    mut record: impl FnMut(T) -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    let mut deliveries = std::pin::pin!(deliveries);
    let mut seen = 0;
    while seen < expected.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(RECHECK, deliveries.next()).await else { continue };
        let Some(delivery) = next else { break };
        seen += record(delivery)?;
    }
    Ok(())
}

/// A kind of system to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Silt,
    Nats,
    Mqtt,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Silt => "silt",
            Kind::Nats => "nats",
            Kind::Mqtt => "mqtt",
        }
    }

    /// Whether the system keeps a log that can be read again from the start.
    pub fn has_log(self) -> bool {
        self != Kind::Mqtt
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "silt" => Ok(Kind::Silt),
            "nats" | "jetstream" | "nats-jetstream" => Ok(Kind::Nats),
            "mqtt" | "mosquitto" => Ok(Kind::Mqtt),
            other => Err(format!("unknown target {other:?}: expected silt, nats or mqtt")),
        }
    }
}

/// Where a target is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    /// What reports call it (`silt`, or e.g. `silt fsync=never`).
    pub label: String,
    /// QUIC address (silt), `host:port` (nats, mqtt).
    pub addr: String,
    /// The broker's certificate (silt only).
    pub ca_cert: Option<PathBuf>,
    /// The token to authenticate with (silt only), or the file holding it.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// What every scenario sends: the topic and how records are sized and batched.
#[derive(Debug, Clone)]
pub struct Load {
    pub topic: String,
    pub partitions: u32,
    pub message_size: usize,
    /// Records per batch (silt), and with `window` the publishes in flight per publisher
    /// (nats, mqtt: `batch_size * window`, at most 65,535 for MQTT).
    pub batch_size: u32,
    pub window: usize,
    pub compression: silt_client::Compression,
    /// Longest wait for a Silt batch to fill.
    pub linger: std::time::Duration,
}

impl Load {
    /// Publishes a peer publisher keeps in flight.
    pub fn in_flight(&self) -> usize {
        (self.batch_size.max(1) as usize) * self.window.max(1)
    }
}

impl Target {
    /// Creates the topic (stream) if it does not exist.
    pub async fn prepare(&self, load: &Load) -> anyhow::Result<()> {
        match self.kind {
            Kind::Silt => silt::prepare(self, load).await,
            Kind::Nats => nats::prepare(self, load).await,
            Kind::Mqtt => Ok(()),
        }
    }

    /// Records stored in the topic now (`None` for MQTT, which keeps none).
    pub async fn stored(&self, load: &Load) -> anyhow::Result<Option<u64>> {
        match self.kind {
            Kind::Silt => silt::stored(self, load).await.map(Some),
            Kind::Nats => nats::stored(self, load).await.map(Some),
            Kind::Mqtt => Ok(None),
        }
    }

    /// A publisher on its own connection; `id` tells publishers of one run apart.
    pub async fn publisher(
        &self,
        load: &Load,
        id: u32,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Publisher> {
        Ok(match self.kind {
            Kind::Silt => Publisher::Silt(silt::Publisher::new(self, load, recorder).await?),
            Kind::Nats => Publisher::Nats(nats::Publisher::new(self, load, recorder).await?),
            Kind::Mqtt => Publisher::Mqtt(mqtt::Publisher::new(self, load, id, recorder).await?),
        })
    }

    /// Reads records of `partitions` (of `load.partitions`) from the start of the log until
    /// `count` were read (by this reader, or by all readers sharing `recorder`), recording
    /// events and bytes as they arrive (no latency samples: there is no send time
    /// to measure from).
    pub async fn read_from_start(
        &self,
        load: &Load,
        partitions: Vec<u32>,
        count: u64,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<()> {
        match self.kind {
            Kind::Silt => silt::read_from_start(self, load, partitions, count, recorder).await,
            Kind::Nats => nats::read_from_start(self, load, partitions, count, recorder).await,
            Kind::Mqtt => anyhow::bail!("MQTT keeps no log to read from the start"),
        }
    }

    /// Subscribes to new records of `topic` (every partition) and returns once the subscription
    /// is in place; the subscription then records each record's latency from the send time
    /// it carries ([`crate::payload::sent_at`]) until `expected` (which may grow while it runs)
    /// arrived.
    pub async fn subscribe(
        &self,
        load: &Load,
        topic: &str,
        expected: Arc<AtomicU64>,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Subscription> {
        let task = match self.kind {
            Kind::Silt => silt::subscribe(self, topic, expected, recorder).await?,
            Kind::Nats => nats::subscribe(self, topic, expected, recorder).await?,
            Kind::Mqtt => mqtt::subscribe(self, load, topic, expected, recorder).await?,
        };
        Ok(Subscription { task })
    }
}

/// A client of a Silt target, for what only Silt has (processors).
pub async fn silt_client(target: &Target) -> anyhow::Result<silt_client::Client> {
    silt::connect(target).await
}

/// A publisher on one connection of some target.
pub enum Publisher {
    Silt(silt::Publisher),
    Nats(nats::Publisher),
    Mqtt(mqtt::Publisher),
}

impl Publisher {
    /// Sends one record to `partition`; its latency counts from `from` to its ack.
    pub async fn send(&mut self, partition: u32, value: &[u8], from: Instant) -> anyhow::Result<()> {
        match self {
            Publisher::Silt(p) => p.send(partition, value, from).await,
            Publisher::Nats(p) => p.send(partition, value, from).await,
            Publisher::Mqtt(p) => p.send(partition, value, from).await,
        }
    }

    /// Waits for every ack and closes the connection.
    pub async fn finish(self) -> anyhow::Result<()> {
        match self {
            Publisher::Silt(p) => p.finish().await,
            Publisher::Nats(p) => p.finish().await,
            Publisher::Mqtt(p) => p.finish().await,
        }
    }
}

/// A live subscription (see [`Target::subscribe`]).
pub struct Subscription {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Subscription {
    /// Waits until the subscription has seen its count, or `deadline` passes.
    pub async fn wait(self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let abort = self.task.abort_handle();
        match tokio::time::timeout_at(deadline, self.task).await {
            Ok(joined) => joined.map_err(|e| anyhow::anyhow!("subscriber task: {e}"))?,
            Err(_) => {
                abort.abort();
                anyhow::bail!("the subscriber did not receive every record in time")
            }
        }
    }
}
