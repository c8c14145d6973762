//! Measurements behind the crate's design choices, not checks: ignored by default. Run with
//! `cargo test -p silt-storage --test storage measure -- --ignored --nocapture --test-threads=1`
//! (add `--release` for numbers that do not include this crate's unoptimized code).
//! Results are recorded in the crate docs (`src/lib.rs`).

use std::time::Instant;

use sled::transaction::{ConflictableTransactionError, Transactional};

use crate::{batch, open, topic};

const APPENDS: u64 = 10_000;
/// Each variant runs this often on a fresh database; the best run is reported, since noise
/// on a shared 2-core machine only ever adds time.
const RUNS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Variant {
    /// `Tree::insert` of the batch alone: the floor.
    Insert,
    /// The three writes of `ThreeTrees` as plain inserts, not atomic: what the transaction
    /// machinery itself costs.
    ThreeInserts,
    /// Batch + timestamp index + producer state in one transaction.
    ThreeTrees,
    /// The same plus the stats entry: what `Partition::append` writes.
    FourTrees,
    /// `Partition::append` itself (producer id set, a new index entry every batch).
    Append,
    /// `Partition::append` then `Store::flush`, once per batch.
    AppendFlush,
}

fn run(variant: Variant, value: &[u8]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    // At most 10,000 appends and about 100 MB per run.
    let n = (APPENDS * 10_000 / value.len() as u64).min(APPENDS);
    let n = if matches!(variant, Variant::AppendFlush) { n / 20 } else { n };
    let start;
    match variant {
        Variant::Insert | Variant::ThreeInserts | Variant::ThreeTrees | Variant::FourTrees => {
            let db = sled::Config::new().path(dir.path()).cache_capacity(256 << 20).open().unwrap();
            let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| db.open_tree(n).unwrap());
            start = Instant::now();
            for i in 0..n {
                let key = i.to_be_bytes();
                match variant {
                    Variant::Insert => drop(a.insert(key, value).unwrap()),
                    Variant::ThreeInserts => {
                        a.insert(key, value).unwrap();
                        b.insert(key, &key[..]).unwrap();
                        c.insert(7u64.to_be_bytes(), &[0u8; 16][..]).unwrap();
                    }
                    Variant::ThreeTrees => (&a, &b, &c)
                        .transaction(|(a, b, c)| {
                            a.insert(&key[..], value)?;
                            b.insert(&key[..], &key[..])?;
                            c.insert(&7u64.to_be_bytes()[..], &[0u8; 16][..])?;
                            Ok::<_, ConflictableTransactionError<()>>(())
                        })
                        .unwrap(),
                    _ => (&a, &b, &c, &d)
                        .transaction(|(a, b, c, d)| {
                            a.insert(&key[..], value)?;
                            b.insert(&key[..], &key[..])?;
                            c.insert(&7u64.to_be_bytes()[..], &[0u8; 16][..])?;
                            d.insert(&b"stats"[..], &[0u8; 16][..])?;
                            Ok::<_, ConflictableTransactionError<()>>(())
                        })
                        .unwrap(),
                }
            }
        }
        Variant::Append | Variant::AppendFlush => {
            let store = open(dir.path());
            store.create_topic(topic("m", 1)).unwrap();
            let p = store.partition("m", 0).unwrap();
            let batches: Vec<Vec<u8>> =
                (0..n).map(|i| batch(9, i, &[(i as i64, &value[..value.len() - 80])])).collect();
            start = Instant::now();
            for mut b in batches {
                p.append(&mut b, 0).unwrap();
                if matches!(variant, Variant::AppendFlush) {
                    store.flush().unwrap();
                }
            }
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Microseconds per append of a plain insert, three plain inserts, a 3-tree and a 4-tree
/// transaction, and the real `Partition::append` with and without a flush per batch, for
/// 1 KB, 10 KB and 100 KB batches.
#[test]
#[ignore]
fn measure_append_cost() {
    for value_len in [1_000usize, 10_000, 100_000] {
        let value = vec![7u8; value_len];
        let mut line = format!("{value_len} B batches, us per append:");
        for variant in [
            Variant::Insert,
            Variant::ThreeInserts,
            Variant::ThreeTrees,
            Variant::FourTrees,
            Variant::Append,
            Variant::AppendFlush,
        ] {
            let best = (0..RUNS).map(|_| run(variant, &value)).fold(f64::INFINITY, f64::min);
            line += &format!(" {variant:?} {best:.1},");
        }
        println!("{line}");
    }
}

/// What opening costs with the stats entry, against the full scan it replaces.
#[test]
#[ignore]
fn measure_open_cost() {
    let dir = tempfile::tempdir().unwrap();
    let total_bytes = {
        let store = open(dir.path());
        store.create_topic(topic("m", 1)).unwrap();
        let p = store.partition("m", 0).unwrap();
        let value = vec![1u8; 30_000];
        for _ in 0..10_000 {
            p.append(&mut batch(0, 0, &[(0, &value[..])]), 0).unwrap();
        }
        store.flush().unwrap();
        p.size_bytes()
    };
    let t = Instant::now();
    let store = open(dir.path());
    let opened = t.elapsed();
    let p = store.partition("m", 0).unwrap();
    let t = Instant::now();
    let mut scanned = 0u64;
    let mut from = 0;
    while from < p.high_watermark() {
        let mut out = Vec::new();
        from = p.read(from, 1 << 20, u64::MAX, &mut out).unwrap().next_offset;
        scanned += out.len() as u64;
    }
    assert_eq!(scanned, total_bytes);
    println!(
        "{} MB in {} batches: open (stats entry) {:?}, full scan {:?}",
        total_bytes >> 20,
        p.batch_count(),
        opened,
        t.elapsed()
    );
}

/// A reading of this process from /proc/self/status: `Threads` or `VmRSS` (kB).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What a database per topic costs as topics grow: creating a topic, opening the store,
/// threads, resident memory, and the latency of an append and flush to one topic while the
/// others sit idle (each flush visits every topic's database).
#[test]
#[ignore]
fn measure_topic_databases() {
    println!("| topics | create per topic | open | threads | RSS | append + flush (median of 200) |");
    for topics in [1usize, 10, 100] {
        let dir = tempfile::tempdir().unwrap();
        let (threads, rss) = (status("Threads:"), status("VmRSS:"));
        let t = Instant::now();
        {
            let store = open(dir.path());
            for i in 0..topics {
                store.create_topic(topic(&format!("t{i}"), 1)).unwrap();
            }
        }
        let create = t.elapsed() / topics as u32;
        let t = Instant::now();
        let store = open(dir.path());
        let opened = t.elapsed();
        let p = store.partition("t0", 0).unwrap();
        let value = vec![7u8; 1000];
        let mut flushes = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            p.append(&mut batch(0, 0, &[(0, &value[..])]), 0).unwrap();
            store.flush().unwrap();
            flushes.push(t.elapsed());
        }
        flushes.sort();
        println!(
            "| {topics} | {create:?} | {opened:?} | +{} | +{} MiB | {:?} |",
            status("Threads:").saturating_sub(threads),
            status("VmRSS:").saturating_sub(rss) >> 10,
            flushes[flushes.len() / 2]
        );
    }
}

/// Resident memory as a topic retains large batches: sled's cache must count and evict them
/// (`partition::pieces`). 100 batches of 4 MiB of incompressible bytes into one topic with a
/// 32 MiB page cache, then every batch read back once.
#[test]
#[ignore]
fn measure_large_batch_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        silt_storage::Store::open(dir.path(), silt_storage::StoreConfig { cache_bytes: 32 << 20 }).unwrap();
    store.create_topic(topic("big", 1)).unwrap();
    let p = store.partition("big", 0).unwrap();
    let rss = status("VmRSS:");
    let mut peak = 0;
    for i in 0..100 {
        let value = crate::noise(i as u64, 4 << 20);
        p.append(&mut batch(0, 0, &[(i, &value[..])]), 0).unwrap();
        if i % 10 == 9 {
            store.flush().unwrap();
            peak = peak.max(status("VmRSS:"));
        }
    }
    let written = status("VmRSS:").saturating_sub(rss) >> 10;
    let mut out = Vec::new();
    for from in 0..100 {
        out.clear();
        p.read(from, 1, u64::MAX, &mut out).unwrap();
        peak = peak.max(status("VmRSS:"));
    }
    println!(
        "400 MiB in 4 MiB batches, cache 32 MiB: +{written} MiB resident after writing, +{} MiB after reading, peak +{} MiB",
        status("VmRSS:").saturating_sub(rss) >> 10,
        peak.saturating_sub(rss) >> 10
    );
}
