//! Crash test in the style of sled's: the test re-runs its own binary as a child that appends,
//! flushes and reports what it acknowledged; the parent kills it with SIGKILL at an arbitrary
//! point, reopens the store and checks that what was recovered is a clean prefix of the log
//! the child was writing and holds everything acknowledged.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use silt_storage::{Appended, Store};
use silt_wire::batch::{split_batches, BatchView};

use crate::{batch, open, topic};

/// Set in the child's environment to the store directory; selects child mode.
const CHILD_DIR_ENV: &str = "SILT_STORAGE_CRASH_CHILD_DIR";
const PRODUCER_ID: u64 = 42;
/// The child stops by itself after this many appends, should the parent never kill it.
const CHILD_APPENDS_MAX: u64 = 20_000;
/// Retention keeps the log around this size, so that crashes also hit retention steps.
const RETENTION_BYTES: u64 = 64 * 1024;

/// Records in the batch at `base`: the log is a pure function of offsets, so the parent can
/// tell whether a recovered batch is the one the child wrote there.
fn record_count(base: u64) -> u64 {
    1 + base % 5
}

/// Value of the record at `offset`: its offset, padded; every 16th batch is large enough for
/// sled to store it outside its pages.
fn value(base: u64, offset: u64) -> Vec<u8> {
    let len = if base.is_multiple_of(16) { 20_000 } else { 8 + (offset * 37) % 300 };
    let mut v = offset.to_le_bytes().to_vec();
    v.resize(len as usize, (offset % 251) as u8);
    v
}

fn expected_batch(base: u64, sequence: u64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (base..base + record_count(base)).map(|o| value(base, o)).collect();
    let recs: Vec<(i64, &[u8])> = values.iter().map(|v| (base as i64, &v[..])).collect();
    batch(PRODUCER_ID, sequence, &recs)
}

/// Child mode only (a no-op when run as a normal test): appends to the store named by the
/// environment until killed, printing each acknowledged (flushed) high watermark.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    if store.topic("c").is_none() {
        store.create_topic(topic("c", 1)).unwrap();
    }
    let p = store.partition("c", 0).unwrap();
    // Continue where the recovered log ends.
    let first_sequence = last_batch(&store).map_or(0, |b| BatchView::checked(&b).unwrap().sequence() + 1);
    let mut stdout = std::io::stdout().lock();
    for i in 0..CHILD_APPENDS_MAX {
        let base = p.high_watermark();
        let mut b = expected_batch(base, first_sequence + i);
        assert_eq!(p.append(&mut b, i as i64).unwrap(), Appended::New { base_offset: base });
        if i % 7 == 6 {
            p.apply_retention(0, None, Some(RETENTION_BYTES)).unwrap();
        }
        // Mostly flush every append, so that kills land inside flushes; every fourth append
        // stays unflushed until the next one, so that kills also land before a flush.
        if i % 4 != 3 {
            store.flush().unwrap();
            writeln!(stdout, "acked {}", p.high_watermark()).unwrap();
            stdout.flush().unwrap();
        }
    }
}

fn last_batch(store: &Store) -> Option<Vec<u8>> {
    let p = store.partition("c", 0).unwrap();
    let hw = p.high_watermark();
    let mut out = Vec::new();
    p.read(hw.checked_sub(1)?, 0, u64::MAX, &mut out).unwrap();
    Some(out)
}

/// SIGKILL at arbitrary points during appends, flushes and retention never loses an
/// acknowledged record and always leaves a clean prefix: dense offsets, every batch exactly as
/// written, stats and producer dedup state consistent with the log.
#[test]
fn killed_writer_recovers_a_clean_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = 0;
    // Each round kills the child after a different number of acknowledgements (1 to 23).
    for round in 1..=16 {
        let acks_before_kill = round * 7 % 23 + 1;
        let mut child = Command::new(&exe)
            .args(["crash::crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < acks_before_kill {
            let Some(line) = lines.next() else {
                let out = child.wait_with_output().unwrap();
                panic!("child ended early: {}", String::from_utf8_lossy(&out.stderr));
            };
            if let Some(hw) = line.unwrap().strip_prefix("acked ") {
                acked = hw.parse().unwrap();
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        check_recovered(dir.path(), acked);
    }
    let store = open(dir.path());
    assert!(store.partition("c", 0).unwrap().log_start() > 0, "the rounds exercised retention");
}

fn check_recovered(dir: &Path, acked: u64) {
    let store = open(dir);
    let p = store.partition("c", 0).unwrap();
    let (start, hw) = (p.log_start(), p.high_watermark());
    assert!(hw >= acked, "acknowledged up to {acked} but recovered only up to {hw}");
    println!("acknowledged up to {acked}, recovered {start}..{hw}");
    let mut out = Vec::new();
    p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();

    // Replay the child's deterministic log from offset 0 to learn each batch's sequence.
    let mut sequence_at = std::collections::HashMap::new();
    let (mut base, mut sequence) = (0, 0);
    while base < hw {
        sequence_at.insert(base, sequence);
        base += record_count(base);
        sequence += 1;
    }
    assert_eq!(base, hw, "the high watermark is a batch boundary of the child's log");

    let mut next = start;
    let mut size = 0;
    let mut count = 0;
    let mut last = None;
    for b in split_batches(&out) {
        let b = b.unwrap();
        assert_eq!(b.base_offset(), next, "offsets are dense");
        let mut want = expected_batch(next, sequence_at[&next]);
        silt_wire::batch::stamp(&mut want, next, b.append_time_ms());
        assert_eq!(b.as_bytes(), &want[..], "batch at {next} is what the child wrote");
        size += want.len() as u64;
        count += 1;
        next = b.next_offset();
        last = Some(want);
    }
    assert_eq!(next, hw);
    assert_eq!((p.size_bytes(), p.batch_count()), (size, count), "stats match the log");
    // Retention runs every 7 appends; between runs the log grows by at most 6 batches of at
    // most 5 records of 20 KB.
    assert!(size <= RETENTION_BYTES + 6 * 5 * 20_100, "retention ran and was recovered");

    // Dedup state is that of the last batch: resending it is a duplicate at its offset.
    let mut last = last.expect("the child acknowledged at least one batch");
    let last_base = BatchView::checked(&last).unwrap().base_offset();
    assert_eq!(p.append(&mut last, 0).unwrap(), Appended::Duplicate { base_offset: Some(last_base) });
}
