//! A workload for counting what a record costs on the broker's host (`silt-runtime`, wasmtime:
//! the broker tier, and the bridge tier, which runs the same host), in the same units as the
//! device tier's figures: instructions. `scripts/cost-per-record.sh` runs this test under
//! valgrind's callgrind, counting only inside [`cost_measured_calls`] (building each batch and
//! the calls), so compiling and instantiating, whose count varies with thread scheduling, stay
//! out.
//!
//! The records are the device tier's: one temperature reading as the bridge stores it
//! (`{"device":...,"seq":...,"value":...}` with the `silt-device` header), one record per call
//! as a device makes them, or in calls of 60 as the bridge's rounds and the broker's batches
//! carry them. Ignored: a measurement, not a check, and it reads its settings from the
//! environment.

#[path = "common/examples.rs"]
mod examples;

use examples::{built_examples, example_wasm, COST_CASES};
use silt_runtime::{Runtime, RuntimeConfig};
use silt_wire::batch::{self, BatchBuilder};

const DEVICE: &str = "tier-1";
const T0: i64 = 1_700_000_000_000;

/// Readings `first..first + count` in one stamped batch: a second apart, 21 °C ± 3.
fn readings(first: u64, count: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::with_capacity(count as usize * 96);
    for seq in first..first + count {
        let value = 21.0 + 3.0 * ((seq % 360) as f64 * std::f64::consts::TAU / 360.0).sin();
        let json = format!(r#"{{"device":"{DEVICE}","seq":{seq},"value":{value:.2}}}"#);
        let time = T0 + seq as i64 * 1_000;
        builder
            .push(time, DEVICE.as_bytes(), json.as_bytes(), &[(b"silt-device", DEVICE.as_bytes())])
            .unwrap();
    }
    let mut batch = builder.finish(0, first);
    batch::stamp(&mut batch, first, T0 + first as i64 * 1_000);
    batch
}

/// `SILT_COST=MODULE:RECORDS:PER_CALL` runs case MODULE over RECORDS readings, PER_CALL a
/// call, on the broker's host (MODULE `batches-only` makes the batches and calls nothing;
/// `c-threshold` is the threshold filter in C);
/// without it, nothing (so that `--ignored` runs stay quick).
#[test]
#[ignore]
fn workload() {
    let Ok(spec) = std::env::var("SILT_COST") else { return };
    let mut parts = spec.split(':');
    let (name, records, per_call) = (
        parts.next().unwrap(),
        parts.next().and_then(|n| n.parse::<u64>().ok()).expect("RECORDS"),
        parts.next().and_then(|n| n.parse::<u64>().ok()).expect("PER_CALL"),
    );
    if name == "batches-only" {
        // What making the batches costs alone, for reading the others.
        let out = cost_measured_calls(None, records, per_call);
        eprintln!("{records} records in batches of {per_call}: {out} bytes");
        return;
    }
    // `c-threshold`: the threshold filter written in C, with threshold-filter's parameters.
    let case = if name == "c-threshold" { "threshold-filter" } else { name };
    let (_, params) = COST_CASES.iter().find(|(n, _)| *n == case).unwrap_or_else(|| panic!("no case {name}"));
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    // Built before the count starts: the script builds them first, so this only reads files.
    let wasm = match name {
        "c-threshold" => examples::built_c_threshold().expect("clang, to build the C module"),
        _ => example_wasm(built_examples(), name),
    };
    let runtime = Runtime::new(RuntimeConfig { pooling: false, ..RuntimeConfig::default() }).unwrap();
    let module = runtime.compile_module(&wasm).unwrap();
    let mut instance = module.instantiate(&params, &silt_runtime::Limits::default()).unwrap();
    let out = cost_measured_calls(Some(&mut instance), records, per_call);
    eprintln!("{name}: {records} records in calls of {per_call}, {out} output bytes");
}

/// Makes each call's batch and runs it: what the count covers, as the device's covers making
/// the record and the batch, the call, and the output. Returns the output bytes (without an
/// instance, the batches' bytes).
#[inline(never)]
fn cost_measured_calls(
    mut instance: Option<&mut silt_runtime::Instance>,
    records: u64,
    per_call: u64,
) -> usize {
    let mut out = 0usize;
    for i in 0..records.div_ceil(per_call) {
        let batch = readings(1 + i * per_call, per_call);
        out += match instance.as_deref_mut() {
            Some(instance) => instance.process(&batch).unwrap().map_or(0, |b| b.len()),
            None => batch.len(),
        };
    }
    out
}
