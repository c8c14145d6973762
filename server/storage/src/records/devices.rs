//! A device's entry in the devices tree: its key, times, and the key before its last rotation.
//! Entries of the first format (48 bytes: key, created and revoked times, no checksum) are
//! still read.

use rkyv::{Archive, Deserialize, Serialize};

use super::open;

/// Bytes of a device key (HMAC-SHA256 key of its frames).
pub const DEVICE_KEY_BYTES: usize = 32;
/// The first format: key, created time, revoked time (`i64::MIN`: not revoked).
pub const FIRST_FORMAT_BYTES: usize = DEVICE_KEY_BYTES + 8 + 8;

/// One device as the devices tree holds it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredDevice {
    pub key: [u8; DEVICE_KEY_BYTES],
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The key before the last rotation and until when it is still accepted.
    pub previous: Option<([u8; DEVICE_KEY_BYTES], i64)>,
}

impl StoredDevice {
    /// Decodes device `id`'s entry (the id names it in the error).
    pub fn decode(id: &str, bytes: &[u8]) -> Result<StoredDevice, String> {
        if bytes.len() == FIRST_FORMAT_BYTES {
            let mut key = [0u8; DEVICE_KEY_BYTES];
            key.copy_from_slice(&bytes[..DEVICE_KEY_BYTES]);
            let int = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            let revoked = int(DEVICE_KEY_BYTES + 8);
            return Ok(StoredDevice {
                key,
                created_ms: int(DEVICE_KEY_BYTES),
                revoked_ms: (revoked != i64::MIN).then_some(revoked),
                previous: None,
            });
        }
        open(&format!("entry of device {id:?}"), bytes)
    }
}

/// A device's processor module versions (the device tier), as the device-modules tree holds
/// them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredDeviceModules {
    /// Oldest first; the module bytes are in the modules tree under `sha256`.
    pub versions: Vec<StoredDeviceModule>,
    pub requested: Option<u32>,
    pub running: Option<u32>,
    pub last_error: Option<String>,
}

/// One version of a device's module.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredDeviceModule {
    pub version: u32,
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub input: String,
    pub params: Vec<(String, String)>,
    pub deployed_ms: i64,
    pub signed_by: Option<[u8; 32]>,
}

impl StoredDeviceModules {
    /// Decodes device `id`'s module versions (the id names it in the error).
    pub fn decode(id: &str, bytes: &[u8]) -> Result<StoredDeviceModules, String> {
        open(&format!("module versions of device {id:?}"), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::seal;
    use super::*;

    #[test]
    fn both_formats_decode_and_damage_is_refused() {
        let mut first = [7u8; FIRST_FORMAT_BYTES];
        first[DEVICE_KEY_BYTES..DEVICE_KEY_BYTES + 8].copy_from_slice(&5i64.to_le_bytes());
        first[DEVICE_KEY_BYTES + 8..].copy_from_slice(&i64::MIN.to_le_bytes());
        let old = StoredDevice::decode("old", &first).unwrap();
        assert_eq!((old.key, old.created_ms, old.revoked_ms), ([7; 32], 5, None));

        let d =
            StoredDevice { key: [1; 32], created_ms: 1, revoked_ms: Some(2), previous: Some(([3; 32], 4)) };
        let sealed = seal(&d);
        assert_eq!(StoredDevice::decode("d", &sealed), Ok(d));
        for i in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(StoredDevice::decode("d", &b).is_err(), "bit {i}");
        }
    }

    #[test]
    fn module_versions_round_trip_and_damage_is_refused() {
        let m = StoredDeviceModules {
            versions: vec![StoredDeviceModule {
                version: 1,
                sha256: [9; 32],
                bytes: 100,
                input: "temperature".into(),
                params: vec![("min".into(), "22".into())],
                deployed_ms: 5,
                signed_by: None,
            }],
            requested: Some(1),
            running: None,
            last_error: Some("trap".into()),
        };
        let sealed = seal(&m);
        assert_eq!(StoredDeviceModules::decode("d", &sealed), Ok(m));
        for i in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(StoredDeviceModules::decode("d", &b).is_err(), "bit {i}");
        }
    }
}
