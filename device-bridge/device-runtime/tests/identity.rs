//! The device tier against the broker's host: the same module, parameters and batches give
//! the same output bytes, counters and snapshots on wasmi (`silt-device-runtime`) as on
//! wasmtime (`silt-runtime`), batch by batch, also when the device moves its state into a
//! fresh instance midway (docs/design.md, decision 12).
//!
//! The six Rust examples are built for wasm32-unknown-unknown by a nested `cargo build
//! --release` into `wasm-examples` beside this test's target directory, as
//! `sdk/processor/tests/wasm_modules.rs` builds them (the same directory, so one build serves
//! both), and once more linked with a 16 KiB shadow stack instead of Rust's 1 MiB, into
//! `wasm-examples-small-stack`, so that they fit the device's default memory limit. It needs
//! the target: `rustup target add wasm32-unknown-unknown`.

#[path = "common/examples.rs"]
mod examples;

use std::sync::OnceLock;

use examples::{built_examples, built_small_examples, example_wasm};
use silt_device_runtime::{Limits, Module};
use silt_runtime::{Runtime, RuntimeConfig};
use silt_wire::batch::{self, BatchBuilder, HEADER_LEN};

const T0: i64 = 1_700_000_000_000;

/// The broker's runtime, without the pooling allocator's address-space reservation.
fn broker() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new(RuntimeConfig { pooling: false, ..RuntimeConfig::default() }).unwrap())
}

/// JSON values of the `dev-x` series: floats at the edges of f64 (the largest, which
/// overflows to infinity in arithmetic and then gives NaN; the smallest subnormal; negative
/// zero; integers past 2^53; decimals that do not round-trip in binary) and values with no
/// usable number.
const TRICKY: [&str; 16] = [
    r#"{"temp":1.7976931348623157e308}"#,
    r#"{"temp":-1.7976931348623157e308}"#,
    r#"{"temp":5e-324}"#,
    r#"{"temp":-0.0}"#,
    r#"{"temp":2.2250738585072014e-308}"#,
    r#"{"temp":0.30000000000000004}"#,
    r#"{"temp":123456789.123456789}"#,
    r#"{"temp":9007199254740993}"#,
    r#"{"temp":-273.15,"unit":"c"}"#,
    r#"{"temp":1E2}"#,
    r#"{"temp":1e400}"#,
    r#"{"temp":"warm"}"#,
    r#"{"temp":null}"#,
    r#"{"humidity":40.5}"#,
    r#"[21.5]"#,
    r#"{"temp":3.4028235e38}"#,
];

/// Eight stamped batches of a second of readings each: three ordinary series around 20 °C
/// with spikes from the fourth batch on (so anomaly-zscore alerts), the `dev-x` series of
/// [`TRICKY`] values, an event time going back now and then (late for window-aggregate,
/// skipped by anomaly-zscore), and a header on some records.
fn sensor_batches() -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut offset = 0u64;
    for b in 0..8i64 {
        let mut builder = BatchBuilder::default();
        for i in 0..60i64 {
            let n = b * 60 + i;
            let key = ["dev-0", "dev-1", "dev-2", "dev-x"][i as usize % 4];
            let mut ts = T0 + b * 1000 + i * 16;
            if n % 17 == 16 {
                ts -= 700;
            }
            let value = if key == "dev-x" {
                TRICKY[(n / 4) as usize % TRICKY.len()].to_string()
            } else {
                let spike = if b >= 3 && n % 37 == 0 { 30.0 } else { 0.0 };
                let temp = 20.0 + ((i * 7 + b * 3) % 11) as f64 / 4.0 + spike;
                format!(
                    r#"{{"device":"{key}","seq":"{n:010}","temp":{temp},"humidity":40.12,"battery":3.71}}"#
                )
            };
            let headers: &[(&[u8], &[u8])] =
                if n % 5 == 0 { &[(b"traceparent", b"00-abc-def-01")] } else { &[] };
            builder.push(ts, key.as_bytes(), value.as_bytes(), headers).unwrap();
        }
        let mut bytes = builder.finish(7, b as u64);
        batch::stamp(&mut bytes, offset, T0 + b * 1000 + 999);
        offset += 60;
        batches.push(bytes);
    }
    batches
}

/// What one batch gave on the broker: the records of its output batch, their count and
/// largest time (from the batch header).
fn broker_output(out: Option<Vec<u8>>) -> (Vec<u8>, u32, Option<i64>) {
    match out {
        None => (Vec::new(), 0, None),
        Some(b) => {
            let count = u32::from_le_bytes(b[48..52].try_into().unwrap());
            let max_ts = i64::from_le_bytes(b[60..68].try_into().unwrap());
            (b[HEADER_LEN..].to_vec(), count, Some(max_ts))
        }
    }
}

