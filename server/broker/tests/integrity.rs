//! Storage faults are found, never served as a shorter whole log (issue 14, point 1): after a
//! SIGKILL, the tail of sled's log file is cut off, as a torn write or a lost page would; the
//! restarted broker and `silt-broker check` either find every acknowledged record, or say
//! exactly which acknowledged offsets are gone, and the partition refuses produces and reads
//! of that range with a typed error while it serves everything before it.

mod support;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use silt_client::{ErrorCode, FetchFrom};
use silt_wire::{Request, Response};
use support::{batch_of, broker_bin, create_topic, produce, read_all, topic_db_dir, BrokerProcess};

/// Acknowledged records before the kill: 200 batches of 100.
const RECORDS: u64 = 20_000;

/// `silt-broker check --data-dir DATA`: its exit code and stdout.
fn check(data: &Path) -> (Option<i32>, String) {
    let out = Command::new(broker_bin())
        .args(["check", "--data-dir"])
        .arg(data)
        .output()
        .expect("running silt-broker check");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn code(r: &Result<(Response, Bytes), silt_client::ClientError>) -> Option<ErrorCode> {
    match r {
        Err(silt_client::ClientError::Broker { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_short_is_reported_and_never_served_as_whole() {
    let mut detected = 0;
    // Cuts of sled's log, which holds where each batch is (its newest writes are not always
    // at the end of the file, as it reuses segments, so a small cut may take only older,
    // rewritten state), and of the batch file, whose end holds the newest batches.
    for (file, eighths) in [("db", 2), ("db", 5), ("batches", 1)] {
        let mut broker = BrokerProcess::start(&[]).await;
        let client = broker.client().await;
        create_topic(&client, "cut", 1).await;
        // Values that do not compress, so the log is as long as the acceptance check's.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let values: Vec<String> = (0..RECORDS)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("reading-{i:08}-{x:016x}{:016x}", x.rotate_left(17))
            })
            .collect();
        produce(&client, "cut", 0, &values, 100).await;
        drop(client);
        broker.kill();
        let data = broker.data_dir();
        let (clean, report) = check(&data);
        assert_eq!(clean, Some(0), "a clean data directory: {report}");

        let log = match file {
            "db" => topic_db_dir(&data, "cut").join("db"),
            _ => {
                let files = std::fs::read_dir(topic_db_dir(&data, "cut").join("files").join("0")).unwrap();
                let files: Vec<_> = files.map(|e| e.unwrap().path()).collect();
                assert_eq!(files.len(), 1, "one batch file: {files:?}");
                files[0].clone()
            }
        };
        let len = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len - len * eighths / 8).unwrap();
        let (code_after, report) = check(&data);

        broker.restart().await;
        let client = broker.client().await;
        let info = client.describe_topic("cut").await.unwrap();
        let p = &info.partitions[0];
        match p.lost {
            None => {
                assert_eq!(file, "db", "cutting the batch file always takes acknowledged batches");
                assert_eq!(p.high_watermark, RECORDS, "nothing lost, so nothing may be missing");
                assert_eq!(code_after, Some(0), "{report}");
                let served = read_all(&client, "cut", FetchFrom::Earliest).await;
                assert!(served.iter().map(|r| &r.value).eq(values.iter()));
            }
            Some((from, to)) => {
                detected += 1;
                assert_eq!((from, to), (p.high_watermark, RECORDS), "the loss is exactly what is missing");
                assert_eq!(code_after, Some(1), "{report}");
                assert!(
                    report.contains(&format!("LOST cut/0: acknowledged offsets {from}..{RECORDS}")),
                    "{report}"
                );
                let produce = client
                    .request(
                        &Request::Produce { topic: "cut".into(), partition: 0 },
                        batch_of(&["x"], 1).into(),
                    )
                    .await;
                assert_eq!(code(&produce), Some(ErrorCode::DataLoss), "{produce:?}");
                let fetch = |at: u64| Request::Fetch {
                    topic: "cut".into(),
                    partition: 0,
                    from: FetchFrom::Offset(at),
                    max_bytes: 1 << 20,
                    max_wait_ms: 0,
                    processor: None,
                };
                let fetched = client.request(&fetch(from), Bytes::new()).await;
                assert_eq!(code(&fetched), Some(ErrorCode::DataLoss), "{fetched:?}");
                assert!(
                    client.request(&fetch(0), Bytes::new()).await.is_ok(),
                    "what is still held is served"
                );
                let metrics = support::metrics_text(broker.admin).await;
                let lost = format!(
                    "silt_partition_lost_records{{partition=\"0\",topic=\"cut\"}} {}",
                    RECORDS - from
                );
                assert!(metrics.contains(&lost), "{lost} not in the metrics");
                accept_the_loss(&mut broker, &values, from).await;
            }
        }
        broker.terminate(std::time::Duration::from_secs(20)).await;
    }
    assert!(detected > 0, "no cut lost anything: the test did not exercise detection");
}

/// `silt topic repair`: a report changes nothing; accepting the loss of `from..RECORDS` lets
/// readers go on past it and produces after it (offsets are never reused), is audited and
/// counted, and holds across a restart with a clean `silt-broker check`.
async fn accept_the_loss(broker: &mut BrokerProcess, values: &[String], from: u64) {
    let client = broker.client().await;
    let report = client.repair_partition("cut", 0, false).await.unwrap();
    let ranges = |r: &silt_wire::RepairInfo| r.damaged.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>();
    assert_eq!((ranges(&report), report.accepted), (vec![(from, RECORDS)], false));
    assert!(
        client.describe_topic("cut").await.unwrap().partitions[0].lost.is_some(),
        "a report changes nothing"
    );

    let repaired = client.repair_partition("cut", 0, true).await.unwrap();
    assert_eq!((ranges(&repaired), repaired.accepted), (vec![(from, RECORDS)], true));
    let p = client.describe_topic("cut").await.unwrap().partitions[0].clone();
    assert_eq!((p.lost, p.accepted_losses, p.high_watermark), (None, vec![(from, RECORDS)], RECORDS));
    let new = vec!["after the repair".to_string()];
    produce(&client, "cut", 0, &new, 1).await;
    let after_loss = read_all(&client, "cut", FetchFrom::Offset(from)).await;
    assert_eq!(
        after_loss.iter().map(|r| (r.offset, r.value.as_str())).collect::<Vec<_>>(),
        [(RECORDS, "after the repair")]
    );
    let all = read_all(&client, "cut", FetchFrom::Earliest).await;
    let expected: Vec<&String> = values[..from as usize].iter().chain(&new).collect();
    assert!(all.iter().map(|r| &r.value).eq(expected), "what was kept, then the new record");

    let metrics = support::metrics_text(broker.admin).await;
    let accepted =
        format!("silt_accepted_loss_records_total{{partition=\"0\",topic=\"cut\"}} {}", RECORDS - from);
    assert!(metrics.contains(&accepted), "{accepted} not in the metrics");
    assert!(metrics.contains("silt_partition_lost_records{partition=\"0\",topic=\"cut\"} 0"));
    support::await_audit(&client, "the repair", |e| {
        e["operation"] == "repair-partition" && e["outcome"] == "ok" && e["resource"] == "topic:cut/0"
    })
    .await;
    drop(client);

    broker.terminate(std::time::Duration::from_secs(20)).await;
    let (clean, report) = check(&broker.data_dir());
    assert_eq!(clean, Some(0), "{report}");
    assert!(report.contains(&format!("accepted loss of offsets {from}..{RECORDS}")), "{report}");
    broker.restart().await;
    let client = broker.client().await;
    let p = client.describe_topic("cut").await.unwrap().partitions[0].clone();
    assert_eq!((p.lost, p.accepted_losses, p.high_watermark), (None, vec![(from, RECORDS)], RECORDS + 1));
}

/// Flips one byte at the end of the middle stored batch of `topic`'s partition 0, in the
/// store under a stopped broker's data directory; returns the offsets the batch held.
fn damage_middle_batch(data: &Path, topic: &str) -> (u64, u64) {
    let db = sled::open(topic_db_dir(data, topic)).expect("opening the stopped broker's store");
    let prefix = format!("batches/{topic}\0");
    let name =
        db.tree_names().into_iter().find(|n| n.starts_with(prefix.as_bytes())).expect("the batches tree");
    let tree = db.open_tree(name).unwrap();
    let keys: Vec<u64> =
        tree.iter().keys().map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap())).collect();
    let (from, to) = (keys[keys.len() / 2], keys[keys.len() / 2 + 1]);
    let mut value = tree.get(from.to_be_bytes()).unwrap().unwrap().to_vec();
    let last = value.len() - 1;
    value[last] ^= 0x10;
    tree.insert(from.to_be_bytes(), value).unwrap();
    db.flush().unwrap();
    (from, to)
}

