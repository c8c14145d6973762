//! The processor host's records as stored in sled: definitions with their versions, and the
//! per-partition checkpoints a pipeline commits with its output.
//!
//! These types are the on-disk format, kept apart from the wire messages they resemble
//! (`silt_wire::ProcessorLimits`, `silt_wire::FetchFrom`), so that a change to the protocol can
//! never silently change what is stored: conversions between the two are explicit, and
//! `tests::encodings_are_pinned` holds the exact bytes of each record. Encoded with rkyv, as
//! every control-plane record is.
//!
//! A definition is stored sealed (a CRC-32C, then the encoding) and capped at
//! [`DEFINITION_BYTES_MAX`]; definitions of the first format (no checksum, no deployer) are
//! still read ([`legacy`]).

use rkyv::{Archive, Deserialize, Serialize};
use silt_wire::{FetchFrom, ProcessorLimits};

use super::{open_at_most, seal};

/// Longest stored definition: 64 versions with their parameters fit many times over.
pub const DEFINITION_BYTES_MAX: usize = 1 << 20;

/// A processor as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredDefinition {
    pub name: String,
    pub input: String,
    pub output: String,
    pub versions: Vec<StoredVersion>,
    /// The version that runs.
    pub active: u32,
    pub paused: bool,
    /// Why it stopped, when it failed.
    pub error: Option<String>,
}

/// One deployed version of a processor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub version: u32,
    pub module_hash: [u8; 32],
    pub module_bytes: u64,
    pub params: Vec<(String, String)>,
    pub from: Option<StoredStart>,
    /// Resolved against the broker's configuration at deploy.
    pub limits: StoredLimits,
    pub deployed_ms: i64,
    pub signed_by: Option<[u8; 32]>,
    /// The principal whose rights the version runs with (`user:NAME`); `None` when deployed
    /// without authentication, or before brokers recorded it.
    pub deployed_by: Option<String>,
}

/// Where a deploy asked its pipeline to start. The variant order is part of the format.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredStart {
    Offset(u64),
    Earliest,
    Latest,
    Timestamp(i64),
}

/// A version's limits; `None` stands for the broker's configured value. The field order is
/// part of the format.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredLimits {
    pub memory_bytes_max: Option<u64>,
    pub call_time_ms_max: Option<u64>,
    pub output_bytes_max: Option<u64>,
}

/// A pipeline's progress on one input partition, committed with its output.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub next_offset: u64,
    /// The version whose state `state` is.
    pub version: u32,
    pub events_in: u64,
    pub events_out: u64,
    pub state: Option<Vec<u8>>,
}

impl From<FetchFrom> for StoredStart {
    fn from(f: FetchFrom) -> StoredStart {
        match f {
            FetchFrom::Offset(o) => StoredStart::Offset(o),
            FetchFrom::Earliest => StoredStart::Earliest,
            FetchFrom::Latest => StoredStart::Latest,
            FetchFrom::Timestamp(t) => StoredStart::Timestamp(t),
        }
    }
}

impl From<StoredStart> for FetchFrom {
    fn from(s: StoredStart) -> FetchFrom {
        match s {
            StoredStart::Offset(o) => FetchFrom::Offset(o),
            StoredStart::Earliest => FetchFrom::Earliest,
            StoredStart::Latest => FetchFrom::Latest,
            StoredStart::Timestamp(t) => FetchFrom::Timestamp(t),
        }
    }
}

impl From<ProcessorLimits> for StoredLimits {
    fn from(l: ProcessorLimits) -> StoredLimits {
        StoredLimits {
            memory_bytes_max: l.memory_bytes_max,
            call_time_ms_max: l.call_time_ms_max,
            output_bytes_max: l.output_bytes_max,
        }
    }
}

impl From<StoredLimits> for ProcessorLimits {
    fn from(l: StoredLimits) -> ProcessorLimits {
        ProcessorLimits {
            memory_bytes_max: l.memory_bytes_max,
            call_time_ms_max: l.call_time_ms_max,
            output_bytes_max: l.output_bytes_max,
        }
    }
}

impl StoredDefinition {
    pub fn version(&self, version: u32) -> Option<&StoredVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    pub fn active(&self) -> &StoredVersion {
        self.version(self.active).expect("the active version is kept")
    }

