//! The on-disk layout: tree names, keys, and the encoding of the small control values stored
//! beside the batches.
//!
//! Batches themselves are stored as the stamped bytes of `silt_wire::batch`; nothing here
//! touches them. Every decoder returns `None` or an error on bytes it does not understand and
//! never panics, because a torn or corrupted sled value must surface as a `StorageError`.

use rkyv::{Archive, Deserialize, Serialize};

/// Key of the layout version in sled's default tree, so that a later layout can refuse (or
/// migrate) a store written by this one instead of misreading it.
pub(crate) const FORMAT_KEY: &[u8] = b"silt-storage/format";
/// Present once the broker keeps an acknowledgement ledger beside this store: a store that
/// has it, without the ledger file, lost that file.
pub(crate) const LEDGER_KEY: &[u8] = b"silt-storage/ledger";
/// The layout this crate writes: 3, a database per topic and the batches in files beside it
/// (`partition::files`). Layout 1 kept every partition in the metadata database;
/// `store::migrate` moves such a store when it opens. Layout 2 kept each batch in its tree,
/// where layout 3 keeps a locator; its batches read as they are.
pub(crate) const FORMAT_VERSION: u32 = 3;

/// Topic name -> [`StoredTopic`].
pub(crate) const TOPICS_TREE: &[u8] = b"silt/topics";
/// [`group_offset_key`] -> committed offset (u64 little-endian).
pub(crate) const GROUP_OFFSETS_TREE: &[u8] = b"silt/group-offsets";
/// Processor name -> the broker's encoded processor definition (opaque here).
pub(crate) const PROCESSORS_TREE: &[u8] = b"silt/processors";
/// Module hash (32 bytes) -> WebAssembly module bytes.
pub(crate) const MODULES_TREE: &[u8] = b"silt/modules";
/// Artefact key (module hash and engine compatibility, opaque here) -> compiled artefact.
pub(crate) const ARTEFACTS_TREE: &[u8] = b"silt/artefacts";
/// [`checkpoint_key`] -> a pipeline processor's checkpoint for one input partition (opaque
/// here: the broker encodes input offset, module version and state snapshot).
pub(crate) const CHECKPOINTS_TREE: &[u8] = b"silt/checkpoints";
/// Device id -> the broker's encoded device entry (key, created, revoked; opaque here).
pub(crate) const DEVICES_TREE: &[u8] = b"silt/devices";
/// Device id -> the broker's encoded device module versions (`records::devices`; opaque
/// here): the device tier's deployments.
pub(crate) const DEVICE_MODULES_TREE: &[u8] = b"silt/device-modules";
/// Processor name -> the broker's encoded bridge-tier processor (`records::processors`; opaque
/// here): processors the bridges run on device traffic.
pub(crate) const BRIDGE_PROCESSORS_TREE: &[u8] = b"silt/bridge-processors";
/// Principals and rights: `silt/auth/users`, `silt/auth/tokens`, `silt/auth/acls` (entries
/// opaque here; the broker encodes and checks them).
pub(crate) const AUTH_TREE_PREFIX: &str = "silt/auth/";
/// The key of a partition's [`Stats`] in its stats tree.
pub(crate) const STATS_KEY: &[u8] = b"stats";
/// The key of a partition's accepted losses in its stats tree (`records::StoredGaps`).
pub(crate) const GAPS_KEY: &[u8] = b"gaps";
/// In a replicated partition's stats tree: the last entry of its group applied to the log
/// (the broker's encoding), written in the transaction of the entry's batches.
pub(crate) const APPLIED_KEY: &[u8] = b"applied";

/// Longest topic name accepted: the protocol's limit (`silt_wire::message`), so the two cannot
/// drift apart.
pub const TOPIC_NAME_BYTES_MAX: usize = silt_wire::message::TOPIC_NAME_BYTES_MAX;
/// Longest consumer group name accepted; it is part of every group-offset key.
pub const GROUP_NAME_BYTES_MAX: usize = 255;
/// Most partitions one topic may have: the protocol's limit. Each partition is four sled trees
/// opened when the store opens, so this also bounds start-up work per topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = silt_wire::message::PARTITIONS_MAX;

/// The sled trees that make up one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionTree {
    /// Base offset (u64 big-endian) -> where the stamped batch bytes are
    /// (`partition::files::Locator`), or the bytes themselves when layout 2 stored them.
    Batches,
    /// [`time_key`] of the running maximum event time -> base offset (u64 big-endian) of the
    /// first batch at which the running maximum reached that value.
    Times,
    /// Producer id (u64 big-endian) -> [`ProducerEntry`].
    Producers,
    /// [`STATS_KEY`] -> [`Stats`]; [`GAPS_KEY`] -> the ranges of offsets whose loss an
    /// operator accepted, when there are any.
    Stats,
}

impl PartitionTree {
    pub(crate) const ALL: [PartitionTree; 4] =
        [PartitionTree::Batches, PartitionTree::Times, PartitionTree::Producers, PartitionTree::Stats];