/// Runs `batches` through the broker's host and the device's under `device_limits` and
/// asserts identical records, counts, times, counters and snapshots after every batch. For a
/// stateful module the device's state moves into a fresh instance halfway. Returns the
/// output records, batch by batch.
fn assert_identical(
    example: &str,
    wasm: &[u8],
    params: &[(&str, &str)],
    batches: &[Vec<u8>],
    device_limits: &Limits,
) -> Vec<Vec<u8>> {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let broker_module = broker().compile_module(wasm).unwrap();
    let mut broker = broker_module.instantiate(&owned, &silt_runtime::Limits::default()).unwrap();
    let device_module = Module::new(wasm).unwrap();
    assert_eq!(device_module.is_stateful(), broker_module.is_stateful(), "{example}");
    let mut device = device_module.instantiate(params, device_limits).unwrap();

    let mut outputs = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        if b == batches.len() / 2 && device_module.is_stateful() {
            let state = device.snapshot().unwrap().expect("stateful").to_vec();
            assert_eq!(
                broker.snapshot().unwrap(),
                Some(state.clone()),
                "{example}: snapshot before batch {b}"
            );
            device = device_module.instantiate(params, device_limits).unwrap();
            device.restore(&state).unwrap();
            assert_eq!(device.snapshot().unwrap(), Some(&state[..]), "{example}: restored state");
        }
        let (records, count, max_ts) = broker_output(broker.process(batch).unwrap());
        let out = device.process(batch).unwrap();
        assert_eq!(out.records, records, "{example}: output of batch {b}");
        assert_eq!((out.record_count, out.max_timestamp_ms), (count, max_ts), "{example}: batch {b}");
        let device_counters: Vec<(String, u64)> =
            device.counters().unwrap().into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        assert_eq!(device_counters, broker.counters().unwrap(), "{example}: counters after batch {b}");
        outputs.push(records);
    }
    let device_state = device.snapshot().unwrap().map(<[u8]>::to_vec);
    assert_eq!(device_state, broker.snapshot().unwrap(), "{example}: final snapshot");
    outputs
}

/// Every example with parameters that make it work on `sensor_batches`.
const CASES: [(&str, &[(&str, &str)]); 7] = [
    ("threshold-filter", &[("min", "20"), ("max", "30")]),
    ("unit-convert", &[("from", "c"), ("to", "f"), ("decimals", "3")]),
    ("unit-convert", &[("from", "kpa"), ("to", "psi"), ("decimals", "15")]),
    ("ema-smooth", &[("alpha", "0.2")]),
    ("anomaly-zscore", &[("field", "temp"), ("window", "2s"), ("warmup", "1s"), ("cooldown", "200ms")]),
    ("window-aggregate", &[("window_ms", "1000"), ("lateness_ms", "200")]),
    ("send-on-change", &[("field", "temp"), ("delta", "0.5"), ("max_silence_ms", "2000")]),
];

