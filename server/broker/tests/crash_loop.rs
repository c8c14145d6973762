//! A crash loop (issue 14, point 8): the broker is killed with SIGKILL at a random moment and
//! restarted on the same data directory, cycle after cycle, while an idempotent producer
//! streams numbered records, a consumer-group member reads and commits offsets, and a stateful
//! processor (the example ema-smooth, wasm) turns the input into a derived topic.
//!
//! After each restart, and over everything at the end, it checks that the input log holds
//! every acknowledged record exactly once, in order (the values 1, 2, 3, ... at dense offsets;
//! records stored but not acknowledged before a kill may follow them), that the processor's
//! output holds exactly one record per input record, in order, with the moving average a
//! crash-free run computes (and, at the end, byte for byte what a reference deployment that
//! never saw a crash writes), that neither the processor's checkpoints nor the group's
//! acknowledged commits went back across the restart, and that the group member was never
//! served a record that is not in the log where it read it.
//!
//! `SILT_CRASH_CYCLES` sets the number of cycles (default 5, the CI run) and `SILT_CRASH_SEED`
//! the seed of the kill moments (printed first); `scripts/crash-loop.sh` runs a long loop. The
//! last line printed holds the figures.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use silt_client::{
    Ack, Client, ClientError, ConsumedRecord, Consumer, ConsumerConfig, Deployment, FetchFrom, ProcessorInfo,
    ProcessorState, Producer, ProducerConfig, ProducerRecord,
};
use silt_wire::{Request, Response};
use support::{create_topic, example_wasm, BrokerProcess, Rng};

/// Input partitions: records alternate between them, so every cycle exercises two appenders,
/// two pipeline tasks and two group offsets.
const PARTITIONS: u32 = 2;
/// Keys per partition, each with its own moving average in the processor's state.
const KEYS: u64 = 4;
/// The producer's pace: `RECORDS_PER_TICK` records every `TICK`, 2,000 a second. Paced so that
/// a cycle costs about the same at cycle 100 as at cycle 1 (an unpaced debug producer makes
/// hundreds of thousands of records a cycle, and the checks then dominate a long loop); at this
/// rate a kill lands on a stream of small batches, each acknowledged after its own flush.
const TICK: Duration = Duration::from_millis(10);
const RECORDS_PER_TICK: u64 = 20;
/// Records per batch at most; at this pace linger seals them first, at about 10 records.
const BATCH_RECORDS_MAX: u32 = 100;
/// The kill comes this long after the previous restart's checks, drawn uniformly: long enough
/// for the clients to have reconnected and resent, short enough for many cycles a minute.
const KILL_DELAY_MIN_MS: u64 = 150;
const KILL_DELAY_MAX_MS: u64 = 1_500;
/// The group member commits what it delivered at most this often, so several commits are
/// acknowledged in each cycle and a kill can land between a commit and the next flush.
const COMMIT_EVERY: Duration = Duration::from_millis(25);
/// The checkpoint watcher asks for the processor's status this often.
const STATUS_EVERY: Duration = Duration::from_millis(20);
/// A commit (or a status request) that gets no answer within this is abandoned (the broker was killed under it).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// The group session: the broker's minimum is 1 s. After a restart the broker knows no
/// members; the member's heartbeat (a third of this) finds out and joins again.
const SESSION: Duration = Duration::from_millis(1_500);
/// How long a client keeps resending across a restart before it gives up.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one step: a read, a wait for the processor, the final flush.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for the whole test: this much plus `CYCLE_BOUND` per cycle. A cycle takes about 2 s
/// on 2 cores with a debug broker.
const TEST_BOUND: Duration = Duration::from_secs(120);
const CYCLE_BOUND: Duration = Duration::from_secs(20);
/// The processor's parameters; `ALPHA` is the same number as the `alpha` parameter's text.
const ALPHA: f64 = 0.2;
const EMA_PARAMS: [(&str, &str); 2] = [("field", "temp"), ("alpha", "0.2")];
/// Event time of record 0; record `seq` has time `T0_MS + seq`, so an output's time names the
/// input record it came from.
const T0_MS: i64 = 1_700_000_000_000;

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const GROUP: &str = "loop";
const EMA: &str = "ema";

