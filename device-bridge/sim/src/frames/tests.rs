//! A simulated device against the bridge's own frame handling (its sans-IO `Session` and
//! `Sequences`) on virtual time: with every fault on, go-back-N gets every frame stored once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use silt_bridge::config::TopicConfig;
use silt_bridge::registry::Lookup;
use silt_bridge::sequences::Sequences;
use silt_bridge::session::{Session, Step};
use silt_frame::{Body, Deframer, Frame, Key, NackReason, STUFFED_BYTES_MAX};

use super::*;
use crate::config::test_settings as settings;
use crate::config::TEST_KEY as KEY;
use crate::{FaultPlan, Rng};

fn stuffed(out: &mut Vec<u8>, frame: &Frame<'_>, key: &Key) {
    let mut buf = [0u8; STUFFED_BYTES_MAX];
    let n = silt_frame::encode_stuffed(frame, key, &mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
}

/// The bridge's frame handling with an appender that makes submissions durable a few virtual
/// milliseconds later, in order.
struct ModelBridge {
    session: Session,
    sequences: Sequences,
    /// (durable at, seq, connection) in submission order.
    appending: VecDeque<(Instant, u32, u64)>,
    connection: u64,
    stored: Vec<u32>,
    deframer: Box<Deframer>,
    rng: Rng,
}

impl ModelBridge {
    fn new(seed: u64) -> ModelBridge {
        ModelBridge {
            session: Session::default(),
            sequences: Sequences::default(),
            appending: VecDeque::new(),
            connection: 0,
            stored: Vec::new(),
            deframer: Box::new(Deframer::new()),
            rng: Rng::new(seed),
        }
    }

    /// Handles bytes from the device; returns the replies' bytes.
    fn receive(&mut self, input: &[u8], now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        let (session, sequences, appending, rng) =
            (&mut self.session, &self.sequences, &mut self.appending, &mut self.rng);
        let connection = self.connection;
        self.deframer.push_all(input, |frame| {
            let unverified = silt_frame::decode(frame.unwrap()).unwrap();
            let (step, _) =
                session.handle(unverified, Lookup::active(KEY), 0, sequences, &TopicConfig::default());
            match step {
                Step::Reply { reply, key } => stuffed(&mut out, &reply.frame(), &key),
                Step::Submit { seq, records, .. } => {
                    assert_eq!(records.len(), 2);
                    let delay = Duration::from_micros(500 + rng.next_u64() % 5_000);
                    let at = appending.back().map_or(now, |(t, _, _)| *t).max(now) + delay;
                    appending.push_back((at, seq, connection));
                }
                Step::Module(_) | Step::Nothing => {}
            }
        });
        out
    }

    /// Completes what is durable by `now`; returns the acks' bytes.
    fn complete(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        while self.appending.front().is_some_and(|(t, _, _)| *t <= now) {
            let (_, seq, connection) = self.appending.pop_front().unwrap();
            self.stored.push(seq);
            let ack = self.sequences.complete("sim-00000", seq);
            // Like the bridge, the ack goes to the connection that submitted the frame.
            if connection == self.connection {
                stuffed(&mut out, &Frame { seq: 0, ack, body: Body::Ack }, &KEY);
            }
        }
        out
    }

    /// The connection closes: a new session, and acks of what is appending are not sent.
    fn reconnect(&mut self) {
        self.connection += 1;
        self.session = Session::default();
        *self.deframer = Deframer::new();
    }
}

/// Runs one device against the model bridge on virtual time (1 ms steps) and returns the
/// device, the stored sequences and the virtual time taken.
fn simulate(faults: FaultPlan, frames: u64, seed: u64) -> (FrameDevice, Vec<u32>, Duration) {
    simulate_with(settings(faults, frames, seed), seed)
}

fn simulate_with(settings: DeviceSettings, seed: u64) -> (FrameDevice, Vec<u32>, Duration) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut bridge = ModelBridge::new(seed);
    let mut dev = FrameDevice::new(settings, now);
    let mut replies: Vec<u8> = Vec::new();
    let mut deframer = Box::new(Deframer::new());
    dev.connected();
    for _ in 0..200_000 {
        if dev.has_base() && !dev.is_started() {
            dev.start(now);
        }
        let mut out = Vec::new();
        let reconnect = dev.poll_transmit(now, &mut out);
        replies.extend(bridge.receive(&out, now));
        replies.extend(bridge.complete(now));
        if reconnect {
            // Replies in transit are lost with the connection.
            replies.clear();
            bridge.reconnect();
            dev.disconnected();
            *deframer = Deframer::new();
            dev.connected();
            continue;
        }
        dev.handle_bytes(&mut deframer, &replies, now);
        replies.clear();
        assert!(dev.failed().is_none(), "seed {seed}: {:?}", dev.failed());
        if dev.is_done() {
            return (dev, bridge.stored, now - t0);
        }
        now += Duration::from_millis(1);
        if dev.poll_timeout().is_some_and(|t| t <= now) {
            dev.handle_timeout(now);
        }
    }
    panic!("seed {seed}: not done after 200 s of virtual time: {dev:?}");
}

