//! Batch bytes in files beside the partition's trees: read back whole, removed with the
//! batches in them, a damaged, cut or missing file reported like any damaged batch, and
//! batches stored inline by layout 2 read as before.

use std::path::{Path, PathBuf};

use silt_storage::{Appended, Retained, StorageError};

use super::{batch, noise, open, open_sled, records, topic, topic_db};

/// One record per batch, from tiny to near the largest a batch may be.
fn sizes() -> Vec<usize> {
    vec![10, 64 * 1024, 200_000, (3 << 20) - 4096, (8 << 20) - 4096, 1000, 20]
}

/// Offset of the 3 MiB batch in [`sizes`].
const DAMAGED: u64 = 3;

/// The batch files of partition 0 of topic `name`, oldest first.
fn batch_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let topics = dir.join("topics");
    let db = std::fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}.")))
        .unwrap();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(db.join("files").join("0")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn store_with_batches(dir: &Path) -> Vec<Vec<u8>> {
    let values: Vec<Vec<u8>> = sizes().into_iter().enumerate().map(|(i, n)| noise(i as u64, n)).collect();
    let store = open(dir);
    store.create_topic(topic("big", 1)).unwrap();
    let p = store.partition("big", 0).unwrap();
    for (i, v) in values.iter().enumerate() {
        p.append(&mut batch(0, 0, &[(i as i64, v)]), i as i64).unwrap();
    }
    store.flush().unwrap();
    values
}

fn values_read(p: &silt_storage::Partition, from: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    p.read(from, usize::MAX, u64::MAX, &mut out).unwrap();
    records(&out).into_iter().map(|(_, _, v)| v).collect()
}

#[test]
fn batches_read_back_whole_across_a_restart_and_their_files_go_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let values = store_with_batches(dir.path());
    let files = batch_files(dir.path(), "big");
    assert_eq!(files.len(), 1, "12 MB fits one file: {files:?}");
    let on_disk = std::fs::metadata(&files[0]).unwrap().len();
    assert!(on_disk > values.iter().map(|v| v.len() as u64).sum::<u64>(), "the bytes are in the file");

    let store = open(dir.path());
    let p = store.partition("big", 0).unwrap();
    assert!(values_read(&p, 0) == values, "every batch reads back as appended after a restart");
    for from in 0..values.len() as u64 {
        let mut out = Vec::new();
        p.read(from, 1, u64::MAX, &mut out).unwrap();
        assert!(records(&out)[0].2 == values[from as usize], "batch {from} alone");
    }
    assert!(p.scan().problems.is_empty(), "{:?}", p.scan());

    // Appends after the restart go to a new file; retention empties the old one and it goes.
    p.append(&mut batch(0, 0, &[(9, b"after")]), 100).unwrap();
    store.flush().unwrap();
    assert_eq!(batch_files(dir.path(), "big").len(), 2);
    let removed = p.apply_retention(i64::MAX, Some(0), None).unwrap();
    assert_eq!(removed.batches_removed, values.len() as u64);
    assert_eq!(batch_files(dir.path(), "big").len(), 1, "the old file went with its batches");
    assert_eq!(p.apply_retention(i64::MAX, Some(0), None).unwrap(), Retained::default());
    assert_eq!(values_read(&p, 0), [b"after".to_vec()]);
    drop(p);
    drop(store);
    let store = open(dir.path());
    assert_eq!(values_read(&store.partition("big", 0).unwrap(), 0), [b"after".to_vec()]);
}

fn expect_damage_at(dir: &Path, what: &str, damaged: u64) {
    let store = open(dir);
    let p = match store.partition("big", 0) {
        Ok(p) => p,
        Err(e) => panic!("{what}: the partition should open, its last batch being whole: {e}"),
    };
    let mut out = Vec::new();
    match p.read(0, usize::MAX, u64::MAX, &mut out) {
        Err(StorageError::Corrupt { offset, .. }) if offset == damaged => {}
        other => panic!("{what}: want Corrupt at offset {damaged}, got {other:?}"),
    }
    assert_eq!(records(&out).len(), damaged as usize, "{what}: the batches before it read");
    let scan = p.scan();
    assert!(
        !scan.problems.is_empty() && scan.problems[0].contains(&format!("offset {damaged}")),
        "{what}: {scan:?}"
    );
    // Accepting the loss steps over exactly the damaged batches.
    let end = sizes().len() as u64 + 1;
    let repaired = store.repair("big", 0, &|_| end, true).unwrap();
    assert_eq!(repaired[0].1.damaged[0].from, damaged, "{what}: {repaired:?}");
    let mut all = Vec::new();
    p.read(0, usize::MAX, u64::MAX, &mut all).unwrap();
    assert!(records(&all).len() >= damaged as usize, "{what}: what is left reads");
}

/// Appends a batch after a restart (so to a second file, and the partition's last batch
/// stays whole), then damages the first batch file behind the closed store's back.
fn append_then_damage(dir: &Path, damage: impl Fn(&Path)) {
    {
        let store = open(dir);
        store.partition("big", 0).unwrap().append(&mut batch(0, 0, &[(9, b"after")]), 100).unwrap();
        store.flush().unwrap();
    }
    damage(&batch_files(dir, "big")[0]);
}

