//! The ESP32-C3's link to the bridge: its settings, and what one of its samples sends.
//!
//! The exchange itself (hello, numbering from the hello's ack, the window, go-back-N
//! retransmission, what each nack means, hints under the all-zero key) is `silt-link`'s, shared
//! with the QEMU firmware and the simulator and tested there step by step. This module fixes
//! the numbers for a WiFi device that takes one sample a second and may lose its bridge for
//! minutes, and the tests below check the link as this firmware builds it.
//!
//! Samples go into a bounded backlog as they are taken, connected or not, and leave it only
//! when a cumulative ack covers them. Not here: sockets, the clock, WiFi (the caller passes
//! `now_ms` and moves the bytes), and persistence: the backlog lives in RAM, so a reboot loses
//! what was not acked, and the hello's ack tells a rebooted device where to continue.

use silt_frame::{READINGS_MAX, Reading, Readings, Time};
use silt_link::{Backlog, Config, Payload};

pub use silt_link::{Identity, TRANSMIT_BYTES_MAX, Verdict};

/// Data frames written and not yet acked, at most. Eight one-second samples: enough to keep the
/// link busy across a WiFi round trip of a few hundred milliseconds, and to catch up a backlog
/// at eight frames per round trip, while a go-back resends little.
pub const IN_FLIGHT_MAX: u32 = 8;
/// Samples kept while the bridge does not ack them (disconnected, or the broker down): five
/// minutes at one sample a second, 24 bytes each (7.2 KB of RAM). Past that the oldest is
/// dropped.
pub const BACKLOG_MAX: usize = 300;
/// How long the cumulative ack may stand still, with frames in flight, before the link goes
/// back and writes them again. The bridge acks once the broker has made the append durable
/// (milliseconds on a LAN); three seconds also covers a few TCP retransmissions over a poor
/// WiFi link, and a needless resend costs only bandwidth (the bridge drops duplicates).
pub const ACK_TIMEOUT_MS: u64 = 3_000;
/// Consecutive ack timeouts without any progress before the link gives up on the connection.
pub const ACK_TIMEOUTS_MAX: u32 = 4;
/// How long the hello may wait for its ack before the link gives up on the connection (TCP
/// delivers the hello or loses the connection: writing it again would not help).
pub const HELLO_TIMEOUT_MS: u64 = 5_000;
/// Pause after a nack *unavailable* (the broker could not make the frame durable) before
/// writing again, so that a broker outage is not met with a resend loop.
pub const UNAVAILABLE_HOLD_MS: u64 = 2_000;
/// A heartbeat after this long without a write; a sample goes out every second, so it is sent
/// only while the sampler is stuck.
pub const HEARTBEAT_MS: u64 = 30_000;
/// Numeric channel of the free-heap reading.
pub const FREE_HEAP_CHANNEL: u16 = 1;

/// The link's settings. A refusal is believed at the first hint: the firmware then only waits
/// a minute before asking again, which a forged refusal can do no worse than a reset.
pub const CONFIG: Config = Config {
    window: IN_FLIGHT_MAX,
    ack_timeout_ms: ACK_TIMEOUT_MS,
    ack_timeouts_max: ACK_TIMEOUTS_MAX,
    hello_timeout_ms: HELLO_TIMEOUT_MS,
    hello_timeouts_max: 0,
    unavailable_hold_ms: UNAVAILABLE_HOLD_MS,
    hints_max: 1,
    heartbeat_ms: HEARTBEAT_MS,
};

/// The device's session with the bridge and its backlog of unacked samples.
pub type Link<'a> = Backlog<'a, Queued<'a>, BACKLOG_MAX>;

/// A sample in the backlog. With the device tier (feature `wasm`) it also holds what the
/// processor made of it: a sample is processed once, when its frame is first sent (so with its
/// sequence number), and its output kept for retransmissions.
pub struct Queued<'a> {
    pub sample: Sample,
    #[cfg(feature = "wasm")]
    processor: Option<&'a crate::tier::Shared<'a>>,
    #[cfg(feature = "wasm")]
    processed: core::cell::OnceCell<crate::tier::Processed>,
    #[cfg(not(feature = "wasm"))]
    _processor: core::marker::PhantomData<&'a ()>,
}

impl<'a> Queued<'a> {
    /// A sample that goes out as it was taken.
    pub fn raw(sample: Sample) -> Queued<'a> {
        Queued {
            sample,
            #[cfg(feature = "wasm")]
            processor: None,
            #[cfg(feature = "wasm")]
            processed: core::cell::OnceCell::new(),
            #[cfg(not(feature = "wasm"))]
            _processor: core::marker::PhantomData,
        }
    }

    /// A sample that goes out as `processor`'s module (if one runs when it is first sent)
    /// leaves it.
    #[cfg(feature = "wasm")]
    pub fn processed_by(sample: Sample, processor: &'a crate::tier::Shared<'a>) -> Queued<'a> {
        Queued { processor: Some(processor), ..Queued::raw(sample) }
    }
}

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
    /// The sample's event time and readings as taken.
    pub fn readings(&self) -> (Time, Readings<'static>) {
        let mut readings = Readings::new();
        let pushed = readings.push(Reading::Temperature(self.temperature_c)).is_ok()
            && readings
                .push(Reading::Numeric { channel: FREE_HEAP_CHANNEL, value: f64::from(self.free_heap_bytes) })
                .is_ok();
        assert!(pushed, "two readings fit a frame's {READINGS_MAX}");
        (Time::TickMs(self.tick_ms), readings)
    }
}

