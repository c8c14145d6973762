//! Per-instance limits (docs/processor-abi.md, "Limits"), sized for a microcontroller by
//! default.

use silt_wire::batch::{BATCH_BYTES_MAX, HEADER_LEN};

use crate::Error;

/// Largest linear memory any instance may have, whatever its `Limits` say: the broker's cap
/// (`silt_runtime::MEMORY_BYTES_CAP`), so that a limit a broker accepts is accepted here too.
pub const MEMORY_BYTES_CAP: usize = 256 * 1024 * 1024;

/// Limits of one instance. Every call into the guest runs under them; crossing one fails the
/// call and poisons the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The module's whole linear memory: its declared initial pages and every page it grows.
    /// `memory.grow` past it returns -1. wasmi keeps linear memory on the heap, so this is
    /// also what an instance may take of the device's RAM for its memory.
    pub memory_bytes_max: usize,
    /// wasmi fuel each call starts with: the time limit of the device tier. Fuel counts
    /// executed instructions (about one unit each; bulk memory operations per byte copied), so
    /// a call stops at the same instruction on every device and every run, unlike a wall-clock
    /// limit; running out is [`Error::TimeLimit`].
    pub fuel_per_call: u64,
    /// Bytes of output records one `silt_process` may name; checked before anything is read.
    pub output_bytes_max: usize,
    /// Bytes of a state snapshot, taken or restored.
    pub state_bytes_max: usize,
    /// Smallest input buffer the host asks `silt_alloc` for; a batch larger than every one
    /// before gets a new buffer of the next power of two of at least this (a power of two).
    /// The ABI says 64 KiB, which is the broker's value ([`Limits::broker_like`]); the device
    /// default is smaller, see [`Limits::default`].
    pub input_buffer_bytes_min: usize,
}

/// Device defaults.
///
/// - `memory_bytes_max`, 256 KiB (4 pages): microcontrollers that run a gateway have 256 KiB
///   to a few MiB of SRAM (QEMU's mps2-an386, the test firmware's board, 4 MiB), and wasmi's
///   compiled code, value stack and tables come on top of linear memory. Rust modules linked
///   with default flags declare 1 MiB of shadow stack (17 pages of initial memory) and are
///   refused at instantiation under this limit: link them with a smaller stack
///   (`-C link-arg=-zstack-size=16384`) or raise the limit.
/// - `fuel_per_call`, 5 million. Measured with this crate on the development machine
///   (release build, batches of sensor readings): the examples use 6,300 (threshold-filter)
///   to 38,000 (unit-convert) fuel per reading, so a call has room for 130 to 800 readings,
///   more than a device batches; wasmi burns 5 million fuel in 3 to 10 ms there. A Cortex-M4
///   at 100-200 MHz is perhaps 100 times slower (an estimate, not measured on hardware): about
///   a second before an endless loop is stopped.
/// - `output_bytes_max` and `state_bytes_max`, 64 KiB each: a quarter of the default memory;
///   a device's batches are small, and a snapshot has to fit in the flash it is saved to.
/// - `input_buffer_bytes_min`, 4 KiB rather than the ABI's 64 KiB: 64 KiB would be a quarter
///   of the default memory for batches of a few readings. This is a deviation from
///   docs/processor-abi.md ("Memory ownership"); it changes only the sizes the host asks
///   `silt_alloc` for, never what a module computes.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes_max: 256 * 1024,
            fuel_per_call: 5_000_000,
            output_bytes_max: 64 * 1024,
            state_bytes_max: 64 * 1024,
            input_buffer_bytes_min: 4 * 1024,
        }
    }
}

impl Limits {
    /// The broker's default limits (`silt_runtime::Limits::default()`), with fuel standing in
    /// for its 1000 ms of wall time: a billion units, which took 0.7 to 2 s of interpretation
    /// on the development machine (real code to a bare loop), so that a module the broker runs
    /// within its time limit runs here too. With the broker's 64 KiB input buffers the host
    /// makes exactly the broker's `silt_alloc` calls, so a module sees the same memory layout
    /// on both tiers. For tests of identity with the broker, and for a bridge-class host with
    /// memory to spare.
    pub fn broker_like() -> Limits {
        Limits {
            memory_bytes_max: 64 * 1024 * 1024,
            fuel_per_call: 1_000_000_000,
            output_bytes_max: BATCH_BYTES_MAX - HEADER_LEN,
            state_bytes_max: 64 * 1024 * 1024,
            input_buffer_bytes_min: 64 * 1024,
        }
    }

    /// Refuses limits the host cannot honour.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.memory_bytes_max > MEMORY_BYTES_CAP {
            return Err(Error::Usage("Limits::memory_bytes_max is above MEMORY_BYTES_CAP (256 MiB)"));
        }
        if self.fuel_per_call == 0 {
            return Err(Error::Usage("Limits::fuel_per_call must be at least 1"));
        }
        if self.output_bytes_max > BATCH_BYTES_MAX - HEADER_LEN {
            return Err(Error::Usage(
                "Limits::output_bytes_max is above what one batch holds (BATCH_BYTES_MAX - HEADER_LEN)",
            ));
        }
        if !self.input_buffer_bytes_min.is_power_of_two() || self.input_buffer_bytes_min > BATCH_BYTES_MAX {
            return Err(Error::Usage(
                "Limits::input_buffer_bytes_min must be a power of two of at most BATCH_BYTES_MAX",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_broker_values_are_accepted_and_bad_ones_refused() {
        // Proves both presets pass the checks and each check refuses what it names.
        Limits::default().check().unwrap();
        Limits::broker_like().check().unwrap();
        let bad = [
            Limits { memory_bytes_max: MEMORY_BYTES_CAP + 1, ..Limits::default() },
            Limits { fuel_per_call: 0, ..Limits::default() },
            Limits { output_bytes_max: BATCH_BYTES_MAX, ..Limits::default() },
            Limits { input_buffer_bytes_min: 3000, ..Limits::default() },
            Limits { input_buffer_bytes_min: 0, ..Limits::default() },
        ];
        for limits in bad {
            assert!(matches!(limits.check(), Err(Error::Usage(_))), "{limits:?}");
        }
    }
}
