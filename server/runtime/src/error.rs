use thiserror::Error;

/// Everything that can go wrong compiling, loading or running a processor. Each message names
/// what the operator (or the module's author) has to change.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The bytes are not a core WebAssembly module.
    #[error("module is not WebAssembly ({0})")]
    NotWasm(&'static str),
    /// The module does not validate or does not compile.
    #[error("module is invalid: {0}")]
    Invalid(String),
    /// The module imports something; processors import nothing.
    #[error("module imports \"{module}\".\"{name}\"; processors may import nothing (docs/processor-abi.md)")]
    Import { module: String, name: String },
    /// A required export is missing or has the wrong type.
    #[error("module export \"{name}\" {reason} (docs/processor-abi.md)")]
    Export { name: String, reason: String },
    /// `silt_abi_version` returned something other than 1.
    #[error("processor ABI version {0}; this broker supports 1")]
    AbiVersion(i32),
    /// The guest returned an error status; the message is its own.
    #[error("processor failed in {call}: {message}")]
    Guest { call: &'static str, message: String },
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, ...).
    #[error("processor trapped in {call}: {message}")]
    Trap { call: &'static str, message: String },
    /// A call ran past `Limits::call_time_ms_max`.
    #[error("processor exceeded its time limit of {ms} ms in {call}")]
    TimeLimit { call: &'static str, ms: u64 },
    /// The module needs more linear memory than `Limits::memory_bytes_max` just to start.
    #[error("processor needs more memory than its limit of {bytes} bytes to start")]
    MemoryLimit { bytes: usize },
    /// `silt_process` named more output bytes than `Limits::output_bytes_max`.
    #[error("processor output of {bytes} bytes exceeds the limit of {max} bytes")]
    OutputLimit { bytes: usize, max: usize },
    /// `silt_snapshot` named more state bytes than `Limits::state_bytes_max`, or a state
    /// handed to `restore` is larger than that.
    #[error("processor state of {bytes} bytes exceeds the limit of {max} bytes")]
    StateLimit { bytes: usize, max: usize },
    /// The output or a result slot breaks the ABI (outside memory, malformed records).
    #[error("processor output is malformed: {0}")]
    BadOutput(String),
    /// `silt_alloc` returned 0, a misaligned address or a range outside memory.
    #[error("processor's silt_alloc({size}) {reason}")]
    Alloc { size: usize, reason: String },
    /// Deployment parameters break the ABI's limits.
    #[error("processor parameters are invalid: {0}")]
    Params(String),
    /// The instance could not be created (for example, every pool slot is in use).
    #[error("processor could not be instantiated: {0}")]
    Instantiate(String),
    /// A compiled artefact does not load; the caller recompiles from the wasm.
    #[error("compiled artefact does not load ({0}); recompile the module")]
    Artefact(String),
    /// The engine could not be set up.
    #[error("wasm engine could not be set up: {0}")]
    Engine(String),
    /// A call the ABI does not allow at this point (for example `restore` after `process`).
    #[error("{0}")]
    Usage(&'static str),
    /// An earlier call failed; the instance is never entered again.
    #[error("processor instance failed earlier and is stopped; start a fresh instance")]
    Poisoned,
}
