//! The device registry: which devices may send frames through a bridge, and their keys.
//!
//! It lives in the broker so that every bridge of a cluster shares it; bridges ask for a
//! device's key with `GetDevice` and cache the answer. An entry is never deleted: a revoked
//! device stays listed, so its id is not registered again by mistake and its old frames cannot
//! come back under a new key; `AddDevice` of a revoked id enrols it again with a new key.
//! `RotateDevice` gives a new key and keeps the old one valid for an overlap window.
//!
//! Each entry is a checksummed record (`auth::stored`); entries of the first format (48 bytes:
//! key, created and revoked times, no checksum) are still read.

use ring::rand::{SecureRandom, SystemRandom};
use rkyv::{Archive, Deserialize, Serialize};
use silt_storage::{StorageError, Store};
use silt_wire::{check_device_id, DeviceInfo, ErrorCode};

use crate::auth::stored::{open, seal};

/// Bytes of a device key (HMAC-SHA256 key of its frames).
pub const DEVICE_KEY_BYTES: usize = 32;
/// The first format: key, created time, revoked time (`i64::MIN`: not revoked).
const LEGACY_ENTRY_BYTES: usize = DEVICE_KEY_BYTES + 8 + 8;
/// Longest overlap of an old and a new key after a rotation: 30 days.
pub const ROTATION_OVERLAP_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Tries of a change that lost a race with another change of the same device.
const UPDATE_TRIES: usize = 8;

/// A registry operation that failed, with the code the client sees.
#[derive(Debug)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        RegistryError { code: ErrorCode::Storage, message: e.to_string() }
    }
}

fn invalid(message: String) -> RegistryError {
    RegistryError { code: ErrorCode::InvalidRequest, message }
}

fn unknown(id: &str) -> RegistryError {
    RegistryError { code: ErrorCode::UnknownDevice, message: format!("no device {id:?} is registered") }
}

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
    fn decode(id: &str, bytes: &[u8]) -> Result<StoredDevice, RegistryError> {
        if bytes.len() == LEGACY_ENTRY_BYTES {
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
            .map_err(|message| RegistryError { code: ErrorCode::Storage, message })
    }

    fn info(&self, id: &str, with_key: bool) -> DeviceInfo {
        DeviceInfo {
            id: id.to_string(),
            key: with_key.then(|| self.key.to_vec()),
            created_ms: self.created_ms,
            revoked_ms: self.revoked_ms,
            previous_key: self.previous.filter(|_| with_key).map(|(k, _)| k.to_vec()),
            previous_until_ms: self.previous.map(|(_, until)| until),
            rights: None,
        }
    }
}

fn new_key() -> Result<[u8; DEVICE_KEY_BYTES], RegistryError> {
    let mut key = [0u8; DEVICE_KEY_BYTES];
    SystemRandom::new().fill(&mut key).map_err(|_| RegistryError {
        code: ErrorCode::Storage,
        message: "the system random generator failed".to_string(),
    })?;
    Ok(key)
}

/// Changes `id`'s entry with `change` (which sees the current one), retrying when another
/// change of the same device came in between; durable when it returns.
fn update(
    store: &Store,
    id: &str,
    change: impl Fn(Option<StoredDevice>) -> Result<StoredDevice, RegistryError>,
) -> Result<StoredDevice, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    for _ in 0..UPDATE_TRIES {
        let old = store.device(id)?;
        let current = old.as_deref().map(|b| StoredDevice::decode(id, b)).transpose()?;
        let next = change(current)?;
        let done = match &old {
            None => store.insert_device(id, &seal(&next))?,
            Some(old) => store.swap_device(id, old, &seal(&next))?,
        };
        if done {
            store.flush()?;
            return Ok(next);
        }
    }
    Err(RegistryError {
        code: ErrorCode::Storage,
        message: format!("device {id:?} kept changing; try again"),
    })
}

/// Registers `id` with a fresh random key, or enrols a revoked `id` again with a new one.
pub fn add(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    let key = new_key()?;
    let entry = update(store, id, |current| match current {
        Some(d) if d.revoked_ms.is_none() => Err(RegistryError {
            code: ErrorCode::DeviceExists,
            message: format!("device {id:?} is already registered (rotate its key, or revoke it first)"),
        }),
        _ => Ok(StoredDevice { key, created_ms: now_ms, revoked_ms: None, previous: None }),
    })?;
    Ok(entry.info(id, true))
}