/// Without faults the device sends each frame once and the bridge stores each once, in order.
#[test]
fn without_faults_every_frame_is_stored_once_and_nothing_is_resent() {
    let (dev, stored, _) = simulate(FaultPlan::default(), 500, 1);
    assert_eq!(stored, (1..=500).collect::<Vec<_>>());
    let c = dev.counters();
    assert_eq!(c.acked, 500);
    assert_eq!(c.sent, 500);
    assert_eq!(c.retransmits, 0);
    assert_eq!(c.nacks, [0; 8]);
    assert_eq!(c.hellos, 1);
}

/// With every fault on, go-back-N recovers every frame and the bridge stores each exactly once.
#[test]
fn with_every_fault_every_frame_is_still_stored_exactly_once_for_many_seeds() {
    let faults = FaultPlan { drop: 0.03, duplicate: 0.03, reorder: 0.03, bad_tag: 0.03, reconnect: 0.02 };
    for seed in 1..=40 {
        let (dev, stored, took) = simulate(faults, 300, seed);
        assert_eq!(stored, (1..=300).collect::<Vec<_>>(), "seed {seed}");
        let c = dev.counters();
        assert_eq!(c.acked, 300, "seed {seed}");
        assert!(c.dropped + c.duplicated + c.reordered + c.bad_tagged + c.reconnects > 0, "seed {seed}");
        // A bad-tag nack can be lost with its connection (the reconnect fault).
        assert!(c.nacks[NackReason::BadTag.index()] <= c.bad_tagged, "seed {seed}: {c:?}");
        let expected = c.nacks[NackReason::BadTag.index()] + c.nacks[NackReason::OutOfOrder.index()];
        assert_eq!(c.nacks.iter().sum::<u64>(), expected, "seed {seed}: {c:?}");
        // Recovery is by nacks mostly; the ack timeout (500 ms) is the backstop.
        assert!(took < Duration::from_secs(60), "seed {seed}: {took:?} {c:?}");
    }
}

/// The reorder fault is applied at any rate: the frame waits for the next one to go first.
#[test]
fn a_rate_limited_device_holds_a_reordered_frame_until_the_next_one_exists() {
    let mut s = settings(FaultPlan { reorder: 0.2, bad_tag: 0.05, ..FaultPlan::default() }, 200, 5);
    s.interval = Some(Duration::from_millis(10));
    let (dev, stored, _) = simulate_with(s, 5);
    assert_eq!(stored, (1..=200).collect::<Vec<_>>());
    assert!(dev.counters().reordered >= 25, "{:?}", dev.counters());
}

/// A rate-limited device generates one frame per interval and counts those it generated late.
#[test]
fn a_rate_limited_device_sends_on_schedule_and_counts_late_frames() {
    let mut s = settings(FaultPlan::default(), 10, 1);
    s.interval = Some(Duration::from_millis(100));
    let t0 = Instant::now();
    let mut dev = FrameDevice::new(s, t0);
    dev.connected();
    let mut out = Vec::new();
    dev.poll_transmit(t0, &mut out);
    let mut ack = [0u8; silt_frame::FRAME_BYTES_MAX];
    let n = silt_frame::encode(&Frame { seq: 0, ack: 41, body: Body::Ack }, &KEY, &mut ack).unwrap();
    dev.handle_frame(&ack[..n], t0);
    assert!(dev.is_up());
    dev.start(t0);
    dev.poll_transmit(t0 + Duration::from_millis(99), &mut out);
    assert!(dev.counters().generated <= 1, "at most one frame in the first interval");
    // Polled late: the frames due meanwhile come at once, and those more than an interval
    // behind count as late.
    dev.poll_transmit(t0 + Duration::from_millis(450), &mut out);
    let generated = dev.counters().generated;
    assert!((4..=5).contains(&generated), "one frame per 100 ms: {generated}");
    assert!(dev.counters().late >= 2, "{:?}", dev.counters());
    assert_eq!(dev.seqs(), (42, 41 + generated as u32), "sequences continue after the bridge's ack");
}

/// A bridge that refuses a correctly tagged frame, or acks one never sent, fails the device
/// with a problem instead of a retry.
#[test]
fn a_bridge_that_breaks_the_protocol_fails_the_device() {
    let t0 = Instant::now();
    let reply = |ack: u32, body: Body<'_>, key: &Key| {
        let mut buf = [0u8; silt_frame::FRAME_BYTES_MAX];
        let n = silt_frame::encode(&Frame { seq: 0, ack, body }, key, &mut buf).unwrap();
        buf[..n].to_vec()
    };
    let streaming = || {
        let mut dev = FrameDevice::new(settings(FaultPlan::default(), 3, 1), t0);
        dev.connected();
        dev.poll_transmit(t0, &mut Vec::new());
        dev.handle_frame(&reply(0, Body::Ack, &KEY), t0);
        dev.start(t0);
        dev.poll_transmit(t0, &mut Vec::new());
        dev
    };
    let mut dev = streaming();
    let nack = silt_frame::Nack { seq: 2, reason: NackReason::BadTag };
    dev.handle_frame(&reply(0, Body::Nack(nack), &silt_frame::ZERO_KEY), t0);
    assert!(dev.failed().is_some_and(|f| f.contains("tagged correctly")), "{:?}", dev.failed());
    let mut dev = streaming();
    dev.handle_frame(&reply(9, Body::Ack, &KEY), t0);
    assert!(dev.failed().is_some_and(|f| f.contains("never sent")), "{:?}", dev.failed());
    assert!(dev.poll_timeout().is_none());
}
