//! Consumer groups and long-poll fetch against the real broker: members split a topic's
//! partitions, a member that leaves or goes silent hands its partitions to the others, a new
//! member resumes from committed offsets, and a fetch at the end of the log waits for new
//! records instead of returning at once.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use silt_client::{Client, Consumer, ConsumerConfig, FetchFrom};
use silt_wire::{Request, Response};
use support::{create_topic, produce, read_reply, request_frame, BrokerProcess, Reply};

const TOPIC: &str = "readings";
const PARTITIONS: u32 = 4;
/// Group session timeout; heartbeats go out every third of it. Short, so rebalances are quick,
/// but not the broker's minimum of 1 s, so a member slowed by a busy machine does not expire
/// by accident (the expiry test uses the minimum on purpose).
const SESSION: Duration = Duration::from_secs(2);
/// The shortest session the broker accepts.
const SESSION_MIN: Duration = Duration::from_secs(1);
/// Bound on any wait for a rebalance or a record. A rebalance is seen at the next heartbeat
/// (a third of the session); an expiry after the session plus the broker's 500 ms sweep.
const WAIT: Duration = Duration::from_secs(10);

fn group_config(group: &str, session_timeout: Duration) -> ConsumerConfig {
    ConsumerConfig {
        group: Some(group.into()),
        session_timeout,
        max_wait: Duration::from_millis(100),
        follow: true,
        ..Default::default()
    }
}

async fn join(client: &Client, group: &str) -> Consumer {
    join_with(client, group, SESSION).await
}

async fn join_with(client: &Client, group: &str, session: Duration) -> Consumer {
    tokio::time::timeout(WAIT, Consumer::new(client, TOPIC, group_config(group, session)))
        .await
        .expect("joining timed out")
        .expect("joining the group")
}

/// Produces `value-{p}-{i}` for `i` in `range` to every partition.
async fn produce_round(client: &Client, range: std::ops::Range<u32>) {
    for p in 0..PARTITIONS {
        let values: Vec<String> = range.clone().map(|i| format!("value-{p}-{i}")).collect();
        produce(client, TOPIC, p, &values, 100).await;
    }
}

/// A consumed record: (partition, value).
type Got = (u32, String);

/// Drives `c` for up to `within`, returning what it delivered. Cancelling `next_batch` when
/// the time is up is part of what is tested: a consumer must survive being polled this way.
async fn pump(c: &mut Consumer, within: Duration) -> Vec<Got> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, c.next_batch()).await {
        let batch = batch.expect("fetching");
        for r in batch.records() {
            let r = r.expect("record");
            out.push((batch.partition, String::from_utf8(r.value.to_vec()).unwrap()));
        }
    }
    out
}

/// How long each member is polled in turn by `pump_until`.
const SLICE: Duration = Duration::from_millis(50);

/// Pumps all `members` in turn, `slice` at a time, until `done` holds for what they received (per member, in
/// order) and their assignments, failing after [`WAIT`].
async fn pump_until(
    members: &mut [&mut Consumer],
    slice: Duration,
    got: &mut [Vec<Got>],
    what: &str,
    done: impl Fn(&[Vec<Got>], &[Vec<u32>]) -> bool,
) {
    let started = Instant::now();
    loop {
        let assignments: Vec<Vec<u32>> = members.iter().map(|c| c.assignment()).collect();
        if done(got, &assignments) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{what}: not reached within {WAIT:?}; assignments {assignments:?}, got {got:?}"
        );
        for (c, g) in members.iter_mut().zip(got.iter_mut()) {
            g.extend(pump(c, slice).await);
        }
    }
}

fn all_partitions() -> Vec<u32> {
    (0..PARTITIONS).collect()
}

/// True when the assignments are disjoint, non-empty, and cover every partition.
fn split(assignments: &[Vec<u32>]) -> bool {
    let mut union: Vec<u32> = assignments.iter().flatten().copied().collect();
    union.sort();
    assignments.iter().all(|a| !a.is_empty()) && union == all_partitions()
}

fn values(round: std::ops::Range<u32>, partitions: &[u32]) -> BTreeSet<Got> {
    partitions.iter().flat_map(|&p| round.clone().map(move |i| (p, format!("value-{p}-{i}")))).collect()
}

fn as_set(got: &[Got]) -> BTreeSet<Got> {
    let set: BTreeSet<Got> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "a record was delivered twice: {got:?}");
    set
}

