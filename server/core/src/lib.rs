//! `silt-core`: the broker's decisions as plain state machines, with no I/O, no clock, no
//! tasks and no locks (docs/design.md, decisions 7 and 11).
//!
//! - [`partition::PartitionLog`]: what an append does to a partition (offsets, producer
//!   deduplication, the time index, size counters), planned first and applied once the
//!   storage write behind it succeeded, so memory never runs ahead of disk.
//! - [`watermarks::Watermarks`]: a partition's written, durable and visible ends, and where a
//!   fetch may start and whether it must wait.
//! - [`group_commit::GroupCommit`]: which appends a flush covers, when to start one, and the
//!   fail-stop after a failed flush.
//! - [`retention::RetentionPolicy`]: which of the oldest batches retention removes.
//! - [`groups::Coordinator`]: consumer-group membership, assignment and expiry, with the
//!   time of each call passed in.
//!
//! Shells put them on real parts: `silt-storage` on sled, `silt-broker` on tokio and quinn.
//! Tests drive them step by step, and `tests/simulation.rs` runs seeded interleavings of
//! produces, retries, flushes, fetches and crashes against a model.
//!
//! Deliberately absent: anything that waits, reads the clock or touches a file. The
//! replication work puts a consensus log between [`watermarks::Watermarks::handle_durable`]
//! and [`watermarks::Watermarks::handle_committed`]: on one node a durable record is
//! committed; on several, a quorum decides.

#![forbid(unsafe_code)]

pub mod group_commit;
pub mod groups;
pub mod partition;
pub mod retention;
pub mod watermarks;
