//! Control-plane messages, encoded with rkyv inside a frame (see [`crate::frame`]).
//!
//! Data never travels in these types: produce requests and fetch responses carry their record
//! batches as the frame payload, byte for byte as stored.

use rkyv::{Archive, Deserialize, Serialize};

use crate::auth::{AclEntry, Credential, TokenInfo, UserInfo, WhoAmI};
use crate::WireError;

mod cluster;
pub use cluster::{ClusterInfo, NodeInfo, ReplicaInfo};

/// Longest topic name. Names appear in sled tree names and metric labels.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;
/// Most partitions per topic.
pub const PARTITIONS_MAX: u32 = 1024;

/// Where a fetch starts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFrom {
    /// This exact offset (clamped to the log start when retention removed it).
    Offset(u64),
    /// The first retained record.
    Earliest,
    /// The end of the log: only records appended after the request.
    Latest,
    /// The first record whose event time is at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A request, sent by a client as the control part of a frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateTopic {
        name: String,
        partitions: u32,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        /// Brokers that keep each partition (a cluster's); `None`: 3, or as many brokers as
        /// the cluster has when fewer (1 on a broker running alone).
        replication_factor: Option<u32>,
    },
    DeleteTopic {
        name: String,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    /// The frame payload is exactly one record batch for this partition.
    Produce {
        topic: String,
        partition: u32,
    },
    Fetch {
        topic: String,
        partition: u32,
        from: FetchFrom,
        max_bytes: u32,
        max_wait_ms: u32,
        /// Consume-time processing: run this deployed module over the fetched batches and
        /// return its output instead; nothing is stored.
        processor: Option<ProcessorRef>,
    },
    /// The frame payload is the WebAssembly module (signed or not).
    DeployProcessor {
        name: String,
        input: String,
        output: String,
        params: Vec<(String, String)>,
        /// Where the new version starts reading. `None`: from earliest for a new processor,
        /// from the current checkpoints for a new version of an existing one.
        from: Option<FetchFrom>,
        /// Limits of this version; unset ones take the broker's configured values, which are
        /// also the most a deploy may ask for.
        limits: ProcessorLimits,
    },
    ListProcessors,
    ProcessorStatus {
        name: String,
    },
    ProcessorVersions {
        name: String,
    },
    /// Makes the version before the active one active again.
    RollbackProcessor {
        name: String,
    },
    PauseProcessor {
        name: String,
    },
    /// Resumes a paused or failed processor from its last commit.
    ResumeProcessor {
        name: String,
    },
    UndeployProcessor {
        name: String,
    },
    JoinGroup {
        group: String,
        member_id: Option<String>,
        topics: Vec<String>,
        session_timeout_ms: u32,
    },
    Heartbeat {
        group: String,
        member_id: String,
    },
    LeaveGroup {
        group: String,
        member_id: String,
    },
    CommitOffsets {
        group: String,
        member_id: Option<String>,
        offsets: Vec<PartitionOffset>,
    },
    FetchOffsets {
        group: String,
        topic: String,
    },
    /// Registers a device, or enrols a revoked one again; the broker makes its key and answers
    /// `Device` with it.
    AddDevice {
        id: String,
    },
    /// Every registered device, revoked ones included, without keys.
    ListDevices,
    /// Marks a device revoked: bridges refuse its frames and close its sessions from then on
    /// (within their cache time). The entry stays, so its id is not registered again by
    /// mistake: only `AddDevice` by a principal that may manage it enrols it again, with a new
    /// key.
    RevokeDevice {
        id: String,
    },
    /// One device with its key, for a bridge authenticating it.
    GetDevice {
        id: String,
    },
    /// Proves who the client is; the connection acts as that principal from then on. Every
    /// other request of a connection that has not authenticated is refused.
    Authenticate {
        credential: Credential,
    },
    /// Who the connection acts as, and the entries that apply to it.
    WhoAmI,
    /// Creates a user with a password (stored as an Argon2id hash).
    AddUser {
        name: String,
        password: String,
    },
    ListUsers,
    /// Removes a user, its tokens and its access-control entries.
    RemoveUser {
        name: String,
    },
    SetPassword {
        name: String,
        password: String,
    },
    /// Makes an API token for `user`; its secret is in the answer and nowhere else.
    CreateToken {
        user: String,
        name: String,
        expires_ms: Option<u64>,
    },
    /// Tokens of one user, or of every user.
    ListTokens {
        user: Option<String>,
    },
    RevokeToken {
        id: String,
    },
    GrantAcl {
        entry: AclEntry,
    },
    RevokeAcl {
        entry: AclEntry,
    },
    /// Entries of principals matching `principal`, or every entry.
    ListAcls {
        principal: Option<String>,
    },
    /// Asks for a producer id for idempotent produce, bound to this principal and held by
    /// this connection. `None`: a new id. `Some(id)`: an id this principal was given before
    /// (after a reconnect or a restart); its epoch goes up, which fences any other connection
    /// still holding it. Batches with a producer id other than 0 are refused unless the
    /// connection holds the id at its current epoch.
    InitProducer {
        id: Option<u64>,
    },
    /// The cluster's brokers and partitions (`Response::Cluster`).
    ClusterStatus,
    /// Gives a device a new key; the old one stays valid for `overlap_ms` more, so devices
    /// can be moved to the new key without a gap. Answers `Device` with the new key.
    RotateDevice {
        id: String,
        overlap_ms: u64,
    },
    /// Refusals a bridge made for the devices it serves (a failed login, a frame or an MQTT
    /// packet outside the device's rights), for the audit topic. Needs `device-keys` on every
    /// device named (on `device:*` for an event naming none): only a bridge trusted with a
    /// device's key speaks for it. At most [`DEVICE_REFUSALS_MAX`] events.
    AuditDevices {
        events: Vec<DeviceRefusal>,
    },
    /// Stores a new version of the processor module a device runs on its readings of kind
    /// `input` (the device tier, docs/processor-abi.md); the payload is the module. It becomes
    /// the device's requested version, which its bridge delivers over the frame link. Answers
    /// `DeviceModule`.
    DeployDeviceModule {
        device: String,
        input: String,
        params: Vec<(String, String)>,
    },
    /// A device's module versions: requested, running (as the device last reported it) and
    /// the last error. Answers `DeviceModule`.
    GetDeviceModule {
        device: String,
    },
    /// Makes the version before the requested one requested again (fresh state, as every
    /// change of version). Answers `DeviceModule`.
    RollbackDeviceModule {
        device: String,
    },
    /// From a bridge: the module version a device reported, in its hello or its module state
    /// (`running`: `None` when it runs none), and with a module state its last module error
    /// (`error`: `None` when the report says nothing of errors, as a hello's; empty when the
    /// device has none). Needs `device-keys` on the device, as only a bridge trusted with its
    /// key speaks for it. Answers `Done`.
    ReportDeviceModule {
        device: String,
        running: Option<u32>,
        error: Option<String>,
    },
    /// Finds the acknowledged offsets of a partition that storage damage destroyed; with
    /// `accept_loss`, accepts their loss: the damaged batches are removed, reads step over
    /// the range and produces continue after it. Answers `Repaired`.
    RepairPartition {
        topic: String,
        partition: u32,
        accept_loss: bool,
    },
    /// From a bridge: a device's module versions, and as payload the module bytes of the
    /// requested version unless it is `have` (the version the bridge holds) or there is none.
    /// Needs `device-keys` on the device. Answers `DeviceModule`.
    FetchDeviceModule {
        device: String,
        have: Option<u32>,
    },
    /// Stores a new version of a processor the bridges run on the device readings of `topic`
    /// before they are appended, in their place (the bridge tier, docs/processor-abi.md); the
    /// payload is the module, checked as a broker processor's is. Answers `BridgeProcessor`.
    DeployBridgeProcessor {
        name: String,
        topic: String,
        params: Vec<(String, String)>,
    },
    /// The bridge-tier processors. Answers `BridgeProcessors`.
    ListBridgeProcessors,
    /// Stops the bridges running a bridge-tier processor and forgets it. Answers `Done`.
    UndeployBridgeProcessor {
        name: String,
    },
    /// From a bridge: a bridge-tier processor, and as payload the module of its `version`.
    /// Answers `BridgeProcessor`.
    FetchBridgeProcessor {
        name: String,
        version: u32,
    },
}

