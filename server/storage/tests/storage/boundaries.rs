//! A topic's database is a failure boundary: one that does not open stops its topic alone,
//! and accepting the loss gives the topic an empty database that continues after what was
//! acknowledged. Stores of layout 1 (every partition in one database) move to a database per
//! topic when they open, with nothing lost, also after an interrupted move.

use silt_storage::StorageError;

use super::{batch, open, records, topic, topic_db};

/// Writes two records to each of two partitions of `name`; flushed.
fn two_by_two(store: &silt_storage::Store, name: &str) {
    store.create_topic(topic(name, 2)).unwrap();
    for p in 0..2 {
        store.partition(name, p).unwrap().append(&mut batch(0, 0, &[(1, b"a"), (2, b"b")]), 1).unwrap();
    }
    store.flush().unwrap();
}

fn topic_dir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}.")))
        .unwrap()
}

#[test]
fn a_topic_whose_database_does_not_open_stops_alone_until_its_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        two_by_two(&store, "bad");
        two_by_two(&store, "good");
    }
    // sled refuses a log whose configuration file is garbage; any damage that makes it fail
    // or panic on open stops the topic the same way (server/broker/tests/storage_faults.rs
    // flips bits and cuts logs).
    std::fs::write(topic_dir(dir.path(), "bad").join("conf"), b"not a sled configuration").unwrap();

    let store = open(dir.path());
    let mut out = Vec::new();
    store.partition("good", 1).unwrap().read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    assert_eq!(records(&out).len(), 2, "the other topic serves");
    for p in 0..2 {
        match store.partition("bad", p) {
            Err(StorageError::Unopenable { topic, partition, .. }) => {
                assert_eq!((topic.as_str(), partition), ("bad", p))
            }
            other => panic!("partition {p}: {other:?}"),
        }
    }
    let ends = [("bad", 0, 2), ("bad", 1, 2), ("good", 0, 2)];
    let ledger = ends
        .iter()
        .map(|&(t, p, end)| {
            let key = silt_storage::ledger::PartitionKey {
                topic: t.into(),
                incarnation: store.incarnation(t).unwrap(),
                partition: p,
            };
            (key, end)
        })
        .collect();
    let losses = store.verify(&ledger);
    assert_eq!(
        losses.iter().map(|l| (l.partition, l.from, l.to)).collect::<Vec<_>>(),
        [(0, 0, 2), (1, 0, 2)]
    );

    // A report changes nothing; accepting replaces the database and covers both partitions.
    let report = store.repair("bad", 1, &|_| 2, false).unwrap();
    assert_eq!(report.len(), 1);
    assert!(!report[0].1.accepted && report[0].1.damaged[0].reason.contains("does not open"), "{report:?}");
    assert!(store.partition("bad", 0).is_err());
    let repairs = store.repair("bad", 1, &|p| 2 + u64::from(p), true).unwrap();
    assert_eq!(
        repairs.iter().map(|(p, r)| (*p, r.gaps.clone())).collect::<Vec<_>>(),
        [(1, vec![(0, 3)]), (0, vec![(0, 2)])]
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("damaged")).unwrap().count(),
        1,
        "the old database is kept aside"
    );
    let p = store.partition("bad", 0).unwrap();
    assert_eq!(p.high_watermark(), 2, "offsets are never reused");
    p.append(&mut batch(0, 0, &[(3, b"c")]), 1).unwrap();
    store.flush().unwrap();
    drop((p, store));
    let store = open(dir.path());
    let mut out = Vec::new();
    store.partition("bad", 0).unwrap().read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    assert_eq!(records(&out), [(2, 3, b"c".to_vec())]);
}

/// The database directory of topic `name`.
fn db_dir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let entries = std::fs::read_dir(dir.join("topics")).unwrap();
    entries.map(|e| e.unwrap().path()).find(|p| p.to_str().unwrap().contains(&format!("/{name}."))).unwrap()
}

/// The batch a locator (file id, position and length first, little-endian) points at
/// among the batch files in `files`.
fn inline(files: &std::path::Path, locator: &[u8]) -> Vec<u8> {
    let word = |at: usize| u64::from_le_bytes(locator[at..at + 8].try_into().unwrap());
    let len = u32::from_le_bytes(locator[16..20].try_into().unwrap()) as usize;
    let bytes = std::fs::read(files.join(format!("{:016x}.batches", word(0)))).unwrap();
    bytes[word(8) as usize..][..len].to_vec()
}

