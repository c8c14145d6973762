//! Simulated sensors: what a sample of sequence `seq` reads. A pure function of the sequence, so
//! a retransmitted frame carries exactly the readings it carried the first time.

use core::f32::consts::PI;

use silt_frame::{Reading, Readings, Time};
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

/// A sample waiting for its ack. It is queued when the window has room for it, so the time it
/// was queued is about when it was first sent: its event time. Its readings are those of the
/// sequence it is sent as.
#[derive(Clone, Copy, Debug)]
pub struct Queued {
    pub tick_ms: u64,
}

impl Payload for Queued {
    fn data(&self, seq: u32) -> (Time, Readings<'_>) {
        let s = sample(seq);
        let mut readings = Readings::new();
        for reading in [
            Reading::Temperature(s.temperature_c),
            Reading::Humidity(s.humidity_pct),
            Reading::Numeric { channel: SUPPLY_CHANNEL, value: s.supply_v },
        ] {
            readings.push(reading).expect("three readings fit READINGS_MAX");
        }
        (Time::TickMs(self.tick_ms), readings)
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
