//! When a simulated device generates its next frame: at a set rate from a random phase, or as
//! fast as its window allows, until a frame count or a duration is reached.

use std::time::{Duration, Instant};

use crate::DeviceSettings;

/// When a device may generate frames.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) started: bool,
    /// No more frames: the count or the duration is reached.
    pub(crate) over: bool,
    next_due: Instant,
    until: Option<Instant>,
}

impl Schedule {
    pub(crate) fn new(now: Instant) -> Schedule {
        Schedule { started: false, over: false, next_due: now, until: None }
    }

    pub(crate) fn start(&mut self, s: &mut DeviceSettings, at: Instant) {
        self.started = true;
        // Devices start at a random phase of their interval, so a fleet at 1 frame/s does not
        // send 10,000 frames in the same millisecond each second.
        let phase = s.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(s.rng.next_f64()));
        self.next_due = at + phase;
        self.until = s.duration.map(|d| at + d);
    }

    /// Whether one more frame is due now (and moves the schedule if so); `late` is set when it
    /// is more than one interval behind.
    pub(crate) fn due(
        &mut self,
        s: &DeviceSettings,
        generated: u64,
        room: bool,
        now: Instant,
        late: &mut u64,
    ) -> bool {
        if !self.started || self.over {
            return false;
        }
        if s.frames.is_some_and(|m| generated >= m) || self.until.is_some_and(|u| now >= u) {
            self.over = true;
            return false;
        }
        if !room {
            return false;
        }
        match s.interval {
            None => true,
            Some(iv) if now >= self.next_due => {
                if now >= self.next_due + iv {
                    *late += 1;
                }
                self.next_due += iv;
                true
            }
            Some(_) => false,
        }
    }

    /// When the next frame is due, if one can be.
    pub(crate) fn wake(&self, s: &DeviceSettings) -> Option<Instant> {
        if !self.started || self.over {
            return None;
        }
        let next = s.interval.map(|_| self.next_due);
        match (next, self.until) {
            (Some(n), Some(u)) => Some(n.min(u)),
            (n, u) => n.or(u),
        }
    }
}
