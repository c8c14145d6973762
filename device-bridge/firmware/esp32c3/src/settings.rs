//! Build-time settings: WiFi credentials, the bridge's address, the device's id and key, and
//! the key its processor modules must be signed with.
//!
//! Each comes from an environment variable read when the firmware is compiled, and has a default
//! so that a build without them still succeeds (CI builds that way). The firmware logs at boot
//! which settings are defaults. A value that is set but malformed (a key that is not 64 hex
//! digits, an address without a port) fails the build: the checks below run at compile time.

use silt_frame::{DEVICE_ID_BYTES_MAX, KEY_BYTES, Key};

/// One build-time setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The environment variable it is read from.
    pub name: &'static str,
    pub value: &'static str,
    /// False when the variable was unset and `value` is the default.
    pub from_env: bool,
}

const fn setting(name: &'static str, env: Option<&'static str>, default: &'static str) -> Setting {
    match env {
        Some(value) => Setting { name, value, from_env: true },
        None => Setting { name, value: default, from_env: false },
    }
}

/// SSID of the WiFi network to join. The default names no real network: the firmware boots,
/// logs that it was built without credentials, and keeps retrying the join.
pub const WIFI_SSID: Setting = setting("SILT_WIFI_SSID", option_env!("SILT_WIFI_SSID"), "silt-unconfigured");
/// WPA2 passphrase (8 to 64 bytes); empty joins an open network.
pub const WIFI_PASSWORD: Setting = setting("SILT_WIFI_PASSWORD", option_env!("SILT_WIFI_PASSWORD"), "");
/// The bridge's TCP listener, `IPv4:port`.
pub const BRIDGE_ADDR: Setting =
    setting("SILT_BRIDGE_ADDR", option_env!("SILT_BRIDGE_ADDR"), "192.168.1.10:7410");
/// The id given to `silt device add`.
pub const DEVICE_ID: Setting = setting("SILT_DEVICE_ID", option_env!("SILT_DEVICE_ID"), "esp32c3-1");
/// The key `silt device add` printed, 64 hex digits. The all-zero default is no key the registry
/// hands out (keys are random), so a device built without one is refused with a bad-tag nack.
pub const DEVICE_KEY: Setting = setting(
    "SILT_DEVICE_KEY",
    option_env!("SILT_DEVICE_KEY"),
    "0000000000000000000000000000000000000000000000000000000000000000",
);

/// With the device tier (feature `wasm`): the Ed25519 public key (64 hex digits, as `silt
/// processor keygen` prints it) a module delivered over the link must be signed with; empty takes
/// any module whose SHA-256 matches its package's manifest. Set it when the broker requires
/// signed modules (`docs/device-frames.md`, "Module delivery").
pub const MODULE_TRUST: Setting = setting("SILT_MODULE_TRUST", option_env!("SILT_MODULE_TRUST"), "");

/// Every setting but the device tier's, for the boot log.
pub const ALL: [Setting; 5] = [WIFI_SSID, WIFI_PASSWORD, BRIDGE_ADDR, DEVICE_ID, DEVICE_KEY];

/// Longest SSID the 802.11 standard allows, in bytes.
pub const SSID_BYTES_MAX: usize = 32;
/// WPA2 passphrases are 8 to 63 characters, or 64 hex digits.
pub const PASSWORD_BYTES_MIN: usize = 8;
pub const PASSWORD_BYTES_MAX: usize = 64;

/// The bridge's address, checked at compile time.
pub const BRIDGE: Endpoint = match parse_endpoint(BRIDGE_ADDR.value) {
    Some(endpoint) => endpoint,
    None => panic!("SILT_BRIDGE_ADDR must be an IPv4 address and a port, such as 192.168.1.10:7410"),
};

/// The device key, checked at compile time.
pub const KEY: Key = match parse_key(DEVICE_KEY.value) {
    Some(key) => key,
    None => panic!("SILT_DEVICE_KEY must be 64 hex digits, as `silt device add` prints them"),
};

/// The key modules must be signed with (none: unsigned modules are taken), checked at compile
/// time.
pub const TRUSTED: &[Key] = match MODULE_TRUST.value.is_empty() {
    true => &[],
    false => match parse_key(MODULE_TRUST.value) {
        Some(key) => &[key],
        None => {
            panic!("SILT_MODULE_TRUST must be empty or 64 hex digits, a module signing key's public half")
        }
    },
};

/// The device id, checked at compile time.
pub const DEVICE: &str = {
    let n = DEVICE_ID.value.len();
    assert!(n >= 1 && n <= DEVICE_ID_BYTES_MAX, "SILT_DEVICE_ID must be 1 to 64 bytes");
    DEVICE_ID.value
};

