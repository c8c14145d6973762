//! `silt-storage`: the partition log on sled.
//!
//! A sled `Db` of metadata per broker (topics, consumer-group offsets, processors, devices,
//! principals) and one `Db` per topic (`store.rs`: a failure boundary); in it, per partition,
//! one tree of batch locators keyed by big-endian base offset, plus a timestamp index tree, an
//! idempotent-producer tree and a stats tree, and the checkpoints of the pipelines writing to
//! the topic. The batches themselves are in append-only files beside the trees
//! (`partition/files.rs`), stored exactly as the producer sent them, with the broker-owned
//! header fields stamped (see `docs/record-batch.md`).
//!
//! This crate is synchronous and knows nothing of networking or async runtimes; durability is
//! explicit: nothing is durable until [`Store::flush`] returns, and the broker decides when to
//! call it (group commit). The exceptions are [`Store::create_topic`] and
//! [`Store::delete_topic`], rare control operations that flush before they return.
//!
//! Deliberately absent: validation of batch bodies (the broker validates with
//! `silt_wire::batch::validate` before appending; `append` only checks what keeps it from
//! panicking), wake-ups for long polls (the broker's job), a retention timer (the broker calls
//! [`Partition::apply_retention`] with the topic's settings), expiry of idempotent-producer
//! state (one small entry per producer id and partition is kept for the life of the topic),
//! and any cache of batches of its own (the kernel's page cache is the cache).
//!
//! # Layout
//!
//! Each partition is four sled trees, in its topic's database (the directory
//! `topics/{topic}.{incarnation:016x}` of the store's), named
//! `{kind}/{topic}\0{incarnation:016x}\0{partition}` (kinds `batches`, `times`, `producers`,
//! `stats`), and a directory of batch files, `files/{partition}/{id:016x}.batches`. Topic
//! names match
//! `[A-Za-z0-9._-]{1,200}`, so the first `\0` ends the name. The incarnation is a sled-generated
//! id fixed when the topic is created: a topic deleted and created again gets fresh trees, and
//! databases a crash left behind in `delete_topic` are moved aside (`orphaned/`) at the next
//! open.
//!
//! - `batches`: base offset (u64 big-endian) -> a 52-byte locator: file id, position and length
//!   of the stamped batch bytes, the batch's producer id and that producer's entry before it,
//!   and a CRC32C (`partition::files::Locator`). A store of layout 2 kept the batch bytes here
//!   instead, which still read.
//! - `times`: running maximum of the batches' max timestamps (i64 big-endian, sign bit
//!   flipped) -> base offset of the first batch at which it reached that value. An entry is
//!   added only when the running maximum grows, so the keys stay sorted and unique even though
//!   producers' event times go backwards; `offset_for_time(t)` is the first entry at or above
//!   `t`, and never skips a record with an event time >= `t`.
//! - `producers`: producer id (u64 big-endian) -> last sequence and its base offset.
//! - `stats`: one entry, the partition's size in bytes and batch count.
//!
//! An append writes the batch, the index entry (if any), the producer entry (unless producer
//! id 0) and the stats in one multi-tree sled transaction, so that dedup state and stats
//! recover exactly with the batches after a crash. A retention step removes batches, moves
//! their index entries and rewrites the stats in one transaction as well.
//!
//! # Measurements and the choices they made
//!
//! On the 2-core machine this project targets, sled 0.34.7 (opt-level 2), microseconds per
//! append without flushing (`tests/storage/measure.rs`, best of three runs):
//!
//! | batch | plain insert | 3 plain inserts | 3-tree txn | 4-tree txn | `append` | `append` + flush |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | 1 KB | 5.8 | 12.5 | 96.7 | 97.9 | 99.8 | 212 |
//! | 10 KB | 19.2 | 18.8 | 113 | 103 | 107 | 237 |
//! | 100 KB | 89.6 | 97.9 | 149 | 130 | 131 | 359 |
//!
//! - A sled transaction costs about 90 µs whatever it writes: sled 0.34 writes out its I/O
//!   buffer at the start of every transaction so that the transaction recovers atomically.
//!   Appends therefore top out near 10,000 batches per second per process, across all
//!   partitions (sled runs transactions under one process-wide lock). Batching makes this
//!   irrelevant at the batch size docs/design.md, decision 2, chose (1000 events);
//!   single-record batches would hit it. If it ever matters, the alternative is to drop the
//!   transaction: producer state and stats can be rebuilt from batch headers after a
//!   checkpoint, as Kafka does.
//! - The stats entry in the transaction costs nothing measurable (4 trees vs 3, above), and
//!   it spares a full read of every batch at open (sled reads values along with keys):
//!   opening a 286 MB partition took 56 ms, where scanning it took 134 ms with a warm OS
//!   cache, and the scan grows with the log. So sizes are kept in the stats entry.
//! - Producer state is read from its tree on first use of an id, not all at open.
//!
//! # Concurrency
//!
//! Appends and retention steps of one partition are serialized by that partition's mutex;
//! reads take no lock and see appended batches as soon as `append` returns (before they are
//! flushed). `delete_topic` waits for a running append or retention step of each partition,
//! then fails every later call on handles still held.

mod auth;
pub mod check;
mod devices;
mod error;
mod failpoint;
mod layout;
pub mod ledger;
mod partition;
mod processors;
pub mod raft_log;
pub mod records;
pub mod space;
mod store;

pub use auth::AuthTree;

/// Hands the calling thread's deferred frees to crossbeam-epoch's global queue.
///
/// sled frees replaced tree nodes through crossbeam-epoch, which keeps up to 64 deferred frees
/// per thread until that thread pins again. On a broker's dozens of blocking threads, old
/// nodes holding large batches waited there by hundreds of MiB (server/broker/tests/
/// hostile_load.rs); once in the global queue, any thread frees them. Called after each
/// append, read, retention pass and flush: one pin, well under a microsecond.
pub(crate) fn release_deferred() {
    crossbeam_epoch::pin().flush();
}
pub use error::StorageError;
pub use layout::{GROUP_NAME_BYTES_MAX, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX};
pub use partition::{Damage, Partition, Repair, Scan, ScrubCursor, ScrubStep};
pub use processors::MODULE_BYTES_MAX;
pub use store::{check_topic, flush_durably, Loss, MetadataRestore, Store};

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
