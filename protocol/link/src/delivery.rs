//! The device's side of module delivery (`docs/device-frames.md`, "Module delivery"): which
//! package it is receiving and how far, the version it runs, its last module error, and when
//! its module state is due.
//!
//! Sans-IO like [`crate::Link`]: the caller hands it the module chunks the link verified
//! ([`crate::Backlog::handle_stream_with`]) and its slot (the bytes a package is written to,
//! never the running module's), and says what became of a whole package ([`Receiver::switched`],
//! [`Receiver::refused`]). Opening the package, checking it and starting the module are the
//! caller's (`silt_frame::open_package`, the device's runtime).

use silt_frame::{ModuleChunk, ModuleState, MODULE_ERROR_BYTES_MAX};

/// After a hello's ack the module state goes out, and again this long after while no chunk
/// came, then at twice the interval each time up to [`STATE_REPEAT_MAX_MS`]: a bridge starts
/// sending only once it has a state, so a lost one must not stall a delivery until the next
/// hello, and an idle device costs the line one small frame a minute.
pub const STATE_REPEAT_MS: u64 = 2_000;
/// See [`STATE_REPEAT_MS`].
pub const STATE_REPEAT_MAX_MS: u64 = 60_000;

/// What became of one module chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Written to the slot; more of the package is to come.
    Kept,
    /// Written to the slot, and the package is whole: its first `len` bytes. Check it and
    /// call [`Receiver::switched`] or [`Receiver::refused`].
    Complete { version: u32, len: usize },
    /// Not the piece the device waits for (lost or reordered chunks before it, a resend of
    /// what it holds, a version it runs or is done with): the bridge resends from the
    /// device's `received`.
    Dropped,
    /// A package larger than the slot: refused at its first chunk, which the module state
    /// reports as the whole package taken, so that the bridge stops sending it.
    TooLarge { version: u32, total: u32 },
}

/// A device's module delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    running: u32,
    /// The version whose package is in the slot (0: none), its size and how much of it from
    /// the start is there.
    receiving: u32,
    total: u32,
    received: u32,
    error: heapless::String<MODULE_ERROR_BYTES_MAX>,
    /// The slot holds a whole package the caller has not decided on: no chunk touches it.
    pending: bool,
    state_due: bool,
    /// When the state is due again, while no chunk came since the last hello's ack, and the
    /// interval after that; 0: no repeat.
    repeat_at_ms: u64,
    repeat_ms: u64,
    stats: Stats,
}

/// What a receiver counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub chunks_kept: u64,
    pub chunks_dropped: u64,
    pub packages: u64,
    pub refused: u64,
}

impl Receiver {
    /// A receiver for a device that runs module `running` (0: none).
    pub const fn new(running: u32) -> Receiver {
        Receiver {
            running,
            receiving: 0,
            total: 0,
            received: 0,
            error: heapless::String::new(),
            pending: false,
            state_due: false,
            repeat_at_ms: 0,
            repeat_ms: 0,
            stats: Stats { chunks_kept: 0, chunks_dropped: 0, packages: 0, refused: 0 },
        }
    }

