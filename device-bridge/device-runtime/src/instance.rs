//! One running processor: the ABI's calls under the instance's limits.

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use silt_wire::abi::{self, RESULT_SLOT_LEN};
use silt_wire::batch::{record, BatchView, BATCH_RECORDS_MAX};
use silt_wire::counters::{self, COUNTERS_BYTES_MAX};
use silt_wire::WireError;
use wasmi::errors::{MemoryError, TableError};
use wasmi::{Engine, Memory, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, TrapCode, TypedFunc};
use wasmi_core::LimiterError;

use crate::params::encode_params;
use crate::{Error, Limits};

pub use silt_wire::abi::{ABI_VERSION, GUEST_MESSAGE_BYTES_MAX};
/// Most table elements a processor may have. wasmi keeps tables on the host heap; the
/// example processors have 35 to 47 elements, and 4096 keeps a `table.grow` loop to tens of
/// KiB of a device's RAM (the broker allows 20,000).
pub const TABLE_ELEMENTS_MAX: usize = 4096;

/// Store data: the limiter of one instance's memory and tables, which also remembers why
/// growth failed, so that a trap that follows can be explained.
struct Guard {
    limits: StoreLimits,
    /// `Limits::memory_bytes_max`, to tell a refusal by it from one by the module's own
    /// declared maximum.
    memory_bytes_max: usize,
    /// The size, in bytes, that growing memory to was refused by the limit.
    memory_refused: Option<usize>,
    /// Growing memory failed because the heap had no room (the limit allowed it).
    heap_exhausted: bool,
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed && desired > self.memory_bytes_max {
            self.memory_refused = Some(desired);
        }
        Ok(allowed)
    }
    fn memory_grow_failed(&mut self, error: &MemoryError) -> Result<(), LimiterError> {
        if matches!(error, MemoryError::OutOfSystemMemory) {
            self.heap_exhausted = true;
        }
        Ok(())
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        self.limits.table_growing(current, desired, maximum)
    }
    fn table_grow_failed(&mut self, _error: &TableError) -> Result<(), LimiterError> {
        Ok(())
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

/// What one `silt_process` returned: the output records, checked, in the guest's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output<'a> {
    /// The records exactly as the result slot names them (empty when the batch produced
    /// nothing), each framed as in a batch's records section with its timestamp delta relative
    /// to the input batch's `first_timestamp_ms`: what the broker wraps into its output batch.
    pub records: &'a [u8],
    /// How many records `records` holds.
    pub record_count: u32,
    /// The largest output event time; `None` when there are no records.
    pub max_timestamp_ms: Option<i64>,
}

/// One running processor: a store, its memory and the ABI functions. After any error the
/// instance is poisoned and every later call returns [`Error::Poisoned`] without entering the
/// guest.
pub struct Instance {
    store: Store<Guard>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32, i32), i32>,
    snapshot: Option<TypedFunc<i32, i32>>,
    restore: Option<TypedFunc<(i32, i32, i32), i32>>,
    counters: Option<TypedFunc<i32, i32>>,
    limits: Limits,
    result_ptr: u32,
    /// The input buffer: address and capacity.
    input: Option<(u32, usize)>,
    processed: bool,
    restored: bool,
    poisoned: bool,
    /// Fuel the last call into the guest used.
    fuel_used: u64,
}

