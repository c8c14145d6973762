//! Frames over TCP through the real bridge binary into a real broker: acks only after
//! durability, dedup of retransmissions, nacks for every kind of bad frame, and exactly-once
//! across a SIGKILL of the bridge; a batch the broker refuses as out of order is sent again
//! under a fresh producer id, never dropped.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use silt_frame::NackReason;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_frames_are_stored_once_even_when_retransmitted() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("dev-1").await;
    let mut dev = TestDevice::connect(bridge.tcp, "dev-1", key).await;
    assert_eq!(dev.hello(0).await, Reply::Ack(0));
    for seq in 1..=50 {
        dev.data(seq).await;
    }
    dev.wait_ack(50).await;
    // Retransmissions of durable frames are acked again with the cumulative ack.
    for seq in 10..=20 {
        dev.data(seq).await;
        assert_eq!(dev.recv().await, Reply::Ack(50));
    }
    // The next new frame still goes through.
    dev.data(51).await;
    dev.wait_ack(51).await;
    for topic in ["sensors.temperature", "sensors.humidity"] {
        let records = read_records(&broker.client, topic, 51).await;
        let seqs: Vec<u32> = records.iter().map(seq_of).collect();
        assert_eq!(seqs, (1..=51).collect::<Vec<_>>(), "{topic}");
        assert!(records.iter().all(|r| &r.key[..] == b"dev-1"));
    }
    let metrics = bridge.metrics().await;
    assert!(metrics.contains("silt_bridge_frames_accepted_total 51"), "{metrics}");
    assert!(metrics.contains("silt_bridge_duplicates_dropped_total 11"), "{metrics}");
    assert!(metrics.contains("silt_bridge_devices_connected 1"), "{metrics}");
    promtool_check(&metrics);
    drop(bridge);
    broker.stop().await;
}

