//! The ABI's test vectors (`docs/abi-vectors/`): an encoded parameter block, a stamped input
//! batch and the output records `wat-threshold` must return for them. Every tier's host runs
//! the same files: this test for the broker's runtime (wasmtime), `sdk/processor`'s
//! `wasm_modules` test on wasmi (the interpreter a device runs).
//!
//! `SILT_WRITE_VECTORS=1 cargo test -p silt-runtime --test vectors` rewrites the files from
//! the definitions below; without it the test checks that they still match.

mod common;

use std::path::{Path, PathBuf};

use silt_wire::batch::{self, BatchBuilder, HEADER_LEN};

/// The deployment's parameters.
const PARAMS: [(&str, &str); 2] = [("key", "dev-1"), ("min_len", "20")];
const T0: i64 = 1_700_000_000_000;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/abi-vectors")
}

/// Five records that exercise the filter's rules and the encoding's corners: a header, a
/// timestamp before the first (a negative delta), an empty key.
fn input() -> Vec<u8> {
    let mut b = BatchBuilder::default();
    let unit: &[(&[u8], &[u8])] = &[(b"unit", b"c")];
    b.push(T0, b"dev-1", br#"{"temp":21.5,"seq":1}"#, unit).unwrap(); // kept
    b.push(T0 + 1000, b"dev-2", br#"{"temp":22.0,"seq":2}"#, &[]).unwrap(); // other key
    b.push(T0 + 2000, b"dev-1", br#"{"t":9}"#, &[]).unwrap(); // shorter than min_len
    b.push(T0 + 500, b"dev-1", br#"{"temp":-3.25,"seq":4}"#, &[]).unwrap(); // kept
    b.push(T0 - 1000, b"", br#"{"temp":20.0,"seq":5,"note":"no key"}"#, &[]).unwrap(); // no key
    let mut bytes = b.finish(7, 3);
    batch::stamp(&mut bytes, 1000, T0 + 2500);
    bytes
}

/// Hex with `#` comments and any whitespace, as the vector files hold it.
fn from_hex(text: &str) -> Vec<u8> {
    let digits: String =
        text.lines().map(|l| l.split('#').next().unwrap_or("")).flat_map(|l| l.split_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex")).collect()
}

fn to_hex(comment: &str, bytes: &[u8]) -> String {
    let mut out = format!("# {comment}\n# {} bytes, 16 a line\n", bytes.len());
    for line in bytes.chunks(16) {
        let words: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn check(name: &str, comment: &str, bytes: &[u8]) {
    let path = dir().join(name);
    if std::env::var_os("SILT_WRITE_VECTORS").is_some() {
        std::fs::write(&path, to_hex(comment, bytes)).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(from_hex(&stored), bytes, "{name} differs from what the test defines");
}

/// The SDK encodes the parameters to `params.hex`; wasmtime runs `wat-threshold` on
/// `batch.hex` with them and returns exactly `output.hex`: records 0 and 3, byte for byte.
#[test]
fn abi_vectors_on_the_broker_runtime() {
    let params = silt_processor::params::encode(&PARAMS).unwrap();
    check(
        "params.hex",
        "parameter block: key=dev-1, min_len=20 (docs/processor-abi.md, Parameters)",
        &params,
    );
    let input = input();
    check("batch.hex", "input batch: 5 records, base offset 1000 (docs/record-batch.md)", &input);

    let wat =
        std::fs::read_to_string(dir().join("../../processors/examples/wat-threshold/threshold.wat")).unwrap();
    let rt = common::runtime();
    let module = common::load(&rt, &wat::parse_str(&wat).unwrap());
    let owned: Vec<(String, String)> = PARAMS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut instance = module.instantiate(&owned, &common::limits()).unwrap();
    let out =
        instance.process(&from_hex(&std::fs::read_to_string(dir().join("batch.hex")).unwrap())).unwrap();
    let out = out.expect("two records kept");
    let records = &out[HEADER_LEN..];
    check(
        "output.hex",
        "what silt_process returns for them: records 0 and 3 of the batch, as they were",
        records,
    );
    let kept: Vec<_> = common::records(&out).into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        kept,
        [(T0, br#"{"temp":21.5,"seq":1}"#.to_vec()), (T0 + 500, br#"{"temp":-3.25,"seq":4}"#.to_vec())]
    );
}
