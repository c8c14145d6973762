//! `silt-wire`: the bytes Silt speaks, with no I/O.
//!
//! It holds the record-batch format ([`batch`], specified in `docs/record-batch.md`), the
//! framing of requests and responses on a stream ([`frame`]), the control messages
//! ([`message`]) and the wall-clock milliseconds they carry ([`time`]). It deliberately knows
//! nothing of sockets, async runtimes or clocks: callers pass bytes (and the time) in and get
//! bytes or typed values out, so every path here is unit-tested and property-tested without a
//! network.

pub mod batch;
mod error;
pub mod frame;
pub mod message;
pub mod signature;
pub mod time;
pub mod varint;

pub use batch::{BatchBuilder, BatchView, Compression, Record};
pub use error::WireError;
pub use message::{
    check_device_id, partition_for_key, DeviceInfo, ErrorCode, FetchFrom, PartitionInfo, PartitionOffset,
    ProcessorInfo, ProcessorLimits, ProcessorPartition, ProcessorRef, ProcessorState, ProcessorVersion,
    Request, Response, TopicInfo, TopicPartition,
};
