//! `silt-wire`: the bytes Silt speaks, with no I/O.
//!
//! It holds the record-batch format ([`batch`], specified in `docs/record-batch.md`), the
//! framing of requests and responses on a stream ([`frame`]) and the control messages
//! ([`message`]). It deliberately knows nothing of sockets, async runtimes or clocks: callers
//! pass bytes in and get bytes or typed values out, so every path here is unit-tested and
//! property-tested without a network.

pub mod batch;
mod error;
pub mod frame;
pub mod message;
pub mod signature;
pub mod varint;

pub use batch::{BatchBuilder, BatchView, Compression, Record};
pub use error::WireError;
pub use message::{
    check_device_id, partition_for_key, DeviceInfo, ErrorCode, FetchFrom, PartitionInfo, PartitionOffset,
    ProcessorInfo, ProcessorLimits, ProcessorPartition, ProcessorRef, ProcessorState, ProcessorVersion,
    Request, Response, TopicInfo, TopicPartition,
};
