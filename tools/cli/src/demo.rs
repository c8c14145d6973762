//! `silt demo`: the whole system in one command, run by the server binary. The client links
//! no server code, so it replaces itself (exec) with `silt-broker demo` and the same
//! arguments: the demo then has this process's id, terminal, signals (Ctrl-C stops it cleanly)
//! and exit code, exactly as if it had been started by hand.
//!
//! Deliberately absent: any part of the demo itself (`silt-broker demo --help` describes it),
//! and building the server binary: a missing one is reported with the command that builds it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

/// The server binary's name.
const SERVER: &str = "silt-broker";
/// Names the server binary to run instead of looking for it.
pub const SERVER_ENV: &str = "SILT_BROKER_BIN";
/// How to get the server binary.
const BUILD_HINT: &str = "build it with `cargo build --release -p silt-server` (it lands next to `silt`), or point SILT_BROKER_BIN at it";

/// Run the whole system on this machine with simulated sensors, and watch it work.
///
/// Runs `silt-broker demo` with the same arguments: the server binary from SILT_BROKER_BIN,
/// else the one next to this `silt`, else the first on PATH. `silt demo --help` shows its
/// flags; --json (before or after `demo`) selects JSON lines. --broker and --ca-cert do not
/// apply. Exit codes are the demo's: 0 stopped as asked; 1 it could not start or failed (also
/// when no server binary is found); 2 bad arguments.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct DemoArgs {
    /// Arguments of `silt-broker demo` (see `silt demo --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Replaces this process with the server's demo; returns only when that could not start, with
/// the reason.
pub fn exec(args: DemoArgs, json: bool) -> anyhow::Error {
    let server = match server_binary() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut cmd = std::process::Command::new(&server);
    cmd.arg("demo");
    if json && !args.args.iter().any(|a| a == "--json") {
        cmd.arg("--json");
    }
    cmd.args(&args.args);
    let e = cmd.exec();
    anyhow::anyhow!("running {}: {e} ({BUILD_HINT})", server.display())
}

/// The server binary: SILT_BROKER_BIN, else next to this executable, else on PATH.
fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{SERVER_ENV} names {}, which is not a file", path.display());
        }
        return Ok(path);
    }
    let beside = std::env::current_exe().ok().and_then(|me| me.parent().map(|d| d.join(SERVER)));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(SERVER)).collect::<Vec<_>>())
        .unwrap_or_default();
    match beside.into_iter().chain(on_path).find(|p| p.is_file()) {
        Some(path) => Ok(path),
        None => bail!("`silt demo` runs the server binary `{SERVER}`, which is neither next to this `silt` nor on PATH: {BUILD_HINT}"),
    }
}
