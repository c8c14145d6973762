//! Property tests: random operation sequences against a simple in-memory model of the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use silt_storage::{Appended, Partition, Retained, StorageError, Store};
use silt_wire::batch::{split_batches, BatchView};

use crate::{bases, batch, open, records, topic};

#[derive(Debug, Clone)]
enum Op {
    /// `sequence_step` is added to the producer's last sequence (a new producer starts at
    /// `sequence_step + 100`): 1 is in order, 0 and below repeat, 2 skips ahead.
    Append {
        producer: u64,
        sequence_step: i64,
        times: Vec<i64>,
        clock_step_ms: i64,
    },
    Retention {
        age_ms: Option<u64>,
        max_bytes: Option<u64>,
    },
    /// Flush, drop the store, open it again.
    Reopen,
    Read {
        from: prop::sample::Index,
        max_bytes: usize,
    },
    OffsetForTime {
        timestamp_ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..3, prop_oneof![6 => Just(1i64), 1 => -2i64..=0, 1 => Just(2i64)],
            prop::collection::vec(-50i64..200, 1..5), -5i64..40)
            .prop_map(|(producer, sequence_step, times, clock_step_ms)| Op::Append { producer, sequence_step, times, clock_step_ms }),
        2 => (prop::option::of(0u64..300), prop::option::of(0u64..2_000))
            .prop_map(|(age_ms, max_bytes)| Op::Retention { age_ms, max_bytes }),
        1 => Just(Op::Reopen),
        3 => (any::<prop::sample::Index>(), 0usize..400).prop_map(|(from, max_bytes)| Op::Read { from, max_bytes }),
        2 => (-60i64..210).prop_map(|timestamp_ms| Op::OffsetForTime { timestamp_ms }),
    ]
}

/// What the log should hold.
#[derive(Default)]
struct Model {
    /// Every batch ever appended, as stored (stamped), with its max event time.
    batches: Vec<(Vec<u8>, i64)>,
    /// Index in `batches` of the first retained batch.
    first_retained: usize,
    producers: HashMap<u64, (u64, u64)>,
    next_offset: u64,
    clock_ms: i64,
}

impl Model {
    fn retained(&self) -> &[(Vec<u8>, i64)] {
        &self.batches[self.first_retained..]
    }
    fn log_start(&self) -> u64 {
        self.retained().first().map_or(self.next_offset, |(b, _)| view(b).base_offset())
    }
    fn size_bytes(&self) -> u64 {
        self.retained().iter().map(|(b, _)| b.len() as u64).sum()
    }
    fn stored_bytes(&self) -> Vec<u8> {
        self.retained().iter().flat_map(|(b, _)| b.iter().copied()).collect()
    }
}

fn view(bytes: &[u8]) -> BatchView<'_> {
    BatchView::checked(bytes).expect("model batches are valid")
}

struct Harness<'a> {
    dir: &'a Path,
    store: Option<Store>,
    partition: Option<Arc<Partition>>,
}

