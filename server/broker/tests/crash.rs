//! Crash safety of acknowledged produces (issue 2, point 9): the broker is killed with SIGKILL
//! while an idempotent producer streams numbered records, restarted on the same data dir and
//! ports, several times; afterwards the log must hold every acknowledged record exactly once,
//! in order.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use silt_client::{Ack, FetchFrom, Producer, ProducerConfig, ProducerRecord};
use support::{create_topic, read_all, BrokerProcess};

/// Crash/restart cycles.
const CYCLES: usize = 3;
/// Records acknowledged between two kills (60 batches of 50): the producer is then in full
/// flow, with its window of 8 batches in flight and more queued, when the kill lands.
const ACKED_PER_CYCLE: u64 = 3_000;
/// Bound for the whole test. A cycle normally takes well under a second; the slowest case is
/// a producer whose batches were all received but not yet answered when the broker died: its
/// connection is quiet until the client's 5 s keep-alive, whose packet draws the restarted
/// broker's stateless reset.
const TEST_TIMEOUT: Duration = Duration::from_secs(40);

/// Every record acknowledged around three SIGKILLs is stored exactly once and in order: the
/// log holds exactly the values 1..=K at offsets 0..K, and every ack named the right offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_exactly_once_in_order() {
    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "crash", 1).await;

    // Acks arrive in send order on the single partition, so the acknowledged records are
    // exactly the first `acked` values sent.
    let acked = Arc::new(AtomicU64::new(0));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let on_ack = {
        let (acked, acks) = (acked.clone(), acks.clone());
        Arc::new(move |a: &Ack| {
            acked.fetch_add(u64::from(a.records), Ordering::SeqCst);
            acks.lock().unwrap().push(a.clone());
        })
    };
    let config = ProducerConfig {
        batch_records_max: 50,
        linger: Duration::from_millis(1),
        window: 8,
        retry_timeout: TEST_TIMEOUT,
        on_ack: Some(on_ack),
        ..Default::default()
    };
    let producer = Arc::new(Producer::new(&client, "crash", config).await.expect("producer"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (producer, stop, sent) = (producer.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let value = n.to_string();
                producer.send(ProducerRecord { value: value.as_bytes(), ..Default::default() }).await?;
                sent.store(n, Ordering::SeqCst);
            }
            Ok::<u64, silt_client::ClientError>(n)
        })
    };

    let started = Instant::now();
    let wait_acked = |target: u64| {
        let acked = acked.clone();
        async move {
            while acked.load(Ordering::SeqCst) < target {
                let now = acked.load(Ordering::SeqCst);
                assert!(started.elapsed() < TEST_TIMEOUT, "acks stalled at {now} of {target}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for cycle in 0..CYCLES {
        wait_acked(acked.load(Ordering::SeqCst) + ACKED_PER_CYCLE).await;
        broker.kill();
        let (a, s) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
        eprintln!(
            "cycle {cycle}: SIGKILL at {:?} with {a} records acknowledged, {s} handed to the producer",
            started.elapsed()
        );
        broker.restart().await;
    }
    // The same producer carries on after the last restart, then stops and drains.
    wait_acked(acked.load(Ordering::SeqCst) + ACKED_PER_CYCLE).await;
    stop.store(true, Ordering::SeqCst);
    let last_sent = tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the feeder stops")
        .expect("feeder task")
        .expect("every send accepted");
    tokio::time::timeout(TEST_TIMEOUT, producer.flush()).await.expect("flush in time").expect("flush");
    let acked = acked.load(Ordering::SeqCst);
    assert_eq!(acked, last_sent, "after a successful flush every record sent is acknowledged");

    let reader = broker.client().await;
    let records = read_all(&reader, "crash", FetchFrom::Earliest).await;
    let values: Vec<u64> = records.iter().map(|r| r.value.parse().expect("numbered values")).collect();
    let want: Vec<u64> = (1..=values.len() as u64).collect();
    if let Some(at) = values.iter().zip(&want).position(|(a, b)| a != b) {
        let around = &values[at.saturating_sub(3)..(at + 3).min(values.len())];
        panic!("the log is not exactly 1..=K: offset {at} holds {}; around it: {around:?}", values[at]);
    }
    assert_eq!(values.len() as u64, acked, "the log holds exactly the acknowledged records");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, want.iter().map(|v| v - 1).collect::<Vec<_>>(), "offsets are dense from 0");

    // Each ack names where its batch is stored (record n at offset n - 1); a resent batch the
    // broker had stored before the crash is acknowledged as a duplicate, not stored again.
    let acks = acks.lock().unwrap();
    let mut before: u64 = 0;
    for a in acks.iter() {
        if a.base_offset != u64::MAX {
            let last = before + u64::from(a.records);
            assert_eq!(
                a.base_offset,
                before,
                "the ack of records {}..={last} names the wrong offset",
                before + 1
            );
        }
        before += u64::from(a.records);
    }
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    eprintln!(
        "{acked} records in {} acks ({duplicates} for resent batches already stored) in {:?}",
        acks.len(),
        started.elapsed()
    );
}
