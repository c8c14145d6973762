//! The processor host: deploys WebAssembly processors, runs pipelines inside the broker and
//! applies processors to fetches at consume time (DESIGN.md decisions 4 and 5).
//!
//! A processor reads one input topic and writes one output topic with the same partition
//! count: input partition `p` feeds output partition `p`, so keys stay in the partition
//! `partition_for_key` gives them when the processor keeps them. Each input partition runs as
//! one task that processes whole batches in offset order and commits, per chunk of input,
//! the output batches, the input checkpoint and the state snapshot in one sled transaction
//! (`Partition::append_checkpointed`). After a crash a pipeline restarts from its last commit
//! with the state of that commit, so each result is in the output exactly once.
//!
//! *Architecture Invariant*: a failing processor fails alone. A trap, a limit or a guest error
//! marks that processor `failed` (persisted, with the message) and stops its tasks; nothing of
//! the failing chunk is committed, and the broker and other processors go on.
//!
//! Every deploy is a new version; versions keep their module hash and parameters, so a
//! rollback is a change of the active version and a restart of the tasks. A checkpoint
//! records the version whose state it holds; a different version starts from `silt_init`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkyv::{Archive, Deserialize, Serialize};
use silt_runtime::{Instance, Limits as RuntimeLimits, Module, Runtime, RuntimeConfig, RuntimeError};
use silt_storage::{Partition, StorageError, Store, TopicMeta, MODULE_BYTES_MAX};
use silt_wire::batch::{self, BatchBuilder, BatchView};
use silt_wire::signature::{self, hex, module_hash};
use silt_wire::Compression;
use silt_wire::{
    ErrorCode, FetchFrom, ProcessorInfo, ProcessorLimits, ProcessorPartition, ProcessorRef, ProcessorState,
    ProcessorVersion,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ProcessorConfig;
use crate::service::{now_ms, Broker, PartitionHandle};

/// Input bytes one pipeline commit covers at most. A commit is one sled transaction (about
/// 90 µs whatever it holds) plus a state snapshot, so it should cover many batches; 1 MiB is
/// about 10,000 100-byte events, and bounds the output held in memory before the commit.
const COMMIT_INPUT_BYTES_MAX: usize = 1024 * 1024;
/// Versions kept per processor; the oldest are dropped beyond this.
const VERSIONS_MAX: usize = 64;
/// Consume-time instances kept between fetches, so that a stateful processor applied to a
/// read keeps its state from one fetch to the next.
const CONSUME_CACHE_MAX: usize = 64;
/// A cached consume-time instance not reused for this long is dropped.
const CONSUME_IDLE_MS_MAX: u64 = 60_000;

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

fn module_error(e: RuntimeError) -> HostError {
    HostError::new(ErrorCode::InvalidModule, e.to_string())
}

/// A processor as stored (rkyv, like every control-plane record).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
struct Definition {
    name: String,
    input: String,
    output: String,
    versions: Vec<VersionDef>,
    /// The version that runs.
    active: u32,
    paused: bool,
    /// Why it stopped, when it failed.
    error: Option<String>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
struct VersionDef {
    version: u32,
    module_hash: [u8; 32],
    module_bytes: u64,
    params: Vec<(String, String)>,
    from: Option<FetchFrom>,
    /// Resolved against the broker's configuration at deploy.
    limits: ProcessorLimits,
    deployed_ms: i64,
    signed_by: Option<[u8; 32]>,
}

/// A pipeline's progress on one input partition, committed with its output.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
struct Checkpoint {
    next_offset: u64,
    /// The version whose state `state` is.
    version: u32,
    events_in: u64,
    events_out: u64,
    state: Option<Vec<u8>>,
}

fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("in-memory serialization cannot fail").to_vec()
}

fn decode_definition(bytes: &[u8]) -> Result<Definition, HostError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Definition, rkyv::rancor::Error>(&aligned).map_err(|e| {
        HostError::new(ErrorCode::Storage, format!("stored processor definition is corrupt: {e}"))
    })
}

fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, HostError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Checkpoint, rkyv::rancor::Error>(&aligned).map_err(|e| {
        HostError::new(ErrorCode::Storage, format!("stored processor checkpoint is corrupt: {e}"))
    })
}

impl Definition {
    fn version(&self, version: u32) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.version == version)
    }
    fn active(&self) -> &VersionDef {
        self.version(self.active).expect("the active version is kept")
    }
}

/// Counters of one running input partition, read by `status`.
#[derive(Default)]
struct Progress {
    checkpoint: AtomicU64,
    events_in: AtomicU64,
    events_out: AtomicU64,
}