/// Events one [`Request::AuditDevices`] carries at most.
pub const DEVICE_REFUSALS_MAX: usize = 256;
/// Bytes of one field of a [`DeviceRefusal`] at most.
pub const DEVICE_REFUSAL_FIELD_BYTES_MAX: usize = 512;

/// One refusal of a device by a bridge.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceRefusal {
    /// The device id the attempt claimed, when it is a well-formed one.
    pub device: Option<String>,
    /// Where the attempt came from as the bridge saw it (`IP:PORT`, a serial line).
    pub source: String,
    /// `mqtt-connect`, `mqtt-publish`, `mqtt-subscribe`, `frame`, `session`.
    pub operation: String,
    /// `topic:NAME` or `device:ID`.
    pub resource: String,
    /// Why.
    pub detail: String,
}

/// A deployed processor to apply at consume time.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessorRef {
    pub name: String,
    /// `None`: the active version.
    pub version: Option<u32>,
    /// Parameters for this read; `None` keeps the deployed version's parameters.
    pub params: Option<Vec<(String, String)>>,
}

/// Per-processor limits; `None` means the broker's configured value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorLimits {
    /// Linear memory of one instance.
    pub memory_bytes_max: Option<u64>,
    /// Time of one call into the module (one batch).
    pub call_time_ms_max: Option<u64>,
    /// Output bytes one input batch may produce.
    pub output_bytes_max: Option<u64>,
}

