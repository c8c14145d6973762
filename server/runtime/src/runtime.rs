use std::hash::{Hash, Hasher};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
    RegallocAlgorithm, Strategy, ValType, WasmFeatures,
};

use crate::config::MEMORY_BYTES_CAP;
use crate::instance::{InstanceLimiter, Module};
use crate::{RuntimeConfig, RuntimeError};
use silt_wire::abi;

/// Our frame around wasmtime's serialized module: magic, format version, then the
/// compatibility key the artefact was compiled under and a CRC-32C of wasmtime's bytes.
/// `Module::deserialize` trusts its input completely, so a bit flipped on disk must be caught
/// before it; the key turns "compiled by another build" into a clear error rather than
/// whatever wasmtime says about its own header.
const ARTEFACT_MAGIC: [u8; 8] = *b"siltart1";
const ARTEFACT_KEY_AT: usize = ARTEFACT_MAGIC.len();
const ARTEFACT_CRC_AT: usize = ARTEFACT_KEY_AT + 32;
const ARTEFACT_HEADER_LEN: usize = ARTEFACT_CRC_AT + 4;

/// Most table elements a processor may have. Matches the pooling allocator's default slot
/// size, and bounds the host memory a `table.grow` loop could take in on-demand mode, where
/// tables live outside the linear-memory limit.
pub(crate) const TABLE_ELEMENTS_MAX: usize = 20_000;

/// The wasm engine of one broker: compiles and loads processor modules, and runs the epoch
/// ticker that bounds every call. Cheap to clone; the ticker stops when the last clone, and
/// the last [`Module`] and [`crate::Instance`] made from it, are dropped.
#[derive(Clone)]
pub struct Runtime {
    engine: Arc<TickingEngine>,
}

/// The wasmtime engine with the settings it was built with and the thread that ticks its
/// epoch: what a runtime and every module and instance made from it hold on to.
pub(crate) struct TickingEngine {
    pub(crate) wasmtime: Engine,
    pub(crate) epoch_tick_ms: u64,
    pooling: bool,
    compatibility_key: [u8; 32],
    _ticker: Ticker,
}

/// Increments the engine's epoch every tick until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker, RuntimeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("silt-epoch".into())
            .spawn(move || {
                // Nothing is ever sent: the channel only disconnects, when the ticker drops.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("epoch ticker thread: {e}")))?;
        Ok(Ticker { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // Returns within one tick; a panic in a loop that cannot panic is not worth
            // propagating out of a destructor.
            let _ = thread.join();
        }
    }
}

/// Feeds `Hash` output into SHA-256, so that a `Hash` value becomes stable bytes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }
}

fn engine_config(config: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        // Determinism (docs/processor-abi.md, "What a module may import"): the same module on
        // the same input computes the same bytes on every machine.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        // Off whatever cargo features other crates enable on wasmtime.
        .wasm_features(WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS, false)
        // Pointers in the ABI are i32 into the one exported memory.
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .epoch_interruption(true)
        .consume_fuel(false);
    if config.quick_compile {
        c.cranelift_opt_level(OptLevel::None).cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
    }
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.instances_max)
            .total_memories(config.instances_max)
            .total_tables(config.instances_max)
            .max_memory_size(MEMORY_BYTES_CAP)
            .table_elements(TABLE_ELEMENTS_MAX);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    } else {
        c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    }
    // The default 4 GiB reservation plus guard lets cranelift drop bounds checks on every
    // load and store; with pooling that is `instances_max` * ~4 GiB of address space (512 GiB
    // for 128 slots, of 128 TiB), never of RAM. It is what keeps the batch filter near native
    // speed, so it stays.
    c
}