/// Waits until the broker's metrics hold the line `line` exactly.
async fn await_metric(admin: std::net::SocketAddr, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !support::metrics_text(admin).await.lines().any(|l| l == line) {
        assert!(std::time::Instant::now() < deadline, "no metric line {line:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The background scrub finds a batch damaged in the middle of a partition, which neither the
/// start (it reads the first and last batch) nor any reader has met, and counts it; after the
/// loss is accepted, its next pass finds the partition whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_damage_no_reader_met() {
    let config = "scrub_bytes_per_s = 1000000000\nscrub_interval_ms = 200\n";
    let mut broker = support::BrokerProcess::start_with_config(config, &[]).await;
    let client = broker.client().await;
    create_topic(&client, "cold", 1).await;
    let values: Vec<String> = (0..1000).map(|i| format!("cold reading {i}")).collect();
    produce(&client, "cold", 0, &values, 100).await;
    await_metric(broker.admin, "silt_partition_scrub_damage{partition=\"0\",topic=\"cold\"} 0").await;
    drop(client);
    broker.terminate(std::time::Duration::from_secs(20)).await;

    let (from, to) = damage_middle_batch(&broker.data_dir(), "cold");
    broker.restart().await;
    await_metric(broker.admin, "silt_partition_scrub_damage{partition=\"0\",topic=\"cold\"} 1").await;
    let metrics = support::metrics_text(broker.admin).await;
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("silt_storage_faults_total{kind=\"scrub\"}") && !l.ends_with(" 0")));

    let client = broker.client().await;
    let repair = client.repair_partition("cold", 0, true).await.unwrap();
    let ranges: Vec<(u64, u64)> = repair.damaged.iter().map(|d| (d.from, d.to)).collect();
    assert_eq!(ranges, [(from, to)]);
    await_metric(broker.admin, "silt_partition_scrub_damage{partition=\"0\",topic=\"cold\"} 0").await;
    let served = read_all(&client, "cold", FetchFrom::Earliest).await;
    let expected: Vec<&String> = values[..from as usize].iter().chain(&values[to as usize..]).collect();
    assert!(served.iter().map(|r| &r.value).eq(expected));
    broker.terminate(std::time::Duration::from_secs(20)).await;
}

