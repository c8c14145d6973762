//! Per-device sequence state: what is durable, what is in flight, what comes next.
//!
//! Shared by every connection, so a device that reconnects (or is on two connections at
//! once) is still deduplicated. The durable part is loaded from and recorded in the journal.

use dashmap::DashMap;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Every sequence up to this one is durable (0: none yet).
    durable: u32,
    /// Highest sequence handed to the appender; `>= durable`.
    submitted: u32,
}

/// What to do with a data frame's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The next sequence: submit it (it is now counted as in flight).
    Next,
    /// Already durable: ack again with the cumulative ack, store nothing.
    Duplicate { durable: u32 },
    /// Submitted, not yet durable: its ack will come; do nothing.
    InFlight,
    /// Beyond the next sequence: nack, the device resends from `durable + 1`.
    OutOfOrder { durable: u32 },
}

#[derive(Default)]
pub struct Sequences {
    devices: DashMap<String, State>,
}

impl Sequences {
    /// The state at startup: each device's durable sequence from the journal, and the device
    /// sequences of journaled rounds not yet confirmed, which count as in flight: the
    /// appender sends those rounds again before anything else, so a retransmission of one of
    /// their frames must wait for that, not be submitted a second time.
    pub fn load(
        durable: impl IntoIterator<Item = (String, u32)>,
        in_flight: impl IntoIterator<Item = (String, u32)>,
    ) -> Sequences {
        let devices: DashMap<String, State> = DashMap::new();
        for (id, seq) in durable {
            devices.insert(id, State { durable: seq, submitted: seq });
        }
        for (id, seq) in in_flight {
            let mut s = devices.entry(id).or_default();
            s.submitted = s.submitted.max(seq);
        }
        Sequences { devices }
    }

    /// The device's cumulative ack.
    pub fn durable(&self, device: &str) -> u32 {
        self.devices.get(device).map_or(0, |s| s.durable)
    }

    /// A hello: the device says the next data sequence it will send (`next`, 0 if it keeps
    /// no counter). A device new to this bridge starts there, so one that moves from another
    /// bridge keeps its counter; a known device with nothing in flight that skipped ahead (it
    /// dropped frames it will never send) moves there too. Returns the cumulative ack.
    pub fn hello(&self, device: &str, next: u32) -> u32 {
        let mut s = self.devices.entry(device.to_string()).or_default();
        let claimed = next.saturating_sub(1);
        if claimed > s.durable && s.submitted == s.durable {
            s.durable = claimed;
            s.submitted = claimed;
        }
        s.durable
    }

    /// Decides about `seq` and, for `Next`, records it as submitted.
    pub fn decide(&self, device: &str, seq: u32) -> Decision {
        let mut entry = self.devices.entry(device.to_string()).or_default();
        let s = &mut *entry;
        if seq == 0 {
            // Sequence 0 is reserved for frames that carry none; data must not use it.
            return Decision::OutOfOrder { durable: s.durable };
        }
        if seq <= s.durable {
            Decision::Duplicate { durable: s.durable }
        } else if seq <= s.submitted {
            Decision::InFlight
        } else if seq == s.submitted + 1 {
            s.submitted = seq;
            Decision::Next
        } else {
            Decision::OutOfOrder { durable: s.durable }
        }
    }

    /// Records `seq` durable (the appender confirmed it) and returns the cumulative ack.
    pub fn complete(&self, device: &str, seq: u32) -> u32 {
        let mut s = self.devices.entry(device.to_string()).or_default();
        s.durable = s.durable.max(seq);
        s.submitted = s.submitted.max(s.durable);
        s.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_go_next_in_flight_durable_and_refuse_gaps() {
        let s = Sequences::load([("a".to_string(), 4)], []);
        assert_eq!(s.decide("a", 3), Decision::Duplicate { durable: 4 });
        assert_eq!(s.decide("a", 6), Decision::OutOfOrder { durable: 4 });
        assert_eq!(s.decide("a", 5), Decision::Next);
        assert_eq!(s.decide("a", 5), Decision::InFlight);
        assert_eq!(s.decide("a", 6), Decision::Next);
        assert_eq!(s.complete("a", 5), 5);
        assert_eq!(s.decide("a", 5), Decision::Duplicate { durable: 5 });
        assert_eq!(s.complete("a", 6), 6);
        // A new device starts where its hello says; one without a counter at 1.
        assert_eq!(s.hello("b", 40), 39);
        assert_eq!(s.decide("b", 39), Decision::Duplicate { durable: 39 });
        assert_eq!(s.decide("b", 0), Decision::OutOfOrder { durable: 39 });
        assert_eq!(s.decide("b", 40), Decision::Next);
        assert_eq!(s.hello("c", 0), 0);
        assert_eq!(s.decide("c", 1), Decision::Next);
        // A known device that skipped ahead with nothing in flight moves; with frames in
        // flight it does not.
        assert_eq!(s.hello("a", 20), 19);
        assert_eq!(s.decide("a", 20), Decision::Next);
        assert_eq!(s.hello("a", 30), 19);
    }

    #[test]
    fn journaled_rounds_count_as_in_flight_after_a_restart() {
        let s = Sequences::load([("a".to_string(), 4)], [("a".to_string(), 6), ("b".to_string(), 2)]);
        assert_eq!(s.decide("a", 5), Decision::InFlight);
        assert_eq!(s.decide("a", 6), Decision::InFlight);
        assert_eq!(s.decide("a", 7), Decision::Next);
        assert_eq!(s.decide("b", 1), Decision::InFlight);
        assert_eq!(s.hello("b", 9), 0, "a device with rounds in flight does not skip ahead");
        assert_eq!(s.complete("a", 6), 6);
    }
}
