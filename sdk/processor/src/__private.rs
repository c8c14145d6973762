//! What the export macros expand to: raw-pointer glue for wasm32, the global allocator and
//! the panic handler. Not a public API.

pub use alloc::vec::Vec;

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!(
    "silt-processor keeps the processor in a static that is only sound without threads; \
     build for wasm32-unknown-unknown without the atomics feature"
);

/// The panic handler: a trap. The host stops this processor with "unreachable" and nothing
/// of the batch is committed. Formatting the panic message first would need somewhere to put
/// it that the host reads, and the ABI has none for traps.
#[cfg(all(target_arch = "wasm32", feature = "wasm-runtime"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// dlmalloc: the allocator of Rust's own std on wasm32. It frees and reuses memory (a bump
/// allocator would leak across the millions of batches a processor sees), grows the memory
/// with `memory.grow`, and needs no imports.
#[cfg(all(target_arch = "wasm32", feature = "wasm-runtime"))]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use core::alloc::Layout;
    use core::cell::UnsafeCell;

    use crate::{Guest, Processor, Stateful};

    /// The one processor instance of a module, in a static.
    pub struct GuestCell<P>(UnsafeCell<Guest<P>>);

    // SAFETY: wasm32 without the atomics feature (checked above) has one thread, and the host
    // never re-enters the module during a call, so at most one `&mut` exists at a time.
    unsafe impl<P> Sync for GuestCell<P> {}

    impl<P> Default for GuestCell<P> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<P> GuestCell<P> {
        /// The guest before `silt_init`.
        pub const fn new() -> Self {
            GuestCell(UnsafeCell::new(Guest::new()))
        }

        /// # Safety
        /// Only from an export, which the host calls one at a time.
        #[allow(clippy::mut_from_ref)]
        pub unsafe fn get(&self) -> &mut Guest<P> {
            // SAFETY: see the `Sync` impl; the caller upholds one call at a time.
            unsafe { &mut *self.0.get() }
        }
    }

    /// `silt_alloc`: `size` bytes aligned to 8 from the global allocator, never freed, so
    /// they stay the host's until the instance ends; 0 when the allocator has no memory.
    pub fn alloc(size: i32) -> i32 {
        let size = size as u32 as usize;
        let Ok(layout) = Layout::from_size_align(size.max(1), 8) else { return 0 };
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc(layout) };
        ptr as usize as i32
    }

    /// Reads `(ptr, len)` as a byte slice; an empty slice when `len` is 0.
    ///
    /// # Safety
    /// The host guarantees `ptr..ptr+len` lies in a buffer `silt_alloc` gave it, which nothing
    /// in the module writes.
    unsafe fn slice<'a>(ptr: i32, len: i32) -> &'a [u8] {
        if len == 0 {
            return &[];
        }
        // SAFETY: as the function's contract says.
        unsafe { core::slice::from_raw_parts(ptr as u32 as usize as *const u8, len as u32 as usize) }
    }

    /// Fills the result slot with `bytes` and returns the status.
    ///
    /// # Safety
    /// `result_ptr` is the 8-byte slot `silt_alloc(8)` gave the host.
    unsafe fn answer(result_ptr: i32, bytes: &[u8], status: i32) -> i32 {
        let slot = result_ptr as u32 as usize as *mut u32;
        // SAFETY: the slot is 8 bytes, 8-aligned, and owned by the host for exactly this use.
        unsafe {
            slot.write(bytes.as_ptr() as usize as u32);
            slot.add(1).write(bytes.len() as u32);
        }
        status
    }

    fn status<P>(guest: &mut Guest<P>, result_ptr: i32, result: Result<(), crate::Error>) -> i32 {
        match result {
            // SAFETY (both arms): `result_ptr` comes from the host, per the ABI.
            Ok(()) => unsafe { answer(result_ptr, &[], 0) },
            Err(e) => unsafe { answer(result_ptr, guest.error_message(&e), 1) },
        }
    }

    /// `silt_init`.
    ///
    /// # Safety
    /// Arguments as the ABI defines them; one call at a time.
    pub unsafe fn init<P: Processor>(cell: &GuestCell<P>, ptr: i32, len: i32, result_ptr: i32) -> i32 {
        // SAFETY: the caller's contract.
        let guest = unsafe { cell.get() };
        let result = guest.init(unsafe { slice(ptr, len) });
        status(guest, result_ptr, result)
    }

    /// `silt_process`.
    ///
    /// # Safety
    /// Arguments as the ABI defines them; one call at a time.
    pub unsafe fn process<P: Processor>(cell: &GuestCell<P>, ptr: i32, len: i32, result_ptr: i32) -> i32 {
        // SAFETY: the caller's contract.
        let guest = unsafe { cell.get() };
        let batch = unsafe { slice(ptr, len) };
        match guest.process(batch) {
            // SAFETY: the output lives in the guest until the next call, as the ABI requires.
            Ok(out) => unsafe { answer(result_ptr, out, 0) },
            Err(e) => unsafe { answer(result_ptr, guest.error_message(&e), 1) },
        }
    }

    /// `silt_counters`.
    ///
    /// # Safety
    /// Arguments as the ABI defines them; one call at a time.
    pub unsafe fn counters<P: Processor>(cell: &GuestCell<P>, result_ptr: i32) -> i32 {
        // SAFETY: the caller's contract.
        let guest = unsafe { cell.get() };
        match guest.counters() {
            // SAFETY: the block lives in the guest until the next counters call.
            Ok(block) => unsafe { answer(result_ptr, block, 0) },
            Err(e) => unsafe { answer(result_ptr, guest.error_message(&e), 1) },
        }
    }

    /// `silt_snapshot`.
    ///
    /// # Safety
    /// Arguments as the ABI defines them; one call at a time.
    pub unsafe fn snapshot<P: Stateful>(cell: &GuestCell<P>, result_ptr: i32) -> i32 {
        // SAFETY: the caller's contract.
        let guest = unsafe { cell.get() };
        match guest.snapshot() {
            // SAFETY: the state lives in the guest until the next snapshot.
            Ok(state) => unsafe { answer(result_ptr, state, 0) },
            Err(e) => unsafe { answer(result_ptr, guest.error_message(&e), 1) },
        }
    }

    /// `silt_restore`.
    ///
    /// # Safety
    /// Arguments as the ABI defines them; one call at a time.
    pub unsafe fn restore<P: Stateful>(cell: &GuestCell<P>, ptr: i32, len: i32, result_ptr: i32) -> i32 {
        // SAFETY: the caller's contract.
        let guest = unsafe { cell.get() };
        let result = guest.restore(unsafe { slice(ptr, len) });
        status(guest, result_ptr, result)
    }
}
