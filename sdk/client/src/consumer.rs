//! The consumer: reads partitions of one topic by explicit assignment or as a member of a
//! consumer group, one fetch task per partition, and yields whole fetched batches or single
//! records in offset order per partition.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use silt_wire::batch::{decompress_all, split_batches};
use silt_wire::{FetchFrom, PartitionOffset, Record, Request, Response, TopicPartition};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connection::{unexpected, Channel};
use crate::{Client, ClientError};

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where partitions without a committed group offset start.
    pub from: FetchFrom,
    /// Largest fetch response.
    pub max_bytes: u32,
    /// Long-poll wait when caught up.
    pub max_wait: Duration,
    /// Keep waiting for new records at the end of the log; when false, each partition stops
    /// at the high watermark it had when the consumer reached it first.
    pub follow: bool,
    /// Consumer group to join; `None` for explicit assignment of every partition.
    pub group: Option<String>,
    /// Group session timeout; heartbeats go out at a third of it.
    pub session_timeout: Duration,
    /// How long to keep retrying after the connection is lost.
    pub retry_timeout: Duration,
    /// Fetched responses buffered ahead of the reader.
    pub buffer: usize,
    /// Consume-time processing: the broker runs this deployed processor over each fetch and
    /// returns its output records instead of the stored ones (nothing is stored). Output
    /// records carry offsets inside the range of the input batch they came from.
    pub processor: Option<silt_wire::ProcessorRef>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            from: FetchFrom::Earliest,
            max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_millis(500),
            follow: true,
            group: None,
            session_timeout: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(30),
            buffer: 8,
            processor: None,
        }
    }
}

/// One fetch response: whole stored batches of one partition. Records below `from_offset`
/// belong to the first batch but precede what was asked for and are skipped by [`Fetched::records`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub partition: u32,
    pub from_offset: u64,
    pub next_offset: u64,
    pub high_watermark: u64,
    /// The batches as stored (`docs/record-batch.md`), with compressed record sections
    /// already decompressed.
    pub bytes: Bytes,
}

impl Fetched {
    /// The records at or after `from_offset`, checking each batch's checksums.
    pub fn records(&self) -> impl Iterator<Item = Result<Record<'_>, ClientError>> + '_ {
        let from = self.from_offset;
        split_batches(&self.bytes).flat_map(move |b| {
            let items: Box<dyn Iterator<Item = Result<Record<'_>, ClientError>>> = match b {
                Ok(view) => Box::new(view.records().filter(move |r| r.offset >= from).map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(ClientError::Protocol(format!(
                    "bad batch from broker: {e}"
                ))))),
            };
            items
        })
    }

    /// Records in this response at or after `from_offset`, counted from batch headers only.
    pub fn record_count(&self) -> u64 {
        self.next_offset.saturating_sub(self.from_offset)
    }
}

/// A record owned by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<(Bytes, Bytes)>,
}

enum Msg {
    Fetched { epoch: u64, fetched: Fetched },
    Done { epoch: u64, partition: u32 },
    Failed { epoch: u64, error: ClientError },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    member_id: String,
    generation: u64,
    assignment: Vec<u32>,
}

struct GroupState {
    name: String,
    membership: watch::Receiver<Result<Membership, ClientError>>,
    heartbeat: JoinHandle<()>,
}

/// Reads one topic. See the crate docs for an example.
pub struct Consumer {
    client: Client,
    topic: String,
    config: ConsumerConfig,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    /// Running fetchers: partition -> (epoch, task).
    fetchers: HashMap<u32, (u64, JoinHandle<()>)>,
    positions: HashMap<u32, u64>,
    done: usize,
    next_epoch: u64,
    group: Option<GroupState>,
    generation: u64,
    pending: std::collections::VecDeque<ConsumedRecord>,
}

impl Consumer {
    /// Consumes every partition of `topic` (or, with `config.group`, this member's share).
    pub async fn new(client: &Client, topic: &str, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let info = client.describe_topic(topic).await?;
        let all: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
        Self::build(client, topic, config, Some(all)).await
    }

    /// Consumes exactly these partitions, each from its own start.
    pub async fn assign(
        client: &Client,
        topic: &str,
        starts: Vec<(u32, FetchFrom)>,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let mut c = Self::build(client, topic, ConsumerConfig { group: None, ..config }, None).await?;
        for (p, from) in starts {
            c.start_fetcher(p, from);
        }
        Ok(c)
    }