/// Every example gives the broker's bytes on the device: as built by default under the
/// broker's limits (the same `silt_alloc` calls, so the same memory layout), and linked with a
/// small stack under the device's default limits (a quarter MiB of memory, 4 KiB input
/// buffers, 5 million fuel); the two builds give the same bytes too, and the runs produce
/// output (anomaly-zscore flags the spikes).
#[test]
fn examples_give_the_brokers_bytes() {
    let batches = sensor_batches();
    for (example, params) in CASES {
        let wasm = example_wasm(built_examples(), example);
        let like_broker = assert_identical(example, &wasm, params, &batches, &Limits::broker_like());
        let small = example_wasm(built_small_examples(), example);
        let on_device = assert_identical(example, &small, params, &batches, &Limits::default());
        assert_eq!(like_broker, on_device, "{example}: the small-stack build");
        let all: Vec<u8> = like_broker.concat();
        assert!(!all.is_empty(), "{example} {params:?} produced nothing");
        if example == "anomaly-zscore" {
            let text = String::from_utf8_lossy(&all);
            assert!(text.contains(r#""kind":"spike""#), "no spike alert: {text}");
        }
        eprintln!("{example} {params:?}: {} output bytes, identical", all.len());
    }
}

/// The same filter written in C (`processors/examples/c-threshold`, Debian's clang): on the
/// sensor batches, tricky numbers included, it keeps exactly the records the Rust example
/// keeps, byte for byte, on both hosts; printed beside the Rust build: module size and fuel
/// per event on the device (BENCHMARKS.md).
#[test]
fn the_filter_in_c_keeps_what_the_rust_one_keeps() {
    let Some(c) = examples::built_c_threshold() else { return };
    let batches = sensor_batches();
    let params: &[(&str, &str)] = &[("min", "20"), ("max", "30")];
    let in_c = assert_identical("c-threshold", &c, params, &batches, &Limits::default());
    let rust = example_wasm(built_small_examples(), "threshold-filter");
    let in_rust = assert_identical("threshold-filter", &rust, params, &batches, &Limits::default());
    assert_eq!(in_c, in_rust, "the C filter keeps other records than the Rust one");
    assert!(!in_c.concat().is_empty());
    let events = batches.len() as u64 * 60;
    for (name, wasm) in [("C", &c), ("Rust (small stack)", &rust)] {
        let module = Module::new(wasm).unwrap();
        let mut instance = module.instantiate(params, &Limits::default()).unwrap();
        let mut fuel = 0;
        for b in &batches {
            instance.process(b).unwrap();
            fuel += instance.fuel_used();
        }
        eprintln!("threshold filter in {name}: {} bytes, {} fuel per event", wasm.len(), fuel / events);
    }
}

/// What each example costs per input record on the device tier, in fuel (about one unit per
/// WebAssembly instruction, so the same on every run and machine): the small-stack builds under
/// the device's default limits, over the same batches. Prints the figures BENCHMARKS.md holds.
#[test]
fn fuel_per_event_on_the_device() {
    let batches = sensor_batches();
    let events = batches.len() as u64 * 60;
    for (example, params) in CASES {
        let module = Module::new(&example_wasm(built_small_examples(), example)).unwrap();
        let mut instance = module.instantiate(params, &Limits::default()).unwrap();
        let mut fuel = 0;
        for b in &batches {
            instance.process(b).unwrap();
            fuel += instance.fuel_used();
        }
        assert!(fuel > 0);
        eprintln!("fuel per event: {example} {params:?}: {} ({fuel} for {events} records)", fuel / events);
    }
}

/// Arithmetic NaNs come out as the canonical NaN on both tiers, whatever the inputs' payloads
/// and signs (wasmi's deterministic profile, cranelift's NaN canonicalisation): a module that
/// writes the bits of eight NaN-producing operations into a record returns the same bytes.
#[test]
fn nan_bits_are_canonical_on_both_tiers() {
    // Two pages, with room for the broker's 64 KiB input buffer. A record at 2048: length
    // 68, delta 0, no key, a 64-byte value at 2052, no headers.
    let wat = r#"(module
      (memory (export "memory") 2)
      (global $heap (mut i32) (i32.const 4096))
      (func (export "silt_alloc") (param $size i32) (result i32)
        (local $ptr i32)
        (local.set $ptr (global.get $heap))
        (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
        (if (i32.gt_u (global.get $heap) (i32.const 131072)) (then (return (i32.const 0))))
        (local.get $ptr))
      (func (export "silt_abi_version") (result i32) (i32.const 1))
      (func (export "silt_init") (param i32 i32 i32) (result i32) (i32.const 0))
      (data (i32.const 2048) "\44\00\00\40")
      (data (i32.const 2116) "\00")
      (func (export "silt_process") (param i32 i32) (param $r i32) (result i32)
        (f64.store (i32.const 2052) (f64.div (f64.const 0) (f64.const 0)))
        (f64.store (i32.const 2060) (f64.sqrt (f64.const -1)))
        (f64.store (i32.const 2068) (f64.add (f64.const nan:0x4) (f64.const 1)))
        (f64.store (i32.const 2076) (f64.mul (f64.const -nan:0x8000000000001) (f64.const 2)))
        (f32.store (i32.const 2084) (f32.div (f32.const 0) (f32.const 0)))
        (f32.store (i32.const 2092) (f32.add (f32.const nan:0x200001) (f32.const 1)))
        (f64.store (i32.const 2100) (f64.min (f64.const -nan:0x4) (f64.const 1)))
        (f32.store (i32.const 2108) (f32.demote_f64 (f64.const -nan:0x8000000000001)))
        (i32.store (local.get $r) (i32.const 2048))
        (i32.store offset=4 (local.get $r) (i32.const 69))
        (i32.const 0)))"#;
    let wasm = wat::parse_str(wat).unwrap();
    let outputs = assert_identical("nan", &wasm, &[], &sensor_batches()[..1], &Limits::default());
    let value = &outputs[0][4..68];
    let f64_nan = 0x7ff8_0000_0000_0000u64.to_le_bytes();
    let f32_nan = [0x7fc0_0000u32.to_le_bytes(), [0; 4]].concat();
    for (i, bits) in value.chunks(8).enumerate() {
        let want: &[u8] = if matches!(i, 4 | 5 | 7) { &f32_nan } else { &f64_nan };
        assert_eq!(bits, want, "operation {i}");
    }
}
