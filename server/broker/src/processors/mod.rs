//! The processor host: deploys WebAssembly processors, runs pipelines inside the broker and
//! applies processors to fetches at read time (docs/design.md, decisions 4 and 5).
//!
//! A processor reads one input topic and writes one output topic with the same partition
//! count: input partition `p` feeds output partition `p`, so keys stay in the partition
//! `partition_for_key` gives them when the processor keeps them. Each input partition runs as
//! one task ([`pipeline`]) that processes whole batches in offset order and commits, per chunk
//! of input, the output batches, the input checkpoint and the state snapshot in one sled
//! transaction (`Partition::append_checkpointed`). After a crash a pipeline restarts from its
//! last commit with the state of that commit, so each result is in the output exactly once.
//!
//! The host reaches the rest of the broker only through narrow handles: the store (its
//! definitions, checkpoints, modules and artefacts), [`Partitions`] (logs and watermarks),
//! [`Durability`] and the metrics. Stored records have their own types ([`records`]).
//!
//! *Architecture Invariant*: a failing processor fails alone. A trap, a limit or a guest error
//! marks that processor `failed` (persisted, with the message) and stops its tasks; nothing of
//! the failing chunk is committed, and the broker and other processors go on.
//!
//! Every deploy is a new version; versions keep their module hash and parameters, so a
//! rollback is a change of the active version and a restart of the tasks. A checkpoint
//! records the version whose state it holds; a different version starts from `silt_init`.

mod modules;
mod pipeline;
mod read_time;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use silt_storage::{StorageError, Store, TopicMeta, MODULE_BYTES_MAX};
use silt_wire::signature::{hex, module_hash};
use silt_wire::{
    Deployment, ErrorCode, FetchFrom, ProcessorInfo, ProcessorPartition, ProcessorRef, ProcessorState,
    ProcessorVersion,
};

use self::modules::{module_error, Modules, Starting};
use self::pipeline::{Launch, Pipelines};
use self::read_time::{ReadKey, ReadTime};
use self::records::{Checkpoint, StoredDefinition, StoredVersion};
use crate::clock::now_ms;
use crate::config::ProcessorConfig;
use crate::durability::Durability;
use crate::metrics::Metrics;
use crate::partitions::Partitions;
use silt_storage::records::processors as records;

/// Versions kept per processor; the oldest are dropped beyond this.
const VERSIONS_MAX: usize = 64;

/// A failed processor operation, as the client sees it.
#[derive(Debug)]
pub struct HostError {
    pub code: ErrorCode,
    pub message: String,
}

impl HostError {
    fn new(code: ErrorCode, message: impl Into<String>) -> HostError {
        HostError { code, message: message.into() }
    }

    fn unknown(name: &str) -> HostError {
        HostError::new(ErrorCode::UnknownProcessor, format!("no processor named {name:?}"))
    }
}

impl From<StorageError> for HostError {
    fn from(e: StorageError) -> HostError {
        let code = match e {
            StorageError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            StorageError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            _ => ErrorCode::Storage,
        };
        HostError::new(code, e.to_string())
    }
}

/// Told of every topic the host creates (a processor's output), so consumer groups see it.
pub type TopicCreated = Box<dyn Fn(&str) + Send + Sync>;

/// Asked before each chunk a pipeline runs whether the deployer of the processor's active
/// version (processor, deployer, input, output) may still read its input and write its
/// output; the error says which right is gone, and the processor fails with it.
pub type MayRun = Box<dyn Fn(&str, Option<&str>, &str, &str) -> Result<(), String> + Send + Sync>;

/// The processor host, owned by the broker.
pub struct ProcessorHost {
    store: Arc<Store>,
    partitions: Arc<Partitions>,
    metrics: Arc<Metrics>,
    modules: Modules,
    pipelines: Arc<Pipelines>,
    read_time: ReadTime,
    topic_created: TopicCreated,
    /// Serialises deploys, rollbacks, pauses and undeploys, which stop and start tasks.
    control: tokio::sync::Mutex<()>,
}

