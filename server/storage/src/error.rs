use thiserror::Error;

/// Storage failures, with messages a user can act on.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("producer {producer_id} sent sequence {got} but {expected} was expected next")]
    OutOfOrderSequence { producer_id: u64, expected: u64, got: u64 },
    #[error("stored batch at offset {offset} in {topic}/{partition} is corrupt: {reason}")]
    Corrupt { topic: String, partition: u32, offset: u64, reason: String },
    /// The topic's own sled database does not open (sled failed or panicked on its files):
    /// every partition of the topic stops, the rest of the store works.
    #[error("{topic}/{partition} cannot be read: the topic's database does not open: {reason}")]
    Unopenable { topic: String, partition: u32, reason: String },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A name refused by `create_topic` or `commit_offset`.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName { what: &'static str, name: String, reason: String },
    /// A partition count of zero or above `PARTITIONS_PER_TOPIC_MAX`.
    #[error("topic {topic:?} cannot have {partitions} partitions: between 1 and {max} are allowed")]
    InvalidPartitionCount { topic: String, partitions: u32, max: u32 },
    /// `append` was given bytes that cannot be a validated batch (the broker must call
    /// `silt_wire::batch::validate` first).
    #[error("cannot append to {topic}/{partition}: {reason}")]
    InvalidBatch { topic: String, partition: u32, reason: &'static str },
    /// The partition's offsets would pass `u64::MAX`.
    #[error("{topic}/{partition} has no offsets left after {next_offset}")]
    OffsetOverflow { topic: String, partition: u32, next_offset: u64 },
    /// Stored metadata (topic list, group offsets, partition stats) that does not decode.
    #[error("stored {what} is corrupt: {reason}")]
    CorruptMeta { what: String, reason: String },
    /// sled's lock on the store's files stayed taken: another process has the store open.
    #[error("store {dir:?} is open in another process (its lock stayed taken for 2 s)")]
    Locked { dir: std::path::PathBuf },
    /// The directory holds a store written by another layout version of this crate.
    #[error("store layout version {found} is not supported (this build reads version {supported})")]
    UnsupportedFormat { found: String, supported: u32 },
}

impl StorageError {
    /// An I/O error of this message ([`StorageError::is_io`]): what a caller that refuses to
    /// touch the store after a failed write returns.
    pub fn io(message: impl Into<String>) -> StorageError {
        StorageError::Sled(sled::Error::Io(std::io::Error::other(message.into())))
    }

    /// An I/O error from the disk (a full disk, EIO). sled keeps the first one for as long as
    /// the store is open: every later write and flush fails with it.
    pub fn is_io(&self) -> bool {
        matches!(self, StorageError::Sled(sled::Error::Io(_)))
    }

    /// A copy of a corruption error, which a broken partition returns on every call.
    /// `None` for other errors (sled's error type cannot be copied).
    pub(crate) fn copy_corruption(&self) -> Option<StorageError> {
        match self {
            StorageError::Corrupt { topic, partition, offset, reason } => Some(StorageError::Corrupt {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                reason: reason.clone(),
            }),
            StorageError::Unopenable { topic, partition, reason } => Some(StorageError::Unopenable {
                topic: topic.clone(),
                partition: *partition,
                reason: reason.clone(),
            }),
            StorageError::CorruptMeta { what, reason } => {
                Some(StorageError::CorruptMeta { what: what.clone(), reason: reason.clone() })
            }
            _ => None,
        }
    }
}
