//! The built modules, checked from outside as the host sees them: the six example crates
//! compiled for wasm32-unknown-unknown and the hand-written `wat-threshold` module.
//!
//! Each module must validate with only the proposals `docs/processor-abi.md` lists (for the
//! Rust modules, plus one encoding detail: see `rust_features`), import nothing, and export
//! the ABI functions with their types. Then a small reference host built on the `wasmi`
//! interpreter drives each one through the ABI exactly as the document
//! describes (result slot from `silt_alloc(8)`, parameters and batches in buffers from
//! `silt_alloc`, input buffers grown to the next power of two of at least 64 KiB, output read
//! from the slot, snapshots moved to a fresh instance), which exercises the raw-pointer glue
//! that native tests cannot reach.
//!
//! The examples are built by a nested `cargo build --release` into their own target directory
//! (next to this test's), once per test run. It needs the wasm32-unknown-unknown target
//! (`rustup target add wasm32-unknown-unknown`).

#[path = "../../../device-bridge/device-runtime/tests/common/examples.rs"]
mod examples;

use examples::{workspace_root, EXAMPLES};

use silt_processor::testing::{decode_output, BatchBuilder, OutputRecord};
use silt_processor::Batch;
use wasmparser::{Parser, Payload, ValType, Validator, WasmFeatures};

/// The proposals the ABI lists on top of WebAssembly 1.0 (which includes mutable globals).
fn abi_features() -> WasmFeatures {
    WasmFeatures::WASM1
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIMD
}

/// What Rust modules need beyond the list: one encoding detail of reference-types, a
/// `call_indirect` whose table index is an overlong LEB128 zero. Rust (1.82 and later) enables
/// reference-types for wasm32 by default and wasm-ld writes that encoding; the modules use no
/// other part of the proposal (no reference values, no table instructions), which validating
/// with only this addition checks. The ABI document does not list reference-types, so a host
/// must enable at least this much of it to load Rust modules.
fn rust_features() -> WasmFeatures {
    abi_features() | WasmFeatures::CALL_INDIRECT_OVERLONG
}

fn example_wasm(name: &str) -> Vec<u8> {
    examples::example_wasm(examples::built_examples(), name)
}

fn wat_threshold() -> Vec<u8> {
    let path = workspace_root().join("processors/examples/wat-threshold/threshold.wat");
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks what the host checks at deploy: validation with the ABI's proposals only, no
/// imports, and the exports with their types. Returns whether the module is stateful.
fn check_module(name: &str, wasm: &[u8], features: WasmFeatures) -> bool {
    Validator::new_with_features(features)
        .validate_all(wasm)
        .unwrap_or_else(|e| panic!("{name} does not validate with the ABI's proposals: {e}"));

    let mut types: Vec<(Vec<ValType>, Vec<ValType>)> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut exports: Vec<(String, wasmparser::ExternalKind, u32)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let f = ty.unwrap();
                    types.push((f.params().to_vec(), f.results().to_vec()));
                }
            }
            Payload::ImportSection(reader) => {
                if let Some(import) = reader.into_imports().next() {
                    let import = import.unwrap();
                    panic!("{name} imports {}::{} ({:?})", import.module, import.name, import.ty);
                }
            }
            Payload::FunctionSection(reader) => func_types.extend(reader.into_iter().map(Result::unwrap)),
            Payload::ExportSection(reader) => {
                for export in reader {
                    let e = export.unwrap();
                    exports.push((e.name.to_string(), e.kind, e.index));
                }
            }
            _ => {}
        }
    }
    // Imports are refused above, so every function index is the module's own.
    let signature = |export: &str| -> Option<(Vec<ValType>, Vec<ValType>)> {
        let (_, kind, index) = exports.iter().find(|(n, _, _)| n == export)?;
        assert_eq!(*kind, wasmparser::ExternalKind::Func, "{name}: {export} is not a function");
        Some(types[func_types[*index as usize] as usize].clone())
    };
    use ValType::I32;
    assert!(
        exports.iter().any(|(n, k, _)| n == "memory" && *k == wasmparser::ExternalKind::Memory),
        "{name} exports no memory"
    );
    let want = [
        ("silt_abi_version", vec![], vec![I32]),
        ("silt_alloc", vec![I32], vec![I32]),
        ("silt_init", vec![I32, I32, I32], vec![I32]),
        ("silt_process", vec![I32, I32, I32], vec![I32]),
    ];
    for (export, params, results) in want {
        assert_eq!(signature(export), Some((params, results)), "{name}: {export}");
    }
    if let Some(counters) = signature("silt_counters") {
        assert_eq!(counters, (vec![I32], vec![I32]), "{name}: silt_counters");
    }
    let snapshot = signature("silt_snapshot");
    let restore = signature("silt_restore");
    assert_eq!(snapshot.is_some(), restore.is_some(), "{name}: snapshot and restore come together");
    if let (Some(s), Some(r)) = (snapshot, restore) {
        assert_eq!(s, (vec![I32], vec![I32]), "{name}: silt_snapshot");
        assert_eq!(r, (vec![I32, I32, I32], vec![I32]), "{name}: silt_restore");
        true
    } else {
        false
    }
}

