//! Wall-clock time as Silt's messages and records carry it: milliseconds since the Unix epoch.
//!
//! A pure conversion: this crate never reads the clock, so callers pass `SystemTime::now()`
//! (or any instant a test picks).

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` in milliseconds since the Unix epoch. An instant before the epoch (a clock set far
/// back) gives 0, and one beyond what an `i64` of milliseconds holds gives `i64::MAX`.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Milliseconds count from the epoch, and instants before it are clamped to 0.
    #[test]
    fn unix_ms_counts_from_the_epoch_and_clamps_before_it() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_micros(1_234_999)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
