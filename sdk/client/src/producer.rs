//! The producer: batches records per partition by size and linger, keeps a window of batches
//! in flight on one pipelined stream per partition, and after a lost connection resends every
//! unacknowledged batch with its original sequence number, so the broker drops the copies it
//! already stored and a retry never duplicates a record.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use silt_wire::time::unix_ms;
use silt_wire::{partition_for_key, BatchBuilder, Compression, ErrorCode, Request, Response};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::connection::{unexpected, ChannelSender};
use crate::{Client, ClientError};

/// Producer tuning. The defaults suit sensor data: 1000-record batches (docs/design.md,
/// decision 2, measured sled at 2.0M events/s with 1000-event batches and a flush per batch).
#[derive(Clone)]
pub struct ProducerConfig {
    /// Seal a batch at this many records.
    pub batch_records_max: u32,
    /// Seal a batch before it grows past this many bytes.
    pub batch_bytes_max: usize,
    /// Seal a non-empty batch this long after its first record.
    pub linger: Duration,
    /// Batches in flight per partition.
    pub window: usize,
    /// How long to keep retrying after the connection is lost before failing.
    pub retry_timeout: Duration,
    /// Compression of each batch's records section; batches that do not shrink by an eighth
    /// are sent as they are.
    pub compression: Compression,
    /// Called once per acknowledged batch (used by the load-test harness for latencies).
    pub on_ack: Option<AckHook>,
}

/// A callback run once per acknowledged batch.
pub type AckHook = Arc<dyn Fn(&Ack) + Send + Sync>;

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("batch_records_max", &self.batch_records_max)
            .field("batch_bytes_max", &self.batch_bytes_max)
            .field("linger", &self.linger)
            .field("window", &self.window)
            .field("retry_timeout", &self.retry_timeout)
            .field("compression", &self.compression)
            .finish()
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_records_max: 1000,
            batch_bytes_max: 512 * 1024,
            linger: Duration::from_millis(5),
            window: 8,
            retry_timeout: Duration::from_secs(30),
            compression: Compression::Lz4,
            on_ack: None,
        }
    }
}

/// An acknowledged batch.
#[derive(Debug, Clone)]
pub struct Ack {
    pub partition: u32,
    pub base_offset: u64,
    pub records: u32,
    /// When the batch's first record was handed to the producer.
    pub first_record_at: Instant,
    /// When the batch was sealed and queued for sending.
    pub sealed_at: Instant,
    /// True when the broker had stored this batch before (a retry).
    pub duplicate: bool,
}

/// One record to produce.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Event time in ms since the epoch; `None` means now.
    pub timestamp_ms: Option<i64>,
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Explicit partition; `None` hashes the key, or for keyless records fills one partition's
    /// batch before moving to the next.
    pub partition: Option<u32>,
}

struct Sealed {
    seq: u64,
    bytes: Bytes,
    records: u32,
    first_record_at: Instant,
    sealed_at: Instant,
}

struct Open {
    builder: BatchBuilder,
    first_record_at: Instant,
    next_seq: u64,
}

/// How far delivery has got, for the producer's callers and its sender tasks alike: batches
/// sealed and acknowledged, and the first fatal error, which ends the producer.
struct Delivery {
    acked: watch::Sender<u64>,
    sealed: AtomicU64,
    /// Set once `error` holds the producer's first fatal error; lets `send` check for failure
    /// without taking a lock per record (it showed as 4% of a load test's client CPU).
    failed: std::sync::atomic::AtomicBool,
    error: Mutex<Option<ClientError>>,
}

impl Delivery {
    fn fail(&self, e: ClientError) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
            self.failed.store(true, Ordering::Release);
        }
        drop(slot);
        // Wake flush waiters so they see the error.
        self.acked.send_modify(|_| {});
    }
    fn error(&self) -> Option<ClientError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.error.lock().expect("error lock").clone()
    }
}

/// Produces to one topic. See the crate docs for an example.
///
/// Batches are sent when full, when their linger expires (a background task sleeps until the
/// oldest open batch's deadline), and on [`Producer::flush`].
pub struct Producer {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    linger: JoinHandle<()>,
}

/// What the producer's callers and its linger task share.
struct Inner {
    topic: String,
    partitions: u32,
    config: ProducerConfig,
    /// Given by the broker, held by `client`'s connection.
    producer_id: u64,
    client: Client,
    delivery: Arc<Delivery>,
    open: Mutex<(Vec<Option<Open>>, u32)>,
    /// Sealed batches per partition in sequence order, waiting to be queued to the sender.
    /// Batches are pushed here while the `open` lock is held, so their order is their
    /// sequence order even when the caller and the linger task seal at the same time.
    pending: Vec<Mutex<std::collections::VecDeque<Sealed>>>,
    /// Held while moving a partition's pending batches to its sender, so only one task at a
    /// time does it and the sender receives them in sequence order (a batch queued ahead of
    /// an earlier sequence would be refused as out of order).
    draining: Vec<tokio::sync::Mutex<()>>,
    senders: Vec<mpsc::Sender<Sealed>>,
    /// Woken when a record opens a batch, so the linger task sleeps until its deadline. The
    /// task holds its own reference (it only holds `Inner` weakly).
    opened: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.client.release_producer(self.producer_id);
    }
}

