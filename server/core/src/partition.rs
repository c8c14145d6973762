//! What an append does to a partition, decided without touching storage.
//!
//! The storage shell reads each batch's header into a [`BatchMeta`], makes sure the
//! [`PartitionLog`] knows every producer involved ([`PartitionLog::unknown_producers`],
//! [`PartitionLog::learn_producer`]), asks for a [`Plan`], writes what the plan says in one
//! transaction and, only if that succeeded, [`PartitionLog::apply`]s it.

use std::collections::HashMap;

/// Producer id 0 is anonymous: its batches are never deduplicated.
pub const ANONYMOUS_PRODUCER: u64 = 0;

/// The header fields of one batch that an append decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub records: u32,
    pub producer_id: u64,
    pub sequence: u64,
    pub max_timestamp_ms: i64,
    pub bytes: u64,
}

/// The last batch a producer appended to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub last_sequence: u64,
    pub base_offset: u64,
}

/// What becomes of one batch of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Written at `base_offset`. `index_time` is the timestamp-index key to add with it: set
    /// when the batch raised the partition's running maximum event time.
    New { base_offset: u64, index_time: Option<i64> },
    /// Its sequence is at or below the producer's last: nothing is written. `base_offset` is
    /// where the original went when it was the producer's last batch.
    Duplicate { base_offset: Option<u64> },
    /// Its sequence skips ahead of the producer's next one.
    OutOfOrder { producer_id: u64, expected: u64, got: u64 },
    /// Its offsets would pass `u64::MAX`.
    OffsetOverflow { next_offset: u64 },
    /// The shell did not load this producer's entry first (a bug in the shell; refused
    /// rather than taken for a first batch, which could store a duplicate).
    ProducerNotLoaded { producer_id: u64 },
}

/// The counters of a partition's stored log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogEnds {
    /// Offset of the first retained record.
    pub log_start: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    pub size_bytes: u64,
    pub batch_count: u64,
    /// The largest event time of any batch appended: the last timestamp-index key.
    pub max_timestamp_ms: Option<i64>,
}

/// The decisions for one append call, and the state they lead to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One per batch, in order.
    pub admissions: Vec<Admission>,
    /// The producer entries to write with the batches.
    pub producers: Vec<(u64, ProducerEntry)>,
    /// The counters after the write.
    pub after: LogEnds,
}

impl Plan {
    /// True when every batch is written.
    pub fn all_new(&self) -> bool {
        self.admissions.iter().all(|a| matches!(a, Admission::New { .. }))
    }

    /// True when the plan writes at least one batch.
    pub fn writes(&self) -> bool {
        self.admissions.iter().any(|a| matches!(a, Admission::New { .. }))
    }
}

/// A partition's log as its appends see it.
#[derive(Clone, Debug, Default)]
pub struct PartitionLog {
    ends: LogEnds,
    /// Producers loaded since open: `None` for an id the partition has never seen. Filled on
    /// first use, so opening a partition does not read every producer ever seen.
    producers: HashMap<u64, Option<ProducerEntry>>,
}

impl PartitionLog {
    /// The state recovered from storage on open.
    pub fn recovered(ends: LogEnds) -> PartitionLog {
        assert!(
            ends.log_start <= ends.next_offset,
            "log start {} past its end {}",
            ends.log_start,
            ends.next_offset
        );
        PartitionLog { ends, producers: HashMap::new() }
    }

    pub fn ends(&self) -> LogEnds {
        self.ends
    }

