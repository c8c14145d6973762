//! The bridge's durable state, in one sled tree in its data dir: its producer id (given by the
//! broker and bound to the bridge's principal, so its batches cannot be passed off by anyone
//! else), each
//! device's last durable sequence, each topic partition's last producer sequence, and the
//! rounds of batches that were journaled but not yet confirmed by the broker.
//!
//! Exactly-once rests on two writes. Before a round's batches go to the broker, the round
//! (its batches with their producer sequences, and the device sequences they carry) is
//! written here and flushed. After the broker confirmed every batch durable, the round is
//! removed and the device sequences recorded, unflushed. A crash in between leaves the round
//! here; the next start sends its batches again under the same producer id and sequences, so
//! the broker stores each at most once (its producer dedup, docs/design.md, decision 3), and then
//! records the device sequences. A device is acked only after the broker's confirmation, so
//! whatever it was told is durable is either recorded here or in a journaled round.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use silt_storage::flush_durably;

const PRODUCER_KEY: &[u8] = b"i";
const DEVICE_PREFIX: u8 = b'd';
const SEQUENCE_PREFIX: u8 = b's';
const ROUND_PREFIX: u8 = b'r';
/// `p` + processor name -> `version u32 | CRC-32C u32 | state`: a bridge-tier processor's
/// state after the last journaled round (`bridge_tier`).
const STATE_PREFIX: u8 = b'p';

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("bridge journal: {0}")]
    Sled(#[from] sled::Error),
    #[error("bridge journal: {0}")]
    Storage(#[from] silt_storage::StorageError),
    #[error("bridge journal entry {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: &'static str },
    #[error("cannot open the bridge journal in {dir}: {source}")]
    Open { dir: String, source: std::io::Error },
}

/// One batch of a round: where it goes and its producer sequence there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundBatch {
    pub topic: String,
    pub partition: u32,
    pub sequence: u64,
    /// Shared with the produce requests that send it (and resend it on failure).
    pub bytes: bytes::Bytes,
}

/// What one appender round sends: batches, and the device sequences they make durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    pub id: u64,
    pub batches: Vec<RoundBatch>,
    pub devices: Vec<(String, u32)>,
}

pub struct Journal {
    db: sled::Db,
    tree: sled::Tree,
    dir: std::fs::File,
    /// 0 until the broker gave one.
    producer_id: AtomicU64,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let open_err = |source| JournalError::Open { dir: dir.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let db = sled::Config::new().path(dir.join("journal")).open()?;
        let tree = db.open_tree("bridge")?;
        let producer_id = match tree.get(PRODUCER_KEY)? {
            Some(v) => {
                u64::from_le_bytes(v.as_ref().try_into().map_err(|_| corrupt("producer id", "not 8 bytes"))?)
            }
            None => 0,
        };
        let dir = std::fs::File::open(dir).map_err(open_err)?;
        let journal = Journal { db, tree, dir, producer_id: AtomicU64::new(producer_id) };
        journal.flush()?;
        Ok(journal)
    }

    /// This bridge's producer id: every batch it sends carries it. `None` until the broker
    /// gave one ([`Self::set_producer_id`]).
    pub fn producer_id(&self) -> Option<u64> {
        Some(self.producer_id.load(Ordering::Acquire)).filter(|&id| id != 0)
    }

    /// Records the producer id the broker gave, durably.
    pub fn set_producer_id(&self, id: u64) -> Result<(), JournalError> {
        self.tree.insert(PRODUCER_KEY, &id.to_le_bytes())?;
        self.flush()?;
        self.producer_id.store(id, Ordering::Release);
        Ok(())
    }

