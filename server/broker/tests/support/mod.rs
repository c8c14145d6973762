//! Starting the real `silt-broker` binary for integration tests, and reaching it over real QUIC.
//!
//! Each test crate under `server/broker/tests/` (and `server/node/tests/`, which includes this
//! file) uses a different part of this module, so items unused by one crate are expected.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use silt_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, FetchFrom, Producer, ProducerConfig, ProducerRecord,
};
use silt_wire::frame::{self, Frame};
use silt_wire::message::{decode_response, encode_request};
use silt_wire::{BatchBuilder, Request, Response, TopicInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a broker may take to serve after it was started (startup generates a certificate
/// and opens sled; both take well under a second on an idle machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any single request in these tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of the sled database of topic `topic` under a broker's data directory
/// (`log/topics/{topic}.{incarnation}`).
#[allow(dead_code)]
pub fn topic_db_dir(data: &Path, topic: &str) -> PathBuf {
    let prefix = format!("{topic}.");
    std::fs::read_dir(data.join("log").join("topics"))
        .expect("reading the store's topics directory")
        .map(|e| e.expect("a directory entry").path())
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.strip_prefix(&prefix).is_some_and(|inc| inc.len() == 16)
        })
        .unwrap_or_else(|| panic!("no database of topic {topic} under {}", data.display()))
}

/// A loopback TCP port that was free a moment ago (for the admin listener).
pub fn free_tcp_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral TCP port");
    s.local_addr().expect("local address").port()
}

impl BrokerProcess {
    /// Like [`Self::start`], with `--config broker.toml` holding `toml`.
    pub async fn start_with_config(toml: &str, extra: &[&str]) -> BrokerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_file(dir.path(), "broker.toml", toml);
        let mut args = vec!["--config", path.to_str().expect("UTF-8 temp path")];
        args.extend_from_slice(extra);
        Self::start_in(dir, &args).await
    }

    /// A client on a new QUIC connection, authenticated as the admin.
    pub async fn client(&self) -> Client {
        self.client_with(Some(silt_client::Credential::Token(self.admin_token()))).await
    }

    /// A client on a new QUIC connection, authenticated with `credential` (or not at all).
    pub async fn client_with(&self, credential: Option<silt_client::Credential>) -> Client {
        let config = ClientConfig::new(self.listen.to_string(), &self.ca_cert()).expect("client config");
        tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(config.with_credential(credential)))
            .await
            .expect("connecting timed out")
            .expect("connecting to the broker")
    }

    /// A bare QUIC connection, for writing bytes the client library would never send;
    /// authenticated as the admin on a first stream, as the client library does.
    pub async fn raw_connection(&self) -> RawConnection {
        let raw = self.raw_connection_anonymous().await;
        let credential = silt_client::Credential::Token(self.admin_token());
        let (_send, mut recv) =
            raw.send_raw(&request_frame(&Request::Authenticate { credential }, &[]), true).await;
        match read_reply(&mut recv).await {
            Reply::Response(Response::Authenticated(_), _) => raw,
            other => panic!("authenticating a raw connection: {other:?}"),
        }
    }

    /// A bare QUIC connection that has not authenticated.
    pub async fn raw_connection_anonymous(&self) -> RawConnection {
        let certs = CertificateDer::pem_file_iter(self.ca_cert())
            .expect("reading cert.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parsing cert.pem");
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots.add(c).expect("adding the broker certificate");
        }
        let config =
            quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("quinn client config");
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
        endpoint.set_default_client_config(config);
        let connecting = endpoint.connect(self.listen, "localhost").expect("starting a connection");
        let conn = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .expect("QUIC handshake timed out")
            .expect("QUIC handshake");
        RawConnection { _endpoint: endpoint, conn }
    }
}

