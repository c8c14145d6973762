//! The device link driven step by step on virtual time, with replies encoded as a bridge
//! encodes them: windows, cumulative acks, each nack reason, timeouts, reconnects and hints.
//! The firmware-shaped tests go through [`Backlog`]; the rest drive [`Link`] itself.

use silt_frame::{
    decode_verified, encode, encode_stuffed, Body, Deframer, Frame, Key, Nack, NackReason, Reading, Readings,
    Time, FRAME_BYTES_MAX, KEY_BYTES, ZERO_KEY,
};
use silt_link::{
    Backlog, Config, Event, Identity, Link, Payload, Received, Tag, Transmit, Verdict, SEQ_MAX,
    TRANSMIT_BYTES_MAX,
};

const KEY: Key = [0x5a; KEY_BYTES];
const OTHER_KEY: Key = [0x77; KEY_BYTES];
const ACK_TIMEOUT_MS: u64 = 3_000;
const ACK_TIMEOUTS_MAX: u32 = 4;
const HELLO_TIMEOUT_MS: u64 = 5_000;
const HOLD_MS: u64 = 2_000;
const HEARTBEAT_MS: u64 = 30_000;
const BACKLOG_MAX: usize = 300;

/// The ESP32-C3's settings: a window of 8, a hello timeout ends the connection, the first hint
/// is believed.
const CONFIG: Config = Config {
    window: 8,
    ack_timeout_ms: ACK_TIMEOUT_MS,
    ack_timeouts_max: ACK_TIMEOUTS_MAX,
    hello_timeout_ms: HELLO_TIMEOUT_MS,
    hello_timeouts_max: 0,
    unavailable_hold_ms: HOLD_MS,
    hints_max: 1,
    heartbeat_ms: HEARTBEAT_MS,
};

const ID: Identity<'static> = Identity { device: "dev-1", key: KEY, firmware: "test", module: 0 };

#[derive(Clone, Copy, Debug)]
struct Sample {
    tick_ms: u64,
    temperature_c: f32,
}

impl Payload for Sample {
    fn data(&self, _seq: u32) -> (Time, Readings<'_>) {
        let mut readings = Readings::new();
        readings.push(Reading::Temperature(self.temperature_c)).unwrap();
        readings.push(Reading::Numeric { channel: 1, value: 50_000.0 }).unwrap();
        (Time::TickMs(self.tick_ms), readings)
    }
}

type Device = Backlog<'static, Sample, BACKLOG_MAX>;

fn sample(i: u64) -> Sample {
    Sample { tick_ms: 1_000 * i, temperature_c: 20.0 + i as f32 }
}

/// What the device wrote, decoded as the bridge sees it.
#[derive(Debug, PartialEq)]
enum Sent {
    Hello { next: u32 },
    Data { seq: u32, tick_ms: u64 },
    Heartbeat,
}

/// Decodes what one write holds; checks each frame's tag and that a write is one frame.
fn decode_write(bytes: &[u8], now_ms: u64) -> Sent {
    let mut deframer = Deframer::new();
    let mut sent = Vec::new();
    deframer.push_all(bytes, |frame| {
        let frame = decode_verified(frame.unwrap(), &KEY).unwrap();
        sent.push(match frame.body {
            Body::Hello(h) => {
                assert_eq!((h.device, h.tick_ms), ("dev-1", now_ms));
                Sent::Hello { next: frame.seq }
            }
            Body::Data(d) => {
                let Time::TickMs(tick_ms) = d.time else { panic!("not tick time") };
                assert_eq!(d.readings.len(), 2);
                Sent::Data { seq: frame.seq, tick_ms }
            }
            Body::Heartbeat => Sent::Heartbeat,
            other => panic!("device sent {other:?}"),
        });
    });
    assert_eq!(sent.len(), 1, "one frame per write");
    sent.pop().unwrap()
}

