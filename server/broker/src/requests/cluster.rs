//! Requests in a cluster: topics made through the metadata group, produces to replicated
//! partitions proposed to their group, producer ids claimed through the metadata group, and
//! the cluster's status.

use silt_wire::{ClusterInfo, NodeInfo, ReplicaInfo};

use super::*;
use crate::cluster::types::code_of;
use crate::cluster::{Cluster, Command, GroupId, MetaCommand, Reply as Applied};

/// Replicas per partition when a topic does not say: 3, or every broker when fewer.
const REPLICATION_FACTOR_DEFAULT: u32 = 3;

fn unavailable(e: impl std::fmt::Display) -> Reply {
    error(ErrorCode::Unavailable, format!("the cluster could not settle the request: {e}"))
}

fn failed(failure: crate::cluster::Failure, message: String) -> Reply {
    error(code_of(failure), message)
}

type Proposal = tokio::sync::oneshot::Receiver<Result<(Applied, u64), crate::cluster::ProposeError>>;

/// What a proposal came to: its outcome and index once applied, or the reply that tells the
/// client why there is none (refused when applied, or not settled).
async fn settled(outcome: Proposal) -> Result<(Applied, u64), Reply> {
    match outcome.await {
        Ok(Ok((Applied::Failed { failure, message }, _))) => Err(failed(failure, message)),
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("the proposal was dropped")),
    }
}

/// The brokers keeping each of `partitions` partitions: `factor` of `members`, turning
/// through them from a start that depends on the topic's name, so topics spread out.
pub fn place(name: &str, partitions: u32, factor: u32, members: &[u64]) -> Vec<Vec<u64>> {
    let start = name.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    (0..partitions as usize)
        .map(|p| (0..factor as usize).map(|r| members[(start + p + r) % members.len()]).collect())
        .collect()
}