struct Pipeline {
    /// Runs a first-tier build; [`Broker::optimise`] restarts it on the optimised one.
    first_tier: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    progress: Arc<Vec<Progress>>,
}

/// A consume-time instance waiting for the next fetch of the same read.
struct Cached {
    key: ConsumeKey,
    instance: Instance,
    used: Instant,
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct ConsumeKey {
    topic: String,
    partition: u32,
    name: String,
    version: u32,
    params: Vec<(String, String)>,
    /// The offset the next fetch of the same read starts at.
    next_offset: u64,
}

/// The processor host, owned by the [`Broker`].
pub struct Host {
    runtime: Runtime,
    /// First tier: compiles a module not seen before about twice as fast as `runtime`, for
    /// code that runs about half as fast. A new module starts on it, and moves to `runtime`'s
    /// build once that is compiled in the background (DESIGN.md: deploy to first processed
    /// event <= 20 ms; `BENCHMARKS.md` has the figures).
    quick: Runtime,
    config: ProcessorConfig,
    loaded: Mutex<HashMap<[u8; 32], Module>>,
    /// First-tier builds of modules whose optimised build is being compiled; a deploy of the
    /// same module meanwhile reuses it.
    first_tier: Mutex<HashMap<[u8; 32], Module>>,
    running: Mutex<HashMap<String, Pipeline>>,
    /// Serialises deploys, rollbacks, pauses and undeploys, which stop and start tasks.
    control: tokio::sync::Mutex<()>,
    consume_cache: Mutex<Vec<Cached>>,
}

impl Host {
    pub fn new(config: ProcessorConfig) -> anyhow::Result<Host> {
        let runtime = Runtime::new(RuntimeConfig::default())?;
        // On-demand allocation: first-tier instances live for seconds, and the pool's address
        // space reservation is not worth it for them.
        let quick =
            Runtime::new(RuntimeConfig { pooling: false, quick_compile: true, ..RuntimeConfig::default() })?;
        Ok(Host {
            runtime,
            quick,
            config,
            loaded: Mutex::new(HashMap::new()),
            first_tier: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            control: tokio::sync::Mutex::new(()),
            consume_cache: Mutex::new(Vec::new()),
        })
    }

    /// A deploy's limits with unset ones filled from the configuration, which is also the
    /// most a deploy may ask for.
    fn resolve_limits(&self, asked: ProcessorLimits) -> Result<ProcessorLimits, HostError> {
        let c = &self.config;
        let pick = |what: &str, asked: Option<u64>, max: u64| match asked {
            None => Ok(max),
            Some(0) => Err(HostError::new(ErrorCode::InvalidRequest, format!("{what} must be above 0"))),
            Some(v) if v > max => Err(HostError::new(
                ErrorCode::InvalidRequest,
                format!("{what} of {v} is above this broker's limit of {max} ([processors] in its config)"),
            )),
            Some(v) => Ok(v),
        };
        Ok(ProcessorLimits {
            memory_bytes_max: Some(pick(
                "memory limit (bytes)",
                asked.memory_bytes_max,
                c.memory_bytes_max as u64,
            )?),
            call_time_ms_max: Some(pick("time limit (ms)", asked.call_time_ms_max, c.call_time_ms_max)?),
            output_bytes_max: Some(pick(
                "output limit (bytes)",
                asked.output_bytes_max,
                c.output_bytes_max as u64,
            )?),
        })
    }

    /// The runtime limits of a version (its resolved limits, capped by the configuration in
    /// case it was lowered since the deploy).
    fn limits(&self, v: &VersionDef) -> RuntimeLimits {
        let c = &self.config;
        let cap = |asked: Option<u64>, max: u64| asked.unwrap_or(max).min(max);
        RuntimeLimits {
            memory_bytes_max: cap(v.limits.memory_bytes_max, c.memory_bytes_max as u64) as usize,
            call_time_ms_max: cap(v.limits.call_time_ms_max, c.call_time_ms_max),
            output_bytes_max: cap(v.limits.output_bytes_max, c.output_bytes_max as u64) as usize,
            ..RuntimeLimits::default()
        }
    }

    fn artefact_key(&self, hash: &[u8; 32]) -> Vec<u8> {
        let mut key = hash.to_vec();
        key.extend_from_slice(&self.runtime.compatibility_key());
        key
    }