/// A topic's database is a failure boundary: when sled cannot open it, the broker starts, the
/// other topics serve, the topic reports every acknowledged record of each partition as lost
/// and refuses reads with a typed error, and `silt topic repair --accept-loss` gives it an
/// empty database whose offsets continue after what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_database_does_not_open_stops_alone() {
    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "gone", 2).await;
    create_topic(&client, "kept", 1).await;
    let values: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    produce(&client, "gone", 0, &values, 100).await;
    produce(&client, "gone", 1, &values[..200], 100).await;
    produce(&client, "kept", 0, &values, 100).await;
    drop(client);
    broker.terminate(std::time::Duration::from_secs(20)).await;
    // sled panics or fails on many kinds of damage to its files as it opens them; a
    // configuration file of garbage is one that always does.
    std::fs::write(topic_db_dir(&broker.data_dir(), "gone").join("conf"), b"not a sled configuration")
        .unwrap();
    let (clean, report) = check(&broker.data_dir());
    assert_eq!(clean, Some(1), "{report}");
    assert!(report.contains("LOST gone/0: acknowledged offsets 0..300"), "{report}");

    broker.restart().await;
    let client = broker.client().await;
    let kept = read_all(&client, "kept", FetchFrom::Earliest).await;
    assert!(kept.iter().map(|r| &r.value).eq(values.iter()), "the other topic serves");
    let info = client.describe_topic("gone").await.unwrap();
    let lost: Vec<_> = info.partitions.iter().map(|p| p.lost).collect();
    assert_eq!(lost, [Some((0, 300)), Some((0, 200))]);
    let fetch = Request::Fetch {
        topic: "gone".into(),
        partition: 1,
        from: FetchFrom::Offset(0),
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        processor: None,
    };
    let refused = client.request(&fetch, Bytes::new()).await;
    assert_eq!(code(&refused), Some(ErrorCode::DataLoss), "{refused:?}");

    let repaired = client.repair_partition("gone", 0, true).await.unwrap();
    assert!(repaired.accepted, "{repaired:?}");
    assert_eq!(repaired.accepted_losses, [(0, 300)]);
    let info = client.describe_topic("gone").await.unwrap();
    let state: Vec<_> =
        info.partitions.iter().map(|p| (p.lost, p.accepted_losses.clone(), p.high_watermark)).collect();
    assert_eq!(state, [(None, vec![(0, 300)], 300), (None, vec![(0, 200)], 200)], "both partitions move on");
    produce(&client, "gone", 1, &["after".to_string()], 1).await;
    let after = read_all(&client, "gone", FetchFrom::Earliest).await;
    assert_eq!(after.iter().map(|r| (r.offset, r.value.as_str())).collect::<Vec<_>>(), [(200, "after")]);
    let metrics = support::metrics_text(broker.admin).await;
    assert!(
        metrics.contains("silt_accepted_loss_records_total{partition=\"1\",topic=\"gone\"} 200"),
        "{metrics}"
    );
    drop(client);
    broker.terminate(std::time::Duration::from_secs(20)).await;
    let (clean, report) = check(&broker.data_dir());
    assert_eq!(clean, Some(0), "{report}");
}

