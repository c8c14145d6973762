//! Bounded memory under a hostile load (issue 14, point 5): a deployed module that emits the
//! most output a batch may (8 MB of incompressible bytes per input batch), slow readers that
//! ask for large fetches and never read the answers, and a flood of read-time processing,
//! all at once, against a broker held to 1 GiB of memory (a memory cgroup the test makes, or
//! `RLIMIT_DATA` where it cannot). The broker must stay up, the pipeline must process every
//! input batch (960 MB of output), and another topic must keep being served. The largest
//! resident set seen is printed.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silt_client::{ClientError, ErrorCode, FetchFrom, ProcessorRef};
use silt_wire::{Deployment, Request};
use support::{abi_module_with, create_topic, produce, read_all, request_frame, BrokerProcess};

/// The memory the broker is held to.
const LIMIT_BYTES: u64 = 1 << 30;
/// Input batches of 10 records: each makes 8 MB of output.
const INPUT_BATCHES: u32 = 120;
/// How long the readers and the flood go on.
const LOAD: Duration = Duration::from_secs(8);

/// `silt_process`: one output record whose value is 8,000,000 bytes of xorshift noise, at
/// 32 MiB in memory: varint length 8,000,007 (87 a4 e8 03), time delta 0, no key, varint value
/// length 8,000,000 (80 a4 e8 03), the value, no headers. 8,000,011 bytes in all, under the
/// 8 MiB - 68 output limit.
const MAX_OUTPUT: &str = "(local $i i32) (local $x i32)
    (if (i32.lt_u (memory.size) (i32.const 640))
      (then (drop (memory.grow (i32.sub (i32.const 640) (memory.size))))))
    (i32.store (i32.const 33554432) (i32.const 0x03e8a487))
    (i32.store16 (i32.const 33554436) (i32.const 0))
    (i32.store (i32.const 33554438) (i32.const 0x03e8a480))
    (local.set $x (i32.add (global.get $seed) (i32.const 0x9e3779b9)))
    (loop $fill
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (i32.store (i32.add (i32.const 33554442) (local.get $i)) (local.get $x))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 8000000))))
    (global.set $seed (local.get $x))
    (i32.store8 (i32.const 41554442) (i32.const 0))
    (i32.store (local.get $res) (i32.const 33554432))
    (i32.store offset=4 (local.get $res) (i32.const 8000011))
    (i32.const 0)";

/// A memory limit on one process: a memory cgroup of its own (cgroup v1, as on these
/// machines) when the test may make one, else `RLIMIT_DATA` set with prlimit(1).
enum MemoryLimit {
    Cgroup(PathBuf),
    Rlimit,
}

