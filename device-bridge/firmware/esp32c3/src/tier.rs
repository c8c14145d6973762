//! The device tier on the ESP32-C3 (feature `wasm`): a processor module (`docs/processor-abi.md`)
//! run on the temperature readings before they are sent, delivered over the frame link
//! (`silt device deploy`), on the same code as the QEMU firmware's
//! (`silt_device_runtime::readings`, the wasmi interpreter). This module fixes what the chip
//! can give it.
//!
//! The ESP32-C3 has about 320 KiB of RAM for the application, and the WiFi driver takes a
//! third of it, so a module gets one page of linear memory (64 KiB) rather than the default 4,
//! and a package at most [`SLOT_BYTES`]. A module for this chip is linked for that: in C,
//! `-Wl,--initial-memory=65536,-z,stack-size=8192`; in Rust, `-C link-arg=-zstack-size=8192`
//! and a small data segment. A larger package is refused at its first chunk and reported
//! (`silt device status`), and a module that needs more memory fails to start and is reported:
//! the device goes on sending raw readings.

use silt_device_runtime::Limits;

pub use silt_device_runtime::readings::{Processed, Processor, Shared, to_send};

/// Bytes of the heap region the processor allocates from: the module, wasmi's compiled code,
/// value stack and tables, and the module's linear memory.
pub const HEAP_BYTES: usize = 96 * 1024;
/// Bytes of the RAM slot a module package is written to while it arrives, apart from the
/// running module (manifest and module: the C threshold filter's package is about 4.6 KB).
pub const SLOT_BYTES: usize = 32 * 1024;
/// Linear memory a module may have: one page.
pub const MEMORY_BYTES_MAX: usize = 64 * 1024;

/// What a module may take of this chip: the device tier's defaults but for memory.
pub fn limits() -> Limits {
    Limits { memory_bytes_max: MEMORY_BYTES_MAX, ..Limits::default() }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::RefCell;

    use silt_frame::{ReadingKind, Time};
    use silt_link::Payload;

    use super::*;
    use crate::link::{Queued, Sample};

    /// Passes every record through, as a 1-page module: the processor ABI in WAT, small enough
    /// for this chip's limits.
    const PASSTHROUGH: &str = r#"(module
      (memory (export "memory") 1)
      (global $next (mut i32) (i32.const 1024))
      (func (export "silt_abi_version") (result i32) (i32.const 1))
      (func (export "silt_alloc") (param $n i32) (result i32) (local $p i32)
        (local.set $p (global.get $next))
        (global.set $next (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
        (local.get $p))
      (func (export "silt_init") (param i32 i32 i32) (result i32) (i32.const 0))
      (func (export "silt_process") (param $b i32) (param $len i32) (param $r i32) (result i32)
        (i32.store (local.get $r) (i32.add (local.get $b) (i32.const 68)))
        (i32.store offset=4 (local.get $r) (i32.sub (local.get $len) (i32.const 68)))
        (i32.const 0)))"#;

    fn clock() -> u64 {
        0
    }

    /// A sample queued behind a running module goes out as the module leaves it (a record passed
    /// through unchanged, as the reading it was made from), and the same at every
    /// retransmission; the free-heap reading is not the module's.
    #[test]
    fn a_queued_sample_goes_out_as_the_module_leaves_it() {
        let wasm = wat::parse_str(PASSTHROUGH).unwrap();
        let processor: Shared<'_> = RefCell::new(Processor::new(clock, "esp32c3-1", limits()));
        processor.borrow_mut().start(3, ReadingKind::Temperature, &wasm, &[]).unwrap();
        let sample = Sample { tick_ms: 5_000, temperature_c: 23.5, free_heap_bytes: 40_000 };
        let queued = Queued::processed_by(sample, &processor);
        let (time, first) = queued.data(7);
        assert_eq!(time, Time::TickMs(5_000));
        let again = queued.data(7);
        assert_eq!(std::format!("{first:?}"), std::format!("{:?}", again.1), "processed once");
        assert_eq!(processor.borrow().stats().records_in, 1);
        assert_eq!(std::format!("{first:?}"), std::format!("{:?}", sample.readings().1));
    }

    /// A module that needs more than one page of memory does not start on this chip.
    #[test]
    fn a_module_wanting_two_pages_does_not_start() {
        let wasm = wat::parse_str(
            PASSTHROUGH.replace("(memory (export \"memory\") 1)", "(memory (export \"memory\") 2)"),
        )
        .unwrap();
        let mut processor = Processor::new(clock, "esp32c3-1", limits());
        let e = processor.start(3, ReadingKind::Temperature, &wasm, &[]).unwrap_err();
        assert!(std::format!("{e}").contains("memory"), "{e}");
        assert_eq!(processor.version(), 0);
    }
}
