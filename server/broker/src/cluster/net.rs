//! Broker to broker: Raft's calls, forwarded proposals and status over QUIC with mutual TLS.
//! Each broker serves on its cluster address with its certificate and accepts only
//! connections that present a certificate of the cluster's CA; it calls node N expecting a
//! certificate for `silt-node-N`. A call is one bidirectional stream: a postcard request
//! capped at `RPC_BYTES_MAX`, then the reply, capped alike.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend};
use serde::{Deserialize, Serialize};

use super::config::ClusterConfig;
use super::types::{decode, encode, Command, GroupId, Reply, Types};

/// Largest request or reply on the cluster's streams: a round of appends of several largest
/// batches.
pub const RPC_BYTES_MAX: usize = 64 << 20;
const ALPN: &[u8] = b"silt-cluster/1";

/// A call from one broker to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(GroupId, AppendEntriesRequest<Types>),
    Vote(GroupId, VoteRequest<Types>),
    PreVote(GroupId, VoteRequest<Types>),
    /// Propose commands to the group, in order, which the callee leads (else it says who does).
    Propose(GroupId, Vec<Command>),
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Append(AppendEntriesResponse<Types>),
    Vote(VoteResponse<Types>),
    Proposed(Vec<Proposed>),
    Status(NodeStatus),
    /// The callee could not take the call (a group it does not run, a stopped group).
    Refused(String),
}

/// What became of a proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposed {
    /// Committed and applied at `index` with this outcome.
    Done {
        reply: Reply,
        index: u64,
    },
    /// The callee does not lead the group; the leader it knows, if any.
    NotLeader(Option<u64>),
    Failed(String),
}

/// One broker's view of itself, for `silt cluster status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub client_address: String,
    pub metadata_leader: Option<u64>,
    /// Each partition group it runs: topic, partition, the leader it sees, the committed index
    /// when it leads.
    pub groups: Vec<(String, u32, Option<u64>, Option<u64>)>,
}

/// The calling side: one connection per peer, made again when lost.
pub struct Net {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peers: HashMap<u64, SocketAddr>,
    connections: Mutex<HashMap<u64, quinn::Connection>>,
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(RPC_BYTES_MAX as u32));
    t.receive_window(quinn::VarInt::from_u32(4 * RPC_BYTES_MAX as u32));
    t.send_window(4 * RPC_BYTES_MAX as u64);
    // A peer that stops answering is noticed within about a second, so its replies fail fast.
    t.max_idle_timeout(Some(Duration::from_millis(1500).try_into().expect("fits")));
    t.keep_alive_interval(Some(Duration::from_millis(300)));
    t
}

