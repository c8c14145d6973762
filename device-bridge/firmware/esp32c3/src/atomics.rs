//! Atomic read-modify-write for the device tier's build (feature `wasm`).
//!
//! The ESP32-C3 has no atomic instructions (RV32IMC, no A extension). Rust's target for it
//! provides atomic loads and stores only, so `alloc::sync::Arc`, which the wasmi interpreter
//! uses throughout, does not exist there. scripts/firmware-esp32c3.sh builds the `wasm`
//! firmware for the same target with compare-and-swap declared available; the target keeps
//! LLVM's `forced-atomics`, under which every read-modify-write becomes a call to a
//! `__sync_*` function, which the program must supply. These supply them: the chip has one
//! core, so an operation with machine interrupts disabled is atomic.

use core::arch::asm;

/// Runs `f` with machine-mode interrupts disabled (mstatus.MIE), restoring them as they were.
#[inline(always)]
fn interrupts_off<R>(f: impl FnOnce() -> R) -> R {
    let mstatus: usize;
    // SAFETY: clears MIE and reads the old mstatus; only interrupt delivery changes.
    unsafe { asm!("csrrci {0}, mstatus, 8", out(reg) mstatus) };
    let result = f();
    if mstatus & 8 != 0 {
        // SAFETY: sets MIE again, as it was before.
        unsafe { asm!("csrsi mstatus, 8") };
    }
    result
}

/// One `__sync_fetch_and_OP_N`: applies `op` to the value at `ptr` and returns the old value.
macro_rules! fetch_and {
    ($name:ident, $t:ty, |$old:ident, $v:ident| $new:expr) => {
        /// # Safety
        /// `ptr` is valid and aligned for reads and writes of the type.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ptr: *mut $t, $v: $t) -> $t {
            interrupts_off(|| {
                // SAFETY: the caller's promise; interrupts are off, and there is one core.
                let $old = unsafe { ptr.read_volatile() };
                unsafe { ptr.write_volatile($new) };
                $old
            })
        }
    };
}

/// `__sync_val_compare_and_swap_N`: stores `new` when the value is `expected`; returns the old.
macro_rules! compare_and_swap {
    ($name:ident, $t:ty) => {
        /// # Safety
        /// `ptr` is valid and aligned for reads and writes of the type.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ptr: *mut $t, expected: $t, new: $t) -> $t {
            interrupts_off(|| {
                // SAFETY: as in `fetch_and`.
                let old = unsafe { ptr.read_volatile() };
                if old == expected {
                    unsafe { ptr.write_volatile(new) };
                }
                old
            })
        }
    };
}

/// Every read-modify-write LLVM may call for one width: `$u` unsigned, `$i` signed.
macro_rules! width {
    ($u:ty, $i:ty, $cas:ident, $swap:ident, $add:ident, $sub:ident, $and:ident, $or:ident, $xor:ident,
     $nand:ident, $max:ident, $min:ident, $umax:ident, $umin:ident) => {
        compare_and_swap!($cas, $u);
        fetch_and!($swap, $u, |_old, v| v);
        fetch_and!($add, $u, |old, v| old.wrapping_add(v));
        fetch_and!($sub, $u, |old, v| old.wrapping_sub(v));
        fetch_and!($and, $u, |old, v| old & v);
        fetch_and!($or, $u, |old, v| old | v);
        fetch_and!($xor, $u, |old, v| old ^ v);
        fetch_and!($nand, $u, |old, v| !(old & v));
        fetch_and!($max, $i, |old, v| old.max(v));
        fetch_and!($min, $i, |old, v| old.min(v));
        fetch_and!($umax, $u, |old, v| old.max(v));
        fetch_and!($umin, $u, |old, v| old.min(v));
    };
}

width!(
    u8,
    i8,
    __sync_val_compare_and_swap_1,
    __sync_lock_test_and_set_1,
    __sync_fetch_and_add_1,
    __sync_fetch_and_sub_1,
    __sync_fetch_and_and_1,
    __sync_fetch_and_or_1,
    __sync_fetch_and_xor_1,
    __sync_fetch_and_nand_1,
    __sync_fetch_and_max_1,
    __sync_fetch_and_min_1,
    __sync_fetch_and_umax_1,
    __sync_fetch_and_umin_1
);
width!(
    u16,
    i16,
    __sync_val_compare_and_swap_2,
    __sync_lock_test_and_set_2,
    __sync_fetch_and_add_2,
    __sync_fetch_and_sub_2,
    __sync_fetch_and_and_2,
    __sync_fetch_and_or_2,
    __sync_fetch_and_xor_2,
    __sync_fetch_and_nand_2,
    __sync_fetch_and_max_2,
    __sync_fetch_and_min_2,
    __sync_fetch_and_umax_2,
    __sync_fetch_and_umin_2
);
width!(
    u32,
    i32,
    __sync_val_compare_and_swap_4,
    __sync_lock_test_and_set_4,
    __sync_fetch_and_add_4,
    __sync_fetch_and_sub_4,
    __sync_fetch_and_and_4,
    __sync_fetch_and_or_4,
    __sync_fetch_and_xor_4,
    __sync_fetch_and_nand_4,
    __sync_fetch_and_max_4,
    __sync_fetch_and_min_4,
    __sync_fetch_and_umax_4,
    __sync_fetch_and_umin_4
);