/// Drains everything the device wants to write at `now_ms`.
fn drain(dev: &mut Device, now_ms: u64) -> Vec<Sent> {
    let mut out = [0u8; TRANSMIT_BYTES_MAX];
    let mut sent = Vec::new();
    while let Some(n) = dev.poll_transmit(now_ms, &mut out) {
        sent.push(decode_write(&out[..n], now_ms));
    }
    sent
}

fn reply(body: Body<'_>, ack: u32, key: &Key) -> Vec<u8> {
    let mut buf = [0u8; FRAME_BYTES_MAX];
    let n = encode(&Frame { seq: 0, ack, body }, key, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn ack(n: u32) -> Vec<u8> {
    reply(Body::Ack, n, &KEY)
}

fn nack(seq: u32, reason: NackReason, ack: u32) -> Vec<u8> {
    reply(Body::Nack(Nack { seq, reason }), ack, &KEY)
}

fn hint(seq: u32, reason: NackReason, key: &Key) -> Vec<u8> {
    reply(Body::Nack(Nack { seq, reason }), 0, key)
}

/// Data frames `seqs`, the first carrying sample `first_sample`.
fn data(seqs: std::ops::RangeInclusive<u32>, first_sample: u64) -> Vec<Sent> {
    let first_seq = *seqs.start();
    seqs.map(|seq| Sent::Data { seq, tick_ms: 1_000 * (first_sample + u64::from(seq - first_seq)) }).collect()
}

/// A device connected, its hello written and not answered yet.
fn saying_hello() -> Device {
    let mut dev = Device::new(ID, CONFIG);
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 0), [Sent::Hello { next: 0 }]);
    dev
}

/// A device connected and streaming, its hello acked with `durable`, `samples` queued.
fn streaming(samples: u64, durable: u32) -> Device {
    let mut dev = Device::new(ID, CONFIG);
    for i in 0..samples {
        dev.push(sample(i));
    }
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 0), [Sent::Hello { next: 0 }]);
    assert_eq!(dev.handle_frame(&ack(durable), 0), Verdict::Continue);
    assert!(dev.is_streaming());
    dev
}

/// Nothing goes out before a connection; then a resync byte and a hello, and data is numbered
/// from the hello's ack.
#[test]
fn a_connection_starts_with_a_zero_byte_and_a_hello_and_numbers_data_after_its_ack() {
    let mut dev = Device::new(ID, CONFIG);
    dev.push(sample(0));
    assert_eq!(drain(&mut dev, 0), [], "nothing is written before a connection");
    dev.handle_connected();
    let mut out = [0u8; TRANSMIT_BYTES_MAX];
    let n = dev.poll_transmit(5, &mut out).unwrap();
    assert_eq!(out[0], 0, "a lone 0x00 ends what an earlier writer left half-sent");
    assert_ne!(out[1], 0);
    assert_eq!(out[n - 1], 0);
    assert_eq!(decode_write(&out[..n], 5), Sent::Hello { next: 0 }, "no counter before the first ack");
    assert_eq!(drain(&mut dev, 6), [], "no data before the hello's ack");
    assert_eq!(dev.handle_frame(&ack(41), 7), Verdict::Continue);
    dev.push(sample(1));
    assert_eq!(drain(&mut dev, 8), data(42..=43, 0));
    assert_eq!(dev.link().first_unacked_seq(), Some(42));
}

/// At most the window is in flight; cumulative acks and heartbeats open it again.
#[test]
fn at_most_the_window_is_in_flight_and_acks_open_it() {
    let mut dev = streaming(20, 0);
    assert_eq!(drain(&mut dev, 10), data(1..=8, 0));
    assert_eq!(dev.handle_frame(&ack(3), 20), Verdict::Continue);
    assert_eq!(drain(&mut dev, 30), data(9..=11, 8));
    assert_eq!(dev.len(), 17);
    assert_eq!(dev.handle_frame(&reply(Body::Heartbeat, 11, &KEY), 40), Verdict::Continue);
    assert_eq!(drain(&mut dev, 50), data(12..=19, 11));
    assert_eq!(dev.handle_frame(&ack(19), 60), Verdict::Continue);
    assert_eq!(drain(&mut dev, 70), data(20..=20, 19));
    assert_eq!(dev.handle_frame(&ack(20), 80), Verdict::Continue);
    assert!(dev.is_empty());
    assert_eq!(dev.link().stats().acked, 20);
    assert_eq!(dev.link().stats().retransmits, 0);
}

