//! The Rust example processors as users build them: per-event cost of `threshold-filter` and
//! `ema-smooth` compiled to wasm32 and run through `Instance::process`, against the very same
//! crates called natively (`Processor::process` on the same input bytes); what a restart of a
//! deployed processor costs (load the cached artefact, instantiate, restore a snapshot); and
//! what a deploy costs (compiling each example).
//!
//! The wasm modules are built from the bench with a nested
//! `cargo build --release --target wasm32-unknown-unknown` into `wasm-bench` beside the
//! target directory, so the cargo running the bench is not waited on.
//!
//! Run: `cargo bench -p silt-runtime --bench examples`

#[path = "../tests/common/mod.rs"]
mod common;
// The examples' list and build, shared with the device tier's, the broker's and the SDK's tests.
#[path = "../../../device-bridge/device-runtime/tests/common/examples.rs"]
mod examples;

use std::hint::black_box;
use std::path::{Path, PathBuf};

use common::sensor_batch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use silt_processor::{Batch, Output, Params, Processor, Stateful};
use silt_runtime::{Limits, Runtime, RuntimeConfig};
use silt_wire::batch::{self, BatchBuilder, Compression};

const RECORDS: u64 = 1000;
/// The filter keeps readings above 20 degrees: about half of `sensor_batch`'s [10, 30).
const FILTER_PARAMS: [(&str, &str); 1] = [("min", "20")];
const EMA_PARAMS: [(&str, &str); 1] = [("field", "temp")];

/// Builds the examples for wasm32 (release, as deployed) and returns the directory holding
/// the `.wasm` files.
fn build_examples() -> PathBuf {
    examples::build_examples("wasm-bench", None)
}

fn wasm(dir: &Path, package: &str) -> Vec<u8> {
    let file = dir.join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The processor built natively from the same parameters, as `silt_init` builds it.
fn native<P: Processor>(params: &[(&str, &str)]) -> P {
    let encoded = silt_processor::params::encode(params).unwrap();
    P::init(&Params::decode(&encoded).unwrap()).unwrap()
}

/// One native `silt_process`: what the guest's export runs, minus the pointer glue.
fn native_process<P: Processor>(p: &mut P, input: &[u8], out: &mut Output) -> u32 {
    let batch = Batch::new(input).unwrap();
    out.reset(batch.first_timestamp_ms());
    p.process(&batch, out).unwrap();
    out.len()
}

/// Native processing plus the host's wrapping of the output records into a batch (checked
/// and CRC'd by `from_records`): the same bytes `Instance::process` returns.
fn native_process_and_wrap<P: Processor>(p: &mut P, input: &[u8], out: &mut Output) -> Option<Vec<u8>> {
    native_process(p, input, out);
    // From the header, as the host reads it: `Batch::new` would check the framing again.
    let first_ts = i64::from_le_bytes(input[52..60].try_into().unwrap());
    (!out.is_empty()).then(|| batch::from_records(first_ts, out.as_bytes(), 0, 0).unwrap())
}

/// `n` readings spread over `keys` keys (`dev-00000`, ...), stamped at offset 0.
fn keyed_batch(n: u64, keys: u64) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for i in 0..n {
        let key = format!("dev-{:05}", i % keys);
        b.push(1_700_000_000_000 + i as i64, key.as_bytes(), &common::reading(i), &[]).unwrap();
    }
    let mut bytes = b.finish_with(7, 1, Compression::None);
    batch::stamp(&mut bytes, 0, 1_700_000_100_000);
    bytes
}

/// A per-event comparison of one example: native, native plus the host's wrap, and wasm
/// through the whole host path. Asserts that wasm and native produce the same batch.
fn compare<P: Processor>(c: &mut Criterion, rt: &Runtime, group: &str, wasm: &[u8], params: &[(&str, &str)]) {
    let module = rt.load(&rt.compile(wasm).unwrap()).unwrap();
    let mut instance = module.instantiate(&owned(params), &Limits::default()).unwrap();
    let mut reference = native::<P>(params);
    let mut native_p = native::<P>(params);
    let input = sensor_batch(RECORDS, 0, Compression::None);
    let mut out = Output::new();
    let want = native_process_and_wrap(&mut reference, &input, &mut out);
    let got = instance.process(&input).unwrap();
    assert_eq!(got, want, "{group}: wasm and native outputs differ");
    eprintln!(
        "{group}: input {} bytes, output {} records in {} bytes",
        input.len(),
        want.as_ref().map_or(0, |b| batch::peek_header(b).0),
        want.as_ref().map_or(0, |b| b.len())
    );

    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("native", |b| b.iter(|| native_process(&mut native_p, black_box(&input), &mut out)));
    g.bench_function("native_and_wrap", |b| {
        b.iter(|| native_process_and_wrap(&mut native_p, black_box(&input), &mut out))
    });
    g.bench_function("wasm", |b| b.iter(|| instance.process(black_box(&input)).unwrap()));
    g.finish();
}