    /// The optimised build of a module, compiled or not: from memory, else the cached
    /// artefact when it loads. `None` when neither has it.
    fn cached_module(&self, store: &Store, hash: &[u8; 32]) -> Result<Option<Module>, HostError> {
        let loaded = self.loaded.lock().expect("module map").get(hash).cloned();
        if loaded.is_some() {
            return Ok(loaded);
        }
        let module = match store.artefact(&self.artefact_key(hash))?.map(|a| self.runtime.load(&a)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(module = %hex(hash), error = %e, "cached artefact does not load; compiling again");
                return Ok(None);
            }
            None => return Ok(None),
        };
        self.loaded.lock().expect("module map").insert(*hash, module.clone());
        Ok(Some(module))
    }

    /// Compiles the optimised build of `wasm`, caches its artefact and keeps it loaded.
    fn build(&self, store: &Store, hash: &[u8; 32], wasm: &[u8]) -> Result<Module, HostError> {
        let artefact = self.runtime.compile(wasm).map_err(module_error)?;
        let module = self.runtime.load(&artefact).map_err(module_error)?;
        store.put_artefact(&self.artefact_key(hash), &artefact)?;
        self.loaded.lock().expect("module map").insert(*hash, module.clone());
        Ok(module)
    }

    /// The optimised build of a stored module: cached, else compiled from the stored bytes.
    fn module(&self, store: &Store, hash: &[u8; 32]) -> Result<Module, HostError> {
        if let Some(m) = self.cached_module(store, hash)? {
            return Ok(m);
        }
        let wasm = store
            .module(hash)?
            .ok_or_else(|| HostError::new(ErrorCode::Storage, format!("module {} is missing", hex(hash))))?;
        self.build(store, hash, &wasm)
    }
}

