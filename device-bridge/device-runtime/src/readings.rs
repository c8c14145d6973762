//! A processor module run on a device's readings before they are sent (feature `readings`):
//! the part of the device tier every firmware shares (the QEMU firmware and the ESP32-C3's),
//! chip-independent and tested on the host.
//!
//! Each sample's reading of the module's kind becomes the record the bridge would have made of
//! it (`silt_frame::record_value`, key and `silt-device` header the device id, time the frame's
//! time), alone in a batch; what the module returns goes out as [`Reading::Output`] readings in
//! that sample's frame, in place of the reading. Readings of other kinds go out as they are.
//! A module that fails (a trap, a limit, output a frame cannot carry) is stopped and reported,
//! and the device sends raw readings from that sample on: nothing is lost.
//!
//! A sample is processed once, when its frame is first sent (so with its sequence), and its
//! output kept for retransmissions.
//!
//! The module comes with the firmware or over the frame link (module delivery,
//! `docs/device-frames.md`): [`Processor::install`] checks a whole package and
//! [`Processor::start`] replaces the running module only once the new one has started, from
//! fresh state; samples already processed keep what the old one made.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{OnceCell, RefCell};
use core::fmt::Write as _;

use crate::{Error, Instance, Limits, Module};
use silt_frame::{
    encode, open_package, record_value, Body, Data, Frame, PackageError, Reading, ReadingKind, Readings,
    RecordValue, Time, FRAME_BYTES_MAX, ZERO_KEY,
};
use silt_wire::batch::{self, record::RecordIter, BatchBuilder};

/// The header every record from a device carries, naming it (the bridge's `DEVICE_HEADER`).
const DEVICE_HEADER: &[u8] = b"silt-device";

/// What one sample sends after processing.
pub enum Processed {
    /// The readings as they are: no processor, or it stopped.
    Raw,
    /// The module's records for the reading of `kind`; the other readings as they are.
    Outputs { kind: ReadingKind, outputs: Vec<Record> },
}

/// One output record as a frame carries it: time, value, and whether it has the device header.
/// A record the module passed through unchanged (the input record, byte for byte) is sent as
/// the reading it was made from, which the bridge turns into the same record: `value` is then
/// empty and `unchanged` set, so an edge filter costs no more bytes than raw readings.
pub struct Record {
    pub time_ms: i64,
    pub value: Vec<u8>,
    pub marked: bool,
    pub unchanged: bool,
}

/// What [`Processor::install`] switched to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// Bytes of the module (the package less its manifest).
    pub module_bytes: usize,
    /// The kind of reading it runs on.
    pub input: ReadingKind,
}

/// Totals for the summary line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub records_in: u64,
    pub records_out: u64,
    pub fuel: u64,
    /// Core clock cycles spent from a reading to its output records: building the record and
    /// batch, the call, reading the output (the firmware's clock; on the QEMU firmware SysTick,
    /// which under `-icount shift=0` follows executed instructions).
    pub cycles: u64,
}

/// The running module (if any), or the reason it stopped.
pub struct Processor<'a> {
    /// Core clock cycles since boot.
    clock: fn() -> u64,
    /// What a module may take of the device; the same for every module it runs.
    limits: Limits,
    /// Where a stateful module's state goes after each sample ([`Processor::set_journal`]).
    journal: Option<fn(u32, u32, &[u8])>,
    device: &'a str,
    kind: ReadingKind,
    instance: Option<Instance>,
    /// The running module's version (0: none, or unnamed).
    version: u32,
    stopped: Option<String>,
    /// The stop was not yet taken by [`Processor::take_stop`].
    stop_news: bool,
    stats: Stats,
}

