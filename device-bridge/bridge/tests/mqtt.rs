//! MQTT 3.1.1 through the real bridge: a real client library (rumqttc) and Debian's
//! mosquitto clients publish into the log with QoS 0 and 1 and subscribe to its tail; bad
//! logins are refused.

mod support;

use std::process::Stdio;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use silt_client::{Operation, Producer, ProducerConfig, ProducerRecord};
use support::*;

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn client(bridge: &BridgeProcess, id: &str, password: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(format!("{id}-client"), "127.0.0.1", bridge.mqtt.port());
    options.set_credentials(id, password);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 64)
}

/// Polls the event loop until `want` matches an incoming packet; fails on errors or time out.
async fn until<T>(events: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = want(&p) {
                        return t;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("MQTT event loop: {e}"),
            }
        }
    })
    .await
    .expect("MQTT packet in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publishes_are_acked_after_append_and_land_once() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("mqtt-1").await;
    broker.grant("device:mqtt-1", Operation::Produce, "topic:plant.*").await;
    let (client, mut events) = client(&bridge, "mqtt-1", &hex(&key));
    until(&mut events, |p| {
        matches!(p, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success).then_some(())
    })
    .await;
    // The client queues at most 64 requests until its event loop runs: publish from a task.
    let publisher = client.clone();
    tokio::spawn(async move {
        for i in 0..100 {
            publisher
                .publish("plant/line1/temp", QoS::AtLeastOnce, false, format!("reading-{i}"))
                .await
                .unwrap();
        }
    });
    let mut acked = 0;
    until(&mut events, |p| {
        acked += matches!(p, Packet::PubAck(_)) as usize;
        (acked == 100).then_some(())
    })
    .await;
    // Every PUBACK came after the append was durable, so the records are there now.
    let records = read_records(&broker.client, "plant.line1.temp", 100).await;
    let values: Vec<String> = records.iter().map(|r| String::from_utf8(r.value.to_vec()).unwrap()).collect();
    assert_eq!(values, (0..100).map(|i| format!("reading-{i}")).collect::<Vec<_>>());
    assert!(records.iter().all(|r| &r.key[..] == b"mqtt-1"));
    // QoS 0 lands too (nothing to wait for but the log); the event loop sends it.
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client.publish("plant/line1/temp", QoS::AtMostOnce, false, "qos0").await.unwrap();
    let records = read_records(&broker.client, "plant.line1.temp", 101).await;
    assert_eq!(&records[100].value[..], b"qos0");
    let metrics = bridge.metrics().await;
    assert!(metrics.contains("silt_bridge_mqtt_sessions 1"), "{metrics}");
    drop(bridge);
    broker.stop().await;
}