/// An ack timeout resends every unacked frame in order, and too many in a row end the
/// connection.
#[test]
fn an_ack_timeout_resends_every_unacked_frame_in_order_then_gives_up() {
    let mut dev = streaming(3, 0);
    assert_eq!(drain(&mut dev, 100), data(1..=3, 0));
    assert_eq!(dev.poll_timeout(), Some(100 + ACK_TIMEOUT_MS));
    assert_eq!(dev.handle_timeout(100 + ACK_TIMEOUT_MS - 1), Verdict::Continue);
    assert_eq!(drain(&mut dev, 101), []);
    // Progress restarts the timeout: it runs from the last ack that moved.
    assert_eq!(dev.handle_frame(&ack(1), 200), Verdict::Continue);
    assert_eq!(dev.poll_timeout(), Some(200 + ACK_TIMEOUT_MS));
    let mut now = 200 + ACK_TIMEOUT_MS;
    for _ in 0..ACK_TIMEOUTS_MAX {
        assert_eq!(dev.handle_timeout(now), Verdict::Continue);
        assert_eq!(drain(&mut dev, now), data(2..=3, 1));
        now += ACK_TIMEOUT_MS;
    }
    assert!(matches!(dev.handle_timeout(now), Verdict::Reconnect(_)));
    assert_eq!(drain(&mut dev, now), [], "nothing is written on a connection given up");
    assert_eq!(dev.link().stats().ack_timeouts, u64::from(ACK_TIMEOUTS_MAX) + 1);
    assert_eq!(dev.link().stats().retransmits, 2 * u64::from(ACK_TIMEOUTS_MAX));
}

/// An out-of-order nack resends from the bridge's ack, and the old window's nacks do not
/// resend it again.
#[test]
fn out_of_order_resends_from_the_nack_ack_once_per_go_back() {
    let mut dev = streaming(6, 10);
    assert_eq!(drain(&mut dev, 0), data(11..=16, 0));
    // The bridge stored 11 and 12, then lost 13; 14..16 are refused in turn.
    assert_eq!(dev.handle_frame(&ack(12), 1), Verdict::Continue);
    assert_eq!(dev.handle_frame(&nack(14, NackReason::OutOfOrder, 12), 1), Verdict::Continue);
    assert_eq!(drain(&mut dev, 2), data(13..=16, 2));
    // Stale nacks about frames written before the go-back change nothing.
    assert_eq!(dev.handle_frame(&nack(15, NackReason::OutOfOrder, 12), 3), Verdict::Continue);
    assert_eq!(dev.handle_frame(&nack(16, NackReason::OutOfOrder, 12), 3), Verdict::Continue);
    assert_eq!(drain(&mut dev, 4), []);
    assert_eq!(dev.handle_frame(&ack(16), 5), Verdict::Continue);
    assert!(dev.is_empty());
}

/// An out-of-order nack's ack counts as a cumulative ack; a lower one is a late reply.
#[test]
fn an_out_of_order_nack_acks_what_it_says_is_durable() {
    let mut dev = streaming(5, 0);
    assert_eq!(drain(&mut dev, 0), data(1..=5, 0));
    // 1 and 2 are durable, 3 was lost: the nack about 4 says so before any ack came.
    assert_eq!(dev.handle_frame(&nack(4, NackReason::OutOfOrder, 2), 1), Verdict::Continue);
    assert_eq!(dev.len(), 3);
    assert_eq!(drain(&mut dev, 2), data(3..=5, 2));
    // A nack whose ack is below one received before is a late reply: counted, not acted on.
    assert_eq!(dev.handle_frame(&nack(5, NackReason::OutOfOrder, 1), 3), Verdict::Continue);
    assert_eq!(dev.link().stats().stale_acks, 1);
    assert_eq!(drain(&mut dev, 4), []);
}

