//! The device's flash, emulated by host files through semihosting (`flash=PREFIX` on the
//! command line; QEMU's mps2-an386 keeps nothing across a reset): the module package a
//! delivery installed, started again at boot (`PREFIX.module`), and a stateful module's state
//! after each sample, in a ring of [`STATE_SLOTS`] checksummed records (`PREFIX.state.N`,
//! `silt_device_runtime::readings::encode_state_record`).
//!
//! After a reboot the bridge's hello ack says which sample it has last; the module goes on
//! from its state after that sample, and the samples after it, taken again (the readings are a
//! function of the sample's number), give what they gave before the reboot. The ring holds
//! more samples than can be in flight unacknowledged (the window), so the state after the
//! acknowledged one is always there; a record torn by a reboot while it was written is the
//! newest, never that one.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use cortex_m::interrupt::{self, Mutex};
use cortex_m_semihosting::heprintln;
use silt_device_runtime::readings::{decode_state_record, encode_state_record, StateRecord};

use crate::provision::{read_host_file, write_host_file};

/// State records kept: more than the window of frames in flight (4) and the one acked.
pub const STATE_SLOTS: u32 = 8;

static PREFIX: Mutex<RefCell<Option<String>>> = Mutex::new(RefCell::new(None));

/// Keeps the flash under host path `prefix`.
pub fn init(prefix: &str) {
    interrupt::free(|cs| *PREFIX.borrow(cs).borrow_mut() = Some(String::from(prefix)));
}

fn path(suffix: &str) -> Option<String> {
    interrupt::free(|cs| PREFIX.borrow(cs).borrow().as_ref().map(|p| format!("{p}.{suffix}")))
}

/// The processor's journal (`Processor::set_journal`): the state of module `version` after
/// `sample`, into its slot of the ring.
pub fn journal(version: u32, sample: u32, state: &[u8]) {
    let Some(path) = path(&format!("state.{}", sample % STATE_SLOTS)) else { return };
    let mut record = Vec::new();
    if !encode_state_record(&StateRecord { version, sample, state }, &mut record) {
        heprintln!("silt-fw: flash: a state of {} bytes is too large to keep", state.len());
        return;
    }
    if let Err(e) = write_host_file(&path, &record) {
        heprintln!("silt-fw: flash: {}: {}", e, path);
    }
}

/// The state module `version` had after the latest sample at most `acked`, with that
/// sample's number, from the records that read back whole.
pub fn state_after(version: u32, acked: u32) -> Option<(u32, Vec<u8>)> {
    let mut best: Option<(u32, Vec<u8>)> = None;
    for slot in 0..STATE_SLOTS {
        let Some(bytes) = path(&format!("state.{slot}")).and_then(|p| read_host_file(&p).ok()) else {
            continue;
        };
        let Some(record) = decode_state_record(&bytes) else { continue };
        let newer = best.as_ref().is_none_or(|(sample, _)| record.sample > *sample);
        if record.version == version && record.sample <= acked && newer {
            best = Some((record.sample, record.state.to_vec()));
        }
    }
    best
}

/// Keeps the package of the module that was just installed.
pub fn save_module(package: &[u8]) {
    if let Some(path) = path("module") {
        if let Err(e) = write_host_file(&path, package) {
            heprintln!("silt-fw: flash: {}: {}", e, path);
        }
    }
}

/// The package kept by [`save_module`], if there is one.
pub fn saved_module() -> Option<Vec<u8>> {
    read_host_file(&path("module")?).ok()
}
