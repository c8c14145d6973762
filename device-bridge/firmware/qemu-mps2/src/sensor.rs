//! Simulated sensors: what a sample of sequence `seq` reads. A pure function of the sequence, so
//! a retransmitted frame carries exactly the readings it carried the first time.

use core::f32::consts::PI;

use silt_frame::{Reading, ReadingKind, Readings, Time};
use silt_link::Payload;

/// Samples in one slow temperature and humidity cycle (a "day" of a few minutes of QEMU time).
const CYCLE_SAMPLES: u32 = 360;

/// One sample of every simulated sensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub temperature_c: f32,
    pub humidity_pct: f32,
    /// Supply voltage, sent as numeric channel [`SUPPLY_CHANNEL`].
    pub supply_v: f64,
}

/// Numeric channel number of the supply voltage.
pub const SUPPLY_CHANNEL: u16 = 1;

/// How a sample's event time is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `Time::TickMs`: when the sample was queued, which is when the window had room for it,
    /// so about when it was first sent.
    Tick,
    /// `Time::UnixMs(start_ms + seq * step_ms)`: the same times on every run, for tests that
    /// compare what different runs stored.
    Fixed { start_ms: i64, step_ms: i64 },
}

/// A sample waiting for its ack. Its readings are those of the sequence it is sent as, or of
/// its own number when samples are numbered apart from frames (`sample`).
pub struct Queued<'p> {
    pub tick_ms: u64,
    pub clock: Clock,
    /// Which sensors the device has (all, or one kind: `only=`).
    pub only: Option<ReadingKind>,
    /// The sample's own number, when samples are numbered apart from frames: its readings,
    /// time and records are those of this number, whatever frame carries it; it is then
    /// processed when taken, and `processed` is set.
    pub sample: Option<u32>,
    /// The processor the sample goes through before it is sent, if any.
    #[cfg(feature = "wasm")]
    pub processor: Option<&'p crate::processor::Shared<'p>>,
    /// What the processor made of it, on its first send; kept for retransmissions.
    #[cfg(feature = "wasm")]
    pub processed: core::cell::OnceCell<crate::processor::Processed>,
    #[cfg(not(feature = "wasm"))]
    pub _processor: core::marker::PhantomData<&'p ()>,
}

impl<'p> Queued<'p> {
    pub fn time(&self, seq: u32) -> Time {
        match self.clock {
            Clock::Tick => Time::TickMs(self.tick_ms),
            Clock::Fixed { start_ms, step_ms } => {
                Time::UnixMs(start_ms.saturating_add(step_ms.saturating_mul(i64::from(seq))))
            }
        }
    }
}

/// The readings of sample `seq`, as sent without a processor: of every sensor, or of the one
/// kind `only`.
pub fn readings(seq: u32, only: Option<ReadingKind>) -> Readings<'static> {
    let s = sample(seq);
    let mut readings = Readings::new();
    for reading in [
        Reading::Temperature(s.temperature_c),
        Reading::Humidity(s.humidity_pct),
        Reading::Numeric { channel: SUPPLY_CHANNEL, value: s.supply_v },
    ] {
        if only.is_none_or(|k| reading.kind() == k) {
            readings.push(reading).expect("three readings fit READINGS_MAX");
        }
    }
    readings
}

impl Payload for Queued<'_> {
    fn data(&self, frame: u32) -> (Time, Readings<'_>) {
        let seq = self.sample.unwrap_or(frame);
        // A frame that carries another sample than its number says which.
        let time = match seq == frame {
            true => self.time(seq),
            false => self.time(seq).of_sample(seq),
        };
        let raw = readings(seq, self.only);
        #[cfg(feature = "wasm")]
        if let Some(processor) = self.processor {
            return (time, crate::processor::to_send(processor, &self.processed, seq, time, raw));
        }
        (time, raw)
    }
}

/// The readings of sample `seq`: temperature 21 °C ± 3 over a cycle, humidity opposite it, a
/// supply voltage that sags slowly, each with a little noise.
pub fn sample(seq: u32) -> Sample {
    let phase = (seq % CYCLE_SAMPLES) as f32 / CYCLE_SAMPLES as f32 * 2.0 * PI;
    let wave = sine(phase);
    let mut noise = Noise::new(seq);
    Sample {
        temperature_c: 21.0 + 3.0 * wave + 0.2 * noise.next_unit(),
        humidity_pct: 50.0 - 8.0 * wave + 0.5 * noise.next_unit(),
        supply_v: 3.3 - f64::from(seq % 10_000) * 0.000_02 + 0.005 * f64::from(noise.next_unit()),
    }
}

/// sin(x) for x in [0, 2π), within 0.002: Bhaskara I's rational approximation on each half
/// period. Enough for a fake sensor, and `core` has no `sin` without `libm`.
fn sine(x: f32) -> f32 {
    let (x, sign) = if x < PI { (x, 1.0) } else { (x - PI, -1.0) };
    let p = x * (PI - x);
    sign * 16.0 * p / (5.0 * PI * PI - 4.0 * p)
}

/// xorshift32 seeded from the sequence: deterministic noise.
struct Noise(u32);

impl Noise {
    fn new(seq: u32) -> Noise {
        // Mix the sequence so that neighbouring seeds do not start alike; never zero.
        Noise(seq.wrapping_mul(0x9E37_79B9) | 1)
    }

    /// Uniform in [-1, 1).
    fn next_unit(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}
