//! The broker binary's life and its admin surface: clean shutdown on SIGTERM with everything
//! flushed, configuration from a TOML file (and its errors), topic create / list / describe /
//! delete with their error codes, retention by size and by age, and fetch by timestamp.

mod support;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use silt_client::{Client, ClientError, ErrorCode, FetchFrom, Producer, ProducerConfig, ProducerRecord};
use support::{
    create_topic, free_tcp_port, free_udp_port, produce, read_all, write_file, BrokerProcess, REQUEST_TIMEOUT,
};

/// Bound on a clean shutdown: the broker waits at most 2 s for connections to drain.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

async fn stored_values(client: &Client, topic: &str, from: FetchFrom) -> Vec<String> {
    read_all(client, topic, from).await.into_iter().map(|r| r.value).collect()
}

/// SIGTERM closes client connections with a reason, flushes, and exits 0; records acknowledged
/// before it (with `--fsync never`, so only the shutdown flush makes them durable) are all
/// there after a restart. SIGINT exits 0 as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_zero() {
    let mut broker = BrokerProcess::start(&["--fsync", "never"]).await;
    let client = broker.client().await;
    create_topic(&client, "kept", 2).await;
    produce(&client, "kept", 0, &numbered("a", 500), 100).await;
    produce(&client, "kept", 1, &numbered("b", 500), 100).await;
    let raw = broker.raw_connection().await;

    let status = broker.terminate(EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; log:\n{}", broker.log());
    let log = broker.log();
    assert!(log.contains("shutting down") && log.contains("silt-broker stopped"), "log:\n{log}");
    match tokio::time::timeout(REQUEST_TIMEOUT, raw.conn.closed()).await.expect("connection closed") {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 1, "SHUTDOWN close code");
            assert_eq!(&close.reason[..], b"broker shutting down");
        }
        other => panic!("expected an application close with a reason, got {other:?}"),
    }

    broker.restart().await;
    let client = broker.client().await;
    let records = read_all(&client, "kept", FetchFrom::Earliest).await;
    let p0: Vec<String> = records.iter().filter(|r| r.partition == 0).map(|r| r.value.clone()).collect();
    let p1: Vec<String> = records.iter().filter(|r| r.partition == 1).map(|r| r.value.clone()).collect();
    assert_eq!(p0, numbered("a", 500));
    assert_eq!(p1, numbered("b", 500));

    // SIGINT (Ctrl-C) is a clean shutdown too.
    drop(client);
    let status = broker.signal("INT", EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGINT; log:\n{}", broker.log());
}

/// `--config FILE` is honoured: the broker listens where the file says; a flag overrides the
/// file; the data dir from the file keeps its data across the two starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_addresses_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let data = dir.path().join("data");
    let toml = format!(
        "data_dir = {:?}\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nfsync = \"every:50\"\nlog_format = \"json\"\n",
        data.to_str().unwrap()
    );
    let config = write_file(dir.path(), "broker.toml", &toml);
    let args: Vec<OsString> = vec!["--config".into(), config.clone().into()];
    let mut broker = BrokerProcess::with_args(dir, listen, admin, args);
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    create_topic(&client, "configured", 1).await;
    produce(&client, "configured", 0, &numbered("c", 10), 10).await;
    let log = broker.log();
    assert!(log.contains("\"fsync\":\"Every(50)\""), "JSON logs with the file's fsync policy:\n{log}");
    drop(client);
    // `every:50` acknowledges before flushing, so stop cleanly: the shutdown flush keeps them.
    assert_eq!(broker.terminate(EXIT_TIMEOUT).await.code(), Some(0));

    // The same file, with --listen on the command line: the flag wins, the rest still applies.
    let other: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let args: Vec<OsString> =
        vec!["--config".into(), config.into(), "--listen".into(), other.to_string().into()];
    broker.reconfigure(other, admin, args);
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    assert_eq!(stored_values(&client, "configured", FetchFrom::Earliest).await, numbered("c", 10));
}

/// Runs the broker binary with `args` until it exits (bounded) and returns (code, stderr).
async fn broker_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(support::broker_bin())
        .args(args)
        .current_dir(dir.path())
        .env_remove("SILT_CONFIG")
        .env_remove("SILT_LISTEN")
        .env_remove("SILT_DATA_DIR")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(EXIT_TIMEOUT, run)
        .await
        .expect("the broker exits")
        .expect("running silt-broker");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A config file with an unknown key, or a bad value, stops startup with exit 1 and a message
