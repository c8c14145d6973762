//! The QUIC shell around [`Broker`]: accepts connections and streams, reads frames, writes
//! responses in request order. Thin on purpose; request semantics live in `requests`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use silt_wire::frame::{self, Frame, PREFIX_LEN};
use silt_wire::message::encode_response;
use silt_wire::{ErrorCode, Response, WireError};
use tokio::sync::{mpsc, Semaphore};

use crate::auth::Session;
use crate::config::Limits;
use crate::requests::{wire_error, Broker, PendingReply};

/// Application close codes sent with QUIC CONNECTION_CLOSE / STOP_SENDING.
pub mod close_code {
    /// The broker is shutting down.
    pub const SHUTDOWN: u32 = 1;
    /// Too many open connections.
    pub const BUSY: u32 = 2;
    /// A frame could not be read (bad length, bad version); the stream is closed.
    pub const PROTOCOL: u32 = 3;
}

/// Builds the QUIC server endpoint.
pub fn endpoint(
    listen: std::net::SocketAddr,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    client_ca: Option<rustls::RootCertStore>,
    limits: &Limits,
) -> anyhow::Result<quinn::Endpoint> {
    let endpoint_config = restart_stable(&key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 setup")?;
    let builder = match client_ca {
        // A client certificate is optional (tokens and passwords still work), but one that is
        // offered must chain to a configured CA, or the handshake fails.
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("the client CA certificates")?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut crypto = builder.with_single_cert(certs, key).context("loading the TLS certificate")?;
    crypto.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).context("QUIC TLS setup")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(limits)));
    let socket = std::net::UdpSocket::bind(listen).with_context(|| format!("listening on {listen} (UDP)"))?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
        .with_context(|| format!("listening on {listen} (UDP)"))
}

/// The CA certificates of `path` (PEM), which client certificates must chain to.
pub fn client_roots(path: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    let certs = silt_tls::load_certs(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).with_context(|| format!("a CA certificate of {}", path.display()))?;
    }
    Ok(roots)
}

/// The principal a client certificate names: `user:` and its first DNS name, else its common
/// name. `None` when it names neither.
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let dns = cert.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
    });
    let name = dns.or_else(|| cert.subject().iter_common_name().next()?.as_str().ok().map(String::from))?;
    Some(format!("user:{name}"))
}

/// Endpoint keys that survive a restart: the stateless-reset key and the connection-id key are
/// derived from the TLS private key instead of being random per process. A broker restarted
/// after a crash then answers packets of connections the old process held with a stateless
/// reset the clients recognise (RFC 9000, section 10.3), so they reconnect at once instead of
/// waiting out the 30 s idle timeout.
fn restart_stable(key: &rustls::pki_types::PrivateKeyDer<'_>) -> quinn::EndpointConfig {
    use ring::hmac;
    let master = hmac::Key::new(hmac::HMAC_SHA256, key.secret_der());
    let reset = hmac::sign(&master, b"silt stateless reset key");
    let cid = hmac::sign(&master, b"silt connection id key");
    let cid_key = u64::from_le_bytes(cid.as_ref()[..8].try_into().expect("a SHA-256 tag has 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, reset.as_ref())));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    config
}

/// Transport tuning shared by server and client: large windows so that a window of 100 KB
/// batches is never flow-control bound on loopback.
pub fn transport(limits: &Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.streams_per_connection_max));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(16 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(64 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("30 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t
}

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, broker: Arc<Broker>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    // At least one largest frame fits in each budget, so a lone request never waits forever.
    let budget = |bytes: u64| Arc::new(Semaphore::new(bytes.max(limits.frame_bytes_max as u64) as usize));
    let requests = budget(limits.request_bytes_max);
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "connection refused: too many connections");
            broker.metrics.connections_refused.with_label_values(&["connections_max"]).inc();
            incoming.refuse();
            continue;
        };
        let Some(address_slot) = broker.quotas.connect(incoming.remote_address().ip()) else {
            let remote = incoming.remote_address();
            tracing::warn!(%remote, "connection refused: too many connections from this address");
            broker.metrics.connections_refused.with_label_values(&["per_address"]).inc();
            broker.auth.refused_connection(
                remote,
                "too many connections from this address (connections_per_address_max)",
            );
            incoming.refuse();
            continue;
        };
        let broker = broker.clone();
        let remote = incoming.remote_address();
        let budgets = Budgets {
            connection: budget(limits.connection_request_bytes_max),
            broker: requests.clone(),
            responses: Arc::new(Semaphore::new(
                limits.connection_response_bytes_max.max(u64::from(limits.fetch_bytes_max)) as usize,
            )),
        };
        tokio::spawn(async move {
            let _permit = (permit, address_slot);
            match incoming.await {
                Ok(conn) => {
                    let open = broker.metrics.connections.clone();
                    open.inc();
                    connection(conn, broker, limits, budgets).await;
                    open.dec();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "handshake failed");
                    broker.auth.handshake_failed(remote, format!("TLS handshake failed: {e}"));
                }
            }
        });
    }
}

/// Permits, one per byte, for request frames read and not yet answered: the connection's
/// (`Limits::connection_request_bytes_max`) and the broker's (`Limits::request_bytes_max`).
#[derive(Clone)]
struct Budgets {
    connection: Arc<Semaphore>,
    broker: Arc<Semaphore>,
    /// The connection's fetch response budget (`Limits::connection_response_bytes_max`).
    responses: Arc<Semaphore>,
}

