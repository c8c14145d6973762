//! Keeps the records whose JSON numeric field lies above `min` and/or below `max`, copied
//! byte for byte; drops every other record, including those without the field.
//!
//! The whole processor is one function and one `filter!` line; see README.md for parameters.
//! It deliberately does not convert, reformat or annotate records: what passes is the input.
#![no_std]

extern crate alloc;

use alloc::string::String;
use silt_processor::{json, Error, FromParams, Params, Record};

/// Parameters, parsed once at `silt_init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    field: String,
    min: Option<f64>,
    max: Option<f64>,
}

impl FromParams for Config {
    fn from_params(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&["field", "min", "max"])?;
        let field = String::from(params.get("field").unwrap_or("temp"));
        let finite = |key: &str| -> Result<Option<f64>, Error> {
            match params.parse::<f64>(key)? {
                Some(v) if !v.is_finite() => Err(params.invalid(key, "must be a finite number")),
                v => Ok(v),
            }
        };
        let (min, max) = (finite("min")?, finite("max")?);
        match (min, max) {
            (None, None) => Err(Error::msg("give --param min=..., --param max=... or both")),
            (Some(lo), Some(hi)) if lo >= hi => Err(params.invalid("max", "must be above min")),
            _ => Ok(Config { field, min, max }),
        }
    }
}

/// True when the field is present, numeric, above `min` and below `max` (both strict).
pub fn keep(record: &Record<'_>, config: &Config) -> bool {
    let Some(v) = json::number(record.value, &config.field) else { return false };
    config.min.is_none_or(|min| v > min) && config.max.is_none_or(|max| v < max)
}

silt_processor::filter!(keep, Config);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use silt_processor::testing::{BatchBuilder, Harness};

    fn reading(temp: &str) -> alloc::string::String {
        alloc::format!(
            r#"{{"device":"dev-0001","seq":"0000000001","temp":{temp},"humidity":40.12,"battery":3.71}}"#
        )
    }

    /// Records strictly inside (min, max) pass byte for byte; others, and records without
    /// the field, are dropped.
    #[test]
    fn keeps_records_between_thresholds() {
        let mut h = Harness::<Filter>::new(&[("min", "20"), ("max", "30")]).unwrap();
        let batch = BatchBuilder::new(10)
            .record(1, "dev-1", reading("19.5"))
            .record_with_headers(2, "dev-1", reading("21.53"), &[("source", "test")])
            .record(3, "dev-2", reading("30"))
            .record(4, "dev-2", r#"{"humidity":50}"#)
            .record(5, "dev-3", "not json")
            .record(6, "dev-3", reading("29.99"))
            .build();
        let raw = h.process_raw(&batch).unwrap();
        let view = silt_processor::Batch::new(&batch).unwrap();
        let records: alloc::vec::Vec<_> = view.records().collect();
        let mut want = alloc::vec::Vec::new();
        // Byte-identical: the output is exactly the kept records' encodings.
        for i in [1, 5] {
            let mut out = silt_processor::Output::new();
            out.reset(view.first_timestamp_ms());
            out.pass(&records[i]);
            want.extend_from_slice(out.as_bytes());
        }
        assert_eq!(raw, want);
        let out = h.process_batch(&batch).unwrap();
        assert_eq!(out.iter().map(|r| r.timestamp_ms).collect::<alloc::vec::Vec<_>>(), [2, 6]);
        assert_eq!(out[0].headers, [(b"source".to_vec(), b"test".to_vec())]);
    }

    /// One-sided thresholds and another field.
    #[test]
    fn one_sided_and_field() {
        let mut h = Harness::<Filter>::new(&[("field", "battery"), ("max", "3.5")]).unwrap();
        let out = h
            .process(&[
                (1, "a", r#"{"battery":3.71}"#),
                (2, "b", r#"{"battery":3.2}"#),
                (3, "c", r#"{"battery":"low"}"#),
            ])
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key_str(), "b");
        let mut h = Harness::<Filter>::new(&[("min", "25")]).unwrap();
        assert_eq!(h.process(&[(1, "a", reading("25.01")), (2, "a", reading("25"))]).unwrap().len(), 1);
    }

    /// Bad parameters fail init with a message naming them.
    #[test]
    fn bad_params() {
        let err = |p: &[(&str, &str)]| Harness::<Filter>::new(p).unwrap_err().to_string();
        assert!(err(&[]).contains("min"));
        assert!(err(&[("min", "hot")]).contains("`min`"));
        assert!(err(&[("min", "5"), ("max", "5")]).contains("`max`"));
        assert!(err(&[("min", "NaN")]).contains("finite"));
        assert!(err(&[("mni", "5")]).contains("unknown parameter `mni`"));
    }
}
