//! Converts one numeric field of JSON records between units (temperature: c, f, k; pressure:
//! kpa, psi, hpa, bar) and records the new unit in a `unit` field. Key, time and headers are
//! kept; the other fields are copied as written.
//!
//! A `map!` over one function; see README.md for parameters. Records whose field is missing
//! or not a number, or whose value is not a JSON object, pass through unchanged: a map emits
//! one record per input record, and a converter is not the place to drop data.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use silt_processor::{json, math, Error, FromParams, Params, Record};

/// A unit this processor converts, with its quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Celsius,
    Fahrenheit,
    Kelvin,
    Kilopascal,
    Psi,
    Hectopascal,
    Bar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Temperature,
    Pressure,
}

impl Unit {
    const NAMES: &'static str = "c, f, k, kpa, psi, hpa, bar";

    fn parse(name: &str) -> Option<Unit> {
        Some(match name.to_ascii_lowercase().as_str() {
            "c" => Unit::Celsius,
            "f" => Unit::Fahrenheit,
            "k" => Unit::Kelvin,
            "kpa" => Unit::Kilopascal,
            "psi" => Unit::Psi,
            "hpa" => Unit::Hectopascal,
            "bar" => Unit::Bar,
            _ => return None,
        })
    }

    /// The name written into the `unit` field.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Celsius => "c",
            Unit::Fahrenheit => "f",
            Unit::Kelvin => "k",
            Unit::Kilopascal => "kpa",
            Unit::Psi => "psi",
            Unit::Hectopascal => "hpa",
            Unit::Bar => "bar",
        }
    }

    fn quantity(self) -> Quantity {
        match self {
            Unit::Celsius | Unit::Fahrenheit | Unit::Kelvin => Quantity::Temperature,
            Unit::Kilopascal | Unit::Psi | Unit::Hectopascal | Unit::Bar => Quantity::Pressure,
        }
    }

    /// To the quantity's base unit (kelvin, kilopascal).
    fn to_base(self, v: f64) -> f64 {
        match self {
            Unit::Celsius => v + 273.15,
            Unit::Fahrenheit => (v - 32.0) * 5.0 / 9.0 + 273.15,
            Unit::Kelvin => v,
            Unit::Kilopascal => v,
            // 1 psi = 6.894757293168361 kPa (lbf/in², exact from the pound and inch definitions).
            Unit::Psi => v * 6.894_757_293_168_361,
            Unit::Hectopascal => v / 10.0,
            Unit::Bar => v * 100.0,
        }
    }

    fn out_of_base(self, v: f64) -> f64 {
        match self {
            Unit::Celsius => v - 273.15,
            Unit::Fahrenheit => (v - 273.15) * 9.0 / 5.0 + 32.0,
            Unit::Kelvin => v,
            Unit::Kilopascal => v,
            Unit::Psi => v / 6.894_757_293_168_361,
            Unit::Hectopascal => v * 10.0,
            Unit::Bar => v / 100.0,
        }
    }
}

/// Converts `v` from one unit to another of the same quantity.
pub fn convert(v: f64, from: Unit, to: Unit) -> f64 {
    if from == to {
        v
    } else {
        to.out_of_base(from.to_base(v))
    }
}

/// Parameters, parsed once at `silt_init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    field: String,
    from: Unit,
    to: Unit,
    decimals: u8,
}

impl FromParams for Config {
    fn from_params(params: &Params<'_>) -> Result<Self, Error> {
        params.expect_only(&["field", "from", "to", "decimals"])?;
        let unit = |key: &str, default: &str| {
            let name = params.get(key).unwrap_or(default);
            Unit::parse(name)
                .ok_or_else(|| params.invalid(key, alloc::format!("is not one of {}", Unit::NAMES)))
        };
        let (from, to) = (unit("from", "c")?, unit("to", "f")?);
        if from.quantity() != to.quantity() {
            return Err(params.invalid("to", alloc::format!("cannot be converted from {}", from.name())));
        }
        let decimals: u8 = params.parse_or("decimals", 2)?;
        if decimals > 15 {
            return Err(params.invalid("decimals", "must be between 0 and 15"));
        }
        let field = String::from(params.get("field").unwrap_or("temp"));
        if field == "unit" {
            return Err(params.invalid("field", "cannot be the `unit` field this processor writes"));
        }
        Ok(Config { field, from, to, decimals })
    }
}