/// A nack unavailable holds data for a while, then resends from the refused frame.
#[test]
fn unavailable_pauses_then_resends_in_order() {
    let mut dev = streaming(4, 0);
    assert_eq!(drain(&mut dev, 0), data(1..=4, 0));
    assert_eq!(dev.handle_frame(&ack(1), 10), Verdict::Continue);
    assert_eq!(dev.handle_frame(&nack(2, NackReason::Unavailable, 1), 10), Verdict::Continue);
    assert_eq!(dev.handle_frame(&nack(3, NackReason::OutOfOrder, 1), 11), Verdict::Continue);
    assert_eq!(drain(&mut dev, 12), [], "held after unavailable");
    assert_eq!(dev.poll_timeout(), Some(10 + HOLD_MS));
    assert_eq!(dev.handle_timeout(10 + HOLD_MS), Verdict::Continue);
    assert_eq!(drain(&mut dev, 10 + HOLD_MS), data(2..=4, 1));
}

/// A nack no hello writes a hello carrying the counter, then resends after its ack.
#[test]
fn no_hello_sends_a_new_hello_then_resends() {
    let mut dev = streaming(3, 5);
    assert_eq!(drain(&mut dev, 0), data(6..=8, 0));
    assert_eq!(dev.handle_frame(&nack(6, NackReason::NoHello, 0), 1), Verdict::Continue);
    let mut out = [0u8; TRANSMIT_BYTES_MAX];
    let n = dev.poll_transmit(2, &mut out).unwrap();
    assert_ne!(out[0], 0, "no resync byte inside a connection");
    assert_eq!(decode_write(&out[..n], 2), Sent::Hello { next: 6 }, "the hello carries the counter");
    // Nacks for the other frames written before the new hello are stale.
    assert_eq!(dev.handle_frame(&nack(7, NackReason::NoHello, 0), 3), Verdict::Continue);
    assert_eq!(drain(&mut dev, 3), []);
    assert_eq!(dev.handle_frame(&ack(5), 4), Verdict::Continue);
    assert_eq!(drain(&mut dev, 5), data(6..=8, 0));
}

/// A reconnect drops what the hello's ack covers, and a lower hello ack never renumbers.
#[test]
fn a_reconnect_drops_what_the_hello_ack_covers_and_keeps_its_numbering() {
    let mut dev = streaming(5, 0);
    assert_eq!(drain(&mut dev, 0), data(1..=5, 0));
    dev.handle_disconnected();
    dev.push(sample(5));
    assert_eq!(drain(&mut dev, 1), []);
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 2), [Sent::Hello { next: 1 }]);
    // 1..3 were made durable but their acks were lost with the connection.
    assert_eq!(dev.handle_frame(&ack(3), 3), Verdict::Continue);
    assert_eq!(drain(&mut dev, 4), data(4..=6, 3));

    // A bridge with less than it acked before (a restart with rounds still in flight): the
    // device keeps its numbering, so the bridge never acks an item under another number.
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 5), [Sent::Hello { next: 4 }]);
    assert_eq!(dev.handle_frame(&ack(1), 6), Verdict::Continue);
    assert_eq!(dev.link().stats().stale_acks, 1);
    assert_eq!(drain(&mut dev, 7), data(4..=6, 3));
}

/// With no hello retries, a hello unanswered in time ends the connection.
#[test]
fn a_hello_that_is_not_acked_in_time_ends_the_connection() {
    let mut dev = Device::new(ID, CONFIG);
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 50), [Sent::Hello { next: 0 }]);
    assert_eq!(dev.poll_timeout(), Some(50 + HELLO_TIMEOUT_MS));
    assert!(matches!(dev.handle_timeout(50 + HELLO_TIMEOUT_MS), Verdict::Reconnect(_)));
}

