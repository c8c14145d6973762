use std::sync::Arc;

use silt_wire::abi::{self, RESULT_SLOT_LEN};
use silt_wire::batch;
use silt_wire::batch::header::{OFF_BASE_OFFSET, OFF_FIRST_TS};
use silt_wire::counters::{self, COUNTERS_BYTES_MAX};
use wasmtime::{
    InstancePre, Memory, PoolConcurrencyLimitError, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc, WasmBacktrace,
};

use crate::params::encode_params;
use crate::runtime::{TickingEngine, TABLE_ELEMENTS_MAX};
use crate::{Limits, RuntimeError};

pub use silt_wire::abi::{ABI_VERSION, GUEST_MESSAGE_BYTES_MAX};
/// Smallest input buffer the host asks for; bigger batches get the next power of two.
pub const INPUT_BUFFER_BYTES_MIN: usize = 64 * 1024;

/// Store data: the limiter of one instance's memory and tables, which also remembers whether
/// it refused growth so that a trap that follows can be explained.
pub(crate) struct InstanceLimiter {
    limits: StoreLimits,
    memory_refused: Option<usize>,
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_refused = Some(desired);
        }
        Ok(allowed)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A loaded processor module, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    engine: Arc<TickingEngine>,
    pre: InstancePre<InstanceLimiter>,
    stateful: bool,
}

impl Module {
    pub(crate) fn new(
        engine: Arc<TickingEngine>,
        pre: InstancePre<InstanceLimiter>,
        stateful: bool,
    ) -> Module {
        Module { engine, pre, stateful }
    }

    /// True when the module exports `silt_snapshot` and `silt_restore`.
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Instantiates the module under `limits`, checks `silt_abi_version() == 1`, allocates
    /// the result slot, passes `params` (sorted by key, ABI encoding) and calls `silt_init`.
    pub fn instantiate(
        &self,
        params: &[(String, String)],
        limits: &Limits,
    ) -> Result<Instance, RuntimeError> {
        limits.check()?;
        let encoded = encode_params(params)?;
        let limiter = InstanceLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes_max)
                .table_elements(TABLE_ELEMENTS_MAX)
                .instances(1)
                .memories(1)
                .tables(1)
                .trap_on_grow_failure(false)
                .build(),
            memory_refused: None,
        };
        let mut store = Store::new(&self.engine.wasmtime, limiter);
        store.limiter(|limiter| limiter);
        let deadline_ticks = limits.call_time_ms_max.div_ceil(self.engine.epoch_tick_ms).max(1);
        // A start function runs inside `instantiate`, under the same limits as any call.
        store.set_epoch_deadline(deadline_ticks);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                if store.data().memory_refused.is_some() && e.downcast_ref::<Trap>().is_none() {
                    return Err(RuntimeError::MemoryLimit { bytes: limits.memory_bytes_max });
                }
                if e.downcast_ref::<Trap>().is_some() {
                    return Err(call_error("start function", e, &store, limits));
                }
                if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
                    return Err(RuntimeError::Instantiate(format!(
                        "{e}: every pool slot is in use; stop a processor or raise RuntimeConfig::instances_max"
                    )));
                }
                return Err(RuntimeError::Instantiate(format!("{e:#}")));
            }
        };
        // The exports were checked when the module was compiled and again when it was loaded.
        let export = |e: wasmtime::Error| RuntimeError::Instantiate(format!("{e:#}"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| RuntimeError::Export { name: "memory".into(), reason: "is missing".into() })?;
        let abi_version =
            instance.get_typed_func::<(), i32>(&mut store, "silt_abi_version").map_err(export)?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "silt_alloc").map_err(export)?;
        let init =
            instance.get_typed_func::<(i32, i32, i32), i32>(&mut store, "silt_init").map_err(export)?;
        let process =
            instance.get_typed_func::<(i32, i32, i32), i32>(&mut store, "silt_process").map_err(export)?;
        let (snapshot, restore) = if self.stateful {
            (
                Some(instance.get_typed_func::<i32, i32>(&mut store, "silt_snapshot").map_err(export)?),
                Some(
                    instance
                        .get_typed_func::<(i32, i32, i32), i32>(&mut store, "silt_restore")
                        .map_err(export)?,
                ),
            )
        } else {
            (None, None)
        };
        // Optional; its type was checked with the others when the module was compiled.
        let counters = match instance.get_func(&mut store, "silt_counters") {
            Some(f) => Some(f.typed::<i32, i32>(&store).map_err(export)?),
            None => None,
        };
        let mut inst = Instance {
            _module: self.clone(),
            store,
            memory,
            alloc,
            process,
            snapshot,
            restore,
            counters,
            limits: limits.clone(),
            deadline_ticks,
            result_ptr: 0,
            input: None,
            processed: false,
            restored: false,
            poisoned: false,
        };
        let version = inst.call("silt_abi_version", &abi_version, ())?;
        if version != ABI_VERSION {
            return Err(RuntimeError::AbiVersion(version));
        }
        inst.result_ptr = inst.guest_alloc(RESULT_SLOT_LEN)?;
        let (params_ptr, params_len) = if encoded.is_empty() {
            (0, 0)
        } else {
            let ptr = inst.guest_alloc(encoded.len())?;
            inst.write(ptr, &encoded);
            (ptr, encoded.len())
        };
        let status =
            inst.call("silt_init", &init, (params_ptr as i32, params_len as i32, inst.result_ptr as i32))?;
        inst.check_status("silt_init", status)?;
        Ok(inst)
    }
}