fn check_name(name: &str) -> Result<(), HostError> {
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

/// A deploy request, as decoded.
pub struct Deploy {
    pub name: String,
    pub input: String,
    pub output: String,
    pub params: Vec<(String, String)>,
    pub from: Option<FetchFrom>,
    pub limits: ProcessorLimits,
    pub wasm: bytes::Bytes,
}

impl Broker {
    fn host(&self) -> &Host {
        &self.processors
    }

    fn definition(&self, name: &str) -> Result<Definition, HostError> {
        match self.store.processor(name)? {
            Some(bytes) => decode_definition(&bytes),
            None => Err(HostError::new(ErrorCode::UnknownProcessor, format!("no processor named {name:?}"))),
        }
    }

    fn save(&self, def: &Definition) -> Result<(), HostError> {
        self.store.put_processor(&def.name, &encode(def))?;
        self.store.flush()?;
        Ok(())
    }

    /// Starts the pipelines of every stored processor that is neither paused nor failed.
    pub fn start_processors(self: &Arc<Self>) {
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
            if let Err(e) = self.start_pipeline(&def) {
                tracing::error!(processor = %name, error = %e.message, "processor not started");
                self.fail(&name, &e.message);
            }
        }
    }

    /// Deploys a new processor or a new version of one.
    pub async fn deploy(self: &Arc<Self>, d: Deploy) -> Result<ProcessorInfo, HostError> {
        let _control = self.host().control.lock().await;
        check_name(&d.name)?;
        if d.input == d.output {
            return Err(HostError::new(
                ErrorCode::InvalidRequest,
                format!("a processor cannot write to its own input topic {:?}", d.input),
            ));
        }
        if d.wasm.len() > MODULE_BYTES_MAX {
            return Err(HostError::new(
                ErrorCode::TooLarge,
                format!("module of {} bytes exceeds the limit of {MODULE_BYTES_MAX} bytes", d.wasm.len()),
            ));
        }
        let signed_by = self.check_signature(&d.wasm)?;
        let limits = self.host().resolve_limits(d.limits)?;
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

        // Compile, store and try the module (its silt_init checks the parameters) before
        // anything else changes, so a bad module leaves everything as it was.
        let hash = module_hash(&d.wasm);
        let params = merge_params(&[], &d.params);
        let this = self.clone();
        let wasm = d.wasm.clone();
        let params_for_init = params.clone();
        let trial = VersionDef {
            version: 0,
            module_hash: hash,
            module_bytes: d.wasm.len() as u64,
            params: params.clone(),
            from: d.from,
            limits,
            deployed_ms: now_ms(),
            signed_by,
        };
        let trial_limits = self.host().limits(&trial);
        // The module to start with: the optimised build when this broker has it (loaded, or
        // its artefact cached), else a quick first-tier build; `optimise` then compiles the
        // optimised one in the background.
        let (first, optimise) = tokio::task::spawn_blocking(move || -> Result<(Module, bool), HostError> {
            let host = this.host();
            let known = host.cached_module(&this.store, &hash)?;
            let quick = host.first_tier.lock().expect("module map").get(&hash).cloned();
            let (module, optimise) = match (known, quick) {
                (Some(m), _) => (m, false),
                // Its optimised build is on the way already.
                (None, Some(m)) => (m, false),
                (None, None) => (host.quick.compile_module(&wasm).map_err(module_error)?, true),
            };
            module.instantiate(&params_for_init, &trial_limits).map_err(module_error)?;
            this.store.put_module(&hash, &wasm)?;
            Ok((module, optimise))
        })
        .await
        .map_err(|e| HostError::new(ErrorCode::Storage, format!("deploy task failed: {e}")))??;

        if self.store.topic(&d.output).is_none() {
            let meta = TopicMeta {
                name: d.output.clone(),
                partitions: input.partitions,
                retention_ms: None,
                retention_bytes: None,
                created_ms: now_ms(),
            };
            match self.store.create_topic(meta) {
                Ok(()) | Err(StorageError::TopicExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.topic_created(&d.output);
        }

        self.stop_pipeline(&d.name).await;
        let mut def = existing.unwrap_or(Definition {
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
        def.versions.push(VersionDef { version, ..trial });
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
        self.save(&def)?;
        let first_tier = !self.host().loaded.lock().expect("module map").contains_key(&hash);
        self.start_pipeline_with(&def, first_tier.then_some(first.clone()))?;
        tracing::info!(processor = %def.name, version, input = %def.input, output = %def.output, module = %hex(&hash), first_tier, "processor deployed");
        if optimise {
            self.host().first_tier.lock().expect("module map").insert(hash, first);
            tokio::spawn(self.clone().optimise(hash, d.wasm));
        }
        self.processor_info(&def)
    }

    /// Compiles the optimised build of a module deployed on the first tier, caches it, and
    /// restarts every processor still running a first-tier build of it. The restart goes
    /// through the last commit (checkpoint and state snapshot), so it is as exactly-once as
    /// any restart, and the output is the same bytes on either build.
    async fn optimise(self: Arc<Self>, hash: [u8; 32], wasm: bytes::Bytes) {
        let this = self.clone();
        let built =
            tokio::task::spawn_blocking(move || this.host().build(&this.store, &hash, &wasm).map(drop)).await;
        let failed = match built {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.message),
            Err(e) => Some(format!("optimised build task failed: {e}")),
        };
        let _control = self.host().control.lock().await;
        self.host().first_tier.lock().expect("module map").remove(&hash);
        if let Some(e) = failed {
            // Processors stay on the first tier; a restart compiles the optimised build.
            return tracing::error!(module = %hex(&hash), error = %e, "optimised build failed");
        }
        let names: Vec<String> = self
            .host()
            .running
            .lock()
            .expect("pipelines")
            .iter()
            .filter(|(_, p)| p.first_tier)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Ok(def) = self.definition(&name) else { continue };
            if def.paused || def.error.is_some() || def.active().module_hash != hash {
                continue;
            }
            self.stop_pipeline(&name).await;
            match self.start_pipeline(&def) {
                Ok(()) => tracing::info!(processor = %name, "processor moved to its optimised build"),
                Err(e) => self.fail(&name, &e.message),
            }
        }
    }

    fn check_signature(&self, wasm: &[u8]) -> Result<Option<[u8; 32]>, HostError> {
        let untrusted = |e: signature::SignatureError| HostError::new(ErrorCode::Untrusted, e.to_string());
        if !self.host().config.trusted_keys.is_empty() {
            return signature::verify(wasm, &self.host().config.trusted_keys).map(Some).map_err(untrusted);
        }
        // No keys configured: unsigned modules are fine, but a signature that is present must
        // still hold, so a tampered module is never taken for a signed one.
        match signature::split(wasm) {
            Ok((_, Some(sig))) => signature::verify(wasm, &[sig.public_key]).map(Some).map_err(untrusted),
            Ok((_, None)) => Ok(None),
            Err(signature::SignatureError::NotWasm) => Err(HostError::new(
                ErrorCode::InvalidModule,
                "module is not WebAssembly (no \\0asm magic); build it for wasm32-unknown-unknown",
            )),
            Err(e) => Err(HostError::new(ErrorCode::InvalidModule, e.to_string())),
        }
    }

    /// Points every input partition's checkpoint at `from`, with no state.
    fn reset_checkpoints(&self, def: &Definition, from: FetchFrom, version: u32) -> Result<(), HostError> {
        let meta = self.store.topic(&def.input).ok_or_else(|| {
            HostError::new(ErrorCode::UnknownTopic, format!("input topic {:?} is gone", def.input))
        })?;
        for p in 0..meta.partitions {
            let handle = self.partition(&def.input, p)?;
            let next_offset = match from {
                FetchFrom::Earliest => handle.log.log_start(),
                FetchFrom::Latest => handle.visible(),
                FetchFrom::Offset(o) => o.clamp(handle.log.log_start(), handle.visible()),
                FetchFrom::Timestamp(t) => handle.log.offset_for_time(t)?.min(handle.visible()),
            };
            let previous = match self.store.checkpoint(&def.name, p)? {
                Some(b) => decode_checkpoint(&b)?,
                None => Checkpoint::default(),
            };
            let cp = Checkpoint { next_offset, version, state: None, ..previous };
            self.store.put_checkpoint(&def.name, p, &encode(&cp))?;
        }
        Ok(())
    }

    /// Starts one task per input partition for the active version.
    fn start_pipeline(self: &Arc<Self>, def: &Definition) -> Result<(), HostError> {
        self.start_pipeline_with(def, None)
    }

    /// [`Broker::start_pipeline`] on `module` (a first-tier build) instead of the cached one.
    fn start_pipeline_with(
        self: &Arc<Self>,
        def: &Definition,
        module: Option<Module>,
    ) -> Result<(), HostError> {
        let meta = self.store.topic(&def.input).ok_or_else(|| {
            HostError::new(ErrorCode::UnknownTopic, format!("input topic {:?} is gone", def.input))
        })?;
        let active = def.active().clone();
        let first_tier = module.is_some();
        let module = match module {
            Some(m) => m,
            None => self.host().module(&self.store, &active.module_hash)?,
        };
        let (stop, stop_rx) = watch::channel(false);
        let progress: Arc<Vec<Progress>> =
            Arc::new((0..meta.partitions).map(|_| Progress::default()).collect());
        let mut tasks = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let input = self.partition(&def.input, p)?;
            let output = self.partition(&def.output, p)?;
            let cp = match self.store.checkpoint(&def.name, p)? {
                Some(b) => decode_checkpoint(&b)?,
                None => Checkpoint { version: active.version, ..Checkpoint::default() },
            };
            let pr = &progress[p as usize];
            pr.checkpoint.store(cp.next_offset, Ordering::Relaxed);
            pr.events_in.store(cp.events_in, Ordering::Relaxed);
            pr.events_out.store(cp.events_out, Ordering::Relaxed);
            let task = PartitionTask {
                broker: self.clone(),
                name: def.name.clone(),
                partition: p,
                version: active.version,
                params: active.params.clone(),
                limits: self.host().limits(&active),
                module: module.clone(),
                input,
                output,
                progress: progress.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(task.run(cp)));
        }
        self.metrics.processor_restarts.with_label_values(&[&def.name]).inc();
        self.host()
            .running
            .lock()
            .expect("pipelines")
            .insert(def.name.clone(), Pipeline { first_tier, stop, tasks, progress });
        Ok(())
    }

    /// Stops a processor's tasks and waits until none can commit any more.
    ///
    /// The entry stays in `running` until its tasks have ended, so a status read meanwhile
    /// shows the tasks' progress (durable commits only) rather than the stored checkpoint,
    /// which may hold a commit not yet flushed.
    async fn stop_pipeline(&self, name: &str) {
        let tasks = match self.host().running.lock().expect("pipelines").get_mut(name) {
            Some(p) => {
                let _ = p.stop.send(true);
                std::mem::take(&mut p.tasks)
            }
            None => return,
        };
        for t in tasks {
            let _ = t.await;
        }
        self.host().running.lock().expect("pipelines").remove(name);
    }

    /// Marks a processor failed and stops its other tasks (they notice at their next chunk).
    fn fail(&self, name: &str, message: &str) {
        tracing::error!(processor = %name, error = %message, "processor failed and is stopped");
        self.metrics.processor_errors.with_label_values(&[name]).inc();
        if let Some(p) = self.host().running.lock().expect("pipelines").get(name) {
            let _ = p.stop.send(true);
        }
        match self.definition(name) {
            Ok(mut def) => {
                def.error = Some(message.to_string());
                if let Err(e) = self.save(&def) {
                    tracing::error!(processor = %name, error = %e.message, "cannot record the failure");
                }
            }
            Err(e) => tracing::error!(processor = %name, error = %e.message, "cannot record the failure"),
        }
    }

    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.host().control.lock().await;
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
        self.host().module(&self.store, &hash)?;
        self.stop_pipeline(name).await;
        def.active = previous;
        def.error = None;
        self.save(&def)?;
        if !def.paused {
            self.start_pipeline(&def)?;
        }
        tracing::info!(processor = %name, version = previous, "processor rolled back");
        self.processor_info(&def)
    }

    pub async fn pause(self: &Arc<Self>, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.host().control.lock().await;
        let mut def = self.definition(name)?;
        self.stop_pipeline(name).await;
        def.paused = true;
        self.save(&def)?;
        self.processor_info(&def)
    }

    pub async fn resume(self: &Arc<Self>, name: &str) -> Result<ProcessorInfo, HostError> {
        let _control = self.host().control.lock().await;
        let mut def = self.definition(name)?;
        self.stop_pipeline(name).await;
        def.paused = false;
        def.error = None;
        self.save(&def)?;
        self.start_pipeline(&def)?;
        self.processor_info(&def)
    }

    pub async fn undeploy(self: &Arc<Self>, name: &str) -> Result<(), HostError> {
        let _control = self.host().control.lock().await;
        self.definition(name)?;
        self.stop_pipeline(name).await;
        self.store.delete_processor(name)?;
        self.store.flush()?;
        tracing::info!(processor = %name, "processor undeployed");
        Ok(())
    }

    /// Sets the processor state and lag gauges from the stored definitions.
    pub(crate) fn refresh_processor_metrics(&self) {
        let m = &self.metrics;
        m.processor_state.reset();
        m.processor_lag.reset();
        let Ok(list) = self.list_processors() else { return };
        for p in list {
            for state in ["running", "paused", "failed"] {
                let on = state == state_label(p.state);
                m.processor_state.with_label_values(&[p.name.as_str(), state]).set(i64::from(on));
            }
            m.processor_lag.with_label_values(&[&p.name]).set(p.lag as i64);
        }
    }

    pub fn processor_status(&self, name: &str) -> Result<ProcessorInfo, HostError> {
        self.processor_info(&self.definition(name)?)
    }

    pub fn list_processors(&self) -> Result<Vec<ProcessorInfo>, HostError> {
        let mut out = Vec::new();
        for (_, bytes) in self.store.processors()? {
            out.push(self.processor_info(&decode_definition(&bytes)?)?);
        }
        Ok(out)
    }

    pub fn processor_versions(&self, name: &str) -> Result<Vec<ProcessorVersion>, HostError> {
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
                from: v.from,
                limits: v.limits,
                deployed_ms: v.deployed_ms,
                signed_by: v.signed_by.map(|k| hex(&k)),
            })
            .collect())
    }

    fn processor_info(&self, def: &Definition) -> Result<ProcessorInfo, HostError> {
        let partitions_n = self.store.topic(&def.input).map_or(0, |m| m.partitions);
        let running = self.host().running.lock().expect("pipelines");
        let progress = running.get(&def.name).map(|p| p.progress.clone());
        drop(running);
        let mut partitions = Vec::with_capacity(partitions_n as usize);
        for p in 0..partitions_n {
            let (checkpoint, events_in, events_out) =
                match progress.as_ref().and_then(|pr| pr.get(p as usize)) {
                    Some(pr) => (
                        pr.checkpoint.load(Ordering::Relaxed),
                        pr.events_in.load(Ordering::Relaxed),
                        pr.events_out.load(Ordering::Relaxed),
                    ),
                    None => match self.store.checkpoint(&def.name, p)? {
                        Some(b) => {
                            let cp = decode_checkpoint(&b)?;
                            (cp.next_offset, cp.events_in, cp.events_out)
                        }
                        None => (0, 0, 0),
                    },
                };
            let high_watermark = self.partition(&def.input, p).map(|h| h.visible()).unwrap_or(checkpoint);
            partitions.push(ProcessorPartition {
                partition: p,
                checkpoint,
                high_watermark,
                events_in,
                events_out,
            });
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
            partitions,
        })
    }

    /// Consume-time processing of one fetch: runs `processor` over the fetched batches (the
    /// first trimmed to start at `start`) and returns its output batches, stamped with the
    /// base offset of the input batch each came from. Called from a blocking thread.
    pub fn apply_processor(
        &self,
        topic: &str,
        partition: u32,
        processor: &ProcessorRef,
        start: u64,
        next_offset: u64,
        fetched: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        let def = self.definition(&processor.name)?;
        let version = processor.version.unwrap_or(def.active);
        let v = def.version(version).ok_or_else(|| {
            HostError::new(
                ErrorCode::UnknownProcessor,
                format!("processor {:?} has no version {version}", def.name),
            )
        })?;
        let params = merge_params(&v.params, processor.params.as_deref().unwrap_or(&[]));
        let key = ConsumeKey {
            topic: topic.to_string(),
            partition,
            name: def.name.clone(),
            version,
            params: params.clone(),
            next_offset: start,
        };
        let cached = {
            let mut cache = self.host().consume_cache.lock().expect("consume cache");
            cache.retain(|c| c.used.elapsed() < Duration::from_millis(CONSUME_IDLE_MS_MAX));
            cache.iter().position(|c| c.key == key).map(|i| cache.swap_remove(i).instance)
        };
        let mut instance = match cached {
            Some(i) => i,
            None => {
                let module = self.host().module(&self.store, &v.module_hash)?;
                module.instantiate(&params, &self.host().limits(v)).map_err(module_error)?
            }
        };
        let mut out = Vec::new();
        for view in batch::split_batches(fetched) {
            let view = view.map_err(|e| HostError::new(ErrorCode::Storage, format!("stored batch: {e}")))?;
            let trimmed;
            let input: &[u8] = if view.base_offset() < start {
                trimmed = trim_batch(view, start)?;
                match &trimmed {
                    Some(b) => b,
                    None => continue,
                }
            } else {
                view.as_bytes()
            };
            let base = view.base_offset().max(start);
            let produced = instance.process(input).map_err(|e| {
                HostError::new(
                    ErrorCode::InvalidModule,
                    format!("processor {:?} failed at offset {base}: {e}", def.name),
                )
            })?;
            if let Some(b) = produced {
                let mut b = batch::compress(b, Compression::Lz4);
                batch::stamp(&mut b, base, BatchView::new(input).map(|v| v.append_time_ms()).unwrap_or(0));
                out.extend_from_slice(&b);
            }
        }
        let mut cache = self.host().consume_cache.lock().expect("consume cache");
        if cache.len() >= CONSUME_CACHE_MAX {
            if let Some(oldest) = cache.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i) {
                cache.swap_remove(oldest);
            }
        }
        cache.push(Cached { key: ConsumeKey { next_offset, ..key }, instance, used: Instant::now() });
        Ok(out)
    }
}

