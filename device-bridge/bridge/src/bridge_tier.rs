//! The bridge tier (docs/processor-abi.md, "Tiers"): processors the broker says the bridges run
//! (`silt processor deploy --tier bridge`) on device readings before they are appended. What a
//! processor returns is appended to the topic of the readings it took, in their place.
//!
//! Two parts. [`watch`] is a task that asks the broker for the list every registry TTL,
//! fetches the module of each new version, checks its bytes against the hash the broker
//! stored at deploy (where it also checked the module's signature, `silt_init` and size, as for
//! a processor it runs itself), compiles it with the same runtime and limits as the broker
//! (`silt-runtime`, default limits) and publishes the set. [`Processors`] lives in the
//! appender: at each round it takes the latest set, runs each topic's processor once over the
//! round's readings of that topic (one batch, in order), and gives the outputs and the states
//! to journal with the round.
//!
//! Exactly-once holds across a bridge crash because a processor's state is journaled in the
//! same durable write as the round its outputs are in (`Journal::begin`): after a restart the
//! journaled rounds are sent again as they were, and the processor restarts from the state
//! after the last of them, to which the devices resend everything not acked since. A new
//! version (or a rollback to an older one) starts from fresh state. A processor that fails is
//! stopped in this bridge, its readings are appended unprocessed (nothing is lost) and the
//! failure is logged.

#[cfg(not(feature = "tier"))]
pub use off::{watch, Processors, Set};
#[cfg(feature = "tier")]
pub use tier::{watch, Processors, Set, Spec};

use crate::appender::OutRecord;

/// What one round's processing made.
#[derive(Default)]
pub struct Processed {
    /// The outputs, in place of the readings of `topics`.
    pub outputs: Vec<OutRecord>,
    /// The topics whose readings were processed (their records are `outputs`).
    pub topics: Vec<String>,
    /// Each processor that ran, with its version and state to journal with the round.
    pub states: Vec<(String, u32, Vec<u8>)>,
    /// Each processor that ran: records in and out.
    pub counts: Vec<(String, u64, u64)>,
    /// Processors that failed (and were stopped) in this round.
    pub failed: Vec<String>,
}

/// Without the `tier` feature (the fuzz build, which must not compile a WebAssembly engine):
/// no processor ever runs.
#[cfg(not(feature = "tier"))]
mod off {
    use super::Processed;
    use crate::appender::OutRecord;

    pub type Set = Option<std::sync::Arc<Vec<()>>>;

    pub async fn watch(_: silt_client::Client, _: std::time::Duration, _: tokio::sync::watch::Sender<Set>) {}

    pub struct Processors;

    impl Processors {
        pub fn new(
            _: Option<tokio::sync::watch::Receiver<Set>>,
            _: std::collections::HashMap<String, (u32, Vec<u8>)>,
        ) -> Processors {
            Processors
        }

        pub async fn ready(&mut self) {}

        pub fn process<'a>(&mut self, _: impl Iterator<Item = &'a OutRecord> + Clone) -> Processed {
            Processed::default()
        }
    }
}

#[cfg(feature = "tier")]
mod tier {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use silt_client::Client;
    use silt_runtime::{Instance, Limits, Module, Runtime, RuntimeConfig};
    use silt_wire::batch;
    use silt_wire::signature::{hex, module_hash};
    use silt_wire::{BatchBuilder, BridgeProcessorInfo};
    use tokio::sync::watch;

    use super::Processed;
    use crate::appender::OutRecord;

    /// A processor to run, compiled.
    #[derive(Clone)]
    pub struct Spec {
        pub info: BridgeProcessorInfo,
        pub module: Module,
    }

    /// The set of processors the bridges run, as [`watch`] publishes it; `None` until its first
    /// look at the broker.
    pub type Set = Option<Arc<Vec<Spec>>>;

    /// How long the appender waits for the first look before its first round.
    const FIRST_LOOK_WAIT: Duration = Duration::from_secs(10);