/// Two members split the four partitions between them, each reads only its own partitions
/// from the committed offsets on, and when one leaves the other takes over all four and
/// continues from where the leaver committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_and_the_survivor_takes_over_after_a_leave() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, TOPIC, PARTITIONS).await;
    produce_round(&admin, 0..5).await;

    // Alone in the group, A owns everything and reads the first round, then commits it.
    let (ca, cb) = (broker.client().await, broker.client().await);
    let mut a = join(&ca, "split").await;
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut a], SLICE, &mut got, "A reads round 0", |g, _| g[0].len() == 20).await;
    assert_eq!(as_set(&got[0]), values(0..5, &all_partitions()));
    assert_eq!(a.assignment(), all_partitions());
    a.commit().await.expect("commit");

    // B joins: the partitions are split, and B starts from A's committed offsets.
    let mut b = join(&cb, "split").await;
    let mut got = vec![Vec::new(), Vec::new()];
    pump_until(&mut [&mut a, &mut b], SLICE, &mut got, "split between A and B", |_, asg| split(asg)).await;
    let (own_a, own_b) = (a.assignment(), b.assignment());
    assert_eq!((own_a.len(), own_b.len()), (2, 2), "round-robin over two members");
    produce_round(&admin, 5..7).await;
    pump_until(&mut [&mut a, &mut b], SLICE, &mut got, "round 1 read", |g, _| g[0].len() + g[1].len() >= 8)
        .await;
    assert_eq!(as_set(&got[0]), values(5..7, &own_a), "A reads only its partitions, only new records");
    assert_eq!(as_set(&got[1]), values(5..7, &own_b), "B reads only its partitions, only new records");

    // A commits and leaves: B owns all four and resumes A's partitions after A's commit.
    a.commit().await.expect("commit");
    a.close().await;
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut b], SLICE, &mut got, "B owns everything", |_, asg| asg[0] == all_partitions())
        .await;
    produce_round(&admin, 7..8).await;
    pump_until(&mut [&mut b], SLICE, &mut got, "round 2 read by B", |g, _| g[0].len() >= 4).await;
    assert_eq!(as_set(&got[0]), values(7..8, &all_partitions()), "no record read twice, none skipped");
    b.close().await;
}

/// A member that stops heartbeating (dropped without leaving) expires after its session
/// timeout, and the remaining member is then assigned every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_expires_and_the_other_gets_its_partitions() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, TOPIC, PARTITIONS).await;

    let (ca, cb) = (broker.client().await, broker.client().await);
    let mut a = join_with(&ca, "expiry", SESSION_MIN).await;
    let mut b = join_with(&cb, "expiry", SESSION_MIN).await;
    let mut got = vec![Vec::new(), Vec::new()];
    pump_until(&mut [&mut a, &mut b], SLICE, &mut got, "split between A and B", |_, asg| split(asg)).await;

    // Dropping stops A's heartbeats and fetches without a LeaveGroup.
    let silenced = Instant::now();
    drop(a);
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut b], SLICE, &mut got, "B owns everything", |_, asg| asg[0] == all_partitions())
        .await;
    // A's last heartbeat went out up to a third of the session before it went silent.
    assert!(silenced.elapsed() >= SESSION_MIN / 2, "B took over before A's session could expire");

    produce_round(&admin, 0..1).await;
    pump_until(&mut [&mut b], SLICE, &mut got, "B reads every partition", |g, _| g[0].len() >= 4).await;
    assert_eq!(as_set(&got[0]), values(0..1, &all_partitions()));
    b.close().await;
}

/// Committed offsets outlive the member that committed them: a new member of the group
/// resumes exactly after them, while another group still reads from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_from_committed_offsets() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, TOPIC, PARTITIONS).await;
    produce_round(&admin, 0..3).await;

    let c1 = broker.client().await;
    let mut first = join(&c1, "resume").await;
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut first], SLICE, &mut got, "first member reads round 0", |g, _| g[0].len() == 12)
        .await;
    first.commit().await.expect("commit");
    first.close().await;
    c1.close().await;

    produce_round(&admin, 3..5).await;
    let c2 = broker.client().await;
    let mut second = join(&c2, "resume").await;
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut second], SLICE, &mut got, "second member reads round 1", |g, _| g[0].len() >= 8)
        .await;
    // Give it the chance to deliver anything it should not, then check.
    got[0].extend(pump(&mut second, Duration::from_millis(300)).await);
    assert_eq!(as_set(&got[0]), values(3..5, &all_partitions()), "exactly the records after the commit");
    second.close().await;

    let mut other = join(&c2, "another-group").await;
    let mut got = vec![Vec::new()];
    pump_until(&mut [&mut other], SLICE, &mut got, "another group reads everything", |g, _| g[0].len() >= 20)
        .await;
    assert_eq!(as_set(&got[0]), values(0..5, &all_partitions()));
    other.close().await;
}

