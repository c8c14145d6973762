//! Minimal WebAssembly modules of the processor ABI for tests, written in WebAssembly text.
//! Included by server/broker/tests/support and device-bridge/bridge/tests/support.
#![allow(dead_code)]

/// A minimal module of the processor ABI in WebAssembly text, with `process` as the body of
/// `silt_process` (params `$ptr`, `$len`, `$res`; returns the status). Its allocator bumps
/// from 1 KiB and grows memory as needed.
pub fn abi_module(process: &str) -> Vec<u8> {
    abi_module_with("", process)
}

/// [`abi_module`] with extra module fields (imports, globals) before the functions.
pub fn abi_module_with(extra: &str, process: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  {extra}
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "silt_abi_version") (result i32) (i32.const 1))
  (func (export "silt_alloc") (param $n i32) (result i32) (local $p i32) (local $end i32)
    (local.set $p (global.get $bump))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (block $ok
      (br_if $ok (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1)))
      (return (i32.const 0)))
    (global.set $bump (local.get $end))
    (local.get $p))
  (func (export "silt_init") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "silt_process") (param $ptr i32) (param $len i32) (param $res i32) (result i32)
    {process})
)"#
    );
    wat::parse_str(&text).expect("test module is valid WAT")
}

/// `silt_process` body that outputs every input record unchanged: the records section of the
/// input batch, whose deltas are already relative to its first timestamp.
pub const PASSTHROUGH: &str = "(i32.store (local.get $res) (i32.add (local.get $ptr) (i32.const 68)))
    (i32.store offset=4 (local.get $res) (i32.sub (local.get $len) (i32.const 68)))
    (i32.const 0)";

/// Module fields for [`abi_module_with`] that make a module stateful with counters: the i64
/// globals `$skipped` and `$batches`, which `silt_counters` reports as `skipped` and `batches`
/// (a block kept at address 256) and `silt_snapshot` and `silt_restore` carry (16 bytes at
/// 512). A `silt_process` body changes the globals: [`SKIP_ALL`] and [`COUNT_BATCH`].
pub const COUNTERS: &str = r#"
  (global $skipped (mut i64) (i64.const 0))
  (global $batches (mut i64) (i64.const 0))
  (data (i32.const 256) "\02\00\00\00\07\00\00\00skipped\00\00\00\00\00\00\00\00\07\00\00\00batches\00\00\00\00\00\00\00\00")
  (func (export "silt_counters") (param $res i32) (result i32)
    (i64.store (i32.const 271) (global.get $skipped))
    (i64.store (i32.const 290) (global.get $batches))
    (i32.store (local.get $res) (i32.const 256))
    (i32.store offset=4 (local.get $res) (i32.const 42))
    (i32.const 0))
  (func (export "silt_snapshot") (param $res i32) (result i32)
    (i64.store (i32.const 512) (global.get $skipped))
    (i64.store (i32.const 520) (global.get $batches))
    (i32.store (local.get $res) (i32.const 512))
    (i32.store offset=4 (local.get $res) (i32.const 16))
    (i32.const 0))
  (func (export "silt_restore") (param $ptr i32) (param $len i32) (param $res i32) (result i32)
    (if (i32.ne (local.get $len) (i32.const 16)) (then (unreachable)))
    (global.set $skipped (i64.load (local.get $ptr)))
    (global.set $batches (i64.load offset=8 (local.get $ptr)))
    (i32.const 0))
"#;

/// `silt_process` body statements for [`COUNTERS`] that count one batch in `$batches`.
pub const COUNT_BATCH: &str = "(global.set $batches (i64.add (global.get $batches) (i64.const 1)))";

/// `silt_process` body for [`COUNTERS`] that emits nothing, counting the batch's records
/// (its header's record count, at byte 48) in `$skipped` and the batch in `$batches`.
pub const SKIP_ALL: &str = "(global.set $skipped (i64.add (global.get $skipped) (i64.extend_i32_u (i32.load offset=48 (local.get $ptr)))))
    (global.set $batches (i64.add (global.get $batches) (i64.const 1)))
    (i32.store offset=4 (local.get $res) (i32.const 0))
    (i32.const 0)";
