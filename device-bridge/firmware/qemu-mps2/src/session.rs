//! The device side of the frame exchange (docs/device-frames.md, "Exchange"), sans-IO: frames
//! from the bridge go in through [`Session::handle`], bytes to write come out of
//! [`Session::poll_transmit`], and the caller passes the time in. It touches no UART and reads
//! no clock, so the main loop owns every wait.
//!
//! Sequences: the first hello's ack is this boot's base; samples `base + 1 ..= base + count`
//! are sent, at most [`WINDOW_FRAMES`] unacked at once, and resent in order from the first
//! unacked one on an ack timeout or an *out of order* / *unavailable* nack (go-back-N). A *no
//! hello* nack (the bridge reconnected or restarted) sends the hello again, and the hello's ack
//! says where to resume.

use silt_frame::{
    decode_verified, encode_stuffed, Body, Data, Frame, FrameError, Hello, Key, Nack, NackReason, Reading,
    Time, KEY_BYTES, STUFFED_BYTES_MAX,
};

use crate::sensor;

/// Data frames sent and not yet acked, at most. Four keeps the line busy while an ack travels
/// back without making a go-back resend many frames.
pub const WINDOW_FRAMES: u32 = 4;
/// How long the oldest unacked frame waits for its ack before the window is resent. QEMU's
/// clock follows the host's, but a loaded 2-core CI host can stall the bridge for a while, so a
/// full second, far above the few ms an ack takes here.
pub const ACK_TIMEOUT_MS: u64 = 1_000;
/// How long a hello waits for its ack before it is sent again.
pub const HELLO_TIMEOUT_MS: u64 = 1_000;
/// Pause before resending after a nack *unavailable* (the bridge cannot store right now).
pub const UNAVAILABLE_BACKOFF_MS: u64 = 200;
/// Fatal nacks tagged with the all-zero key (which the spec makes hints only) in a row, with no
/// frame verified under our key between them, before the device believes them and stops.
/// Three hellos' worth, so that one stray frame cannot stop a device, yet a device the bridge
/// does not know stops within seconds instead of retrying forever.
pub const HINTS_MAX: u32 = 3;
/// Bytes [`Session::poll_transmit`] may write: a stuffed frame and a leading 0x00.
pub const TRANSMIT_BYTES_MAX: usize = STUFFED_BYTES_MAX + 1;

const ZERO_KEY: Key = [0; KEY_BYTES];

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Every sample up to the last one is acked.
    Done,
    /// The bridge refused the device; `verified` is false when the refusal came as repeated
    /// all-zero-key hints rather than under the device's key.
    Refused {
        reason: NackReason,
        verified: bool,
    },
}

/// Counters for the summary line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub data_sent: u32,
    pub retransmits: u32,
    pub hellos_sent: u32,
    pub nacks: u32,
    /// Frames from the bridge that did not decode or verify (line noise, hints).
    pub frames_dropped: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a hello's ack; `sent_ms` is when the hello went out (None: not yet).
    Hello {
        sent_ms: Option<u64>,
    },
    Streaming,
}

pub struct Session<'a> {
    device: &'a str,
    key: &'a Key,
    firmware: &'a str,
    count: u32,
    phase: Phase,
    /// The first hello's ack: this boot sends `base + 1 ..= base + count`.
    base: Option<u32>,
    /// Cumulative ack: every sequence up to it is durable.
    acked: u32,
    /// Highest sequence sent so far.
    sent_max: u32,
    /// Next sequence to send (a retransmission while it is at most `sent_max`).
    next: u32,
    /// When the oldest unacked frame times out; None when nothing is in flight.
    deadline_ms: Option<u64>,
    /// No data is sent before this time (after a nack *unavailable*).
    hold_until_ms: u64,
    /// Sample time of the frames in flight, by sequence modulo the window, tagged with the
    /// sequence so that a stale slot is never taken for a current one.
    ticks: [(u32, u64); WINDOW_FRAMES as usize],
    /// The ack at the last rewind a nack caused; nacks carrying it or less are stale.
    nack_rewound_at: Option<u32>,
    hints: u32,
    outcome: Outcome,
    pub stats: Stats,
}

