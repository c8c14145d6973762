//! openraft's log storage over `silt_storage::raft_log`: a group's entries, vote and committed
//! id on disk, and appends reported durable only after a flush that covers them (one flush for
//! every group's appends waiting, as produces share one in `durability.rs`).

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftLogReader};
use silt_storage::raft_log::{GroupLog, RaftLogs};
use tokio::sync::Notify;

use super::types::{decode, encode, Types};

fn io_error(e: silt_storage::StorageError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Flushes the Raft logs' database for every append waiting, many at a time.
pub struct LogFlusher {
    logs: Arc<RaftLogs>,
    waiting: Mutex<Vec<IOFlushed<Types>>>,
    wake: Notify,
    /// Under `fsync = always` appends wait for a flush; otherwise they are reported at once
    /// (and flushed by sled's own timer), as the broker's produces are.
    flush: bool,
}

impl LogFlusher {
    pub fn new(logs: Arc<RaftLogs>, flush: bool) -> Arc<LogFlusher> {
        Arc::new(LogFlusher { logs, waiting: Mutex::new(Vec::new()), wake: Notify::new(), flush })
    }

    fn submit(&self, done: IOFlushed<Types>) {
        if !self.flush {
            done.io_completed(Ok(()));
            return;
        }
        self.waiting.lock().expect("log flusher lock").push(done);
        self.wake.notify_one();
    }

    /// Runs until the process ends: each round flushes once for all the appends waiting.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let round = std::mem::take(&mut *self.waiting.lock().expect("log flusher lock"));
            if round.is_empty() {
                continue;
            }
            let logs = self.logs.clone();
            let flushed = tokio::task::spawn_blocking(move || logs.flush()).await;
            let outcome = match flushed {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            for done in round {
                done.io_completed(outcome.clone().map_err(io::Error::other));
            }
        }
    }
}

/// One group's log storage; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    log: GroupLog,
    flusher: Arc<LogFlusher>,
    /// The last purged id, kept in memory after reading it once.
    purged: Arc<Mutex<Option<LogIdOf<Types>>>>,
}

impl LogStore {
    pub fn open(logs: &RaftLogs, name: &str, flusher: Arc<LogFlusher>) -> io::Result<LogStore> {
        let log = logs.group(name).map_err(io_error)?;
        let purged = match log.get("purged").map_err(io_error)? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        Ok(LogStore { log, flusher, purged: Arc::new(Mutex::new(purged)) })
    }

    fn get_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        match self.log.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<Types>>, io::Error> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let log = self.log.clone();
        let entries = tokio::task::spawn_blocking(move || log.range(from, to))
            .await
            .map_err(io::Error::other)?
            .map_err(io_error)?;
        entries.iter().map(|(_, bytes)| decode(bytes)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Types>>, io::Error> {
        self.get_value("vote")
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, io::Error> {
        let purged = *self.purged.lock().expect("purged lock");
        let last = match self.log.last().map_err(io_error)? {
            Some((_, bytes)) => Some(decode::<EntryOf<Types>>(&bytes)?.log_id),
            None => purged,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Types>) -> Result<(), io::Error> {
        self.log.put("vote", &encode(vote)?).map_err(io_error)?;
        // A vote must survive a crash before it is acted on.
        let logs = self.flusher.logs.clone();
        tokio::task::spawn_blocking(move || logs.flush()).await.map_err(io::Error::other)?.map_err(io_error)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        self.log.put("committed", &encode(&committed)?).map_err(io_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<Types>>, io::Error> {
        Ok(self.get_value::<Option<LogIdOf<Types>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Types>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<Types>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.into_iter().map(|e| Ok((e.log_id.index, encode(&e)?))).collect::<io::Result<_>>()?;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.append(&encoded))
            .await
            .map_err(io::Error::other)?
            .map_err(io_error)?;
        self.flusher.submit(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.log.truncate_from(from).map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogIdOf<Types>) -> Result<(), io::Error> {
        self.log.put("purged", &encode(&log_id)?).map_err(io_error)?;
        self.log.purge_to(log_id.index).map_err(io_error)?;
        *self.purged.lock().expect("purged lock") = Some(log_id);
        Ok(())
    }
}
