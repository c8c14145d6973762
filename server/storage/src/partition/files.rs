//! Batch bytes in files of their own beside the partition's sled trees; the batches tree
//! holds where each batch is.
//!
//! sled 0.34 keeps what it reads and writes in its page cache and evicts only lazily: each of
//! its 256 cache shards weighs its pages once 64 accesses to it have queued up, and it counts
//! a node stored as a blob (over a quarter of a segment, so any leaf of large batches) by
//! the size of its pointer. A partition's retained batches thus stayed resident whatever
//! `cache_bytes` said (docs/reliability.md has the figures). Batch bytes now go to append-only
//! files read with `pread`: the kernel's page cache holds them, which it can drop, and sled
//! holds a small [`Locator`] per batch.
//!
//! A partition's files are `{topic database}/files/{partition}/{id:016x}.batches`, the id a
//! sled-generated one and never below the highest file already there, so a file is never
//! written again under a name a crash left behind, and ids follow the order files were made
//! in (retention relies on it). sled's ids alone do not promise that: a topic database killed
//! before sled made anything of it durable opens as new and counts from 0 again, while the
//! files its partitions wrote stay (a SIGKILL in a crash test found it: `File exists`).
//! Appends go to the newest file this process made, up to [`FILE_BYTES_MAX`] (an eighth of a
//! retention policy's bytes or age, when smaller: `follow_retention`); after an
//! open or a failed write they start a new one, so bytes written but never committed (a crash
//! before the sled transaction) are left where they are, referenced by nothing. A file goes
//! once retention or repair moved the log start past every batch in it, after the store has
//! made that durable. The store's flush (sled's, then one `syncfs`) makes the files durable
//! with the trees. A locator carries its own checksum, and the batch it points at its two:
//! a damaged, cut or missing file reads as a `Corrupt` batch.
//!
//! Values of layout 2 (the batch bytes themselves) still read as they are; they are at least
//! a batch header long, and a locator is shorter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use silt_wire::batch::BATCH_BYTES_MAX;

use super::*;

/// A file takes appends until it holds this much; the next append starts another.
pub(crate) const FILE_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Under a retention policy files roll at an eighth of what it keeps (bytes, and age), so
/// the disk holds about an eighth more than the policy keeps, not a whole file more.
const ROLLS_PER_RETENTION: u64 = 8;
/// The smallest files a retention policy makes.
const FILE_BYTES_MIN: u64 = 1024 * 1024;
const FILE_AGE_MS_MIN: u64 = 1_000;
/// Files kept open for reads per partition; past it the least recently opened closes.
const READ_FILES_OPEN_MAX: usize = 4;
/// Bytes of an encoded [`Locator`].
pub const LOCATOR_BYTES: usize = 52;

/// Where one batch is (file id, position, length), and what undoing it takes: its producer id
/// and that producer's entry before it. Encoded little-endian in 52 bytes, the last four a
/// CRC32C of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locator {
    pub file: u64,
    pub position: u64,
    pub len: u32,
    pub producer_id: u64,
    /// The producer's entry before this batch: `None` for its first batch here (and for
    /// producer id 0, which is never deduplicated).
    pub previous: Option<silt_core::partition::ProducerEntry>,
}

