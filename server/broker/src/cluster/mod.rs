//! Replication: a broker that is one of a cluster runs the cluster's metadata group and a Raft
//! group for each partition it keeps, on openraft. A produce to a replicated partition is an
//! entry of its group; it is acknowledged once a quorum of its replicas has the entry durable
//! (under the fsync policy) and this broker applied it. Proposals reach the group's leader
//! wherever they arrive: a broker that does not lead forwards them, in order, to the one that
//! does.
//!
//! `config` (the `[cluster]` settings), `types` (the openraft types), `log_store` (the groups'
//! logs on `silt_storage::raft_log`), `meta` and `replica` (the state machines), `net`
//! (broker to broker over QUIC with mutual TLS), `proposer` (proposals in order, forwarded).

pub mod config;
mod log_store;
pub mod meta;
mod net;
mod proposer;
mod replica;
mod status;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use dashmap::DashMap;
use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use silt_storage::raft_log::RaftLogs;
use silt_storage::{StorageError, Store, TopicMeta};

pub use config::{ClusterConfig, FileCluster, Peer, CLUSTER_DIR};
use log_store::{LogFlusher, LogStore};
use meta::{MetaEffects, MetaMachine, MetaState, Placement};
use net::{GroupNetwork, Net, Rpc, RpcReply};
use proposer::Proposer;
use replica::PartitionMachine;
pub use types::{Command, Failure, GroupId, MetaCommand, Reply};

use crate::auth::Auth;
use crate::partitions::Partitions;

type MetaRaft = openraft::Raft<types::Types, MetaMachine>;
type PartitionRaft = openraft::Raft<types::Types, PartitionMachine>;

/// How long a proposal may take, retries on other leaders included, before the client is told
/// the cluster is unavailable.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a proposal was not settled.
#[derive(Debug)]
pub enum ProposeError {
    /// No leader, or no quorum, within [`PROPOSAL_TIMEOUT`].
    Unavailable(String),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

/// This broker's part in its cluster.
pub struct Cluster {
    pub config: ClusterConfig,
    /// Where clients reach this broker.
    client_address: SocketAddr,
    raft_config: Arc<openraft::Config>,
    logs: Arc<RaftLogs>,
    flusher: Arc<LogFlusher>,
    net: Arc<Net>,
    meta: std::sync::OnceLock<MetaRaft>,
    meta_state: Arc<RwLock<MetaState>>,
    groups: DashMap<(String, u32), PartitionRaft>,
    /// Serializes the start of partition groups, so one is never started twice.
    starting: tokio::sync::Mutex<()>,
    proposers: DashMap<GroupId, Arc<Proposer>>,
    partitions: Arc<Partitions>,
    store: Arc<Store>,
    auth: Arc<Auth>,
}

/// openraft's timing: a follower that hears nothing for `election_timeout_max` plus a random
/// election timeout stands for election, so a dead leader is replaced within about a second
/// on loopback (the issue asks for 2 s).
fn raft_config(name: &str) -> anyhow::Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: name.to_string(),
        election_timeout_min: 250,
        election_timeout_max: 500,
        heartbeat_interval: 80,
        enable_pre_vote: Some(true),
        // The groups keep their logs: a replica that was away catches up from them.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_payload_entries: 64,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().context("the Raft settings")?))
}

/// The name of a group's log in `silt_storage::raft_log`.
fn log_name(group: &GroupId) -> String {
    match group {
        GroupId::Meta => "meta".into(),
        GroupId::Partition { topic, partition } => format!("partition/{topic}/{partition}"),
    }
}

struct Effects {
    cluster: Weak<Cluster>,
}

