//! `silt-wire`: the bytes Silt speaks, with no I/O.
//!
//! It holds the record-batch format ([`batch`], specified in `docs/record-batch.md`), the
//! framing of requests and responses on a stream ([`frame`]), the control messages
//! ([`message`]) and the wall-clock milliseconds they carry ([`time`]). It deliberately knows
//! nothing of sockets, async runtimes or clocks: callers pass bytes (and the time) in and get
//! bytes or typed values out, so every path here is unit-tested and property-tested without a
//! network.
//!
//! Without its default `std` feature the crate is `no_std` (it needs `alloc`) and holds only
//! its core: [`varint`], the batch layout constants and header, [`batch::BatchView`] and its
//! records read in place, building batches (uncompressed) with their checksums ([`crc`]), the
//! processor ABI's [`counters`] block and the host rules of [`abi`]. The guest SDK
//! (`silt-processor`) reads its input batches and checks its counters with that core, and the
//! device firmware builds the batches its processor reads with it, so there is one encoder and
//! one decoder of records and one of counters, for guest and host. Validation, compression,
//! framing, control messages and [`time`] need `std`: the crates and types they use do. Module
//! signatures need only the `signature` feature (which `std` takes in), so that a device can
//! check the modules it is sent.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod abi;
#[cfg(feature = "std")]
pub mod auth;
pub mod batch;
pub mod counters;
pub mod crc;
mod error;
#[cfg(feature = "std")]
pub mod frame;
#[cfg(feature = "std")]
pub mod message;
#[cfg(feature = "signature")]
pub mod signature;
#[cfg(feature = "std")]
pub mod time;
pub mod varint;

#[cfg(feature = "std")]
pub use auth::{AclEntry, Credential, Operation};
pub use batch::BatchBuilder;
#[cfg(feature = "std")]
pub use batch::Compression;
pub use batch::{BatchView, Record};
pub use error::WireError;
#[cfg(feature = "std")]
pub use message::{
    check_device_id, partition_for_key, BridgeProcessorInfo, ClusterInfo, DamagedRange, Deployment,
    DeviceInfo, DeviceModuleInfo, DeviceModuleVersion, DeviceRefusal, ErrorCode, FetchFrom, NodeInfo,
    PartitionInfo, PartitionOffset, ProcessorInfo, ProcessorLimits, ProcessorPartition, ProcessorRef,
    ProcessorState, ProcessorVersion, RepairInfo, ReplicaInfo, Request, Response, TopicInfo, TopicPartition,
};