/// Where batch [`DAMAGED`] begins in the first file: the batches before it, each its value
/// plus its framing.
fn damaged_position(dir: &Path) -> u64 {
    let store = open(dir);
    let p = store.partition("big", 0).unwrap();
    let mut out = Vec::new();
    p.read(0, usize::MAX, DAMAGED, &mut out).unwrap();
    out.len() as u64
}

#[test]
fn a_flipped_bit_in_a_batch_file_is_a_corrupt_batch() {
    let dir = tempfile::tempdir().unwrap();
    store_with_batches(dir.path());
    let at = damaged_position(dir.path()) + 1_000_000;
    append_then_damage(dir.path(), |file| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at as usize] ^= 0x10;
        std::fs::write(file, bytes).unwrap();
    });
    expect_damage_at(dir.path(), "one bit flipped", DAMAGED);
}

#[test]
fn a_cut_or_missing_batch_file_is_a_corrupt_batch() {
    let dir = tempfile::tempdir().unwrap();
    store_with_batches(dir.path());
    let at = damaged_position(dir.path()) + 5;
    append_then_damage(dir.path(), |file| {
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.set_len(at).unwrap();
    });
    expect_damage_at(dir.path(), "the file cut inside a batch", DAMAGED);

    let dir = tempfile::tempdir().unwrap();
    store_with_batches(dir.path());
    append_then_damage(dir.path(), |file| std::fs::remove_file(file).unwrap());
    expect_damage_at(dir.path(), "the file removed", 0);
}

#[test]
fn a_damaged_locator_is_a_corrupt_batch() {
    let dir = tempfile::tempdir().unwrap();
    store_with_batches(dir.path());
    let db = topic_db(dir.path(), "big");
    let name = db.tree_names().into_iter().find(|n| n.starts_with(b"batches/big\0")).unwrap();
    let tree = db.open_tree(name).unwrap();
    let mut locator = tree.get(DAMAGED.to_be_bytes()).unwrap().unwrap().to_vec();
    assert_eq!(locator.len(), 52, "a locator, not the batch");
    locator[9] ^= 0x01;
    tree.insert(DAMAGED.to_be_bytes(), locator).unwrap();
    db.flush().unwrap();
    drop((tree, db));
    expect_damage_at(dir.path(), "a bit flipped in a locator", DAMAGED);
}

#[test]
fn batches_stored_inline_by_layout_2_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let values = store_with_batches(dir.path());
    let inline: Vec<(u64, Vec<u8>)> = {
        let store = open(dir.path());
        let p = store.partition("big", 0).unwrap();
        (0..values.len() as u64)
            .map(|o| {
                let mut out = Vec::new();
                p.read(o, 1, u64::MAX, &mut out).unwrap();
                (o, out)
            })
            .collect()
    };
    // Every batch back in the tree as layout 2 kept it, and the files gone.
    let db = topic_db(dir.path(), "big");
    let name = db.tree_names().into_iter().find(|n| n.starts_with(b"batches/big\0")).unwrap();
    let tree = db.open_tree(name).unwrap();
    for (offset, bytes) in &inline {
        tree.insert(offset.to_be_bytes(), &bytes[..]).unwrap();
    }
    db.flush().unwrap();
    drop((tree, db));
    for file in batch_files(dir.path(), "big") {
        std::fs::remove_file(file).unwrap();
    }
    let format = |version: Option<u32>| {
        let meta = open_sled(dir.path());
        if let Some(v) = version {
            meta.insert(b"silt-storage/format", &v.to_le_bytes()).unwrap();
            meta.flush().unwrap();
        }
        let found = meta.get(b"silt-storage/format").unwrap().unwrap();
        u32::from_le_bytes(found[..].try_into().unwrap())
    };
    assert_eq!(format(Some(2)), 2);
    drop(open(dir.path()));
    assert_eq!(format(None), 3, "a store of layout 2 is of layout 3 once opened");
    let store = open(dir.path());
    let p = store.partition("big", 0).unwrap();
    assert!(values_read(&p, 0) == values);
    p.append(&mut batch(0, 0, &[(9, b"after")]), 100).unwrap();
    assert_eq!(values_read(&p, values.len() as u64), [b"after".to_vec()]);
    assert!(p.scan().problems.is_empty());
    assert_eq!(batch_files(dir.path(), "big").len(), 1);
}

