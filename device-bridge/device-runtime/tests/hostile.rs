//! Hostile and broken modules on the device tier: each is refused, or stopped at a limit, with
//! a clear error, and the instance it ran in is poisoned. Small hand-written WAT modules,
//! under the device's default limits unless a test says otherwise.

#[path = "../../../server/runtime/tests/common/fixtures.rs"]
mod fixtures;

use fixtures::{counters_slot, wasm, ABI_V1, INIT_OK, MEMORY_AND_ALLOC, PROCESS_PASSTHROUGH};
use silt_device_runtime::{Error, Instance, Limits, Module};
use silt_wire::batch::{self, BatchBuilder, Compression};

/// Emits nothing, and keeps a counters block at 256 (40 bytes): `skipped`, the records seen so
/// far, and `limit`, always `u64::MAX`.
const SKIPPING: &str = r#"
  (global $skipped (mut i64) (i64.const 0))
  (data (i32.const 256) "\02\00\00\00\07\00\00\00skipped\00\00\00\00\00\00\00\00\05\00\00\00limit\ff\ff\ff\ff\ff\ff\ff\ff")
  (func (export "silt_process") (param $b i32) (param i32) (param $r i32) (result i32)
    (global.set $skipped (i64.add (global.get $skipped) (i64.extend_i32_u (i32.load offset=48 (local.get $b)))))
    (i64.store (i32.const 271) (global.get $skipped))
    (i32.store offset=4 (local.get $r) (i32.const 0))
    (i32.const 0))
"#;
const SPIN: &str = "(loop $spin (br $spin))";

/// A stateless module whose `silt_process` is `process` (a whole `func` with its export).
fn processor(process: &str) -> Vec<u8> {
    wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, process])
}

/// A stamped batch of `n` small readings from offset `base_offset`.
fn readings(n: u64, base_offset: u64) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for i in 0..n {
        let value = format!(r#"{{"temp":{}.5}}"#, 20 + i);
        b.push(1_700_000_000_000 + i as i64 * 10, b"dev-1", value.as_bytes(), &[]).unwrap();
    }
    let mut bytes = b.finish(7, 1);
    batch::stamp(&mut bytes, base_offset, 1_700_000_100_000);
    bytes
}

fn instance(wasm: &[u8], limits: &Limits) -> Instance {
    Module::new(wasm).unwrap().instantiate(&[], limits).unwrap()
}

/// Checks that a failed instance is poisoned: every call fails at once with `Poisoned`.
fn assert_poisoned(instance: &mut Instance) {
    assert!(instance.is_poisoned());
    assert!(matches!(instance.process(&readings(1, 0)), Err(Error::Poisoned)));
    assert!(matches!(instance.snapshot(), Err(Error::Poisoned)));
    assert!(matches!(instance.counters(), Err(Error::Poisoned)));
    assert!(matches!(instance.restore(b""), Err(Error::Poisoned)));
}

/// Runs one batch through a module made of the standard prelude and `process`; it must fail
/// and poison the instance.
fn process_with(process: &str, limits: &Limits) -> Error {
    let mut instance = instance(&processor(process), limits);
    let err = instance.process(&readings(10, 77)).expect_err("hostile module fails");
    assert_poisoned(&mut instance);
    eprintln!("error shown: {err}");
    err
}

/// Asks a module made of [`SKIPPING`] and `counters` (the body of `silt_counters`, with `$r`
/// the result slot) for its counters after one batch; it must fail and poison the instance.
fn counters_with(counters: &str, limits: &Limits) -> Error {
    let func = format!(r#"(func (export "silt_counters") (param $r i32) (result i32) {counters})"#);
    let mut instance = instance(&wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, SKIPPING, &func]), limits);
    instance.process(&readings(10, 77)).unwrap();
    let err = instance.counters().expect_err("broken counters fail");
    assert_poisoned(&mut instance);
    eprintln!("error shown: {err}");
    err
}

fn refused(wasm: &[u8]) -> Error {
    let err = Module::new(wasm).err().expect("module refused");
    eprintln!("error shown: {err}");
    err
}

