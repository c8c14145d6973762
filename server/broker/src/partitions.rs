//! The broker's open partitions: each one's log, its visible watermark and its appender task.
//!
//! [`Partitions`] is the narrow handle the request handlers and the processor host share:
//! they reach a partition's log, append to it and wait for its records to become visible
//! through it, and never through the broker as a whole.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use silt_core::watermarks::{FetchRefused, FetchStart, Watermarks};
use silt_storage::ledger::{Ledger, PartitionKey};
use silt_storage::{Appended, Loss, Partition, StorageError, Store};
use silt_wire::frame::Frame;
use silt_wire::{DamagedRange, RepairInfo};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::now_ms;
use crate::durability::Durability;
use crate::metrics::Metrics;

/// Batches queued for one partition's appender, across all streams. Stream readers wait
/// (backpressure) when it is full.
const APPEND_QUEUE_MAX: usize = 256;
/// Most batches one sled transaction takes. Eight is the default producer window; more
/// would only lengthen the wait of the first batch in the group.
const APPEND_GROUP_MAX: usize = 16;

/// What an append came to, and the durability ticket to wait on before acknowledging it.
pub(crate) type AppendOutcome = (Result<Appended, StorageError>, u64);

/// The broker's side of one partition.
pub struct PartitionHandle {
    pub log: Arc<Partition>,
    /// Written, durable and visible ends (silt-core); the watch below publishes the visible one.
    watermarks: Mutex<Watermarks>,
    /// Offset up to which records are durable and may be served to consumers.
    visible: watch::Sender<u64>,
    /// Validated batches waiting for the partition's appender task.
    appends: mpsc::Sender<AppendJob>,
    /// Acknowledged records this partition lost to storage damage (found at start): it
    /// refuses produces, and reads from the lost range on.
    pub lost: Option<Loss>,
}

/// A validated produce request waiting to be appended.
struct AppendJob {
    frame: Frame,
    done: oneshot::Sender<AppendOutcome>,
}

impl PartitionHandle {
    pub(crate) fn subscribe_visible(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    fn watermarks(&self) -> std::sync::MutexGuard<'_, Watermarks> {
        self.watermarks.lock().expect("a watermark holder panicked")
    }

    /// Records written up to `end`, not yet durable.
    pub(crate) fn written(&self, end: u64) {
        self.watermarks().handle_written(end);
    }

    /// Records up to `end` are durable: on this single node that commits them, and consumers
    /// may see them.
    pub(crate) fn durable(&self, end: u64) {
        let raised = self.watermarks().handle_durable(end);
        if let Some(visible) = raised {
            self.visible.send_if_modified(|v| {
                let grew = visible > *v;
                if grew {
                    *v = visible;
                }
                grew
            });
        }
    }

    pub fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    /// Where a fetch asking for `asked` starts, and whether it waits for records first.
    pub(crate) fn fetch_start(&self, asked: u64, wait_asked: bool) -> Result<FetchStart, FetchRefused> {
        self.watermarks().fetch_start(asked, self.log.log_start(), wait_asked)
    }

    /// Queues a validated batch for the appender, in call order, and returns where its
    /// outcome will arrive. Waits while the queue is full. `None` when the appender stopped.
    pub(crate) async fn append(&self, frame: Frame) -> Option<oneshot::Receiver<AppendOutcome>> {
        let (done, outcome) = oneshot::channel();
        self.appends.send(AppendJob { frame, done }).await.ok()?;
        Some(outcome)
    }
}

/// What a client is told of a partition that lost acknowledged records.
pub fn lost_message(l: &Loss) -> String {
    format!(
        "partition {} of {} lost acknowledged records {}..{} to storage damage ({}); it serves offsets \
         before {} and refuses produces and later reads until an operator accepts the loss \
         (`silt topic repair {} --partition {} --accept-loss`)",
        l.partition, l.topic, l.from, l.to, l.reason, l.from, l.topic, l.partition
    )
}

