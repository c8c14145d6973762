//! Example-based tests of each operation's contract.

use silt_storage::{Appended, Retained, StorageError, TopicMeta};
use silt_wire::batch::{peek_header, BatchView};

use crate::{bases, batch, open, records, topic};

/// Appended batches come back from `read` byte for byte, stamped with dense offsets.
#[test]
fn append_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 2)).unwrap();
    let p = store.partition("t", 1).unwrap();
    let mut stored = Vec::new();
    for i in 0..5u8 {
        let mut b = batch(0, 0, &[(100 + i64::from(i), &[i]), (99, &[i, i])]);
        let got = p.append(&mut b, 1_000 + i64::from(i)).unwrap();
        assert_eq!(got, Appended::New { base_offset: u64::from(i) * 2 });
        let view = BatchView::new(&b).unwrap();
        assert_eq!((view.base_offset(), view.append_time_ms()), (u64::from(i) * 2, 1_000 + i64::from(i)));
        stored.extend_from_slice(&b);
    }
    assert_eq!((p.log_start(), p.high_watermark(), p.batch_count()), (0, 10, 5));
    assert_eq!(p.size_bytes(), stored.len() as u64);

    let mut out = Vec::new();
    let got = p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    assert_eq!((got.next_offset, got.batches), (10, 5));
    assert_eq!(out, stored);
    let recs = records(&out);
    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(recs[3], (3, 99, vec![1, 1]));
    // The other partition is untouched.
    assert_eq!(store.partition("t", 0).unwrap().high_watermark(), 0);
}

/// `read` starts at the batch holding `from`, honours `max_bytes` (but returns at least one
/// batch) and stops at batches that begin at or after `limit`.
#[test]
fn read_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    let mut len = 0;
    for _ in 0..4 {
        let mut b = batch(0, 0, &[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")]);
        len = b.len();
        p.append(&mut b, 0).unwrap();
    }
    let read = |from, max_bytes, limit| {
        let mut out = Vec::new();
        let got = p.read(from, max_bytes, limit, &mut out).unwrap();
        assert_eq!(got.batches, bases(&out).len());
        (got.next_offset, bases(&out))
    };
    assert_eq!(read(4, usize::MAX, u64::MAX), (12, vec![3, 6, 9]));
    assert_eq!(read(5, 0, u64::MAX), (6, vec![3]), "at least one batch");
    assert_eq!(read(5, 2 * len, u64::MAX), (9, vec![3, 6]), "exactly max_bytes fits");
    assert_eq!(read(5, 2 * len - 1, u64::MAX), (6, vec![3]));
    assert_eq!(read(0, usize::MAX, 7), (9, vec![0, 3, 6]), "a batch that starts below limit is whole");
    assert_eq!(read(0, usize::MAX, 6), (6, vec![0, 3]));
    assert_eq!(read(6, usize::MAX, 6), (6, vec![]), "nothing at or after limit");
    assert_eq!(read(12, usize::MAX, u64::MAX), (12, vec![]), "nothing at the high watermark");
    assert_eq!(read(99, usize::MAX, u64::MAX), (99, vec![]), "nothing past it");

    // `from` below the log start reads from the log start.
    let removed = p.apply_retention(0, None, Some(2 * len as u64)).unwrap();
    assert_eq!(removed, Retained { batches_removed: 2, bytes_removed: 2 * len as u64 });
    assert_eq!(p.log_start(), 6);
    assert_eq!(read(0, usize::MAX, u64::MAX), (12, vec![6, 9]));
    assert_eq!(read(0, usize::MAX, 5), (0, vec![]), "limit below the log start");
}

/// Producer id and sequence deduplicate: a repeat of the last batch reports its offset, an
/// older one reports none, a gap is refused and writes nothing, producer 0 never dedups.
#[test]
fn idempotent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    let append = |pid, seq| p.append(&mut batch(pid, seq, &[(1, b"x"), (2, b"y")]), 0);

    assert_eq!(append(7, 40).unwrap(), Appended::New { base_offset: 0 }, "any first sequence");
    assert_eq!(append(7, 41).unwrap(), Appended::New { base_offset: 2 });
    assert_eq!(append(7, 41).unwrap(), Appended::Duplicate { base_offset: Some(2) });
    assert_eq!(append(7, 40).unwrap(), Appended::Duplicate { base_offset: None });
    assert_eq!(append(7, 0).unwrap(), Appended::Duplicate { base_offset: None });
    match append(7, 43) {
        Err(StorageError::OutOfOrderSequence { producer_id: 7, expected: 42, got: 43 }) => {}
        other => panic!("want OutOfOrderSequence, got {other:?}"),
    }
    assert_eq!(append(8, 41).unwrap(), Appended::New { base_offset: 4 }, "producers are independent");
    assert_eq!(append(0, 5).unwrap(), Appended::New { base_offset: 6 });
    assert_eq!(append(0, 5).unwrap(), Appended::New { base_offset: 8 }, "producer 0 is not idempotent");
    assert_eq!(append(7, 42).unwrap(), Appended::New { base_offset: 10 });
    assert_eq!((p.high_watermark(), p.batch_count()), (12, 6));
}