/// Writes a definition and flushes it: a control change is acknowledged only once durable.
fn save(store: &Store, def: &StoredDefinition) -> Result<(), HostError> {
    let bytes = def.encode();
    if bytes.len() > records::DEFINITION_BYTES_MAX {
        return Err(HostError::new(
            ErrorCode::TooLarge,
            format!(
                "processor {:?} would take {} bytes to store, over {}: deploy with fewer or shorter parameters",
                def.name,
                bytes.len(),
                records::DEFINITION_BYTES_MAX
            ),
        ));
    }
    store.put_processor(&def.name, &bytes)?;
    store.flush()?;
    Ok(())
}

/// A stored definition, or the storage error its damage is.
fn decode_definition(bytes: &[u8]) -> Result<StoredDefinition, HostError> {
    StoredDefinition::decode(bytes).map_err(|m| HostError::new(ErrorCode::Storage, m))
}

pub(crate) fn check_name(name: &str) -> Result<(), HostError> {
    silt_wire::message::check_topic_name(name)
        .map_err(|e| HostError::new(ErrorCode::InvalidRequest, e.replace("topic name", "processor name")))?;
    Ok(())
}

fn merge_params(base: &[(String, String)], over: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base.to_vec();
    for (k, v) in over {
        match out.iter_mut().find(|(bk, _)| bk == k) {
            Some(slot) => slot.1.clone_from(v),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out.sort();
    out
}

/// The partitions' module counters summed by name (saturating), names in order of first
/// appearance: a processor's counters, as `status` and the metrics show them.
fn sum_counters(partitions: &[ProcessorPartition]) -> Vec<(String, u64)> {
    let mut sums: Vec<(String, u64)> = Vec::new();
    for (name, value) in partitions.iter().flat_map(|p| &p.counters) {
        match sums.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum = sum.saturating_add(*value),
            None => sums.push((name.clone(), *value)),
        }
    }
    sums
}

fn state_label(state: ProcessorState) -> &'static str {
    match state {
        ProcessorState::Running => "running",
        ProcessorState::Paused => "paused",
        ProcessorState::Failed => "failed",
    }
}

impl ProcessorHost {
    pub fn new(
        config: ProcessorConfig,
        store: Arc<Store>,
        partitions: Arc<Partitions>,
        durability: Arc<Durability>,
        metrics: Arc<Metrics>,
        topic_created: TopicCreated,
        may_run: MayRun,
    ) -> anyhow::Result<ProcessorHost> {
        let read_time = ReadTime::new(config.read_time_instances_max);
        Ok(ProcessorHost {
            modules: Modules::new(store.clone(), config)?,
            pipelines: Arc::new(Pipelines::new(store.clone(), durability, metrics.clone(), may_run)),
            store,
            partitions,
            metrics,
            read_time,
            topic_created,
            control: tokio::sync::Mutex::new(()),
        })
    }

    fn definition(&self, name: &str) -> Result<StoredDefinition, HostError> {
        match self.store.processor(name)? {
            Some(bytes) => decode_definition(&bytes),
            None => Err(HostError::unknown(name)),
        }
    }

