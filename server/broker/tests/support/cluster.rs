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

use super::netns::Namespaces;
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
    /// The brokers' network namespaces, when they have their own (dropped after the brokers).
    pub net: Option<Namespaces>,
}

impl LocalCluster {
    /// Starts `n` brokers on loopback and waits until every one is up and one leads the
    /// metadata group.
    pub async fn start(n: u64) -> LocalCluster {
        Self::start_with(n, None).await
    }

    /// Starts `n` brokers, each in a network namespace of its own ([`Namespaces`]), at
    /// 10.213.S.I ports 7400 (clients), 7401 (admin) and 7402 (brokers).
    pub async fn start_isolated(n: u64) -> LocalCluster {
        Self::start_with(n, Some(Namespaces::create(n))).await
    }

    async fn start_with(n: u64, net: Option<Namespaces>) -> LocalCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let sans: Vec<String> = match &net {
            Some(ns) => (1..=n).flat_map(|i| ["--san".to_string(), ns.addr(i).to_string()]).collect(),
            None => Vec::new(),
        };
        let status = std::process::Command::new(broker_bin())
            .arg("cluster-init")
            .arg(dir.path())
            .args(["--nodes", &n.to_string()])
            .args(&sans)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running silt-broker cluster-init");
        assert!(status.success(), "silt-broker cluster-init failed");
        // Per node: where clients, the admin port and other brokers reach it.
        let addresses: Vec<(SocketAddr, SocketAddr, SocketAddr)> = (1..=n)
            .map(|i| match &net {
                Some(ns) => {
                    let at = |port: u16| SocketAddr::new(ns.addr(i).into(), port);
                    (at(7400), at(7401), at(7402))
                }
                None => {
                    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
                    (at(free_udp_port()), at(free_tcp_port()), at(free_udp_port()))
                }
            })
            .collect();
        let peers: Vec<String> =
            addresses.iter().enumerate().map(|(i, a)| format!("{}@{}", i + 1, a.2)).collect();
        let peers = peers.join(",");
        let mut nodes = Vec::new();
        for id in 1..=n {
            let own = tempfile::tempdir().expect("temp dir");
            std::fs::rename(dir.path().join(format!("node-{id}")), own.path().join("data"))
                .expect("moving a prepared data directory");
            let (listen, admin, cluster) = addresses[(id - 1) as usize];
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
                cluster.to_string().into(),
                "--peers".into(),
                peers.clone().into(),
            ]
            .into();
            let mut node = BrokerProcess::with_args(own, listen, admin, args);
            if let Some(ns) = &net {
                node = node.in_namespace(&ns.name(id));
            }
            node.spawn();
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready().await;
        }
        let token =
            std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token").trim().to_string();
        let cluster = LocalCluster { dir, nodes, token, net };
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
        let ids: Vec<u64> = (1..=self.nodes.len() as u64).collect();
        self.status_from(&ids).await
    }

    /// The cluster's status from the first of `ids` that answers.
    pub async fn status_from(&self, ids: &[u64]) -> Result<ClusterInfo, silt_client::ClientError> {
        let client = Client::connect(self.config_for(ids)).await?;
        let status = tokio::time::timeout(READY_TIMEOUT, client.cluster_status()).await;
        client.close().await;
        status.unwrap_or_else(|_| Err(silt_client::ClientError::Timeout(READY_TIMEOUT.as_millis() as u64)))
    }

    /// The leader of `topic`/`partition` other than `not`, once one is known (bounded), as
    /// the brokers other than `not` see it.
    pub async fn leader_of(&self, topic: &str, partition: u32, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let ids: Vec<u64> = (1..=self.nodes.len() as u64).filter(|id| Some(*id) != not).collect();
        loop {
            if let Ok(status) = self.status_from(&ids).await {
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
