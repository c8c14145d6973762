//! `silt-link`: the device's side of the frame exchange (`docs/device-frames.md`, "Exchange"),
//! written once for every device Silt has: the ESP32-C3 and QEMU firmwares and the simulator.
//!
//! Sans-IO in the way of `quinn-proto`: the caller says what happened through `handle_*` (a
//! connection opened or closed, a frame arrived, time passed, an item was queued) and takes
//! out what to do through `poll_*` (what to write, when to wake up, which items are durable,
//! whether to give up on the connection). Time is a number of milliseconds on whatever clock
//! the caller keeps (a firmware's tick since boot) and is passed in; the link never reads a
//! clock, touches a socket or allocates, so it runs on a microcontroller as it is and is tested
//! step by step on the host.
//!
//! What it does: the hello that opens each session and numbers the device's queue from the
//! bridge's ack; a go-back-N window of data frames in flight; cumulative acks; nacks of every
//! reason; going back after an ack timeout; heartbeats on an idle connection; and what to make
//! of replies that are not tagged with the device's key (hints, acted on only to stop, or to
//! resend).
//!
//! What it leaves to the caller: the items themselves. [`Link`] keeps counts and sequence
//! numbers only, so each caller stores its queue as suits it (the simulator in growable queues
//! for tens of thousands of devices, a firmware in a fixed one: [`Backlog`]) and says what a
//! data frame carries when one is due. Persistence is absent too: a device that reboots says
//! hello without a counter and continues after the bridge's ack.
//!
//! Code map: [`Link`], the state machine; [`Identity`], which encodes the frames a device
//! writes; [`Backlog`], a `Link` with a fixed-capacity queue and an identity, for firmware.
//!
//! *Architecture Invariant*: frames on one connection reach the bridge in the order they were
//! written, and the bridge answers them in that order (TCP, or a UART). The link relies on it
//! to tell a nack about a copy written before its last go-back (stale, ignored) from one about
//! the current copy.
#![no_std]
#![forbid(unsafe_code)]

mod backlog;
mod delivery;
mod identity;

pub use backlog::{Backlog, Payload, Verdict};
pub use delivery::{Chunk, Receiver, Stats as DeliveryStats};
pub use identity::{Identity, TRANSMIT_BYTES_MAX};

use silt_frame::{decode, Body, Key, Nack, NackReason, ZERO_KEY};

/// Largest window a link takes: the simulator's largest `--window`. Firmware windows are a few
/// frames.
pub const WINDOW_MAX: u32 = 1024;
/// The last data sequence a device sends: one below `u32::MAX`, so that the sequence after the
/// last acked one always exists. A device that gets there stops sending.
pub const SEQ_MAX: u32 = u32::MAX - 1;

/// A device's protocol settings; every limit of the link is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Data frames written and not yet acked, at most (1 to [`WINDOW_MAX`]).
    pub window: u32,
    /// How long the cumulative ack may stand still, with frames in flight, before the link
    /// goes back and writes every unacked frame again.
    pub ack_timeout_ms: u64,
    /// Ack timeouts in a row, without progress, that the link meets by going back; at the
    /// next one it gives up on the connection ([`Event::Reconnect`]).
    pub ack_timeouts_max: u32,
    /// How long a hello may wait for its ack before it is written again.
    pub hello_timeout_ms: u64,
    /// Hellos written again after a timeout; at the next timeout the link gives up on the
    /// connection (0: at the first).
    pub hello_timeouts_max: u32,
    /// Pause after a nack *unavailable* before data is written again, so that an outage of
    /// the broker is not met with a resend loop.
    pub unavailable_hold_ms: u64,
    /// Refusals not tagged with the device's key (hints) in a row, with no verified frame
    /// between them, after which the link believes them (1: at the first).
    pub hints_max: u32,
    /// An idle streaming connection writes a heartbeat this often; the bridge closes
    /// connections idle for its `limits.idle_timeout_ms` (120 s by default).
    pub heartbeat_ms: u64,
}

impl Config {
    /// Panics unless the settings can work: a window of 1 to [`WINDOW_MAX`], timeouts above
    /// zero, and at least one hint before a refusal is believed.
    pub const fn check(&self) {
        assert!(self.window > 0 && self.window <= WINDOW_MAX, "the window must be 1 to WINDOW_MAX frames");
        assert!(self.ack_timeout_ms > 0 && self.hello_timeout_ms > 0, "timeouts must be above zero");
        assert!(self.hints_max > 0, "hints_max must be at least 1");
        assert!(self.heartbeat_ms > 0, "the heartbeat interval must be above zero");
    }
}