fn per_event(c: &mut Criterion) {
    let dir = build_examples();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    compare::<threshold_filter::Filter>(
        c,
        &rt,
        "threshold_filter_1000_records",
        &wasm(&dir, "threshold-filter"),
        &FILTER_PARAMS,
    );
    compare::<ema_smooth::EmaSmooth>(
        c,
        &rt,
        "ema_smooth_1000_records",
        &wasm(&dir, "ema-smooth"),
        &EMA_PARAMS,
    );
}

/// Restart of a deployed processor, as the broker does it after a crash or a resume: the
/// cached artefact is loaded (`Runtime::load`: checks, deserialize, link), instantiated (the
/// pooling allocator; `silt_abi_version`, `silt_alloc`, `silt_init` run) and given its last
/// snapshot (`silt_restore`). Reading the artefact and the snapshot from sled is not included.
fn restart(c: &mut Criterion) {
    let dir = build_examples();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let params = owned(&EMA_PARAMS);
    let limits = Limits::default();
    let artefact = rt.compile(&wasm(&dir, "ema-smooth")).unwrap();
    let module = rt.load(&artefact).unwrap();
    // Snapshots of 100 and 10,000 sensors, taken by the wasm module itself; each matches
    // what the native crate takes from the same input.
    let snapshots: Vec<(u64, Vec<u8>)> = [100u64, 10_000]
        .into_iter()
        .map(|keys| {
            let mut i = module.instantiate(&params, &limits).unwrap();
            let input = keyed_batch(keys.max(RECORDS), keys);
            i.process(&input).unwrap();
            let state = i.snapshot().unwrap().expect("ema-smooth is stateful");
            let mut n = native::<ema_smooth::EmaSmooth>(&EMA_PARAMS);
            native_process(&mut n, &input, &mut Output::new());
            let mut native_state = Vec::new();
            n.snapshot(&mut native_state);
            assert_eq!(state, native_state, "wasm and native snapshots differ");
            eprintln!(
                "restart: snapshot of {keys} keys is {} bytes; artefact {} bytes",
                state.len(),
                artefact.len()
            );
            (keys, state)
        })
        .collect();

    let mut g = c.benchmark_group("restart_ema_smooth");
    g.bench_function("load", |b| b.iter(|| rt.load(black_box(&artefact)).unwrap()));
    g.bench_function("instantiate", |b| b.iter(|| module.instantiate(&params, &limits).unwrap()));
    for (keys, state) in &snapshots {
        g.bench_with_input(BenchmarkId::new("instantiate_restore", keys), state, |b, state| {
            b.iter(|| {
                let mut i = module.instantiate(&params, &limits).unwrap();
                i.restore(black_box(state)).unwrap();
                i
            })
        });
        g.bench_with_input(BenchmarkId::new("load_instantiate_restore", keys), state, |b, state| {
            b.iter(|| {
                let m = rt.load(black_box(&artefact)).unwrap();
                let mut i = m.instantiate(&params, &limits).unwrap();
                i.restore(black_box(state)).unwrap();
                i
            })
        });
    }
    g.finish();
}

/// What a deploy of each example costs in compilation (`Runtime::compile`: ABI checks,
/// cranelift, serialize), the largest part of a deploy's round trip.
fn compile(c: &mut Criterion) {
    let dir = build_examples();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for p in examples::EXAMPLES {
        let bytes = wasm(&dir, p);
        eprintln!("compile: {p}.wasm is {} bytes", bytes.len());
        g.bench_with_input(BenchmarkId::from_parameter(p), &bytes, |b, bytes| {
            b.iter(|| rt.compile(black_box(bytes)).unwrap())
        });
    }
    let wat = wat::parse_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processors/examples/wat-threshold/threshold.wat"),
    )
    .expect("threshold.wat parses");
    g.bench_with_input(BenchmarkId::from_parameter("wat-threshold"), &wat, |b, bytes| {
        b.iter(|| rt.compile(black_box(bytes)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::bench_config();
    targets = per_event, restart, compile
}
criterion_main!(benches);