impl MetaEffects for Effects {
    fn topic(&self, name: &str, placement: &Placement) {
        let Some(cluster) = self.cluster.upgrade() else { return };
        if cluster.store.topic(name).is_none() {
            let meta = TopicMeta {
                name: name.to_string(),
                partitions: placement.partitions,
                retention_ms: placement.retention_ms,
                retention_bytes: placement.retention_bytes,
                created_ms: placement.created_ms,
            };
            match cluster.store.create_topic(meta) {
                Ok(()) | Err(StorageError::TopicExists(_)) => {}
                Err(e) => {
                    tracing::error!(topic = name, error = %e, "a topic of the cluster could not be made here");
                    return;
                }
            }
        }
        for (partition, replicas) in placement.replicas.iter().enumerate() {
            if replicas.contains(&cluster.config.node_id) {
                let (cluster, topic, replicas) = (cluster.clone(), name.to_string(), replicas.clone());
                tokio::spawn(async move {
                    if let Err(e) = cluster.start_group(&topic, partition as u32, &replicas).await {
                        tracing::error!(topic, partition, error = %format!("{e:#}"), "a partition group did not start");
                    }
                });
            }
        }
    }

    fn auth(&self, change: &crate::auth::changes::AuthChange) -> Reply {
        let Some(cluster) = self.cluster.upgrade() else { return Reply::None };
        match cluster.auth.apply_change(change) {
            Ok(()) => Reply::None,
            Err(r) => Reply::Failed { failure: types::failure_of(r.code), message: r.message },
        }
    }

    fn commit_offsets(&self, group: &str, offsets: &[(String, u32, u64)]) -> Reply {
        let Some(cluster) = self.cluster.upgrade() else { return Reply::None };
        for (topic, partition, offset) in offsets {
            if let Err(e) = cluster.store.commit_offset(group, topic, *partition, *offset) {
                return Reply::Failed { failure: Failure::Storage, message: e.to_string() };
            }
        }
        Reply::None
    }

    fn device(&self, id: &str, change: &crate::devices::DeviceChange) -> Reply {
        let Some(cluster) = self.cluster.upgrade() else { return Reply::None };
        match crate::devices::apply(&cluster.store, id, change) {
            Ok(entry) => Reply::Device(silt_storage::records::seal(&entry)),
            Err(e) => Reply::Failed { failure: types::failure_of(e.code), message: e.message },
        }
    }

    fn claim(&self, principal: &str, id: u64, fresh: bool, now_ms: i64) -> Reply {
        let Some(cluster) = self.cluster.upgrade() else { return Reply::None };
        match cluster.auth.producers.apply_claim(principal, id, fresh, now_ms) {
            Ok((id, epoch)) => Reply::Producer { id, epoch },
            Err(r) => Reply::Failed { failure: types::failure_of(r.code), message: r.message },
        }
    }
}

