//! Host runtime for Silt processors: compiles, loads and runs WebAssembly modules that follow
//! `docs/processor-abi.md`, one call per record batch, under per-processor limits.
//!
//! A broker holds one [`Runtime`] (one wasmtime engine with cranelift, and an epoch ticker
//! thread). [`Runtime::compile`] checks a module against the ABI and returns an artefact;
//! [`Runtime::load`] turns an artefact into a [`Module`]; [`Module::instantiate`] makes an
//! [`Instance`] with its own store and limits, and the instance's `process`, `snapshot`,
//! `restore` and `counters` are the ABI's calls. Errors are one [`RuntimeError`] enum whose messages name what
//! an operator or a module author has to change.
//!
//! # What it enforces
//!
//! - *Nothing imported.* A module with any import is refused at compile, naming it; no
//!   function is ever linked. With NaN canonicalisation, deterministic relaxed SIMD, no
//!   threads, no memory64 and no multi-memory, a module computes the same bytes everywhere.
//! - *Time per call*: epoch interruption. The ticker adds one to the engine's epoch every
//!   `epoch_tick_ms`; each call gets a deadline of `ceil(call_time_ms_max / epoch_tick_ms)`
//!   ticks and traps past it ([`RuntimeError::TimeLimit`]). A start function is under the same
//!   limit. The ticker lives as long as the runtime or anything made from it.
//! - *Memory*: a `StoreLimits` limiter per store; `memory.grow` past `memory_bytes_max`
//!   returns -1, and a trap that follows says the limit was hit. Tables are capped at 20,000
//!   elements, so `table.grow` cannot take host memory either.
//! - *Output*: the result slot's length is checked against `output_bytes_max` (or
//!   `state_bytes_max`) and its range against memory *before* anything is read; output records
//!   are checked as record-batch validation rule 6 and counted (at most 1,000,000) while being
//!   wrapped into a batch by `silt_wire::batch::from_records`. A counters block is capped at
//!   4 KiB the same way and read by `silt_wire::counters::decode`, the guest SDK's decoder.
//! - *Failure stays local*: any error poisons that instance; the runtime and every other
//!   instance carry on.
//!
//! # What it deliberately does not do
//!
//! No WASI, no host functions, no I/O, no clock; no storage: caching artefacts (keyed by module
//! hash and [`Runtime::compatibility_key`]), checkpoints and snapshots is the caller's job, as is
//! deciding when to snapshot, and validating batches (the input must be a stamped, validated
//! batch; it is only re-checked in debug builds). No async: a call blocks its thread for at most
//! its time limit, so a broker runs instances on blocking threads (with the default 512 KiB wasm
//! stack, Rust's default 2 MiB thread stack is enough). No fuel: epochs cost far less and
//! determinism of *output* does not depend on where a call is interrupted, since an interrupted
//! call commits nothing.
//!
//! # Artefacts
//!
//! An artefact is wasmtime's serialized module behind a 44-byte frame: magic `siltart1`, the
//! compatibility key, and a CRC-32C of the rest. `Module::deserialize` runs its input as native
//! code unchecked; the frame turns a damaged or foreign artefact into
//! [`RuntimeError::Artefact`] instead, and the caller recompiles from the wasm.
//!
//! # Measurements
//!
//! `cargo bench -p silt-runtime --bench filter` on the 2-core development machine (AMD EPYC,
//! other work running alongside), a threshold filter over one 1000-record batch of ~100-byte
//! JSON sensor readings, keeping about half:
//!
//! | what | time | per record |
//! | --- | --- | --- |
//! | native Rust: same record walk, same copies, same output wrapping | 10.8 us | 10.8 ns |
//! | hand-written WAT through `Instance::process` (copy in, call, check, wrap) | 11.8 us | 11.8 ns |
//! | a processor that emits nothing: the host's fixed cost (copy in, one call) | 0.85 us | 0.85 ns |
//! | the WAT filter on the same batch LZ4-compressed (decompression included) | 36.7 us | 36.7 ns |
//!
//! So the processor runs at 1.09x native. Most of both rows is the output check and wrap,
//! which any host must do: `from_records` over all 1000 records of this batch took 13.5 us in
//! a throwaway bench (3.2 us of it the CRC-32C of 105 KB), and the filter keeps about half. The WAT filter was written as a compiler would emit it: one-byte varints read
//! inline, one `memory.copy` per run of adjacent kept records (cranelift compiles
//! `memory.copy` to a call). Its first, naive version (a function call per varint, a copy per
//! record) took 19.7 us; cranelift's intra-module inlining (`Config::compiler_inlining`) won
//! back 28% of that but made compilation 30% slower and is not on by default in wasmtime, so it
//! stays off: LLVM-compiled guests are inlined already.
//!
//! | lifecycle step | time |
//! | --- | --- |
//! | `compile` of the WAT filter | 1.2 ms |
//! | `load` of its artefact (deserialize) | 28 us |
//! | `instantiate` + drop, pooling allocator | 3.1 us |
//! | `instantiate` + drop, on-demand allocation | 8.7-12.3 us (two runs) |
//!
//! Instantiation includes the store, `silt_abi_version`, `silt_alloc(8)` and `silt_init`. The
//! pool makes it 3-4x faster by reusing pre-reserved, copy-on-write memory slots instead of
//! mapping memory per instance. Its price is address space, not RAM: with the default 128
//! slots and the default 4 GiB + 32 MiB reservation per linear memory (which lets cranelift
//! drop bounds checks), a `Runtime::new` took VmSize from 79 MiB to 516 GiB and VmRSS from 3
//! to 4 MiB (read from `/proc/self/status`). Where address space is limited (`ulimit -v`) the
//! pool cannot be reserved and the runtime falls back to on-demand allocation with a
//! `tracing` warning; each on-demand instance still reserves 4 GiB of address space.

mod config;
mod error;
mod instance;
mod params;
mod runtime;

pub use config::{Limits, RuntimeConfig, MEMORY_BYTES_CAP};
pub use error::RuntimeError;
pub use instance::{Instance, Module, ABI_VERSION, GUEST_MESSAGE_BYTES_MAX, INPUT_BUFFER_BYTES_MIN};
pub use params::{PARAMS_PAIRS_MAX, PARAM_KEY_BYTES_MAX, PARAM_VALUE_BYTES_MAX};
pub use runtime::Runtime;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_cross_threads_as_the_broker_needs() {
        // Proves the thread-safety contract: Runtime and Module are shared, Instance is moved.
        assert_send_sync::<Runtime>();
        assert_send_sync::<Module>();
        assert_send::<Instance>();
    }
}
