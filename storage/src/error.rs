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
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
}
