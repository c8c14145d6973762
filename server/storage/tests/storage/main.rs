//! Tests of `silt-storage` through its public API, on real sled files in temp dirs.
//!
//! One test binary (modules below) so that sled and proptest are linked once.

mod basics;
mod boundaries;
mod checkpointed;
mod crash;
mod files;
mod group_append;
mod measure;
mod model;
mod repair;

use std::path::Path;

use silt_storage::{Store, StoreConfig, TopicMeta};
use silt_wire::batch::{split_batches, BatchBuilder};

/// Opens a store with a small page cache: tests hold many stores at once.
fn open(dir: &Path) -> Store {
    Store::open(dir, StoreConfig { cache_bytes: 8 * 1024 * 1024 }).expect("open store")
}

/// Opens, behind a closed store's back, the sled database of its topic `name`
/// (`topics/{name}.{incarnation}` under the store's directory).
fn topic_db(dir: &Path, name: &str) -> sled::Db {
    let prefix = format!("{name}.");
    let entry = std::fs::read_dir(dir.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_str().unwrap().strip_prefix(&prefix).is_some_and(|inc| inc.len() == 16)
        })
        .unwrap_or_else(|| panic!("no database of topic {name} under {}", dir.display()));
    open_sled(&entry)
}

/// Opens a sled database of a closed store behind its back: sled lets go of its lock some
/// milliseconds after a store closes, so this waits for it up to 2 s.
fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::open(dir) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            opened => return opened.unwrap(),
        }
    }
}

fn topic(name: &str, partitions: u32) -> TopicMeta {
    TopicMeta { name: name.into(), partitions, retention_ms: None, retention_bytes: None, created_ms: 0 }
}

/// A finished, unstamped batch of `(event time, value)` records.
fn batch(producer_id: u64, sequence: u64, records: &[(i64, &[u8])]) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for (ts, value) in records {
        b.push(*ts, b"", value, &[]).expect("small record");
    }
    b.finish(producer_id, sequence)
}

/// Bytes no compression shrinks, different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `(offset, event time, value)` of every record in a read buffer; panics on a bad batch.
fn records(bytes: &[u8]) -> Vec<(u64, i64, Vec<u8>)> {
    split_batches(bytes)
        .flat_map(|b| {
            let b = b.expect("read returns checked batches");
            b.records().map(|r| (r.offset, r.timestamp_ms, r.value.to_vec())).collect::<Vec<_>>()
        })
        .collect()
}

/// Base offsets of the batches in a read buffer.
fn bases(bytes: &[u8]) -> Vec<u64> {
    split_batches(bytes).map(|b| b.expect("checked").base_offset()).collect()
}