    fn prefix(self) -> &'static str {
        match self {
            PartitionTree::Batches => "batches/",
            PartitionTree::Times => "times/",
            PartitionTree::Producers => "producers/",
            PartitionTree::Stats => "stats/",
        }
    }
}

/// Names the tree of one kind for a partition of one incarnation of a topic:
/// `{kind}/{topic}\0{incarnation:016x}\0{partition}`.
///
/// Topic names never contain `\0` (see `silt_wire::message::check_topic_name`), so the first `\0` ends the name
/// and the name is unambiguous. The incarnation (a sled-generated id, unique for the life of
/// the database) makes a re-created topic use fresh trees, so nothing of a deleted topic can
/// reappear in it even if dropping the old trees was interrupted by a crash.
pub(crate) fn partition_tree_name(
    kind: PartitionTree,
    topic: &str,
    incarnation: u64,
    partition: u32,
) -> Vec<u8> {
    format!("{}{topic}\0{incarnation:016x}\0{partition}", kind.prefix()).into_bytes()
}

/// The inverse of [`partition_tree_name`]; `None` for trees this crate did not name.
pub(crate) fn parse_partition_tree_name(name: &[u8]) -> Option<(PartitionTree, &str, u64, u32)> {
    let name = std::str::from_utf8(name).ok()?;
    let kind = PartitionTree::ALL.into_iter().find(|k| name.starts_with(k.prefix()))?;
    let rest = &name[kind.prefix().len()..];
    let mut parts = rest.split('\0');
    let topic = parts.next()?;
    let incarnation = parts.next()?;
    let partition = parts.next()?;
    if parts.next().is_some() || incarnation.len() != 16 {
        return None;
    }
    let incarnation = u64::from_str_radix(incarnation, 16).ok()?;
    let partition = partition.parse().ok()?;
    Some((kind, topic, incarnation, partition))
}

/// Checks a consumer group name: 1 to 255 bytes, anything else goes.
pub(crate) fn check_group_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > GROUP_NAME_BYTES_MAX {
        return Err("it is longer than 255 bytes");
    }
    Ok(())
}

/// Batch keys: big-endian so that sled's byte order is offset order.
pub(crate) fn offset_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