    /// Every device's last durable sequence, as recorded (pending rounds not applied).
    pub fn devices(&self) -> Result<Vec<(String, u32)>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([DEVICE_PREFIX]) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            let seq = u32::from_le_bytes(
                v.as_ref().try_into().map_err(|_| corrupt(&id, "device sequence not 4 bytes"))?,
            );
            out.push((id, seq));
        }
        Ok(out)
    }

    /// The last producer sequence used per topic partition.
    pub fn sequences(&self) -> Result<HashMap<(String, u32), u64>, JournalError> {
        let mut out = HashMap::new();
        for item in self.tree.scan_prefix([SEQUENCE_PREFIX]) {
            let (k, v) = item?;
            let (topic, partition) =
                parse_sequence_key(&k).ok_or_else(|| corrupt("sequence key", "malformed"))?;
            let seq = u64::from_le_bytes(
                v.as_ref().try_into().map_err(|_| corrupt(&topic, "sequence not 8 bytes"))?,
            );
            out.insert((topic, partition), seq);
        }
        Ok(out)
    }

    /// Rounds journaled and not completed, oldest first.
    pub fn pending_rounds(&self) -> Result<Vec<Round>, JournalError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([ROUND_PREFIX]) {
            let (k, v) = item?;
            let id = u64::from_be_bytes(k[1..].try_into().map_err(|_| corrupt("round key", "not 9 bytes"))?);
            out.push(decode_round(id, &v)?);
        }
        Ok(out)
    }

    /// Journals `round` and makes it durable, with its topic partitions' new last sequences
    /// and the bridge-tier processors' `states` after it (`(name, version, state)`), in one
    /// write: a state is never ahead or behind the rounds journaled.
    pub fn begin(&self, round: &Round, states: &[(String, u32, Vec<u8>)]) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        batch.insert(round_key(round.id).to_vec(), encode_round(round));
        for b in &round.batches {
            batch.insert(sequence_key(&b.topic, b.partition), &b.sequence.to_le_bytes());
        }
        for (name, version, state) in states {
            let mut value = Vec::with_capacity(8 + state.len());
            value.extend_from_slice(&version.to_le_bytes());
            value.extend_from_slice(&silt_wire::crc::crc32c(state).to_le_bytes());
            value.extend_from_slice(state);
            batch.insert([&[STATE_PREFIX][..], name.as_bytes()].concat(), value);
        }
        self.tree.apply_batch(batch)?;
        self.flush()
    }

    /// The bridge-tier processors' states as last journaled, by name: `(version, state)`.
    pub fn processor_states(&self) -> Result<HashMap<String, (u32, Vec<u8>)>, JournalError> {
        let mut out = HashMap::new();
        for item in self.tree.scan_prefix([STATE_PREFIX]) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            let bad = |reason| corrupt(&format!("state of processor {name}"), reason);
            let (head, state) = v.split_at_checked(8).ok_or_else(|| bad("shorter than its header"))?;
            let version = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
            if silt_wire::crc::crc32c(state) != u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) {
                return Err(bad("its checksum does not match"));
            }
            out.insert(name, (version, state.to_vec()));
        }
        Ok(out)
    }

    /// Records a round's device sequences and drops the round. Not flushed: until a later
    /// flush, the journaled round stands for it.
    pub fn complete(&self, round: &Round) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        batch.remove(round_key(round.id).to_vec());
        let mut latest: HashMap<&str, u32> = HashMap::new();
        for (device, seq) in &round.devices {
            let e = latest.entry(device).or_insert(*seq);
            *e = (*e).max(*seq);
        }
        for (device, seq) in latest {
            batch.insert(device_key(device), &seq.to_le_bytes());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), JournalError> {
        flush_durably(&self.db, &self.dir)?;
        Ok(())
    }
}

fn corrupt(what: &str, reason: &'static str) -> JournalError {
    JournalError::Corrupt { what: what.to_string(), reason }
}

