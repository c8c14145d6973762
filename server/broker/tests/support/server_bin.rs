//! The `silt-broker` binary for tests that run it. It belongs to the package `silt-server`
//! (server/node, the composition root), whose own tests get it from cargo; other packages'
//! tests build it here, once per test process, into the target dir they were built in, next
//! to their own binaries. `SILT_BROKER_BIN` names a binary to use instead: the one `cargo test
//! --workspace` builds for silt-server's tests is up to date, but a `cargo build -p
//! silt-server` resolves features without the workspace's dev-dependencies and so links
//! another (about a minute of a cold CI run); scripts/test-all.sh sets it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the `silt-broker` binary, built if need be.
pub fn broker_bin() -> PathBuf {
    if let Some(bin) = option_env!("CARGO_BIN_EXE_silt-broker") {
        return PathBuf::from(bin);
    }
    if let Some(bin) = std::env::var_os("SILT_BROKER_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // This test binary is TARGET/<profile>/deps/<name>; binaries land in TARGET/<profile>.
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile =
                exe.parent().and_then(Path::parent).expect("a test binary in TARGET/<profile>/deps");
            let target = profile.parent().expect("TARGET");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env("CARGO_TARGET_DIR", target).args([
                "build",
                "--quiet",
                "-p",
                "silt-server",
                "--bin",
                "silt-broker",
            ]);
            if profile.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo to build silt-broker");
            assert!(status.success(), "building silt-broker (cargo build -p silt-server) failed");
            profile.join("silt-broker")
        })
        .clone()
}