/// What a processor is doing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorState {
    Running,
    Paused,
    /// Stopped by a trap, a limit or an error; `ProcessorInfo::error` says why.
    Failed,
}

/// A processor's input partition and how far it got.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessorPartition {
    pub partition: u32,
    /// Next input offset to process.
    pub checkpoint: u64,
    /// Input records available (durable) in this partition.
    pub high_watermark: u64,
    pub events_in: u64,
    pub events_out: u64,
    /// The module's counters (`silt_counters`, docs/processor-abi.md) as last reported by this
    /// partition's running instance, in the module's order; empty while it is not running or
    /// when the module reports none.
    pub counters: Vec<(String, u64)>,
}

/// A processor's deployment and state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessorInfo {
    pub name: String,
    pub input: String,
    pub output: String,
    pub state: ProcessorState,
    pub version: u32,
    pub versions: u32,
    pub error: Option<String>,
    /// Input records not yet processed, summed over partitions.
    pub lag: u64,
    pub events_in: u64,
    pub events_out: u64,
    /// The partitions' counters summed by name, names in order of first appearance.
    pub counters: Vec<(String, u64)>,
    pub partitions: Vec<ProcessorPartition>,
}

/// What a deploy asks for, the module aside (its bytes travel as the frame payload): the
/// fields of [`Request::DeployProcessor`] as one value, so that the client that builds the
/// request and the broker that takes it apart name them once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub name: String,
    pub input: String,
    pub output: String,
    pub params: Vec<(String, String)>,
    /// Where the new version starts reading; `None`: earliest for a new processor, the
    /// current checkpoints for a new version of an existing one.
    pub from: Option<FetchFrom>,
    /// Limits of this version; unset ones take the broker's configured values.
    pub limits: ProcessorLimits,
}

impl From<Deployment> for Request {
    fn from(d: Deployment) -> Request {
        let Deployment { name, input, output, params, from, limits } = d;
        Request::DeployProcessor { name, input, output, params, from, limits }
    }
}

impl TryFrom<Request> for Deployment {
    /// Any other request, given back unchanged.
    type Error = Request;

    fn try_from(request: Request) -> Result<Deployment, Request> {
        match request {
            Request::DeployProcessor { name, input, output, params, from, limits } => {
                Ok(Deployment { name, input, output, params, from, limits })
            }
            other => Err(other),
        }
    }
}

/// One deployed version of a processor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessorVersion {
    pub version: u32,
    pub active: bool,
    /// SHA-256 of the module bytes, hex.
    pub module_sha256: String,
    pub module_bytes: u64,
    pub params: Vec<(String, String)>,
    pub from: Option<FetchFrom>,
    /// The limits this version runs under (resolved against the broker's).
    pub limits: ProcessorLimits,
    pub deployed_ms: i64,
    /// Hex Ed25519 public key that signed the module, when signed.
    pub signed_by: Option<String>,
    /// The principal whose rights this version runs with; `None` when deployed without
    /// authentication.
    pub deployed_by: Option<String>,
}

