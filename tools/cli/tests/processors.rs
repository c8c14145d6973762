//! The README's processor walk-through with the real `silt` binary (issue 3, "done means"):
//! build an example to wasm, deploy it, see the derived topic fill, deploy a new version, roll
//! back, replay history through a new version, apply a version at consume time, sign modules,
//! and pause, resume and undeploy, in text and `--json`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Broker;

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The threshold-filter example built for wasm32.
fn threshold_filter_wasm() -> PathBuf {
    support::build_examples(&["threshold-filter"]).join("threshold_filter.wasm")
}

/// Sensor readings as JSON lines for `silt produce --format jsonl`: temperatures 20.0, 20.5,
/// ... for `n` readings of two devices.
fn readings(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            let temp = 20.0 + (i % 30) as f64 * 0.5;
            format!(
                "{{\"key\":\"dev-{}\",\"value\":{{\"device\":\"dev-{}\",\"temp\":{temp}}},\"timestamp\":{}}}\n",
                i % 2,
                i % 2,
                1_767_225_600_000 + i as i64 * 1000
            )
        })
        .collect()
}

/// How many of `readings(from, n)` have a temperature above `min`.
fn above(from: usize, n: usize, min: f64) -> usize {
    (from..from + n).filter(|i| 20.0 + (*i % 30) as f64 * 0.5 > min).count()
}

/// Polls `silt processor status NAME --json` until the processor has no lag.
fn wait_caught_up(broker: &Broker, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = json(broker.silt(&["--json", "processor", "status", name]).run().ok());
        if status["state"] == "running" && status["lag"] == 0 {
            return status;
        }
        assert!(Instant::now() < deadline, "{name} did not catch up: {status}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn consume_count(broker: &Broker, topic: &str, extra: &[&str]) -> usize {
    let mut args = vec!["consume", topic, "--from", "earliest"];
    args.extend_from_slice(extra);
    broker.silt(&args).run().lines().len()
}

/// The whole lifecycle through the CLI, as the README walks through it.
#[test]
fn readme_walkthrough_deploy_rollback_replay() {
    let wasm = threshold_filter_wasm();
    let wasm = wasm.to_str().unwrap();
    let broker = Broker::start();
    broker.silt(&["topic", "create", "sensors", "--partitions", "2"]).run().ok();
    broker.silt(&["produce", "sensors", "--format", "jsonl"]).stdin(readings(0, 600)).run().ok();

    let out = broker
        .silt(&[
            "processor",
            "deploy",
            wasm,
            "--name",
            "hot",
            "--input",
            "sensors",
            "--output",
            "sensors.hot",
        ])
        .args(&["--param", "field=temp", "--param", "min=30"])
        .run();
    assert_eq!(out.ok(), "deployed hot version 1: sensors -> sensors.hot (running)\n");
    let status = wait_caught_up(&broker, "hot");
    assert_eq!(status["events_in"], 600);
    assert_eq!(status["events_out"], above(0, 600, 30.0) as u64);
    assert_eq!(consume_count(&broker, "sensors.hot", &[]), above(0, 600, 30.0));
    let text = broker.silt(&["processor", "status", "hot"]).run();
    assert!(text.ok().starts_with("processor hot: running, version 1 (1 kept)"), "{text:?}");

    // Version 2 with a higher threshold continues where version 1 stopped.
    let out = broker
        .silt(&["--json", "processor", "deploy", wasm, "--name", "hot", "--input", "sensors"])
        .args(&["--output", "sensors.hot", "--param", "field=temp", "--param", "min=32"])
        .run();
    assert_eq!(json(out.ok())["version"], 2);
    broker.silt(&["produce", "sensors", "--format", "jsonl"]).stdin(readings(600, 300)).run().ok();
    wait_caught_up(&broker, "hot");
    let mut expected = above(0, 600, 30.0) + above(600, 300, 32.0);
    assert_eq!(consume_count(&broker, "sensors.hot", &[]), expected);

    // Roll back to version 1: the next readings pass the lower threshold again.
    assert_eq!(broker.silt(&["processor", "rollback", "hot"]).run().ok(), "hot rolled back to version 1\n");
    broker.silt(&["produce", "sensors", "--format", "jsonl"]).stdin(readings(900, 300)).run().ok();
    wait_caught_up(&broker, "hot");
    expected += above(900, 300, 30.0);
    assert_eq!(consume_count(&broker, "sensors.hot", &[]), expected);
    let versions = json(broker.silt(&["--json", "processor", "versions", "hot"]).run().ok());
    let active: Vec<(u64, bool)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["active"] == true))
        .collect();
    assert_eq!(active, vec![(1, true), (2, false)]);
    assert_eq!(versions[1]["params"]["min"], "32");

    // Replay all of history through a new processor into a new topic.
    broker
        .silt(&["processor", "deploy", wasm, "--name", "hot-replay", "--input", "sensors"])
        .args(&[
            "--output",
            "sensors.hot2",
            "--param",
            "field=temp",
            "--param",
            "min=33",
            "--from",
            "earliest",
        ])
        .run()
        .ok();
    wait_caught_up(&broker, "hot-replay");
    assert_eq!(consume_count(&broker, "sensors.hot2", &[]), above(0, 1200, 33.0));

    // Consume time: version 2 of `hot` applied to the raw topic, with a parameter override;
    // nothing is stored.
    assert_eq!(consume_count(&broker, "sensors", &["--processor", "hot@2"]), above(0, 1200, 32.0));
    assert_eq!(
        consume_count(&broker, "sensors", &["--processor", "hot", "--param", "min=34"]),
        above(0, 1200, 34.0)
    );

    let listed = json(broker.silt(&["--json", "processor", "list"]).run().ok());
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(broker.silt(&["processor", "pause", "hot"]).run().ok(), "hot paused at version 1\n");
    let status = json(broker.silt(&["--json", "processor", "status", "hot"]).run().ok());
    assert_eq!(status["state"], "paused");
    assert_eq!(broker.silt(&["processor", "resume", "hot"]).run().ok(), "hot resumed at version 1\n");
    assert_eq!(broker.silt(&["processor", "undeploy", "hot-replay"]).run().ok(), "undeployed hot-replay\n");
    let gone = broker.silt(&["processor", "status", "hot-replay"]).run();
    assert!(gone.fails(1).contains("no processor named \"hot-replay\""), "{gone:?}");
}

