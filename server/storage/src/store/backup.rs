//! Copies of the metadata database beside it, so that a metadata database sled cannot open
//! (a flipped bit in a structure it trusts, a lost file) does not stop the broker.
//!
//! Two files in the store's directory, each written whole to a temporary name, synced and
//! renamed over the last: [`META_FILE`], every tree of the metadata database but those of the
//! other file and the compiled artefacts (a cache), written by the first flush after any
//! change to them (topics, processors, modules, devices, users, tokens, rights: all rare); and
//! [`OFFSETS_FILE`], the group offsets and the producer ids the broker assigned, written by a
//! flush at most once a second while they change. A file
//! is `MAGIC`, a version, the time it was written, the entry count, the entries (tree name,
//! key, value, each with its length) and a CRC32C of everything before it; reading checks
//! every length against what is left and the checksum first, and never panics.
//!
//! When the metadata database does not open, or lost a topic its copy names ([`lost_topics`]),
//! [`restore`] moves sled's files aside (under
//! `damaged/`), makes a new database from the copies and says what it did: changes after the
//! last copy are lost (group offsets and producer ids: up to a second's worth; nothing of the
//! topics' records, which live in their own databases).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::layout::{StoredTopic, ARTEFACTS_TREE, AUTH_TREE_PREFIX, GROUP_OFFSETS_TREE, TOPICS_TREE};
use std::sync::atomic::Ordering;

use crate::StorageError;

/// The copy of every metadata tree but those of [`OFFSETS_FILE`] and the artefacts.
pub(super) const META_FILE: &str = "metadata.backup";
/// The copy of the group offsets and the producer ids the broker assigned.
pub(super) const OFFSETS_FILE: &str = "offsets.backup";
const MAGIC: &[u8; 8] = b"SILTMETA";
const VERSION: u32 = 1;
/// Largest copy read: far above the metadata of any broker (64 module versions of at most
/// 16 MiB each would be 1 GiB, so modules beyond that stop being restorable, not readable).
const FILE_BYTES_MAX: u64 = 2 << 30;

/// Which trees a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Meta,
    Offsets,
}

impl Part {
    fn file(self) -> &'static str {
        match self {
            Part::Meta => META_FILE,
            Part::Offsets => OFFSETS_FILE,
        }
    }

    fn holds(self, tree: &[u8]) -> bool {
        let frequent =
            tree == GROUP_OFFSETS_TREE || tree == format!("{AUTH_TREE_PREFIX}producers").as_bytes();
        match self {
            Part::Meta => !frequent && tree != ARTEFACTS_TREE,
            Part::Offsets => frequent,
        }
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRestore {
    /// Why the metadata database did not open.
    pub reason: String,
    /// Where sled's files of it went.
    pub moved_to: PathBuf,
    /// When the copy of the metadata was written (Unix ms).
    pub meta_written_ms: u64,
    /// When the copy of the group offsets was written, when there was one.
    pub offsets_written_ms: Option<u64>,
}

/// Writes the copy `part` of `db` into `dir`, durably.
pub(super) fn write(db: &sled::Db, dir: &Path, part: Part) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::Sled(sled::Error::Io(e));
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&silt_wire::time::unix_ms(std::time::SystemTime::now()).to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for name in db.tree_names() {
        if !part.holds(&name) {
            continue;
        }
        for item in db.open_tree(&name)?.iter() {
            let (key, value) = item?;
            for field in [&name[..], &key[..], &value[..]] {
                out.extend_from_slice(&(field.len() as u32).to_le_bytes());
                out.extend_from_slice(field);
            }
            count += 1;
        }
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = dir.join(part.file());
    let partial = dir.join(format!("{}.partial", part.file()));
    let mut file = std::fs::File::create(&partial).map_err(io)?;
    file.write_all(&out).map_err(io)?;
    file.sync_data().map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)?;
    if part == Part::Meta {
        // So a crash cannot bring the last copy back once this change was acknowledged.
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// A copy as read: when it was written, and its entries (tree, key, value).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetadataCopy {
    pub written_ms: u64,
    pub entries: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

/// Reads and checks the copy `part` in `dir`.
pub(super) fn read(dir: &Path, part: Part) -> Result<MetadataCopy, String> {
    let path = dir.join(part.file());
    let len = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if len > FILE_BYTES_MAX {
        return Err(format!("{} is {len} bytes, more than a copy may be", path.display()));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode_metadata_copy(&bytes).map_err(|why| format!("{}: {why}", path.display()))
}

/// Decodes the bytes of a copy's file, checking its checksum and every length; never panics.
pub fn decode_metadata_copy(bytes: &[u8]) -> Result<MetadataCopy, &'static str> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else { return Err("shorter than a copy") };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("it fails its checksum");
    }
    let mut rest = body;
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        let (head, tail) = rest.split_at_checked(n).ok_or("an entry runs past the end")?;
        rest = tail;
        Ok(head)
    };
    if take(8)? != MAGIC || take(4)? != VERSION.to_le_bytes() {
        return Err("not a metadata copy of this version");
    }
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let written_ms = word(take(8)?);
    let count = word(take(8)?);
    let mut entries = Vec::new();
    for _ in 0..count {
        let mut field = || -> Result<Vec<u8>, &'static str> {
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            Ok(take(len)?.to_vec())
        };
        entries.push((field()?, field()?, field()?));
    }
    if !rest.is_empty() {
        return Err("bytes follow the last entry");
    }
    Ok(MetadataCopy { written_ms, entries })
}