impl Harness<'_> {
    fn p(&self) -> &Partition {
        self.partition.as_ref().expect("open")
    }
    fn reopen(&mut self) {
        self.store.as_ref().expect("open").flush().unwrap();
        self.partition = None;
        self.store = None;
        let store = open(self.dir);
        self.partition = Some(store.partition("m", 0).unwrap());
        self.store = Some(store);
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic(topic("m", 1)).unwrap();
    let partition = Some(store.partition("m", 0).unwrap());
    let mut h = Harness { dir: dir.path(), store: Some(store), partition };
    let mut m = Model::default();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { producer, sequence_step, times, clock_step_ms } => {
                m.clock_ms += clock_step_ms;
                let last = m.producers.get(&producer).copied();
                let sequence = match last {
                    Some((seq, _)) => seq.saturating_add_signed(sequence_step),
                    None => (100 + sequence_step) as u64,
                };
                let value = (step as u64).to_le_bytes();
                let recs: Vec<(i64, &[u8])> = times.iter().map(|t| (*t, &value[..])).collect();
                let mut bytes = batch(producer, sequence, &recs);
                let got = h.p().append(&mut bytes, m.clock_ms);
                // The model's answer: Some(outcome), or None for OutOfOrderSequence.
                let want = match last {
                    Some((seq, base)) if producer != 0 && sequence <= seq => {
                        Some(Appended::Duplicate { base_offset: (sequence == seq).then_some(base) })
                    }
                    Some((seq, _)) if producer != 0 && sequence > seq + 1 => None,
                    _ => Some(Appended::New { base_offset: m.next_offset }),
                };
                match (&want, got) {
                    (Some(want), Ok(got)) => prop_assert_eq!(*want, got),
                    (None, Err(StorageError::OutOfOrderSequence { .. })) => {}
                    (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got),
                }
                let want_new = matches!(want, Some(Appended::New { .. }));
                if want_new {
                    let base = m.next_offset;
                    prop_assert_eq!(view(&bytes).base_offset(), base);
                    if producer != 0 {
                        m.producers.insert(producer, (sequence, base));
                    }
                    m.next_offset += times.len() as u64;
                    m.batches.push((bytes, *times.iter().max().unwrap()));
                }
            }
            Op::Retention { age_ms, max_bytes } => {
                let cutoff = age_ms.map(|a| m.clock_ms - a as i64);
                let mut want = Retained::default();
                let mut size = m.size_bytes();
                while m.batches.len() - m.first_retained > 1 {
                    let b = &m.batches[m.first_retained].0;
                    let expired = cutoff.is_some_and(|c| view(b).append_time_ms() < c);
                    if !expired && max_bytes.is_none_or(|max| size <= max) {
                        break;
                    }
                    size -= b.len() as u64;
                    want.batches_removed += 1;
                    want.bytes_removed += b.len() as u64;
                    m.first_retained += 1;
                }
                prop_assert_eq!(h.p().apply_retention(m.clock_ms, age_ms, max_bytes).unwrap(), want);
            }
            Op::Reopen => h.reopen(),
            Op::Read { from, max_bytes } => {
                let from = from.index(m.next_offset as usize + 3) as u64;
                let mut out = Vec::new();
                let got = h.p().read(from, max_bytes, u64::MAX, &mut out).unwrap();
                // The model's answer: from the batch holding max(from, log start), whole
                // batches while they fit in max_bytes, at least one.
                let start = from.max(m.log_start());
                let mut want = Vec::new();
                let mut want_next = from;
                for (b, _) in m.retained().iter().filter(|(b, _)| view(b).next_offset() > start) {
                    if !want.is_empty() && want.len() + b.len() > max_bytes {
                        break;
                    }
                    want.extend_from_slice(b);
                    want_next = view(b).next_offset();
                }
                prop_assert_eq!(&out, &want);
                prop_assert_eq!(got.next_offset, want_next);
                prop_assert_eq!(got.batches, bases(&out).len());
            }
            Op::OffsetForTime { timestamp_ms } => {
                // The first batch ever appended whose running maximum reached the time, moved
                // up to the log start; the high watermark when none did.
                let mut running = i64::MIN;
                let mut want = m.next_offset;
                for (b, max_ts) in &m.batches {
                    running = running.max(*max_ts);
                    if running >= timestamp_ms {
                        want = view(b).base_offset().max(m.log_start());
                        break;
                    }
                }
                let got = h.p().offset_for_time(timestamp_ms).unwrap();
                prop_assert_eq!(got, want);
                // And the property that matters: no retained record at or after the time
                // lies before the answer.
                for (offset, ts, _) in records(&m.stored_bytes()) {
                    prop_assert!(ts < timestamp_ms || offset >= got);
                }
            }
        }
        check_invariants(h.p(), &m)?;
    }
    Ok(())
}

/// What must hold after every operation.
fn check_invariants(p: &Partition, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.high_watermark(), m.next_offset);
    prop_assert_eq!(p.log_start(), m.log_start());
    prop_assert_eq!(p.batch_count(), m.retained().len() as u64);
    prop_assert_eq!(p.size_bytes(), m.size_bytes());
    if !m.batches.is_empty() {
        prop_assert!(m.first_retained < m.batches.len(), "the newest batch is never dropped");
    }
    let mut out = Vec::new();
    p.read(0, usize::MAX, u64::MAX, &mut out).unwrap();
    prop_assert_eq!(&out, &m.stored_bytes());
    // Offsets are dense from the log start to the high watermark.
    let offsets: Vec<u64> = records(&out).iter().map(|r| r.0).collect();
    prop_assert_eq!(offsets, (m.log_start()..m.next_offset).collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random sequences of append (in order, duplicate, out of order, three producers),
    /// retention, reopen, read and time lookup behave exactly like the in-memory model.
    #[test]
    fn operations_match_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }

    /// Reading on from any offset, with any `max_bytes`, returns exactly the records from that
    /// offset to the high watermark, and each read's first batch holds the offset asked for.
    #[test]
    fn reads_from_any_offset(counts in prop::collection::vec(1usize..6, 1..30), from in any::<prop::sample::Index>(), max_bytes in 0usize..600) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_topic(topic("r", 1)).unwrap();
        let p = store.partition("r", 0).unwrap();
        for (i, n) in counts.iter().enumerate() {
            let recs: Vec<(i64, &[u8])> = (0..*n).map(|_| (i as i64, &b"value"[..])).collect();
            p.append(&mut batch(0, 0, &recs), 0).unwrap();
        }
        let hw = p.high_watermark();
        prop_assert_eq!(hw, counts.iter().sum::<usize>() as u64);
        let from = from.index(hw as usize) as u64;
        let mut got = Vec::new();
        let mut next = from;
        // Bounded: every read returns at least one batch while next < hw.
        while next < hw {
            let mut out = Vec::new();
            let outcome = p.read(next, max_bytes, u64::MAX, &mut out).unwrap();
            let first = split_batches(&out).next().unwrap().unwrap();
            prop_assert!(first.base_offset() <= next && next < first.next_offset());
            let recs = records(&out);
            got.extend(recs.into_iter().map(|r| r.0).filter(|o| *o >= next));
            prop_assert!(outcome.next_offset > next);
            next = outcome.next_offset;
        }
        prop_assert_eq!(got, (from..hw).collect::<Vec<_>>());
    }
}