impl Locator {
    pub fn encode(&self) -> [u8; LOCATOR_BYTES] {
        let mut b = [0; LOCATOR_BYTES];
        b[..8].copy_from_slice(&self.file.to_le_bytes());
        b[8..16].copy_from_slice(&self.position.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b[20..28].copy_from_slice(&self.producer_id.to_le_bytes());
        if let Some(previous) = self.previous {
            b[28..36].copy_from_slice(&previous.last_sequence.to_le_bytes());
            b[36..44].copy_from_slice(&previous.base_offset.to_le_bytes());
            b[44] = 1;
        }
        let crc = crc32c::crc32c(&b[..48]);
        b[48..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for a value that is not a locator (a batch stored inline by layout 2);
    /// `Some(Err)` for one of a locator's length that fails its checksum.
    pub fn decode(value: &[u8]) -> Option<Result<Locator, &'static str>> {
        let b: &[u8; LOCATOR_BYTES] = value.try_into().ok()?;
        let crc = u32::from_le_bytes([b[48], b[49], b[50], b[51]]);
        if crc32c::crc32c(&b[..48]) != crc || b[44] > 1 {
            return Some(Err("its locator fails its checksum"));
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let previous = (b[44] == 1)
            .then(|| silt_core::partition::ProducerEntry { last_sequence: word(28), base_offset: word(36) });
        Some(Ok(Locator {
            file: word(0),
            position: word(8),
            len: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            producer_id: word(20),
            previous,
        }))
    }
}

/// The file appends go to, held by the partition's writer.
pub(super) struct Active {
    id: u64,
    file: File,
    len: u64,
    opened: std::time::Instant,
}

/// One partition's batch files.
pub(crate) struct BatchFiles {
    dir: PathBuf,
    /// Handles open for reads, by file id.
    readers: Mutex<BTreeMap<u64, Arc<File>>>,
    /// The size and age at which the active file rolls ([`BatchFiles::follow_retention`]).
    roll_bytes: AtomicU64,
    roll_ms: AtomicU64,
    /// The least id the next file may have: past every file this process made or found,
    /// [`UNSCANNED`] until the first file of this process looked at the directory.
    id_floor: AtomicU64,
}

/// [`BatchFiles::id_floor`] before the directory was looked at.
const UNSCANNED: u64 = u64::MAX;

fn file_name(id: u64) -> String {
    format!("{id:016x}.batches")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".batches")?;
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

impl BatchFiles {
    /// The files of `partition` of the topic whose database is in `topic_dir`.
    pub(super) fn new(topic_dir: &Path, partition: u32) -> BatchFiles {
        BatchFiles {
            dir: topic_dir.join("files").join(partition.to_string()),
            readers: Mutex::default(),
            roll_bytes: AtomicU64::new(FILE_BYTES_MAX),
            roll_ms: AtomicU64::new(u64::MAX),
            id_floor: AtomicU64::new(UNSCANNED),
        }
    }

    /// The id of the next file: sled's next id, raised past every file in the directory.
    /// Called by the partition's one writer.
    fn next_id(&self, db: &sled::Db) -> Result<u64, StorageError> {
        let mut floor = self.id_floor.load(Ordering::Relaxed);
        if floor == UNSCANNED {
            floor = self.older(None, None)?.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
        }
        let id = db.generate_id()?.max(floor);
        self.id_floor.store(id + 1, Ordering::Relaxed);
        Ok(id)
    }

    /// Rolls files at an eighth of what the retention policy keeps, in bytes and in age.
    pub(super) fn follow_retention(&self, retention_ms: Option<u64>, retention_bytes: Option<u64>) {
        let bytes = retention_bytes
            .map_or(FILE_BYTES_MAX, |b| (b / ROLLS_PER_RETENTION).clamp(FILE_BYTES_MIN, FILE_BYTES_MAX));
        let ms = retention_ms.map_or(u64::MAX, |ms| (ms / ROLLS_PER_RETENTION).max(FILE_AGE_MS_MIN));
        self.roll_bytes.store(bytes, Ordering::Relaxed);
        self.roll_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether `active` takes no more appends, `batch` next.
    fn full(&self, active: &Active, batch: &[u8]) -> bool {
        let (bytes, ms) = (self.roll_bytes.load(Ordering::Relaxed), self.roll_ms.load(Ordering::Relaxed));
        active.len > 0
            && (active.len + batch.len() as u64 > bytes || active.opened.elapsed().as_millis() as u64 > ms)
    }

    /// Writes `batch` at the end of the active file (starting one when there is none or it is
    /// full) and says where it went. On an error the active file is dropped: what it failed
    /// to write is never referenced, and the next append starts a new file.
    pub(super) fn write(
        &self,
        db: &sled::Db,
        active: &mut Option<Active>,
        batch: &[u8],
        undo: (u64, Option<silt_core::partition::ProducerEntry>),
    ) -> Result<Locator, StorageError> {
        let written = self.write_active(db, active, batch, undo);
        if written.is_err() {
            *active = None;
        }
        written
    }

    fn write_active(
        &self,
        db: &sled::Db,
        active: &mut Option<Active>,
        batch: &[u8],
        (producer_id, previous): (u64, Option<silt_core::partition::ProducerEntry>),
    ) -> Result<Locator, StorageError> {
        if active.as_ref().is_none_or(|a| self.full(a, batch)) {
            if let Some(full) = active.take() {
                // Each file is whole on disk before the next takes appends, so a batch whose
                // bytes a crash lost is always in the newest file (`sync` below).
                full.file.sync_data().map_err(io_error)?;
            }
            let id = self.next_id(db)?;
            std::fs::create_dir_all(&self.dir).map_err(io_error)?;
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(self.dir.join(file_name(id)))
                .map_err(io_error)?;
            *active = Some(Active { id, file, len: 0, opened: std::time::Instant::now() });
        }
        let a = active.as_mut().expect("made above");
        crate::failpoint::check("storage.batch_file_write")?;
        a.file.write_all(batch).map_err(io_error)?;
        let locator = Locator { file: a.id, position: a.len, len: batch.len() as u32, producer_id, previous };
        a.len += batch.len() as u64;
        Ok(locator)
    }

    /// Makes what was written to the active file durable: before a pipeline's output commits
    /// with its checkpoint, which no recovery may undo (`Partition::drop_torn_tail`).
    pub(super) fn sync(&self, active: &mut Option<Active>) -> Result<(), StorageError> {
        let synced = active.as_ref().map_or(Ok(()), |a| a.file.sync_data().map_err(io_error));
        if synced.is_err() {
            *active = None;
        }
        synced
    }

    /// Reads the batch `locator` points at (its length capped at `BATCH_BYTES_MAX`).
    pub(super) fn read(&self, locator: Locator) -> Result<Vec<u8>, String> {
        if locator.len as usize > BATCH_BYTES_MAX {
            return Err(format!("its locator gives a length of {} bytes", locator.len));
        }
        let file = self
            .reader(locator.file)
            .map_err(|e| format!("its file {} cannot be opened: {e}", file_name(locator.file)))?;
        let mut bytes = vec![0; locator.len as usize];
        file.read_exact_at(&mut bytes, locator.position).map_err(|e| {
            format!(
                "reading {} bytes at {} of its file {} failed: {e}",
                locator.len,
                locator.position,
                file_name(locator.file)
            )
        })?;
        Ok(bytes)
    }

    fn reader(&self, id: u64) -> std::io::Result<Arc<File>> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = readers.get(&id) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(self.dir.join(file_name(id)))?);
        if readers.len() >= READ_FILES_OPEN_MAX {
            readers.pop_first();
        }
        readers.insert(id, Arc::clone(&file));
        Ok(file)
    }

    /// The files older than `first_kept` (the file of the first batch the log holds; every
    /// file when `None`), except `active`.
    fn older(
        &self,
        first_kept: Option<u64>,
        active: Option<&Active>,
    ) -> Result<Vec<(u64, PathBuf)>, StorageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(e)),
        };
        let mut older = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error)?;
            let Some(id) = entry.file_name().to_str().and_then(parse_file_name) else { continue };
            if first_kept.is_none_or(|kept| id < kept) && active.is_none_or(|a| a.id != id) {
                older.push((id, entry.path()));
            }
        }
        Ok(older)
    }
}