impl<'a> Processor<'a> {
    /// A processor with no module: samples go out raw. `clock` counts the core's cycles (for
    /// [`Stats::cycles`]); modules run under `limits`.
    pub fn new(clock: fn() -> u64, device: &'a str, limits: Limits) -> Processor<'a> {
        Processor {
            clock,
            limits,
            journal: None,
            device,
            kind: ReadingKind::Temperature,
            instance: None,
            version: 0,
            stopped: None,
            stop_news: false,
            stats: Stats::default(),
        }
    }

    /// Loads `wasm` and starts it with `params` under the processor's limits, on readings of
    /// `kind`, as module `version`; it replaces the running module only once it started.
    pub fn start(
        &mut self,
        version: u32,
        kind: ReadingKind,
        wasm: &[u8],
        params: &[(&str, &str)],
    ) -> Result<(), Error> {
        let instance = Module::new(wasm)?.instantiate(params, &self.limits)?;
        self.instance = Some(instance);
        self.kind = kind;
        self.version = version;
        self.stopped = None;
        self.stop_news = false;
        Ok(())
    }

    /// Opens the whole module package of `version` (`docs/device-frames.md`, "Module
    /// delivery"), checks it (the module's SHA-256 against its manifest, the manifest's
    /// version, and the module's signature by one of `trusted` when there are any), starts its
    /// module and switches to it. A package that fails any of these leaves the running module
    /// as it is; the error says why, in words for the device's module state.
    pub fn install(
        &mut self,
        package: &[u8],
        version: u32,
        trusted: &[[u8; 32]],
    ) -> Result<Installed, String> {
        let (manifest, module) = open_package(package).map_err(|e| match e {
            PackageError::Malformed => alloc::format!("module package v{version} is malformed"),
            PackageError::Hash => {
                alloc::format!("module package v{version} holds a module whose SHA-256 is not its manifest's")
            }
        })?;
        if manifest.version != version {
            return Err(alloc::format!("module package v{version} names v{}", manifest.version));
        }
        if !trusted.is_empty() {
            silt_wire::signature::verify(module, trusted)
                .map_err(|e| alloc::format!("module v{version} refused: {e}"))?;
        }
        self.start(version, manifest.input, module, &manifest.params)
            .map_err(|e| alloc::format!("module v{version} did not start: {e}"))?;
        Ok(Installed { module_bytes: module.len(), input: manifest.input })
    }

    pub fn kind(&self) -> ReadingKind {
        self.kind
    }

    /// The version of the module that runs (0: none).
    pub fn version(&self) -> u32 {
        if self.instance.is_some() {
            self.version
        } else {
            0
        }
    }

    /// Why the module stopped, the first time it is asked after the stop.
    pub fn take_stop(&mut self) -> Option<&str> {
        match core::mem::take(&mut self.stop_news) {
            true => self.stopped.as_deref(),
            false => None,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the module stopped, once it has.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Runs the module on the reading of its kind among `readings`, sent as frame `seq` at
    /// `time`. On any failure the module is stopped and the sample goes out raw.
    pub fn process(&mut self, seq: u32, time: Time, readings: &Readings<'_>) -> Processed {
        let Some(reading) = readings.iter().find(|r| r.kind() == self.kind) else {
            return Processed::Raw;
        };
        let Some(instance) = self.instance.as_mut() else {
            return Processed::Raw;
        };
        let started = (self.clock)();
        let result = run(instance, self.device, seq, time, reading);
        self.stats.cycles += (self.clock)().saturating_sub(started);
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(e) => return self.stop(e),
        };
        self.stats.records_in += 1;
        self.stats.records_out += outputs.len() as u64;
        self.stats.fuel += instance.fuel_used();
        if let Some(journal) = self.journal {
            match instance.snapshot() {
                Ok(Some(state)) => journal(self.version, seq, state),
                Ok(None) => {}
                Err(e) => return self.stop(alloc::format!("{e}")),
            }
        }
        match fits_a_frame(self.device, time, readings, self.kind, &outputs) {
            true => Processed::Outputs { kind: self.kind, outputs },
            false => self.stop(String::from("its output for one sample does not fit a frame")),
        }
    }

    /// Hands `journal` the state of a stateful module after each sample it processed: the
    /// running version, the sample's sequence and the snapshot, for firmware that keeps state
    /// across reboots ([`encode_state_record`]).
    pub fn set_journal(&mut self, journal: fn(version: u32, sample: u32, state: &[u8])) {
        self.journal = Some(journal);
    }

    /// Puts a journaled state into the running module (after a reboot, the state after the
    /// last sample the bridge acknowledged); on failure the module is stopped, as for any
    /// other failure, and the error returned.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let Some(instance) = self.instance.as_mut() else {
            return Err(String::from("no module runs"));
        };
        if let Err(e) = instance.restore(state) {
            let why = alloc::format!("restoring its journaled state: {e}");
            self.stop(why.clone());
            return Err(why);
        }
        Ok(())
    }

