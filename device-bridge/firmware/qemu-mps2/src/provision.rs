//! Run-time provisioning: device id, key and sample count come from the semihosting command
//! line (SYS_GET_CMDLINE), so one ELF serves every test. QEMU builds that line from `-kernel`
//! and `-append` ("fw.elf dev-1 <64 hex digits> 500"), or from `-semihosting-config arg=...`;
//! the last three words are taken, whatever precedes them. Before them, words of the form
//! `name=value` set options:
//!
//! - `clock=<start ms>:<step ms>`: sample `seq` is stamped `Time::UnixMs(start + seq * step)`
//!   instead of the tick it was queued at, so that runs can be compared record for record;
//! - `module=<path>`: a processor module (`docs/processor-abi.md`) read from the host through
//!   semihosting, run on every sample's reading of one kind before it is sent;
//! - `input=temperature|humidity|numeric`: that kind (default temperature);
//! - `version=<n>`: the module's version, which the hello reports (default 0: none named);
//! - `param=<key>=<value>`: a processor parameter, repeated for each (at most 16);
//! - `trust=<64 hex digits>`: an Ed25519 public key (`silt processor keygen`); with one or more,
//!   a module sent over the link must be signed by one of them (`silt processor sign`), as a
//!   broker with trusted keys requires (at most 4);
//! - `only=temperature|humidity|numeric`: the device has this one sensor; with the `wasm`
//!   feature its samples are then numbered apart from its frames, so that a sample a module
//!   leaves nothing of (an edge filter's) is not sent at all: fewer frames, the same records;
//! - `period=<ms>`: a new sample at most every this many milliseconds (default 0: as fast as
//!   the window lets), so that a run lasts long enough to take a module over the link;
//! - `flash=<host path prefix>`: the device's flash, emulated by host files through
//!   semihosting: a module delivered over the link is kept in `<prefix>.module` and started
//!   again at boot, and a stateful module's state after each sample in `<prefix>.state.<0-7>`,
//!   so that after a reboot the module goes on from the state after the last sample the bridge
//!   acknowledged (not with `only=`, whose samples are numbered apart from frames).

use core::fmt;

use cortex_m_semihosting::{nr, syscall1};
use silt_frame::{Key, ReadingKind, DEVICE_ID_BYTES_MAX, KEY_BYTES};

use crate::sensor::Clock;

/// Longest command line read: the words and room for a long path to the ELF before them.
pub const CMDLINE_BYTES_MAX: usize = 1024;
/// Most `param=` words.
pub const PARAMS_MAX: usize = 16;
/// Most `trust=` words.
pub const TRUSTED_MAX: usize = 4;

pub struct Config<'a> {
    pub device: &'a str,
    pub key: Key,
    /// Samples (data frames) to deliver.
    pub count: u32,
    pub clock: Clock,
    /// Host path of the processor module, if any.
    pub module: Option<&'a str>,
    /// The kind of reading the processor takes.
    pub input: ReadingKind,
    /// The version the hello reports while the module runs.
    pub module_version: u32,
    /// Least milliseconds between two samples (0: no pause).
    pub period_ms: u64,
    /// The one sensor the device has, if not all three.
    pub only: Option<ReadingKind>,
    /// Ed25519 public keys a module sent over the link must be signed by: the first
    /// `trusted_count`; none, and modules need no signature.
    pub trusted: [[u8; 32]; TRUSTED_MAX],
    pub trusted_count: usize,
    /// Processor parameters: the first `param_count` pairs.
    pub params: [(&'a str, &'a str); PARAMS_MAX],
    pub param_count: usize,
    /// Host path prefix of the emulated flash, if any.
    pub flash: Option<&'a str>,
}

