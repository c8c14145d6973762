//! A seeded simulation of a replicated partition: three openraft nodes in one process, with
//! Silt's type configuration (`silt_broker::cluster::types`) and a state machine that decides
//! appends as the broker core does (`silt_core::partition::PartitionLog`: offsets and producer
//! deduplication), on tokio's paused clock (virtual time: a run of minutes takes about a
//! second), behind a network that delays and drops messages, cuts nodes off and crashes them
//! (a crashed node keeps its log and state, as on disk, and restarts), as a random source
//! seeded with the run's seed says. A producer appends 1..N in order with one producer id and
//! resends whatever was not acknowledged; the check at the end: every node holds the same log,
//! every acknowledged sequence is in it once and in order, nothing else is.
//!
//! The seed fixes the faults, their times and the workload; tokio's own scheduling is not
//! seeded, so a failing seed replays the same faults but not always the same interleaving.
//! `SILT_SIM_SEED=N` runs one seed; `SILT_SIM_RUNS=N` (default 8) runs seeds 1..N.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use openraft::errors::{ClientWriteError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, Raft, RaftLogReader, RaftSnapshotBuilder, StoredMembership,
};
use silt_broker::cluster::types::{Command, Failure, Reply, Types};
use silt_core::partition::{Admission, BatchMeta, PartitionLog};

const NODES: u64 = 3;
const PRODUCER: u64 = 7;

// The seeded generator the broker core's simulation uses.
#[path = "../../core/tests/common/rng.rs"]
mod rng;
use rng::Rng;