impl Runtime {
    /// Sets up the engine (cranelift, epoch interruption, NaN canonicalisation, no threads)
    /// and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if config.epoch_tick_ms == 0 {
            return Err(RuntimeError::Usage("RuntimeConfig::epoch_tick_ms must be at least 1"));
        }
        if config.instances_max == 0 {
            return Err(RuntimeError::Usage("RuntimeConfig::instances_max must be at least 1"));
        }
        let mut pooling = config.pooling;
        let engine = match Engine::new(&engine_config(&config, pooling)) {
            Ok(engine) => engine,
            Err(e) if pooling => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    instances_max = config.instances_max,
                    "pooling allocator could not reserve its slots; falling back to on-demand \
                     instance allocation (slower instantiation, no cap on live instances)"
                );
                pooling = false;
                Engine::new(&engine_config(&config, false))
                    .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?
            }
            Err(e) => return Err(RuntimeError::Engine(format!("{e:#}"))),
        };
        let compatibility_key = compute_compatibility_key(&engine);
        let ticker = Ticker::start(engine.clone(), Duration::from_millis(config.epoch_tick_ms))?;
        let engine = TickingEngine {
            wasmtime: engine,
            epoch_tick_ms: config.epoch_tick_ms,
            pooling,
            compatibility_key,
            _ticker: ticker,
        };
        Ok(Runtime { engine: Arc::new(engine) })
    }

    /// True when instances come from the pooling allocator (false after a fallback).
    pub fn is_pooling(&self) -> bool {
        self.engine.pooling
    }

    /// Bytes identifying the compiled-code format (wasmtime version, compiler settings and
    /// host CPU features, this crate's version and artefact framing): part of the artefact
    /// cache key. Stable across restarts of the same build on the same machine.
    pub fn compatibility_key(&self) -> [u8; 32] {
        self.engine.compatibility_key
    }

    /// Checks the module against the ABI (no imports at all; `memory`, `silt_abi_version`,
    /// `silt_alloc`, `silt_init` and `silt_process` exported with their types;
    /// `silt_snapshot` and `silt_restore` both or neither; `silt_counters`, if exported, with
    /// its type) and compiles it. Returns the
    /// artefact to cache and later hand to [`Runtime::load`].
    pub fn compile(&self, wasm: &[u8]) -> Result<Vec<u8>, RuntimeError> {
        check_core_wasm(wasm)?;
        // `Module::new` compiles exactly as `Engine::precompile_module` does, and leaves a
        // module whose imports and exports can be checked before the artefact is handed out.
        let module = wasmtime::Module::new(&self.engine.wasmtime, wasm)
            .map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
        check_abi(&module)?;
        let compiled = module.serialize().map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
        let mut artefact = Vec::with_capacity(ARTEFACT_HEADER_LEN + compiled.len());
        artefact.extend_from_slice(&ARTEFACT_MAGIC);
        artefact.extend_from_slice(&self.engine.compatibility_key);
        artefact.extend_from_slice(&crc32c::crc32c(&compiled).to_le_bytes());
        artefact.extend_from_slice(&compiled);
        Ok(artefact)
    }

    /// Checks and compiles a module as [`Runtime::compile`] does, and returns it ready to
    /// instantiate, without an artefact (for a module that is not cached, such as a first
    /// tier compiled with `quick_compile`).
    pub fn compile_module(&self, wasm: &[u8]) -> Result<Module, RuntimeError> {
        check_core_wasm(wasm)?;
        let module = wasmtime::Module::new(&self.engine.wasmtime, wasm)
            .map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
        let stateful = check_abi(&module)?;
        let linker: Linker<InstanceLimiter> = Linker::new(&self.engine.wasmtime);
        let pre = linker.instantiate_pre(&module).map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
        Ok(Module::new(self.engine.clone(), pre, stateful))
    }

    /// Loads an artefact made by [`Runtime::compile`]. Fails with
    /// [`RuntimeError::Artefact`] when it was compiled by another build or engine setting, or
    /// is damaged; the caller then recompiles from the wasm.
    pub fn load(&self, artefact: &[u8]) -> Result<Module, RuntimeError> {
        if artefact.len() < ARTEFACT_HEADER_LEN || artefact[..ARTEFACT_KEY_AT] != ARTEFACT_MAGIC {
            return Err(RuntimeError::Artefact("not an artefact of silt-runtime".into()));
        }
        if artefact[ARTEFACT_KEY_AT..ARTEFACT_CRC_AT] != self.engine.compatibility_key {
            return Err(RuntimeError::Artefact(
                "compiled by another build of the runtime or for another CPU".into(),
            ));
        }
        let crc =
            u32::from_le_bytes(artefact[ARTEFACT_CRC_AT..ARTEFACT_HEADER_LEN].try_into().expect("4 bytes"));
        let compiled = &artefact[ARTEFACT_HEADER_LEN..];
        if crc32c::crc32c(compiled) != crc {
            return Err(RuntimeError::Artefact("checksum mismatch: the artefact is damaged".into()));
        }
        // SAFETY: `Module::deserialize` runs the bytes as native code without checking them.
        // These bytes come only from `compile` above (through the broker's own sled store),
        // carry our magic and the compatibility key of this very engine, and their CRC-32C
        // matches what `compile` wrote, so they are wasmtime's own output for this engine.
        let module = unsafe { wasmtime::Module::deserialize(&self.engine.wasmtime, compiled) }
            .map_err(|e| RuntimeError::Artefact(format!("{e:#}")))?;
        let stateful = check_abi(&module)?;
        let linker: Linker<InstanceLimiter> = Linker::new(&self.engine.wasmtime);
        let pre = linker.instantiate_pre(&module).map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?;
        Ok(Module::new(self.engine.clone(), pre, stateful))
    }
}

fn compute_compatibility_key(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.0.update(b"silt-runtime ");
    hasher.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.0.update(ARTEFACT_MAGIC);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

fn check_core_wasm(wasm: &[u8]) -> Result<(), RuntimeError> {
    match abi::core_wasm_problem(wasm) {
        Some(problem) => Err(RuntimeError::NotWasm(problem)),
        None => Ok(()),
    }
}

fn shape(ty: ExternType) -> abi::Shape {
    let name = |t: ValType| match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::Ref(_) => "ref",
    };
    match ty {
        ExternType::Memory(_) => abi::Shape::Memory,
        ExternType::Func(f) => abi::Shape::Func {
            params: f.params().map(name).collect(),
            results: f.results().map(name).collect(),
        },
        _ => abi::Shape::Other,
    }
}

/// Checks imports and exports; returns whether the module is stateful.
fn check_abi(module: &wasmtime::Module) -> Result<bool, RuntimeError> {
    if let Some(import) = module.imports().next() {
        return Err(RuntimeError::Import { module: import.module().into(), name: import.name().into() });
    }
    abi::check_exports(|name| module.get_export(name).map(shape))
        .map_err(|p| RuntimeError::Export { name: p.name.into(), reason: p.reason })
}