/// Bytes that cannot be a validated batch are refused without a panic or a write.
#[test]
fn malformed_appends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    let good = batch(0, 0, &[(1, b"x")]);
    for mut bad in [vec![], good[..20].to_vec(), good[..good.len() - 1].to_vec()] {
        assert!(matches!(p.append(&mut bad, 0), Err(StorageError::InvalidBatch { .. })));
    }
    assert_eq!(p.high_watermark(), 0);
}

/// `offset_for_time` never skips a record at or after the time asked, even when event times
/// go backwards between batches.
#[test]
fn offset_for_time_with_non_monotonic_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    assert_eq!(p.offset_for_time(0).unwrap(), 0, "empty: the high watermark");
    // Batch max timestamps: 10, 5, 30, 20, 40 at base offsets 0, 1, 2, 3, 4.
    for ts in [10, 5, 30, 20, 40] {
        p.append(&mut batch(0, 0, &[(ts, b"x")]), 0).unwrap();
    }
    let cases = [(i64::MIN, 0), (-5, 0), (10, 0), (11, 2), (25, 2), (30, 2), (31, 4), (40, 4), (41, 5)];
    for (t, want) in cases {
        assert_eq!(p.offset_for_time(t).unwrap(), want, "t = {t}");
    }
    // After retention drops offsets 0..3, times up to 30 map to the log start.
    p.apply_retention(0, None, Some(0)).unwrap();
    assert_eq!(p.log_start(), 4);
    for (t, want) in [(i64::MIN, 4), (30, 4), (40, 4), (41, 5)] {
        assert_eq!(p.offset_for_time(t).unwrap(), want, "t = {t} after retention");
    }
}

/// Retention by age drops only batches appended before `now - retention_ms`, oldest first,
/// and stops at the first one that is not expired.
#[test]
fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    let mut sizes = Vec::new();
    // The third batch's append time went backwards (a clock step); it must stay while the
    // one before it stays.
    for append_time in [100, 200, 150, 300, 400] {
        let mut b = batch(0, 0, &[(1, b"x")]);
        sizes.push(b.len() as u64);
        p.append(&mut b, append_time).unwrap();
    }
    assert_eq!(
        p.apply_retention(1_000, Some(900), None).unwrap(),
        Retained::default(),
        "100 is not older than 100"
    );
    assert_eq!(
        p.apply_retention(1_000, Some(850), None).unwrap(),
        Retained { batches_removed: 1, bytes_removed: sizes[0] }
    );
    assert_eq!(
        p.apply_retention(1_000, Some(750), None).unwrap(),
        Retained { batches_removed: 2, bytes_removed: sizes[1] + sizes[2] }
    );
    assert_eq!((p.log_start(), p.batch_count()), (3, 2));
    assert_eq!(p.size_bytes(), sizes[3] + sizes[4]);
    assert_eq!(p.apply_retention(i64::MAX, Some(0), None).unwrap().batches_removed, 1, "all but the newest");
    assert_eq!(p.apply_retention(i64::MAX, Some(0), Some(0)).unwrap(), Retained::default());
    assert_eq!((p.log_start(), p.high_watermark(), p.batch_count()), (4, 5, 1));
    let mut out = Vec::new();
    p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    assert_eq!(bases(&out), vec![4]);
}

