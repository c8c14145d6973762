//! The appender: one task that turns submitted readings into record batches and makes them
//! durable in the broker, in rounds.
//!
//! A round takes whatever is queued (up to `round_records_max` records), builds one batch per
//! topic partition (more when its records pass a batch's size limit) under the bridge's
//! producer id with the next producer sequences of that partition, journals the round (one
//! durable flush, see `journal`), sends the batches to the broker, and completes each
//! submission when all are confirmed. Partitions go at once and a partition's batches one
//! after another; rounds run one after another too, so a partition's sequences reach the
//! broker in order. While one round is out, the next one's submissions gather, which is what
//! makes rounds grow under load.
//!
//! Broker failures are retried until they succeed: a journaled round must reach the broker
//! before anything after it, and nothing is acked before. The queue in front is bounded, so
//! a slow or absent broker makes connections wait, and their devices with them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use silt_client::{Client, ClientError, Compression, ErrorCode};
use silt_wire::{batch, partition_for_key, BatchBuilder, Request, Response};
use tokio::sync::{mpsc, oneshot};

use crate::bridge_tier::{Processors, Set};
use crate::journal::{Journal, JournalError, Round, RoundBatch};
use crate::metrics::Metrics;
use crate::sequences::Sequences;

/// One record to append.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: Arc<str>,
    /// Partition key (the authenticated device id); also the record key and the value of its
    /// [`DEVICE_HEADER`].
    pub key: Arc<str>,
    /// Whether the record carries [`DEVICE_HEADER`]: every record but those a processor on
    /// the device made without it (`Reading::Output`), so that they are stored as the module
    /// wrote them, as in the broker.
    pub device_header: bool,
    pub timestamp_ms: i64,
    pub value: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OutRecord {
    /// The headers the record is stored with: the authenticated device id (whatever the
    /// payload says) when it carries [`DEVICE_HEADER`], then its own.
    pub fn stored_headers(&self) -> Vec<(&[u8], &[u8])> {
        let device = (DEVICE_HEADER.as_bytes(), self.key.as_bytes());
        std::iter::once(device)
            .filter(|_| self.device_header)
            .chain(self.headers.iter().map(|(k, v)| (&k[..], &v[..])))
            .collect()
    }
}

/// The record header every record from a device carries: the id the device authenticated as.
pub const DEVICE_HEADER: &str = "silt-device";

/// Adds the `traceparent` of `span` to every record (when OpenTelemetry records the span).
pub fn add_traceparent(records: &mut [OutRecord], span: &tracing::Span) {
    if let Some(tp) = silt_telemetry::traceparent_of(span) {
        for r in records {
            r.headers.push((silt_telemetry::TRACEPARENT.as_bytes().to_vec(), tp.clone().into_bytes()));
        }
    }
}

/// Readings of one frame (or one MQTT publish), appended all together or not at all.
#[derive(Debug)]
pub struct Submission {
    /// The device sequence this makes durable, for frames.
    pub device: Option<(Arc<str>, u32)>,
    pub records: Vec<OutRecord>,
    /// Told once the records are durable; dropped unsent only when the bridge stops.
    pub done: Option<oneshot::Sender<()>>,
    pub submitted: Instant,
}

/// Where connections hand in submissions.
#[derive(Clone)]
pub struct AppenderHandle {
    tx: mpsc::Sender<Submission>,
}

impl AppenderHandle {
    /// Queues a submission, waiting while the queue is full. Returns a receiver that resolves
    /// when it is durable (or errs when the bridge is stopping).
    pub async fn submit(
        &self,
        device: Option<(Arc<str>, u32)>,
        records: Vec<OutRecord>,
    ) -> Result<oneshot::Receiver<()>, Stopping> {
        let (done, rx) = oneshot::channel();
        let s = Submission { device, records, done: Some(done), submitted: Instant::now() };
        self.tx.send(s).await.map_err(|_| Stopping)?;
        Ok(rx)
    }
}

/// The broker refused a batch's sequence as skipping ahead (its message).
#[derive(Debug)]
struct OutOfOrder(String);

/// The appender is gone: the bridge is stopping.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the bridge is stopping")]
pub struct Stopping;

/// Settings of the appender.
#[derive(Debug, Clone)]
pub struct AppenderConfig {
    pub queue_max: usize,
    pub round_records_max: usize,
    pub create_topics: bool,
    pub partitions: u32,
}