fn state_label(state: ProcessorState) -> &'static str {
    match state {
        ProcessorState::Running => "running",
        ProcessorState::Paused => "paused",
        ProcessorState::Failed => "failed",
    }
}

/// The records of `view` at or after `start`, as a batch of their own (based at `start`).
/// `None` when none are. Only reads that start inside a batch need it, so the re-encoding
/// stays off the pipeline's path, which always starts at batch boundaries.
fn trim_batch(view: BatchView<'_>, start: u64) -> Result<Option<Vec<u8>>, HostError> {
    let plain = batch::decompress(view.as_bytes())
        .map_err(|e| HostError::new(ErrorCode::Storage, format!("stored batch: {e}")))?;
    let plain = BatchView::new(&plain)
        .map_err(|e| HostError::new(ErrorCode::Storage, format!("stored batch: {e}")))?;
    let mut builder = BatchBuilder::with_capacity(plain.as_bytes().len());
    for r in plain.records().filter(|r| r.offset >= start) {
        let headers: Vec<(&[u8], &[u8])> = r.headers().collect();
        builder
            .push(r.timestamp_ms, r.key, r.value, &headers)
            .map_err(|e| HostError::new(ErrorCode::Storage, format!("re-encoding a stored batch: {e}")))?;
    }
    if builder.is_empty() {
        return Ok(None);
    }
    let mut bytes = builder.finish(0, 0);
    batch::stamp(&mut bytes, start, plain.append_time_ms());
    Ok(Some(bytes))
}

