//! LEB128 unsigned varints and the zigzag mapping, as `docs/record-batch.md` specifies them:
//! silt-wire's `no_std` ones, the same code the broker encodes and decodes batches with.

pub use silt_wire::varint::{decode, encode, len, unzigzag, zigzag, VarintError, LEN_MAX};