impl Cluster {
    /// Joins the cluster: opens the groups' logs in `DATA_DIR/raft`, serves other brokers on
    /// the cluster address, starts the metadata group (each broker proposes the initial members
    /// from `--peers`; the group forms once a quorum of them is up) and, as the metadata is
    /// applied, the groups of the partitions this broker keeps.
    pub async fn start(
        config: ClusterConfig,
        data_dir: &std::path::Path,
        client_address: SocketAddr,
        partitions: Arc<Partitions>,
        auth: Arc<Auth>,
        flush: bool,
    ) -> anyhow::Result<Arc<Cluster>> {
        let dir = data_dir.join("raft");
        let logs = tokio::task::spawn_blocking(move || RaftLogs::open(&dir))
            .await?
            .context("opening the Raft logs")?;
        let logs = Arc::new(logs);
        let flusher = LogFlusher::new(logs.clone(), flush);
        tokio::spawn(flusher.clone().run());
        let net = Net::new(&config)?;
        let endpoint = net::server_endpoint(&config)?;
        let store = partitions.store().clone();
        let cluster = Arc::new(Cluster {
            client_address,
            raft_config: raft_config("silt")?,
            logs,
            flusher,
            net: net.clone(),
            meta: std::sync::OnceLock::new(),
            meta_state: Arc::new(RwLock::new(MetaState::default())),
            groups: DashMap::new(),
            starting: tokio::sync::Mutex::new(()),
            proposers: DashMap::new(),
            partitions,
            store,
            auth,
            config,
        });
        let machine = MetaMachine::new(
            cluster.meta_state.clone(),
            Arc::new(Effects { cluster: Arc::downgrade(&cluster) }),
        );
        let log = LogStore::open(&cluster.logs, &log_name(&GroupId::Meta), cluster.flusher.clone())?;
        let network = GroupNetwork { net, group: GroupId::Meta };
        let meta =
            openraft::Raft::new(cluster.config.node_id, cluster.raft_config.clone(), network, log, machine)
                .await
                .context("starting the metadata group")?;
        let _ = cluster.meta.set(meta.clone());
        {
            let cluster = cluster.clone();
            tokio::spawn(net::serve(endpoint, move |rpc| {
                let cluster = cluster.clone();
                async move { cluster.handle_rpc(rpc).await }
            }));
        }
        let members: BTreeMap<u64, BasicNode> =
            cluster.config.peers.iter().map(|p| (p.id, BasicNode::new(p.addr))).collect();
        // Every member proposes the same initial membership; on a restart (a log already
        // there) openraft refuses, which is what should happen.
        if let Err(e) = meta.initialize(members).await {
            tracing::debug!(error = %e, "metadata group not initialized here (already is)");
        }
        tracing::info!(node = cluster.config.node_id, listen = %cluster.config.listen,
            peers = cluster.config.peers.len(), "joined the cluster's metadata group");
        Ok(cluster)
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    fn meta(&self) -> &MetaRaft {
        self.meta.get().expect("the metadata group starts with the cluster")
    }

    /// Whether the cluster replicates `topic` (one made through the metadata group).
    pub fn replicated(&self, topic: &str) -> bool {
        self.meta_state.read().expect("metadata lock").topics.contains_key(topic)
    }

    /// How many partitions a replicated topic has.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.meta_state.read().expect("metadata lock").topics.get(topic).map(|p| p.partitions)
    }

    /// The brokers in the metadata group's membership (the initial peers until it is known).
    pub fn members(&self) -> Vec<u64> {
        let state = self.meta_state.read().expect("metadata lock");
        let voters: Vec<u64> = state.membership.membership().voter_ids().collect();
        if voters.is_empty() {
            self.config.peers.iter().map(|p| p.id).collect()
        } else {
            voters
        }
    }