/// Retention in many transaction steps (more batches than one step removes) keeps the log,
/// the stats and the index consistent.
#[test]
fn retention_in_many_steps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    let mut one = 0;
    for i in 0..700 {
        let mut b = batch(0, 0, &[(i, b"x")]);
        one = b.len() as u64;
        p.append(&mut b, i).unwrap();
    }
    let removed = p.apply_retention(0, None, Some(100 * one)).unwrap();
    assert_eq!(removed, Retained { batches_removed: 600, bytes_removed: 600 * one });
    assert_eq!((p.log_start(), p.batch_count(), p.size_bytes()), (600, 100, 100 * one));
    assert_eq!(p.offset_for_time(0).unwrap(), 600);
    assert_eq!(p.offset_for_time(650).unwrap(), 650);
    drop(p);
    drop(store);
    let store = open(dir.path());
    let p = store.partition("t", 0).unwrap();
    assert_eq!(
        (p.log_start(), p.high_watermark(), p.batch_count(), p.size_bytes()),
        (600, 700, 100, 100 * one)
    );
}

/// Topics: names are checked, duplicates refused, listing is sorted, partitions are bounded,
/// and handles are shared rather than reopened.
#[test]
fn topic_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for bad in ["", "a/b", "a\0b", &"x".repeat(201)] {
        assert!(
            matches!(store.create_topic(topic(bad, 1)), Err(StorageError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(store.create_topic(topic("t", 0)), Err(StorageError::InvalidPartitionCount { .. })));
    assert!(matches!(store.create_topic(topic("t", 1025)), Err(StorageError::InvalidPartitionCount { .. })));
    let meta =
        TopicMeta { retention_ms: Some(5), retention_bytes: Some(6), created_ms: -7, ..topic("b.t-1_", 3) };
    store.create_topic(meta.clone()).unwrap();
    store.create_topic(topic("a", 1)).unwrap();
    assert!(matches!(store.create_topic(topic("a", 2)), Err(StorageError::TopicExists(_))));
    assert_eq!(store.topics().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b.t-1_"]);
    assert_eq!(store.topic("b.t-1_"), Some(meta));
    assert_eq!(store.topic("c"), None);
    assert!(matches!(store.partition("c", 0), Err(StorageError::UnknownTopic(_))));
    assert!(matches!(store.partition("a", 1), Err(StorageError::UnknownPartition { partition: 1, .. })));
    let p1 = store.partition("a", 0).unwrap();
    let p2 = store.partition("a", 0).unwrap();
    assert!(std::sync::Arc::ptr_eq(&p1, &p2), "cached handle");
}

/// Deleting a topic removes its log, producer state and group offsets; handles held across
/// the delete fail; the same name created again starts empty at offset 0.
#[test]
fn delete_then_recreate_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 2)).unwrap();
    store.create_topic(topic("t2", 1)).unwrap();
    let old = store.partition("t", 0).unwrap();
    old.append(&mut batch(9, 5, &[(1, b"x")]), 0).unwrap();
    store.commit_offset("g", "t", 0, 1).unwrap();
    store.commit_offset("g", "t2", 0, 3).unwrap();
    store.delete_topic("t").unwrap();
    assert!(matches!(store.delete_topic("t"), Err(StorageError::UnknownTopic(_))));
    assert!(matches!(old.append(&mut batch(0, 0, &[(1, b"x")]), 0), Err(StorageError::UnknownTopic(_))));
    assert!(matches!(old.read(0, 100, u64::MAX, &mut Vec::new()), Err(StorageError::UnknownTopic(_))));
    assert!(matches!(store.commit_offset("g", "t", 0, 1), Err(StorageError::UnknownTopic(_))));
    assert!(store.topic("t").is_none());

    store.create_topic(topic("t", 1)).unwrap();
    let new = store.partition("t", 0).unwrap();
    assert_eq!((new.high_watermark(), new.batch_count(), new.size_bytes()), (0, 0, 0));
    assert_eq!(store.committed_offsets("g", "t").unwrap(), vec![]);
    assert_eq!(store.committed_offsets("g", "t2").unwrap(), vec![(0, 3)], "other topics keep theirs");
    // Producer 9's state went with the old topic: sequence 5 is new again.
    assert_eq!(new.append(&mut batch(9, 5, &[(1, b"x")]), 0).unwrap(), Appended::New { base_offset: 0 });
    drop((old, new));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.partition("t", 0).unwrap().high_watermark(), 1);
    assert!(matches!(store.partition("t", 1), Err(StorageError::UnknownPartition { .. })));
}

