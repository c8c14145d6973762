//! Shared by the integration tests and the benchmark: hand-written WAT pieces, batch builders
//! and a check that a runtime still works after a hostile module.
#![allow(dead_code)]

mod fixtures;
pub use fixtures::*;

use silt_runtime::{Limits, Module, Runtime, RuntimeConfig};
use silt_wire::batch::{self, BatchBuilder, BatchView};

/// The threshold filter of `tests/wat/threshold.wat`.
pub const THRESHOLD_WAT: &str = include_str!("../wat/threshold.wat");

/// Skips every record (emits nothing) and reports `skipped`, the records seen so far, and
/// `limit`, always `u64::MAX`, in a counters block kept at 256 (40 bytes).
pub const SKIPPING: &str = r#"
  (global $skipped (mut i64) (i64.const 0))
  (data (i32.const 256) "\02\00\00\00\07\00\00\00skipped\00\00\00\00\00\00\00\00\05\00\00\00limit\ff\ff\ff\ff\ff\ff\ff\ff")
  (func (export "silt_process") (param $b i32) (param i32) (param $r i32) (result i32)
    (global.set $skipped (i64.add (global.get $skipped) (i64.extend_i32_u (i32.load offset=48 (local.get $b)))))
    (i32.store offset=4 (local.get $r) (i32.const 0))
    (i32.const 0))
"#;

/// A module with [`SKIPPING`]'s `silt_process` and data, and `counters` as the body of
/// `silt_counters` (param `$r`, the result slot; returns the status).
pub fn counters_module(counters: &str) -> Vec<u8> {
    let func = format!(r#"(func (export "silt_counters") (param $r i32) (result i32) {counters})"#);
    wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, SKIPPING, &func])
}

/// The threshold filter as a binary module.
pub fn threshold_wasm() -> Vec<u8> {
    wat::parse_str(THRESHOLD_WAT).expect("threshold.wat parses")
}

/// A stateless module whose `silt_process` is `process` (a whole `func` with its export).
pub fn processor(process: &str) -> Vec<u8> {
    wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, process])
}

/// A runtime small enough for many to live at once in one test process, with a fine tick so
/// that time limits are hit quickly.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        pooling: true,
        instances_max: 16,
        epoch_tick_ms: 2,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

pub fn load(rt: &Runtime, wasm: &[u8]) -> Module {
    let artefact = rt.compile(wasm).unwrap();
    rt.load(&artefact).unwrap()
}

/// Test limits: the defaults with a short time limit and 16 MiB of memory.
pub fn limits() -> Limits {
    Limits { call_time_ms_max: 200, memory_bytes_max: 16 * 1024 * 1024, ..Limits::default() }
}

/// A sensor reading of about 100 bytes; `temp` is in [10, 30) and its tens digit is byte 47.
pub fn reading(i: u64) -> Vec<u8> {
    let temp = 10.0 + ((i * 7919) % 2000) as f64 / 100.0;
    let humidity = 30.0 + ((i * 104_729) % 4000) as f64 / 100.0;
    let battery = 3.0 + ((i * 31) % 100) as f64 / 100.0;
    let v = format!(
        r#"{{"device":"dev-{:04}","seq":"{:010}","temp":{temp:.2},"humidity":{humidity:.2},"battery":{battery:.2}}}"#,
        i % 10_000,
        i
    );
    assert!(v.as_bytes()[47].is_ascii_digit() && v.as_bytes()[46] == b':', "{v}");
    v.into_bytes()
}

/// The filter's rule, natively.
pub fn keeps(value: &[u8]) -> bool {
    value.len() > 47 && value[47] >= b'2'
}

/// A stamped batch of `n` sensor readings, one per 10 ms, every third with a key.
pub fn sensor_batch(n: u64, base_offset: u64, compression: batch::Compression) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for i in 0..n {
        let key = if i % 3 == 0 { format!("dev-{:04}", i % 10_000) } else { String::new() };
        b.push(1_700_000_000_000 + i as i64 * 10, key.as_bytes(), &reading(i), &[]).unwrap();
    }
    let mut bytes = b.finish_with(7, 1, compression);
    batch::stamp(&mut bytes, base_offset, 1_700_000_100_000);
    bytes
}

pub type Rec = (i64, Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// The records of a batch, owned.
pub fn records(bytes: &[u8]) -> Vec<Rec> {
    let plain = batch::decompress(bytes).unwrap();
    let view = BatchView::checked(&plain).unwrap();
    view.records()
        .map(|r| {
            let h = r.headers().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
            (r.timestamp_ms, r.key.to_vec(), r.value.to_vec(), h)
        })
        .collect()
}

/// The runtime still compiles, instantiates and runs a well-behaved module after whatever
/// went before.
pub fn assert_still_usable(rt: &Runtime) {
    let module = load(rt, &threshold_wasm());
    let mut instance = module.instantiate(&[], &limits()).unwrap();
    let input = sensor_batch(100, 0, batch::Compression::None);
    let out = instance.process(&input).unwrap().expect("some readings pass the filter");
    let want: Vec<Rec> = records(&input).into_iter().filter(|r| keeps(&r.2)).collect();
    assert_eq!(records(&out), want);
}

/// The criterion settings of both benchmarks (`filter` and `examples`), so that their figures
/// in BENCHMARKS.md are measured alike: half a second of warm-up, two seconds and 30 samples per
/// function.
pub fn bench_config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30)
}