    /// Starts the group of a partition this broker keeps, unless it runs already.
    async fn start_group(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        replicas: &[u64],
    ) -> anyhow::Result<()> {
        let key = (topic.to_string(), partition);
        if self.groups.contains_key(&key) {
            return Ok(());
        }
        let _starting = self.starting.lock().await;
        if self.groups.contains_key(&key) {
            return Ok(());
        }
        let group = GroupId::Partition { topic: topic.to_string(), partition };
        let handle = self.partitions.get(topic, partition)?;
        let machine = PartitionMachine::open(handle)?;
        let log = LogStore::open(&self.logs, &log_name(&group), self.flusher.clone())?;
        let network = GroupNetwork { net: self.net.clone(), group };
        let raft = openraft::Raft::new(self.config.node_id, self.raft_config.clone(), network, log, machine)
            .await
            .with_context(|| format!("starting the group of {topic}/{partition}"))?;
        self.groups.insert(key, raft.clone());
        let members: BTreeMap<u64, BasicNode> = replicas
            .iter()
            .filter_map(|id| self.config.peers.iter().find(|p| p.id == *id))
            .map(|p| (p.id, BasicNode::new(p.addr)))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(topic, partition, error = %e, "partition group not initialized here (already is)");
        }
        Ok(())
    }

    /// Proposes `command` to `group` and waits until it is committed and applied here or on
    /// the leader, for at most [`PROPOSAL_TIMEOUT`]. Proposals to one group are submitted in
    /// the order of the calls that return before the next call starts.
    pub async fn propose(
        self: &Arc<Self>,
        group: GroupId,
        command: Command,
    ) -> tokio::sync::oneshot::Receiver<Result<(Reply, u64), ProposeError>> {
        let proposer = self
            .proposers
            .entry(group.clone())
            .or_insert_with(|| Proposer::start(Arc::downgrade(self), group))
            .clone();
        proposer.submit(command).await
    }

    /// Waits until this broker applied the metadata group's entry `index` (a change it asked
    /// for that another broker's leadership committed), for at most a few seconds.
    pub async fn applied_meta(&self, index: u64) {
        let _ = self
            .meta()
            .wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(index), "applied")
            .await;
    }

    /// Answers another broker's call.
    async fn handle_rpc(self: Arc<Self>, rpc: Rpc) -> RpcReply {
        let refused = |e: &dyn std::fmt::Display| RpcReply::Refused(e.to_string());
        let (group, raft) = match &rpc {
            Rpc::Append(group, _) | Rpc::Vote(group, _) | Rpc::PreVote(group, _) => {
                (group, self.raft_of(group))
            }
            Rpc::Propose(..) | Rpc::Status => (&GroupId::Meta, None),
        };
        let Some(raft) = raft else {
            return match rpc {
                Rpc::Propose(group, commands) => {
                    RpcReply::Proposed(proposer::propose_here(&self, &group, commands).await)
                }
                Rpc::Status => RpcReply::Status(self.local_status().await),
                _ => refused(&format!("no group {group} here")),
            };
        };
        match rpc {
            Rpc::Append(_, req) => {
                on_raft!(raft, r => r.append_entries(req).await.map_or_else(|e| refused(&e), RpcReply::Append))
            }
            Rpc::Vote(_, req) => {
                on_raft!(raft, r => r.vote(req).await.map_or_else(|e| refused(&e), RpcReply::Vote))
            }
            Rpc::PreVote(_, req) => {
                on_raft!(raft, r => r.pre_vote(req).await.map_or_else(|e| refused(&e), RpcReply::Vote))
            }
            Rpc::Propose(..) | Rpc::Status => unreachable!("answered above"),
        }
    }

    /// The leader of `group` as this broker sees it: `None` when it does not run the group,
    /// `Some(None)` while it knows of no leader.
    fn leader_seen(&self, group: &GroupId) -> Option<Option<u64>> {
        let raft = self.raft_of(group)?;
        Some(on_raft!(raft, r => r.metrics().borrow_watched().current_leader))
    }

    /// A replica of the group to ask who leads it, turning through them with `turn`.
    fn some_replica(&self, group: &GroupId, turn: u32) -> Option<u64> {
        let GroupId::Partition { topic, partition } = group else { return None };
        let state = self.meta_state.read().expect("metadata lock");
        let replicas: Vec<u64> = state
            .topics
            .get(topic)?
            .replicas
            .get(*partition as usize)?
            .iter()
            .copied()
            .filter(|r| *r != self.node_id())
            .collect();
        (!replicas.is_empty()).then(|| replicas[turn as usize % replicas.len()])
    }

    fn raft_of(&self, group: &GroupId) -> Option<Raft> {
        match group {
            GroupId::Meta => self.meta.get().cloned().map(Raft::Meta),
            GroupId::Partition { topic, partition } => {
                self.groups.get(&(topic.clone(), *partition)).map(|r| Raft::Partition(r.clone()))
            }
        }
    }

    /// Stops every group (the broker is stopping).
    pub async fn shutdown(&self) {
        let groups: Vec<PartitionRaft> = self.groups.iter().map(|g| g.value().clone()).collect();
        for g in groups {
            let _ = g.shutdown().await;
        }
        if let Some(meta) = self.meta.get() {
            let _ = meta.shutdown().await;
        }
        let _ = tokio::task::block_in_place(|| self.logs.flush());
    }
}

/// A group's Raft handle, of either kind.
#[derive(Clone)]
enum Raft {
    Meta(MetaRaft),
    Partition(PartitionRaft),
}

/// `$body` with `$r` bound to the handle inside a [`Raft`], whichever kind it is (the two
/// differ only in their state machine's type).
macro_rules! on_raft {
    ($raft:expr, $r:ident => $body:expr) => {
        match $raft {
            Raft::Meta($r) => $body,
            Raft::Partition($r) => $body,
        }
    };
}
use on_raft;
