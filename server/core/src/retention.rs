//! Which of a partition's oldest batches retention removes.

/// A topic's retention settings, resolved against the time of one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Batches appended before this time (ms since the epoch) expire.
    pub cutoff_ms: Option<i64>,
    /// The partition is trimmed while it holds more bytes than this.
    pub bytes_max: Option<u64>,
}

/// The oldest retained batch, as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldestBatch {
    pub append_time_ms: i64,
    pub next_offset: u64,
}

impl RetentionPolicy {
    /// The policy of a pass at `now_ms` for a topic keeping `retention_ms` and `retention_bytes`.
    pub fn at(now_ms: i64, retention_ms: Option<u64>, retention_bytes: Option<u64>) -> RetentionPolicy {
        let cutoff_ms = retention_ms.map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
        RetentionPolicy { cutoff_ms, bytes_max: retention_bytes }
    }

    /// True when the oldest batch goes, given the log's end and the bytes it holds now. The
    /// newest batch always stays, so the log's end survives a restart.
    pub fn removes(&self, oldest: OldestBatch, log_end: u64, size_bytes: u64) -> bool {
        if oldest.next_offset >= log_end {
            return false;
        }
        let expired = self.cutoff_ms.is_some_and(|cutoff| oldest.append_time_ms < cutoff);
        let too_big = self.bytes_max.is_some_and(|max| size_bytes > max);
        expired || too_big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves expiry by time and by size, and that the newest batch always stays.
    #[test]
    fn expiry_by_time_and_size() {
        let p = RetentionPolicy::at(10_000, Some(1_000), None);
        let old = OldestBatch { append_time_ms: 8_999, next_offset: 5 };
        let fresh = OldestBatch { append_time_ms: 9_000, next_offset: 5 };
        assert!(p.removes(old, 10, 0));
        assert!(!p.removes(fresh, 10, 0));
        assert!(!p.removes(old, 5, 0), "the newest batch stays");
        let s = RetentionPolicy::at(0, None, Some(100));
        assert!(s.removes(fresh, 10, 101));
        assert!(!s.removes(fresh, 10, 100));
        assert!(!RetentionPolicy::at(0, Some(u64::MAX), None).removes(old, 10, 0), "no overflow");
    }
}
