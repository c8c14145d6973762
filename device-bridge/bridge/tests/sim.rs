//! The bridge binary, with an in-process broker, driven by a fleet of simulated devices
//! (`silt-devsim`): with every fault on and the bridge SIGKILLed twice, each frame's readings
//! are in the log exactly once; over MQTT QoS 1 every publish is in the log at least once with
//! faults and a restart, and exactly once without.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use silt_devsim::{self as sim, FaultPlan, Progress, SimConfig, SimReport, Transport};
use support::*;

/// Bound on one simulated run; the runs below take a few seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(25);

/// Checks that every reading of every device is in `counts` once (`exactly`) or at least once,
/// and that nothing else is.
fn check_readings(report: &SimReport, counts: &HashMap<(String, u32), usize>, exactly: bool, topic: &str) {
    let mut expected = 0;
    for o in &report.outcomes {
        assert!(o.complete, "{}: {:?} (seed {})", o.id, o.problem, report.seed);
        for seq in o.first_seq..=o.last_seq {
            expected += 1;
            let n = counts.get(&(o.id.clone(), seq)).copied().unwrap_or(0);
            assert!(n >= 1, "{topic}: {} seq {seq} is missing (seed {})", o.id, report.seed);
            if exactly {
                assert_eq!(n, 1, "{topic}: {} seq {seq} is stored {n} times (seed {})", o.id, report.seed);
            }
        }
    }
    assert_eq!(counts.len(), expected, "{topic}: readings nobody generated (seed {})", report.seed);
}

/// Runs the simulator in a task and SIGKILLs and restarts the bridge once the acked frames
/// pass each fraction of `restart_at`.
async fn run_with_restarts(bridge: &mut BridgeProcess, config: SimConfig, restart_at: &[f64]) -> SimReport {
    let total = config.devices.len() as u64 * config.frames.expect("a frame count");
    let progress = Arc::new(Progress::default());
    let run = tokio::spawn(sim::run(config, progress.clone()));
    for fraction in restart_at {
        let target = (total as f64 * fraction) as u64;
        let reached = progress.wait_for(RUN_TIMEOUT, |p| p.acked.load(Ordering::Relaxed) >= target).await;
        assert!(reached, "the simulation did not reach {target} acked frames of {total}");
        bridge.restart().await;
    }
    match run.await.expect("the simulation task panicked") {
        Ok(report) => report,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_faulty_devices_across_two_bridge_kills_store_every_reading_exactly_once() {
    // Proves exactly-once end to end: drops, duplicates, reorders, bad tags, reconnects and two
    // SIGKILLs of the bridge, and still every generated reading is in the log once.
    let started = Instant::now();
    let broker = Broker::start().await;
    let mut bridge = BridgeProcess::start(&broker, "", &[]).await;
    let devices = sim::provision(&broker.client, 0, 50, 16).await.expect("provisioning");
    let mut config = SimConfig::new(bridge.tcp.to_string(), Transport::Tcp, devices);
    config.frames = Some(300);
    config.window = 8;
    config.ack_timeout = Duration::from_millis(500);
    config.faults = FaultPlan { drop: 0.03, duplicate: 0.03, reorder: 0.03, bad_tag: 0.03, reconnect: 0.01 };
    config.seed = 0x5117;
    config.timeout = RUN_TIMEOUT;
    let report = run_with_restarts(&mut bridge, config, &[0.3, 0.65]).await;
    eprintln!("{}", report.to_text());
    let c = &report.counters;
    assert_eq!(c.acked, 50 * 300);
    assert!(
        c.dropped > 0 && c.duplicated > 0 && c.reordered > 0 && c.bad_tagged > 0 && c.reconnects > 0,
        "{c:?}"
    );
    assert!(c.connection_losses >= 50, "every device lost its connection to the killed bridge: {c:?}");
    assert!(report.nacks()["bad_tag"] > 0 && report.nacks()["out_of_order"] > 0, "{:?}", report.nacks());
    for topic in ["sensors.temperature", "sensors.humidity"] {
        let records = read_to_end(&broker.client, topic).await;
        check_readings(&report, &count_readings(&records), true, topic);
        assert_eq!(records.len(), 50 * 300, "{topic}");
    }
    eprintln!("took {:?}", started.elapsed());
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_devices_with_faults_and_a_bridge_kill_get_every_publish_stored_at_least_once() {
    // Proves QoS 1 through the bridge: a PUBACK means durable, so with lost, duplicated and
    // reordered publishes, reconnects and a SIGKILL every publish is in the log at least once.
    let broker = Broker::start().await;
    let mut bridge = BridgeProcess::start(&broker, "", &[]).await;
    let devices = sim::provision(&broker.client, 0, 20, 16).await.expect("provisioning");
    let mut config = SimConfig::new(bridge.mqtt.to_string(), Transport::Mqtt, devices);
    config.frames = Some(100);
    config.ack_timeout = Duration::from_millis(500);
    config.faults = FaultPlan { drop: 0.03, duplicate: 0.03, reorder: 0.03, bad_tag: 0.0, reconnect: 0.02 };
    config.seed = 0x3117;
    config.timeout = RUN_TIMEOUT;
    let report = run_with_restarts(&mut bridge, config, &[0.5]).await;
    eprintln!("{}", report.to_text());
    let c = &report.counters;
    assert_eq!(c.acked, 20 * 100);
    assert!(c.dropped > 0 && c.duplicated > 0 && c.reordered > 0 && c.reconnects > 0, "{c:?}");
    let records = read_to_end(&broker.client, "sensors.temperature").await;
    check_readings(&report, &count_readings(&records), false, "sensors.temperature");
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_devices_without_faults_get_every_publish_stored_exactly_once() {
    // Proves that without faults or restarts QoS 1 publishes are stored once each: the bridge
    // adds no duplicates of its own.
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let devices = sim::provision(&broker.client, 0, 20, 16).await.expect("provisioning");
    let mut config = SimConfig::new(bridge.mqtt.to_string(), Transport::Mqtt, devices);
    config.frames = Some(100);
    // Long enough that no publish is sent twice on a loaded machine.
    config.ack_timeout = Duration::from_secs(10);
    config.timeout = RUN_TIMEOUT;
    let report = sim::run(config, Arc::new(Progress::default())).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", report.to_text());
    assert_eq!(report.counters.retransmits, 0);
    assert_eq!(report.counters.duplicate_acks, 0);
    let records = read_to_end(&broker.client, "sensors.temperature").await;
    check_readings(&report, &count_readings(&records), true, "sensors.temperature");
    assert_eq!(records.len(), 20 * 100);
    drop(bridge);
    broker.stop().await;
}