fn round_key(id: u64) -> [u8; 9] {
    let mut k = [ROUND_PREFIX; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn device_key(device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.len());
    k.push(DEVICE_PREFIX);
    k.extend_from_slice(device.as_bytes());
    k
}

fn sequence_key(topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + topic.len() + 5);
    k.push(SEQUENCE_PREFIX);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn parse_sequence_key(k: &[u8]) -> Option<(String, u32)> {
    let rest = k.strip_prefix(&[SEQUENCE_PREFIX])?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let partition = u32::from_be_bytes(rest.get(zero + 1..)?.try_into().ok()?);
    Some((String::from_utf8(rest[..zero].to_vec()).ok()?, partition))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_round(round: &Round) -> Vec<u8> {
    let size: usize = round.batches.iter().map(|b| b.bytes.len() + b.topic.len() + 20).sum::<usize>()
        + round.devices.iter().map(|(d, _)| d.len() + 8).sum::<usize>()
        + 8;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(round.batches.len() as u32).to_le_bytes());
    for b in &round.batches {
        put_bytes(&mut out, b.topic.as_bytes());
        out.extend_from_slice(&b.partition.to_le_bytes());
        out.extend_from_slice(&b.sequence.to_le_bytes());
        put_bytes(&mut out, &b.bytes);
    }
    out.extend_from_slice(&(round.devices.len() as u32).to_le_bytes());
    for (d, seq) in &round.devices {
        put_bytes(&mut out, d.as_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn decode_round(id: u64, bytes: &[u8]) -> Result<Round, JournalError> {
    let parse = || -> Option<Round> {
        let mut r = Reader(bytes);
        // Counts are capped by what the bytes can hold before anything is allocated.
        let n = r.u32()? as usize;
        let mut batches = Vec::with_capacity(n.min(bytes.len() / 20));
        for _ in 0..n {
            let topic = r.string()?;
            let partition = r.u32()?;
            let sequence = r.u64()?;
            let bytes = bytes::Bytes::copy_from_slice(r.bytes()?);
            batches.push(RoundBatch { topic, partition, sequence, bytes });
        }
        let n = r.u32()? as usize;
        let mut devices = Vec::with_capacity(n.min(bytes.len() / 8));
        for _ in 0..n {
            let d = r.string()?;
            devices.push((d, r.u32()?));
        }
        r.0.is_empty().then_some(Round { id, batches, devices })
    };
    parse().ok_or_else(|| corrupt(&format!("round {id}"), "does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begun_round_survives_reopen_and_complete_records_devices() {
        let dir = tempfile::tempdir().unwrap();
        let round = Round {
            id: 7,
            batches: vec![RoundBatch {
                topic: "sensors.temperature".into(),
                partition: 2,
                sequence: 9,
                bytes: vec![1, 2, 3].into(),
            }],
            devices: vec![("dev-1".into(), 4), ("dev-1".into(), 5), ("dev-2".into(), 1)],
        };
        {
            let j = Journal::open(dir.path()).unwrap();
            assert_eq!(j.producer_id(), None, "the broker gives the id");
            j.set_producer_id(42).unwrap();
            j.begin(&round, &[("ema".into(), 3, vec![1, 2, 3])]).unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.processor_states().unwrap()[&"ema".to_string()], (3, vec![1, 2, 3]));
        assert_eq!(j.producer_id(), Some(42));
        assert_eq!(j.pending_rounds().unwrap(), vec![round.clone()]);
        assert_eq!(j.sequences().unwrap()[&("sensors.temperature".to_string(), 2)], 9);
        j.complete(&round).unwrap();
        assert!(j.pending_rounds().unwrap().is_empty());
        assert_eq!(j.devices().unwrap(), vec![("dev-1".to_string(), 5), ("dev-2".to_string(), 1)]);
    }

    #[test]
    fn truncated_rounds_are_reported_not_panicked_on() {
        let round = Round {
            id: 1,
            batches: vec![RoundBatch {
                topic: "t".into(),
                partition: 0,
                sequence: 1,
                bytes: vec![9; 10].into(),
            }],
            devices: vec![],
        };
        let bytes = encode_round(&round);
        for n in 0..bytes.len() {
            assert!(decode_round(1, &bytes[..n]).is_err());
        }
        assert_eq!(decode_round(1, &bytes).unwrap(), round);
    }
}