/// Every partition opened since start, by topic and number.
pub struct Partitions {
    store: Arc<Store>,
    open: DashMap<(String, u32), Arc<PartitionHandle>>,
    durability: Arc<Durability>,
    metrics: Arc<Metrics>,
    ledger: Arc<Ledger>,
    /// What the check against the ledger found at start, by topic and partition.
    lost: DashMap<(String, u32), Loss>,
}

impl Partitions {
    pub fn new(
        store: Arc<Store>,
        durability: Arc<Durability>,
        metrics: Arc<Metrics>,
        ledger: Arc<Ledger>,
        losses: Vec<Loss>,
    ) -> Arc<Partitions> {
        let lost = losses.into_iter().map(|l| ((l.topic.clone(), l.partition), l)).collect();
        let partitions =
            Arc::new(Partitions { store, open: DashMap::new(), durability, metrics, ledger, lost });
        let weak = Arc::downgrade(&partitions);
        partitions.durability.keep_ledger(
            partitions.ledger.clone(),
            Box::new(move || weak.upgrade().map(|p| p.written_ends()).unwrap_or_default()),
        );
        partitions
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Every open partition's written end, keyed for the ledger.
    fn written_ends(&self) -> Vec<(PartitionKey, u64)> {
        self.open.iter().map(|h| (h.log.ledger_key(), h.log.high_watermark())).collect()
    }

    /// The acknowledged records each damaged partition lost.
    pub fn losses(&self) -> Vec<Loss> {
        self.lost.iter().map(|l| l.value().clone()).collect()
    }

    /// Forgets a topic in the ledger, before it is deleted (so a crash between the two never
    /// reports a deleted topic as lost).
    pub fn forget_in_ledger(&self, topic: &str) -> Result<(), StorageError> {
        match self.store.incarnation(topic) {
            Some(incarnation) => self.ledger.forget(topic, incarnation),
            None => Ok(()),
        }
    }

    /// The acknowledged offsets a partition lost to storage damage, as found at start.
    pub fn lost(&self, topic: &str, partition: u32) -> Option<Loss> {
        self.lost.get(&(topic.to_string(), partition)).map(|l| l.value().clone())
    }

    /// The handle of a partition, opening it (and starting its appender) on first use.
    pub fn get(&self, topic: &str, partition: u32) -> Result<Arc<PartitionHandle>, StorageError> {
        if let Some(h) = self.open.get(&(topic.to_string(), partition)) {
            return Ok(h.clone());
        }
        let handle = match self.open.entry((topic.to_string(), partition)) {
            dashmap::mapref::entry::Entry::Occupied(e) => e.get().clone(),
            dashmap::mapref::entry::Entry::Vacant(e) => {
                let log = self.store.partition(topic, partition)?;
                let hw = log.high_watermark();
                let (appends, queue) = mpsc::channel(APPEND_QUEUE_MAX);
                let handle = Arc::new(PartitionHandle {
                    log,
                    watermarks: Mutex::new(Watermarks::recovered(hw)),
                    visible: watch::Sender::new(hw),
                    appends,
                    lost: self.lost.get(&(topic.to_string(), partition)).map(|l| l.value().clone()),
                });
                tokio::spawn(appender(handle.clone(), self.durability.clone(), self.metrics.clone(), queue));
                e.insert(handle).clone()
            }
        };
        Ok(handle)
    }

    /// Finds the acknowledged offsets of a partition that storage damage destroyed and, with
    /// `accept`, accepts their loss (`silt_storage::Store::repair`), for `who`: logged,
    /// counted in `silt_accepted_loss_records_total`, and the partition serves again (a handle
    /// that refused as lost is replaced by one that does not). When the topic's database did
    /// not open, accepting covers every partition of the topic, each logged and counted.
    /// Blocking.
    pub fn repair(
        &self,
        topic: &str,
        partition: u32,
        accept: bool,
        who: &str,
    ) -> Result<RepairInfo, StorageError> {
        let incarnation = self.store.incarnation(topic);
        let acked_end = |p: u32| {
            let ledger_end = incarnation.and_then(|incarnation| {
                let ledger_key = PartitionKey { topic: topic.to_string(), incarnation, partition: p };
                self.ledger.ends().get(&ledger_key).copied()
            });
            let lost_to = self.lost.get(&(topic.to_string(), p)).map(|l| l.to);
            ledger_end.unwrap_or(0).max(lost_to.unwrap_or(0))
        };
        let repairs = self.store.repair(topic, partition, &acked_end, accept).inspect_err(|e| {
            if e.is_io() {
                self.durability.fail(e.to_string());
            }
        })?;
        for (p, repair) in &repairs {
            self.repaired(topic, *p, repair, who);
        }
        let (_, repair) =
            repairs.into_iter().next().expect("the repair of the partition asked for comes first");
        Ok(RepairInfo {
            topic: topic.to_string(),
            partition,
            damaged: repair
                .damaged
                .iter()
                .map(|d| DamagedRange { from: d.from, to: d.to, reason: d.reason.clone() })
                .collect(),
            accepted: repair.accepted,
            batches_removed: repair.batches_removed,
            accepted_losses: repair.gaps,
        })
    }

    /// Logs and counts one partition's repair, and drops a handle that refused as lost.
    fn repaired(&self, topic: &str, partition: u32, repair: &silt_storage::Repair, who: &str) {
        for d in &repair.damaged {
            if repair.accepted {
                tracing::warn!(topic, partition, from = d.from, to = d.to, reason = %d.reason, by = who,
                    "loss of acknowledged records accepted: readers step over them, produces go on after them");
            } else {
                tracing::warn!(topic, partition, from = d.from, to = d.to, reason = %d.reason,
                    "damaged records found by a repair without --accept-loss; nothing changed");
            }
        }
        if repair.accepted {
            let key = (topic.to_string(), partition);
            let label = partition.to_string();
            self.metrics.accepted_loss_records.with_label_values(&[topic, &label]).inc_by(repair.records());
            self.metrics.lost_records.with_label_values(&[topic, &label]).set(0);
            if self.lost.remove(&key).is_some() {
                self.open.remove(&key);
            }
        }
    }

    /// Drops the handles of a deleted topic; their appenders end with them.
    pub fn forget_topic(&self, topic: &str) {
        self.open.retain(|(t, _), _| t != topic);
        self.lost.retain(|(t, _), _| t != topic);
    }
}

/// Appends queued batches of one partition, several per sled transaction when several are
/// waiting: a transaction costs about 70 µs more than a plain insert whatever it carries
/// (silt-storage's `measure_append_cost`). Ends when the partition's handle is dropped (the
/// task holds only a weak reference between rounds).
async fn appender(
    partition: Arc<PartitionHandle>,
    durability: Arc<Durability>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<AppendJob>,
) {
    let partition = Arc::downgrade(&partition);
    while let Some(first) = queue.recv().await {
        let Some(partition) = partition.upgrade() else { return };
        let mut jobs = vec![first];
        while jobs.len() < APPEND_GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // After a failed flush sled keeps its I/O error, and a write may block inside it
        // instead of failing: this task runs on a runtime worker, so it stays out of sled and
        // refuses, which keeps the runtime (and a SIGTERM) working.
        if let Err(refused) = durability.healthy() {
            for job in jobs {
                let _ = job.done.send((Err(StorageError::io(refused.to_string())), 0));
            }
            continue;
        }
        let mut payloads: Vec<&mut [u8]> = jobs.iter_mut().map(|j| j.frame.payload_mut()).collect();
        let timer = metrics.append_seconds.start_timer();
        let results = partition.log.append_many(&mut payloads, now_ms());
        timer.observe_duration();
        drop(payloads);
        partition.written(partition.log.high_watermark());
        // One registration after the write covers every batch of the group.
        let ticket = durability.register();
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.done.send((result, ticket));
        }
    }
}