impl MemoryLimit {
    fn apply(pid: u32, bytes: u64) -> MemoryLimit {
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory/silt-test-{pid}"));
        if std::fs::create_dir(&dir).is_ok() {
            let limited = std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).is_ok()
                && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok();
            if limited {
                return MemoryLimit::Cgroup(dir);
            }
            let _ = std::fs::remove_dir(&dir);
        }
        let status = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--data={bytes}"))
            .status()
            .expect("running prlimit");
        assert!(status.success(), "prlimit --data failed");
        MemoryLimit::Rlimit
    }

    /// The resident memory of the cgroup's processes (page cache not counted); 0 when unknown.
    fn rss(&self) -> u64 {
        match self {
            MemoryLimit::Cgroup(dir) => std::fs::read_to_string(dir.join("memory.stat"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("rss ").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0),
            MemoryLimit::Rlimit => 0,
        }
    }

    /// The most memory the cgroup held (page cache included), and how often the kernel
    /// killed in it.
    fn figures(&self) -> String {
        match self {
            MemoryLimit::Cgroup(dir) => {
                let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                let peak: u64 = read("memory.max_usage_in_bytes").trim().parse().unwrap_or(0);
                let oom = read("memory.oom_control");
                let kills = oom.lines().find_map(|l| l.strip_prefix("oom_kill ")).unwrap_or("?").to_string();
                format!(
                    "memory cgroup of {} MiB: peak {} MiB, oom kills {kills}",
                    LIMIT_BYTES >> 20,
                    peak >> 20
                )
            }
            MemoryLimit::Rlimit => format!("RLIMIT_DATA of {} MiB", LIMIT_BYTES >> 20),
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let MemoryLimit::Cgroup(dir) = self {
            // A cgroup is removed once empty: its processes go back to the root.
            for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                let _ = std::fs::write("/sys/fs/cgroup/memory/cgroup.procs", pid);
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn fetch(topic: &str, offset: u64, max_bytes: u32, processor: Option<ProcessorRef>) -> Request {
    Request::Fetch {
        topic: topic.into(),
        partition: 0,
        from: FetchFrom::Offset(offset),
        max_bytes,
        max_wait_ms: 0,
        processor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_module_slow_readers_and_a_read_time_flood_stay_within_memory() {
    // A small page cache and response budget: the limits a memory-bound operator would set.
    let config = "cache_bytes = 33554432\nresponse_bytes_max = 134217728\nscrub_bytes_per_s = 0\n\
                  retention_check_ms = 200\n";
    let mut broker = BrokerProcess::start_with_config(config, &[]).await;
    let limit = MemoryLimit::apply(broker.pid(), LIMIT_BYTES);
    let client = broker.client().await;
    for topic in ["hl.in", "hl.other"] {
        create_topic(&client, topic, 1).await;
    }
    // The output keeps everything, 960 MB in 8 MB batches: the storage stores large batches
    // in pieces that sled's cache counts and evicts, so what a topic retains is on disk, not
    // resident (docs/reliability.md).
    client.create_topic("hl.out", 1, None, None).await.expect("creating hl.out");
    let values: Vec<String> = (0..INPUT_BATCHES * 10).map(|i| format!("reading {i}")).collect();
    produce(&client, "hl.in", 0, &values, 10).await;
    let wasm = abi_module_with("(global $seed (mut i32) (i32.const 1))", MAX_OUTPUT);
    let deployment = Deployment {
        name: "noise".into(),
        input: "hl.in".into(),
        output: "hl.out".into(),
        params: vec![],
        from: None,
        limits: Default::default(),
    };
    client.deploy_processor(deployment, wasm).await.expect("deploying the module");

    let stop_at = Instant::now() + LOAD;
    // Slow readers: streams of large fetches of the output, never read.
    let mut readers = Vec::new();
    for _ in 0..16 {
        let raw = broker.raw_connection().await;
        let mut frames = Vec::new();
        for _ in 0..8 {
            frames.extend_from_slice(&request_frame(&fetch("hl.out", 0, 16 << 20, None), &[]));
        }
        let streams = raw.send_raw(&frames, false).await;
        readers.push((raw, streams));
    }
    // A flood of read-time processing over the input, from many places at once.
    let (served, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for task in 0..48u64 {
        let client = broker.client().await;
        let (served, busy) = (served.clone(), busy.clone());
        flood.push(tokio::spawn(async move {
            let mut offset = task * 10 % u64::from(INPUT_BATCHES * 10);
            while Instant::now() < stop_at {
                let p = ProcessorRef { name: "noise".into(), version: None, params: None };
                match client.request(&fetch("hl.in", offset, 1 << 20, Some(p)), Bytes::new()).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(ClientError::Broker { code: ErrorCode::Busy, .. }) => {
                        busy.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("read-time fetch at {offset}: {e}"),
                };
                offset = (offset + 10) % u64::from(INPUT_BATCHES * 10);
            }
        }));
    }
    // Meanwhile another topic is served.
    let (mut rounds, mut peak_rss) = (0, 0);
    while Instant::now() < stop_at {
        let value = vec![format!("other {rounds}")];
        produce(&client, "hl.other", 0, &value, 1).await;
        peak_rss = peak_rss.max(limit.rss());
        rounds += 1;
        assert!(broker.exited().is_none(), "the broker died under the load ({})", limit.figures());
    }
    for task in flood {
        task.await.expect("a flood task failed");
    }
    let other = read_all(&client, "hl.other", FetchFrom::Earliest).await;
    assert_eq!(other.len(), rounds, "every record of the other topic is served");

    // The pipeline processes every input batch: one 8 MB output record each.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(broker.exited().is_none(), "the broker died under the load ({})", limit.figures());
        peak_rss = peak_rss.max(limit.rss());
        let status = match client.processor_status("noise").await {
            Ok(s) => s,
            Err(e) => panic!("processor status: {e} (broker {:?}; {})", broker.exited(), limit.figures()),
        };
        if status.events_in == u64::from(INPUT_BATCHES * 10) {
            assert_eq!(status.events_out, u64::from(INPUT_BATCHES));
            break;
        }
        assert!(Instant::now() < deadline, "the pipeline did not catch up: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "hostile load: {} read-time fetches served, {} refused as busy, {rounds} produces on another topic; {}, \
         largest resident set sampled {} MiB",
        served.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        limit.figures(),
        peak_rss >> 20
    );
    drop(readers);
    assert!(broker.exited().is_none(), "the broker died under the load ({})", limit.figures());
    drop(limit);
    broker.terminate(Duration::from_secs(30)).await;
}
