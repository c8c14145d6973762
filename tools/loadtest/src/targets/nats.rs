//! The NATS JetStream driver (async-nats): a file-storage stream per topic, one subject per
//! partition, async publishes with their acks awaited in order, ordered pull consumers to read.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Load, Target};
use crate::payload;
use crate::stats::Recorder;

/// Stream names may not hold `.`, `*`, `>` or spaces; subjects use `.` as separator.
pub(super) fn stream_name(topic: &str) -> String {
    topic.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn subject(topic: &str, partition: u32) -> String {
    format!("{}.{partition}", stream_name(topic))
}

async fn connect(t: &Target, in_flight: usize) -> anyhow::Result<Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(t.addr.as_str())
        .await
        .with_context(|| format!("connecting to nats-server at {}", t.addr))?;
    Ok(jetstream::ContextBuilder::default()
        .max_ack_inflight(in_flight.max(1))
        .backpressure_on_inflight(true)
        .build(client))
}

async fn stream(js: &Context, topic: &str) -> anyhow::Result<stream::Stream> {
    let name = stream_name(topic);
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.*")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the JetStream stream {name}: {e}"))
}

pub(super) async fn prepare(t: &Target, load: &Load) -> anyhow::Result<()> {
    let js = connect(t, 1).await?;
    stream(&js, &load.topic).await?;
    Ok(())
}

pub(super) async fn stored(t: &Target, load: &Load) -> anyhow::Result<u64> {
    let js = connect(t, 1).await?;
    let mut s = stream(&js, &load.topic).await?;
    let info = s.info().await.map_err(|e| anyhow::anyhow!("stream info: {e}"))?;
    Ok(info.state.messages)
}

pub struct Publisher {
    js: Context,
    /// One per partition; a `Subject` clones without copying its bytes.
    subjects: Vec<async_nats::Subject>,
    acks: mpsc::Sender<(jetstream::context::PublishAckFuture, Instant)>,
    collector: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Publisher {
    pub(super) async fn new(t: &Target, load: &Load, recorder: Arc<Recorder>) -> anyhow::Result<Publisher> {
        let js = connect(t, load.in_flight()).await?;
        stream(&js, &load.topic).await?;
        let (acks, mut pending) =
            mpsc::channel::<(jetstream::context::PublishAckFuture, Instant)>(load.in_flight());
        let size = load.message_size as u64;
        let collector = tokio::spawn(async move {
            while let Some((ack, from)) = pending.recv().await {
                ack.await.map_err(|e| anyhow::anyhow!("JetStream publish ack: {e}"))?;
                let now = Instant::now();
                recorder.complete(now, 1, size, [now - from]);
            }
            anyhow::Ok(())
        });
        let subjects = (0..load.partitions.max(1)).map(|p| subject(&load.topic, p).into()).collect();
        Ok(Publisher { js, subjects, acks, collector })
    }

    pub(super) async fn send(&mut self, partition: u32, value: &[u8], from: Instant) -> anyhow::Result<()> {
        let subject = self.subjects[partition as usize % self.subjects.len()].clone();
        let ack = self
            .js
            .publish(subject, Bytes::copy_from_slice(value))
            .await
            .map_err(|e| anyhow::anyhow!("JetStream publish: {e}"))?;
        if self.acks.send((ack, from)).await.is_err() {
            // The collector stopped on an error: report it.
            return Err(self.collector_error().await);
        }
        Ok(())
    }

    async fn collector_error(&mut self) -> anyhow::Error {
        match (&mut self.collector).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("the ack collector stopped"),
            Err(e) => anyhow::anyhow!("the ack collector failed: {e}"),
        }
    }

    pub(super) async fn finish(self) -> anyhow::Result<()> {
        drop(self.acks);
        self.collector.await.context("ack collector")??;
        Ok(())
    }
}

/// An ordered consumer of `subject` (or the whole stream) delivering with `policy`.
async fn ordered(
    s: &stream::Stream,
    filter: Option<String>,
    policy: consumer::DeliverPolicy,
) -> anyhow::Result<consumer::pull::Ordered> {
    let consumer = s
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.unwrap_or_default(),
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating a JetStream consumer: {e}"))?;
    consumer.messages().await.map_err(|e| anyhow::anyhow!("JetStream consumer: {e}"))
}

pub(super) async fn read_from_start(
    t: &Target,
    load: &Load,
    partitions: Vec<u32>,
    count: u64,
    recorder: Arc<Recorder>,
) -> anyhow::Result<()> {
    let js = connect(t, 1).await?;
    let s = stream(&js, &load.topic).await?;
    let mut streams = Vec::new();
    if partitions.len() as u32 == load.partitions {
        streams.push(ordered(&s, None, consumer::DeliverPolicy::All).await?);
    } else {
        for p in partitions {
            streams.push(ordered(&s, Some(subject(&load.topic, p)), consumer::DeliverPolicy::All).await?);
        }
    }
    let mut messages = futures_util::stream::select_all(streams);
    // Readers of one run share the count: each stops once all of them have read it together.
    let (mut n, mut bytes) = (0u64, 0u64);
    while recorder.events() + n < count {
        let Ok(next) = tokio::time::timeout(super::RECHECK, messages.next()).await else {
            recorder.complete(Instant::now(), n, bytes, []);
            (n, bytes) = (0, 0);
            continue;
        };
        let Some(m) = next else { break };
        let m = m.map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
        bytes += m.payload.len() as u64;
        n += 1;
        // One recorder call per 256 messages keeps the lock out of the hot loop.
        if n == 256 {
            recorder.complete(Instant::now(), n, bytes, []);
            (n, bytes) = (0, 0);
        }
    }
    recorder.complete(Instant::now(), n, bytes, []);
    Ok(())
}

pub(super) async fn subscribe(
    t: &Target,
    topic: &str,
    expected: Arc<AtomicU64>,
    recorder: Arc<Recorder>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let js = connect(t, 1).await?;
    let s = stream(&js, topic).await?;
    let messages = ordered(&s, None, consumer::DeliverPolicy::New).await?;
    Ok(tokio::spawn(async move {
        super::receive_until(&expected, messages, |m| {
            let m = m.map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
            let now = Instant::now();
            let latency = payload::sent_at(&m.payload).map(|sent| now.saturating_duration_since(sent));
            recorder.complete(now, 1, m.payload.len() as u64, latency);
            Ok(1)
        })
        .await
    }))
}
