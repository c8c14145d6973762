//! The store: a sled database of metadata (topics, group offsets, processors, devices,
//! principals) and one sled database per topic holding its partitions.
//!
//! Each topic's database is a failure boundary: sled panics or fails on some damage to its
//! files when it opens them, and a database that does not open stops its topic alone
//! (`StorageError::Unopenable` on each of its partitions) while the broker and every other
//! topic serve. docs/reliability.md has the choice and what it costs.

mod backup;
mod databases;
mod migrate;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sled::transaction::{TransactionError, Transactional};

use crate::layout::{
    check_group_name, decode_group_offset_key, decode_topic_group_key, decode_u64_le, group_offset_key,
    group_prefix, topic_group_prefix, StoredTopic, ARTEFACTS_TREE, BRIDGE_PROCESSORS_TREE, CHECKPOINTS_TREE,
    DEVICES_TREE, DEVICE_MODULES_TREE, GROUP_OFFSETS_TREE, LEDGER_KEY, MODULES_TREE,
    PARTITIONS_PER_TOPIC_MAX, PROCESSORS_TREE, TOPICS_TREE,
};
use crate::ledger::PartitionKey;
use crate::{Partition, StorageError, StoreConfig, TopicMeta};
pub use backup::{decode_metadata_copy, MetadataCopy, MetadataRestore};
use databases::{open_db, open_metadata, read_metadata, topic_cache_bytes};

/// A range of acknowledged records a partition can no longer serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub topic: String,
    pub partition: u32,
    /// First offset lost.
    pub from: u64,
    /// Offset after the last one lost: the end the ledger recorded.
    pub to: u64,
    pub reason: String,
}

/// The directory under the store's that holds one sled database per topic, named
/// [`topic_dir_name`].
const TOPICS_DIR: &str = "topics";
/// Where [`Store::repair`] moves a topic's database that does not open, under the store's
/// directory.
const DAMAGED_DIR: &str = "damaged";
/// Where [`Store::open`] moves a topic's database that no topic names, under the store's
/// directory.
const ORPHANS_DIR: &str = "orphaned";
/// sled's page cache for the metadata database: topic and processor definitions, modules,
/// artefacts, offsets and principals; the partitions' batches are in the topics' databases.
const META_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Least page cache a topic's database gets, however many topics share `cache_bytes`.
const TOPIC_CACHE_BYTES_MIN: u64 = 16 * 1024 * 1024;

/// The log store: topics, partitions, group offsets.
pub struct Store {
    /// The metadata database (the store's directory itself).
    pub(crate) db: sled::Db,
    /// The store's directory.
    root: PathBuf,
    /// sled's page cache, shared out among the topics' databases ([`Store::topic_cache_bytes`]).
    cache_bytes: u64,
    topics_tree: sled::Tree,
    group_offsets: sled::Tree,
    pub(crate) processors: sled::Tree,
    pub(crate) modules: sled::Tree,
    pub(crate) artefacts: sled::Tree,
    pub(crate) devices: sled::Tree,
    pub(crate) device_modules: sled::Tree,
    pub(crate) bridge_processors: sled::Tree,
    /// Every topic with its open partitions, so `partition()` is a map lookup and an `Arc`
    /// clone. Written only by `create_topic` and `delete_topic`; `commit_offset` holds it for
    /// reading so that no offset is committed for a topic while it is being deleted.
    topics: RwLock<BTreeMap<String, Topic>>,
    /// The database directory, kept open for `syncfs` (see [`Store::flush`]).
    pub(crate) dir: std::fs::File,
    /// The metadata changed since its last copy (`store::backup`); the next flush copies it.
    pub(crate) meta_changed: AtomicBool,
    /// A group offset was committed, or a producer id claimed, since the last copy of them.
    pub(crate) offsets_changed: AtomicBool,
    /// When the offsets were last copied (Unix ms).
    offsets_copied_ms: AtomicU64,
    /// Held while a copy is written.
    copying: Mutex<()>,
    /// The last copy failed (so far logged once).
    copy_failing: AtomicBool,
    /// What opening did when the metadata database did not open.
    restored: Option<MetadataRestore>,
}

/// Least time between two copies of the group offsets.
const OFFSETS_COPY_MS: u64 = 1_000;