#[test]
fn an_infinite_loop_uses_up_its_fuel_and_stops_with_the_time_limit() {
    // Proves fuel stops a spinning guest, reported as the time limit, and poisons it.
    let limits = Limits { fuel_per_call: 1_000_000, ..Limits::default() };
    let started = std::time::Instant::now();
    let err = process_with(
        &format!(r#"(func (export "silt_process") (param i32 i32 i32) (result i32) {SPIN} (i32.const 0))"#),
        &limits,
    );
    eprintln!("1,000,000 fuel took {:?}", started.elapsed());
    assert!(matches!(err, Error::TimeLimit { call: "silt_process", fuel: 1_000_000 }), "{err}");
    assert_eq!(
        err.to_string(),
        "processor exceeded its time limit of 1000000 fuel (wasm instructions) in silt_process"
    );
}

#[test]
fn fuel_is_per_call() {
    // Proves each call starts with a full tank: calls that each need most of the limit all
    // succeed, one after another.
    let limits = Limits { fuel_per_call: 1_000_000, ..Limits::default() };
    let busy = r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
        (local $i i32)
        (loop $count
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $count (i32.lt_u (local.get $i) (i32.const 100000))))
        (i32.store offset=4 (local.get $r) (i32.const 0))
        (i32.const 0))"#;
    let mut instance = instance(&processor(busy), &limits);
    for offset in 0..10 {
        assert_eq!(instance.process(&readings(1, offset)).unwrap().records, b"");
    }
    let mut starved = self::instance(&processor(busy), &Limits { fuel_per_call: 100_000, ..limits });
    assert!(matches!(starved.process(&readings(1, 0)), Err(Error::TimeLimit { .. })));
}

#[test]
fn a_spinning_start_function_hits_the_time_limit_at_instantiation() {
    // Proves the start function runs under the same fuel as every call.
    let module = Module::new(&wasm(&[
        MEMORY_AND_ALLOC,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
        &format!("(func $spin {SPIN}) (start $spin)"),
    ]))
    .unwrap();
    let limits = Limits { fuel_per_call: 10_000, ..Limits::default() };
    let err = module.instantiate(&[], &limits).err().expect("time limit");
    assert!(matches!(err, Error::TimeLimit { call: "start function", fuel: 10_000 }), "{err}");
}

