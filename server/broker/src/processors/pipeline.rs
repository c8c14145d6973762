//! Pipelines: one task per input partition of a running processor, each reading durable
//! input past its checkpoint, calling the module once per batch and committing the output,
//! the new checkpoint and the state snapshot in one sled transaction.
//!
//! A task holds only what it works on: its input and output partitions, the durability
//! handle, the metrics and the [`Pipelines`] registry it reports a failure to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use silt_runtime::{Instance, Limits as RuntimeLimits, Module, RuntimeError};
use silt_storage::{Partition, Store};
use silt_wire::batch;
use silt_wire::Compression;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::read_time::trim_batch;
use super::records::{Checkpoint, StoredDefinition};
use super::MayRun;
use crate::clock::now_ms;
use crate::durability::Durability;
use crate::metrics::Metrics;
use crate::partitions::PartitionHandle;

/// Input bytes one pipeline commit covers at most. A commit is one sled transaction (about
/// 90 µs whatever it holds) plus a state snapshot, so it should cover many batches; 1 MiB is
/// about 10,000 100-byte events.
const COMMIT_INPUT_BYTES_MAX: usize = 1024 * 1024;
/// Output bytes (compressed, as stored) one commit holds at most before it is written: a
/// commit ends after the input batch that reaches this, so a module emitting the most it may
/// per batch (8 MiB) holds at most this plus one batch's output, not one per input batch of
/// the chunk.
const COMMIT_OUTPUT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Counters of one running input partition, read by `status`.
#[derive(Default)]
pub(super) struct Progress {
    pub checkpoint: AtomicU64,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    /// The module's own counters (`silt_counters`) as of the instance's setup or its last
    /// durable commit, so they always match the state a restart would restore.
    counters: Mutex<ModuleCounters>,
}

/// A module's counters, as `Instance::counters` returns them.
pub(super) type ModuleCounters = Vec<(String, u64)>;

impl Progress {
    fn show(&self, cp: &Checkpoint) {
        self.checkpoint.store(cp.next_offset, Ordering::Relaxed);
        self.events_in.store(cp.events_in, Ordering::Relaxed);
        self.events_out.store(cp.events_out, Ordering::Relaxed);
    }

    fn show_counters(&self, counters: ModuleCounters) {
        *self.counters.lock().expect("progress counters") = counters;
    }

    /// The counters last shown.
    pub fn counters(&self) -> ModuleCounters {
        self.counters.lock().expect("progress counters").clone()
    }
}

struct Pipeline {
    /// Runs a first-tier build; the host restarts it on the optimised one once compiled.
    first_tier: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    progress: Arc<Vec<Progress>>,
}

/// What a pipeline runs: the active version's module, parameters and limits, and the
/// partitions it reads and writes.
pub(super) struct Launch {
    pub module: Module,
    pub first_tier: bool,
    pub limits: RuntimeLimits,
    /// Per input partition: input, output and the checkpoint to start from.
    pub partitions: Vec<(Arc<PartitionHandle>, Arc<PartitionHandle>, Checkpoint)>,
}

/// The running pipelines, by processor name.
pub(super) struct Pipelines {
    store: Arc<Store>,
    durability: Arc<Durability>,
    metrics: Arc<Metrics>,
    may_run: MayRun,
    running: Mutex<HashMap<String, Pipeline>>,
}

impl Pipelines {
    pub fn new(
        store: Arc<Store>,
        durability: Arc<Durability>,
        metrics: Arc<Metrics>,
        may_run: MayRun,
    ) -> Pipelines {
        Pipelines { store, durability, metrics, may_run, running: Mutex::new(HashMap::new()) }
    }

    /// Starts one task per input partition of `def`'s active version.
    pub fn start(self: &Arc<Self>, def: &StoredDefinition, launch: Launch) {
        let active = def.active();
        let (stop, stop_rx) = watch::channel(false);
        let progress: Arc<Vec<Progress>> =
            Arc::new((0..launch.partitions.len()).map(|_| Progress::default()).collect());
        let mut tasks = Vec::with_capacity(launch.partitions.len());
        for (p, (input, output, cp)) in launch.partitions.into_iter().enumerate() {
            progress[p].show(&cp);
            let task = PartitionTask {
                pipelines: self.clone(),
                name: def.name.clone(),
                partition: p as u32,
                version: active.version,
                deployer: active.deployed_by.clone(),
                topics: (def.input.clone(), def.output.clone()),
                params: active.params.clone(),
                limits: launch.limits.clone(),
                module: launch.module.clone(),
                input,
                output,
                progress: progress.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(task.run(cp)));
        }
        self.metrics.processor_restarts.with_label_values(&[&def.name]).inc();
        let pipeline = Pipeline { first_tier: launch.first_tier, stop, tasks, progress };
        self.running.lock().expect("pipelines").insert(def.name.clone(), pipeline);
    }