    async fn build(
        client: &Client,
        topic: &str,
        config: ConsumerConfig,
        all: Option<Vec<u32>>,
    ) -> Result<Consumer, ClientError> {
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        let mut c = Consumer {
            client: client.clone(),
            topic: topic.to_string(),
            config,
            tx,
            rx,
            fetchers: HashMap::new(),
            positions: HashMap::new(),
            done: 0,
            next_epoch: 0,
            group: None,
            generation: 0,
            pending: Default::default(),
        };
        match (c.config.group.clone(), all) {
            (Some(group), _) => {
                let first = join(client, &group, None, topic, c.config.session_timeout).await?;
                let (wtx, wrx) = watch::channel(Ok(first));
                let heartbeat = tokio::spawn(heartbeat_loop(
                    client.clone(),
                    group.clone(),
                    topic.to_string(),
                    c.config.session_timeout,
                    wtx,
                ));
                c.group = Some(GroupState { name: group, membership: wrx, heartbeat });
                c.apply_membership().await?;
            }
            (None, Some(all)) => {
                for p in all {
                    c.start_fetcher(p, c.config.from);
                }
            }
            (None, None) => {}
        }
        Ok(c)
    }

    /// Partitions currently read.
    pub fn assignment(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.fetchers.keys().copied().collect();
        v.sort();
        v
    }

    /// Next offset to deliver per partition.
    pub fn positions(&self) -> HashMap<u32, u64> {
        self.positions.clone()
    }

