//! The ABI's test vectors (`docs/abi-vectors/`) on the device tier: the parameter block, a
//! stamped input batch and the records `wat-threshold` must return for them, as the broker's
//! runtime (`server/runtime/tests/vectors.rs`) and the SDK's wasmi host check them.

use std::path::{Path, PathBuf};

use silt_device_runtime::{Limits, Module};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A vector file's bytes: hex with `#` comments and any whitespace.
fn vector(name: &str) -> Vec<u8> {
    let path = root().join("docs/abi-vectors").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digits: String =
        text.lines().map(|l| l.split('#').next().unwrap_or("")).flat_map(str::split_whitespace).collect();
    assert!(digits.len().is_multiple_of(2), "{name}: odd number of hex digits");
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex")).collect()
}

/// `wat-threshold` under the device's default limits, given the pairs `params.hex` encodes,
/// returns exactly `output.hex` for `batch.hex`: records 0 and 3, as they were.
#[test]
fn abi_vectors_on_the_device_runtime() {
    let path = root().join("processors/examples/wat-threshold/threshold.wat");
    let wasm = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let module = Module::new(&wasm).unwrap();
    assert!(!module.is_stateful());
    // The pairs out of order: the host sorts them into params.hex's order (its unit test
    // checks the bytes).
    let mut instance =
        module.instantiate(&[("min_len", "20"), ("key", "dev-1")], &Limits::default()).unwrap();
    let batch = vector("batch.hex");
    let output = instance.process(&batch).unwrap();
    assert_eq!(output.records, vector("output.hex"));
    assert_eq!(output.record_count, 2);
    // Record 3's time, T0 + 500, is the larger of the two kept.
    assert_eq!(output.max_timestamp_ms, Some(1_700_000_000_500));
    assert_eq!(instance.counters().unwrap(), []);
    assert_eq!(instance.snapshot().unwrap(), None);
}
