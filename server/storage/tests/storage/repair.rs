//! `Store::repair`: damaged ranges are reported exactly, and once their loss is accepted the
//! partition reads over them, appends after the last offset acknowledged, and stays so across
//! a reopen.

use silt_storage::{Appended, StorageError};

use super::{bases, batch, open, records, topic, topic_db};

/// Rewrites one stored batch behind the store's back: `damage` gets its bytes.
fn damage_batch(
    dir: &std::path::Path,
    name: &str,
    partition: u32,
    offset: u64,
    damage: impl Fn(&mut Vec<u8>),
) {
    let db = topic_db(dir, name);
    let suffix = format!("\0{partition}");
    let tree_name = db
        .tree_names()
        .into_iter()
        .find(|n| n.starts_with(format!("batches/{name}\0").as_bytes()) && n.ends_with(suffix.as_bytes()))
        .unwrap();
    let tree = db.open_tree(tree_name).unwrap();
    let mut value = tree.get(offset.to_be_bytes()).unwrap().unwrap().to_vec();
    damage(&mut value);
    tree.insert(offset.to_be_bytes(), value).unwrap();
    db.flush().unwrap();
}

/// Four batches of two records at offsets 0, 2, 4, 6; flushed and closed.
fn four_batches(dir: &std::path::Path, name: &str, partitions: u32) {
    let store = open(dir);
    store.create_topic(topic(name, partitions)).unwrap();
    for partition in 0..partitions {
        let p = store.partition(name, partition).unwrap();
        for i in 0..4 {
            p.append(&mut batch(0, 0, &[(10 * i, b"a"), (10 * i + 5, b"b")]), 1).unwrap();
        }
    }
    store.flush().unwrap();
}

#[test]
fn a_corrupt_batch_in_the_middle_is_reported_then_stepped_over_once_accepted() {
    let dir = tempfile::tempdir().unwrap();
    four_batches(dir.path(), "mid", 1);
    damage_batch(dir.path(), "mid", 0, 2, |v| {
        let at = v.len() - 1;
        v[at] ^= 1;
    });
    let store = open(dir.path());
    let p = store.partition("mid", 0).unwrap();
    assert!(matches!(
        p.read(0, 1 << 20, u64::MAX, &mut Vec::new()),
        Err(StorageError::Corrupt { offset: 2, .. })
    ));

    let report = repair_one(&store, "mid", 0, 8, false);
    assert!(!report.accepted);
    assert_eq!(report.damaged.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(), [(2, 4)]);
    assert!(p.read(0, 1 << 20, u64::MAX, &mut Vec::new()).is_err(), "a report changes nothing");

    let repair = repair_one(&store, "mid", 0, 8, true);
    assert!(repair.accepted);
    assert_eq!((repair.batches_removed, repair.gaps.clone()), (1, vec![(2, 4)]));
    let mut out = Vec::new();
    p.read(0, 1 << 20, u64::MAX, &mut out).expect("the read steps over the accepted loss");
    assert_eq!(bases(&out), [0, 4, 6]);
    let mut out = Vec::new();
    p.read(3, 1 << 20, u64::MAX, &mut out).unwrap();
    assert_eq!(bases(&out), [4, 6], "a read inside the loss starts after it");
    assert_eq!(p.past_gaps(2), 4);
    assert_eq!(p.scan().problems, Vec::<String>::new());
    assert_eq!((p.batch_count(), p.high_watermark()), (3, 8));
    // The timestamp index was rebuilt without the removed batch.
    assert_eq!(p.offset_for_time(10).unwrap(), 4);
    drop(p);
    drop(store);

    let store = open(dir.path());
    let p = store.partition("mid", 0).unwrap();
    assert_eq!(p.accepted_losses(), [(2, 4)]);
    assert_eq!(p.append(&mut batch(0, 0, &[(99, b"c")]), 1).unwrap(), Appended::New { base_offset: 8 });
    let mut out = Vec::new();
    p.read(0, 1 << 20, u64::MAX, &mut out).unwrap();
    let offsets: Vec<u64> = records(&out).iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, 1, 4, 5, 6, 7, 8]);
    assert!(repair_one(&store, "mid", 0, 9, false).damaged.is_empty(), "an accepted loss is not damage");
}

#[test]
fn a_lost_tail_keeps_its_offsets_taken_once_accepted() {
    let dir = tempfile::tempdir().unwrap();
    four_batches(dir.path(), "tail", 1);
    let store = open(dir.path());
    // The ledger said 20 records were acknowledged; the log holds 8.
    let report = repair_one(&store, "tail", 0, 20, false);
    assert_eq!(report.damaged.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(), [(8, 20)]);
    assert!(report.damaged[0].reason.contains("ends at offset 8"), "{:?}", report.damaged);
    repair_one(&store, "tail", 0, 20, true);
    let p = store.partition("tail", 0).unwrap();
    assert_eq!(p.high_watermark(), 20, "offsets of acknowledged records are never given again");
    assert_eq!(p.append(&mut batch(0, 0, &[(1, b"new")]), 1).unwrap(), Appended::New { base_offset: 20 });
    let mut out = Vec::new();
    p.read(8, 1 << 20, u64::MAX, &mut out).unwrap();
    assert_eq!(bases(&out), [20]);
    // Retention keeps the newest batch, after the loss as before it.
    p.apply_retention(i64::MAX, Some(0), None).unwrap();
    assert_eq!(p.batch_count(), 1);
    drop(p);
    drop(store);
    let store = open(dir.path());
    let p = store.partition("tail", 0).unwrap();
    assert_eq!((p.log_start(), p.high_watermark()), (20, 21));
}

#[test]
fn a_partition_that_cannot_open_serves_again_once_its_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    four_batches(dir.path(), "last", 2);
    damage_batch(dir.path(), "last", 1, 6, |v| v.truncate(v.len() / 2));
    let store = open(dir.path());
    assert!(matches!(store.partition("last", 1), Err(StorageError::Corrupt { offset: 6, .. })));
    assert_eq!(store.partition("last", 0).unwrap().high_watermark(), 8, "the other partition serves");
    let report = repair_one(&store, "last", 1, 8, false);
    assert_eq!(report.damaged.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(), [(6, 8)]);
    assert!(store.partition("last", 1).is_err());
    repair_one(&store, "last", 1, 8, true);
    let p = store.partition("last", 1).expect("open again after the repair");
    assert_eq!((p.batch_count(), p.high_watermark()), (3, 8));
    let mut out = Vec::new();
    p.read(0, 1 << 20, u64::MAX, &mut out).unwrap();
    assert_eq!(bases(&out), [0, 2, 4]);
    assert_eq!(p.append(&mut batch(0, 0, &[(1, b"new")]), 1).unwrap(), Appended::New { base_offset: 8 });
}

/// The repair of one partition, which is all `Store::repair` changes when the topic's
/// database opened.
fn repair_one(
    store: &silt_storage::Store,
    topic: &str,
    partition: u32,
    acked_end: u64,
    accept: bool,
) -> silt_storage::Repair {
    let mut repairs = store.repair(topic, partition, &|_| acked_end, accept).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    repairs.remove(0).1
}