/// The steps of docs/processor-abi.md up to `silt_init`; [`crate::Module::instantiate`].
pub(crate) fn instantiate(
    engine: &Engine,
    module: &wasmi::Module,
    stateful: bool,
    params: &[(&str, &str)],
    limits: &Limits,
) -> Result<Instance, Error> {
    limits.check()?;
    let encoded = encode_params(params)?;
    let guard = Guard {
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes_max)
            .table_elements(TABLE_ELEMENTS_MAX)
            .instances(1)
            .memories(1)
            .tables(1)
            .trap_on_grow_failure(false)
            .build(),
        memory_bytes_max: limits.memory_bytes_max,
        memory_refused: None,
        heap_exhausted: false,
    };
    let mut store = Store::new(engine, guard);
    store.limiter(|guard| guard as &mut dyn ResourceLimiter);
    // A start function runs inside `Instance::new`, under the same limits as any call.
    store.set_fuel(limits.fuel_per_call).expect("the engine meters fuel");
    let instance = match wasmi::Instance::new(&mut store, module, &[]) {
        Ok(instance) => instance,
        Err(e) if e.as_trap_code().is_some() => return Err(call_error("start function", &e, &store, limits)),
        Err(e) => {
            if let Some(needed) = store.data().memory_refused {
                return Err(Error::MemoryLimit { needed, bytes: limits.memory_bytes_max });
            }
            return Err(Error::Instantiate(e.to_string()));
        }
    };
    // The exports and their types were checked by `Module::new`.
    let export = |e: wasmi::Error| Error::Instantiate(e.to_string());
    let memory = instance
        .get_memory(&store, "memory")
        .ok_or(Error::Export { name: "memory", reason: "is missing".into() })?;
    let abi_version = instance.get_typed_func::<(), i32>(&store, "silt_abi_version").map_err(export)?;
    let init = instance.get_typed_func::<(i32, i32, i32), i32>(&store, "silt_init").map_err(export)?;
    let (snapshot, restore) = if stateful {
        (
            Some(instance.get_typed_func::<i32, i32>(&store, "silt_snapshot").map_err(export)?),
            Some(instance.get_typed_func::<(i32, i32, i32), i32>(&store, "silt_restore").map_err(export)?),
        )
    } else {
        (None, None)
    };
    let counters = match instance.get_func(&store, "silt_counters") {
        Some(f) => Some(f.typed::<i32, i32>(&store).map_err(export)?),
        None => None,
    };
    let mut inst = Instance {
        memory,
        alloc: instance.get_typed_func(&store, "silt_alloc").map_err(export)?,
        process: instance.get_typed_func(&store, "silt_process").map_err(export)?,
        snapshot,
        restore,
        counters,
        store,
        limits: limits.clone(),
        result_ptr: 0,
        input: None,
        processed: false,
        restored: false,
        poisoned: false,
        fuel_used: 0,
    };
    let version = inst.call("silt_abi_version", &abi_version, ())?;
    if version != ABI_VERSION {
        return Err(Error::AbiVersion(version));
    }
    inst.result_ptr = inst.guest_alloc(RESULT_SLOT_LEN)?;
    // No parameters are passed as pointer 0, length 0, without a call to `silt_alloc`.
    let params_ptr = if encoded.is_empty() {
        0
    } else {
        let ptr = inst.guest_alloc(encoded.len())?;
        inst.write(ptr, &encoded);
        ptr
    };
    let status =
        inst.call("silt_init", &init, (params_ptr as i32, encoded.len() as i32, inst.result_ptr as i32))?;
    inst.check_status("silt_init", status)?;
    Ok(inst)
}

