//! Retention of one partition: whole batches, oldest first, in bounded steps.

use super::*;

impl Partition {
    /// Drops whole batches, oldest first, that are older than `retention_ms` (by append time) or
    /// that make the partition exceed `retention_bytes`; never the newest batch.
    ///
    /// Stops at the first batch that is neither expired nor needed to get under
    /// `retention_bytes`, so a batch appended with an earlier append time than its predecessor
    /// is kept until those before it go. Runs in steps of at most 256 batches / 32 MiB, each
    /// one sled transaction (batches, their index entries and the stats together); appends to
    /// this partition wait for the whole pass.
    pub fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<Retained, StorageError> {
        let retained = self.retain(now_ms, retention_ms, retention_bytes);
        crate::release_deferred();
        retained
    }

    fn retain(
        &self,
        now_ms: i64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<Retained, StorageError> {
        let mut writer = self.lock_writer()?;
        self.files.follow_retention(retention_ms, retention_bytes);
        let policy = RetentionPolicy::at(now_ms, retention_ms, retention_bytes);
        let mut total = Retained::default();
        // Each step removes at least one batch or ends the pass, so the batch count bounds it.
        let steps_max = self.batch_count.load(Ordering::Relaxed);
        for _ in 0..=steps_max {
            let step = self.retention_step(&mut writer, policy)?;
            if step.batches_removed == 0 {
                if total.batches_removed > 0 {
                    self.remove_unneeded_files(&writer)?;
                }
                return Ok(total);
            }
            total.batches_removed += step.batches_removed;
            total.bytes_removed += step.bytes_removed;
        }
        unreachable!("every retention step removes a batch, and there are only {steps_max}");
    }

    /// One transaction's worth of retention.
    fn retention_step(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        policy: RetentionPolicy,
    ) -> Result<Retained, StorageError> {
        let high_watermark = self.high_watermark();
        let mut stats = Stats { size_bytes: self.size_bytes(), batch_count: self.batch_count() };
        let mut victims: Vec<IVec> = Vec::new();
        let mut step_bytes = 0u64;
        let mut new_log_start = self.log_start();
        for item in self.batches.iter() {
            if victims.len() >= RETENTION_STEP_BATCHES_MAX || step_bytes >= RETENTION_STEP_BYTES_MAX {
                break;
            }
            let (key, stored) = item?;
            let value = self.whole(&key, stored)?;
            let view = self.checked(&key, &value)?;
            if stats.batch_count <= 1 && self.has_gaps.load(Ordering::Acquire) {
                // The newest batch, before an accepted loss at the end of the log: it stays,
                // as below.
                break;
            }
            if view.next_offset() >= high_watermark {
                // The newest batch stays, so the high watermark survives a restart.
                assert_eq!(stats.batch_count, 1, "the newest batch is the last one counted");
                break;
            }
            let oldest =
                OldestBatch { append_time_ms: view.append_time_ms(), next_offset: view.next_offset() };
            if !policy.removes(oldest, high_watermark, stats.size_bytes) {
                break;
            }
            let len = value.len() as u64;
            assert!(stats.batch_count > 1 && stats.size_bytes >= len, "stats count every stored batch");
            stats.batch_count -= 1;
            stats.size_bytes -= len;
            step_bytes += len;
            new_log_start = view.next_offset();
            victims.push(key);
        }
        if victims.is_empty() {
            return Ok(Retained::default());
        }

        // Index entries point at batches in offset order (keys and values both increase), so
        // the ones for removed batches are a prefix. The last of them still describes the
        // retained batches up to the next entry, so it moves to the new log start unless an
        // entry is already there.
        let mut stale_times: Vec<IVec> = Vec::new();
        let mut moved_time: Option<IVec> = None;
        for item in self.times.iter() {
            let (key, value) = item?;
            let base =
                decode_offset_key(&value).ok_or_else(|| self.corrupt_meta("timestamp index", "bad value"))?;
            if base >= new_log_start {
                if base == new_log_start {
                    moved_time = None;
                }
                break;
            }
            moved_time = Some(key.clone());
            stale_times.push(key);
            if stale_times.len() > victims.len() {
                // Each entry points at a distinct batch, so more entries than removed batches
                // means the index does not describe this log.
                return Err(self.corrupt_meta("timestamp index", "more entries than batches"));
            }
        }

        let new_start_key = offset_key(new_log_start);
        let trees = (&self.batches, &self.times, &self.stats);
        trees
            .transaction(|(batches, times, stats_tree)| {
                for key in &victims {
                    batches.remove(key)?;
                }
                for key in &stale_times {
                    times.remove(key)?;
                }
                if let Some(key) = &moved_time {
                    times.insert(key, &new_start_key[..])?;
                }
                stats_tree.insert(STATS_KEY, &stats.encode()[..])?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(sled_error)?;

        writer.log.retained(new_log_start, victims.len() as u64, step_bytes);
        self.size_bytes.store(stats.size_bytes, Ordering::Relaxed);
        self.batch_count.store(stats.batch_count, Ordering::Relaxed);
        self.log_start.store(new_log_start, Ordering::Release);
        Ok(Retained { batches_removed: victims.len() as u64, bytes_removed: step_bytes })
    }
}
