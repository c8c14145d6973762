//! What `silt cluster status` shows: every broker asked for its own view, put together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use silt_wire::{ClusterInfo, NodeInfo, ReplicaInfo};

use super::net::{NodeStatus, Rpc, RpcReply};
use super::Cluster;

/// How long the broker answering waits for each other broker's view.
const STATUS_TIMEOUT: Duration = Duration::from_millis(300);

impl Cluster {
    /// This broker's view: the leader of each group it runs.
    pub(super) async fn local_status(&self) -> NodeStatus {
        let metadata_leader = self.meta.get().and_then(|m| m.metrics().borrow_watched().current_leader);
        let mut groups = Vec::new();
        for g in self.groups.iter() {
            let m = g.value().metrics().borrow_watched().clone();
            let committed =
                (m.state == ServerState::Leader).then(|| m.cluster_committed.map(|c| c.index)).flatten();
            groups.push((g.key().0.clone(), g.key().1, m.current_leader, committed));
        }
        NodeStatus {
            node_id: self.node_id(),
            client_address: self.client_address.to_string(),
            metadata_leader,
            groups,
        }
    }

    /// The cluster as seen from here and from every broker that answers in time.
    pub async fn status(self: &Arc<Self>) -> ClusterInfo {
        let mut views: BTreeMap<u64, NodeStatus> = BTreeMap::new();
        let asks = self.config.peers.iter().filter(|p| p.id != self.node_id()).map(|p| {
            let cluster = self.clone();
            async move { (p.id, cluster.net.call(p.id, &Rpc::Status, STATUS_TIMEOUT).await) }
        });
        for (id, reply) in futures_util::future::join_all(asks).await {
            if let Ok(RpcReply::Status(s)) = reply {
                views.insert(id, s);
            }
        }
        views.insert(self.node_id(), self.local_status().await);
        let metadata_leader = views.get(&self.node_id()).and_then(|v| v.metadata_leader);
        let nodes = self
            .config
            .peers
            .iter()
            .map(|p| NodeInfo {
                id: p.id,
                state: if views.contains_key(&p.id) { "up" } else { "down" }.to_string(),
                client_address: views.get(&p.id).map(|v| v.client_address.clone()),
                cluster_address: p.addr.to_string(),
                metadata_leader: metadata_leader == Some(p.id),
            })
            .collect();
        let topics = self.meta_state.read().expect("metadata lock").topics.clone();
        let mut partitions = Vec::new();
        for (topic, placement) in topics {
            for (p, replicas) in placement.replicas.iter().enumerate() {
                let p = p as u32;
                let seen = |v: &NodeStatus| v.groups.iter().find(|g| g.0 == topic && g.1 == p).cloned();
                // A replica that says it leads (and has a committed index to show) is the
                // leader; else what most of the replicas that answered think.
                let mut leader = None;
                let mut committed = None;
                let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
                for (id, view) in &views {
                    if let Some((_, _, seen_leader, seen_committed)) = seen(view) {
                        if seen_leader == Some(*id) && seen_committed.is_some() {
                            leader = Some(*id);
                            committed = seen_committed;
                        }
                        if let Some(l) = seen_leader {
                            *votes.entry(l).or_default() += 1;
                        }
                    }
                }
                // A leader that answered is preferred to one that did not (the views of a
                // leader that just died lag behind); one that did not is still the best answer
                // a broker cut off from it has.
                let leader = leader.or_else(|| {
                    votes.into_iter().max_by_key(|(l, n)| (views.contains_key(l), *n)).map(|(l, _)| l)
                });
                partitions.push(ReplicaInfo {
                    topic: topic.clone(),
                    partition: p,
                    leader,
                    replicas: replicas.clone(),
                    committed,
                });
            }
        }
        ClusterInfo { node_id: self.node_id(), nodes, partitions }
    }
}
