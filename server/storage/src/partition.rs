//! One topic-partition log: appends, reads, the timestamp index, producer dedup, retention.

mod appends;
mod files;
mod repair;
mod retention;
mod scrub;

use std::collections::HashMap;
use std::convert::Infallible;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use silt_core::partition::{Admission, BatchMeta, LogEnds, PartitionLog};
use silt_core::retention::{OldestBatch, RetentionPolicy};
use silt_wire::batch::{peek_header, stamp, BatchView, HEADER_LEN};
use sled::transaction::{TransactionError, Transactional};
use sled::IVec;

use crate::layout::{
    decode_offset_key, decode_time_key, offset_key, partition_tree_name, time_key, PartitionTree,
    ProducerEntry, Stats, APPLIED_KEY, CHECKPOINTS_TREE, GAPS_KEY, STATS_KEY,
};
use crate::records::{StoredGaps, GAPS_BYTES_MAX};
use crate::{Appended, ReadOutcome, Retained, StorageError};
use appends::{Extra, Times};

pub use files::Locator;
pub use repair::{Damage, Repair};
pub use scrub::{Scan, ScrubCursor, ScrubStep};

/// Most batches one retention transaction removes. sled runs every transaction under one
/// process-wide write lock, so a retention pass is cut into steps that each hold appends of
/// all partitions back only briefly; 256 small batches remove in well under a millisecond.
const RETENTION_STEP_BATCHES_MAX: usize = 256;
/// Most bytes one retention transaction removes: sled's transaction keeps the removed values
/// in memory until commit, so this bounds that memory (plus one batch of up to 8 MiB).
const RETENTION_STEP_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// One topic-partition log. Cheap to clone through `Arc`; appends are serialized by an
/// internal per-partition lock, reads take no lock.
pub struct Partition {
    topic: String,
    /// Fixed when its topic was created; a topic created again under the name is another.
    incarnation: u64,
    partition: u32,
    /// Base offset -> where the batch is in `files` (`files::Locator`), or the batch itself
    /// when layout 2 stored it.
    batches: sled::Tree,
    times: sled::Tree,
    producers: sled::Tree,
    stats: sled::Tree,
    /// The store-wide checkpoint tree of pipeline processors, written in the same transaction
    /// as their output batches ([`Partition::append_checkpointed`]).
    checkpoints: sled::Tree,
    /// The topic's database, for file ids and flushes before files are removed.
    db: sled::Db,
    files: files::BatchFiles,
    /// Held for the whole of an append or a retention step, never by reads.
    writer: Mutex<Writer>,
    /// Offset of the first retained record. Only the writer changes it.
    log_start: AtomicU64,
    /// Offset the next record gets. Stored (Release) only after the batch is in its tree, so a
    /// reader that sees an offset below it finds the batch.
    next_offset: AtomicU64,
    size_bytes: AtomicU64,
    batch_count: AtomicU64,
    /// Set (under the writer lock) when the topic is deleted; every later call fails with
    /// `UnknownTopic`.
    deleted: AtomicBool,
    /// Ranges of offsets whose loss an operator accepted ([`Partition::repair`]), which reads
    /// step over. Only the writer changes them; `has_gaps` spares reads the lock when there
    /// are none, as almost always.
    gaps: RwLock<StoredGaps>,
    has_gaps: AtomicBool,
}

/// State only the writer touches.
struct Writer {
    /// The append decisions (silt-core): log ends, producers seen since open (filled from the
    /// producers tree on first use of an id, never evicted: memory grows with the number of
    /// distinct producer ids) and the running maximum event time, the key of the last
    /// timestamp index entry.
    log: PartitionLog,
    /// The batch file appends go to; none until the first append after an open or a failed
    /// write.
    active: Option<files::Active>,
}

impl Partition {
    /// Opens (creating when absent) the trees of a partition and recovers its in-memory state
    /// from them: offsets from the first and last batch, sizes from the stats entry, the
    /// running maximum event time from the last index entry. Reads two batches, not the log.
    pub(crate) fn open(
        db: &sled::Db,
        dir: &std::path::Path,
        topic: &str,
        incarnation: u64,
        partition: u32,
    ) -> Result<Partition, StorageError> {
        let p = Partition::unrecovered(db, dir, topic, incarnation, partition)?;
        p.recover()?;
        Ok(p)
    }

