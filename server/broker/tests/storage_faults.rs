//! A campaign of storage faults (issue 14, point 1): acknowledged records are produced once to
//! two topics and the broker is killed; then, in each trial, a copy of its data directory gets
//! one fault, in turn in the log file of topic `f`'s sled database (where each batch is), its
//! partition's batch file (the bytes), or the log file of the metadata database: the tail cut
//! off by 512 B to 32 KiB, as a torn write or lost pages would, or one bit flipped anywhere. `silt-broker check` runs on
//! it, and the broker is started on it and read from.
//!
//! The broker must start in every trial and serve the other topic, `g`, whole: a topic's
//! database is a failure boundary. Topic `f` must end one of five ways, none of them silent:
//! every acknowledged record served byte for byte (`whole`), also after the broker restored
//! its metadata database from the copies it keeps, which the check names (`restored`); the
//! partition reports exactly the acknowledged range it lost and serves everything before it
//! (`reported`); a batch that fails its checksum is refused with a typed error and named by
//! the check (`corrupt`); or sled cannot open the topic's database, and the topic reports all
//! it acknowledged as lost and refuses reads with a typed error (`unopenable`). Serving fewer records than were
//! acknowledged without saying so, or any wrong byte, fails the test. Each damaged trial then
//! accepts the loss (`silt topic repair --accept-loss`) and reads the partition again: every
//! offset must then be served right or lie in the accepted loss.
//!
//! `SILT_FAULT_TRIALS` sets the number of trials (default 6: each fault in each file) and
//! `SILT_FAULT_SEED` the seed; `scripts/storage-faults.sh` runs a long campaign. The last line
//! printed is the tally as JSON.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use silt_client::{Client, ErrorCode, FetchFrom};
use silt_wire::batch::{decompress, split_batches, BatchView};
use silt_wire::{Request, Response};
use support::{
    broker_bin, create_topic, free_tcp_port, free_udp_port, produce, read_all, BrokerProcess, Rng,
};