/// A fetch at the end of the log with a max wait holds the request: it returns empty only after
/// the wait, and as soon as a record is produced meanwhile it returns that record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_waits_for_a_later_record() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "late", 1).await;
    let raw = broker.raw_connection().await;
    let fetch = |max_wait_ms| {
        request_frame(
            &Request::Fetch {
                topic: "late".into(),
                partition: 0,
                from: FetchFrom::Offset(0),
                max_bytes: 1 << 20,
                max_wait_ms,
                processor: None,
            },
            &[],
        )
    };

    // Nothing arrives: the broker answers empty after the wait, not before.
    let asked = Instant::now();
    let (_send, mut recv) = raw.send_raw(&fetch(400), true).await;
    match read_reply(&mut recv).await {
        Reply::Response(Response::Fetched { next_offset: 0, high_watermark: 0, .. }, payload) => {
            assert!(payload.is_empty())
        }
        other => panic!("expected an empty fetch, got {other:?}"),
    }
    assert!(asked.elapsed() >= Duration::from_millis(400), "returned after {:?}", asked.elapsed());

    // A record produced while the fetch waits ends the wait.
    let max_wait = Duration::from_secs(8);
    let asked = Instant::now();
    let (_send, mut recv) = raw.send_raw(&fetch(max_wait.as_millis() as u32), true).await;
    let reply = read_reply(&mut recv);
    tokio::pin!(reply);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut reply).await.is_err(),
        "the fetch must wait while the log is empty"
    );
    produce(&admin, "late", 0, &["hello".to_string()], 1).await;
    match reply.await {
        Reply::Response(
            Response::Fetched { next_offset: 1, high_watermark: 1, from_offset: 0, .. },
            payload,
        ) => {
            let batch = silt_wire::BatchView::new(&payload).expect("one stored batch");
            assert_eq!(
                batch.records().map(|r| r.value.to_vec()).collect::<Vec<_>>(),
                vec![b"hello".to_vec()]
            );
        }
        other => panic!("expected the new record, got {other:?}"),
    }
    assert!(asked.elapsed() < max_wait, "the produce did not wake the fetch (took {:?})", asked.elapsed());
}

/// A following consumer at the end of the log receives a record produced after it started,
/// long before its long-poll wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_consumer_receives_a_later_record() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "late", 1).await;
    let reader = broker.client().await;
    let max_wait = Duration::from_secs(20);
    let config = ConsumerConfig { follow: true, max_wait, ..Default::default() };
    let mut consumer = Consumer::new(&reader, "late", config).await.expect("consumer");
    let next = consumer.next_record();
    tokio::pin!(next);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut next).await.is_err(),
        "nothing to read yet"
    );

    produce(&admin, "late", 0, &["later".to_string()], 1).await;
    // WAIT is half of max_wait: the record must come from the produce waking the fetch.
    let record =
        tokio::time::timeout(WAIT, next).await.expect("record in time").expect("open").expect("record");
    assert_eq!((record.offset, &record.value[..]), (0, &b"later"[..]));
}

/// A consumer whose `next_batch` is cut short by very short timeouts, over and over, still
/// switches to every new assignment: being cancelled in the middle of a rebalance (while it
/// asks the broker for committed offsets) must not leave newly assigned partitions unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cancelled_mid_rebalance_still_reads_new_partitions() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, TOPIC, PARTITIONS).await;
    let (ca, cb) = (broker.client().await, broker.client().await);
    let tiny = Duration::from_micros(200);
    for round in 0..3u32 {
        let mut a = join(&ca, "cancel").await;
        let mut b = join(&cb, "cancel").await;
        let mut got = vec![Vec::new(), Vec::new()];
        pump_until(&mut [&mut a, &mut b], tiny, &mut got, "split", |_, asg| split(asg)).await;
        b.close().await;
        let mut got = vec![Vec::new()];
        pump_until(&mut [&mut a], tiny, &mut got, "A owns everything", |_, asg| asg[0] == all_partitions())
            .await;
        produce_round(&admin, round..round + 1).await;
        pump_until(&mut [&mut a], tiny, &mut got, "A reads every partition", |g, _| g[0].len() >= 4).await;
        a.commit().await.expect("commit");
        a.close().await;
        assert_eq!(as_set(&got[0]), values(round..round + 1, &all_partitions()));
    }
}