/// `keygen` and `sign` work offline; a signed module deploys and its versions name the key;
/// a `.wat` file deploys as text; bad input is a one-line error with exit code 1 or 2.
#[test]
fn sign_keygen_wat_and_errors() {
    let broker = Broker::start();
    let dir = broker.dir.path();
    let key = dir.join("signing.key");
    let out = support::silt_command(dir).args(["processor", "keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64);
    let again = support::silt_command(dir).args(["processor", "keygen", "--out"]).arg(&key).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "keygen never overwrites a key");

    let wat =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processors/examples/wat-threshold/threshold.wat");
    let signed = dir.join("threshold.signed.wasm");
    let out = support::silt_command(dir)
        .args(["--json", "processor", "sign"])
        .arg(&wat)
        .arg("--key")
        .arg(&key)
        .arg("--output")
        .arg(&signed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["public_key"], public.as_str());

    broker.silt(&["topic", "create", "raw"]).run().ok();
    broker.silt(&["produce", "raw"]).stdin("a\nbbbb\ncc\ndddddd\n").run().ok();
    let signed = signed.to_str().unwrap();
    broker
        .silt(&["processor", "deploy", signed, "--name", "long", "--input", "raw", "--output", "raw.long"])
        .args(&["--param", "min_len=4"])
        .run()
        .ok();
    wait_caught_up(&broker, "long");
    let got = broker.silt(&["consume", "raw.long", "--from", "earliest"]).run();
    assert_eq!(got.ok(), "bbbb\ndddddd\n");
    let versions = json(broker.silt(&["--json", "processor", "versions", "long"]).run().ok());
    assert_eq!(versions[0]["signed_by"], public.as_str());

    let wat = wat.to_str().unwrap();
    broker
        .silt(&["processor", "deploy", wat, "--name", "text", "--input", "raw", "--output", "raw.text"])
        .run()
        .ok();
    wait_caught_up(&broker, "text");

    let bad = broker.write_file("notes.wasm", "not a module");
    let out = broker
        .silt(&[
            "processor",
            "deploy",
            bad.to_str().unwrap(),
            "--name",
            "x",
            "--input",
            "raw",
            "--output",
            "o",
        ])
        .run();
    assert!(out.fails(1).contains("not WebAssembly"), "{out:?}");
    let out =
        broker.silt(&["processor", "deploy", wat, "--name", "x", "--input", "nope", "--output", "o"]).run();
    assert!(out.fails(1).contains("\"nope\" does not exist"), "{out:?}");
    let out = broker
        .silt(&[
            "processor",
            "deploy",
            wat,
            "--name",
            "x",
            "--input",
            "raw",
            "--output",
            "o",
            "--param",
            "novalue",
        ])
        .run();
    assert!(out.fails(2).contains("KEY=VALUE"), "{out:?}");
    let out = broker.silt(&["processor", "rollback", "long"]).run();
    assert!(out.fails(1).contains("nothing to roll back"), "{out:?}");
}

// The broker tests' processor ABI modules in WebAssembly text.
#[path = "../../../server/broker/tests/support/abi.rs"]
mod abi;

/// `processor status` and `processor list` show a module's counters (`silt_counters`), summed
/// and per partition, in text and `--json`.
#[test]
fn status_and_list_show_module_counters() {
    let broker = Broker::start();
    broker.silt(&["topic", "create", "raw", "--partitions", "2"]).run().ok();
    for (partition, lines) in [("0", "a\nb\nc\n"), ("1", "d\ne\n")] {
        broker
            .silt(&["produce", "raw", "--partition", partition, "--batch-size", "1"])
            .stdin(lines)
            .run()
            .ok();
    }
    let module = broker.dir.path().join("skip.wasm");
    std::fs::write(&module, abi::abi_module_with(abi::COUNTERS, abi::SKIP_ALL)).unwrap();
    broker
        .silt(&["processor", "deploy", module.to_str().unwrap(), "--name", "skip", "--input", "raw"])
        .args(&["--output", "raw.kept"])
        .run()
        .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = wait_caught_up(&broker, "skip");
        if status["counters"]["skipped"] == 5 {
            break status;
        }
        assert!(Instant::now() < deadline, "counters did not reach 5 skipped: {status}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(status["counters"], serde_json::json!({ "skipped": 5, "batches": 5 }));
    assert_eq!(status["partitions"][0]["counters"], serde_json::json!({ "skipped": 3, "batches": 3 }));
    assert_eq!(status["partitions"][1]["counters"], serde_json::json!({ "skipped": 2, "batches": 2 }));

    let text = broker.silt(&["processor", "status", "skip"]).run();
    let text = text.ok();
    assert!(text.contains("\n  counters: skipped 5, batches 5\n"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with('0') && l.ends_with("  skipped 3, batches 3")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with('1') && l.ends_with("  skipped 2, batches 2")),
        "{text}"
    );

    let listed = broker.silt(&["processor", "list"]).run();
    assert!(listed.ok().trim_end().ends_with("\tcounters: skipped 5, batches 5"), "{listed:?}");
    let listed = json(broker.silt(&["--json", "processor", "list"]).run().ok());
    assert_eq!(listed[0]["counters"]["skipped"], 5);
}

/// `--tier bridge`: the broker checks the module and keeps its versions for the bridges;
/// list and undeploy work on that tier, and what belongs to the broker's tier is refused.
#[test]
fn bridge_tier_deploy_list_and_undeploy() {
    let broker = Broker::start();
    let wat =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processors/examples/wat-threshold/threshold.wat");
    let wat = wat.to_str().unwrap();
    let deploy = |extra: &[&str]| {
        broker
            .silt(&[
                "--json",
                "processor",
                "deploy",
                wat,
                "--name",
                "edge",
                "--input",
                "sensors.raw",
                "--tier",
                "bridge",
            ])
            .args(extra)
            .run()
    };
    let first = json(deploy(&["--param", "min_len=4"]).ok());
    assert_eq!(
        (first["version"].as_u64(), first["topic"].as_str(), first["tier"].as_str()),
        (Some(1), Some("sensors.raw"), Some("bridge"))
    );
    assert_eq!(json(deploy(&["--param", "min_len=8"]).ok())["version"], 2);
    let refused = deploy(&["--param", "min_len=lots"]);
    assert!(refused.fails(1).contains("min_len"), "silt_init's refusal: {refused:?}");
    let second = broker
        .silt(&["processor", "deploy", wat, "--name", "edge2", "--input", "sensors.raw", "--tier", "bridge"])
        .args(&["--param", "min_len=1"])
        .run();
    assert!(second.fails(1).contains("runs on \"sensors.raw\" already"), "{second:?}");
    let limits = deploy(&["--memory-max", "1000000"]);
    assert!(limits.fails(1).contains("not for --tier bridge"), "{limits:?}");

    let list = json(broker.silt(&["--json", "processor", "list", "--tier", "bridge"]).run().ok());
    assert_eq!(list[0]["name"], "edge");
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["versions"], serde_json::json!([1, 2]));
    assert_eq!(list[0]["params"]["min_len"], "8");
    let broker_tier = json(broker.silt(&["--json", "processor", "list"]).run().ok());
    assert_eq!(broker_tier, serde_json::json!([]), "the broker runs none of them");

    broker.silt(&["processor", "undeploy", "edge", "--tier", "bridge"]).run().ok();
    let list = broker.silt(&["processor", "list", "--tier", "bridge"]).run();
    assert_eq!(list.ok(), "no bridge-tier processors\n");
    let again = broker.silt(&["processor", "undeploy", "edge", "--tier", "bridge"]).run();
    assert!(again.fails(1).contains("no bridge-tier processor"), "{again:?}");
}
