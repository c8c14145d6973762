//! The harness against real servers it starts itself: a debug `silt-broker`, Debian's
//! nats-server and mosquitto (scripts/test-all.sh installs both), on loopback ports with temp
//! data dirs. Small counts: these check that every driver and scenario works and reports what
//! it measured, not how fast anything is.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// The harness starts `silt-broker` from next to its own binary, and the end-to-end step
/// needs the threshold filter: build both once (cargo skips what is up to date).
fn built() -> &'static PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // scripts/test-all.sh names the binary `cargo test --workspace` built (see
        // server/broker/tests/support/server_bin.rs): building again would link another.
        if std::env::var_os("SILT_BROKER_BIN").is_none() {
            let status = Command::new(&cargo)
                .current_dir(workspace())
                .args(["build", "--quiet", "--locked", "-p", "silt-server"])
                .status()
                .expect("cargo");
            assert!(status.success(), "building silt-broker (package silt-server) failed");
        }
        let status = Command::new(&cargo)
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "--locked",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "threshold-filter",
            ])
            .status()
            .expect("cargo");
        assert!(
            status.success(),
            "building threshold-filter for wasm32 failed (rustup target add wasm32-unknown-unknown)"
        );
        for server in ["nats-server", "mosquitto"] {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(server).is_file());
            assert!(
                found,
                "{server} is not installed (apt-get install nats-server mosquitto; scripts/test-all.sh does)"
            );
        }
        target_dir().join("wasm32-unknown-unknown/release/threshold_filter.wasm")
    })
}

fn loadtest(args: &[&str]) -> Output {
    built();
    let out =
        Command::new(env!("CARGO_BIN_EXE_silt-loadtest")).args(args).output().expect("silt-loadtest runs");
    assert!(
        out.status.success(),
        "silt-loadtest {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// One produce run against all three systems: every record acked, a latency sample per record,
/// in the order given, and one plot with a line per system.
#[test]
fn produce_against_silt_nats_and_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("produce.svg");
    let out = loadtest(&[
        "produce",
        "--target",
        "silt,nats,mqtt",
        "--start",
        "--count",
        "3000",
        "--batch-size",
        "100",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let reports = json_lines(&out);
    let targets: Vec<&str> = reports.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["silt", "nats", "mqtt"]);
    for r in &reports {
        assert_eq!(r["events"], 3000, "{r}");
        assert_eq!(r["latency_samples"], 3000, "{r}");
        assert_eq!(r["mode"], "closed-loop");
        assert!(r["p50_us"].as_u64().unwrap() > 0 && r["p99_us"].as_u64() >= r["p50_us"].as_u64());
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    // The first three colours of the plot's palette, one per system; axes are drawn in black.
    for colour in ["#1F77B4", "#D62728", "#2CA02C"] {
        let lines = svg.lines().filter(|l| l.starts_with("<polyline") && l.contains(colour)).count();
        assert_eq!(lines, 2, "a spectrum and a timeline per system ({colour})");
    }
}

/// Open loop end to end: Silt through the threshold filter, the peers produce to subscribe;
/// every stamped reading reaches the subscriber and is timed, at the asked rate.
#[test]
fn end_to_end_open_loop() {
    let module = built();
    let out = loadtest(&[
        "end-to-end",
        "--target",
        "silt,nats,mqtt",
        "--start",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--count",
        "100000",
        "--linger",
        "1ms",
        "--module",
        module.to_str().unwrap(),
        "--param",
        "min=0",
        "--json",
    ]);
    for r in json_lines(&out) {
        let events = r["events"].as_u64().unwrap();
        assert!((780..=801).contains(&events), "2 s at 400/s: {r}");
        assert_eq!(r["latency_samples"].as_u64(), Some(events), "every delivery timed: {r}");
        assert_eq!(r["mode"], "open-loop");
        assert_eq!(r["rate"], 400.0);
    }
}

/// Replay restarts the started server and reads everything back; mixed reports its three
/// parts; MQTT is refused for replay with a clear message.
#[test]
fn replay_and_mixed() {
    let out = loadtest(&["replay", "--target", "silt,nats", "--start", "--count", "5000", "--json"]);
    for r in json_lines(&out) {
        assert_eq!(r["scenario"], "replay");
        assert_eq!(r["events"], 5000, "{r}");
    }
    let out = loadtest(&[
        "mixed",
        "--target",
        "silt,nats",
        "--start",
        "--count",
        "2000",
        "--rate",
        "1000",
        "--json",
    ]);
    let parts: Vec<String> = json_lines(&out)
        .iter()
        .map(|r| format!("{} {}", r["target"].as_str().unwrap(), r["scenario"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parts,
        [
            "silt mixed produce",
            "silt mixed deliver",
            "silt mixed replay",
            "nats mixed produce",
            "nats mixed deliver",
            "nats mixed replay"
        ]
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_silt-loadtest"))
        .args(["replay", "--target", "mqtt", "--start", "--count", "10"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("keeps no log"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The one command behind BENCHMARKS.md, in its quick form: the section between the markers
/// holds every table with Silt, NATS and MQTT rows and ratios, the rest of the file stays.
#[test]
fn suite_writes_the_comparison() {
    let module = built();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("BENCHMARKS.md");
    std::fs::write(&output, "# Benchmarks\n\nKept.\n").unwrap();
    loadtest(&[
        "suite",
        "--quick",
        "--module",
        module.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nKept.\n"));
    for needle in [
        "### Durable ingest, closed loop",
        "### Replay after a restart",
        "### Durable ingest, open loop",
        "### End to end",
        "### Device fleet",
        "| 100-byte events | nats |",
        "| 1024-byte events | mqtt |",
        "| frames | silt bridge tcp |",
        "| frames | mqtt |",
        "nats-server: v",
        "<!-- suite:end -->",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    assert!(text.matches('x').count() > 10, "ratios");
    for plot in
        ["ingest-100.svg", "replay-1024.svg", "open-loop.svg", "end-to-end.svg", "devices.svg", "suite.json"]
    {
        assert!(dir.path().join("docs/benchmarks").join(plot).is_file(), "{plot}");
    }
}
