//! `silt-storage`: the partition log on sled.
//!
//! One sled `Db` per broker; per topic-partition one tree of record batches keyed by big-endian
//! base offset, plus a timestamp index tree and an idempotent-producer tree. Topic metadata and
//! consumer-group offsets live in their own trees. Batches are stored exactly as the producer
//! sent them, with the broker-owned header fields stamped (see `docs/record-batch.md`).
//!
//! This crate is synchronous and knows nothing of networking or async runtimes; durability is
//! explicit: nothing is durable until [`Store::flush`] returns, and the broker decides when to
//! call it (group commit).
//!
//! Deliberately absent: validation of batch bodies (the broker validates with
//! `silt_wire::batch::validate` before appending), wake-ups for long polls (the broker's job).

use std::path::Path;
use std::sync::Arc;

mod error;
pub use error::StorageError;

/// Topic metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    /// Drop whole batches whose append time is older than this.
    pub retention_ms: Option<u64>,
    /// Drop oldest batches while the partition holds more bytes than this.
    pub retention_bytes: Option<u64>,
    pub created_ms: i64,
}

/// Tuning of the sled database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled page cache in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { cache_bytes: 256 * 1024 * 1024 }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this base offset.
    New { base_offset: u64 },
    /// (producer id, sequence) was stored before; nothing written. `base_offset` is the offset
    /// it got then when this was the producer's last batch, else `None`.
    Duplicate { base_offset: Option<u64> },
}

/// Stored batches read from a partition.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Offset after the last record returned (equal to `from` when nothing was returned).
    pub next_offset: u64,
    /// Number of whole batches appended to the output buffer.
    pub batches: usize,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub batches_removed: u64,
    pub bytes_removed: u64,
}

/// The log store: topics, partitions, group offsets.
pub struct Store {
    _private: (),
}

/// One topic-partition log. Cheap to clone through `Arc`; appends are serialized by an
/// internal per-partition lock, reads take no lock.
pub struct Partition {
    _private: (),
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StorageError> {
        let _ = (dir, config);
        todo!()
    }
    /// Creates a topic with its partitions. Errors with `TopicExists` if it exists.
    pub fn create_topic(&self, meta: TopicMeta) -> Result<(), StorageError> {
        let _ = meta;
        todo!()
    }
    /// Deletes a topic, its partitions, indexes, producer state and group offsets.
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        let _ = name;
        todo!()
    }
    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicMeta> {
        todo!()
    }
    /// One topic's metadata.
    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        let _ = name;
        todo!()
    }
    /// A partition handle; `UnknownTopic` / `UnknownPartition` if absent.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, StorageError> {
        let _ = (topic, partition);
        todo!()
    }
    /// Makes everything written so far durable (sled flush + fsync); returns bytes flushed.
    pub fn flush(&self) -> Result<usize, StorageError> {
        todo!()
    }
    /// Stores a consumer group's committed offset.
    pub fn commit_offset(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<(), StorageError> {
        let _ = (group, topic, partition, offset);
        todo!()
    }
    /// A group's committed offsets for a topic, as `(partition, offset)` sorted by partition.
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Result<Vec<(u32, u64)>, StorageError> {
        let _ = (group, topic);
        todo!()
    }
}

impl Partition {
    /// Appends one batch that already passed `silt_wire::batch::validate`. Assigns the next
    /// offset, stamps the header with it and `append_time_ms`, and writes the batch, the
    /// timestamp index entry and the producer's (id -> sequence, base offset) in one sled
    /// transaction. A batch with producer id 0 is never deduplicated. A batch whose sequence is
    /// at or below the producer's last one is a `Duplicate`; one that skips ahead is refused
    /// with `OutOfOrderSequence`.
    pub fn append(&self, batch: &mut [u8], append_time_ms: i64) -> Result<Appended, StorageError> {
        let _ = (batch, append_time_ms);
        todo!()
    }
    /// Appends to `out` whole stored batches, starting with the one that holds `from`, until
    /// `max_bytes` would be exceeded (at least one batch when any exists) or `limit` (an
    /// offset, exclusive) is reached. Each batch's checksums are checked; a mismatch is a
    /// `Corrupt` error.
    pub fn read(&self, from: u64, max_bytes: usize, limit: u64, out: &mut Vec<u8>) -> Result<ReadOutcome, StorageError> {
        let _ = (from, max_bytes, limit, out);
        todo!()
    }
    /// The first offset whose batch may hold records with event time >= `timestamp_ms`
    /// (the high watermark when none).
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, StorageError> {
        let _ = timestamp_ms;
        todo!()
    }
    /// Offset of the first retained record.
    pub fn log_start(&self) -> u64 {
        todo!()
    }
    /// Offset the next appended record will get.
    pub fn high_watermark(&self) -> u64 {
        todo!()
    }
    /// Bytes of stored batches.
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    /// Number of stored batches.
    pub fn batch_count(&self) -> u64 {
        todo!()
    }
    /// Drops whole batches, oldest first, that are older than `retention_ms` (by append time) or
    /// that make the partition exceed `retention_bytes`; never the newest batch.
    pub fn apply_retention(&self, now_ms: i64, retention_ms: Option<u64>, retention_bytes: Option<u64>) -> Result<Retained, StorageError> {
        let _ = (now_ms, retention_ms, retention_bytes);
        todo!()
    }
}