    /// The producers of `batches` whose entries the shell must load before [`Self::plan`].
    pub fn unknown_producers(&self, batches: &[BatchMeta]) -> Vec<u64> {
        let mut ids: Vec<u64> = batches
            .iter()
            .map(|b| b.producer_id)
            .filter(|&id| id != ANONYMOUS_PRODUCER && !self.producers.contains_key(&id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The entry of a producer loaded or appended since open (`None` also for one never seen).
    pub fn producer(&self, producer_id: u64) -> Option<ProducerEntry> {
        self.producers.get(&producer_id).copied().flatten()
    }

    /// Records a producer's stored entry (`None`: never seen here).
    pub fn learn_producer(&mut self, producer_id: u64, entry: Option<ProducerEntry>) {
        self.producers.entry(producer_id).or_insert(entry);
    }

    /// Decides each batch in order, against the state including the batches before it.
    pub fn plan(&self, batches: &[BatchMeta]) -> Plan {
        let mut after = self.ends;
        let mut producers: Vec<(u64, ProducerEntry)> = Vec::new();
        let mut admissions = Vec::with_capacity(batches.len());
        for b in batches {
            let admission = self.admit(b, &after, &producers);
            if let Admission::New { base_offset, index_time } = admission {
                if b.producer_id != ANONYMOUS_PRODUCER {
                    let entry = ProducerEntry { last_sequence: b.sequence, base_offset };
                    match producers.iter_mut().find(|(id, _)| *id == b.producer_id) {
                        Some(slot) => slot.1 = entry,
                        None => producers.push((b.producer_id, entry)),
                    }
                }
                after.next_offset = base_offset + u64::from(b.records);
                after.size_bytes += b.bytes;
                after.batch_count += 1;
                if index_time.is_some() {
                    after.max_timestamp_ms = index_time;
                }
            }
            admissions.push(admission);
        }
        Plan { admissions, producers, after }
    }

    fn admit(&self, b: &BatchMeta, after: &LogEnds, staged: &[(u64, ProducerEntry)]) -> Admission {
        if b.producer_id != ANONYMOUS_PRODUCER {
            let last = match staged.iter().find(|(id, _)| *id == b.producer_id) {
                Some((_, entry)) => Some(*entry),
                None => match self.producers.get(&b.producer_id) {
                    Some(known) => *known,
                    None => return Admission::ProducerNotLoaded { producer_id: b.producer_id },
                },
            };
            if let Some(last) = last {
                if b.sequence <= last.last_sequence {
                    let base_offset = (b.sequence == last.last_sequence).then_some(last.base_offset);
                    return Admission::Duplicate { base_offset };
                }
                // No overflow: sequence > last_sequence, so last_sequence < u64::MAX.
                let expected = last.last_sequence + 1;
                if b.sequence != expected {
                    return Admission::OutOfOrder { producer_id: b.producer_id, expected, got: b.sequence };
                }
            }
        }
        let base_offset = after.next_offset;
        if base_offset.checked_add(u64::from(b.records)).is_none() {
            return Admission::OffsetOverflow { next_offset: base_offset };
        }
        // The index gets an entry only when the running maximum grows, so its keys are
        // strictly increasing and each points at the first batch that reached that maximum.
        let index_time = match after.max_timestamp_ms {
            Some(running) if running >= b.max_timestamp_ms => None,
            _ => Some(b.max_timestamp_ms),
        };
        Admission::New { base_offset, index_time }
    }

    /// Takes on a plan whose write succeeded. Plans must be applied in the order they were
    /// made, each made against the state the previous one left.
    pub fn apply(&mut self, plan: Plan) {
        assert!(plan.after.next_offset >= self.ends.next_offset, "an append never moves the log end back");
        assert_eq!(plan.after.log_start, self.ends.log_start, "appends never move the log start");
        for (id, entry) in plan.producers {
            self.producers.insert(id, Some(entry));
        }
        self.ends = plan.after;
    }

    /// Takes on a retention step that removed batches up to `log_start`, `bytes` and `batches`
    /// of them.
    pub fn retained(&mut self, log_start: u64, batches: u64, bytes: u64) {
        assert!(
            log_start >= self.ends.log_start && log_start <= self.ends.next_offset,
            "retention stays in the log"
        );
        assert!(batches < self.ends.batch_count || (batches == 0), "retention keeps the newest batch");
        assert!(bytes <= self.ends.size_bytes, "retention removes stored bytes only");
        self.ends.log_start = log_start;
        self.ends.batch_count -= batches;
        self.ends.size_bytes -= bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(producer_id: u64, sequence: u64, records: u32, ts: i64) -> BatchMeta {
        BatchMeta { records, producer_id, sequence, max_timestamp_ms: ts, bytes: 100 }
    }

    fn log_with(producers: &[(u64, Option<ProducerEntry>)]) -> PartitionLog {
        let mut log = PartitionLog::recovered(LogEnds::default());
        for (id, e) in producers {
            log.learn_producer(*id, *e);
        }
        log
    }

    /// Proves a new producer's first batch is taken whatever its sequence, and the next
    /// batches must follow it one by one.
    #[test]
    fn sequences_follow_the_first_batch() {
        let mut log = log_with(&[(7, None)]);
        let plan = log.plan(&[meta(7, 40, 10, 5), meta(7, 41, 5, 6), meta(7, 43, 1, 7)]);
        assert_eq!(plan.admissions[0], Admission::New { base_offset: 0, index_time: Some(5) });
        assert_eq!(plan.admissions[1], Admission::New { base_offset: 10, index_time: Some(6) });
        assert_eq!(plan.admissions[2], Admission::OutOfOrder { producer_id: 7, expected: 42, got: 43 });
        assert_eq!(plan.after.next_offset, 15);
        assert_eq!(plan.producers, vec![(7, ProducerEntry { last_sequence: 41, base_offset: 10 })]);
        log.apply(plan);
        let again = log.plan(&[meta(7, 41, 5, 6), meta(7, 40, 10, 5)]);
        assert_eq!(again.admissions[0], Admission::Duplicate { base_offset: Some(10) });
        assert_eq!(again.admissions[1], Admission::Duplicate { base_offset: None });
        assert!(!again.writes());
    }

    /// Proves anonymous batches are never deduplicated and need no producer entry.
    #[test]
    fn anonymous_batches_are_always_new() {
        let log = log_with(&[]);
        let plan = log.plan(&[meta(0, 0, 1, 1), meta(0, 0, 1, 1)]);
        assert!(plan.all_new());
        assert!(plan.producers.is_empty());
        assert!(log.unknown_producers(&[meta(0, 0, 1, 1)]).is_empty());
    }

    /// Proves a producer not loaded first is refused, never taken for a new one.
    #[test]
    fn unloaded_producers_are_refused() {
        let log = log_with(&[]);
        assert_eq!(log.unknown_producers(&[meta(3, 1, 1, 1), meta(3, 2, 1, 1)]), vec![3]);
        assert_eq!(
            log.plan(&[meta(3, 1, 1, 1)]).admissions[0],
            Admission::ProducerNotLoaded { producer_id: 3 }
        );
    }

    /// Proves the time index gets a key only when the running maximum grows.
    #[test]
    fn index_times_only_grow() {
        let log = log_with(&[]);
        let plan = log.plan(&[meta(0, 0, 1, 10), meta(0, 0, 1, 9), meta(0, 0, 1, 10), meta(0, 0, 1, 11)]);
        let times: Vec<Option<i64>> = plan
            .admissions
            .iter()
            .map(|a| match a {
                Admission::New { index_time, .. } => *index_time,
                _ => panic!("all new"),
            })
            .collect();
        assert_eq!(times, vec![Some(10), None, None, Some(11)]);
        assert_eq!(plan.after.max_timestamp_ms, Some(11));
    }

    /// Proves an append that would pass the largest offset is refused, and nothing moves.
    #[test]
    fn offsets_never_overflow() {
        let log = PartitionLog::recovered(LogEnds {
            next_offset: u64::MAX - 1,
            log_start: 0,
            ..LogEnds::default()
        });
        let plan = log.plan(&[meta(0, 0, 2, 1)]);
        assert_eq!(plan.admissions[0], Admission::OffsetOverflow { next_offset: u64::MAX - 1 });
        assert_eq!(plan.after, log.ends());
    }

    /// Proves a plan changes nothing until applied (a failed write leaves the state as it was).
    #[test]
    fn plans_change_nothing_until_applied() {
        let log = log_with(&[(1, None)]);
        let before = log.ends();
        let plan = log.plan(&[meta(1, 1, 4, 1)]);
        assert_eq!(log.ends(), before);
        assert_eq!(log.plan(&[meta(1, 1, 4, 1)]), plan, "planning again decides the same");
    }
}
