//! Hostile and broken modules: each fails alone with a clear error, and the runtime keeps
//! compiling and running well-behaved modules afterwards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use silt_runtime::{Limits, RuntimeError};
use silt_wire::batch::Compression;

/// Runs one batch through a module made of the standard prelude and `process`.
fn process_with(process: &str, limits: &Limits) -> RuntimeError {
    let rt = runtime();
    let module = load(&rt, &processor(process));
    let mut instance = module.instantiate(&[], limits).unwrap();
    let err = instance.process(&sensor_batch(10, 77, Compression::None)).expect_err("hostile module fails");
    assert!(instance.is_poisoned());
    assert!(matches!(instance.process(&sensor_batch(1, 0, Compression::None)), Err(RuntimeError::Poisoned)));
    assert!(matches!(instance.snapshot(), Err(RuntimeError::Poisoned)));
    assert_still_usable(&rt);
    eprintln!("error shown: {err}");
    err
}

/// Asks a module made of [`SKIPPING`] and `counters` (the body of `silt_counters`) for its
/// counters after one batch; it must fail, poison the instance and leave the runtime usable.
fn counters_with(counters: &str, limits: &Limits) -> RuntimeError {
    let rt = runtime();
    let module = load(&rt, &counters_module(counters));
    let mut instance = module.instantiate(&[], limits).unwrap();
    instance.process(&sensor_batch(10, 77, Compression::None)).unwrap();
    let err = instance.counters().expect_err("broken counters fail");
    assert!(instance.is_poisoned());
    assert!(matches!(instance.process(&sensor_batch(1, 0, Compression::None)), Err(RuntimeError::Poisoned)));
    assert!(matches!(instance.counters(), Err(RuntimeError::Poisoned)));
    assert_still_usable(&rt);
    eprintln!("error shown: {err}");
    err
}

fn compile_error(wasm: &[u8]) -> RuntimeError {
    let rt = runtime();
    let err = rt.compile(wasm).expect_err("refused at compile");
    assert_still_usable(&rt);
    eprintln!("error shown: {err}");
    err
}

#[test]
fn an_infinite_loop_hits_the_time_limit_promptly() {
    // Proves epoch interruption stops a spinning guest within a bounded time.
    let limits = Limits { call_time_ms_max: 100, ..limits() };
    let started = Instant::now();
    let err = process_with(
        r#"(func (export "silt_process") (param i32 i32 i32) (result i32) (loop $spin (br $spin)) (i32.const 0))"#,
        &limits,
    );
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(err, RuntimeError::TimeLimit { call: "silt_process", ms: 100 }), "{err}");
    assert_eq!(err.to_string(), "processor exceeded its time limit of 100 ms in silt_process");
}

#[test]
fn a_spinning_start_function_hits_the_time_limit_at_instantiation() {
    // Proves the start function runs under the same time limit as every call.
    let rt = runtime();
    let module = load(
        &rt,
        &wasm(&[
            MEMORY_AND_ALLOC,
            ABI_V1,
            INIT_OK,
            PROCESS_PASSTHROUGH,
            r#"(func $spin (loop $l (br $l))) (start $spin)"#,
        ]),
    );
    let limits = Limits { call_time_ms_max: 50, ..limits() };
    let err = module.instantiate(&[], &limits).err().expect("time limit");
    assert!(matches!(err, RuntimeError::TimeLimit { ms: 50, .. }), "{err}");
    assert_still_usable(&rt);
}

#[test]
fn a_module_outliving_its_runtime_handle_is_still_time_limited() {
    // Proves the epoch ticker lives as long as any module or instance made from the runtime.
    let rt = runtime();
    let module = load(
        &rt,
        &processor(
            r#"(func (export "silt_process") (param i32 i32 i32) (result i32) (loop $s (br $s)) (i32.const 0))"#,
        ),
    );
    drop(rt);
    let mut instance = module.instantiate(&[], &Limits { call_time_ms_max: 50, ..limits() }).unwrap();
    drop(module);
    let err = instance.process(&sensor_batch(1, 0, Compression::None)).unwrap_err();
    assert!(matches!(err, RuntimeError::TimeLimit { .. }), "{err}");
}