#[test]
fn a_memory_bomb_is_held_at_the_memory_limit_and_its_trap_says_so() {
    // Proves memory.grow returns -1 at the limit (4 pages by default) and that the trap
    // which follows names the memory limit.
    let err = process_with(
        r#"(func (export "silt_process") (param i32 i32 i32) (result i32)
             (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
             ;; Memory is exactly at the limit: 4 pages of 64 KiB.
             (if (i32.ne (memory.size) (i32.const 4)) (then (return (i32.const 0))))
             unreachable)"#,
        &Limits::default(),
    );
    match &err {
        Error::Trap { call: "silt_process", message } => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("memory limit is 262144 bytes"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_module_held_by_its_own_maximum_is_not_told_about_the_limit() {
    // Proves a trap after memory.grow fails at the module's declared maximum (2 pages, below
    // the limit) does not blame the host's limit.
    let own_max =
        MEMORY_AND_ALLOC.replace(r#"(memory (export "memory") 1)"#, r#"(memory (export "memory") 1 2)"#);
    let process = r#"(func (export "silt_process") (param i32 i32 i32) (result i32)
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable)"#;
    let mut instance = instance(&wasm(&[&own_max, ABI_V1, INIT_OK, process]), &Limits::default());
    let err = instance.process(&readings(1, 0)).expect_err("trap");
    assert_eq!(err.to_string(), "processor trapped in silt_process: wasm `unreachable` instruction executed");
}

#[test]
fn a_single_huge_grow_fails_and_the_module_carries_on() {
    // Proves one memory.grow far beyond the limit returns -1 without trapping.
    let mut instance = instance(
        &processor(
            r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
                 (if (i32.ne (memory.grow (i32.const 30000)) (i32.const -1)) (then unreachable))
                 (i32.store offset=4 (local.get $r) (i32.const 0))
                 (i32.const 0))"#,
        ),
        &Limits::default(),
    );
    let output = instance.process(&readings(1, 0)).unwrap();
    assert_eq!((output.records, output.record_count, output.max_timestamp_ms), (&b""[..], 0, None));
}

#[test]
fn a_module_needing_more_memory_than_its_limit_does_not_start() {
    // Proves a declared minimum above memory_bytes_max is refused at instantiation, with both
    // sizes in the message.
    let big = MEMORY_AND_ALLOC.replace(r#"(memory (export "memory") 1)"#, r#"(memory (export "memory") 5)"#);
    let module = Module::new(&wasm(&[&big, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH])).unwrap();
    let err = module.instantiate(&[], &Limits::default()).err().expect("5 pages are above 4");
    assert!(matches!(err, Error::MemoryLimit { needed: 327_680, bytes: 262_144 }), "{err}");
    assert_eq!(
        err.to_string(),
        "processor needs 327680 bytes of memory to start, more than its limit of 262144 bytes"
    );
    let roomy = Limits { memory_bytes_max: 5 * 65536, ..Limits::default() };
    module.instantiate(&[], &roomy).unwrap();
}

#[test]
fn a_trap_is_reported_as_a_trap_naming_the_call() {
    // Proves an `unreachable` stops the processor with the trap and the ABI call it was in.
    let err = process_with(
        r#"(func $check_record (export "silt_process") (param i32 i32 i32) (result i32) unreachable)"#,
        &Limits::default(),
    );
    assert_eq!(err.to_string(), "processor trapped in silt_process: wasm `unreachable` instruction executed");
}

#[test]
fn runaway_recursion_exhausts_the_call_stack_not_the_heap() {
    // Proves unbounded recursion traps at wasmi's call-depth or value-stack limit.
    let err = process_with(
        r#"(func $deep (param i64 i64 i64 i64) (call $deep (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
           (func (export "silt_process") (param i32 i32 i32) (result i32)
             (call $deep (i64.const 1) (i64.const 2) (i64.const 3) (i64.const 4)) (i32.const 0))"#,
        &Limits { fuel_per_call: 1_000_000_000, ..Limits::default() },
    );
    assert!(
        matches!(&err, Error::Trap { call: "silt_process", message } if message.contains("call stack exhausted")),
        "{err}"
    );
}

#[test]
fn an_error_status_stops_the_processor_with_its_message() {
    // Proves an error status surfaces with the module's message, invalid UTF-8 replaced.
    let err = process_with(
        r#"(data (i32.const 16) "sensor \ff out of range")
           (func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 16))
             (i32.store offset=4 (local.get $r) (i32.const 21))
             (i32.const 3))"#,
        &Limits::default(),
    );
    assert!(
        matches!(&err, Error::Guest { call: "silt_process", message } if message == "sensor \u{fffd} out of range"),
        "{err}"
    );
}

#[test]
fn a_long_error_message_is_cut_at_4096_bytes() {
    // Proves the host shows at most the first 4096 bytes of a guest's message.
    let err = process_with(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (memory.fill (i32.const 16384) (i32.const 120) (i32.const 5000))
             (i32.store (local.get $r) (i32.const 16384))
             (i32.store offset=4 (local.get $r) (i32.const 5000))
             (i32.const 1))"#,
        &Limits::default(),
    );
    let Error::Guest { message, .. } = err else { panic!("{err}") };
    assert_eq!(message, format!("{} [...]", "x".repeat(4096)));
}

#[test]
fn output_beyond_the_limit_is_refused_before_it_is_read() {
    // Proves the slot's length is checked against output_bytes_max before its range.
    let err = process_with(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 0))
             (i32.store offset=4 (local.get $r) (i32.const 0x7ffffff0))
             (i32.const 0))"#,
        &Limits::default(),
    );
    assert!(matches!(err, Error::OutputLimit { bytes: 0x7fff_fff0, max: 65_536 }), "{err}");
    let small = Limits { output_bytes_max: 100, ..Limits::default() };
    let err = process_with(PROCESS_PASSTHROUGH, &small);
    assert!(matches!(err, Error::OutputLimit { max: 100, .. }), "{err}");
}

