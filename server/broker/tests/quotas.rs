//! Quotas and fairness (issue 13): clients that ask for fetches and never read the answers hold
//! at most the broker's response budget (`response_bytes_max`), however many they ask for, and
//! the memory comes back when they go; a principal over its produce rate is throttled, not
//! refused; an address over its connection count is refused and audited.

mod support;

use std::time::{Duration, Instant};

use silt_client::FetchFrom;
use silt_wire::Request;
use support::{await_audit, create_topic, produce, read_all, request_frame, BrokerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
/// The smallest budget the broker takes: one largest batch (8 MiB).
const BUDGET: u64 = 8 * MIB;

/// The value of the sample that starts `sample ` in the broker's metrics (0 when absent).
async fn metric(admin: std::net::SocketAddr, sample: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{sample} ")));
    line.map_or(0, |l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() as u64)
}

async fn pending_bytes(admin: std::net::SocketAddr) -> u64 {
    metric(admin, "silt_response_bytes_pending").await
}

/// Random hex of `len` bytes: nothing compresses it.
fn incompressible(x: &mut u64, len: usize) -> String {
    (0..len / 16)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            format!("{x:016x}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_cannot_hold_more_than_the_response_budget() {
    let broker = BrokerProcess::start_with_config(
        &format!("fetch_bytes_max = {MIB}\nresponse_bytes_max = {BUDGET}\n"),
        &[],
    )
    .await;
    let client = broker.client().await;
    create_topic(&client, "big", 1).await;
    // 48 batches of about 1 MiB (random hex: no compression shrinks it): six times the budget.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..48 {
        let batch: Vec<String> = (0..16).map(|_| incompressible(&mut x, 64 * 1024)).collect();
        produce(&client, "big", 0, &batch, 16).await;
    }

    // The slow reader: a fetch of 1 MiB from every offset, 4 per stream on 30 streams, never
    // reading a byte of the answers.
    let raw = broker.raw_connection().await;
    let mut streams = Vec::new();
    for s in 0..30u64 {
        let mut frames = Vec::new();
        for i in 0..4u64 {
            let fetch = Request::Fetch {
                topic: "big".into(),
                partition: 0,
                from: FetchFrom::Offset(((s * 4 + i) % 48) * 16),
                max_bytes: MIB as u32,
                max_wait_ms: 0,
                processor: None,
            };
            frames.extend(request_frame(&fetch, &[]));
        }
        streams.push(raw.send_raw(&frames, true).await);
    }
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        peak = peak.max(pending_bytes(broker.admin).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peak > BUDGET / 2, "the slow reader filled the budget ({peak} bytes held)");
    assert!(peak <= BUDGET, "{peak} response bytes held, over the {BUDGET} budget");

    // Another client still reads (its fetches wait for the budget, not for ever): after the
    // slow reader goes, everything is readable and the memory is back.
    drop(streams);
    raw.conn.close(0u32.into(), b"done");
    let records = read_all(&client, "big", FetchFrom::Earliest).await;
    assert_eq!(records.len(), 48 * 16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending_bytes(broker.admin).await > 0 {
        assert!(Instant::now() < deadline, "the slow reader's bytes were never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Over its produce rate a principal waits and everything it sends is stored; an address over
/// `connections_per_address_max` is refused before the handshake, and the refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_throttle_and_connections_per_address_are_capped() {
    let broker = BrokerProcess::start_with_config(
        "quota_produce_bytes_per_s = 65536\nconnections_per_address_max = 3\n",
        &[],
    )
    .await;
    let client = broker.client().await;
    create_topic(&client, "q", 1).await;
    // 240 KiB in 24 batches: well past the one-second burst.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let values: Vec<String> = (0..24).map(|_| incompressible(&mut x, 10 * 1024)).collect();
    produce(&client, "q", 0, &values, 1).await;
    assert_eq!(read_all(&client, "q", FetchFrom::Earliest).await.len(), 24, "throttled, not refused");
    let throttled = metric(broker.admin, r#"silt_quota_throttled_total{quota="produce_bytes"}"#).await;
    assert!(throttled > 0, "no batch waited for the produce quota");

    // The admin's client is one connection of 127.0.0.1; two more fit, the fourth does not.
    let _second = broker.raw_connection_anonymous().await;
    let _third = broker.raw_connection_anonymous().await;
    let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert()).unwrap();
    let refused = silt_client::Client::connect(config.with_token(broker.admin_token())).await;
    assert!(refused.is_err(), "a fourth connection from one address is refused");
    assert!(metric(broker.admin, r#"silt_connections_refused_total{reason="per_address"}"#).await >= 1);
    // The audit is written asynchronously: wait for the event.
    await_audit(&client, "the refused connection", |e| {
        e["operation"] == "connect" && e["outcome"] == "denied"
    })
    .await;
}

/// A principal named in `[quotas."user:NAME"]` runs under its own rates: here the admin is
/// freed of the produce rate every other principal has, and nothing it sends waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_principal_has_its_own_quota() {
    let broker = BrokerProcess::start_with_config(
        "quota_produce_bytes_per_s = 65536\n[quotas.\"user:admin\"]\nproduce_bytes_per_s = 0\n",
        &[],
    )
    .await;
    let client = broker.client().await;
    create_topic(&client, "q", 1).await;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let values: Vec<String> = (0..24).map(|_| incompressible(&mut x, 10 * 1024)).collect();
    produce(&client, "q", 0, &values, 1).await;
    assert_eq!(read_all(&client, "q", FetchFrom::Earliest).await.len(), 24);
    let throttled = metric(broker.admin, r#"silt_quota_throttled_total{quota="produce_bytes"}"#).await;
    assert_eq!(throttled, 0, "the admin's own rate (none) applies, not everyone's");
}
