//! The processor's side of the ABI calls, minus the raw pointers: what the exports and the
//! [`testing`](crate::testing) harness both drive.
//!
//! The exports turn `(ptr, len)` pairs into slices, call a [`Guest`] method and put its
//! answer (output, snapshot, or error message) into the result slot. Everything with a rule
//! in it (call order, limits, message length) is here, where native tests reach it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::{Batch, Counters, Error, Output, Params, Processor, Stateful};

/// Largest snapshot the host accepts (`docs/processor-abi.md`, limits).
pub const SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The host shows at most this many bytes of an error message.
pub const MESSAGE_BYTES_MAX: usize = 4096;

/// One processor instance and the buffers its answers live in until the host's next call.
#[derive(Debug)]
pub struct Guest<P> {
    processor: Option<P>,
    output: Output,
    state: Vec<u8>,
    counters: Counters,
    message: String,
}

impl<P> Default for Guest<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> Guest<P> {
    /// A guest before `silt_init`. `const` so the exports can keep it in a static.
    pub const fn new() -> Self {
        Guest {
            processor: None,
            output: Output::new(),
            state: Vec::new(),
            counters: Counters::new(),
            message: String::new(),
        }
    }

    /// The processor, once `init` succeeded.
    pub fn processor(&self) -> Option<&P> {
        self.processor.as_ref()
    }

    /// Writes `error` as the operator's message, cut to [`MESSAGE_BYTES_MAX`] on a character
    /// boundary, and returns its bytes (valid until the next call).
    pub fn error_message(&mut self, error: &Error) -> &[u8] {
        self.message.clear();
        let _ = write!(self.message, "{error}");
        if self.message.len() > MESSAGE_BYTES_MAX {
            let mut cut = MESSAGE_BYTES_MAX;
            while !self.message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.message.truncate(cut);
        }
        self.message.as_bytes()
    }
}

impl<P: Processor> Guest<P> {
    /// `silt_init`: decodes the parameters and builds the processor. A second call replaces
    /// the processor (the host does not make one).
    pub fn init(&mut self, params: &[u8]) -> Result<(), Error> {
        let params = Params::decode(params)?;
        self.processor = Some(P::init(&params)?);
        Ok(())
    }

    /// `silt_process`: returns the encoded output records (empty for none).
    pub fn process(&mut self, batch: &[u8]) -> Result<&[u8], Error> {
        let processor = self.processor.as_mut().ok_or(Error::NotInitialised { call: "silt_process" })?;
        let batch = Batch::new(batch)?;
        self.output.reset(batch.first_timestamp_ms());
        processor.process(&batch, &mut self.output)?;
        if let Some(error) = self.output.take_error() {
            return Err(error);
        }
        Ok(self.output.as_bytes())
    }

    /// `silt_counters`: returns the encoded counters block (empty for none).
    pub fn counters(&mut self) -> Result<&[u8], Error> {
        let processor = self.processor.as_ref().ok_or(Error::NotInitialised { call: "silt_counters" })?;
        self.counters.reset();
        processor.counters(&mut self.counters);
        self.counters.finish()
    }
}

impl<P: Stateful> Guest<P> {
    /// `silt_snapshot`: returns the state bytes.
    pub fn snapshot(&mut self) -> Result<&[u8], Error> {
        let processor = self.processor.as_ref().ok_or(Error::NotInitialised { call: "silt_snapshot" })?;
        self.state.clear();
        processor.snapshot(&mut self.state);
        if self.state.len() > SNAPSHOT_BYTES_MAX {
            let size = self.state.len();
            // Do not hold on to a buffer the host will never take.
            self.state = Vec::new();
            return Err(Error::SnapshotTooLarge { size, max: SNAPSHOT_BYTES_MAX });
        }
        Ok(&self.state)
    }

    /// `silt_restore`: loads a snapshot into the processor `init` built.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), Error> {
        let processor = self.processor.as_mut().ok_or(Error::NotInitialised { call: "silt_restore" })?;
        processor.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;
    use alloc::string::ToString;

    struct Echo;
    impl Processor for Echo {
        fn init(params: &Params<'_>) -> Result<Self, Error> {
            params.expect_only(&[])?;
            Ok(Echo)
        }
        fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
            for r in batch.records() {
                if r.value == b"fail" {
                    return Err(Error::msg("asked to fail"));
                }
                out.pass(&r);
            }
            Ok(())
        }
    }

    /// Calls out of order are errors, not panics, and the message says which call.
    #[test]
    fn call_order() {
        let mut g = Guest::<Echo>::new();
        let batch = BatchBuilder::new(0).record(1, "", "x").build();
        let e = g.process(&batch).unwrap_err();
        assert_eq!(e.to_string(), "silt_process called before a successful silt_init");
        g.init(&[]).unwrap();
        assert_eq!(g.process(&batch).unwrap(), &batch[crate::batch::HEADER_LEN..]);
    }

    /// A processor's error comes back as the message; messages are cut to 4096 bytes on a
    /// character boundary.
    #[test]
    fn error_messages() {
        let mut g = Guest::<Echo>::new();
        let e = g.init(&crate::params::encode(&[("x", "1")]).unwrap()).unwrap_err();
        assert!(g.error_message(&e).starts_with(b"unknown parameter `x`"));
        g.init(&[]).unwrap();
        let e = g.process(&BatchBuilder::new(0).record(1, "", "fail").build()).unwrap_err();
        assert_eq!(g.error_message(&e), b"asked to fail");
        let long = Error::msg("é".repeat(3000));
        let m = g.error_message(&long);
        assert_eq!(m.len(), MESSAGE_BYTES_MAX);
        assert!(core::str::from_utf8(m).is_ok());
    }
}