#[test]
fn a_result_slot_outside_memory_is_bad_output() {
    // Proves the host checks the slot's range against the guest's memory: one byte past the
    // end of the one page is refused.
    let err = process_with(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store (local.get $r) (i32.const 65530))
             (i32.store offset=4 (local.get $r) (i32.const 7))
             (i32.const 0))"#,
        &Limits::default(),
    );
    assert_eq!(
        err.to_string(),
        "processor output is malformed: silt_process for the batch at input offset 77 names output bytes \
         65530..65537 outside its memory of 65536 bytes"
    );
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
            &Limits::default(),
        );
        assert!(matches!(&err, Error::BadOutput(m) if m.contains("input offset 77")), "{what}: {err}");
    }
}

#[test]
fn a_failing_silt_alloc_is_reported() {
    // Proves silt_alloc returning 0, a misaligned address or a range outside memory fails
    // instantiation with the reason, as the ABI words it.
    for (body, reason) in [
        ("(i32.const 0)", "returned 0: the module could not provide the memory"),
        ("(i32.const 1028)", "returned 1028, which is not aligned to 8"),
        ("(i32.const 65536)", "returned 65536, but 8 bytes from there lie outside memory"),
    ] {
        let alloc = format!(
            r#"(memory (export "memory") 1) (func $alloc (export "silt_alloc") (param i32) (result i32) {body})"#
        );
        let module = Module::new(&wasm(&[&alloc, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH])).unwrap();
        let err = module.instantiate(&[], &Limits::default()).err().expect("bad alloc");
        assert_eq!(err.to_string(), format!("processor's silt_alloc(8) {reason}"));
    }
}

#[test]
fn a_misaligned_input_buffer_fails_the_batch() {
    // Proves every silt_alloc result is checked, not only the first: an allocator that goes
    // wrong after the result slot fails the call that needed the buffer.
    let alloc = r#"(memory (export "memory") 1)
        (global $next (mut i32) (i32.const 1024))
        (func (export "silt_alloc") (param i32) (result i32)
          (global.set $next (i32.add (global.get $next) (i32.const 4)))
          (i32.sub (global.get $next) (i32.const 4)))"#;
    let mut instance = instance(&wasm(&[alloc, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH]), &Limits::default());
    let err = instance.process(&readings(1, 0)).expect_err("misaligned");
    assert_eq!(err.to_string(), "processor's silt_alloc(4096) returned 1028, which is not aligned to 8");
    assert_poisoned(&mut instance);
}