    /// Starts the pipelines of every stored processor that is neither paused nor failed.
    pub fn start_all(&self) {
        let defs = match self.store.processors() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read processor definitions; none started");
                return;
            }
        };
        for (name, bytes) in defs {
            let def = match decode_definition(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(processor = %name, error = %e.message, "processor not started");
                    continue;
                }
            };
            if def.paused || def.error.is_some() {
                continue;
            }
            if let Err(e) = self.start_pipeline(&def, None) {
                tracing::error!(processor = %name, error = %e.message, "processor not started");
                self.pipelines.fail(&name, &e.message);
            }
        }
    }

    /// Checks a deploy against the stored state before anything changes; returns the input
    /// topic and the definition it adds a version to, if any.
    fn check_deploy(
        &self,
        d: &Deployment,
        wasm: &[u8],
    ) -> Result<(TopicMeta, Option<StoredDefinition>), HostError> {
        check_name(&d.name)?;
        if d.input == d.output {
            return Err(HostError::new(
                ErrorCode::InvalidRequest,
                format!("a processor cannot write to its own input topic {:?}", d.input),
            ));
        }
        if wasm.len() > MODULE_BYTES_MAX {
            return Err(HostError::new(
                ErrorCode::TooLarge,
                format!("module of {} bytes exceeds the limit of {MODULE_BYTES_MAX} bytes", wasm.len()),
            ));
        }
        let input = self.store.topic(&d.input).ok_or_else(|| {
            HostError::new(ErrorCode::UnknownTopic, format!("input topic {:?} does not exist", d.input))
        })?;
        let existing = match self.definition(&d.name) {
            Ok(def) => Some(def),
            Err(e) if e.code == ErrorCode::UnknownProcessor => None,
            Err(e) => return Err(e),
        };
        if let Some(def) = &existing {
            if def.input != d.input || def.output != d.output {
                return Err(HostError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "processor {:?} reads {:?} and writes {:?}; undeploy it first or deploy under another name",
                        def.name, def.input, def.output
                    ),
                ));
            }
        }
        if let Some(out) = self.store.topic(&d.output) {
            if out.partitions != input.partitions {
                return Err(HostError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "output topic {:?} has {} partitions but input {:?} has {}; a processor maps partition to partition",
                        d.output, out.partitions, d.input, input.partitions
                    ),
                ));
            }
        }
        Ok((input, existing))
    }

    /// Deploys `wasm` as a new processor or a new version of one, to run with the rights of
    /// `deployed_by` (`None`: unchecked, authentication being off).
    pub async fn deploy(
        self: &Arc<Self>,
        d: Deployment,
        wasm: bytes::Bytes,
        deployed_by: Option<String>,
    ) -> Result<ProcessorInfo, HostError> {
        let _control = self.control.lock().await;
        let (input, existing) = self.check_deploy(&d, &wasm)?;
        let signed_by = self.modules.check_signature(&wasm)?;
        let limits = self.modules.resolve_limits(d.limits)?;
        let hash = module_hash(&wasm);
        let trial = StoredVersion {
            version: 0,
            module_hash: hash,
            module_bytes: wasm.len() as u64,
            params: merge_params(&[], &d.params),
            from: d.from.map(Into::into),
            limits,
            deployed_ms: now_ms(),
            signed_by,
            deployed_by,
        };
        // Compile, store and try the module (its silt_init checks the parameters) before
        // anything else changes, so a bad module leaves everything as it was.
        let starting = {
            let this = self.clone();
            let wasm = wasm.clone();
            let (params, trial_limits) = (trial.params.clone(), self.modules.limits(&trial));
            tokio::task::spawn_blocking(move || -> Result<Starting, HostError> {
                let starting = this.modules.starting(&hash, &wasm)?;
                starting.module.instantiate(&params, &trial_limits).map_err(module_error)?;
                this.store.put_module(&hash, &wasm)?;
                Ok(starting)
            })
            .await
            .map_err(|e| HostError::new(ErrorCode::Storage, format!("deploy task failed: {e}")))??
        };
        self.create_output(&d.output, input.partitions)?;

        self.pipelines.stop(&d.name).await;
        let mut def = existing.unwrap_or(StoredDefinition {
            name: d.name.clone(),
            input: d.input.clone(),
            output: d.output.clone(),
            versions: Vec::new(),
            active: 0,
            paused: false,
            error: None,
        });
        let version = def.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let is_new = def.versions.is_empty();
        def.versions.push(StoredVersion { version, ..trial });
        if def.versions.len() > VERSIONS_MAX {
            def.versions.remove(0);
        }
        def.active = version;
        def.paused = false;
        def.error = None;
        let from = match (d.from, is_new) {
            (Some(f), _) => Some(f),
            (None, true) => Some(FetchFrom::Earliest),
            (None, false) => None,
        };
        if let Some(from) = from {
            self.reset_checkpoints(&def, from, version)?;
        }
        save(&self.store, &def)?;
        let first_tier = !self.modules.is_loaded(&hash);
        self.start_pipeline(&def, first_tier.then(|| starting.module.clone()))?;
        tracing::info!(processor = %def.name, version, input = %def.input, output = %def.output, module = %hex(&hash), first_tier, "processor deployed");
        if starting.optimise {
            self.modules.hold_first_tier(hash, starting.module);
            tokio::spawn(self.clone().optimise(hash, wasm));
        }
        self.processor_info(&def)
    }

    /// Creates a processor's output topic when it does not exist yet.
    fn create_output(&self, name: &str, partitions: u32) -> Result<(), HostError> {
        if self.store.topic(name).is_some() {
            return Ok(());
        }
        let meta = TopicMeta {
            name: name.to_string(),
            partitions,
            retention_ms: None,
            retention_bytes: None,
            created_ms: now_ms(),
        };
        match self.store.create_topic(meta) {
            Ok(()) | Err(StorageError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        (self.topic_created)(name);
        Ok(())
    }

    /// Compiles the optimised build of a module deployed on the first tier, caches it, and
    /// restarts every processor still running a first-tier build of it. The restart goes
    /// through the last commit (checkpoint and state snapshot), so it is as exactly-once as
    /// any restart, and the output is the same bytes on either build.
    async fn optimise(self: Arc<Self>, hash: [u8; 32], wasm: bytes::Bytes) {
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || this.modules.build(&hash, &wasm).map(drop)).await;
        let failed = match built {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.message),
            Err(e) => Some(format!("optimised build task failed: {e}")),
        };
        let _control = self.control.lock().await;
        self.modules.release_first_tier(&hash);
        if let Some(e) = failed {
            // Processors stay on the first tier; a restart compiles the optimised build.
            return tracing::error!(module = %hex(&hash), error = %e, "optimised build failed");
        }
        for name in self.pipelines.on_first_tier() {
            let Ok(def) = self.definition(&name) else { continue };
            if def.paused || def.error.is_some() || def.active().module_hash != hash {
                continue;
            }
            self.pipelines.stop(&name).await;
            match self.start_pipeline(&def, None) {
                Ok(()) => tracing::info!(processor = %name, "processor moved to its optimised build"),
                Err(e) => self.pipelines.fail(&name, &e.message),
            }
        }
    }

    /// Points every input partition's checkpoint at `from`, with no state.
    fn reset_checkpoints(
        &self,
        def: &StoredDefinition,
        from: FetchFrom,
        version: u32,
    ) -> Result<(), HostError> {
        let meta = self.store.topic(&def.input).ok_or_else(|| {
            HostError::new(ErrorCode::UnknownTopic, format!("input topic {:?} is gone", def.input))
        })?;
        for p in 0..meta.partitions {
            let handle = self.partitions.get(&def.input, p)?;
            let next_offset = match from {
                FetchFrom::Earliest => handle.log.log_start(),
                FetchFrom::Latest => handle.visible(),
                FetchFrom::Offset(o) => o.clamp(handle.log.log_start(), handle.visible()),
                FetchFrom::Timestamp(t) => handle.log.offset_for_time(t)?.min(handle.visible()),
            };
            let previous = self.checkpoint(def, p)?.unwrap_or_default();
            let cp = Checkpoint { next_offset, version, state: None, ..previous };
            self.store.put_checkpoint(&def.output, &def.name, p, &cp.encode())?;
        }
        Ok(())
    }

    /// A pipeline's checkpoint for one input partition (in its output topic's database).
    fn checkpoint(&self, def: &StoredDefinition, partition: u32) -> Result<Option<Checkpoint>, HostError> {
        self.store
            .checkpoint(&def.output, &def.name, partition)?
            .map(|b| Checkpoint::decode(&b).map_err(|m| HostError::new(ErrorCode::Storage, m)))
            .transpose()
    }

    /// Starts one task per input partition for the active version, on `module` (a first-tier
    /// build) when given, else on the optimised build.
    fn start_pipeline(
        &self,
        def: &StoredDefinition,
        module: Option<silt_runtime::Module>,
    ) -> Result<(), HostError> {
        let meta = self.store.topic(&def.input).ok_or_else(|| {
            HostError::new(ErrorCode::UnknownTopic, format!("input topic {:?} is gone", def.input))
        })?;
        let active = def.active();
        let first_tier = module.is_some();
        let module = match module {
            Some(m) => m,
            None => self.modules.module(&active.module_hash)?,
        };
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let input = self.partitions.get(&def.input, p)?;
            let output = self.partitions.get(&def.output, p)?;
            let cp = self
                .checkpoint(def, p)?
                .unwrap_or(Checkpoint { version: active.version, ..Checkpoint::default() });
            partitions.push((input, output, cp));
        }
        let launch = Launch { module, first_tier, limits: self.modules.limits(active), partitions };
        self.pipelines.start(def, launch);
        Ok(())
    }

    pub async fn rollback(&self, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.control.lock().await;
        let mut def = self.definition(name)?;
        let previous = def.versions.iter().map(|v| v.version).filter(|&v| v < def.active).max().ok_or_else(|| {
            HostError::new(
                ErrorCode::InvalidRequest,
                format!("processor {name:?} is at its first kept version {}; there is nothing to roll back to", def.active),
            )
        })?;
        // Load the previous module before stopping anything, so a rollback that cannot run
        // changes nothing.
        let hash = def.version(previous).expect("listed").module_hash;
        self.modules.module(&hash)?;
        self.pipelines.stop(name).await;
        def.active = previous;
        def.error = None;
        save(&self.store, &def)?;
        if !def.paused {
            self.start_pipeline(&def, None)?;
        }
        tracing::info!(processor = %name, version = previous, "processor rolled back");
        self.processor_info(&def)
    }

    pub async fn pause(&self, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.control.lock().await;
        let mut def = self.definition(name)?;
        self.pipelines.stop(name).await;
        def.paused = true;
        save(&self.store, &def)?;
        self.processor_info(&def)
    }

    pub async fn resume(&self, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.control.lock().await;
        let mut def = self.definition(name)?;
        self.pipelines.stop(name).await;
        def.paused = false;
        def.error = None;
        save(&self.store, &def)?;
        self.start_pipeline(&def, None)?;
        self.processor_info(&def)
    }

    pub async fn undeploy(&self, name: &str) -> Result<(), HostError> {
        let _control = self.control.lock().await;
        let def = self.definition(name)?;
        self.pipelines.stop(name).await;
        self.store.delete_processor(name, Some(&def.output))?;
        self.store.flush()?;
        tracing::info!(processor = %name, "processor undeployed");
        Ok(())
    }

    /// Sets the processor state, lag and module counter gauges from the stored definitions
    /// and the running pipelines.
    pub(crate) fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.processor_state.reset();
        m.processor_lag.reset();
        m.processor_counts.reset();
        let Ok(list) = self.list() else { return };
        for p in list {
            for state in ["running", "paused", "failed"] {
                let on = state == state_label(p.state);
                m.processor_state.with_label_values(&[p.name.as_str(), state]).set(i64::from(on));
            }
            m.processor_lag.with_label_values(&[&p.name]).set(p.lag as i64);
            for (counter, value) in &p.counters {
                // Gauges hold i64; a total past i64::MAX (no real count gets there) shows as that.
                let value = i64::try_from(*value).unwrap_or(i64::MAX);
                m.processor_counts.with_label_values(&[p.name.as_str(), counter.as_str()]).set(value);
            }
        }
    }

    /// Checks a module's signature as a deploy does (required when the broker trusts keys;
    /// checked whenever present): the signing key, or `None` for an unsigned module. For
    /// modules deployed to devices, which the same rules hold to.
    pub fn check_signature(&self, wasm: &[u8]) -> Result<Option<[u8; 32]>, HostError> {
        self.modules.check_signature(wasm)
    }

    /// Checks a module for the bridge tier as a deploy checks one here: size, signature, a
    /// compile and a trial instantiation (`silt_init` with `params`) under the default limits
    /// the bridges run it with; then stores it. Returns who signed it.
    pub async fn check_bridge_module(
        self: &Arc<Self>,
        wasm: bytes::Bytes,
        params: &[(String, String)],
    ) -> Result<Option<[u8; 32]>, HostError> {
        if wasm.len() > MODULE_BYTES_MAX {
            return Err(HostError::new(
                ErrorCode::TooLarge,
                format!("module of {} bytes exceeds the limit of {MODULE_BYTES_MAX} bytes", wasm.len()),
            ));
        }
        let signed_by = self.modules.check_signature(&wasm)?;
        let this = self.clone();
        let params = merge_params(&[], params);
        tokio::task::spawn_blocking(move || -> Result<(), HostError> {
            let hash = module_hash(&wasm);
            let starting = this.modules.starting(&hash, &wasm)?;
            starting.module.instantiate(&params, &silt_runtime::Limits::default()).map_err(module_error)?;
            this.store.put_module(&hash, &wasm)?;
            Ok(())
        })
        .await
        .map_err(|e| HostError::new(ErrorCode::Storage, format!("check task failed: {e}")))??;
        Ok(signed_by)
    }

    pub fn status(&self, name: &str) -> Result<ProcessorInfo, HostError> {
        self.processor_info(&self.definition(name)?)
    }

    pub fn list(&self) -> Result<Vec<ProcessorInfo>, HostError> {
        let mut out = Vec::new();
        for (_, bytes) in self.store.processors()? {
            out.push(self.processor_info(&decode_definition(&bytes)?)?);
        }
        Ok(out)
    }

    pub fn versions(&self, name: &str) -> Result<Vec<ProcessorVersion>, HostError> {
        let def = self.definition(name)?;
        Ok(def
            .versions
            .iter()
            .map(|v| ProcessorVersion {
                version: v.version,
                active: v.version == def.active,
                module_sha256: hex(&v.module_hash),
                module_bytes: v.module_bytes,
                params: v.params.clone(),
                from: v.from.map(Into::into),
                limits: v.limits.into(),
                deployed_ms: v.deployed_ms,
                signed_by: v.signed_by.map(|k| hex(&k)),
                deployed_by: v.deployed_by.clone(),
            })
            .collect())
    }

    /// Progress of one input partition (checkpoint, events in and out, the module's counters;
    /// its high watermark left 0): live from a running pipeline, else as last stored, then
    /// without module counters, which only a running instance reports.
    fn partition_progress(&self, def: &StoredDefinition, p: u32) -> Result<ProcessorPartition, HostError> {
        let progress = ProcessorPartition {
            partition: p,
            checkpoint: 0,
            high_watermark: 0,
            events_in: 0,
            events_out: 0,
            counters: Vec::new(),
        };
        if let Some(pr) = self.pipelines.progress(&def.name).as_ref().and_then(|pr| pr.get(p as usize)) {
            return Ok(ProcessorPartition {
                checkpoint: pr.checkpoint.load(Ordering::Relaxed),
                events_in: pr.events_in.load(Ordering::Relaxed),
                events_out: pr.events_out.load(Ordering::Relaxed),
                counters: pr.counters(),
                ..progress
            });
        }
        Ok(match self.checkpoint(def, p)? {
            Some(cp) => ProcessorPartition {
                checkpoint: cp.next_offset,
                events_in: cp.events_in,
                events_out: cp.events_out,
                ..progress
            },
            None => progress,
        })
    }

    fn processor_info(&self, def: &StoredDefinition) -> Result<ProcessorInfo, HostError> {
        let partitions_n = self.store.topic(&def.input).map_or(0, |m| m.partitions);
        let mut partitions = Vec::with_capacity(partitions_n as usize);
        for p in 0..partitions_n {
            let mut progress = self.partition_progress(def, p)?;
            progress.high_watermark =
                self.partitions.get(&def.input, p).map(|h| h.visible()).unwrap_or(progress.checkpoint);
            partitions.push(progress);
        }
        let state = if def.error.is_some() {
            ProcessorState::Failed
        } else if def.paused {
            ProcessorState::Paused
        } else {
            ProcessorState::Running
        };
        Ok(ProcessorInfo {
            name: def.name.clone(),
            input: def.input.clone(),
            output: def.output.clone(),
            state,
            version: def.active,
            versions: def.versions.len() as u32,
            error: def.error.clone(),
            lag: partitions.iter().map(|p| p.high_watermark.saturating_sub(p.checkpoint)).sum(),
            events_in: partitions.iter().map(|p| p.events_in).sum(),
            events_out: partitions.iter().map(|p| p.events_out).sum(),
            counters: sum_counters(&partitions),
            partitions,
        })
    }

    /// Read-time processing of one fetch: runs `processor` over the fetched batches (the
    /// first trimmed to start at `start`, ending at `next_offset`) and returns its output
    /// batches, stamped with the base offset of the input batch each came from, and where the
    /// next fetch goes on: it stops after the input batch whose output reaches `out_max`
    /// bytes. At most `read_time_instances_max` instances run or wait for a read's next
    /// fetch; past that, `Busy`. Called from a blocking thread.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        topic: &str,
        partition: u32,
        processor: &ProcessorRef,
        start: u64,
        next_offset: u64,
        fetched: &[u8],
        out_max: usize,
    ) -> Result<(Vec<u8>, u64), HostError> {
        let def = self.definition(&processor.name)?;
        let version = processor.version.unwrap_or(def.active);
        let v = def.version(version).ok_or_else(|| {
            HostError::new(
                ErrorCode::UnknownProcessor,
                format!("processor {:?} has no version {version}", def.name),
            )
        })?;
        let params = merge_params(&v.params, processor.params.as_deref().unwrap_or(&[]));
        let key = ReadKey {
            topic: topic.to_string(),
            partition,
            name: def.name.clone(),
            version,
            params,
            next_offset: start,
        };
        let mut held = match self.read_time.take(&key) {
            Some(held) => held,
            None => self.read_time.hold(|| {
                let module = self.modules.module(&v.module_hash)?;
                module.instantiate(&key.params, &self.modules.limits(v)).map_err(module_error)
            })?,
        };
        let (out, stopped) = read_time::apply(&mut held.instance, &def.name, start, fetched, out_max)?;
        let next_offset = stopped.unwrap_or(next_offset);
        self.read_time.keep(ReadKey { next_offset, ..key }, held);
        Ok((out, next_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_by_name_in_order_of_first_appearance() {
        // Proves the processor-wide counters add up each name over partitions, keep the order
        // names first appear in, and saturate rather than wrap.
        let partition = |p: u32, counters: &[(&str, u64)]| ProcessorPartition {
            partition: p,
            checkpoint: 0,
            high_watermark: 0,
            events_in: 0,
            events_out: 0,
            counters: counters.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        };
        let partitions = [
            partition(0, &[("skipped", 3), ("limit", u64::MAX)]),
            partition(1, &[]),
            partition(2, &[("late", 1), ("skipped", 4), ("limit", 1)]),
        ];
        let want = [("skipped".to_string(), 7), ("limit".to_string(), u64::MAX), ("late".to_string(), 1)];
        assert_eq!(sum_counters(&partitions), want);
        assert!(sum_counters(&[]).is_empty());
    }
}
