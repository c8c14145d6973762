//! Exactly-once pipelines across SIGKILL (issue 3): the broker is killed while a stateful
//! processor (ema-smooth, wasm) and a stateless one (a WAT passthrough) are working through a
//! backlog, restarted, and killed again, three times; afterwards each output holds exactly one
//! record per input record, in order, with no gap and no duplicate, and the stateful output is
//! identical to that of a reference deployment that never saw a crash.

mod support;

use std::time::{Duration, Instant};

use silt_client::{
    Client, Compression, ConsumedRecord, Deployment, FetchFrom, ProcessorInfo, ProcessorState, Producer,
    ProducerConfig, ProducerRecord,
};
use support::{abi_module, create_topic, example_wasm, BrokerProcess, PASSTHROUGH};

/// Input partitions; the keys spread over both.
const PARTITIONS: u32 = 2;
/// Distinct record keys (sensors), each with its own moving average.
const KEYS: u64 = 8;
/// Records produced before the processors are deployed: a backlog of about 150 pipeline
/// commits (each covers at most 1 MiB of stored input, about 10,000 of these records), so
/// the processors are still busy when the kills land.
const BACKLOG: u64 = 300_000;
/// Records added when a processor caught up before a kill could land mid-run (a fast
/// machine); the kill waits for the pipeline to be busy again.
const TOP_UP: u64 = 50_000;
/// Top-ups allowed per kill before the test gives up on catching the pipeline mid-run.
const TOP_UPS_MAX: u32 = 5;
/// Crash/restart cycles.
const CYCLES: usize = 3;
/// Event time of the record with sequence number 0; record `seq` has time `T0_MS + seq`, so
/// an output record's time names the input record it came from.
const T0_MS: i64 = 1_700_000_000_000;
/// Bound for the whole test; it normally takes about 4 s on 2 cores with a debug broker.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for any single step (produce a round, read a topic).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The stateful processor under test, its crash-free reference, and the stateless one.
const EMA: &str = "ema";
const EMA_REF: &str = "ema-ref";
const COPY: &str = "copy";

fn deployment(name: &str, output: &str, params: &[(&str, &str)]) -> Deployment {
    Deployment {
        name: name.into(),
        input: "in".into(),
        output: output.into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        from: Some(FetchFrom::Earliest),
        limits: Default::default(),
    }
}

const EMA_PARAMS: [(&str, &str); 2] = [("field", "temp"), ("alpha", "0.2")];

/// The temperature of reading `seq`: mixed, so that every average moves.
fn temp(seq: u64) -> f64 {
    10.0 + ((seq * 7919) % 2000) as f64 / 100.0
}

fn key(seq: u64) -> String {
    format!("dev-{}", seq % KEYS)
}

/// A sensor reading of about 100 bytes. `temp` is written as Rust (and ema-smooth's JSON
/// writer) prints the f64, so the output's `"value"` is the same text.
fn reading(seq: u64) -> String {
    format!(
        r#"{{"device":"{}","site":"north-field-07","seq":{seq},"temp":{},"humidity":{:.2},"battery":3.71}}"#,
        key(seq),
        temp(seq),
        30.0 + ((seq * 104_729) % 4000) as f64 / 100.0
    )
}

/// Produces readings `from..from + n`, keyed by sensor (so partitioned by key), uncompressed
/// (so a pipeline commit covers about 10,000 of them, giving many commits to land between),
/// and waits until every one is acknowledged.
async fn produce(client: &Client, from: u64, n: u64) {
    let config = ProducerConfig { compression: Compression::None, ..Default::default() };
    let work = async {
        let p = Producer::new(client, "in", config).await?;
        for seq in from..from + n {
            let (k, v) = (key(seq), reading(seq));
            let record = ProducerRecord {
                key: Some(k.as_bytes()),
                value: v.as_bytes(),
                timestamp_ms: Some(T0_MS + seq as i64),
                ..Default::default()
            };
            p.send(record).await?;
        }
        p.close().await
    };
    tokio::time::timeout(STEP_TIMEOUT, work).await.expect("produce timed out").expect("produce");
}