/// Writes the record's value with `field` converted and `unit` set; other members are copied
/// as written, in order, and `unit` replaces an existing `unit` member or is appended.
pub fn convert_record(record: &Record<'_>, config: &Config, value: &mut Vec<u8>) -> Result<(), Error> {
    let converted = json::number(record.value, &config.field)
        .map(|v| math::round_to(convert(v, config.from, config.to), config.decimals));
    // The member walk below must see a well-formed object; anything else passes unchanged.
    let well_formed = json::members(record.value).all(|m| m.is_ok());
    let Some(converted) = converted.filter(|_| well_formed) else {
        value.extend_from_slice(record.value);
        return Ok(());
    };
    let mut object = json::Object::new(value);
    let mut unit_written = false;
    for member in json::members(record.value) {
        let member = member?;
        if member.name.eq_str(&config.field) {
            object.number(&config.field, converted);
        } else if member.name.eq_str("unit") {
            if !unit_written {
                object.string("unit", config.to.name());
                unit_written = true;
            }
        } else {
            object.member(&member);
        }
    }
    if !unit_written {
        object.string("unit", config.to.name());
    }
    Ok(())
}

silt_processor::map!(convert_record, Config);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use silt_processor::testing::{BatchBuilder, Harness};

    const READING: &str =
        r#"{"device":"dev-0001","seq":"0000000001","temp":21.53,"humidity":40.12,"battery":3.71}"#;

    /// The default converts `temp` from Celsius to Fahrenheit, keeps key, time, headers and
    /// the other fields, and appends the unit.
    #[test]
    fn celsius_to_fahrenheit() {
        let mut h = Harness::<Map>::new(&[]).unwrap();
        let batch =
            BatchBuilder::new(0).record_with_headers(1_000, "dev-0001", READING, &[("h", "1")]).build();
        let out = h.process_batch(&batch).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timestamp_ms, 1_000);
        assert_eq!(out[0].key_str(), "dev-0001");
        assert_eq!(out[0].headers, [(b"h".to_vec(), b"1".to_vec())]);
        assert_eq!(
            out[0].value_str(),
            r#"{"device":"dev-0001","seq":"0000000001","temp":70.75,"humidity":40.12,"battery":3.71,"unit":"f"}"#
        );
    }

    /// Conversions are right in both directions and across scales.
    #[test]
    fn conversions() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(convert(100.0, Unit::Celsius, Unit::Fahrenheit), 212.0));
        assert!(close(convert(-40.0, Unit::Fahrenheit, Unit::Celsius), -40.0));
        assert!(close(convert(0.0, Unit::Celsius, Unit::Kelvin), 273.15));
        assert!(close(convert(14.695_948_775_5, Unit::Psi, Unit::Kilopascal), 101.325));
        assert!(close(convert(1013.25, Unit::Hectopascal, Unit::Bar), 1.01325));
    }

    /// Another field, units and rounding; an existing `unit` member is replaced in place.
    #[test]
    fn pressure_and_existing_unit() {
        let mut h = Harness::<Map>::new(&[("field", "p"), ("from", "psi"), ("to", "kpa"), ("decimals", "1")])
            .unwrap();
        let out = h.process(&[(5, "", r#"{"unit":"psi", "p": 30 ,"x":[1,{"y":2}]}"#)]).unwrap();
        assert_eq!(out[0].value_str(), r#"{"unit":"kpa","p":206.8,"x":[1,{"y":2}]}"#);
    }

    /// Records without the field, with a non-numeric field or that are not JSON objects pass
    /// through unchanged.
    #[test]
    fn passes_what_it_cannot_convert() {
        let mut h = Harness::<Map>::new(&[]).unwrap();
        let inputs = [r#"{"humidity":40}"#, r#"{"temp":"warm"}"#, "temp=21", r#"{"temp":1,}"#];
        let records: Vec<(i64, &str, &str)> = inputs.iter().map(|v| (7, "k", *v)).collect();
        let out = h.process(&records).unwrap();
        let values: Vec<&str> = out.iter().map(|r| r.value_str()).collect();
        assert_eq!(values, inputs);
    }

    /// Bad parameters fail init with a message naming them.
    #[test]
    fn bad_params() {
        let err = |p: &[(&str, &str)]| Harness::<Map>::new(p).unwrap_err().to_string();
        assert!(err(&[("from", "c"), ("to", "psi")]).contains("`to`"));
        assert!(err(&[("from", "rankine")]).contains("`from`"));
        assert!(err(&[("decimals", "16")]).contains("`decimals`"));
        assert!(err(&[("field", "unit")]).contains("`field`"));
    }
}