    pub fn encode(&self) -> Vec<u8> {
        seal(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredDefinition, String> {
        let sealed = open_at_most::<StoredDefinition>("processor definition", bytes, DEFINITION_BYTES_MAX);
        match sealed {
            Ok(def) => Ok(def),
            Err(message) => legacy::decode(bytes).ok_or(message),
        }
    }
}

/// The first format of a definition: the bare rkyv encoding, versions without a deployer.
mod legacy {
    use rkyv::{Archive, Deserialize, Serialize};

    use super::{aligned, StoredDefinition, StoredLimits, StoredStart, StoredVersion, DEFINITION_BYTES_MAX};

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub(super) struct Definition {
        pub name: String,
        pub input: String,
        pub output: String,
        pub versions: Vec<Version>,
        pub active: u32,
        pub paused: bool,
        pub error: Option<String>,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub(super) struct Version {
        pub version: u32,
        pub module_hash: [u8; 32],
        pub module_bytes: u64,
        pub params: Vec<(String, String)>,
        pub from: Option<StoredStart>,
        pub limits: StoredLimits,
        pub deployed_ms: i64,
        pub signed_by: Option<[u8; 32]>,
    }

    /// The definition `bytes` hold in the first format, if they do.
    pub(super) fn decode(bytes: &[u8]) -> Option<StoredDefinition> {
        if bytes.len() > DEFINITION_BYTES_MAX {
            return None;
        }
        let d = rkyv::from_bytes::<Definition, rkyv::rancor::Error>(&aligned(bytes)).ok()?;
        let versions = d
            .versions
            .into_iter()
            .map(|v| StoredVersion {
                version: v.version,
                module_hash: v.module_hash,
                module_bytes: v.module_bytes,
                params: v.params,
                from: v.from,
                limits: v.limits,
                deployed_ms: v.deployed_ms,
                signed_by: v.signed_by,
                deployed_by: None,
            })
            .collect();
        Some(StoredDefinition {
            name: d.name,
            input: d.input,
            output: d.output,
            versions,
            active: d.active,
            paused: d.paused,
            error: d.error,
        })
    }
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let aligned = aligned(bytes);
        rkyv::from_bytes::<Checkpoint, rkyv::rancor::Error>(&aligned)
            .map_err(|e| format!("stored processor checkpoint is corrupt: {e}"))
    }
}

/// sled hands out values at any alignment; rkyv reads archived data in place and needs its
/// alignment, so the bytes are copied into an aligned buffer first.
fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<16> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    aligned
}

fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("in-memory serialization cannot fail").to_vec()
}

/// A processor the bridges run on device traffic (the bridge tier), as the bridge-processors
/// tree holds it: the topic whose readings it takes (its output replaces them there), and its
/// versions, the module bytes in the modules tree under their hash.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredBridgeProcessor {
    pub topic: String,
    /// Oldest first.
    pub versions: Vec<StoredBridgeVersion>,
    /// The version the bridges run.
    pub active: u32,
}

/// One version of a bridge-tier processor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredBridgeVersion {
    pub version: u32,
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub params: Vec<(String, String)>,
    pub deployed_ms: i64,
    pub signed_by: Option<[u8; 32]>,
}