pub(crate) fn decode_offset_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Timestamp keys: big-endian with the sign bit flipped, so that byte order is numeric order
/// for negative times too.
pub(crate) fn time_key(timestamp_ms: i64) -> [u8; 8] {
    ((timestamp_ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn decode_time_key(key: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(key.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// What the store remembers of an idempotent producer on one partition. Fixed 16-byte
/// little-endian layout: it is written on every idempotent append, so it stays as small and
/// as cheap to encode as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub last_sequence: u64,
    pub base_offset: u64,
}

impl ProducerEntry {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.last_sequence.to_le_bytes());
        b[8..].copy_from_slice(&self.base_offset.to_le_bytes());
        b
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<ProducerEntry> {
        let b: &[u8; 16] = bytes.try_into().ok()?;
        Some(ProducerEntry {
            last_sequence: u64::from_le_bytes(b[..8].try_into().ok()?),
            base_offset: u64::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// Size and batch count of a partition, written in the same transaction as every append and
/// every retention step, so that opening a store never has to read all batches to learn them
/// (sled reads values along with keys, so a scan would read the whole log). Fixed 16-byte
/// little-endian layout for the same reason as [`ProducerEntry`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub size_bytes: u64,
    pub batch_count: u64,
}

impl Stats {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.size_bytes.to_le_bytes());
        b[8..].copy_from_slice(&self.batch_count.to_le_bytes());
        b
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Stats> {
        let b: &[u8; 16] = bytes.try_into().ok()?;
        Some(Stats {
            size_bytes: u64::from_le_bytes(b[..8].try_into().ok()?),
            batch_count: u64::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// Topic metadata as stored: the public `TopicMeta` plus the incarnation that names its trees.
/// rkyv, as for every control-plane structure (docs/design.md, decision 1), so that fields can be
/// added in a later layout version.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct StoredTopic {
    pub name: String,
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub created_ms: i64,
    pub incarnation: u64,
}

impl StoredTopic {
    pub(crate) fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("in-memory serialization cannot fail").to_vec()
    }

    /// Validates and decodes; the reason on failure.
    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredTopic, String> {
        // rkyv reads archived values in place and needs them aligned; sled values are not.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<StoredTopic, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }
}

/// `{topic}\0`: the prefix of every group-offset key of a topic (topic names hold no `\0`).
pub(crate) fn topic_group_prefix(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 1);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k
}

/// `{topic}\0{group length: u8}{group}`: the prefix of one group's offsets in a topic. The
/// length byte keeps group "a" from matching the keys of group "a\0…".
pub(crate) fn group_prefix(group: &str, topic: &str) -> Vec<u8> {
    assert!(group.len() <= GROUP_NAME_BYTES_MAX && !group.is_empty(), "group name was checked");
    let mut k = topic_group_prefix(topic);
    k.push(group.len() as u8);
    k.extend_from_slice(group.as_bytes());
    k
}

/// `{group prefix}{partition: u32 big-endian}`, so a prefix scan yields partitions in order.
pub(crate) fn group_offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = group_prefix(group, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// `(group, partition)` of a key that starts with `prefix` from [`topic_group_prefix`].
pub(crate) fn decode_topic_group_key(prefix: &[u8], key: &[u8]) -> Option<(String, u32)> {
    let tail = key.strip_prefix(prefix)?;
    let (&len, rest) = tail.split_first()?;
    let len = usize::from(len);
    if rest.len() != len + 4 {
        return None;
    }
    let group = std::str::from_utf8(&rest[..len]).ok()?.to_owned();
    Some((group, u32::from_be_bytes(rest[len..].try_into().ok()?)))
}

/// The partition of a key that starts with `prefix` from [`group_prefix`].
pub(crate) fn decode_group_offset_key(prefix: &[u8], key: &[u8]) -> Option<u32> {
    let tail = key.strip_prefix(prefix)?;
    Some(u32::from_be_bytes(tail.try_into().ok()?))
}

/// Processor names share the topic-name alphabet, so the first `\0` ends the name and the
/// checkpoints of one processor sort together, by partition.
pub(crate) fn checkpoint_key(processor: &str, partition: u32) -> Vec<u8> {
    let mut key = checkpoint_prefix(processor);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub(crate) fn checkpoint_prefix(processor: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(processor.len() + 5);
    key.extend_from_slice(processor.as_bytes());
    key.push(0);
    key
}

pub(crate) fn decode_u64_le(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,200}"
    }

    proptest! {
        /// Tree names decode back to exactly what named them, for any valid topic name.
        #[test]
        fn tree_names_round_trip(topic in topic_name(), inc in any::<u64>(), p in any::<u32>(), k in 0usize..4) {
            let kind = PartitionTree::ALL[k];
            let name = partition_tree_name(kind, &topic, inc, p);
            prop_assert_eq!(parse_partition_tree_name(&name), Some((kind, topic.as_str(), inc, p)));
        }

        /// Two different (kind, topic, incarnation, partition) never share a tree name.
        #[test]
        fn tree_names_are_unambiguous(a in topic_name(), b in topic_name(), ia in 0u64..3, ib in 0u64..3, pa in 0u32..12, pb in 0u32..12, ka in 0usize..4, kb in 0usize..4) {
            let na = partition_tree_name(PartitionTree::ALL[ka], &a, ia, pa);
            let nb = partition_tree_name(PartitionTree::ALL[kb], &b, ib, pb);
            prop_assert_eq!(na == nb, (ka, &a, ia, pa) == (kb, &b, ib, pb));
        }

        /// Time keys sort like the times they encode, negative times included.
        #[test]
        fn time_keys_preserve_order(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(time_key(a).cmp(&time_key(b)), a.cmp(&b));
            prop_assert_eq!(decode_time_key(&time_key(a)), Some(a));
        }

        /// Group-offset keys of one (group, topic) never fall under another's prefix.
        #[test]
        fn group_keys_are_unambiguous(ga in "[a\\x00]{1,4}", gb in "[a\\x00]{1,4}", ta in "[ab]{1,3}", tb in "[ab]{1,3}", p in any::<u32>()) {
            let key = group_offset_key(&ga, &ta, p);
            let prefix = group_prefix(&gb, &tb);
            let owned = decode_group_offset_key(&prefix, &key);
            prop_assert_eq!(owned.is_some(), (&ga, &ta) == (&gb, &tb));
            if let Some(q) = owned { prop_assert_eq!(q, p); }
            prop_assert_eq!(key.starts_with(&topic_group_prefix(&tb)), ta == tb);
        }

        /// Control-value decoders never panic and round-trip what was encoded.
        #[test]
        fn control_values_round_trip(a in any::<u64>(), b in any::<u64>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = ProducerEntry { last_sequence: a, base_offset: b };
            prop_assert_eq!(ProducerEntry::decode(&p.encode()), Some(p));
            let s = Stats { size_bytes: a, batch_count: b };
            prop_assert_eq!(Stats::decode(&s.encode()), Some(s));
            let _ = ProducerEntry::decode(&junk);
            let _ = Stats::decode(&junk);
            let _ = StoredTopic::decode(&junk);
            let _ = parse_partition_tree_name(&junk);
        }
    }

    /// Stored topic metadata round-trips through rkyv, and truncations never panic the decoder.
    #[test]
    fn stored_topic_round_trips() {
        let t = StoredTopic {
            name: "temps".into(),
            partitions: 3,
            retention_ms: Some(60_000),
            retention_bytes: None,
            created_ms: -5,
            incarnation: 77,
        };
        let bytes = t.encode();
        assert_eq!(StoredTopic::decode(&bytes).unwrap(), t);
        for cut in 0..bytes.len() {
            let _ = StoredTopic::decode(&bytes[..cut]);
        }
    }
}
