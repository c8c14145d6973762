//! The acknowledgement ledger: how far each partition's log was durable when the broker
//! acknowledged it, kept apart from sled so that damage sled cannot see is still found.
//!
//! sled 0.34 treats a damaged message of its log as the end of the log on recovery, so a torn
//! or flipped write makes everything after it vanish without an error. The broker therefore
//! writes, after every successful flush and before the acknowledgements it releases, each
//! partition's durable end to this file (appended, then `fdatasync`); on the next start the
//! store's recovered ends are checked against it ([`crate::Store::verify`]): a partition whose
//! log ends before its ledger entry lost acknowledged records, and says exactly which.
//!
//! The file is a sequence of records: `len: u16` (of the payload, at most
//! [`PAYLOAD_BYTES_MAX`]), `crc: u32` (CRC-32C of the payload), then the payload: `kind: u8`
//! (1: a partition's end, 2: a topic forgotten), `incarnation: u64`, `partition: u32`,
//! `end: u64`, and the topic's name (the rest). All little-endian. A record that does not
//! check out at the end of the file is a write cut short by a crash (never acknowledged); one
//! in the middle is damage, reported, and skipped up to the next record that checks out. The
//! file is rewritten as one record per partition when it grows ([`Ledger::compact`]).
//!
//! The file is kept [`PADDING_BYTES`] longer than its records, in zeros written when it is
//! made: a record is written over them in place, so its `fdatasync` changes no file size and
//! needs no journal commit of the filesystem's metadata. No record ends in a zero byte (the
//! topic name is last), so trailing zeros are always the padding.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::StorageError;

/// Longest payload: the fixed fields and a topic name of up to 200 bytes.
pub const PAYLOAD_BYTES_MAX: usize = 21 + 200;
/// Bytes before the payload: its length and checksum.
const HEADER_BYTES: usize = 6;
/// The fixed fields of a payload, before the topic name.
const FIXED_BYTES: usize = 21;
const KIND_END: u8 = 1;
const KIND_FORGET: u8 = 2;
/// Records the file may hold beyond one per partition before it is rewritten.
const SLACK_RECORDS: u64 = 65_536;
/// Zeros kept after the records, written over by the next ones.
pub const PADDING_BYTES: usize = 4 << 20;

/// One partition of one incarnation of a topic (a topic deleted and created again is another).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub topic: String,
    pub incarnation: u64,
    pub partition: u32,
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The partition's log was durable up to `end` (exclusive) when acknowledged.
    End { key: PartitionKey, end: u64 },
    /// The topic's incarnation was deleted: its ends no longer apply.
    Forget { topic: String, incarnation: u64 },
}

/// What reading the file found besides its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub entries: Vec<Entry>,
    /// Damaged byte ranges in the middle of the file, skipped, each with why.
    pub damaged: Vec<(u64, u64, String)>,
    /// Bytes at the end that were a write cut short.
    pub torn_tail: u64,
}