/// The text of `GET /metrics` over plain TCP (the broker's default: no token needed).
#[allow(dead_code)]
pub async fn metrics_text(admin: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connecting to the admin port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

/// A QUIC connection opened without `silt-client`.
pub struct RawConnection {
    _endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl RawConnection {
    /// Opens a stream, writes `bytes` and, when `finish`, ends the request side.
    pub async fn send_raw(&self, bytes: &[u8], finish: bool) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.conn.open_bi().await.expect("opening a stream");
        send.write_all(bytes).await.expect("writing to the stream");
        if finish {
            send.finish().expect("finishing the stream");
        }
        (send, recv)
    }
}

/// What the broker sent back on a stream.
#[derive(Debug)]
pub enum Reply {
    /// One response frame.
    Response(Response, Vec<u8>),
    /// The broker finished the stream without (another) response.
    Finished,
    /// The broker reset the stream, with this application error code.
    Reset(u64),
}

/// Reads the next response frame (or the end of the stream), within [`REQUEST_TIMEOUT`].
pub async fn read_reply(recv: &mut quinn::RecvStream) -> Reply {
    let read = async {
        let mut prefix = [0u8; frame::PREFIX_LEN];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Reply::Finished,
            Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code))) => {
                return Reply::Reset(code.into_inner())
            }
            Err(e) => panic!("reading a response prefix: {e}"),
        }
        let len = frame::body_len(prefix, 64 << 20).expect("response length");
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.expect("reading a response body");
        let frame = Frame::decode(body).expect("response frame");
        let response = decode_response(frame.control()).expect("response control message");
        Reply::Response(response, frame.payload().to_vec())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.expect("no reply from the broker in time")
}

/// A whole request frame, exactly as `silt-client` would write it.
pub fn request_frame(request: &Request, payload: &[u8]) -> Vec<u8> {
    frame::encode(&encode_request(request), payload)
}

/// A valid batch of `values` (non-idempotent: producer id 0), event times `first_ts_ms`,
/// `first_ts_ms + 1`, ...
pub fn batch_of(values: &[&str], first_ts_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for (i, v) in values.iter().enumerate() {
        b.push(first_ts_ms + i as i64, b"k", v.as_bytes(), &[]).expect("record fits");
    }
    b.finish(0, 0)
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(client: &Client, topic: &str, partitions: u32) -> TopicInfo {
    tokio::time::timeout(REQUEST_TIMEOUT, client.create_topic(topic, partitions, None, None))
        .await
        .expect("create_topic timed out")
        .expect("create_topic")
}

/// Produces `values` to one partition with an idempotent producer, one batch per `batch`
/// records, and waits until all are acknowledged.
pub async fn produce(client: &Client, topic: &str, partition: u32, values: &[String], batch: u32) {
    let config = ProducerConfig { batch_records_max: batch, ..Default::default() };
    let work = async {
        let p = Producer::new(client, topic, config).await?;
        for v in values {
            p.send(ProducerRecord { value: v.as_bytes(), partition: Some(partition), ..Default::default() })
                .await?;
        }
        p.close().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work).await.expect("produce timed out").expect("produce");
}

/// A consumed record, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub value: String,
}