/// What the metadata database in `dir` lost that its copy has, when it lost something: sled
/// recovers a damaged log as a shorter one without a word, but a topic the copy names, whose
/// database is still there, and which `topics` (read from sled) lacks, was lost. (A topic
/// deleted in a crash just before the copy was rewritten is back, as if the unacknowledged
/// delete had not happened.)
pub(super) fn lost_topics(dir: &Path, topics: &[StoredTopic]) -> Option<String> {
    let copy = read(dir, Part::Meta).ok()?;
    let lost: Vec<String> = copy
        .entries
        .iter()
        .filter(|(tree, _, _)| tree == TOPICS_TREE)
        .filter_map(|(_, _, value)| StoredTopic::decode(value).ok())
        .filter(|t| !topics.iter().any(|s| s.name == t.name && s.incarnation == t.incarnation))
        .filter(|t| dir.join(super::TOPICS_DIR).join(super::topic_dir_name(&t.name, t.incarnation)).is_dir())
        .map(|t| t.name)
        .collect();
    (!lost.is_empty())
        .then(|| format!("the metadata database lacks topics its copy names: {}", lost.join(", ")))
}

/// Makes a new metadata database in `dir` from the copies, after the one there did not open
/// (`reason`): sled's files go under `damaged/metadata.{ms}` first. Fails, changing nothing,
/// when there is no sound copy of the metadata.
pub(super) fn restore(
    dir: &Path,
    cache_bytes: u64,
    reason: &str,
) -> Result<(sled::Db, MetadataRestore), StorageError> {
    let meta = read(dir, Part::Meta).map_err(|why| StorageError::CorruptMeta {
        what: "the metadata database".into(),
        reason: format!("{reason}; and there is no sound copy of it to restore ({why})"),
    })?;
    let offsets = read(dir, Part::Offsets).ok();
    let io = |e: std::io::Error| StorageError::Sled(sled::Error::Io(e));
    let moved_to = dir
        .join(super::DAMAGED_DIR)
        .join(format!("metadata.{}", silt_wire::time::unix_ms(std::time::SystemTime::now())));
    std::fs::create_dir_all(&moved_to).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "conf" || name == "db" || name == "blobs" || name.starts_with("snap.") {
            std::fs::rename(entry.path(), moved_to.join(&*name)).map_err(io)?;
        }
    }
    let db = super::open_db(dir, cache_bytes)?;
    for (tree, key, value) in meta.entries.iter().chain(offsets.iter().flat_map(|o| o.entries.iter())) {
        db.open_tree(tree)?.insert(&key[..], &value[..])?;
    }
    let handle = std::fs::File::open(dir).map_err(io)?;
    super::flush_durably(&db, &handle)?;
    tracing::error!(store = %dir.display(), reason, moved_to = %moved_to.display(),
        meta_written_ms = meta.written_ms, offsets_written_ms = ?offsets.as_ref().map(|o| o.written_ms),
        "the metadata database does not open: restored it from its copies; changes after them are lost");
    let restore = MetadataRestore {
        reason: reason.to_owned(),
        moved_to,
        meta_written_ms: meta.written_ms,
        offsets_written_ms: offsets.map(|o| o.written_ms),
    };
    Ok((db, restore))
}