/// `promtool check metrics` (Debian's prometheus package, installed by scripts/test-all.sh)
/// accepts the scrape: names, types, units and help follow Prometheus conventions.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: install Debian's prometheus package (scripts/test-all.sh does)");
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "promtool: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_nacks_with_reasons_and_nothing_is_stored() {
    let broker = Broker::start().await;
    // A short key cache so that the revoke below takes effect quickly.
    let bridge = BridgeProcess::start(&broker, "[limits]\nkey_cache_ms = 100\n", &[]).await;
    let key = broker.add_device("dev-2").await;

    // Data before hello.
    let mut dev = TestDevice::connect(bridge.tcp, "dev-2", key).await;
    dev.data(1).await;
    assert!(matches!(dev.recv().await, Reply::Nack { reason: NackReason::NoHello, .. }));
    // Garbage between delimiters: a decode nack, and the connection goes on.
    dev.send_raw(&[0x00, 0x05, 0xff, 0x13, 0x00]).await;
    assert!(matches!(dev.recv().await, Reply::Nack { reason: NackReason::Decode, .. }));
    assert_eq!(dev.hello(0).await, Reply::Ack(0));
    // A gap in the sequence.
    dev.data(3).await;
    assert_eq!(
        dev.recv().await,
        Reply::Nack { seq: 3, ack: 0, reason: NackReason::OutOfOrder, verified: true }
    );
    // Another device's frame on this connection.
    let other = broker.add_device("dev-3").await;
    let mut impostor = TestDevice::connect(bridge.tcp, "dev-3", other).await;
    assert_eq!(impostor.hello(0).await, Reply::Ack(0));

    // The wrong key.
    let mut wrong = TestDevice::connect(bridge.tcp, "dev-2", [7; 32]).await;
    assert!(matches!(wrong.hello(0).await, Reply::Nack { reason: NackReason::BadTag, verified: false, .. }));
    // An unknown device.
    let mut unknown = TestDevice::connect(bridge.tcp, "nobody", [7; 32]).await;
    assert!(matches!(unknown.hello(0).await, Reply::Nack { reason: NackReason::UnknownDevice, .. }));
    // A revoked device, once the bridge's cache entry expired.
    broker.client.revoke_device("dev-3").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut revoked = TestDevice::connect(bridge.tcp, "dev-3", other).await;
    assert!(matches!(revoked.hello(0).await, Reply::Nack { reason: NackReason::Revoked, .. }));

    let topics: Vec<String> =
        broker.client.list_topics().await.unwrap().into_iter().map(|t| t.name).collect();
    assert!(topics.is_empty(), "nothing was accepted, so nothing was created: {topics:?}");
    let metrics = bridge.metrics().await;
    for reason in ["no_hello", "decode", "out_of_order", "bad_tag", "unknown_device", "revoked"] {
        assert!(
            metrics.contains(&format!("silt_bridge_frames_rejected_total{{reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
    // Refusals of identity are the devices' in the broker's audit; errors of form are not.
    await_refusal(&broker.client, "device:dev-2", "frame", "device:dev-2").await;
    await_refusal(&broker.client, "device:nobody", "frame", "device:nobody").await;
    await_refusal(&broker.client, "device:dev-3", "frame", "device:dev-3").await;
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_mid_stream_loses_and_duplicates_nothing() {
    let broker = Broker::start().await;
    let mut bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("dev-k").await;
    const FRAMES: u32 = 300;
    let mut next = 1;
    for round in 0..3 {
        let mut dev = TestDevice::connect(bridge.tcp, "dev-k", key).await;
        let Reply::Ack(durable) = dev.hello(0).await else { panic!("hello refused") };
        assert!(
            durable + 1 >= next.min(FRAMES),
            "the bridge forgot acked frames: durable {durable}, next {next}"
        );
        // Resend everything after the cumulative ack, as a device without storage would.
        next = durable + 1;
        let stop = (next + 100).min(FRAMES);
        for seq in next..=stop {
            dev.data(seq).await;
        }
        if round < 2 {
            // Kill while frames are in flight: some acked, some not.
            if let Some(Reply::Ack(a)) = dev.try_recv(Duration::from_millis(50)).await {
                next = a + 1;
            }
            bridge.restart().await;
        } else {
            dev.wait_ack(FRAMES.min(stop)).await;
        }
    }
    let mut dev = TestDevice::connect(bridge.tcp, "dev-k", key).await;
    let Reply::Ack(durable) = dev.hello(0).await else { panic!("hello refused") };
    for seq in durable + 1..=FRAMES {
        dev.data(seq).await;
    }
    dev.wait_ack(FRAMES).await;
    let records = read_records(&broker.client, "sensors.temperature", FRAMES as usize).await;
    let seqs: Vec<u32> = records.iter().map(seq_of).collect();
    let unique: BTreeSet<u32> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), unique.len(), "duplicates after restarts");
    assert_eq!(unique, (1..=FRAMES).collect(), "missing readings after restarts");
    drop(bridge);
    broker.stop().await;
}

/// A broker restored from an older copy of its data has lost the bridge's producer state: it
/// refuses the bridge's next batches as out of order. The bridge takes a fresh producer id
/// and sends them again; it never acks a frame whose readings are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_out_of_order_is_sent_again_under_a_fresh_producer_id() {
    let mut broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("dev-1").await;
    let mut dev = TestDevice::connect(bridge.tcp, "dev-1", key).await;
    assert_eq!(dev.hello(0).await, Reply::Ack(0));
    for seq in 1..=5 {
        dev.data(seq).await;
    }
    dev.wait_ack(5).await;

    // A copy of the broker's data as it is now, then more frames on top of it (on another
    // copy, the broker's data from now on).
    let copies = tempfile::tempdir().expect("temp dir");
    let older = copies.path().join("older");
    broker
        .restart_with(|data| {
            copy_dir(data, &older);
            let newer = copies.path().join("newer");
            copy_dir(data, &newer);
            newer
        })
        .await;
    for seq in 6..=10 {
        dev.data(seq).await;
    }
    dev.wait_ack(10).await;

    // The operator restores the older copy: frames 6..=10 are gone with it (not the bridge's
    // doing), and the broker expects the bridge's sequences to go on from frame 5's.
    broker.restart_with(|_| older.clone()).await;
    for seq in 11..=15 {
        dev.data(seq).await;
    }
    dev.wait_ack(15).await;

    let want: Vec<u32> = (1..=5).chain(11..=15).collect();
    for topic in ["sensors.temperature", "sensors.humidity"] {
        let seqs: Vec<u32> = read_to_end(&broker.client, topic).await.iter().map(seq_of).collect();
        assert_eq!(seqs, want, "{topic}: every frame acked after the restore is stored, once");
    }
    let metrics = bridge.metrics().await;
    assert!(metrics.contains("silt_bridge_producer_renewals_total 1"), "{metrics}");
    assert!(bridge.log().contains("fresh producer id"), "{}", bridge.log());
    drop(bridge);
    broker.stop().await;
}

/// `cp -a from to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("running cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}