/// Refusals under the device key stop it; unverified ones stop it as hints; other unverified
/// replies change nothing.
#[test]
fn refusals_of_the_device_stop_and_unverified_ones_are_hints() {
    let mut dev = streaming(1, 0);
    assert_eq!(
        dev.handle_frame(&nack(1, NackReason::Revoked, 0), 0),
        Verdict::Refused { reason: NackReason::Revoked, verified: true }
    );
    // The bridge tags what it cannot attribute with the zero key; a bridge holding another key
    // for this device sends a bad-tag nack that matches no key we know.
    for (reason, key) in [(NackReason::UnknownDevice, ZERO_KEY), (NackReason::BadTag, OTHER_KEY)] {
        let mut dev = saying_hello();
        assert_eq!(dev.handle_frame(&hint(0, reason, &key), 0), Verdict::Refused { reason, verified: false });
    }
    // Unverified acks and other nacks change nothing.
    let mut dev = streaming(2, 0);
    assert_eq!(drain(&mut dev, 0), data(1..=2, 0));
    assert_eq!(dev.handle_frame(&reply(Body::Ack, 2, &ZERO_KEY), 1), Verdict::Continue);
    assert_eq!(dev.handle_frame(&hint(1, NackReason::OutOfOrder, &ZERO_KEY), 1), Verdict::Continue);
    assert_eq!(dev.handle_frame(&hint(1, NackReason::Unavailable, &ZERO_KEY), 1), Verdict::Continue);
    assert_eq!(dev.len(), 2);
    assert_eq!(drain(&mut dev, 2), []);
    assert_eq!(dev.handle_frame(b"\x01\x02garbage", 3), Verdict::Continue);
    assert_eq!(dev.link().stats().bad_replies, 2);
}

/// A full backlog drops its oldest sample without breaking the numbering.
#[test]
fn a_full_backlog_drops_its_oldest_sample_and_keeps_numbering_consistent() {
    let mut dev = streaming(0, 0);
    for i in 0..BACKLOG_MAX as u64 {
        assert!(dev.push(sample(i)));
    }
    assert_eq!(drain(&mut dev, 0), data(1..=8, 0));
    assert!(!dev.push(sample(BACKLOG_MAX as u64)));
    assert_eq!(dev.dropped(), 1);
    assert_eq!(dev.len(), BACKLOG_MAX);
    assert_eq!(dev.link().first_unacked_seq(), Some(2));
    // Seq 1 was dropped; the bridge has it or not, and its ack of 8 covers 2..=8 either way.
    assert_eq!(dev.handle_frame(&ack(8), 1), Verdict::Continue);
    assert_eq!(drain(&mut dev, 2), data(9..=16, 8));
    // The next hello tells the bridge to skip what was dropped unsent.
    dev.handle_connected();
    assert_eq!(drain(&mut dev, 3), [Sent::Hello { next: 9 }]);
}

/// An ack beyond anything written ends the connection and drops nothing.
#[test]
fn an_ack_beyond_anything_sent_ends_the_connection() {
    let mut dev = streaming(2, 0);
    drain(&mut dev, 0);
    assert!(matches!(dev.handle_frame(&ack(9), 1), Verdict::Reconnect(_)));
    assert_eq!(dev.len(), 2, "nothing is dropped on a bogus ack");
}

/// Frames split across reads are handled, and broken stuffing is counted.
#[test]
fn frames_arriving_in_chunks_are_handled_and_broken_ones_counted() {
    let mut dev = streaming(3, 0);
    drain(&mut dev, 0);
    let mut stream = Vec::new();
    for ack in [1, 2] {
        let mut stuffed = [0u8; TRANSMIT_BYTES_MAX];
        let n = encode_stuffed(&Frame { seq: 0, ack, body: Body::Ack }, &KEY, &mut stuffed).unwrap();
        stream.extend_from_slice(&stuffed[..n]);
    }
    stream.extend_from_slice(&[0x05, 0x01, 0x00]);
    let mut deframer = Deframer::new();
    let (a, b) = stream.split_at(7);
    assert_eq!(dev.handle_stream(&mut deframer, a, 1), Verdict::Continue);
    assert_eq!(dev.handle_stream(&mut deframer, b, 1), Verdict::Continue);
    assert_eq!(dev.len(), 1);
    assert_eq!(dev.link().stats().bad_replies, 1, "the broken stuffing at the end");
}

