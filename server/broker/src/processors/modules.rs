//! Processor modules: the two compile tiers, the cache of loaded modules and compiled
//! artefacts, signature checks, and the limits a version runs under.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use silt_runtime::{Limits as RuntimeLimits, Module, Runtime, RuntimeConfig, RuntimeError};
use silt_storage::Store;
use silt_wire::signature::{self, hex};
use silt_wire::{ErrorCode, ProcessorLimits};

use super::records::{StoredLimits, StoredVersion};
use super::HostError;
use crate::config::ProcessorConfig;

pub(super) fn module_error(e: RuntimeError) -> HostError {
    HostError::new(ErrorCode::InvalidModule, e.to_string())
}

/// Compiles, caches and loads modules; checks signatures and limits against the broker's
/// `[processors]` configuration.
pub(super) struct Modules {
    store: Arc<Store>,
    runtime: Runtime,
    /// First tier: compiles a module not seen before about twice as fast as `runtime`, for
    /// code that runs about half as fast. A new module starts on it, and moves to `runtime`'s
    /// build once that is compiled in the background (docs/design.md, targets: deploy to first
    /// processed event within 20 ms; `BENCHMARKS.md` has the figures).
    quick: Runtime,
    config: ProcessorConfig,
    loaded: Mutex<HashMap<[u8; 32], Module>>,
    /// First-tier builds of modules whose optimised build is being compiled; a deploy of the
    /// same module meanwhile reuses it.
    first_tier: Mutex<HashMap<[u8; 32], Module>>,
}

/// The build a deploy starts on.
pub(super) struct Starting {
    pub module: Module,
    /// True when it is a new first-tier build whose optimised build must still be compiled.
    pub optimise: bool,
}

impl Modules {
    pub fn new(store: Arc<Store>, config: ProcessorConfig) -> anyhow::Result<Modules> {
        let runtime = Runtime::new(RuntimeConfig::default())?;
        // On-demand allocation: first-tier instances live for seconds, and the pool's address
        // space reservation is not worth it for them.
        let quick =
            Runtime::new(RuntimeConfig { pooling: false, quick_compile: true, ..RuntimeConfig::default() })?;
        Ok(Modules {
            store,
            runtime,
            quick,
            config,
            loaded: Mutex::new(HashMap::new()),
            first_tier: Mutex::new(HashMap::new()),
        })
    }

    /// A deploy's limits with unset ones filled from the configuration, which is also the
    /// most a deploy may ask for.
    pub fn resolve_limits(&self, asked: ProcessorLimits) -> Result<StoredLimits, HostError> {
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
        Ok(StoredLimits {
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
    pub fn limits(&self, v: &StoredVersion) -> RuntimeLimits {
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

    /// True when the optimised build of `hash` is loaded.
    pub fn is_loaded(&self, hash: &[u8; 32]) -> bool {
        self.loaded.lock().expect("module map").contains_key(hash)
    }

    /// The optimised build of a module, compiled or not: from memory, else the cached
    /// artefact when it loads. `None` when neither has it.
    fn cached(&self, hash: &[u8; 32]) -> Result<Option<Module>, HostError> {
        let loaded = self.loaded.lock().expect("module map").get(hash).cloned();
        if loaded.is_some() {
            return Ok(loaded);
        }
        let module = match self.store.artefact(&self.artefact_key(hash))?.map(|a| self.runtime.load(&a)) {
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
    pub fn build(&self, hash: &[u8; 32], wasm: &[u8]) -> Result<Module, HostError> {
        let artefact = self.runtime.compile(wasm).map_err(module_error)?;
        let module = self.runtime.load(&artefact).map_err(module_error)?;
        self.store.put_artefact(&self.artefact_key(hash), &artefact)?;
        self.loaded.lock().expect("module map").insert(*hash, module.clone());
        Ok(module)
    }

    /// The optimised build of a stored module: cached, else compiled from the stored bytes.
    pub fn module(&self, hash: &[u8; 32]) -> Result<Module, HostError> {
        if let Some(m) = self.cached(hash)? {
            return Ok(m);
        }
        let wasm = self
            .store
            .module(hash)?
            .ok_or_else(|| HostError::new(ErrorCode::Storage, format!("module {} is missing", hex(hash))))?;
        self.build(hash, &wasm)
    }

    /// The build a deploy of `wasm` starts on: the optimised build when this broker has it
    /// (loaded, or its artefact cached), else a first-tier build, compiled now unless one is
    /// already waiting for its optimised build. Blocking: call from a blocking thread.
    pub fn starting(&self, hash: &[u8; 32], wasm: &[u8]) -> Result<Starting, HostError> {
        if let Some(module) = self.cached(hash)? {
            return Ok(Starting { module, optimise: false });
        }
        if let Some(module) = self.first_tier.lock().expect("module map").get(hash).cloned() {
            return Ok(Starting { module, optimise: false });
        }
        let module = self.quick.compile_module(wasm).map_err(module_error)?;
        Ok(Starting { module, optimise: true })
    }

    /// Keeps a first-tier build while its optimised build compiles.
    pub fn hold_first_tier(&self, hash: [u8; 32], module: Module) {
        self.first_tier.lock().expect("module map").insert(hash, module);
    }

    /// Forgets the first-tier build of `hash` once its optimised build is done (or failed).
    pub fn release_first_tier(&self, hash: &[u8; 32]) {
        self.first_tier.lock().expect("module map").remove(hash);
    }

    /// The signer of `wasm`, checked against the trusted keys when any are configured.
    pub fn check_signature(&self, wasm: &[u8]) -> Result<Option<[u8; 32]>, HostError> {
        let untrusted = |e: signature::SignatureError| HostError::new(ErrorCode::Untrusted, e.to_string());
        if !self.config.trusted_keys.is_empty() {
            return signature::verify(wasm, &self.config.trusted_keys).map(Some).map_err(untrusted);
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
}