    /// Stops a processor's tasks and waits until none can commit any more.
    ///
    /// The entry stays in the map until its tasks have ended, so a status read meanwhile
    /// shows the tasks' progress (durable commits only) rather than the stored checkpoint,
    /// which may hold a commit not yet flushed.
    pub async fn stop(&self, name: &str) {
        let tasks = match self.running.lock().expect("pipelines").get_mut(name) {
            Some(p) => {
                let _ = p.stop.send(true);
                std::mem::take(&mut p.tasks)
            }
            None => return,
        };
        for t in tasks {
            let _ = t.await;
        }
        self.running.lock().expect("pipelines").remove(name);
    }

    /// The names of the processors running a first-tier build.
    pub fn on_first_tier(&self) -> Vec<String> {
        let running = self.running.lock().expect("pipelines");
        running.iter().filter(|(_, p)| p.first_tier).map(|(n, _)| n.clone()).collect()
    }

    /// The live counters of a running processor's partitions.
    pub fn progress(&self, name: &str) -> Option<Arc<Vec<Progress>>> {
        self.running.lock().expect("pipelines").get(name).map(|p| p.progress.clone())
    }

    /// Marks a processor failed and stops its other tasks (they notice at their next chunk).
    pub fn fail(&self, name: &str, message: &str) {
        tracing::error!(processor = %name, error = %message, "processor failed and is stopped");
        self.metrics.processor_errors.with_label_values(&[name]).inc();
        if let Some(p) = self.running.lock().expect("pipelines").get(name) {
            let _ = p.stop.send(true);
        }
        let recorded = match self.store.processor(name) {
            Ok(Some(bytes)) => super::decode_definition(&bytes).and_then(|mut def| {
                def.error = Some(message.to_string());
                super::save(&self.store, &def)
            }),
            Ok(None) => return,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = recorded {
            tracing::error!(processor = %name, error = %e.message, "cannot record the failure");
        }
    }
}

/// One input partition of a running pipeline.
struct PartitionTask {
    pipelines: Arc<Pipelines>,
    name: String,
    partition: u32,
    version: u32,
    /// Whose rights the version runs with, and the input and output topics they must cover.
    deployer: Option<String>,
    topics: (String, String),
    params: Vec<(String, String)>,
    limits: RuntimeLimits,
    module: Module,
    input: Arc<PartitionHandle>,
    output: Arc<PartitionHandle>,
    progress: Arc<Vec<Progress>>,
    stop: watch::Receiver<bool>,
}

/// What one chunk did.
struct Chunk {
    checkpoint: Checkpoint,
    /// End offset of the output written, to publish once durable.
    output_end: Option<u64>,
    /// The module's counters after the chunk's last batch; `None` when it processed none.
    counters: Option<ModuleCounters>,
    ticket: u64,
}

impl PartitionTask {
    fn fail(&self, message: &str) {
        self.pipelines.fail(&self.name, message);
    }

    /// Whether the deployer still has the rights the pipeline uses.
    fn may_run(&self) -> Result<(), String> {
        let (input, output) = &self.topics;
        (self.pipelines.may_run)(&self.name, self.deployer.as_deref(), input, output)
    }

    /// A fresh instance, restored from the checkpoint's state when it holds one of this
    /// version, and the counters it reports from there.
    async fn instantiate(&self, checkpoint: &Checkpoint) -> Result<(Instance, ModuleCounters), String> {
        let module = self.module.clone();
        let params = self.params.clone();
        let limits = self.limits.clone();
        let state = (checkpoint.version == self.version).then(|| checkpoint.state.clone()).flatten();
        let setup =
            tokio::task::spawn_blocking(move || -> Result<(Instance, ModuleCounters), RuntimeError> {
                let mut instance = module.instantiate(&params, &limits)?;
                if let Some(s) = state {
                    instance.restore(&s)?;
                }
                let counters = instance.counters()?;
                Ok((instance, counters))
            })
            .await;
        match setup {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(format!("partition {}: {e}", self.partition)),
            Err(e) => Err(format!("partition {}: start task failed: {e}", self.partition)),
        }
    }