impl Broker {
    /// A topic of the cluster: placed on `replication_factor` brokers and agreed through the
    /// metadata group; every broker makes it when it applies the change.
    pub(super) async fn create_topic_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: String,
        partitions: u32,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        replication_factor: Option<u32>,
    ) -> PendingReply {
        if let Err(e) = silt_storage::check_topic(&name, partitions) {
            return ready(storage_error(e));
        }
        let mut members = cluster.members();
        members.sort_unstable();
        let factor = replication_factor.unwrap_or(REPLICATION_FACTOR_DEFAULT.min(members.len() as u32));
        if factor == 0 || factor as usize > members.len() {
            return ready(error(
                ErrorCode::InvalidRequest,
                format!("replication factor {factor}: the cluster has {} brokers", members.len()),
            ));
        }
        let command = Command::Meta(MetaCommand::CreateTopic {
            replicas: place(&name, partitions, factor, &members),
            name: name.clone(),
            partitions,
            retention_ms,
            retention_bytes,
            created_ms: now_ms(),
        });
        let outcome = cluster.propose(GroupId::Meta, command).await;
        let (this, cluster) = (self.clone(), cluster.clone());
        Box::pin(async move {
            let (_, index) = match settled(outcome).await {
                Ok(done) => done,
                Err(reply) => return reply,
            };
            cluster.applied_meta(index).await;
            match this.describe(&name) {
                Ok(info) => (Response::Topic(info), Bytes::new()),
                Err(e) => storage_error(e),
            }
        })
    }

    /// A produce to a replicated partition: the batch is an entry of the partition's group,
    /// acknowledged once committed (a quorum has it durable) and applied.
    pub(super) async fn produce_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        topic: &str,
        partition: u32,
        frame: Frame,
    ) -> PendingReply {
        if let Err(e) = batch::validate(frame.payload()) {
            return ready(wire_error(&e));
        }
        if cluster.partitions(topic).is_none_or(|n| partition >= n) {
            return ready(error(
                ErrorCode::UnknownPartition,
                format!("{topic} has no partition {partition}"),
            ));
        }
        if let Err(refused) = self.durability.admit(frame.payload().len() as u64) {
            return ready(refusal(refused));
        }
        let started = std::time::Instant::now();
        let records = u64::from(batch::peek_header(frame.payload()).0);
        let bytes = frame.payload().len() as u64;
        let records_in = self.metrics.records_in.with_label_values(&[topic]);
        let bytes_in = self.metrics.bytes_in.with_label_values(&[topic]);
        let ack_seconds = self.metrics.ack_seconds.clone();
        let group = GroupId::Partition { topic: topic.to_string(), partition };
        let command = Command::Append { batch: frame.payload().to_vec(), time_ms: now_ms() };
        // Queued in call order, so a stream's batches are proposed in the order they came.
        let outcome = cluster.propose(group, command).await;
        Box::pin(async move {
            match settled(outcome).await {
                Ok((Applied::Appended { base_offset, duplicate }, _)) => {
                    if !duplicate {
                        records_in.inc_by(records);
                        bytes_in.inc_by(bytes);
                        ack_seconds.observe(started.elapsed().as_secs_f64());
                    }
                    (Response::Produced { base_offset, duplicate }, Bytes::new())
                }
                Ok((other, _)) => {
                    error(ErrorCode::Storage, format!("unexpected outcome of an append: {other:?}"))
                }
                Err(reply) => reply,
            }
        })
    }

    /// A producer id claimed through the metadata group, held by `session` once this broker
    /// applied the claim.
    pub(super) async fn init_producer_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        session: &Arc<Session>,
        principal: &Principal,
        id: Option<u64>,
    ) -> PendingReply {
        let fresh = id.is_none();
        let id = id.unwrap_or_else(crate::auth::producers::fresh_id);
        let command = Command::Meta(MetaCommand::ClaimProducer {
            id,
            fresh,
            principal: principal.name.clone(),
            now_ms: now_ms(),
        });
        let outcome = cluster.propose(GroupId::Meta, command).await;
        let (cluster, session) = (cluster.clone(), session.clone());
        Box::pin(async move {
            match settled(outcome).await {
                Ok((Applied::Producer { id, epoch }, index)) => {
                    cluster.applied_meta(index).await;
                    session.hold_producer(id, epoch);
                    (Response::Producer { id, epoch }, Bytes::new())
                }
                Ok((other, _)) => {
                    error(ErrorCode::Storage, format!("unexpected outcome of a claim: {other:?}"))
                }
                Err(reply) => reply,
            }
        })
    }

    /// A consumer group's offsets, committed through the metadata group so that every broker
    /// keeps them (a member that moves to another broker finds its group's offsets there).
    /// Answered once committed and applied here; the group's log keeps them durable.
    pub(super) async fn commit_offsets_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        group: String,
        member_id: Option<String>,
        offsets: Vec<silt_wire::PartitionOffset>,
    ) -> PendingReply {
        if let Some(m) = &member_id {
            if !self.groups.lock().expect("group lock").is_member(&group, m) {
                return ready(group_error(GroupError::UnknownMember, &group));
            }
        }
        for o in &offsets {
            if let Err(e) = self.store.partition(&o.topic, o.partition) {
                return ready(storage_error(e));
            }
        }
        let offsets = offsets.into_iter().map(|o| (o.topic, o.partition, o.offset)).collect();
        let outcome = cluster
            .propose(GroupId::Meta, Command::Meta(MetaCommand::CommitOffsets { group, offsets }))
            .await;
        let cluster = cluster.clone();
        Box::pin(async move {
            match settled(outcome).await {
                Ok((_, index)) => {
                    cluster.applied_meta(index).await;
                    (Response::Done, Bytes::new())
                }
                Err(reply) => reply,
            }
        })
    }

    /// A change to the device registry in a cluster: decided here (a new key drawn), applied by
    /// every broker through the metadata group, answered once applied here.
    pub(super) async fn device_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        principal: Arc<Principal>,
        request: Request,
    ) -> PendingReply {
        let now = now_ms();
        let (id, change, keyed) = match request {
            Request::AddDevice { id } => (id, devices::decide_add(now), true),
            Request::RotateDevice { id, overlap_ms } => (id, devices::decide_rotate(overlap_ms, now), true),
            Request::RevokeDevice { id } => (id, Ok(devices::DeviceChange::Revoke { now_ms: now }), false),
            other => {
                return ready(error(
                    ErrorCode::InvalidRequest,
                    format!("{} is not a device change", rights::name(&other)),
                ))
            }
        };
        if let Err(reason) = silt_wire::check_device_id(&id) {
            return ready(error(ErrorCode::InvalidRequest, reason));
        }
        let change = match change {
            Ok(change) => change,
            Err(e) => return ready(error(e.code, e.message)),
        };
        let outcome = cluster
            .propose(GroupId::Meta, Command::Meta(MetaCommand::Device { id: id.clone(), change }))
            .await;
        let (this, cluster) = (self.clone(), cluster.clone());
        Box::pin(async move {
            match settled(outcome).await {
                Ok((Applied::Device(sealed), index)) => {
                    cluster.applied_meta(index).await;
                    let made = devices::decode(&id, &sealed).map(|entry| devices::info(&entry, &id, keyed));
                    match keyed {
                        true => this.keyed_device(&principal, &id, made),
                        false => registry_reply(made.map(Response::Device)),
                    }
                }
                Ok((other, _)) => {
                    error(ErrorCode::Storage, format!("unexpected outcome of a device change: {other:?}"))
                }
                Err(reply) => reply,
            }
        })
    }

    /// A request about principals and rights in a cluster: decided here (off the async
    /// threads: a password is hashed), then, for a change, applied by every broker through the
    /// metadata group; answered once this broker applied it.
    pub(super) fn auth_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        principal: &Arc<Principal>,
        request: Request,
    ) -> PendingReply {
        let (auth, cluster, principal) = (self.auth.clone(), cluster.clone(), principal.clone());
        Box::pin(async move {
            let decided =
                tokio::task::spawn_blocking(move || auth.decide(&principal, request, now_ms())).await;
            let (change, answer) = match decided {
                Ok(Ok(crate::auth::changes::Decided::Answer(answer))) => return (answer, Bytes::new()),
                Ok(Ok(crate::auth::changes::Decided::Change(change, answer))) => (change, answer),
                Ok(Err(r)) => return error(r.code, r.message),
                Err(e) => return error(ErrorCode::Storage, format!("auth task failed: {e}")),
            };
            let proposal = cluster.propose(GroupId::Meta, Command::Meta(MetaCommand::Auth(change))).await;
            match settled(proposal).await {
                Ok((_, index)) => {
                    cluster.applied_meta(index).await;
                    (answer, Bytes::new())
                }
                Err(reply) => reply,
            }
        })
    }

    /// The cluster's brokers and partitions; a broker running alone is a cluster of one node
    /// (id 0) that leads every partition.
    pub(super) async fn cluster_status(&self) -> Reply {
        let info = match self.cluster.get() {
            Some(cluster) => cluster.status().await,
            None => {
                let mut partitions = Vec::new();
                for meta in self.store.topics() {
                    if rights::is_internal(&meta.name) {
                        continue;
                    }
                    for p in 0..meta.partitions {
                        partitions.push(ReplicaInfo {
                            topic: meta.name.clone(),
                            partition: p,
                            leader: Some(0),
                            replicas: vec![0],
                            committed: None,
                        });
                    }
                }
                ClusterInfo {
                    node_id: 0,
                    nodes: vec![NodeInfo {
                        id: 0,
                        state: "up".into(),
                        client_address: None,
                        cluster_address: String::new(),
                        metadata_leader: true,
                    }],
                    partitions,
                }
            }
        };
        (Response::Cluster(info), Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn replicas_are_distinct_and_spread() {
        let placed = place("t", 4, 3, &[1, 2, 3, 4, 5]);
        for replicas in &placed {
            let mut r = replicas.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 3, "{replicas:?}");
        }
        assert_ne!(placed[0][0], placed[1][0], "leaders-to-be turn through the brokers");
        assert_eq!(place("t", 1, 1, &[7]), vec![vec![7]]);
    }
}