impl Payload for Queued<'_> {
    #[cfg_attr(not(feature = "wasm"), allow(unused_variables))]
    fn data(&self, seq: u32) -> (Time, Readings<'_>) {
        let (time, raw) = self.sample.readings();
        #[cfg(feature = "wasm")]
        if let Some(processor) = self.processor {
            return (time, crate::tier::to_send(processor, &self.processed, seq, time, raw));
        }
        (time, raw)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec as StdVec;

    use silt_frame::{Body, Deframer, FRAME_BYTES_MAX, Frame, KEY_BYTES, Key, decode_verified, encode};

    use super::*;

    const KEY: Key = [0x5a; KEY_BYTES];

    fn link<'a>() -> Link<'a> {
        Link::new(Identity { device: "dev-1", key: KEY, firmware: "test", module: 0 }, CONFIG)
    }

    fn sample(i: u64) -> Queued<'static> {
        Queued::raw(Sample { tick_ms: 1_000 * i, temperature_c: 20.5 + i as f32, free_heap_bytes: 50_000 })
    }

    fn ack(n: u32) -> StdVec<u8> {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let n = encode(&Frame { seq: 0, ack: n, body: Body::Ack }, &KEY, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    /// What the device wrote: a hello, or a data frame's sequence, time and readings.
    #[derive(Debug, PartialEq)]
    enum Written {
        Hello,
        Data(u32, Time, StdVec<Reading<'static>>),
    }

    /// Every frame written at `now_ms`, decoded as the bridge decodes them.
    fn drain(link: &mut Link<'_>, now_ms: u64) -> StdVec<Written> {
        let mut written = StdVec::new();
        let mut out = [0u8; TRANSMIT_BYTES_MAX];
        while let Some(n) = link.poll_transmit(now_ms, &mut out) {
            Deframer::new().push_all(&out[..n], |raw| {
                let frame = decode_verified(raw.unwrap(), &KEY).unwrap();
                written.push(match frame.body {
                    Body::Hello(_) => Written::Hello,
                    Body::Data(d) => {
                        assert_eq!(d.device, "dev-1");
                        let readings = d.readings.iter().map(|r| match *r {
                            Reading::Temperature(t) => Reading::Temperature(t),
                            Reading::Numeric { channel, value } => Reading::Numeric { channel, value },
                            other => panic!("the device sent {other:?}"),
                        });
                        Written::Data(frame.seq, d.time, readings.collect())
                    }
                    other => panic!("the device wrote {other:?}"),
                });
            });
        }
        written
    }

    /// A sample's data frame carries its tick as event time, the temperature, and the free
    /// heap as numeric channel 1; the window is eight frames.
    #[test]
    fn samples_go_out_as_temperature_and_free_heap_eight_at_a_time() {
        let mut link = link();
        for i in 0..10 {
            link.push(sample(i));
        }
        link.handle_connected();
        assert_eq!(drain(&mut link, 0), [Written::Hello], "the hello comes first, alone");
        assert_eq!(link.handle_frame(&ack(41), 1), Verdict::Continue);
        let frames = drain(&mut link, 2);
        assert_eq!(frames.len(), IN_FLIGHT_MAX as usize);
        let heap = Reading::Numeric { channel: FREE_HEAP_CHANNEL, value: 50_000.0 };
        assert_eq!(frames[0], Written::Data(42, Time::TickMs(0), [Reading::Temperature(20.5), heap].into()));
        assert_eq!(
            frames[7],
            Written::Data(49, Time::TickMs(7_000), [Reading::Temperature(27.5), heap].into())
        );
    }

    /// Over TCP a hello not acked in time ends the connection at once, and four ack timeouts
    /// without progress do too.
    #[test]
    fn a_silent_bridge_ends_the_connection() {
        let mut link = link();
        link.handle_connected();
        drain(&mut link, 0);
        assert!(matches!(link.handle_timeout(HELLO_TIMEOUT_MS), Verdict::Reconnect(_)));

        link.push(sample(0));
        link.handle_connected();
        drain(&mut link, 0);
        link.handle_frame(&ack(0), 0);
        let mut now = 0;
        for _ in 0..ACK_TIMEOUTS_MAX {
            assert_eq!(drain(&mut link, now).len(), 1);
            now += ACK_TIMEOUT_MS;
            assert_eq!(link.handle_timeout(now), Verdict::Continue);
        }
        drain(&mut link, now);
        assert!(matches!(link.handle_timeout(now + ACK_TIMEOUT_MS), Verdict::Reconnect(_)));
        assert_eq!(link.len(), 1, "the sample waits for the next connection");
    }

    /// Five minutes of samples wait for a bridge; the sixth minute pushes out the oldest.
    #[test]
    fn the_backlog_holds_five_minutes_of_samples() {
        let mut link = link();
        for i in 0..BACKLOG_MAX as u64 {
            assert!(link.push(sample(i)));
        }
        assert!(!link.push(sample(BACKLOG_MAX as u64)));
        assert_eq!((link.len(), link.dropped()), (BACKLOG_MAX, 1));
    }
}