/// One input partition of a running pipeline.
struct PartitionTask {
    broker: Arc<Broker>,
    name: String,
    partition: u32,
    version: u32,
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
    ticket: u64,
}

impl PartitionTask {
    async fn run(mut self, checkpoint: Checkpoint) {
        let started = Instant::now();
        let setup = {
            let module = self.module.clone();
            let params = self.params.clone();
            let limits = self.limits.clone();
            let state = (checkpoint.version == self.version).then(|| checkpoint.state.clone()).flatten();
            tokio::task::spawn_blocking(move || -> Result<Instance, RuntimeError> {
                let mut instance = module.instantiate(&params, &limits)?;
                if let Some(s) = state {
                    instance.restore(&s)?;
                }
                Ok(instance)
            })
            .await
        };
        let mut instance = match setup {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => return self.broker.fail(&self.name, &format!("partition {}: {e}", self.partition)),
            Err(e) => {
                return self
                    .broker
                    .fail(&self.name, &format!("partition {}: start task failed: {e}", self.partition))
            }
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
            let limit = self.input.visible();
            let broker = self.broker.clone();
            let name = self.name.clone();
            let partition = self.partition;
            let input = self.input.log.clone();
            let output = self.output.log.clone();
            let cp = checkpoint.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let result =
                    process_chunk(&broker, &name, partition, &mut instance, &input, &output, cp, limit);
                (instance, result)
            })
            .await;
            let (returned, result) = match chunk {
                Ok(v) => v,
                Err(e) => {
                    return self
                        .broker
                        .fail(&self.name, &format!("partition {partition}: chunk task failed: {e}"))
                }
            };
            instance = returned;
            let chunk = match result {
                Ok(c) => c,
                Err(message) => return self.broker.fail(&self.name, &message),
            };
            let durability = self.broker.durability();
            if durability.acks_wait_for_flush() {
                if let Err(e) = durability.wait(chunk.ticket).await {
                    tracing::error!(processor = %self.name, error = %e, "output not durable; pipeline stops");
                    return;
                }
            }
            if let Some(end) = chunk.output_end {
                self.output.publish(end);
            }
            let metrics = &self.broker.metrics;
            metrics
                .processor_events_in
                .with_label_values(&[&self.name])
                .inc_by(chunk.checkpoint.events_in.saturating_sub(checkpoint.events_in));
            metrics
                .processor_events_out
                .with_label_values(&[&self.name])
                .inc_by(chunk.checkpoint.events_out.saturating_sub(checkpoint.events_out));
            checkpoint = chunk.checkpoint;
            let pr = &self.progress[self.partition as usize];
            pr.checkpoint.store(checkpoint.next_offset, Ordering::Relaxed);
            pr.events_in.store(checkpoint.events_in, Ordering::Relaxed);
            pr.events_out.store(checkpoint.events_out, Ordering::Relaxed);
        }
    }
}