#[derive(Debug)]
pub enum ProvisionError {
    /// The host gave no command line (no semihosting, or longer than the buffer).
    NoCmdline,
    NotUtf8,
    /// Fewer than three words.
    Usage,
    DeviceId,
    Key,
    Count,
    /// A `name=value` word with a bad value, or one `param=` too many.
    Option(&'static str),
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ProvisionError::NoCmdline => {
                "no semihosting command line (run QEMU with -semihosting-config enable=on and -append)"
            }
            ProvisionError::NotUtf8 => "command line is not UTF-8",
            ProvisionError::Usage => "command line needs three words",
            ProvisionError::DeviceId => "device id must be 1 to 64 bytes",
            ProvisionError::Key => "key must be 64 hex digits",
            ProvisionError::Count => "sample count must be a number from 1 to 4294967295",
            ProvisionError::Option(what) => what,
        };
        write!(
            f,
            "{what}; usage: -append \"[clock=START:STEP] [period=MS] [only=KIND] [flash=PATH] [trust=KEY]... [module=PATH [input=KIND] [version=N] [param=K=V]...] \
             <device id> <64 hex digit key> <sample count>\""
        )
    }
}

/// Reads the command line into `buf` and parses it.
pub fn read(buf: &mut [u8; CMDLINE_BYTES_MAX]) -> Result<Config<'_>, ProvisionError> {
    // SYS_GET_CMDLINE takes a block of (buffer address, buffer length) and writes the line's
    // length back into the second word.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block and the buffer it names are valid for writes for the whole call.
    let status = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    if status != 0 || block[1] > buf.len() {
        return Err(ProvisionError::NoCmdline);
    }
    let line = core::str::from_utf8(&buf[..block[1]]).map_err(|_| ProvisionError::NotUtf8)?;
    parse(line.trim_end_matches('\0'))
}

fn parse(line: &str) -> Result<Config<'_>, ProvisionError> {
    let mut words = line.split_ascii_whitespace().rev();
    let (Some(count), Some(key), Some(device)) = (words.next(), words.next(), words.next()) else {
        return Err(ProvisionError::Usage);
    };
    if device.is_empty() || device.len() > DEVICE_ID_BYTES_MAX {
        return Err(ProvisionError::DeviceId);
    }
    let count: u32 = count.parse().map_err(|_| ProvisionError::Count)?;
    if count == 0 {
        return Err(ProvisionError::Count);
    }
    let mut config = Config {
        device,
        key: parse_key(key)?,
        count,
        clock: Clock::Tick,
        module: None,
        input: ReadingKind::Temperature,
        module_version: 0,
        period_ms: 0,
        only: None,
        trusted: [[0; 32]; TRUSTED_MAX],
        trusted_count: 0,
        params: [("", ""); PARAMS_MAX],
        param_count: 0,
        flash: None,
    };
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            continue;
        };
        match name {
            "clock" => config.clock = parse_clock(value)?,
            "period" => {
                config.period_ms =
                    value.parse().map_err(|_| ProvisionError::Option("period must be milliseconds"))?
            }
            "module" => config.module = Some(value),
            "flash" => config.flash = Some(value),
            "only" => {
                config.only = Some(match value {
                    "temperature" => ReadingKind::Temperature,
                    "humidity" => ReadingKind::Humidity,
                    "numeric" => ReadingKind::Numeric,
                    _ => return Err(ProvisionError::Option("only must be temperature, humidity or numeric")),
                })
            }
            "trust" => {
                let key = config
                    .trusted
                    .get_mut(config.trusted_count)
                    .ok_or(ProvisionError::Option("at most 4 trust keys"))?;
                *key = parse_key(value).map_err(|_| ProvisionError::Option("trust must be 64 hex digits"))?;
                config.trusted_count += 1;
            }
            "version" => {
                config.module_version =
                    value.parse().map_err(|_| ProvisionError::Option("version must be a number"))?
            }
            "input" => {
                config.input = match value {
                    "temperature" => ReadingKind::Temperature,
                    "humidity" => ReadingKind::Humidity,
                    "numeric" => ReadingKind::Numeric,
                    _ => {
                        return Err(ProvisionError::Option("input must be temperature, humidity or numeric"))
                    }
                }
            }
            "param" => {
                let pair = value.split_once('=').ok_or(ProvisionError::Option("param must be KEY=VALUE"))?;
                let slot = config
                    .params
                    .get_mut(config.param_count)
                    .ok_or(ProvisionError::Option("at most 16 params"))?;
                *slot = pair;
                config.param_count += 1;
            }
            // The ELF's path, or something QEMU put there: not ours.
            _ => {}
        }
    }
    // Words were read last to first: give the parameters in the order written.
    config.params[..config.param_count].reverse();
    Ok(config)
}

