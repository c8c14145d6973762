//! Well-behaved processors through the whole host path: compile, load, instantiate, process,
//! snapshot and restore, against hand-written WAT modules.

mod common;

use common::*;
use silt_runtime::{Limits, Runtime, RuntimeConfig, RuntimeError};
use silt_wire::batch::{self, BatchBuilder, BatchView, Compression, HEADER_LEN};

#[test]
fn threshold_filter_keeps_exactly_what_the_native_rule_keeps() {
    // Proves the filter's output batch holds the kept input records unchanged (times, keys,
    // values) with a correct header: first time from the input, max of the output, producer 0.
    let rt = runtime();
    let module = load(&rt, &threshold_wasm());
    assert!(!module.is_stateful());
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    let input = sensor_batch(1000, 5_000, Compression::None);
    let out = instance.process(&input).unwrap().expect("readings above 20 degrees");
    batch::validate(&out).unwrap();
    let want: Vec<Rec> = records(&input).into_iter().filter(|r| keeps(&r.2)).collect();
    assert!(!want.is_empty() && want.len() < 1000);
    assert_eq!(records(&out), want);
    let (view, input_view) = (BatchView::new(&out).unwrap(), BatchView::new(&input).unwrap());
    assert_eq!(view.first_timestamp_ms(), input_view.first_timestamp_ms());
    assert_eq!(view.max_timestamp_ms(), want.iter().map(|r| r.0).max().unwrap());
    assert_eq!(
        (view.producer_id(), view.sequence(), view.base_offset(), view.append_time_ms()),
        (0, 0, 0, 0)
    );
    assert!(!view.is_compressed());
}

#[test]
fn passthrough_returns_the_input_records_byte_for_byte() {
    // Proves that records the guest passes through are copied byte for byte, keys, headers
    // and negative time deltas included, and that LZ4 input is decompressed before the call.
    let rt = runtime();
    let module = load(&rt, &processor(PROCESS_PASSTHROUGH));
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    let mut b = BatchBuilder::default();
    for i in 0..300i64 {
        let headers: &[(&[u8], &[u8])] =
            if i % 5 == 0 { &[(b"unit", b"C"), (b"src", b"bridge")] } else { &[] };
        let key = if i % 2 == 0 { format!("sensor-{i}") } else { String::new() };
        // Out of order on purpose: some records are older than the first.
        b.push(1_000_000 + (i % 7 - 3) * 1000 + i, key.as_bytes(), &reading(i as u64), headers).unwrap();
    }
    let plain = b.clone().finish(3, 9);
    let mut stamped = plain.clone();
    batch::stamp(&mut stamped, 42, 1);
    let out = instance.process(&stamped).unwrap().unwrap();
    assert_eq!(&out[HEADER_LEN..], &stamped[HEADER_LEN..]);
    assert_eq!(records(&out), records(&stamped));
    let v = BatchView::new(&out).unwrap();
    let inv = BatchView::new(&stamped).unwrap();
    assert_eq!(
        (v.first_timestamp_ms(), v.max_timestamp_ms()),
        (inv.first_timestamp_ms(), inv.max_timestamp_ms())
    );
    assert_eq!(v.record_count(), 300);

    let mut packed = b.finish_with(3, 9, Compression::Lz4);
    assert!(BatchView::new(&packed).unwrap().is_compressed());
    batch::stamp(&mut packed, 42, 1);
    assert_eq!(instance.process(&packed).unwrap().unwrap(), out);
}

#[test]
fn the_input_buffer_grows_for_larger_batches_and_is_reused() {
    // Proves batches smaller, larger than 64 KiB and larger again all come through intact.
    let rt = runtime();
    let module = load(&rt, &processor(PROCESS_PASSTHROUGH));
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    for n in [10, 1000, 20, 5000, 1000, 1] {
        let input = sensor_batch(n, n, Compression::Lz4);
        let out = instance.process(&input).unwrap().unwrap();
        assert_eq!(records(&out), records(&input), "batch of {n}");
    }
}

#[test]
fn an_empty_output_is_none() {
    // Proves a slot length of 0 means "nothing emitted", whatever the slot's pointer says.
    let rt = runtime();
    let module = load(
        &rt,
        &processor(
            r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
                 (i32.store (local.get $r) (i32.const -1))
                 (i32.store offset=4 (local.get $r) (i32.const 0))
                 (i32.const 0))"#,
        ),
    );
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    assert_eq!(instance.process(&sensor_batch(10, 0, Compression::None)).unwrap(), None);
    assert_eq!(instance.snapshot().unwrap(), None, "stateless modules have no snapshot");
}