/// Encodes one entry as a record.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let (kind, topic, incarnation, partition, end) = match entry {
        Entry::End { key, end } => (KIND_END, &key.topic, key.incarnation, key.partition, *end),
        Entry::Forget { topic, incarnation } => (KIND_FORGET, topic, *incarnation, 0, 0),
    };
    let mut payload = Vec::with_capacity(FIXED_BYTES + topic.len());
    payload.push(kind);
    payload.extend_from_slice(&incarnation.to_le_bytes());
    payload.extend_from_slice(&partition.to_le_bytes());
    payload.extend_from_slice(&end.to_le_bytes());
    payload.extend_from_slice(topic.as_bytes());
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The record at the start of `bytes`, with its length; `Err` says why it is not one, and
/// whether more bytes would be needed to tell (a record cut short).
fn decode_one(bytes: &[u8]) -> Result<(Entry, usize), (bool, String)> {
    if bytes.len() < HEADER_BYTES {
        return Err((true, "a record header cut short".into()));
    }
    let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    if !(FIXED_BYTES..=PAYLOAD_BYTES_MAX).contains(&len) {
        return Err((false, format!("a record of {len} bytes")));
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Err((true, "a record cut short".into()));
    };
    if crc32c::crc32c(payload).to_le_bytes() != bytes[2..6] {
        return Err((false, "a record fails its checksum".into()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
    let incarnation = u64_at(1);
    let partition = u32::from_le_bytes(payload[9..13].try_into().expect("4 bytes"));
    let end = u64_at(13);
    let topic = std::str::from_utf8(&payload[FIXED_BYTES..])
        .map_err(|_| (false, "a topic name that is not UTF-8".to_string()))?
        .to_string();
    if silt_wire::message::check_topic_name(&topic).is_err() {
        return Err((false, format!("an invalid topic name {topic:?}")));
    }
    let entry = match payload[0] {
        KIND_END => Entry::End { key: PartitionKey { topic, incarnation, partition }, end },
        KIND_FORGET => Entry::Forget { topic, incarnation },
        kind => return Err((false, format!("a record of kind {kind}"))),
    };
    Ok((entry, HEADER_BYTES + len))
}

/// Reads every record of a ledger file's bytes. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Reading {
    // The padding: trailing zeros, never the end of a record.
    let bytes = &bytes[..bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1)];
    let mut reading = Reading::default();
    let mut at = 0;
    while at < bytes.len() {
        match decode_one(&bytes[at..]) {
            Ok((entry, used)) => {
                reading.entries.push(entry);
                at += used;
            }
            Err((short, why)) => {
                // The next position where a whole record checks out, if any.
                let next = (at + 1..bytes.len()).find(|&p| decode_one(&bytes[p..]).is_ok());
                match next {
                    None if short || reading_is_tail(bytes, at) => {
                        reading.torn_tail = (bytes.len() - at) as u64;
                        break;
                    }
                    None => {
                        reading.damaged.push((at as u64, bytes.len() as u64, why));
                        break;
                    }
                    Some(next) => {
                        reading.damaged.push((at as u64, next as u64, why));
                        at = next;
                    }
                }
            }
        }
    }
    reading
}

/// Whether the bad bytes from `at` are one record that reaches the end of the file: the last
/// write, cut short by a crash (its tail never reached the disk).
fn reading_is_tail(bytes: &[u8], at: usize) -> bool {
    let rest = &bytes[at..];
    rest.len() >= 2 && HEADER_BYTES + usize::from(u16::from_le_bytes([rest[0], rest[1]])) >= rest.len()
}

/// The ends the entries leave: the highest end of each partition of a topic not forgotten.
pub fn ends(entries: &[Entry]) -> BTreeMap<PartitionKey, u64> {
    let mut ends: BTreeMap<PartitionKey, u64> = BTreeMap::new();
    for e in entries {
        match e {
            Entry::End { key, end } => {
                let slot = ends.entry(key.clone()).or_insert(0);
                *slot = (*slot).max(*end);
            }
            Entry::Forget { topic, incarnation } => {
                ends.retain(|k, _| !(k.topic == *topic && k.incarnation == *incarnation));
            }
        }
    }
    ends
}

/// The ledger file of a broker, open for appending.
pub struct Ledger {
    path: PathBuf,
    /// Zeros kept after the records ([`PADDING_BYTES`]).
    padding: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    ends: BTreeMap<PartitionKey, u64>,
    /// Records in the file.
    records: u64,
    /// Where the next record goes: the end of the records, the start of the padding.
    at: u64,
    /// The file's length.
    len: u64,
}

impl Ledger {
    /// Reads the ledger at `path` (creating it when absent) and opens it for appending; the
    /// reading is returned so the caller can report damage. Does not rewrite the file.
    pub fn open(path: &Path) -> Result<(Ledger, Reading), StorageError> {
        Ledger::open_padded(path, PADDING_BYTES)
    }

    fn open_padded(path: &Path, padding: usize) -> Result<(Ledger, Reading), StorageError> {
        let reading = read(path)?;
        let file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let at: u64 = reading.entries.iter().map(|e| encode(e).len() as u64).sum();
        let ends = ends(&reading.entries);
        let inner = Inner { file, ends, records: reading.entries.len() as u64, at, len };
        let ledger = Ledger { path: path.to_owned(), padding, inner: Mutex::new(inner) };
        if reading.torn_tail > 0 || !reading.damaged.is_empty() || len < at + padding as u64 / 2 {
            // Writing after damage would leave it in the middle, and a file without its
            // padding would grow with every record: start over clean.
            ledger.compact()?;
        }
        Ok((ledger, reading))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("a ledger writer panicked")
    }

    /// Each partition's recorded end.
    pub fn ends(&self) -> BTreeMap<PartitionKey, u64> {
        self.lock().ends.clone()
    }

    /// Records the ends that moved forward, durably (`fdatasync`) before it returns.
    pub fn record(&self, ends: impl IntoIterator<Item = (PartitionKey, u64)>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let mut bytes = Vec::new();
        let mut moved = Vec::new();
        for (key, end) in ends {
            if inner.ends.get(&key).is_some_and(|&known| known >= end) {
                continue;
            }
            bytes.extend_from_slice(&encode(&Entry::End { key: key.clone(), end }));
            moved.push((key, end));
        }
        if moved.is_empty() {
            return Ok(());
        }
        if inner.at + bytes.len() as u64 > inner.len {
            drop(inner);
            self.compact()?;
            inner = self.lock();
        }
        write_at(&mut inner, &bytes)?;
        inner.records += moved.len() as u64;
        inner.ends.extend(moved);
        let rewrite = inner.records > inner.ends.len() as u64 * 2 + SLACK_RECORDS;
        drop(inner);
        if rewrite {
            self.compact()?;
        }
        Ok(())
    }

    /// Forgets a topic's incarnation (before it is deleted), durably.
    pub fn forget(&self, topic: &str, incarnation: u64) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let entry = Entry::Forget { topic: topic.to_owned(), incarnation };
        let bytes = encode(&entry);
        if inner.at + bytes.len() as u64 > inner.len {
            drop(inner);
            self.compact()?;
            inner = self.lock();
        }
        write_at(&mut inner, &bytes)?;
        inner.records += 1;
        inner.ends.retain(|k, _| !(k.topic == topic && k.incarnation == incarnation));
        Ok(())
    }

    /// Rewrites the file as one record per partition: a new file, synced, renamed over the
    /// old one, and the directory synced.
    pub fn compact(&self) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let tmp = self.path.with_extension("tmp");
        let mut bytes = Vec::new();
        for (key, end) in &inner.ends {
            bytes.extend_from_slice(&encode(&Entry::End { key: key.clone(), end: *end }));
        }
        let at = bytes.len() as u64;
        bytes.resize(bytes.len() + self.padding, 0);
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        inner.file = OpenOptions::new().read(true).write(true).open(&self.path).map_err(io)?;
        inner.records = inner.ends.len() as u64;
        inner.at = at;
        inner.len = bytes.len() as u64;
        Ok(())
    }
}

