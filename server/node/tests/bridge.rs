//! A device bridge embedded in the server by its `[bridge]` config table takes frames and
//! appends them to the broker it runs beside.

#[path = "../../broker/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use silt_frame::{Body, Data, Deframer, Frame, Hello, Reading, Time, STUFFED_BYTES_MAX};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn send(s: &mut tokio::net::TcpStream, frame: &Frame<'_>, key: &[u8; 32]) {
    let mut buf = [0u8; STUFFED_BYTES_MAX];
    let n = silt_frame::encode_stuffed(frame, key, &mut buf).unwrap();
    s.write_all(&buf[..n]).await.unwrap();
}

/// Reads frames until an ack verified with `key` reaches `seq`.
async fn wait_ack(s: &mut tokio::net::TcpStream, key: &[u8; 32], seq: u32) {
    let mut deframer = Deframer::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the bridge closed the connection");
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, frame) = deframer.push(rest);
                rest = &rest[used..];
                if let Some(raw) = frame {
                    let f = silt_frame::decode_verified(raw.unwrap(), key)
                        .expect("an ack tagged with the device key");
                    assert_eq!(f.body, Body::Ack, "{f:?}");
                    if f.ack >= seq {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.expect("ack in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_bridge_appends_frames_to_its_broker() {
    let (frames, mqtts) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[bridge]\nlisten_tcp = \"127.0.0.1:{frames}\"\nlisten_mqtt = \"127.0.0.1:{}\"\nlisten_mqtts = \"127.0.0.1:{mqtts}\"\nadmin_listen = \"127.0.0.1:{}\"\n",
        free_tcp_port(),
        free_tcp_port()
    );
    let broker = BrokerProcess::start_with_config(&config, &[]).await;
    let client = broker.client().await;
    let key: [u8; 32] = client.add_device("embedded-1").await.unwrap().key.unwrap().try_into().unwrap();
    let mut socket = None;
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", frames)).await {
            socket = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = socket.expect("the embedded bridge listens");
    send(
        &mut s,
        &Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "embedded-1", tick_ms: 0, firmware: "t", module: 0 }),
        },
        &key,
    )
    .await;
    wait_ack(&mut s, &key, 0).await;
    let mut readings = heapless::Vec::new();
    readings.push(Reading::Temperature(21.25)).unwrap();
    let body = Body::Data(Data { device: "embedded-1", time: Time::UnixMs(1_700_000_000_000), readings });
    send(&mut s, &Frame { seq: 1, ack: 0, body }, &key).await;
    wait_ack(&mut s, &key, 1).await;
    let records = read_all(&client, "sensors.temperature", silt_client::FetchFrom::Earliest).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, r#"{"device":"embedded-1","seq":1,"value":21.25}"#);
    assert_eq!(records[0].timestamp_ms, 1_700_000_000_000);
    assert!(
        broker.data_dir().join("bridge").exists(),
        "the embedded bridge keeps its journal in DATA_DIR/bridge"
    );

    // MQTT over TLS with the broker's own certificate: the file every client already trusts.
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "--cafile",
            &broker.ca_cert().display().to_string(),
            "-h",
            "127.0.0.1",
            "-p",
            &mqtts.to_string(),
        ])
        .args(["-u", "embedded-1", "-P", &key.iter().map(|b| format!("{b:02x}")).collect::<String>()])
        .args(["-q", "1", "-t", "sensors/tls", "-m", "embedded over TLS"])
        .status()
        .expect("running mosquitto_pub (Debian's mosquitto-clients; scripts/test-all.sh installs it)");
    assert!(status.success(), "mosquitto_pub --cafile DATA_DIR/tls/cert.pem");
    let records = read_all(&client, "sensors.tls", silt_client::FetchFrom::Earliest).await;
    assert_eq!(records[0].value, "embedded over TLS");
}