// The state machine itself.

/// A link with `queued` items, its hello acked with `durable`, and `config`.
fn link(config: Config, queued: u32, durable: u32) -> Link {
    let mut link = Link::new(config);
    link.handle_queued(queued);
    link.handle_connected();
    assert_eq!(link.poll_transmit(0), Some(Transmit::Hello { next: 0, resync: true }));
    assert_eq!(link.handle_frame(&ack(durable), &KEY, 0), Received::Ack { ack: durable });
    assert!(link.is_streaming());
    link
}

/// The sequences `link` writes at `now_ms`, until it has nothing more.
fn sends(link: &mut Link, now_ms: u64) -> Vec<u32> {
    std::iter::from_fn(|| match link.poll_transmit(now_ms)? {
        Transmit::Data { seq, .. } => Some(seq),
        other => panic!("expected data, got {other:?}"),
    })
    .collect()
}

fn events(link: &mut Link) -> Vec<Event> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

/// Peeking shows what polling takes, and changes nothing.
#[test]
fn peek_tells_what_poll_takes_without_changing_anything() {
    let mut link = link(CONFIG, 2, 0);
    let peeked = link.peek_transmit(1);
    assert_eq!(peeked, Some(Transmit::Data { seq: 1, index: 0, retransmit: false }));
    assert_eq!(link.peek_transmit(1), peeked);
    assert_eq!(link.poll_transmit(1), peeked);
    assert_eq!(link.poll_transmit(1), Some(Transmit::Data { seq: 2, index: 1, retransmit: false }));
    assert_eq!(link.poll_transmit(1), None);
}

/// Cumulative acks report each acked item once; repeats and lower acks report nothing.
#[test]
fn cumulative_acks_report_each_acked_item_once() {
    let mut link = link(CONFIG, 5, 100);
    assert_eq!(sends(&mut link, 0), [101, 102, 103, 104, 105]);
    link.handle_frame(&ack(102), &KEY, 1);
    link.handle_frame(&ack(102), &KEY, 1);
    link.handle_frame(&reply(Body::Heartbeat, 104, &KEY), &KEY, 2);
    assert_eq!(events(&mut link), [Event::Acked { count: 4 }]);
    assert_eq!(link.first_unacked_seq(), Some(105));
    assert_eq!(link.queued(), 1);
    link.handle_frame(&ack(101), &KEY, 3);
    assert_eq!(link.stats().stale_acks, 1);
    assert_eq!(events(&mut link), []);
}

#[test]
fn a_bad_tag_on_a_data_frame_resends_from_it_and_once_only() {
    // The bridge nacks a frame damaged on the way with the zero key; the simulator's bad-tag
    // fault makes the same.
    let mut link = link(CONFIG, 6, 0);
    assert_eq!(sends(&mut link, 0), [1, 2, 3, 4, 5, 6]);
    let received = link.handle_frame(&hint(3, NackReason::BadTag, &ZERO_KEY), &KEY, 1);
    assert_eq!(
        received,
        Received::Nack { nack: Nack { seq: 3, reason: NackReason::BadTag }, ack: 0, tag: Tag::Zero }
    );
    assert_eq!(sends(&mut link, 2), [3, 4, 5, 6]);
    // 4..6 were refused as out of order behind it: stale.
    link.handle_frame(&nack(4, NackReason::OutOfOrder, 2), &KEY, 3);
    link.handle_frame(&hint(3, NackReason::BadTag, &ZERO_KEY), &KEY, 3);
    assert_eq!(sends(&mut link, 4), Vec::<u32>::new());
    assert_eq!(link.stats().nacks[NackReason::BadTag.index()], 2);
    assert_eq!(link.stats().retransmits, 4);
    assert!(events(&mut link).iter().all(|e| matches!(e, Event::Acked { .. })));
}

