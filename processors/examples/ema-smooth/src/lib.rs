//! Exponential moving average of one JSON numeric field, per key: for every input record with
//! the field it emits `{"key":...,"ema":...,"value":...}` with the record's key and time.
//!
//! Stateful: the per-key averages survive restarts through `silt_snapshot`/`silt_restore`. The
//! map is a `BTreeMap`, so the snapshot lists keys in byte order and the same state always
//! encodes to the same bytes. Records without the field are skipped (no output, no update).
//! See README.md for parameters.
#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::binary::{Reader, Write as _};
use silt_processor::{json, Batch, Error, Output, Params, Processor, Stateful};

/// Snapshot layout version, the first byte of every snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// Default for `keys_max`: a bound on state (about 50 bytes a key) that a fleet of sensors
/// on one partition stays well under, while a key-per-record bug fails fast.
const KEYS_MAX_DEFAULT: usize = 100_000;

/// The processor: parameters and one average per key.
#[derive(Debug, Clone, PartialEq)]
pub struct EmaSmooth {
    field: String,
    alpha: f64,
    keys_max: usize,
    averages: BTreeMap<Vec<u8>, f64>,
    value: Vec<u8>,
}

impl EmaSmooth {
    /// The current average for `key`.
    pub fn average(&self, key: &[u8]) -> Option<f64> {
        self.averages.get(key).copied()
    }
}

impl Processor for EmaSmooth {
    fn init(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&["alpha", "field", "keys_max"])?;
        let alpha: f64 = params.parse_or("alpha", 0.1)?;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(params.invalid("alpha", "must be above 0 and at most 1"));
        }
        let keys_max = params.parse_or("keys_max", KEYS_MAX_DEFAULT)?;
        if keys_max == 0 {
            return Err(params.invalid("keys_max", "must be at least 1"));
        }
        Ok(EmaSmooth {
            field: String::from(params.get("field").unwrap_or("temp")),
            alpha,
            keys_max,
            averages: BTreeMap::new(),
            value: Vec::new(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), Error> {
        if self.averages.is_empty() && batch.records().all(|r| json::number(r.value, &self.field).is_none()) {
            // Never a reading yet, and none in this batch: most likely a wrong `field`.
            return match batch.record_count() {
                0 => Ok(()),
                _ => Err(json::no_field_error(batch, &self.field)),
            };
        }
        for record in batch.records() {
            let Some(x) = json::number(record.value, &self.field) else { continue };
            let ema = match self.averages.get_mut(record.key) {
                Some(ema) => {
                    *ema += self.alpha * (x - *ema);
                    *ema
                }
                None => {
                    if self.averages.len() >= self.keys_max {
                        return Err(Error::msg(alloc::format!(
                            "more than {} keys at offset {}; raise --param keys_max",
                            self.keys_max,
                            record.offset
                        )));
                    }
                    self.averages.insert(record.key.to_vec(), x);
                    x
                }
            };
            self.value.clear();
            json::Object::new(&mut self.value)
                .string_lossy("key", record.key)
                .number("ema", ema)
                .number("value", x);
            out.emit(record.timestamp_ms, record.key, &self.value);
        }
        Ok(())
    }
}

impl Stateful for EmaSmooth {
    /// Version byte, key count, then `(key, f64 average)` in key order.
    fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_u8(SNAPSHOT_VERSION);
        out.put_varint(self.averages.len() as u64);
        for (key, ema) in &self.averages {
            out.put_bytes(key);
            out.put_f64(*ema);
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes, "ema-smooth snapshot");
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(r.error("unknown snapshot version"));
        }
        let count = r.count(self.keys_max)?;
        // Every entry takes at least 9 bytes, so a corrupt count cannot reserve much.
        let mut pairs: Vec<(Vec<u8>, f64)> = Vec::with_capacity(count.min(r.remaining() / 9));
        for _ in 0..count {
            let key = r.bytes()?;
            if pairs.last().is_some_and(|(p, _)| p.as_slice() >= key) {
                return Err(r.error("keys not in increasing order"));
            }
            pairs.push((key.to_vec(), r.f64()?));
        }
        r.finish()?;
        // Keys arrive sorted and unique (checked above), so the map is built bottom-up in one
        // pass instead of by 10,000 searching inserts.
        self.averages = BTreeMap::from_iter(pairs);
        Ok(())
    }
}