/// Publishes large enough that one appender round holds more than one batch (8 MiB) for
/// their partition: the batches carry consecutive producer sequences, and the broker refuses
/// one that arrives before its predecessor, so they must reach it in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_of_several_batches_per_partition_land_whole_and_in_order() {
    const PUBLISHES: usize = 120;
    const PAYLOAD_BYTES: usize = 200 * 1024;
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("mqtt-big").await;
    broker.grant("device:mqtt-big", Operation::Produce, "topic:plant.*").await;
    let mut options = MqttOptions::new("mqtt-big-client", "127.0.0.1", bridge.mqtt.port());
    options.set_credentials("mqtt-big", hex(&key));
    options.set_max_packet_size(PAYLOAD_BYTES + 1024, PAYLOAD_BYTES + 1024);
    options.set_inflight(PUBLISHES as u16);
    let (client, mut events) = AsyncClient::new(options, PUBLISHES);
    until(&mut events, |p| matches!(p, Packet::ConnAck(_)).then_some(())).await;
    let payload = |i: usize| {
        let mut v = vec![b'x'; PAYLOAD_BYTES];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    };
    for i in 0..PUBLISHES {
        client.publish("plant/big", QoS::AtLeastOnce, false, payload(i)).await.unwrap();
    }
    let mut acked = 0;
    until(&mut events, |p| {
        acked += matches!(p, Packet::PubAck(_)) as usize;
        (acked == PUBLISHES).then_some(())
    })
    .await;
    let records = read_records(&broker.client, "plant.big", PUBLISHES).await;
    let order: Vec<u64> =
        records.iter().map(|r| u64::from_le_bytes(r.value[..8].try_into().unwrap())).collect();
    assert_eq!(order, (0..PUBLISHES as u64).collect::<Vec<_>>(), "{}", bridge.log());
    assert!(records.iter().all(|r| r.value.len() == PAYLOAD_BYTES));
    assert!(!bridge.log().contains("out of order"), "{}", bridge.log());
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_are_refused() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "[limits]\nkey_cache_ms = 100\n", &[]).await;
    let key = broker.add_device("mqtt-2").await;
    for (user, password, want) in [
        ("mqtt-2", "00".repeat(32), ConnectReturnCode::BadUserNamePassword),
        ("nobody", hex(&key), ConnectReturnCode::BadUserNamePassword),
    ] {
        let (_c, mut events) = client(&bridge, user, &password);
        let got = tokio::time::timeout(WAIT, events.poll()).await.expect("an answer in time");
        assert!(
            matches!(&got, Err(rumqttc::ConnectionError::ConnectionRefused(code)) if *code == want),
            "{user}: {got:?}"
        );
    }
    broker.client.revoke_device("mqtt-2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c, mut events) = client(&bridge, "mqtt-2", &hex(&key));
    let got = tokio::time::timeout(WAIT, events.poll()).await.expect("an answer in time");
    assert!(
        matches!(got, Err(rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized))),
        "{got:?}"
    );
    for device in ["mqtt-2", "nobody"] {
        await_refusal(
            &broker.client,
            &format!("device:{device}"),
            "mqtt-connect",
            &format!("device:{device}"),
        )
        .await;
    }
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_the_tail_of_matching_topics() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = broker.add_device("watcher").await;
    broker.grant("device:watcher", Operation::Consume, "topic:alerts.*").await;
    broker.client.create_topic("alerts.temp", 1, None, None).await.unwrap();
    let old = Producer::new(&broker.client, "alerts.temp", ProducerConfig::default()).await.unwrap();
    old.send(ProducerRecord { value: b"before-subscribe", ..Default::default() }).await.unwrap();
    old.flush().await.unwrap();

    let (client, mut events) = client(&bridge, "watcher", &hex(&key));
    client.subscribe("alerts/#", QoS::AtLeastOnce).await.unwrap();
    until(&mut events, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    // The subscription follows from the tail: poll until the follower is in place, by
    // producing markers until one arrives.
    let mut got = Vec::new();
    for i in 0..200 {
        old.send(ProducerRecord { value: format!("alert-{i}").as_bytes(), ..Default::default() })
            .await
            .unwrap();
        old.flush().await.unwrap();
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(100), events.poll()).await
        {
            assert_eq!(p.topic, "alerts/temp");
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            break;
        }
    }
    assert!(!got.is_empty(), "no record reached the MQTT subscriber");
    assert!(!got.contains(&"before-subscribe".to_string()));
    // A topic created after the subscription is followed from its start.
    let late = Producer::new(
        &{
            broker.client.create_topic("alerts.humidity", 1, None, None).await.unwrap();
            broker.client.clone()
        },
        "alerts.humidity",
        ProducerConfig::default(),
    )
    .await
    .unwrap();
    late.send(ProducerRecord { value: b"late-1", ..Default::default() }).await.unwrap();
    late.flush().await.unwrap();
    let p = until(&mut events, |p| match p {
        Packet::Publish(p) if p.topic == "alerts/humidity" => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&p.payload[..], b"late-1");
    drop(bridge);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_and_subscribe() {
    let (pub_bin, sub_bin) = ("mosquitto_pub", "mosquitto_sub");
    if std::process::Command::new(pub_bin).arg("--help").output().is_err() {
        panic!("mosquitto_pub is missing: install Debian's mosquitto-clients (scripts/test-all.sh does)");
    }
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = hex(&broker.add_device("mosq").await);
    for op in [Operation::Produce, Operation::Consume] {
        broker.grant("device:mosq", op, "topic:lab.*").await;
    }
    let port = bridge.mqtt.port().to_string();
    let sub = tokio::process::Command::new(sub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "mosq",
            "-P",
            &key,
            "-q",
            "1",
            "-t",
            "lab/#",
            "-v",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting mosquitto_sub");
    // The subscriber follows topics that exist at subscribe time from their tail, and later
    // ones from their start; `lab.bench` does not exist yet, so the first publish reaches it.
    let publish = |msg: &str| {
        std::process::Command::new(pub_bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "mosq",
                "-P",
                &key,
                "-q",
                "1",
                "-t",
                "lab/bench",
                "-m",
                msg,
            ])
            .status()
            .expect("running mosquitto_pub")
    };
    // Give mosquitto_sub its connection before the topic appears: wait for its session.
    let deadline = std::time::Instant::now() + WAIT;
    while !bridge.metrics().await.contains("silt_bridge_mqtt_sessions 1") {
        assert!(std::time::Instant::now() < deadline, "mosquitto_sub never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(publish("hello from mosquitto").success());
    let out =
        tokio::time::timeout(WAIT + Duration::from_secs(10), sub.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "lab/bench hello from mosquitto",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = read_records(&broker.client, "lab.bench", 1).await;
    assert_eq!(&records[0].value[..], b"hello from mosquitto");
    // A wrong password is refused: mosquitto_pub exits non-zero.
    let status = std::process::Command::new(pub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "mosq",
            "-P",
            "wrong",
            "-q",
            "1",
            "-t",
            "lab/bench",
            "-m",
            "x",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    drop(bridge);
    broker.stop().await;
}

/// Waits until the bridge closes the session behind `events` (or fails after `WAIT`).
async fn until_closed(events: &mut EventLoop) {
    tokio::time::timeout(WAIT, async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the bridge closes the session in time");
}

async fn connected(bridge: &BridgeProcess, id: &str, key: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) = client(bridge, id, key);
    let code = until(&mut events, |p| match p {
        Packet::ConnAck(a) => Some(a.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{id} logs in");
    (client, events)
}

/// A device may publish under `sensors.*` and read topics under its own id by default; a
/// subscription to another topic is refused, a publish outside its rights closes the session,
/// internal topics are never reachable, and every record carries the authenticated id as its
/// key and its `silt-device` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_held_to_its_rights() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = hex(&broker.add_device("d-own").await);
    let (client, mut events) = connected(&bridge, "d-own", &key).await;
    client.subscribe("alerts/temp", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("devices/d-own/commands", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("devices/d-other/commands", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("silt/audit", QoS::AtLeastOnce).await.unwrap();
    let mut codes = Vec::new();
    while codes.len() < 4 {
        let acks = until(&mut events, |p| match p {
            Packet::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await;
        codes.extend(acks);
    }
    use rumqttc::SubscribeReasonCode::{Failure, Success};
    assert_eq!(codes, [Failure, Success(QoS::AtLeastOnce), Failure, Failure]);

    client.publish("sensors/room1", QoS::AtLeastOnce, false, r#"{"device":"d-other"}"#).await.unwrap();
    until(&mut events, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
    let records = read_records(&broker.client, "sensors.room1", 1).await;
    assert_eq!(&records[0].key[..], b"d-own", "the key is the authenticated id");
    let device_header: Vec<_> = records[0].headers.iter().filter(|(k, _)| &k[..] == b"silt-device").collect();
    assert_eq!(device_header.len(), 1);
    assert_eq!(&device_header[0].1[..], b"d-own", "whatever the payload claims");

    for forbidden in ["plant/line1", "silt/audit"] {
        let (client, mut events) = connected(&bridge, "d-own", &key).await;
        client.publish(forbidden, QoS::AtLeastOnce, false, "x").await.unwrap();
        until_closed(&mut events).await;
    }
    let topics: Vec<String> =
        broker.client.list_topics().await.unwrap().into_iter().map(|t| t.name).collect();
    assert!(!topics.contains(&"plant.line1".to_string()), "{topics:?}");
    assert!(bridge
        .metrics()
        .await
        .contains(r#"silt_bridge_mqtt_refused_total{reason="forbidden_publish"} 2"#));
    await_refusal(&broker.client, "device:d-own", "mqtt-publish", "topic:plant.line1").await;
    await_refusal(&broker.client, "device:d-own", "mqtt-subscribe", "topic:devices.d-other.commands").await;
    drop(bridge);
    broker.stop().await;
}

/// A revoked device's session is closed within the key cache time, and so is one logged in
/// with a key rotated out; during a rotation's overlap both keys log in; an admin enrols a
/// revoked id again with a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_rotated_devices_are_disconnected() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "[limits]\nkey_cache_ms = 200\n", &[]).await;
    let first = hex(&broker.add_device("d-rot").await);
    let (_c1, mut old_session) = connected(&bridge, "d-rot", &first).await;

    // The bridge learns of a change within its key cache time (200 ms here).
    let rotated = broker.client.rotate_device("d-rot", 3_600_000).await.unwrap();
    let second = hex(rotated.key.as_deref().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c2, mut new_session) = connected(&bridge, "d-rot", &second).await;
    let (_c3, _) = connected(&bridge, "d-rot", &first).await;

    // No overlap: the second key is out at once, and its session with it; the session of the
    // first key too (a rotation ends the previous overlap).
    let third = hex(broker.client.rotate_device("d-rot", 0).await.unwrap().key.as_deref().unwrap());
    until_closed(&mut old_session).await;
    until_closed(&mut new_session).await;
    let (_c4, mut current) = connected(&bridge, "d-rot", &third).await;
    for old in [&first, &second] {
        let (_c, mut refused) = client(&bridge, "d-rot", old);
        let got = tokio::time::timeout(WAIT, refused.poll()).await.expect("an answer in time");
        assert!(
            matches!(
                got,
                Err(rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword))
            ),
            "{got:?}"
        );
    }

    broker.client.revoke_device("d-rot").await.unwrap();
    until_closed(&mut current).await;
    let enrolled = hex(broker.client.add_device("d-rot").await.unwrap().key.as_deref().unwrap());
    assert_ne!(enrolled, third);
    tokio::time::sleep(Duration::from_millis(300)).await;
    connected(&bridge, "d-rot", &enrolled).await;
    drop(bridge);
    broker.stop().await;
}

/// MQTT over TLS: Debian's `mosquitto_pub --cafile` with the bridge's certificate gets its
/// QoS 1 publish into the log; a client trusting another certificate, or speaking clear text
/// to the TLS port, gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_over_tls() {
    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let key = hex(&broker.add_device("tls-dev").await);
    let port = bridge.mqtts.port().to_string();
    let cafile = bridge.dir.path().join("data/tls/cert.pem");
    let publish = |tls: &[&str], msg: &str| {
        let mut args: Vec<&str> = tls.to_vec();
        args.extend([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "tls-dev",
            "-P",
            &key,
            "-q",
            "1",
            "-t",
            "sensors/tls",
            "-m",
            msg,
        ]);
        std::process::Command::new("mosquitto_pub")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .expect("running mosquitto_pub")
    };
    let ca = cafile.display().to_string();
    assert!(publish(&["--cafile", &ca], "over-tls").success(), "mosquitto_pub --cafile over TLS");
    let records = read_records(&broker.client, "sensors.tls", 1).await;
    assert_eq!(&records[0].value[..], b"over-tls");

    let foreign = broker.ca_cert.display().to_string();
    assert!(!publish(&["--cafile", &foreign], "untrusted").success(), "another CA's certificate is refused");
    assert!(!publish(&[], "clear").success(), "clear text to the TLS port goes nowhere");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_records(&broker.client, "sensors.tls", 1).await.len(), 1);
    drop(bridge);
    broker.stop().await;
}