/// What [`Link::poll_transmit`] says to write next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// The hello that opens a session. `next` is the sequence of the next data frame, 0 while
    /// the device has no counter yet (before its first hello's ack). Preceded by a lone 0x00
    /// when `resync`: the first write on a connection ends whatever an earlier writer left
    /// half-sent.
    Hello { next: u32, resync: bool },
    /// Item `index` of the queue (0: the oldest unacked) as data frame `seq`; `retransmit`
    /// when a frame with this sequence was written before.
    Data { seq: u32, index: usize, retransmit: bool },
    /// A keep-alive on an idle connection.
    Heartbeat,
}

/// What the link tells its caller, through [`Link::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The `count` oldest items of the queue are durable: drop them.
    Acked { count: u32 },
    /// The link gave up on this connection: close it and open another, after a backoff. It
    /// writes nothing until [`Link::handle_connected`].
    Reconnect(&'static str),
    /// The bridge refused the device itself (its key, its registration, or its id), so
    /// retrying soon cannot help. `verified` is false when the refusal came as hints, not
    /// tagged with the device's key. The link writes nothing until [`Link::handle_connected`].
    Refused { reason: NackReason, verified: bool },
}

/// Which key a frame from the bridge is tagged with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// The device's own: the bridge vouches for the frame.
    Device,
    /// The all-zero key, which the bridge uses when it cannot name the device's key.
    Zero,
    /// Neither: a bridge that holds another key for this device, or a forgery.
    Neither,
}

/// What [`Link::handle_frame`] took in, for the caller's logs and counters. The link has acted
/// on it already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// An ack or a heartbeat tagged with the device's key, carrying this cumulative ack.
    Ack { ack: u32 },
    /// A nack, tagged as `tag` says.
    Nack { nack: Nack, ack: u32, tag: Tag },
    /// A module chunk tagged with the device's key, for the caller's [`Receiver`].
    Module,
    /// Bytes that do not decode, an ack or heartbeat not tagged with the device's key, a kind
    /// the bridge never sends, or anything while no connection is open: dropped.
    Dropped,
}

/// What a link counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hellos: u64,
    /// Data frames written, first copies and retransmissions.
    pub data_sent: u64,
    /// Data frames written with a sequence written before.
    pub retransmits: u64,
    pub heartbeats: u64,
    /// Items acked as durable.
    pub acked: u64,
    /// Nacks received, verified or not, by [`NackReason::index`].
    pub nacks: [u64; 8],
    pub ack_timeouts: u64,
    /// Cumulative acks below one received before: a late reply, or a bridge with less than it
    /// acked (ignored: the device keeps its numbering and an ack is a promise).
    pub stale_acks: u64,
    /// Frames from the bridge dropped: undecodable, unverifiable acks, kinds it never sends.
    pub bad_replies: u64,
    /// Hellos whose ack was beyond anything the device had written, so that its unsent items
    /// were numbered after that ack.
    pub renumbered: u64,
}

