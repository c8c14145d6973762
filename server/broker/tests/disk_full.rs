//! A full disk and a failing one (issue 14, point 4). On a 64 MiB tmpfs the test mounts itself,
//! a nearly full disk refuses produces with a retriable `DiskFull`, loses nothing acknowledged,
//! keeps serving reads, and takes produces again on its own once space is freed; with the
//! guard turned off, sled's own `ENOSPC` refuses produces without hanging them, reads serve
//! what was acknowledged or refuse (never a short log), SIGTERM still stops the broker, and
//! every acknowledged record is there after a restart. A failed flush
//! (an injected `EIO`, `SILT_FAILPOINTS`) stops acknowledgements under `always` and `every`.

mod support;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silt_client::{Client, ClientError, Consumer, ConsumerConfig, ErrorCode, FetchFrom};
use silt_wire::{Request, Response};
use support::{batch_of, create_topic, free_tcp_port, free_udp_port, metrics_text, read_all, BrokerProcess};
use tempfile::TempDir;

/// The filesystem the broker gets: its default floor is then 4 MiB.
const DISK_MIB: u64 = 64;
/// Records per batch, each of `VALUE_BYTES` bytes that do not compress.
const RECORDS_PER_BATCH: usize = 50;
const VALUE_BYTES: usize = 1000;

/// A tmpfs of `DISK_MIB` mounted on a temporary directory; unmounted when dropped.
struct SmallDisk {
    mount: TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root): the test then says it was skipped.
    fn mount() -> Option<SmallDisk> {
        let mount = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m"), "tmpfs"])
            .arg(mount.path())
            .status()
            .expect("running mount");
        if !status.success() {
            let uid = Command::new("id").arg("-u").output().expect("running id").stdout;
            assert_ne!(String::from_utf8_lossy(&uid).trim(), "0", "root could not mount a tmpfs");
            eprintln!("skipped: mounting a small filesystem needs root");
            return None;
        }
        Some(SmallDisk { mount })
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn free(&self) -> u64 {
        silt_storage::space::space(self.path()).expect("statvfs").free
    }

    /// Takes all but `leave` free bytes with a file of its own.
    fn fill_leaving(&self, leave: u64) {
        let take = self.free().saturating_sub(leave);
        let status = Command::new("fallocate")
            .args(["-l", &take.to_string()])
            .arg(self.path().join("filler"))
            .status()
            .expect("running fallocate");
        assert!(status.success(), "fallocate of {take} bytes failed");
    }

    fn free_filler(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("removing the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.mount.path()).status();
    }
}

/// A broker whose data directory is (a symbolic link to) `disk`, with `toml` as its config.
/// Not started.
fn broker_on(disk: &SmallDisk, toml: &str) -> BrokerProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(disk.path(), dir.path().join("data")).expect("linking the data dir");
    let config = support::write_file(dir.path(), "broker.toml", toml);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let args: Vec<OsString> = vec![
        "--config".into(),
        config.into(),
        "--data-dir".into(),
        dir.path().join("data").into(),
        "--listen".into(),
        listen.to_string().into(),
        "--admin-listen".into(),
        admin.to_string().into(),
    ];
    BrokerProcess::with_args(dir, listen, admin, args)
}

/// Batch `n`'s values: numbered, padded with bytes that do not compress.
fn values_of(n: u64) -> Vec<String> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..RECORDS_PER_BATCH)
        .map(|i| {
            let mut v = format!("{n:08}-{i:04}-");
            while v.len() < VALUE_BYTES {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push_str(&format!("{x:016x}"));
            }
            v.truncate(VALUE_BYTES);
            v
        })
        .collect()
}

async fn produce(client: &Client, topic: &str, n: u64) -> Result<(Response, Bytes), ClientError> {
    let values = values_of(n);
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let request = Request::Produce { topic: topic.into(), partition: 0 };
    tokio::time::timeout(Duration::from_secs(20), client.request(&request, batch_of(&refs, 1).into()))
        .await
        .unwrap_or_else(|_| panic!("produce of batch {n} hung"))
}

fn code(r: &Result<(Response, Bytes), ClientError>) -> Option<ErrorCode> {
    match r {
        Err(ClientError::Broker { code, .. }) => Some(*code),
        Ok((Response::Error { code, .. }, _)) => Some(*code),
        _ => None,
    }
}

/// The values of batches `acked`, in order.
fn expected(acked: &[u64]) -> Vec<String> {
    acked.iter().flat_map(|&n| values_of(n)).collect()
}

async fn stored(client: &Client, topic: &str) -> Vec<String> {
    read_all(client, topic, FetchFrom::Earliest).await.into_iter().map(|r| r.value).collect()
}

