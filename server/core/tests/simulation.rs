//! Seeded simulation of one partition under the broker core: producers with windows and
//! retries, grouped appends (some of whose writes fail), group-commit flushes (one of which may
//! fail), acknowledgements, fetches and crashes that lose everything not flushed, checked
//! against a model after every step.
//!
//! Each seed is one interleaving. A failure prints its seed; replay it alone with
//! `SILT_SIM_SEED=<seed> cargo test -p silt-core --test simulation`. `SILT_SIM_SEEDS` sets how
//! many seeds run (default 400) for longer campaigns.

use std::collections::{HashMap, VecDeque};

use silt_core::group_commit::{Coverage, FlushPolicy, GroupCommit};
use silt_core::partition::{Admission, BatchMeta, LogEnds, PartitionLog, ProducerEntry};
use silt_core::watermarks::Watermarks;

/// Steps of one interleaving before the drain.
const STEPS: usize = 400;
/// Steps the drain may take to get every batch acknowledged once faults stop.
const DRAIN_STEPS_MAX: usize = 20_000;
const PRODUCERS: u64 = 3;
/// Batches each producer sends in all.
const BATCHES_PER_PRODUCER: u64 = 30;
const WINDOW: usize = 4;
const APPEND_GROUP_MAX: usize = 5;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    base: u64,
    records: u32,
    producer: u64,
    sequence: u64,
}

/// A produce request on its way to, or waiting in, the broker.
#[derive(Clone, Copy, Debug)]
struct Request {
    producer: u64,
    sequence: u64,
    records: u32,
    /// Which producer session sent it; replies to an older session are dropped.
    session: u64,
}

/// The simulated disk: what a flush made durable, and what was written after the last one.
#[derive(Default)]
struct Disk {
    durable: Vec<Stored>,
    volatile: Vec<Stored>,
}

impl Disk {
    fn all(&self) -> impl Iterator<Item = &Stored> {
        self.durable.iter().chain(self.volatile.iter())
    }
    fn end(batches: &[Stored]) -> u64 {
        batches.last().map_or(0, |b| b.base + u64::from(b.records))
    }
    /// The producer's last entry as a read of the store sees it (flushed or not).
    fn producer(&self, id: u64) -> Option<ProducerEntry> {
        self.all()
            .filter(|b| b.producer == id)
            .last()
            .map(|b| ProducerEntry { last_sequence: b.sequence, base_offset: b.base })
    }
}

/// The broker core of one partition, as the shells hold it.
struct Node {
    log: PartitionLog,
    watermarks: Watermarks,
    commit: GroupCommit,
    incoming: VecDeque<Request>,
    /// Appended requests waiting for their ticket: request, admission, ticket.
    pending: Vec<(Request, Admission, u64)>,
    /// A running flush: its target and how many volatile batches it covers.
    flushing: Option<(u64, usize)>,
}

impl Node {
    fn open(disk: &Disk) -> Node {
        assert!(disk.volatile.is_empty(), "a node opens on flushed state");
        let end = Disk::end(&disk.durable);
        let ends = LogEnds {
            log_start: 0,
            next_offset: end,
            size_bytes: disk.durable.len() as u64 * 100,
            batch_count: disk.durable.len() as u64,
            max_timestamp_ms: disk.durable.last().map(|b| b.base as i64),
        };
        Node {
            log: PartitionLog::recovered(ends),
            watermarks: Watermarks::recovered(end),
            commit: GroupCommit::new(FlushPolicy::Always),
            incoming: VecDeque::new(),
            pending: Vec::new(),
            flushing: None,
        }
    }
}

struct Producer {
    id: u64,
    next_sequence: u64,
    /// Sent and not acknowledged, in sequence order.
    unacked: VecDeque<Request>,
    /// Acknowledged sequences with the base offset the ack named.
    acked: HashMap<u64, u64>,
    session: u64,
}

