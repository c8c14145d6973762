//! The frames a device writes, encoded with its identity.

use silt_frame::{
    encode_stuffed, Body, Data, Frame, Hello, Key, ModuleState, Readings, Time, STUFFED_BYTES_MAX,
};

/// Room an encoder needs: the largest stuffed frame, and the lone 0x00 before a resync hello.
pub const TRANSMIT_BYTES_MAX: usize = STUFFED_BYTES_MAX + 1;

/// Who a device is: the id its hello and data frames name (1 to 64 bytes), the key that tags
/// them, the free text its hello carries for the bridge's logs, and the version of the
/// processor module it runs (0: none), which its hello reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    pub device: &'a str,
    pub key: Key,
    pub firmware: &'a str,
    pub module: u32,
}

impl Identity<'_> {
    /// Writes a hello announcing `next` (see [`crate::Transmit::Hello`]) at device tick
    /// `tick_ms`, after a lone 0x00 if `resync`; returns the bytes written. `out` needs
    /// [`TRANSMIT_BYTES_MAX`].
    pub fn encode_hello(&self, next: u32, resync: bool, tick_ms: u64, out: &mut [u8]) -> usize {
        let start = usize::from(resync);
        if resync {
            out[0] = 0;
        }
        let hello = Hello { device: self.device, tick_ms, firmware: self.firmware, module: self.module };
        let frame = Frame { seq: next, ack: 0, body: Body::Hello(hello) };
        start + encode_stuffed(&frame, &self.key, &mut out[start..]).expect("a hello fits a frame")
    }

    /// Writes data frame `seq` carrying `readings` taken at `time`; returns the bytes written.
    pub fn encode_data(&self, seq: u32, time: Time, readings: Readings<'_>, out: &mut [u8]) -> usize {
        let frame = Frame { seq, ack: 0, body: Body::Data(Data { device: self.device, time, readings }) };
        // READINGS_MAX readings of fixed size and a 64-byte id fit FRAME_BYTES_MAX; only raw
        // readings can be too long, and none of Silt's devices sends those.
        encode_stuffed(&frame, &self.key, out).expect("a data frame fits a frame")
    }

    /// Writes a module state frame; returns the bytes written.
    pub fn encode_module_state(&self, state: ModuleState<'_>, out: &mut [u8]) -> usize {
        let frame = Frame { seq: 0, ack: 0, body: Body::ModuleState(state) };
        // A 64-byte id and a 160-byte error are far below FRAME_BYTES_MAX.
        encode_stuffed(&frame, &self.key, out).expect("a module state fits a frame")
    }

    /// Writes a heartbeat; returns the bytes written.
    pub fn encode_heartbeat(&self, out: &mut [u8]) -> usize {
        let frame = Frame { seq: 0, ack: 0, body: Body::Heartbeat };
        encode_stuffed(&frame, &self.key, out).expect("a heartbeat fits a frame")
    }
}