struct Topic {
    meta: TopicMeta,
    incarnation: u64,
    /// The topic's own database; `None` when it did not open, and then every partition is
    /// `Slot::Broken` with `StorageError::Unopenable`.
    db: Option<sled::Db>,
    partitions: Vec<Slot>,
}

/// A partition as found at open.
enum Slot {
    Open(Arc<Partition>),
    /// Its stored state did not pass the checks of recovery: a corrupt last batch, stats entry
    /// or index. Only this partition stops; `partition()` returns the error every time, and
    /// the rest of the store works.
    Broken(StorageError),
}

impl Slot {
    /// A copy of the error of a broken partition.
    fn error(&self) -> Option<StorageError> {
        match self {
            Slot::Broken(e) => e.copy_corruption(),
            Slot::Open(_) => None,
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    ///
    /// Opens the metadata database, then each topic's database and every partition in it
    /// (four sled trees each, reading the first and last batch and the stats entry), moves aside
    /// the databases no topic names ([`ORPHANS_DIR`]), and moves a store of layout 1
    /// (every partition in the one database) to this layout first.
    ///
    /// A metadata database that sled fails or panics on, or whose topics do not decode, is
    /// restored from its copies (`store::backup`; [`Store::metadata_restored`] says so);
    /// without a sound copy, opening fails.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StorageError> {
        let meta_cache = META_CACHE_BYTES.min(config.cache_bytes);
        let (db, format, stored_topics, restored) = match open_metadata(dir, meta_cache) {
            Ok((db, format, topics)) => match backup::lost_topics(dir, &topics) {
                None => (db, format, topics, None),
                Some(why) => {
                    drop(db);
                    let (db, restored) = backup::restore(dir, meta_cache, &why)?;
                    let (db, format, topics) = read_metadata(db)?;
                    (db, format, topics, Some(restored))
                }
            },
            Err(e)
                if e.is_io()
                    || matches!(e, StorageError::Locked { .. } | StorageError::UnsupportedFormat { .. }) =>
            {
                return Err(e)
            }
            Err(e) => {
                let (db, restored) = backup::restore(dir, meta_cache, &e.to_string())?;
                let (db, format, topics) = read_metadata(db)?;
                (db, format, topics, Some(restored))
            }
        };
        let topics_tree = db.open_tree(TOPICS_TREE)?;
        if format == migrate::FORMAT_SHARED {
            migrate::split_topics(&db, dir, &stored_topics)?;
        }
        migrate::drop_shared_trees(&db)?;
        let cache_bytes = config.cache_bytes;
        let topic_cache = topic_cache_bytes(cache_bytes, stored_topics.len());
        let mut topics = BTreeMap::new();
        for stored in stored_topics {
            let topic = Topic::open(dir, topic_cache, stored)?;
            topics.insert(topic.meta.name.clone(), topic);
        }
        move_orphan_dirs(dir, &topics)?;
        let file = std::fs::File::open(dir).map_err(sled::Error::Io)?;
        Ok(Store {
            topics_tree,
            group_offsets: db.open_tree(GROUP_OFFSETS_TREE)?,
            processors: db.open_tree(PROCESSORS_TREE)?,
            modules: db.open_tree(MODULES_TREE)?,
            artefacts: db.open_tree(ARTEFACTS_TREE)?,
            devices: db.open_tree(DEVICES_TREE)?,
            device_modules: db.open_tree(DEVICE_MODULES_TREE)?,
            bridge_processors: db.open_tree(BRIDGE_PROCESSORS_TREE)?,
            db,
            root: dir.to_owned(),
            cache_bytes,
            topics: RwLock::new(topics),
            dir: file,
            meta_changed: AtomicBool::new(true),
            offsets_changed: AtomicBool::new(true),
            offsets_copied_ms: AtomicU64::new(0),
            copying: Mutex::new(()),
            copy_failing: AtomicBool::new(false),
            restored,
        })
        .and_then(|store| {
            store.copy_metadata()?;
            Ok(store)
        })
    }

    /// Creates a topic with its partitions. Errors with `TopicExists` if it exists.
    ///
    /// Durable when it returns (it flushes): topics are created rarely, and a producer told
    /// that its topic exists should not find it gone after a crash.
    pub fn create_topic(&self, meta: TopicMeta) -> Result<(), StorageError> {
        check_topic(&meta.name, meta.partitions)?;
        let mut topics = self.write_topics();
        if topics.contains_key(&meta.name) {
            return Err(StorageError::TopicExists(meta.name));
        }
        // A fresh incarnation gives the topic fresh trees even if a topic of the same name
        // existed before and dropping its trees did not finish.
        let stored = StoredTopic {
            name: meta.name.clone(),
            partitions: meta.partitions,
            retention_ms: meta.retention_ms,
            retention_bytes: meta.retention_bytes,
            created_ms: meta.created_ms,
            incarnation: self.db.generate_id()?,
        };
        // Its database first: if the metadata write fails, the database is an orphan that the
        // next open moves aside.
        let topic =
            Topic::open(&self.root, topic_cache_bytes(self.cache_bytes, topics.len() + 1), stored.clone())?;
        flush_durably(topic.db()?, &self.dir)?;
        self.topics_tree.insert(meta.name.as_bytes(), stored.encode())?;
        self.meta_changed.store(true, Ordering::Release);
        flush_durably(&self.db, &self.dir)?;
        topics.insert(meta.name, topic);
        self.copy_metadata_or_warn();
        Ok(())
    }

    /// Deletes a topic, its partitions, indexes, producer state and group offsets.
    ///
    /// Durable when it returns. Partition handles still held elsewhere fail every later call
    /// with `UnknownTopic`. A topic created later under the same name starts empty at offset 0.
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        let mut topics = self.write_topics();
        let topic = topics.get(name).ok_or_else(|| StorageError::UnknownTopic(name.to_owned()))?;
        // Waits for running appends and retention; nothing writes to the trees after this.
        topic.set_deleted(true);
        if let Err(e) = self.remove_topic_records(name) {
            topic.set_deleted(false);
            return Err(e);
        }
        let topic = topics.remove(name).expect("looked up above under the same lock");
        // The topic is gone once its metadata is; removing its database only frees space
        // (handles still held keep the open files until they go), and a crash or failure here
        // leaves an orphan that the next open moves aside.
        let dir = self.root.join(TOPICS_DIR).join(topic_dir_name(name, topic.incarnation));
        drop(topic);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(topic = name, dir = %dir.display(), error = %e,
                "could not remove a deleted topic's database; the next open retries");
        }
        Ok(())
    }

    /// Removes the metadata and group offsets of a topic in one transaction, then flushes, so
    /// that the topic is durably gone before its trees are dropped.
    fn remove_topic_records(&self, name: &str) -> Result<(), StorageError> {
        // `commit_offset` is held off by the topics lock, so this list is complete.
        let group_keys =
            self.group_offsets.scan_prefix(topic_group_prefix(name)).keys().collect::<Result<Vec<_>, _>>()?;
        (&self.topics_tree, &self.group_offsets)
            .transaction(|(topics, groups)| {
                topics.remove(name.as_bytes())?;
                for key in &group_keys {
                    groups.remove(key)?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StorageError::Sled(e),
                TransactionError::Abort(never) => match never {},
            })?;
        self.meta_changed.store(true, Ordering::Release);
        flush_durably(&self.db, &self.dir)?;
        self.copy_metadata_or_warn();
        Ok(())
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicMeta> {
        self.read_topics().values().map(|t| t.meta.clone()).collect()
    }

    /// One topic's metadata.
    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.read_topics().get(name).map(|t| t.meta.clone())
    }

    /// Whether an acknowledgement ledger was kept beside this store before.
    pub fn ledger_kept(&self) -> Result<bool, StorageError> {
        Ok(self.db.get(LEDGER_KEY)?.is_some())
    }

    /// Records, durably, that an acknowledgement ledger is kept beside this store.
    pub fn keep_ledger(&self) -> Result<(), StorageError> {
        self.db.insert(LEDGER_KEY, &b"1"[..])?;
        self.meta_changed.store(true, Ordering::Release);
        self.flush()?;
        Ok(())
    }

    /// The incarnation of a topic: fixed at its creation, new when it is created again.
    pub fn incarnation(&self, name: &str) -> Option<u64> {
        self.read_topics().get(name).map(|t| t.incarnation)
    }

    /// Checks the recovered logs against the ends the acknowledgement ledger recorded
    /// (`crate::ledger`): every range of acknowledged records a partition can no longer
    /// serve, in key order. A topic whose incarnation differs from the ledger's was deleted
    /// and created again (its ends no longer apply).
    pub fn verify(&self, ends: &BTreeMap<PartitionKey, u64>) -> Vec<Loss> {
        let topics = self.read_topics();
        let mut losses = Vec::new();
        for (key, &end) in ends {
            let loss = |from: u64, reason: String| Loss {
                topic: key.topic.clone(),
                partition: key.partition,
                from,
                to: end,
                reason,
            };
            match topics.get(&key.topic) {
                None => losses.push(loss(0, "the topic's metadata is gone from the store".into())),
                Some(t) if t.incarnation != key.incarnation => {}
                Some(t) => match t.partitions.get(key.partition as usize) {
                    None => losses.push(loss(0, "the partition is gone from the store".into())),
                    Some(Slot::Broken(e)) => {
                        losses.push(loss(0, format!("the partition cannot be opened: {e}")))
                    }
                    Some(Slot::Open(p)) if p.high_watermark() < end => {
                        let hw = p.high_watermark();
                        losses.push(loss(hw, format!("its log ends at offset {hw}")));
                    }
                    Some(Slot::Open(_)) => {}
                },
            }
        }
        losses
    }

    /// Finds the offsets below `acked_end(partition)` a partition cannot serve and, with
    /// `accept`, accepts their loss ([`Partition::repair`]); a partition that could not be
    /// opened is opened again afterwards. Flushes what it changed before it returns. Returns
    /// the repair of each partition it changed, `partition` first: only that one, unless the
    /// topic's database did not open; accepting then moves that database aside (under
    /// `damaged/` in the store's directory, for the operator to inspect or delete), starts an
    /// empty one, and accepts the loss of every partition of the topic up to its
    /// `acked_end`.
    pub fn repair(
        &self,
        topic: &str,
        partition: u32,
        acked_end: &dyn Fn(u32) -> u64,
        accept: bool,
    ) -> Result<Vec<(u32, crate::Repair)>, StorageError> {
        let unknown = || StorageError::UnknownPartition { topic: topic.to_owned(), partition };
        let (log, db, incarnation) = {
            let topics = self.read_topics();
            let t = topics.get(topic).ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
            let log = match t.partitions.get(partition as usize).ok_or_else(unknown)? {
                Slot::Open(p) => Some(Arc::clone(p)),
                Slot::Broken(_) => None,
            };
            (log, t.db.clone(), t.incarnation)
        };
        let end = acked_end(partition);
        let repair = match (log, db) {
            (Some(p), _) => p.repair(end, accept)?,
            (None, Some(db)) => {
                let dir = self.root.join(TOPICS_DIR).join(topic_dir_name(topic, incarnation));
                let p = Partition::unrecovered(&db, &dir, topic, incarnation, partition)?;
                let repair = p.repair(end, accept)?;
                if repair.accepted {
                    self.replace_slot(topic, incarnation, partition, Slot::Open(Arc::new(p)))?;
                }
                repair
            }
            (None, None) if !accept => {
                let reason = match self.partition(topic, partition) {
                    Err(e) => e.to_string(),
                    Ok(_) => "it opened meanwhile".into(),
                };
                let damaged =
                    if end > 0 { vec![crate::Damage { from: 0, to: end, reason }] } else { Vec::new() };
                crate::Repair { damaged, ..crate::Repair::default() }
            }
            (None, None) => return self.replace_topic_db(topic, incarnation, partition, acked_end),
        };
        if repair.accepted {
            self.flush()?;
        }
        Ok(vec![(partition, repair)])
    }

    /// Accepts the loss of everything in a topic whose database does not open: see
    /// [`Store::repair`].
    fn replace_topic_db(
        &self,
        topic: &str,
        incarnation: u64,
        first: u32,
        acked_end: &dyn Fn(u32) -> u64,
    ) -> Result<Vec<(u32, crate::Repair)>, StorageError> {
        let mut topics = self.write_topics();
        let cache_bytes = topic_cache_bytes(self.cache_bytes, topics.len());
        let t = topics
            .get_mut(topic)
            .filter(|t| t.incarnation == incarnation && t.db.is_none())
            .ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
        let from = self.root.join(TOPICS_DIR).join(topic_dir_name(topic, incarnation));
        let aside = move_aside(&from, &self.root.join(DAMAGED_DIR))?;
        tracing::warn!(topic, from = %from.display(), to = %aside.display(),
            "the database of the topic, which does not open, is moved aside; the topic starts an empty one");
        let stored = StoredTopic {
            name: topic.to_owned(),
            partitions: t.meta.partitions,
            retention_ms: t.meta.retention_ms,
            retention_bytes: t.meta.retention_bytes,
            created_ms: t.meta.created_ms,
            incarnation,
        };
        let fresh = Topic::open(&self.root, cache_bytes, stored)?;
        let db = fresh.db()?.clone();
        let mut repairs = Vec::new();
        let mut partitions = Vec::new();
        for p in 0..t.meta.partitions {
            let log = Partition::unrecovered(&db, &from, topic, incarnation, p)?;
            let repair = log.repair(acked_end(p), true)?;
            if !repair.damaged.is_empty() || p == first {
                repairs.push((p, repair));
            }
            partitions.push(Slot::Open(Arc::new(log)));
        }
        repairs.sort_by_key(|(p, _)| *p != first);
        t.db = Some(db);
        t.partitions = partitions;
        drop(topics);
        self.flush()?;
        Ok(repairs)
    }

    /// Puts `slot` in place of a partition of the topic's incarnation `incarnation`.
    fn replace_slot(
        &self,
        topic: &str,
        incarnation: u64,
        partition: u32,
        slot: Slot,
    ) -> Result<(), StorageError> {
        let mut topics = self.write_topics();
        let t = topics.get_mut(topic).filter(|t| t.incarnation == incarnation);
        let old = t
            .and_then(|t| t.partitions.get_mut(partition as usize))
            .ok_or_else(|| StorageError::UnknownPartition { topic: topic.to_owned(), partition })?;
        *old = slot;
        Ok(())
    }

    /// The checkpoint tree in the database of topic `topic`.
    pub(crate) fn checkpoint_tree(&self, topic: &str) -> Result<sled::Tree, StorageError> {
        let topics = self.read_topics();
        let t = topics.get(topic).ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
        Ok(t.db()?.open_tree(CHECKPOINTS_TREE)?)
    }

    /// A partition handle; `UnknownTopic` / `UnknownPartition` if absent.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, StorageError> {
        let topics = self.read_topics();
        let t = topics.get(topic).ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
        match t.partitions.get(partition as usize) {
            Some(Slot::Open(p)) => Ok(Arc::clone(p)),
            Some(Slot::Broken(e)) => Err(e.copy_corruption().expect("only corruption breaks a partition")),
            None => Err(StorageError::UnknownPartition { topic: topic.to_owned(), partition }),
        }
    }

    /// Makes everything written so far durable (sled flush + fsync); returns bytes flushed.
    ///
    /// sled 0.34's flush is not enough on its own: it writes its log with `sync_file_range`,
    /// which neither commits file metadata nor flushes the device's write cache, and it never
    /// syncs the blob files it writes for nodes larger than a quarter of a segment (100 KB
    /// batches make such a node on every split). One `syncfs` of the store's filesystem after
    /// sled's flush makes the log and the blobs durable; measured with strace during a
    /// 1000-event-batch ingest it took 0.4 ms (median) per flush. A killed process loses
    /// nothing either way: its writes are in the page cache.
    ///
    /// Flushes every topic's database, then the metadata, then syncs the filesystem once.
    pub fn flush(&self) -> Result<usize, StorageError> {
        crate::failpoint::check("flush")?;
        let dbs: Vec<sled::Db> = self.read_topics().values().filter_map(|t| t.db.clone()).collect();
        let mut flushed = 0;
        for db in &dbs {
            flushed += db.flush()?;
        }
        let result = flush_durably(&self.db, &self.dir).map(|meta| flushed + meta);
        crate::release_deferred();
        let flushed = result?;
        self.copy_metadata_or_warn();
        Ok(flushed)
    }

    /// Stores a consumer group's committed offset.
    ///
    /// Not flushed: it becomes durable with the next [`Store::flush`] (the broker acknowledges
    /// a commit only after it). `UnknownTopic` /
    /// `UnknownPartition` when the partition does not exist; `InvalidName` for an empty group
    /// name or one longer than 255 bytes.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), StorageError> {
        check_group(group)?;
        let topics = self.read_topics();
        let t = topics.get(topic).ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
        if partition >= t.meta.partitions {
            return Err(StorageError::UnknownPartition { topic: topic.to_owned(), partition });
        }
        self.group_offsets.insert(group_offset_key(group, topic, partition), &offset.to_le_bytes())?;
        self.offsets_changed.store(true, Ordering::Release);
        Ok(())
    }

    /// A group's committed offsets for a topic, as `(partition, offset)` sorted by partition.
    ///
    /// `UnknownTopic` when the topic does not exist; empty when the group committed nothing.
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Result<Vec<(u32, u64)>, StorageError> {
        check_group(group)?;
        let topics = self.read_topics();
        if !topics.contains_key(topic) {
            return Err(StorageError::UnknownTopic(topic.to_owned()));
        }
        let prefix = group_prefix(group, topic);
        let mut offsets = Vec::new();
        for item in self.group_offsets.scan_prefix(&prefix) {
            let (key, value) = item?;
            let corrupt = |reason: &str| StorageError::CorruptMeta {
                what: format!("offsets of group {group:?} on topic {topic:?}"),
                reason: reason.to_owned(),
            };
            let partition = decode_group_offset_key(&prefix, &key).ok_or_else(|| corrupt("bad key"))?;
            let offset = decode_u64_le(&value).ok_or_else(|| corrupt("offset is not 8 bytes"))?;
            offsets.push((partition, offset));
        }
        debug_assert!(offsets.windows(2).all(|w| w[0].0 < w[1].0), "big-endian keys sort by partition");
        Ok(offsets)
    }

    /// Every consumer group's committed offsets on a topic, as `(group, partition, offset)`
    /// sorted by group, then partition. Empty for a topic nobody committed on.
    pub fn group_offsets_of_topic(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, StorageError> {
        let prefix = topic_group_prefix(topic);
        let mut out = Vec::new();
        for item in self.group_offsets.scan_prefix(&prefix) {
            let (key, value) = item?;
            let corrupt = |reason: &str| StorageError::CorruptMeta {
                what: format!("group offsets of topic {topic:?}"),
                reason: reason.to_owned(),
            };
            let (group, partition) =
                decode_topic_group_key(&prefix, &key).ok_or_else(|| corrupt("bad key"))?;
            let offset = decode_u64_le(&value).ok_or_else(|| corrupt("offset is not 8 bytes"))?;
            out.push((group, partition, offset));
        }
        Ok(out)
    }

    fn read_topics(&self) -> RwLockReadGuard<'_, BTreeMap<String, Topic>> {
        // The map is only replaced whole under the lock, so a panic elsewhere cannot leave it
        // half-updated; poisoning carries no information here.
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_topics(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Topic>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Topic {
    /// The topic's database, or the error its partitions give when it did not open.
    fn db(&self) -> Result<&sled::Db, StorageError> {
        self.db.as_ref().ok_or_else(|| {
            self.partitions
                .iter()
                .find_map(Slot::error)
                .expect("a topic without a database has broken partitions")
        })
    }

    /// Opens the topic's database under `root` (creating it when absent) and its partitions.
    /// A database that fails or panics in sled as it opens, or a partition that fails the
    /// checks of recovery, stops (`Slot::Broken`); the caller's store opens all the same. Only
    /// an I/O error is returned.
    fn open(root: &Path, cache_bytes: u64, stored: StoredTopic) -> Result<Topic, StorageError> {
        let path = root.join(TOPICS_DIR).join(topic_dir_name(&stored.name, stored.incarnation));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_db(&path, cache_bytes)));
        let failure = match opened {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) if e.is_io() => return Err(e),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("sled panicked: {}", panic_message(&*panic))),
        };
        let mut partitions = Vec::with_capacity(stored.partitions as usize);
        let db = match failure {
            Ok(db) => {
                for p in 0..stored.partitions {
                    let slot = match Partition::open(&db, &path, &stored.name, stored.incarnation, p) {
                        Ok(partition) => Slot::Open(Arc::new(partition)),
                        Err(e) if e.copy_corruption().is_some() => {
                            tracing::error!(topic = %stored.name, partition = p, error = %e,
                                "partition is corrupt and stays stopped; the rest of the store opens");
                            Slot::Broken(e)
                        }
                        Err(e) => return Err(e),
                    };
                    partitions.push(slot);
                }
                Some(db)
            }
            Err(reason) => {
                tracing::error!(topic = %stored.name, dir = %path.display(), error = %reason,
                    "the topic's database does not open: the topic stays stopped, the rest of the store opens");
                for p in 0..stored.partitions {
                    let (topic, reason) = (stored.name.clone(), reason.clone());
                    partitions.push(Slot::Broken(StorageError::Unopenable { topic, partition: p, reason }));
                }
                None
            }
        };
        let meta = TopicMeta {
            name: stored.name,
            partitions: stored.partitions,
            retention_ms: stored.retention_ms,
            retention_bytes: stored.retention_bytes,
            created_ms: stored.created_ms,
        };
        Ok(Topic { meta, incarnation: stored.incarnation, db, partitions })
    }

    fn set_deleted(&self, deleted: bool) {
        for slot in &self.partitions {
            if let Slot::Open(p) = slot {
                p.set_deleted(deleted);
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("topics", &self.read_topics().keys().collect::<Vec<_>>()).finish()
    }
}

fn check_group(group: &str) -> Result<(), StorageError> {
    check_group_name(group).map_err(|reason| StorageError::InvalidName {
        what: "group",
        name: group.to_owned(),
        reason: reason.to_string(),
    })
}

/// Flushes a sled database so that what it holds survives a power cut: sled's flush, then
/// one `syncfs` of the filesystem of `dir` (the database's directory, kept open by the caller).
/// See [`Store::flush`] for why sled's flush alone is not enough. Other sled users of the
/// project (the device bridge's journal) flush through this too.
/// Whether a topic named `name` with `partitions` partitions may be made: its name and
/// partition count (not whether it exists).
pub fn check_topic(name: &str, partitions: u32) -> Result<(), StorageError> {
    silt_wire::message::check_topic_name(name).map_err(|reason| StorageError::InvalidName {
        what: "topic",
        name: name.to_string(),
        reason,
    })?;
    if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(StorageError::InvalidPartitionCount {
            topic: name.to_string(),
            partitions,
            max: PARTITIONS_PER_TOPIC_MAX,
        });
    }
    Ok(())
}

