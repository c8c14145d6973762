//! The demo's scenarios against a real binary: `silt-broker demo` (server/node/tests/demo.rs)
//! and `silt demo`, which runs it (tools/cli/tests/demo.rs includes this file). Each scenario
//! takes a function that builds the command for the demo's arguments.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on one demo run: a 12 s run plus start-up and shutdown takes about 15 s.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running demo, its stdout lines arriving on a channel; killed if dropped early.
pub struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Demo {
    /// Spawns `cmd` with its output piped.
    pub fn start(mut cmd: Command) -> Demo {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Demo { child, lines, seen: Vec::new(), stderr: Some(stderr) }
    }

    /// Reads lines until one satisfies `f`, within `within`; returns it.
    pub fn wait_line(&mut self, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    panic!("no such line within {within:?} ({e}); output so far:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Waits for the exit within [`RUN_TIMEOUT`]; returns the status, every stdout line and
    /// stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the demo did not exit; output:\n{}", self.seen.join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which the exit brings.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self.stderr.take().expect("finished once").join().expect("stderr reader");
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scenarios below as `#[test]`s of the including crate: `$demo` builds the demo's
/// command for its arguments with `--modules`, `$bare` without.
macro_rules! scenarios {
    ($demo:expr, $bare:expr) => {
        #[test]
        fn a_short_run_flows_smooths_and_alerts() {
            harness::a_short_run_flows_smooths_and_alerts($demo);
        }

        #[test]
        fn ctrl_c_stops_the_demo_cleanly() {
            harness::ctrl_c_stops_the_demo_cleanly($demo);
        }

        #[test]
        fn bad_flags_fail_with_a_message() {
            harness::bad_flags_fail_with_a_message($bare);
        }
    };
}
pub(crate) use scenarios;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// A bounded run: readings flow from the devices through the bridge into both topics, the
/// smoothing processors emit a record per reading, the early spike raises an alert, the
/// summary adds up, exit code 0, and the temporary data is gone. `demo` builds the command
/// for the demo's arguments (`--json` among them, and `--modules`).
pub fn a_short_run_flows_smooths_and_alerts(demo: impl Fn(&[&str]) -> Command) {
    // Making the command may build the server binary and the modules first: not the run.
    let command = demo(&["--json", "--devices", "20", "--rate", "4", "--duration", "12s"]);
    let started = Instant::now();
    let run = Demo::start(command);
    let (status, lines, stderr) = run.finish();
    let out = lines.join("\n");
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let values: Vec<Value> = lines.iter().map(|l| json(l)).collect();
    let first = &values[0];
    assert_eq!(first["type"], "started", "{out}");
    assert_eq!(first["devices"], 20);
    let data_dir = PathBuf::from(first["data_dir"].as_str().expect("data_dir"));
    assert!(values.iter().any(|v| v["type"] == "status"), "{out}");

    // The seed (1) picks device 1 of 20 for the spike at its 20th reading (5 s at 4/s).
    let alert = values
        .iter()
        .find(|v| v["type"] == "alert" && v["device"] == "sim-00001" && v["kind"] == "temperature")
        .unwrap_or_else(|| panic!("no alert on the early spike:\n{out}"));
    assert_eq!(alert["cause"], "spike", "{alert}");
    assert!(alert["z"].as_f64().expect("z").abs() >= 6.0, "{alert}");

    let summary = values.last().expect("output");
    assert_eq!(summary["type"], "summary", "{out}");
    assert_eq!(summary["ending"], "duration");
    assert_eq!(summary["every_reading_acked"], true, "{summary}");
    let acked = summary["frames_acked"].as_u64().expect("frames_acked");
    // 20 devices at 4 readings/s for 12 s: about 960 frames.
    assert!((700..=1100).contains(&acked), "{summary}");
    for topic in ["sensors.temperature", "sensors.humidity"] {
        assert_eq!(
            summary["topics"][topic]["total"].as_u64(),
            Some(acked),
            "one record per frame: {summary}"
        );
    }
    let processors = summary["processors"].as_array().expect("processors");
    assert_eq!(processors.len(), 4, "{summary}");
    for p in processors {
        assert_eq!(p["state"], "running", "{p}");
        assert_eq!(p["lag"], 0, "{p}");
        assert_eq!(p["events_in"].as_u64(), Some(acked), "{p}");
        assert_eq!(p["records_read"], p["events_out"], "the view read every output record: {p}");
        if p["name"].as_str().unwrap().ends_with("-smooth") {
            // One output per reading, except readings lost to a dropout (null).
            let out = p["events_out"].as_u64().unwrap();
            assert!(out > acked * 9 / 10 && out <= acked, "{p}");
        }
    }
    assert!(summary["alerts"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["alerts_by_cause"]["spike"].as_u64().unwrap() >= 1, "{summary}");
    assert!(!data_dir.exists(), "{} was not removed", data_dir.display());
    assert!(started.elapsed() < RUN_TIMEOUT);
}

/// Ctrl-C mid-run: SIGINT (to the process `demo` started) stops the devices, the broker shuts
/// down cleanly, the data is removed and the exit code is 0; the text output has a status line
/// per interval.
pub fn ctrl_c_stops_the_demo_cleanly(demo: impl Fn(&[&str]) -> Command) {
    let mut run = Demo::start(demo(&["--devices", "20", "--rate", "4"]));
    let header = run.wait_line(RUN_TIMEOUT, |l| l.starts_with("silt demo: broker "));
    let data_dir = PathBuf::from(header.rsplit("data in ").next().expect("data dir in the header"));
    assert!(data_dir.is_dir(), "{header}");
    // Readings flowing: a status line with frames acked.
    run.wait_line(RUN_TIMEOUT, |l| {
        l.split(", ")
            .nth(1)
            .and_then(|s| s.strip_suffix(" acked"))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    let pid = run.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().expect("running kill");
    assert!(sent.success());
    let (status, lines, stderr) = run.finish();
    let out = lines.join("\n");
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{stderr}");
    assert!(out.contains("silt demo interrupted after"), "{out}");
    assert!(out.contains("the broker stopped cleanly and its data was removed"), "{out}");
    assert!(!data_dir.exists(), "{} was not removed", data_dir.display());
}

/// Bad flags: clap's errors (exit 2) and the demo's own checks (exit 1, one line), before
/// anything starts; `--help` explains what runs. `demo` builds the command without
/// `--modules`.
pub fn bad_flags_fail_with_a_message(demo: impl Fn(&[&str]) -> Command) {
    let run = |args: &[&str]| {
        let out = demo(args).stdin(Stdio::null()).output().expect("running the demo");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (flag, value) in [
        ("--rate", "0"),
        ("--rate", "x"),
        ("--devices", "0"),
        ("--day", "0s"),
        ("--interval", "1ms"),
        ("--faults", "25"),
        ("--drift", "2"),
    ] {
        let (code, _, stderr) = run(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let (code, stdout, stderr) = run(&["--day", "30s"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("a day needs at least 60"), "{stderr}");
    let (code, _, stderr) = run(&["--modules", "/nonexistent"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ema_smooth.wasm"), "{stderr}");
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for word in ["--devices", "--duration", "--seed", "--modules", "Ctrl-C", "anomaly-zscore", "Exit codes"] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}