#[test]
fn a_memory_bomb_is_held_at_the_memory_limit_and_its_trap_says_so() {
    // Proves memory.grow returns -1 at the limit (memory never exceeds it) and that the trap
    // which follows names the memory limit.
    let limits = Limits { memory_bytes_max: 8 * 1024 * 1024, ..limits() };
    let err = process_with(
        r#"(func (export "silt_process") (param i32 i32 i32) (result i32)
             (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
             ;; Memory is exactly at the limit: 128 pages of 64 KiB.
             (if (i32.ne (memory.size) (i32.const 128)) (then (return (i32.const 0))))
             unreachable)"#,
        &limits,
    );
    match &err {
        RuntimeError::Trap { call: "silt_process", message } => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("memory limit is 8388608 bytes"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_single_huge_grow_fails_without_taking_memory() {
    // Proves one memory.grow far beyond the limit returns -1 and the module carries on.
    let rt = runtime();
    let module = load(
        &rt,
        &processor(
            r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
                 (if (i32.ne (memory.grow (i32.const 30000)) (i32.const -1)) (then unreachable))
                 (i32.store offset=4 (local.get $r) (i32.const 0))
                 (i32.const 0))"#,
        ),
    );
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    assert_eq!(instance.process(&sensor_batch(1, 0, Compression::None)).unwrap(), None);
}

#[test]
fn a_module_needing_more_memory_than_its_limit_does_not_start() {
    // Proves a declared minimum above memory_bytes_max is refused at instantiation.
    let rt = runtime();
    let big_memory =
        MEMORY_AND_ALLOC.replace(r#"(memory (export "memory") 1)"#, r#"(memory (export "memory") 400)"#);
    let module = load(&rt, &wasm(&[&big_memory, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH]));
    let err = module.instantiate(&[], &limits()).err().expect("25 MiB is above 16 MiB");
    assert!(matches!(err, RuntimeError::MemoryLimit { bytes } if bytes == 16 * 1024 * 1024), "{err}");
    assert_still_usable(&rt);
}

#[test]
fn a_trap_on_the_first_record_is_reported_as_a_trap() {
    // Proves an `unreachable` in silt_process stops the processor with a trap message.
    let err = process_with(
        r#"(func $check_record (export "silt_process") (param i32 i32 i32) (result i32) unreachable)"#,
        &limits(),
    );
    match &err {
        RuntimeError::Trap { call: "silt_process", message } => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(!message.contains("memory limit"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn an_error_status_stops_the_processor_with_its_message() {
    // Proves an error status from silt_process surfaces with the module's message.
    let err = process_with(
        r#"(data (i32.const 16) "sensor \ff out of range")
           (func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 16))
             (i32.store offset=4 (local.get $r) (i32.const 21))
             (i32.const 3))"#,
        &limits(),
    );
    assert!(
        matches!(&err, RuntimeError::Guest { call: "silt_process", message } if message == "sensor \u{fffd} out of range"),
        "{err}"
    );
}

#[test]
fn output_beyond_the_limit_is_refused_before_it_is_read() {
    // Proves the slot's length is checked against output_bytes_max before any copy.
    let err = process_with(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 0))
             (i32.store offset=4 (local.get $r) (i32.const 0x7ffffff0))
             (i32.const 0))"#,
        &limits(),
    );
    assert!(matches!(err, RuntimeError::OutputLimit { bytes: 0x7fff_fff0, .. }), "{err}");
    let small = Limits { output_bytes_max: 100, ..limits() };
    let err = process_with(PROCESS_PASSTHROUGH, &small);
    assert!(matches!(err, RuntimeError::OutputLimit { max: 100, .. }), "{err}");
}

#[test]
fn a_result_slot_outside_memory_is_bad_output() {
    // Proves the host checks the slot's range against the guest's memory.
    let err = process_with(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 0xfff00000))
             (i32.store offset=4 (local.get $r) (i32.const 16))
             (i32.const 0))"#,
        &limits(),
    );
    assert!(matches!(&err, RuntimeError::BadOutput(m) if m.contains("outside its memory")), "{err}");
}

