//! A broker's place in a cluster: the `[cluster]` table of its configuration file, or the
//! flags `--node-id`, `--cluster-listen` and `--peers`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The resolved cluster settings of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This broker's id, unique in the cluster, at least 1.
    pub node_id: u64,
    /// Where other brokers reach this one (QUIC, mTLS).
    pub listen: SocketAddr,
    /// The initial members, this broker among them, by id: the same list on every broker.
    pub peers: Vec<Peer>,
    /// The cluster's CA (PEM): it signed every broker's certificate, which the brokers check
    /// of each other, and clients trust it.
    pub ca: PathBuf,
    /// This broker's certificate and key (PEM), signed by `ca`: it serves both clients and
    /// other brokers with it, and presents it to the brokers it calls.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One initial member: its node id and broker-to-broker address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: SocketAddr,
}

/// The `[cluster]` table. Every key is optional here; flags fill in or override.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub node_id: Option<u64>,
    pub listen: Option<SocketAddr>,
    /// `ID@HOST:PORT,...`
    pub peers: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where `silt-broker cluster-init` puts a node's certificates in its data directory, and
/// where a broker looks for them when neither file nor flags name them.
pub const CLUSTER_DIR: &str = "cluster";

impl FileCluster {
    /// Whether any cluster setting is given (else the broker runs alone, as a single node).
    pub fn is_set(&self) -> bool {
        self.node_id.is_some() || self.listen.is_some() || self.peers.is_some()
    }

    /// The settings, checked: a node id, a listen address, peers that include this node with
    /// unique ids and addresses. Certificates default to `DATA_DIR/cluster/{ca,cert,key}.pem`.
    pub fn resolve(&self, data_dir: &Path) -> anyhow::Result<ClusterConfig> {
        let node_id = self.node_id.context("a cluster member needs --node-id (or node_id in [cluster])")?;
        anyhow::ensure!(node_id >= 1, "--node-id must be at least 1");
        let peers_text = self
            .peers
            .as_deref()
            .context("a cluster member needs --peers ID@HOST:PORT,... (or peers in [cluster])")?;
        let peers = parse_peers(peers_text)?;
        let own = peers.iter().find(|p| p.id == node_id).with_context(|| {
            format!("--peers {peers_text:?} does not list this broker's --node-id {node_id}")
        })?;
        let listen = self.listen.unwrap_or(own.addr);
        let dir = data_dir.join(CLUSTER_DIR);
        Ok(ClusterConfig {
            node_id,
            listen,
            peers,
            ca: self.ca.clone().unwrap_or_else(|| dir.join("ca.pem")),
            cert: self.cert.clone().unwrap_or_else(|| dir.join("cert.pem")),
            key: self.key.clone().unwrap_or_else(|| dir.join("key.pem")),
        })
    }
}

/// Parses `ID@HOST:PORT,...` (spaces around entries and a trailing comma are fine).
pub fn parse_peers(text: &str) -> anyhow::Result<Vec<Peer>> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) =
            entry.split_once('@').with_context(|| format!("peer {entry:?} is not ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id >= 1)
            .with_context(|| format!("peer {entry:?}: the id must be a whole number of at least 1"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("peer {entry:?}: {addr:?} is not an IP address and port"))?;
        anyhow::ensure!(!peers.iter().any(|p| p.id == id), "peer id {id} is listed twice");
        anyhow::ensure!(!peers.iter().any(|p| p.addr == addr), "peer address {addr} is listed twice");
        peers.push(Peer { id, addr });
    }
    anyhow::ensure!(!peers.is_empty(), "--peers lists no broker");
    peers.sort_by_key(|p| p.id);
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_are_checked() {
        let peers = parse_peers(" 2@127.0.0.1:9002, 1@127.0.0.1:9001 ,").unwrap();
        assert_eq!(peers.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2]);
        for bad in
            ["", "1@x:1", "0@127.0.0.1:1", "a@127.0.0.1:1", "1@127.0.0.1:1,1@127.0.0.1:2", "127.0.0.1:1"]
        {
            assert!(parse_peers(bad).is_err(), "{bad:?}");
        }
        let c = FileCluster { node_id: Some(3), peers: Some("1@127.0.0.1:1".into()), ..Default::default() };
        let e = c.resolve(Path::new("d")).unwrap_err().to_string();
        assert!(e.contains("does not list"), "{e}");
        let c = FileCluster { node_id: Some(1), peers: Some("1@127.0.0.1:1".into()), ..Default::default() };
        let r = c.resolve(Path::new("d")).unwrap();
        assert_eq!((r.listen.port(), r.cert.clone()), (1, Path::new("d/cluster/cert.pem").to_path_buf()));
    }
}