impl Stats {
    /// Nacks of every reason.
    pub fn nacks_total(&self) -> u64 {
        self.nacks.iter().sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection, or the link gave up on it.
    Down,
    /// The hello is to be written (after a lone 0x00 if `resync`).
    HelloDue { resync: bool },
    /// The hello went out at `at_ms`; its ack numbers the queue.
    HelloSent { at_ms: u64 },
    /// Data frames flow.
    Streaming,
}

/// The device's side of one device-to-bridge session, over any number of connections: a queue
/// of items the caller keeps, numbered from the first hello's ack, sent go-back-N.
///
/// The queue's first `in_flight` items were written in the current pass; a go-back (ack
/// timeout, a nack *out of order*, *unavailable* or *bad tag*, a new hello) writes them again
/// from the first the bridge lacks. An item leaves the queue only when a cumulative ack covers
/// it ([`Event::Acked`]).
#[derive(Clone, Debug)]
pub struct Link {
    config: Config,
    phase: Phase,
    /// Sequence of the oldest queued item; `None` until a hello's ack has numbered the queue.
    first_seq: Option<u32>,
    /// Items in the caller's queue.
    queued: u32,
    /// The first `in_flight` queued items were written in the current pass.
    in_flight: u32,
    /// Highest sequence written or known durable: an ack beyond it is about frames this
    /// device never wrote.
    sent_max: u32,
    /// Nacks about sequences below this one answer copies written before the last go-back.
    guard: u32,
    /// When the ack timeout fires, while frames are in flight.
    deadline_ms: Option<u64>,
    /// No data is written before this time (after a nack *unavailable*).
    hold_until_ms: Option<u64>,
    last_tx_ms: u64,
    /// Hello timeouts since the last hello ack.
    hello_timeouts: u32,
    /// Ack timeouts since the last progress.
    ack_timeouts: u32,
    /// Refusals as hints since the last verified frame.
    hints: u32,
    acked_unreported: u32,
    /// Why the link gave up, until polled.
    end: Option<Event>,
    stats: Stats,
}

impl Link {
    pub const fn new(config: Config) -> Link {
        config.check();
        Link {
            config,
            phase: Phase::Down,
            first_seq: None,
            queued: 0,
            in_flight: 0,
            sent_max: 0,
            guard: 0,
            deadline_ms: None,
            hold_until_ms: None,
            last_tx_ms: 0,
            hello_timeouts: 0,
            ack_timeouts: 0,
            hints: 0,
            acked_unreported: 0,
            end: None,
            stats: Stats {
                hellos: 0,
                data_sent: 0,
                retransmits: 0,
                heartbeats: 0,
                acked: 0,
                nacks: [0; 8],
                ack_timeouts: 0,
                stale_acks: 0,
                bad_replies: 0,
                renumbered: 0,
            },
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True once this connection's hello is acked and data frames flow.
    pub fn is_streaming(&self) -> bool {
        self.phase == Phase::Streaming
    }

    /// The sequence of the oldest queued item (the next one a cumulative ack covers), once a
    /// hello's ack has numbered the queue.
    pub fn first_unacked_seq(&self) -> Option<u32> {
        self.first_seq
    }

    /// Items in the caller's queue, as the link counts them.
    pub fn queued(&self) -> u32 {
        self.queued
    }

    /// The highest sequence the window admits now, once the queue is numbered.
    pub fn window_end(&self) -> Option<u32> {
        self.first_seq.map(|first| (first - 1).saturating_add(self.config.window))
    }

    /// A connection opened: the hello goes first (after a lone 0x00), then everything unacked
    /// again.
    pub fn handle_connected(&mut self) {
        self.restart(Phase::HelloDue { resync: true });
        self.hello_timeouts = 0;
        self.ack_timeouts = 0;
    }

    /// The connection closed or failed; nothing is written until [`Link::handle_connected`].
    pub fn handle_disconnected(&mut self) {
        self.restart(Phase::Down);
    }

    /// The caller added `count` items at the back of its queue.
    pub fn handle_queued(&mut self, count: u32) {
        self.queued = self.queued.checked_add(count).expect("at most u32::MAX items queued");
    }

    /// The caller dropped its oldest unacked item (its queue was full). The item keeps its
    /// number, which goes unused unless the bridge has it already; the next hello tells the
    /// bridge to skip it.
    pub fn handle_dropped_oldest(&mut self) {
        assert!(self.queued > 0, "no queued item to drop");
        self.queued -= 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(first) = self.first_seq {
            let next = first.checked_add(1).expect("sequence space exhausted");
            self.first_seq = Some(next);
            self.sent_max = self.sent_max.max(first);
            self.guard = self.guard.max(next);
        }
    }

    /// Counts bytes from the bridge that did not even deframe (the caller's deframer refused
    /// them).
    pub fn handle_undecodable(&mut self) {
        self.stats.bad_replies += 1;
    }

    /// Handles one unstuffed frame from the bridge (as `silt_frame::Deframer` gives them);
    /// `key` is the device's.
    pub fn handle_frame(&mut self, bytes: &[u8], key: &Key, now_ms: u64) -> Received {
        if self.phase == Phase::Down {
            return Received::Dropped;
        }
        let Ok(unverified) = decode(bytes) else {
            self.stats.bad_replies += 1;
            return Received::Dropped;
        };
        let ack = unverified.frame().ack;
        let reply = match unverified.frame().body {
            Body::Ack => Reply::Ack,
            Body::Heartbeat => Reply::Heartbeat,
            Body::Nack(nack) => Reply::Nack(nack),
            // Module delivery is the caller's (its slot and `Receiver`); the link only vouches.
            Body::ModuleChunk(_) => Reply::Module,
            Body::Data(_) | Body::Hello(_) | Body::ModuleState(_) => Reply::Other,
        };
        let tag = if unverified.verify(key).is_ok() {
            Tag::Device
        } else if decode(bytes).is_ok_and(|u| u.verify(&ZERO_KEY).is_ok()) {
            Tag::Zero
        } else {
            Tag::Neither
        };
        match (reply, tag) {
            (Reply::Nack(nack), _) => {
                self.stats.nacks[nack.reason.index()] += 1;
                if tag == Tag::Device {
                    self.hints = 0;
                    self.on_nack(nack, ack, now_ms);
                } else {
                    self.on_hint(nack);
                }
                Received::Nack { nack, ack, tag }
            }
            (Reply::Ack | Reply::Heartbeat, Tag::Device) => {
                self.hints = 0;
                match self.phase {
                    // Only an ack answers a hello; a heartbeat is the old session's.
                    Phase::HelloSent { .. } if reply == Reply::Ack => self.on_hello_ack(ack),
                    _ => self.acknowledge(ack, now_ms),
                }
                Received::Ack { ack }
            }
            (Reply::Module, Tag::Device) => {
                self.hints = 0;
                Received::Module
            }
            _ => {
                self.stats.bad_replies += 1;
                Received::Dropped
            }
        }
    }

    /// Acts on the deadline [`Link::poll_timeout`] gave, if it has passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.phase {
            Phase::HelloSent { at_ms } if now_ms >= at_ms.saturating_add(self.config.hello_timeout_ms) => {
                self.hello_timeouts = self.hello_timeouts.saturating_add(1);
                if self.hello_timeouts > self.config.hello_timeouts_max {
                    self.finish(Event::Reconnect("no ack for the hello"));
                } else {
                    self.phase = Phase::HelloDue { resync: false };
                }
            }
            Phase::Streaming => {
                if self.hold_until_ms.is_some_and(|t| now_ms >= t) {
                    self.hold_until_ms = None;
                }
                if self.in_flight > 0 && self.deadline_ms.is_some_and(|d| now_ms >= d) {
                    self.stats.ack_timeouts += 1;
                    self.ack_timeouts = self.ack_timeouts.saturating_add(1);
                    if self.ack_timeouts > self.config.ack_timeouts_max {
                        self.finish(Event::Reconnect("no ack despite retransmissions"));
                    } else {
                        self.go_back(self.first_seq.expect("frames in flight are numbered"));
                    }
                }
            }
            Phase::Down | Phase::HelloDue { .. } | Phase::HelloSent { .. } => {}
        }
    }

