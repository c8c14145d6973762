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
