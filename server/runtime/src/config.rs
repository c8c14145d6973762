use silt_wire::batch::{BATCH_BYTES_MAX, HEADER_LEN};

use crate::RuntimeError;

/// Largest linear memory a processor may ever have, whatever its `Limits` say. The pooling
/// allocator makes every slot this big (in address space, not in RAM), and 256 MiB is four
/// times the default per-processor limit: room for a generous deployment without letting one
/// module claim gigabytes of a 24 GiB machine.
pub const MEMORY_BYTES_CAP: usize = 256 * 1024 * 1024;

/// Engine-wide settings: one per broker.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Pre-reserve instance slots (pooling allocator). Falls back to on-demand allocation,
    /// with a warning, when the reservation fails (for example under `ulimit -v`).
    pub pooling: bool,
    /// Most processor instances alive at once (pool slots). Only enforced with pooling.
    pub instances_max: u32,
    /// Period of the epoch ticker that enforces `Limits::call_time_ms_max`. A call gets
    /// `ceil(call_time_ms_max / epoch_tick_ms)` ticks and the first may come at once, so it is
    /// stopped within one tick of its limit (up to a tick early, or later if the ticker thread
    /// is scheduled late). 5 ms keeps that error at 0.5% of the default 1000 ms limit for one
    /// atomic increment per tick.
    pub epoch_tick_ms: u64,
    /// Compile for start-up speed rather than run speed: cranelift without optimisation and
    /// with its single-pass register allocator. Measured on the example processors
    /// (`cargo bench -p silt-runtime --bench examples`): compile 2.2x faster (threshold-filter
    /// 34.8 -> 15.9 ms), code 2x slower per event. For a first tier that runs while the
    /// optimised build compiles.
    pub quick_compile: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { pooling: true, instances_max: 128, epoch_tick_ms: 5, quick_compile: false }
    }
}

/// Per-deployment limits (docs/processor-abi.md, "Limits").
#[derive(Clone, Debug)]
pub struct Limits {
    /// Linear memory; `memory.grow` beyond it returns -1. At most [`MEMORY_BYTES_CAP`].
    pub memory_bytes_max: usize,
    /// Wall time of one call into the guest.
    pub call_time_ms_max: u64,
    /// Output records of one `silt_process` call; at most what fits in one batch.
    pub output_bytes_max: usize,
    /// A state snapshot, taken or restored.
    pub state_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes_max: 64 * 1024 * 1024,
            call_time_ms_max: 1000,
            output_bytes_max: BATCH_BYTES_MAX - HEADER_LEN,
            state_bytes_max: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Refuses limits the runtime cannot honour.
    pub(crate) fn check(&self) -> Result<(), RuntimeError> {
        if self.memory_bytes_max > MEMORY_BYTES_CAP {
            return Err(RuntimeError::Usage("Limits::memory_bytes_max is above MEMORY_BYTES_CAP (256 MiB)"));
        }
        if self.call_time_ms_max == 0 {
            return Err(RuntimeError::Usage("Limits::call_time_ms_max must be at least 1 ms"));
        }
        if self.output_bytes_max > BATCH_BYTES_MAX - HEADER_LEN {
            return Err(RuntimeError::Usage(
                "Limits::output_bytes_max is above what one batch holds (BATCH_BYTES_MAX - HEADER_LEN)",
            ));
        }
        Ok(())
    }
}