impl Instance {
    /// Hands a state from an earlier [`Instance::snapshot`] of this module to
    /// `silt_restore`. Only before the first `process`, at most once, and only for stateful
    /// modules.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), Error> {
        self.guarded(|inst| inst.restore_inner(state))
    }

    /// Runs `silt_process` over one stamped, validated, uncompressed record batch
    /// (docs/record-batch.md) and returns the output records, read in place from the guest's
    /// memory and valid until the next call into the instance.
    ///
    /// The batch's framing and records are checked (not its checksums, which whoever built or
    /// received it checked); the output is checked as record-batch validation rule 6 checks a
    /// batch (every field inside its record, at most 64 headers, at most 1,000,000 records,
    /// ending exactly at the slot's length) after its length was checked against
    /// `output_bytes_max` and its range against memory.
    pub fn process(&mut self, batch: &[u8]) -> Result<Output<'_>, Error> {
        let (ptr, len, record_count, max_timestamp_ms) = self.guarded(|inst| inst.process_inner(batch))?;
        // `process_inner` checked the range, and nothing has run since.
        let records = abi::guest_range(self.memory.data(&self.store), ptr, len).expect("checked range");
        Ok(Output { records, record_count, max_timestamp_ms })
    }

    /// The module's serialised state from `silt_snapshot`, read in place from the guest's
    /// memory and valid until the next call; `None` for stateless modules.
    pub fn snapshot(&mut self) -> Result<Option<&[u8]>, Error> {
        let Some((ptr, len)) = self.guarded(|inst| inst.snapshot_inner())? else {
            return Ok(None);
        };
        Ok(Some(abi::guest_range(self.memory.data(&self.store), ptr, len).expect("checked range")))
    }

    /// The module's counters from `silt_counters`: `(name, value)` in the module's order,
    /// totals since its state began, read with `silt_wire::counters::decode` (the broker's and
    /// the SDK's decoder). Empty when the module does not export `silt_counters` or reports
    /// none. A block over 4 KiB, outside memory or malformed is [`Error::BadOutput`] and, like
    /// any failed call, poisons the instance.
    pub fn counters(&mut self) -> Result<Vec<(&str, u64)>, Error> {
        let (ptr, len) = self.guarded(|inst| inst.counters_inner())?;
        let block = abi::guest_range(self.memory.data(&self.store), ptr, len).expect("checked range");
        match counters::decode(block) {
            Ok(decoded) => Ok(decoded),
            Err(e) => {
                self.poisoned = true;
                Err(Error::BadOutput(format!("silt_counters: {e}")))
            }
        }
    }

    /// Fuel the last call into the guest used (about one unit per WebAssembly instruction):
    /// after `process`, what the batch cost on this tier, the same on every run and machine.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// True after an error: the instance will not run again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn guarded<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = f(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn restore_inner(&mut self, state: &[u8]) -> Result<(), Error> {
        let Some(restore) = self.restore else {
            return Err(Error::Usage("restore of a stateless module (it exports no silt_restore)"));
        };
        if self.processed || self.restored {
            return Err(Error::Usage("restore is allowed once, before the first batch"));
        }
        if state.len() > self.limits.state_bytes_max {
            return Err(Error::StateLimit { bytes: state.len(), max: self.limits.state_bytes_max });
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

    /// Runs `silt_process` and checks its output; returns the output's range, record count
    /// and largest event time.
    fn process_inner(&mut self, batch: &[u8]) -> Result<(u32, usize, u32, Option<i64>), Error> {
        let view = BatchView::without_checksums(batch).map_err(Error::Input)?;
        let (base_offset, first_ts) = (view.base_offset(), view.first_timestamp_ms());
        let ptr = self.input_buffer(batch.len())?;
        self.write(ptr, batch);
        self.processed = true;
        let process = self.process;
        let status =
            self.call("silt_process", &process, (ptr as i32, batch.len() as i32, self.result_ptr as i32))?;
        self.check_status("silt_process", status)?;
        let (out_ptr, out_len) = self.read_slot();
        if out_len == 0 {
            return Ok((0, 0, 0, None));
        }
        if out_len > self.limits.output_bytes_max {
            return Err(Error::OutputLimit { bytes: out_len, max: self.limits.output_bytes_max });
        }
        let data = self.memory.data(&self.store);
        let Some(records) = abi::guest_range(data, out_ptr, out_len) else {
            return Err(Error::BadOutput(format!(
                "silt_process for the batch at input offset {base_offset} names output bytes {out_ptr}..{} \
                 outside its memory of {} bytes",
                out_ptr as usize + out_len,
                data.len()
            )));
        };
        let bad = |e: WireError| {
            Error::BadOutput(format!("records output for the batch at input offset {base_offset}: {e}"))
        };
        let scan = record::scan(records, BATCH_RECORDS_MAX, first_ts).map_err(|m| bad(m.into()))?;
        if !scan.rest.is_empty() {
            return Err(bad(WireError::Invalid { what: "batch has too many records" }));
        }
        Ok((out_ptr, out_len, scan.count, Some(scan.max_timestamp_ms)))
    }

    fn snapshot_inner(&mut self) -> Result<Option<(u32, usize)>, Error> {
        let Some(snapshot) = self.snapshot else {
            return Ok(None);
        };
        let status = self.call("silt_snapshot", &snapshot, self.result_ptr as i32)?;
        self.check_status("silt_snapshot", status)?;
        let (ptr, len) = self.read_slot();
        if len == 0 {
            return Ok(Some((0, 0)));
        }
        if len > self.limits.state_bytes_max {
            return Err(Error::StateLimit { bytes: len, max: self.limits.state_bytes_max });
        }
        let data = self.memory.data(&self.store);
        if abi::guest_range(data, ptr, len).is_none() {
            return Err(Error::BadOutput(format!(
                "silt_snapshot names state bytes {ptr}..{} outside its memory of {} bytes",
                ptr as usize + len,
                data.len()
            )));
        }
        Ok(Some((ptr, len)))
    }

    /// Calls `silt_counters` and checks the block's length and range; decoding is the
    /// caller's, so that the names it returns can borrow the guest's memory.
    fn counters_inner(&mut self) -> Result<(u32, usize), Error> {
        let Some(func) = self.counters else {
            return Ok((0, 0));
        };
        let status = self.call("silt_counters", &func, self.result_ptr as i32)?;
        self.check_status("silt_counters", status)?;
        let (ptr, len) = self.read_slot();
        if len == 0 {
            return Ok((0, 0));
        }
        if len > COUNTERS_BYTES_MAX {
            return Err(Error::BadOutput(format!(
                "silt_counters names a block of {len} bytes, over the limit of {COUNTERS_BYTES_MAX} bytes"
            )));
        }
        let data = self.memory.data(&self.store);
        if abi::guest_range(data, ptr, len).is_none() {
            return Err(Error::BadOutput(format!(
                "silt_counters names bytes {ptr}..{} outside its memory of {} bytes",
                ptr as usize + len,
                data.len()
            )));
        }
        Ok((ptr, len))
    }

    /// The input buffer, grown (a fresh `silt_alloc`) when `len` is larger than every batch
    /// before it: the next power of two of at least `Limits::input_buffer_bytes_min`.
    fn input_buffer(&mut self, len: usize) -> Result<u32, Error> {
        match self.input {
            Some((ptr, capacity)) if capacity >= len => Ok(ptr),
            _ => {
                // `len` is at most BATCH_BYTES_MAX (the batch passed `without_checksums`).
                let capacity = len.next_power_of_two().max(self.limits.input_buffer_bytes_min);
                let ptr = self.guest_alloc(capacity)?;
                self.input = Some((ptr, capacity));
                Ok(ptr)
            }
        }
    }

    /// Calls `silt_alloc(size)` and checks the address it returns.
    fn guest_alloc(&mut self, size: usize) -> Result<u32, Error> {
        let size_i32 =
            i32::try_from(size).map_err(|_| Error::Alloc { size, reason: "size above 2 GiB".into() })?;
        let alloc = self.alloc;
        let ptr = self.call("silt_alloc", &alloc, size_i32)? as u32;
        match abi::alloc_problem(self.memory.data(&self.store), ptr, size) {
            None => Ok(ptr),
            Some(reason) => Err(Error::Alloc { size, reason }),
        }
    }

    /// Writes into a range `guest_alloc` returned (and so checked; memory never shrinks).
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

    /// Turns a non-zero status into the guest's error message (at most its first 4096 bytes,
    /// invalid UTF-8 replaced).
    fn check_status(&self, call: &'static str, status: i32) -> Result<(), Error> {
        if status == 0 {
            return Ok(());
        }
        let message = abi::guest_message(self.memory.data(&self.store), status, self.read_slot());
        Err(Error::Guest { call, message })
    }

    /// One call into the guest with a full tank of fuel.
    fn call<P, R>(&mut self, name: &'static str, func: &TypedFunc<P, R>, args: P) -> Result<R, Error>
    where
        P: wasmi::WasmParams,
        R: wasmi::WasmResults,
    {
        self.store.set_fuel(self.limits.fuel_per_call).expect("the engine meters fuel");
        let result = func.call(&mut self.store, args);
        self.fuel_used = self.limits.fuel_per_call - self.store.get_fuel().unwrap_or(0);
        result.map_err(|e| call_error(name, &e, &self.store, &self.limits))
    }
}

/// Classifies an error out of a guest call: running out of fuel is the time limit; a trap
/// that follows a refused `memory.grow` says so.
fn call_error(call: &'static str, e: &wasmi::Error, store: &Store<Guard>, limits: &Limits) -> Error {
    let Some(code) = e.as_trap_code() else {
        return Error::Trap { call, message: e.to_string() };
    };
    if code == TrapCode::OutOfFuel {
        return Error::TimeLimit { call, fuel: limits.fuel_per_call };
    }
    let mut message = code.trap_message().to_string();
    let guard = store.data();
    if let Some(desired) = guard.memory_refused {
        message.push_str(&format!(
            " (after growing memory to {desired} bytes was refused: the memory limit is {} bytes)",
            limits.memory_bytes_max
        ));
    } else if guard.heap_exhausted {
        message.push_str(" (after growing memory failed: the host is out of heap)");
    }
    Error::Trap { call, message }
}
