use alloc::string::String;

use thiserror::Error;

/// Everything that can go wrong loading or running a processor on the device tier. The
/// messages follow the broker's (`silt_runtime::RuntimeError`), so an operator reads the same
/// words whichever tier stopped a processor.
#[derive(Debug, Error)]
pub enum Error {
    /// The bytes are not a core WebAssembly module.
    #[error("module is not WebAssembly ({0})")]
    NotWasm(&'static str),
    /// The module does not validate (including proposals this tier does not run, such as SIMD).
    #[error("module is invalid: {0}")]
    Invalid(String),
    /// The module imports something; processors import nothing.
    #[error("module imports \"{module}\".\"{name}\"; processors may import nothing (docs/processor-abi.md)")]
    Import { module: String, name: String },
    /// A required export is missing, or an ABI export has the wrong type.
    #[error("module export \"{name}\" {reason} (docs/processor-abi.md)")]
    Export { name: &'static str, reason: String },
    /// `silt_abi_version` returned something other than 1.
    #[error("processor ABI version {0}; this host supports 1")]
    AbiVersion(i32),
    /// The guest returned an error status; the message is its own (at most 4096 bytes).
    #[error("processor failed in {call}: {message}")]
    Guest { call: &'static str, message: String },
    /// The guest trapped (unreachable, out-of-bounds access, call stack exhausted, ...).
    /// wasmi reports no function name or backtrace, so `call` is the ABI call that trapped.
    #[error("processor trapped in {call}: {message}")]
    Trap { call: &'static str, message: String },
    /// A call used up `Limits::fuel_per_call`.
    #[error("processor exceeded its time limit of {fuel} fuel (wasm instructions) in {call}")]
    TimeLimit { call: &'static str, fuel: u64 },
    /// The module needs more linear memory than `Limits::memory_bytes_max` just to start.
    #[error("processor needs {needed} bytes of memory to start, more than its limit of {bytes} bytes")]
    MemoryLimit { needed: usize, bytes: usize },
    /// `silt_process` named more output bytes than `Limits::output_bytes_max`.
    #[error("processor output of {bytes} bytes exceeds the limit of {max} bytes")]
    OutputLimit { bytes: usize, max: usize },
    /// `silt_snapshot` named more state bytes than `Limits::state_bytes_max`, or a state
    /// handed to `restore` is larger than that.
    #[error("processor state of {bytes} bytes exceeds the limit of {max} bytes")]
    StateLimit { bytes: usize, max: usize },
    /// The output or a result slot breaks the ABI (outside memory, malformed records or
    /// counters block).
    #[error("processor output is malformed: {0}")]
    BadOutput(String),
    /// `silt_alloc` returned 0, a misaligned address or a range outside memory.
    #[error("processor's silt_alloc({size}) {reason}")]
    Alloc { size: usize, reason: String },
    /// Parameters break the ABI's limits.
    #[error("processor parameters are invalid: {0}")]
    Params(String),
    /// The instance could not be created.
    #[error("processor could not be instantiated: {0}")]
    Instantiate(String),
    /// `process` was given bytes that are not one uncompressed record batch with well-framed
    /// records: the caller's mistake, not the module's.
    #[error("process was given bytes that are not one uncompressed record batch: {0}")]
    Input(silt_wire::WireError),
    /// A call the ABI does not allow at this point (for example `restore` after `process`).
    #[error("{0}")]
    Usage(&'static str),
    /// An earlier call failed; the instance is never entered again.
    #[error("processor instance failed earlier and is stopped; start a fresh instance")]
    Poisoned,
}