/// An offset of one partition of one topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// A topic partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// State of one partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Offset of the first retained record.
    pub log_start: u64,
    /// Offset the next record will get.
    pub high_watermark: u64,
    /// Bytes of stored batches.
    pub size_bytes: u64,
    pub batches: u64,
    /// Acknowledged offsets `from..to` the partition can no longer serve, when storage damage
    /// lost them (`ErrorCode::DataLoss`).
    pub lost: Option<(u64, u64)>,
    /// Offset ranges whose loss an operator accepted (`RepairPartition`): reads step over them.
    pub accepted_losses: Vec<(u64, u64)>,
}

/// What a `RepairPartition` found and did.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RepairInfo {
    pub topic: String,
    pub partition: u32,
    /// Ranges of acknowledged offsets the partition could not serve, each with what is wrong.
    pub damaged: Vec<DamagedRange>,
    /// Whether their loss is now accepted.
    pub accepted: bool,
    /// Damaged batches removed from the store.
    pub batches_removed: u64,
    /// Every accepted loss of the partition, after this repair.
    pub accepted_losses: Vec<(u64, u64)>,
}

/// Offsets `from..to` a partition cannot serve.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// A topic and its partitions.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub created_ms: i64,
    pub partitions: Vec<PartitionInfo>,
}

/// A registered device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: String,
    /// The 32-byte key frames are tagged with; only in answers to `AddDevice` and `GetDevice`.
    pub key: Option<Vec<u8>>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The key before the last rotation, still accepted until `previous_until_ms`; only with
    /// `key`.
    pub previous_key: Option<Vec<u8>>,
    pub previous_until_ms: Option<i64>,
    /// The access-control entries that apply to `device:ID`, which a bridge checks every topic
    /// of the device against; only in answers to `GetDevice`. `None`: the broker runs without
    /// authentication, and a device may use any topic but internal ones.
    pub rights: Option<Vec<AclEntry>>,
}

/// The processor module versions of one device (the device tier).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceModuleInfo {
    pub device: String,
    /// The version the device should run; `None` before the first deploy.
    pub requested_version: Option<u32>,
    /// The version the device last said it runs; `None` when it runs none, or has not said.
    pub running_version: Option<u32>,
    /// The last error the device reported about its module (it then sends raw readings).
    pub last_error: Option<String>,
    /// The versions kept, oldest first: at most [`DEVICE_MODULE_VERSIONS_KEPT`].
    pub versions: Vec<DeviceModuleVersion>,
}

/// One version of a device's module.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceModuleVersion {
    pub version: u32,
    /// SHA-256 of the module bytes, hex: what the device checks before switching to it.
    pub module_sha256: String,
    pub module_bytes: u64,
    /// The kind of reading it runs on: `temperature`, `humidity` or `numeric`.
    pub input: String,
    pub params: Vec<(String, String)>,
    pub deployed_ms: i64,
    /// Hex Ed25519 public key that signed the module, when signed.
    pub signed_by: Option<String>,
}

/// Versions of a device's module the broker keeps; older ones are dropped.
pub const DEVICE_MODULE_VERSIONS_KEPT: usize = 8;
/// Largest module for a device: what the firmware's module slot holds.
pub const DEVICE_MODULE_BYTES_MAX: usize = 512 * 1024;
/// The kinds of reading a device module can run on.
pub const DEVICE_MODULE_INPUTS: [&str; 3] = ["temperature", "humidity", "numeric"];

