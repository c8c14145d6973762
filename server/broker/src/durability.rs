//! Group commit on tokio: the shell around `silt_core::group_commit::GroupCommit`, which
//! decides which appends a flush covers and when one starts. Appends register after their
//! sled insert and wait until a flush that started after it has finished, so every producer
//! waiting at the same moment shares one sled flush (docs/design.md, decision 2: 10 inserts
//! per flush gave 0.76M events/s against 0.45M with a flush per insert).
//!
//! After each successful flush, and before the acknowledgements it releases, the partitions'
//! durable ends go to the acknowledgement ledger (`silt_storage::ledger`, one `fdatasync`),
//! so a restart can tell a log sled cut short from one that is whole. The ledger is a second
//! stage: while it syncs the ends of one flush, the next flush of sled already runs, and the
//! ends of flushes that finished meanwhile go to the ledger together.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use silt_core::group_commit::{FlushPolicy, GroupCommit};
use silt_storage::ledger::{Ledger, PartitionKey};
use silt_storage::Store;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::FsyncPolicy;
use crate::metrics::Metrics;
use crate::space::SpaceGuard;

/// Shared by the request handlers and the flusher task.
pub struct Durability {
    policy: FsyncPolicy,
    commit: Mutex<GroupCommit>,
    /// The highest registration covered by a finished flush; `Err` after a flush failed.
    flushed: watch::Sender<Result<u64, String>>,
    wake: Notify,
    metrics: Arc<Metrics>,
    ledger: OnceLock<LedgerHook>,
    space: OnceLock<Arc<SpaceGuard>>,
}

/// Why a write is not taken.
#[derive(Debug, Clone)]
pub enum Refused {
    /// The disk is nearly full; retriable, produces resume on their own.
    DiskFull(String),
    /// A flush failed: nothing more is acknowledged until the broker restarts.
    Failed(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::DiskFull(e) => write!(f, "disk full: {e}"),
            Refused::Failed(e) => write!(f, "storage failed: {e}"),
        }
    }
}

/// The ledger, and where the partitions' written ends come from.
struct LedgerHook {
    ledger: Arc<Ledger>,
    ends: EndsOfPartitions,
}

/// Every open partition's written end: what a flush that starts now makes durable.
pub type EndsOfPartitions = Box<dyn Fn() -> Vec<(PartitionKey, u64)> + Send + Sync>;

/// Flushes sled finished that wait for the ledger at most; the flusher waits beyond it.
const LEDGER_QUEUE_MAX: usize = 64;

/// A flush sled finished, on its way through the ledger.
struct Flushed {
    target: u64,
    /// The partitions' ends before the flush began: what it made durable.
    ends: Vec<(PartitionKey, u64)>,
    outcome: Result<(), String>,
}

impl Durability {
    pub fn new(policy: FsyncPolicy, metrics: Arc<Metrics>) -> Arc<Self> {
        let flush_policy = match policy {
            FsyncPolicy::Always => FlushPolicy::Always,
            FsyncPolicy::Every(_) => FlushPolicy::Every,
            FsyncPolicy::Never => FlushPolicy::Never,
        };
        Arc::new(Durability {
            policy,
            commit: Mutex::new(GroupCommit::new(flush_policy)),
            flushed: watch::Sender::new(Ok(0)),
            wake: Notify::new(),
            metrics,
            ledger: OnceLock::new(),
            space: OnceLock::new(),
        })
    }

    /// Makes every later flush record the ends `ends` gives in `ledger` before it counts as
    /// done. Set once, when the partitions exist.
    pub fn keep_ledger(&self, ledger: Arc<Ledger>, ends: EndsOfPartitions) {
        let _ = self.ledger.set(LedgerHook { ledger, ends });
    }

    /// Makes [`Durability::admit`] refuse writes while `guard` finds the disk nearly full.
    pub fn guard_space(&self, guard: Arc<SpaceGuard>) {
        let _ = self.space.set(guard);
    }

    /// Whether a produce of `bytes` may be appended: not after a failed flush, nor while
    /// the disk is nearly full.
    pub fn admit(&self, bytes: u64) -> Result<(), Refused> {
        self.healthy()?;
        match self.space.get() {
            Some(space) => space.admit(bytes).map_err(Refused::DiskFull),
            None => Ok(()),
        }
    }

    /// `Err` once a flush failed: under every fsync policy, no write is acknowledged after it.
    pub fn healthy(&self) -> Result<(), Refused> {
        match &*self.flushed.borrow() {
            Ok(_) => Ok(()),
            Err(e) => Err(Refused::Failed(e.clone())),
        }
    }

