//! The example processors the demo deploys, as WebAssembly: from `--modules`, from the
//! workspace's build output, or built there from the source tree when missing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The two modules' bytes.
pub struct Modules {
    pub ema_smooth: Vec<u8>,
    pub anomaly_zscore: Vec<u8>,
}

const EMA_SMOOTH: &str = "ema_smooth.wasm";
const ANOMALY_ZSCORE: &str = "anomaly_zscore.wasm";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const BUILD_ARGS: [&str; 9] =
    ["build", "--release", "--locked", "--target", WASM_TARGET, "-p", "ema-smooth", "-p", "anomaly-zscore"];
/// What to tell a user whose modules are missing.
const BUILD_HINT: &str =
    "build them in a Silt checkout with `cargo build --release --target wasm32-unknown-unknown -p ema-smooth -p anomaly-zscore` and pass --modules <checkout>/target/wasm32-unknown-unknown/release";

/// Finds (or builds) the modules; see `silt-broker demo --help` for the order.
pub async fn load(dir: Option<&Path>) -> anyhow::Result<Modules> {
    if let Some(dir) = dir {
        return read(dir).with_context(|| format!("--modules {}", dir.display()));
    }
    // The source tree this binary was built from, if it is still there.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => root.join(t),
        None => root.join("target"),
    };
    // A target dir of its own for building here: `cargo run` holds the lock of the
    // workspace's target dir while the demo runs, so a build there would wait forever. It is
    // also where scripts/test-all.sh and the tests build the examples.
    let examples_target = target.join("wasm-examples");
    let built = target.join(WASM_TARGET).join("release");
    let examples = examples_target.join(WASM_TARGET).join("release");
    for dir in [&built, &examples] {
        if dir.join(EMA_SMOOTH).is_file() && dir.join(ANOMALY_ZSCORE).is_file() {
            return read(dir);
        }
    }
    if !root.join("processors/examples/ema-smooth/Cargo.toml").is_file() {
        bail!("the example processors {EMA_SMOOTH} and {ANOMALY_ZSCORE} are not built: {BUILD_HINT}");
    }
    build(&root, &examples_target).await?;
    read(&examples)
}

fn read(dir: &Path) -> anyhow::Result<Modules> {
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| format!("reading {} ({BUILD_HINT})", path.display()))
    };
    Ok(Modules { ema_smooth: file(EMA_SMOOTH)?, anomaly_zscore: file(ANOMALY_ZSCORE)? })
}

/// A spinner on stderr when it is a terminal; otherwise the message once, as a line.
fn spinner(message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("silt demo: {message}");
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"));
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Builds the modules with cargo in `root` into `target` (adding the wasm32 target first
/// when rustup manages the toolchain and lacks it). Dropped (on Ctrl-C), the build is killed.
async fn build(root: &Path, target: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| "cargo".into());
    let installed = tokio::process::Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await;
    // Without rustup the toolchain's own targets are what there is; cargo will say.
    if let Some(out) = installed.ok().filter(|o| o.status.success()) {
        if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) {
            let bar = spinner(format!("adding the {WASM_TARGET} target: rustup target add {WASM_TARGET}"));
            let added = run_quiet(tokio::process::Command::new("rustup").current_dir(root).args([
                "target",
                "add",
                WASM_TARGET,
            ]))
            .await;
            bar.finish_and_clear();
            added.with_context(|| format!("adding the {WASM_TARGET} target with rustup ({BUILD_HINT})"))?;
        }
    }
    let bar = spinner(format!(
        "building the example processors for the demo (once): cargo {} in {}",
        BUILD_ARGS.join(" "),
        root.display()
    ));
    let built = run_quiet(
        tokio::process::Command::new(cargo)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target)
            .args(BUILD_ARGS),
    )
    .await;
    bar.finish_and_clear();
    built.context("building the example processors")
}

/// Runs a command with its output captured; fails with the last line it wrote to stderr.
async fn run_quiet(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {:?}", cmd.as_std().get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output");
    bail!("{} ({}): {}", cmd.as_std().get_program().to_string_lossy(), out.status, last.trim())
}