/// Why a request failed. Clients map these to errors a user can act on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownTopic,
    TopicExists,
    UnknownPartition,
    InvalidRequest,
    InvalidBatch,
    Checksum,
    TooLarge,
    UnsupportedVersion,
    OutOfOrderSequence,
    UnknownMember,
    UnknownProcessor,
    /// A module that is not WebAssembly, breaks the processor ABI, or fails in `silt_init`.
    InvalidModule,
    /// Unsigned, tampered, or signed by a key the broker does not trust.
    Untrusted,
    Storage,
    ShuttingDown,
    UnknownDevice,
    DeviceExists,
    /// No credential, a bad one, an expired or revoked one, or too many failures from this
    /// address.
    Unauthenticated,
    /// The principal has no right to this operation on this resource.
    PermissionDenied,
    UnknownUser,
    UserExists,
    UnknownToken,
    /// The producer id was claimed again by a newer session (a higher epoch): this one is a
    /// zombie and must stop.
    ProducerFenced,
    /// The broker never assigned this producer id (or lost it with its data).
    UnknownProducer,
    /// The partition lost acknowledged records to storage damage (found at start, or a stored
    /// batch that fails its checks when read): it serves what it still holds, and refuses
    /// produces and reads of the damaged range until an operator accepts the loss
    /// (`RepairPartition`).
    DataLoss,
    /// The broker's disk is nearly full: nothing of the batch was stored. Retriable; the
    /// broker takes produces again on its own once space is freed.
    DiskFull,
    /// The broker is at a limit of work running at once (read-time processing instances):
    /// nothing was done. Retriable.
    Busy,
    /// The cluster could not settle the request in time: no leader of the group, or no
    /// quorum of its brokers up. Nothing was acknowledged (a produce may still be stored;
    /// sent again with the same producer id and sequence it is not stored twice). Retriable.
    Unavailable,
}

/// A response, one per request, in request order on a stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Error {
        code: ErrorCode,
        message: String,
    },
    Done,
    Topics(Vec<TopicInfo>),
    Topic(TopicInfo),
    /// `duplicate` is true when the batch's (producer, sequence) was stored before; the offset
    /// is then the one it got the first time when still known, else `u64::MAX`.
    Produced {
        base_offset: u64,
        duplicate: bool,
    },
    /// The frame payload holds whole batches; the first may start before `from_offset` (the
    /// resolved start of the fetch), so readers skip records below it. `next_offset` is where
    /// the next fetch continues.
    Fetched {
        log_start: u64,
        high_watermark: u64,
        next_offset: u64,
        from_offset: u64,
    },
    Joined {
        member_id: String,
        generation: u64,
        assignment: Vec<TopicPartition>,
    },
    Heartbeat {
        generation: u64,
        assignment: Vec<TopicPartition>,
    },
    Offsets(Vec<PartitionOffset>),
    Processor(ProcessorInfo),
    Processors(Vec<ProcessorInfo>),
    ProcessorVersions(Vec<ProcessorVersion>),
    Device(DeviceInfo),
    Devices(Vec<DeviceInfo>),
    DeviceModule(DeviceModuleInfo),
    Authenticated(WhoAmI),
    User(UserInfo),
    Users(Vec<UserInfo>),
    /// A token; `secret` (the whole token to give clients) only when it was just created.
    Token {
        info: TokenInfo,
        secret: Option<String>,
    },
    Tokens(Vec<TokenInfo>),
    Acls(Vec<AclEntry>),
    /// A producer id for this connection and its epoch.
    Producer {
        id: u64,
        epoch: u32,
    },
    Repaired(RepairInfo),
    BridgeProcessor(BridgeProcessorInfo),
    BridgeProcessors(Vec<BridgeProcessorInfo>),
    Cluster(ClusterInfo),
}

/// A processor the bridges run (the bridge tier), at the version they run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BridgeProcessorInfo {
    pub name: String,
    /// The topic of device readings it takes; its output replaces them there.
    pub topic: String,
    /// The version the bridges run; the others kept are in `versions`.
    pub version: u32,
    /// SHA-256 of the module bytes, hex.
    pub module_sha256: String,
    pub module_bytes: u64,
    pub params: Vec<(String, String)>,
    pub deployed_ms: i64,
    /// Hex Ed25519 public key that signed the module, when signed.
    pub signed_by: Option<String>,
    pub versions: Vec<u32>,
}