#[test]
fn an_import_is_refused_naming_it() {
    // Proves any import (a WASI function, a host function, a memory) refuses the module.
    let err = refused(&wasm(&[
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
    let err = refused(&wasm(&[
        r#"(import "env" "clock_now_ms" (func (result i64)))"#,
        MEMORY_AND_ALLOC,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
    ]));
    assert!(
        matches!(&err, Error::Import { module, name } if module == "env" && name == "clock_now_ms"),
        "{err}"
    );
    let err = refused(&wasm(&[
        r#"(import "env" "memory" (memory 1)) (export "memory" (memory 0))
           (func (export "silt_alloc") (param i32) (result i32) (i32.const 1024))"#,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
    ]));
    assert!(matches!(&err, Error::Import { module, name } if module == "env" && name == "memory"), "{err}");
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    // Proves non-wasm input, components and truncated modules are refused.
    let err = refused(b"#!/bin/sh\necho hello\n");
    assert_eq!(err.to_string(), r"module is not WebAssembly (expected \0asm magic)");
    assert!(matches!(refused(b"\0asm"), Error::NotWasm(_)));
    assert!(matches!(refused(b"\0asm\x0d\0\x01\0"), Error::NotWasm(_)));
    assert!(matches!(refused(b"\0asm\x01\0\0\0\x01\x05"), Error::Invalid(_)));
}

#[test]
fn a_wrong_abi_version_is_refused() {
    // Proves silt_abi_version is checked first.
    let v2 = r#"(func (export "silt_abi_version") (result i32) (i32.const 2))"#;
    let module = Module::new(&wasm(&[MEMORY_AND_ALLOC, v2, INIT_OK, PROCESS_PASSTHROUGH])).unwrap();
    let err = module.instantiate(&[], &Limits::default()).err().expect("version 2");
    assert_eq!(err.to_string(), "processor ABI version 2; this host supports 1");
}

#[test]
fn missing_or_mistyped_exports_are_refused_naming_them() {
    // Proves each export rule of the ABI is checked by Module::new, naming the export.
    let cases = fixtures::export_cases();
    for (name, parts) in cases {
        let err = refused(&wasm(&parts));
        assert!(matches!(&err, Error::Export { name: n, .. } if *n == name), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    let mistyped = wasm(&[
        r#"(memory (export "memory") 1) (func (export "silt_alloc") (param i64) (result i32) (i32.const 8))"#,
        ABI_V1,
        INIT_OK,
        PROCESS_PASSTHROUGH,
    ]);
    assert_eq!(
        refused(&mistyped).to_string(),
        r#"module export "silt_alloc" has type (func (param i64) (result i32)) but the ABI requires (func (param i32) (result i32)) (docs/processor-abi.md)"#
    );
}

#[test]
fn proposals_beyond_the_device_tier_are_refused_as_invalid() {
    // Proves the engine validates with the ABI's proposals only: SIMD (not on this tier),
    // tail calls, extended constants, a second memory and shared memory are refused.
    for (what, part) in [
        ("simd", r#"(func (result i32) (i32x4.extract_lane 0 (v128.const i64x2 1 2)))"#),
        ("tail calls", r#"(func $f (result i32) (return_call $f))"#),
        ("extended const", r#"(global i32 (i32.add (i32.const 1) (i32.const 2)))"#),
        ("multi-memory", r#"(memory 1)"#),
        ("threads", r#"(func (result i32) (i32.atomic.load (i32.const 0)))"#),
    ] {
        let err = refused(&wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH, part]));
        assert!(matches!(err, Error::Invalid(_)), "{what}: {err}");
    }
}

#[test]
fn custom_sections_are_ignored() {
    // Proves a module with custom sections (a signature, names) loads and runs as without.
    let mut signed = processor(PROCESS_PASSTHROUGH);
    let name = b"silt.signature";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.push(1);
    body.extend_from_slice(&[0xab; 96]);
    signed.push(0);
    signed.push(body.len() as u8);
    signed.extend_from_slice(&body);
    let mut instance = instance(&signed, &Limits::default());
    let input = readings(3, 5);
    assert_eq!(instance.process(&input).unwrap().records, &input[68..]);
}

#[test]
fn input_that_is_not_one_uncompressed_batch_is_refused_without_entering_the_guest() {
    // Proves the input is checked before the call: a guest that traps is never reached.
    let trap = r#"(func (export "silt_process") (param i32 i32 i32) (result i32) unreachable)"#;
    let mut compressed = BatchBuilder::default();
    for i in 0..100 {
        compressed.push(i, b"dev-1", &[b'x'; 100], &[]).unwrap();
    }
    let compressed = compressed.finish_with(7, 1, Compression::Lz4);
    let mut cut = readings(3, 0);
    cut.pop();
    for (what, input) in [("compressed", compressed), ("truncated", cut), ("empty", Vec::new())] {
        let mut instance = instance(&processor(trap), &Limits::default());
        let err = instance.process(&input).expect_err(what);
        assert!(matches!(err, Error::Input(_)), "{what}: {err}");
        assert_poisoned(&mut instance);
    }
}

#[test]
fn restore_follows_the_abi_rules() {
    // Proves restore is refused for a stateless module, after a batch, twice, and above the
    // state limit; each refusal poisons the instance.
    let state = r#"
      (func (export "silt_snapshot") (param $r i32) (result i32)
        (i32.store offset=4 (local.get $r) (i32.const 0)) (i32.const 0))
      (func (export "silt_restore") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let stateful = wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, PROCESS_PASSTHROUGH, state]);
    let limits = Limits { state_bytes_max: 1000, ..Limits::default() };

    let mut stateless = instance(&processor(PROCESS_PASSTHROUGH), &limits);
    assert!(matches!(stateless.restore(b"x"), Err(Error::Usage(_))));
    let mut late = instance(&stateful, &limits);
    late.process(&readings(1, 0)).unwrap();
    assert!(matches!(late.restore(b"x"), Err(Error::Usage(_))));
    let mut twice = instance(&stateful, &limits);
    twice.restore(b"").unwrap();
    assert_eq!(twice.snapshot().unwrap(), Some(&b""[..]));
    assert!(matches!(twice.restore(b"x"), Err(Error::Usage(_))));
    let mut big = instance(&stateful, &limits);
    assert!(matches!(big.restore(&[0; 1001]), Err(Error::StateLimit { bytes: 1001, max: 1000 })));
    for mut instance in [stateless, late, twice, big] {
        assert_poisoned(&mut instance);
    }
}

#[test]
fn counters_are_decoded_with_the_wire_decoder() {
    // Proves a valid block comes back as names and values, borrowed from the guest.
    let func =
        format!(r#"(func (export "silt_counters") (param $r i32) (result i32) {})"#, counters_slot(256, 40));
    let mut instance =
        instance(&wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, SKIPPING, &func]), &Limits::default());
    assert_eq!(instance.counters().unwrap(), [("skipped", 0), ("limit", u64::MAX)]);
    instance.process(&readings(10, 0)).unwrap();
    instance.process(&readings(5, 10)).unwrap();
    assert_eq!(instance.counters().unwrap(), [("skipped", 15), ("limit", u64::MAX)]);
}

#[test]
fn malformed_counters_blocks_are_bad_output_naming_silt_counters() {
    // Proves a bad name, too many counters and a block cut short each stop the processor.
    let cases = [
        // `skipped` becomes `Skipped`: outside [a-z0-9_].
        ("(i32.store8 (i32.const 264) (i32.const 83))", "not 1 to 64 bytes of [a-z0-9_]"),
        ("(i32.store (i32.const 256) (i32.const 17))", "17 counters"),
        ("(i32.store (i32.const 256) (i32.const 3))", "cut short at byte 40"),
    ];
    for (corrupt, why) in cases {
        let err = counters_with(&format!("{corrupt} {}", counters_slot(256, 40)), &Limits::default());
        assert!(matches!(err, Error::BadOutput(_)), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("silt_counters") && shown.contains(why), "{shown}");
    }
}

#[test]
fn a_counters_slot_outside_memory_or_over_4_kib_is_refused_before_it_is_read() {
    // Proves the slot's range is checked against memory, and its length against 4 KiB first.
    let err = counters_with(&counters_slot(-16, 40), &Limits::default());
    assert!(matches!(&err, Error::BadOutput(m) if m.contains("outside its memory")), "{err}");
    let err = counters_with(&counters_slot(256, 4097), &Limits::default());
    assert!(matches!(&err, Error::BadOutput(m) if m.contains("4097 bytes")), "{err}");
}

#[test]
fn silt_counters_runs_under_the_time_limit_and_its_traps_are_reported() {
    // Proves the counters call is bounded and classified like every other call.
    let limits = Limits { fuel_per_call: 100_000, ..Limits::default() };
    let err = counters_with(&format!("{SPIN} (i32.const 0)"), &limits);
    assert!(matches!(err, Error::TimeLimit { call: "silt_counters", fuel: 100_000 }), "{err}");
    let err = counters_with("(unreachable)", &limits);
    assert!(matches!(err, Error::Trap { call: "silt_counters", .. }), "{err}");
}

#[test]
fn limits_the_host_cannot_honour_are_refused() {
    // Proves instantiate checks its limits before running anything.
    let module = Module::new(&processor(PROCESS_PASSTHROUGH)).unwrap();
    for limits in [
        Limits { fuel_per_call: 0, ..Limits::default() },
        Limits { input_buffer_bytes_min: 1000, ..Limits::default() },
    ] {
        assert!(matches!(module.instantiate(&[], &limits), Err(Error::Usage(_))), "{limits:?}");
    }
    let err = module.instantiate(&[("k", "1"), ("k", "2")], &Limits::default()).err().expect("duplicate key");
    assert_eq!(err.to_string(), r#"processor parameters are invalid: key "k" is given twice"#);
}