/// Turns a store of this layout back into layout 1: every tree of every topic's database in
/// the metadata database, the version 1, no topic databases.
fn back_to_layout_1(dir: &std::path::Path, names: &[&str]) {
    let meta = sled::open(dir).unwrap();
    for name in names {
        let db = topic_db(dir, name);
        for tree in db.tree_names() {
            if tree == b"__sled__default" {
                continue;
            }
            let (from, to) = (db.open_tree(&tree).unwrap(), meta.open_tree(&tree).unwrap());
            let partition = tree.rsplit(|&b| b == 0).next().map(|p| String::from_utf8_lossy(p).into_owned());
            for item in from.iter() {
                let (k, v) = item.unwrap();
                if tree.starts_with(b"batches/") {
                    // Layout 1 kept the batch itself, where this one keeps its locator.
                    let topic_dir = db_dir(dir, name).join("files").join(partition.as_deref().unwrap());
                    to.insert(k, inline(&topic_dir, &v)).unwrap();
                } else {
                    to.insert(k, v).unwrap();
                }
            }
        }
    }
    meta.insert(b"silt-storage/format", &1u32.to_le_bytes()).unwrap();
    meta.flush().unwrap();
    std::fs::remove_dir_all(dir.join("topics")).unwrap();
}

#[test]
fn a_store_of_layout_1_moves_to_a_database_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let incarnation = {
        let store = open(dir.path());
        two_by_two(&store, "a");
        two_by_two(&store, "b");
        let p = store.partition("b", 1).unwrap();
        p.append_checkpointed(&mut [&mut batch(0, 0, &[(9, b"z")])], 1, "proc", 1, b"cp").unwrap();
        store.commit_offset("g", "a", 1, 2).unwrap();
        store.flush().unwrap();
        store.incarnation("a").unwrap()
    };
    back_to_layout_1(dir.path(), &["a", "b"]);
    // A move interrupted after it began leaves a partial database, which the move replaces.
    let partial = dir.path().join("topics").join(format!("a.{incarnation:016x}"));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("db"), b"half a log").unwrap();
    {
        let store = open(dir.path());
        for (t, p, n) in [("a", 0, 2), ("a", 1, 2), ("b", 0, 2), ("b", 1, 3)] {
            let mut out = Vec::new();
            store.partition(t, p).unwrap().read(0, usize::MAX, u64::MAX, &mut out).unwrap();
            assert_eq!(records(&out).len(), n, "{t}/{p}");
        }
        assert_eq!(store.checkpoint("b", "proc", 1).unwrap().as_deref(), Some(&b"cp"[..]));
        assert_eq!(store.committed_offsets("g", "a").unwrap(), [(1, 2)]);
        store.partition("a", 0).unwrap().append(&mut batch(0, 0, &[(3, b"c")]), 1).unwrap();
        store.flush().unwrap();
    }
    let meta = sled::open(dir.path()).unwrap();
    assert!(
        meta.tree_names().iter().all(|n| !n.starts_with(b"batches/") && n != b"silt/checkpoints"),
        "the shared copies are dropped"
    );
    drop(meta);
    let store = open(dir.path());
    assert_eq!(store.partition("a", 0).unwrap().high_watermark(), 3);
}

/// A topic database no topic names (a crash in a deletion, or metadata that lost the topic)
/// is moved aside at open, never removed, and the store opens without it.
#[test]
fn a_database_no_topic_names_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        two_by_two(&store, "live");
    }
    for _ in 0..2 {
        let ghost = dir.path().join("topics").join("ghost.000000000000002a");
        std::fs::create_dir_all(&ghost).unwrap();
        std::fs::write(ghost.join("db"), b"records nobody names").unwrap();
        let store = open(dir.path());
        assert_eq!(store.topics().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["live"]);
        assert!(!ghost.exists());
    }
    let kept: Vec<_> =
        std::fs::read_dir(dir.path().join("orphaned")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 2, "both moved, neither replaced: {kept:?}");
    assert!(kept.iter().all(|k| std::fs::read(k.join("db")).unwrap() == b"records nobody names"));
}

