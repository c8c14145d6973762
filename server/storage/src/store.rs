//! The store: one sled database holding topics, their partitions and group offsets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use sled::transaction::{TransactionError, Transactional};

use crate::layout::{
    check_group_name, decode_group_offset_key, decode_topic_group_key, decode_u64_le, group_offset_key,
    group_prefix, parse_partition_tree_name, partition_tree_name, topic_group_prefix, PartitionTree,
    StoredTopic, ARTEFACTS_TREE, CHECKPOINTS_TREE, DEVICES_TREE, FORMAT_KEY, FORMAT_VERSION,
    GROUP_OFFSETS_TREE, LEDGER_KEY, MODULES_TREE, PARTITIONS_PER_TOPIC_MAX, PROCESSORS_TREE, TOPICS_TREE,
};
use crate::ledger::PartitionKey;
use crate::{Partition, StorageError, StoreConfig, TopicMeta};

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

/// The log store: topics, partitions, group offsets.
pub struct Store {
    pub(crate) db: sled::Db,
    topics_tree: sled::Tree,
    group_offsets: sled::Tree,
    pub(crate) processors: sled::Tree,
    pub(crate) modules: sled::Tree,
    pub(crate) artefacts: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
    pub(crate) devices: sled::Tree,
    /// Every topic with its open partitions, so `partition()` is a map lookup and an `Arc`
    /// clone. Written only by `create_topic` and `delete_topic`; `commit_offset` holds it for
    /// reading so that no offset is committed for a topic while it is being deleted.
    topics: RwLock<BTreeMap<String, Topic>>,
    /// The database directory, kept open for `syncfs` (see [`Store::flush`]).
    dir: std::fs::File,
}

struct Topic {
    meta: TopicMeta,
    incarnation: u64,
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

impl Store {
    /// Opens (or creates) the store in `dir`.
    ///
    /// Opens every partition (four sled trees each, reading the first and last batch and the
    /// stats entry) and drops the trees of topics whose deletion a crash interrupted.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StorageError> {
        let db = open_db(dir, &config)?;
        check_format(&db)?;
        let topics_tree = db.open_tree(TOPICS_TREE)?;
        let group_offsets = db.open_tree(GROUP_OFFSETS_TREE)?;
        let processors = db.open_tree(PROCESSORS_TREE)?;
        let modules = db.open_tree(MODULES_TREE)?;
        let artefacts = db.open_tree(ARTEFACTS_TREE)?;
        let checkpoints = db.open_tree(CHECKPOINTS_TREE)?;
        let devices = db.open_tree(DEVICES_TREE)?;
        let mut topics = BTreeMap::new();
        for item in topics_tree.iter() {
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
            let topic = Topic::open(&db, stored)?;
            topics.insert(name, topic);
        }
        drop_orphan_trees(&db, &topics)?;
        let dir = std::fs::File::open(dir).map_err(sled::Error::Io)?;
        Ok(Store {
            db,
            topics_tree,
            group_offsets,
            processors,
            modules,
            artefacts,
            checkpoints,
            devices,
            topics: RwLock::new(topics),
            dir,
        })
    }