    fn start_fetcher(&mut self, partition: u32, from: FetchFrom) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let task = Fetcher {
            client: self.client.clone(),
            topic: self.topic.clone(),
            partition,
            config: self.config.clone(),
            tx: self.tx.clone(),
            epoch,
        };
        if let Some((_, old)) = self.fetchers.insert(partition, (epoch, tokio::spawn(task.run(from)))) {
            old.abort();
        }
    }

    /// Switches fetchers to the group's current assignment, committing the positions of
    /// partitions this member gives up and starting new ones from their committed offsets.
    async fn apply_membership(&mut self) -> Result<(), ClientError> {
        let Some(g) = &mut self.group else { return Ok(()) };
        let m = match &*g.membership.borrow_and_update() {
            Ok(m) => m.clone(),
            Err(e) => return Err(e.clone()),
        };
        if m.generation == self.generation {
            return Ok(());
        }
        // `self.generation` moves to the new one only at the end: when the caller drops this
        // future at one of the awaits below (a timeout around `next_batch`), the next call
        // finishes the switch instead of taking it as done with partitions never started.
        let revoked: Vec<u32> = self.fetchers.keys().copied().filter(|p| !m.assignment.contains(p)).collect();
        if !revoked.is_empty() {
            let offsets: Vec<(u32, u64)> =
                revoked.iter().filter_map(|p| self.positions.get(p).map(|o| (*p, *o))).collect();
            // Best effort: if this member was expired the broker refuses, and the next owner
            // re-reads from the last successful commit (at-least-once for consumers).
            let _ = self.commit_offsets(&offsets, Some(m.member_id.clone())).await;
            for p in &revoked {
                if let Some((_, t)) = self.fetchers.remove(p) {
                    t.abort();
                }
                self.positions.remove(p);
            }
        }
        let new: Vec<u32> = m.assignment.iter().copied().filter(|p| !self.fetchers.contains_key(p)).collect();
        if !new.is_empty() {
            let group = self.group.as_ref().expect("group").name.clone();
            let committed = self.committed(&group).await?;
            for p in new {
                let from = committed.get(&p).map_or(self.config.from, |o| FetchFrom::Offset(*o));
                self.start_fetcher(p, from);
            }
        }
        self.generation = m.generation;
        self.done = 0;
        Ok(())
    }

    async fn committed(&self, group: &str) -> Result<HashMap<u32, u64>, ClientError> {
        let req = Request::FetchOffsets { group: group.to_string(), topic: self.topic.clone() };
        match self.client.request(&req, Bytes::new()).await?.0 {
            Response::Offsets(list) => Ok(list.into_iter().map(|o| (o.partition, o.offset)).collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// The next fetched response, or `None` when every partition reached its end (only
    /// without `follow`).
    pub async fn next_batch(&mut self) -> Option<Result<Fetched, ClientError>> {
        loop {
            if self.config.group.is_some() {
                if let Err(e) = self.apply_membership().await {
                    return Some(Err(e));
                }
            }
            if !self.fetchers.is_empty() && self.done >= self.fetchers.len() {
                return None;
            }
            let msg = match &mut self.group {
                Some(g) => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = g.membership.changed() => continue,
                },
                None => self.rx.recv().await,
            };
            let msg = msg?; // the consumer holds a sender, so this stays open
            let current = |p: u32, epoch: u64, f: &HashMap<u32, (u64, JoinHandle<()>)>| {
                f.get(&p).is_some_and(|(e, _)| *e == epoch)
            };
            match msg {
                Msg::Fetched { epoch, fetched } if current(fetched.partition, epoch, &self.fetchers) => {
                    self.positions.insert(fetched.partition, fetched.next_offset);
                    return Some(Ok(fetched));
                }
                Msg::Done { epoch, partition } if current(partition, epoch, &self.fetchers) => self.done += 1,
                Msg::Failed { epoch, error } if self.fetchers.values().any(|(e, _)| *e == epoch) => {
                    return Some(Err(error))
                }
                _ => {} // from a fetcher replaced by a rebalance
            }
        }
    }

    /// The next record, in offset order within its partition.
    pub async fn next_record(&mut self) -> Option<Result<ConsumedRecord, ClientError>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            let fetched = match self.next_batch().await? {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            for r in fetched.records() {
                match r {
                    Ok(r) => self.pending.push_back(owned(&fetched, &r)),
                    Err(e) => return Some(Err(e)),
                }
            }
        }
    }

    /// The records as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumedRecord, ClientError>> {
        futures::stream::unfold(self, |mut c| async move { c.next_record().await.map(|r| (r, c)) })
    }

    /// Commits the positions of everything delivered so far (group consumers only).
    pub async fn commit(&self) -> Result<(), ClientError> {
        let member = self.member_id();
        let offsets: Vec<(u32, u64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
        self.commit_offsets(&offsets, member).await
    }

    /// Commits explicit positions, (partition, next offset to read), for a caller that stopped
    /// in the middle of a fetched batch and so delivered less than [`Consumer::commit`] would
    /// commit (group consumers only).
    pub async fn commit_positions(&self, positions: &[(u32, u64)]) -> Result<(), ClientError> {
        self.commit_offsets(positions, self.member_id()).await
    }

    fn member_id(&self) -> Option<String> {
        self.group.as_ref().and_then(|g| g.membership.borrow().as_ref().ok().map(|m| m.member_id.clone()))
    }

    async fn commit_offsets(
        &self,
        offsets: &[(u32, u64)],
        member_id: Option<String>,
    ) -> Result<(), ClientError> {
        let Some(g) = &self.group else {
            return Err(ClientError::InvalidArgument("commit needs a consumer group".into()));
        };
        let req = Request::CommitOffsets {
            group: g.name.clone(),
            member_id,
            offsets: offsets
                .iter()
                .map(|(p, o)| PartitionOffset { topic: self.topic.clone(), partition: *p, offset: *o })
                .collect(),
        };
        self.client.request(&req, Bytes::new()).await.map(|_| ())
    }

    /// Stops fetching and, in a group, leaves it so the others take over at once.
    pub async fn close(mut self) {
        for (_, (_, t)) in self.fetchers.drain() {
            t.abort();
        }
        if let Some(g) = self.group.take() {
            g.heartbeat.abort();
            let member = g.membership.borrow().as_ref().ok().map(|m| m.member_id.clone());
            if let Some(member_id) = member {
                let _ = self
                    .client
                    .request(&Request::LeaveGroup { group: g.name.clone(), member_id }, Bytes::new())
                    .await;
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for (_, t) in self.fetchers.values() {
            t.abort();
        }
        if let Some(g) = &self.group {
            g.heartbeat.abort();
        }
    }
}

fn owned(f: &Fetched, r: &Record<'_>) -> ConsumedRecord {
    ConsumedRecord {
        partition: f.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: f.bytes.slice_ref(r.key),
        value: f.bytes.slice_ref(r.value),
        headers: r.headers().map(|(k, v)| (f.bytes.slice_ref(k), f.bytes.slice_ref(v))).collect(),
    }
}

async fn join(
    client: &Client,
    group: &str,
    member_id: Option<String>,
    topic: &str,
    session_timeout: Duration,
) -> Result<Membership, ClientError> {
    let req = Request::JoinGroup {
        group: group.to_string(),
        member_id,
        topics: vec![topic.to_string()],
        session_timeout_ms: session_timeout.as_millis().min(u32::MAX as u128) as u32,
    };
    match client.request(&req, Bytes::new()).await?.0 {
        Response::Joined { member_id, generation, assignment } => {
            Ok(Membership { member_id, generation, assignment: partitions_of(topic, assignment) })
        }
        other => Err(unexpected(&other)),
    }
}

fn partitions_of(topic: &str, a: Vec<TopicPartition>) -> Vec<u32> {
    a.into_iter().filter(|tp| tp.topic == topic).map(|tp| tp.partition).collect()
}

async fn heartbeat_loop(
    client: Client,
    group: String,
    topic: String,
    session_timeout: Duration,
    tx: watch::Sender<Result<Membership, ClientError>>,
) {
    let every = session_timeout / 3;
    loop {
        tokio::time::sleep(every).await;
        let Ok(current) = tx.borrow().clone() else { return };
        let req = Request::Heartbeat { group: group.clone(), member_id: current.member_id.clone() };
        let next = match client.request(&req, Bytes::new()).await {
            Ok((Response::Heartbeat { generation, assignment }, _)) => Ok(Membership {
                member_id: current.member_id.clone(),
                generation,
                assignment: partitions_of(&topic, assignment),
            }),
            Ok((other, _)) => Err(unexpected(&other)),
            Err(ClientError::Broker { code: silt_wire::ErrorCode::UnknownMember, .. }) => {
                // Expired (e.g. the broker restarted): join again as a new member.
                join(&client, &group, None, &topic, session_timeout).await
            }
            Err(e) if e.is_retriable() => continue,
            Err(e) => Err(e),
        };
        match next {
            Ok(m) => {
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref().map_or(true, |c| *c != m);
                    *cur = Ok(m);
                    changed
                });
            }
            Err(e) if e.is_retriable() => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

struct Fetcher {
    client: Client,
    topic: String,
    partition: u32,
    config: ConsumerConfig,
    tx: mpsc::Sender<Msg>,
    epoch: u64,
}

impl Fetcher {
    async fn run(self, start: FetchFrom) {
        let mut from = start;
        let mut end: Option<u64> = None;
        let mut channel: Option<Channel> = None;
        let mut retry_until: Option<Instant> = None;
        loop {
            let result = self.fetch_once(&mut channel, from).await;
            let (next, hw, from_offset, bytes) = match result {
                Ok(v) => {
                    retry_until = None;
                    v
                }
                Err(e) if e.is_retriable() => {
                    channel = None;
                    let deadline =
                        *retry_until.get_or_insert_with(|| Instant::now() + self.config.retry_timeout);
                    if Instant::now() >= deadline {
                        let _ = self.tx.send(Msg::Failed { epoch: self.epoch, error: e }).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    let _ = self.tx.send(Msg::Failed { epoch: self.epoch, error: e }).await;
                    return;
                }
            };
            if !self.config.follow && end.is_none() {
                end = Some(hw);
            }
            if !bytes.is_empty() {
                let fetched = Fetched {
                    partition: self.partition,
                    from_offset,
                    next_offset: next,
                    high_watermark: hw,
                    bytes,
                };
                if self.tx.send(Msg::Fetched { epoch: self.epoch, fetched }).await.is_err() {
                    return;
                }
            }
            from = FetchFrom::Offset(next);
            if end.is_some_and(|e| next >= e) {
                let _ = self.tx.send(Msg::Done { epoch: self.epoch, partition: self.partition }).await;
                return;
            }
        }
    }

    async fn fetch_once(
        &self,
        channel: &mut Option<Channel>,
        from: FetchFrom,
    ) -> Result<(u64, u64, u64, Bytes), ClientError> {
        if channel.is_none() {
            *channel = Some(self.client.channel().await?);
        }
        let ch = channel.as_mut().expect("channel");
        let max_wait_ms = if self.config.follow { self.config.max_wait.as_millis() as u32 } else { 0 };
        let req = Request::Fetch {
            topic: self.topic.clone(),
            partition: self.partition,
            from,
            max_bytes: self.config.max_bytes,
            max_wait_ms,
            processor: self.config.processor.clone(),
        };
        ch.send(&req, Bytes::new()).await?;
        match ch.receive().await? {
            (Response::Fetched { next_offset, high_watermark, from_offset, .. }, bytes) => {
                // Decompress here, in the fetch task, so readers get plain batches and the
                // work overlaps the next fetch.
                let bytes = match decompress_all(&bytes) {
                    Ok(Some(plain)) => Bytes::from(plain),
                    Ok(None) => bytes,
                    Err(e) => return Err(ClientError::Protocol(format!("bad batch from broker: {e}"))),
                };
                Ok((next_offset, high_watermark, from_offset, bytes))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}