pub(super) fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Sled(sled::Error::Io(e))
}

impl Partition {
    /// The whole batch stored under `key`: the bytes its locator points at, or the value itself
    /// when it is a batch stored inline (layout 2). Whether the result is a sound batch is for
    /// [`Partition::checked`] to say; a locator that fails its checksum or a file that cannot
    /// be read is a `Corrupt` batch at `key`.
    pub(super) fn whole(&self, key: &[u8], value: IVec) -> Result<IVec, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: decode_offset_key(key).unwrap_or(0),
            reason,
        };
        match Locator::decode(&value) {
            None => Ok(value),
            Some(Err(why)) => Err(corrupt(why.to_string())),
            Some(Ok(locator)) => Ok(IVec::from(self.files.read(locator).map_err(corrupt)?)),
        }
    }

    /// Removes the batch files that hold no batch of the log any more, once retention or repair
    /// removed batches: after making that removal durable (sled's flush, then `syncfs`), so a
    /// crash never leaves a batch whose file is gone. Returns how many went.
    pub(super) fn remove_unneeded_files(&self, writer: &Writer) -> Result<usize, StorageError> {
        let older = self.files.older(self.first_file()?, writer.active.as_ref())?;
        if older.is_empty() {
            return Ok(0);
        }
        let dir = File::open(&self.files.dir).map_err(io_error)?;
        crate::flush_durably(&self.db, &dir)?;
        for (id, path) in &older {
            self.files.readers.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            std::fs::remove_file(path).map_err(io_error)?;
        }
        Ok(older.len())
    }

    /// The file of the first batch the log holds: `Some(0)` when that batch is stored inline
    /// (layout 2, older than every file) or its locator is damaged, `None` when the log is
    /// empty.
    fn first_file(&self) -> Result<Option<u64>, StorageError> {
        let Some(first) = self.batches.iter().values().next().transpose()? else { return Ok(None) };
        Ok(match Locator::decode(&first) {
            Some(Ok(locator)) => Some(locator.file),
            None | Some(Err(_)) => Some(0),
        })
    }
}