silt_processor::export!(EmaSmooth, stateful);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use silt_processor::testing::Harness;

    /// The first reading seeds the average; later ones move it by alpha; keys are separate.
    #[test]
    fn averages_per_key() {
        let mut h = Harness::<EmaSmooth>::new(&[("alpha", "0.5")]).unwrap();
        let out = h
            .process(&[
                (1, "a", r#"{"temp":10}"#),
                (2, "b", r#"{"temp":100}"#),
                (3, "a", r#"{"temp":20}"#),
                (4, "a", r#"{"humidity":1}"#),
                (5, "a", r#"{"temp":30}"#),
            ])
            .unwrap();
        let emas: Vec<(i64, &str, f64)> =
            out.iter().map(|r| (r.timestamp_ms, r.key_str(), r.number("ema").unwrap())).collect();
        assert_eq!(emas, [(1, "a", 10.0), (2, "b", 100.0), (3, "a", 15.0), (5, "a", 22.5)]);
        assert_eq!(out[3].value_str(), r#"{"key":"a","ema":22.5,"value":30}"#);
    }

    /// A `field` that no record of the first batch has is an error naming it, not silence;
    /// once a reading was seen, records without the field are skipped.
    #[test]
    fn wrong_field_is_an_error() {
        let mut h = Harness::<EmaSmooth>::new(&[]).unwrap();
        let e = h.process(&[(1, "a", r#"{"value":10}"#), (2, "a", r#"{"value":11}"#)]).unwrap_err();
        assert!(e.to_string().contains(r#"has a number at "temp""#), "{e}");
        let mut h = Harness::<EmaSmooth>::new(&[]).unwrap();
        assert_eq!(h.process(&[(1, "a", r#"{"temp":10}"#)]).unwrap().len(), 1);
        assert!(h.process(&[(2, "a", r#"{"value":11}"#)]).unwrap().is_empty());
    }

    /// Restarting from a snapshot between batches gives the same output as running through,
    /// and the snapshot is deterministic (same state, same bytes, keys in order).
    #[test]
    fn snapshot_restore_is_invisible() {
        let batches: Vec<Vec<(i64, String, String)>> = (0..6)
            .map(|b| {
                (0..20)
                    .map(|i| {
                        let t = b * 20 + i;
                        (
                            t,
                            alloc::format!("dev-{}", (t * 7) % 5),
                            alloc::format!(r#"{{"temp":{}.25}}"#, t % 13),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut straight = Harness::<EmaSmooth>::new(&[("alpha", "0.3")]).unwrap();
        let mut restarted = Harness::<EmaSmooth>::new(&[("alpha", "0.3")]).unwrap();
        for batch in &batches {
            let a = straight.process(batch).unwrap();
            restarted.restart().unwrap();
            let b = restarted.process(batch).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(straight.snapshot().unwrap(), restarted.snapshot().unwrap());
        assert_eq!(straight.processor().averages.len(), 5);
    }

    /// Corrupt snapshots are refused with an error, never a panic.
    #[test]
    fn corrupt_snapshots() {
        let mut h = Harness::<EmaSmooth>::new(&[]).unwrap();
        h.process(&[(1, "a", r#"{"temp":1}"#), (1, "b", r#"{"temp":2}"#)]).unwrap();
        let good = h.snapshot().unwrap();
        for cut in 0..good.len() {
            assert!(h.restore(&good[..cut]).is_err());
        }
        let mut unordered = good.clone();
        // Swap the two one-byte keys "a" and "b".
        let (ia, ib) = (3, 3 + 1 + 8 + 1);
        unordered.swap(ia, ib);
        assert!(h.restore(&unordered).unwrap_err().to_string().contains("increasing order"));
        h.restore(&good).unwrap();
    }

    /// Parameters are checked; the key limit stops the processor with a clear message.
    #[test]
    fn limits_and_params() {
        assert!(Harness::<EmaSmooth>::new(&[("alpha", "0")]).is_err());
        assert!(Harness::<EmaSmooth>::new(&[("alpha", "1.5")]).is_err());
        let mut h = Harness::<EmaSmooth>::new(&[("keys_max", "1")]).unwrap();
        let e = h.process(&[(1, "a", r#"{"temp":1}"#), (2, "b", r#"{"temp":1}"#)]).unwrap_err();
        assert!(e.to_string().contains("keys_max"), "{e}");
    }
}
