//! The processor host of the device tier: runs WebAssembly modules that follow
//! `docs/processor-abi.md` on the wasmi interpreter, `no_std` with `alloc`, so that firmware
//! can embed it and a processor deployed to the broker can run, unchanged, on a device or in a
//! bridge with the same output bytes (docs/design.md, decision 12: one processor ABI on every
//! tier).
//!
//! [`Module::new`] validates a module and checks it against the ABI (no imports; the ABI's
//! exports with their types); [`Module::instantiate`] makes an [`Instance`] under [`Limits`]
//! and calls `silt_abi_version`, `silt_alloc(8)` and `silt_init`; the instance's
//! [`process`](Instance::process), [`snapshot`](Instance::snapshot),
//! [`restore`](Instance::restore) and [`counters`](Instance::counters) are the ABI's calls.
//! Errors are one [`Error`] enum whose messages follow the broker's.
//!
//! # What it enforces
//!
//! - *Nothing imported*, nothing linked. With wasmi's deterministic profile (every NaN an
//!   operation produces is the canonical NaN, as the broker's cranelift makes it), no threads,
//!   no SIMD and no memory64, a module computes the same bytes here as in the broker.
//! - *Time per call*: wasmi fuel, [`Limits::fuel_per_call`] for each call (and for a start
//!   function). Fuel counts instructions, so the limit is deterministic: a call stops at the
//!   same instruction on every run, which a device without a spare timer can afford.
//! - *Memory*: a limiter per store; `memory.grow` past [`Limits::memory_bytes_max`] returns
//!   -1 and a trap that follows says the limit was hit (or that the heap ran out). Tables are
//!   capped at [`TABLE_ELEMENTS_MAX`] elements and wasmi's value stack and call depth at
//!   fixed sizes, since all of them live on the host's heap.
//! - *Output*: the result slot's length is checked against the limit and its range against
//!   memory before anything is read; output records are framed as record-batch validation
//!   rule 6 requires (`silt_wire::batch::record::scan`, the broker's code), counters blocks are
//!   read by `silt_wire::counters::decode`.
//! - *Failure stays local*: any error poisons that instance; nothing else is touched.
//!
//! # What it deliberately does not do
//!
//! No threads, clock, I/O or storage; no checksums, decompression or signature checks: the
//! input must be one stamped, validated, uncompressed batch (its framing and records are
//! re-checked, its checksums not), and a `silt.signature` section is checked before
//! [`Module::new`] (custom sections are ignored here). It does not wrap the output into a
//! batch (that needs checksums): [`Output`] gives the records, their count and their largest
//! event time, ready for whoever builds the batch. No SIMD: Rust modules built for
//! `wasm32-unknown-unknown` use none unless built with `+simd128`, and wasmi's `simd` feature
//! would add its vector instructions to every firmware; a module with SIMD is refused by
//! [`Module::new`] as invalid.
//!
//! # How it differs from the broker's host (`silt-runtime`)
//!
//! - Interpreted rather than compiled, with fuel instead of a wall-clock time limit.
//! - Smaller default limits ([`Limits::default`]); [`Limits::broker_like`] gives the broker's.
//! - The input buffer starts at [`Limits::input_buffer_bytes_min`], 4 KiB by default, not the
//!   ABI's 64 KiB (which `broker_like` keeps).
//! - `process` returns the records in place instead of an output batch, and `snapshot` the
//!   state in place: no copy of either on a device.
//! - Proposals: the ABI's list without SIMD; the broker accepts SIMD.

#![no_std]

extern crate alloc;

mod error;
mod instance;
mod limits;
mod module;
mod params;
#[cfg(feature = "readings")]
pub mod readings;

pub use error::Error;
pub use instance::{Instance, Output, ABI_VERSION, GUEST_MESSAGE_BYTES_MAX, TABLE_ELEMENTS_MAX};
pub use limits::{Limits, MEMORY_BYTES_CAP};
pub use module::Module;
pub use params::{PARAMS_PAIRS_MAX, PARAM_KEY_BYTES_MAX, PARAM_VALUE_BYTES_MAX};
