//! The device's side of the exchange in `docs/device-frames.md`, without I/O.
//!
//! Samples go into a bounded backlog as they are taken, connected or not. On each connection
//! the link first writes a lone 0x00 (to end whatever an earlier writer left half-sent) and a
//! hello; the hello's ack says which sequence the bridge last made durable, and the backlog is
//! numbered from the one after. Then up to [`IN_FLIGHT_MAX`] data frames go out ahead of the
//! acks. A sample leaves the backlog only when a cumulative ack covers it, so whatever the bridge
//! did not confirm is written again: after an ack timeout, a nack *out of order* or
//! *unavailable*, a re-hello after *no hello*, or a reconnect. Retransmission is go-back-N: every
//! unacked frame again, in order, which is what the bridge expects (it stores only the next
//! sequence, refuses gaps, and acks a duplicate without storing it twice).
//!
//! *Architecture Invariant*: frames on one connection reach the bridge in the order they were
//! written (TCP), and the bridge answers them in that order. The link relies on it to tell a
//! stale nack (one about a frame written before the last go-back) from a fresh one.
//!
//! Not here: sockets, the clock, WiFi (the caller passes `now_ms` and moves the bytes), and
//! persistence: the backlog lives in RAM, so a reboot loses what was not acked. The hello's ack
//! tells a rebooted device where to continue.

use heapless::{Deque, Vec};
use silt_frame::{
    Body, Data, Frame, Hello, KEY_BYTES, Key, Nack, NackReason, READINGS_MAX, Reading, STUFFED_BYTES_MAX,
    Time, decode, encode_stuffed,
};

/// Data frames written and not yet acked, at most. Eight one-second samples: enough to keep the
/// link busy across a WiFi round trip of a few hundred milliseconds, and to catch up a backlog
/// at eight frames per round trip, while a go-back resends little.
pub const IN_FLIGHT_MAX: usize = 8;
/// Samples kept while the bridge does not ack them (disconnected, or the broker down): five
/// minutes at one sample a second, 24 bytes each (7.2 KB of RAM). Past that the oldest is
/// dropped.
pub const BACKLOG_MAX: usize = 300;
/// How long the oldest frame in flight may wait for its ack before the link goes back and
/// writes it again. The bridge acks once the broker has made the append durable (milliseconds
/// on a LAN); three seconds also covers a few TCP retransmissions over a poor WiFi link, and a
/// needless resend costs only bandwidth (the bridge drops duplicates).
pub const ACK_TIMEOUT_MS: u64 = 3_000;
/// Consecutive ack timeouts without any progress before the link gives up on the connection.
pub const ACK_TIMEOUTS_MAX: u32 = 4;
/// How long the hello may wait for its ack before the link gives up on the connection.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;
/// Pause after a nack *unavailable* (the broker could not make the frame durable) before
/// writing again, so that a broker outage is not met with a resend loop.
pub const UNAVAILABLE_HOLD_MS: u64 = 2_000;
/// Room [`Link::poll_transmit`] needs: the largest stuffed frame and the resync 0x00 before it.
pub const TRANSMIT_BYTES_MAX: usize = STUFFED_BYTES_MAX + 1;
/// Numeric channel of the free-heap reading.
pub const FREE_HEAP_CHANNEL: u16 = 1;

/// The key the bridge tags replies with when it cannot name the device's key.
const ZERO_KEY: Key = [0; KEY_BYTES];

/// One measurement, taken once a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds since boot when it was taken: the frame's event time ([`Time::TickMs`]).
    pub tick_ms: u64,
    /// The chip's internal temperature sensor, °C.
    pub temperature_c: f32,
    /// Free bytes in the heap (WiFi buffers come from it), as numeric channel
    /// [`FREE_HEAP_CHANNEL`].
    pub free_heap_bytes: u32,
}