/// The record numbered `seq` (from 1) goes to partition `(seq - 1) % PARTITIONS`, so the
/// partition's `i`-th record (offset `i` when nothing was lost or doubled) is this one.
fn seq_at(partition: u32, offset: u64) -> u64 {
    offset * u64::from(PARTITIONS) + u64::from(partition) + 1
}

fn partition_of(seq: u64) -> u32 {
    ((seq - 1) % u64::from(PARTITIONS)) as u32
}

fn key(seq: u64) -> String {
    let index = (seq - 1) / u64::from(PARTITIONS);
    format!("dev-{}-{}", partition_of(seq), index % KEYS)
}

/// The temperature of record `seq`: mixed, so every average keeps moving.
fn temp(seq: u64) -> f64 {
    10.0 + ((seq * 7919) % 2000) as f64 / 100.0
}

/// `temp` is written as Rust prints the f64, the shortest text that reads back as it.
fn value(seq: u64) -> String {
    format!(r#"{{"seq":{seq},"temp":{}}}"#, temp(seq))
}

/// The text of a top-level JSON field in the flat objects this test reads and writes.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &text[start..];
    Some(&rest[..rest.find([',', '}'])?])
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// What a crash-free run of ema-smooth computes: one average per partition and key, moved by
/// each record in offset order, with the processor's own arithmetic.
#[derive(Default)]
struct EmaModel {
    averages: BTreeMap<(u32, String), f64>,
}

impl EmaModel {
    fn next(&mut self, seq: u64) -> f64 {
        let x = temp(seq);
        match self.averages.get_mut(&(partition_of(seq), key(seq))) {
            Some(ema) => {
                *ema += ALPHA * (x - *ema);
                *ema
            }
            None => {
                self.averages.insert((partition_of(seq), key(seq)), x);
                x
            }
        }
    }
}

/// The counts the figures line reports. Lost and duplicated records stop the test at once
/// (the offsets after them no longer name the records this test expects there); an offset
/// gone back is counted and the loop goes on, so a long run says how often it happens.
struct Tally {
    seed: u64,
    started: Instant,
    /// Records acknowledged by the last kill, and records the group member was served.
    acked: u64,
    consumed: u64,
    cycles: u64,
    records_checked: u64,
    outputs_checked: u64,
    lost: u64,
    duplicates: u64,
    offsets_gone_back: u64,
    checkpoints_gone_back: u64,
    restart_ms: Vec<u64>,
}

impl Tally {
    fn new(seed: u64) -> Tally {
        Tally {
            seed,
            started: Instant::now(),
            acked: 0,
            consumed: 0,
            cycles: 0,
            records_checked: 0,
            outputs_checked: 0,
            lost: 0,
            duplicates: 0,
            offsets_gone_back: 0,
            checkpoints_gone_back: 0,
            restart_ms: Vec::new(),
        }
    }

    /// Prints the figures so far, then fails the test with `why`.
    fn fail(&self, why: String) -> ! {
        println!("{}", self.figures());
        panic!("{why}");
    }

    fn figures(&self) -> String {
        let n = self.restart_ms.len().max(1) as u64;
        let mean = self.restart_ms.iter().sum::<u64>() / n;
        let max = self.restart_ms.iter().max().copied().unwrap_or(0);
        format!(
            "crash loop: cycles={} seed={} records_acked={} records_checked={} outputs_checked={} \
             records_consumed={} lost={} duplicates={} offsets_gone_back={} checkpoints_gone_back={} \
             restart_to_ready_ms_mean={mean} restart_to_ready_ms_max={max} duration_s={:.1}",
            self.cycles,
            self.seed,
            self.acked,
            self.records_checked,
            self.outputs_checked,
            self.consumed,
            self.lost,
            self.duplicates,
            self.offsets_gone_back,
            self.checkpoints_gone_back,
            self.started.elapsed().as_secs_f64()
        )
    }
}

/// What the test's tasks share with it.
#[derive(Default)]
struct Shared {
    /// Records acknowledged per partition. Acks of one partition arrive in send order, so the
    /// acknowledged records of partition p are the first `acked[p]` records sent to it.
    acked: Mutex<Vec<u64>>,
    /// Acks for batches the broker had stored before (resent after a kill).
    duplicate_acks: AtomicU64,
    /// Records handed to the producer.
    sent: AtomicU64,
    /// The group offsets of the member's last acknowledged commit, per partition.
    committed: Mutex<Vec<Option<u64>>>,
    /// Records the group member was served and found where they belong.
    consumed: AtomicU64,
    /// The first thing a task found wrong (an ack naming the wrong offset, a record served
    /// out of place).
    violation: Mutex<Option<String>>,
    /// The processor's checkpoints in the last status the broker answered.
    checkpoints: Mutex<Vec<u64>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        let n = PARTITIONS as usize;
        Arc::new(Shared {
            acked: Mutex::new(vec![0; n]),
            committed: Mutex::new(vec![None; n]),
            checkpoints: Mutex::new(vec![0; n]),
            ..Default::default()
        })
    }

    fn violate(&self, what: String) {
        self.violation.lock().unwrap().get_or_insert(what);
    }

    fn check_violation(&self) {
        if let Some(v) = self.violation.lock().unwrap().as_ref() {
            panic!("{v}");
        }
    }

    fn acked_total(&self) -> u64 {
        self.acked.lock().unwrap().iter().sum()
    }

    /// Counts an ack, checking that it names where its records are stored.
    fn ack(&self, a: &Ack) {
        let mut acked = self.acked.lock().unwrap();
        let before = acked[a.partition as usize];
        if a.base_offset != u64::MAX && a.base_offset != before {
            self.violate(format!(
                "partition {}: the ack of records at offsets {before}.. names offset {}",
                a.partition, a.base_offset
            ));
        }
        acked[a.partition as usize] += u64::from(a.records);
        if a.duplicate {
            self.duplicate_acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands records 1, 2, 3, ... to the producer at the paced rate until `stop`; returns the last
/// number sent. While the broker is down, `send` waits (the window is full) and the pace
/// resumes after the restart without a burst.
async fn feed(
    producer: Arc<Producer>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) -> Result<u64, ClientError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        for _ in 0..RECORDS_PER_TICK {
            seq += 1;
            let (k, v) = (key(seq), value(seq));
            let record = ProducerRecord {
                key: Some(k.as_bytes()),
                value: v.as_bytes(),
                timestamp_ms: Some(T0_MS + seq as i64),
                partition: Some(partition_of(seq)),
                ..Default::default()
            };
            producer.send(record).await?;
            shared.sent.store(seq, Ordering::SeqCst);
        }
    }
    Ok(seq)
}

/// The consumer-group member: reads the input from the group's offsets on, checks that each
/// record it is served is the one that belongs at its offset and that offsets follow on, and
/// commits what it delivered every `COMMIT_EVERY`, recording each acknowledged commit.
async fn member(client: Client, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    let config = ConsumerConfig {
        group: Some(GROUP.into()),
        session_timeout: SESSION,
        max_wait: Duration::from_millis(100),
        retry_timeout: RETRY_TIMEOUT,
        ..Default::default()
    };
    let mut c = Consumer::new(&client, INPUT, config).await.expect("joining the group");
    let mut next = vec![0u64; PARTITIONS as usize];
    let mut last_commit = Instant::now();
    let mut last_committed = next.clone();
    while !stop.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_millis(50), c.next_batch()).await {
            Err(_) | Ok(None) => {}
            Ok(Some(Ok(fetched))) => served(&fetched, &mut next, &shared),
            Ok(Some(Err(e))) => {
                shared.violate(format!("the group member failed: {e}"));
                return;
            }
        }
        if next != last_committed && last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            let positions: Vec<(u32, u64)> = (0..PARTITIONS).map(|p| (p, next[p as usize])).collect();
            // Refused (the broker restarted and forgot this member until its next heartbeat)
            // or unanswered (killed under it): not acknowledged, so not recorded; tried again.
            if let Ok(Ok(())) = tokio::time::timeout(COMMIT_TIMEOUT, c.commit_positions(&positions)).await {
                let mut committed = shared.committed.lock().unwrap();
                for (p, o) in positions {
                    committed[p as usize] = Some(o);
                }
                last_committed = next.clone();
            }
        }
    }
    c.close().await;
}

