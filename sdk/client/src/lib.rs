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
//! Start a broker with `silt-broker` (data in `./silt-data`), then:
//!
//! ```no_run
//! use silt_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn example() -> Result<(), silt_client::ClientError> {
//! let config = ClientConfig::new("127.0.0.1:7400", "silt-data/tls/cert.pem".as_ref())?;
//! let client = Client::connect(config).await?;
//! client.create_topic("sensors.temp", 3, None, None).await?;
//!
//! let producer = Producer::new(&client, "sensors.temp", ProducerConfig::default()).await?;
//! producer.send(ProducerRecord { key: Some(b"dev-1"), value: b"21.5", ..Default::default() }).await?;
//! producer.flush().await?; // every record above is now durable
//!
//! let mut consumer = Consumer::new(&client, "sensors.temp", ConsumerConfig { follow: false, ..Default::default() }).await?;
//! while let Some(record) = consumer.next_record().await {
//!     let record = record?;
//!     println!("{} {}", record.offset, String::from_utf8_lossy(&record.value));
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/quickstart.rs` runs the same steps against a broker it starts itself:
//! `cargo run -p silt-client --example quickstart`.

mod connection;
mod consumer;
mod error;
mod producer;

pub use connection::{Channel, ChannelReceiver, ChannelSender, Client, ClientConfig, RESPONSE_BYTES_MAX};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, Fetched};
pub use error::ClientError;
pub use producer::{Ack, AckHook, Producer, ProducerConfig, ProducerRecord};
pub use silt_wire::{ErrorCode, FetchFrom, TopicInfo};
