//! Named counts a processor keeps about its input (records it skipped, and why), which the
//! host shows in `silt processor status` and in its metrics: the optional `silt_counters`
//! export of `docs/processor-abi.md`.
//!
//! A processor fills [`Counters`] in [`Processor::counters`](crate::Processor::counters); the
//! encoding is the ABI's counters block:
//!
//! ```text
//! u32 count
//! count times:
//!     u32 name_len, name_len bytes of name ([a-z0-9_], 1 to 64 bytes)
//!     u64 value
//! ```
//!
//! Values are totals since the processor's state began: a stateful processor keeps them in
//! its snapshot, so they carry on across restarts.
//!
//! [`decode`], [`name_is_valid`] and the limits are silt-wire's (`silt_wire::counters`): the
//! host reads blocks with that same decoder, so a block [`decode`] accepts here (in
//! `testing::Harness::counters`, say) is one the broker accepts.

use alloc::vec::Vec;

use crate::binary::Write as _;
use crate::Error;

pub use silt_wire::counters::{decode, name_is_valid, CountersError, COUNTERS_MAX, COUNTER_NAME_BYTES_MAX};

/// The counters block being written; see the module docs.
#[derive(Debug, Default)]
pub struct Counters {
    bytes: Vec<u8>,
    count: u32,
    error: Option<Error>,
}

impl Counters {
    /// An empty block.
    pub const fn new() -> Self {
        Counters { bytes: Vec::new(), count: 0, error: None }
    }

    /// Reports `name` at `value`. A name outside `[a-z0-9_]{1,64}`, a repeated name or a 17th
    /// counter makes the whole `silt_counters` call fail with a message naming it.
    pub fn set(&mut self, name: &str, value: u64) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if !name_is_valid(name.as_bytes()) {
            self.error = Some(Error::msg(alloc::format!(
                "counter name {name:?}: use 1 to {COUNTER_NAME_BYTES_MAX} of [a-z0-9_]"
            )));
        } else if self.count as usize >= COUNTERS_MAX {
            self.error = Some(Error::msg(alloc::format!("more than {COUNTERS_MAX} counters at {name:?}")));
        } else if self.names().any(|n| n == name.as_bytes()) {
            self.error = Some(Error::msg(alloc::format!("counter {name:?} set twice")));
        } else {
            if self.bytes.is_empty() {
                self.bytes.put_u32(0);
            }
            self.bytes.put_u32(name.len() as u32);
            self.bytes.extend_from_slice(name.as_bytes());
            self.bytes.put_u64(value);
            self.count += 1;
            self.bytes[..4].copy_from_slice(&self.count.to_le_bytes());
        }
        self
    }

    /// Empties the block for the next call (keeping its allocation).
    pub fn reset(&mut self) {
        self.bytes.clear();
        self.count = 0;
        self.error = None;
    }

    /// The encoded block (empty for no counters), or the first misuse.
    pub fn finish(&mut self) -> Result<&[u8], Error> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(&self.bytes),
        }
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        decode_names(&self.bytes)
    }
}

fn decode_names(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 4;
    core::iter::from_fn(move || {
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let name = bytes.get(at + 4..at + 4 + len)?;
        at += 4 + len + 8;
        Some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use proptest::prelude::*;

    /// What `set` writes, `decode` reads back; misuse is an error naming the counter.
    #[test]
    fn round_trip_and_misuse() {
        let mut c = Counters::new();
        assert_eq!(c.finish().unwrap(), b"");
        c.set("skipped_no_field", 3).set("keys_over_max", u64::MAX);
        let bytes = c.finish().unwrap().to_vec();
        assert_eq!(decode(&bytes).unwrap(), [("skipped_no_field", 3), ("keys_over_max", u64::MAX)]);
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        c.reset();
        assert!(c.set("Bad", 1).finish().unwrap_err().to_string().contains("\"Bad\""));
        c.reset();
        assert!(c.set("a", 1).set("a", 2).finish().unwrap_err().to_string().contains("twice"));
        c.reset();
        for i in 0..=COUNTERS_MAX {
            c.set(&alloc::format!("c{i}"), 0);
        }
        assert!(c.finish().unwrap_err().to_string().contains("more than 16"));
    }

    proptest! {
        /// Whatever valid counters are set, silt-wire's decoder (the host's) reads them back
        /// in order.
        #[test]
        fn what_set_writes_the_host_decodes(
            values in proptest::collection::vec(any::<u64>(), 0..=COUNTERS_MAX),
            wide in any::<bool>(),
        ) {
            let names: Vec<String> = (0..values.len())
                .map(|i| if wide { alloc::format!("{i:_>64}") } else { alloc::format!("c{i}") })
                .collect();
            let mut c = Counters::new();
            for (name, value) in names.iter().zip(&values) {
                c.set(name, *value);
            }
            let bytes = c.finish().unwrap().to_vec();
            let decoded = decode(&bytes).unwrap();
            prop_assert!(decoded.iter().map(|(n, _)| *n).eq(names.iter().map(|n| n.as_str())));
            prop_assert!(decoded.iter().map(|(_, v)| *v).eq(values.iter().copied()));
        }
    }
}
