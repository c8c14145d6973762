//! `silt demo` runs the server binary's demo (`silt-broker demo`, found next to `silt`): the
//! same scenarios as server/node/tests/demo.rs, through `silt`, prove that arguments (also the
//! global --json), output, the exit code and Ctrl-C reach it as if it had been run directly;
//! without a server binary, `silt demo` says how to build one.

mod support;

#[path = "../../../server/node/tests/demo/harness.rs"]
mod harness;
#[path = "../../../server/broker/tests/support/server_bin.rs"]
mod server_bin;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The example processors the demo deploys, built for wasm32 once per test process.
fn modules_dir() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(&["ema-smooth", "anomaly-zscore"]))
}

/// `silt demo ARGS` (with `--json` given as the global flag, before `demo`), with the server
/// binary built next to `silt`.
fn demo(args: &[&str]) -> Command {
    let mut cmd = bare_demo(args);
    cmd.arg("--modules").arg(modules_dir());
    cmd
}

/// `silt demo ARGS` without `--modules`, in a temporary directory.
fn bare_demo(args: &[&str]) -> Command {
    let server = server_bin::broker_bin();
    let silt = Path::new(env!("CARGO_BIN_EXE_silt"));
    assert_eq!(server.parent(), silt.parent(), "silt-broker is built next to silt");
    let mut cmd = support::silt_command(&std::env::temp_dir());
    let json = args.contains(&"--json");
    if json {
        cmd.arg("--json");
    }
    cmd.arg("demo").args(args.iter().filter(|a| !json || **a != "--json"));
    cmd
}

harness::scenarios!(demo, bare_demo);

/// Without a server binary (none next to this `silt`, none on PATH, or SILT_BROKER_BIN naming
/// nothing), `silt demo` fails with exit 1 and one line saying how to get one.
#[test]
fn a_missing_server_binary_is_explained() {
    // A `silt` alone in a directory: a hard link (in the target dir, so on the same file
    // system), which the process sees as its own path; a copy where linking fails.
    let silt = Path::new(env!("CARGO_BIN_EXE_silt"));
    let dir = tempfile::tempdir_in(silt.parent().expect("target dir")).expect("temp dir");
    let lone = dir.path().join("silt");
    if std::fs::hard_link(silt, &lone).is_err() {
        std::fs::copy(silt, &lone).expect("copying silt");
    }
    let run = |cmd: &mut Command| {
        let out = cmd.stdin(Stdio::null()).output().expect("running silt");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(Command::new(&lone)
        .args(["demo", "--devices", "1"])
        .env("PATH", "")
        .env_remove("SILT_BROKER_BIN"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cargo build --release -p silt-server"), "{stderr}");
    let (code, _, stderr) = run(support::silt_command(dir.path())
        .args(["demo"])
        .env("SILT_BROKER_BIN", "/nonexistent/silt-broker"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SILT_BROKER_BIN") && stderr.contains("/nonexistent/silt-broker"), "{stderr}");
}
