//! The MQTT driver (rumqttc, MQTT 3.1.1): QoS 1 publishes to `<topic>/<partition>`, each
//! latency from the send to its PUBACK; a QoS 1 subscriber of `<topic>/#`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use super::{Load, Target};
use crate::payload;
use crate::stats::Recorder;

/// Largest message the clients accept (the default, 10 KiB, is below the 1 MiB events some
/// runs use).
const MAX_PACKET: usize = 16 << 20;

fn options(t: &Target, client_id: String, inflight: u16) -> anyhow::Result<MqttOptions> {
    let (host, port) = t
        .addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("MQTT address {:?} is not HOST:PORT", t.addr))?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_inflight(inflight.max(1));
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    Ok(o)
}

fn client_id(kind: &str, id: u32) -> String {
    format!("silt-loadtest-{kind}-{}-{id}", std::process::id())
}

/// Polls `events` until the broker's CONNACK, so that a refused or absent broker is an error
/// here rather than a hang later.
async fn connected(events: &mut EventLoop, addr: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("connecting to the MQTT broker at {addr}: {e}"),
            Err(_) => anyhow::bail!("no CONNACK from the MQTT broker at {addr} within 10 s"),
        }
    }
}

pub struct Publisher {
    client: AsyncClient,
    topics: Vec<String>,
    /// Send times of publishes handed to the client, not yet given a packet id.
    unassigned: Arc<Mutex<VecDeque<Instant>>>,
    sent: u64,
    /// Acked publishes so far (the event loop task's count), or its error.
    acked: watch::Receiver<Result<u64, String>>,
    events: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub(super) async fn new(
        t: &Target,
        load: &Load,
        id: u32,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Publisher> {
        let inflight = load.in_flight().min(usize::from(u16::MAX)) as u16;
        let (client, mut events) = AsyncClient::new(options(t, client_id("pub", id), inflight)?, 1024);
        connected(&mut events, &t.addr).await?;
        let unassigned = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, acked) = watch::channel(Ok(0));
        let size = load.message_size as u64;
        let queue = unassigned.clone();
        let events = tokio::spawn(async move {
            let mut by_pkid: HashMap<u16, Instant> = HashMap::new();
            let mut count = 0u64;
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(from) = queue.lock().expect("queue").pop_front() {
                            by_pkid.insert(pkid, from);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(from) = by_pkid.remove(&ack.pkid) {
                            let now = Instant::now();
                            recorder.complete(now, 1, size, [now - from]);
                            count += 1;
                            let _ = tx.send(Ok(count));
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(format!("MQTT connection: {e}")));
                        break;
                    }
                }
            }
        });
        let topics = (0..load.partitions.max(1)).map(|p| format!("{}/{p}", load.topic)).collect();
        Ok(Publisher { client, topics, unassigned, sent: 0, acked, events })
    }

    pub(super) async fn send(&mut self, partition: u32, value: &[u8], from: Instant) -> anyhow::Result<()> {
        if let Err(e) = &*self.acked.borrow() {
            anyhow::bail!("{e}");
        }
        self.unassigned.lock().expect("queue").push_back(from);
        let topic = &self.topics[partition as usize % self.topics.len()];
        self.client.publish(topic.as_str(), QoS::AtLeastOnce, false, value.to_vec()).await?;
        self.sent += 1;
        Ok(())
    }

    pub(super) async fn finish(mut self) -> anyhow::Result<()> {
        let sent = self.sent;
        let outcome = {
            let waited = tokio::time::timeout(
                Duration::from_secs(60),
                self.acked.wait_for(|a| a.as_ref().map_or(true, |n| *n >= sent)),
            )
            .await;
            match waited {
                Ok(Ok(state)) => state.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e}")),
                Ok(Err(_)) => Err(anyhow::anyhow!("the MQTT event loop stopped before every PUBACK")),
                Err(_) => Err(anyhow::anyhow!("no PUBACK for some publishes within 60 s")),
            }
        };
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.events).await;
        self.events.abort();
        outcome
    }
}

pub(super) async fn subscribe(
    t: &Target,
    load: &Load,
    topic: &str,
    expected: Arc<AtomicU64>,
    recorder: Arc<Recorder>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let inflight = load.in_flight().min(usize::from(u16::MAX)) as u16;
    let (client, mut events) = AsyncClient::new(options(t, client_id("sub", 0), inflight)?, 64);
    connected(&mut events, &t.addr).await?;
    client.subscribe(format!("{topic}/#"), QoS::AtLeastOnce).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("subscribing at the MQTT broker: {e}"),
            Err(_) => anyhow::bail!("no SUBACK from the MQTT broker within 10 s"),
        }
    }
    Ok(tokio::spawn(async move {
        let polled = futures_util::stream::unfold(&mut events, |events| async move {
            let event = events.poll().await;
            Some((event, events))
        });
        let received = super::receive_until(&expected, polled, |event| {
            let event = event.map_err(|e| anyhow::anyhow!("MQTT subscription: {e}"))?;
            let Event::Incoming(Packet::Publish(p)) = event else { return Ok(0) };
            let now = Instant::now();
            let latency = payload::sent_at(&p.payload).map(|sent| now.saturating_duration_since(sent));
            recorder.complete(now, 1, p.payload.len() as u64, latency);
            Ok(1)
        })
        .await;
        let _ = client.disconnect().await;
        received
    }))
}