impl Producer {
    /// A producer for `topic`, which must exist.
    pub async fn new(client: &Client, topic: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        if config.window == 0 || config.batch_records_max == 0 {
            return Err(ClientError::InvalidArgument("window and batch size must be at least 1".into()));
        }
        let info = client.describe_topic(topic).await?;
        let partitions = info.partitions.len() as u32;
        let producer_id = client.init_producer().await?;
        let (acked, _) = watch::channel(0);
        let delivery = Arc::new(Delivery {
            acked,
            sealed: AtomicU64::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for p in 0..partitions {
            let (tx, rx) = mpsc::channel(config.window);
            let task = PartitionSender {
                client: client.clone(),
                topic: topic.to_string(),
                partition: p,
                config: config.clone(),
                delivery: delivery.clone(),
            };
            tasks.push(tokio::spawn(task.run(rx)));
            senders.push(tx);
        }
        let open = (0..partitions).map(|_| None).collect();
        let opened = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            topic: topic.to_string(),
            partitions,
            config,
            producer_id,
            client: client.clone(),
            delivery,
            open: Mutex::new((open, 0)),
            pending: (0..partitions).map(|_| Mutex::default()).collect(),
            draining: (0..partitions).map(|_| tokio::sync::Mutex::new(())).collect(),
            senders,
            opened: opened.clone(),
        });
        let linger = tokio::spawn(linger_loop(Arc::downgrade(&inner), opened));
        Ok(Producer { inner, tasks, linger })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Adds a record to its partition's batch, sending the batch when full. Waits only when the
    /// partition's window and queue are full (backpressure).
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<(), ClientError> {
        self.inner.send(record).await
    }

    /// Sends batches whose linger expired now rather than at the next check of the linger
    /// task.
    pub async fn poll_linger(&self) -> Result<(), ClientError> {
        self.inner.poll_linger().await
    }

    /// Sends every open batch and waits until every batch sent so far is acknowledged.
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.inner.flush().await
    }

    /// Flushes, then stops the partition senders.
    pub async fn close(self) -> Result<(), ClientError> {
        let result = self.inner.flush().await;
        self.linger.abort();
        let _ = self.linger.await;
        // The linger task is gone, so this was the last strong reference: dropping it closes
        // the partition queues and the senders finish what is in flight and stop.
        drop(self.inner);
        for t in self.tasks {
            let _ = t.await;
        }
        result
    }
}

/// Seals batches whose linger expired, until the producer is gone (it holds only a weak
/// reference, so dropping the `Producer` ends it at the next tick).
async fn linger_loop(inner: std::sync::Weak<Inner>, opened: Arc<Notify>) {
    loop {
        // Registered before looking at the open batches, so a batch opened in between wakes
        // this loop rather than waiting for the next check.
        let notified = opened.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let deadline = {
            let Some(inner) = inner.upgrade() else { return };
            inner.next_deadline()
        };
        match deadline {
            Some(at) if at <= Instant::now() => {}
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), notified).await;
            }
            // Nothing open: wait for a batch to open, looking now and then whether the
            // producer is still there.
            None => {
                let _ = tokio::time::timeout(LINGER_IDLE_CHECK, notified).await;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.poll_linger().await.is_err() {
            return; // the error is kept in `Delivery` and reported by the next send or flush
        }
    }
}

/// How often an idle linger task checks whether its producer was dropped without `close`.
const LINGER_IDLE_CHECK: Duration = Duration::from_millis(100);

impl Inner {
    async fn send(&self, record: ProducerRecord<'_>) -> Result<(), ClientError> {
        if let Some(e) = self.delivery.error() {
            return Err(e);
        }
        if let Some(p) = self.append(record)? {
            self.dispatch(p).await?;
        }
        Ok(())
    }