/// A store with two topics, a processor, a device, a user and a committed group offset, the
/// offset copied (a second after the store opened); flushed and closed.
fn store_with_metadata(dir: &std::path::Path) {
    let store = open(dir);
    two_by_two(&store, "a");
    two_by_two(&store, "b");
    store.put_processor("p", b"definition").unwrap();
    store.insert_device("dev-1", b"entry").unwrap();
    store.auth_put(silt_storage::AuthTree::Users, b"alice", b"user").unwrap();
    store.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    store.commit_offset("g", "a", 1, 2).unwrap();
    store.flush().unwrap();
}

/// Makes the metadata database one sled refuses to open: its config file fails its checksum.
fn break_metadata(dir: &std::path::Path) {
    let conf = dir.join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&conf, bytes).unwrap();
}

#[test]
fn a_metadata_database_that_does_not_open_is_restored_from_its_copies() {
    let dir = tempfile::tempdir().unwrap();
    store_with_metadata(dir.path());
    break_metadata(dir.path());
    let store = open(dir.path());
    let restored = store.metadata_restored().expect("the metadata was restored");
    assert!(restored.moved_to.join("db").exists(), "sled's files are kept aside: {restored:?}");
    assert!(restored.offsets_written_ms.is_some());
    assert_eq!(store.topics().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    for name in ["a", "b"] {
        for p in 0..2 {
            let mut out = Vec::new();
            store.partition(name, p).unwrap().read(0, 1 << 20, u64::MAX, &mut out).unwrap();
            assert_eq!(records(&out).len(), 2, "{name}/{p} whole");
        }
    }
    assert_eq!(store.processor("p").unwrap().as_deref(), Some(&b"definition"[..]));
    assert_eq!(store.device("dev-1").unwrap().as_deref(), Some(&b"entry"[..]));
    let users = store.auth_entries(silt_storage::AuthTree::Users).unwrap();
    assert_eq!(users, [(b"alice".to_vec(), b"user".to_vec())]);
    assert_eq!(store.committed_offsets("g", "a").unwrap(), [(1, 2)]);
    // The restored database is the store's from now on.
    store.partition("a", 0).unwrap().append(&mut batch(0, 0, &[(3, b"c")]), 1).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(store.metadata_restored().is_none());
    assert_eq!(store.partition("a", 0).unwrap().high_watermark(), 3);
}

#[test]
fn without_a_sound_copy_a_broken_metadata_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    store_with_metadata(dir.path());
    break_metadata(dir.path());
    let copy = dir.path().join("metadata.backup");
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&copy, bytes).unwrap();
    match silt_storage::Store::open(dir.path(), silt_storage::StoreConfig { cache_bytes: 8 << 20 }) {
        Err(StorageError::CorruptMeta { reason, .. }) => {
            assert!(reason.contains("no sound copy") && reason.contains("checksum"), "{reason}")
        }
        Err(e) => panic!("want CorruptMeta, got {e}"),
        Ok(_) => panic!("a store without sound metadata opened"),
    }
    assert!(dir.path().join("db").exists(), "nothing was moved");
}

#[test]
fn a_topic_the_metadata_database_lost_is_restored_from_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    store_with_metadata(dir.path());
    {
        // As sled recovering a damaged log as a shorter one would: topic b's entry is gone.
        let meta = super::open_sled(dir.path());
        meta.open_tree(b"silt/topics").unwrap().remove(b"b").unwrap().unwrap();
        meta.flush().unwrap();
    }
    let store = open(dir.path());
    let restored = store.metadata_restored().expect("restored");
    assert!(restored.reason.contains("lacks topics its copy names: b"), "{restored:?}");
    let mut out = Vec::new();
    store.partition("b", 1).unwrap().read(0, 1 << 20, u64::MAX, &mut out).unwrap();
    assert_eq!(records(&out).len(), 2, "topic b serves again, whole");
    // A topic deleted for good stays deleted.
    store.delete_topic("b").unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(store.metadata_restored().is_none());
    assert!(store.topic("b").is_none());
}
