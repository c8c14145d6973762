//! `GET /metrics` on the admin port (issue 5, point 1, first part): the Prometheus text of a
//! broker that produced, fetched and ran a processor passes `promtool check metrics`, and its
//! counters and gauges say what happened.

mod support;

use std::time::{Duration, Instant};

use silt_client::{Deployment, FetchFrom, ProcessorState};
use support::{
    abi_module_with, create_topic, produce, read_all, BrokerProcess, COUNTERS, COUNT_BATCH, PASSTHROUGH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics`.
async fn scrape(admin: std::net::SocketAddr) -> String {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text =
        tokio::time::timeout(Duration::from_secs(10), work).await.expect("scrape timed out").expect("scrape");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").expect("HTTP body").1.to_string()
}

/// The value of the sample `name{labels}` (labels as printed, e.g. `topic="in"`).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let want = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

/// promtool (Debian package prometheus, installed by scripts/test-all.sh) accepts the
/// exposition, and the counters match a known workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_the_work() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 2).await;
    let values: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    produce(&client, "in", 1, &values, 25).await;
    assert_eq!(read_all(&client, "in", FetchFrom::Earliest).await.len(), 100);
    let committed = vec![silt_wire::PartitionOffset { topic: "in".into(), partition: 1, offset: 60 }];
    let commit =
        silt_wire::Request::CommitOffsets { group: "readers".into(), member_id: None, offsets: committed };
    client.request(&commit, bytes::Bytes::new()).await.unwrap();
    let d = Deployment {
        name: "copy".into(),
        input: "in".into(),
        output: "out".into(),
        params: vec![],
        from: None,
        limits: Default::default(),
    };
    // A copy that also reports counters (silt_counters), so their gauge is checked too.
    let copy = abi_module_with(COUNTERS, &format!("{COUNT_BATCH} {PASSTHROUGH}"));
    client.deploy_processor(d, copy).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = client.processor_status("copy").await.unwrap();
        if info.state == ProcessorState::Running && info.lag == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "processor did not catch up: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let text = scrape(broker.admin).await;
    let file = broker.dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let checked = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool not found: install Debian's prometheus package (scripts/test-all.sh does)");
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    assert_eq!(sample(&text, "silt_records_in_total", r#"topic="in""#), Some(100.0));
    assert!(sample(&text, "silt_bytes_in_total", r#"topic="in""#).unwrap() > 100.0 * 3.0);
    assert!(sample(&text, "silt_records_out_total", r#"topic="in""#).unwrap() >= 100.0);
    assert_eq!(sample(&text, "silt_partition_high_watermark", r#"partition="1",topic="in""#), Some(100.0));
    assert_eq!(sample(&text, "silt_partition_high_watermark", r#"partition="0",topic="in""#), Some(0.0));
    assert_eq!(
        sample(&text, "silt_produce_ack_duration_seconds_count", ""),
        Some(4.0),
        "one ack per batch of 25"
    );
    assert!(sample(&text, "silt_flush_duration_seconds_count", "").unwrap() >= 1.0);
    assert!(sample(&text, "silt_connections_open", "").unwrap() >= 1.0);
    assert_eq!(sample(&text, "silt_processor_events_in_total", r#"processor="copy""#), Some(100.0));
    assert_eq!(sample(&text, "silt_processor_events_out_total", r#"processor="copy""#), Some(100.0));
    assert_eq!(sample(&text, "silt_processor_state", r#"processor="copy",state="running""#), Some(1.0));
    assert_eq!(sample(&text, "silt_processor_state", r#"processor="copy",state="failed""#), Some(0.0));
    assert_eq!(sample(&text, "silt_processor_lag_records", r#"processor="copy""#), Some(0.0));
    assert_eq!(sample(&text, "silt_processor_counts", r#"counter="batches",processor="copy""#), Some(4.0));
    assert_eq!(sample(&text, "silt_processor_counts", r#"counter="skipped",processor="copy""#), Some(0.0));
    assert!(
        sample(&text, "silt_processor_batch_duration_seconds_count", r#"processor="copy""#).unwrap() >= 4.0
    );
    assert!(sample(&text, "silt_requests_total", r#"request="produce""#).unwrap() >= 4.0);
}

/// One `GET PATH` with `headers`; the status line and the body.
async fn get(admin: std::net::SocketAddr, path: &str, headers: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connecting to the admin port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await.unwrap().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// With `metrics_require_token`, `/metrics` answers only a bearer token of a principal that
/// may describe everything; `/health` stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token() {
    let broker = BrokerProcess::start_with_config("metrics_require_token = true\n", &[]).await;
    let client = broker.client().await;
    assert!(get(broker.admin, "/health", "").await.0.contains("200"));
    assert!(get(broker.admin, "/metrics", "").await.0.contains("401"));
    assert!(get(broker.admin, "/metrics", "Authorization: Bearer silt_00_11\r\n").await.0.contains("401"));
    client.add_user("viewer", "correct-horse-battery").await.unwrap();
    let (_, weak) = client.create_token("viewer", "t", None).await.unwrap();
    let (status, body) = get(broker.admin, "/metrics", &format!("Authorization: Bearer {weak}\r\n")).await;
    assert!(status.contains("401") && body.contains("may not describe"), "{status} {body}");
    let admin = broker.admin_token();
    let (status, body) = get(broker.admin, "/metrics", &format!("Authorization: Bearer {admin}\r\n")).await;
    assert!(status.contains("200") && body.contains("silt_connections_open"), "{status}");
}