/// One running processor: a store, its memory and the ABI functions. `Send`, not `Sync`:
/// one thread drives it at a time. After any error the instance is poisoned and every later
/// call returns [`RuntimeError::Poisoned`] without entering the guest.
pub struct Instance {
    /// Keeps the engine's epoch ticker alive while this instance can run.
    _module: Module,
    store: Store<InstanceLimiter>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32, i32), i32>,
    snapshot: Option<TypedFunc<i32, i32>>,
    restore: Option<TypedFunc<(i32, i32, i32), i32>>,
    counters: Option<TypedFunc<i32, i32>>,
    limits: Limits,
    deadline_ticks: u64,
    result_ptr: u32,
    /// The input buffer: address and capacity.
    input: Option<(u32, usize)>,
    processed: bool,
    restored: bool,
    poisoned: bool,
}

impl Instance {
    /// Hands a state from an earlier [`Instance::snapshot`] of this module version to
    /// `silt_restore`. Only before the first `process`, at most once, and only for stateful
    /// modules.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), RuntimeError> {
        self.guarded(|inst| inst.restore_inner(state))
    }

    /// Runs `silt_process` over one stamped, validated batch (LZ4-compressed or not) and
    /// returns the output records wrapped as an uncompressed, unstamped batch (producer 0,
    /// sequence 0, the input's first timestamp), or `None` when nothing was emitted.
    pub fn process(&mut self, batch: &[u8]) -> Result<Option<Vec<u8>>, RuntimeError> {
        self.guarded(|inst| inst.process_inner(batch))
    }

    /// The module's serialised state; `None` for stateless modules.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>, RuntimeError> {
        self.guarded(|inst| inst.snapshot_inner())
    }

    /// The module's counters from `silt_counters`: `(name, value)` in the module's order,
    /// totals since its state began. Empty when the module does not export `silt_counters` or
    /// reports none. A block over 4 KiB, outside memory or malformed is
    /// [`RuntimeError::BadOutput`]; like any failed call, it poisons the instance.
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, RuntimeError> {
        self.guarded(|inst| inst.counters_inner())
    }

    /// True after an error: the instance will not run again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn guarded<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        if self.poisoned {
            return Err(RuntimeError::Poisoned);
        }
        let result = f(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn restore_inner(&mut self, state: &[u8]) -> Result<(), RuntimeError> {
        let Some(restore) = self.restore.clone() else {
            return Err(RuntimeError::Usage("restore of a stateless module (it exports no silt_restore)"));
        };
        if self.processed || self.restored {
            return Err(RuntimeError::Usage("restore is allowed once, before the first batch"));
        }
        if state.len() > self.limits.state_bytes_max {
            return Err(RuntimeError::StateLimit { bytes: state.len(), max: self.limits.state_bytes_max });
        }
        // An empty state is passed as pointer 0, length 0, as empty parameters are.
        let ptr = if state.is_empty() {
            0
        } else {
            let ptr = self.guest_alloc(state.len())?;
            self.write(ptr, state);
            ptr
        };
        let status =
            self.call("silt_restore", &restore, (ptr as i32, state.len() as i32, self.result_ptr as i32))?;
        self.check_status("silt_restore", status)?;
        self.restored = true;
        Ok(())
    }

    fn process_inner(&mut self, input: &[u8]) -> Result<Option<Vec<u8>>, RuntimeError> {
        let input = batch::decompress(input).map_err(|e| RuntimeError::Usage(input_error(e)))?;
        debug_assert!(batch::validate(&input).is_ok(), "process takes validated batches");
        let base_offset =
            u64::from_le_bytes(input[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].try_into().expect("8 bytes"));
        let first_ts = i64::from_le_bytes(input[OFF_FIRST_TS..OFF_FIRST_TS + 8].try_into().expect("8 bytes"));
        let ptr = self.input_buffer(input.len())?;
        self.write(ptr, &input);
        self.processed = true;
        let process = self.process.clone();
        let status =
            self.call("silt_process", &process, (ptr as i32, input.len() as i32, self.result_ptr as i32))?;
        self.check_status("silt_process", status)?;
        let (out_ptr, out_len) = self.read_slot();
        if out_len == 0 {
            return Ok(None);
        }
        if out_len > self.limits.output_bytes_max {
            return Err(RuntimeError::OutputLimit { bytes: out_len, max: self.limits.output_bytes_max });
        }
        let data = self.memory.data(&self.store);
        let Some(records) = abi::guest_range(data, out_ptr, out_len) else {
            return Err(RuntimeError::BadOutput(format!(
                "silt_process for the batch at input offset {base_offset} names output bytes {out_ptr}..{} \
                 outside its memory of {} bytes",
                out_ptr as usize + out_len,
                data.len()
            )));
        };
        let output = batch::from_records(first_ts, records, 0, 0).map_err(|e| {
            RuntimeError::BadOutput(format!(
                "records output for the batch at input offset {base_offset}: {e}"
            ))
        })?;
        Ok(Some(output))
    }

    fn snapshot_inner(&mut self) -> Result<Option<Vec<u8>>, RuntimeError> {
        let Some(snapshot) = self.snapshot.clone() else {
            return Ok(None);
        };
        let status = self.call("silt_snapshot", &snapshot, self.result_ptr as i32)?;
        self.check_status("silt_snapshot", status)?;
        let (ptr, len) = self.read_slot();
        if len == 0 {
            return Ok(Some(Vec::new()));
        }
        if len > self.limits.state_bytes_max {
            return Err(RuntimeError::StateLimit { bytes: len, max: self.limits.state_bytes_max });
        }
        let data = self.memory.data(&self.store);
        match abi::guest_range(data, ptr, len) {
            Some(state) => Ok(Some(state.to_vec())),
            None => Err(RuntimeError::BadOutput(format!(
                "silt_snapshot names state bytes {ptr}..{} outside its memory of {} bytes",
                ptr as usize + len,
                data.len()
            ))),
        }
    }

    fn counters_inner(&mut self) -> Result<Vec<(String, u64)>, RuntimeError> {
        let Some(func) = self.counters.clone() else {
            return Ok(Vec::new());
        };
        let status = self.call("silt_counters", &func, self.result_ptr as i32)?;
        self.check_status("silt_counters", status)?;
        let (ptr, len) = self.read_slot();
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > COUNTERS_BYTES_MAX {
            return Err(RuntimeError::BadOutput(format!(
                "silt_counters names a block of {len} bytes, over the limit of {COUNTERS_BYTES_MAX} bytes"
            )));
        }
        let data = self.memory.data(&self.store);
        let Some(block) = abi::guest_range(data, ptr, len) else {
            return Err(RuntimeError::BadOutput(format!(
                "silt_counters names bytes {ptr}..{} outside its memory of {} bytes",
                ptr as usize + len,
                data.len()
            )));
        };
        let decoded =
            counters::decode(block).map_err(|e| RuntimeError::BadOutput(format!("silt_counters: {e}")))?;
        Ok(decoded.into_iter().map(|(name, value)| (name.to_string(), value)).collect())
    }

    /// The input buffer, grown (a fresh `silt_alloc`) when `len` is larger than every batch
    /// before it: the next power of two of at least [`INPUT_BUFFER_BYTES_MIN`].
    fn input_buffer(&mut self, len: usize) -> Result<u32, RuntimeError> {
        match self.input {
            Some((ptr, capacity)) if capacity >= len => Ok(ptr),
            _ => {
                let capacity = len.next_power_of_two().max(INPUT_BUFFER_BYTES_MIN);
                let ptr = self.guest_alloc(capacity)?;
                self.input = Some((ptr, capacity));
                Ok(ptr)
            }
        }
    }

    /// Calls `silt_alloc(size)` and checks the address it returns.
    fn guest_alloc(&mut self, size: usize) -> Result<u32, RuntimeError> {
        let size_i32 = i32::try_from(size)
            .map_err(|_| RuntimeError::Alloc { size, reason: "size above 2 GiB".into() })?;
        let alloc = self.alloc.clone();
        let ptr = self.call("silt_alloc", &alloc, size_i32)? as u32;
        match abi::alloc_problem(self.memory.data(&self.store), ptr, size) {
            None => Ok(ptr),
            Some(reason) => Err(RuntimeError::Alloc { size, reason }),
        }
    }

    /// Writes into a range `guest_alloc` returned (and so checked).
    fn write(&mut self, ptr: u32, bytes: &[u8]) {
        let data = self.memory.data_mut(&mut self.store);
        let at = ptr as usize;
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The result slot's `(ptr, len)`.
    fn read_slot(&self) -> (u32, usize) {
        // `guest_alloc` checked the slot, and memory never shrinks.
        abi::read_slot(self.memory.data(&self.store), self.result_ptr)
            .expect("the result slot lies in memory")
    }

    /// Turns a non-zero status into the guest's error message.
    fn check_status(&self, call: &'static str, status: i32) -> Result<(), RuntimeError> {
        if status == 0 {
            return Ok(());
        }
        let message = abi::guest_message(self.memory.data(&self.store), status, self.read_slot());
        Err(RuntimeError::Guest { call, message })
    }

    /// One call into the guest under the time limit.
    fn call<P, R>(&mut self, name: &'static str, func: &TypedFunc<P, R>, args: P) -> Result<R, RuntimeError>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        self.store.set_epoch_deadline(self.deadline_ticks);
        func.call(&mut self.store, args).map_err(|e| call_error(name, e, &self.store, &self.limits))
    }
}

fn input_error(e: silt_wire::WireError) -> &'static str {
    // The broker hands over stored batches, which passed validation on append; a batch that
    // does not even frame is the caller's bug, not the processor's.
    tracing::error!(error = %e, "processor input batch does not frame");
    "process was given bytes that are not one valid record batch"
}

/// Classifies an error out of a guest call.
fn call_error(
    call: &'static str,
    e: wasmtime::Error,
    store: &Store<InstanceLimiter>,
    limits: &Limits,
) -> RuntimeError {
    let Some(trap) = e.downcast_ref::<Trap>() else {
        return RuntimeError::Trap { call, message: format!("{e:#}") };
    };
    if *trap == Trap::Interrupt {
        return RuntimeError::TimeLimit { call, ms: limits.call_time_ms_max };
    }
    let mut message = trap.to_string();
    if let Some(frame) = e.downcast_ref::<WasmBacktrace>().and_then(|bt| bt.frames().first()) {
        match frame.func_name() {
            Some(name) => message.push_str(&format!(" in function {name}")),
            None => message.push_str(&format!(" in function #{}", frame.func_index())),
        }
    }
    if let Some(desired) = store.data().memory_refused {
        message.push_str(&format!(
            " (after growing memory to {desired} bytes was refused: the memory limit is {} bytes)",
            limits.memory_bytes_max
        ));
    }
    RuntimeError::Trap { call, message }
}
