//! A replicated partition's state machine: committed entries become batches of the partition's
//! log, stamped with their offsets and append time exactly as on every other replica (the
//! decisions are silt-core's, from the same entries in the same order), so producer dedup and
//! the batches' checksums are replicated with the log. Consumers see a batch once it is applied,
//! which is after its entry committed.

use std::io;
use std::sync::Arc;

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use silt_storage::{Appended, StorageError};

use super::types::{decode, encode, Command, Failure, Reply, Types};
use crate::partitions::PartitionHandle;

/// How far a partition's log got: the last entry applied and the membership then. Stored with
/// the batches (`Partition::append_applied`).
type Applied = (Option<LogIdOf<Types>>, StoredMembershipOf<Types>);

/// An append waiting to be applied with the next ones: batch, append time, who to answer.
type Pending = (Vec<u8>, i64, Option<openraft::storage::ApplyResponder<Types>>);

pub struct PartitionMachine {
    handle: Arc<PartitionHandle>,
    applied: Applied,
}

impl PartitionMachine {
    pub fn open(handle: Arc<PartitionHandle>) -> io::Result<PartitionMachine> {
        let applied = match handle.log.applied().map_err(|e| io::Error::other(e.to_string()))? {
            Some(bytes) => decode(&bytes)?,
            None => (None, StoredMembership::default()),
        };
        Ok(PartitionMachine { handle, applied })
    }

    /// Applies appends gathered from consecutive entries in one transaction, and answers them.
    fn flush_appends(&mut self, pending: &mut Vec<Pending>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let marker = encode(&self.applied)?;
        let times: Vec<i64> = pending.iter().map(|p| p.1).collect();
        let mut batches: Vec<&mut [u8]> = pending.iter_mut().map(|p| p.0.as_mut_slice()).collect();
        let results = self.handle.log.append_applied(&mut batches, &times, &marker);
        drop(batches);
        for ((_, _, responder), result) in pending.drain(..).zip(results) {
            let reply = match result {
                Ok(Appended::New { base_offset }) => Reply::Appended { base_offset, duplicate: false },
                Ok(Appended::Duplicate { base_offset }) => {
                    Reply::Appended { base_offset: base_offset.unwrap_or(u64::MAX), duplicate: true }
                }
                Err(e) if e.is_io() => return Err(io::Error::other(e.to_string())),
                Err(e) => Reply::Failed { failure: failure(&e), message: e.to_string() },
            };
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        let end = self.handle.log.high_watermark();
        self.handle.written(end);
        self.handle.durable(end);
        Ok(())
    }
}

fn failure(e: &StorageError) -> Failure {
    match e {
        StorageError::OutOfOrderSequence { .. } => Failure::OutOfOrderSequence,
        StorageError::InvalidBatch { .. } => Failure::InvalidBatch,
        _ => Failure::Storage,
    }
}

impl RaftStateMachine<Types> for PartitionMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<Applied, io::Error> {
        Ok(self.applied.clone())
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        let mut pending = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                self.flush_appends(&mut pending)?;
            }
            self.applied.0 = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(Command::Append { batch, time_ms }) => {
                    pending.push((batch, time_ms, responder))
                }
                EntryPayload::Normal(Command::Meta(_)) => {
                    if let Some(r) = responder {
                        r.send(Reply::Failed {
                            failure: Failure::InvalidRequest,
                            message: "a metadata change in a partition's group".into(),
                        });
                    }
                }
                EntryPayload::Membership(m) => {
                    self.applied.1 = StoredMembership::new(Some(entry.log_id), m);
                    let marker = encode(&self.applied)?;
                    self.handle.log.set_applied(&marker).map_err(|e| io::Error::other(e.to_string()))?;
                    if let Some(r) = responder {
                        r.send(Reply::None);
                    }
                }
                EntryPayload::Blank => {
                    if let Some(r) = responder {
                        r.send(Reply::None);
                    }
                }
            }
        }
        self.flush_appends(&mut pending)
    }

    crate::cluster::replica::no_snapshots!();
}

/// The groups' snapshot policy is `Never`: a replica catches up from the log, which is kept.
pub struct NoSnapshots;

/// The snapshot methods of a state machine whose group takes none (`NoSnapshots`).
macro_rules! no_snapshots {
    () => {
        async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
            $crate::cluster::replica::NoSnapshots
        }

        async fn install_snapshot(
            &mut self,
            _meta: &openraft::type_config::alias::SnapshotMetaOf<$crate::cluster::types::Types>,
            _snapshot: Vec<u8>,
        ) -> Result<(), std::io::Error> {
            Err(std::io::Error::other("Silt's groups keep their whole Raft log and take no snapshots yet"))
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<
            Option<openraft::type_config::alias::SnapshotOf<$crate::cluster::types::Types, Vec<u8>>>,
            std::io::Error,
        > {
            Ok(None)
        }
    };
}
pub(crate) use no_snapshots;

impl RaftSnapshotBuilder<Types> for NoSnapshots {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Vec<u8>>, io::Error> {
        Err(io::Error::other("this group takes no snapshots"))
    }
}