/// Produces batches 0, 1, 2, ... until one is refused with `refused`: the acknowledged
/// batches and the refusal.
async fn produce_until(client: &Client, topic: &str, refused: ErrorCode) -> (Vec<u64>, String) {
    let mut acked = Vec::new();
    for n in 0..1000 {
        let r = produce(client, topic, n).await;
        match code(&r) {
            None => acked.push(n),
            Some(c) if c == refused => return (acked, format!("{r:?}")),
            Some(other) => panic!("batch {n}: {other:?} before {refused:?}: {r:?}"),
        }
    }
    panic!("1000 batches and no {refused:?}: the disk never filled")
}

/// Every value of `topic`'s partition 0, or the first error a read met.
async fn try_stored(client: &Client, topic: &str) -> Result<Vec<String>, ClientError> {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..Default::default() };
    let work = async {
        let mut consumer = Consumer::new(client, topic, config).await?;
        let mut values = Vec::new();
        while let Some(r) = consumer.next_record().await {
            values.push(String::from_utf8(r?.value.to_vec()).expect("utf-8 values"));
        }
        consumer.close().await;
        Ok(values)
    };
    tokio::time::timeout(Duration::from_secs(20), work).await.expect("a read hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_produces_serves_reads_and_resumes_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount() else { return };
    let mut broker = broker_on(&disk, "");
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    create_topic(&client, "full", 1).await;
    // 12 MiB above the default floor of 4 MiB: about 120 batches of 50 KB.
    disk.fill_leaving(16 << 20);

    let (mut acked, refusal) = produce_until(&client, "full", ErrorCode::DiskFull).await;
    assert!(refusal.contains("nearly full"), "{refusal}");
    assert!(acked.len() > 20, "only {} batches acknowledged", acked.len());
    assert!(disk.free() > 0, "the guard let the disk fill up");
    assert_eq!(code(&produce(&client, "full", 5000).await), Some(ErrorCode::DiskFull));
    let metrics = metrics_text(broker.admin).await;
    assert!(metrics.contains("silt_disk_full 1"), "{metrics}");

    // Reads go on, and hold exactly what was acknowledged.
    assert_eq!(stored(&client, "full").await, expected(&acked));

    let free_at_refusal = disk.free();

    // Space freed: produces resume on their own.
    disk.free_filler();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(10);
    let mut n = 10_000;
    loop {
        let r = produce(&client, "full", n).await;
        match code(&r) {
            None => break,
            Some(ErrorCode::DiskFull) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("produce after space was freed: {r:?}"),
        }
    }
    println!(
        "{} batches of {} KB acknowledged, then DiskFull with {} KiB free; produces resumed {} ms after space was freed",
        acked.len(),
        RECORDS_PER_BATCH * VALUE_BYTES / 1000,
        free_at_refusal >> 10,
        freed.elapsed().as_millis()
    );
    acked.push(n);
    n += 1;
    let r = produce(&client, "full", n).await;
    assert_eq!(code(&r), None, "{r:?}");
    acked.push(n);

    drop(client);
    let status = broker.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "SIGTERM: {status:?}");
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    assert_eq!(stored(&client, "full").await, expected(&acked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_in_sled_refuses_produces_without_hanging_and_loses_nothing_acknowledged() {
    let Some(disk) = SmallDisk::mount() else { return };
    let mut broker = broker_on(&disk, "disk_free_min_bytes = 0\n");
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    create_topic(&client, "enospc", 1).await;
    disk.fill_leaving(4 << 20);

    let (acked, failed) = produce_until(&client, "enospc", ErrorCode::Storage).await;
    assert!(failed.contains("No space left") || failed.contains("durable"), "{failed}");
    // Refused, not hung, from now on.
    assert_eq!(code(&produce(&client, "enospc", 5000).await), Some(ErrorCode::Storage));
    // Reads serve exactly what was acknowledged, or refuse with a storage error: sled keeps
    // its first I/O error for as long as the store is open, and a read that makes it
    // consolidate a page writes to its log, so it may fail too. Nothing short or wrong.
    match try_stored(&client, "enospc").await {
        Ok(values) => assert_eq!(values, expected(&acked), "reads serve every acknowledged record"),
        Err(ClientError::Broker { code: ErrorCode::Storage, .. }) => {}
        Err(e) => panic!("a read after the failure: {e}"),
    }

    drop(client);
    // SIGTERM ends it promptly; its final flush fails, so it says so in its exit code.
    let status = broker.terminate(Duration::from_secs(15)).await;
    assert!(!status.success(), "a broker whose last flush failed exited 0");
    disk.free_filler();
    broker.spawn();
    broker.wait_ready().await;
    let client = broker.client().await;
    let held = stored(&client, "enospc").await;
    let want = expected(&acked);
    assert!(held.len() >= want.len() && held[..want.len()] == want[..], "an acknowledged record is missing");
    assert_eq!(code(&produce(&client, "enospc", 6000).await), None, "a restarted broker takes produces");
}