fn served(fetched: &silt_client::Fetched, next: &mut [u64], shared: &Shared) {
    let p = fetched.partition;
    for r in fetched.records() {
        let r = match r {
            Ok(r) => r,
            Err(e) => return shared.violate(format!("partition {p}: the member got a bad batch: {e}")),
        };
        let want = value(seq_at(p, r.offset));
        if r.offset != next[p as usize] || r.value != want.as_bytes() {
            return shared.violate(format!(
                "partition {p}: the group member was served {:?} at offset {} while expecting offset {} to hold {want:?}",
                String::from_utf8_lossy(r.value),
                r.offset,
                next[p as usize]
            ));
        }
        next[p as usize] += 1;
        shared.consumed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asks for the processor's status every `STATUS_EVERY` and records the checkpoints of each
/// answer: what a status shows is committed and durable, so a restart must not go behind the
/// last one answered before the kill.
async fn watch_checkpoints(client: Client, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    while !stop.load(Ordering::SeqCst) {
        // No answer while the broker is down; the client reconnects on a later call.
        if let Ok(Ok(info)) = tokio::time::timeout(COMMIT_TIMEOUT, client.processor_status(EMA)).await {
            if info.state != ProcessorState::Running {
                shared.violate(format!("{EMA} stopped: {info:?}"));
            }
            *shared.checkpoints.lock().unwrap() = checkpoints(&info);
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

/// Every record of one partition from `from` to its end, sorted by offset.
async fn read_partition(client: &Client, topic: &str, partition: u32, from: u64) -> Vec<ConsumedRecord> {
    let config = ConsumerConfig { follow: false, ..Default::default() };
    let work = async {
        let starts = vec![(partition, FetchFrom::Offset(from))];
        let mut c = Consumer::assign(client, topic, starts, config).await?;
        let mut out = Vec::new();
        while let Some(r) = c.next_record().await {
            out.push(r?);
        }
        c.close().await;
        Ok::<_, ClientError>(out)
    };
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("reading {topic}/{partition} from {from} timed out"))
        .unwrap_or_else(|e| panic!("reading {topic}/{partition} from {from}: {e}"))
}

/// How far the checks have read, and the model of the outputs up to there.
#[derive(Default)]
struct Checked {
    input: Vec<u64>,
    output: Vec<u64>,
    model: EmaModel,
}

impl Checked {
    fn new() -> Checked {
        let n = PARTITIONS as usize;
        Checked { input: vec![0; n], output: vec![0; n], model: EmaModel::default() }
    }
}

/// The current high watermarks of a topic, checking that no partition reports a loss.
async fn high_watermarks(client: &Client, topic: &str, tally: &mut Tally) -> Vec<u64> {
    let info = tokio::time::timeout(STEP_TIMEOUT, client.describe_topic(topic))
        .await
        .expect("describe in time")
        .expect("describe");
    for p in &info.partitions {
        if let Some((from, to)) = p.lost {
            tally.lost += to - from;
            tally.fail(format!(
                "{topic}/{}: the broker reports acknowledged offsets {from}..{to} lost",
                p.partition
            ));
        }
    }
    info.partitions.iter().map(|p| p.high_watermark).collect()
}

/// Reads the input past what was checked and checks it: at least every acknowledged record is
/// there (`acked`), nothing checked before is gone, and every record is the one numbered for
/// its offset, which makes each exactly once and in order.
async fn check_input(client: &Client, checked: &mut Checked, acked: &[u64], tally: &mut Tally) {
    let hws = high_watermarks(client, INPUT, tally).await;
    for p in 0..PARTITIONS {
        let (i, hw) = (p as usize, hws[p as usize]);
        let floor = acked[i].max(checked.input[i]);
        if hw < floor {
            tally.lost += floor - hw;
            tally.fail(format!(
                "{INPUT}/{p}: {hw} records after the restart; {} were acknowledged and {} read before",
                acked[i], checked.input[i]
            ));
        }
        for r in read_partition(client, INPUT, p, checked.input[i]).await {
            let expected = seq_at(p, checked.input[i]);
            let text = String::from_utf8_lossy(&r.value);
            let found: u64 = field(&text, "seq").and_then(|s| s.parse().ok()).unwrap_or(0);
            if r.offset != checked.input[i] || found != expected || r.value != value(expected).as_bytes() {
                input_mismatch(tally, p, &r, expected, found);
            }
            assert_eq!(r.key, key(expected).as_bytes(), "{INPUT}/{p} offset {}: key", r.offset);
            assert_eq!(r.timestamp_ms, T0_MS + expected as i64, "{INPUT}/{p} offset {}: time", r.offset);
            checked.input[i] += 1;
            tally.records_checked += 1;
        }
    }
}

fn input_mismatch(tally: &mut Tally, p: u32, r: &ConsumedRecord, expected: u64, found: u64) -> ! {
    let per = u64::from(PARTITIONS);
    if found > expected {
        tally.lost += (found - expected) / per;
    } else {
        tally.duplicates += 1;
    }
    let kind = if found > expected { "a gap (records lost)" } else { "a duplicate or a wrong record" };
    tally.fail(format!(
        "{INPUT}/{p} offset {}: {kind}: expected record {expected}, found {:?}",
        r.offset,
        String::from_utf8_lossy(&r.value)
    ));
}

/// Reads the processor's output past what was checked: per partition, output offset i must be
/// the output of input offset i (same time and key), with the average the model computes.
async fn check_output(client: &Client, checked: &mut Checked, tally: &mut Tally) {
    high_watermarks(client, OUTPUT, tally).await;
    for p in 0..PARTITIONS {
        let i = p as usize;
        for r in read_partition(client, OUTPUT, p, checked.output[i]).await {
            let expected = seq_at(p, checked.output[i]);
            let seq = r.timestamp_ms - T0_MS;
            if r.offset != checked.output[i] || seq != expected as i64 {
                if seq > expected as i64 {
                    tally.lost += (seq as u64 - expected) / u64::from(PARTITIONS);
                } else {
                    tally.duplicates += 1;
                }
                tally.fail(format!(
                    "{OUTPUT}/{p} offset {}: expected the output of record {expected}, found that of record {seq}",
                    r.offset
                ));
            }
            let ema = checked.model.next(expected);
            let text = String::from_utf8_lossy(&r.value);
            let number = |name| field(&text, name).and_then(|t| t.parse::<f64>().ok()).map(f64::to_bits);
            assert_eq!(r.key, key(expected).as_bytes(), "{OUTPUT}/{p} offset {}: key", r.offset);
            assert_eq!(
                number("value"),
                Some(temp(expected).to_bits()),
                "{OUTPUT}/{p} offset {}: {text}",
                r.offset
            );
            assert_eq!(
                number("ema"),
                Some(ema.to_bits()),
                "{OUTPUT}/{p} offset {}: {text}: a crash-free run has ema {ema}",
                r.offset
            );
            checked.output[i] += 1;
            tally.outputs_checked += 1;
        }
    }
}

/// The group's committed offsets, per partition (`None`: nothing committed).
async fn group_offsets(client: &Client) -> Vec<Option<u64>> {
    let request = Request::FetchOffsets { group: GROUP.into(), topic: INPUT.into() };
    let answer = tokio::time::timeout(STEP_TIMEOUT, client.request(&request, Bytes::new()))
        .await
        .expect("fetch offsets in time")
        .expect("fetch offsets");
    let Response::Offsets(list) = answer.0 else { panic!("unexpected answer {:?}", answer.0) };
    let mut out = vec![None; PARTITIONS as usize];
    for o in list {
        out[o.partition as usize] = Some(o.offset);
    }
    out
}

/// Counts every partition whose stored group offset is behind the last commit the broker
/// acknowledged before the kill.
async fn check_group_offsets(client: &Client, before: &[Option<u64>], cycle: u64, tally: &mut Tally) {
    let after = group_offsets(client).await;
    for (p, (b, a)) in before.iter().zip(&after).enumerate() {
        if b.is_some() && a < b {
            tally.offsets_gone_back += 1;
            println!("cycle {cycle}: {INPUT}/{p}: group offset went back from {b:?} (acknowledged) to {a:?}");
        }
    }
}

async fn status(client: &Client) -> ProcessorInfo {
    let info = tokio::time::timeout(STEP_TIMEOUT, client.processor_status(EMA))
        .await
        .expect("processor status in time")
        .expect("processor status");
    assert_eq!(info.state, ProcessorState::Running, "{EMA} stopped: {info:?}");
    info
}

fn checkpoints(info: &ProcessorInfo) -> Vec<u64> {
    info.partitions.iter().map(|p| p.checkpoint).collect()
}

/// Waits (bounded) until the processor has processed all `total` input records.
async fn wait_caught_up(client: &Client, name: &str, total: u64) -> ProcessorInfo {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let info = client.processor_status(name).await.expect("processor status");
        assert_eq!(info.state, ProcessorState::Running, "{name} stopped: {info:?}");
        if info.lag == 0 && info.events_in == total {
            return info;
        }
        assert!(Instant::now() < deadline, "{name} did not catch up within {STEP_TIMEOUT:?}: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, output: &str) -> Deployment {
    Deployment {
        name: name.into(),
        input: INPUT.into(),
        output: output.into(),
        params: EMA_PARAMS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        from: Some(FetchFrom::Earliest),
        limits: Default::default(),
    }
}

/// What a cycle saw at the kill.
struct AtKill {
    acked: Vec<u64>,
    committed: Vec<Option<u64>>,
    checkpoints: Vec<u64>,
}

/// Kills the broker after a random delay, restarts it, and checks everything against what was
/// acknowledged before the kill.
async fn cycle(
    broker: &mut BrokerProcess,
    cycle: u64,
    rng: &mut Rng,
    shared: &Shared,
    checked: &mut Checked,
    tally: &mut Tally,
) {
    let began = Instant::now();
    let delay = rng.between(KILL_DELAY_MIN_MS, KILL_DELAY_MAX_MS);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    broker.kill();
    // Read after the kill: every ack and commit answer the dead process gave is counted.
    let at = AtKill {
        acked: shared.acked.lock().unwrap().clone(),
        committed: shared.committed.lock().unwrap().clone(),
        checkpoints: shared.checkpoints.lock().unwrap().clone(),
    };
    tally.acked = at.acked.iter().sum();
    tally.consumed = shared.consumed.load(Ordering::SeqCst);
    let restarting = Instant::now();
    broker.restart().await;
    let ready_ms = restarting.elapsed().as_millis() as u64;
    tally.restart_ms.push(ready_ms);

    let client = broker.client().await;
    let read = (tally.records_checked, tally.outputs_checked);
    check_input(&client, checked, &at.acked, tally).await;
    check_group_offsets(&client, &at.committed, cycle, tally).await;
    let after = checkpoints(&status(&client).await);
    if after.iter().zip(&at.checkpoints).any(|(a, b)| a < b) {
        tally.checkpoints_gone_back += 1;
        println!("cycle {cycle}: {EMA} checkpoints went back from {:?} to {after:?}", at.checkpoints);
    }
    check_output(&client, checked, tally).await;
    shared.check_violation();
    tally.cycles += 1;
    println!(
        "cycle {cycle}: SIGKILL {delay} ms in, {} acked ({} sent), ready {ready_ms} ms later; \
         checked +{} records, +{} outputs; commits {:?}; checkpoints {:?} -> {after:?}; {:.1} s",
        at.acked.iter().sum::<u64>(),
        shared.sent.load(Ordering::SeqCst),
        tally.records_checked - read.0,
        tally.outputs_checked - read.1,
        at.committed,
        at.checkpoints,
        began.elapsed().as_secs_f64(),
    );
}

/// After the last cycle: every record sent is acknowledged and stored once in order, the
/// processor's whole output matches the model and a crash-free reference deployment byte for
/// byte, and the group member read to the end and committed it.
async fn finish(broker: &BrokerProcess, shared: &Shared, total: u64, tally: &mut Tally) {
    let client = broker.client().await;
    let acked = shared.acked.lock().unwrap().clone();
    assert_eq!(
        acked.iter().sum::<u64>(),
        total,
        "after a successful flush every record sent is acknowledged"
    );
    let mut all = Checked::new();
    check_input(&client, &mut all, &acked, tally).await;
    assert_eq!(all.input, acked, "the input holds exactly the acknowledged records");

    let info = wait_caught_up(&client, EMA, total).await;
    assert_eq!(info.events_out, total, "{EMA}: one output record per input record");
    check_output(&client, &mut all, tally).await;
    assert_eq!(all.output, acked, "{OUTPUT}: one output record per input record");

    // The reference reads the same input from the start in one run, with no crash.
    let wasm = example_wasm("ema-smooth");
    client.deploy_processor(deployment("ema-ref", "ref-out"), wasm).await.expect("deploying the reference");
    wait_caught_up(&client, "ema-ref", total).await;
    for p in 0..PARTITIONS {
        let out = read_partition(&client, OUTPUT, p, 0).await;
        let reference = read_partition(&client, "ref-out", p, 0).await;
        assert_eq!(out.len(), reference.len(), "{OUTPUT}/{p} against the reference");
        if let Some(i) = out.iter().zip(&reference).position(|(a, b)| a != b) {
            panic!(
                "{OUTPUT}/{p} differs from the crash-free reference at offset {i}:\n  {:?}\n  {:?}",
                out[i], reference[i]
            );
        }
    }

    // The member reads to the end and commits it.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let end: Vec<Option<u64>> = acked.iter().map(|&a| Some(a)).collect();
    while *shared.committed.lock().unwrap() != end {
        shared.check_violation();
        assert!(Instant::now() < deadline, "the group member did not commit the end {end:?} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(group_offsets(&client).await, end, "the group's stored offsets are its last commit");
}

/// Cycles of SIGKILL at a random moment and restart, with an idempotent producer, a group
/// member and a stateful processor running: no acknowledged record lost or doubled, one
/// output per input identical to a crash-free run, no committed offset or checkpoint gone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_keeps_every_acknowledged_record_output_and_offset() {
    let cycles = env_u64("SILT_CRASH_CYCLES", 5);
    let seed = env_u64("SILT_CRASH_SEED", 0x5117_c4a5);
    println!("crash loop: {cycles} cycles, seed {seed} (SILT_CRASH_CYCLES, SILT_CRASH_SEED)");
    let bound = TEST_BOUND + CYCLE_BOUND * cycles as u32;
    if tokio::time::timeout(bound, run(cycles, seed)).await.is_err() {
        panic!("the crash loop did not finish within {bound:?}");
    }
}

async fn run(cycles: u64, seed: u64) {
    let mut tally = Tally::new(seed);
    let wasm = example_wasm("ema-smooth");
    let mut broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, INPUT, PARTITIONS).await;
    admin.deploy_processor(deployment(EMA, OUTPUT), wasm).await.expect("deploying ema-smooth");
    drop(admin);
    println!("broker started and {EMA} deployed in {:.1} s", tally.started.elapsed().as_secs_f64());

    let shared = Shared::new();
    let stop = Arc::new(AtomicBool::new(false));
    let on_ack = {
        let shared = shared.clone();
        Arc::new(move |a: &Ack| shared.ack(a))
    };
    let config = ProducerConfig {
        batch_records_max: BATCH_RECORDS_MAX,
        retry_timeout: RETRY_TIMEOUT,
        on_ack: Some(on_ack),
        ..Default::default()
    };
    let producing = broker.client().await;
    let producer = Arc::new(Producer::new(&producing, INPUT, config).await.expect("producer"));
    let feeder = tokio::spawn(feed(producer.clone(), stop.clone(), shared.clone()));
    let member_stop = Arc::new(AtomicBool::new(false));
    let group = tokio::spawn(member(broker.client().await, member_stop.clone(), shared.clone()));
    let watcher = tokio::spawn(watch_checkpoints(broker.client().await, stop.clone(), shared.clone()));

    let (mut rng, mut checked) = (Rng(seed.max(1)), Checked::new());
    for c in 0..cycles {
        cycle(&mut broker, c, &mut rng, &shared, &mut checked, &mut tally).await;
    }

    stop.store(true, Ordering::SeqCst);
    let total = tokio::time::timeout(STEP_TIMEOUT, feeder)
        .await
        .expect("the feeder stops")
        .expect("feeder task")
        .expect("every send accepted");
    tokio::time::timeout(STEP_TIMEOUT, producer.flush()).await.expect("flush in time").expect("flush");
    tokio::time::timeout(STEP_TIMEOUT, watcher).await.expect("the watcher stops").expect("watcher task");
    let finishing = Instant::now();
    finish(&broker, &shared, total, &mut tally).await;
    println!("final checks took {:.1} s", finishing.elapsed().as_secs_f64());
    member_stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(STEP_TIMEOUT, group).await.expect("the member stops").expect("member task");
    let producer = Arc::into_inner(producer).expect("the feeder is done with the producer");
    producer.close().await.expect("closing the producer");
    shared.check_violation();

    (tally.acked, tally.consumed) = (shared.acked_total(), shared.consumed.load(Ordering::SeqCst));
    println!(
        "{} duplicate acks (resent batches the broker had stored)",
        shared.duplicate_acks.load(Ordering::SeqCst)
    );
    println!("{}", tally.figures());
    assert_eq!(tally.offsets_gone_back, 0, "group offsets went back across a restart (listed above)");
    assert_eq!(
        tally.checkpoints_gone_back, 0,
        "processor checkpoints went back across a restart (listed above)"
    );
    broker.terminate(Duration::from_secs(20)).await;
}