impl Partition {
    /// Drops the batches at the end of the log whose bytes are not whole in their file: the
    /// batch file and sled's log reach the disk on their own, so a crash can leave a batch's
    /// locator without its bytes (never for a batch flushed before the crash, which the
    /// store's flush made durable with its file). Each dropped batch's producer goes back to
    /// its entry before it, so a producer sending it again is not told it is a duplicate.
    /// Stops at the first sound batch, or at one without a sound locator (damage that the
    /// checks report instead). Whatever of this was acknowledged, the acknowledgement ledger
    /// reports as lost (`Store::verify`).
    pub(super) fn drop_torn_tail(&self) -> Result<(), StorageError> {
        let mut tail: Vec<(IVec, Locator)> = Vec::new();
        for item in self.batches.iter().rev() {
            let (key, value) = item?;
            let Some(Ok(locator)) = Locator::decode(&value) else { break };
            let sound = self.whole(&key, value).and_then(|whole| self.checked(&key, &whole).map(|_| ()));
            if sound.is_ok() || decode_offset_key(&key).is_none() {
                break;
            }
            tail.push((key, locator));
        }
        let Some((first_key, _)) = tail.last() else { return Ok(()) };
        let from = decode_offset_key(first_key).expect("checked above");
        let Some(stats) = self.stats.get(STATS_KEY)?.as_deref().and_then(Stats::decode) else {
            return Ok(());
        };
        let dropped_bytes: u64 = tail.iter().map(|(_, l)| u64::from(l.len)).sum();
        let stats = Stats {
            size_bytes: stats.size_bytes.saturating_sub(dropped_bytes),
            batch_count: stats.batch_count.saturating_sub(tail.len() as u64),
        };
        // Oldest first: a producer's entry before its first dropped batch is the one to keep.
        let mut restore: Vec<(u64, Option<silt_core::partition::ProducerEntry>)> = Vec::new();
        for (_, locator) in tail.iter().rev() {
            let seen = restore.iter().any(|(id, _)| *id == locator.producer_id);
            if locator.producer_id != silt_core::partition::ANONYMOUS_PRODUCER && !seen {
                restore.push((locator.producer_id, locator.previous));
            }
        }
        let mut stale_times = Vec::new();
        for item in self.times.iter().rev() {
            let (time, base) = item?;
            if decode_offset_key(&base).is_none_or(|b| b < from) {
                break;
            }
            stale_times.push(time);
        }
        (&self.batches, &self.times, &self.producers, &self.stats)
            .transaction(|(batches, times, producers, stats_tree)| {
                for (key, _) in &tail {
                    batches.remove(key)?;
                }
                for time in &stale_times {
                    times.remove(time)?;
                }
                for (id, previous) in &restore {
                    match previous {
                        Some(e) => {
                            let entry =
                                ProducerEntry { last_sequence: e.last_sequence, base_offset: e.base_offset };
                            producers.insert(&id.to_be_bytes()[..], &entry.encode()[..])?;
                        }
                        None => {
                            producers.remove(&id.to_be_bytes()[..])?;
                        }
                    }
                }
                stats_tree.insert(STATS_KEY, &stats.encode()[..])?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(sled_error)?;
        tracing::warn!(topic = %self.topic, partition = self.partition, from, batches = tail.len(),
            "dropped batches at the end of the log whose bytes a crash left unwritten in their file; \
             any of them acknowledged is reported as lost");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use silt_core::partition::ProducerEntry;

    use super::*;

    proptest! {
        /// Locators round-trip, and any other value of their length decodes or is refused.
        #[test]
        fn locators_round_trip(file: u64, position: u64, len: u32, producer_id: u64, previous: Option<(u64, u64)>) {
            let previous = previous.map(|(last_sequence, base_offset)| ProducerEntry { last_sequence, base_offset });
            let locator = Locator { file, position, len, producer_id, previous };
            prop_assert_eq!(Locator::decode(&locator.encode()), Some(Ok(locator)));
        }

        #[test]
        fn decoding_any_value_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Locator::decode(&bytes);
        }
    }

    #[test]
    fn every_flipped_bit_of_a_locator_is_caught() {
        let locator = Locator { file: 9, position: 1 << 40, len: 70_000, producer_id: 3, previous: None };
        let good = locator.encode();
        for bit in 0..good.len() * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(Locator::decode(&bad), Some(Err(_))), "bit {bit}");
        }
    }
}
