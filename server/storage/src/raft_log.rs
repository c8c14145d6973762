//! The logs of a broker's Raft groups (the cluster's metadata and each replicated partition),
//! in a sled database of their own (`DATA_DIR/raft`): per group, its entries by index and a few
//! values (vote, committed, purged). Entries and values are the broker's encoding, opaque
//! here; each is stored with a CRC-32C of its bytes and checked when read, so a flipped bit is
//! an error, never a different entry.

use std::ops::Bound;
use std::path::Path;

use sled::IVec;

use crate::StorageError;

/// Most bytes one stored entry may have: a largest batch and its entry's framing.
pub const ENTRY_BYTES_MAX: usize = silt_wire::batch::BATCH_BYTES_MAX + 4096;

/// The database of every group's log.
pub struct RaftLogs {
    db: sled::Db,
}

/// One group's log.
#[derive(Clone)]
pub struct GroupLog {
    entries: sled::Tree,
    values: sled::Tree,
    name: String,
}

impl RaftLogs {
    /// Opens (creating) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RaftLogs, StorageError> {
        let db = sled::Config::new().path(dir).cache_capacity(32 << 20).open()?;
        Ok(RaftLogs { db })
    }

    /// The log of the group called `name` (any bytes but `\0`; the broker names them).
    pub fn group(&self, name: &str) -> Result<GroupLog, StorageError> {
        Ok(GroupLog {
            entries: self.db.open_tree(format!("entries\0{name}"))?,
            values: self.db.open_tree(format!("values\0{name}"))?,
            name: name.to_string(),
        })
    }

    /// Makes every write so far durable (sled's flush writes and syncs its log).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

fn sealed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

impl GroupLog {
    fn unsealed(&self, what: &str, stored: &IVec) -> Result<Vec<u8>, StorageError> {
        let corrupt = |reason: &str| StorageError::CorruptMeta {
            what: format!("{what} of Raft group {}", self.name),
            reason: reason.to_string(),
        };
        if stored.len() < 4 || stored.len() > ENTRY_BYTES_MAX + 4 {
            return Err(corrupt("wrong length"));
        }
        let (crc, bytes) = stored.split_at(4);
        if crc32c::crc32c(bytes).to_le_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(bytes.to_vec())
    }

    /// Writes entries (index, bytes); an entry already at an index is replaced.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            if bytes.len() > ENTRY_BYTES_MAX {
                return Err(StorageError::CorruptMeta {
                    what: format!("entry {index} of Raft group {}", self.name),
                    reason: format!("{} bytes, more than {ENTRY_BYTES_MAX}", bytes.len()),
                });
            }
            batch.insert(&index.to_be_bytes()[..], sealed(bytes));
        }
        self.entries.apply_batch(batch)?;
        Ok(())
    }

    /// The entries with indexes in `from..to` (`to` excluded; `None`: to the end), in order.
    pub fn range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let end = match to {
            Some(to) => Bound::Excluded(to.to_be_bytes()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.entries.range((Bound::Included(from.to_be_bytes()), end)) {
            let (key, value) = item?;
            let index =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| StorageError::CorruptMeta {
                    what: format!("an entry key of Raft group {}", self.name),
                    reason: "not 8 bytes".into(),
                })?);
            out.push((index, self.unsealed(&format!("entry {index}"), &value)?));
        }
        Ok(out)
    }

    /// The last entry, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        match self.entries.last()? {
            Some((key, _)) => {
                let index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
                Ok(self.range(index, None)?.into_iter().next())
            }
            None => Ok(None),
        }
    }

    /// Removes the entries from `index` on.
    pub fn truncate_from(&self, index: u64) -> Result<(), StorageError> {
        let keys: Vec<IVec> = self.entries.range(index.to_be_bytes()..).keys().collect::<Result<_, _>>()?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.entries.apply_batch(batch)?;
        Ok(())
    }

    /// Removes the entries up to and including `index`.
    pub fn purge_to(&self, index: u64) -> Result<(), StorageError> {
        let keys: Vec<IVec> = self.entries.range(..=index.to_be_bytes()).keys().collect::<Result<_, _>>()?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.entries.apply_batch(batch)?;
        Ok(())
    }

    /// Stores a named value (vote, committed, purged).
    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.values.insert(key.as_bytes(), sealed(bytes))?;
        Ok(())
    }

    /// A named value, if stored.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.values.get(key.as_bytes())? {
            Some(v) => Ok(Some(self.unsealed(key, &v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_truncate_purge_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let logs = RaftLogs::open(dir.path()).unwrap();
        let g = logs.group("t/0").unwrap();
        g.append(&(1..=5).map(|i| (i, vec![i as u8; 3])).collect::<Vec<_>>()).unwrap();
        assert_eq!(g.range(2, Some(4)).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(g.last().unwrap().unwrap(), (5, vec![5; 3]));
        g.truncate_from(4).unwrap();
        g.purge_to(1).unwrap();
        assert_eq!(g.range(0, None).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
        g.put("vote", b"v").unwrap();
        assert_eq!(g.get("vote").unwrap().unwrap(), b"v");
        assert!(logs.group("other").unwrap().last().unwrap().is_none());
        // A flipped bit in a stored entry is an error.
        let mut stored = g.entries.get(2u64.to_be_bytes()).unwrap().unwrap().to_vec();
        stored[5] ^= 1;
        g.entries.insert(2u64.to_be_bytes(), stored).unwrap();
        assert!(g.range(2, Some(3)).is_err());
        logs.flush().unwrap();
    }
}