macro_rules! codec {
    ($enc:ident, $dec:ident, $ty:ty) => {
        /// Encodes the control message.
        pub fn $enc(v: &$ty) -> Vec<u8> {
            rkyv::to_bytes::<rkyv::rancor::Error>(v).expect("in-memory serialization cannot fail").to_vec()
        }
        /// Checks and decodes a control message from untrusted bytes.
        pub fn $dec(bytes: &[u8]) -> Result<$ty, WireError> {
            // rkyv reads archived values in place and needs them aligned; control messages are
            // small, so one copy into an aligned buffer is cheaper than any alternative.
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            rkyv::from_bytes::<$ty, rkyv::rancor::Error>(&aligned)
                .map_err(|e| WireError::Control(e.to_string()))
        }
    };
}

codec!(encode_request, decode_request, Request);
codec!(encode_response, decode_response, Response);

/// The partition a key goes to: crc32c of the key modulo the partition count. Stable across
/// versions and languages, so any client places a key where every other client does.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0);
    crc32c::crc32c(key) % partitions
}

/// Longest device id, in bytes; the same limit as the device frame codec's.
pub const DEVICE_ID_BYTES_MAX: usize = 64;

/// Checks a device id: 1 to 64 bytes of `[A-Za-z0-9._-]`, so that it is safe as an MQTT
/// username, a record key, a log field and part of a topic name.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > DEVICE_ID_BYTES_MAX {
        return Err(format!("device id must be 1 to {DEVICE_ID_BYTES_MAX} bytes long"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("device id {id:?} contains {c:?}; use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Checks a topic name: 1 to 200 bytes of `[A-Za-z0-9._-]`.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("topic name must be 1 to {TOPIC_NAME_BYTES_MAX} bytes long"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {c:?}; use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Requests survive encode/decode.
        #[test]
        fn request_round_trip(name in "[a-z.]{1,20}", p in any::<u32>(), off in any::<u64>(), w in any::<u32>()) {
            let reqs = vec![
                Request::Fetch { topic: name.clone(), partition: p, from: FetchFrom::Offset(off), max_bytes: w, max_wait_ms: w, processor: None },
                Request::Fetch { topic: name.clone(), partition: p, from: FetchFrom::Latest, max_bytes: w, max_wait_ms: w, processor: Some(ProcessorRef { name: name.clone(), version: Some(p), params: Some(vec![(name.clone(), name.clone())]) }) },
                Request::DeployProcessor { name: name.clone(), input: name.clone(), output: name.clone(), params: vec![], from: Some(FetchFrom::Timestamp(off as i64)), limits: ProcessorLimits { memory_bytes_max: Some(off), call_time_ms_max: None, output_bytes_max: Some(u64::from(w)) } },
                Request::CreateTopic {
                    name: name.clone(),
                    partitions: p,
                    retention_ms: Some(off),
                    retention_bytes: None,
                    replication_factor: None,
                },
                Request::JoinGroup { group: name.clone(), member_id: None, topics: vec![name.clone()], session_timeout_ms: w },
            ];
            for r in reqs {
                prop_assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
            }
        }

        /// Arbitrary bytes never panic the control decoders.
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_request(&b);
            let _ = decode_response(&b);
        }
    }

    #[test]
    fn topic_names() {
        assert!(check_topic_name("sensors.temp-1_a").is_ok());
        assert!(check_topic_name(&"a".repeat(TOPIC_NAME_BYTES_MAX)).is_ok());
        for bad in ["", "a/b", "a\0b", "ü", "a b"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name(&"a".repeat(TOPIC_NAME_BYTES_MAX + 1)).is_err());
    }

    /// A deployment becomes a `DeployProcessor` request and comes back from it unchanged;
    /// any other request is handed back as it was.
    #[test]
    fn deployment_round_trips_through_its_request() {
        let d = Deployment {
            name: "hot".into(),
            input: "readings".into(),
            output: "hot-readings".into(),
            params: vec![("min".into(), "30".into())],
            from: Some(FetchFrom::Offset(5)),
            limits: ProcessorLimits {
                memory_bytes_max: Some(1 << 20),
                call_time_ms_max: None,
                output_bytes_max: None,
            },
        };
        let request = Request::from(d.clone());
        assert!(matches!(request, Request::DeployProcessor { .. }));
        assert_eq!(Deployment::try_from(request), Ok(d));
        assert_eq!(Deployment::try_from(Request::ListProcessors), Err(Request::ListProcessors));
    }
}