impl<'a> Session<'a> {
    /// A session that delivers `count` samples as `device`, tagging with `key`.
    pub fn new(device: &'a str, key: &'a Key, firmware: &'a str, count: u32) -> Session<'a> {
        assert!(count > 0, "nothing to send");
        Session {
            device,
            key,
            firmware,
            count,
            phase: Phase::Hello { sent_ms: None },
            base: None,
            acked: 0,
            sent_max: 0,
            next: 1,
            deadline_ms: None,
            hold_until_ms: 0,
            ticks: [(0, 0); WINDOW_FRAMES as usize],
            nack_rewound_at: None,
            hints: 0,
            outcome: Outcome::Running,
            stats: Stats::default(),
        }
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The cumulative ack and this boot's sequence range, once the first hello is acked.
    pub fn progress(&self) -> Option<(u32, core::ops::RangeInclusive<u32>)> {
        self.base.map(|base| (self.acked, base + 1..=self.last()))
    }

    fn last(&self) -> u32 {
        self.base.map_or(u32::MAX, |base| base.saturating_add(self.count))
    }

    /// Writes the next bytes to send into `out` (at least [`TRANSMIT_BYTES_MAX`] long) and
    /// returns how many, or None when nothing is due before more input or time passes.
    pub fn poll_transmit(&mut self, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        if self.outcome != Outcome::Running {
            return None;
        }
        match self.phase {
            Phase::Hello { sent_ms } => {
                if sent_ms.is_some_and(|sent| now_ms < sent + HELLO_TIMEOUT_MS) {
                    return None;
                }
                self.phase = Phase::Hello { sent_ms: Some(now_ms) };
                self.stats.hellos_sent += 1;
                let hello = Hello { device: self.device, tick_ms: now_ms, firmware: self.firmware };
                // A lone 0x00 first ends whatever a previous writer left half-sent on the line.
                out[0] = 0;
                // The hello's seq is the next data sequence: 0 on the first hello (no counter
                // survives a reboot), then the first frame not known to be durable, so that a
                // bridge with no state for this device starts there.
                let seq = if self.base.is_some() { self.acked + 1 } else { 0 };
                let frame = Frame { seq, ack: 0, body: Body::Hello(hello) };
                let n = encode_stuffed(&frame, self.key, &mut out[1..]).expect("a hello fits a frame");
                Some(1 + n)
            }
            Phase::Streaming => self.poll_data(now_ms, out),
        }
    }

    fn poll_data(&mut self, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        if now_ms < self.hold_until_ms {
            return None;
        }
        if self.deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
            self.rewind(self.acked);
        }
        let seq = self.next;
        if seq > self.last() {
            return None;
        }
        if seq <= self.sent_max {
            self.stats.retransmits += 1;
        } else if seq - self.acked > WINDOW_FRAMES {
            return None;
        } else {
            self.sent_max = seq;
        }
        let tick_ms = self.tick_of(seq, now_ms);
        let s = sensor::sample(seq);
        let mut data =
            Data { device: self.device, time: Time::TickMs(tick_ms), readings: Default::default() };
        for reading in [
            Reading::Temperature(s.temperature_c),
            Reading::Humidity(s.humidity_pct),
            Reading::Numeric { channel: sensor::SUPPLY_CHANNEL, value: s.supply_v },
        ] {
            data.readings.push(reading).expect("three readings fit READINGS_MAX");
        }
        let frame = Frame { seq, ack: 0, body: Body::Data(data) };
        let n = encode_stuffed(&frame, self.key, out).expect("a data frame fits a frame");
        self.next = seq + 1;
        self.stats.data_sent += 1;
        if self.deadline_ms.is_none() {
            self.deadline_ms = Some(now_ms + ACK_TIMEOUT_MS);
        }
        Some(n)
    }

    /// The sample time of `seq`: the time it was first sent, or now for a first send (or for a
    /// frame the bridge asks for again after it left the window, which a bridge that keeps its
    /// acks durable never does).
    fn tick_of(&mut self, seq: u32, now_ms: u64) -> u64 {
        let slot = &mut self.ticks[(seq % WINDOW_FRAMES) as usize];
        if slot.0 != seq {
            *slot = (seq, now_ms);
        }
        slot.1
    }

    /// Takes one unstuffed frame from the bridge. Frames that do not verify under the device's
    /// key are dropped, except that repeated fatal nacks under the all-zero key end the session
    /// (see [`HINTS_MAX`]).
    pub fn handle(&mut self, bytes: &[u8], now_ms: u64) {
        if self.outcome != Outcome::Running {
            return;
        }
        let frame = match decode_verified(bytes, self.key) {
            Ok(frame) => frame,
            Err(FrameError::BadTag) => {
                self.stats.frames_dropped += 1;
                self.take_hint(bytes);
                return;
            }
            Err(_) => {
                self.stats.frames_dropped += 1;
                return;
            }
        };
        self.hints = 0;
        match (frame.body, self.phase) {
            (Body::Ack, Phase::Hello { .. }) => self.on_hello_ack(frame.ack),
            (Body::Ack | Body::Heartbeat, Phase::Streaming) => self.on_ack(frame.ack, now_ms),
            (Body::Nack(nack), _) => self.on_nack(nack, frame.ack, now_ms),
            // A heartbeat while the hello is unanswered, or a device-side frame echoed back.
            _ => self.stats.frames_dropped += 1,
        }
    }

    fn take_hint(&mut self, bytes: &[u8]) {
        let Ok(Frame { body: Body::Nack(nack), .. }) = decode_verified(bytes, &ZERO_KEY) else {
            return;
        };
        if is_fatal(nack.reason) {
            self.hints += 1;
            if self.hints >= HINTS_MAX {
                self.outcome = Outcome::Refused { reason: nack.reason, verified: false };
            }
        }
    }

    fn on_hello_ack(&mut self, ack: u32) {
        assert!(ack.checked_add(self.count).is_some(), "sequence space exhausted: ack {ack}");
        if self.base.is_none() {
            self.base = Some(ack);
        }
        // The bridge's word is what is durable, even if it is less than it acked before.
        self.acked = ack;
        self.sent_max = self.sent_max.max(ack);
        self.phase = Phase::Streaming;
        self.nack_rewound_at = None;
        self.rewind(ack);
        self.check_done();
    }

    fn on_ack(&mut self, ack: u32, now_ms: u64) {
        // Never beyond what was sent: an ack for frames this boot never sent is not ours.
        let ack = ack.min(self.sent_max);
        if ack <= self.acked {
            return;
        }
        self.acked = ack;
        if self.next <= ack {
            self.next = ack + 1;
        }
        self.deadline_ms = (ack < self.sent_max).then_some(now_ms + ACK_TIMEOUT_MS);
        self.check_done();
    }

    fn on_nack(&mut self, nack: Nack, ack: u32, now_ms: u64) {
        self.stats.nacks += 1;
        if is_fatal(nack.reason) {
            self.outcome = Outcome::Refused { reason: nack.reason, verified: true };
            return;
        }
        if nack.reason == NackReason::NoHello {
            // Every frame in flight gets this nack; one hello answers them all.
            if self.phase == Phase::Streaming {
                self.phase = Phase::Hello { sent_ms: None };
            }
            return;
        }
        if self.phase != Phase::Streaming {
            return;
        }
        self.on_ack(ack, now_ms);
        // The bridge handles frames in order, so after a rewind to `ack + 1` it still nacks
        // the rest of the old window, each with that same ack, before the resent frames reach
        // it. Those nacks are stale: the rewind already answered them, and rewinding again
        // would send the window twice. (If the resent frame is lost too, the ack timeout
        // rewinds.) A nack for a frame not yet resent is stale for the same reason.
        let stale =
            ack < self.acked || self.nack_rewound_at.is_some_and(|at| ack <= at) || nack.seq >= self.next;
        if stale {
            return;
        }
        // Out of order, unavailable, or decode (the frame was damaged on the way): resend
        // from the first unacked frame.
        self.rewind(self.acked);
        self.nack_rewound_at = Some(self.acked);
        if nack.reason == NackReason::Unavailable {
            self.hold_until_ms = now_ms + UNAVAILABLE_BACKOFF_MS;
        }
    }

    /// Resend from `ack + 1` on.
    fn rewind(&mut self, ack: u32) {
        self.next = ack + 1;
        self.deadline_ms = None;
    }

    fn check_done(&mut self) {
        if self.acked >= self.last() {
            self.outcome = Outcome::Done;
        }
    }
}

/// Nacks after which retrying cannot help. *Wrong device* too: this firmware names one device
/// in both hello and data, so the bridge and the device disagree about who it is.
fn is_fatal(reason: NackReason) -> bool {
    matches!(
        reason,
        NackReason::BadTag | NackReason::UnknownDevice | NackReason::Revoked | NackReason::WrongDevice
    )
}