    fn stop(&mut self, why: String) -> Processed {
        self.instance = None;
        self.stopped = Some(why);
        self.stop_news = true;
        Processed::Raw
    }
}

/// One sample through the module: the record, its batch, the call, the output records.
fn run(
    instance: &mut Instance,
    device: &str,
    seq: u32,
    time: Time,
    reading: &Reading<'_>,
) -> Result<Vec<Record>, String> {
    let (time_ms, _) = time.millis();
    let mut json = String::new();
    let value = match record_value(device, seq, reading, &mut json) {
        Ok(RecordValue::Bytes(bytes)) => bytes,
        Ok(RecordValue::Json) | Err(_) => json.as_bytes(),
    };
    let mut builder = BatchBuilder::with_capacity(value.len() + device.len() * 2 + 32);
    builder
        .push(time_ms, device.as_bytes(), value, &[(DEVICE_HEADER, device.as_bytes())])
        .map_err(|e| alloc::format!("{e}"))?;
    let mut input = builder.finish(0, u64::from(seq));
    batch::stamp(&mut input, 0, time_ms);
    let output = instance.process(&input).map_err(|e| alloc::format!("{e}"))?;
    let mut outputs = Vec::with_capacity(output.record_count as usize);
    for record in RecordIter::new(output.records, 0, output.record_count, time_ms) {
        if record.key != device.as_bytes() {
            return Err(String::from("it wrote a record whose key is not the device id"));
        }
        // The one header a frame can carry: the device's own, once.
        let marked = match record.header_count() {
            0 => false,
            1 if record.header(DEVICE_HEADER) == Some(device.as_bytes()) => true,
            _ => return Err(String::from("it wrote record headers, which the device tier does not carry")),
        };
        let unchanged = marked && record.timestamp_ms == time_ms && record.value == value;
        let value = if unchanged { Vec::new() } else { record.value.to_vec() };
        outputs.push(Record { time_ms: record.timestamp_ms, value, marked, unchanged });
    }
    Ok(outputs)
}

/// True when the frame that carries `outputs` in place of the reading of `kind` encodes,
/// whatever frame sequence and sample number it gets.
fn fits_a_frame(
    device: &str,
    time: Time,
    readings: &Readings<'_>,
    kind: ReadingKind,
    outputs: &[Record],
) -> bool {
    // The largest the frame can be: it may name its sample (`Time::of_sample`).
    let mut data = Data { device, time: time.of_sample(u32::MAX), readings: Readings::new() };
    if with_outputs(&mut data.readings, readings, kind, outputs).is_err() {
        return false;
    }
    let mut buf = [0u8; FRAME_BYTES_MAX];
    encode(&Frame { seq: 0, ack: 0, body: Body::Data(data) }, &ZERO_KEY, &mut buf).is_ok()
}

/// `readings` with the one of `kind` replaced by `outputs`, into `out`; `Err` when they are
/// more than a frame holds.
pub fn with_outputs<'r>(
    out: &mut Readings<'r>,
    readings: &Readings<'r>,
    kind: ReadingKind,
    outputs: &'r [Record],
) -> Result<(), TooManyReadings> {
    for reading in readings {
        if reading.kind() != kind {
            out.push(*reading).map_err(|_| TooManyReadings)?;
            continue;
        }
        for r in outputs {
            let output = match r.unchanged {
                true => *reading,
                false => Reading::Output { of: kind, time_ms: r.time_ms, value: &r.value, marked: r.marked },
            };
            out.push(output).map_err(|_| TooManyReadings)?;
        }
    }
    Ok(())
}