    async fn run(mut self, checkpoint: Checkpoint) {
        if let Err(why) = self.may_run() {
            return self.fail(&why);
        }
        let started = Instant::now();
        let mut instance = match self.instantiate(&checkpoint).await {
            Ok((instance, counters)) => {
                self.progress[self.partition as usize].show_counters(counters);
                instance
            }
            Err(message) => return self.fail(&message),
        };
        tracing::debug!(processor = %self.name, partition = self.partition, us = started.elapsed().as_micros() as u64, "pipeline started");
        let mut checkpoint = Checkpoint { version: self.version, ..checkpoint };
        loop {
            if *self.stop.borrow() {
                return;
            }
            // Wait for input past the checkpoint, or for the stop signal.
            let mut visible = self.input.subscribe_visible();
            let from = checkpoint.next_offset;
            tokio::select! {
                r = visible.wait_for(|v| *v > from) => if r.is_err() { return },
                _ = self.stop.wait_for(|s| *s) => return,
            }
            if let Err(why) = self.may_run() {
                return self.fail(&why);
            }
            // Outputs wait while the disk is nearly full, and stop for good after a failed
            // flush (the broker acknowledges nothing more until restarted).
            tokio::select! {
                room = self.pipelines.durability.room() => if let Err(refused) = room {
                    tracing::error!(processor = %self.name, partition = self.partition, ?refused, "storage failed; pipeline stops");
                    return;
                },
                _ = self.stop.wait_for(|s| *s) => return,
            }
            let (returned, result) = match self.chunk(instance, checkpoint.clone()).await {
                Ok(v) => v,
                Err(message) => return self.fail(&message),
            };
            instance = returned;
            let chunk = match result {
                Ok(c) => c,
                Err(message) => return self.fail(&message),
            };
            if !self.commit(&chunk, &checkpoint).await {
                return;
            }
            checkpoint = chunk.checkpoint;
            // Counters first: whoever sees the new checkpoint sees at least these counters.
            let progress = &self.progress[self.partition as usize];
            if let Some(counters) = chunk.counters {
                progress.show_counters(counters);
            }
            progress.show(&checkpoint);
        }
    }

    /// Runs one chunk on a blocking thread; hands the instance back with the outcome.
    async fn chunk(
        &self,
        mut instance: Instance,
        cp: Checkpoint,
    ) -> Result<(Instance, Result<Chunk, String>), String> {
        let limit = self.input.visible();
        let metrics = self.pipelines.metrics.clone();
        let durability = self.pipelines.durability.clone();
        let name = self.name.clone();
        let partition = self.partition;
        let input = self.input.log.clone();
        let output = self.output.log.clone();
        tokio::task::spawn_blocking(move || {
            let work =
                ChunkWork { metrics: &metrics, name: &name, partition, input: &input, output: &output };
            let result = work.process(&mut instance, cp, limit).map(|done| Chunk {
                checkpoint: done.checkpoint,
                output_end: done.output_end,
                counters: done.counters,
                ticket: durability.register(),
            });
            (instance, result)
        })
        .await
        .map_err(|e| format!("partition {partition}: chunk task failed: {e}"))
    }

    /// Waits until a chunk is durable, then publishes its output and counts it. False when
    /// the pipeline must stop.
    async fn commit(&self, chunk: &Chunk, previous: &Checkpoint) -> bool {
        if let Some(end) = chunk.output_end {
            self.output.written(end);
        }
        let durability = &self.pipelines.durability;
        if durability.acks_wait_for_flush() {
            if let Err(e) = durability.wait(chunk.ticket).await {
                tracing::error!(processor = %self.name, error = %e, "output not durable; pipeline stops");
                return false;
            }
        }
        if let Some(end) = chunk.output_end {
            self.output.durable(end);
        }
        let metrics = &self.pipelines.metrics;
        metrics
            .processor_events_in
            .with_label_values(&[&self.name])
            .inc_by(chunk.checkpoint.events_in.saturating_sub(previous.events_in));
        metrics
            .processor_events_out
            .with_label_values(&[&self.name])
            .inc_by(chunk.checkpoint.events_out.saturating_sub(previous.events_out));
        true
    }
}

/// What the blocking part of a chunk committed.
struct Processed {
    checkpoint: Checkpoint,
    /// End offset of the output written.
    output_end: Option<u64>,
    /// The module's counters after the last batch; `None` when no batch was processed.
    counters: Option<ModuleCounters>,
}

/// The blocking part of one chunk.
struct ChunkWork<'a> {
    metrics: &'a Metrics,
    name: &'a str,
    partition: u32,
    input: &'a Partition,
    output: &'a Partition,
}