struct Sim {
    rng: Rng,
    disk: Disk,
    node: Node,
    producers: Vec<Producer>,
    crashes: u32,
    faults: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let disk = Disk::default();
        let node = Node::open(&disk);
        let producers = (1..=PRODUCERS)
            .map(|id| Producer {
                id,
                next_sequence: 1,
                unacked: VecDeque::new(),
                acked: HashMap::new(),
                session: 0,
            })
            .collect();
        Sim { rng: Rng(seed), disk, node, producers, crashes: 0, faults: true }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=29 => self.produce(),
            30..=54 => self.append(),
            55..=69 => self.start_flush(),
            70..=79 => self.finish_flush(),
            80..=91 => self.acknowledge(),
            92..=97 => self.fetch(),
            _ if self.faults && self.rng.chance(300) => self.crash(),
            _ => self.acknowledge(),
        }
        self.check();
    }

    fn produce(&mut self) {
        let p = self.rng.below(PRODUCERS) as usize;
        let producer = &mut self.producers[p];
        if producer.unacked.len() >= WINDOW || producer.next_sequence > BATCHES_PER_PRODUCER {
            return;
        }
        let request = Request {
            producer: producer.id,
            sequence: producer.next_sequence,
            records: 1 + self.rng.below(20) as u32,
            session: producer.session,
        };
        producer.next_sequence += 1;
        producer.unacked.push_back(request);
        self.node.incoming.push_back(request);
    }

    /// One appender round: plan a group, write it (the write may fail), apply, register.
    fn append(&mut self) {
        let n = self.node.incoming.len().min(APPEND_GROUP_MAX);
        if n == 0 {
            return;
        }
        let group: Vec<Request> = self.node.incoming.drain(..n).collect();
        let metas: Vec<BatchMeta> = group
            .iter()
            .map(|r| BatchMeta {
                records: r.records,
                producer_id: r.producer,
                sequence: r.sequence,
                max_timestamp_ms: self.rng.below(1000) as i64,
                bytes: 100,
            })
            .collect();
        for id in self.node.log.unknown_producers(&metas) {
            let entry = self.disk.producer(id);
            self.node.log.learn_producer(id, entry);
        }
        let plan = self.node.log.plan(&metas);
        if self.faults && self.rng.chance(30) {
            // The write failed: nothing is stored, every request of the group gets an error.
            return group.iter().for_each(|r| self.refuse(*r));
        }
        for (r, a) in group.iter().zip(&plan.admissions) {
            if let Admission::New { base_offset, .. } = a {
                let stored = Stored {
                    base: *base_offset,
                    records: r.records,
                    producer: r.producer,
                    sequence: r.sequence,
                };
                self.disk.volatile.push(stored);
            }
        }
        let admissions = plan.admissions.clone();
        self.node.log.apply(plan);
        self.node.watermarks.handle_written(self.node.log.ends().next_offset);
        let ticket = self.node.commit.register();
        for (r, a) in group.into_iter().zip(admissions) {
            self.node.pending.push((r, a, ticket));
        }
    }

    fn start_flush(&mut self) {
        if self.node.flushing.is_none() {
            if let Some(target) = self.node.commit.poll_flush() {
                self.node.flushing = Some((target, self.disk.volatile.len()));
            }
        }
    }

    fn finish_flush(&mut self) {
        let Some((target, covered)) = self.node.flushing.take() else { return };
        if self.faults && self.rng.chance(10) {
            self.node.commit.handle_flushed(target, Err("simulated EIO".into()));
            return;
        }
        let made_durable: Vec<Stored> = self.disk.volatile.drain(..covered).collect();
        self.disk.durable.extend(made_durable);
        self.node.commit.handle_flushed(target, Ok(()));
    }

    /// Answers every pending request whose ticket a flush decided, as the produce futures do.
    fn acknowledge(&mut self) {
        let pending = std::mem::take(&mut self.node.pending);
        for (r, admission, ticket) in pending {
            match self.node.commit.coverage(ticket) {
                Coverage::Pending => self.node.pending.push((r, admission, ticket)),
                Coverage::Failed(_) => self.refuse(r),
                Coverage::Covered => match admission {
                    Admission::New { base_offset, .. } => {
                        self.node.watermarks.handle_durable(base_offset + u64::from(r.records));
                        self.ack(r, Some(base_offset));
                    }
                    Admission::Duplicate { base_offset } => self.ack(r, base_offset),
                    _ => self.refuse(r),
                },
            }
        }
    }

    fn ack(&mut self, r: Request, base: Option<u64>) {
        let producer = &mut self.producers[(r.producer - 1) as usize];
        if r.session != producer.session {
            return; // the connection it came on is gone
        }
        let stored = self.disk.durable.iter().find(|b| b.producer == r.producer && b.sequence == r.sequence);
        let stored = stored.unwrap_or_else(|| panic!("acknowledged {r:?} is not durable"));
        if let Some(base) = base {
            assert_eq!(base, stored.base, "the ack names where the batch is");
        }
        producer.unacked.retain(|u| u.sequence != r.sequence);
        producer.acked.insert(r.sequence, stored.base);
    }

    /// An error reply: the producer resends everything unacknowledged, in order, on a new
    /// session (as the client does after an error or a lost connection).
    fn refuse(&mut self, r: Request) {
        let producer = &mut self.producers[(r.producer - 1) as usize];
        if r.session != producer.session {
            return;
        }
        self.resend(r.producer as usize - 1);
    }

    fn resend(&mut self, p: usize) {
        let producer = &mut self.producers[p];
        producer.session += 1;
        let session = producer.session;
        for u in producer.unacked.iter_mut() {
            u.session = session;
        }
        let resent: Vec<Request> = producer.unacked.iter().copied().collect();
        self.node.incoming.retain(|r| r.producer != resent.first().map_or(0, |f| f.producer));
        self.node.incoming.extend(resent);
    }

    /// A consumer reads from a random offset: it may only see durable records.
    fn fetch(&mut self) {
        let visible = self.node.watermarks.visible();
        let asked = self.rng.below(visible + 2);
        match self.node.watermarks.fetch_start(asked, 0, true) {
            Err(_) => assert!(asked > visible),
            Ok(start) => {
                let served: Vec<&Stored> = self
                    .disk
                    .all()
                    .filter(|b| b.base + u64::from(b.records) > start.start && b.base < visible)
                    .collect();
                for b in served {
                    assert!(
                        self.disk.durable.contains(b),
                        "served {b:?} below visible {visible}, but it is not durable"
                    );
                }
            }
        }
    }

    /// Power cut: everything not flushed is gone, and so is the process's state.
    fn crash(&mut self) {
        self.crashes += 1;
        self.disk.volatile.clear();
        self.node = Node::open(&self.disk);
        for p in 0..self.producers.len() {
            self.resend(p);
        }
    }

    fn check(&self) {
        let stored: Vec<&Stored> = self.disk.all().collect();
        let mut end = 0;
        for b in &stored {
            assert_eq!(b.base, end, "offsets are contiguous");
            end = b.base + u64::from(b.records);
        }
        assert_eq!(end, self.node.log.ends().next_offset, "the core's log end is the disk's");
        let durable_end = Disk::end(&self.disk.durable);
        assert!(self.node.watermarks.visible() <= durable_end, "visible never passes durable");
        for producer in &self.producers {
            let seqs: Vec<u64> =
                stored.iter().filter(|b| b.producer == producer.id).map(|b| b.sequence).collect();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "producer {} stored exactly once, in order", producer.id);
            for (seq, base) in &producer.acked {
                let found =
                    self.disk.durable.iter().find(|b| b.producer == producer.id && b.sequence == *seq);
                assert_eq!(
                    found.map(|b| b.base),
                    Some(*base),
                    "acknowledged seq {seq} of {} is durable",
                    producer.id
                );
            }
        }
    }

    fn done(&self) -> bool {
        self.producers.iter().all(|p| p.acked.len() as u64 == BATCHES_PER_PRODUCER)
    }

    /// Faults stop; the system must then get every batch acknowledged. A failed flush needs a
    /// restart to recover, as the broker does.
    fn drain(&mut self) {
        self.faults = false;
        if self.node.commit.flushed().is_err() {
            self.crash();
        }
        for _ in 0..DRAIN_STEPS_MAX {
            if self.done() {
                return;
            }
            self.step();
        }
        panic!("not every batch was acknowledged after the faults stopped");
    }
}

fn run(seed: u64) -> u32 {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step();
    }
    sim.drain();
    sim.check();
    sim.crashes
}

/// Proves, over many seeded interleavings with crashes, failed writes and a failed flush, that
/// every acknowledged batch is durable at the offset its ack named, each producer's batches
/// are stored exactly once and in order, offsets stay contiguous, consumers see only durable
/// records, and once faults stop every batch gets acknowledged.
#[test]
fn seeded_interleavings_keep_every_acknowledged_batch() {
    let seeds: Vec<u64> = match std::env::var("SILT_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SILT_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SILT_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
            (0..n).collect()
        }
    };
    let mut crashes = 0;
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        match result {
            Ok(c) => crashes += c,
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!(
                    "seed {seed} failed: {}; replay: SILT_SIM_SEED={seed} cargo test -p silt-core --test simulation",
                    message.unwrap_or_default()
                );
            }
        }
    }
    assert!(crashes > 0, "the campaign must include crashes to mean anything");
}