/// Writes `bytes` over the padding at the end of the records, durably.
fn write_at(inner: &mut Inner, bytes: &[u8]) -> Result<(), StorageError> {
    use std::os::unix::fs::FileExt;
    inner.file.write_all_at(bytes, inner.at).map_err(io)?;
    inner.file.sync_data().map_err(io)?;
    inner.at += bytes.len() as u64;
    Ok(())
}

/// Reads the ledger file at `path`; an absent file reads as empty.
pub fn read(path: &Path) -> Result<Reading, StorageError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    Ok(decode(&bytes))
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Sled(sled::Error::Io(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: u32) -> PartitionKey {
        PartitionKey { topic: topic.into(), incarnation: 7, partition }
    }

    fn end(topic: &str, partition: u32, end: u64) -> Entry {
        Entry::End { key: key(topic, partition), end }
    }

    #[test]
    fn records_round_trip_and_the_highest_end_wins() {
        let entries = vec![
            end("a", 0, 10),
            end("a", 1, 5),
            end("a", 0, 30),
            Entry::Forget { topic: "b".into(), incarnation: 7 },
            end("b", 0, 4),
        ];
        let bytes: Vec<u8> = entries.iter().flat_map(encode).collect();
        let reading = decode(&bytes);
        assert_eq!(reading, Reading { entries: entries.clone(), ..Reading::default() });
        let ends = ends(&reading.entries);
        assert_eq!(ends.get(&key("a", 0)), Some(&30));
        assert_eq!(ends.get(&key("b", 0)), Some(&4), "an end after the forget counts");
        let forgotten = ends_after(&[end("b", 0, 4), Entry::Forget { topic: "b".into(), incarnation: 7 }]);
        assert!(forgotten.is_empty());
    }

    fn ends_after(entries: &[Entry]) -> BTreeMap<PartitionKey, u64> {
        ends(entries)
    }

    /// A write cut short at the end is a torn tail; a flipped bit in the middle is damage,
    /// reported, and the records after it still count.
    #[test]
    fn torn_tails_and_damage_are_told_apart() {
        let records: Vec<Vec<u8>> = (0..4).map(|i| encode(&end("t", i, 100 + u64::from(i)))).collect();
        let bytes: Vec<u8> = records.concat();
        for cut in 1..records[3].len() {
            let reading = decode(&bytes[..bytes.len() - cut]);
            assert_eq!(reading.entries.len(), 3, "cut {cut}");
            // Zeros at the end of what was written count as padding, not as the torn record.
            assert!(reading.torn_tail as usize <= records[3].len() - cut, "cut {cut}");
            assert!(reading.damaged.is_empty());
        }
        let second = records[0].len();
        for bit in 0..records[1].len() * 8 {
            let mut b = bytes.clone();
            b[second + bit / 8] ^= 1 << (bit % 8);
            let reading = decode(&b);
            assert_eq!(reading.damaged.len(), 1, "bit {bit}: {reading:?}");
            assert_eq!(reading.entries.len(), 3, "bit {bit}");
            assert!(!reading.entries.contains(&end("t", 1, 101)), "bit {bit}");
        }
    }

    #[test]
    fn a_ledger_keeps_ends_across_opens_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let (ledger, reading) = Ledger::open(&path).unwrap();
        assert_eq!(reading, Reading::default());
        ledger.record([(key("a", 0), 5), (key("a", 1), 9)]).unwrap();
        ledger.record([(key("a", 0), 3)]).unwrap();
        ledger.forget("z", 1).unwrap();
        drop(ledger);
        let (ledger, reading) = Ledger::open(&path).unwrap();
        assert_eq!(reading.entries.len(), 3, "an end that did not move is not written");
        assert_eq!(ledger.ends().get(&key("a", 0)), Some(&5));
        ledger.compact().unwrap();
        ledger.record([(key("a", 1), 12)]).unwrap();
        drop(ledger);
        let (ledger, reading) = Ledger::open(&path).unwrap();
        assert_eq!(reading.entries.len(), 3);
        assert_eq!(ledger.ends().get(&key("a", 1)), Some(&12));
        // A torn last record (written over the padding, where the next one goes) is dropped,
        // and the file is clean again afterwards.
        let records: u64 = read(&path).unwrap().entries.iter().map(|e| encode(e).len() as u64).sum();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &encode(&end("a", 0, 99))[..10], records).unwrap();
        drop((f, ledger));
        let (ledger, reading) = Ledger::open(&path).unwrap();
        assert!((1..=10).contains(&reading.torn_tail), "{}", reading.torn_tail);
        assert_eq!(ledger.ends().get(&key("a", 0)), Some(&5));
        drop(ledger);
        assert_eq!(read(&path).unwrap().torn_tail, 0);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(len >= PADDING_BYTES, "the file keeps its padding ({len} bytes)");
    }

    /// Records written over the padding one by one read back, and a full padding makes the
    /// file be rewritten with fresh padding rather than grow.
    #[test]
    fn records_fill_the_padding_and_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let padding = 4096;
        let (ledger, _) = Ledger::open_padded(&path, padding).unwrap();
        let one = encode(&end("t", 0, 1)).len();
        let n = 3 * padding / one;
        for i in 1..=n as u64 {
            ledger.record([(key("t", 0), i)]).unwrap();
        }
        drop(ledger);
        let reading = read(&path).unwrap();
        assert!(reading.damaged.is_empty() && reading.torn_tail == 0);
        assert_eq!(ends(&reading.entries).get(&key("t", 0)), Some(&(n as u64)));
        assert!(std::fs::metadata(&path).unwrap().len() as usize <= 2 * padding);
    }
}