/// Reads input from the checkpoint, runs it through the instance and commits the output with
/// the new checkpoint in one transaction. Errors are messages for the processor's status.
#[allow(clippy::too_many_arguments)]
fn process_chunk(
    broker: &Broker,
    name: &str,
    partition: u32,
    instance: &mut Instance,
    input: &Partition,
    output: &Partition,
    mut checkpoint: Checkpoint,
    limit: u64,
) -> Result<Chunk, String> {
    let at = |e: &dyn std::fmt::Display| format!("partition {partition}: {e}");
    let log_start = input.log_start();
    if checkpoint.next_offset < log_start {
        tracing::warn!(processor = %name, partition, skipped = log_start - checkpoint.next_offset,
            "retention removed unprocessed input; continuing at the log start");
        checkpoint.next_offset = log_start;
    }
    let mut bytes = Vec::new();
    input.read(checkpoint.next_offset, COMMIT_INPUT_BYTES_MAX, limit, &mut bytes).map_err(|e| at(&e))?;
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    for view in batch::split_batches(&bytes) {
        let view = view.map_err(|e| at(&e))?;
        let trimmed;
        let batch_bytes: &[u8] = if view.base_offset() < checkpoint.next_offset {
            // Only after retention moved the start, or a checkpoint set by offset: pipelines
            // otherwise always stop at batch boundaries.
            trimmed = trim_batch(view, checkpoint.next_offset).map_err(|e| at(&e.message))?;
            match &trimmed {
                Some(b) => b,
                None => continue,
            }
        } else {
            view.as_bytes()
        };
        let records = view.next_offset() - view.base_offset().max(checkpoint.next_offset);
        let timer = broker.metrics.processor_batch_seconds.with_label_values(&[name]).start_timer();
        let _spans = if silt_telemetry::enabled() {
            let traceparents = crate::trace_context::traceparents(batch_bytes);
            silt_telemetry::child_spans!(traceparents, "silt.process", processor = %name, partition)
        } else {
            Vec::new()
        };
        let produced = instance
            .process(batch_bytes)
            .map_err(|e| format!("partition {partition}, input offset {}: {e}", view.base_offset()))?;
        timer.observe_duration();
        if let Some(out) = produced {
            checkpoint.events_out += u64::from(batch::peek_header(&out).0);
            // Stored compressed, as producers store theirs: sensor output shrinks several
            // times, and sled writes far fewer bytes (an uncompressed 50 KB batch became a
            // blob file of its own in `silt-loadtest pipeline` profiles).
            outputs.push(batch::compress(out, Compression::Lz4));
        }
        checkpoint.events_in += records;
        checkpoint.next_offset = view.next_offset();
    }
    checkpoint.state = instance.snapshot().map_err(|e| at(&e))?;
    let mut slices: Vec<&mut [u8]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
    let offsets = output
        .append_checkpointed(&mut slices, now_ms(), name, partition, &encode(&checkpoint))
        .map_err(|e| at(&e))?;
    let output_end =
        offsets.last().zip(outputs.last()).map(|(base, b)| base + u64::from(batch::peek_header(b).0));
    let ticket = broker.durability().register();
    Ok(Chunk { checkpoint, output_end, ticket })
}
