//! The connection to a broker and request/response channels over QUIC streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use silt_wire::frame::{self, Frame};
use silt_wire::message::{decode_response, encode_request};
use silt_wire::{Credential, RepairInfo, Request, Response, TopicInfo};
use tokio::sync::Mutex;

use crate::ClientError;

/// Largest response frame the client accepts: a fetch of up to 64 MiB plus its head.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024 + 64 * 1024;

/// How to reach a broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of the broker's QUIC listener, or several, comma-separated: a new
    /// connection tries them in order, starting with the one that answered last, until one
    /// answers and takes the credential.
    pub broker: String,
    /// PEM certificates to trust (the broker's `DATA_DIR/tls/cert.pem`).
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// What each new connection authenticates with; `None`: nothing (every request is then
    /// refused by a broker with authentication on).
    pub credential: Option<Credential>,
    /// A client certificate chain and key (mTLS): with a broker that trusts its CA, the
    /// connection acts as the principal the certificate names.
    pub client_cert: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl ClientConfig {
    /// A configuration for `broker` trusting the PEM certificate(s) in `ca_cert`.
    pub fn new(broker: impl Into<String>, ca_cert: &Path) -> Result<ClientConfig, ClientError> {
        let certs =
            CertificateDer::pem_file_iter(ca_cert).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(
                |e| ClientError::Tls(format!("reading CA certificate {}: {e}", ca_cert.display())),
            )?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!("{} holds no PEM certificate", ca_cert.display())));
        }
        Ok(ClientConfig {
            broker: broker.into(),
            ca_certs: certs,
            connect_timeout: Duration::from_secs(5),
            credential: None,
            client_cert: None,
        })
    }

    /// The same configuration, presenting the client certificate chain in `cert` (PEM) with
    /// its key in `key` (PEM).
    pub fn with_client_cert(self, cert: &Path, key: &Path) -> Result<ClientConfig, ClientError> {
        let read = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            ClientError::Tls(format!("reading the client {what} {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| read("certificate", cert, &e))?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!("{} holds no PEM certificate", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read("key", key, &e))?;
        Ok(ClientConfig { client_cert: Some((certs, Arc::new(key))), ..self })
    }

    /// The same configuration, authenticating with an API token.
    pub fn with_token(self, token: impl Into<String>) -> ClientConfig {
        ClientConfig { credential: Some(Credential::Token(token.into())), ..self }
    }

    /// The same configuration, authenticating with `credential` when it is `Some`.
    pub fn with_credential(self, credential: Option<Credential>) -> ClientConfig {
        ClientConfig { credential, ..self }
    }
}

/// Where a command-line program looks for the token when given none: the admin token a
/// broker started in the same directory wrote.
pub const DEFAULT_TOKEN_FILE: &str = "silt-data/admin.token";

/// The credential a command-line program authenticates with: `token` (from `--token` or
/// `SILT_TOKEN`), else the contents of `token_file`, else [`DEFAULT_TOKEN_FILE`] when it
/// exists; `None` when there is none of these.
pub fn token_credential(
    token: Option<&str>,
    token_file: Option<&Path>,
) -> Result<Option<Credential>, ClientError> {
    let token = match (token, token_file) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            ClientError::InvalidArgument(format!("reading the token file {}: {e}", path.display()))
        })?),
        (None, None) => std::fs::read_to_string(DEFAULT_TOKEN_FILE).ok(),
    };
    Ok(token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).map(Credential::Token))
}

struct Inner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    conn: Mutex<Option<quinn::Connection>>,
    /// Producer ids the broker gave this client, claimed again on every new connection.
    producers: std::sync::Mutex<Vec<u64>>,
    /// Which of the listed brokers answered last (an index into the `broker` list).
    answered: std::sync::Mutex<usize>,
}