/// Gives `id` a new key; the current one stays valid for `overlap_ms`.
pub fn rotate(store: &Store, id: &str, overlap_ms: u64, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    if overlap_ms > ROTATION_OVERLAP_MS_MAX {
        return Err(invalid(format!(
            "overlap of {overlap_ms} ms is over the {ROTATION_OVERLAP_MS_MAX} ms allowed"
        )));
    }
    let key = new_key()?;
    let until = now_ms.saturating_add(i64::try_from(overlap_ms).unwrap_or(i64::MAX));
    let entry = update(store, id, |current| match current {
        None => Err(unknown(id)),
        Some(d) if d.revoked_ms.is_some() => Err(invalid(format!("device {id:?} is revoked; add it again"))),
        Some(d) => Ok(StoredDevice { key, previous: (overlap_ms > 0).then_some((d.key, until)), ..d }),
    })?;
    Ok(entry.info(id, true))
}

/// Every device, without keys.
pub fn list(store: &Store) -> Result<Vec<DeviceInfo>, RegistryError> {
    store
        .devices()?
        .into_iter()
        .map(|(id, bytes)| Ok(StoredDevice::decode(&id, &bytes)?.info(&id, false)))
        .collect()
}

/// One device, with its keys.
pub fn get(store: &Store, id: &str) -> Result<DeviceInfo, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    let bytes = store.device(id)?.ok_or_else(|| unknown(id))?;
    Ok(StoredDevice::decode(id, &bytes)?.info(id, true))
}

/// Revokes `id` (idempotent: a second revoke keeps the first time); durable when it returns.
pub fn revoke(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    let entry = update(store, id, |current| match current {
        None => Err(unknown(id)),
        Some(d) => Ok(StoredDevice { revoked_ms: Some(d.revoked_ms.unwrap_or(now_ms)), previous: None, ..d }),
    })?;
    Ok(entry.info(id, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        (dir, store)
    }

    /// Revoke, then add again: a new key; rotate: a new key with the old one kept for the
    /// overlap; a first-format entry still reads; a damaged entry is refused, not misread.
    #[test]
    fn enrol_rotate_revoke_and_damage() {
        let (_dir, store) = store();
        let first = add(&store, "d1", 10).unwrap();
        assert_eq!(add(&store, "d1", 11).unwrap_err().code, ErrorCode::DeviceExists);
        let rotated = rotate(&store, "d1", 500, 20).unwrap();
        assert_ne!(rotated.key, first.key);
        assert_eq!((rotated.previous_key.clone(), rotated.previous_until_ms), (first.key.clone(), Some(520)));
        assert_eq!(revoke(&store, "d1", 30).unwrap().revoked_ms, Some(30));
        assert_eq!(revoke(&store, "d1", 40).unwrap().revoked_ms, Some(30));
        assert_eq!(get(&store, "d1").unwrap().previous_key, None, "revoking ends the overlap");
        assert!(rotate(&store, "d1", 0, 50).is_err());
        let again = add(&store, "d1", 60).unwrap();
        assert_eq!(again.revoked_ms, None);
        assert_ne!(again.key, rotated.key);

        let mut legacy = [7u8; LEGACY_ENTRY_BYTES];
        legacy[DEVICE_KEY_BYTES..DEVICE_KEY_BYTES + 8].copy_from_slice(&5i64.to_le_bytes());
        legacy[DEVICE_KEY_BYTES + 8..].copy_from_slice(&i64::MIN.to_le_bytes());
        assert!(store.insert_device("old", &legacy).unwrap());
        let old = get(&store, "old").unwrap();
        assert_eq!((old.key, old.created_ms, old.revoked_ms), (Some(vec![7; 32]), 5, None));

        let mut damaged =
            seal(&StoredDevice { key: [1; 32], created_ms: 1, revoked_ms: None, previous: None });
        damaged[9] ^= 0x10;
        assert!(store.insert_device("bad", &damaged).unwrap());
        assert_eq!(get(&store, "bad").unwrap_err().code, ErrorCode::Storage);
    }
}