/// A batch in the simulation: its producer sequence (one record).
fn batch(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

fn seq_of(batch: &[u8]) -> u64 {
    u64::from_be_bytes(batch.try_into().expect("8 bytes"))
}

// ---- storage that survives a node's crash (shared with the node's next incarnation)

#[derive(Default)]
struct Disk {
    vote: Option<VoteOf<Types>>,
    committed: Option<LogIdOf<Types>>,
    purged: Option<LogIdOf<Types>>,
    log: BTreeMap<u64, EntryOf<Types>>,
    /// The state machine: the core's decisions, the sequences in the log in order, how far.
    core: PartitionLog,
    records: Vec<u64>,
    applied: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Disk>>);

impl RaftLogReader<Types> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<Types>>, io::Error> {
        Ok(self.0.lock().unwrap().log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Types>>, io::Error> {
        Ok(self.0.lock().unwrap().vote)
    }
}

impl RaftLogStorage<Types> for Store {
    type LogReader = Store;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, io::Error> {
        let d = self.0.lock().unwrap();
        let last = d.log.values().next_back().map(|e| e.log_id).or(d.purged);
        Ok(LogState { last_purged_log_id: d.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Store {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Types>) -> Result<(), io::Error> {
        self.0.lock().unwrap().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        self.0.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<Types>>, io::Error> {
        Ok(self.0.lock().unwrap().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Types>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<Types>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.0.lock().unwrap();
        for e in entries {
            d.log.insert(e.log_id.index, e);
        }
        drop(d);
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        let mut d = self.0.lock().unwrap();
        let from = last.map_or(0, |l| l.index + 1);
        d.log.retain(|i, _| *i < from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<Types>) -> Result<(), io::Error> {
        let mut d = self.0.lock().unwrap();
        d.log.retain(|i, _| *i > log_id.index);
        d.purged = Some(log_id);
        Ok(())
    }
}

impl RaftStateMachine<Types> for Store {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Store;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let d = self.0.lock().unwrap();
        Ok((d.applied, d.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut d = self.0.lock().unwrap();
            d.applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Normal(Command::Append { batch, time_ms }) => {
                    let seq = seq_of(&batch);
                    let meta = BatchMeta {
                        records: 1,
                        producer_id: PRODUCER,
                        sequence: seq,
                        max_timestamp_ms: time_ms,
                        bytes: 8,
                    };
                    if d.core.unknown_producers(&[meta]).contains(&PRODUCER) {
                        d.core.learn_producer(PRODUCER, None);
                    }
                    let plan = d.core.plan(&[meta]);
                    let reply = match plan.admissions[0] {
                        Admission::New { base_offset, .. } => {
                            d.records.push(seq);
                            Reply::Appended { base_offset, duplicate: false }
                        }
                        Admission::Duplicate { base_offset } => {
                            Reply::Appended { base_offset: base_offset.unwrap_or(u64::MAX), duplicate: true }
                        }
                        other => Reply::Failed {
                            failure: Failure::OutOfOrderSequence,
                            message: format!("{other:?}"),
                        },
                    };
                    d.core.apply(plan);
                    reply
                }
                EntryPayload::Normal(Command::Meta(_)) => Reply::None,
                EntryPayload::Membership(m) => {
                    d.membership = StoredMembership::new(Some(entry.log_id), m);
                    Reply::None
                }
                EntryPayload::Blank => Reply::None,
            };
            drop(d);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Store {
        self.clone()
    }

    async fn install_snapshot(&mut self, _: &SnapshotMetaOf<Types>, _: Vec<u8>) -> Result<(), io::Error> {
        Err(io::Error::other("the simulation keeps whole logs"))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Types, Vec<u8>>>, io::Error> {
        Ok(None)
    }
}

impl RaftSnapshotBuilder<Types> for Store {
    type SnapshotData = Vec<u8>;
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Vec<u8>>, io::Error> {
        Err(io::Error::other("the simulation keeps whole logs"))
    }
}

// ---- the network: seeded delays and drops, cut-off and crashed nodes

type SimRaft = Raft<Types, Store>;

#[derive(Default)]
struct Net {
    nodes: HashMap<u64, SimRaft>,
    /// Nodes cut off from the others.
    cut: HashSet<u64>,
    rng: Option<Rng>,
    drop_per_mille: u64,
}

#[derive(Clone, Default)]
struct Router(Arc<Mutex<Net>>);

impl Router {
    /// The target's Raft, after the message's delay, unless the message is lost.
    async fn reach(&self, from: u64, to: u64) -> Result<SimRaft, Unreachable<Types>> {
        let (delay, lost) = {
            let mut net = self.0.lock().unwrap();
            let drop_per_mille = net.drop_per_mille;
            let rng = net.rng.as_mut().expect("seeded");
            (Duration::from_millis(1 + rng.below(20)), rng.chance(drop_per_mille))
        };
        tokio::time::sleep(delay).await;
        let net = self.0.lock().unwrap();
        if lost || net.cut.contains(&from) || net.cut.contains(&to) {
            return Err(Unreachable::from_string(format!("{from} -> {to}: lost")));
        }
        net.nodes.get(&to).cloned().ok_or_else(|| Unreachable::from_string(format!("{to} is down")))
    }
}

struct Link {
    from: u64,
    to: u64,
    router: Router,
}

struct Links {
    from: u64,
    router: Router,
}

impl RaftNetworkFactory<Types> for Links {
    type Network = Link;
    async fn new_client(&mut self, to: u64, _: &BasicNode) -> Link {
        Link { from: self.from, to, router: self.router.clone() }
    }
}

fn lost<E: std::error::Error + 'static>(e: E) -> Unreachable<Types> {
    Unreachable::new(&e)
}

impl RaftNetworkV2<Types> for Link {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.append_entries(rpc).await.map_err(|e| RPCError::Unreachable(lost(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        _: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.vote(rpc).await.map_err(|e| RPCError::Unreachable(lost(e)))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Types>,
        _: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.pre_vote(rpc).await.map_err(|e| RPCError::Unreachable(lost(e)))
    }

    async fn full_snapshot(
        &mut self,
        _: VoteOf<Types>,
        _: SnapshotOf<Types, Vec<u8>>,
        _: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        Err(StreamingError::Unreachable(Unreachable::from_string("no snapshots")))
    }
}

// ---- one run

async fn boot(id: u64, store: &Store, router: &Router, config: &Arc<openraft::Config>) -> SimRaft {
    let links = Links { from: id, router: router.clone() };
    let raft = Raft::new(id, config.clone(), links, store.clone(), store.clone()).await.expect("a node");
    router.0.lock().unwrap().nodes.insert(id, raft.clone());
    raft
}

/// Appends `seq` through whichever node leads, until it is acknowledged (bounded).
async fn append(router: &Router, seq: u64, hint: &mut u64) -> bool {
    for _ in 0..400 {
        let raft = router.0.lock().unwrap().nodes.get(hint).cloned();
        let Some(raft) = raft else {
            *hint = *hint % NODES + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let command = Command::Append { batch: batch(seq), time_ms: seq as i64 };
        match tokio::time::timeout(Duration::from_secs(2), raft.client_write(command)).await {
            Ok(Ok(written)) => match written.data {
                Reply::Appended { .. } => return true,
                other => panic!("sequence {seq}: {other:?}"),
            },
            Ok(Err(e)) => {
                let leader = match e.into_api_error() {
                    Some(ClientWriteError::ForwardToLeader(f) | ClientWriteError::LogEntryDiscarded(f)) => {
                        f.leader_id
                    }
                    _ => None,
                };
                *hint = leader.unwrap_or(*hint % NODES + 1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => *hint = *hint % NODES + 1,
        }
    }
    false
}

async fn run(seed: u64) -> Result<String, String> {
    let mut rng = Rng(seed);
    let config = Arc::new(
        openraft::Config {
            cluster_name: "sim".into(),
            election_timeout_min: 250,
            election_timeout_max: 500,
            heartbeat_interval: 80,
            enable_pre_vote: Some(true),
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let router = Router::default();
    {
        let mut net = router.0.lock().unwrap();
        net.rng = Some(Rng(rng.next()));
        net.drop_per_mille = rng.below(50);
    }
    let stores: Vec<Store> = (0..NODES).map(|_| Store::default()).collect();
    for id in 1..=NODES {
        boot(id, &stores[(id - 1) as usize], &router, &config).await;
    }
    let members: BTreeMap<u64, BasicNode> =
        (1..=NODES).map(|i| (i, BasicNode::new(format!("sim-{i}")))).collect();
    let first = router.0.lock().unwrap().nodes[&1].clone();
    first.initialize(members).await.map_err(|e| e.to_string())?;

    // The producer, and the nemesis on its schedule, both in virtual time.
    let total = 150 + rng.below(150);
    let acked = Arc::new(Mutex::new(0u64));
    let producer = {
        let (router, acked) = (router.clone(), acked.clone());
        tokio::spawn(async move {
            let mut hint = 1;
            for seq in 1..=total {
                if !append(&router, seq, &mut hint).await {
                    return;
                }
                *acked.lock().unwrap() = seq;
            }
        })
    };
    let mut log = Vec::new();
    let mut down: Option<(u64, SimRaft)> = None;
    while !producer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        let node = 1 + rng.below(NODES);
        match rng.below(4) {
            0 if down.is_none() => {
                let raft = router.0.lock().unwrap().nodes.remove(&node).expect("up");
                let _ = raft.shutdown().await;
                log.push(format!("crash {node}"));
                down = Some((node, raft));
            }
            1 => {
                let mut net = router.0.lock().unwrap();
                net.cut.clear();
                net.cut.insert(node);
                log.push(format!("cut {node}"));
            }
            _ => {
                router.0.lock().unwrap().cut.clear();
                if let Some((node, _)) = down.take() {
                    boot(node, &stores[(node - 1) as usize], &router, &config).await;
                    log.push(format!("restart {node}"));
                } else {
                    log.push("heal".into());
                }
            }
        }
        if log.len() > 200 {
            return Err(format!("the producer did not finish; faults: {}", log.join(", ")));
        }
    }
    producer.await.map_err(|e| e.to_string())?;
    // Heal everything and let every node catch up.
    router.0.lock().unwrap().cut.clear();
    router.0.lock().unwrap().drop_per_mille = 0;
    if let Some((node, _)) = down.take() {
        boot(node, &stores[(node - 1) as usize], &router, &config).await;
    }
    let acked = *acked.lock().unwrap();
    if acked != total {
        return Err(format!("{acked} of {total} acknowledged; faults: {}", log.join(", ")));
    }
    let mut converged = false;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let logs: Vec<Vec<u64>> = stores.iter().map(|s| s.0.lock().unwrap().records.clone()).collect();
        if logs.iter().all(|l| l.len() as u64 >= acked) && logs.windows(2).all(|w| w[0] == w[1]) {
            converged = true;
            break;
        }
    }
    let records = stores[0].0.lock().unwrap().records.clone();
    let expected: Vec<u64> = (1..=acked).collect();
    for (i, s) in stores.iter().enumerate() {
        let theirs = s.0.lock().unwrap().records.clone();
        if theirs != expected {
            return Err(format!(
                "node {} holds {} records, not exactly 1..={acked} (converged: {converged}); faults: {}",
                i + 1,
                theirs.len(),
                log.join(", ")
            ));
        }
    }
    let rafts: Vec<SimRaft> = router.0.lock().unwrap().nodes.values().cloned().collect();
    for raft in rafts {
        let _ = raft.shutdown().await;
    }
    Ok(format!("{} records, faults: {}", records.len(), log.join(", ")))
}

#[tokio::test(start_paused = true)]
async fn seeded_runs_keep_every_acknowledged_append_once_and_in_order() {
    let seeds: Vec<u64> = match std::env::var("SILT_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SILT_SIM_SEED is a number")],
        Err(_) => {
            let runs = std::env::var("SILT_SIM_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(8u64);
            (1..=runs).collect()
        }
    };
    for seed in seeds {
        match run(seed).await {
            Ok(summary) => eprintln!("seed {seed}: {summary}"),
            Err(e) => panic!("seed {seed} failed (replay: SILT_SIM_SEED={seed}): {e}"),
        }
    }
}