/// Every record of `topic`, sorted by (partition, offset).
async fn read_topic(client: &Client, topic: &str) -> Vec<ConsumedRecord> {
    support::read_records(client, topic, STEP_TIMEOUT).await
}

async fn status(client: &Client, name: &str) -> ProcessorInfo {
    let info = client.processor_status(name).await.expect("processor status");
    assert_eq!(info.state, ProcessorState::Running, "{name} stopped: {info:?}");
    info
}

fn checkpoints(info: &ProcessorInfo) -> Vec<u64> {
    info.partitions.iter().map(|p| p.checkpoint).collect()
}

/// What a status showed just before a kill.
struct Landed {
    checkpoints: Vec<u64>,
    high_watermarks: Vec<u64>,
}

/// Polls the status of `name` without pause until the pipeline is mid-run: some partition
/// committed past `since` (so a commit happened since the last restart, with the state
/// restored there) and some partition still has input to process. Tops the input up when the
/// pipeline catches up first. Returns the status seen, for the caller to kill right away.
async fn wait_mid_run(
    client: &Client,
    name: &str,
    since: &[u64],
    produced: &mut u64,
    started: Instant,
) -> Landed {
    let mut top_ups = 0;
    loop {
        assert!(started.elapsed() < TEST_TIMEOUT, "no mid-run moment of {name} within {TEST_TIMEOUT:?}");
        let info = status(client, name).await;
        let cps = checkpoints(&info);
        let advanced = cps.iter().zip(since).any(|(c, s)| c > s);
        let behind = info.partitions.iter().any(|p| p.checkpoint < p.high_watermark);
        if advanced && behind {
            let high_watermarks = info.partitions.iter().map(|p| p.high_watermark).collect();
            return Landed { checkpoints: cps, high_watermarks };
        }
        if info.lag == 0 {
            assert!(top_ups < TOP_UPS_MAX, "{name} keeps catching up before a kill can land mid-run");
            top_ups += 1;
            eprintln!("{name} caught up at {cps:?}; adding {TOP_UP} records");
            produce(client, *produced, TOP_UP).await;
            *produced += TOP_UP;
        }
    }
}