    /// The version the device runs (0: none): what its hellos report.
    pub fn running(&self) -> u32 {
        self.running
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The whole package in the slot, `(version, bytes)`, until [`Receiver::switched`] or
    /// [`Receiver::refused`] says what became of it.
    pub fn pending(&self) -> Option<(u32, usize)> {
        self.pending.then_some((self.receiving, self.total as usize))
    }

    /// The device's module state, for a module state frame.
    pub fn state<'a>(&'a self, device: &'a str) -> ModuleState<'a> {
        ModuleState {
            device,
            running: self.running,
            receiving: self.receiving,
            received: self.received,
            error: &self.error,
        }
    }

    /// True once when a module state is due: after a hello's ack, a kept chunk, a switch or a
    /// refusal. The caller writes one and the flag clears.
    pub fn take_state_due(&mut self) -> bool {
        core::mem::take(&mut self.state_due)
    }

    /// A hello was acked: the bridge learns where delivery stands.
    pub fn handle_hello_acked(&mut self, now_ms: u64) {
        self.state_due = true;
        self.repeat_ms = STATE_REPEAT_MS;
        self.repeat_at_ms = now_ms.saturating_add(STATE_REPEAT_MS);
    }

    /// Makes the state due again when a repeat is (see [`STATE_REPEAT_MS`]).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.repeat_ms > 0 && now_ms >= self.repeat_at_ms {
            self.repeat_ms = (self.repeat_ms * 2).min(STATE_REPEAT_MAX_MS);
            self.repeat_at_ms = now_ms.saturating_add(self.repeat_ms);
            self.state_due = true;
        }
    }

    /// When [`Receiver::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.repeat_ms > 0).then_some(self.repeat_at_ms)
    }

    /// Takes a chunk the link verified (tagged with the device's key) into `slot`.
    pub fn handle_chunk(&mut self, chunk: &ModuleChunk<'_>, slot: &mut [u8]) -> Chunk {
        // The bridge is sending: it has a state, and the next ones come with chunks.
        self.repeat_ms = 0;
        if self.pending || chunk.version == 0 {
            return self.drop_chunk();
        }
        if chunk.version == self.running {
            // The state that said the device switched was lost.
            self.state_due = true;
            return self.drop_chunk();
        }
        if chunk.version != self.receiving || chunk.total != self.total {
            // A new version (or one the bridge now sends whole at another size): over from 0.
            self.receiving = chunk.version;
            self.total = chunk.total;
            self.received = 0;
            self.state_due = true;
            if chunk.total as usize > slot.len() {
                self.received = chunk.total;
                self.set_error(format_args!(
                    "module package v{} of {} bytes does not fit the device's {}-byte slot",
                    chunk.version,
                    chunk.total,
                    slot.len()
                ));
                self.stats.refused += 1;
                return Chunk::TooLarge { version: chunk.version, total: chunk.total };
            }
        }
        let end = self.received as usize + chunk.bytes.len();
        if chunk.offset < self.received {
            // The bridge is behind: the states that said how far the device got were lost, or
            // this is an old copy. Say again where it stands.
            self.state_due = true;
            return self.drop_chunk();
        }
        if chunk.offset != self.received || self.received == self.total || end > self.total as usize {
            return self.drop_chunk();
        }
        slot[self.received as usize..end].copy_from_slice(chunk.bytes);
        self.received = end as u32;
        self.state_due = true;
        self.stats.chunks_kept += 1;
        if self.received == self.total {
            self.stats.packages += 1;
            self.pending = true;
            return Chunk::Complete { version: self.receiving, len: end };
        }
        Chunk::Kept
    }

    /// The whole package of `version` verified and its module started: the device runs it.
    pub fn switched(&mut self, version: u32) {
        self.pending = false;
        self.running = version;
        self.error.clear();
        self.state_due = true;
    }

    /// The whole package of the version being received failed (`why`); the running module
    /// stays. The slot keeps counting it as received, so the bridge sends it no more.
    pub fn refused(&mut self, why: core::fmt::Arguments<'_>) {
        self.pending = false;
        self.set_error(why);
        self.stats.refused += 1;
        self.state_due = true;
    }

    /// The running module stopped (`why`); the device runs none and sends raw readings.
    pub fn stopped(&mut self, why: core::fmt::Arguments<'_>) {
        self.running = 0;
        self.set_error(why);
        self.state_due = true;
    }

    fn drop_chunk(&mut self) -> Chunk {
        self.stats.chunks_dropped += 1;
        Chunk::Dropped
    }

    /// Keeps as much of `why` as the frame carries, cut at a character boundary.
    fn set_error(&mut self, why: core::fmt::Arguments<'_>) {
        self.error.clear();
        let _ = core::fmt::write(&mut Truncating(&mut self.error), why);
    }
}

/// Writes what fits and drops the rest.
struct Truncating<'a>(&'a mut heapless::String<MODULE_ERROR_BYTES_MAX>);

impl core::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(version: u32, total: u32, offset: u32, bytes: &[u8]) -> ModuleChunk<'_> {
        ModuleChunk { version, total, offset, bytes }
    }

    #[test]
    fn chunks_in_order_fill_the_slot_and_others_are_dropped() {
        let mut r = Receiver::new(0);
        let mut slot = [0u8; 8];
        assert_eq!(r.handle_chunk(&chunk(2, 6, 3, b"def"), &mut slot), Chunk::Dropped);
        assert_eq!(r.state("d").receiving, 2, "a new version starts over at 0");
        assert_eq!(r.state("d").received, 0);
        assert_eq!(r.handle_chunk(&chunk(2, 6, 0, b"abc"), &mut slot), Chunk::Kept);
        assert_eq!(r.handle_chunk(&chunk(2, 6, 0, b"abc"), &mut slot), Chunk::Dropped);
        assert_eq!(
            r.handle_chunk(&chunk(2, 6, 3, b"def"), &mut slot),
            Chunk::Complete { version: 2, len: 6 }
        );
        assert_eq!(&slot[..6], b"abcdef");
        assert_eq!(r.pending(), Some((2, 6)));
        assert_eq!(
            r.handle_chunk(&chunk(3, 6, 0, b"xyz"), &mut slot),
            Chunk::Dropped,
            "the slot is being checked"
        );
        assert_eq!(&slot[..6], b"abcdef");
        r.switched(2);
        assert_eq!(r.running(), 2);
        assert_eq!(r.handle_chunk(&chunk(2, 6, 0, b"abc"), &mut slot), Chunk::Dropped);
    }

    #[test]
    fn a_package_too_large_for_the_slot_is_refused_once_and_reported_taken() {
        let mut r = Receiver::new(1);
        let mut slot = [0u8; 4];
        assert_eq!(
            r.handle_chunk(&chunk(3, 9, 0, b"abcd"), &mut slot),
            Chunk::TooLarge { version: 3, total: 9 }
        );
        let s = r.state("d");
        assert_eq!((s.running, s.receiving, s.received), (1, 3, 9));
        assert!(s.error.contains("does not fit"), "{}", s.error);
        assert_eq!(r.handle_chunk(&chunk(3, 9, 4, b"efgh"), &mut slot), Chunk::Dropped);
    }

    #[test]
    fn errors_are_cut_to_what_a_frame_carries() {
        let mut r = Receiver::new(1);
        r.stopped(format_args!("{:ä<200}", ""));
        let s = r.state("d");
        assert_eq!(s.running, 0);
        assert!(s.error.len() <= MODULE_ERROR_BYTES_MAX && s.error.len() > MODULE_ERROR_BYTES_MAX - 2);
    }
}
