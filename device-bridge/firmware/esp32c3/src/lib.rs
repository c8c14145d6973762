//! The chip-independent part of the Silt ESP32-C3 firmware: build-time settings, and the
//! device's side of the frame exchange (`docs/device-frames.md`) as this firmware sets it up.
//!
//! [`link::Link`] is `silt-link`'s sans-IO core (shared with the QEMU firmware and the
//! simulator) with this firmware's settings and samples: it never touches a socket or reads a
//! clock. The binary (`main.rs`) feeds it samples, received bytes and the time, and writes out
//! the bytes it asks for. That keeps the protocol testable on the host, without the chip or a
//! bridge. Nothing here depends on esp-hal. With feature `wasm`, [`tier`] sets up the device
//! tier (a processor module run on the readings, `silt_device_runtime::readings`, shared with
//! the QEMU firmware) for this chip.
#![no_std]
#![forbid(unsafe_code)]

pub mod link;
pub mod settings;
#[cfg(feature = "wasm")]
pub mod tier;
