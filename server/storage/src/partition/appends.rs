//! Appends that write something else in their transaction: a pipeline's checkpoint (its output
//! batches and how far it read commit together), and the last entry applied of a replicated
//! partition's group (the batches of committed entries and how far the log got).

use super::Partition;
use crate::layout::{checkpoint_key, APPLIED_KEY};
use crate::{Appended, StorageError};

/// The append time of the batches of one append: one for all, or one each.
#[derive(Clone, Copy)]
pub(super) enum Times<'a> {
    One(i64),
    Each(&'a [i64]),
}

/// What an append writes in its transaction besides the batches.
#[derive(Clone, Copy)]
pub(super) enum Extra<'a> {
    None,
    /// A pipeline's checkpoint (key, value) in the checkpoints tree: all or nothing, synced.
    Checkpoint(&'a [u8], &'a [u8]),
    /// The last replicated entry applied, in the stats tree.
    Applied(&'a [u8]),
}

impl Partition {
    /// Appends the batches of a replicated partition's committed entries, each stamped with
    /// its entry's append time (`times`, one per batch), and records `applied` (the caller's
    /// bytes: the last entry applied) in the same sled transaction, so that after a crash the
    /// log and the record of how far it got agree. Duplicates and refusals are results, as for
    /// [`Partition::append_many`]; every replica decides them alike from the same entries.
    pub fn append_applied(
        &self,
        batches: &mut [&mut [u8]],
        times: &[i64],
        applied: &[u8],
    ) -> Vec<Result<Appended, StorageError>> {
        assert_eq!(batches.len(), times.len(), "one append time per batch");
        let results = self.append_locked(batches, Times::Each(times), Extra::Applied(applied));
        crate::release_deferred();
        results
    }

    /// What [`Partition::append_applied`] last recorded, if anything.
    pub fn applied(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.stats.get(APPLIED_KEY)?.map(|v| v.to_vec()))
    }

    /// Records `applied` without appending (an entry that carried no batch).
    pub fn set_applied(&self, applied: &[u8]) -> Result<(), StorageError> {
        let _writer = self.lock_writer()?;
        self.stats.insert(APPLIED_KEY, applied)?;
        Ok(())
    }

    /// Appends a pipeline processor's output batches (none is fine) and, in the same sled
    /// transaction, stores its checkpoint for one input partition: after a crash either both
    /// are there or neither (docs/design.md, decision 4). The checkpoint bytes are the caller's.
    ///
    /// All or nothing: if any batch would be refused or is a duplicate, nothing is written
    /// and the first such result is returned as an error.
    pub fn append_checkpointed(
        &self,
        batches: &mut [&mut [u8]],
        append_time_ms: i64,
        processor: &str,
        input_partition: u32,
        checkpoint: &[u8],
    ) -> Result<Vec<u64>, StorageError> {
        let key = checkpoint_key(processor, input_partition);
        let results = self.append_inner(batches, append_time_ms, Some((&key, checkpoint)));
        let mut offsets = Vec::with_capacity(results.len());
        for result in results {
            match result? {
                Appended::New { base_offset } => offsets.push(base_offset),
                Appended::Duplicate { .. } => {
                    unreachable!("append_inner refuses duplicates when a checkpoint is given")
                }
            }
        }
        Ok(offsets)
    }

    /// A checkpointed append is all or nothing: hands back the first refusal, and nothing is
    /// written.
    pub(super) fn refuse_checkpointed(
        &self,
        results: Vec<Result<Appended, StorageError>>,
    ) -> Vec<Result<Appended, StorageError>> {
        let count = results.len();
        let first = results.into_iter().find(|r| !matches!(r, Ok(Appended::New { .. })));
        let refused = match first {
            Some(Err(e)) => e,
            _ => StorageError::InvalidBatch {
                topic: self.topic.clone(),
                partition: self.partition,
                reason: "a processor output batch repeated a producer sequence",
            },
        };
        let mut all = Vec::with_capacity(count);
        all.push(Err(refused));
        all.extend((1..count).map(|_| {
            Err(StorageError::InvalidBatch {
                topic: self.topic.clone(),
                partition: self.partition,
                reason: "another batch of the same checkpointed append was refused",
            })
        }));
        all
    }
}
