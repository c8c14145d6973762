//! The device tier (docs/processor-abi.md, "Tiers"): a processor module run by the QEMU
//! firmware on its readings before they are sent gives, record for record and byte for byte,
//! what the same module deployed in the broker makes of the raw readings.
//!
//! Three runs of the firmware with the same fixed clock, each against a fresh broker and
//! bridge: with `threshold-filter` on the device, with `ema-smooth` (stateful) on the device,
//! and raw, with both deployed in the broker on `sensors.temperature`. The examples are built
//! for wasm32 with a small stack (`examples.rs`); QEMU and the firmware as in tests/qemu.rs.
//!
//! And a module that traps midway is stopped on the device, which says so and sends raw
//! readings from that sample on: every reading is stored once, none lost.

#[path = "../../device-runtime/tests/common/examples.rs"]
mod examples;
#[path = "../../../server/runtime/tests/common/fixtures.rs"]
mod fixtures;
mod support;

use silt_client::ConsumedRecord;
use silt_wire::{Deployment, ProcessorLimits};
use support::*;

const SAMPLES: u32 = 60;
/// Samples one second apart from 2023-11-14: the same event times on every run.
const CLOCK: &str = "clock=1700000000000:1000";

/// The modules and their parameters, on the temperature readings (21 °C ± 3).
const FILTER: (&str, &[(&str, &str)]) = ("threshold-filter", &[("field", "value"), ("min", "22")]);
/// An edge filter that sends on change: a reading that moved by more than half a degree.
const ON_CHANGE: (&str, &[(&str, &str)]) = ("send-on-change", &[("delta", "0.5")]);
const SMOOTH: (&str, &[(&str, &str)]) = ("ema-smooth", &[("field", "value"), ("alpha", "0.25")]);