pub fn flush_durably(db: &sled::Db, dir: &std::fs::File) -> Result<usize, StorageError> {
    let bytes = db.flush()?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which the caller keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(StorageError::Sled(sled::Error::Io(std::io::Error::last_os_error())));
    }
    Ok(bytes)
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// The directory of a topic's database under [`TOPICS_DIR`]: `{topic}.{incarnation:016x}`
/// (topic names are `[A-Za-z0-9._-]`, at most 200 bytes, so the last `.` ends the name).
pub(crate) fn topic_dir_name(topic: &str, incarnation: u64) -> String {
    format!("{topic}.{incarnation:016x}")
}

/// The inverse of [`topic_dir_name`].
fn parse_topic_dir_name(name: &str) -> Option<(&str, u64)> {
    let (topic, incarnation) = name.rsplit_once('.')?;
    if incarnation.len() != 16 {
        return None;
    }
    Some((topic, u64::from_str_radix(incarnation, 16).ok()?))
}

/// Moves the databases under [`TOPICS_DIR`] that belong to no live topic to [`ORPHANS_DIR`]:
/// left by a crash in `delete_topic` after the metadata was removed, or in `create_topic`
/// before it was written, but also what a damaged metadata database no longer names, so
/// they are kept (and logged) for an operator to delete or recover, never removed here.
fn move_orphan_dirs(root: &Path, topics: &BTreeMap<String, Topic>) -> Result<(), StorageError> {
    let dir = root.join(TOPICS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(sled::Error::Io(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(sled::Error::Io)?;
        let name = entry.file_name();
        let live = name.to_str().and_then(parse_topic_dir_name).is_some_and(|(topic, incarnation)| {
            topics.get(topic).is_some_and(|t| t.incarnation == incarnation)
        });
        if !live {
            let to = move_aside(&entry.path(), &root.join(ORPHANS_DIR))?;
            tracing::warn!(from = %entry.path().display(), to = %to.display(),
                "a topic database that no topic names is moved aside: a deletion or creation a crash interrupted, or damaged metadata; delete it once it is not needed");
        }
    }
    Ok(())
}

/// Moves the directory `from` into `under` (made when absent) as `{its name}.{unix ms}`, so a
/// later one of the same name never meets it; returns where it went.
fn move_aside(from: &Path, under: &Path) -> Result<PathBuf, StorageError> {
    let mut name = from.file_name().expect("a topic database's directory has a name").to_owned();
    name.push(format!(".{}", silt_wire::time::unix_ms(std::time::SystemTime::now())));
    let to = under.join(name);
    std::fs::create_dir_all(under).map_err(sled::Error::Io)?;
    std::fs::rename(from, &to).map_err(sled::Error::Io)?;
    Ok(to)
}
