//! The example processors built for wasm32, as the tests of the device tier need them: with
//! Rust's default stack (as the broker runs them) and with a small one (as a device runs them).
//! Included by path by the tests that run them (`mod examples;`), so the builds land in the
//! same directories whichever test asks first.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const EXAMPLES: [&str; 6] = [
    "threshold-filter",
    "unit-convert",
    "ema-smooth",
    "anomaly-zscore",
    "window-aggregate",
    "send-on-change",
];

/// The examples with the parameters each tier's per-record cost is measured with, on device
/// temperature readings (`{"device":...,"seq":...,"value":...}`): on the device under QEMU
/// (device-bridge/bridge/tests/device_tier.rs) and on the broker's host (tests/cost.rs).
pub const COST_CASES: [(&str, &[(&str, &str)]); 6] = [
    ("threshold-filter", &[("field", "value"), ("min", "22")]),
    ("unit-convert", &[("field", "value"), ("from", "c"), ("to", "f"), ("decimals", "3")]),
    ("ema-smooth", &[("field", "value"), ("alpha", "0.25")]),
    (
        "anomaly-zscore",
        &[
            ("field", "value"),
            ("window", "30s"),
            ("warmup", "10s"),
            ("max_readings", "64"),
            ("keys_max", "4"),
        ],
    ),
    ("window-aggregate", &[("field", "value"), ("window_ms", "10000")]),
    ("send-on-change", &[("delta", "0.5")]),
];

pub fn workspace_root() -> PathBuf {
    // Every crate that includes this file sits two levels below the root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Shadow stack of the examples built for the device's default limits (the linker's
/// `-z stack-size`): Rust's 1 MiB default alone is four times the 256 KiB memory limit, and
/// the examples run within 16 KiB.
pub const SMALL_STACK_BYTES: u32 = 16 * 1024;

/// Builds the examples into `dir` beside this test's target directory, with `rustflags`, and
/// returns the directory holding their `.wasm` files.
pub fn build_examples(dir: &str, rustflags: Option<String>) -> PathBuf {
    let root = workspace_root();
    let outer =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    // A directory of its own: the outer cargo may still hold the lock on its own.
    let target_dir = outer.join(dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    for example in EXAMPLES {
        cmd.args(["-p", example]);
    }
    let status = cmd.status().expect("run cargo");
    assert!(
        status.success(),
        "building the examples for wasm32 failed (is the target installed? \
         rustup target add wasm32-unknown-unknown)"
    );
    target_dir.join("wasm32-unknown-unknown/release")
}

/// The examples as `sdk/processor`'s test builds them, once per test run.
pub fn built_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_examples("wasm-examples", None))
}

/// The examples linked with a [`SMALL_STACK_BYTES`] shadow stack, once per test run.
pub fn built_small_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_examples(
            "wasm-examples-small-stack",
            Some(format!("-C link-arg=-zstack-size={SMALL_STACK_BYTES}")),
        )
    })
}

pub fn example_wasm(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `processors/examples/c-threshold/threshold.c` built with Debian's clang and lld for wasm32
/// (the command its header gives), once per test run; `None` when clang is missing outside
/// CI (under `CI`, where `scripts/test-all.sh` installs it, a missing clang fails).
pub fn built_c_threshold() -> Option<Vec<u8>> {
    static WASM: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = workspace_root();
        let outer =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let dir = outer.join("wasm-examples-c");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("threshold-{}.wasm", std::process::id()));
        let built = Command::new("clang")
            .args(["--target=wasm32", "-O2", "-nostdlib", "-fno-builtin", "-Wl,--no-entry", "-o"])
            .arg(&out)
            .arg(root.join("processors/examples/c-threshold/threshold.c"))
            .status();
        match built {
            Ok(status) => {
                assert!(status.success(), "clang failed to build the C example");
                let wasm = std::fs::read(&out).unwrap();
                let _ = std::fs::remove_file(&out);
                Some(wasm)
            }
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "clang (Debian's clang and lld) is needed: {e}");
                eprintln!("skipped: no clang ({e})");
                None
            }
        }
    })
    .clone()
}