/// The metadata database (topics, principals, offsets) is no topic's: one sled cannot open is
/// restored from the copies the broker keeps beside it, and everything serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_database_that_does_not_open_is_restored_from_its_copies() {
    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "m", 2).await;
    let values: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    produce(&client, "m", 0, &values, 100).await;
    produce(&client, "m", 1, &values[..100], 100).await;
    drop(client);
    broker.terminate(std::time::Duration::from_secs(20)).await;
    std::fs::write(broker.data_dir().join("log").join("conf"), b"not a sled configuration").unwrap();
    let (clean, report) = check(&broker.data_dir());
    assert_eq!(clean, Some(1), "{report}");
    assert!(report.contains("restore it from its copies"), "{report}");

    broker.restart().await;
    // The admin token works: principals came back with the topics.
    let client = broker.client().await;
    let served = read_all(&client, "m", FetchFrom::Earliest).await;
    assert_eq!(served.len(), 400, "both partitions serve everything");
    let info = client.describe_topic("m").await.unwrap();
    assert!(info.partitions.iter().all(|p| p.lost.is_none()), "{info:?}");
    produce(&client, "m", 1, &["after".to_string()], 1).await;
    let metrics = support::metrics_text(broker.admin).await;
    assert!(metrics.contains("silt_storage_faults_total{kind=\"metadata\"} 1"), "{metrics}");
    drop(client);
    broker.terminate(std::time::Duration::from_secs(20)).await;
    let (clean, report) = check(&broker.data_dir());
    assert_eq!(clean, Some(0), "the restored store is clean: {report}");
    let aside = std::fs::read_dir(broker.data_dir().join("log").join("damaged")).unwrap().count();
    assert_eq!(aside, 1, "sled's files of the broken database are kept aside");
}