/// Counts input records; emits one record whose value is the running count (u64 LE); its
/// state is that count.
const COUNTER: &str = r#"
  (global $count (mut i64) (i64.const 0))
  (global $out (mut i32) (i32.const 0))
  (data (i32.const 16) "state must be 8 bytes")
  (func (export "silt_init") (param i32 i32 i32) (result i32)
    (global.set $out (call $alloc (i32.const 16)))
    (i32.const 0))
  (func (export "silt_process") (param $b i32) (param i32) (param $r i32) (result i32)
    (global.set $count (i64.add (global.get $count) (i64.extend_i32_u (i32.load offset=48 (local.get $b)))))
    ;; record: length 12, delta 0, no key, value of 8 bytes, no headers
    (i32.store (global.get $out) (i32.const 0x0800000c))
    (i64.store offset=4 (global.get $out) (global.get $count))
    (i32.store8 offset=12 (global.get $out) (i32.const 0))
    (i32.store (local.get $r) (global.get $out))
    (i32.store offset=4 (local.get $r) (i32.const 13))
    (i32.const 0))
  (func (export "silt_snapshot") (param $r i32) (result i32)
    (i64.store (global.get $out) (global.get $count))
    (i32.store (local.get $r) (global.get $out))
    (i32.store offset=4 (local.get $r) (i32.const 8))
    (i32.const 0))
  (func (export "silt_restore") (param $p i32) (param $len i32) (param $r i32) (result i32)
    (if (i32.ne (local.get $len) (i32.const 8))
      (then
        (i32.store (local.get $r) (i32.const 16))
        (i32.store offset=4 (local.get $r) (i32.const 21))
        (return (i32.const 1))))
    (global.set $count (i64.load (local.get $p)))
    (i32.const 0))
"#;

fn count_of(out: &[u8]) -> u64 {
    let recs = records(out);
    assert_eq!(recs.len(), 1);
    u64::from_le_bytes(recs[0].2[..].try_into().unwrap())
}

#[test]
fn snapshot_and_restore_carry_state_to_a_fresh_instance() {
    // Proves a restored instance continues exactly where the snapshotted one stood.
    let rt = runtime();
    let module = load(&rt, &wasm(&[MEMORY_AND_ALLOC, ABI_V1, COUNTER]));
    assert!(module.is_stateful());
    let mut first = module.instantiate(&[], &limits()).unwrap();
    assert_eq!(count_of(&first.process(&sensor_batch(3, 0, Compression::None)).unwrap().unwrap()), 3);
    assert_eq!(count_of(&first.process(&sensor_batch(5, 3, Compression::Lz4)).unwrap().unwrap()), 8);
    let state = first.snapshot().unwrap().unwrap();
    assert_eq!(state, 8u64.to_le_bytes());

    let mut second = module.instantiate(&[], &limits()).unwrap();
    second.restore(&state).unwrap();
    let next = sensor_batch(2, 8, Compression::None);
    assert_eq!(count_of(&second.process(&next).unwrap().unwrap()), 10);
    assert_eq!(count_of(&first.process(&next).unwrap().unwrap()), 10);
    assert_eq!(second.snapshot().unwrap(), first.snapshot().unwrap());

    // Restoring after a batch breaks the ABI's order and is refused.
    assert!(matches!(second.restore(&state), Err(RuntimeError::Usage(_))));
}

#[test]
fn a_refused_restore_carries_the_guests_message() {
    // Proves an error status from silt_restore surfaces with the module's own message.
    let rt = runtime();
    let module = load(&rt, &wasm(&[MEMORY_AND_ALLOC, ABI_V1, COUNTER]));
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    let err = instance.restore(b"abc").unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Guest { call: "silt_restore", message } if message == "state must be 8 bytes"),
        "{err}"
    );
    assert!(matches!(instance.process(&sensor_batch(1, 0, Compression::None)), Err(RuntimeError::Poisoned)));
}

#[test]
fn restore_of_a_stateless_module_is_refused() {
    // Proves the host does not call an export that is not there.
    let rt = runtime();
    let mut instance = load(&rt, &threshold_wasm()).instantiate(&[], &limits()).unwrap();
    assert!(matches!(instance.restore(b"x"), Err(RuntimeError::Usage(_))));
}

