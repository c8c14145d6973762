//! Host runtime for Silt processors: runs WebAssembly modules that follow
//! `docs/processor-abi.md` over record batches, under per-processor limits.
//!
//! (crate doc completed below)

mod config;
mod error;
mod instance;
mod params;
mod runtime;

pub use config::{Limits, RuntimeConfig, MEMORY_BYTES_CAP};
pub use error::RuntimeError;
pub use instance::{Instance, Module, ABI_VERSION, GUEST_MESSAGE_BYTES_MAX, INPUT_BUFFER_BYTES_MIN};
pub use params::{PARAMS_PAIRS_MAX, PARAM_KEY_BYTES_MAX, PARAM_VALUE_BYTES_MAX};
pub use runtime::Runtime;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_cross_threads_as_the_broker_needs() {
        // Proves the thread-safety contract: Runtime and Module are shared, Instance is moved.
        assert_send_sync::<Runtime>();
        assert_send_sync::<Module>();
        assert_send::<Instance>();
    }
}
