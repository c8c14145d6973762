//! Per-event cost of a threshold filter over a 1000-record batch of ~100-byte sensor readings,
//! run as a hand-written WAT processor through the whole host path (copy in, one call, check
//! and wrap the output) against the same rule in native Rust doing the same walk, copy and
//! wrap; and the lifecycle costs around it: compile, load (deserialize) and instantiate, with
//! and without the pooling allocator. `wasm_noop` is a processor that emits nothing: the host's
//! fixed cost per batch (copy into guest memory, one call).
//!
//! Run: `cargo bench -p silt-runtime --bench filter`

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::{keeps, processor, sensor_batch, threshold_wasm};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use silt_runtime::{Limits, Runtime, RuntimeConfig};
use silt_wire::batch::{self, Compression, HEADER_LEN};

const RECORDS: u64 = 1000;

/// LEB128 as the WAT filter reads it.
fn varint(b: &[u8], mut p: usize) -> (usize, usize) {
    let (mut v, mut shift) = (0usize, 0);
    loop {
        let byte = b[p];
        p += 1;
        v |= ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return (v, p);
        }
    }
}

/// The filter natively: the same record walk, the same copy of kept records, the same
/// wrapping into an output batch as the host does after the guest returns.
fn native_filter(input: &[u8], out: &mut Vec<u8>) -> Option<Vec<u8>> {
    out.clear();
    let first_ts = i64::from_le_bytes(input[52..60].try_into().unwrap());
    let mut p = HEADER_LEN;
    // One copy per run of adjacent kept records, as the WAT filter does.
    let (mut run, mut run_end) = (p, p);
    while p < input.len() {
        let record = p;
        let (len, body) = varint(input, p);
        let next = body + len;
        let (_, after_ts) = varint(input, body);
        let (key_len, key) = varint(input, after_ts);
        let (value_len, value) = varint(input, key + key_len);
        if keeps(&input[value..value + value_len]) {
            if record != run_end {
                out.extend_from_slice(&input[run..run_end]);
                run = record;
            }
            run_end = next;
        }
        p = next;
    }
    out.extend_from_slice(&input[run..run_end]);
    (!out.is_empty()).then(|| batch::from_records(first_ts, out, 0, 0).unwrap())
}

fn filter(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let module = rt.load(&rt.compile(&threshold_wasm()).unwrap()).unwrap();
    let mut instance = module.instantiate(&[], &Limits::default()).unwrap();
    let input = sensor_batch(RECORDS, 0, Compression::None);
    let packed = sensor_batch(RECORDS, 0, Compression::Lz4);
    // Emits nothing: what the host path costs around the guest (copy in, one call).
    let noop = processor(
        r#"(func (export "silt_process") (param i32) (param i32) (param $r i32) (result i32)
             (i32.store offset=4 (local.get $r) (i32.const 0))
             (i32.const 0))"#,
    );
    let mut noop =
        rt.load(&rt.compile(&noop).unwrap()).unwrap().instantiate(&[], &Limits::default()).unwrap();
    let mut scratch = Vec::new();
    assert_eq!(instance.process(&input).unwrap(), native_filter(&input, &mut scratch));

    let mut g = c.benchmark_group("filter_1000_records");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("native", |b| b.iter(|| native_filter(black_box(&input), &mut scratch)));
    g.bench_function("wasm", |b| b.iter(|| instance.process(black_box(&input)).unwrap()));
    g.bench_function("wasm_noop", |b| b.iter(|| noop.process(black_box(&input)).unwrap()));
    g.bench_function("wasm_lz4_input", |b| b.iter(|| instance.process(black_box(&packed)).unwrap()));
    g.finish();
}

fn lifecycle(c: &mut Criterion) {
    let pooled = Runtime::new(RuntimeConfig::default()).unwrap();
    let on_demand = Runtime::new(RuntimeConfig { pooling: false, ..RuntimeConfig::default() }).unwrap();
    assert!(pooled.is_pooling() && !on_demand.is_pooling());
    let wasm = threshold_wasm();
    let artefact = pooled.compile(&wasm).unwrap();
    let limits = Limits::default();

    let mut g = c.benchmark_group("lifecycle");
    g.bench_function("compile", |b| b.iter(|| pooled.compile(black_box(&wasm)).unwrap()));
    g.bench_function("load", |b| b.iter(|| pooled.load(black_box(&artefact)).unwrap()));
    let module = pooled.load(&artefact).unwrap();
    g.bench_function("instantiate_pooling", |b| b.iter(|| module.instantiate(&[], &limits).unwrap()));
    let module = on_demand.load(&artefact).unwrap();
    g.bench_function("instantiate_on_demand", |b| b.iter(|| module.instantiate(&[], &limits).unwrap()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::bench_config();
    targets = filter, lifecycle
}
criterion_main!(benches);