/// Copies the encoded parameters at `silt_init` into one output record (value = the
/// encoding, which must stay under 124 bytes so that every varint is one byte); fails
/// `silt_init` when there are none.
const ECHO_PARAMS: &str = r#"
  (global $rec (mut i32) (i32.const 0))
  (global $rec_len (mut i32) (i32.const 0))
  (data (i32.const 16) "parameter threshold is required")
  (func (export "silt_init") (param $p i32) (param $len i32) (param $r i32) (result i32)
    (if (i32.eqz (local.get $len))
      (then
        (i32.store (local.get $r) (i32.const 16))
        (i32.store offset=4 (local.get $r) (i32.const 31))
        (return (i32.const 7))))
    (if (i32.ge_u (local.get $len) (i32.const 124)) (then unreachable))
    (global.set $rec_len (i32.add (local.get $len) (i32.const 5)))
    (global.set $rec (call $alloc (global.get $rec_len)))
    (i32.store8 (global.get $rec) (i32.add (local.get $len) (i32.const 4)))
    (i32.store8 offset=1 (global.get $rec) (i32.const 0))
    (i32.store8 offset=2 (global.get $rec) (i32.const 0))
    (i32.store8 offset=3 (global.get $rec) (local.get $len))
    (memory.copy (i32.add (global.get $rec) (i32.const 4)) (local.get $p) (local.get $len))
    (i32.store8 (i32.add (global.get $rec) (i32.add (local.get $len) (i32.const 4))) (i32.const 0))
    (i32.const 0))
  (func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
    (i32.store (local.get $r) (global.get $rec))
    (i32.store offset=4 (local.get $r) (global.get $rec_len))
    (i32.const 0))
"#;

#[test]
fn parameters_reach_silt_init_sorted_and_encoded() {
    // Proves the guest sees the ABI's parameter encoding, keys sorted by their bytes.
    let rt = runtime();
    let module = load(&rt, &wasm(&[MEMORY_AND_ALLOC, ABI_V1, ECHO_PARAMS]));
    let params =
        vec![("threshold".to_string(), "20.5".to_string()), ("field".to_string(), "temp".to_string())];
    let mut instance = module.instantiate(&params, &limits()).unwrap();
    let out = instance.process(&sensor_batch(1, 0, Compression::None)).unwrap().unwrap();
    let mut want = 2u32.to_le_bytes().to_vec();
    for (k, v) in [("field", "temp"), ("threshold", "20.5")] {
        want.extend_from_slice(&(k.len() as u32).to_le_bytes());
        want.extend_from_slice(k.as_bytes());
        want.extend_from_slice(&(v.len() as u32).to_le_bytes());
        want.extend_from_slice(v.as_bytes());
    }
    assert_eq!(records(&out)[0].2, want);

    let err = module.instantiate(&[], &limits()).err().expect("init fails without parameters");
    assert!(
        matches!(&err, RuntimeError::Guest { call: "silt_init", message } if message == "parameter threshold is required"),
        "{err}"
    );
    assert!(err.to_string().contains("parameter threshold is required"));
    let too_many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i:02}"), String::new())).collect();
    assert!(matches!(module.instantiate(&too_many, &limits()), Err(RuntimeError::Params(_))));
}

#[test]
fn an_artefact_loads_in_a_restarted_runtime() {
    // Proves compile -> load works across two engines with the same settings (a restart),
    // and that the compatibility key is stable within the process.
    let rt = runtime();
    let artefact = rt.compile(&threshold_wasm()).unwrap();
    assert_eq!(rt.compatibility_key(), rt.compatibility_key());
    let restarted = runtime();
    assert_eq!(restarted.compatibility_key(), rt.compatibility_key());
    let module = restarted.load(&artefact).unwrap();
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    assert!(instance.process(&sensor_batch(50, 0, Compression::None)).unwrap().is_some());
    // Without pooling the compiled code is the same, and so is the key.
    let on_demand = Runtime::new(RuntimeConfig { pooling: false, ..RuntimeConfig::default() }).unwrap();
    assert!(!on_demand.is_pooling());
    assert_eq!(on_demand.compatibility_key(), rt.compatibility_key());
    on_demand.load(&artefact).unwrap().instantiate(&[], &limits()).unwrap();
}