/// Group offsets: stored per (group, topic, partition), listed in partition order, group names
/// that prefix each other kept apart.
#[test]
fn group_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 3)).unwrap();
    store.commit_offset("g", "t", 2, 20).unwrap();
    store.commit_offset("g", "t", 0, 5).unwrap();
    store.commit_offset("g", "t", 0, 7).unwrap();
    store.commit_offset("g\0x", "t", 1, 99).unwrap();
    store.commit_offset("gg", "t", 1, 98).unwrap();
    assert_eq!(store.committed_offsets("g", "t").unwrap(), vec![(0, 7), (2, 20)]);
    assert_eq!(store.committed_offsets("g\0x", "t").unwrap(), vec![(1, 99)]);
    assert_eq!(store.committed_offsets("other", "t").unwrap(), vec![]);
    // Every group's offsets on the topic, for the consumer-lag metric; sorted by the length
    // byte of the group name first, then the name and partition.
    let all = store.group_offsets_of_topic("t").unwrap();
    assert_eq!(
        all,
        vec![("g".into(), 0, 7), ("g".into(), 2, 20), ("gg".into(), 1, 98), ("g\0x".into(), 1, 99)]
    );
    assert_eq!(store.group_offsets_of_topic("nothing").unwrap(), vec![]);
    assert!(matches!(store.commit_offset("g", "t", 3, 1), Err(StorageError::UnknownPartition { .. })));
    assert!(matches!(store.commit_offset("", "t", 0, 1), Err(StorageError::InvalidName { .. })));
    assert!(matches!(store.committed_offsets("g", "u"), Err(StorageError::UnknownTopic(_))));
}

/// Everything flushed before the store is dropped is there after reopening: batches, offsets,
/// stats, log start, the timestamp index, producer dedup state and group offsets.
#[test]
fn reopen_keeps_what_was_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (hw, size, first_ts_offset) = {
        let store = open(dir.path());
        store.create_topic(topic("t", 1)).unwrap();
        let p = store.partition("t", 0).unwrap();
        for seq in 0..10 {
            p.append(&mut batch(3, seq, &[(i64::try_from(seq).unwrap() * 10, b"v")]), 0).unwrap();
        }
        p.apply_retention(0, None, Some(p.size_bytes() - 1)).unwrap();
        store.commit_offset("g", "t", 0, 4).unwrap();
        assert!(store.flush().unwrap() > 0);
        (p.high_watermark(), p.size_bytes(), p.offset_for_time(55).unwrap())
    };
    let store = open(dir.path());
    let p = store.partition("t", 0).unwrap();
    assert_eq!((p.log_start(), p.high_watermark(), p.size_bytes(), p.batch_count()), (1, hw, size, 9));
    assert_eq!(p.offset_for_time(55).unwrap(), first_ts_offset);
    assert_eq!(first_ts_offset, 6);
    assert_eq!(store.committed_offsets("g", "t").unwrap(), vec![(0, 4)]);
    let mut last = batch(3, 9, &[(90, b"v")]);
    assert_eq!(p.append(&mut last, 0).unwrap(), Appended::Duplicate { base_offset: Some(9) });
    assert!(matches!(
        p.append(&mut batch(3, 11, &[(1, b"v")]), 0),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
    assert_eq!(p.append(&mut batch(3, 10, &[(1, b"v")]), 0).unwrap(), Appended::New { base_offset: 10 });
}

/// A flipped byte in a stored batch is a `Corrupt` error naming topic, partition and offset,
/// on read and (for the last batch) at open, where only that partition stops.
#[test]
fn corruption_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_topic(topic("t", 2)).unwrap();
        let p = store.partition("t", 0).unwrap();
        for _ in 0..3 {
            p.append(&mut batch(0, 0, &[(1, b"abc"), (2, b"def")]), 0).unwrap();
        }
        store.partition("t", 1).unwrap().append(&mut batch(0, 0, &[(1, b"abc")]), 0).unwrap();
        store.flush().unwrap();
    }
    // Flip one body byte of the batch at offset 2 of partition 0, and of the only batch of
    // partition 1, behind the store's back.
    {
        let db = super::topic_db(dir.path(), "t");
        for (partition, offset) in [(0u32, 2u64), (1, 0)] {
            let suffix = format!("\0{partition}");
            let name = db
                .tree_names()
                .into_iter()
                .find(|n| n.starts_with(b"batches/t\0") && n.ends_with(suffix.as_bytes()))
                .unwrap();
            let tree = db.open_tree(name).unwrap();
            let mut value = tree.get(offset.to_be_bytes()).unwrap().unwrap().to_vec();
            let at = value.len() - 1;
            value[at] ^= 0x40;
            tree.insert(offset.to_be_bytes(), value).unwrap();
        }
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let p = store.partition("t", 0).unwrap();
    let mut out = Vec::new();
    assert_eq!(p.read(0, 0, u64::MAX, &mut out).unwrap().batches, 1, "batches before it read fine");
    match p.read(0, usize::MAX, u64::MAX, &mut Vec::new()) {
        Err(StorageError::Corrupt { topic, partition: 0, offset: 2, .. }) if topic == "t" => {}
        other => panic!("want Corrupt at t/0 offset 2, got {other:?}"),
    }
    match store.partition("t", 1) {
        Err(StorageError::Corrupt { partition: 1, offset: 0, .. }) => {}
        other => panic!("want partition 1 stopped as corrupt, got {other:?}"),
    }
    // The rest of the store works, and a stopped partition's topic can still be deleted.
    assert_eq!(p.append(&mut batch(0, 0, &[(1, b"x")]), 0).unwrap(), Appended::New { base_offset: 6 });
    drop(p);
    store.delete_topic("t").unwrap();
}