impl Sample {
    fn readings(&self) -> Vec<Reading<'static>, READINGS_MAX> {
        let mut readings = Vec::new();
        let pushed = readings.push(Reading::Temperature(self.temperature_c)).is_ok()
            && readings
                .push(Reading::Numeric { channel: FREE_HEAP_CHANNEL, value: f64::from(self.free_heap_bytes) })
                .is_ok();
        assert!(pushed, "two readings fit a frame's {READINGS_MAX}");
        readings
    }
}

/// What the caller does next with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Close the connection and open a new one (after the usual backoff).
    Reconnect(&'static str),
    /// The bridge refused the device itself (bad tag, unknown device, revoked): retrying soon
    /// cannot help. Close, log it for the operator, and wait long before trying again.
    /// `verified` is false when the nack was not tagged with the device key (the bridge uses
    /// the all-zero key when it cannot name the device's key), which makes it a hint only.
    Stop { reason: NackReason, verified: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    /// Connected; the hello is still to be written, after a lone 0x00 if `resync`.
    HelloDue {
        resync: bool,
    },
    /// The hello went out at `sent_at_ms`; its ack numbers the backlog.
    HelloSent {
        sent_at_ms: u64,
    },
    /// Data frames flow; none are written before `hold_until_ms`, if set.
    Streaming {
        hold_until_ms: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    sample: Sample,
    /// When it was last written; meaningful for the first `in_flight` entries only.
    sent_at_ms: u64,
}

/// The device's session with the bridge: backlog, numbering, window and retransmission.
pub struct Link<'a> {
    device: &'a str,
    key: Key,
    firmware: &'a str,
    phase: Phase,
    /// Samples not yet acked, oldest first.
    backlog: Deque<Entry, BACKLOG_MAX>,
    /// Sequence of `backlog[0]`; `None` until a hello ack has said where numbering starts.
    first_seq: Option<u32>,
    /// The first `in_flight` backlog entries have been written in the current pass.
    in_flight: usize,
    /// Set by a go-back; cleared by the next ack that makes progress. While set, nacks *out of
    /// order* are about frames written before the go-back and are not acted on again.
    rewound: bool,
    /// Ack timeouts since the last progress.
    ack_timeouts: u32,
    /// Samples dropped because the backlog was full, since boot.
    dropped: u64,
}

impl<'a> Link<'a> {
    /// `device` must be 1 to 64 bytes (checked when frames are encoded).
    pub const fn new(device: &'a str, key: Key, firmware: &'a str) -> Link<'a> {
        Link {
            device,
            key,
            firmware,
            phase: Phase::Disconnected,
            backlog: Deque::new(),
            first_seq: None,
            in_flight: 0,
            rewound: false,
            ack_timeouts: 0,
            dropped: 0,
        }
    }

    /// Queues a sample. Returns false if the backlog was full and its oldest sample was dropped
    /// to make room (see [`Link::dropped`]).
    pub fn push_sample(&mut self, sample: Sample) -> bool {
        let mut kept_all = true;
        if self.backlog.is_full() {
            self.backlog.pop_front();
            // The next sample keeps its number; the dropped one's number goes unused unless the
            // bridge made it durable already (the next hello ack says which).
            self.first_seq = self.first_seq.map(|s| s.checked_add(1).expect("sequence space exhausted"));
            self.in_flight = self.in_flight.saturating_sub(1);
            self.dropped += 1;
            kept_all = false;
        }
        let pushed = self.backlog.push_back(Entry { sample, sent_at_ms: 0 }).is_ok();
        assert!(pushed, "the backlog has room after dropping its oldest entry");
        kept_all
    }

    /// Samples dropped because the backlog was full, since boot.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Samples waiting for an ack.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// The sequence the next acked sample will carry, once a hello ack has said.
    pub fn first_unacked_seq(&self) -> Option<u32> {
        self.first_seq
    }

    /// True once the hello of this connection is acked and data frames flow.
    pub fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Streaming { .. })
    }

    /// A new connection: the hello is due (after a lone 0x00), then everything unacked again.
    pub fn on_connected(&mut self) {
        self.phase = Phase::HelloDue { resync: true };
        self.in_flight = 0;
        self.rewound = false;
        self.ack_timeouts = 0;
    }

    /// The connection is gone; nothing is written until [`Link::on_connected`].
    pub fn on_disconnected(&mut self) {
        self.phase = Phase::Disconnected;
        self.in_flight = 0;
    }

    /// The next bytes to write to the connection, if any: written into `out` (at least
    /// [`TRANSMIT_BYTES_MAX`] bytes), length returned. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        assert!(out.len() >= TRANSMIT_BYTES_MAX, "poll_transmit needs {TRANSMIT_BYTES_MAX} bytes");
        match self.phase {
            Phase::Disconnected | Phase::HelloSent { .. } => None,
            Phase::HelloDue { resync } => {
                let mut n = 0;
                if resync {
                    out[0] = 0;
                    n = 1;
                }
                let hello = Frame {
                    seq: 0,
                    ack: 0,
                    body: Body::Hello(Hello {
                        device: self.device,
                        tick_ms: now_ms,
                        firmware: self.firmware,
                    }),
                };
                n += encode_stuffed(&hello, &self.key, &mut out[n..]).expect("the hello fits a frame");
                self.phase = Phase::HelloSent { sent_at_ms: now_ms };
                Some(n)
            }
            Phase::Streaming { hold_until_ms } => {
                if hold_until_ms.is_some_and(|t| now_ms < t) {
                    return None;
                }
                self.phase = Phase::Streaming { hold_until_ms: None };
                if self.in_flight >= IN_FLIGHT_MAX.min(self.backlog.len()) {
                    return None;
                }
                let seq = self.seq_of(self.in_flight);
                let entry = self.backlog.get_mut(self.in_flight).expect("in_flight < backlog length");
                entry.sent_at_ms = now_ms;
                let sample = entry.sample;
                let frame = Frame {
                    seq,
                    ack: 0,
                    body: Body::Data(Data {
                        device: self.device,
                        time: Time::TickMs(sample.tick_ms),
                        readings: sample.readings(),
                    }),
                };
                let n = encode_stuffed(&frame, &self.key, out).expect("a two-reading data frame fits");
                self.in_flight += 1;
                Some(n)
            }
        }
    }

    /// When [`Link::handle_timeout`] has something to do, on the clock `now_ms` comes from.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::HelloSent { sent_at_ms } => Some(sent_at_ms.saturating_add(HELLO_TIMEOUT_MS)),
            Phase::Streaming { hold_until_ms: Some(t) } => Some(t),
            Phase::Streaming { hold_until_ms: None } if self.in_flight > 0 => {
                let oldest = self.backlog.front().expect("frames in flight are in the backlog");
                Some(oldest.sent_at_ms.saturating_add(ACK_TIMEOUT_MS))
            }
            _ => None,
        }
    }

    /// Acts on the deadline [`Link::poll_timeout`] gave, if it has passed.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Verdict {
        let Some(deadline) = self.poll_timeout() else { return Verdict::Continue };
        if now_ms < deadline {
            return Verdict::Continue;
        }
        match self.phase {
            Phase::HelloSent { .. } => Verdict::Reconnect("no ack for the hello"),
            Phase::Streaming { hold_until_ms: Some(_) } => {
                self.phase = Phase::Streaming { hold_until_ms: None };
                Verdict::Continue
            }
            Phase::Streaming { hold_until_ms: None } => {
                self.ack_timeouts += 1;
                if self.ack_timeouts > ACK_TIMEOUTS_MAX {
                    return Verdict::Reconnect("no ack despite retransmissions");
                }
                log::warn!(
                    "no ack within {ACK_TIMEOUT_MS} ms: resending {} frame(s) from seq {}",
                    self.in_flight,
                    self.seq_of(0)
                );
                self.go_back();
                Verdict::Continue
            }
            Phase::Disconnected | Phase::HelloDue { .. } => Verdict::Continue,
        }
    }

    /// Handles one unstuffed frame from the bridge (as [`silt_frame::Deframer`] gives them).
    pub fn handle_frame(&mut self, bytes: &[u8], now_ms: u64) -> Verdict {
        let unverified = match decode(bytes) {
            Ok(unverified) => unverified,
            Err(e) => {
                log::warn!("dropping a frame from the bridge that does not decode: {e}");
                return Verdict::Continue;
            }
        };
        let frame = unverified.frame().clone();
        if unverified.verify(&self.key).is_err() {
            let zero_tagged = decode(bytes).is_ok_and(|u| u.verify(&ZERO_KEY).is_ok());
            return self.handle_hint(&frame, zero_tagged);
        }
        match self.phase {
            Phase::Disconnected | Phase::HelloDue { .. } => Verdict::Continue,
            Phase::HelloSent { .. } => self.handle_in_hello(&frame),
            Phase::Streaming { .. } => match frame.body {
                Body::Ack | Body::Heartbeat => self.acknowledge(frame.ack),
                Body::Nack(nack) => self.handle_nack(nack, frame.ack, now_ms),
                Body::Data(_) | Body::Hello(_) => {
                    log::warn!("ignoring a {:?} frame from the bridge", frame.body.kind());
                    Verdict::Continue
                }
            },
        }
    }

    /// A frame not tagged with the device key: only a nack that refuses the device is acted on,
    /// and only by stopping (a forged one can do no worse than a reset connection).
    fn handle_hint(&mut self, frame: &Frame<'_>, zero_tagged: bool) -> Verdict {
        let Body::Nack(nack) = frame.body else {
            log::warn!("dropping a {:?} frame whose tag does not match the device key", frame.body.kind());
            return Verdict::Continue;
        };
        if !zero_tagged {
            log::warn!(
                "nack {} whose tag matches neither the device key nor the zero key: \
                 is SILT_DEVICE_KEY the key `silt device add` printed?",
                nack.reason.as_str()
            );
        }
        match nack.reason {
            NackReason::BadTag | NackReason::UnknownDevice | NackReason::Revoked => {
                Verdict::Stop { reason: nack.reason, verified: false }
            }
            _ => {
                log::warn!("nack {} for seq {} (unverified, a hint only)", nack.reason.as_str(), nack.seq);
                Verdict::Continue
            }
        }
    }

    fn handle_in_hello(&mut self, frame: &Frame<'_>) -> Verdict {
        match frame.body {
            Body::Ack => {
                if let Err(v) = self.rebase(frame.ack) {
                    return v;
                }
                self.phase = Phase::Streaming { hold_until_ms: None };
                self.rewound = false;
                self.ack_timeouts = 0;
                Verdict::Continue
            }
            // Sequence 0 is the hello's; a nack for a data frame here is about one written
            // before a re-hello, already taken care of.
            Body::Nack(nack) if nack.seq == 0 => match nack.reason {
                NackReason::BadTag | NackReason::UnknownDevice | NackReason::Revoked => {
                    Verdict::Stop { reason: nack.reason, verified: true }
                }
                _ => Verdict::Reconnect("the bridge refused the hello"),
            },
            _ => Verdict::Continue,
        }
    }

    fn handle_nack(&mut self, nack: Nack, ack: u32, now_ms: u64) -> Verdict {
        match nack.reason {
            NackReason::BadTag | NackReason::UnknownDevice | NackReason::Revoked => {
                Verdict::Stop { reason: nack.reason, verified: true }
            }
            NackReason::OutOfOrder if self.rewound => self.acknowledge(ack),
            NackReason::OutOfOrder => {
                log::warn!(
                    "nack out_of_order for seq {}: resending from seq {}",
                    nack.seq,
                    ack.wrapping_add(1)
                );
                match self.rebase(ack) {
                    Ok(()) => Verdict::Continue,
                    Err(v) => v,
                }
            }
            NackReason::Unavailable => {
                let v = self.acknowledge(ack);
                self.go_back();
                self.phase =
                    Phase::Streaming { hold_until_ms: Some(now_ms.saturating_add(UNAVAILABLE_HOLD_MS)) };
                v
            }
            NackReason::NoHello => {
                let v = self.acknowledge(ack);
                self.phase = Phase::HelloDue { resync: false };
                self.in_flight = 0;
                v
            }
            NackReason::WrongDevice => Verdict::Reconnect("the bridge says a frame named another device"),
            NackReason::Decode => {
                // TCP does not corrupt bytes; the ack timeout resends the frame if it matters.
                log::warn!("nack decode for seq {}", nack.seq);
                Verdict::Continue
            }
        }
    }

    /// A cumulative ack: every sequence up to `ack` is durable.
    fn acknowledge(&mut self, ack: u32) -> Verdict {
        let Some(first) = self.first_seq else { return Verdict::Continue };
        if ack < first {
            return Verdict::Continue;
        }
        let covered = (ack - first) as usize + 1;
        if covered > self.backlog.len() {
            return Verdict::Reconnect("the bridge acked a sequence never sent");
        }
        for _ in 0..covered {
            self.backlog.pop_front();
        }
        self.first_seq = Some(ack.checked_add(1).expect("covered entries have numbers above ack"));
        self.in_flight = self.in_flight.saturating_sub(covered);
        self.rewound = false;
        self.ack_timeouts = 0;
        Verdict::Continue
    }

    /// The bridge's word on where to go on (a hello's ack, a nack *out of order*): everything
    /// up to `ack` is durable, and what is left is numbered from `ack + 1` and written again.
    fn rebase(&mut self, ack: u32) -> Result<(), Verdict> {
        let next = ack.checked_add(1).ok_or(Verdict::Reconnect("the bridge acked the last sequence"))?;
        if let Some(first) = self.first_seq {
            if ack >= first {
                let covered = ((ack - first) as usize + 1).min(self.backlog.len());
                for _ in 0..covered {
                    self.backlog.pop_front();
                }
            } else if next < first {
                // Numbers the bridge never stored (it has less than it acked before: another
                // device with this id, or a restored broker). Renumbering closes the gap.
                log::warn!("the bridge is durable up to seq {ack} only; renumbering from seq {next}");
            }
        }
        self.first_seq = Some(next);
        self.go_back();
        Ok(())
    }

    /// Writes every unacked frame again, from the oldest.
    fn go_back(&mut self) {
        self.in_flight = 0;
        self.rewound = true;
    }

    fn seq_of(&self, index: usize) -> u32 {
        let first = self.first_seq.expect("the backlog is numbered once the hello is acked");
        let index = u32::try_from(index).expect("backlog index fits u32");
        first.checked_add(index).expect("sequence space exhausted")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec as StdVec;

    use silt_frame::{Deframer, FRAME_BYTES_MAX, decode_verified};

    use super::*;

    const KEY: Key = [0x5a; KEY_BYTES];
    const OTHER_KEY: Key = [0x77; KEY_BYTES];

    fn sample(i: u64) -> Sample {
        Sample { tick_ms: 1_000 * i, temperature_c: 20.0 + i as f32, free_heap_bytes: 50_000 }
    }

    /// What the device wrote, decoded as the bridge sees it.
    #[derive(Debug, PartialEq)]
    enum Sent {
        Hello,
        Data { seq: u32, tick_ms: u64 },
    }

    /// Drains everything the link wants to write at `now_ms`; checks each frame's tag and the
    /// lone 0x00 before a connection's first hello.
    fn drain(link: &mut Link<'_>, now_ms: u64) -> StdVec<Sent> {
        let mut sent = StdVec::new();
        let mut out = [0u8; TRANSMIT_BYTES_MAX];
        while let Some(n) = link.poll_transmit(now_ms, &mut out) {
            let mut deframer = Deframer::new();
            let mut input = &out[..n];
            let mut frames = 0;
            while !input.is_empty() {
                let (used, frame) = deframer.push(input);
                input = &input[used..];
                let Some(frame) = frame else { continue };
                let frame = decode_verified(frame.unwrap(), &KEY).unwrap();
                frames += 1;
                sent.push(match frame.body {
                    Body::Hello(h) => {
                        assert_eq!((frame.seq, h.device, h.tick_ms), (0, "dev-1", now_ms));
                        Sent::Hello
                    }
                    Body::Data(d) => {
                        let Time::TickMs(tick_ms) = d.time else { panic!("not tick time") };
                        assert_eq!(d.readings.len(), 2);
                        Sent::Data { seq: frame.seq, tick_ms }
                    }
                    other => panic!("device sent {other:?}"),
                });
            }
            assert_eq!(frames, 1, "one frame per poll_transmit");
        }
        sent
    }

    fn reply(body: Body<'_>, ack: u32, key: &Key) -> StdVec<u8> {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let n = silt_frame::encode(&Frame { seq: 0, ack, body }, key, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn ack(n: u32) -> StdVec<u8> {
        reply(Body::Ack, n, &KEY)
    }

    fn nack(seq: u32, reason: NackReason, ack: u32) -> StdVec<u8> {
        reply(Body::Nack(Nack { seq, reason }), ack, &KEY)
    }

    fn data(seqs: core::ops::RangeInclusive<u32>, first_sample: u64) -> StdVec<Sent> {
        let first_seq = *seqs.start();
        seqs.map(|seq| Sent::Data { seq, tick_ms: 1_000 * (first_sample + u64::from(seq - first_seq)) })
            .collect()
    }

    /// A link connected and streaming, its hello acked with `durable`, `samples` queued.
    fn streaming(samples: u64, durable: u32) -> Link<'static> {
        let mut link = Link::new("dev-1", KEY, "test");
        for i in 0..samples {
            link.push_sample(sample(i));
        }
        link.on_connected();
        assert_eq!(drain(&mut link, 0), [Sent::Hello]);
        assert_eq!(link.handle_frame(&ack(durable), 0), Verdict::Continue);
        assert!(link.is_streaming());
        link
    }

    #[test]
    fn a_connection_starts_with_a_zero_byte_and_a_hello_and_numbers_data_after_its_ack() {
        let mut link = Link::new("dev-1", KEY, "test");
        link.push_sample(sample(0));
        assert_eq!(drain(&mut link, 0), [], "nothing is written before a connection");
        link.on_connected();
        let mut out = [0u8; TRANSMIT_BYTES_MAX];
        let n = link.poll_transmit(5, &mut out).unwrap();
        assert_eq!(out[0], 0, "a lone 0x00 ends what an earlier writer left half-sent");
        assert_ne!(out[1], 0);
        assert_eq!(out[n - 1], 0);
        assert_eq!(drain(&mut link, 6), [], "no data before the hello's ack");
        assert_eq!(link.handle_frame(&ack(41), 7), Verdict::Continue);
        link.push_sample(sample(1));
        assert_eq!(drain(&mut link, 8), data(42..=43, 0));
        assert_eq!(link.first_unacked_seq(), Some(42));
    }

    #[test]
    fn at_most_the_window_is_in_flight_and_acks_open_it() {
        let mut link = streaming(20, 0);
        assert_eq!(drain(&mut link, 10), data(1..=8, 0));
        assert_eq!(link.handle_frame(&ack(3), 20), Verdict::Continue);
        assert_eq!(drain(&mut link, 30), data(9..=11, 8));
        assert_eq!(link.backlog_len(), 17);
        assert_eq!(link.handle_frame(&reply(Body::Heartbeat, 11, &KEY), 40), Verdict::Continue);
        assert_eq!(drain(&mut link, 50), data(12..=19, 11));
        assert_eq!(link.handle_frame(&ack(20), 60), Verdict::Continue);
        assert_eq!(link.backlog_len(), 0);
    }

    #[test]
    fn an_ack_timeout_resends_every_unacked_frame_in_order_then_gives_up() {
        let mut link = streaming(3, 0);
        assert_eq!(drain(&mut link, 100), data(1..=3, 0));
        assert_eq!(link.poll_timeout(), Some(100 + ACK_TIMEOUT_MS));
        assert_eq!(link.handle_timeout(100 + ACK_TIMEOUT_MS - 1), Verdict::Continue);
        assert_eq!(drain(&mut link, 101), []);
        assert_eq!(link.handle_frame(&ack(1), 200), Verdict::Continue);
        let mut now = 100 + ACK_TIMEOUT_MS;
        for _ in 0..ACK_TIMEOUTS_MAX {
            assert_eq!(link.handle_timeout(now), Verdict::Continue);
            assert_eq!(drain(&mut link, now), data(2..=3, 1));
            now += ACK_TIMEOUT_MS;
        }
        assert!(matches!(link.handle_timeout(now), Verdict::Reconnect(_)));
    }

    #[test]
    fn out_of_order_resends_from_the_nack_ack_once_per_go_back() {
        let mut link = streaming(6, 10);
        assert_eq!(drain(&mut link, 0), data(11..=16, 0));
        // The bridge stored 11 and 12, then lost 13; 14..16 are refused in turn.
        assert_eq!(link.handle_frame(&ack(12), 1), Verdict::Continue);
        assert_eq!(link.handle_frame(&nack(14, NackReason::OutOfOrder, 12), 1), Verdict::Continue);
        assert_eq!(drain(&mut link, 2), data(13..=16, 2));
        // Stale nacks about frames written before the go-back change nothing.
        assert_eq!(link.handle_frame(&nack(15, NackReason::OutOfOrder, 12), 3), Verdict::Continue);
        assert_eq!(link.handle_frame(&nack(16, NackReason::OutOfOrder, 12), 3), Verdict::Continue);
        assert_eq!(drain(&mut link, 4), []);
        assert_eq!(link.handle_frame(&ack(16), 5), Verdict::Continue);
        assert_eq!(link.backlog_len(), 0);
    }

    #[test]
    fn unavailable_pauses_then_resends_in_order() {
        let mut link = streaming(4, 0);
        assert_eq!(drain(&mut link, 0), data(1..=4, 0));
        assert_eq!(link.handle_frame(&ack(1), 10), Verdict::Continue);
        assert_eq!(link.handle_frame(&nack(2, NackReason::Unavailable, 1), 10), Verdict::Continue);
        assert_eq!(link.handle_frame(&nack(3, NackReason::OutOfOrder, 1), 11), Verdict::Continue);
        assert_eq!(drain(&mut link, 12), [], "held after unavailable");
        assert_eq!(link.poll_timeout(), Some(10 + UNAVAILABLE_HOLD_MS));
        assert_eq!(link.handle_timeout(10 + UNAVAILABLE_HOLD_MS), Verdict::Continue);
        assert_eq!(drain(&mut link, 10 + UNAVAILABLE_HOLD_MS), data(2..=4, 1));
    }

    #[test]
    fn no_hello_sends_a_new_hello_then_resends() {
        let mut link = streaming(3, 5);
        assert_eq!(drain(&mut link, 0), data(6..=8, 0));
        assert_eq!(link.handle_frame(&nack(6, NackReason::NoHello, 5), 1), Verdict::Continue);
        let mut out = [0u8; TRANSMIT_BYTES_MAX];
        let n = link.poll_transmit(2, &mut out).unwrap();
        assert_ne!(out[0], 0, "no resync byte inside a connection");
        assert_eq!(out[n - 1], 0);
        // Nacks for the other frames written before the new hello are stale.
        assert_eq!(link.handle_frame(&nack(7, NackReason::NoHello, 5), 3), Verdict::Continue);
        assert_eq!(link.handle_frame(&ack(5), 4), Verdict::Continue);
        assert_eq!(drain(&mut link, 5), data(6..=8, 0));
    }

    #[test]
    fn a_reconnect_drops_what_the_hello_ack_covers_and_renumbers_the_rest() {
        let mut link = streaming(5, 0);
        assert_eq!(drain(&mut link, 0), data(1..=5, 0));
        link.on_disconnected();
        link.push_sample(sample(5));
        assert_eq!(drain(&mut link, 1), []);
        link.on_connected();
        assert_eq!(drain(&mut link, 2), [Sent::Hello]);
        // 1..3 were made durable but their acks were lost with the connection.
        assert_eq!(link.handle_frame(&ack(3), 3), Verdict::Continue);
        assert_eq!(drain(&mut link, 4), data(4..=6, 3));

        // A bridge that has less than the device thinks: numbering follows the bridge.
        link.on_connected();
        assert_eq!(drain(&mut link, 5), [Sent::Hello]);
        assert_eq!(link.handle_frame(&ack(1), 6), Verdict::Continue);
        assert_eq!(drain(&mut link, 7), data(2..=4, 3));
    }

    #[test]
    fn a_hello_that_is_not_acked_in_time_ends_the_connection() {
        let mut link = Link::new("dev-1", KEY, "test");
        link.on_connected();
        assert_eq!(drain(&mut link, 50), [Sent::Hello]);
        assert_eq!(link.poll_timeout(), Some(50 + HELLO_TIMEOUT_MS));
        assert!(matches!(link.handle_timeout(50 + HELLO_TIMEOUT_MS), Verdict::Reconnect(_)));
    }

    #[test]
    fn refusals_of_the_device_stop_and_unverified_ones_are_hints() {
        let mut link = streaming(1, 0);
        assert_eq!(
            link.handle_frame(&nack(1, NackReason::Revoked, 0), 0),
            Verdict::Stop { reason: NackReason::Revoked, verified: true }
        );
        // The bridge tags what it cannot attribute with the zero key.
        let mut link = Link::new("dev-1", KEY, "test");
        link.on_connected();
        drain(&mut link, 0);
        let unknown = reply(Body::Nack(Nack { seq: 0, reason: NackReason::UnknownDevice }), 0, &ZERO_KEY);
        assert_eq!(
            link.handle_frame(&unknown, 0),
            Verdict::Stop { reason: NackReason::UnknownDevice, verified: false }
        );
        // A bridge holding another key for this device: its bad-tag nack matches no key we know.
        let bad_tag = reply(Body::Nack(Nack { seq: 0, reason: NackReason::BadTag }), 0, &OTHER_KEY);
        assert_eq!(
            link.handle_frame(&bad_tag, 0),
            Verdict::Stop { reason: NackReason::BadTag, verified: false }
        );
        // Unverified acks and other nacks change nothing.
        let mut link = streaming(2, 0);
        assert_eq!(drain(&mut link, 0), data(1..=2, 0));
        assert_eq!(link.handle_frame(&reply(Body::Ack, 2, &ZERO_KEY), 1), Verdict::Continue);
        let decode = reply(Body::Nack(Nack { seq: 1, reason: NackReason::OutOfOrder }), 0, &ZERO_KEY);
        assert_eq!(link.handle_frame(&decode, 1), Verdict::Continue);
        assert_eq!(link.backlog_len(), 2);
        assert_eq!(drain(&mut link, 2), []);
        assert_eq!(link.handle_frame(b"\x01\x02garbage", 3), Verdict::Continue);
    }

    #[test]
    fn a_full_backlog_drops_its_oldest_sample_and_keeps_numbering_consistent() {
        let mut link = streaming(0, 0);
        for i in 0..BACKLOG_MAX as u64 {
            assert!(link.push_sample(sample(i)));
        }
        assert_eq!(drain(&mut link, 0), data(1..=8, 0));
        assert!(!link.push_sample(sample(BACKLOG_MAX as u64)));
        assert_eq!(link.dropped(), 1);
        assert_eq!(link.backlog_len(), BACKLOG_MAX);
        assert_eq!(link.first_unacked_seq(), Some(2));
        // Seq 1 was dropped; the bridge has it or not, and its ack of 8 covers 2..=8 either way.
        assert_eq!(link.handle_frame(&ack(8), 1), Verdict::Continue);
        assert_eq!(drain(&mut link, 2), data(9..=16, 8));
    }

    #[test]
    fn an_ack_beyond_anything_sent_ends_the_connection() {
        let mut link = streaming(2, 0);
        drain(&mut link, 0);
        assert!(matches!(link.handle_frame(&ack(9), 1), Verdict::Reconnect(_)));
    }
}