/// Sends one request on a new stream of `conn` and reads its answer.
async fn ask(conn: &quinn::Connection, request: &Request) -> Result<(Response, Bytes), ClientError> {
    let (send, recv) = conn.open_bi().await?;
    let mut ch = Channel { tx: ChannelSender { send }, rx: ChannelReceiver { recv } };
    ch.send(request, Bytes::new()).await?;
    ch.finish();
    ch.receive().await
}

/// A handle to one broker, cheap to clone. It keeps one QUIC connection and re-establishes it
/// when it is lost; every request runs on its own stream or on a pipelined [`Channel`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn transport() -> quinn::TransportConfig {
    // Same windows as the broker: a window of 100 KB batches must not be flow-control bound.
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(16 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(64 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("fits")));
    // A ping a second: a producer waiting for acks from a broker that was killed and restarted
    // sends nothing else, and the ping is what draws the new process's stateless reset, so
    // this bounds how long the client takes to notice and resend.
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t
}

impl Client {
    /// Connects to the broker (failing fast when it is unreachable).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &config.ca_certs {
            roots.add(c.clone()).map_err(|e| ClientError::Tls(format!("bad CA certificate: {e}")))?;
        }
        let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(&e))?
            .with_root_certificates(roots);
        let crypto = match &config.client_cert {
            Some((certs, key)) => {
                builder.with_client_auth_cert(certs.clone(), key.clone_key()).map_err(|e| tls(&e))?
            }
            None => builder.with_no_client_auth(),
        };
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| tls(&e))?;
        let mut qc = quinn::ClientConfig::new(Arc::new(crypto));
        qc.transport_config(Arc::new(transport()));
        let first = brokers(&config.broker).next().unwrap_or_default();
        let addr = resolve(first).await?;
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| ClientError::Unreachable { addr: config.broker.clone(), reason: e.to_string() })?;
        endpoint.set_default_client_config(qc);
        let client = Client {
            inner: Arc::new(Inner {
                config,
                endpoint,
                conn: Mutex::new(None),
                producers: Default::default(),
                answered: Default::default(),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The broker address this client talks to.
    pub fn broker(&self) -> &str {
        &self.inner.config.broker
    }

    /// The live connection, reconnecting when the previous one was closed.
    pub(crate) async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut guard = self.inner.conn.lock().await;
        self.live(&mut guard).await
    }

    /// Leaves the broker this client is connected to for the next one listed (a broker that
    /// answers but cannot settle requests: cut off from its cluster, say). With one broker
    /// listed it only drops the connection; every user of this client reconnects.
    pub async fn move_on(&self) {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.take() {
            c.close(VarInt::from_u32(0), b"moving to another broker");
        }
        let listed = brokers(&self.inner.config.broker).count().max(1);
        let mut answered = self.inner.answered.lock().expect("answered lock");
        *answered = (*answered + 1) % listed;
    }

    /// The connection in `guard`, replaced by a new one (authenticated, with this client's
    /// producer ids claimed again) when it was closed.
    async fn live(&self, guard: &mut Option<quinn::Connection>) -> Result<quinn::Connection, ClientError> {
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let cfg = &self.inner.config;
        let listed: Vec<&str> = brokers(&cfg.broker).collect();
        if listed.len() <= 1 {
            return self.open(listed.first().copied().unwrap_or_default(), guard).await;
        }
        let start = *self.inner.answered.lock().expect("answered lock") % listed.len();
        let mut last = None;
        for i in 0..listed.len() {
            let at = (start + i) % listed.len();
            match self.open(listed[at], guard).await {
                Ok(conn) => {
                    *self.inner.answered.lock().expect("answered lock") = at;
                    return Ok(conn);
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(broker = listed[at], error = %e, "broker did not answer; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least two brokers were tried"))
    }

    /// A new connection to `broker` (one `HOST:PORT`), authenticated, with this client's
    /// producer ids claimed again, put in `guard`.
    async fn open(
        &self,
        broker: &str,
        guard: &mut Option<quinn::Connection>,
    ) -> Result<quinn::Connection, ClientError> {
        let cfg = &self.inner.config;
        let unreachable = |reason: String| ClientError::Unreachable { addr: broker.to_string(), reason };
        let addr = resolve(broker).await?;
        let host = server_name(broker);
        let connecting = self.inner.endpoint.connect(addr, &host).map_err(|e| unreachable(e.to_string()))?;
        let conn = match tokio::time::timeout(cfg.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!("no answer within {} ms", cfg.connect_timeout.as_millis())))
            }
        };
        if let Some(credential) = &cfg.credential {
            // First thing on a new connection: every later stream acts as this principal.
            let authenticated = ask(&conn, &Request::Authenticate { credential: credential.clone() }).await;
            if let Err(e) = authenticated {
                conn.close(VarInt::from_u32(0), b"authentication failed");
                return Err(e);
            }
        }
        let held: Vec<u64> = self.inner.producers.lock().expect("producer ids lock").clone();
        for id in held {
            // A failure here is the producer's, not the connection's: its next batch is then
            // refused (the id is not held) and it stops with that error.
            if let Err(e) = ask(&conn, &Request::InitProducer { id: Some(id) }).await {
                if e.is_retriable() {
                    return Err(e);
                }
                tracing::warn!(producer_id = id, error = %e, "could not claim the producer id again");
                self.inner.producers.lock().expect("producer ids lock").retain(|&p| p != id);
            }
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Asks the broker for a new producer id, held by this client from now on (claimed again
    /// on every reconnect, which fences any older connection still holding it).
    pub async fn init_producer(&self) -> Result<u64, ClientError> {
        self.claim(None).await.map(|(id, _)| id)
    }

    /// Claims a producer id the broker gave this principal before (kept by a bridge in its
    /// journal, say), at a new epoch. Fails with `UnknownProducer` when the broker does not
    /// know it and `PermissionDenied` when it is another principal's.
    pub async fn claim_producer(&self, id: u64) -> Result<u32, ClientError> {
        self.claim(Some(id)).await.map(|(_, epoch)| epoch)
    }

    /// Stops claiming `id` on reconnects (its producer is gone).
    pub fn release_producer(&self, id: u64) {
        self.inner.producers.lock().expect("producer ids lock").retain(|&p| p != id);
    }

    async fn claim(&self, id: Option<u64>) -> Result<(u64, u32), ClientError> {
        // Under the connection lock, so no reconnect happens between the claim and recording it.
        let mut guard = self.inner.conn.lock().await;
        let conn = self.live(&mut guard).await?;
        match ask(&conn, &Request::InitProducer { id }).await? {
            (Response::Producer { id, epoch }, _) => {
                let mut held = self.inner.producers.lock().expect("producer ids lock");
                if !held.contains(&id) {
                    held.push(id);
                }
                Ok((id, epoch))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Opens a pipelined channel (one QUIC stream).
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        let conn = self.connection().await?;
        let (send, recv) = conn.open_bi().await?;
        Ok(Channel { tx: ChannelSender { send }, rx: ChannelReceiver { recv } })
    }

    /// Sends one request on a fresh stream and returns the response and its payload.
    /// A broker error response becomes `Err`.
    pub async fn request(&self, request: &Request, payload: Bytes) -> Result<(Response, Bytes), ClientError> {
        let mut ch = self.channel().await?;
        ch.send(request, payload).await?;
        ch.finish();
        ch.receive().await
    }

    /// Creates a topic (its replication factor the cluster's default).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<TopicInfo, ClientError> {
        self.create_topic_replicated(name, partitions, retention_ms, retention_bytes, None).await
    }

    /// Creates a topic whose partitions `replication_factor` brokers of the cluster keep.
    pub async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        replication_factor: Option<u32>,
    ) -> Result<TopicInfo, ClientError> {
        let req = Request::CreateTopic {
            name: name.into(),
            partitions,
            retention_ms,
            retention_bytes,
            replication_factor,
        };
        match self.request(&req, Bytes::new()).await?.0 {
            Response::Topic(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster's brokers and every partition's leader and replicas.
    pub async fn cluster_status(&self) -> Result<silt_wire::ClusterInfo, ClientError> {
        match self.request(&Request::ClusterStatus, Bytes::new()).await?.0 {
            Response::Cluster(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a topic and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match self.request(&Request::DeleteTopic { name: name.into() }, Bytes::new()).await?.0 {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// All topics.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        match self.request(&Request::ListTopics, Bytes::new()).await?.0 {
            Response::Topics(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// One topic with its partitions' watermarks and sizes.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        match self.request(&Request::DescribeTopic { name: name.into() }, Bytes::new()).await?.0 {
            Response::Topic(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// Reports the acknowledged offsets of a partition that storage damage destroyed; with
    /// `accept_loss`, accepts their loss so that readers and produces go on past them.
    pub async fn repair_partition(
        &self,
        topic: &str,
        partition: u32,
        accept_loss: bool,
    ) -> Result<RepairInfo, ClientError> {
        let request = Request::RepairPartition { topic: topic.into(), partition, accept_loss };
        match self.request(&request, Bytes::new()).await?.0 {
            Response::Repaired(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        if let Some(c) = self.inner.conn.lock().await.take() {
            c.close(VarInt::from_u32(0), b"client done");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), self.inner.endpoint.wait_idle()).await;
    }
}

pub(crate) fn unexpected(r: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}

/// The `HOST:PORT`s of a `--broker` list, in order.
fn brokers(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|b| !b.is_empty())
}

async fn resolve(broker: &str) -> Result<SocketAddr, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable { addr: broker.to_string(), reason };
    let mut addrs = tokio::net::lookup_host(broker)
        .await
        .map_err(|e| unreachable(format!("cannot resolve (expected HOST:PORT): {e}")))?;
    addrs.next().ok_or_else(|| unreachable("no address".into()))
}

/// The TLS server name for `HOST:PORT`: the host, without IPv6 brackets.
fn server_name(broker: &str) -> String {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// One QUIC stream carrying requests in order and their responses in the same order.
pub struct Channel {
    tx: ChannelSender,
    rx: ChannelReceiver,
}

/// The request half of a [`Channel`].
pub struct ChannelSender {
    send: SendStream,
}

/// The response half of a [`Channel`].
pub struct ChannelReceiver {
    recv: RecvStream,
}

impl Channel {
    /// Writes one request frame.
    pub async fn send(&mut self, request: &Request, payload: Bytes) -> Result<(), ClientError> {
        self.tx.send(request, payload).await
    }
    /// Signals that no more requests follow.
    pub fn finish(&mut self) {
        self.tx.finish()
    }
    /// Reads the next response; a broker error response becomes `Err`.
    pub async fn receive(&mut self) -> Result<(Response, Bytes), ClientError> {
        self.rx.receive().await
    }
    /// Splits the channel so requests and responses can be handled by different tasks.
    pub fn split(self) -> (ChannelSender, ChannelReceiver) {
        (self.tx, self.rx)
    }
}

impl ChannelSender {
    /// Writes one request frame.
    pub async fn send(&mut self, request: &Request, payload: Bytes) -> Result<(), ClientError> {
        let front = frame::encode_front(&encode_request(request), payload.len());
        self.send.write_all_chunks(&mut [Bytes::from(front), payload]).await?;
        Ok(())
    }

    /// Signals that no more requests follow.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

impl ChannelReceiver {
    /// Reads the next response; a broker error response becomes `Err`.
    pub async fn receive(&mut self) -> Result<(Response, Bytes), ClientError> {
        let mut prefix = [0u8; frame::PREFIX_LEN];
        self.recv.read_exact(&mut prefix).await?;
        let len =
            frame::body_len(prefix, RESPONSE_BYTES_MAX).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut body = vec![0u8; len];
        self.recv.read_exact(&mut body).await?;
        let frame = Frame::decode(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = decode_response(frame.control()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Response::Error { code, message } = response {
            return Err(ClientError::from_response(code, message));
        }
        Ok((response, frame.into_payload()))
    }
}