    /// What to write next, if anything is due at `now_ms`; call until it returns `None`.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        let t = self.peek_transmit(now_ms)?;
        self.last_tx_ms = now_ms;
        match t {
            Transmit::Hello { .. } => {
                self.phase = Phase::HelloSent { at_ms: now_ms };
                self.stats.hellos += 1;
            }
            Transmit::Data { seq, retransmit, .. } => {
                self.hold_until_ms = None;
                self.in_flight += 1;
                self.sent_max = self.sent_max.max(seq);
                self.stats.data_sent += 1;
                if retransmit {
                    self.stats.retransmits += 1;
                }
                if self.deadline_ms.is_none() {
                    self.deadline_ms = Some(now_ms.saturating_add(self.config.ack_timeout_ms));
                }
            }
            Transmit::Heartbeat => self.stats.heartbeats += 1,
        }
        Some(t)
    }

    /// What [`Link::poll_transmit`] would return at `now_ms`, without taking it: for a caller
    /// that may hold a frame back (the simulator's reorder fault).
    pub fn peek_transmit(&self, now_ms: u64) -> Option<Transmit> {
        match self.phase {
            Phase::Down | Phase::HelloSent { .. } => None,
            Phase::HelloDue { resync } => Some(Transmit::Hello { next: self.first_seq.unwrap_or(0), resync }),
            Phase::Streaming => {
                if self.hold_until_ms.is_some_and(|t| now_ms < t) {
                    return None;
                }
                let first = self.first_seq?;
                let room = self.in_flight < self.config.window.min(self.queued);
                match first.checked_add(self.in_flight).filter(|seq| *seq <= SEQ_MAX) {
                    Some(seq) if room => Some(Transmit::Data {
                        seq,
                        index: self.in_flight as usize,
                        retransmit: seq <= self.sent_max,
                    }),
                    _ if now_ms >= self.last_tx_ms.saturating_add(self.config.heartbeat_ms) => {
                        Some(Transmit::Heartbeat)
                    }
                    _ => None,
                }
            }
        }
    }