/// Reads every partition from `from` to its end (no follow), sorted by (partition, offset).
pub async fn read_all(client: &Client, topic: &str, from: FetchFrom) -> Vec<Rec> {
    let config = ConsumerConfig { from, follow: false, ..Default::default() };
    let work = async {
        let mut c = Consumer::new(client, topic, config).await?;
        let mut out = Vec::new();
        while let Some(r) = c.next_record().await {
            let r = r?;
            let value = String::from_utf8(r.value.to_vec()).expect("utf-8 values");
            out.push(Rec { partition: r.partition, offset: r.offset, timestamp_ms: r.timestamp_ms, value });
        }
        c.close().await;
        Ok::<_, silt_client::ClientError>(out)
    };
    let mut out =
        tokio::time::timeout(REQUEST_TIMEOUT, work).await.expect("consume timed out").expect("consume");
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Every record of `topic` from the log start to its end, whole (key, headers and all),
/// sorted by (partition, offset); the read must finish `within`.
pub async fn read_records(
    client: &Client,
    topic: &str,
    within: Duration,
) -> Vec<silt_client::ConsumedRecord> {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..Default::default() };
    let work = async {
        let mut c = Consumer::new(client, topic, config).await?;
        let mut out = Vec::new();
        while let Some(r) = c.next_record().await {
            out.push(r?);
        }
        c.close().await;
        Ok::<_, silt_client::ClientError>(out)
    };
    let mut out = tokio::time::timeout(within, work)
        .await
        .unwrap_or_else(|_| panic!("reading {topic} timed out"))
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"));
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// The stored batches of one partition, byte for byte, fetched from the log start.
pub async fn stored_bytes(client: &Client, topic: &str, partition: u32) -> Vec<u8> {
    let work = async {
        let mut ch = client.channel().await?;
        let mut from = FetchFrom::Earliest;
        let mut out = Vec::new();
        loop {
            let req = Request::Fetch {
                topic: topic.into(),
                partition,
                from,
                max_bytes: 16 << 20,
                max_wait_ms: 0,
                processor: None,
            };
            ch.send(&req, Bytes::new()).await?;
            let (resp, payload) = ch.receive().await?;
            let Response::Fetched { next_offset, high_watermark, .. } = resp else {
                panic!("unexpected fetch response {resp:?}");
            };
            out.extend_from_slice(&payload);
            if next_offset >= high_watermark {
                return Ok::<_, silt_client::ClientError>(out);
            }
            from = FetchFrom::Offset(next_offset);
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work).await.expect("fetch timed out").expect("fetch")
}

/// Writes `text` to `name` inside `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing a test file");
    p
}

/// Builds the example processors to wasm32 once per test process (in a target dir of their
/// own, so the cargo running the tests is not waited on) and returns one module's bytes.
pub fn example_wasm(package: &str) -> Vec<u8> {
    let file = examples_dir().join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// Builds the example processors to wasm32 once per test process (see [`example_wasm`]) and
/// returns the directory holding the `.wasm` files: the same directory as silt-processor's
/// module tests and scripts/test-all.sh, which builds it before the tests run, so this is
/// usually a no-op.
pub fn examples_dir() -> &'static Path {
    examples::built_examples()
}

// The example processors' list and build, shared with the device tier's and the SDK's tests.
#[path = "../../../../device-bridge/device-runtime/tests/common/examples.rs"]
mod examples;

// Finding (or building) the server binary, shared with the `silt` client's demo tests
// (tools/cli/tests/demo.rs includes the same file).
mod server_bin;
#[allow(unused_imports)]
pub use server_bin::broker_bin;

// The broker as a child process, shared with the device bridge's tests (device-bridge/bridge/
// tests/support includes the same file).
mod process;
#[allow(unused_imports)]
pub use process::{free_udp_port, health, BrokerProcess};

// Several brokers as one cluster (replication tests), on loopback or each in a network
// namespace of its own.
mod cluster;
mod netns;
#[allow(unused_imports)]
pub use cluster::LocalCluster;
#[allow(unused_imports)]
pub use netns::Cut;

// Processor ABI test modules, shared with the device bridge's tests (device-bridge/bridge/tests/
// support includes the same file).
mod abi;
#[allow(unused_imports)]
pub use abi::{abi_module, abi_module_with, COUNTERS, COUNT_BATCH, PASSTHROUGH, SKIP_ALL};

/// Bound on an audit record reaching the audit topic: requests record events without waiting,
/// and one task appends them once they are durable.
pub const AUDIT_WAIT: Duration = Duration::from_secs(15);

/// Audit events (the JSON of each record of `silt.audit`), read as the admin.
pub async fn audit_events(admin: &Client) -> Vec<serde_json::Value> {
    read_all(admin, "silt.audit", FetchFrom::Earliest)
        .await
        .into_iter()
        .map(|r| serde_json::from_str(&r.value).expect("audit records are JSON"))
        .collect()
}

/// Waits until the audit holds an event for which `pred` holds.
pub async fn await_audit(
    admin: &Client,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + AUDIT_WAIT;
    loop {
        if let Some(e) = audit_events(admin).await.into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "no audit event for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small xorshift generator, for fault campaigns reproducible from a seed (not 0).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform enough in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}
