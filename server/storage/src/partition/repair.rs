//! Repair of a damaged partition: which acknowledged offsets it can no longer serve, and, once
//! an operator accepts their loss, a log that steps over them.
//!
//! Accepting a loss removes the damaged batches, records their offsets as an accepted gap
//! (`records::StoredGaps`, in the stats tree), and rewrites the stats entry and the timestamp
//! index from the batches that remain. Offsets are never reused: a lost tail stays taken, and
//! appends continue after the end the acknowledgement ledger recorded.

use super::*;

/// A range of offsets a partition cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// What [`Partition::repair`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// Damaged ranges not accepted before this repair, in offset order.
    pub damaged: Vec<Damage>,
    /// Whether they are now accepted (and the partition serves again).
    pub accepted: bool,
    /// Damaged batches removed from the store.
    pub batches_removed: u64,
    /// Every accepted loss of the partition after the repair.
    pub gaps: Vec<(u64, u64)>,
}

impl Repair {
    /// Offsets in the damaged ranges.
    pub fn records(&self) -> u64 {
        self.damaged.iter().map(|d| d.to - d.from).sum()
    }
}

/// One pass over the stored batches.
#[derive(Default)]
struct Survey {
    /// Base offset and maximum event time of each batch that checks out, in order.
    kept: Vec<(u64, i64)>,
    stats: Stats,
    /// Keys of batches that fail their checks.
    bad_keys: Vec<IVec>,
    damaged: Vec<Damage>,
}

impl Partition {
    /// Finds every range of offsets below `acked_end` (the end the acknowledgement ledger
    /// recorded; 0 when unknown) that the partition cannot serve: batches failing their
    /// checks, offsets missing between batches or after the last. With `accept`, accepts
    /// their loss as described in the module documentation and recovers the partition from
    /// the rewritten trees; it also rebuilds the stats entry and timestamp index of a
    /// partition whose recovery failed on them. The caller flushes the store afterwards.
    pub(crate) fn repair(&self, acked_end: u64, accept: bool) -> Result<Repair, StorageError> {
        let mut writer = self.writer.lock().expect("a partition writer panicked");
        self.check_live()?;
        let mut gaps = self.load_gaps()?;
        let survey = self.survey(&gaps, acked_end)?;
        let mut repair = Repair { damaged: survey.damaged, ..Repair::default() };
        if !accept {
            repair.gaps = gaps.ranges;
            return Ok(repair);
        }
        for d in &repair.damaged {
            gaps.add(d.from, d.to);
        }
        if !gaps.well_formed() {
            return Err(self.corrupt_meta("accepted losses", "more ranges than a partition keeps"));
        }
        let sealed = crate::records::seal(&gaps);
        let trees = (&self.batches, &self.stats);
        trees
            .transaction(|(batches, stats)| {
                for key in &survey.bad_keys {
                    batches.remove(key)?;
                }
                stats.insert(STATS_KEY, &survey.stats.encode()[..])?;
                stats.insert(GAPS_KEY, &sealed[..])?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(sled_error)?;
        // The index again from the batches kept, as appends would have written it. A crash
        // before it is whole leaves fewer entries (time lookups start later); repairing again
        // rebuilds it.
        self.times.clear()?;
        let mut running: Option<i64> = None;
        for &(base, max_ts) in &survey.kept {
            if running.is_none_or(|r| max_ts > r) {
                running = Some(max_ts);
                self.times.insert(time_key(max_ts), &offset_key(base)[..])?;
            }
        }
        self.recover_locked(&mut writer)?;
        self.remove_unneeded_files(&writer)?;
        repair.accepted = true;
        repair.batches_removed = survey.bad_keys.len() as u64;
        repair.gaps = gaps.ranges;
        Ok(repair)
    }

    fn survey(&self, gaps: &StoredGaps, acked_end: u64) -> Result<Survey, StorageError> {
        let mut survey = Survey::default();
        // Where the next batch must begin, and the start of a run of bad batches with why.
        let mut expected: Option<u64> = None;
        let mut bad_run: Option<(u64, String)> = None;
        let mut bad_end = 0u64;
        for item in self.batches.iter() {
            let (key, stored) = item?;
            // What a sound batch tells: base offset, end, max event time, stored length.
            let checked = self.whole(&key, stored).and_then(|value| {
                let view = self.checked(&key, &value)?;
                match expected {
                    Some(want) if view.base_offset() < want => Err(StorageError::Corrupt {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: view.base_offset(),
                        reason: format!("it overlaps the batch before, which ends at {want}"),
                    }),
                    _ => Ok((view.base_offset(), view.next_offset(), view.max_timestamp_ms(), value.len())),
                }
            });
            match checked {
                Ok((base, next_offset, max_timestamp_ms, len)) => {
                    if let Some((from, reason)) = bad_run.take() {
                        survey.damaged.push(Damage { from, to: base, reason });
                    } else if let Some(want) = expected.filter(|&w| w < base && !gaps.covers(w, base)) {
                        let reason = "missing from the store".to_string();
                        survey.damaged.push(Damage { from: want, to: base, reason });
                    }
                    survey.kept.push((base, max_timestamp_ms));
                    survey.stats.batch_count += 1;
                    survey.stats.size_bytes += len as u64;
                    expected = Some(next_offset);
                }
                Err(e) => {
                    let at = decode_offset_key(&key);
                    bad_end = bad_end.max(at.map_or(0, |o| o.saturating_add(1)));
                    let from = expected.or(at).unwrap_or(0);
                    bad_run.get_or_insert((from, format!("a stored batch fails its checks: {e}")));
                    survey.bad_keys.push(key);
                }
            }
        }
        let kept_end = expected.unwrap_or(0);
        let known_end = gaps.end();
        if let Some((from, reason)) = bad_run {
            let to = acked_end.max(bad_end).max(kept_end);
            survey.damaged.push(Damage { from, to, reason });
        } else if acked_end > kept_end.max(known_end) {
            let from = kept_end.max(known_end);
            let reason =
                format!("the log ends at offset {from}; the acknowledgement ledger says {acked_end}");
            survey.damaged.push(Damage { from, to: acked_end, reason });
        }
        Ok(survey)
    }
}
