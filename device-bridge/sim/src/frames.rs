//! One simulated device's side of the frame protocol, without I/O: the device link every Silt
//! device runs (`silt-link`, the firmwares' core) with what makes it a simulated device around
//! it: a generated queue of frames, the fault plan applied to first transmissions, and
//! counters and latencies.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use silt_frame::{Deframer, Nack, NackReason, Reading, Readings, Time, READINGS_MAX};
use silt_link::{Config, Event, Identity, Link, Received, Transmit, SEQ_MAX, TRANSMIT_BYTES_MAX};

use crate::faults::Fault;
use crate::schedule::Schedule;
use crate::{Counters, DeviceSettings, PENDING_MAX};

/// An idle frame connection sends a heartbeat this often; the bridge closes connections idle
/// for its `limits.idle_timeout_ms` (120 s by default).
const HEARTBEAT_MS: u64 = 30_000;
/// The device "booted" this long before the run: its ticks (the link's clock and the frames'
/// event time) are never zero.
const BOOT_TICK_MS: u64 = 1_000;
/// What the hellos of simulated devices say they run.
const FIRMWARE: &str = "silt-devsim";

/// One generated frame that is not acked yet.
#[derive(Debug, Clone)]
struct Pending {
    fault: Fault,
    /// The first transmission (sent or dropped) happened, at this instant.
    first_sent: Option<Instant>,
    /// Device tick when generated: the frame's event time.
    tick_ms: u64,
}

/// One device's side of the frame protocol (docs/device-frames.md, "Exchange"), without I/O.
///
/// The driver calls [`FrameDevice::connected`] when a connection opens,
/// [`FrameDevice::handle_bytes`] with what the bridge sends, [`FrameDevice::poll_transmit`]
/// for the bytes to write, and [`FrameDevice::handle_timeout`] at
/// [`FrameDevice::poll_timeout`]. The exchange (hello, go-back-N window, acks, nacks, ack
/// timeouts) is [`silt_link::Link`]'s; this type generates the frames it sends, applies the
/// fault plan to their first transmission, and counts. A bridge that breaks the protocol (acks
/// a frame never sent, refuses a correct tag, cannot decode a frame, refuses the device) makes
/// the device fail with a problem for the report, rather than retry.
#[derive(Debug)]
pub struct FrameDevice {
    pub(crate) s: DeviceSettings,
    boot: Instant,
    schedule: Schedule,
    link: Link,
    /// Sequence of the first hello's ack: data sequences are `base + 1 ..= base + generated`.
    base: Option<u32>,
    generated: u64,
    /// Frames not acked yet, oldest first: the link's queue.
    pending: VecDeque<Pending>,
    /// What the device counts itself; the link's own counts are added by
    /// [`FrameDevice::counters`].
    counters: Counters,
    latencies_us: Vec<u64>,
    failed: Option<String>,
}

