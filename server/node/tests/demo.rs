//! `silt-broker demo` with the real binary (issue 6, point 5): a short bounded run raises an
//! alert and exits 0 with its data removed; Ctrl-C (SIGINT) mid-run stops it cleanly with exit
//! 0; bad flags fail with a message and never a panic. tools/cli/tests/demo.rs runs the same
//! scenarios through `silt demo`.

#[path = "../../broker/tests/support/mod.rs"]
mod support;

#[path = "demo/harness.rs"]
mod harness;

use std::process::Command;

/// `silt-broker demo ARGS`, in a temporary directory, with the example processors.
fn demo(args: &[&str]) -> Command {
    let mut cmd = bare_demo(args);
    cmd.arg("--modules").arg(support::examples_dir());
    cmd
}

/// `silt-broker demo ARGS` without `--modules`, ignoring the caller's `SILT_*` variables.
fn bare_demo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_silt-broker"));
    cmd.current_dir(std::env::temp_dir()).arg("demo").args(args);
    for var in ["SILT_DATA_DIR", "SILT_LISTEN", "SILT_ADMIN_LISTEN", "SILT_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd
}

harness::scenarios!(demo, bare_demo);

/// The server's own flags belong to the server, not to the demo: combined, they are a usage
/// error (exit 2), and the same variables in the environment do not get in the way.
#[test]
fn server_flags_do_not_mix_with_the_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_silt-broker"))
        .args(["--data-dir", "/tmp/x", "demo", "--help"])
        .output()
        .expect("running silt-broker");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = bare_demo(&["--help"]).env("SILT_DATA_DIR", "/tmp/x").output().expect("running silt-broker");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
