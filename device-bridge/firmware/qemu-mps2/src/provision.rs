//! Run-time provisioning: device id, key and sample count come from the semihosting command
//! line (SYS_GET_CMDLINE), so one ELF serves every test. QEMU builds that line from `-kernel`
//! and `-append` ("fw.elf dev-1 <64 hex digits> 500"), or from `-semihosting-config arg=...`;
//! the last three words are taken, whatever precedes them.

use core::fmt;

use cortex_m_semihosting::{nr, syscall1};
use silt_frame::{Key, DEVICE_ID_BYTES_MAX, KEY_BYTES};

/// Longest command line read: the three words and room for a long path to the ELF before them.
pub const CMDLINE_BYTES_MAX: usize = 512;

pub struct Config<'a> {
    pub device: &'a str,
    pub key: Key,
    /// Samples (data frames) to deliver.
    pub count: u32,
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
        };
        write!(f, "{what}; usage: -append \"<device id> <64 hex digit key> <sample count>\"")
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
    Ok(Config { device, key: parse_key(key)?, count })
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