#[test]
fn malformed_output_records_are_bad_output_naming_the_input_offset() {
    // Proves output framing is checked as validation rule 6 and the message names the input.
    for (what, bytes, len) in [
        ("length past the end", r#"\05\00\00\01"#, 4),
        ("fields past the length", r#"\02\00\00\05xxxxx\00"#, 10),
        ("trailing byte", r#"\04\00\00\00\00\07"#, 6),
        ("too many headers", r#"\04\00\00\00\41"#, 5),
    ] {
        let err = process_with(
            &format!(
                r#"(data (i32.const 16) "{bytes}")
                   (func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
                     (i32.store (local.get $r) (i32.const 16))
                     (i32.store offset=4 (local.get $r) (i32.const {len}))
                     (i32.const 0))"#
            ),
            &limits(),
        );
        assert!(matches!(&err, RuntimeError::BadOutput(m) if m.contains("input offset 77")), "{what}: {err}");
    }
}

#[test]
fn a_failing_silt_alloc_is_reported() {
    // Proves silt_alloc returning 0 or a misaligned address fails instantiation clearly.
    for (body, needle) in [
        ("(i32.const 0)", "returned 0"),
        ("(i32.const 1028)", "not aligned"),
        ("(i32.const 0x7ffffff8)", "outside memory"),
    ] {
        let rt = runtime();
        let alloc = format!(
            r#"(memory (export "memory") 1) (func $alloc (export "silt_alloc") (param i32) (result i32) {body})"#
        );
        let module = load(&rt, &wasm(&[&alloc, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH]));
        let err = module.instantiate(&[], &limits()).err().expect("bad alloc");
        assert!(matches!(&err, RuntimeError::Alloc { size: 8, reason } if reason.contains(needle)), "{err}");
        assert_still_usable(&rt);
    }
}

#[test]
fn an_import_is_refused_naming_it() {
    // Proves any import (WASI or an unknown host function) refuses the module at compile.
    let err = compile_error(&wasm(&[
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        MEMORY_AND_ALLOC,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
    ]));
    assert_eq!(
        err.to_string(),
        r#"module imports "wasi_snapshot_preview1"."fd_write"; processors may import nothing (docs/processor-abi.md)"#
    );
    let err = compile_error(&wasm(&[
        r#"(import "env" "clock_now_ms" (func (result i64)))"#,
        MEMORY_AND_ALLOC,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
    ]));
    assert!(
        matches!(&err, RuntimeError::Import { module, name } if module == "env" && name == "clock_now_ms"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    // Proves non-wasm input and components are refused before compilation.
    let err = compile_error(b"#!/bin/sh\necho hello\n");
    assert_eq!(err.to_string(), r"module is not WebAssembly (expected \0asm magic)");
    assert!(matches!(compile_error(b"\0asm"), RuntimeError::NotWasm(_)));
    assert!(matches!(compile_error(b"\0asm\x0d\0\x01\0"), RuntimeError::NotWasm(_)));
    assert!(matches!(compile_error(b"\0asm\x01\0\0\0\x01\x05"), RuntimeError::Invalid(_)));
}

#[test]
fn a_wrong_abi_version_is_refused() {
    // Proves silt_abi_version is checked first, with the ABI's message.
    let rt = runtime();
    let v2 = r#"(func (export "silt_abi_version") (result i32) (i32.const 2))"#;
    let module = load(&rt, &wasm(&[MEMORY_AND_ALLOC, v2, INIT_OK, PROCESS_PASSTHROUGH]));
    let err = module.instantiate(&[], &limits()).err().expect("version 2");
    assert!(matches!(err, RuntimeError::AbiVersion(2)));
    assert_eq!(err.to_string(), "processor ABI version 2; this broker supports 1");
    assert_still_usable(&rt);
}

#[test]
fn missing_or_mistyped_exports_are_refused_naming_them() {
    // Proves each export rule of the ABI is checked at compile, naming the export.
    let cases = export_cases();
    for (name, parts) in cases {
        let err = compile_error(&wasm(&parts));
        assert!(matches!(&err, RuntimeError::Export { name: n, .. } if n == name), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn malformed_counters_blocks_are_bad_output_naming_silt_counters() {
    // Proves the host decodes the block with silt-wire's checks: a bad name, too many
    // counters and a block cut short each stop the processor, naming the export.
    let cases = [
        // `skipped` becomes `Skipped`: outside [a-z0-9_].
        ("(i32.store8 (i32.const 264) (i32.const 83))", "not 1 to 64 bytes of [a-z0-9_]"),
        ("(i32.store (i32.const 256) (i32.const 17))", "17 counters"),
        ("(i32.store (i32.const 256) (i32.const 3))", "cut short at byte 40"),
    ];
    for (corrupt, why) in cases {
        let err = counters_with(&format!("{corrupt} {}", counters_slot(256, 40)), &limits());
        assert!(matches!(err, RuntimeError::BadOutput(_)), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("silt_counters") && shown.contains(why), "{shown}");
    }
}

#[test]
fn a_counters_slot_outside_memory_or_over_4_kib_is_refused_before_it_is_read() {
    // Proves the slot's range is checked against memory, and its length against 4 KiB first.
    let err = counters_with(&counters_slot(-16, 40), &limits());
    assert!(
        matches!(&err, RuntimeError::BadOutput(m) if m.contains("silt_counters") && m.contains("outside its memory")),
        "{err}"
    );
    let err = counters_with(&counters_slot(256, 4097), &limits());
    assert!(
        matches!(&err, RuntimeError::BadOutput(m) if m.contains("silt_counters") && m.contains("4097 bytes")),
        "{err}"
    );
}

#[test]
fn silt_counters_runs_under_the_time_limit_and_its_traps_are_reported() {
    // Proves the counters call is bounded and classified like every other call.
    let limits = Limits { call_time_ms_max: 100, ..limits() };
    let err = counters_with("(loop $spin (br $spin)) (i32.const 0)", &limits);
    assert!(matches!(err, RuntimeError::TimeLimit { call: "silt_counters", ms: 100 }), "{err}");
    let err = counters_with("(unreachable)", &limits);
    assert!(matches!(err, RuntimeError::Trap { call: "silt_counters", .. }), "{err}");
}
