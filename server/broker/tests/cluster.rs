//! Replication across brokers, tested in the way of Jepsen but short (for `.ci/run`): three
//! `silt-broker` processes, a producer and a consumer running while a nemesis kills (SIGKILL)
//! or pauses (SIGSTOP) the leader of the partition, or cuts it off from the other brokers (each
//! broker in a network namespace of its own: both ways, or only what it sends), and a checker
//! over the history: every acknowledged record is in the log exactly once and in order,
//! nothing appears that was never sent, no consumer saw a record at an offset that later held
//! another, and every replica ends with the same log.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use silt_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, FetchFrom, Producer, ProducerConfig, ProducerRecord,
};
use support::{Cut, LocalCluster};

const TOPIC: &str = "jepsen";

/// What the producer was told.
#[derive(Debug, Default, Clone, Copy)]
struct Produced {
    /// Records 1..=acked are acknowledged.
    acked: u64,
    /// Records 1..=sent were handed to the producer.
    sent: u64,
}

/// Sends 1..=total in order, flushing every `chunk`; stops at the first failed flush.
async fn produce(client: Client, total: u64, chunk: u64, progress: Arc<Mutex<Produced>>) {
    let config = ProducerConfig {
        batch_records_max: 50,
        linger: Duration::from_millis(2),
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let producer = Producer::new(&client, TOPIC, config).await.expect("a producer");
    for i in 1..=total {
        let value = i.to_string();
        let record = ProducerRecord {
            key: None,
            value: value.as_bytes(),
            timestamp_ms: None,
            headers: &[],
            partition: Some(0),
        };
        producer.send(record).await.expect("send");
        progress.lock().unwrap().sent = i;
        if i % chunk == 0 {
            match producer.flush().await {
                Ok(()) => progress.lock().unwrap().acked = i,
                Err(e) => {
                    eprintln!("flush after {i} failed: {e}");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    let _ = producer.close().await;
}

/// Every record of the partition, as (offset, value), read from the brokers `config` lists.
async fn read_log(config: ClientConfig) -> Vec<(u64, u64)> {
    let client = Client::connect(config).await.expect("a reader");
    let consumer_config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..Default::default() };
    let mut consumer = Consumer::new(&client, TOPIC, consumer_config).await.expect("a consumer");
    let mut out = Vec::new();
    while let Some(r) = consumer.next_record().await {
        let r = r.expect("a record");
        out.push((r.offset, std::str::from_utf8(&r.value).unwrap().parse().unwrap()));
    }
    consumer.close().await;
    client.close().await;
    out
}

/// The checker: the log holds exactly 1..=m for some m between what was acknowledged and what
/// was sent, at offsets 0.., and every record a consumer saw is where it saw it.
fn check(log: &[(u64, u64)], produced: Produced, seen: &[(u64, u64)]) -> Result<(), String> {
    for (i, (offset, value)) in log.iter().enumerate() {
        if *offset != i as u64 || *value != i as u64 + 1 {
            return Err(format!(
                "log entry {i} is {value} at offset {offset}: a record lost, doubled or out of order"
            ));
        }
    }
    let m = log.len() as u64;
    if m < produced.acked {
        return Err(format!("{} acknowledged records, only {m} in the log", produced.acked));
    }
    if m > produced.sent {
        return Err(format!("{m} records in the log, only {} were sent", produced.sent));
    }
    for (offset, value) in seen {
        if log.get(*offset as usize).map(|e| e.1) != Some(*value) {
            return Err(format!("a consumer saw {value} at offset {offset}, which the log does not hold"));
        }
    }
    Ok(())
}

/// Follows the partition from the start, recording what it sees, until `stop`.
async fn watch(config: ClientConfig, seen: Arc<Mutex<Vec<(u64, u64)>>>, stop: Arc<tokio::sync::Notify>) {
    let Ok(client) = Client::connect(config).await else { return };
    let consumer_config = ConsumerConfig {
        from: FetchFrom::Earliest,
        follow: true,
        max_wait: Duration::from_millis(200),
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let Ok(mut consumer) = Consumer::new(&client, TOPIC, consumer_config).await else { return };
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            r = consumer.next_record() => match r {
                Some(Ok(r)) => seen.lock().unwrap().push((r.offset, std::str::from_utf8(&r.value).unwrap().parse().unwrap())),
                _ => break,
            },
        }
    }
    consumer.close().await;
}

/// How a nemesis treats the leader it picked.
enum Nemesis {
    Kill,
    Pause(Duration),
    /// Cut off from the other brokers for a while (clients still reach it); the clients start
    /// with the other brokers, or (`true`) with the leader.
    Partition(Cut, Duration, bool),
}

/// Runs a producer and a watcher against three brokers, applies `nemesis` to the partition's
/// leader a moment in, brings it back, and checks the history on every replica.
async fn run(nemesis: Nemesis) {
    let mut cluster = match nemesis {
        Nemesis::Partition(..) => LocalCluster::start_isolated(3).await,
        _ => LocalCluster::start(3).await,
    };
    let admin = cluster.client().await;
    admin.create_topic_replicated(TOPIC, 1, None, None, Some(3)).await.expect("topic");
    // Clients list every broker; when the leader is cut off from the others (and not from
    // clients) they start with the others, as a client that had followed the leader elsewhere.
    let order: Vec<u64> = match nemesis {
        Nemesis::Partition(_, _, leader_first) => {
            let leader = cluster.leader_of(TOPIC, 0, None).await;
            let others = (1..=3).filter(|i| *i != leader);
            match leader_first {
                true => [leader].into_iter().chain(others).collect(),
                false => others.chain([leader]).collect(),
            }
        }
        _ => vec![1, 2, 3],
    };
    let progress = Arc::new(Mutex::new(Produced::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let client = Client::connect(cluster.config_for(&order)).await.expect("a producer's client");
    let producer = tokio::spawn(produce(client, 6000, 100, progress.clone()));
    let watcher = tokio::spawn(watch(cluster.config_for(&order), seen.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = cluster.leader_of(TOPIC, 0, None).await;
    let acked_before = progress.lock().unwrap().acked;
    let hit = Instant::now();
    match nemesis {
        Nemesis::Kill => cluster.node_mut(leader).kill(),
        Nemesis::Pause(_) => signal(cluster.node(leader).pid(), "STOP"),
        Nemesis::Partition(cut, ..) => cluster.net.as_ref().expect("namespaces").cut(leader, cut),
    }
    let next = cluster.leader_of(TOPIC, 0, Some(leader)).await;
    eprintln!(
        "nemesis on leader {leader} (after {acked_before} acknowledged): node {next} leads after {:?}",
        hit.elapsed()
    );
    match nemesis {
        Nemesis::Kill => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.node_mut(leader).restart().await;
        }
        Nemesis::Pause(pause) => {
            tokio::time::sleep(pause.saturating_sub(hit.elapsed())).await;
            signal(cluster.node(leader).pid(), "CONT");
        }
        Nemesis::Partition(_, cut_for, _) => {
            tokio::time::sleep(cut_for.saturating_sub(hit.elapsed())).await;
            cluster.net.as_ref().expect("namespaces").heal(leader);
        }
    }
    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("the producer finished in time")
        .unwrap();
    let produced = *progress.lock().unwrap();
    assert!(produced.acked > acked_before, "records were acknowledged after the nemesis: {produced:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(30), watcher).await;

    let log = read_log(cluster.config_for(&[next])).await;
    let seen = seen.lock().unwrap().clone();
    if let Err(e) = check(&log, produced, &seen) {
        panic!("history check on node {next}: {e} ({produced:?}, {} in the log)", log.len());
    }
    // Every replica, the one the nemesis hit included, catches up to the same log.
    let caught_up = Instant::now();
    for id in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let replica = read_log(cluster.config_for(&[id])).await;
            if replica == log {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} holds {} records, not the {} of node {next}",
                replica.len(),
                log.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "{} acknowledged, {} in every replica's log (caught up within {:?}), {} seen by the watcher; no loss, no duplicate",
        produced.acked,
        log.len(),
        caught_up.elapsed(),
        seen.len()
    );
    admin.close().await;
}

fn signal(pid: u32, name: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_record_is_lost_when_the_leader_is_killed() {
    run(Nemesis::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_record_is_lost_when_the_leader_is_paused() {
    run(Nemesis::Pause(Duration::from_secs(3))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_record_is_lost_when_the_leader_is_cut_off() {
    run(Nemesis::Partition(Cut::Both, Duration::from_secs(3), false)).await;
}

/// The clients are on the leader when it is cut off: their produces wait, then go on through
/// another broker (the one they had cannot settle them), with no record lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_cut_off_leader_carry_on_elsewhere() {
    run(Nemesis::Partition(Cut::Both, Duration::from_secs(3), true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_record_is_lost_when_the_leader_cannot_be_heard() {
    run(Nemesis::Partition(Cut::Outgoing, Duration::from_secs(3), false)).await;
}

#[test]
fn the_checker_catches_loss_duplicates_and_phantoms() {
    let log: Vec<(u64, u64)> = (0..5).map(|i| (i, i + 1)).collect();
    let ok = Produced { acked: 4, sent: 6 };
    assert!(check(&log, ok, &[(2, 3)]).is_ok());
    assert!(check(&log, Produced { acked: 6, sent: 6 }, &[]).is_err(), "an acknowledged record lost");
    assert!(check(&log, Produced { acked: 4, sent: 4 }, &[]).is_err(), "a record never sent");
    let doubled = vec![(0, 1), (1, 2), (2, 2)];
    assert!(check(&doubled, Produced { acked: 2, sent: 3 }, &[]).is_err(), "a duplicate");
    assert!(check(&log, ok, &[(2, 9)]).is_err(), "a consumer saw what the log lost");
}

/// Users, tokens and grants are the cluster's, not one broker's: made through one broker,
/// they hold on every other, and a token revoked through another broker is refused everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tokens_and_grants_hold_on_every_broker() {
    use silt_client::{AclEntry, ClientError, Credential, Operation};
    use silt_wire::ErrorCode;
    let cluster = LocalCluster::start(3).await;
    let on = |id: u64| Client::connect(cluster.config_for(&[id]));
    let one = on(1).await.expect("broker 1");
    one.add_user("alice", "correct-horse-battery").await.expect("a user");
    let entry = AclEntry {
        principal: "user:alice".into(),
        operation: Operation::Describe,
        resource: "topic:a.*".into(),
        allow: true,
    };
    one.grant_acl(entry).await.expect("a grant");
    let (info, secret) = one.create_token("alice", "t", None).await.expect("a token");
    let as_alice = |id: u64| {
        let config = cluster.config_for(&[id]).with_credential(Some(Credential::Token(secret.clone())));
        Client::connect(config)
    };
    // Every broker knows alice and her grant (each applies the change; allow it a moment).
    for id in [2, 3] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let who = match as_alice(id).await {
                Ok(c) => c.whoami().await,
                Err(e) => Err(e),
            };
            match who {
                Ok(who) => {
                    assert_eq!(who.principal, "user:alice");
                    assert!(who.entries.iter().any(|e| e.resource == "topic:a.*"), "{who:?}");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "broker {id} does not know alice's token: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let alice = as_alice(3).await.unwrap();
    let refused = alice.create_topic("b.t", 1, None, None).await.unwrap_err();
    assert!(matches!(refused, ClientError::Broker { code: ErrorCode::PermissionDenied, .. }), "{refused:?}");
    // Revoked through broker 2: refused by broker 3 too.
    on(2).await.unwrap().revoke_token(&info.id).await.expect("revoked");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let still = match as_alice(3).await {
            Ok(c) => c.whoami().await.is_ok(),
            Err(_) => false,
        };
        if !still {
            break;
        }
        assert!(Instant::now() < deadline, "broker 3 still takes a token revoked through broker 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A consumer group's offsets committed through one broker are there on every other, so a
/// member that moves to another broker goes on where the group left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_committed_through_one_broker_are_on_every_broker() {
    use silt_wire::{PartitionOffset, Request, Response};
    let cluster = LocalCluster::start(3).await;
    let one = Client::connect(cluster.config_for(&[1])).await.expect("broker 1");
    one.create_topic_replicated("offsets.t", 2, None, None, Some(3)).await.expect("topic");
    let offsets = (0..2)
        .map(|p| PartitionOffset { topic: "offsets.t".into(), partition: p, offset: 40 + u64::from(p) })
        .collect();
    let commit = Request::CommitOffsets { group: "g".into(), member_id: None, offsets };
    let (done, _) = one.request(&commit, bytes::Bytes::new()).await.expect("committed");
    assert_eq!(done, Response::Done);
    for id in [2, 3] {
        let client = Client::connect(cluster.config_for(&[id])).await.expect("a broker");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fetch = Request::FetchOffsets { group: "g".into(), topic: "offsets.t".into() };
            let (answer, _) = client.request(&fetch, bytes::Bytes::new()).await.expect("offsets");
            let Response::Offsets(list) = answer else { panic!("{answer:?}") };
            let mut got: Vec<(u32, u64)> = list.iter().map(|o| (o.partition, o.offset)).collect();
            got.sort_unstable();
            if got == [(0, 40), (1, 41)] {
                break;
            }
            assert!(Instant::now() < deadline, "broker {id} has offsets {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The device registry is the cluster's: a device added through one broker has the same key on
/// every broker (a bridge may ask any), and one revoked through another is revoked everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_the_same_on_every_broker() {
    let cluster = LocalCluster::start(3).await;
    let on = |id: u64| Client::connect(cluster.config_for(&[id]));
    let added = on(1).await.unwrap().add_device("d-1").await.expect("a device");
    assert!(added.key.is_some());
    let until = |id: u64, check: Box<dyn Fn(&silt_wire::DeviceInfo) -> bool>, what: &'static str| {
        let client = on(id);
        async move {
            let client = client.await.expect("a broker");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(d) = client.get_device("d-1").await {
                    if check(&d) {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "broker {id}: {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for id in [2, 3] {
        let key = added.key.clone();
        until(id, Box::new(move |d| d.key == key && d.revoked_ms.is_none()), "not the key broker 1 made")
            .await;
    }
    on(2).await.unwrap().revoke_device("d-1").await.expect("revoked");
    until(3, Box::new(|d| d.revoked_ms.is_some()), "still not revoked").await;
}