/// More readings than a frame carries (`silt_frame::READINGS_MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyReadings;

/// Most bytes of module state a device journals; a larger snapshot is not kept (and so not
/// restored after a reboot). The device tier's default state limit.
pub const JOURNALED_STATE_BYTES_MAX: usize = 64 * 1024;
/// Bytes around the state in a journal record: version, sample, length, checksum.
pub const STATE_RECORD_OVERHEAD: usize = 12 + 8;

/// A module's state after one sample, as a device journals it across reboots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRecord<'a> {
    /// The module version whose state it is.
    pub version: u32,
    /// The sample (frame sequence) it is the state after.
    pub sample: u32,
    pub state: &'a [u8],
}

/// `u32 version | u32 sample | u32 length | state | the first 8 bytes of the SHA-256 of all
/// before`, little-endian, into `out` (cleared first); `false` (and nothing written) for a
/// state over [`JOURNALED_STATE_BYTES_MAX`].
pub fn encode_state_record(record: &StateRecord<'_>, out: &mut Vec<u8>) -> bool {
    out.clear();
    if record.state.len() > JOURNALED_STATE_BYTES_MAX {
        return false;
    }
    out.extend_from_slice(&record.version.to_le_bytes());
    out.extend_from_slice(&record.sample.to_le_bytes());
    out.extend_from_slice(&(record.state.len() as u32).to_le_bytes());
    out.extend_from_slice(record.state);
    let sum = silt_wire::signature::module_hash(out);
    out.extend_from_slice(&sum[..8]);
    true
}

/// The record in `bytes`, if they are exactly one whole record whose checksum holds: a torn or
/// damaged record (a reboot in the middle of writing it, a flipped bit) is `None`.
pub fn decode_state_record(bytes: &[u8]) -> Option<StateRecord<'_>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    let word =
        |at: usize| -> Option<u32> { Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?)) };
    let (version, sample, len) = (word(0)?, word(4)?, word(8)? as usize);
    if len > JOURNALED_STATE_BYTES_MAX || body.len() != 12 + len {
        return None;
    }
    if silt_wire::signature::module_hash(body)[..8] != *sum {
        return None;
    }
    Some(StateRecord { version, sample, state: &body[12..] })
}

/// What a sample sends as frame `seq` at `time`: its `raw` readings as `processor` leaves
/// them. The sample is processed once, the first time it is asked for; what the module made is
/// kept in `processed` and sent again at every retransmission. Raw when no module runs, it
/// stopped, or its output does not fit.
pub fn to_send<'r>(
    processor: &Shared<'_>,
    processed: &'r OnceCell<Processed>,
    seq: u32,
    time: Time,
    raw: Readings<'r>,
) -> Readings<'r> {
    let processed = processed.get_or_init(|| processor.borrow_mut().process(seq, time, &raw));
    if let Processed::Outputs { kind, outputs } = processed {
        let mut sent = Readings::new();
        if with_outputs(&mut sent, &raw, *kind, outputs).is_ok() {
            return sent;
        }
    }
    raw
}

/// The processor as the sample queue shares it: one per device, used from the main loop only.
pub type Shared<'a> = RefCell<Processor<'a>>;

/// A one-line account of the processor for the summary.
pub fn summary(p: &Processor<'_>) -> String {
    let s = p.stats();
    let mut line = String::new();
    let _ = write!(
        line,
        "processor on {}: {} records in, {} out, {} fuel, {} cycles",
        p.kind().name(),
        s.records_in,
        s.records_out,
        s.fuel,
        s.cycles
    );
    if let Some(why) = p.stopped() {
        let _ = write!(line, "; stopped: {why}");
    }
    line
}