impl ChunkWork<'_> {
    /// Reads input from the checkpoint, runs it through the instance (asking for its
    /// counters once, after the last batch) and commits the output with the new checkpoint in one
    /// transaction. Errors are messages for the processor's status.
    fn process(
        &self,
        instance: &mut Instance,
        mut checkpoint: Checkpoint,
        limit: u64,
    ) -> Result<Processed, String> {
        let (name, partition) = (self.name, self.partition);
        let at = |e: &dyn std::fmt::Display| format!("partition {partition}: {e}");
        let log_start = self.input.log_start();
        if checkpoint.next_offset < log_start {
            tracing::warn!(processor = %name, partition, skipped = log_start - checkpoint.next_offset,
                "retention removed unprocessed input; continuing at the log start");
            checkpoint.next_offset = log_start;
        }
        let past = self.input.past_gaps(checkpoint.next_offset);
        if past > checkpoint.next_offset {
            tracing::warn!(processor = %name, partition, skipped = past - checkpoint.next_offset,
                "input lost to storage damage was accepted as lost; continuing after it");
            checkpoint.next_offset = past;
        }
        let mut bytes = Vec::new();
        self.input
            .read(checkpoint.next_offset, COMMIT_INPUT_BYTES_MAX, limit, &mut bytes)
            .map_err(|e| at(&e))?;
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        let mut output_bytes = 0usize;
        let mut last_offset = None;
        for view in batch::split_batches(&bytes) {
            if output_bytes >= COMMIT_OUTPUT_BYTES_MAX {
                // The rest of the input goes into the next commit.
                break;
            }
            let view = view.map_err(|e| at(&e))?;
            let trimmed;
            let batch_bytes: &[u8] = if view.base_offset() < checkpoint.next_offset {
                // Only after retention moved the start, or a checkpoint set by offset:
                // pipelines otherwise always stop at batch boundaries.
                trimmed = trim_batch(view, checkpoint.next_offset).map_err(|e| at(&e.message))?;
                match &trimmed {
                    Some(b) => b,
                    None => continue,
                }
            } else {
                view.as_bytes()
            };
            let records = view.next_offset() - view.base_offset().max(checkpoint.next_offset);
            let timer = self.metrics.processor_batch_seconds.with_label_values(&[name]).start_timer();
            let _spans = if silt_telemetry::enabled() {
                let traceparents = crate::trace_context::traceparents(batch_bytes);
                silt_telemetry::child_spans!(traceparents, "silt.process", processor = %name, partition)
            } else {
                Vec::new()
            };
            let at_batch =
                |e: RuntimeError| format!("partition {partition}, input offset {}: {e}", view.base_offset());
            let produced = instance.process(batch_bytes).map_err(at_batch)?;
            timer.observe_duration();
            last_offset = Some(view.base_offset());
            if let Some(out) = produced {
                checkpoint.events_out += u64::from(batch::peek_header(&out).0);
                // Stored compressed, as producers store theirs: sensor output shrinks several
                // times, and sled writes far fewer bytes (an uncompressed 50 KB batch became a
                // blob file of its own in `silt-loadtest pipeline` profiles).
                let stored = batch::compress(out, Compression::Lz4);
                output_bytes += stored.len();
                outputs.push(stored);
            }
            checkpoint.events_in += records;
            checkpoint.next_offset = view.next_offset();
        }
        // Counters show as of a commit, so one call per commit is enough (not one per batch).
        let counters = match last_offset {
            Some(offset) => Some(instance.counters().map_err(|e| {
                format!("partition {partition}, after the batch at input offset {offset}: {e}")
            })?),
            None => None,
        };
        checkpoint.state = instance.snapshot().map_err(|e| at(&e))?;
        let mut slices: Vec<&mut [u8]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let offsets = self
            .output
            .append_checkpointed(&mut slices, now_ms(), name, partition, &checkpoint.encode())
            .map_err(|e| at(&e))?;
        let output_end =
            offsets.last().zip(outputs.last()).map(|(base, b)| base + u64::from(batch::peek_header(b).0));
        Ok(Processed { checkpoint, output_end, counters })
    }
}