    /// The partition's trees and files (of the topic whose database is in `dir`), with nothing
    /// recovered from them yet.
    pub(crate) fn unrecovered(
        db: &sled::Db,
        dir: &std::path::Path,
        topic: &str,
        incarnation: u64,
        partition: u32,
    ) -> Result<Partition, StorageError> {
        let tree = |kind| db.open_tree(partition_tree_name(kind, topic, incarnation, partition));
        let p = Partition {
            topic: topic.to_owned(),
            incarnation,
            partition,
            batches: tree(PartitionTree::Batches)?,
            times: tree(PartitionTree::Times)?,
            producers: tree(PartitionTree::Producers)?,
            stats: tree(PartitionTree::Stats)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE)?,
            db: db.clone(),
            files: files::BatchFiles::new(dir, partition),
            writer: Mutex::new(Writer { log: PartitionLog::default(), active: None }),
            log_start: AtomicU64::new(0),
            next_offset: AtomicU64::new(0),
            size_bytes: AtomicU64::new(0),
            batch_count: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            gaps: RwLock::new(StoredGaps::default()),
            has_gaps: AtomicBool::new(false),
        };
        Ok(p)
    }

    fn recover(&self) -> Result<(), StorageError> {
        let mut writer = self.lock_writer()?;
        self.recover_locked(&mut writer)
    }

    /// Recovers the in-memory state from the trees; the caller holds the writer lock.
    fn recover_locked(&self, writer: &mut Writer) -> Result<(), StorageError> {
        self.drop_torn_tail()?;
        let gaps = self.load_gaps()?;
        let (log_start, next_offset) = match (self.batches.first()?, self.batches.last()?) {
            (Some((first_key, _)), Some((last_key, last))) => {
                let first = decode_offset_key(&first_key).ok_or_else(|| self.bad_key(&first_key))?;
                let last = self.whole(&last_key, last)?;
                let last = self.checked(&last_key, &last)?;
                (first, last.next_offset())
            }
            _ => (0, 0),
        };
        let stats = match self.stats.get(STATS_KEY)? {
            Some(bytes) => Stats::decode(&bytes).ok_or_else(|| self.corrupt_meta("stats", "not 16 bytes"))?,
            None => Stats::default(),
        };
        // Cheap consistency checks between the stats entry and the log it describes: every
        // batch holds at least one record and a whole header.
        let span = next_offset - log_start;
        if (stats.batch_count == 0) != (span == 0)
            || stats.batch_count > span
            || stats.size_bytes < stats.batch_count.saturating_mul(HEADER_LEN as u64)
        {
            return Err(self.corrupt_meta(
                "stats",
                &format!(
                    "{} batches of {} bytes cannot hold offsets {log_start}..{next_offset}",
                    stats.batch_count, stats.size_bytes
                ),
            ));
        }
        let running_max_ts = match self.times.last()? {
            Some((key, _)) => {
                Some(decode_time_key(&key).ok_or_else(|| self.corrupt_meta("timestamp index", "bad key"))?)
            }
            None => None,
        };
        if running_max_ts.is_none() && span > 0 {
            return Err(self.corrupt_meta("timestamp index", "empty although batches are stored"));
        }
        // Accepted losses at the end of the log keep their offsets taken: appends go on after
        // them, so no offset a reader may have seen ever names another record.
        let gaps_end = gaps.end();
        let (log_start, next_offset) = if gaps_end > next_offset {
            (if span == 0 { gaps_end } else { log_start }, gaps_end)
        } else {
            (log_start, next_offset)
        };
        self.has_gaps.store(!gaps.ranges.is_empty(), Ordering::Release);
        *self.gaps.write().unwrap_or_else(|e| e.into_inner()) = gaps;
        self.log_start.store(log_start, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        self.size_bytes.store(stats.size_bytes, Ordering::Relaxed);
        self.batch_count.store(stats.batch_count, Ordering::Relaxed);
        writer.active = None;
        writer.log = PartitionLog::recovered(LogEnds {
            log_start,
            next_offset,
            size_bytes: stats.size_bytes,
            batch_count: stats.batch_count,
            max_timestamp_ms: running_max_ts,
        });
        Ok(())
    }

    /// Appends one batch that already passed `silt_wire::batch::validate`. Assigns the next
    /// offset, stamps the header with it and `append_time_ms`, and writes the batch, the
    /// timestamp index entry and the producer's (id -> sequence, base offset) in one sled
    /// transaction. A batch with producer id 0 is never deduplicated. A batch whose sequence is
    /// at or below the producer's last one is a `Duplicate`; one that skips ahead is refused
    /// with `OutOfOrderSequence`.
    ///
    /// The first batch of a producer id this partition has not seen is accepted whatever its
    /// sequence. On `Duplicate` and on errors nothing is written and `batch` is left as given
    /// (except after a sled failure, when it may already be stamped).
    pub fn append(&self, batch: &mut [u8], append_time_ms: i64) -> Result<Appended, StorageError> {
        self.append_many(&mut [batch], append_time_ms).pop().expect("one result per batch")
    }

    /// [`Partition::append`] for several batches in order, written in one sled transaction.
    /// A sled transaction costs about 70 µs more than a plain insert whatever it carries
    /// (`measure_append_cost`), so a broker with several batches queued for a partition pays
    /// it once. Returns one result per batch, in order: duplicates and refused batches are
    /// left out of the write, the others get consecutive offsets; when the transaction fails,
    /// every batch it would have written gets the error.
    pub fn append_many(
        &self,
        batches: &mut [&mut [u8]],
        append_time_ms: i64,
    ) -> Vec<Result<Appended, StorageError>> {
        self.append_inner(batches, append_time_ms, None)
    }

    pub(super) fn append_inner(
        &self,
        batches: &mut [&mut [u8]],
        append_time_ms: i64,
        checkpoint: Option<(&[u8], &[u8])>,
    ) -> Vec<Result<Appended, StorageError>> {
        let extra = match checkpoint {
            Some((key, value)) => Extra::Checkpoint(key, value),
            None => Extra::None,
        };
        let results = self.append_locked(batches, Times::One(append_time_ms), extra);
        crate::release_deferred();
        results
    }

    fn append_locked(
        &self,
        batches: &mut [&mut [u8]],
        times: Times<'_>,
        extra: Extra<'_>,
    ) -> Vec<Result<Appended, StorageError>> {
        let checkpoint = match extra {
            Extra::Checkpoint(key, value) => Some((key, value)),
            _ => None,
        };
        let applied = match extra {
            Extra::Applied(value) => Some(value),
            _ => None,
        };
        let mut writer = match self.lock_writer() {
            Ok(w) => w,
            Err(e) => return batches.iter().map(|_| Err(clone_live_error(&e))).collect(),
        };
        // The decisions are silt-core's; this shell reads headers, loads producer entries,
        // writes what the plan says in one transaction and only then takes the plan on.
        let mut shape_errors: Vec<Option<StorageError>> = Vec::with_capacity(batches.len());
        let mut metas: Vec<BatchMeta> = Vec::with_capacity(batches.len());
        for batch in batches.iter() {
            match self.check_shape(batch) {
                Err(e) => shape_errors.push(Some(e)),
                Ok(()) => {
                    shape_errors.push(None);
                    let (records, producer_id, sequence, max_timestamp_ms) = peek_header(batch);
                    metas.push(BatchMeta {
                        records,
                        producer_id,
                        sequence,
                        max_timestamp_ms,
                        bytes: batch.len() as u64,
                    });
                }
            }
        }
        let mut load_errors: HashMap<u64, StorageError> = HashMap::new();
        for id in writer.log.unknown_producers(&metas) {
            match self.load_producer(id) {
                Ok(entry) => writer.log.learn_producer(id, entry),
                Err(e) => {
                    load_errors.insert(id, e);
                }
            }
        }
        let plan = writer.log.plan(&metas);
        let mut admissions = plan.admissions.iter();
        let mut results: Vec<Result<Appended, StorageError>> = Vec::with_capacity(batches.len());
        let mut staged: Vec<(usize, [u8; 8], Option<[u8; 8]>)> = Vec::new();
        // What undoing each staged batch takes (`files::Locator`): its producer and that
        // producer's entry before it.
        let mut undo: Vec<(u64, Option<silt_core::partition::ProducerEntry>)> = Vec::new();
        let mut entries: HashMap<u64, Option<silt_core::partition::ProducerEntry>> = HashMap::new();
        for (index, shape_error) in shape_errors.into_iter().enumerate() {
            if let Some(e) = shape_error {
                results.push(Err(e));
                continue;
            }
            let admission = *admissions.next().expect("one admission per well-formed batch");
            results.push(match admission {
                Admission::New { base_offset, index_time } => {
                    let (_, producer_id, sequence, _) = peek_header(batches[index]);
                    let previous = if producer_id == silt_core::partition::ANONYMOUS_PRODUCER {
                        None
                    } else {
                        let entry =
                            entries.entry(producer_id).or_insert_with(|| writer.log.producer(producer_id));
                        entry.replace(silt_core::partition::ProducerEntry {
                            last_sequence: sequence,
                            base_offset,
                        })
                    };
                    undo.push((producer_id, previous));
                    let append_time_ms = match times {
                        Times::One(t) => t,
                        Times::Each(each) => each[index],
                    };
                    stamp(batches[index], base_offset, append_time_ms);
                    staged.push((index, offset_key(base_offset), index_time.map(time_key)));
                    Ok(Appended::New { base_offset })
                }
                Admission::Duplicate { base_offset } => Ok(Appended::Duplicate { base_offset }),
                Admission::OutOfOrder { producer_id, expected, got } => {
                    Err(StorageError::OutOfOrderSequence { producer_id, expected, got })
                }
                Admission::OffsetOverflow { next_offset } => Err(StorageError::OffsetOverflow {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    next_offset,
                }),
                Admission::ProducerNotLoaded { producer_id } => Err(match load_errors.get(&producer_id) {
                    Some(e) => clone_live_error(e),
                    None => self.corrupt_meta(&format!("producer {producer_id} state"), "not loaded"),
                }),
            });
        }
        if checkpoint.is_some() && staged.len() != results.len() {
            return self.refuse_checkpointed(results);
        }
        if staged.is_empty() && checkpoint.is_none() && applied.is_none() {
            return results;
        }
        let stats = Stats { size_bytes: plan.after.size_bytes, batch_count: plan.after.batch_count };
        let producers: Vec<([u8; 8], [u8; 16])> = plan
            .producers
            .iter()
            .map(|(id, e)| {
                let entry = ProducerEntry { last_sequence: e.last_sequence, base_offset: e.base_offset };
                (id.to_be_bytes(), entry.encode())
            })
            .collect();
        // The bytes go to the batch file first; the transaction commits where they are.
        let mut locators = Vec::with_capacity(staged.len());
        let mut written = Ok(());
        for ((index, _, _), undo) in staged.iter().zip(&undo) {
            match self.files.write(&self.db, &mut writer.active, batches[*index], *undo) {
                Ok(locator) => locators.push(locator.encode()),
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
        }
        if written.is_ok() && checkpoint.is_some() {
            written = self.files.sync(&mut writer.active);
        }
        if let Err(e) = written {
            for (index, _, _) in &staged {
                results[*index] = Err(clone_sled_error(&e));
            }
            return results;
        }
        let trees = (&self.batches, &self.times, &self.producers, &self.stats, &self.checkpoints);
        let written = trees
            .transaction(|(batches_tree, times, producers_tree, stats_tree, checkpoints)| {
                for ((_, key, time_entry), locator) in staged.iter().zip(&locators) {
                    batches_tree.insert(&key[..], &locator[..])?;
                    if let Some(time) = time_entry {
                        times.insert(&time[..], &key[..])?;
                    }
                }
                for (id, entry) in &producers {
                    producers_tree.insert(&id[..], &entry[..])?;
                }
                if !staged.is_empty() {
                    stats_tree.insert(STATS_KEY, &stats.encode()[..])?;
                }
                if let Some((key, value)) = checkpoint {
                    checkpoints.insert(key, value)?;
                }
                if let Some(value) = applied {
                    stats_tree.insert(APPLIED_KEY, value)?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(sled_error);
        if let Err(e) = written {
            for (index, _, _) in &staged {
                results[*index] = Err(clone_sled_error(&e));
            }
            return results;
        }
        // Memory follows disk only after the transaction committed.
        let after = plan.after;
        writer.log.apply(plan);
        self.size_bytes.store(after.size_bytes, Ordering::Relaxed);
        self.batch_count.store(after.batch_count, Ordering::Relaxed);
        self.next_offset.store(after.next_offset, Ordering::Release);
        results
    }

    /// Appends to `out` whole stored batches, starting with the one that holds `from`, until
    /// `max_bytes` would be exceeded (at least one batch when any exists) or `limit` (an
    /// offset, exclusive) is reached. Each batch's checksums are checked; a mismatch is a
    /// `Corrupt` error.
    ///
    /// A `from` below the log start reads from the log start. The first batch may begin before
    /// `from` (skipping those records is the caller's job) and the last may end after `limit`
    /// (only batches that begin at or after `limit` are left out). Reads see appended batches
    /// before they are flushed; a caller that must only hand out durable records passes its
    /// durable watermark as `limit`. If retention removes the batch holding `from` while the
    /// read runs, the first batch returned starts after `from`. On an error, `out` may already
    /// hold the batches before the failing one.
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
        limit: u64,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StorageError> {
        self.check_live()?;
        let read = self.read_batches(from, max_bytes, limit, out).map_err(|e| self.after_delete(e));
        crate::release_deferred();
        read
    }

    fn read_batches(
        &self,
        from: u64,
        max_bytes: usize,
        limit: u64,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StorageError> {
        let start = self.past_gaps(from.max(self.log_start.load(Ordering::Acquire)));
        let mut outcome = ReadOutcome { next_offset: from, batches: 0 };
        if start >= limit {
            return Ok(outcome);
        }
        let out_len_before = out.len();
        // Where the next batch taken must begin: offsets follow on from batch to batch, and a
        // batch missing from the store (sled lost it) is an error, never skipped.
        let mut expected: Option<u64> = None;
        // Adds one batch to `out`; false when the read is complete.
        let mut take = |key: &IVec, stored: IVec| -> Result<bool, StorageError> {
            let value = match self.whole(key, stored) {
                Ok(value) => value,
                // Retention removed it (and maybe its file) since the read found it.
                Err(_) if self.retained_meanwhile(key) => return Ok(true),
                Err(e) => return Err(e),
            };
            let view = self.checked(key, &value)?;
            if view.next_offset() <= start {
                // Only a batch that ends before `start` (the one found below it when `start`
                // is at or past the high watermark, or before a gap).
                return Ok(true);
            }
            if view.base_offset() >= limit {
                return Ok(false);
            }
            // The first batch may begin after `start` only when retention moved the log start
            // past it meanwhile.
            let want = expected.unwrap_or_else(|| start.max(self.log_start.load(Ordering::Acquire)));
            if view.base_offset() > want && !self.accepted(want, view.base_offset()) {
                return Err(StorageError::Corrupt {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: want,
                    reason: format!("offsets {want}..{} are missing from the store", view.base_offset()),
                });
            }
            expected = Some(view.next_offset());
            let taken = out.len() - out_len_before;
            if outcome.batches > 0 && taken.saturating_add(value.len()) > max_bytes {
                return Ok(false);
            }
            out.extend_from_slice(&value);
            outcome.batches += 1;
            outcome.next_offset = view.next_offset();
            Ok(taken + value.len() < max_bytes)
        };
        // The batch holding `start` is the last one whose base offset is at or below it.
        let lower = match self.batches.range(..=offset_key(start)).next_back() {
            Some(found) => {
                let (key, value) = found?;
                if !take(&key, value)? {
                    return Ok(outcome);
                }
                Bound::Excluded(key)
            }
            None => Bound::Included(IVec::from(&offset_key(start)[..])),
        };
        for item in self.batches.range((lower, Bound::Unbounded)) {
            let (key, value) = item?;
            if !take(&key, value)? {
                break;
            }
        }
        Ok(outcome)
    }

    /// The first offset whose batch may hold records with event time >= `timestamp_ms`
    /// (the high watermark when none).
    ///
    /// Exact with respect to the batches' max timestamps: it is the base offset of the first
    /// retained batch whose max timestamp, or that of an earlier batch, is >= `timestamp_ms`.
    /// With non-monotonic event times a later batch may still hold older records; no record
    /// with event time >= `timestamp_ms` is ever before the returned offset.
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, StorageError> {
        self.check_live()?;
        let found = self
            .times
            .range(time_key(timestamp_ms)..)
            .next()
            .transpose()
            .map_err(|e| self.after_delete(e.into()))?;
        match found {
            Some((_, base)) => {
                let base = decode_offset_key(&base)
                    .ok_or_else(|| self.corrupt_meta("timestamp index", "bad value"))?;
                // Retention moves entries in the same transaction as it removes batches, but a
                // lookup racing with it may find an entry whose batch just went.
                Ok(base.max(self.log_start.load(Ordering::Acquire)))
            }
            None => Ok(self.high_watermark()),
        }
    }

    /// The partition's key in the acknowledgement ledger.
    pub fn ledger_key(&self) -> crate::ledger::PartitionKey {
        crate::ledger::PartitionKey {
            topic: self.topic.clone(),
            incarnation: self.incarnation,
            partition: self.partition,
        }
    }

    /// `offset`, or the end of the accepted loss that holds it.
    pub fn past_gaps(&self, offset: u64) -> u64 {
        if !self.has_gaps.load(Ordering::Acquire) {
            return offset;
        }
        self.gaps.read().unwrap_or_else(|e| e.into_inner()).past(offset)
    }

    /// Whether offsets `from..to` lie in one accepted loss.
    fn accepted(&self, from: u64, to: u64) -> bool {
        self.has_gaps.load(Ordering::Acquire)
            && self.gaps.read().unwrap_or_else(|e| e.into_inner()).covers(from, to)
    }

    /// The ranges of offsets whose loss an operator accepted.
    pub fn accepted_losses(&self) -> Vec<(u64, u64)> {
        self.gaps.read().unwrap_or_else(|e| e.into_inner()).ranges.clone()
    }

    fn load_gaps(&self) -> Result<StoredGaps, StorageError> {
        let Some(bytes) = self.stats.get(GAPS_KEY)? else {
            return Ok(StoredGaps::default());
        };
        let what = format!("accepted losses of {}/{}", self.topic, self.partition);
        let gaps: StoredGaps = crate::records::open_at_most(&what, &bytes, GAPS_BYTES_MAX)
            .map_err(|reason| StorageError::CorruptMeta { what: what.clone(), reason })?;
        if !gaps.well_formed() {
            return Err(StorageError::CorruptMeta { what, reason: "ranges out of order".into() });
        }
        Ok(gaps)
    }

    /// Offset of the first retained record.
    pub fn log_start(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }
    /// Offset the next appended record will get.
    pub fn high_watermark(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }
    /// Bytes of stored batches.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }
    /// Number of stored batches.
    pub fn batch_count(&self) -> u64 {
        self.batch_count.load(Ordering::Relaxed)
    }

    /// Marks the partition deleted once no append or retention step is running; every later
    /// call fails with `UnknownTopic`. `false` revives it (when deleting the topic failed).
    pub(crate) fn set_deleted(&self, deleted: bool) {
        let _writer = self.writer.lock().expect("a partition writer panicked");
        self.deleted.store(deleted, Ordering::Release);
    }

    /// The producer's last entry: from memory, else from its tree (then remembered).
    /// A producer's stored entry; `None` when this partition has never seen it.
    fn load_producer(
        &self,
        producer_id: u64,
    ) -> Result<Option<silt_core::partition::ProducerEntry>, StorageError> {
        let Some(bytes) = self.producers.get(producer_id.to_be_bytes())? else {
            return Ok(None);
        };
        let entry = ProducerEntry::decode(&bytes)
            .ok_or_else(|| self.corrupt_meta(&format!("producer {producer_id} state"), "not 16 bytes"))?;
        Ok(Some(silt_core::partition::ProducerEntry {
            last_sequence: entry.last_sequence,
            base_offset: entry.base_offset,
        }))
    }

    /// The cheap checks that keep `peek_header` and `stamp` from panicking on bytes that never
    /// went through `validate`.
    fn check_shape(&self, batch: &[u8]) -> Result<(), StorageError> {
        let invalid = |reason| StorageError::InvalidBatch {
            topic: self.topic.clone(),
            partition: self.partition,
            reason,
        };
        if batch.len() < HEADER_LEN {
            return Err(invalid("shorter than a batch header"));
        }
        if u32::from_le_bytes([batch[0], batch[1], batch[2], batch[3]]) as usize != batch.len() {
            return Err(invalid("length field does not match the bytes given"));
        }
        if peek_header(batch).0 == 0 {
            return Err(invalid("batch has no records"));
        }
        Ok(())
    }

    /// Checks a stored batch: key shape, both checksums, and that the key is its base offset.
    fn checked<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<BatchView<'a>, StorageError> {
        let offset = decode_offset_key(key).ok_or_else(|| self.bad_key(key))?;
        let corrupt = |reason: String| StorageError::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
            reason,
        };
        let view = BatchView::checked(value).map_err(|e| corrupt(e.to_string()))?;
        if view.base_offset() != offset {
            return Err(corrupt(format!("header says base offset {}", view.base_offset())));
        }
        if view.record_count() == 0 || offset.checked_add(u64::from(view.record_count())).is_none() {
            return Err(corrupt(format!("record count {} is impossible here", view.record_count())));
        }
        Ok(view)
    }

    /// Whether the batch under `key` is below the log start now: retention removed it, and
    /// perhaps its file, after a reader found it.
    fn retained_meanwhile(&self, key: &[u8]) -> bool {
        decode_offset_key(key).is_some_and(|offset| offset < self.log_start.load(Ordering::Acquire))
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StorageError> {
        // A panic while appending leaves memory possibly behind disk; refuse to go on.
        let writer = self.writer.lock().expect("a partition writer panicked");
        self.check_live()?;
        Ok(writer)
    }

    fn check_live(&self) -> Result<(), StorageError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(StorageError::UnknownTopic(self.topic.clone()));
        }
        Ok(())
    }

    /// A read that raced with `delete_topic` fails with sled's "collection not found";
    /// report that as the topic being gone.
    fn after_delete(&self, e: StorageError) -> StorageError {
        match e {
            StorageError::Sled(_) if self.deleted.load(Ordering::Acquire) => {
                StorageError::UnknownTopic(self.topic.clone())
            }
            e => e,
        }
    }

    fn bad_key(&self, key: &[u8]) -> StorageError {
        StorageError::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: 0,
            reason: format!("batch key of {} bytes, not 8", key.len()),
        }
    }

    fn corrupt_meta(&self, what: &str, reason: &str) -> StorageError {
        StorageError::CorruptMeta {
            what: format!("{what} of {}/{}", self.topic, self.partition),
            reason: reason.to_owned(),
        }
    }
}

/// The same failure again, for every batch of a failed group write.
fn clone_sled_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::Sled(inner) => StorageError::Sled(inner.clone()),
        other => StorageError::Sled(sled::Error::Unsupported(other.to_string())),
    }
}

/// The error `lock_writer` gave, for every batch of the call.
fn clone_live_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::UnknownTopic(t) => StorageError::UnknownTopic(t.clone()),
        other => clone_sled_error(other),
    }
}

fn sled_error(e: TransactionError<Infallible>) -> StorageError {
    match e {
        TransactionError::Storage(e) => StorageError::Sled(e),
        TransactionError::Abort(never) => match never {},
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("log_start", &self.log_start())
            .field("high_watermark", &self.high_watermark())
            .field("batch_count", &self.batch_count())
            .field("size_bytes", &self.size_bytes())
            .finish()
    }
}
