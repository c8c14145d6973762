//! `readings::Processor`, the part of the device tier the firmware share, on the host: what a
//! sample sends through a module, what stops a module, and which module packages are installed.
//! The QEMU tests in `device-bridge/bridge/tests/device_tier.rs` run the same code on a device.

#[path = "common/examples.rs"]
mod examples;
#[path = "../../../server/runtime/tests/common/fixtures.rs"]
mod fixtures;

use examples::{built_small_examples, example_wasm};
use fixtures::{wasm, ABI_V1, INIT_OK, MEMORY_AND_ALLOC};
use silt_device_runtime::readings::{Installed, Processed, Processor};
use silt_device_runtime::Limits;
use silt_frame::{write_manifest, ModuleManifest, Reading, ReadingKind, Readings, Time};
use silt_wire::signature;

const DEVICE: &str = "dev-1";
const T0: i64 = 1_700_000_000_000;

fn clock() -> u64 {
    0
}

fn processor() -> Processor<'static> {
    Processor::new(clock, DEVICE, Limits::default())
}

fn sample(temperature: f32, humidity: f32) -> Readings<'static> {
    let mut readings = Readings::new();
    readings.push(Reading::Temperature(temperature)).unwrap();
    readings.push(Reading::Humidity(humidity)).unwrap();
    readings
}

/// A module package as the bridge sends it: manifest, then module.
fn package(
    version: u32,
    input: ReadingKind,
    wasm: &[u8],
    params: &[(&'static str, &'static str)],
) -> Vec<u8> {
    let manifest = ModuleManifest {
        version,
        input,
        module_sha256: signature::module_hash(wasm),
        params: params.iter().copied().collect(),
    };
    let mut out = vec![0u8; 4096];
    let n = write_manifest(&manifest, &mut out).unwrap();
    out.truncate(n);
    out.extend_from_slice(wasm);
    out
}

/// The filter's parameters: temperature readings are `{"value": ...}` records.
const MIN_22: &[(&str, &str)] = &[("field", "value"), ("min", "22")];

fn threshold() -> Vec<u8> {
    example_wasm(built_small_examples(), "threshold-filter")
}

/// A kept reading goes out as itself (the bridge makes the same record of it), a dropped one
/// leaves nothing, and readings of other kinds are not the module's.
#[test]
fn a_filter_keeps_or_drops_the_reading_of_its_kind() {
    let mut p = processor();
    p.start(1, ReadingKind::Temperature, &threshold(), MIN_22).unwrap();
    match p.process(1, Time::UnixMs(T0), &sample(23.5, 40.0)) {
        Processed::Outputs { kind: ReadingKind::Temperature, outputs } => {
            assert_eq!(outputs.len(), 1);
            assert!(outputs[0].unchanged && outputs[0].marked, "passed through as the reading");
            assert_eq!(outputs[0].time_ms, T0);
        }
        _ => panic!("the module's output was not used"),
    }
    match p.process(2, Time::UnixMs(T0 + 1_000), &sample(21.0, 40.0)) {
        Processed::Outputs { outputs, .. } => assert!(outputs.is_empty(), "below min: dropped"),
        _ => panic!("the module's output was not used"),
    }
    let mut humidity_only = Readings::new();
    humidity_only.push(Reading::Humidity(40.0)).unwrap();
    assert!(matches!(p.process(3, Time::UnixMs(T0), &humidity_only), Processed::Raw));
    let s = p.stats();
    assert_eq!((s.records_in, s.records_out), (2, 1));
    assert!(s.fuel > 0);
}

/// A module that fails is stopped: the sample that failed and every later one go out raw, and
/// the reason is given once.
#[test]
fn a_failing_module_is_stopped_and_readings_go_out_raw() {
    let spin = r#"(func (export "silt_process") (param i32 i32 i32) (result i32) (loop $spin (br $spin)) (i32.const 0))"#;
    let mut p = processor();
    p.start(4, ReadingKind::Temperature, &wasm(&[MEMORY_AND_ALLOC, ABI_V1, INIT_OK, spin]), &[]).unwrap();
    assert_eq!(p.version(), 4);
    assert!(matches!(p.process(1, Time::UnixMs(T0), &sample(23.0, 40.0)), Processed::Raw));
    assert_eq!(p.version(), 0, "no module runs");
    let why = p.take_stop().expect("the stop is news").to_owned();
    assert!(why.contains("time limit"), "{why}");
    assert_eq!(p.take_stop(), None, "told once");
    assert_eq!(p.stopped(), Some(why.as_str()));
    assert!(matches!(p.process(2, Time::UnixMs(T0), &sample(23.0, 40.0)), Processed::Raw));
}