    /// Asks the broker for the bridge-tier processors every `every`, and publishes the set on
    /// `tx` when it changed (the first time whatever it found, even after an error, so that the
    /// bridge does not wait on it). Runs until the receivers are gone.
    pub async fn watch(client: Client, every: Duration, tx: watch::Sender<Set>) {
        let mut runtime: Option<Runtime> = None;
        let mut compiled: HashMap<(String, u32), Module> = HashMap::new();
        let mut published: Option<Vec<(String, u32)>> = None;
        loop {
            let set = match look(&client, &mut runtime, &mut compiled).await {
                Ok(set) => Some(set),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the bridge-tier processors; keeping the ones running");
                    published.is_none().then(Vec::new)
                }
            };
            if let Some(set) = set {
                let names: Vec<(String, u32)> =
                    set.iter().map(|s| (s.info.name.clone(), s.info.version)).collect();
                if published.as_ref() != Some(&names) {
                    if !names.is_empty() || published.is_some() {
                        tracing::info!(processors = ?names, "bridge-tier processors changed");
                    }
                    compiled.retain(|k, _| names.contains(k));
                    published = Some(names);
                    if tx.send(Some(Arc::new(set))).is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One look at the broker's list: each processor with its module, compiled once per version.
    async fn look(
        client: &Client,
        runtime: &mut Option<Runtime>,
        compiled: &mut HashMap<(String, u32), Module>,
    ) -> anyhow::Result<Vec<Spec>> {
        let list = client.list_bridge_processors().await?;
        let mut set = Vec::with_capacity(list.len());
        for info in list {
            let key = (info.name.clone(), info.version);
            if let Some(module) = compiled.get(&key) {
                set.push(Spec { info, module: module.clone() });
                continue;
            }
            let (_, wasm) = client.fetch_bridge_processor(&info.name, info.version).await?;
            let hash = hex(&module_hash(&wasm));
            anyhow::ensure!(
                hash == info.module_sha256,
                "bridge-tier processor {} version {}: the module hashes to {hash}, not {}",
                info.name,
                info.version,
                info.module_sha256
            );
            if runtime.is_none() {
                // No pooling: a bridge runs a few processors, and needs no address space kept for
                // more.
                let config = RuntimeConfig { pooling: false, instances_max: 16, ..RuntimeConfig::default() };
                *runtime = Some(Runtime::new(config)?);
            }
            let engine = runtime.clone().expect("made above");
            let module = tokio::task::spawn_blocking(move || engine.compile_module(&wasm)).await??;
            compiled.insert(key, module.clone());
            set.push(Spec { info, module });
        }
        Ok(set)
    }

    struct Running {
        name: String,
        version: u32,
        instance: Instance,
        stateful: bool,
    }

    /// The processors running in this bridge's appender, by the topic they take.
    pub struct Processors {
        updates: Option<watch::Receiver<Set>>,
        running: HashMap<String, Running>,
        /// States journaled by an earlier run, by processor name: taken when it starts.
        saved: HashMap<String, (u32, Vec<u8>)>,
    }

    impl Processors {
        /// Processors fed by `updates` (none without), starting from the `saved` states.
        pub fn new(
            updates: Option<watch::Receiver<Set>>,
            saved: HashMap<String, (u32, Vec<u8>)>,
        ) -> Processors {
            Processors { updates, running: HashMap::new(), saved }
        }

        /// Waits (at most [`FIRST_LOOK_WAIT`]) for the first look at the broker, so that no
        /// reading is appended unprocessed because the bridge had not asked yet.
        pub async fn ready(&mut self) {
            let Some(updates) = &mut self.updates else { return };
            let first = match tokio::time::timeout(FIRST_LOOK_WAIT, updates.wait_for(Option::is_some)).await {
                Ok(Ok(set)) => Some(set.clone()),
                _ => None,
            };
            match first {
                Some(set) => self.apply(set),
                None => tracing::warn!("no answer about bridge-tier processors yet; appending without them"),
            }
        }

        /// Takes the latest set, if it changed: starts new processors and versions (from a saved
        /// state of that version, or fresh), and stops those no longer listed.
        fn refresh(&mut self) {
            let Some(updates) = &mut self.updates else { return };
            if !updates.has_changed().unwrap_or(false) {
                return;
            }
            let set = updates.borrow_and_update().clone();
            self.apply(set);
        }

        fn apply(&mut self, set: Set) {
            let Some(set) = set else { return };
            let mut next = HashMap::new();
            for spec in set.iter() {
                let topic = spec.info.topic.clone();
                if next.contains_key(&topic) {
                    tracing::warn!(processor = %spec.info.name, %topic, "another bridge-tier processor runs on this topic; not started");
                    continue;
                }
                match self.running.remove(&topic) {
                    Some(r) if r.name == spec.info.name && r.version == spec.info.version => {
                        next.insert(topic, r);
                    }
                    _ => match self.start(spec) {
                        Ok(r) => {
                            next.insert(topic, r);
                        }
                        Err(e) => {
                            tracing::error!(processor = %spec.info.name, error = %e, "bridge-tier processor did not start; its readings go unprocessed")
                        }
                    },
                }
            }
            self.running = next;
        }

        fn start(&mut self, spec: &Spec) -> Result<Running, silt_runtime::RuntimeError> {
            let mut instance = spec.module.instantiate(&spec.info.params, &Limits::default())?;
            let stateful = spec.module.is_stateful();
            match self.saved.remove(&spec.info.name) {
                Some((version, state)) if version == spec.info.version && stateful => {
                    instance.restore(&state)?;
                    tracing::info!(processor = %spec.info.name, version, bytes = state.len(), "bridge-tier processor restored its journaled state");
                }
                _ => {}
            }
            tracing::info!(processor = %spec.info.name, version = spec.info.version, topic = %spec.info.topic, "bridge-tier processor started");
            Ok(Running { name: spec.info.name.clone(), version: spec.info.version, instance, stateful })
        }

        /// Runs each topic's processor over the round's `records` of that topic.
        pub fn process<'a>(&mut self, records: impl Iterator<Item = &'a OutRecord> + Clone) -> Processed {
            self.refresh();
            let mut out = Processed::default();
            let mut failed = Vec::new();
            for (topic, r) in &mut self.running {
                let inputs: Vec<&OutRecord> = records.clone().filter(|rec| *rec.topic == **topic).collect();
                if inputs.is_empty() {
                    continue;
                }
                match run(r, topic, &inputs) {
                    Ok((outputs, state)) => {
                        out.counts.push((r.name.clone(), inputs.len() as u64, outputs.len() as u64));
                        out.outputs.extend(outputs);
                        out.topics.push(topic.clone());
                        if let Some(state) = state {
                            out.states.push((r.name.clone(), r.version, state));
                        }
                    }
                    Err(e) => {
                        tracing::error!(processor = %r.name, version = r.version, error = %e, "bridge-tier processor failed; stopped in this bridge, its readings go unprocessed");
                        failed.push(topic.clone());
                        out.failed.push(r.name.clone());
                    }
                }
            }
            for topic in failed {
                self.running.remove(&topic);
            }
            out
        }
    }

    /// One call: the readings as the records they would be stored as, in one batch; the outputs,
    /// and the state after them for a stateful module.
    fn run(
        r: &mut Running,
        topic: &str,
        inputs: &[&OutRecord],
    ) -> Result<(Vec<OutRecord>, Option<Vec<u8>>), silt_runtime::RuntimeError> {
        let mut builder = BatchBuilder::with_capacity(inputs.iter().map(|r| r.value.len() + 64).sum());
        for rec in inputs {
            let headers = rec.stored_headers();
            if builder.push(rec.timestamp_ms, rec.key.as_bytes(), &rec.value, &headers).is_err() {
                return Err(silt_runtime::RuntimeError::Usage(
                    "a round's readings of one topic exceed a batch",
                ));
            }
        }
        let first_ms = inputs[0].timestamp_ms;
        let mut input = builder.finish(0, 0);
        batch::stamp(&mut input, 0, first_ms);
        let mut outputs = Vec::new();
        if let Some(output) = r.instance.process(&input)? {
            // The runtime checked the records as it wrapped them.
            let view = silt_wire::BatchView::without_checksums(&output).map_err(|_| {
                silt_runtime::RuntimeError::Usage("the runtime gave a batch that does not parse")
            })?;
            let topic: Arc<str> = Arc::from(topic);
            for rec in view.records() {
                // Device data is keyed by device ids; a key that is not text cannot be one.
                let key = std::str::from_utf8(rec.key).map_err(|_| {
                    silt_runtime::RuntimeError::Usage("the processor wrote a key that is not UTF-8")
                })?;
                outputs.push(OutRecord {
                    topic: topic.clone(),
                    key: Arc::from(key),
                    device_header: false,
                    timestamp_ms: rec.timestamp_ms,
                    value: rec.value.to_vec(),
                    headers: rec.headers().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
                });
            }
        }
        let state = if r.stateful { r.instance.snapshot()? } else { None };
        Ok((outputs, state))
    }
}
