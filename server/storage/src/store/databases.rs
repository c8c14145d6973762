//! Opening the store's sled databases: the lock wait, page cache shares and the layout
//! version.

use std::path::Path;
use std::time::{Duration, Instant};

use super::panic_message;
use super::TOPIC_CACHE_BYTES_MIN;
use crate::layout::{StoredTopic, FORMAT_KEY, FORMAT_VERSION, TOPICS_TREE};
use crate::StorageError;

/// Layout 2: a database per topic, every batch stored in its batches tree.
const FORMAT_WHOLE_BATCHES: u32 = 2;

/// How long `Store::open` waits for sled's file lock. sled releases the lock from its I/O
/// threads some milliseconds after the last handle of a database is dropped (sled issues
/// #1234, #1289), so a store closed and reopened in one process (tests, an embedded broker
/// restarting) would otherwise fail at random; two seconds is far above the delays seen here
/// and short enough to report a second process holding the store promptly.
const OPEN_LOCK_WAIT_MS_MAX: u64 = 2_000;
/// Pause between attempts to take the lock.
const OPEN_LOCK_RETRY_MS: u64 = 5;

/// Each topic's share of `cache_bytes` among `topics` topics, and at least
/// [`TOPIC_CACHE_BYTES_MIN`]: a share is fixed when the database opens (sled cannot resize its
/// cache), so a store that gains topics may hold somewhat more than `cache_bytes`.
pub(super) fn topic_cache_bytes(cache_bytes: u64, topics: usize) -> u64 {
    (cache_bytes / topics.max(1) as u64).max(TOPIC_CACHE_BYTES_MIN)
}

/// Opens (creating when absent) one of the store's sled databases.
pub(super) fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StorageError> {
    // HighThroughput cleans segments less eagerly than the default LowSpace. Measured with
    // `silt-loadtest produce` (5M events of 100 B, LZ4, 1000-event batches, window 8), three
    // alternating pairs: 1.51M/1.41M/1.48M events/s against 1.46M/1.25M/1.36M, with 5-15%
    // less broker CPU and the same size on disk. A log reclaims space by retention anyway.
    let sled_config =
        sled::Config::new().path(dir).cache_capacity(cache_bytes).mode(sled::Mode::HighThroughput);
    let deadline = Instant::now() + Duration::from_millis(OPEN_LOCK_WAIT_MS_MAX);
    loop {
        match sled_config.open() {
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(StorageError::Locked { dir: dir.to_owned() });
                }
                std::thread::sleep(Duration::from_millis(OPEN_LOCK_RETRY_MS));
            }
            result => return Ok(result?),
        }
    }
}

/// Writes the layout version into a new store, and refuses a store of a version this build
/// cannot read; returns the version found (this build's for a new store).
pub(super) fn check_format(db: &sled::Db) -> Result<u32, StorageError> {
    let want = FORMAT_VERSION.to_le_bytes();
    match db.get(FORMAT_KEY)? {
        Some(found) if found[..] == want[..] => Ok(FORMAT_VERSION),
        Some(found) if found[..] == FORMAT_WHOLE_BATCHES.to_le_bytes()[..] => {
            // Layout 2 is layout 3 without batch files: its batches read as they are. The
            // version moves up first, so no build that would misread a locator opens it again.
            db.insert(FORMAT_KEY, &want)?;
            db.flush()?;
            Ok(FORMAT_VERSION)
        }
        Some(found) if found[..] == super::migrate::FORMAT_SHARED.to_le_bytes()[..] => {
            Ok(super::migrate::FORMAT_SHARED)
        }
        Some(found) => Err(StorageError::UnsupportedFormat {
            found: format!("{:?}", &found[..]),
            supported: FORMAT_VERSION,
        }),
        None if db.tree_names().len() > 1 => {
            // sled always has its default tree; any other tree means this directory holds a
            // database someone else wrote.
            Err(StorageError::UnsupportedFormat {
                found: "none (not a silt store)".into(),
                supported: FORMAT_VERSION,
            })
        }
        None => {
            // Durable before any tree of the store exists, so no crash leaves trees without it.
            db.insert(FORMAT_KEY, &want)?;
            db.flush()?;
            Ok(FORMAT_VERSION)
        }
    }
}

/// Opens the metadata database in `dir` and reads its topics; a panic in sled is an error.
pub(super) fn open_metadata(
    dir: &Path,
    cache_bytes: u64,
) -> Result<(sled::Db, u32, Vec<StoredTopic>), StorageError> {
    match std::panic::catch_unwind(|| open_db(dir, cache_bytes)) {
        Ok(db) => read_metadata(db?),
        Err(panic) => Err(StorageError::CorruptMeta {
            what: "the metadata database".into(),
            reason: format!("sled panicked opening it: {}", panic_message(&*panic)),
        }),
    }
}

/// The layout version and the topics of a metadata database.
pub(super) fn read_metadata(db: sled::Db) -> Result<(sled::Db, u32, Vec<StoredTopic>), StorageError> {
    let format = check_format(&db)?;
    let mut stored_topics = Vec::new();
    for item in db.open_tree(TOPICS_TREE)?.iter() {
        let (key, value) = item?;
        let name = String::from_utf8_lossy(&key).into_owned();
        let corrupt = |reason: String| StorageError::CorruptMeta {
            what: format!("metadata of topic {name:?}"),
            reason,
        };
        let stored = StoredTopic::decode(&value).map_err(corrupt)?;
        if stored.name.as_bytes() != &key[..] {
            return Err(corrupt(format!("it names topic {:?}", stored.name)));
        }
        stored_topics.push(stored);
    }
    Ok((db, format, stored_topics))
}