    /// Creates a topic with its partitions. Errors with `TopicExists` if it exists.
    ///
    /// Durable when it returns (it flushes): topics are created rarely, and a producer told
    /// that its topic exists should not find it gone after a crash.
    pub fn create_topic(&self, meta: TopicMeta) -> Result<(), StorageError> {
        silt_wire::message::check_topic_name(&meta.name).map_err(|reason| StorageError::InvalidName {
            what: "topic",
            name: meta.name.clone(),
            reason,
        })?;
        if meta.partitions == 0 || meta.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(StorageError::InvalidPartitionCount {
                topic: meta.name,
                partitions: meta.partitions,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
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
        // Trees first: if the metadata write fails, they are orphans dropped at the next open.
        let topic = Topic::open(&self.db, stored.clone())?;
        self.topics_tree.insert(meta.name.as_bytes(), stored.encode())?;
        self.db.flush()?;
        topics.insert(meta.name, topic);
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
        // The topic is gone once its metadata is; dropping the trees only frees space, and a
        // crash or failure here leaves orphans that the next open drops.
        for p in 0..topic.meta.partitions {
            for kind in PartitionTree::ALL {
                let tree = partition_tree_name(kind, name, topic.incarnation, p);
                if let Err(e) = self.db.drop_tree(&tree) {
                    tracing::warn!(topic = name, tree = %String::from_utf8_lossy(&tree), error = %e,
                        "could not drop a deleted topic's tree; the next open retries");
                }
            }
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
        self.db.flush()?;
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

    /// Finds the offsets below `acked_end` a partition cannot serve and, with `accept`,
    /// accepts their loss ([`Partition::repair`]); a partition that could not be opened is
    /// opened again afterwards. Flushes what it changed before it returns.
    pub fn repair(
        &self,
        topic: &str,
        partition: u32,
        acked_end: u64,
        accept: bool,
    ) -> Result<crate::Repair, StorageError> {
        let unknown = || StorageError::UnknownPartition { topic: topic.to_owned(), partition };
        let (log, incarnation) = {
            let topics = self.read_topics();
            let t = topics.get(topic).ok_or_else(|| StorageError::UnknownTopic(topic.to_owned()))?;
            match t.partitions.get(partition as usize).ok_or_else(unknown)? {
                Slot::Open(p) => (Some(Arc::clone(p)), t.incarnation),
                Slot::Broken(_) => (None, t.incarnation),
            }
        };
        let repair = match log {
            Some(p) => p.repair(acked_end, accept)?,
            None => {
                let p = Partition::unrecovered(&self.db, topic, incarnation, partition)?;
                let repair = p.repair(acked_end, accept)?;
                if repair.accepted {
                    let mut topics = self.write_topics();
                    let t = topics.get_mut(topic).filter(|t| t.incarnation == incarnation);
                    let slot =
                        t.and_then(|t| t.partitions.get_mut(partition as usize)).ok_or_else(unknown)?;
                    *slot = Slot::Open(Arc::new(p));
                }
                repair
            }
        };
        if repair.accepted {
            self.flush()?;
        }
        Ok(repair)
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
    pub fn flush(&self) -> Result<usize, StorageError> {
        crate::failpoint::check("flush")?;
        let flushed = flush_durably(&self.db, &self.dir);
        crate::release_deferred();
        flushed
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
    fn open(db: &sled::Db, stored: StoredTopic) -> Result<Topic, StorageError> {
        let mut partitions = Vec::with_capacity(stored.partitions as usize);
        for p in 0..stored.partitions {
            let slot = match Partition::open(db, &stored.name, stored.incarnation, p) {
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
        let meta = TopicMeta {
            name: stored.name,
            partitions: stored.partitions,
            retention_ms: stored.retention_ms,
            retention_bytes: stored.retention_bytes,
            created_ms: stored.created_ms,
        };
        Ok(Topic { meta, incarnation: stored.incarnation, partitions })
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

/// How long `Store::open` waits for sled's file lock. sled releases the lock from its I/O
/// threads some milliseconds after the last handle of a database is dropped (sled issues
/// #1234, #1289), so a store closed and reopened in one process (tests, an embedded broker
/// restarting) would otherwise fail at random; two seconds is far above the delays seen here
/// and short enough to report a second process holding the store promptly.
const OPEN_LOCK_WAIT_MS_MAX: u64 = 2_000;
/// Pause between attempts to take the lock.
const OPEN_LOCK_RETRY_MS: u64 = 5;

/// Flushes a sled database so that what it holds survives a power cut: sled's flush, then
/// one `syncfs` of the filesystem of `dir` (the database's directory, kept open by the caller).
/// See [`Store::flush`] for why sled's flush alone is not enough. Other sled users of the
/// project (the device bridge's journal) flush through this too.
pub fn flush_durably(db: &sled::Db, dir: &std::fs::File) -> Result<usize, StorageError> {
    let bytes = db.flush()?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which the caller keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(StorageError::Sled(sled::Error::Io(std::io::Error::last_os_error())));
    }
    Ok(bytes)
}

fn open_db(dir: &Path, config: &StoreConfig) -> Result<sled::Db, StorageError> {
    // HighThroughput cleans segments less eagerly than the default LowSpace. Measured with
    // `silt-loadtest produce` (5M events of 100 B, LZ4, 1000-event batches, window 8), three
    // alternating pairs: 1.51M/1.41M/1.48M events/s against 1.46M/1.25M/1.36M, with 5-15%
    // less broker CPU and the same size on disk. A log reclaims space by retention anyway.
    let sled_config =
        sled::Config::new().path(dir).cache_capacity(config.cache_bytes).mode(sled::Mode::HighThroughput);
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

/// Writes the layout version into a new store, and refuses a store of another version.
fn check_format(db: &sled::Db) -> Result<(), StorageError> {
    let want = FORMAT_VERSION.to_le_bytes();
    match db.get(FORMAT_KEY)? {
        Some(found) if found[..] == want[..] => Ok(()),
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
            Ok(())
        }
    }
}

/// Drops partition trees that belong to no live topic: left by a crash in `delete_topic`
/// after the metadata was removed, or in `create_topic` before it was written.
fn drop_orphan_trees(db: &sled::Db, topics: &BTreeMap<String, Topic>) -> Result<(), StorageError> {
    for name in db.tree_names() {
        let Some((_, topic, incarnation, partition)) = parse_partition_tree_name(&name) else {
            continue;
        };
        let live =
            topics.get(topic).is_some_and(|t| t.incarnation == incarnation && partition < t.meta.partitions);
        if !live {
            tracing::info!(tree = %String::from_utf8_lossy(&name), "dropping the tree of a deleted topic");
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}
