//! The wall clock, read by the broker's shells (request handlers and tasks) and passed into
//! what they call; nothing below them reads it.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
pub fn now_ms() -> i64 {
    silt_wire::time::unix_ms(SystemTime::now())
}