fn parse_clock(value: &str) -> Result<Clock, ProvisionError> {
    const BAD: ProvisionError = ProvisionError::Option("clock must be START_MS:STEP_MS");
    let (start, step) = value.split_once(':').ok_or(BAD)?;
    match (start.parse(), step.parse()) {
        (Ok(start_ms), Ok(step_ms)) => Ok(Clock::Fixed { start_ms, step_ms }),
        _ => Err(BAD),
    }
}

fn parse_key(hex: &str) -> Result<Key, ProvisionError> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * KEY_BYTES {
        return Err(ProvisionError::Key);
    }
    let mut key = [0u8; KEY_BYTES];
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(key)
}

fn nibble(c: u8) -> Result<u8, ProvisionError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ProvisionError::Key),
    }
}

/// Largest file read from the host: a module package (manifest and module), well above the
/// examples (20 to 200 KB), well below the heap.
#[cfg(feature = "wasm")]
pub const MODULE_BYTES_MAX: usize = silt_frame::MODULE_PACKAGE_BYTES_MAX as usize;

/// Reads a whole file from the host through semihosting (SYS_OPEN, SYS_FLEN, SYS_READ,
/// SYS_CLOSE): a module given on the command line, and the emulated flash.
#[cfg(feature = "wasm")]
pub fn read_host_file(path: &str) -> Result<alloc::vec::Vec<u8>, &'static str> {
    use cortex_m_semihosting::syscall;
    // Mode 1 is "rb".
    let handle = open_host_file(path, 1).ok_or("cannot open the file on the host")?;
    // SAFETY: `handle` is an open semihosting handle.
    let len = unsafe { syscall!(FLEN, handle) };
    let result = if len == usize::MAX {
        Err("cannot read the file's length")
    } else if len > MODULE_BYTES_MAX {
        Err("file larger than a module package may be")
    } else {
        let mut bytes = alloc::vec![0u8; len];
        // SAFETY: the buffer is valid for `len` bytes of writes; SYS_READ returns the bytes
        // it did not read.
        let unread = unsafe { syscall!(READ, handle, bytes.as_mut_ptr(), len) };
        if unread == 0 {
            Ok(bytes)
        } else {
            Err("short read of the file")
        }
    };
    // SAFETY: `handle` is open and closed once.
    unsafe { syscall!(CLOSE, handle) };
    result
}

/// Writes `bytes` to a host file through semihosting (SYS_OPEN "wb", SYS_WRITE): the
/// emulated flash. A reboot in the middle leaves a short file, which its reader finds torn.
#[cfg(feature = "wasm")]
pub fn write_host_file(path: &str, bytes: &[u8]) -> Result<(), &'static str> {
    use cortex_m_semihosting::syscall;
    // Mode 5 is "wb".
    let handle = open_host_file(path, 5).ok_or("cannot open a flash file on the host")?;
    // SAFETY: `handle` is open; the buffer is valid for `len` bytes of reads; SYS_WRITE
    // returns the bytes it did not write.
    let unwritten = unsafe { syscall!(WRITE, handle, bytes.as_ptr(), bytes.len()) };
    // SAFETY: `handle` is open and closed once.
    unsafe { syscall!(CLOSE, handle) };
    match unwritten {
        0 => Ok(()),
        _ => Err("short write of a flash file"),
    }
}

/// A semihosting handle of host file `path` opened in `mode` (SYS_OPEN's: 1 "rb", 5 "wb").
#[cfg(feature = "wasm")]
fn open_host_file(path: &str, mode: usize) -> Option<usize> {
    use cortex_m_semihosting::syscall;
    let mut name = alloc::vec::Vec::with_capacity(path.len() + 1);
    name.extend_from_slice(path.as_bytes());
    name.push(0);
    // SAFETY: the name is NUL-terminated and lives across the call.
    let handle = unsafe { syscall!(OPEN, name.as_ptr(), mode, path.len()) };
    (handle != usize::MAX).then_some(handle)
}
