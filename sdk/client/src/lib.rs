//! `silt-client`: the async Rust client of the Silt broker.
//!
//! A [`Client`] holds one QUIC connection to a broker (re-established when lost) and offers the
//! admin calls. A [`Producer`] batches records per partition by size and linger, keeps a window
//! of batches in flight, and retries with the same sequence numbers so a retry never
//! duplicates. A [`Consumer`] reads a topic by explicit assignment or as a member of a consumer
//! group, as whole fetched batches or as a `Stream` of records, and commits group offsets.
//!
//! What it deliberately does not do: encode values (records are bytes; the CLI handles JSON),
//! or talk to more than one broker.
//!
//! # Example
//!
//! Against a broker started with `silt-broker` (data in `./silt-data`), this authenticates
//! with the admin token the broker wrote, creates a topic,
//! produces a record durably and reads the topic to its end. (As a doc test it first starts a
//! broker of its own in a temporary directory, on a free loopback port.)
//!
//! ```
//! use silt_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let broker = silt_broker::start(silt_broker::config::Config {
//! #     data_dir: dir.path().to_path_buf(),
//! #     listen: "127.0.0.1:0".parse()?,
//! #     admin_listen: "127.0.0.1:0".parse()?,
//! #     ..Default::default()
//! # }).await?;
//! # let (addr, cert) = (broker.listen.to_string(), broker.ca_cert.clone());
//! # let token = broker.admin_token.clone().expect("authentication is on by default");
//! # /*
//! let (addr, cert) = ("127.0.0.1:7400", std::path::PathBuf::from("silt-data/tls/cert.pem"));
//! // The broker writes its admin token there on first start; other principals get theirs
//! // from `silt token create`.
//! let token = std::fs::read_to_string("silt-data/admin.token")?.trim().to_string();
//! # */
//! let client = Client::connect(ClientConfig::new(addr, &cert)?.with_token(token)).await?;
//! client.create_topic("sensors.temp", 3, None, None).await?;
//!
//! let producer = Producer::new(&client, "sensors.temp", ProducerConfig::default()).await?;
//! producer.send(ProducerRecord { key: Some(b"dev-1"), value: b"21.5", ..Default::default() }).await?;
//! producer.flush().await?; // every record sent so far is now durable
//!
//! let config = ConsumerConfig { follow: false, ..Default::default() };
//! let mut consumer = Consumer::new(&client, "sensors.temp", config).await?;
//! let mut values = Vec::new();
//! while let Some(record) = consumer.next_record().await {
//!     values.push(record?.value);
//! }
//! assert_eq!(values, vec![&b"21.5"[..]]);
//! # client.close().await;
//! # broker.shutdown().await?;
//! # Ok(()) }
//! ```

mod auth;
mod connection;
mod consumer;
mod devices;
mod error;
mod processors;
mod producer;

pub use connection::{
    token_credential, Channel, ChannelReceiver, ChannelSender, Client, ClientConfig, DEFAULT_TOKEN_FILE,
    RESPONSE_BYTES_MAX,
};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, Fetched};
pub use error::ClientError;
pub use processors::Deployment;
pub use producer::{Ack, AckHook, Producer, ProducerConfig, ProducerRecord};
pub use silt_wire::auth::{TokenInfo, UserInfo, WhoAmI};
pub use silt_wire::{
    AclEntry, Compression, Credential, DeviceInfo, DeviceModuleInfo, DeviceModuleVersion, DeviceRefusal,
    ErrorCode, FetchFrom, Operation, ProcessorInfo, ProcessorLimits, ProcessorRef, ProcessorState,
    ProcessorVersion, RepairInfo, TopicInfo,
};