pub struct Appender {
    client: Client,
    journal: Arc<Journal>,
    sequences: Arc<Sequences>,
    metrics: Arc<Metrics>,
    config: AppenderConfig,
    /// Partition count of each topic seen.
    topics: HashMap<Arc<str>, u32>,
    /// Last producer sequence per topic partition.
    last_sequence: HashMap<(String, u32), u64>,
    next_round: u64,
    /// Given by the broker ([`claim_producer_id`]).
    producer_id: u64,
    /// The bridge-tier processors, run on each round's readings before they are batched.
    processors: Processors,
}

/// The bridge's producer id: the one its journal holds, claimed again (a new epoch, which
/// fences an older bridge process still running on the same journal), or a new one from the
/// broker, journaled before use. A journaled id the broker does not know (its data was lost,
/// or the journal predates broker-assigned ids) is replaced; batches of a round journaled but
/// not confirmed under it may then be stored twice, which is logged.
pub async fn claim_producer_id(client: &Client, journal: &Journal) -> anyhow::Result<u64> {
    if let Some(id) = journal.producer_id() {
        match client.claim_producer(id).await {
            Ok(_) => return Ok(id),
            Err(ClientError::Broker { code: ErrorCode::UnknownProducer, .. }) => tracing::warn!(
                producer_id = id,
                "the broker does not know the journal's producer id; taking a new one (batches of an \
                 unconfirmed round may be stored twice)"
            ),
            Err(e) => return Err(anyhow::Error::new(e).context("claiming the journal's producer id")),
        }
    }
    let id = client.init_producer().await.context("asking the broker for a producer id")?;
    journal.set_producer_id(id)?;
    Ok(id)
}

/// Retry pause after a failed broker request: doubles from the first to the last value.
const RETRY_FIRST_MS: u64 = 50;
const RETRY_MAX_MS: u64 = 2_000;

impl Appender {
    /// Sets up the appender and its queue. Call [`Appender::run`] to start it.
    pub fn new(
        client: Client,
        journal: Arc<Journal>,
        sequences: Arc<Sequences>,
        metrics: Arc<Metrics>,
        config: AppenderConfig,
        producer_id: u64,
        processors: Option<tokio::sync::watch::Receiver<Set>>,
    ) -> Result<(Appender, AppenderHandle, mpsc::Receiver<Submission>), JournalError> {
        let (tx, rx) = mpsc::channel(config.queue_max);
        let last_sequence = journal.sequences()?;
        let processors = Processors::new(processors, journal.processor_states()?);
        let next_round = journal.pending_rounds()?.last().map_or(1, |r| r.id + 1);
        let appender = Appender {
            client,
            journal,
            sequences,
            metrics,
            config,
            topics: HashMap::new(),
            last_sequence,
            next_round,
            producer_id,
            processors,
        };
        Ok((appender, AppenderHandle { tx }, rx))
    }

