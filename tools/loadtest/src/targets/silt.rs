//! The Silt driver: the client library's producer and consumer.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use silt_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, ErrorCode, FetchFrom, Producer,
    ProducerConfig, ProducerRecord,
};

use super::{Load, Target};
use crate::payload;
use crate::stats::Recorder;

pub(super) async fn connect(t: &Target) -> anyhow::Result<Client> {
    let ca = t.ca_cert.as_ref().context("a Silt target needs the broker's certificate")?;
    let credential = silt_client::token_credential(t.token.as_deref(), t.token_file.as_deref())?;
    let config = ClientConfig::new(t.addr.clone(), ca)?.with_credential(credential);
    Client::connect(config).await.with_context(|| format!("connecting to the Silt broker at {}", t.addr))
}

pub(super) async fn prepare(t: &Target, load: &Load) -> anyhow::Result<()> {
    let client = connect(t).await?;
    let result = match client.create_topic(&load.topic, load.partitions, None, None).await {
        Ok(_) | Err(ClientError::Broker { code: ErrorCode::TopicExists, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    };
    client.close().await;
    result
}

pub(super) async fn stored(t: &Target, load: &Load) -> anyhow::Result<u64> {
    let client = connect(t).await?;
    let info = client.describe_topic(&load.topic).await;
    client.close().await;
    Ok(info?.partitions.iter().map(|p| p.high_watermark - p.log_start).sum())
}

/// A [`Producer`] whose sends go to explicit partitions, so that each ack (a batch of one
/// partition, acked in order) can be matched with the send times of its records.
pub struct Publisher {
    client: Client,
    producer: Producer,
    /// Send times of unacked records, per partition, oldest first.
    pending: Arc<Mutex<Vec<VecDeque<Instant>>>>,
}

impl Publisher {
    pub(super) async fn new(t: &Target, load: &Load, recorder: Arc<Recorder>) -> anyhow::Result<Publisher> {
        let client = connect(t).await?;
        let pending = Arc::new(Mutex::new(vec![VecDeque::new(); load.partitions.max(1) as usize]));
        let size = load.message_size as u64;
        let on_ack = {
            let pending = pending.clone();
            move |a: &silt_client::Ack| {
                let now = Instant::now();
                let mut pending = pending.lock().expect("pending");
                let Some(queue) = pending.get_mut(a.partition as usize) else { return };
                let n = (a.records as usize).min(queue.len());
                recorder.complete(
                    now,
                    u64::from(a.records),
                    u64::from(a.records) * size,
                    queue.drain(..n).map(|t| now - t),
                );
            }
        };
        let config = ProducerConfig {
            batch_records_max: load.batch_size.max(1),
            batch_bytes_max: silt_wire::batch::BATCH_BYTES_MAX - 1024,
            window: load.window.max(1),
            compression: load.compression,
            linger: load.linger,
            on_ack: Some(Arc::new(on_ack)),
            ..Default::default()
        };
        let producer = Producer::new(&client, &load.topic, config).await?;
        Ok(Publisher { client, producer, pending })
    }

    pub(super) async fn send(&mut self, partition: u32, value: &[u8], from: Instant) -> anyhow::Result<()> {
        if let Some(q) = self.pending.lock().expect("pending").get_mut(partition as usize) {
            q.push_back(from);
        }
        let record = ProducerRecord { value, partition: Some(partition), ..Default::default() };
        self.producer.send(record).await?;
        Ok(())
    }

    pub(super) async fn finish(self) -> anyhow::Result<()> {
        self.producer.close().await?;
        self.client.close().await;
        Ok(())
    }
}

pub(super) async fn read_from_start(
    t: &Target,
    load: &Load,
    partitions: Vec<u32>,
    count: u64,
    recorder: Arc<Recorder>,
) -> anyhow::Result<()> {
    let client = connect(t).await?;
    let assignment = partitions.into_iter().map(|p| (p, FetchFrom::Earliest)).collect();
    let config = ConsumerConfig { follow: false, ..Default::default() };
    let mut consumer = Consumer::assign(&client, &load.topic, assignment, config).await?;
    let mut records = 0;
    while records < count {
        let Some(fetched) = consumer.next_batch().await else { break };
        let fetched = fetched?;
        let (mut n, mut bytes) = (0u64, 0u64);
        for r in fetched.records() {
            bytes += r?.value.len() as u64;
            n += 1;
        }
        records += n;
        recorder.complete(Instant::now(), n, bytes, []);
    }
    consumer.close().await;
    client.close().await;
    Ok(())
}

pub(super) async fn subscribe(
    t: &Target,
    topic: &str,
    expected: Arc<AtomicU64>,
    recorder: Arc<Recorder>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let client = connect(t).await?;
    let info = client.describe_topic(topic).await?;
    // From each partition's current end: the subscription is in place once this returns.
    let assignment =
        info.partitions.iter().map(|p| (p.partition, FetchFrom::Offset(p.high_watermark))).collect();
    let config = ConsumerConfig { follow: true, ..Default::default() };
    let mut consumer = Consumer::assign(&client, topic, assignment, config).await?;
    Ok(tokio::spawn(async move {
        let mut latencies = Vec::new();
        // The consumer is lent to the stream, and closed once the loop is done with it.
        let batches = futures_util::stream::unfold(&mut consumer, |c| async move {
            let batch = c.next_batch().await?;
            Some((batch, c))
        });
        let received = super::receive_until(&expected, batches, |fetched| {
            let fetched = fetched?;
            let now = Instant::now();
            let (mut n, mut bytes) = (0u64, 0u64);
            latencies.clear();
            for r in fetched.records() {
                let r = r?;
                bytes += r.value.len() as u64;
                n += 1;
                if let Some(sent) = payload::sent_at(r.value) {
                    latencies.push(now.saturating_duration_since(sent));
                }
            }
            recorder.complete(now, n, bytes, latencies.drain(..));
            Ok(n)
        })
        .await;
        consumer.close().await;
        client.close().await;
        received
    }))
}