/// A whole, matching package is installed; one with another module's hash, another version's
/// manifest or (on a device that trusts keys) no trusted signature is refused, saying why, and
/// the running module stays.
#[test]
fn packages_are_checked_before_the_switch() {
    let module = threshold();
    let mut p = processor();
    let installed = p.install(&package(2, ReadingKind::Temperature, &module, MIN_22), 2, &[]);
    assert_eq!(installed, Ok(Installed { module_bytes: module.len(), input: ReadingKind::Temperature }));
    assert_eq!(p.version(), 2);

    let mut damaged = package(3, ReadingKind::Temperature, &module, MIN_22);
    *damaged.last_mut().unwrap() ^= 1;
    let why = p.install(&damaged, 3, &[]).unwrap_err();
    assert!(why.contains("SHA-256"), "{why}");
    let why = p.install(&package(4, ReadingKind::Temperature, &module, MIN_22), 3, &[]).unwrap_err();
    assert_eq!(why, "module package v3 names v4");
    let why = p.install(&[1, 2], 3, &[]).unwrap_err();
    assert!(why.contains("malformed"), "{why}");

    let secret = [7u8; 32];
    let trusted = [signature::public_key(&secret)];
    let why = p.install(&package(5, ReadingKind::Temperature, &module, MIN_22), 5, &trusted).unwrap_err();
    assert!(why.starts_with("module v5 refused"), "{why}");
    let signed = signature::sign(&module, &secret).unwrap();
    let why = p.install(&package(6, ReadingKind::Humidity, &signed, &[("min", "warm")]), 6, &trusted);
    assert!(why.unwrap_err().starts_with("module v6 did not start"), "a bad parameter");
    assert_eq!(p.version(), 2, "every refusal left the running module");

    let installed = p.install(&package(7, ReadingKind::Humidity, &signed, MIN_22), 7, &trusted).unwrap();
    assert_eq!(installed.input, ReadingKind::Humidity);
    assert_eq!((p.version(), p.kind()), (7, ReadingKind::Humidity));
}

/// A journaled state record reads back as written; a torn, damaged or oversized one reads as
/// nothing, never as another state.
#[test]
fn state_records_are_checked() {
    use silt_device_runtime::readings::{decode_state_record, encode_state_record, StateRecord};
    let record = StateRecord { version: 3, sample: 41, state: b"\x01\x02state" };
    let mut bytes = Vec::new();
    assert!(encode_state_record(&record, &mut bytes));
    assert_eq!(decode_state_record(&bytes), Some(record));
    for cut in 0..bytes.len() {
        assert_eq!(decode_state_record(&bytes[..cut]), None, "cut at {cut}");
    }
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decode_state_record(&flipped), None, "bit {bit}");
    }
    let huge = vec![0u8; 64 * 1024 + 1];
    assert!(!encode_state_record(&StateRecord { version: 1, sample: 1, state: &huge }, &mut bytes));
    assert!(bytes.is_empty());
}

/// A stateful module's state after each sample goes to the journal, and a fresh processor
/// restored with the state after sample 2 gives, for sample 3, what the first one gave.
#[test]
fn a_journaled_state_restores_the_module() {
    use std::sync::Mutex;
    static JOURNAL: Mutex<Vec<(u32, u32, Vec<u8>)>> = Mutex::new(Vec::new());
    fn journal(version: u32, sample: u32, state: &[u8]) {
        JOURNAL.lock().unwrap().push((version, sample, state.to_vec()));
    }
    let smooth = example_wasm(built_small_examples(), "ema-smooth");
    let params = &[("field", "value"), ("alpha", "0.5")];
    let mut p = processor();
    p.set_journal(journal);
    p.start(9, ReadingKind::Temperature, &smooth, params).unwrap();
    let outputs: Vec<Processed> = (1..=3)
        .map(|seq| p.process(seq, Time::UnixMs(T0 + i64::from(seq)), &sample(20.0 + seq as f32, 40.0)))
        .collect();
    let journaled = JOURNAL.lock().unwrap().clone();
    assert_eq!(journaled.iter().map(|(v, s, _)| (*v, *s)).collect::<Vec<_>>(), [(9, 1), (9, 2), (9, 3)]);

    let mut rebooted = processor();
    rebooted.start(9, ReadingKind::Temperature, &smooth, params).unwrap();
    rebooted.restore(&journaled[1].2).unwrap();
    let again = rebooted.process(3, Time::UnixMs(T0 + 3), &sample(23.0, 40.0));
    let value = |p: &Processed| match p {
        Processed::Outputs { outputs, .. } => outputs[0].value.clone(),
        Processed::Raw => panic!("raw"),
    };
    assert_eq!(value(&again), value(&outputs[2]), "the third sample after a restore");
    assert!(rebooted.restore(b"not a snapshot").is_err());
    assert_eq!(rebooted.version(), 0, "a failed restore stops the module");
}