    /// Adds the record to its partition's open batch; returns the partition when that sealed
    /// a batch (which then waits in `pending` for [`Inner::dispatch`]).
    fn append(&self, record: ProducerRecord<'_>) -> Result<Option<u32>, ClientError> {
        let ts = record.timestamp_ms.unwrap_or_else(|| unix_ms(SystemTime::now()));
        let mut guard = self.open.lock().expect("producer lock");
        let (open, sticky) = &mut *guard;
        let p = match (record.partition, record.key) {
            (Some(p), _) if p < self.partitions => p,
            (Some(p), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} has no partition {p} (it has {})",
                    self.topic, self.partitions
                )))
            }
            (None, Some(k)) => partition_for_key(k, self.partitions),
            (None, None) => *sticky,
        };
        let key = record.key.unwrap_or(&[]);
        let size = BatchBuilder::record_size(key, record.value, record.headers);
        let mut sealed = false;
        let slot = &mut open[p as usize];
        // Seal first if this record would push the batch past its byte budget.
        if slot.as_ref().is_some_and(|o| {
            !o.builder.is_empty() && o.builder.size_bytes() + size > self.config.batch_bytes_max
        }) {
            self.seal(slot, p, sticky);
            sealed = true;
        }
        let o = slot.get_or_insert_with(|| Open {
            builder: BatchBuilder::with_capacity(self.config.batch_bytes_max.min(1 << 20)),
            first_record_at: Instant::now(),
            next_seq: 0,
        });
        if o.builder.is_empty() {
            o.first_record_at = Instant::now();
            self.opened.notify_one();
        }
        o.builder
            .push(ts, key, record.value, record.headers)
            .map_err(|e| ClientError::InvalidArgument(format!("record does not fit a batch: {e}")))?;
        if o.builder.len() >= self.config.batch_records_max && !sealed {
            self.seal(slot, p, sticky);
            sealed = true;
        }
        Ok(sealed.then_some(p))
    }

    /// Seals the open batch of partition `p` into `pending`. Called with the `open` lock held.
    fn seal(&self, slot: &mut Option<Open>, p: u32, sticky: &mut u32) {
        let o = slot.as_mut().expect("sealing an open batch");
        assert!(!o.builder.is_empty());
        let builder = std::mem::take(&mut o.builder);
        let records = builder.len();
        let seq = o.next_seq;
        o.next_seq += 1;
        let bytes = Bytes::from(builder.finish_with(self.producer_id, seq, self.config.compression));
        if p == *sticky {
            *sticky = (*sticky + 1) % self.partitions;
        }
        self.delivery.sealed.fetch_add(1, Ordering::AcqRel);
        let sealed =
            Sealed { seq, bytes, records, first_record_at: o.first_record_at, sealed_at: Instant::now() };
        self.pending[p as usize].lock().expect("pending lock").push_back(sealed);
    }

    /// Moves partition `p`'s pending batches to its sender, in sequence order. Waits while the
    /// sender's queue is full (backpressure).
    async fn dispatch(&self, p: u32) -> Result<(), ClientError> {
        let _draining = self.draining[p as usize].lock().await;
        loop {
            let next = self.pending[p as usize].lock().expect("pending lock").pop_front();
            let Some(s) = next else { return Ok(()) };
            if self.senders[p as usize].send(s).await.is_err() {
                return Err(self
                    .delivery
                    .error()
                    .unwrap_or_else(|| ClientError::ConnectionLost("producer stopped".into())));
            }
        }
    }

    /// When the oldest open batch's linger expires.
    fn next_deadline(&self) -> Option<Instant> {
        let guard = self.open.lock().expect("producer lock");
        guard
            .0
            .iter()
            .flatten()
            .filter(|o| !o.builder.is_empty())
            .map(|o| o.first_record_at + self.config.linger)
            .min()
    }

    async fn poll_linger(&self) -> Result<(), ClientError> {
        self.seal_where(|o| o.first_record_at.elapsed() >= self.config.linger).await
    }

    async fn seal_where(&self, pred: impl Fn(&Open) -> bool) -> Result<(), ClientError> {
        let ready: Vec<u32> = {
            let mut guard = self.open.lock().expect("producer lock");
            let (open, sticky) = &mut *guard;
            let mut out = Vec::new();
            for p in 0..self.partitions {
                let slot = &mut open[p as usize];
                if slot.as_ref().is_some_and(|o| !o.builder.is_empty() && pred(o)) {
                    self.seal(slot, p, sticky);
                    out.push(p);
                }
            }
            out
        };
        for p in ready {
            self.dispatch(p).await?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), ClientError> {
        self.seal_where(|_| true).await?;
        let target = self.delivery.sealed.load(Ordering::Acquire);
        let mut rx = self.delivery.acked.subscribe();
        loop {
            if let Some(e) = self.delivery.error() {
                return Err(e);
            }
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::ConnectionLost("producer stopped".into()));
            }
        }
    }
}

struct PartitionSender {
    client: Client,
    topic: String,
    partition: u32,
    config: ProducerConfig,
    delivery: Arc<Delivery>,
}

enum Event {
    Batch(Option<Sealed>),
    Response(Result<Response, ClientError>),
}

