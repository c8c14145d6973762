//! What `ClusterStatus` answers: a cluster's brokers and its partitions' leaders and replicas.

use rkyv::{Archive, Deserialize, Serialize};

/// A cluster as one broker sees it: its brokers and every partition's leader and replicas.
/// A broker running alone is a cluster of one node (id 0) without replication.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The broker that answered.
    pub node_id: u64,
    pub nodes: Vec<NodeInfo>,
    pub partitions: Vec<ReplicaInfo>,
}

/// One broker of a cluster.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: u64,
    /// `up` (it answered the broker asking), `down` (it did not, in time).
    pub state: String,
    /// The address clients reach it at, when it answered.
    pub client_address: Option<String>,
    pub cluster_address: String,
    /// Whether it leads the metadata group, as the broker asking sees it.
    pub metadata_leader: bool,
}

/// One partition's replicas and their leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub topic: String,
    pub partition: u32,
    /// The node leading its group, when one is known.
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    /// The last committed entry of its group, as its leader reports it.
    pub committed: Option<u64>,
}
