//! WAT pieces and modules that the broker's host (`silt-runtime`) and the device's host
//! (`silt-device-runtime`) test with alike: the device crate's tests include this file by
//! path, so both tiers are held to the same modules.
#![allow(dead_code)]

/// One page of exported memory and a bump `silt_alloc` that grows memory and returns 0 when
/// it cannot; the heap starts at 1024, so data segments below that are safe.
pub const MEMORY_AND_ALLOC: &str = r#"
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "silt_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.div_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                      (i32.const 65536)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
"#;

pub const ABI_V1: &str = r#"(func (export "silt_abi_version") (result i32) (i32.const 1))"#;
pub const INIT_OK: &str = r#"(func (export "silt_init") (param i32 i32 i32) (result i32) (i32.const 0))"#;
/// `silt_process` returning the input's records section unchanged.
pub const PROCESS_PASSTHROUGH: &str = r#"
  (func (export "silt_process") (param $batch i32) (param $len i32) (param $result i32) (result i32)
    (i32.store (local.get $result) (i32.add (local.get $batch) (i32.const 68)))
    (i32.store offset=4 (local.get $result) (i32.sub (local.get $len) (i32.const 68)))
    (i32.const 0))
"#;

/// A `silt_counters` body naming `len` bytes at `ptr` with status 0.
pub fn counters_slot(ptr: i32, len: i32) -> String {
    format!(
        "(i32.store (local.get $r) (i32.const {ptr})) (i32.store offset=4 (local.get $r) (i32.const {len})) (i32.const 0)"
    )
}

/// A module from WAT pieces.
pub fn wasm(parts: &[&str]) -> Vec<u8> {
    let text = format!("(module {})", parts.join("\n"));
    wat::parse_str(&text).unwrap_or_else(|e| panic!("test WAT does not parse: {e}\n{text}"))
}

/// Modules that break one export rule each, with the export an error must name: a missing
/// or mistyped `silt_process`, a memory that is not exported, `silt_snapshot` without
/// `silt_restore`, a global where a function belongs, and mistyped `silt_counters` and
/// `silt_init`.
pub fn export_cases() -> [(&'static str, Vec<&'static str>); 7] {
    [
        ("silt_process", vec![MEMORY_AND_ALLOC, ABI_V1, INIT_OK]),
        (
            "silt_process",
            vec![
                MEMORY_AND_ALLOC,
                ABI_V1,
                INIT_OK,
                r#"(func (export "silt_process") (param i32 i32) (result i32) (i32.const 0))"#,
            ],
        ),
        (
            "memory",
            vec![
                r#"(memory 1) (func $alloc (export "silt_alloc") (param i32) (result i32) (i32.const 8))"#,
                ABI_V1,
                INIT_OK,
                PROCESS_PASSTHROUGH,
            ],
        ),
        (
            "silt_restore",
            vec![
                MEMORY_AND_ALLOC,
                ABI_V1,
                INIT_OK,
                PROCESS_PASSTHROUGH,
                r#"(func (export "silt_snapshot") (param i32) (result i32) (i32.const 0))"#,
            ],
        ),
        (
            "silt_abi_version",
            vec![
                MEMORY_AND_ALLOC,
                r#"(global (export "silt_abi_version") i32 (i32.const 1))"#,
                INIT_OK,
                PROCESS_PASSTHROUGH,
            ],
        ),
        (
            "silt_counters",
            vec![
                MEMORY_AND_ALLOC,
                ABI_V1,
                INIT_OK,
                PROCESS_PASSTHROUGH,
                r#"(func (export "silt_counters") (param i32 i32) (result i32) (i32.const 0))"#,
            ],
        ),
        (
            "silt_init",
            vec![
                MEMORY_AND_ALLOC,
                ABI_V1,
                r#"(func (export "silt_init") (param i32 i32 i32) (result i64) (i64.const 0))"#,
                PROCESS_PASSTHROUGH,
            ],
        ),
    ]
}