impl PartitionSender {
    async fn run(self, mut queue: mpsc::Receiver<Sealed>) {
        let mut inflight: VecDeque<Sealed> = VecDeque::new();
        let mut link: Option<(ChannelSender, mpsc::Receiver<Result<Response, ClientError>>)> = None;
        let mut queue_open = true;
        // Since when the broker has refused batches for a full disk, and the pause before the
        // next resend.
        let mut disk_full: Option<(Instant, Duration)> = None;
        loop {
            if !queue_open && inflight.is_empty() {
                return;
            }
            if link.is_none() {
                match self.reconnect(&inflight).await {
                    Ok(l) => link = Some(l),
                    Err(e) => {
                        self.delivery.fail(e);
                        return;
                    }
                }
            }
            let (ch, responses) = link.as_mut().expect("linked");
            let can_send = queue_open && inflight.len() < self.config.window;
            let event = tokio::select! {
                b = queue.recv(), if can_send => Event::Batch(b),
                r = responses.recv() => Event::Response(r.unwrap_or_else(|| Err(ClientError::ConnectionLost("stream closed".into())))),
            };
            match event {
                Event::Batch(None) => queue_open = false,
                Event::Batch(Some(s)) => {
                    let req = Request::Produce { topic: self.topic.clone(), partition: self.partition };
                    let sent = ch.send(&req, s.bytes.clone()).await;
                    inflight.push_back(s);
                    if sent.is_err() {
                        link = None;
                    }
                }
                Event::Response(Ok(Response::Produced { base_offset, duplicate })) => {
                    let Some(s) = inflight.pop_front() else {
                        self.delivery
                            .fail(ClientError::Protocol("acknowledgement without a batch in flight".into()));
                        return;
                    };
                    if let Some(hook) = &self.config.on_ack {
                        hook(&Ack {
                            partition: self.partition,
                            base_offset,
                            records: s.records,
                            first_record_at: s.first_record_at,
                            sealed_at: s.sealed_at,
                            duplicate,
                        });
                    }
                    self.delivery.acked.send_modify(|n| *n += 1);
                    disk_full = None;
                }
                Event::Response(Ok(other)) => {
                    self.delivery.fail(unexpected(&other));
                    return;
                }
                Event::Response(Err(e @ ClientError::Broker { code: ErrorCode::DiskFull, .. })) => {
                    // Nothing of the batch was stored: wait, then resend it and every later one
                    // (the broker stored none of those out of order) on a fresh stream, until
                    // `retry_timeout` after the first refusal.
                    let (since, pause) =
                        *disk_full.get_or_insert((Instant::now(), Duration::from_millis(50)));
                    if since.elapsed() + pause > self.config.retry_timeout {
                        self.delivery.fail(e);
                        return;
                    }
                    tracing::debug!(error = %e, partition = self.partition, "broker's disk is full; resending later");
                    tokio::time::sleep(pause).await;
                    disk_full = Some((since, (pause * 2).min(Duration::from_secs(1))));
                    link = None;
                }
                Event::Response(Err(e)) if e.is_retriable() => {
                    tracing::debug!(error = %e, partition = self.partition, "produce stream lost; resending");
                    if matches!(e, ClientError::Broker { code: ErrorCode::Unavailable, .. }) {
                        // This broker could not reach its cluster's leader: resend elsewhere.
                        self.client.move_on().await;
                    }
                    link = None;
                }
                Event::Response(Err(e)) => {
                    let seq = inflight.front().map_or(0, |s| s.seq);
                    tracing::debug!(error = %e, seq, "produce refused");
                    self.delivery.fail(e);
                    return;
                }
            }
        }
    }

    /// Opens a new stream and resends every unacknowledged batch in order, retrying with
    /// backoff until `retry_timeout`.
    async fn reconnect(
        &self,
        inflight: &VecDeque<Sealed>,
    ) -> Result<(ChannelSender, mpsc::Receiver<Result<Response, ClientError>>), ClientError> {
        let deadline = Instant::now() + self.config.retry_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.open_and_resend(inflight).await {
                Ok(link) => return Ok(link),
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open_and_resend(
        &self,
        inflight: &VecDeque<Sealed>,
    ) -> Result<(ChannelSender, mpsc::Receiver<Result<Response, ClientError>>), ClientError> {
        let (mut ch, mut reader) = self.client.channel().await?.split();
        for s in inflight {
            let req = Request::Produce { topic: self.topic.clone(), partition: self.partition };
            ch.send(&req, s.bytes.clone()).await?;
        }
        let (tx, rx) = mpsc::channel(self.config.window + 1);
        tokio::spawn(async move {
            loop {
                let r = reader.receive().await;
                let r = r.map(|(resp, _)| resp);
                let end = r.is_err();
                if tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        Ok((ch, rx))
    }
}