    /// When [`Link::handle_timeout`] has something to do, on the caller's clock; `None` while
    /// only input (or a transmit) can move the link on.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::HelloSent { at_ms } => Some(at_ms.saturating_add(self.config.hello_timeout_ms)),
            Phase::Streaming => {
                let ack = self.deadline_ms.filter(|_| self.in_flight > 0);
                let heartbeat = Some(self.last_tx_ms.saturating_add(self.config.heartbeat_ms));
                [self.hold_until_ms, ack, heartbeat].into_iter().flatten().min()
            }
            Phase::Down | Phase::HelloDue { .. } => None,
        }
    }

    /// The next thing the caller must act on: items acked first, then whether the link gave
    /// up. Call until it returns `None` after every `handle_*`.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.acked_unreported > 0 {
            let count = core::mem::take(&mut self.acked_unreported);
            return Some(Event::Acked { count });
        }
        self.end.take()
    }

    /// The sequence the next first-pass write carries (0 before numbering).
    fn next_seq(&self) -> u32 {
        self.first_seq.map_or(0, |first| first + self.in_flight)
    }

    /// A new pass in `phase`: nothing in flight, and nacks about what was written so far are
    /// stale.
    fn restart(&mut self, phase: Phase) {
        self.guard = self.guard.max(self.next_seq());
        self.phase = phase;
        self.in_flight = 0;
        self.deadline_ms = None;
        self.hold_until_ms = None;
    }

    /// Gives up on the connection, with `event` for the caller.
    fn finish(&mut self, event: Event) {
        self.restart(Phase::Down);
        if self.end.is_none() {
            self.end = Some(event);
        }
    }

    /// The ack of a hello: the bridge's word on what is durable, and where data goes on.
    fn on_hello_ack(&mut self, ack: u32) {
        if ack >= SEQ_MAX {
            self.finish(Event::Reconnect("the bridge acked the last sequence there is"));
            return;
        }
        match self.first_seq {
            None => {
                self.first_seq = Some(ack + 1);
                self.sent_max = ack;
            }
            Some(first) => {
                let acked = first - 1;
                if ack < acked {
                    // A bridge with less than it acked before (it lost state, or still has
                    // rounds in flight): the device keeps its numbering, and its hello said
                    // where it is; renumbering would make items acked before look unsent.
                    self.stats.stale_acks += 1;
                } else {
                    let sent = ack.min(self.sent_max);
                    if sent > acked {
                        self.pop(sent - acked);
                    }
                    if ack > self.sent_max {
                        // The bridge has more under this id than the device ever wrote: the
                        // unsent items go after it.
                        self.first_seq = Some(ack + 1);
                        self.sent_max = ack;
                        self.stats.renumbered += 1;
                    }
                }
            }
        }
        self.restart(Phase::Streaming);
        let first = self.first_seq.expect("numbered above");
        self.guard = self.guard.max(first);
        self.hello_timeouts = 0;
        self.ack_timeouts = 0;
    }

    /// A cumulative ack: every sequence up to `ack` is durable.
    fn acknowledge(&mut self, ack: u32, now_ms: u64) {
        let Some(first) = self.first_seq else { return };
        let acked = first - 1;
        if ack < acked {
            self.stats.stale_acks += 1;
            return;
        }
        if ack == acked {
            return;
        }
        if ack > self.sent_max {
            self.finish(Event::Reconnect("the bridge acked a sequence never sent"));
            return;
        }
        self.pop(ack - acked);
        self.ack_timeouts = 0;
        self.deadline_ms = (self.in_flight > 0).then(|| now_ms.saturating_add(self.config.ack_timeout_ms));
    }

    /// The `count` oldest items are durable.
    fn pop(&mut self, count: u32) {
        assert!(count <= self.queued, "an ack covers queued items only");
        let first = self.first_seq.expect("acked items are numbered");
        let next = first.checked_add(count).expect("acked sequences are at most SEQ_MAX");
        self.first_seq = Some(next);
        self.queued -= count;
        self.in_flight = self.in_flight.saturating_sub(count);
        self.guard = self.guard.max(next);
        self.acked_unreported =
            self.acked_unreported.checked_add(count).expect("poll_event reports acked items");
        self.stats.acked += u64::from(count);
    }

    /// A nack tagged with the device's key.
    fn on_nack(&mut self, nack: Nack, ack: u32, now_ms: u64) {
        let streaming = self.phase == Phase::Streaming;
        match nack.reason {
            NackReason::UnknownDevice
            | NackReason::Revoked
            | NackReason::WrongDevice
            | NackReason::Forbidden => {
                self.finish(Event::Refused { reason: nack.reason, verified: true });
            }
            // Refusing a data frame's tag after accepting the hello's: that frame was damaged
            // on the way.
            NackReason::BadTag if streaming => {
                self.resend_from(nack.seq);
            }
            NackReason::BadTag => self.finish(Event::Refused { reason: nack.reason, verified: true }),
            NackReason::OutOfOrder if streaming => {
                // The nack's ack is the bridge's durable sequence: resend from the one after.
                self.acknowledge(ack, now_ms);
                if let (Phase::Streaming, Some(first)) = (self.phase, self.first_seq) {
                    if self.is_fresh(nack.seq) {
                        self.go_back(first);
                    }
                }
            }
            NackReason::Unavailable if streaming => {
                if self.resend_from(nack.seq) {
                    self.hold_until_ms = Some(now_ms.saturating_add(self.config.unavailable_hold_ms));
                }
            }
            // The bridge lost this connection's session (it restarted behind a serial line):
            // one hello answers every frame in flight.
            NackReason::NoHello if streaming => self.restart(Phase::HelloDue { resync: false }),
            // While the hello is unanswered these are about frames written before it, and its
            // ack says where to go on. A frame the bridge could not decode is resent by the ack
            // timeout if it mattered.
            NackReason::OutOfOrder | NackReason::Unavailable | NackReason::NoHello | NackReason::Decode => {}
        }
    }

    /// A nack not tagged with the device's key. It proves nothing, so it is acted on only in
    /// ways a forgery cannot abuse: a resend, or a stop once [`Config::hints_max`] came in a row.
    fn on_hint(&mut self, nack: Nack) {
        let refusal = match (nack.reason, self.phase) {
            // The bridge could not verify a data frame after accepting the hello: damaged on
            // the way (or the simulator's bad-tag fault). Resending it is harmless.
            (NackReason::BadTag, Phase::Streaming) => {
                self.resend_from(nack.seq);
                return;
            }
            (NackReason::BadTag | NackReason::UnknownDevice | NackReason::Revoked, _) => nack.reason,
            _ => return,
        };
        self.hints = self.hints.saturating_add(1);
        if self.hints >= self.config.hints_max {
            self.finish(Event::Refused { reason: refusal, verified: false });
        }
    }

    /// Whether a nack about `seq` answers the current copy: one written since the last
    /// go-back, in this pass.
    fn is_fresh(&self, seq: u32) -> bool {
        self.first_seq.is_some_and(|first| seq >= first && seq >= self.guard && seq < self.next_seq())
    }

    /// Goes back to `seq` if a nack about it is fresh; returns whether it did.
    fn resend_from(&mut self, seq: u32) -> bool {
        let fresh = self.is_fresh(seq);
        if fresh {
            self.go_back(seq);
        }
        fresh
    }

    /// Go-back-N: the next write is `from` again, and nacks about copies written so far are
    /// stale.
    fn go_back(&mut self, from: u32) {
        let first = self.first_seq.expect("only numbered frames are resent");
        debug_assert!(from >= first && from <= self.next_seq());
        self.guard = self.guard.max(self.next_seq());
        self.in_flight = from - first;
        self.deadline_ms = None;
    }
}

/// The kinds of frame a bridge sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Ack,
    Heartbeat,
    Nack(Nack),
    Module,
    Other,
}