/// The SSID, checked at compile time.
pub const SSID: &str = {
    let n = WIFI_SSID.value.len();
    assert!(n >= 1 && n <= SSID_BYTES_MAX, "SILT_WIFI_SSID must be 1 to 32 bytes");
    WIFI_SSID.value
};

/// The passphrase, checked at compile time; empty means an open network.
pub const PASSWORD: &str = {
    let n = WIFI_PASSWORD.value.len();
    assert!(
        n == 0 || (n >= PASSWORD_BYTES_MIN && n <= PASSWORD_BYTES_MAX),
        "SILT_WIFI_PASSWORD must be empty (open network) or 8 to 64 bytes"
    );
    WIFI_PASSWORD.value
};

/// An IPv4 address and a TCP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: [u8; 4],
    pub port: u16,
}

/// Parses `a.b.c.d:port` (decimal, port 1..=65535). `const` so that a bad build-time value fails
/// the build instead of the boot.
pub const fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let b = s.as_bytes();
    let mut ip = [0u8; 4];
    let mut i = 0;
    let mut octet = 0;
    while octet < 4 {
        let (value, next) = match parse_decimal(b, i, 3) {
            Some(parsed) => parsed,
            None => return None,
        };
        if value > 255 {
            return None;
        }
        ip[octet] = value as u8;
        let separator = if octet < 3 { b'.' } else { b':' };
        if next >= b.len() || b[next] != separator {
            return None;
        }
        i = next + 1;
        octet += 1;
    }
    let (port, end) = match parse_decimal(b, i, 5) {
        Some(parsed) => parsed,
        None => return None,
    };
    if end != b.len() || port == 0 || port > 65535 {
        return None;
    }
    Some(Endpoint { ip, port: port as u16 })
}

/// Reads 1 to `digits_max` decimal digits from `b[i..]`; returns the value and the index after.
const fn parse_decimal(b: &[u8], mut i: usize, digits_max: usize) -> Option<(u32, usize)> {
    let start = i;
    let mut value = 0u32;
    while i < b.len() && b[i].is_ascii_digit() {
        if i - start == digits_max {
            return None;
        }
        value = value * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    if i == start { None } else { Some((value, i)) }
}

/// Parses a key written as 64 hex digits (either case).
pub const fn parse_key(s: &str) -> Option<Key> {
    let b = s.as_bytes();
    if b.len() != 2 * KEY_BYTES {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    let mut i = 0;
    while i < KEY_BYTES {
        let (hi, lo) = match (hex_digit(b[2 * i]), hex_digit(b[2 * i + 1])) {
            (Some(hi), Some(lo)) => (hi, lo),
            _ => return None,
        };
        key[i] = hi << 4 | lo;
        i += 1;
    }
    Some(key)
}

const fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_only_as_ipv4_and_port() {
        assert_eq!(parse_endpoint("192.168.1.10:7410"), Some(Endpoint { ip: [192, 168, 1, 10], port: 7410 }));
        assert_eq!(parse_endpoint("0.0.0.0:65535"), Some(Endpoint { ip: [0, 0, 0, 0], port: 65535 }));
        for bad in [
            "",
            "192.168.1.10",
            "192.168.1.10:",
            "192.168.1:7410",
            "192.168.1.10.1:7410",
            "256.1.1.1:7410",
            "1.1.1.1:0",
            "1.1.1.1:65536",
            "1.1.1.1:7410x",
            "1111.1.1.1:7410",
            "bridge.local:7410",
            "[::1]:7410",
        ] {
            assert_eq!(parse_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_exactly_64_hex_digits() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let key = parse_key(hex).unwrap();
        assert_eq!(key[0], 0x00);
        assert_eq!(key[1], 0x11);
        assert_eq!(key[15], 0xff);
        assert_eq!(key[16], 0xff);
        assert_eq!(key[31], 0x00);
        assert_eq!(parse_key(&hex[..63]), None);
        assert_eq!(parse_key("g0112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100"), None);
    }

    #[test]
    fn the_defaults_pass_the_build_time_checks() {
        // The consts are evaluated at compile time; naming them here makes sure the defaults
        // (what CI builds with) are valid.
        assert!(!DEVICE.is_empty());
        assert!(!SSID.is_empty());
        assert!(PASSWORD.is_empty() || PASSWORD.len() >= PASSWORD_BYTES_MIN);
        assert_ne!(BRIDGE.port, 0);
        assert_eq!(KEY.len(), KEY_BYTES);
    }
}