/// naming the file and the problem; a bad flag is a usage error, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_one_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    let typo = write_file(dir.path(), "typo.toml", "lissen = \"127.0.0.1:1\"\n");
    let (code, stderr) = broker_exit(&["--config", typo.to_str().unwrap(), "--data-dir", data_arg]).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("unknown field") && stderr.contains("lissen"), "stderr: {stderr}");
    assert!(stderr.contains("typo.toml"), "names the file: {stderr}");

    let bad_value = write_file(dir.path(), "fsync.toml", "fsync = \"sometimes\"\n");
    let (code, stderr) =
        broker_exit(&["--config", bad_value.to_str().unwrap(), "--data-dir", data_arg]).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("sometimes") && stderr.contains("every:<milliseconds>"), "stderr: {stderr}");

    let missing = dir.path().join("missing.toml");
    let (code, stderr) = broker_exit(&["--config", missing.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("missing.toml"), "stderr: {stderr}");

    let (code, stderr) = broker_exit(&["--listen", "not-an-address"]).await;
    assert_eq!(code, Some(2), "usage error; stderr: {stderr}");
    assert!(stderr.contains("--listen"), "stderr: {stderr}");
    assert!(!data.exists(), "nothing was started");
}

fn broker_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Broker { code, .. } => Some(*code),
        ClientError::UnknownTopic(_) => Some(ErrorCode::UnknownTopic),
        _ => None,
    }
}

/// Topic admin through the client: create, list, describe and delete work, and each misuse is
/// refused with its own error code and a message that says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_create_list_describe_delete() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;

    let created =
        client.create_topic("plant.temp", 3, Some(86_400_000), Some(1 << 30)).await.expect("create");
    assert_eq!(created.name, "plant.temp");
    assert_eq!((created.retention_ms, created.retention_bytes), (Some(86_400_000), Some(1 << 30)));
    assert_eq!(created.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(created
        .partitions
        .iter()
        .all(|p| p.high_watermark == 0 && p.size_bytes == 0 && p.log_start == 0));
    create_topic(&client, "plant.humidity", 1).await;

    let mut names: Vec<String> =
        client.list_topics().await.expect("list").into_iter().map(|t| t.name).collect();
    names.sort();
    assert_eq!(names, vec!["plant.humidity", "plant.temp"]);

    produce(&client, "plant.temp", 2, &numbered("t", 25), 10).await;
    let described = client.describe_topic("plant.temp").await.expect("describe");
    let p2 = &described.partitions[2];
    assert_eq!((p2.log_start, p2.high_watermark, p2.batches), (0, 25, 3));
    assert!(p2.size_bytes > 25 * 4, "size counts the stored batches: {}", p2.size_bytes);
    assert_eq!(described.partitions[0].high_watermark, 0);

    let expect_refusal =
        |result: Result<silt_client::TopicInfo, ClientError>, code: ErrorCode, words: &[&str]| {
            let err = result.expect_err("refused");
            assert_eq!(broker_code(&err), Some(code), "{err:?}");
            let text = err.to_string();
            for w in words {
                assert!(text.contains(w), "{text:?} should mention {w:?}");
            }
        };
    expect_refusal(
        client.create_topic("plant.temp", 1, None, None).await,
        ErrorCode::TopicExists,
        &["plant.temp", "already exists"],
    );
    expect_refusal(
        client.create_topic("plant/temp", 1, None, None).await,
        ErrorCode::InvalidRequest,
        &["'/'"],
    );
    expect_refusal(client.create_topic("", 1, None, None).await, ErrorCode::InvalidRequest, &["1 to 200"]);
    let long = "x".repeat(201);
    expect_refusal(client.create_topic(&long, 1, None, None).await, ErrorCode::InvalidRequest, &["1 to 200"]);
    expect_refusal(
        client.create_topic("zero", 0, None, None).await,
        ErrorCode::InvalidRequest,
        &["partitions"],
    );
    expect_refusal(client.create_topic("many", 1025, None, None).await, ErrorCode::InvalidRequest, &["1024"]);
    expect_refusal(
        client.describe_topic("plant.light").await,
        ErrorCode::UnknownTopic,
        &["plant.light", "does not exist"],
    );

    client.delete_topic("plant.temp").await.expect("delete");
    let err = client.delete_topic("plant.temp").await.expect_err("already gone");
    assert_eq!(broker_code(&err), Some(ErrorCode::UnknownTopic), "{err:?}");
    expect_refusal(client.describe_topic("plant.temp").await, ErrorCode::UnknownTopic, &["plant.temp"]);
    let names: Vec<String> = client.list_topics().await.expect("list").into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["plant.humidity"]);

    // A topic created again under a deleted name starts empty.
    let again = client.create_topic("plant.temp", 3, None, None).await.expect("create again");
    assert!(again.partitions.iter().all(|p| p.high_watermark == 0 && p.batches == 0), "{again:?}");
    assert!(stored_values(&client, "plant.temp", FetchFrom::Earliest).await.is_empty());
}

/// Produces each value as its own batch, so retention has batches to drop.
async fn produce_batches(client: &Client, topic: &str, values: &[String]) {
    for v in values {
        produce(client, topic, 0, std::slice::from_ref(v), 1).await;
    }
}