    /// Waits until writes that do not come from producers (processor outputs) may go on:
    /// while the disk is nearly full; `Err` once a flush failed.
    pub async fn room(&self) -> Result<(), Refused> {
        loop {
            self.healthy()?;
            if !self.space.get().is_some_and(|s| s.is_full()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn commit(&self) -> std::sync::MutexGuard<'_, GroupCommit> {
        self.commit.lock().expect("a group-commit holder panicked")
    }

    /// True when an acknowledgement must wait for a flush.
    pub fn acks_wait_for_flush(&self) -> bool {
        self.policy == FsyncPolicy::Always
    }

    /// Registers a finished append and returns its ticket.
    pub fn register(&self) -> u64 {
        let ticket = self.commit().register();
        self.wake.notify_one();
        ticket
    }

    /// Waits until a flush covered `ticket`.
    pub async fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut rx = self.flushed.subscribe();
        let seen = rx
            .wait_for(|f| match f {
                Ok(done) => *done >= ticket,
                Err(_) => true,
            })
            .await
            .map_err(|_| "broker is shutting down".to_string())?;
        match &*seen {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Runs the flusher and the ledger stage until the process ends: flushes on demand for
    /// `always`, on a timer for `every:<ms>`, not at all for `never`.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let (done, flushed) = mpsc::channel(LEDGER_QUEUE_MAX);
        tokio::join!(self.clone().flushes(store, done), self.ledger_stage(flushed));
    }

    async fn flushes(self: Arc<Self>, store: Arc<Store>, done: mpsc::Sender<Flushed>) {
        match self.policy {
            FsyncPolicy::Never => {}
            FsyncPolicy::Every(ms) => {
                let mut tick = tokio::time::interval(Duration::from_millis(ms));
                loop {
                    tick.tick().await;
                    let (target, failed) = {
                        let mut commit = self.commit();
                        (commit.handle_tick(), commit.flushed().is_err())
                    };
                    if failed {
                        return;
                    }
                    if let Some(target) = target {
                        self.flush(&store, target, &done).await;
                    }
                }
            }
            FsyncPolicy::Always => loop {
                let (target, failed) = {
                    let mut commit = self.commit();
                    (commit.poll_flush(), commit.flushed().is_err())
                };
                match target {
                    Some(target) => self.flush(&store, target, &done).await,
                    None if failed => return,
                    // A registration after the poll leaves a permit, so this wakes for it.
                    None => self.wake.notified().await,
                }
            },
        }
    }

    /// One flush of sled covering every append registered up to `target`, handed to the
    /// ledger stage, which releases its acknowledgements.
    async fn flush(&self, store: &Arc<Store>, target: u64, done: &mpsc::Sender<Flushed>) {
        let s = store.clone();
        // The ends before the flush: everything written up to them is in what it flushes.
        let ends = self.ledger.get().map(|h| (h.ends)()).unwrap_or_default();
        let timer = self.metrics.flush_seconds.start_timer();
        let result = tokio::task::spawn_blocking(move || s.flush()).await;
        timer.observe_duration();
        let outcome = match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("flush failed: {e}")),
            Err(e) => Err(format!("flush task failed: {e}")),
        };
        if let Err(e) = &outcome {
            self.failed(e);
        }
        self.commit().handle_flushed(target, outcome.clone());
        let _ = done.send(Flushed { target, ends, outcome }).await;
    }

    /// Records finished flushes in the ledger, several at once when they queued up, and only
    /// then releases their acknowledgements.
    async fn ledger_stage(&self, mut flushed: mpsc::Receiver<Flushed>) {
        while let Some(first) = flushed.recv().await {
            let (mut target, mut outcome) = (first.target, first.outcome);
            let mut ends: std::collections::BTreeMap<PartitionKey, u64> = first.ends.into_iter().collect();
            while let Ok(more) = flushed.try_recv() {
                target = target.max(more.target);
                outcome = outcome.and(more.outcome);
                for (key, end) in more.ends {
                    let slot = ends.entry(key).or_insert(end);
                    *slot = (*slot).max(end);
                }
            }
            if let (Ok(()), Some(hook)) = (&outcome, self.ledger.get()) {
                let ledger = hook.ledger.clone();
                let recorded = tokio::task::spawn_blocking(move || ledger.record(ends)).await;
                outcome = match recorded {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("recording the flush in the ledger failed: {e}")),
                    Err(e) => Err(format!("ledger task failed: {e}")),
                };
                if let Err(e) = &outcome {
                    self.failed(e);
                }
            }
            let now = outcome.map(|()| target);
            // A failure is for good: no acknowledgement after it.
            self.flushed.send_if_modified(|f| {
                let changed = f.is_ok() && *f != now;
                if changed {
                    *f = now;
                }
                changed
            });
        }
    }

    /// A write to the store failed with an I/O error: sled keeps that error for the rest of
    /// the process (every later write and flush returns it, and a flush already waiting may
    /// never return), so the broker stops acknowledging now, as after a failed flush, and
    /// wakes every produce waiting for one.
    pub fn fail(&self, e: String) {
        self.failed(&e);
        let e = format!("a write failed: {e}");
        self.commit().fail(e.clone());
        self.flushed.send_if_modified(|f| {
            let changed = f.is_ok();
            if changed {
                *f = Err(e);
            }
            changed
        });
        self.wake.notify_one();
    }

    fn failed(&self, e: &str) {
        self.metrics.flush_failures.inc();
        // A failed fsync leaves the state of the files unknown; refusing every later
        // acknowledgement is the only honest answer (PostgreSQL learnt this in 2018).
        tracing::error!(error = %e, "storage flush failed; no further produce will be acknowledged");
    }
}