/// Acknowledged records in the damaged topic's partition: 500 batches of 100.
const RECORDS: u64 = 50_000;
/// Acknowledged records in the other topic, which every trial must serve whole.
const OTHER_RECORDS: u64 = 2_000;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The one batch file of partition 0 of the topic whose database is in `topic_dir`.
fn batch_file(topic_dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> =
        std::fs::read_dir(topic_dir.join("files").join("0")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// One fault, applied to one file: sled's log or the batch file.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Cut this many bytes off the end.
    Truncate(u64),
    /// Flip this bit (an index into the file's bits).
    Flip(u64),
}

fn apply(fault: Fault, log: &Path) {
    let len = std::fs::metadata(log).unwrap().len();
    match fault {
        Fault::Truncate(cut) => {
            std::fs::OpenOptions::new().write(true).open(log).unwrap().set_len(len - cut.min(len)).unwrap()
        }
        Fault::Flip(bit) => {
            let mut bytes = std::fs::read(log).unwrap();
            let at = (bit / 8) as usize % bytes.len();
            bytes[at] ^= 1 << (bit % 8);
            std::fs::write(log, bytes).unwrap();
        }
    }
}

/// What a fetch loop from offset 0 got: the records served (offset, value) until the end or
/// the first refusal, and the refusal.
async fn fetch_all(client: &Client, end: u64) -> (Vec<(u64, Vec<u8>)>, Option<(ErrorCode, String)>) {
    let mut out = Vec::new();
    let mut next = 0;
    while next < end {
        let request = Request::Fetch {
            topic: "f".into(),
            partition: 0,
            from: FetchFrom::Offset(next),
            max_bytes: 4 << 20,
            max_wait_ms: 0,
            processor: None,
        };
        match client.request(&request, Bytes::new()).await {
            Ok((Response::Fetched { next_offset, .. }, payload)) => {
                for view in split_batches(&payload) {
                    let view = view.expect("a served batch is whole");
                    let plain = decompress(view.as_bytes()).expect("a served batch decompresses");
                    let batch = BatchView::new(&plain).expect("a served batch parses");
                    for r in batch.records().filter(|r| r.offset >= next) {
                        out.push((r.offset, r.value.to_vec()));
                    }
                }
                assert!(next_offset > next, "a fetch made no progress at {next}");
                next = next_offset;
            }
            Ok((other, _)) => panic!("unexpected answer {other:?}"),
            Err(silt_client::ClientError::Broker { code, message }) => return (out, Some((code, message))),
            Err(e) => panic!("fetch at {next}: {e}"),
        }
    }
    (out, None)
}

/// Whether a fetch of `f` at offset 0 is refused because the topic's database does not open.
async fn unopenable(client: &Client) -> bool {
    let request = Request::Fetch {
        topic: "f".into(),
        partition: 0,
        from: FetchFrom::Offset(0),
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        processor: None,
    };
    match client.request(&request, Bytes::new()).await {
        Err(silt_client::ClientError::Broker { code: ErrorCode::DataLoss, message }) => {
            message.contains("database does not open")
        }
        _ => false,
    }
}

/// `silt topic repair --accept-loss` on a damaged partition: afterwards every offset below the
/// acknowledged end is either served with its acknowledged value or in an accepted loss, never
/// both, and nothing is refused.
async fn accept_and_read_on(client: &Client, values: &[String], trial: u64) {
    let repair = client.repair_partition("f", 0, true).await.unwrap();
    assert!(repair.accepted && !repair.damaged.is_empty(), "trial {trial}: {repair:?}");
    let p = client.describe_topic("f").await.unwrap().partitions[0].clone();
    assert_eq!((p.lost, p.high_watermark), (None, RECORDS), "trial {trial}");
    let (served, refused) = fetch_all(client, RECORDS).await;
    assert_eq!(refused, None, "trial {trial}: refused after the repair");
    let mut covered: Vec<(u64, u64)> = p.accepted_losses.clone();
    for (offset, value) in &served {
        assert_eq!(value, values[*offset as usize].as_bytes(), "trial {trial}: a wrong record at {offset}");
        covered.push((*offset, offset + 1));
    }
    covered.sort_unstable();
    let end = covered.iter().try_fold(0, |at, &(from, to)| (from == at).then_some(to));
    assert_eq!(end, Some(RECORDS), "trial {trial}: served and accepted offsets must tile 0..{RECORDS}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_are_found_and_never_served_silently() {
    let trials: u64 = std::env::var("SILT_FAULT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let seed: u64 = std::env::var("SILT_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5117);
    println!("storage fault campaign: {trials} trials, seed {seed}");

    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "f", 1).await;
    let values: Vec<String> =
        (0..RECORDS).map(|i| format!("reading-{i:08}-{:016x}", i.wrapping_mul(seed | 1))).collect();
    produce(&client, "f", 0, &values, 100).await;
    create_topic(&client, "g", 1).await;
    let others: Vec<String> = (0..OTHER_RECORDS).map(|i| format!("other-{i:06}")).collect();
    produce(&client, "g", 0, &others, 100).await;
    drop(client);
    broker.kill();
    let base = broker.data_dir();

    let mut rng = Rng(seed.max(1));
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    // The slowest check and broker start (to ready, or to its failure) of the campaign.
    let mut slowest = (0u64, 0u64);
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_tree(&base, &data);
        // In turn: the topic's sled log (where each batch is), its batch file, the metadata
        // database's log (topics, principals, offsets).
        let topic_dir = support::topic_db_dir(&data, "f");
        let log = match trial % 6 / 2 {
            0 => topic_dir.join("db"),
            1 => batch_file(&topic_dir),
            _ => data.join("log").join("db"),
        };
        let bits = std::fs::metadata(&log).unwrap().len() * 8;
        let fault = if trial % 2 == 0 {
            Fault::Truncate(512 + rng.below(32 * 1024 - 512))
        } else {
            Fault::Flip(rng.below(bits))
        };
        let fault_in = log.strip_prefix(&data).unwrap().to_string_lossy().into_owned();
        let fault = (fault_in, fault);
        apply(fault.1, &log);
        let checking = std::time::Instant::now();
        let check = Command::new(broker_bin()).args(["check", "--data-dir"]).arg(&data).output().unwrap();
        let check_ms = checking.elapsed().as_millis() as u64;
        let report = String::from_utf8_lossy(&check.stdout).into_owned();

        let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let args: Vec<OsString> = vec![
            "--data-dir".into(),
            data.clone().into(),
            "--listen".into(),
            listen.to_string().into(),
            "--admin-listen".into(),
            admin.to_string().into(),
        ];
        let mut b = BrokerProcess::with_args(dir, listen, admin, args);
        let starting = std::time::Instant::now();
        b.spawn();
        let ready = b.try_wait_ready().await;
        let start_ms = starting.elapsed().as_millis() as u64;
        let outcome = match ready {
            Err(why) => {
                panic!("trial {trial} ({fault:?}): the broker did not start ({why}); check said:\n{report}")
            }
            Ok(()) => {
                let client = b.client().await;
                let other = read_all(&client, "g", FetchFrom::Earliest).await;
                assert!(
                    other.iter().map(|r| &r.value).eq(others.iter()),
                    "trial {trial} ({fault:?}): the undamaged topic served {} of {OTHER_RECORDS} records",
                    other.len()
                );
                let p = client.describe_topic("f").await.unwrap().partitions[0].clone();
                let (served, refused) = fetch_all(&client, p.high_watermark).await;
                for (offset, value) in &served {
                    assert_eq!(
                        value,
                        values[*offset as usize].as_bytes(),
                        "trial {trial} ({fault:?}): a wrong record at {offset}"
                    );
                }
                let outcome = match (p.lost, refused) {
                    // The metadata database restored from its copies, which the check named.
                    (None, None) if served.len() as u64 == RECORDS && report.contains("restore it from its copies") => {
                        "restored"
                    }
                    (None, None) if served.len() as u64 == RECORDS => "whole",
                    (Some((from, to)), None) if from == p.high_watermark && to == RECORDS && served.len() as u64 == from => "reported",
                    (Some((0, to)), None) if to == RECORDS && served.is_empty() && unopenable(&client).await => "unopenable",
                    (_, Some((ErrorCode::DataLoss, why))) if why.contains("checksum") || why.contains("orrupt") => "corrupt",
                    (lost, refused) => panic!(
                        "trial {trial} ({fault:?}): served {} of {RECORDS} acknowledged records, lost {lost:?}, refused {refused:?}; check:\n{report}",
                        served.len()
                    ),
                };
                if outcome != "whole" && outcome != "restored" {
                    accept_and_read_on(&client, &values, trial).await;
                }
                let clean = check.status.code() == Some(0);
                assert_eq!(
                    clean,
                    outcome == "whole",
                    "trial {trial} ({fault:?}) was {outcome}, check said:\n{report}"
                );
                b.terminate(std::time::Duration::from_secs(20)).await;
                outcome
            }
        };
        println!("trial {trial}: {fault:?}: {outcome} (check {check_ms} ms, start {start_ms} ms)");
        *tally.entry(outcome).or_default() += 1;
        slowest = (slowest.0.max(check_ms), slowest.1.max(start_ms));
    }
    let tally: serde_json::Map<String, serde_json::Value> =
        tally.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    println!(
        "{}",
        serde_json::json!({
            "trials": trials, "seed": seed, "records": RECORDS, "outcomes": tally,
            "check_ms_max": slowest.0, "start_ms_max": slowest.1,
        })
    );
}
