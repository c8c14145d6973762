//! A cluster of `silt-broker` processes on loopback for replication tests: prepared with
//! `silt-broker cluster-init`, each broker a [`BrokerProcess`] with its node id, cluster address
//! and the same `--peers`, and a client that knows them all.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use silt_client::{Client, ClientConfig};
use silt_wire::ClusterInfo;
use tempfile::TempDir;

use super::process::{free_udp_port, BrokerProcess};
use super::server_bin::broker_bin;
use super::{free_tcp_port, READY_TIMEOUT};

/// How long a cluster may take to form once its brokers serve.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

pub struct LocalCluster {
    /// Holds `ca.pem` and `admin.token` (the brokers' own directories are theirs).
    pub dir: TempDir,
    /// By node id - 1.
    pub nodes: Vec<BrokerProcess>,
    pub token: String,
}

impl LocalCluster {
    /// Starts `n` brokers and waits until every one is up and one leads the metadata group.
    pub async fn start(n: u64) -> LocalCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new(broker_bin())
            .arg("cluster-init")
            .arg(dir.path())
            .args(["--nodes", &n.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running silt-broker cluster-init");
        assert!(status.success(), "silt-broker cluster-init failed");
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
        let peers: Vec<String> =
            cluster_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
        let peers = peers.join(",");
        let mut nodes = Vec::new();
        for id in 1..=n {
            let own = tempfile::tempdir().expect("temp dir");
            std::fs::rename(dir.path().join(format!("node-{id}")), own.path().join("data"))
                .expect("moving a prepared data directory");
            let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
            let args: Vec<OsString> = [
                "--data-dir".into(),
                own.path().join("data").into_os_string(),
                "--listen".into(),
                listen.to_string().into(),
                "--admin-listen".into(),
                admin.to_string().into(),
                "--node-id".into(),
                id.to_string().into(),
                "--cluster-listen".into(),
                format!("127.0.0.1:{}", cluster_ports[(id - 1) as usize]).into(),
                "--peers".into(),
                peers.clone().into(),
            ]
            .into();
            let mut node = BrokerProcess::with_args(own, listen, admin, args);
            node.spawn();
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready().await;
        }
        let token =
            std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token").trim().to_string();
        let cluster = LocalCluster { dir, nodes, token };
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            if let Ok(status) = cluster.status().await {
                if status.nodes.iter().all(|n| n.state == "up")
                    && status.nodes.iter().any(|n| n.metadata_leader)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the cluster did not form within {FORM_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// The CA clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client configuration listing `nodes` (ids), in that order.
    pub fn config_for(&self, nodes: &[u64]) -> ClientConfig {
        let brokers: Vec<String> = nodes.iter().map(|id| self.node(*id).listen.to_string()).collect();
        ClientConfig::new(brokers.join(","), &self.ca())
            .expect("client config")
            .with_credential(Some(silt_client::Credential::Token(self.token.clone())))
    }

    /// A client of every broker.
    pub async fn client(&self) -> Client {
        let ids: Vec<u64> = (1..=self.nodes.len() as u64).collect();
        Client::connect(self.config_for(&ids)).await.expect("connecting to the cluster")
    }

    pub fn node(&self, id: u64) -> &BrokerProcess {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut BrokerProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The cluster's status from the first broker that answers.
    pub async fn status(&self) -> Result<ClusterInfo, silt_client::ClientError> {
        let client = self.client().await;
        let status = tokio::time::timeout(READY_TIMEOUT, client.cluster_status()).await;
        client.close().await;
        status.unwrap_or_else(|_| Err(silt_client::ClientError::Timeout(READY_TIMEOUT.as_millis() as u64)))
    }

    /// The leader of `topic`/`partition` other than `not`, once one is known (bounded).
    pub async fn leader_of(&self, topic: &str, partition: u32, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            if let Ok(status) = self.status().await {
                let leader = status
                    .partitions
                    .iter()
                    .find(|p| p.topic == topic && p.partition == partition)
                    .and_then(|p| p.leader);
                if let Some(leader) = leader.filter(|l| Some(*l) != not) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader of {topic}/{partition} within {FORM_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