/// Polls `describe` until `done` holds for partition 0, failing after `within`.
async fn wait_for_partition(
    client: &Client,
    topic: &str,
    within: Duration,
    done: impl Fn(&silt_wire::PartitionInfo) -> bool,
) -> silt_wire::PartitionInfo {
    let started = Instant::now();
    loop {
        let info = client.describe_topic(topic).await.expect("describe").partitions.remove(0);
        if done(&info) {
            return info;
        }
        assert!(started.elapsed() < within, "{topic}: condition not reached within {within:?}: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retention by size drops the oldest batches until the partition fits, keeping a suffix of
/// the log; when even one batch is too big it still keeps the newest. Retention by age drops
/// batches older than the limit, again never the newest. A fetch from offset 0 afterwards
/// starts at the new log start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_batches_but_never_the_newest() {
    // Retention runs every 100 ms (the shortest the config allows) instead of every 10 s.
    let broker = BrokerProcess::start_with_config("retention_check_ms = 100\n", &[]).await;
    let client = broker.client().await;
    let payload = |i: usize| format!("{i:03}-{}", "x".repeat(200));
    let sent: Vec<String> = (0..10).map(payload).collect();

    // Measure one batch, then allow three and a half of them.
    client.create_topic("probe", 1, None, None).await.expect("create");
    produce_batches(&client, "probe", &sent[..1]).await;
    let batch_bytes = client.describe_topic("probe").await.unwrap().partitions[0].size_bytes;
    let limit = batch_bytes * 7 / 2;

    client.create_topic("by-size", 1, None, Some(limit)).await.expect("create");
    client.create_topic("tiny", 1, None, Some(1)).await.expect("create");
    client.create_topic("by-age", 1, Some(300), None).await.expect("create");
    for topic in ["by-size", "tiny", "by-age"] {
        produce_batches(&client, topic, &sent).await;
    }

    let within = Duration::from_secs(10);
    let info = wait_for_partition(&client, "by-size", within, |p| p.size_bytes <= limit).await;
    assert_eq!((info.batches, info.log_start, info.high_watermark), (3, 7, 10), "{info:?}");
    assert_eq!(stored_values(&client, "by-size", FetchFrom::Earliest).await, sent[7..].to_vec());
    assert_eq!(
        stored_values(&client, "by-size", FetchFrom::Offset(0)).await,
        sent[7..].to_vec(),
        "clamped to log start"
    );

    // Not `log_start > 0`: a retention pass while the batches were still arriving moves it
    // before the last ones are stored, and the next pass is what leaves one batch.
    let info = wait_for_partition(&client, "tiny", within, |p| p.batches == 1).await;
    assert_eq!((info.batches, info.log_start, info.high_watermark), (1, 9, 10), "{info:?}");
    assert_eq!(stored_values(&client, "tiny", FetchFrom::Earliest).await, sent[9..].to_vec());

    let info = wait_for_partition(&client, "by-age", within, |p| p.batches == 1).await;
    assert_eq!((info.log_start, info.high_watermark), (9, 10), "{info:?}");
    assert_eq!(stored_values(&client, "by-age", FetchFrom::Earliest).await, sent[9..].to_vec());

    // The partition keeps working after retention: new records follow the old offsets.
    produce_batches(&client, "tiny", &["after".to_string()]).await;
    let records = read_all(&client, "tiny", FetchFrom::Earliest).await;
    assert_eq!(records.last().map(|r| (r.offset, r.value.as_str())), Some((10, "after")));
}

/// A fetch from a timestamp starts at the first record whose event time is at or after it,
/// whether that time falls on a record, between records, inside a batch or past the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_by_timestamp_returns_records_at_or_after_it() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "timed", 1).await;
    // 100 records in batches of 10, event times 1_000_000 ms apart by 1000 ms.
    let base: i64 = 1_700_000_000_000;
    let ts = |i: i64| base + i * 1000;
    let config = ProducerConfig { batch_records_max: 10, ..Default::default() };
    let producer = Producer::new(&client, "timed", config).await.expect("producer");
    for i in 0..100 {
        let value = format!("r{i}");
        let record =
            ProducerRecord { value: value.as_bytes(), timestamp_ms: Some(ts(i)), ..Default::default() };
        producer.send(record).await.expect("send");
    }
    tokio::time::timeout(REQUEST_TIMEOUT, producer.close()).await.expect("close in time").expect("close");

    let expect_from =
        |first: i64| (first..100).map(|i| (i as u64, ts(i), format!("r{i}"))).collect::<Vec<_>>();
    let cases = [
        ("before everything", base - 5_000, 0),
        ("on the first record", ts(0), 0),
        ("on a record inside a batch", ts(37), 37),
        ("between two records", ts(37) + 1, 38),
        ("on a batch's first record", ts(50), 50),
        ("on the last record", ts(99), 99),
        ("past the end", ts(99) + 1, 100),
    ];
    for (what, t, first) in cases {
        let got: Vec<(u64, i64, String)> = read_all(&client, "timed", FetchFrom::Timestamp(t))
            .await
            .into_iter()
            .map(|r| (r.offset, r.timestamp_ms, r.value))
            .collect();
        assert_eq!(got, expect_from(first), "{what} (t = {t})");
    }
}