/// The server side's endpoint on the cluster address: mutual TLS against the cluster's CA.
pub fn server_endpoint(config: &ClusterConfig) -> anyhow::Result<quinn::Endpoint> {
    let (certs, key) = silt_tls::load(&config.cert, &config.key)?;
    let roots = crate::quic::client_roots(&config.ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .context("the cluster CA certificate")?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 setup")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("loading the cluster certificate")?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).context("QUIC TLS setup")?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport()));
    quinn::Endpoint::server(server, config.listen)
        .with_context(|| format!("listening for brokers on {} (UDP)", config.listen))
}

impl Net {
    pub fn new(config: &ClusterConfig) -> anyhow::Result<Arc<Net>> {
        let (certs, key) = silt_tls::load(&config.cert, &config.key)?;
        let roots = crate::quic::client_roots(&config.ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 setup")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("the cluster certificate as a client certificate")?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).context("QUIC TLS setup")?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport()));
        let bind: SocketAddr =
            if config.listen.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("a literal address");
        let endpoint = quinn::Endpoint::client(bind).context("a UDP socket for calls to brokers")?;
        let peers = config.peers.iter().map(|p| (p.id, p.addr)).collect();
        Ok(Arc::new(Net { endpoint, client, peers, connections: Mutex::new(HashMap::new()) }))
    }

    async fn connection(&self, node: u64) -> anyhow::Result<quinn::Connection> {
        if let Some(c) = self.connections.lock().expect("connections lock").get(&node) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = *self.peers.get(&node).with_context(|| format!("node {node} is not a peer"))?;
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, &format!("silt-node-{node}"))
            .with_context(|| format!("calling node {node} at {addr}"))?;
        let connection = connecting.await.with_context(|| format!("connecting to node {node} at {addr}"))?;
        self.connections.lock().expect("connections lock").insert(node, connection.clone());
        Ok(connection)
    }

    /// One call to `node`, within `timeout`.
    pub async fn call(&self, node: u64, rpc: &Rpc, timeout: Duration) -> anyhow::Result<RpcReply> {
        let body = encode(rpc)?;
        anyhow::ensure!(body.len() <= RPC_BYTES_MAX, "a call of {} bytes is too large", body.len());
        let call = async {
            let connection = self.connection(node).await?;
            let (mut send, mut recv) = connection.open_bi().await.context("opening a stream")?;
            send.write_all(&body).await.context("sending a call")?;
            send.finish().context("ending a call")?;
            let reply = recv.read_to_end(RPC_BYTES_MAX).await.context("reading a reply")?;
            Ok::<_, anyhow::Error>(decode::<RpcReply>(&reply)?)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(reply) => reply,
            Err(_) => anyhow::bail!("node {node} did not answer within {timeout:?}"),
        }
    }
}

/// Serves calls from other brokers until the endpoint closes: `handle` answers each.
pub async fn serve<H, F>(endpoint: quinn::Endpoint, handle: H)
where
    H: Fn(Rpc) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = RpcReply> + Send + 'static,
{
    while let Some(incoming) = endpoint.accept().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "a broker-to-broker connection failed its handshake");
                    return;
                }
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let reply = match recv.read_to_end(RPC_BYTES_MAX).await {
                        Ok(body) => match decode::<Rpc>(&body) {
                            Ok(rpc) => handle(rpc).await,
                            Err(e) => RpcReply::Refused(format!("undecodable call: {e}")),
                        },
                        Err(e) => RpcReply::Refused(format!("reading the call: {e}")),
                    };
                    if let Ok(bytes) = encode(&reply) {
                        let _ = send.write_all(&bytes).await;
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

/// openraft's network for one group: calls go to the peers through [`Net`].
#[derive(Clone)]
pub struct GroupNetwork {
    pub net: Arc<Net>,
    pub group: GroupId,
}

pub struct GroupConnection {
    net: Arc<Net>,
    group: GroupId,
    target: u64,
}

impl RaftNetworkFactory<Types> for GroupNetwork {
    type Network = GroupConnection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> GroupConnection {
        GroupConnection { net: self.net.clone(), group: self.group.clone(), target }
    }
}

fn unreachable(message: impl std::fmt::Display) -> Unreachable<Types> {
    Unreachable::from_string(message.to_string())
}

impl GroupConnection {
    async fn call(&self, rpc: Rpc, option: &RPCOption) -> Result<RpcReply, Unreachable<Types>> {
        match self.net.call(self.target, &rpc, option.hard_ttl()).await {
            Ok(RpcReply::Refused(why)) => Err(unreachable(format!("node {}: {why}", self.target))),
            Ok(reply) => Ok(reply),
            Err(e) => Err(unreachable(format!("{e:#}"))),
        }
    }
}

impl RaftNetworkV2<Types> for GroupConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        match self.call(Rpc::Append(self.group.clone(), rpc), &option).await? {
            RpcReply::Append(r) => Ok(r),
            other => Err(RPCError::Unreachable(unreachable(format!("unexpected reply {other:?}")))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        match self.call(Rpc::Vote(self.group.clone(), rpc), &option).await? {
            RpcReply::Vote(r) => Ok(r),
            other => Err(RPCError::Unreachable(unreachable(format!("unexpected reply {other:?}")))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        match self.call(Rpc::PreVote(self.group.clone(), rpc), &option).await? {
            RpcReply::Vote(r) => Ok(r),
            other => Err(RPCError::Unreachable(unreachable(format!("unexpected reply {other:?}")))),
        }
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<Types>,
        _snapshot: SnapshotOf<Types, Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        Err(StreamingError::Unreachable(unreachable("Silt's groups keep their logs and send no snapshots")))
    }
}