    /// Sends the rounds a previous run journaled and did not complete, then serves the queue
    /// until every handle is dropped. Errs only when the journal fails: the bridge must stop
    /// then, since it can no longer promise anything.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Submission>) -> Result<(), JournalError> {
        let pending = self.journal.pending_rounds()?;
        if !pending.is_empty() {
            tracing::info!(rounds = pending.len(), "sending journaled rounds of the previous run again");
        }
        for mut round in pending {
            for b in &mut round.batches {
                if batch::peek_producer(&b.bytes) != self.producer_id {
                    // Journaled under an id the broker no longer knows (see
                    // `claim_producer_id`): sent under the new one.
                    let mut bytes = b.bytes.to_vec();
                    batch::set_producer(&mut bytes, self.producer_id, b.sequence);
                    b.bytes = bytes.into();
                }
            }
            self.send_round(&round).await?;
            self.finish_round(&round)?;
        }
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.flush()).await.expect("journal flush panicked")?;
        self.processors.ready().await;
        while let Some(first) = rx.recv().await {
            let mut records = first.records.len();
            let mut subs = vec![first];
            while records < self.config.round_records_max {
                match rx.try_recv() {
                    Ok(s) => {
                        records += s.records.len();
                        subs.push(s);
                    }
                    Err(_) => break,
                }
            }
            self.round(subs).await?;
        }
        Ok(())
    }

    async fn round(&mut self, mut subs: Vec<Submission>) -> Result<(), JournalError> {
        let started = Instant::now();
        // Readings of a topic with a bridge-tier processor are replaced by its outputs.
        let processed = self.processors.process(subs.iter().flat_map(|s| s.records.iter()));
        for (name, records_in, records_out) in &processed.counts {
            let m = &self.metrics.processor_records;
            m.with_label_values(&[name.as_str(), "in"]).inc_by(*records_in);
            m.with_label_values(&[name.as_str(), "out"]).inc_by(*records_out);
        }
        for name in &processed.failed {
            self.metrics.processor_failures.with_label_values(&[name.as_str()]).inc();
        }
        let unprocessed = subs
            .iter()
            .flat_map(|s| s.records.iter())
            .filter(|r| !processed.topics.iter().any(|t| **t == *r.topic));
        let mut groups: BTreeMap<(Arc<str>, u32), Vec<&OutRecord>> = BTreeMap::new();
        for r in unprocessed.chain(processed.outputs.iter()) {
            let partitions = self.partitions(&r.topic).await;
            let p = partition_for_key(r.key.as_bytes(), partitions);
            groups.entry((r.topic.clone(), p)).or_default().push(r);
        }
        let mut round = Round { id: self.next_round, ..Round::default() };
        for ((topic, partition), records) in groups {
            for bytes in build_batches(&records) {
                let seq = self.last_sequence.entry((topic.to_string(), partition)).or_insert(0);
                *seq += 1;
                round.batches.push(RoundBatch {
                    topic: topic.to_string(),
                    partition,
                    sequence: *seq,
                    bytes: bytes.finish_with(self.producer_id, *seq, Compression::Lz4).into(),
                });
            }
        }
        round.devices =
            subs.iter().filter_map(|s| s.device.as_ref().map(|(d, seq)| (d.to_string(), *seq))).collect();
        self.next_round += 1;

        let flush_started = Instant::now();
        let journal = self.journal.clone();
        let states = processed.states;
        let round = tokio::task::spawn_blocking(move || journal.begin(&round, &states).map(|()| round))
            .await
            .expect("journal write panicked")?;
        self.metrics.journal_flush_seconds.observe(flush_started.elapsed().as_secs_f64());

        self.send_round(&round).await?;
        self.finish_round(&round)?;
        let records: usize = subs.iter().map(|s| s.records.len()).sum();
        self.metrics.records_appended.inc_by(records as u64);
        for s in &mut subs {
            self.metrics.ack_seconds.observe(s.submitted.elapsed().as_secs_f64());
            if let Some(done) = s.done.take() {
                let _ = done.send(());
            }
        }
        self.metrics.round_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Records the round's device sequences in the journal and in the shared table.
    fn finish_round(&self, round: &Round) -> Result<(), JournalError> {
        self.journal.complete(round)?;
        for (device, seq) in &round.devices {
            self.sequences.complete(device, *seq);
        }
        Ok(())
    }

    /// Sends the round's batches and returns when the broker confirmed each durable, retrying
    /// failures. Partitions go at once; a partition's batches (more than one when its records
    /// pass a batch's size limit) go one after another, in sequence order: the broker refuses
    /// a sequence that skips ahead, and requests on separate streams may arrive in any order.
    ///
    /// A batch refused as out of order (the broker lost this producer's state: its data was
    /// restored from an older copy) is never dropped: the bridge takes a fresh producer id,
    /// under which the broker takes any first sequence, and sends that batch and the rest of
    /// its partition's chain again under it. Errs only when the journal cannot record the id.
    async fn send_round(&mut self, round: &Round) -> Result<(), JournalError> {
        let mut chains: Vec<Vec<RoundBatch>> = Vec::new();
        let mut index: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        for b in &round.batches {
            let i = *index.entry((&b.topic, b.partition)).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[i].push(b.clone());
        }
        loop {
            let this = &*self;
            let sends = chains.into_iter().map(|chain| async move {
                for (i, b) in chain.iter().enumerate() {
                    if let Err(refused) = this.send_batch(b).await {
                        tracing::warn!(topic = %b.topic, partition = b.partition, sequence = b.sequence,
                            message = %refused.0, "the broker refused a batch as out of order (it lost this \
                            producer's state); sending it again under a fresh producer id");
                        return chain[i..].to_vec();
                    }
                }
                Vec::new()
            });
            chains = futures::future::join_all(sends).await.into_iter().filter(|c| !c.is_empty()).collect();
            if chains.is_empty() {
                return Ok(());
            }
            self.renew_producer_id().await?;
            for b in chains.iter_mut().flatten() {
                let mut bytes = b.bytes.to_vec();
                batch::set_producer(&mut bytes, self.producer_id, b.sequence);
                b.bytes = bytes.into();
            }
        }
    }

    /// Asks the broker for a new producer id (retrying until it answers) and journals it:
    /// later rounds, and rounds sent again after a restart, go under it.
    async fn renew_producer_id(&mut self) -> Result<(), JournalError> {
        let mut pause = Duration::from_millis(RETRY_FIRST_MS);
        let id = loop {
            match self.client.init_producer().await {
                Ok(id) => break id,
                Err(e) => tracing::warn!(error = %e, "cannot get a fresh producer id; retrying"),
            }
            self.metrics.broker_retries.inc();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(RETRY_MAX_MS));
        };
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.set_producer_id(id))
            .await
            .expect("journal write panicked")?;
        tracing::warn!(old = self.producer_id, new = id, "took a fresh producer id");
        self.metrics.producer_renewals.inc();
        self.producer_id = id;
        Ok(())
    }

    /// Sends one batch until the broker stores it (or already had it); `Err` when the broker
    /// refuses it as out of order, which no retry under the same producer id can change.
    async fn send_batch(&self, b: &RoundBatch) -> Result<(), OutOfOrder> {
        let request = Request::Produce { topic: b.topic.clone(), partition: b.partition };
        let mut pause = Duration::from_millis(RETRY_FIRST_MS);
        loop {
            match self.client.request(&request, b.bytes.clone()).await {
                Ok((Response::Produced { .. }, _)) => return Ok(()),
                Err(ClientError::Broker { code: ErrorCode::OutOfOrderSequence, message }) => {
                    return Err(OutOfOrder(message));
                }
                Err(ClientError::UnknownTopic(_)) if self.config.create_topics => {
                    tracing::warn!(topic = %b.topic, "topic vanished; creating it again");
                    let _ = self
                        .client
                        .create_topic(&b.topic, self.config.partitions.max(b.partition + 1), None, None)
                        .await;
                }
                Ok((other, _)) => {
                    tracing::warn!(topic = %b.topic, response = ?other, "unexpected answer to a produce; retrying")
                }
                Err(e) => tracing::warn!(topic = %b.topic, error = %e, "append failed; retrying"),
            }
            self.metrics.broker_retries.inc();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(RETRY_MAX_MS));
        }
    }

    /// A topic's partition count, creating the topic when allowed; retries until it can tell.
    async fn partitions(&mut self, topic: &Arc<str>) -> u32 {
        if let Some(&n) = self.topics.get(topic) {
            return n;
        }
        let mut pause = Duration::from_millis(RETRY_FIRST_MS);
        loop {
            match self.client.describe_topic(topic).await {
                Ok(info) if !info.partitions.is_empty() => {
                    let n = info.partitions.len() as u32;
                    self.topics.insert(topic.clone(), n);
                    return n;
                }
                Ok(_) => tracing::warn!(%topic, "topic has no partitions"),
                Err(ClientError::UnknownTopic(_)) if self.config.create_topics => {
                    match self.client.create_topic(topic, self.config.partitions, None, None).await {
                        Ok(_) => tracing::info!(%topic, partitions = self.config.partitions, "created topic"),
                        Err(ClientError::Broker { code: ErrorCode::TopicExists, .. }) => {}
                        Err(e) => tracing::warn!(%topic, error = %e, "cannot create topic; retrying"),
                    }
                    continue;
                }
                Err(ClientError::UnknownTopic(_)) => {
                    tracing::warn!(%topic, "topic does not exist and topic creation is off; waiting for it")
                }
                Err(e) => tracing::warn!(%topic, error = %e, "cannot describe topic; retrying"),
            }
            self.metrics.broker_retries.inc();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(RETRY_MAX_MS));
        }
    }
}

/// Packs records into as few batches as the batch limits allow, in order.
fn build_batches(records: &[&OutRecord]) -> Vec<BatchBuilder> {
    let mut out = vec![BatchBuilder::with_capacity(records.len() * 96)];
    for r in records {
        let headers = r.stored_headers();
        let builder = out.last_mut().expect("never empty");
        if builder.push(r.timestamp_ms, r.key.as_bytes(), &r.value, &headers).is_err() {
            let mut fresh = BatchBuilder::with_capacity(4096);
            // A single record that does not fit an empty batch was refused at the edge
            // (payload limits are far below the batch limit), so this push succeeds.
            fresh
                .push(r.timestamp_ms, r.key.as_bytes(), &r.value, &headers)
                .expect("a record fits an empty batch");
            out.push(fresh);
        }
    }
    out
}