/// A reference host on the wasmi interpreter, following `docs/processor-abi.md` step by step.
struct Host {
    store: wasmi::Store<()>,
    memory: wasmi::Memory,
    alloc: wasmi::TypedFunc<i32, i32>,
    init: wasmi::TypedFunc<(i32, i32, i32), i32>,
    process: wasmi::TypedFunc<(i32, i32, i32), i32>,
    snapshot: Option<wasmi::TypedFunc<i32, i32>>,
    restore: Option<wasmi::TypedFunc<(i32, i32, i32), i32>>,
    result_ptr: i32,
    /// The input buffer and its size; replaced only by a larger one.
    input: (i32, usize),
}

impl Host {
    fn instantiate(wasm: &[u8]) -> Host {
        let mut config = wasmi::Config::default();
        // wasmi accepts the overlong `call_indirect` only with reference-types on; the
        // stricter check is `check_module`'s.
        config.wasm_tail_call(false);
        let engine = wasmi::Engine::new(&config);
        let module = wasmi::Module::new(&engine, wasm).unwrap();
        let mut store = wasmi::Store::new(&engine, ());
        let linker = wasmi::Linker::<()>::new(&engine);
        let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
        let version = instance.get_typed_func::<(), i32>(&store, "silt_abi_version").unwrap();
        assert_eq!(version.call(&mut store, ()).unwrap(), 1, "silt_abi_version");
        let alloc = instance.get_typed_func::<i32, i32>(&store, "silt_alloc").unwrap();
        let result_ptr = alloc.call(&mut store, 8).unwrap();
        assert!(result_ptr != 0 && result_ptr % 8 == 0, "result slot {result_ptr}");
        Host {
            memory: instance.get_memory(&store, "memory").unwrap(),
            init: instance.get_typed_func(&store, "silt_init").unwrap(),
            process: instance.get_typed_func(&store, "silt_process").unwrap(),
            snapshot: instance.get_typed_func(&store, "silt_snapshot").ok(),
            restore: instance.get_typed_func(&store, "silt_restore").ok(),
            store,
            alloc,
            result_ptr,
            input: (0, 0),
        }
    }

    fn alloc(&mut self, size: usize) -> i32 {
        let ptr = self.alloc.call(&mut self.store, size as i32).unwrap();
        assert!(ptr != 0 && ptr % 8 == 0, "silt_alloc({size}) = {ptr}");
        ptr
    }

    fn write(&mut self, ptr: i32, bytes: &[u8]) {
        self.memory.write(&mut self.store, ptr as u32 as usize, bytes).unwrap();
    }

