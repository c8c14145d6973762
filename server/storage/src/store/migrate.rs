//! Layout 1 to layout 2: from one sled database holding every partition to one database per
//! topic ([`super::Store`]).
//!
//! Layout 1 kept each partition's four trees and the pipelines' checkpoints in the metadata
//! database. Opening such a store copies each topic's trees, and every checkpoint, into the
//! topic's new database (tree names unchanged), makes them durable, and only then records
//! layout 2; the copies in the metadata database are dropped after that. A crash before the
//! version is written leaves layout 1 whole, and the next open copies again into fresh
//! databases; a crash after it leaves trees that the next open drops.

use std::path::Path;

use super::{flush_durably, open_db, topic_dir_name, TOPICS_DIR, TOPIC_CACHE_BYTES_MIN};
use crate::layout::{
    parse_partition_tree_name, partition_tree_name, PartitionTree, StoredTopic, CHECKPOINTS_TREE, FORMAT_KEY,
    FORMAT_VERSION,
};
use crate::StorageError;

/// The layout with every partition in the metadata database.
pub(super) const FORMAT_SHARED: u32 = 1;

/// Copies every topic of a layout-1 store into a database of its own, then records layout 2.
pub(super) fn split_topics(db: &sled::Db, root: &Path, topics: &[StoredTopic]) -> Result<(), StorageError> {
    tracing::info!(store = %root.display(), topics = topics.len(),
        "moving a store of layout 1 to layout 2 (a database per topic)");
    let io = |e: std::io::Error| StorageError::Sled(sled::Error::Io(e));
    std::fs::create_dir_all(root.join(TOPICS_DIR)).map_err(io)?;
    let checkpoints = db.open_tree(CHECKPOINTS_TREE)?;
    for topic in topics {
        let path = root.join(TOPICS_DIR).join(topic_dir_name(&topic.name, topic.incarnation));
        // What an interrupted move left is incomplete: start it again.
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        }
        let target = open_db(&path, TOPIC_CACHE_BYTES_MIN)?;
        let mut bytes = 0;
        for p in 0..topic.partitions {
            for kind in PartitionTree::ALL {
                let name = partition_tree_name(kind, &topic.name, topic.incarnation, p);
                bytes += copy_tree(&db.open_tree(&name)?, &target.open_tree(&name)?)?;
            }
        }
        bytes += copy_tree(&checkpoints, &target.open_tree(CHECKPOINTS_TREE)?)?;
        let dir = std::fs::File::open(&path).map_err(io)?;
        flush_durably(&target, &dir)?;
        tracing::info!(topic = %topic.name, bytes, dir = %path.display(), "topic moved to its own database");
    }
    let dir = std::fs::File::open(root).map_err(io)?;
    db.insert(FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?;
    flush_durably(db, &dir)?;
    Ok(())
}

/// Drops the partition trees and checkpoints a layout-1 store kept in the metadata database,
/// once they are in the topics' databases.
pub(super) fn drop_shared_trees(db: &sled::Db) -> Result<(), StorageError> {
    for name in db.tree_names() {
        if parse_partition_tree_name(&name).is_some() || name == CHECKPOINTS_TREE {
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}

/// Copies every entry of `from` into `to`; returns the bytes copied.
fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<u64, StorageError> {
    let mut bytes = 0;
    for item in from.iter() {
        let (key, value) = item?;
        bytes += (key.len() + value.len()) as u64;
        to.insert(key, value)?;
    }
    Ok(bytes)
}
