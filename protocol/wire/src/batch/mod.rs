//! The record-batch format: one layout on the wire, on disk and in processor memory.
//!
//! `docs/record-batch.md` specifies it byte by byte; this module is the reference
//! implementation. A producer builds a batch with [`BatchBuilder`]; the broker checks it with
//! [`validate`] and stamps the broker-owned header fields with [`stamp`]; anyone reads it with
//! [`BatchView`] and iterates its [`Record`]s without copying.
//!
//! [`header`] (the fixed fields and checksums), [`record`] (one record's layout), [`BatchView`]
//! and [`BatchBuilder`] are the `no_std` core; validation and compression need the `std`
//! feature.

mod builder;
#[cfg(feature = "std")]
mod compression;
pub mod header;
pub mod record;
#[cfg(test)]
mod samples;
mod view;

pub use builder::{from_records, BatchBuilder};
#[cfg(feature = "std")]
pub use compression::{compress, decompress, decompress_all, Compression};
pub use header::{body_crc, header_crc, peek_header, peek_producer, set_producer, stamp};
pub use record::{HeaderIter, Record, RecordIter};
pub use view::BatchView;
#[cfg(feature = "std")]
pub use view::{split_batches, validate};

/// Version byte of the only layout this crate reads and writes.
pub const BATCH_VERSION: u8 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 68;
/// Largest batch accepted anywhere. Values above a few hundred KB stop paying in sled
/// (docs/design.md, decision 2, measured 100 KB as the sweet spot), and 8 MiB bounds the memory
/// a single request can pin.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most records one batch may carry; bounds per-batch work in validation and processors.
pub const BATCH_RECORDS_MAX: u32 = 1_000_000;
/// Most headers one record may carry.
pub const RECORD_HEADERS_MAX: u64 = 64;