impl super::Store {
    /// What opening did when the metadata database did not open: restored it from its
    /// copies, and what those copies were.
    pub fn metadata_restored(&self) -> Option<&MetadataRestore> {
        self.restored.as_ref()
    }

    /// Writes the copies of the metadata that changed since the last (`store::backup`): the
    /// group offsets at most once a second. Called after each durable flush.
    pub(super) fn copy_metadata(&self) -> Result<(), StorageError> {
        let meta = self.meta_changed.swap(false, Ordering::AcqRel);
        let now = silt_wire::time::unix_ms(std::time::SystemTime::now()).max(0) as u64;
        let due = now >= self.offsets_copied_ms.load(Ordering::Relaxed) + super::OFFSETS_COPY_MS;
        let offsets = due && self.offsets_changed.swap(false, Ordering::AcqRel);
        if !meta && !offsets {
            return Ok(());
        }
        let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        let copied = (|| {
            if meta {
                write(&self.db, &self.root, Part::Meta)?;
            }
            if offsets {
                self.offsets_copied_ms.store(now, Ordering::Relaxed);
                write(&self.db, &self.root, Part::Offsets)?;
            }
            Ok(())
        })();
        if copied.is_err() {
            // The next flush tries again.
            self.meta_changed.fetch_or(meta, Ordering::AcqRel);
            self.offsets_changed.fetch_or(offsets, Ordering::AcqRel);
        }
        copied
    }

    /// [`Store::copy_metadata`] where the change it copies is durable already: a copy that
    /// fails (a full disk, say) is logged, once until one succeeds again, and retried by the
    /// next flush, and fails nothing else.
    pub(super) fn copy_metadata_or_warn(&self) {
        match self.copy_metadata() {
            Ok(()) => self.copy_failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.copy_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "writing the copies of the metadata database failed; the next flush tries again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(entries: &[(&[u8], &[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&7u64.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (t, k, v) in entries {
            for f in [t, k, v] {
                out.extend_from_slice(&(f.len() as u32).to_le_bytes());
                out.extend_from_slice(f);
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn copies_decode_and_damage_is_refused() {
        let good = encoded(&[(b"silt/topics", b"t", b"meta"), (b"silt/devices", b"d", b"")]);
        let copy = decode_metadata_copy(&good).unwrap();
        assert_eq!(copy.written_ms, 7);
        assert_eq!(copy.entries[1], (b"silt/devices".to_vec(), b"d".to_vec(), Vec::new()));
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            assert!(decode_metadata_copy(&bad).is_err(), "a flip at {at} passed");
        }
        for cut in 0..good.len() {
            assert!(decode_metadata_copy(&good[..cut]).is_err(), "a copy cut to {cut} bytes passed");
        }
    }

    proptest::proptest! {
        /// Whatever follows a sound header, under a matching checksum, decodes or is refused.
        #[test]
        fn decoding_any_body_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut bytes = encoded(&[])[..20].to_vec();
            bytes.extend_from_slice(&(body.len() as u64 / 8).to_le_bytes());
            bytes.extend_from_slice(&body);
            let crc = crc32c::crc32c(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let _ = decode_metadata_copy(&bytes);
        }
    }
}