/// The link's settings for a simulated device.
fn link_config(s: &DeviceSettings) -> Config {
    let ack_timeout_ms = u64::try_from(s.ack_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    Config {
        window: s.window,
        ack_timeout_ms,
        // A simulated device keeps retrying on its connection as long as the run lasts: the
        // run's timeout bounds it, and a give-up would hide what the bridge did.
        ack_timeouts_max: u32::MAX,
        hello_timeout_ms: ack_timeout_ms,
        hello_timeouts_max: u32::MAX,
        // After a nack unavailable the device waits as long as for a missing ack.
        unavailable_hold_ms: ack_timeout_ms,
        // A refusal, even unverified, ends the device with a problem in the report.
        hints_max: 1,
        heartbeat_ms: HEARTBEAT_MS,
    }
}

impl FrameDevice {
    pub fn new(s: DeviceSettings, now: Instant) -> FrameDevice {
        assert!(s.readings > 0 && usize::from(s.readings) <= READINGS_MAX);
        FrameDevice {
            link: Link::new(link_config(&s)),
            s,
            boot: now,
            schedule: Schedule::new(now),
            base: None,
            generated: 0,
            pending: VecDeque::new(),
            counters: Counters::default(),
            latencies_us: Vec::new(),
            failed: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.s.id
    }

    /// A connection opened: the device will send its hello first.
    pub fn connected(&mut self) {
        self.link.handle_connected();
    }

    /// The connection closed or failed.
    pub fn disconnected(&mut self) {
        self.link.handle_disconnected();
    }

    /// The connection was lost otherwise than by the reconnect fault.
    pub fn connection_lost(&mut self) {
        self.counters.connection_losses += 1;
        self.disconnected();
    }

    /// Whether the bridge has answered a hello on this connection.
    pub fn is_up(&self) -> bool {
        self.link.is_streaming()
    }

    /// Whether the device learned its first sequence (its first hello was answered).
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// Starts generating frames (the fleet starts together once every device is connected).
    pub fn start(&mut self, at: Instant) {
        self.schedule.start(&mut self.s, at);
    }

    /// Whether [`FrameDevice::start`] was called.
    pub fn is_started(&self) -> bool {
        self.schedule.started
    }

    /// Stops generating; frames generated so far are still sent until acked.
    pub fn stop_generating(&mut self) {
        self.schedule.over = true;
    }

    /// Every generated frame is acked and no more will be generated.
    pub fn is_done(&self) -> bool {
        self.base.is_some() && self.schedule.started && self.schedule.over && self.pending.is_empty()
    }

    /// Why the device gave up (the bridge broke the protocol or refused it), if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The data sequences generated so far, `first..=last`.
    pub fn seqs(&self) -> (u32, u32) {
        let base = self.base.unwrap_or(0);
        // Generation stops before the sequence space ends (see `generate`).
        (base + 1, base + self.generated as u32)
    }

    /// The device's cumulative ack: every sequence up to it is durable.
    pub fn acked_seq(&self) -> u32 {
        self.link.first_unacked_seq().map_or(0, |first| first - 1)
    }

    /// What the device counted, its link's counts included.
    pub fn counters(&self) -> Counters {
        let link = self.link.stats();
        Counters {
            retransmits: link.retransmits,
            nacks: link.nacks,
            ack_timeouts: link.ack_timeouts,
            hellos: link.hellos,
            stale_acks: link.stale_acks,
            bad_replies: link.bad_replies,
            ..self.counters.clone()
        }
    }

    /// Moves the latencies measured since the last call (µs, first send to durable ack) out.
    pub fn drain_latencies(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.latencies_us);
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    fn tick_ms(&self, now: Instant) -> u64 {
        BOOT_TICK_MS + now.saturating_duration_since(self.boot).as_millis() as u64
    }

    fn instant_of(&self, tick_ms: u64) -> Instant {
        self.boot + Duration::from_millis(tick_ms.saturating_sub(BOOT_TICK_MS))
    }

    fn identity(&self) -> Identity<'_> {
        Identity { device: &self.s.id, key: self.s.key, firmware: FIRMWARE, module: 0 }
    }

    /// Handles what the bridge sent: any chunk of the byte stream.
    pub fn handle_bytes(&mut self, deframer: &mut Deframer, input: &[u8], now: Instant) {
        deframer.push_all(input, |frame| match frame {
            Ok(bytes) => self.handle_frame(bytes, now),
            Err(_) => self.link.handle_undecodable(),
        });
    }

    /// Handles one unstuffed frame from the bridge.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Instant) {
        let received = self.link.handle_frame(bytes, &self.s.key, self.tick_ms(now));
        if let Received::Nack { nack, .. } = received {
            self.check_nack(nack);
        }
        self.take_events(now);
    }

    /// Nacks a bridge must never send this device; the link's reaction to the others is the
    /// protocol's.
    fn check_nack(&mut self, nack: Nack) {
        match nack.reason {
            NackReason::BadTag if self.link.is_streaming() => {
                let first = self.link.first_unacked_seq().unwrap_or(0);
                let frame = nack.seq.checked_sub(first).and_then(|i| self.pending.get(i as usize));
                if frame.is_some_and(|p| p.fault != Fault::BadTag) {
                    self.fail(format!(
                        "the bridge refused the tag of frame {}, which was tagged correctly",
                        nack.seq
                    ));
                }
            }
            NackReason::Decode => self.fail("the bridge could not decode a frame this device wrote".into()),
            _ => {}
        }
    }

    /// Acts on what the link says: acked frames, a refusal, a broken protocol.
    fn take_events(&mut self, now: Instant) {
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Acked { count } => self.acked(count, now),
                Event::Reconnect(why) => self.fail(why.to_string()),
                Event::Refused { reason, verified } => {
                    let hint = if verified { "" } else { " (a reply not tagged with the device key)" };
                    let what = match reason {
                        NackReason::BadTag => {
                            "the bridge refused the hello's tag: is the key right?".to_string()
                        }
                        r => format!("the bridge refused the device: {}", r.as_str()),
                    };
                    self.fail(format!("{what}{hint}"));
                }
            }
        }
        if self.base.is_none() {
            self.base = self.link.first_unacked_seq().map(|first| first - 1);
        }
        if self.link.stats().renumbered > 0 {
            self.fail("the bridge's hello acked frames this device never sent".into());
        }
    }

    fn acked(&mut self, count: u32, now: Instant) {
        for _ in 0..count {
            let p = self.pending.pop_front().expect("the link acks queued frames only");
            match p.first_sent {
                Some(t) => self.latencies_us.push(now.saturating_duration_since(t).as_micros() as u64),
                None => self.fail("the bridge acked a frame that was never sent".into()),
            }
        }
        self.counters.acked += u64::from(count);
    }

    /// Handles the deadline of [`FrameDevice::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(self.tick_ms(now));
        self.take_events(now);
    }

    /// When [`FrameDevice::handle_timeout`] (or another [`FrameDevice::poll_transmit`]) is
    /// due; `None`: only a reply or the start can move the device on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let link = self.link.poll_timeout().map(|t| self.instant_of(t));
        let generate = if self.link.is_streaming() { self.schedule.wake(&self.s) } else { None };
        [link, generate].into_iter().flatten().min()
    }

    /// Appends the bytes to write now to `out`; returns true when the connection must be closed
    /// after writing them (the reconnect fault).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let tick = self.tick_ms(now);
        if self.link.is_streaming() {
            self.generate(now, tick);
        }
        let mut reconnect = false;
        while !reconnect {
            let Some(t) = self.link.peek_transmit(tick) else { break };
            if let Transmit::Data { seq, index, retransmit: false } = t {
                if self.holds_back(seq, index) {
                    break;
                }
            }
            self.link.poll_transmit(tick);
            reconnect = self.write(t, now, tick, out);
        }
        reconnect
    }

    /// Writes what the link asked for; true when the connection is to be closed after it.
    fn write(&mut self, t: Transmit, now: Instant, tick: u64, out: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; TRANSMIT_BYTES_MAX];
        match t {
            Transmit::Hello { next, resync } => {
                let n = self.identity().encode_hello(next, resync, tick, &mut buf);
                out.extend_from_slice(&buf[..n]);
            }
            Transmit::Heartbeat => {
                let n = self.identity().encode_heartbeat(&mut buf);
                out.extend_from_slice(&buf[..n]);
            }
            Transmit::Data { seq, index, retransmit: true } => self.write_data(out, seq, index, false),
            Transmit::Data { seq, index, retransmit: false } => {
                return self.first_send(seq, index, now, tick, out)
            }
        }
        false
    }

    /// The first transmission of a frame, with its fault.
    fn first_send(&mut self, seq: u32, index: usize, now: Instant, tick: u64, out: &mut Vec<u8>) -> bool {
        self.pending[index].first_sent = Some(now);
        match self.pending[index].fault {
            Fault::None => self.write_data(out, seq, index, false),
            Fault::Drop => self.counters.dropped += 1,
            Fault::Duplicate => {
                self.write_data(out, seq, index, false);
                self.write_data(out, seq, index, false);
                self.counters.duplicated += 1;
            }
            Fault::Reorder if self.next_ready(seq, index) => {
                // The next frame goes first; its own fault is not applied.
                let next = self.link.poll_transmit(tick);
                assert_eq!(next, Some(Transmit::Data { seq: seq + 1, index: index + 1, retransmit: false }));
                let p = &mut self.pending[index + 1];
                p.first_sent = Some(now);
                p.fault = Fault::None;
                self.write_data(out, seq + 1, index + 1, false);
                self.write_data(out, seq, index, false);
                self.counters.reordered += 1;
            }
            // The last frame there will be, or the last the window admits: sent as it is.
            Fault::Reorder => self.write_data(out, seq, index, false),
            Fault::BadTag => {
                self.write_data(out, seq, index, true);
                self.counters.bad_tagged += 1;
            }
            Fault::Reconnect => {
                self.write_data(out, seq, index, false);
                self.counters.reconnects += 1;
                return true;
            }
        }
        false
    }

    /// Whether the frame after `seq` is generated and fits the window, so that a reorder can
    /// swap them.
    fn next_ready(&self, seq: u32, index: usize) -> bool {
        index + 1 < self.pending.len() && self.link.window_end().is_some_and(|end| seq < end)
    }

    /// A frame with the reorder fault whose next frame is not generated yet but will be, and
    /// will fit the window: it waits, so that the swap happens whatever the rate.
    fn holds_back(&self, seq: u32, index: usize) -> bool {
        self.pending[index].fault == Fault::Reorder
            && !self.next_ready(seq, index)
            && !self.schedule.over
            && self.link.window_end().is_some_and(|end| seq < end)
    }

    fn generate(&mut self, now: Instant, tick: u64) {
        let Some(base) = self.base else { return };
        loop {
            // The sequence space ends at SEQ_MAX; a device that reaches it stops generating.
            let room_in_space = u64::from(base) + self.generated < u64::from(SEQ_MAX);
            let room = self.pending.len() < PENDING_MAX
                && room_in_space
                && (self.s.interval.is_some() || self.pending.len() < self.s.window as usize);
            if !room_in_space {
                self.schedule.over = true;
            }
            if !self.schedule.due(&self.s, self.generated, room, now, &mut self.counters.late) {
                return;
            }
            let fault = self.s.faults.draw(&mut self.s.rng);
            self.pending.push_back(Pending { fault, first_sent: None, tick_ms: tick });
            self.link.handle_queued(1);
            self.generated += 1;
            self.counters.generated += 1;
        }
    }

    fn write_data(&mut self, out: &mut Vec<u8>, seq: u32, index: usize, bad_tag: bool) {
        let mut readings = Readings::new();
        match &self.s.source {
            Some(source) => source.readings(&self.s.id, seq, &mut readings),
            None => {
                for i in 0..self.s.readings {
                    readings.push(reading(i, seq)).expect("readings are at most READINGS_MAX");
                }
            }
        }
        let mut identity = self.identity();
        if bad_tag {
            // A tag made with another key is as wrong as a corrupted one, and stays a valid frame.
            identity.key[0] ^= 0xff;
        }
        let mut buf = [0u8; TRANSMIT_BYTES_MAX];
        let time = Time::TickMs(self.pending[index].tick_ms);
        let n = identity.encode_data(seq, time, readings, &mut buf);
        out.extend_from_slice(&buf[..n]);
        self.counters.sent += 1;
    }
}

/// Reading `i` of frame `seq`: values that vary with the sequence, so a reader can tell frames
/// apart, and that are always finite.
fn reading(i: u8, seq: u32) -> Reading<'static> {
    let wobble = f64::from(seq % 1000) / 100.0;
    match i {
        0 => Reading::Temperature(15.0 + wobble as f32),
        1 => Reading::Humidity(40.0 + wobble as f32),
        c => Reading::Numeric { channel: u16::from(c), value: 1000.0 + wobble },
    }
}

#[cfg(test)]
mod tests;