/// Waits (bounded) until `name` processed all `total` input records.
async fn wait_caught_up(client: &Client, name: &str, total: u64, started: Instant) -> ProcessorInfo {
    loop {
        let info = status(client, name).await;
        if info.lag == 0 && info.events_in == total {
            return info;
        }
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "{name} did not catch up within {TEST_TIMEOUT:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The record sequence number an event time stands for.
fn seq_of(r: &ConsumedRecord) -> u64 {
    u64::try_from(r.timestamp_ms - T0_MS).expect("event times start at T0_MS")
}

/// Checks that `out` holds, per partition, exactly one record for each input record, in the
/// same order: same event time and key, and `check` accepts the value. Reports the first
/// gap or duplicate.
fn assert_one_for_one(
    what: &str,
    input: &[ConsumedRecord],
    out: &[ConsumedRecord],
    check: impl Fn(u64, &ConsumedRecord) -> bool,
) {
    for p in 0..PARTITIONS {
        let want: Vec<&ConsumedRecord> = input.iter().filter(|r| r.partition == p).collect();
        let got: Vec<&ConsumedRecord> = out.iter().filter(|r| r.partition == p).collect();
        assert!(!want.is_empty(), "partition {p} received no input; the keys should spread");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let (ws, gs) = (seq_of(w), seq_of(g));
            if ws != gs {
                let kind = if gs > ws { "gap" } else { "duplicate" };
                panic!("{what}, partition {p}, output offset {}: {kind}: expected the output of record {ws}, found record {gs}", g.offset);
            }
            assert_eq!(g.offset, i as u64, "{what}, partition {p}: output offsets are dense from 0");
            assert_eq!(g.key, w.key, "{what}, partition {p}, offset {i}: key");
            assert!(check(ws, g), "{what}, partition {p}, offset {i}: value {:?}", g.value);
        }
        assert_eq!(got.len(), want.len(), "{what}, partition {p}: output records against input records");
    }
}

/// The stateful pipeline's output after three SIGKILLs mid-run is one record per input record,
/// in order, and byte for byte what a crash-free deployment of the same module computes; a
/// stateless passthrough's output equals its input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_pipeline_leaves_no_gap_and_no_duplicate() {
    let ema_wasm = example_wasm("ema-smooth");
    let started = Instant::now();
    let mut broker = BrokerProcess::start(&[]).await;
    let mut client = broker.client().await;
    create_topic(&client, "in", PARTITIONS).await;
    let mut produced = 0;
    produce(&client, produced, BACKLOG).await;
    produced += BACKLOG;
    eprintln!("{BACKLOG} records produced in {:?}", started.elapsed());

    client.deploy_processor(deployment(EMA, "out", &EMA_PARAMS), ema_wasm.clone()).await.expect("deploy ema");
    client
        .deploy_processor(deployment(COPY, "copy-out", &[]), abi_module(PASSTHROUGH))
        .await
        .expect("deploy copy");

    let mut since = vec![0; PARTITIONS as usize];
    for cycle in 0..CYCLES {
        let landed = wait_mid_run(&client, EMA, &since, &mut produced, started).await;
        broker.kill();
        eprintln!(
            "cycle {cycle}: SIGKILL at {:?} with {EMA} checkpoints {:?} of {:?}",
            started.elapsed(),
            landed.checkpoints,
            landed.high_watermarks
        );
        let total_cp: u64 = landed.checkpoints.iter().sum();
        let total_hw: u64 = landed.high_watermarks.iter().sum();
        assert!(0 < total_cp && total_cp < total_hw, "the kill lands while {EMA} has input left");
        broker.restart().await;
        client = broker.client().await;
        // What a status showed was committed and durable: a restart never goes back behind it.
        let after = checkpoints(&status(&client, EMA).await);
        for (a, l) in after.iter().zip(&landed.checkpoints) {
            assert!(a >= l, "checkpoints went back from {:?} to {after:?}", landed.checkpoints);
        }
        since = after;
    }

    // The reference sees the same input from the start, in one run with no crash.
    client
        .deploy_processor(deployment(EMA_REF, "ref-out", &EMA_PARAMS), ema_wasm)
        .await
        .expect("deploy ema-ref");
    for name in [EMA, COPY, EMA_REF] {
        let info = wait_caught_up(&client, name, produced, started).await;
        assert_eq!(info.events_out, produced, "{name}: one output record per input record");
    }
    eprintln!("all caught up with {produced} records at {:?}", started.elapsed());

    let input = read_topic(&client, "in").await;
    assert_eq!(input.len() as u64, produced);
    let copy = read_topic(&client, "copy-out").await;
    assert_one_for_one("passthrough", &input, &copy, |_, _| true);
    assert!(copy == input, "a passthrough output equals its input: partition, offset, time, key, value");

    let out = read_topic(&client, "out").await;
    assert_one_for_one("ema-smooth", &input, &out, |seq, r| {
        r.value.ends_with(format!(",\"value\":{}}}", temp(seq)).as_bytes())
    });
    let reference = read_topic(&client, "ref-out").await;
    assert_eq!(reference.len(), out.len());
    if let Some(i) = out.iter().zip(&reference).position(|(a, b)| a != b) {
        panic!(
            "the crashed pipeline's output differs from the crash-free reference at record {i}:\n  {:?}\n  {:?}",
            out[i], reference[i]
        );
    }
    eprintln!("{produced} records checked in {:?}", started.elapsed());
}
