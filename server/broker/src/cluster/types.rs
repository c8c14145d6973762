//! The openraft types of Silt's groups: one type configuration for the metadata group and
//! every partition's group, so that one network and one log store serve them all.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A group: the cluster's metadata, or one partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupId {
    Meta,
    Partition { topic: String, partition: u32 },
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupId::Meta => write!(f, "meta"),
            GroupId::Partition { topic, partition } => write!(f, "{topic}/{partition}"),
        }
    }
}

/// What a log entry asks of its group's state machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Partition groups: one validated record batch, stamped on apply with the next offset
    /// and `time_ms` (the proposer's clock, so every replica stamps alike).
    Append {
        #[serde(with = "serde_bytes_vec")]
        batch: Vec<u8>,
        time_ms: i64,
    },
    /// The metadata group.
    Meta(MetaCommand),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Append { batch, .. } => write!(f, "append({} bytes)", batch.len()),
            Command::Meta(m) => write!(f, "{m:?}"),
        }
    }
}

/// Changes to the cluster's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A topic and the brokers keeping each of its partitions (chosen by the proposer).
    CreateTopic {
        name: String,
        partitions: u32,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        created_ms: i64,
        replicas: Vec<Vec<u64>>,
    },
    /// A producer id for `principal`: a new one (`id` fresh, `fresh`), or one it held before,
    /// at the next epoch.
    ClaimProducer { id: u64, fresh: bool, principal: String, now_ms: i64 },
    /// A change to users, tokens or access-control entries, decided by the broker that took
    /// the request.
    Auth(crate::auth::changes::AuthChange),
    /// A consumer group's committed offsets: (topic, partition, offset).
    CommitOffsets { group: String, offsets: Vec<(String, u32, u64)> },
    /// A change to a device's entry in the registry (its new key drawn by the proposer).
    Device { id: String, change: crate::devices::DeviceChange },
}

/// What applying an entry came to, for the broker that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Nothing to say (blank and membership entries).
    None,
    Appended {
        base_offset: u64,
        duplicate: bool,
    },
    Producer {
        id: u64,
        epoch: u32,
    },
    /// A device's entry after a change, sealed as the registry stores it.
    Device(Vec<u8>),
    Failed {
        failure: Failure,
        message: String,
    },
}

/// Why an entry's change was refused; the broker maps it to an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    TopicExists,
    OutOfOrderSequence,
    InvalidBatch,
    InvalidRequest,
    Storage,
    UnknownProducer,
    PermissionDenied,
    ProducerFenced,
    UserExists,
    UnknownUser,
    UnknownToken,
    DeviceExists,
    UnknownDevice,
}

openraft::declare_raft_types!(
    /// Silt's type configuration: u64 node ids, nodes known by their cluster address.
    pub Types:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Batches as byte strings (postcard writes a length and the bytes either way; this keeps
/// other encodings, such as JSON in logs, from writing a list of numbers).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// Encodes a value for the log store and the network (postcard).
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(std::io::Error::other)
}

/// Decodes what [`encode`] wrote.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> std::io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The failure a broker's refusal of a metadata change comes to.
pub fn failure_of(code: silt_wire::ErrorCode) -> Failure {
    use silt_wire::ErrorCode;
    match code {
        ErrorCode::UnknownProducer => Failure::UnknownProducer,
        ErrorCode::PermissionDenied => Failure::PermissionDenied,
        ErrorCode::ProducerFenced => Failure::ProducerFenced,
        ErrorCode::InvalidRequest => Failure::InvalidRequest,
        ErrorCode::UserExists => Failure::UserExists,
        ErrorCode::UnknownUser => Failure::UnknownUser,
        ErrorCode::UnknownToken => Failure::UnknownToken,
        ErrorCode::DeviceExists => Failure::DeviceExists,
        ErrorCode::UnknownDevice => Failure::UnknownDevice,
        _ => Failure::Storage,
    }
}

/// The error code a client is told for a failure.
pub fn code_of(failure: Failure) -> silt_wire::ErrorCode {
    use silt_wire::ErrorCode;
    match failure {
        Failure::TopicExists => ErrorCode::TopicExists,
        Failure::OutOfOrderSequence => ErrorCode::OutOfOrderSequence,
        Failure::InvalidBatch => ErrorCode::InvalidBatch,
        Failure::InvalidRequest => ErrorCode::InvalidRequest,
        Failure::Storage => ErrorCode::Storage,
        Failure::UnknownProducer => ErrorCode::UnknownProducer,
        Failure::PermissionDenied => ErrorCode::PermissionDenied,
        Failure::ProducerFenced => ErrorCode::ProducerFenced,
        Failure::UserExists => ErrorCode::UserExists,
        Failure::UnknownUser => ErrorCode::UnknownUser,
        Failure::UnknownToken => ErrorCode::UnknownToken,
        Failure::DeviceExists => ErrorCode::DeviceExists,
        Failure::UnknownDevice => ErrorCode::UnknownDevice,
    }
}
