//! A partition's three ends, and where a fetch may start.
//!
//! - *written*: the end of what the partition's log holds, durable or not;
//! - *durable*: the end of what a finished flush covers;
//! - *visible*: the end of what consumers may read. On one node a durable record is committed,
//!   so the shell calls [`Watermarks::handle_durable`], which raises both; a replicated
//!   partition raises *visible* with [`Watermarks::handle_committed`] once a quorum holds it.
//!
//! *Architecture Invariant*: visible <= durable <= written, and none of them moves back while
//! the process runs. After a crash the partition reopens with all three at the end of what
//! storage recovered, which a flush covered.

/// Why a fetch cannot start where it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchRefused {
    /// The asked offset is past the visible end.
    BeyondEnd { asked: u64, visible: u64 },
}

/// Where a fetch reads from, and whether it waits for records first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchStart {
    /// The first offset to read: the asked one, moved up to the log start.
    pub start: u64,
    /// True when nothing is readable yet and the request asked to wait.
    pub wait: bool,
}

/// The written, durable and visible ends of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    written: u64,
    durable: u64,
    visible: u64,
}

impl Watermarks {
    /// A partition opened with `end` recovered from storage.
    pub fn recovered(end: u64) -> Watermarks {
        Watermarks { written: end, durable: end, visible: end }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn durable(&self) -> u64 {
        self.durable
    }

    pub fn visible(&self) -> u64 {
        self.visible
    }

    /// Records written up to `end` (not yet durable).
    pub fn handle_written(&mut self, end: u64) {
        self.written = self.written.max(end);
    }

    /// A flush covered the records up to `end`; on one node they are committed too. Returns
    /// the new visible end when it moved.
    pub fn handle_durable(&mut self, end: u64) -> Option<u64> {
        assert!(end <= self.written, "durable end {end} past the written end {}", self.written);
        self.durable = self.durable.max(end);
        self.handle_committed(end)
    }

    /// The records up to `end` are committed (a quorum holds them, when replicated). Returns the
    /// new visible end when it moved.
    pub fn handle_committed(&mut self, end: u64) -> Option<u64> {
        assert!(end <= self.durable, "committed end {end} past the durable end {}", self.durable);
        (end > self.visible).then(|| {
            self.visible = end;
            end
        })
    }

    /// Where a fetch that resolved its start to `asked` reads from, given the log start.
    pub fn fetch_start(
        &self,
        asked: u64,
        log_start: u64,
        wait_asked: bool,
    ) -> Result<FetchStart, FetchRefused> {
        if asked > self.visible {
            return Err(FetchRefused::BeyondEnd { asked, visible: self.visible });
        }
        let start = asked.max(log_start);
        Ok(FetchStart { start, wait: wait_asked && start >= self.visible })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves records become visible only once durable, and the ends never move back.
    #[test]
    fn visible_follows_durable() {
        let mut w = Watermarks::recovered(10);
        w.handle_written(15);
        assert_eq!(w.visible(), 10);
        assert_eq!(w.handle_durable(12), Some(12));
        assert_eq!(w.handle_durable(11), None, "an older flush moves nothing back");
        assert_eq!((w.written(), w.durable(), w.visible()), (15, 12, 12));
    }

    /// Proves a replicated partition keeps records invisible between durable and committed.
    #[test]
    fn committed_is_apart_from_durable() {
        let mut w = Watermarks::recovered(0);
        w.handle_written(5);
        w.durable = 5;
        assert_eq!(w.visible(), 0);
        assert_eq!(w.handle_committed(3), Some(3));
        assert_eq!(w.handle_committed(5), Some(5));
    }

    /// Proves a fetch past the visible end is refused, one below the log start moves up, and
    /// one at the end waits only when asked to.
    #[test]
    fn fetch_starts() {
        let w = Watermarks::recovered(20);
        assert_eq!(w.fetch_start(21, 0, true), Err(FetchRefused::BeyondEnd { asked: 21, visible: 20 }));
        assert_eq!(w.fetch_start(3, 8, true), Ok(FetchStart { start: 8, wait: false }));
        assert_eq!(w.fetch_start(20, 8, true), Ok(FetchStart { start: 20, wait: true }));
        assert_eq!(w.fetch_start(20, 8, false), Ok(FetchStart { start: 20, wait: false }));
    }

    /// Proves the durable end cannot pass what was written (a shell bug stops at once).
    #[test]
    #[should_panic(expected = "past the written end")]
    fn durable_cannot_pass_written() {
        Watermarks::recovered(0).handle_durable(1);
    }
}