/// A crash can leave the end of a batch file unwritten while sled's log holds the locators:
/// those batches go at the next open, and their producers go back to where they were, so a
/// producer sending them again has them appended, not refused as duplicates.
#[test]
fn batches_whose_bytes_a_crash_left_unwritten_are_dropped_and_their_producers_rewound() {
    let dir = tempfile::tempdir().unwrap();
    let kept;
    {
        let store = open(dir.path());
        store.create_topic(topic("torn", 1)).unwrap();
        let p = store.partition("torn", 0).unwrap();
        for sequence in 0..4 {
            p.append(&mut batch(7, sequence, &[(1, b"seven")]), 0).unwrap();
        }
        p.append(&mut batch(8, 0, &[(1, b"eight")]), 0).unwrap();
        store.flush().unwrap();
        kept = std::fs::metadata(&batch_files(dir.path(), "torn")[0]).unwrap().len();
        // Producer 7's last two batches, producer 9's first and an anonymous one, then the
        // crash: their locators in sled, their bytes lost.
        for (producer, sequence) in [(7, 4), (9, 0), (7, 5), (0, 0)] {
            p.append(&mut batch(producer, sequence, &[(2, b"lost")]), 0).unwrap();
        }
        store.flush().unwrap();
    }
    let file = &batch_files(dir.path(), "torn")[0];
    std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(kept).unwrap();

    let store = open(dir.path());
    let p = store.partition("torn", 0).unwrap();
    assert_eq!((p.high_watermark(), p.batch_count()), (5, 5), "the four torn batches are gone");
    assert!(p.scan().problems.is_empty(), "{:?}", p.scan());
    let append = |producer, sequence| p.append(&mut batch(producer, sequence, &[(3, b"again")]), 0).unwrap();
    assert_eq!(append(7, 3), Appended::Duplicate { base_offset: Some(3) }, "what stayed is still known");
    assert_eq!(append(7, 4), Appended::New { base_offset: 5 }, "producer 7 goes on from 4 again");
    assert_eq!(append(9, 0), Appended::New { base_offset: 6 }, "producer 9 is new again");
    assert_eq!(append(8, 0), Appended::Duplicate { base_offset: Some(4) });
    assert_eq!(p.offset_for_time(3).unwrap(), 5, "the index lost the torn batches' entry");
    let mut out = Vec::new();
    p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    let values: Vec<Vec<u8>> = records(&out).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values.len(), 7);
    assert_eq!(values[4..], [b"eight".to_vec(), b"again".to_vec(), b"again".to_vec()]);
}

/// Under a retention policy files roll at an eighth of what it keeps, so the disk holds
/// little more than the policy: 40 batches of 256 KiB under `retention_bytes` of 8 MiB.
/// A file a crash left under a name sled gives out again (a topic database killed before
/// sled made anything durable opens as new and counts ids from 0, while its partitions'
/// files stay) is never written to: the next file takes an id past every file there, so
/// appends go on and the stray file, referenced by nothing, goes with the next retention.
#[test]
fn a_file_left_under_an_id_sled_gives_again_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("t", 1)).unwrap();
    let p = store.partition("t", 0).unwrap();
    p.append(&mut batch(0, 0, &[(0, b"first")]), 0).unwrap();
    store.flush().unwrap();
    let files = batch_files(dir.path(), "t");
    assert_eq!(files.len(), 1);
    drop((p, store));
    // Stray files at and just past every id the next one could get, as a crash leaves them.
    let first = files[0].file_name().unwrap().to_str().unwrap()[..16].to_string();
    let first = u64::from_str_radix(&first, 16).unwrap();
    let parent = files[0].parent().unwrap();
    for id in [0, first + 1, first + 2, 2_000_000, 4_000_001] {
        let path = parent.join(format!("{id:016x}.batches"));
        if !path.exists() {
            std::fs::write(&path, b"left by a crash").unwrap();
        }
    }
    let store = open(dir.path());
    let p = store.partition("t", 0).unwrap();
    p.append(&mut batch(0, 0, &[(1, b"second")]), 1).unwrap();
    store.flush().unwrap();
    assert!(values_read(&p, 0) == [b"first".to_vec(), b"second".to_vec()]);
    let newest = batch_files(dir.path(), "t").pop().unwrap();
    let newest = u64::from_str_radix(&newest.file_name().unwrap().to_str().unwrap()[..16], 16).unwrap();
    assert!(newest > 4_000_001, "the new file comes after every file there: {newest}");
    assert!(p.scan().problems.is_empty(), "{:?}", p.scan());
}

#[test]
fn files_roll_so_retention_frees_the_disk_soon() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("kept", 1)).unwrap();
    let p = store.partition("kept", 0).unwrap();
    for i in 0..40 {
        p.append(&mut batch(0, 0, &[(i, &noise(i as u64, 256 * 1024)[..])]), i).unwrap();
        p.apply_retention(i, None, Some(8 << 20)).unwrap();
    }
    store.flush().unwrap();
    let files = batch_files(dir.path(), "kept");
    let on_disk: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(p.size_bytes() <= 8 << 20, "{}", p.size_bytes());
    assert!(on_disk <= (8 << 20) + (2 << 20), "{on_disk} bytes in {} files", files.len());
    assert!(files.len() >= 4, "files of about 1 MiB: {files:?}");
    let mut out = Vec::new();
    p.read(p.log_start(), usize::MAX, u64::MAX, &mut out).unwrap();
    assert_eq!(records(&out).len() as u64, p.high_watermark() - p.log_start());
}