impl Budgets {
    /// Waits until `bytes` more may be held; the permits go when the result is dropped.
    async fn hold(&self, bytes: usize, pending: &prometheus::IntGauge) -> Option<impl Send + 'static> {
        let n = u32::try_from(bytes).ok()?;
        let connection = self.connection.clone().acquire_many_owned(n).await.ok()?;
        let broker = self.broker.clone().acquire_many_owned(n).await.ok()?;
        pending.add(bytes as i64);
        let gauge = PendingGauge { gauge: pending.clone(), bytes: bytes as i64 };
        Some((connection, broker, gauge))
    }
}

/// Counts held request bytes in `silt_request_bytes_pending` while it lives.
struct PendingGauge {
    gauge: prometheus::IntGauge,
    bytes: i64,
}

impl Drop for PendingGauge {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

async fn connection(conn: quinn::Connection, broker: Arc<Broker>, limits: Limits, budgets: Budgets) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection open");
    // Every stream of the connection acts as the principal it authenticated as.
    let session = broker.session(Some(remote));
    let _ = session.responses.set(budgets.responses.clone());
    let certificate = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|c| certificate_principal(c)));
    if let Some(principal) = certificate {
        broker.auth.authenticate_certificate(&session, principal);
    }
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (broker, session, budgets) = (broker.clone(), session.clone(), budgets.clone());
                tokio::spawn(async move {
                    if let Err(e) = stream(send, recv, broker, session, limits, budgets).await {
                        tracing::debug!(%remote, error = %e, "stream ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection closed");
                return;
            }
        }
    }
}

/// Serves one stream: requests are read and started in order, and their responses written in
/// the same order, with at most `pipeline_depth_max` outstanding.
async fn stream(
    mut send: SendStream,
    mut recv: RecvStream,
    broker: Arc<Broker>,
    session: Arc<Session>,
    limits: Limits,
    budgets: Budgets,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<PendingReply>(limits.pipeline_depth_max);
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            let (response, payload) = pending.await;
            write_response(&mut send, &response, payload).await?;
        }
        send.finish()?;
        anyhow::Ok(send)
    });
    let result = read_requests(&mut recv, &broker, &session, &limits, &budgets, &tx).await;
    drop(tx);
    let send = writer.await.context("response writer")??;
    if let Err(e) = &result {
        // The request framing is lost: say why, then stop reading this stream.
        tracing::debug!(error = %e, "closing stream after a protocol error");
        let _ = recv.stop(VarInt::from_u32(close_code::PROTOCOL));
    }
    drop(send);
    result
}

async fn read_requests(
    recv: &mut RecvStream,
    broker: &Arc<Broker>,
    session: &Arc<Session>,
    limits: &Limits,
    budgets: &Budgets,
    tx: &mpsc::Sender<PendingReply>,
) -> anyhow::Result<()> {
    loop {
        let mut prefix = [0u8; PREFIX_LEN];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                return refuse(
                    tx,
                    WireError::Truncated { what: "frame length prefix" },
                    Some((n, PREFIX_LEN)),
                )
                .await;
            }
            Err(e) => return Err(e.into()),
        }
        let len = match frame::body_len(prefix, limits.frame_bytes_max) {
            Ok(len) => len,
            Err(e) => return refuse(tx, e, None).await,
        };
        // Held until the request is answered.
        let Some(held) = budgets.hold(PREFIX_LEN + len, &broker.metrics.request_bytes_pending).await else {
            anyhow::bail!("the broker is shutting down");
        };
        let mut body = vec![0u8; len];
        match recv.read_exact(&mut body).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                return refuse(tx, WireError::Truncated { what: "frame body" }, Some((n, len))).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("reading a frame body")),
        }
        let pending = match Frame::decode(body) {
            Ok(f) => broker.handle(f, session).await,
            Err(e) => return refuse(tx, e, None).await,
        };
        let pending: PendingReply = Box::pin(async move {
            let reply = pending.await;
            drop(held);
            reply
        });
        if tx.send(pending).await.is_err() {
            anyhow::bail!("response writer stopped");
        }
    }
}

/// Answers a frame that cannot be read with an error response, then gives up the stream (its
/// framing is lost). A frame is not a batch, so a truncated or inconsistent one is an
/// `InvalidRequest`; `ended`, as (bytes read, bytes expected), says where the stream stopped.
async fn refuse(
    tx: &mpsc::Sender<PendingReply>,
    e: WireError,
    ended: Option<(usize, usize)>,
) -> anyhow::Result<()> {
    let mut reason = e.to_string();
    if let Some((got, want)) = ended {
        reason.push_str(&format!(": the stream ended after {got} of {want} bytes"));
    }
    let (mut response, payload) = wire_error(&e);
    if let Response::Error { code, message } = &mut response {
        if matches!(e, WireError::Truncated { .. } | WireError::Invalid { .. }) {
            *code = ErrorCode::InvalidRequest;
        }
        message.clone_from(&reason);
    }
    let _ = tx.send(Box::pin(std::future::ready((response, payload)))).await;
    anyhow::bail!("bad frame: {reason}")
}

async fn write_response(
    send: &mut SendStream,
    response: &silt_wire::Response,
    payload: Bytes,
) -> anyhow::Result<()> {
    let front = frame::encode_front(&encode_response(response), payload.len());
    send.write_all_chunks(&mut [Bytes::from(front), payload]).await?;
    Ok(())
}