/// Appends from several threads to several partitions keep every partition dense, and
/// concurrent reads only ever see whole, checked batches.
#[test]
fn concurrent_appends_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 2)).unwrap();
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            let p = store.partition("t", (thread % 2) as u32).unwrap();
            s.spawn(move || {
                for seq in 0..200 {
                    let mut b = batch(thread + 1, seq, &[(1, b"a"), (2, b"b")]);
                    assert!(matches!(p.append(&mut b, 0).unwrap(), Appended::New { .. }));
                }
            });
        }
        let p = store.partition("t", 0).unwrap();
        s.spawn(move || {
            let mut from = 0;
            // Bounded: the writers append 800 records to this partition and then stop.
            while from < 800 {
                let mut out = Vec::new();
                let next = p.read(from, 4096, u64::MAX, &mut out).unwrap().next_offset;
                for (i, b) in silt_wire::batch::split_batches(&out).enumerate() {
                    let b = b.unwrap();
                    assert_eq!(peek_header(b.as_bytes()).0, 2);
                    assert!(i > 0 || (b.base_offset() <= from && from < b.next_offset()));
                }
                if next == from {
                    std::thread::yield_now();
                }
                from = next;
            }
        });
    });
    for partition in 0..2 {
        let p = store.partition("t", partition).unwrap();
        assert_eq!((p.high_watermark(), p.batch_count()), (800, 400));
        let mut out = Vec::new();
        p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();
        let offsets: Vec<u64> = records(&out).iter().map(|r| r.0).collect();
        assert_eq!(offsets, (0..800).collect::<Vec<_>>());
    }
}

/// The store and its partition handles can be shared across threads.
#[test]
fn handles_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<silt_storage::Store>();
    shared::<std::sync::Arc<silt_storage::Partition>>();
}

/// A batch missing from the middle of a partition (sled lost it) is an error naming the
/// missing offsets when a read reaches it, never skipped over, and `scan` names it too.
#[test]
fn a_batch_missing_from_the_middle_is_an_error_not_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("gap", 1)).unwrap();
    let p = store.partition("gap", 0).unwrap();
    for i in 0..3 {
        p.append(&mut batch(0, 0, &[(i, b"v"), (i, b"w")]), 1).unwrap();
    }
    let incarnation = store.incarnation("gap").unwrap();
    drop(p);
    store.flush().unwrap();
    drop(store);
    let db = super::topic_db(dir.path(), "gap");
    let tree = db.open_tree(format!("batches/gap\0{incarnation:016x}\00")).unwrap();
    assert!(tree.remove(2u64.to_be_bytes()).unwrap().is_some(), "the second batch begins at 2");
    db.flush().unwrap();
    drop((tree, db));

    let store = open(dir.path());
    let p = store.partition("gap", 0).unwrap();
    let mut out = Vec::new();
    let e = p.read(0, 1 << 20, u64::MAX, &mut out).unwrap_err();
    assert!(e.to_string().contains("offsets 2..4 are missing"), "{e}");
    let e = p.read(3, 1 << 20, u64::MAX, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("offsets 3..4 are missing"), "{e}");
    let mut tail = Vec::new();
    p.read(4, 1 << 20, u64::MAX, &mut tail).expect("what follows the gap reads");
    assert_eq!(bases(&tail), [4]);
    assert!(p.scan().problems.iter().any(|m| m.contains("offsets 2..4 are missing")));
}
