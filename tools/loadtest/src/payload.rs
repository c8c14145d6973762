//! Record values: generated sensor readings, and the send time that end-to-end runs carry in
//! them.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The clock that send times in values count from (µs since the harness started; ten digits
/// last 2.7 hours). Senders and subscribers of one run are in one process, so they share it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the clock of [`stamp`]: call before the first send time is taken.
pub fn start_clock() {
    LazyLock::force(&EPOCH);
}

/// The sequence number that makes [`Readings::next`] carry `at` as a send time.
pub fn stamp(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_micros() as u64
}

/// The send time a value carries in its first `"seq"` field (see [`stamp`]).
pub fn sent_at(value: &[u8]) -> Option<Instant> {
    const FIELD: &[u8] = b"\"seq\":\"";
    let at = value.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = value.get(at..at + 10)?;
    let mut us = 0u64;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        us = us * 10 + u64::from(d - b'0');
    }
    Some(*EPOCH + Duration::from_micros(us))
}

/// Generates record values that look like sensor readings: JSON objects with a device id,
/// a sequence number and noisy temperature, humidity and battery values, repeated in an array
/// up to the requested size, or one object padded to it ([`Shape`]). Values are drawn once
/// into a pool (xorshift noise) and only the sequence digits are rewritten per record, because
/// formatting a whole value per record cost more CPU than the broker spends storing it. The
/// values compress about as well as real sensor data (3-4x with LZ4), neither better (a
/// constant payload) nor worse (random bytes).
pub struct Readings {
    /// Pre-generated values; `next` cycles through them and rewrites only the sequence field.
    pool: Vec<Vec<u8>>,
    /// (start, digits) of each sequence field (the same in every pooled value).
    seq_fields: Vec<(usize, usize)>,
}

/// `~` marks a digit to fill.
const READING: &str =
    r#"{"device":"dev-~~~~","seq":"~~~~~~~~~~","temp":~~.~~,"humidity":~~.~~,"battery":~.~~}"#;

/// Distinct values in the pool: far more than the ~650 records that fit LZ4's 64 KiB window,
/// so the pool does not make batches more compressible than freshly drawn values would be.
const POOL_VALUES: usize = 4096;

/// What generated values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Readings repeated in a JSON array and cut to the size (not always valid JSON): what
    /// `produce` and `consume` have always measured, so their results stay comparable.
    Array,
    /// One reading object padded to the size with a `"pad"` string member: valid JSON that
    /// processors can read (`temp` from 10 to 49.99).
    Object,
}

/// Bytes of a `"pad"` member around its padding: `,"pad":"` and `"`.
const PAD_MEMBER_BYTES: usize = 9;
/// Smallest value size [`Shape::Object`] can produce.
pub const OBJECT_BYTES_MIN: usize = READING.len() + PAD_MEMBER_BYTES;

impl Readings {
    pub fn new(size: usize, seed: u64, shape: Shape) -> Readings {
        let template = match shape {
            Shape::Array => {
                let mut text = String::from("[");
                while text.len() + 1 < size.max(1) {
                    if text.len() > 1 {
                        text.push(',');
                    }
                    text.push_str(READING);
                }
                text.push(']');
                let mut template = text.into_bytes();
                template.truncate(size.max(1));
                template
            }
            Shape::Object => {
                assert!(size >= OBJECT_BYTES_MIN, "objects take at least {OBJECT_BYTES_MIN} bytes");
                let pad = "x".repeat(size - OBJECT_BYTES_MIN);
                let text = format!("{},\"pad\":\"{pad}\"}}", &READING[..READING.len() - 1]);
                text.into_bytes()
            }
        };
        Readings::from_template(template, seed)
    }

    fn from_template(template: Vec<u8>, seed: u64) -> Readings {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < template.len() {
            if template[at] == b'~' {
                let len = template[at..].iter().take_while(|b| **b == b'~').count();
                fields.push((at, len));
                at += len;
            } else {
                at += 1;
            }
        }
        let mut rng = seed | 1;
        let mut random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let pool = (0..POOL_VALUES)
            .map(|_| {
                let mut v = template.clone();
                for &(start, len) in &fields {
                    // Noise everywhere but the sequence (ten digits), with the leading digits of
                    // temperature and humidity kept plausible.
                    let mut x = random();
                    for d in v[start..start + len].iter_mut().rev() {
                        *d = b'0' + (x % 10) as u8;
                        x /= 10;
                    }
                    if len == 2 && v.get(start + 2) == Some(&b'.') {
                        v[start] = b'1' + (random() % 4) as u8;
                    }
                }
                v
            })
            .collect();
        let seq_fields = fields.into_iter().filter(|(_, len)| *len == 10).collect();
        Readings { pool, seq_fields }
    }

    /// The next value; `seq` goes into every sequence field.
    pub fn next(&mut self, seq: u64) -> &[u8] {
        let v = &mut self.pool[(seq % POOL_VALUES as u64) as usize];
        for &(start, len) in &self.seq_fields {
            let mut x = seq;
            for d in v[start..start + len].iter_mut().rev() {
                *d = b'0' + (x % 10) as u8;
                x /= 10;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated values have the requested size, carry the sequence number, and vary.
    #[test]
    fn readings_have_the_size_and_vary() {
        for size in [1, 50, 100, 1024] {
            let mut r = Readings::new(size, 7, Shape::Array);
            let a = r.next(42).to_vec();
            let b = r.next(43).to_vec();
            assert_eq!(a.len(), size);
            assert_eq!(b.len(), size);
            if size >= 100 {
                assert!(std::str::from_utf8(&a).unwrap().contains("\"seq\":\"0000000042\""));
                assert_ne!(a, b);
            }
        }
        let full = Readings::new(READING.len() + 2, 1, Shape::Array).next(1).to_vec();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&full).is_ok(),
            "{}",
            String::from_utf8_lossy(&full)
        );
    }

    /// Object values are valid JSON objects of exactly the requested size, with a
    /// temperature a processor can read.
    #[test]
    fn object_readings_are_json_of_the_size() {
        for size in [OBJECT_BYTES_MIN, 100, 400] {
            let mut r = Readings::new(size, 3, Shape::Object);
            for seq in [0, 1, 99_999] {
                let v = r.next(seq).to_vec();
                assert_eq!(v.len(), size);
                let json: serde_json::Value = serde_json::from_slice(&v).expect("valid JSON");
                let temp = json["temp"].as_f64().expect("numeric temp");
                assert!((10.0..50.0).contains(&temp), "{temp}");
                assert_eq!(json["seq"].as_str().unwrap(), format!("{seq:010}"));
            }
        }
    }

    /// A stamped value gives back its send time, to the microsecond; values without a
    /// sequence field give none.
    #[test]
    fn send_time_round_trips() {
        start_clock();
        let at = Instant::now() + Duration::from_millis(1500);
        for shape in [Shape::Array, Shape::Object] {
            let mut r = Readings::new(200, 9, shape);
            let v = r.next(stamp(at)).to_vec();
            let back = sent_at(&v).expect("a send time");
            assert!(back <= at && at - back < Duration::from_micros(1), "{:?}", at - back);
        }
        assert_eq!(sent_at(b"{\"temp\":1}"), None);
        assert_eq!(sent_at(b"{\"seq\":\"12ab\"}"), None);
    }
}