/// Unknown device, revoked and wrong device under the device key end the session, streaming
/// or in a hello; so does a verified bad tag for the hello.
#[test]
fn refusals_under_the_device_key_end_the_session_in_any_phase() {
    for reason in [NackReason::UnknownDevice, NackReason::Revoked, NackReason::WrongDevice] {
        let mut l = link(CONFIG, 1, 0);
        l.handle_frame(&nack(1, reason, 0), &KEY, 1);
        assert_eq!(events(&mut l), [Event::Refused { reason, verified: true }]);
        assert_eq!(l.poll_transmit(2), None);
        assert_eq!(l.poll_timeout(), None);
    }
    // A verified bad tag for the hello: the bridge holds the key but refuses the hello's tag.
    let mut l = Link::new(CONFIG);
    l.handle_connected();
    l.poll_transmit(0);
    l.handle_frame(&nack(0, NackReason::BadTag, 0), &KEY, 1);
    assert_eq!(events(&mut l), [Event::Refused { reason: NackReason::BadTag, verified: true }]);
}

/// A decode nack changes nothing, nor do nacks about old frames while a hello is unanswered.
#[test]
fn decode_nacks_and_nacks_during_a_hello_change_nothing() {
    let mut l = link(CONFIG, 3, 0);
    assert_eq!(sends(&mut l, 0), [1, 2, 3]);
    l.handle_frame(&nack(2, NackReason::Decode, 0), &KEY, 1);
    assert_eq!(sends(&mut l, 1), Vec::<u32>::new());
    // After a no-hello nack, the old window's nacks wait for the hello's ack.
    l.handle_frame(&nack(1, NackReason::NoHello, 0), &KEY, 2);
    assert_eq!(l.poll_transmit(2), Some(Transmit::Hello { next: 1, resync: false }));
    for reason in [NackReason::NoHello, NackReason::OutOfOrder, NackReason::Unavailable] {
        l.handle_frame(&nack(2, reason, 0), &KEY, 3);
    }
    assert_eq!(l.poll_transmit(3), None);
    assert_eq!(l.stats().hellos, 2);
    l.handle_frame(&ack(1), &KEY, 4);
    assert_eq!(sends(&mut l, 4), [2, 3]);
    assert!(events(&mut l).iter().all(|e| matches!(e, Event::Acked { .. })));
}

/// Hints are believed only when enough come in a row with no verified frame between.
#[test]
fn hints_are_believed_only_when_enough_come_in_a_row() {
    let config = Config { hints_max: 3, ..CONFIG };
    let mut l = Link::new(config);
    l.handle_connected();
    l.poll_transmit(0);
    let unknown = hint(0, NackReason::UnknownDevice, &ZERO_KEY);
    l.handle_frame(&unknown, &KEY, 1);
    l.handle_frame(&unknown, &KEY, 1);
    // A verified frame in between: the hints start over.
    l.handle_frame(&nack(0, NackReason::Unavailable, 0), &KEY, 2);
    l.handle_frame(&unknown, &KEY, 3);
    l.handle_frame(&unknown, &KEY, 3);
    assert_eq!(events(&mut l), []);
    l.handle_frame(&unknown, &KEY, 4);
    assert_eq!(events(&mut l), [Event::Refused { reason: NackReason::UnknownDevice, verified: false }]);
}