impl StoredBridgeProcessor {
    /// Decodes bridge-tier processor `name`'s entry (the name names it in the error).
    pub fn decode(name: &str, bytes: &[u8]) -> Result<StoredBridgeProcessor, String> {
        open_at_most(&format!("bridge-tier processor {name:?}"), bytes, DEFINITION_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sample_definition() -> StoredDefinition {
        StoredDefinition {
            name: "smooth".into(),
            input: "sensors.temp".into(),
            output: "sensors.temp.smooth".into(),
            versions: vec![
                StoredVersion {
                    version: 3,
                    module_hash: [7; 32],
                    module_bytes: 61_234,
                    params: vec![("alpha".into(), "0.2".into())],
                    from: Some(StoredStart::Timestamp(-5)),
                    limits: StoredLimits {
                        memory_bytes_max: Some(1 << 24),
                        call_time_ms_max: None,
                        output_bytes_max: Some(9),
                    },
                    deployed_ms: 1_764_000_000_000,
                    signed_by: Some([9; 32]),
                    deployed_by: Some("user:alice".into()),
                },
                StoredVersion {
                    version: 4,
                    module_hash: [1; 32],
                    module_bytes: 5,
                    params: vec![],
                    from: Some(StoredStart::Offset(77)),
                    limits: StoredLimits::default(),
                    deployed_ms: 2,
                    signed_by: None,
                    deployed_by: None,
                },
            ],
            active: 3,
            paused: true,
            error: Some("trap at 5".into()),
        }
    }

    /// Proves the stored records keep their bytes: these are the encodings that brokers before
    /// the records had types of their own wrote (captured from that code), so a definition or
    /// checkpoint on disk reads back the same, and a change to a wire message cannot move them.
    #[test]
    fn encodings_are_pinned() {
        let def = sample_definition();
        assert_eq!(hex(&def.encode()), PINNED_DEFINITION);
        assert_eq!(StoredDefinition::decode(&def.encode()).expect("decodes"), def);
        let first = (0..PINNED_FIRST_DEFINITION.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&PINNED_FIRST_DEFINITION[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>();
        let mut unattributed = def.clone();
        unattributed.versions.iter_mut().for_each(|v| v.deployed_by = None);
        assert_eq!(StoredDefinition::decode(&first).expect("the first format decodes"), unattributed);
        let cp = Checkpoint {
            next_offset: 1234,
            version: 3,
            events_in: 99,
            events_out: 7,
            state: Some(vec![1, 2, 3]),
        };
        assert_eq!(hex(&cp.encode()), PINNED_CHECKPOINT);
        assert_eq!(Checkpoint::decode(&cp.encode()).expect("decodes"), cp);
        let starts = [StoredStart::Earliest, StoredStart::Latest, StoredStart::Offset(3)];
        let encoded: Vec<String> = starts.iter().map(|s| hex(&encode(s))).collect();
        assert_eq!(encoded.join(" "), PINNED_STARTS);
    }

    /// Proves conversions between wire and stored values lose nothing.
    #[test]
    fn wire_values_round_trip_through_stored_ones() {
        for f in [FetchFrom::Offset(9), FetchFrom::Earliest, FetchFrom::Latest, FetchFrom::Timestamp(-1)] {
            assert_eq!(FetchFrom::from(StoredStart::from(f)), f);
        }
        let l =
            ProcessorLimits { memory_bytes_max: Some(1), call_time_ms_max: None, output_bytes_max: Some(3) };
        assert_eq!(ProcessorLimits::from(StoredLimits::from(l)), l);
    }

    /// Proves a damaged record is an error, never a panic, and never misread: a flipped bit
    /// anywhere in a definition fails its checksum.
    #[test]
    fn corrupt_records_are_errors() {
        let bytes = sample_definition().encode();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(StoredDefinition::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(StoredDefinition::decode(&b).is_err(), "bit {i}");
        }
        assert!(Checkpoint::decode(&[0xff; 7]).is_err());
    }

    #[test]
    fn bridge_processors_round_trip_and_damage_is_refused() {
        let p = StoredBridgeProcessor {
            topic: "sensors.temperature".into(),
            versions: vec![StoredBridgeVersion {
                version: 2,
                sha256: [4; 32],
                bytes: 99,
                params: vec![("min".into(), "22".into())],
                deployed_ms: 7,
                signed_by: Some([5; 32]),
            }],
            active: 2,
        };
        let sealed = seal(&p);
        assert_eq!(StoredBridgeProcessor::decode("p", &sealed), Ok(p));
        for i in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(StoredBridgeProcessor::decode("p", &b).is_err(), "bit {i}");
        }
    }

    const PINNED_DEFINITION: &str = "197a395673656e736f72732e74656d7073656e736f72732e74656d702e736d6f6f746800616c706861ffffff302e32ffffffffff757365723a616c6963650000000000000300000007070707070707070707070707070707070707070707070707070707070707070000000032ef000000000000b0ffffff0100000001000000000000000300000000000000fbffffffffffffff01000000000000000000000100000000000000000000000000000000000000000100000000000000090000000000000000e897b69a010000010909090909090909090909090909090909090909090909090909090909090909000000010000008a00000040ffffff04000000010101010101010101010101010101010101010101010101010101010101010100000000050000000000000014ffffff00000000010000000000000000000000000000004d000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000200000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000747261702061742035000000736d6f6f7468ffff8c0000003cfeffff9300000040feffff6cfeffff0200000003000000010000000100000089000000c8ffffff";
    /// The same definition as brokers before the checksum and the deployer wrote it.
    const PINNED_FIRST_DEFINITION: &str = "73656e736f72732e74656d7073656e736f72732e74656d702e736d6f6f746800616c706861ffffff302e32ffffffffff0300000007070707070707070707070707070707070707070707070707070707070707070000000032ef000000000000c0ffffff0100000001000000000000000300000000000000fbffffffffffffff01000000000000000000000100000000000000000000000000000000000000000100000000000000090000000000000000e897b69a0100000109090909090909090909090909090909090909090909090909090909090909090000000000000004000000010101010101010101010101010101010101010101010101010101010101010100000000050000000000000020ffffff00000000010000000000000000000000000000004d00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000747261702061742035000000736d6f6f7468ffff8c0000005cfeffff9300000060feffff7cfeffff0200000003000000010000000100000089000000c8ffffff";
    const PINNED_CHECKPOINT: &str = "0102030000000000d20400000000000003000000000000006300000000000000070000000000000001000000d4ffffff0300000000000000";
    const PINNED_STARTS: &str =
        "01000000000000000000000000000000 02000000000000000000000000000000 00000000000000000300000000000000";
}