    /// The bytes the result slot names: `Ok` for status 0, the message for any other.
    fn answer(&mut self, status: i32) -> Result<Vec<u8>, String> {
        let mut slot = [0u8; 8];
        self.memory.read(&self.store, self.result_ptr as u32 as usize, &mut slot).unwrap();
        let ptr = u32::from_le_bytes(slot[..4].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(slot[4..].try_into().unwrap()) as usize;
        let mut bytes = vec![0u8; len];
        if len > 0 {
            self.memory.read(&self.store, ptr, &mut bytes).unwrap();
        }
        if status == 0 {
            Ok(bytes)
        } else {
            Err(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    fn init(&mut self, params: &[(&str, &str)]) -> Result<(), String> {
        let bytes =
            if params.is_empty() { Vec::new() } else { silt_processor::params::encode(params).unwrap() };
        let ptr = if bytes.is_empty() { 0 } else { self.alloc(bytes.len()) };
        self.write(ptr, &bytes);
        let status = self.init.call(&mut self.store, (ptr, bytes.len() as i32, self.result_ptr)).unwrap();
        self.answer(status).map(drop)
    }

    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, String> {
        if batch.len() > self.input.1 {
            let size = batch.len().next_power_of_two().max(64 * 1024);
            self.input = (self.alloc(size), size);
        }
        self.write(self.input.0, batch);
        let status =
            self.process.call(&mut self.store, (self.input.0, batch.len() as i32, self.result_ptr)).unwrap();
        self.answer(status)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, String> {
        let status = self.snapshot.unwrap().call(&mut self.store, self.result_ptr).unwrap();
        self.answer(status)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let ptr = self.alloc(state.len());
        self.write(ptr, state);
        let status =
            self.restore.unwrap().call(&mut self.store, (ptr, state.len() as i32, self.result_ptr)).unwrap();
        self.answer(status).map(drop)
    }

    /// Processes and decodes as the host does, relative to the batch's first timestamp.
    fn run(&mut self, batch: &[u8]) -> Vec<OutputRecord> {
        let out = self.process(batch).unwrap();
        decode_output(&out, Batch::new(batch).unwrap().first_timestamp_ms()).unwrap()
    }
}

fn reading(temp: f64) -> String {
    format!(r#"{{"device":"dev-0001","seq":"0000000001","temp":{temp},"humidity":40.12,"battery":3.71}}"#)
}

/// The records section of `batch` restricted to the records at `keep`, as a filter that
/// copies byte for byte must return it.
fn kept_bytes(batch: &[u8], keep: &[usize]) -> Vec<u8> {
    let view = Batch::new(batch).unwrap();
    let mut out = silt_processor::Output::new();
    out.reset(view.first_timestamp_ms());
    for (i, r) in view.records().enumerate() {
        if keep.contains(&i) {
            out.pass(&r);
        }
    }
    out.as_bytes().to_vec()
}

/// Every example builds for wasm32, validates with the ABI's proposals (and the one encoding
/// detail `rust_features` explains), imports nothing
/// and exports exactly the ABI (with snapshot/restore for the stateful four). Prints sizes.
#[test]
fn examples_are_abi_modules() {
    for example in EXAMPLES {
        let wasm = example_wasm(example);
        let stateful = check_module(example, &wasm, rust_features());
        let want_stateful =
            matches!(example, "ema-smooth" | "anomaly-zscore" | "window-aggregate" | "send-on-change");
        assert_eq!(stateful, want_stateful, "{example}");
        println!("{example}: {} bytes", wasm.len());
    }
}

/// threshold-filter through the ABI: kept records come back byte for byte, a second larger
/// batch makes the host allocate a new input buffer, and bad parameters fail init with the
/// module's message.
#[test]
fn threshold_filter_runs() {
    let wasm = example_wasm("threshold-filter");
    let mut bad = Host::instantiate(&wasm);
    let message = bad.init(&[("min", "warm")]).unwrap_err();
    assert!(message.contains("`min`"), "{message}");

    let mut host = Host::instantiate(&wasm);
    host.init(&[("min", "20"), ("max", "30")]).unwrap();
    let batch = BatchBuilder::new(100)
        .record(5_000, "dev-1", reading(19.0))
        .record_with_headers(4_000, "dev-2", reading(25.5), &[("h", "v")])
        .record(6_000, "dev-3", reading(31.0))
        .build();
    assert_eq!(host.process(&batch).unwrap(), kept_bytes(&batch, &[1]));

    let mut big = BatchBuilder::new(103);
    for i in 0..2_000 {
        big.push::<&[u8], &[u8]>(i, b"dev-4", reading(15.0 + (i % 20) as f64).as_bytes(), &[]);
    }
    let big = big.build();
    assert!(big.len() > 64 * 1024);
    let keep: Vec<usize> = (0..2_000).filter(|i| (6..15).contains(&(i % 20))).collect();
    assert_eq!(host.process(&big).unwrap(), kept_bytes(&big, &keep));
    let nothing = BatchBuilder::new(2_103).record(1, "", reading(0.0)).build();
    assert_eq!(host.process(&nothing).unwrap(), b"");
}

/// unit-convert through the ABI.
#[test]
fn unit_convert_runs() {
    let mut host = Host::instantiate(&example_wasm("unit-convert"));
    host.init(&[("from", "c"), ("to", "k")]).unwrap();
    let out = host.run(&BatchBuilder::new(0).record(9, "dev-1", reading(21.53)).build());
    assert_eq!((out[0].timestamp_ms, out[0].key_str()), (9, "dev-1"));
    assert_eq!(out[0].number("temp"), Some(294.68));
    assert_eq!(out[0].string("unit").as_deref(), Some("k"));
}

/// The stateful examples through the ABI: output is the same whether or not the state moves
/// to a fresh instance between batches via silt_snapshot/silt_restore.
#[test]
fn stateful_examples_survive_restarts() {
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("ema-smooth", &[("alpha", "0.2")]),
        ("send-on-change", &[("field", "temp"), ("delta", "0.5"), ("max_silence_ms", "2000")]),
        ("anomaly-zscore", &[("field", "temp"), ("window", "2s"), ("warmup", "1s"), ("cooldown", "200ms")]),
        ("window-aggregate", &[("window_ms", "1000"), ("lateness_ms", "200")]),
    ];
    for (example, params) in cases {
        let wasm = example_wasm(example);
        let mut straight = Host::instantiate(&wasm);
        straight.init(params).unwrap();
        let mut restarted = Host::instantiate(&wasm);
        restarted.init(params).unwrap();
        let mut outputs = 0;
        for b in 0..6i64 {
            let mut builder = BatchBuilder::new(b as u64 * 50);
            for i in 0..50i64 {
                let t = b * 1_000 + i * 37 % 1_300;
                let spike = if (b * 50 + i) % 61 == 60 { 30.0 } else { 0.0 };
                let key = format!("dev-{}", i % 3);
                builder.push::<&[u8], &[u8]>(
                    t,
                    key.as_bytes(),
                    reading(20.0 + (i % 7) as f64 / 4.0 + spike).as_bytes(),
                    &[],
                );
            }
            let batch = builder.build();
            let a = straight.run(&batch);
            let state = restarted.snapshot().unwrap();
            restarted = Host::instantiate(&wasm);
            restarted.init(params).unwrap();
            restarted.restore(&state).unwrap();
            assert_eq!(restarted.snapshot().unwrap(), state, "{example}: restored state snapshots the same");
            assert_eq!(a, restarted.run(&batch), "{example}: batch {b}");
            outputs += a.len();
        }
        assert!(outputs > 0, "{example} produced nothing");
        let message = straight.restore(b"\x09garbage").unwrap_err();
        assert!(message.contains("snapshot"), "{example}: {message}");
    }
}

/// window-aggregate through the ABI: the closed window's start lies before the batch's first
/// timestamp, so the module writes a negative delta, and the host reads the right time back.
#[test]
fn negative_delta_through_the_abi() {
    let mut host = Host::instantiate(&example_wasm("window-aggregate"));
    host.init(&[("window_ms", "60000")]).unwrap();
    assert!(host.run(&BatchBuilder::new(0).record(61_000, "k", reading(1.0)).build()).is_empty());
    let batch = BatchBuilder::new(1).record(125_000, "k", reading(2.0)).build();
    let raw = host.process(&batch).unwrap();
    let out = decode_output(&raw, 125_000).unwrap();
    assert_eq!(out[0].timestamp_ms, 60_000);
    assert_eq!(out[0].number("window_end"), Some(120_000.0));
}

/// The hand-written module validates with exactly the ABI's proposals, imports nothing and
/// exports the stateless ABI.
#[test]
fn wat_threshold_is_an_abi_module() {
    assert!(!check_module("wat-threshold", &wat_threshold(), abi_features()));
}

/// The hand-written module filters by value length and key, copying records byte for byte
/// (headers and negative deltas included), and reports bad parameters and batches.
#[test]
fn wat_threshold_runs() {
    let wasm = wat_threshold();
    let batch = BatchBuilder::new(7)
        .record(1_000, "a", "short")
        .record_with_headers(900, "b", "long enough", &[("h", "x")])
        .record(2_000, "a", "also long enough")
        .record(3_000, "", "")
        .build();

    let mut all = Host::instantiate(&wasm);
    all.init(&[]).unwrap();
    assert_eq!(all.process(&batch).unwrap(), kept_bytes(&batch, &[0, 1, 2, 3]));

    let mut long = Host::instantiate(&wasm);
    long.init(&[("min_len", "6")]).unwrap();
    assert_eq!(long.process(&batch).unwrap(), kept_bytes(&batch, &[1, 2]));

    let mut keyed = Host::instantiate(&wasm);
    keyed.init(&[("key", "a"), ("min_len", "6")]).unwrap();
    assert_eq!(keyed.process(&batch).unwrap(), kept_bytes(&batch, &[2]));
    let mut big = BatchBuilder::new(11);
    for i in 0..3_000 {
        big.push::<&[u8], &[u8]>(i, if i % 2 == 0 { b"a" } else { b"b" }, &[b'x'; 40], &[]);
    }
    let big = big.build();
    let evens: Vec<usize> = (0..3_000).step_by(2).collect();
    assert_eq!(keyed.process(&big).unwrap(), kept_bytes(&big, &evens));

    let mut no_key = Host::instantiate(&wasm);
    no_key.init(&[("key", "")]).unwrap();
    assert_eq!(no_key.process(&batch).unwrap(), kept_bytes(&batch, &[3]));

    for (params, expect) in [
        (&[("min_len", "ten")][..], "`min_len`"),
        (&[("min_len", "1234567890")][..], "`min_len`"),
        (&[("max_len", "1")][..], "unknown parameter"),
    ] {
        let mut host = Host::instantiate(&wasm);
        let message = host.init(params).unwrap_err();
        assert!(message.contains(expect), "{params:?}: {message}");
    }

    let mut truncated = batch.clone();
    truncated.truncate(batch.len() - 3);
    let len = truncated.len() as u32;
    truncated[..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(all.process(&truncated).unwrap_err(), "malformed input batch");
    let mut fresh = Host::instantiate(&wasm);
    assert!(fresh.process(&batch).unwrap_err().contains("before a successful silt_init"));
}

/// The ABI's test vectors (`docs/abi-vectors/`, written by `silt-runtime`'s `vectors` test)
/// on wasmi, the interpreter a device runs: this SDK encodes the parameters to `params.hex`
/// and reads them back, reads `batch.hex`, and `wat-threshold` returns exactly `output.hex`.
#[test]
fn abi_vectors_on_wasmi() {
    let dir = workspace_root().join("docs/abi-vectors");
    let hex = |name: &str| -> Vec<u8> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let digits: String =
            text.lines().map(|l| l.split('#').next().unwrap_or("")).flat_map(str::split_whitespace).collect();
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
    };
    let params = hex("params.hex");
    let decoded = silt_processor::Params::decode(&params).unwrap();
    let pairs: Vec<(&str, &str)> = decoded.iter().collect();
    assert_eq!(pairs, [("key", "dev-1"), ("min_len", "20")]);
    assert_eq!(silt_processor::params::encode(&pairs).unwrap(), params);
    let batch = hex("batch.hex");
    let view = Batch::new(&batch).unwrap();
    assert_eq!((view.base_offset(), view.record_count()), (1000, 5));

    let mut host = Host::instantiate(&wat_threshold());
    host.init(&pairs).unwrap();
    assert_eq!(host.process(&batch).unwrap(), hex("output.hex"));
    assert_eq!(kept_bytes(&batch, &[0, 3]), hex("output.hex"), "records 0 and 3, as they were");
}