/// A processor deployed in the broker: example name, parameters, output topic.
type Deploy<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// What a record is, for comparing tiers: time, key, headers, value.
type Stored = (i64, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

fn stored(records: &[ConsumedRecord]) -> Vec<Stored> {
    records
        .iter()
        .map(|r| {
            let headers = r.headers.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            (r.timestamp_ms, r.key.to_vec(), headers, r.value.to_vec())
        })
        .collect()
}

/// One firmware run against a fresh broker; `words` add the module, if any. Returns the
/// broker (to read from) and the firmware's output.
async fn run(elf: &std::path::Path, words: &str, deploy: &[Deploy<'_>]) -> (Broker, String) {
    run_with(elf, words, deploy, &[]).await
}

/// [`run`] with more QEMU arguments.
async fn run_with(
    elf: &std::path::Path,
    words: &str,
    deploy: &[Deploy<'_>],
    qemu_args: &[&str],
) -> (Broker, String) {
    run_samples(elf, words, deploy, qemu_args, SAMPLES).await
}

/// [`run_with`] for `samples` samples.
async fn run_samples(
    elf: &std::path::Path,
    words: &str,
    deploy: &[Deploy<'_>],
    qemu_args: &[&str],
    samples: u32,
) -> (Broker, String) {
    let broker = Broker::start().await;
    for (name, params, output) in deploy {
        let wasm = examples::example_wasm(examples::built_examples(), name);
        let d = Deployment {
            name: name.to_string(),
            input: "sensors.temperature".into(),
            output: output.to_string(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            from: None,
            limits: ProcessorLimits::default(),
        };
        broker.client.create_topic("sensors.temperature", 1, None, None).await.ok();
        broker.client.deploy_processor(d, wasm).await.unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    let key = broker.add_device("tier-1").await;
    let words = format!("{CLOCK} {words}");
    let device = QemuDevice::start(&broker, elf, "tier-1", &key, &words, samples, qemu_args).await;
    let (status, out) = device.wait(std::time::Duration::from_secs(120)).await;
    assert!(status.success(), "firmware exited with {status}; its output:\n{out}");
    // Every sample delivered: in a frame each, or (numbered apart from frames) taken and sent
    // or left out by the module.
    let numbered = out.contains(&format!("silt-fw: {samples} samples: "));
    assert!(numbered || out.contains(&format!("done {samples} frames")), "{out}");
    (broker, out)
}

/// The firmware's account of what it sent: frames, retransmissions and bytes on the line.
fn traffic(out: &str) -> &str {
    out.lines().find_map(|l| l.strip_prefix("silt-fw: done ")).unwrap_or("no summary line")
}

/// Fails on the first record that differs, printing it readably, or on a different count.
fn assert_same(name: &str, device: &[Stored], broker: &[Stored], out: &str) {
    let show = |r: &Stored| {
        let headers: Vec<String> =
            r.2.iter()
                .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
                .collect();
        format!(
            "t={} key={} headers={headers:?} value={}",
            r.0,
            String::from_utf8_lossy(&r.1),
            String::from_utf8_lossy(&r.3)
        )
    };
    if let Some(i) = (0..device.len().min(broker.len())).find(|&i| device[i] != broker[i]) {
        panic!(
            "{name}: record {i} differs\n device: {}\n broker: {}\n{out}",
            show(&device[i]),
            show(&broker[i])
        );
    }
    assert_eq!(device.len(), broker.len(), "{name}: records on the device tier vs in the broker\n{out}");
}

fn module_words(name: &str, params: &[(&str, &str)]) -> String {
    let wasm = examples::built_small_examples().join(format!("{}.wasm", name.replace('-', "_")));
    let mut words = format!("module={} input=temperature version=7", wasm.display());
    for (k, v) in params {
        words.push_str(&format!(" param={k}={v}"));
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_on_the_device_gives_what_it_gives_in_the_broker() {
    let Some(elf) = qemu_firmware() else { return };

    let (broker, raw_out) =
        run(&elf, "", &[(FILTER.0, FILTER.1, "tier.filtered"), (SMOOTH.0, SMOOTH.1, "tier.smoothed")]).await;
    let raw = read_to_end(&broker.client, "sensors.temperature").await;
    assert_eq!(raw.len(), SAMPLES as usize, "{raw_out}");
    let smoothed = stored(&read_records(&broker.client, "tier.smoothed", SAMPLES as usize).await);
    let filtered_count = raw
        .iter()
        .filter(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.value).unwrap()["value"].as_f64().unwrap() > 22.0
        })
        .count();
    let filtered = stored(&read_records(&broker.client, "tier.filtered", filtered_count).await);
    assert!(
        !filtered.is_empty() && filtered.len() < SAMPLES as usize,
        "the filter keeps some: {}",
        filtered.len()
    );
    assert_eq!(smoothed.len(), SAMPLES as usize);
    broker.stop().await;

    eprintln!("raw readings: {}", traffic(&raw_out));
    for ((name, params), expected) in [(FILTER, filtered), (SMOOTH, smoothed)] {
        let (broker, out) = run(&elf, &module_words(name, params), &[]).await;
        eprintln!("{name} on the device: {}", traffic(&out));
        assert!(out.contains("processor on temperature"), "{out}");
        assert!(!out.contains("processor stopped"), "{out}");
        let device = stored(&read_to_end(&broker.client, "sensors.temperature").await);
        assert_same(name, &device, &expected, &out);
        // The other readings went as they were.
        assert_eq!(read_to_end(&broker.client, "sensors.humidity").await.len(), SAMPLES as usize);
        // The device's hello reported the version it runs, and the bridge passed it on.
        assert_eq!(broker.client.device_module("tier-1").await.unwrap().running_version, Some(7));
        broker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_traps_on_the_device_is_stopped_and_readings_go_raw() {
    let Some(elf) = qemu_firmware() else { return };
    // Passes records through, and traps on its tenth call.
    let wasm = fixtures::wasm(&[
        fixtures::MEMORY_AND_ALLOC,
        fixtures::ABI_V1,
        fixtures::INIT_OK,
        r#"(global $calls (mut i32) (i32.const 0))
        (func (export "silt_process") (param $batch i32) (param $len i32) (param $result i32) (result i32)
          (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
          (if (i32.eq (global.get $calls) (i32.const 10)) (then unreachable))
          (i32.store (local.get $result) (i32.add (local.get $batch) (i32.const 68)))
          (i32.store offset=4 (local.get $result) (i32.sub (local.get $len) (i32.const 68)))
          (i32.const 0))"#,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trap-at-10.wasm");
    std::fs::write(&path, wasm).unwrap();

    let (broker, out) = run(&elf, &format!("module={} input=temperature", path.display()), &[]).await;
    assert!(out.contains("processor stopped: processor trapped in silt_process"), "{out}");
    assert!(out.contains("9 records in, 9 out"), "the nine calls before the trap counted: {out}");
    // The device's module state carried the error to the broker, through the bridge.
    let status = broker.client.device_module("tier-1").await.unwrap();
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.contains("processor trapped in silt_process")),
        "{status:?}"
    );
    assert_eq!(status.running_version, None, "{status:?}");
    let stored = read_to_end(&broker.client, "sensors.temperature").await;
    let seqs: Vec<u32> = stored.iter().map(seq_of).collect();
    assert_eq!(seqs, (1..=SAMPLES).collect::<Vec<_>>(), "every reading once, in order\n{out}");
    broker.stop().await;
}

/// What each example costs per record on the device, counted rather than timed: QEMU runs the
/// firmware with `-icount shift=0` (one instruction per nanosecond of virtual time), so the
/// firmware's SysTick cycles are instructions / 40. Ignored in CI (a measurement, not a
/// check); `cargo test -p silt-bridge --test device_tier cost_per_record -- --ignored
/// --nocapture` prints the table in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn cost_per_record_on_the_device() {
    let Some(elf) = qemu_firmware() else { return };
    eprintln!("| module | instructions per record (QEMU icount) | fuel per record |");
    // The threshold filter in C too, with the Rust one's parameters.
    let c_module = examples::built_c_threshold().map(|wasm| {
        let path = std::env::temp_dir().join(format!("silt-c-threshold-{}.wasm", std::process::id()));
        std::fs::write(&path, wasm).unwrap();
        path
    });
    let c_case = c_module.as_ref().map(|path| {
        let (_, params) = examples::COST_CASES[0];
        let mut words = format!("module={} input=temperature version=7", path.display());
        for (k, v) in params {
            words.push_str(&format!(" param={k}={v}"));
        }
        ("c-threshold", words)
    });
    let cases = examples::COST_CASES.iter().map(|(name, params)| (*name, module_words(name, params)));
    for (name, words) in cases.chain(c_case) {
        let (broker, out) = run_with(&elf, &words, &[], &["-icount", "shift=0"]).await;
        let summary =
            out.lines().find_map(|l| l.strip_prefix("silt-fw: processor on temperature: ")).unwrap();
        let number = |unit: &str| -> u64 {
            let before = summary.split(&format!(" {unit}")).next().unwrap();
            before.rsplit([' ', ',']).next().unwrap().parse().unwrap()
        };
        let records = number("records in");
        eprintln!("| {name} | {} | {} |", number("cycles") * 40 / records, number("fuel") / records);
        broker.stop().await;
    }
    if let Some(path) = c_module {
        let _ = std::fs::remove_file(path);
    }
}

/// Waits until the broker says device `id` runs `version` (as its bridge passed on from the
/// device), for at most a minute.
async fn wait_running(broker: &Broker, device: &QemuDevice, id: &str, version: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = broker.client.device_module(id).await.unwrap();
        if m.running_version == Some(version) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the device does not run v{version}: {m:?}\n{}\n--- bridge ---\n{}",
            device.output(),
            device.bridge.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Module delivery end to end (docs/device-frames.md, "Module delivery"): a version deployed
/// with `silt device deploy` reaches the running firmware over its frame link, in chunks, is
/// checked and started there and reported as running; a new version replaces it; a rollback
/// brings the first back the same way. What the device runs shows in what it stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_reach_the_device_over_its_link_and_roll_back() {
    let Some(elf) = qemu_firmware() else { return };
    let broker = Broker::start().await;
    let key = broker.add_device("tier-1").await;
    let deploy = |(name, params): (&str, &[(&str, &str)])| {
        let wasm = examples::example_wasm(examples::built_small_examples(), name);
        let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let client = broker.client.clone();
        async move { client.deploy_device_module("tier-1", "temperature", params, wasm).await.unwrap() }
    };
    assert_eq!(deploy(FILTER).await.requested_version, Some(1));
    // A sample every 20 ms, far more than the run needs: the test ends it.
    let device = QemuDevice::start(&broker, &elf, "tier-1", &key, "period=20", 1_000_000, &[]).await;
    wait_running(&broker, &device, "tier-1", 1).await;
    assert_eq!(deploy(SMOOTH).await.requested_version, Some(2));
    wait_running(&broker, &device, "tier-1", 2).await;
    // Some samples through ema-smooth before going back.
    let smoothed = |records: &[ConsumedRecord]| {
        records.iter().filter(|r| String::from_utf8_lossy(&r.value).contains("\"ema\":")).count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while smoothed(&read_to_end(&broker.client, "sensors.temperature").await) < 3 {
        assert!(std::time::Instant::now() < deadline, "no smoothed records\n{}", device.output());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(broker.client.rollback_device_module("tier-1").await.unwrap().requested_version, Some(1));
    wait_running(&broker, &device, "tier-1", 1).await;

    let out = device.output();
    drop(device);
    let switches: Vec<&str> =
        out.lines().filter_map(|l| l.strip_prefix("silt-fw: switched to module ")).collect();
    eprintln!("{}", switches.join("\n"));
    assert_eq!(switches.len(), 3, "{out}");
    assert!(
        switches[0].starts_with("v1 ") && switches[1].starts_with("v2 ") && switches[2].starts_with("v1 "),
        "{out}"
    );
    let status = broker.client.device_module("tier-1").await.unwrap();
    assert_eq!(
        (status.requested_version, status.running_version, status.last_error),
        (Some(1), Some(1), None)
    );
    // Every record is the device's, in order of its samples; no sample stored twice.
    let records = read_to_end(&broker.client, "sensors.humidity").await;
    let seqs: Vec<u32> = records.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "humidity readings, each once and in order");
    broker.stop().await;
}

/// A device provisioned with a trusted key (`trust=`) takes only modules signed by it: an
/// unsigned version is refused on the device, whose error reaches `silt device status`, and
/// leaves it running what it ran; a signed one is switched to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_trusts_a_key_runs_only_modules_signed_by_it() {
    let Some(elf) = qemu_firmware() else { return };
    let broker = Broker::start().await;
    let key = broker.add_device("tier-1").await;
    let secret = [42u8; 32];
    let trusted = silt_wire::signature::hex(&silt_wire::signature::public_key(&secret));
    let wasm = |name| examples::example_wasm(examples::built_small_examples(), name);
    let params =
        |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let unsigned = wasm(FILTER.0);
    broker.client.deploy_device_module("tier-1", "temperature", params(FILTER.1), unsigned).await.unwrap();
    let words = format!("period=20 trust={trusted}");
    let device = QemuDevice::start(&broker, &elf, "tier-1", &key, &words, 1_000_000, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = broker.client.device_module("tier-1").await.unwrap();
        if status.last_error.as_deref().is_some_and(|e| e.contains("module v1 refused: module is not signed"))
        {
            assert_eq!(status.running_version, None, "{status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}\n{}", device.output());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let signed = silt_wire::signature::sign(&wasm(SMOOTH.0), &secret).unwrap();
    broker.client.deploy_device_module("tier-1", "temperature", params(SMOOTH.1), signed).await.unwrap();
    wait_running(&broker, &device, "tier-1", 2).await;
    assert_eq!(broker.client.device_module("tier-1").await.unwrap().last_error, None);
    let out = device.output();
    drop(device);
    assert!(out.contains("silt-fw: module v1 refused: module is not signed"), "{out}");
    assert!(out.contains("silt-fw: switched to module v2 "), "{out}");
    broker.stop().await;
}

/// Fewer frames, the same records: a device with one sensor (`only=temperature`) numbers its
/// samples apart from its frames, so a sample its edge filter leaves nothing of is not sent at
/// all. What it stores is, byte for byte, what the filter deployed in the broker makes of the
/// raw readings, in fewer frames and bytes: for a threshold filter and for send-on-change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_filter_on_the_device_sends_fewer_frames_with_the_same_records() {
    let Some(elf) = qemu_firmware() else { return };
    let filters = [FILTER, ON_CHANGE];
    let deploys: Vec<Deploy<'_>> = filters.iter().map(|(name, params)| (*name, *params, *name)).collect();
    let (raw, raw_out) = run(&elf, "only=temperature", &deploys).await;
    let frames = |out: &str| -> (u64, u64) {
        let line = traffic(out);
        let number = |after: &str| -> u64 {
            let at = line.find(after).unwrap_or_else(|| panic!("{after:?} in {line:?}"));
            line[..at].rsplit(' ').next().unwrap().parse().unwrap()
        };
        (number(" frames"), number(" bytes"))
    };
    let (raw_frames, raw_bytes) = frames(&raw_out);
    assert_eq!(raw_frames, u64::from(SAMPLES), "{raw_out}");
    eprintln!("raw: {}", traffic(&raw_out));
    for (name, params) in filters {
        let words = format!("only=temperature {}", module_words(name, params));
        let (device, out) = run(&elf, &words, &[]).await;
        let on_device = stored(&read_to_end(&device.client, "sensors.temperature").await);
        device.stop().await;
        // The broker's processor may still be catching up: as many records as the device
        // stored, then whatever else there is (a record too many fails the comparison).
        read_records(&raw.client, name, on_device.len()).await;
        let in_broker = stored(&read_to_end(&raw.client, name).await);
        assert!(
            !in_broker.is_empty() && in_broker.len() < SAMPLES as usize,
            "{name} keeps some: {}",
            in_broker.len()
        );
        assert_same(name, &on_device, &in_broker, &out);
        let (device_frames, device_bytes) = frames(&out);
        eprintln!("{name}: {}", traffic(&out));
        assert_eq!(device_frames, in_broker.len() as u64, "one frame per sample {name} kept\n{out}");
        assert!(device_bytes < raw_bytes, "{device_bytes} bytes vs {raw_bytes} raw\n{out}");
    }
    raw.stop().await;
}

/// The bridge tier: the same module deployed to the bridges (`silt processor deploy --tier
/// bridge`) makes, in the readings' own topic, byte for byte what it makes in the broker of the
/// raw readings, and keeps doing so across a SIGKILL of the bridge in the middle of the run:
/// its state is journaled with the rounds, so nothing is processed twice or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_in_the_bridge_gives_what_it_gives_in_the_broker_across_a_bridge_crash() {
    let Some(elf) = qemu_firmware() else { return };
    let (name, params) = SMOOTH;
    let (raw, _) = run(&elf, "", &[(name, params, "tier.smoothed")]).await;
    let expected = stored(&read_records(&raw.client, "tier.smoothed", SAMPLES as usize).await);
    raw.stop().await;

    let broker = Broker::start().await;
    broker.client.create_topic("sensors.temperature", 1, None, None).await.unwrap();
    let wasm = examples::example_wasm(examples::built_examples(), name);
    let params_owned = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let deployed =
        broker.client.deploy_bridge_processor("edge-smooth", "sensors.temperature", params_owned, wasm);
    assert_eq!(deployed.await.unwrap().version, 1);
    let key = broker.add_device("tier-1").await;
    let words = format!("{CLOCK} period=50");
    let mut device = QemuDevice::start(&broker, &elf, "tier-1", &key, &words, SAMPLES, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while read_to_end(&broker.client, "sensors.temperature").await.len() < 15 {
        assert!(std::time::Instant::now() < deadline, "{}\n{}", device.output(), device.bridge.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    device.bridge.kill();
    device.bridge.restart().await;
    // The restarted bridge takes the processor's state from its journal at its first round.
    while !device.bridge.log().contains("bridge-tier processor restored its journaled state") {
        assert!(std::time::Instant::now() < deadline, "no restored state\n{}", device.bridge.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, out) = device.wait(std::time::Duration::from_secs(120)).await;
    assert!(status.success(), "{out}");
    let got = stored(&read_to_end(&broker.client, "sensors.temperature").await);
    assert_same("ema-smooth in the bridge", &got, &expected, &out);
    broker.stop().await;
}

/// The device tier across a device crash: ema-smooth on the device keeps its state after every
/// sample in the device's flash (host files, `flash=`); the device's power is cut mid-run
/// (SIGKILL to QEMU) and it boots again, takes the state after the last sample the bridge
/// acknowledged, and goes on with the samples after it. What it stores is byte for byte what
/// ema-smooth in the broker makes of the raw readings: nothing processed twice or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_on_the_device_gives_what_it_gives_in_the_broker_across_a_device_crash() {
    let Some(elf) = qemu_firmware() else { return };
    let (name, params) = SMOOTH;
    // A device delivers its sample count after each boot: twice over covers both boots.
    let (raw, _) = run_samples(&elf, "", &[(name, params, "tier.smoothed")], &[], 2 * SAMPLES).await;
    let expected = stored(&read_records(&raw.client, "tier.smoothed", 2 * SAMPLES as usize).await);
    raw.stop().await;

    let broker = Broker::start().await;
    broker.client.create_topic("sensors.temperature", 1, None, None).await.unwrap();
    let key = broker.add_device("tier-1").await;
    let flash = tempfile::tempdir().unwrap();
    let flash_words = format!("period=50 flash={}", flash.path().join("fw").display());
    let words = format!("{CLOCK} {flash_words} {}", module_words(name, params));
    let mut device = QemuDevice::start(&broker, &elf, "tier-1", &key, &words, SAMPLES, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while read_to_end(&broker.client, "sensors.temperature").await.len() < 15 {
        assert!(std::time::Instant::now() < deadline, "{}\n{}", device.output(), device.bridge.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    device.reboot().await;
    let (status, out) = device.wait(std::time::Duration::from_secs(120)).await;
    assert!(status.success(), "{out}");
    assert!(out.contains("silt-fw: restored module v7's state after sample "), "{out}");
    let got = stored(&read_to_end(&broker.client, "sensors.temperature").await);
    assert!(got.len() > SAMPLES as usize && got.len() < 2 * SAMPLES as usize, "{} records\n{out}", got.len());
    assert_same("ema-smooth on the device across its crash", &got, &expected[..got.len()], &out);
    broker.stop().await;
}

/// The broker tier across a broker crash: ema-smooth deployed in the broker runs on a device's
/// raw readings while the broker is SIGKILLed mid-run and restarted on its data; its output is
/// byte for byte what the same module makes on the device (the device tier, in a run of its
/// own). The pipeline's output, checkpoint and state commit together, and the bridge re-sends
/// what the dead broker did not acknowledge under the device's sequence numbers, so no reading
/// is processed twice or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_in_the_broker_gives_what_it_gives_on_the_device_across_a_broker_crash() {
    let Some(elf) = qemu_firmware() else { return };
    let (name, params) = SMOOTH;
    let (device_tier, _) = run(&elf, &module_words(name, params), &[]).await;
    let on_device = stored(&read_to_end(&device_tier.client, "sensors.temperature").await);
    device_tier.stop().await;

    let mut broker = Broker::start_process().await;
    broker.client.create_topic("sensors.temperature", 1, None, None).await.unwrap();
    let deployment = Deployment {
        name: name.to_string(),
        input: "sensors.temperature".into(),
        output: "tier.smoothed".into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        from: None,
        limits: ProcessorLimits::default(),
    };
    let wasm = examples::example_wasm(examples::built_examples(), name);
    broker.client.deploy_processor(deployment, wasm).await.unwrap();
    let key = broker.add_device("tier-1").await;
    let words = format!("{CLOCK} period=50");
    let device = QemuDevice::start(&broker, &elf, "tier-1", &key, &words, SAMPLES, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while read_to_end(&broker.client, "tier.smoothed").await.len() < 15 {
        assert!(std::time::Instant::now() < deadline, "{}\n{}", device.output(), device.bridge.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    broker.kill();
    assert!(!device.output().contains("silt-fw: done"), "the device finished before the crash");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    broker.respawn().await;
    let (status, out) = device.wait(std::time::Duration::from_secs(120)).await;
    assert!(status.success(), "{out}");
    read_records(&broker.client, "tier.smoothed", on_device.len()).await;
    let in_broker = stored(&read_to_end(&broker.client, "tier.smoothed").await);
    assert_same("ema-smooth in the broker across its crash", &on_device, &in_broker, &out);
    broker.stop().await;
}

/// How long a module takes to reach a device, over TCP (QEMU's UART on a socket) and over a
/// serial line (QEMU's UART on a pseudo-terminal the bridge opens at 115200 baud): from the
/// first chunk the device kept to its switch, as the firmware prints it. A measurement, not a
/// check: `cargo test -p silt-bridge --test device_tier deploy_time -- --ignored --nocapture`
/// prints the lines in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn deploy_time_over_tcp_and_serial() {
    let Some(elf) = qemu_firmware() else { return };
    for line in [Line::Tcp, Line::Pty] {
        for (name, params) in [FILTER, SMOOTH] {
            let broker = Broker::start().await;
            let key = broker.add_device("tier-1").await;
            let wasm = examples::example_wasm(examples::built_small_examples(), name);
            let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            broker.client.deploy_device_module("tier-1", "temperature", params, wasm).await.unwrap();
            let device =
                QemuDevice::start_on(line, &broker, &elf, "period=20 tier-1", &key, 1_000_000, &[]).await;
            wait_running(&broker, &device, "tier-1", 1).await;
            let out = device.output();
            let switched =
                out.lines().find_map(|l| l.strip_prefix("silt-fw: switched to module ")).unwrap_or("?");
            eprintln!("{line:?} {name}: {switched}");
            drop(device);
            broker.stop().await;
        }
    }
}