/// A hello is written again after each timeout up to the limit, then the connection ends.
#[test]
fn a_hello_is_written_again_after_its_timeout_up_to_the_limit() {
    let config = Config { hello_timeouts_max: 2, ..CONFIG };
    let mut l = Link::new(config);
    l.handle_connected();
    assert_eq!(l.poll_transmit(0), Some(Transmit::Hello { next: 0, resync: true }));
    for i in 1..=2 {
        let at = i * HELLO_TIMEOUT_MS;
        assert_eq!(l.poll_timeout(), Some(at));
        l.handle_timeout(at - 1);
        assert_eq!(l.poll_transmit(at - 1), None);
        l.handle_timeout(at);
        assert_eq!(l.poll_transmit(at), Some(Transmit::Hello { next: 0, resync: false }));
    }
    l.handle_timeout(3 * HELLO_TIMEOUT_MS);
    assert!(matches!(events(&mut l)[..], [Event::Reconnect(_)]));
    // A new connection starts over, with the resync byte.
    l.handle_connected();
    assert_eq!(l.poll_transmit(4 * HELLO_TIMEOUT_MS), Some(Transmit::Hello { next: 0, resync: true }));
}

/// An idle session writes a heartbeat every interval, a busy one none.
#[test]
fn an_idle_session_writes_heartbeats_and_a_busy_one_does_not() {
    let mut l = link(CONFIG, 0, 7);
    assert_eq!(l.poll_timeout(), Some(HEARTBEAT_MS));
    assert_eq!(l.poll_transmit(HEARTBEAT_MS - 1), None);
    assert_eq!(l.poll_transmit(HEARTBEAT_MS), Some(Transmit::Heartbeat));
    assert_eq!(l.poll_transmit(HEARTBEAT_MS), None);
    assert_eq!(l.poll_timeout(), Some(2 * HEARTBEAT_MS));
    l.handle_queued(1);
    assert_eq!(sends(&mut l, 2 * HEARTBEAT_MS), [8]);
    assert_eq!(l.stats().heartbeats, 1);
}

/// A hello ack beyond anything written acks what was written and numbers the rest after it.
#[test]
fn a_hello_ack_beyond_what_was_written_numbers_unsent_items_after_it() {
    let mut l = link(Config { window: 2, ..CONFIG }, 4, 0);
    assert_eq!(sends(&mut l, 0), [1, 2]);
    l.handle_disconnected();
    l.handle_connected();
    assert_eq!(l.poll_transmit(1), Some(Transmit::Hello { next: 1, resync: true }));
    // The bridge has 1..=50 under this id: the two written are durable, the rest go after 50.
    l.handle_frame(&ack(50), &KEY, 2);
    assert_eq!(events(&mut l), [Event::Acked { count: 2 }]);
    assert_eq!(l.stats().renumbered, 1);
    assert_eq!(sends(&mut l, 3), [51, 52]);
    assert_eq!(l.stats().retransmits, 0);
}

/// The last data sequence is SEQ_MAX; a hello acking it leaves nothing to send and says so.
#[test]
fn the_sequence_space_ends_one_below_u32_max() {
    let mut l = link(CONFIG, 3, SEQ_MAX - 1);
    assert_eq!(sends(&mut l, 0), [SEQ_MAX]);
    l.handle_frame(&ack(SEQ_MAX), &KEY, 1);
    assert_eq!(events(&mut l), [Event::Acked { count: 1 }]);
    assert_eq!(sends(&mut l, 2), Vec::<u32>::new(), "nothing after the last sequence");
    // A hello answered with the last sequence leaves nothing to send: the link says so.
    let mut l = Link::new(CONFIG);
    l.handle_connected();
    l.poll_transmit(0);
    l.handle_frame(&ack(SEQ_MAX), &KEY, 1);
    assert!(matches!(events(&mut l)[..], [Event::Reconnect(_)]));
}

/// Without a connection nothing is taken in or written.
#[test]
fn nothing_is_taken_in_or_written_without_a_connection() {
    let mut l = Link::new(CONFIG);
    l.handle_queued(1);
    assert_eq!(l.handle_frame(&ack(3), &KEY, 0), Received::Dropped);
    assert_eq!(l.poll_transmit(0), None);
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.stats().bad_replies, 0);
}