#[test]
fn damaged_or_foreign_artefacts_are_refused_not_run() {
    // Proves garbage, truncated and bit-flipped artefacts give an Artefact error, no crash.
    let rt = runtime();
    let artefact = rt.compile(&threshold_wasm()).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut foreign = artefact.clone();
    foreign[10] ^= 1; // inside the compatibility key
    let mut flipped = artefact.clone();
    let at = artefact.len() / 2;
    flipped[at] ^= 0x40;
    for (what, bytes) in [
        ("empty", &[][..]),
        ("garbage", &garbage[..]),
        ("wasm instead of an artefact", &threshold_wasm()[..]),
        ("truncated", &artefact[..artefact.len() - 100]),
        ("foreign", &foreign[..]),
        ("flipped", &flipped[..]),
    ] {
        match rt.load(bytes) {
            Err(RuntimeError::Artefact(m)) => assert!(!m.is_empty(), "{what}"),
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }
    assert_still_usable(&rt);
}

#[test]
fn the_pool_caps_live_instances_and_frees_slots_on_drop() {
    // Proves instances_max is enforced with a clear error and that a dropped instance's slot
    // is reused.
    let rt = Runtime::new(RuntimeConfig {
        pooling: true,
        instances_max: 2,
        epoch_tick_ms: 5,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert!(rt.is_pooling());
    let module = load(&rt, &threshold_wasm());
    let a = module.instantiate(&[], &limits()).unwrap();
    let _b = module.instantiate(&[], &limits()).unwrap();
    let err = module.instantiate(&[], &limits()).err().expect("no third slot");
    assert!(matches!(&err, RuntimeError::Instantiate(m) if m.contains("instances_max")), "{err}");
    drop(a);
    module.instantiate(&[], &limits()).unwrap();
}

#[test]
fn limits_the_runtime_cannot_honour_are_refused() {
    // Proves out-of-range limits are caught before anything runs.
    let rt = runtime();
    let module = load(&rt, &threshold_wasm());
    for bad in [
        Limits { memory_bytes_max: 512 << 20, ..Limits::default() },
        Limits { call_time_ms_max: 0, ..Limits::default() },
        Limits { output_bytes_max: 9 << 20, ..Limits::default() },
    ] {
        assert!(matches!(module.instantiate(&[], &bad), Err(RuntimeError::Usage(_))), "{bad:?}");
    }
}

#[test]
fn without_address_space_for_the_pool_the_runtime_falls_back_to_on_demand() {
    // Proves that under a virtual-memory limit too small for the pool (about 4 GiB of address
    // space per slot) the runtime still starts, without pooling, and runs processors. The test
    // re-runs itself under `ulimit -v`, which would otherwise limit the whole test process.
    const CHILD: &str = "SILT_RUNTIME_TEST_UNDER_ULIMIT";
    if std::env::var_os(CHILD).is_some() {
        let rt = runtime();
        assert!(!rt.is_pooling());
        assert_still_usable(&rt);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        // 16 GiB: room for on-demand instances (4 GiB + guard each), not for 16 pool slots.
        .arg(r#"ulimit -v 16777216 && exec "$0" "$@""#)
        .arg(exe)
        .args([
            "--exact",
            "without_address_space_for_the_pool_the_runtime_falls_back_to_on_demand",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .status()
        .unwrap();
    assert!(status.success(), "child run under ulimit -v failed: {status}");
}

#[test]
fn counters_are_read_after_init_and_after_each_batch() {
    // Proves a good block is decoded in the module's order, and that each call sees the
    // module's current totals.
    let rt = runtime();
    let body = format!("(i64.store (i32.const 271) (global.get $skipped)) {}", counters_slot(256, 40));
    let module = load(&rt, &counters_module(&body));
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    let counters = |i: &mut silt_runtime::Instance| i.counters().unwrap();
    assert_eq!(counters(&mut instance), [("skipped".to_string(), 0), ("limit".to_string(), u64::MAX)]);
    assert_eq!(instance.process(&sensor_batch(3, 0, Compression::None)).unwrap(), None);
    assert_eq!(counters(&mut instance)[0], ("skipped".to_string(), 3));
    instance.process(&sensor_batch(5, 3, Compression::Lz4)).unwrap();
    assert_eq!(counters(&mut instance)[0], ("skipped".to_string(), 8));
}

#[test]
fn without_silt_counters_or_with_an_empty_block_there_are_none() {
    // Proves the export is optional (the host never calls what is not there), and that a
    // slot of length 0 means no counters, whatever its pointer.
    let rt = runtime();
    let mut instance = load(&rt, &processor(PROCESS_PASSTHROUGH)).instantiate(&[], &limits()).unwrap();
    assert_eq!(instance.counters().unwrap(), []);
    assert!(instance.process(&sensor_batch(2, 0, Compression::None)).unwrap().is_some());
    assert_eq!(instance.counters().unwrap(), []);

    let mut instance =
        load(&rt, &counters_module(&counters_slot(-1, 0))).instantiate(&[], &limits()).unwrap();
    assert_eq!(instance.counters().unwrap(), []);
    assert!(!instance.is_poisoned());
}

#[test]
fn a_counters_error_status_carries_the_guests_message_and_poisons() {
    // Proves an error status from silt_counters is reported like any other call's.
    let rt = runtime();
    let body = r#"(i32.store (local.get $r) (i32.const 512)) (i32.store offset=4 (local.get $r) (i32.const 20)) (i32.const 3)"#;
    let wasm = wasm(&[
        MEMORY_AND_ALLOC,
        ABI_V1,
        INIT_OK,
        SKIPPING,
        r#"(data (i32.const 512) "counters unavailable")"#,
        &format!(r#"(func (export "silt_counters") (param $r i32) (result i32) {body})"#),
    ]);
    let mut instance = load(&rt, &wasm).instantiate(&[], &limits()).unwrap();
    let err = instance.counters().unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Guest { call: "silt_counters", message } if message == "counters unavailable"),
        "{err}"
    );
    assert!(instance.is_poisoned());
    assert!(matches!(instance.process(&sensor_batch(1, 0, Compression::None)), Err(RuntimeError::Poisoned)));
}
